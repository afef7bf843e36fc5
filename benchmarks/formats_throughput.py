"""Read throughput / peak memory of the lazy ``.csd`` reader, and SDK-exact alignment time, on generated files.

    python benchmarks/formats_throughput.py --quick          # ~2,000 segments, 300 videos: about a minute
    python benchmarks/formats_throughput.py                  # full: 23,000 segments (MOSEI COVAREP size),
                                                             # 3,300 videos x ~140 words (MOSEI word count)

Part 1 writes a ``.csd`` with one entry per segment (like the unaligned CMU-MOSEI COVAREP: 100 Hz, 74-d
float32, 1-7 s per segment), then measures in fresh processes: opening the file (index only), random
access to single segments, a full sequential scan, and the peak RSS of each. Part 2 writes a word
reference (~0.3 s words) and a full-video 100 Hz COVAREP-like sequence and times ``align_sdk`` (plain mean,
eps 1e-5) streaming both files lazily. Files go to --workdir and are deleted unless --keep.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import multiprocessing as mp  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

PRESETS = {
    "quick": {"segments": 2000, "videos": 300, "words": 140},
    "full": {"segments": 23000, "videos": 3300, "words": 140},
}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_segments(path: Path, n: int, seed: int = 0) -> tuple[float, int]:
    from emofusion.data.alignment import frame_intervals
    from emofusion.data.csd import write_csd

    rng = np.random.default_rng(seed)

    class Lazy(dict):  # generates entries while writing, so the generator never holds the whole file
        def items(self):
            for i in range(n):
                t = int(rng.integers(100, 700))
                yield f"seg{i:05d}", (frame_intervals(t, 100.0), rng.standard_normal((t, 74), np.float32))

    t0 = time.perf_counter()
    write_csd(path, "COVAREP", Lazy())
    return time.perf_counter() - t0, path.stat().st_size


def write_alignment_inputs(folder: Path, videos: int, words: int, seed: int = 1) -> float:
    from emofusion.data.alignment import frame_intervals
    from emofusion.data.csd import write_csd

    rng = np.random.default_rng(seed)
    lengths = {}

    class Words(dict):
        def items(self):
            for v in range(videos):
                n = int(rng.integers(words // 2, words * 3 // 2))
                t = np.cumsum(rng.uniform(0.1, 0.5, n + 1))
                lengths[v] = t[-1]
                yield f"vid{v:05d}", (np.stack([t[:-1], t[1:]], 1), rng.standard_normal((n, 300), np.float32))

    class Audio(dict):
        def items(self):
            for v in range(videos):
                t = int(lengths[v] * 100) + 10
                yield f"vid{v:05d}", (frame_intervals(t, 100.0), rng.standard_normal((t, 74), np.float32))

    t0 = time.perf_counter()
    write_csd(folder / "words.csd", "glove_vectors", Words())
    write_csd(folder / "covarep.csd", "COVAREP", Audio())
    return time.perf_counter() - t0


def _baseline():
    import emofusion.data.csd  # noqa: F401  (imports torch via the batch type)

    return {"peak_mb": _peak_mb()}


def _open(path):
    from emofusion.data.csd import ComputationalSequence

    t0 = time.perf_counter()
    seq = ComputationalSequence(path)
    n = len(seq)
    return {"open_s": time.perf_counter() - t0, "entries": n, "peak_mb": _peak_mb()}


def _random(path, k=2000, seed=0):
    from emofusion.data.csd import ComputationalSequence

    seq = ComputationalSequence(path)
    keys = seq.keys()
    idx = np.random.default_rng(seed).integers(0, len(keys), k)
    t0 = time.perf_counter()
    nbytes = 0
    for i in idx:
        iv, ft = seq[keys[i]]
        nbytes += ft.nbytes + iv.nbytes
    dt = time.perf_counter() - t0
    return {"random_per_s": k / dt, "random_mb_s": nbytes / dt / 2**20, "peak_mb": _peak_mb()}


def _scan(path):
    from emofusion.data.csd import ComputationalSequence

    seq = ComputationalSequence(path)
    t0 = time.perf_counter()
    nbytes = 0
    for key in seq.keys():
        iv, ft = seq[key]
        nbytes += ft.nbytes + iv.nbytes
    dt = time.perf_counter() - t0
    return {
        "scan_s": dt,
        "scan_per_s": len(seq) / dt,
        "scan_mb_s": nbytes / dt / 2**20,
        "peak_mb": _peak_mb(),
    }


def _align(folder):
    from emofusion.data.alignment import align_sdk
    from emofusion.data.csd import ComputationalSequence

    ref = ComputationalSequence(folder / "words.csd")
    audio = ComputationalSequence(folder / "covarep.csd")
    t0 = time.perf_counter()
    a_ref, a_out, _ = align_sdk(ref, {"covarep": audio})
    dt = time.perf_counter() - t0
    return {
        "align_s": dt,
        "words": len(a_ref),
        "aligned_entries": len(a_out["covarep"]),
        "words_per_s": len(a_ref) / dt,
        "peak_mb": _peak_mb(),
    }


def _in_child(fn, *args):
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=list(PRESETS), default="full")
    parser.add_argument("--quick", action="store_true", help="same as --preset quick")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--skip-align", action="store_true")
    args = parser.parse_args()
    p = PRESETS["quick" if args.quick else args.preset]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="emofusion_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        r = _in_child(_baseline)
        rows.append(("baseline (import only)", f"peak RSS {r['peak_mb']:.0f} MB"))
        seg = work / "segments.csd"
        w_s, size = write_segments(seg, p["segments"])
        rows.append(("write segments", f"{p['segments']} segments, {size / 2**30:.2f} GiB in {w_s:.1f} s"))
        r = _in_child(_open, seg)
        rows.append(
            (
                "open (index only)",
                f"{r['open_s']:.2f} s for {r['entries']} entries, peak RSS {r['peak_mb']:.0f} MB",
            )
        )
        r = _in_child(_random, seg)
        rows.append(
            (
                "random segment reads",
                f"{r['random_per_s']:.0f} /s ({r['random_mb_s']:.0f} MB/s), peak RSS {r['peak_mb']:.0f} MB",
            )
        )
        r = _in_child(_scan, seg)
        rows.append(
            (
                "sequential scan",
                f"{r['scan_s']:.1f} s, {r['scan_per_s']:.0f} segments/s ({r['scan_mb_s']:.0f} MB/s), "
                f"peak RSS {r['peak_mb']:.0f} MB",
            )
        )
        seg.unlink()
        if not args.skip_align:
            w_s = write_alignment_inputs(work, p["videos"], p["words"])
            size = sum(f.stat().st_size for f in work.glob("*.csd"))
            rows.append(
                ("write align inputs", f"{p['videos']} videos, {size / 2**30:.2f} GiB in {w_s:.1f} s")
            )
            r = _in_child(_align, work)
            rows.append(
                (
                    "align_sdk (COVAREP -> words)",
                    f"{r['align_s']:.1f} s for {r['words']} words ({r['words_per_s']:.0f} words/s, "
                    f"{r['aligned_entries']} aligned entries), peak RSS {r['peak_mb']:.0f} MB",
                )
            )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n| measurement ({'quick' if args.quick else args.preset}) | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
