"""``synthetic-conv``: seeded, IEMOCAP-like dyadic conversations with one feature vector per utterance.

A conversation is ONE :class:`Sample`: ``features[m]`` is ``[n_utterances, D_m]`` (the time axis is the
utterance index), ``label`` an int64 array ``[n_utterances]`` of class ids, ``utterance_speakers`` who spoke
each utterance. The task is 4-class classification with sequence labels (paper 004's IEMOCAP protocol:
angry, happy, sad, neutral).

Generative story (each property checked in tests/test_synthetic_conv.py):

* Dyadic: two speakers drawn from the split's own speaker pool (splits are speaker-disjoint, hence also
  conversation-disjoint); turns mostly alternate (``p_alternate``), 8-24 utterances per conversation.
* Emotions persist and shift: each speaker carries an emotional state that stays with probability
  ``persistence`` per turn, otherwise is copied from the partner's last emotion (contagion,
  ``contagion``) or redrawn from the class prior. Context therefore predicts the label.
* Evidence is partial per modality: audio encodes arousal (angry and happy share the "aroused" cue, sad is
  "low", neutral nothing), text encodes valence (angry and sad share "negative", happy "positive"), visual
  is weaker (smile for happy, frown for angry and sad). No single modality separates all four classes.
* Evidence is partly cross-modal: a share ``sarcasm`` of angry utterances carries POSITIVE text; only the
  harsh audio at the same utterance tells it apart from happy. Each modality of each utterance is also
  "obscured" with probability ``p_obscured`` (cue attenuated, noise raised; a fixed reliability direction
  makes this visible in the vector), so the useful modality varies per utterance: a fusion that weighs
  modalities per utterance (attention) can use this, plain concatenation has to learn it.
* Speaker idiosyncrasy: every speaker adds a constant offset to their audio and visual vectors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from emofusion.data.batch import Sample
from emofusion.data.dataset import DatasetBundle
from emofusion.data.registry import register_dataset
from emofusion.tasks import classification_task

CONV_CLASSES = ("angry", "happy", "sad", "neutral")
ANGRY, HAPPY, SAD, NEUTRAL = range(4)
# IEMOCAP-like class prior (neutral and sad(+frustrated) most common, see paper 004 Table 1)
CLASS_PRIOR = np.array([0.20, 0.25, 0.27, 0.28])
# cue name -> per-class amplitude, per modality
CUE_TABLE = {
    "audio": {"aroused": [1.0, 1.0, 0.0, 0.0], "low": [0.0, 0.0, 1.0, 0.0], "harsh": [0.8, 0.0, 0.0, 0.0]},
    "text": {
        "negative": [1.0, 0.0, 1.0, 0.0],
        "positive": [0.0, 1.0, 0.0, 0.0],
        "calm_words": [0.0, 0.0, 0.0, 0.8],
    },
    "visual": {"smile": [0.0, 0.7, 0.0, 0.0], "frown": [0.6, 0.0, 0.6, 0.0]},
}


@dataclass
class SyntheticConvConfig:
    n_train: int = 120  # conversations per split
    n_val: int = 30
    n_test: int = 40
    min_utterances: int = 8
    max_utterances: int = 24
    speakers_per_split: tuple[int, int, int] = (16, 6, 6)
    seed: int = 0
    audio_dim: int = 100
    visual_dim: int = 64
    text_dim: int = 100
    noise: float = 1.0  # per-dimension gaussian noise std (the cue amplitudes are ~1 * cue_scale)
    cue_scale: float = 2.2
    persistence: float = 0.75
    contagion: float = 0.5
    p_alternate: float = 0.85
    sarcasm: float = 0.35
    p_obscured: float = 0.3
    speaker_offset: float = 0.6


def _unit(rng, dim, n):
    v = rng.standard_normal((n, dim))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class _World:
    """Cue directions and speaker offsets: fixed by the seed, shared by all splits."""

    def __init__(self, cfg: SyntheticConvConfig):
        rng = np.random.default_rng([cfg.seed, 7919])
        self.dims = {"audio": cfg.audio_dim, "visual": cfg.visual_dim, "text": cfg.text_dim}
        self.cues = {}
        self.reliability = {}
        for m, table in CUE_TABLE.items():
            dirs = _unit(rng, self.dims[m], len(table) + 1)
            self.cues[m] = {name: dirs[i] for i, name in enumerate(table)}
            self.reliability[m] = dirs[-1]
        n_speakers = sum(cfg.speakers_per_split)
        self.offsets = {
            m: cfg.speaker_offset
            * rng.standard_normal((n_speakers, self.dims[m]))
            / np.sqrt(self.dims[m])
            * 4
            for m in ("audio", "visual")
        }
        bounds = np.cumsum((0, *cfg.speakers_per_split))
        self.speaker_pools = {
            s: np.arange(bounds[i], bounds[i + 1]) for i, s in enumerate(("train", "val", "test"))
        }


def _emotion_sequence(rng, cfg, speakers_of_turns):
    state = {}
    last = None
    labels = []
    for spk in speakers_of_turns:
        if spk not in state:
            y = rng.choice(4, p=CLASS_PRIOR) if last is None or rng.random() > cfg.contagion else last
        elif rng.random() < cfg.persistence:
            y = state[spk]
        elif last is not None and rng.random() < cfg.contagion:
            y = last
        else:
            y = rng.choice(4, p=CLASS_PRIOR)
        state[spk] = int(y)
        last = int(y)
        labels.append(int(y))
    return np.asarray(labels, dtype=np.int64)


def _render_utterance(rng, world: _World, cfg, y: int, speaker: int) -> dict[str, np.ndarray]:
    feats = {}
    sarcastic = y == ANGRY and rng.random() < cfg.sarcasm
    for m, table in CUE_TABLE.items():
        obscured = rng.random() < cfg.p_obscured
        cue_gain = 0.25 if obscured else 1.0
        noise = cfg.noise * (1.8 if obscured else 1.0)
        x = noise * rng.standard_normal(world.dims[m])
        for name, amps in table.items():
            amp = amps[y]
            if m == "text" and sarcastic:
                # sarcasm: positive words spoken in anger; only audio ("harsh") disambiguates
                amp = {"positive": 1.0, "negative": 0.0}.get(name, amp)
            if amp:
                x += cfg.cue_scale * cue_gain * amp * (1 + 0.2 * rng.standard_normal()) * world.cues[m][name]
        # an extractor-visible reliability direction (e.g. face-detector confidence, SNR)
        x += (1.5 if obscured else -1.5) * world.reliability[m]
        if m in world.offsets:
            x += world.offsets[m][speaker]
        feats[m] = x.astype(np.float32)
    return feats


def generate_conversations(cfg: SyntheticConvConfig, split: str) -> list[Sample]:
    world = _World(cfg)
    split_index = {"train": 0, "val": 1, "test": 2}[split]
    n = (cfg.n_train, cfg.n_val, cfg.n_test)[split_index]
    rng = np.random.default_rng([cfg.seed, split_index, 104729])
    pool = world.speaker_pools[split]
    if len(pool) < 2:
        raise ValueError(f"synthetic-conv: split {split!r} needs at least 2 speakers, has {len(pool)}")
    samples = []
    for c in range(n):
        pair = rng.choice(pool, size=2, replace=False)
        n_utt = int(rng.integers(cfg.min_utterances, cfg.max_utterances + 1))
        turn, who = [], int(rng.integers(2))
        for _ in range(n_utt):
            turn.append(who)
            if rng.random() < cfg.p_alternate:
                who = 1 - who
        labels = _emotion_sequence(rng, cfg, turn)
        rows = [_render_utterance(rng, world, cfg, int(y), int(pair[t])) for y, t in zip(labels, turn)]
        features = {m: np.stack([r[m] for r in rows]) for m in ("audio", "visual", "text")}
        cid = f"{split}_conv{c:04d}"
        samples.append(
            Sample(
                id=cid,
                features=features,
                label=labels,
                speaker=None,
                conversation=cid,
                utterance_speakers=[f"spk{int(pair[t]):03d}" for t in turn],
            )
        )
    return samples


@register_dataset(
    "synthetic-conv", "IEMOCAP-like synthetic dyadic conversations (4 classes, utterance vectors)"
)
def load_synthetic_conv(modalities=None, **options) -> DatasetBundle:
    """Options are :class:`SyntheticConvConfig` fields (``n_train`` conversations, ``seed``, ``noise`` ...)."""
    if "speakers_per_split" in options:
        options["speakers_per_split"] = tuple(options["speakers_per_split"])
    try:
        cfg = SyntheticConvConfig(**options)
    except TypeError as err:
        raise TypeError(
            f"synthetic-conv: {err}; valid options: {sorted(asdict(SyntheticConvConfig()))}"
        ) from err
    if cfg.min_utterances < 1 or cfg.max_utterances < cfg.min_utterances:
        raise ValueError(f"synthetic-conv: bad utterance range {cfg.min_utterances}..{cfg.max_utterances}")
    splits = {s: generate_conversations(cfg, s) for s in ("train", "val", "test")}
    dims = {"audio": cfg.audio_dim, "visual": cfg.visual_dim, "text": cfg.text_dim}
    if modalities is not None:
        modalities = [modalities] if isinstance(modalities, str) else list(modalities)
        unknown = set(modalities) - set(dims)
        if unknown:
            raise ValueError(f"synthetic-conv: unknown modalities {sorted(unknown)}; it has {sorted(dims)}")
        for samples in splits.values():
            for s in samples:
                s.features = {m: s.features[m] for m in modalities}
        dims = {m: dims[m] for m in modalities}
    return DatasetBundle.from_splits(
        "synthetic-conv",
        classification_task(CONV_CLASSES, sequence_labels=True),
        splits,
        dims,
        {
            "generator": "emofusion.data.synthetic_conv",
            "config": asdict(cfg),
            "classes": list(CONV_CLASSES),
        },
    )
