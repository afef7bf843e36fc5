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
