"""Paper 004 (MMAN): Tables 2-3 and Fig. 3 confusion matrices on synthetic-conv, in one command.

    python benchmarks/paper004_table2.py --quick                # 3 seeds, ~10 min on 1 thread
    python benchmarks/paper004_table2.py --preset full --seeds 5
    python benchmarks/paper004_table2.py --mman-config configs/mman.yaml [--finetune-epochs 5]

The first form runs the ``paper004-table2`` suite (single-stage rows as cached runs, then cLSTM-LF and MMAN
trained on the frozen sub-networks of the same seed) and prints/writes OUT/paper004-table2/paper004_tables.md
and confusion_<model>.png. The second runs the staged protocol (``emofusion.training.protocols.train_mman``) once
for a config file.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="quick", choices=["quick", "full"])
    parser.add_argument("--quick", action="store_true", help="same as --preset quick")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="bench_out")
    parser.add_argument("--mman-config", help="run train_mman for this YAML config instead of the tables")
    parser.add_argument("--finetune-epochs", type=int, default=0)
    parser.add_argument(
        "--fusion-lr", type=float, default=1e-2, help="lr of the fusion stage (--mman-config)"
    )
    parser.add_argument(
        "--fusion-epochs", type=int, default=40, help="epochs of the fusion stage (--mman-config)"
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    if args.mman_config:
        import json

        from emofusion.training.config import RunConfig, load_yaml
        from emofusion.training.protocols import train_mman

        config = RunConfig.from_dict(load_yaml(args.mman_config))
        out = train_mman(
            config,
            finetune_epochs=args.finetune_epochs,
            fusion_lr=args.fusion_lr,
            fusion_epochs=args.fusion_epochs,
        )
        report = {name: run.metrics.get("test", {}).get("accuracy") for name, run in out["subnets"].items()}
        report["fusion"] = out["fusion"].metrics["test"]["accuracy"]
        if out["finetune"] is not None:
            report["finetune"] = out["finetune"].metrics["test"]["accuracy"]
        print(json.dumps({"test_accuracy": report, "run_dir": str(out["fusion"].run_dir)}, indent=1))
        return

    from emofusion.evaluation.suite import run_suite

    result = run_suite(
        "paper004-table2", preset="quick" if args.quick else args.preset, seeds=args.seeds, out_dir=args.out
    )
    print("wrote:", *[str(f) for f in result.files], sep="\n  ")


if __name__ == "__main__":
    main()
