"""Run by test_training.py: two-process DDP (gloo) on CPU; every rank dumps its final weights and the
validation values it selected/stopped on."""

import json
import sys

import lightning as L

from emofusion.training import RunConfig, train_run
from emofusion.training.callbacks import SaveRankWeights


class RecordValidation(L.Callback):
    """Per rank: (global step, the monitored val metric that selection and early stopping see, the same metric
    as the module computed it over its own validation predictions)."""

    def __init__(self, out):
        self.out = out
        self.rows = []

    def on_validation_end(self, trainer, pl_module):
        monitor = pl_module.task.monitor
        metrics = pl_module.last_metrics.get("val", {})
        self.rows.append([int(trainer.global_step), float(trainer.callback_metrics[f"val/{monitor}"]),
                          float(metrics.get(monitor, float("nan")))])

    def on_train_end(self, trainer, pl_module):
        with open(f"{self.out}/val_rank{trainer.global_rank}.json", "w") as f:
            json.dump(self.rows, f)


if __name__ == "__main__":
    out = sys.argv[1]
    config = RunConfig(
        model="unimodal_lstm",
        dataset="synthetic",
        modalities=["visual"],
        # 16 val samples and 8 per batch: a sharded evaluation would give each rank one batch of its own
        dataset_options={"n_train": 64, "n_val": 16, "n_test": 16, "min_words": 4, "max_words": 8},
        model_options={"hidden_dim": 8, "head_dim": 8},
        max_epochs=2,
        val_every_n_steps=2,
        batch_size=8,
        devices=2,
        strategy="ddp",
        output=out + "/run",
        progress=False,
        plots=False,
        threads=1,
    )
    train_run(config, callbacks=[SaveRankWeights(out), RecordValidation(out)])
