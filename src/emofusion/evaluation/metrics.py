"""Metrics per task protocol. Every definition is stated here and in docs/metrics.md.

Inputs are numpy arrays: ``predictions`` as the model outputs them (regression values, or class logits)
and ``labels`` as the dataset stores them. Per-utterance (sequence) labels are flattened over
``label_mask`` first. Implemented with numpy/scipy/scikit-learn; tests compare each against independent
reference computations.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import pearsonr
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    recall_score,
)

from emofusion.tasks import TaskSpec

PRESENCE_THRESHOLD = 0.1  # paper 000: "acceptance threshold 0.1" for weighted accuracy


def round_half_up(x: np.ndarray) -> np.ndarray:
    """Round to the nearest integer with halves going up (0.5 -> 1), as "round to the nearest integer"."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5)


def num_rounded_classes(low: float, high: float) -> int:
    """How many classes rounding half-up a value clipped to [low, high] gives: the K of ``acc<K>`` (7 on [-3, 3],
    5 on [1, 5]; 4 on [0.3, 3.3], whose values round to 0..3)."""
    return int(round_half_up(high) - round_half_up(low)) + 1


def safe_pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r; NaN when either vector is constant (r is undefined there)."""
    x = np.asarray(x, np.float64).ravel()
    y = np.asarray(y, np.float64).ravel()
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # near-constant inputs: scipy warns and returns its own estimate
        return float(pearsonr(x, y)[0])


def _weighted_f1(y_true, y_pred) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(f1_score(y_true, y_pred, average="weighted", zero_division=0))


def weighted_accuracy(true_present: np.ndarray, pred_present: np.ndarray) -> float:
    """Tong et al. (2017): WA = (TP * N / P + TN) / (2N), which equals the mean of TPR and TNR.

    With only one class present in the truth it degrades to the plain accuracy on that class.
    """
    true_present = np.asarray(true_present, bool)
    pred_present = np.asarray(pred_present, bool)
    if true_present.all() or not true_present.any():
        return float(np.mean(true_present == pred_present))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(balanced_accuracy_score(true_present, pred_present))


def emotion_intensity_metrics(pred: np.ndarray, true: np.ndarray, names) -> dict[str, float]:
    """CMU-MOSEI 6-emotion intensity protocol (values in [0, 3]).

    - ``mse``/``mae``: averaged over samples and emotions; ``mse_sum``/``mae_sum``: summed over the emotions,
      averaged over samples (paper 000's "summing across 6 classes"); ``mae_<e>`` per emotion.
    - ``pearson_r``: mean over emotions of the per-emotion Pearson r (undefined r's are skipped).
    - ``acc2``/``acc2_<e>`` (paper 003): both sides rounded half-up to integers; present = non-zero.
    - ``acc4``/``acc4_<e>`` (paper 003): both rounded to {0, 1, 2, 3}; exact match.
    - ``wa``/``wa_<e>`` (paper 000): presence = value > 0.1 on both sides; weighted accuracy (Tong et al.).
    - ``f1_<e>``, ``f1_weighted``: weighted F1 of the same 0.1-threshold presence, and its mean.
    - ``acc6``/``f1_6`` (paper 002's dominant-emotion view): the class is the argmax emotion; only samples
      whose true intensities are not all zero count (``n_6`` says how many).
    """
    pred = np.asarray(pred, np.float64)
    true = np.asarray(true, np.float64)
    out: dict[str, float] = {}
    err = pred - true
    out["mse"] = float(np.mean(err**2))
    out["mae"] = float(np.mean(np.abs(err)))
    out["mse_sum"] = float(np.mean(np.sum(err**2, axis=1)))
    out["mae_sum"] = float(np.mean(np.sum(np.abs(err), axis=1)))
    rs, a2, a4, was, f1s = [], [], [], [], []
    for j, name in enumerate(names):
        p, t = pred[:, j], true[:, j]
        out[f"mae_{name}"] = float(np.mean(np.abs(p - t)))
        r = safe_pearson(p, t)
        out[f"r_{name}"] = r
        rs.append(r)
        rp, rt = np.clip(round_half_up(p), 0, 3), np.clip(round_half_up(t), 0, 3)
        a2.append(float(np.mean((rp != 0) == (rt != 0))))
        a4.append(float(np.mean(rp == rt)))
        out[f"acc2_{name}"], out[f"acc4_{name}"] = a2[-1], a4[-1]
        tp, pp = t > PRESENCE_THRESHOLD, p > PRESENCE_THRESHOLD
        was.append(weighted_accuracy(tp, pp))
        f1s.append(_weighted_f1(tp, pp))
        out[f"wa_{name}"], out[f"f1_{name}"] = was[-1], f1s[-1]
    finite_r = [r for r in rs if np.isfinite(r)]
    out["pearson_r"] = float(np.mean(finite_r)) if finite_r else float("nan")
    out["acc2"] = float(np.mean(a2))
    out["acc4"] = float(np.mean(a4))
    out["wa"] = float(np.mean(was))
    out["f1_weighted"] = float(np.mean(f1s))
    has_emotion = true.max(axis=1) > 0
    out["n_6"] = float(has_emotion.sum())
    if has_emotion.any():
        t6 = true[has_emotion].argmax(1)
        p6 = pred[has_emotion].argmax(1)
        out["acc6"] = float(accuracy_score(t6, p6))
        out["f1_6"] = _weighted_f1(t6, p6)
    else:
        out["acc6"] = out["f1_6"] = float("nan")
    return out


def sentiment_metrics(pred: np.ndarray, true: np.ndarray, label_range=(-3.0, 3.0)) -> dict[str, float]:
    """Sentiment regression (CMU-MOSI style, also any [low, high] scale such as ICT-MMMO's [1, 5]).

    Binary views are taken around the scale's centre c (0 for [-3, 3]):
    - ``acc2_has0``/``f1_has0``: negative (< c) vs non-negative (>= c), all samples;
    - ``acc2_non0``/``f1_non0``: samples with truth == c dropped, then > c vs < c (MulT / MMSA "Non0");
    - no bare ``acc2``/``f1``: a table must say which convention it reports. F1 is weighted F1 (as MMSA and
      MulT compute it).
    - ``acc<K>`` with K = number of classes of the rounding (the integers of the range on an integer scale:
      ``acc7`` on [-3, 3]): both sides clipped to the range and rounded half-up; on [-3, 3] also ``acc5``
      (clipped to [-2, 2]).
    - ``mae``, ``pearson_r``.
    """
    pred = np.asarray(pred, np.float64).ravel()
    true = np.asarray(true, np.float64).ravel()
    low, high = label_range
    centre = (low + high) / 2.0
    out = {"mae": float(np.mean(np.abs(pred - true))), "pearson_r": safe_pearson(pred, true)}
    out["acc2_has0"] = float(np.mean((pred >= centre) == (true >= centre)))
    out["f1_has0"] = _weighted_f1(true >= centre, pred >= centre)
    nz = true != centre
    if nz.any():
        out["acc2_non0"] = float(np.mean((pred[nz] > centre) == (true[nz] > centre)))
        out["f1_non0"] = _weighted_f1(true[nz] > centre, pred[nz] > centre)
    else:
        out["acc2_non0"] = out["f1_non0"] = float("nan")
    k = num_rounded_classes(low, high)
    rp = round_half_up(np.clip(pred, low, high))
    rt = round_half_up(np.clip(true, low, high))
    out[f"acc{k}"] = float(np.mean(rp == rt))
    if (low, high) == (-3.0, 3.0):
        out["acc5"] = float(np.mean(round_half_up(np.clip(pred, -2, 2)) == round_half_up(np.clip(true, -2, 2))))
    return out


def _check_class_indices(true: np.ndarray, width: int, num_classes: int) -> None:
    """A label outside 0..C-1, or logits of another width, would be scored silently (as an error of no listed
    class, or a class of its own in the weighted F1): a wrong label mapping must fail loudly instead."""
    if width != num_classes:
        raise ValueError(f"classification metrics: logits have {width} columns for {num_classes} classes")
    bad = np.flatnonzero((true < 0) | (true >= num_classes))
    if len(bad):
        raise ValueError(
            f"classification metrics: label {true[bad[0]]} of sample {bad[0]} is not a class index 0..{num_classes - 1}"
        )


def classification_metrics(logits: np.ndarray, true: np.ndarray, names) -> dict[str, float]:
    """Single-label classification: accuracy, macro/weighted F1, per-class recall, and the one-vs-rest
    binary view per class (``acc_<c>_binary``, weighted ``f1_<c>_binary``; IEMOCAP per-emotion reporting).
    The confusion matrix is returned by :func:`confusion` (not a scalar metric)."""
    true = np.asarray(true).astype(np.int64).ravel()
    pred = np.asarray(logits).reshape(len(true), -1).argmax(1)
    _check_class_indices(true, np.asarray(logits).reshape(len(true), -1).shape[1], len(names))
    labels = np.arange(len(names))
    out = {"accuracy": float(accuracy_score(true, pred))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["f1_macro"] = float(f1_score(true, pred, labels=labels, average="macro", zero_division=0))
        out["f1_weighted"] = float(f1_score(true, pred, labels=labels, average="weighted", zero_division=0))
        recalls = recall_score(true, pred, labels=labels, average=None, zero_division=0)
    for c, name in enumerate(names):
        out[f"recall_{name}"] = float(recalls[c])
        out[f"acc_{name}_binary"] = float(np.mean((pred == c) == (true == c)))
        out[f"f1_{name}_binary"] = _weighted_f1(true == c, pred == c)
    return out


def confusion(logits: np.ndarray, true: np.ndarray, num_classes: int, normalize: str | None = None) -> np.ndarray:
    true = np.asarray(true).astype(np.int64).ravel()
    pred = np.asarray(logits).reshape(len(true), -1).argmax(1)
    _check_class_indices(true, np.asarray(logits).reshape(len(true), -1).shape[1], num_classes)
    return confusion_matrix(true, pred, labels=np.arange(num_classes), normalize=normalize)


def multilabel_binary_metrics(logits: np.ndarray, true: np.ndarray, names) -> dict[str, float]:
    """Per-class presence from logits > 0 (probability > 0.5): ``acc_<c>``, weighted ``f1_<c>``, their means."""
    logits = np.asarray(logits, np.float64)
    true = np.asarray(true) > 0.5
    pred = logits > 0
    out = {}
    accs, f1s = [], []
    for j, name in enumerate(names):
        accs.append(float(np.mean(pred[:, j] == true[:, j])))
        f1s.append(_weighted_f1(true[:, j], pred[:, j]))
        out[f"acc_{name}"], out[f"f1_{name}"] = accs[-1], f1s[-1]
    out["mean_acc"] = float(np.mean(accs))
    out["mean_f1"] = float(np.mean(f1s))
    return out


def multi_regression_metrics(pred: np.ndarray, true: np.ndarray, names, ranges=None) -> dict[str, float]:
    """Several scores (POM traits): per-output ``mae_<o>``, ``r_<o>`` and ``acc<K>_<o>`` (K integer classes of
    that output's range, both sides clipped and rounded half-up: A7 on [1, 7], A5 on [1, 5]); means."""
    pred = np.asarray(pred, np.float64)
    true = np.asarray(true, np.float64)
    out = {}
    maes, rs = [], []
    for j, name in enumerate(names):
        p, t = pred[:, j], true[:, j]
        maes.append(float(np.mean(np.abs(p - t))))
        rs.append(safe_pearson(p, t))
        out[f"mae_{name}"], out[f"r_{name}"] = maes[-1], rs[-1]
        if ranges is not None:
            low, high = ranges[j]
            k = num_rounded_classes(low, high)
            hit = round_half_up(np.clip(p, low, high)) == round_half_up(np.clip(t, low, high))
            out[f"acc{k}_{name}"] = float(np.mean(hit))
    out["mae"] = float(np.mean(maes))
    finite = [r for r in rs if np.isfinite(r)]
    out["pearson_r"] = float(np.mean(finite)) if finite else float("nan")
    return out


def flatten_sequence(predictions: np.ndarray, labels: np.ndarray, label_mask: np.ndarray | None):
    """Per-utterance outputs ``[N, T, ...]`` -> ``[n_real, ...]`` using the label mask."""
    if label_mask is None:
        return predictions, labels
    mask = np.asarray(label_mask, bool)
    return np.asarray(predictions)[mask], np.asarray(labels)[mask]


def compute_metrics(task: TaskSpec, predictions: np.ndarray, labels: np.ndarray, label_mask=None) -> dict[str, float]:
    predictions, labels = flatten_sequence(predictions, labels, label_mask)
    if len(labels) == 0:
        raise ValueError("cannot compute metrics on zero samples")
    kind = task.kind
    if kind == "emotion_intensity":
        return emotion_intensity_metrics(predictions, labels, task.output_names)
    if kind == "sentiment":
        return sentiment_metrics(predictions, labels, task.label_range or (-3.0, 3.0))
    if kind == "classification":
        return classification_metrics(predictions, labels, task.output_names)
    if kind == "multilabel_binary":
        return multilabel_binary_metrics(predictions, labels, task.output_names)
    if kind == "multi_regression":
        ranges = task.extra.get("ranges") or ([task.label_range] * len(task.output_names) if task.label_range else None)
        return multi_regression_metrics(predictions, labels, task.output_names, ranges)
    raise ValueError(f"no metrics for task kind {kind!r}")


# ----------------------------------------------------------------------------------------- baselines


def mean_predictor(train_labels: np.ndarray, n: int) -> np.ndarray:
    """The mean-intensity predictor (paper 000 §4): every sample gets the training mean of each output."""
    mean = np.asarray(train_labels, np.float64).mean(axis=0)
    return np.broadcast_to(mean, (n, *mean.shape)).copy()


def random_intensity_baseline(n: int, num_emotions: int = 6, seed: int = 0, include_zero: bool = False) -> np.ndarray:
    """Paper 003 §5.1: n_labels ~ U{0..6}; that many distinct emotions at random; each gets an intensity
    drawn uniformly from the 9-step grid of (0, 3] with step 1/3 (``include_zero`` adds 0 to the grid)."""
    rng = np.random.default_rng(seed)
    grid = np.arange(0 if include_zero else 1, 10) / 3.0
    out = np.zeros((n, num_emotions))
    for i in range(n):
        k = rng.integers(0, num_emotions + 1)
        chosen = rng.choice(num_emotions, size=k, replace=False)
        out[i, chosen] = rng.choice(grid, size=k)
    return out
