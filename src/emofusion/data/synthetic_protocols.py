"""Task views of the synthetic benchmark for paper 001's other protocols (RMFN, Tables 1/3/4/5).

``synthetic-p001:binary``: IEMOCAP-style per-emotion binary presence (happy, sad, anger, neutral), where an
emotion is present when its synthetic intensity is > 0 and "neutral" means no emotion at all.
``synthetic-p001:traits``: POM-style speaker traits, deterministic functions of the synthetic emotion
intensities (three traits on [1, 7], scored with A7, one on [1, 5], scored with A5). They are stand-ins that
exercise the task protocol, not a model of real traits.

Both are word-aligned by default (``aligned=False`` gives the unaligned streams); other options go to
``synthetic`` (n_train, seed, noise, ...).
"""

from __future__ import annotations

import numpy as np

from emofusion.data.dataset import DatasetBundle, SampleDataset
from emofusion.data.format_utils import as_bool
from emofusion.data.registry import register_dataset
from emofusion.data.synthetic import load_synthetic
from emofusion.tasks import MOSEI_EMOTIONS, TaskSpec

BINARY_CLASSES = ("happy", "sad", "anger", "neutral")
# trait -> (range, offset, weights over the 6 emotion intensities)
TRAITS = {
    "confident": ((1.0, 7.0), 4.0, {"happy": 1.2, "fear": -1.5, "sad": -0.8}),
    "passionate": ((1.0, 7.0), 2.5, {"anger": 1.2, "happy": 1.0, "surprise": 1.0}),
    "persuasive": ((1.0, 7.0), 4.0, {"happy": 0.8, "disgust": -1.2, "anger": 0.5, "fear": -0.6}),
    "relaxed": ((1.0, 5.0), 3.5, {"happy": 0.6, "anger": -1.0, "fear": -1.0}),
}


def _binary(y: np.ndarray) -> np.ndarray:
    e = dict(zip(MOSEI_EMOTIONS, y))
    present = [e["happy"] > 0, e["sad"] > 0, e["anger"] > 0, not np.any(y > 0)]
    return np.asarray(present, dtype=np.float32)


def _traits(y: np.ndarray) -> np.ndarray:
    e = dict(zip(MOSEI_EMOTIONS, y))
    out = []
    for (low, high), offset, weights in TRAITS.values():
        out.append(np.clip(offset + sum(w * e[k] for k, w in weights.items()), low, high))
    return np.asarray(out, dtype=np.float32)


@register_dataset(
    "synthetic-p001",
    "paper 001 protocol views of the synthetic benchmark: 'synthetic-p001:binary' (IEMOCAP-style per-emotion "
    "binary), 'synthetic-p001:traits' (POM-style traits)",
)
def load_synthetic_p001(variant: str | None = None, aligned=True, **options) -> DatasetBundle:
    if variant not in ("binary", "traits"):
        raise ValueError(
            f"synthetic-p001: unknown view {variant!r}; use 'synthetic-p001:binary' or ':traits'"
        )
    base = load_synthetic("aligned" if as_bool(aligned) else None, target="emotions", **options)
    if variant == "binary":
        task = TaskSpec("multilabel_binary", BINARY_CLASSES)
        relabel = _binary
    else:
        ranges = [r for r, _, _ in TRAITS.values()]
        task = TaskSpec("multi_regression", tuple(TRAITS), label_range=(1.0, 7.0), extra={"ranges": ranges})
        relabel = _traits
    splits = {}
    for split in ("train", "val", "test"):
        samples = [base.split(split)[i] for i in range(len(base.split(split)))]
        for x in samples:
            x.label = relabel(np.asarray(x.label, dtype=np.float64))
        splits[split] = SampleDataset(samples, name=f"synthetic-p001:{variant}/{split}")
    return DatasetBundle(
        name=f"synthetic-p001:{variant}",
        task=task,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        modality_dims=dict(base.modality_dims),
        info={**base.info, "view": variant},
    )
