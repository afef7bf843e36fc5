"""End-to-end runs: the CLI, run directory contents, exact resume after a kill, DDP, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from emofusion.cli import main
from emofusion.training import RunConfig, load_module, train_run
from emofusion.training.config import apply_overrides

TINY = ["data.n_train=48", "data.n_val=16", "data.n_test=16", "data.min_words=4", "data.max_words=8"]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("EMOFUSION_FAULT_AT_STEP", None)
    return env


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "emofusion.cli", *args], capture_output=True, text=True,
                          env=env or _env(), timeout=900)  # generous: CI boxes can be loaded


def test_train_writes_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--model", "early_fusion_lstm", "--dataset", "synthetic", "--max-epochs", "2",
                 "--seed", "1", "--output", str(out), "--quiet", "model.hidden_dim=8", "model.head_dim=8", *TINY])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"val", "test"}
    for split in ("val", "test"):
        assert {"mae", "mse", "pearson_r", "acc2", "wa"} <= set(metrics[split])
    assert (out / "config.yaml").exists() and (out / "metrics.csv").exists()
    assert (out / "checkpoints" / "best.ckpt").exists() and (out / "checkpoints" / "last.ckpt").exists()
    assert (out / "plots" / "learning_curves.png").exists()
    assert (out / "plots" / "test_error_per_output.png").exists()
    printed = capsys.readouterr().out
    assert "mae" in printed and "test" in printed

    # evaluate and predict from the checkpoint reproduce the stored test metrics
    assert main(["evaluate", str(out), "--output", str(tmp_path / "ev.json")]) == 0
    again = json.loads((tmp_path / "ev.json").read_text())["test"]
    assert again["mae"] == pytest.approx(metrics["test"]["mae"], rel=1e-5)
    assert main(["predict", str(out), "synthetic", "--output", str(tmp_path / "pred.csv")]) == 0
    lines = (tmp_path / "pred.csv").read_text().splitlines()
    assert lines[0].startswith("id,anger") and len(lines) == 17


def test_classification_run_with_yaml_config(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: unimodal_lstm\ndataset: synthetic-cls\nmodalities: [audio]\nmax_epochs: 1\n"
                   "model_options: {hidden_dim: 8}\nprogress: false\n")
    result = train_run(RunConfig.from_dict(apply_overrides(
        {**__import__("yaml").safe_load(cfg.read_text()), "output": str(tmp_path / "r")}, TINY)))
    assert 0 <= result.metrics["test"]["accuracy"] <= 1
    # the engine draws nothing (training does not import the reporting layer); the CLI and suites call this
    from emofusion.evaluation.plots import plot_run

    plot_run(result.run_dir, result.module, result.bundle, RunConfig.from_dict(result.module.hparams.run_config))
    assert (tmp_path / "r" / "plots" / "test_confusion.png").exists()


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    args = ["train", "--model", "unimodal_lstm", "--dataset", "synthetic", "--modalities", "visual",
            "--max-epochs", "3", "--seed", "5", "--quiet", "model.hidden_dim=8", "model.dropout=0.3",
            "batch_size=8", "checkpoint_every_n_steps=1", "patience=10", "plots=false", *TINY]
    full = _cli(*args, "--output", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr[-2000:]

    env = _env()
    env["EMOFUSION_FAULT_AT_STEP"] = "9"  # 6 batches per epoch: killed in the middle of epoch 2
    killed = _cli(*args, "--output", str(tmp_path / "cut"), env=env)
    assert killed.returncode != 0
    assert not (tmp_path / "cut" / "metrics.json").exists()
    ckpt = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 9 and ckpt["emofusion_resume"]["batches_done"] == 3

    # killed while writing last.ckpt: resume says so and falls back to the newest step checkpoint
    steps = sorted(p.name for p in (tmp_path / "cut" / "checkpoints").glob("step-*.ckpt"))
    assert steps == ["step-step=8.ckpt", "step-step=9.ckpt"], steps
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])

    resumed = _cli("train", "--resume", str(tmp_path / "cut"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "last.ckpt is unreadable" in resumed.stderr and "resuming from step-step=9.ckpt" in resumed.stderr
    assert "not resumable" not in resumed.stderr  # the loader implements Lightning's stateful protocol
    a = json.loads((tmp_path / "full" / "metrics.json").read_text())
    b = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    for split in ("val", "test"):
        for k, v in a[split].items():
            assert b[split][k] == pytest.approx(v, rel=1e-6, abs=1e-9, nan_ok=True), (split, k)
    # the per-epoch log survives the kill whole: same rows as the uninterrupted run
    import csv

    rows_a = list(csv.DictReader(open(tmp_path / "full" / "metrics.csv")))
    rows_b = list(csv.DictReader(open(tmp_path / "cut" / "metrics.csv")))
    assert [(r["epoch"], r["step"]) for r in rows_b] == [(r["epoch"], r["step"]) for r in rows_a]
    epoch_rows = [r for r in rows_a if r.get("val/mae")]
    assert len(epoch_rows) == 3  # epochs 0, 1, 2 each validated
    for ra, rb in zip(rows_a, rows_b):
        for k, v in ra.items():
            if v and k != "train/loss_epoch":  # the epoch mean of the killed epoch counts resumed batches only
                assert float(rb[k]) == pytest.approx(float(v), rel=1e-5), (k, ra["step"])


def test_ddp_two_processes_end_with_identical_weights(tmp_path):
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("ddp_worker.py")), str(tmp_path)],
                          capture_output=True, text=True, env=_env(), timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    w0, w1 = r0["weights"], r1["weights"]
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    # each process trained on its own half of the data in the first epoch
    assert not set(r0["seen"]) & set(r1["seen"])
    assert len(set(r0["seen"]) | set(r1["seen"])) == 64
    # selection and early stopping saw the same, global validation metric on both ranks: 4 steps per rank
    # per epoch, validation every 2 steps -> 4 checks, each over all 16 validation samples on every rank
    v0 = json.loads((tmp_path / "val_rank0.json").read_text())
    v1 = json.loads((tmp_path / "val_rank1.json").read_text())
    assert [row[0] for row in v0] == [2, 4, 6, 8]
    assert v0 == v1
    for _, logged, computed in v0:
        assert logged == pytest.approx(computed, rel=1e-6)
    # rank 0 still evaluated and wrote the run's metrics, and the best checkpoint is the best logged value
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "test" in metrics
    assert metrics["info"]["best_val_score"] == pytest.approx(min(row[1] for row in v0), rel=1e-6)
    assert metrics["info"]["monitor"] == "mse"
    assert metrics["val"]["mse"] == pytest.approx(min(row[2] for row in v0), rel=1e-5)
    assert load_module(tmp_path / "run").model.num_parameters() > 0


def test_bad_input_errors(tmp_path, capsys):
    assert main(["train", "--model", "nope", "--dataset", "synthetic", *TINY]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main(["train", "--model", "mean", "--dataset", "synthetic", "--modalities", "smell", *TINY]) == 2
    assert "no modality ['smell']" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--model", "mean", "--dataset", "synthetic", "lr"]) == 2
    assert "not key=value" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2


def test_bad_samples_are_skipped_and_reported_unless_strict(tmp_path, monkeypatch):
    from emofusion.data import synthetic

    original = synthetic.generate_split

    def broken(cfg, split, task="intensity"):
        samples = original(cfg, split, task)
        if split == "train":
            samples[3].features["audio"] = samples[3].features["audio"][:, :10]  # wrong feature size
        return samples

    monkeypatch.setattr(synthetic, "generate_split", broken)
    opts = apply_overrides({}, TINY)["dataset_options"]
    cfg = RunConfig(model="mean", dataset="synthetic", dataset_options=opts, max_epochs=1, progress=False,
                    plots=False, output=str(tmp_path / "r"))
    result = train_run(cfg)
    report = json.loads((tmp_path / "r" / "data_report.json").read_text())
    assert len(report["skipped"]["train"]) == 1 and "train_00003" in report["skipped"]["train"][0]
    assert np.isfinite(result.metrics["test"]["mae"])
    cfg.strict = True
    with pytest.raises(ValueError, match="train_00003.*'audio' features have shape"):
        train_run(cfg)


def test_models_and_datasets_commands(capsys):
    assert main(["models"]) == 0
    names = capsys.readouterr().out.split()
    assert {"mean", "unimodal_lstm", "early_fusion_lstm"} <= set(names)
    assert main(["models", "--params"]) == 0
    assert "early_fusion_lstm\t" in capsys.readouterr().out
    assert main(["datasets"]) == 0
    assert "synthetic-cls" in capsys.readouterr().out


def test_overrides_and_yaml_numbers():
    data = apply_overrides({}, ["lr=2e-3", "model.hidden_dim=16", "data.noise.visual=2", "modalities=text,audio"])
    cfg = RunConfig.from_dict(data)
    assert cfg.lr == 0.002 and cfg.modalities == ["text", "audio"]
    assert cfg.model_options == {"hidden_dim": 16} and cfg.dataset_options == {"noise": {"visual": 2}}
    assert RunConfig(lr="1e-4").lr == 1e-4
    with pytest.raises(ValueError, match="'batch_size' must be a number"):
        RunConfig(batch_size="many")
    with pytest.raises(ValueError, match="unknown config field .learning_rate."):
        RunConfig.from_dict({"learning_rate": 1})


def test_rerun_in_same_folder_replaces_checkpoints(tmp_path):
    """A second fresh run in a used folder must not leave the first run's best.ckpt for load_module to find."""
    from emofusion.training.run import evaluate_split, load_module

    opts = apply_overrides({}, TINY)["dataset_options"]
    out = tmp_path / "r"
    base = dict(model="early_fusion_lstm", dataset="synthetic", dataset_options=opts, max_epochs=2,
                progress=False, plots=False, output=str(out), model_options={"hidden_dim": 4, "head_dim": 4})
    train_run(RunConfig(**base, seed=0))
    second = train_run(RunConfig(**base, seed=1))
    assert sorted(p.name for p in (out / "checkpoints").glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]
    module = load_module(out)
    again = evaluate_split(module, second.bundle, "test")
    assert again["mae"] == pytest.approx(second.metrics["test"]["mae"], rel=1e-6)
    # an older run folder with a stale best.ckpt beside best-v1.ckpt: metrics.json names the right one
    ckpt = out / "checkpoints"
    (ckpt / "best.ckpt").rename(ckpt / "best-v1.ckpt")
    train_run(RunConfig(**{**base, "max_epochs": 1, "output": str(tmp_path / "other")}, seed=2))
    (tmp_path / "other" / "checkpoints" / "best.ckpt").rename(ckpt / "best.ckpt")
    info = json.loads((out / "metrics.json").read_text())
    info["info"]["best_checkpoint"] = str(ckpt / "best-v1.ckpt")
    (out / "metrics.json").write_text(json.dumps(info))
    assert evaluate_split(load_module(out), second.bundle, "test")["mae"] == pytest.approx(
        second.metrics["test"]["mae"], rel=1e-6
    )


def _tiny_cfg(tmp_path, name="r", **kw):
    opts = apply_overrides({}, TINY)["dataset_options"]
    base = dict(model="early_fusion_lstm", dataset="synthetic", dataset_options=opts, max_epochs=2, progress=False,
                plots=False, output=str(tmp_path / name), model_options={"hidden_dim": 4, "head_dim": 4},
                checkpoint_every_n_steps=1, batch_size=16)
    base.update(kw)
    return RunConfig(**base)


def test_failed_rerun_keeps_the_earlier_run(tmp_path):
    out = tmp_path / "r"
    train_run(_tiny_cfg(tmp_path, max_epochs=1))
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert any(str(p).startswith("checkpoints") for p in before)
    with pytest.raises(FileNotFoundError):  # the new run fails while loading its data
        train_run(_tiny_cfg(tmp_path, dataset=f"mmsa:{tmp_path / 'missing.pkl'}", dataset_options={}))
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # every file of the earlier run, byte for byte
    assert not (tmp_path / "r.previous").exists()
    # a successful re-run replaces it and leaves no backup behind
    train_run(_tiny_cfg(tmp_path, max_epochs=1, seed=3))
    assert not (tmp_path / "r.previous").exists()
    assert RunConfig.from_dict(__import__("yaml").safe_load((out / "config.yaml").read_text())).seed == 3


class _PoisonGradients(__import__("lightning").Callback):
    """Makes one parameter's gradient NaN at one step (a degenerate batch)."""

    def __init__(self, step):
        self.step = step

    def on_after_backward(self, trainer, pl_module):
        if trainer.global_step == self.step:
            next(p for p in pl_module.parameters() if p.grad is not None).grad.fill_(float("nan"))


def test_nonfinite_gradients_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path):
    from emofusion.training.callbacks import NonFiniteError

    with pytest.raises(NonFiniteError, match=r"step 3 .*non-finite gradients.*weights were not updated.*last\.ckpt"):
        train_run(_tiny_cfg(tmp_path), callbacks=[_PoisonGradients(3)])
    ckpts = {p.name: torch.load(p, weights_only=False) for p in (tmp_path / "r" / "checkpoints").glob("*.ckpt")}
    steps = {name: c["global_step"] for name, c in ckpts.items()}
    # the newest checkpoint is from before the bad step, and nothing was saved after it
    assert 2 <= steps["last.ckpt"] <= 3 and max(steps.values()) == steps["last.ckpt"], steps
    for c in ckpts.values():
        assert all(torch.isfinite(v).all() for v in c["state_dict"].values() if v.is_floating_point())
    # the CLI prints it as one line, exit 2
    assert "nonfinite=skip" in str(NonFiniteError("x nonfinite=skip"))


def test_nonfinite_skip_counts_the_skipped_step(tmp_path):
    result = train_run(_tiny_cfg(tmp_path, nonfinite="skip"), callbacks=[_PoisonGradients(3)])
    info = json.loads((tmp_path / "r" / "metrics.json").read_text())["info"]
    assert info["nonfinite_steps_skipped"] == 1
    assert all(torch.isfinite(p).all() for p in result.module.parameters())
    assert np.isfinite(result.metrics["test"]["mae"])


def test_nan_headline_metric_never_exits_zero(tmp_path, monkeypatch, capsys):
    from emofusion.training import run as run_module

    real = run_module.compute_metrics

    def nan_mae(task, predictions, labels):
        return {**real(task, predictions, labels), "mse": float("nan")}

    monkeypatch.setattr(run_module, "compute_metrics", nan_mae)
    code = main(["train", "--model", "mean", "--dataset", "synthetic", "--max-epochs", "1", "--quiet",
                 "--output", str(tmp_path / "n"), "plots=false", *TINY])
    assert code == 2
    err = capsys.readouterr().err
    assert "headline metric not finite (val/mse = nan" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "n" / "metrics.json").exists()  # what was computed is kept


def test_materialized_training_data_gives_the_same_run(tmp_path):
    """Standardising train/val once (materialize) must not change a single number of a seeded run."""
    opts = apply_overrides({}, TINY)["dataset_options"]
    results = []
    for flag in (True, False):
        cfg = RunConfig(model="early_fusion_lstm", dataset="synthetic", dataset_options=opts, max_steps=6,
                        val_every_n_steps=3, model_options={"hidden_dim": 8, "head_dim": 8}, progress=False,
                        plots=False, materialize=flag, output=str(tmp_path / f"r{flag}"))
        results.append(train_run(cfg).metrics)
    for split in ("val", "test"):
        assert results[0][split].keys() == results[1][split].keys()
        for name, value in results[0][split].items():  # NaN (undefined metrics) equal NaN here
            assert value == results[1][split][name] or (np.isnan(value) and np.isnan(results[1][split][name]))


def test_engine_averages_the_inputs_a_model_declares_only_for_training(tmp_path, monkeypatch):
    """tfn reads audio/visual as time means: the train/val loaders get them averaged once (one step a sample),
    the text sequence stays whole; with input noise (which acts on single frames) nothing is averaged."""
    from emofusion.training import run as run_mod

    seen = []
    original = run_mod.make_loader

    def spy(dataset, config, modalities, train, sequence_labels=False):
        seen.append((train, {m: len(dataset[0].features[m]) for m in modalities}, len(dataset.transforms)))
        return original(dataset, config, modalities, train, sequence_labels)

    monkeypatch.setattr(run_mod, "make_loader", spy)
    opts = apply_overrides({}, TINY)["dataset_options"]
    for noise in (0.0, 0.1):
        seen.clear()
        cfg = RunConfig(model="tfn", dataset="synthetic", dataset_options=opts, max_steps=2, val_every_n_steps=2,
                        input_noise=noise, progress=False, plots=False, output=str(tmp_path / f"r{noise}"))
        train_run(cfg)
        fit = [s for s in seen[:2]]  # the train and val loaders of the fit (evaluation builds its own after)
        assert [train for train, _, _ in fit] == [True, False]
        for _, lengths, transforms in fit:
            assert transforms == 0  # materialised
            assert lengths["text"] > 1
            assert (lengths["audio"] == 1 and lengths["visual"] == 1) == (noise == 0.0), lengths


def test_quantile_scaled_run_reloads_with_its_quantiles(tmp_path):
    """The fitted quantiles travel in the checkpoint and the pretrained folder: re-evaluating either gives
    the run's own test numbers, and the model saw rank-Gauss inputs, not z-scores."""
    from emofusion.data.hygiene import HygieneTransform
    from emofusion.pretrained import from_pretrained
    from emofusion.training.run import bundle_for_module, evaluate_split

    result = train_run(_tiny_cfg(tmp_path, max_epochs=1, standardize="quantile"))
    state = result.module.hparams["hygiene_state"]
    assert state["scaling"] == "quantile" and "quantiles" in state["modalities"]["audio"]
    assert HygieneTransform(state).scaling == "quantile"
    for module in (load_module(result.run_dir), from_pretrained(result.run_dir / "model")):
        again = evaluate_split(module, bundle_for_module(module)[0], "test")
        assert again["mae"] == pytest.approx(result.metrics["test"]["mae"], rel=1e-6)
    from emofusion.data.hygiene import quantile_map
    from emofusion.data.registry import load_dataset

    audio = state["modalities"]["audio"]
    raw = load_dataset("synthetic", **apply_overrides({}, TINY)["dataset_options"]).train[0].features["audio"]
    expected = np.nan_to_num(quantile_map(raw[:, audio["keep"]], np.asarray(audio["quantiles"])))
    np.testing.assert_allclose(result.bundle.train[0].features["audio"], expected, atol=1e-5)
