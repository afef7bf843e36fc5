"""MulT, the Multimodal Transformer (Tsai et al. 2019) as described in paper 002 §3 (eq. 1-8).

Per modality: temporal Conv1D projection to ``d_model`` (eq. 4), scaled input + sinusoidal positions (eq. 5).
For every ordered pair ``beta -> alpha`` a cross-modal transformer whose queries come from alpha and whose
keys/values come from beta's layer-0 sequence ``Z_beta^[0]`` (eq. 6-8), stacked ``cross_layers`` times.
Per target alpha the outputs ``[Z_{beta->alpha}; Z_{gamma->alpha}]`` are concatenated and run through a
self-attention transformer ("sequence model"); its last real step (or masked mean) per target is
concatenated over targets and passed through MulT's residual projection and the output layer.

Defaults follow the MulT reference implementation (Tsai et al. 2019, github.com/yaohungt/Multimodal-Transformer,
``src/models.py`` and ``modules/transformer.py``); every difference is an option, listed in docs/models/mult.md:
d=30, 5 heads, 5 cross-modal layers, ``max(layers, 3)`` self-attention layers, kernel size 1 without bias,
keys/values normalised with the query's LayerNorm, a re-embedding (``sqrt(d)`` scale, sinusoidal positions
from 1, embedding dropout) in front of every transformer stack, the future mask (``--attn_mask`` is on by
default there), dropout on the text input, attention dropout 0.1 for text keys and self-attention and 0.0
for audio/visual keys, Xavier initialisation of the attention and feed-forward weights. Unaligned inputs are
the normal case, with key padding masks.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from emofusion.data.batch import ModelInputs
from emofusion.models.attention import TransformerLayer, sinusoidal_positions
from emofusion.models.base import FusionModel, ModelOutput
from emofusion.models.layers import last_valid, masked_mean
from emofusion.models.registry import register_model
from emofusion.tasks import TaskSpec


def direction_name(source: str, target: str) -> str:
    return f"{source}->{target}"


class TemporalConv(nn.Module):
    """Conv1D over time (eq. 4 / eq. 9) with 'same' padding; padded input steps are zeroed first so padding
    values never leak into real steps, and outputs at padded steps are zero."""

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int = 1, bias: bool = False):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        self.conv = nn.Conv1d(in_dim, out_dim, kernel_size, padding=kernel_size // 2, bias=bias)

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(values.dtype)
        out = self.conv((values * m).transpose(1, 2)).transpose(1, 2)
        return out * m


def future_mask(q_mask: torch.Tensor, k_mask: torch.Tensor) -> torch.Tensor:
    """``[B, 1, Tq, Tk]`` bool, True where query i may see key j: ``j <= i + |L_k - L_q|``.

    The reference's ``buffered_future_mask`` (``triu(-inf, 1 + |T_k - T_q|)``) on its fixed-length tensors;
    here with each sample's real lengths, so a sample gets the same mask alone or in any batch.
    """
    lq, lk = q_mask.sum(1), k_mask.sum(1)
    i = torch.arange(q_mask.shape[1], device=q_mask.device).view(1, -1, 1)
    j = torch.arange(k_mask.shape[1], device=q_mask.device).view(1, 1, -1)
    return (j <= i + (lk - lq).abs().view(-1, 1, 1)).unsqueeze(1)


def reference_positions(steps: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """MulT's sinusoidal embeddings: position numbers start at 1 (fairseq's padding_idx 0 + 1)."""
    return sinusoidal_positions(steps + 1, dim, device, dtype)[1:]


class MulTLayer(TransformerLayer):
    """MulT's pre-norm layer; with ``shared_kv_norm`` keys/values go through the query's LayerNorm
    (``layer_norms[0]`` in the reference), else through their own."""

    def __init__(self, dim, num_heads, cross: bool, shared_kv_norm: bool, **kw):
        super().__init__(dim, num_heads, kv_dim=dim, cross=cross and not shared_kv_norm, **kw)
        self.cross_layer = cross

    def forward(self, x, x_mask, kv=None, kv_mask=None, structural=None, need_weights=False):
        q = self.norm_q(x)
        if kv is None:
            kvn, key_mask = q, x_mask
        else:
            kvn, key_mask = (self.norm_kv or self.norm_q)(kv), kv_mask
        a, w = self.attn(q, kvn, kvn, key_mask=key_mask, structural_mask=structural, need_weights=need_weights)
        x = (q if self.literal_residual else x) + self.res_dropout(a)
        h = self.norm_ff(x)
        x = (h if self.literal_residual else x) + self.res_dropout(self.ff(h))
        return x * x_mask.unsqueeze(-1).to(x.dtype), w


class MulTEncoder(nn.Module):
    """A stack of :class:`MulTLayer` and a final LayerNorm; cross-modal stacks attend to the fixed ``kv``."""

    def __init__(self, dim, num_heads, num_layers, cross: bool, shared_kv_norm: bool, future: bool, **kw):
        super().__init__()
        self.layers = nn.ModuleList(
            [MulTLayer(dim, num_heads, cross, shared_kv_norm, **kw) for _ in range(num_layers)]
        )
        self.norm = nn.LayerNorm(dim)
        self.future = future

    def forward(self, x, x_mask, kv=None, kv_mask=None, need_weights=False):
        structural = future_mask(x_mask, x_mask if kv is None else kv_mask) if self.future else None
        weights = []
        for layer in self.layers:
            x, w = layer(x, x_mask, kv, kv_mask, structural, need_weights)
            weights.append(w)
        return self.norm(x) * x_mask.unsqueeze(-1).to(x.dtype), weights


def xavier_init(module: nn.Module) -> None:
    """The reference's initialisation: Xavier-uniform attention input projections (as one stacked
    ``[3d, d]`` matrix, fairseq's ``in_proj_weight``) and output projection, Xavier feed-forward weights,
    zero biases; LayerNorms and everything outside the transformers keep PyTorch's defaults."""
    for layer in [m for m in module.modules() if isinstance(m, MulTLayer)]:
        att = layer.attn
        d_in, d_out = att.q_proj.in_features, att.q_proj.out_features
        bound = math.sqrt(6.0 / (d_in + 3 * d_out))
        for lin in (att.q_proj, att.k_proj, att.v_proj):
            nn.init.uniform_(lin.weight, -bound, bound)
            nn.init.zeros_(lin.bias)
        nn.init.xavier_uniform_(att.out_proj.weight)
        nn.init.zeros_(att.out_proj.bias)
        for lin in (layer.ff[0], layer.ff[3]):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)


@register_model("mult")
class MulT(FusionModel):
    """Multimodal Transformer with all ``n (n - 1)`` directional cross-modal transformers (6 for L, V, A)."""

    min_modalities = 2

    def __init__(
        self,
        modality_dims: dict[str, int],
        task: TaskSpec,
        d_model: int = 30,
        num_heads: int = 5,
        cross_layers: int = 5,
        self_layers: int | None = None,
        kernel_size: int | dict = 1,
        attn_dropout: float | dict | None = None,
        relu_dropout: float = 0.1,
        res_dropout: float = 0.1,
        embed_dropout: float = 0.25,
        text_dropout: float | None = None,
        out_dropout: float = 0.0,
        pooling: str = "last",
        literal_residual: bool = False,
        future: bool = True,
        shared_kv_norm: bool = True,
        reembed: bool = True,
        position_offset: int = 1,
        init: str = "xavier",
        return_attention: bool = False,
    ):
        super().__init__(modality_dims, task)
        if pooling not in ("last", "mean"):
            raise ValueError(f"mult: pooling must be 'last' or 'mean', got {pooling!r}")
        if init not in ("xavier", "torch"):
            raise ValueError(f"mult: init must be 'xavier' or 'torch', got {init!r}")
        if position_offset not in (0, 1):
            raise ValueError(f"mult: position_offset must be 0 or 1, got {position_offset!r}")
        self.d_model = d_model
        self.pooling = pooling
        self.return_attention = return_attention
        self.embed_scale = math.sqrt(d_model)
        self.reembed, self.position_offset = bool(reembed), int(position_offset)
        # the reference builds its self-attention stacks with max(--nlevels, 3) layers
        self.self_layers = max(cross_layers, 3) if self_layers is None else int(self_layers)
        # the reference drops out the text input (before its Conv1D) with the embedding dropout
        self.text_dropout = nn.Dropout(embed_dropout if text_dropout is None else text_dropout)
        kernels = kernel_size if isinstance(kernel_size, dict) else {m: kernel_size for m in self.modalities}
        self.proj = nn.ModuleDict(
            {m: TemporalConv(d, d_model, int(kernels[m])) for m, d in modality_dims.items()}
        )
        self.embed_dropout = nn.Dropout(embed_dropout)
        attn_p = self._attention_dropouts(attn_dropout)
        layer_kw = dict(
            relu_dropout=relu_dropout,
            res_dropout=res_dropout,
            literal_residual=literal_residual,
            shared_kv_norm=bool(shared_kv_norm),
            future=bool(future),
        )
        # queries from the target, keys/values from the source: one transformer per ordered pair
        self.directions = [(s, t) for t in self.modalities for s in self.modalities if s != t]
        self.cross = nn.ModuleDict(
            {
                direction_name(s, t): MulTEncoder(
                    d_model, num_heads, cross_layers, cross=True, attn_dropout=attn_p[s], **layer_kw
                )
                for s, t in self.directions
            }
        )
        n_src = len(self.modalities) - 1
        self.memory = nn.ModuleDict(
            {
                m: MulTEncoder(
                    n_src * d_model, num_heads, self.self_layers, cross=False, attn_dropout=attn_p["self"], **layer_kw
                )
                for m in self.modalities
            }
        )
        combined = len(self.modalities) * n_src * d_model
        self.proj1 = nn.Linear(combined, combined)
        self.proj2 = nn.Linear(combined, combined)
        self.out_dropout = nn.Dropout(out_dropout)
        self.out_layer = nn.Linear(combined, self.output_dim)
        if init == "xavier":
            xavier_init(self)

    def _attention_dropouts(self, attn_dropout) -> dict[str, float]:
        """Attention dropout per key/value source modality (cross-modal transformers) and ``"self"`` (the
        self-attention transformers). A dict gives them separately, as MulT's reference code (and MMSA) does
        with ``attn_dropout`` / ``attn_dropout_a`` / ``attn_dropout_v``; a number applies to all. The default
        is the reference's: 0.1 for text keys and the self-attention stacks, 0.0 for every other source."""
        if attn_dropout is None:
            return {k: (0.1 if k in ("text", "self") else 0.0) for k in [*self.modalities, "self"]}
        if not isinstance(attn_dropout, dict):
            return {k: float(attn_dropout) for k in [*self.modalities, "self"]}
        needed = [*self.modalities, "self"]
        missing = [k for k in needed if k not in attn_dropout]
        extra = [k for k in attn_dropout if k not in needed]
        if missing or extra:
            raise ValueError(
                f"mult: attn_dropout dict needs exactly the keys {needed} (source modalities and 'self'); "
                f"missing {missing}, unknown {extra}"
            )
        return {k: float(v) for k, v in attn_dropout.items()}

    def positions(self, steps: int, dim: int, like: torch.Tensor) -> torch.Tensor:
        fn = reference_positions if self.position_offset == 1 else sinusoidal_positions
        return fn(steps, dim, like.device, like.dtype).unsqueeze(0)

    def embed(self, values: torch.Tensor, mask: torch.Tensor, modality: str) -> torch.Tensor:
        """``Z^[0] = sqrt(d) * Conv1D(X) + PE`` (eq. 4-5), zero at padded steps."""
        if modality == "text":
            values = self.text_dropout(values)
        x = self.proj[modality](values, mask) * self.embed_scale
        x = x + self.positions(x.shape[1], self.d_model, x)
        return self.embed_dropout(x) * mask.unsqueeze(-1).to(x.dtype)

    def reembed_memory(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The reference's self-attention stack embeds its input again: ``sqrt(2d) * h + PE``, dropout."""
        if not self.reembed:
            return h
        x = h * math.sqrt(h.shape[-1]) + self.positions(h.shape[1], h.shape[-1], h)
        return self.embed_dropout(x) * mask.unsqueeze(-1).to(x.dtype)

    def forward(self, inputs: ModelInputs) -> ModelOutput:
        inputs = self.check_inputs(inputs)
        z0 = {m: self.embed(v, mask, m) for m, (v, mask) in inputs.items()}
        masks = {m: inputs[m].mask for m in self.modalities}
        cross_out, cross_attn, summaries = {}, {}, []
        for t in self.modalities:
            parts = []
            for s in self.modalities:
                if s == t:
                    continue
                name = direction_name(s, t)
                y, w = self.cross[name](
                    z0[t], masks[t], kv=z0[s], kv_mask=masks[s], need_weights=self.return_attention
                )
                cross_out[name] = y
                if self.return_attention:
                    cross_attn[name] = w[-1]
                parts.append(y)
            h, _ = self.memory[t](self.reembed_memory(torch.cat(parts, dim=-1), masks[t]), masks[t])
            summaries.append(last_valid(h, masks[t]) if self.pooling == "last" else masked_mean(h, masks[t]))
        last_hs = torch.cat(summaries, dim=-1)
        proj = self.proj2(self.out_dropout(torch.relu(self.proj1(last_hs)))) + last_hs
        raw = self.out_layer(proj)
        extras = {"cross_outputs": cross_out, "representation": last_hs}
        if self.return_attention:
            extras["cross_attention"] = cross_attn
        return ModelOutput(self.bound_output(raw), extras)
