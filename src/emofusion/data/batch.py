"""The one batch type every model consumes.

A :class:`Sample` is one segment (or, for conversational datasets, one conversation whose "time steps" are
utterances). Each modality keeps its own length and rate: unaligned is the normal case, aligned is the
special case where all lengths agree. :class:`Batch` holds, per modality, padded values ``[B, T_m, D_m]``
and a boolean mask ``[B, T_m]`` (True = real step); lengths are ``mask.sum(1)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch


@dataclass
class Sample:
    id: str
    features: dict[str, np.ndarray]  # modality -> [T_m, D_m] float32
    label: np.ndarray  # task-shaped: [K] per segment, or [T_utt, ...] with sequence labels
    speaker: str | None = None
    conversation: str | None = None
    # optional per-modality [T_m, 2] (start, end) seconds, for alignment and plots
    intervals: dict[str, np.ndarray] = field(default_factory=dict)
    words: list[str] | None = None  # tokens of the text track, for attention plots
    # per-utterance speaker ids inside a conversation sample
    utterance_speakers: list[str] | None = None

    def length(self, modality: str) -> int:
        return int(self.features[modality].shape[0])


class ModalityTensor(NamedTuple):
    """Padded values ``[B, T, D]`` and mask ``[B, T]``; unpacks as ``values, mask``."""

    values: torch.Tensor
    mask: torch.Tensor

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(dim=1)

    def to(self, device) -> ModalityTensor:
        return ModalityTensor(self.values.to(device), self.mask.to(device))


ModelInputs = Mapping[str, ModalityTensor]


@dataclass
class Batch:
    inputs: dict[str, ModalityTensor]
    labels: torch.Tensor
    ids: list[str]
    speakers: list[str | None] | None = None
    conversations: list[str | None] | None = None
    # for sequence labels (conversations): True where an utterance exists
    label_mask: torch.Tensor | None = None
    words: list[list[str] | None] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def modalities(self) -> list[str]:
        return list(self.inputs)

    def to(self, device) -> Batch:
        return Batch(
            inputs={m: t.to(device) for m, t in self.inputs.items()},
            labels=self.labels.to(device),
            ids=self.ids,
            speakers=self.speakers,
            conversations=self.conversations,
            label_mask=None if self.label_mask is None else self.label_mask.to(device),
            words=self.words,
            meta=self.meta,
        )

    def select(self, modalities) -> Batch:
        """The same batch restricted to a subset of modalities (dropped, not zeroed)."""
        missing = [m for m in modalities if m not in self.inputs]
        if missing:
            raise KeyError(f"batch has no modality {missing}; it has {self.modalities}")
        return Batch(
            {m: self.inputs[m] for m in modalities},
            self.labels,
            self.ids,
            self.speakers,
            self.conversations,
            self.label_mask,
            self.words,
            self.meta,
        )
