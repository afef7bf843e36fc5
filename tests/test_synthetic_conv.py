"""synthetic-conv: dyadic conversations, per-utterance labels, speaker-disjoint splits, partial evidence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from emofusion.data import load_dataset
from emofusion.data.collate import Collator
from emofusion.data.synthetic_conv import CONV_CLASSES


@pytest.fixture(scope="module")
def bundle():
    return load_dataset("synthetic-conv", n_train=160, n_val=10, n_test=40, seed=3)


def test_layout_and_task(bundle):
    assert bundle.task.kind == "classification" and bundle.task.sequence_labels
    assert bundle.task.output_names == CONV_CLASSES == ("angry", "happy", "sad", "neutral")
    assert set(bundle.modality_dims) == {"audio", "visual", "text"}
    for s in bundle.train:
        n = len(s.label)
        assert s.label.dtype == np.int64 and s.label.ndim == 1
        assert set(np.unique(s.label)) <= {0, 1, 2, 3}
        for m, d in bundle.modality_dims.items():
            assert s.features[m].shape == (n, d) and s.features[m].dtype == np.float32
        assert len(s.utterance_speakers) == n and len(set(s.utterance_speakers)) <= 2
        assert s.conversation == s.id


def test_dyadic_and_speaker_disjoint(bundle):
    speakers = {split: set() for split in ("train", "val", "test")}
    for split in speakers:
        for s in bundle.split(split):
            speakers[split] |= set(s.utterance_speakers)
    assert not speakers["train"] & speakers["test"]
    assert not speakers["train"] & speakers["val"]
    assert not speakers["val"] & speakers["test"]
    two = sum(len(set(s.utterance_speakers)) == 2 for s in bundle.train)
    assert two >= 0.9 * len(bundle.train)


def test_seeded_and_seed_sensitive():
    a = load_dataset("synthetic-conv", n_train=5, n_val=2, n_test=2, seed=1)
    b = load_dataset("synthetic-conv", n_train=5, n_val=2, n_test=2, seed=1)
    c = load_dataset("synthetic-conv", n_train=5, n_val=2, n_test=2, seed=2)
    for x, y in zip(a.train, b.train):
        np.testing.assert_array_equal(x.features["audio"], y.features["audio"])
        np.testing.assert_array_equal(x.label, y.label)
    assert not np.array_equal(a.train[0].features["text"][:2], c.train[0].features["text"][:2])


def test_emotions_persist_and_shift(bundle):
    same = total = 0
    for s in bundle.train:
        last = {}
        for y, spk in zip(s.label, s.utterance_speakers):
            if spk in last:
                same += int(last[spk] == y)
                total += 1
            last[spk] = y
    rate = same / total
    chance = float(np.sum(np.bincount(np.concatenate([s.label for s in bundle.train])) ** 2)) / (
        sum(len(s.label) for s in bundle.train) ** 2
    )
    assert rate > chance + 0.3  # persistent
    assert rate < 0.97  # but shifting


def _flat(ds, modalities):
    x = np.vstack([np.concatenate([s.features[m] for m in modalities], 1) for s in ds])
    y = np.concatenate([s.label for s in ds])
    return x, y


def test_evidence_is_partial_per_modality(bundle):
    scores = {}
    for ms in (["audio"], ["text"], ["visual"], ["audio", "visual", "text"]):
        x, y = _flat(bundle.train, ms)
        xt, yt = _flat(bundle.test, ms)
        scores["+".join(ms)] = LogisticRegression(max_iter=300, C=0.05).fit(x, y).score(xt, yt)
    fused = scores["audio+visual+text"]
    for m in ("audio", "text", "visual"):
        assert 0.3 < scores[m] < fused - 0.04, scores
    # audio cannot separate angry from happy by itself (shared arousal cue)
    x, y = _flat(bundle.train, ["audio"])
    keep = np.isin(y, [0, 1])
    xt, yt = _flat(bundle.test, ["audio"])
    keep_t = np.isin(yt, [0, 1])
    pair_acc = LogisticRegression(max_iter=300, C=0.05).fit(x[keep], y[keep]).score(xt[keep_t], yt[keep_t])
    assert pair_acc < 0.85


def test_collation_gives_label_mask(bundle):
    batch = Collator(sequence_labels=True)([bundle.train[0], bundle.train[1], bundle.train[2]])
    lengths = [len(bundle.train[i].label) for i in range(3)]
    assert batch.label_mask.shape == (3, max(lengths))
    assert batch.label_mask.sum(1).tolist() == lengths
    assert batch.labels.dtype == torch.long
    for m in batch.inputs:
        assert torch.equal(batch.inputs[m].mask, batch.label_mask)


def test_modality_subset_and_bad_options():
    b = load_dataset("synthetic-conv", n_train=2, n_val=1, n_test=1, modalities=["audio", "text"])
    assert set(b.modality_dims) == {"audio", "text"} and set(b.train[0].features) == {"audio", "text"}
    with pytest.raises(TypeError, match="valid options"):
        load_dataset("synthetic-conv", n_conversations=3)
    with pytest.raises(ValueError, match="unknown modalities"):
        load_dataset("synthetic-conv", n_train=2, modalities=["smell"])
