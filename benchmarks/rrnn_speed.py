"""Training and inference speed (samples/s, CPU) of RRNN / GCA next to the early-fusion LSTM and late fusion.

All models use the same per-view encoder size (BiLSTM, ``--hidden`` units per direction) on the same
synthetic batches (unaligned text / audio / visual). Training = forward + backward + Adam step.

    python benchmarks/rrnn_speed.py --quick
    python benchmarks/rrnn_speed.py --hidden 128 --batches 20 --threads 2
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from emofusion.data import load_dataset  # noqa: E402
from speed_common import make_batches, measure  # noqa: E402


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
    data = make_batches(bundle, args.batch_size, args.batches, clean=True)
    steps = {m: np.mean([x.length(m) for x in bundle.train]) for m in bundle.modality_dims}
    print(
        f"synthetic (unaligned), batch {args.batch_size}, mean steps "
        + ", ".join(f"{m} {s:.0f}" for m, s in steps.items())
        + f"; hidden {args.hidden}/direction; {args.threads} thread(s); torch {torch.__version__}"
    )
    print("| model | params | train samples/s | inference samples/s |\n|---|---:|---:|---:|")
    for label, (name, options) in model_specs(args.hidden, args.hops).items():
        train, infer, params = measure(
            name, options, bundle, data, args.repeats, loss=torch.nn.functional.mse_loss
        )
        print(f"| {label} | {params:,} | {train:.1f} | {infer:.1f} |", flush=True)


if __name__ == "__main__":
    main()
