"""Saved plots of a run: learning curves and per-task error views."""

from __future__ import annotations

import csv
import importlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from emofusion.evaluation.metrics import confusion  # noqa: E402


def _read_csv_log(path: Path) -> dict[str, list[tuple[float, float]]]:
    """metrics.csv -> {column: [(optimiser step, value), ...]} (validation runs every N steps, not per epoch)."""
    series: dict[str, list[tuple[float, float]]] = {}
    if not path.exists():
        return series
    with open(path) as f:
        for row in csv.DictReader(f):
            step = row.get("step")
            if step in (None, ""):
                continue
            for key, value in row.items():
                if key in ("epoch", "step") or value in (None, ""):
                    continue
                series.setdefault(key, []).append((float(step), float(value)))
    return series


def plot_learning_curves(run_dir: Path, monitor: str) -> Path | None:
    series = _read_csv_log(Path(run_dir) / "metrics.csv")
    keys = [k for k in ("train/loss_epoch", "val/loss", f"val/{monitor}") if k in series]
    if not keys:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for k in keys[:2]:
        xs, ys = zip(*series[k])
        axes[0].plot(xs, ys, marker="o", label=k)
    axes[0].set(xlabel="optimiser step", ylabel="loss", title="loss")
    axes[0].legend()
    if f"val/{monitor}" in series:
        xs, ys = zip(*series[f"val/{monitor}"])
        axes[1].plot(xs, ys, marker="o", color="C2")
        axes[1].set(xlabel="optimiser step", ylabel=monitor, title=f"validation {monitor} (selects the checkpoint)")
    fig.tight_layout()
    out = Path(run_dir) / "plots" / "learning_curves.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_per_output_errors(names, metrics: dict, out: Path, prefix: str = "mae_") -> Path:
    values = [metrics.get(f"{prefix}{n}", np.nan) for n in names]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(names, values, color="C0")
    ax.set(ylabel=prefix.rstrip("_").upper(), title="test error per output")
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_confusion(matrix: np.ndarray, names, out: Path, title: str = "normalised confusion matrix") -> Path:
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 2, 1.0 * len(names) + 1.5))
    im = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1 if matrix.max() <= 1 else None)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_scatter(pred: np.ndarray, true: np.ndarray, out: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(true.ravel(), pred.ravel(), s=6, alpha=0.5)
    lo, hi = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set(xlabel="true", ylabel="predicted", title=title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_run(run_dir: Path, module, bundle, config) -> list[Path]:
    """The run's figures in ``run_dir/plots``: learning curves, the task's error view of the test split, and
    whatever the model declares in its ``extra_plots`` ("package.module:function" names called as
    ``function(module, bundle, plots_dir) -> list of paths``; e.g. RMFN's HIGHLIGHT weights)."""
    from emofusion.training.run import evaluate_split  # evaluation -> training: the allowed direction

    run_dir = Path(run_dir)
    plots = run_dir / "plots"
    made = []
    curve = plot_learning_curves(run_dir, module.task.monitor)
    if curve:
        made.append(curve)
    metrics, out = evaluate_split(module, bundle, "test", config=config, return_predictions=True)
    task = module.task
    if task.kind in ("emotion_intensity", "multi_regression"):
        made.append(plot_per_output_errors(task.output_names, metrics, plots / "test_error_per_output.png"))
    elif task.kind == "classification":
        cm = confusion(out["predictions"], out["labels"], len(task.output_names), normalize="true")
        made.append(plot_confusion(cm, task.output_names, plots / "test_confusion.png"))
    elif task.kind == "sentiment":
        made.append(plot_scatter(out["predictions"], out["labels"], plots / "test_scatter.png", "test sentiment"))
    elif task.kind == "multilabel_binary":
        made.append(plot_per_output_errors(task.output_names, metrics, plots / "test_acc_per_output.png", "acc_"))
    for ref in getattr(module.model, "extra_plots", ()):
        made += _resolve(ref)(module, bundle, plots)
    return made


def _resolve(ref: str):
    module_name, _, attr = ref.partition(":")
    if not attr:
        raise ValueError(f"extra_plots entry {ref!r} must be 'package.module:function'")
    return getattr(importlib.import_module(module_name), attr)
