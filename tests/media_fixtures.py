"""Tiny CREMA-D / RAVDESS folders with the distributions' file names, made from tests/data/speech.wav."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.signal import resample

from media_helpers import speech, write_wav


def variant(x: np.ndarray, emotion_index: int, seconds: float = 1.2, seed: int = 0) -> np.ndarray:
    """A clip whose pitch (resampling) and loudness depend on the emotion: learnable from the audio."""
    rng = np.random.RandomState(seed)
    x = x[4800 : 4800 + int(seconds * 16000)]
    factor = 1.0 + 0.25 * emotion_index
    y = resample(x, int(len(x) / factor))
    y = np.pad(y, (0, max(0, len(x) - len(y))))[: len(x)]
    return (y * (0.3 + 0.5 * emotion_index) + 0.003 * rng.randn(len(y))).astype(np.float32)


def make_cremad(root: Path, actors=6, emotions=("NEU", "ANG"), sentences=("DFA", "TSI")) -> Path:
    x = speech()
    wav = root / "AudioWAV"
    wav.mkdir(parents=True, exist_ok=True)
    k = 0
    for a in range(actors):
        for e, emo in enumerate(emotions):
            for s in sentences:
                write_wav(wav / f"{1001 + a}_{s}_{emo}_XX.wav", variant(x, e, seed=k))
                k += 1
    (wav / "README.txt").write_text("not a clip")
    return root


def make_ravdess(root: Path, actors=4, emotions=("01", "05")) -> Path:
    x = speech()
    k = 0
    for a in range(1, actors + 1):
        d = root / f"Actor_{a:02d}"
        d.mkdir(parents=True, exist_ok=True)
        for e, emo in enumerate(emotions):
            for stmt in ("01", "02"):
                write_wav(d / f"03-01-{emo}-01-{stmt}-01-{a:02d}.wav", variant(x, e, seed=k))
                k += 1
        write_wav(d / f"03-02-{emotions[0]}-01-01-01-{a:02d}.wav", variant(x, 0))  # song: not used by default
    return root
