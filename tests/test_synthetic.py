"""The synthetic benchmark's documented properties."""

import numpy as np
import pytest

from emofusion.data import list_datasets, load_dataset
from emofusion.data.synthetic import CHANNELS, SyntheticConfig, generate_split

SMALL = {"n_train": 150, "n_val": 30, "n_test": 30}


@pytest.fixture(scope="module")
def bundle():
    return load_dataset("synthetic", **SMALL)


def test_registered_names():
    assert {"synthetic", "synthetic-cls"} <= set(list_datasets())


def test_three_unaligned_modalities_at_different_rates(bundle):
    assert bundle.modality_dims == {"text": 300, "audio": 74, "visual": 35}
    ratios_a, ratios_v = [], []
    for s in bundle.train:
        n = s.features["text"].shape[0]
        assert 8 <= n <= 40
        ratios_a.append(s.features["audio"].shape[0] / n)
        ratios_v.append(s.features["visual"].shape[0] / n)
        assert s.intervals["audio"].shape == (s.features["audio"].shape[0], 2)
    assert 8.5 < np.mean(ratios_a) < 11.5  # about 10 audio frames per word
    assert 2.5 < np.mean(ratios_v) < 3.5  # about 3 visual frames per word
    lengths = {tuple(x.features[m].shape[0] for m in ("text", "audio", "visual")) for x in bundle.train}
    assert all(len(set(t)) == 3 for t in lengths)  # never aligned


def test_labels_on_mosei_grid_and_imbalanced():
    b = load_dataset("synthetic", n_train=1500, n_val=10, n_test=10)
    y = np.stack([s.label for s in b.train])
    assert y.shape[1] == 6 and y.min() >= 0 and y.max() <= 3
    assert np.allclose(y * 3, np.round(y * 3))  # {0, 1/3, ..., 3}
    presence = (y > 0).mean(0)
    assert presence.argmax() == 3  # happy is the most common
    assert presence.min() < 0.12  # rare emotions exist
    assert 0.15 < (y.sum(1) == 0).mean() < 0.45  # many all-zero segments
    assert ((y > 0).sum(1) >= 2).mean() > 0.1  # multi-label


def test_sentiment_target():
    b = load_dataset("synthetic:aligned", target="sentiment", **SMALL)
    assert b.task.kind == "sentiment"
    v = np.array([s.label[0] for s in b.train])
    assert v.min() >= -3 and v.max() <= 3 and v.std() > 0.3


def test_deterministic_and_seed_dependent():
    cfg = SyntheticConfig(n_train=5, n_val=1, n_test=1, seed=4)
    a, b = generate_split(cfg, "train"), generate_split(cfg, "train")
    assert all(np.array_equal(x.features["audio"], y.features["audio"], equal_nan=True) for x, y in zip(a, b))
    c = generate_split(SyntheticConfig(n_train=5, n_val=1, n_test=1, seed=5), "train")
    assert not np.array_equal(a[0].features["text"][:3], c[0].features["text"][:3])


def test_speaker_disjoint_splits_and_constant_speaker_offsets(bundle):
    spk = {s: {x.speaker for x in getattr(bundle, s)} for s in ("train", "val", "test")}
    assert not spk["train"] & spk["test"] and not spk["train"] & spk["val"]
    # a speaker's offset shows as a shared mean shift of their visual frames
    by = {}
    for x in bundle.train:
        by.setdefault(x.speaker, []).append(x.features["visual"].mean(0))
    means = [np.mean(v, 0) for v in by.values() if len(v) >= 3]
    within = np.mean([np.std(v, 0).mean() for v in by.values() if len(v) >= 3])
    between = np.std(means, 0).mean()
    assert between > within  # idiosyncrasy: speakers differ more than segments of one speaker


def test_evidence_is_local_and_cross_modal():
    cfg = SyntheticConfig(n_train=400, n_val=1, n_test=1, seed=0)
    samples = generate_split(cfg, "train")
    anger = [s for s in samples if s.label[0] > 0]
    happy = [s for s in samples if s.label[3] > 0 and s.label[0] == 0]
    # the ambiguous text cue occurs in both anger and happy segments: text alone cannot tell them apart
    assert np.mean(["ambiguous" in s.words for s in anger]) > 0.5
    assert np.mean(["ambiguous" in s.words for s in happy]) > 0.15
    # local: cue words are a small fraction of all words
    frac = np.mean([np.mean([w in ("ambiguous", "positive", "negative") for w in s.words]) for s in samples])
    assert frac < 0.2
    # the interaction knob moves anger evidence from the joint cue to a plain text cue
    plain = generate_split(SyntheticConfig(n_train=400, n_val=1, n_test=1, seed=0, interaction=0.0), "train")
    anger0 = [s for s in plain if s.label[0] > 0]
    assert np.mean(["ambiguous" in s.words for s in anger0]) < 0.05
    assert np.mean(["angry_word" in s.words for s in anger0]) > 0.5
    assert any(kind == "joint" for ch in CHANNELS.values() for kind, *_ in ch)


def test_noise_knob_per_modality():
    quiet = generate_split(SyntheticConfig(n_train=20, n_val=1, n_test=1, noise={"visual": 0.2}, corrupt=False), "train")
    loud = generate_split(SyntheticConfig(n_train=20, n_val=1, n_test=1, noise={"visual": 3.0}, corrupt=False), "train")
    dv = lambda ss: np.mean([np.diff(s.features["visual"], axis=0).std() for s in ss])  # noqa: E731
    da = lambda ss: np.mean([np.diff(s.features["audio"], axis=0).std() for s in ss])  # noqa: E731
    assert dv(loud) > 5 * dv(quiet)
    assert da(loud) == pytest.approx(da(quiet))  # other modalities unchanged


def test_realistic_corruption_present():
    b = load_dataset("synthetic", n_train=60, n_val=5, n_test=5)
    assert any(np.isneginf(s.features["audio"]).any() for s in b.train)
    assert all(np.all(s.features["visual"][:, -1] == 0) for s in b.train)


def test_aligned_view_and_classification_variant():
    a = load_dataset("synthetic:aligned", **SMALL)
    s = a.train[0]
    assert s.features["audio"].shape[0] == s.features["visual"].shape[0] == s.features["text"].shape[0]
    c = load_dataset("synthetic-cls", **SMALL)
    assert c.task.kind == "classification" and c.modality_dims == {"audio": 74, "visual": 35}
    labels = np.array([int(x.label) for x in c.train])
    assert set(labels) == set(range(6))


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="interaction"):
        load_dataset("synthetic", interaction=2.0)
    with pytest.raises(ValueError, match="variant"):
        load_dataset("synthetic:weird")
    with pytest.raises(KeyError, match="unknown dataset"):
        load_dataset("no-such-dataset")
