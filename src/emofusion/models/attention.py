"""Shared transformer pieces: masked multi-head attention (SDPA), pre-norm transformer layers, sinusoidal PE.

Masks follow the batch convention: ``True`` = real step. Keys that are padding (or outside a structural mask
such as a sliding window) get ``-inf`` logits, so their attention weight is exactly zero. A query row with no
allowed key at all (an empty sequence) returns zeros instead of NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from emofusion.models.layers import masked_softmax


def sinusoidal_positions(steps: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Vaswani et al. sinusoidal embeddings ``[steps, dim]`` (sin on the first half, cos on the second)."""
    half = dim // 2
    pos = torch.arange(steps, device=device, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(
        -math.log(10000.0) * torch.arange(half, device=device, dtype=torch.float32) / max(half - 1, 1)
    )
    angles = pos * freq.unsqueeze(0)
    pe = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        pe = F.pad(pe, (0, 1))
    return pe.to(dtype)


def window_mask(query_steps: int, key_steps: int, window: int | None, device=None) -> torch.Tensor | None:
    """``[Tq, Tk]`` bool, True where ``|i - j| <= window``; None for unlimited windows."""
    if window is None:
        return None
    i = torch.arange(query_steps, device=device).unsqueeze(1)
    j = torch.arange(key_steps, device=device).unsqueeze(0)
    return (i - j).abs() <= int(window)


def build_allowed(
    key_mask: torch.Tensor | None, structural: torch.Tensor | None, batch: int, tq: int, tk: int, device
):
    """Combine a key padding mask ``[B, Tk]`` and a structural mask ``[Tq, Tk]`` / ``[B, 1|H, Tq, Tk]`` into a
    broadcastable bool mask ``[B, 1|H, Tq, Tk]``."""
    allowed = torch.ones(batch, 1, tq, tk, dtype=torch.bool, device=device)
    if key_mask is not None:
        allowed = allowed & key_mask.bool()[:, None, None, :]
    if structural is not None:
        if structural.dim() == 2:
            structural = structural[None, None]
        allowed = allowed & structural
    return allowed


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate query / key / value input sizes and head sizes.

    ``forward(query, key, value, key_mask=None, structural_mask=None, bias=None, need_weights=False)``;
    ``bias`` (``[B|1, H|1, Tq, Tk]``) is added to the logits *after* the ``1/sqrt(d_k)`` scaling, so a caller
    that wants ``(QK^T + B) / sqrt(d_k)`` passes ``B / sqrt(d_k)``. Uses
    ``torch.nn.functional.scaled_dot_product_attention``; with ``need_weights`` the same computation is done
    explicitly so the weights can be returned.
    """

    def __init__(
        self,
        query_dim: int,
        num_heads: int = 1,
        key_dim: int | None = None,
        value_dim: int | None = None,
        head_dim: int | None = None,
        value_head_dim: int | None = None,
        out_dim: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
    ):
        super().__init__()
        key_dim = key_dim or query_dim
        value_dim = value_dim or key_dim
        if head_dim is None:
            if query_dim % num_heads:
                raise ValueError(f"query_dim {query_dim} not divisible by num_heads {num_heads}")
            head_dim = query_dim // num_heads
        value_head_dim = value_head_dim or head_dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.value_head_dim = value_head_dim
        self.q_proj = nn.Linear(query_dim, num_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(key_dim, num_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(value_dim, num_heads * value_head_dim, bias=bias)
        self.out_proj = nn.Linear(num_heads * value_head_dim, out_dim or query_dim, bias=bias)
        self.dropout = dropout

    def _split(self, x: torch.Tensor, head_dim: int) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, head_dim).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        structural_mask: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, tq, _ = query.shape
        tk = key.shape[1]
        q = self._split(self.q_proj(query), self.head_dim)
        k = self._split(self.k_proj(key), self.head_dim)
        v = self._split(self.v_proj(value), self.value_head_dim)
        allowed = build_allowed(key_mask, structural_mask, b, tq, tk, query.device)
        # rows without any allowed key: let them attend everywhere (finite), then zero their output
        empty = ~allowed.any(-1, keepdim=True)
        safe = allowed | empty
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
            if bias is not None:
                scores = scores + bias
            weights = masked_softmax(scores, allowed.expand_as(scores))
            attn = F.dropout(weights, dropout_p, self.training)
            out = attn @ v
        else:
            if bias is not None:
                mask = bias.masked_fill(~safe, float("-inf")).to(q.dtype)
                mask = mask.expand(b, self.num_heads, tq, tk)
            else:
                mask = safe
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
            out = out.masked_fill(empty, 0.0)
        out = out.transpose(1, 2).reshape(b, tq, self.num_heads * self.value_head_dim)
        return self.out_proj(out), weights


class TransformerLayer(nn.Module):
    """Pre-norm (cross-)attention layer: ``x + Attn(LN(x), LN(kv))`` then ``x + FFN(LN(x))``.

    ``literal_residual=True`` instead adds the *normalised* input as the residual, as paper 002 eq. 7-8 (and
    the MulT paper) write it; the default is the usual pre-norm form used by MulT's reference code.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kv_dim: int | None = None,
        ffn_mult: int = 4,
        attn_dropout: float = 0.0,
        relu_dropout: float = 0.0,
        res_dropout: float = 0.0,
        literal_residual: bool = False,
        cross: bool = False,
    ):
        super().__init__()
        kv_dim = kv_dim or dim
        self.norm_q = nn.LayerNorm(dim)
        # only cross-attention layers normalise a separate key/value sequence
        self.norm_kv = nn.LayerNorm(kv_dim) if cross else None
        self.attn = MultiHeadAttention(dim, num_heads, key_dim=kv_dim, value_dim=kv_dim, dropout=attn_dropout)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, ffn_mult * dim),
            nn.ReLU(),
            nn.Dropout(relu_dropout),
            nn.Linear(ffn_mult * dim, dim),
        )
        self.res_dropout = nn.Dropout(res_dropout)
        self.literal_residual = literal_residual

    def forward(self, x, x_mask, kv=None, kv_mask=None, need_weights=False):
        self_attn = kv is None
        if not self_attn and self.norm_kv is None:
            raise ValueError("this TransformerLayer was built for self-attention (cross=False) but got kv")
        q = self.norm_q(x)
        kvn = q if self_attn else self.norm_kv(kv)
        key_mask = x_mask if self_attn else kv_mask
        a, w = self.attn(q, kvn, kvn, key_mask=key_mask, need_weights=need_weights)
        x = (q if self.literal_residual else x) + self.res_dropout(a)
        h = self.norm_ff(x)
        x = (h if self.literal_residual else x) + self.res_dropout(self.ff(h))
        # padded query steps are set to zero so nothing downstream can pick them up by accident
        return x * x_mask.unsqueeze(-1).to(x.dtype), w


class TransformerEncoder(nn.Module):
    """A stack of :class:`TransformerLayer`, then a final LN: self-attention, or (when built with ``kv_dim``)
    cross-attention to the fixed ``kv`` sequence, as in MulT eq. 7 where every layer attends to ``Z_beta^[0]``."""

    def __init__(self, dim: int, num_heads: int, num_layers: int, kv_dim: int | None = None, **layer_kw):
        super().__init__()
        self.layers = nn.ModuleList(
            [
                TransformerLayer(dim, num_heads, kv_dim=kv_dim, cross=kv_dim is not None, **layer_kw)
                for _ in range(num_layers)
            ]
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, x_mask, kv=None, kv_mask=None, need_weights=False):
        weights = []
        for layer in self.layers:
            x, w = layer(x, x_mask, kv, kv_mask, need_weights=need_weights)
            weights.append(w)
        x = self.norm(x) * x_mask.unsqueeze(-1).to(x.dtype)
        return x, weights
