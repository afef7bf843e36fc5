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


class NonFiniteError(RuntimeError):
    """Training produced a NaN/inf loss or gradient (the message says where and what was kept)."""


class NonFiniteGuard(L.Callback):
    """Stops a run whose loss or gradients turn non-finite, before the optimiser applies them.

    ``mode="stop"`` (default): raises :class:`NonFiniteError` naming the step and the first parameters with
    non-finite gradients; the weights were not updated, and the checkpoints on disk are those of the last
    good step (nothing is saved after the bad step). ``mode="skip"``: drops the step's gradients (the
    optimiser step is skipped), counts it (``skipped``, logged as ``train/nonfinite_skipped`` and written
    to metrics.json), and stops anyway after ``max_skips`` consecutive bad steps (the run is not
    recovering).
    """

    def __init__(self, mode: str = "stop", max_skips: int = 20):
        if mode not in ("stop", "skip"):
            raise ValueError(f"nonfinite must be 'stop' or 'skip', got {mode!r}")
        self.mode = mode
        self.max_skips = max_skips
        self.skipped = 0
        self._consecutive = 0
        self.skipped_steps: list[int] = []

    def _fail(self, trainer, what: str) -> None:
        ckpts = []
        for cb in trainer.checkpoint_callbacks:
            for path in (getattr(cb, "last_model_path", ""), getattr(cb, "best_model_path", "")):
                if path and path not in ckpts and os.path.exists(path):
                    ckpts.append(path)
        kept = f"checkpoints kept: {', '.join(ckpts)}" if ckpts else "no checkpoint had been written yet"
        raise NonFiniteError(
            f"training stopped at step {trainer.global_step} (epoch {trainer.current_epoch}): {what}; the "
            f"weights were not updated; {kept}. Lower lr, set gradient_clip=1.0, check the data "
            "(data_report.json), or pass nonfinite=skip to skip such steps"
        )

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        bad = [n for n, p in pl_module.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        if not bad:
            self._consecutive = 0
            return
        what = f"non-finite gradients in {len(bad)} parameter(s), e.g. {', '.join(bad[:3])}"
        if self.mode == "stop":
            self._fail(trainer, what)
        self.skipped += 1
        self._consecutive += 1
        self.skipped_steps.append(int(trainer.global_step))
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None  # optimisers skip parameters without gradients: this step changes nothing
        pl_module.log("train/nonfinite_skipped", float(self.skipped), on_step=True, on_epoch=False)
        if self._consecutive >= self.max_skips:
            self._fail(trainer, f"{what} ({self._consecutive} consecutive steps skipped)")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not torch.isfinite(loss).all() and self.mode == "stop":
            self._fail(trainer, f"non-finite loss {loss.item()}")
