"""Late fusion (paper 000, §4): one prediction per view, combined with learned linear weights.

Each view is encoded by its own BiLSTM over its own sequence; the final-step encoder output (forward state at
the last real step, backward state at the first) goes through a one-layer feed-forward network giving
view-specific targets, and the targets are combined as ``sum_s lambda_s * y_s + b`` with one learned weight
per view and output (initialised to ``1 / n_views``, i.e. an average).
"""

from __future__ import annotations

import torch
from torch import nn

from emofusion.data.batch import ModelInputs
from emofusion.models.base import FusionModel, ModelOutput
from emofusion.models.layers import OutputHead, SequenceEncoder
from emofusion.models.registry import register_model
from emofusion.tasks import TaskSpec


@register_model("late_fusion")
class LateFusion(FusionModel):
    """Per-view BiLSTM -> final-step output -> per-view head -> learned linear combination.

    ``head_dim=0`` (default) makes each view head a single linear layer (the paper's "1-layer feed-forward
    network"); ``head_dim>0`` inserts a hidden layer. Extras: ``view_predictions`` {modality: ``[B, out]``}
    and ``view_weights`` ``[n_views, out]``.
    """

    # `emofusion tune` space (paper 000 gives no grid for its baseline)
    search_space = {"encoder_dim": [32, 64, 128], "dropout": {"type": "float", "low": 0.0, "high": 0.5}}

    def __init__(
        self,
        modality_dims: dict[str, int],
        task: TaskSpec,
        encoder_dim: int = 64,
        encoder_layers: int = 1,
        head_dim: int = 0,
        dropout: float = 0.1,
    ):
        super().__init__(modality_dims, task)
        self.encoders = nn.ModuleDict(
            {
                m: SequenceEncoder(d, encoder_dim, encoder_layers, True, dropout)
                for m, d in modality_dims.items()
            }
        )
        self.heads = nn.ModuleDict(
            {m: OutputHead(2 * encoder_dim, self.output_dim, head_dim, dropout) for m in self.modalities}
        )
        n = len(self.modalities)
        self.view_weights = nn.Parameter(torch.full((n, self.output_dim), 1.0 / n))
        self.bias = nn.Parameter(torch.zeros(self.output_dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, inputs: ModelInputs) -> ModelOutput:
        inputs = self.check_inputs(inputs)
        views = {}
        for m in self.modalities:
            values, mask = inputs[m]
            _, final = self.encoders[m](values, mask)
            views[m] = self.heads[m](self.dropout(final))
        stacked = torch.stack([views[m] for m in self.modalities], dim=0)  # [n, B, out]
        pred = (self.view_weights.unsqueeze(1) * stacked).sum(0) + self.bias
        extras = {"view_predictions": views, "view_weights": self.view_weights.detach()}
        return ModelOutput(self.bound_output(pred), extras)
