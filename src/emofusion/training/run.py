"""Training and evaluation runs: files -> dataset -> batches -> model -> predictions -> metrics -> reports."""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, EMAWeightAveraging, ModelCheckpoint, RichProgressBar
from torch.utils.data import DataLoader

from emofusion.data import load_dataset
from emofusion.data.collate import Collator, LengthBucketBatchSampler
from emofusion.data.dataset import DatasetBundle, SampleDataset, TimeAverage
from emofusion.data.hygiene import apply_hygiene, fit_hygiene
from emofusion.data.validation import check_headline, scan_split
from emofusion.evaluation.baselines import bundle_baselines, split_labels
from emofusion.evaluation.metrics import compute_metrics
from emofusion.training.callbacks import ExactResume, FaultInjection, NonFiniteGuard
from emofusion.training.config import RunConfig, load_yaml, resolve_budget, save_yaml
from emofusion.training.module import EmoFusionModule
from emofusion.training.rundir import (
    ResumableCSVLogger,
    StatefulLoader,
    checkpoint_step,
    protected_run_dir,
    resume_checkpoint,
)

log = logging.getLogger("emofusion")

# the run folder holds config.yaml and data_report.json before the CSV logger starts, and the logger appends
# to an existing metrics.csv (resume), so its "directory not empty ... will be deleted" warning is wrong here
warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # Lightning-internal
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: "litlogger" not in record.getMessage()  # an advertisement printed by every Trainer
)


@dataclass
class RunResult:
    metrics: dict
    run_dir: Path
    module: EmoFusionModule
    bundle: DatasetBundle
    seconds: float
    # closed-form trivial baselines on the same splits: {split: {name: metrics}}
    baselines: dict = field(default_factory=dict)
    # what metrics.json's "info" holds: selection metric, steps trained, budget ...
    info: dict = field(default_factory=dict)


def select_modalities(bundle: DatasetBundle, modalities: list[str] | None) -> DatasetBundle:
    if not modalities:
        return bundle
    unknown = [m for m in modalities if m not in bundle.modality_dims]
    if unknown:
        raise ValueError(
            f"dataset {bundle.name!r} has no modality {unknown}; it has {list(bundle.modality_dims)}"
        )
    return replace(bundle, modality_dims={m: bundle.modality_dims[m] for m in modalities})


def validate_split(
    dataset: SampleDataset, dims: dict[str, int], strict: bool, task=None, counts: dict | None = None
) -> tuple[SampleDataset, list[str]]:
    """Checks every sample's modalities, feature sizes and label (data/validation.py); bad samples stop the
    run (strict) or are skipped and reported. Non-finite feature values are not errors here (hygiene handles
    them): they are counted, with empty sequences, into ``counts``."""
    good, problems, split_counts = scan_split(dataset, dims, task)
    if counts is not None:
        counts.update(split_counts)
    if problems and strict:
        raise ValueError("bad samples (strict mode):\n  " + "\n  ".join(problems[:20]))
    if not problems:
        return dataset, []
    subset = _subset(dataset, good)
    return subset, problems


def _subset(dataset: SampleDataset, indices: list[int]) -> SampleDataset:
    base = dataset
    if base._samples is not None:  # stays in memory (and can be materialised)
        view = SampleDataset([base.raw(i) for i in indices], name=base.name)
    else:
        view = SampleDataset(ids=[base.ids[i] for i in indices], loader=lambda k: base.raw(indices[k]),
                             name=base.name)
    view.transforms = list(base.transforms)
    return view


def prepare_data(config: RunConfig, hygiene_state: dict | None = None) -> tuple[DatasetBundle, dict, dict]:
    """Load, select modalities, validate, fit (or reuse) hygiene. Returns (bundle, hygiene_state, report)."""
    bundle = select_modalities(load_dataset(config.dataset, **config.dataset_options), config.modalities)
    report: dict = {"skipped": {}, "splits": {}}
    for split in ("train", "val", "test"):
        report["splits"][split] = {}
        ds, problems = validate_split(
            getattr(bundle, split), bundle.modality_dims, config.strict, bundle.task, report["splits"][split]
        )
        if problems:
            log.warning("%d bad %s samples skipped, first: %s", len(problems), split, problems[0])
            report["skipped"][split] = problems
            bundle = replace(bundle, **{split: ds})
    if bundle.info.get("dropped"):  # samples a reader left out on purpose, counted (e.g. csd: no audio)
        report["dropped"] = bundle.info["dropped"]
    if hygiene_state is None:
        hygiene_state = fit_hygiene(bundle.train, bundle.modalities, config.standardize, config.drop_constant)
    bundle = apply_hygiene(bundle, hygiene_state)
    report["hygiene"] = bundle.info["hygiene"]
    return bundle, hygiene_state, report


def make_loader(
    dataset: SampleDataset, config: RunConfig, modalities, train: bool, sequence_labels: bool = False
) -> DataLoader:
    sampler = LengthBucketBatchSampler(
        dataset.lengths(), config.batch_size, shuffle=train, seed=config.seed, bucket=config.bucket,
        shard=train,  # evaluation sees every sample on every rank
    )
    return StatefulLoader(  # Lightning's resumable-loader protocol (position restored by ExactResume)
        dataset,
        batch_sampler=sampler,
        collate_fn=Collator(modalities, sequence_labels),
        num_workers=config.num_workers,
        generator=torch.Generator().manual_seed(config.seed),  # keeps the global RNG untouched (exact resume)
        persistent_workers=config.num_workers > 0,
    )


def default_run_dir(config: RunConfig) -> Path:
    """``runs/<model>-<dataset>-seed<seed>`` under ``$EMOFUSION_RUNS`` (default ``runs`` in the working folder)."""
    safe = config.dataset.replace(":", "_").replace("/", "_")
    return Path(os.environ.get("EMOFUSION_RUNS") or "runs") / f"{config.model}-{safe}-seed{config.seed}"


def train_run(config: RunConfig, resume: bool = False, callbacks: list | None = None) -> RunResult:
    run_dir = Path(config.output) if config.output else default_run_dir(config)
    resume_path = resume_checkpoint(run_dir) if resume else None  # newest checkpoint that loads
    launched_rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))  # DDP ranks re-run this
    # an earlier run in run_dir is moved aside and comes back if this one fails before a checkpoint
    with protected_run_dir(run_dir, resume, launcher=launched_rank == 0):
        return _train_run(config, run_dir, resume_path, callbacks)


def _train_run(config: RunConfig, run_dir: Path, resume_path: Path | None, callbacks: list | None) -> RunResult:
    start = time.time()
    if config.threads:
        torch.set_num_threads(config.threads)
    ckpt_dir = run_dir / "checkpoints"
    save_yaml(config.to_dict(), run_dir / "config.yaml")
    L.seed_everything(config.seed, workers=True, verbose=False)

    bundle, hygiene_state, data_report = prepare_data(config)
    (run_dir / "data_report.json").write_text(json.dumps(data_report, indent=2))
    task = bundle.task
    if config.monitor:
        task = replace(task, monitor=config.monitor)
    module = EmoFusionModule(
        config.model,
        bundle.modality_dims,
        task.to_dict(),
        config.model_options,
        config.loss,
        config.lr,
        config.weight_decay,
        hygiene_state,
        config.to_dict(),
    )
    modalities = bundle.modalities
    if getattr(module.model, "fits_closed_form", False):  # e.g. the classical baselines: one fit, no steps
        return _fit_closed_form(config, run_dir, module, bundle, start)
    if config.cv_folds:
        raise ValueError(f"cv_folds={config.cv_folds}: k-fold scoring is for closed-form models (svm, random_forest, "
                         f"gradient_boosting); {config.model} is trained by gradient steps")
    train_set, val_set = bundle.train, bundle.val
    averaged = module.model.time_averaged_inputs()
    if averaged and not (config.input_noise or config.feature_dropout):  # those act on every frame
        # inputs the model only averages are averaged once here (same output, tested), not collated per frame
        train_set, val_set = (ds.with_transform(TimeAverage(averaged)) for ds in (train_set, val_set))
    if config.materialize:
        train_set, val_set = train_set.materialized(), val_set.materialized()
    train_loader = make_loader(train_set, config, modalities, True, task.sequence_labels)
    val_loader = make_loader(val_set, config, modalities, False, task.sequence_labels)
    # the sampler is not sharded yet (the process group starts inside fit): divide by the process count
    budget = resolve_budget(config, -(-len(train_loader) // _world_size(config)))
    if config.lr_schedule == "plateau":
        module.lr_schedule = {"kind": "plateau", "factor": config.lr_factor, "patience": budget.lr_patience,
                              "min_lr": config.min_lr}
    module.augment = {"input_noise": config.input_noise, "feature_dropout": config.feature_dropout}
    train_labels = split_labels(bundle.train)
    if resume_path is None:
        module.init_from_train_labels(train_labels)

    monitor = f"val/{task.monitor}"
    # no "-v1" suffixes: best.ckpt / last.ckpt always belong to this run
    best_cb = ModelCheckpoint(
        dirpath=ckpt_dir, filename="best", monitor=monitor, mode=task.monitor_mode, save_top_k=1,
        enable_version_counter=False, save_on_train_epoch_end=False,
    )
    last_cb = ModelCheckpoint(  # last.ckpt plus the two newest step checkpoints (a truncated last has a fallback)
        dirpath=ckpt_dir, filename="step-{step}", save_last=True, save_top_k=2, monitor="step", mode="max",
        every_n_train_steps=config.checkpoint_every_n_steps or None, enable_version_counter=False,
    )
    guard = NonFiniteGuard(config.nonfinite)
    cbs = [
        guard,
        ExactResume(train_loader.batch_sampler),
        best_cb,
        last_cb,
        # patience counts validation checks (every budget.val_every_n_steps steps); Trainer(min_steps) keeps
        # the run going until budget.min_steps even when the callback asks to stop
        EarlyStopping(monitor=monitor, mode=task.monitor_mode, patience=budget.patience,
                      check_on_train_epoch_end=False),
    ]
    if config.ema_decay > 0:
        # validation, best.ckpt and the final evaluation all see the averaged weights
        cbs.append(EMAWeightAveraging(decay=config.ema_decay, use_buffers=True))
    if config.progress:
        cbs.append(RichProgressBar(leave=True))
    if os.environ.get("EMOFUSION_FAULT_AT_STEP"):
        cbs.append(FaultInjection(int(os.environ["EMOFUSION_FAULT_AT_STEP"])))
    cbs += callbacks or []
    trainer = L.Trainer(
        # a step budget still gets an epoch count (the progress bar shows "Epoch e/E", not "/-2")
        max_epochs=budget.max_epochs if budget.max_epochs >= 0 else -(-budget.max_steps // budget.steps_per_epoch),
        max_steps=budget.max_steps,
        min_steps=budget.min_steps,
        val_check_interval=budget.val_every_n_steps,
        check_val_every_n_epoch=None,  # validation counts steps across epochs
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=config.strategy,
        num_nodes=config.num_nodes,
        precision=config.precision,
        deterministic="warn" if config.deterministic else False,
        gradient_clip_val=config.gradient_clip or None,
        callbacks=cbs,
        logger=ResumableCSVLogger(  # a resumed run keeps the rows logged before its checkpoint
            run_dir, name="", version="", keep_before_step=checkpoint_step(resume_path) if resume_path else None
        ),
        enable_progress_bar=config.progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        log_every_n_steps=max(1, min(5, len(train_loader))),
        default_root_dir=run_dir,
    )
    trainer.fit(module, train_loader, val_loader, ckpt_path=str(resume_path) if resume_path else None)
    if trainer.global_rank != 0:
        return RunResult({}, run_dir, module, bundle, time.time() - start)

    best_path = best_cb.best_model_path
    if best_path and Path(best_path).exists():
        module = EmoFusionModule.load_from_checkpoint(best_path, map_location="cpu", weights_only=False)
    module.eval()
    metrics = {s: evaluate_split(module, bundle, s, config=config) for s in ("val", "test")}
    baselines = bundle_baselines(bundle, ("val", "test"), seed=config.seed, train_labels=train_labels)
    best_score = best_cb.best_model_score
    metrics_info = {
        "best_checkpoint": best_path,
        # the checkpoint was chosen by this validation metric (the protocol's: preset monitor or task default)
        "monitor": task.monitor,
        "monitor_mode": task.monitor_mode,
        "best_val_score": float(best_score) if best_score is not None else None,
        "best_step": _checkpoint_step(best_path),
        "steps_trained": int(trainer.global_step),
        "epochs_trained": trainer.current_epoch,
        "stopped_early": bool(trainer.should_stop) and int(trainer.global_step) < _step_cap(budget),
        "budget": budget.to_dict(),
        "seconds": round(time.time() - start, 2),
        "num_parameters": module.model.num_parameters(),
        "nonfinite_steps_skipped": guard.skipped,
    }
    payload = {**metrics, "baselines": baselines, "info": metrics_info}
    (run_dir / "metrics.json").write_text(json.dumps(payload, indent=2, default=float))
    from emofusion.pretrained import save_pretrained

    save_pretrained(module, run_dir / "model", metrics=payload)  # self-contained copy (weights, config, hygiene)
    check_headline(metrics, task.monitor, str(run_dir))  # a NaN headline never ends as a success
    # plots are drawn by the callers (CLI, suites: emofusion.evaluation.plots.plot_run); the engine does not
    # import the reporting layer
    return RunResult(metrics, run_dir, module, bundle, time.time() - start, baselines, metrics_info)


def _fit_closed_form(config: RunConfig, run_dir: Path, module: EmoFusionModule, bundle: DatasetBundle,
                     start: float) -> RunResult:
    """A model that declares ``fits_closed_form`` (``models/classical.py``) is fitted once on the whole training
    split (``model.features`` of its batches, ``model.fit``), then evaluated, saved and reported like a trained
    run: the same metrics.json (with the baselines), a ``best.ckpt`` that :func:`load_module` reads, no
    validation-driven stopping (nothing to stop), no safetensors copy (the estimator is not tensors)."""
    model = module.model
    loader = make_loader(bundle.train, replace(config, num_workers=0), bundle.modalities, False,
                         module.task.sequence_labels)
    features, labels = [], []
    for batch in loader:
        features.append(model.features({m: batch.inputs[m] for m in module.modalities}))
        labels.append(batch.labels.cpu().numpy())
    features, labels = np.concatenate(features), np.concatenate(labels)
    cv, cv_baselines = _closed_form_cv(model, features, labels, config, module) if config.cv_folds else (None, None)
    model.fit(features, labels, seed=config.seed, loss=module.loss_name)
    module.eval()
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    best_path = ckpt_dir / "best.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": L.__version__, "global_step": 0, "epoch": 0}, best_path)
    metrics = {s: evaluate_split(module, bundle, s, config=config) for s in ("val", "test")}
    if cv is not None:
        metrics["cv"] = cv
    info = {
        "best_checkpoint": str(best_path),
        "monitor": None,  # no checkpoint selection: one fit on the training split
        "fitted": "closed form (one fit on the training split, no validation-driven stopping)",
        "estimator": repr(getattr(model, "estimator", None)),
        "train_samples": int(len(features)),
        "steps_trained": 0,
        "seconds": round(time.time() - start, 2),
        "num_parameters": 0,
    }
    if cv is not None:
        info["cv"] = f"{config.cv_folds}-fold out-of-fold predictions on the training split (folds seeded by the run's seed)"
    baselines = bundle_baselines(bundle, ("val", "test"), seed=config.seed, train_labels=split_labels(bundle.train))
    if cv_baselines is not None:
        baselines["cv"] = cv_baselines
    payload = {**metrics, "baselines": baselines, "info": info}
    (run_dir / "metrics.json").write_text(json.dumps(payload, indent=2, default=float))
    check_headline(metrics, module.task.monitor, str(run_dir))
    return RunResult(metrics, run_dir, module, bundle, time.time() - start, baselines, info)


def _closed_form_cv(model, features: np.ndarray, labels: np.ndarray, config: RunConfig, module) -> tuple[dict, dict]:
    """Metrics of k-fold out-of-fold predictions on the training split, and the trivial baselines under the same
    folds: each fold's estimator is fitted on the other folds (a copy of the model, the run's seed and loss), so
    every training sample is predicted by a fit that did not see it. Folds are shuffled with the run's seed,
    stratified for classes."""
    import copy

    from sklearn.model_selection import KFold, StratifiedKFold

    from emofusion.evaluation.baselines import cross_validated_baselines

    task = module.task
    k = int(config.cv_folds)
    if k < 2 or k > len(features):
        raise ValueError(f"cv_folds={k}: needs 2 <= folds <= {len(features)} training samples")
    if task.is_regression:
        folds = list(KFold(k, shuffle=True, random_state=config.seed).split(features))
    else:
        folds = list(StratifiedKFold(k, shuffle=True, random_state=config.seed).split(features, labels.reshape(-1)))
    oof = None
    for fit_idx, held_idx in folds:
        fold_model = copy.deepcopy(model)
        fold_model.fit(features[fit_idx], labels[fit_idx], seed=config.seed, loss=module.loss_name)
        pred = fold_model.predict_features(features[held_idx])
        if oof is None:
            oof = np.full((len(features), pred.shape[1]), np.nan)
        oof[held_idx] = pred
    truth = labels.reshape(len(labels), -1) if task.is_regression else labels.reshape(-1)
    metrics = {k_: float(v) for k_, v in compute_metrics(task, oof, truth).items()}
    return metrics, cross_validated_baselines(task, truth, folds, seed=config.seed)


def _world_size(config: RunConfig) -> int:
    """Processes of a run (devices x nodes); ``devices="auto"`` on CPU is one process."""
    devices = config.devices
    if isinstance(devices, (list, tuple)):
        count = len(devices)
    elif isinstance(devices, int) or (isinstance(devices, str) and devices.isdigit()):
        count = max(1, int(devices))
    else:
        count = 1
    return count * max(1, int(config.num_nodes))


def _step_cap(budget) -> int:
    caps = [c for c in (budget.max_steps, budget.max_epochs * budget.steps_per_epoch if budget.max_epochs >= 0 else -1)
            if c >= 0]
    return min(caps) if caps else 1 << 62


def _checkpoint_step(path: str | None) -> int | None:
    if not path or not Path(path).exists():
        return None
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])
    except Exception:  # an unreadable checkpoint is reported by the loader, not here
        return None


def evaluate_split(
    module: EmoFusionModule, bundle: DatasetBundle, split: str = "test", transform=None,
    config: RunConfig | None = None, return_predictions: bool = False,
):
    """Metrics of ``module`` on one split, optionally with a test-time ``Sample -> Sample`` transform
    (robustness perturbations). The transform runs after hygiene, on standardised features."""
    dataset = bundle.split(split)
    if transform is not None:
        dataset = dataset.with_transform(transform)
    config = config or RunConfig(batch_size=64)
    loader = make_loader(dataset, replace(config, num_workers=0), module.modalities, False, module.task.sequence_labels)
    out = module.predict_loader(loader)
    metrics = compute_metrics(module.task, out["predictions"], out["labels"])
    return (metrics, out) if return_predictions else metrics


def _recorded_best(run_dir: Path) -> Path | None:
    """The best checkpoint named in the run's metrics.json (runs of older versions may have a stale best.ckpt
    beside a ``best-v1.ckpt`` when a folder was reused)."""
    try:
        name = json.loads((run_dir / "metrics.json").read_text())["info"]["best_checkpoint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    candidate = run_dir / "checkpoints" / Path(name).name if name else None
    return candidate if candidate is not None and candidate.exists() else None


def load_module(checkpoint: str | Path) -> EmoFusionModule:
    path = Path(checkpoint)
    from emofusion.pretrained import from_pretrained, is_pretrained_dir

    if is_pretrained_dir(path):  # a self-contained model folder (emofusion export --format pretrained)
        return from_pretrained(path)
    if path.is_dir():
        candidates = [path / "checkpoints" / "best.ckpt", path / "checkpoints" / "last.ckpt"]
        recorded = _recorded_best(path)
        if recorded is not None:
            candidates.insert(0, recorded)
        for candidate in candidates:
            if candidate.exists():
                path = candidate
                break
        else:
            raise FileNotFoundError(
                f"{checkpoint}: no checkpoint in this folder (looked for checkpoints/best.ckpt and last.ckpt); "
                "give a run directory of `emofusion train` or a .ckpt file"
            )
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    module = EmoFusionModule.load_from_checkpoint(path, map_location="cpu", weights_only=False)
    module.eval()
    return module


def bundle_for_module(module: EmoFusionModule, dataset: str | None = None, dataset_options: dict | None = None):
    """The dataset a checkpoint was trained on (or another with the same modalities), with its hygiene."""
    run = RunConfig.from_dict(module.hparams.run_config) if module.hparams.run_config else RunConfig()
    if dataset is not None and dataset != run.dataset:
        run = replace(run, dataset=dataset, dataset_options=dataset_options or {})
    elif dataset_options:
        run = replace(run, dataset_options={**run.dataset_options, **dataset_options})
    run = replace(run, modalities=module.modalities)
    bundle, _, _ = prepare_data(run, hygiene_state=module.hparams.hygiene_state)
    return bundle, run


def config_from_run_dir(run_dir: str | Path) -> RunConfig:
    return RunConfig.from_dict(load_yaml(Path(run_dir) / "config.yaml"))


__all__ = [
    "RunConfig",
    "RunResult",
    "train_run",
    "evaluate_split",
    "load_module",
    "bundle_for_module",
    "prepare_data",
    "make_loader",
]
