"""Absent modalities (a sample with no frame of a modality): one learned token per modality, for every model."""

from __future__ import annotations

import pytest
import torch

from emofusion.data.batch import ModalityTensor
from emofusion.models import create_model, list_models
from emofusion.tasks import sentiment_task

DIMS = {"text": 6, "audio": 5, "visual": 4}
TASK = sentiment_task()
# small options where a model's defaults are large; conversation models (sequence labels) keep "zeros"
SMALL = {
    "mult": {"d_model": 8, "num_heads": 2, "cross_layers": 1, "self_layers": 1},
    "delta_attention": {},
}
CONVERSATION = ("clstm_", "mman")


def segment_models():
    """Models trained by gradient steps; the classical baselines (fitted once, absence as a pooled ``present``
    statistic) are tested in tests/test_classical.py."""
    from emofusion.models.registry import MODELS

    return [m for m in list_models() if not m.startswith(CONVERSATION)
            and not getattr(MODELS.get(m), "fits_closed_form", False)]


def build(name, dims=DIMS, **options):
    torch.manual_seed(0)
    try:
        return create_model(name, dims, TASK, **{**SMALL.get(name, {}), **options})
    except (ValueError, TypeError):
        # unimodal models
        return create_model(name, {"audio": dims["audio"]}, TASK, **{**SMALL.get(name, {}), **options})


def inputs(lengths: dict[str, list[int]], dims=DIMS, seed=0, steps=None):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, ls in lengths.items():
        t = steps if steps is not None else max(max(ls), 1)
        mask = torch.arange(t).unsqueeze(0) < torch.tensor(ls).unsqueeze(1)
        out[m] = ModalityTensor(torch.randn(len(ls), t, dims[m], generator=g) * mask.unsqueeze(-1), mask)
    return out


def for_model(model, batch):
    return {m: batch[m] for m in model.modalities}


def test_check_inputs_puts_the_learned_token_at_step_0_of_absent_samples_only():
    model = build("tfn")
    batch = inputs({"text": [3, 2], "audio": [0, 4], "visual": [2, 2]})
    checked = model.check_inputs(batch)
    values, mask = checked["audio"]
    token = model.absent_tokens[model.modalities.index("audio")]
    assert mask[0].tolist() == [True, False, False, False] and mask[1].tolist() == [True] * 4
    torch.testing.assert_close(values[0, 0], token)
    torch.testing.assert_close(values[1], batch["audio"].values[1])
    assert model.absent_flags["audio"].tolist() == [True, False]
    assert model.absent_flags["text"].tolist() == [False, False]


def test_absent_is_not_average_and_the_difference_is_learned():
    """TFN pools a modality by its masked mean: with absent='zeros' an absent audio stream and one frame at
    the standardised mean (0) are the same input; the token tells them apart, and training uses that."""
    one = inputs({"text": [3], "audio": [1], "visual": [2]}, seed=1)
    base = {m: ModalityTensor(v.repeat(8, 1, 1), k.repeat(8, 1)) for m, (v, k) in one.items()}  # same text, visual
    audio_mask = torch.tensor([False, True] * 4).unsqueeze(1)  # even: absent, odd: one frame at the mean
    batch = {**base, "audio": ModalityTensor(torch.zeros(8, 1, 5), audio_mask)}
    target = torch.where(audio_mask, -1.5, 1.5)
    small = {"hidden_dims": {"text": 4, "audio": 4, "visual": 4}, "text_out": 4, "dropout": 0.0, "fusion_dropout": 0.0}
    for mode, separable in (("zeros", False), ("token", True)):
        model = build("tfn", absent=mode, **small).eval()
        pred = model(batch).prediction
        assert torch.allclose(pred[0::2], pred[1::2], atol=1e-6) is not separable
        # fit: absent -> 1.5, average -> -1.5 (same text and visual): only the token can separate them
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=0.02)
        for _ in range(150):
            loss = (model(batch).prediction - target).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        pred = model.eval()(batch).prediction
        gap = float((pred[0::2] - pred[1::2]).mean())
        assert (gap > 1.5) is separable, (mode, gap)


@pytest.mark.parametrize("name", segment_models())
def test_every_model_runs_when_a_modality_is_absent_for_every_sample(name):
    model = build(name).eval()
    for steps in (None, 0):  # all-False masks, and a batch without any step of the modality
        lengths = {"text": [3, 2, 4], "audio": [0, 0, 0], "visual": [2, 0, 3]}
        batch = inputs(lengths)
        if steps == 0:
            batch["audio"] = ModalityTensor(torch.zeros(3, 0, 5), torch.zeros(3, 0, dtype=torch.bool))
        pred = model(for_model(model, batch)).prediction
        assert pred.shape == (3, 1) and torch.isfinite(pred).all(), name


@pytest.mark.parametrize("name", segment_models())
def test_gradient_reaches_the_absent_token_and_padding_changes_nothing(name):
    model = build(name)
    if not hasattr(model, "absent_tokens"):
        assert name in ("mean", "random_baseline")  # read no inputs
        return
    model.train()
    batch = inputs({"text": [3, 2, 4], "audio": [0, 3, 2], "visual": [2, 2, 0]})
    model(for_model(model, batch)).prediction.sum().backward()
    index = model.modalities.index("audio")
    assert model.absent_tokens[index].grad is not None and model.absent_tokens[index].grad.abs().sum() > 0, name
    # padding invariance: the absent sample alone, with 5 extra padding steps, predicts the same
    model.eval()
    full = model(for_model(model, batch)).prediction
    alone = {m: ModalityTensor(v[:1], k[:1]) for m, (v, k) in batch.items()}
    padded = {
        m: ModalityTensor(torch.cat([v, torch.zeros(1, 5, v.shape[2])], 1), torch.cat([k, torch.zeros(1, 5, dtype=torch.bool)], 1))
        for m, (v, k) in alone.items()
    }
    a, b = model(for_model(model, alone)).prediction, model(for_model(model, padded)).prediction
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a, full[:1], atol=1e-5, rtol=1e-4)


def test_absent_option_is_validated_and_zeros_has_no_token():
    assert not hasattr(build("tfn", absent="zeros"), "absent_tokens")
    assert build("tfn").absent_mode == "token"
    with pytest.raises(ValueError, match="absent must be one of"):
        build("tfn", absent="learned")


@pytest.mark.parametrize("name", ["lmf", "early_fusion_lstm", "mult"])
def test_a_batch_without_absent_samples_leaves_the_inputs_alone_and_every_token_gets_a_zero_gradient(name):
    model = build(name).train()
    batch = inputs({"text": [3, 2], "audio": [5, 4], "visual": [2, 1]})
    checked = model.check_inputs(batch)
    for m in model.modalities:  # not copied, not made differentiable
        assert checked[m].values is batch[m].values and not checked[m].values.requires_grad
    model.zero_grad(set_to_none=True)
    model(batch).prediction.sum().backward()
    # every token is in the graph (DDP needs a gradient for every parameter), with a zero gradient
    for token in model.absent_tokens:
        assert token.grad is not None and torch.count_nonzero(token.grad) == 0
    # with one sample lacking audio, the audio token gets a real gradient
    model.zero_grad(set_to_none=True)
    model(inputs({"text": [3, 2], "audio": [0, 4], "visual": [2, 1]})).prediction.sum().backward()
    assert torch.count_nonzero(model.absent_tokens[model.modalities.index("audio")].grad) > 0
