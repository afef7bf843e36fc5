"""Noise sweep (visual by default) of paper 000's ablation on the models trained by the ``paper000-table3`` suite.

Table 3 uses one noise level; this script re-evaluates the suite's saved GCA and GCA + gating checkpoints
(no retraining) at several SNRs of additive white Gaussian noise on the visual features, and with the visual
track zeroed, and prints MSE (summed over emotions) and its relative increase over clean, mean ± std over
seeds. Run the suite first:

    emofusion benchmark paper000-table3 --preset quick --out bench_out     # or run_suite(...)
    python benchmarks/paper000_noise.py --out bench_out --snr 10 0 -5 -10
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROWS = {
    "gca": "GCA",
    "rrnn": "GCA + gating",
    "late_fusion": "late fusion",
    "early_fusion_lstm": "early fusion",
}


def perturbations(snrs: list[float], modality: str = "visual") -> dict[str, dict | None]:
    out: dict[str, dict | None] = {"clean": None}
    for snr in snrs:
        out[f"{snr:g} dB"] = {"kind": "gaussian_noise", "modality": modality, "snr_db": float(snr)}
    out[f"{modality} zeroed"] = {"kind": "missing_modality", "modality": modality, "mode": "zero"}
    return out


def main(argv=None):
    from emofusion.evaluation.robustness import make_perturbation
    from emofusion.training.run import bundle_for_module, evaluate_split, load_module

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench_out", help="the suite output folder (holds cache/ and runs/)")
    p.add_argument("--snr", type=float, nargs="+", default=[10.0, 0.0, -5.0, -10.0])
    p.add_argument("--models", nargs="+", default=["gca", "rrnn"])
    p.add_argument("--metric", default="mse_sum")
    p.add_argument("--modality", default="visual", help="the corrupted view (paper: visual)")
    p.add_argument(
        "--visual-noise",
        type=float,
        default=None,
        help="only runs trained with this synthetic noise.visual (default: any)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    perts = perturbations(args.snr, args.modality)
    results: dict[str, dict[str, list[float]]] = {}
    for path in sorted(Path(args.out, "cache").glob("*.json")):
        record = json.loads(path.read_text())
        config = record.get("config", {})
        if record.get("status") != "ok" or config.get("model") not in args.models:
            continue
        if config.get("model_options", {}).get("hops", 3) != 3 or config.get("loss") != "mse":
            continue  # only the Table 3 configuration
        visual_noise = config.get("dataset_options", {}).get("noise", {}).get("visual", 1.0)
        if args.visual_noise is not None and visual_noise != args.visual_noise:
            continue
        module = load_module(record["run_dir"])
        bundle, run = bundle_for_module(module)
        row = ROWS.get(config["model"], config["model"])
        for name, spec in perts.items():
            metrics = evaluate_split(module, bundle, "test", transform=make_perturbation(spec), config=run)
            results.setdefault(row, {}).setdefault(name, []).append(float(metrics[args.metric]))
        print(f"evaluated {row} seed {record['seed']}", flush=True)
    names = list(perts)
    print(
        f"\n{args.metric} on the test split (mean ± std over seeds); relative increase over clean in brackets\n"
    )
    print("| model | " + " | ".join(names) + " |\n|---" * 1 + "|---" * len(names) + "|")
    for row, by_name in results.items():
        clean = np.asarray(by_name["clean"])
        cells = []
        for name in names:
            v = np.asarray(by_name[name])
            rel = (v - clean) / clean * 100
            text = f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}"
            if name != "clean":
                text += f" ({rel.mean():+.1f}%)"
            cells.append(text)
        print(f"| {row} (n={len(clean)}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
