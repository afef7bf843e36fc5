"""Paper 004 (MMAN): Table 2 (accuracy + parameters), Table 3 (per-emotion binary accuracy), Fig. 3 (confusion).

``emofusion benchmark paper004-table2`` trains the single-stage rows (cLSTM-Speech/-Visual/-Text, cLSTM-EF,
cLSTM-MMA) as ordinary suite cells, then (in the suite's report hook) the staged rows: cLSTM-LF and MMAN
have their fusion layer trained on top of the frozen sub-networks of the SAME seed, i.e. the very runs of
the cLSTM-MMA and unimodal rows (paper 004 §2.2: sub-networks trained separately, then frozen). It writes
``OUT/paper004-table2/paper004_tables.md`` (Tables 2 and 3, mean ± std over seeds, the paper's numbers
beside), ``paper004_results.json`` and ``confusion_<row>.png`` (Fig. 3: row-normalised test confusion
matrices averaged over seeds). Matched settings: every cLSTM has the same hidden size, dense layer,
dropout, optimiser and schedule; cLSTM-MMA's ``d_model`` is its own (the paper does not give it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from emofusion.evaluation.suite import Cell, Job, SuiteSpec, config_hash, register_suite, run_job

CLASSES = ("angry", "happy", "sad", "neutral")
MODALITIES = ("audio", "visual", "text")
PRESETS = {
    "quick": {"data": {"n_train": 120, "n_val": 30, "n_test": 40}, "max_epochs": 25, "patience": 6},
    "full": {"data": {"n_train": 400, "n_val": 100, "n_test": 150}, "max_epochs": 60, "patience": 10},
}
# the fusion stage trains a small layer on fixed inputs: at the sub-networks' lr (1e-3) and epochs it was
# still improving when stopped (quick preset, MMAN val accuracy rising at epoch 25), hence its own schedule
FUSION_STAGE = {"lr": 1e-2, "max_epochs": 40, "patience": 8}
MATCHED = {"hidden_dim": 64, "dense_dim": 64, "dropout": 0.2, "bidirectional": False}
MMA_OPTIONS = {**MATCHED, "d_model": 32}
LF_FUSION = {"hidden_dim": 32}
STAGED = {"cLSTM-LF": "clstm_lf", "MMAN": "mman"}
ABLATION = "cLSTM-MMA w/o attention (ablation)"
ROW_ORDER = [
    "cLSTM-Speech",
    "cLSTM-Visual",
    "cLSTM-Text",
    "cLSTM-EF",
    "cLSTM-LF",
    "cLSTM-MMA",
    ABLATION,
    "MMAN",
]
# paper 004, Table 2 (accuracy %, parameters in millions) and Table 3 (binary accuracy %), IEMOCAP
PUBLISHED_T2 = {
    "cLSTM-Speech": (57.12, 1.27),
    "cLSTM-EF": (69.75, 2.00),
    "cLSTM-LF": (71.78, 4.73),
    "cLSTM-MMA": (71.66, 1.27),
    "MMAN": (73.94, 4.39),
}
PUBLISHED_T3 = {
    "cLSTM-MMA": {"happy": 92.15, "sad": 82.93, "neutral": 76.99, "angry": 93.32},
    "MMAN": {"happy": 92.68, "sad": 83.14, "neutral": 75.61, "angry": 92.90},
}
METRICS = ["accuracy", "f1_weighted"] + [f"acc_{c}_binary" for c in CLASSES]


def _base(preset: str) -> dict:
    if preset not in PRESETS:
        raise ValueError(f"paper004: unknown preset {preset!r}; expected {sorted(PRESETS)}")
    p = PRESETS[preset]
    return {
        "dataset": "synthetic-conv",
        "dataset_options": dict(p["data"]),
        "max_epochs": p["max_epochs"],
        "patience": p["patience"],
        "batch_size": 16,
        "lr": 1e-3,
    }


def staged_options(model: str) -> dict:
    if model == "mman":
        return {"mma": dict(MMA_OPTIONS), "unimodal": dict(MATCHED)}
    return {"unimodal": dict(MATCHED), **LF_FUSION}


def single_stage_configs(preset: str) -> dict[str, dict]:
    """The rows trained as ordinary runs; their configs are exactly the staged models' sub-networks."""
    from emofusion.models.mman import subnetwork_specs

    base = _base(preset)
    specs = subnetwork_specs("mman", MODALITIES, staged_options("mman"))
    names = {"mma": "cLSTM-MMA", "audio": "cLSTM-Speech", "visual": "cLSTM-Visual", "text": "cLSTM-Text"}
    rows = {names[k]: {**base, "model": m, "model_options": o} for k, (m, o) in specs.items()}
    rows["cLSTM-EF"] = {**base, "model": "clstm_ef", "model_options": dict(MATCHED)}
    # ablation (not in the paper): cLSTM-MMA without the attention modules (standardised embeddings concatenated)
    rows[ABLATION] = {**base, "model": "clstm_mma", "model_options": {**MMA_OPTIONS, "attention": False}}
    return rows


def staged_config(preset: str, row: str, seed: int, root: Path) -> dict:
    """The fusion-stage config of ``row`` for ``seed``: sub-networks = the suite's runs of the same seed."""
    from emofusion.models.mman import subnetwork_specs

    base = _base(preset)
    model = STAGED[row]
    options = staged_options(model)
    pretrained = {}
    for name, (m, o) in subnetwork_specs(model, MODALITIES, options).items():
        sub = {**base, "model": m, "model_options": o}
        pretrained[name] = str(root / "runs" / config_hash(sub, seed))
    return {
        **base,
        **FUSION_STAGE,
        "model": model,
        "model_options": {**options, "stage": "fusion", "pretrained": pretrained},
    }


def parameter_count(config: dict) -> int:
    """All parameters of the deployed model (frozen sub-networks included), as the paper counts them."""
    from emofusion.data import load_dataset
    from emofusion.models import create_model

    bundle = load_dataset(
        config["dataset"], **{**config["dataset_options"], "n_train": 1, "n_val": 1, "n_test": 1}
    )
    options = {k: v for k, v in config["model_options"].items() if k not in ("stage", "pretrained")}
    return create_model(config["model"], bundle.modality_dims, bundle.task, **options).num_parameters(False)


@register_suite(
    "paper004-table2", "MMAN paper: Table 2 accuracy + parameters, Table 3 binary, Fig. 3 confusion"
)
def build(preset: str) -> SuiteSpec:
    cells = [
        Cell(row=row, column="synthetic-conv", config=cfg)
        for row, cfg in single_stage_configs(preset).items()
    ]
    published = {
        (r, "synthetic-conv", "accuracy"): v[0] / 100
        for r, v in PUBLISHED_T2.items()
        if r in dict.fromkeys(single_stage_configs(preset))
    }
    return SuiteSpec(
        cells=cells,
        metrics=METRICS,
        seeds=[0, 1, 2],
        published=published,
        title="Paper 004 (MMAN), Table 2/3 structure on synthetic-conv",
        description="single-stage rows; the staged rows (cLSTM-LF, MMAN), tables and Fig. 3 are in paper004_tables.md",
        plot=lambda result, out: staged_rows_and_report(result, out),
    )


def _mean_std(values):
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def _confusion(run_dir: str) -> np.ndarray:
    from emofusion.evaluation.metrics import confusion
    from emofusion.training.run import bundle_for_module, evaluate_split, load_module

    module = load_module(run_dir)
    bundle, _ = bundle_for_module(module)
    _, out = evaluate_split(module, bundle, "test", return_predictions=True)
    return confusion(out["predictions"], out["labels"], len(CLASSES), normalize="true")


def staged_rows_and_report(result, out_dir: Path) -> list[Path]:
    """Train the staged rows per seed (cached like suite runs), then write Tables 2-3 and Fig. 3."""
    root = Path(result.out_dir).parent
    seeds = list(result.seeds)
    rows: dict[str, dict] = {}
    run_dirs: dict[str, list[str]] = {}
    configs = single_stage_configs(result.preset)
    for row, cfg in configs.items():
        cell = result.get(row, "synthetic-conv")
        rows[row] = {m: cell["values"].get(m, []) for m in METRICS}
        run_dirs[row] = [str(root / "runs" / config_hash(cfg, s)) for s in seeds]
    for row in STAGED:
        values = {m: [] for m in METRICS}
        run_dirs[row] = []
        for seed in seeds:
            cfg = staged_config(result.preset, row, seed, root)
            key = config_hash(cfg, seed)
            job = Job(
                cfg,
                seed,
                {"clean": None},
                "test",
                str(root / "cache" / f"{key}.json"),
                str(root / "runs" / key),
            )
            record = run_job(job)
            if record.get("status") != "ok":
                print(f"[paper004] {row} seed {seed} failed: {record.get('error')}")
                continue
            metrics = record.get("metrics", {}).get("test", {})
            for m in METRICS:
                values[m].append(metrics.get(m, float("nan")))
            run_dirs[row].append(job.run_dir)
        rows[row] = values
        configs[row] = staged_config(result.preset, row, seeds[0], root)
    params = {row: parameter_count(cfg) for row, cfg in configs.items()}

    lines = [
        f"# Paper 004 on synthetic-conv (preset {result.preset}, seeds {seeds}; mean ± std over seeds)",
        "",
        "## Table 2: accuracy and parameters",
        "",
        "| model | accuracy (%) | weighted F1 (%) | parameters (M) | paper accuracy (%) | paper parameters (M) |",
        "|---|---|---|---|---|---|",
    ]
    summary = {}
    for row in ROW_ORDER:
        if row not in rows:
            continue
        acc = _mean_std(rows[row]["accuracy"])
        f1 = _mean_std(rows[row]["f1_weighted"])
        pub = PUBLISHED_T2.get(row, ("", ""))
        n = len([v for v in rows[row]["accuracy"] if np.isfinite(v)])
        lines.append(
            f"| {row} | {100 * acc[0]:.2f} ± {100 * acc[1]:.2f} (n={n}) | {100 * f1[0]:.2f} ± {100 * f1[1]:.2f} "
            f"| {params[row] / 1e6:.4f} | {pub[0]} | {pub[1]} |"
        )
        summary[row] = {"values": rows[row], "parameters": params[row], "run_dirs": run_dirs[row]}
    lines += [
        "",
        "## Table 3: per-emotion binary (one-vs-rest) accuracy (%)",
        "",
        "| model | happy | sad | neutral | angry |",
        "|---|---|---|---|---|",
    ]
    for row in ROW_ORDER:
        if row not in rows:
            continue
        cells = []
        for c in ("happy", "sad", "neutral", "angry"):
            mean, std = _mean_std(rows[row][f"acc_{c}_binary"])
            pub = PUBLISHED_T3.get(row, {}).get(c)
            cells.append(f"{100 * mean:.2f} ± {100 * std:.2f}" + (f" (paper {pub})" if pub else ""))
        lines.append(f"| {row} | " + " | ".join(cells) + " |")

    files = []
    confusions = {}
    for row in ("cLSTM-Speech", "cLSTM-MMA", "MMAN"):
        mats = []
        for d in run_dirs.get(row, []):
            try:
                mats.append(_confusion(d))
            except Exception as err:  # a missing run must not lose the tables
                print(f"[paper004] confusion of {row} ({d}) failed: {err}")
        if mats:
            confusions[row] = np.mean(mats, axis=0)
            files.append(_plot_confusion(confusions[row], row, len(mats), Path(out_dir)))
    if confusions:
        lines += ["", "## Fig. 3: row-normalised test confusion matrices (%), mean over seeds", ""]
        for row, mat in confusions.items():
            lines += [f"**{row}** (rows: true, columns: predicted; order {', '.join(CLASSES)})", ""]
            lines += ["| true \\ pred | " + " | ".join(CLASSES) + " |", "|---" * (len(CLASSES) + 1) + "|"]
            for i, c in enumerate(CLASSES):
                lines.append(f"| {c} | " + " | ".join(f"{100 * v:.1f}" for v in mat[i]) + " |")
            lines.append("")
            summary.setdefault(row, {})["confusion"] = mat.tolist()
    out_dir = Path(out_dir)
    md = out_dir / "paper004_tables.md"
    md.write_text("\n".join(lines) + "\n")
    js = out_dir / "paper004_results.json"
    js.write_text(json.dumps(summary, indent=1, default=float))
    print("\n".join(lines))
    return [md, js, *files]


def _plot_confusion(mat: np.ndarray, row: str, n: int, out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(mat, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(CLASSES)), CLASSES)
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set_xlabel("Predicted labels")
    ax.set_ylabel("True labels")
    for i in range(len(CLASSES)):
        for j in range(len(CLASSES)):
            ax.text(
                j,
                i,
                f"{100 * mat[i, j]:.1f}",
                ha="center",
                va="center",
                color="white" if mat[i, j] > 0.5 else "black",
            )
    ax.set_title(f"{row} (mean of {n} seeds)")
    fig.tight_layout()
    path = out_dir / f"confusion_{row}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
