"""Shared building blocks: masked reductions, masked softmax, a length-aware LSTM encoder, resampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from emofusion.data.batch import ModalityTensor


def length_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """``[B, steps]`` prefix mask, True at the first ``lengths[b]`` steps of row b, on the lengths' device."""
    return torch.arange(steps, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Mean over real steps only; an all-padding row gives zeros (not NaN)."""
    m = mask.unsqueeze(-1).to(values.dtype)
    total = (values * m).sum(dim)
    count = m.sum(dim).clamp_min(1.0)
    return total / count


def masked_max(values: torch.Tensor, mask: torch.Tensor, dim: int = 1) -> torch.Tensor:
    filled = values.masked_fill(~mask.unsqueeze(-1), float("-inf"))
    out = filled.max(dim).values
    return torch.where(torch.isinf(out), torch.zeros_like(out), out)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax where masked positions get exactly zero weight; an all-masked row gives all zeros."""
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=dim)
    return torch.nan_to_num(weights, nan=0.0)


def last_valid(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The output at each sequence's last real step ``[B, D]`` (zeros for empty sequences)."""
    lengths = mask.sum(1)
    index = (lengths - 1).clamp_min(0)
    out = values[torch.arange(values.shape[0], device=values.device), index]
    return out * (lengths > 0).unsqueeze(-1).to(out.dtype)


class SequenceEncoder(nn.Module):
    """(Bi)LSTM over the real steps of each sequence: padding never enters the recurrence.

    Returns per-step outputs ``[B, T, H * directions]`` (zero at padding) and the final state ``[B, H * dirs]``
    (forward direction at the last real step, backward direction at the first). Empty sequences give zeros.

    Sequences are padded at the end, so the forward direction run over the padded batch is exact at every real
    step; the backward direction runs forward over each sequence reversed *within its own length*. Both use
    the fused CPU LSTM kernel, which on CPU is 5-8x faster to train than ``pack_padded_sequence`` (the packed
    path falls back to a per-step loop); the result is the same as packing (tested). Parameters live in one
    ``nn.LSTM`` (the usual state-dict keys); a batch without padding calls it directly.
    """

    def __init__(
        self, input_dim: int, hidden_dim: int, num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.0
    ):
        super().__init__()
        self.lstm = nn.LSTM(
            input_dim,
            hidden_dim,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.output_dim = hidden_dim * (2 if bidirectional else 1)
        self.bidirectional = bidirectional
        # unregistered one-layer shells: run with this module's per-layer, per-direction weights
        self._shells = [
            nn.LSTM(input_dim if layer == 0 else self.output_dim, hidden_dim, batch_first=True, device="meta")
            for layer in range(num_layers)
        ]

    def _direction(self, x: torch.Tensor, layer: int, suffix: str) -> torch.Tensor:
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        params = {f"{n}_l0": getattr(self.lstm, f"{n}_l{layer}{suffix}") for n in names}
        if torch.jit.is_tracing():  # ONNX/TorchScript export: functional_call cannot be traced; same kernel
            h0 = x.new_zeros(1, x.shape[0], self.lstm.hidden_size)
            return torch.lstm(x, (h0, h0), list(params.values()), True, 1, 0.0, False, False, True)[0]
        out, _ = functional_call(self._shells[layer], params, (x,))
        return out

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.is_autocast_enabled(values.device.type):
            # the fused CPU LSTM kernel has no bf16 primitive in this torch build ("could not create a primitive
            # descriptor"): under bf16-mixed the recurrence runs in fp32, everything around it in bf16
            with torch.autocast(values.device.type, enabled=False):
                return self.forward(values.float(), mask)
        batch, steps, _ = values.shape
        lengths = mask.sum(1)
        nonempty = lengths > 0
        if steps > 0 and bool((lengths == steps).all()):
            out, (h_n, _) = self.lstm(values)
            final = torch.cat([h_n[-2], h_n[-1]], dim=-1) if self.bidirectional else h_n[-1]
            return out, final
        if steps == 0:
            return values.new_zeros(batch, 0, self.output_dim), values.new_zeros(batch, self.output_dim)
        m = mask.unsqueeze(-1).to(values.dtype)
        last = (lengths - 1).clamp_min(0)
        rows = torch.arange(batch, device=values.device)
        if self.bidirectional:
            t = torch.arange(steps, device=values.device).unsqueeze(0)
            order = torch.where(t < lengths.unsqueeze(1), last.unsqueeze(1) - t, t)  # reverse within length

            def flip(z: torch.Tensor) -> torch.Tensor:
                return z.gather(1, order.unsqueeze(-1).expand(-1, -1, z.shape[-1]))

        # padding is filled, not multiplied: NaN / inf padding times 0 would stay NaN at the padded steps
        keep = m.bool()
        x = torch.where(keep, values, torch.zeros((), dtype=values.dtype, device=values.device))
        for layer in range(self.lstm.num_layers):
            if layer > 0 and self.lstm.dropout > 0:
                x = nn.functional.dropout(x, self.lstm.dropout, self.training)
            fwd = self._direction(x, layer, "")
            if self.bidirectional:
                bwd = flip(self._direction(flip(x), layer, "_reverse"))
                x = torch.cat([fwd, bwd], dim=-1) * m
            else:
                x = fwd * m
        if self.bidirectional:
            hidden = self.lstm.hidden_size
            final = torch.cat([x[rows, last, :hidden], x[:, 0, hidden:]], dim=-1)
        else:
            final = x[rows, last]
        return x, final * nonempty.to(x.dtype).unsqueeze(-1)


def strided_pool(values: torch.Tensor, mask: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of each window of ``stride`` consecutive steps, over the real steps only (padding at the end).

    ``[B, T, D]`` -> ``[B, ceil(T / stride), D]``; a window is real when it holds at least one real step, so a
    sequence of ``L`` real steps gives ``ceil(L / stride)`` real windows (its last window may be partial) and
    padding never enters a real window's mean. ``stride=1`` returns the inputs unchanged.
    """
    stride = int(stride)
    if stride <= 1:
        return values, mask
    batch, steps, dim = values.shape
    windows = -(-steps // stride)
    extra = windows * stride - steps
    m = mask.to(values.dtype).unsqueeze(-1)
    x = torch.where(mask.unsqueeze(-1), values, 0.0)  # padded values (even NaN) never reach a mean
    if extra:
        x = F.pad(x, (0, 0, 0, extra))
        m = F.pad(m, (0, 0, 0, extra))
    total = x.view(batch, windows, stride, dim).sum(2)
    count = m.view(batch, windows, stride, 1).sum(2)
    return total / count.clamp_min(1.0), count.squeeze(-1) > 0


class StridedFrontEnd(nn.Module):
    """Optional per-modality front-end of the recurrent models: ``strided_pool`` before the recurrence.

    ``strides`` {modality: k}: every k consecutive frames of that modality are averaged into one step, so the
    recurrence (and the per-step loops of MFN/RMFN) runs ``k`` times fewer steps; e.g. ``{"audio": 5}`` takes
    the synthetic benchmark's 25 Hz audio (~10 frames per word) to 5 Hz. Parameter-free: the model itself
    (its equations and parameter count) is unchanged, it reads a coarser input. Empty (the default) = the
    identity, the papers' full-rate models.
    """

    def __init__(self, strides: dict[str, int] | None = None, modalities=None):
        super().__init__()
        strides = dict(strides or {})
        for m, k in strides.items():
            if modalities is not None and m not in modalities:
                raise ValueError(f"frontend: modality {m!r} not among {list(modalities)}")
            if int(k) != k or int(k) < 1:
                raise ValueError(f"frontend: stride of {m!r} must be a positive integer, got {k!r}")
        self.strides = {m: int(k) for m, k in strides.items() if int(k) > 1}

    def forward(self, inputs):
        if not self.strides:
            return inputs
        out = dict(inputs)
        for m, k in self.strides.items():
            if m in out:
                values, mask = out[m]
                out[m] = ModalityTensor(*strided_pool(values, mask, k))
        return out

    def unpool_weights(self, modality: str, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention over pooled steps ``[..., T_pooled]`` -> over the input frames ``[..., T]`` (``mask``
        ``[B, T]``): each window's weight is shared equally by its real frames, so a row still sums to its total."""
        k = self.strides.get(modality, 1)
        if k <= 1:
            return weights
        steps = mask.shape[1]
        m = mask.to(weights.dtype)
        windows = -(-steps // k)
        count = F.pad(m, (0, windows * k - steps)).view(mask.shape[0], windows, k).sum(-1).clamp_min(1.0)
        while count.dim() < weights.dim():
            count = count.unsqueeze(1)
        per_frame = (weights / count).repeat_interleave(k, dim=-1)[..., :steps]
        while m.dim() < per_frame.dim():
            m = m.unsqueeze(1)
        return per_frame * m


def resample_to_lengths(values: torch.Tensor, mask: torch.Tensor, target_lengths: torch.Tensor, target_steps: int):
    """Nearest-neighbour resampling of each sequence's real steps onto ``target_lengths[b]`` steps.

    Used when a model needs one time axis and no timestamps exist: step t of the target takes source step
    ``floor(t * L_src / L_tgt)``, which repeats frames of a slower stream (upsampling) and picks evenly spaced
    frames of a faster one (downsampling). Returns values ``[B, target_steps, D]`` and the target mask.
    """
    if values.shape[1] == 0:  # nothing to gather from: one zero step, masked (the output is zeros)
        values, mask = F.pad(values, (0, 0, 0, 1)), F.pad(mask, (0, 1), value=False)
    batch = values.shape[0]
    src_len = mask.sum(1).to(torch.float32)
    t = torch.arange(target_steps, device=values.device, dtype=torch.float32).unsqueeze(0)
    tgt = target_lengths.to(torch.float32).clamp_min(1).unsqueeze(1)
    index = torch.floor(t * src_len.unsqueeze(1) / tgt).long()
    index = torch.minimum(index, (src_len.long() - 1).clamp_min(0).unsqueeze(1))
    out = torch.gather(values, 1, index.unsqueeze(-1).expand(batch, target_steps, values.shape[-1]))
    new_mask = torch.arange(target_steps, device=values.device).unsqueeze(0) < target_lengths.unsqueeze(1)
    new_mask = new_mask & (src_len > 0).unsqueeze(1)
    return out * new_mask.unsqueeze(-1).to(out.dtype), new_mask


def align_to_common_axis(inputs, modalities, reference: str | None = None):
    """Resample every modality onto the time axis of ``reference`` (default: the longest per batch, i.e. the
    highest rate). Returns ``{m: values}`` all ``[B, T, D_m]`` and the shared mask."""
    if reference is None:
        reference = max(modalities, key=lambda m: inputs[m][1].sum().item())
    _, ref_mask = inputs[reference]
    target_lengths = ref_mask.sum(1)
    steps = ref_mask.shape[1]
    aligned = {}
    shared_mask = ref_mask.bool()
    for m in modalities:
        values, mask = inputs[m]
        if m == reference:
            aligned[m] = values
        else:
            aligned[m], _ = resample_to_lengths(values, mask.bool(), target_lengths, steps)
    return aligned, shared_mask


class OutputHead(nn.Module):
    """MLP head: optional hidden layer(s) then a linear map to the task's outputs."""

    def __init__(self, input_dim: int, output_dim: int, hidden_dim: int = 0, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        if hidden_dim:
            layers += [nn.Linear(input_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout)]
            input_dim = hidden_dim
        layers.append(nn.Linear(input_dim, output_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SafeBatchNorm1d(nn.BatchNorm1d):
    """Batch norm that uses its running statistics for a training batch of one (a last, odd batch)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)
