"""The fast attention paths compute the same thing as the plain ones (values and gradients)."""

from __future__ import annotations

import math

import pytest
import torch

from emofusion.models.attention import MultiHeadAttention, chunked_dropout_attention
from emofusion.models.mult import MulT
from emofusion.tasks import sentiment_task


def _qkv(b=3, h=4, tq=7, tk=5, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, t, d, generator=g, requires_grad=True) for t in (tq, tk, tk)]


def _grads(out, tensors, seed=1):
    g = torch.Generator().manual_seed(seed)
    out.backward(torch.randn(out.shape, generator=g))
    grads = [t.grad.clone() for t in tensors]
    for t in tensors:
        t.grad = None
    return grads


def _reference(q, k, v, bias, p, seed):
    """Autograd attention with the keep mask drawn as the fast path draws it: unsigned 16-bit lanes of full-range
    int64 draws in memory order, kept where lane >= round(p * 2^16), kept weights scaled by 1 / (1 - p_eff)."""
    b, h, tq, d = q.shape
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    if bias is not None:
        scores = scores + bias
    weights = torch.softmax(scores, -1)
    torch.manual_seed(seed)
    n = b * h * tq * k.shape[2]
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
    lanes = words.view(torch.int16)[:n].to(torch.int32) + 2**15  # 0 .. 65535
    threshold = round(p * 2**16)
    keep = (lanes >= threshold).view(b, h, tq, k.shape[2])
    return (weights * keep / (1 - threshold / 2**16)) @ v


@pytest.mark.parametrize("mask_kind", ["none", "keys", "bias", "structural"])
def test_chunked_equals_unchunked_values_and_gradients(mask_kind):
    # 3 heads for the head-shared structural mask: 4-row chunks then straddle the (batch, head) rows
    q, k, v = _qkv(h=3 if mask_kind == "structural" else 4)
    bias = None
    if mask_kind == "structural":  # a constant [B, 1, Tq, Tk] mask (as MulT's future mask), per sample
        i, j = torch.arange(7).view(1, -1, 1), torch.arange(5).view(1, 1, -1)
        bias = (j <= i // 2 + torch.tensor([0, 1, 3]).view(-1, 1, 1)).unsqueeze(1)
    if mask_kind == "keys":
        keys = torch.ones(3, 5, dtype=torch.bool)
        keys[0, 3:] = False
        keys[2, 1:] = False
        bias = keys[:, None, None, :]
    elif mask_kind == "bias":
        bias = torch.randn(3, 1, 7, 5, requires_grad=True)
    leaves = [q, k, v] + ([bias] if mask_kind == "bias" else [])
    results = []
    # Tq Tk = 35 is odd: chunks are rounded to 4 rows (whole 64-bit draws); 4 rows, 8 rows, all 12 rows at once
    for chunk in (1, 7 * 5 * 8, 10**9):
        torch.manual_seed(5)
        out = chunked_dropout_attention(q, k, v, bias, 0.4, chunk_elements=chunk)
        results.append((out.detach(), _grads(out, leaves)))
    for out, grads in results[:-1]:
        torch.testing.assert_close(out, results[-1][0], rtol=0, atol=0)
        for a, b in zip(grads, results[-1][1]):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # and the same as autograd through the explicit formula with the same dropout mask
    float_bias = bias
    if mask_kind in ("keys", "structural"):
        float_bias = torch.zeros(bias.shape).masked_fill(~bias, float("-inf"))
    ref = _reference(q, k, v, float_bias, 0.4, seed=5)
    torch.testing.assert_close(results[-1][0], ref.detach(), rtol=1e-5, atol=1e-6)
    for a, b in zip(results[-1][1], _grads(ref, leaves)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_dropout_path_drops_at_the_requested_rate_and_is_unbiased():
    q = torch.zeros(1, 1, 200, 4)  # uniform weights over 100 keys
    k = torch.zeros(1, 1, 100, 4)
    v = torch.ones(1, 1, 100, 1)
    torch.manual_seed(0)
    out = chunked_dropout_attention(q, k, v, None, 0.25)
    # each output = (kept keys / 100) / 0.75: mean 1, and kept fraction ~0.75
    kept = out.flatten() * 0.75
    assert abs(kept.mean().item() - 0.75) < 0.01
    assert abs(out.mean().item() - 1.0) < 0.02


def _mha_pair(dropout):
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2, key_dim=6, dropout=dropout)
    x = torch.randn(3, 5, 8, requires_grad=True)
    kv = torch.randn(3, 4, 6, requires_grad=True)
    return mha, x, kv


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_all_true_key_mask_is_the_same_as_no_mask(dropout):
    mha, x, kv = _mha_pair(dropout)
    mha.train()
    outs = []
    for key_mask in (None, torch.ones(3, 4, dtype=torch.bool)):
        torch.manual_seed(3)
        out, _ = mha(x, kv, kv, key_mask=key_mask)
        outs.append((out.detach(), _grads(out, [x, kv])))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=0, atol=0)
    for a, b in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("training", [False, True])
def test_padded_keys_never_matter_and_empty_rows_are_zero(training):
    mha, x, kv = _mha_pair(0.3)
    mha.train(training)
    key_mask = torch.tensor(
        [[True, True, False, False], [False, False, False, False], [True, True, True, True]]
    )
    torch.manual_seed(3)
    out1, _ = mha(x, kv, kv, key_mask=key_mask)
    kv2 = kv.detach().clone()
    kv2[0, 2:] = 100.0
    kv2[1] = -50.0
    torch.manual_seed(3)
    out2, _ = mha(x, kv2, kv2, key_mask=key_mask)
    torch.testing.assert_close(out1, out2)
    # the empty row attends to nothing: only the output projection's bias is left
    torch.testing.assert_close(out1[1], mha.out_proj.bias.expand(5, -1).detach())


def test_eval_fused_path_matches_explicit_weights_path_with_padding():
    mha, x, kv = _mha_pair(0.3)
    mha.eval()
    key_mask = torch.tensor(
        [[True, True, False, False], [True, False, False, False], [True, True, True, True]]
    )
    fast, _ = mha(x, kv, kv, key_mask=key_mask)
    slow, w = mha(x, kv, kv, key_mask=key_mask, need_weights=True)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    assert torch.all(w[0, :, :, 2:] == 0)


def test_mult_attention_dropout_per_source_modality():
    dims = {"text": 6, "audio": 5, "visual": 4}
    model = MulT(
        dims,
        sentiment_task(),
        d_model=8,
        num_heads=2,
        cross_layers=1,
        self_layers=1,
        attn_dropout={"text": 0.4, "audio": 0.0, "visual": 0.1, "self": 0.2},
    )
    assert model.cross["text->audio"].layers[0].attn.dropout == 0.4
    assert model.cross["audio->visual"].layers[0].attn.dropout == 0.0
    assert model.cross["visual->text"].layers[0].attn.dropout == 0.1
    assert all(model.memory[m].layers[0].attn.dropout == 0.2 for m in dims)
    with pytest.raises(ValueError, match="missing \\['self'\\]"):
        MulT(
            dims,
            sentiment_task(),
            d_model=8,
            num_heads=2,
            attn_dropout={"text": 0.1, "audio": 0.1, "visual": 0.1},
        )


def test_dropout_one_drops_everything_with_finite_zero_gradients():
    q, k, v = _qkv()
    out = chunked_dropout_attention(q, k, v, None, 1.0)
    assert torch.all(out == 0)
    for g in _grads(out, [q, k, v]):
        assert torch.all(g == 0)


def test_keep_mask_rate_lanes_and_threshold():
    from emofusion.models.attention import effective_dropout, keep_mask, keep_threshold

    assert keep_threshold(0.4) == 26214 and effective_dropout(0.4) == 26214 / 65536
    torch.manual_seed(0)
    keep = keep_mask((7, 301, 13), 0.4)  # numel not a multiple of 4: the last word's tail is discarded
    assert keep.dtype == torch.uint8 and keep.shape == (7, 301, 13)
    assert set(keep.unique().tolist()) == {0, 1}
    assert abs(keep.float().mean().item() - 0.6) < 0.005
    # every one of the four lanes of a word is a fair draw (no lane stuck or correlated with its neighbour)
    lanes = keep.flatten()[: (keep.numel() // 4) * 4].view(-1, 4).float()
    assert torch.all((lanes.mean(0) - 0.6).abs() < 0.01)
    corr = torch.corrcoef(lanes.T)
    assert (corr - torch.eye(4)).abs().max() < 0.02
    assert torch.all(keep_mask((1000,), 0.0) == 1)
