"""RAVDESS (Livingstone & Russo 2018): ``ravdess:FOLDER``, 24 actors, 8 emotions, labels from file names.

Names are 7 two-digit codes ``MM-VV-EE-II-SS-RR-AA``: modality (01 audio-video, 02 video-only, 03 audio-only),
vocal channel (01 speech, 02 song), emotion (01 neutral ... 08 surprised), intensity, statement (01 "Kids
are talking by the door", 02 "Dogs are sitting by the door"), repetition, actor (odd male, even female).
Standard layout: ``Actor_XX/`` folders from ``Audio_Speech_Actors_01-24.zip`` (.wav) and/or
``Video_Speech_Actor_XX.zip`` (.mp4). ``media=auto`` uses the audio-video mp4s (01) when present, else the
audio-only wavs (03); video-only files (02) have no audio and are not used. ``channel=speech|song|all``.
"""

from __future__ import annotations

import re
from pathlib import Path

from emofusion.data.media_recipes import Clip, load_media_recipe
from emofusion.data.registry import register_dataset

EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
            "07": "disgust", "08": "surprised"}
CLASSES = tuple(EMOTIONS.values())
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
NAME = re.compile(r"^(0[123])-(0[12])-(0[1-8])-(0[12])-(0[12])-(0[12])-(\d{2})$")


def parse_name(stem: str) -> dict | None:
    m = NAME.match(stem)
    if not m:
        return None
    mod, chan, emo, inten, stmt, rep, actor = m.groups()
    return {"modality": mod, "channel": "speech" if chan == "01" else "song", "label": EMOTIONS[emo],
            "intensity": inten, "sentence": STATEMENTS[stmt], "actor": actor}


def find_clips(root: Path, media: str = "auto", channel: str = "speech") -> list[Clip]:
    found: dict[str, list[tuple[dict, Path]]] = {"01": [], "03": []}
    for p in sorted(root.rglob("*")):
        info = parse_name(p.stem) if p.is_file() else None
        if info is None or info["modality"] == "02":
            continue
        if channel != "all" and info["channel"] != channel:
            continue
        found[info["modality"]].append((info, p))
    if media not in ("auto", "audio", "video"):
        raise ValueError(f"ravdess: media must be auto, audio or video, got {media!r}")
    code = {"video": "01", "audio": "03"}.get(media) or ("01" if found["01"] else "03")
    return [Clip(p, info["actor"], info["label"], info["sentence"]) for info, p in found[code]]


@register_dataset("ravdess", "RAVDESS raw media, labels from file names, extracted once: 'ravdess:FOLDER'")
def load_ravdess(folder: str, channel: str = "speech", **options):
    if channel not in ("speech", "song", "all"):
        raise ValueError(f"ravdess: channel must be speech, song or all, got {channel!r}")
    return load_media_recipe("ravdess", folder, lambda root, media: find_clips(root, media, channel), CLASSES,
                             **options)
