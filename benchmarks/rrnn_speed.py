"""Training and inference speed (samples/s, CPU) of RRNN / GCA next to the early-fusion LSTM and late fusion.

All models use the same per-view encoder size (BiLSTM, ``--hidden`` units per direction) on the same
synthetic batches (unaligned text / audio / visual). Training = forward + backward + Adam step.

    python benchmarks/rrnn_speed.py --quick
    python benchmarks/rrnn_speed.py --hidden 128 --batches 20 --threads 2
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from emofusion.data import load_dataset  # noqa: E402
from emofusion.data.collate import collate_samples  # noqa: E402
from emofusion.models import create_model  # noqa: E402


def model_specs(hidden: int, hops: int) -> dict[str, tuple[str, dict]]:
    return {
        "early_fusion_lstm (encoders)": (
            "early_fusion_lstm",
            {
                "fuse": "encoders",
                "encoder_dim": hidden,
                "hidden_dim": hidden,
                "bidirectional": True,
                "head_dim": 2 * hidden,
                "reference": "audio",
            },
        ),
        "late_fusion": ("late_fusion", {"encoder_dim": hidden}),
        f"GCA (tau={hops})": ("gca", {"encoder_dim": hidden, "decoder_dim": 2 * hidden, "hops": hops}),
        f"GCA + gating (tau={hops})": (
            "rrnn",
            {"encoder_dim": hidden, "decoder_dim": 2 * hidden, "hops": hops},
        ),
    }


def batches(bundle, batch_size: int, n: int):
    samples = [bundle.train[i] for i in range(min(len(bundle.train), batch_size * n))]
    out = []
    for i in range(0, len(samples), batch_size):
        chunk = samples[i : i + batch_size]
        batch = collate_samples(chunk, list(bundle.modality_dims))
        inputs = {m: (torch.nan_to_num(v, 0.0, 0.0, 0.0), mask) for m, (v, mask) in batch.inputs.items()}
        out.append((inputs, batch.labels))
    return out


def measure(name, options, bundle, data, repeats: int) -> tuple[float, float, int]:
    torch.manual_seed(0)
    model = create_model(name, bundle.modality_dims, bundle.task, **options)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n_samples = sum(labels.shape[0] for _, labels in data)
    model.train()
    inputs, labels = data[0]  # warm-up
    torch.nn.functional.mse_loss(model(inputs).prediction, labels).backward()
    start = time.perf_counter()
    for _ in range(repeats):
        for inputs, labels in data:
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(inputs).prediction, labels)
            loss.backward()
            opt.step()
    train = repeats * n_samples / (time.perf_counter() - start)
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(repeats):
            for inputs, _ in data:
                model(inputs)
    infer = repeats * n_samples / (time.perf_counter() - start)
    return train, infer, model.num_parameters()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small preset (hidden 32, 4 batches of 16)")
    p.add_argument("--hidden", type=int, default=64, help="encoder units per direction (paper: 128 or 512)")
    p.add_argument("--hops", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.quick:
        args.hidden, args.batch_size, args.batches, args.repeats = 32, 16, 4, 1
    torch.set_num_threads(args.threads)
    bundle = load_dataset("synthetic", n_train=args.batch_size * args.batches, n_val=1, n_test=1, seed=0)
    data = batches(bundle, args.batch_size, args.batches)
    steps = {m: np.mean([x.length(m) for x in bundle.train]) for m in bundle.modality_dims}
    print(
        f"synthetic (unaligned), batch {args.batch_size}, mean steps "
        + ", ".join(f"{m} {s:.0f}" for m, s in steps.items())
        + f"; hidden {args.hidden}/direction; {args.threads} thread(s); torch {torch.__version__}"
    )
    print("| model | params | train samples/s | inference samples/s |\n|---|---:|---:|---:|")
    for label, (name, options) in model_specs(args.hidden, args.hops).items():
        train, infer, params = measure(name, options, bundle, data, args.repeats)
        print(f"| {label} | {params:,} | {train:.1f} | {infer:.1f} |", flush=True)


if __name__ == "__main__":
    main()
