"""RMFN HIGHLIGHT weights as in paper 001's Fig. 3: one panel per fusion stage, time on x, the dimensions of
``h_t = ⊕_m h_t^m`` on y grouped by modality (language / visual / acoustic blocks).

``plot_highlight(model, sample, "fig3.png")`` draws one sample; ``plot_rmfn_run(module, bundle, out_dir)`` is
called by :func:`emofusion.evaluation.plots.plot_run` for RMFN runs (files ``plots/rmfn_highlight_<id>.png``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emofusion.data.batch import Sample
from emofusion.data.collate import collate_samples

MODALITY_NAMES = {"text": "language", "audio": "acoustic", "visual": "visual"}


def sample_highlight(model, sample: Sample, prepare=None) -> tuple[np.ndarray, dict[str, tuple[int, int]]]:
    """Run an RMFN on one sample: HIGHLIGHT weights ``[T, K, D]`` over its real steps, and the modality slices."""
    import torch

    if prepare is not None:
        sample = prepare(sample)
    batch = collate_samples([sample], list(model.modalities))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(batch.inputs)
    model.train(was_training)
    weights = out.extras.get("highlight")
    if weights is None:
        raise ValueError(
            f"{type(model).__name__} returned no HIGHLIGHT weights (built with mfp/highlight off?)"
        )
    steps = int(out.extras["time_mask"][0].sum())
    return weights[0, :steps].cpu().numpy(), dict(out.extras["modality_slices"])


def highlight_figure(weights: np.ndarray, modality_slices: dict, words=None, title: str | None = None):
    """Figure of ``weights`` ``[T, K, D]``: K panels (stages), each a dimensions x time heatmap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights = np.asarray(weights)
    if weights.ndim != 3:
        raise ValueError(f"expected HIGHLIGHT weights [T, K, D], got shape {weights.shape}")
    steps, stages, dims = weights.shape
    fig, axes = plt.subplots(
        stages, 1, figsize=(max(6.0, 0.28 * steps + 2.5), 1.2 + 2.0 * stages), squeeze=False
    )
    # one colour scale for all stages so stages can be compared
    vmax = float(weights.max()) if weights.size else 1.0
    vmin = float(weights.min()) if weights.size else 0.0
    for k in range(stages):
        ax = axes[k, 0]
        image = ax.imshow(
            weights[:, k, :].T, aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest"
        )
        ticks, labels = [], []
        for m, (start, end) in modality_slices.items():
            if start > 0:
                ax.axhline(start - 0.5, color="white", linewidth=1.2)
            ticks.append((start + end - 1) / 2)
            labels.append(MODALITY_NAMES.get(m, m))
        ax.set_yticks(ticks, labels)
        ax.set_ylabel(f"stage {k + 1}")
        if words is not None and len(words) == steps and k == stages - 1:
            ax.set_xticks(range(steps), words, rotation=60, fontsize=7)
        elif k == stages - 1:
            ax.set_xlabel("time step")
        if k < stages - 1:
            ax.set_xticks([])
        fig.colorbar(image, ax=ax, fraction=0.025, pad=0.01)
    fig.suptitle(title or "RMFN HIGHLIGHT attention a_t^[k] (dimensions of h_t by modality)")
    fig.tight_layout()
    return fig


def plot_highlight(model, sample: Sample, output: str | Path, prepare=None, title: str | None = None) -> Path:
    """Draw the Fig. 3-style plot of ``model`` (an RMFN) on ``sample`` and save it (PNG / PDF / SVG)."""
    import matplotlib.pyplot as plt

    weights, slices = sample_highlight(model, sample, prepare)
    words = sample.words if sample.words is not None and len(sample.words) == len(weights) else None
    fig = highlight_figure(weights, slices, words, title or f"RMFN HIGHLIGHT weights, sample {sample.id}")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output


def plot_rmfn_run(module, bundle, out_dir: str | Path, n_samples: int = 3, split: str = "test") -> list[Path]:
    """Fig. 3-style plots for the first ``n_samples`` non-empty samples of a split (a run's report hook)."""
    model = getattr(module, "model", module)
    if getattr(model, "fusion", None) is None or not getattr(model, "highlight", False):
        return []
    dataset = bundle.split(split)
    made = []
    for i in range(len(dataset)):
        if len(made) >= n_samples:
            break
        sample = dataset[i]
        if all(sample.length(m) == 0 for m in model.modalities):
            continue
        made.append(plot_highlight(model, sample, Path(out_dir) / f"rmfn_highlight_{sample.id}.png"))
    return made
