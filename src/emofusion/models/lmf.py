"""Low-rank Multimodal Fusion (Liu, Shen, Lakshminarasimhan, Liang, Zadeh & Morency, ACL 2018).

TFN's fusion ``h = W . Z`` with ``Z = (x)_m [z_m; 1]`` needs a weight tensor of size ``d_h x prod_m (d_m + 1)``.
LMF decomposes that weight into modality-specific rank-r factors, ``W = sum_{i=1..r} (x)_m w_m^(i)``, and computes
the fusion without ever building ``Z`` or ``W``:

    h = sum_{i=1..r} lambda_i * prod_m (w_m^(i) . [z_m; 1])  +  b        (elementwise product over modalities)

``w_m^(i)`` maps the 1-extended embedding of modality m to ``d_h`` outputs; ``lambda`` (the fusion weights,
one per rank) and ``b`` are learned, as in the authors' code. The embedding subnetworks are TFN's
(``emofusion.models.tfn``). As in the paper's released code, ``h`` is the model's output (``d_h`` = the task's
output size; regression outputs are then bounded to the label range).

Parameters grow linearly in the modality sizes (``r * d_h * sum_m (d_m + 1)``), not with their product.
"""

from __future__ import annotations

import torch
from torch import nn

from emofusion.data.batch import ModelInputs
from emofusion.models.base import FusionModel, ModelOutput
from emofusion.models.registry import register_model
from emofusion.models.tfn import ModalityEmbeddings, extend_with_one
from emofusion.tasks import TaskSpec


@register_model("lmf")
class LowRankMultimodalFusion(FusionModel):
    """LMF: TFN's embedding subnetworks -> modality-specific rank-r factors -> sum over rank of products.

    Options: ``rank`` (4, MMSA MOSEI), ``hidden_dims`` (int or {modality: int}; default text 128, audio 16,
    visual 128), ``text_out`` (default ``text hidden // 2`` = 64, as MMSA), ``dropout`` (subnetworks, 0.2),
    ``sequence_modalities``, ``batch_norm`` (see ``tfn``). Extras: ``embeddings``, ``rank_terms``
    ``[B, r, d_h]`` (the per-rank products before the fusion weights).
    """

    def __init__(
        self,
        modality_dims: dict[str, int],
        task: TaskSpec,
        rank: int = 4,
        hidden_dims=None,
        text_out: int | None = None,
        dropout=0.2,
        sequence_modalities=("text",),
        batch_norm: bool = False,
        subnet_layers: int = 3,
    ):
        super().__init__(modality_dims, task)
        if int(rank) < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.rank = int(rank)
        if text_out is None:
            # MMSA's LMF: text_out = text hidden // 2
            from emofusion.models.tfn import DEFAULT_HIDDEN

            text_hidden = hidden_dims.get("text") if isinstance(hidden_dims, dict) else hidden_dims
            text_out = int(text_hidden or DEFAULT_HIDDEN["text"]) // 2
        self.embed = ModalityEmbeddings(
            modality_dims, hidden_dims, text_out, dropout, sequence_modalities, batch_norm, subnet_layers
        )
        out = self.output_dim
        # w_m^(i) for every rank i, stored as one [d_m + 1, r * d_h] matrix per modality (one matmul each)
        self.factors = nn.ParameterDict(
            {m: nn.Parameter(torch.empty(self.rank, d + 1, out)) for m, d in self.embed.output_dims.items()}
        )
        self.fusion_weights = nn.Parameter(torch.empty(1, self.rank))
        self.fusion_bias = nn.Parameter(torch.zeros(1, out))
        for f in self.factors.values():
            nn.init.xavier_normal_(f)
        nn.init.xavier_normal_(self.fusion_weights)

    def time_averaged_inputs(self) -> tuple[str, ...]:
        return self.embed.averaged_modalities()

    def forward(self, inputs: ModelInputs) -> ModelOutput:
        inputs = self.check_inputs(inputs)
        emb = self.embed(inputs)
        batch = next(iter(emb.values())).shape[0]
        terms = None
        for m in self.modalities:
            factor = self.factors[m]  # [r, d+1, d_h]
            proj = extend_with_one(emb[m]) @ factor.transpose(0, 1).reshape(factor.shape[1], -1)  # [B, r*d_h]
            terms = proj if terms is None else terms * proj
        terms = terms.view(batch, self.rank, self.output_dim)
        h = (self.fusion_weights @ terms).squeeze(1) + self.fusion_bias  # sum_i lambda_i * terms_i + b
        return ModelOutput(self.bound_output(h), {"embeddings": emb, "rank_terms": terms})
