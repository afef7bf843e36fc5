"""Run configuration: a dataclass, loadable from YAML, with ``key=value`` command-line overrides.

Override keys are RunConfig fields (``lr=3e-4``), ``model.<option>`` for model options and ``data.<option>``
for dataset options (``data.noise.visual=2``); values are parsed as YAML (numbers, lists, booleans).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml


@dataclass
class RunConfig:
    model: str = "early_fusion_lstm"
    dataset: str = "synthetic"
    modalities: list[str] | None = None  # None: every modality of the dataset
    model_options: dict = field(default_factory=dict)
    dataset_options: dict = field(default_factory=dict)
    max_epochs: int = 15
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    loss: str | None = None  # None: the task's default (l1 regression, ce classification, bce multi-label)
    patience: int = 5
    monitor: str | None = None  # None: the task's default metric (e.g. mae, accuracy)
    seed: int = 0
    deterministic: bool = True
    output: str | None = None
    standardize: bool = True
    drop_constant: bool = True
    strict: bool = False  # True: a bad sample stops the run instead of being skipped and counted
    bucket: bool = True  # length-bucketed batches
    gradient_clip: float = 0.0
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
                           ("num_workers", int), ("num_nodes", int)):
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    setattr(self, name, kind(float(value)) if kind is int else kind(value))
                except ValueError:
                    raise ValueError(f"config field {name!r} must be a number, got {value!r}") from None
        if isinstance(self.modalities, str):
            self.modalities = [m.strip() for m in self.modalities.split(",") if m.strip()]
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


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = {**data, "model_options": dict(data.get("model_options", {})),
            "dataset_options": dict(data.get("dataset_options", {}))}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        value = _parse_value(raw)
        parts = key.split(".")
        if parts[0] in ("model", "data") and len(parts) > 1:
            target = data["model_options" if parts[0] == "model" else "dataset_options"]
            for p in parts[1:-1]:
                target = target.setdefault(p, {})
            target[parts[-1]] = value
        elif len(parts) == 1:
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
