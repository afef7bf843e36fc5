import csv

import numpy as np
import pytest

from emofusion.cli import main
from emofusion.data import load_dataset
from emofusion.data.format_utils import DataFormatError


def make_folder(root, n=8, classes=True, seed=0):
    rng = np.random.default_rng(seed)
    (root / "audio").mkdir(parents=True)
    (root / "video").mkdir()
    rows = []
    for i in range(n):
        sid = f"s{i}"
        split = ["train", "train", "train", "train", "valid", "val", "test", "test"][i % 8]
        label = ["happy", "sad", "angry"][i % 3] if classes else f"{rng.uniform(-3, 3):.3f}"
        rows.append({"id": sid, "split": split, "label": label, "speaker": f"p{i % 2}"})
        t = int(rng.integers(5, 30))
        np.save(root / "audio" / f"{sid}.npy", rng.normal(size=(t, 12)).astype(np.float32))
        k = int(rng.integers(2, 9))
        np.savez(
            root / "video" / f"{sid}.npz", features=rng.normal(size=(k, 7)), timestamps=np.arange(k) / 5.0
        )
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "split", "label", "speaker"])
        w.writeheader()
        w.writerows(rows)
    return rows


def test_folder_loads(tmp_path):
    make_folder(tmp_path)
    b = load_dataset(f"folder:{tmp_path}")
    assert b.task.kind == "classification" and b.task.output_names == ("angry", "happy", "sad")
    assert b.modality_dims == {"audio": 12, "visual": 7}
    assert (len(b.train), len(b.val), len(b.test)) == (4, 2, 2)
    s = b.train[1]
    assert s.id == "s1" and s.label == 2 and s.speaker == "p1"
    assert s.intervals["visual"].shape == (s.length("visual"), 2) and s.intervals["visual"][1, 0] == 0.2
    assert load_dataset(f"folder:{tmp_path}", modalities="visual").modalities == ["visual"]


def test_folder_regression(tmp_path):
    make_folder(tmp_path, classes=False)
    b = load_dataset(f"folder:{tmp_path}")
    assert b.task.kind == "sentiment" and b.test[0].label.shape == (1,)


def test_check_reports_every_problem(tmp_path, capsys):
    make_folder(tmp_path)
    assert main(["datasets", "check", str(tmp_path)]) == 0
    assert "OK: 8 samples" in capsys.readouterr().out
    (tmp_path / "audio" / "s3.npy").unlink()
    np.save(tmp_path / "audio" / "s2.npy", np.full((4, 12), np.nan, np.float32))
    np.save(tmp_path / "audio" / "s5.npy", np.zeros((4, 13), np.float32))
    (tmp_path / "video" / "s6.npz").write_bytes(b"garbage")
    np.save(tmp_path / "audio" / "stray.npy", np.zeros((2, 12)))
    with open(tmp_path / "manifest.csv", "a") as f:
        f.write("s0,train,happy,p0\ns9,holdout,happy,p0\n")
    assert main(["datasets", "check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    for expected in (
        "duplicated id 's0'",
        "split 'holdout' is not train/val/test",
        "s3.npy: missing",
        "s2.npy: 48 NaN/inf values",
        "s5.npy: feature size 13, other audio files have 12",
        "s6.npz: unreadable array",
        "1 files with no manifest row, e.g. ['stray']",
    ):
        assert expected in out, expected
    with pytest.raises(DataFormatError, match="problem"):
        load_dataset(f"folder:{tmp_path}")


def test_check_missing_manifest(tmp_path, capsys):
    assert main(["datasets", "check", str(tmp_path)]) == 1
    assert "manifest.csv: missing" in capsys.readouterr().out
