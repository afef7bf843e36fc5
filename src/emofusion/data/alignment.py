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
