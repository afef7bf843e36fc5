"""Closed-form trivial baselines: constants (and a class-prior draw) fitted on the training labels, scored on
an evaluation split with the same metric code as the models (:func:`emofusion.evaluation.metrics.compute_metrics`).

Which baselines a task gets (docs/metrics.md, "Trivial baselines"):

- regression (intensities, sentiment, traits): ``train_mean`` and ``train_median`` per output, and ``all_zero``
  where 0 is inside the label range (intensities in [0, 3], sentiment in [-3, 3]; not ICT-MMMO's [1, 5]);
- classification: ``majority`` (the most frequent training class) and ``class_prior`` (classes drawn from the
  training distribution; pooled metrics of ``PRIOR_DRAWS`` seeded draws per sample);
- multi-label presence: ``majority`` per label and ``class_prior`` (Bernoulli draws at the training rates).

A model that does not beat the best of these on its headline metric is flagged in every report
(:func:`beats_baselines`). This module imports nothing from training, so the engine can use it.
"""

from __future__ import annotations

import numpy as np

from emofusion.evaluation.metrics import compute_metrics
from emofusion.tasks import TaskSpec

PRIOR_DRAWS = 10
LOWER_IS_BETTER_PREFIXES = ("mae", "mse", "loss")


def lower_is_better(metric: str) -> bool:
    """Errors (mae*, mse*, loss) are better low; accuracies, F1, correlations high. A split prefix
    (``val/mae``) does not change the direction."""
    metric = metric.rpartition("/")[2]
    return metric.split("_")[0] in LOWER_IS_BETTER_PREFIXES or metric in ("mae_sum", "mse_sum")


def split_labels(dataset) -> np.ndarray:
    """The labels of a split in the layout the metrics receive (sequence labels flattened per utterance)."""
    labels = [np.asarray(dataset.raw(i).label) for i in range(len(dataset))]
    if not labels:
        raise ValueError(f"{getattr(dataset, 'name', 'split')}: no samples, no labels for the baselines")
    if labels[0].ndim >= 1 and any(lab.shape != labels[0].shape for lab in labels):
        return np.concatenate(labels)
    return np.stack(labels)


def _as_2d(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels, np.float64)
    return labels.reshape(len(labels), -1)


def baseline_predictions(task: TaskSpec, train_labels: np.ndarray, n: int, seed: int = 0) -> dict[str, list]:
    """Name -> predictions for ``n`` evaluation samples, shaped as the models' outputs (regression values;
    logits for classes). The class-prior baseline has ``PRIOR_DRAWS`` draws per sample (``n * PRIOR_DRAWS``
    rows), scored against the labels repeated as often: the pooled metrics of 10 seeded draws, close to
    their expectation, in one metric call."""
    train_labels = np.asarray(train_labels)
    if task.sequence_labels and task.kind != "classification" and train_labels.ndim == 1:
        train_labels = train_labels.reshape(-1, 1)
    out: dict[str, list] = {}
    if task.is_regression:
        y = _as_2d(train_labels)
        out["train_mean"] = [np.tile(y.mean(0), (n, 1))]
        out["train_median"] = [np.tile(np.median(y, 0), (n, 1))]
        low, high = task.label_range if task.label_range is not None else (-np.inf, np.inf)
        if low <= 0.0 <= high:
            out["all_zero"] = [np.zeros((n, y.shape[1]))]
        return out
    rng = np.random.default_rng(seed)
    if task.kind == "classification":
        k = len(task.output_names)
        counts = np.bincount(train_labels.astype(np.int64).ravel(), minlength=k)[:k].astype(np.float64)
        prior = counts / counts.sum()
        out["majority"] = [np.tile(np.eye(k)[int(counts.argmax())], (n, 1))]
        out["class_prior"] = [np.eye(k)[rng.choice(k, size=n * PRIOR_DRAWS, p=prior)]]
        return out
    if task.kind == "multilabel_binary":
        rate = (_as_2d(train_labels) > 0.5).mean(0)
        # logits: +1 = present, -1 = absent (the metrics threshold logits at 0)
        out["majority"] = [np.tile(np.where(rate > 0.5, 1.0, -1.0), (n, 1))]
        out["class_prior"] = [np.where(rng.random((n * PRIOR_DRAWS, len(rate))) < rate, 1.0, -1.0)]
        return out
    raise ValueError(f"no trivial baselines for task kind {task.kind!r}")


def baseline_metrics(task: TaskSpec, train_labels: np.ndarray, eval_labels: np.ndarray, seed: int = 0) -> dict:
    """Name -> metrics of each trivial baseline on ``eval_labels`` (draws averaged metric by metric)."""
    eval_labels = np.asarray(eval_labels)
    out = {}
    for name, (pred,) in baseline_predictions(task, train_labels, len(eval_labels), seed).items():
        reps = len(pred) // len(eval_labels)
        labels = np.concatenate([eval_labels] * reps) if reps > 1 else eval_labels
        out[name] = compute_metrics(task, _shape_like(task, pred, labels), labels)
    return out


def cross_validated_baselines(task: TaskSpec, labels: np.ndarray, folds, seed: int = 0) -> dict:
    """Name -> metrics of each trivial baseline under the same k-fold protocol as a model's out-of-fold
    predictions: each held-out fold gets the baseline fitted on the other folds' labels, then all folds are
    scored at once (``folds``: ``(fit_indices, held_indices)`` pairs covering every sample once)."""
    labels = np.asarray(labels)
    pooled: dict[str, np.ndarray] = {}
    for fit_idx, held in folds:
        for name, (pred,) in baseline_predictions(task, labels[fit_idx], len(held), seed).items():
            reps = len(pred) // len(held)
            pred = np.asarray(pred, np.float64).reshape(reps, len(held), -1)
            if name not in pooled:
                pooled[name] = np.full((reps, len(labels), pred.shape[2]), np.nan)
            pooled[name][:, held] = pred
    out = {}
    for name, pred in pooled.items():
        reps = pred.shape[0]
        stacked = np.concatenate([labels] * reps) if reps > 1 else labels
        out[name] = compute_metrics(task, _shape_like(task, pred.reshape(reps * len(labels), -1), stacked), stacked)
    return out


def _shape_like(task: TaskSpec, pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    if task.is_regression and labels.ndim == 1:
        return pred.reshape(len(labels), -1)
    return pred


def bundle_baselines(bundle, splits=("val", "test"), seed: int = 0, train_labels=None) -> dict:
    """``{split: {baseline: metrics}}`` for a dataset bundle, fitted on its train split."""
    train = split_labels(bundle.train) if train_labels is None else train_labels
    return {s: baseline_metrics(bundle.task, train, split_labels(bundle.split(s)), seed) for s in splits}


def best_baseline(baselines: dict[str, dict], metric: str) -> tuple[str, float] | None:
    """The best (name, value) among the baselines on ``metric``; None when no baseline has a finite value
    (e.g. Pearson r of a constant)."""
    best = None
    for name, metrics in baselines.items():
        v = metrics.get(metric)
        if v is None or not np.isfinite(v):
            continue
        if best is None or (v < best[1] if lower_is_better(metric) else v > best[1]):
            best = (name, float(v))
    return best


def beats_baselines(value: float, baselines: dict[str, dict], metric: str) -> bool | None:
    """True if ``value`` is strictly better than every finite baseline on ``metric``, False if not, None
    when there is nothing to compare (no finite baseline, or the value is not finite: NaN never beats)."""
    best = best_baseline(baselines, metric)
    if best is None:
        return None
    if value is None or not np.isfinite(value):
        return False
    return value < best[1] if lower_is_better(metric) else value > best[1]
