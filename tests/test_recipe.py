"""The training recipe (budget in steps, patience in validation checks, minimum steps, LR plateau schedule)
and the closed-form trivial baselines every evaluation reports."""

import csv
import json

import numpy as np
import pytest

from emofusion.evaluation.baselines import baseline_metrics, beats_baselines, best_baseline, bundle_baselines
from emofusion.evaluation.metrics import compute_metrics
from emofusion.evaluation.reports import flagged, metrics_table
from emofusion.tasks import classification_task, emotion_intensity_task, sentiment_task
from emofusion.training import RunConfig, train_run
from emofusion.training.config import MIN_STEPS, resolve_budget

CONV = {"n_train": 24, "n_val": 8, "n_test": 8, "audio_dim": 12, "visual_dim": 7, "text_dim": 10}


def test_budget_rule_in_steps():
    # tiny set: 3 steps per epoch -> validation every 8 steps, 1500-step budget rounded to the interval
    b = resolve_budget(RunConfig(), 3)
    assert (b.val_every_n_steps, b.max_steps, b.max_epochs, b.min_steps, b.patience, b.lr_patience) == (
        8, 1504, -1, MIN_STEPS, 10, 5)
    # mid-size: twice per epoch; 60 epochs exceed the 1500-step floor
    b = resolve_budget(RunConfig(), 38)
    assert b.val_every_n_steps == 19 and b.max_steps == 60 * 38
    # large: capped at 100 steps (several checks per epoch)
    b = resolve_budget(RunConfig(), 625)
    assert b.val_every_n_steps == 100 and b.max_steps == 60 * 625
    # an epoch cap keeps working: no step cap, the interval divides the budget so the last step is validated
    b = resolve_budget(RunConfig(max_epochs=3), 6)
    assert b.max_epochs == 3 and b.max_steps == -1 and b.val_every_n_steps == 6 and b.min_steps == 18
    b = resolve_budget(RunConfig(max_epochs=1), 2)
    assert b.val_every_n_steps == 2 and b.min_steps == 2
    # explicit values win
    b = resolve_budget(RunConfig(max_steps=50, val_every_n_steps=5, min_steps=10, patience=3, lr_patience=2), 40)
    assert (b.max_steps, b.val_every_n_steps, b.min_steps, b.patience, b.lr_patience) == (50, 5, 10, 3, 2)


def test_small_conversation_set_at_defaults_trains_past_min_steps(tmp_path):
    """Issue 13: ~100 dialogues and 4 steps per epoch stopped after 6 epochs at chance level. At defaults (no
    patience, budget or interval override) the run may not stop before MIN_STEPS optimiser steps."""
    cfg = RunConfig(model="clstm_unimodal", dataset="synthetic-conv", modalities=["text"], dataset_options=CONV,
                    model_options={"hidden_dim": 8, "dense_dim": 8}, batch_size=8, progress=False, plots=False,
                    output=str(tmp_path / "r"), threads=1)
    result = train_run(cfg)
    info = json.loads((tmp_path / "r" / "metrics.json").read_text())["info"]
    assert info["budget"]["steps_per_epoch"] == 3
    assert info["steps_trained"] >= MIN_STEPS == 200
    assert info["epochs_trained"] >= MIN_STEPS // 3 - 1
    assert result.info["steps_trained"] == info["steps_trained"]
    # validation ran every 8 steps (not once per 3-step epoch), and the learning rate was logged each time
    with open(tmp_path / "r" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/accuracy")]
    steps = [int(r["step"]) for r in rows]
    assert steps[:3] == [7, 15, 23]  # Lightning logs the 0-based step of the batch that triggered the check
    assert len(steps) == info["steps_trained"] // 8
    assert all(r.get("lr") for r in rows)


def test_plateau_schedule_lowers_the_lr_when_validation_stalls(tmp_path):
    # the mean model starts at its loss's closed-form optimum, so validation barely moves: the LR drops after
    # lr_patience checks without (relative 1e-4) improvement
    cfg = RunConfig(model="mean", dataset="synthetic", dataset_options={"n_train": 32, "n_val": 16, "n_test": 16,
                    "min_words": 4, "max_words": 6}, batch_size=8, val_every_n_steps=2, patience=4, lr_patience=1,
                    min_steps=16, max_steps=40, progress=False, plots=False, output=str(tmp_path / "r"))
    result = train_run(cfg)
    with open(tmp_path / "r" / "metrics.csv") as f:
        lrs = [float(r["lr"]) for r in csv.DictReader(f) if r.get("lr")]
    assert lrs[0] == pytest.approx(1e-3)
    assert lrs[-1] < lrs[0] / 3  # halved at least twice
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))
    assert 16 <= result.info["steps_trained"] <= 40


def test_mean_model_starts_at_the_closed_form_constant(tmp_path):
    cfg = RunConfig(model="mean", dataset="synthetic", dataset_options={"n_train": 40, "n_val": 16, "n_test": 16,
                    "min_words": 4, "max_words": 6}, max_steps=1, loss="mse", progress=False, plots=False,
                    output=str(tmp_path / "r"))
    result = train_run(cfg)
    train = np.stack([result.bundle.train.raw(i).label for i in range(len(result.bundle.train))])
    bias = result.module.model.bias.detach().numpy()
    # one Adam step of lr 1e-3 from the train mean
    np.testing.assert_allclose(bias, train.mean(0), atol=1.5e-3)
    assert not np.allclose(train.mean(0), 0)


def test_baselines_are_closed_form_and_scored_with_the_metric_code():
    rng = np.random.default_rng(0)
    task = emotion_intensity_task()
    train = np.where(rng.random((50, 6)) < 0.3, rng.integers(1, 4, (50, 6)) / 1.0, 0.0)
    test = np.where(rng.random((30, 6)) < 0.3, rng.integers(1, 4, (30, 6)) / 1.0, 0.0)
    base = baseline_metrics(task, train, test)
    assert set(base) == {"train_mean", "train_median", "all_zero"}
    expected = compute_metrics(task, np.tile(train.mean(0), (30, 1)), test)
    assert base["train_mean"]["mae"] == pytest.approx(expected["mae"])
    assert base["train_median"]["mae"] == pytest.approx(np.abs(np.median(train, 0) - test).mean())
    assert base["all_zero"]["mae"] == pytest.approx(np.abs(test).mean())
    assert best_baseline(base, "mae")[1] == min(b["mae"] for b in base.values())

    # ICT-MMMO's [1, 5]: no all-zero baseline (0 is outside the scale)
    mmmo = sentiment_task(1.0, 5.0)
    y = rng.uniform(1, 5, 40)
    assert set(baseline_metrics(mmmo, y, y[:10])) == {"train_mean", "train_median"}
    assert baseline_metrics(mmmo, y, y[:10])["train_median"]["mae"] == pytest.approx(np.abs(np.median(y) - y[:10]).mean())

    cls = classification_task(("a", "b", "c"))
    ytrain = np.array([0] * 10 + [1] * 30 + [2] * 10)
    ytest = np.array([0, 1, 1, 2, 1, 0])
    base = baseline_metrics(cls, ytrain, ytest)
    assert base["majority"]["accuracy"] == pytest.approx(np.mean(ytest == 1))
    # class-prior draws: accuracy near sum_c prior_c * freq_c, well below the majority here
    assert 0.1 < base["class_prior"]["accuracy"] < base["majority"]["accuracy"]
    assert beats_baselines(0.7, base, "accuracy") and not beats_baselines(0.5, base, "accuracy")
    assert beats_baselines(float("nan"), base, "accuracy") is False
    assert beats_baselines(0.5, base, "pearson_r") is None


def test_run_writes_baselines_and_the_table_flags_a_model_that_loses(tmp_path):
    cfg = RunConfig(model="early_fusion_lstm", dataset="synthetic", dataset_options={"n_train": 32, "n_val": 16,
                    "n_test": 16, "min_words": 4, "max_words": 6}, model_options={"hidden_dim": 4, "head_dim": 4},
                    max_epochs=1, progress=False, plots=False, output=str(tmp_path / "r"))
    result = train_run(cfg)
    stored = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert set(stored["baselines"]) == {"val", "test"}
    assert stored["baselines"]["test"]["all_zero"]["mae"] == pytest.approx(
        bundle_baselines(result.bundle)["test"]["all_zero"]["mae"])
    assert stored["info"]["monitor"] == "mse" and stored["info"]["monitor_mode"] == "min"
    # a model 0.5 worse than all-zero on test MAE is flagged, a model better than every baseline is not
    metrics = {"val": dict(result.metrics["val"]), "test": dict(result.metrics["test"])}
    best = best_baseline(stored["baselines"]["test"], "mae")
    metrics["test"]["mae"] = best[1] + 0.5
    table = metrics_table(metrics, "emotion_intensity", baselines=stored["baselines"], info=stored["info"])
    assert ("test", "mae") in {(s, n) for s, n, *_ in flagged(metrics, stored["baselines"], ["mae"])}
    assert "does not beat the trivial baseline" in table.caption and "val/mse" in table.caption
    metrics["test"]["mae"] = best[1] - 0.01
    assert ("test", "mae") not in {(s, n) for s, n, *_ in flagged(metrics, stored["baselines"], ["mae"])}


def test_a_model_declares_its_extra_plots(tmp_path):
    """RMFN's HIGHLIGHT figure comes from its ``extra_plots`` declaration, not from a name test in the engine."""
    from emofusion.evaluation.plots import plot_run
    from emofusion.models.rmfn import RMFN

    assert RMFN.extra_plots == ("emofusion.evaluation.rmfn_plots:plot_rmfn_run",)
    cfg = RunConfig(model="rmfn", dataset="synthetic:aligned", dataset_options={"n_train": 8, "n_val": 4,
                    "n_test": 4, "min_words": 4, "max_words": 6}, model_options={"stages": 2, "hidden_dim": 4,
                    "fuse_dim": 4, "z_dim": 4}, max_steps=1, progress=False, plots=False, output=str(tmp_path / "r"))
    result = train_run(cfg)
    made = plot_run(result.run_dir, result.module, result.bundle, cfg)
    assert any(p.name.startswith("rmfn_highlight_") for p in made)
    result.module.model.extra_plots = ("emofusion.evaluation.rmfn_plots",)  # no ":function"
    with pytest.raises(ValueError, match="package.module:function"):
        plot_run(result.run_dir, result.module, result.bundle, cfg)


def test_sentiment_binary_metrics_name_their_convention():
    from emofusion.evaluation.metrics import sentiment_metrics

    y = np.array([-2.0, 0.0, 0.0, 1.0, 2.5, -0.5])
    p = np.array([-1.0, 0.5, -0.2, 0.2, 1.0, 0.3])
    m = sentiment_metrics(p, y)
    assert "acc2" not in m and "f1" not in m
    assert m["acc2_has0"] == pytest.approx(4 / 6)  # >= 0 vs < 0 over all six (MMSA Has0_acc_2)
    assert m["acc2_non0"] == pytest.approx(3 / 4)  # the two zeros dropped (MMSA Non0_acc_2)


def test_patience_in_epochs_becomes_checks_at_the_datasets_interval():
    # a paper's "patience 10 epochs": 40 steps per epoch, validation every 20 -> 20 checks
    b = resolve_budget(RunConfig(patience_epochs=10), 40)
    assert (b.val_every_n_steps, b.patience, b.lr_patience) == (20, 20, 10)
    # tiny set: 3 steps per epoch, validation every 8 steps -> ceil(30 / 8) = 4 checks
    b = resolve_budget(RunConfig(patience_epochs=10, patience=99), 3)
    assert (b.val_every_n_steps, b.patience) == (8, 4)
    # 7 steps per epoch (ICT-MMMO at batch 32): ceil(4 * 7 / 8) = 4, not the 4 checks = 32 steps of patience=4
    assert resolve_budget(RunConfig(patience_epochs=5), 7).patience == 5
    with pytest.raises(ValueError, match="patience_epochs"):
        RunConfig(patience_epochs=-1)


def _tiny_regression(tmp_path, name, **kw):
    cfg = RunConfig(model="early_fusion_lstm", dataset="synthetic",
                    dataset_options={"n_train": 32, "n_val": 16, "n_test": 16, "min_words": 4, "max_words": 6},
                    model_options={"hidden_dim": 8}, batch_size=8, max_steps=12, val_every_n_steps=4, min_steps=12,
                    progress=False, plots=False, output=str(tmp_path / name), threads=1, **kw)
    return train_run(cfg)


def test_ema_selects_and_saves_the_averaged_weights(tmp_path):
    import torch

    from emofusion.training.run import evaluate_split, load_module

    result = _tiny_regression(tmp_path, "ema", ema_decay=0.9)
    ckpt = torch.load(tmp_path / "ema" / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    # Lightning's EMA callback: state_dict holds the average, the raw weights are kept beside it
    assert "current_model_state" in ckpt
    averaged, raw = ckpt["state_dict"], ckpt["current_model_state"]
    assert any(not torch.equal(averaged[k], raw[k]) for k in averaged if averaged[k].is_floating_point())
    # the reported test metric is the averaged model's (what best.ckpt loads)
    module = load_module(tmp_path / "ema")
    assert evaluate_split(module, result.bundle, "test")["mae"] == pytest.approx(result.metrics["test"]["mae"])
    with pytest.raises(ValueError, match="ema_decay"):
        RunConfig(ema_decay=1.0)


def test_input_noise_and_feature_dropout_touch_training_batches_only(tmp_path):
    import torch

    from emofusion.data.batch import Batch, ModalityTensor
    from emofusion.tasks import sentiment_task
    from emofusion.training.module import EmoFusionModule

    module = EmoFusionModule("early_fusion_lstm", {"audio": 3}, sentiment_task().to_dict(), {"hidden_dim": 4})
    values = torch.ones(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    batch = Batch({"audio": ModalityTensor(values, mask)}, torch.zeros(2, 1), ["a", "b"])
    assert module._augment(batch) is batch  # off by default
    torch.manual_seed(0)
    module.augment = {"input_noise": 0.5}
    noisy = module._augment(batch).inputs["audio"].values
    assert torch.equal(noisy[0, 3:], values[0, 3:])  # padding stays as it was
    assert (noisy[0, :3] - 1).std() == pytest.approx(0.5, rel=0.5)  # noise of that std on real steps
    module.augment = {"feature_dropout": 0.5}
    dropped = module._augment(batch).inputs["audio"].values
    assert set(dropped.unique().tolist()) <= {0.0, 2.0} and (dropped == 0).any()  # inverted dropout
    assert torch.equal(batch.inputs["audio"].values, values)  # the batch itself is not modified
    result = _tiny_regression(tmp_path, "aug", input_noise=0.3, feature_dropout=0.2)
    assert np.isfinite(result.metrics["test"]["mae"])


def test_a_checkpoint_from_before_absent_tokens_loads_with_zeros_for_absent(tmp_path):
    import torch

    from emofusion.training.module import EmoFusionModule

    result = _tiny_regression(tmp_path, "old")
    path = tmp_path / "old" / "checkpoints" / "best.ckpt"
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    assert any(".absent_tokens." in k for k in ckpt["state_dict"])
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if ".absent_tokens." not in k}
    torch.save(ckpt, tmp_path / "old.ckpt")
    module = EmoFusionModule.load_from_checkpoint(tmp_path / "old.ckpt", map_location="cpu", weights_only=False)
    assert module.model.absent_mode == "zeros" and not hasattr(module.model, "absent_tokens")
    # a current checkpoint keeps its tokens
    current = EmoFusionModule.load_from_checkpoint(path, map_location="cpu", weights_only=False)
    assert current.model.absent_mode == "token"
    assert result.metrics["test"]["mae"] >= 0


def test_engine_adam_is_fused_and_follows_the_adam_rule():
    """make_adam uses torch's fused kernel and takes the same steps as Adam's reference loop (with weight decay,
    several steps, unequal parameter shapes), so the speed-up cannot change what a run learns."""
    import torch

    from emofusion.training.module import make_adam

    gen = torch.Generator().manual_seed(0)
    shapes = [(7, 3), (5,), (2, 4, 3)]
    start = [torch.randn(s, generator=gen) for s in shapes]
    grads = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(4)]
    runs = []
    for build in (lambda ps: make_adam(ps, 1e-2, 0.1),
                  lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=0.1, foreach=False)):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        opt = build(params)
        for g in grads:
            for p, gp in zip(params, g):
                p.grad = gp.clone()
            opt.step()
        runs.append((opt, params))
    (fused_opt, fused), (_, loop) = runs
    assert fused_opt.defaults["fused"] is True
    for a, b, s in zip(fused, loop, start):
        assert not torch.equal(a, s)  # it moved
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
