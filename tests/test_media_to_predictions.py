"""Raw-media datasets (cremad:, ravdess:), predict on media / unlabelled folders / datasets, export, model folders."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("soundfile", reason="the media tests need soundfile (pip install '.[dev]')")
from media_fixtures import make_cremad, make_ravdess  # noqa: E402
from media_helpers import speech, write_wav  # noqa: E402

LIGHT = {"words": "none", "face": "none", "jobs": 1}  # audio only, in-process: the recipe tests stay fast


def test_cremad_names_labels_and_speaker_independent_splits(tmp_path):
    from emofusion.data import load_dataset
    from emofusion.data.cremad import parse_name

    assert parse_name("1001_DFA_ANG_XX") == ("1001", "anger", "Don't forget a jacket")
    assert parse_name("1091_WSI_SAD_HI") == ("1091", "sad", "We'll stop in a couple of minutes")
    assert parse_name("1001_DFA_XXX_XX") is None and parse_name("README") is None
    root = make_cremad(tmp_path / "crema", actors=6)
    b = load_dataset(f"cremad:{root}", cache=str(tmp_path / "cache"), **LIGHT)
    assert b.task.kind == "classification" and b.task.output_names == (
        "anger", "disgust", "fear", "happy", "neutral", "sad")
    assert b.modality_dims == {"audio": 23}
    split_speakers = {s: {x.speaker for x in getattr(b, s)} for s in ("train", "val", "test")}
    assert sum(len(getattr(b, s)) for s in ("train", "val", "test")) == 24
    assert not (split_speakers["train"] & split_speakers["test"]) and not (split_speakers["val"] & split_speakers["test"])
    assert not (split_speakers["train"] & split_speakers["val"])
    assert len(split_speakers["test"]) == 1 and len(split_speakers["val"]) == 1  # 20% / 10% of 6, at least 1
    for s in b.train:
        actor, label, _ = parse_name(s.id.split("__")[-1])
        assert b.task.output_names[int(s.label)] == label and s.speaker == actor
    # a second load reuses the cache (nothing extracted again) and gives the same splits
    b2 = load_dataset(f"cremad:{root}", cache=str(tmp_path / "cache"), **LIGHT)
    assert b2.info["speakers"] == b.info["speakers"]
    np.testing.assert_array_equal(b2.train[0].features["audio"], b.train[0].features["audio"])
    b3 = load_dataset(f"cremad:{root}", cache=str(tmp_path / "cache"), split_seed=3, **LIGHT)
    assert b3.info["speakers"] != b.info["speakers"]


def test_ravdess_names_and_song_excluded(tmp_path):
    from emofusion.data import load_dataset
    from emofusion.data.ravdess import parse_name

    info = parse_name("03-01-05-02-01-01-12")
    assert info["label"] == "angry" and info["actor"] == "12" and info["channel"] == "speech"
    assert info["sentence"] == "Kids are talking by the door"
    assert parse_name("03-01-09-01-01-01-12") is None
    root = make_ravdess(tmp_path / "rav", actors=4)
    b = load_dataset(f"ravdess:{root}", cache=str(tmp_path / "cache"), **LIGHT)
    n = len(b.train) + len(b.val) + len(b.test)
    assert n == 16  # 4 actors x 2 emotions x 2 statements; the song files are left out
    assert len(b.task.output_names) == 8
    labels = {b.task.output_names[int(s.label)] for s in [*b.train, *b.val, *b.test]}
    assert labels == {"neutral", "angry"}
    both = load_dataset(f"ravdess:{root}", cache=str(tmp_path / "cache"), channel="all", **LIGHT)
    assert len(both.train) + len(both.val) + len(both.test) == 20


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """media -> extract (cremad recipe) -> train (tiny) : the run directory."""
    from emofusion.training.config import RunConfig
    from emofusion.training.run import train_run

    d = tmp_path_factory.mktemp("e2e")
    root = make_cremad(d / "crema", actors=6)
    cfg = RunConfig(model="lmf", dataset=f"cremad:{root}", dataset_options={"cache": str(d / "cache"), **LIGHT},
                    max_epochs=3, batch_size=8, seed=0, output=str(d / "run"), progress=False, plots=False,
                    model_options={"rank": 2})
    res = train_run(cfg)
    return res, d


def test_run_saves_a_self_contained_model_folder(trained):
    import emofusion

    res, d = trained
    folder = res.run_dir / "model"
    for name in ("model.safetensors", "config.json", "hygiene.json", "extraction.json", "metrics.json", "README.md"):
        assert (folder / name).is_file(), name
    assert json.loads((folder / "extraction.json").read_text())["settings"]["acoustic"] == "basic"
    moved = d / "elsewhere"
    shutil.copytree(folder, moved)
    module = emofusion.from_pretrained(moved)
    x = {"audio": (np.random.RandomState(0).randn(2, 30, 23).astype(np.float32))}
    from emofusion.data.batch import Sample
    from emofusion.inference import predict_samples

    samples = [Sample(id=str(i), features={"audio": x["audio"][i]}, label=np.int64(0)) for i in range(2)]
    np.testing.assert_allclose(predict_samples(module, samples), predict_samples(res.module, samples), atol=1e-6)
    assert "lmf" in (moved / "README.md").read_text()


def test_predict_on_media_files_in_input_order_with_time_spans(trained, tmp_path):
    from emofusion.cli import main

    res, d = trained
    media = tmp_path / "media"
    media.mkdir()
    x = speech()
    write_wav(media / "b_second.wav", x[: 16000 * 2])
    write_wav(media / "a_first.wav", x)
    (media / "a_first.txt").write_text("the quick brown fox\njumps over the lazy dog\n")  # ignored: words=none
    (media / "c_broken.wav").write_bytes(b"not audio at all" * 10)
    out = tmp_path / "pred"
    plot = tmp_path / "plot.png"
    assert main(["predict", str(res.run_dir / "model"), str(media), "--output", str(out), "--quiet", "--jobs", "1",
                 "--plot", str(plot)]) == 0
    rows = list(csv.DictReader(open(out.with_suffix(".csv"))))
    assert [r["id"] for r in rows] == ["a_first", "b_second"]  # sorted input order; the broken file skipped
    assert float(rows[0]["end"]) == pytest.approx(len(x) / 16000, abs=0.01) and float(rows[1]["start"]) == 0.0
    probs = np.array([[float(r[f"p_{c}"]) for c in res.module.task.output_names] for r in rows])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    assert all(r["predicted"] in res.module.task.output_names for r in rows)
    assert json.loads(out.with_suffix(".json").read_text())[1]["id"] == "b_second"
    assert plot.is_file() and plot.stat().st_size > 1000
    # a single file, and the same prediction from the run directory (checkpoint) as from the model folder
    out2 = tmp_path / "one.json"
    assert main(["predict", str(res.run_dir), str(media / "b_second.wav"), "--output", str(out2), "--quiet"]) == 0
    one = json.loads(out2.read_text())
    assert len(one) == 1 and one[0]["p_anger"] == pytest.approx(float(rows[1]["p_anger"]), abs=1e-5)


def test_predict_unlabelled_extraction_output_and_dataset_splits(trained, tmp_path):
    from emofusion.features.pipeline import ExtractSettings, extract
    from emofusion.inference import predict

    res, d = trained
    media = tmp_path / "m"
    media.mkdir()
    for i in range(3):
        write_wav(media / f"f{i}.wav", speech()[i * 8000 : i * 8000 + 20000])
    out = tmp_path / "o"
    extract(media, out, ExtractSettings(words=None, text=None, face=None), jobs=1, progress=False)
    rows = predict(res.module, str(out), progress=False)  # no labels anywhere
    assert [r["id"] for r in rows] == ["f0", "f1", "f2"]
    rows2 = predict(res.module, f"folder:{out / 'segments'}", progress=False)
    assert [r["p_sad"] for r in rows2] == [r["p_sad"] for r in rows]
    # a labelled dataset: every sample of every split, split by split, in dataset order
    rows3 = predict(res.module, res.bundle.name, split="all", overrides={"cache": str(d / "cache"), **LIGHT})
    b = res.bundle
    assert [r["id"] for r in rows3] == [*b.train.ids, *b.val.ids, *b.test.ids]
    assert [r["split"] for r in rows3] == ["train"] * len(b.train) + ["val"] * len(b.val) + ["test"] * len(b.test)


def test_export_onnx_and_torchscript_match_pytorch_on_other_lengths(trained, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    import onnxruntime as ort

    from emofusion.cli import main
    from emofusion.data.batch import Sample
    from emofusion.inference import predict_samples

    res, _ = trained
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", str(res.run_dir), "--format", "onnx", "--out", str(onnx_path)]) == 0
    assert main(["export", str(res.run_dir), "--format", "torchscript", "--out", str(tmp_path / "m.pt")]) == 0
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    assert meta["input_names"] == ["audio_values", "audio_mask"] and meta["output_is"] == "logits"
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.RandomState(1)
    for batch, steps in ((1, 13), (4, 57)):
        # raw extractor-scale features (hygiene is inside the graph), padded rows shorter than the batch
        raw = (rng.randn(batch, steps, 23) * 30 + 50).astype(np.float32)
        mask = np.ones((batch, steps), bool)
        lengths = [steps - 3 * i for i in range(batch)]
        for i, n in enumerate(lengths):
            mask[i, n:] = False
            raw[i, n:] = 0.0
        got = sess.run(None, {"audio_values": raw, "audio_mask": mask})[0]
        samples = [Sample(id=str(i), features={"audio": raw[i, :n]}, label=np.int64(0)) for i, n in enumerate(lengths)]
        ref = predict_samples(res.module, samples)  # PyTorch, one sample at a time through the hygiene
        np.testing.assert_allclose(got, ref, atol=1e-4)
    # without hygiene in front the numbers would differ: the test above can fail
    no_hyg = predict_samples(res.module, samples, hygiene=False)
    assert np.abs(no_hyg - ref).max() > 1e-3


@pytest.mark.parametrize("name", ["tfn", "late_fusion", "rrnn"])  # mult too (slower: tried by hand)
def test_export_dynamic_axes_for_fusion_models(name, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    from emofusion.export import check_export, export_model
    from emofusion.tasks import emotion_intensity_task
    from emofusion.training.module import EmoFusionModule

    dims = {"text": 6, "audio": 5, "visual": 4}
    hyg = {"standardize": True, "drop_constant": True, "modalities": {
        m: {"keep": list(range(1, d)), "mean": [0.5] * (d - 1), "std": [2.0] * (d - 1), "input_dim": d}
        for m, d in dims.items()}}
    module = EmoFusionModule(name, {m: d - 1 for m, d in dims.items()}, emotion_intensity_task().to_dict(),
                             hygiene_state=hyg)
    for fmt, ext in (("onnx", ".onnx"), ("torchscript", ".pt")):
        path = export_model(module, tmp_path / f"m{ext}", fmt)
        assert check_export(module, path, fmt) < 1e-4


def test_export_refuses_a_quantile_scaled_run_and_says_what_to_do(tmp_path):
    from emofusion.export import export_model
    from emofusion.tasks import emotion_intensity_task
    from emofusion.training.module import EmoFusionModule

    hyg = {"standardize": True, "scaling": "quantile", "drop_constant": True, "modalities": {
        "audio": {"keep": [0, 1], "mean": [0.0, 0.0], "std": [1.0, 1.0], "input_dim": 2,
                  "quantiles": [[0.0, 1.0], [0.0, 2.0]]}}}
    module = EmoFusionModule("tfn", {"audio": 2}, emotion_intensity_task().to_dict(), hygiene_state=hyg)
    with pytest.raises(ValueError, match="standardize=quantile.*retrain with standardize=true"):
        export_model(module, tmp_path / "m.pt", "torchscript")
    assert not (tmp_path / "m.pt").exists()
