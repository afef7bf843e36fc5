"""``emofusion align``: SDK-style alignment of ``.csd`` files (hooked into the CLI via EXTRA_COMMANDS)."""

from __future__ import annotations

import json

from emofusion.data.alignment import SDK_EPSILON


def register_cli(sub) -> None:
    p = sub.add_parser(
        "align",
        help="align .csd computational sequences to a reference (CMU-MultimodalSDK semantics)",
        description="Writes one aligned .csd per input (reference included, same root names, keys "
        "video[i]) into --out. --mode sdk = plain mean of the frames overlapping each reference interval "
        "by more than epsilon (the SDK's collapse); --mode weighted = overlap-weighted mean (paper 003).",
    )
    p.add_argument("reference", help="reference .csd (usually the words)")
    p.add_argument("others", nargs="+", help=".csd files to align to the reference")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--mode", choices=["sdk", "weighted"], default="sdk")
    p.add_argument(
        "--epsilon",
        type=float,
        default=SDK_EPSILON,
        help="overlap tolerance in seconds (SDK: 1e-5; 2018-19: 1e-3)",
    )
    p.add_argument("--fill-missing", action="store_true", help="reference rows without frames get zeros")
    p.add_argument(
        "--prefix-drop",
        action="store_true",
        help="drop ids the SDK way (by string prefix: dropping 25522 also drops 255224); default: exact ids",
    )
    p.set_defaults(func=cmd_align)


def cmd_align(args) -> int:
    from emofusion.data.csd import align_files

    report = align_files(
        args.reference,
        args.others,
        args.out,
        mode=args.mode,
        epsilon=args.epsilon,
        fill_missing=args.fill_missing,
        prefix_drop=args.prefix_drop,
    )
    print(json.dumps(report, indent=2))
    return 0
