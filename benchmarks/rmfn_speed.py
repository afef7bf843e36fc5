"""Training speed (samples/s, CPU) of RMFN for K = 1..4 stages, its ablations, and the early-fusion LSTM.

Training = forward + backward + Adam step on the same word-aligned synthetic batches (``synthetic:aligned``,
text / audio / visual). The recursion over time steps t and stages k is sequential by construction; everything
inside a step is batched (all modalities' LSTHMs in one batched matmul).

    python benchmarks/rmfn_speed.py --quick
    python benchmarks/rmfn_speed.py --hidden 64 --batches 20 --batch-size 32
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402

from emofusion.data import load_dataset  # noqa: E402
from speed_common import GeneratedPage, make_batches, measure  # noqa: E402


def model_specs(hidden: int) -> dict[str, tuple[str, dict]]:
    rmfn = {"hidden_dim": hidden, "fuse_dim": hidden, "z_dim": hidden, "summarize_dim": 2 * hidden}
    specs = {f"RMFN-R{k}": ("rmfn", {**rmfn, "stages": k}) for k in (1, 2, 3, 4)}
    specs["RMFN (no HIGHLIGHT), K=3"] = ("rmfn", {**rmfn, "stages": 3, "highlight": False})
    specs["RMFN (no MFP)"] = ("rmfn", {**rmfn, "mfp": False})
    specs["early_fusion_lstm"] = ("early_fusion_lstm", {"hidden_dim": 3 * hidden})
    return specs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small preset (about a minute on one core)")
    parser.add_argument("--hidden", type=int, default=32, help="per-modality LSTHM size (= FUSE and z size)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="also write the output as a generated page (docs/models/...)")
    args = parser.parse_args(argv)
    if args.quick:
        args.hidden, args.batches, args.repeats = 32, 4, 1
    torch.set_num_threads(args.threads)
    with GeneratedPage(args.out, "RMFN stage sweep: speed and parameters"):
        n = args.batch_size * args.batches
        bundle = load_dataset("synthetic:aligned", n_train=n, n_val=1, n_test=1, corrupt=False, seed=0)
        data = make_batches(bundle, args.batch_size, args.batches)
        steps = sum(int(x.length("text")) for x in bundle.train) / len(bundle.train)
        print(
            f"synthetic:aligned, {n} training samples, mean {steps:.1f} word steps, batch {args.batch_size}, "
            f"hidden {args.hidden}, {args.threads} thread(s)\n"
        )
        print("| model | params | train samples/s | inference samples/s |")
        print("|---|---:|---:|---:|")
        for label, (name, options) in model_specs(args.hidden).items():
            train_rate, infer_rate, params = measure(
                name, options, bundle, data, args.repeats, loss=torch.nn.functional.l1_loss
            )
            print(f"| {label} | {params:,} | {train_rate:.1f} | {infer_rate:.1f} |", flush=True)


if __name__ == "__main__":
    main()
