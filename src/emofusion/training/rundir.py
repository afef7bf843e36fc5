"""Nothing lost: the run folder's life cycle.

* A fresh run into a folder that holds an earlier run moves the earlier run aside (``OUTPUT.previous``)
  and restores it if the new run fails before writing a checkpoint of its own; once the new run has a
  checkpoint the earlier one is deleted at the end (a failure after that keeps both and says where).
* ``--resume`` uses the newest checkpoint that loads: a truncated ``last.ckpt`` (killed while writing) is
  reported and the previous step checkpoint is used (two are kept, ``step-*.ckpt``).
* metrics.csv keeps its history across a resume: Lightning's CSV logger deletes an existing file; this one
  keeps the rows logged before the resumed step and appends.
* The training DataLoader declares Lightning's stateful-loader protocol; the position itself is restored
  by :class:`~emofusion.training.callbacks.ExactResume` from the trainer's batch count (exact: the loader's
  own count runs one batch ahead because Lightning prefetches).
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from torch.utils.data import DataLoader

log = logging.getLogger("emofusion")
# a resumed run writes into its own checkpoint folder (a fresh run's folder is new: protected_run_dir)
warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")

BACKUP_SUFFIX = ".previous"
# files that make a folder "an earlier run" (a folder with only unrelated files is used as it is)
RUN_MARKERS = ("config.yaml", "metrics.json", "metrics.csv", "checkpoints")


class ResumeError(FileNotFoundError):
    """No usable checkpoint to resume from (one-line CLI error)."""


def _is_run(path: Path) -> bool:
    return path.is_dir() and any((path / m).exists() for m in RUN_MARKERS)


def _has_checkpoint(run_dir: Path) -> bool:
    return any((run_dir / "checkpoints").glob("*.ckpt")) if (run_dir / "checkpoints").is_dir() else False


@contextmanager
def protected_run_dir(run_dir: Path, resume: bool, launcher: bool = True):
    """Yields with ``run_dir`` ready for a run; an earlier run in it survives a failure of this one."""
    run_dir = Path(run_dir)
    moved = False
    if not resume and launcher and _is_run(run_dir):
        backup = run_dir.with_name(run_dir.name + BACKUP_SUFFIX)
        k = 1
        while backup.exists():  # kept by an earlier failed re-run: never overwritten
            backup = run_dir.with_name(f"{run_dir.name}{BACKUP_SUFFIX}-{k}")
            k += 1
        run_dir.rename(backup)
        log.warning("%s: the earlier run there is moved to %s until this run ends", run_dir, backup)
        moved = True
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield run_dir
    except BaseException:
        if moved and launcher:
            if _has_checkpoint(run_dir):
                log.error("%s: this run failed after writing checkpoints; the earlier run is kept in %s",
                          run_dir, backup)
            else:
                shutil.rmtree(run_dir, ignore_errors=True)
                backup.rename(run_dir)
                log.error("%s: this run failed before its first checkpoint; the earlier run is restored",
                          run_dir)
        raise
    if moved and launcher and backup.exists():
        shutil.rmtree(backup, ignore_errors=True)


def checkpoint_loads(path: Path) -> str | None:
    """None when ``path`` is a complete checkpoint, else why not."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # noqa: BLE001  (truncated zip, empty file, garbage)
        return f"{type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        return "not a Lightning checkpoint (no state_dict)"
    return None


def resume_checkpoint(run_dir: Path) -> Path:
    """The newest checkpoint of ``run_dir`` that loads (last.ckpt, then the step checkpoints by step)."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    if not ckpt_dir.is_dir():
        raise ResumeError(f"cannot resume: {ckpt_dir} does not exist (no checkpoint was written)")
    candidates = [ckpt_dir / "last.ckpt"] if (ckpt_dir / "last.ckpt").exists() else []
    steps = sorted(ckpt_dir.glob("step-*.ckpt"), key=lambda p: (_step_of(p), p.stat().st_mtime), reverse=True)
    candidates += steps
    problems = []
    for path in candidates:
        why = checkpoint_loads(path)
        if why is None:
            if problems:
                log.warning("resume: %s; resuming from %s", "; ".join(problems), path.name)
            return path
        problems.append(f"{path.name} is unreadable, truncated or corrupt ({why})")
    if not candidates:
        raise ResumeError(f"cannot resume: no last.ckpt or step-*.ckpt in {ckpt_dir}")
    raise ResumeError(f"cannot resume from {ckpt_dir}: {'; '.join(problems)}")


def _step_of(path: Path) -> int:
    try:
        return int(path.stem.split("=")[-1].split("-")[-1])
    except ValueError:
        return -1


def checkpoint_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True).get("global_step", 0))


class _KeepingWriter(ExperimentWriter):
    """Keeps an existing metrics.csv: rows logged before ``keep_before_step`` stay, later ones (logged
    after the checkpoint the run resumes from) are dropped because they are logged again."""

    def __init__(self, log_dir: str, keep_before_step: int | None):
        self._keep_before = keep_before_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = self.metrics_file_path
        if not os.path.isfile(path):
            return
        if self._keep_before is None:  # a fresh run: the folder is new (protected_run_dir)
            os.remove(path)
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            keys = list(reader.fieldnames or [])
            rows = [r for r in reader if _as_step(r.get("step")) < self._keep_before]
        self.metrics_keys = sorted(keys)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)


def _as_step(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("inf")


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSV logger, but a resumed run's metrics.csv keeps its epoch history."""

    def __init__(self, *args, keep_before_step: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._keep_before = keep_before_step

    @property
    def experiment(self):
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(self.log_dir, self._keep_before)
        return self._experiment


class StatefulLoader(DataLoader):
    """A DataLoader with Lightning's ``state_dict``/``load_state_dict`` protocol.

    The state recorded is the batch sampler's epoch and skip; restoring it is done by ExactResume from the
    trainer's processed-batch count (the exact position), so ``load_state_dict`` only checks it is ours.
    """

    def state_dict(self) -> dict:
        sampler = self.batch_sampler
        return {"epoch": int(getattr(sampler, "epoch", 0)), "skip": int(getattr(sampler, "_skip", 0))}

    def load_state_dict(self, state: dict) -> None:
        if state and set(state) - {"epoch", "skip"}:
            raise ValueError(f"not an emofusion loader state: {sorted(state)}")
