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
SCALING_LENGTHS = [125, 250, 500, 1000]  # audio frames; visual runs at 3/4 of it (MOSEI's 375 per 500)


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


def _train_step(model, task, opt, bf16: bool = False):
    def step(b):
        opt.zero_grad(set_to_none=True)
        # bf16-mixed as Lightning's precision="bf16-mixed" runs it on CPU: autocast forward, fp32 weights
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(b.inputs)
            loss = task_loss(task, out, b) + sum(out.aux_losses.values(), torch.zeros(()))
        loss.float().backward()
        opt.step()

    return step


def time_training(model, task, batches, repeats: int) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    step = _train_step(model, task, opt)
    step(batches[0])  # warm-up
    return _rates(step, batches, repeats)


def time_training_fp32_bf16(model, task, batches, repeats: int) -> dict[str, list[float]]:
    """Training samples per CPU second in fp32 and bf16-mixed, alternating the order over repeats."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    steps = {"fp32": _train_step(model, task, opt), "bf16": _train_step(model, task, opt, bf16=True)}
    for step in steps.values():
        try:
            step(batches[0])  # warm-up
        except Exception:  # noqa: BLE001 - reported by the timed calls
            pass
    out = {"fp32": [], "bf16": []}
    for r in range(repeats):
        for name in (("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32")):
            try:
                out[name] += _rates(steps[name], batches, 1, clock=time.thread_time)
            except Exception as err:  # noqa: BLE001 - an op without a bf16 CPU kernel: reported, fp32 kept
                out[name + "_error"] = f"{type(err).__name__}: {err}"[:160]
    return out


def time_inference(model, batches, repeats: int) -> list[float]:
    model.eval()
    with torch.no_grad():
        model(batches[0].inputs)  # warm-up
        return _rates(lambda b: model(b.inputs), batches, repeats)


def _rates(run, batches, repeats: int, clock=time.perf_counter) -> list[float]:
    """Samples/s of ``run`` over all batches, once per repeat (``clock=time.thread_time``: per CPU second)."""
    rates = []
    for _ in range(repeats):
        t0 = clock()
        for b in batches:
            run(b)
        rates.append(sum(len(b) for b in batches) / (clock() - t0))
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
    try:
        rec["train_cpu"] = time_training_fp32_bf16(model, bundle.task, batches, args.repeats)
    except Exception as err:  # noqa: BLE001 - a model whose ops have no bf16 CPU kernel
        rec["train_cpu_error"] = f"{type(err).__name__}: {err}"[:200]
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
    """Training step time and running-max RSS vs audio length (text 20 steps, visual 3/4 of audio, batch 8)."""
    from emofusion.data.batch import Batch
    from emofusion.models import create_model

    torch.manual_seed(0)
    model = create_model(model_name, bundle.modality_dims, bundle.task, **options)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    rows = []
    aligned = bundle.name.endswith("aligned")
    for length in SCALING_LENGTHS:
        lengths = {"text": 20, "audio": length, "visual": (3 * length) // 4}
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


def matmul_gflops(n: int = 1024, repeats: int = 5, clock=time.perf_counter) -> list[float]:
    torch.set_num_threads(1)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    out = []
    for _ in range(repeats):
        t0 = clock()
        a @ b
        out.append(2 * n**3 / (clock() - t0) / 1e9)
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


# ---------------------------------------------------------------- the one-command report (--report)

REPORT_MODELS = ["mult", "rrnn", "early_fusion_lstm", "tfn", "lmf", "mfn", "late_fusion", "rmfn"]
ACCURACY_MODELS = ["early_fusion_lstm", "tfn", "lmf", "mfn", "rrnn"]
QUICK_ACCURACY_MODELS = ["early_fusion_lstm", "lmf", "rrnn"]
MMMO = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mfn_h5" / "mmmo"


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def accuracy_worker(spec: str) -> dict:
    """``model,precision,seed,dataset``: one real training run (``train_run``), test metrics and the trivial
    baselines of the same split (train mean, all zero) in label space."""
    import tempfile

    from emofusion.training.config import RunConfig
    from emofusion.training.run import train_run

    model, precision, seed, dataset = spec.split(",", 3)
    quick = os.environ.get("SPEED_REPORT_QUICK") == "1"
    options = {"n_train": 240, "n_val": 60, "n_test": 80} if quick and dataset.startswith("synthetic") else {}
    modalities = ["audio", "visual"] if dataset.startswith("mfn:") else None
    with tempfile.TemporaryDirectory() as tmp:
        cfg = RunConfig(model=model, dataset=dataset, seed=int(seed), max_epochs=2 if quick else 10,
                        dataset_options=options, modalities=modalities, precision=precision, threads=1,
                        progress=False, plots=False, output=tmp)
        c0, t0 = time.process_time(), time.perf_counter()
        result = train_run(cfg)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    bundle = result.bundle
    train_y = np.stack([bundle.train.raw(i).label for i in range(len(bundle.train))]).astype(np.float64)
    test_y = np.stack([bundle.test.raw(i).label for i in range(len(bundle.test))]).astype(np.float64)
    return {
        "model": model, "precision": precision, "seed": int(seed), "dataset": dataset,
        "test_mse": result.metrics["test"].get("mse"), "test_mae": result.metrics["test"].get("mae"),
        "mean_mse": float(((test_y - train_y.mean(0)) ** 2).mean()), "zero_mse": float((test_y**2).mean()),
        # MAE's best constant is the training median
        "median_mae": float(np.abs(test_y - np.median(train_y, 0)).mean()), "zero_mae": float(np.abs(test_y).mean()),
        "cpu_s": cpu, "wall_s": wall,
    }


def report(args) -> int:
    """Everything issue 17 asks for in one run; prints the sections and writes OUT/report.md (+ json, png)."""
    import mmsa_compare as mc

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    quick = args.quick
    repeats = args.repeats
    started = time.perf_counter()
    res = {"command": "python benchmarks/speed.py " + " ".join(sys.argv[1:]), "load_start": loadavg(),
           "repeats": repeats, "quick": quick, "matmul_gflops": matmul_gflops(clock=time.thread_time)}
    py = sys.executable
    import threading

    lock = threading.Lock()
    res.update(epochs={"n_train": 0, "n_val": 0, "rows": []}, mult={}, models=[], accuracy=[], finished=False)

    def save():
        """Write what is measured so far (an interrupted report keeps its finished rows)."""
        with lock:
            res["load_end"], res["wall_s"] = loadavg(), time.perf_counter() - started
            (out / "report.json").write_text(json.dumps(res, indent=1))
            (out / "report.md").write_text(render_report(res))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "SPEED_REPORT_QUICK": "1" if quick else "0"}

    def sub(flag, value, extra=(), timeout=args.timeout):
        try:
            proc = subprocess.run([sys.executable, __file__, flag, value, *extra], env=env, capture_output=True,
                                  text=True, timeout=timeout)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            return json.loads(line[-1][7:]) if line else {"error": (proc.stderr or "no output")[-300:]}
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f}s"}

    from concurrent.futures import ThreadPoolExecutor

    def section_epochs():
        # 1. epoch time on realistic lengths: emofusion's bucketed loader vs MMSA's fixed padding
        n_train, n_val = (64, 32) if quick else (320, 96)
        if args.epoch_size:
            n_train, n_val = (int(x) for x in args.epoch_size.split(","))
        epochs = []
        pairs = [p for p in mc.EPOCH_PAIRS if not args.pairs or p[0] in args.pairs.split(",")]
        for name, setting, *layout in pairs:
            runs = {"mmsa": [], "emofusion": []}
            ours = layout[0] if layout else "own"
            for r in range(repeats):
                for side in (("mmsa", "emofusion") if r % 2 == 0 else ("emofusion", "mmsa")):
                    # MMSA's side always reads its own layout; ``ours`` is emofusion's input layout
                    runs[side].append(mc.run_worker(py, side, name, setting, 32, 1, args.timeout, "default",
                                                    epoch=(n_train, n_val, ours if side == "emofusion" else "own")))
            row = {"case": name, "setting": setting, "emofusion_model": mc.EMOFUSION[name][0], "runs": runs,
                   "ours_layout": ours}
            for side in runs:
                ok = [x for x in runs[side] if "epoch_cpu_s" in x]
                row[side] = {"cpu": med([x["epoch_cpu_s"] for x in ok]), "wall": med([x["epoch_wall_s"] for x in ok]),
                             "errors": [x["error"] for x in runs[side] if "error" in x]}
            epochs.append(row)
            res["epochs"] = {"n_train": n_train, "n_val": n_val, "rows": epochs}
            save()
            print(f"[report] epoch {name}: MMSA {row['mmsa']['cpu']:.1f} CPU s, emofusion {row['emofusion']['cpu']:.1f} "
                  f"CPU s (load {loadavg()})", flush=True)
        res["epochs"] = {"n_train": n_train, "n_val": n_val, "rows": epochs}

    def section_mult():
        res["mult_train_flops"] = sub("--flops-worker", "mult:unaligned_mosei").get("train_flops_per_sample")
        # 2. MulT at 50/500/375 under both allocator settings
        mult = {}
        steps = 1 if quick else 4
        for alloc in mc.ALLOCATORS if args.mult_report else []:
            runs = {"mmsa": [], "emofusion": []}
            for r in range(repeats):
                for side in (("mmsa", "emofusion") if r % 2 == 0 else ("emofusion", "mmsa")):
                    runs[side].append(mc.run_worker(py, side, "mult", "unaligned_mosei", 32, steps, args.timeout, alloc))
            row = {"allocator": mc.allocator_label(alloc), "steps": steps, "runs": runs}
            for side in runs:
                ok = [x for x in runs[side] if "train" in x]
                row[side] = {k: med([x[k] for x in ok]) for k in ("train", "infer", "train_cpu", "infer_cpu", "peak_rss_mb")}
            mult[alloc] = row
            res["mult"] = mult
            save()
            print(f"[report] MulT 50/500/375 {alloc}: MMSA {row['mmsa']['train_cpu']:.2f}, emofusion "
                  f"{row['emofusion']['train_cpu']:.2f} train samples/CPU-s (load {loadavg()})", flush=True)
        res["mult"] = mult

    def section_models():
        # 3. per model: training fraction of the matmul rate, bf16 vs fp32 throughput, scaling
        models = []
        for name in args.models.split(",") if args.models else REPORT_MODELS:
            rec = sub("--worker", name, [f"--batches={args.batches}", f"--repeats={repeats}", "--latency-n=5"])
            rec.setdefault("model", name)
            if args.scaling and "error" not in rec:
                sc = sub("--scaling-worker", name, ["--scaling-batch=8"])
                if "scaling" in sc:
                    rec["scaling"] = sc["scaling"]
            models.append(rec)
            res["models"] = models
            save()
            print(f"[report] model {name}: {rec.get('error') or 'ok'} (load {loadavg()})", flush=True)
        res["models"] = models

    def section_accuracy():
        # 4. bf16-mixed vs fp32 accuracy (real training runs; synthetic, ICT-MMMO audio+visual when present)
        acc = []
        datasets = ["synthetic"] + ([f"mfn:{MMMO.resolve()}"] if MMMO.exists() else [])
        seeds = [0] if quick else [0, 1, 2]
        specs = []
        for dataset in datasets if args.accuracy else []:
            mmmo_models = ["early_fusion_lstm"] if quick else ["early_fusion_lstm", "tfn", "lmf", "mfn"]
            syn_models = QUICK_ACCURACY_MODELS if quick else ACCURACY_MODELS
            for name in syn_models if dataset == "synthetic" else mmmo_models:
                for seed in seeds:
                    # fp32 and bf16 of one (model, seed) run side by side, so they see the same contention
                    specs.append([(name, precision, seed, dataset) for precision in ("32-true", "bf16-mixed")])

        def one_pair(pair):
            out = []
            with ThreadPoolExecutor(max_workers=2) as inner:
                futures = [inner.submit(sub, "--accuracy-worker", ",".join(map(str, spec))) for spec in pair]
                for spec, f in zip(pair, futures):
                    rec = f.result()
                    rec.update(model=spec[0], precision=spec[1], seed=spec[2], dataset=spec[3])
                    out.append(rec)
            print(f"[report] accuracy {pair[0][0]} seed {pair[0][2]} on {pair[0][3].split('/')[-1]} "
                  f"(load {loadavg()})", flush=True)
            return out

        for pair in specs:
            acc.extend(one_pair(pair))
            res["accuracy"] = acc
            save()
        res["accuracy"] = acc
    # the sections are independent: with --jobs > 1 they run concurrently (each keeps its own A/B alternation;
    # CPU-time ratios are unaffected by how many processes share the cores)

    sections = [section_mult, section_epochs, section_models, section_accuracy]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for f in [pool.submit(fn) for fn in sections]:
            f.result()
    res["matmul_gflops"] += matmul_gflops(clock=time.thread_time)
    res["finished"] = True
    res["load_end"] = loadavg()
    res["wall_s"] = time.perf_counter() - started
    (out / "report.json").write_text(json.dumps(res, indent=1))
    if args.scaling:
        plot({"models": res["models"]}, out)
    md = render_report(res)
    (out / "report.md").write_text(md)
    print(md)
    if args.docs:
        write_docs(md, out, Path(args.docs))
    return 0


DOCS_START, DOCS_END = "<!-- speed-report:start (benchmarks/speed.py --report --docs) -->", "<!-- speed-report:end -->"


def write_docs(md: str, out: Path, docs: Path) -> None:
    """Replace the generated section of ``docs`` (between the markers, appended if absent) with ``md``."""
    import shutil

    text = docs.read_text()
    # one heading level down: the section sits inside the page's "Side by side with MMSA" section
    md = "\n".join("#" + line if line.startswith("#") else line for line in md.split("\n"))
    block = f"{DOCS_START}\n{md}{DOCS_END}"
    if DOCS_START in text and DOCS_END in text:
        head, rest = text.split(DOCS_START, 1)
        text = head + block + rest.split(DOCS_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    docs.write_text(text)
    if (out / "speed_scaling.png").exists():
        shutil.copy(out / "speed_scaling.png", docs.parent / "speed_scaling.png")


def flops_worker(spec: str) -> dict:
    """Training FLOPs per sample (3x the counted forward) of emofusion's MulT at MMSA's sizes."""
    import mmsa_compare as mc

    torch.set_num_threads(1)
    name, setting = spec.split(":")
    model, forward = mc.build_emofusion(name, setting)
    x, _ = mc.make_inputs(setting, 1)
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with FlopCounterMode(display=False, custom_mapping=_flop_mapping()) as counter, torch.no_grad():
        forward(x)
    return {"train_flops_per_sample": 3 * counter.get_total_flops()}


def _lf_dnn_sentence(res: dict) -> str:
    """Reports made before emofusion had ``lf_dnn`` paired MMSA's LF_DNN with ``late_fusion``, another design."""
    paired = {r["emofusion_model"] for r in res["epochs"]["rows"] if r["case"] == "lf_dnn"}
    if paired == {"lf_dnn"}:
        return ("LF_DNN is paired with emofusion's `lf_dnn`, the same design and size (models/lf_dnn.py).")
    return ("This report predates emofusion's `lf_dnn`: LF_DNN was paired with `late_fusion` (MMSA: MLPs on "
            "averaged audio/visual + a text LSTM + a fusion MLP; emofusion's `late_fusion`: paper 000's per-view "
            "BiLSTMs and per-view heads): the first LF_DNN row times that other design on its own full-rate "
            "inputs, the second on MMSA's inputs; neither is an implementation comparison.")


def _ratio(a, b) -> str:
    return f"{a / b:.2f}x" if a and b and a == a and b == b else "n/a"


def render_report(res: dict) -> str:
    mm = med(res["matmul_gflops"])
    lines = [
        "## Speed report (issue 17)",
        "",
        f"Command: `{res['command']}` ({'quick' if res['quick'] else 'full'} size, {res['repeats']} repeats per "
        f"figure, sides alternating; {res['wall_s'] / 60:.0f} min wall). One thread per process. Load average "
        f"(1/5/15 min) at start {res['load_start']}, at end {res['load_end']} on 2 cores shared with other jobs"
        + ("" if res.get("finished", True) else " (**interrupted**: only the rows below were measured)") + ": "
        "wall-clock figures are depressed by the contention, so ratios are given on **CPU time** (process CPU "
        "seconds, which other jobs do not inflate except through shared caches), with wall time beside them. "
        f"Matmul reference: {mm:.1f} GFLOP/s per CPU second (1024x1024 fp32 `torch.mm`, one thread; runs "
        f"{', '.join(f'{x:.0f}' for x in res['matmul_gflops'])}; CPU-time based rates below are compared to it).",
        "",
        f"### Epoch time on MOSEI-like lengths ({res['epochs']['n_train']} training + {res['epochs']['n_val']} "
        "validation samples, glibc default allocator)",
        "",
        "Samples from the synthetic generator (text 8-40 words, audio ~10 frames a word, visual ~3). emofusion: "
        "its length-bucketed loader (each batch padded to its longest sample) over samples prepared once before "
        "the timing, as its training engine prepares them (non-finite values cleaned; the audio/visual inputs "
        "that tfn and lmf only average, averaged once: `RunConfig.materialize`, `FusionModel."
        "time_averaged_inputs`), and the engine's optimiser (`make_adam`, fused Adam). MMSA 2.2.1: every sample "
        "padded to fixed lengths (50 aligned; 50/500/375 unaligned; audio/visual averaged for LF_DNN/TFN/LMF as "
        "its loader does), also prepared before the timing (MMSA reads prepared arrays from its pickle), and its "
        "trainers' `optim.Adam`. Whole epoch: data loading + training, then one validation pass, the same loop on both sides "
        "(`mmsa_compare.epoch_worker`, not the training engine, so both validate exactly once an epoch; the "
        "engine's step-based recipe validates on its own schedule). Batch 32, same model sizes "
        "(benchmarks/mmsa_compare.py's pairs). Emofusion's model reads its own per-modality sequences except where "
        "the row says otherwise. " + _lf_dnn_sentence(res) + " Epoch figures at the quick size are a few "
        "batches: noisy.",
        "",
        "| MMSA model | layout (MMSA) | emofusion | epoch CPU s MMSA / ours | ratio (CPU) | epoch wall s MMSA / ours | ratio (wall) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["epochs"]["rows"]:
        a, b = r["mmsa"], r["emofusion"]
        err = "; ".join(a["errors"] + b["errors"])[:150]
        lines.append(
            f"| {r['case'].upper()} | {r['setting']} | {r['emofusion_model']}"
            + (" (reads MMSA's averaged audio/visual)" if r.get("ours_layout", "own") == "averaged" else "")
            + f" | {a['cpu']:.2f} / {b['cpu']:.2f} | "
            f"**{_ratio(a['cpu'], b['cpu'])}** | {a['wall']:.1f} / {b['wall']:.1f} | {_ratio(a['wall'], b['wall'])} |"
            + (f" error: {err}" if err else "")
        )
    flops = res.get("mult_train_flops")
    lines += [
        "",
        "### MulT at MMSA's unaligned MOSEI lengths (50/500/375, batch 32)",
        "",
        f"Training FLOPs per sample (3x the counted forward): {flops / 1e9:.2f} GFLOP." if flops else "",
        "",
        "| allocator (both sides) | train samples/CPU-s MMSA / ours | ratio | train samples/s wall MMSA / ours | ratio "
        "| infer /CPU-s MMSA / ours | ratio | ours: % of matmul rate | peak RSS MB MMSA / ours |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in res.get("mult", {}).values():
        a, b = row["mmsa"], row["emofusion"]
        frac = f"{100 * b['train_cpu'] * flops / 1e9 / mm:.1f}% (MMSA {100 * a['train_cpu'] * flops / 1e9 / mm:.1f}%)" if flops else "n/a"
        lines.append(
            f"| {row['allocator']} | {a['train_cpu']:.2f} / {b['train_cpu']:.2f} | **{_ratio(b['train_cpu'], a['train_cpu'])}** | "
            f"{a['train']:.2f} / {b['train']:.2f} | {_ratio(b['train'], a['train'])} | {a['infer_cpu']:.2f} / "
            f"{b['infer_cpu']:.2f} | {_ratio(b['infer_cpu'], a['infer_cpu'])} | {frac} | {a['peak_rss_mb']:.0f} / {b['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        "### Per model: fraction of the matmul rate, bf16-mixed vs fp32 training throughput",
        "",
        "Default (paper) sizes on length-bucketed synthetic batches (batch 32). Training FLOPs = 3x the counted "
        "forward. bf16 = `torch.autocast('cpu', torch.bfloat16)` around forward and loss, fp32 weights "
        "(what Lightning's `precision='bf16-mixed'` does); fp32 and bf16 repeats alternate in one process.",
        "",
        "| model | params | train samples/CPU-s fp32 | bf16-mixed | bf16 / fp32 | fp32 train GFLOP/s (% of matmul) |",
        "|---|---|---|---|---|---|",
    ]
    for r in res["models"]:
        if "error" in r or "train_cpu" not in r:
            lines.append(f"| {r['model']} | | | | | {(r.get('error') or r.get('train_cpu_error', ''))[:120]} |")
            continue
        f32, b16 = med(r["train_cpu"]["fp32"]), med(r["train_cpu"]["bf16"])
        g = 3 * r["flops_per_sample"] * f32 / 1e9
        b16_cell = f"{b16:.1f}" if r["train_cpu"]["bf16"] else "error: " + r["train_cpu"].get("bf16_error", "")[:90]
        lines.append(f"| {r['model']} | {r['parameters']:,} | {f32:.1f} | {b16_cell} | {_ratio(b16, f32)} | "
                     f"{g:.1f} ({100 * g / mm:.1f}%) |")
    lines += [
        "",
        "### bf16-mixed vs fp32 accuracy (real training runs, `train_run`, same seeds)",
        "",
        "The metric is the run's test MSE where its task reports one (synthetic: 6 emotion intensities), else its "
        "test MAE (ICT-MMMO sentiment), beside the constant predictors of the same split for that metric (train "
        "mean for MSE, train median for MAE, and all-zero). `mfn` runs in fp32 under bf16-mixed (its hand-written "
        "recurrences have no bf16 path); `SequenceEncoder`'s LSTMs too.",
        "",
        "| dataset | model | seeds | metric | test fp32 | test bf16-mixed | train mean/median | all-zero | CPU s fp32 / bf16 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    groups = {}
    flags: list[bool] = []
    for a in res["accuracy"]:
        groups.setdefault((a["dataset"], a["model"]), []).append(a)
    for (dataset, model), rows in groups.items():
        key_metric = "test_mse" if any(x.get("test_mse") is not None for x in rows) else "test_mae"

        def col(prec, key, rows=rows):
            xs = [x[key] for x in rows if x["precision"] == prec and key in x and x[key] is not None]
            if not xs:
                return "error"
            return f"{np.mean(xs):.4f}" + (f" ± {np.std(xs, ddof=1):.4f}" if len(xs) > 1 else "")
        errs = [x["error"][:80] for x in rows if "error" in x]
        base = [x for x in rows if "mean_mse" in x]
        mse = key_metric == "test_mse"
        best_constant = (min(base[0]["mean_mse" if mse else "median_mae"], base[0]["zero_mse" if mse else "zero_mae"])
                         if base and "median_mae" in base[0] else None)

        def flagged(prec, rows=rows, key_metric=key_metric, best_constant=best_constant, col=col):
            xs = [x[key_metric] for x in rows if x["precision"] == prec and x.get(key_metric) is not None]
            loses = bool(xs) and best_constant is not None and np.mean(xs) >= best_constant
            flags.append(loses)
            return col(prec, key_metric) + (" †" if loses else "")

        lines.append(
            f"| {dataset.split('/')[-1]} | {model} | {len({x['seed'] for x in rows})} | {'MSE' if mse else 'MAE'} | "
            f"{flagged('32-true')} | {flagged('bf16-mixed')} | "
            f"{base[0]['mean_mse' if mse else 'median_mae']:.4f} | {base[0]['zero_mse' if mse else 'zero_mae']:.4f} | "
            f"{col('32-true', 'cpu_s')[:6]} / {col('bf16-mixed', 'cpu_s')[:6]} |" if base and "median_mae" in base[0] else
            f"| {dataset.split('/')[-1]} | {model} | | | error: {'; '.join(errs)} | | | | |"
        )
    if any(flags):
        lines += ["", "† not better than the best constant of the same split. These runs have the training engine's "
                  f"budget capped at {'2' if res.get('quick') else '10'} epochs, the same for both precisions: they "
                  "measure what bf16 changes at equal budget, not what the model reaches (docs/results.md does)."]
    if any("scaling" in r for r in res["models"]):
        lines += ["", "### Scaling with audio/visual length (visual = 3/4 of audio, text 20, batch 8)", "",
                  "![scaling](speed_scaling.png)", "",
                  "| model | " + " | ".join(f"T_a={n}" for n in SCALING_LENGTHS) + " |",
                  "|---" * (len(SCALING_LENGTHS) + 1) + "|"]
        for r in res["models"]:
            if "scaling" in r:
                cells = ["error" if "error" in x else f"{x['step_s'] * 1000:.0f} ms / {x['rss_mb']:.0f} MB"
                         for x in r["scaling"]]
                lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
        lines += ["", "Step time is wall clock (min of 2 steps) and memory the process's running peak RSS."]
    return "\n".join(lines) + "\n"


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
    p.add_argument("--report", action="store_true",
                   help="issue 17's report: epoch ratios vs MMSA, MulT under both allocators, matmul fraction, "
                   "bf16 vs fp32, scaling plot (OUT/report.md)")
    p.add_argument("--jobs", type=int, default=1, help="--report: sections run concurrently")
    p.add_argument("--docs", default=None, help="--report: also write the report into this markdown file")
    p.add_argument("--render", default=None, metavar="OUT",
                   help="only re-render OUT/report.json (a finished --report run) into OUT/report.md and --docs")
    p.add_argument("--pairs", default="", help="--report: only these MMSA epoch pairs (e.g. tfn,mult)")
    p.add_argument("--epoch-size", default="", help="--report: N_TRAIN,N_VAL samples of the epoch section "
                   "(default 64,32 with --quick, else 320,96)")
    p.add_argument("--no-mult", dest="mult_report", action="store_false", help="--report: skip the MulT rows")
    p.add_argument("--no-accuracy", dest="accuracy", action="store_false", help="--report: skip bf16 accuracy")
    p.add_argument("--accuracy-worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--flops-worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.accuracy_worker or args.flops_worker:
        try:
            rec = accuracy_worker(args.accuracy_worker) if args.accuracy_worker else flops_worker(args.flops_worker)
        except Exception as err:  # noqa: BLE001 - reported in the table
            rec = {"error": f"{type(err).__name__}: {err}"}
        print("RESULT " + json.dumps(rec))
        return 0
    if args.render:  # the figures stay as measured; only the text around them is regenerated
        out = Path(args.render)
        md = render_report(json.loads((out / "report.json").read_text()))
        (out / "report.md").write_text(md)
        if args.docs:
            write_docs(md, out, Path(args.docs))
        print(md)
        return 0
    args.batches = args.batches or (3 if not args.full else 10)
    args.repeats = args.repeats or (3 if not args.full else 5)
    args.latency_n = args.latency_n or (20 if not args.full else 100)
    if args.report and not (args.worker or args.scaling_worker):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        if args.quick and "--repeats" not in " ".join(sys.argv):
            args.repeats = 2
        return report(args)

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
