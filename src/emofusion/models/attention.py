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


# score elements (of the B*H x Tq x Tk scores) per chunk of the dropout path: ~4 MB per float copy, so the
# transient copies stay small (and cache-friendly) even at MOSEI lengths (500 x 375 keys)
DROPOUT_CHUNK_ELEMENTS = 1 << 20


def _scores(q, k, bias, scale):
    """``q k^T * scale + bias`` on ``[N, T, d]`` rows (bias additive, broadcastable to ``[N, Tq, Tk]``)."""
    if bias is None:
        return torch.bmm(q, k.transpose(1, 2)).mul_(scale)
    return torch.baddbmm(bias.expand(q.shape[0], q.shape[1], k.shape[1]), q, k.transpose(1, 2), alpha=scale)


def _bmm_thin(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for a thin result (``b``'s last dim is a head size): computed as ``(b^T a^T)^T``, which the CPU
    BLAS runs 2-7x faster than ``bmm(a, b)`` when that last dim is ~5-10 (measured on 50-500 steps)."""
    return torch.bmm(b.transpose(1, 2), a.transpose(1, 2)).transpose(1, 2)


# dropout draws: 16-bit uniform lanes, four per full-range 64-bit integer (CPU ``random_`` fills int64 at ~1 ns a
# value, int32 at ~20 ns and ``bernoulli_`` at ~90 ns per score: the mask draw was 12 % of a MulT training step)
KEEP_BITS = 16


def keep_threshold(p: float) -> int:
    """A score is dropped where its uniform 16-bit lane is below this; the drop rate is exactly ``t / 2^16``."""
    return int(round(float(p) * 2**KEEP_BITS))


def effective_dropout(p: float) -> float:
    """The drop probability the 16-bit draw realises (``p`` to within 2^-17; 0.4 -> 0.399994)."""
    return keep_threshold(p) / 2**KEEP_BITS


def keep_mask(shape, p: float, device=None) -> torch.Tensor:
    """uint8 0/1 of ``shape``, 1 (kept) with probability ``1 - effective_dropout(p)``.

    One draw for the whole tensor: ``ceil(n / 4)`` full-range int64 values, read as ``n`` unsigned 16-bit lanes
    in memory order (little-endian lanes of each word; the unused tail lanes of the last word are discarded).
    """
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), 2**63 - 1)
    lanes = words.view(torch.int16)[:n].view(shape)  # signed view: lane - 2^15
    return (lanes >= keep_threshold(p) - 2 ** (KEEP_BITS - 1)).view(torch.uint8)


class _DropoutAttention(torch.autograd.Function):
    """``(dropout(softmax(q k^T * scale + bias)) @ v`` with a hand-written backward that recomputes the softmax.

    Saves only the inputs and the 1-byte keep mask (not the float scores, weights and dropped weights that
    autograd would keep: 13 bytes per score instead of 1). The keep mask (:func:`keep_mask`) is given; kept
    weights are scaled by ``1 / (1 - p_eff)`` with ``p_eff`` the realised drop rate, so the result is unbiased.
    The mask is applied as a multiply by its float copy (``masked_fill_`` with a bool mask is ~7x slower on CPU) and the
    ``1 / (1 - p)`` factor is applied to the thin results (``[T, d]``), not to the ``[Tq, Tk]`` weights.
    """

    @staticmethod
    def forward(ctx, q, k, v, bias, keep, p: float, scale: float, bias_rows=None):
        # ``bias_rows``: the bias is ``bias[bias_rows]`` (one row per (batch, head) row of q; a head-shared mask
        # is not copied H times). Saved as the base and the index, gathered again in the backward.
        ctx.bias_rows = bias_rows
        if bias_rows is not None:
            bias, base = bias.index_select(0, bias_rows), bias
        # uint8 -> float first: a mixed-dtype in-place multiply is ~2x slower than the conversion plus a float one
        weights = torch.softmax(_scores(q, k, bias, scale), dim=-1).mul_(keep.to(q.dtype))
        ctx.save_for_backward(q, k, v, bias if bias_rows is None else base, keep)
        ctx.c, ctx.scale = 1.0 / (1.0 - p), scale
        return _bmm_thin(weights, v).mul_(ctx.c)

    @staticmethod
    def backward(ctx, grad):
        q, k, v, bias, keep = ctx.saved_tensors
        if ctx.bias_rows is not None:
            bias = bias.index_select(0, ctx.bias_rows)
        c = ctx.c
        probs = torch.softmax(_scores(q, k, bias, ctx.scale), dim=-1)
        keep = keep.to(probs.dtype)  # one conversion, used twice
        grad_v = None
        if ctx.needs_input_grad[2]:
            grad_v = _bmm_thin((probs * keep).transpose(1, 2), grad).mul_(c)
        # with g = (grad v^T) * keep (the gradient of the weights, before the 1 / (1 - p) factor):
        # d loss / d scores = c * probs * (g - sum(g * probs)), the softmax backward
        g = torch.bmm(grad, v.transpose(1, 2)).mul_(keep)
        dot = torch.linalg.vecdot(g, probs).unsqueeze(-1)
        grad_scores = probs.mul_(g.sub_(dot))
        grad_q = _bmm_thin(grad_scores, k).mul_(ctx.scale * c) if ctx.needs_input_grad[0] else None
        grad_k = (
            _bmm_thin(grad_scores.transpose(1, 2), q).mul_(ctx.scale * c) if ctx.needs_input_grad[1] else None
        )
        grad_bias = None
        if bias is not None and ctx.needs_input_grad[3]:  # (never with bias_rows: only for constant masks)
            grad_bias = grad_scores.sum_to_size(bias.shape).mul_(c)
        return grad_q, grad_k, grad_v, grad_bias, None, None, None, None


def chunked_dropout_attention(q, k, v, mask, dropout_p: float, chunk_elements: int = DROPOUT_CHUNK_ELEMENTS):
    """Attention with dropout on the weights (training), in chunks of the (batch x head) rows.

    The fused CPU kernels of ``scaled_dot_product_attention`` do not support dropout, and its math fallback keeps
    several float ``B x H x Tq x Tk`` tensors alive for the backward pass (GBs at MOSEI lengths). Here each
    chunk runs :class:`_DropoutAttention`, which keeps only a 1-byte dropout mask per score. ``q, k, v``:
    ``[B, H, T, d]``; ``mask``: bool (True = allowed) or additive float, broadcastable to ``[B, H, Tq, Tk]``,
    or None. The chunking does not change the result: dropout masks are drawn in memory order.
    """
    b, h, tq, d = q.shape
    tk, dv = k.shape[2], v.shape[3]
    if effective_dropout(dropout_p) >= 1.0:  # every weight dropped, as F.dropout(p=1)
        return v.new_zeros(b, h, tq, dv) + 0.0 * (q.sum() + k.sum() + v.sum())
    n = b * h
    qf, kf, vf = q.reshape(n, tq, d), k.reshape(n, tk, d), v.reshape(n, tk, dv)
    bias = None
    head_shared = False
    if mask is not None:
        if mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~mask, float("-inf"))
        while mask.dim() < 4:
            mask = mask.unsqueeze(0)
        # a constant mask with its own query axis, shared by the heads (MulT's future mask [B, 1, Tq, Tk]): kept
        # at [B, Tq, Tk] and gathered per chunk, not expanded to a [B * H, Tq, Tk] copy (200 MB at 500 x 500)
        head_shared = mask.shape[1] == 1 and mask.shape[2] > 1 and h > 1 and not mask.requires_grad
        if head_shared:
            bias = mask[:, 0].expand(b, mask.shape[2], mask.shape[3])
        else:
            bias = mask.expand(b, h, mask.shape[2], mask.shape[3])
            bias = bias.reshape(n, bias.shape[2], bias.shape[3])
    scale = 1.0 / math.sqrt(d)
    p_eff = effective_dropout(dropout_p)
    # rows per chunk: a multiple of 4 / gcd(Tq Tk, 4), so every chunk but the last draws whole int64 words and
    # the chunks' masks are exactly the lanes one unchunked draw would give (drawing per chunk keeps the draw's
    # buffer small: a 100 MB draw costs twice as much per value in page faults)
    unit = 4 // math.gcd(tq * tk, 4)
    rows = max(unit, int(chunk_elements) // max(tq * tk, 1) // unit * unit)
    # split (not slice in a loop): a slice's backward fills a zero gradient of the whole tensor per chunk
    if head_shared:  # every chunk reads the shared [B, Tq, Tk] mask at its rows' batch indices
        batch_of_row = torch.arange(n, device=q.device) // h
        biases, index = [bias] * n, batch_of_row.split(rows)
    else:
        biases, index = ([None] * n if bias is None else bias.split(rows)), [None] * n
    chunks = zip(qf.split(rows), kf.split(rows), vf.split(rows), biases, index)
    outs = [
        _DropoutAttention.apply(
            qc, kc, vc, bc, keep_mask((qc.shape[0], tq, tk), dropout_p, q.device), p_eff, scale, ic
        )
        for qc, kc, vc, bc, ic in chunks
    ]
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)
    return out.reshape(b, h, tq, dv)


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

    def _sdpa_mask(self, key_mask, structural_mask, bias, b: int, tq: int, tk: int, q: torch.Tensor):
        """(mask for SDPA, rows to zero afterwards or None).

        A key padding mask alone stays a broadcast ``[B, 1, 1, Tk]`` mask (None when no key is padding), never an
        expanded ``[B, 1, Tq, Tk]`` one. Rows without any allowed key attend everywhere (finite) and are zeroed.
        """
        if bias is None and structural_mask is None:
            if key_mask is None:
                return None, None
            key_mask = key_mask.bool()
            nonempty = key_mask.any(-1)  # [B]
            if bool(nonempty.all()):
                return (None if bool(key_mask.all()) else key_mask[:, None, None, :]), None
            empty = ~nonempty
            safe = key_mask | empty[:, None]
            return safe[:, None, None, :], empty[:, None, None, None]
        allowed = build_allowed(key_mask, structural_mask, b, tq, tk, q.device)
        empty = ~allowed.any(-1, keepdim=True)
        safe = allowed | empty
        if bias is not None:
            mask = bias.masked_fill(~safe, float("-inf")).to(q.dtype).expand(b, self.num_heads, tq, tk)
        else:
            mask = safe
        return mask, (empty if bool(empty.any()) else None)

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
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            allowed = build_allowed(key_mask, structural_mask, b, tq, tk, query.device)
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
            if bias is not None:
                scores = scores + bias
            weights = masked_softmax(scores, allowed.expand_as(scores))
            attn = F.dropout(weights, dropout_p, self.training)
            out = attn @ v
        else:
            mask, empty = self._sdpa_mask(key_mask, structural_mask, bias, b, tq, tk, q)
            if dropout_p > 0.0:
                out = chunked_dropout_attention(q, k, v, mask, dropout_p)
            else:
                # fused (flash) CPU kernel: takes a bool mask, not dropout
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            if empty is not None:
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
