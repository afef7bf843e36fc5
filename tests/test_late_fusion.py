"""Paper 000's late-fusion baseline: per-view predictions combined with learned linear weights."""

from __future__ import annotations

import torch

from emofusion.data.batch import ModalityTensor
from emofusion.models import create_model
from emofusion.tasks import classification_task, emotion_intensity_task

DIMS = {"text": 7, "audio": 5, "visual": 4}
LENGTHS = {"text": [5, 3, 1], "audio": [12, 20, 7], "visual": [4, 6, 2]}


def make_inputs(pad_extra: int = 0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, lens in LENGTHS.items():
        steps = max(lens) + pad_extra
        mask = torch.arange(steps).unsqueeze(0) < torch.tensor(lens).unsqueeze(1)
        values = torch.randn(3, steps, DIMS[m], generator=g)
        values = torch.where(mask.unsqueeze(-1), values, torch.randn(values.shape, generator=g) * 100)
        out[m] = ModalityTensor(values, mask)
    return out


def build(**options):
    torch.manual_seed(0)
    return create_model(
        "late_fusion", DIMS, emotion_intensity_task(), encoder_dim=4, dropout=0.0, **options
    ).eval()


def test_prediction_is_linear_combination_of_view_predictions():
    model = build()
    out = model(make_inputs())
    assert out.prediction.shape == (3, 6)
    views = out.extras["view_predictions"]
    assert set(views) == set(DIMS)
    w = out.extras["view_weights"]
    torch.testing.assert_close(w, torch.full((3, 6), 1 / 3))
    raw = sum(w[i] * views[m] for i, m in enumerate(model.modalities)) + model.bias
    torch.testing.assert_close(out.prediction, model.bound_output(raw))


def test_one_layer_heads_and_padding_invariance():
    model = build()
    for head in model.heads.values():
        assert sum(isinstance(x, torch.nn.Linear) for x in head.modules()) == 1
    ref = model(make_inputs(seed=1)).prediction
    # the same real steps with different garbage and extra padding
    a, b = make_inputs(0, seed=1), make_inputs(5, seed=2)
    mixed = {}
    for m in DIMS:
        v = b[m].values.clone()
        v[:, : a[m].values.shape[1]] = torch.where(
            a[m].mask.unsqueeze(-1), a[m].values, v[:, : a[m].values.shape[1]]
        )
        mixed[m] = ModalityTensor(v, b[m].mask)
    torch.testing.assert_close(model(mixed).prediction, ref)
    one = {
        m: ModalityTensor(t.values[1:2, : LENGTHS[m][1]], t.mask[1:2, : LENGTHS[m][1]]) for m, t in a.items()
    }
    torch.testing.assert_close(model(one).prediction[0], ref[1], rtol=1e-5, atol=1e-5)


def test_weights_are_learned_and_subsets_work():
    model = build()
    model.train()
    model(make_inputs()).prediction.sum().backward()
    assert model.view_weights.grad is not None and model.view_weights.grad.abs().sum() > 0
    torch.manual_seed(0)
    cls = create_model(
        "late_fusion", {"audio": 5}, classification_task(["x", "y"]), encoder_dim=4, head_dim=8
    )
    out = cls({"audio": make_inputs()["audio"]})
    assert out.prediction.shape == (3, 2)
