"""Paper 002's protocols: the 80:10:10 split with a refit on train + validation (§5), and eq. 17's 6-class
softmax head on the emotion-intensity data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emofusion.data.registry import load_dataset
from emofusion.tasks import emotion_intensity_task
from emofusion.training.losses import task_loss

TINY = {"n_train": 20, "n_val": 6, "n_test": 5, "max_words": 8}


def test_trainval_view_merges_train_and_validation_and_keeps_test():
    inner = load_dataset("synthetic", **TINY)
    tv = load_dataset("trainval:synthetic", **TINY)
    assert [s.id for s in tv.train] == [s.id for s in inner.train] + [s.id for s in inner.val]
    assert [s.id for s in tv.test] == [s.id for s in inner.test]
    assert [s.id for s in tv.val] == [s.id for s in inner.val]
    assert not {s.id for s in tv.test} & {s.id for s in tv.train}
    assert tv.info["n_train_original"] == 20 and tv.name == "trainval:synthetic"


def test_80_10_10_split_and_refit_config():
    from emofusion.evaluation.suites.paper002 import refit_config, split_80_10_10

    for preset, total in (("quick", 500), ("full", 1800)):
        s = split_80_10_10(preset)
        assert sum(s.values()) == total and s["n_val"] == s["n_test"] == total // 10
        assert s["n_train"] == total - 2 * (total // 10)
    cfg = refit_config({"dataset": "synthetic", "max_epochs": 6, "runner": "x:y", "lr": 0.1}, 37)
    assert cfg == {"dataset": "trainval:synthetic", "max_epochs": None, "max_steps": 37, "min_steps": 37,
                   "val_every_n_steps": 37, "lr": 0.1}


def test_refit_suite_cells_use_the_runner_and_the_paper_split():
    from emofusion.evaluation.suite import get_suite

    spec = get_suite("paper002-refit", "quick")
    assert {c.column for c in spec.cells} == {"aligned", "unaligned"} and len(spec.cells) == 12
    for c in spec.cells:
        assert c.config["runner"] == "emofusion.evaluation.suites.paper002:refit_runner"
        o = c.config["dataset_options"]
        assert (o["n_train"], o["n_val"], o["n_test"]) == (400, 50, 50)


def test_refit_runner_retrains_on_train_plus_val_for_the_selected_steps(tmp_path):
    from emofusion.evaluation.suite import Job
    from emofusion.evaluation.suites.paper002 import refit_runner

    config = {
        "runner": "emofusion.evaluation.suites.paper002:refit_runner",
        "model": "early_fusion_lstm",
        "dataset": "synthetic",
        "model_options": {"hidden_dim": 8, "head_dim": 8},
        "dataset_options": dict(TINY),
        "max_epochs": 3,
        "batch_size": 8,
        "val_every_n_steps": 2,
        "min_steps": 0,
        "patience": 20,
    }
    job = Job(config=config, seed=0, perturbations={"clean": None}, split="test",
              cache_path=str(tmp_path / "c.json"), run_dir=str(tmp_path / "run"))
    record = refit_runner(job)
    assert record["status"] == "ok" and record["config"] is config
    info = record["info"]
    steps = info["refit_steps"]
    assert steps == info["selection"]["best_step"] and 1 <= steps <= 9  # 3 epochs of ceil(20 / 8) steps
    assert info["steps_trained"] == steps and info["best_step"] == steps  # the final weights are scored
    refit_cfg = (Path(record["run_dir"]) / "config.yaml").read_text()
    assert "trainval:synthetic" in refit_cfg
    report = json.loads((Path(record["run_dir"]) / "data_report.json").read_text())
    assert report["splits"]["train"]["samples"] == 26  # 20 train + 6 val samples in the refit's training split
    assert report["splits"]["test"]["samples"] == 5
    assert set(record["evaluations"]) == {"clean"} and "mae" in record["evaluations"]["clean"]


def test_dominant_class_cross_entropy():
    task = emotion_intensity_task()
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, generator=g, requires_grad=True)
    labels = torch.tensor([[0, 2, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0], [3, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1 / 3, 0.0]])
    loss = task_loss("dominant_ce", task, torch.softmax(logits, -1), labels, extras={"class_logits": logits})
    rows = [0, 2, 3]  # the all-zero row has no dominant emotion
    want = sum(-torch.log_softmax(logits[r], -1)[int(np.argmax(labels[r].numpy()))] for r in rows) / 3
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(loss, F.cross_entropy(logits[rows], torch.tensor([1, 0, 4])))
    zero = task_loss("dominant_ce", task, logits, torch.zeros(4, 6), extras={"class_logits": logits})
    assert float(zero.detach()) == 0.0 and zero.requires_grad
    with pytest.raises(ValueError, match="class head"):
        task_loss("dominant_ce", task, logits, labels, extras={})
