"""Data: the batch type, collation and sampling, alignment, the synthetic benchmark, file formats."""

from emofusion.data import (  # noqa: F401  (register datasets and file formats)
    conversation,
    csd,
    folder,
    mfn,
    mmsa,
    mult,
    synthetic,
    synthetic_conv,  # noqa: F401
    synthetic_protocols,  # noqa: F401
    wordslots,  # noqa: F401
)
from emofusion.data.batch import Batch, ModalityTensor, Sample
from emofusion.data.dataset import DatasetBundle, SampleDataset
from emofusion.data.registry import DATASETS, list_datasets, load_dataset, register_dataset

__all__ = [
    "Batch",
    "ModalityTensor",
    "Sample",
    "DatasetBundle",
    "SampleDataset",
    "DATASETS",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]
