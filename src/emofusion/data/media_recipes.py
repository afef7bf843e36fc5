"""Datasets of raw media with labels in the file names (CREMA-D, RAVDESS): extract once, cache, split by speaker.

A recipe lists the media files of the standard distribution layout, parses each name into (speaker,
label, known sentence), runs ``emofusion extract`` once into a cache folder (resumable: a second load
only checks checksums), and returns one sample per clip with speaker-independent splits: the speakers are
shuffled with ``split_seed`` and cut into train / val / test by ``val_fraction`` and ``test_fraction``
(at least one speaker in each). The known sentence of each clip is force-aligned, so ``text`` and the
``words`` view exist (the sentences are spread over all emotions: text alone carries no label here).
Cache: ``cache=PATH``, else ``$EMOFUSION_CACHE`` or ``~/.cache/emofusion``, one folder per dataset folder
and extraction settings.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emofusion.data.batch import Sample
from emofusion.data.dataset import DatasetBundle
from emofusion.data.format_utils import DataFormatError, log, parse_modalities
from emofusion.tasks import classification_task


@dataclass
class Clip:
    path: Path
    speaker: str
    label: str
    sentence: str | None


def extraction_settings(options: dict):
    from emofusion.features.pipeline import ExtractSettings

    face_every = int(options.get("face_every", 1))
    words = options.get("words", "align")
    return ExtractSettings.from_dict({
        "acoustic": options.get("acoustic", "basic"),
        "words": words,
        "text": options.get("text", "glove" if words not in (None, "none") else None),
        "face": options.get("face", "haar"),
        "face_options": {"every": face_every} if face_every != 1 else {},
    })


def cache_dir(recipe: str, folder: str, options: dict) -> Path:
    if options.get("cache"):
        return Path(options["cache"])
    base = Path(os.environ.get("EMOFUSION_CACHE") or Path.home() / ".cache" / "emofusion")
    key = hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:10]
    return base / f"{recipe}-{key}-{extraction_settings(options).key()}"


def speaker_splits(speakers: list[str], seed: int, val_fraction: float, test_fraction: float) -> dict[str, str]:
    """speaker -> split, speaker-independent and deterministic."""
    uniq = sorted(set(speakers))
    if len(uniq) < 3:
        raise DataFormatError(f"speaker-independent splits need at least 3 speakers, found {len(uniq)}: {uniq}")
    order = [uniq[i] for i in np.random.RandomState(seed).permutation(len(uniq))]
    n_test = max(1, int(round(test_fraction * len(uniq))))
    n_val = max(1, int(round(val_fraction * len(uniq))))
    out = {}
    for i, s in enumerate(order):
        out[s] = "test" if i < n_test else ("val" if i < n_test + n_val else "train")
    return out


def load_media_recipe(
    name: str,
    folder: str,
    find: Callable[[Path, str], list[Clip]],
    classes: tuple[str, ...],
    modalities=None,
    media: str = "auto",
    align: str = "segments",
    split_seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    jobs: int | None = None,
    progress: bool = False,
    **options,
) -> DatasetBundle:
    from emofusion.features.pipeline import extract, load_result, segment_samples

    known = {"cache", "acoustic", "words", "text", "face", "face_every"}
    unknown = set(options) - known
    if unknown:
        raise TypeError(f"{name}: unknown options {sorted(unknown)}")
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{name}: {root} is not a folder")
    clips = find(root, media)
    if not clips:
        raise DataFormatError(f"{name}: no media files with {name} names under {root}")
    settings = extraction_settings(options)
    out = cache_dir(name, folder, options)
    res = extract(root, out, settings, jobs=jobs, progress=progress, files=[c.path for c in clips],
                  transcripts={str(c.path): c.sentence for c in clips if c.sentence})
    if res.failed:
        log.warning("%s: %d clips could not be extracted (skipped), first: %s", name, len(res.failed),
                    next(iter(res.failed.values())))
    split_of = speaker_splits([c.speaker for c in clips], split_seed, val_fraction, test_fraction)
    by_path = {str(c.path): c for c in clips}
    splits: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    dims: dict[str, int] = {}
    for fid in res.ids:
        r = load_result(out, fid)
        clip = by_path[res.sources[fid]]
        view = "words" if align == "words" else "segments"
        segs = segment_samples(r, view)
        s = segs[0] if len(segs) == 1 else _merge(segs)
        for m, x in s["features"].items():
            dims.setdefault(m, x.shape[1])
        splits[split_of[clip.speaker]].append(Sample(
            id=fid, features=s["features"], label=np.int64(classes.index(clip.label)), speaker=clip.speaker,
            intervals=s["intervals"]))
    available = [m for m in ("text", "audio", "visual") if m in dims]
    wanted = parse_modalities(modalities) or [m for m in ("audio", "visual") if m in dims]
    missing = [m for m in wanted if m not in dims]
    if missing:
        raise DataFormatError(f"{name}: no {missing} features (available: {available}; video files give visual)")
    # every sample gets every modality: an empty [0, D] sequence where absent (a clip without a face)
    for samples in splits.values():
        for s in samples:
            s.features = {m: s.features.get(m, np.zeros((0, dims[m]), np.float32)) for m in wanted}
    info = {"format": name, "folder": str(root), "cache": str(out), "align": align, "clips": len(clips),
            "extracted": len(res.ids), "failed": len(res.failed), "split_seed": split_seed,
            "speakers": {s: sorted(k for k, v in split_of.items() if v == s) for s in ("train", "val", "test")}}
    return DatasetBundle.from_splits(f"{name}:{folder}", classification_task(classes), splits,
                                     {m: dims[m] for m in wanted}, info)


def _merge(segs: list[dict]) -> dict:
    feats = {m: np.concatenate([s["features"][m] for s in segs]) for m in segs[0]["features"]}
    ivs = {m: np.concatenate([s["intervals"][m] for s in segs]) for m in segs[0]["intervals"]}
    return {"features": feats, "intervals": ivs}
