"""Paper 000 (RRNN / GCA): the equations pinned by small, seeded checks."""

from __future__ import annotations

import pytest
import torch

from emofusion.data.batch import ModalityTensor
from emofusion.models import create_model
from emofusion.models.layers import masked_mean
from emofusion.models.rrnn import GlobalContextAttention
from emofusion.tasks import classification_task, emotion_intensity_task

DIMS = {"text": 7, "audio": 5, "visual": 4}
TASK = emotion_intensity_task()


def make_inputs(lengths: dict[str, list[int]], pad_to: dict[str, int] | None = None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, lens in lengths.items():
        steps = (pad_to or {}).get(m, max(lens))
        values = torch.randn(len(lens), steps, DIMS[m], generator=g)
        mask = torch.arange(steps).unsqueeze(0) < torch.tensor(lens).unsqueeze(1)
        out[m] = ModalityTensor(values, mask)
    return out


LENGTHS = {"text": [5, 3, 1], "audio": [12, 20, 7], "visual": [4, 6, 2]}


def build(name="rrnn", dims=DIMS, **options):
    torch.manual_seed(0)
    options.setdefault("encoder_dim", 6)
    options.setdefault("decoder_dim", 8)
    options.setdefault("dropout", 0.0)
    model = create_model(name, dims, TASK, **options)
    return model.eval()


@pytest.mark.parametrize("name", ["rrnn", "gca"])
def test_shapes_and_attention_extras(name):
    model = build(name, hops=3)
    out = model(make_inputs(LENGTHS))
    assert out.prediction.shape == (3, 6)
    for m, lens in LENGTHS.items():
        a = out.extras["attention"][m]
        assert a.shape == (3, 3, max(lens))
        # eq. 7: a distribution over each sequence's real steps; padded steps get exactly zero
        torch.testing.assert_close(a.sum(-1), torch.ones(3, 3))
        for b, n in enumerate(lens):
            assert torch.all(a[b, :, n:] == 0)
    assert out.extras["memory"].shape == (3, 4, 12)


def test_padding_changes_nothing_and_batch_equals_single():
    model = build(hops=2)
    base = make_inputs(LENGTHS)
    ref = model(base)
    # garbage in padded positions and extra padding
    noisy = {}
    for m, (v, mask) in base.items():
        v2 = torch.cat([v, torch.randn(3, 4, v.shape[-1])], dim=1)
        mask2 = torch.cat([mask, torch.zeros(3, 4, dtype=torch.bool)], dim=1)
        v2 = torch.where(mask2.unsqueeze(-1), v2, torch.full_like(v2, 1e3))
        noisy[m] = ModalityTensor(v2, mask2)
    out = model(noisy)
    torch.testing.assert_close(out.prediction, ref.prediction, rtol=1e-5, atol=1e-5)
    for b in range(3):
        single = {
            m: ModalityTensor(v[b : b + 1, : LENGTHS[m][b]], mask[b : b + 1, : LENGTHS[m][b]])
            for m, (v, mask) in base.items()
        }
        one = model(single)
        torch.testing.assert_close(one.prediction[0], ref.prediction[b], rtol=1e-5, atol=1e-5)
        for m in LENGTHS:
            n = LENGTHS[m][b]
            torch.testing.assert_close(one.extras["attention"][m][0], ref.extras["attention"][m][b, :, :n])


def test_gate_ranges_and_memory_update_is_convex():
    model = build(hops=3)
    out = model(make_inputs(LENGTHS))
    for key in ("gate_context", "gate_update"):
        g = out.extras[key]
        assert torch.all((g > 0) & (g < 1))
    for g in out.extras["gate_view"].values():
        assert g.shape == (3, 3, 12) and torch.all((g > 0) & (g < 1))
    assert out.extras["gate_context"].shape == (3, 3, 36)
    # eq. 13: m(t) = (1 - g_c) m(t-1) + g_c u with u = tanh(.) in (-1, 1): m(t) lies between m(t-1) and u
    mem, g_c = out.extras["memory"], out.extras["gate_update"]
    u = (mem[:, 1:] - (1 - g_c) * mem[:, :-1]) / g_c
    assert torch.all(u.abs() < 1)


def test_gated_update_matches_equations_by_hand():
    """Recompute one hop of eq. 5-13 from the module's parameters."""
    model = build(hops=1, memory_init="mean")
    inputs = make_inputs(LENGTHS)
    out = model(inputs)
    enc = {m: model.encoders[m](v, mask)[0] for m, (v, mask) in inputs.items()}
    m0 = sum(masked_mean(enc[m], inputs[m].mask) for m in DIMS)
    torch.testing.assert_close(out.extras["memory"][:, 0], m0)
    contexts = []
    for m in model.modalities:
        att = model.attention[m][0]
        r = torch.tanh(att.w1(enc[m])) * torch.tanh(att.w2(m0)).unsqueeze(1)
        scores = att.w3(r).squeeze(-1).masked_fill(~inputs[m].mask, float("-inf"))
        alpha = torch.softmax(scores, -1)
        torch.testing.assert_close(alpha, out.extras["attention"][m][:, 0])
        c = (alpha.unsqueeze(-1) * enc[m]).sum(1)
        g_s = torch.sigmoid(model.gate_s[m](torch.cat([m0, c], -1)))
        contexts.append(g_s * c)
    w = torch.cat(contexts, -1)
    g_w = torch.sigmoid(model.gate_w(torch.cat([m0, w], -1)))
    g_c = torch.sigmoid(model.gate_c(torch.cat([m0, w], -1)))
    u = torch.tanh(model.proposal(torch.cat([m0, g_w * w], -1)))
    m1 = (1 - g_c) * m0 + g_c * u
    torch.testing.assert_close(out.extras["memory"][:, 1], m1)
    torch.testing.assert_close(out.prediction, model.bound_output(model.head(m1)))


def test_ungated_gca_update():
    model = build("gca", hops=1)
    out = model(make_inputs(LENGTHS))
    assert "gate_update" not in out.extras
    mem = out.extras["memory"]
    assert torch.all(mem[:, 1].abs() < 1)  # m = tanh(W [m; w] + b)
    with pytest.raises(ValueError):
        create_model("gca", DIMS, TASK, gating=True)


def test_memory_init_options():
    inputs = make_inputs(LENGTHS)
    zeros = build(memory_init="zeros", hops=2)
    out = zeros(inputs)
    assert torch.all(out.extras["memory"][:, 0] == 0)
    # with m(0) = 0 the bias-free multiplicative attention of the first hop is uniform over real steps
    for m, lens in LENGTHS.items():
        expected = torch.tensor([[1.0 / n] * 1 for n in lens]).expand(-1, max(lens))
        mask = inputs[m].mask
        torch.testing.assert_close(out.extras["attention"][m][:, 0], expected * mask)
    mean = build(memory_init="mean", hops=2)
    assert not torch.all(mean(inputs).extras["memory"][:, 0] == 0)
    with pytest.raises(ValueError, match="memory_init"):
        build(memory_init="random")


def test_tied_vs_untied_parameter_counts():
    hops = 3
    tied = build(tie_hops=True, hops=hops)
    untied = build(tie_hops=False, hops=hops)
    per_set = sum(p.numel() for p in tied.attention["text"][0].parameters())
    n_views = len(DIMS)
    assert untied.num_parameters() - tied.num_parameters() == (hops - 1) * per_set * n_views
    d, a = 12, 12
    assert per_set == d * a + d * a + a  # W1, W2 (no bias), w3
    assert len(tied.attention["audio"]) == 1 and len(untied.attention["audio"]) == hops
    # parameters grow linearly with the number of views (desideratum iv)
    p1 = build(dims={"text": 7}).num_parameters()
    p2 = build(dims={"text": 7, "audio": 7}).num_parameters()
    p3 = build(dims={"text": 7, "audio": 7, "visual": 7}).num_parameters()
    assert p3 - p2 > 0 and p2 - p1 > 0


def test_concat_multihead_and_feature_attention():
    inputs = make_inputs(LENGTHS)
    concat = build(attention="concat", hops=2)
    assert concat(inputs).prediction.shape == (3, 6)
    heads = build(heads=3, hops=2)
    out = heads(inputs)
    assert out.extras["attention_heads"]["audio"].shape == (3, 2, 3, 20)
    torch.testing.assert_close(out.extras["attention_heads"]["audio"].sum(-1), torch.ones(3, 2, 3))
    assert heads.gate_w.out_features == 3 * 12 * 3
    feats = build(attend_over="features", hops=2)
    out = feats(inputs)
    a = out.extras["attention"]["text"]
    assert a.shape == (3, 2, 12)
    torch.testing.assert_close(a.sum(-1), torch.ones(3, 2))
    att = GlobalContextAttention(4, 3, over="features")
    with torch.no_grad():
        att.w3.weight.zero_()  # uniform over dimensions -> the context is the time average itself
    h = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    c, _ = att(h * mask.unsqueeze(-1), mask, torch.randn(2, 4))
    torch.testing.assert_close(c, masked_mean(h * mask.unsqueeze(-1), mask))


@pytest.mark.parametrize("subset", [["audio"], ["text", "visual"], ["audio", "visual"]])
def test_any_modality_subset_and_classification(subset):
    dims = {m: DIMS[m] for m in subset}
    torch.manual_seed(0)
    task = classification_task(["a", "b", "c"])
    model = create_model("rrnn", dims, task, encoder_dim=4, decoder_dim=0, hops=2).eval()
    out = model(make_inputs({m: LENGTHS[m] for m in subset}))
    assert out.prediction.shape == (3, 3)
    assert set(out.extras["attention"]) == set(subset)


def test_switchable_gates_and_gradients():
    model = build(view_gates=False, hops=2)
    model.train()
    out = model(make_inputs(LENGTHS))
    assert "gate_view" not in out.extras and not hasattr(model, "gate_s")
    assert model.num_parameters() < build(view_gates=True, hops=2).num_parameters()
    out.prediction.sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
    no_update = build(update_gate=False, hops=1)
    out = no_update(make_inputs(LENGTHS))
    torch.testing.assert_close(out.extras["gate_update"], torch.ones(3, 1, 12))


def test_empty_modality_gives_finite_output():
    inputs = make_inputs({"text": [0, 3, 2], "audio": [4, 5, 6], "visual": [2, 0, 1]})
    out = build()(inputs)
    assert torch.isfinite(out.prediction).all()
    # the absent text of sample 0 is the learned absent token, one step that takes all the attention
    assert out.extras["attention"]["text"][0, :, 0].allclose(torch.ones(3))
    assert torch.all(out.extras["attention"]["text"][0, :, 1:] == 0)
    model = build()
    model.set_absent_mode("zeros")
    out = model(inputs)
    assert torch.isfinite(out.prediction).all()
    assert torch.all(out.extras["attention"]["text"][0] == 0)


def test_paper000_suites_build():
    from emofusion.evaluation.suite import get_suite

    table3 = get_suite("paper000-table3", "quick")
    rows = {c.row for c in table3.cells}
    paper_rows = {"text", "audio", "vision", "early fusion", "late fusion", "GCA", "GCA + gating"}
    extra_rows = {"text (max-pool)", "audio (max-pool)", "vision (max-pool)", "early fusion (max-pool)"}
    assert rows == paper_rows | extra_rows
    by_row = {c.row: c.config for c in table3.cells}
    # the paper's encoder-decoder rows average over time; the extra rows are the max-pooled defaults
    assert by_row["early fusion"]["model_options"]["pooling"] == "mean"
    assert "pooling" not in by_row["early fusion (max-pool)"]["model_options"]
    noisy = [c for c in table3.cells if c.column == "visual noise"]
    assert {c.row for c in noisy} == rows - {"text", "audio", "text (max-pool)", "audio (max-pool)"}
    assert {c.row for c in table3.cells if c.column == "visual zeroed"} == {c.row for c in noisy}
    assert all(c.perturbation["modality"] == "visual" for c in noisy)
    assert len(table3.seeds) >= 3
    tau = get_suite("paper000-tau", "quick")
    assert [c.config["model_options"]["hops"] for c in tau.cells] == [1, 2, 3, 4]
    cls = get_suite("paper000-cls", "quick")
    assert all(c.config["dataset"] == "synthetic-cls" for c in cls.cells)
    noise = get_suite("paper000-noise", "quick")
    strong = get_suite("paper000-noise-strong", "quick")
    assert all("event_strength" not in c.config["dataset_options"] for c in noise.cells)
    assert all(c.config["dataset_options"]["event_strength"] == 4.0 for c in strong.cells)
