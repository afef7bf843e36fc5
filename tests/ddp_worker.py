"""Run by test_training.py: two-process DDP (gloo) on CPU; every rank dumps its final weights."""

import sys

from emofusion.training import RunConfig, train_run
from emofusion.training.callbacks import SaveRankWeights

if __name__ == "__main__":
    out = sys.argv[1]
    config = RunConfig(
        model="unimodal_lstm",
        dataset="synthetic",
        modalities=["visual"],
        dataset_options={"n_train": 64, "n_val": 16, "n_test": 16, "min_words": 4, "max_words": 8},
        model_options={"hidden_dim": 8, "head_dim": 8},
        max_epochs=2,
        batch_size=8,
        devices=2,
        strategy="ddp",
        output=out + "/run",
        progress=False,
        plots=False,
        threads=1,
    )
    train_run(config, callbacks=[SaveRankWeights(out)])
