"""Paper 001 (RMFN, Liang et al. 2018): Table 2's stage sweep and ablations, and the task protocols of Tables 1/3-5.

* ``paper001-table2``: RMFN-R1..R4 (K = 1..4 stages), RMFN (no MFP: LSTHMs without z), RMFN (no HIGHLIGHT:
  FUSE on the unhighlighted h_t), RMFN (K = 3, the paper's choice) and MARN (Q2's baseline) on the word-aligned synthetic benchmark
  with the sentiment target (Table 2 is CMU-MOSI sentiment): Acc2, F1, Acc7, MAE, r. Another dataset via
  ``EMOFUSION_P001_DATASET`` (e.g. ``csd:...`` of CMU-MOSI); the paper's numbers are shown only then.
* ``paper001-protocols``: RMFN, RMFN (no MFP) and the early-fusion LSTM on three protocols of the synthetic
  benchmark: sentiment (Acc2, F1, Acc7, MAE, r), IEMOCAP-style per-emotion binary (Acc2, F1 per emotion,
  ``synthetic-p001:binary``) and POM-style traits (A7/A5 per trait, MAE, r, ``synthetic-p001:traits``); plus
  the real ICT-MMMO audio + visual column when ``../shared/data/mfn_h5/mmmo`` exists.
* ``paper001-mfp``: the Q3/Q4 ablations (no MFP, no HIGHLIGHT) and the early-fusion LSTM on a 3x larger
  training set (1200 segments) than the quick Table 2, where the quick models overfit.
* ``paper001-mmmo``: real ICT-MMMO audio + visual (MFN release, word slots restored): RMFN, RMFN (no MFP),
  early-fusion LSTM and the two unimodal LSTMs, same split and seeds.
"""

from __future__ import annotations

import os
from pathlib import Path

from emofusion.data.synthetic_protocols import TRAITS
from emofusion.evaluation.suite import Cell, SuiteSpec, register_suite

# Table 2 of the paper (CMU-MOSI): (Acc2, F1, Acc7, MAE, r); the paper's Acc2/F1 are the non-zero convention
PUBLISHED_MOSI = {
    "RMFN-R1": (0.755, 0.755, 0.351, 0.997, 0.653),
    "RMFN-R2": (0.764, 0.764, 0.345, 0.967, 0.642),
    "RMFN-R3": (0.784, 0.780, 0.383, 0.922, 0.681),
    "RMFN-R4": (0.760, 0.760, 0.360, 0.999, 0.640),
    "RMFN (no MFP)": (0.765, 0.765, 0.308, 0.998, 0.582),
    "RMFN (no HIGHLIGHT)": (0.779, 0.779, 0.359, 0.952, 0.666),
    "RMFN": (0.784, 0.780, 0.383, 0.922, 0.681),
    "MARN": (0.771, 0.770, 0.347, 0.968, 0.625),
}
SENTIMENT_METRICS = ["acc2_non0", "f1_non0", "acc7", "mae", "pearson_r", "acc2_has0", "f1_has0"]
BINARY_CLASSES = ("happy", "sad", "anger", "neutral")
MMMO = Path(__file__).resolve().parents[4].parent / "shared" / "data" / "mfn_h5" / "mmmo"


def _sizes(preset: str) -> tuple[dict, int, int]:
    """(synthetic dataset options, per-modality hidden size, max epochs) of a preset."""
    if preset == "quick":
        return {"n_train": 400, "n_val": 100, "n_test": 150, "max_words": 24}, 16, 8
    return {"n_train": 1200, "n_val": 300, "n_test": 300}, 32, 20


def marn_options(hidden: int) -> dict:
    """MARN at RMFN's sizes: the same LSTHMs, z and head; K = 4 attentions (the MARN paper's choice)."""
    return {
        "hidden_dim": hidden,
        "attentions": 4,
        "reduce_dim": hidden,
        "z_dim": 2 * hidden,
        "fuse_dim": 2 * hidden,
        "head_dim": 4 * hidden,
        "dropout": 0.1,
    }


def rmfn_options(hidden: int, **extra) -> dict:
    return {
        "hidden_dim": hidden,
        "fuse_dim": 2 * hidden,
        "z_dim": 2 * hidden,
        "summarize_dim": 4 * hidden,
        "head_dim": 4 * hidden,
        "dropout": 0.1,
        **extra,
    }


def _train(preset: str, epochs: int) -> dict:
    return {
        "max_epochs": epochs,
        "batch_size": 32,
        "lr": 1e-3,
        "patience": 4 if preset == "quick" else 6,
        "progress": False,
        "plots": False,
    }


@register_suite(
    "paper001-table2", "RMFN stage sweep R1..R4 and the no-MFP / no-HIGHLIGHT ablations (Table 2)"
)
def table2(preset: str) -> SuiteSpec:
    data, hidden, epochs = _sizes(preset)
    dataset = os.environ.get("EMOFUSION_P001_DATASET", "synthetic:aligned")
    base = {"dataset": dataset, "dataset_options": {**data, "target": "sentiment"}, **_train(preset, epochs)}
    if not dataset.startswith("synthetic"):
        base["dataset_options"] = {}
    rows = {f"RMFN-R{k}": rmfn_options(hidden, stages=k) for k in (1, 2, 3, 4)}
    rows["RMFN (no MFP)"] = rmfn_options(hidden, mfp=False)
    rows["RMFN (no HIGHLIGHT)"] = rmfn_options(hidden, stages=3, highlight=False)
    rows["RMFN"] = rmfn_options(hidden, stages=3)  # same config as R3: trained once, shown twice
    column = "synthetic sentiment" if dataset.startswith("synthetic") else dataset
    cells = [Cell(r, column, {**base, "model": "rmfn", "model_options": o}) for r, o in rows.items()]
    # Q2's baseline: all cross-modal interactions at once (one block of K attentions) vs multistage fusion
    cells.append(Cell("MARN", column, {**base, "model": "marn", "model_options": marn_options(hidden)}))
    published = {}
    if "mosi" in dataset.lower():
        published = {
            (r, column, m): v for r, vals in PUBLISHED_MOSI.items() for m, v in zip(SENTIMENT_METRICS, vals)
        }
    return SuiteSpec(
        cells=cells,
        metrics=SENTIMENT_METRICS,
        published=published,
        title="Paper 001, Table 2: RMFN stages and ablations",
        description=(
            f"RMFN on `{dataset}` (sentiment). R-K = K fusion stages; RMFN = K=3. no MFP = LSTHMs without z "
            "(E = ⊕ h_T only); no HIGHLIGHT = FUSE on the unhighlighted h_t; MARN = the same LSTHMs with one "
            "Multi-attention Block (K = 4 attentions at once, Q2's baseline). Per-modality LSTHM size "
            f"{hidden}, {epochs} epochs max, early stopping on validation MAE."
        ),
    )


@register_suite(
    "paper001-mfp", "RMFN vs RMFN (no MFP) / (no HIGHLIGHT) / early fusion on 1200 synthetic segments"
)
def mfp(preset: str) -> SuiteSpec:
    _, hidden, epochs = _sizes(preset)
    data = {"n_train": 1200, "n_val": 300, "n_test": 300, "max_words": 24, "target": "sentiment"}
    base = {"dataset": "synthetic:aligned", "dataset_options": data, **_train(preset, max(epochs, 12))}
    rows = {
        "RMFN": {"model": "rmfn", "model_options": rmfn_options(hidden, stages=3)},
        "RMFN (no MFP)": {"model": "rmfn", "model_options": rmfn_options(hidden, mfp=False)},
        "RMFN (no HIGHLIGHT)": {
            "model": "rmfn",
            "model_options": rmfn_options(hidden, stages=3, highlight=False),
        },
        "early fusion LSTM": {
            "model": "early_fusion_lstm",
            "model_options": {"hidden_dim": 3 * hidden, "head_dim": 4 * hidden},
        },
    }
    return SuiteSpec(
        cells=[Cell(r, "synthetic sentiment (1200 train)", {**base, **frag}) for r, frag in rows.items()],
        metrics=SENTIMENT_METRICS,
        title="Paper 001, Q3/Q4: cross-modal fusion (MFP) and HIGHLIGHT on a larger synthetic training set",
        description="synthetic:aligned, sentiment target, 1200 / 300 / 300 segments; sizes as in paper001-table2.",
    )


def _mmmo_rows(hidden: int) -> dict[str, dict]:
    uni = {"hidden_dim": 3 * hidden, "head_dim": 4 * hidden}
    return {
        "RMFN": {"model": "rmfn", "model_options": rmfn_options(hidden, stages=3)},
        "RMFN (no MFP)": {"model": "rmfn", "model_options": rmfn_options(hidden, mfp=False)},
        "early fusion LSTM": {
            "model": "early_fusion_lstm",
            "model_options": {"hidden_dim": 3 * hidden, "head_dim": 4 * hidden},
        },
        "audio LSTM": {"model": "unimodal_lstm", "modalities": ["audio"], "model_options": uni},
        "visual LSTM": {"model": "unimodal_lstm", "modalities": ["visual"], "model_options": uni},
    }


def _mmmo_cells(preset: str, column: str) -> list[Cell]:
    _, hidden, epochs = _sizes(preset)
    base = {
        "dataset": f"wordslots:mfn:{MMMO}",
        "dataset_options": {"modalities": "audio,visual"},
        "modalities": ["audio", "visual"],
        **_train(preset, max(epochs, 15)),
    }
    return [Cell(r, column, {**base, **frag}) for r, frag in _mmmo_rows(hidden).items()]


@register_suite(
    "paper001-protocols", "RMFN on sentiment / IEMOCAP-style binary / POM-style traits (+ ICT-MMMO)"
)
def protocols(preset: str) -> SuiteSpec:
    data, hidden, epochs = _sizes(preset)
    base = _train(preset, epochs)
    models = {
        "RMFN": {"model": "rmfn", "model_options": rmfn_options(hidden, stages=3)},
        "RMFN (no MFP)": {"model": "rmfn", "model_options": rmfn_options(hidden, mfp=False)},
        "early fusion LSTM": {
            "model": "early_fusion_lstm",
            "model_options": {"hidden_dim": 3 * hidden, "head_dim": 4 * hidden},
        },
    }
    columns = {
        "sentiment": ("synthetic:aligned", {**data, "target": "sentiment"}),
        "IEMOCAP-style binary": ("synthetic-p001:binary", dict(data)),
        "POM-style traits": ("synthetic-p001:traits", dict(data)),
    }
    cells = [
        Cell(r, col, {**base, **frag, "dataset": ds, "dataset_options": opts})
        for col, (ds, opts) in columns.items()
        for r, frag in models.items()
    ]
    if MMMO.is_dir():
        cells += _mmmo_cells(preset, "ICT-MMMO (audio+visual)")
    metrics = list(SENTIMENT_METRICS) + ["mean_acc", "mean_f1"]
    metrics += [f"{k}_{c}" for c in BINARY_CLASSES for k in ("acc", "f1")]
    metrics += [f"acc{int(hi - lo) + 1}_{t}" for t, ((lo, hi), _, _) in TRAITS.items()]
    return SuiteSpec(
        cells=cells,
        metrics=metrics,
        title="Paper 001, task protocols (Tables 1, 3-5) on synthetic stand-ins",
        description=(
            "Sentiment: acc2_non0/f1_non0 (the paper's Acc2/F1), acc2_has0/f1_has0, Acc7, MAE, r. "
            "IEMOCAP-style binary: per-emotion accuracy and weighted F1 (mean_acc / mean_f1 over happy, sad, anger, neutral). POM-style traits: MAE, r "
            "(means over traits), A7 per [1, 7] trait and A5 for the [1, 5] trait. ICT-MMMO: sentiment on [1, 5] "
            "(binary views around 3, acc7 is n/a, see acc5 in the JSON). n/a = metric not defined for that protocol."
        ),
    )


@register_suite("paper001-mmmo", "RMFN vs early fusion and unimodal LSTMs on real ICT-MMMO audio + visual")
def mmmo(preset: str) -> SuiteSpec:
    if not MMMO.is_dir():
        raise FileNotFoundError(f"paper001-mmmo needs the MFN release of ICT-MMMO at {MMMO}")
    return SuiteSpec(
        cells=_mmmo_cells(preset, "ICT-MMMO"),
        metrics=["mae", "pearson_r", "acc2_non0", "f1_non0", "acc2_has0", "f1_has0", "acc5"],
        title="Paper 001 on real ICT-MMMO (audio + visual, MFN release)",
        description=(
            "Word slots restored (`wordslots:mfn:`), so every model sees one word axis; sentiment in [1, 5], "
            "acc2_non0 = above / below 3 (samples at 3 dropped), acc2_has0 = >= 3 vs < 3 (all samples), acc5 = "
            "rounded score. Same split and seeds for all."
        ),
    )
