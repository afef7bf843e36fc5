"""Classical baselines: a scikit-learn estimator on per-modality pooled statistics of the sequences.

Paper 001 (RMFN, Tables 1-3) lists an SVM [16, 46] and a random forest (RF [8]) among its baselines; the
CMU-MOSI / ICT-MMMO literature feeds them the features averaged over the utterance. Here each modality of a
sample becomes ``[mean over its real steps, standard deviation over them, present]`` (masked; ``present`` is 1
when the sample has at least one real step of the modality, else 0 and the statistics are 0, the standardised
mean: an absent modality is visible as absent, not as average). The modalities' vectors are concatenated
(early fusion of pooled features) and fed to:

- ``svm``: RBF support-vector regression / classification on the standardised pooled features (scikit-learn
  ``SVR`` / ``SVC`` behind a ``StandardScaler``, fitted on train);
- ``random_forest``: ``RandomForestRegressor`` / ``Classifier`` (squared-error / Gini criterion);
- ``gradient_boosting``: ``HistGradientBoostingRegressor`` / ``Classifier``, trained on the run's loss (``l1`` ->
  absolute error, ``mse`` -> squared error) -- not one of paper 001's baselines, the strongest classical model
  of tabular data.

Choices (docs/models/classical.md): the statistics are the mean and the population standard deviation
(``ddof=0``; a single real step gives 0); regression outputs are clipped to the task's label range; class
logits are ``log`` of the predicted probabilities (a class absent from the training labels gets ``log 1e-12``).

These models are not trained by gradient steps: they declare ``fits_closed_form`` and the run engine fits them
once on the training split (:func:`emofusion.training.run.train_run`); their fitted estimator travels in the
checkpoint as the module's extra state (a pickle, as every Lightning checkpoint is). They cannot be exported to
safetensors or ONNX.
"""

from __future__ import annotations

import numpy as np
import torch

from emofusion.data.batch import ModelInputs
from emofusion.models.base import FusionModel, ModelOutput
from emofusion.models.registry import register_model
from emofusion.tasks import TaskSpec

# the run's loss -> HistGradientBoostingRegressor's loss
BOOSTING_LOSSES = {"l1": "absolute_error", "mse": "squared_error"}
LOG_FLOOR = 1e-12


def pooled_statistics(values: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """``[B, 2 D + 1]``: masked mean and population std over the real steps, then 1.0 if there is any real step.

    Padding (mask False) is never read, whatever it holds (NaN included); a sample without a real step gets
    zeros and ``present`` 0."""
    v = values.detach().double()
    m = mask.bool().unsqueeze(-1)
    v = torch.where(m, v, torch.zeros((), dtype=v.dtype))
    count = m.sum(1).double()  # [B, 1]
    safe = count.clamp(min=1.0)
    mean = v.sum(1) / safe
    var = torch.where(m, (v - mean.unsqueeze(1)) ** 2, torch.zeros((), dtype=v.dtype)).sum(1) / safe
    present = (count > 0).double()
    return torch.cat([mean, var.sqrt(), present], dim=1).cpu().numpy()


class ClassicalBaseline(FusionModel):
    """Base of the pooled-statistics baselines; subclasses say which estimator (:meth:`make_estimator`)."""

    fits_closed_form = True  # the engine calls fit(features, labels) once instead of a gradient loop
    default_absent = "zeros"  # absence is the ``present`` statistic, no learned token
    supported_kinds = ("sentiment", "emotion_intensity", "multi_regression", "classification")

    def __init__(self, modality_dims: dict[str, int], task: TaskSpec, **estimator_options):
        """``estimator_options``: keyword arguments of the scikit-learn estimator (each subclass names its own)."""
        super().__init__(modality_dims, task)
        if task.kind not in self.supported_kinds or task.sequence_labels:
            raise ValueError(
                f"{type(self).__name__} fits one estimator to one label (vector) per sample: task kind "
                f"{task.kind!r}{' with per-utterance labels' if task.sequence_labels else ''} is not supported; "
                f"supported: {self.supported_kinds}"
            )
        self.estimator_options = dict(estimator_options)
        self.estimator = None

    # the estimator of a task; ``loss`` is the run's loss name (l1 / mse / ce)
    def make_estimator(self, seed: int, loss: str):
        raise NotImplementedError

    def features(self, inputs: ModelInputs) -> np.ndarray:
        checked = self.check_inputs(inputs)
        return np.concatenate([pooled_statistics(*checked[m]) for m in self.modalities], axis=1)

    def fit(self, features: np.ndarray, labels: np.ndarray, seed: int = 0, loss: str = "l1") -> None:
        """Fit on the training split's pooled features ``[N, F]`` and labels (``[N]`` / ``[N, K]`` values, or
        ``[N]`` class ids)."""
        labels = np.asarray(labels)
        if self.task.is_regression:
            labels = labels.reshape(len(labels), -1).astype(np.float64)
            if labels.shape[1] == 1:
                labels = labels[:, 0]
        else:
            labels = labels.reshape(-1).astype(np.int64)
        estimator = self.make_estimator(seed, loss)
        if self.task.is_regression and labels.ndim == 2 and not getattr(self, "native_multi_output", False):
            from sklearn.multioutput import MultiOutputRegressor

            estimator = MultiOutputRegressor(estimator)
        self.estimator = estimator.fit(np.asarray(features, np.float64), labels)

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """Predictions for pooled features ``[N, F]``: values clipped to the label range, or class logits."""
        if self.estimator is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: train it with `emofusion train` (train_run)")
        if self.task.is_regression:
            pred = np.asarray(self.estimator.predict(x), np.float64).reshape(len(x), -1)
            if self.task.label_range is not None:
                pred = np.clip(pred, *self.task.label_range)
            return pred
        proba = self.estimator.predict_proba(x)
        pred = np.full((len(x), self.output_dim), np.log(LOG_FLOOR))
        pred[:, np.asarray(self.estimator.classes_, np.int64)] = np.log(np.maximum(proba, LOG_FLOOR))
        return pred

    def forward(self, inputs: ModelInputs) -> ModelOutput:
        any_values = next(iter(inputs.values()))[0]
        pred = self.predict_features(self.features(inputs))
        return ModelOutput(torch.as_tensor(pred, dtype=any_values.dtype, device=any_values.device))

    # the fitted estimator is the model's state: it rides in state_dict() (so in Lightning checkpoints)
    def get_extra_state(self):
        return {"estimator": self.estimator}

    def set_extra_state(self, state) -> None:
        self.estimator = (state or {}).get("estimator")


@register_model("svm")
class SVMBaseline(ClassicalBaseline):
    """Paper 001's SVM baseline: RBF SVR (regression) / SVC (classes) on standardised pooled statistics."""

    def __init__(self, modality_dims: dict[str, int], task: TaskSpec, C: float = 1.0, epsilon: float = 0.1,
                 gamma: float | str = "scale", **estimator_options):
        """``C``: the penalty; ``epsilon``: SVR's insensitive zone (regression only); ``gamma``: kernel width;
        other keywords go to scikit-learn's SVR / SVC."""
        super().__init__(modality_dims, task, C=C, epsilon=epsilon, gamma=gamma, **estimator_options)

    def make_estimator(self, seed: int, loss: str):
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC, SVR

        opts = dict(self.estimator_options)
        epsilon = opts.pop("epsilon")
        if self.task.is_regression:
            return make_pipeline(StandardScaler(), SVR(kernel="rbf", epsilon=epsilon, **opts))
        # class probabilities by Platt scaling on 3 internal folds (SVC(probability=True) is deprecated in 1.9)
        svc = make_pipeline(StandardScaler(), SVC(kernel="rbf", random_state=seed, **opts))
        return CalibratedClassifierCV(svc, method="sigmoid", cv=3, ensemble=False)


@register_model("random_forest")
class RandomForestBaseline(ClassicalBaseline):
    """Paper 001's RF baseline: a random forest on the pooled statistics."""

    native_multi_output = True

    def __init__(self, modality_dims: dict[str, int], task: TaskSpec, n_estimators: int = 300,
                 min_samples_leaf: int = 1, max_features: float = 1.0, max_depth: int | None = None,
                 **estimator_options):
        """The forest's size and tree settings (``max_features``: the fraction of columns tried per split); other
        keywords go to scikit-learn's RandomForestRegressor / Classifier."""
        super().__init__(modality_dims, task, n_estimators=n_estimators, min_samples_leaf=min_samples_leaf,
                         max_features=max_features, max_depth=max_depth, **estimator_options)

    def make_estimator(self, seed: int, loss: str):
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        cls = RandomForestRegressor if self.task.is_regression else RandomForestClassifier
        return cls(random_state=seed, n_jobs=1, **self.estimator_options)


@register_model("gradient_boosting")
class GradientBoostingBaseline(ClassicalBaseline):
    """Histogram gradient-boosted trees on the pooled statistics, fitted on the run's loss (l1 / mse; ce for
    classes). ``max_features < 1`` samples features per split, so seeds then differ; at 1.0 the fit is
    deterministic (no early stopping: ``early_stopping=False``, the validation split chooses settings)."""

    def __init__(self, modality_dims: dict[str, int], task: TaskSpec, learning_rate: float = 0.05,
                 max_iter: int = 200, max_depth: int = 3, max_features: float = 1.0, **estimator_options):
        """Boosting rate and rounds, tree depth, the fraction of columns per split (< 1: seeded); other keywords
        go to scikit-learn's HistGradientBoostingRegressor / Classifier."""
        super().__init__(modality_dims, task, learning_rate=learning_rate, max_iter=max_iter, max_depth=max_depth,
                         max_features=max_features, **estimator_options)

    def make_estimator(self, seed: int, loss: str):
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        opts = {"early_stopping": False, **self.estimator_options}
        if not self.task.is_regression:
            return HistGradientBoostingClassifier(random_state=seed, **opts)
        if loss not in BOOSTING_LOSSES:
            raise ValueError(f"gradient_boosting trains with the loss l1 or mse on regression tasks, got {loss!r}")
        return HistGradientBoostingRegressor(loss=BOOSTING_LOSSES[loss], random_state=seed, **opts)
