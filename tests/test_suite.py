import json

import numpy as np
import pytest

from emofusion.evaluation import suite as suite_mod
from emofusion.evaluation.suite import Cell, SuiteSpec, config_hash, get_suite, list_suites, run_suite
from helpers import TINY_RUN

TINY = TINY_RUN
NOISE = {"kind": "gaussian_noise", "modality": "visual", "snr_db": -10}


def _spec(extra=()):
    cells = [
        Cell("small", "clean", TINY),
        Cell("small", "noisy", TINY, NOISE),
        Cell("small", "dropped", TINY, {"kind": "missing_modality", "modality": "audio"}),
        *extra,
    ]
    return SuiteSpec(cells, ["mae", "wa"], seeds=[0, 1], published={("small", "clean", "mae"): 0.5})


def test_plan_groups_cells_by_training_config(tmp_path):
    other = {**TINY, "model_options": {"hidden_dim": 4, "head_dim": 4}}
    jobs = suite_mod.plan_jobs(_spec([Cell("tiny", "clean", other)]), [0, 1], tmp_path)
    # 2 distinct training configs x 2 seeds; the perturbed cells ride on the clean run of their config
    assert len(jobs) == 4 and len({j.cache_path for j in jobs}) == 4
    small = [j for j in jobs if j.config is TINY]
    assert all(len(j.perturbations) == 3 and None in j.perturbations.values() for j in small)


def test_suite_shares_runs_caches_and_reports(tmp_path, monkeypatch):
    result = run_suite(_spec(), out_dir=tmp_path, suite_name="tiny", log=None)
    # one training config x 2 seeds; the perturbed cells reuse the clean run
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2
    clean, noisy = result.get("small", "clean"), result.get("small", "noisy")
    assert len(clean["values"]["mae"]) == 2 and clean["n"]["mae"] == 2
    assert clean["mean"]["mae"] == pytest.approx(np.mean(clean["values"]["mae"]))
    assert clean["std"]["mae"] == pytest.approx(np.std(clean["values"]["mae"], ddof=1))
    assert noisy["values"]["mae"] != clean["values"]["mae"]  # -10 dB changed the predictions
    # a model built for audio cannot run with audio dropped: reported, not fatal
    dropped = result.get("small", "dropped")
    assert np.isnan(dropped["mean"]["mae"]) and "audio" in dropped["errors"][0]
    md = (tmp_path / "tiny" / "results.md").read_text()
    assert "± " in md and "[0.500]" in md and "n/a" in md
    rows = (tmp_path / "tiny" / "results.csv").read_text().splitlines()
    assert rows[0].startswith("row,column,perturbation,metric")
    assert len([r for r in rows[1:] if not r.startswith("baseline: ")]) == 3 * 2
    # trivial-baseline rows of the same dataset and split, in every table
    assert "*baseline: all_zero*" in md and "*baseline: train_median*" in md
    base = {(c["row"], c["column"]): c for c in json.loads((tmp_path / "tiny" / "results.json").read_text())["baseline_rows"]}
    zero = base[("baseline: all_zero", "clean")]["mean"]["mae"]
    record = json.loads(next((tmp_path / "cache").glob("*.json")).read_text())
    assert record["baselines"]["test"]["all_zero"]["mae"] == pytest.approx(zero)
    best = min(base[(f"baseline: {n}", "clean")]["mean"]["mae"] for n in ("all_zero", "train_mean", "train_median"))
    assert clean["flags"]["mae"] == (clean["mean"]["mae"] >= best)
    payload = json.loads((tmp_path / "tiny" / "results.json").read_text())
    assert payload["seeds"] == [0, 1] and len(payload["cells"]) == 3

    # resume: everything is cached, nothing trains again
    def boom(job):
        raise AssertionError("should have been cached")

    monkeypatch.setattr(suite_mod, "_train_and_evaluate", boom)
    again = run_suite(_spec(), out_dir=tmp_path, suite_name="tiny", log=None)
    assert again.get("small", "noisy")["values"] == noisy["values"]
    # a third seed trains only the new runs (and fails here on purpose, reported per cell)
    third = run_suite(_spec(), seeds=3, out_dir=tmp_path, suite_name="tiny", log=None)
    assert third.seeds == [0, 1, 2]
    assert third.get("small", "clean")["n"]["mae"] == 2 and any(
        "seed 2" in e for e in third.get("small", "clean")["errors"]
    )
    # --fresh: the named rows' cached records move aside (never deleted) and those cells train again
    trained = []
    monkeypatch.setattr(suite_mod, "_train_and_evaluate", lambda job: trained.append(job.seed) or boom(job))
    before = sorted(p.name for p in (tmp_path / "cache").glob("*.json"))
    logs = []
    run_suite(_spec(), out_dir=tmp_path, suite_name="tiny", log=logs.append, fresh=["small"])
    assert sorted(trained) == [0, 1] and any("2 cached record(s) of 1 cell config(s) moved" in m for m in logs)
    assert sorted(p.name for p in (tmp_path / "cache.stale").glob("*.json")) == before
    run_suite(_spec(), out_dir=tmp_path, suite_name="tiny", log=None, fresh=["small"])  # nothing cached to move
    with pytest.raises(ValueError, match=r"--fresh: no row named \['smal'\]; rows: small"):
        run_suite(_spec(), out_dir=tmp_path, suite_name="tiny", log=None, fresh=["smal"])


def test_config_hash_is_canonical_and_seeded():
    a = {"model": "x", "model_options": {"a": 1, "b": 2}}
    b = {"model_options": {"b": 2, "a": 1}, "model": "x"}
    assert config_hash(a, 0) == config_hash(b, 0) != config_hash(a, 1)


def test_validation_and_registry():
    assert "robustness" in list_suites()
    spec = get_suite("robustness", "quick")
    assert any(c.perturbation is None for c in spec.cells)
    assert len({c.column for c in spec.cells}) > 5
    assert {"rrnn", "gca", "mult", "rmfn", "delta_attention", "tfn", "lmf", "mfn"} <= {c.row for c in spec.cells}
    with pytest.raises(ValueError, match="two cells"):
        run_suite(SuiteSpec([Cell("a", "b", TINY), Cell("a", "b", TINY)], ["mae"]), log=None)
    with pytest.raises(ValueError, match="seed"):
        run_suite(SuiteSpec([Cell("a", "b", {**TINY, "seed": 1})], ["mae"]), log=None)
    with pytest.raises(ValueError, match="preset"):
        get_suite("robustness", "huge")


def test_report_collects_suites_and_speed(tmp_path, monkeypatch):
    from emofusion.evaluation.benchmark import build_report

    def fake(job):
        base = {"mae": 0.5 + 0.01 * job.seed, "wa": 0.6}
        evals = {
            k: ({**base, "mae": base["mae"] + 0.1} if spec else base) for k, spec in job.perturbations.items()
        }
        return {
            "status": "ok",
            "config": job.config,
            "seed": job.seed,
            "metrics": {"test": base},
            "evaluations": evals,
        }

    monkeypatch.setattr(suite_mod, "_train_and_evaluate", fake)
    spec = SuiteSpec(
        [Cell("m", "clean", TINY), Cell("m", "noisy", TINY, NOISE)], ["mae", "wa"], seeds=[0, 1, 2]
    )
    res = run_suite(spec, out_dir=tmp_path / "out", suite_name="paper999-demo", log=None)
    assert res.mean("m", "noisy", "mae") == pytest.approx(0.61)
    assert res.get("m", "clean")["std"]["mae"] == pytest.approx(0.01)
    (tmp_path / "out" / "speed").mkdir()
    (tmp_path / "out" / "speed" / "results.md").write_text("## Speed, memory and scaling\n\n| a |\n")
    (tmp_path / "out" / "speed" / "results.json").write_text("{}")  # speed.py writes one: not a suite
    page = build_report(tmp_path / "out", tmp_path / "docs" / "results.md").read_text()
    assert "### paper999-demo" in page and "0.610 ± 0.010" in page and "### Speed, memory and scaling" in page
    assert "(`speed`, preset" not in page and page.count("### Speed, memory and scaling") == 1
    assert "Registered suites not run yet" in page and "`robustness`" in page
    # a full-preset run is written beside the quick one and both are reported, labelled
    full = run_suite(spec, preset="full", out_dir=tmp_path / "out", suite_name="paper999-demo", log=None)
    assert full.out_dir == tmp_path / "out" / "paper999-demo.full"
    assert (tmp_path / "out" / "paper999-demo" / "results.json").exists()
    page = build_report(tmp_path / "out", tmp_path / "docs" / "results.md").read_text()
    assert "### paper999-demo (full preset)" in page and "### paper999-demo\n" in page


def test_robustness_suite_plot_with_fake_runs(tmp_path, monkeypatch):
    def fake(job):
        evals = {
            k: {"mae": 0.3 + (0.1 if spec else 0.0), "wa": 0.6, "pearson_r": 0.5}
            for k, spec in job.perturbations.items()
        }
        return {"status": "ok", "config": job.config, "seed": job.seed, "metrics": {}, "evaluations": evals}

    monkeypatch.setattr(suite_mod, "_train_and_evaluate", fake)
    res = run_suite("robustness", preset="quick", seeds=2, out_dir=tmp_path, log=None)
    assert (tmp_path / "robustness" / "robustness.png").stat().st_size > 1000
    assert "![robustness](robustness.png)" in (tmp_path / "robustness" / "results.md").read_text()
    model = res.cells[0]["row"]
    assert res.mean(model, "clean", "mae") == pytest.approx(0.3)
    assert res.mean(model, "noise visual 0dB", "mae") == pytest.approx(0.4)


def test_tables_flag_models_that_do_not_beat_the_best_baseline():
    spec = SuiteSpec([Cell("model", "data", TINY)], ["mae", "wa"], seeds=[0])
    h = config_hash(TINY)
    record = {"status": "ok", "evaluations": {"clean": {"mae": 0.5, "wa": 0.6}},
              "baselines": {"test": {"all_zero": {"mae": 0.3, "wa": 0.5}, "train_mean": {"mae": 0.6, "wa": 0.55}}}}
    cells = suite_mod.aggregate(spec, {(h, 0): record}, [0])
    assert cells[0]["flags"] == {"mae": True, "wa": False}  # 0.5 MAE loses to all-zero's 0.3; WA wins
    result = suite_mod.SuiteResult("t", "quick", spec, [0], cells, None)
    result.baseline_cells = suite_mod.baseline_rows(cells, spec.metrics)
    md = suite_mod.markdown(result)
    assert "| model | 0.500 † |" in md and "| model | 0.600 |" in md
    assert "| *baseline: all_zero* | 0.300 |" in md
    assert "† not better than the best trivial baseline on mae: model / data." in md
    assert "on wa:" not in md
    # a flagged table says why: the suite's note, or that none was recorded
    assert "**Why cells are flagged †.** No explanation recorded" in md
    spec.flag_note = "The quick preset is a smoke test."
    assert "**Why cells are flagged †.** The quick preset is a smoke test." in suite_mod.markdown(result)
    cells[0]["flags"] = {"mae": False, "wa": False}
    assert "Why cells are flagged" not in suite_mod.markdown(result)


def test_every_registered_suite_explains_its_flags():
    from emofusion.evaluation.flag_notes import FLAG_NOTES
    from emofusion.evaluation.suite import list_suites

    missing = sorted(set(list_suites()) - set(FLAG_NOTES))
    assert not missing, f"suites without a flag explanation in evaluation/flag_notes.py: {missing}"


def test_a_killed_suite_cell_resumes_from_its_checkpoint(tmp_path):
    """A suite stopped mid-cell (SIGKILL: no clean-up) continues that cell from its last checkpoint on the next
    run, and ends with the numbers of an uninterrupted run (exact resume), not a fresh start."""
    import os
    import subprocess
    import sys

    config = {**TINY, "max_epochs": 3, "checkpoint_every_n_steps": 1, "min_steps": 0}

    def job(out):
        return suite_mod.Job(config=config, seed=0, perturbations={"clean": None}, split="test",
                             cache_path=str(out / "cache.json"), run_dir=str(out / "run"))

    whole = suite_mod.run_job(job(tmp_path / "whole"))
    assert whole["status"] == "ok", whole.get("error")

    cut = tmp_path / "cut"
    script = ("import sys, json; from emofusion.evaluation import suite as s; "
              f"s.run_job(s.Job(config=json.loads(sys.argv[1]), seed=0, perturbations={{'clean': None}}, "
              f"split='test', cache_path={str(cut / 'cache.json')!r}, run_dir={str(cut / 'run')!r}))")
    env = dict(os.environ, EMOFUSION_FAULT_AT_STEP="5", OMP_NUM_THREADS="1")  # 3 batches an epoch: in epoch 2
    killed = subprocess.run([sys.executable, "-c", script, json.dumps(config)], env=env, capture_output=True,
                            text=True, timeout=600)
    assert killed.returncode != 0 and not (cut / "cache.json").exists()
    assert (cut / "run" / "checkpoints" / "last.ckpt").exists()
    assert suite_mod._interrupted(job(cut))
    (cut / "run" / "killed_here").write_text("")  # a fresh start would move the folder aside, and this with it

    resumed = suite_mod.run_job(job(cut))
    assert resumed["status"] == "ok", resumed.get("error")
    assert (cut / "run" / "killed_here").exists()  # continued in place
    for name, value in whole["metrics"]["test"].items():
        assert resumed["metrics"]["test"][name] == pytest.approx(value, rel=1e-6, abs=1e-9, nan_ok=True), name
    assert (cut / "cache.json").exists()
    # a finished run whose cache record is moved aside (the documented way to retrain a cell) retrains
    (cut / "cache.json").unlink()
    assert not suite_mod._interrupted(job(cut))
    again = suite_mod.run_job(job(cut))
    assert again["status"] == "ok" and not (cut / "run" / "killed_here").exists()  # a fresh folder


def test_baseline_rows_for_a_column_of_views_with_the_same_labels():
    """A column mixing ``mfn:X`` and ``wordslots:mfn:X`` cells (same labels and splits, so equal baselines) gets
    the baseline rows; a column of two datasets with different baselines gets none (only the flags)."""
    def cell(col, key, median):
        base = {"mean": {"train_median": {"mae": median}}, "std": {"train_median": {"mae": 0.0}},
                "n": {"train_median": {"mae": 3}}}
        return {"column": col, "dataset_key": key, "baselines": base}

    cells = [cell("same", "mfn:x", 1.181), cell("same", "wordslots:mfn:x", 1.181),
             cell("mixed", "mfn:x", 1.181), cell("mixed", "mfn:y", 0.9)]
    rows = suite_mod.baseline_rows(cells, ["mae"])
    assert [(r["column"], r["row"], r["mean"]["mae"]) for r in rows] == [("same", "baseline: train_median", 1.181)]


def test_claims_are_read_off_the_results_with_each_metrics_direction():
    from emofusion.evaluation.suite import Claim, SuiteSpec, claim_lines

    cells = {
        ("full", "aligned"): {"mean": {"acc6": 0.60, "mae": 0.15}},
        ("mult", "aligned"): {"mean": {"acc6": 0.44, "mae": 0.18}},
        ("full", "unaligned"): {"mean": {"acc6": 0.55, "mae": 0.19}},  # better acc6, worse MAE than mult
        ("mult", "unaligned"): {"mean": {"acc6": 0.46, "mae": 0.18}},
    }
    spec = SuiteSpec(cells=[], metrics=["acc6", "mae"], claims=[
        Claim("beats, aligned", ("full", "aligned"), ("mult", "aligned"), ["acc6", "mae"]),
        Claim("beats, unaligned", ("full", "unaligned"), ("mult", "unaligned"), ["acc6", "mae"]),
        Claim("on par", ("full", "unaligned"), ("full", "aligned"), ["acc6"], kind="difference"),
        Claim("absent", ("gone", "aligned"), ("mult", "aligned"), ["acc6"]),
    ])
    lines = claim_lines(spec, cells, 1)
    assert "one seed" in lines[0]
    text = "\n".join(lines)
    assert "- beats, aligned: **holds**" in text and "acc6 0.600 vs 0.440; mae 0.150 vs 0.180" in text
    assert "- beats, unaligned: **does not hold**" in text  # MAE is lower-is-better: 0.19 loses to 0.18
    assert "acc6 0.550 vs 0.600 (difference -0.050)" in text and "on par: full / unaligned" in text
    assert "absent: not testable here (gone / aligned has no result)" in text
    assert claim_lines(SuiteSpec(cells=[], metrics=["acc6"]), cells, 3) == []


def test_a_validation_column_gets_the_validation_splits_baselines_and_flags():
    spec = SuiteSpec([Cell("model", "data", TINY)], ["val/mae", "mae"], seeds=[0])
    record = {"status": "ok", "evaluations": {"clean": {"mae": 0.5}}, "metrics": {"val": {"mae": 0.7}},
              "baselines": {"test": {"train_median": {"mae": 0.6}}, "val": {"train_median": {"mae": 0.65}}}}
    cells = suite_mod.aggregate(spec, {(config_hash(TINY), 0): record}, [0])
    assert cells[0]["mean"] == {"val/mae": 0.7, "mae": 0.5}
    assert cells[0]["flags"] == {"val/mae": True, "mae": False}  # 0.7 on val loses to the val median's 0.65
    rows = suite_mod.baseline_rows(cells, spec.metrics)
    assert rows[0]["mean"] == {"val/mae": 0.65, "mae": 0.6}
