"""RMFN (paper 001) mechanics: attention, stages, z feedback, ablation switches, masking, alignment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from emofusion.data.batch import ModalityTensor
from emofusion.models import create_model
from emofusion.tasks import emotion_intensity_task, sentiment_task
from helpers import select

DIMS = {"text": 6, "audio": 5, "visual": 4}
SMALL = dict(hidden_dim=4, fuse_dim=5, z_dim=3, summarize_dim=7, head_dim=6, dropout=0.0)


def make(**options):
    torch.manual_seed(0)
    model = create_model("rmfn", DIMS, emotion_intensity_task(), **{**SMALL, **options})
    return model.eval()


def batch(lengths, dims=DIMS, seed=1):
    """Aligned batch: every modality has the same padded length; per-sample lengths may differ by modality."""
    if not isinstance(lengths, dict):
        lengths = {m: lengths for m in dims}
    steps = max(max(v) for v in lengths.values())
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, d in dims.items():
        mask = torch.arange(steps).unsqueeze(0) < torch.tensor(lengths[m]).unsqueeze(1)
        out[m] = ModalityTensor(
            torch.randn(len(lengths[m]), steps, d, generator=g) * mask.unsqueeze(-1), mask
        )
    return out


def unaligned_batch(lengths: dict[str, list[int]], seed=2):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, lens in lengths.items():
        lens_t = torch.tensor(lens)
        t = max(lens)
        mask = torch.arange(t).unsqueeze(0) < lens_t.unsqueeze(1)
        out[m] = ModalityTensor(torch.randn(len(lens), t, DIMS[m], generator=g) * mask.unsqueeze(-1), mask)
    return out


@pytest.mark.parametrize("stages", [1, 2, 4])
def test_k_stages_give_k_weight_vectors_summing_to_one(stages):
    model = make(stages=stages)
    inputs = batch([5, 3, 1])
    out = model(inputs)
    a = out.extras["highlight"]
    d = model.hidden_dim * len(DIMS)
    assert a.shape == (3, 5, stages, d)
    real = inputs["text"].mask
    sums = a.sum(-1)
    assert torch.allclose(sums[real], torch.ones_like(sums[real]), atol=1e-5)
    assert torch.all(a[~real] == 0)
    assert torch.all(a[real] > 0)
    # weights of different stages differ (the decoder depends on earlier attention)
    if stages > 1:
        assert not torch.allclose(a[0, 0, 0], a[0, 0, 1])


def test_prediction_shape_and_representation_e():
    model = make(stages=3)
    out = model(batch([4, 2]))
    assert out.prediction.shape == (2, 6)
    # E = (⊕_m h_T^m) ⊕ z_T
    rep = out.extras["representation"]
    assert rep.shape == (2, 3 * 4 + 3)
    assert torch.allclose(rep[:, 12:], out.extras["z"][torch.arange(2), torch.tensor([3, 1])])


def test_z_feeds_back_into_lsthm_gates():
    model = make()
    inputs = batch([5, 4])
    h_before = model(inputs).extras["representation"][:, :12].clone()
    with torch.no_grad():
        model.lsthm.V.weight.add_(0.5)
    h_after = model(inputs).extras["representation"][:, :12]
    assert not torch.allclose(h_before, h_after)
    # with V = 0 the LSTHMs are exactly the plain LSTMs of the no-MFP model with the same W, U
    with torch.no_grad():
        model.lsthm.V.weight.zero_()
    plain = make(mfp=False)
    plain.lsthm.load_state_dict({k: v for k, v in model.lsthm.state_dict().items() if not k.startswith("V.")})
    assert torch.allclose(
        model(inputs).extras["representation"][:, :12], plain(inputs).extras["representation"]
    )


def test_no_mfp_switch_removes_exactly_the_fusion():
    full, plain = make(), make(mfp=False)
    assert plain.fusion is None and plain.lsthm.V is None
    assert full.fusion is not None and full.lsthm.V is not None
    full_names = {n for n, _ in full.named_parameters()}
    plain_names = {n for n, _ in plain.named_parameters()}
    assert plain_names < full_names
    extra = full_names - plain_names
    assert {n for n in extra if not n.startswith(("fusion.", "lsthm.V"))} == set()
    out = plain(batch([3, 2]))
    assert "highlight" not in out.extras and "z" not in out.extras
    assert out.extras["representation"].shape == (2, 12)
    assert plain.head.net[0].in_features == 12 and full.head.net[0].in_features == 15


def test_no_highlight_equals_uniform_attention():
    """FUSE on the unhighlighted h_t == full model whose HIGHLIGHT always outputs uniform weights."""
    full, nohl = make(), make(highlight=False)
    assert not hasattr(nohl.fusion, "highlight_cell") and not hasattr(nohl.fusion, "memory_init")
    with torch.no_grad():
        # c^HIGHLIGHT stays 0 -> decoder output 0 -> softmax uniform -> h ⊙ a * D == h
        for p in list(full.fusion.highlight_cell.parameters()) + list(full.fusion.memory_init.parameters()):
            p.zero_()
    missing, unexpected = nohl.load_state_dict(full.state_dict(), strict=False)
    assert missing == [] and all(
        k.startswith(("fusion.highlight_cell", "fusion.memory_init")) for k in unexpected
    )
    inputs = batch([5, 2, 3])
    out_full, out_nohl = full(inputs), nohl(inputs)
    assert torch.allclose(out_full.prediction, out_nohl.prediction, atol=1e-6)
    assert "highlight" not in out_nohl.extras
    a = out_full.extras["highlight"][inputs["text"].mask]
    assert torch.allclose(a, torch.full_like(a, 1.0 / 12))
    # and the trained (non-zero) highlight does change the result
    assert not torch.allclose(make()(inputs).prediction, out_nohl.prediction)


@pytest.mark.parametrize(
    "options",
    [{}, {"mfp": False}, {"highlight": False}, {"stages": 2, "summarize": "last"}, {"align": "index"}],
)
def test_batch_equals_one_by_one_and_padding_is_ignored(options):
    model = make(**options)
    lengths = {"text": [6, 3, 4], "audio": [6, 2, 0], "visual": [5, 3, 1]}
    inputs = batch(lengths)
    out = model(inputs)
    for i in range(3):
        alone = model(select(inputs, i))
        assert torch.allclose(out.prediction[i], alone.prediction[0], atol=1e-5)
        if "highlight" in out.extras:
            n = alone.extras["highlight"].shape[1]
            assert torch.allclose(out.extras["highlight"][i, :n], alone.extras["highlight"][0], atol=1e-5)
    garbage = {
        m: ModalityTensor(torch.where(mask.unsqueeze(-1), v, torch.full_like(v, 1e3)), mask)
        for m, (v, mask) in inputs.items()
    }
    assert torch.allclose(model(garbage).prediction, out.prediction)
    assert torch.isfinite(out.prediction).all()


def test_state_stops_at_each_sequences_last_real_step():
    model = make()
    inputs = batch([3, 3])
    longer = {
        m: ModalityTensor(
            torch.cat([v, torch.randn(2, 4, v.shape[-1])], 1),
            torch.cat([mask, torch.zeros(2, 4, dtype=torch.bool)], 1),
        )
        for m, (v, mask) in inputs.items()
    }
    assert torch.allclose(model(inputs).prediction, model(longer).prediction)


def test_unaligned_input_is_resampled_to_the_reference_and_batch_independent():
    model = make()
    inputs = unaligned_batch({"text": [4, 2, 3], "audio": [37, 20, 9], "visual": [12, 7, 0]})
    out = model(inputs)
    assert out.extras["alignment"] == "resampled:text"
    assert out.extras["highlight"].shape[1] == 4  # text axis
    for i in range(3):
        alone = model(select(inputs, i))
        assert torch.allclose(out.prediction[i], alone.prediction[0], atol=1e-5)
    assert make()(batch([3, 3])).extras["alignment"] == "given"


def test_modality_subsets_and_string_options():
    torch.manual_seed(0)
    model = create_model(
        "rmfn", {"audio": 5, "visual": 4}, sentiment_task(), mfp="false", stages="2", **SMALL
    )
    assert model.fusion is None and model.stages == 2
    model = create_model("rmfn", {"audio": 5, "visual": 4}, sentiment_task(), highlight="false", **SMALL)
    assert model.mfp and not model.highlight and model.reference == "audio"
    with pytest.raises(ValueError, match="stages"):
        create_model("rmfn", DIMS, sentiment_task(), stages=0)


def test_training_reduces_loss_and_all_parameters_get_gradients():
    torch.manual_seed(0)
    model = create_model("rmfn", DIMS, sentiment_task(), **SMALL).train()
    inputs = batch([5, 4, 3, 5, 2, 1])
    target = torch.linspace(-2, 2, 6).unsqueeze(1)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(inputs).prediction, target)
        loss.backward()
        if not losses:
            # absent tokens learn only from samples missing a modality (none here)
            no_grad = [n for n, p in model.named_parameters()
                       if (p.grad is None or not p.grad.abs().sum() > 0) and not n.startswith("absent_tokens.")]
            assert no_grad == []
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def test_fig3_plot_is_written(tmp_path):
    from emofusion.data import load_dataset
    from emofusion.evaluation.rmfn_plots import highlight_figure, plot_highlight

    bundle = load_dataset("synthetic:aligned", n_train=1, n_val=1, n_test=2, corrupt=False, max_words=8)
    torch.manual_seed(0)
    model = create_model(
        "rmfn", bundle.modality_dims, bundle.task, stages=2, hidden_dim=4, fuse_dim=4, z_dim=4
    )
    path = plot_highlight(model, bundle.test[0], tmp_path / "fig3.png")
    assert path.exists() and path.stat().st_size > 1000
    with pytest.raises(ValueError, match="T, K, D"):
        highlight_figure(torch.zeros(3, 4).numpy(), {"text": (0, 4)})
    with pytest.raises(ValueError, match="HIGHLIGHT"):
        plot_highlight(
            create_model("rmfn", bundle.modality_dims, bundle.task, mfp=False, hidden_dim=4),
            bundle.test[0],
            tmp_path / "none.png",
        )


def test_protocol_views_of_the_synthetic_benchmark():
    from emofusion.data import load_dataset

    binary = load_dataset("synthetic-p001:binary", n_train=40, n_val=2, n_test=2)
    traits = load_dataset("synthetic-p001:traits", n_train=40, n_val=2, n_test=2)
    base = load_dataset("synthetic:aligned", n_train=40, n_val=2, n_test=2)
    assert binary.task.kind == "multilabel_binary" and binary.task.output_names[-1] == "neutral"
    for i in range(40):
        y = base.train[i].label
        b = binary.train[i].label
        assert b[-1] == float(not (y > 0).any())  # neutral = no emotion present
        assert b[0] == float(y[3] > 0)  # happy
    t = torch.tensor(np.stack([traits.train[i].label for i in range(40)]))
    assert traits.task.kind == "multi_regression" and t.shape == (40, 4)
    assert (t[:, :3] >= 1).all() and (t[:, :3] <= 7).all() and (t[:, 3] <= 5).all()
    assert t.std(0).min() > 0.1
    with pytest.raises(ValueError, match="unknown view"):
        load_dataset("synthetic-p001:nope")


MMMO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mfn_h5" / "mmmo"


@pytest.mark.skipif(not MMMO.exists(), reason=f"real ICT-MMMO features not found at {MMMO}")
def test_runs_on_real_ict_mmmo_word_slots():
    from emofusion.data import load_dataset
    from emofusion.data.collate import collate_samples

    bundle = load_dataset(f"wordslots:mfn:{MMMO}", modalities="audio,visual", limit=6)
    samples = [bundle.train[i] for i in range(6)]
    batch = collate_samples(samples, ["audio", "visual"])
    inputs = {m: ModalityTensor(torch.nan_to_num(v), mask) for m, (v, mask) in batch.inputs.items()}
    torch.manual_seed(0)
    model = create_model("rmfn", bundle.modality_dims, bundle.task, **SMALL).eval()
    out = model(inputs)
    assert out.extras["alignment"] == "given"  # word slots: both modalities share the axis
    assert torch.isfinite(out.prediction).all() and out.prediction.shape == (6, 1)
