from pathlib import Path

import h5py
import numpy as np
import pytest

from emofusion.data import load_dataset
from emofusion.data.collate import collate_samples
from emofusion.data.format_utils import DataFormatError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MFN = DATA / "mfn_h5"
real = pytest.mark.skipif(not MFN.exists(), reason=f"real MFN data not found at {MFN}")


def _write(folder: Path, name: str, arr) -> None:
    with h5py.File(folder / name, "w") as f:
        f.create_dataset("d1", data=arr)


def make_mfn(folder: Path, n=(5, 3, 4), text_train=False, classes=False, seed=0):
    rng = np.random.default_rng(seed)
    for split, k in zip(("train", "valid", "test"), n):
        a = rng.normal(size=(k, 20, 74))
        a[:, :3] = 0  # leading padding
        v = rng.normal(size=(k, 20, 36))
        v[0] = 0  # face never found: visual absent for sample 0
        _write(folder, f"audio_{split}.h5", a)
        _write(folder, f"video_{split}.h5", v)
        if split != "train" or text_train:
            _write(folder, f"text_{split}_emb.h5", rng.normal(size=(k, 20, 300)))
        if classes:
            y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, k)]
        else:
            y = rng.uniform(1, 5, k)
        _write(folder, f"y_{split}.h5", y)
    return folder


def test_generated_layout_drops_zero_rows(tmp_path):
    b = load_dataset(f"mfn:{make_mfn(tmp_path)}")
    assert b.modalities == ["audio", "visual"]
    assert (len(b.train), len(b.val), len(b.test)) == (5, 3, 4)
    s = b.train[0]
    assert s.features["audio"].shape == (17, 74)
    assert s.features["visual"].shape == (0, 36)  # absent modality = empty sequence
    assert s.intervals["audio"][0].tolist() == [3.0, 4.0]  # original word slot kept
    assert b.task.kind == "sentiment" and b.task.label_range == (1.0, 5.0)
    assert s.label.shape == (1,) and s.label.dtype == np.float32
    batch = collate_samples([b.train[i] for i in range(3)])
    assert batch.inputs["visual"].mask[0].sum() == 0 and batch.inputs["audio"].mask[1].sum() == 17


def test_keep_zero_rows_option(tmp_path):
    b = load_dataset(f"mfn:{make_mfn(tmp_path)}", drop_zero_rows="false")
    assert b.train[0].features["audio"].shape == (20, 74)


def test_text_missing_in_train_is_reported(tmp_path):
    make_mfn(tmp_path)
    with pytest.raises(DataFormatError, match=r"'text' is missing for split\(s\) train"):
        load_dataset(f"mfn:{tmp_path}", modalities="text,audio")
    b = load_dataset(f"mfn:{tmp_path}", modalities="audio")
    assert b.modalities == ["audio"] and list(b.train[0].features) == ["audio"]


def test_text_when_present_everywhere(tmp_path):
    b = load_dataset(f"mfn:{make_mfn(tmp_path, text_train=True)}")
    assert b.modalities == ["text", "audio", "visual"] and b.modality_dims["text"] == 300


def test_classification_labels(tmp_path):
    b = load_dataset(f"mfn:{make_mfn(tmp_path, classes=True)}")
    assert b.task.kind == "classification" and b.task.output_names == ("negative", "neutral", "positive")
    assert all(s.label.dtype == np.int64 and 0 <= s.label < 3 for s in b.test)


def test_bad_files_are_clear_errors(tmp_path):
    make_mfn(tmp_path)
    _write(tmp_path, "y_valid.h5", np.full((2, 3), 0.5, np.float32))
    with pytest.raises(DataFormatError, match="labels of shape"):
        load_dataset(f"mfn:{tmp_path}")
    make_mfn(tmp_path)
    _write(tmp_path, "audio_test.h5", np.zeros((3, 20, 74)))
    with pytest.raises(DataFormatError, match="audio_test.h5: 3 samples but y_test.h5 has 4"):
        load_dataset(f"mfn:{tmp_path}")
    make_mfn(tmp_path)
    a = np.ones((5, 20, 74))
    a[2, 4, 1] = np.nan
    _write(tmp_path, "audio_train.h5", a)
    with pytest.raises(DataFormatError, match="audio_train.h5: 1 non-finite"):
        load_dataset(f"mfn:{tmp_path}")
    (tmp_path / "video_valid.h5").write_bytes(b"not an hdf5 file")
    with pytest.raises(DataFormatError, match="video_valid.h5: cannot read as HDF5"):
        load_dataset(f"mfn:{tmp_path}", allow_nonfinite=True)


@real
@pytest.mark.realdata
def test_real_mmmo():
    b = load_dataset(f"mfn:{MFN / 'mmmo'}")
    assert (len(b.train), len(b.val), len(b.test)) == (220, 40, 80)
    assert b.modality_dims == {"audio": 74, "visual": 36}
    assert b.task.kind == "sentiment" and b.task.label_range == (1.0, 5.0)
    labels = np.array([s.label[0] for s in b.train])
    assert labels.min() >= 1 and labels.max() <= 5
    for s in b.train:
        for m in ("audio", "visual"):
            x = s.features[m]
            assert x.shape[0] <= 20 and np.all(np.any(x != 0, axis=1))
    # ICT-MMMO has no sample with a modality entirely missing (data README)
    assert b.info["empty_modality_counts"]["train"] == {"audio": 0, "visual": 0}
    v = load_dataset(f"mfn:{MFN / 'mmmo'}", modalities="audio")
    assert v.modalities == ["audio"]


@real
@pytest.mark.realdata
def test_real_youtube_missing_modalities():
    b = load_dataset(f"mfn:{MFN / 'youtube'}")
    assert (len(b.train), len(b.val), len(b.test)) == (173, 36, 60)
    assert b.task.output_names == ("negative", "neutral", "positive")
    # measured in the data README: 125 train samples without audio, 129 without video
    assert b.info["empty_modality_counts"]["train"] == {"audio": 125, "visual": 129}
    with pytest.raises(DataFormatError, match="train"):
        load_dataset(f"mfn:{MFN / 'youtube'}", modalities="text")


def _mfn_with_labels(root, labels):
    rng = np.random.default_rng(0)
    for split, y in labels.items():
        n = len(y)
        for name, dim in (("audio", 4), ("video", 3)):
            with h5py.File(root / f"{name}_{split}.h5", "w") as f:
                f.create_dataset("d1", data=rng.normal(size=(n, 20, dim)) + 3)
        with h5py.File(root / f"y_{split}.h5", "w") as f:
            f.create_dataset("d1", data=y)


def test_mfn_multi_output_regression_labels(tmp_path):
    """[N, K] labels (the speaker-trait layout) are K regression outputs, ranges from every split's data."""
    rng = np.random.default_rng(1)
    y = {s: rng.uniform(1.2, 6.7, (n, 5)) for s, n in (("train", 6), ("valid", 3), ("test", 3))}
    y["test"][0, 4] = 7.0  # the range covers the test split too (rounded out to whole points)
    _mfn_with_labels(tmp_path, y)
    b = load_dataset(f"mfn:{tmp_path}")
    assert b.task.kind == "multi_regression" and b.task.output_dim == 5
    assert b.task.extra["ranges"][4] == [1.0, 7.0]
    assert np.allclose(b.test[0].label, y["test"][0])
    b = load_dataset(f"mfn:{tmp_path}", label_range="[0, 10]")
    assert b.task.extra["ranges"] == [[0.0, 10.0]] * 5
    with pytest.raises(DataFormatError, match=r"y_test\.h5: sample 'test/0' \(#0\) has label 7 in column 4, outside"):
        load_dataset(f"mfn:{tmp_path}", label_range=[1, 6.9])
    with pytest.raises(DataFormatError, match="labels=classes needs one-hot"):
        load_dataset(f"mfn:{tmp_path}", labels="classes")
    # [N, 3] one-hot stays YouTube's 3 classes; labels=regression reads it as 3 outputs
    onehot = {s: np.eye(3)[np.arange(n) % 3] for s, n in (("train", 6), ("valid", 3), ("test", 3))}
    _mfn_with_labels(tmp_path, onehot)
    assert load_dataset(f"mfn:{tmp_path}").task.kind == "classification"
    assert load_dataset(f"mfn:{tmp_path}", labels="regression").task.kind == "multi_regression"
