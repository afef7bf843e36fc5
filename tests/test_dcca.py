"""Paper 002 eq. 13 (DCCA): the objective carries signal at Table 1's settings (batch 4, d_r = 16) and is
finite on degenerate batches."""

from __future__ import annotations

import pytest
import torch

from emofusion.data.batch import ModalityTensor
from emofusion.models import create_model
from emofusion.models.delta_attention import RunningCCA, canonical_correlations
from emofusion.tasks import emotion_intensity_task


def batches(n_batches, shared: bool, d=16, frames=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix1, mix2 = torch.randn(4, d, generator=g), torch.randn(4, d, generator=g)
    for _ in range(n_batches):
        if shared:  # both views see the same 4-dimensional latent, plus their own noise
            z = torch.randn(frames, 4, generator=g)
            yield z @ mix1 + torch.randn(frames, d, generator=g), z @ mix2 + torch.randn(frames, d, generator=g)
        else:
            yield torch.randn(frames, d, generator=g), torch.randn(frames, d, generator=g)


def run(shared, momentum=0.9, n=30):
    cca = RunningCCA(2, 16, momentum=momentum).train()
    for a, b in batches(n, shared):
        value = cca([a, b])
    return float(value)


def test_independent_views_near_zero_shared_latent_clearly_higher():
    independent = run(False)
    shared = run(True)
    assert independent < 0.08
    assert shared > 0.2 and shared > 3 * independent
    # the per-batch estimate at batch 4 (utterance pairing) is the artefact the pooling removes:
    # 4 samples span 3 centred dimensions, so 3 of 16 correlations are 1 whatever the views are
    g = torch.Generator().manual_seed(1)
    tiny = canonical_correlations(torch.randn(4, 16, generator=g), torch.randn(4, 16, generator=g))
    assert float(tiny.mean()) == pytest.approx(3 / 16, abs=0.01)


def test_momentum_zero_is_the_batch_cca_and_eval_does_not_update():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(50, 5, generator=g), torch.randn(50, 5, generator=g) + 0.0
    b[:, :2] += a[:, :2]
    plain = RunningCCA(2, 5, momentum=0.0)
    assert float(plain([a, b])) == pytest.approx(float(canonical_correlations(a, b).mean()), abs=1e-9)
    cca = RunningCCA(2, 5, momentum=0.5).eval()
    first = float(cca([a, b]))
    assert float(cca.n_0) == 0.0 and float(cca([a, b])) == first
    cca.train()
    cca([a, b])
    assert float(cca.n_0) == 50.0
    a2, b2 = torch.randn(50, 5, generator=g), torch.randn(50, 5, generator=g)
    # pooled: the second value rests on both batches (decayed first batch + new one)
    pooled = float(cca([a2, b2]))
    both = canonical_correlations(torch.cat([a, a2]), torch.cat([b, b2])).mean()
    assert pooled != pytest.approx(float(canonical_correlations(a2, b2).mean()), abs=1e-3)
    assert abs(pooled - float(both)) < 0.1
    with pytest.raises(ValueError):
        RunningCCA(2, 5, momentum=1.0)


def test_identical_rows_give_finite_loss_and_gradients():
    row = torch.randn(1, 16)
    a = row.repeat(32, 1).requires_grad_(True)
    b = (torch.randn(1, 16).repeat(32, 1)).requires_grad_(True)
    for momentum in (0.0, 0.9):
        cca = RunningCCA(2, 16, momentum=momentum).train()
        value = cca([a, b])
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
        a.grad = b.grad = None
    c = canonical_correlations(a, b)
    (-c.sum()).backward()
    assert torch.isfinite(a.grad).all()


def test_model_objective_on_random_and_identical_batches():
    dims = {"text": 6, "audio": 5, "visual": 4}
    small = dict(d_ch=8, num_heads=2, d_o=8, d_r=16, dcca_hidden=8, d_t=8, window=3, dropout=0.0)
    torch.manual_seed(0)
    model = create_model("delta_attention", dims, emotion_intensity_task(), **small).train()
    g = torch.Generator().manual_seed(3)
    for _ in range(15):  # Table 1's batch of 4; independent random modalities
        x = {m: ModalityTensor(torch.randn(4, 30, d, generator=g), torch.ones(4, 30, dtype=torch.bool))
             for m, d in dims.items()}
        out = model(x)
    assert float(out.extras["cca_correlation"]) < 0.15  # the utterance-level estimate would give >= 3/16
    # the samples are the frames of the batch (4 utterances x 30 steps), pooled over the 15 batches
    assert model.cca_pairing == "frames"
    n_pooled = sum(120 * 0.9**k for k in range(15))
    assert float(model.cca.n_0) == pytest.approx(n_pooled)
    # a batch of identical rows (all samples the same): finite loss and gradients
    v = {m: torch.randn(1, 30, d, generator=g).repeat(4, 1, 1) for m, d in dims.items()}
    x = {m: ModalityTensor(v[m], torch.ones(4, 30, dtype=torch.bool)) for m in dims}
    model.zero_grad()
    out = model(x)
    loss = out.prediction.mean() + sum(out.aux_losses.values())
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_multiview_cca_is_the_mean_over_distinct_pairs():
    from emofusion.models.delta_attention import multiview_cca

    g = torch.Generator().manual_seed(3)
    z = torch.randn(200, 2, generator=g, dtype=torch.float64)
    views = [torch.cat([z, torch.randn(200, 2, generator=g, dtype=torch.float64)], 1) * s for s in (1.0, 2.0, 0.5)]
    views[2] = torch.randn(200, 4, generator=g, dtype=torch.float64)  # one view unrelated to the others
    pairs = [(0, 1), (0, 2), (1, 2)]
    want = sum(float(canonical_correlations(views[i], views[j]).mean()) for i, j in pairs) / 3
    assert float(multiview_cca(views)) == pytest.approx(want, rel=1e-9)
    assert float(multiview_cca(views[:2])) == pytest.approx(float(canonical_correlations(*views[:2]).mean()))
    with pytest.raises(ValueError):
        multiview_cca(views[:1])


def test_cca_aux_loss_only_with_a_positive_weight():
    torch.manual_seed(0)
    dims = {"text": 5, "audio": 4, "visual": 3}
    small = dict(d_ch=6, num_heads=2, d_o=5, d_r=3, dcca_hidden=4, d_t=4, dropout=0.0, cca_momentum=0.0)
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(6, 7, dtype=torch.bool)
    x = {m: ModalityTensor(torch.randn(6, 7, d, generator=g), mask) for m, d in dims.items()}
    on = create_model("delta_attention", dims, emotion_intensity_task(), cca_weight=0.3, **small).eval()
    out = on(x)
    torch.testing.assert_close(out.aux_losses["cca"], -0.3 * out.extras["cca_correlation"])
    off = create_model("delta_attention", dims, emotion_intensity_task(), cca_weight=0.0, **small).eval()
    out_off = off(x)
    assert "cca" not in out_off.aux_losses and "cca_correlation" in out_off.extras
    with pytest.raises(ValueError, match="expects values"):
        off({**x, "audio": ModalityTensor(torch.randn(6, 7, 2), mask)})  # inputs are validated


def test_running_sums_are_float64():
    cca = RunningCCA(3, 4)
    assert all(b.dtype == torch.float64 for b in cca.buffers()) and len(list(cca.buffers())) == 3 * 4
    one = RunningCCA(2, 3, momentum=0.0)
    out = one([torch.randn(1, 3), torch.randn(1, 3)])  # one sample: no covariance, no correlation
    assert out.dtype == torch.float64 and float(out) == 0.0


def test_correlations_from_covariances_default_regulariser_is_the_shared_eps():
    # the public helper and every CCA entry point share one ridge, eps = 1e-3 (canonical_correlations,
    # multiview_cca, RunningCCA): calling the helper without eps must give canonical_correlations' values
    import inspect

    from emofusion.models.delta_attention import correlations_from_covariances, multiview_cca

    for fn in (correlations_from_covariances, canonical_correlations, multiview_cca, RunningCCA.__init__):
        assert inspect.signature(fn).parameters["eps"].default == 1e-3, fn
    g = torch.Generator().manual_seed(3)
    z = torch.randn(40, 2, generator=g)
    h1 = 0.1 * (z @ torch.randn(2, 3, generator=g) + 0.5 * torch.randn(40, 3, generator=g))
    h2 = 0.1 * (z @ torch.randn(2, 4, generator=g) + 0.5 * torch.randn(40, 4, generator=g))
    a, b = h1.double() - h1.double().mean(0), h2.double() - h2.double().mean(0)
    s11, s22, s12 = a.T @ a / 39, b.T @ b / 39, a.T @ b / 39
    got = correlations_from_covariances(s11, s22, s12)
    torch.testing.assert_close(got, canonical_correlations(h1, h2))
    # the ridge is not negligible at this scale (variances ~0.01), so the value above pins it
    assert (got - correlations_from_covariances(s11, s22, s12, eps=2e-3)).abs().max() > 1e-3
