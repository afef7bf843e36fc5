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


def test_average_to_reference_drops_a_frame_overlapping_by_exactly_epsilon():
    ref = np.array([[0.0, 1.0]])
    # overlaps 0.25 (= eps: not more, dropped), 0.5 and 0.375 (kept); eps = 0.25 makes every one exact
    frames = np.array([[0.75, 1.5], [0.0, 0.5], [-0.625, 0.375]])
    values = np.array([[100.0], [2.0], [10.0]])
    plain, has = A.average_to_reference(ref, frames, values, epsilon=E)
    assert has.tolist() == [True] and plain[0, 0] == (2.0 + 10.0) / 2
    weighted, _ = A.average_to_reference(ref, frames, values, epsilon=E, weighted=True)
    assert weighted[0, 0] == (0.5 * 2.0 + 0.375 * 10.0) / (0.5 + 0.375)


def test_average_to_reference_plain_mean_does_not_scale_the_values():
    # the plain mean of one frame is that frame, and of two opposite frames 0, even at the top of float64
    # (a weight other than 1 would overflow to inf before dividing back)
    ref = np.array([[0.0, 1.0], [1.0, 2.0]])
    frames = np.array([[0.0, 1.0], [1.0, 1.5], [1.5, 2.0]])
    values = np.array([[1.5e308], [1.5e308], [-1.5e308]])
    out, _ = A.average_to_reference(ref, frames, values)
    assert out[:, 0].tolist() == [np.mean(values[:1]), np.mean(values[1:])] == [1.5e308, 0.0]


def test_plain_mean_of_single_columns_is_numpys_pairwise_average():
    """numpy sums a [K, 1] block pairwise (eight partial sums for K > 8), not row by row: the one-column case
    must take numpy's own average to stay bit-identical to the SDK's collapse."""
    rng = np.random.default_rng(5)
    rows = rng.normal(size=(60, 1)) * 10.0 ** rng.integers(-3, 4, size=(60, 1))
    starts, counts = np.array([0, 10, 35]), np.array([10, 25, 25])
    sequential = [sum(rows[s : s + c, 0].tolist(), 0.0) / c for s, c in zip(starts, counts)]
    want = [np.average(rows[s : s + c], axis=0)[0] for s, c in zip(starts, counts)]
    assert sequential != want  # the data tell the two summation orders apart
    assert A.plain_mean(rows, starts, counts)[:, 0].tolist() == want
    assert A.plain_mean(rows[:, :, None], starts, counts)[:, 0, 0].tolist() == want  # [K, 1, 1] too


def test_plain_mean_of_float16_rows_is_numpys_average():
    # numpy accumulates a float16 mean in float32 and rounds the result to float16 once
    rng = np.random.default_rng(6)
    rows = rng.normal(size=(200, 6)).astype(np.float16)
    starts, counts = np.array([0, 70]), np.array([70, 130])
    out = A.plain_mean(rows, starts, counts)
    assert out.dtype == np.float16
    for g, (s, c) in enumerate(zip(starts, counts)):
        assert np.array_equal(out[g], np.average(rows[s : s + c], axis=0))
    # a float32 sum loses 2**-10 steps next to 60000 (a float64 one would not): the mean is 0 like numpy's
    lossy = np.zeros((22, 2), np.float16)
    lossy[0, 0], lossy[1:21, 0], lossy[21, 0] = 60000.0, 2.0**-10, -60000.0
    mean = A.plain_mean(lossy, np.array([0]), np.array([22]))
    assert np.array_equal(mean[0], np.average(lossy, axis=0)) and mean[0, 0] == 0.0


def test_weighted_mean_uses_double_precision_weights():
    # clipped durations are float64: rounding them to float32 would move the mean by ~1e-8 relative
    rng = np.random.default_rng(7)
    rows = rng.normal(size=(9, 2))
    weights = rng.uniform(0.001, 0.04, size=9)
    starts, counts = np.array([0, 4]), np.array([4, 5])
    out = A.weighted_mean(rows, weights, starts, counts)
    for g, (s, c) in enumerate(zip(starts, counts)):
        np.testing.assert_allclose(out[g], np.average(rows[s : s + c], axis=0, weights=weights[s : s + c]),
                                   rtol=1e-13, atol=0)


def test_weighted_mean_with_no_frames_keeps_the_dtype_it_has_with_frames():
    for dtype in (np.float32, np.int64):
        rows = np.array([[1, 2], [3, 4]], dtype)
        with_frames = A.weighted_mean(rows, np.array([1.0, 1.0]), np.array([0, 2]), np.array([2, 0]))
        without = A.weighted_mean(rows[:0], np.zeros(0), np.array([0, 0]), np.array([0, 0]))
        assert without.dtype == with_frames.dtype == (np.float32 if dtype is np.float32 else np.float64)
        assert without.tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_max_min_sum_collapses_keep_the_feature_dtype_like_numpy():
    rows = np.array([[1.0, 2.0], [3.0, -6.0], [5.0, 1.0]], np.float32)
    starts, counts = np.array([0, 2, 3]), np.array([2, 1, 0])
    cl = np.zeros((3, 2))
    for name, ufunc in (("max", np.max), ("min", np.min), ("sum", np.sum)):
        out = A._collapse(name, cl, rows, starts, counts)
        assert out.dtype == ufunc(rows[:2], axis=0).dtype == np.float32
        assert out.tolist() == [ufunc(rows[:2], axis=0).tolist(), rows[2].tolist(), [0.0, 0.0]]


def test_an_sdk_style_collapse_function_is_called_only_for_intervals_with_frames():
    # the SDK calls the function once per reference interval that got frames; an empty group gets zeros of
    # the function's output width without calling it (np.max of nothing would raise)
    rows = np.array([[1.0, 5.0], [3.0, -1.0], [2.0, 2.0]])
    calls = []

    def fn(intervals, features):
        calls.append(len(features))
        return features.max(axis=0)

    out = A._collapse(fn, np.zeros((3, 2)), rows, np.array([0, 2, 3]), np.array([2, 1, 0]))
    assert calls == [2, 1] and out.tolist() == [[3.0, 5.0], [2.0, 2.0], [0.0, 0.0]]


# --------------------------------------------------------------------------------------------------
# session 7 (complete mutant set): the candidate search against the SDK's tests evaluated literally
# --------------------------------------------------------------------------------------------------


def _literal_pairs(ref, frames, eps):
    """Every (reference row, frame) pair the SDK keeps, its three tests evaluated one pair at a time in the
    arrays' own dtype (no candidate search)."""
    out = []
    for i in range(len(ref)):
        for j in range(len(frames)):
            r, s = ref[i], frames[j]
            if (r[1] - s[0]) > -eps and (s[1] - r[0]) > -eps and abs(max(s[0], r[0]) - min(s[1], r[1])) > eps:
                out.append((i, j))
    return out


def _first_end_inside(t, eps, dtype):
    """The smallest ``dtype`` number e that passes the SDK's test ``e - t > -eps`` (in ``dtype``): a frame
    ending there reaches back into a word starting at t by the least amount the SDK accepts."""
    t = dtype(t)
    x = dtype(t - dtype(eps))
    while (x - t) > -eps:
        x = np.nextafter(x, dtype(-np.inf))
    while not (x - t) > -eps:
        x = np.nextafter(x, dtype(np.inf))
    return x


def _last_start_inside(t, eps, dtype):
    """The largest ``dtype`` number s that passes ``t - s > -eps``: a frame starting there, just after a word
    ending at t."""
    t = dtype(t)
    x = dtype(t + dtype(eps))
    while (t - x) > -eps:
        x = np.nextafter(x, dtype(np.inf))
    while not (t - x) > -eps:
        x = np.nextafter(x, dtype(-np.inf))
    return x


def _check_probes(words, probes, eps, dtype):
    """Each probe frame alone after an early frame (so that the running maximum of ends is the probe's own):
    intersect_sdk must find exactly the literal pairs, and every probe must be one."""
    for probe in probes:
        frames = np.array([[words[:, 0].min() - 3.0, words[:, 0].min() - 2.0], probe], dtype)
        want = _literal_pairs(words, frames, eps)
        assert any(j == 1 for _, j in want), probe  # the probe really is a hit (else it tests nothing)
        ri, fj, _ = A.intersect_sdk(words, frames, eps)
        assert list(zip(ri.tolist(), fj.tolist())) == want, (probe, words)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_reversed_frames_reaching_into_a_word_by_a_hair_are_found(dtype):
    """Reversed frames (start > end, accepted by the SDK) whose end lies just inside the epsilon band before a
    word's start, or whose start lies just inside it after the word's end: the fastest search must find the
    same pairs as the literal tests, at ordinary, negative, sub-picosecond and very large (2**25 s) times.
    float32 timestamps: the search bounds are computed in double precision (in float32 they rounded onto
    the frame's end and lost it, e.g. at 9 s or 300 s)."""
    eps = A.SDK_EPSILON
    times = [3.0, 9.0, 12.0, 300.0, -12.0] + ([5e-14, 1.5 * 2.0**25, -1.5 * 2.0**25] if dtype is np.float64 else [])
    for t in times:
        # a sub-picosecond word near t = 0 (its frame must still be longer than eps once clipped)
        words = np.array([[t, t + (1e-13 if abs(t) < 1e-6 else 0.5)]], dtype)
        t0, t1 = words[0]
        probes = [
            [t0 + 0.25, _first_end_inside(t0, eps, dtype)],  # the least reach back into the word's start
            [_last_start_inside(t1, eps, dtype), t1 - 0.25],  # the least reach into its end
            [t0 + 0.25, t0 - dtype(0.5) * dtype(eps)],  # an end inside the band, clearly
            [t1 + dtype(0.5) * dtype(eps), t1 - 0.25],
        ]
        if abs(t) < 1e-6:
            probes = [[t0 + 0.9 * eps, _first_end_inside(t0, eps, dtype)]]
        _check_probes(words, probes, eps, dtype)
    # a word at t = 0 beside one at 2**25 s: the search slack follows the largest time, not the smallest
    if dtype is np.float64:
        big = 1.5 * 2.0**25
        words = np.array([[0.0, 0.5], [big, big + 0.5]])
        _check_probes(words, [[big + 0.25, _first_end_inside(big, eps, np.float64)]], eps, np.float64)


def test_a_reversed_frame_around_a_word_is_no_pair_and_no_error():
    # starts after the word's end and ends before its start: the search window is empty (lo > hi before the
    # clamp), not negative
    ri, fj, cl = A.intersect_sdk(np.array([[0.0, 1.0]]), np.array([[2.0, -1.0]]))
    assert len(ri) == 0 and len(fj) == 0 and cl.shape == (0, 2)
    ri, fj, _ = A.intersect_sdk(np.array([[0.0, 1.0], [5.0, 6.0]]), np.array([[2.0, -1.0], [5.25, 5.5]]))
    assert ri.tolist() == [1] and fj.tolist() == [1]


def test_intersect_sdk_accepts_lists_and_empty_inputs_of_any_shape():
    ri, fj, cl = A.intersect_sdk([[0.0, 1.0], [1.0, 2.0]], [[0.25, 1.5]])
    assert ri.tolist() == [0, 1] and fj.tolist() == [0, 0] and cl.tolist() == [[0.25, 1.0], [1.0, 1.5]]
    for ref, frames in (([], [[0.25, 1.5]]), ([[0.0, 1.0]], []), ([], [])):
        ri, fj, cl = A.intersect_sdk(ref, frames)
        assert len(ri) == len(fj) == 0 and cl.shape == (0, 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_intersection_has_the_same_dtype_whether_or_not_there_were_frames(dtype):
    ref = np.array([[0.0, 1.0]], dtype)
    _, _, none_hit = A.intersect_sdk(ref, np.array([[5.0, 6.0]], dtype))
    _, _, no_frames = A.intersect_sdk(ref, np.zeros((0, 2), dtype))
    _, _, no_ref = A.intersect_sdk(np.zeros((0, 2), dtype), np.array([[5.0, 6.0]], dtype))
    assert none_hit.dtype == no_frames.dtype == no_ref.dtype == dtype


def test_epsilon_must_be_a_tolerance_in_zero_to_one_second():
    ref, frames = np.array([[0.0, 1.0]]), np.array([[0.0, 1.0]])
    for eps in (0.0, 0.5, 0.999):
        assert A.intersect_sdk(ref, frames, eps)[1].tolist() == [0]
    for eps in (-1e-5, 1.0, 3.0, float("nan")):
        with pytest.raises(ValueError, match="epsilon must be in"):
            A.intersect_sdk(ref, frames, eps)


def test_prefix_drop_with_several_violators_drops_keys_starting_with_any_of_them():
    # violators 25522 and 999: 255224 starts with the first only, and is dropped (the SDK deletes every key
    # that starts with *a* violating id)
    kept, dropped = A.shared_ids([["25522", "255224", "999", "111"], ["255224", "111"]], prefix_drop=True)
    assert dropped == {"25522", "999"} and kept == [{"111"}, {"111"}]


def test_align_sdk_passes_prefix_drop_through_and_defaults_to_exact_ids():
    word = (np.array([[0.0, 1.0]]), np.array([[1.0]]))
    ref = {"25522": word, "255224": word}
    other = {"o": {"255224": (np.array([[0.0, 1.0]]), np.array([[4.0]]))}}
    exact_ref, exact_out, exact_rep = A.align_sdk(ref, other)
    assert sorted(exact_ref) == ["255224[0]"] and exact_out["o"]["255224[0]"][1].tolist() == [[4.0]]
    assert exact_rep["dropped_ids"] == ["25522"]
    sdk_ref, sdk_out, _ = A.align_sdk(ref, other, prefix_drop=True)
    assert sdk_ref == {} and sdk_out == {"o": {}}


def test_weighted_mode_changes_only_the_mean():
    ref = {"v": (np.array([[0.0, 1.0]]), np.array([[0.0]]))}
    frames = np.array([[0.0, 0.25], [0.25, 1.0]])  # overlaps 0.25 and 0.75
    other = {"o": {"v": (frames, np.array([[4.0], [8.0]]))}}
    _, w, _ = A.align_sdk(ref, other, mode="weighted", collapse=("mean", "max", "min"))
    assert w["o"]["v[0]"][1].tolist() == [[(0.25 * 4.0 + 0.75 * 8.0) / 1.0, 8.0, 4.0]]
    # an SDK-style callable is used as it is in either mode
    fn = lambda intervals, features: features.sum(axis=0) * 10  # noqa: E731
    _, wf, _ = A.align_sdk(ref, other, mode="weighted", collapse=fn)
    _, sf, _ = A.align_sdk(ref, other, collapse=fn)
    assert wf["o"]["v[0]"][1].tolist() == sf["o"]["v[0]"][1].tolist() == [[120.0]]
    # no collapse: segment-level frames, the same in either mode
    _, ws, _ = A.align_sdk(ref, other, mode="weighted", collapse=None)
    _, ss, _ = A.align_sdk(ref, other, collapse=None)
    assert ws["o"]["v[0]"][1].tolist() == ss["o"]["v[0]"][1].tolist() == [[4.0], [8.0]]


def test_already_aligned_keys_of_a_video_are_merged_in_stored_order():
    # twelve keys v[0] .. v[11] each hold one frame starting at 0: the stable sort keeps the stored order
    pre = {f"v[{i}]": (np.array([[0.0, 0.5]]), np.array([[float(i)]])) for i in range(12)}
    ref = {"v": (np.array([[0.0, 1.0]]), np.array([[0.0]]))}
    _, out, _ = A.align_sdk(ref, {"o": pre}, collapse=None)
    assert out["o"]["v[0]"][1][:, 0].tolist() == [float(i) for i in range(12)]


def test_text_reference_features_are_kept_as_they_are_and_short_word_videos_give_nothing():
    # the SDK's word sequences store the words themselves (bytes): nothing to collapse on the reference
    words = (np.array([[0.0, 1.0], [1.0, 2.0]]), np.array([[b"hello"], [b"world"]]))
    other = {"o": {"v": (np.array([[0.0, 2.0]]), np.array([[3.0]]))}}
    a_ref, a_out, _ = A.align_sdk({"v": words}, other, collapse=("mean", "std"))
    assert a_ref["v[1]"][1].tolist() == [[b"world"]] and a_out["o"]["v[1]"][1].tolist() == [[3.0, 0.0]]
    # a video whose words are all shorter than epsilon: no entry for it, and no error
    short = {"v": (np.array([[1.0, 1.0], [2.0, 2.0]]), np.array([[1.0], [2.0]]))}
    s_ref, s_out, rep = A.align_sdk(short, other, collapse=("mean", "std"))
    assert s_ref == {} and s_out == {"o": {}} and rep["reference_entries"] == 0


def test_feature_shapes_of_other_sequences_are_kept():
    ref = {"v": (np.array([[0.0, 1.0]]), np.array([[0.0]]))}
    # [N, 2, 3] features: segment-level output keeps each frame's [2, 3] block
    cube = np.arange(12.0).reshape(2, 2, 3)
    _, seg, _ = A.align_sdk(ref, {"o": {"v": (np.array([[0.0, 0.5], [0.5, 1.0]]), cube)}}, collapse=None)
    assert seg["o"]["v[0]"][1].shape == (2, 2, 3) and np.array_equal(seg["o"]["v[0]"][1], cube)
    # one frame stored 1-d (interval [2], features [D]): one frame of D values
    one = {"v[0]": (np.array([0.0, 0.5]), np.array([1.0, 2.0, 3.0]))}
    _, o1, _ = A.align_sdk(ref, {"o": one})
    assert o1["o"]["v[0]"][1].tolist() == [[1.0, 2.0, 3.0]]
    # N frames with 1-d features: one value per frame, [K, 1] rows in every mode
    flat = {"v": (np.array([[0.0, 0.25], [0.25, 1.0]]), np.array([4.0, 8.0]))}
    _, w, _ = A.align_sdk(ref, {"o": flat}, mode="weighted")
    assert w["o"]["v[0]"][1].tolist() == [[0.25 * 4.0 + 0.75 * 8.0]]
    _, s, _ = A.align_sdk(ref, {"o": flat}, collapse=None)
    assert s["o"]["v[0]"][1].tolist() == [[4.0], [8.0]]


def test_output_intervals_keep_the_timestamps_dtype():
    ref = {"v": (np.array([[0.0, 1.0]], np.float32), np.array([[0.0]]))}
    other = {"o": {"v": (np.array([[0.25, 0.75], [0.5, 1.5]], np.float32), np.array([[1.0], [2.0]]))}}
    _, a_out, _ = A.align_sdk(ref, other)
    _, n_out = naive_sdk(ref, other, A.SDK_EPSILON)
    assert a_out["o"]["v[0]"][0].dtype == n_out["o"]["v[0]"][0].dtype == np.float32
    assert a_out["o"]["v[0]"][0].tolist() == [[0.25, 1.0]]


def test_frames_per_reference_and_stacking_measure_in_double_precision():
    # at t = 100 s float32 is off by up to 4 us: a frame overlapping word 0 (ending at 100.99, not a float32
    # number) by 11 us (> eps = 10 us) must count, one overlapping it by 9 us must not
    words = np.array([[100.0, 100.49 + 0.5], [100.99, 101.5]])
    frames = np.array([[100.99 - 1.1e-5, 102.0], [99.0, 100.0 + 1.1e-5], [100.99 - 0.9e-5, 100.995],
                       [100.5, 100.5 + 0.5]])
    want = [sum(1 for s, e in frames if min(e, w1) - max(s, w0) > A.SDK_EPSILON) for w0, w1 in words]
    assert want == [3, 3]
    assert A.frames_per_reference(words, frames).tolist() == want
    out, mask = A.stack_to_reference(words, frames, np.arange(4.0)[:, None] + 1, slots=3)
    assert mask.all() and out[:, 0].tolist() == [2.0, 4.0, 1.0, 4.0, 1.0, 3.0]  # each word's frames by start


def test_frames_per_reference_has_a_count_for_every_word_and_accepts_empty_lists():
    words = np.array([[0.0, 1.0], [1.0, 2.0], [5.0, 6.0]])
    assert A.frames_per_reference(words, np.array([[0.25, 1.5]])).tolist() == [1, 1, 0]  # the last has none
    assert A.frames_per_reference(words, []).tolist() == [0, 0, 0]
    assert A.frames_per_reference([], [[0.25, 1.5]]).tolist() == []


def test_stack_to_reference_edges():
    words = np.array([[0.0, 1.0], [1.0, 2.0]])
    # a single frame, frames and values as lists
    out, mask = A.stack_to_reference(words, [[1.25, 1.5]], [[7.0, 8.0]], slots=2)
    assert out.tolist() == [[0.0, 0.0], [0.0, 0.0], [7.0, 8.0], [0.0, 0.0]] and mask.tolist() == [False] * 2 + [True, False]
    # no frames at all (an empty list), and no words
    e, em = A.stack_to_reference(words, [], np.zeros((0, 2)), slots=2)
    assert e.shape == (4, 2) and not em.any()
    n, nm = A.stack_to_reference(np.zeros((0, 2)), [[0.0, 1.0]], [[1.0]], slots=2)
    assert n.shape == (0, 1) and nm.shape == (0,)
    # every word needs at least one slot
    with pytest.raises(ValueError, match="slots must be >= 1"):
        A.stack_to_reference(words, [[0.0, 1.0]], [[1.0]], slots=np.array([2, 0]))
    # time order is start order: a long frame starting first comes first although it ends last
    frames = np.array([[0.5, 0.75], [0.0, 2.0], [0.25, 0.5]])
    o2, _ = A.stack_to_reference(words[:1], frames, np.array([[1.0], [2.0], [3.0]]), slots=3)
    assert o2[:, 0].tolist() == [2.0, 3.0, 1.0]
    # frames with equal starts keep their stored order (numpy's default sort is not stable on long arrays)
    rng = np.random.default_rng(1)
    starts = rng.integers(0, 3, 200) * 0.25
    many = np.stack([starts, starts + 0.5], 1)
    o3, m3 = A.stack_to_reference(np.array([[0.0, 2.0]]), many, np.arange(200.0)[:, None], slots=200)
    assert m3.all() and o3[:, 0].tolist() == np.argsort(starts, kind="stable").astype(float).tolist()
    # the reference's own layout accepts lists too
    t, tm = A.stack_reference([[1.0], [2.0]], 2)
    assert t[:, 0].tolist() == [1.0, 0.0, 2.0, 0.0] and tm.tolist() == [True, False, True, False]
    assert A.stack_reference(np.ones((2, 3), np.float32), 2)[0].dtype == np.float32  # like the other streams
