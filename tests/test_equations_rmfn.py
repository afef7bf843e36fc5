"""Paper 001 §3 re-implemented literally (per sample, per time step, per stage) and compared with RMFN.

LSTHM: gates^m = W^m x_t + U^m h_{t-1} + V^m z_{t-1} + b (i, f, g, o). MFP per step on h_t = [h^m]:
HIGHLIGHT (decoder LSTM, memory M(h_t), input a^[k-1], a^[0] uniform, a^[k] = softmax(h^HL[k]),
h~ = D * h ⊙ a^[k]); FUSE (LSTM over stages, memory c0, recurrence s^[k-1]); SUMMARIZE z = S(s^[1:K]).
K = 3 stages, unequal lengths, unaligned (resampled) and index-aligned inputs.
"""

from __future__ import annotations

import math

import pytest
import torch

from emofusion.data.batch import ModalityTensor
from emofusion.models import create_model
from emofusion.tasks import classification_task
from helpers import random_inputs

DIMS = {"text": 4, "audio": 3, "visual": 2}
TASK = classification_task(("a", "b", "c"))
SMALL = dict(hidden_dim=3, fuse_dim=4, z_dim=2, summarize_dim=5, head_dim=6, dropout=0.0, stages=3)


def sig(x):
    return 1.0 / (1.0 + torch.exp(-x))


def lstm(pre, c):
    H = pre.shape[-1] // 4
    i, f, g, o = pre[:H], pre[H : 2 * H], pre[2 * H : 3 * H], pre[3 * H :]
    c = sig(f) * c + sig(i) * torch.tanh(g)
    return sig(o) * torch.tanh(c), c


def lin(layer, x):
    y = layer.weight @ x
    return y + layer.bias if layer.bias is not None else y


def mfp(fu, h):
    D = h.shape[0]
    s = torch.zeros(fu.fuse_dim)
    c_f = fu.fuse_c0.clone()
    if fu.highlight:
        c_hl = lin(fu.memory_init, h)  # M(h_t)
        h_hl = torch.zeros(D)
        a = torch.full((D,), 1.0 / D)
    outs, atts = [], []
    for _k in range(fu.stages):
        if fu.highlight:
            h_hl, c_hl = lstm(lin(fu.highlight_cell, torch.cat([a, h_hl])), c_hl)  # input a^[k-1]
            a = torch.exp(h_hl) / torch.exp(h_hl).sum()
            atts.append(a)
            ht = h * a * (D if fu.scale != 1.0 else 1.0)
        else:
            ht = h
        s, c_f = lstm(lin(fu.fuse_in, ht) + fu.fuse_rec.weight @ s, c_f)  # FUSE recurrence on s^[k-1]
        outs.append(s)
    summ = torch.cat(outs) if fu.summarize == "all" else outs[-1]
    l1, l2 = fu.summarizer[0], fu.summarizer[3]
    z = torch.tanh(lin(l2, torch.relu(lin(l1, summ))))
    return z, atts


def reference(model, seqs):
    """``seqs``: per sample {m: [L_m, D_m]} on the common axis (modalities stop at their own length)."""
    mods = list(DIMS)
    bank = model.lsthm
    Hd = bank.hidden_dim
    preds, zs_all, atts_all = [], [], []
    for sample in seqs:
        h = {m: torch.zeros(Hd) for m in mods}
        c = {m: torch.zeros(Hd) for m in mods}
        z = torch.zeros(model.z_dim) if model.mfp else None
        steps = max(len(v) for v in sample.values())
        zs, atts = [], []
        for t in range(steps):
            new = {}
            for i, m in enumerate(mods):
                if t >= len(sample[m]):
                    continue
                pre = lin(bank.W[m], sample[m][t]) + bank.U[i].T @ h[m]
                if model.mfp:
                    pre = pre + bank.V.weight[i * 4 * Hd : (i + 1) * 4 * Hd] @ z
                new[m] = lstm(pre, c[m])
            for m, (hm, cm) in new.items():
                h[m], c[m] = hm, cm
            if model.mfp:
                z, a = mfp(model.fusion, torch.cat([h[m] for m in mods]))
                zs.append(z)
                atts.append(a)
        rep = torch.cat([h[m] for m in mods] + ([z] if model.mfp else []))
        preds.append(model.head(rep[None])[0])
        zs_all.append(zs)
        atts_all.append(atts)
    return torch.stack(preds), zs_all, atts_all


def batch(lengths, seed=0):
    return random_inputs(lengths, DIMS, seed)


def build(absent: str = "token", **options):
    torch.manual_seed(4)
    model = create_model("rmfn", DIMS, TASK, **{**SMALL, **options}).eval()
    # the literal reference reads an empty modality as zero steps (absent="zeros"); the learned absent token
    # (realdata branch, tests/test_absent.py) replaces it by one step, which this reference does not model
    model.set_absent_mode(absent)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)  # away from the linear regime so that every term shows
    return model


def check(model, x, seqs):
    out = model(x)
    pred, zs, atts = reference(model, seqs)
    torch.testing.assert_close(out.prediction, pred, atol=1e-5, rtol=1e-4)
    if model.mfp:
        for b, zb in enumerate(zs):
            torch.testing.assert_close(out.extras["z"][b, : len(zb)], torch.stack(zb), atol=1e-5, rtol=1e-4)
            if model.highlight:
                want = torch.stack([torch.stack(a) for a in atts[b]])
                torch.testing.assert_close(out.extras["highlight"][b, : len(zb)], want, atol=1e-5, rtol=1e-4)
                assert torch.all(out.extras["highlight"][b, len(zb) :] == 0)
    return out


ALIGNED = {"text": [5, 2, 3], "audio": [5, 2, 3], "visual": [5, 2, 3]}


@pytest.mark.parametrize(
    "options",
    [{}, {"summarize": "last"}, {"highlight": False}, {"mfp": False}, {"highlight_scale": False}],
    ids=["full", "summarize-last", "no-highlight", "no-mfp", "no-scale"],
)
def test_aligned_forward_equals_literal_equations(options):
    model = build(**options)
    x = batch(ALIGNED)
    seqs = [{m: x[m][0][b, : ALIGNED[m][b]] for m in DIMS} for b in range(3)]
    out = check(model, x, seqs)
    assert out.extras["alignment"] == "given"
    if model.mfp:
        assert out.extras["z"].shape == (3, 5, 2)  # trimmed to the longest real sequence


def test_unaligned_inputs_resampled_to_the_reference_axis():
    lengths = {"text": [3, 4, 2], "audio": [7, 2, 5], "visual": [3, 9, 0]}
    model = build(absent="zeros")
    x = batch(lengths, seed=1)
    seqs = []
    for b in range(3):
        L = lengths["text"][b]  # text is the reference axis
        s = {}
        for m in DIMS:
            n = lengths[m][b]
            idx = [min(math.floor(t * n / L), n - 1) for t in range(L)] if n else []
            s[m] = x[m][0][b, idx] if n else torch.zeros(0, DIMS[m])
        seqs.append(s)
    out = check(model, x, seqs)
    assert out.extras["alignment"] == "resampled:text"


def test_reference_option_and_empty_reference():
    lengths = {"text": [3, 0], "audio": [6, 4], "visual": [2, 5]}
    model = build(absent="zeros", reference="audio")
    x = batch(lengths, seed=2)
    seqs = []
    for b in range(2):
        L = lengths["audio"][b]
        s = {}
        for m in DIMS:
            n = lengths[m][b]
            s[m] = x[m][0][b, [min(math.floor(t * n / L), n - 1) for t in range(L)]] if n else torch.zeros(0, DIMS[m])
        seqs.append(s)
    out = check(model, x, seqs)
    assert out.extras["alignment"] == "resampled:audio"
    # text as reference but empty for sample 1: that sample uses its longest modality (visual, 5 steps)
    model = build(absent="zeros")
    out = model(x)
    assert out.extras["z"].shape[1] == 5


def test_index_alignment_each_modality_stops_at_its_own_end():
    lengths = {"text": [3, 4], "audio": [6, 2], "visual": [1, 5]}
    model = build(align="index")
    x = batch(lengths, seed=3)
    seqs = [{m: x[m][0][b, : lengths[m][b]] for m in DIMS} for b in range(2)]
    out = check(model, x, seqs)
    assert out.extras["alignment"] == "index"


def test_structure_and_init():
    model = build()
    fu = model.fusion
    assert model.reference == "text" and model.z_dim == 2
    assert model.head.net[0].in_features == 3 * 3 + 2
    assert fu.summarizer[0].in_features == 3 * 4  # S reads s^[1:K]
    assert build(summarize="last").fusion.summarizer[0].in_features == 4
    assert fu.h_dim == 9 and fu.scale == 9.0
    torch.manual_seed(0)
    fresh = create_model("rmfn", DIMS, TASK, **SMALL)
    for lin_ in fresh.lsthm.W.values():  # forget-gate bias starts at 1
        assert torch.all(lin_.bias[3:6] == 1.0) and not torch.all(lin_.bias[:3] == 1.0)
    assert fresh.lsthm.U.abs().max() <= 1 / math.sqrt(3) and fresh.lsthm.U.abs().max() > 0.3
    w = fresh.fusion.fuse_rec.weight  # orthogonal recurrence init [4H, H]: orthonormal columns
    torch.testing.assert_close(w.T @ w, torch.eye(4), atol=1e-5, rtol=0)
    assert fresh.fusion.fuse_c0.norm().item() == pytest.approx(1.0, abs=1e-5)
    assert fresh.lsthm.V.bias is None and fresh.fusion.fuse_rec.bias is None
    with pytest.raises(ValueError):
        create_model("rmfn", DIMS, TASK, **{**SMALL, "summarize": "mean"})
    nomfp = create_model("rmfn", DIMS, TASK, **{**SMALL, "mfp": "false"})
    assert nomfp.fusion is None and nomfp.lsthm.V is None and not nomfp.highlight
    assert model.modality_slices == {"text": (0, 3), "audio": (3, 6), "visual": (6, 9)}


def test_default_sizes():
    import inspect

    from emofusion.models.rmfn import RMFN

    p = inspect.signature(RMFN.__init__).parameters
    got = {k: p[k].default for k in ("stages", "hidden_dim", "fuse_dim", "z_dim", "summarize_dim", "head_dim",
                                     "dropout", "summarize", "mfp", "highlight")}
    assert got == {"stages": 3, "hidden_dim": 32, "fuse_dim": 32, "z_dim": 32, "summarize_dim": 64, "head_dim": 64,
                   "dropout": 0.1, "summarize": "all", "mfp": True, "highlight": True}  # docs/models/rmfn.md


def test_lsthm_step_without_z_is_a_plain_lstm_step():
    from emofusion.models.rmfn import LSTHMBank

    torch.manual_seed(0)
    bank = LSTHMBank({"a": 3, "b": 2}, hidden_dim=4, z_dim=5)
    g = torch.Generator().manual_seed(1)
    pre_x = torch.randn(2, 3, 16, generator=g)
    h, c = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    h1, c1 = bank.step(pre_x, h, c, None)  # no cross-modal code: the V z term is left out
    gates = pre_x + torch.bmm(h, bank.U)
    i, f, u, o = (gates[..., k * 4 : (k + 1) * 4] for k in range(4))  # order i, f, g, o
    c_want = sig(f) * c + sig(i) * torch.tanh(u)
    torch.testing.assert_close(c1, c_want)
    torch.testing.assert_close(h1, sig(o) * torch.tanh(c_want))
    z = torch.randn(3, 5, generator=g)
    assert not torch.allclose(bank.step(pre_x, h, c, z)[1], c1)  # with z the term is added


def test_empty_inputs_give_empty_highlight_extras_of_the_right_width():
    torch.manual_seed(0)
    dims = {"text": 3, "audio": 2}
    model = create_model("rmfn", dims, classification_task(("a", "b")), hidden_dim=4, stages=2, fuse_dim=5,
                         z_dim=3, summarize_dim=6, head_dim=4, absent="zeros").eval()
    x = {m: ModalityTensor(torch.zeros(2, 0, d), torch.zeros(2, 0, dtype=torch.bool)) for m, d in dims.items()}
    out = model(x)
    assert out.extras["highlight"].shape == (2, 0, 2, 2 * 4) and out.extras["z"].shape == (2, 0, 3)
    assert torch.isfinite(out.prediction).all()


@pytest.mark.parametrize("align", ["index", "resample"])
def test_padding_content_reaches_neither_outputs_nor_gradients(align):
    # padded steps are "don't care": NaN or inf there (missing frames) must change neither the forward pass nor
    # any gradient. With align="index" the padding of the shorter modalities stays on the common axis (only the
    # projections see it, the held states do not), so it must be replaced by zeros before W^m x_t: a NaN
    # projection at a masked step gives 0 * NaN in the LSTM backward, and NaN * 0 is no zero.
    lengths = {"text": [3, 4], "audio": [6, 2], "visual": [1, 5]}
    fills = {"text": torch.nan, "audio": torch.inf, "visual": -torch.inf}
    x = batch(lengths, seed=5)
    clean = {m: ModalityTensor(v * mask.unsqueeze(-1), mask) for m, (v, mask) in x.items()}
    dirty = {m: ModalityTensor(torch.where(mask.unsqueeze(-1), v, fills[m]), mask) for m, (v, mask) in x.items()}
    grads = []
    for inputs in (clean, dirty):
        model = build(align=align).train()
        out = model(inputs)
        out.prediction.square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        assert torch.isfinite(out.prediction).all()
    assert grads[1].keys() == grads[0].keys() and "lsthm.W.audio.weight" in grads[1]
    for name, g in grads[1].items():
        assert torch.isfinite(g).all(), name
        torch.testing.assert_close(g, grads[0][name], msg=name)
