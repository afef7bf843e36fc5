"""Self-contained trained models: ``save_pretrained(module, DIR)`` and ``emofusion.from_pretrained(DIR)``.

A model folder holds everything needed to predict offline, with no access to the training data::

    DIR/model.safetensors   the model's weights (safetensors)
    DIR/config.json         model name, options, modality sizes, task, training run config, versions
    DIR/hygiene.json        the feature hygiene fitted on the training split (kept columns, mean, std)
    DIR/extraction.json     feature-extraction settings (when trained on `emofusion extract` features)
    DIR/metrics.json        the run's validation/test metrics, as measured at training time
    DIR/README.md           a short model card

Every command that takes a run directory or a checkpoint also takes such a folder.
"""

from __future__ import annotations

import json
from pathlib import Path

FORMAT_VERSION = 1


def is_pretrained_dir(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "model.safetensors").is_file() and (p / "config.json").is_file()


def extraction_for_dataset(spec: str | None, options: dict | None = None) -> dict | None:
    """The extraction.json behind a dataset made by `emofusion extract` (folder:OUT/segments, cremad:, ...)."""
    if not spec:
        return None
    prefix, _, arg = spec.partition(":")
    candidates = []
    if prefix == "folder" and arg:
        candidates.append(Path(arg) / "extraction.json")
    elif prefix in ("cremad", "ravdess") and arg:
        from emofusion.data.media_recipes import cache_dir

        try:
            candidates.append(cache_dir(prefix, arg, options or {}) / "extraction.json")
        except Exception:  # noqa: BLE001  (training folder gone: no settings from it)
            return None
    for c in candidates:
        if c.is_file():
            data = json.loads(c.read_text())
            view = data.get("view") or (options or {}).get("align", "segments")
            return {"view": view, "settings": data["settings"], "extractors": data.get("extractors", {})}
    return None


def _model_card(cfg: dict, metrics: dict | None, extraction: dict | None) -> str:
    run = cfg.get("run_config") or {}
    lines = [
        f"# emofusion model: {cfg['model_name']}",
        "",
        f"- task: {cfg['task']['kind']} ({', '.join(cfg['task']['output_names'])})",
        f"- modalities (input sizes before hygiene): {cfg['input_dims']}",
        f"- trained on: {run.get('dataset')} (seed {run.get('seed')}, {run.get('max_epochs')} epochs max)",
        f"- emofusion {cfg.get('emofusion_version')}",
    ]
    if extraction:
        s = extraction.get("settings", {})
        lines.append(f"- features: `emofusion extract` view={extraction.get('view')} acoustic={s.get('acoustic')} "
                     f"words={s.get('words')} text={s.get('text')} face={s.get('face')}")
    if metrics:
        for split in ("val", "test"):
            if split in metrics:
                shown = ", ".join(f"{k}={v:.4g}" for k, v in list(metrics[split].items())[:6]
                                  if isinstance(v, (int, float)))
                lines.append(f"- {split} metrics (at training time): {shown}")
    lines += ["", "Load: `emofusion.from_pretrained(PATH)`; predict: `emofusion predict PATH media.mp4`.",
              "Limitations: trained on the data above only; check the metrics against the trivial baselines in "
              "the run's report before trusting it on other recordings.", ""]
    return "\n".join(lines)


def save_pretrained(module, path: str | Path, metrics: dict | None = None, extraction: dict | None = None) -> Path:
    """Write ``module`` (an EmoFusionModule) as a self-contained model folder."""
    from safetensors.torch import save_file

    from emofusion import __version__

    if getattr(module.model, "fits_closed_form", False):  # checked before the folder exists
        raise ValueError(
            f"{module.hparams.get('model_name', type(module.model).__name__)}: a scikit-learn estimator (models/classical.py) is not tensors, so it has no "
            "safetensors model folder; use the run directory (checkpoints/best.ckpt) with `emofusion predict`"
        )
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    hp = module.hparams
    hygiene = hp.get("hygiene_state")
    run_config = dict(hp.get("run_config") or {})
    if extraction is None:
        extraction = extraction_for_dataset(run_config.get("dataset"), run_config.get("dataset_options"))
    input_dims = dict(hp["modality_dims"])
    if hygiene:  # the model's sizes are after hygiene; users feed the extractor's raw sizes
        input_dims = {m: hygiene["modalities"][m]["input_dim"] if m in hygiene["modalities"] else d
                      for m, d in input_dims.items()}
    cfg = {
        "format_version": FORMAT_VERSION,
        "model_name": hp["model_name"],
        "modality_dims": dict(hp["modality_dims"]),
        "input_dims": input_dims,
        "task": hp["task"],
        "model_options": dict(hp.get("model_options") or {}),
        "loss": hp.get("loss"),
        "run_config": run_config,
        "emofusion_version": __version__,
    }
    state = {k: v.detach().cpu().contiguous() for k, v in module.model.state_dict().items()}
    save_file(state, str(path / "model.safetensors"), metadata={"format": "emofusion", "model": hp["model_name"]})
    (path / "config.json").write_text(json.dumps(cfg, indent=1, default=str))
    (path / "hygiene.json").write_text(json.dumps(hygiene, indent=1))
    if extraction:
        (path / "extraction.json").write_text(json.dumps(extraction, indent=1, default=str))
    if metrics:
        (path / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float))
    (path / "README.md").write_text(_model_card(cfg, metrics, extraction))
    return path


def from_pretrained(path: str | Path):
    """An EmoFusionModule (eval mode, CPU) from a model folder written by :func:`save_pretrained`."""
    import torch
    from safetensors.torch import load_file

    from emofusion.training.module import EmoFusionModule

    path = Path(path)
    if not is_pretrained_dir(path):
        raise FileNotFoundError(f"{path}: not an emofusion model folder (needs model.safetensors and config.json)")
    cfg = json.loads((path / "config.json").read_text())
    if cfg.get("format_version", 1) > FORMAT_VERSION:
        raise ValueError(f"{path}: model folder format {cfg['format_version']} is newer than this emofusion reads")
    hygiene = json.loads((path / "hygiene.json").read_text()) if (path / "hygiene.json").is_file() else None
    module = EmoFusionModule(cfg["model_name"], cfg["modality_dims"], cfg["task"], cfg.get("model_options"),
                             cfg.get("loss"), hygiene_state=hygiene, run_config=cfg.get("run_config"))
    state = load_file(str(path / "model.safetensors"))
    missing, unexpected = module.model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match model {cfg['model_name']!r} "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    module.eval()
    module.to(torch.device("cpu"))
    module.pretrained_dir = path
    return module


def module_extraction(module) -> dict | None:
    """Extraction settings a module was trained with: its model folder's, else its training dataset's."""
    d = getattr(module, "pretrained_dir", None)
    if d is not None and (Path(d) / "extraction.json").is_file():
        return json.loads((Path(d) / "extraction.json").read_text())
    run = module.hparams.get("run_config") or {}
    return extraction_for_dataset(run.get("dataset"), run.get("dataset_options"))


def load_any(path: str | Path):
    """A model folder, a run directory or a .ckpt file."""
    if is_pretrained_dir(path):
        return from_pretrained(path)
    if Path(path).is_dir() and is_pretrained_dir(Path(path) / "model"):
        from emofusion.training.run import load_module

        if not (Path(path) / "checkpoints").is_dir():
            return from_pretrained(Path(path) / "model")
        module = load_module(path)
        module.pretrained_dir = Path(path) / "model"
        return module
    from emofusion.training.run import load_module

    return load_module(path)
