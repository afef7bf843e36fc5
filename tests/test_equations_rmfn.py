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
from emofusion.tasks import classification_task, emotion_intensity_task
from helpers import random_inputs

DIMS = {"text": 4, "audio": 3, "visual": 2}
TASK = classification_task(("a", "b", "c"))
SMALL = dict(hidden_dim=3, fuse_dim=4, z_dim=2, summarize_dim=5, head_dim=6, dropout=0.0, stages=3)


def sig(x):
    return 1.0 / (1.0 + torch.exp(-x))


def lstm(pre, c):
    H = c.shape[-1]
    assert pre.shape[-1] == 4 * H  # one pre-activation per gate and state unit
    i, f, g, o = pre[:H], pre[H : 2 * H], pre[2 * H : 3 * H], pre[3 * H :]
    c = sig(f) * c + sig(i) * torch.tanh(g)
    return sig(o) * torch.tanh(c), c


def lin(layer, x):
    y = layer.weight @ x
    return y + layer.bias if layer.bias is not None else y


def mfp(fu, h, scaled=True):
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
            ht = h * a * (D if scaled else 1.0)  # highlight_scale: h~ = D * h ⊙ a
        else:
            ht = h
        s, c_f = lstm(lin(fu.fuse_in, ht) + fu.fuse_rec.weight @ s, c_f)  # FUSE recurrence on s^[k-1]
        outs.append(s)
    summ = torch.cat(outs) if fu.summarize == "all" else outs[-1]
    l1, l2 = fu.summarizer[0], fu.summarizer[3]
    z = torch.tanh(lin(l2, torch.relu(lin(l1, summ))))
    return z, atts


def reference(model, seqs, scaled=True):
    """``seqs``: per sample {m: [L_m, D_m]} on the common axis (modalities stop at their own length)."""
    mods = list(model.modalities)
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
                z, a = mfp(model.fusion, torch.cat([h[m] for m in mods]), scaled)
                zs.append(z)
                atts.append(a)
        rep = torch.cat([h[m] for m in mods] + ([z] if model.mfp else []))
        # dropout (an identity in eval mode) acts on E = [h_T; z_T] before the head
        preds.append(model.head(model.dropout(rep[None]))[0])
        zs_all.append(zs)
        atts_all.append(atts)
    return torch.stack(preds), zs_all, atts_all


def batch(lengths, seed=0):
    return random_inputs(lengths, DIMS, seed)


def build(absent: str = "token", dims=DIMS, task=TASK, **options):
    torch.manual_seed(4)
    model = create_model("rmfn", dims, task, **{**SMALL, **options}).eval()
    # the literal reference reads an empty modality as zero steps (absent="zeros"); the learned absent token
    # (realdata branch, tests/test_absent.py) replaces it by one step, which this reference does not model
    model.set_absent_mode(absent)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)  # away from the linear regime so that every term shows
    return model


def check(model, x, seqs, scaled=True):
    out = model(x)
    pred, zs, atts = reference(model, seqs, scaled)
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
    [{}, {"summarize": "last"}, {"highlight": False}, {"mfp": False}, {"highlight_scale": False},
     {"highlight_scale": "false"}, {"z_dim": 1}, {"fuse_dim": 1}],
    ids=["full", "summarize-last", "no-highlight", "no-mfp", "no-scale", "no-scale-cli-string", "z-dim-1", "fuse-dim-1"],
)
def test_aligned_forward_equals_literal_equations(options):
    model = build(**options)
    x = batch(ALIGNED)
    seqs = [{m: x[m][0][b, : ALIGNED[m][b]] for m in DIMS} for b in range(3)]
    out = check(model, x, seqs, scaled=options.get("highlight_scale", True) not in (False, "false"))
    assert out.extras["alignment"] == "given"
    if model.mfp:
        assert out.extras["z"].shape == (3, 5, model.z_dim)  # trimmed to the longest real sequence


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


def resampled_seqs(x, lengths, ref, mods):
    """Per sample, every modality nearest-neighbour resampled onto the reference's steps (the longest
    modality's when the reference is empty)."""
    seqs = []
    for b in range(len(lengths[ref])):
        L = lengths[ref][b] or max(lengths[m][b] for m in mods)
        s = {}
        for m in mods:
            n = lengths[m][b]
            idx = [min(math.floor(t * n / L), n - 1) for t in range(L)]
            s[m] = x[m][0][b, idx] if n else torch.zeros(0, x[m][0].shape[-1])
        seqs.append(s)
    return seqs


def test_lsthm_init_ranges():
    from emofusion.models.rmfn import LSTHMBank

    torch.manual_seed(0)
    bank = LSTHMBank({"a": 3, "b": 2}, hidden_dim=16, z_dim=5)
    bound = 1 / math.sqrt(16)  # U ~ U(-1/sqrt(H), 1/sqrt(H)), torch's LSTM init; 2 x 16 x 64 draws fill it
    assert bank.U.abs().max() <= bound and bank.U.max() > 0.95 * bound and bank.U.min() < -0.95 * bound
    for lin_ in bank.W.values():  # order i, f, g, o: only the forget gate's bias starts at 1
        assert torch.all(lin_.bias[16:32] == 1.0)
        assert not torch.any(lin_.bias[:16] == 1.0) and not torch.any(lin_.bias[32:] == 1.0)


def test_lsthm_without_v_ignores_a_given_z():
    from emofusion.models.rmfn import LSTHMBank

    torch.manual_seed(0)
    bank = LSTHMBank({"a": 3, "b": 2}, hidden_dim=4, z_dim=0)
    g = torch.Generator().manual_seed(1)
    pre_x, h, c = torch.randn(2, 3, 16, generator=g), torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    assert bank.V is None
    for got, want in zip(bank.step(pre_x, h, c, torch.zeros(3, 0)), bank.step(pre_x, h, c, None)):
        torch.testing.assert_close(got, want)


def test_text_is_the_default_reference_wherever_it_stands():
    dims = {"audio": 3, "text": 4, "visual": 2}  # text is not the first modality
    lengths = {"audio": [7, 2], "text": [3, 4], "visual": [5, 6]}
    model = build(absent="zeros", dims=dims)
    assert model.reference == "text"
    x = random_inputs(lengths, dims, 6)
    out = check(model, x, resampled_seqs(x, lengths, "text", list(dims)))
    assert out.extras["alignment"] == "resampled:text"
    assert out.extras["time_mask"].sum(1).tolist() == [3, 4]


def test_a_one_step_reference_is_the_axis():
    lengths = {"text": [1, 3], "audio": [4, 2], "visual": [5, 3]}
    model = build(absent="zeros")
    x = batch(lengths, seed=7)
    out = check(model, x, resampled_seqs(x, lengths, "text", list(DIMS)))
    assert out.extras["time_mask"].sum(1).tolist() == [1, 3]


def test_single_modality_equals_literal_equations():
    dims = {"audio": 3}
    lengths = {"audio": [4, 2, 5]}
    model = build(absent="zeros", dims=dims)
    x = random_inputs(lengths, dims, 8)
    out = check(model, x, [{"audio": x["audio"][0][b, :n]} for b, n in enumerate(lengths["audio"])])
    assert out.extras["alignment"] == "given"


def test_a_modality_without_steps_is_a_modality_without_real_steps():
    # audio has no columns at all ([B, 0, D]): the same as audio with only padded steps, and its LSTHM
    # keeps its zero state (its slice of the representation is 0)
    lengths = {"text": [3, 2], "audio": [0, 0], "visual": [4, 1]}
    model = build(absent="zeros")
    x = batch(lengths, seed=9)  # audio: one padded step
    none = dict(x, audio=ModalityTensor(torch.zeros(2, 0, DIMS["audio"]), torch.zeros(2, 0, dtype=torch.bool)))
    want = check(model, x, resampled_seqs(x, lengths, "text", list(DIMS)))
    got = model(none)
    torch.testing.assert_close(got.prediction, want.prediction)
    torch.testing.assert_close(got.extras["z"], want.extras["z"])
    lo, hi = model.modality_slices["audio"]
    assert torch.all(got.extras["representation"][:, lo:hi] == 0)
    assert torch.all(got.extras["representation"][:, :lo] != 0)


@pytest.mark.parametrize(
    "lengths, alignment",
    [
        ({"text": [3, 2], "audio": [3, 0], "visual": [3, 2]}, "given"),  # an empty modality needs no resampling
        ({"text": [3, 2], "audio": [3, 1], "visual": [3, 2]}, "resampled:text"),  # one step onto two
        ({"text": [3, 2], "audio": [3, 2], "visual": [3, 2]}, "given"),
    ],
)
def test_alignment_extra_says_whether_anything_was_resampled(lengths, alignment):
    model = build(absent="zeros")
    x = batch(lengths, seed=10)
    out = check(model, x, resampled_seqs(x, lengths, "text", list(DIMS)))
    assert out.extras["alignment"] == alignment


def test_absent_token_stands_in_for_a_missing_modality():
    # default absent="token": a sample without audio reads the learned token as its one audio step
    lengths = {"text": [3, 2], "audio": [0, 4], "visual": [2, 3]}
    model = build()
    x = batch(lengths, seed=11)
    before = model(x).prediction
    with torch.no_grad():
        model.absent_tokens[model.modalities.index("audio")].add_(1.0)
    after = model(x).prediction
    assert (after[0] - before[0]).abs().max() > 1e-4
    torch.testing.assert_close(after[1], before[1])


def test_empty_batch():
    model = build(absent="zeros")
    x = {m: ModalityTensor(torch.zeros(0, 3, d), torch.zeros(0, 3, dtype=torch.bool)) for m, d in DIMS.items()}
    out = model(x)
    assert out.prediction.shape == (0, 3) and out.extras["z"].shape == (0, 0, 2)


class FixedDropout(torch.nn.Module):
    """One fixed dropout draw (p = 0.5, inverted scaling): deterministic, so the reference can apply it too."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("keep", 2.0 * (torch.arange(dim) % 3 != 1).float())

    def forward(self, x):
        return x * self.keep


def test_dropout_acts_on_the_representation_before_the_head():
    model = build()
    x = batch(ALIGNED)
    seqs = [{m: x[m][0][b, : ALIGNED[m][b]] for m in DIMS} for b in range(3)]
    plain = model(x).prediction
    model.dropout = FixedDropout(3 * 3 + 2)
    out = check(model, x, seqs)
    assert (out.prediction - plain).abs().max() > 1e-3


def test_regression_outputs_are_bounded_to_the_label_range():
    task = emotion_intensity_task()
    model = build(task=task)
    with torch.no_grad():
        model.head.net[-1].bias.copy_(torch.tensor([-5.0, -1.0, 0.5, 1.5, 4.0, 8.0]))
    x = batch(ALIGNED)
    seqs = [{m: x[m][0][b, : ALIGNED[m][b]] for m in DIMS} for b in range(3)]
    raw, _, _ = reference(model, seqs)
    assert (raw < 0).any() and (raw > 3).any() and ((raw > 0) & (raw < 3)).any()
    torch.testing.assert_close(model(x).prediction, raw.clamp(0.0, 3.0), atol=1e-5, rtol=1e-4)
