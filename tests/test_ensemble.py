"""Ensembles of runs (evaluation/ensemble.py): Caruana's greedy selection on val, averaging spaces, id matching,
and the suite cell that reuses its members' runs."""

import json

import numpy as np
import pytest

from emofusion.evaluation.ensemble import (
    MemberPredictions,
    combine,
    ensemble,
    from_average_space,
    select_weights,
    to_average_space,
)
from emofusion.evaluation.metrics import compute_metrics
from emofusion.evaluation.suite import Cell, SuiteSpec, run_suite
from emofusion.tasks import TaskSpec
from helpers import TINY_RUN

SENTIMENT = TaskSpec("sentiment", ["sentiment"], label_range=(1.0, 5.0))
CLASSES = TaskSpec("classification", ["neg", "neu", "pos"])


def _offsets(y, *offsets):
    return [(y + o)[:, None] for o in offsets]


def test_greedy_picks_by_validation_mae_with_replacement_and_keeps_the_best_prefix():
    y = np.linspace(1.5, 4.5, 7)
    # members: y+1, y-1, y+0.5. Round 1 takes y+0.5 (MAE 0.5); round 2 y-1 (mean y-0.25); round 3 y+0.5
    # again (mean exactly y): weights 0, 1/3, 2/3, which no later prefix beats
    weights = select_weights(SENTIMENT, _offsets(y, 1.0, -1.0, 0.5), y[:, None], "greedy", rounds=10)
    np.testing.assert_allclose(weights, [0.0, 1 / 3, 2 / 3])


def test_greedy_stops_at_the_best_prefix_not_the_last_round():
    y = np.linspace(1.5, 4.5, 7)
    # one member: every prefix is that member; with two, y+0.2 alone (MAE 0.2) beats any mix with y+2
    np.testing.assert_allclose(select_weights(SENTIMENT, _offsets(y, 0.2, 2.0), y[:, None], "greedy", 5), [1, 0])
    # rounds=1 is the best single member
    np.testing.assert_allclose(select_weights(SENTIMENT, _offsets(y, 1.0, -0.4, 0.5), y[:, None], "greedy", 1),
                               [0, 1, 0])


def test_best_and_uniform_rules():
    y = np.linspace(1.5, 4.5, 7)
    members = _offsets(y, 1.0, -0.4, 0.5)
    np.testing.assert_allclose(select_weights(SENTIMENT, members, y[:, None], "best"), [0, 1, 0])
    np.testing.assert_allclose(select_weights(SENTIMENT, members, y[:, None], "uniform"), [1 / 3] * 3)
    with pytest.raises(ValueError, match="unknown ensemble rule"):
        select_weights(SENTIMENT, members, y[:, None], "vote")
    nan = [np.full_like(m, np.nan) for m in members]
    with pytest.raises(ValueError, match="no mix of the members has a finite validation mae"):
        select_weights(SENTIMENT, nan, y[:, None], "greedy")


def test_classes_are_averaged_as_probabilities_and_scored_by_the_task_monitor():
    rng = np.random.default_rng(0)
    logits = [rng.normal(size=(6, 3)) * 3, rng.normal(size=(6, 3)) * 3]
    probs = [np.exp(z) / np.exp(z).sum(1, keepdims=True) for z in logits]
    spaces = [to_average_space(CLASSES, z) for z in logits]
    np.testing.assert_allclose(spaces[0], probs[0])
    out = combine(CLASSES, spaces, np.array([0.25, 0.75]))
    np.testing.assert_allclose(np.exp(out), 0.25 * probs[0] + 0.75 * probs[1])
    presence = TaskSpec("multilabel_binary", ["a", "b"])
    z = np.array([[-2.0, 0.5], [1.5, 3.0]])
    np.testing.assert_allclose(from_average_space(presence, to_average_space(presence, z)), z)
    # the class task's monitor is maximised: "best" takes the member with the higher weighted F1
    labels = np.array([0, 1, 2, 0, 1, 2])
    right, wrong = np.eye(3)[labels] * 5, np.eye(3)[(labels + 1) % 3] * 5
    spaces = [to_average_space(CLASSES, wrong), to_average_space(CLASSES, right)]
    assert CLASSES.monitor_mode == "max"
    np.testing.assert_allclose(select_weights(CLASSES, spaces, labels, "best"), [0, 1])


def _member(name, ids, preds, labels):
    return MemberPredictions(name, SENTIMENT, {s: list(ids) for s in ("val", "test")},
                             {s: np.asarray(preds, float)[:, None] for s in ("val", "test")},
                             {s: np.asarray(labels, float)[:, None] for s in ("val", "test")})


def test_members_are_matched_by_sample_id_and_a_mismatch_is_an_error():
    ids, y = ["a", "b", "c", "d"], np.array([1.0, 2.0, 4.0, 5.0])
    first = _member("run1", ids, y + 0.5, y)
    order = [2, 0, 3, 1]
    shuffled = _member("run2", [ids[i] for i in order], (y - 0.5)[order], y[order])
    out = ensemble([first, shuffled], "uniform")
    assert out["metrics"]["test"]["mae"] == pytest.approx(0.0)  # (y + 0.5 + y - 0.5) / 2 only if aligned
    assert out["selection_metric"] == "val/mae"
    relabelled = _member("run3", ids, y, [1.0, 2.0, 3.0, 5.0])
    with pytest.raises(ValueError, match=r"run3: sample 'c' of the val split has another label"):
        ensemble([first, relabelled])
    other = _member("run4", ["a", "b", "c", "x"], y, y)
    with pytest.raises(ValueError, match="run4: its val split holds other samples"):
        ensemble([first, other])


def test_suite_ensemble_cells_reuse_the_member_runs_and_agree_with_them(tmp_path, capsys):
    members = [TINY_RUN, {**TINY_RUN, "model": "late_fusion", "model_options": {"encoder_dim": 8}}]
    cells = [Cell("a", "syn", members[0]), Cell("b", "syn", members[1])]
    for rule in ("best", "uniform", "greedy"):
        cells.append(Cell(rule, "syn", {"runner": "emofusion.evaluation.ensemble:run_ensemble_cell", "rule": rule,
                                        "rounds": 3, "members": members}))
    logs = []
    result = run_suite(SuiteSpec(cells, ["mae"], seeds=[0]), out_dir=tmp_path, suite_name="ens", log=logs.append)
    by_row = {c["row"]: c for c in result.cells}
    records = {}
    for path in (tmp_path / "cache").glob("*.json"):
        r = json.loads(path.read_text())
        records[r["config"].get("rule") or r["config"]["model"]] = r
    # two member runs trained once each, then three ensemble cells in the second wave
    assert sum("early_fusion_lstm seed=0" in m or "late_fusion seed=0" in m for m in logs) == 2
    val = {m: records[m]["metrics"]["val"]["mae"] for m in ("early_fusion_lstm", "late_fusion")}
    test = {m: records[m]["metrics"]["test"]["mae"] for m in val}
    val = {m: records[m]["metrics"]["val"]["mse"] for m in val}
    best = min(val, key=val.get)
    assert records["best"]["metrics"]["test"]["mae"] == pytest.approx(test[best])
    assert records["best"]["info"]["weights"] == {best: 1.0}
    # greedy's first round is the best member, so its validation score can only be better or equal
    monitor = records["greedy"]["info"]["selection_metric"].split("/")[1]
    assert monitor == "mse"  # the synthetic intensities' selection metric
    assert records["greedy"]["metrics"]["val"][monitor] <= records["best"]["metrics"]["val"][monitor] + 1e-12
    assert by_row["uniform"]["mean"]["mae"] == pytest.approx(records["uniform"]["metrics"]["test"]["mae"])
    assert records["uniform"]["baselines"]["test"]["train_mean"]["mae"] > 0
    # the command on the same two runs: the uniform weights and metrics of the suite cell
    from emofusion.cli import main

    runs = [records[m]["run_dir"] for m in ("early_fusion_lstm", "late_fusion")]
    out = tmp_path / "ens.json"
    assert main(["ensemble", *runs, "--rule", "uniform", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ensemble (uniform)" in printed and "train_mean" in printed
    saved = json.loads(out.read_text())
    assert saved["weights"] == {runs[0]: 0.5, runs[1]: 0.5}
    assert saved["metrics"]["test"]["mae"] == pytest.approx(records["uniform"]["metrics"]["test"]["mae"])
    assert set(saved["baselines"]) == {"val", "test"}
    # re-running is all cached
    logs.clear()
    run_suite(SuiteSpec(cells, ["mae"], seeds=[0]), out_dir=tmp_path, suite_name="ens", log=logs.append)
    assert "(5 cached)" in logs[0]
    # members that are no cell of the suite still train in the first wave, as jobs of their own (so parallel
    # workers never race on one member folder), before the ensemble cell
    logs.clear()
    run_suite(SuiteSpec(cells[2:3], ["mae"], seeds=[1]), out_dir=tmp_path, suite_name="ens1", log=logs.append)
    order = [m.split(" seed=")[0].split(" ", 2)[2] for m in logs if " seed=1: ok" in m]
    assert order == ["early_fusion_lstm", "late_fusion", "ensemble (best, 2 members)"]


def test_uniform_mean_equals_the_hand_mean_of_member_predictions():
    y = np.array([1.0, 2.5, 3.0, 4.5, 5.0])
    a, b = _member("r1", "vwxyz", y + 0.3, y), _member("r2", "vwxyz", y - 0.9, y)
    out = ensemble([a, b], "uniform")
    expected = compute_metrics(SENTIMENT, ((y + 0.3 + y - 0.9) / 2)[:, None], y[:, None])
    assert out["metrics"]["test"]["mae"] == pytest.approx(expected["mae"])
    assert out["weights"] == {"r1": 0.5, "r2": 0.5}

