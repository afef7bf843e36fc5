"""Decoding media files offline: audio as mono float32 at a fixed rate, video as timed BGR frames.

Decoders, in order (all ship their native libraries in their wheels, none needs a system ffmpeg):
- audio files (wav, flac, ogg, mp3, aiff): ``soundfile`` (libsndfile), then PyAV;
- audio tracks of video containers (mp4, mkv, webm, mov, avi, flv, m4v, m4a, aac, opus): PyAV (FFmpeg's
  libraries inside the ``av`` wheel);
- video frames: PyAV, or OpenCV's ``VideoCapture`` when PyAV is absent.
A file nothing can decode raises :class:`MediaError` naming the file, the decoders tried and what to install.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from emofusion.data.format_utils import DataFormatError

AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".m4a", ".aac", ".opus")
VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".flv", ".m4v", ".mpg", ".mpeg")
MEDIA_EXTS = AUDIO_EXTS + VIDEO_EXTS
_SOUNDFILE_EXTS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


class MediaError(DataFormatError):
    """A media file that cannot be decoded (corrupt, or a format no installed decoder reads)."""


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTS


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _resample(x: np.ndarray, sr: int, target: int) -> np.ndarray:
    if sr == target or len(x) == 0:
        return x.astype(np.float32, copy=False)
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(int(sr), int(target))
    return resample_poly(x, target // g, int(sr) // g).astype(np.float32)


def _mono(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x.mean(axis=1) if x.ndim == 2 else x


def _audio_soundfile(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return _mono(x), int(sr)


def _audio_av(path: Path) -> tuple[np.ndarray, int] | None:
    """The first audio stream, or None when the container has none."""
    import av

    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type == "audio"]
        if not streams:
            return None
        stream = streams[0]
        sr = int(stream.rate or stream.codec_context.sample_rate)
        chunks = []
        for frame in container.decode(stream):
            a = frame.to_ndarray()
            if a.dtype.kind == "i":
                a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
            a = a.astype(np.float32)
            # planar: [channels, n]; packed: [1, n * channels]
            if frame.format.is_planar:
                a = a.mean(axis=0)
            else:
                a = a.reshape(-1, len(frame.layout.channels)).mean(axis=1)
            chunks.append(a)
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)), sr


def load_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray | None:
    """Mono float32 samples in [-1, 1] at ``sample_rate``; None for a video file without an audio track."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    ext = path.suffix.lower()
    errors = []
    if ext in _SOUNDFILE_EXTS and _have("soundfile"):
        try:
            x, sr = _audio_soundfile(path)
            return _resample(x, sr, sample_rate)
        except Exception as e:  # noqa: BLE001  (try the next decoder, report all)
            errors.append(f"soundfile: {e}")
    if _have("av"):
        try:
            out = _audio_av(path)
            if out is None:
                return None
            return _resample(out[0], out[1], sample_rate)
        except Exception as e:  # noqa: BLE001
            errors.append(f"PyAV: {type(e).__name__}: {e}")
    else:
        errors.append("PyAV is not installed (pip install 'emofusion[extract]' decodes mp4/mkv/webm/mp3)")
    raise MediaError(f"{path}: cannot decode audio ({'; '.join(errors)})")


def video_info(path: str | Path) -> dict:
    """``{"fps", "frames", "width", "height", "duration"}`` of the first video stream (may be estimates)."""
    path = Path(path)
    if _have("av"):
        import av

        try:
            with av.open(str(path)) as c:
                vs = [s for s in c.streams if s.type == "video"]
                if not vs:
                    raise MediaError(f"{path}: no video stream")
                s = vs[0]
                fps = float(s.average_rate or s.guessed_rate or 0) or 25.0
                dur = float(s.duration * s.time_base) if s.duration else (c.duration or 0) / 1e6
                return {"fps": fps, "frames": int(s.frames or round(dur * fps)), "width": s.codec_context.width,
                        "height": s.codec_context.height, "duration": dur}
        except MediaError:
            raise
        except Exception as e:  # noqa: BLE001
            raise MediaError(f"{path}: cannot open video ({type(e).__name__}: {e})") from e
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise MediaError(f"{path}: OpenCV cannot open this video")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    info = {"fps": fps, "frames": n, "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), "duration": n / fps}
    cap.release()
    return info


def iter_frames(path: str | Path, every: int = 1) -> Iterator[tuple[float, float, np.ndarray]]:
    """``(start_s, end_s, frame BGR uint8 [H, W, 3])`` of every ``every``-th frame, timed by the stream."""
    path = Path(path)
    info = video_info(path)
    step = 1.0 / info["fps"]
    if _have("av"):
        import av

        try:
            with av.open(str(path)) as c:
                stream = next(s for s in c.streams if s.type == "video")
                for i, frame in enumerate(c.decode(stream)):
                    if i % every:
                        continue
                    t = float(frame.time) if frame.time is not None else i * step
                    yield t, t + step * every, frame.to_ndarray(format="bgr24")
        except av.error.FFmpegError as e:
            raise MediaError(f"{path}: video decoding failed ({e})") from e
        return
    import cv2

    cap = cv2.VideoCapture(str(path))
    i = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if i % every == 0:
            t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 - step if cap.get(cv2.CAP_PROP_POS_MSEC) else i * step
            yield max(t, 0.0), max(t, 0.0) + step * every, frame
        i += 1
    cap.release()


def decoders() -> dict[str, str | None]:
    """Installed decoders and their versions (recorded in the extraction metadata)."""
    out = {}
    for name, mod in (("soundfile", "soundfile"), ("PyAV", "av"), ("OpenCV", "cv2")):
        try:
            m = __import__(mod)
            out[name] = str(getattr(m, "__version__", "?"))
        except ImportError:
            out[name] = None
    return out
