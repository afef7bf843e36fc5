"""MFN HDF5 (the Memory Fusion Network release of ICT-MMMO and YouTube): ``mfn:FOLDER``.

Layout: one HDF5 file per modality and split, each with a single dataset ``d1``:
``audio_{split}.h5`` ``[N, 20, 74]`` (COVAREP), ``video_{split}.h5`` ``[N, 20, 36]`` (FACET),
``text_{split}_emb.h5`` ``[N, 20, 300]`` (GloVe; absent for train in the public release) and
``y_{split}.h5``: ``[N]`` sentiment in [1, 5] (ICT-MMMO), ``[N, 3]`` one-hot
negative/neutral/positive (YouTube) or ``[N, K]`` K regression outputs (the speaker-trait layout; range per
output from the data, rounded out to integers, or ``label_range=[LO,HI]``). ``labels=auto|classes|regression``
forces the reading of ``[N, 3]``. Splits are ``train``, ``valid``, ``test``.

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
from emofusion.data.validation import check_split_dims, check_task_labels, parse_range, require_numeric
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


def mfn_task(labels: np.ndarray, path: Path, mode: str = "auto", label_range=None, ranges=None) -> TaskSpec:
    """``ranges``: per-output ranges of ``[N, K]`` regression labels (from every split's labels)."""
    if labels.ndim == 1 or (labels.ndim == 2 and labels.shape[1] == 1):
        lo, hi = label_range or (1.0, 5.0)
        return sentiment_task(lo, hi)
    if labels.ndim == 2 and labels.shape[1] >= 2:
        binary = bool(np.isin(labels, (0, 1)).all())
        if mode == "classes" or (mode == "auto" and labels.shape[1] == 3 and binary):
            if labels.shape[1] != 3:
                raise DataFormatError(f"{path}: labels=classes needs one-hot [N, 3], got {labels.shape}")
            return classification_task(YOUTUBE_CLASSES)
        if label_range is not None:
            ranges = [tuple(label_range)] * labels.shape[1]
        lo = min(r[0] for r in ranges)
        hi = max(r[1] for r in ranges)
        names = tuple(f"output{k}" for k in range(labels.shape[1]))
        return TaskSpec("multi_regression", names, (lo, hi), extra={"ranges": [list(r) for r in ranges]})
    raise DataFormatError(
        f"{path}: labels of shape {labels.shape}; expected [N] (sentiment), [N, 3] (one-hot) or [N, K] "
        "(K regression outputs)"
    )


def _labels(raw: np.ndarray, task: TaskSpec, path: Path) -> np.ndarray:
    raw = require_numeric(raw, str(path), "labels")
    check_finite(raw, str(path), False, hint="fix or remove these samples")
    ids = [f"{path.stem.removeprefix('y_')}/{i}" for i in range(len(raw))]
    if task.kind == "sentiment":
        if raw.ndim != 1 and not (raw.ndim == 2 and raw.shape[1] == 1):
            raise DataFormatError(f"{path}: labels of shape {raw.shape}, but another split had sentiment [N]")
        y = raw.reshape(-1, 1).astype(np.float32)
        check_task_labels(y, task, str(path), ids)
        return y
    if task.kind == "multi_regression":
        if raw.ndim != 2 or raw.shape[1] != task.output_dim:
            raise DataFormatError(
                f"{path}: labels of shape {raw.shape}, but another split had [N, {task.output_dim}]"
            )
        y = raw.astype(np.float32)
        check_task_labels(y, task, str(path), ids)
        return y
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
    dims = {}
    n = len(labels)
    feats = {}
    for m in modalities:
        path = folder / FILES[m].format(split=fsplit)
        x = _read_d1(path)
        if x.ndim != 3:
            raise DataFormatError(f"{path}: expected [N, steps, dim], got shape {x.shape}")
        if x.shape[0] != n:
            raise DataFormatError(f"{path}: {x.shape[0]} samples but {ypath.name} has {n} labels")
        x = require_numeric(x, str(path), "features")
        check_finite(x, str(path), allow_nonfinite, hint="pass data.allow_nonfinite=true to keep them")
        feats[m] = x
        dims[m] = int(x.shape[-1])
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
    return samples, task, dims


def _task_from_all_splits(path: Path, mode: str, label_range) -> TaskSpec:
    """The task from the train labels; ``[N, K]`` regression ranges from every split (rounded out to
    integers: trait scales are Likert points) so a test label never falls outside them."""
    ytrain = path / LABEL_FILE.format(split="train")
    if not ytrain.exists():
        raise DataFormatError(f"{path}: missing label file {ytrain.name} for split 'train'")
    raw = require_numeric(_read_d1(ytrain), str(ytrain), "labels")
    ranges = None
    multi = raw.ndim == 2 and raw.shape[1] >= 2
    if multi and (mode == "regression" or (mode == "auto" and not (raw.shape[1] == 3 and np.isin(raw, (0, 1)).all()))):
        if label_range is None:
            lows, highs = [], []
            for fsplit in SPLITS.values():
                yp = path / LABEL_FILE.format(split=fsplit)
                if not yp.exists():
                    continue
                y = require_numeric(_read_d1(yp), str(yp), "labels")
                if y.ndim != 2 or y.shape[1] != raw.shape[1]:
                    continue  # reported with the file's name by _labels
                check_finite(y, str(yp), False, hint="fix or remove these samples")
                lows.append(y.min(0))
                highs.append(y.max(0))
            lo, hi = np.floor(np.min(lows, 0)), np.ceil(np.max(highs, 0))
            ranges = [(float(a), float(b) if b > a else float(a) + 1.0) for a, b in zip(lo, hi)]
    return mfn_task(raw, ytrain, mode, label_range, ranges)


@register_dataset("mfn", "MFN HDF5 release (ICT-MMMO sentiment 1-5, YouTube 3-class): 'mfn:FOLDER'")
def load_mfn(
    folder: str,
    modalities=None,
    drop_zero_rows=True,
    allow_nonfinite=False,
    limit=None,
    labels="auto",
    label_range=None,
    **options,
) -> DatasetBundle:
    """Read an MFN HDF5 folder (e.g. ``mfn:../shared/data/mfn_h5/mmmo``).

    ``modalities``: subset (``"audio,visual"``); by default every modality present in all three splits
    (audio and visual for the public release, whose train split has no text). Asking for a modality that
    some split lacks is an error naming those splits. ``drop_zero_rows`` (default on) removes all-zero slots.
    ``limit`` caps the samples per split (quick runs). ``labels``: ``auto`` (default), ``classes`` or
    ``regression`` for ``[N, K]`` label files; ``label_range=[LO,HI]`` overrides the range from the data.
    """
    if options:
        raise TypeError(
            f"mfn: unknown options {sorted(options)}; known: modalities, drop_zero_rows, "
            "allow_nonfinite, limit, labels, label_range"
        )
    if labels not in ("auto", "classes", "regression"):
        raise ValueError(f"mfn: labels must be auto, classes or regression, got {labels!r}")
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
    rng = parse_range(label_range, f"mfn: {folder}")
    task = _task_from_all_splits(path, labels, rng)
    splits, split_dims = {}, {}
    for split in SPLITS:
        splits[split], task, split_dims[split] = load_mfn_split(path, split, wanted, task, drop, allow, limit)
    dims = check_split_dims(
        split_dims, {s: str(path / FILES[wanted[0]].format(split=SPLITS[s])) for s in SPLITS}
    )
    for s, d in split_dims.items():  # name the file of the modality that differs
        for m in d:
            if d[m] != dims[m]:
                raise DataFormatError(
                    f"{path / FILES[m].format(split=SPLITS[s])}: {m} features have size {d[m]}, but "
                    f"{FILES[m].format(split='train')} has {dims[m]}"
                )
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
