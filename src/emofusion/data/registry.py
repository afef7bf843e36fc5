"""Datasets by name. ``load_dataset("synthetic")``, ``load_dataset("mfn:../shared/data/mfn_h5/mmmo")``.

A name is either registered whole (``synthetic``) or is ``PREFIX:ARGUMENT`` where ``PREFIX`` is registered
(``mfn``, ``csd``, ...) and the argument (a path, a recipe, a variant) is passed to the loader as ``arg``.
Loaders return a :class:`~emofusion.data.dataset.DatasetBundle`.
"""

from __future__ import annotations

from emofusion.data.dataset import DatasetBundle
from emofusion.registry import Registry

DATASETS = Registry("dataset")
register_dataset = DATASETS.register


def list_datasets() -> list[str]:
    return DATASETS.names()


def parse_dataset_name(spec: str) -> tuple[str, str | None]:
    if spec in DATASETS:
        return spec, None
    if ":" in spec:
        prefix, arg = spec.split(":", 1)
        if prefix in DATASETS:
            return prefix, arg
    DATASETS.get(spec)  # raises with the list of known names
    raise AssertionError("unreachable")


def load_dataset(spec: str, **options) -> DatasetBundle:
    """Load a dataset by name; ``options`` are the loader's keyword options (size, seed, modalities ...)."""
    name, arg = parse_dataset_name(spec)
    loader = DATASETS.get(name)
    try:
        bundle = loader(arg, **options) if arg is not None else loader(**options)
    except TypeError as err:
        from emofusion.options import option_error

        friendly = option_error("dataset", spec, loader, err, "data.")
        if friendly is not None:
            raise friendly from None
        raise
    if not isinstance(bundle, DatasetBundle):
        raise TypeError(f"dataset loader {name!r} returned {type(bundle).__name__}, not a DatasetBundle")
    return bundle
