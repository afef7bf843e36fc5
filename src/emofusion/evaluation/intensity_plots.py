"""Paper 003 Fig. 2: the distribution of predicted intensities for each emotion.

One histogram per output (overlaid step histograms, count vs regression output, as in the paper), and beside
it the same for the true labels so the reader sees how far the predictions are from the label distribution.
For classification tasks the per-class softmax probabilities are drawn instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_intensity_distribution(
    predictions: np.ndarray,
    names,
    out: str | Path,
    labels: np.ndarray | None = None,
    title: str = "",
    bins: int = 40,
    log_counts: bool = False,
    xlabel: str = "Regression Output",
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred = np.asarray(predictions, np.float64)
    if pred.ndim == 1:
        pred = pred[:, None]
    names = list(names)
    if pred.shape[1] != len(names):
        raise ValueError(f"predictions have {pred.shape[1]} outputs but {len(names)} names were given")
    panels = [("predicted", pred)]
    if labels is not None:
        true = np.asarray(labels, np.float64)
        panels.append(("true", true[:, None] if true.ndim == 1 else true))
    # each panel on its own range: predictions often crowd a small part of [0, 3] (the paper's Fig. 2)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (what, values) in zip(axes[0], panels):
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        edges = np.linspace(low, high if high > low else low + 1e-3, bins + 1)
        for j, name in enumerate(names):
            ax.hist(values[:, j], bins=edges, histtype="step", linewidth=1.5, label=name, log=log_counts)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Count")
        ax.set_title(f"{what} intensities")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_run_intensities(
    run_dir: str | Path, out: str | Path | None = None, split: str = "test", title: str = ""
) -> Path:
    """Fig. 2 for a trained run directory (best checkpoint) on one split of its dataset."""
    import torch

    from emofusion.training.run import bundle_for_module, evaluate_split, load_module

    module = load_module(run_dir)
    bundle, config = bundle_for_module(module)
    _, out_data = evaluate_split(module, bundle, split, config=config, return_predictions=True)
    pred, labels = out_data["predictions"], out_data["labels"]
    names = list(module.task.output_names)
    xlabel = "Regression Output"
    if not module.task.is_regression:
        pred = torch.softmax(torch.as_tensor(pred), dim=-1).numpy()
        labels = (
            np.eye(len(names))[np.asarray(labels).astype(int).ravel()]
            if module.task.kind == "classification"
            else labels
        )
        xlabel = "predicted probability"
    elif pred.shape[-1] != len(names):
        names = names[: pred.shape[-1]]
    out = Path(out) if out else Path(run_dir) / "plots" / "intensity_distribution.png"
    return plot_intensity_distribution(pred, names, out, labels=labels, title=title, xlabel=xlabel)
