"""Conversation pickles of the bc-LSTM / DialogueRNN line of work: ``conv:FILE.pkl``.

IEMOCAP (``IEMOCAP_features.pkl``) is a 9-tuple ``(videoIDs, videoSpeakers, videoLabels, videoText,
videoAudio, videoVisual, videoSentence, trainVid, testVid)``; MELD (``MELD_features*.pkl``) is
``(videoIDs, videoSpeakers, videoLabels, videoText, videoAudio, videoSentence, trainVid, testVid,
videoSentiment)`` without visual features. Every dict is keyed by conversation id and holds one entry per
utterance, in order. One :class:`Sample` per conversation: its time steps are utterances, ``label`` is the
``[T_utt]`` class sequence, ``utterance_speakers`` the speaker of each utterance.

IEMOCAP label ids (DialogueRNN): 0 happy, 1 sad, 2 neutral, 3 angry, 4 excited, 5 frustrated.
``classes="6"`` keeps them; ``classes="4"`` is paper 004's mapping (happy+excited, sad+frustrated, angry,
neutral), in the order angry, happy, sad, neutral (as ``synthetic-conv``). The files have train/test only:
``val_fraction`` of the training conversations (seeded) become the validation split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emofusion.data.batch import Sample
from emofusion.data.dataset import DatasetBundle
from emofusion.data.format_utils import DataFormatError, check_finite, parse_modalities
from emofusion.data.mmsa import load_pickle
from emofusion.data.registry import register_dataset
from emofusion.data.validation import check_disjoint, check_unique_ids, require_numeric
from emofusion.tasks import classification_task

IEMOCAP6 = ("happy", "sad", "neutral", "angry", "excited", "frustrated")
IEMOCAP4 = ("angry", "happy", "sad", "neutral")
# IEMOCAP 6-class id -> 4-class id (paper 004: happy+excited, sad+frustrated)
IEMOCAP_6_TO_4 = np.array([1, 2, 3, 0, 1, 2])
MELD7 = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
MELD_SENTIMENT = ("neutral", "positive", "negative")


def _is_text_list(d: dict) -> bool:
    v = next(iter(d.values()), None)
    return isinstance(v, list | tuple) and bool(v) and isinstance(v[0], str | bytes)


def parse_conversation_pickle(data, path) -> dict:
    if not isinstance(data, tuple | list) or len(data) < 8:
        raise DataFormatError(
            f"{path}: expected the 9-tuple of the DialogueRNN pickles, got {type(data).__name__}"
        )
    ids, speakers, labels, text, audio = data[:5]
    if _is_text_list(data[5]):  # MELD layout: no visual
        layout = "meld"
        visual, sentences, train, test = None, data[5], data[6], data[7]
        sentiment = data[8] if len(data) > 8 else None
    else:
        layout = "iemocap"
        visual, sentences, train, test = data[5], data[6], data[7], data[8] if len(data) > 8 else None
        sentiment = None
        if test is None:
            raise DataFormatError(f"{path}: IEMOCAP layout needs 9 items (test ids missing)")
    return {
        "layout": layout,
        "ids": ids,
        "speakers": speakers,
        "labels": labels,
        "features": {"text": text, "audio": audio, **({"visual": visual} if visual is not None else {})},
        "sentences": sentences,
        "train": list(train),
        "test": list(test),
        "sentiment": sentiment,
    }


def _speaker_name(s) -> str:
    if isinstance(s, bytes):
        return s.decode("utf-8", "replace")
    if isinstance(s, str):
        return s
    arr = np.asarray(s)
    if arr.ndim == 1 and arr.size > 1:  # MELD one-hot speaker vectors
        return f"spk{int(arr.argmax())}"
    return str(s)


@register_dataset(
    "conv", "bc-LSTM/DialogueRNN conversation pickles (IEMOCAP 4/6 classes, MELD): 'conv:FILE.pkl'"
)
def load_conversations(
    file: str,
    classes: str | int = "6",
    modalities=None,
    val_fraction: float = 0.1,
    seed: int = 0,
    label: str = "emotion",
    allow_nonfinite=False,
    allow_objects=False,
    **options,
) -> DatasetBundle:
    """``classes``: ``6`` or ``4`` (IEMOCAP; MELD has 7 emotions); ``label``: ``emotion`` or ``sentiment`` (MELD)."""
    if options:
        raise TypeError(f"conv: unknown options {sorted(options)}")
    path = Path(file)
    p = parse_conversation_pickle(load_pickle(path, allow_objects), path)
    classes = str(classes)
    wanted = parse_modalities(modalities) or list(p["features"])
    missing = [m for m in wanted if m not in p["features"]]
    if missing:
        raise DataFormatError(
            f"{path}: {p['layout']} pickle has no {missing} features (it has {list(p['features'])})"
        )
    if p["layout"] == "iemocap":
        if classes not in ("4", "6"):
            raise ValueError(f"conv: IEMOCAP classes must be 4 or 6, got {classes!r}")
        names = IEMOCAP4 if classes == "4" else IEMOCAP6
        table = p["labels"]
    else:
        if label == "sentiment":
            if p["sentiment"] is None:
                raise DataFormatError(f"{path}: no sentiment labels in this MELD pickle")
            names, table = MELD_SENTIMENT, p["sentiment"]
        else:
            names, table = MELD7, p["labels"]
    n_raw = 6 if p["layout"] == "iemocap" else len(names)
    dims: dict[str, int] = {}

    def conversation(cid) -> Sample | None:
        if cid not in p["ids"]:
            raise DataFormatError(f"{path}: conversation {cid!r} is in the split lists but not in videoIDs")
        n = len(p["ids"][cid])
        y = require_numeric(table[cid], f"{path}: conversation {cid!r}", "labels")
        if y.dtype.kind == "f" and (not np.isfinite(y).all() or (y != np.round(y)).any()):
            raise DataFormatError(
                f"{path}: conversation {cid!r}: labels {y.reshape(-1).tolist()[:8]} are not integer class ids"
            )
        y = y.astype(np.int64).reshape(-1)
        if len(y) != n:
            raise DataFormatError(f"{path}: conversation {cid!r}: {n} utterances but {len(y)} labels")
        if ((y < 0) | (y >= n_raw)).any():
            raise DataFormatError(
                f"{path}: conversation {cid!r}: label ids {sorted(set(y.tolist()))} outside 0..{n_raw - 1}"
            )
        speakers = [_speaker_name(s) for s in p["speakers"][cid]]
        if len(speakers) != n:
            raise DataFormatError(
                f"{path}: conversation {cid!r}: {n} utterances but {len(speakers)} speakers"
            )
        feats = {}
        for m in wanted:
            rows = p["features"][m].get(cid)
            if rows is None:
                raise DataFormatError(f"{path}: conversation {cid!r} has no {m} features")
            x = require_numeric(rows, f"{path}: conversation {cid!r} {m}", "features").astype(np.float32)
            if x.ndim != 2 or x.shape[0] != n:
                raise DataFormatError(
                    f"{path}: conversation {cid!r} {m} features of shape {x.shape}, expected [{n}, D]"
                )
            if dims.setdefault(m, x.shape[1]) != x.shape[1]:
                raise DataFormatError(f"{path}: conversation {cid!r} {m} dim {x.shape[1]}, others {dims[m]}")
            check_finite(x, f"{path}: conversation {cid!r} {m}", bool(allow_nonfinite),
                         hint="pass data.allow_nonfinite=true to keep them")
            feats[m] = x
        if p["layout"] == "iemocap" and classes == "4":
            y = IEMOCAP_6_TO_4[y]
        sentences = p["sentences"].get(cid) if isinstance(p["sentences"], dict) else None
        return Sample(
            id=str(cid),
            features=feats,
            label=y,
            conversation=str(cid),
            utterance_speakers=speakers,
            words=[str(s) for s in sentences] if sentences is not None else None,
        )

    check_unique_ids([str(c) for c in p["train"]], f"{path}: trainVid")
    check_unique_ids([str(c) for c in p["test"]], f"{path}: testVid")
    check_disjoint({"train": [str(c) for c in p["train"]], "test": [str(c) for c in p["test"]]}, str(path))
    train_ids = sorted(p["train"], key=str)
    rng = np.random.default_rng(int(seed))
    n_val = int(round(float(val_fraction) * len(train_ids)))
    order = rng.permutation(len(train_ids))
    val_ids = {train_ids[i] for i in order[:n_val]}
    splits = {
        "train": [conversation(c) for c in train_ids if c not in val_ids],
        "val": [conversation(c) for c in train_ids if c in val_ids],
        "test": [conversation(c) for c in p["test"]],
    }
    task = classification_task(names, sequence_labels=True)
    info = {
        "format": "conv",
        "layout": p["layout"],
        "file": str(path),
        "classes": list(names),
        "val_fraction": val_fraction,
        "seed": seed,
    }
    return DatasetBundle.from_splits(f"conv:{file}", task, splits, {m: dims.get(m, 0) for m in wanted}, info)
