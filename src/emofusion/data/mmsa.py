"""MMSA pickles (``aligned_50.pkl`` / ``unaligned_50.pkl``): ``mmsa:FILE.pkl``.

Layout: ``{"train"|"valid"|"test": {"text" [N, L, D], "audio" [N, La, Da], "vision" [N, Lv, Dv],
"audio_lengths" [N], "vision_lengths" [N], "regression_labels" [N], "id" [N], "raw_text" [N], ...}}``.
Audio and vision are padded at the end (their true lengths are given); the text length comes from the
BERT attention mask (``text_bert[:, 1]``) when present, else from the non-zero rows. Labels: sentiment in
[-3, 3] (CMU-MOSI/MOSEI) or [-1, 1] (CH-SIMS), chosen from the data unless ``label_range`` is given.

Pickles can run code when loaded: this reader only accepts numpy arrays and plain Python containers.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from emofusion.data.batch import Sample
from emofusion.data.dataset import DatasetBundle
from emofusion.data.format_utils import DataFormatError, as_bool, check_finite, limit_count, parse_modalities
from emofusion.data.registry import register_dataset
from emofusion.data.validation import (
    check_disjoint,
    check_labels,
    check_split_dims,
    check_task_labels,
    check_unique_ids,
    parse_range,
    require_numeric,
)
from emofusion.tasks import sentiment_task

SPLIT_KEYS = {"train": ("train",), "val": ("valid", "val", "dev"), "test": ("test",)}
FEATURE_KEYS = {"text": "text", "audio": "audio", "visual": "vision"}
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("builtins", "complex"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays and containers)")


def load_pickle(path: str | Path, allow_objects: bool = False):
    """Load a pickle holding only numpy arrays/containers (``allow_objects=True``: any, for trusted files)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            if as_bool(allow_objects):
                return pickle.load(f)
            try:
                return _SafeUnpickler(f, encoding="latin1").load()
            except UnicodeDecodeError:
                f.seek(0)
                return _SafeUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError, IndexError,
            OverflowError, MemoryError) as e:  # garbage claiming a huge string length (found by the fuzz test)
        raise DataFormatError(f"{path}: cannot unpickle ({type(e).__name__}: {e})") from e


def get_split(data, path, split: str) -> dict:
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: expected a dict of splits, got {type(data).__name__}")
    for k in SPLIT_KEYS[split]:
        if k in data:
            if not isinstance(data[k], dict):
                raise DataFormatError(f"{path}: split {k!r} is a {type(data[k]).__name__}, not a dict")
            return data[k]
    raise DataFormatError(f"{path}: no {'/'.join(SPLIT_KEYS[split])} split (it has {sorted(map(str, data))})")


def as_ids(raw, n: int, prefix: str) -> list[str]:
    if raw is None:
        return [f"{prefix}/{i}" for i in range(n)]
    out = []
    for x in np.asarray(raw, dtype=object).reshape(len(raw), -1):
        parts = [p.decode("utf-8", "replace") if isinstance(p, bytes) else str(p) for p in x]
        out.append("/".join(parts) if len(parts) > 1 else parts[0])
    return out


def trim(x: np.ndarray, length: int | None, drop_zero_rows: bool, pad_side: str = "end") -> np.ndarray:
    """One padded ``[L, D]`` sequence -> its real rows (by length, or by dropping all-zero rows)."""
    if length is not None:
        length = int(length)
        return x[:length] if pad_side == "end" else x[len(x) - length :]
    if drop_zero_rows:
        return x[np.any(x != 0, axis=1)]
    return x


def features_of(
    split: dict, path, split_name: str, modalities, n: int, nonfinite: str
) -> dict[str, np.ndarray]:
    out = {}
    for m in modalities:
        key = FEATURE_KEYS[m]
        if key not in split:
            raise DataFormatError(f"{path}: split {split_name!r} has no {key!r} array (modality {m})")
        x = np.asarray(split[key])
        if x.ndim != 3:
            raise DataFormatError(
                f"{path}: split {split_name!r} {key!r} has shape {x.shape}, expected [N, L, D]"
            )
        if x.shape[0] != n:
            raise DataFormatError(
                f"{path}: split {split_name!r} {key!r} has {x.shape[0]} samples, labels {n}"
            )
        x = require_numeric(x, f"{path}: split {split_name!r} {key!r}", "features").astype(np.float32, copy=False)
        if nonfinite == "zero":
            x = np.where(np.isfinite(x), x, 0.0).astype(np.float32)
        else:
            check_finite(
                x, f"{path}: split {split_name!r} {key!r}", nonfinite == "keep",
                hint="pass data.nonfinite=zero (NaN/inf -> 0, as MMSA does) or data.nonfinite=keep (hygiene "
                "ignores them when fitting and zeroes them after standardising)",
            )
        out[m] = x
    return out


def check_unique(ids: list[str], path, split: str) -> None:
    check_unique_ids(ids, f"{path}: split {split!r}")


@register_dataset("mmsa", "MMSA aligned_50/unaligned_50 pickles (sentiment): 'mmsa:FILE.pkl'")
def load_mmsa(
    file: str,
    modalities=None,
    label_range=None,
    nonfinite: str = "error",
    drop_zero_rows=True,
    limit=None,
    allow_objects=False,
    **options,
) -> DatasetBundle:
    """``nonfinite``: ``error`` (default), ``keep`` or ``zero`` (NaN/inf -> 0, like MMSA/MulT do)."""
    if options:
        raise TypeError(f"mmsa: unknown options {sorted(options)}")
    if nonfinite not in ("error", "keep", "zero"):
        raise ValueError(f"nonfinite must be error, keep or zero, got {nonfinite!r}")
    path = Path(file)
    data = load_pickle(path, allow_objects)
    wanted = parse_modalities(modalities) or ["text", "audio", "visual"]
    drop = as_bool(drop_zero_rows)
    splits, all_labels, dims, all_ids = {}, [], {}, {}
    for split in ("train", "val", "test"):
        d = get_split(data, path, split)
        if "regression_labels" not in d:
            raise DataFormatError(f"{path}: split {split!r} has no 'regression_labels'")
        where = f"{path}: split {split!r} regression_labels"
        y = require_numeric(d["regression_labels"], where, "labels").astype(np.float32).reshape(-1)
        n = len(y)
        feats = features_of(d, path, split, wanted, n, nonfinite)
        ids = as_ids(d.get("id"), n, split)
        check_unique(ids, path, split)
        check_labels(y, where, ids)  # finite here; the range once it is known (below)
        all_ids[split] = ids
        lengths = {}
        for m, key in (("audio", "audio_lengths"), ("visual", "vision_lengths")):
            if m in feats and key in d:
                lengths[m] = require_numeric(d[key], f"{path}: split {split!r} {key}").reshape(-1).astype(np.int64)
                too_long = lengths[m] > feats[m].shape[1]
                if too_long.any() or (lengths[m] < 0).any():
                    i = int(np.flatnonzero(too_long | (lengths[m] < 0))[0])
                    raise DataFormatError(
                        f"{path}: split {split!r} sample {ids[i]!r}: {key}={lengths[m][i]} but the array "
                        f"has {feats[m].shape[1]} steps"
                    )
        if "text" in feats and "text_bert" in d:
            mask = np.asarray(d["text_bert"])
            if mask.ndim == 3 and mask.shape[1] >= 2:
                lengths["text"] = np.minimum(mask[:, 1].sum(1).astype(np.int64), feats["text"].shape[1])
        raw_text = d.get("raw_text")
        samples = []
        for i in range(limit_count(n, limit)):
            f = {
                m: np.ascontiguousarray(trim(x[i], lengths[m][i] if m in lengths else None, drop))
                for m, x in feats.items()
            }
            words = str(raw_text[i]).split() if raw_text is not None else None
            samples.append(Sample(id=ids[i], features=f, label=y[i : i + 1], words=words))
        splits[split] = samples
        all_labels.append((split, y, ids))
        dims[split] = {m: int(x.shape[2]) for m, x in feats.items()}
    check_disjoint(all_ids, str(path))
    dims = check_split_dims(dims, str(path))
    label_range = parse_range(label_range, f"mmsa: {path}")
    if label_range is None:
        hi = max(float(np.abs(y).max(initial=0.0)) for _, y, _ in all_labels)
        label_range = (-1.0, 1.0) if hi <= 1.0 else (-3.0, 3.0)
    task = sentiment_task(float(label_range[0]), float(label_range[1]))
    for split, y, ids in all_labels:
        check_task_labels(y, task, f"{path}: split {split!r} regression_labels", ids)
    info = {"format": "mmsa", "file": str(path), "nonfinite": nonfinite}
    return DatasetBundle.from_splits(f"mmsa:{file}", task, splits, {m: dims[m] for m in wanted}, info)
