"""Tensor Fusion Network (Zadeh, Chen, Poria, Cambria & Morency, EMNLP 2017).

Three parts, as in the paper:

* modality embedding subnetworks: language is an LSTM over the words whose final state goes through a small
  fully connected layer; acoustic and visual features are averaged over the utterance (the paper averages
  COVAREP / FACET frames) and go through a 3-layer ReLU network;
* the tensor fusion layer: the 3-fold Cartesian product ``z = [z_1; 1] (x) [z_2; 1] (x) [z_3; 1]`` of the
  embeddings, each extended with a constant 1 so the unimodal and bimodal terms survive, flattened;
* the sentiment inference subnetwork: FC layers on ``z`` (ReLU, ReLU, linear output).

Any subset of >= 1 modalities works: the product runs over whatever the model was built with.
Sizes default to MMSA 2.2.1's CMU-MOSEI configuration (the paper's own sizes are options, see docs/models/tfn.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from emofusion.data.batch import ModelInputs
from emofusion.models.base import FusionModel, ModelOutput
from emofusion.models.layers import SafeBatchNorm1d, SequenceEncoder
from emofusion.models.registry import register_model
from emofusion.tasks import TaskSpec

# MMSA 2.2.1 MOSEI defaults (config_regression.json: hidden_dims [text, audio, video] = [128, 16, 128])
DEFAULT_HIDDEN = {"text": 128, "audio": 16, "visual": 128}
FALLBACK_HIDDEN = 32  # other modality names: the paper's 32-unit acoustic/visual subnetworks


def _per_modality(value, modalities, name: str, default: dict | None = None, fallback=None) -> dict:
    """An int/float for every modality, or a mapping (missing names take ``default`` / ``fallback``).

    A mapping may name modalities the model was not built with (one config serves every modality subset).
    """
    if isinstance(value, dict):
        bad = {k: v for k, v in value.items() if isinstance(v, bool) or not isinstance(v, int | float)}
        if bad:  # YAML reads "{audio:32}" (no space after the colon) as the key "audio:32" with no value
            hint = " (in YAML flow mappings put a space after each colon: {audio: 32})" if any(
                ":" in str(k) for k in bad) else ""
            raise ValueError(f"{name}: every value must be a number, got {bad}{hint}")
        return {m: value.get(m, (default or {}).get(m, fallback)) for m in modalities}
    if value is None:
        return {m: (default or {}).get(m, fallback) for m in modalities}
    return {m: value for m in modalities}


class SequenceSubNet(nn.Module):
    """Language embedding subnetwork: LSTM over the real steps -> final state -> dropout -> linear.

    The paper feeds the LSTM outputs to a fully connected network; with variable-length input we take the
    state at the last real word (as the authors' PyTorch re-implementation and MMSA do), so padding never counts.
    """

    def __init__(self, input_dim: int, hidden_dim: int, out_dim: int, dropout: float):
        super().__init__()
        self.encoder = SequenceEncoder(input_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden_dim, out_dim)
        self.output_dim = out_dim

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        _, final = self.encoder(values, mask)
        return self.linear(self.dropout(final))


class AveragedSubNet(nn.Module):
    """Acoustic / visual embedding subnetwork: masked time average -> [batch norm] -> dropout -> 3 x (FC, ReLU)."""

    def __init__(
        self, input_dim: int, hidden_dim: int, dropout: float, batch_norm: bool = False, layers: int = 3
    ):
        super().__init__()
        self.norm = SafeBatchNorm1d(input_dim) if batch_norm else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        dims = [input_dim] + [hidden_dim] * layers
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.output_dim = hidden_dim

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # an utterance with one averaged frame (MMSA's "averaged" input) is its own mean
        values = torch.where(mask.unsqueeze(-1), values, 0.0)  # padding may hold anything, even NaN
        # masked_mean without its multiply by the mask: the padding is already exactly zero (same result)
        count = mask.sum(1, keepdim=True).to(values.dtype).clamp_min(1.0)
        x = values[:, 0] if values.shape[1] == 1 else values.sum(1) / count
        x = self.dropout(self.norm(x))
        for linear in self.linears:
            x = F.relu(linear(x))
        return x


class ModalityEmbeddings(nn.Module):
    """One embedding subnetwork per modality (shared by ``tfn`` and ``lmf``)."""

    def __init__(
        self,
        modality_dims: dict[str, int],
        hidden_dims=None,
        text_out: int = 128,
        dropout=0.4,
        sequence_modalities=("text",),
        batch_norm: bool = False,
        subnet_layers: int = 3,
    ):
        super().__init__()
        modalities = list(modality_dims)
        hidden = _per_modality(hidden_dims, modalities, "hidden_dims", DEFAULT_HIDDEN, FALLBACK_HIDDEN)
        drop = _per_modality(dropout, modalities, "dropout", fallback=0.0)
        if isinstance(sequence_modalities, str):  # "text" or "text,audio" from the command line
            sequence_modalities = [x for x in sequence_modalities.split(",") if x]
        # a sequence modality the model was not built with is simply absent (modality subsets)
        self.sequence_modalities = [m for m in modalities if m in tuple(sequence_modalities)]
        self.nets = nn.ModuleDict()
        for m, d in modality_dims.items():
            if m in self.sequence_modalities:
                self.nets[m] = SequenceSubNet(d, int(hidden[m]), int(text_out), float(drop[m]))
            else:
                self.nets[m] = AveragedSubNet(
                    d, int(hidden[m]), float(drop[m]), batch_norm, int(subnet_layers)
                )
        self.output_dims = {m: net.output_dim for m, net in self.nets.items()}

    def forward(self, inputs) -> dict[str, torch.Tensor]:
        return {m: net(*inputs[m]) for m, net in self.nets.items()}

    def averaged_modalities(self) -> tuple[str, ...]:
        return tuple(m for m, net in self.nets.items() if isinstance(net, AveragedSubNet))


def extend_with_one(z: torch.Tensor) -> torch.Tensor:
    """``[z; 1]``: the constant 1 keeps lower-order (unimodal, bimodal) terms in the product."""
    return torch.cat([z, z.new_ones(z.shape[0], 1)], dim=1)


def tensor_fusion(embeddings: list[torch.Tensor]) -> torch.Tensor:
    """Flattened outer product of the 1-extended embeddings: ``[B, prod_m (d_m + 1)]``."""
    fused = extend_with_one(embeddings[0])
    for z in embeddings[1:]:
        # bmm of [B, P, 1] x [B, 1, d]: faster than a broadcast multiply forward and (above all) backward
        fused = torch.bmm(fused.unsqueeze(2), extend_with_one(z).unsqueeze(1)).flatten(1)
    return fused


KEEP_BITS = 15


def dropout_mask(shape, p: float, device=None) -> tuple[torch.Tensor, float]:
    """Float 0/1 keep-mask with P(keep) = round((1 - p) * 2**15) / 2**15, and that probability.

    Dropout on TFN's fused tensor (~9M elements a batch at MMSA's MOSEI sizes) is a large part of a training
    step, most of it drawing one random number per element (``bernoulli_``). Here every 64-bit draw gives four
    16-bit lanes, each compared on its 15 uniform low bits: a Bernoulli mask whose keep probability is
    quantised to 2**-15 (the caller rescales by that exact probability, so the layer stays unbiased).
    """
    n = math.prod(shape)
    threshold = round((1.0 - p) * (1 << KEEP_BITS))
    if threshold >= 1 << KEEP_BITS:  # p ~ 0 (and an int16 comparison cannot hold 2**15)
        return torch.ones(shape, device=device), 1.0
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_()
    lanes = words.view(torch.int16)[:n].view(shape).bitwise_and_((1 << KEEP_BITS) - 1)
    # the comparison written straight into a float tensor: one pass (``(lanes < t).float()`` is two, 7x slower)
    mask = torch.lt(lanes, threshold, out=torch.empty(shape, device=device))
    return mask, threshold / (1 << KEEP_BITS)


class _DroppedFusionLinear(torch.autograd.Function):
    """``(z * mask) @ weight.T * scale + bias`` for ``z = (x)_m e_m`` (``tensor_fusion``'s layout), fused.

    Autograd over the same ops allocated three more fused-size tensors per step (the masked gradient, and two
    scalings by ``scale`` in addmm's backward); at TFN's MOSEI sizes (9M elements a batch) each fresh
    allocation is page faults costing ~20 ms. Here the product is masked in place, the scale is applied to the
    thin ``[B, P]`` output gradient, and the fused gradient is masked in place; values and gradients equal the
    autograd formula with the same mask (tests/test_fusion_baselines.py).
    """

    @staticmethod
    def forward(ctx, mask, weight, bias, scale, *extended):
        prefixes = [extended[0]]
        for e in extended[1:]:
            prefixes.append(torch.bmm(prefixes[-1].unsqueeze(2), e.unsqueeze(1)).flatten(1))
        # a fresh product nobody else holds is masked in place (one modality: the input itself, so a copy)
        z = prefixes.pop().mul_(mask) if len(extended) > 1 else extended[0] * mask
        ctx.scale = scale
        ctx.save_for_backward(mask, weight, z, *extended, *prefixes)
        return torch.addmm(bias, z, weight.t(), alpha=scale)

    @staticmethod
    def backward(ctx, grad):
        mask, weight, z, *rest = ctx.saved_tensors
        n = (len(rest) + 1) // 2
        # in the weights' dtype (under bf16 autocast the saved products are bf16, the weights fp32)
        extended, prefixes = [e.to(weight.dtype) for e in rest[:n]], [q.to(weight.dtype) for q in rest[n:]]
        g = grad.to(weight.dtype) * ctx.scale  # [B, P]
        grad_weight = g.t() @ z.to(weight.dtype) if ctx.needs_input_grad[1] else None
        grad_bias = grad.to(weight.dtype).sum(0) if ctx.needs_input_grad[2] else None
        grads = [None] * n
        if any(ctx.needs_input_grad[4:]):
            # the saved product is not needed any more: its buffer takes the fused gradient (one fresh
            # fused-size allocation less per step), then masked in place. A second backward over the same graph
            # (retain_graph=True) is refused by autograd's version check on the saved product.
            if z.dtype == weight.dtype and z.is_contiguous():
                gz = torch.mm(g, weight, out=z).mul_(mask)  # [B, prod d]
            else:
                gz = (g @ weight).mul_(mask)
            for k in range(n - 1, 0, -1):  # peel the last modality off the product: z_k = z_{k-1} (x) e_k
                g3 = gz.view(gz.shape[0], -1, extended[k].shape[1])
                grads[k] = torch.bmm(prefixes[k - 1].unsqueeze(1), g3).squeeze(1)
                gz = torch.bmm(g3, extended[k].unsqueeze(2)).squeeze(2)
            grads[0] = gz
        return None, grad_weight, grad_bias, None, *grads


def contract_fused(weight: torch.Tensor, extended: list[torch.Tensor]) -> torch.Tensor:
    """``z @ weight.T`` for ``z = (x)_m e_m`` without building ``z`` (the same FLOPs, no [B, prod d] tensor).

    ``weight`` is ``[P, prod_m d_m]`` with the first modality's index slowest (``tensor_fusion``'s layout).
    The largest contraction (the last modality) is one matmul; the rest are small batched products.
    """
    dims = [e.shape[1] for e in extended]
    out = extended[-1] @ weight.reshape(-1, dims[-1]).t()  # [B, P * prod(dims[:-1])]
    for i in range(len(dims) - 2, -1, -1):
        out = out.reshape(out.shape[0], -1, dims[i])  # [B, P * prod(dims[:i]), d_i]
        out = torch.bmm(out, extended[i].unsqueeze(2)).squeeze(2)
    return out  # [B, P]


@register_model("tfn")
class TensorFusionNetwork(FusionModel):
    """Tensor Fusion Network: embedding subnetworks -> 3-fold Cartesian product -> inference subnetwork.

    Options: ``hidden_dims`` (int or {modality: int}; default text 128, audio 16, visual 128 = MMSA MOSEI),
    ``text_out`` (language embedding size, 128), ``post_fusion_dim`` (16), ``post_fusion_layers`` (2 hidden FC
    layers), ``dropout`` (subnetworks, float or per modality, 0.4), ``fusion_dropout`` (on the fused tensor,
    0.4), ``sequence_modalities`` (modalities encoded by an LSTM, default ``("text",)``; the others are
    time-averaged), ``batch_norm`` (batch norm on the averaged inputs, as MMSA's SubNet; off by default).
    Extras: ``embeddings`` {modality: ``[B, d_m]``}, ``fused_dim``.
    """

    def __init__(
        self,
        modality_dims: dict[str, int],
        task: TaskSpec,
        hidden_dims=None,
        text_out: int = 128,
        post_fusion_dim: int = 16,
        post_fusion_layers: int = 2,
        dropout=0.4,
        fusion_dropout: float = 0.4,
        sequence_modalities=("text",),
        batch_norm: bool = False,
        subnet_layers: int = 3,
    ):
        super().__init__(modality_dims, task)
        if int(post_fusion_layers) < 1:
            raise ValueError(f"post_fusion_layers must be >= 1, got {post_fusion_layers}")
        self.embed = ModalityEmbeddings(
            modality_dims, hidden_dims, text_out, dropout, sequence_modalities, batch_norm, subnet_layers
        )
        self.fused_dim = math.prod(d + 1 for d in self.embed.output_dims.values())
        self.fusion_dropout = nn.Dropout(float(fusion_dropout))
        dims = [self.fused_dim] + [int(post_fusion_dim)] * int(post_fusion_layers)
        self.post_fusion = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(dims[-1], self.output_dim)

    def time_averaged_inputs(self) -> tuple[str, ...]:
        return self.embed.averaged_modalities()

    def forward(self, inputs: ModelInputs) -> ModelOutput:
        inputs = self.check_inputs(inputs)
        emb = self.embed(inputs)
        extended = [extend_with_one(emb[m]) for m in self.modalities]
        first = self.post_fusion[0]
        p = self.fusion_dropout.p
        if self.training and p > 0:
            # element-wise dropout on the fused tensor needs the tensor itself
            shape = (extended[0].shape[0], self.fused_dim)
            mask, keep = dropout_mask(shape, p, extended[0].device) if p < 1 else (None, 0.0)
            if keep > 0:
                # W (mask * z) / P(keep) + b, one autograd node (see _DroppedFusionLinear)
                x = _DroppedFusionLinear.apply(mask, first.weight, first.bias, 1.0 / keep, *extended)
            else:
                x = first(self.fusion_dropout(tensor_fusion([emb[m] for m in self.modalities])))
        else:
            x = contract_fused(first.weight, extended) + first.bias
        x = F.relu(x)
        for layer in self.post_fusion[1:]:
            x = F.relu(layer(x))
        prediction = self.bound_output(self.out(x))
        return ModelOutput(prediction, {"embeddings": emb, "fused_dim": self.fused_dim})
