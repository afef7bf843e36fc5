"""Suites through submitit: the local executor gives the local runner's table; SLURM arrays (mocked)."""

import csv
import os
from pathlib import Path

import pytest

from emofusion.evaluation import launchers
from emofusion.evaluation.launchers import CellTask, LauncherOptions, launch
from emofusion.evaluation.suite import Cell, SuiteSpec, plan_jobs, run_suite
from helpers import TINY_RUN

REPO = Path(__file__).resolve().parents[1]
TINY = TINY_RUN
OTHER = {**TINY, "model_options": {"hidden_dim": 4, "head_dim": 4}}


def _spec():
    # one training config x 2 seeds; the noisy cell is evaluated on the same runs
    noise = {"kind": "gaussian_noise", "modality": "visual", "snr_db": -10}
    cells = [Cell("h8", "clean", TINY), Cell("h8", "noisy", TINY, noise)]
    return SuiteSpec(cells, ["mae", "mse"], seeds=[0, 1])


def _table(path: Path):
    with open(path) as f:
        return [{k: v for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.fixture
def src_on_path(monkeypatch):
    # submitit's local executor starts fresh interpreters: they must import this tree's emofusion
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.mark.slow
def test_submitit_local_gives_the_local_runners_table(tmp_path, src_on_path):
    local = run_suite(_spec(), out_dir=tmp_path / "local", suite_name="tiny", log=None)
    logs = []
    sub = run_suite(_spec(), out_dir=tmp_path / "sub", suite_name="tiny", log=logs.append,
                    launcher="submitit-local", launcher_options=LauncherOptions(jobs=2, poll_seconds=0.5))
    # the cells ran as submitit jobs (their folder holds the pickled tasks and logs)
    assert len(list((tmp_path / "sub" / "submitit").glob("*_result.pkl"))) == 2
    a, b = _table(tmp_path / "local" / "tiny" / "results.csv"), _table(tmp_path / "sub" / "tiny" / "results.csv")
    # 2 cells x 2 metrics, plus the suite's trivial-baseline rows
    assert sum(not r["row"].startswith("baseline") for r in a) == 4
    assert len(a) == len(b) and [r["row"] + r["column"] + r["metric"] for r in a] == [
        r["row"] + r["column"] + r["metric"] for r in b]
    for ra, rb in zip(a, b):
        assert float(ra["mean"]) == pytest.approx(float(rb["mean"]), rel=1e-6, abs=1e-9)
        assert float(ra["std"]) == pytest.approx(float(rb["std"]), rel=1e-6, abs=1e-9)
    assert (tmp_path / "local" / "tiny" / "results.md").read_text().split("Reproduce")[1] == (
        tmp_path / "sub" / "tiny" / "results.md").read_text().split("Reproduce")[1]
    assert all(not c["errors"] for c in sub.cells) and len(local.cells) == 2

    # the cache decides what is left: a second launch submits nothing
    before = set((tmp_path / "sub" / "submitit").glob("*_submitted.pkl"))
    run_suite(_spec(), out_dir=tmp_path / "sub", suite_name="tiny", log=logs.append,
              launcher="submitit-local", launcher_options=LauncherOptions(jobs=2))
    assert set((tmp_path / "sub" / "submitit").glob("*_submitted.pkl")) == before
    assert any("(2 cached)" in m for m in logs)


def test_failed_task_is_reported_not_fatal(tmp_path, src_on_path):
    bad = SuiteSpec([Cell("bad", "clean", {**TINY, "model": "early_fusion_lstm", "lr": "oops"})], ["mae"],
                    seeds=[0])
    result = run_suite(bad, out_dir=tmp_path, suite_name="bad", log=None, launcher="submitit-local",
                       launcher_options=LauncherOptions(poll_seconds=0.3))
    (cell,) = result.cells
    assert "lr" in cell["errors"][0] and "must be a number" in cell["errors"][0]


def _mocked_slurm():
    pytest.importorskip("submitit")
    from submitit.slurm.test_slurm import mocked_slurm

    return mocked_slurm()


def test_slurm_array_script_without_submitting(tmp_path):
    multi = {**TINY, "devices": 2, "strategy": "ddp", "accelerator": "gpu"}
    spec = SuiteSpec([Cell("a", "clean", TINY), Cell("b", "clean", OTHER), Cell("c", "ddp", multi)], ["mae"],
                     seeds=[0, 1])
    todo = plan_jobs(spec, [0, 1], tmp_path)
    opts = LauncherOptions(partition="gpu-short", time_min=30, setup=["source .venv/bin/activate"],
                           array_parallelism=3, wait=False)
    with _mocked_slurm():
        list(launch(todo, "slurm", tmp_path, opts, log=None))
        scripts = sorted((tmp_path / "submitit").glob("*_submission.sh"))
    texts = [p.read_text() for p in scripts]
    assert len(texts) == 2  # one array per resource shape: single-device cells, 2-device cells
    single = next(t for t in texts if "--ntasks-per-node=1" in t)
    double = next(t for t in texts if "--ntasks-per-node=2" in t)
    # 4 single-device (config, seed) cells in one array, at most 3 at a time
    assert "#SBATCH --array=0-3%3" in single and "#SBATCH --array=0-1%2" in double
    assert "#SBATCH --partition=gpu-short" in single and "#SBATCH --time=30" in single
    assert "source .venv/bin/activate" in single
    # preemption / time-limit warning, on which submitit requeues the checkpointable task
    assert "#SBATCH --signal=USR2@90" in single
    assert "#SBATCH --gpus-per-node=2" in double and "--gpus-per-node" not in single
    assert "srun" in single


def test_dry_run_writes_the_script_and_submits_nothing(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("subprocess.check_output", lambda *a, **k: calls.append(a) or b"")
    todo = plan_jobs(SuiteSpec([Cell("a", "clean", TINY)], ["mae"], seeds=[0, 1, 2]), [0, 1, 2], tmp_path)
    out = []
    list(launch(todo, "slurm", tmp_path, LauncherOptions(dry_run=True), log=out.append))
    script = (tmp_path / "submitit" / "dry-run-1x1.sbatch").read_text()
    assert "#SBATCH --array=0-2%3" in script and "#SBATCH --job-name=emofusion-cell" in script
    assert not calls and not list((tmp_path / "submitit").glob("*_submitted.pkl"))
    assert "would be one array" in out[0]
    with pytest.raises(ValueError, match="dry-run"):
        list(launch(todo, "submitit-local", tmp_path, LauncherOptions(dry_run=True), log=None))


def test_preempted_task_requeues_with_resume(tmp_path):
    job = plan_jobs(SuiteSpec([Cell("a", "clean", TINY)], ["mae"], seeds=[0]), [0], tmp_path)[0]
    task = CellTask()
    again = task.checkpoint(job)
    assert again.function is task and again.args == (job,) and again.kwargs == {"resume": True}


def test_benchmark_cli_has_the_launcher_flags():
    from emofusion.cli import build_parser

    args = build_parser().parse_args(["benchmark", "paper003-grid", "--launcher", "slurm", "--slurm-time", "5",
                                      "--no-wait", "--slurm-setup", "module load cuda"])
    opts = launchers.options_from_args(args)
    assert args.launcher == "slurm" and opts.time_min == 5 and not opts.wait and opts.setup == ["module load cuda"]


@pytest.mark.slow
def test_requeued_task_resumes_from_its_last_checkpoint(tmp_path, src_on_path, monkeypatch):
    import json
    import pickle
    import subprocess
    import sys

    cfg = {**TINY, "max_epochs": 3, "checkpoint_every_n_steps": 2}
    spec = SuiteSpec([Cell("a", "clean", cfg)], ["mae"], seeds=[0])
    (job,) = plan_jobs(spec, [0], tmp_path / "cut")
    (ref,) = plan_jobs(spec, [0], tmp_path / "full")
    pickled = tmp_path / "job.pkl"
    pickled.write_bytes(pickle.dumps(job))
    # the first attempt dies (SIGKILL, as a preempted node) after step 5 of 9, with last.ckpt at step 4
    code = f"import pickle; from emofusion.evaluation.suite import run_job; run_job(pickle.load(open({str(pickled)!r}, 'rb')))"
    killed = subprocess.run([sys.executable, "-c", code], env={**os.environ, "EMOFUSION_FAULT_AT_STEP": "5"},
                            capture_output=True, text=True, timeout=900)
    assert killed.returncode != 0 and not Path(job.cache_path).exists()
    assert (Path(job.run_dir) / "checkpoints" / "last.ckpt").exists()

    import torch

    import emofusion.training as training

    assert torch.load(Path(job.run_dir) / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4
    calls = []
    real = training.train_run
    monkeypatch.setattr(training, "train_run", lambda config, resume=False, **kw: calls.append(resume) or real(
        config, resume=resume, **kw))
    requeued = CellTask().checkpoint(job)  # what submitit pickles and runs again after the requeue
    record = requeued.function(*requeued.args, **requeued.kwargs)
    fresh = CellTask()(ref)
    assert calls == [True, False]  # the requeued task continued from last.ckpt; the reference ran through
    assert record["status"] == "ok" and fresh["status"] == "ok"
    assert record["metrics"]["test"]["mae"] == pytest.approx(fresh["metrics"]["test"]["mae"], rel=1e-6)
    # exact resume: the interrupted-and-requeued cell scores what the uninterrupted one does
    assert json.loads(Path(job.cache_path).read_text())["status"] == "ok"


def test_local_dry_run_prints_the_plan_and_trains_nothing(tmp_path, capsys):
    from emofusion.cli import main

    assert main(["benchmark", "synthetic-fusion", "--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[synthetic-fusion]" in out and "0 cached" in out and "to train" in out
    assert not list(tmp_path.rglob("*.json"))  # no run, no cache entry, no report
