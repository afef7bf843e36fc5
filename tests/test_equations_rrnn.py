"""Paper 000 eq. 4-13 re-implemented literally (per sample, per step loops) and compared with RRNN/GCA.

The reference reads the model's weights but none of its code except the per-view BiLSTM encoder (eq. 1-3,
pinned in tests/test_layers*) and the output head. Hops = 3 so the recursion m(tau-1) -> m(tau) matters.
"""

from __future__ import annotations

import pytest
import torch

from emofusion.data.batch import ModalityTensor
from emofusion.models import create_model
from emofusion.models.rrnn import GlobalContextAttention
from emofusion.tasks import classification_task

DIMS = {"text": 5, "audio": 4, "visual": 3}
LENGTHS = {"text": [4, 2, 1], "audio": [7, 3, 5], "visual": [3, 5, 2]}
TASK = classification_task(("a", "b", "c"))


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, lens in LENGTHS.items():
        v = torch.randn(3, max(lens) + 1, DIMS[m], generator=g)
        mask = torch.arange(max(lens) + 1)[None] < torch.tensor(lens)[:, None]
        out[m] = ModalityTensor(v, mask)
    return out


def lin(layer, x):
    y = x @ layer.weight.T
    return y + layer.bias if layer.bias is not None else y


def sig(x):
    return 1.0 / (1.0 + torch.exp(-x))


def reference(model, x):
    """Literal eq. 4-13 for each sample."""
    mods = list(DIMS)
    # dropout (an identity in eval mode) acts on each view's encoder output H_s and on m(tau) before the head
    enc = {m: model.dropout(model.encoders[m](*x[m])[0]) for m in mods}
    preds, memories, attentions = [], [], {m: [] for m in mods}
    gates = {"view": {m: [] for m in mods}, "context": [], "update": []}
    for b in range(3):
        H = {m: enc[m][b, : LENGTHS[m][b]] for m in mods}  # real steps only
        if model.memory_init == "mean":  # §3.2: m(0) = sum_s mean_k h_k^s
            mem = sum(sum(H[m][k] for k in range(len(H[m]))) / len(H[m]) for m in mods)
        else:
            mem = torch.zeros(model.dim)
        mems, att_b = [mem], {m: [] for m in mods}
        gv, gc_, gu = {m: [] for m in mods}, [], []
        for tau in range(model.hops):
            cs = []
            for m in mods:
                att = model.attention[m][0 if model.tie_hops else tau]
                W1, W2, w3 = att.w1.weight, att.w2.weight, att.w3.weight
                R = []
                for k in range(len(H[m])):
                    if att.kind == "multiplicative":  # eq. 5 (Nam et al.)
                        R.append(torch.tanh(W1 @ H[m][k]) * torch.tanh(W2 @ mem))
                    else:  # Bahdanau concat
                        R.append(torch.tanh(W1 @ H[m][k] + W2 @ mem))
                s = torch.stack([w3 @ r for r in R])  # [T, heads] or [T, D]
                if model.attend_over == "features":
                    e = s.mean(0)
                    alpha = torch.exp(e) / torch.exp(e).sum()
                    c = model.dim * alpha * H[m].mean(0)
                    att_b[m].append(alpha)
                else:
                    heads = []
                    alphas = []
                    for j in range(model.heads):
                        e = torch.exp(s[:, j])
                        alpha = e / e.sum()  # eq. 7
                        alphas.append(alpha)
                        heads.append(sum(alpha[k] * H[m][k] for k in range(len(H[m]))))  # eq. 8
                    c = torch.cat(heads)
                    att_b[m].append(torch.stack(alphas).mean(0))
                if model.gating and model.view_gates:  # eq. 11
                    g_s = sig(lin(model.gate_s[m], torch.cat([mem, c])))
                    gv[m].append(g_s)
                    c = g_s * c
                cs.append(c)
            w = torch.cat(cs)
            if model.gating:
                g_w = sig(lin(model.gate_w, torch.cat([mem, w]))) if model.context_gate else torch.ones_like(w)
                g_c = sig(lin(model.gate_c, torch.cat([mem, w]))) if model.update_gate else torch.ones_like(mem)
                u = torch.tanh(lin(model.proposal, torch.cat([mem, g_w * w])))  # eq. 12
                mem = (1 - g_c) * mem + g_c * u  # eq. 13
                gc_.append(g_w)
                gu.append(g_c)
            else:
                mem = torch.tanh(lin(model.update, torch.cat([mem, w])))  # GCA
            mems.append(mem)
        preds.append(model.head(model.dropout(mem[None]))[0])
        memories.append(torch.stack(mems))
        for m in mods:
            attentions[m].append(att_b[m])
            gates["view"][m].append(gv[m])
        gates["context"].append(gc_)
        gates["update"].append(gu)
    return torch.stack(preds), torch.stack(memories), attentions, gates


CASES = [
    dict(name="rrnn"),
    dict(name="rrnn", attention="concat"),
    dict(name="gca"),
    dict(name="gca", attention="concat", memory_init="zeros"),
    dict(name="rrnn", heads=2, tie_hops=True),
    dict(name="rrnn", attend_over="features", view_gates=False),
    dict(name="rrnn", context_gate=False, update_gate=False, memory_init="zeros"),
    dict(name="rrnn", attention_dim=4),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_forward_equals_literal_equations(case):
    case = dict(case)
    name = case.pop("name")
    torch.manual_seed(3)
    model = create_model(name, DIMS, TASK, encoder_dim=3, hops=3, decoder_dim=5, dropout=0.0, **case).eval()
    # larger weights so that gates and attention are far from uniform / one-half
    with torch.no_grad():
        for n, p in model.named_parameters():
            if not n.startswith("encoders"):
                p.mul_(2.5)
    # the alignment space W1 h, W2 m has attention_dim rows (default D)
    assert model.attention["audio"][0].w1.out_features == case.get("attention_dim", model.dim)
    x = inputs()
    out = model(x)
    pred, mem, att, gates = reference(model, x)
    torch.testing.assert_close(out.prediction, pred, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.extras["memory"], mem, atol=1e-5, rtol=1e-4)
    for m in DIMS:
        for b in range(3):
            got = out.extras["attention"][m][b]
            want = torch.stack(att[m][b])
            torch.testing.assert_close(got[:, : want.shape[1]], want, atol=1e-5, rtol=1e-4)
            if model.gating and model.view_gates:
                torch.testing.assert_close(out.extras["gate_view"][m][b], torch.stack(gates["view"][m][b]))
    if model.gating:
        torch.testing.assert_close(out.extras["gate_context"], torch.stack([torch.stack(g) for g in gates["context"]]))
        torch.testing.assert_close(out.extras["gate_update"], torch.stack([torch.stack(g) for g in gates["update"]]))
    # the hops differ: the recursion is not a fixed point after one hop
    assert (mem[:, 2] - mem[:, 1]).abs().max() > 1e-3


def test_multi_head_extras_and_sizes():
    torch.manual_seed(0)
    model = create_model("rrnn", DIMS, TASK, encoder_dim=3, hops=2, heads=2, decoder_dim=0, dropout=0.0).eval()
    out = model(inputs())
    assert out.extras["attention_heads"]["audio"].shape == (3, 2, 2, 8)
    assert out.extras["attend_over"] == "time"
    # w = [a; v; t] with heads * D per view, D = 2 * encoder_dim
    assert model.gate_w.in_features == 6 + 3 * 2 * 6 and model.gate_w.out_features == 3 * 2 * 6
    assert len(model.attention["text"]) == 2
    assert model.head.net[0].in_features == 6 and len(model.head.net) == 1
    # one head: the head-averaged attention is the attention itself, so no per-head extra is returned
    single = create_model("rrnn", DIMS, TASK, encoder_dim=3, hops=2, heads=1, decoder_dim=0, dropout=0.0).eval()
    extras = single(inputs()).extras
    assert "attention_heads" not in extras and extras["attention"]["audio"].shape == (3, 2, 8)


def test_defaults_are_the_papers():
    import inspect

    from emofusion.models.rrnn import RRNN

    sig_ = inspect.signature(RRNN.__init__).parameters
    assert {k: sig_[k].default for k in ("hops", "attention", "memory_init", "gating", "heads", "attend_over")} == {
        "hops": 3, "attention": "multiplicative", "memory_init": "mean", "gating": True, "heads": 1,
        "attend_over": "time",
    }


def test_validation_and_registered_attention_parameters():
    with pytest.raises(ValueError):
        create_model("rrnn", DIMS, TASK, hops=0)
    with pytest.raises(ValueError):
        create_model("rrnn", DIMS, TASK, heads=0)
    model = create_model("rrnn", DIMS, TASK, encoder_dim=3, hops=2)
    keys = set(model.state_dict())
    assert {"attention.text.0.w1.weight", "attention.visual.1.w3.weight"} <= keys  # registered, so trained


def test_frontend_attention_is_reported_over_the_input_frames():
    torch.manual_seed(3)
    model = create_model("rrnn", DIMS, TASK, encoder_dim=4, attention_dim=4, decoder_dim=4, hops=2, dropout=0.0,
                         frontend={"audio": 2}).eval()
    x = inputs()
    att = model(x).extras["attention"]
    steps = x["audio"][0].shape[1]
    assert att["audio"].shape == (3, 2, steps)  # unpooled: one weight per audio frame, not per window
    for b, L in enumerate(LENGTHS["audio"]):
        torch.testing.assert_close(att["audio"][b].sum(-1), torch.ones(2))
        assert torch.all(att["audio"][b, :, L:] == 0)
        # each window's weight is shared by its real frames: frames 2k and 2k + 1 carry equal weight
        for k in range(0, L - 1, 2):
            torch.testing.assert_close(att["audio"][b, :, k], att["audio"][b, :, k + 1])
    assert att["text"].shape == (3, 2, x["text"][0].shape[1])


class FixedDropout(torch.nn.Module):
    """One fixed dropout draw (p = 0.5, inverted scaling) per feature: deterministic, so the literal reference
    can apply the same one and the sites where dropout acts are pinned."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("keep", torch.tensor([2.0, 0.0, 2.0, 2.0, 0.0, 2.0][:dim]))

    def forward(self, x):
        return x * self.keep


def test_dropout_acts_on_every_encoder_output_and_on_the_final_memory():
    torch.manual_seed(3)
    model = create_model("rrnn", DIMS, TASK, encoder_dim=3, hops=2, decoder_dim=5, dropout=0.0).eval()
    x = inputs()
    plain = model(x).prediction
    model.dropout = FixedDropout(model.dim)
    out = model(x)
    pred, mem, _att, _gates = reference(model, x)
    torch.testing.assert_close(out.extras["memory"], mem, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.prediction, pred, atol=1e-5, rtol=1e-4)
    assert (out.prediction - plain).abs().max() > 1e-3  # the draw matters, so each site is seen


def test_attention_block_defaults_to_one_head_over_time():
    torch.manual_seed(0)
    att = GlobalContextAttention(6, 4)
    assert att.w3.out_features == 1 and (att.kind, att.over) == ("multiplicative", "time")
    g = torch.Generator().manual_seed(2)
    h, memory = torch.randn(2, 5, 6, generator=g), torch.randn(2, 6, generator=g)
    mask = torch.arange(5)[None] < torch.tensor([5, 3])[:, None]
    context, alpha = att(h, mask, memory)
    assert context.shape == (2, 6) and alpha.shape == (2, 1, 5)
    for b, n in enumerate([5, 3]):
        e = torch.exp(torch.stack([att.w3.weight[0] @ (torch.tanh(att.w1.weight @ h[b, k])
                                                        * torch.tanh(att.w2.weight @ memory[b])) for k in range(n)]))
        torch.testing.assert_close(alpha[b, 0, :n], e / e.sum())
        torch.testing.assert_close(context[b], sum((e / e.sum())[k] * h[b, k] for k in range(n)))


def test_library_default_sizes():
    import inspect

    from emofusion.models.rrnn import RRNN

    p = inspect.signature(RRNN.__init__).parameters
    got = {k: p[k].default for k in ("encoder_dim", "encoder_layers", "attention_dim", "decoder_dim", "dropout")}
    # small library defaults (the paper's configs set 2 x 512, configs/rrnn_mosei.yaml)
    assert got == {"encoder_dim": 64, "encoder_layers": 1, "attention_dim": None, "decoder_dim": 64, "dropout": 0.1}


def test_encoders_are_registered_submodules():
    model = create_model("rrnn", DIMS, TASK, encoder_dim=3, hops=2)
    names = {n for n, _ in model.named_parameters()}
    assert all(any(n.startswith(f"encoders.{m}.") for n in names) for m in DIMS)  # trained, saved, moved


def test_feature_attention_with_a_frontend_is_over_the_features():
    torch.manual_seed(3)
    model = create_model("rrnn", DIMS, TASK, encoder_dim=3, hops=2, decoder_dim=0, dropout=0.0,
                         attend_over="features", frontend={"audio": 2}).eval()
    att = model(inputs()).extras["attention"]
    for m in DIMS:  # [B, hops, D]: a distribution over the D features, nothing to map back onto frames
        assert att[m].shape == (3, 2, model.dim)
        torch.testing.assert_close(att[m].sum(-1), torch.ones(3, 2))
