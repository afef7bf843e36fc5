"""Time MMSA 2.2.1's EF_LSTM, LF_DNN, TFN, LMF, MFN and MulT next to emofusion's counterparts.

MMSA is an optional peer (``pip install emofusion[peers]``), installed in its own virtualenv so it can never
change the default environment. One run of this script drives two worker processes per measurement: one in
the MMSA venv (``--mmsa-python``), one in emofusion's (``--emofusion-python``). Both build their inputs from
``torch.manual_seed(0)`` with the same torch version, so the tensors are identical; both use one thread, the
same batch size, the same protocol (warm-up step, then N timed Adam training steps with an L1 loss, then N
timed inference passes), and the pairs are measured alternately and repeated, reporting medians (the 2 cores
are shared with other jobs). Peak memory is the worker's peak RSS (``ru_maxrss``) above its baseline after
model construction.

Inputs follow MMSA's own MOSEI configs (GloVe text 300-d, COVAREP 74-d, FACET 35-d; regression, 1 output):
EF_LSTM and MFN need word-aligned data (all 50 steps); LF_DNN, TFN and LMF take text as a 50-step sequence and
audio / visual as utterance-averaged vectors; MulT at the aligned 50/50/50 lengths and at MMSA's unaligned
MOSEI lengths (text 50, audio 500, visual 375). emofusion receives exactly the same tensors (all-True masks).

    python benchmarks/mmsa_compare.py --quick --mmsa-python /tmp/venv_mmsa/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

DIMS = {"text": 300, "audio": 74, "visual": 35}
MMSA_MOSEI = {
    "ef_lstm": {"hidden_dims": 256, "num_layers": 2, "dropout": 0.4},
    "lf_dnn": {"hidden_dims": [128, 32, 128], "text_out": 128, "post_fusion_dim": 128, "dropouts": [0.2] * 4},
    "tfn": {"hidden_dims": [128, 16, 128], "text_out": 128, "post_fusion_dim": 16, "dropouts": [0.4] * 4},
    "lmf": {"hidden_dims": [128, 16, 128], "dropouts": [0.2] * 4, "rank": 4},
    "mfn": {
        "hidden_dims": [128, 32, 128],
        "memsize": 128,
        "windowsize": 2,
        "NN1Config": {"drop": 0.2, "shapes": 128},
        "NN2Config": {"drop": 0.5, "shapes": 128},
        "gamma1Config": {"drop": 0.7, "shapes": 256},
        "gamma2Config": {"drop": 0.0, "shapes": 256},
        "outConfig": {"drop": 0.5, "shapes": 128},
    },
    "mult": {
        "attn_dropout_a": 0.0,
        "attn_dropout_v": 0.0,
        "relu_dropout": 0.0,
        "embed_dropout": 0.0,
        "res_dropout": 0.0,
        "dst_feature_dim_nheads": [30, 6],
        "nlevels": 4,
        "conv1d_kernel_size_l": 5,
        "conv1d_kernel_size_a": 1,
        "conv1d_kernel_size_v": 3,
        "text_dropout": 0.3,
        "attn_dropout": 0.4,
        "output_dropout": 0.5,
        "use_bert": False,
        "attn_mask": True,
    },
}
MMSA_CLASS = {
    "ef_lstm": "EF_LSTM",
    "lf_dnn": "LF_DNN",
    "tfn": "TFN",
    "lmf": "LMF",
    "mfn": "MFN",
    "mult": "MULT",
}
# emofusion counterparts, sized like MMSA's MOSEI config where the architectures correspond
EMOFUSION = {
    "ef_lstm": (
        "early_fusion_lstm",
        {"hidden_dim": 256, "num_layers": 2, "head_dim": 256, "dropout": 0.4},
        "same design (concatenate per step -> 2-layer LSTM 256 -> FC); MMSA adds BatchNorm over steps",
    ),
    "lf_dnn": (
        "lf_dnn",
        {
            "hidden_dims": {"text": 128, "audio": 32, "visual": 128},
            "text_out": 128,
            "post_fusion_dim": 128,
            "dropout": 0.2,
            "fusion_dropout": 0.2,
        },
        "same design and size (MMSA's MOSEI config: text LSTM 128 -> 128, audio/visual batch norm + MLPs "
        "32/128, post-fusion 2 x 128); emofusion bounds the output to the label range, MMSA leaves it unbounded",
    ),
    "tfn": (
        "tfn",
        {
            "hidden_dims": {"text": 128, "audio": 16, "visual": 128},
            "text_out": 128,
            "post_fusion_dim": 16,
            "dropout": 0.4,
            "fusion_dropout": 0.4,
            "batch_norm": True,
        },
        "same design and size (MMSA's MOSEI config: text LSTM 128 -> 128, audio/visual MLPs 16/128, "
        "fused 129x17x129, post-fusion 16); emofusion bounds the output by clamping, MMSA by a scaled sigmoid",
    ),
    "lmf": (
        "lmf",
        {
            "hidden_dims": {"text": 128, "audio": 16, "visual": 128},
            "rank": 4,
            "dropout": 0.2,
            "batch_norm": True,
        },
        "same design and size (MMSA's MOSEI config: rank 4, text LSTM 128 -> 64, audio/visual MLPs 16/128)",
    ),
    "mfn": (
        "mfn",
        {
            "hidden_dims": {"text": 128, "audio": 32, "visual": 128},
            "mem_dim": 128,
            "attn_dim": 128,
            "attn_dropout": 0.2,
            "proposal_dim": 128,
            "proposal_dropout": 0.5,
            "gamma1_dim": 256,
            "gamma1_dropout": 0.7,
            "gamma2_dim": 256,
            "gamma2_dropout": 0.0,
            "out_dim": 128,
            "out_dropout": 0.5,
        },
        "same design and size (MMSA's MOSEI config: LSTMs 128/32/128, memory 128, window 2); emofusion steps "
        "the three LSTMs together (one batched matmul a step) before the memory, runs the attention and the "
        "gates' input part for all steps at once, and loops only over the memory (hand-written backward)",
    ),
    "mult": (
        "mult",
        {
            "d_model": 30,
            "num_heads": 6,
            "cross_layers": 4,
            "self_layers": 4,
            "kernel_size": {"text": 5, "audio": 1, "visual": 3},
            # MMSA's attention dropout depends on the key/value source: attn_dropout (0.4) for text and the
            # self-attention transformers, attn_dropout_a / attn_dropout_v (0.0) for audio / visual
            "attn_dropout": {"text": 0.4, "audio": 0.0, "visual": 0.0, "self": 0.4},
            "relu_dropout": 0.0,
            "res_dropout": 0.0,
            "embed_dropout": 0.0,
            "out_dropout": 0.5,
        },
        "same design and size (MMSA's MOSEI config: d=30, 6 heads, 4 cross + 4 self layers, conv 5/1/3, "
        "attention dropout 0.4 where the keys are text and in the self-attention layers, 0 elsewhere)",
    ),
}
# variants: (base case, MMSA config changes, emofusion option changes, label)
VARIANTS = {
    "mult_p0": ("mult", {"attn_dropout": 0.0}, {"attn_dropout": 0.0}, "MULT, attention dropout 0 (both)"),
}
for _v, (_base, _mmsa, _ours, _label) in VARIANTS.items():
    MMSA_MOSEI[_v] = {**MMSA_MOSEI[_base], **_mmsa}
    MMSA_CLASS[_v] = _label
    EMOFUSION[_v] = (
        EMOFUSION[_base][0],
        {**EMOFUSION[_base][1], **_ours},
        f"as {MMSA_CLASS[_base]} without attention dropout on either side (emofusion's fused attention kernel)",
    )
SETTINGS = {
    "aligned50": {"text": 50, "audio": 50, "visual": 50},
    "averaged": {"text": 50, "audio": 1, "visual": 1},
    "unaligned_mosei": {"text": 50, "audio": 500, "visual": 375},
}
CASES = [
    ("ef_lstm", "aligned50"),
    ("lf_dnn", "averaged"),
    ("tfn", "averaged"),
    ("lmf", "averaged"),
    ("mfn", "aligned50"),
    ("mult", "aligned50"),
    ("mult", "unaligned_mosei"),
    ("mult_p0", "aligned50"),
    ("mult_p0", "unaligned_mosei"),
]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_inputs(setting: str, batch: int):
    import torch

    torch.manual_seed(0)
    lengths = SETTINGS[setting]
    x = {m: torch.randn(batch, lengths[m], DIMS[m]) for m in ("text", "audio", "visual")}
    y = torch.randn(batch, 1).clamp(-3, 3)
    return x, y


def build_mmsa(name: str, setting: str):
    from easydict import EasyDict
    from MMSA.models.singleTask import EF_LSTM, LF_DNN, LMF, MFN, MULT, TFN  # noqa: F401

    args = EasyDict(
        MMSA_MOSEI[name],
        feature_dims=[DIMS["text"], DIMS["audio"], DIMS["visual"]],
        # EF_LSTM's BatchNorm1d(seq_lens) wants one int (aligned data); the others read the list
        seq_lens=SETTINGS[setting]["text"]
        if name == "ef_lstm"
        else [SETTINGS[setting][m] for m in ("text", "audio", "visual")],
        train_mode="regression",
        num_classes=1,
    )
    model = {"ef_lstm": EF_LSTM, "lf_dnn": LF_DNN, "tfn": TFN, "lmf": LMF, "mfn": MFN, "mult": MULT}[
        VARIANTS[name][0] if name in VARIANTS else name
    ](args)

    def forward(x):
        return model(x["text"], x["audio"], x["visual"])["M"]

    return model, forward


def build_emofusion(name: str, setting: str):
    import torch

    from emofusion.data.batch import ModalityTensor
    from emofusion.models import create_model
    from emofusion.tasks import sentiment_task

    model_name, options, _ = EMOFUSION[name]
    model = create_model(model_name, dict(DIMS), sentiment_task(), **options)

    def forward(x):
        inputs = {m: ModalityTensor(v, torch.ones(v.shape[:2], dtype=torch.bool)) for m, v in x.items()}
        out = model(inputs)
        pred = out.prediction
        return pred + sum(out.aux_losses.values(), torch.zeros(())) * 0

    return model, forward


def make_optimizer(side: str, model):
    """Each library's own optimiser: MMSA's trainers build ``optim.Adam(...)``; emofusion's engine builds
    ``training.module.make_adam`` (torch's fused Adam). Same rule and learning rate on both sides."""
    import torch

    if side == "mmsa":
        return torch.optim.Adam(model.parameters(), lr=1e-4)
    from emofusion.training.module import make_adam

    return make_adam(model.parameters(), 1e-4)


def worker(side: str, name: str, setting: str, batch: int, steps: int) -> dict:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, forward = (build_mmsa if side == "mmsa" else build_emofusion)(name, setting)
    x, y = make_inputs(setting, batch)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = make_optimizer(side, model)
    base = rss_mb()
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = (forward(x).view(-1) - y.view(-1)).abs().mean()
        loss.backward()
        opt.step()

    step()  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    train = batch * steps / (time.perf_counter() - t0)
    train_cpu = batch * steps / (time.process_time() - c0)
    peak = rss_mb() - base
    model.eval()
    with torch.no_grad():
        forward(x)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            forward(x)
        infer = batch * steps / (time.perf_counter() - t0)
        infer_cpu = batch * steps / (time.process_time() - c0)
    return {
        "side": side,
        "name": name,
        "setting": setting,
        "params": params,
        "train": train,
        "infer": infer,
        "train_cpu": train_cpu,  # samples per CPU second: robust to other jobs sharing the cores
        "infer_cpu": infer_cpu,
        "peak_rss_mb": peak,
        "baseline_rss_mb": base,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


# glibc malloc settings: "default" (dynamic mmap threshold, freed memory returned) or "raised" (large blocks
# served from the heap and kept: MMSA's MulT allocates and frees GBs of attention tensors per step)
ALLOCATORS = {
    "default": {},
    "raised": {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 34)},
}


def allocator_label(name: str) -> str:
    env = ALLOCATORS[name]
    return "glibc default" if not env else "glibc " + ", ".join(f"{k}={v}" for k, v in env.items())


# epoch pairs: MMSA's fixed padding (the setting) vs emofusion's length-bucketed loader on the same samples
# a third entry "averaged" would feed emofusion's model the same utterance-averaged audio/visual MMSA's loader
# gives (no pair needs it since LF_DNN has its counterpart lf_dnn, which the engine averages once itself)
EPOCH_PAIRS = [
    ("ef_lstm", "aligned50"),
    ("lf_dnn", "averaged"),
    ("tfn", "averaged"),
    ("lmf", "averaged"),
    ("mfn", "aligned50"),
    ("mult", "unaligned_mosei"),
]


def epoch_worker(side: str, name: str, setting: str, batch: int, n_train: int, n_val: int,
                 ours_layout: str = "own") -> dict:
    """One whole epoch (data loading + training) plus a validation pass, on MOSEI-like variable lengths.

    Samples come from the synthetic generator (text 8-40 words, audio ~10 frames a word, visual ~3; word-aligned
    for the aligned settings). emofusion: its own loader (``LengthBucketBatchSampler`` + ``Collator``, padding to
    each batch's longest sample). MMSA: its layout, every sample padded (or cut) to the setting's fixed lengths
    (50 aligned; 50/500/375 unaligned; audio/visual averaged over time for LF_DNN/TFN/LMF, as MMSA's loader
    does), served by a DataLoader over per-sample tensors as MMSA's ``MMDataset`` does. ``ours_layout=
    "averaged"``: emofusion's loader also averages audio/visual over each sample's frames (MMSA's input).
    """
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Dataset

    torch.set_num_threads(1)
    torch.manual_seed(0)
    from emofusion.data import load_dataset

    aligned = setting == "aligned50"
    bundle = load_dataset("synthetic:aligned" if aligned else "synthetic", n_train=n_train, n_val=n_val,
                          n_test=1, seed=0)
    model, forward = (build_mmsa if side == "mmsa" else build_emofusion)(name, setting)
    opt = make_optimizer(side, model)

    def clean(x):
        return np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)

    splits = {"train": bundle.train, "val": bundle.val}
    if side == "mmsa":
        lengths = SETTINGS[setting]
        arrays = {}
        for split, ds in splits.items():
            out = {}
            for m in ("text", "audio", "visual"):
                rows = []
                for i in range(len(ds)):
                    x = clean(ds.raw(i).features[m])
                    if lengths[m] == 1:  # MMSA's loader averages audio/visual for these models
                        x = x.mean(0, keepdims=True)
                    x = x[: lengths[m]]
                    rows.append(np.pad(x, ((0, lengths[m] - len(x)), (0, 0))))
                out[m] = np.stack(rows)
            out["y"] = np.stack([np.asarray(ds.raw(i).label, dtype=np.float32)[:1] for i in range(len(ds))])
            arrays[split] = out

        class MMDatasetLike(Dataset):
            def __init__(self, a):
                self.a = a

            def __len__(self):
                return len(self.a["y"])

            def __getitem__(self, i):
                return {k: torch.Tensor(v[i]) for k, v in self.a.items()}

        def loader(split, shuffle):
            for b in DataLoader(MMDatasetLike(arrays[split]), batch_size=batch, shuffle=shuffle):
                yield {m: b[m] for m in ("text", "audio", "visual")}, b["y"]

        run = forward
    else:
        from dataclasses import replace as dc_replace

        from emofusion.data.batch import ModalityTensor
        from emofusion.data.collate import Collator, LengthBucketBatchSampler

        collate = Collator(sequence_labels=False)

        from emofusion.data.dataset import TimeAverage

        # what the engine averages once for this model (tfn/lmf: audio, visual; run._train_run)
        engine_average = TimeAverage(model.time_averaged_inputs())

        def prepare(smp):
            features = {m: clean(v) for m, v in smp.features.items()}
            if ours_layout == "averaged":  # MMSA's layout: one averaged audio/visual step per sample
                features.update({m: features[m].mean(0, keepdims=True)
                                 for m in ("audio", "visual") if len(features[m])})
            return engine_average(dc_replace(smp, features=features))

        # prepared once before the timing, as the training engine does (RunConfig.materialize: hygiene applied
        # once to in-memory train/val, inputs the model only averages averaged once) and as MMSA's arrays are
        prepared = {split: ds.with_transform(prepare).materialized() for split, ds in splits.items()}

        def loader(split, shuffle):
            ds = prepared[split]
            sampler = LengthBucketBatchSampler(ds.lengths(), batch, shuffle=shuffle, seed=0, bucket=True)
            for idx in sampler:
                b = collate([ds[i] for i in idx])
                yield b.inputs, b.labels[:, :1]

        def run(inputs):
            out = model({m: ModalityTensor(v, mask) for m, (v, mask) in inputs.items()})
            return out.prediction

    # warm-up step outside the timing (first-call allocations)
    inputs, y = next(iter(loader("train", False)))
    (run(inputs).view(-1) - y.view(-1)).abs().mean().backward()
    profiler = None
    if os.environ.get("EPOCH_PROFILE"):  # --profile: torch.profiler over the timed epoch, table to stderr
        from torch.profiler import ProfilerActivity, profile

        profiler = profile(activities=[ProfilerActivity.CPU], record_shapes=bool(os.environ.get("EPOCH_PROFILE_SHAPES")))
        profiler.__enter__()
    t0, c0 = time.perf_counter(), time.process_time()
    model.train()
    for inputs, y in loader("train", True):
        opt.zero_grad(set_to_none=True)
        loss = (run(inputs).view(-1) - y.view(-1)).abs().mean()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        for inputs, _y in loader("val", False):
            run(inputs)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if profiler is not None:
        profiler.__exit__(None, None, None)
        rows = int(os.environ["EPOCH_PROFILE"])
        averages = profiler.key_averages(group_by_input_shape=bool(os.environ.get("EPOCH_PROFILE_SHAPES")))
        print(averages.table(sort_by="self_cpu_time_total", row_limit=rows, max_shapes_column_width=60), file=sys.stderr)
    steps = {m: float(np.mean([bundle.train.raw(i).length(m) for i in range(len(bundle.train))]))
             for m in ("text", "audio", "visual")}
    return {"side": side, "name": name, "setting": setting, "n_train": n_train, "n_val": n_val,
            "epoch_wall_s": wall, "epoch_cpu_s": cpu, "mean_steps": steps, "peak_rss_mb": rss_mb()}


def run_worker(
    python: str, side: str, name: str, setting: str, batch: int, steps: int, timeout: float,
    allocator: str = "default", epoch: tuple | None = None,
) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **ALLOCATORS[allocator]}
    if side == "emofusion":
        env["PYTHONPATH"] = (
            str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + env.get("PYTHONPATH", "")
        )
    cmd = [
        python,
        __file__,
        "--worker",
        side,
        "--model",
        name,
        "--setting",
        setting,
        "--batch",
        str(batch),
        "--steps",
        str(steps),
    ]
    if epoch:
        cmd += ["--epoch-worker", ",".join(map(str, epoch))]
    if side == "mmsa" and "PYTHONPATH" not in env:  # the epoch worker reads emofusion's synthetic data
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s"}
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    return json.loads(lines[-1][7:]) if lines else {"error": (proc.stderr or "no output").strip()[-400:]}


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 steps, 3 repeats (MulT unaligned: 2 steps)")
    p.add_argument(
        "--from-logs", nargs="+", default=None, help="rebuild the table from the [mmsa] lines of logs"
    )
    p.add_argument("--mmsa-python", default=sys.executable, help="a Python with mmsa==2.2.1 (default: this one)")
    p.add_argument("--emofusion-python", default=sys.executable)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--cases", default="", help="comma-separated model names (default: all)")
    p.add_argument("--settings", default="", help="comma-separated input settings (default: all)")
    p.add_argument("--out", default="bench_out/mmsa")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--merge", action="store_true", help="update OUT/results.json: replace only these cases")
    p.add_argument("--worker", choices=["mmsa", "emofusion"], help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--setting", help=argparse.SUPPRESS)
    p.add_argument("--epoch-worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.from_logs:
        return from_logs(args)
    if args.worker:
        try:
            if args.epoch_worker:
                n_train, n_val, *layout = args.epoch_worker.split(",")
                rec = epoch_worker(args.worker, args.model, args.setting, args.batch, int(n_train), int(n_val),
                                   *layout)
            else:
                rec = worker(args.worker, args.model, args.setting, args.batch, args.steps or 3)
        except Exception as err:  # noqa: BLE001 - reported in the table
            rec = {"error": f"{type(err).__name__}: {err}"}
        print("RESULT " + json.dumps(rec))
        return 0

    steps = args.steps or (3 if args.quick else 10)
    repeats = args.repeats or (3 if args.quick else 5)
    wanted = [c for c in args.cases.split(",") if c]
    settings = [x for x in args.settings.split(",") if x]
    cases = [c for c in CASES if (not wanted or c[0] in wanted) and (not settings or c[1] in settings)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/mmsa_compare.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rows = []
    load0 = os.getloadavg()[0]
    for name, setting in cases:
        emo_name = EMOFUSION[name][0]
        n_steps = max(2, steps // 2) if setting == "unaligned_mosei" else steps
        runs = {"mmsa": [], "emofusion": []}
        for r in range(repeats):
            # alternate the order so both sides see the same contention on average
            order = ("mmsa", "emofusion") if r % 2 == 0 else ("emofusion", "mmsa")
            for side in order:
                if side == "emofusion" and emo_name is None:
                    continue
                python = args.mmsa_python if side == "mmsa" else args.emofusion_python
                rec = run_worker(python, side, name, setting, args.batch, n_steps, args.timeout)
                runs[side].append(rec)
                print(
                    f"[mmsa] {name} {setting} {side} #{r}: "
                    + (
                        rec.get("error")
                        or f"train {rec['train']:.1f}/s infer {rec['infer']:.1f}/s "
                        f"peak {rec['peak_rss_mb']:.0f} MB params {rec['params']}"
                    ),
                    flush=True,
                )
        row = {
            "case": name,
            "setting": setting,
            "emofusion_model": emo_name,
            "note": EMOFUSION[name][2],
            "steps": n_steps,
            "runs": runs,
        }
        for side in ("mmsa", "emofusion"):
            ok = [x for x in runs[side] if "error" not in x]
            row[side] = {
                "train": med([x["train"] for x in ok]),
                "infer": med([x["infer"] for x in ok]),
                "peak_rss_mb": med([x["peak_rss_mb"] for x in ok]),
                "params": ok[0]["params"] if ok else None,
                "errors": [x["error"] for x in runs[side] if "error" in x],
            }
        rows.append(row)
    previous = out / "results.json"
    if args.merge and previous.exists():
        old = json.loads(previous.read_text())
        fresh = {(r["case"], r["setting"]): r for r in rows}
        rows = [fresh.pop((r["case"], r["setting"]), r) for r in old["rows"]] + list(fresh.values())
        order = {c: i for i, c in enumerate(CASES)}
        rows.sort(key=lambda r: order.get((r["case"], r["setting"]), len(order)))
        command = old["command"] + " ; then " + command
        load0 = old["loadavg_start"]
    result = {
        "command": command,
        "batch": args.batch,
        "repeats": repeats,
        "steps": steps,
        "loadavg_start": load0,
        "loadavg_end": os.getloadavg()[0],
        "rows": rows,
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    md = render(result)
    (out / "results.md").write_text(md)
    print(md)
    return 0


LOG_LINE = re.compile(
    r"^\[mmsa\] (\w+) (\w+) (mmsa|emofusion) #\d+: train ([\d.]+)/s infer ([\d.]+)/s peak (-?[\d.]+) MB"
    r"(?: params (\d+))?"
)


def from_logs(args) -> int:
    """The table from the per-measurement lines printed by earlier (possibly interrupted) runs."""
    found: dict[tuple, dict[str, list]] = {}
    for log in args.from_logs:
        for line in Path(log).read_text().splitlines():
            m = LOG_LINE.match(line)
            if m:
                case, setting, side, train, infer, peak, params = m.groups()
                rec = {
                    "train": float(train),
                    "infer": float(infer),
                    "peak_rss_mb": float(peak),
                    "params": int(params) if params else None,
                }
                found.setdefault((case, setting), {"mmsa": [], "emofusion": []})[side].append(rec)
    rows = []
    for case, setting in CASES:
        runs = found.get((case, setting), {"mmsa": [], "emofusion": []})
        row = {
            "case": case,
            "setting": setting,
            "emofusion_model": EMOFUSION[case][0],
            "note": EMOFUSION[case][2],
        }
        for side in ("mmsa", "emofusion"):
            ok = runs[side]
            row[side] = {
                "train": med([x["train"] for x in ok]),
                "infer": med([x["infer"] for x in ok]),
                "peak_rss_mb": med([x["peak_rss_mb"] for x in ok]),
                "params": next((x["params"] for x in ok if x["params"]), None),
                "errors": [],
                "n": len(ok),
            }
        rows.append(row)
    result = {
        "command": "python benchmarks/mmsa_compare.py --from-logs "
        + " ".join(args.from_logs)
        + " (tables rebuilt from the per-measurement lines of the runs logged there)",
        "batch": args.batch,
        "repeats": "1-3",
        "steps": "2-3",
        "loadavg_start": os.getloadavg()[0],
        "loadavg_end": os.getloadavg()[0],
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    md = render(result)
    (out / "results.md").write_text(md)
    print(md)
    return 0


def _f(x, fmt="{:.1f}"):
    return "n/a" if x is None else fmt.format(x)


def render(result: dict) -> str:
    lines = [
        "## Side by side with MMSA",
        "",
        f"Command: `{result['command']}`. MMSA 2.2.1 (separate venv, same torch 2.13.0 CPU), one thread each, "
        f"batch {result['batch']}, identical random inputs, L1 loss + Adam; median of {result['repeats']} "
        f"alternating repeats of {result['steps']} timed steps (MulT unaligned: fewer). Load average "
        f"{result['loadavg_start']:.1f} at start, {result['loadavg_end']:.1f} at end (shared 2-core machine).",
        "",
        "| MMSA model | inputs (T_l/T_a/T_v) | emofusion | params MMSA / ours | train samples/s MMSA / ours (ratio) "
        "| infer samples/s MMSA / ours (ratio) | peak RSS MB MMSA / ours |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        a, b = r["mmsa"], r["emofusion"]
        lens = "/".join(str(SETTINGS[r["setting"]][m]) for m in ("text", "audio", "visual"))
        tr = (b["train"] / a["train"]) if a["train"] and b["train"] else None
        inf = (b["infer"] / a["infer"]) if a["infer"] and b["infer"] else None
        lines.append(
            f"| {MMSA_CLASS[r['case']]} | {lens} | {r['emofusion_model'] or '—'} | {_f(a['params'], '{:,}')} / "
            f"{_f(b['params'], '{:,}')} | {_f(a['train'])} / {_f(b['train'])} ({_f(tr, '{:.2f}x')}) | "
            f"{_f(a['infer'])} / {_f(b['infer'])} ({_f(inf, '{:.2f}x')}) | {_f(a['peak_rss_mb'], '{:.0f}')} / "
            f"{_f(b['peak_rss_mb'], '{:.0f}')} |"
        )
    lines += ["", "Notes on the pairs:", ""]
    seen = set()
    for r in result["rows"]:
        if r["case"] in seen:
            continue
        seen.add(r["case"])
        lines.append(f"- {MMSA_CLASS[r['case']]}: {r['note']}.")
        for side in ("mmsa", "emofusion"):
            for e in r[side]["errors"][:1]:
                lines.append(f"  - {side} error: {e[:200]}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
