"""head='zero_inflated' (presence x intensity) and the zero_inflated loss, for any model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from emofusion.data.batch import ModalityTensor
from emofusion.models import create_model
from emofusion.tasks import emotion_intensity_task, sentiment_task
from emofusion.training.losses import task_loss

TASK = emotion_intensity_task()
DIMS = {"text": 5, "audio": 4, "visual": 3}


def inputs(n=4, steps=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, steps, dtype=torch.bool)
    return {m: ModalityTensor(torch.randn(n, steps, d, generator=g), mask) for m, d in DIMS.items()}


@pytest.mark.parametrize("name", ["early_fusion_lstm", "tfn", "ef_lstm", "mult", "lmf"])
def test_head_gates_the_bounded_intensity_by_presence(name):
    options = {"d_model": 8, "num_heads": 2, "cross_layers": 1, "self_layers": 1} if name == "mult" else {}
    torch.manual_seed(0)
    model = create_model(name, DIMS, TASK, head="zero_inflated", **options).eval()
    out = model(inputs())
    logits, intensity = out.extras["presence_logits"], out.extras["intensity"]
    assert out.prediction.shape == logits.shape == intensity.shape == (4, 6)
    assert float(intensity.min()) >= 0.0 and float(intensity.max()) <= 3.0
    torch.testing.assert_close(out.prediction, torch.where(logits > 0, intensity, torch.zeros_like(intensity)))
    model.predict = "expected"
    torch.testing.assert_close(model(inputs()).prediction, torch.sigmoid(logits) * intensity)


def test_loss_is_bce_on_presence_plus_l1_where_present():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-0.5, 1.5, -2.0]])
    intensity = torch.tensor([[1.0, 0.3, 2.5], [0.2, 1.0, 0.0]])
    labels = torch.tensor([[1.5, 0.0, 3.0], [0.0, 0.5, 0.0]])
    got = task_loss("zero_inflated", TASK, torch.zeros(2, 3), labels, extras={"presence_logits": logits, "intensity": intensity})
    present = labels > 0
    bce = F.binary_cross_entropy_with_logits(logits, present.float())
    l1 = (0.5 + 0.5 + 0.5) / 3  # |1-1.5|, |2.5-3|, |1-0.5| over the 3 present entries
    torch.testing.assert_close(got, bce + torch.tensor(l1))


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="head='zero_inflated'"):
        task_loss("zero_inflated", TASK, torch.zeros(2, 6), torch.zeros(2, 6))
    with pytest.raises(ValueError, match="emotion intensities"):
        create_model("tfn", DIMS, sentiment_task(), head="zero_inflated")
    with pytest.raises(ValueError, match="head must be one of"):
        create_model("tfn", DIMS, TASK, head="hurdle")


def test_beats_all_zero_on_sparse_intensities_where_l1_cannot():
    """Presence is readable from the input, intensities are mostly 0: the head predicts non-zeros only where
    the presence is likely, so its MAE beats the all-zero predictor's."""
    g = torch.Generator().manual_seed(1)
    n = 256
    x = torch.randn(n, 2, 4, generator=g)
    present = x[:, 0, :1] > 0.8  # ~21 % present, the same for all 6 outputs
    labels = torch.where(present, 1.0 + 2.0 * torch.rand(n, 6, generator=g), torch.zeros(n, 6))
    batch = {"audio": ModalityTensor(x, torch.ones(n, 2, dtype=torch.bool))}
    torch.manual_seed(0)
    model = create_model("early_fusion_lstm", {"audio": 4}, TASK, head="zero_inflated", hidden_dim=16, head_dim=16)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        out = model(batch)
        loss = task_loss("zero_inflated", TASK, out.prediction, labels, extras=out.extras)
        opt.zero_grad()
        loss.backward()
        opt.step()
    mae = (model.eval()(batch).prediction - labels).abs().mean()
    assert mae < 0.8 * labels.abs().mean()  # all-zero MAE = mean |y|
