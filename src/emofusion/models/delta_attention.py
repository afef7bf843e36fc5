"""Hierarchical delta-attention with DCCA (paper 002, §4, eq. 9-17).

Pipeline per modality M: Conv1D (eq. 9) -> multi-head *delta* self-attention (eq. 10-12) giving ``Y_M``
``[T_M, d_o]``; a 2-layer convolutional DCCA encoder ``E_M`` maps ``Y_M`` to ``Yhat_M`` ``[T_M, d_r]``
trained with a multi-view correlation objective (eq. 13); the fused sequence ``Yhat_Fused`` is attended
(eq. 14-16) with skip connections from ``Y_M``, pooled, and a linear (softmax) head classifies (eq. 17).

Interpretation choices (also in docs/models/delta_attention.md):
- RPE_ij = (Xhat_j - Xhat_i) . w_{clip(j - i)}: the paper's ``W_RelPos in R^{d_ch x T_M}`` has one column per
  position, which cannot handle variable lengths; we keep one column per *relative offset* in
  ``[-K, K]`` (K = window, or ``max_relative_position`` for an unlimited window; farther offsets share the
  edge column). One scalar per (i, j), shared by all heads, added to QK^T before the 1/sqrt(d_k) scaling.
- The window is symmetric, ``|i - j| <= w`` (the paper's "i <= j" remark is read as describing the pair).
- ``Yhat_Fused`` = the per-modality DCCA outputs concatenated along *time* (T_Fused = T_L + T_V + T_A), which
  works for unaligned input; the skip connection adds a projection of ``Y_M`` at the same step.
- Multi-view CCA = mean over modality pairs of the sum of canonical correlations (regularised covariances,
  float64, SVD of ``S11^-1/2 S12 S22^-1/2``), divided by ``d_r``; samples are utterances (masked-mean pooled
  sequences) by default, or frames on a common time axis (``cca_pairing="frames"``).
- The head is applied to the masked mean of ``Z_Fused``; with a regression task (MOSEI intensities) it
  outputs one value per emotion (bounded), with a classification task it outputs logits (softmax in the loss).
  ``eq17=True`` is eq. 17 literally on the intensity data: ``softmax(Linear(Z))`` over the 6 emotions,
  trained with cross-entropy against the dominant (argmax) emotion (loss ``dominant_ce``; samples without
  any emotion carry no class and are left out), and the class distribution is the prediction.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emofusion.data.batch import ModelInputs, Sample
from emofusion.data.collate import collate_samples
from emofusion.data.dataset import DatasetBundle, SampleDataset
from emofusion.data.registry import register_dataset
from emofusion.data.validation import check_unique_ids
from emofusion.models.attention import MultiHeadAttention, window_mask
from emofusion.models.base import FusionModel, ModelOutput
from emofusion.models.layers import masked_mean, resample_to_lengths
from emofusion.models.mult import TemporalConv
from emofusion.models.registry import register_model
from emofusion.tasks import TaskSpec

VARIANTS = ("full", "dcca", "unimodal")
INPUT_STAGES = ("raw", "representation", "correlated")


def _parse_window(window) -> int | None:
    if window is None or (isinstance(window, str) and window.lower() in ("inf", "none", "full")):
        return None
    if isinstance(window, float) and math.isinf(window):
        return None
    w = int(window)
    if w < 0:
        raise ValueError(f"delta window must be >= 0 or 'inf', got {window!r}")
    return w


# ----------------------------------------------------------------------------------------------------------
# eq. 10-12: delta self-attention


class DeltaSelfAttention(nn.Module):
    """Multi-head self-attention with the delta relative-position term and a sliding window (eq. 10-12).

    Per head: ``softmax((Q K^T + RPE) / sqrt(d_k)) V`` with ``V`` of size ``d_ch`` per head; heads are
    concatenated and projected by ``W_O`` to ``d_out`` (eq. 12).
    """

    def __init__(
        self,
        d_ch: int,
        num_heads: int = 4,
        d_k: int | None = None,
        d_out: int | None = None,
        window: int | str | None = None,
        max_relative_position: int = 32,
        use_delta: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.window = _parse_window(window)
        self.d_k = d_k or d_ch
        self.use_delta = use_delta
        self.attn = MultiHeadAttention(
            d_ch, num_heads, head_dim=self.d_k, value_head_dim=d_ch, out_dim=d_out or d_ch, dropout=dropout
        )
        self.max_offset = self.window if self.window is not None else int(max_relative_position)
        if use_delta:
            # one column per relative offset in [-K, K]: d_ch x (2K + 1) parameters, shared across heads
            self.rel_pos = nn.Parameter(torch.randn(d_ch, 2 * self.max_offset + 1) / math.sqrt(d_ch))
        else:
            self.register_parameter("rel_pos", None)

    def relative_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``RPE[b, i, j] = (x[b, j] - x[b, i]) . w[clip(j - i, -K, K)]`` as ``[B, T, T]``."""
        steps = x.shape[1]
        idx = torch.arange(steps, device=x.device)
        offset = (idx.unsqueeze(0) - idx.unsqueeze(1)).clamp(
            -self.max_offset, self.max_offset
        ) + self.max_offset
        proj = x @ self.rel_pos  # [B, T, 2K+1]: x_t . w_k for every step and offset
        rows = idx.unsqueeze(1).expand(steps, steps)  # i
        cols = idx.unsqueeze(0).expand(steps, steps)  # j
        # (x_j - x_i) . w_k = x_j . w_k - x_i . w_k, both read from proj at the pair's own offset
        return proj[:, cols, offset] - proj[:, rows, offset]

    def forward(self, x: torch.Tensor, mask: torch.Tensor, need_weights: bool = False):
        steps = x.shape[1]
        bias = None
        if self.use_delta:
            bias = (self.relative_logits(x) / math.sqrt(self.d_k)).unsqueeze(1)
        structural = window_mask(steps, steps, self.window, x.device)
        return self.attn(
            x, x, x, key_mask=mask, structural_mask=structural, bias=bias, need_weights=need_weights
        )


class DeltaEncoder(nn.Module):
    """One modality's unimodal module: Conv1D (eq. 9) then delta self-attention layer(s) -> ``Y_M``.

    With ``num_layers=1`` (default) this is exactly eq. 9-12 followed by a LayerNorm. Extra layers are
    post-norm transformer layers (delta attention + FFN, residuals) in ``d_ch`` before the final eq.-12 layer.
    """

    def __init__(
        self,
        in_dim: int,
        d_ch: int = 32,
        d_out: int = 64,
        num_heads: int = 4,
        d_k: int | None = None,
        kernel_size: int = 3,
        window=8,
        max_relative_position: int = 32,
        use_delta: bool = True,
        num_layers: int = 1,
        dropout: float = 0.1,
    ):
        super().__init__()
        kw = dict(
            num_heads=num_heads,
            d_k=d_k,
            window=window,
            max_relative_position=max_relative_position,
            use_delta=use_delta,
            dropout=dropout,
        )
        self.conv = TemporalConv(in_dim, d_ch, kernel_size, bias=True)
        self.blocks = nn.ModuleList()
        for _ in range(num_layers - 1):
            self.blocks.append(
                nn.ModuleDict(
                    {
                        "attn": DeltaSelfAttention(d_ch, d_out=d_ch, **kw),
                        "norm1": nn.LayerNorm(d_ch),
                        "ff": nn.Sequential(nn.Linear(d_ch, 4 * d_ch), nn.ReLU(), nn.Linear(4 * d_ch, d_ch)),
                        "norm2": nn.LayerNorm(d_ch),
                    }
                )
            )
        self.final = DeltaSelfAttention(d_ch, d_out=d_out, **kw)
        self.norm = nn.LayerNorm(d_out)
        self.dropout = nn.Dropout(dropout)

    def forward(self, values: torch.Tensor, mask: torch.Tensor, need_weights: bool = False):
        m = mask.unsqueeze(-1).to(values.dtype)
        x = self.conv(values, mask)
        weights = []
        for block in self.blocks:
            a, w = block["attn"](x, mask, need_weights)
            x = block["norm1"](x + self.dropout(a))
            x = block["norm2"](x + self.dropout(block["ff"](x))) * m
            weights.append(w)
        y, w = self.final(x, mask, need_weights)
        weights.append(w)
        return self.norm(y) * m, weights


# ----------------------------------------------------------------------------------------------------------
# §4.2: DCCA


def _scatter(h1: torch.Tensor, h2: torch.Tensor):
    """Centred scatter matrices (sums of outer products) of two views, float64: C11, C22, C12 and N."""
    a = h1.double() - h1.double().mean(0, keepdim=True)
    b = h2.double() - h2.double().mean(0, keepdim=True)
    return a.T @ a, b.T @ b, a.T @ b, float(h1.shape[0])


def correlations_from_covariances(s11, s22, s12, eps: float = 1e-3) -> torch.Tensor:
    """Canonical correlations from (co)variances: singular values of ``L1^-1 S12 L2^-T`` with
    ``S_ii + eps I = L_i L_i^T`` (Cholesky). Any whitening gives the same singular values as the usual
    ``S11^-1/2 S12 S22^-1/2``; Cholesky has a finite gradient everywhere (an eigendecomposition's gradient
    is infinite at repeated eigenvalues, e.g. a batch of identical rows), and ``svdvals``' gradient
    ``U V^T`` needs no eigen-gaps either."""
    eye1 = torch.eye(s11.shape[0], dtype=s11.dtype, device=s11.device)
    eye2 = torch.eye(s22.shape[0], dtype=s22.dtype, device=s22.device)
    l1 = torch.linalg.cholesky(s11 + eps * eye1)
    l2 = torch.linalg.cholesky(s22 + eps * eye2)
    t = torch.linalg.solve_triangular(l1, s12, upper=False)
    t = torch.linalg.solve_triangular(l2, t.T, upper=False).T
    return torch.linalg.svdvals(t)


def canonical_correlations(h1: torch.Tensor, h2: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Canonical correlations of two views ``[N, d1]``, ``[N, d2]`` (descending, ``min(d1, d2)`` values).

    Covariances (unbiased) are regularised with ``eps * I``; float64 (Andrew et al. 2013).
    """
    if h1.shape[0] != h2.shape[0]:
        raise ValueError(f"CCA views need the same number of samples, got {h1.shape[0]} and {h2.shape[0]}")
    n = h1.shape[0]
    if n < 2:
        raise ValueError("CCA needs at least 2 samples")
    c11, c22, c12, _ = _scatter(h1, h2)
    return correlations_from_covariances(c11 / (n - 1), c22 / (n - 1), c12 / (n - 1), eps)


def multiview_cca(views: list[torch.Tensor], eps: float = 1e-3) -> torch.Tensor:
    """Mean over view pairs of the *average* canonical correlation (sum / number of correlations), in [0, 1]."""
    pairs = [(i, j) for i in range(len(views)) for j in range(i + 1, len(views))]
    if not pairs:
        raise ValueError("multi-view CCA needs at least two views")
    vals = [canonical_correlations(views[i], views[j], eps).mean() for i, j in pairs]
    return torch.stack(vals).mean()


class RunningCCA(nn.Module):
    """Multi-view CCA objective (eq. 13) over enough samples to carry signal.

    A batch of 4 utterances with ``d_r = 16`` has canonical correlations [1, 1, 1, 0, ...] whatever the
    encoders do (4 samples span 3 centred dimensions). Here the covariances are pooled: the current batch's
    scatter matrices (with gradient) are added to an exponentially decayed running sum of earlier batches'
    (without gradient), ``S = (momentum * C_run + C_batch) / (momentum * N_run + N_batch)``, so the estimate
    rests on about ``N_batch / (1 - momentum)`` samples. ``momentum = 0`` is the plain per-batch CCA. The
    running sums update in training mode only and are not saved (a fresh estimate builds up in a few steps).
    """

    def __init__(self, num_views: int, dim: int, momentum: float = 0.9, eps: float = 1e-3):
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"cca_momentum must be in [0, 1), got {momentum}")
        self.momentum, self.eps = float(momentum), float(eps)
        self.pairs = [(i, j) for i in range(num_views) for j in range(i + 1, num_views)]
        for k in range(len(self.pairs)):
            for name in ("c11", "c22", "c12"):
                self.register_buffer(f"{name}_{k}", torch.zeros(dim, dim, dtype=torch.float64), persistent=False)
            self.register_buffer(f"n_{k}", torch.zeros((), dtype=torch.float64), persistent=False)

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        vals = []
        for k, (i, j) in enumerate(self.pairs):
            c11, c22, c12, n = _scatter(views[i], views[j])
            run = [getattr(self, f"{name}_{k}") for name in ("c11", "c22", "c12")]
            n_run = getattr(self, f"n_{k}")
            mom = self.momentum
            total = mom * n_run + n
            if float(total) < 2:
                continue
            s11, s22, s12 = ((mom * r + c) / (total - 1) for r, c in zip(run, (c11, c22, c12)))
            vals.append(correlations_from_covariances(s11, s22, s12, self.eps).mean())
            if self.training and mom > 0:
                with torch.no_grad():
                    for r, c in zip(run, (c11, c22, c12)):
                        r.mul_(mom).add_(c.detach())
                    n_run.mul_(mom).add_(n)
        if not vals:
            return views[0].new_zeros((), dtype=torch.float64)
        return torch.stack(vals).mean()


class ConvStack(nn.Module):
    """Two temporal convolutions with a ReLU between (the DCCA encoder / decoder of §4.2)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, kernel_size: int = 3):
        super().__init__()
        self.first = TemporalConv(in_dim, hidden, kernel_size, bias=True)
        self.second = TemporalConv(hidden, out_dim, kernel_size, bias=True)

    def forward(self, values, mask):
        return self.second(torch.relu(self.first(values, mask)), mask)


# ----------------------------------------------------------------------------------------------------------
# the model


@register_model("delta_attention")
class DeltaAttention(FusionModel):
    """Hierarchical delta-attention with DCCA (paper 002).

    ``variant``: ``full`` (delta attention -> DCCA -> fused attention -> head), ``dcca`` (head on the pooled
    DCCA representation: Table 2's "self-attended and canonically correlated" rows) or ``unimodal`` (head
    on one modality's pooled ``Y_M``; pick it with ``modality=`` or by passing one modality).

    ``input_stage`` is used by staged training: ``raw`` (features), ``representation`` (inputs are saved
    ``Y_M`` of size ``d_o``), ``correlated`` (inputs are saved ``[Yhat_M; Y_M]`` of size ``d_r + d_o``).
    """

    def __init__(
        self,
        modality_dims: dict[str, int],
        task: TaskSpec,
        variant: str = "full",
        modality: str | None = None,
        d_ch: int = 64,
        d_k: int | None = None,
        num_heads: int = 4,
        d_o: int = 128,
        num_layers: int = 1,
        kernel_size: int | dict = 3,
        window=8,
        max_relative_position: int = 32,
        use_delta: bool = True,
        dcca_hidden: int = 32,
        d_r: int = 16,
        dcca_kernel: int = 3,
        cca_pairing: str = "frames",
        cca_eps: float = 1e-3,
        cca_momentum: float = 0.9,
        cca_weight: float = 0.1,
        recon_weight: float = 0.0,
        d_t: int = 32,
        fused_heads: int = 1,
        fused_pooling: str = "modality",
        head_hidden: int = 0,
        dropout: float = 0.1,
        input_stage: str = "raw",
        dcca_task_grad: bool = True,
        return_attention: bool = False,
        eq17: bool = False,
    ):
        if eq17 and (task.kind != "emotion_intensity" or task.sequence_labels):
            raise ValueError(
                f"delta_attention eq17=True (eq. 17 on emotion intensities) needs a segment-level "
                f"emotion_intensity task, not {task.kind}; a classification task already gets softmax logits"
            )
        if variant not in VARIANTS:
            raise ValueError(f"delta_attention: variant must be one of {VARIANTS}, got {variant!r}")
        if input_stage not in INPUT_STAGES:
            raise ValueError(
                f"delta_attention: input_stage must be one of {INPUT_STAGES}, got {input_stage!r}"
            )
        if fused_pooling not in ("modality", "sequence"):
            raise ValueError(
                f"delta_attention: fused_pooling must be 'modality' or 'sequence', got {fused_pooling!r}"
            )
        if cca_pairing not in ("utterance", "frames"):
            raise ValueError(
                f"delta_attention: cca_pairing must be 'utterance' or 'frames', got {cca_pairing!r}"
            )
        if variant == "unimodal":
            if modality is not None:
                if modality not in modality_dims:
                    raise ValueError(
                        f"delta_attention: modality {modality!r} not among {list(modality_dims)}"
                    )
                modality_dims = {modality: modality_dims[modality]}
            if len(modality_dims) != 1:
                raise ValueError(
                    f"delta_attention variant='unimodal' takes one modality, got {list(modality_dims)}; "
                    "pass modality=NAME"
                )
            if input_stage != "raw":
                raise ValueError("delta_attention: the unimodal variant takes raw inputs")
        if variant == "dcca" and input_stage == "correlated":
            raise ValueError("delta_attention: variant='dcca' needs raw or representation inputs")
        expected = {"representation": d_o, "correlated": d_r + d_o}.get(input_stage)
        if expected is not None:
            bad = {m: d for m, d in modality_dims.items() if d != expected}
            if bad:
                raise ValueError(
                    f"delta_attention input_stage={input_stage!r} expects inputs of size {expected}, got {bad}"
                )
        super().__init__(modality_dims, task)
        self.variant = variant
        self.eq17 = bool(eq17)
        if self.eq17:
            self.default_loss = "dominant_ce"
        self.input_stage = input_stage
        self.d_o, self.d_r, self.d_t = d_o, d_r, d_t
        self.cca_pairing = cca_pairing
        self.cca_eps = cca_eps
        self.cca_weight = cca_weight
        self.recon_weight = recon_weight
        self.dcca_task_grad = dcca_task_grad
        self.return_attention = return_attention
        kernels = kernel_size if isinstance(kernel_size, dict) else {m: kernel_size for m in self.modalities}
        if input_stage == "raw":
            self.unimodal = nn.ModuleDict(
                {
                    m: DeltaEncoder(
                        d,
                        d_ch=d_ch,
                        d_out=d_o,
                        num_heads=num_heads,
                        d_k=d_k,
                        kernel_size=int(kernels[m]),
                        window=window,
                        max_relative_position=max_relative_position,
                        use_delta=use_delta,
                        num_layers=num_layers,
                        dropout=dropout,
                    )
                    for m, d in modality_dims.items()
                }
            )
        if variant == "unimodal":
            self.unimodal_head = _head(d_o, self.output_dim, head_hidden, dropout)
            return
        if input_stage != "correlated":
            self.dcca_enc = nn.ModuleDict(
                {m: ConvStack(d_o, dcca_hidden, d_r, dcca_kernel) for m in self.modalities}
            )
            # eq. 13 over the frames of the batch's utterances, with pooled covariances (see RunningCCA)
            self.cca = RunningCCA(len(self.modalities), d_r, cca_momentum, cca_eps)
            if recon_weight > 0:
                self.dcca_dec = nn.ModuleDict(
                    {m: ConvStack(d_r, dcca_hidden, d_o, dcca_kernel) for m in self.modalities}
                )
        if variant == "dcca":
            self.dcca_head = _head(d_r * len(self.modalities), self.output_dim, head_hidden, dropout)
            return
        # eq. 14-16 on Yhat_Fused (queries, keys and values all from the fused sequence)
        if d_t % fused_heads:
            raise ValueError(f"d_t {d_t} must be divisible by fused_heads {fused_heads}")
        self.fused_attn = MultiHeadAttention(
            d_r,
            fused_heads,
            head_dim=d_t // fused_heads,
            value_head_dim=d_t // fused_heads,
            out_dim=d_t,
            dropout=dropout,
        )
        self.skip = nn.ModuleDict({m: nn.Linear(d_o, d_t) for m in self.modalities})
        self.fused_norm = nn.LayerNorm(d_t)
        self.fused_pooling = fused_pooling
        pooled_dim = d_t * len(self.modalities) if fused_pooling == "modality" else d_t
        self.head = _head(pooled_dim, self.output_dim, head_hidden, dropout)  # eq. 17
        self.dropout = nn.Dropout(dropout)

    # -- pieces (also used by staged training) --
    def encode_unimodal(self, inputs: ModelInputs, need_weights: bool = False):
        ys, ws = {}, {}
        for m in self.modalities:
            values, mask = inputs[m]
            ys[m], ws[m] = self.unimodal[m](values, mask, need_weights)
        return ys, ws

    def encode_dcca(self, ys: dict, masks: dict) -> dict:
        return {m: self.dcca_enc[m](ys[m], masks[m]) for m in self.modalities}

    def cca_views(self, yhats: dict, masks: dict) -> list[torch.Tensor]:
        if self.cca_pairing == "utterance":
            return [masked_mean(yhats[m], masks[m]) for m in self.modalities]
        # frames: per sample, every modality resampled (nearest neighbour) onto the length of its longest
        # modality; each step of that common axis is one CCA sample (decided per sample, not per batch)
        lengths = torch.stack([masks[m].sum(1) for m in self.modalities])  # [M, B]
        target = lengths.max(0).values
        steps = int(target.max()) if target.numel() else 0
        views, common = [], None
        for m in self.modalities:
            v, new_mask = resample_to_lengths(yhats[m], masks[m], target, steps)
            views.append(v)
            common = new_mask if common is None else common & new_mask
        return [v[common] for v in views]

    def dcca_losses(self, ys: dict, yhats: dict, masks: dict) -> tuple[dict, dict]:
        aux, extras = {}, {}
        if len(self.modalities) >= 2:
            views = self.cca_views(yhats, masks)
            if views[0].shape[0] >= 1:
                corr = self.cca(views).to(views[0].dtype)
                extras["cca_correlation"] = corr.detach()
                if self.cca_weight > 0:
                    aux["cca"] = -self.cca_weight * corr
        if self.recon_weight > 0:  # the decoders exist exactly then (built with the DCCA encoders)
            errs = []
            for m in self.modalities:
                rec = self.dcca_dec[m](yhats[m], masks[m])
                errs.append(masked_mean(((rec - ys[m].detach()) ** 2), masks[m]).mean())
            aux["reconstruction"] = self.recon_weight * torch.stack(errs).mean()
        return aux, extras

    def fuse(self, yhats: dict, ys: dict, masks: dict, need_weights: bool = False):
        """eq. 14-16 with skip connections: ``Z = LN(Attn(Yhat_Fused) + skip(Y))``; returns Z and its mask."""
        fused = torch.cat([yhats[m] for m in self.modalities], dim=1)
        skip = torch.cat([self.skip[m](ys[m]) for m in self.modalities], dim=1)
        mask = torch.cat([masks[m] for m in self.modalities], dim=1)
        z, w = self.fused_attn(fused, fused, fused, key_mask=mask, need_weights=need_weights)
        z = self.fused_norm(self.dropout(z) + skip) * mask.unsqueeze(-1).to(z.dtype)
        return z, mask, w

    def forward(self, inputs: ModelInputs) -> ModelOutput:
        inputs = self.check_inputs(inputs)
        masks = {m: inputs[m].mask for m in self.modalities}
        extras: dict = {}
        aux: dict = {}
        if self.input_stage == "raw":
            ys, ws = self.encode_unimodal(inputs, self.return_attention)
            if self.return_attention:
                extras["delta_attention"] = {m: w[-1] for m, w in ws.items()}
        elif self.input_stage == "representation":
            # a fill, not a product: NaN/inf padding times 0 would be NaN (as in rmfn)
            ys = {m: inputs[m].values.masked_fill(~masks[m].unsqueeze(-1), 0.0) for m in self.modalities}
        else:
            ys, yhats = {}, {}
            for m in self.modalities:
                v = inputs[m].values.masked_fill(~masks[m].unsqueeze(-1), 0.0)
                yhats[m], ys[m] = v[..., : self.d_r], v[..., self.d_r :]
        extras["representations"] = ys
        if self.variant == "unimodal":
            (m,) = self.modalities
            raw = self.unimodal_head(masked_mean(ys[m], masks[m]))
            return self._output(raw, extras, aux)
        if self.input_stage != "correlated":
            yhats = self.encode_dcca(ys, masks)
            aux, cca_extras = self.dcca_losses(ys, yhats, masks)
            extras.update(cca_extras)
        extras["correlated"] = yhats
        if self.variant == "dcca":
            pooled = torch.cat([masked_mean(yhats[m], masks[m]) for m in self.modalities], dim=-1)
            if not self.dcca_task_grad:
                pooled = pooled.detach()
            return self._output(self.dcca_head(pooled), extras, aux)
        z, mask, w = self.fuse(yhats, ys, masks, self.return_attention)
        if self.return_attention:
            extras["fused_attention"] = w
        extras["fused_mask"] = mask
        if self.fused_pooling == "sequence":
            pooled = masked_mean(z, mask)
        else:
            # one mean per modality's segment of the fused sequence, so audio's ~10x more frames do not
            # outweigh the words in the summary
            pooled, start = [], 0
            for m in self.modalities:
                steps = masks[m].shape[1]
                pooled.append(masked_mean(z[:, start : start + steps], masks[m]))
                start += steps
            pooled = torch.cat(pooled, dim=-1)
        return self._output(self.head(pooled), extras, aux)

    def _output(self, raw: torch.Tensor, extras: dict, aux: dict) -> ModelOutput:
        if self.eq17:  # eq. 17: ClassLabel = softmax(Linear(Z_Fused))
            extras["class_logits"] = raw
            return ModelOutput(torch.softmax(raw, dim=-1), extras, aux)
        return ModelOutput(self.bound_output(raw), extras, aux)


def _head(in_dim: int, out_dim: int, hidden: int, dropout: float) -> nn.Module:
    if hidden:
        return nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim)
        )
    return nn.Linear(in_dim, out_dim)


# ----------------------------------------------------------------------------------------------------------
# staged training (paper 002, Table 1): each module trained separately, its outputs saved, the next one
# trained on the saved outputs. The protocol itself (emofusion.training.protocols.train_staged) chains
# ordinary engine runs; this module keeps the paper's settings and the saved-output dataset.

# Table 1 of the paper (Adam): epochs, learning rate, mini-batch size, weight decay per module
TABLE1 = {
    "selfattn_text": {"max_epochs": 10, "lr": 1e-6, "batch_size": 32, "weight_decay": 1e-4},
    "selfattn_visual": {"max_epochs": 10, "lr": 1e-5, "batch_size": 8, "weight_decay": 1e-4},
    "selfattn_audio": {"max_epochs": 10, "lr": 1e-5, "batch_size": 8, "weight_decay": 1e-4},
    "dcca": {"max_epochs": 100, "lr": 2e-4, "batch_size": 4, "weight_decay": 1e-6},
    "crossattn": {"max_epochs": 5, "lr": 1e-5, "batch_size": 8, "weight_decay": 1e-6},
}


def save_stage_outputs(path, task: TaskSpec, modality_dims: dict, splits: dict[str, list[Sample]]) -> Path:
    """Write one stage's per-sample outputs (a ``paper002-saved:PATH`` dataset)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = {
        split: [
            {
                "id": s.id,
                "features": s.features,
                "label": s.label,
                "speaker": s.speaker,
                "conversation": s.conversation,
            }
            for s in samples
        ]
        for split, samples in splits.items()
    }
    torch.save({"task": task.to_dict(), "modality_dims": modality_dims, "splits": records}, path)
    return path


@register_dataset(
    "paper002-saved", "saved per-sample outputs of a paper-002 training stage (paper002-saved:FILE)"
)
def load_saved_stage(path: str | None = None, **options) -> DatasetBundle:
    if not path:
        raise ValueError("paper002-saved needs a file: paper002-saved:/path/to/stage_outputs.pt")
    if options:
        raise ValueError(f"paper002-saved takes no options, got {sorted(options)}")
    if not Path(path).exists():
        raise FileNotFoundError(f"paper002-saved: {path} does not exist")
    data = torch.load(path, weights_only=False)
    splits = {
        split: SampleDataset(
            [Sample(r["id"], r["features"], r["label"], r["speaker"], r["conversation"]) for r in recs],
            name=f"paper002-saved/{split}",
        )
        for split, recs in data["splits"].items()
    }
    return DatasetBundle(
        name=f"paper002-saved:{path}",
        task=TaskSpec.from_dict(data["task"]),
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        modality_dims=dict(data["modality_dims"]),
        info={"source": str(path)},
    )


@torch.no_grad()
def _stage_outputs(fn, dataset, modalities, batch_size: int = 64) -> list[Sample]:
    """Run ``fn(inputs) -> {name: [B, T, D]}`` (each output on its modality's time axis) over a dataset in
    order and cut the results back into per-sample arrays."""
    out = []
    samples = [dataset[i] for i in range(len(dataset))]
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        batch = collate_samples(chunk, modalities)
        results = fn(batch.inputs)
        for b, s in enumerate(chunk):
            feats = {}
            for m, values in results.items():
                n = int(batch.inputs[m].mask[b].sum())
                feats[m] = values[b, :n].cpu().numpy().astype(np.float32)
            out.append(Sample(s.id, feats, s.label, s.speaker, s.conversation))
    return out


def _merge_by_id(parts: list[list[Sample]]) -> list[Sample]:
    for p in parts:
        check_unique_ids([s.id for s in p], "staged training: a stage-1 output")
    first = parts[0]
    index = [{s.id: s for s in p} for p in parts[1:]]
    merged = []
    for s in first:
        feats = dict(s.features)
        for idx in index:
            if s.id not in idx:
                raise KeyError(
                    f"staged training: sample {s.id!r} is missing from another modality's stage-1 run"
                )
            feats.update(idx[s.id].features)
        merged.append(Sample(s.id, feats, s.label, s.speaker, s.conversation))
    return merged
