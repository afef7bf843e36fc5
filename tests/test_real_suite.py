"""The real-data suite: cells, skips, MMSA array layout, baseline rows and flags (no training here)."""

from __future__ import annotations

import numpy as np
import pytest

from emofusion.data.batch import Sample
from emofusion.evaluation.suites import real


def test_skips_with_a_reason_when_the_data_are_absent(monkeypatch, tmp_path):
    monkeypatch.setenv("EMOFUSION_DATA", str(tmp_path))
    monkeypatch.setattr(real, "mmsa_skip_reason", lambda: None)  # importing MMSA is slow; not under test here
    spec = real.build("quick")
    assert spec.cells == []
    assert "ICT-MMMO skipped" in spec.description and "does not exist" in spec.description


def test_cells_per_dataset_and_mmsa_pairs(monkeypatch, tmp_path):
    for name in real.DATASETS:
        (tmp_path / "mfn_h5" / name).mkdir(parents=True)
    monkeypatch.setenv("EMOFUSION_DATA", str(tmp_path))
    monkeypatch.setattr(real, "mmsa_skip_reason", lambda: None)
    spec = real.build("quick")
    rows = {(c.row, c.column) for c in spec.cells}
    assert ("tfn", "ICT-MMMO") in rows and ("MMSA TFN (↔ tfn)", "ICT-MMMO") in rows
    assert ("MMSA EF_LSTM (↔ early_fusion_lstm)", "YouTube") in rows
    assert ("MMSA LF_DNN (↔ lf_dnn)", "ICT-MMMO") in rows and ("marn", "YouTube") in rows
    for c in spec.cells:
        assert f"mfn:{tmp_path}/mfn_h5/" in c.config["dataset"]
        if c.meta["kind"] == "ensemble":  # every emofusion row of its dataset, the same configs (so the same runs)
            assert c.config["members"] == [e.config for e in spec.cells
                                           if e.meta["kind"] == "emofusion" and e.column == c.column]
            assert len(c.config["members"]) == len(real.MODELS["mmmo"])
            continue
        assert c.config["modalities"] == ["audio", "visual"]
        # a per-dataset preset keeps its reader chain, on the suite's data folder
        if (c.row, c.column) == ("rmfn", "ICT-MMMO"):
            assert c.config["dataset"] == f"wordslots:mfn:{tmp_path}/mfn_h5/mmmo" and c.config["patience_epochs"] == 4
        if c.meta["kind"] == "mmsa":
            assert c.config["runner"] == "emofusion.evaluation.suites.real:run_mmsa"
    monkeypatch.setattr(real, "mmsa_skip_reason", lambda: "MMSA is not installed (test)")
    spec = real.build("quick")
    assert not [c for c in spec.cells if c.meta["kind"] == "mmsa"]
    assert "MMSA rows skipped: MMSA is not installed (test)" in spec.description


class _Split(list):
    def raw(self, i):
        return self[i]


class _Bundle:
    def __init__(self, splits, dims):
        self.splits, self.modality_dims = splits, dims

    def split(self, name):
        return self.splits[name]


def test_bundle_arrays_put_rows_back_on_their_word_slots():
    mmsa = real.mmsa_module()
    if mmsa is None:
        pytest.skip("benchmarks/mmsa_accuracy.py not in this checkout")

    def sample(i, audio_slots, visual_slots):
        return Sample(
            id=str(i),
            features={"audio": np.arange(len(audio_slots) * 2, dtype=np.float32).reshape(-1, 2) + 1,
                      "visual": np.full((len(visual_slots), 3), 7.0, np.float32)},
            label=np.array([2.5], np.float32),
            intervals={"audio": np.array([[s, s + 1] for s in audio_slots], float).reshape(-1, 2),
                       "visual": np.array([[s, s + 1] for s in visual_slots], float).reshape(-1, 2)},
        )

    split = _Split([sample(0, [1, 3], [0]), sample(1, [], [2, 4])])
    arrays = mmsa.bundle_arrays(_Bundle({"train": split, "val": split, "test": split}, {"audio": 2, "visual": 3}),
                                ["audio", "visual"])
    x, present = arrays["train"]["x"], arrays["train"]["present"]
    assert x["audio"].shape == (2, 5, 2) and x["text"].shape == (2, 5, 1) and not x["text"].any()
    np.testing.assert_array_equal(x["audio"][0, 1], [1, 2])
    np.testing.assert_array_equal(x["audio"][0, 3], [3, 4])
    assert present["audio"][0].tolist() == [False, True, False, True, False]
    assert not present["audio"][1].any() and not x["audio"][1].any()  # absent audio: no slot
    assert present["visual"][1].tolist() == [False, False, True, False, True]
    np.testing.assert_allclose(arrays["train"]["y"], [2.5, 2.5])


def test_recipe_suite_reads_the_validation_metric_of_each_run(monkeypatch, tmp_path):
    from emofusion.evaluation.suite import aggregate, config_hash

    (tmp_path / "mfn_h5" / "mmmo").mkdir(parents=True)
    monkeypatch.setenv("EMOFUSION_DATA", str(tmp_path))
    spec = real.build_recipe("quick")
    assert {c.row for c in spec.cells} == set(real.RECIPE_VARIANTS) and spec.metrics[0] == "val/mae"
    cell = next(c for c in spec.cells if c.row == "EMA 0.99" and c.column == "tfn")
    assert cell.config["ema_decay"] == 0.99
    records = {(config_hash(cell.config), s): {"status": "ok", "metrics": {"val": {"mae": 0.5 + s}, "test": {"mae": 9.0}},
                                               "evaluations": {"clean": {"mae": 1.0 + s, "pearson_r": 0.2}}}
               for s in (0, 1)}
    spec.cells, spec.seeds = [cell], [0, 1]
    out = aggregate(spec, records, [0, 1])[0]
    # val/mae from the run's recorded validation metrics; mae from the suite split's evaluation
    assert out["mean"]["val/mae"] == pytest.approx(1.0) and out["mean"]["mae"] == pytest.approx(1.5)
