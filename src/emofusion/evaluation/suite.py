"""Benchmark suites: named tables of training runs, run over seeds, cached, aggregated, reported.

A suite is a function ``build(preset) -> SuiteSpec`` registered under a name. Each :class:`Cell` is one
table cell: a training config (the fields of :class:`emofusion.training.RunConfig`) plus an optional test-time
perturbation (see :mod:`emofusion.evaluation.robustness`). Cells whose configs are equal share one training
run per seed; every perturbation of that group is evaluated on the trained model. A finished (config, seed)
run is cached as ``OUT/cache/<hash>.json`` (hash of the canonical JSON of config + seed), so an interrupted
suite resumes where it stopped and suites with overlapping configs reuse each other's runs. Results are
written as ``OUT/<suite>/results.{md,csv,json}`` with mean ± std over seeds and the paper's published
numbers beside ours where given.

    results = run_suite("paper000-table3", preset="quick", seeds=None, jobs=1, out_dir="bench_out")
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emofusion.evaluation.baselines import beats_baselines
from emofusion.evaluation.robustness import make_perturbation, perturbation_label
from emofusion.registry import Registry
from emofusion.training.rundir import ResumeError

log = logging.getLogger("emofusion.benchmark")

# 2: the step-based training recipe and trivial baselines in every record (issue 13); older runs retrain
CACHE_VERSION = 2
FLAG = "†"
PRESETS = ("quick", "full")


@dataclass
class Cell:
    """One table cell: a training config (RunConfig fields, without the seed) and an optional perturbation."""

    row: str
    column: str
    config: dict
    perturbation: dict | None = None
    # free-form annotations for plots (e.g. {"severity": 0.5, "kind": "frame_drop", "model": "mult"})
    meta: dict = field(default_factory=dict)


@dataclass
class Claim:
    """A paper's claim as a comparison of two cells, read off the results when the report is written (so no
    number is typed into the docs). ``kind="beats"``: ``a`` is better than ``b`` on every metric (direction
    from the suite's ``lower_is_better``); ``kind="difference"``: the report gives ``a - b`` per metric and no
    verdict (for "on par" claims, whose tolerance a paper does not state)."""

    text: str
    a: tuple[str, str]  # (row, column)
    b: tuple[str, str]
    metrics: Sequence[str]
    kind: str = "beats"


@dataclass
class SuiteSpec:
    cells: list[Cell]
    metrics: list[str]
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    # published paper numbers by (row, column, metric)
    published: dict = field(default_factory=dict)
    title: str = ""
    description: str = ""
    split: str = "test"
    # optional hook drawing figures from the aggregated results; returns the written files
    plot: Callable[[SuiteResult, Path], list[Path]] | None = None
    # metrics where lower is better (for marking the best value of each column)
    lower_is_better: Sequence[str] = ("mae", "mse", "mae_sum", "mse_sum")
    # why cells of this suite may lose to a trivial baseline (printed under the tables when any is flagged)
    flag_note: str = ""
    # the paper's claims this table tests, each read off the results under the tables
    claims: Sequence[Claim] = ()


SUITES = Registry("benchmark suite")


def register_suite(name: str, description: str | None = None):
    """Decorator registering ``build(preset: str) -> SuiteSpec`` as suite ``name``."""
    return SUITES.register(name, description)


def list_suites() -> list[str]:
    _import_suites()
    return SUITES.names()


def get_suite(name: str, preset: str = "quick") -> SuiteSpec:
    _import_suites()
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    spec = SUITES.get(name)(preset)
    if not isinstance(spec, SuiteSpec):
        raise TypeError(f"suite {name!r} returned {type(spec).__name__}, not a SuiteSpec")
    _validate(name, spec)
    return spec


def _import_suites() -> None:
    import emofusion.evaluation.suites  # noqa: F401  (registers the built-in suites)


def _validate(name: str, spec: SuiteSpec) -> None:
    seen = set()
    for cell in spec.cells:
        key = (cell.row, cell.column)
        if key in seen:
            raise ValueError(f"suite {name!r}: two cells at row {cell.row!r}, column {cell.column!r}")
        seen.add(key)
        if "seed" in cell.config:
            raise ValueError(
                f"suite {name!r}: cell {key} sets 'seed' in its config; seeds come from the suite"
            )
        make_perturbation(cell.perturbation)  # raises on a bad spec


# ---------------------------------------------------------------- hashing and cache


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable in a suite config: {obj!r}")


def config_hash(config: dict, seed: int | None = None) -> str:
    payload = (
        {"config": config, "v": CACHE_VERSION}
        if seed is None
        else {"config": config, "seed": seed, "v": CACHE_VERSION}
    )
    return hashlib.sha256(canonical(payload).encode()).hexdigest()[:16]


def perturbation_key(spec: dict | None) -> str:
    return "clean" if spec is None else "p" + hashlib.sha256(canonical(spec).encode()).hexdigest()[:12]


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------- jobs


@dataclass
class Job:
    """One training run (config, seed) and the perturbations to evaluate on it."""

    config: dict
    seed: int
    perturbations: dict[str, dict | None]  # key -> spec
    split: str
    cache_path: str
    run_dir: str

    @property
    def key(self) -> str:
        return config_hash(self.config, self.seed)


def _cached(job: Job) -> dict | None:
    path = Path(job.cache_path)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("status") != "ok":
        return None
    have = record.get("evaluations", {})
    return record if all(k in have for k in job.perturbations) else None


def _train_and_evaluate(job: Job, resume: bool = False) -> dict:
    """Train one run and evaluate it clean and under each perturbation (the engine does the work)."""
    if "runner" in job.config:
        # a cell trained by something else (a peer library's models): "package.module:function"(job) -> record
        import importlib

        module, _, func = job.config["runner"].partition(":")
        return getattr(importlib.import_module(module), func)(job)
    import torch

    from emofusion.training import RunConfig, train_run
    from emofusion.training.run import evaluate_split

    torch.set_num_threads(1)
    options = dict(job.config)
    options["seed"] = job.seed
    options.setdefault("output", job.run_dir)
    # suite runs are quiet, single-threaded and skip per-run figures unless the cell asks otherwise
    options.setdefault("threads", 1)
    options.setdefault("progress", False)
    options.setdefault("plots", False)
    config = RunConfig(**options)
    start = time.perf_counter()
    result = train_run(config, resume=resume)  # resume: a requeued cluster task (launchers.py)
    train_seconds = time.perf_counter() - start
    if config.plots:
        from emofusion.evaluation.plots import plot_run

        plot_run(result.run_dir, result.module, result.bundle, config)
    evaluations: dict[str, dict] = {}
    bundle = result.bundle  # with the run's hygiene (standardisation) applied: perturb what the model sees
    for key, spec in job.perturbations.items():
        if spec is None and job.split in (result.metrics or {}):
            evaluations[key] = dict(result.metrics[job.split])
            continue
        try:
            metrics = evaluate_split(result.module, bundle, job.split, transform=make_perturbation(spec))
            evaluations[key] = {k: float(v) for k, v in dict(metrics).items() if _is_number(v)}
        except Exception as err:  # a model that cannot take this perturbation: record, keep going
            evaluations[key] = {"error": f"{type(err).__name__}: {err}"}
    return {
        "status": "ok",
        "config": job.config,
        "seed": job.seed,
        "metrics": {k: dict(v) for k, v in (result.metrics or {}).items()},
        "evaluations": evaluations,
        # closed-form trivial baselines of the same dataset and split ({split: {name: metrics}})
        "baselines": getattr(result, "baselines", {}) or {},
        "info": getattr(result, "info", {}) or {},
        "train_seconds": train_seconds,
        "run_dir": str(getattr(result, "run_dir", job.run_dir)),
    }


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def run_job(job: Job, resume: bool = False) -> dict:
    """Run (or load from cache) one job; always returns a record and writes it to the cache when it succeeds."""
    cached = _cached(job)
    if cached is not None:
        cached["cached"] = True
        return cached
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    try:
        # a run of this very job (run folders are named by config and seed) that was killed mid-training
        # continues from its last checkpoint instead of starting over: a stopped suite loses minutes, not cells
        resume = resume or _interrupted(job)
        try:
            record = _train_and_evaluate(job, resume=True) if resume else _train_and_evaluate(job)
        except ResumeError as err:  # no checkpoint that loads: train from scratch (the old folder is kept aside)
            log.warning("%s: %s; training it from the start", job.run_dir, err)
            record = _train_and_evaluate(job)
    except Exception as err:
        return {
            "status": "error",
            "config": job.config,
            "seed": job.seed,
            "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(),
        }
    _atomic_write(Path(job.cache_path), json.dumps(record, indent=1, default=_json_default))
    record["cached"] = False
    return record


def _interrupted(job: Job) -> bool:
    """The job's run folder holds checkpoints but no metrics.json (what a finished run writes last): it was
    stopped mid-training. A finished run whose cache record was moved aside is retrained, not resumed."""
    if "runner" in job.config:  # peer-library and multi-run cells manage their own folders
        return False
    run_dir = Path(job.run_dir)
    ckpt = run_dir / "checkpoints"
    if (run_dir / "metrics.json").exists() or not ckpt.is_dir():
        return False
    return any(ckpt.glob("last.ckpt")) or any(ckpt.glob("step-*.ckpt"))


def plan_jobs(spec: SuiteSpec, seeds: Sequence[int], out_dir: Path) -> list[Job]:
    groups: dict[str, tuple[dict, dict]] = {}
    for cell in spec.cells:
        h = config_hash(cell.config)
        config, perts = groups.setdefault(h, (cell.config, {}))
        perts[perturbation_key(cell.perturbation)] = cell.perturbation
    jobs = []
    for seed in seeds:
        for config, perts in groups.values():
            key = config_hash(config, seed)
            jobs.append(
                Job(
                    config=config,
                    seed=int(seed),
                    perturbations=dict(perts),
                    split=spec.split,
                    cache_path=str(out_dir / "cache" / f"{key}.json"),
                    run_dir=str(out_dir / "runs" / key),
                )
            )
    return jobs


# ---------------------------------------------------------------- aggregation and reports


@dataclass
class SuiteResult:
    name: str
    preset: str
    spec: SuiteSpec
    seeds: list[int]
    cells: list[dict]  # per cell: row, column, perturbation, values {metric: [...]}, mean, std, errors
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    # training + evaluation time of all runs, cached ones included (what a fresh run would cost)
    train_seconds_total: float = 0.0
    # trivial-baseline rows: per (baseline, column) pseudo-cells with mean/std/n like the model cells
    baseline_cells: list[dict] = field(default_factory=list)

    def get(self, row: str, column: str) -> dict:
        for c in self.cells:
            if c["row"] == row and c["column"] == column:
                return c
        raise KeyError(f"no cell ({row!r}, {column!r}) in suite {self.name!r}")

    def mean(self, row: str, column: str, metric: str) -> float:
        return self.get(row, column)["mean"].get(metric, float("nan"))


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def dataset_key(config: dict) -> str:
    """What the trivial baselines depend on: the dataset and its options (labels and splits)."""
    return canonical({"dataset": config.get("dataset"), "dataset_options": config.get("dataset_options") or {}})


def _record_baselines(record: dict | None, split: str) -> dict[str, dict]:
    """{baseline: {metric: value}} on the suite's split, plus ``"<split>/<metric>"`` of the run's other splits
    (so a ``val/mae`` column has its baseline rows and flags too)."""
    if not record or record.get("status") != "ok":
        return {}
    recorded = record.get("baselines") or {}
    out = {name: dict(metrics) for name, metrics in (recorded.get(split) or {}).items()}
    for other, by_name in recorded.items():
        if other != split:
            for name, metrics in (by_name or {}).items():
                out.setdefault(name, {}).update({f"{other}/{k}": v for k, v in metrics.items()})
    return out


def _metric_value(record: dict, evaluation: dict, metric: str):
    """``metric`` of the suite's split (the cell's evaluation), or ``"<split>/<metric>"`` of another split as the
    run recorded it (e.g. ``val/mae``, the number that selected the checkpoint)."""
    split, sep, name = metric.partition("/")
    if sep and split in (record.get("metrics") or {}):
        return record["metrics"][split].get(name)
    return evaluation.get(metric)


def aggregate(spec: SuiteSpec, records: dict[tuple[str, int], dict], seeds: Sequence[int]) -> list[dict]:
    cells = []
    for cell in spec.cells:
        h = config_hash(cell.config)
        pkey = perturbation_key(cell.perturbation)
        values: dict[str, list[float]] = {m: [] for m in spec.metrics}
        errors = []
        for seed in seeds:
            record = records.get((h, seed))
            if record is None or record.get("status") != "ok":
                errors.append(f"seed {seed}: {record.get('error') if record else 'not run'}")
                continue
            ev = record["evaluations"].get(pkey, {})
            if "error" in ev:
                errors.append(f"seed {seed}: {ev['error']}")
                continue
            for m in spec.metrics:
                v = _metric_value(record, ev, m)
                values[m].append(float(v) if v is not None else float("nan"))
        stats = {m: _mean_std(v) for m, v in values.items()}
        cells.append(
            {
                "row": cell.row,
                "column": cell.column,
                "perturbation": cell.perturbation,
                "perturbation_label": perturbation_label(cell.perturbation),
                "config": cell.config,
                "config_hash": h,
                "meta": cell.meta,
                "values": values,
                "mean": {m: s[0] for m, s in stats.items()},
                "std": {m: s[1] for m, s in stats.items()},
                "n": {m: sum(1 for x in v if np.isfinite(x)) for m, v in values.items()},
                "published": {m: spec.published.get((cell.row, cell.column, m)) for m in spec.metrics},
                "errors": errors,
                "dataset_key": dataset_key(cell.config),
                "baselines": _baseline_means(spec, [_record_baselines(records.get((h, s)), spec.split) for s in seeds]),
            }
        )
    # a cell without baselines of its own (a run by another runner, a failed seed) borrows those of any cell
    # on the same dataset: they depend on the labels only
    by_data = {}
    for c in cells:
        if c["baselines"]["mean"]:
            by_data.setdefault(c["dataset_key"], c["baselines"])
    for c in cells:
        if not c["baselines"]["mean"] and c["dataset_key"] in by_data:
            c["baselines"] = by_data[c["dataset_key"]]
        c["flags"] = {m: _flag(c, m) for m in spec.metrics}
    return cells


def _baseline_means(spec: SuiteSpec, per_seed: list[dict[str, dict]]) -> dict:
    """{"mean": {baseline: {metric: mean}}, "std": ..., "n": ...} over the seeds that have baselines."""
    names = _ordered(n for b in per_seed for n in b)
    out = {"mean": {}, "std": {}, "n": {}}
    for name in names:
        stats = {m: _mean_std([b[name].get(m, float("nan")) for b in per_seed if name in b]) for m in spec.metrics}
        out["mean"][name] = {m: v[0] for m, v in stats.items()}
        out["std"][name] = {m: v[1] for m, v in stats.items()}
        out["n"][name] = {m: sum(1 for b in per_seed if name in b and np.isfinite(b[name].get(m, np.nan)))
                          for m in spec.metrics}
    return out


def _flag(cell: dict, metric: str) -> bool:
    """True when the cell's mean does not beat the best trivial baseline of its dataset on ``metric``."""
    if not cell["n"].get(metric):
        return False  # nothing measured: "n/a", not a loss
    verdict = beats_baselines(cell["mean"][metric], cell["baselines"]["mean"], metric)
    return verdict is False


def baseline_rows(cells: list[dict], metrics: Sequence[str]) -> list[dict]:
    """Pseudo-cells of the baseline rows: one per (baseline, column), when every cell of the column is on
    the same dataset (otherwise the column's baselines differ by row and only the flags are shown)."""
    columns = _ordered(c["column"] for c in cells)
    out = []
    for col in columns:
        in_col = [c for c in cells if c["column"] == col and c["baselines"]["mean"]]
        if not in_col or not (len({c["dataset_key"] for c in in_col}) == 1
                              or _same_baselines([c["baselines"]["mean"] for c in in_col])):
            continue
        base = in_col[0]["baselines"]
        for name in base["mean"]:
            out.append({
                "row": f"baseline: {name}",
                "column": col,
                "mean": dict(base["mean"][name]),
                "std": dict(base["std"][name]),
                "n": dict(base["n"][name]),
                "published": {m: None for m in metrics},
                "flags": {m: False for m in metrics},
                "is_baseline": True,
            })
    return out


def _same_baselines(means: list[dict]) -> bool:
    """Equal baseline values in every cell: one dataset, or views of it with the same labels and splits
    (``wordslots:mfn:X`` and ``mfn:X``), so one set of baseline rows stands for the whole column."""
    def canon(mean: dict) -> str:
        return json.dumps({b: {m: (round(v, 12) if np.isfinite(v) else None) for m, v in sorted(ms.items())}
                           for b, ms in sorted(mean.items())}, sort_keys=True)

    return len({canon(m) for m in means}) == 1


def _fmt(mean: float, std: float, n: int) -> str:
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.3f} ± {std:.3f}" if n > 1 else f"{mean:.3f}"


def _ordered(items) -> list:
    return list(dict.fromkeys(items))


def claim_lines(spec: SuiteSpec, by_key: dict, n_seeds: int) -> list[str]:
    """Markdown for ``spec.claims``: each claim, whether this run supports it, and the numbers it rests on."""
    if not spec.claims:
        return []
    seeds = "one seed" if n_seeds == 1 else f"the mean of {n_seeds} seeds"
    lines = [f"**The paper's claims, read on this run** ({seeds}; computed from the table above):", ""]
    for claim in spec.claims:
        ca, cb = by_key.get(tuple(claim.a)), by_key.get(tuple(claim.b))
        label_a, label_b = " / ".join(claim.a), " / ".join(claim.b)
        if ca is None or cb is None:
            lines.append(f"- {claim.text}: not testable here ({label_a if ca is None else label_b} has no result).")
            continue
        parts, holds = [], True
        for m in claim.metrics:
            va, vb = ca["mean"].get(m, float("nan")), cb["mean"].get(m, float("nan"))
            if claim.kind == "difference":
                parts.append(f"{m} {va:.3f} vs {vb:.3f} (difference {va - vb:+.3f})")
                continue
            better = va < vb if m in spec.lower_is_better else va > vb
            holds = holds and bool(np.isfinite(va) and np.isfinite(vb) and better)
            parts.append(f"{m} {va:.3f} vs {vb:.3f}")
        if claim.kind == "difference":
            verdict = f"{label_a} vs {label_b}"
        else:
            verdict = ("**holds**" if holds else "**does not hold**") + f" ({label_a} vs {label_b})"
        lines.append(f"- {claim.text}: {verdict}: " + "; ".join(parts) + ".")
    return lines + [""]


def markdown(result: SuiteResult) -> str:
    spec = result.spec
    rows = _ordered(c["row"] for c in result.cells)
    cols = _ordered(c["column"] for c in result.cells)
    title = spec.title or result.name
    if result.preset != "quick":
        title += f" ({result.preset} preset)"
    lines = [f"## {title}", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    lines += [
        f"Suite `{result.name}`, preset `{result.preset}`, split `{spec.split}`, seeds {result.seeds}: "
        f"mean ± sample std over seeds. Reproduce: `emofusion benchmark {result.name} --preset {result.preset} "
        f"--seeds {len(result.seeds)}`.",
        "",
    ]
    has_published = any(v is not None for c in result.cells for v in c["published"].values())
    if has_published:
        lines += ["Published numbers (where the dataset matches) are shown in brackets.", ""]
    base_cells = result.baseline_cells or baseline_rows(result.cells, spec.metrics)
    base_rows = _ordered(c["row"] for c in base_cells)
    if base_cells or any(c.get("baselines", {}).get("mean") for c in result.cells):
        lines += [
            "*baseline* rows: closed-form trivial predictors fitted on the training labels and scored on the "
            f"same `{spec.split}` split (a `<split>/metric` table: on that split) with the same metric code "
            f"(docs/metrics.md). {FLAG} = the model does not "
            "beat the best of them on that metric (for a column whose rows use different datasets, each row "
            "is compared with the baselines of its own dataset).",
            "",
        ]
    by_key = {(c["row"], c["column"]): c for c in [*result.cells, *base_cells]}
    for metric in spec.metrics:
        lines += [f"**{metric}**", "", "| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        flagged = []
        for r in [*rows, *base_rows]:
            out = []
            for col in cols:
                c = by_key.get((r, col))
                if c is None:
                    out.append("")
                    continue
                # a deterministic baseline (same value every seed) shows no "± 0.000"
                n = 1 if c.get("is_baseline") and c["std"][metric] == 0 else c["n"][metric]
                text = _fmt(c["mean"][metric], c["std"][metric], n)
                pub = c["published"].get(metric)
                if pub is not None:
                    text += f" [{pub:.3f}]" if isinstance(pub, (int, float)) else f" [{pub}]"
                if c.get("flags", {}).get(metric):
                    text += f" {FLAG}"
                    flagged.append(f"{r} / {col}")
                out.append(text)
            label = f"*{r}*" if r in base_rows and r not in rows else r
            lines.append(f"| {label} | " + " | ".join(out) + " |")
        lines.append("")
        if flagged:
            lines += [f"{FLAG} not better than the best trivial baseline on {metric}: " + ", ".join(flagged[:12])
                      + (f" and {len(flagged) - 12} more" if len(flagged) > 12 else "") + ".", ""]
    lines += claim_lines(spec, by_key, len(result.seeds))
    if any(v for c in result.cells for v in c.get("flags", {}).values()):
        from emofusion.evaluation.flag_notes import FLAG_NOTES

        # a preset-specific note ("paper002-table2.full") wins over the suite's
        base_name = result.name.split(".")[0]
        note = spec.flag_note.strip() or FLAG_NOTES.get(f"{base_name}.{result.preset}", FLAG_NOTES.get(base_name, ""))
        lines += [f"**Why cells are flagged {FLAG}.** " + (note or
                  "No explanation recorded for this suite: treat a flagged cell as a model that did not learn."), ""]
    errors = [(c["row"], c["column"], e) for c in result.cells for e in c["errors"]]
    if errors:
        lines += ["Failed or missing runs:", ""]
        lines += [f"- {r} / {col}: {e}" for r, col, e in errors[:30]]
        if len(errors) > 30:
            lines.append(f"- ... {len(errors) - 30} more")
        lines.append("")
    for f in result.files:
        if f.suffix in (".png", ".svg"):
            lines += [f"![{f.stem}]({f.name})", ""]
    return "\n".join(lines)


def write_reports(result: SuiteResult) -> list[Path]:
    d = result.out_dir
    d.mkdir(parents=True, exist_ok=True)
    files = []
    if result.spec.plot is not None:
        try:
            files += [Path(p) for p in result.spec.plot(result, d) or []]
        except Exception as err:  # a plot must not lose the tables
            print(f"[{result.name}] plot failed: {err}", file=sys.stderr)
    result.files = files
    payload = {
        "suite": result.name,
        "preset": result.preset,
        "title": result.spec.title,
        "split": result.spec.split,
        "seeds": result.seeds,
        "metrics": result.spec.metrics,
        "seconds": result.seconds,
        "train_seconds_total": result.train_seconds_total,
        "cells": result.cells,
        "baseline_rows": result.baseline_cells,
    }
    _atomic_write(d / "results.json", json.dumps(payload, indent=1, default=_json_default))
    with open(d / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "column", "perturbation", "metric", "mean", "std", "n", "published", "values",
                    "flag_not_better_than_baseline"])
        for c in result.baseline_cells:
            for m in result.spec.metrics:
                w.writerow([c["row"], c["column"], "", m, c["mean"][m], c["std"][m], c["n"][m], "", "[]", ""])
        for c in result.cells:
            for m in result.spec.metrics:
                w.writerow(
                    [
                        c["row"],
                        c["column"],
                        c["perturbation_label"],
                        m,
                        c["mean"][m],
                        c["std"][m],
                        c["n"][m],
                        "" if c["published"][m] is None else c["published"][m],
                        json.dumps(c["values"][m]),
                        int(bool(c.get("flags", {}).get(m))),
                    ]
                )
    (d / "results.md").write_text(markdown(result))
    files = [d / "results.md", d / "results.csv", d / "results.json", *files]
    result.files = files
    return files


# ---------------------------------------------------------------- entry point


def _resolve_seeds(spec: SuiteSpec, seeds) -> list[int]:
    if seeds is None:
        return list(spec.seeds)
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {seeds}")
        base = list(spec.seeds)
        return (
            base[:seeds]
            if seeds <= len(base)
            else base + [max(base, default=-1) + 1 + i for i in range(seeds - len(base))]
        )
    return [int(s) for s in seeds]


def run_suite(
    name: str | SuiteSpec,
    preset: str = "quick",
    seeds: int | Sequence[int] | None = None,
    jobs: int = 1,
    out_dir: str | os.PathLike = "bench_out",
    log: Callable[[str], None] | None = print,
    suite_name: str | None = None,
    launcher: str = "local",
    launcher_options=None,
    fresh: Sequence[str] = (),
) -> SuiteResult:
    """Run (or resume) a suite and write its reports; ``seeds`` is a count or an explicit list. Cells whose row is
    in ``fresh`` run again: their cached records are moved to ``out_dir/cache.stale/`` first (cache keys hold the
    config and seed, not the code, so a code change that alters results needs this)."""
    start = time.perf_counter()
    if isinstance(name, SuiteSpec):
        spec, name = name, suite_name or "custom"
        _validate(name, spec)
    else:
        spec = get_suite(name, preset)
    seed_list = _resolve_seeds(spec, seeds)
    root = Path(out_dir)
    planned = plan_jobs(spec, seed_list, root)
    log = log or (lambda _msg: None)
    if fresh:
        _move_stale(spec, planned, set(fresh), root, log)
    todo = [j for j in planned if _cached(j) is None]
    log(
        f"[{name}] {len(spec.cells)} cells, {len(planned)} training runs ({len(planned) - len(todo)} cached), jobs={jobs}"
    )
    records: dict[tuple[str, int], dict] = {}
    todo_keys = {j.cache_path for j in todo}
    for j in planned:
        if j.cache_path not in todo_keys:
            records[(config_hash(j.config), j.seed)] = run_job(j)

    # cells built from other runs (config "members": an ensemble) go in a second wave, after their members'
    # runs, which join the first wave; so parallel workers never train one member folder twice
    members = {}
    for j in todo:
        for member in j.config.get("members", ()):
            mj = member_job(member, j.seed, j.split, root)
            if mj.cache_path not in todo_keys and _cached(mj) is None:
                members[mj.cache_path] = mj
    first = list(members.values()) + [j for j in todo if "members" not in j.config]
    second = [j for j in todo if "members" in j.config]
    total = len(first) + len(second)
    counter = iter(range(1, total + 1))

    def done(job: Job, record: dict, i: int) -> None:
        records[(config_hash(job.config), job.seed)] = record
        status = (
            record["status"] if record["status"] != "ok" else f"ok in {record.get('train_seconds', 0):.1f}s"
        )
        log(f"[{name}] {i}/{total} {_job_label(job.config)} seed={job.seed}: {status}")
        if record["status"] != "ok":
            log(record.get("traceback", record.get("error", "")))

    for wave in (first, second):
        _execute(wave, jobs, launcher, root, launcher_options, log, lambda job, record: done(job, record, next(counter)))

    cells = aggregate(spec, records, seed_list)
    result = SuiteResult(
        name, preset, spec, seed_list, cells, root / suite_dir_name(name, preset), seconds=time.perf_counter() - start
    )
    result.baseline_cells = baseline_rows(cells, spec.metrics)
    result.train_seconds_total = sum(
        float(r.get("train_seconds", 0.0)) for r in records.values() if r.get("status") == "ok"
    )
    write_reports(result)
    log(f"[{name}] wrote {result.out_dir / 'results.md'} in {result.seconds:.1f}s")
    return result


def member_job(config: dict, seed: int, split: str, root: Path) -> Job:
    """The job of one ensemble member: the same cache record and run folder as a suite cell of that config."""
    key = config_hash(config, seed)
    return Job(config, seed, {"clean": None}, split, str(root / "cache" / f"{key}.json"), str(root / "runs" / key))


def _move_stale(spec: SuiteSpec, planned: list[Job], rows: set[str], root: Path, log) -> None:
    unknown = rows - {c.row for c in spec.cells}
    if unknown:
        raise ValueError(f"--fresh: no row named {sorted(unknown)}; rows: {', '.join(dict.fromkeys(c.row for c in spec.cells))}")
    hashes = {config_hash(c.config) for c in spec.cells if c.row in rows}
    stale = root / "cache.stale"
    moved = 0
    for job in planned:
        path = Path(job.cache_path)
        if config_hash(job.config) in hashes and path.exists():
            stale.mkdir(parents=True, exist_ok=True)
            target = stale / path.name
            k = 1
            while target.exists():  # an earlier stale copy of the same cell stays too
                target, k = stale / f"{path.stem}.{k}{path.suffix}", k + 1
            path.replace(target)
            moved += 1
    log(f"--fresh: {moved} cached record(s) of {len(hashes)} cell config(s) moved to {stale}")


def _job_label(config: dict) -> str:
    if "members" in config:
        return f"ensemble ({config.get('rule', '?')}, {len(config['members'])} members)"
    return str(config.get("model") or config.get("mmsa_model") or config.get("runner", "?"))


def _execute(todo: list[Job], jobs: int, launcher: str, root: Path, launcher_options, log, done) -> None:
    """Run ``todo`` locally (sequentially or in ``jobs`` processes) or through a submitit launcher."""
    if not todo:
        return
    if launcher != "local":  # submitit (local subprocesses or a SLURM array): see launchers.py
        from emofusion.evaluation.launchers import launch

        for job, record in launch(todo, launcher, root, launcher_options, log):
            done(job, record)
    elif jobs > 1 and len(todo) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(
            max_workers=jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init
        ) as pool:
            futures = {pool.submit(run_job, j): j for j in todo}
            for fut in as_completed(futures):
                job = futures[fut]
                try:
                    record = fut.result()
                except Exception as err:  # a crashed worker process
                    record = {"status": "error", "error": f"{type(err).__name__}: {err}"}
                done(job, record)
    else:
        for job in todo:
            done(job, run_job(job))


def suite_dir_name(name: str, preset: str) -> str:
    """``OUT/<suite>`` for the quick preset, ``OUT/<suite>.<preset>`` otherwise, so both can be reported."""
    return name if preset == "quick" else f"{name}.{preset}"


def _worker_init() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
