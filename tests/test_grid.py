"""The modality grid (paper 003 Tables 2-5) as a product feature: subsets, model support, tables, a tiny run."""

from __future__ import annotations

import numpy as np

from emofusion.evaluation.grid import grid_spec, modality_label, modality_subsets, run_grid
from emofusion.evaluation.intensity_plots import plot_intensity_distribution

TINY = {"n_train": 24, "n_val": 12, "n_test": 12}


def test_subsets_in_paper_order():
    subsets = modality_subsets(["visual", "audio", "text"])
    assert [modality_label(s) for s in subsets] == ["T", "A", "V", "T+A", "T+V", "A+V", "T+A+V"]
    assert [modality_label(s) for s in modality_subsets(["audio", "visual"])] == ["A", "V", "A+V"]


def test_grid_spec_covers_every_subset_and_skips_unsupported_models():
    spec = grid_spec(
        ["ef_cnn", "unimodal_lstm"], "synthetic:aligned", "quick", dataset_options=TINY, include_random=True
    )
    cells = {(c.row, c.column) for c in spec.cells}
    for row in ["T", "A", "V", "T+A", "T+V", "A+V", "T+A+V"]:
        assert (row, "ef_cnn") in cells
    # a model that takes exactly one modality fills only the unimodal rows, and the skip is reported
    assert {r for r, c in cells if c == "unimodal_lstm"} == {"T", "A", "V"}
    assert "unimodal_lstm on T+A" in spec.description
    assert ("random (§5.1)", "random_baseline") in cells
    assert spec.metrics[:4] == ["mae", "acc2", "acc4", "pearson_r"] and "mae_happy" in spec.metrics
    # every cell trains on exactly its subset with the paper's settings
    cnn_tav = next(c for c in spec.cells if c.row == "T+A+V" and c.column == "ef_cnn")
    assert cnn_tav.config["modalities"] == ["text", "audio", "visual"]
    assert cnn_tav.config["batch_size"] == 64 and cnn_tav.config["patience_epochs"] == 10  # §4.4, in epochs


def test_tiny_grid_runs_end_to_end(tmp_path):
    result, text = run_grid(
        "ef_lstm",
        "synthetic:aligned",
        "quick",
        seeds=1,
        out_dir=tmp_path,
        overrides=["max_epochs=1", *(f"data.{k}={v}" for k, v in TINY.items())],
        subsets=[["audio", "visual"]],
        include_random=True,
        log=lambda _msg: None,
    )
    assert [c["errors"] for c in result.cells] == [[], []]
    for c in result.cells:
        assert 0.0 <= c["mean"]["mae"] <= 3.0
    rnd = next(c for c in result.cells if c["column"] == "random_baseline")
    assert rnd["mean"]["mae"] > 0.3  # chance level is far above a trained model's
    assert "| A+V |" in text and "Table 5 layout" in text and "| happy |" in text
    # the terminal table carries the trivial baselines of the same split, and flags a cell that loses to them
    zero_row = next(line for line in text.splitlines() if line.startswith("| *baseline: all_zero* |"))
    zero = next(b for b in result.baseline_cells if b["row"] == "baseline: all_zero")["mean"]["mae"]
    assert f"{zero:.3f}" in zero_row
    model = next(c for c in result.cells if c["column"] == "ef_lstm")
    best_baseline = min(b["mean"]["mae"] for b in result.baseline_cells if b["column"] == "ef_lstm")
    assert model["flags"]["mae"] == (model["mean"]["mae"] >= best_baseline)
    assert ("† not better than the best trivial baseline on mae: A+V / ef_lstm" in text) == model["flags"]["mae"]
    assert (result.out_dir / "grid.md").exists()
    assert (result.out_dir / "fig2_intensity_distribution.png").stat().st_size > 1000


def test_intensity_plot_writes_a_figure(tmp_path):
    rng = np.random.default_rng(0)
    out = plot_intensity_distribution(
        rng.random((50, 6)) * 3, list("abcdef"), tmp_path / "f.png", labels=rng.random((50, 6))
    )
    assert out.exists() and out.stat().st_size > 1000
