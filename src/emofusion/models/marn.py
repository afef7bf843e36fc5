"""MARN: Multi-attention Recurrent Network (Zadeh, Liang, Poria, Vij, Cambria & Morency, AAAI 2018), the
baseline of paper 001's Table 2 (Q2: "MARN models multiple cross-modal interactions all at once").

One LSTHM per modality (the same cell as RMFN's, :class:`~emofusion.models.rmfn.LSTHMBank`: the gates also
read the cross-modal code ``z_{t-1}``). At every step the Multi-attention Block (MAB) reads
``h_t = ⊕_m h_t^m`` (size D):

- ``K`` attentions at once: ``a_t = A(h_t)`` reshaped ``[K, D]``, softmax over the D dimensions per k;
- ``h̃_t = ⊕_k a_t^k ⊙ h_t`` (size K·D), split back by modality (``K·d_m`` each);
- per-modality dimension-reduction networks ``s_t^m = C_m(h̃_t^m)``;
- ``z_t = G(⊕_m s_t^m)``, fed to every LSTHM at ``t + 1``.

The prediction is read from ``E = (⊕_m h_T^m) ⊕ z_T``, as RMFN's. Reading choices (the MARN paper defines
A, C_m and G only as feed-forward networks): ``A`` is one linear layer (its output softmaxed per block);
``C_m`` is linear + ReLU; ``G`` is linear + ReLU + dropout + linear + tanh (bounded z, like RMFN's S). The
time axis and masking are RMFN's (word-aligned input used as is; otherwise resampled per sample to the
reference modality), see docs/models/rmfn.md. Paper 001 contrasts this one-shot block with its multistage
HIGHLIGHT / FUSE / SUMMARIZE process.
"""

from __future__ import annotations

import torch
from torch import nn

from emofusion.models.registry import register_model
from emofusion.models.rmfn import RMFN
from emofusion.tasks import TaskSpec


class MultiAttentionBlock(nn.Module):
    """MAB on one step's ``h_t`` ``[B, D]``: returns ``z_t`` ``[B, Z]`` and the attentions ``[B, K, D]``."""

    def __init__(self, slices: dict[str, tuple[int, int]], attentions: int, reduce_dim: int, z_dim: int,
                 hidden_dim: int, dropout: float):
        super().__init__()
        self.slices = dict(slices)
        self.K = int(attentions)
        self.h_dim = max(hi for _, hi in slices.values())
        self.attention = nn.Linear(self.h_dim, self.K * self.h_dim)  # A
        self.reduce = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(self.K * (hi - lo), reduce_dim), nn.ReLU()) for m, (lo, hi) in slices.items()}
        )  # C_m
        self.fuse = nn.Sequential(
            nn.Linear(reduce_dim * len(slices), hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, z_dim),
            nn.Tanh(),
        )  # G

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = h.shape[0]
        a = torch.softmax(self.attention(h).view(batch, self.K, self.h_dim), dim=-1)  # [B, K, D]
        attended = a * h.unsqueeze(1)  # a_t^k ⊙ h_t
        parts = [self.reduce[m](attended[:, :, lo:hi].reshape(batch, -1)) for m, (lo, hi) in self.slices.items()]
        return self.fuse(torch.cat(parts, dim=-1)), a


@register_model("marn")
class MARN(RMFN):
    """Multi-attention Recurrent Network: LSTHMs + the Multi-attention Block (K attentions at once).

    Options: ``attentions`` (K, default 4), ``hidden_dim`` (per-modality LSTHM size), ``reduce_dim`` (C_m
    output), ``z_dim``, ``fuse_dim`` (G's hidden layer), ``head_dim``, ``dropout``, ``reference``, ``align``
    (as RMFN). ``extras["attention"]`` is ``[B, T, K, D]`` (zeros at padded steps).
    """

    def __init__(
        self,
        modality_dims: dict[str, int],
        task: TaskSpec,
        attentions: int = 4,
        hidden_dim: int = 32,
        reduce_dim: int = 16,
        z_dim: int = 32,
        fuse_dim: int = 64,
        head_dim: int = 64,
        dropout: float = 0.1,
        reference: str | None = None,
        align: str = "resample",
    ):
        if int(attentions) < 1:
            raise ValueError(f"marn: attentions must be >= 1, got {attentions}")
        super().__init__(
            modality_dims, task, stages=1, mfp=True, highlight=False, hidden_dim=hidden_dim, z_dim=z_dim,
            head_dim=head_dim, dropout=dropout, reference=reference, align=align,
        )
        self.fusion = MultiAttentionBlock(self.modality_slices, attentions, reduce_dim, z_dim, fuse_dim, dropout)
        self.highlight = True  # the forward pass collects the block's attentions per step
        self.stages = int(attentions)  # the attention extras are [B, T, K, D]

    def forward(self, inputs):
        out = super().forward(inputs)
        out.extras["attention"] = out.extras.pop("highlight")
        return out
