import json

import h5py
import numpy as np
import pytest

from emofusion.cli import main
from emofusion.data import load_dataset
from emofusion.data.alignment import align_sdk, frame_intervals
from emofusion.data.csd import ComputationalSequence, align_files, write_csd
from emofusion.data.format_utils import DataFormatError


def make_corpus(folder, n_videos=6, seed=0):
    """A tiny MOSEI-like corpus: words + word vectors, COVAREP at 100 Hz, FACET at 30 Hz, 7-col labels."""
    rng = np.random.default_rng(seed)
    words, audio, visual, labels = {}, {}, {}, {}
    for v in range(n_videos):
        vid = f"vid{v}"
        t = np.cumsum(rng.uniform(0.2, 0.5, 31))
        words[vid] = (np.stack([t[:-1], t[1:]], 1), rng.normal(size=(30, 300)).astype(np.float32))
        dur = t[-1] + 0.3
        audio[vid] = (
            frame_intervals(int(dur * 100), 100.0),
            rng.normal(size=(int(dur * 100), 74)).astype(np.float32),
        )
        visual[vid] = (frame_intervals(int(dur * 30), 30.0), rng.normal(size=(int(dur * 30), 35)))
        cut = t[[0, 10, 20, 30]]
        # sentiment in [-3, 3], the six intensities in [0, 3] (the readers check the ranges)
        labels[vid] = (np.stack([cut[:-1], cut[1:]], 1), rng.uniform([-3] + [0] * 6, 3, (3, 7)))
    write_csd(
        folder / "CMU_MOSEI_TimestampedWordVectors.csd", "glove_vectors", words, {"dataset name": "toy"}
    )
    write_csd(folder / "CMU_MOSEI_COVAREP.csd", "COVAREP", audio)
    write_csd(folder / "CMU_MOSEI_VisualFacet42.csd", "FACET 4.2", visual)
    write_csd(folder / "CMU_MOSEI_Labels.csd", "All Labels", labels)
    folds = {"train": ["vid0", "vid1", "vid2"], "valid": ["vid3"], "test": ["vid4", "vid5"]}
    (folder / "folds.json").write_text(json.dumps(folds))
    return words, audio, visual, labels


def test_roundtrip_and_metadata(tmp_path):
    words, *_ = make_corpus(tmp_path, n_videos=2)
    seq = ComputationalSequence(tmp_path / "CMU_MOSEI_TimestampedWordVectors.csd")
    assert seq.root_name == "glove_vectors" and seq.keys() == ["vid0", "vid1"]
    assert seq.metadata["dataset name"] == "toy" and seq.metadata["root name"] == "glove_vectors"
    iv, ft = seq["vid1"]
    assert np.array_equal(iv, words["vid1"][0]) and np.array_equal(ft, words["vid1"][1])
    # older files store metadata as plain str(): kept as the string
    with h5py.File(tmp_path / "old.csd", "w") as f:
        g = f.create_group("old")
        g.create_group("data").create_group("a")
        g["data/a"].create_dataset("intervals", data=np.zeros((1, 2)))
        g["data/a"].create_dataset("features", data=np.zeros((1, 3)))
        m = g.create_group("metadata").create_dataset("creator", (1,), dtype=h5py.special_dtype(vlen=str))
        m[0] = "{not json"
    assert ComputationalSequence(tmp_path / "old.csd").metadata == {"creator": "{not json"}


def test_bad_entries_are_named(tmp_path):
    with h5py.File(tmp_path / "bad.csd", "w") as f:
        d = f.create_group("seq").create_group("data")
        d.create_group("v1").create_dataset("intervals", data=np.zeros((3, 2)))
        d["v1"].create_dataset("features", data=np.zeros((2, 5)))
    seq = ComputationalSequence(tmp_path / "bad.csd")
    with pytest.raises(DataFormatError, match=r"bad.csd: video 'v1': 3 intervals but 2 feature rows"):
        seq["v1"]
    (tmp_path / "trunc.csd").write_bytes((tmp_path / "bad.csd").read_bytes()[:100])
    with pytest.raises(DataFormatError, match="trunc.csd: not a readable HDF5"):
        ComputationalSequence(tmp_path / "trunc.csd")
    with pytest.raises(DataFormatError, match="features of shape"):
        write_csd(tmp_path / "x.csd", "x", {"v": (np.zeros((2, 2)), np.zeros(2))})


def test_align_files_and_cli(tmp_path):
    words, audio, visual, _ = make_corpus(tmp_path, n_videos=3)
    out = tmp_path / "aligned"
    rc = main(
        [
            "align",
            str(tmp_path / "CMU_MOSEI_TimestampedWordVectors.csd"),
            str(tmp_path / "CMU_MOSEI_COVAREP.csd"),
            str(tmp_path / "CMU_MOSEI_VisualFacet42.csd"),
            "--out",
            str(out),
            "--epsilon",
            "1e-3",
        ]
    )
    assert rc == 0
    a = ComputationalSequence(out / "CMU_MOSEI_COVAREP.csd")
    r = ComputationalSequence(out / "CMU_MOSEI_TimestampedWordVectors.csd")
    assert a.root_name == "COVAREP" and r.root_name == "glove_vectors"
    assert len(r) == 90 and "vid2[29]" in r.keys()
    _, expect, _ = align_sdk(words, {"a": audio}, epsilon=1e-3)
    for k in ("vid0[0]", "vid2[17]"):
        assert np.array_equal(a[k][1], expect["a"][k][1]) and a[k][1].shape == (1, 74)
    report = align_files(
        tmp_path / "CMU_MOSEI_TimestampedWordVectors.csd",
        [tmp_path / "CMU_MOSEI_COVAREP.csd"],
        out,
        mode="weighted",
    )
    assert report["entries"] == {"glove_vectors": 90, "COVAREP": 90}


@pytest.mark.parametrize("align", ["segment", "words"])
def test_csd_dataset(tmp_path, align):
    make_corpus(tmp_path)
    b = load_dataset(f"csd:{tmp_path}", folds=str(tmp_path / "folds.json"), align=align, target="emotions")
    assert b.info["recipe"] == "mosei" and b.task.kind == "emotion_intensity"
    assert (len(b.train), len(b.val), len(b.test)) == (9, 3, 6)
    assert b.modality_dims == {"text": 300, "audio": 74, "visual": 35}
    s = b.train[1]
    assert s.id == "vid0[1]" and s.label.shape == (6,)
    assert s.length("text") == 10
    if align == "segment":  # unaligned inside the labelled segment
        assert s.length("audio") > 5 * s.length("text")
    else:
        assert s.length("audio") == s.length("visual") == 10
    sent = load_dataset(f"csd:{tmp_path}", folds=str(tmp_path / "folds.json"), modalities="audio")
    assert sent.task.kind == "sentiment" and sent.modalities == ["audio"]
    every = load_dataset(f"csd:{tmp_path}", folds=str(tmp_path / "folds.json"), target="all", lazy=False)
    assert every.task.kind == "multi_regression" and every.test[0].label.shape == (7,)
