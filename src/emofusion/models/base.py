"""The contract every model follows.

``forward(inputs)`` takes a mapping modality -> ``(values [B, T_m, D_m], mask [B, T_m])`` (each modality with
its own length) and returns a :class:`ModelOutput`: predictions shaped for the task (``[B, output_dim]``, or
``[B, T_utt, output_dim]`` for per-utterance labels), plus named extras (attention weights, gates, ...) and
named auxiliary losses that the training loop adds to the task loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from emofusion.data.batch import ModalityTensor, ModelInputs
from emofusion.tasks import TaskSpec


@dataclass
class ModelOutput:
    prediction: torch.Tensor
    extras: dict[str, object] = field(default_factory=dict)
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)


class FusionModel(nn.Module):
    """Base class: stores the modality sizes and the task, checks inputs, bounds regression outputs."""

    # set False in subclasses that need every modality their paper defines
    supports_modality_subsets: bool = True
    # the smallest number of modalities the model can run on
    min_modalities: int = 1
    # what a model sees for a modality a sample has no frame of (mask all False): "token" (default) one
    # learned step per modality, so "absent" differs from "average"; "zeros": the empty sequence as is
    ABSENT_MODES = ("token", "zeros")
    # constant predictors (no inputs read) keep no absent tokens
    default_absent: str = "token"
    # figures the reporting layer draws after a run, as "package.module:function" names called with
    # (lightning module, dataset bundle, plots dir) -> list of paths (see emofusion.evaluation.plots.plot_run)
    extra_plots: tuple[str, ...] = ()

    def time_averaged_inputs(self) -> tuple[str, ...]:
        """Modalities this model reads only as the mean over each sample's real steps (of the standardised
        input), so the engine may average them once before training (``data.dataset.TimeAverage``) instead of
        collating every frame each epoch. The model must give the same output for the averaged one-step input."""
        return ()

    def __init__(self, modality_dims: dict[str, int], task: TaskSpec):
        super().__init__()
        if not modality_dims:
            raise ValueError(f"{type(self).__name__} needs at least one modality")
        if len(modality_dims) < self.min_modalities:
            raise ValueError(
                f"{type(self).__name__} needs at least {self.min_modalities} modalities, got {list(modality_dims)}"
            )
        self.modality_dims = dict(modality_dims)
        self.modalities = list(modality_dims)
        self.task = task
        self.output_dim = task.output_dim
        # a batch where no sample lacks a modality leaves its values alone (no token written into them, so no
        # gradient through the whole input tensor); the hook keeps that token in the graph with a zero term
        self.register_forward_hook(_anchor_unused_tokens)
        # conversations: steps are utterances sharing one axis across modalities; no token there
        self.set_absent_mode("zeros" if task.sequence_labels else self.default_absent)

    def set_absent_mode(self, mode: str) -> None:
        """``"token"``: a sample whose modality has no real step gets one learned step instead (mask True at
        step 0), the same vector for every such sample, learned with the model; ``"zeros"``: left empty (every
        encoder then pools it to zeros, indistinguishable from an average input). ``create_model(...,
        absent=...)`` sets it; every model goes through :meth:`check_inputs`, so every model gets it."""
        if mode not in self.ABSENT_MODES:
            raise ValueError(f"absent must be one of {self.ABSENT_MODES}, got {mode!r}")
        self.absent_mode = mode
        if mode == "token":
            # small random init: distinct from the standardised mean (0) from the first step
            gen = torch.Generator().manual_seed(0)
            self.absent_tokens = nn.ParameterList(
                [nn.Parameter(0.1 * torch.randn(self.modality_dims[m], generator=gen)) for m in self.modalities]
            )
        elif hasattr(self, "absent_tokens"):
            del self.absent_tokens

    def _fill_absent(self, m: str, values: torch.Tensor, mask: torch.Tensor) -> ModalityTensor:
        if values.shape[1] == 0:  # no step at all in the batch: room for the token
            values = values.new_zeros(values.shape[0], 1, values.shape[2])
            mask = mask.new_zeros(mask.shape[0], 1)
        absent = ~mask.any(1)  # [B]
        if not torch.jit.is_tracing() and not bool(absent.any()):
            # nothing to fill: the values as they are (a full-size where made every input, and the encoders'
            # backward through it, differentiable for a zero gradient); the token joins the graph in the hook
            self.absent_flags[m] = absent
            self._unanchored.append(self.absent_tokens[self.modalities.index(m)])
            return ModalityTensor(values, mask)
        token = self.absent_tokens[self.modalities.index(m)].to(values.dtype)
        first = torch.zeros_like(mask)
        first[:, 0] = True
        put = first & absent.unsqueeze(1)  # [B, T]: step 0 of absent samples
        # always through torch.where, so the token is in every graph (DDP sees no unused parameter)
        values = torch.where(put.unsqueeze(-1), token.expand_as(values), values)
        self.absent_flags[m] = absent
        return ModalityTensor(values, mask | put)

    def check_inputs(self, inputs: ModelInputs) -> dict[str, ModalityTensor]:
        """Validated inputs; with ``absent="token"`` a modality without any real step in a sample gets the
        learned token, and ``self.absent_flags[m]`` ([B] bool) says which samples got it (for models that
        choose a time axis from the lengths: a one-step token must not become the axis)."""
        out = {}
        self.absent_flags: dict[str, torch.Tensor] = {}
        self._unanchored: list[torch.Tensor] = []
        for m in self.modalities:
            if m not in inputs:
                raise KeyError(f"{type(self).__name__} was built for {self.modalities} but got no {m!r} input")
            values, mask = inputs[m]
            if values.dim() != 3 or values.shape[-1] != self.modality_dims[m]:
                raise ValueError(
                    f"{type(self).__name__}: modality {m!r} expects values [B, T, {self.modality_dims[m]}], "
                    f"got {tuple(values.shape)}"
                )
            if mask.shape != values.shape[:2]:
                raise ValueError(f"modality {m!r}: mask {tuple(mask.shape)} does not match values {tuple(values.shape)}")
            out[m] = ModalityTensor(values, mask.bool())
            if getattr(self, "absent_mode", "zeros") == "token":
                out[m] = self._fill_absent(m, *out[m])
        return out

    def bound_output(self, raw: torch.Tensor) -> torch.Tensor:
        """Regression outputs bounded to the task's label range (paper 003: linear outputs bounded to [0, 3]).

        Bounded with a hardtanh-style clamp that keeps gradients inside the range, so a model starts linear.
        Classification logits pass through.
        """
        if self.task.is_regression and self.task.label_range is not None:
            low, high = self.task.label_range
            if not low <= 0.0 <= high:
                # ranges excluding 0 (ICT-MMMO's [1, 5]): centre the output, else a fresh model sits at the bound
                raw = raw + 0.5 * (low + high)
            return torch.clamp(raw, low, high) if not self.training else _soft_clamp(raw, low, high)
        return raw

    def num_parameters(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def _anchor_unused_tokens(module, args, output):
    """Forward hook: ``prediction + sum(token[:0])`` (exactly 0, even for a NaN token) for every absent token
    this call did not write into an input, so each token is in every training graph (DDP requires every
    parameter to get a gradient, here a zero one, as the full-size ``torch.where`` used to give it)."""
    tokens = module.__dict__.pop("_unanchored", None)
    if tokens and torch.is_grad_enabled() and isinstance(output, ModelOutput):
        zero = sum(t[:0].sum() for t in tokens)
        output.prediction = output.prediction + zero.to(output.prediction.dtype)
    return output


def _soft_clamp(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    # straight-through clamp: forward is clamped, gradient flows where the clamp is active too, so
    # predictions stuck outside the range can still move back in
    return x + (torch.clamp(x, low, high) - x).detach()


HEADS = ("plain", "zero_inflated")


def build_with_shared_options(factory, modality_dims, task: TaskSpec, absent: str | None = None,
                              head: str = "plain", zi_predict: str = "gate", **options) -> FusionModel:
    """``factory(modality_dims=..., task=..., **options)`` plus the options every model shares (see
    ``create_model``)."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    if head == "zero_inflated":
        model = ZeroInflated(factory, modality_dims, task, predict=zi_predict, **options)
        if absent is not None:
            model.inner.set_absent_mode(absent)
        return model
    model = factory(modality_dims=modality_dims, task=task, **options)
    if absent is not None:
        model.set_absent_mode(absent)
    return model


class ZeroInflated(FusionModel):
    """Presence x intensity head around any model, for zero-inflated intensities (most labels exactly 0).

    The inner model is built with twice the outputs: K presence logits and K intensities. Trained with the
    ``zero_inflated`` loss (BCE on presence ``y > 0`` plus L1 on the intensity where ``y > 0``); predicts
    ``intensity if sigmoid(logit) > 0.5 else 0`` (``predict="gate"``, default: the conditional median under a
    two-part model, what minimises MAE; measured in docs) or ``sigmoid(logit) * intensity``
    (``predict="expected"``, the conditional mean, for MSE). An extension, not from the papers: L1 on raw
    sparse labels is minimised by predicting zeros (paper 003 trains with L1; its MAE is near the all-zero
    predictor's)."""

    default_absent = "zeros"  # the inner model handles absent modalities
    default_loss = "zero_inflated"
    PREDICT = ("gate", "expected")

    def __init__(self, factory, modality_dims: dict[str, int], task: TaskSpec, predict: str = "gate", **options):
        if task.kind != "emotion_intensity" or task.sequence_labels:
            raise ValueError(f"head='zero_inflated' is for segment-level emotion intensities, not {task.kind}")
        if predict not in self.PREDICT:
            raise ValueError(f"zi_predict must be one of {self.PREDICT}, got {predict!r}")
        super().__init__(modality_dims, task)
        names = tuple(task.output_names)
        inner_task = replace(task, output_names=tuple(f"{n}_present" for n in names) + names, label_range=None)
        self.inner = factory(modality_dims=modality_dims, task=inner_task, **options)
        self.predict = predict
        self.supports_modality_subsets = self.inner.supports_modality_subsets

    def forward(self, inputs: ModelInputs) -> ModelOutput:
        out = self.inner(inputs)
        k = self.output_dim
        logits, raw = out.prediction[..., :k], out.prediction[..., k:]
        intensity = self.bound_output(raw)
        if self.predict == "gate":
            prediction = torch.where(logits > 0, intensity, torch.zeros_like(intensity))
        else:
            prediction = torch.sigmoid(logits) * intensity
        extras = {**out.extras, "presence_logits": logits, "intensity": intensity}
        return ModelOutput(prediction, extras, dict(out.aux_losses))
