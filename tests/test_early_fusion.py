"""Paper 003 early-fusion models: bounds, maxlen cutting/padding and masking, alignment, random baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from emofusion.data.batch import Sample
from emofusion.data.wordslots import restore_slots
from emofusion.models import create_model
from emofusion.models.early_fusion import compact, cut_or_pad, overlap_resample
from emofusion.tasks import classification_task, emotion_intensity_task, sentiment_task

torch.set_num_threads(1)
NETS = ["ef_lstm", "ef_blstm", "ef_cnn"]
DIMS = {"text": 6, "audio": 4, "visual": 3}


def _mask(lengths, steps):
    return torch.arange(steps).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


def _inputs(lengths: dict[str, list[int]], seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, lens in lengths.items():
        steps = max(max(lens), 1)
        mask = _mask(lens, steps)
        values = torch.randn(len(lens), steps, DIMS[m], generator=g) * scale
        out[m] = (values * mask.unsqueeze(-1), mask)
    return out


UNALIGNED = {"text": [9, 4, 1, 12], "audio": [40, 15, 3, 50], "visual": [12, 5, 0, 14]}


def _model(name, dims=DIMS, task=None, **kw):
    torch.manual_seed(0)
    return create_model(name, dims, task or emotion_intensity_task(), **kw)


@pytest.mark.parametrize("name", NETS)
def test_outputs_bounded_to_0_3(name):
    model = _model(name, maxlen=15, num_layers=2, fc_layers=2)
    x = _inputs(UNALIGNED, scale=50.0)
    for training in (True, False):
        model.train(training)
        pred = model(x).prediction
        assert pred.shape == (4, 6)
        assert float(pred.min()) >= 0.0 and float(pred.max()) <= 3.0
    # with a large output bias the bound is reached, not exceeded
    with torch.no_grad():
        model.head.net[-1].bias.fill_(10.0)
    model.eval()
    assert torch.all(model(x).prediction == 3.0)


@pytest.mark.parametrize("name", NETS)
def test_padding_values_never_matter(name):
    model = _model(name, maxlen=20).eval()
    x = _inputs(UNALIGNED)
    ref = model(x).prediction
    noisy = {}
    for m, (values, mask) in x.items():
        noisy[m] = (torch.where(mask.unsqueeze(-1), values, torch.full_like(values, 1e4)), mask)
    assert torch.allclose(model(noisy).prediction, ref, atol=1e-5)
    # extra padding steps change nothing either
    longer = {
        m: (
            torch.cat([v, torch.randn(4, 7, v.shape[2])], 1),
            torch.cat([k, torch.zeros(4, 7, dtype=bool)], 1),
        )
        for m, (v, k) in x.items()
    }
    assert torch.allclose(model(longer).prediction, ref, atol=1e-5)


@pytest.mark.parametrize("name", NETS)
def test_batch_equals_one_by_one(name):
    model = _model(name, maxlen=15, num_layers=3).eval()
    x = _inputs(UNALIGNED)
    batch = model(x).prediction
    for i in range(4):
        one = {}
        for m, (values, mask) in x.items():
            n = max(int(mask[i].sum()), 1)
            one[m] = (values[i : i + 1, :n], mask[i : i + 1, :n])
        assert torch.allclose(model(one).prediction, batch[i : i + 1], atol=1e-5), i


def test_cut_or_pad_pre_and_post():
    values = torch.arange(1, 11, dtype=torch.float32).view(1, 10, 1).repeat(2, 1, 1)
    mask = _mask([10, 3], 10)
    values = values * mask.unsqueeze(-1)
    out, m = cut_or_pad(values, mask, 4, "pre")
    assert out.shape == (2, 4, 1) and m.tolist() == [[True] * 4, [True, True, True, False]]
    assert out[0, :, 0].tolist() == [7, 8, 9, 10]  # the last maxlen steps (Keras default)
    assert out[1, :, 0].tolist() == [1, 2, 3, 0]  # short rows padded (masked) to maxlen
    out, m = cut_or_pad(values, mask, 4, "post")
    assert out[0, :, 0].tolist() == [1, 2, 3, 4]
    out, m = cut_or_pad(values, mask, 12, "pre")
    assert out.shape == (2, 12, 1) and m.sum(1).tolist() == [10, 3]


@pytest.mark.parametrize("name", NETS)
@pytest.mark.parametrize("truncating", ["pre", "post"])
def test_steps_outside_maxlen_are_ignored(name, truncating):
    model = _model(name, dims={"audio": 4, "visual": 3}, maxlen=15, truncating=truncating).eval()
    x = _inputs({"audio": [25, 10], "visual": [25, 10]})  # aligned: same length per sample
    ref = model(x).prediction
    outside = slice(0, 10) if truncating == "pre" else slice(15, 25)
    changed = {}
    for m, (v, k) in x.items():
        v = v.clone()
        v[0, outside] = torch.randn_like(v[0, outside]) * 5
        changed[m] = (v, k)
    new = model(changed).prediction
    assert torch.allclose(new[1], ref[1], atol=1e-6)
    assert torch.allclose(new[0], ref[0], atol=1e-6)
    # ... while a change inside the window does change the output
    inside = slice(24, 25) if truncating == "pre" else slice(14, 15)
    v = x["audio"][0].clone()
    v[0, inside] += 5
    assert not torch.allclose(model({**x, "audio": (v, x["audio"][1])}).prediction[0], ref[0], atol=1e-6)


def test_fusion_masks_and_reports_maxlen_steps():
    model = _model("ef_lstm", maxlen=20).eval()
    out = model(_inputs(UNALIGNED))
    # text is the reference axis: min(text length, maxlen) steps; the 3rd sample has 1 word
    assert out.extras["fused_mask"].shape == (4, 20)
    assert out.extras["fused_mask"].sum(1).tolist() == [9, 4, 1, 12]
    model = _model("ef_lstm", dims={"audio": 4, "visual": 3}, maxlen=20).eval()
    out = model(_inputs({"audio": UNALIGNED["audio"], "visual": UNALIGNED["visual"]}))
    # without text: per sample the shortest non-empty stream (visual; audio when visual is empty)
    assert out.extras["fused_mask"].sum(1).tolist() == [12, 5, 3, 14]


@pytest.mark.parametrize("name", NETS)
def test_all_zero_steps_are_masked(name):
    """Keras Masking(0): inserting all-zero steps (extractor found nothing) into aligned input changes nothing."""
    model = _model(name, dims={"audio": 4, "visual": 3}, maxlen=20).eval()
    x = _inputs({"audio": [6, 9], "visual": [6, 9]})
    ref = model(x).prediction
    gapped = {}
    for m, (v, _k) in x.items():
        v2 = torch.zeros(2, 12, v.shape[2])
        v2[:, 3:] = v[:, :9]  # three zero slots at the front (MFN-style pre-padding), kept in the mask
        k2 = _mask([9, 12], 12)
        gapped[m] = (v2, k2)
    assert torch.allclose(model(gapped).prediction, ref, atol=1e-5)


def test_overlap_resample_identity_average_repeat():
    v = torch.arange(1, 7, dtype=torch.float32).view(1, 6, 1)
    mask = torch.ones(1, 6, dtype=torch.bool)
    assert torch.allclose(overlap_resample(v, mask, torch.tensor([6]), 6), v)
    assert overlap_resample(v, mask, torch.tensor([3]), 3)[0, :, 0].tolist() == [1.5, 3.5, 5.5]
    up = overlap_resample(v[:, :2], mask[:, :2], torch.tensor([4]), 5)[0, :, 0].tolist()
    assert up == [1, 1, 2, 2, 0]  # repeated; the padded target step stays zero
    # 3 -> 2: the middle frame is split between both targets
    r = overlap_resample(v[:, :3], mask[:, :3], torch.tensor([2]), 2)[0, :, 0]
    assert torch.allclose(r, torch.tensor([(1 + 0.5 * 2) / 1.5, (0.5 * 2 + 3) / 1.5]))


def test_compact_moves_real_steps_to_front():
    v = torch.tensor([[[1.0], [9.0], [2.0], [3.0]]])
    k = torch.tensor([[True, False, True, True]])
    cv, ck = compact(v, k)
    assert cv[0, :, 0].tolist() == [1, 2, 3, 0] and ck.tolist() == [[True, True, True, False]]


def test_other_task_kinds():
    x = _inputs({"audio": [5, 3], "visual": [5, 3]}, scale=30.0)
    dims = {"audio": 4, "visual": 3}
    for name in NETS:
        sent = _model(name, dims=dims, task=sentiment_task(1.0, 5.0)).eval()
        pred = sent(x).prediction
        assert pred.shape == (2, 1) and float(pred.min()) >= 1.0 and float(pred.max()) <= 5.0
        cls = _model(name, dims=dims, task=classification_task(("neg", "neu", "pos"))).eval()
        with torch.no_grad():
            cls.head.net[-1].bias.fill_(10.0)
        logits = cls(x).prediction
        assert logits.shape == (2, 3) and float(logits.max()) > 3.0  # logits are not bounded


@pytest.mark.parametrize("name", NETS)
def test_learns_with_mae_loss(name):
    """A few Adam steps on the MAE loss fit a tiny aligned problem whose target is a feature mean."""
    torch.manual_seed(0)
    model = _model(name, dims={"audio": 4, "visual": 3}, maxlen=8)
    x = _inputs({"audio": [8] * 32, "visual": [8] * 32}, seed=1)
    y = (x["audio"][0][:, :, :1].mean(1) + 1.5).clamp(0, 3).repeat(1, 6)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    first = None
    for _ in range(60):
        loss = torch.nn.functional.l1_loss(model(x).prediction, y)
        first = first if first is not None else float(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.6 * first


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="maxlen"):
        _model("ef_lstm", maxlen=0)
    with pytest.raises(ValueError, match="align_to"):
        _model("ef_lstm", align_to="depth")
    with pytest.raises(ValueError, match="num_layers"):
        _model("ef_cnn", num_layers=0)
    with pytest.raises(ValueError, match="shape|expects"):
        _model("ef_lstm")(
            {
                "text": (torch.zeros(1, 2, 5), torch.ones(1, 2, dtype=bool)),
                "audio": (torch.zeros(1, 2, 4), torch.ones(1, 2, dtype=bool)),
                "visual": (torch.zeros(1, 2, 3), torch.ones(1, 2, dtype=bool)),
            }
        )


# ----------------------------------------------------------------------------------------- random baseline


def _draws(n=42000, seed=0, **kw):
    model = create_model("random_baseline", {"audio": 2}, emotion_intensity_task(), seed=seed, **kw)
    x = {"audio": (torch.zeros(n, 1, 2), torch.ones(n, 1, dtype=bool))}
    return model(x).prediction.detach().numpy().astype(np.float64)


def test_random_baseline_follows_section_5_1():
    pred = _draws()
    n = 42000
    # intensities lie on the 1/3 grid inside [0, 3]
    assert np.allclose(pred * 3, np.round(pred * 3), atol=1e-5)
    assert pred.min() >= 0 and pred.max() <= 3 + 1e-6
    # number of labels n ~ U{0..6}: each count has probability 1/7
    counts = np.bincount((pred > 0).sum(1), minlength=7) / n
    assert counts.shape == (7,) and np.all(np.abs(counts - 1 / 7) < 0.01), counts
    # identities uniform: each emotion is chosen with probability E[n]/6 = 1/2
    assert np.all(np.abs((pred > 0).mean(0) - 0.5) < 0.01)
    # chosen intensities uniform on the 9 non-zero steps {1/3, ..., 3}
    steps = np.round(pred[pred > 0] * 3).astype(int)
    freq = np.bincount(steps, minlength=10)[1:] / steps.size
    assert freq.shape == (9,) and np.all(np.abs(freq - 1 / 9) < 0.01), freq
    # given n, every n-subset of emotions is equally likely: pairs among n == 2 rows
    two = pred[(pred > 0).sum(1) == 2] > 0
    pair_freq = (two.T.astype(int) @ two.astype(int))[np.triu_indices(6, 1)] / len(two)
    assert np.all(np.abs(pair_freq - 1 / 15) < 0.02)
    # expected MAE against all-zero labels: E[n]/6 * mean(1/3..3) = 0.5 * 5/3
    assert abs(pred.mean() - 5 / 6) < 0.02


def test_random_baseline_seeded_and_include_zero():
    a, b, c = _draws(1000, seed=3), _draws(1000, seed=3), _draws(1000, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    z = _draws(30000, include_zero=True)
    # with 0 on the grid (10 values) some chosen labels come out as 0: fewer non-zeros than n would say
    assert abs((z > 0).mean() - 0.5 * 0.9) < 0.01


def test_random_baseline_has_no_trainable_effect():
    model = create_model("random_baseline", {"audio": 2}, emotion_intensity_task(), seed=0)
    x = {"audio": (torch.zeros(8, 1, 2), torch.ones(8, 1, dtype=bool))}
    loss = model(x).prediction.abs().mean()
    loss.backward()  # a generic training loop runs
    assert float(model.anchor.grad) == 0.0
    assert model.num_parameters() == 1 and model.trainable is False
    sent = create_model("random_baseline", {"audio": 2}, sentiment_task(1.0, 5.0))
    p = sent(x).prediction
    assert p.shape == (8, 1) and float(p.min()) >= 1 and float(p.max()) <= 5


# ----------------------------------------------------------------------------------------- word slots

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_restore_slots_realigns_dropped_rows():
    a = np.array([[1.0, 1], [2, 2], [4, 4]], np.float32)  # slots 1, 2, 4
    v = np.array([[10.0], [30]], np.float32)  # slots 1, 3
    s = Sample(
        "x",
        {"audio": a, "visual": v},
        np.zeros(1, np.float32),
        intervals={
            "audio": np.array([[1, 2], [2, 3], [4, 5]], float),
            "visual": np.array([[1, 2], [3, 4]], float),
        },
    )
    r = restore_slots(s, ["audio", "visual"])
    assert r.features["audio"].shape == (4, 2) and r.features["visual"].shape == (4, 1)
    assert np.isnan(r.features["audio"][2]).all() and r.features["audio"][3].tolist() == [4, 4]
    assert r.features["visual"][:, 0].tolist()[0] == 10 and np.isnan(r.features["visual"][[1, 3], 0]).all()
    assert r.features["visual"][2, 0] == 30
    with pytest.raises(ValueError, match="word-slot"):
        restore_slots(Sample("y", {"audio": a}, np.zeros(1)), ["audio"])


@pytest.mark.skipif(
    not (DATA / "mfn_h5" / "mmmo").exists(), reason="real MFN data not present (../shared/data)"
)
def test_wordslots_on_real_mmmo_gives_equal_lengths():
    from emofusion.data import load_dataset

    b = load_dataset(f"wordslots:mfn:{DATA / 'mfn_h5' / 'mmmo'}", modalities="audio,visual", limit=20)
    for s in b.train:
        assert s.length("audio") == s.length("visual") <= 20


@pytest.mark.parametrize("name", NETS)
def test_sample_with_every_modality_absent(name):
    """YouTube-style: a segment with no rows at all gets a finite, input-independent output."""
    model = _model(name, dims={"audio": 4, "visual": 3}).eval()
    x = _inputs({"audio": [0, 5], "visual": [0, 5]})
    out = model(x).prediction
    assert torch.isfinite(out).all()
    other = _inputs({"audio": [0, 7], "visual": [0, 2]}, seed=5)
    assert torch.allclose(model(other).prediction[0], out[0])
