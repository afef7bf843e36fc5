"""Accuracy of MMSA 2.2.1's models next to emofusion's counterparts, trained on identical data by one loop.

This compares the models as implemented by each library, not MMSA's trainer: both sides are trained by the
same simple loop written once below (Adam, lr 1e-3, L1 loss, batch 32, a fixed number of epochs, the epoch with
the lowest validation MAE is kept and evaluated on test), on the same arrays, with the same seeds and batch
order. The models, their sizes (MMSA's MOSEI config) and the worker-per-venv mechanism come from
``benchmarks/mmsa_compare.py``.

Data: ``synthetic:aligned`` with ``target="sentiment"`` (word-aligned), emofusion's hygiene fitted on train
(``training.run.prepare_data``), padded at the end / truncated to 50 words (MMSA's own MOSEI/MOSI arrays are
padded at the end) and written once to an ``.npz`` that both venvs read. LF_DNN / TFN / LMF receive audio and
visual as their average over the real words ([N, 1, D], as MMSA's ``need_normalized`` loader does, except that
MMSA's loader also averages the padding rows); EF_LSTM and MFN the aligned 50-step sequences. emofusion's
models also get the padding masks (they are padding-invariant); MMSA's models get the same arrays without
masks, as they read their own data. Metrics for both sides: ``emofusion.evaluation.metrics.compute_metrics``
(sentiment task) on the saved test predictions, computed in this process.

    python benchmarks/mmsa_accuracy.py --quick --mmsa-python /tmp/venv_mmsa/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mmsa_compare import DIMS, EMOFUSION, MMSA_CLASS, build_emofusion, build_mmsa  # noqa: E402

MODS = ("text", "audio", "visual")
SETTING = {
    "ef_lstm": "aligned50",
    "lf_dnn": "averaged",
    "tfn": "averaged",
    "lmf": "averaged",
    "mfn": "aligned50",
}
SETTING["mult"] = "aligned50"
ORDER = ["tfn", "lmf", "ef_lstm", "lf_dnn", "mfn", "mult"]
# diagnostic pairs (not in the default run): MMSA's side is its base model unchanged
BASE = {"ef_lstm_last": "ef_lstm"}
EMOFUSION["ef_lstm_last"] = (
    "early_fusion_lstm",
    {**EMOFUSION["ef_lstm"][1], "pooling": "last"},
    "as EF_LSTM, with emofusion's early_fusion_lstm summarising by the last valid LSTM state (pooling='last', "
    "as MMSA's EF_LSTM) instead of its default masked max over steps",
)
MMSA_CLASS["ef_lstm_last"] = "EF_LSTM (ours: pooling last)"
SETTING["ef_lstm_last"] = "aligned50"
MAX_LEN = 50


# ------------------------------------------------------------------------------------------------ data


def build_npz(path: Path, n_train: int, n_val: int, n_test: int, data_seed: int) -> dict:
    """The dataset through emofusion's hygiene, padded/truncated to MAX_LEN words, saved once."""
    import numpy as np

    from emofusion.training.config import RunConfig
    from emofusion.training.run import prepare_data

    opts = {"target": "sentiment", "n_train": n_train, "n_val": n_val, "n_test": n_test, "seed": data_seed}
    # drop_constant=False: synthetic visual has one constant column; kept (all zeros after standardising) so
    # the inputs keep MMSA's MOSEI sizes (300/74/35) on both sides
    config = RunConfig(dataset="synthetic:aligned", dataset_options=opts, drop_constant=False)
    bundle, _, report = prepare_data(config)
    if {m: bundle.modality_dims[m] for m in MODS} != DIMS:
        raise ValueError(
            f"hygiene changed the feature sizes {bundle.modality_dims}; MMSA's configs need {DIMS}"
        )
    arrays = {}
    truncated = 0
    for split in ("train", "val", "test"):
        ds = getattr(bundle, split)
        n = len(ds)
        lengths = np.zeros(n, np.int64)
        x = {m: np.zeros((n, MAX_LEN, DIMS[m]), np.float32) for m in MODS}
        y = np.zeros(n, np.float32)
        for i in range(n):
            s = ds[i]
            t = {m: s.features[m].shape[0] for m in MODS}
            if len(set(t.values())) != 1:
                raise ValueError(f"{split} sample {s.id!r}: modalities not word-aligned: {t}")
            length = min(t["text"], MAX_LEN)
            truncated += t["text"] > MAX_LEN
            lengths[i] = length
            for m in MODS:
                x[m][i, :length] = s.features[m][:length]
            y[i] = float(np.asarray(s.label).ravel()[0])
        for m in MODS:
            arrays[f"{split}_{m}"] = x[m]
        arrays[f"{split}_lengths"] = lengths
        arrays[f"{split}_labels"] = y
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return {
        "path": str(path),
        "sizes": {s: int(len(arrays[f"{s}_labels"])) for s in ("train", "val", "test")},
        "truncated": int(truncated),
        "lengths_train": [int(arrays["train_lengths"].min()), int(arrays["train_lengths"].max())],
        "hygiene": report.get("hygiene"),
    }


def load_split(npz, split: str, setting: str, pad_start: bool = False):
    """Tensors for one split: ({modality: [N, T, D]}, lengths [N], labels [N]).

    ``pad_start``: the same values with the padding moved to the front (the CMU SDK / MulT layout), a
    diagnostic for models that read the last LSTM state without masks."""
    import torch

    lengths = torch.from_numpy(npz[f"{split}_lengths"])
    x = {m: torch.from_numpy(npz[f"{split}_{m}"]) for m in MODS}
    if setting == "averaged":
        # average over the real words only; both sides get the same [N, 1, D] vector
        mask = (torch.arange(MAX_LEN)[None, :] < lengths[:, None]).float()[:, :, None]
        for m in ("audio", "visual"):
            x[m] = ((x[m] * mask).sum(1) / lengths[:, None].clamp(min=1)).unsqueeze(1)
    if pad_start:
        for m in MODS:
            if x[m].shape[1] == MAX_LEN:
                x[m] = torch.stack(
                    [torch.roll(v, MAX_LEN - int(n), 0) for v, n in zip(x[m], lengths, strict=True)]
                )
    return x, lengths, torch.from_numpy(npz[f"{split}_labels"])


# ---------------------------------------------------------------------------------------------- worker


def worker(
    side: str,
    name: str,
    npz_path: str,
    seeds: list[int],
    epochs: int,
    batch: int,
    lr: float,
    pad: str = "end",
) -> None:
    import copy

    import numpy as np
    import torch

    torch.set_num_threads(1)
    setting = SETTING[name]
    npz = np.load(npz_path)
    if pad == "start" and side != "mmsa":
        raise ValueError("--mmsa-pad start is a diagnostic for MMSA's side only")
    data = {s: load_split(npz, s, setting, pad_start=pad == "start") for s in ("train", "val", "test")}

    for seed in seeds:
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        if side == "mmsa":
            model, mmsa_forward = build_mmsa(BASE.get(name, name), setting)
        else:
            model, mmsa_forward = build_emofusion(name, setting)
        if side == "emofusion":
            from emofusion.data.batch import ModalityTensor

            def forward(x, lengths, model=model):
                inputs = {}
                for m, v in x.items():
                    if v.shape[1] == MAX_LEN:
                        mask = torch.arange(MAX_LEN)[None, :] < lengths[:, None]
                    else:  # utterance-averaged vector
                        mask = torch.ones(v.shape[:2], dtype=torch.bool)
                    inputs[m] = ModalityTensor(v, mask)
                out = model(inputs)
                return out.prediction.view(-1), sum(out.aux_losses.values(), torch.zeros(()))
        else:

            def forward(x, lengths, f=mmsa_forward):
                return f(x).view(-1), torch.zeros(())

        opt = torch.optim.Adam(model.parameters(), lr=lr)
        rng = np.random.RandomState(seed)
        xtr, ltr, ytr = data["train"]
        n = len(ytr)

        def predict(split, model=model, forward=forward):
            xs, ls, _ = data[split]
            model.eval()
            outs = []
            with torch.no_grad():
                for i in range(0, len(ls), 256):
                    outs.append(forward({m: v[i : i + 256] for m, v in xs.items()}, ls[i : i + 256])[0])
            return torch.cat(outs)

        best = (float("inf"), -1, None)
        val_curve = []
        for epoch in range(epochs):
            model.train()
            perm = torch.from_numpy(rng.permutation(n))
            for i in range(0, n, batch):
                idx = perm[i : i + batch]
                if len(idx) < 2:  # BatchNorm needs two samples
                    continue
                pred, aux = forward({m: v[idx] for m, v in xtr.items()}, ltr[idx])
                loss = (pred - ytr[idx]).abs().mean() + aux
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            val_mae = float((predict("val") - data["val"][2]).abs().mean())
            val_curve.append(val_mae)
            if val_mae < best[0]:
                best = (val_mae, epoch, copy.deepcopy(model.state_dict()))
        model.load_state_dict(best[2])
        test_pred = predict("test").tolist()
        rec = {
            "side": side,
            "name": name,
            "seed": seed,
            "best_epoch": best[1],
            "val_mae": val_curve,
            "test_pred": test_pred,
            "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "seconds": time.perf_counter() - t0,
            "torch": torch.__version__,
        }
        print("RESULT " + json.dumps(rec), flush=True)


def run_worker(python: str, side: str, name: str, npz: Path, seeds, args) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if side == "emofusion":
        src = str(Path(__file__).resolve().parents[1] / "src")
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [python, __file__, "--worker", side, "--model", name, "--npz", str(npz)]
    cmd += ["--seeds", ",".join(map(str, seeds)), "--epochs", str(args.epochs), "--batch", str(args.batch)]
    cmd += ["--lr", str(args.lr)] + (["--mmsa-pad", args.mmsa_pad] if side == "mmsa" else [])
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
        out, err = proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        out, err = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), "timeout"
    recs = [json.loads(x[7:]) for x in out.splitlines() if x.startswith("RESULT ")]
    if len(recs) < len(seeds):
        recs.append({"side": side, "name": name, "error": (err or "no output").strip()[-400:]})
    return recs


# ------------------------------------------------------------------------------------------------ main


def _ms(xs, fmt="{:.3f}"):
    xs = [x for x in xs if x == x]
    if not xs:
        return "n/a"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return (fmt + " ± " + fmt).format(statistics.mean(xs), sd)


def render(result: dict) -> str:
    d = result["data"]
    lines = [
        "### Accuracy on the same data",
        "",
        f"Command: `{result['command']}` (wall time {result['wall_seconds'] / 60:.1f} min, one thread per process).",
        "",
        "MMSA's model classes (MMSA 2.2.1, MOSEI config sizes) and emofusion's counterparts trained by the same "
        "loop written once in `benchmarks/mmsa_accuracy.py` (this compares the models as implemented by each "
        "library, not MMSA's trainer): Adam lr "
        f"{result['lr']}, L1 loss, batch {result['batch']}, {result['epochs']} epochs, the epoch with the lowest "
        "validation MAE evaluated on test; same seeds and batch order on both sides. Data: `synthetic:aligned`, "
        f"`target=sentiment`, n_train/val/test {d['sizes']['train']}/{d['sizes']['val']}/{d['sizes']['test']}, "
        f"emofusion's hygiene fitted on train, padded at the end to {MAX_LEN} words ({d['truncated']} truncated), "
        "one `.npz` read by both venvs. Metrics by `emofusion.evaluation.metrics.compute_metrics` on both sides' "
        "test predictions; acc2 = non-negative vs negative. Mean ± std over seeds "
        f"{', '.join(map(str, result['seeds']))}."
        + (
            " Diagnostic: MMSA's side got the same values padded at the FRONT (`--mmsa-pad start`)."
            if result.get("mmsa_pad") == "start"
            else ""
        ),
        "",
        "| MMSA model | emofusion | params MMSA / ours | MAE MMSA | MAE ours | r MMSA | r ours | acc2 MMSA | acc2 ours |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        a, b = r.get("mmsa", {}), r.get("emofusion", {})
        cells = [
            MMSA_CLASS[r["case"]],
            r["emofusion_model"],
            f"{a.get('params') or 'n/a'} / {b.get('params') or 'n/a'}",
        ]
        for key, fmt in (("mae", "{:.3f}"), ("pearson_r", "{:.3f}"), ("acc2_has0", "{:.3f}")):
            cells += [
                _ms(a.get(key, []), fmt)
                + f" (n={len(a.get(key, []))})" * (len(a.get(key, [])) != len(result["seeds"])),
                _ms(b.get(key, []), fmt)
                + f" (n={len(b.get(key, []))})" * (len(b.get(key, [])) != len(result["seeds"])),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Notes:", ""]
    for r in result["rows"]:
        lines.append(f"- {MMSA_CLASS[r['case']]} ↔ {r['emofusion_model']}: {r['note']}.")
        for side in ("mmsa", "emofusion"):
            for e in r.get(side, {}).get("errors", [])[:1]:
                lines.append(f"  - {side} error: {e[:200]}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="n 600/150/150, 8 epochs, tfn,lmf,ef_lstm,lf_dnn,mfn")
    p.add_argument("--mmsa-python", default="/tmp/venv_mmsa/bin/python")
    p.add_argument("--emofusion-python", default=sys.executable)
    p.add_argument("--cases", default="", help="comma-separated (default: quick: all but mult; else all)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--n", default=None, help="n_train,n_val,n_test (quick: 600,150,150; else 2000,500,500)")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument(
        "--mmsa-pad",
        choices=["end", "start"],
        default="end",
        help="diagnostic: 'start' gives MMSA's models the same values padded at the front instead",
    )
    p.add_argument("--sides", default="mmsa,emofusion", help="which sides to train (diagnostics)")
    p.add_argument("--out", default="bench_out/mmsa_accuracy")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--worker", choices=["mmsa", "emofusion"], help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--npz", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    epochs = args.epochs or (8 if args.quick else 20)
    args.epochs = epochs
    if args.worker:
        worker(args.worker, args.model, args.npz, seeds, epochs, args.batch, args.lr, args.mmsa_pad)
        return 0

    import numpy as np

    from emofusion.evaluation.metrics import compute_metrics
    from emofusion.tasks import sentiment_task

    t_start = time.perf_counter()
    n_train, n_val, n_test = (
        int(x) for x in (args.n or ("600,150,150" if args.quick else "2000,500,500")).split(",")
    )
    cases = [c for c in args.cases.split(",") if c] or [c for c in ORDER if c != "mult" or not args.quick]
    out = Path(args.out)
    npz_path = out / f"synthetic_aligned_sentiment_{n_train}_{n_val}_{n_test}_s{args.data_seed}.npz"
    data_info = build_npz(npz_path, n_train, n_val, n_test, args.data_seed)
    print(f"[acc] data {data_info['sizes']} truncated {data_info['truncated']} -> {npz_path}", flush=True)
    labels = np.load(npz_path)["test_labels"]
    task = sentiment_task()
    command = "python benchmarks/mmsa_accuracy.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {
        "command": command,
        "seeds": seeds,
        "epochs": epochs,
        "batch": args.batch,
        "lr": args.lr,
        "data": data_info,
        "mmsa_pad": args.mmsa_pad,
        "rows": [],
    }
    for name in cases:
        row = {"case": name, "emofusion_model": EMOFUSION[name][0], "note": EMOFUSION[name][2], "runs": {}}
        for side in [s for s in ("mmsa", "emofusion") if s in args.sides.split(",")]:
            python = args.mmsa_python if side == "mmsa" else args.emofusion_python
            recs = run_worker(python, side, name, npz_path, seeds, args)
            summary = {"errors": [r["error"] for r in recs if "error" in r]}
            for rec in recs:
                if "error" in rec:
                    print(f"[acc] {name} {side} error: {rec['error']}", flush=True)
                    continue
                m = compute_metrics(task, np.asarray(rec["test_pred"])[:, None], labels[:, None])
                rec["metrics"] = m
                summary["params"] = rec["params"]
                for k in ("mae", "pearson_r", "acc2_has0"):
                    summary.setdefault(k, []).append(m[k])
                print(
                    f"[acc] {name} {side} seed {rec['seed']}: test MAE {m['mae']:.3f} r {m['pearson_r']:.3f} "
                    f"acc2 {m['acc2_has0']:.3f} (best epoch {rec['best_epoch']}, {rec['seconds']:.0f}s)",
                    flush=True,
                )
            row["runs"][side] = recs
            row[side] = summary
        result["rows"].append(row)
        result["wall_seconds"] = time.perf_counter() - t_start
        (out / "results.json").write_text(json.dumps(result, indent=1))
        (out / "results.md").write_text(render(result))
    md = render(result)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
