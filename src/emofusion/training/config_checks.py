"""Type and range checks of every RunConfig field, with messages that name the field (and the closest
valid field for a typo). Types come from the dataclass annotations, so new fields are checked too."""

from __future__ import annotations

import dataclasses
import difflib
import math

# lower bounds (inclusive unless noted) and choices; fields not listed only get the type check
MINIMUM = {
    "max_epochs": 0, "batch_size": 1, "weight_decay": 0.0, "patience": 0, "gradient_clip": 0.0,
    "checkpoint_every_n_steps": 0, "num_nodes": 1, "num_workers": 0, "threads": 1, "seed": 0,
    "max_steps": 1, "min_steps": 0, "val_every_n_steps": 1, "lr_patience": 0, "min_lr": 0.0,
    "ema_decay": 0.0, "input_noise": 0.0, "patience_epochs": 0, "feature_dropout": 0.0, "cv_folds": 0,
}
BELOW_ONE = {"ema_decay", "feature_dropout"}
POSITIVE = {"lr", "lr_factor"}
CHOICES = {"nonfinite": ("stop", "skip"), "standardize": ("zscore", "quantile", "none")}


class ConfigError(ValueError):
    """A config field has a wrong name, type or value (one-line CLI error)."""


def _kinds(annotation: str) -> list[str]:
    return [a.strip().split("[")[0] for a in str(annotation).split("|")]


def _coerce(name: str, value, kinds: list[str]):
    if value is None:
        if "None" in kinds:
            return None
        raise ConfigError(f"config field {name!r} must be set (got nothing)")
    if "bool" in kinds and isinstance(value, bool):
        return value
    if "int" in kinds and not isinstance(value, bool):
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    if "float" in kinds and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if "str" in kinds and isinstance(value, str):
        return value
    if "list" in kinds and isinstance(value, list | tuple):
        return list(value)
    if "dict" in kinds and isinstance(value, dict):
        return value
    wanted = " or ".join(k if k != "None" else "null" for k in kinds)
    article = "an" if wanted[0] in "aeiou" else "a"
    raise ConfigError(f"config field {name!r} must be {article} {wanted}, got {value!r} ({type(value).__name__})")


def validate_config(cfg) -> None:
    """Checks (and normalises: 3.0 -> 3 for ints, 1 -> 1.0 for floats) every field of a RunConfig."""
    for f in dataclasses.fields(cfg):
        value = _coerce(f.name, getattr(cfg, f.name), _kinds(f.type))
        setattr(cfg, f.name, value)
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config field {f.name!r} must be finite, got {value}")
        if f.name in MINIMUM and isinstance(value, int | float) and value < MINIMUM[f.name]:
            raise ConfigError(f"config field {f.name!r} must be >= {MINIMUM[f.name]}, got {value!r}")
        if f.name in POSITIVE and isinstance(value, int | float) and value <= 0:
            raise ConfigError(f"config field {f.name!r} must be > 0, got {value!r}")
        if f.name in BELOW_ONE and isinstance(value, int | float) and value >= 1:
            raise ConfigError(f"config field {f.name!r} must be < 1, got {value!r}")
        if f.name in CHOICES and value not in CHOICES[f.name]:
            raise ConfigError(f"config field {f.name!r} must be one of {', '.join(CHOICES[f.name])}, got {value!r}")


def unknown_fields_error(unknown: list[str], known: set[str]) -> ConfigError:
    parts = []
    for u in unknown:
        close = difflib.get_close_matches(u, sorted(known), n=1, cutoff=0.6)
        parts.append(f"{u!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ConfigError(
        f"unknown config field {', '.join(parts)}; valid fields: {', '.join(sorted(known))} "
        "(model options go in model.NAME=..., dataset options in data.NAME=...)"
    )


def preset_dirs() -> list:
    """Where named presets live: the installed package's configs (package data), then a source tree's."""
    from pathlib import Path

    here = Path(__file__).resolve()
    dirs = [here.parents[1] / "configs", here.parents[3] / "configs"]
    return [d for d in dirs if d.is_dir()]


def list_presets() -> list[str]:
    return sorted({p.stem for d in preset_dirs() for p in d.glob("*.yaml")})


def resolve_config(name_or_path: str):
    """A YAML path as given, or a preset name (``rrnn_mosei``) from the shipped configs."""
    from pathlib import Path

    path = Path(name_or_path)
    if path.exists():
        return path
    stem = path.stem if path.suffix in (".yaml", ".yml") else path.name
    if path.parent == Path("."):
        for d in preset_dirs():
            if (d / f"{stem}.yaml").is_file():
                return d / f"{stem}.yaml"
    names = list_presets()
    close = difflib.get_close_matches(stem, names, n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    raise FileNotFoundError(
        f"config file {name_or_path} does not exist and is not a shipped preset.{hint} Presets: {', '.join(names)}"
    )
