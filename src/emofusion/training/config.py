"""Run configuration: a dataclass, loadable from YAML, with ``key=value`` command-line overrides.

Override keys are RunConfig fields (``lr=3e-4``), ``model.<option>`` for model options and ``data.<option>``
for dataset options (``data.noise.visual=2``); values are parsed as YAML (numbers, lists, booleans).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

LR_SCHEDULES = ("plateau", "none")

# The default budget (docs/training.md, "Training recipe"). MMSA on ICT-MMMO: batch 32, at most 60 epochs,
# patience 8 epochs; these defaults are at least that generous on small sets and stay bounded on large ones.
BUDGET_EPOCHS = 60  # default budget: 60 epochs ...
BUDGET_MIN_STEPS = 1500  # ... but never fewer than this many optimiser steps (small sets have few per epoch)
MIN_STEPS = 200  # early stopping may not stop before this many steps
VAL_MIN_STEPS, VAL_MAX_STEPS = 8, 100  # validation interval bounds (steps)


@dataclass(frozen=True)
class Budget:
    """The resolved budget of one run, in optimiser steps (recorded in metrics.json ``info.budget``)."""

    steps_per_epoch: int
    max_steps: int  # -1: no step cap (an epoch cap applies)
    max_epochs: int  # -1: no epoch cap
    val_every_n_steps: int
    min_steps: int
    patience: int  # validation checks
    lr_patience: int  # validation checks

    def to_dict(self) -> dict:
        return asdict(self)


def _divisor_interval(auto: int, total: int) -> int:
    """The largest interval in [auto/2, auto] dividing ``total`` (so the last step is validated), else auto."""
    if total <= auto:
        return max(1, total)
    for d in range(auto, max(1, auto // 2) - 1, -1):
        if total % d == 0:
            return d
    return auto


def resolve_budget(config: RunConfig, steps_per_epoch: int) -> Budget:
    """Steps per epoch (per process) -> the run's budget. The rule (docs/training.md):

    - validation every ``ceil(steps_per_epoch / 2)`` steps, clamped to [8, 100] (twice per epoch on mid-size
      sets, several times on large ones, every few epochs on tiny ones), chosen to divide the budget;
    - budget: ``max_steps`` if given; else ``max_epochs`` epochs if given; else
      ``max(1500, 60 * steps_per_epoch)`` steps (rounded up to a whole number of validation intervals);
    - early stopping after ``patience`` checks without improvement, never before ``min_steps`` (200);
      ``patience_epochs`` (a paper's epochs) becomes ``ceil(patience_epochs * steps_per_epoch / interval)`` checks;
    - the plateau schedule halves the LR after ``lr_patience`` (patience // 2) checks without improvement.
    """
    spe = max(1, int(steps_per_epoch))
    auto_val = config.val_every_n_steps or min(VAL_MAX_STEPS, max(VAL_MIN_STEPS, -(-spe // 2)))
    max_epochs = config.max_epochs if config.max_epochs is not None else -1
    if config.max_steps is not None:
        max_steps = int(config.max_steps)
        total = max_steps if max_epochs < 0 else min(max_steps, max_epochs * spe)
    elif max_epochs >= 0:
        max_steps, total = -1, max_epochs * spe
    else:
        total = max(BUDGET_MIN_STEPS, BUDGET_EPOCHS * spe)
        if not config.val_every_n_steps:
            total = -(-total // auto_val) * auto_val
        max_steps = total
    val_every = auto_val if config.val_every_n_steps else _divisor_interval(auto_val, max(1, total))
    min_steps = config.min_steps if config.min_steps is not None else MIN_STEPS
    min_steps = max(0, min(int(min_steps), total))
    patience = int(config.patience)
    if config.patience_epochs is not None:
        patience = max(1, -(-int(config.patience_epochs) * spe // int(val_every)))
    lr_patience = config.lr_patience if config.lr_patience is not None else max(1, patience // 2)
    return Budget(spe, max_steps, max_epochs, int(val_every), min_steps, patience, int(lr_patience))


@dataclass
class RunConfig:
    model: str = "early_fusion_lstm"
    dataset: str = "synthetic"
    modalities: list[str] | None = None  # None: every modality of the dataset
    model_options: dict = field(default_factory=dict)
    dataset_options: dict = field(default_factory=dict)
    # budget and stopping (docs/training.md); None fields are derived from the train-set size by resolve_budget
    max_epochs: int | None = None  # an epoch cap; None: the step budget alone decides
    max_steps: int | None = None  # optimiser steps; None: max(BUDGET_MIN_STEPS, BUDGET_EPOCHS epochs) without max_epochs
    min_steps: int | None = None  # early stopping cannot stop before; None: MIN_STEPS (within the budget)
    val_every_n_steps: int | None = None  # None: ceil(steps per epoch / 2) clamped to [8, 100]
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    loss: str | None = None  # None: the task's default (l1 regression, ce classification, bce multi-label)
    patience: int = 10  # validation checks without improvement of the monitored metric
    # a paper's patience in epochs (e.g. paper 003: 10): converted to validation checks at this dataset's
    # interval, ceil(patience_epochs * steps_per_epoch / val_every_n_steps); replaces ``patience`` when set
    patience_epochs: int | None = None
    monitor: str | None = None  # None: the task's default metric (e.g. mae, accuracy)
    lr_schedule: str = "plateau"  # "plateau": ReduceLROnPlateau on the monitored metric at each check; "none"
    lr_factor: float = 0.5
    lr_patience: int | None = None  # checks without improvement before the LR drops; None: patience // 2
    min_lr: float = 1e-6
    seed: int = 0
    # closed-form models (models/classical.py): also score k-fold out-of-fold predictions on the training
    # split (metrics.json "cv"), a selection number far less noisy than a small validation split; 0: off
    cv_folds: int = 0
    deterministic: bool = True
    output: str | None = None
    # feature scaling fitted on train (data/hygiene.py): true / "zscore", "quantile" (rank-Gauss), false / "none"
    standardize: bool | str = True
    drop_constant: bool = True
    strict: bool = False  # True: a bad sample stops the run instead of being skipped and counted
    bucket: bool = True  # length-bucketed batches
    # in-memory datasets: standardise train/val once before training instead of every epoch (holds a second,
    # float32 copy of those splits; false halves the memory of a huge in-memory set). Lazy formats: no effect.
    materialize: bool = True
    gradient_clip: float = 0.0
    # > 0: validate, select and save an exponential moving average of the weights (Polyak averaging; decay per
    # optimiser step). Small real sets (ICT-MMMO: 220 training videos) select a lucky step otherwise.
    ema_decay: float = 0.0
    # training-time input regularisation on standardised features: Gaussian noise std, dropout of single values
    input_noise: float = 0.0
    feature_dropout: float = 0.0
    nonfinite: str = "stop"  # a NaN/inf loss or gradient: stop the run (last good checkpoint kept) or skip the step
    checkpoint_every_n_steps: int = 20
    accelerator: str = "cpu"
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    num_workers: int = 0
    threads: int | None = None  # torch intra-op threads; None leaves the default
    progress: bool = True
    plots: bool = True

    def __post_init__(self):
        # YAML 1.1 reads 1e-3 as a string; coerce numeric fields and name the field when that fails
        for name, kind in (("lr", float), ("weight_decay", float), ("gradient_clip", float), ("max_epochs", int),
                           ("batch_size", int), ("patience", int), ("seed", int), ("checkpoint_every_n_steps", int),
                           ("num_workers", int), ("num_nodes", int), ("max_steps", int), ("min_steps", int),
                           ("val_every_n_steps", int), ("patience_epochs", int), ("lr_factor", float), ("lr_patience", int),
                           ("min_lr", float), ("ema_decay", float),
                           ("input_noise", float), ("feature_dropout", float)):
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    setattr(self, name, kind(float(value)) if kind is int else kind(value))
                except ValueError:
                    raise ValueError(f"config field {name!r} must be a number, got {value!r}") from None
        if isinstance(self.modalities, str):
            self.modalities = [m.strip() for m in self.modalities.split(",") if m.strip()]
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"config field 'lr_schedule' must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        from emofusion.training.config_checks import validate_config

        validate_config(self)  # type and range of every field, named in the message

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            from emofusion.training.config_checks import unknown_fields_error

            raise unknown_fields_error(unknown, known)
        return cls(**data)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping, got {type(data).__name__}")
    # files may use the short section names of overrides
    for short, long in (("model_args", "model_options"), ("data", "dataset_options")):
        if short in data and isinstance(data[short], dict):
            data.setdefault(long, {}).update(data.pop(short))
    return data


def set_section_option(data: dict, key: str, value) -> bool:
    """``model.X.Y=v`` -> ``data["model_options"]["X"]["Y"] = v`` (``data.`` -> dataset_options); False (and
    nothing set) when ``key`` names no such section option."""
    parts = key.split(".")
    if parts[0] not in ("model", "data") or len(parts) < 2:
        return False
    target = data.setdefault("model_options" if parts[0] == "model" else "dataset_options", {})
    for p in parts[1:-1]:
        target = target.setdefault(p, {})
    target[parts[-1]] = value
    return True


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = {**data, "model_options": dict(data.get("model_options", {})),
            "dataset_options": dict(data.get("dataset_options", {}))}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        value = _parse_value(raw)
        parts = key.split(".")
        if set_section_option(data, key, value):
            continue
        if len(parts) == 1:
            if key == "modalities" and isinstance(value, str):
                value = [m.strip() for m in value.split(",") if m.strip()]
            data[key] = value
        else:
            raise ValueError(f"override {item!r}: nested keys must start with 'model.' or 'data.'")
    return data


def _parse_value(raw: str):
    if raw == "":
        return None
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value)  # 1e-3 (YAML 1.1 leaves exponents without a dot as strings)
        except ValueError:
            return value
    return value


def save_yaml(data: dict, path: str | Path) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
