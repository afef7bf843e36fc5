"""CREMA-D (Cao et al. 2014): ``cremad:FOLDER``, 91 actors, 12 sentences, 6 emotions, labels from file names.

Standard layout: ``FOLDER/AudioWAV/1001_DFA_ANG_XX.wav`` and ``FOLDER/VideoFlash/1001_DFA_ANG_XX.flv``
(``ACTOR_SENTENCE_EMOTION_LEVEL``); any sub-folder works, files are found by name. ``media=auto`` uses the
videos when present (they carry the audio too, and give the face), else the wavs; ``media=audio|video``
forces one. Splits are speaker-independent (see :mod:`emofusion.data.media_recipes`).
"""

from __future__ import annotations

import re
from pathlib import Path

from emofusion.data.media_recipes import Clip, load_media_recipe
from emofusion.data.registry import register_dataset

EMOTIONS = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
CLASSES = tuple(sorted(EMOTIONS.values()))
SENTENCES = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")
AUDIO = (".wav", ".mp3")
VIDEO = (".flv", ".mp4")


def parse_name(stem: str) -> tuple[str, str, str] | None:
    """(actor, emotion class, sentence) of a CREMA-D file stem, or None when it is not one."""
    m = NAME.match(stem)
    if not m or m.group(3) not in EMOTIONS or m.group(2) not in SENTENCES:
        return None
    return m.group(1), EMOTIONS[m.group(3)], SENTENCES[m.group(2)]


def find_clips(root: Path, media: str = "auto") -> list[Clip]:
    by_kind: dict[str, dict[str, Path]] = {"audio": {}, "video": {}}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or parse_name(p.stem) is None:
            continue
        ext = p.suffix.lower()
        kind = "video" if ext in VIDEO else ("audio" if ext in AUDIO else None)
        if kind and (p.stem not in by_kind[kind] or ext in (".wav", ".flv")):
            by_kind[kind][p.stem] = p
    if media not in ("auto", "audio", "video"):
        raise ValueError(f"cremad: media must be auto, audio or video, got {media!r}")
    kind = media if media != "auto" else ("video" if by_kind["video"] else "audio")
    out = []
    for stem, p in sorted(by_kind[kind].items()):
        actor, label, sentence = parse_name(stem)
        out.append(Clip(p, actor, label, sentence))
    return out


@register_dataset("cremad", "CREMA-D raw media, labels from file names, extracted once: 'cremad:FOLDER'")
def load_cremad(folder: str, **options):
    return load_media_recipe("cremad", folder, find_clips, CLASSES, **options)
