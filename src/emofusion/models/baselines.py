"""Reference models: the one-parameter-per-output baseline, a unimodal LSTM, and an early-fusion LSTM."""

from __future__ import annotations

import torch
from torch import nn

from emofusion.data.batch import ModelInputs
from emofusion.models.base import FusionModel, ModelOutput
from emofusion.models.layers import (
    OutputHead,
    SequenceEncoder,
    StridedFrontEnd,
    align_to_common_axis,
    masked_max,
    masked_mean,
)
from emofusion.models.registry import register_model
from emofusion.tasks import TaskSpec


@register_model("mean")
class MeanBaseline(FusionModel):
    """One parameter per output, trained on the task loss without seeing the inputs (paper 000, §4).

    A *trained* constant: the run engine starts it at the closed-form optimum of its loss on the training
    labels (:meth:`init_from_labels`: mean for L2, median for L1, log class prior for cross-entropy, logit of
    the label rate for BCE), so training only confirms it. The reference constants every report shows are the
    closed-form ones of :mod:`emofusion.evaluation.baselines`, not this model.
    """

    default_absent = "zeros"  # reads no inputs: no absent tokens

    def __init__(self, modality_dims: dict[str, int], task: TaskSpec, init: list[float] | None = None):
        super().__init__(modality_dims, task)
        start = torch.zeros(self.output_dim) if init is None else torch.as_tensor(init, dtype=torch.float32)
        self.bias = nn.Parameter(start)

    def init_from_labels(self, labels, loss: str) -> None:
        import numpy as np

        labels = np.asarray(labels)
        if self.task.kind == "classification":
            counts = np.bincount(labels.astype(np.int64).ravel(), minlength=self.output_dim)[: self.output_dim]
            value = np.log(np.maximum(counts, 1) / max(1, counts.sum()))
        elif self.task.kind == "multilabel_binary":
            rate = np.clip((labels.reshape(len(labels), -1) > 0.5).mean(0), 1e-3, 1 - 1e-3)
            value = np.log(rate / (1 - rate))
        else:
            y = labels.reshape(len(labels), -1).astype(np.float64)
            value = np.median(y, 0) if loss == "l1" else y.mean(0)
            low, high = self.task.label_range or (0.0, 0.0)
            if not low <= 0.0 <= high:
                value = value - 0.5 * (low + high)  # bound_output adds the centre back
        with torch.no_grad():
            self.bias.copy_(torch.as_tensor(value, dtype=torch.float32).reshape(self.bias.shape))

    def forward(self, inputs: ModelInputs) -> ModelOutput:
        any_values = next(iter(inputs.values()))[0]
        pred = self.bias.unsqueeze(0).expand(any_values.shape[0], -1)
        return ModelOutput(self.bound_output(pred))


POOLINGS = ("last", "mean", "max")


def pool(steps, final, mask, how: str):
    """Sequence summary: the final state, or the masked mean / max of the per-step outputs (max pooling gives
    short, local events a direct gradient path, which the final state of a long sequence lacks)."""
    if how == "last":
        return final
    return masked_mean(steps, mask) if how == "mean" else masked_max(steps, mask)


@register_model("unimodal_lstm")
class UnimodalLSTM(FusionModel):
    """LSTM encoder over one modality's own sequence, pooled (max by default) -> MLP head."""

    # `emofusion tune` space (no paper grid: sizes around the defaults, dropout 0-0.5)
    search_space = {"hidden_dim": [32, 64, 128], "head_dim": [32, 64, 128],
                    "dropout": {"type": "float", "low": 0.0, "high": 0.5}}

    min_modalities = 1

    def __init__(
        self,
        modality_dims: dict[str, int],
        task: TaskSpec,
        hidden_dim: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        pooling: str = "max",
        head_dim: int = 64,
        dropout: float = 0.1,
        modality: str | None = None,
    ):
        if modality is not None:
            if modality not in modality_dims:
                raise ValueError(f"unimodal_lstm: modality {modality!r} not among {list(modality_dims)}")
            modality_dims = {modality: modality_dims[modality]}
        if len(modality_dims) != 1:
            raise ValueError(
                f"unimodal_lstm takes exactly one modality, got {list(modality_dims)}; "
                "pass --modalities with one name or modality=NAME"
            )
        super().__init__(modality_dims, task)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        (dim,) = modality_dims.values()
        self.pooling = pooling
        self.encoder = SequenceEncoder(dim, hidden_dim, num_layers, bidirectional, dropout)
        self.dropout = nn.Dropout(dropout)
        self.head = OutputHead(self.encoder.output_dim, self.output_dim, head_dim, dropout)

    def forward(self, inputs: ModelInputs) -> ModelOutput:
        (m,) = self.modalities
        values, mask = self.check_inputs(inputs)[m]
        steps, final = self.encoder(values, mask)
        summary = pool(steps, final, mask, self.pooling)
        return ModelOutput(self.bound_output(self.head(self.dropout(summary))))


@register_model("early_fusion_lstm")
class EarlyFusionLSTM(FusionModel):
    """Input-level fusion: modalities resampled to one time axis, concatenated per step, one LSTM.

    ``fuse="inputs"`` (default): raw features resampled to the highest-rate modality of each batch.
    ``fuse="encoders"``: paper 000's early-fusion baseline, each view encoded by its own BiLSTM first, then
    the encoder outputs resampled to the highest rate, concatenated, and decoded by one LSTM of the same size.
    """

    # `emofusion tune` space (no paper grid: sizes around the defaults, dropout 0-0.5)
    search_space = {"hidden_dim": [32, 64, 128], "head_dim": [32, 64, 128],
                    "dropout": {"type": "float", "low": 0.0, "high": 0.5}}

    def __init__(
        self,
        modality_dims: dict[str, int],
        task: TaskSpec,
        hidden_dim: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        fuse: str = "inputs",
        encoder_dim: int = 64,
        head_dim: int = 64,
        dropout: float = 0.1,
        reference: str | None = None,
        pooling: str = "max",
        frontend: dict[str, int] | None = None,
    ):
        super().__init__(modality_dims, task)
        self.frontend = StridedFrontEnd(frontend, modality_dims)  # {modality: stride}, see layers.py
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        if fuse not in ("inputs", "encoders"):
            raise ValueError(f"fuse must be 'inputs' or 'encoders', got {fuse!r}")
        if reference is not None and reference not in modality_dims:
            raise ValueError(f"reference modality {reference!r} not among {list(modality_dims)}")
        self.fuse = fuse
        self.reference = reference
        if fuse == "encoders":
            self.view_encoders = nn.ModuleDict(
                {m: SequenceEncoder(d, encoder_dim, 1, True) for m, d in modality_dims.items()}
            )
            fused_dim = 2 * encoder_dim * len(modality_dims)
        else:
            fused_dim = sum(modality_dims.values())
        self.encoder = SequenceEncoder(fused_dim, hidden_dim, num_layers, bidirectional, dropout)
        self.dropout = nn.Dropout(dropout)
        self.head = OutputHead(self.encoder.output_dim, self.output_dim, head_dim, dropout)

    def forward(self, inputs: ModelInputs) -> ModelOutput:
        inputs = self.frontend(self.check_inputs(inputs))
        if self.fuse == "encoders":
            inputs = {m: (self.view_encoders[m](v, mask)[0], mask) for m, (v, mask) in inputs.items()}
        aligned, mask = align_to_common_axis(inputs, self.modalities, self.reference)
        fused = torch.cat([aligned[m] for m in self.modalities], dim=-1)
        steps, final = self.encoder(fused, mask)
        summary = pool(steps, final, mask, self.pooling)
        return ModelOutput(self.bound_output(self.head(self.dropout(summary))))
