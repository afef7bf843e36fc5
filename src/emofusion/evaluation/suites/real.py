"""The ``real`` suite: every segment-level model on each real dataset in ``../shared/data/mfn_h5`` (ICT-MMMO:
sentiment in [1, 5]; YouTube: 3 classes; audio + visual, the only modalities every split has), 3 seeds, the
datasets' own splits, next to the closed-form trivial baselines of the same split and, when MMSA is
installed (``pip install emofusion[peers]``), MMSA 2.2.1's own models trained on the same split, features and
standardisation by MMSA's recipe (``benchmarks/mmsa_accuracy.py``: its per-model config, batch 32, at most 60
epochs, early stop on the validation loss after 8 epochs without improvement, best weights restored; text an
all-zero tensor since MMSA needs three modalities).

    emofusion benchmark real --out /work/bench_out

``EMOFUSION_DATA`` overrides the data folder (default ``../shared/data``). A dataset whose folder is absent, or
MMSA when it cannot be imported, is skipped and the table says why.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

from emofusion.evaluation.suite import Cell, SuiteSpec, register_suite

DATASETS = {"mmmo": "ICT-MMMO", "youtube": "YouTube"}
MODALITIES = ["audio", "visual"]
# emofusion's segment-level models (per-dataset presets configs/<model>_<dataset>.yaml where one exists) and
# MMSA's models, each beside the emofusion model of the same design (MMSA's EF_LSTM <-> early_fusion_lstm,
# LF_DNN <-> lf_dnn). MMSA's MFN and MulT are left out on YouTube: the slowest MMSA trainers, and YouTube's
# majority class is the hard baseline there whatever the model.
MODELS = ["tfn", "mfn", "mult", "early_fusion_lstm", "lmf", "lf_dnn", "late_fusion", "rrnn", "gca", "rmfn", "marn",
          "delta_attention", "svm", "random_forest", "gradient_boosting"]
MODELS = {"mmmo": MODELS, "youtube": MODELS}
MMSA_MODELS = {"mmmo": ["tfn", "mfn", "mult", "ef_lstm", "lmf", "lf_dnn"], "youtube": ["tfn", "ef_lstm", "lmf", "lf_dnn"]}
MMSA_COUNTERPART = {"tfn": "tfn", "mfn": "mfn", "mult": "mult", "ef_lstm": "early_fusion_lstm", "lmf": "lmf",
                    "lf_dnn": "lf_dnn"}
MMSA_ROW = "MMSA {} (↔ {})"
# ensembles of the emofusion rows above, per seed, every choice made on the validation split
# (evaluation/ensemble.py): the single best member, the plain mean of all, Caruana's greedy selection
ENSEMBLE_ROWS = {"best": "ensemble: best member by val", "uniform": "ensemble: mean of all",
                 "greedy": "ensemble: greedy selection by val"}
MMSA_CLASS = {"tfn": "TFN", "mfn": "MFN", "mult": "MulT", "ef_lstm": "EF_LSTM", "lmf": "LMF", "lf_dnn": "LF_DNN"}


def data_root() -> Path:
    return Path(os.environ.get("EMOFUSION_DATA", "../shared/data"))


def repo_root() -> Path:
    from emofusion.evaluation.benchmark import repo_root as root

    return root()


def mmsa_module():
    """benchmarks/mmsa_accuracy.py of this checkout (one copy of the MMSA training code), or None."""
    path = repo_root() / "benchmarks" / "mmsa_accuracy.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("emofusion_bench_mmsa_accuracy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def preset_config(model: str, dataset: str) -> dict:
    """configs/<model>_<dataset>.yaml (a per-dataset preset) as RunConfig fields, else {}."""
    from emofusion.training.config import load_yaml

    path = repo_root() / "configs" / f"{model}_{dataset}.yaml"
    if not path.exists():
        return {}
    data = load_yaml(path)
    for key in ("model", "seed", "output", "modalities"):
        data.pop(key, None)
    if "dataset" in data:  # the preset's reader chain (e.g. wordslots:mfn:...), on this suite's data folder
        data["dataset"] = str(data["dataset"]).replace("../shared/data", str(data_root()))
    return data


def mmsa_skip_reason() -> str | None:
    module = mmsa_module()
    if module is None:
        return "benchmarks/mmsa_accuracy.py not found (not a source checkout)"
    return module.mmsa_available()


@register_suite("real", "every model on ICT-MMMO and YouTube (MFN features), baselines, MMSA's models when installed")
def build(preset: str) -> SuiteSpec:
    cells, notes = [], []
    mmsa_reason = mmsa_skip_reason()
    if mmsa_reason:
        notes.append(f"MMSA rows skipped: {mmsa_reason}.")
    for name, label in DATASETS.items():
        folder = data_root() / "mfn_h5" / name
        if not folder.is_dir():
            notes.append(f"{label} skipped: {folder} does not exist (the real data are not part of a clone).")
            continue
        dataset = f"mfn:{folder}"
        for model in MODELS[name]:
            config = {"model": model, "dataset": dataset, "modalities": MODALITIES, **preset_config(model, name)}
            if config["dataset"] != dataset:
                notes.append(f"{model} on {label} reads `{config['dataset']}` (its preset configs/{model}_{name}.yaml).")
            cells.append(Cell(model, label, config, None, {"kind": "emofusion", "model": model}))
        members = [c.config for c in cells if c.column == label and c.meta.get("kind") == "emofusion"]
        for rule, row in ENSEMBLE_ROWS.items():
            config = {"runner": "emofusion.evaluation.ensemble:run_ensemble_cell", "rule": rule, "rounds": 20,
                      "members": members, "dataset": dataset}
            cells.append(Cell(row, label, config, None, {"kind": "ensemble", "rule": rule}))
        if mmsa_reason is None:
            for mmsa in MMSA_MODELS[name]:
                config = {"runner": "emofusion.evaluation.suites.real:run_mmsa", "mmsa_model": mmsa,
                          "dataset": dataset, "modalities": MODALITIES}
                row = MMSA_ROW.format(MMSA_CLASS[mmsa], MMSA_COUNTERPART[mmsa])
                cells.append(Cell(row, label, config, None, {"kind": "mmsa", "model": mmsa}))
    description = (__doc__.split("\n\n")[0].replace("\n", " ") + "\n\n" + " ".join(notes)).strip()
    return SuiteSpec(
        cells=cells,
        metrics=["mae", "pearson_r", "acc2_has0", "acc2_non0", "accuracy", "f1_weighted"],
        seeds=[0, 1, 2],
        title="Real data: ICT-MMMO and YouTube (MFN features, audio + visual), emofusion and MMSA",
        description=description,
    )


def mmmo_folder(notes: list[str]) -> Path | None:
    """The ICT-MMMO release folder, or None with a note saying why the suite's cells are skipped."""
    folder = data_root() / "mfn_h5" / "mmmo"
    if folder.is_dir():
        return folder
    notes.append(f"ICT-MMMO skipped: {folder} does not exist (the real data are not part of a clone).")
    return None


# the recipe variants tried on ICT-MMMO (docs/training.md, "Regularisers for small sets"); the default is what
# `real` runs. Chosen by validation MAE, never by test: the val column is the number that would pick one.
RECIPE_VARIANTS = {
    "default recipe": {},
    "lr 3e-4": {"lr": 3e-4},
    "EMA 0.99": {"ema_decay": 0.99},
    "input noise 0.5": {"input_noise": 0.5},
    # rank-Gauss feature scaling (data/hygiene.py) instead of z-scores: COVAREP / FACET columns are heavy-tailed
    "quantile scaling": {"standardize": "quantile"},
}
RECIPE_MODELS = ["tfn", "rrnn", "early_fusion_lstm", "late_fusion"]


@register_suite("mmmo-recipe", "training-recipe variants (LR, EMA, input noise, quantile scaling) on ICT-MMMO A+V")
def build_recipe(preset: str) -> SuiteSpec:
    cells, notes = [], []
    folder = mmmo_folder(notes)
    if folder is not None:
        for row, overrides in RECIPE_VARIANTS.items():
            for model in RECIPE_MODELS:
                config = {"model": model, "dataset": f"mfn:{folder}", "modalities": MODALITIES, **overrides}
                cells.append(Cell(row, model, config, None, {"kind": "emofusion", "model": model}))
    return SuiteSpec(
        cells=cells,
        metrics=["val/mae", "mae", "pearson_r"],
        seeds=[0, 1, 2],
        title="ICT-MMMO (audio + visual): training-recipe variants",
        description=("The default recipe (docs/training.md) against the small-set regularisers it offers, "
                     "3 models x 3 seeds on the MFN release's split. `val/mae` is the validation MAE of the "
                     "selected checkpoint (40 videos): the only number that may choose a variant; `mae` and "
                     "`pearson_r` are on the 80 test videos. " + " ".join(notes)).strip(),
    )


# the classical baselines' settings tried on ICT-MMMO (models/classical.py); configs/<model>_mmmo.yaml holds the
# row with the best mean cv/mae of each model (5-fold out-of-fold MAE on the 220 training videos: far less noisy
# than the 40 validation videos, which chose the rows until session 7), never chosen by test
CV_FOLDS = 5
CLASSICAL_GRID = {
    "svm": [{"C": c, "epsilon": e} for c in (0.3, 1.0, 3.0) for e in (0.1, 0.5)],
    "random_forest": [{"min_samples_leaf": leaf, "max_features": f} for leaf in (1, 5, 10) for f in (0.33, 1.0)],
    # max_features < 1 samples features per split: the only setting under which the seeds differ
    "gradient_boosting": [{"learning_rate": lr, "max_depth": d, "max_features": f} for lr in (0.03, 0.1)
                          for d in (2, 3) for f in (1.0, 0.5)],
}


def grid_row(model: str, options: dict) -> str:
    return f"{model} " + " ".join(f"{k}={v}" for k, v in options.items())


@register_suite("mmmo-classical", "the classical baselines' settings (SVM, RF, boosted trees) on ICT-MMMO A+V, by val")
def build_classical(preset: str) -> SuiteSpec:
    cells, notes = [], []
    folder = mmmo_folder(notes)
    if folder is not None:
        for model, grid in CLASSICAL_GRID.items():
            for options in grid:
                config = {"model": model, "dataset": f"mfn:{folder}", "modalities": MODALITIES,
                          "model_options": dict(options), "cv_folds": CV_FOLDS}
                cells.append(Cell(grid_row(model, options), "ICT-MMMO", config, None,
                                  {"kind": "emofusion", "model": model}))
    return SuiteSpec(
        cells=cells,
        metrics=["cv/mae", "val/mae", "mae", "pearson_r"],
        seeds=[0, 1, 2],
        title="ICT-MMMO (audio + visual): settings of the classical baselines",
        description=("Each classical baseline (models/classical.py: pooled mean / std / present per modality) "
                     "over a small grid, 3 seeds on the MFN release's split. `cv/mae` is the MAE of 5-fold "
                     "out-of-fold predictions on the training split (each fold predicted by a fit on the other "
                     "four, folds shuffled by the seed), the number that chooses a row: configs/<model>_mmmo.yaml "
                     "holds each model's best mean `cv/mae` row, which is what the `real` suite runs. `val/mae` "
                     "(40 videos) chose the rows until session 7 and is shown beside it. `mae` and `pearson_r` "
                     "are on the 80 test videos. " + " ".join(notes)).strip(),
    )


def run_mmsa(job) -> dict:
    """Suite runner of one MMSA cell: the same data preparation as emofusion's runs (the dataset's splits,
    hygiene fitted on train), then ``benchmarks/mmsa_accuracy.py:train_mmsa``; metrics by emofusion's code."""
    import numpy as np
    import torch

    from emofusion.evaluation.metrics import compute_metrics
    from emofusion.training.config import RunConfig
    from emofusion.training.run import prepare_data

    torch.set_num_threads(1)
    module = mmsa_module()
    reason = module.mmsa_available() if module is not None else "benchmarks/mmsa_accuracy.py not found"
    if reason:
        raise RuntimeError(reason)
    config = job.config
    start = time.perf_counter()
    bundle, _, _ = prepare_data(RunConfig(dataset=config["dataset"], modalities=config["modalities"]))
    arrays = module.bundle_arrays(bundle, config["modalities"])
    out = module.train_mmsa(config["mmsa_model"], arrays, job.seed, bundle.task)
    metrics = {}
    for split in ("val", "test"):
        labels = arrays[split]["y"]
        labels = labels[:, None] if labels.dtype.kind == "f" else labels
        metrics[split] = {k: float(v) for k, v in compute_metrics(bundle.task, out[f"{split}_pred"], labels).items()}
    record = {
        "status": "ok",
        "config": config,
        "seed": job.seed,
        "metrics": metrics,
        "evaluations": {"clean": dict(metrics[job.split])},
        "baselines": _baselines(bundle),
        "info": {k: out[k] for k in ("best_epoch", "epochs", "val_loss", "params")},
        "train_seconds": time.perf_counter() - start,
        "run_dir": job.run_dir,
    }
    Path(job.run_dir).mkdir(parents=True, exist_ok=True)
    (Path(job.run_dir) / "mmsa.json").write_text(json.dumps({**record, "mmsa_config": out["config"],
                                                             "test_pred": np.asarray(out["test_pred"]).tolist()},
                                                            default=float))
    return record


def _baselines(bundle) -> dict:
    try:
        from emofusion.evaluation.baselines import bundle_baselines
    except ImportError:
        return {}
    return bundle_baselines(bundle)
