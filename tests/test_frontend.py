"""The strided front-end (layers.StridedFrontEnd): exact window means over real steps, identity by default."""

from __future__ import annotations

import pytest
import torch

from emofusion.models import create_model
from emofusion.models.layers import StridedFrontEnd, strided_pool
from emofusion.tasks import emotion_intensity_task

DIMS = {"text": 6, "audio": 5, "visual": 4}


def _inputs(seed=0, batch=3, lengths=None):
    g = torch.Generator().manual_seed(seed)
    lengths = lengths or {"text": [4, 7, 2], "audio": [23, 11, 0], "visual": [9, 13, 5]}
    out = {}
    for m, d in DIMS.items():
        steps = max(lengths[m])
        v = torch.randn(batch, steps, d, generator=g)
        mask = torch.arange(steps)[None] < torch.tensor(lengths[m])[:, None]
        v[~mask] = float("nan")  # padding must never reach a real window
        out[m] = (v, mask)
    return out


def test_strided_pool_is_the_mean_of_each_window_of_real_steps():
    v, mask = _inputs()["audio"]
    pooled, pmask = strided_pool(v, mask, 4)
    assert pooled.shape == (3, 6, 5)
    assert pmask.sum(1).tolist() == [6, 3, 0]  # ceil(23/4), ceil(11/4), empty stays empty
    for b, length in enumerate([23, 11, 0]):
        for w in range(-(-length // 4)):
            frames = v[b, 4 * w : min(4 * w + 4, length)]
            torch.testing.assert_close(pooled[b, w], frames.mean(0))
    assert torch.isfinite(pooled).all()


def test_stride_one_and_empty_frontend_are_the_identity():
    inputs = _inputs()
    v, mask = inputs["audio"]
    assert strided_pool(v, mask, 1)[0] is v
    assert StridedFrontEnd({})(inputs) is inputs


def test_frontend_rejects_bad_strides():
    with pytest.raises(ValueError, match="positive integer"):
        StridedFrontEnd({"audio": 0}, DIMS)
    with pytest.raises(ValueError, match="not among"):
        StridedFrontEnd({"speech": 2}, DIMS)


def test_unpooled_attention_shares_each_window_weight_over_its_real_frames():
    v, mask = _inputs()["audio"]
    fe = StridedFrontEnd({"audio": 4})
    _, pmask = strided_pool(v, mask, 4)
    g = torch.Generator().manual_seed(3)
    alpha = torch.rand(3, 2, pmask.shape[1], generator=g) * pmask[:, None]  # [B, hops, T_pooled]
    frames = fe.unpool_weights("audio", alpha, mask)
    assert frames.shape == (3, 2, mask.shape[1])
    torch.testing.assert_close(frames.sum(-1), alpha.sum(-1))
    assert (frames[~mask[:, None].expand_as(frames)] == 0).all()
    # sample 0: 23 frames, last window holds frames 20-22 (3 frames)
    torch.testing.assert_close(frames[0, 1, 21], alpha[0, 1, 5] / 3)
    torch.testing.assert_close(frames[0, 1, 2], alpha[0, 1, 0] / 4)


@pytest.mark.parametrize("name", ["rrnn", "gca", "early_fusion_lstm"])
def test_a_model_with_a_frontend_equals_the_model_on_pooled_inputs(name):
    task = emotion_intensity_task()
    inputs = _inputs()
    inputs = {m: (torch.nan_to_num(v), mask) for m, (v, mask) in inputs.items()}
    torch.manual_seed(0)
    fast = create_model(name, DIMS, task, frontend={"audio": 4, "visual": 3}).eval()
    torch.manual_seed(0)
    plain = create_model(name, DIMS, task).eval()
    assert fast.num_parameters() == plain.num_parameters()  # parameter-free
    pooled = dict(inputs)
    pooled["audio"] = strided_pool(*inputs["audio"], 4)
    pooled["visual"] = strided_pool(*inputs["visual"], 3)
    with torch.no_grad():
        a, b = fast(inputs), plain(pooled)
        c = plain(inputs)
    torch.testing.assert_close(a.prediction, b.prediction)
    assert not torch.allclose(a.prediction, c.prediction)  # the front-end does change what the model reads
    if "attention" in a.extras:  # mapped back onto the input frames
        for m, (v, _mask) in inputs.items():
            assert a.extras["attention"][m].shape[-1] == v.shape[1]
            torch.testing.assert_close(a.extras["attention"][m].sum(-1), b.extras["attention"][m].sum(-1))


def test_sequence_encoder_runs_in_fp32_under_bf16_autocast():
    """bf16-mixed training: the fused CPU LSTM has no bf16 kernel, so the encoder runs it in fp32 (same result)."""
    from emofusion.models.layers import SequenceEncoder

    torch.manual_seed(0)
    enc = SequenceEncoder(5, 4, 1, True)
    x = torch.randn(3, 9, 5)
    mask = torch.arange(9)[None] < torch.tensor([9, 4, 1])[:, None]
    ref, ref_final = enc(x, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, final = enc(x.to(torch.bfloat16), mask)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)  # input rounded to bf16 only
    torch.testing.assert_close(final, ref_final, rtol=2e-2, atol=2e-2)
