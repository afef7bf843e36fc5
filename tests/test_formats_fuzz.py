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
