"""Attention-over-time plots in the style of paper 000, Fig. 4.

One panel per analysis hop; inside a panel one track per modality (text on top), the attention weight of each
real step drawn at that step's time in seconds (the midpoint of its interval; step index when a sample has no
intervals), with the words written under the text track. Works for any model whose output extras hold
``attention`` {modality: ``[B, hops, T_m]``} (or ``[B, T_m]`` for a single hop).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from emofusion.data.batch import Sample
from emofusion.data.collate import collate_samples

TRACK_ORDER = ("text", "audio", "visual")
COLORS = {"text": "tab:blue", "audio": "tab:orange", "visual": "tab:green"}


def _times(sample: Sample | None, modality: str, steps: int) -> tuple[np.ndarray, str]:
    if sample is not None and modality in sample.intervals and len(sample.intervals[modality]) == steps:
        iv = np.asarray(sample.intervals[modality], dtype=np.float64)
        return iv.mean(axis=1), "Time (seconds)"
    return np.arange(steps, dtype=np.float64), "Step"


def attention_figure(
    attention: Mapping[str, np.ndarray],
    sample: Sample | None = None,
    title: str | None = None,
    max_words: int = 60,
):
    """A matplotlib Figure: columns = hops, rows = modalities; ``attention[m]`` is ``[hops, T_m]`` or ``[T_m]``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not attention:
        raise ValueError("no attention weights to plot (the model returned no extras['attention'])")
    arrays = {m: np.atleast_2d(np.asarray(a, dtype=np.float64)) for m, a in attention.items()}
    order = [m for m in TRACK_ORDER if m in arrays] + [m for m in arrays if m not in TRACK_ORDER]
    hops = max(a.shape[0] for a in arrays.values())
    fig, axes = plt.subplots(
        len(order), hops, figsize=(4.2 * hops + 1, 1.7 * len(order) + 0.9), squeeze=False, sharex="col"
    )
    words = sample.words if sample is not None else None
    xlabel = "Step"
    for j in range(hops):
        for i, m in enumerate(order):
            ax = axes[i, j]
            a = arrays[m][min(j, arrays[m].shape[0] - 1)]
            t, xlabel = _times(sample, m, len(a))
            ax.plot(t, a, color=COLORS.get(m, "tab:gray"), lw=1.2, marker="." if len(a) < 60 else None)
            ax.fill_between(t, 0, a, color=COLORS.get(m, "tab:gray"), alpha=0.2)
            ax.set_ylim(0, max(float(a.max()) * 1.15, 1e-6))
            ax.tick_params(labelsize=7)
            if j == 0:
                ax.set_ylabel(m, fontsize=9)
            if i == 0:
                ax.set_title(f"hop {j + 1}", fontsize=9)
            if m == "text" and words and len(words) == len(a) and len(words) <= max_words:
                # words under the text track, at their own times (paper Fig. 4)
                for x, word in zip(t, words, strict=True):
                    ax.annotate(
                        word,
                        (x, 0),
                        xytext=(0, -3),
                        textcoords="offset points",
                        rotation=70,
                        ha="right",
                        va="top",
                        fontsize=6,
                        annotation_clip=False,
                    )
        axes[-1, j].set_xlabel(xlabel, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if "text" in order and words:
        fig.subplots_adjust(hspace=0.9)
    return fig


def sample_attention(model, sample: Sample, modalities=None, prepare=None) -> dict[str, np.ndarray]:
    """Run ``model`` (a FusionModel) on one sample; returns attention ``{m: [hops, T_m]}`` (real steps only).

    ``prepare`` is an optional ``Sample -> Sample`` transform (e.g. the training run's feature hygiene).
    """
    import torch

    if prepare is not None:
        sample = prepare(sample)
    modalities = list(modalities or getattr(model, "modalities", sample.features))
    batch = collate_samples([sample], modalities)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(batch.inputs)
    model.train(was_training)
    att = out.extras.get("attention") if hasattr(out, "extras") else None
    if not att:
        raise ValueError(
            f"{type(model).__name__} returns no attention weights in its extras; cannot explain it"
        )
    if out.extras.get("attend_over", "time") != "time":
        raise ValueError(
            "the model attends over feature dimensions, not time: there is no attention-over-time plot"
        )
    result = {}
    for m, a in att.items():
        a = a[0].detach().cpu().numpy()
        n = sample.length(m)
        result[m] = a[..., :n] if a.ndim == 2 else a[None, :n]
    return result


def plot_attention(
    model, sample: Sample, output: str | Path, modalities=None, prepare=None, title=None
) -> Path:
    """Draw the Fig. 4-style attention plot of ``model`` on ``sample`` and save it to ``output`` (PNG/PDF/SVG)."""
    import matplotlib.pyplot as plt

    attention = sample_attention(model, sample, modalities, prepare)
    fig = attention_figure(attention, sample, title=title or f"{type(model).__name__}: sample {sample.id}")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=130)
    plt.close(fig)
    return output


def find_sample(bundle, sample_id: str, split: str | None = None) -> Sample:
    """The (hygiene-processed) sample ``sample_id`` of a bundle, searched in ``split`` or in every split."""
    splits = [split] if split else ["test", "val", "train"]
    for name in splits:
        dataset = bundle.split(name)
        ids = list(dataset.ids)
        if sample_id in ids:
            return dataset[ids.index(sample_id)]
    raise KeyError(f"dataset {bundle.name!r} has no sample {sample_id!r} in split(s) {splits}")


def register_cli(sub) -> None:
    """``emofusion explain CHECKPOINT --dataset D --sample ID --output FILE.png`` (paper 000, Fig. 4)."""
    p = sub.add_parser(
        "explain", help="plot a model's attention over time for one sample (paper 000, Fig. 4)"
    )
    p.add_argument("checkpoint", help="a .ckpt file or a run directory")
    p.add_argument("--dataset", help="dataset name (default: the one the checkpoint was trained on)")
    p.add_argument("--sample", required=True, help="sample id (e.g. test_00003)")
    p.add_argument("--split", help="split to search (default: test, then val, then train)")
    p.add_argument("--output", required=True, help="image file to write (.png, .pdf, .svg)")
    p.add_argument("overrides", nargs="*", help="data.OPTION=value dataset options")
    p.set_defaults(func=cmd_explain)


def cmd_explain(args) -> int:
    from emofusion.training.config import apply_overrides
    from emofusion.training.run import bundle_for_module, load_module

    module = load_module(args.checkpoint)
    options = apply_overrides({}, args.overrides)["dataset_options"]
    bundle, _ = bundle_for_module(module, args.dataset, options)
    sample = find_sample(bundle, args.sample, args.split)
    path = plot_attention(
        module.model,
        sample,
        args.output,
        modalities=module.modalities,
        title=f"{module.hparams.get('model_name', type(module.model).__name__)}: {sample.id}",
    )
    print(f"wrote {path}")
    return 0
