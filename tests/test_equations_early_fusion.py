"""Paper 003 §4 re-implemented literally per sample: overlap-weighted averaging onto the text axis with
*unequal* overlaps, per-step concatenation, Keras-style masking of all-zero steps, pre-truncation to maxlen,
the (B)LSTM with its last state (both directions for ef_blstm), the CNN blocks, and the FC head with batch
norm (running statistics made non-trivial so that dropping it shows)."""

from __future__ import annotations

import math

import pytest
import torch

from emofusion.data.batch import ModalityTensor
from emofusion.models import create_model
from emofusion.tasks import classification_task, emotion_intensity_task

DIMS = {"text": 3, "audio": 2, "visual": 2}
TASK = classification_task(("a", "b", "c"))
# text 3 words; audio 5 frames, visual 2 frames: overlaps of 1/5 and 1/3 windows are unequal
LENGTHS = {"text": [3, 4], "audio": [5, 7], "visual": [2, 3]}


def inputs(seed=0, zero_step=True):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, lens in LENGTHS.items():
        steps = max(lens) + 1
        mask = torch.arange(steps)[None] < torch.tensor(lens)[:, None]
        v = torch.randn(2, steps, DIMS[m], generator=g)
        out[m] = ModalityTensor(v, mask)
    return out


def overlap_mean(x, L_t):
    """Source frames evenly cover [0, 1): frame s = [s/L_s, (s+1)/L_s); target t = [t/L_t, (t+1)/L_t)."""
    L_s = x.shape[0]
    rows = []
    for t in range(L_t):
        w = []
        for s in range(L_s):
            lo = max(s / L_s, t / L_t)
            hi = min((s + 1) / L_s, (t + 1) / L_t)
            w.append(max(hi - lo, 0.0))
        total = sum(w)
        rows.append(sum(wi * x[s] for s, wi in enumerate(w)) / total)
    return torch.stack(rows)


def fuse(model, x, b, zero_rows=()):
    L = LENGTHS["text"][b]
    parts = []
    for m in DIMS:
        seq = x[m][0][b, : LENGTHS[m][b]]
        parts.append(seq if LENGTHS[m][b] == L else overlap_mean(seq, L))
    f = torch.cat(parts, -1)
    keep = [t for t in range(L) if bool((f[t] != 0).any())]
    f = f[keep]
    maxlen = model.fusion.maxlen
    if model.fusion.truncating == "pre":
        f = f[-maxlen:]
    else:
        f = f[:maxlen]
    return f


def sig(z):
    return 1 / (1 + torch.exp(-z))


def lstm_run(lstm, seq, suffix=""):
    W, U = getattr(lstm, f"weight_ih_l0{suffix}"), getattr(lstm, f"weight_hh_l0{suffix}")
    b = getattr(lstm, f"bias_ih_l0{suffix}") + getattr(lstm, f"bias_hh_l0{suffix}")
    H = U.shape[1]
    h, c = torch.zeros(H), torch.zeros(H)
    for x in seq:
        z = W @ x + U @ h + b
        i, f, g, o = sig(z[:H]), sig(z[H : 2 * H]), torch.tanh(z[2 * H : 3 * H]), sig(z[3 * H :])
        c = f * c + i * g
        h = o * torch.tanh(c)
    return h


def head(fc, v):
    """Linear -> BatchNorm (running statistics, eval) -> ReLU -> ... -> Linear."""
    for layer in fc.net:
        name = type(layer).__name__
        if name == "Linear":
            v = layer.weight @ v + layer.bias
        elif "BatchNorm" in name:
            v = (v - layer.running_mean) / torch.sqrt(layer.running_var + layer.eps) * layer.weight + layer.bias
        elif name == "ReLU":
            v = torch.relu(v)
    return v


def prepare(model):
    with torch.no_grad():
        for mod in model.head.modules():
            if "BatchNorm" in type(mod).__name__:
                mod.running_mean.uniform_(-1, 1)
                mod.running_var.uniform_(0.3, 3.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize("name", ["ef_lstm", "ef_blstm"])
@pytest.mark.parametrize("opts", [{}, {"maxlen": 2}, {"maxlen": 2, "truncating": "post", "fc_layers": 2}])
def test_lstm_nets_equal_literal_pipeline(name, opts):
    torch.manual_seed(1)
    model = prepare(create_model(name, DIMS, TASK, hidden_dim=3, fc_dim=4, dropout=0.0, **opts))
    x = inputs()
    out = model(x).prediction
    for b in range(2):
        f = fuse(model, x, b)
        lstm = model.encoder.lstm
        final = lstm_run(lstm, f)
        if name == "ef_blstm":
            final = torch.cat([final, lstm_run(lstm, f.flip(0), "_reverse")])  # backward: first step
        torch.testing.assert_close(out[b], head(model.head, final), atol=1e-5, rtol=1e-4)
    assert model.encoder.bidirectional == (name == "ef_blstm")


def test_all_zero_steps_are_masked_and_lengths_pinned():
    torch.manual_seed(2)
    model = prepare(create_model("ef_lstm", {"text": 3, "audio": 2}, TASK, hidden_dim=3, fc_dim=4, dropout=0.0))
    g = torch.Generator().manual_seed(3)
    t = torch.randn(1, 4, 3, generator=g)
    a = torch.randn(1, 4, 2, generator=g)
    t[0, 1] = 0.0
    a[0, 1] = 0.0  # step 1 is all zeros in every modality: Keras Masking drops it
    x = {"text": ModalityTensor(t, torch.ones(1, 4, dtype=torch.bool)),
         "audio": ModalityTensor(a, torch.ones(1, 4, dtype=torch.bool))}
    f = torch.cat([t[0], a[0]], -1)[[0, 2, 3]]
    got = model(x)
    torch.testing.assert_close(got.prediction[0], head(model.head, lstm_run(model.encoder.lstm, f)), atol=1e-5,
                               rtol=1e-4)
    assert got.extras["fused_mask"].tolist() == [[True, True, True] + [False] * 17]
    nomask = prepare(create_model("ef_lstm", {"text": 3, "audio": 2}, TASK, hidden_dim=3, fc_dim=4, dropout=0.0,
                                  mask_zero_steps=False))
    assert nomask(x).extras["fused_mask"][0].sum() == 4


def cnn_ref(model, f):
    x = f.T  # [D, L]
    L = f.shape[0]
    valid = [True] * L
    for conv in model.convs:
        W, bias = conv.weight, conv.bias
        k = W.shape[2]
        y = torch.stack(
            [bias + sum(W[:, :, o] @ x[:, t + o - k // 2] for o in range(k) if 0 <= t + o - k // 2 < x.shape[1])
             for t in range(x.shape[1])], 1)
        y = torch.relu(y)
        pooled, pv = [], []
        for s in range(0, y.shape[1], 2):
            cols = [y[:, j] for j in range(s, min(s + 2, y.shape[1])) if valid[j]]
            pv.append(bool(cols))
            pooled.append(torch.stack(cols, 1).max(1).values if cols else torch.zeros(y.shape[0]))
        x, valid = torch.stack(pooled, 1), pv
    return x, valid


@pytest.mark.parametrize("readout", ["max", "flatten"])
def test_cnn_equals_literal_blocks(readout):
    torch.manual_seed(3)
    model = prepare(create_model("ef_cnn", DIMS, TASK, channels=4, fc_dim=4, dropout=0.0, num_layers=2,
                                 maxlen=5, readout=readout))
    x = inputs(seed=4)
    out = model(x).prediction
    for b in range(2):
        f = fuse(model, x, b)
        feats, valid = cnn_ref(model, f)
        if readout == "max":
            summary = torch.stack([feats[:, j] for j in range(feats.shape[1]) if valid[j]], 1).max(1).values
        else:
            # flatten the fixed maxlen / 2 / 2 = 2 pooled steps (padded steps zero)
            full = torch.zeros(4, 2)
            full[:, : feats.shape[1]] = feats * torch.tensor(valid, dtype=feats.dtype)
            summary = full.flatten()
        torch.testing.assert_close(out[b], head(model.head, summary), atol=1e-5, rtol=1e-4)
    assert model.head.net[0].in_features == (4 * 2 if readout == "flatten" else 4)


def test_head_structure_and_batch_norm_in_training():
    torch.manual_seed(4)
    model = create_model("ef_blstm", DIMS, emotion_intensity_task(), hidden_dim=3, fc_dim=5, fc_layers=2,
                         dropout=0.2)
    kinds = [type(m).__name__ for m in model.head.net]
    assert kinds == ["Linear", "SafeBatchNorm1d", "ReLU", "Dropout", "Linear", "SafeBatchNorm1d", "ReLU",
                     "Dropout", "Linear"]
    assert model.head.net[3].p == 0.2 and model.head.net[0].in_features == 6
    nobn = create_model("ef_blstm", DIMS, emotion_intensity_task(), batch_norm=False)
    assert not any("BatchNorm" in type(m).__name__ for m in nobn.head.net)
    # training mode normalises the hidden layer with the batch's own statistics
    model.train()
    hidden = model.head.net[:2]
    h = hidden(torch.randn(8, 6))
    torch.testing.assert_close(h.mean(0), model.head.net[1].bias, atol=1e-5, rtol=0)
    d = create_model("ef_lstm", DIMS, emotion_intensity_task())
    assert d.fusion.maxlen == 20 and d.encoder.lstm.hidden_size == 64 and d.head.net[0].out_features == 100
    assert d.fusion.truncating == "pre" and d.dropout == 0.1 and d.fusion.align_to == "text"


def test_reference_axis_without_text_is_the_shortest_stream():
    torch.manual_seed(5)
    dims = {"audio": 2, "visual": 2}
    model = prepare(create_model("ef_lstm", dims, TASK, hidden_dim=3, fc_dim=4, dropout=0.0))
    x = {m: inputs(seed=6)[m] for m in dims}
    out = model(x).prediction
    for b in range(2):
        L = min(LENGTHS["audio"][b], LENGTHS["visual"][b])
        parts = [x[m][0][b, : LENGTHS[m][b]] for m in dims]
        parts = [p if p.shape[0] == L else overlap_mean(p, L) for p in parts]
        f = torch.cat(parts, -1)
        torch.testing.assert_close(out[b], head(model.head, lstm_run(model.encoder.lstm, f)), atol=1e-5,
                                   rtol=1e-4)


def test_random_baseline_distribution():
    model = create_model("random_baseline", DIMS, emotion_intensity_task(), seed=3)
    x = {m: ModalityTensor(torch.zeros(4000, 1, d), torch.ones(4000, 1, dtype=torch.bool)) for m, d in DIMS.items()}
    p = model(x).prediction
    counts = torch.bincount((p > 0).sum(1), minlength=7).float() / 4000
    assert len(counts) == 7 and torch.all((counts - 1 / 7).abs() < 0.025)
    vals = torch.unique(torch.round(p[p > 0] * 3))
    assert vals.tolist() == list(range(1, 10)) and p.max() <= 3.0
    model.reset()
    assert torch.equal(model(x).prediction, p)
    z = create_model("random_baseline", DIMS, emotion_intensity_task(), seed=3, include_zero=True)(x).prediction
    assert (z > 0).sum(1).float().mean() == pytest.approx(3 * 0.9, abs=0.1)
    assert math.isclose(float((p > 0).sum(1).float().mean()), 3.0, abs_tol=0.1)


def test_compact_keeps_the_order_of_real_steps():
    from emofusion.models.early_fusion import compact

    g = torch.Generator().manual_seed(0)
    mask = torch.rand(3, 300, generator=g) < 0.6
    values = torch.arange(300.0).view(1, 300, 1).expand(3, 300, 1).clone()
    out, new_mask = compact(values, mask)
    for b in range(3):
        real = values[b, mask[b], 0]
        n = int(mask[b].sum())
        assert torch.equal(out[b, :n, 0], real) and bool(new_mask[b, :n].all()) and not new_mask[b, n:].any()
        assert torch.all(out[b, n:] == 0)


def test_overlap_resample_padded_targets_are_zero():
    from emofusion.models.early_fusion import overlap_resample

    v = torch.arange(1.0, 7.0).view(1, 6, 1)
    mask = torch.ones(1, 6, dtype=torch.bool)
    out = overlap_resample(v, mask, torch.tensor([3]), 5)
    assert out[0, :3, 0].tolist() == [1.5, 3.5, 5.5] and out[0, 3:, 0].tolist() == [0.0, 0.0]


def test_tuning_grid_is_section_4_4s():
    # §4.4: 1-3 recurrent layers, 1-3 fully-connected layers, dropout {0.1, 0.2}, maxlen in {15, 20, 25, 30}
    for name in ("ef_lstm", "ef_blstm"):
        model = create_model(name, {"text": 3, "audio": 2}, emotion_intensity_task())
        assert model.search_space == {"num_layers": [1, 2, 3], "fc_layers": [1, 2, 3], "dropout": [0.1, 0.2],
                                      "maxlen": [15, 20, 25, 30]}


def _one(x, i):
    out = {}
    for m, (v, mask) in x.items():
        n = max(int(mask[i].sum()), 0)
        out[m] = ModalityTensor(v[i : i + 1, : max(n, 1)] if n else v[i : i + 1, :0], mask[i : i + 1, :n])
    return out


@pytest.mark.parametrize("absent", ["token", "zeros"])
@pytest.mark.parametrize("with_text", [True, False], ids=["align-to-text", "shortest-stream"])
def test_missing_streams_batch_equals_samples_one_by_one(with_text, absent):
    # sample 0 has no text (the reference), sample 1 no audio, sample 2 only visual frames, sample 3 nothing
    torch.manual_seed(9)
    dims = DIMS if with_text else {"audio": 2, "visual": 2}
    model = prepare(create_model("ef_lstm", dims, TASK, hidden_dim=3, fc_dim=4, dropout=0.0, absent=absent,
                                 batch_norm=False))
    assert model.fusion.align_to == ("text" if with_text else None)
    g = torch.Generator().manual_seed(4)
    lens = {"text": [0, 3, 0, 0], "audio": [5, 0, 0, 0], "visual": [2, 4, 3, 0]}
    x = {}
    for m in dims:
        steps = max(lens[m])
        x[m] = ModalityTensor(torch.randn(4, steps, dims[m], generator=g),
                              torch.arange(steps)[None] < torch.tensor(lens[m])[:, None])
    out = model(x)
    assert torch.isfinite(out.prediction).all()
    for i in range(4):
        one = model(_one(x, i))
        torch.testing.assert_close(out.prediction[i], one.prediction[0], atol=1e-5, rtol=1e-4)
        n = int(one.extras["fused_mask"][0].sum())
        assert int(out.extras["fused_mask"][i].sum()) == n  # the same time axis as alone
    if with_text and absent == "token":  # sample 0: the shortest present stream (visual, 2 steps) is the axis
        assert int(out.extras["fused_mask"][0].sum()) == 2


def test_cut_or_pad_of_an_empty_stream_keeps_the_feature_size():
    from emofusion.models.early_fusion import cut_or_pad

    values = torch.zeros(2, 0, 3)
    out, mask = cut_or_pad(values, torch.zeros(2, 0, dtype=torch.bool), 4)
    assert out.shape == (2, 4, 3) and not mask.any()


def test_random_baseline_other_task_kinds():
    from emofusion.tasks import TaskSpec

    ml = create_model("random_baseline", {"audio": 2}, TaskSpec("multilabel_binary", ("x", "y", "z")), seed=1)
    x = {"audio": ModalityTensor(torch.zeros(400, 1, 2), torch.ones(400, 1, dtype=torch.bool))}
    logits = ml(x).prediction
    assert set(logits.unique().tolist()) == {-1.0, 1.0}  # presence logits +-1 (probability sigmoid(1) or 1 - it)
    assert 0.4 < float((logits > 0).float().mean()) < 0.6
    cls = create_model("random_baseline", {"audio": 2}, TASK, seed=1)(x).prediction
    assert torch.all(cls.sum(1) == 1) and set(cls.unique().tolist()) == {0.0, 1.0}


def test_input_fusion_maxlen_default_and_smallest_window():
    import inspect

    from emofusion.models.early_fusion import InputFusion

    # maxlen 20: docs/models/early_fusion.md's default, inside §4.4's searched {15, 20, 25, 30}; the building
    # block and the models share it
    assert inspect.signature(InputFusion.__init__).parameters["maxlen"].default == 20
    assert InputFusion(list(DIMS)).maxlen == 20 == create_model("ef_lstm", DIMS, TASK).fusion.maxlen
    # any positive window is accepted, down to one step (pre-truncation keeps the last real step)
    fusion = InputFusion(list(DIMS), maxlen=1)
    x = inputs(seed=2)
    fused, mask = fusion(x)
    assert fused.shape == (2, 1, sum(DIMS.values())) and mask.all()
    full, full_mask = InputFusion(list(DIMS), maxlen=10)(x)
    for b, n in enumerate(full_mask.sum(1).tolist()):
        torch.testing.assert_close(fused[b, 0], full[b, n - 1])
    with pytest.raises(ValueError, match="maxlen must be a positive integer, got 0"):
        InputFusion(list(DIMS), maxlen=0)


def test_cnn_accepts_every_odd_kernel_and_rejects_even_ones():
    torch.manual_seed(5)
    x = inputs(seed=5)
    for k in (1, 3, 5, 7):
        model = create_model("ef_cnn", DIMS, TASK, channels=4, fc_dim=4, kernel_size=k, maxlen=6).eval()
        assert model.convs[0].kernel_size == (k,) and model.convs[0].padding == (k // 2,)  # 'same' padding
        assert model(x).prediction.shape == (2, 3)
    for k in (2, 4):
        with pytest.raises(ValueError, match=f"kernel_size must be odd \\('same' padding\\), got {k}"):
            create_model("ef_cnn", DIMS, TASK, kernel_size=k)


def test_random_baseline_regression_without_a_label_range_is_uniform_on_unit_interval():
    from emofusion.tasks import TaskSpec

    task = TaskSpec("multi_regression", ("x", "y"))  # no label_range: U[0, 1)
    x = {"audio": ModalityTensor(torch.zeros(2000, 1, 2), torch.ones(2000, 1, dtype=torch.bool))}
    pred = create_model("random_baseline", {"audio": 2}, task, seed=2)(x).prediction.detach()
    assert pred.shape == (2000, 2) and float(pred.min()) >= 0.0 and float(pred.max()) < 1.0
    assert float(pred.max()) > 0.99 and abs(float(pred.mean()) - 0.5) < 0.02
    ranged = create_model("random_baseline", {"audio": 2}, TaskSpec("multi_regression", ("x", "y"),
                                                                      label_range=(-2.0, 4.0)), seed=2)(x).prediction.detach()
    torch.testing.assert_close(ranged, -2.0 + 6.0 * pred)  # the same draws scaled onto the range


def test_random_baseline_presence_is_a_fair_coin_on_the_unit_interval(monkeypatch):
    # u ~ U[0, 1) on float32's grid: u < 0.5 holds for exactly half of it (u <= 0.5 for half plus one value),
    # so a draw of exactly 0.5 is absence
    from emofusion.tasks import TaskSpec

    task = TaskSpec("multilabel_binary", ("x", "y", "z"))
    x = {"audio": ModalityTensor(torch.zeros(2, 1, 2), torch.ones(2, 1, dtype=torch.bool))}
    # seeded: the same seed gives the same draws whatever the global RNG did, reset() starts over
    torch.manual_seed(0)
    first = create_model("random_baseline", {"audio": 2}, task, seed=4)
    a = first(x).prediction
    torch.manual_seed(1)
    assert torch.equal(create_model("random_baseline", {"audio": 2}, task, seed=4)(x).prediction, a)
    first.reset()
    assert torch.equal(first(x).prediction, a)
    draws = torch.tensor([[0.0, 0.25, 0.5], [0.5 - 2**-24, 0.75, 1.0 - 2**-24]])
    model = create_model("random_baseline", {"audio": 2}, task)
    calls = []

    def rand(*shape, generator=None):
        calls.append((shape, generator))
        return draws.clone()

    monkeypatch.setattr(torch, "rand", rand)
    assert model(x).prediction.tolist() == [[1.0, 1.0, -1.0], [1.0, -1.0, -1.0]]
    assert calls == [((2, 3), model.generator)]  # one draw per sample and label, from the model's generator


def test_overlap_resample_zero_target_length_and_device():
    from emofusion.models.early_fusion import overlap_resample

    # a target of length 0 is all padding: zeros, although its (clamped) first window overlaps the source
    v = torch.arange(1.0, 13.0).view(2, 6, 1)
    mask = torch.arange(6)[None] < torch.tensor([6, 4])[:, None]
    out = overlap_resample(v, mask, torch.tensor([0, 2]), 3)
    assert out[0, :, 0].tolist() == [0.0, 0.0, 0.0]
    assert out[1, :, 0].tolist() == [7.5, 9.5, 0.0]  # 4 frames onto 2 steps: means of pairs, then padding
    # every tensor is made on the values' device (the meta device shows a CPU tensor sneaking in)
    meta = overlap_resample(v.to("meta"), mask.to("meta"), torch.tensor([0, 2], device="meta"), 3)
    assert meta.device.type == "meta" and meta.shape == (2, 3, 1)


# ---------------------------------------------------------------------------------------------------------
# session 7 (complete mutant set of early_fusion.py)
# ---------------------------------------------------------------------------------------------------------


def test_overlap_resample_of_a_one_step_source_or_target():
    from emofusion.models.early_fusion import overlap_resample

    # one source step covers the whole segment: every target step is that value; one target step is the
    # (equal-overlap) mean of the whole source
    v = torch.tensor([[[2.0], [0.0], [0.0]], [[1.0], [3.0], [8.0]]])
    mask = torch.tensor([[True, False, False], [True, True, True]])
    out = overlap_resample(v, mask, torch.tensor([3, 1]), 3)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([2.0, 2.0, 2.0]))
    torch.testing.assert_close(out[1, :, 0], torch.tensor([4.0, 0.0, 0.0]))


def test_cut_or_pad_pads_with_zeros_on_the_values_device():
    from emofusion.models.early_fusion import cut_or_pad

    v = torch.arange(1.0, 7.0).view(2, 3, 1)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    out, new_mask = cut_or_pad(v, mask, 5)
    assert out[:, :, 0].tolist() == [[1.0, 2.0, 3.0, 0.0, 0.0], [4.0, 5.0, 0.0, 0.0, 0.0]]
    assert new_mask.tolist() == [[True] * 3 + [False] * 2, [True] * 2 + [False] * 3]
    meta, meta_mask = cut_or_pad(v.to("meta"), mask.to("meta"), 5)
    assert meta.device.type == meta_mask.device.type == "meta" and meta.shape == (2, 5, 1)


def test_input_fusion_defaults_and_an_explicit_axis():
    from emofusion.models.early_fusion import InputFusion

    # step 1 is zero in both: masked by default (Keras Masking); step 2 is zero in text only: kept
    t = torch.tensor([[[1.0], [0.0], [0.0], [2.0]]])
    a = torch.tensor([[[3.0], [0.0], [7.0], [5.0]]])
    x = {"text": ModalityTensor(t, torch.ones(1, 4, dtype=torch.bool)),
         "audio": ModalityTensor(a, torch.ones(1, 4, dtype=torch.bool))}
    fused, mask = InputFusion(["text", "audio"], maxlen=4)(x)
    assert mask.tolist() == [[True, True, True, False]]
    assert fused[0, :3].tolist() == [[1.0, 3.0], [0.0, 7.0], [2.0, 5.0]]
    # align_to names the axis even when text is there: the 2-frame audio is the axis, text averaged onto it
    x = {"text": ModalityTensor(t[:, [0, 1, 3]], torch.ones(1, 3, dtype=torch.bool))}
    short = {"text": x["text"], "audio": ModalityTensor(torch.tensor([[[4.0], [6.0]]]), torch.ones(1, 2, dtype=torch.bool))}
    fusion = InputFusion(["text", "audio"], maxlen=4, align_to="audio")
    assert fusion.align_to == "audio"
    fused, mask = fusion(short)
    assert mask.tolist() == [[True, True, False, False]]
    torch.testing.assert_close(fused[0, :2], torch.tensor([[(1.0 * 2 + 0.0) / 3, 4.0], [(0.0 + 2.0 * 2) / 3, 6.0]]))


@pytest.mark.parametrize("name", ["ef_lstm", "ef_cnn"])
def test_values_in_padded_steps_change_nothing(name):
    # the mask says what is real: NaN (or anything) in padded steps must not reach the prediction
    torch.manual_seed(6)
    opts = {"hidden_dim": 3} if name == "ef_lstm" else {"channels": 4}
    model = prepare(create_model(name, DIMS, TASK, fc_dim=4, dropout=0.0, **opts))
    x = inputs(seed=7)
    poisoned = {m: ModalityTensor(torch.where(mk[..., None], v, torch.full_like(v, float("nan"))), mk)
                for m, (v, mk) in x.items()}
    torch.testing.assert_close(model(poisoned).prediction, model(x).prediction)


def test_absent_flags_for_some_modalities_only():
    from emofusion.models.early_fusion import InputFusion

    # sample 0 has no text but is not flagged absent (only audio's flags are given): the text axis is empty
    # there, exactly as without any flags; sample 1 is complete
    g = torch.Generator().manual_seed(8)
    x = {"text": ModalityTensor(torch.randn(2, 3, 2, generator=g), torch.tensor([[False] * 3, [True] * 3])),
         "audio": ModalityTensor(torch.randn(2, 4, 2, generator=g), torch.ones(2, 4, dtype=torch.bool))}
    fusion = InputFusion(["text", "audio"], maxlen=5)
    plain, plain_mask = fusion(x)
    flagged, flagged_mask = fusion(x, {"audio": torch.tensor([False, False])})
    assert plain_mask.sum(1).tolist() == flagged_mask.sum(1).tolist() == [0, 3]
    torch.testing.assert_close(flagged, plain)
    # a single modality with absent tokens: its own axis
    torch.manual_seed(9)
    model = prepare(create_model("ef_lstm", {"text": 2}, TASK, hidden_dim=3, fc_dim=4, dropout=0.0, absent="token"))
    one = {"text": x["text"]}
    out = model(one)
    assert torch.isfinite(out.prediction).all() and out.extras["fused_mask"].sum(1).tolist() == [1, 3]


def test_shortest_stream_axis_without_text_in_zeros_mode():
    from emofusion.models.early_fusion import InputFusion

    # per sample the shortest stream that has steps: sample 0 audio 1 frame (visual 3), sample 1 no audio
    # (visual 4), sample 2 nothing
    g = torch.Generator().manual_seed(10)
    lens = {"audio": [1, 0, 0], "visual": [3, 4, 0]}
    x = {m: ModalityTensor(torch.rand(3, 4, 2, generator=g) + 0.5, torch.arange(4)[None] < torch.tensor(lens[m])[:, None])
         for m in lens}
    fused, mask = InputFusion(["audio", "visual"], maxlen=6)(x)
    assert mask.sum(1).tolist() == [1, 4, 0]
    # sample 0: the 3 visual frames averaged onto audio's single step
    torch.testing.assert_close(fused[0, 0], torch.cat([x["audio"][0][0, 0], x["visual"][0][0, :3].mean(0)]))
    # an empty batch is an empty batch
    empty = {m: ModalityTensor(torch.zeros(0, 4, 2), torch.zeros(0, 4, dtype=torch.bool)) for m in lens}
    e, em = InputFusion(["audio", "visual"], maxlen=3)(empty)
    assert e.shape == (0, 3, 4) and em.shape == (0, 3)


def test_a_stream_is_used_as_it_is_only_when_its_lengths_are_the_axis():
    from emofusion.models.early_fusion import InputFusion

    # audio has 2 steps in sample 0 and none in sample 1; per time step the counts (1, 1) equal the text
    # lengths (1, 1), but per sample (2, 0) they do not: audio must be averaged onto the one text step
    t = torch.tensor([[[1.0]], [[2.0]]])
    a = torch.tensor([[[4.0], [8.0]], [[0.0], [0.0]]])
    x = {"text": ModalityTensor(t, torch.ones(2, 1, dtype=torch.bool)),
         "audio": ModalityTensor(a, torch.tensor([[True, True], [False, False]]))}
    fused, mask = InputFusion(["text", "audio"], maxlen=2)(x)
    assert fused[:, 0].tolist() == [[1.0, 6.0], [2.0, 0.0]] and mask.tolist() == [[True, False], [True, False]]


def test_aligned_streams_are_used_step_by_step_and_the_axis_mask_is_the_reference_length():
    from emofusion.models.early_fusion import InputFusion

    # word-aligned data (every stream on the text axis): steps are used as they are, so an inf in one step
    # stays there (averaging with zero weights would turn every step into NaN)
    t = torch.tensor([[[1.0], [2.0], [3.0]], [[4.0], [5.0], [0.0]]])
    a = torch.tensor([[[1.0], [float("inf")], [2.0]], [[3.0], [4.0], [0.0]]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    x = {"text": ModalityTensor(t, mask), "audio": ModalityTensor(a, mask)}
    for zero_steps in (True, False):
        fused, fmask = InputFusion(["text", "audio"], maxlen=4, mask_zero_steps=zero_steps)(x)
        assert fused[0, :3].tolist() == [[1.0, 1.0], [2.0, float("inf")], [3.0, 2.0]]
        assert fused[1, :2].tolist() == [[4.0, 3.0], [5.0, 4.0]]
        assert fmask.sum(1).tolist() == [3, 2]  # the reference lengths, also without zero-step masking


def test_no_dropout_between_lstm_layers_and_the_cnn_default_width():
    # §4: dropout sits between the fully connected layers only; with it 0 and no batch norm, a 2-layer
    # (B)LSTM is deterministic in training mode too
    torch.manual_seed(11)
    model = create_model("ef_blstm", DIMS, TASK, hidden_dim=3, fc_dim=4, dropout=0.0, num_layers=2, batch_norm=False)
    x = inputs(seed=12)
    train_out = model.train()(x).prediction
    torch.testing.assert_close(train_out, model.eval()(x).prediction)
    assert model.encoder.lstm.dropout == 0.0
    # ef_cnn's filters per convolution (not given in the paper): 64, like the LSTM's units
    cnn = create_model("ef_cnn", DIMS, TASK, num_layers=2)
    assert [c.out_channels for c in cnn.convs] == [64, 64]


def test_overlap_resample_of_an_empty_source_is_zeros_whatever_its_padding_holds():
    from emofusion.models.early_fusion import overlap_resample

    v = torch.tensor([[[5.0], [7.0]], [[1.0], [3.0]]])
    mask = torch.tensor([[False, False], [True, True]])
    out = overlap_resample(v, mask, torch.tensor([2, 1]), 2)
    assert out[:, :, 0].tolist() == [[0.0, 0.0], [2.0, 0.0]]


def test_a_sample_flagged_absent_with_no_stream_at_all_gets_one_step():
    from emofusion.models.early_fusion import InputFusion

    # like an all-absent sample in token mode (one token step per stream): one step on the axis
    x = {"text": ModalityTensor(torch.ones(2, 2, 1), torch.tensor([[False, False], [True, True]])),
         "audio": ModalityTensor(torch.ones(2, 3, 1), torch.tensor([[False] * 3, [True] * 3]))}
    fusion = InputFusion(["text", "audio"], maxlen=4, mask_zero_steps=False)
    _, mask = fusion(x, {"text": torch.tensor([True, False])})
    assert mask.sum(1).tolist() == [1, 2]


def test_token_mode_axis_is_text_else_the_shortest_present_stream():
    # sample 0: no text, audio 1 frame, visual 3 -> audio's 1 step; sample 1: text 3 words, visual 2 frames
    # -> text's 3 steps (not the shorter visual); sample 2: text 2 words
    torch.manual_seed(13)
    model = prepare(create_model("ef_lstm", DIMS, TASK, hidden_dim=3, fc_dim=4, dropout=0.0, absent="token",
                                 maxlen=6))
    g = torch.Generator().manual_seed(14)
    lens = {"text": [0, 3, 2], "audio": [1, 4, 3], "visual": [3, 2, 4]}
    x = {m: ModalityTensor(torch.rand(3, 4, DIMS[m], generator=g) + 0.5,
                           torch.arange(4)[None] < torch.tensor(lens[m])[:, None]) for m in DIMS}
    assert model(x).extras["fused_mask"].sum(1).tolist() == [1, 3, 2]


def test_random_baseline_samples_independently_and_its_declared_interface():
    # §5.1: each segment draws its own labels; two segments of one batch share nothing but the generator
    model = create_model("random_baseline", DIMS, emotion_intensity_task())
    x = {m: ModalityTensor(torch.zeros(2, 1, d), torch.ones(2, 1, dtype=torch.bool)) for m, d in DIMS.items()}
    shared = expected = 0.0
    for _ in range(800):
        chosen = model(x).prediction > 0
        n = chosen.sum(1).float()
        shared += float((chosen[0] & chosen[1]).sum())
        expected += float(n[0] * n[1]) / 6  # E|A & B| for independent uniform subsets of sizes n0, n1
    assert 0.9 < shared / expected < 1.1
    # the default seed is 0; nothing is trained, yet one zero parameter lets a generic loop step
    torch.testing.assert_close(create_model("random_baseline", DIMS, emotion_intensity_task())(x).prediction,
                               create_model("random_baseline", DIMS, emotion_intensity_task(), seed=0)(x).prediction)
    assert model.trainable is False
    params = list(model.parameters())
    assert len(params) == 1 and params[0].requires_grad and model(x).prediction.requires_grad
    # an intensity task without a label range: §5.1's [0, 3] grid
    from emofusion.tasks import TaskSpec

    bare = create_model("random_baseline", DIMS, TaskSpec("emotion_intensity", ("a", "b", "c")), seed=1)
    big = {m: ModalityTensor(torch.zeros(300, 1, d), torch.ones(300, 1, dtype=torch.bool)) for m, d in DIMS.items()}
    vals = torch.unique(torch.round(bare(big).prediction * 3)).tolist()
    assert vals == list(range(10))  # 0 (not chosen) and the nine values 1/3 .. 3
    # with a label range the nine levels span it: (0, 6) gives 2/3 .. 6
    ranged = create_model("random_baseline", DIMS, TaskSpec("emotion_intensity", ("a", "b", "c"), label_range=(0.0, 6.0)),
                          seed=1)
    levels = torch.unique(torch.round(ranged(big).prediction * 1.5)).tolist()
    assert levels == list(range(10))
    # classification: every class can be drawn, from the model's own generator (not the global one)
    torch.manual_seed(0)
    first = create_model("random_baseline", DIMS, TASK, seed=2)(big).prediction
    torch.manual_seed(1)
    again = create_model("random_baseline", DIMS, TASK, seed=2)(big).prediction
    assert torch.equal(first, again) and first.argmax(1).unique().tolist() == [0, 1, 2]
    # its inputs are validated like any model's: a missing modality is an error, not ignored
    with pytest.raises(KeyError, match="got no 'visual' input"):
        model({m: x[m] for m in ("text", "audio")})


def test_the_axis_mask_is_a_prefix_mask_on_the_lengths_device():
    from emofusion.models.layers import length_mask

    lengths = torch.tensor([0, 2, 3])
    want = torch.tensor([[False, False, False], [True, True, False], [True, True, True]])
    assert torch.equal(length_mask(lengths, 3), want)
    # the meta device shows a CPU tensor sneaking in (a GPU batch would fail the same way)
    meta = length_mask(lengths.to("meta"), 3)
    assert meta.device.type == "meta" and meta.shape == (3, 3) and meta.dtype == torch.bool


@pytest.mark.parametrize("name", ["ef_lstm", "ef_cnn"])
def test_layer_counts_and_dropout_are_validated(name):
    size = {"channels": 3} if name == "ef_cnn" else {"hidden_dim": 3}

    def make(**opts):
        return create_model(name, DIMS, TASK, fc_dim=4, **size, **opts)

    with pytest.raises(ValueError, match="num_layers"):
        make(num_layers=0)
    with pytest.raises(ValueError, match="fc_layers"):
        make(fc_layers=-1)
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="dropout"):
            make(dropout=bad)
    # fc_layers=0: the linear output layer only; counts given as strings (CLI overrides) are integers
    assert [type(m).__name__ for m in make(fc_layers=0).head.net] == ["Linear"]
    model = make(num_layers="2", fc_layers="2")
    assert model.num_layers == 2 and model.fc_layers == 2
    assert sum(type(m).__name__ == "Linear" for m in model.head.net) == 3


def test_network_defaults_are_section_4s():
    import inspect

    from emofusion.models.early_fusion import _EarlyFusionNet

    p = inspect.signature(_EarlyFusionNet.__init__).parameters
    got = {k: p[k].default for k in ("maxlen", "num_layers", "fc_layers", "fc_dim", "dropout", "batch_norm")}
    assert got == {"maxlen": 20, "num_layers": 1, "fc_layers": 1, "fc_dim": 100, "dropout": 0.1, "batch_norm": True}


@pytest.mark.parametrize("name", ["ef_lstm", "ef_cnn"])
def test_intensity_outputs_are_the_head_clamped_to_0_3(name):
    torch.manual_seed(1)
    size = {"channels": 3} if name == "ef_cnn" else {"hidden_dim": 3}
    model = prepare(create_model(name, DIMS, emotion_intensity_task(), fc_dim=4, dropout=0.0, **size))
    with torch.no_grad():
        model.head.net[-1].bias.copy_(torch.tensor([-5.0, -1.0, 0.5, 1.5, 4.0, 8.0]))
    x = inputs()
    fused, mask = model.fusion(model.check_inputs(x), model.absent_flags)
    summary, _ = model.summarize(fused, mask)
    raw = model.head(summary)
    assert (raw < 0).any() and (raw > 3).any() and ((raw > 0) & (raw < 3)).any()
    torch.testing.assert_close(model(x).prediction, raw.clamp(0.0, 3.0))


def test_random_baseline_gradient_is_exactly_zero():
    model = create_model("random_baseline", DIMS, emotion_intensity_task(), seed=0)
    x = {m: ModalityTensor(torch.zeros(8, 1, d), torch.ones(8, 1, dtype=torch.bool)) for m, d in DIMS.items()}
    pred = model(x).prediction
    assert (pred > 0).any()
    pred.sum().backward()  # a generic training loop runs, and training changes nothing
    assert model.anchor.grad is not None and float(model.anchor.grad) == 0.0


def test_random_baseline_identities_are_uniform_in_a_batch_of_one():
    # the n labels are the first n of a random permutation of the K emotions, drawn per segment: a batch of
    # one segment (sorting over the batch would always give the first n emotions) chooses each with p = 1/2
    model = create_model("random_baseline", DIMS, emotion_intensity_task(), seed=5)
    x = {m: ModalityTensor(torch.zeros(1, 1, d), torch.ones(1, 1, dtype=torch.bool)) for m, d in DIMS.items()}
    chosen = torch.cat([model(x).prediction > 0 for _ in range(700)]).float()
    assert torch.all((chosen.mean(0) - 0.5).abs() < 0.08), chosen.mean(0)
