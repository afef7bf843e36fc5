"""The modality grid (paper 003, Tables 2-5): every non-empty modality subset x model x seeds.

For a dataset with modalities {text, audio, visual} the rows are T, A, V, T+A, T+V, A+V, T+A+V; the columns
are the models (any registered model: a model is run on a subset only if it can be built for it, so a
model that needs all modalities just fills its own rows). Each cell is one training config for the
benchmark-suite runner (cached, resumable, mean ± std over seeds). Printed: one table of the task's main
metric per cell (overall MAE, as Tables 2-4) and, for the best cell, the per-output table of Table 5
(MAE, binary accuracy, 4-class accuracy, Pearson r per emotion).

    emofusion grid --models ef_lstm,ef_blstm,ef_cnn --dataset synthetic:aligned --preset quick --seeds 1
"""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path

from emofusion.evaluation.suite import Cell, SuiteResult, SuiteSpec, config_hash, run_suite

ABBREV = {"text": "T", "audio": "A", "visual": "V", "video": "V"}
PAPER_ORDER = ("text", "audio", "visual", "video")

# preset -> training settings; paper 003 §4.4: Adam (default lr), batch 64, early stopping patience 10, MAE loss
PRESETS = {
    # quick: the default step budget (docs/training.md) with the paper's stopping rule, on smaller data
    "quick": {"patience_epochs": 10, "batch_size": 64, "lr": 1e-3},
    "full": {"max_epochs": 100, "patience_epochs": 10, "batch_size": 64, "lr": 1e-3},
}
# small synthetic sizes for the quick preset (other datasets keep their own sizes)
QUICK_SYNTHETIC = {"n_train": 400, "n_val": 100, "n_test": 200}


def modality_label(mods) -> str:
    return "+".join(ABBREV.get(m, m) for m in mods)


def modality_subsets(modalities) -> list[tuple[str, ...]]:
    """Non-empty subsets, by size, each in the paper's order (T, A, V, T+A, T+V, A+V, T+A+V)."""
    ordered = sorted(modalities, key=lambda m: (PAPER_ORDER.index(m) if m in PAPER_ORDER else 99, m))
    return [c for k in range(1, len(ordered) + 1) for c in itertools.combinations(ordered, k)]


def task_metrics(task) -> tuple[str, list[str], list[str]]:
    """(main metric, table metrics, per-output metric prefixes) for a task kind."""
    if task.kind == "emotion_intensity":
        return "mae", ["mae", "acc2", "acc4", "pearson_r"], ["mae_", "acc2_", "acc4_", "r_"]
    if task.kind in ("sentiment", "multi_regression"):
        return "mae", ["mae", "pearson_r", "acc2_non0", "f1_non0", "acc2_has0", "f1_has0"], []
    if task.kind == "classification":
        return "accuracy", ["accuracy", "f1_macro", "f1_weighted"], ["recall_"]
    return task.monitor, [task.monitor], []


def _supports(model: str, dims: dict[str, int], task, options: dict) -> str | None:
    """None if ``model`` can be built for these modalities, else the reason it cannot."""
    from emofusion.models import MODELS, create_model

    factory = MODELS.get(model)
    if len(dims) < getattr(factory, "min_modalities", 1):
        return f"needs at least {factory.min_modalities} modalities"
    try:
        create_model(model, dims, task, **options)
    except Exception as err:  # the model's own message says why
        return f"{type(err).__name__}: {err}"
    return None


def _dataset_options(dataset: str, preset: str, options: dict | None) -> dict:
    out = dict(QUICK_SYNTHETIC) if preset == "quick" and dataset.split(":")[0] == "synthetic" else {}
    out.update(options or {})
    return out


def grid_spec(
    models,
    dataset: str,
    preset: str = "quick",
    dataset_options: dict | None = None,
    overrides: dict | None = None,
    model_options: dict | None = None,
    subsets=None,
    include_random: bool = False,
    seeds=None,
    published: dict | None = None,
    title: str = "",
    description: str = "",
) -> SuiteSpec:
    """The grid as a :class:`SuiteSpec`. ``model_options``: per model name -> options (or shared options under
    ``"*"``); ``overrides``: RunConfig fields for every cell; ``subsets``: restrict the rows (lists of names).

    Datasets named ``wordslots:...`` get ``modalities`` passed to the loader too, so the word slots are
    the union over the row's modalities (a unimodal row never sees another modality's slots)."""
    from emofusion.data import load_dataset

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; use one of {sorted(PRESETS)}")
    models = [m.strip() for m in (models.split(",") if isinstance(models, str) else models) if m.strip()]
    if not models:
        raise ValueError("grid needs at least one model")
    data_opts = _dataset_options(dataset, preset, dataset_options)
    bundle = load_dataset(dataset, **data_opts)
    main, table_metrics, prefixes = task_metrics(bundle.task)
    names = list(bundle.task.output_names)
    metrics = table_metrics + [p + n for p in prefixes for n in names]
    rows = [tuple(s) for s in subsets] if subsets else modality_subsets(bundle.modalities)
    for s in rows:
        unknown = [m for m in s if m not in bundle.modality_dims]
        if unknown:
            raise ValueError(f"dataset {dataset!r} has no modality {unknown}; it has {bundle.modalities}")
    base = {**PRESETS[preset], **(overrides or {})}
    model_options = model_options or {}
    cells, skipped = [], []
    for mods in rows:
        dims = {m: bundle.modality_dims[m] for m in mods}
        opts_data = dict(data_opts)
        if dataset.startswith("wordslots:"):
            opts_data["modalities"] = ",".join(mods)
        for model in models:
            opts = {**model_options.get("*", {}), **model_options.get(model, {})}
            reason = _supports(model, dims, bundle.task, opts)
            if reason:
                skipped.append(f"{model} on {modality_label(mods)}: {reason}")
                continue
            config = {
                **base,
                "model": model,
                "dataset": dataset,
                "modalities": list(mods),
                "model_options": opts,
                "dataset_options": opts_data,
            }
            cells.append(
                Cell(row=modality_label(mods), column=model, config=config, meta={"modalities": list(mods)})
            )
    if include_random:
        random_cfg = {
            **base,
            "max_epochs": 1,
            "model": "random_baseline",
            "dataset": dataset,
            "modalities": list(bundle.modalities),
            "model_options": {"seed": 0},
            "dataset_options": data_opts,
        }
        cells.append(Cell(row="random (§5.1)", column="random_baseline", config=random_cfg))
    if not cells:
        raise ValueError("no grid cell can be built: " + "; ".join(skipped))
    note = ("Skipped: " + "; ".join(skipped)) if skipped else ""
    return SuiteSpec(
        cells=cells,
        metrics=metrics,
        seeds=list(seeds) if seeds is not None else ([0] if preset == "quick" else [0, 1, 2]),
        published=published or {},
        title=title or f"Modality grid on {dataset}",
        description="\n\n".join(x for x in (description, note) if x),
        plot=plot_best_cell,
        lower_is_better=("mae", "mse", "mae_sum", "mse_sum", *(f"mae_{n}" for n in names)),
    )


# ----------------------------------------------------------------------------------------- reporting


def _fmt(mean: float, std: float, n: int, percent: bool = False) -> str:
    if mean is None or not math.isfinite(mean):
        return "n/a"
    k = 100.0 if percent else 1.0
    digits = 1 if percent else 3
    text = f"{mean * k:.{digits}f}"
    return text + (f" ± {std * k:.{digits}f}" if n > 1 else "")


def main_metric(result: SuiteResult) -> tuple[str, bool]:
    metric = result.spec.metrics[0]
    return metric, metric in result.spec.lower_is_better


def best_cell(result: SuiteResult) -> dict | None:
    metric, lower = main_metric(result)
    scored = [
        c
        for c in result.cells
        if c["column"] != "random_baseline" and math.isfinite(c["mean"].get(metric, math.nan))
    ]
    if not scored:
        return None
    return (min if lower else max)(scored, key=lambda c: c["mean"][metric])


def grid_tables(result: SuiteResult) -> str:
    """Markdown: the main metric per (modality subset x model) (Tables 2-4), every table metric per cell,
    and the per-output table (Table 5) of the best cell."""
    metric, _ = main_metric(result)
    spec = result.spec
    table_metrics = [m for m in spec.metrics if "_" not in m or m in ("pearson_r", "f1_macro", "f1_weighted")]
    rows = list(dict.fromkeys(c["row"] for c in result.cells))
    cols = list(dict.fromkeys(c["column"] for c in result.cells))
    by = {(c["row"], c["column"]): c for c in result.cells}
    lines = [f"### {spec.title}", "", f"Overall {metric} per cell (test split, seeds {result.seeds}):", ""]
    lines += ["| modalities | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    flagged = []
    for r in rows:
        vals = []
        for col in cols:
            c = by.get((r, col))
            text = "" if c is None else _fmt(c["mean"][metric], c["std"][metric], c["n"][metric])
            if c is not None and c.get("flags", {}).get(metric):
                text += " †"
                flagged.append(f"{r} / {col}")
            pub = None if c is None else c["published"].get(metric)
            if pub is not None:
                text += f" [{pub:.3f}]"
            vals.append(text)
        lines.append(f"| {r} | " + " | ".join(vals) + " |")
    # the closed-form trivial baselines of the same split (docs/metrics.md), one row each
    base_by = {(b["row"], b["column"]): b for b in (result.baseline_cells or [])}
    for name in dict.fromkeys(b["row"] for b in (result.baseline_cells or [])):
        vals = []
        for col in cols:
            b = base_by.get((name, col))
            vals.append("" if b is None else _fmt(b["mean"].get(metric), 0.0, 1))
        lines.append(f"| *{name}* | " + " | ".join(vals) + " |")
    if flagged:
        lines += ["", f"† not better than the best trivial baseline on {metric}: " + ", ".join(flagged) + "."]
    lines += ["", "All table metrics (Tables 2-4 layout: modality, DNN):", ""]
    lines += [
        "| modalities | model | " + " | ".join(table_metrics) + " |",
        "|---" * (len(table_metrics) + 2) + "|",
    ]
    for c in result.cells:
        vals = [_fmt(c["mean"][m], c["std"][m], c["n"][m]) for m in table_metrics]
        lines.append(f"| {c['row']} | {c['column']} | " + " | ".join(vals) + " |")
    best = best_cell(result)
    prefixes = [
        p for p in ("mae_", "acc2_", "acc4_", "r_", "recall_") if any(m.startswith(p) for m in spec.metrics)
    ]
    if best is not None and prefixes:
        names = list(dict.fromkeys(m[len(p) :] for p in prefixes for m in spec.metrics if m.startswith(p)))
        head = {
            "mae_": "MAE",
            "acc2_": "binary acc (%)",
            "acc4_": "4-class acc (%)",
            "r_": "Pearson r",
            "recall_": "recall",
        }
        lines += ["", f"Per output, best cell ({best['row']}, {best['column']}) - Table 5 layout:", ""]
        lines += [
            "| output | " + " | ".join(head[p] for p in prefixes) + " |",
            "|---" * (len(prefixes) + 1) + "|",
        ]
        for n in names:
            vals = []
            for p in prefixes:
                m = p + n
                vals.append(
                    _fmt(best["mean"].get(m), best["std"].get(m, 0), best["n"].get(m, 0), p.startswith("acc"))
                )
            lines.append(f"| {n} | " + " | ".join(vals) + " |")
        overall = {"mae_": "mae", "acc2_": "acc2", "acc4_": "acc4", "r_": "pearson_r"}
        if all(overall.get(p) in best["mean"] for p in prefixes):
            vals = [
                _fmt(
                    best["mean"][overall[p]],
                    best["std"][overall[p]],
                    best["n"][overall[p]],
                    p.startswith("acc"),
                )
                for p in prefixes
            ]
            lines.append("| overall | " + " | ".join(vals) + " |")
    errors = [(c["row"], c["column"], e) for c in result.cells for e in c["errors"]]
    if errors:
        lines += ["", "Failed runs:"] + [f"- {r} / {col}: {e}" for r, col, e in errors[:20]]
    if spec.description:
        lines += ["", spec.description]
    return "\n".join(lines)


def run_dir_of(result: SuiteResult, cell: dict, seed: int) -> Path:
    """Where the suite runner trained ``cell`` for ``seed`` (OUT/runs/<hash of config + seed>)."""
    return result.out_dir.parent / "runs" / config_hash(cell["config"], seed)


def plot_best_cell(result: SuiteResult, out_dir: Path) -> list[Path]:
    """Writes OUT/grid.md and draws Fig. 2 for the best cell's first seed (predicted-intensity distribution
    per output, test split)."""
    from emofusion.evaluation.intensity_plots import plot_run_intensities

    # the Tables 2-5 layout beside the suite's per-metric tables (``emofusion benchmark`` runs land here too)
    (Path(out_dir) / "grid.md").write_text(grid_tables(result) + "\n")
    best = best_cell(result)
    if best is None:
        return []
    run_dir = run_dir_of(result, best, result.seeds[0])
    if not run_dir.exists():
        return []
    title = f"{best['row']} {best['column']} (seed {result.seeds[0]})"
    return [plot_run_intensities(run_dir, Path(out_dir) / "fig2_intensity_distribution.png", title=title)]


def run_grid(
    models,
    dataset: str,
    preset: str = "quick",
    seeds=None,
    jobs: int = 1,
    out_dir: str | Path = "bench_out",
    overrides: list[str] | None = None,
    subsets=None,
    include_random: bool = False,
    log=print,
) -> tuple[SuiteResult, str]:
    """Build, run and report the grid. ``overrides``: ``key=value`` as for ``emofusion train``."""
    from emofusion.training.config import apply_overrides

    parsed = apply_overrides({}, overrides or [])
    model_opts = {"*": parsed.pop("model_options", {})}
    data_opts = parsed.pop("dataset_options", {})
    spec = grid_spec(
        models,
        dataset,
        preset,
        data_opts,
        parsed,
        model_opts,
        subsets,
        include_random,
        seeds=range(seeds) if isinstance(seeds, int) else seeds,
    )
    safe = dataset.replace(":", "_").replace("/", "_").replace(".", "")
    name = f"grid-{safe}-{preset}"
    start = time.perf_counter()
    result = run_suite(spec, preset=preset, seeds=None, jobs=jobs, out_dir=out_dir, log=log, suite_name=name)
    text = grid_tables(result) + f"\n\nWall time: {time.perf_counter() - start:.1f} s ({jobs} job(s))."
    return result, text


# ----------------------------------------------------------------------------------------- command line


def register_cli(sub) -> None:
    p = sub.add_parser(
        "grid",
        help="train every modality subset x model x seed and print the grid (paper 003 Tables 2-5)",
        description="Train every non-empty modality subset (T, A, V, T+A, T+V, A+V, T+A+V) for each model "
        "and seed, print the main metric per cell, all table metrics, and the per-output table of the best "
        "cell; draw the predicted-intensity distribution (paper 003 Fig. 2). Runs are cached in OUT/.",
        epilog="Overrides: key=value for config fields (max_epochs=20 lr=1e-3), model.OPTION=value for every "
        "model (model.maxlen=25), data.OPTION=value for the dataset (data.n_train=400).",
    )
    p.add_argument(
        "--models", required=True, help="comma-separated registered models, e.g. ef_lstm,ef_blstm,ef_cnn"
    )
    p.add_argument(
        "--dataset", required=True, help="dataset name, e.g. synthetic:aligned, wordslots:mfn:PATH"
    )
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default: 1 quick, 3 full)")
    p.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    p.add_argument("--jobs", type=int, default=1, help="parallel training processes")
    p.add_argument("--out", default="bench_out", help="output folder (cache, runs, tables)")
    p.add_argument(
        "--modalities", help="restrict the rows: subsets separated by ';', e.g. 'audio;visual;audio,visual'"
    )
    p.add_argument(
        "--random-baseline", action="store_true", help="add paper 003's random baseline (§5.1) row"
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    p.set_defaults(func=cmd_grid)


def cmd_grid(args) -> int:
    subsets = None
    if args.modalities:
        subsets = [
            [m.strip() for m in part.split(",") if m.strip()]
            for part in args.modalities.split(";")
            if part.strip()
        ]
    _, text = run_grid(
        args.models,
        args.dataset,
        args.preset,
        args.seeds,
        args.jobs,
        args.out,
        args.overrides,
        subsets,
        args.random_baseline,
    )
    print(text)
    return 0
