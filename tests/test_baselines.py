"""The reference models and shared layers: shapes, masking, any modality subset, registry."""

import numpy as np
import pytest
import torch

from emofusion.data.batch import ModalityTensor
from emofusion.models import create_model, list_models
from emofusion.models.layers import SequenceEncoder, masked_mean, masked_softmax, resample_to_lengths
from emofusion.tasks import classification_task, emotion_intensity_task

DIMS = {"text": 6, "audio": 4, "visual": 3}
TASK = emotion_intensity_task()


def _inputs(lengths: dict, batch=3, seed=0, fill=0.0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, lens in lengths.items():
        t = max(lens)
        v = torch.randn(batch, t, DIMS[m], generator=g)
        mask = torch.arange(t)[None, :] < torch.tensor(lens)[:, None]
        v = torch.where(mask[..., None], v, torch.full_like(v, fill))
        out[m] = ModalityTensor(v, mask)
    return out


LENS = {"text": [3, 5, 2], "audio": [30, 50, 12], "visual": [9, 15, 6]}


def test_registry_lists_foundation_models():
    assert {"mean", "unimodal_lstm", "early_fusion_lstm"} <= set(list_models())
    with pytest.raises(KeyError, match="unknown model 'unimodal_lstmm'.*Did you mean unimodal_lstm"):
        create_model("unimodal_lstmm", DIMS, TASK)


@pytest.mark.parametrize(
    "name,dims",
    [("mean", DIMS), ("unimodal_lstm", {"audio": 4}), ("early_fusion_lstm", DIMS),
     ("early_fusion_lstm", {"text": 6, "visual": 3})],
)
def test_output_shape_and_bounds(name, dims):
    torch.manual_seed(0)
    model = create_model(name, dims, TASK).eval()
    out = model(_inputs({m: LENS[m] for m in dims}))
    assert out.prediction.shape == (3, 6)
    assert out.prediction.min() >= 0 and out.prediction.max() <= 3


@pytest.mark.parametrize("name,options", [("unimodal_lstm", {"modality": "audio"}), ("early_fusion_lstm", {}),
                                          ("early_fusion_lstm", {"fuse": "encoders"})])
def test_padding_never_matters(name, options):
    torch.manual_seed(0)
    model = create_model(name, DIMS, TASK, **options).eval()
    a = model(_inputs(LENS, fill=0.0)).prediction
    b = model(_inputs(LENS, fill=123.0)).prediction
    assert torch.allclose(a, b, atol=1e-6)
    # batched == one by one
    full = _inputs(LENS)
    for i in range(3):
        single = {m: ModalityTensor(v[i : i + 1, : int(mk[i].sum())], mk[i : i + 1, : int(mk[i].sum())])
                  for m, (v, mk) in full.items()}
        assert torch.allclose(model(single).prediction, a[i : i + 1], atol=1e-5)


def test_unimodal_rejects_several_modalities_and_wrong_shapes():
    with pytest.raises(ValueError, match="exactly one modality"):
        create_model("unimodal_lstm", DIMS, TASK)
    model = create_model("early_fusion_lstm", DIMS, TASK)
    bad = _inputs(LENS)
    bad["audio"] = ModalityTensor(torch.zeros(3, 5, 7), torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="audio.*expects values \\[B, T, 4\\]"):
        model(bad)


def test_classification_outputs_logits():
    model = create_model("early_fusion_lstm", {"audio": 4}, classification_task("abcd")).eval()
    out = model(_inputs({"audio": LENS["audio"]})).prediction
    assert out.shape == (3, 4)


def test_masked_ops():
    v = torch.tensor([[[1.0], [3.0], [100.0]]])
    m = torch.tensor([[True, True, False]])
    assert masked_mean(v, m).item() == 2.0
    w = masked_softmax(torch.tensor([[0.0, 0.0, 50.0]]), m)
    assert w.tolist() == [[0.5, 0.5, 0.0]]
    empty = masked_softmax(torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.bool))
    assert torch.all(empty == 0)


def test_encoder_handles_empty_sequences():
    enc = SequenceEncoder(4, 5, bidirectional=True)
    v = torch.randn(2, 6, 4)
    mask = torch.tensor([[True] * 6, [False] * 6])
    steps, final = enc(v, mask)
    assert torch.all(final[1] == 0) and torch.all(steps[1] == 0)
    assert final.shape == (2, 10)


@pytest.mark.parametrize("bidirectional,layers", [(False, 1), (True, 1), (True, 2)])
def test_encoder_matches_packed_lstm(bidirectional, layers):
    """The fused unpacked path equals pack_padded_sequence over the same nn.LSTM, in values and gradients."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.manual_seed(0)
    enc = SequenceEncoder(3, 4, num_layers=layers, bidirectional=bidirectional).eval()
    lengths = torch.tensor([7, 3, 5, 0, 7])
    values = torch.randn(5, 7, 3, requires_grad=True)
    mask = torch.arange(7).unsqueeze(0) < lengths.unsqueeze(1)
    out, final = enc(values, mask)
    packed = pack_padded_sequence(values, lengths.clamp_min(1), batch_first=True, enforce_sorted=False)
    ref_out, (h_n, _) = enc.lstm(packed)
    ref_out, _ = pad_packed_sequence(ref_out, batch_first=True, total_length=7)
    ref_out = ref_out * mask.unsqueeze(-1)
    ref_final = (torch.cat([h_n[-2], h_n[-1]], -1) if bidirectional else h_n[-1]) * (lengths > 0).unsqueeze(-1)
    torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(final, ref_final, atol=1e-6, rtol=1e-5)
    grads = torch.autograd.grad((out.sum() + final.sum()), [values, *enc.lstm.parameters()])
    ref_grads = torch.autograd.grad((ref_out.sum() + ref_final.sum()), [values, *enc.lstm.parameters()])
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)
    # no padding at all: the direct nn.LSTM call, still equal to the packed result
    full = torch.ones(5, 7, dtype=torch.bool)
    out_full, final_full = enc(values, full)
    ref_full, (h_full, _) = enc.lstm(values)
    torch.testing.assert_close(out_full, ref_full)
    assert final_full.shape == (5, enc.output_dim)


@pytest.mark.parametrize("bidirectional,layers", [(False, 1), (True, 2)])
def test_encoder_ignores_nan_and_inf_in_padded_steps(bidirectional, layers):
    """NaN / inf at padded steps change nothing: the same outputs (0 at padded steps) and gradients as zero padding."""
    torch.manual_seed(1)
    enc = SequenceEncoder(3, 4, num_layers=layers, bidirectional=bidirectional).eval()
    lengths = torch.tensor([6, 2, 0, 4])
    mask = torch.arange(6).unsqueeze(0) < lengths.unsqueeze(1)
    clean = torch.randn(4, 6, 3) * mask.unsqueeze(-1)
    dirty = clean.clone()
    dirty[~mask] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    dirty.requires_grad_(True)
    clean.requires_grad_(True)
    out, final = enc(dirty, mask)
    ref_out, ref_final = enc(clean, mask)
    assert torch.isfinite(out).all() and torch.isfinite(final).all()
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(final, ref_final)
    (g,) = torch.autograd.grad(out.sum() + final.sum(), [dirty])
    (ref_g,) = torch.autograd.grad(ref_out.sum() + ref_final.sum(), [clean])
    torch.testing.assert_close(g, ref_g)
    assert (g[~mask] == 0).all()


def test_encoder_state_dict_keys_are_nn_lstm_keys():
    enc = SequenceEncoder(3, 4, num_layers=2, bidirectional=True)
    assert sorted(enc.state_dict()) == sorted(f"lstm.{k}" for k in enc.lstm.state_dict())
    assert sum(p.numel() for p in enc.parameters()) == sum(p.numel() for p in enc.lstm.parameters())


def test_resample_to_lengths_nearest():
    v = torch.arange(4.0).view(1, 4, 1)
    out, mask = resample_to_lengths(v, torch.ones(1, 4, dtype=torch.bool), torch.tensor([8]), 8)
    assert out.view(-1).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    down, _ = resample_to_lengths(torch.arange(8.0).view(1, 8, 1), torch.ones(1, 8, dtype=torch.bool),
                                  torch.tensor([4]), 4)
    assert down.view(-1).tolist() == [0, 2, 4, 6]
    assert mask.all()


def test_mean_baseline_learns_training_mean():
    model = create_model("mean", {"audio": 4}, TASK, init=[0.0] * 6)
    y = torch.tensor(np.random.default_rng(0).random((64, 6)) * 3, dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x = _inputs({"audio": [5] * 64}, batch=64)
    for _ in range(400):
        opt.zero_grad()
        loss = ((model(x).prediction - y) ** 2).mean()
        loss.backward()
        opt.step()
    assert torch.allclose(model.bias, y.mean(0), atol=0.02)


def test_cross_validated_baselines_fit_each_held_out_fold_on_the_other_folds():
    from emofusion.evaluation.baselines import cross_validated_baselines
    from emofusion.evaluation.metrics import compute_metrics
    from emofusion.tasks import TaskSpec

    task = TaskSpec("classification", ["a", "b", "c"])
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 1, 0, 2])
    folds = [(np.arange(6, 12), np.arange(0, 6)), (np.arange(0, 6), np.arange(6, 12))]
    out = cross_validated_baselines(task, labels, folds, seed=1)
    # fold 1 predicts the majority of samples 6..11 (class 2), fold 2 that of samples 0..5 (class 0)
    majority = np.eye(3)[np.r_[[2] * 6, [0] * 6]]
    assert out["majority"]["accuracy"] == pytest.approx(compute_metrics(task, majority, labels)["accuracy"])
    assert out["majority"]["accuracy"] == pytest.approx(2 / 12)  # the hits: sample 5 (class 2) and 10 (class 0)
    # class-prior: draws at the other folds' frequencies (1/6, 1/6, 4/6 for fold 1; 3/6, 2/6, 1/6 for fold 2), so
    # the expected held-out accuracy is (3/6 + 2/6 + 4/6) / 6 = 0.25 in both folds; 10 draws per sample come
    # within 3 standard errors (0.04)
    assert out["class_prior"]["accuracy"] == pytest.approx(0.25, abs=0.12)
    regression = TaskSpec("sentiment", ["s"], label_range=(-3.0, 3.0))
    y = np.array([1.0, 2.0, 3.0, -1.0, -2.0, 0.5])[:, None]
    folds = [(np.array([3, 4, 5]), np.array([0, 1, 2])), (np.array([0, 1, 2]), np.array([3, 4, 5]))]
    out = cross_validated_baselines(regression, y, folds)
    median = np.r_[[-1.0] * 3, [2.0] * 3][:, None]
    assert out["train_median"]["mae"] == pytest.approx(np.abs(median - y).mean())
    assert out["all_zero"]["mae"] == pytest.approx(np.abs(y).mean())


def test_resample_to_lengths_of_a_source_without_steps_is_masked_zeros():
    # a modality tensor with no columns at all (every sample lacks it) has nothing to gather from
    out, mask = resample_to_lengths(torch.zeros(2, 0, 3), torch.zeros(2, 0, dtype=torch.bool), torch.tensor([2, 3]), 3)
    assert out.shape == (2, 3, 3) and torch.all(out == 0) and not mask.any()
