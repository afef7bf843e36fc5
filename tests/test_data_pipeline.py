"""Batch type, per-modality collation, the length-bucketing sampler and feature hygiene."""

import numpy as np
import pytest
import torch

from emofusion.data.batch import Sample
from emofusion.data.collate import Collator, LengthBucketBatchSampler, collate_samples, padding_fraction
from emofusion.data.dataset import DatasetBundle, SampleDataset
from emofusion.data.hygiene import HygieneTransform, apply_hygiene, fit_hygiene
from emofusion.tasks import emotion_intensity_task


def _sample(i, t_text, t_audio, dim_a=3):
    rng = np.random.default_rng(i)
    return Sample(
        id=f"s{i}",
        features={
            "text": rng.normal(size=(t_text, 4)).astype(np.float32),
            "audio": rng.normal(size=(t_audio, dim_a)).astype(np.float32),
        },
        label=np.full(6, i, np.float32),
        speaker=f"spk{i % 2}",
    )


def test_collate_pads_each_modality_to_its_own_length():
    batch = collate_samples([_sample(0, 2, 9), _sample(1, 5, 4)])
    assert batch.inputs["text"].values.shape == (2, 5, 4)
    assert batch.inputs["audio"].values.shape == (2, 9, 3)
    assert batch.inputs["text"].lengths.tolist() == [2, 5]
    assert batch.inputs["audio"].lengths.tolist() == [9, 4]
    assert batch.inputs["text"].mask.dtype == torch.bool
    # padding is zero and masked
    assert torch.all(batch.inputs["audio"].values[1, 4:] == 0)
    assert not batch.inputs["audio"].mask[1, 4:].any()
    assert batch.labels.shape == (2, 6) and batch.ids == ["s0", "s1"] and batch.speakers == ["spk0", "spk1"]
    values, mask = batch.inputs["text"]  # unpacks as (values, mask)
    assert values.shape[:2] == mask.shape


def test_collate_subset_and_missing_modality_error():
    batch = Collator(["audio"])([_sample(0, 2, 3)])
    assert list(batch.inputs) == ["audio"]
    s = _sample(1, 2, 3)
    del s.features["audio"]
    with pytest.raises(KeyError, match="s1.*audio"):
        collate_samples([s], ["audio"])


def test_batch_select_drops_modalities():
    batch = collate_samples([_sample(0, 2, 3)])
    assert batch.select(["text"]).modalities == ["text"]
    with pytest.raises(KeyError):
        batch.select(["visual"])


def test_sequence_labels_padding_gives_label_mask():
    a = Sample("c0", {"audio": np.zeros((3, 2), np.float32)}, np.array([0, 1, 2]))
    b = Sample("c1", {"audio": np.zeros((5, 2), np.float32)}, np.array([1, 1, 0, 0, 3]))
    batch = collate_samples([a, b])
    assert batch.labels.shape == (2, 5) and batch.labels.dtype == torch.long
    assert batch.label_mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5]


def test_sampler_covers_every_sample_once_and_is_deterministic():
    lengths = np.random.default_rng(0).integers(10, 500, 203)
    s = LengthBucketBatchSampler(lengths, 16, shuffle=True, seed=3)
    batches = list(s)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(203))
    assert len(batches) == len(s)
    assert batches == list(LengthBucketBatchSampler(lengths, 16, shuffle=True, seed=3))
    s.set_epoch(1)
    assert list(s) != batches  # a new order each epoch


def test_bucketing_reduces_padding():
    rng = np.random.default_rng(0)
    # like real segments: audio length follows the word count (about 10 frames per word) with jitter
    words = rng.integers(5, 40, 256)
    samples = [_sample(i, int(w), int(w * rng.uniform(8, 12))) for i, w in enumerate(words)]
    ds = SampleDataset(samples)

    def waste(bucket):
        sampler = LengthBucketBatchSampler(ds.lengths(), 16, shuffle=True, seed=0, bucket=bucket)
        return padding_fraction([collate_samples([samples[i] for i in b]) for b in sampler])

    assert waste(True) < 0.1 < waste(False)


def test_sampler_skip_resumes_mid_epoch():
    lengths = np.arange(100)
    full = list(LengthBucketBatchSampler(lengths, 8, seed=1))
    s = LengthBucketBatchSampler(lengths, 8, seed=1)
    s.skip_batches(0, 5)
    assert list(s) == full[5:]
    assert list(s) == full[5:]  # every pass over the resumed epoch skips
    s.set_epoch(1)
    assert len(list(s)) == len(full)  # the next epoch is whole


def test_sampler_shards_across_ranks(monkeypatch):
    lengths = np.arange(50)
    seen = []
    for rank in range(2):
        s = LengthBucketBatchSampler(lengths, 4, seed=0)
        monkeypatch.setattr(s, "_world", lambda r=rank: (r, 2))
        seen.append(list(s))
    assert len(seen[0]) == len(seen[1])
    covered = {i for part in seen for b in part for i in b}
    assert covered == set(range(50))


def test_hygiene_fits_on_train_only_and_handles_inf_and_constant_columns():
    rng = np.random.default_rng(0)

    def make(n, shift):
        out = []
        for i in range(n):
            a = rng.normal(shift, 2.0, size=(6, 3)).astype(np.float32)
            a[:, 2] = 5.0  # constant column
            out.append(Sample(f"x{i}", {"audio": a}, np.zeros(6, np.float32)))
        return out

    train = make(40, 1.0)
    train[0].features["audio"][0, 0] = -np.inf
    test = make(10, 100.0)  # a shifted test split must not leak into the statistics
    state = fit_hygiene(SampleDataset(train), ["audio"])
    info = state["modalities"]["audio"]
    assert info["nonfinite_train_values"] == 1
    assert info["dropped_constant_columns"] == [2]
    assert info["mean"][0] == pytest.approx(1.0, abs=0.2)
    t = HygieneTransform(state)
    x = np.concatenate([t(s).features["audio"] for s in train])
    assert x.shape[1] == 2 and np.isfinite(x).all()
    assert abs(x.mean()) < 0.05 and x.std() == pytest.approx(1.0, abs=0.05)
    assert t(test[0]).features["audio"].mean() > 20  # test shift preserved, not re-standardised

    bundle = DatasetBundle("t", emotion_intensity_task(), SampleDataset(train), SampleDataset(test),
                           SampleDataset(test), {"audio": 3})
    cleaned = apply_hygiene(bundle, state)
    assert cleaned.modality_dims == {"audio": 2}
    assert cleaned.train[0].features["audio"].shape[1] == 2
    assert bundle.train[0].features["audio"].shape[1] == 3  # the original bundle is untouched


def test_hygiene_rejects_wrong_feature_size():
    state = fit_hygiene(SampleDataset([_sample(0, 2, 3)]), ["audio"])
    bad = _sample(1, 2, 3, dim_a=5)
    with pytest.raises(ValueError, match="s1.*audio.*5 features"):
        HygieneTransform(state)(bad)


def _reference_pad(arrays, dtype):
    """The plain definition: zeros [B, max T, ...] with row i's first T_i steps = array i, mask = step < T_i."""
    max_len = max(max(len(a) for a in arrays), 1)
    values = torch.zeros((len(arrays), max_len, *np.asarray(arrays[0]).shape[1:]), dtype=dtype)
    mask = torch.zeros((len(arrays), max_len), dtype=torch.bool)
    for i, a in enumerate(arrays):
        for t in range(len(a)):
            values[i, t] = torch.as_tensor(np.asarray(a[t]), dtype=dtype)
            mask[i, t] = True
    return values, mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.long])
def test_pad_sequences_matches_the_definition(dtype):
    from emofusion.data.collate import pad_sequences

    rng = np.random.default_rng(3)
    # unequal lengths, an empty sequence, float64 input (cast like torch.as_tensor), more than one trailing dim
    arrays = [rng.normal(size=(n, 3, 2)) * 10 for n in (5, 0, 2, 7)]
    if dtype == torch.long:
        arrays = [a.astype(np.int64) for a in arrays]
    values, mask = pad_sequences(arrays, dtype=dtype)
    ref_values, ref_mask = _reference_pad(arrays, dtype)
    assert values.dtype == dtype and mask.dtype == torch.bool
    assert values.shape == (4, 7, 3, 2)
    assert torch.equal(mask, ref_mask) and torch.equal(values, ref_values)
    empty_values, empty_mask = pad_sequences([np.zeros((0, 4)), np.zeros((0, 4))])
    assert empty_values.shape == (2, 1, 4) and not empty_mask.any()


def test_materialized_applies_the_transforms_once_and_keeps_lazy_datasets_lazy():
    samples = [Sample(f"s{i}", {"audio": np.full((i + 1, 2), float(i), np.float32)}, np.zeros(1, np.float32))
               for i in range(5)]
    calls = []

    def double(sample):
        calls.append(sample.id)
        return Sample(sample.id, {m: 2 * v for m, v in sample.features.items()}, sample.label)

    view = SampleDataset(samples).with_transform(double)
    fixed = view.materialized()
    assert len(calls) == 5 and fixed.transforms == []
    for _ in range(2):  # two "epochs"
        for i in range(5):
            assert np.array_equal(fixed[i].features["audio"], view.raw(i).features["audio"] * 2)
    assert len(calls) == 5  # nothing recomputed after materialisation
    assert fixed.ids == view.ids and list(fixed.lengths()) == list(view.lengths())
    lazy = SampleDataset(ids=["a"], loader=lambda i: samples[i]).with_transform(double)
    assert lazy.materialized() is lazy


def test_quantile_scaling_matches_scikit_learn_rank_gauss_fitted_on_train_only():
    from sklearn.preprocessing import QuantileTransformer

    from emofusion.data import hygiene

    rng = np.random.default_rng(3)

    def make(n, shift, steps):
        out = []
        for i in range(n):
            a = np.stack([
                rng.lognormal(shift, 1.5, steps),  # heavy-tailed (COVAREP-like)
                rng.integers(0, 2, steps) * 1.0,  # near-binary: ties across many quantiles
                rng.normal(shift, 3.0, steps),
            ], 1).astype(np.float32)
            out.append(Sample(f"q{i}", {"audio": a}, np.zeros(6, np.float32)))
        return out

    train = make(30, 0.0, 7)
    train[2].features["audio"][1, 2] = -np.inf  # ignored when fitting, 0 after
    test = make(5, 1.0, 4)
    state = fit_hygiene(SampleDataset(train), ["audio"], standardize="quantile")
    assert state["scaling"] == "quantile"
    t = HygieneTransform(state)
    rows = np.concatenate([s.features["audio"] for s in train]).astype(np.float64)
    k = len(state["modalities"]["audio"]["quantiles"][0])
    assert k == min(hygiene.QUANTILES, len(rows))
    # scikit-learn ignores NaN when fitting, per column, as the hygiene ignores non-finite values
    ref = QuantileTransformer(n_quantiles=k, output_distribution="normal").fit(np.where(np.isfinite(rows), rows, np.nan))
    for s in test + train[:3]:
        ours = t(s).features["audio"]
        x = s.features["audio"].astype(np.float64)
        ok = np.isfinite(x)
        theirs = ref.transform(np.where(ok, x, 0.0))
        cont = ok.copy()
        cont[:, 1] = False  # the 0/1 column: checked below (scikit-learn sends ties at the bounds to +-5.2)
        np.testing.assert_allclose(ours[cont], theirs[cont], atol=2e-4)
        assert np.all(ours[~ok] == 0.0)
    # the 0/1 column: each value gets the normal score of its mid-rank in the training rows
    from scipy.special import ndtri

    zeros = np.mean(rows[:, 1] == 0)
    binary = t(Sample("b", {"audio": np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]], np.float32)}, None))
    spacing = 1.0 / (k - 1)
    assert binary.features["audio"][0, 1] == pytest.approx(ndtri(zeros / 2), abs=3 * spacing)
    assert binary.features["audio"][1, 1] == pytest.approx(ndtri((1 + zeros) / 2), abs=3 * spacing)
    # the training distribution is what was mapped onto N(0, 1): a shifted test split stays shifted
    mapped = np.concatenate([t(s).features["audio"] for s in train])
    assert abs(np.median(mapped[:, 2])) < 0.1
    assert np.mean(np.concatenate([t(s).features["audio"][:, 2] for s in test])) > 0.2


def test_standardize_config_accepts_the_named_scalings_and_names_a_wrong_one():
    from emofusion.training.config import RunConfig

    assert RunConfig(standardize="quantile").standardize == "quantile"
    assert RunConfig(standardize=False).standardize is False
    with pytest.raises(ValueError, match="standardize.*zscore, quantile, none"):
        RunConfig(standardize="rank")
    with pytest.raises(ValueError, match="standardize must be"):
        fit_hygiene(SampleDataset([_sample(0, 2, 3)]), ["audio"], standardize="rank")
