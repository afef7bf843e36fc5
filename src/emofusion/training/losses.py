"""Task losses, masked for per-utterance labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from emofusion.tasks import TaskSpec

LOSSES = ("l1", "mse", "ce", "bce", "zero_inflated", "dominant_ce")


def default_loss(task: TaskSpec) -> str:
    """L2 for emotion intensities (paper 000; L1's median solution is all zeros on sparse labels), L1 for
    sentiment and traits (MulT/MMSA practice), cross-entropy for classes, BCE for multi-label presence."""
    return {"classification": "ce", "multilabel_binary": "bce", "emotion_intensity": "mse"}.get(task.kind, "l1")


def task_loss(
    name: str, task: TaskSpec, prediction: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor | None = None,
    extras: dict | None = None,
) -> torch.Tensor:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {LOSSES}")
    if name == "zero_inflated":
        return zero_inflated_loss(extras or {}, labels)
    if name == "dominant_ce":
        return dominant_ce_loss(extras or {}, labels)
    if label_mask is not None:
        prediction = prediction[label_mask]
        labels = labels[label_mask]
    if name == "ce":
        if task.kind != "classification":
            raise ValueError(f"cross-entropy needs a classification task, not {task.kind}")
        return F.cross_entropy(prediction.reshape(-1, prediction.shape[-1]), labels.reshape(-1).long())
    labels = labels.to(prediction.dtype).reshape(prediction.shape)
    if name == "bce":
        return F.binary_cross_entropy_with_logits(prediction, labels)
    if name == "mse":
        return F.mse_loss(prediction, labels)
    return F.l1_loss(prediction, labels)


def zero_inflated_loss(extras: dict, labels: torch.Tensor) -> torch.Tensor:
    """BCE of the presence logits on ``y > 0`` plus L1 of the intensity where ``y > 0`` (``head="zero_inflated"``
    models, ``models.base.ZeroInflated``)."""
    if "presence_logits" not in extras or "intensity" not in extras:
        raise ValueError("loss 'zero_inflated' needs a model built with head='zero_inflated'")
    logits, intensity = extras["presence_logits"], extras["intensity"]
    labels = labels.to(logits.dtype).reshape(logits.shape)
    present = labels > 0
    bce = F.binary_cross_entropy_with_logits(logits, present.to(logits.dtype))
    l1 = (intensity - labels).abs()[present].sum() / present.sum().clamp_min(1)
    return bce + l1


def dominant_ce_loss(extras: dict, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``extras["class_logits"]`` against the dominant emotion (argmax of the intensity
    labels), over the samples with some emotion present (paper 002 eq. 17: ``delta_attention`` with ``eq17=True``). A
    batch without any such sample gives 0 (with the logits' gradient graph, so the step stays valid)."""
    if "class_logits" not in extras:
        raise ValueError("loss 'dominant_ce' needs a model with a softmax class head (delta_attention eq17=True)")
    logits = extras["class_logits"]
    labels = labels.to(logits.dtype).reshape(logits.shape)
    present = labels.max(dim=-1).values > 0
    if not bool(present.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[present], labels[present].argmax(dim=-1))
