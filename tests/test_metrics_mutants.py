"""Metric definitions pinned at their edges: literal per-sample references on data that sits on every
boundary (exact zeros, halves, values past the range, thresholds hit exactly, constant columns, single-class
truth, absent classes). Written so that each wrong convention (has-0 vs non-0, missing clip, >= vs >,
NaN r's not skipped, ...) changes at least one asserted number; checked with benchmarks/mutation.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from emofusion.evaluation import metrics as M
from emofusion.tasks import TaskSpec, classification_task, emotion_intensity_task, sentiment_task

NAMES6 = emotion_intensity_task().output_names


def rhu(v):  # round half up, written independently
    return math.floor(v + 0.5)


def clip(v, lo, hi):
    return min(max(v, lo), hi)


def pearson(x, y):
    x, y = list(map(float, x)), list(map(float, y))
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if n < 2 or len(set(x)) == 1 or len(set(y)) == 1:
        return float("nan")
    return sxy / math.sqrt(sxx * syy)


def weighted_f1(t, p):
    """Support-weighted mean over the classes present in truth or prediction of per-class F1 (0 if undefined)."""
    t, p = list(t), list(p)
    classes = sorted(set(t) | set(p))
    total, out = len(t), 0.0
    for c in classes:
        tp = sum(a == c and b == c for a, b in zip(t, p))
        fp = sum(a != c and b == c for a, b in zip(t, p))
        fn = sum(a == c and b != c for a, b in zip(t, p))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        out += f1 * sum(a == c for a in t) / total
    return out


def wa(t, p):
    P = sum(t)
    N = len(t) - P
    tp = sum(a and b for a, b in zip(t, p))
    tn = sum((not a) and (not b) for a, b in zip(t, p))
    if P == 0 or N == 0:
        return sum(a == b for a, b in zip(t, p)) / len(t)
    return (tp * N / P + tn) / (2 * N)


def test_round_half_up_and_pearson_edges():
    got = M.round_half_up([-2.5, -0.5, 0.5, 1.5, 2.4999, 2.5, -1.2])
    assert got.tolist() == [-2.0, 0.0, 1.0, 2.0, 2.0, 3.0, -1.0] and got.dtype == np.float64
    assert M.round_half_up(np.array([1, 2], np.int32)).dtype == np.float64
    assert M.round_half_up(np.array([0.5, 1.5], np.float32)).dtype == np.float64
    assert M.safe_pearson([1.0, 2.0], [3.0, 5.0]) == pytest.approx(1.0)  # two points are enough
    assert math.isnan(M.safe_pearson([1.0], [2.0]))
    assert math.isnan(M.safe_pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert math.isnan(M.safe_pearson([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]))
    # float64 all the way: a large offset with small spread survives only in double precision
    x = 1e5 + np.array([0.011, 0.023, 0.019, 0.042, 0.031])
    y = np.array([[1.0], [2.0], [2.5], [4.0], [3.0]])  # a column: flattened first
    assert M.safe_pearson(x, y) == pytest.approx(pearson(x - 1e5, y.ravel()), abs=1e-9)
    assert M.safe_pearson(list(x), [1, 2, 2.5, 4, 3]) == pytest.approx(pearson(x - 1e5, y.ravel()), abs=1e-9)
    assert M.safe_pearson(y, x) == pytest.approx(pearson(x - 1e5, y.ravel()), abs=1e-9)  # both sides float64


def test_weighted_f1_and_weighted_accuracy_edges():
    t = [True, True, True, False, False, True, True]
    p = [True, False, False, False, True, True, False]
    assert M._weighted_f1(t, p) == pytest.approx(weighted_f1(t, p))
    assert M._weighted_f1(p, t) == pytest.approx(weighted_f1(p, t))
    assert weighted_f1(t, p) != pytest.approx(weighted_f1(p, t))  # the argument order matters
    # a class never predicted: its precision is undefined and counts as 0
    assert M._weighted_f1([True, False, True], [True, True, True]) == pytest.approx(
        weighted_f1([True, False, True], [True, True, True])
    )
    assert M.weighted_accuracy(t, p) == pytest.approx(wa(t, p))
    # single-class truth: plain accuracy on that class (lists in, cast to bool)
    assert M.weighted_accuracy([1, 1, 1, 1], [1, 0, 1, 1]) == pytest.approx(0.75)
    assert M.weighted_accuracy([0, 0, 0, 0, 0], [1, 0, 0, 0, 0]) == pytest.approx(0.8)
    assert M.weighted_accuracy([2, 0, 2, 0], [1, 0, 0, 0]) == pytest.approx(wa([1, 0, 1, 0], [1, 0, 0, 0]))


def intensity_data():
    # exact zeros, exact 0.1 (the presence threshold), halves, predictions past [0, 3] on both sides,
    # an all-zero truth row, a constant prediction column (undefined r, skipped in the mean)
    true = np.array(
        [
            [0.0, 0.1, 1.5, 3.0, 0.0, 0.5],
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [2.5, 0.2, 0.0, 1.0, 0.3, 0.0],
            [1.0, 0.0, 0.4, 2.0, 0.1, 1.5],
            [0.3, 1.0, 2.6, 0.0, 3.0, 0.5],
            [0.6, 0.5, 0.0, 0.7, 0.0, 2.0],
        ]
    )
    pred = np.array(
        [
            [0.1, 0.1, 1.4, 3.7, -0.7, 0.5],
            [0.2, 0.05, 0.6, 0.0, 0.1, 0.49],
            [2.4, 0.3, -0.2, 1.0, 0.5, 0.2],
            [0.9, 0.11, 0.5, 2.5, 0.2, 1.4],
            [0.2, 0.7, 3.6, 0.3, 2.4, 0.6],
            [0.5, 0.6, 0.1, 0.8, 0.0, 1.9],
        ]
    )
    pred[:, 5] = pred[:, 5]  # keep
    return pred, true


def test_emotion_intensity_every_key_literal():
    pred, true = intensity_data()
    pred = pred.copy()
    pred[:, 4] = 0.7  # constant prediction column: r undefined for 'sad'
    m = M.emotion_intensity_metrics(pred, true, NAMES6)
    n = len(true)
    rs, a2s, a4s, was, f1s = [], [], [], [], []
    for j, e in enumerate(NAMES6):
        p, t = pred[:, j], true[:, j]
        assert m[f"mae_{e}"] == pytest.approx(sum(abs(a - b) for a, b in zip(p, t)) / n)
        r = pearson(p, t)
        rs.append(r)
        if math.isnan(r):
            assert math.isnan(m[f"r_{e}"])
        else:
            assert m[f"r_{e}"] == pytest.approx(r)
        rp = [clip(rhu(v), 0, 3) for v in p]
        rt = [clip(rhu(v), 0, 3) for v in t]
        a2s.append(sum((a != 0) == (b != 0) for a, b in zip(rp, rt)) / n)
        a4s.append(sum(a == b for a, b in zip(rp, rt)) / n)
        assert m[f"acc2_{e}"] == pytest.approx(a2s[-1])
        assert m[f"acc4_{e}"] == pytest.approx(a4s[-1])
        tp, pp = [v > 0.1 for v in t], [v > 0.1 for v in p]
        was.append(wa(tp, pp))
        f1s.append(weighted_f1(tp, pp))
        assert m[f"wa_{e}"] == pytest.approx(was[-1])
        assert m[f"f1_{e}"] == pytest.approx(f1s[-1])
    assert math.isnan(m["r_sad"])
    finite = [r for r in rs if not math.isnan(r)]
    assert m["pearson_r"] == pytest.approx(sum(finite) / len(finite))
    assert m["acc2"] == pytest.approx(sum(a2s) / 6)
    assert m["acc4"] == pytest.approx(sum(a4s) / 6)
    assert m["wa"] == pytest.approx(sum(was) / 6)
    assert m["f1_weighted"] == pytest.approx(sum(f1s) / 6)
    err = pred - true
    assert m["mse"] == pytest.approx((err**2).sum() / err.size)
    assert m["mse_sum"] == pytest.approx((err**2).sum() / n)
    assert m["mae_sum"] == pytest.approx(np.abs(err).sum() / n)
    keep = [i for i in range(n) if max(true[i]) > 0]
    assert m["n_6"] == len(keep) == 5
    t6 = [int(np.argmax(true[i])) for i in keep]
    p6 = [int(np.argmax(pred[i])) for i in keep]
    assert m["acc6"] == pytest.approx(sum(a == b for a, b in zip(t6, p6)) / len(keep))
    assert m["f1_6"] == pytest.approx(weighted_f1(t6, p6))


def test_list_inputs_equal_array_inputs():
    pred, true = intensity_data()
    assert M.emotion_intensity_metrics(pred.tolist(), true.tolist(), NAMES6) == pytest.approx(
        M.emotion_intensity_metrics(pred, true, NAMES6), nan_ok=True)
    p, y = sentiment_data()
    assert M.sentiment_metrics(p.tolist(), y.tolist()) == M.sentiment_metrics(p, y)
    yr = [[1.0, 2.0], [4.0, 3.0], [6.0, 1.0]]
    pr = [[1.4, 2.6], [3.0, 3.2], [7.9, 1.1]]
    assert M.multi_regression_metrics(pr, yr, ("a", "b"), [(1, 7), (1, 7)]) == M.multi_regression_metrics(
        np.array(pr), np.array(yr), ("a", "b"), [(1, 7), (1, 7)])
    lg = [[0.5, -1.0], [-0.5, 1.0], [1.0, 1.0]]
    assert M.multilabel_binary_metrics(lg, [[1, 0], [1, 1], [0, 1]], ("x", "y")) == M.multilabel_binary_metrics(
        np.array(lg), np.array([[1, 0], [1, 1], [0, 1]]), ("x", "y"))


def test_emotion_intensity_degenerate():
    true = np.zeros((4, 6))
    pred = np.full((4, 6), 0.2)
    m = M.emotion_intensity_metrics(pred, true, NAMES6)
    assert m["n_6"] == 0 and math.isnan(m["acc6"]) and math.isnan(m["f1_6"])
    assert math.isnan(m["pearson_r"])  # no finite r at all
    assert m["acc2"] == 1.0 and m["wa"] == 0.0  # everything predicted present at 0.2 > 0.1


def sentiment_data():
    y = np.array([-3.0, -1.2, 0.0, 0.0, 0.4, 2.6, 1.0, -0.5, 3.0, -2.2, 2.5, -2.5])
    p = np.array([-4.1, 0.3, 0.1, -0.2, 0.0, 3.9, 0.0, -1.5, 2.5, 0.4, 1.6, -2.6])
    return p, y


def test_sentiment_every_key_literal():
    p, y = sentiment_data()
    m = M.sentiment_metrics(p, y)
    n = len(y)
    assert m["mae"] == pytest.approx(sum(abs(a - b) for a, b in zip(p, y)) / n)
    assert m["pearson_r"] == pytest.approx(pearson(p, y))
    has0_t, has0_p = [v >= 0 for v in y], [v >= 0 for v in p]
    assert m["acc2_has0"] == pytest.approx(sum(a == b for a, b in zip(has0_t, has0_p)) / n)
    assert m["f1_has0"] == pytest.approx(weighted_f1(has0_t, has0_p))
    keep = [i for i in range(n) if y[i] != 0]
    nt, np_ = [y[i] > 0 for i in keep], [p[i] > 0 for i in keep]
    acc_non0 = sum(a == b for a, b in zip(nt, np_)) / len(keep)
    assert m["acc2_non0"] == pytest.approx(acc_non0)
    assert m["f1_non0"] == pytest.approx(weighted_f1(nt, np_))
    assert "acc2" not in m and "f1" not in m  # no bare name: every table says which convention (issue 13)
    assert m["acc2_has0"] != pytest.approx(acc_non0)  # the two conventions differ on this data
    a7 = sum(rhu(clip(a, -3, 3)) == rhu(clip(b, -3, 3)) for a, b in zip(p, y)) / n
    a5 = sum(rhu(clip(a, -2, 2)) == rhu(clip(b, -2, 2)) for a, b in zip(p, y)) / n
    assert m["acc7"] == pytest.approx(a7)
    assert m["acc5"] == pytest.approx(a5)
    assert set(m) == {"mae", "pearson_r", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "acc7", "acc5"}


def test_sentiment_other_scales_and_all_centre():
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 4.5, 0.2])
    p = np.array([2.0, 2.9, 3.2, 3.0, 5.6, 3.0, 1.4])
    m = M.sentiment_metrics(p, y, (1.0, 5.0))
    keep = [i for i in range(len(y)) if y[i] != 3]
    assert m["acc2_non0"] == pytest.approx(sum((p[i] > 3) == (y[i] > 3) for i in keep) / len(keep))
    assert m["acc2_has0"] == pytest.approx(np.mean([(a >= 3) == (b >= 3) for a, b in zip(p, y)]))
    assert m["acc5"] == pytest.approx(np.mean([rhu(clip(a, 1, 5)) == rhu(clip(b, 1, 5)) for a, b in zip(p, y)]))
    assert "acc7" not in m
    m7 = M.sentiment_metrics(p, y, (1.0, 7.0))
    assert "acc7" in m7 and "acc5" not in m7
    assert m7["acc2_has0"] == pytest.approx(np.mean([(a >= 4) == (b >= 4) for a, b in zip(p, y)]))
    z = M.sentiment_metrics(np.array([0.5, -0.5, 0.2]), np.zeros(3))
    assert math.isnan(z["acc2_non0"]) and math.isnan(z["f1_non0"]) and "acc2" not in z
    assert z["acc2_has0"] == pytest.approx(2 / 3)


def test_classification_absent_class_and_shapes():
    names = ("a", "b", "c", "d")  # 'd' never occurs in truth or prediction
    y = np.array([0, 0, 1, 2, 2, 2, 1, 0, 1, 2])
    pred = np.array([0, 1, 1, 2, 0, 2, 2, 0, 1, 1])
    logits = np.full((10, 4), -1.0)
    logits[np.arange(10), pred] = 2.0
    m = M.classification_metrics(logits[:, None, :], y.astype(float), names)  # any extra axis is flattened
    f1s, recalls = [], []
    for c in range(4):
        tp = sum((a == c) and (b == c) for a, b in zip(y, pred))
        fp = sum((a != c) and (b == c) for a, b in zip(y, pred))
        fn = sum((a == c) and (b != c) for a, b in zip(y, pred))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        recalls.append(rec)
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
        assert m[f"recall_{names[c]}"] == pytest.approx(rec)
        assert m[f"acc_{names[c]}_binary"] == pytest.approx(np.mean((pred == c) == (y == c)))
        assert m[f"f1_{names[c]}_binary"] == pytest.approx(weighted_f1(list(y == c), list(pred == c)))
    assert m["accuracy"] == pytest.approx(np.mean(pred == y))
    assert m["f1_macro"] == pytest.approx(sum(f1s) / 4)  # the absent class counts (labels=all classes)
    support = [sum(y == c) for c in range(4)]
    assert m["f1_weighted"] == pytest.approx(sum(f * s for f, s in zip(f1s, support)) / 10)
    cm = M.confusion(logits, y, 4)
    assert cm.shape == (4, 4) and cm[2, 0] == 1 and cm[2, 1] == 1 and cm[3].sum() == 0
    cmn = M.confusion(logits, y, 4, normalize="true")
    assert cmn[0].tolist() == pytest.approx([2 / 3, 1 / 3, 0, 0])


def test_multilabel_thresholds():
    names = ("x", "y")
    logits = np.array([[0.0, 1.0], [0.3, -0.2], [-1.0, 0.0], [2.0, 0.5]])
    true = np.array([[0.5, 1.0], [1.0, 0.0], [0.0, 0.5], [1.0, 1.0]])  # 0.5 is not > 0.5: absent
    m = M.multilabel_binary_metrics(logits, true, names)
    accs, f1s = [], []
    for j, n in enumerate(names):
        p = [v > 0 for v in logits[:, j]]
        t = [v > 0.5 for v in true[:, j]]
        accs.append(sum(a == b for a, b in zip(p, t)) / 4)
        f1s.append(weighted_f1(t, p))
        assert m[f"acc_{n}"] == pytest.approx(accs[-1])
        assert m[f"f1_{n}"] == pytest.approx(f1s[-1])
    assert m["acc_x"] == 1.0 and m["acc_y"] == 1.0  # logit 0 and truth 0.5 both read as absent
    assert m["mean_acc"] == pytest.approx(np.mean(accs)) and m["mean_f1"] == pytest.approx(np.mean(f1s))


def test_multi_regression_literal():
    y = np.array([[1.0, 2.0, 3.0], [4.6, 2.0, 5.0], [7.0, 2.0, 1.4], [2.5, 2.0, 2.0], [5.0, 2.0, 4.5]])
    p = np.array([[0.2, 2.5, 3.4], [4.6, 1.0, 5.9], [7.8, 3.0, 1.5], [2.4, 2.0, 2.6], [5.5, 2.2, 3.4]])
    names = ("o1", "o2", "o3")
    ranges = [(1, 7), (1, 7), (1, 5)]
    m = M.multi_regression_metrics(p, y, names, ranges)
    rs = []
    for j, n in enumerate(names):
        assert m[f"mae_{n}"] == pytest.approx(np.mean(np.abs(p[:, j] - y[:, j])))
        rs.append(pearson(p[:, j], y[:, j]))
        lo, hi = ranges[j]
        acc = np.mean([rhu(clip(a, lo, hi)) == rhu(clip(b, lo, hi)) for a, b in zip(p[:, j], y[:, j])])
        assert m[f"acc{hi - lo + 1}_{n}"] == pytest.approx(acc)
    assert math.isnan(m["r_o2"])  # constant truth: undefined, skipped in the mean
    assert m["pearson_r"] == pytest.approx((rs[0] + rs[2]) / 2)
    assert m["mae"] == pytest.approx(np.mean(np.abs(p - y)))
    plain = M.multi_regression_metrics(p, y, names)
    assert not any(k.startswith("acc") for k in plain)
    off = M.multi_regression_metrics(p + 1e5, y + 1e5, names)  # float64 throughout
    assert off["mae"] == pytest.approx(m["mae"], rel=1e-9)
    nan = M.multi_regression_metrics(p[:, 1:2], y[:, 1:2], ("o2",))
    assert math.isnan(nan["pearson_r"])


def test_compute_metrics_dispatch_and_flatten():
    pred, true = intensity_data()
    assert M.compute_metrics(emotion_intensity_task(), pred, true) == M.emotion_intensity_metrics(pred, true, NAMES6)
    p, y = sentiment_data()
    assert M.compute_metrics(sentiment_task(), p, y) == M.sentiment_metrics(p, y)
    t15 = sentiment_task(1.0, 5.0)
    got = M.compute_metrics(t15, p + 3, y + 3)
    assert got == M.sentiment_metrics(p + 3, y + 3, (1.0, 5.0))
    ml = TaskSpec("multilabel_binary", ("x", "y"))
    logits = np.array([[0.5, -1.0], [-0.5, 1.0], [1.0, 1.0]])
    lab = np.array([[1, 0], [1, 1], [0, 1]])
    assert M.compute_metrics(ml, logits, lab) == M.multilabel_binary_metrics(logits, lab, ("x", "y"))
    yr = np.array([[1.0, 2.0], [4.0, 3.0], [6.0, 1.0]])
    pr = np.array([[1.4, 2.6], [3.0, 3.2], [7.9, 1.1]])
    mr = TaskSpec("multi_regression", ("a", "b"), label_range=(1.0, 7.0))
    assert M.compute_metrics(mr, pr, yr) == M.multi_regression_metrics(pr, yr, ("a", "b"), [(1, 7), (1, 7)])
    mr2 = TaskSpec("multi_regression", ("a", "b"), label_range=(1.0, 7.0), extra={"ranges": [(1, 7), (1, 3)]})
    got = M.compute_metrics(mr2, pr, yr)
    assert "acc3_b" in got and got == M.multi_regression_metrics(pr, yr, ("a", "b"), [(1, 7), (1, 3)])
    bare = TaskSpec("sentiment", ("s",))  # no label range: the [-3, 3] scale
    assert M.compute_metrics(bare, p, y) == M.sentiment_metrics(p, y, (-3.0, 3.0))
    mr3 = TaskSpec("multi_regression", ("a", "b"))
    assert "acc7_a" not in M.compute_metrics(mr3, pr, yr)
    task = classification_task(("a", "b"), sequence_labels=True)
    logits = np.array([[[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])
    labels = np.array([[1, 0, 1], [0, 1, 0]])
    mask = np.array([[True, True, False], [True, False, True]])
    # kept: (b,b), (a,a), (a,a), (b,a) -> 3 of 4
    assert M.compute_metrics(task, logits, labels, mask)["accuracy"] == pytest.approx(0.75)
    fp, fl = M.flatten_sequence(logits, labels, None)
    assert fp is logits and fl is labels
    with pytest.raises(ValueError, match="zero samples"):
        M.compute_metrics(task, logits, labels, np.zeros((2, 3), bool))


def test_baselines_statistics():
    train = np.array([[0.0, 1.0, 5.0], [2.0, 3.0, 1.0]])
    mp = M.mean_predictor(train, 4)
    assert mp.shape == (4, 3) and mp.tolist() == [[1.0, 2.0, 3.0]] * 4
    mp[0, 0] = 9.0  # a writable copy, not a broadcast view
    assert mp[1, 0] == 1.0
    r = M.random_intensity_baseline(7000, seed=0)
    assert r.shape == (7000, 6)
    counts = np.bincount((r > 0).sum(1), minlength=7)
    assert len(counts) == 7 and np.all(np.abs(counts / 7000 - 1 / 7) < 0.02)  # n_labels ~ U{0..6}, distinct
    values, freq = np.unique(np.round(r[r > 0] * 3), return_counts=True)
    assert values.tolist() == list(range(1, 10)) and np.all(np.abs(freq / freq.sum() - 1 / 9) < 0.02)
    assert np.array_equal(r, M.random_intensity_baseline(7000))  # default seed 0
    assert not np.array_equal(r, M.random_intensity_baseline(7000, seed=1))
    z = M.random_intensity_baseline(7000, seed=0, include_zero=True)
    # with 0 on the grid, one in ten chosen emotions gets intensity 0: fewer non-zero labels on average
    assert (z > 0).sum(1).mean() == pytest.approx(3.0 * 0.9, abs=0.08)
    assert (r > 0).sum(1).mean() == pytest.approx(3.0, abs=0.08)
    assert M.random_intensity_baseline(5, num_emotions=4).shape == (5, 4)


def test_predictions_are_read_in_float64():
    # 0.5 - 1e-9 rounds half-up to 0 (absent) in float64; read as float32 it becomes 0.5 and rounds to 1
    below = 0.5 - 1e-9
    assert np.float32(below) == 0.5  # the case float32 would get wrong
    pred = np.zeros((3, 6))
    pred[:, 0] = [below, 2.0, 0.0]
    true = np.zeros((3, 6))
    true[:, 0] = [0.0, 2.0, 1.0]
    m = M.emotion_intensity_metrics(pred, true, NAMES6)
    want = sum((rhu(p) != 0) == (rhu(t) != 0) for p, t in zip(pred[:, 0], true[:, 0])) / 3
    assert m[f"acc2_{NAMES6[0]}"] == pytest.approx(want) and want == pytest.approx(2 / 3)
    # a tiny positive logit is present (p > 0.5); float32 would flush 1e-60 to 0 (absent)
    logits = np.array([[1e-60, -1.0], [-1.0, 1.0]])
    assert np.float32(1e-60) == 0.0
    ml = M.multilabel_binary_metrics(logits, np.array([[1.0, 0.0], [0.0, 1.0]]), ("x", "y"))
    assert ml["acc_x"] == 1.0


def test_pearson_of_empty_vectors_is_nan_not_an_error():
    # the length guard is what answers here: np.std of an empty vector is NaN (not 0) and scipy raises on it
    assert math.isnan(M.safe_pearson([], []))
    assert math.isnan(M.safe_pearson(np.zeros((0, 1)), np.zeros(0)))


def test_acc4_clips_predictions_above_the_top_class_onto_it():
    """Paper 003's 4-class accuracy: a prediction of 3.6 rounds to 4, which is clipped to class 3, so it hits a
    truth of 3; 2.6 rounds to 3 and hits too; -0.7 rounds to -1 and is clipped to class 0."""
    true = np.array([[3.0, 0.0], [3.0, 1.0], [0.0, 2.0]])
    pred = np.array([[3.6, -0.7], [2.6, 1.4], [0.2, 2.51]])
    m = M.emotion_intensity_metrics(pred, true, ["a", "b"])
    assert m["acc4_a"] == pytest.approx(1.0)  # 4 -> 3 == 3, 3 == 3, 0 == 0
    assert m["acc4_b"] == pytest.approx(2 / 3)  # -1 -> 0 == 0, 1 == 1, 3 != 2
    # the truth is clipped the same way: 3.6 rounds to 4 and is class 3, hit by a prediction of 3
    over = M.emotion_intensity_metrics(np.array([[3.0], [0.0]]), np.array([[3.6], [-0.6]]), ["a"])
    assert over["acc4_a"] == pytest.approx(1.0)


def test_confusion_reads_float_and_column_labels_as_class_indices():
    logits = np.array([[2.0, 0.1, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.0, 0.0]])
    as_ints = M.confusion(logits, np.array([0, 1, 1, 2]), 3)
    as_float_column = M.confusion(logits, np.array([[0.0], [1.0], [1.0], [2.0]]), 3)
    np.testing.assert_array_equal(as_ints, as_float_column)
    assert as_ints.tolist() == [[1, 0, 0], [0, 1, 1], [1, 0, 0]]


# ---- session 7: survivors of the complete mutant set (benchmarks/mutation.py --targets metrics --max-per-file 0)


def test_intensity_error_means_on_a_block_that_is_not_square():
    # 4 samples x 6 emotions: a sum over the wrong axis or a mean for a sum changes every number
    pred, true = intensity_data()
    pred, true = pred[:4], true[:4]
    m = M.emotion_intensity_metrics(pred, true, NAMES6)
    errs = [a - b for pr, tr in zip(pred, true) for a, b in zip(pr, tr)]
    assert any(e < 0 for e in errs) and any(e > 0 for e in errs)  # signed errors: |e| matters
    assert m["mae"] == pytest.approx(sum(abs(e) for e in errs) / 24)
    assert m["mse"] == pytest.approx(sum(e * e for e in errs) / 24)
    assert m["mse_sum"] == pytest.approx(sum(e * e for e in errs) / 4)
    assert m["mae_sum"] == pytest.approx(sum(abs(e) for e in errs) / 4)


def test_dominant_emotion_view_counts_every_sample_with_any_intensity():
    # a sample whose strongest emotion is weak (0.3, at most 1) still has an emotion; only all-zero rows drop
    true = np.zeros((5, 6))
    true[0, 2] = 0.3
    true[1, 4] = 1.0
    true[3, 0], true[3, 1] = 2.0, 0.5
    true[4, 5] = 0.6
    pred = np.full((5, 6), 0.1)
    pred[0, 2] = pred[1, 1] = pred[3, 0] = pred[4, 5] = pred[2, 3] = 1.0
    m = M.emotion_intensity_metrics(pred, true, NAMES6)
    keep = [i for i in range(5) if any(v > 0 for v in true[i])]
    assert m["n_6"] == len(keep) == 4
    t6 = [max(range(6), key=lambda j: true[i, j]) for i in keep]
    p6 = [max(range(6), key=lambda j: pred[i, j]) for i in keep]
    assert m["acc6"] == pytest.approx(sum(a == b for a, b in zip(t6, p6)) / 4) and m["acc6"] == pytest.approx(0.75)


def test_weighted_f1_views_take_the_truth_first():
    """Weighted F1 weights each class by its support in the truth: swapping truth and prediction changes it
    when the two classes are hit unequally (TP 4 vs 2 here), so every F1 view is checked on such data."""
    t = [0, 0, 0, 0, 1, 1]
    p = [0, 0, 0, 1, 1, 1]
    assert weighted_f1(t, p) != pytest.approx(weighted_f1(p, t))
    # dominant-emotion view: argmax classes t / p
    true = np.full((6, 6), 0.2)
    pred = np.full((6, 6), 0.2)
    for i in range(6):
        true[i, t[i]] = 2.0
        pred[i, p[i]] = 2.5
    m = M.emotion_intensity_metrics(pred, true, NAMES6)
    assert m["f1_6"] == pytest.approx(weighted_f1(t, p))
    # sentiment, non-0 view: the zero-truth sample is dropped, then positive vs negative
    y = np.array([-1.0, -2.0, -1.5, -0.5, 1.0, 2.0, 0.0])
    s = np.array([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 2.0])
    ms = M.sentiment_metrics(s, y)
    assert ms["f1_non0"] == pytest.approx(weighted_f1([v > 0 for v in y[:6]], [v > 0 for v in s[:6]]))
    # single-label classification, support-weighted over the truth
    logits = np.eye(3)[p + [2]]
    yc = np.array(t + [2])
    mc = M.classification_metrics(logits, yc, ("a", "b", "c"))
    assert mc["f1_weighted"] == pytest.approx(weighted_f1(list(yc), p + [2]))
    assert mc["f1_weighted"] != pytest.approx(weighted_f1(p + [2], list(yc)))
    # multi-label, per class
    ml = M.multilabel_binary_metrics(np.where(np.array(p)[:, None] == 1, 1.0, -1.0), np.array(t)[:, None], ("x",))
    assert ml["f1_x"] == pytest.approx(weighted_f1([v == 1 for v in t], [v == 1 for v in p]))


def test_multilabel_per_class_keys_belong_to_their_class():
    logits = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    true = np.array([[1, 1], [1, 1], [0, 0], [0, 1], [0, 0]])
    m = M.multilabel_binary_metrics(logits, true, ("x", "y"))
    for j, name in enumerate(("x", "y")):
        p, t = [v > 0 for v in logits[:, j]], [v > 0.5 for v in true[:, j]]
        assert m[f"acc_{name}"] == pytest.approx(sum(a == b for a, b in zip(p, t)) / 5)
        assert m[f"f1_{name}"] == pytest.approx(weighted_f1(t, p))
    assert m["acc_x"] != pytest.approx(m["acc_y"]) and m["f1_x"] != pytest.approx(m["f1_y"])


def test_weighted_accuracy_reads_any_non_zero_prediction_as_present():
    # presence flags are cast to bool on both sides: 2 and 3 are present, like 1
    assert M.weighted_accuracy([1, 1, 1, 1], [2, 0, 3, 2]) == pytest.approx(0.75)
    assert M.weighted_accuracy([1, 0, 1, 0], [2, 0, 0, 3]) == pytest.approx(wa([1, 0, 1, 0], [1, 0, 0, 1]))


def test_labels_are_read_in_float64():
    # a truth of 0.5 - 1e-9 rounds half-up to 0 in float64; read as float32 it becomes 0.5 and rounds to 1
    below = 0.5 - 1e-9
    assert np.float32(below) == 0.5
    true = np.zeros((3, 2))
    true[:, 0] = [below, 2.0, 1.0]
    pred = np.zeros((3, 2))
    pred[:, 0] = [0.0, 2.0, 0.0]
    m = M.emotion_intensity_metrics(pred, true, ["a", "b"])
    assert m["acc4_a"] == pytest.approx(sum(rhu(a) == rhu(b) for a, b in zip(pred[:, 0], true[:, 0])) / 3)
    assert m["acc4_a"] == pytest.approx(2 / 3)
    # sentiment: both sides in float64 (0.5 - 1e-9 is class 0, not 1)
    s = M.sentiment_metrics(np.array([below, 1.0, -2.0]), np.array([0.0, 1.0, -2.0]))
    assert s["acc7"] == pytest.approx(1.0) and s["acc5"] == pytest.approx(1.0)
    s = M.sentiment_metrics(np.array([0.0, 1.0, -2.0]), np.array([below, 1.0, -2.0]))
    assert s["acc7"] == pytest.approx(1.0) and s["acc5"] == pytest.approx(1.0)
    mr = M.multi_regression_metrics(np.array([[1.0], [2.0]]), np.array([[1.5 - 1e-9], [2.0]]), ("o",), [(1, 7)])
    assert mr["acc7_o"] == pytest.approx(1.0)
    mr = M.multi_regression_metrics(np.array([[1.5 - 1e-9], [2.0]]), np.array([[1.0], [2.0]]), ("o",), [(1, 7)])
    assert mr["acc7_o"] == pytest.approx(1.0)


def test_classification_reads_column_and_list_labels_as_class_indices():
    logits = np.array([[2.0, 0.1, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.0, 0.0], [0.0, 1.0, 0.0]])
    names = ("a", "b", "c")
    flat = M.classification_metrics(logits, np.array([0, 1, 1, 2, 1]), names)
    assert M.classification_metrics(logits, np.array([[0.0], [1.0], [1.0], [2.0], [1.0]]), names) == flat
    assert M.classification_metrics(logits, [0, 1, 1, 2, 1], names) == flat
    assert flat["acc_c_binary"] == pytest.approx(3 / 5) and flat["acc_b_binary"] == pytest.approx(4 / 5)


def test_classification_metrics_reject_labels_that_are_not_class_indices():
    # a wrong label mapping (label C, or -1) must fail loudly, not be scored as an error of no listed class
    names = ("a", "b", "c")
    logits = np.eye(3)[[0, 1, 2, 2]]
    edge = M.classification_metrics(logits, np.array([0, 1, 2, 2]), names)  # 0 and C-1 are class indices
    assert edge["accuracy"] == 1.0
    assert M.confusion(logits, np.array([0, 1, 2, 2]), 3).trace() == 4
    for bad, where in (([0, 1, 3, 2], "label 3 of sample 2"), ([0, -1, 2, 2], "label -1 of sample 1")):
        with pytest.raises(ValueError, match=f"{where} is not a class index 0..2"):
            M.classification_metrics(logits, np.array(bad), names)
        with pytest.raises(ValueError, match=f"{where} is not a class index 0..2"):
            M.confusion(logits, np.array(bad), 3)
    with pytest.raises(ValueError, match="logits have 4 columns for 3 classes"):
        M.classification_metrics(np.eye(4)[[0, 1, 2, 2]], np.array([0, 1, 2, 2]), names)
    with pytest.raises(ValueError, match="logits have 2 columns for 3 classes"):
        M.confusion(np.eye(2)[[0, 1, 1, 0]], np.array([0, 1, 1, 0]), 3)
    # lists are class indices too
    np.testing.assert_array_equal(M.confusion(logits.tolist(), [0, 1, 2, 2], 3), M.confusion(logits, np.array([0, 1, 2, 2]), 3))


def test_accuracy_key_counts_the_classes_the_rounding_gives():
    """acc<K>: K is the number of classes that clipping to [low, high] and rounding half-up can give, counted
    here by brute force (on an integer scale, the integers of the range)."""
    def classes(lo, hi):
        return len({rhu(clip(v, lo, hi)) for v in np.linspace(lo - 1, hi + 1, 4001)})

    p = np.array([0.2, 1.4, 2.6, 3.1])
    y = np.array([0.4, 1.6, 2.4, 3.3])
    for lo, hi in ((-3.0, 3.0), (1.0, 5.0), (1.0, 7.0), (0.3, 3.3), (0.6, 3.4), (0.2, 3.9)):
        k = classes(lo, hi)
        keys = [key for key in M.sentiment_metrics(p, y, (lo, hi)) if key.startswith("acc") and key[3:].isdigit()]
        assert keys == [f"acc{k}"] + (["acc5"] if (lo, hi) == (-3.0, 3.0) else []), (lo, hi)
        mr = M.multi_regression_metrics(p[:, None], y[:, None], ("o",), [(lo, hi)])
        assert f"acc{k}_o" in mr, (lo, hi)
    assert [classes(lo, hi) for lo, hi in ((0.3, 3.3), (0.6, 3.4))] == [4, 3]


def test_mean_predictor_averages_in_float64():
    train = [[0.1, 1e8 + 1.0], [0.2, 1e8 + 2.0]]  # a list: read as float64
    mp = M.mean_predictor(train, 3)
    assert mp.dtype == np.float64
    assert mp[0, 0] == pytest.approx(0.15, rel=1e-12) and mp[2, 1] == 1e8 + 1.5  # float32: 0.15000001 and 1e8


def test_random_intensity_baseline_draws_each_emotions_intensity_on_its_own():
    r = M.random_intensity_baseline(3000, seed=3)
    multi = [row[row > 0] for row in r if (row > 0).sum() >= 2]
    same = np.mean([len(set(np.round(v * 3).tolist())) == 1 for v in multi])
    # independent draws from 9 values: all equal with probability 1/9 for two labels, less for more
    assert 0.02 < same < 0.08
