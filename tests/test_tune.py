"""`emofusion tune`: search spaces, a killed study resumes, workers share a study, the preset trains."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from emofusion.cli import main
from emofusion.evaluation import tune
from emofusion.training.config import load_yaml

REPO = Path(__file__).resolve().parents[1]
DATA = ["data.n_train=32", "data.n_val=12", "data.n_test=12", "data.min_words=4", "data.max_words=8"]
TINY = {
    "model": "early_fusion_lstm", "dataset": "synthetic:aligned", "max_epochs": 2, "batch_size": 8,
    "model_options": {"hidden_dim": 8, "head_dim": 8},
    "dataset_options": {"n_train": 32, "n_val": 12, "n_test": 12, "min_words": 4, "max_words": 8},
    "threads": 1, "patience": 5, "checkpoint_every_n_steps": 0,
}
LR_ONLY = {"inherit": False, "lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}}


def _spec(tmp_path, trials=4, space=None, **kw):
    from emofusion.training import RunConfig

    base = RunConfig.from_dict(TINY).to_dict()
    return tune.TuneSpec(base=base, space=tune.build_space("early_fusion_lstm", space or LR_ONLY),
                         study_dir=str(tmp_path / "study"), study_name="s", trials=trials, metric="mse",
                         direction="minimize", **kw)


def _load(spec):
    return optuna.load_study(study_name=spec.study_name, storage=tune.storage_for(spec.journal))


# ----------------------------------------------------------------------------------------- spaces


def test_space_merges_model_declaration_defaults_and_yaml():
    space = tune.build_space("ef_lstm")
    # paper 003 §4.4's grid, declared beside the model, plus the shared training fields
    assert space["model.num_layers"] == [1, 2, 3] and space["model.dropout"] == [0.1, 0.2]
    assert space["model.maxlen"] == [15, 20, 25, 30]
    assert {"lr", "batch_size", "weight_decay"} <= set(space)
    over = tune.build_space("ef_lstm", {"model.maxlen": None, "lr": [1e-3], "model.fc_dim": 50})
    assert "model.maxlen" not in over and over["lr"] == [1e-3] and over["model.fc_dim"] == 50
    assert set(tune.build_space("ef_lstm", {"inherit": False, "lr": [1e-3]})) == {"lr"}
    with pytest.raises(ValueError, match="log range"):
        tune.build_space("ef_lstm", {"weight_decay": {"type": "float", "low": 0, "high": 1, "log": True}})
    with pytest.raises(ValueError, match="low .* > high"):
        tune.build_space("ef_lstm", {"lr": {"low": 1, "high": 0.1}})


def test_space_file_rejects_unknown_keys(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("lerning_rate: [0.1]\n")
    with pytest.raises(ValueError, match="lerning_rate"):
        tune.load_space(path)
    path.write_text("space:\n  model.hidden_dim: [4, 8]\n  lr: {type: float, low: 0.001, high: 0.01}\n")
    assert set(tune.load_space(path)) == {"model.hidden_dim", "lr"}


def test_trial_values_land_in_the_config():
    space = tune.build_space("early_fusion_lstm", {"inherit": False, "lr": [0.5], "model.hidden_dim": [4, 9],
                                                   "data.noise.visual": [2.0], "batch_size": 7})
    trial = optuna.trial.FixedTrial({"lr": 0.5, "model.hidden_dim": 9, "data.noise.visual": 2.0})
    params = {k: tune.suggest(trial, k, s) for k, s in space.items()}
    cfg = tune.apply_params({"model_options": {"head_dim": 3}, "dataset_options": {}}, params)
    assert cfg["lr"] == 0.5 and cfg["batch_size"] == 7
    assert cfg["model_options"] == {"head_dim": 3, "hidden_dim": 9}
    assert cfg["dataset_options"] == {"noise": {"visual": 2.0}}


# ----------------------------------------------------------------------------------------- pruning


def test_bad_trials_are_pruned_through_lightning(tmp_path):
    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    spec = _spec(tmp_path)
    spec.base["max_epochs"] = 4
    study = optuna.create_study(direction="minimize", pruner=AlwaysPrune())
    study.optimize(tune.make_objective(spec), n_trials=1)
    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED
    # stopped at the first validation, not at max_epochs
    assert len(trial.intermediate_values) == 1
    run = Path(trial.user_attrs["run_dir"])
    assert not (run / "metrics.json").exists()


# ----------------------------------------------------------------------------------------- resume


def _counts(journal: Path, name: str):
    study = optuna.load_study(study_name=name, storage=tune.storage_for(journal))
    return study, [t.state for t in study.get_trials(deepcopy=False)]


@pytest.mark.slow
def test_killed_study_resumes(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(LR_ONLY))
    study_dir = tmp_path / "study"
    cmd = [sys.executable, "-m", "emofusion.cli", "tune", "--model", "early_fusion_lstm", "--dataset",
           "synthetic:aligned", "--trials", "3", "--space", str(space), "--study-dir", str(study_dir),
           "--max-epochs", "3", "--search-only", "--quiet", "model.hidden_dim=8", "model.head_dim=8",
           "batch_size=8", "threads=1", *DATA]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    journal = study_dir / "study.journal"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    killed_state = None
    try:
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if not journal.exists():
                continue
            try:
                study, states = _counts(journal, "study")
            except Exception:  # the study is being created
                continue
            # mid-trial = the running trial has recorded its worker (host, pid): a kill in the instant between
            # optuna creating the trial and the objective's first line leaves an ownerless trial, which only
            # --fail-running reclaims (reclaim_stale's docstring)
            owned = study.get_trials(deepcopy=False)[-1].user_attrs.get("pid") if states else None
            if states.count(TrialState.COMPLETE) >= 1 and states[-1] == TrialState.RUNNING and owned:
                os.kill(proc.pid, signal.SIGKILL)  # mid-trial
                proc.wait()
                killed_state = [(t.number, t.state, t.value) for t in study.get_trials()]
                break
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert killed_state is not None, proc.stdout.read().decode()[-3000:]
    assert proc.returncode == -signal.SIGKILL
    killed_number = killed_state[-1][0]
    done_before = {n: v for n, s, v in killed_state if s == TrialState.COMPLETE}

    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"trials [{killed_number}] were left running" in out.stdout
    study, _ = _counts(journal, "study")
    trials = study.get_trials()
    # the earlier trials are kept as they were; numbering continues; the killed trial is failed and retried
    assert {t.number: t.value for t in trials if t.number in done_before} == done_before
    assert [t.number for t in trials] == list(range(len(trials)))
    killed = trials[killed_number]
    assert killed.state == TrialState.FAIL and killed.user_attrs.get(tune.STALE_ATTR)
    retry = [t for t in trials if t.user_attrs.get("retry_of") == killed_number]
    assert len(retry) == 1 and retry[0].params == killed.params and retry[0].state == TrialState.COMPLETE
    assert tune.finished_count(study) == 3


def test_rerun_with_another_space_is_refused(tmp_path):
    spec = _spec(tmp_path, trials=1)
    study = tune.open_study(spec)
    tune.check_identity(study, spec)
    other = _spec(tmp_path, trials=1, space={"inherit": False, "lr": [0.01, 0.02]})
    with pytest.raises(ValueError, match="another space"):
        tune.check_identity(tune.open_study(other), other)


# ----------------------------------------------------------------------------------------- workers


@pytest.mark.slow
def test_two_workers_share_one_study_without_duplicates(tmp_path):
    spec = _spec(tmp_path, trials=4, sampler="random")
    tune.run_search(spec, workers=2, progress=False)
    trials = _load(spec).get_trials()
    assert len(trials) == 4 and tune.finished_count(_load(spec)) == 4  # the budget, not overshot
    assert sorted(t.number for t in trials) == list(range(4))
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # both workers ran trials
    trained = [t for t in trials if not t.user_attrs.get("duplicate_of")]
    assert len({json.dumps(t.params, sort_keys=True) for t in trained}) == len(trained)
    assert len({t.user_attrs["run_dir"] for t in trained}) == len(trained)
    assert all((Path(t.user_attrs["run_dir"]) / "metrics.json").exists() for t in trained
               if t.state == TrialState.COMPLETE)


def test_duplicate_proposals_are_not_trained_twice(tmp_path):
    spec = _spec(tmp_path, trials=3, space={"inherit": False, "lr": [0.01]}, sampler="random")
    tune.run_worker(spec)
    trials = _load(spec).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert [t.user_attrs.get("duplicate_of") for t in trials] == [None, 0, 0]
    assert len({t.value for t in trials}) == 1
    assert not (Path(spec.study_dir) / "trials" / "trial_0001").exists()


# ----------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_tune_confirms_reports_and_writes_a_preset_that_trains(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"inherit": False, "lr": [0.003, 0.03], "model.hidden_dim": [4, 8]}))
    study_dir = tmp_path / "study"
    code = main(["tune", "--model", "early_fusion_lstm", "--dataset", "synthetic:aligned", "--trials", "2",
                 "--seeds", "2", "--space", str(space), "--study-dir", str(study_dir), "--max-epochs", "2",
                 "--sampler", "random", "--quiet", "model.head_dim=8", "batch_size=8", "threads=1", *DATA])
    assert code == 0
    summary = json.loads((study_dir / "results.json").read_text())
    names = [r["name"] for r in summary["rows"]]
    assert names[0].startswith("best trial") and "untuned default over seeds [1, 2]" in names
    assert any(n.startswith("tuned (trial") for n in names)
    baselines = {"train_mean (trivial baseline)", "train_median (trivial baseline)", "all_zero (trivial baseline)"}
    assert baselines <= set(names)
    tuned = next(r for r in summary["rows"] if r["name"].startswith("tuned"))
    assert len(tuned["values"]["mse"]) == 2 and not tuned["errors"]
    md = (study_dir / "results.md").read_text()
    assert "± " in md and "all_zero (trivial baseline)" in md
    assert (study_dir / "optimization_history.png").stat().st_size > 1000
    assert (study_dir / "param_importances.png").exists()

    preset = study_dir / "best.yaml"
    best = summary["best_params"]
    data = load_yaml(preset)
    assert data["lr"] == best["lr"] and data["model_options"]["hidden_dim"] == best["model.hidden_dim"]
    out = tmp_path / "from_preset"
    assert main(["train", "--config", str(preset), "--output", str(out), "--quiet", "plots=false"]) == 0
    trained = load_yaml(out / "config.yaml")
    assert trained["lr"] == best["lr"] and trained["model_options"]["hidden_dim"] == best["model.hidden_dim"]
    assert json.loads((out / "metrics.json").read_text())["test"]["mse"] >= 0


def test_progress_bar_shows_trials_best_and_eta(tmp_path, capsys):
    spec = _spec(tmp_path, trials=5)
    study = optuna.create_study(direction="minimize")
    for value in (0.9, 0.4, 0.7):
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=value))
    with tune._Progress(spec, enabled=True, start=0) as bar:
        bar.update(study)
        task = bar.progress.tasks[0]
        assert task.completed == 3 and task.total == 5 and task.fields["best"] == "0.4000"
    out = capsys.readouterr().out
    assert "3/5" in out and "best val/mse 0.4000" in out and "ETA" in out


def test_two_workers_claiming_at_once_take_the_one_free_place_once(tmp_path, monkeypatch):
    # the budget check is slowed so that both claims overlap: checked apart from the trial's creation, both
    # would see the free place and both take it
    import threading

    spec = _spec(tmp_path, trials=1, sampler="random")
    running = tune._running

    def slow_running(study):
        n = running(study)  # read, then a pause before the trial is created
        time.sleep(0.4)
        return n

    monkeypatch.setattr(tune, "_running", slow_running)
    studies = [tune.open_study(spec, worker) for worker in (0, 1)]
    claimed = []
    threads = [threading.Thread(target=lambda s=s: claimed.append(tune._claim_trial(s, spec))) for s in studies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(trial is not None for trial in claimed) == 1
    assert len(_load(spec).get_trials()) == 1
