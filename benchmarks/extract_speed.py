"""Extraction speed per modality, as x real time (seconds of media per second of compute), on generated media.

    python benchmarks/extract_speed.py [--seconds 30] [--video-size 320x240] [--files 4] [--out FILE.json]

Per extractor, one process, one thread: decode (audio of an mp4), acoustic (basic, 100 Hz), words (forced
alignment with the wide beams; recognition), text (GloVe lookup), face (Haar geometry per frame at 25 fps).
Then the whole pipeline on ``--files`` copies with ``--jobs 2`` (2 processes). Media: tests/data/speech.wav
repeated (transcript repeated) and tests/data/face.jpg moving over a grey background. The load average is
printed beside the figures: other processes on the machine slow every number down.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402


def timed(fn, *a, **k):
    """(result, wall seconds); CPU seconds of this process and its children go to CPU[fn]."""
    import resource

    def cpu():
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    t, c = time.perf_counter(), cpu()
    out = fn(*a, **k)
    timed.last_cpu = cpu() - c
    return out, time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="media length per file")
    ap.add_argument("--video-size", default="320x240")
    ap.add_argument("--files", type=int, default=4, help="files for the whole-pipeline run (jobs=2)")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args(argv)
    import cv2

    cv2.setNumThreads(1)
    from emofusion.features.acoustic import extract_acoustic
    from emofusion.features.face import extract_face
    from emofusion.features.media import load_audio
    from emofusion.features.pipeline import ExtractSettings, extract
    from emofusion.features.text import glove_vectors
    from emofusion.features.words import Transcript, WordSettings, extract_words
    from media_helpers import SENTENCE, make_video, speech, write_wav

    w, h = (int(v) for v in args.video_size.split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="emofusion-bench-"))
    one = speech()
    reps = int(np.ceil(args.seconds * 16000 / len(one)))
    x = np.tile(one, reps)[: int(args.seconds * 16000)]
    n_sent = int(len(x) // len(one))
    text = "\n".join([SENTENCE] * max(1, n_sent))
    x = np.tile(one, max(1, n_sent))  # whole sentences, so the transcript matches
    dur = len(x) / 16000
    fps = 25
    video = make_video(tmp / "clip.mp4", n_frames=int(dur * fps), fps=fps, audio=x, size=(w, h))
    (tmp / "clip.txt").write_text(text + "\n")
    wav = write_wav(tmp / "speech.wav", x)
    rows = {}

    def run(name, fn, *a):
        res, wall = timed(fn, *a)
        rows[name] = (wall, timed.last_cpu)
        return res

    audio = run("decode audio (mp4, PyAV)", load_audio, video)
    run("acoustic basic (100 Hz)", extract_acoustic, audio)
    words, _, rep = run("words: forced alignment", extract_words, x,
                        Transcript("t", [(None, ln) for ln in text.splitlines()]), WordSettings())
    run("words: recognition (no transcript)", extract_words, x, None, WordSettings())
    run("text: GloVe (incl. first load)", glove_vectors, [w_.word for w_ in words])
    _, _, info = run(f"face: Haar, {w}x{h} @ {fps} fps", extract_face, video)
    out = {"media_seconds": dur, "load_average": os.getloadavg(), "x_real_time_wall": {}, "x_real_time_cpu": {}}
    print(f"media: {dur:.1f} s ({len(words)} aligned words, {info['frames_with_face']}/{info['frames_read']} "
          f"frames with a face); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("x real time = media seconds / seconds; 'cpu' counts only this job's CPU time (what a quiet machine "
          "would give per core), 'wall' includes waiting for the other processes on the machine")
    head = f"{'extractor (1 process, 1 thread)':44s} {'wall s':>8s} {'x RT wall':>10s} {'cpu s':>8s} {'x RT cpu':>10s}"
    print(head)
    for name, (wall, cpu) in rows.items():
        out["x_real_time_wall"][name] = round(dur / wall, 2)
        out["x_real_time_cpu"][name] = round(dur / max(cpu, 1e-9), 2)
        print(f"{name:44s} {wall:8.2f} {dur / wall:10.1f} {cpu:8.2f} {dur / max(cpu, 1e-9):10.1f}")
    # whole pipeline, 2 processes
    media = tmp / "media"
    media.mkdir()
    for i in range(args.files):
        shutil.copy(video, media / f"clip{i}.mp4")
        shutil.copy(tmp / "clip.txt", media / f"clip{i}.txt")
    _, t = timed(extract, media, tmp / "out", ExtractSettings(), jobs=2, progress=False)
    cpu = timed.last_cpu
    total = dur * args.files
    out["pipeline_jobs2_x_real_time_wall"] = round(total / t, 2)
    out["pipeline_jobs2_x_real_time_cpu_per_core"] = round(total / max(cpu, 1e-9), 2)
    print(f"{'whole pipeline, ' + str(args.files) + ' videos, --jobs 2':44s} {t:8.2f} {total / t:10.1f} "
          f"{cpu:8.2f} {total / max(cpu, 1e-9):10.1f}  (cpu: summed over the 2 workers, so per core)")
    del wav
    shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
