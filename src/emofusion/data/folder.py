"""Bring your own data: ``folder:PATH``, validated by ``emofusion datasets check PATH``.

Layout (documented in docs/formats.md)::

    PATH/manifest.csv            id, split (train|val|valid|test), label column(s), optional speaker, conversation
    PATH/dataset.json            optional: {"task": ..., "labels": [...], "classes": [...], "label_range": [lo, hi]}
    PATH/<modality>/<id>.npy     [T, D] float features (modality folders: text, audio, visual or aliases)
    PATH/<modality>/<id>.npz     or: "features" [T, D] plus optional "intervals" [T, 2] or "timestamps" [T] (s)

Without ``dataset.json`` every manifest column other than id/split/speaker/conversation is a label: one
non-numeric column = classification (classes sorted), one numeric = sentiment (range from the data),
several numeric = multi-regression. Arrays are read on demand.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emofusion.data.batch import Sample
from emofusion.data.dataset import DatasetBundle, SampleDataset
from emofusion.data.format_utils import MODALITY_ALIASES, DataFormatError, parse_modalities
from emofusion.data.registry import register_dataset
from emofusion.tasks import TASK_KINDS, TaskSpec

RESERVED = ("id", "split", "speaker", "conversation")
SPLIT_NAMES = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
}


@dataclass
class FolderSpec:
    root: Path
    rows: list[dict] = field(default_factory=list)
    modality_dirs: dict[str, Path] = field(default_factory=dict)
    task: TaskSpec | None = None
    label_columns: list[str] = field(default_factory=list)
    classes: list[str] | None = None
    lines: list[int] = field(default_factory=list)  # manifest line of each row (problems name it)
    allow_empty: bool = False  # dataset.json "allow_empty": a modality may have 0 steps (no face in a clip)


def _array_path(d: Path, sid: str) -> Path | None:
    for ext in (".npy", ".npz"):
        p = d / f"{sid}{ext}"
        if p.is_file():
            return p
    return None


def read_array(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``(features [T, D], intervals [T, 2] or None)`` from a ``.npy``/``.npz`` file."""
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False), None
        with np.load(path, allow_pickle=False) as z:
            if "features" not in z:
                raise DataFormatError(f"{path}: .npz without a 'features' array (it has {list(z.keys())})")
            feats = z["features"]
            if "intervals" in z:
                return feats, z["intervals"]
            if "timestamps" in z:
                t = np.asarray(z["timestamps"], np.float64).reshape(-1)
                step = np.diff(t).mean() if len(t) > 1 else 0.0
                return feats, np.stack([t, np.append(t[1:], t[-1] + step) if len(t) else t], 1)
            return feats, None
    except DataFormatError:
        raise
    except Exception as e:  # noqa: BLE001  (truncated/corrupt files: name the file)
        raise DataFormatError(f"{path}: unreadable array ({type(e).__name__}: {e})") from e


def _scan(root: Path, problems: list[str]) -> FolderSpec:
    spec = FolderSpec(root)
    manifest = root / "manifest.csv"
    if not root.is_dir():
        problems.append(f"{root}: not a folder")
        return spec
    if not manifest.is_file():
        problems.append(f"{manifest}: missing (need columns id, split and labels)")
        return spec
    try:
        with open(manifest, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            rows = [(reader.line_num, dict(r)) for r in reader]
        spec.rows = []
        for line, r in rows:
            # a short row has None for its missing fields, a long one its extras under the key None
            if None in r or any(v is None for v in r.values()):
                n = len([v for k, v in r.items() if k is not None and v is not None]) + len(r.get(None) or [])
                problems.append(
                    f"{manifest}:{line}: {n} fields, the header has {len(columns)} ({', '.join(columns)})"
                )
            else:
                spec.rows.append(r)
        spec.lines = [line for line, r in rows if None not in r and all(v is not None for v in r.values())]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        problems.append(f"{manifest}: unreadable ({e})")
        return spec
    for c in ("id", "split"):
        if c not in columns:
            problems.append(f"{manifest}: no {c!r} column (columns: {columns})")
    meta = {}
    if (root / "dataset.json").is_file():
        try:
            meta = json.loads((root / "dataset.json").read_text())
        except (OSError, ValueError) as e:
            problems.append(f"{root / 'dataset.json'}: invalid JSON ({e})")
    spec.allow_empty = bool(meta.get("allow_empty", False))
    spec.label_columns = list(meta.get("labels") or [c for c in columns if c not in RESERVED])
    missing_cols = [c for c in spec.label_columns if c not in columns]
    if missing_cols:
        problems.append(f"{manifest}: label columns {missing_cols} named in dataset.json are missing")
    if not spec.label_columns:
        problems.append(f"{manifest}: no label column")
    seen: dict[str, int] = {}
    for line, r in zip(spec.lines, spec.rows):
        sid = (r.get("id") or "").strip()
        if not sid:
            problems.append(f"{manifest}:{line}: empty id")
        elif sid in seen:
            problems.append(f"{manifest}:{line}: duplicated id {sid!r} (first on line {seen[sid]})")
        else:
            seen[sid] = line
        if "split" in columns and (r.get("split") or "").strip().lower() not in SPLIT_NAMES:
            problems.append(f"{manifest}:{line}: id {sid!r}: split {r.get('split')!r} is not train/val/test")
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if d.name.lower() in MODALITY_ALIASES:
            m = MODALITY_ALIASES[d.name.lower()]
            if m in spec.modality_dirs:
                problems.append(f"{d}: a second folder for modality {m!r} ({spec.modality_dirs[m].name})")
            spec.modality_dirs[m] = d
    if not spec.modality_dirs:
        problems.append(f"{root}: no modality folder (text/, audio/, visual/ or aliases)")
    if spec.label_columns and not missing_cols and spec.rows:
        _infer_task(spec, meta, problems)
    return spec


def _infer_task(spec: FolderSpec, meta: dict, problems: list[str]) -> None:
    values = {c: [r.get(c, "") for r in spec.rows] for c in spec.label_columns}

    def numeric(c):
        try:
            return np.array([float(v) for v in values[c]])
        except ValueError:
            return None

    kind = meta.get("task")
    if kind is not None and kind not in TASK_KINDS:
        problems.append(f"dataset.json: task {kind!r} is not one of {TASK_KINDS}")
        return
    nums = {c: numeric(c) for c in spec.label_columns}
    if kind is None:
        if len(spec.label_columns) == 1 and nums[spec.label_columns[0]] is None:
            kind = "classification"
        else:
            kind = "sentiment" if len(spec.label_columns) == 1 else "multi_regression"
    if kind == "classification":
        if len(spec.label_columns) != 1:
            problems.append(f"classification needs one label column, got {spec.label_columns}")
            return
        col = spec.label_columns[0]
        spec.classes = [str(c) for c in meta.get("classes") or sorted(set(values[col]))]
        unknown = sorted(set(values[col]) - set(spec.classes))
        if unknown:
            problems.append(
                f"manifest column {col!r}: values {unknown[:5]} are not among classes {spec.classes}"
            )
        spec.task = TaskSpec("classification", tuple(spec.classes))
        return
    for c, v in nums.items():
        if v is None:
            line, bad = next((ln, x) for ln, x in zip(spec.lines, values[c]) if not _is_float(x))
            problems.append(
                f"{spec.root / 'manifest.csv'}:{line}: column {c!r}: non-numeric label {bad!r} for a {kind} task"
            )
        elif not np.isfinite(v).all():
            for line, r, x in zip(spec.lines, spec.rows, v):
                if not np.isfinite(x):
                    problems.append(
                        f"{spec.root / 'manifest.csv'}:{line}: id {(r.get('id') or '').strip()!r}: column "
                        f"{c!r}: non-finite label {x}"
                    )
    if any(v is None or not np.isfinite(v).all() for v in nums.values()):
        return
    allv = np.concatenate([nums[c] for c in spec.label_columns])
    rng = tuple(meta.get("label_range") or (float(allv.min()), float(allv.max())))
    if meta.get("label_range") and kind != "multilabel_binary":
        lo, hi = (float(v) for v in rng)
        for c in spec.label_columns:
            for line, r, v in zip(spec.lines, spec.rows, nums[c]):
                if not lo <= v <= hi:
                    problems.append(
                        f"{spec.root / 'manifest.csv'}:{line}: id {(r.get('id') or '').strip()!r} label {c!r} = "
                        f"{v:g} is outside label_range [{lo:g}, {hi:g}] of dataset.json"
                    )
    if kind == "multilabel_binary" and not np.isin(allv, (0, 1)).all():
        problems.append("multilabel_binary labels must be 0 or 1")
    spec.task = TaskSpec(
        kind, tuple(spec.label_columns), label_range=None if kind == "multilabel_binary" else rng
    )


def _is_float(x) -> bool:
    try:
        float(x)
        return True
    except ValueError:
        return False


def validate_folder(path: str | Path, deep: bool = True) -> tuple[FolderSpec, list[str], dict[str, int]]:
    """Every problem of a bring-your-own-data folder at once; ``deep`` also opens every array."""
    problems: list[str] = []
    spec = _scan(Path(path), problems)
    dims: dict[str, int] = {}
    ids = {(r.get("id") or "").strip() for r in spec.rows}
    for m, d in spec.modality_dirs.items():
        for r in spec.rows:
            sid = (r.get("id") or "").strip()
            p = _array_path(d, sid) if sid else None
            if p is None:
                if sid:
                    problems.append(f"{d}/{sid}.npy: missing (id {sid!r}, modality {m})")
                continue
            if not deep:
                continue
            try:
                x, iv = read_array(p)
            except DataFormatError as e:
                problems.append(str(e))
                continue
            if x.ndim != 2:
                problems.append(f"{p}: shape {x.shape}, expected [T, D]")
                continue
            if x.dtype.kind not in "fiu":
                problems.append(f"{p}: dtype {x.dtype} is not numeric")
                continue
            if dims.setdefault(m, x.shape[1]) != x.shape[1]:
                problems.append(f"{p}: feature size {x.shape[1]}, other {m} files have {dims[m]}")
            if x.size and not np.isfinite(x).all():
                problems.append(f"{p}: {int((~np.isfinite(x)).sum())} NaN/inf values")
            if x.shape[0] == 0 and not spec.allow_empty:
                problems.append(f"{p}: empty sequence (0 steps)")
            if iv is not None:
                if iv.shape != (x.shape[0], 2):
                    problems.append(f"{p}: intervals of shape {iv.shape}, expected [{x.shape[0]}, 2]")
                elif iv.size and (not np.isfinite(iv).all() or (iv[:, 1] < iv[:, 0]).any()):
                    problems.append(f"{p}: intervals non-finite or ending before they start")
        orphans = sorted({f.stem for f in d.iterdir() if f.suffix in (".npy", ".npz")} - ids)
        if orphans:
            problems.append(f"{d}: {len(orphans)} files with no manifest row, e.g. {orphans[:3]}")
    return spec, problems, dims


def check_folder_command(path: str) -> int:
    """``emofusion datasets check PATH``: print every problem; exit code 0 when the folder is valid."""
    spec, problems, dims = validate_folder(path)
    if problems:
        print(f"{path}: {len(problems)} problem(s):")
        for p in problems:
            print(f"  - {p}")
        return 1
    counts = {}
    for r in spec.rows:
        s = SPLIT_NAMES[r["split"].strip().lower()]
        counts[s] = counts.get(s, 0) + 1
    print(
        f"{path}: OK: {len(spec.rows)} samples {counts}, modalities {dims}, task {spec.task.kind} {spec.task.output_names}"
    )
    return 0


@register_dataset(
    "folder", "bring-your-own-data folder (manifest.csv + per-modality .npy/.npz): 'folder:PATH'"
)
def load_folder(path: str, modalities=None, validate=True, **options) -> DatasetBundle:
    if options:
        raise TypeError(f"folder: unknown options {sorted(options)}")
    spec, problems, dims = validate_folder(path, deep=bool(validate) and str(validate).lower() != "false")
    if problems:
        shown = "\n  - ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DataFormatError(f"folder {path}: {len(problems)} problem(s):\n  - {shown}{more}")
    wanted = parse_modalities(modalities) or [
        m for m in ("text", "audio", "visual") if m in spec.modality_dirs
    ]
    absent = [m for m in wanted if m not in spec.modality_dirs]
    if absent:
        raise DataFormatError(
            f"folder {path}: no folder for modalities {absent} (has {sorted(spec.modality_dirs)})"
        )
    for m in wanted:
        if m not in dims:  # validate=False: read one file for the size
            x, _ = read_array(_array_path(spec.modality_dirs[m], spec.rows[0]["id"].strip()))
            dims[m] = int(x.shape[1])
    loader = _RowLoader(spec, wanted)
    splits = {"train": [], "val": [], "test": []}
    for r in spec.rows:
        splits[SPLIT_NAMES[r["split"].strip().lower()]].append(r)
    out = {}
    for s, rows in splits.items():
        out[s] = SampleDataset(
            ids=[r["id"].strip() for r in rows], loader=_SplitLoader(loader, rows), name=f"folder/{s}"
        )
    info = {"format": "folder", "path": str(path), "label_columns": spec.label_columns}
    return DatasetBundle(
        f"folder:{path}", spec.task, out["train"], out["val"], out["test"], {m: dims[m] for m in wanted}, info
    )


class _RowLoader:
    def __init__(self, spec: FolderSpec, modalities):
        self.spec, self.modalities = spec, modalities

    def __call__(self, row: dict) -> Sample:
        sid = row["id"].strip()
        feats, intervals = {}, {}
        for m in self.modalities:
            x, iv = read_array(_array_path(self.spec.modality_dirs[m], sid))
            feats[m] = np.asarray(x, np.float32)
            if iv is not None:
                intervals[m] = np.asarray(iv, np.float64)
        task = self.spec.task
        if task.kind == "classification":
            label = np.int64(self.spec.classes.index(row[self.spec.label_columns[0]]))
        else:
            label = np.array([float(row[c]) for c in self.spec.label_columns], np.float32)
        return Sample(
            id=sid,
            features=feats,
            label=label,
            speaker=(row.get("speaker") or None),
            conversation=(row.get("conversation") or None),
            intervals=intervals,
        )


class _SplitLoader:
    def __init__(self, loader, rows):
        self.loader, self.rows = loader, rows

    def __call__(self, index: int) -> Sample:
        return self.loader(self.rows[index])
