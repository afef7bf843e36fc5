"""RRNN: recursive multi-attention over independently encoded views with a shared, gated memory (paper 000).

Beard et al., CoNLL 2018, §3. Per modality s a masked BiLSTM encodes its own, unaligned sequence into
``H_s`` (eq. 1-3). A shared memory ``m`` queries every view at each of ``hops`` analysis steps
(globally-contextualised attention, eq. 4-8); the attention-weighted contexts ``w = [a; v; t]`` update the
memory, either with the GRU-like gated cell (eq. 9-13, "GCA + gating", registered as ``rrnn``) or with an
ungated ``m = tanh(W [m; w] + b)`` ("GCA", registered as ``gca``). A final fully connected layer maps
``m(hops)`` to the task output (§3.4). Interpretation choices are listed in docs/models/rrnn.md.
"""

from __future__ import annotations

import torch
from torch import nn

from emofusion.data.batch import ModelInputs
from emofusion.models.base import FusionModel, ModelOutput
from emofusion.models.layers import OutputHead, SequenceEncoder, StridedFrontEnd, masked_mean, masked_softmax
from emofusion.models.registry import register_model
from emofusion.tasks import TaskSpec

ATTENTION_KINDS = ("multiplicative", "concat")
ATTEND_OVER = ("time", "features")
MEMORY_INITS = ("mean", "zeros")


class GlobalContextAttention(nn.Module):
    """Eq. 5-8 for one view and one hop: scores of ``H`` (``[B, T, D]``) against the memory ``m`` (``[B, D]``).

    multiplicative (Nam et al.): ``R = tanh(W1 h_k) * tanh(W2 m)``; concat (Bahdanau): ``R = tanh(W1 h_k + W2 m)``.
    Scores ``w3^T R`` (``heads`` columns for multi-head), softmax over real time steps, context
    ``c = sum_k alpha[k] h_k`` per head (heads concatenated). With ``over="features"`` the scores of each step
    are ``D`` per-dimension scores averaged over the real steps, softmaxed over dimensions, and scale the
    time-averaged encoder output (``c = D * alpha * mean_k h_k``, so uniform attention is the identity).
    """

    def __init__(
        self, dim: int, attn_dim: int, kind: str = "multiplicative", heads: int = 1, over: str = "time"
    ):
        super().__init__()
        # eq. 5 has no bias terms; with m = 0 multiplicative attention is therefore exactly uniform
        self.w1 = nn.Linear(dim, attn_dim, bias=False)
        self.w2 = nn.Linear(dim, attn_dim, bias=False)
        self.w3 = nn.Linear(attn_dim, dim if over == "features" else heads, bias=False)
        self.kind, self.heads, self.over = kind, heads, over

    def forward(self, h: torch.Tensor, mask: torch.Tensor, memory: torch.Tensor):
        key, query = self.w1(h), self.w2(memory).unsqueeze(1)  # [B, T, A], [B, 1, A]
        if self.kind == "multiplicative":
            r = torch.tanh(key) * torch.tanh(query)
        else:
            r = torch.tanh(key + query)
        scores = self.w3(r)  # [B, T, heads] or [B, T, D]
        if self.over == "features":
            alpha = torch.softmax(masked_mean(scores, mask), dim=-1)  # [B, D]
            context = h.shape[-1] * alpha * masked_mean(h, mask)
            return context, alpha
        alpha = masked_softmax(scores.transpose(1, 2), mask.unsqueeze(1))  # [B, heads, T]
        context = torch.bmm(alpha, h).flatten(1)  # [B, heads * D]
        return context, alpha


class RRNN(FusionModel):
    """Globally-contextualised attention (GCA) with a shared memory, gated (eq. 9-13) or ungated.

    Options: ``encoder_dim`` (per direction; outputs ``D = 2 * encoder_dim``), ``attention_dim`` (alignment
    space, default ``D``), ``hops`` (tau), ``attention`` (multiplicative | concat), ``tie_hops``, ``heads``,
    ``attend_over`` (time | features), ``memory_init`` (mean = §3.2 sum of time averages | zeros = §3.3),
    ``gating`` (eq. 9-13 vs ungated GCA update), ``view_gates`` / ``context_gate`` / ``update_gate`` (switch
    g_s, g_w, g_c individually; a disabled gate is 1), ``decoder_dim`` (the FC layer before the final linear
    layer, §4; 0 = final linear layer only), ``dropout``, ``frontend`` ({modality: stride}, default none: a
    parameter-free strided mean-pool of that modality before its encoder, :class:`StridedFrontEnd`; the
    attention extras are mapped back onto the input frames).

    Extras: ``attention`` {modality: ``[B, hops, T_m]``} (mean over heads; ``[B, hops, D]`` with
    ``attend_over="features"``), ``attention_heads`` {modality: ``[B, hops, heads, T_m]``} when heads > 1,
    ``memory`` ``[B, hops + 1, D]``, and with gating ``gate_view`` {modality: ``[B, hops, C]``},
    ``gate_context`` ``[B, hops, W]``, ``gate_update`` ``[B, hops, D]``.
    """

    def __init__(
        self,
        modality_dims: dict[str, int],
        task: TaskSpec,
        encoder_dim: int = 64,
        encoder_layers: int = 1,
        attention_dim: int | None = None,
        hops: int = 3,
        attention: str = "multiplicative",
        tie_hops: bool = False,
        heads: int = 1,
        attend_over: str = "time",
        memory_init: str = "mean",
        gating: bool = True,
        view_gates: bool = True,
        context_gate: bool = True,
        update_gate: bool = True,
        decoder_dim: int = 64,
        dropout: float = 0.1,
        frontend: dict[str, int] | None = None,
    ):
        super().__init__(modality_dims, task)
        self.frontend = StridedFrontEnd(frontend, modality_dims)
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {attention!r}")
        if attend_over not in ATTEND_OVER:
            raise ValueError(f"attend_over must be one of {ATTEND_OVER}, got {attend_over!r}")
        if memory_init not in MEMORY_INITS:
            raise ValueError(f"memory_init must be one of {MEMORY_INITS}, got {memory_init!r}")
        if hops < 1 or heads < 1:
            raise ValueError(f"hops and heads must be >= 1, got hops={hops}, heads={heads}")
        if attend_over == "features" and heads != 1:
            raise ValueError(
                "multi-head scores apply to attention over time; use heads=1 with attend_over='features'"
            )
        self.hops, self.tie_hops, self.heads = hops, tie_hops, heads
        self.attend_over, self.memory_init, self.gating = attend_over, memory_init, gating
        self.view_gates, self.context_gate, self.update_gate = view_gates, context_gate, update_gate
        self.encoders = nn.ModuleDict(
            {
                m: SequenceEncoder(d, encoder_dim, encoder_layers, True, dropout)
                for m, d in modality_dims.items()
            }
        )
        dim = 2 * encoder_dim  # D: every view's encoder output and the memory share this size (§3.2)
        self.dim = dim
        attn_dim = attention_dim or dim
        n_sets = 1 if tie_hops else hops
        self.attention = nn.ModuleDict(
            {
                m: nn.ModuleList(
                    GlobalContextAttention(dim, attn_dim, attention, heads, attend_over)
                    for _ in range(n_sets)
                )
                for m in self.modalities
            }
        )
        context_dim = dim * heads
        view_dim = context_dim * len(self.modalities)  # w = [a; v; t]
        if gating:
            # eq. 9-12; W_*m m + W_*w w + b written as one linear map of [m; w]
            self.gate_w = nn.Linear(dim + view_dim, view_dim)
            self.gate_c = nn.Linear(dim + view_dim, dim)
            if view_gates:
                self.gate_s = nn.ModuleDict(
                    {m: nn.Linear(dim + context_dim, context_dim) for m in self.modalities}
                )
            self.proposal = nn.Linear(dim + view_dim, dim)
        else:
            self.update = nn.Linear(dim + view_dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.head = OutputHead(dim, self.output_dim, decoder_dim, dropout)

    def _attention(self, modality: str, hop: int) -> GlobalContextAttention:
        return self.attention[modality][0 if self.tie_hops else hop]

    def initial_memory(self, encoded: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        first, _ = next(iter(encoded.values()))
        if self.memory_init == "zeros":  # §3.3: m(0) = 0
            return first.new_zeros(first.shape[0], self.dim)
        # §3.2: sum over modalities of the time-averaged encoder outputs (real steps only)
        return sum(masked_mean(h, mask) for h, mask in encoded.values())

    def forward(self, inputs: ModelInputs) -> ModelOutput:
        full = self.check_inputs(inputs)
        inputs = self.frontend(full)
        encoded = {}
        for m in self.modalities:
            values, mask = inputs[m]
            h, _ = self.encoders[m](values, mask)
            encoded[m] = (self.dropout(h), mask)
        memory = self.initial_memory(encoded)
        memories, attn = [memory], {m: [] for m in self.modalities}
        gates = {"view": {m: [] for m in self.modalities}, "context": [], "update": []}
        for hop in range(self.hops):
            contexts = []
            for m in self.modalities:
                h, mask = encoded[m]
                c, alpha = self._attention(m, hop)(h, mask, memory)
                attn[m].append(alpha)
                if self.gating and self.view_gates:
                    # eq. 11 defines g_s but not where it acts: it scales its view's context before concatenation
                    g_s = torch.sigmoid(self.gate_s[m](torch.cat([memory, c], -1)))
                    gates["view"][m].append(g_s)
                    c = g_s * c
                contexts.append(c)
            w = torch.cat(contexts, dim=-1)
            mw = torch.cat([memory, w], dim=-1)
            if self.gating:
                g_w = torch.sigmoid(self.gate_w(mw)) if self.context_gate else torch.ones_like(w)  # eq. 9
                g_c = (
                    torch.sigmoid(self.gate_c(mw)) if self.update_gate else torch.ones_like(memory)
                )  # eq. 10
                u = torch.tanh(self.proposal(torch.cat([memory, g_w * w], dim=-1)))  # eq. 12
                memory = (1 - g_c) * memory + g_c * u  # eq. 13
                gates["context"].append(g_w)
                gates["update"].append(g_c)
            else:
                memory = torch.tanh(self.update(mw))  # GCA: ungated update
            memories.append(memory)
        pred = self.head(self.dropout(memory))
        extras: dict[str, object] = {"memory": torch.stack(memories, dim=1)}
        if self.attend_over == "time" and self.frontend.strides:
            attn = {m: [self.frontend.unpool_weights(m, a, full[m][1]) for a in att] for m, att in attn.items()}
        if self.attend_over == "time":
            extras["attention"] = {m: torch.stack(a, 1).mean(2) for m, a in attn.items()}  # [B, hops, T]
            if self.heads > 1:
                extras["attention_heads"] = {m: torch.stack(a, 1) for m, a in attn.items()}
        else:
            extras["attention"] = {m: torch.stack(a, 1) for m, a in attn.items()}  # [B, hops, D]
        extras["attend_over"] = self.attend_over
        if self.gating:
            if self.view_gates:
                extras["gate_view"] = {m: torch.stack(g, 1) for m, g in gates["view"].items()}
            extras["gate_context"] = torch.stack(gates["context"], 1)
            extras["gate_update"] = torch.stack(gates["update"], 1)
        return ModelOutput(self.bound_output(pred), extras)


@register_model("rrnn")
def build_rrnn(modality_dims: dict[str, int], task: TaskSpec, **options) -> RRNN:
    """GCA + gating (eq. 1-13), the paper's full model."""
    options.setdefault("gating", True)
    return RRNN(modality_dims, task, **options)


@register_model("gca")
def build_gca(modality_dims: dict[str, int], task: TaskSpec, **options) -> RRNN:
    """GCA without the gated memory update (the ablation row of Table 3)."""
    if options.pop("gating", False):
        raise ValueError("model 'gca' is the ungated variant; use model 'rrnn' for gating")
    return RRNN(modality_dims, task, gating=False, **options)
