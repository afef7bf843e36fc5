"""The LightningModule that wraps any registered model with its task's loss and metrics."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch

from emofusion.data.batch import Batch
from emofusion.evaluation.metrics import compute_metrics
from emofusion.models import create_model
from emofusion.models.base import ModelOutput
from emofusion.tasks import TaskSpec
from emofusion.training.losses import default_loss, task_loss


class EmoFusionModule(L.LightningModule):
    def __init__(
        self,
        model_name: str,
        modality_dims: dict[str, int],
        task: dict,
        model_options: dict | None = None,
        loss: str | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        hygiene_state: dict | None = None,
        run_config: dict | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.task = TaskSpec.from_dict(task)
        self.model = create_model(model_name, dict(modality_dims), self.task, **(model_options or {}))
        self.loss_name = loss or getattr(self.model, "default_loss", None) or default_loss(self.task)
        self._outputs: dict[str, list] = {"val": [], "test": []}
        self.last_metrics: dict[str, dict[str, float]] = {}

    @property
    def modalities(self) -> list[str]:
        return list(self.hparams.modality_dims)

    def forward(self, batch: Batch) -> ModelOutput:
        return self.model({m: batch.inputs[m] for m in self.modalities})

    def _loss(self, output: ModelOutput, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        loss = task_loss(
            self.loss_name, self.task, output.prediction, batch.labels, batch.label_mask, output.extras
        )
        total = loss
        for aux in output.aux_losses.values():
            total = total + aux
        return total, loss

    def training_step(self, batch: Batch, batch_idx: int):
        output = self(batch)
        total, loss = self._loss(output, batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch), on_step=True, on_epoch=True)
        for name, aux in output.aux_losses.items():
            self.log(f"train/{name}", aux, batch_size=len(batch), on_step=False, on_epoch=True)
        return total

    def _eval_step(self, stage: str, batch: Batch):
        output = self(batch)
        _, loss = self._loss(output, batch)
        self.log(f"{stage}/loss", loss, batch_size=len(batch), on_epoch=True, prog_bar=stage == "val")
        self._outputs[stage].append(_collect(output.prediction, batch))

    def validation_step(self, batch: Batch, batch_idx: int):
        self._eval_step("val", batch)

    def test_step(self, batch: Batch, batch_idx: int):
        self._eval_step("test", batch)

    def _epoch_end(self, stage: str):
        chunks = self._outputs[stage]
        self._outputs[stage] = []
        if not chunks:
            return
        preds = np.concatenate([c[0] for c in chunks])
        labels = np.concatenate([c[1] for c in chunks])
        metrics = compute_metrics(self.task, preds, labels)
        self.last_metrics[stage] = metrics
        for name, value in metrics.items():
            if np.isfinite(value):
                self.log(f"{stage}/{name}", float(value), prog_bar=(name == self.task.monitor))

    def on_validation_epoch_end(self):
        self._epoch_end("val")

    def on_test_epoch_end(self):
        self._epoch_end("test")

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return None  # parameter-free baselines (e.g. the random baseline) train nothing
        return torch.optim.Adam(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    @torch.no_grad()
    def predict_loader(self, loader) -> dict:
        """Predictions of a whole loader: ``{"predictions", "labels", "ids", "extras"}`` in loader order
        (per-utterance outputs flattened over the label mask; ids then repeat per utterance)."""
        was_training = self.training
        self.eval()
        preds, labels, ids = [], [], []
        for batch in loader:
            batch = batch.to(self.device)
            output = self(batch)
            p, y = _collect(output.prediction, batch)
            preds.append(p)
            labels.append(y)
            if batch.label_mask is not None:
                counts = batch.label_mask.sum(1).tolist()
                ids += [i for i, c in zip(batch.ids, counts) for _ in range(c)]
            else:
                ids += batch.ids
        self.train(was_training)
        return {"predictions": np.concatenate(preds), "labels": np.concatenate(labels), "ids": ids}


def _collect(prediction: torch.Tensor, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
    prediction = prediction.detach().float()
    labels = batch.labels
    if batch.label_mask is not None:
        prediction = prediction[batch.label_mask]
        labels = labels[batch.label_mask]
    elif labels.dim() == 1 and prediction.dim() == 2 and prediction.shape[1] == 1:
        labels = labels.unsqueeze(1)
    return prediction.cpu().numpy(), labels.detach().cpu().numpy()
