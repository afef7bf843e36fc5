"""In-memory and lazy datasets of :class:`Sample`, and the bundle a dataset loader returns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from torch.utils.data import Dataset

from emofusion.data.batch import Sample
from emofusion.tasks import TaskSpec


class SampleDataset(Dataset):
    """A list of samples, or ``n`` ids plus a loader that reads one sample on demand (lazy formats)."""

    def __init__(
        self,
        samples: Sequence[Sample] | None = None,
        *,
        ids: Sequence[str] | None = None,
        loader: Callable[[int], Sample] | None = None,
        lengths: Sequence[int] | None = None,
        name: str = "",
    ):
        if (samples is None) == (loader is None):
            raise ValueError("give either samples or (ids, loader)")
        self._samples = list(samples) if samples is not None else None
        self._loader = loader
        self._ids = [s.id for s in self._samples] if self._samples is not None else list(ids or [])
        self._lengths = None if lengths is None else np.asarray(lengths, dtype=np.int64)
        self.name = name
        # transforms applied at access time, in order (hygiene, perturbations)
        self.transforms: list[Callable[[Sample], Sample]] = []

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        return self._ids

    def raw(self, index: int) -> Sample:
        return self._samples[index] if self._samples is not None else self._loader(index)

    def __getitem__(self, index: int) -> Sample:
        sample = self.raw(index)
        for transform in self.transforms:
            sample = transform(sample)
        return sample

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def lengths(self) -> np.ndarray:
        """Total padded cost per sample (sum over modalities of T_m), used by the length-bucketing sampler."""
        if self._lengths is None:
            self._lengths = np.array(
                [sum(v.shape[0] for v in self.raw(i).features.values()) for i in range(len(self))],
                dtype=np.int64,
            )
        return self._lengths

    def materialized(self) -> SampleDataset:
        """The transformed samples computed once and held in memory (no transforms left to run), so an epoch
        does not redo the hygiene of every sample; a lazy dataset (read on demand) is returned as it is."""
        if self._samples is None or not self.transforms:
            return self
        return SampleDataset([self[i] for i in range(len(self))], name=self.name)

    def with_transform(self, transform: Callable[[Sample], Sample]) -> SampleDataset:
        """A view of the same samples with one more transform (the original is unchanged)."""
        view = SampleDataset.__new__(SampleDataset)
        view.__dict__.update(self.__dict__)
        view.transforms = [*self.transforms, transform]
        return view


class TimeAverage:
    """``Sample -> Sample``: each listed modality replaced by the mean of its steps, one step (an empty sequence
    stays empty, so an absent modality is still absent). For models that read those modalities only as that
    mean (``FusionModel.time_averaged_inputs``): collating one step instead of every frame. Picklable."""

    def __init__(self, modalities):
        self.modalities = tuple(modalities)

    def __call__(self, sample: Sample) -> Sample:
        feats = dict(sample.features)
        for m in self.modalities:
            x = feats.get(m)
            if x is not None and len(x) > 1:
                feats[m] = np.asarray(x, dtype=np.float32).mean(0, keepdims=True, dtype=np.float64).astype(np.float32)
        return replace(sample, features=feats)


@dataclass
class DatasetBundle:
    """What a dataset loader returns: three splits, the task, and the per-modality feature sizes."""

    name: str
    task: TaskSpec
    train: SampleDataset
    val: SampleDataset
    test: SampleDataset
    modality_dims: dict[str, int]
    # free-form provenance: which alignment was used, skipped samples, hygiene report ...
    info: dict = field(default_factory=dict)

    @classmethod
    def from_splits(cls, name: str, task: TaskSpec, splits: dict, modality_dims: dict, info: dict | None = None):
        """A bundle from ``{"train": [...], "val": [...], "test": [...]}`` lists of samples."""
        return cls(
            name=name,
            task=task,
            train=SampleDataset(splits["train"], name=f"{name}/train"),
            val=SampleDataset(splits["val"], name=f"{name}/val"),
            test=SampleDataset(splits["test"], name=f"{name}/test"),
            modality_dims=modality_dims,
            info=info or {},
        )

    @property
    def modalities(self) -> list[str]:
        return list(self.modality_dims)

    def split(self, name: str) -> SampleDataset:
        aliases = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
        if name not in aliases:
            raise KeyError(f"unknown split {name!r}; expected train, val or test")
        return getattr(self, aliases[name])
