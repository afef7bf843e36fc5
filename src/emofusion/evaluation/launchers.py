"""Where a suite's (config, seed) cells run: local processes (suite.py), or submitit (local or SLURM).

    emofusion benchmark paper003-grid --launcher slurm --slurm-partition gpu --slurm-time 60
    emofusion benchmark paper003-grid --launcher slurm --dry-run       # print the sbatch script only
    emofusion benchmark paper003-grid --launcher submitit-local        # same path, local subprocesses

Each cell left to run (the suite's cache decides: a finished (config, seed) is never submitted again) is one
task of a SLURM job array; the task writes its cache record to the shared ``--out`` folder and the
launching process gathers the records into the suite's usual tables. ``--no-wait`` submits and returns;
re-running the same command later gathers what has finished (and submits only what is missing).

Preemption and time limits: a task is a ``submitit.helpers.Checkpointable``; on SLURM's warning signal
submitit requeues it and the run continues from its ``last.ckpt`` (emofusion's exact resume). A cell with
``devices > 1`` (or ``num_nodes > 1``) gets one SLURM task per device, launched by srun; Lightning's
SLURMEnvironment reads the ranks from SLURM's variables, and only rank 0 writes the result.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from emofusion.evaluation.suite import Job, run_job

LAUNCHERS = ("local", "submitit-local", "slurm")


@dataclass
class LauncherOptions:
    partition: str | None = None
    time_min: int = 60
    cpus_per_task: int = 2
    gpus_per_node: int = 0  # per task group; a multi-device cell asks for as many GPUs as its devices
    mem_gb: float | None = None
    array_parallelism: int = 64
    account: str | None = None
    qos: str | None = None
    setup: list[str] = field(default_factory=list)  # shell lines run before the task (venv, modules)
    wait: bool = True
    dry_run: bool = False
    jobs: int = 1  # submitit-local: tasks running at once
    poll_seconds: float = 2.0


def _rank() -> int:
    for var in ("SLURM_PROCID", "RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


try:  # submitit is a core dependency, but the module must import without it for `emofusion --help`
    from submitit.helpers import Checkpointable, DelayedSubmission
except ImportError:  # pragma: no cover
    Checkpointable = object
    DelayedSubmission = None


class CellTask(Checkpointable):
    """One (config, seed) cell. Requeued on preemption / timeout and resumed from its last checkpoint."""

    def __call__(self, job: Job, resume: bool = False) -> dict | None:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        resume = resume and (Path(job.run_dir) / "checkpoints" / "last.ckpt").exists()
        if _rank() != 0:  # other DDP ranks train; rank 0 evaluates and records
            from emofusion.evaluation.suite import _train_and_evaluate

            _train_and_evaluate(job, resume=resume)
            return None
        return run_job(job, resume=resume)

    def checkpoint(self, job: Job, resume: bool = False):
        return DelayedSubmission(self, job, resume=True)


def _devices(job: Job) -> tuple[int, int]:
    devices = job.config.get("devices", 1)
    devices = int(devices) if isinstance(devices, int) or str(devices).isdigit() else 1
    return max(1, devices), max(1, int(job.config.get("num_nodes", 1) or 1))


def _dry_run_executor_class():
    import submitit

    class DryRunSlurmExecutor(submitit.SlurmExecutor):
        """Writes scripts on a machine without SLURM (the stock class refuses to start without srun)."""

        @classmethod
        def affinity(cls) -> int:
            return 1

    return DryRunSlurmExecutor


def _DryRunSlurmExecutor(folder: str):
    return _dry_run_executor_class()(folder=folder)


def make_executor(kind: str, folder: Path, options: LauncherOptions, devices: int = 1, nodes: int = 1):
    import submitit

    if kind not in ("submitit-local", "slurm"):
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {kind!r}")
    if kind == "slurm":
        executor = (_DryRunSlurmExecutor if options.dry_run else submitit.SlurmExecutor)(folder=str(folder))
        params = {
            "time": int(options.time_min), "nodes": nodes, "ntasks_per_node": devices,
            "cpus_per_task": int(options.cpus_per_task), "array_parallelism": int(options.array_parallelism),
            "job_name": "emofusion-cell",
        }
        gpus = devices if devices > 1 else options.gpus_per_node
        if gpus:
            params["gpus_per_node"] = int(gpus)
        for key, value in (("partition", options.partition), ("account", options.account),
                           ("qos", options.qos)):
            if value:
                params[key] = value
        if options.mem_gb:
            params["mem"] = f"{int(options.mem_gb)}GB"
        if options.setup:
            params["setup"] = list(options.setup)
        executor.update_parameters(**params)
        return executor
    executor = submitit.LocalExecutor(folder=str(folder))
    executor.update_parameters(timeout_min=int(options.time_min), tasks_per_node=1, nodes=1)
    return executor


def sbatch_script(executor, n_tasks: int) -> str:
    """The sbatch file submitit would submit for an array of ``n_tasks`` (nothing is submitted)."""
    # private submitit API, the same call its array submission makes
    saved = dict(executor.parameters)
    executor.parameters["map_count"] = n_tasks
    try:
        return executor._make_submission_file_text(executor._submitit_command_str, "dryrun")
    finally:
        executor.parameters.clear()
        executor.parameters.update(saved)


def launch(todo: list[Job], kind: str, out_dir: Path, options: LauncherOptions | None = None,
           log=print) -> Iterator[tuple[Job, dict]]:
    """Run ``todo`` through submitit; yields (job, record) as tasks finish (nothing when not waiting)."""
    options = options or LauncherOptions()
    log = log or (lambda _m: None)
    if not todo:
        return
    folder = Path(out_dir) / "submitit"
    groups: dict[tuple[int, int], list[Job]] = {}
    for job in todo:
        groups.setdefault(_devices(job), []).append(job)
    submitted = []
    for (devices, nodes), jobs in groups.items():
        executor = make_executor(kind, folder, options, devices, nodes)
        if options.dry_run:
            if kind != "slurm":
                raise ValueError("--dry-run shows the sbatch script of --launcher slurm")
            script = sbatch_script(executor, len(jobs))
            path = folder / f"dry-run-{devices}x{nodes}.sbatch"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(script)
            log(f"[launcher] dry run: {len(jobs)} task(s) would be one array ({devices} task(s) per node, "
                f"{nodes} node(s)); script {path}:\n{script}")
            continue
        if kind == "slurm":
            with executor.batch():  # one job array per resource shape
                handles = [executor.submit(CellTask(), job) for job in jobs]
            submitted += list(zip(jobs, handles))
            log(f"[launcher] submitted {len(jobs)} task(s) as SLURM array {handles[0].job_id.split('_')[0]}"
                f" (logs in {folder})")
        else:
            submitted += [(job, None) for job in jobs]
    if options.dry_run or not submitted:
        return
    if kind == "slurm" and not options.wait:
        log("[launcher] not waiting; re-run the same command to gather finished cells (the cache decides)")
        return
    if kind == "slurm":
        yield from _gather(submitted, options, log)
        return
    # submitit-local: at most options.jobs subprocesses at a time
    pending = list(submitted)
    width = max(1, int(options.jobs))
    while pending:
        wave, pending = pending[:width], pending[width:]
        executor = make_executor(kind, folder, options)
        running = [(job, executor.submit(CellTask(), job)) for job, _ in wave]
        yield from _gather(running, options, log)


def _gather(submitted, options: LauncherOptions, log) -> Iterator[tuple[Job, dict]]:
    left = list(submitted)
    while left:
        still = []
        for job, handle in left:
            if not handle.done():
                still.append((job, handle))
                continue
            try:
                record = handle.result()
                if isinstance(record, list):  # multi-task jobs return one value per task: rank 0's counts
                    record = next((r for r in record if r), None)
                if record is None:
                    record = {"status": "error", "error": "the task returned nothing"}
            except Exception as err:  # the task failed: its stderr is in the submitit folder
                record = {"status": "error", "config": job.config, "seed": job.seed,
                          "error": f"{type(err).__name__}: {str(err)[-2000:]}"}
            yield job, record
        left = still
        if left:
            time.sleep(options.poll_seconds)


def submit_suite(name: str, preset: str, seeds, out_dir, kind: str, options: LauncherOptions, log=print) -> int:
    """``--dry-run`` / ``--no-wait``: submit what the cache says is left and return without touching the
    suite's tables (a later run without these flags gathers them). Returns the number of cells left."""
    from emofusion.evaluation.suite import _cached, _resolve_seeds, get_suite, plan_jobs

    spec = get_suite(name, preset)
    planned = plan_jobs(spec, _resolve_seeds(spec, seeds), Path(out_dir))
    todo = [j for j in planned if _cached(j) is None]
    log(f"[{name}] {len(planned)} training runs, {len(planned) - len(todo)} cached, {len(todo)} to submit")
    for _ in launch(todo, kind, Path(out_dir), options, log):
        pass
    return len(todo)


def add_arguments(p) -> None:
    """The launcher flags of ``emofusion benchmark``."""
    g = p.add_argument_group("launcher (where the cells run)")
    g.add_argument("--launcher", choices=LAUNCHERS, default="local",
                   help="local processes (default), submitit-local subprocesses, or a SLURM job array")
    g.add_argument("--slurm-partition", help="SLURM partition")
    g.add_argument("--slurm-time", type=int, default=60, help="minutes per task (requeued when it runs out)")
    g.add_argument("--slurm-cpus", type=int, default=2, help="CPUs per task")
    g.add_argument("--slurm-gpus", type=int, default=0, help="GPUs per node for single-device cells")
    g.add_argument("--slurm-mem", type=float, help="memory per node in GB")
    g.add_argument("--slurm-account")
    g.add_argument("--slurm-qos")
    g.add_argument("--slurm-array-parallelism", type=int, default=64, help="array tasks running at once")
    g.add_argument("--slurm-setup", action="append", default=[],
                   help="shell line run before each task, e.g. 'source .venv/bin/activate' (repeatable)")
    g.add_argument("--no-wait", action="store_true", help="submit and return; re-run to gather the results")
    g.add_argument("--dry-run", action="store_true", help="print the plan (runs, cached, to train) without training; with --launcher slurm: write the sbatch script only")


def options_from_args(args) -> LauncherOptions:
    return LauncherOptions(
        partition=args.slurm_partition, time_min=args.slurm_time, cpus_per_task=args.slurm_cpus,
        gpus_per_node=args.slurm_gpus, mem_gb=args.slurm_mem, account=args.slurm_account, qos=args.slurm_qos,
        array_parallelism=args.slurm_array_parallelism, setup=list(args.slurm_setup), wait=not args.no_wait,
        dry_run=args.dry_run, jobs=max(1, int(getattr(args, "jobs", 1) or 1)),
    )


__all__ = ["LAUNCHERS", "LauncherOptions", "CellTask", "launch", "make_executor", "sbatch_script",
           "add_arguments", "options_from_args", "submit_suite"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `emofusion benchmark SUITE --launcher ...`")
