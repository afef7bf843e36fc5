"""CMU-MultimodalSDK computational sequences (``.csd``, HDF5): lazy reader, writer, ``csd:FOLDER`` dataset.

Layout: ``/<root>/data/<video>/intervals [N, 2]`` and ``.../features [N, D...]`` plus
``/<root>/metadata/<key>`` variable-length strings (JSON in newer files, plain ``str()`` in older ones).
The first top-level group is the root. Entries are read on demand (MOSEI COVAREP is several GB).

Dataset ``csd:FOLDER``: one ``.csd`` per sequence; ``text=``, ``audio=``, ``visual=``, ``labels=`` name the
sequences (root name or file stem; recipes ``mosi``/``mosei``/``pom`` give the standard names). Samples
are the labelled segments: each modality's frames intersecting a label interval (SDK rules, no collapse),
unaligned inside it (``align="segment"``) or first averaged to the words (``align="words"``).
Folds: ``folds=FILE.json`` (``{"train": [...], "valid": [...], "test": [...]}`` video ids) or the
installed SDK's standard folds; never downloaded.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np

from emofusion.data.alignment import SDK_EPSILON, align_entry, align_sdk
from emofusion.data.batch import Sample
from emofusion.data.dataset import DatasetBundle, SampleDataset
from emofusion.data.format_utils import DataFormatError, as_bool, log, parse_modalities
from emofusion.data.registry import register_dataset
from emofusion.data.validation import (
    check_disjoint,
    check_task_labels,
    check_unique_ids,
    parse_range,
    require_numeric,
)
from emofusion.tasks import MOSEI_EMOTIONS, TaskSpec, emotion_intensity_task, sentiment_task

# the SDK's metadata template (its missing comma merges two keys; kept so the SDK finds every key)
METADATA_TEMPLATE = (
    "root name",
    "computational sequence description",
    "dimension namescomputational sequence version",
    "alignment compatible",
    "dataset name",
    "dataset version",
    "creator",
    "contact",
    "featureset bib citation",
    "dataset bib citation",
)
RECIPES = {
    "mosi": {
        "text": "CMU_MOSI_TimestampedWordVectors",
        "words": "CMU_MOSI_TimestampedWords",
        "audio": "CMU_MOSI_COVAREP",
        "visual": "CMU_MOSI_Visual_Facet_41",
        "labels": "CMU_MOSI_Opinion_Labels",
        "sdk_folds": "mmsdk.mmdatasdk.dataset.standard_datasets.CMU_MOSI.cmu_mosi_std_folds",
    },
    "mosei": {
        "text": "CMU_MOSEI_TimestampedWordVectors",
        "words": "CMU_MOSEI_TimestampedWords",
        "audio": "CMU_MOSEI_COVAREP",
        "visual": "CMU_MOSEI_VisualFacet42",
        "labels": "CMU_MOSEI_Labels",
        "sdk_folds": "mmsdk.mmdatasdk.dataset.standard_datasets.CMU_MOSEI.cmu_mosei_std_folds",
    },
    "pom": {
        "text": "POM_TimestampedWordVectors",
        "words": "POM_TimestampedWords",
        "audio": "POM_COVAREP",
        "visual": "POM_Facet_42",
        "labels": "POM_Labels",
        "sdk_folds": "mmsdk.mmdatasdk.dataset.standard_datasets.POM.pom_std_folds",
    },
}
# the SDK's CMU-MOSEI label columns: sentiment, then happy, sad, anger, surprise, disgust, fear
MOSEI_LABEL_COLUMNS = ("sentiment", "happy", "sad", "anger", "surprise", "disgust", "fear")


def _decode(value):
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size else ""
        return _decode(value)
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return str(value)


class ComputationalSequence(Mapping):
    """A lazily read ``.csd``: ``seq[video] -> (intervals, features)``; ``seq.keys()`` in stored order."""

    def __init__(self, path: str | Path, validate: bool = True):
        self.path = Path(path)
        self.validate = validate
        self._pid = None
        self._file = None
        f = self._handle()
        roots = list(f.keys())
        if not roots:
            raise DataFormatError(f"{self.path}: empty HDF5 file (no root group)")
        self.root_name = roots[0]
        root = f[self.root_name]
        if not isinstance(root, h5py.Group) or "data" not in root:
            raise DataFormatError(f"{self.path}: root {self.root_name!r} has no 'data' group")
        self._keys = list(root["data"].keys())
        self.metadata = {}
        if "metadata" in root:
            for k in root["metadata"].keys():
                try:
                    self.metadata[k] = _decode(root["metadata"][k][()])
                except Exception as e:  # noqa: BLE001  (a broken metadata key must not hide the data)
                    raise DataFormatError(f"{self.path}: metadata {k!r} unreadable ({e})") from e

    def _handle(self) -> h5py.File:
        # h5py handles must not cross a fork (DataLoader workers): reopen per process
        if self._file is None or self._pid != os.getpid():
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as e:
                raise DataFormatError(f"{self.path}: not a readable HDF5 computational sequence ({e})") from e
            self._pid = os.getpid()
        return self._file

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"] = None
        return state

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self):
        return iter(self._keys)

    def keys(self):
        return list(self._keys)

    def __contains__(self, key) -> bool:
        return key in self._keys  # list lookup is fine: called once per id by the loaders

    def __getitem__(self, video: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            group = self._handle()[self.root_name]["data"][video]
        except KeyError:
            raise KeyError(f"{self.path}: no video {video!r}") from None
        try:
            intervals = group["intervals"][()]
            features = group["features"][()]
        except (KeyError, OSError) as e:
            raise DataFormatError(
                f"{self.path}: video {video!r}: cannot read intervals/features ({e})"
            ) from e
        if self.validate:
            check_entry(intervals, features, f"{self.path}: video {video!r}")
        return intervals, features

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None


def check_entry(intervals: np.ndarray, features: np.ndarray, where: str) -> None:
    if intervals.ndim != 2 or intervals.shape[1] != 2:
        raise DataFormatError(f"{where}: intervals of shape {intervals.shape}, expected [N, 2]")
    if features.ndim < 2:
        raise DataFormatError(f"{where}: features of shape {features.shape}, expected at least 2-D [N, D]")
    if features.shape[0] != intervals.shape[0]:
        raise DataFormatError(f"{where}: {intervals.shape[0]} intervals but {features.shape[0]} feature rows")
    if intervals.dtype.kind not in "fiu":
        raise DataFormatError(f"{where}: intervals are not numeric ({intervals.dtype})")
    if intervals.size and not np.isfinite(intervals).all():
        raise DataFormatError(f"{where}: non-finite interval bounds")


def write_csd(
    path: str | Path,
    root_name: str,
    data: Mapping[str, tuple[np.ndarray, np.ndarray]],
    metadata: Mapping | None = None,
    compression: str | None = None,
) -> Path:
    """Write a computational sequence the SDK can read (every template metadata key, JSON-encoded)."""
    path = Path(path)
    meta = {k: None for k in METADATA_TEMPLATE}
    meta.update(metadata or {})
    meta["root name"] = root_name
    meta.setdefault("alignment compatible", True)
    tmp = path.with_suffix(path.suffix + ".partial")
    with h5py.File(tmp, "w") as f:
        root = f.create_group(root_name)
        group = root.create_group("data")
        for vid, (intervals, features) in data.items():
            intervals, features = np.asarray(intervals), np.asarray(features)
            if features.dtype.kind == "U":  # h5py stores bytes, not numpy unicode
                features = np.char.encode(features, "utf-8")
            check_entry(intervals, features, f"{path}: video {vid!r}")
            g = group.create_group(vid)
            g.create_dataset("features", data=features, compression=compression)
            g.create_dataset("intervals", data=intervals, compression=compression)
        mg = root.create_group("metadata")
        for k, v in meta.items():
            ds = mg.create_dataset(k, (1,), dtype=h5py.special_dtype(vlen=str))
            ds[0] = json.dumps(v, default=str)
    tmp.replace(path)
    return path


def align_files(
    reference: str | Path,
    others: list[str | Path],
    out_dir: str | Path,
    mode: str = "sdk",
    epsilon: float = SDK_EPSILON,
    fill_missing: bool = False,
    prefix_drop: bool = False,
) -> dict:
    """Align ``.csd`` files to a reference and write one aligned ``.csd`` per input (same root names)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ref = ComputationalSequence(reference)
    seqs = {}
    for p in others:
        s = ComputationalSequence(p)
        if s.root_name in seqs or s.root_name == ref.root_name:
            raise DataFormatError(f"{p}: root name {s.root_name!r} appears twice among the inputs")
        seqs[s.root_name] = s
    a_ref, a_out, report = align_sdk(
        ref, seqs, epsilon=epsilon, mode=mode, fill_missing=fill_missing, prefix_drop=prefix_drop
    )
    written = [write_csd(out_dir / Path(reference).name, ref.root_name, a_ref, ref.metadata)]
    for p, (name, seq) in zip(others, seqs.items()):
        written.append(write_csd(out_dir / Path(p).name, name, a_out[name], seq.metadata))
    report["written"] = [str(w) for w in written]
    report["entries"] = {ref.root_name: len(a_ref), **{n: len(v) for n, v in a_out.items()}}
    return report


# ------------------------------------------------------------------------------------------------
# csd:FOLDER dataset
# ------------------------------------------------------------------------------------------------


def _find_sequence(folder: Path, name: str) -> Path:
    for cand in (folder / name, folder / f"{name}.csd"):
        if cand.is_file():
            return cand
    for p in sorted(folder.glob("*.csd")):
        try:
            with h5py.File(p, "r") as f:
                if name in f:
                    return p
        except OSError:
            continue
    raise FileNotFoundError(f"csd: no sequence {name!r} in {folder} (looked for {name}.csd and root names)")


def _load_folds(folds, recipe: dict | None) -> dict[str, list[str]]:
    if folds:
        data = json.loads(Path(folds).read_text()) if not isinstance(folds, Mapping) else folds
        out = {}
        for split, keys in (("train", ("train",)), ("val", ("valid", "val")), ("test", ("test",))):
            key = next((k for k in keys if k in data), None)
            if key is None:
                raise DataFormatError(f"folds {folds}: no {'/'.join(keys)} list")
            out[split] = [str(x) for x in data[key]]
            check_unique_ids(out[split], f"folds {folds}: {key}")
        check_disjoint(out, f"folds {folds}")
        return out
    if recipe and recipe.get("sdk_folds"):
        try:
            import importlib

            mod = importlib.import_module(recipe["sdk_folds"])
            return {
                "train": list(mod.standard_train_fold),
                "val": list(mod.standard_valid_fold),
                "test": list(mod.standard_test_fold),
            }
        except ImportError:
            pass
    raise DataFormatError(
        "csd: no folds; pass folds=FILE.json ({'train': [...], 'valid': [...], 'test': [...]} video ids) "
        "or install the CMU-MultimodalSDK for the standard folds"
    )


@register_dataset("csd", "CMU-MultimodalSDK computational sequences: 'csd:FOLDER' (+ recipe=mosi|mosei|pom)")
def load_csd(
    folder: str,
    recipe: str | None = None,
    text: str | None = None,
    audio: str | None = None,
    visual: str | None = None,
    labels: str | None = None,
    folds=None,
    modalities=None,
    target: str = "sentiment",
    align: str = "segment",
    epsilon: float = SDK_EPSILON,
    lazy=True,
    label_range=None,
    **options,
) -> DatasetBundle:
    """Labelled segments of computational sequences.

    ``target``: ``sentiment`` (label column 0), ``emotions`` (MOSEI's 6 intensities) or ``all`` (every label
    column as multi-regression, e.g. POM traits). Labels are checked (finite, inside the task's range;
    ``label_range=[LO,HI]`` sets another range) and the folds must not share a video.
    """
    if options:
        raise TypeError(f"csd: unknown options {sorted(options)}")
    base = Path(folder)
    if recipe is None:
        stems = " ".join(p.stem for p in base.glob("*.csd"))
        recipe = next((r for r, v in RECIPES.items() if v["labels"] in stems), None)
    rec = RECIPES.get(recipe) if recipe else None
    if recipe and rec is None:
        raise ValueError(f"csd: unknown recipe {recipe!r}; known: {sorted(RECIPES)}")
    names = {"text": text, "audio": audio, "visual": visual}
    for m in names:
        if names[m] is None and rec is not None:
            names[m] = rec[m]
    labels = labels or (rec["labels"] if rec else None)
    if labels is None:
        raise ValueError("csd: name the label sequence (labels=...) or give a recipe")
    wanted = parse_modalities(modalities) or [m for m in names if names[m] is not None]
    seqs = {}
    for m in wanted:
        if names.get(m) is None:
            raise ValueError(f"csd: no sequence named for modality {m!r}; pass {m}=NAME")
        seqs[m] = ComputationalSequence(_find_sequence(base, names[m]))
    lab = ComputationalSequence(_find_sequence(base, labels))
    fold = _load_folds(folds, rec)
    if align not in ("segment", "words"):
        raise ValueError(f"csd: align must be 'segment' or 'words', got {align!r}")
    if align == "words" and "text" not in seqs:
        raise ValueError("csd: align='words' needs the text (word vector) sequence")
    # segments: (video, label row) for videos present in labels and every modality (exact ids)
    present = set(lab.keys())
    dropped = {}  # counted in data_report.json ("dropped"): labelled videos a modality does not have
    for m, s in seqs.items():
        missing = present - set(s.keys())
        if missing:
            log.warning("csd: %d labelled videos missing from %s (%s): skipped", len(missing), m, s.path)
            dropped[f"videos_missing_from_{m}"] = {"count": len(missing), "file": str(s.path),
                                                   "examples": sorted(missing)[:5]}
        present &= set(s.keys())
    check_disjoint(fold, "csd: folds")  # also the SDK's own folds
    index = {"train": [], "val": [], "test": []}
    where = {v: split for split, vids in fold.items() for v in vids}
    label_dim = None
    if lab.keys():
        label_dim = lab[lab.keys()[0]][1].reshape(len(lab[lab.keys()[0]][0]), -1).shape[1]
    task, pick = _csd_task(label_dim, target, recipe)
    rng = parse_range(label_range, f"csd: {folder}")
    if rng is not None:
        task = replace(task, label_range=rng, extra={})
    for vid in lab.keys():
        if vid not in present or vid not in where:
            continue
        iv, ft = lab[vid]
        # labels are small: every labelled segment is checked here, before anything trains on it
        where_lab = f"{lab.path}: video {vid!r}"
        ft = require_numeric(ft, where_lab, "labels").reshape(len(iv), -1)
        if ft.shape[1] != label_dim:
            raise DataFormatError(f"{where_lab}: {ft.shape[1]} label columns, other videos have {label_dim}")
        rows = [i for i in range(len(iv)) if not abs(iv[i, 0] - iv[i, 1]) < epsilon]
        check_task_labels(ft[rows][:, pick], task, where_lab, [f"{vid}[{i}]" for i in rows])
        index[where[vid]].extend((vid, i) for i in rows)
    reader = _SegmentReader(seqs, lab, epsilon, align, pick)
    dims = {}
    for m, s in seqs.items():
        k0 = next(k for k in s.keys() if k in present) if present else None
        dims[m] = int(np.prod(s[k0][1].shape[1:])) if k0 else 0
    splits = {}
    for split, items in index.items():
        ids = [f"{v}[{i}]" for v, i in items]
        if as_bool(lazy):
            splits[split] = SampleDataset(ids=ids, loader=_IndexLoader(reader, items), name=f"csd/{split}")
        else:
            splits[split] = SampleDataset([reader(v, i) for v, i in items], name=f"csd/{split}")
    info = {
        "format": "csd",
        "folder": str(base),
        "recipe": recipe,
        "align": align,
        "epsilon": epsilon,
        "sequences": {m: str(s.path) for m, s in seqs.items()},
        "labels": str(lab.path),
        "dropped": dropped,
    }
    return DatasetBundle(f"csd:{folder}", task, splits["train"], splits["val"], splits["test"], dims, info)


def _csd_task(label_dim, target, recipe) -> tuple[TaskSpec, np.ndarray]:
    if target == "sentiment":
        return sentiment_task(), np.array([0])
    if target == "emotions":
        if label_dim != 7:
            raise DataFormatError(f"csd: target='emotions' needs the 7-column MOSEI labels, got {label_dim}")
        return emotion_intensity_task(), np.array([MOSEI_LABEL_COLUMNS.index(e) for e in MOSEI_EMOTIONS])
    if target == "all":  # e.g. POM's speaker traits: every label column, multi-regression
        if label_dim == 7:  # MOSEI: sentiment [-3, 3], then six intensities [0, 3]
            extra = {"ranges": [[-3.0, 3.0]] + [[0.0, 3.0]] * 6}
            return TaskSpec("multi_regression", MOSEI_LABEL_COLUMNS, extra=extra), np.arange(7)
        names = tuple(f"label{i}" for i in range(label_dim or 0))
        return TaskSpec("multi_regression", names), np.arange(label_dim or 0)
    raise ValueError(f"csd: target must be 'sentiment', 'emotions' or 'all', got {target!r}")


class _SegmentReader:
    """Reads one labelled segment; keeps the last few videos' raw arrays (segments come video by video)."""

    def __init__(self, seqs, labels, epsilon, align, pick, cache=4):
        self.seqs, self.labels, self.epsilon, self.align, self.pick = seqs, labels, epsilon, align, pick
        self._cache: OrderedDict = OrderedDict()
        self._size = cache

    def _video(self, vid):
        if vid in self._cache:
            self._cache.move_to_end(vid)
            return self._cache[vid]
        data = {}
        for m, s in self.seqs.items():
            iv, ft = s[vid]
            order = np.argsort(iv[:, 0], kind="stable")
            # reshape with the frame size, not -1: a video with 0 frames has shape (0, D...)
            data[m] = (iv[order], ft[order].reshape(len(iv), int(np.prod(ft.shape[1:]))))
        data["_labels"] = self.labels[vid]
        self._cache[vid] = data
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return data

    def __call__(self, vid: str, row: int) -> Sample:
        data = self._video(vid)
        l_iv, l_ft = data["_labels"]
        seg = l_iv[row : row + 1]
        feats, intervals = {}, {}
        for m in self.seqs:
            iv, ft = data[m]
            rows, ivs, fts = align_entry(seg, iv, ft, self.epsilon, collapse=None, presorted=True)
            d = ft.shape[1]
            intervals[m] = ivs[0] if len(rows) else np.zeros((0, 2))
            feats[m] = fts[0] if len(rows) else np.zeros((0, d), ft.dtype)
        if self.align == "words":
            ref = intervals["text"]
            for m in feats:
                if m != "text":
                    r, ivs, fts = align_entry(ref, intervals[m], feats[m], self.epsilon, ("mean",), True)
                    full = np.zeros((len(ref), feats[m].shape[1]), np.float64)
                    for i, f in zip(r, fts):
                        full[i] = f[0]
                    feats[m], intervals[m] = full, ref
        label = np.asarray(l_ft[row], dtype=np.float32).reshape(-1)[self.pick]
        return Sample(
            id=f"{vid}[{row}]",
            features={m: np.asarray(v, np.float32) for m, v in feats.items()},
            label=label,
            speaker=vid,
            intervals=intervals,
        )


class _IndexLoader:
    def __init__(self, reader, items):
        self.reader, self.items = reader, items

    def __call__(self, index: int) -> Sample:
        vid, row = self.items[index]
        return self.reader(vid, row)
