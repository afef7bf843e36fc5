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
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402

from emofusion.data import load_dataset  # noqa: E402
from emofusion.data.collate import collate_samples  # noqa: E402
from emofusion.models import create_model  # noqa: E402


def model_specs(hidden: int) -> dict[str, tuple[str, dict]]:
    rmfn = {"hidden_dim": hidden, "fuse_dim": hidden, "z_dim": hidden, "summarize_dim": 2 * hidden}
    specs = {f"RMFN-R{k}": ("rmfn", {**rmfn, "stages": k}) for k in (1, 2, 3, 4)}
    specs["RMFN (no HIGHLIGHT), K=3"] = ("rmfn", {**rmfn, "stages": 3, "highlight": False})
    specs["RMFN (no MFP)"] = ("rmfn", {**rmfn, "mfp": False})
    specs["early_fusion_lstm"] = ("early_fusion_lstm", {"hidden_dim": 3 * hidden})
    return specs


def make_batches(bundle, batch_size: int, n: int):
    samples = [bundle.train[i] for i in range(min(len(bundle.train), batch_size * n))]
    out = []
    for i in range(0, len(samples), batch_size):
        batch = collate_samples(samples[i : i + batch_size], list(bundle.modality_dims))
        out.append((batch.inputs, batch.labels))
    return out


def measure(name: str, options: dict, bundle, data, repeats: int) -> tuple[float, float, int]:
    torch.manual_seed(0)
    model = create_model(name, bundle.modality_dims, bundle.task, **options)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n_samples = sum(labels.shape[0] for _, labels in data)
    model.train()
    inputs, labels = data[0]  # warm-up
    torch.nn.functional.l1_loss(model(inputs).prediction, labels).backward()
    start = time.perf_counter()
    for _ in range(repeats):
        for inputs, labels in data:
            opt.zero_grad()
            torch.nn.functional.l1_loss(model(inputs).prediction, labels).backward()
            opt.step()
    train_rate = repeats * n_samples / (time.perf_counter() - start)
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        for inputs, _ in data:
            model(inputs)
    infer_rate = n_samples / (time.perf_counter() - start)
    return train_rate, infer_rate, model.num_parameters()


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
    args = parser.parse_args(argv)
    if args.quick:
        args.hidden, args.batches, args.repeats = 32, 4, 1
    torch.set_num_threads(args.threads)
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
        train_rate, infer_rate, params = measure(name, options, bundle, data, args.repeats)
        print(f"| {label} | {params:,} | {train_rate:.1f} | {infer_rate:.1f} |", flush=True)


if __name__ == "__main__":
    main()
