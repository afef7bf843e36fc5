"""Paper 002 eq. 9-17 re-implemented literally (per sample, per head, per pair (i, j)) and compared with the
delta-attention model: Conv1D (eq. 9), delta self-attention with RPE_ij = (x_j - x_i) . w_{clip(j-i)} inside
the 1/sqrt(d_k) scaling and a |i - j| <= w window (eq. 10-12), the DCCA conv encoders, attention over the
time-concatenated fused sequence with the skip connection from Y_M (eq. 14-16), per-modality pooling and the
linear head (eq. 17)."""

from __future__ import annotations

import math

import pytest
import torch

from emofusion.data.batch import ModalityTensor
from emofusion.models import create_model
from emofusion.tasks import classification_task
from helpers import Times, random_inputs

DIMS = {"text": 5, "audio": 4, "visual": 3}
LENGTHS = {"text": [4, 2], "audio": [7, 5], "visual": [3, 6]}
TASK = classification_task(("a", "b", "c"))
SMALL = dict(d_ch=6, num_heads=2, d_k=3, d_o=5, d_r=3, dcca_hidden=4, d_t=4, window=2, max_relative_position=3,
             dropout=0.0, kernel_size=3, dcca_kernel=3, cca_weight=0.0)


def inputs(seed=0):
    return random_inputs(LENGTHS, DIMS, seed)


def conv(layer, x):
    """'same' Conv1D over the real steps x [L, C_in] (zeros outside)."""
    W, b = layer.conv.weight, layer.conv.bias  # [C_out, C_in, k]
    k = W.shape[2]
    L = x.shape[0]
    out = []
    for t in range(L):
        acc = torch.zeros(W.shape[0]) if b is None else b.clone()
        for j in range(k):
            s = t + j - k // 2
            if 0 <= s < L:
                acc = acc + W[:, :, j] @ x[s]
        out.append(acc)
    return torch.stack(out)


def delta_attention(att, x):
    """eq. 10-12 for one sample's real steps x [L, d_ch]."""
    mha = att.attn
    H, dk, dv = mha.num_heads, mha.head_dim, mha.value_head_dim
    q = x @ mha.q_proj.weight.T + mha.q_proj.bias
    k = x @ mha.k_proj.weight.T + mha.k_proj.bias
    v = x @ mha.v_proj.weight.T + mha.v_proj.bias
    L, K = x.shape[0], att.max_offset
    heads = []
    for h in range(H):
        qh, kh, vh = q[:, h * dk : (h + 1) * dk], k[:, h * dk : (h + 1) * dk], v[:, h * dv : (h + 1) * dv]
        rows = []
        for i in range(L):
            logits = []
            for j in range(L):
                if att.window is not None and abs(i - j) > att.window:
                    logits.append(torch.tensor(float("-inf")))
                    continue
                rpe = (x[j] - x[i]) @ att.rel_pos[:, min(max(j - i, -K), K) + K] if att.use_delta else 0.0
                logits.append((qh[i] @ kh[j] + rpe) / math.sqrt(dk))
            a = torch.softmax(torch.stack(logits), 0)
            rows.append(sum(a[j] * vh[j] for j in range(L)))
        heads.append(torch.stack(rows))
    return torch.cat(heads, 1) @ mha.out_proj.weight.T + mha.out_proj.bias


def layer_norm(ln, x):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def reference(model, x, drop=1.0):
    """``drop``: the factor of a :class:`Times` stand-in for the model's dropout module (1: none)."""
    preds, ys_all, yhat_all = [], [], []
    for b in range(2):
        ys, yhats = {}, {}
        for m in DIMS:
            L = LENGTHS[m][b]
            enc = model.unimodal[m]
            h = conv(enc.conv, x[m][0][b, :L])  # eq. 9
            ys[m] = layer_norm(enc.norm, delta_attention(enc.final, h))
            st = model.dcca_enc[m]
            yhats[m] = conv(st.second, torch.relu(conv(st.first, ys[m])))
        fused = torch.cat([yhats[m] for m in DIMS])  # along time
        skip = torch.cat([ys[m] @ model.skip[m].weight.T + model.skip[m].bias for m in DIMS])
        mha = model.fused_attn
        q = fused @ mha.q_proj.weight.T + mha.q_proj.bias
        k = fused @ mha.k_proj.weight.T + mha.k_proj.bias
        v = fused @ mha.v_proj.weight.T + mha.v_proj.bias
        a = torch.softmax(q @ k.T / math.sqrt(mha.head_dim), -1)
        z = layer_norm(model.fused_norm, drop * ((a @ v) @ mha.out_proj.weight.T + mha.out_proj.bias) + skip)
        pooled, start = [], 0
        for m in DIMS:
            L = LENGTHS[m][b]
            pooled.append(z[start : start + L].mean(0))
            start += L
        if model.fused_pooling == "sequence":
            pooled = [z.mean(0)]
        preds.append(model.head(torch.cat(pooled)[None])[0])
        ys_all.append(ys)
        yhat_all.append(yhats)
    return torch.stack(preds), ys_all, yhat_all


@pytest.mark.parametrize(
    "options", [{}, {"fused_pooling": "sequence", "window": "inf"}, {"use_delta": False}, {"d_k": 4, "window": 0}],
    ids=["window2", "unlimited-window", "no-delta", "d_k-not-d_ch-over-heads-window0"],
)
def test_forward_equals_literal_equations(options):
    torch.manual_seed(5)
    model = create_model("delta_attention", DIMS, TASK, **{**SMALL, **options}).eval()
    with torch.no_grad():
        if model.unimodal["text"].final.rel_pos is not None:
            for m in DIMS:
                model.unimodal[m].final.rel_pos.mul_(4.0)  # make the delta term large
    x = inputs()
    out = model(x)
    pred, ys, yhats = reference(model, x)
    for b in range(2):
        for m in DIMS:
            L = LENGTHS[m][b]
            torch.testing.assert_close(out.extras["representations"][m][b, :L], ys[b][m], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(out.extras["correlated"][m][b, :L], yhats[b][m], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.prediction, pred, atol=1e-5, rtol=1e-4)


def test_fused_dropout_acts_on_the_attention_term_before_the_skip():
    torch.manual_seed(5)
    model = create_model("delta_attention", DIMS, TASK, **SMALL).eval()
    model.dropout = Times(2.5)
    x = inputs(seed=3)
    pred, _, _ = reference(model, x, drop=2.5)
    torch.testing.assert_close(model(x).prediction, pred, atol=1e-5, rtol=1e-4)


def test_relative_position_term_is_scaled_and_signed():
    """RPE alone: with W_Q = 0 the logits are exactly RPE / sqrt(d_k); a wrong scale or sign changes them."""
    from emofusion.models.delta_attention import DeltaSelfAttention

    torch.manual_seed(0)
    att = DeltaSelfAttention(4, num_heads=1, d_k=2, window=None, max_relative_position=2).eval()
    with torch.no_grad():
        att.attn.q_proj.weight.zero_()
        att.attn.q_proj.bias.zero_()
        att.rel_pos.mul_(3.0)
    x = torch.randn(1, 6, 4)
    _, w = att(x, torch.ones(1, 6, dtype=torch.bool), need_weights=True)
    rpe = torch.zeros(6, 6)
    for i in range(6):
        for j in range(6):
            rpe[i, j] = (x[0, j] - x[0, i]) @ att.rel_pos[:, min(max(j - i, -2), 2) + 2]
    torch.testing.assert_close(w[0, 0], torch.softmax(rpe / math.sqrt(2), -1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(att.relative_logits(x)[0], rpe, atol=1e-6, rtol=1e-5)
    assert att.rel_pos.shape == (4, 5)


def test_skip_connection_and_sizes():
    torch.manual_seed(1)
    model = create_model("delta_attention", DIMS, TASK, **SMALL).eval()
    x = inputs()
    base = model(x).prediction
    with torch.no_grad():
        for m in DIMS:
            model.skip[m].weight.zero_()
            model.skip[m].bias.zero_()
    assert not torch.allclose(model(x).prediction, base, atol=1e-4)  # the skip term is used
    assert model.head.in_features == 3 * 4 and model.fused_attn.head_dim == 4
    assert model.unimodal["text"].final.attn.head_dim == 3 and model.unimodal["text"].final.attn.value_head_dim == 6
    seq = create_model("delta_attention", DIMS, TASK, **{**SMALL, "fused_pooling": "sequence", "head_hidden": 7})
    assert seq.head[0].in_features == 4 and seq.head[3].out_features == 3


def test_variants_literal():
    torch.manual_seed(2)
    x = inputs()
    dc = create_model("delta_attention", DIMS, TASK, variant="dcca", **SMALL).eval()
    out = dc(x)
    _, ys, yhats = reference_dcca(dc, x)
    pooled = torch.stack([torch.cat([yhats[b][m].mean(0) for m in DIMS]) for b in range(2)])
    torch.testing.assert_close(out.prediction, pooled @ dc.dcca_head.weight.T + dc.dcca_head.bias, atol=1e-5,
                               rtol=1e-4)
    uni = create_model("delta_attention", DIMS, TASK, variant="unimodal", modality="audio", **SMALL).eval()
    out = uni(x)
    ys_a = [ys_of(uni, "audio", x, b).mean(0) for b in range(2)]
    want = torch.stack(ys_a) @ uni.unimodal_head.weight.T + uni.unimodal_head.bias
    torch.testing.assert_close(out.prediction, want, atol=1e-5, rtol=1e-4)


def ys_of(model, m, x, b):
    L = LENGTHS[m][b]
    enc = model.unimodal[m]
    return layer_norm(enc.norm, delta_attention(enc.final, conv(enc.conv, x[m][0][b, :L])))


def reference_dcca(model, x):
    ys, yhats = [], []
    for b in range(2):
        y = {m: ys_of(model, m, x, b) for m in DIMS}
        st = model.dcca_enc
        yhats.append({m: conv(st[m].second, torch.relu(conv(st[m].first, y[m]))) for m in DIMS})
        ys.append(y)
    return None, ys, yhats


def test_staged_inputs_split_correlated_and_representation():
    torch.manual_seed(3)
    d = {"text": 3 + 5, "audio": 3 + 5}
    model = create_model("delta_attention", d, TASK, input_stage="correlated", **SMALL).eval()
    g = torch.Generator().manual_seed(0)
    v = {m: torch.randn(2, 4, 8, generator=g) for m in d}
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    out = model({m: ModalityTensor(v[m], mask) for m in d})
    torch.testing.assert_close(out.extras["correlated"]["text"][1], v["text"][1, :, :3])
    torch.testing.assert_close(out.extras["representations"]["audio"][1], v["audio"][1, :, 3:])
    assert torch.all(out.extras["representations"]["audio"][0, 3] == 0)


def test_extra_layers_are_post_norm_transformer_layers():
    torch.manual_seed(6)
    model = create_model("delta_attention", DIMS, TASK, **{**SMALL, "num_layers": 2}).eval()
    model.unimodal["audio"].dropout = Times(1.5)  # on the attention and the feed-forward terms
    x = inputs(seed=1)
    ys = model(x).extras["representations"]
    for b in range(2):
        L = LENGTHS["audio"][b]
        enc = model.unimodal["audio"]
        h = conv(enc.conv, x["audio"][0][b, :L])
        blk = enc.blocks[0]
        h = layer_norm(blk["norm1"], h + 1.5 * delta_attention(blk["attn"], h))
        ff = blk["ff"]
        f = torch.relu(h @ ff[0].weight.T + ff[0].bias) @ ff[2].weight.T + ff[2].bias
        h = layer_norm(blk["norm2"], h + 1.5 * f)
        want = layer_norm(enc.norm, delta_attention(enc.final, h))
        torch.testing.assert_close(ys["audio"][b, :L], want, atol=1e-5, rtol=1e-4)


def test_every_encoder_option_reaches_the_encoders():
    opts = dict(d_ch=6, num_heads=3, d_k=2, d_o=7, kernel_size={"text": 1, "audio": 5, "visual": 3}, window=3,
                use_delta=True, num_layers=2, dropout=0.3, max_relative_position=9)
    model = create_model("delta_attention", DIMS, TASK, **opts)
    for m in DIMS:
        enc = model.unimodal[m]
        assert enc.conv.conv.out_channels == 6 and enc.conv.conv.kernel_size == (opts["kernel_size"][m],)
        assert enc.final.attn.num_heads == 3 and enc.final.attn.head_dim == 2 and enc.final.d_k == 2
        assert enc.norm.normalized_shape == (7,) and enc.final.window == 3 and enc.final.max_offset == 3
        assert len(enc.blocks) == 1 and enc.dropout.p == 0.3 and enc.final.rel_pos is not None
        # the dropout option reaches every attention (eq. 10-12 layers and the extra layers) and the conv bias is on
        assert enc.final.attn.dropout == 0.3 and enc.blocks[0]["attn"].attn.dropout == 0.3
        assert enc.conv.conv.bias is not None
    assert model.fused_attn.dropout == 0.3 and model.dropout.p == 0.3
    inf = create_model("delta_attention", DIMS, TASK, **{**opts, "window": "inf", "use_delta": False})
    assert inf.unimodal["audio"].final.window is None and inf.unimodal["audio"].final.max_offset == 9
    assert inf.unimodal["audio"].final.rel_pos is None


def test_returned_delta_attention_is_the_last_layer_and_reconstruction_is_literal():
    torch.manual_seed(7)
    opts = {**SMALL, "num_layers": 2, "recon_weight": 0.5, "return_attention": True}
    model = create_model("delta_attention", DIMS, TASK, **opts).eval()
    x = inputs(seed=2)
    out = model(x)
    # last (eq. 12) layer's weights, not the first block's
    for m in DIMS:
        enc = model.unimodal[m]
        h = enc.conv(x[m][0], x[m][1])
        h1, _ = enc.blocks[0]["attn"](h, x[m][1], False)
        h = enc.blocks[0]["norm1"](h + h1)
        h = enc.blocks[0]["norm2"](h + enc.blocks[0]["ff"](h)) * x[m][1].unsqueeze(-1)
        _, w_last = enc.final(h, x[m][1], True)
        torch.testing.assert_close(out.extras["delta_attention"][m], w_last)
    # reconstruction aux: recon_weight * mean over modalities of the masked mean squared error to Y_M
    errs = []
    for m in DIMS:
        ys, yh = out.extras["representations"][m], out.extras["correlated"][m]
        rec = model.dcca_dec[m](yh, x[m][1])
        per_sample = []
        for b in range(2):
            L = LENGTHS[m][b]
            per_sample.append(((rec[b, :L] - ys[b, :L]) ** 2).mean(0))
        errs.append(torch.stack(per_sample).mean())
    torch.testing.assert_close(out.aux_losses["reconstruction"], 0.5 * torch.stack(errs).mean())


def test_delta_encoder_defaults():
    from emofusion.models.delta_attention import DeltaEncoder

    enc = DeltaEncoder(5)  # documented defaults of the building block (the model passes its own sizes)
    assert enc.conv.conv.out_channels == 32 and enc.conv.conv.kernel_size == (3,) and enc.norm.normalized_shape == (64,)
    assert enc.final.attn.num_heads == 4 and enc.final.d_k == 32 and enc.final.window == 8 and len(enc.blocks) == 0
    assert enc.final.rel_pos is not None and enc.dropout.p == 0.1
    assert DeltaEncoder(5, window="inf").final.max_offset == 32


def test_saved_stage_outputs_round_trip(tmp_path):
    import numpy as np

    from emofusion.data.batch import Sample
    from emofusion.data.registry import load_dataset
    from emofusion.models.delta_attention import save_stage_outputs

    rec = {s: [Sample(f"{s}{i}", {"text": np.full((2, 3), i, np.float32)}, np.array([i], np.int64), "spk")
               for i in range(2)] for s in ("train", "val", "test")}
    # a str path works too, and its folders are created
    path = save_stage_outputs(str(tmp_path / "stages" / "one" / "stage.pt"), TASK, {"text": 3}, rec)
    bundle = load_dataset(f"paper002-saved:{path}")
    assert [s.id for s in bundle.test] == ["test0", "test1"] and bundle.modality_dims == {"text": 3}
    np.testing.assert_array_equal(bundle.train[1].features["text"], rec["train"][1].features["text"])
    with pytest.raises(ValueError, match="takes no options"):
        load_dataset(f"paper002-saved:{path}", n_train=3)
    with pytest.raises(FileNotFoundError):
        load_dataset(f"paper002-saved:{tmp_path / 'missing.pt'}")


def test_table1_settings_are_the_papers():
    from emofusion.models.delta_attention import TABLE1

    # paper 002, Table 1 (Adam): epochs, learning rate, mini-batch size, weight decay per module
    paper = {"selfattn_text": (10, 1e-6, 32, 1e-4), "selfattn_visual": (10, 1e-5, 8, 1e-4),
             "selfattn_audio": (10, 1e-5, 8, 1e-4), "dcca": (100, 2e-4, 4, 1e-6), "crossattn": (5, 1e-5, 8, 1e-6)}
    assert {k: (v["max_epochs"], v["lr"], v["batch_size"], v["weight_decay"]) for k, v in TABLE1.items()} == paper


def test_model_defaults_are_the_documented_ones():
    from emofusion.tasks import emotion_intensity_task

    m = create_model("delta_attention", DIMS, emotion_intensity_task())
    enc = m.unimodal["audio"]
    assert enc.conv.conv.out_channels == 64 and enc.final.attn.num_heads == 4 and enc.norm.normalized_shape == (128,)
    assert enc.final.window == 8 and enc.final.d_k == 64 and len(enc.blocks) == 0 and enc.dropout.p == 0.1
    assert m.d_r == 16 and m.d_t == 32 and m.cca_weight == 0.1 and m.recon_weight == 0.0
    assert m.cca_pairing == "frames" and m.fused_pooling == "modality" and m.fused_attn.num_heads == 1
    assert m.cca.momentum == 0.9 and m.cca.eps == 1e-3 and not m.eq17


@pytest.mark.parametrize("variant", ["full", "dcca", "unimodal"])
def test_eq17_softmax_head_on_intensities(variant):
    from emofusion.tasks import emotion_intensity_task

    torch.manual_seed(4)
    task = emotion_intensity_task()
    opts = {**SMALL, "variant": variant, **({"modality": "audio"} if variant == "unimodal" else {})}
    model = create_model("delta_attention", DIMS, task, eq17=True, **opts).eval()
    plain = create_model("delta_attention", DIMS, task, **opts).eval()
    plain.load_state_dict(model.state_dict())
    x = inputs()
    out = model(x)
    logits = out.extras["class_logits"]
    assert logits.shape == (2, 6) and model.default_loss == "dominant_ce"
    torch.testing.assert_close(out.prediction, torch.softmax(logits, -1))  # eq. 17
    # the same linear head: the regression model bounds the very logits the softmax head normalises
    torch.testing.assert_close(plain(x).prediction, plain.bound_output(logits))
    assert float(plain(x).prediction.min()) >= 0.0 and float(plain(x).prediction.max()) <= 3.0
    if variant == "full":
        want, _, _ = reference(model, x)
        torch.testing.assert_close(logits, want, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="eq17"):
        create_model("delta_attention", DIMS, classification_task(("a", "b")), eq17=True, **opts)


def test_stage_outputs_are_cut_back_per_sample_in_order():
    import numpy as np

    from emofusion.data.batch import Sample
    from emofusion.models.delta_attention import _stage_outputs

    g = np.random.default_rng(0)
    samples = [Sample(f"s{i}", {"audio": g.normal(size=(n, 4)).astype(np.float32)}, np.zeros(1), "spk")
               for i, n in enumerate([3, 5, 2, 4, 1])]
    out = _stage_outputs(lambda inp: {"audio": inp["audio"].values * 2.0}, samples, ["audio"], batch_size=2)
    assert [s.id for s in out] == [s.id for s in samples]
    for s, o in zip(samples, out):
        assert o.features["audio"].dtype == np.float32
        np.testing.assert_array_equal(o.features["audio"], 2.0 * s.features["audio"])


@pytest.mark.parametrize("stage, width", [("representation", 5), ("correlated", 3 + 5)])
def test_staged_inputs_ignore_nan_and_inf_padding_in_outputs_and_gradients(stage, width):
    # saved stage outputs are padded per batch; a NaN/inf there (a masked product would give NaN * 0 = NaN)
    # must change neither the prediction nor any gradient
    d = {"text": width, "audio": width}
    g = torch.Generator().manual_seed(2)
    v = {m: torch.randn(2, 5, width, generator=g) for m in d}
    mask = {"text": torch.tensor([[True] * 3 + [False] * 2, [True] * 5]),
            "audio": torch.tensor([[True] * 5, [True, True] + [False] * 3])}
    fills = {"text": torch.nan, "audio": torch.inf}
    runs = []
    for dirty in (False, True):
        torch.manual_seed(3)
        model = create_model("delta_attention", d, TASK, input_stage=stage, **{**SMALL, "cca_weight": 0.1}).train()
        x = {m: ModalityTensor(torch.where(mask[m].unsqueeze(-1), v[m], fills[m]) if dirty else
                               v[m] * mask[m].unsqueeze(-1), mask[m]) for m in d}
        out = model(x)
        loss = out.prediction.square().sum() + sum(out.aux_losses.values())
        loss.backward()
        runs.append((out.prediction.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                               if p.grad is not None}))
    torch.testing.assert_close(runs[1][0], runs[0][0])
    assert runs[1][1].keys() == runs[0][1].keys() and runs[0][1]
    for name, grad in runs[1][1].items():
        assert torch.isfinite(grad).all(), name
        torch.testing.assert_close(grad, runs[0][1][name], msg=name)


# ---------------------------------------------------------------------------------------------------------
# session 8 (complete mutant set of delta_attention.py)
# ---------------------------------------------------------------------------------------------------------


def test_window_values():
    from emofusion.models.delta_attention import _parse_window

    assert _parse_window(3) == 3 and _parse_window("3") == 3 and _parse_window(2.0) == 2
    assert _parse_window(0) == 0 and _parse_window(0.0) == 0  # a window of 0: every step attends to itself
    for unlimited in (None, "inf", "None", "FULL", float("inf")):
        assert _parse_window(unlimited) is None
    with pytest.raises(ValueError, match=">= 0"):
        _parse_window(-1)


def test_delta_self_attention_defaults_init_and_weights_only_on_request():
    from emofusion.models.delta_attention import DeltaSelfAttention

    att = DeltaSelfAttention(6)
    mha = att.attn
    assert mha.num_heads == 4 and mha.head_dim == 6 and mha.value_head_dim == 6 and mha.out_proj.out_features == 6
    assert att.window is None and att.max_offset == 32 and att.rel_pos.shape == (6, 65) and mha.dropout == 0.0
    # W_RelPos starts as N(0, 1 / d_ch): 64 x 65 draws give its standard deviation to within ~1 %
    torch.manual_seed(0)
    big = DeltaSelfAttention(64, window=None)
    assert 0.95 / 8 < float(big.rel_pos.std()) < 1.05 / 8
    x = torch.randn(2, 5, 6)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    out, w = att(x, mask)
    assert w is None and out.shape == (2, 5, 6)
    out2, w2 = att(x, mask, need_weights=True)
    torch.testing.assert_close(out2, out, atol=1e-5, rtol=1e-5)
    assert w2.shape == (2, 4, 5, 5)


def test_encoder_weights_per_layer_padded_zeros_and_conv_stack_default():
    from emofusion.models.delta_attention import ConvStack, DeltaEncoder

    torch.manual_seed(3)
    enc = DeltaEncoder(4, d_ch=6, d_out=5, num_heads=2, d_k=3, window=2, num_layers=3, dropout=0.0).eval()
    x = torch.randn(2, 6, 4)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    y, ws = enc(x, mask)
    assert ws == [None, None, None]
    assert torch.all(y[1, 4:] == 0) and torch.all(y[mask] != 0)  # Y_M is zero at padded steps
    _, ws = enc(x, mask, True)
    assert len(ws) == 3 and all(w.shape == (2, 2, 6, 6) for w in ws)
    assert not torch.allclose(ws[1], ws[2])
    stack = ConvStack(2, 3, 4)
    assert stack.first.conv.kernel_size == (3,) and stack.second.conv.kernel_size == (3,)


def test_returned_attention_of_three_layers_and_the_fused_attention():
    torch.manual_seed(8)
    model = create_model("delta_attention", DIMS, TASK, **{**SMALL, "num_layers": 3, "return_attention": True}).eval()
    x = inputs(seed=4)
    out = model(x)
    for m in DIMS:
        _, ws = model.unimodal[m](x[m][0], x[m][1], True)
        torch.testing.assert_close(out.extras["delta_attention"][m], ws[2])
        assert not torch.allclose(out.extras["delta_attention"][m], ws[1])
    # the fused attention's weights: softmax(Q K^T / sqrt(d)) over the real steps of the fused sequence
    w = out.extras["fused_attention"]
    yh = out.extras["correlated"]
    mha = model.fused_attn
    for b in range(2):
        fused = torch.cat([yh[m][b, : LENGTHS[m][b]] for m in DIMS])
        q = fused @ mha.q_proj.weight.T + mha.q_proj.bias
        k = fused @ mha.k_proj.weight.T + mha.k_proj.bias
        want = torch.softmax(q @ k.T / math.sqrt(mha.head_dim), -1)
        real = torch.cat([x[m][1][b] for m in DIMS])
        got = w[b, 0][real][:, real]
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    plain = create_model("delta_attention", DIMS, TASK, **SMALL).eval()(x)
    assert "delta_attention" not in plain.extras and "fused_attention" not in plain.extras


def test_fuse_zeroes_padded_steps_and_returns_weights_only_on_request():
    torch.manual_seed(9)
    model = create_model("delta_attention", DIMS, TASK, **SMALL).eval()
    x = inputs(seed=5)
    masks = {m: x[m][1] for m in DIMS}
    ys, _ = model.encode_unimodal(x)
    yhats = model.encode_dcca(ys, masks)
    z, mask, w = model.fuse(yhats, ys, masks)
    assert w is None and torch.equal(mask, torch.cat([masks[m] for m in DIMS], 1))
    assert torch.all(z[~mask] == 0) and torch.all(z[mask] != 0)
    assert model.fuse(yhats, ys, masks, need_weights=True)[2].shape == (2, 1, mask.shape[1], mask.shape[1])


def test_correlations_regularise_in_float64_on_the_inputs_device():
    from emofusion.models.delta_attention import correlations_from_covariances

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(40, 3, generator=g, dtype=torch.float64), torch.randn(40, 2, generator=g, dtype=torch.float64)
    b = b + a[:, :2]
    s11, s22, s12 = a.T @ a / 39, b.T @ b / 39, a.T @ b / 39
    eps = 1 / 3  # not a float32 number: a float32 identity would round it
    got = correlations_from_covariances(s11, s22, s12, eps)
    want = correlations_from_covariances(s11 + eps * torch.eye(3, dtype=torch.float64),
                                         s22 + eps * torch.eye(2, dtype=torch.float64), s12, 0.0)
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-14)
    meta = correlations_from_covariances(s11.to("meta"), s22.to("meta"), s12.to("meta"))
    assert meta.device.type == "meta" and meta.shape == (2,)


def test_canonical_correlations_need_two_samples():
    from emofusion.models.delta_attention import canonical_correlations

    two = canonical_correlations(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([[0.0], [2.0]]), eps=1e-6)
    assert two.shape == (1,) and float(two[0]) > 0.99  # two points always correlate perfectly
    with pytest.raises(ValueError, match="at least 2 samples"):
        canonical_correlations(torch.ones(1, 2), torch.ones(1, 1))


def test_running_cca_defaults_state_and_small_batches():
    from emofusion.models.delta_attention import RunningCCA, canonical_correlations

    cca = RunningCCA(2, 3)
    assert cca.momentum == 0.9 and cca.eps == 1e-3
    # the running sums are not saved (a fresh estimate builds up in a few steps)
    assert not any(k.startswith(("c11", "c22", "c12", "n_")) for k in cca.state_dict())
    model = create_model("delta_attention", DIMS, TASK, **SMALL)
    assert not [k for k in model.state_dict() if k.startswith("cca.")]
    g = torch.Generator().manual_seed(1)
    v1, v2 = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    # exactly two samples (momentum 0) are enough for a correlation
    plain = RunningCCA(2, 3, momentum=0.0).train()
    torch.testing.assert_close(plain([v1, v2]), canonical_correlations(v1, v2).mean())
    assert all(torch.all(getattr(plain, f"{n}_0") == 0) for n in ("c11", "c22", "c12", "n"))  # keeps no state
    # one sample: nothing to correlate yet (0); no pair of views: 0
    assert float(RunningCCA(2, 3).train()([v1[:1], v2[:1]])) == 0.0
    assert float(RunningCCA(1, 3)([v1])) == 0.0


def test_model_defaults_of_the_dcca_and_encoder_options():
    from emofusion.tasks import emotion_intensity_task

    m = create_model("delta_attention", DIMS, emotion_intensity_task())
    assert m.dcca_enc["audio"].first.conv.out_channels == 32 and m.dcca_enc["audio"].second.conv.out_channels == 16
    assert m.dcca_task_grad is True and not m.return_attention and not hasattr(m, "dcca_dec")
    assert m.unimodal["audio"].final.attn.head_dim == 64
    inf = create_model("delta_attention", DIMS, emotion_intensity_task(), window="inf")
    assert inf.unimodal["audio"].final.max_offset == 32 and inf.unimodal["audio"].final.rel_pos.shape == (64, 65)
    rec = create_model("delta_attention", DIMS, TASK, **{**SMALL, "recon_weight": 0.5})
    names = [n for n, _ in rec.named_parameters()]
    assert any(n.startswith("dcca_dec.text.") for n in names)  # the decoders are trained parameters


def test_eq17_needs_segment_level_intensities():
    from emofusion.tasks import MOSEI_EMOTIONS, TaskSpec

    seq = TaskSpec("emotion_intensity", tuple(MOSEI_EMOTIONS), label_range=(0.0, 3.0), sequence_labels=True)
    with pytest.raises(ValueError, match="segment-level"):
        create_model("delta_attention", DIMS, seq, eq17=True, **SMALL)


def test_utterance_and_frame_pairing_literal():
    torch.manual_seed(10)
    x = inputs(seed=6)
    masks = {m: x[m][1] for m in DIMS}
    g = torch.Generator().manual_seed(2)
    yhats = {m: torch.randn(2, x[m][0].shape[1], 3, generator=g) for m in DIMS}
    utt = create_model("delta_attention", DIMS, TASK, **{**SMALL, "cca_pairing": "utterance"})
    views = utt.cca_views(yhats, masks)
    for v, m in zip(views, DIMS):
        want = torch.stack([yhats[m][b, : LENGTHS[m][b]].mean(0) for b in range(2)])
        torch.testing.assert_close(v, want)
    fr = create_model("delta_attention", DIMS, TASK, **SMALL)  # frames: the default
    views = fr.cca_views(yhats, masks)
    for v, m in zip(views, DIMS):
        rows = []
        for b in range(2):
            n = max(LENGTHS[k][b] for k in DIMS)  # the sample's longest modality
            lm = LENGTHS[m][b]
            rows += [yhats[m][b, t * lm // n] for t in range(n)]
        torch.testing.assert_close(v, torch.stack(rows))
    # a sample missing a modality (absent="zeros") has no common frame: only the other sample's frames count
    # (whichever modality it misses)
    n1 = max(LENGTHS[k][1] for k in DIMS)
    for gone in DIMS:
        empty = dict(masks)
        empty[gone] = masks[gone].clone()
        empty[gone][0] = False
        views = fr.cca_views(yhats, empty)
        assert all(v.shape == (n1, 3) for v in views), gone
        torch.testing.assert_close(views[1], torch.stack([yhats["audio"][1, t * 5 // n1] for t in range(n1)]))
    # an empty batch gives empty views
    none = fr.cca_views({m: torch.zeros(0, 0, 3) for m in DIMS}, {m: torch.zeros(0, 0, dtype=torch.bool) for m in DIMS})
    assert all(v.shape == (0, 3) for v in none)


def test_cca_objective_with_two_one_and_no_common_frames():
    torch.manual_seed(11)
    opts = {**SMALL, "cca_weight": 0.1}
    two = create_model("delta_attention", {"text": 5, "audio": 4}, TASK, **opts).train()
    x = inputs(seed=7)
    out = two({m: x[m] for m in ("text", "audio")})
    assert "cca" in out.aux_losses and "cca_correlation" in out.extras  # two modalities are enough
    one = create_model("delta_attention", {"audio": 4}, TASK, **opts).train()
    out = one({"audio": x["audio"]})
    assert "cca" not in out.aux_losses and "cca_correlation" not in out.extras
    # after a batch has filled the running sums, a batch with a single common frame still gets a gradient
    model = create_model("delta_attention", DIMS, TASK, absent="zeros", **opts).train()
    model(x)
    single = {m: (v[:1, :1], mk[:1, :1]) for m, (v, mk) in x.items()}
    out = model(single)
    assert out.aux_losses["cca"].requires_grad and float(out.extras["cca_correlation"]) > 0
    # no common frame at all (every sample lacks visual frames): no CCA term
    noframe = dict(x)
    noframe["visual"] = (x["visual"][0], torch.zeros_like(x["visual"][1]))
    out = model(noframe)
    assert "cca" not in out.aux_losses and "cca_correlation" not in out.extras


def test_dcca_task_gradient_option():
    torch.manual_seed(12)
    x = inputs()
    for flag in (True, False):
        model = create_model("delta_attention", DIMS, TASK, variant="dcca", **{**SMALL, "dcca_task_grad": flag})
        model(x).prediction.sum().backward()
        g = model.dcca_enc["audio"].first.conv.weight.grad
        assert (g is not None and float(g.abs().sum()) > 0) == flag
        assert model.dcca_head.weight.grad is not None


def test_representation_stage_zeroes_padded_inputs():
    torch.manual_seed(13)
    d = {"text": 5, "audio": 5}
    model = create_model("delta_attention", d, TASK, input_stage="representation", **SMALL).eval()
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    v = {m: torch.randn(2, 4, 5, generator=g) for m in d}
    out = model({m: ModalityTensor(v[m], mask) for m in d})
    for m in d:
        torch.testing.assert_close(out.extras["representations"][m][mask], v[m][mask])
        assert torch.all(out.extras["representations"][m][0, 3] == 0)


def test_saved_stage_dataset_names_task_and_source(tmp_path):
    import numpy as np

    from emofusion.data.batch import Sample
    from emofusion.data.registry import load_dataset
    from emofusion.models.delta_attention import save_stage_outputs
    from emofusion.tasks import TaskSpec

    rec = {s: [Sample(f"{s}0", {"text": np.zeros((2, 3), np.float32)}, np.array([0], np.int64), "spk")]
           for s in ("train", "val", "test")}
    path = save_stage_outputs(tmp_path / "stage.pt", TASK, {"text": 3}, rec)
    bundle = load_dataset(f"paper002-saved:{path}")
    assert isinstance(bundle.task, TaskSpec) and bundle.task == TASK
    assert bundle.train.name == "paper002-saved/train" and bundle.test.name == "paper002-saved/test"
    assert bundle.info == {"source": str(path)} and bundle.name == f"paper002-saved:{path}"


def test_merge_by_id_joins_each_modalitys_stage_outputs():
    import numpy as np

    from emofusion.data.batch import Sample
    from emofusion.models.delta_attention import _merge_by_id

    def part(m, ids):
        return [Sample(i, {m: np.full((1, 2), k, np.float32)}, np.array([k]), f"spk{i}", f"c{i}")
                for k, i in enumerate(ids)]

    merged = _merge_by_id([part("text", ["a", "b", "c"]), part("audio", ["c", "a", "b"]), part("visual", ["b", "c", "a"])])
    assert [s.id for s in merged] == ["a", "b", "c"]  # the first part's order
    assert [(s.speaker, s.conversation, int(s.label[0])) for s in merged] == [("spka", "ca", 0), ("spkb", "cb", 1),
                                                                             ("spkc", "cc", 2)]
    for s, a, v in zip(merged, (1, 2, 0), (2, 0, 1)):
        assert sorted(s.features) == ["audio", "text", "visual"]
        assert float(s.features["audio"][0, 0]) == a and float(s.features["visual"][0, 0]) == v
    with pytest.raises(KeyError, match="'b' is missing"):
        _merge_by_id([part("text", ["a", "b"]), part("audio", ["a"])])
    # a duplicated id would silently give both samples one of the two feature sets
    for dup in ([part("text", ["a", "a"]), part("audio", ["a", "b"])], [part("text", ["a", "b"]), part("audio", ["b", "b"])]):
        with pytest.raises(ValueError, match="'.' appears twice"):
            _merge_by_id(dup)
