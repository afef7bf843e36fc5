"""The synthetic benchmark's reference table: mean baseline, each single modality, early fusion.

This is the measurement behind the claim in docs/synthetic.md that fusion genuinely matters on the
default synthetic setting (fusion beats every single modality, all beat the mean baseline).
"""

from __future__ import annotations

from emofusion.evaluation.suite import Cell, SuiteSpec, register_suite

PRESETS = {
    # quick: a smaller corpus and fewer epochs (minutes on 2 cores); full: the default corpus
    "quick": {"dataset_options": {"n_train": 600, "n_val": 150, "n_test": 300}, "max_epochs": 10},
    "full": {"dataset_options": {}, "max_epochs": 25},
}


@register_suite("synthetic-fusion", "mean vs unimodal vs early fusion on the default synthetic benchmark")
def build(preset: str) -> SuiteSpec:
    p = PRESETS[preset]
    base = {
        "dataset": "synthetic",
        "dataset_options": p["dataset_options"],
        "max_epochs": p["max_epochs"],
        "batch_size": 32,
        "patience": 5,
        "lr": 2e-3,
    }
    cells = [Cell("mean baseline", "test", {**base, "model": "mean"})]
    for m in ("text", "audio", "visual"):
        cells.append(
            Cell(f"unimodal LSTM ({m})", "test", {**base, "model": "unimodal_lstm", "modalities": [m]})
        )
    cells.append(Cell("early fusion LSTM (T+A+V)", "test", {**base, "model": "early_fusion_lstm"}))
    return SuiteSpec(
        cells=cells,
        metrics=["mse", "pearson_r", "wa", "f1_weighted", "mae"],
        title="Synthetic benchmark: does fusion matter?",
        description="Default synthetic setting; mean ± std over seeds; test split.",
    )
