import pickle

import numpy as np
import pytest

from emofusion.data.batch import Sample
from emofusion.data.collate import collate_samples
from emofusion.evaluation.robustness import (
    FrameDrop,
    GaussianNoise,
    MissingModality,
    SpeakerOffset,
    TemporalShift,
    make_perturbation,
    perturbation_label,
    severity_sweep,
)


def _sample(sid="s0", speaker="spkA", seed=0, t_text=6, t_audio=24):
    rng = np.random.default_rng(seed)
    text = rng.standard_normal((t_text, 4)).astype(np.float32)
    audio = rng.standard_normal((t_audio, 3)).astype(np.float32) * 2.0
    word_iv = np.stack([np.arange(t_text) * 0.4, np.arange(t_text) * 0.4 + 0.4], 1)
    audio_iv = np.stack([np.arange(t_audio) * 0.1, np.arange(t_audio) * 0.1 + 0.1], 1)
    return Sample(
        id=sid,
        features={"text": text, "audio": audio},
        label=np.zeros(2, np.float32),
        speaker=speaker,
        intervals={"text": word_iv, "audio": audio_iv},
        words=[f"w{i}" for i in range(t_text)],
    )


def test_noise_snr_matches_requested_power_and_is_reproducible():
    s = _sample(t_audio=4000)
    before = s.features["audio"].copy()
    p = GaussianNoise("audio", snr_db=0.0, seed=3)
    out = p(s)
    noise = out.features["audio"] - before
    signal_power = np.mean(before.astype(np.float64) ** 2)
    assert np.mean(noise**2) == pytest.approx(signal_power, rel=0.05)  # 0 dB: equal power
    assert np.array_equal(s.features["audio"], before)  # input untouched
    assert np.array_equal(out.features["text"], s.features["text"])  # other modality untouched
    assert np.array_equal(p(s).features["audio"], out.features["audio"])  # same sample id -> same noise
    other = GaussianNoise("audio", snr_db=0.0, seed=4)(s)
    assert not np.array_equal(other.features["audio"], out.features["audio"])
    # 10 dB more SNR = a tenth of the noise power
    out10 = GaussianNoise("audio", snr_db=10.0, seed=3)(s)
    assert np.mean((out10.features["audio"] - before) ** 2) == pytest.approx(signal_power / 10, rel=0.05)


def test_noise_by_std_and_ignores_nonfinite_in_power():
    s = _sample(t_audio=2000)
    out = GaussianNoise("audio", std=0.5, seed=0)(s)
    assert np.std(out.features["audio"] - s.features["audio"]) == pytest.approx(0.5, rel=0.05)
    s.features["audio"][0, 0] = -np.inf
    std = GaussianNoise("audio", snr_db=0.0).noise_std(s.features["audio"])
    assert np.isfinite(std) and std > 0
    with pytest.raises(ValueError, match="exactly one"):
        GaussianNoise("audio", snr_db=1.0, std=1.0)
    with pytest.raises(KeyError, match="s0.*visual"):
        GaussianNoise("visual", std=1.0)(s)


def test_missing_modality_modes():
    s = _sample()
    dropped = MissingModality("audio")(s)
    assert set(dropped.features) == {"text"} and "audio" not in dropped.intervals
    assert set(s.features) == {"text", "audio"}
    empty = MissingModality("audio", mode="empty")(s)
    assert empty.features["audio"].shape == (0, 3)
    batch = collate_samples([empty, s])
    assert batch.inputs["audio"].mask[0].sum() == 0 and batch.inputs["audio"].mask[1].sum() == 24
    zero = MissingModality("audio", zero=True)(s)
    assert zero.features["audio"].shape == s.features["audio"].shape and not zero.features["audio"].any()
    no_text = MissingModality("text")(s)
    assert no_text.words is None


def test_temporal_shift_by_seconds_and_steps():
    s = _sample()
    out = TemporalShift("audio", seconds=0.3)(s)  # 3 frames at 10 Hz
    a, b = s.features["audio"], out.features["audio"]
    assert b.shape == a.shape
    np.testing.assert_array_equal(b[3:], a[:-3])
    np.testing.assert_array_equal(b[:3], np.repeat(a[:1], 3, 0))  # edge repeated
    back = TemporalShift("audio", seconds=-0.3)(s).features["audio"]
    np.testing.assert_array_equal(back[:-3], a[3:])
    np.testing.assert_array_equal(
        TemporalShift("text", steps=2)(s).features["text"][2:], s.features["text"][:-2]
    )
    np.testing.assert_array_equal(out.features["text"], s.features["text"])
    s.intervals.pop("audio")
    with pytest.raises(ValueError, match="no intervals"):
        TemporalShift("audio", seconds=0.3)(s)


def test_speaker_offset_constant_per_speaker():
    a1, a2, b = _sample("x", "spkA", 0), _sample("y", "spkA", 1), _sample("z", "spkB", 2)
    p = SpeakerOffset("audio", std=1.0, seed=0)
    d1 = p(a1).features["audio"] - a1.features["audio"]
    d2 = p(a2).features["audio"] - a2.features["audio"]
    d3 = p(b).features["audio"] - b.features["audio"]
    np.testing.assert_allclose(d1, np.repeat(d1[:1], len(d1), 0), atol=1e-6)  # constant over time
    np.testing.assert_allclose(d1[0], d2[0], atol=1e-6)  # same speaker, same offset
    assert not np.allclose(d1[0], d3[0])
    np.testing.assert_array_equal(p(a1).features["text"], a1.features["text"])
    both = SpeakerOffset(["audio", "text"], std=1.0)(a1)
    assert not np.allclose(both.features["text"], a1.features["text"])


def test_frame_drop_rate_intervals_words():
    s = _sample(t_text=400, t_audio=1000)
    out = FrameDrop(["audio", "text"], rate=0.3, seed=1)(s)
    kept = len(out.features["audio"]) / 1000
    assert kept == pytest.approx(0.7, abs=0.05)
    assert len(out.intervals["audio"]) == len(out.features["audio"])
    assert len(out.words) == len(out.features["text"])
    # kept frames keep their order and content
    rows = {tuple(r) for r in s.features["audio"]}
    assert all(tuple(r) in rows for r in out.features["audio"])
    assert np.all(np.diff(out.intervals["audio"][:, 0]) > 0)
    all_gone = FrameDrop("audio", rate=1.0)(s)
    assert len(all_gone.features["audio"]) == 1
    assert len(FrameDrop("audio", rate=1.0, keep_one=False)(s).features["audio"]) == 0


def test_specs_roundtrip_pickle_and_labels():
    specs = [
        {"kind": "gaussian_noise", "modality": "audio", "snr_db": 0},
        {"kind": "missing_modality", "modality": "audio", "mode": "empty"},
        {"kind": "temporal_shift", "modality": "audio", "seconds": 0.5},
        {"kind": "speaker_offset", "modality": "audio", "std": 1.0},
        {"kind": "frame_drop", "modality": "audio", "rate": 0.2},
        {"kind": "compose", "steps": [{"kind": "frame_drop", "modality": "audio", "rate": 0.2}]},
    ]
    s = _sample()
    for spec in specs:
        p = make_perturbation(spec)
        q = pickle.loads(pickle.dumps(p))
        assert q == p and make_perturbation(p.spec()) == p
        out_p, out_q = p(s), q(s)
        for m in out_p.features:
            np.testing.assert_array_equal(out_p.features[m], out_q.features[m])
    assert perturbation_label(specs[0]) == "gaussian_noise(audio, snr_db=0.0)"
    assert perturbation_label(None) == "clean"
    with pytest.raises(KeyError, match="unknown perturbation"):
        make_perturbation({"kind": "nope"})


def test_severity_sweep():
    sweep = severity_sweep("gaussian_noise", "visual", [10, 0])
    assert [v for v, _ in sweep] == [0, 10, 0]
    assert sweep[0][1] is None and sweep[2][1] == {
        "kind": "gaussian_noise",
        "modality": "visual",
        "snr_db": 0,
    }
    assert len(severity_sweep("frame_drop", "audio")) == 5
    with pytest.raises(ValueError):
        severity_sweep("frame_drop", "audio", [1.5])
