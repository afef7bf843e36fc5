"""Alignment of sequences to a reference time axis (usually words).

This module holds the basic interval averaging used by the synthetic benchmark's aligned view; the
CMU-MultimodalSDK-exact alignment lives here too (see ``align_sdk``) once the formats land.
"""

from __future__ import annotations

import numpy as np


def frame_intervals(num_frames: int, rate_hz: float, offset: float = 0.0) -> np.ndarray:
    """``[N, 2]`` (start, end) seconds of frames sampled at ``rate_hz``."""
    start = offset + np.arange(num_frames, dtype=np.float64) / rate_hz
    return np.stack([start, start + 1.0 / rate_hz], axis=1)


def overlap_matrix(ref: np.ndarray, other: np.ndarray) -> np.ndarray:
    """``[R, N]`` overlap in seconds between reference intervals and other intervals (0 where disjoint)."""
    lo = np.maximum(ref[:, None, 0], other[None, :, 0])
    hi = np.minimum(ref[:, None, 1], other[None, :, 1])
    return np.clip(hi - lo, 0.0, None)


def average_to_reference(
    ref_intervals: np.ndarray,
    intervals: np.ndarray,
    values: np.ndarray,
    epsilon: float = 1e-5,
    weighted: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Collapse ``values`` (rows with ``intervals``) onto each reference interval.

    A frame belongs to a reference interval when it overlaps it by more than ``epsilon`` seconds. Plain mean
    of the kept frames (the SDK's collapse) or, with ``weighted``, the mean weighted by overlap duration
    (paper 003 §4.3). Returns ``[R, D]`` values (zeros where no frame overlaps) and a ``[R]`` bool "has
    frames" vector.
    """
    overlap = overlap_matrix(np.asarray(ref_intervals, np.float64), np.asarray(intervals, np.float64))
    keep = overlap > epsilon
    weights = np.where(keep, overlap if weighted else 1.0, 0.0)
    counts = weights.sum(1)
    has = counts > 0
    out = np.zeros((len(ref_intervals), values.shape[1]), dtype=np.float64)
    if has.any():
        v = values.astype(np.float64)
        finite = np.isfinite(v)
        out[has] = (weights[has] @ np.where(finite, v, 0.0)) / counts[has, None]
        if not finite.all():
            # like a plain mean over the kept rows: -inf stays -inf, +inf stays +inf, both or NaN give NaN
            used = keep[has].astype(np.float64)
            neg = used @ (v == -np.inf) > 0
            pos = used @ (v == np.inf) > 0
            nan = used @ np.isnan(v) > 0
            block = out[has]
            block[neg] = -np.inf
            block[pos] = np.inf
            block[nan | (neg & pos)] = np.nan
            out[has] = block
    return out.astype(values.dtype, copy=False), has


# --------------------------------------------------------------------------------------------------
# CMU-MultimodalSDK-exact alignment (mmdataset.align semantics, re-implemented and vectorised)
# --------------------------------------------------------------------------------------------------

SDK_EPSILON = 1e-5  # the SDK's `epsilon=10e-6`; releases from 2018-09 to 2019-12 used 1e-3
SDK_EPSILON_2019 = 1e-3


def _candidate_pairs(ref: np.ndarray, starts: np.ndarray, ends_prefix_max: np.ndarray, epsilon: float):
    """(ref index, frame index) pairs that may intersect: a superset, filtered exactly by the caller.

    Frames are sorted by start, so ``start < ref_end + eps`` is a prefix; frames before the first whose
    running-maximum end passes ``ref_start - eps`` cannot satisfy the end condition.
    """
    ref = np.asarray(ref, np.float64)  # float32 times: the bounds in double, or rounding beats the slack
    margin = epsilon + 1e-9 * (1.0 + float(np.abs(ref).max(initial=0.0)))
    hi = np.searchsorted(starts, ref[:, 1] + margin, side="right")
    lo = np.searchsorted(ends_prefix_max, ref[:, 0] - margin, side="right")
    lo = np.minimum(lo, hi)
    counts = hi - lo
    ri = np.repeat(np.arange(len(ref)), counts)
    offsets = np.cumsum(counts) - counts
    fj = np.arange(int(counts.sum())) - np.repeat(offsets, counts) + np.repeat(lo, counts)
    return ri, fj


def intersect_sdk(ref: np.ndarray, intervals: np.ndarray, epsilon: float = SDK_EPSILON):
    """All (reference row, frame) intersections with the SDK's exact floating-point tests.

    ``intervals`` must be sorted by start (stable). A frame intersects a reference interval when
    ``ref_end - start > -eps`` and ``end - ref_start > -eps``; it is then clipped to the interval and kept
    when ``|clipped_end - clipped_start| > eps``. Returns ``(ref_idx, frame_idx, clipped [K, 2])`` ordered
    by reference row, then frame order (``clipped`` in the inputs' common dtype, also when empty).
    ``epsilon`` is a tolerance in seconds, in [0, 1).
    """
    if not 0.0 <= epsilon < 1.0:  # a rounding tolerance; the candidate search's slack assumes it is small
        raise ValueError(f"epsilon must be in [0, 1) seconds, got {epsilon!r}")
    ref = np.asarray(ref)
    intervals = np.asarray(intervals)
    if len(ref) == 0 or len(intervals) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros((0, 2), np.result_type(ref, intervals))
    ri, fj = _candidate_pairs(ref, intervals[:, 0], np.maximum.accumulate(intervals[:, 1]), epsilon)
    r, s = ref[ri], intervals[fj]
    hit = ((r[:, 1] - s[:, 0]) > -epsilon) & ((s[:, 1] - r[:, 0]) > -epsilon)
    ri, fj, r, s = ri[hit], fj[hit], r[hit], s[hit]
    clipped = np.stack([np.maximum(s[:, 0], r[:, 0]), np.minimum(s[:, 1], r[:, 1])], axis=1)
    keep = np.abs(clipped[:, 0] - clipped[:, 1]) > epsilon
    return ri[keep], fj[keep], clipped[keep]


def _group_bounds(ref_idx: np.ndarray, n_ref: int) -> tuple[np.ndarray, np.ndarray]:
    counts = np.bincount(ref_idx, minlength=n_ref)
    starts = np.cumsum(counts) - counts
    return starts, counts


def plain_mean(rows: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-group mean bit-identical to ``numpy.average(group, axis=0)`` (the SDK's collapse).

    numpy reduces a ``[K, D>1]`` block row by row in the input dtype, then divides by K in that dtype;
    doing the same, one row position at a time over all groups, is exact and vectorised. -inf stays -inf,
    NaN spreads. A ``[K, 1]`` block is reduced pairwise by numpy, so that case calls numpy per group.
    """
    n, tail = len(counts), rows.shape[1:]
    dtype = rows.dtype if rows.dtype.kind == "f" else np.float64
    acc_dtype = np.float32 if dtype == np.float16 else dtype  # numpy's mean sums float16 in float32
    out = np.zeros((n, *tail), dtype=dtype)
    has = counts > 0
    if not has.any():
        return out
    if int(np.prod(tail)) == 1:
        for g in np.flatnonzero(has):
            out[g] = np.average(rows[starts[g] : starts[g] + counts[g]], axis=0)
        return out
    groups = np.flatnonzero(has)
    acc = rows[starts[groups]].astype(acc_dtype, copy=True)
    for k in range(1, int(counts.max())):
        sel = counts[groups] > k
        if not sel.any():
            break
        idx = np.flatnonzero(sel)
        acc[idx] = acc[idx] + rows[starts[groups[idx]] + k]
    out[groups] = acc / np.asarray(counts[groups], dtype=acc_dtype).reshape(-1, *([1] * len(tail)))
    return out


def weighted_mean(rows, weights, starts, counts) -> np.ndarray:
    """Overlap-weighted mean per group (paper 003 §4.3); non-finite values spread like in the plain mean."""
    n, d = len(counts), rows.shape[1]
    out = np.zeros((n, d), dtype=np.float64)
    has = counts > 0
    if not has.any() or len(rows) == 0:
        return out.astype(rows.dtype if rows.dtype.kind == "f" else np.float64)
    v = rows.astype(np.float64).reshape(len(rows), -1)
    w = np.asarray(weights, np.float64)
    seg = np.repeat(np.arange(n), counts)
    finite = np.isfinite(v)
    num = np.zeros((n, v.shape[1]))
    np.add.at(num, seg, np.where(finite, v, 0.0) * w[:, None])
    den = np.bincount(seg, weights=w, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[has] = num[has] / den[has, None]
    if not finite.all():
        for bad_value, code in ((-np.inf, 1), (np.inf, 2)):
            flag = np.zeros((n, v.shape[1]), bool)
            np.logical_or.at(flag, seg, v == bad_value)
            out[flag] = -np.inf if code == 1 else np.inf
        both = np.zeros((n, v.shape[1]), bool)
        np.logical_or.at(both, seg, np.isnan(v))
        pos, neg = np.zeros_like(both), np.zeros_like(both)
        np.logical_or.at(pos, seg, v == np.inf)
        np.logical_or.at(neg, seg, v == -np.inf)
        out[both | (pos & neg)] = np.nan
    return out.astype(rows.dtype if rows.dtype.kind == "f" else np.float64)


COLLAPSE_NAMES = ("mean", "weighted_mean", "max", "min", "sum", "std")


def _collapse(name_or_fn, clipped, rows, starts, counts):
    if callable(name_or_fn):  # SDK-style function(intervals, features) -> [D'] per interval (slow path)
        outs = []
        for g in range(len(counts)):
            sl = slice(starts[g], starts[g] + counts[g])
            outs.append(np.asarray(name_or_fn(clipped[sl], rows[sl])).reshape(-1) if counts[g] else None)
        width = max((len(o) for o in outs if o is not None), default=0)
        return np.stack([o if o is not None else np.zeros(width) for o in outs]) if outs else np.zeros((0, 0))
    if name_or_fn == "mean":
        return plain_mean(rows, starts, counts).reshape(len(counts), -1)
    if name_or_fn == "weighted_mean":
        return weighted_mean(rows, clipped[:, 1] - clipped[:, 0], starts, counts)
    if name_or_fn in ("max", "min", "sum"):
        ufunc = {"max": np.maximum, "min": np.minimum, "sum": np.add}[name_or_fn]
        out = np.zeros((len(counts), int(np.prod(rows.shape[1:]))), dtype=rows.dtype)
        has = counts > 0
        if has.any():
            out[has] = ufunc.reduceat(rows.reshape(len(rows), -1), starts[has], axis=0)
        return out
    if name_or_fn == "std":
        mean = plain_mean(rows, starts, counts).reshape(len(counts), -1)
        seg = np.repeat(np.arange(len(counts)), counts)
        sq = (rows.reshape(len(rows), -1) - mean[seg]) ** 2
        return np.sqrt(plain_mean(sq, starts, counts))
    raise ValueError(f"unknown collapse {name_or_fn!r}; expected one of {COLLAPSE_NAMES} or a callable")


def align_entry(
    ref_intervals: np.ndarray,
    intervals: np.ndarray,
    features: np.ndarray,
    epsilon: float = SDK_EPSILON,
    collapse=("mean",),
    presorted: bool = False,
) -> tuple[np.ndarray, list, list]:
    """Align one video's frames to its reference rows, the SDK way.

    Returns ``(ref_rows, intervals_list, features_list)``: the reference row indices that got an entry
    (rows shorter than ``epsilon`` and rows with no intersecting frame get none), and for each the output
    intervals and features. With ``collapse`` (names or SDK-style callables, outputs concatenated) each entry
    is ``[1, 2]`` = span of the clipped frames and ``[1, D']``; with ``collapse=None`` the clipped frames
    ``[K, 2]`` and their whole feature rows ``[K, D]`` (segment-level, unaligned inside).
    """
    ref = np.asarray(ref_intervals)
    if not presorted:
        order = np.argsort(intervals[:, 0], kind="stable")
        intervals, features = intervals[order], features[order]
    valid_ref = np.flatnonzero(~(np.abs(ref[:, 0] - ref[:, 1]) < epsilon))
    ri_local, fj, clipped = intersect_sdk(ref[valid_ref], intervals, epsilon)
    starts, counts = _group_bounds(ri_local, len(valid_ref))
    rows = features[fj]
    has = counts > 0
    out_rows = valid_ref[has]
    if not has.any():  # no row got a frame (e.g. every word shorter than epsilon): nothing to collapse
        return out_rows, [], []
    if collapse is None:
        ivs = [clipped[starts[g] : starts[g] + counts[g]] for g in np.flatnonzero(has)]
        fts = [rows[starts[g] : starts[g] + counts[g]] for g in np.flatnonzero(has)]
        return out_rows, ivs, fts
    if isinstance(collapse, str) or callable(collapse):
        collapse = (collapse,)
    parts = [_collapse(c, clipped, rows, starts, counts) for c in collapse]
    feats = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    lo = np.full(len(counts), np.nan)
    hi = np.full(len(counts), np.nan)
    both = clipped.reshape(len(clipped), 2)
    lo[has] = np.minimum.reduceat(both.min(1), starts[has])
    hi[has] = np.maximum.reduceat(both.max(1), starts[has])
    idx = np.flatnonzero(has)
    ivs = [np.array([[lo[g], hi[g]]], dtype=clipped.dtype) for g in idx]
    fts = [feats[g : g + 1] for g in idx]
    return out_rows, ivs, fts


def shared_ids(id_lists: list[list[str]], prefix_drop: bool = False) -> tuple[list[set], set]:
    """Which video ids survive the SDK's ``unify``: per sequence the keys kept, and the dropped base ids.

    Keys are compared by their part before ``[`` (aligned keys ``vid[3]``). The SDK removes a violating id
    ``v`` by deleting every key that *starts with* ``v`` in every sequence, so dropping ``25522`` also drops
    ``255224``; ``prefix_drop=True`` reproduces that, the default drops exact ids only.
    """
    bases = [{k.split("[")[0] for k in keys} for keys in id_lists]
    valid = set.intersection(*bases) if bases else set()
    violators = set().union(*bases) - valid if bases else set()
    kept = []
    for keys in id_lists:
        if prefix_drop:
            kept.append({k for k in keys if not any(k[: len(v)] == v for v in violators)})
        else:
            kept.append({k for k in keys if k.split("[")[0] in valid})
    return kept, violators


def align_sdk(
    reference: dict,
    others: dict[str, dict],
    epsilon: float = SDK_EPSILON,
    collapse=("mean",),
    mode: str = "sdk",
    fill_missing: bool = False,
    prefix_drop: bool = False,
) -> tuple[dict, dict[str, dict], dict]:
    """Align sequences to a reference, reproducing ``mmdataset.align`` of the CMU-MultimodalSDK.

    ``reference``: ``{video: (intervals [N, 2], features [N, D])}`` (any mapping, e.g. a lazy
    :class:`~emofusion.data.csd.ComputationalSequence`); ``others``: ``{name: such a mapping}``.
    ``mode="sdk"``: plain mean (``collapse`` names/callables, concatenated); ``mode="weighted"``: the
    overlap-weighted mean of paper 003 §4.3. ``collapse=None``: no collapse (segment-level alignment).
    ``fill_missing``: reference rows without a frame get the reference interval and zeros (the SDK's
    ``impute``). Returns ``(aligned_reference, {name: aligned}, report)`` with keys ``video[i]``.
    """
    if mode not in ("sdk", "weighted"):
        raise ValueError(f"mode must be 'sdk' or 'weighted', got {mode!r}")
    if mode == "weighted" and collapse is not None:
        collapse = tuple(
            "weighted_mean" if c == "mean" else c
            for c in ((collapse,) if isinstance(collapse, str) or callable(collapse) else collapse)
        )
    names = list(others)
    key_lists = [list(reference.keys())] + [list(others[n].keys()) for n in names]
    kept, violators = shared_ids(key_lists, prefix_drop=prefix_drop)
    ref_keys = [k for k in key_lists[0] if k in kept[0]]
    # merge each other sequence's keys per base id (already-aligned inputs have several keys per video)
    groups: list[dict[str, list[str]]] = []
    for keys, keep in zip(key_lists[1:], kept[1:]):
        g: dict[str, list[str]] = {}
        for k in keys:
            if k in keep:
                g.setdefault(k.split("[")[0], []).append(k)
        groups.append(g)
    out_ref: dict = {}
    out = {n: {} for n in names}
    dims: dict[str, int] = {}
    missing = {n: 0 for n in names}
    for vid in ref_keys:
        r_iv, r_ft = reference[vid]
        r_iv, r_ft = np.asarray(r_iv), np.asarray(r_ft)
        # the reference is used in stored order; rows shorter than epsilon are skipped (gaps in indices)
        valid = np.flatnonzero(~(np.abs(r_iv[:, 0] - r_iv[:, 1]) < epsilon))
        r_out = r_ft[valid]
        if collapse is not None and r_ft.dtype.kind in "fiu" and len(valid):
            # the SDK collapses the reference's own single row too (a no-op for the mean, not for std)
            ones = np.ones(len(valid), np.int64)
            cols = (collapse,) if isinstance(collapse, str) or callable(collapse) else collapse
            parts = [_collapse(c, r_iv[valid], r_out, np.arange(len(valid)), ones) for c in cols]
            r_out = np.concatenate(parts, axis=1)
        for row, i in enumerate(valid):
            out_ref[f"{vid}[{i}]"] = (r_iv[i : i + 1], r_out[row : row + 1])
        for n, g in zip(names, groups):
            keys = g.get(vid.split("[")[0], [])
            pairs = [others[n][k] for k in keys]
            if not pairs:
                continue
            o_iv = np.concatenate([np.asarray(p[0]).reshape(-1, 2) for p in pairs])
            o_ft = np.concatenate(
                [
                    np.asarray(p[1]).reshape(len(np.asarray(p[0]).reshape(-1, 2)), -1)
                    if np.asarray(p[1]).ndim < 2
                    else np.asarray(p[1])
                    for p in pairs
                ]
            )
            rows, ivs, fts = align_entry(r_iv, o_iv, o_ft, epsilon, collapse)
            for i, iv, ft in zip(rows, ivs, fts):
                out[n][f"{vid}[{i}]"] = (iv, ft)
                dims.setdefault(n, ft.shape[1] if ft.ndim > 1 else 1)
    report = {"dropped_ids": sorted(violators), "filled": missing, "reference_entries": len(out_ref)}
    if fill_missing:
        for n in names:
            d = dims.get(n)
            if d is None:
                continue
            for key, (iv, _ft) in out_ref.items():
                if key not in out[n]:
                    out[n][key] = (iv, np.zeros((len(iv), d), dtype=np.float64))
                    missing[n] += 1
    return out_ref, out, report


# --------------------------------------------------------------------------------------------------
# paper 002's aligned view: pad and stack each word's frames (§4.4 "we pad and stack the visual and
# acoustic sequences, making all three sequences for a certain time interval having the same length")
# --------------------------------------------------------------------------------------------------


def frames_per_reference(
    ref_intervals: np.ndarray, intervals: np.ndarray, epsilon: float = SDK_EPSILON
) -> np.ndarray:
    """How many frames intersect each reference interval (the test :func:`stack_to_reference` uses)."""
    ref = np.asarray(ref_intervals, np.float64)
    iv = np.asarray(intervals, np.float64)
    if len(ref) == 0 or len(iv) == 0:
        return np.zeros(len(ref), np.int64)
    ri, _, _ = intersect_sdk(ref, iv[np.argsort(iv[:, 0], kind="stable")], epsilon)
    return np.bincount(ri, minlength=len(ref))


def stack_to_reference(
    ref_intervals: np.ndarray,
    intervals: np.ndarray,
    values: np.ndarray,
    slots,
    epsilon: float = SDK_EPSILON,
) -> tuple[np.ndarray, np.ndarray]:
    """Each reference interval (word) r gets ``slots[r]`` steps (``slots`` an int: the same for all): the
    frames that intersect it (the SDK's test, clipped overlap > ``epsilon``) in time order, the first
    ``slots[r]`` of them, then zero padding.

    Returns values ``[sum(slots), D]`` and a bool mask of the same length (False = padding). Frames outside
    every word are discarded (the paper: "parts of any modality not in the interval have been discarded"); a
    frame that spans two words appears in both.
    """
    ref = np.asarray(ref_intervals, np.float64)
    per = np.broadcast_to(np.asarray(slots, np.int64), (len(ref),))
    if per.size and int(per.min()) < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    iv = np.asarray(intervals, np.float64)
    values = np.asarray(values)
    offsets = np.cumsum(per) - per
    total = int(per.sum())
    out = np.zeros((total, values.shape[1]), dtype=values.dtype if values.dtype.kind == "f" else np.float64)
    mask = np.zeros(total, bool)
    if len(ref) == 0 or len(iv) == 0:
        return out, mask
    order = np.argsort(iv[:, 0], kind="stable")
    ri, fj, _ = intersect_sdk(ref, iv[order], epsilon)
    starts, counts = _group_bounds(ri, len(ref))
    for r in range(len(ref)):
        n = min(int(counts[r]), int(per[r]))
        rows = order[fj[starts[r] : starts[r] + n]]
        out[offsets[r] : offsets[r] + n] = values[rows]
        mask[offsets[r] : offsets[r] + n] = True
    return out, mask


def stack_reference(values: np.ndarray, slots) -> tuple[np.ndarray, np.ndarray]:
    """The reference modality (text) in the same layout: each word in its first slot, then padding."""
    values = np.asarray(values)
    per = np.broadcast_to(np.asarray(slots, np.int64), (len(values),))
    first = np.cumsum(per) - per
    out = np.zeros((int(per.sum()), values.shape[1]), dtype=values.dtype)
    out[first] = values
    mask = np.zeros(int(per.sum()), bool)
    mask[first] = True
    return out, mask
