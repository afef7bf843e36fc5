"""Test-time perturbations: ``Sample -> Sample`` transforms for robustness sweeps.

Every perturbation is a small picklable class (it can travel to DataLoader workers and suite processes).
Randomness is drawn from a generator seeded by ``(seed, stable hash of the sample id)``, so a perturbed
test set is identical across runs, processes and evaluation orders. Inputs are never modified in place.

Kinds (``make_perturbation({"kind": ..., ...})`` builds them from plain dicts, as suite cells store them):

* ``gaussian_noise``: additive white noise on one modality, by SNR in dB relative to that sample's own
  signal power (mean square over its finite entries), or by absolute ``std``.
* ``missing_modality``: the modality is dropped from the sample (``mode="drop"``); ``mode="empty"`` keeps it
  with zero steps (mask all False: padding-safe models see "no evidence"); ``mode="zero"`` (or
  ``zero=True``) keeps its shape with all values 0, for models that cannot run without it.
* ``temporal_shift``: one modality's content moved later (positive) or earlier (negative) relative to the
  others, by seconds when the sample has intervals for it, else by steps. Length is kept; steps that
  would come from outside the sequence repeat the edge step (no artificial zeros).
* ``speaker_offset``: a constant vector added to every step of a speaker's samples, drawn from
  ``N(0, std^2)`` per dimension, deterministic per (seed, speaker id): the idiosyncrasy a model must
  not latch on to.
* ``frame_drop``: each step removed independently with probability ``rate`` (intervals and words follow),
  keeping at least one step unless ``keep_one=False``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Iterable, Sequence

import numpy as np

from emofusion.data.batch import Sample


def stable_hash(text: str) -> int:
    """A process-independent 63-bit hash (Python's ``hash`` of str is salted per process)."""
    return int.from_bytes(hashlib.blake2b(str(text).encode(), digest_size=8).digest(), "little") >> 1


def _rng(seed: int, key: str, salt: str) -> np.random.Generator:
    return np.random.default_rng((int(seed), stable_hash(salt), stable_hash(key)))


def _copy(sample: Sample, **changes) -> Sample:
    # shallow copy with fresh dicts so the source sample (often shared by a dataset) is never mutated
    base = {"features": dict(sample.features), "intervals": dict(sample.intervals)}
    base.update(changes)
    return dataclasses.replace(sample, **base)


def _require(sample: Sample, modality: str, kind: str) -> np.ndarray:
    if modality not in sample.features:
        raise KeyError(
            f"{kind}: sample {sample.id!r} has no modality {modality!r} (it has {sorted(sample.features)})"
        )
    return sample.features[modality]


class Perturbation:
    """Base class: ``__call__(sample) -> sample``; ``spec()`` gives the dict that rebuilds it."""

    kind: str = ""

    def __call__(self, sample: Sample) -> Sample:  # pragma: no cover - abstract
        raise NotImplementedError

    def spec(self) -> dict:
        return {"kind": self.kind, **{k: v for k, v in vars(self).items() if not k.startswith("_")}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.spec().items() if k != "kind")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.spec() == other.spec()

    def __hash__(self) -> int:
        return hash(repr(self))


class GaussianNoise(Perturbation):
    kind = "gaussian_noise"

    def __init__(self, modality: str, snr_db: float | None = None, std: float | None = None, seed: int = 0):
        if (snr_db is None) == (std is None):
            raise ValueError("gaussian_noise: give exactly one of snr_db or std")
        if std is not None and std < 0:
            raise ValueError(f"gaussian_noise: std must be >= 0, got {std}")
        self.modality = modality
        self.snr_db = None if snr_db is None else float(snr_db)
        self.std = None if std is None else float(std)
        self.seed = int(seed)

    def noise_std(self, values: np.ndarray) -> float:
        if self.std is not None:
            return self.std
        if math.isinf(self.snr_db) and self.snr_db > 0:
            return 0.0
        finite = values[np.isfinite(values)]
        power = float(np.mean(np.square(finite, dtype=np.float64))) if finite.size else 0.0
        return math.sqrt(power / 10.0 ** (self.snr_db / 10.0))

    def __call__(self, sample: Sample) -> Sample:
        values = _require(sample, self.modality, self.kind)
        std = self.noise_std(values)
        if std == 0.0 or values.size == 0:
            return sample
        rng = _rng(self.seed, sample.id, f"{self.kind}/{self.modality}")
        noisy = (values + std * rng.standard_normal(values.shape)).astype(values.dtype, copy=False)
        out = _copy(sample)
        out.features[self.modality] = noisy
        return out


class MissingModality(Perturbation):
    kind = "missing_modality"
    MODES = ("drop", "empty", "zero")

    def __init__(self, modality: str, mode: str = "drop", zero: bool = False):
        if zero:
            mode = "zero"
        if mode not in self.MODES:
            raise ValueError(f"missing_modality: mode must be one of {self.MODES}, got {mode!r}")
        self.modality = modality
        self.mode = mode

    def spec(self) -> dict:
        return {"kind": self.kind, "modality": self.modality, "mode": self.mode}

    def __call__(self, sample: Sample) -> Sample:
        values = _require(sample, self.modality, self.kind)
        out = _copy(sample)
        if self.mode == "drop":
            del out.features[self.modality]
            out.intervals.pop(self.modality, None)
        elif self.mode == "empty":
            out.features[self.modality] = values[:0].copy()
            if self.modality in out.intervals:
                out.intervals[self.modality] = out.intervals[self.modality][:0].copy()
        else:
            out.features[self.modality] = np.zeros_like(values)
        if self.mode != "zero" and self.modality == "text" and sample.words is not None:
            out.words = None if self.mode == "drop" else []
        return out


class TemporalShift(Perturbation):
    kind = "temporal_shift"

    def __init__(self, modality: str, seconds: float | None = None, steps: int | None = None):
        if (seconds is None) == (steps is None):
            raise ValueError("temporal_shift: give exactly one of seconds or steps")
        self.modality = modality
        self.seconds = None if seconds is None else float(seconds)
        self.steps = None if steps is None else int(steps)

    def source_index(self, sample: Sample) -> np.ndarray:
        """For each output step, the input step whose content it shows."""
        n = sample.length(self.modality)
        iv = sample.intervals.get(self.modality)
        if self.seconds is not None and iv is not None and len(iv) == n:
            centers = np.asarray(iv, dtype=np.float64).mean(axis=1)
            # content that happened at time t now appears at t + seconds: step i shows the step nearest
            # to (center_i - seconds)
            target = centers - self.seconds
            idx = np.searchsorted(centers, target)
            idx = np.clip(idx, 0, n - 1)
            prev = np.clip(idx - 1, 0, n - 1)
            closer_prev = np.abs(centers[prev] - target) <= np.abs(centers[idx] - target)
            return np.where(closer_prev, prev, idx)
        if self.seconds is not None:
            raise ValueError(
                f"temporal_shift: sample {sample.id!r} has no intervals for {self.modality!r}; "
                "shift by steps instead"
            )
        return np.clip(np.arange(n) - self.steps, 0, n - 1)

    def __call__(self, sample: Sample) -> Sample:
        values = _require(sample, self.modality, self.kind)
        if values.shape[0] == 0 or ((self.seconds or 0) == 0 and (self.steps or 0) == 0):
            return sample
        out = _copy(sample)
        out.features[self.modality] = values[self.source_index(sample)]
        return out


class SpeakerOffset(Perturbation):
    kind = "speaker_offset"

    def __init__(self, modality: str | Sequence[str] = ("audio", "visual"), std: float = 1.0, seed: int = 0):
        if std < 0:
            raise ValueError(f"speaker_offset: std must be >= 0, got {std}")
        self.modality = modality if isinstance(modality, str) else list(modality)
        self.std = float(std)
        self.seed = int(seed)

    def offset(self, speaker: str | None, modality: str, dim: int) -> np.ndarray:
        rng = _rng(self.seed, str(speaker), f"{self.kind}/{modality}")
        return self.std * rng.standard_normal(dim)

    def __call__(self, sample: Sample) -> Sample:
        modalities = [self.modality] if isinstance(self.modality, str) else self.modality
        present = [m for m in modalities if m in sample.features]
        if isinstance(self.modality, str):
            _require(sample, self.modality, self.kind)
        if self.std == 0.0 or not present:
            return sample
        out = _copy(sample)
        for m in present:
            v = sample.features[m]
            out.features[m] = (v + self.offset(sample.speaker, m, v.shape[1])).astype(v.dtype, copy=False)
        return out


class FrameDrop(Perturbation):
    kind = "frame_drop"

    def __init__(self, modality: str | Sequence[str], rate: float, seed: int = 0, keep_one: bool = True):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"frame_drop: rate must be in [0, 1], got {rate}")
        self.modality = modality if isinstance(modality, str) else list(modality)
        self.rate = float(rate)
        self.seed = int(seed)
        self.keep_one = bool(keep_one)

    def __call__(self, sample: Sample) -> Sample:
        modalities = [self.modality] if isinstance(self.modality, str) else self.modality
        for m in modalities:
            _require(sample, m, self.kind)
        if self.rate == 0.0:
            return sample
        out = _copy(sample)
        for m in modalities:
            v = sample.features[m]
            rng = _rng(self.seed, sample.id, f"{self.kind}/{m}")
            keep = rng.random(v.shape[0]) >= self.rate
            if self.keep_one and v.shape[0] and not keep.any():
                keep[rng.integers(v.shape[0])] = True
            out.features[m] = v[keep]
            if m in sample.intervals and len(sample.intervals[m]) == len(keep):
                out.intervals[m] = sample.intervals[m][keep]
            if m == "text" and sample.words is not None and len(sample.words) == len(keep):
                out.words = [w for w, k in zip(sample.words, keep) if k]
        return out


class Compose(Perturbation):
    kind = "compose"

    def __init__(self, steps: Iterable[Perturbation | dict]):
        self.steps = [make_perturbation(s) if isinstance(s, dict) else s for s in steps]

    def spec(self) -> dict:
        return {"kind": self.kind, "steps": [s.spec() for s in self.steps]}

    def __call__(self, sample: Sample) -> Sample:
        for step in self.steps:
            sample = step(sample)
        return sample


PERTURBATIONS: dict[str, type[Perturbation]] = {
    cls.kind: cls
    for cls in (GaussianNoise, MissingModality, TemporalShift, SpeakerOffset, FrameDrop, Compose)
}


def make_perturbation(spec: dict | Perturbation | None) -> Perturbation | None:
    """Build a perturbation from ``{"kind": ..., **options}`` (``None`` -> ``None``: clean data)."""
    if spec is None or isinstance(spec, Perturbation):
        return spec
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ValueError(f"a perturbation spec is a dict with a 'kind' key, got {spec!r}")
    options = {k: v for k, v in spec.items() if k != "kind"}
    kind = spec["kind"]
    if kind not in PERTURBATIONS:
        raise KeyError(f"unknown perturbation kind {kind!r}; known: {', '.join(sorted(PERTURBATIONS))}")
    try:
        return PERTURBATIONS[kind](**options)
    except TypeError as err:
        raise TypeError(f"perturbation {kind!r}: {err}") from err


def perturbation_label(spec: dict | None) -> str:
    """A short human-readable name for a spec, e.g. ``gaussian_noise(visual, snr_db=0)``."""
    if spec is None:
        return "clean"
    spec = make_perturbation(spec).spec()
    if spec["kind"] == "compose":
        return " + ".join(perturbation_label(s) for s in spec["steps"])
    args = [str(spec["modality"])] if "modality" in spec else []
    args += [f"{k}={v}" for k, v in spec.items() if k not in ("kind", "modality", "seed") and v is not None]
    return f"{spec['kind']}({', '.join(args)})"


# default severity grids of the robustness suite: (parameter, values from mild to severe)
DEFAULT_SEVERITIES: dict[str, tuple[str, list]] = {
    "gaussian_noise": ("snr_db", [20.0, 10.0, 5.0, 0.0, -5.0]),
    "missing_modality": ("mode", ["drop"]),
    "temporal_shift": ("seconds", [0.25, 0.5, 1.0, 2.0]),
    "speaker_offset": ("std", [0.25, 0.5, 1.0, 2.0]),
    "frame_drop": ("rate", [0.1, 0.3, 0.5, 0.8]),
}


def severity_sweep(
    kind: str,
    modality: str | Sequence[str],
    values: Sequence | None = None,
    parameter: str | None = None,
    **fixed,
) -> list[tuple[object, dict | None]]:
    """``[(severity, spec), ...]`` for one perturbation kind on one modality, clean (severity 0) first.

    >>> [s for s, _ in severity_sweep("frame_drop", "audio", [0.1, 0.5])]
    [0, 0.1, 0.5]
    """
    if kind not in DEFAULT_SEVERITIES:
        raise KeyError(f"no severity sweep for {kind!r}; known: {', '.join(sorted(DEFAULT_SEVERITIES))}")
    default_param, default_values = DEFAULT_SEVERITIES[kind]
    parameter = parameter or default_param
    values = list(default_values if values is None else values)
    sweep: list[tuple[object, dict | None]] = [(0, None)]
    for v in values:
        spec = {
            "kind": kind,
            "modality": modality if isinstance(modality, str) else list(modality),
            parameter: v,
        }
        spec.update(fixed)
        make_perturbation(spec)  # validate early
        sweep.append((v, spec))
    return sweep
