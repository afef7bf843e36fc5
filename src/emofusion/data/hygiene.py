"""Feature hygiene, an explicit and logged step fitted on the training split only.

1. Non-finite values (real COVAREP features contain -inf) are counted and ignored when fitting.
2. Constant columns (zero variance over the training steps) are dropped: they carry no information and
   blow up standardisation.
3. Per-feature standardisation with the training mean and std.
4. After standardising, remaining non-finite values become 0 (the training mean).

The fitted state is a plain dict (saved in checkpoints) so evaluation applies exactly the same transform.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from emofusion.data.batch import Sample
from emofusion.data.dataset import DatasetBundle, SampleDataset

log = logging.getLogger(__name__)


def fit_hygiene(
    dataset: SampleDataset, modalities, standardize: bool = True, drop_constant: bool = True, eps: float = 1e-8
) -> dict:
    sums: dict[str, np.ndarray] = {}
    sq: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    nonfinite = {m: 0 for m in modalities}
    for i in range(len(dataset)):
        sample = dataset.raw(i)
        for m in modalities:
            x = np.asarray(sample.features[m], dtype=np.float64)
            if x.ndim != 2:
                raise ValueError(f"{dataset.name or 'dataset'}: sample {sample.id!r} modality {m!r} is not [T, D]: {x.shape}")
            finite = np.isfinite(x)
            nonfinite[m] += int((~finite).sum())
            xz = np.where(finite, x, 0.0)
            if m not in sums:
                sums[m] = np.zeros(x.shape[1])
                sq[m] = np.zeros(x.shape[1])
                counts[m] = np.zeros(x.shape[1])
            elif x.shape[1] != sums[m].shape[0]:
                raise ValueError(
                    f"{dataset.name or 'dataset'}: sample {sample.id!r} modality {m!r} has {x.shape[1]} features, "
                    f"earlier samples had {sums[m].shape[0]}"
                )
            sums[m] += xz.sum(0)
            sq[m] += (xz**2).sum(0)
            counts[m] += finite.sum(0)
    state = {"standardize": standardize, "drop_constant": drop_constant, "modalities": {}}
    for m in modalities:
        if m not in sums:
            raise ValueError(f"{dataset.name or 'dataset'}: no training samples to fit hygiene for {m!r}")
        n = np.maximum(counts[m], 1)
        mean = sums[m] / n
        var = np.maximum(sq[m] / n - mean**2, 0.0)
        std = np.sqrt(var)
        keep = std > eps if drop_constant else np.ones_like(std, dtype=bool)
        if not keep.any():
            keep[:] = True  # never drop everything; an all-constant modality stays (and is uninformative)
        state["modalities"][m] = {
            "mean": mean[keep].tolist(),
            "std": np.where(std[keep] > eps, std[keep], 1.0).tolist(),
            "keep": np.flatnonzero(keep).tolist(),
            "input_dim": int(len(std)),
            "nonfinite_train_values": nonfinite[m],
            "dropped_constant_columns": np.flatnonzero(~keep).tolist(),
        }
    return state


class HygieneTransform:
    """Applies a fitted hygiene state to a sample (picklable, for DataLoader workers)."""

    def __init__(self, state: dict):
        self.state = state
        self._arrays = {
            m: (np.asarray(s["keep"]), np.asarray(s["mean"], np.float32), np.asarray(s["std"], np.float32))
            for m, s in state["modalities"].items()
        }

    def __call__(self, sample: Sample) -> Sample:
        feats = dict(sample.features)
        for m, (keep, mean, std) in self._arrays.items():
            if m not in feats:
                continue
            x = np.asarray(feats[m], dtype=np.float32)
            if x.shape[1] != self.state["modalities"][m]["input_dim"]:
                raise ValueError(
                    f"sample {sample.id!r} modality {m!r} has {x.shape[1]} features, "
                    f"the model was fitted on {self.state['modalities'][m]['input_dim']}"
                )
            x = x[:, keep]
            if self.state["standardize"]:
                x = (x - mean) / std
            feats[m] = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
        return replace(sample, features=feats)


def output_dims(state: dict) -> dict[str, int]:
    return {m: len(s["keep"]) for m, s in state["modalities"].items()}


def apply_hygiene(bundle: DatasetBundle, state: dict) -> DatasetBundle:
    transform = HygieneTransform(state)
    dims = dict(bundle.modality_dims)
    dims.update({m: d for m, d in output_dims(state).items() if m in dims})
    return replace(
        bundle,
        train=bundle.train.with_transform(transform),
        val=bundle.val.with_transform(transform),
        test=bundle.test.with_transform(transform),
        modality_dims=dims,
        info={**bundle.info, "hygiene": summarize(state)},
    )


def summarize(state: dict) -> dict:
    return {
        m: {
            "nonfinite_train_values": s["nonfinite_train_values"],
            "dropped_constant_columns": s["dropped_constant_columns"],
            "dim": f"{s['input_dim']} -> {len(s['keep'])}",
            "standardized": state["standardize"],
        }
        for m, s in state["modalities"].items()
    }
