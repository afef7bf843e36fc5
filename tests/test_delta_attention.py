"""Paper 002 delta-attention model: window, delta term, CCA, padding, variants."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emofusion.models import create_model
from emofusion.models.attention import MultiHeadAttention
from emofusion.models.delta_attention import (
    DeltaAttention,
    DeltaSelfAttention,
    canonical_correlations,
    multiview_cca,
)
from emofusion.tasks import classification_task, emotion_intensity_task

torch.set_num_threads(1)
DIMS = {"text": 12, "audio": 9, "visual": 5}
LENGTHS = {"text": 6, "audio": 17, "visual": 9}
SMALL = dict(
    d_ch=8, num_heads=2, d_o=12, d_r=4, dcca_hidden=8, d_t=8, window=3, max_relative_position=5, dropout=0.0
)


def make_inputs(batch=3, seed=0, lengths=LENGTHS, dims=DIMS):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, d in dims.items():
        t = lengths[m]
        v = torch.randn(batch, t, d, generator=g)
        mask = torch.ones(batch, t, dtype=torch.bool)
        mask[0, t // 2 :] = False
        if batch > 2:
            mask[2, t - 2 :] = False
        out[m] = (v, mask)
    return out


def test_window_gives_exact_zero_attention_outside_and_on_padding():
    torch.manual_seed(0)
    layer = DeltaSelfAttention(8, num_heads=2, window=2).eval()
    x = torch.randn(2, 10, 8)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 7:] = False
    _, w = layer(x, mask, need_weights=True)
    i = torch.arange(10)
    outside = (i[:, None] - i[None, :]).abs() > 2
    assert torch.all(w[:, :, outside] == 0)
    assert torch.all(w[1, :, :, 7:] == 0)
    assert torch.all(w[:, :, ~outside].sum() > 0)
    rows = w[1, :, :7].sum(-1)
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)


def test_window_output_ignores_steps_outside_window_sdpa_path():
    torch.manual_seed(1)
    layer = DeltaSelfAttention(8, num_heads=2, window=2).eval()
    x = torch.randn(1, 12, 8)
    mask = torch.ones(1, 12, dtype=torch.bool)
    out, _ = layer(x, mask)
    x2 = x.clone()
    x2[:, :3] += 5.0  # steps 0..2 are more than 2 away from step 5
    x2[:, 8:] -= 3.0  # steps 8.. too
    out2, _ = layer(x2, mask)
    assert torch.allclose(out[:, 5], out2[:, 5], atol=1e-5)
    assert not torch.allclose(out[:, 2], out2[:, 2], atol=1e-3)
    # the explicit path and the SDPA path agree
    out3, _ = layer(x, mask, need_weights=True)
    assert torch.allclose(out, out3, atol=1e-5)


def test_unlimited_window_attends_everywhere():
    layer = DeltaSelfAttention(8, num_heads=2, window="inf", max_relative_position=3).eval()
    _, w = layer(torch.randn(1, 9, 8), torch.ones(1, 9, dtype=torch.bool), need_weights=True)
    assert torch.all(w > 0)


def test_delta_term_invariant_to_constant_offset_but_not_to_changes():
    torch.manual_seed(2)
    layer = DeltaSelfAttention(8, num_heads=2, window=4)
    x = torch.randn(2, 11, 8)
    rpe = layer.relative_logits(x)
    shifted = layer.relative_logits(x + torch.randn(2, 1, 8) * 10)  # one constant per sequence, every frame
    assert torch.allclose(rpe, shifted, atol=1e-4)
    assert rpe.abs().max() > 0.1
    # the diagonal is exactly zero (no change with yourself), and it is antisymmetric in the differences
    assert torch.all(torch.diagonal(rpe, dim1=1, dim2=2) == 0)
    x2 = x.clone()
    x2[:, 4] += 1.0
    assert not torch.allclose(layer.relative_logits(x2), rpe, atol=1e-3)


def test_delta_term_matches_definition():
    torch.manual_seed(3)
    layer = DeltaSelfAttention(4, num_heads=1, window=2)
    x = torch.randn(1, 6, 4)
    rpe = layer.relative_logits(x)
    w = layer.rel_pos
    for i in range(6):
        for j in range(6):
            k = max(-2, min(2, j - i)) + 2
            expected = (x[0, j] - x[0, i]) @ w[:, k]
            assert torch.allclose(rpe[0, i, j], expected, atol=1e-5)


def _numpy_cca(a, b, eps):
    # canonical correlations from the generalised eigenproblem S11^-1 S12 S22^-1 S21 u = rho^2 u
    a = a - a.mean(0)
    b = b - b.mean(0)
    n = a.shape[0]
    s11 = a.T @ a / (n - 1) + eps * np.eye(a.shape[1])
    s22 = b.T @ b / (n - 1) + eps * np.eye(b.shape[1])
    s12 = a.T @ b / (n - 1)
    m = np.linalg.solve(s11, s12) @ np.linalg.solve(s22, s12.T)
    rho2 = np.sort(np.real(np.linalg.eigvals(m)))[::-1][: min(a.shape[1], b.shape[1])]
    return np.sqrt(np.clip(rho2, 0, None))


@pytest.mark.parametrize("eps", [0.0, 1e-3])
def test_cca_matches_numpy(eps):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 3))
    b = np.concatenate([a[:, :2] @ rng.normal(size=(2, 2)), rng.normal(size=(40, 2))], 1) + 0.3 * rng.normal(
        size=(40, 4)
    )
    got = canonical_correlations(torch.tensor(a), torch.tensor(b), eps=eps).numpy()
    want = _numpy_cca(a, b, eps)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got[0] > 0.8 and got[-1] < got[0]


def test_multiview_cca_is_mean_of_pairwise_and_stable_at_batch_32():
    torch.manual_seed(4)
    views = [torch.randn(32, 16, requires_grad=True) for _ in range(3)]
    value = multiview_cca(views)
    pairs = [canonical_correlations(views[i], views[j]).mean() for i, j in [(0, 1), (0, 2), (1, 2)]]
    assert torch.allclose(value, torch.stack(pairs).mean())
    (-value).backward()
    assert all(torch.isfinite(v.grad).all() for v in views)
    # identical views are perfectly correlated
    same = torch.randn(32, 4)
    assert multiview_cca([same, same * 2 + 1], eps=1e-6) > 0.999


@pytest.mark.parametrize("variant", ["full", "dcca"])
@pytest.mark.parametrize("pairing", ["utterance", "frames"])
def test_padding_never_matters(variant, pairing):
    torch.manual_seed(5)
    model = create_model(
        "delta_attention", DIMS, emotion_intensity_task(), variant=variant, cca_pairing=pairing, **SMALL
    ).eval()
    inputs = make_inputs()
    out = model(inputs).prediction
    noisy = {m: (v.masked_fill(~mask.unsqueeze(-1), 1e3), mask) for m, (v, mask) in inputs.items()}
    assert torch.allclose(out, model(noisy).prediction, atol=1e-5)
    for b in range(3):
        single = {}
        for m, (v, mask) in inputs.items():
            n = int(mask[b].sum())
            single[m] = (v[b : b + 1, :n], mask[b : b + 1, :n])
        assert torch.allclose(out[b], model(single).prediction[0], atol=1e-5)


def test_unimodal_variant_and_classification_head():
    torch.manual_seed(6)
    task = classification_task(["a", "b", "c", "d", "e", "f"])
    model = create_model("delta_attention", DIMS, task, variant="unimodal", modality="visual", **SMALL)
    assert model.modalities == ["visual"]
    out = model(make_inputs())
    assert out.prediction.shape == (3, 6)
    full = create_model("delta_attention", DIMS, task, return_attention=True, **SMALL)
    out = full(make_inputs())
    assert out.prediction.shape == (3, 6)
    assert set(out.aux_losses) == {"cca"}
    assert out.extras["fused_attention"].shape[-1] == sum(LENGTHS.values())
    assert out.extras["delta_attention"]["audio"].shape == (3, 2, 17, 17)
    with pytest.raises(ValueError, match="one modality"):
        create_model("delta_attention", DIMS, task, variant="unimodal")


def test_aligned_inputs_and_modality_subset_and_training_step():
    torch.manual_seed(7)
    lengths = {m: 8 for m in DIMS}
    model = create_model("delta_attention", DIMS, emotion_intensity_task(), recon_weight=0.5, **SMALL)
    inputs = make_inputs(batch=6, lengths=lengths)
    out = model(inputs)
    loss = out.prediction.mean() + sum(out.aux_losses.values())
    loss.backward()
    assert model.unimodal["text"].final.rel_pos.grad.abs().sum() > 0
    assert set(out.aux_losses) == {"cca", "reconstruction"}
    two = create_model("delta_attention", {"text": 12, "audio": 9}, emotion_intensity_task(), **SMALL)
    assert two(make_inputs(dims={"text": 12, "audio": 9})).prediction.shape == (3, 6)


def test_use_delta_off_has_no_relpos_parameters():
    on = create_model("delta_attention", DIMS, emotion_intensity_task(), **SMALL)
    off = create_model("delta_attention", DIMS, emotion_intensity_task(), use_delta=False, **SMALL)
    diff = on.num_parameters() - off.num_parameters()
    assert diff == sum(d * (2 * 3 + 1) for d in [8, 8, 8])  # d_ch x (2w + 1) per modality


def test_paper_dims_construct():
    dims = {"text": 300, "audio": 74, "visual": 35}
    d = create_model("delta_attention", dims, emotion_intensity_task())
    m = create_model("mult", dims, emotion_intensity_task())
    # the paper's "about half of MulT's parameters" is re-measured, not asserted: docs/models/params.md is
    # generated by benchmarks/model_params.py and must state the current counts
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "models" / "params.md").read_text()
    assert f"| delta_attention | {d.num_parameters():,} |" in page
    assert f"| mult | {m.num_parameters():,} |" in page


def test_empty_key_rows_give_zeros():
    attn = MultiHeadAttention(4, 2)
    q = torch.randn(2, 3, 4)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    out, _ = attn(q, q, q, key_mask=mask)
    assert torch.isfinite(out).all()
    assert torch.allclose(out[1], attn.out_proj.bias.expand(3, 4))


def test_staged_input_stages_validate_dims():
    with pytest.raises(ValueError, match="expects inputs of size"):
        DeltaAttention({"text": 5}, emotion_intensity_task(), input_stage="representation", d_o=12)
