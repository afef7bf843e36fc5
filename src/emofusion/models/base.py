"""The contract every model follows.

``forward(inputs)`` takes a mapping modality -> ``(values [B, T_m, D_m], mask [B, T_m])`` (each modality with
its own length) and returns a :class:`ModelOutput`: predictions shaped for the task (``[B, output_dim]``, or
``[B, T_utt, output_dim]`` for per-utterance labels), plus named extras (attention weights, gates, ...) and
named auxiliary losses that the training loop adds to the task loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from emofusion.data.batch import ModalityTensor, ModelInputs
from emofusion.tasks import TaskSpec


@dataclass
class ModelOutput:
    prediction: torch.Tensor
    extras: dict[str, object] = field(default_factory=dict)
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)


class FusionModel(nn.Module):
    """Base class: stores the modality sizes and the task, checks inputs, bounds regression outputs."""

    # set False in subclasses that need every modality their paper defines
    supports_modality_subsets: bool = True
    # the smallest number of modalities the model can run on
    min_modalities: int = 1
    # figures the reporting layer draws after a run, as "package.module:function" names called with
    # (lightning module, dataset bundle, plots dir) -> list of paths (see emofusion.evaluation.plots.plot_run)
    extra_plots: tuple[str, ...] = ()

    def __init__(self, modality_dims: dict[str, int], task: TaskSpec):
        super().__init__()
        if not modality_dims:
            raise ValueError(f"{type(self).__name__} needs at least one modality")
        if len(modality_dims) < self.min_modalities:
            raise ValueError(
                f"{type(self).__name__} needs at least {self.min_modalities} modalities, got {list(modality_dims)}"
            )
        self.modality_dims = dict(modality_dims)
        self.modalities = list(modality_dims)
        self.task = task
        self.output_dim = task.output_dim

    def check_inputs(self, inputs: ModelInputs) -> dict[str, ModalityTensor]:
        out = {}
        for m in self.modalities:
            if m not in inputs:
                raise KeyError(f"{type(self).__name__} was built for {self.modalities} but got no {m!r} input")
            values, mask = inputs[m]
            if values.dim() != 3 or values.shape[-1] != self.modality_dims[m]:
                raise ValueError(
                    f"{type(self).__name__}: modality {m!r} expects values [B, T, {self.modality_dims[m]}], "
                    f"got {tuple(values.shape)}"
                )
            if mask.shape != values.shape[:2]:
                raise ValueError(f"modality {m!r}: mask {tuple(mask.shape)} does not match values {tuple(values.shape)}")
            out[m] = ModalityTensor(values, mask.bool())
        return out

    def bound_output(self, raw: torch.Tensor) -> torch.Tensor:
        """Regression outputs bounded to the task's label range (paper 003: linear outputs bounded to [0, 3]).

        Bounded with a hardtanh-style clamp that keeps gradients inside the range, so a model starts linear.
        Classification logits pass through.
        """
        if self.task.is_regression and self.task.label_range is not None:
            low, high = self.task.label_range
            if not low <= 0.0 <= high:
                # ranges excluding 0 (ICT-MMMO's [1, 5]): centre the output, else a fresh model sits at the bound
                raw = raw + 0.5 * (low + high)
            return torch.clamp(raw, low, high) if not self.training else _soft_clamp(raw, low, high)
        return raw

    def num_parameters(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def _soft_clamp(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    # straight-through clamp: forward is clamped, gradient flows where the clamp is active too, so
    # predictions stuck outside the range can still move back in
    return x + (torch.clamp(x, low, high) - x).detach()
