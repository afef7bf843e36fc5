"""``trainval:INNER``: the refit view of a dataset (train = train + validation, same test).

Paper 002 (§5): "we merged validation and train set into one and re-learned the model with it; testing ...
only on the test set". The validation split is kept as it is so the engine can still run its checks, but it
is part of the training data here: its metrics are training metrics, never a selection criterion (the refit
protocol, :func:`emofusion.evaluation.suites.paper002.refit_runner`, trains for a fixed number of steps).
No sample moves into or out of the test split.
"""

from __future__ import annotations

from dataclasses import replace

from emofusion.data.dataset import DatasetBundle, SampleDataset
from emofusion.data.registry import load_dataset, register_dataset


@register_dataset("trainval", "refit view 'trainval:INNER': train = INNER's train + validation, test unchanged")
def load_trainval(inner: str, **options) -> DatasetBundle:
    bundle = load_dataset(inner, **options)
    train_ids = {s.id for s in bundle.train}
    clash = [s.id for s in bundle.val if s.id in train_ids]
    if clash:
        raise ValueError(f"trainval:{inner}: validation samples {clash[:5]} share ids with training samples")
    merged = SampleDataset([*bundle.train, *bundle.val], name=f"trainval:{bundle.name}/train")
    return replace(
        bundle,
        name=f"trainval:{bundle.name}",
        train=merged,
        info={**bundle.info, "refit": "train = train + val (val is seen in training)",
              "n_train_original": len(bundle.train), "n_val": len(bundle.val)},
    )
