"""Task specifications: what a dataset's labels mean, how a model's output is read, which loss applies.

Kinds:
- ``emotion_intensity``: multi-label intensities (CMU-MOSEI: 6 emotions in [0, 3]); output = one value per emotion.
- ``sentiment``: one score (CMU-MOSI/MOSEI: [-3, 3]; ICT-MMMO: [1, 5]); output = one value.
- ``classification``: single-label classes (IEMOCAP 4-class, CREMA-D, RAVDESS); output = logits.
- ``multilabel_binary``: per-class presence (IEMOCAP per-emotion binary view of MulT's files); output = logits.
- ``multi_regression``: several scores (POM speaker traits); output = one value per trait.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MOSEI_EMOTIONS = ("anger", "disgust", "fear", "happy", "sad", "surprise")

TASK_KINDS = ("emotion_intensity", "sentiment", "classification", "multilabel_binary", "multi_regression")


@dataclass(frozen=True)
class TaskSpec:
    kind: str
    output_names: tuple[str, ...]
    label_range: tuple[float, float] | None = None
    # per-utterance labels of a conversation (labels [B, T_utt], masked like the inputs)
    sequence_labels: bool = False
    # metric used for early stopping / model selection, and whether higher is better
    monitor: str = ""
    monitor_mode: str = "min"
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        if self.kind not in TASK_KINDS:
            raise ValueError(f"unknown task kind {self.kind!r}; expected one of {TASK_KINDS}")
        if not self.monitor:
            default = {
                # MSE, not MAE: on sparse intensities (most are 0) MAE is minimised by predicting zeros, so
                # selecting on it stops training before a model has learned anything (paper 000 trains with L2)
                "emotion_intensity": ("mse", "min"),
                "sentiment": ("mae", "min"),
                "multi_regression": ("mae", "min"),
                "classification": ("accuracy", "max"),
                "multilabel_binary": ("mean_f1", "max"),
            }[self.kind]
            object.__setattr__(self, "monitor", default[0])
            object.__setattr__(self, "monitor_mode", default[1])

    @property
    def output_dim(self) -> int:
        return 1 if self.kind == "sentiment" else len(self.output_names)

    @property
    def is_regression(self) -> bool:
        return self.kind in ("emotion_intensity", "sentiment", "multi_regression")

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "output_names": list(self.output_names),
            "label_range": list(self.label_range) if self.label_range else None,
            "sequence_labels": self.sequence_labels,
            "monitor": self.monitor,
            "monitor_mode": self.monitor_mode,
            # e.g. per-output ranges of multi_regression (A7 vs A5 traits); must survive checkpoints
            "extra": {k: [list(v) if isinstance(v, tuple) else v for v in x] if isinstance(x, list) else x
                      for k, x in self.extra.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> TaskSpec:
        return cls(
            kind=d["kind"],
            output_names=tuple(d["output_names"]),
            label_range=tuple(d["label_range"]) if d.get("label_range") else None,
            sequence_labels=d.get("sequence_labels", False),
            monitor=d.get("monitor", ""),
            monitor_mode=d.get("monitor_mode", "min"),
            extra=dict(d.get("extra") or {}),
        )


def emotion_intensity_task(emotions=MOSEI_EMOTIONS) -> TaskSpec:
    return TaskSpec("emotion_intensity", tuple(emotions), label_range=(0.0, 3.0))


def sentiment_task(low: float = -3.0, high: float = 3.0) -> TaskSpec:
    return TaskSpec("sentiment", ("sentiment",), label_range=(low, high))


def classification_task(classes, sequence_labels: bool = False) -> TaskSpec:
    return TaskSpec("classification", tuple(classes), sequence_labels=sequence_labels)
