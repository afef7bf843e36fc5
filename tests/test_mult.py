"""MulT (paper 002 §3): six directions with the right query/key modalities, padding, attention pieces."""

from __future__ import annotations

import itertools

import pytest
import torch

from emofusion.models import create_model
from emofusion.models.attention import MultiHeadAttention, TransformerEncoder, sinusoidal_positions
from emofusion.tasks import classification_task, emotion_intensity_task

torch.set_num_threads(1)
DIMS = {"text": 12, "audio": 9, "visual": 5}
LENGTHS = {"text": 6, "audio": 17, "visual": 9}
SMALL = dict(d_model=8, num_heads=2, cross_layers=2, self_layers=1)


def make_inputs(batch=3, seed=0, dims=DIMS):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, d in dims.items():
        t = LENGTHS[m]
        v = torch.randn(batch, t, d, generator=g)
        mask = torch.ones(batch, t, dtype=torch.bool)
        mask[0, t // 2 :] = False
        out[m] = (v, mask)
    return out


def test_six_directions_with_right_query_and_key_modalities():
    torch.manual_seed(0)
    model = create_model("mult", DIMS, emotion_intensity_task(), return_attention=True, **SMALL).eval()
    expected = {f"{s}->{t}" for s, t in itertools.permutations(DIMS, 2)}
    assert set(model.cross) == expected and len(expected) == 6
    inputs = make_inputs()
    out = model(inputs)
    for s, t in itertools.permutations(DIMS, 2):
        name = f"{s}->{t}"
        # queries from the target: one output per target step; keys from the source: weights over source steps
        assert out.extras["cross_outputs"][name].shape == (3, LENGTHS[t], 8)
        assert out.extras["cross_attention"][name].shape == (3, 2, LENGTHS[t], LENGTHS[s])
        (other,) = [m for m in DIMS if m not in (s, t)]
        for changed, should_change in [(s, True), (t, True), (other, False)]:
            pert = dict(inputs)
            v, mask = inputs[changed]
            pert[changed] = (v + torch.randn_like(v), mask)
            y = model(pert).extras["cross_outputs"][name]
            same = torch.allclose(y, out.extras["cross_outputs"][name], atol=1e-5)
            assert same != should_change, (name, changed)
        # padded source steps get exactly zero attention
        w = out.extras["cross_attention"][name]
        assert torch.all(w[0, :, :, LENGTHS[s] // 2 :] == 0)


def test_padding_never_matters_and_batch_equals_single():
    torch.manual_seed(1)
    model = create_model("mult", DIMS, emotion_intensity_task(), kernel_size=3, **SMALL).eval()
    inputs = make_inputs()
    out = model(inputs).prediction
    noisy = {m: (v.masked_fill(~mask.unsqueeze(-1), -50.0), mask) for m, (v, mask) in inputs.items()}
    assert torch.allclose(out, model(noisy).prediction, atol=1e-5)
    for b in range(3):
        single = {}
        for m, (v, mask) in inputs.items():
            n = int(mask[b].sum())
            single[m] = (v[b : b + 1, :n], mask[b : b + 1, :n])
        assert torch.allclose(out[b], model(single).prediction[0], atol=1e-5)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_two_modalities_classification_and_backward(pooling):
    dims = {"audio": 9, "visual": 5}
    model = create_model("mult", dims, classification_task(list("abcdef")), pooling=pooling, **SMALL)
    assert set(model.cross) == {"audio->visual", "visual->audio"}
    out = model(make_inputs(dims=dims))
    assert out.prediction.shape == (3, 6)
    out.prediction.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="at least 2"):
        create_model("mult", {"audio": 9}, emotion_intensity_task())


def test_sdpa_path_matches_explicit_weights():
    torch.manual_seed(2)
    attn = MultiHeadAttention(6, 3, key_dim=4, value_dim=4, out_dim=5).eval()
    q, kv = torch.randn(2, 4, 6), torch.randn(2, 7, 4)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 3:] = False
    fast, _ = attn(q, kv, kv, key_mask=mask)
    slow, w = attn(q, kv, kv, key_mask=mask, need_weights=True)
    assert torch.allclose(fast, slow, atol=1e-5)
    assert torch.all(w[1, :, :, 3:] == 0)


def test_literal_residual_option_and_positions():
    enc = TransformerEncoder(8, 2, 2, literal_residual=True)
    x = torch.randn(2, 5, 8)
    mask = torch.ones(2, 5, dtype=torch.bool)
    y, _ = enc(x, mask)
    assert y.shape == x.shape and torch.isfinite(y).all()
    pe = sinusoidal_positions(10, 8)
    assert pe.shape == (10, 8) and torch.allclose(pe[0, :4], torch.zeros(4))


def test_paper_settings_parameter_count():
    dims = {"text": 300, "audio": 74, "visual": 35}
    model = create_model("mult", dims, emotion_intensity_task())
    # conv projections alone: (300 + 74 + 35) * 30 (kernel 1, no bias)
    assert sum(p.numel() for p in model.proj.parameters()) == 409 * 30
    assert model.num_parameters() > 500_000
