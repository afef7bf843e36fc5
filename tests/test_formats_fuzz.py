"""Hypothesis fuzzing of the readers: every generated file either loads correctly or raises DataFormatError."""

import pickle
import tempfile
from pathlib import Path

import h5py
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emofusion.data.csd import ComputationalSequence
from emofusion.data.format_utils import DataFormatError
from emofusion.data.mfn import load_mfn
from emofusion.data.mmsa import load_mmsa

FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(
    rows=st.integers(0, 6),
    feat_rows=st.integers(0, 6),
    iv_cols=st.sampled_from([2, 2, 2, 3]),
    feat_ndim=st.sampled_from([1, 2, 2, 3]),
    bad_value=st.sampled_from([None, np.nan, np.inf]),
    truncate=st.booleans(),
)
def test_fuzz_csd_entries(rows, feat_rows, iv_cols, feat_ndim, bad_value, truncate):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.csd"
        iv = np.sort(np.random.default_rng(rows).uniform(0, 5, (rows, iv_cols)), 1)
        if bad_value is not None and rows:
            iv[0, 0] = bad_value
        ft = np.ones((feat_rows,) + (3,) * (feat_ndim - 1))
        with h5py.File(path, "w") as f:
            g = f.create_group("seq").create_group("data").create_group("v")
            g.create_dataset("intervals", data=iv)
            g.create_dataset("features", data=ft)
        if truncate:
            path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
        valid = rows == feat_rows and iv_cols == 2 and feat_ndim >= 2 and (bad_value is None or rows == 0)
        try:
            got_iv, got_ft = ComputationalSequence(path)["v"]
        except DataFormatError:
            assert not valid or truncate
            return
        assert valid and not truncate
        assert np.array_equal(got_iv, iv) and np.array_equal(got_ft, ft)


@FUZZ
@given(
    n=st.integers(1, 5),
    steps=st.sampled_from([20, 20, 7]),
    corrupt=st.sampled_from(["none", "count", "ndim", "nan", "label_shape", "garbage"]),
)
def test_fuzz_mfn(n, steps, corrupt):
    rng = np.random.default_rng(n)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        for split in ("train", "valid", "test"):
            for name, dim in (("audio", 4), ("video", 3)):
                x = rng.normal(size=(n, steps, dim)) * (rng.random((n, steps, 1)) > 0.3)
                with h5py.File(root / f"{name}_{split}.h5", "w") as f:
                    f.create_dataset("d1", data=x)
            with h5py.File(root / f"y_{split}.h5", "w") as f:
                f.create_dataset("d1", data=rng.uniform(1, 5, n))
        target = root / "audio_test.h5"
        if corrupt == "garbage":
            target.write_bytes(b"\x89HDF\r\n" + rng.bytes(64))
        elif corrupt != "none":
            data = {
                "count": np.zeros((n + 1, steps, 4)),
                "ndim": np.zeros((n, 4)),
                "nan": np.full((n, steps, 4), np.nan),
                "label_shape": None,
            }[corrupt]
            if corrupt == "label_shape":
                target, data = root / "y_test.h5", np.zeros((n, 5))
            with h5py.File(target, "w") as f:
                f.create_dataset("d1", data=data)
        try:
            b = load_mfn(str(root))
        except DataFormatError as e:
            assert corrupt != "none"
            assert target.name in str(e)
            return
        assert corrupt == "none"
        for s in b.train:
            assert s.features["audio"].shape[0] <= steps and np.all(np.any(s.features["audio"] != 0, axis=1))


@FUZZ
@given(blob=st.binary(max_size=200))
def test_fuzz_pickle_bytes(blob):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.pkl"
        path.write_bytes(blob)
        try:
            load_mmsa(path)
        except DataFormatError:
            pass


@FUZZ
@given(
    n=st.integers(1, 4),
    drop_key=st.sampled_from([None, "audio", "regression_labels", "vision_lengths"]),
    wrong_len=st.booleans(),
)
def test_fuzz_mmsa_structure(n, drop_key, wrong_len):
    rng = np.random.default_rng(n)
    split = {
        "text": rng.normal(size=(n, 6, 4)).astype(np.float32),
        "audio": rng.normal(size=(n, 9, 3)).astype(np.float32),
        "vision": rng.normal(size=(n, 8, 2)).astype(np.float32),
        "audio_lengths": np.full(n, 9 if not wrong_len else 10),
        "vision_lengths": np.full(n, 5),
        "regression_labels": rng.uniform(-3, 3, n),
        "id": np.array([f"i{k}" for k in range(n)]),
    }
    if drop_key:
        del split[drop_key]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.pkl"
        splits = {k: {**split, "id": np.array([f"{k}{i}" for i in range(n)])} for k in ("train", "valid", "test")}
        path.write_bytes(pickle.dumps(splits))
        bad = wrong_len or drop_key in ("audio", "regression_labels")
        try:
            b = load_mmsa(path)
        except DataFormatError:
            assert bad
            return
        assert not bad
        assert b.train[0].length("visual") == (5 if drop_key != "vision_lengths" else 8)


# ------------------------------------------------------------------------------------------------------
# The reader x corruption matrix (issue 16): every broken file ends in an error naming the file, the
# sample and the problem, or in a counted entry of data_report.json; never a silent change.
# ------------------------------------------------------------------------------------------------------
import csv  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402

import pytest  # noqa: E402

from emofusion.data.csd import write_csd  # noqa: E402
from emofusion.training.config import RunConfig  # noqa: E402
from emofusion.training.run import prepare_data  # noqa: E402

CORRUPTIONS = ("none", "nan_label", "inf_label", "range_label", "nan_feature", "truncated", "zero_frames",
               "missing_in_modality", "duplicate_id", "shared_id", "dim_split", "dim_sample", "wrong_dtype")


def _pickle_splits(kind, rng):
    out = {}
    for split, n in (("train", 4), ("valid", 3), ("test", 3)):
        d = {
            "text": rng.normal(size=(n, 5, 4)).astype(np.float32),
            "audio": rng.normal(size=(n, 6, 3)).astype(np.float32) + 5,  # no all-zero rows by chance
            "vision": rng.normal(size=(n, 6, 2)).astype(np.float32) + 5,
            "id": np.array([f"{split}{i}" for i in range(n)], dtype=object),
        }
        if kind == "mmsa":
            d.update(audio_lengths=np.full(n, 6), vision_lengths=np.full(n, 6),
                     regression_labels=rng.uniform(-3, 3, n).astype(np.float32))
        else:
            d["labels"] = rng.uniform(-3, 3, (n, 1, 1)).astype(np.float32)
        out[split] = d
    return out


def build_pickle(kind, root, c):
    """mmsa:/mult: files; returns (spec, options, expected) with expected = ("error", regex) |
    ("counted", report path, value) | ("ok", None) | ("na", why)."""
    rng = np.random.default_rng(0)
    data = _pickle_splits(kind, rng)
    lab = "regression_labels" if kind == "mmsa" else "labels"
    f = root / "x.pkl"
    exp = ("ok", None)
    if c in ("nan_label", "inf_label", "range_label"):
        v = {"nan_label": np.nan, "inf_label": np.inf, "range_label": 9.0}[c]
        data["test"][lab].reshape(3, -1)[1, 0] = v
        exp = ("error", r"x\.pkl: split 'test'.*sample 'test1'.*" + ("outside" if c == "range_label" else "non-finite"))
    elif c == "nan_feature":
        data["valid"]["audio"][2, 1, 0] = np.nan
        exp = ("error", r"x\.pkl: split 'val' 'audio': 1 non-finite values \(first in sample #2.*data\.nonfinite=zero")
    elif c == "zero_frames":
        if kind == "mmsa":
            data["train"]["audio_lengths"][1] = 0
        else:
            data["train"]["audio"][1] = 0.0  # all-zero rows are padding: an empty sequence
        exp = ("counted", ("splits", "train", "empty_sequences", "audio"), 1)
    elif c == "missing_in_modality":
        data["test"]["audio"] = data["test"]["audio"][:2]
        exp = ("error", r"x\.pkl: split 'test' 'audio' has 2 samples, labels 3")
    elif c == "duplicate_id":
        data["train"]["id"][2] = "train0"
        exp = ("error", r"x\.pkl: split 'train'.*id 'train0' appears twice")
        if kind == "mult":  # MulT's MOSEI ids repeat per video: made unique by row, no data changes
            exp = ("ok", None)
    elif c == "shared_id":
        data["test"]["id"][0] = "train3"
        exp = ("error", r"x\.pkl: ids shared between splits: 1 in both train and test \(e\.g\. \['train3'\]")
    elif c == "dim_split":
        data["test"]["audio"] = data["test"]["audio"][:, :, :2]
        exp = ("error", r"x\.pkl: split 'test': audio features have size 2, but split 'train' has 3")
    elif c == "dim_sample":
        exp = ("na", "padded [N, L, D] arrays: one D for every sample of a split")
    elif c == "wrong_dtype":
        data["train"][lab] = data["train"][lab].astype(str)
        exp = ("error", r"x\.pkl: split 'train'.*labels have dtype <U")
    f.write_bytes(pickle.dumps(data))
    if c == "truncated":
        f.write_bytes(f.read_bytes()[:300])
        exp = ("error", r"x\.pkl: cannot unpickle")
    return f"{kind}:{f}", {}, exp


def build_mfn(root, c):
    rng = np.random.default_rng(1)
    n = 4
    y = {s: rng.uniform(1, 5, n) for s in ("train", "valid", "test")}
    feats = {(m, s): rng.normal(size=(n, 20, dim)) + 3 for m, dim in (("audio", 4), ("video", 3))
             for s in ("train", "valid", "test")}
    exp = ("ok", None)
    if c in ("nan_label", "inf_label", "range_label"):
        y["valid"][2] = {"nan_label": np.nan, "inf_label": -np.inf, "range_label": 9.0}[c]
        exp = ("error", r"y_valid\.h5: " + (r"sample 'valid/2'.*outside.*\[1, 5\]" if c == "range_label"
                                           else "1 non-finite values \\(first in sample #2"))
    elif c == "nan_feature":
        feats["video", "test"][1, 3, 0] = np.inf
        exp = ("error", r"video_test\.h5: 1 non-finite values \(first in sample #1.*data\.allow_nonfinite=true")
    elif c == "zero_frames":
        feats["audio", "train"][2] = 0.0
        exp = ("counted", ("splits", "train", "empty_sequences", "audio"), 1)
    elif c == "missing_in_modality":
        feats["audio", "test"] = feats["audio", "test"][:3]
        exp = ("error", r"audio_test\.h5: 3 samples but y_test\.h5 has 4 labels")
    elif c in ("duplicate_id", "shared_id"):
        exp = ("na", "ids are row positions in each split's files")
    elif c == "dim_split":
        feats["audio", "test"] = feats["audio", "test"][:, :, :2]
        exp = ("error", r"audio_test\.h5: audio features have size 2, but .*audio_train\.h5 has 4")
    elif c == "dim_sample":
        exp = ("na", "[N, 20, D] arrays: one D per file")
    elif c == "wrong_dtype":
        y["train"] = np.array([b"1.5", b"2", b"3", b"4"])
        exp = ("error", r"y_train\.h5: labels have dtype \|S")
    for (m, s), x in feats.items():
        with h5py.File(root / f"{m}_{s}.h5", "w") as h:
            h.create_dataset("d1", data=x)
    for s, v in y.items():
        with h5py.File(root / f"y_{s}.h5", "w") as h:
            h.create_dataset("d1", data=v)
    if c == "truncated":
        p = root / "video_valid.h5"
        p.write_bytes(p.read_bytes()[:400])
        exp = ("error", r"video_valid\.h5: cannot read as HDF5")
    return f"mfn:{root}", {}, exp


def build_csd(root, c):
    from test_formats_csd import make_corpus

    words, audio, visual, labels = make_corpus(root)
    folds = {"train": ["vid0", "vid1", "vid2"], "valid": ["vid3"], "test": ["vid4", "vid5"]}
    exp = ("ok", None)
    rewrite = {}
    if c in ("nan_label", "inf_label", "range_label"):
        iv, ft = labels["vid4"]
        ft = ft.copy()
        ft[1, 0] = {"nan_label": np.nan, "inf_label": np.inf, "range_label": 9.0}[c]
        rewrite["CMU_MOSEI_Labels.csd", "All Labels"] = {**labels, "vid4": (iv, ft)}
        exp = ("error", r"CMU_MOSEI_Labels\.csd: video 'vid4': sample 'vid4\[1\]'.*"
               + ("outside the task's range \\[-3, 3\\]" if c == "range_label" else "non-finite label"))
    elif c == "nan_feature":
        iv, ft = audio["vid4"]
        ft = ft.copy()
        ft[100:103, 0] = np.nan  # 1.00-1.03 s: inside the first labelled segment
        rewrite["CMU_MOSEI_COVAREP.csd", "COVAREP"] = {**audio, "vid4": (iv, ft)}
        exp = ("counted", ("splits", "test", "nonfinite_values", "audio"), 3)  # legal: hygiene ignores them
    elif c == "zero_frames":
        rewrite["CMU_MOSEI_VisualFacet42.csd", "FACET 4.2"] = {**visual, "vid1": (np.zeros((0, 2)), np.zeros((0, 35)))}
        exp = ("counted", ("splits", "train", "empty_sequences", "visual"), 3)
    elif c == "missing_in_modality":
        rewrite["CMU_MOSEI_COVAREP.csd", "COVAREP"] = {k: v for k, v in audio.items() if k != "vid2"}
        exp = ("counted", ("dropped", "videos_missing_from_audio", "count"), 1)
    elif c == "duplicate_id":
        folds["train"].append("vid1")
        exp = ("error", r"folds .*folds\.json: train: id 'vid1' appears twice")
    elif c == "shared_id":
        folds["train"].append("vid4")
        exp = ("error", r"folds .*folds\.json: ids shared between splits: 1 in both train and test \(e\.g\. \['vid4'\]")
    elif c in ("dim_split", "dim_sample"):
        vid = "vid5" if c == "dim_split" else "vid1"
        iv, ft = audio[vid]
        rewrite["CMU_MOSEI_COVAREP.csd", "COVAREP"] = {**audio, vid: (iv, ft[:, :70])}
        split = "test" if c == "dim_split" else "train"
        exp = ("counted-skip", split, rf"csd/{split}: sample '{vid}\[0\]' 'audio' features have shape \(\d+, 70\), expected \[T, 74\]")
    elif c == "wrong_dtype":
        iv, ft = labels["vid0"]
        rewrite["CMU_MOSEI_Labels.csd", "All Labels"] = {**labels, "vid0": (iv, ft.astype(str))}
        exp = ("error", r"CMU_MOSEI_Labels\.csd: video 'vid0': labels have dtype \|S")
    for (name, rootname), data in rewrite.items():
        write_csd(root / name, rootname, data)
    (root / "folds.json").write_text(json.dumps(folds))
    if c == "truncated":
        p = root / "CMU_MOSEI_VisualFacet42.csd"
        p.write_bytes(p.read_bytes()[:2000])
        exp = ("error", r"CMU_MOSEI_VisualFacet42\.csd: not a readable HDF5")
    return f"csd:{root}", {"folds": str(root / "folds.json")}, exp


def build_folder(root, c):
    rng = np.random.default_rng(2)
    (root / "audio").mkdir()
    (root / "video").mkdir()
    rows = []
    for i, split in enumerate(["train"] * 4 + ["val"] * 2 + ["test"] * 2):
        rows.append({"id": f"s{i}", "split": split, "label": f"{rng.uniform(-3, 3):.3f}"})
        np.save(root / "audio" / f"s{i}.npy", rng.normal(size=(6, 5)).astype(np.float32))
        np.save(root / "video" / f"s{i}.npy", rng.normal(size=(4, 3)).astype(np.float32))
    (root / "dataset.json").write_text(json.dumps({"task": "sentiment", "label_range": [-3, 3]}))
    exp = ("ok", None)
    if c in ("nan_label", "inf_label", "range_label"):
        rows[6]["label"] = {"nan_label": "nan", "inf_label": "inf", "range_label": "9"}[c]
        exp = ("error", r"manifest\.csv:8: id 's6'.*" + ("outside label_range" if c == "range_label" else "non-finite label"))
    elif c == "nan_feature":
        x = np.load(root / "audio" / "s2.npy")
        x[0, 0] = np.nan
        np.save(root / "audio" / "s2.npy", x)
        exp = ("error", r"audio/s2\.npy: 1 NaN/inf values")
    elif c == "truncated":
        p = root / "video" / "s3.npy"
        p.write_bytes(p.read_bytes()[:100])
        exp = ("error", r"video/s3\.npy: unreadable array")
    elif c == "zero_frames":
        np.save(root / "audio" / "s1.npy", np.zeros((0, 5), np.float32))
        exp = ("error", r"audio/s1\.npy: empty sequence \(0 steps\)")
    elif c == "missing_in_modality":
        (root / "video" / "s5.npy").unlink()
        exp = ("error", r"video/s5\.npy: missing \(id 's5', modality visual\)")
    elif c in ("duplicate_id", "shared_id"):
        rows.append({"id": "s1", "split": "train" if c == "duplicate_id" else "test", "label": "0.5"})
        exp = ("error", r"manifest\.csv:10: duplicated id 's1' \(first on line 3\)")
    elif c in ("dim_split", "dim_sample"):
        sid = "s7" if c == "dim_split" else "s1"
        np.save(root / "audio" / f"{sid}.npy", rng.normal(size=(6, 4)).astype(np.float32))
        exp = ("error", rf"audio/{sid}\.npy: feature size 4, other audio files have 5")
    elif c == "wrong_dtype":
        np.save(root / "video" / "s0.npy", np.array([["a", "b", "c"]]))
        exp = ("error", r"video/s0\.npy: dtype <U1 is not numeric")
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "split", "label"])
        w.writeheader()
        w.writerows(rows)
    return f"folder:{root}", {}, exp


def build_conv(root, c):
    from test_formats_conversation import iemocap_pickle

    data = list(iemocap_pickle(root / "c.pkl"))
    ids, spk, lab, text, audio, visual, sent, train, test = data
    cid = train[1]
    exp = ("ok", None)
    if c in ("nan_label", "inf_label"):
        lab[cid] = [float(x) for x in lab[cid]]
        lab[cid][0] = np.nan if c == "nan_label" else np.inf
        exp = ("error", rf"c\.pkl: conversation '{cid}': labels .* are not integer class ids")
    elif c == "range_label":
        lab[cid][0] = 9
        exp = ("error", rf"c\.pkl: conversation '{cid}': label ids .*9.* outside 0\.\.5")
    elif c == "nan_feature":
        text[cid][0] = text[cid][0].copy()
        text[cid][0][3] = np.nan
        exp = ("error", rf"c\.pkl: conversation '{cid}' text: 1 non-finite values.*data\.allow_nonfinite=true")
    elif c == "zero_frames":
        ids[cid], spk[cid], lab[cid], sent[cid] = [], [], [], []
        text[cid], audio[cid], visual[cid] = [], [], []
        exp = ("error", rf"c\.pkl: conversation '{cid}' text features of shape \(0,\), expected \[0, D\]")
    elif c == "missing_in_modality":
        del audio[cid]
        exp = ("error", rf"c\.pkl: conversation '{cid}' has no audio features")
    elif c == "duplicate_id":
        data[7] = train + [train[0]]
        exp = ("error", rf"c\.pkl: trainVid: id '{train[0]}' appears twice")
    elif c == "shared_id":
        data[8] = test + [train[2]]
        exp = ("error", r"c\.pkl: ids shared between splits: 1 in both train and test")
    elif c in ("dim_split", "dim_sample"):
        target = test[0] if c == "dim_split" else cid
        audio[target] = [np.ones(99) for _ in audio[target]]
        exp = ("error", r"c\.pkl: conversation '.*' audio dim (99, others 100|100, others 99)")
    elif c == "wrong_dtype":
        lab[cid] = [str(x) for x in lab[cid]]
        exp = ("error", rf"c\.pkl: conversation '{cid}': labels have dtype <U")
    (root / "c.pkl").write_bytes(pickle.dumps(tuple(data)))
    if c == "truncated":
        p = root / "c.pkl"
        p.write_bytes(p.read_bytes()[:500])
        exp = ("error", r"c\.pkl: cannot unpickle")
    return f"conv:{root / 'c.pkl'}", {}, exp


BUILDERS = {
    "mmsa": lambda root, c: build_pickle("mmsa", root, c),
    "mult": lambda root, c: build_pickle("mult", root, c),
    "mfn": build_mfn,
    "csd": build_csd,
    "folder": build_folder,
    "conv": build_conv,
}


def _get(report, path):
    for k in path:
        report = report[k]
    return report


@pytest.mark.parametrize("corruption", CORRUPTIONS)
@pytest.mark.parametrize("reader", sorted(BUILDERS))
def test_reader_corruption_matrix(reader, corruption, tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    spec, options, expected = BUILDERS[reader](tmp_path, corruption)
    if expected[0] == "na":
        pytest.skip(f"{reader}: {corruption} cannot occur: {expected[1]}")
    cfg = RunConfig(dataset=spec, dataset_options=options, progress=False)
    if expected[0] == "error":
        with pytest.raises(DataFormatError) as err:
            prepare_data(cfg)
        assert re.search(expected[1], str(err.value), re.S), str(err.value)
        return
    bundle, _, report = prepare_data(cfg)
    json.dumps(report)  # data_report.json must serialise
    clean_root = tmp_path.with_name(tmp_path.name + "_clean")  # the same files without the corruption
    clean_root.mkdir()
    clean_spec, clean_options, _ = BUILDERS[reader](clean_root, "none")
    clean, _, clean_report = prepare_data(RunConfig(dataset=clean_spec, dataset_options=clean_options, progress=False))
    if expected[0] == "ok":
        assert not report["skipped"]
        assert [len(getattr(bundle, s)) for s in ("train", "val", "test")] == [
            len(getattr(clean, s)) for s in ("train", "val", "test")]
        return
    if expected[0] == "counted":
        assert _get(report, expected[1]) == expected[2], report
        if expected[1][0] == "dropped":
            assert "dropped" not in clean_report
        else:  # the count comes from the corruption, not from the generator
            assert not _get(clean_report, expected[1])
        return
    assert expected[0] == "counted-skip"
    split, pattern = expected[1], expected[2]
    assert len(report["skipped"][split]) >= 1 and re.search(pattern, report["skipped"][split][0]), report["skipped"]
    # every other sample is still there: nothing but the counted ones changed
    n_clean = len(getattr(clean, split))
    assert len(getattr(bundle, split)) == n_clean - len(report["skipped"][split])
    assert report["splits"][split]["samples"] == len(getattr(bundle, split))
