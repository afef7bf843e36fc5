"""MulT pickles (``*_data.pkl`` aligned, ``*_data_noalign.pkl`` unaligned): ``mult:FILE.pkl``.

Layout: ``{"train"|"valid"|"test": {"text" [N, L, 300], "audio" [N, La, Da], "vision" [N, Lv, Dv],
"labels", "id"}}`` with no lengths: all-zero rows are padding (the SDK pads on the left) and are
dropped (``drop_zero_rows``). Labels:

* ``[N, 1, 1]``: CMU-MOSI/MOSEI sentiment in [-3, 3];
* ``[N, 1, 7]``: CMU-MOSEI sentiment + 6 emotions in the SDK's column order (happy, sad, anger, surprise,
  disgust, fear); ``target``: ``sentiment`` (default), ``emotions`` (6 intensities in emofusion's order)
  or ``all`` (7 scores, multi-regression);
* ``[N, 4, 2]`` (one-hot absent/present) or ``[N, 4]``: IEMOCAP per-emotion binary, in MulT's order
  neutral, happy, sad, angry (``multilabel_binary``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emofusion.data.batch import Sample
from emofusion.data.csd import MOSEI_LABEL_COLUMNS
from emofusion.data.dataset import DatasetBundle
from emofusion.data.format_utils import DataFormatError, as_bool, check_finite, limit_count, parse_modalities
from emofusion.data.mmsa import as_ids, check_unique, features_of, get_split, load_pickle, trim
from emofusion.data.registry import register_dataset
from emofusion.data.validation import (
    check_disjoint,
    check_labels,
    check_split_dims,
    check_task_labels,
    require_numeric,
)
from emofusion.tasks import MOSEI_EMOTIONS, TaskSpec, emotion_intensity_task, sentiment_task

IEMOCAP_MULT_EMOTIONS = ("neutral", "happy", "sad", "angry")


def mult_labels(raw: np.ndarray, target: str, where: str) -> tuple[TaskSpec, np.ndarray]:
    raw = require_numeric(raw, where, "labels").astype(np.float32)
    check_finite(raw, where + " labels", False, hint="fix or remove these samples")
    n = raw.shape[0]
    if raw.ndim == 3 and raw.shape[1:] == (4, 2):  # IEMOCAP one-hot per emotion
        if not (np.isin(raw, (0, 1)).all() and (raw.sum(2) == 1).all()):
            raise DataFormatError(f"{where}: IEMOCAP labels [N, 4, 2] are not one-hot per emotion")
        return _iemocap_task(), raw.argmax(2).astype(np.float32)
    flat = raw.reshape(n, -1)
    k = flat.shape[1]
    if k == 4 and np.isin(flat, (0, 1)).all():
        return _iemocap_task(), flat
    if k == 1:
        if target not in ("sentiment", None):
            raise ValueError(f"{where}: labels have 1 column (sentiment); target={target!r} is not available")
        return sentiment_task(), flat
    if k == 7:
        if target in ("sentiment", None):
            return sentiment_task(), flat[:, :1]
        if target == "emotions":
            cols = [MOSEI_LABEL_COLUMNS.index(e) for e in MOSEI_EMOTIONS]
            return emotion_intensity_task(), flat[:, cols]
        if target == "all":
            ranges = [(-3.0, 3.0)] + [(0.0, 3.0)] * 6  # sentiment, then the six intensities
            return TaskSpec("multi_regression", MOSEI_LABEL_COLUMNS, extra={"ranges": ranges}), flat
        raise ValueError(f"target must be sentiment, emotions or all, got {target!r}")
    raise DataFormatError(
        f"{where}: labels of shape {raw.shape}; expected [N,1,1], [N,1,7], [N,4,2] or [N,4]"
    )


def _iemocap_task() -> TaskSpec:
    return TaskSpec("multilabel_binary", IEMOCAP_MULT_EMOTIONS)


@register_dataset("mult", "MulT *_data.pkl / *_data_noalign.pkl pickles (MOSI, MOSEI 1 or 7 labels, IEMOCAP)")
def load_mult(
    file: str,
    modalities=None,
    target: str = "sentiment",
    nonfinite: str = "error",
    drop_zero_rows=True,
    limit=None,
    allow_objects=False,
    **options,
) -> DatasetBundle:
    """``nonfinite``: ``error`` (default), ``keep`` or ``zero`` (MulT itself zeroes NaN)."""
    if options:
        raise TypeError(f"mult: unknown options {sorted(options)}")
    if nonfinite not in ("error", "keep", "zero"):
        raise ValueError(f"nonfinite must be error, keep or zero, got {nonfinite!r}")
    path = Path(file)
    data = load_pickle(path, allow_objects)
    wanted = parse_modalities(modalities) or ["text", "audio", "visual"]
    drop = as_bool(drop_zero_rows)
    splits, dims, task, all_ids = {}, {}, None, {}
    for split in ("train", "val", "test"):
        d = get_split(data, path, split)
        if "labels" not in d:
            raise DataFormatError(f"{path}: split {split!r} has no 'labels'")
        raw_labels = require_numeric(d["labels"], f"{path}: split {split!r}", "labels")
        ids = as_ids(d.get("id"), len(raw_labels), split)
        if len(set(ids)) != len(ids):  # MulT's MOSEI ids repeat per video: disambiguate by row
            ids = [f"{x}#{i}" for i, x in enumerate(ids)]
        check_labels(raw_labels.reshape(len(raw_labels), -1), f"{path}: split {split!r} labels", ids)  # finite
        t, y = mult_labels(raw_labels, target, f"{path}: split {split!r}")
        if task is not None and t != task:
            raise DataFormatError(f"{path}: split {split!r} labels imply {t.kind}, other splits {task.kind}")
        task = t
        n = len(y)
        feats = features_of(d, path, split, wanted, n, nonfinite)
        check_unique(ids, path, split)
        check_task_labels(y, task, f"{path}: split {split!r} labels", ids)
        all_ids[split] = ids
        splits[split] = [
            Sample(
                id=ids[i],
                features={m: np.ascontiguousarray(trim(x[i], None, drop)) for m, x in feats.items()},
                label=y[i],
            )
            for i in range(limit_count(n, limit))
        ]
        dims[split] = {m: int(x.shape[2]) for m, x in feats.items()}
    # MOSEI ids repeat per video (suffixed #row above): compare the file's own ids across splits
    check_disjoint({s: [i.split("#")[0] for i in v] for s, v in all_ids.items()}, str(path))
    dims = check_split_dims(dims, str(path))
    info = {"format": "mult", "file": str(path), "target": target, "nonfinite": nonfinite}
    return DatasetBundle.from_splits(f"mult:{file}", task, splits, {m: dims[m] for m in wanted}, info)
