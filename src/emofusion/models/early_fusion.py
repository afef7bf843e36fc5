"""Paper 003 (Williams et al., Challenge-HML 2018): input-level fusion DNNs and the random baseline.

Input-level (early) fusion, §4.2-4.3: the modalities of a segment are put on the *text* time axis,
concatenated per step, cut/padded to ``maxlen`` and fed to one network:

* ``ef_lstm`` / ``ef_blstm``: 1-3 (bidirectional) LSTM layers of 64 units, last state -> FC head;
* ``ef_cnn``: 1-3 blocks of 1-D convolution (kernel 3) + ReLU + max-pooling (window 2) -> FC head;
* FC head (§4.4): 1-3 fully connected layers of 100 units, batch norm, ReLU, dropout {0.1, 0.2} between them,
  then a linear output layer bounded to the task's label range ([0, 3] for the 6 MOSEI intensities).

``random_baseline`` is §5.1's fully randomised predictor (no trainable parameters).

Alignment (see docs/models/early_fusion.md): on word-aligned data (``synthetic:aligned``, the MFN files)
the modalities already share the text axis and are used as they are. On unaligned input the model aligns
inside: every modality is averaged onto the reference steps with overlap weights (the SDK's weighted
averaging of §4.3, assuming each stream's frames evenly cover the segment, since batches carry no
timestamps). The reference is ``text`` when present, else per sample the shortest non-empty stream
(the lowest rate, the closest to the word axis); ``align_to=`` overrides it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from emofusion.data.batch import ModelInputs
from emofusion.models.base import FusionModel, ModelOutput
from emofusion.models.layers import SafeBatchNorm1d, SequenceEncoder, length_mask, masked_max
from emofusion.models.registry import register_model
from emofusion.tasks import TaskSpec

MAXLEN_CHOICES = (15, 20, 25, 30)  # §4.4's search range (any positive value is accepted)


# ----------------------------------------------------------------------------------------- input fusion


def compact(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's real steps to the front (order kept), so the mask becomes a prefix."""
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices
    values = torch.gather(values, 1, order.unsqueeze(-1).expand_as(values))
    mask = torch.gather(mask, 1, order)
    # a fill, not a product: NaN or inf in padded steps must not survive (NaN * 0 is NaN)
    return torch.where(mask.unsqueeze(-1), values, 0.0), mask


def overlap_resample(
    values: torch.Tensor, mask: torch.Tensor, target_lengths: torch.Tensor, target_steps: int
) -> torch.Tensor:
    """Average a prefix-masked sequence onto ``target_lengths[b]`` evenly spaced steps with overlap weights.

    Source step s of a length-L_s row covers [s/L_s, (s+1)/L_s) of the segment, target step t covers
    [t/L_t, (t+1)/L_t); the target value is the overlap-weighted mean of the source steps (downsampling
    averages frames, upsampling repeats them). Empty sources and padded targets give zeros.
    """
    src_len = mask.sum(1).to(values.dtype).clamp_min(1).unsqueeze(1).unsqueeze(2)  # [B,1,1]
    tgt_len = target_lengths.to(values.dtype).clamp_min(1).unsqueeze(1).unsqueeze(2)
    s = torch.arange(values.shape[1], device=values.device, dtype=values.dtype).view(1, 1, -1)
    t = torch.arange(target_steps, device=values.device, dtype=values.dtype).view(1, -1, 1)
    start = torch.maximum(s / src_len, t / tgt_len)
    end = torch.minimum((s + 1) / src_len, (t + 1) / tgt_len)
    weights = (end - start).clamp_min(0.0)  # [B, T_tgt, T_src]
    tgt_mask = torch.arange(target_steps, device=values.device).unsqueeze(0) < target_lengths.unsqueeze(1)
    weights = weights * mask.unsqueeze(1).to(values.dtype) * tgt_mask.unsqueeze(2).to(values.dtype)
    weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)
    return torch.bmm(weights, values)


def cut_or_pad(
    values: torch.Tensor, mask: torch.Tensor, maxlen: int, truncating: str = "pre"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prefix-masked rows -> exactly ``maxlen`` steps. ``truncating="pre"`` keeps the last ``maxlen`` real
    steps (Keras ``pad_sequences`` default), ``"post"`` the first. Padding goes after the real steps and is
    masked (its side does not matter, nothing reads it)."""
    lengths = mask.sum(1)
    kept = lengths.clamp_max(maxlen)
    start = (lengths - kept) if truncating == "pre" else torch.zeros_like(lengths)
    steps = torch.arange(maxlen, device=values.device).unsqueeze(0)
    new_mask = steps < kept.unsqueeze(1)
    index = (start.unsqueeze(1) + steps).clamp_max(max(values.shape[1] - 1, 0))
    if values.shape[1] == 0:
        return values.new_zeros(values.shape[0], maxlen, values.shape[2]), new_mask
    out = torch.gather(values, 1, index.unsqueeze(-1).expand(-1, -1, values.shape[2]))
    return torch.where(new_mask.unsqueeze(-1), out, 0.0), new_mask


class InputFusion(nn.Module):
    """Align to the reference axis, concatenate per step, mask all-zero steps, cut/pad to ``maxlen``."""

    def __init__(
        self,
        modalities: list[str],
        maxlen: int = 20,
        align_to: str | None = None,
        truncating: str = "pre",
        mask_zero_steps: bool = True,
    ):
        super().__init__()
        if int(maxlen) < 1:
            raise ValueError(f"maxlen must be a positive integer, got {maxlen!r}")
        if truncating not in ("pre", "post"):
            raise ValueError(f"truncating must be 'pre' or 'post', got {truncating!r}")
        if align_to is None and "text" in modalities:
            align_to = "text"
        if align_to is not None and align_to not in modalities:
            raise ValueError(f"align_to={align_to!r} is not among the modalities {modalities}")
        self.modalities = list(modalities)
        self.maxlen = int(maxlen)
        self.align_to = align_to
        self.truncating = truncating
        self.mask_zero_steps = bool(mask_zero_steps)

    def forward(self, inputs, absent: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        seqs = {m: compact(*inputs[m]) for m in self.modalities}
        lengths = torch.stack([seqs[m][1].sum(1) for m in self.modalities], dim=1)  # [B, M]
        if absent:
            # a learned absent token (one step) is broadcast onto the others' axis, never chosen as the axis
            flags = torch.stack([absent.get(m, torch.zeros_like(lengths[:, 0], dtype=torch.bool))
                                 for m in self.modalities], dim=1)
            all_absent = flags.all(1, keepdim=True)
            lengths = torch.where(flags & ~all_absent, torch.zeros_like(lengths), lengths)
        if self.align_to is not None and not (absent and bool(absent.get(self.align_to, lengths[:, 0] < 0).any())):
            ref_len = lengths[:, self.modalities.index(self.align_to)]
        elif self.align_to is not None:
            # the reference modality is absent in some samples: there, the shortest present stream
            ref_len = lengths[:, self.modalities.index(self.align_to)]
            big = torch.iinfo(lengths.dtype).max
            shortest = torch.where(lengths > 0, lengths, torch.full_like(lengths, big)).min(1).values
            ref_len = torch.where(ref_len > 0, ref_len, torch.where(shortest == big, 1, shortest))
        else:
            # per sample, not per batch: a batch must give the same result as its samples one by one
            big = torch.iinfo(lengths.dtype).max
            ref_len = torch.where(lengths > 0, lengths, torch.full_like(lengths, big)).min(1).values
            ref_len = torch.where(ref_len == big, torch.zeros_like(ref_len), ref_len)
        steps = max(int(ref_len.max().item()) if ref_len.numel() else 0, 1)
        parts = []
        for m in self.modalities:
            values, mask = seqs[m]
            same = bool(torch.equal(mask.sum(1), ref_len)) and values.shape[1] >= steps
            # already on the reference axis (aligned data): use the steps as they are
            parts.append(values[:, :steps] if same else overlap_resample(values, mask, ref_len, steps))
        fused = torch.cat(parts, dim=-1)
        mask = length_mask(ref_len, steps)
        if self.mask_zero_steps:
            # Keras Masking(mask_value=0): a step whose features are all zero is no evidence
            mask = mask & (fused != 0).any(-1)
            fused, mask = compact(fused, mask)
        return cut_or_pad(fused, mask, self.maxlen, self.truncating)


# ----------------------------------------------------------------------------------------- networks


class FCHead(nn.Module):
    """``fc_layers`` x (Linear(fc_dim) -> BatchNorm -> ReLU -> Dropout), then the linear output layer."""

    def __init__(
        self, input_dim: int, output_dim: int, fc_layers: int, fc_dim: int, dropout: float, batch_norm: bool
    ):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(fc_layers):
            layers.append(nn.Linear(input_dim, fc_dim))
            if batch_norm:
                layers.append(SafeBatchNorm1d(fc_dim))
            layers += [nn.ReLU(), nn.Dropout(dropout)]
            input_dim = fc_dim
        layers.append(nn.Linear(input_dim, output_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _check_range(name: str, value: int, low: int = 1) -> int:
    # the paper explores 1-3 layers; more is allowed, fewer than ``low`` is meaningless
    value = int(value)
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


class _EarlyFusionNet(FusionModel):
    # `emofusion tune`: §4.4's grid (1-3 layers, 1-3 FC layers, dropout {0.1, 0.2}, maxlen {15..30})
    search_space = {"num_layers": [1, 2, 3], "fc_layers": [1, 2, 3], "dropout": [0.1, 0.2],
                    "maxlen": list(MAXLEN_CHOICES)}

    def __init__(
        self,
        modality_dims: dict[str, int],
        task: TaskSpec,
        maxlen: int = 20,
        num_layers: int = 1,
        fc_layers: int = 1,
        fc_dim: int = 100,
        dropout: float = 0.1,
        batch_norm: bool = True,
        align_to: str | None = None,
        truncating: str = "pre",
        mask_zero_steps: bool = True,
    ):
        super().__init__(modality_dims, task)
        self.fusion = InputFusion(self.modalities, maxlen, align_to, truncating, mask_zero_steps)
        self.num_layers = _check_range("num_layers", num_layers)
        self.fc_layers = _check_range("fc_layers", fc_layers, low=0)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.input_dim = sum(modality_dims.values())
        self.fc_dim, self.dropout, self.batch_norm = int(fc_dim), float(dropout), bool(batch_norm)

    def _head(self, input_dim: int) -> FCHead:
        return FCHead(input_dim, self.output_dim, self.fc_layers, self.fc_dim, self.dropout, self.batch_norm)

    def summarize(self, fused: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def forward(self, inputs: ModelInputs) -> ModelOutput:
        inputs = self.check_inputs(inputs)
        fused, mask = self.fusion(inputs, self.absent_flags)
        summary, extras = self.summarize(fused, mask)
        prediction = self.bound_output(self.head(summary))
        extras["fused_mask"] = mask
        return ModelOutput(prediction, extras)


@register_model("ef_lstm")
class EarlyFusionLSTMNet(_EarlyFusionNet):
    """Paper 003: input-level fusion -> 1-3 LSTM layers (64 units) -> FC 100 (BN, ReLU, dropout) -> bounded outputs."""

    bidirectional = False

    def __init__(self, modality_dims: dict[str, int], task: TaskSpec, hidden_dim: int = 64, **options):
        super().__init__(modality_dims, task, **options)
        # the paper puts dropout between the fully connected layers only, not between LSTM layers
        self.encoder = SequenceEncoder(
            self.input_dim, int(hidden_dim), self.num_layers, self.bidirectional, 0.0
        )
        self.head = self._head(self.encoder.output_dim)

    def summarize(self, fused, mask):
        # packed LSTM: the recurrence stops at each row's last real step (Keras Masking + return_sequences=False)
        _, final = self.encoder(fused, mask)
        return final, {}


@register_model("ef_blstm")
class EarlyFusionBLSTMNet(EarlyFusionLSTMNet):
    """Paper 003's submitted system: input-level fusion -> bidirectional LSTM (64 units per direction) -> FC head."""

    bidirectional = True


@register_model("ef_cnn")
class EarlyFusionCNN(_EarlyFusionNet):
    """Paper 003: input-level fusion -> 1-3 x (Conv1d k=3 + ReLU + MaxPool 2) -> masked readout -> FC head.

    ``channels`` (filters per convolution) is not given in the paper; 64 matches its LSTM size.
    ``readout="max"`` (default): masked global max over the pooled steps; ``"flatten"``: Keras-style Flatten of
    the ``ceil(maxlen / 2**layers)`` pooled steps (padded steps zeroed, so they carry no value).
    """

    def __init__(
        self,
        modality_dims: dict[str, int],
        task: TaskSpec,
        channels: int = 64,
        kernel_size: int = 3,
        pool_size: int = 2,
        readout: str = "max",
        **options,
    ):
        super().__init__(modality_dims, task, **options)
        if readout not in ("max", "flatten"):
            raise ValueError(f"readout must be 'max' or 'flatten', got {readout!r}")
        if int(kernel_size) % 2 != 1:
            raise ValueError(f"kernel_size must be odd ('same' padding), got {kernel_size}")
        self.readout, self.pool_size = readout, int(pool_size)
        self.convs = nn.ModuleList()
        dim = self.input_dim
        for _ in range(self.num_layers):
            self.convs.append(nn.Conv1d(dim, int(channels), int(kernel_size), padding=int(kernel_size) // 2))
            dim = int(channels)
        steps = self.fusion.maxlen
        for _ in range(self.num_layers):
            steps = -(-steps // self.pool_size)
        self.head = self._head(dim * steps if readout == "flatten" else dim)

    def summarize(self, fused, mask):
        x = fused.transpose(1, 2)  # [B, D, T]
        m = mask.unsqueeze(1)  # [B, 1, T]
        for conv in self.convs:
            # zero the padding before every convolution so its values cannot leak into real steps' windows
            x = torch.relu(conv(x * m.to(x.dtype)))
            # mask before pooling: a padded step never wins a max (a window that is all padding stays padding)
            x = x.masked_fill(~m, float("-inf"))
            x = F.max_pool1d(x, self.pool_size, ceil_mode=True)
            m = F.max_pool1d(m.to(x.dtype), self.pool_size, ceil_mode=True).bool()
            x = torch.where(m, x, torch.zeros_like(x))
        steps_mask = m.squeeze(1)
        if self.readout == "max":
            return masked_max(x.transpose(1, 2), steps_mask), {}
        return (x * m.to(x.dtype)).flatten(1), {}


# ----------------------------------------------------------------------------------------- random baseline


@register_model("random_baseline")
class RandomBaseline(FusionModel):
    """Paper 003 §5.1: a fully randomised predictor (inputs ignored, nothing learned).

    Per segment: n ~ U{0, ..., K} labels (K = 6 emotions), n distinct emotions chosen uniformly, each given an
    intensity drawn uniformly from the 9 non-zero values {1/3, 2/3, ..., 3} of the [0, 3] grid; the others are 0.
    0 is excluded by default because a *chosen* label with intensity 0 would not be present, contradicting
    n (``include_zero=True`` draws from the 10 values {0, 1/3, ..., 3} instead).
    Other task kinds (not in the paper): sentiment/multi-regression -> uniform on the label range;
    classification / multilabel -> a uniformly random class (one-hot logits) / random presence.

    Seeded: the k-th batch after construction (or ``reset()``) gets the same draws for a given ``seed``.
    It has no trainable parameters; ``anchor`` is a zero parameter only so that a generic training loop
    (optimizer, ``loss.backward()``) runs unchanged — its gradient is always 0, so training changes nothing.
    """

    default_absent = "zeros"  # reads no inputs: no absent tokens

    trainable = False

    def __init__(
        self, modality_dims: dict[str, int], task: TaskSpec, seed: int = 0, include_zero: bool = False
    ):
        super().__init__(modality_dims, task)
        self.seed = int(seed)
        self.include_zero = bool(include_zero)
        self.anchor = nn.Parameter(torch.zeros(()))
        self.reset()

    def reset(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)

    def sample(self, batch: int) -> torch.Tensor:
        g, k = self.generator, self.output_dim
        kind = self.task.kind
        if kind == "emotion_intensity":
            n = torch.randint(0, k + 1, (batch,), generator=g)
            # n distinct labels: the first n of a random permutation
            ranks = torch.argsort(torch.rand(batch, k, generator=g), dim=1).argsort(dim=1)
            chosen = ranks < n.unsqueeze(1)
            low_step = 0 if self.include_zero else 1
            steps = torch.randint(low_step, 10, (batch, k), generator=g)
            high = self.task.label_range[1] if self.task.label_range else 3.0
            return torch.where(chosen, steps.float() * (high / 9.0), torch.zeros(batch, k))
        if self.task.is_regression:
            low, high = self.task.label_range or (0.0, 1.0)
            return low + (high - low) * torch.rand(batch, k, generator=g)
        if kind == "classification":
            return F.one_hot(torch.randint(0, k, (batch,), generator=g), k).float()
        return torch.where(torch.rand(batch, k, generator=g) < 0.5, 1.0, -1.0)  # logits of random presence

    def forward(self, inputs: ModelInputs) -> ModelOutput:
        values = next(iter(self.check_inputs(inputs).values()))[0]
        prediction = self.sample(values.shape[0]).to(values.device, values.dtype)
        return ModelOutput(prediction + 0.0 * self.anchor)
