"""Paper 003's protocol is what the paper003 suites and the ef_* presets run: L1 loss, stop on the validation
loss (= validation MAE under L1), overlap-weighted word alignment (§4.3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emofusion.data.batch import Sample
from emofusion.data.synthetic import align_to_words
from emofusion.training.config import RunConfig, load_yaml

ROOT = Path(__file__).resolve().parents[1]


def test_paper003_grid_cells_use_the_papers_protocol():
    from emofusion.evaluation.suite import get_suite

    spec = get_suite("paper003-grid", "quick")
    trained = [c for c in spec.cells if c.config["model"] != "random_baseline"]
    assert trained
    for cell in trained:
        assert cell.config["loss"] == "l1" and cell.config["monitor"] == "mae", cell.row
        assert cell.config["dataset_options"]["alignment"] == "weighted", cell.row


@pytest.mark.parametrize("name", ["ef_lstm", "ef_blstm", "ef_cnn"])
def test_ef_presets_use_the_papers_protocol(name):
    config = RunConfig.from_dict(load_yaml(ROOT / "configs" / f"{name}.yaml"))
    assert config.loss == "l1" and config.monitor == "mae"
    assert config.dataset_options["alignment"] == "weighted"


def test_weighted_alignment_weights_frames_by_their_overlap_with_the_word():
    # one word [0, 1) s; two audio frames overlapping it by 0.75 s and 0.25 s (unequal overlaps)
    sample = Sample(
        id="s",
        features={"text": np.ones((1, 2), np.float32), "audio": np.array([[4.0], [0.0]], np.float32)},
        label=np.zeros(6, np.float32),
        intervals={"text": np.array([[0.0, 1.0]]), "audio": np.array([[-0.25, 0.75], [0.75, 1.75]])},
    )
    plain = align_to_words(sample).features["audio"]
    weighted = align_to_words(sample, weighted=True).features["audio"]
    np.testing.assert_allclose(plain, [[2.0]])  # (4 + 0) / 2
    np.testing.assert_allclose(weighted, [[3.0]])  # (0.75 * 4 + 0.25 * 0) / 1


def test_synthetic_alignment_option():
    from emofusion.data import load_dataset

    opts = {"n_train": 4, "n_val": 2, "n_test": 2}
    a = load_dataset("synthetic:aligned", alignment="weighted", **opts)
    b = load_dataset("synthetic:aligned", **opts)
    assert a.info["alignment"] == "weighted" and b.info["alignment"] == "mean"
    assert not np.allclose(a.train[0].features["audio"], b.train[0].features["audio"])
    with pytest.raises(ValueError, match="alignment"):
        load_dataset("synthetic:aligned", alignment="median", **opts)
