"""Training and inference speed (samples/s, CPU) of RRNN / GCA next to the early-fusion LSTM and late fusion.

All models use the same per-view encoder size (BiLSTM, ``--hidden`` units per direction) on the same
synthetic batches (unaligned text / audio / visual). Training = forward + backward + Adam step.

    python benchmarks/rrnn_speed.py --quick
    python benchmarks/rrnn_speed.py --hidden 128 --batches 20 --threads 2
    python benchmarks/rrnn_speed.py --frontend-accuracy --seeds 0,1,2 --epochs 10

``--frontend-accuracy`` trains the default ``rrnn`` on ``synthetic`` (the real training loop, ``train_run``) at
full rate and with the strided front-end (``--frontend``, default audio 5, visual 2), same seeds, alternating
the order per seed, and prints test MSE beside the trivial baselines of the same split (train mean, all zero)
and the wall time of each run with the load average.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from emofusion.data import load_dataset  # noqa: E402
from speed_common import GeneratedPage, make_batches, measure  # noqa: E402


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


def _load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def frontend_accuracy(args) -> None:
    import json
    import tempfile
    import time

    from emofusion.training.config import RunConfig
    from emofusion.training.run import train_run

    frontend = json.loads(args.frontend)
    variants = {"full rate (paper)": {}, f"frontend {frontend}": {"frontend": frontend}}
    print(
        f"rrnn on synthetic (default sizes), {args.epochs} epochs max (patience 5), seeds {args.seeds}, "
        f"{args.threads} thread(s); load at start {_load()}"
    )
    print("| seed | variant | test mse (mean over 6) | test mse_sum | epochs | wall s | load |\n|---|---|---:|---:|---:|---:|---|")
    rows = {v: [] for v in variants}
    baselines = []
    for i, seed in enumerate(int(s) for s in args.seeds.split(",")):
        order = list(variants) if i % 2 == 0 else list(variants)[::-1]
        for name in order:
            with tempfile.TemporaryDirectory() as tmp:
                cfg = RunConfig(
                    model="rrnn", dataset="synthetic", seed=seed, max_epochs=args.epochs,
                    model_options=variants[name], threads=args.threads, progress=False, plots=False,
                    output=tmp,
                )
                t0 = time.perf_counter()
                result = train_run(cfg)
                wall = time.perf_counter() - t0
                epochs = json.loads((result.run_dir / "metrics.json").read_text())["info"]["epochs_trained"]
            test = result.metrics["test"]
            rows[name].append((test["mse"], test["mse_sum"], wall))
            print(f"| {seed} | {name} | {test['mse']:.4f} | {test['mse_sum']:.4f} | {epochs} | {wall:.0f} | {_load()} |", flush=True)
        bundle = result.bundle
        train_y = np.stack([s.label for s in bundle.train])
        test_y = np.stack([s.label for s in bundle.test])
        mean_mse = ((test_y - train_y.mean(0)) ** 2).mean(0)
        zero_mse = (test_y**2).mean(0)
        baselines.append((mean_mse.mean(), mean_mse.sum(), zero_mse.mean(), zero_mse.sum()))
    b = np.mean(baselines, axis=0)
    print("\n| variant | test mse mean ± std | test mse_sum mean ± std | wall s median |\n|---|---:|---:|---:|")
    for name, r in rows.items():
        r = np.array(r)
        print(
            f"| {name} | {r[:, 0].mean():.4f} ± {r[:, 0].std(ddof=1) if len(r) > 1 else 0:.4f} | "
            f"{r[:, 1].mean():.4f} ± {r[:, 1].std(ddof=1) if len(r) > 1 else 0:.4f} | {np.median(r[:, 2]):.0f} |"
        )
    print(f"| trivial: train mean | {b[0]:.4f} | {b[1]:.4f} | |")
    print(f"| trivial: all zero | {b[2]:.4f} | {b[3]:.4f} | |")
    print(f"load at end {_load()}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small preset (hidden 32, 4 batches of 16)")
    p.add_argument("--hidden", type=int, default=64, help="encoder units per direction (paper: 128 or 512)")
    p.add_argument("--hops", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--frontend-accuracy", action="store_true", help="full-rate vs front-end rrnn, test MSE")
    p.add_argument("--frontend", default='{"audio": 5, "visual": 2}', help="JSON {modality: stride}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", default=None, help="also write the speed table as a generated page (docs/models/...)")
    args = p.parse_args(argv)
    if args.frontend_accuracy:
        torch.set_num_threads(args.threads)
        return frontend_accuracy(args)
    if args.quick:
        args.hidden, args.batch_size, args.batches, args.repeats = 32, 16, 4, 1
    torch.set_num_threads(args.threads)
    with GeneratedPage(args.out, "RRNN fusion variants: speed and parameters"):
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
