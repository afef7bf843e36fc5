"""``emofusion extract``, ``emofusion predict`` and ``emofusion export`` (registered through cli.EXTRA_COMMANDS)."""

from __future__ import annotations

import sys


def _none(v):
    return None if v in (None, "none", "None", "") else v


def add_extract(sub):
    p = sub.add_parser(
        "extract",
        help="media files (wav/flac/mp3/mp4/mkv/webm, + .txt/.srt transcripts) -> features, offline",
        description="Extract acoustic (100 Hz), face (video frame rate) and word (GloVe) feature sequences from a "
        "media file or a folder of them. Writes OUT/csd/*.csd (CMU-MultimodalSDK layout), OUT/segments/ and "
        "OUT/words/ (folder: datasets, unaligned and word-aligned) and OUT/extraction.json. Re-running skips "
        "finished files (same checksum and settings); a broken file is reported and skipped.",
    )
    p.add_argument("input", help="a media file or a folder (searched recursively)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--acoustic", default="basic", help="basic (default, MIT) | egemaps (openSMILE, non-commercial) | none")
    p.add_argument("--words", default="auto", help="auto (align a transcript beside the media, else recognise) | "
                   "align | recognise | none")
    p.add_argument("--text", default="glove", help="glove (default) | none")
    p.add_argument("--face", default="haar", help="haar (default, OpenCV) | none")
    p.add_argument("--face-every", type=int, default=1, help="analyse every n-th video frame (default 1)")
    p.add_argument("--labels", help="CSV with a 'file' column and label columns (+ optional split, speaker)")
    p.add_argument("--jobs", type=int, help="parallel processes (default: min(2, cores))")
    p.add_argument("--strict", action="store_true", help="fail (exit 1) when any file cannot be extracted")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_extract)


def settings_from_args(args):
    from emofusion.features.pipeline import ExtractSettings

    face_options = {"every": args.face_every} if getattr(args, "face_every", 1) != 1 else {}
    return ExtractSettings(acoustic=_none(args.acoustic), words=_none(args.words), text=_none(args.text),
                           face=_none(args.face), face_options=face_options)


def cmd_extract(args) -> int:
    from emofusion.features.pipeline import extract

    settings = settings_from_args(args)
    res = extract(args.input, args.out, settings, jobs=args.jobs, progress=not args.quiet, labels=args.labels,
                  strict=args.strict)
    print(f"extracted {len(res.ids)} file(s) ({len(res.skipped)} already done) in {res.seconds:.1f} s -> {res.out}")
    print(f"  csd: {res.out / 'csd'}   datasets: folder:{res.out / 'segments'}  folder:{res.out / 'words'}")
    if res.failed:
        print(f"  {len(res.failed)} file(s) skipped:", file=sys.stderr)
        for err in res.failed.values():
            print(f"    - {err}", file=sys.stderr)
    return 1 if res.failed and not res.ids else 0


def register_cli(sub):
    add_extract(sub)
    from emofusion import export, inference

    inference.add_predict(sub)
    export.add_export(sub)
