"""Paper 003's modality grid (Tables 1-5, Fig. 2): the suites ``paper003-grid`` (synthetic:aligned) and, with
``--real``, ``paper003-mmmo`` / ``paper003-youtube`` (A, V, A+V on the MFN features in ../shared/data).

Prints the Tables 2-4 layout (main metric per modality subset x network), every table metric, and the
Table 5 per-emotion view of the best cell; Fig. 2 is written next to the suite's results.

    python benchmarks/paper003_grid.py --quick --out bench_out            # ~13 min on a busy 2-core machine
    python benchmarks/paper003_grid.py --quick --real --out bench_out     # + ICT-MMMO and YouTube (~8 min each)
    python benchmarks/paper003_grid.py --full --seeds 3 --out bench_out
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


def main(argv=None) -> int:
    import torch

    from emofusion.evaluation.grid import grid_tables
    from emofusion.evaluation.suite import run_suite

    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="small preset (default)")
    g.add_argument(
        "--full", action="store_true", help="the paper's settings: 100 epochs, patience 10, 3 seeds"
    )
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--out", default="bench_out")
    p.add_argument("--real", action="store_true", help="also the A, V, A+V rows on ICT-MMMO and YouTube")
    args = p.parse_args(argv)
    preset = "full" if args.full else "quick"
    suites = ["paper003-grid"]
    data = Path(os.environ.get("EMOFUSION_DATA", "../shared/data")) / "mfn_h5"
    if args.real:
        if not data.exists():
            p.error(f"--real needs the MFN features in {data} (set EMOFUSION_DATA)")
        suites += ["paper003-mmmo", "paper003-youtube"]
    for name in suites:
        result = run_suite(name, preset=preset, seeds=args.seeds, jobs=args.jobs, out_dir=args.out)
        print(grid_tables(result))
        print(f"\n({name}: {result.seconds:.0f} s; files in {result.out_dir})\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
