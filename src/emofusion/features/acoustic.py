"""Acoustic features at 100 Hz from numpy/scipy only (the permissive default), COVAREP-like in spirit.

Per 10 ms hop: F0 (Hz, 0 when unvoiced, as COVAREP), voicing probability (peak of the normalised
autocorrelation), a voiced flag, a harmonics-to-noise ratio from that peak, log energy, RMS level (dB),
zero-crossing rate, spectral centroid / flatness / roll-off, and MFCCs (mel filterbank, log, DCT-II).
Frame ``i`` covers ``[i * hop, i * hop + hop)`` seconds (the window is centred on it); every frame is kept,
silence included, so the sequence length is ``ceil(duration / hop)``.

The pitch tracker is a plain normalised-autocorrelation picker (Boersma 1993 without the Viterbi path):
adequate for the prosodic statistics fusion models use, not a replacement for REAPER/Praat on hard speech.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class AcousticSettings:
    sample_rate: int = 16000
    hop_s: float = 0.01
    window_s: float = 0.025
    pitch_window_s: float = 0.04
    f0_min: float = 60.0
    f0_max: float = 450.0
    voicing_threshold: float = 0.45
    silence_db: float = -50.0  # frames quieter than this (dBFS) are never voiced
    n_mels: int = 40
    n_mfcc: int = 13

    def to_dict(self) -> dict:
        return asdict(self)


def feature_names(settings: AcousticSettings | None = None) -> list[str]:
    s = settings or AcousticSettings()
    return [
        "f0_hz", "voicing_prob", "voiced", "hnr_db", "log_energy", "rms_db", "zcr",
        "spectral_centroid_hz", "spectral_flatness", "spectral_rolloff_hz",
    ] + [f"mfcc_{i}" for i in range(s.n_mfcc)]


def _frames(x: np.ndarray, centres: np.ndarray, width: int) -> np.ndarray:
    half = width // 2
    padded = np.pad(x, (half, width))
    idx = centres[:, None] + np.arange(width)[None, :]
    return padded[idx]


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    fmax = fmax or sr / 2

    def hz2mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel2hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    mels = np.linspace(hz2mel(fmin), hz2mel(fmax), n_mels + 2)
    hz = mel2hz(mels)
    bins = np.fft.rfftfreq(n_fft, 1.0 / sr)
    fb = np.zeros((n_mels, len(bins)))
    for m in range(n_mels):
        lo, c, hi = hz[m], hz[m + 1], hz[m + 2]
        up = (bins - lo) / max(c - lo, 1e-9)
        down = (hi - bins) / max(hi - c, 1e-9)
        fb[m] = np.clip(np.minimum(up, down), 0, None)
    return fb


def _pitch(frames: np.ndarray, sr: int, s: AcousticSettings) -> tuple[np.ndarray, np.ndarray]:
    """(f0 [N], peak of the normalised autocorrelation [N]) by the window-corrected ACF method."""
    n = frames.shape[1]
    win = np.hanning(n)
    nfft = 1 << int(np.ceil(np.log2(2 * n)))
    xw = (frames - frames.mean(1, keepdims=True)) * win
    acf = np.fft.irfft(np.abs(np.fft.rfft(xw, nfft)) ** 2, nfft)[:, :n]
    wacf = np.fft.irfft(np.abs(np.fft.rfft(win, nfft)) ** 2, nfft)[:n]
    r = acf / np.maximum(acf[:, :1], 1e-12) / np.maximum(wacf / wacf[0], 1e-3)
    lo, hi = int(sr / s.f0_max), min(int(sr / s.f0_min), n // 2)
    seg = r[:, lo:hi]
    best = seg.max(1)
    # octave cost: the shortest lag whose local peak is within 10% of the best (a periodic signal's ACF
    # peaks again at 2T, 3T ...; the window correction can make those marginally higher)
    local = np.zeros_like(seg, dtype=bool)
    local[:, 1:-1] = (seg[:, 1:-1] >= seg[:, :-2]) & (seg[:, 1:-1] >= seg[:, 2:])
    cand = local & (seg >= 0.9 * best[:, None])
    k = np.where(cand.any(1), cand.argmax(1), seg.argmax(1))
    peak = seg[np.arange(len(seg)), k]
    # parabolic interpolation of the peak lag
    lag = (k + lo).astype(np.float64)
    inner = (k > 0) & (k < seg.shape[1] - 1)
    a, b, c = (seg[inner, k[inner] - 1], seg[inner, k[inner]], seg[inner, k[inner] + 1])
    denom = a - 2 * b + c
    shift = np.where(np.abs(denom) > 1e-12, 0.5 * (a - c) / np.where(denom == 0, 1, denom), 0.0)
    lag[inner] += np.clip(shift, -0.5, 0.5)
    return sr / lag, np.clip(peak, 0.0, 1.0)


def extract_acoustic(x: np.ndarray, settings: AcousticSettings | None = None, chunk: int = 20000):
    """``(intervals [N, 2], features [N, D] float32)`` for mono float samples ``x`` at settings.sample_rate."""
    s = settings or AcousticSettings()
    sr = s.sample_rate
    hop = int(round(s.hop_s * sr))
    n = int(np.ceil(len(x) / hop)) if len(x) else 0
    d = len(feature_names(s))
    if n == 0:
        return np.zeros((0, 2)), np.zeros((0, d), np.float32)
    x = np.asarray(x, np.float64)
    win_n = int(round(s.window_s * sr))
    nfft = 1 << int(np.ceil(np.log2(win_n)))
    fb = mel_filterbank(sr, nfft, s.n_mels)
    freqs = np.fft.rfftfreq(nfft, 1.0 / sr)
    k = np.arange(s.n_mels)
    dct = np.cos(np.pi / s.n_mels * (k[None, :] + 0.5) * np.arange(s.n_mfcc)[:, None]) * np.sqrt(2.0 / s.n_mels)
    dct[0] /= np.sqrt(2.0)
    hamming = np.hamming(win_n)
    out = np.zeros((n, d), np.float32)
    centres_all = np.arange(n) * hop + hop // 2
    for start in range(0, n, chunk):
        centres = centres_all[start : start + chunk]
        fr = _frames(x, centres, win_n)
        energy = (fr**2).mean(1)
        rms_db = 10 * np.log10(np.maximum(energy, 1e-12))
        zcr = (np.abs(np.diff(np.signbit(fr).astype(np.int8), axis=1)) > 0).mean(1)
        spec = np.abs(np.fft.rfft(fr * hamming, nfft)) ** 2
        total = np.maximum(spec.sum(1), 1e-12)
        centroid = (spec * freqs).sum(1) / total
        flatness = np.exp(np.log(np.maximum(spec, 1e-12)).mean(1)) / np.maximum(spec.mean(1), 1e-12)
        cum = np.cumsum(spec, 1)
        rolloff = freqs[np.minimum((cum < 0.85 * total[:, None]).sum(1), len(freqs) - 1)]
        mfcc = np.log(np.maximum(spec @ fb.T, 1e-10)) @ dct.T
        f0, prob = _pitch(_frames(x, centres, int(round(s.pitch_window_s * sr))), sr, s)
        voiced = (prob >= s.voicing_threshold) & (rms_db > s.silence_db)
        hnr = 10 * np.log10(np.clip(prob, 1e-4, 1 - 1e-4) / (1 - np.clip(prob, 1e-4, 1 - 1e-4)))
        block = np.column_stack(
            [np.where(voiced, f0, 0.0), prob, voiced, hnr, np.log(np.maximum(energy, 1e-12)), rms_db, zcr,
             centroid, flatness, rolloff, mfcc]
        )
        out[start : start + len(centres)] = block
    t = np.arange(n) * s.hop_s
    return np.stack([t, t + s.hop_s], 1), out


# ------------------------------------------------------------------------------------------------
# optional: openSMILE eGeMAPS low-level descriptors (non-commercial licence; `pip install opensmile`)
# ------------------------------------------------------------------------------------------------


def extract_egemaps(x: np.ndarray, sample_rate: int = 16000):
    """eGeMAPSv02 low-level descriptors (25 at 100 Hz) from openSMILE 2.x, which ships its configs."""
    try:
        import opensmile
    except ImportError as e:
        raise ImportError(
            "acoustic='egemaps' needs openSMILE (non-commercial licence): pip install opensmile==2.6.0"
        ) from e
    smile = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.LowLevelDescriptors
    )
    df = smile.process_signal(np.asarray(x, np.float32), sample_rate)
    starts = df.index.get_level_values("start").total_seconds().to_numpy()
    ends = df.index.get_level_values("end").total_seconds().to_numpy()
    return np.stack([starts, ends], 1), df.to_numpy(np.float32), list(df.columns)
