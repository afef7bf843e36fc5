"""TFN, LMF, MFN and LF-DNN (the MMSA-compared fusion baselines): shapes, padding, subsets, the fusion algebra."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from emofusion.data.batch import ModalityTensor
from emofusion.models import create_model
from emofusion.models.tfn import (
    _DroppedFusionLinear,
    contract_fused,
    dropout_mask,
    extend_with_one,
    tensor_fusion,
)
from emofusion.tasks import classification_task, emotion_intensity_task, sentiment_task
from helpers import select

DIMS = {"text": 6, "audio": 5, "visual": 4}
SMALL = {
    "tfn": dict(
        hidden_dims={"text": 4, "audio": 3, "visual": 5},
        text_out=4,
        post_fusion_dim=7,
        dropout=0.0,
        fusion_dropout=0.0,
    ),
    "lmf": dict(hidden_dims={"text": 4, "audio": 3, "visual": 5}, text_out=4, rank=3, dropout=0.0),
    "mfn": dict(
        hidden_dims={"text": 4, "audio": 3, "visual": 5},
        mem_dim=6,
        attn_dim=5,
        proposal_dim=5,
        gamma1_dim=7,
        gamma2_dim=7,
        out_dim=8,
        attn_dropout=0.0,
        proposal_dropout=0.0,
        gamma1_dropout=0.0,
        gamma2_dropout=0.0,
        out_dropout=0.0,
    ),
    "lf_dnn": dict(hidden_dims={"text": 4, "audio": 3, "visual": 5}, text_out=6, post_fusion_dim=7, dropout=0.0,
                   fusion_dropout=0.0),
}
NAMES = list(SMALL)


def make(name, dims=DIMS, task=None, **options):
    torch.manual_seed(0)
    model = create_model(name, dims, task or sentiment_task(), **{**SMALL[name], **options})
    return model.eval()


def unaligned(lengths: dict[str, list[int]], dims=DIMS, seed=1, pad_value=0.0):
    """Each modality its own padded length; padded steps filled with ``pad_value``."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, lens in lengths.items():
        steps = max(lens) + 2  # extra padding even on the longest row
        mask = torch.arange(steps).unsqueeze(0) < torch.tensor(lens).unsqueeze(1)
        values = torch.randn(len(lens), steps, dims[m], generator=g)
        values = torch.where(mask.unsqueeze(-1), values, torch.full_like(values, pad_value))
        out[m] = ModalityTensor(values, mask)
    return out


def aligned(lengths: list[int], dims=DIMS, seed=1):
    return unaligned({m: lengths for m in dims}, dims, seed)


LENGTHS = {"text": [5, 3, 1, 4], "audio": [20, 9, 4, 13], "visual": [8, 6, 2, 1]}


# ----------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "task, out_dim",
    [(sentiment_task(), 1), (emotion_intensity_task(), 6), (classification_task(["a", "b", "c", "d"]), 4)],
)
def test_output_shapes_for_regression_and_classification(name, task, out_dim):
    model = make(name, task=task)
    out = model(unaligned(LENGTHS))
    assert out.prediction.shape == (4, out_dim)
    assert torch.isfinite(out.prediction).all()
    if task.is_regression:
        low, high = task.label_range
        assert (out.prediction >= low).all() and (out.prediction <= high).all()


# ----------------------------------------------------------------------------------------- padding


@pytest.mark.parametrize("name", NAMES)
def test_padded_values_change_nothing(name):
    model = make(name)
    a = model(unaligned(LENGTHS, pad_value=0.0)).prediction
    b = model(unaligned(LENGTHS, pad_value=1e4)).prediction
    c = model(unaligned(LENGTHS, pad_value=float("nan"))).prediction
    assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(a, c, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", ["unaligned", "aligned"])
def test_batch_equals_samples_one_by_one(name, kind):
    model = make(name)
    inputs = unaligned(LENGTHS) if kind == "unaligned" else aligned([5, 3, 1, 4])
    together = model(inputs).prediction
    alone = torch.cat([model(select(inputs, i)).prediction for i in range(4)])
    assert torch.allclose(together, alone, atol=1e-5)


# ----------------------------------------------------------------------------------------- subsets


@pytest.mark.parametrize("name", NAMES)
def test_every_modality_subset(name):
    for k in (1, 2, 3):
        for subset in itertools.combinations(DIMS, k):
            dims = {m: DIMS[m] for m in subset}
            model = make(name, dims=dims)
            inputs = unaligned({m: LENGTHS[m] for m in subset}, dims)
            pred = model(inputs).prediction
            assert pred.shape == (4, 1) and torch.isfinite(pred).all(), subset
            alone = torch.cat([model(select(inputs, i)).prediction for i in range(4)])
            assert torch.allclose(pred, alone, atol=1e-5), subset


@pytest.mark.parametrize("name", NAMES)
def test_empty_modalities_and_empty_reference(name):
    model = make(name)
    inputs = unaligned({"text": [0, 3], "audio": [4, 5], "visual": [2, 0]})
    together = model(inputs).prediction
    assert torch.isfinite(together).all()
    alone = torch.cat([model(select(inputs, i)).prediction for i in range(2)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_missing_input_is_a_clear_error():
    model = make("tfn")
    inputs = unaligned(LENGTHS)
    del inputs["audio"]
    with pytest.raises(KeyError, match="audio"):
        model(inputs)


# ----------------------------------------------------------------------------------------- TFN


@pytest.mark.parametrize("subset", [("text",), ("audio", "visual"), ("text", "audio", "visual")])
def test_tfn_fused_dim_is_product_of_extended_dims(subset):
    dims = {m: DIMS[m] for m in subset}
    model = make("tfn", dims=dims)
    emb = model.embed.output_dims
    expected = math.prod(emb[m] + 1 for m in subset)
    assert model.fused_dim == expected
    assert model.post_fusion[0].in_features == expected
    assert model(unaligned({m: LENGTHS[m] for m in subset}, dims)).extras["fused_dim"] == expected


def test_tensor_fusion_is_the_outer_product_with_ones():
    g = torch.Generator().manual_seed(0)
    a, v, t = torch.randn(2, 3, generator=g), torch.randn(2, 4, generator=g), torch.randn(2, 2, generator=g)
    fused = tensor_fusion([a, v, t])
    expected = torch.einsum("bi,bj,bk->bijk", extend_with_one(a), extend_with_one(v), extend_with_one(t))
    assert fused.shape == (2, 4 * 5 * 3)
    assert torch.allclose(fused, expected.flatten(1))
    # the constant 1 keeps the unimodal and bimodal terms: the last entry is 1, and a's own values survive
    assert torch.allclose(fused[:, -1], torch.ones(2))
    assert torch.allclose(expected[:, :3, -1, -1], a)
    # the contraction used at inference equals the linear layer on the materialised tensor
    w = torch.randn(7, fused.shape[1], generator=g)
    ext = [extend_with_one(x) for x in (a, v, t)]
    assert torch.allclose(contract_fused(w, ext), fused @ w.t(), atol=1e-5)


def test_tfn_train_and_eval_paths_agree_without_dropout():
    model = make("tfn")
    inputs = aligned([5, 3, 1, 4])
    model.train()
    model.fusion_dropout.p = 1e-9  # takes the materialised path with a mask that keeps everything
    train_path = model(inputs).prediction
    model.eval()
    assert torch.allclose(train_path, model(inputs).prediction, atol=1e-5)


def test_tfn_fused_dropout_keep_rate():
    torch.manual_seed(0)
    mask, keep = dropout_mask((64, 10_000), 0.4)
    assert abs(keep - 0.6) < 1e-4
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert abs(mask.mean().item() - keep) < 0.005
    # rows differ (not one mask repeated)
    assert not torch.equal(mask[0], mask[1])


@pytest.mark.parametrize("dims", [(3, 4, 2), (5, 2), (4,)])
def test_tfn_dropped_fusion_linear_equals_autograd_on_the_masked_product(dims):
    g = torch.Generator().manual_seed(1)
    ext = [extend_with_one(torch.randn(3, d, generator=g)).requires_grad_() for d in dims]
    n = math.prod(d + 1 for d in dims)
    weight = torch.randn(5, n, generator=g, requires_grad=True)
    bias = torch.randn(5, generator=g, requires_grad=True)
    mask = (torch.rand(3, n, generator=g) < 0.6).float()
    upstream = torch.randn(3, 5, generator=g)
    before = [e.detach().clone() for e in ext]
    out = _DroppedFusionLinear.apply(mask, weight, bias, 1 / 0.6, *ext)
    fast = torch.autograd.grad(out, [weight, bias, *ext], upstream)
    assert all(torch.equal(a, b) for a, b in zip(ext, before))  # the inputs are never written
    z = ext[0]
    for e in ext[1:]:
        z = torch.einsum("bi,bj->bij", z, e).flatten(1)
    expected = (z * mask) @ weight.t() / 0.6 + bias
    slow = torch.autograd.grad(expected, [weight, bias, *ext], upstream)
    assert torch.allclose(out, expected, atol=1e-5)
    for a, b in zip(fast, slow):
        assert torch.allclose(a, b, atol=1e-4)


def test_tfn_dropped_fusion_linear_refuses_a_second_backward():
    ext = [extend_with_one(torch.randn(2, d)).requires_grad_() for d in (3, 2)]
    out = _DroppedFusionLinear.apply(torch.ones(2, 12), torch.randn(4, 12), torch.zeros(4), 1.0, *ext)
    out.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):  # not a silent wrong gradient
        out.sum().backward()


def test_tfn_training_path_uses_the_dropout_mask_and_its_keep_rate():
    torch.manual_seed(3)
    model = make("tfn", fusion_dropout=0.5)
    model.train()
    inputs = aligned([5, 3, 1, 4])
    torch.manual_seed(7)
    out = model(inputs).prediction
    # the same draw by hand: the mask from the same RNG state, then the explicit layer
    emb = model.embed(model.check_inputs(inputs))  # no dropout in the subnetworks (SMALL: dropout 0)
    torch.manual_seed(7)
    model.embed(model.check_inputs(inputs))
    mask, keep = dropout_mask((4, model.fused_dim), 0.5)
    x = F.relu(model.post_fusion[0](tensor_fusion([emb[m] for m in model.modalities]) * mask / keep))
    for layer in model.post_fusion[1:]:
        x = F.relu(layer(x))
    assert torch.allclose(out, model.bound_output(model.out(x)), atol=1e-5)
    assert 0.0 < mask.mean().item() < 1.0


# ----------------------------------------------------------------------------------------- LMF


def _fusion_params(model):
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("embed.", "absent_tokens.")))


def test_lmf_parameters_are_linear_in_the_dims_not_their_product():
    small = make("lmf", hidden_dims={"text": 4, "audio": 3, "visual": 5}, text_out=4)
    big = make("lmf", hidden_dims={"text": 4, "audio": 30, "visual": 50}, text_out=40)
    for model in (small, big):
        dims = model.embed.output_dims
        r, out = model.rank, model.output_dim
        assert _fusion_params(model) == r * out * sum(d + 1 for d in dims.values()) + r + out
    # TFN's fusion layer grows with the product; LMF's with the sum
    assert _fusion_params(big) < 20 * _fusion_params(small)
    product_ratio = (41 * 31 * 51) / (5 * 4 * 6)
    assert product_ratio > 500


def test_lmf_equals_the_full_low_rank_tensor_applied_to_the_tensor_fusion():
    model = make("lmf", task=emotion_intensity_task())
    inputs = unaligned(LENGTHS)
    out = model(inputs)
    emb = out.extras["embeddings"]
    z = tensor_fusion([emb[m] for m in model.modalities])  # [B, prod(d+1)], first modality slowest
    # W = sum_i lambda_i (x)_m w_m^(i): [prod(d+1), d_h]
    f = [model.factors[m] for m in model.modalities]  # [r, d+1, d_h]
    full = torch.einsum("r,rao,rbo,rco->abco", model.fusion_weights[0], *f).reshape(-1, model.output_dim)
    h = z @ full + model.fusion_bias
    assert torch.allclose(out.prediction, model.bound_output(h), atol=1e-5)
    assert out.extras["rank_terms"].shape == (4, model.rank, 6)


def test_lmf_rank_must_be_positive():
    with pytest.raises(ValueError, match="rank"):
        make("lmf", rank=0)


# ----------------------------------------------------------------------------------------- MFN


def reference_mfn(model, inputs):
    """MFN written step by step (LSTM cells, DMAN, gated memory), for full-length aligned inputs."""
    xs = {m: inputs[m][0] for m in model.modalities}
    batch, steps, _ = next(iter(xs.values())).shape
    h = {m: torch.zeros(batch, model.hidden[m]) for m in model.modalities}
    c = {m: torch.zeros(batch, model.hidden[m]) for m in model.modalities}
    u = torch.zeros(batch, model.mem_dim)
    for t in range(steps):
        prev = torch.cat([c[m] for m in model.modalities], -1)
        for m in model.modalities:
            lstm = model.lstms[m]
            gates = F.linear(xs[m][:, t], lstm.weight_ih_l0, lstm.bias_ih_l0) + F.linear(
                h[m], lstm.weight_hh_l0, lstm.bias_hh_l0
            )
            i, f, g, o = gates.chunk(4, -1)
            c[m] = torch.sigmoid(f) * c[m] + torch.sigmoid(i) * torch.tanh(g)
            h[m] = torch.sigmoid(o) * torch.tanh(c[m])
        cstar = torch.cat([prev, torch.cat([c[m] for m in model.modalities], -1)], -1)
        chat = torch.softmax(model.attention(cstar), -1) * cstar
        proposal = torch.tanh(model.proposal(chat))
        both = torch.cat([chat, u], -1)
        u = torch.sigmoid(model.gamma1(both)) * u + torch.sigmoid(model.gamma2(both)) * proposal
    rep = torch.cat([h[m] for m in model.modalities] + [u], -1)
    return model.bound_output(model.head(rep))


def test_mfn_equals_the_step_by_step_reference():
    model = make("mfn", task=emotion_intensity_task())
    inputs = {m: ModalityTensor(v[:, :6], mask[:, :6]) for m, (v, mask) in aligned([6, 6, 6]).items()}
    out = model(inputs)
    assert out.extras["alignment"] == "given"
    expected = reference_mfn(model, inputs)
    assert torch.allclose(out.prediction, expected, atol=1e-5)
    with torch.no_grad():  # the inference path steps the LSTMs itself (grouped); same function
        assert torch.allclose(model(inputs).prediction, expected, atol=1e-5)


def test_mfn_grouped_lstms_equal_nn_lstm_with_rebuilt_cells_on_padded_unaligned_input():
    sizes = {"text": 4, "audio": 2, "visual": 5}
    grouped = make("mfn", hidden_dims=sizes)
    rebuilt = make("mfn", hidden_dims=sizes, grouped_lstms=False)
    inputs = unaligned(LENGTHS, pad_value=float("nan"))
    a, b = grouped(inputs), rebuilt(inputs)
    assert torch.allclose(a.prediction, b.prediction, atol=1e-5)
    for key in ("memory", "attention", "gamma1"):
        assert torch.allclose(a.extras[key], b.extras[key], atol=1e-5), key
    with torch.no_grad():
        assert torch.allclose(grouped(inputs).prediction, a.prediction, atol=1e-6)


def test_mfn_grouped_lstm_backward_passes_gradcheck():
    from emofusion.models.mfn import GroupedLSTM

    g = torch.Generator().manual_seed(0)
    proj = torch.randn(2, 4, 3, 8, generator=g, dtype=torch.float64, requires_grad=True)
    w_hh = (0.5 * torch.randn(2, 2, 8, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(GroupedLSTM.apply, (proj, w_hh), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("grouped", [True, False])
def test_mfn_gradients_match_the_reference(grouped):
    model = make("mfn", grouped_lstms=grouped)
    model.train()  # dropout is 0 in SMALL: train mode only changes the bound_output clamp to straight-through
    inputs = {m: ModalityTensor(v[:, :5], mask[:, :5]) for m, (v, mask) in aligned([5, 5]).items()}
    model(inputs).prediction.sum().backward()
    fast = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    reference_mfn(model, inputs).sum().backward()
    for n, p in model.named_parameters():
        if n.startswith("absent_tokens."):  # no sample is absent here; the reference has no absent token
            continue
        assert torch.allclose(fast[n], p.grad, atol=1e-5), n


def test_mfn_memory_and_gate_ranges():
    model = make("mfn")
    inputs = unaligned(LENGTHS)
    out = model(inputs)
    mask = out.extras["time_mask"]
    for key in ("gamma1", "gamma2"):
        gam = out.extras[key]
        assert (gam[mask] > 0).all() and (gam[mask] < 1).all(), key
        assert (gam[~mask] == 0).all(), key
    att = out.extras["attention"]
    sums = att.sum(-1)
    assert torch.allclose(sums[mask], torch.ones_like(sums[mask]), atol=1e-5)
    assert (att[mask] > 0).all()
    # u_t = g1 u_{t-1} + g2 tanh(.) with gates in (0, 1): |u_t| < |u_{t-1}| + 1, and u_0 is within (-1, 1)
    mem = out.extras["memory"]
    bound = torch.arange(1, mem.shape[1] + 1, dtype=mem.dtype).view(1, -1, 1)
    assert (mem.abs() < bound).all()
    assert out.extras["alignment"] == "resampled:text"
    assert mask.shape == inputs["text"].mask.shape


def test_mfn_holds_memory_after_the_last_real_step():
    model = make("mfn")
    short = aligned([3])
    padded = unaligned({m: [3] for m in DIMS}, pad_value=5.0)  # same 3 steps, 2 padded steps after
    assert torch.allclose(model(short).prediction, model(padded).prediction, atol=1e-6)


def test_mfn_gate_reading_option_and_reference():
    a = make("mfn")
    b = make("mfn", gates_see_memory=False)
    assert b.gamma1.fc1.in_features == a.gamma1.fc1.in_features - a.mem_dim
    inputs = unaligned(LENGTHS)
    pb = b(inputs).prediction
    assert torch.allclose(pb, torch.cat([b(select(inputs, i)).prediction for i in range(4)]), atol=1e-5)
    with pytest.raises(ValueError, match="reference"):
        make("mfn", reference="smell")
    assert make("mfn", dims={"audio": 5, "visual": 4}).reference == "audio"


# ----------------------------------------------------------------------------------------- learning


@pytest.mark.parametrize("name", NAMES)
def test_tiny_overfit_loss_goes_down(name):
    model = make(name, task=emotion_intensity_task())
    model.train()
    inputs = unaligned(LENGTHS)
    target = torch.rand(4, 6, generator=torch.Generator().manual_seed(3)) * 3
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = F.mse_loss(model(inputs).prediction, target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses[::10]


def test_mfn_gated_memory_backward_passes_gradcheck():
    from emofusion.models.mfn import GatedMemory

    g = torch.Generator().manual_seed(0)
    b, t, h1, h2, mem = 2, 4, 3, 2, 3

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)

    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    keep1 = (torch.rand(b, t, h1, generator=g) < 0.7).double() / 0.7  # dropout on the first gate only
    args = (rand(b, t, h1 + h2), torch.tanh(rand(b, t, mem)).detach().requires_grad_(), mask)
    args += (rand(h1 + h2, mem), rand(mem, h1), rand(mem), rand(mem, h2), rand(mem), keep1, None)
    assert torch.autograd.gradcheck(lambda *a: GatedMemory.apply(*a), args, eps=1e-6, atol=1e-5)


def test_a_per_modality_option_without_numbers_is_refused():
    # YAML reads {audio:32,visual:128} (no spaces) as keys "audio:32" with no value: a silent default before
    from emofusion.models.tfn import _per_modality

    with pytest.raises(ValueError, match=r"hidden_dims: every value must be a number.*space after each colon"):
        _per_modality({"audio:32": None, "visual:128": None}, ["audio", "visual"], "hidden_dims")
    assert _per_modality({"audio": 32, "text": 4}, ["audio", "visual"], "hidden_dims", {"visual": 128}) == {
        "audio": 32, "visual": 128}


def test_mfn_under_bf16_autocast_runs_in_fp32_and_trains():
    # its hand-written recurrences have no bf16 path: under autocast the model runs in fp32 (same output)
    model = make("mfn", attn_dropout=0.0).train()
    inputs = aligned([5, 3, 1, 4])
    expected = model(inputs).prediction
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(inputs).prediction
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", ["tfn", "lmf"])
@pytest.mark.parametrize("absent", ["token", "zeros"])
def test_declared_time_averaged_inputs_give_the_same_output_averaged_once(name, absent):
    """The engine replaces the inputs a model declares as time-averaged by their one-step mean
    (``TimeAverage``) before training; the model's output must not change (unequal lengths, a one-step and an
    absent sample, padding filled with garbage)."""
    import numpy as np

    from emofusion.data.batch import Sample
    from emofusion.data.collate import collate_samples
    from emofusion.data.dataset import TimeAverage

    model = make(name, absent=absent)
    assert model.time_averaged_inputs() == ("audio", "visual")  # text is the LSTM's sequence
    assert make(name, sequence_modalities=("text", "audio")).time_averaged_inputs() == ("visual",)
    rng = np.random.default_rng(0)
    lengths = {"text": [5, 3, 1, 4], "audio": [20, 9, 0, 13], "visual": [8, 1, 2, 3]}
    samples = [
        Sample(f"s{i}", {m: rng.normal(size=(lengths[m][i], d)).astype(np.float32) * 3 for m, d in DIMS.items()},
               np.zeros(1, np.float32))
        for i in range(4)
    ]
    full = collate_samples(samples).inputs
    averaged = [TimeAverage(model.time_averaged_inputs())(s) for s in samples]
    assert averaged[0].features["audio"].shape == (1, 5) and averaged[2].features["audio"].shape == (0, 5)
    assert averaged[0].features["text"].shape == (5, 6)  # a sequence input is left alone
    short = collate_samples(averaged).inputs
    assert short["audio"].values.shape[1] == 1
    with torch.no_grad():
        torch.testing.assert_close(model(short).prediction, model(full).prediction, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------- LF-DNN


def _lf_dnn_reference(model, inputs):
    """LF-DNN written out: BN (running stats) -> 3 x relu(FC) on each averaged stream; LSTM run on each
    sample's real words alone, its last state -> FC; concatenation in modality order -> 2 x relu(FC) -> FC."""
    rows = []
    for b in range(inputs["text"].values.shape[0]):
        parts = []
        for m in model.modalities:
            values, mask = inputs[m]
            real = values[b][mask[b]]
            net = model.embed.nets[m]
            if m == "text":
                _, (h, _) = net.encoder.lstm(real.unsqueeze(0))
                parts.append(h[-1, 0] @ net.linear.weight.T + net.linear.bias)
            else:
                x = real.mean(0)
                bn = net.norm
                x = (x - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
                for lin in net.linears:
                    x = torch.relu(x @ lin.weight.T + lin.bias)
                parts.append(x)
        x = torch.cat(parts)
        for lin in model.post_fusion:
            x = torch.relu(x @ lin.weight.T + lin.bias)
        rows.append(x @ model.out.weight.T + model.out.bias)
    return torch.stack(rows)


def test_lf_dnn_equals_the_written_out_formula_on_unaligned_input():
    from emofusion.tasks import TaskSpec

    task = TaskSpec("multi_regression", ("a", "b"))
    model = make("lf_dnn", task=task)
    for m in ("audio", "visual"):  # non-trivial batch-norm statistics, so the test sees them
        bn = model.embed.nets[m].norm
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    inputs = unaligned(LENGTHS, pad_value=7.0)
    with torch.no_grad():
        ours = model(inputs).prediction
        ref = _lf_dnn_reference(model, inputs)
    assert ours.shape == (4, 2)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_lf_dnn_sizes_and_parameter_count_are_mmsas_mosei_configuration():
    model = create_model("lf_dnn", {"text": 300, "audio": 74, "visual": 35}, sentiment_task())
    emb = model.embed.nets
    assert emb["text"].encoder.lstm.hidden_size == 128 and emb["text"].linear.out_features == 128
    assert [lin.out_features for lin in emb["audio"].linears] == [32, 32, 32]
    assert [lin.out_features for lin in emb["visual"].linears] == [128, 128, 128]
    assert model.post_fusion[0].in_features == 128 + 32 + 128 and model.post_fusion[0].out_features == 128
    assert model.time_averaged_inputs() == ("audio", "visual")

    def lin(i, o):
        return i * o + o

    lstm = 4 * 128 * (300 + 128) + 2 * 4 * 128
    text = lstm + lin(128, 128)
    audio = 2 * 74 + lin(74, 32) + 2 * lin(32, 32)  # batch-norm weight and bias, then 3 FC
    visual = 2 * 35 + lin(35, 128) + 2 * lin(128, 128)
    fusion = lin(288, 128) + lin(128, 128) + lin(128, 1)
    tokens = 300 + 74 + 35  # emofusion's learned absent-modality steps (not in MMSA)
    assert model.num_parameters() == text + audio + visual + fusion + tokens


def test_lf_dnn_matches_mmsas_lf_dnn_with_the_same_weights():
    """Same weights, full-length text (MMSA's LSTM reads the padded end; here nothing is padded)."""
    pytest.importorskip("MMSA", reason="MMSA (pip install emofusion[peers]) is not installed")
    from types import SimpleNamespace

    from MMSA.models.singleTask.LF_DNN import LF_DNN

    from emofusion.tasks import TaskSpec

    dims = {"text": 6, "audio": 5, "visual": 4}
    task = TaskSpec("multi_regression", ("s",))
    torch.manual_seed(0)
    ours = create_model("lf_dnn", dims, task, hidden_dims={"text": 8, "audio": 3, "visual": 5}, text_out=7,
                        post_fusion_dim=9).eval()
    args = SimpleNamespace(feature_dims=[6, 5, 4], hidden_dims=[8, 3, 5], text_out=7, post_fusion_dim=9,
                           dropouts=[0.2] * 4, train_mode="regression")
    theirs = LF_DNN(args).eval()
    t, a, v = ours.embed.nets["text"], ours.embed.nets["audio"], ours.embed.nets["visual"]
    with torch.no_grad():
        theirs.text_subnet.rnn.load_state_dict(t.encoder.lstm.state_dict())
        theirs.text_subnet.linear_1.load_state_dict(t.linear.state_dict())
        for mine, sub in ((a, theirs.audio_subnet), (v, theirs.video_subnet)):
            sub.norm.load_state_dict(mine.norm.state_dict())
            for k, lin in enumerate((sub.linear_1, sub.linear_2, sub.linear_3)):
                lin.load_state_dict(mine.linears[k].state_dict())
        # MMSA concatenates [audio, video, text]; emofusion in modality order [text, audio, visual]
        w = ours.post_fusion[0].weight
        theirs.post_fusion_layer_1.weight.copy_(torch.cat([w[:, 7:10], w[:, 10:15], w[:, :7]], 1))
        theirs.post_fusion_layer_1.bias.copy_(ours.post_fusion[0].bias)
        theirs.post_fusion_layer_2.load_state_dict(ours.post_fusion[1].state_dict())
        theirs.post_fusion_layer_3.load_state_dict(ours.out.state_dict())
        g = torch.Generator().manual_seed(3)
        text = torch.randn(3, 6, 6, generator=g)
        audio, visual = torch.randn(3, 1, 5, generator=g), torch.randn(3, 1, 4, generator=g)
        full = lambda x: ModalityTensor(x, torch.ones(x.shape[:2], dtype=torch.bool))  # noqa: E731
        mine = ours({"text": full(text), "audio": full(audio), "visual": full(visual)}).prediction
        ref = theirs(text, audio, visual)["M"]
    torch.testing.assert_close(mine, ref, atol=1e-5, rtol=1e-5)
