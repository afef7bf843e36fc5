"""Ensembles of trained runs, chosen on the validation split only.

Three rules, each a function of the members' validation predictions (the test split is only scored):

- ``best``: the single member with the best validation score (model selection, for comparison);
- ``uniform``: the plain mean of every member (no selection at all);
- ``greedy``: Caruana et al. (2004), "Ensemble selection from libraries of models": forward selection with
  replacement. Start empty; each round add the member whose addition gives the best validation score of the
  averaged prediction; after ``rounds`` rounds keep the prefix with the best validation score (the shortest on
  ties). A member's weight is how often it was picked, over the prefix length.

The score is the task's own checkpoint-selection metric (``task.monitor``: MAE for sentiment, weighted F1 for
classes, ...). Predictions are averaged as values for regression, as probabilities for classes (softmax of the
logits; the average is returned as log-probabilities, which the metric code reads as logits) and multi-label
presence (sigmoid; returned as logits). Members are matched by sample id; a member whose ids or labels differ
from the first member's is an error, never silently aligned.

    emofusion ensemble RUN_DIR RUN_DIR ... [--rule greedy] [--rounds 20]
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emofusion.evaluation.metrics import compute_metrics
from emofusion.tasks import TaskSpec

RULES = ("greedy", "uniform", "best")
SPLITS = ("val", "test")


@dataclass
class MemberPredictions:
    name: str  # the run folder
    task: TaskSpec
    ids: dict[str, list]  # split -> sample ids in prediction order
    predictions: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    bundle: object = field(default=None, repr=False)  # the data with the run's hygiene (for the baselines)
    seed: int = 0


def member_predictions(run_dir: str | Path, splits=SPLITS) -> MemberPredictions:
    """One trained run's predictions on each split of the data it was trained on (with its own hygiene)."""
    from emofusion.training.run import bundle_for_module, evaluate_split, load_module

    module = load_module(run_dir)
    bundle, run = bundle_for_module(module)
    ids, preds, labels = {}, {}, {}
    for split in splits:
        _, out = evaluate_split(module, bundle, split, return_predictions=True)
        ids[split] = list(out["ids"])
        preds[split] = np.asarray(out["predictions"], np.float64)
        labels[split] = np.asarray(out["labels"])
    return MemberPredictions(str(run_dir), module.task, ids, preds, labels, bundle, run.seed)


def _aligned(members: list[MemberPredictions], split: str) -> list[np.ndarray]:
    """Each member's predictions reordered to the first member's sample order; labels must agree."""
    ref = members[0]
    position = {i: k for k, i in enumerate(ref.ids[split])}
    if len(position) != len(ref.ids[split]):
        raise ValueError(f"{ref.name}: the {split} split repeats sample ids; an ensemble needs one row per sample")
    out = []
    for m in members:
        if sorted(m.ids[split]) != sorted(ref.ids[split]):
            missing = sorted(set(ref.ids[split]) ^ set(m.ids[split]))[:3]
            raise ValueError(f"{m.name}: its {split} split holds other samples than {ref.name} (e.g. {missing})")
        order = np.array([position[i] for i in m.ids[split]])
        preds = np.empty_like(m.predictions[split])
        preds[order] = m.predictions[split]
        labels = np.empty_like(m.labels[split])
        labels[order] = m.labels[split]
        differs = ~np.all((labels == ref.labels[split]).reshape(len(labels), -1), axis=1)
        if differs.any():
            bad = ref.ids[split][int(np.flatnonzero(differs)[0])]
            raise ValueError(f"{m.name}: sample {bad!r} of the {split} split has another label than in {ref.name}")
        out.append(preds)
    return out


def to_average_space(task: TaskSpec, predictions: np.ndarray) -> np.ndarray:
    """Where members are averaged: probabilities for class / presence outputs, values otherwise."""
    if task.kind == "classification":
        z = predictions - predictions.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)
    if task.kind == "multilabel_binary":
        return 1.0 / (1.0 + np.exp(-predictions))
    return predictions


def from_average_space(task: TaskSpec, averaged: np.ndarray) -> np.ndarray:
    """Back to what the metric code reads: log-probabilities (as logits) for classes, logits for presence."""
    if task.kind == "classification":
        return np.log(np.clip(averaged, 1e-12, None))
    if task.kind == "multilabel_binary":
        p = np.clip(averaged, 1e-12, 1 - 1e-12)
        return np.log(p) - np.log1p(-p)
    return averaged


def _score(task: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> float:
    """The task's selection metric, signed so that lower is better; NaN counts as worst."""
    value = float(compute_metrics(task, predictions, labels)[task.monitor])
    if not np.isfinite(value):
        return np.inf
    return value if task.monitor_mode == "min" else -value


def select_weights(task: TaskSpec, val_spaces: list[np.ndarray], labels: np.ndarray, rule: str = "greedy",
                   rounds: int = 20) -> np.ndarray:
    """Member weights (summing to 1) from validation predictions in averaging space."""
    n = len(val_spaces)
    if n == 0:
        raise ValueError("an ensemble needs at least one member")
    if rule == "uniform":
        return np.full(n, 1.0 / n)
    score = [_score(task, from_average_space(task, v), labels) for v in val_spaces]
    if rule == "best":
        weights = np.zeros(n)
        weights[int(np.argmin(score))] = 1.0  # first of equal scores
        return weights
    if rule != "greedy":
        raise ValueError(f"unknown ensemble rule {rule!r}; choose from {', '.join(RULES)}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    counts = np.zeros(n, dtype=np.int64)
    total = np.zeros_like(val_spaces[0])
    best_counts, best_score = None, np.inf
    for k in range(1, rounds + 1):
        trial = [_score(task, from_average_space(task, (total + v) / k), labels) for v in val_spaces]
        pick = int(np.argmin(trial))
        counts[pick] += 1
        total = total + val_spaces[pick]
        if trial[pick] < best_score:  # strictly better: ties keep the shorter prefix
            best_score, best_counts = trial[pick], counts.copy()
    if best_counts is None:
        raise ValueError(f"no mix of the members has a finite validation {task.monitor}")
    return best_counts / best_counts.sum()


def combine(task: TaskSpec, spaces: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    averaged = sum(w * s for w, s in zip(weights, spaces) if w > 0)
    return from_average_space(task, averaged)


def ensemble(members: list[MemberPredictions], rule: str = "greedy", rounds: int = 20) -> dict:
    """Weights chosen on val by ``rule``, then ``{"weights", "members", "metrics": {split: metrics}}``."""
    if not members:
        raise ValueError("an ensemble needs at least one member run")
    task = members[0].task
    for m in members[1:]:
        if (m.task.kind, m.task.output_names) != (task.kind, task.output_names):
            raise ValueError(f"{m.name}: task {m.task.kind} {m.task.output_names} differs from "
                             f"{members[0].name}'s {task.kind} {task.output_names}")
    spaces = {s: [to_average_space(task, p) for p in _aligned(members, s)] for s in SPLITS}
    labels = {s: members[0].labels[s] for s in SPLITS}
    weights = select_weights(task, spaces["val"], labels["val"], rule, rounds)
    metrics = {s: {k: float(v) for k, v in compute_metrics(task, combine(task, spaces[s], weights), labels[s]).items()}
               for s in SPLITS}
    return {"rule": rule, "rounds": rounds, "selection_metric": f"val/{task.monitor}",
            "weights": {m.name: float(w) for m, w in zip(members, weights) if w > 0},
            "members": [m.name for m in members], "metrics": metrics}


def run_ensemble_cell(job) -> dict:
    """Suite runner: the ensemble of ``job.config["members"]`` (suite cell configs) at the job's seed. Each
    member is the suite cache's run of that config and seed (trained first when absent), so an ensemble cell
    reuses the runs of the single-model cells beside it."""
    import time

    from emofusion.evaluation.baselines import bundle_baselines
    from emofusion.evaluation.suite import member_job, run_job

    start = time.perf_counter()
    config = job.config
    root = Path(job.run_dir).parent.parent  # the suite's out folder: runs/ and cache/ side by side
    members = []
    for member in config["members"]:
        record = run_job(member_job(member, job.seed, job.split, root))
        if record.get("status") != "ok":
            raise RuntimeError(f"member {member.get('model')} seed {job.seed} failed: {record.get('error')}")
        members.append(member_predictions(record["run_dir"]))
    result = ensemble(members, config.get("rule", "greedy"), int(config.get("rounds", 20)))
    bundle = members[0].bundle
    names = {m.name: member.get("model") for m, member in zip(members, config["members"])}
    record = {
        "status": "ok",
        "config": config,
        "seed": job.seed,
        "metrics": result["metrics"],
        "evaluations": {"clean": dict(result["metrics"][job.split])},
        "baselines": bundle_baselines(bundle),
        "info": {"rule": result["rule"], "selection_metric": result["selection_metric"],
                 "weights": {names[k]: round(w, 4) for k, w in result["weights"].items()}},
        "train_seconds": time.perf_counter() - start,
        "run_dir": job.run_dir,
    }
    Path(job.run_dir).mkdir(parents=True, exist_ok=True)
    (Path(job.run_dir) / "ensemble.json").write_text(json.dumps({**record, "member_runs": result["members"]},
                                                                indent=1, default=float))
    return record
