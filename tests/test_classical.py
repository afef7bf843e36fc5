"""The classical baselines (models/classical.py): pooled statistics, the estimator they feed, the engine's fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emofusion.models import create_model
from emofusion.models.classical import pooled_statistics
from emofusion.tasks import TaskSpec, classification_task, emotion_intensity_task, sentiment_task

DIMS = {"audio": 3, "visual": 2}


def padded(lengths: dict[str, list[int]], seed=0, pad=np.nan):
    """Unaligned inputs with NaN padding, and the per-sample real frames (the independent reference)."""
    rng = np.random.default_rng(seed)
    inputs, frames = {}, {m: [] for m in lengths}
    for m, lens in lengths.items():
        width = max(max(lens), 1)
        values = np.full((len(lens), width, DIMS[m]), pad)
        mask = np.zeros((len(lens), width), bool)
        for i, n in enumerate(lens):
            real = rng.normal(2.0, 1.5, size=(n, DIMS[m]))
            values[i, :n], mask[i, :n] = real, True
            frames[m].append(real)
        inputs[m] = (torch.tensor(values, dtype=torch.float32), torch.tensor(mask))
    return inputs, frames


def reference_features(frames, n):
    """mean, population std (ddof 0) and present per modality, by numpy on each sample's real frames."""
    rows = []
    for i in range(n):
        row = []
        for m in DIMS:
            f = frames[m][i].astype(np.float32).astype(np.float64)
            if len(f):
                row += [f.mean(0), f.std(0), [1.0]]
            else:
                row += [np.zeros(DIMS[m]), np.zeros(DIMS[m]), [0.0]]
        rows.append(np.concatenate(row))
    return np.array(rows)


LENGTHS = {"audio": [5, 1, 0, 3, 4, 2], "visual": [2, 7, 3, 0, 1, 6]}


def test_pooled_statistics_are_masked_mean_std_and_presence_whatever_the_padding():
    inputs, frames = padded(LENGTHS)
    for m in DIMS:
        got = pooled_statistics(*inputs[m])
        ref = reference_features({k: frames[k] for k in DIMS}, 6)
        offset = 0 if m == "audio" else 2 * DIMS["audio"] + 1
        np.testing.assert_allclose(got, ref[:, offset: offset + 2 * DIMS[m] + 1], rtol=1e-9, atol=1e-9)
    # the absent samples: zeros and present 0 (not NaN from the padding)
    assert pooled_statistics(*inputs["audio"])[2].tolist() == [0.0] * 7


def _data(n=60, seed=0):
    lengths = {m: list(np.random.default_rng(seed + k).integers(0, 6, n)) for k, m in enumerate(DIMS)}
    inputs, frames = padded(lengths, seed)
    x = reference_features(frames, n)
    y = np.clip(0.8 * x[:, 0] - 0.5 * x[:, 7] + 0.3 * np.random.default_rng(seed).normal(size=n), -3, 3)
    return inputs, x, y


@pytest.mark.parametrize("name, options", [
    ("svm", {"C": 2.0, "epsilon": 0.2}),
    ("random_forest", {"n_estimators": 20, "min_samples_leaf": 2, "max_features": 0.5}),
    ("gradient_boosting", {"max_iter": 30, "max_depth": 2, "learning_rate": 0.1}),
])
def test_a_fitted_baseline_predicts_what_its_estimator_fitted_on_hand_pooled_features_predicts(name, options):
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    inputs, x, y = _data()
    model = create_model(name, DIMS, sentiment_task(), **options)
    model.fit(model.features(inputs), y, seed=3, loss="l1")
    reference = {
        "svm": lambda: make_pipeline(StandardScaler(), SVR(kernel="rbf", gamma="scale", **options)),
        "random_forest": lambda: RandomForestRegressor(random_state=3, **options),
        "gradient_boosting": lambda: HistGradientBoostingRegressor(loss="absolute_error", random_state=3,
                                                                   early_stopping=False, **options),
    }[name]().fit(x, y)
    test_inputs, test_x, _ = _data(n=9, seed=5)
    got = model(test_inputs).prediction
    assert got.shape == (9, 1)
    np.testing.assert_allclose(got.numpy()[:, 0], np.clip(reference.predict(test_x), -3, 3), rtol=1e-5, atol=1e-5)


def test_gradient_boosting_fits_the_runs_loss_and_clips_to_the_label_range():
    inputs, x, y = _data()
    l1 = create_model("gradient_boosting", DIMS, sentiment_task(-1.0, 1.0), max_iter=10)
    l1.fit(l1.features(inputs), y + 1.5, loss="l1")  # most of the fit lies above the range
    l2 = create_model("gradient_boosting", DIMS, sentiment_task(-1.0, 1.0), max_iter=10)
    l2.fit(l2.features(inputs), y, loss="mse")
    assert l1.estimator.loss == "absolute_error" and l2.estimator.loss == "squared_error"
    pred = l1(inputs).prediction
    raw = l1.estimator.predict(x)
    assert (raw > 1.0).sum() > 10
    np.testing.assert_allclose(pred.numpy()[:, 0], np.clip(raw, -1.0, 1.0), rtol=1e-6)
    with pytest.raises(ValueError, match="l1 or mse"):
        l1.fit(l1.features(inputs), y, loss="zero_inflated")


@pytest.mark.parametrize("name, options", [("random_forest", {"n_estimators": 15}), ("svm", {}),
                                           ("gradient_boosting", {"max_iter": 10})])
def test_class_logits_are_log_probabilities_in_the_tasks_class_order_with_a_floor_for_unseen_classes(name, options):
    inputs, x, y = _data()
    labels = np.where(y > 0.5, 3, np.where(y < -0.5, 0, 1))  # class 2 never appears in training
    model = create_model(name, DIMS, classification_task(["a", "b", "c", "d"]), **options)
    model.fit(model.features(inputs), labels, seed=1)
    logits = model(inputs).prediction.numpy()
    proba = model.estimator.predict_proba(x)
    assert list(model.estimator.classes_) == [0, 1, 3]
    np.testing.assert_allclose(np.exp(logits[:, [0, 1, 3]]), np.maximum(proba, 1e-12), rtol=1e-5)
    np.testing.assert_allclose(logits[:, 2], np.log(1e-12), rtol=1e-6)


def test_multi_output_regression_fits_one_estimator_per_output():
    inputs, x, y = _data()
    task = emotion_intensity_task(["happy", "sad"])
    labels = np.clip(np.stack([y, -y], 1), 0, 3)
    model = create_model("svm", DIMS, task)
    model.fit(model.features(inputs), labels)
    pred = model(inputs).prediction.numpy()
    assert pred.shape == (60, 2)
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    second = make_pipeline(StandardScaler(), SVR()).fit(x, labels[:, 1])
    np.testing.assert_allclose(pred[:, 1], np.clip(second.predict(x), 0, 3), rtol=1e-5, atol=1e-5)


def test_unsupported_tasks_and_an_unfitted_model_say_what_is_wrong():
    with pytest.raises(ValueError, match="multilabel_binary"):
        create_model("svm", DIMS, TaskSpec("multilabel_binary", ("a", "b")))
    with pytest.raises(ValueError, match="per-utterance"):
        create_model("svm", DIMS, classification_task(["a", "b"], sequence_labels=True))
    inputs, _, _ = _data(n=4)
    with pytest.raises(RuntimeError, match="not fitted"):
        create_model("svm", DIMS, sentiment_task())(inputs)


def test_the_engine_fits_once_saves_a_checkpoint_that_reloads_and_reports_the_baselines(tmp_path):
    import json

    from emofusion.training.config import RunConfig, apply_overrides
    from emofusion.training.run import bundle_for_module, evaluate_split, load_module, train_run

    opts = apply_overrides({}, ["data.n_train=40", "data.n_val=12", "data.n_test=12", "data.min_words=3",
                                "data.max_words=6"])["dataset_options"]
    cfg = RunConfig(model="gradient_boosting", dataset="synthetic", dataset_options=opts, progress=False,
                    plots=False, output=str(tmp_path / "gb"), model_options={"max_iter": 15}, loss="l1")
    result = train_run(cfg)
    payload = json.loads((tmp_path / "gb" / "metrics.json").read_text())
    assert payload["info"]["steps_trained"] == 0 and payload["info"]["train_samples"] == 40
    assert {"train_mean", "train_median", "all_zero"} <= set(payload["baselines"]["test"])
    assert np.isfinite(payload["test"]["mae"])
    # every output got an absolute-error booster (the run's loss)
    assert {e.loss for e in result.module.model.estimator.estimators_} == {"absolute_error"}
    again = load_module(tmp_path / "gb")
    assert again.model.estimator is not None
    metrics = evaluate_split(again, bundle_for_module(again)[0], "test")
    assert metrics["mae"] == pytest.approx(result.metrics["test"]["mae"], rel=1e-9)


def test_export_and_the_pretrained_folder_refuse_an_estimator_and_say_what_to_use(tmp_path):
    from emofusion.export import export_model
    from emofusion.pretrained import save_pretrained
    from emofusion.training.module import EmoFusionModule

    inputs, x, y = _data(n=20)
    module = EmoFusionModule("svm", DIMS, sentiment_task().to_dict())
    module.model.fit(module.model.features(inputs), y)
    with pytest.raises(ValueError, match="emofusion predict"):
        export_model(module, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="safetensors"):
        save_pretrained(module, tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_cv_folds_scores_out_of_fold_predictions_of_fits_that_never_saw_the_held_out_fold(tmp_path):
    import json

    from sklearn.model_selection import KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    from emofusion.evaluation.metrics import compute_metrics
    from emofusion.training.config import RunConfig, apply_overrides
    from emofusion.training.run import make_loader, train_run

    opts = apply_overrides({}, ["data.n_train=40", "data.n_val=12", "data.n_test=12", "data.min_words=3",
                                "data.max_words=6"])["dataset_options"]
    svr = {"C": 2.0, "epsilon": 0.05}
    base = dict(model="svm", dataset="synthetic", dataset_options=opts, progress=False, plots=False,
                model_options=dict(svr), loss="l1", seed=4)
    result = train_run(RunConfig(**base, output=str(tmp_path / "cv"), cv_folds=4))
    payload = json.loads((tmp_path / "cv" / "metrics.json").read_text())
    # by hand: the engine's pooled training features, 4 shuffled folds seeded by the run's seed, one SVR per
    # output fitted on the other folds, clipped to the label range
    model, bundle = result.module.model, result.bundle
    loader = make_loader(bundle.train, RunConfig(batch_size=32), bundle.modalities, False, False)
    xs, ys = zip(*[(model.features({m: b.inputs[m] for m in bundle.modalities}), b.labels.numpy()) for b in loader])
    x, y = np.concatenate(xs), np.concatenate(ys).reshape(40, -1)

    def fit(rows, j):
        return make_pipeline(StandardScaler(), SVR(kernel="rbf", gamma="scale", **svr)).fit(x[rows], y[rows, j])

    oof = np.zeros_like(y, dtype=np.float64)
    for fit_idx, held in KFold(4, shuffle=True, random_state=4).split(x):
        for j in range(y.shape[1]):
            oof[held, j] = fit(fit_idx, j).predict(x[held])
    oof = np.clip(oof, *result.module.task.label_range)
    expected = compute_metrics(result.module.task, oof, y)
    assert payload["cv"]["mae"] == pytest.approx(expected["mae"], rel=1e-9)
    assert payload["cv"]["mse"] == pytest.approx(expected["mse"], rel=1e-9)
    # the baselines under the same folds: each held-out fold gets the median / mean of the other folds' labels
    median, mean = np.zeros_like(y, dtype=np.float64), np.zeros_like(y, dtype=np.float64)
    for fit_idx, held in KFold(4, shuffle=True, random_state=4).split(x):
        median[held], mean[held] = np.median(y[fit_idx], 0), y[fit_idx].mean(0)
    task = result.module.task
    assert payload["baselines"]["cv"]["train_median"]["mae"] == pytest.approx(compute_metrics(task, median, y)["mae"])
    assert payload["baselines"]["cv"]["train_mean"]["mse"] == pytest.approx(compute_metrics(task, mean, y)["mse"])
    assert payload["baselines"]["cv"]["all_zero"]["mae"] == pytest.approx(np.abs(y).mean())
    # the model itself is still fitted once on the whole split, after the folds
    everything = np.arange(40)
    for j, estimator in enumerate(model.estimator.estimators_):
        np.testing.assert_allclose(estimator.predict(x), fit(everything, j).predict(x), rtol=1e-9)
    # and out-of-fold is not in-sample
    assert payload["cv"]["mae"] != pytest.approx(compute_metrics(result.module.task, model.predict_features(x), y)["mae"])
    with pytest.raises(ValueError, match="cv_folds=1: needs 2 <= folds <= 40"):
        train_run(RunConfig(**base, output=str(tmp_path / "one"), cv_folds=1))
    with pytest.raises(ValueError, match="k-fold scoring is for closed-form models"):
        train_run(RunConfig(**{**base, "model": "late_fusion", "model_options": {}}, output=str(tmp_path / "nn"),
                            cv_folds=3, max_steps=1))
