"""Metric functions against independent reference computations on fixed vectors."""

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

from emofusion.evaluation import metrics as M
from emofusion.tasks import TaskSpec, classification_task, emotion_intensity_task, sentiment_task

RNG = np.random.default_rng(1234)
TRUE6 = np.round(RNG.integers(0, 10, (80, 6)) / 3 * (RNG.random((80, 6)) < 0.35), 4)
PRED6 = np.clip(TRUE6 + RNG.normal(0, 0.6, TRUE6.shape), 0, 3)


def test_intensity_errors_averaged_and_summed():
    m = M.emotion_intensity_metrics(PRED6, TRUE6, emotion_intensity_task().output_names)
    # explicit loops as the reference
    se = [[(PRED6[i, j] - TRUE6[i, j]) ** 2 for j in range(6)] for i in range(80)]
    ae = [[abs(PRED6[i, j] - TRUE6[i, j]) for j in range(6)] for i in range(80)]
    assert m["mse"] == pytest.approx(sum(map(sum, se)) / 480)
    assert m["mae"] == pytest.approx(sum(map(sum, ae)) / 480)
    assert m["mse_sum"] == pytest.approx(sum(map(sum, se)) / 80)
    assert m["mae_sum"] == pytest.approx(sum(map(sum, ae)) / 80)
    assert m["mae_happy"] == pytest.approx(np.mean([ae[i][3] for i in range(80)]))


def test_intensity_pearson_matches_scipy():
    m = M.emotion_intensity_metrics(PRED6, TRUE6, emotion_intensity_task().output_names)
    rs = [pearsonr(PRED6[:, j], TRUE6[:, j])[0] for j in range(6)]
    assert m["pearson_r"] == pytest.approx(np.mean(rs))
    assert m["r_anger"] == pytest.approx(rs[0])


def test_binary_and_four_class_accuracy_paper003():
    m = M.emotion_intensity_metrics(PRED6, TRUE6, emotion_intensity_task().output_names)
    ref2, ref4 = [], []
    for j in range(6):
        hit2 = hit4 = 0
        for i in range(80):
            p = min(3, int(PRED6[i, j] + 0.5))  # round half up to an integer in {0..3}
            t = min(3, int(TRUE6[i, j] + 0.5))
            hit2 += (p != 0) == (t != 0)
            hit4 += p == t
        ref2.append(hit2 / 80)
        ref4.append(hit4 / 80)
    assert m["acc2"] == pytest.approx(np.mean(ref2))
    assert m["acc4"] == pytest.approx(np.mean(ref4))


def test_weighted_accuracy_tong_formula():
    m = M.emotion_intensity_metrics(PRED6, TRUE6, emotion_intensity_task().output_names)
    was = []
    for j in range(6):
        t, p = TRUE6[:, j] > 0.1, PRED6[:, j] > 0.1
        tp = np.sum(t & p)
        tn = np.sum(~t & ~p)
        P, N = t.sum(), (~t).sum()
        was.append((tp * N / P + tn) / (2 * N))
    assert m["wa"] == pytest.approx(np.mean(was))
    f1 = [f1_score(TRUE6[:, j] > 0.1, PRED6[:, j] > 0.1, average="weighted") for j in range(6)]
    assert m["f1_weighted"] == pytest.approx(np.mean(f1))


def test_dominant_emotion_view():
    m = M.emotion_intensity_metrics(PRED6, TRUE6, emotion_intensity_task().output_names)
    keep = TRUE6.max(1) > 0
    assert m["n_6"] == keep.sum()
    assert m["acc6"] == pytest.approx(accuracy_score(TRUE6[keep].argmax(1), PRED6[keep].argmax(1)))


def test_sentiment_protocol():
    y = np.array([-3, -1.2, 0, 0, 0.4, 2.6, 1.0, -0.5, 3.0, -2.2])
    p = np.array([-2.4, 0.3, 0.1, -0.2, 0.9, 2.0, 0.0, -1.5, 2.5, 0.4])
    m = M.sentiment_metrics(p, y)
    assert m["mae"] == pytest.approx(np.mean(np.abs(p - y)))
    assert m["pearson_r"] == pytest.approx(pearsonr(p, y)[0])
    assert m["acc2_has0"] == pytest.approx(accuracy_score(y >= 0, p >= 0))
    nz = y != 0
    assert m["acc2_non0"] == pytest.approx(accuracy_score(y[nz] > 0, p[nz] > 0))
    assert m["f1_non0"] == pytest.approx(f1_score(y[nz] > 0, p[nz] > 0, average="weighted"))
    # 7 classes: round half up after clipping: 2.5 -> 3, -2.4 -> -2, -1.5 -> -1, 0.4 -> 0
    assert m["acc7"] == pytest.approx(np.mean(np.floor(p + 0.5) == np.floor(y + 0.5)))


def test_sentiment_other_scale_uses_its_centre():
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 4.5])
    p = np.array([2.0, 2.9, 3.2, 3.9, 4.4, 3.0])
    m = M.sentiment_metrics(p, y, (1.0, 5.0))
    assert m["acc2_non0"] == pytest.approx(np.mean((p[y != 3] > 3) == (y[y != 3] > 3)))
    assert "acc5" in m and "acc7" not in m


def test_classification_against_sklearn():
    y = RNG.integers(0, 4, 60)
    logits = RNG.normal(0, 1, (60, 4))
    logits[np.arange(60), y] += RNG.random(60) * 2
    names = ("angry", "happy", "sad", "neutral")
    m = M.classification_metrics(logits, y, names)
    pred = logits.argmax(1)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["f1_weighted"] == pytest.approx(f1_score(y, pred, average="weighted"))
    assert m["recall_sad"] == pytest.approx(recall_score(y, pred, average=None)[2])
    assert m["acc_happy_binary"] == pytest.approx(accuracy_score(y == 1, pred == 1))
    cm = M.confusion(logits, y, 4)
    assert (cm == confusion_matrix(y, pred)).all()


def test_multi_regression_accuracies():
    y = RNG.integers(1, 8, (30, 2)).astype(float)
    p = np.clip(y + RNG.normal(0, 1, y.shape), 0, 8)
    m = M.multi_regression_metrics(p, y, ("confident", "vivid"), ranges=[(1, 7), (1, 5)])
    assert m["acc7_confident"] == pytest.approx(np.mean(np.floor(np.clip(p[:, 0], 1, 7) + 0.5) == y[:, 0]))
    assert m["acc5_vivid"] == pytest.approx(
        np.mean(np.floor(np.clip(p[:, 1], 1, 5) + 0.5) == np.floor(np.clip(y[:, 1], 1, 5) + 0.5))
    )
    assert m["mae"] == pytest.approx(np.mean(np.abs(p - y)))


def test_sequence_labels_are_flattened_by_mask():
    task = classification_task(("a", "b"), sequence_labels=True)
    logits = np.zeros((2, 3, 2))
    logits[..., 1] = 1.0  # always predicts b
    labels = np.array([[1, 1, 0], [0, 1, 1]])
    mask = np.array([[True, True, False], [True, True, True]])
    m = M.compute_metrics(task, logits, labels, mask)
    assert m["accuracy"] == pytest.approx(4 / 5)


def test_baselines():
    train = np.array([[0.0, 1.0], [2.0, 3.0]])
    assert (M.mean_predictor(train, 3) == np.array([[1.0, 2.0]] * 3)).all()
    r = M.random_intensity_baseline(2000, seed=0)
    counts = (r > 0).sum(1)
    assert set(np.unique(counts)) == set(range(7))  # 0..6 labels
    assert np.allclose(r[r > 0] * 3, np.round(r[r > 0] * 3))  # on the 1/3 grid
    assert r.max() <= 3 and r[r > 0].min() >= 1 / 3 - 1e-9


def test_task_spec_round_trip():
    t = sentiment_task()
    assert TaskSpec.from_dict(t.to_dict()) == t
    with pytest.raises(ValueError, match="unknown task kind"):
        TaskSpec("nonsense", ("x",))
