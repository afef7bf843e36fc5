"""Paper 002's aligned view: each word's frames padded and stacked to a fixed number of slots."""

import numpy as np
import pytest

from emofusion.data.alignment import stack_reference, stack_to_reference


def test_frames_stacked_per_word_in_time_order_and_padded():
    words = np.array([[0.0, 1.0], [1.0, 1.5], [3.0, 4.0]])
    frames = np.array([[0.5, 1.25], [0.0, 0.5], [1.25, 1.5], [2.0, 2.5], [3.5, 3.75], [3.0, 3.5], [3.75, 4.0]])
    feats = np.arange(7.0)[:, None] * 10 + 1
    out, mask = stack_to_reference(words, frames, feats, slots=2)
    assert out.shape == (6, 1) and mask.tolist() == [True, True, True, True, True, True]
    # word 0: frames starting 0.0 then 0.5 (time order, not stored order); word 1: 0.5-1.25 (spans both) then
    # 1.25-1.5; the frame at 2.0-2.5 lies in no word: discarded; word 2 has three frames: the first two kept
    assert out[:, 0].tolist() == [11.0, 1.0, 1.0, 21.0, 51.0, 41.0]
    out3, mask3 = stack_to_reference(words, frames, feats, slots=3)
    assert mask3.tolist() == [True, True, False, True, True, False, True, True, True]
    assert out3[2, 0] == 0.0 and out3[8, 0] == 61.0
    t, tm = stack_reference(np.array([[1.0, 2.0], [3.0, 4.0]]), 3)
    assert t.tolist() == [[1, 2], [0, 0], [0, 0], [3, 4], [0, 0], [0, 0]] and tm.tolist() == [
        True, False, False, True, False, False]
    e, em = stack_to_reference(words, np.zeros((0, 2)), np.zeros((0, 1)), slots=2)
    assert e.shape == (6, 1) and not em.any()
    with pytest.raises(ValueError):
        stack_to_reference(words, frames, feats, slots=0)


def test_weighted_mean_of_a_single_row():
    from emofusion.data.alignment import weighted_mean

    out = weighted_mean(np.array([[2.0, 4.0]]), np.array([0.5]), np.array([0]), np.array([1]))
    assert out.tolist() == [[2.0, 4.0]]


def test_per_word_slots_differ_between_words():
    from emofusion.data.alignment import frames_per_reference

    words = np.array([[0.0, 1.0], [1.0, 1.5], [3.0, 4.0]])
    frames = np.array([[0.5, 1.25], [0.0, 0.5], [1.25, 1.5], [3.5, 3.75], [3.0, 3.5], [3.75, 4.0]])
    feats = np.arange(6.0)[:, None] + 1
    assert frames_per_reference(words, frames).tolist() == [2, 2, 3]
    out, mask = stack_to_reference(words, frames, feats, slots=np.array([3, 1, 2]))
    # word 0: frames 2.0 (0.0-0.5) then 1.0, padded to 3; word 1: only its first frame (0.5-1.25); word 2: two
    assert out[:, 0].tolist() == [2.0, 1.0, 0.0, 1.0, 5.0, 4.0]
    assert mask.tolist() == [True, True, False, True, True, True]
    t, tm = stack_reference(np.array([[1.0], [2.0], [3.0]]), np.array([3, 1, 2]))
    assert t[:, 0].tolist() == [1, 0, 0, 2, 3, 0] and tm.tolist() == [True, False, False, True, True, False]


def test_synthetic_stacked_view_keeps_every_frame_of_each_word():
    from emofusion.data.alignment import frames_per_reference
    from emofusion.data.synthetic import SyntheticConfig, generate_split, stack_to_words

    sample = generate_split(SyntheticConfig(n_train=2, n_val=1, n_test=1, max_words=12), "train")[1]
    out = stack_to_words(sample)
    ref = sample.intervals["text"]
    counts = {m: frames_per_reference(ref, sample.intervals[m]) for m in ("audio", "visual")}
    slots = np.maximum(np.maximum(counts["audio"], counts["visual"]), 1)
    assert counts["audio"].sum() != counts["visual"].sum()  # unequal rates: padding is needed
    lengths = {m: len(v) for m, v in out.features.items()}
    assert set(lengths.values()) == {int(slots.sum())}
    first = np.cumsum(slots) - slots
    np.testing.assert_array_equal(out.features["text"][first], sample.features["text"])
    for m in ("audio", "visual"):
        real = ~np.isnan(out.features[m]).all(axis=1)
        assert int(real.sum()) == int(counts[m].sum())  # nothing truncated, padding is NaN
        # word 0's frames come first, in time order
        k = int(counts[m][0])
        order = np.argsort(sample.intervals[m][:, 0], kind="stable")[:k]
        np.testing.assert_array_equal(out.features[m][:k], sample.features[m][order].astype(np.float32))
    assert len(out.words) == int(slots.sum()) and out.words[0] == sample.words[0]


def test_paper002_aligned_column_uses_the_stacked_view():
    from emofusion.evaluation.suite import get_suite

    for preset in ("quick", "full"):
        spec = get_suite("paper002-table2", preset)
        aligned = [c for c in spec.cells if c.column == "aligned"]
        assert aligned and all(c.config["dataset"] == "synthetic:aligned" for c in aligned)
        assert all(c.config["dataset_options"]["alignment"] == "stacked" for c in aligned)
        assert all("alignment" not in c.config["dataset_options"] for c in spec.cells if c.column == "unaligned")


def test_a_single_word_and_one_dimensional_features():
    from emofusion.data.alignment import align_sdk, frames_per_reference

    word = np.array([[0.0, 1.0]])
    frames = np.array([[0.0, 0.5], [0.5, 1.0], [1.5, 2.0]])
    assert frames_per_reference(word, frames).tolist() == [2]
    out, mask = stack_to_reference(word, frames, np.array([[1.0], [2.0], [3.0]]), slots=3)
    assert out[:, 0].tolist() == [1.0, 2.0, 0.0] and mask.tolist() == [True, True, False]
    # features stored 1-d (one value per frame) are read as [N, 1]
    _, al, _ = align_sdk({"v": (word, np.array([[5.0]]))}, {"a": {"v": (frames, np.array([1.0, 3.0, 9.0]))}})
    iv, ft = al["a"]["v[0]"]
    assert ft.shape == (1, 1) and float(ft[0, 0]) == 2.0


def test_frames_per_reference_with_one_frame():
    from emofusion.data.alignment import frames_per_reference

    words = np.array([[0.0, 1.0], [1.0, 2.0]])
    assert frames_per_reference(words, np.array([[1.25, 1.5]])).tolist() == [0, 1]
    assert frames_per_reference(words, np.zeros((0, 2))).tolist() == [0, 0]
    assert frames_per_reference(np.zeros((0, 2)), np.array([[1.25, 1.5]])).tolist() == []
