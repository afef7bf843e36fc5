"""Callbacks: exact mid-epoch resume, fault injection for tests, per-rank weight dumps."""

from __future__ import annotations

import os
import random
import signal

import lightning as L
import numpy as np
import torch

from emofusion.data.collate import LengthBucketBatchSampler


class ExactResume(L.Callback):
    """Sets the bucketing sampler's epoch, and makes a resumed run continue exactly where the killed one
    stopped.

    Lightning restores weights, optimiser and loop counters; this adds what it cannot know: how many batches
    of the interrupted epoch our bucketing sampler had already served (they are skipped, not repeated), and
    the global RNG states (dropout), restored just before the first resumed batch.
    """

    def __init__(self, sampler: LengthBucketBatchSampler):
        self.sampler = sampler
        self._pending: dict | None = None

    def state_dict(self):
        return {}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        checkpoint["emofusion_resume"] = {
            "epoch": trainer.current_epoch,
            "batches_done": int(progress.processed),
            "torch_rng": torch.get_rng_state(),
            # plain types and tensors only: Lightning loads checkpoints with weights_only=True
            "numpy_rng": _numpy_state_to_plain(np.random.get_state()),
            "python_rng": list(random.getstate()),
        }

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        self._pending = checkpoint.get("emofusion_resume")
        p = self._pending
        # Lightning does not call on_train_epoch_start for an epoch resumed in the middle, so the skip is
        # set here, before the resumed epoch's first iterator is created
        if p and p["batches_done"] < len(self.sampler):
            self.sampler.skip_batches(p["epoch"], p["batches_done"])

    def on_train_epoch_start(self, trainer, pl_module):
        # Lightning only calls set_epoch on samplers, not on batch samplers: a new order each epoch
        self.sampler.set_epoch(trainer.current_epoch)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._pending is not None:
            torch.set_rng_state(self._pending["torch_rng"])
            np.random.set_state(_numpy_state_from_plain(self._pending["numpy_rng"]))
            version, internal, gauss = self._pending["python_rng"]
            random.setstate((version, tuple(internal), gauss))
            self._pending = None


def _numpy_state_to_plain(state):
    name, keys, pos, has_gauss, cached = state
    return [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]


def _numpy_state_from_plain(plain):
    name, keys, pos, has_gauss, cached = plain
    return (name, keys.numpy().astype(np.uint32), pos, has_gauss, cached)


class FaultInjection(L.Callback):
    """Kills the process (SIGKILL, no clean-up) after global step N; used by the resume test.

    Enabled by the environment variable ``EMOFUSION_FAULT_AT_STEP``; checkpoints saved at that step are on
    disk first because checkpoint callbacks run before this one is reached on the next batch start.
    """

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class SaveRankWeights(L.Callback):
    """Writes each process's final weights and the sample ids it trained on to ``DIR/rank{r}.pt``
    (checks that DDP replicas agree and that the data was sharded)."""

    def __init__(self, directory: str):
        self.directory = directory
        self.seen: list[str] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 0:
            self.seen += list(batch.ids)

    def on_train_end(self, trainer, pl_module):
        os.makedirs(self.directory, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in pl_module.state_dict().items()}
        torch.save({"weights": state, "seen": self.seen}, os.path.join(self.directory, f"rank{trainer.global_rank}.pt"))
