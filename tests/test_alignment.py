import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emofusion.data.alignment import (
    SDK_EPSILON,
    align_sdk,
    average_to_reference,
    frame_intervals,
    shared_ids,
)


def naive_sdk(reference, others, eps, collapse=True):
    """A literal loop transcription of mmdataset.unify + align semantics (exact-id unify)."""
    bases = [set(reference)] + [set(o) for o in others.values()]
    valid = set.intersection(*bases)
    out_ref, out = {}, {n: {} for n in others}
    for vid in [k for k in reference if k in valid]:
        r_iv, r_ft = reference[vid]
        merged = {}
        for n, seq in others.items():
            iv, ft = seq[vid]
            order = sorted(range(len(iv)), key=lambda j, iv=iv: iv[j, 0])
            merged[n] = (iv[order], ft[order])
        for i in range(len(r_iv)):
            ref = r_iv[i]
            if abs(ref[0] - ref[1]) < eps:
                continue
            out_ref[f"{vid}[{i}]"] = (r_iv[i][None], r_ft[i][None])
            for n, (sub, feats) in merged.items():
                hit = np.array([(ref[1] - s[0]) > -eps and (s[1] - ref[0]) > -eps for s in sub], bool)
                cl = np.stack([np.maximum(sub[hit, 0], ref[0]), np.minimum(sub[hit, 1], ref[1])], 1)
                f = feats[hit]
                keep = np.abs(cl[:, 0] - cl[:, 1]) > eps
                cl, f = cl[keep], f[keep]
                if len(cl) == 0:
                    continue
                if collapse:
                    out[n][f"{vid}[{i}]"] = (np.array([[cl.min(), cl.max()]]), np.average(f, axis=0)[None])
                else:
                    out[n][f"{vid}[{i}]"] = (cl, f)
    return out_ref, out


def random_video(rng, n_words=12, rate=100.0, dim=5, dtype=np.float32, nonfinite=False):
    t = np.cumsum(rng.uniform(0.05, 0.6, n_words + 1))
    words = np.stack([t[:-1], t[1:]], 1)
    words[rng.integers(0, n_words)] = words[0, 0]  # a zero-length word, skipped by the SDK
    if n_words > 3:  # a gap shorter than epsilon, and an exactly touching word
        words[2, 1] = words[3, 0] - 5e-6
    frames = frame_intervals(int(t[-1] * rate) + 3, rate, offset=-0.01)
    frames = frames[rng.permutation(len(frames))]  # stored out of order: the SDK sorts by start
    feats = rng.normal(size=(len(frames), dim)).astype(dtype)
    if nonfinite:
        feats[rng.integers(0, len(frames), 3), 0] = -np.inf
        feats[rng.integers(0, len(frames), 2), 1] = np.nan
    return (words, rng.normal(size=(n_words, 3))), (frames, feats)


@pytest.mark.parametrize("eps", [SDK_EPSILON, 1e-3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_naive_sdk_bit_for_bit(eps, dtype):
    rng = np.random.default_rng(1)
    ref, other = {}, {}
    for v in range(6):
        (w, wf), (f, ff) = random_video(rng, rate=[100, 7.5, 30][v % 3], dtype=dtype, nonfinite=v == 1)
        ref[f"v{v}"], other[f"v{v}"] = (w, wf), (f, ff)
    other["only_other"] = other["v0"]
    a_ref, a_out, report = align_sdk(ref, {"audio": other}, epsilon=eps)
    n_ref, n_out = naive_sdk({k: v for k, v in ref.items()}, {"audio": other}, eps)
    assert report["dropped_ids"] == ["only_other"]
    assert list(a_ref) == list(n_ref)
    assert list(a_out["audio"]) == list(n_out["audio"])
    for k, (iv, ft) in n_out["audio"].items():
        assert np.array_equal(a_out["audio"][k][0], iv)
        assert a_out["audio"][k][1].dtype == ft.dtype
        assert np.array_equal(a_out["audio"][k][1], ft, equal_nan=True)  # bit-identical plain mean
    assert any(np.isneginf(v[1]).any() for v in a_out["audio"].values())


def test_no_collapse_is_segment_level():
    rng = np.random.default_rng(2)
    (w, wf), (f, ff) = random_video(rng)
    a_ref, a_out, _ = align_sdk({"v": (w, wf)}, {"a": {"v": (f, ff)}}, collapse=None)
    n_ref, n_out = naive_sdk({"v": (w, wf)}, {"a": {"v": (f, ff)}}, SDK_EPSILON, collapse=False)
    for k, (iv, ft) in n_out["a"].items():
        assert np.array_equal(a_out["a"][k][0], iv) and np.array_equal(a_out["a"][k][1], ft)
        assert len(iv) > 1  # unaligned inside the reference interval


def test_reference_gaps_and_missing_and_fill():
    ref = {"v": (np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 2.0], [5.0, 6.0]]), np.arange(4.0)[:, None])}
    other = {"v": (np.array([[0.0, 0.5], [0.5, 1.5], [1.5, 2.0]]), np.array([[1.0, 2], [3, 4], [5, 6]]))}
    a_ref, a_out, _ = align_sdk(ref, {"o": other})
    assert list(a_ref) == ["v[0]", "v[2]", "v[3]"]  # the zero-length row 1 is skipped: index gap
    assert list(a_out["o"]) == ["v[0]", "v[2]"]  # [5, 6] has no frame: no entry
    assert np.array_equal(a_out["o"]["v[0]"][1], [[2.0, 3.0]])  # plain mean of rows 0 and 1
    assert np.array_equal(a_out["o"]["v[0]"][0], [[0.0, 1.0]])  # span of the clipped frames
    _, w_out, _ = align_sdk(ref, {"o": other}, mode="weighted")
    assert np.allclose(w_out["o"]["v[2]"][1], [[4.0, 5.0]])  # 0.5 s of row 1 and 0.5 s of row 2
    assert np.allclose(w_out["o"]["v[0]"][1], [[2.0, 3.0]])
    _, f_out, rep = align_sdk(ref, {"o": other}, fill_missing=True)
    assert np.array_equal(f_out["o"]["v[3]"][1], [[0.0, 0.0]]) and np.array_equal(
        f_out["o"]["v[3]"][0], [[5.0, 6.0]]
    )
    assert rep["filled"] == {"o": 1}


def test_epsilon_changes_membership():
    ref = {"v": (np.array([[0.0, 1.0]]), np.zeros((1, 1)))}
    # this frame overlaps the word by 5e-4 s: kept with eps=1e-5, dropped with the 2018-19 eps=1e-3
    other = {"v": (np.array([[0.9995, 2.0], [0.0, 0.5]]), np.array([[10.0], [2.0]]))}
    _, a, _ = align_sdk(ref, {"o": other}, epsilon=1e-5)
    _, b, _ = align_sdk(ref, {"o": other}, epsilon=1e-3)
    assert a["o"]["v[0]"][1][0, 0] == 6.0 and b["o"]["v[0]"][1][0, 0] == 2.0


def test_prefix_drop_flag():
    keys = [["25522", "255224", "111"], ["255224", "111"]]
    exact, dropped = shared_ids(keys)
    assert dropped == {"25522"} and exact[0] == {"255224", "111"}
    sdk, _ = shared_ids(keys, prefix_drop=True)
    assert sdk[0] == {"111"} and sdk[1] == {"111"}  # the SDK's prefix deletion also removes 255224


def test_several_collapse_functions_concatenate():
    ref = {"v": (np.array([[0.0, 1.0]]), np.zeros((1, 1)))}
    other = {"v": (np.array([[0.0, 0.5], [0.5, 1.0]]), np.array([[1.0, 5.0], [3.0, -1.0]]))}
    _, a, _ = align_sdk(ref, {"o": other}, collapse=("mean", "max", lambda iv, f: f.min(0)))
    assert np.array_equal(a["o"]["v[0]"][1], [[2.0, 2.0, 3.0, 5.0, 1.0, -1.0]])


def test_average_to_reference_still_works():
    ref = np.array([[0.0, 1.0], [1.0, 2.0], [9.0, 10.0]])
    iv = frame_intervals(8, 4.0)
    v = np.arange(16.0).reshape(8, 2)
    out, has = average_to_reference(ref, iv, v)
    assert has.tolist() == [True, True, False]
    assert np.allclose(out[0], v[:4].mean(0)) and np.allclose(out[1], v[4:].mean(0))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([1e-5, 1e-3]), st.integers(1, 4))
def test_fuzz_against_naive(seed, eps, dim):
    rng = np.random.default_rng(seed)
    n_ref, n_oth = rng.integers(1, 8), rng.integers(0, 30)
    grid = np.round(rng.uniform(0, 5, (n_ref, 2)), 3)  # coarse grid: many touching/equal boundaries
    r_iv = np.sort(grid, 1)
    o_iv = np.sort(np.round(rng.uniform(0, 5, (n_oth, 2)), 3), 1)
    if n_oth and rng.random() < 0.3:
        o_iv[:, 1] = o_iv[:, 0] + rng.choice([eps / 2, eps * 2], n_oth)
    o_ft = rng.normal(size=(n_oth, dim))
    ref = {"v": (r_iv, np.zeros((n_ref, 1)))}
    other = {"v": (o_iv, o_ft)}
    _, a, _ = align_sdk(ref, {"o": other}, epsilon=eps)
    _, n = naive_sdk(ref, {"o": other}, eps)
    assert list(a["o"]) == list(n["o"])
    for k, (iv, ft) in n["o"].items():
        assert np.array_equal(a["o"][k][0], iv) and np.array_equal(a["o"][k][1], ft)
