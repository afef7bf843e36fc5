"""Fill docs/tuning.md's measured section from finished `emofusion tune` studies (their results.json).

    python benchmarks/tuning_doc.py STUDY_DIR [STUDY_DIR ...] [--docs docs/tuning.md]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emofusion.evaluation.tune import render_doc


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("studies", nargs="+", help="study folders written by `emofusion tune --study-dir`")
    parser.add_argument("--docs", default=str(Path(__file__).resolve().parents[1] / "docs" / "tuning.md"))
    args = parser.parse_args(argv)
    print(f"wrote {render_doc(args.studies, args.docs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
