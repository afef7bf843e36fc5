"""Speed, memory and scaling of every registered model on this CPU, with the matmul reference measured in the same run.

Per model, at its registered default (paper) size, in a fresh subprocess (so peak RSS belongs to that model):
parameters; forward FLOPs per sample (``torch.utils.flop_counter`` plus formulas for the fused CPU LSTM and
SDPA kernels it does not count); training samples/s (forward + loss + backward + Adam, batch 32,
length-bucketed synthetic batches); inference samples/s (batch 32); batch-1 latency p50/p95; peak RSS
during training above the process baseline (``resource.getrusage``). Then the scaling curve of training
time and peak RSS with audio length 50 -> 1000 frames (lengths run in increasing order in one process, so the
running maximum RSS is the peak at that length), and the padding fraction of the length-bucketed sampler.
All single-threaded; each timing is repeated and the median reported (the 2 cores are shared).

    python benchmarks/speed.py --quick                  # a few minutes
    python benchmarks/speed.py --full --out bench_out/speed
    python benchmarks/speed.py --models mult,rmfn --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

# models that need an option to run at all, or another dataset
MODEL_OPTIONS = {"unimodal_lstm": {"modality": "text"}, "clstm_unimodal": {"modality": "text"}}
SCALING_LENGTHS = [50, 100, 200, 500, 1000]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------- FLOPs


def _flop_mapping():
    """FLOP formulas for kernels FlopCounterMode leaves at zero on CPU (forward only)."""
    aten = torch.ops.aten
    mapping = {}

    def rnn_layer(input_shape, w0, w1, *args, out_shape=None, **kwargs):
        steps = input_shape[0] * input_shape[1] if len(input_shape) == 3 else input_shape[0]
        return 2 * steps * (int(np.prod(w0)) + int(np.prod(w1)))

    def sdpa(q, k, v, *args, out_shape=None, **kwargs):
        b_h = int(np.prod(q[:-2]))
        return 2 * b_h * q[-2] * k[-2] * q[-1] + 2 * b_h * q[-2] * k[-2] * v[-1]

    if hasattr(aten, "mkldnn_rnn_layer"):
        mapping[aten.mkldnn_rnn_layer] = rnn_layer
    for name in ("_scaled_dot_product_flash_attention_for_cpu",):
        if hasattr(aten, name):
            mapping[getattr(aten, name)] = sdpa
    return mapping


def forward_flops(model, inputs) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_flop_mapping()) as counter:
        model(inputs)
    return int(counter.get_total_flops())


# ---------------------------------------------------------------- data


def dataset_for(model_name: str, options: dict):
    """(bundle, dataset name) the model can run on: unaligned synthetic, else aligned, else conversations."""
    from emofusion.data import load_dataset
    from emofusion.models import create_model

    errors = []
    for name in ("synthetic", "synthetic:aligned", "synthetic-conv", "synthetic-cls"):
        try:
            bundle = load_dataset(name, n_train=96, n_val=4, n_test=4, seed=0)
        except Exception as err:  # noqa: BLE001 - dataset not available in this checkout
            errors.append(f"{name}: {err}")
            continue
        try:
            model = create_model(model_name, bundle.modality_dims, bundle.task, **options)
            batch = make_batches(bundle.train, 4, 1)[0]
            model.eval()
            with torch.no_grad():
                model(batch.inputs)
            return name
        except Exception as err:  # noqa: BLE001
            errors.append(f"{name}: {type(err).__name__}: {err}")
    raise RuntimeError("no synthetic dataset fits: " + " | ".join(errors))


def clean(sample):
    sample.features = {
        m: np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0) for m, v in sample.features.items()
    }
    return sample


def make_batches(dataset, batch_size: int, n_batches: int, bucket: bool = True):
    from emofusion.data.collate import Collator, LengthBucketBatchSampler

    sampler = LengthBucketBatchSampler(dataset.lengths(), batch_size, shuffle=True, seed=0, bucket=bucket)
    collate = Collator(sequence_labels=False)
    out = []
    for idx in sampler:
        if len(idx) < batch_size and out:
            continue
        samples = [clean(dataset[i]) for i in idx]
        batch = collate(samples)
        out.append(batch)
        if len(out) >= n_batches:
            break
    return out


def task_loss(task, output, batch):
    pred = output.prediction
    labels = batch.labels
    mask = batch.label_mask
    if task.kind == "classification":
        if pred.dim() == 3:
            keep = mask if mask is not None else torch.ones(labels.shape, dtype=torch.bool)
            return torch.nn.functional.cross_entropy(pred[keep], labels[keep].long())
        return torch.nn.functional.cross_entropy(pred, labels.long().view(-1))
    if task.kind == "multilabel_binary":
        return torch.nn.functional.binary_cross_entropy_with_logits(pred, labels.float())
    loss = (pred - labels.float().view_as(pred)).abs() if pred.shape == labels.shape else pred.abs()
    if mask is not None and loss.dim() >= 2 and loss.shape[:2] == mask.shape:
        return loss[mask].mean()
    return loss.mean()


# ---------------------------------------------------------------- timing


def time_training(model, task, batches, repeats: int) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()

    def step(b):
        opt.zero_grad(set_to_none=True)
        out = model(b.inputs)
        loss = task_loss(task, out, b) + sum(out.aux_losses.values(), torch.zeros(()))
        loss.backward()
        opt.step()

    step(batches[0])  # warm-up
    return _rates(step, batches, repeats)


def time_inference(model, batches, repeats: int) -> list[float]:
    model.eval()
    with torch.no_grad():
        model(batches[0].inputs)  # warm-up
        return _rates(lambda b: model(b.inputs), batches, repeats)


def _rates(run, batches, repeats: int) -> list[float]:
    """Samples/s of ``run`` over all batches, once per repeat."""
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for b in batches:
            run(b)
        rates.append(sum(len(b) for b in batches) / (time.perf_counter() - t0))
    return rates


def latency_ms(model, dataset, n: int) -> list[float]:
    from emofusion.data.collate import collate_samples

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(n + 3):
            b = collate_samples([clean(dataset[i % len(dataset)])])
            t0 = time.perf_counter()
            model(b.inputs)
            if i >= 3:
                out.append((time.perf_counter() - t0) * 1000)
    return out


def synthetic_inputs(dims: dict[str, int], batch: int, lengths: dict[str, int], seed: int = 0):
    from emofusion.data.batch import ModalityTensor

    g = torch.Generator().manual_seed(seed)
    return {
        m: ModalityTensor(
            torch.randn(batch, lengths[m], d, generator=g), torch.ones(batch, lengths[m], dtype=torch.bool)
        )
        for m, d in dims.items()
    }


def worker(model_name: str, args) -> dict:
    """All measurements of one model (runs in its own process)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    from emofusion.data import load_dataset
    from emofusion.models import create_model

    options = MODEL_OPTIONS.get(model_name, {})
    ds_name = dataset_for(model_name, options)
    n_train = args.batch_size * args.batches + 8
    bundle = load_dataset(ds_name, n_train=n_train, n_val=4, n_test=max(args.latency_n, 8), seed=0)
    model = create_model(model_name, bundle.modality_dims, bundle.task, **options)
    batches = make_batches(bundle.train, args.batch_size, args.batches)
    rec = {
        "model": model_name,
        "options": options,
        "dataset": ds_name,
        "parameters": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
        "batch_size": args.batch_size,
        "batches": len(batches),
    }
    flops = forward_flops(model.eval(), batches[0].inputs)
    rec["flops_per_sample"] = flops / len(batches[0])
    base = rss_mb()
    rec["rss_baseline_mb"] = base
    rec["train_samples_per_s"] = time_training(model, bundle.task, batches, args.repeats)
    rec["peak_train_rss_mb"] = rss_mb() - base
    rec["infer_samples_per_s"] = time_inference(model, batches, args.repeats)
    rec["latency_ms"] = latency_ms(model, bundle.test, args.latency_n)
    return rec


def scaling_worker(model_name: str, args) -> dict:
    """The scaling curve in a fresh process, so the running peak RSS reflects only these steps."""
    torch.set_num_threads(1)
    from emofusion.data import load_dataset

    options = MODEL_OPTIONS.get(model_name, {})
    ds_name = dataset_for(model_name, options)
    if ds_name not in ("synthetic", "synthetic:aligned"):
        return {"model": model_name, "skipped": f"runs on {ds_name} (no audio-length axis)"}
    bundle = load_dataset(ds_name, n_train=8, n_val=2, n_test=2, seed=0)
    return {
        "model": model_name,
        "dataset": ds_name,
        "baseline_rss_mb": rss_mb(),
        "scaling": scaling(model_name, options, bundle, args),
    }


def scaling(model_name, options, bundle, args) -> list[dict]:
    """Training step time and running-max RSS vs audio length (text 20 steps, visual 60 steps, batch 8)."""
    from emofusion.data.batch import Batch
    from emofusion.models import create_model

    torch.manual_seed(0)
    model = create_model(model_name, bundle.modality_dims, bundle.task, **options)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    rows = []
    aligned = bundle.name.endswith("aligned")
    for length in SCALING_LENGTHS:
        lengths = {"text": 20, "audio": length, "visual": 60}
        if aligned:  # word-aligned models need equal lengths: scale everything
            lengths = dict.fromkeys(lengths, length)
        inputs = synthetic_inputs(bundle.modality_dims, args.scaling_batch, lengths)
        labels = torch.zeros(args.scaling_batch, bundle.task.output_dim)
        batch = Batch(inputs=inputs, labels=labels, ids=[str(i) for i in range(args.scaling_batch)])
        times = []
        try:
            for _ in range(2):
                t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                out = model(inputs)
                loss = task_loss(bundle.task, out, batch)
                loss.backward()
                opt.step()
                times.append(time.perf_counter() - t0)
        except Exception as err:  # noqa: BLE001 - e.g. a model with a maximum length
            rows.append({"audio_len": length, "error": f"{type(err).__name__}: {err}"})
            continue
        rows.append({"audio_len": length, "step_s": min(times), "rss_mb": rss_mb()})
    return rows


# ---------------------------------------------------------------- process-level helpers


def matmul_gflops(n: int = 1024, repeats: int = 5) -> list[float]:
    torch.set_num_threads(1)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        out.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return out


def padding_report(n_train: int, batch_size: int) -> dict:
    from emofusion.data import load_dataset
    from emofusion.data.collate import Collator, LengthBucketBatchSampler, padding_fraction

    bundle = load_dataset("synthetic", n_train=n_train, n_val=4, n_test=4, seed=0)
    lengths = bundle.train.lengths()
    out = {"n_train": n_train, "batch_size": batch_size}
    collate = Collator()
    for label, bucket in (("bucketed", True), ("random", False)):
        sampler = LengthBucketBatchSampler(lengths, batch_size, shuffle=True, seed=0, bucket=bucket)
        batches = [collate([bundle.train.raw(i) for i in idx]) for idx in sampler]
        out[label] = padding_fraction(batches)
        # compute-weighted variant: padded steps weighted by each modality's feature size
        total = real = 0
        for b in batches:
            for t in b.inputs.values():
                d = t.values.shape[-1]
                total += t.mask.numel() * d
                real += int(t.mask.sum()) * d
        out[label + "_feature_weighted"] = 1 - real / total
    return out


def med(xs) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def pct(xs, q) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def render(results: dict, out_dir: Path) -> str:
    ref = med(results["matmul_gflops"])
    lines = [
        "## Speed, memory and scaling",
        "",
        f"Command: `{results['command']}`. One thread (`OMP_NUM_THREADS=1`, `torch.set_num_threads(1)`), "
        f"batch {results['args']['batch_size']}, median of {results['args']['repeats']} repeats; the machine's "
        f"2 cores were shared with other jobs (load average at start {results['loadavg_start']}, end "
        f"{results['loadavg_end']}), so absolute numbers are noisy.",
        "",
        f"Matrix-multiply reference measured in this run: {ref:.1f} GFLOP/s (1024x1024 fp32 matmul, one thread; "
        f"runs {', '.join(f'{x:.1f}' for x in results['matmul_gflops'])}).",
        "",
        "| model | data | params | MFLOP/sample (fwd) | train samples/s | infer samples/s | latency p50 / p95 ms "
        "| peak train RSS MB | infer GFLOP/s (% of matmul) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["models"]:
        if "error" in r:
            lines.append(f"| {r['model']} | | | | | | | | error: {r['error'][:120]} |")
            continue
        inf = med(r["infer_samples_per_s"])
        achieved = r["flops_per_sample"] * inf / 1e9
        lines.append(
            f"| {r['model']} | {r['dataset']} | {r['parameters']:,} | {r['flops_per_sample'] / 1e6:.2f} | "
            f"{med(r['train_samples_per_s']):.1f} | {inf:.1f} | {pct(r['latency_ms'], 50):.2f} / "
            f"{pct(r['latency_ms'], 95):.2f} | {r['peak_train_rss_mb']:.0f} | {achieved:.2f} ({100 * achieved / ref:.1f}%) |"
        )
    pad = results.get("padding")
    if pad:
        lines += [
            "",
            f"Padding on the length-bucketed synthetic benchmark (n_train={pad['n_train']}, batch {pad['batch_size']}, "
            f"unaligned text/audio/visual): {100 * pad['bucketed']:.1f}% of modality steps are padding "
            f"({100 * pad['bucketed_feature_weighted']:.1f}% weighted by feature size) with bucketing, vs "
            f"{100 * pad['random']:.1f}% ({100 * pad['random_feature_weighted']:.1f}%) with random batches.",
        ]
    if any("scaling" in r for r in results["models"]):
        lines += [
            "",
            "![scaling](speed_scaling.png)",
            "",
            "Scaling: one training step (batch "
            f"{results['args']['scaling_batch']}, text 20 steps, visual 60 steps; word-aligned models get all "
            "modalities at the audio length) vs audio length, each model in a fresh process (lengths in increasing order); "
            "memory is that process's running peak RSS (including the ~0.5 GB of Python, torch and the data).",
        ]
        lines += [
            "",
            "| model | " + " | ".join(f"T_a={n}" for n in SCALING_LENGTHS) + " |",
            "|---" * (len(SCALING_LENGTHS) + 1) + "|",
        ]
        for r in results["models"]:
            if "scaling" not in r:
                continue
            cells = []
            for row in r["scaling"]:
                cells.append(
                    "error" if "error" in row else f"{row['step_s'] * 1000:.0f} ms / {row['rss_mb']:.0f} MB"
                )
            lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for r in results["models"]:
        rows = [x for x in r.get("scaling", []) if "error" not in x]
        if not rows:
            continue
        xs = [x["audio_len"] for x in rows]
        a1.plot(xs, [x["step_s"] * 1000 for x in rows], marker="o", label=r["model"])
        a2.plot(xs, [x["rss_mb"] for x in rows], marker="o", label=r["model"])
    a1.set(xlabel="audio frames", ylabel="training step (ms)", xscale="log", yscale="log", title="time")
    a2.set(xlabel="audio frames", ylabel="peak RSS (MB)", xscale="log", title="memory")
    a1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "speed_scaling.png", dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few batches and repeats (a few minutes)")
    p.add_argument("--full", action="store_true")
    p.add_argument("--models", default="", help="comma-separated models (default: every registered model)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--latency-n", type=int, default=None)
    p.add_argument("--scaling-batch", type=int, default=8)
    p.add_argument("--no-scaling", dest="scaling", action="store_false")
    p.add_argument("--out", default="bench_out/speed")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--scaling-worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--timeout", type=float, default=900, help="seconds per model")
    p.add_argument("--merge", action="store_true", help="update OUT/results.json: replace only these models")
    args = p.parse_args(argv)
    args.batches = args.batches or (3 if not args.full else 10)
    args.repeats = args.repeats or (3 if not args.full else 5)
    args.latency_n = args.latency_n or (20 if not args.full else 100)

    if args.worker or args.scaling_worker:
        name = args.worker or args.scaling_worker
        try:
            rec = worker(name, args) if args.worker else scaling_worker(name, args)
        except Exception as err:  # noqa: BLE001 - reported in the table
            rec = {"model": name, "error": f"{type(err).__name__}: {err}"}
        print("RESULT " + json.dumps(rec))
        return 0

    from emofusion.models import list_models

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [m for m in args.models.split(",") if m] or [
        m for m in list_models() if m not in ("mean", "random_baseline")
    ]
    results = {
        "command": "python benchmarks/speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "args": vars(args),
        "loadavg_start": os.getloadavg()[0],
        "matmul_gflops": matmul_gflops(),
        "models": [],
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    passthrough = [
        f"--batch-size={args.batch_size}",
        f"--batches={args.batches}",
        f"--repeats={args.repeats}",
        f"--latency-n={args.latency_n}",
        f"--scaling-batch={args.scaling_batch}",
    ]
    if not args.scaling:
        passthrough.append("--no-scaling")

    def call(flag, name):
        try:
            proc = subprocess.run(
                [sys.executable, __file__, flag, name, *passthrough],
                env=env,
                capture_output=True,
                text=True,
                timeout=args.timeout,
            )
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            return (
                json.loads(line[-1][7:])
                if line
                else {"model": name, "error": (proc.stderr or "no output")[-300:]}
            )
        except subprocess.TimeoutExpired:
            return {"model": name, "error": f"timed out after {args.timeout:.0f}s"}

    for name in names:
        t0 = time.perf_counter()
        rec = call("--worker", name)
        if args.scaling and "error" not in rec:
            sc = call("--scaling-worker", name)
            if "scaling" in sc:
                rec["scaling"] = sc["scaling"]
                rec["scaling_baseline_rss_mb"] = sc["baseline_rss_mb"]
        rec["wall_s"] = time.perf_counter() - t0
        results["models"].append(rec)
        msg = rec.get("error") or (
            f"train {med(rec['train_samples_per_s']):.1f}/s infer {med(rec['infer_samples_per_s']):.1f}/s "
            f"p50 {pct(rec['latency_ms'], 50):.2f} ms"
        )
        print(f"[speed] {name}: {msg} ({rec['wall_s']:.0f}s)", flush=True)
    results["matmul_gflops"] += matmul_gflops()
    previous = out / "results.json"
    if args.merge and previous.exists():
        old = json.loads(previous.read_text())
        fresh = {r["model"]: r for r in results["models"]}
        results["models"] = [fresh.pop(r["model"], r) for r in old["models"]] + list(fresh.values())
        results["command"] = old["command"] + " ; then " + results["command"]
        results["matmul_gflops"] = old["matmul_gflops"] + results["matmul_gflops"]
        results["loadavg_start"] = old["loadavg_start"]
    results["padding"] = padding_report(300 if not args.full else 1200, args.batch_size)
    results["loadavg_end"] = os.getloadavg()[0]
    (out / "results.json").write_text(json.dumps(results, indent=1))
    if any("scaling" in r for r in results["models"]):
        plot(results, out)
    (out / "results.md").write_text(render(results, out))
    print(render(results, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
