"""MulT, the Multimodal Transformer (Tsai et al. 2019) as described in paper 002 §3 (eq. 1-8).

Per modality: temporal Conv1D projection to ``d_model`` (eq. 4), scaled input + sinusoidal positions (eq. 5).
For every ordered pair ``beta -> alpha`` a cross-modal transformer whose queries come from alpha and whose
keys/values come from beta's layer-0 sequence ``Z_beta^[0]`` (eq. 6-8), stacked ``cross_layers`` times.
Per target alpha the outputs ``[Z_{beta->alpha}; Z_{gamma->alpha}]`` are concatenated and run through a
self-attention transformer ("sequence model"); its last real step (or masked mean) per target is
concatenated over targets and passed through MulT's residual projection and the output layer.

Defaults follow the MulT reference implementation (d=30, 5 heads, 5 cross-modal layers, 3 self-attention
layers, kernel size 1, its dropout values); unaligned inputs are the normal case, with key padding masks.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from emofusion.data.batch import ModelInputs
from emofusion.models.attention import TransformerEncoder, sinusoidal_positions
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
        self_layers: int = 3,
        kernel_size: int | dict = 1,
        attn_dropout: float | dict = 0.1,
        relu_dropout: float = 0.1,
        res_dropout: float = 0.1,
        embed_dropout: float = 0.25,
        out_dropout: float = 0.0,
        pooling: str = "last",
        literal_residual: bool = False,
        return_attention: bool = False,
    ):
        super().__init__(modality_dims, task)
        if pooling not in ("last", "mean"):
            raise ValueError(f"mult: pooling must be 'last' or 'mean', got {pooling!r}")
        self.d_model = d_model
        self.pooling = pooling
        self.return_attention = return_attention
        self.embed_scale = math.sqrt(d_model)
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
        )
        # queries from the target, keys/values from the source: one transformer per ordered pair
        self.directions = [(s, t) for t in self.modalities for s in self.modalities if s != t]
        self.cross = nn.ModuleDict(
            {
                direction_name(s, t): TransformerEncoder(
                    d_model, num_heads, cross_layers, kv_dim=d_model, attn_dropout=attn_p[s], **layer_kw
                )
                for s, t in self.directions
            }
        )
        n_src = len(self.modalities) - 1
        self.memory = nn.ModuleDict(
            {
                m: TransformerEncoder(
                    n_src * d_model, num_heads, self_layers, attn_dropout=attn_p["self"], **layer_kw
                )
                for m in self.modalities
            }
        )
        combined = len(self.modalities) * n_src * d_model
        self.proj1 = nn.Linear(combined, combined)
        self.proj2 = nn.Linear(combined, combined)
        self.out_dropout = nn.Dropout(out_dropout)
        self.out_layer = nn.Linear(combined, self.output_dim)

    def _attention_dropouts(self, attn_dropout) -> dict[str, float]:
        """Attention dropout per key/value source modality (cross-modal transformers) and ``"self"`` (the
        self-attention transformers). A dict gives them separately, as MulT's reference code (and MMSA) does
        with ``attn_dropout`` / ``attn_dropout_a`` / ``attn_dropout_v``; a number applies to all."""
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

    def embed(self, values: torch.Tensor, mask: torch.Tensor, modality: str) -> torch.Tensor:
        """``Z^[0] = scale * Conv1D(X) + PE`` (eq. 4-5), zero at padded steps."""
        x = self.proj[modality](values, mask) * self.embed_scale
        x = x + sinusoidal_positions(x.shape[1], self.d_model, x.device, x.dtype).unsqueeze(0)
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
            h, _ = self.memory[t](torch.cat(parts, dim=-1), masks[t])
            summaries.append(last_valid(h, masks[t]) if self.pooling == "last" else masked_mean(h, masks[t]))
        last_hs = torch.cat(summaries, dim=-1)
        proj = self.proj2(self.out_dropout(torch.relu(self.proj1(last_hs)))) + last_hs
        raw = self.out_layer(proj)
        extras = {"cross_outputs": cross_out, "representation": last_hs}
        if self.return_attention:
            extras["cross_attention"] = cross_attn
        return ModelOutput(self.bound_output(raw), extras)
