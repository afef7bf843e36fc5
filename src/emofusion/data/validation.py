"""Checks every reader calls: labels, ids across splits, feature sizes, dtypes, and the per-split counts
written to ``data_report.json``.

Policy (docs/formats.md, "What the readers check"): a problem that would change results silently is an
error naming the file, the sample and the problem (non-finite or out-of-range labels, an id in two splits,
a duplicated id, feature sizes that differ between splits, strings where numbers belong). Problems of one
sample found while a lazy dataset is read (``validate_split``) skip that sample and are counted in
``data_report.json`` (``skipped``), or stop the run with ``strict=true``. Empty sequences and non-finite
feature values are legal (absent modality, COVAREP's -inf) and counted per split and modality.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from emofusion.data.format_utils import DataFormatError

NUMERIC_KINDS = "biuf"


def require_numeric(array, where: str, what: str = "values") -> np.ndarray:
    """``array`` as a numeric numpy array; strings/objects are an error (never silently parsed)."""
    arr = np.asarray(array)
    if arr.dtype.kind not in NUMERIC_KINDS:
        example = arr.reshape(-1)[0] if arr.size else None
        raise DataFormatError(
            f"{where}: {what} have dtype {arr.dtype} (e.g. {example!r}), expected numbers; convert the file "
            "to a numeric array (numeric strings are not parsed silently)"
        )
    return arr


def _sample_name(ids: Sequence[str] | None, index: int) -> str:
    return f"sample {ids[index]!r} (#{index})" if ids is not None and index < len(ids) else f"sample #{index}"


def check_labels(
    labels,
    where: str,
    ids: Sequence[str] | None = None,
    label_range: tuple[float, float] | Sequence | None = None,
    n_classes: int | None = None,
    tolerance: float = 1e-6,
) -> None:
    """Labels ``[N]`` or ``[N, K]``: numeric, finite, inside ``label_range`` (per column when a list of
    ranges) or, for classes, integers in ``0..n_classes-1``. Raises naming the first bad sample."""
    y = require_numeric(labels, where, "labels")
    if y.size == 0:
        return
    flat = y.reshape(len(y), -1) if y.ndim else y.reshape(1, 1)
    if flat.dtype.kind == "f":
        bad = ~np.isfinite(flat)
        if bad.any():
            i = int(np.flatnonzero(bad.any(1))[0])
            raise DataFormatError(
                f"{where}: {_sample_name(ids, i)} has a non-finite label {flat[i].tolist()} "
                f"({int(bad.any(1).sum())} samples in all); fix or remove these samples"
            )
    if n_classes is not None:
        bad = (flat < 0) | (flat >= n_classes) | (flat != np.round(flat))
        if bad.any():
            i = int(np.flatnonzero(bad.any(1))[0])
            raise DataFormatError(
                f"{where}: {_sample_name(ids, i)} has label {flat[i].tolist()}, outside the class ids "
                f"0..{n_classes - 1}"
            )
        return
    if label_range is None:
        return
    ranges = list(label_range)
    if ranges and not isinstance(ranges[0], list | tuple | np.ndarray):
        ranges = [ranges] * flat.shape[1]
    if len(ranges) != flat.shape[1]:
        raise DataFormatError(f"{where}: {len(ranges)} label ranges for {flat.shape[1]} label columns")
    lo = np.array([float(r[0]) for r in ranges])
    hi = np.array([float(r[1]) for r in ranges])
    bad = (flat < lo - tolerance) | (flat > hi + tolerance)
    if bad.any():
        i = int(np.flatnonzero(bad.any(1))[0])
        j = int(np.flatnonzero(bad[i])[0])
        raise DataFormatError(
            f"{where}: {_sample_name(ids, i)} has label {float(flat[i, j]):g}"
            f"{'' if flat.shape[1] == 1 else f' in column {j}'}, outside the task's range "
            f"[{lo[j]:g}, {hi[j]:g}] ({int(bad.any(1).sum())} samples in all); pass the real range with "
            "data.label_range=[LO,HI] if the task is wider"
        )


def check_unique_ids(ids: Sequence[str], where: str) -> None:
    seen: dict[str, int] = {}
    for i, x in enumerate(ids):
        if x in seen:
            raise DataFormatError(f"{where}: id {x!r} appears twice (#{seen[x]} and #{i})")
        seen[x] = i


def check_disjoint(split_ids: Mapping[str, Sequence[str]], where: str) -> None:
    """No id may be in two splits (a sample moved between splits is a silent wrong result)."""
    owner: dict[str, str] = {}
    shared: dict[tuple[str, str], list[str]] = {}
    for split, ids in split_ids.items():
        for x in ids:
            if x in owner and owner[x] != split:
                shared.setdefault((owner[x], split), []).append(x)
            else:
                owner.setdefault(x, split)
    if shared:
        parts = [f"{len(v)} in both {a} and {b} (e.g. {v[:3]})" for (a, b), v in shared.items()]
        raise DataFormatError(f"{where}: ids shared between splits: {'; '.join(parts)}")


def check_split_dims(dims: Mapping[str, Mapping[str, int]], where: Mapping[str, str] | str) -> dict[str, int]:
    """``dims[split][modality]`` must agree across splits; the error blames the split that differs from
    train (or from the first split). Returns the common ``modality -> dim``."""
    splits = list(dims)
    if not splits:
        return {}
    ref = "train" if "train" in dims else splits[0]
    out = dict(dims[ref])
    for split in splits:
        for m, d in dims[split].items():
            if m in out and out[m] != d:
                place = where[split] if isinstance(where, Mapping) else f"{where}: split {split!r}"
                ref_place = where[ref] if isinstance(where, Mapping) else f"split {ref!r}"
                raise DataFormatError(
                    f"{place}: {m} features have size {d}, but {ref_place} has {out[m]}; every split must "
                    "have the same feature sizes"
                )
            out.setdefault(m, d)
    return out


def split_counts(samples_or_dataset, modalities: Sequence[str]) -> dict:
    """Per modality: samples with an empty sequence, non-finite feature values, samples with any."""
    empty = {m: 0 for m in modalities}
    nonfinite = {m: 0 for m in modalities}
    nonfinite_samples = {m: 0 for m in modalities}
    n = 0
    raw = getattr(samples_or_dataset, "raw", None)
    count = len(samples_or_dataset)
    for i in range(count):
        s = raw(i) if raw is not None else samples_or_dataset[i]
        n += 1
        for m in modalities:
            x = s.features.get(m)
            if x is None:
                continue
            x = np.asarray(x)
            if x.shape[0] == 0:
                empty[m] += 1
            elif x.dtype.kind in "fc":
                k = int(x.size - np.count_nonzero(np.isfinite(x)))
                nonfinite[m] += k
                nonfinite_samples[m] += int(k > 0)
    return {
        "samples": n,
        "empty_sequences": empty,
        "nonfinite_values": nonfinite,
        "samples_with_nonfinite": nonfinite_samples,
    }


def sample_problem(sample, dims: Mapping[str, int], task=None) -> str | None:
    """Why one sample cannot be used (missing modality, wrong feature size, bad label), or None."""
    for m, d in dims.items():
        x = sample.features.get(m)
        if x is None:
            return f"has no {m!r} features"
        x = np.asarray(x)
        if x.dtype.kind not in NUMERIC_KINDS:
            return f"{m!r} features have dtype {x.dtype}, expected numbers"
        if x.ndim != 2 or x.shape[1] != d:
            return f"{m!r} features have shape {tuple(x.shape)}, expected [T, {d}]"
    if task is not None and sample.label is not None:
        try:
            check_sample_label(sample.label, task, "label")
        except DataFormatError as e:
            return str(e)
    return None


def check_sample_label(label, task, where: str) -> None:
    if task.kind == "classification":
        check_labels(np.asarray(label).reshape(1, -1), where, n_classes=len(task.output_names))
    elif task.kind == "multilabel_binary":
        check_labels(np.asarray(label).reshape(1, -1), where, n_classes=2)
    else:
        check_labels(np.asarray(label).reshape(1, -1), where, label_range=task_ranges(task))


def task_ranges(task):
    ranges = (task.extra or {}).get("ranges")
    if ranges:
        return [tuple(r) for r in ranges]
    return task.label_range


def check_task_labels(labels, task, where: str, ids: Sequence[str] | None = None) -> None:
    """All labels of one split against a task (classes, binary, or the regression range)."""
    if task.kind == "classification":
        check_labels(labels, where, ids, n_classes=len(task.output_names))
    elif task.kind == "multilabel_binary":
        check_labels(labels, where, ids, n_classes=2)
    else:
        check_labels(labels, where, ids, label_range=task_ranges(task))


def parse_range(value, where: str) -> tuple[float, float] | None:
    """``[lo, hi]``, ``(lo, hi)`` or ``"lo,hi"`` -> a float pair (None stays None)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise DataFormatError(f"{where}: label_range must be two numbers [LO, HI], got {value!r}") from None
    if not lo < hi:
        raise DataFormatError(f"{where}: label_range must have LO < HI, got [{lo:g}, {hi:g}]")
    return lo, hi


class NonFiniteMetricError(ValueError):
    """A run's headline metric is NaN/inf: it must not end as a success."""


def check_headline(metrics: Mapping[str, Mapping[str, float]], monitor: str, where: str) -> None:
    """Raise when the selection metric of any evaluated split is not finite (never exit 0 with NaN)."""
    bad = []
    for split, values in metrics.items():
        if not isinstance(values, Mapping) or monitor not in values:
            continue
        v = values[monitor]
        try:
            finite = np.isfinite(float(v))
        except (TypeError, ValueError):
            finite = False
        if not finite:
            bad.append(f"{split}/{monitor} = {v}")
    if bad:
        raise NonFiniteMetricError(
            f"{where}: headline metric not finite ({', '.join(bad)}); the predictions or the labels contain "
            "NaN/inf (see data_report.json and metrics.json)"
        )


def scan_split(dataset, dims: Mapping[str, int], task=None) -> tuple[list[int], list[str], dict]:
    """Reads every sample of a split once: indices of the usable ones, one problem line per unusable
    sample (naming the split and the sample), and the counts of :func:`split_counts` for the usable ones."""
    good, problems = [], []
    counts = {"samples": 0, "empty_sequences": {m: 0 for m in dims}, "nonfinite_values": {m: 0 for m in dims},
              "samples_with_nonfinite": {m: 0 for m in dims}}
    name = getattr(dataset, "name", "") or "dataset"
    for i in range(len(dataset)):
        try:
            sample = dataset.raw(i)
        except Exception as err:  # noqa: BLE001  (a corrupt record in a lazy file)
            problems.append(f"{name}: sample #{i} ({dataset.ids[i]!r}) could not be read: {err}")
            continue
        bad = sample_problem(sample, dims, task)
        if bad:
            problems.append(f"{name}: sample {sample.id!r} {bad}")
            continue
        good.append(i)
        one = split_counts([sample], list(dims))
        counts["samples"] += 1
        for key in ("empty_sequences", "nonfinite_values", "samples_with_nonfinite"):
            for m, v in one[key].items():
                counts[key][m] += v
    return good, problems, counts
