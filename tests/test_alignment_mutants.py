"""Alignment edges pinned exactly: epsilon defaults, boundary comparisons hit exactly (eps = 0.25 so every
difference is exact in binary floating point), reversed frames (start > end, which the SDK's tests accept),
non-finite propagation, dtypes of outputs and imputed rows, overlap weights. Checked with
benchmarks/mutation.py."""

from __future__ import annotations

import numpy as np
import pytest

from emofusion.data import alignment as A
from test_alignment import naive_sdk

E = 0.25  # exactly representable: boundary cases are exact


def test_frame_intervals_and_overlaps():
    iv = A.frame_intervals(3, 4.0, offset=0.5)
    assert iv.tolist() == [[0.5, 0.75], [0.75, 1.0], [1.0, 1.25]] and iv.dtype == np.float64
    ov = A.overlap_matrix(np.array([[0.0, 1.0], [0.6, 0.8]]), iv)
    assert np.allclose(ov, [[0.25, 0.25, 0.0], [0.15, 0.05, 0.0]])
    assert np.all(ov >= 0)


def test_average_to_reference_weights_epsilon_and_dtype():
    ref = np.array([[0.0, 1.0], [1.0, 2.0], [5.0, 6.0]])
    iv = np.array([[0.0, 0.25], [0.25, 1.5], [1.5, 2.0], [0.999995, 1.2], [1.999985, 2.5]])
    v = np.array([[1.0, 10.0], [2.0, 20.0], [4.0, 40.0], [8.0, 80.0], [16.0, 160.0]], dtype=np.float32)
    out, has = A.average_to_reference(ref, iv, v)
    assert has.tolist() == [True, True, False] and out.dtype == np.float32
    # frame 3 overlaps row 0 by 5e-6 s < the default epsilon 1e-5: not used there
    np.testing.assert_allclose(out[0], [1.5, 15.0])
    # frame 4 overlaps row 1 by 1.5e-5 s > 1e-5: used
    np.testing.assert_allclose(out[1], [(2 + 4 + 8 + 16) / 4, (20 + 40 + 80 + 160) / 4], rtol=1e-6)
    assert out[2].tolist() == [0.0, 0.0]
    small, _ = A.average_to_reference(ref, iv, v, epsilon=1e-6)
    np.testing.assert_allclose(small[0], [(1 + 2 + 8) / 3, (10 + 20 + 80) / 3], rtol=1e-6)
    w, _ = A.average_to_reference(ref, iv, v, weighted=True)
    np.testing.assert_allclose(w[0], [(0.25 * 1 + 0.75 * 2) / 1.0, (0.25 * 10 + 0.75 * 20) / 1.0], rtol=1e-6)
    o4 = 2.0 - 1.999985
    np.testing.assert_allclose(w[1], [(0.5 * 2 + 0.5 * 4 + 0.2 * 8 + o4 * 16) / (1.2 + o4),
                                      (0.5 * 20 + 0.5 * 40 + 0.2 * 80 + o4 * 160) / (1.2 + o4)], rtol=1e-5)


def test_average_to_reference_non_finite():
    ref = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0], [3.0, 4.0]])
    iv = A.frame_intervals(8, 2.0)
    v = np.ones((8, 1))
    v[0, 0] = -np.inf  # row 0
    v[2, 0], v[3, 0] = np.inf, 2.0  # row 1: +inf
    v[4, 0], v[5, 0] = -np.inf, np.inf  # row 2: both -> NaN
    v[6, 0] = np.nan  # row 3
    out, _ = A.average_to_reference(ref, iv, v)
    assert out[0, 0] == -np.inf and out[1, 0] == np.inf and np.isnan(out[2, 0]) and np.isnan(out[3, 0])
    fin = v.copy()
    fin[~np.isfinite(fin)] = 3.0
    out2, _ = A.average_to_reference(ref, iv, fin)
    assert out2[:, 0].tolist() == [2.0, 2.5, 3.0, 2.0]


def test_boundaries_are_strict():
    # reference rows: |end - start| < eps is skipped, exactly eps is kept (row 0); 0.125 < eps (row 1) skipped
    ref = np.array([[0.0, 0.25], [1.0, 1.125], [2.0, 3.0]])
    # frame 0 clips to exactly eps (|clip| > eps fails); frame 1 is reversed and clips to 0.375 > eps;
    # frame 3 clips to exactly eps in row 2; frame 4 is reversed and starts exactly eps after row 2's end
    frames = np.array([[0.0, 0.25], [0.375, 0.0], [1.0, 1.125], [2.75, 3.0], [3.25, 2.5]])
    feats = np.arange(5.0)[:, None] + 1
    rows, ivs, fts = A.align_entry(ref, frames, feats, epsilon=E)
    assert rows.tolist() == [0] and fts[0].tolist() == [[2.0]]
    _, n_out = naive_sdk({"v": (ref, np.zeros((3, 1)))}, {"o": {"v": (frames, feats)}}, E)
    assert list(n_out["o"]) == ["v[0]"] and n_out["o"]["v[0]"][1].tolist() == [[2.0]]
    a_ref, a_out, _ = A.align_sdk({"v": (ref, np.zeros((3, 1)))}, {"o": {"v": (frames, feats)}}, epsilon=E)
    assert list(a_ref) == ["v[0]", "v[2]"] and list(a_out["o"]) == ["v[0]"]


def test_reversed_frames_near_the_end_follow_the_sdk():
    # reversed frames (start > end) pass the SDK's tests when the start lies within eps after the reference
    # end: clipped to [start, end] they are long, so they are kept
    ref = np.array([[0.0, 1.0]])
    frames = np.array([[0.0, 0.5], [1.125, 0.5], [1.25, 0.5], [1.5, 0.25]])
    feats = np.array([[1.0], [10.0], [100.0], [1000.0]])
    ri, fj, clipped = A.intersect_sdk(ref, frames, E)
    assert fj.tolist() == [0, 1]  # 1.125 - 1 < eps: hit; 1.25 - 1 == eps: not (strict)
    assert clipped.tolist() == [[0.0, 0.5], [1.125, 0.5]]
    n_ref, n_out = naive_sdk({"v": (ref, np.zeros((1, 1)))}, {"o": {"v": (frames, feats)}}, E)
    _, a_out, _ = A.align_sdk({"v": (ref, np.zeros((1, 1)))}, {"o": {"v": (frames, feats)}}, epsilon=E)
    assert np.array_equal(a_out["o"]["v[0]"][1], n_out["o"]["v[0]"][1])
    assert a_out["o"]["v[0]"][1].tolist() == [[5.5]]
    # frames whose end lies within eps before the reference start: reversed ones reach in too
    ref2 = np.array([[2.0, 3.0]])
    fr2 = np.array([[2.5, 1.875], [2.75, 1.75], [2.0, 2.5]])
    ri, fj, clipped = A.intersect_sdk(ref2, fr2[np.argsort(fr2[:, 0], kind="stable")], E)
    assert sorted(clipped[:, 0].tolist()) == [2.0, 2.5]


def test_intersections_ordered_and_empty():
    ref = np.array([[0.0, 1.0], [1.0, 2.0]])
    frames = np.array([[0.0, 0.5], [0.5, 1.5], [1.5, 2.0]])
    ri, fj, cl = A.intersect_sdk(ref, frames)
    assert ri.tolist() == [0, 0, 1, 1] and fj.tolist() == [0, 1, 1, 2]
    assert cl.tolist() == [[0.0, 0.5], [0.5, 1.0], [1.0, 1.5], [1.5, 2.0]]
    e_ri, e_fj, e_cl = A.intersect_sdk(np.zeros((0, 2)), frames)
    assert len(e_ri) == 0 and e_cl.shape == (0, 2) and e_ri.dtype == np.int64
    e_ri, _, e_cl = A.intersect_sdk(ref, np.zeros((0, 2), np.float32))
    assert len(e_ri) == 0 and e_cl.dtype == np.float64
    # many frames before the reference: the candidate search still finds the right ones
    many = np.stack([np.arange(0, 10, 0.5), np.arange(0, 10, 0.5) + 0.5], 1)
    ri, fj, _ = A.intersect_sdk(np.array([[4.0, 5.0]]), many)
    assert fj.tolist() == [8, 9]
    # a long early frame (running maximum of ends) still reaches a late reference row
    long = np.array([[0.0, 9.0], [1.0, 1.5], [2.0, 2.5]])
    ri, fj, _ = A.intersect_sdk(np.array([[5.0, 6.0]]), long)
    assert fj.tolist() == [0]


def test_means_and_collapses():
    rows = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, -1.0], [7.0, 0.5]], dtype=np.float32)
    starts, counts = np.array([0, 3, 4]), np.array([3, 1, 0])
    pm = A.plain_mean(rows, starts, counts)
    assert pm.dtype == np.float32
    assert np.array_equal(pm[0], np.average(rows[:3], axis=0)) and np.array_equal(pm[1], rows[3])
    assert pm[2].tolist() == [0.0, 0.0]
    col = A.plain_mean(rows[:, :1], starts, counts)
    assert np.array_equal(col[0], np.average(rows[:3, :1], axis=0)) and col[2, 0] == 0.0
    ints = A.plain_mean(np.array([[1, 2], [2, 4]]), np.array([0]), np.array([2]))
    assert ints.dtype == np.float64 and ints.tolist() == [[1.5, 3.0]]
    assert A.plain_mean(rows, np.array([0]), np.array([0])).tolist() == [[0.0, 0.0]]
    w = np.array([0.5, 0.25, 0.25, 1.0])
    wm = A.weighted_mean(rows, w, starts, counts)
    np.testing.assert_allclose(wm[0], (0.5 * rows[0] + 0.25 * rows[1] + 0.25 * rows[2]) / 1.0, rtol=1e-6)
    assert wm.dtype == np.float32 and wm[2].tolist() == [0.0, 0.0]
    assert A.weighted_mean(np.array([[1, 2]]), np.array([1.0]), np.array([0]), np.array([1])).dtype == np.float64
    assert A.weighted_mean(rows[:0], w[:0], np.array([0]), np.array([0])).shape == (1, 2)
    bad = rows.astype(np.float64)
    bad[0, 0], bad[1, 1], bad[2, 1] = np.nan, np.inf, -np.inf
    bad[3, 0] = -np.inf
    out = A.weighted_mean(bad, w, starts, counts)
    assert np.isnan(out[0, 0]) and np.isnan(out[0, 1]) and out[1, 0] == -np.inf
    pos = rows.astype(np.float64)
    pos[1, 0] = np.inf
    assert A.weighted_mean(pos, w, starts, counts)[0, 0] == np.inf
    c = A._collapse
    cl = np.zeros((4, 2))
    assert c("max", cl, rows, starts, counts)[0].tolist() == [5.0, 6.0]
    assert c("min", cl, rows, starts, counts)[0].tolist() == [1.0, -1.0]
    assert c("sum", cl, rows, starts, counts)[0].tolist() == [9.0, 7.0]
    assert c("max", cl, rows, starts, counts)[2].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(c("std", cl, rows, starts, counts)[0], rows[:3].std(0), rtol=1e-6)
    f = c(lambda iv, ft: ft.sum(0) * 2, cl, rows, starts, counts)
    assert f[0].tolist() == [18.0, 14.0] and f[1].tolist() == [14.0, 1.0] and f[2].tolist() == [0.0, 0.0]
    assert c(lambda iv, ft: ft.sum(0), cl[:0], rows[:0], np.zeros(0, int), np.zeros(0, int)).shape == (0, 0)
    # groups that do not start at row 0 and hold several rows
    r2 = np.array([[9.0, 9.0], [1.0, 2.0], [3.0, 4.0], [5.0, 7.0]])
    pm2 = A.plain_mean(r2, np.array([0, 1]), np.array([1, 3]))
    assert pm2.tolist() == [[9.0, 9.0], [3.0, 13.0 / 3]]
    # the weighted mean is computed in float64 (large offset, small spread)
    big = 1e8 + np.array([[0.125], [0.375]])
    wm2 = A.weighted_mean(big, np.array([1.0, 3.0]), np.array([0]), np.array([2]))
    assert wm2[0, 0] == 1e8 + 0.3125
    with pytest.raises(ValueError, match="unknown collapse"):
        c("median", cl, rows, starts, counts)


def test_align_entry_spans_presorted_and_segments():
    ref = np.array([[0.0, 1.0], [1.0, 2.0]])
    frames = np.array([[1.5, 2.0], [0.25, 0.75], [0.5, 1.25]])
    feats = np.array([[3.0], [1.0], [2.0]])
    rows, ivs, fts = A.align_entry(ref, frames, feats)
    assert rows.tolist() == [0, 1]
    assert ivs[0].tolist() == [[0.25, 1.0]] and ivs[1].tolist() == [[1.0, 2.0]]
    assert fts[0].tolist() == [[1.5]] and fts[1].tolist() == [[2.5]]
    rows, ivs, fts = A.align_entry(ref, frames, feats, collapse=None)
    assert ivs[0].tolist() == [[0.25, 0.75], [0.5, 1.0]] and fts[1].tolist() == [[2.0], [3.0]]
    # presorted=True trusts the caller's order (here: not sorted, so the result differs)
    r2, _, f2 = A.align_entry(ref, frames, feats, collapse=None, presorted=True)
    assert f2[1].tolist() == [[3.0], [2.0]]
    r3, _, f3 = A.align_entry(ref, frames, feats, collapse="max")
    assert f3[0].tolist() == [[2.0]]
    r4, _, f4 = A.align_entry(ref, frames, feats, collapse=("mean", "min"))
    assert f4[1].tolist() == [[2.5, 2.0]]
    # stable sort: equal starts keep their stored order in segment mode
    eq = np.array([[0.0, 1.0], [0.0, 0.5]])
    _, _, fe = A.align_entry(ref[:1], eq, np.array([[7.0], [8.0]]), collapse=None)
    assert fe[0].tolist() == [[7.0], [8.0]]
    # many equal starts (numpy's default quicksort is not stable beyond its small-array insertion sort)
    rng = np.random.default_rng(0)
    starts = rng.integers(0, 3, 200) * 0.25
    many = np.stack([starts, starts + 0.5], 1)
    vals = np.arange(200.0)[:, None]
    _, _, fm = A.align_entry(np.array([[0.0, 2.0]]), many, vals, collapse=None)
    want = vals[np.argsort(starts, kind="stable")]
    assert np.array_equal(fm[0], want)


def test_align_sdk_modes_fill_and_reports():
    ref = {"v": (np.array([[0.0, 1.0], [1.0, 2.0], [5.0, 6.0]]), np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])),
           "x": (np.array([[0.0, 1.0]]), np.zeros((1, 2)))}
    other = {"v": (np.array([[0.0, 0.25], [0.25, 1.5]]), np.array([[4.0], [8.0]]))}
    a_ref, a_out, rep = A.align_sdk(ref, {"o": other}, fill_missing=True)
    assert rep["dropped_ids"] == ["x"] and rep["reference_entries"] == 3 and rep["filled"] == {"o": 1}
    assert a_out["o"]["v[0]"][1].tolist() == [[6.0]] and a_out["o"]["v[1]"][1].tolist() == [[8.0]]
    filled = a_out["o"]["v[2]"]
    assert filled[1].dtype == np.float64 and filled[1].tolist() == [[0.0]] and filled[0].tolist() == [[5.0, 6.0]]
    _, w_out, _ = A.align_sdk(ref, {"o": other}, mode="weighted")
    assert w_out["o"]["v[0]"][1].tolist() == [[(0.25 * 4 + 0.75 * 8) / 1.0]]
    _, n_out, rep2 = A.align_sdk(ref, {"o": other})
    assert "v[2]" not in n_out["o"] and rep2["filled"] == {"o": 0}
    with pytest.raises(ValueError, match="mode"):
        A.align_sdk(ref, {"o": other}, mode="nearest")
    # the reference's own rows are collapsed too: std of one row is 0
    s_ref, _, _ = A.align_sdk(ref, {"o": other}, collapse=("mean", "std"))
    assert s_ref["v[0]"][1].tolist() == [[1.0, 2.0, 0.0, 0.0]]
    w_ref, _, _ = A.align_sdk(ref, {"o": other}, mode="weighted", collapse="mean")
    assert w_ref["v[1]"][1].tolist() == [[3.0, 4.0]]
    # already-aligned input (several keys per video) and 1-D features
    pre = {"v[0]": (np.array([[0.0, 0.5]]), np.array([2.0])), "v[1]": (np.array([[0.5, 1.0]]), np.array([4.0]))}
    _, p_out, _ = A.align_sdk({"v": ref["v"]}, {"o": pre})
    assert p_out["o"]["v[0]"][1].tolist() == [[3.0]]


def test_shared_ids_exact_and_prefix():
    kept, dropped = A.shared_ids([["a[0]", "a[1]", "b"], ["a", "c"]])
    assert dropped == {"b", "c"} and kept[0] == {"a[0]", "a[1]"} and kept[1] == {"a"}
    assert A.shared_ids([]) == ([], set())
    k2, _ = A.shared_ids([["ab", "abc", "x"], ["abc", "x"]], prefix_drop=True)
    assert k2[0] == {"x"}
    assert A.SDK_EPSILON == 1e-5 and A.SDK_EPSILON_2019 == 1e-3


def test_plain_mean_divides_each_group_by_its_own_count():
    # two groups of unequal size (2 and 3 rows), several columns, and a 3-d tail
    rows = np.arange(15.0).reshape(5, 3) ** 1.5
    starts, counts = np.array([0, 2]), np.array([2, 3])
    out = A.plain_mean(rows, starts, counts)
    np.testing.assert_array_equal(out, np.stack([np.average(rows[:2], axis=0), np.average(rows[2:], axis=0)]))
    cube = rows.reshape(5, 3, 1).repeat(2, axis=2)
    out3 = A.plain_mean(cube, starts, counts)
    np.testing.assert_allclose(out3[..., 1], out, rtol=1e-15)
    # an empty group stays zero and does not shift the others
    out_e = A.plain_mean(rows, np.array([0, 2, 2]), np.array([2, 0, 3]))
    np.testing.assert_array_equal(out_e[[0, 2]], out) and np.testing.assert_array_equal(out_e[1], 0.0)


def test_zero_length_reference_rows_are_skipped_and_reference_entries_are_single_rows():
    # a zero-length reference interval away from t = 0 (its start + end is not ~0): skipped like the SDK
    ref = np.array([[1.0, 1.0], [1.0, 2.0], [2.0, 3.0]])
    frames = np.array([[0.9, 1.6], [1.6, 2.4], [2.4, 3.0]])
    feats = np.array([[1.0], [2.0], [4.0]])
    rows, _ivs, fts = A.align_entry(ref, frames, feats, A.SDK_EPSILON, ("mean",))
    assert list(rows) == [1, 2]
    assert [float(f[0, 0]) for f in fts] == [1.5, 3.0]
    ref_seq = {"v": (ref[1:], np.array([[7.0, 8.0], [9.0, 10.0]]))}
    out_ref, out, _ = A.align_sdk(ref_seq, {"a": {"v": (frames, feats)}})
    assert sorted(out_ref) == ["v[0]", "v[1]"]
    for i, key in enumerate(["v[0]", "v[1]"]):
        iv, ft = out_ref[key]
        assert iv.shape == (1, 2) and ft.shape == (1, 2)
        np.testing.assert_array_equal(ft[0], ref_seq["v"][1][i])


def test_shared_ids_default_drops_exact_ids_only():
    kept, dropped = A.shared_ids([["ab", "abc", "x"], ["abc", "x"]])
    assert dropped == {"ab"} and kept == [{"abc", "x"}, {"abc", "x"}]


def test_a_collapse_given_as_one_name_or_callable_equals_the_one_element_tuple():
    ref = {"v": (np.array([[0.0, 1.0], [1.0, 2.0]]), np.array([[1.0, 2.0], [3.0, 4.0]]))}
    other = {"v": (np.array([[0.0, 0.5], [0.5, 1.0], [1.0, 2.0]]), np.array([[4.0], [8.0], [2.0]]))}
    for single in ("std", lambda intervals, features: features.max(axis=0)):  # SDK-style callable
        one_ref, one_out, _ = A.align_sdk(ref, {"o": other}, collapse=single)
        tup_ref, tup_out, _ = A.align_sdk(ref, {"o": other}, collapse=(single,))
        assert sorted(one_ref) == sorted(tup_ref) == ["v[0]", "v[1]"]
        for key in one_ref:  # the reference's own rows are collapsed with the same function
            np.testing.assert_array_equal(one_ref[key][1], tup_ref[key][1])
            np.testing.assert_array_equal(one_out["o"][key][1], tup_out["o"][key][1])
    std_ref, _, _ = A.align_sdk(ref, {"o": other}, collapse="std")
    assert std_ref["v[0]"][1].tolist() == [[0.0, 0.0]]  # std of the reference's single row


def test_frames_per_reference_with_overlapping_frames_of_unequal_length():
    """Frames sorted by start are not sorted by end when a long frame overlaps short ones; the count must
    not depend on the order the frames come in."""
    ref = np.array([[0.0, 1.0], [1.0, 2.5], [2.5, 9.0], [9.5, 12.0]])
    frames = np.array([[3.0, 4.0], [0.0, 10.0], [1.0, 2.0], [2.0, 3.0], [11.0, 11.5]])
    want = [sum(1 for s, e in frames if min(e, r1) - max(s, r0) > A.SDK_EPSILON) for r0, r1 in ref]
    assert want == [1, 3, 3, 2]
    for order in (slice(None), slice(None, None, -1)):
        assert A.frames_per_reference(ref, frames[order]).tolist() == want


def test_weighted_mean_spreads_a_non_finite_value_even_with_zero_weight():
    # like the plain mean: a group holding +inf is +inf whatever the overlap weights say
    rows = np.array([[np.inf, 1.0], [1.0, 2.0], [3.0, -np.inf]])
    out = A.weighted_mean(rows, np.array([0.0, 1.0, 2.0]), np.array([0, 2]), np.array([2, 1]))
    assert out[0, 0] == np.inf and out[0, 1] == pytest.approx(2.0) and out[1, 1] == -np.inf
    assert out[1, 0] == pytest.approx(3.0)


def test_average_to_reference_measures_overlaps_in_double_precision():
    """At t = 100 s a float32 timestamp is off by up to 4 µs: a frame overlapping its word by 11 µs (kept at
    the SDK's epsilon of 10 µs) would shrink to 7.6 µs and be dropped."""
    ref = np.array([[100.0, 100.5], [100.5, 100.49 + 0.5]])
    frames = np.array([[100.5 - 1.1e-5, 101.0], [99.0, 100.5 - 0.4], [100.99 - 1.1e-5, 102.0]])
    values = np.array([[8.0], [2.0], [1.0 / 3.0]])
    out, has = A.average_to_reference(ref, frames, values, epsilon=A.SDK_EPSILON)
    assert has.tolist() == [True, True]
    # word 0 keeps both of its frames (a frame at 100.5 - 11 µs); word 1 (ending at 100.99, not a float32
    # number) keeps the frame starting 11 µs before its end, so its mean is that frame's 1/3, in double precision
    assert out[0, 0] == 5.0 and out[1, 0] == (8.0 + 1.0 / 3.0) / 2.0


def test_stack_to_reference_keeps_float32_features_float32_and_ints_become_float64():
    ref = np.array([[0.0, 1.0], [1.0, 2.0]])
    frames = np.array([[0.0, 0.5], [0.5, 1.0], [1.0, 2.0]])
    out32, mask = A.stack_to_reference(ref, frames, np.ones((3, 2), np.float32), 2)
    assert out32.dtype == np.float32 and mask.tolist() == [True, True, True, False]
    out_int, _ = A.stack_to_reference(ref, frames, np.ones((3, 2), np.int32), 2)
    assert out_int.dtype == np.float64
