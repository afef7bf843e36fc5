"""Recurrent Multistage Fusion Network (RMFN; Liang, Liu, Zadeh & Morency, 2018 -- paper 001, §3).

One LSTHM per modality (the LSTM of MARN [68] whose gates also read the cross-modal code ``z_{t-1}``) steps
over a common time axis; at every step the Multistage Fusion Process (MFP) runs ``K`` stages over
``h_t = ⊕_m h_t^m``:

- HIGHLIGHT: a decoder LSTM over the stages, initial memory ``M(h_t)``, input at stage k the previous
  attention ``a_t^[k-1]``; its output is softmaxed into ``a_t^[k]`` over the dimensions of ``h_t`` and
  ``h̃_t^[k] = h_t ⊙ a_t^[k]``;
- FUSE: an LSTM over the stages reading ``h̃_t^[k]`` (its input gate = local fusion, forget/output gates =
  integration with earlier stages), initial memory a learned vector initialised from a random orthogonal
  matrix;
- SUMMARIZE: a network ``S`` over ``s_t^[1:K]`` giving ``z_t``, fed to every LSTHM at ``t+1``.

The prediction is read from ``E = (⊕_m h_T^m) ⊕ z_T``. Interpretation choices are listed in
``docs/models/rmfn.md``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from emofusion.data.batch import ModelInputs
from emofusion.data.format_utils import as_bool
from emofusion.models.base import FusionModel, ModelOutput
from emofusion.models.layers import OutputHead, resample_to_lengths
from emofusion.models.registry import register_model
from emofusion.tasks import TaskSpec


def _lstm_update(gates: torch.Tensor, c_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard LSTM cell update from the summed pre-activations ``[..., 4H]`` (order i, f, g, o)."""
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


class LSTHMBank(nn.Module):
    """All modalities' LSTHMs, stepped together: ``gates^m = W^m x_t^m + U^m h_{t-1}^m + V^m z_{t-1} + b^m``.

    The ``W x`` terms are computed for all steps before the recursion; inside a step the ``U h`` terms of all
    modalities are one batched matmul (stacked ``U`` of shape ``[M, H, 4H]``) and the ``V z`` terms one matmul.
    ``z_dim == 0`` gives plain LSTMs (RMFN without MFP).
    """

    def __init__(self, input_dims: dict[str, int], hidden_dim: int, z_dim: int):
        super().__init__()
        self.modalities = list(input_dims)
        self.hidden_dim = hidden_dim
        n, h4 = len(input_dims), 4 * hidden_dim
        self.W = nn.ModuleDict({m: nn.Linear(d, h4) for m, d in input_dims.items()})
        self.U = nn.Parameter(torch.empty(n, hidden_dim, h4))
        self.V = nn.Linear(z_dim, n * h4, bias=False) if z_dim > 0 else None
        bound = 1.0 / math.sqrt(hidden_dim)
        nn.init.uniform_(self.U, -bound, bound)
        with torch.no_grad():
            for lin in self.W.values():
                # forget-gate bias 1: keeps the memory over the first steps of training
                lin.bias[hidden_dim : 2 * hidden_dim].fill_(1.0)

    def project_inputs(self, aligned: dict[str, torch.Tensor]) -> torch.Tensor:
        """``W^m x_t^m + b^m`` for all modalities and steps: ``[T, M, B, 4H]``."""
        return torch.stack([self.W[m](aligned[m]) for m in self.modalities], dim=0).permute(2, 0, 1, 3)

    def step(self, pre_x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, z: torch.Tensor | None):
        """One step for all modalities: ``pre_x``, ``h``, ``c`` are ``[M, B, ·]``, ``z`` is ``[B, Z]``."""
        gates = pre_x + torch.bmm(h, self.U)
        if self.V is not None and z is not None:
            n, batch = h.shape[0], h.shape[1]
            gates = gates + self.V(z).view(batch, n, -1).transpose(0, 1)
        return _lstm_update(gates, c)


class MultistageFusion(nn.Module):
    """HIGHLIGHT -> FUSE for K stages, then SUMMARIZE, on a batch of ``h_t`` ``[B, D]`` (one time step)."""

    def __init__(
        self,
        h_dim: int,
        stages: int,
        fuse_dim: int,
        z_dim: int,
        summarize_dim: int,
        highlight: bool,
        highlight_scale: bool,
        summarize: str,
        dropout: float,
    ):
        super().__init__()
        self.stages = stages
        self.highlight = highlight
        self.h_dim = h_dim
        self.fuse_dim = fuse_dim
        # a_t sums to one over D dimensions, so h ⊙ a is ~1/D of h; scaling by D (a reparametrisation: the
        # function class is unchanged) makes uniform attention the identity, so FUSE sees inputs of the
        # same scale with or without HIGHLIGHT and the no-HIGHLIGHT ablation differs only in the weights
        self.scale = float(h_dim) if highlight_scale else 1.0
        if highlight:
            self.memory_init = nn.Linear(h_dim, h_dim)  # network M: h_t -> HIGHLIGHT LSTM memory space
            self.highlight_cell = nn.Linear(2 * h_dim, 4 * h_dim)  # decoder LSTM: input a^[k-1], state D
        # FUSE LSTM over the stages
        self.fuse_in = nn.Linear(h_dim, 4 * fuse_dim)
        self.fuse_rec = nn.Linear(fuse_dim, 4 * fuse_dim, bias=False)
        nn.init.orthogonal_(self.fuse_rec.weight)
        # initial FUSE memory c^FUSE[0]: a learned vector shared by all steps and samples, initialised as a
        # row of a random orthogonal matrix (our reading of "initialised using random orthogonal matrices")
        q = torch.empty(fuse_dim, fuse_dim)
        nn.init.orthogonal_(q)
        self.fuse_c0 = nn.Parameter(q[0].clone())
        if summarize not in ("all", "last"):
            raise ValueError(f"summarize must be 'all' or 'last', got {summarize!r}")
        self.summarize = summarize
        s_in = fuse_dim * (stages if summarize == "all" else 1)
        self.summarizer = nn.Sequential(
            nn.Linear(s_in, summarize_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(summarize_dim, z_dim),
            nn.Tanh(),
        )

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns ``z_t`` ``[B, Z]`` and the attention weights ``a_t^[1:K]`` ``[B, K, D]`` (None without HIGHLIGHT)."""
        batch = h.shape[0]
        s = h.new_zeros(batch, self.fuse_dim)
        c_fuse = self.fuse_c0.unsqueeze(0).expand(batch, -1)
        if self.highlight:
            c_hl = self.memory_init(h)
            h_hl = h.new_zeros(batch, self.h_dim)
            # decoder start token: uniform attention
            a = h.new_full((batch, self.h_dim), 1.0 / self.h_dim)
        weights, outputs = [], []
        for _ in range(self.stages):
            if self.highlight:
                h_hl, c_hl = _lstm_update(self.highlight_cell(torch.cat([a, h_hl], dim=-1)), c_hl)
                a = torch.softmax(h_hl, dim=-1)
                weights.append(a)
                h_tilde = h * a * self.scale
            else:
                h_tilde = h
            s, c_fuse = _lstm_update(self.fuse_in(h_tilde) + self.fuse_rec(s), c_fuse)
            outputs.append(s)
        summary = torch.cat(outputs, dim=-1) if self.summarize == "all" else outputs[-1]
        z = self.summarizer(summary)
        return z, (torch.stack(weights, dim=1) if weights else None)


@register_model("rmfn")
class RMFN(FusionModel):
    """Recurrent Multistage Fusion Network.

    Options: ``stages`` (K), ``mfp`` (False = LSTHMs without z, i.e. "RMFN (no MFP)"), ``highlight``
    (False = FUSE on the unhighlighted h_t, "RMFN (no HIGHLIGHT)"), ``hidden_dim`` (per-modality LSTHM size),
    ``fuse_dim``, ``z_dim``, ``summarize`` ("all" = S over s^[1:K], "last" = S over s^[K]), ``reference``
    (time axis used when the modalities are not on a common axis; default text, else the first modality).

    Input alignment (``align``): the model needs one time axis. With word-aligned data (``synthetic:aligned``,
    the MFN files) the modalities already share it (the dataset layer aligned them by timestamps). Otherwise
    each sample's modalities are resampled (nearest neighbour, :func:`resample_to_lengths`, the function
    behind ``align_to_common_axis``) onto the reference modality's steps; this is the identity for samples
    whose lengths already agree. ``extras["alignment"]`` says which happened ("given" / "resampled:<ref>").
    """

    # paper 001 Fig. 3 (HIGHLIGHT weights per stage), drawn by the reporting layer after a run; a name, not an
    # import, so this module stays below evaluation/
    extra_plots = ("emofusion.evaluation.rmfn_plots:plot_rmfn_run",)

    def __init__(
        self,
        modality_dims: dict[str, int],
        task: TaskSpec,
        stages: int = 3,
        mfp: bool = True,
        highlight: bool = True,
        hidden_dim: int = 32,
        fuse_dim: int = 32,
        z_dim: int = 32,
        summarize_dim: int = 64,
        summarize: str = "all",
        highlight_scale: bool = True,
        head_dim: int = 64,
        dropout: float = 0.1,
        reference: str | None = None,
        align: str = "resample",
    ):
        super().__init__(modality_dims, task)
        if align not in ("resample", "index"):
            raise ValueError(f"rmfn: align must be 'resample' or 'index', got {align!r}")
        self.align = align
        if int(stages) < 1:
            raise ValueError(f"rmfn: stages must be >= 1, got {stages}")
        if reference is not None and reference not in modality_dims:
            raise ValueError(f"rmfn: reference modality {reference!r} not among {list(modality_dims)}")
        self.stages = int(stages)
        # options may arrive as strings from the CLI ("model.mfp=false")
        self.mfp = as_bool(mfp)
        self.highlight = as_bool(highlight) and self.mfp
        highlight_scale = as_bool(highlight_scale)
        self.hidden_dim = hidden_dim
        self.reference = reference or ("text" if "text" in modality_dims else self.modalities[0])
        h_dim = hidden_dim * len(self.modalities)
        self.z_dim = z_dim if self.mfp else 0
        self.lsthm = LSTHMBank(self.modality_dims, hidden_dim, self.z_dim)
        self.fusion = (
            MultistageFusion(
                h_dim,
                self.stages,
                fuse_dim,
                z_dim,
                summarize_dim,
                self.highlight,
                highlight_scale,
                summarize,
                dropout,
            )
            if self.mfp
            else None
        )
        self.dropout = nn.Dropout(dropout)
        self.head = OutputHead(h_dim + self.z_dim, self.output_dim, head_dim, dropout)
        self.modality_slices = {
            m: (i * hidden_dim, (i + 1) * hidden_dim) for i, m in enumerate(self.modalities)
        }

    def _common_axis(self, inputs) -> tuple[dict[str, torch.Tensor], torch.Tensor, str]:
        """Values ``{m: [B, T, D_m]}`` on one time axis and per-modality masks ``[M, B, T]``.

        Decided per sample (never per batch, so a sample gets the same axis alone or in any batch): the
        axis has the reference modality's length (or, if it is empty, the longest modality's), and every
        modality is resampled onto it with :func:`resample_to_lengths`, which is the identity when the
        lengths already agree (aligned data). ``align="index"`` instead takes step i of every modality as
        the same time (each modality's LSTHM stops at its own last step).
        """
        lengths = torch.stack([inputs[m][1].sum(1) for m in self.modalities], dim=0)  # [M, B]
        if self.align == "index":
            steps = max(inputs[m][0].shape[1] for m in self.modalities)
            values, masks = {}, []
            for m in self.modalities:
                v, mask = inputs[m]
                pad = steps - v.shape[1]
                values[m] = nn.functional.pad(v, (0, 0, 0, pad))
                masks.append(nn.functional.pad(mask, (0, pad), value=False))
            return values, torch.stack(masks, dim=0), "index"
        ref_len = lengths[self.modalities.index(self.reference)]  # the reference is always a modality
        target = torch.where(ref_len > 0, ref_len, lengths.max(0).values)
        steps = int(target.max().item()) if target.numel() else 0
        values, masks = {}, []
        for m in self.modalities:
            # all False for a modality without real steps (or without any step)
            values[m], new_mask = resample_to_lengths(*inputs[m], target, steps)
            masks.append(new_mask)
        nonempty = lengths > 0
        same = bool(((lengths == target.unsqueeze(0)) | ~nonempty).all())
        return values, torch.stack(masks, dim=0), "given" if same else f"resampled:{self.reference}"

    def forward(self, inputs: ModelInputs) -> ModelOutput:
        inputs = self.check_inputs(inputs)
        values, masks, alignment = self._common_axis(inputs)
        n, batch, steps = masks.shape
        any_values = values[self.modalities[0]]
        # zero padded values so they cannot reach anything even through the (masked-out) projections; a fill,
        # not a product: NaN/inf padding times 0 is NaN, and 0 * NaN in the LSTM backward poisons every gradient
        values = {m: values[m].masked_fill(~masks[i].unsqueeze(-1), 0.0) for i, m in enumerate(self.modalities)}
        # unbind once: indexing pre_x[t] inside the loop would make every step's backward allocate (and fill)
        # a zero gradient of the whole [T, M, B, 4H] tensor -- half of the training time at T=50
        pre_x = self.lsthm.project_inputs(values).unbind(0)  # T x [M, B, 4H]
        h = any_values.new_zeros(n, batch, self.hidden_dim)
        c = torch.zeros_like(h)
        z = any_values.new_zeros(batch, self.z_dim) if self.mfp else None
        time_mask = masks.any(dim=0)  # [B, T]: a step exists if any modality has a real value there
        attn, zs = [], []
        for t in range(steps):
            m_t = masks[:, :, t].unsqueeze(-1)  # [M, B, 1]
            h_new, c_new = self.lsthm.step(pre_x[t], h, c, z)
            # a modality's LSTHM holds its state where it has no real step (padding, missing frames)
            h = torch.where(m_t, h_new, h)
            c = torch.where(m_t, c_new, c)
            if self.mfp:
                h_cat = h.transpose(0, 1).reshape(batch, n * self.hidden_dim)
                z_new, a = self.fusion(h_cat)
                live = time_mask[:, t].unsqueeze(-1)
                z = torch.where(live, z_new, z)
                zs.append(z)
                if a is not None:
                    attn.append(a * live.unsqueeze(-1).to(a.dtype))
        h_final = h.transpose(0, 1).reshape(batch, n * self.hidden_dim)  # held states = each modality's last real step
        rep = torch.cat([h_final, z], dim=-1) if self.mfp else h_final
        pred = self.bound_output(self.head(self.dropout(rep)))
        extras: dict[str, object] = {
            "alignment": alignment,
            "time_mask": time_mask,
            "modality_slices": dict(self.modality_slices),
            "representation": rep,
        }
        if self.mfp:
            extras["z"] = torch.stack(zs, dim=1) if zs else any_values.new_zeros(batch, 0, self.z_dim)
        if attn:
            extras["highlight"] = torch.stack(attn, dim=1)  # [B, T, K, D], zeros at padded steps
        elif self.highlight:
            extras["highlight"] = any_values.new_zeros(batch, 0, self.stages, n * self.hidden_dim)
        return ModelOutput(pred, extras)
