"""``emofusion export RUN --format onnx|torchscript|pretrained``: a trained model for use outside Python training.

The exported graph takes raw extractor features (hygiene included: kept columns, standardisation with the
training mean/std, non-finite -> 0) and boolean masks, one pair per modality, in the order of
``input_names``: ``<m>_values [B, T_m, D_m]`` float32 and ``<m>_mask [B, T_m]`` bool; B and every T_m are
dynamic. Output ``prediction [B, K]``: regression values, or logits for classification / multi-label
(``export.json`` beside the file says which, and the output names).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn


class ExportWrapper(nn.Module):
    """The model with its hygiene transform in front, taking flat (values, mask) tensors per modality."""

    def __init__(self, model: nn.Module, modalities: list[str], hygiene: dict | None):
        super().__init__()
        self.model = model
        self.modalities = list(modalities)
        if getattr(model, "fits_closed_form", False):
            raise ValueError(
                f"export: {type(model).__name__} is a scikit-learn estimator on pooled statistics "
                "(models/classical.py), not a torch graph: it has no ONNX / TorchScript / safetensors form. Use "
                "`emofusion predict` with the run directory (its checkpoints/best.ckpt holds the estimator)."
            )
        if hygiene and hygiene.get("scaling") == "quantile":
            # the graph would need a per-feature searchsorted, which ONNX has no operator for
            raise ValueError(
                "export: this run was trained with standardize=quantile (rank-Gauss feature scaling); the "
                "exported graph implements z-score hygiene only. Use `emofusion predict` / the pretrained "
                "folder, or retrain with standardize=true to export."
            )
        self.standardize = bool(hygiene and hygiene.get("standardize", True))
        for m in self.modalities:
            s = (hygiene or {}).get("modalities", {}).get(m)
            d = model.modality_dims[m]
            keep = torch.as_tensor(s["keep"], dtype=torch.long) if s else torch.arange(d)
            mean = torch.as_tensor(s["mean"], dtype=torch.float32) if s else torch.zeros(d)
            std = torch.as_tensor(s["std"], dtype=torch.float32) if s else torch.ones(d)
            self.register_buffer(f"{m}_keep", keep, persistent=False)
            self.register_buffer(f"{m}_mean", mean, persistent=False)
            self.register_buffer(f"{m}_std", std, persistent=False)

    def forward(self, *flat: torch.Tensor) -> torch.Tensor:
        inputs = {}
        for i, m in enumerate(self.modalities):
            x, mask = flat[2 * i], flat[2 * i + 1]
            x = torch.index_select(x, 2, getattr(self, f"{m}_keep"))
            if self.standardize:
                x = (x - getattr(self, f"{m}_mean")) / getattr(self, f"{m}_std")
            x = torch.where(torch.isnan(x) | torch.isinf(x), torch.zeros_like(x), x)
            inputs[m] = (x, mask.bool())
        return self.model(inputs).prediction


def input_dims(module) -> dict[str, int]:
    hyg = module.hparams.get("hygiene_state") or {}
    return {m: (hyg.get("modalities", {}).get(m, {}).get("input_dim") or d)
            for m, d in module.hparams["modality_dims"].items()}


def example_inputs(module, batch: int = 2, lengths: dict[str, int] | None = None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    flat = []
    for m, d in input_dims(module).items():
        t = (lengths or {}).get(m, 7)
        flat.append(torch.randn(batch, t, d, generator=g))
        mask = torch.ones(batch, t, dtype=torch.bool)
        if batch > 1 and t > 1:
            mask[1:, t - max(1, t // 3):] = False  # a shorter sample: padding must be ignored
        flat.append(mask)
    return tuple(flat)


def wrap(module) -> ExportWrapper:
    module.eval()
    w = ExportWrapper(module.model, module.modalities, module.hparams.get("hygiene_state"))
    w.eval()
    return w


def _write(w, example, names, module, out: Path, fmt: str, opset: int) -> None:
    if fmt == "onnx":
        dynamic = {}
        for m in module.modalities:
            dynamic[f"{m}_values"] = {0: "batch", 1: f"{m}_steps"}
            dynamic[f"{m}_mask"] = {0: "batch", 1: f"{m}_steps"}
        dynamic["prediction"] = {0: "batch"}
        with torch.no_grad():
            torch.onnx.export(w, example, str(out), input_names=names, output_names=["prediction"],
                              dynamic_axes=dynamic, opset_version=opset, dynamo=False)
    elif fmt == "torchscript":
        with torch.no_grad():
            traced = torch.jit.trace(w, example, check_trace=False)
        traced.save(str(out))
    else:
        raise ValueError(f"export format must be onnx, torchscript or pretrained, got {fmt!r}")


def export_model(module, out: str | Path, fmt: str = "onnx", opset: int = 17) -> Path:
    """Write the model (hygiene included) as ONNX or TorchScript, plus ``export.json`` describing the I/O."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    w = wrap(module)
    names = [f"{m}_{k}" for m in module.modalities for k in ("values", "mask")]
    example = example_inputs(module)
    with warnings.catch_warnings():
        # tracer notes on shape-dependent Python branches: the traced path (with padding) is exact for every
        # input, and check_export compares the result on other batch sizes and lengths
        warnings.simplefilter("ignore")
        _write(w, example, names, module, out, fmt, opset)
    task = module.task
    meta = {
        "format": fmt,
        "model": module.hparams["model_name"],
        "input_names": names,
        "input_dims": input_dims(module),
        "output": "prediction",
        "output_names": list(task.output_names),
        "task": task.kind,
        "output_is": "logits" if task.kind in ("classification", "multilabel_binary") else "values",
        "hygiene": "included (kept columns, (x - mean) / std, non-finite -> 0)",
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    return out


def add_export(sub):
    p = sub.add_parser(
        "export",
        help="export a trained model: onnx, torchscript, or a self-contained model folder (pretrained)",
        description="Export a run directory, checkpoint or model folder. onnx/torchscript: the hygiene transform "
        "is part of the graph; batch size and every modality's length are dynamic. pretrained: a folder with "
        "model.safetensors, config.json, hygiene.json, extraction.json, metrics.json and a model card, loadable "
        "with emofusion.from_pretrained(PATH) and by every command.",
    )
    p.add_argument("run", help="a run directory, a .ckpt file or a model folder")
    p.add_argument("--format", default="onnx", choices=["onnx", "torchscript", "pretrained"])
    p.add_argument("--out", help="output file (or folder for pretrained); default RUN/export/model.onnx|.pt or "
                   "RUN/model")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--no-check", action="store_true", help="do not compare the export with PyTorch")
    p.set_defaults(func=cmd_export)


def check_export(module, path: Path, fmt: str, lengths=((3, 5), (9, 2))) -> float:
    """Max |export - PyTorch| over batches of different sizes and lengths."""
    w = wrap(module)
    worst = 0.0
    for batch, base in lengths:
        lens = {m: base + 2 * i for i, m in enumerate(module.modalities)}
        flat = example_inputs(module, batch, lens, seed=batch)
        with torch.no_grad():
            ref = w(*flat).numpy()
        if fmt == "onnx":
            import onnxruntime as ort

            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            all_names = [f"{m}_{k}" for m in module.modalities for k in ("values", "mask")]
            feed = dict(zip(all_names, (t.numpy() for t in flat)))
            got = sess.run(None, {i.name: feed[i.name] for i in sess.get_inputs()})[0]
        else:
            got = torch.jit.load(str(path))(*flat).detach().numpy()
        worst = max(worst, float(abs(got - ref).max()))
    return worst


def cmd_export(args) -> int:
    from emofusion.pretrained import load_any, save_pretrained

    module = load_any(args.run)
    base = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
    if args.format == "pretrained":
        metrics = None
        mpath = base / "metrics.json"
        if mpath.is_file():
            metrics = json.loads(mpath.read_text())
        out = save_pretrained(module, args.out or base / "model", metrics=metrics)
        print(f"wrote model folder {out} (load with emofusion.from_pretrained)")
        return 0
    out = Path(args.out) if args.out else base / "export" / ("model.onnx" if args.format == "onnx" else "model.pt")
    export_model(module, out, args.format, args.opset)
    msg = f"wrote {out} and {out.with_suffix('.json')}"
    if not args.no_check:
        diff = check_export(module, out, args.format)
        msg += f"; max |export - PyTorch| on 2 batches of other sizes/lengths: {diff:.2e}"
        if diff > 1e-3:
            print(msg)
            print("error: the export does not match PyTorch (dynamic lengths not supported by this model?)")
            return 1
    print(msg)
    return 0
