"""Parameter counts of the paper models at the papers' input sizes, generated (never typed) into
docs/models/params.md; model pages link to it instead of stating counts.

    python benchmarks/model_params.py            # print and rewrite docs/models/params.md
    python benchmarks/model_params.py --check    # exit 1 if the page is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "models" / "params.md"
MOSEI = {"text": 300, "audio": 74, "visual": 35}
MODELS = ["mult", "delta_attention", "rrnn", "gca", "rmfn", "ef_lstm", "ef_blstm", "ef_cnn", "marn", "tfn", "lmf", "mfn"]


def counts() -> dict[str, int]:
    from emofusion.models import create_model, list_models
    from emofusion.tasks import emotion_intensity_task

    task = emotion_intensity_task()
    out = {}
    for name in MODELS:
        if name in list_models():
            out[name] = create_model(name, MOSEI, task).num_parameters()
    return out


def render(c: dict[str, int]) -> str:
    lines = [
        "# Parameter counts (generated)",
        "",
        "Written by `python benchmarks/model_params.py`; default options, CMU-MOSEI input sizes",
        f"(text {MOSEI['text']}, audio {MOSEI['audio']}, visual {MOSEI['visual']}), 6 emotion outputs.",
        "",
        "| model | parameters | vs mult |",
        "|---|---:|---:|",
    ]
    for name, n in c.items():
        ratio = f"{n / c['mult']:.2f}" if "mult" in c else ""
        lines.append(f"| {name} | {n:,} | {ratio} |")
    if "mult" in c and "delta_attention" in c:
        lines += [
            "",
            "Paper 002 says its model has about half of MulT's parameters. Against the reference-equal MulT",
            f"(5 cross-modal and max(5, 3) = 5 self-attention layers) delta_attention's default sizes give "
            f"{c['delta_attention'] / c['mult']:.2f} of MulT's count ({c['delta_attention']:,} vs {c['mult']:,});",
            "the paper does not state its layer sizes, so the claim cannot be checked beyond this.",
        ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    text = render(counts())
    if args.check:
        return 0 if PAGE.exists() and PAGE.read_text() == text else 1
    PAGE.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    raise SystemExit(main())
