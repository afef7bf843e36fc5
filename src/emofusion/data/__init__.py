"""Data: the batch type, collation and sampling, alignment, the synthetic benchmark, file formats."""

# imported for their side effect: each module registers its datasets or file-format prefixes
from emofusion.data import (  # noqa: F401
    conversation,
    cremad,
    csd,
    folder,
    mfn,
    mmsa,
    mult,
    ravdess,
    synthetic,
    synthetic_conv,
    synthetic_protocols,
    trainval,
    wordslots,
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
