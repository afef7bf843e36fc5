"""Feature hygiene, an explicit and logged step fitted on the training split only.

1. Non-finite values (real COVAREP features contain -inf) are counted and ignored when fitting.
2. Constant columns (zero variance over the training steps) are dropped: they carry no information and
   blow up standardisation.
3. Per-feature scaling fitted on the training steps, ``standardize``:
   - ``true`` / ``"zscore"``: subtract the training mean, divide by the training std;
   - ``"quantile"``: map each feature through its training quantiles onto a standard normal (rank-Gauss, as
     scikit-learn's ``QuantileTransformer(output_distribution="normal")``; ties get their mid-rank, see
     :func:`quantile_map`). Heavy-tailed features (COVAREP's spikes, FACET's near-binary columns) then
     reach the model on one scale; off by default (docs/training.md has the measured comparison);
   - ``false`` / ``"none"``: no scaling.
4. After scaling, remaining non-finite values become 0 (the training mean / median).

The fitted state is a plain dict (saved in checkpoints) so evaluation applies exactly the same transform.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from emofusion.data.batch import Sample
from emofusion.data.dataset import DatasetBundle, SampleDataset

log = logging.getLogger(__name__)

SCALINGS = ("zscore", "quantile", "none")
QUANTILES = 201  # quantile points per feature (fewer when the training split has fewer steps); the state is
# saved in every checkpoint and hparams.yaml, so it stays small (D x 201 numbers of 7 significant digits)
QUANTILE_ROWS = 200_000  # training steps sampled to fit the quantiles (bounded memory on large sets)
_NORMAL_CLIP = 1e-7  # the outermost quantiles map to +-5.2 std, not +-inf


def scaling_name(standardize) -> str:
    """``standardize`` as one of SCALINGS (``True`` is z-scoring, ``False`` none)."""
    if standardize is True:
        return "zscore"
    if standardize is False or standardize is None:
        return "none"
    if isinstance(standardize, str) and standardize in SCALINGS:
        return standardize
    raise ValueError(f"standardize must be true, false or one of {list(SCALINGS)}, got {standardize!r}")


def state_scaling(state: dict) -> str:
    """The scaling of a fitted state; states saved before "scaling" existed say only standardize: true/false."""
    return state.get("scaling") or ("zscore" if state["standardize"] else "none")


def _fit_quantiles(dataset: SampleDataset, modalities, keep: dict, counts: dict, seed: int = 0) -> dict:
    """Per modality [D_kept, K] training quantiles of the finite values, from at most QUANTILE_ROWS steps."""
    total = {m: max(1, int(counts[m].max())) for m in modalities}
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {m: [] for m in modalities}
    for i in range(len(dataset)):
        sample = dataset.raw(i)
        for m in modalities:
            x = np.asarray(sample.features[m], dtype=np.float64)[:, keep[m]]
            x = x[rng.random(len(x)) < min(1.0, QUANTILE_ROWS / total[m])]
            rows[m].append(np.where(np.isfinite(x), x, np.nan))
    out = {}
    for m in modalities:
        x = np.concatenate(rows[m]) if rows[m] else np.zeros((0, len(keep[m])))
        k = int(min(QUANTILES, max(2, len(x))))
        with np.errstate(all="ignore"):
            q = np.nanquantile(x, np.linspace(0.0, 1.0, k), axis=0).T if len(x) else np.zeros((len(keep[m]), k))
        out[m] = np.nan_to_num(q, nan=0.0)  # a column never finite in training maps to 0
    return out


def quantile_map(x: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Map [T, D] through per-column training quantiles [D, K] onto a standard normal.

    The rank (0..1) is interpolated from below and from above and averaged, then passed through the normal
    quantile function (clipped to +-5.2 std). So a value repeated across many quantiles (a near-binary
    column) gets its mid-rank. scikit-learn's QuantileTransformer does the same except that it pushes a
    value equal to the training minimum / maximum to -5.2 / +5.2, which would send the 1s of a 0/1 column
    to +5.2 std; here they get the normal score of their mid-rank.
    """
    from scipy.special import ndtri

    x = np.where(np.isfinite(x), x, np.nan)  # non-finite stays non-finite (-> 0 after), as in z-scoring
    ranks = np.linspace(0.0, 1.0, quantiles.shape[1])
    out = np.empty_like(x, dtype=np.float64)
    for j in range(x.shape[1]):
        q = quantiles[j]
        up = np.interp(x[:, j], q, ranks)
        down = -np.interp(-x[:, j], -q[::-1], -ranks[::-1])
        out[:, j] = 0.5 * (up + down)
    return ndtri(np.clip(out, _NORMAL_CLIP, 1.0 - _NORMAL_CLIP))


def fit_hygiene(
    dataset: SampleDataset, modalities, standardize: bool | str = True, drop_constant: bool = True, eps: float = 1e-8
) -> dict:
    scaling = scaling_name(standardize)
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
    state = {"standardize": scaling != "none", "scaling": scaling, "drop_constant": drop_constant, "modalities": {}}
    kept = {}
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
        kept[m] = np.flatnonzero(keep)
    if scaling == "quantile":  # a second pass: the quantiles are of the kept columns, known only now
        for m, q in _fit_quantiles(dataset, modalities, kept, counts).items():
            state["modalities"][m]["quantiles"] = [[float(f"{v:.7g}") for v in row] for row in q]
    return state


class HygieneTransform:
    """Applies a fitted hygiene state to a sample (picklable, for DataLoader workers)."""

    def __init__(self, state: dict):
        self.state = state
        self.scaling = state_scaling(state)
        self._arrays = {
            m: (np.asarray(s["keep"]), np.asarray(s["mean"], np.float32), np.asarray(s["std"], np.float32))
            for m, s in state["modalities"].items()
        }
        self._quantiles = {}
        if self.scaling == "quantile":
            self._quantiles = {m: np.asarray(s["quantiles"], np.float64) for m, s in state["modalities"].items()}

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
            if self.scaling == "zscore":
                x = (x - mean) / std
            elif self.scaling == "quantile":
                x = quantile_map(x, self._quantiles[m])
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
            "scaling": state_scaling(state),
        }
        for m, s in state["modalities"].items()
    }
