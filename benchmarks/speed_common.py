"""Shared timing loop of the per-paper speed scripts (rrnn_speed.py, rmfn_speed.py).

Training = forward + backward + Adam step over the same batches; inference = forward under no_grad.
"""

from __future__ import annotations

import time

import torch

from emofusion.data.collate import collate_samples
from emofusion.models import create_model


def make_batches(bundle, batch_size: int, n: int, clean: bool = False):
    """``n`` batches of training samples as ``(inputs, labels)``; ``clean`` zeroes non-finite values
    (raw synthetic audio holds a few -inf, as COVAREP does; these scripts skip the hygiene step)."""
    samples = [bundle.train[i] for i in range(min(len(bundle.train), batch_size * n))]
    out = []
    for i in range(0, len(samples), batch_size):
        batch = collate_samples(samples[i : i + batch_size], list(bundle.modality_dims))
        inputs = batch.inputs
        if clean:
            inputs = {m: (torch.nan_to_num(v, 0.0, 0.0, 0.0), mask) for m, (v, mask) in inputs.items()}
        out.append((inputs, batch.labels))
    return out


def measure(name: str, options: dict, bundle, data, repeats: int, loss=torch.nn.functional.mse_loss):
    """(training samples/s, inference samples/s, parameters) of model ``name`` on ``data``."""
    torch.manual_seed(0)
    model = create_model(name, bundle.modality_dims, bundle.task, **options)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n_samples = sum(labels.shape[0] for _, labels in data)
    model.train()
    inputs, labels = data[0]  # warm-up
    loss(model(inputs).prediction, labels).backward()
    start = time.perf_counter()
    for _ in range(repeats):
        for inputs, labels in data:
            opt.zero_grad()
            loss(model(inputs).prediction, labels).backward()
            opt.step()
    train = repeats * n_samples / (time.perf_counter() - start)
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(repeats):
            for inputs, _ in data:
                model(inputs)
    infer = repeats * n_samples / (time.perf_counter() - start)
    return train, infer, model.num_parameters()


class GeneratedPage:
    """Tee what a benchmark prints into a generated Markdown page (``--out``), with the command and the
    machine load, so model pages link to measured numbers instead of typing them."""

    def __init__(self, path, title: str):
        import io
        import sys

        self.path, self.title, self.buf, self.sys = path, title, io.StringIO(), sys
        self.start_load = _loadavg()

    def __enter__(self):
        import contextlib

        self._tee = _Tee(self.sys.stdout, self.buf)
        self._ctx = contextlib.redirect_stdout(self._tee)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        if self.path and exc[0] is None:
            from pathlib import Path

            cmd = " ".join(["python", *self.sys.argv])
            head = (f"# {self.title} (generated)\n\nWritten by `OMP_NUM_THREADS=1 {cmd}`; load average (1/5/15 min) "
                    f"at start {self.start_load}, at end {_loadavg()} on {_cpus()} cores (shared machine: absolute "
                    "rates vary with the load, compare within one page).\n\n")
            Path(self.path).write_text(head + self.buf.getvalue())
        return False


class _Tee:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self):
        for s in self.streams:
            s.flush()


def _loadavg() -> str:
    import os

    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def _cpus() -> int:
    import os

    return os.cpu_count() or 1
