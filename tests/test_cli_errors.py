"""The command line explains every mistake in one line naming the field/file and the fix (issue 16)."""

import csv
import json

import numpy as np
import pytest

from emofusion.cli import main

TINY = ["data.n_train=24", "data.n_val=8", "data.n_test=8", "data.min_words=4", "data.max_words=6"]
TRAIN = ["train", "--model", "early_fusion_lstm", "--dataset", "synthetic", "--max-epochs", "1", "--quiet"]


def _err(capsys):
    err = capsys.readouterr().err.strip()
    return err


@pytest.mark.parametrize(
    "override,expected",
    [
        ("model.hiden_dim=8", "unknown option model.hiden_dim (did you mean model.hidden_dim?); valid options: "),
        ("data.n_trian=30", "unknown option data.n_trian (did you mean data.n_train?); valid options: "),
        ("pateince=3", "unknown config field 'pateince' (did you mean 'patience'?)"),
        ("batch_size=3.5", "config field 'batch_size' must be an int, got 3.5"),
        ("patience=-1.5", "config field 'patience' must be an int, got -1.5"),
        ("patience=-1", "config field 'patience' must be >= 0, got -1"),
        ("lr=0", "config field 'lr' must be > 0"),
        ("plots=maybe", "config field 'plots' must be a bool, got 'maybe'"),
        ("nonfinite=ignore", "config field 'nonfinite' must be one of stop, skip"),
    ],
)
def test_config_mistakes_are_one_line(tmp_path, capsys, override, expected):
    code = main([*TRAIN, "--output", str(tmp_path / "r"), *TINY, override])
    err = _err(capsys)
    assert code == 2
    assert expected in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_overrides_may_be_interleaved_with_flags(tmp_path):
    code = main(["train", "--model", "mean", "--dataset", "synthetic", "data.n_train=30", "--output",
                 str(tmp_path / "r"), "lr=1e-3", "--max-epochs", "1", "--quiet", "plots=false", *TINY[1:]])
    assert code == 0
    cfg = (tmp_path / "r" / "config.yaml").read_text()
    assert "n_train: 30" in cfg and "lr: 0.001" in cfg and "plots: false" in cfg
    with pytest.raises(SystemExit):  # a flag typo is still an argparse error
        main(["train", "--model", "mean", "--outptu", "x"])


def test_models_name_prints_options(capsys):
    assert main(["models", "early_fusion_lstm"]) == 0
    out = capsys.readouterr().out
    assert "hidden_dim = 64" in out and "dropout = " in out
    assert main(["models", "rrnn"]) == 0
    out = capsys.readouterr().out
    assert "hops = 3" in out and "tau" in out  # help from the docstring
    assert main(["models", "rnn"]) == 2
    assert "unknown model 'rnn'. Did you mean" in _err(capsys)


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("emofusion ")
    with pytest.raises(SystemExit):
        main(["benchmark", "--help"])
    assert "`" not in capsys.readouterr().out


def test_manifest_short_row_is_listed_with_file_and_line(tmp_path, capsys):
    from test_formats_folder import make_folder

    make_folder(tmp_path, classes=False)
    with open(tmp_path / "manifest.csv", "a") as f:
        f.write("s99,train\n")
    np.save(tmp_path / "audio" / "s3.npy", np.zeros((0, 12), np.float32))  # a second problem
    assert main(["datasets", "check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path / 'manifest.csv'}:10: 2 fields, the header has 4 (id, split, label, speaker)" in out
    assert "s3.npy: empty sequence (0 steps)" in out and "2 problem(s)" in out
    assert main(["train", "--model", "mean", "--dataset", f"folder:{tmp_path}", "--quiet"]) == 2
    assert "manifest.csv:10: 2 fields" in _err(capsys)


def test_mmsa_nan_message_names_the_real_option(tmp_path, capsys):
    import pickle

    from test_formats_pickles import mmsa_split

    rng = np.random.default_rng(0)
    data = {s: mmsa_split(rng, 3, aligned=True, split=s) for s in ("train", "valid", "test")}
    data["train"]["audio"][1, 0, 0] = np.nan
    (tmp_path / "x.pkl").write_bytes(pickle.dumps(data))
    assert main(["train", "--model", "mean", "--dataset", f"mmsa:{tmp_path / 'x.pkl'}", "--quiet"]) == 2
    err = _err(capsys)
    assert "data.nonfinite=zero" in err and "allow_nonfinite" not in err


def test_evaluate_and_predict_mistakes(tmp_path, capsys):
    from test_formats_folder import make_folder

    (tmp_path / "empty").mkdir()
    assert main(["evaluate", str(tmp_path / "empty")]) == 2
    err = _err(capsys)
    assert "no checkpoint in this folder" in err and len(err.splitlines()) == 1

    make_folder(tmp_path / "reg", classes=False)
    make_folder(tmp_path / "cls", classes=True)
    assert main(["train", "--model", "mean", "--dataset", f"folder:{tmp_path / 'reg'}", "--max-epochs", "1",
                 "--quiet", "--output", str(tmp_path / "r"), "plots=false"]) == 0
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "r"), f"folder:{tmp_path / 'cls'}", "--output", str(tmp_path / "p.csv")]) == 2
    err = _err(capsys)
    assert "predicts sentiment ['label'], but folder:" in err and "classification labels" in err
    assert main(["predict", str(tmp_path / "r"), f"folder:{tmp_path / 'reg'}", "--output", str(tmp_path / "p.xlsx")]) == 2
    assert "predictions are written as .csv or .json, not .xlsx" in _err(capsys)
    assert not (tmp_path / "p.xlsx").exists()
    # a folder predicts every sample in manifest order unless a split is named
    assert main(["predict", str(tmp_path / "r"), f"folder:{tmp_path / 'reg'}", "--output", str(tmp_path / "p.csv")]) == 0
    assert len(list(csv.DictReader(open(tmp_path / "p.csv")))) == 8
    assert main(["predict", str(tmp_path / "r"), f"folder:{tmp_path / 'reg'}", "--split", "test",
                 "--output", str(tmp_path / "t.csv")]) == 0
    assert len(list(csv.DictReader(open(tmp_path / "t.csv")))) == 2


def test_benchmark_list_marks_missing_data(capsys, monkeypatch):
    from emofusion.evaluation.suites import paper001

    monkeypatch.setattr(paper001, "MMMO", __import__("pathlib").Path("/nonexistent/mmmo"))  # a fresh clone without the MFN release
    assert main(["benchmark", "list"]) == 0
    out = capsys.readouterr().out
    from emofusion.evaluation.suite import list_suites

    for name in list_suites():
        assert name in out
    assert "data missing" in out


def test_config_presets_by_name(tmp_path, monkeypatch, capsys):
    from emofusion.training.config_checks import list_presets, resolve_config

    monkeypatch.chdir(tmp_path)  # not the repository: the preset comes from the package
    assert resolve_config("rrnn_mosei").name == "rrnn_mosei.yaml" and "demo" in list_presets()
    assert main(["train", "--config", "rrnn_mosie", "--quiet"]) == 2
    assert "Did you mean rrnn_mosei?" in _err(capsys)


def test_real_bugs_keep_their_traceback(monkeypatch):
    from emofusion import cli

    def boom(args):
        raise TypeError("a bug")

    monkeypatch.setattr(cli, "cmd_models", boom)
    with pytest.raises(TypeError, match="a bug"):
        main(["models"])


def test_datasets_json_report_serialises(tmp_path):
    # data_report.json carries per-split counts for every split
    code = main(["train", "--model", "mean", "--dataset", "synthetic", "--max-epochs", "1", "--quiet",
                 "--output", str(tmp_path / "r"), "plots=false", *TINY])
    assert code == 0
    report = json.loads((tmp_path / "r" / "data_report.json").read_text())
    assert set(report["splits"]) == {"train", "val", "test"}
    assert report["splits"]["test"]["samples"] == 8
