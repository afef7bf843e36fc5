"""``emofusion predict MODEL INPUT``: predictions for media files, unlabelled folders or datasets, in input order.

``MODEL``: a run directory, a .ckpt, or a model folder (``emofusion export --format pretrained``).
``INPUT``:
- a media file or a folder of media files: extracted first with the settings the model was trained on
  (stored in its run / model folder), one row per utterance segment with its time span;
- a folder written by ``emofusion extract`` (OUT, OUT/segments or OUT/words) or any ``folder:`` dataset,
  labelled or not;
- a dataset name (``synthetic``, ``csd:...``, ``cremad:...``): ``--split all|train|val|test`` (default test).
Rows: id, split, file, start, end, text (where known), then per output the value (regression) or the
predicted class and class probabilities / per-label probabilities. Written as CSV and JSON.
"""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

import numpy as np

from emofusion.data.batch import Sample

PREDICTION_FORMATS = ("", ".csv", ".json")


def check_output_format(output: str) -> None:
    """Predictions are CSV + JSON; another suffix (p.xlsx) is refused, never silently renamed."""
    suffix = Path(output).suffix.lower()
    if suffix not in PREDICTION_FORMATS:
        raise ValueError(f"--output {output}: predictions are written as .csv or .json, not {suffix} "
                         "(name the file p.csv; spreadsheets open CSV)")


def check_same_task(model_task, data_task, checkpoint, data_name) -> None:
    """A checkpoint's outputs only mean something on data with the same kind of labels."""
    a, b = model_task, data_task
    if a.kind != b.kind or tuple(a.output_names) != tuple(b.output_names):
        raise ValueError(
            f"{checkpoint} predicts {a.kind} {list(a.output_names)}, but {data_name} has {b.kind} labels "
            f"{list(b.output_names)}; use a checkpoint trained on this kind of labels"
        )


def _check_folder_labels(module, d: Path, checkpoint) -> None:
    """An unlabelled folder is fine; a labelled one must carry the labels the model predicts."""
    from emofusion.data.folder import validate_folder

    spec, _, _ = validate_folder(d, deep=False)
    if spec.task is not None and spec.label_columns:
        check_same_task(module.task, spec.task, checkpoint, f"folder:{d}")


def _read_manifest(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return [dict(r) for r in csv.DictReader(f)]


def folder_samples(d: Path, modalities: list[str]) -> tuple[list[Sample], list[dict]]:
    """Samples of a folder dataset in manifest order, labels not needed (unlabelled extraction output)."""
    from emofusion.data.folder import _array_path, read_array
    from emofusion.data.format_utils import MODALITY_ALIASES, DataFormatError

    rows = _read_manifest(d / "manifest.csv")
    dirs = {}
    for sub in d.iterdir():
        if sub.is_dir() and sub.name.lower() in MODALITY_ALIASES:
            dirs[MODALITY_ALIASES[sub.name.lower()]] = sub
    missing = [m for m in modalities if m not in dirs]
    if missing:
        raise DataFormatError(f"{d}: the model needs modalities {missing}; the folder has {sorted(dirs)}")
    spans = {}
    if (d / "segments.csv").is_file():
        spans = {r["id"]: r for r in _read_manifest(d / "segments.csv")}
    samples, info = [], []
    for r in rows:
        sid = r["id"].strip()
        feats, ivs = {}, {}
        for m in modalities:
            p = _array_path(dirs[m], sid)
            if p is None:
                raise DataFormatError(f"{dirs[m]}/{sid}.npz: missing (id {sid!r}, modality {m})")
            x, iv = read_array(p)
            feats[m] = np.asarray(x, np.float32)
            if iv is not None:
                ivs[m] = iv
        samples.append(Sample(id=sid, features=feats, label=np.zeros(1, np.float32), intervals=ivs))
        s = spans.get(sid, {})
        info.append({"id": sid, "split": r.get("split", ""), "file": s.get("file", ""),
                     "start": _float(s.get("start")), "end": _float(s.get("end")), "text": s.get("text", "")})
    return samples, info


def _float(v):
    try:
        return round(float(v), 3)
    except (TypeError, ValueError):
        return None


def _dataset_dir(p: Path, view: str | None) -> Path | None:
    """The folder dataset inside an extraction output (``view``: segments/words) or the folder itself."""
    if (p / "manifest.csv").is_file():
        return p
    if (p / "extraction.json").is_file():
        for v in ([view] if view else []) + ["segments", "words"]:
            if (p / v / "manifest.csv").is_file():
                return p / v
    return None


def predict_samples(module, samples: list[Sample], batch_size: int = 32, hygiene: bool = True) -> np.ndarray:
    """Raw model outputs ``[N, K]`` for samples, in order (``hygiene``: apply the model's hygiene first)."""
    import torch

    from emofusion.data.collate import collate_samples
    from emofusion.data.hygiene import HygieneTransform

    hyg = module.hparams.get("hygiene_state")
    transform = HygieneTransform(hyg) if hyg and hygiene else None
    outs = []
    module.eval()
    with torch.no_grad():
        for i in range(0, len(samples), batch_size):
            chunk = [transform(s) if transform else s for s in samples[i : i + batch_size]]
            batch = collate_samples(chunk, module.modalities)
            outs.append(module(batch).prediction.detach().float().cpu().numpy().reshape(len(chunk), -1))
    return np.concatenate(outs) if outs else np.zeros((0, module.task.output_dim), np.float32)


def prediction_columns(task, p: np.ndarray) -> dict:
    row = {}
    if task.kind == "classification":
        prob = np.exp(p - p.max())
        prob /= prob.sum()
        row["predicted"] = task.output_names[int(p.argmax())]
        row.update({f"p_{n}": round(float(v), 5) for n, v in zip(task.output_names, prob)})
    elif task.kind == "multilabel_binary":
        row.update({f"p_{n}": round(float(1 / (1 + np.exp(-v))), 5) for n, v in zip(task.output_names, p)})
    else:
        row.update({n: round(float(v), 5) for n, v in zip(task.output_names, p)})
    return row


def predict(model, inp: str, split: str | None = None, features_dir: str | None = None, jobs: int | None = None,
            progress: bool = True, overrides: dict | None = None) -> list[dict]:
    """Rows of predictions (see module doc). ``model``: a path or a loaded EmoFusionModule."""
    from emofusion.features.media import MEDIA_EXTS
    from emofusion.pretrained import load_any, module_extraction

    module = load_any(model) if isinstance(model, (str, Path)) else model
    name = str(model) if isinstance(model, (str, Path)) else "the model"
    task = module.task
    p = Path(inp)
    extraction = module_extraction(module)
    view = (extraction or {}).get("view")
    samples, info = None, None
    is_media = (p.is_file() and p.suffix.lower() in MEDIA_EXTS) or (
        p.is_dir() and _dataset_dir(p, view) is None and any(
            f.suffix.lower() in MEDIA_EXTS for f in p.rglob("*") if f.is_file()))
    if is_media:
        if extraction is None:
            raise ValueError(f"{model}: this model was not trained on `emofusion extract` features (no "
                             "extraction settings in its run or model folder), so it cannot predict on media; "
                             "give a dataset instead")
        from emofusion.features.pipeline import ExtractSettings, extract

        out = Path(features_dir) if features_dir else Path(tempfile.mkdtemp(prefix="emofusion-predict-"))
        res = extract(p, out, ExtractSettings.from_dict(extraction["settings"]), jobs=jobs, progress=progress)
        if not res.ids:
            raise ValueError(f"{inp}: no media file could be extracted: {list(res.failed.values())[:3]}")
        samples, info = folder_samples(out / (view or "segments"), module.modalities)
        for r in info:
            r.pop("split", None)  # media have no split
    elif p.is_dir() and _dataset_dir(p, view) is not None:
        _check_folder_labels(module, _dataset_dir(p, view), name)
        samples, info = folder_samples(_dataset_dir(p, view), module.modalities)
    else:
        spec = inp[len("folder:"):] if inp.startswith("folder:") else None
        if spec and _dataset_dir(Path(spec), view) is not None:
            _check_folder_labels(module, _dataset_dir(Path(spec), view), name)
            samples, info = folder_samples(_dataset_dir(Path(spec), view), module.modalities)
        else:
            from emofusion.training.run import bundle_for_module

            bundle, _ = bundle_for_module(module, inp, overrides or {})
            check_same_task(task, bundle.task, name, bundle.name)
            split = split or "test"  # a labelled dataset: its test split unless told (as before)
            if task.sequence_labels:  # conversations: one row per utterance, through the evaluation loop
                from emofusion.training.run import evaluate_split

                rows = []
                for s in (["train", "val", "test"] if split == "all" else [split]):
                    _, out = evaluate_split(module, bundle, s, return_predictions=True)
                    preds = out["predictions"].reshape(len(out["ids"]), -1)
                    rows += [{"id": i, **({"split": s} if split == "all" else {}), **prediction_columns(task, o)}
                             for i, o in zip(out["ids"], preds)]
                return rows
            splits = ["train", "val", "test"] if split == "all" else [split]
            samples, info = [], []
            for s in splits:
                ds = bundle.split(s)  # hygiene already applied by bundle_for_module
                for i in range(len(ds)):
                    samples.append(ds[i])
                    info.append({"id": ds.ids[i], "split": s} if split == "all" else {"id": ds.ids[i]})
            outputs = predict_samples(module, samples, hygiene=False)
            return [{**meta, **prediction_columns(task, o)} for meta, o in zip(info, outputs)]
    if split not in (None, "all"):
        keep = [i for i, r in enumerate(info) if r.get("split") in (split, "valid" if split == "val" else split)]
        samples, info = [samples[i] for i in keep], [info[i] for i in keep]
    outputs = predict_samples(module, samples)
    return [{**meta, **prediction_columns(task, o)} for meta, o in zip(info, outputs)]


def write_predictions(rows: list[dict], output: str | Path) -> list[Path]:
    """``OUTPUT.csv`` and ``OUTPUT.json`` (the suffix of ``output`` is replaced)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    base = output.with_suffix("") if output.suffix in (".csv", ".json") else output
    csv_path, json_path = base.with_suffix(".csv"), base.with_suffix(".json")
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields or ["id"])
        w.writeheader()
        w.writerows(rows)
    json_path.write_text(json.dumps(rows, indent=1))
    return [csv_path, json_path]


def plot_over_time(rows: list[dict], task, path: str | Path, file: str | None = None) -> Path:
    """Emotions (or class probabilities) over time for one media file's segments."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get("start") is not None]
    if not rows:
        raise ValueError("no time spans to plot (predict on media files or `emofusion extract` output)")
    file = file or rows[0].get("file")
    rows = sorted((r for r in rows if r.get("file") == file), key=lambda r: r["start"])
    cols = ([f"p_{n}" for n in task.output_names] if task.kind in ("classification", "multilabel_binary")
            else list(task.output_names))
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for c in cols:
        xs, ys = [], []
        for r in rows:
            xs += [r["start"], r["end"]]
            ys += [r[c], r[c]]
        ax.plot(xs, ys, label=c.removeprefix("p_"), marker="o", markersize=3)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability" if task.kind in ("classification", "multilabel_binary") else "predicted")
    ax.set_title(Path(str(file)).name)
    ax.legend(fontsize=7, ncol=min(len(cols), 4))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def add_predict(sub):
    import argparse

    p = sub.add_parser(
        "predict", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="predictions for media files, unlabelled folders or a dataset (no labels needed)",
        description=__doc__.split("\n", 1)[1],
    )
    p.add_argument("checkpoint", help="a run directory, a .ckpt file or a model folder")
    p.add_argument("input", help="media file or folder, `emofusion extract` output, folder:PATH or a dataset name")
    p.add_argument("--split", help="all, train, val or test (default: every sample of media and folders, the "
                   "test split of a dataset name)")
    p.add_argument("--output", default="predictions", help="writes OUTPUT.csv and OUTPUT.json (default predictions)")
    p.add_argument("--plot", help="PNG: predictions over time for one media file (the first, or --plot-file)")
    p.add_argument("--plot-file", help="which file to plot (its path as in the 'file' column)")
    p.add_argument("--features-dir", help="keep the features extracted from media here (default: a temp folder)")
    p.add_argument("--jobs", type=int, help="extraction processes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", help="data.OPTION=value dataset options")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    from emofusion.pretrained import load_any

    overrides = {}
    if args.overrides:
        from emofusion.training.config import apply_overrides

        overrides = apply_overrides({}, args.overrides)["dataset_options"]
    check_output_format(args.output)
    module = load_any(args.checkpoint)
    rows = predict(module, args.input, args.split, args.features_dir, args.jobs, not args.quiet, overrides)
    paths = write_predictions(rows, args.output)
    print(f"wrote {len(rows)} predictions to {paths[0]} and {paths[1]}")
    if args.plot:
        print(f"plot: {plot_over_time(rows, module.task, args.plot, args.plot_file)}")
    return 0
