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

Real data (``emofusion benchmark real``, evaluation/suites/real.py) use the functions of the section "MMSA on a
real emofusion dataset" below in-process: ``bundle_arrays`` (the emofusion dataset, after its hygiene, on its
word slots) and ``train_mmsa`` (MMSA's model trained by MMSA's trainer rules and config, not this loop).
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


# ------------------------------------------------------------------------ MMSA on a real emofusion dataset
#
# Used by the ``real`` suite (``emofusion benchmark real``, evaluation/suites/real.py): MMSA 2.2.1's own models
# trained the way MMSA's trainers train them, on the split and features emofusion's runs see. MMSA needs
# three modalities: text is an all-zero [N, slots, 1] tensor when the dataset has no text in every split.

MMSA_MODELS = {"tfn": "TFN", "mfn": "MFN", "mult": "MULT", "ef_lstm": "EF_LSTM", "lmf": "LMF", "lf_dnn": "LF_DNN"}
# MMSA's own data layout per model (its config's need_data_aligned / need_normalized)
MMSA_AVERAGED = ("tfn", "lmf", "lf_dnn")
MMSA_MAX_EPOCHS = 60
MMSA_EARLY_STOP = 8  # MMSA's commonParams.early_stop: epochs without a better validation loss
MMSA_BATCH = 32
MMSA_CONFIG_DATASET = "mosi"  # the smallest of MMSA's datasets; its per-model sizes and optimiser settings


def mmsa_available() -> str | None:
    """None when MMSA's models can be imported here, else the reason."""
    try:
        import easydict  # noqa: F401
        from MMSA.models.singleTask import TFN  # noqa: F401
    except Exception as err:  # ImportError, or a broken install
        return f"MMSA is not installed ({type(err).__name__}: {err}); pip install emofusion[peers]"
    return None


def mmsa_config(name: str) -> dict:
    """MMSA's own config for ``name`` (commonParams + datasetParams[mosi]) from the installed package."""
    import MMSA

    path = Path(MMSA.__file__).parent / "config" / "config_regression.json"
    config = json.loads(path.read_text())[name]
    return {**config["commonParams"], **config["datasetParams"][MMSA_CONFIG_DATASET]}


def bundle_arrays(bundle, modalities, slots: int | None = None) -> dict:
    """Per split: ``x`` {text, audio, visual: [N, slots, D]} (values at their word slot, 0 = the standardised
    mean elsewhere), ``present`` {m: [N, slots] bool} and ``y`` (float [N] or int [N]). Samples must carry
    word-slot intervals (the MFN reader keeps them) or be word-aligned already."""
    import numpy as np

    out = {}
    if slots is None:
        slots = 1
        for split in ("train", "val", "test"):
            ds = bundle.split(split)
            for i in range(len(ds)):
                s = ds[i]
                for m in modalities:
                    iv = s.intervals.get(m)
                    top = int(np.asarray(iv)[:, 1].max()) if iv is not None and len(iv) else s.length(m)
                    slots = max(slots, top)
    for split in ("train", "val", "test"):
        ds = bundle.split(split)
        n = len(ds)
        x = {m: np.zeros((n, slots, bundle.modality_dims[m]), np.float32) for m in modalities}
        present = {m: np.zeros((n, slots), bool) for m in modalities}
        ys = []
        for i in range(n):
            s = ds[i]
            for m in modalities:
                v = np.nan_to_num(np.asarray(s.features[m], np.float32))
                iv = s.intervals.get(m)
                idx = (np.asarray(iv)[:, 0].astype(int) if iv is not None and len(iv) == len(v)
                       else np.arange(len(v)))
                keep = idx < slots
                x[m][i, idx[keep]] = v[keep]
                present[m][i, idx[keep]] = True
            ys.append(np.asarray(s.label).ravel())
        y = np.stack(ys)
        y = y[:, 0].astype(np.int64) if np.issubdtype(y.dtype, np.integer) else y[:, 0].astype(np.float32)
        if "text" not in modalities:
            x["text"] = np.zeros((n, slots, 1), np.float32)
            present["text"] = np.zeros((n, slots), bool)
        out[split] = {"x": x, "present": present, "y": y}
    return out


def train_mmsa(name: str, arrays: dict, seed: int, task, max_epochs: int = MMSA_MAX_EPOCHS,
               early_stop: int = MMSA_EARLY_STOP, batch: int = MMSA_BATCH, log=None) -> dict:
    """MMSA's model ``name`` trained as MMSA's trainer does: its config (mosi) sizes, lr and weight decay
    (LMF: its factor_lr group; MulT: ReduceLROnPlateau on the validation loss and value clipping), L1 loss
    (cross-entropy for classes), batch ``batch``, at most ``max_epochs`` epochs, stopped after ``early_stop``
    epochs without a lower validation loss, best weights restored. Returns val/test predictions.

    MMSA bounds TFN's regression output to (-3, 3) (a scaled sigmoid, MOSI's range); labels in another range
    (ICT-MMMO's [1, 5]) are centred for MMSA (``y - centre``) and the predictions moved back, so its output
    range covers the labels."""
    import copy

    import numpy as np
    import torch
    from easydict import EasyDict
    from MMSA.models.singleTask import EF_LSTM, LF_DNN, LMF, MFN, MULT, TFN

    classes = {"tfn": TFN, "mfn": MFN, "mult": MULT, "ef_lstm": EF_LSTM, "lmf": LMF, "lf_dnn": LF_DNN}
    classification = task.kind == "classification"
    cfg = mmsa_config(name)
    slots = arrays["train"]["x"]["audio"].shape[1]
    dims = [arrays["train"]["x"][m].shape[2] for m in ("text", "audio", "visual")]
    args = EasyDict(
        {**cfg, "feature_dims": dims, "seq_lens": slots if name == "ef_lstm" else [slots] * 3,
         "train_mode": "classification" if classification else "regression",
         "num_classes": len(task.output_names) if classification else 1, "use_bert": False,
         "use_finetune": False, "need_normalized": name in MMSA_AVERAGED}
    )
    centre = 0.0
    if not classification and task.label_range is not None:
        centre = 0.5 * (task.label_range[0] + task.label_range[1])
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = classes[name](args)

    def tensors(split):
        d = arrays[split]
        x = {m: torch.from_numpy(d["x"][m]) for m in ("text", "audio", "visual")}
        if name in MMSA_AVERAGED:
            # MMSA's need_normalized loader: audio / visual averaged over the segment (here over real frames)
            for m in ("audio", "visual"):
                p = torch.from_numpy(d["present"][m]).float().unsqueeze(-1)
                x[m] = ((x[m] * p).sum(1) / p.sum(1).clamp_min(1)).unsqueeze(1)
        y = torch.from_numpy(d["y"])
        return x, (y if classification else y - centre)

    data = {s: tensors(s) for s in ("train", "val", "test")}
    params = [p for p in model.parameters() if p.requires_grad]
    wd = float(cfg.get("weight_decay", 0.0) or 0.0)
    lr = float(cfg["learning_rate"])
    if name == "lmf":  # MMSA's LMF trainer: the factors (first 3 parameters) at factor_lr
        factors = list(model.parameters())[:3]
        ids = {id(p) for p in factors}
        optim = torch.optim.Adam(
            [{"params": factors, "lr": float(cfg["factor_lr"])},
             {"params": [p for p in params if id(p) not in ids], "lr": lr}], weight_decay=wd)
    else:
        optim = torch.optim.Adam(params, lr=lr, weight_decay=0.0 if name == "tfn" else wd)
    plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(optim, mode="min", factor=0.1, patience=int(cfg["patience"]))
               if name == "mult" else None)
    clip = float(cfg.get("grad_clip", -1.0)) if name == "mult" else -1.0
    loss_fn = torch.nn.CrossEntropyLoss() if classification else torch.nn.L1Loss()

    def forward(x):
        out = model(x["text"], x["audio"], x["visual"])["M"]
        return out if classification else out.view(-1)

    def predict(split):
        x, _ = data[split]
        model.eval()
        with torch.no_grad():
            return torch.cat([forward({m: v[i:i + 256] for m, v in x.items()}) for i in range(0, len(x["audio"]), 256)])

    xtr, ytr = data["train"]
    n = len(ytr)
    rng = np.random.RandomState(seed)
    best = (float("inf"), -1, None)
    epoch = 0
    for epoch in range(max_epochs):
        model.train()
        perm = torch.from_numpy(rng.permutation(n))
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            loss = loss_fn(forward({m: v[idx] for m, v in xtr.items()}), ytr[idx])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_value_(params, clip)
            optim.step()
        val_loss = float(loss_fn(predict("val"), data["val"][1]))
        if plateau is not None:
            plateau.step(val_loss)
        if val_loss < best[0]:
            best = (val_loss, epoch, copy.deepcopy(model.state_dict()))
        if log:
            log(f"[mmsa {name} seed {seed}] epoch {epoch} val loss {val_loss:.4f}")
        if epoch - best[1] >= early_stop:
            break
    model.load_state_dict(best[2])

    def back(p):
        p = p.numpy()
        return p if classification else (p + centre)[:, None]

    return {
        "val_pred": back(predict("val")),
        "test_pred": back(predict("test")),
        "best_epoch": best[1],
        "epochs": epoch + 1,
        "val_loss": best[0],
        "params": sum(p.numel() for p in params),
        "config": {k: v for k, v in cfg.items() if not isinstance(v, (dict, list)) or k in ("hidden_dims", "dropouts")},
    }


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
