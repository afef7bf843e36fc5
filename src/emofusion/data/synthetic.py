"""The built-in synthetic benchmark: a seeded, CMU-MOSEI-like corpus on which fusion genuinely matters.

Generative story (documented in docs/synthetic.md, each property covered by tests/test_synthetic.py):

* A segment is 8-40 words with random durations (0.2-0.6 s). Text is one 300-d vector per word; audio is
  74-d at 25 Hz (about 10 frames per word); visual is 35-d at 7.5 Hz (about 3 frames per word). The three
  streams share a clock (their ``intervals``) but not their steps: unaligned by construction.
* Labels: 6 emotion intensities on MOSEI's grid {0, 1/3, ..., 3}, drawn independently per emotion with
  MOSEI-like imbalance (happy most common, many all-zero segments), plus a sentiment score in [-3, 3]
  derived from them.
* Evidence is *local*: each present emotion emits a few short events (one word, ~0.4 s of audio, ~0.6 s
  of video) at random words; an event adds a fixed cue direction to the features, scaled by intensity.
* Evidence is *partial*: each modality carries cues for only some emotions, and some cues are shared by two
  emotions inside one modality (audio "harsh" = anger or disgust; visual "frown" = anger or sad).
* Evidence is *cross-modal*: the text cue "ambiguous" appears in anger and happy segments alike; only the
  audio event at the same moment ("harsh" vs "bright") tells which. ``interaction`` sets the share of
  anger/happy evidence carried by such joint cues (the rest becomes unambiguous unimodal cues).
* Idiosyncrasy: every speaker adds a constant offset vector to all of their audio and visual frames.
  Splits are speaker-disjoint, so a model cannot memorise the offsets.
* Noise: smooth AR(1) background per modality (``noise`` scales it per modality), random distractor events,
  and, like real COVAREP, a few ``-inf`` audio values and a constant visual column (handled by hygiene).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.signal import lfilter

from emofusion.data.alignment import (
    average_to_reference,
    frame_intervals,
    frames_per_reference,
    stack_reference,
    stack_to_reference,
)
from emofusion.data.batch import Sample
from emofusion.data.dataset import DatasetBundle
from emofusion.data.registry import register_dataset
from emofusion.tasks import MOSEI_EMOTIONS, TaskSpec, classification_task, emotion_intensity_task

TEXT_DIM, AUDIO_DIM, VISUAL_DIM = 300, 74, 35
AUDIO_HZ, VISUAL_HZ = 25.0, 7.5
# MOSEI-like presence rates (happy most common; fear and surprise rare)
PRESENCE = {"anger": 0.17, "disgust": 0.13, "fear": 0.07, "happy": 0.45, "sad": 0.22, "surprise": 0.09}
# cues per modality; several emotions share some of them
CUES = {
    "text": ["positive", "negative", "ambiguous", "angry_word", "fear_word", "surprise_word"],
    "audio": ["harsh", "bright", "low", "tremble"],
    "visual": ["smile", "frown", "wrinkle", "wide_eyes"],
}
# emotion -> channels; a channel is (probability, [(modality, cue), ...]); several cues = one joint event
# ("joint" channels are scaled by ``interaction``; the remainder is emitted as the "fallback" channel)
CHANNELS = {
    "anger": [("joint", 0.85, [("text", "ambiguous"), ("audio", "harsh")], [("text", "angry_word")]),
              ("plain", 0.35, [("visual", "frown")], None)],
    "disgust": [("plain", 0.65, [("visual", "wrinkle")], None), ("plain", 0.5, [("audio", "harsh")], None),
                ("plain", 0.25, [("text", "negative")], None)],
    "fear": [("plain", 0.6, [("audio", "tremble")], None), ("plain", 0.45, [("visual", "wide_eyes")], None),
             ("plain", 0.25, [("text", "fear_word")], None)],
    "happy": [("plain", 0.55, [("text", "positive")], None), ("plain", 0.55, [("visual", "smile")], None),
              ("joint", 0.45, [("text", "ambiguous"), ("audio", "bright")], [("audio", "bright")])],
    "sad": [("plain", 0.5, [("text", "negative")], None), ("plain", 0.6, [("audio", "low")], None),
            ("plain", 0.3, [("visual", "frown")], None)],
    "surprise": [("plain", 0.6, [("visual", "wide_eyes")], None), ("plain", 0.45, [("audio", "bright")], None),
                 ("plain", 0.25, [("text", "surprise_word")], None)],
}
# the classification variant (CREMA-D-like, audio + visual): each class is a unique pair of shared cues
CLS_CLASSES = ("anger", "disgust", "fear", "happy", "neutral", "sad")
CLS_CHANNELS = {
    "anger": [("audio", "harsh"), ("visual", "frown")],
    "disgust": [("audio", "harsh"), ("visual", "wrinkle")],
    "fear": [("audio", "tremble"), ("visual", "wide_eyes")],
    "happy": [("audio", "bright"), ("visual", "smile")],
    "neutral": [],
    "sad": [("audio", "low"), ("visual", "frown")],
}
DIMS = {"text": TEXT_DIM, "audio": AUDIO_DIM, "visual": VISUAL_DIM}
EVENT_SPAN = {"audio": (-0.15, 0.25), "visual": (-0.2, 0.4)}  # seconds around the cue word's midpoint


@dataclass
class SyntheticConfig:
    n_train: int = 1200
    n_val: int = 300
    n_test: int = 300
    seed: int = 0
    # background noise scale per modality (1.0 = default difficulty)
    noise: dict = field(default_factory=lambda: {"text": 1.0, "audio": 1.0, "visual": 1.0})
    # share of anger/happy evidence carried by joint text+audio cues (0 = none, 1 = all)
    interaction: float = 1.0
    n_speakers: int = 60
    speaker_offset: float = 0.6  # std of per-speaker constant offsets (audio, visual)
    min_words: int = 8
    max_words: int = 40
    event_strength: float = 3.0  # cue amplitude; at 1.4 events sit near the noise floor and LSTMs learn nothing
    distractor_rate: float = 0.15  # expected spurious low-amplitude events per segment and modality
    corrupt: bool = True  # a few -inf audio values and a constant visual column, like real features

    def __post_init__(self):
        if isinstance(self.noise, (int, float)):
            self.noise = {m: float(self.noise) for m in DIMS}
        unknown = set(self.noise) - set(DIMS)
        if unknown:
            raise ValueError(f"noise has unknown modalities {sorted(unknown)}; expected {sorted(DIMS)}")
        self.noise = {m: float(self.noise.get(m, 1.0)) for m in DIMS}
        if not 0.0 <= self.interaction <= 1.0:
            raise ValueError(f"interaction must be in [0, 1], got {self.interaction}")
        if min(self.n_train, self.n_val, self.n_test) < 1:
            raise ValueError("every split needs at least one sample")
        if not 1 <= self.min_words <= self.max_words:
            raise ValueError(f"need 1 <= min_words <= max_words, got {self.min_words}, {self.max_words}")


class _World:
    """Fixed cue directions, vocabulary and speaker offsets (shared by all splits of one seed)."""

    def __init__(self, cfg: SyntheticConfig):
        rng = np.random.default_rng((cfg.seed, 7919))
        self.cue = {}
        for m, names in CUES.items():
            for name in names:
                d = rng.standard_normal(DIMS[m])
                self.cue[m, name] = d / np.linalg.norm(d)
        # neutral vocabulary: word vectors of GloVe-like norm (~unit per sqrt(dim) scale)
        self.vocab = rng.standard_normal((400, TEXT_DIM)) / np.sqrt(TEXT_DIM) * 1.0
        self.words = [f"w{i}" for i in range(len(self.vocab))]
        self.intensity_dir = rng.standard_normal(TEXT_DIM)
        self.intensity_dir /= np.linalg.norm(self.intensity_dir)
        self.speaker_offsets = {
            m: rng.standard_normal((cfg.n_speakers, DIMS[m])) * cfg.speaker_offset / np.sqrt(DIMS[m]) * 4
            for m in ("audio", "visual")
        }
        # speaker-disjoint splits: 70 / 15 / 15 of the speakers
        perm = rng.permutation(cfg.n_speakers)
        a, b = int(0.7 * cfg.n_speakers), int(0.85 * cfg.n_speakers)
        self.split_speakers = {"train": perm[:a], "val": perm[a:b], "test": perm[b:]}


def _ar1(rng, steps: int, dim: int, rho: float, scale: float) -> np.ndarray:
    # smooth background: stationary AR(1) per dimension with unit marginal variance * scale
    eps = rng.standard_normal((steps, dim))
    eps[1:] *= np.sqrt(1 - rho**2)
    return lfilter([1.0], [1.0, -rho], eps, axis=0) * scale


def _sample_labels(rng) -> np.ndarray:
    y = np.zeros(len(MOSEI_EMOTIONS))
    grid_weights = 0.78 ** np.arange(9)
    grid_weights /= grid_weights.sum()
    for i, e in enumerate(MOSEI_EMOTIONS):
        if rng.random() < PRESENCE[e]:
            y[i] = (1 + rng.choice(9, p=grid_weights)) / 3.0
    return y


def _sentiment(y: np.ndarray, rng) -> float:
    e = dict(zip(MOSEI_EMOTIONS, y))
    s = 1.1 * e["happy"] + 0.3 * e["surprise"] - 0.8 * (e["sad"] + e["anger"] + e["disgust"]) - 0.5 * e["fear"]
    return float(np.clip(s + 0.25 * rng.standard_normal(), -3.0, 3.0))


def _render(rng, world: _World, cfg: SyntheticConfig, speaker: int, events, n_words: int, modalities):
    """Render one segment's feature streams from a list of (modality, cue, word index, amplitude) events."""
    durations = rng.uniform(0.2, 0.6, n_words)
    ends = np.cumsum(durations)
    starts = ends - durations
    word_iv = np.stack([starts, ends], 1)
    total = float(ends[-1])
    mid = (starts + ends) / 2
    feats, intervals = {}, {}
    word_ids = rng.integers(0, len(world.vocab), n_words)
    if "text" in modalities:
        text = world.vocab[word_ids] + cfg.noise["text"] * 0.35 * rng.standard_normal((n_words, TEXT_DIM)) / np.sqrt(
            TEXT_DIM
        )
        feats["text"], intervals["text"] = text, word_iv
    for m, hz, rho in (("audio", AUDIO_HZ, 0.7), ("visual", VISUAL_HZ, 0.5)):
        if m not in modalities:
            continue
        steps = max(1, int(np.ceil(total * hz)))
        iv = frame_intervals(steps, hz)
        base = _ar1(rng, steps, DIMS[m], rho, cfg.noise[m] / np.sqrt(DIMS[m]) * 2.0)
        feats[m] = base + world.speaker_offsets[m][speaker]
        intervals[m] = iv
    words = [world.words[i] for i in word_ids]
    for m, cue, w, amp in events:
        if m not in feats:
            continue
        direction = world.cue[m, cue]
        if m == "text":
            # the cue word replaces the word; intensity shifts it along a shared "intensifier" direction
            feats[m][w] = direction * (0.8 + 0.2 * amp) + 0.25 * amp * world.intensity_dir
            words[w] = cue
        else:
            lo, hi = EVENT_SPAN[m]
            centers = intervals[m].mean(1)
            inside = (centers >= mid[w] + lo) & (centers <= mid[w] + hi)
            if not inside.any():
                inside[np.argmin(np.abs(centers - mid[w]))] = True
            idx = np.flatnonzero(inside)
            envelope = np.hanning(len(idx) + 2)[1:-1]
            feats[m][idx] += cfg.event_strength * amp * envelope[:, None] * direction[None, :]
    for m in feats:
        feats[m] = feats[m].astype(np.float32)
    if cfg.corrupt:
        if "audio" in feats and rng.random() < 0.3:
            # COVAREP-like -inf in a log-energy column at silent frames
            feats["audio"][rng.integers(0, len(feats["audio"])), 0] = -np.inf
        if "visual" in feats:
            feats["visual"][:, -1] = 0.0  # a constant column (a detector output that never fires)
    return feats, intervals, words


def _distractors(rng, cfg, n_words, modalities):
    events = []
    for m in modalities:
        for _ in range(rng.poisson(cfg.distractor_rate)):
            events.append((m, CUES[m][rng.integers(len(CUES[m]))], int(rng.integers(n_words)), 0.3 * rng.random()))
    return events


def _intensity_events(rng, cfg, y, n_words):
    events = []
    for i, emotion in enumerate(MOSEI_EMOTIONS):
        if y[i] <= 0:
            continue
        amp = float(np.clip(y[i] / 3.0 * (1 + 0.15 * rng.standard_normal()), 0.05, 1.3))
        for kind, p, cues, fallback in CHANNELS[emotion]:
            # stronger emotions show up more often (1-3 events per channel)
            for _ in range(1 + rng.binomial(2, min(y[i], 3.0) / 3.0)):
                if kind == "joint":
                    if rng.random() < p * cfg.interaction:
                        w = int(rng.integers(n_words))
                        events += [(m, c, w, amp) for m, c in cues]
                    elif fallback and rng.random() < p * (1 - cfg.interaction):
                        events += [(m, c, int(rng.integers(n_words)), amp) for m, c in fallback]
                elif rng.random() < p:
                    events += [(m, c, int(rng.integers(n_words)), amp) for m, c in cues]
    return events


def generate_split(cfg: SyntheticConfig, split: str, task: str = "intensity") -> list[Sample]:
    world = _World(cfg)
    n = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}[split]
    split_index = {"train": 0, "val": 1, "test": 2}[split]
    rng = np.random.default_rng((cfg.seed, split_index, 0 if task == "intensity" else 1))
    speakers = world.split_speakers[split]
    modalities = ("text", "audio", "visual") if task == "intensity" else ("audio", "visual")
    samples = []
    for k in range(n):
        speaker = int(speakers[rng.integers(len(speakers))])
        n_words = int(rng.integers(cfg.min_words, cfg.max_words + 1))
        if task == "intensity":
            y = _sample_labels(rng)
            events = _intensity_events(rng, cfg, y, n_words)
            label = np.concatenate([y, [_sentiment(y, rng)]]).astype(np.float32)
        else:
            c = int(rng.integers(len(CLS_CLASSES)))
            amp = float(rng.choice([1, 2, 3])) / 3.0
            events = []
            for m, cue in CLS_CHANNELS[CLS_CLASSES[c]]:
                for _ in range(1 + rng.binomial(1, 0.5)):
                    if rng.random() < 0.8:
                        events.append((m, cue, int(rng.integers(n_words)), amp))
            label = np.int64(c)
        events += _distractors(rng, cfg, n_words, modalities)
        feats, intervals, words = _render(rng, world, cfg, speaker, events, n_words, modalities)
        samples.append(
            Sample(
                id=f"{split}_{k:05d}",
                features=feats,
                label=label,
                speaker=f"spk{speaker:03d}",
                intervals=intervals,
                words=words,
            )
        )
    return samples


def align_to_words(sample: Sample, weighted: bool = False) -> Sample:
    """Word-aligned view: audio and visual frames averaged over each word interval (SDK-style plain mean, or
    with ``weighted`` the mean weighted by each frame's overlap with the word, paper 003 §4.3)."""
    ref = sample.intervals["text"]
    feats = {"text": sample.features["text"]}
    for m in ("audio", "visual"):
        if m in sample.features:
            feats[m], _ = average_to_reference(ref, sample.intervals[m], sample.features[m], weighted=weighted)
    return Sample(
        id=sample.id,
        features=feats,
        label=sample.label,
        speaker=sample.speaker,
        intervals={m: ref for m in feats},
        words=sample.words,
    )


def stack_to_words(sample: Sample) -> Sample:
    """Paper 002's aligned view (§4.4): each word gets as many steps as the modality with the most frames in
    it ("pad and stack ... making all three sequences for a certain time interval having the same length");
    each modality's frames of that word in time order, the word vector in the word's first step, and NaN in
    the padding steps, which hygiene turns into 0 (the training mean) after standardising.

    The paper also masks the padding in attention; the batch format has one contiguous mask per modality,
    so here padding steps are real (zero-valued) steps to the model: a documented deviation.
    """
    ref = sample.intervals["text"]
    others = [m for m in ("audio", "visual") if m in sample.features]
    counts = [frames_per_reference(ref, sample.intervals[m]) for m in others]
    slots = np.maximum.reduce([np.ones(len(ref), np.int64), *counts])
    stacked = {"text": stack_reference(sample.features["text"], slots)}
    for m in others:
        stacked[m] = stack_to_reference(ref, sample.intervals[m], sample.features[m], slots)
    feats = {}
    for m, (values, mask) in stacked.items():
        values = values.astype(np.float32)
        values[~mask] = np.nan
        feats[m] = values
    # each step keeps its word's interval (plots, later alignment)
    step_iv = np.repeat(np.asarray(ref), slots, axis=0)
    words = None
    if sample.words is not None:
        words = [t for w, k in zip(sample.words, slots) for t in [w] + ["[PAD]"] * (int(k) - 1)]
    return Sample(
        id=sample.id,
        features=feats,
        label=sample.label,
        speaker=sample.speaker,
        intervals={m: step_iv for m in feats},
        words=words,
    )


def _bundle(name, task, splits, dims, cfg, extra=None):
    info = {"generator": "emofusion.data.synthetic", "config": asdict(cfg), **(extra or {})}
    return DatasetBundle.from_splits(name, task, splits, dims, info)


def intensity_plus_sentiment_task() -> TaskSpec:
    return emotion_intensity_task()


@register_dataset("synthetic", "MOSEI-like synthetic benchmark (6 emotion intensities; 'synthetic:aligned' = word-aligned)")
def load_synthetic(
    variant: str | None = None, target: str = "emotions", alignment: str = "mean", **options
) -> DatasetBundle:
    """MOSEI-like synthetic benchmark; ``synthetic:aligned`` gives the word-aligned view.

    ``alignment`` (aligned view only): ``"mean"`` (default, the SDK's plain mean of the frames overlapping a
    word), ``"weighted"`` (weighted by overlap duration, paper 003 §4.3) or ``"stacked"`` (paper 002 §4.4:
    every word's frames padded and stacked, :func:`stack_to_words`).

    ``target="emotions"`` (default) predicts the 6 intensities; ``target="sentiment"`` the sentiment score.
    """
    if variant not in (None, "", "unaligned", "aligned"):
        raise ValueError(f"unknown synthetic variant {variant!r}; use 'synthetic' or 'synthetic:aligned'")
    if target not in ("emotions", "sentiment"):
        raise ValueError(f"target must be 'emotions' or 'sentiment', got {target!r}")
    if alignment not in ("mean", "weighted", "stacked"):
        raise ValueError(f"alignment must be 'mean', 'weighted' or 'stacked', got {alignment!r}")
    cfg = SyntheticConfig(**options)
    splits = {s: generate_split(cfg, s) for s in ("train", "val", "test")}
    aligned = variant == "aligned"
    if aligned:
        if alignment == "stacked":
            splits = {s: [stack_to_words(x) for x in v] for s, v in splits.items()}
        else:
            weighted = alignment == "weighted"
            splits = {s: [align_to_words(x, weighted) for x in v] for s, v in splits.items()}
    for samples in splits.values():
        for x in samples:
            x.label = x.label[:6] if target == "emotions" else x.label[6:7]
    if target == "emotions":
        task = emotion_intensity_task()
    else:
        from emofusion.tasks import sentiment_task

        task = sentiment_task()
    name = "synthetic:aligned" if aligned else "synthetic"
    extra = {"aligned": aligned, "target": target, **({"alignment": alignment} if aligned else {})}
    return _bundle(name, task, splits, dict(DIMS), cfg, extra)


@register_dataset("synthetic-cls", "CREMA-D/RAVDESS-like synthetic single-label classification (audio, visual)")
def load_synthetic_cls(**options) -> DatasetBundle:
    """CREMA-D/RAVDESS-like single-label classification: 6 classes, audio + visual only."""
    cfg = SyntheticConfig(**options)
    splits = {s: generate_split(cfg, s, task="cls") for s in ("train", "val", "test")}
    dims = {"audio": AUDIO_DIM, "visual": VISUAL_DIM}
    return _bundle("synthetic-cls", classification_task(CLS_CLASSES), splits, dims, cfg)
