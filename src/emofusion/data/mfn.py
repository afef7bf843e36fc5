"""MFN HDF5 (the Memory Fusion Network release of ICT-MMMO and YouTube): ``mfn:FOLDER``.

Layout: one HDF5 file per modality and split, each with a single dataset ``d1``:
``audio_{split}.h5`` ``[N, 20, 74]`` (COVAREP), ``video_{split}.h5`` ``[N, 20, 36]`` (FACET),
``text_{split}_emb.h5`` ``[N, 20, 300]`` (GloVe; absent for train in the public release) and
``y_{split}.h5``: ``[N]`` sentiment in [1, 5] (ICT-MMMO) or ``[N, 3]`` one-hot
negative/neutral/positive (YouTube). Splits are ``train``, ``valid``, ``test``.

All 20 steps are word slots. An all-zero row is padding or a step where the extractor found nothing,
so by default it is dropped: each modality keeps only its non-zero slots (possibly none = absent),
and ``intervals[m]`` keeps the original slot of each kept row as ``[slot, slot + 1]`` (word-slot units,
not seconds), so the word alignment can be recovered.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from emofusion.data.batch import Sample
from emofusion.data.dataset import DatasetBundle
from emofusion.data.format_utils import (
    DataFormatError,
    as_bool,
    check_finite,
    limit_count,
    log,
    parse_modalities,
)
from emofusion.data.registry import register_dataset
from emofusion.tasks import TaskSpec, classification_task, sentiment_task

SPLITS = {"train": "train", "val": "valid", "test": "test"}
# modality -> file name pattern per split
FILES = {"audio": "audio_{split}.h5", "visual": "video_{split}.h5", "text": "text_{split}_emb.h5"}
LABEL_FILE = "y_{split}.h5"
YOUTUBE_CLASSES = ("negative", "neutral", "positive")


def _read_d1(path: Path) -> np.ndarray:
    try:
        with h5py.File(path, "r") as f:
            if "d1" not in f:
                raise DataFormatError(f"{path}: no dataset 'd1' (it has {sorted(f.keys())})")
            return f["d1"][()]
    except OSError as e:  # truncated / not HDF5
        raise DataFormatError(f"{path}: cannot read as HDF5 ({e})") from e


def available_modalities(folder: str | Path) -> dict[str, list[str]]:
    """split -> modalities whose file exists (split names ``train``/``val``/``test``)."""
    folder = Path(folder)
    return {
        split: [m for m, pat in FILES.items() if (folder / pat.format(split=fsplit)).exists()]
        for split, fsplit in SPLITS.items()
    }


def mfn_task(labels: np.ndarray, path: Path) -> TaskSpec:
    if labels.ndim == 1 or (labels.ndim == 2 and labels.shape[1] == 1):
        return sentiment_task(1.0, 5.0)
    if labels.ndim == 2 and labels.shape[1] == 3:
        return classification_task(YOUTUBE_CLASSES)
    raise DataFormatError(
        f"{path}: labels of shape {labels.shape}; expected [N] (sentiment) or [N, 3] (one-hot)"
    )


def _labels(raw: np.ndarray, task: TaskSpec, path: Path) -> np.ndarray:
    check_finite(raw, str(path), False)
    if task.kind == "sentiment":
        if raw.ndim != 1 and not (raw.ndim == 2 and raw.shape[1] == 1):
            raise DataFormatError(f"{path}: labels of shape {raw.shape}, but another split had sentiment [N]")
        return raw.reshape(-1, 1).astype(np.float32)
    if raw.ndim != 2 or raw.shape[1] != 3:
        raise DataFormatError(f"{path}: labels of shape {raw.shape}, but another split had one-hot [N, 3]")
    rows_ok = np.isin(raw, (0, 1)).all(1) & (raw.sum(1) == 1)
    if not rows_ok.all():
        bad = int(np.flatnonzero(~rows_ok)[0])
        raise DataFormatError(f"{path}: sample {bad} label {raw[bad].tolist()} is not one-hot")
    return raw.argmax(1).astype(np.int64)


def load_mfn_split(
    folder: Path,
    split: str,
    modalities: list[str],
    task: TaskSpec | None = None,
    drop_zero_rows: bool = True,
    allow_nonfinite: bool = False,
    limit=None,
) -> tuple[list[Sample], TaskSpec]:
    fsplit = SPLITS[split]
    ypath = folder / LABEL_FILE.format(split=fsplit)
    if not ypath.exists():
        raise DataFormatError(f"{folder}: missing label file {ypath.name} for split {split!r}")
    raw_y = _read_d1(ypath)
    task = task or mfn_task(raw_y, ypath)
    labels = _labels(raw_y, task, ypath)
    n = len(labels)
    feats = {}
    for m in modalities:
        path = folder / FILES[m].format(split=fsplit)
        x = _read_d1(path)
        if x.ndim != 3:
            raise DataFormatError(f"{path}: expected [N, steps, dim], got shape {x.shape}")
        if x.shape[0] != n:
            raise DataFormatError(f"{path}: {x.shape[0]} samples but {ypath.name} has {n} labels")
        check_finite(x, str(path), allow_nonfinite)
        feats[m] = x
    n = limit_count(n, limit)
    samples = []
    for i in range(n):
        features, intervals = {}, {}
        for m, x in feats.items():
            rows = x[i]
            slots = np.arange(rows.shape[0])
            if drop_zero_rows:
                slots = slots[np.any(rows != 0, axis=1)]
                rows = rows[slots]
            features[m] = np.ascontiguousarray(rows, dtype=np.float32)
            intervals[m] = np.stack([slots, slots + 1], axis=1).astype(np.float64)
        samples.append(Sample(id=f"{fsplit}/{i}", features=features, label=labels[i], intervals=intervals))
    return samples, task


@register_dataset("mfn", "MFN HDF5 release (ICT-MMMO sentiment 1-5, YouTube 3-class): 'mfn:FOLDER'")
def load_mfn(
    folder: str,
    modalities=None,
    drop_zero_rows=True,
    allow_nonfinite=False,
    limit=None,
    **options,
) -> DatasetBundle:
    """Read an MFN HDF5 folder (e.g. ``mfn:../shared/data/mfn_h5/mmmo``).

    ``modalities``: subset (``"audio,visual"``); by default every modality present in all three splits
    (audio and visual for the public release, whose train split has no text). Asking for a modality that
    some split lacks is an error naming those splits. ``drop_zero_rows`` (default on) removes all-zero slots.
    ``limit`` caps the samples per split (quick runs).
    """
    if options:
        raise TypeError(
            f"mfn: unknown options {sorted(options)}; known: modalities, drop_zero_rows, "
            "allow_nonfinite, limit"
        )
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"mfn: {folder!r} is not a folder")
    present = available_modalities(path)
    everywhere = [m for m in FILES if all(m in present[s] for s in SPLITS)]
    wanted = parse_modalities(modalities)
    if wanted is None:
        if not everywhere:
            raise DataFormatError(f"mfn: {folder}: no modality has files for all splits ({present})")
        wanted = [m for m in ("text", "audio", "visual") if m in everywhere]
        partial = [m for m in FILES if m not in everywhere and any(m in present[s] for s in SPLITS)]
        if partial:
            log.warning(
                "mfn: %s: using %s; %s is missing from some splits (%s)",
                folder,
                wanted,
                partial,
                {m: [s for s in SPLITS if m not in present[s]] for m in partial},
            )
    problems = []
    for m in wanted:
        lacking = [s for s in SPLITS if m not in present[s]]
        if lacking:
            names = ", ".join(FILES[m].format(split=SPLITS[s]) for s in lacking)
            problems.append(f"{m!r} is missing for split(s) {', '.join(lacking)} (no {names})")
    if problems:
        raise DataFormatError(
            f"mfn: {folder}: "
            + "; ".join(problems)
            + f". Modalities present in every split: {everywhere or 'none'}; choose a subset with modalities=..."
        )
    drop = as_bool(drop_zero_rows)
    allow = as_bool(allow_nonfinite)
    splits, task = {}, None
    for split in SPLITS:
        splits[split], task = load_mfn_split(path, split, wanted, task, drop, allow, limit)
    dims = {}
    for m in wanted:
        with h5py.File(path / FILES[m].format(split="train"), "r") as f:
            dims[m] = int(f["d1"].shape[-1])
    info = {
        "format": "mfn",
        "folder": str(path),
        "interval_unit": "word_slot",
        "drop_zero_rows": drop,
        "available_modalities": present,
        "empty_modality_counts": {
            s: {m: sum(x.length(m) == 0 for x in v) for m in wanted} for s, v in splits.items()
        },
    }
    name = f"mfn:{folder}"
    return DatasetBundle.from_splits(name, task, splits, dims, info)
