"""``emofusion tune``: hyper-parameter search (Optuna) with multi-seed confirmation.

    emofusion tune --model ef_lstm --dataset synthetic:aligned --trials 20 --seeds 3
    emofusion tune --model ef_lstm --dataset mfn:../shared/data/mfn_h5/mmmo --modalities audio,visual \\
        --trials 16 --workers 2 --study-dir tune_out/mmmo max_epochs=10

The search space is the model's own declaration (``search_space`` beside its options in models/*.py, e.g.
paper 003's layers/dropout/maxlen grid) plus shared training fields (lr, batch_size, weight_decay); a YAML
file (``--space``) adds, replaces or (with ``null``) removes parameters. Keys are the override keys of
``emofusion train``: ``lr``, ``model.hidden_dim``, ``data.n_train``. A value is a list (categorical), a
mapping ``{type: float|int|categorical, low, high, log, step, choices}``, or a scalar (fixed, not searched).

The study lives in ``STUDY_DIR/study.journal`` (Optuna's JournalStorage on a file: no database server, safe
on a shared file system), so killing and re-running the same command continues it; ``--trials`` is the
study's total budget of finished trials. Bad trials are pruned through Lightning on the protocol's selection
metric. After the search, the best configuration and the untuned default are trained over ``--seeds`` fresh
seeds (same split, suite cache: also resumable) and reported on test beside the single best trial and the
trivial constant predictors of the protocol; the winning configuration is written as a preset for
``emofusion train --config STUDY_DIR/best.yaml``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import socket
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import yaml

log = logging.getLogger("emofusion.tune")

# shared defaults for the training fields of every model (models add their own options)
DEFAULT_TRAINING_SPACE: dict = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "batch_size": [16, 32, 64],
    "weight_decay": [0.0, 1e-5, 1e-4, 1e-3],
}
SPACE_TYPES = ("float", "int", "categorical")
# trials that count toward the budget: everything finished, except trials of killed workers (retried)
STALE_ATTR = "stale"


# ----------------------------------------------------------------------------------------- search space


def model_search_space(model: str) -> dict:
    """The model's declared space (class attribute ``search_space``: option -> spec), keyed ``model.OPTION``."""
    from emofusion.models import MODELS

    declared = getattr(MODELS.get(model), "search_space", None) or {}
    return {f"model.{k}": copy.deepcopy(v) for k, v in declared.items()}


def build_space(model: str, override: dict | None = None) -> dict:
    """Shared training defaults, then the model's declaration, then the YAML override (``null`` removes a
    key; ``inherit: false`` at the top level starts from an empty space)."""
    override = dict(override or {})
    inherit = override.pop("inherit", True)
    space = {**DEFAULT_TRAINING_SPACE, **model_search_space(model)} if inherit else {}
    for key, spec in override.items():
        if spec is None:
            space.pop(key, None)
        else:
            space[key] = spec
    for key, spec in space.items():
        check_spec(key, spec)
    return space


def load_space(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"search space file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"search space file {path} must hold a mapping key -> spec, got {type(data).__name__}")
    data = data.get("space", data) if isinstance(data.get("space"), dict) else data
    for key in data:
        if key != "inherit":
            _check_key(key, source=str(path))
    return data


def _check_key(key: str, source: str = "search space") -> None:
    from emofusion.training.config import RunConfig

    fields = {f.name for f in dataclasses.fields(RunConfig)}
    head = key.split(".")[0]
    if head in ("model", "data") and "." in key:
        return
    if key not in fields or key in ("model", "dataset", "seed", "output"):
        raise ValueError(
            f"{source}: {key!r} is not a tunable key (a RunConfig field such as lr, or model.OPTION / data.OPTION)"
        )


def check_spec(key: str, spec) -> None:
    if isinstance(spec, list):
        if not spec:
            raise ValueError(f"search space {key!r}: empty list of choices")
        return
    if not isinstance(spec, dict):
        return  # a fixed value
    kind = spec.get("type", "categorical" if "choices" in spec else "float")
    if kind not in SPACE_TYPES:
        raise ValueError(f"search space {key!r}: type must be one of {SPACE_TYPES}, got {kind!r}")
    if kind == "categorical":
        if not spec.get("choices"):
            raise ValueError(f"search space {key!r}: categorical needs 'choices'")
        return
    for bound in ("low", "high"):
        if bound not in spec:
            raise ValueError(f"search space {key!r}: {kind} needs {bound!r}")
    if float(spec["low"]) > float(spec["high"]):
        raise ValueError(f"search space {key!r}: low {spec['low']} > high {spec['high']}")
    if spec.get("log") and float(spec["low"]) <= 0:
        raise ValueError(f"search space {key!r}: a log range needs low > 0, got {spec['low']}")


def suggest(trial, key: str, spec):
    if isinstance(spec, list):
        return trial.suggest_categorical(key, spec)
    if not isinstance(spec, dict):
        return spec
    kind = spec.get("type", "categorical" if "choices" in spec else "float")
    if kind == "categorical":
        return trial.suggest_categorical(key, list(spec["choices"]))
    if kind == "int":
        return trial.suggest_int(key, int(spec["low"]), int(spec["high"]), step=int(spec.get("step", 1)),
                                 log=bool(spec.get("log", False)))
    step = spec.get("step")
    return trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)),
                               step=float(step) if step is not None else None)


def apply_params(base: dict, params: dict) -> dict:
    """A config dict with the trial's values put in place (``model.X`` -> model_options, ``data.X`` ->
    dataset_options, nested with dots)."""
    from emofusion.training.config import set_section_option

    out = copy.deepcopy(base)
    out.setdefault("model_options", {})
    out.setdefault("dataset_options", {})
    for key, value in params.items():
        if not set_section_option(out, key, value):
            out[key] = value
    return out


# ----------------------------------------------------------------------------------------- the study


@dataclasses.dataclass
class TuneSpec:
    """Everything a worker needs (picklable: workers are separate processes)."""

    base: dict  # RunConfig fields (the untuned default), seed = the search seed
    space: dict
    study_dir: str
    study_name: str
    trials: int
    metric: str  # without the "val/" prefix
    direction: str  # "minimize" | "maximize"
    sampler: str = "tpe"
    pruning: bool = True

    @property
    def journal(self) -> Path:
        return Path(self.study_dir) / "study.journal"


def storage_for(path: Path):
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    path.parent.mkdir(parents=True, exist_ok=True)
    # the open(O_EXCL) lock works on NFSv3+ and local disks alike
    return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))


def _make_sampler(kind: str, seed: int):
    import optuna

    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)
    raise ValueError(f"--sampler must be tpe or random, got {kind!r}")


def open_study(spec: TuneSpec, worker: int = 0):
    import optuna

    storage = storage_for(spec.journal)
    # each worker (and each resumption) seeds its sampler differently: equal seeds would propose equal trials
    existing = 0
    try:
        existing = len(optuna.load_study(study_name=spec.study_name, storage=storage).trials)
    except KeyError:
        pass
    sampler_seed = int(spec.base.get("seed", 0)) * 1000 + worker * 101 + existing
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=2) if spec.pruning
              else optuna.pruners.NopPruner())
    study = optuna.create_study(
        study_name=spec.study_name, storage=storage, direction=spec.direction,
        sampler=_make_sampler(spec.sampler, sampler_seed), pruner=pruner, load_if_exists=True,
    )
    return study


def _identity(spec: TuneSpec) -> dict:
    return {"base": spec.base, "space": spec.space, "metric": spec.metric, "direction": spec.direction}


def check_identity(study, spec: TuneSpec) -> None:
    """A study directory holds one search: a re-run with another space or base config is refused (its trials
    would be compared with the old ones)."""
    stored = study.user_attrs.get("identity")
    mine = json.loads(json.dumps(_identity(spec), default=str))
    if stored is None:
        study.set_user_attr("identity", mine)
        return
    if stored != mine:
        diff = sorted(k for k in mine if stored.get(k) != mine.get(k))
        raise ValueError(
            f"the study in {spec.study_dir} was started with another {', '.join(diff)}; "
            "re-run with the original settings to continue it, or use a new --study-dir"
        )


def counted(trial) -> bool:
    from optuna.trial import TrialState

    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and not trial.user_attrs.get(STALE_ATTR)
    )


def finished_count(study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if counted(t))


def _running(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reclaim_stale(study, all_hosts: bool = False) -> list[int]:
    """Trials left RUNNING by a killed worker: marked failed (not counted) and their parameters queued again.
    Only trials of this host whose process is gone are touched, unless ``all_hosts`` (no worker alive). A worker
    killed before its objective recorded host and pid leaves a trial with no owner: only ``all_hosts`` takes it."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    reclaimed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner_host, pid = t.user_attrs.get("host"), t.user_attrs.get("pid")
        mine = owner_host == host and pid is not None and not _pid_alive(int(pid))
        if not (mine or all_hosts):
            continue
        study._storage.set_trial_user_attr(t._trial_id, STALE_ATTR, True)
        study.tell(t.number, state=TrialState.FAIL)
        if t.params:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
        reclaimed.append(t.number)
    return reclaimed


def _duplicate(study, trial, params: dict):
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.number != trial.number and t.params == params and not t.user_attrs.get("duplicate_of"):
            return t
    return None


def make_objective(spec: TuneSpec):
    def objective(trial):
        import optuna

        from emofusion.training import RunConfig, train_run

        params = {key: suggest(trial, key, s) for key, s in spec.space.items()}
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        same = _duplicate(trial.study, trial, {k: v for k, v in params.items() if k in trial.params})
        if same is not None:  # the sampler proposed a finished configuration: reuse it, train nothing
            trial.set_user_attr("duplicate_of", same.number)
            for key in ("val", "test", "run_dir"):
                if key in same.user_attrs:
                    trial.set_user_attr(key, same.user_attrs[key])
            return same.value
        run_dir = Path(spec.study_dir) / "trials" / f"trial_{trial.number:04d}"
        cfg = apply_params(spec.base, params)
        cfg.update(output=str(run_dir), progress=False, plots=False)
        config = RunConfig.from_dict(cfg)
        callbacks = []
        if spec.pruning:
            from optuna_integration import PyTorchLightningPruningCallback

            callbacks.append(PyTorchLightningPruningCallback(trial, monitor=f"val/{spec.metric}"))
        trial.set_user_attr("run_dir", str(run_dir))
        try:
            result = train_run(config, callbacks=callbacks)
        except optuna.TrialPruned:
            raise
        value = float(result.metrics["val"].get(spec.metric, float("nan")))
        trial.set_user_attr("val", _numbers(result.metrics["val"]))
        trial.set_user_attr("test", _numbers(result.metrics.get("test", {})))
        if not math.isfinite(value):
            raise ValueError(f"trial {trial.number}: val/{spec.metric} is {value} (run in {run_dir})")
        return value

    return objective


def _numbers(d: dict) -> dict:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float, np.floating)) and not isinstance(v, bool)}


def run_worker(spec: TuneSpec, worker: int = 0, on_trial=None) -> int:
    """Run trials until the study holds ``spec.trials`` finished ones; returns how many this worker ran."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    study = open_study(spec, worker)
    objective = make_objective(spec)
    ran = 0
    # one trial at a time, each claimed against the budget re-read from the shared journal
    while (trial := _claim_trial(study, spec)) is not None:
        _run_trial(study, trial, objective)
        ran += 1
        if on_trial is not None:
            on_trial(study)
    return ran


def _claim_trial(study, spec: TuneSpec):
    """The next trial, or None when the budget is full. Trials running in other workers count, and the check
    and the trial's creation happen under one lock on the study folder: checked apart, two workers that both
    see one free place would both take it (the budget overshot by one)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the check alone, as close to the creation as it gets
        fcntl = None
    lock_path = Path(spec.study_dir) / "claim.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if finished_count(study) + _running(study) >= spec.trials:
                return None
            return study.ask()
        finally:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _run_trial(study, trial, objective) -> None:
    """``study.optimize(n_trials=1)``'s bookkeeping for an already-claimed trial: pruned -> PRUNED; a failed
    configuration (ValueError, RuntimeError, TypeError) -> FAIL with its reason, and the search goes on; any
    other exception (e.g. Ctrl-C) -> FAIL and re-raised."""
    import gc

    import optuna
    from optuna.trial import TrialState

    try:
        value = objective(trial)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
    except (ValueError, RuntimeError, TypeError) as err:
        log.warning("trial %d failed: %s", trial.number, err)
        trial.set_user_attr("fail_reason", str(err)[:1000])
        study.tell(trial, state=TrialState.FAIL)
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        raise
    else:
        study.tell(trial, value)
    finally:
        gc.collect()


def _worker_entry(spec: TuneSpec, worker: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.seed", "emofusion"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    import torch

    torch.set_num_threads(1)
    run_worker(spec, worker)


def run_search(spec: TuneSpec, workers: int = 1, progress: bool = True, fail_running: bool = False) -> object:
    """Open (or continue) the study and run it to its budget with ``workers`` local processes."""
    study = open_study(spec)
    check_identity(study, spec)
    stale = reclaim_stale(study, all_hosts=fail_running)
    if stale:
        print(f"trials {stale} were left running by a killed worker: marked failed and queued again")
    done = finished_count(study)
    if done:
        print(f"continuing study {spec.study_name!r} in {spec.journal}: {done}/{spec.trials} trials finished")
    with _Progress(spec, enabled=progress, start=done) as bar:
        if workers <= 1:
            run_worker(spec, 0, on_trial=bar.update)
        else:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")
            procs = [ctx.Process(target=_worker_entry, args=(spec, i), daemon=False) for i in range(workers)]
            for p in procs:
                p.start()
            try:
                while any(p.is_alive() for p in procs):
                    time.sleep(1.0)
                    bar.update(study)
            except KeyboardInterrupt:
                for p in procs:
                    p.terminate()
                raise
            finally:
                for p in procs:
                    p.join()
            bad = [p.exitcode for p in procs if p.exitcode]
            if bad:
                raise RuntimeError(f"{len(bad)} tune worker(s) exited with codes {bad}")
        bar.update(study)
    return study


class _Progress:
    """Trials done / budget, best value so far, ETA (rich)."""

    def __init__(self, spec: TuneSpec, enabled: bool, start: int):
        self.spec, self.enabled, self.start_count = spec, enabled, start
        self.progress = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]tune[/] trials"), BarColumn(), MofNCompleteColumn(),
                TextColumn("best val/{task.fields[metric]} {task.fields[best]}"), TextColumn("ETA"),
                TimeRemainingColumn(),
            )
            self.progress.__enter__()
            self.task = self.progress.add_task("tune", total=self.spec.trials, completed=self.start_count,
                                               metric=self.spec.metric, best="-")
        return self

    def update(self, study) -> None:
        if self.progress is None:
            return
        best = _best_value(study)
        self.progress.update(self.task, completed=min(finished_count(study), self.spec.trials),
                             best="-" if best is None else f"{best:.4f}")

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)


def _best_value(study):
    try:
        return study.best_value
    except ValueError:
        return None


# ----------------------------------------------------------------------------------------- confirmation


def _cell_config(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in ("seed", "output", "progress", "plots")}


def confirm(spec: TuneSpec, study, seeds: list[int], jobs: int = 1, launcher: str = "local"):
    """Train the best configuration and the untuned default over ``seeds`` (suite machinery: cached,
    resumable) and return the suite result."""
    from emofusion.evaluation.suite import Cell, SuiteSpec, run_suite

    best = study.best_trial
    tuned = _cell_config(apply_params(spec.base, best.params))
    default = _cell_config(spec.base)
    metrics = list((best.user_attrs.get("test") or {}).keys()) or [spec.metric]
    model = spec.base["model"]
    suite = SuiteSpec(
        cells=[Cell(row=f"tuned (trial {best.number})", column=model, config=tuned),
               Cell(row="untuned default", column=model, config=default)],
        metrics=metrics, seeds=list(seeds), title=f"emofusion tune: {model} on {spec.base['dataset']}",
        split="test",
    )
    kwargs = {} if launcher == "local" else {"launcher": launcher}
    return run_suite(suite, seeds=list(seeds), jobs=jobs, out_dir=Path(spec.study_dir) / "confirm",
                     suite_name="confirm", log=lambda m: print(m), **kwargs)


def trivial_baselines(base: dict, seed: int = 0) -> dict[str, dict]:
    """The protocol's closed-form trivial baselines on the test split (evaluation/baselines.py: train mean /
    median, all-zero where 0 is a label, majority class, class prior), fitted on the train split."""
    from emofusion.evaluation.baselines import bundle_baselines
    from emofusion.training import RunConfig
    from emofusion.training.run import prepare_data

    config = RunConfig.from_dict({**base, "output": None})
    bundle, _, _ = prepare_data(config)
    return {f"{name} (trivial baseline)": _numbers(m)
            for name, m in bundle_baselines(bundle, ("test",), seed=seed)["test"].items()}


# ----------------------------------------------------------------------------------------- reports


def write_preset(spec: TuneSpec, study, path: Path) -> Path:
    best = study.best_trial
    cfg = apply_params(spec.base, best.params)
    cfg = {k: v for k, v in cfg.items() if k not in ("output",)}
    head = (
        f"# emofusion tune: best of {finished_count(study)} trials (trial {best.number}, "
        f"val/{spec.metric} = {best.value:.4f}) in {spec.study_dir}\n"
        f"# tuned keys: {', '.join(sorted(best.params))}\n"
        f"# use: emofusion train --config {path} [--seed S] [--output DIR]\n"
    )
    path.write_text(head + yaml.safe_dump(json.loads(json.dumps(cfg, default=str)), sort_keys=False))
    return path


def write_plots(study, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    files = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's ExperimentalWarning
        for name, fn in (("optimization_history", ovm.plot_optimization_history),
                         ("param_importances", ovm.plot_param_importances)):
            try:
                ax = fn(study)
                fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                fig.set_size_inches(7, 4.2)
                fig.tight_layout()
                path = out / f"{name}.png"
                fig.savefig(path, dpi=110)
                plt.close(fig)
                files.append(path)
            except Exception as err:  # e.g. importances need two finished trials with varied parameters
                print(f"[tune] {name} plot skipped: {type(err).__name__}: {err}", file=sys.stderr)
    return files


def _fmt(x) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3f}"


def summarize(spec: TuneSpec, study, suite_result, baselines: dict, seeds: list[int], command: str) -> dict:
    from optuna.trial import TrialState

    best = study.best_trial
    trials = study.get_trials(deepcopy=False)
    states = {s.name.lower(): sum(1 for t in trials if t.state == s) for s in TrialState}
    rows = []
    metrics = suite_result.spec.metrics
    rows.append({"name": f"best trial {best.number} (seed {spec.base.get('seed', 0)}, single run)",
                 "mean": {m: best.user_attrs.get("test", {}).get(m) for m in metrics}, "std": None})
    for cell in suite_result.cells:
        rows.append({"name": f"{cell['row']} over seeds {seeds}", "mean": cell["mean"], "std": cell["std"],
                     "values": cell["values"], "errors": cell["errors"]})
    for name, m in baselines.items():
        rows.append({"name": name, "mean": {k: m.get(k) for k in metrics}, "std": None})
    return {
        "command": command, "study_dir": spec.study_dir, "model": spec.base["model"],
        "dataset": spec.base["dataset"], "modalities": spec.base.get("modalities"),
        "metric": spec.metric, "direction": spec.direction, "trials": states, "budget": spec.trials,
        "best_trial": best.number, "best_value": best.value, "best_params": best.params,
        "seeds": seeds, "metrics": metrics, "rows": rows,
    }


# columns of the Markdown table (every metric is in results.json): the selection metric, then these
HEADLINE = ("mse", "mae", "pearson_r", "acc2_non0", "f1_non0", "acc2_has0", "acc2", "f1", "wa", "f1_weighted",
            "acc5", "acc7", "accuracy", "f1_macro", "mean_f1")


def markdown(summary: dict, max_columns: int = 7) -> str:
    metrics = [summary["metric"]] if summary["metric"] in summary["metrics"] else []
    metrics += [m for m in HEADLINE if m in summary["metrics"] and m not in metrics]
    metrics = metrics[:max_columns] or summary["metrics"][:max_columns]
    lower = summary["direction"] == "minimize"
    lines = [
        f"**{summary['model']} on `{summary['dataset']}`**"
        + (f" (modalities {', '.join(summary['modalities'])})" if summary.get("modalities") else ""),
        "",
        f"Command: `{summary['command']}`",
        "",
        f"Trials: {summary['trials'].get('complete', 0)} complete, {summary['trials'].get('pruned', 0)} pruned, "
        f"{summary['trials'].get('fail', 0)} failed (budget {summary['budget']}). Selection metric "
        f"val/{summary['metric']} ({summary['direction']}); best trial {summary['best_trial']}: "
        f"{summary['best_value']:.4f} with "
        + ", ".join(f"`{k}={_short(v)}`" for k, v in sorted(summary["best_params"].items())) + ".",
        "",
        "Test split; mean ± sample std over the confirmation seeds (fresh seeds, not the search seed); "
        "every metric is in results.json.",
        "",
        "| | " + " | ".join(metrics) + " |",
        "|---" * (len(metrics) + 1) + "|",
    ]
    const_rows = [r for r in summary["rows"] if r["name"].endswith("(trivial baseline)")]
    m0 = summary["metric"] if summary["metric"] in metrics else metrics[0]
    best_const = [r["mean"].get(m0) for r in const_rows if r["mean"].get(m0) is not None]
    best_const = (min if lower else max)(best_const) if best_const else None
    for r in summary["rows"]:
        cells = []
        for m in metrics:
            mean = r["mean"].get(m)
            std = (r.get("std") or {}).get(m)
            cells.append(_fmt(mean) if std is None else f"{_fmt(mean)} ± {_fmt(std)}")
        name = r["name"]
        mean0 = r["mean"].get(m0)
        if r not in const_rows and best_const is not None and mean0 is not None and math.isfinite(mean0):
            if (mean0 >= best_const) if lower else (mean0 <= best_const):
                name += f" **(does not beat the best trivial baseline on {m0})**"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _short(v):
    return f"{v:.3g}" if isinstance(v, float) else v


# ----------------------------------------------------------------------------------------- command


def _direction_for(metric: str, task) -> str:
    if metric == task.monitor:
        return "minimize" if task.monitor_mode == "min" else "maximize"
    lower = any(s in metric for s in ("mae", "mse", "loss", "error", "rmse"))
    return "minimize" if lower else "maximize"


def base_config(args) -> dict:
    from emofusion.training.config import RunConfig, apply_overrides, load_yaml

    data = load_yaml(args.config) if args.config else {}
    flags = {"model": args.model, "dataset": args.dataset, "max_epochs": args.max_epochs, "seed": args.seed}
    data.update({k: v for k, v in flags.items() if v is not None})
    if args.modalities:
        data["modalities"] = [m.strip() for m in args.modalities.split(",") if m.strip()]
    data = apply_overrides(data, args.overrides)
    config = RunConfig.from_dict(data)  # validates the keys
    out = config.to_dict()
    out["output"] = None
    return out


def cmd_tune(args) -> int:
    from emofusion.data import load_dataset

    if args.trials < 1:
        raise ValueError(f"--trials must be >= 1, got {args.trials}")
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    base = base_config(args)
    if not args.model and not args.config:
        raise ValueError("give --model (or a --config naming one)")
    space = build_space(base["model"], load_space(args.space) if args.space else None)
    task = load_dataset(base["dataset"], **base["dataset_options"]).task
    metric = (args.metric or f"val/{base.get('monitor') or task.monitor}").removeprefix("val/")
    direction = _direction_for(metric, task)
    task_mode = "minimize" if task.monitor_mode == "min" else "maximize"
    if metric != task.monitor:
        if direction != task_mode:
            raise ValueError(
                f"--metric val/{metric} is {direction}d but the task's selection is {task_mode}d "
                f"(val/{task.monitor}); early stopping would work against the search"
            )
        base["monitor"] = metric  # training selects its best checkpoint on the same metric
    safe = base["dataset"].replace(":", "_").replace("/", "_").strip("._")
    study_dir = Path(args.study_dir or Path("tune_out") / f"{base['model']}-{safe}")
    spec = TuneSpec(base=base, space=space, study_dir=str(study_dir), study_name=study_dir.name or "study",
                    trials=args.trials, metric=metric, direction=direction, sampler=args.sampler,
                    pruning=not args.no_pruning)
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / "space.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    print(f"[tune] {base['model']} on {base['dataset']}: {len(space)} parameters "
          f"({', '.join(space)}), {args.sampler}, budget {args.trials} trials, val/{metric} ({direction}), "
          f"study {spec.journal}")
    study = run_search(spec, workers=args.workers, progress=not args.quiet, fail_running=args.fail_running)
    if args.search_only:
        print(f"[tune] search done: {finished_count(study)} trials; best val/{metric} = {_best_value(study)}")
        return 0
    if _best_value(study) is None:
        raise ValueError(f"no trial of study {spec.journal} completed; see the trial folders in {study_dir}/trials")
    preset = write_preset(spec, study, study_dir / "best.yaml")
    seed0 = int(base.get("seed", 0))
    seeds = [seed0 + 1 + i for i in range(args.seeds)]
    suite_result = confirm(spec, study, seeds, jobs=max(1, args.workers), launcher=args.launcher)
    baselines = trivial_baselines(base)
    command = "emofusion tune " + " ".join(_quote(a) for a in args.argv)
    summary = summarize(spec, study, suite_result, baselines, seeds, command)
    plots = write_plots(study, study_dir)
    summary["plots"] = [p.name for p in plots]
    (study_dir / "results.json").write_text(json.dumps(summary, indent=1, default=float))
    md = markdown(summary)
    (study_dir / "results.md").write_text(md)
    print(md)
    print(f"[tune] preset: {preset}  (emofusion train --config {preset})")
    print(f"[tune] plots: {', '.join(str(p) for p in plots)}; report: {study_dir / 'results.md'}")
    return 0


def _quote(a: str) -> str:
    return a if a and all(c.isalnum() or c in "-_./:=,+" for c in a) else repr(a)


def register_cli(sub) -> None:
    p = sub.add_parser(
        "tune",
        help="hyper-parameter search (Optuna) with multi-seed confirmation and a preset of the winner",
        description=__doc__,
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", help="registered model name")
    p.add_argument("--dataset", help="dataset name, e.g. synthetic:aligned, mfn:PATH")
    p.add_argument("--modalities", help="comma-separated subset of the dataset's modalities")
    p.add_argument("--config", help="YAML base config (the untuned default); flags and overrides win")
    p.add_argument("--trials", type=int, default=20, help="total budget of finished trials in the study")
    p.add_argument("--space", help="YAML search space: key -> spec, merged over the model's declaration")
    p.add_argument("--metric", help="selection metric, e.g. val/mae (default: the protocol's)")
    p.add_argument("--seeds", type=int, default=3, help="confirmation seeds for the best and default configs")
    p.add_argument("--sampler", choices=["tpe", "random"], default="tpe")
    p.add_argument("--workers", type=int, default=1, help="local worker processes sharing the study")
    p.add_argument("--study-dir", help="study folder (journal, trials, preset, plots; default tune_out/MODEL-DATASET)")
    p.add_argument("--max-epochs", type=int, help="maximum epochs per trial")
    p.add_argument("--seed", type=int, help="search seed (confirmation uses the next --seeds seeds)")
    p.add_argument("--no-pruning", action="store_true", help="train every trial to its end")
    p.add_argument("--search-only", action="store_true",
                   help="run trials only (e.g. SLURM array workers); a later run without it confirms")
    p.add_argument("--fail-running", action="store_true",
                   help="mark every RUNNING trial failed and retry it (after killed workers on other hosts)")
    p.add_argument("--launcher", default="local", choices=["local", "submitit-local", "slurm"],
                   help="where the confirmation runs train (see docs/tuning.md)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the base config (as emofusion train)")
    p.set_defaults(func=_cmd_tune_entry)


def _cmd_tune_entry(args) -> int:
    args.argv = command_line(args)
    return cmd_tune(args)


def command_line(args) -> list[str]:
    """The command as given (for the report), rebuilt from the parsed flags."""
    out = []
    for flag in ("model", "dataset", "modalities", "config", "trials", "space", "metric", "seeds", "sampler",
                 "workers", "study_dir", "max_epochs", "seed"):
        value = getattr(args, flag, None)
        if value is not None and not (flag == "sampler" and value == "tpe") and not (flag == "workers" and value == 1):
            out += [f"--{flag.replace('_', '-')}", str(value)]
    for flag in ("no_pruning", "search_only"):
        if getattr(args, flag, False):
            out.append(f"--{flag.replace('_', '-')}")
    return out + list(args.overrides or [])


# ----------------------------------------------------------------------------------------- docs

DOC_START, DOC_END = "<!-- tune-results:start (generated by benchmarks/tuning_doc.py) -->", "<!-- tune-results:end -->"


def render_doc(study_dirs: list[str | os.PathLike], doc: str | os.PathLike) -> Path:
    """Replace the measured section of ``doc`` with each study's report (from its results.json) and plots."""
    import shutil

    doc = Path(doc)
    assets = doc.parent / doc.stem
    parts = []
    for d in map(Path, study_dirs):
        summary = json.loads((d / "results.json").read_text())
        section = [markdown(summary)]
        for name in summary.get("plots", []):
            dest = assets / d.name / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(d / name, dest)
            section.append(f"![{d.name} {Path(name).stem}]({dest.relative_to(doc.parent).as_posix()})")
        preset = d / "best.yaml"
        if preset.exists():
            section += ["", f"Winning preset (`{preset}`):", "", "```yaml", preset.read_text().strip(), "```"]
        parts.append("\n".join(section))
    text = doc.read_text() if doc.exists() else f"# Tuning\n\n{DOC_START}\n{DOC_END}\n"
    if DOC_START not in text or DOC_END not in text:
        raise ValueError(f"{doc} has no {DOC_START} ... {DOC_END} section to fill")
    head, rest = text.split(DOC_START, 1)
    _, tail = rest.split(DOC_END, 1)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    body = f"{DOC_START}\n\n_Generated {stamp} from {', '.join(f'`{d}`' for d in study_dirs)}._\n\n"
    doc.write_text(head + body + "\n\n".join(parts) + f"\n{DOC_END}" + tail)
    return doc
