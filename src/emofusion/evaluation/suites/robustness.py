"""The ``robustness`` suite: every segment-level model on the synthetic benchmark, evaluated clean and under
test-time perturbations of increasing severity (one training run per model and seed; every perturbation
is evaluated on that same trained model). Output: metric vs severity per model, as a table and a plot.

"<modality> absent at test time" uses ``missing_modality`` with ``mode="empty"`` (the modality is present with
zero steps, mask all False, for every test sample): a model built for three modalities cannot be called without
one of its inputs, while an empty sequence is exactly how a sample without any frame of a modality arrives;
every model then sees its learned absent token (``absent="token"``, the default; models/base.py). Models that fail on a perturbation get "n/a" and the error is listed.
"""

from __future__ import annotations

from pathlib import Path

from emofusion.evaluation.robustness import severity_sweep
from emofusion.evaluation.suite import Cell, SuiteSpec, register_suite

# segment-level models that run on the synthetic benchmark, with small options for the quick preset
CANDIDATES = {
    "early_fusion_lstm": {"hidden_dim": 32, "head_dim": 32},
    "late_fusion": {},
    "ef_lstm": {},
    "rrnn": {},
    "rmfn": {},
    # quick: a smaller MulT (its default, 5 cross + 3 self layers at d=30, takes ~10 min per quick run here)
    "mult": {"d_model": 16, "num_heads": 2, "cross_layers": 2, "self_layers": 1},
    "gca": {},
    "delta_attention": {},
    "tfn": {},
    "lmf": {},
    "mfn": {},
}

QUICK = [
    ("gaussian_noise", "visual", [10.0, 0.0, -10.0]),
    ("gaussian_noise", "audio", [10.0, 0.0, -10.0]),
    ("missing_modality", "audio", ["empty"]),
    ("missing_modality", "visual", ["empty"]),
    ("temporal_shift", "audio", [0.5, 2.0]),
    ("speaker_offset", "audio", [0.5, 2.0]),
    ("frame_drop", "audio", [0.3, 0.7]),
]
FULL = [
    *(("gaussian_noise", m, [20.0, 10.0, 5.0, 0.0, -5.0, -10.0]) for m in ("text", "audio", "visual")),
    *(("missing_modality", m, ["empty"]) for m in ("text", "audio", "visual")),
    *(("temporal_shift", m, [0.25, 0.5, 1.0, 2.0]) for m in ("audio", "visual")),
    ("speaker_offset", ["audio", "visual"], [0.25, 0.5, 1.0, 2.0]),
    *(("frame_drop", m, [0.1, 0.3, 0.5, 0.8]) for m in ("audio", "visual")),
]

SHORT = {
    "gaussian_noise": "noise",
    "missing_modality": "absent at test time",
    "temporal_shift": "shift",
    "speaker_offset": "spk-offset",
    "frame_drop": "drop",
}
UNITS = {"gaussian_noise": "dB", "temporal_shift": "s", "speaker_offset": "σ", "frame_drop": ""}


def family_name(kind: str, modality) -> str:
    mod = modality if isinstance(modality, str) else "+".join(modality)
    return f"{mod} {SHORT[kind]}" if kind == "missing_modality" else f"{SHORT[kind]} {mod}"


def _models(preset: str) -> dict[str, dict]:
    from emofusion.models import list_models

    known = set(list_models())
    return {m: (opts if preset == "quick" else {}) for m, opts in CANDIDATES.items() if m in known}


@register_suite(
    "robustness", "every segment-level model under test-time perturbations of increasing severity"
)
def build(preset: str) -> SuiteSpec:
    if preset == "quick":
        data = {"n_train": 240, "n_val": 60, "n_test": 80}
        train = {"max_epochs": 3, "batch_size": 32, "patience": 2}
        families = QUICK
    else:
        data = {"n_train": 1200, "n_val": 300, "n_test": 300}
        train = {"max_epochs": 15, "batch_size": 32, "patience": 5}
        families = FULL
    cells = []
    for model, options in _models(preset).items():
        config = {
            "model": model,
            "dataset": "synthetic",
            "model_options": options,
            "dataset_options": data,
            **train,
        }
        cells.append(Cell(model, "clean", config, None, {"model": model, "family": None, "severity": 0}))
        for kind, modality, values in families:
            param = "mode" if kind == "missing_modality" else None
            for severity, spec in severity_sweep(kind, modality, values, parameter=param)[1:]:
                label = family_name(kind, modality)
                column = label if kind == "missing_modality" else f"{label} {severity:g}{UNITS[kind]}"
                meta = {"model": model, "family": label, "kind": kind, "severity": severity}
                cells.append(Cell(model, column, config, spec, meta))
    return SuiteSpec(
        cells=cells,
        metrics=["mae", "wa", "pearson_r"],
        seeds=[0, 1, 2],
        title="Robustness: metric vs perturbation severity (synthetic benchmark, test split)",
        description=(__doc__.split("\n\n")[1] if __doc__ else "")
        + (
            "\n\nQuick preset: 240 training samples, 3 epochs, a smaller MulT: the models are far from trained "
            "(near the mean baseline), so this checks the pipeline; the full preset is the measurement."
            if preset == "quick"
            else ""
        ),
        plot=plot_severity,
    )


def plot_severity(result, out_dir: Path) -> list[Path]:
    """One panel per perturbation family: metric (first of the suite) vs severity, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metric = result.spec.metrics[0]
    families = [f for f in dict.fromkeys(c["meta"].get("family") for c in result.cells) if f]
    models = list(dict.fromkeys(c["row"] for c in result.cells))
    clean = {c["row"]: c for c in result.cells if c["meta"].get("family") is None}
    cols = min(4, max(1, len(families)))
    rows = -(-len(families) // cols) if families else 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    for ax, fam in zip(axes.flat, families):
        for model in models:
            pts = [c for c in result.cells if c["row"] == model and c["meta"].get("family") == fam]
            seq = ([clean[model]] if model in clean else []) + pts
            xs = np.arange(len(seq))
            ys = np.array([c["mean"][metric] for c in seq], dtype=float)
            es = np.array([c["std"][metric] for c in seq], dtype=float)
            ax.errorbar(xs, ys, yerr=np.nan_to_num(es), marker="o", capsize=2, label=model)
            ax.set_xticks(xs, ["clean"] + [str(c["meta"]["severity"]) for c in pts], fontsize=7)
        ax.set_title(fam, fontsize=9)
        ax.set_ylabel(metric, fontsize=8)
    for ax in list(axes.flat)[len(families) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path = Path(out_dir) / "robustness.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
