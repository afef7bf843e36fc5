"""MulT (Tsai et al. 2019) against a literal re-statement of its reference implementation's forward pass
(yaohungt/Multimodal-Transformer: src/models.py, modules/transformer.py, modules/position_embedding.py),
per sample on real steps, and its parameter count at the reference's MOSEI settings by an independent
formula."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from emofusion.models import create_model
from emofusion.tasks import classification_task, sentiment_task
from helpers import Times, random_inputs

DIMS = {"text": 5, "audio": 4, "visual": 3}
LENGTHS = {"text": [4, 2], "audio": [6, 5], "visual": [3, 7]}
TASK = classification_task(("a", "b", "c"))
SMALL = dict(d_model=6, num_heads=2, cross_layers=2, kernel_size=3)


def inputs(seed=0):
    return random_inputs(LENGTHS, DIMS, seed)


def positions(n, d, offset=1):
    """fairseq/tensor2tensor sinusoids, position numbers offset, offset + 1, ...; sin half then cos half."""
    half = d // 2
    rows = []
    for p in range(offset, offset + n):
        f = [math.exp(-math.log(10000) * i / (half - 1)) for i in range(half)]
        row = [math.sin(p * x) for x in f] + [math.cos(p * x) for x in f] + ([0.0] if d % 2 else [])
        rows.append(row)
    return torch.tensor(rows)


def ln(mod, x):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + mod.eps) * mod.weight + mod.bias


def mha(att, q, k, v, allowed):
    H, dk = att.num_heads, att.head_dim
    Q = q @ att.q_proj.weight.T + att.q_proj.bias
    K = k @ att.k_proj.weight.T + att.k_proj.bias
    V = v @ att.v_proj.weight.T + att.v_proj.bias
    heads = []
    for h in range(H):
        s = Q[:, h * dk : (h + 1) * dk] @ K[:, h * dk : (h + 1) * dk].T / math.sqrt(dk)
        s = s.masked_fill(~allowed, float("-inf"))
        heads.append(torch.softmax(s, -1) @ V[:, h * dk : (h + 1) * dk])
    return torch.cat(heads, -1) @ att.out_proj.weight.T + att.out_proj.bias


def stack(enc, x, kv=None, future=True, shared=True, literal=False, res=1.0):
    lq = x.shape[0]
    lk = lq if kv is None else kv.shape[0]
    i = torch.arange(lq)[:, None]
    j = torch.arange(lk)[None]
    allowed = j <= i + abs(lk - lq) if future else torch.ones(lq, lk, dtype=torch.bool)
    for layer in enc.layers:
        q = ln(layer.norm_q, x)
        if kv is None:
            k = q
        else:
            k = ln(layer.norm_q if shared else layer.norm_kv, kv)  # reference: layer_norms[0] for k and v
        a = mha(layer.attn, q, k, k, allowed)
        x = (q if literal else x) + res * a
        h = ln(layer.norm_ff, x)
        f = torch.relu(h @ layer.ff[0].weight.T + layer.ff[0].bias) @ layer.ff[3].weight.T + layer.ff[3].bias
        x = (h if literal else x) + res * f
    return ln(enc.norm, x)


def conv(c, x):
    W = c.conv.weight
    k = W.shape[2]
    out = []
    for t in range(x.shape[0]):
        acc = torch.zeros(W.shape[0])
        for o in range(k):
            s = t + o - k // 2
            if 0 <= s < x.shape[0]:
                acc = acc + W[:, :, o] @ x[s]
        out.append(acc)
    return torch.stack(out)


def reference(model, x, future=True, shared=True, reembed=True, offset=1, literal=False, pooling="last",
              scales=None):
    """``scales``: the factors of the :class:`Times` stand-ins for the dropout modules (see ``DROPOUT_SITES``)."""
    sc = {"text": 1.0, "embed": 1.0, "res": 1.0, "out": 1.0, **(scales or {})}
    d = model.d_model
    mods = list(DIMS)
    preds = []
    for b in range(2):
        z0 = {}
        for m in mods:
            L = LENGTHS[m][b]
            inp = x[m][0][b, :L] * (sc["text"] if m == "text" else 1.0)
            z0[m] = sc["embed"] * (math.sqrt(d) * conv(model.proj[m], inp) + positions(L, d, offset))
        lasts = []
        for t in mods:
            parts = [
                stack(model.cross[f"{s}->{t}"], z0[t], z0[s], future, shared, literal, sc["res"])
                for s in mods if s != t
            ]
            h = torch.cat(parts, -1)
            if reembed:
                h = sc["embed"] * (math.sqrt(2 * d) * h + positions(h.shape[0], 2 * d, offset))
            h = stack(model.memory[t], h, None, future, shared, literal, sc["res"])
            lasts.append(h[-1] if pooling == "last" else h.mean(0))
        last = torch.cat(lasts)
        p1, p2 = model.proj1, model.proj2
        proj = sc["out"] * torch.relu(last @ p1.weight.T + p1.bias) @ p2.weight.T + p2.bias + last
        preds.append(proj @ model.out_layer.weight.T + model.out_layer.bias)
    return torch.stack(preds)


CASES = {
    "reference": {},
    "no-future": {"future": False},
    "own-kv-norm": {"shared_kv_norm": False},
    "no-reembed-pos0": {"reembed": False, "position_offset": 0},
    "literal-residual-mean": {"literal_residual": True, "pooling": "mean"},
}
KEYS = {"future": "future", "shared_kv_norm": "shared", "reembed": "reembed", "position_offset": "offset",
        "literal_residual": "literal", "pooling": "pooling"}


def perturb_norms(model):
    """LayerNorms start at weight 1, bias 0, which would make every LayerNorm the same function: give each
    its own parameters, so a test sees which one normalises what (and that padded steps are re-zeroed)."""
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.LayerNorm):
                mod.weight.copy_(1 + 0.5 * torch.randn(mod.weight.shape, generator=g))
                mod.bias.copy_(0.5 * torch.randn(mod.bias.shape, generator=g))


@pytest.mark.parametrize("name", list(CASES))
def test_forward_equals_reference_statement(name):
    opts = CASES[name]
    torch.manual_seed(7)
    model = create_model("mult", DIMS, TASK, **SMALL, **opts).eval()
    perturb_norms(model)
    x = inputs()
    got = model(x).prediction
    want = reference(model, x, **{KEYS[k]: v for k, v in opts.items()})
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def layer_params(d):
    attn = 4 * d * d + 4 * d  # in_proj (3d x d + 3d) + out_proj (d x d + d)
    ffn = d * 4 * d + 4 * d + 4 * d * d + d
    return attn + ffn + 2 * 2 * d  # two LayerNorms (the query's one also normalises keys/values)


def test_parameter_count_at_the_reference_mosei_settings():
    dims = {"text": 300, "audio": 74, "visual": 35}
    d, layers, out = 30, 5, 1
    conv_ = (300 + 74 + 35) * d  # kernel 1, no bias
    cross = 6 * (layers * layer_params(d) + 2 * d)  # six directions, final LayerNorm each
    memory = 3 * (max(layers, 3) * layer_params(2 * d) + 2 * 2 * d)
    combined = 3 * 2 * d
    head = 2 * (combined * combined + combined) + combined * out + out
    expected = conv_ + cross + memory + head
    # the reference has no learned absent-modality tokens (models/base.py): count it without them, then the
    # default, which adds one D_m vector per modality
    model = create_model("mult", dims, sentiment_task(), absent="zeros")
    assert model.num_parameters() == expected == 1_073_731
    assert create_model("mult", dims, sentiment_task()).num_parameters() == expected + sum(dims.values())
    assert model.self_layers == 5 and len(model.memory["text"].layers) == 5 and len(model.cross["audio->text"].layers) == 5
    # options that change the count by a known amount
    own = create_model("mult", dims, sentiment_task(), shared_kv_norm=False, absent="zeros")
    assert own.num_parameters() - expected == 6 * layers * 2 * d
    three = create_model("mult", dims, sentiment_task(), self_layers=3, absent="zeros")
    assert expected - three.num_parameters() == 3 * 2 * layer_params(2 * d)


def test_defaults_dropouts_and_init():
    torch.manual_seed(0)
    model = create_model("mult", DIMS, TASK)
    assert model.d_model == 30 and model.cross["text->audio"].layers[0].attn.num_heads == 5
    p = {n: layer.attn.dropout for n, enc in model.cross.items() for layer in enc.layers[:1]}
    assert p == {"audio->text": 0.0, "visual->text": 0.0, "text->audio": 0.1, "visual->audio": 0.0,
                 "text->visual": 0.1, "audio->visual": 0.0}  # by key (source) modality, as the reference
    assert model.memory["text"].layers[0].attn.dropout == 0.1
    assert model.text_dropout.p == 0.25 and model.embed_dropout.p == 0.25
    assert model.cross["text->audio"].layers[0].res_dropout.p == 0.1
    assert model.cross["text->audio"].layers[0].ff[2].p == 0.1 and model.out_dropout.p == 0.0
    assert model.proj["text"].conv.bias is None and model.proj["text"].conv.kernel_size == (1,)
    assert model.cross["text->audio"].future and model.memory["text"].future
    layer = model.memory["audio"].layers[1]
    d = 60
    bound = math.sqrt(6 / (d + 3 * d))
    for lin in (layer.attn.q_proj, layer.attn.k_proj, layer.attn.v_proj):
        assert lin.weight.abs().max() <= bound and lin.weight.abs().max() > 0.9 * bound
        assert torch.all(lin.bias == 0)
    ff_bound = math.sqrt(6 / (d + 4 * d))
    # Xavier-uniform on both feed-forward weights: the max of 14,400 uniform draws is within 1 % of the bound
    # (PyTorch's default bound is 1 / sqrt(fan_in): 0.129 for ff[0], 0.065 for ff[3], against 0.141)
    for lin in (layer.ff[0], layer.ff[3]):
        assert lin.weight.abs().max() <= ff_bound and lin.weight.abs().max() > 0.99 * ff_bound
    assert torch.all(layer.ff[3].bias == 0) and torch.all(layer.attn.out_proj.bias == 0)
    assert layer.attn.out_proj.weight.abs().max() > 0.9 * math.sqrt(6 / (2 * d))
    torch.manual_seed(0)
    plain = create_model("mult", DIMS, TASK, init="torch")
    assert not torch.all(plain.memory["audio"].layers[1].attn.q_proj.bias == 0)
    with pytest.raises(ValueError):
        create_model("mult", DIMS, TASK, init="normal")
    with pytest.raises(ValueError):
        create_model("mult", DIMS, TASK, position_offset=2)


def test_text_input_dropout_only_on_text():
    torch.manual_seed(1)
    zero = dict(relu_dropout=0.0, res_dropout=0.0, embed_dropout=0.0, attn_dropout=0.0, out_dropout=0.0)
    model = create_model("mult", DIMS, TASK, **SMALL, **zero, text_dropout=0.5).train()
    x = inputs()
    a = model(x).prediction
    assert not torch.allclose(a, model(x).prediction)  # the text input is dropped out in training
    det = create_model("mult", DIMS, TASK, **SMALL, **zero).train()
    assert det.text_dropout.p == 0.0
    assert torch.allclose(det(x).prediction, det(x).prediction)
    model.eval()
    assert torch.allclose(model(x).prediction, model(x).prediction)


def test_future_mask_per_sample_lengths():
    from emofusion.models.mult import future_mask

    q = torch.tensor([[True, True, True, False], [True, True, False, False]])
    k = torch.tensor([[True, True, True, True, True], [True, True, True, False, False]])
    m = future_mask(q, k)
    assert m.shape == (2, 1, 4, 5)
    # sample 0: |5 - 3| = 2 -> key j allowed up to i + 2; sample 1: |3 - 2| = 1
    assert m[0, 0, 0].tolist() == [True, True, True, False, False]
    assert m[1, 0, 0].tolist() == [True, True, False, False, False]
    assert m[1, 0, 1].tolist() == [True, True, True, False, False]


def test_self_attention_depth_rule():
    for cross, want in ((1, 3), (2, 3), (3, 3), (4, 4), (6, 6)):
        m = create_model("mult", DIMS, TASK, d_model=6, num_heads=2, cross_layers=cross)
        assert m.self_layers == want and len(m.memory["text"].layers) == want  # max(layers, 3)
    assert create_model("mult", DIMS, TASK, d_model=6, num_heads=2, self_layers=2).self_layers == 2
    k = create_model("mult", DIMS, TASK, d_model=6, num_heads=2, kernel_size={"text": 3, "audio": 1, "visual": 5})
    assert [k.proj[m].conv.kernel_size[0] for m in DIMS] == [3, 1, 5]


def test_embedding_dropout_acts_on_the_embedded_sequence():
    torch.manual_seed(2)
    zero = dict(relu_dropout=0.0, res_dropout=0.0, attn_dropout=0.0, out_dropout=0.0, text_dropout=0.0)
    model = create_model("mult", DIMS, TASK, **SMALL, **zero, embed_dropout=0.5)
    values, mask = inputs()["audio"]
    clean = model.eval().embed(values, mask, "audio")
    dropped = model.train().embed(values, mask, "audio")
    real = mask.unsqueeze(-1).expand_as(clean) & (clean != 0)
    zeroed = dropped[real] == 0
    assert 0 < int(zeroed.sum()) < int(real.sum())  # some embedded values dropped, not all
    # the kept ones are scaled by 1 / (1 - p): dropout after scale + positions, not before the conv
    torch.testing.assert_close(dropped[real][~zeroed], 2 * clean[real][~zeroed])
    assert torch.all(dropped[~mask] == 0)


def test_returned_cross_attention_is_the_last_layers():
    torch.manual_seed(4)
    zero = dict(relu_dropout=0.0, res_dropout=0.0, attn_dropout=0.0, out_dropout=0.0, embed_dropout=0.0,
                text_dropout=0.0)
    model = create_model("mult", DIMS, TASK, **{**SMALL, "cross_layers": 3}, **zero, return_attention=True).eval()
    x = inputs()
    out = model(x)
    z0 = {m: model.embed(x[m][0], x[m][1], m) for m in DIMS}
    assert set(out.extras["cross_attention"]) == set(model.cross) and len(model.cross) == 6
    for name, w in out.extras["cross_attention"].items():
        s, t = name.split("->")
        _, weights = model.cross[name](z0[t], x[t][1], kv=z0[s], kv_mask=x[s][1], need_weights=True)
        assert len(weights) == 3
        torch.testing.assert_close(w, weights[-1])
        assert not torch.allclose(weights[0], weights[-1])


def test_attn_dropout_dict_must_name_exactly_the_sources_and_self():
    ok = {"text": 0.1, "audio": 0.0, "visual": 0.2, "self": 0.3}
    model = create_model("mult", DIMS, TASK, **SMALL, attn_dropout=ok)
    assert model is not None
    with pytest.raises(ValueError, match=r"missing \[\], unknown \['video'\]"):
        create_model("mult", DIMS, TASK, **SMALL, attn_dropout={**ok, "video": 0.1})
    with pytest.raises(ValueError, match=r"missing \['self'\], unknown \[\]"):
        create_model("mult", DIMS, TASK, **SMALL, attn_dropout={k: v for k, v in ok.items() if k != "self"})


def test_input_dropout_of_the_text_applies_to_text_only():
    """The reference drops the *text* input (``text_dropout``, default ``embed_dropout``) before its
    convolution; audio and visual inputs are not dropped there (only after the embedding)."""
    torch.manual_seed(0)
    model = create_model("mult", DIMS, TASK, **SMALL, embed_dropout=0.0, text_dropout=0.9)
    x = inputs()
    model.train()
    torch.manual_seed(1)
    train_out = {m: model.embed(*x[m], m) for m in DIMS}
    model.eval()
    eval_out = {m: model.embed(*x[m], m) for m in DIMS}
    for m in ("audio", "visual"):
        torch.testing.assert_close(train_out[m], eval_out[m])
    assert not torch.allclose(train_out["text"], eval_out["text"])


# ---------------------------------------------------------------------------------------------------------
# session 8 (complete mutant set of mult.py)
# ---------------------------------------------------------------------------------------------------------


def test_every_dropout_acts_where_the_reference_applies_it():
    """Text-input dropout before the conv, embedding dropout after scale + positions (and after the
    re-embedding of the self-attention input), residual dropout on the attention and the feed-forward terms,
    output dropout inside the residual projection: each module replaced by a distinct scaling."""
    torch.manual_seed(8)
    model = create_model("mult", DIMS, TASK, **SMALL).eval()
    perturb_norms(model)
    scales = {"text": 2.0, "embed": 1.5, "res": 1.25, "out": 3.0}
    model.text_dropout, model.embed_dropout, model.out_dropout = (Times(scales[k]) for k in ("text", "embed", "out"))
    for enc in [*model.cross.values(), *model.memory.values()]:
        for layer in enc.layers:
            layer.res_dropout = Times(scales["res"])
    x = inputs(seed=3)
    torch.testing.assert_close(model(x).prediction, reference(model, x, scales=scales), atol=1e-4, rtol=1e-4)


def test_padded_steps_are_zero_in_every_sequence_and_weights_only_on_request():
    torch.manual_seed(9)
    model = create_model("mult", DIMS, TASK, **SMALL).eval()
    perturb_norms(model)
    x = inputs(seed=4)
    out = model(x)
    for name, y in out.extras["cross_outputs"].items():
        t = name.split("->")[1]
        assert torch.all(y[~x[t][1]] == 0) and torch.all(y[x[t][1]] != 0), name
    z0 = {m: model.embed(*x[m], m) for m in DIMS}
    for m in DIMS:
        assert torch.all(z0[m][~x[m][1]] == 0)
    h = model.reembed_memory(torch.randn(2, 5, 2 * 6), x["text"][1])
    assert torch.all(h[~x["text"][1]] == 0) and torch.all(h[x["text"][1]] != 0)
    enc = model.cross["audio->text"]
    # one layer alone zeroes its padded query steps too, and returns weights only when asked
    y, w = enc.layers[0](z0["text"], x["text"][1], z0["audio"], x["audio"][1])
    assert w is None and torch.all(y[~x["text"][1]] == 0) and torch.all(y[x["text"][1]] != 0)
    ys, ws = enc(z0["text"], x["text"][1], kv=z0["audio"], kv_mask=x["audio"][1])
    assert ws == [None, None]
    _, ws = enc(z0["text"], x["text"][1], kv=z0["audio"], kv_mask=x["audio"][1], need_weights=True)
    assert all(w.shape == (2, 2, 5, 7) for w in ws)
    assert "cross_attention" not in out.extras  # return_attention is off by default


def test_temporal_conv_literal_with_a_wide_kernel_bias_and_padding():
    from emofusion.models.mult import TemporalConv

    torch.manual_seed(10)
    layer = TemporalConv(3, 4, kernel_size=5, bias=True)
    g = torch.Generator().manual_seed(1)
    values = torch.randn(2, 7, 3, generator=g)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    out = layer(values, mask)
    assert out.shape == (2, 7, 4)
    for b, n in enumerate((7, 4)):
        want = conv(layer, values[b, :n]) + layer.conv.bias
        torch.testing.assert_close(out[b, :n], want, atol=1e-6, rtol=1e-5)
    assert torch.all(out[1, 4:] == 0)  # padded outputs are zero (the bias would make them non-zero)
    plain = TemporalConv(3, 4)
    assert plain.conv.kernel_size == (1,) and plain.conv.bias is None and plain.conv.padding == (0,)
    for bad in (0, 2, -1, -3):
        with pytest.raises(ValueError, match="positive odd"):
            TemporalConv(3, 4, kernel_size=bad)


def test_future_mask_and_positions_follow_the_inputs_device_and_dtype():
    from emofusion.models.mult import future_mask, reference_positions

    q = torch.tensor([[True, True, False]])
    k = torch.tensor([[True, True, True, True]])
    m = future_mask(q.to("meta"), k.to("meta"))  # the meta device shows a CPU tensor sneaking in
    assert m.device.type == "meta" and m.shape == (1, 1, 3, 4)
    assert reference_positions(3, 4).dtype == torch.float32
    torch.testing.assert_close(reference_positions(3, 4), positions(3, 4))
    assert reference_positions(2, 4, dtype=torch.float64).dtype == torch.float64


def test_needs_two_modalities_checks_inputs_and_bounds_regression():
    from emofusion.tasks import sentiment_task

    with pytest.raises(ValueError, match="at least 2 modalities"):
        create_model("mult", {"audio": 4}, TASK, **SMALL)
    two = create_model("mult", {"audio": 4, "visual": 3}, TASK, **SMALL)
    assert set(two.cross) == {"audio->visual", "visual->audio"}
    torch.manual_seed(12)
    model = create_model("mult", DIMS, sentiment_task(), **SMALL).eval()
    x = inputs()
    with torch.no_grad():
        model.out_layer.bias.fill_(50.0)
    assert torch.all(model(x).prediction == 3.0)  # bounded to the task's label range
    bad = dict(x)
    bad["audio"] = (x["audio"][0][..., :3], x["audio"][1])
    with pytest.raises(ValueError, match="expects values"):
        model(bad)
    # a sample without any audio step gets the learned absent token (check_inputs), not an empty sequence
    none = dict(x)
    none["audio"] = (x["audio"][0], torch.zeros_like(x["audio"][1]))
    with torch.no_grad():
        model.out_layer.bias.zero_()
        zeros = create_model("mult", DIMS, sentiment_task(), **SMALL, absent="zeros").eval()
        zeros.load_state_dict({k: v for k, v in model.state_dict().items() if "absent" not in k})
        a = model(none).prediction
        assert not torch.allclose(a, zeros(none).prediction)
        filled = dict(none)
        vals = none["audio"][0].clone()
        vals[:, 0] = model.absent_tokens[1]
        first = torch.zeros_like(none["audio"][1])
        first[:, 0] = True
        filled["audio"] = (vals, first)
        torch.testing.assert_close(a, zeros(filled).prediction)
