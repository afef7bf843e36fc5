import pickle

import numpy as np
import pytest

from emofusion.data import load_dataset
from emofusion.data.format_utils import DataFormatError
from emofusion.data.mmsa import load_mmsa
from emofusion.data.mult import load_mult


def mmsa_split(rng, n, aligned=False, split="train"):
    # ids unique across splits (the readers reject an id in two splits)
    tag = "" if split == "train" else split
    la, lv = (50, 50) if aligned else (375, 500)
    audio = np.zeros((n, la, 5), np.float32)
    vision = np.zeros((n, lv, 20), np.float32)
    alen = rng.integers(1, la, n)
    vlen = rng.integers(1, lv, n)
    for i in range(n):
        audio[i, : alen[i]] = rng.normal(size=(alen[i], 5))
        vision[i, : vlen[i]] = rng.normal(size=(vlen[i], 20))
    tlen = rng.integers(3, 50, n)
    mask = (np.arange(50)[None] < tlen[:, None]).astype(np.float32)
    text_bert = np.stack([np.ones((n, 50)), mask, np.zeros((n, 50))], 1)
    return {
        "raw_text": np.array(["hello world"] * n, dtype=object),
        "audio": audio,
        "vision": vision,
        "text": rng.normal(size=(n, 50, 768)).astype(np.float32) * mask[..., None],
        "text_bert": text_bert,
        "audio_lengths": alen,
        "vision_lengths": vlen,
        "regression_labels": rng.uniform(-3, 3, n).astype(np.float32),
        "id": np.array([f"{tag}vid{i}$_${i}" for i in range(n)], dtype=object),
    }


def write(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return path


def test_mmsa_unaligned(tmp_path):
    rng = np.random.default_rng(0)
    data = {s: mmsa_split(rng, n, split=s) for s, n in (("train", 6), ("valid", 3), ("test", 4))}
    path = write(tmp_path / "unaligned_50.pkl", data)
    b = load_dataset(f"mmsa:{path}")
    assert b.task.kind == "sentiment" and b.task.label_range == (-3.0, 3.0)
    assert b.modality_dims == {"text": 768, "audio": 5, "visual": 20}
    s = b.train[2]
    tr = data["train"]
    assert s.length("audio") == tr["audio_lengths"][2] and s.length("visual") == tr["vision_lengths"][2]
    assert s.length("text") == tr["text_bert"][2, 1].sum()
    assert s.words == ["hello", "world"] and s.id == "vid2$_$2"
    assert np.isclose(s.label[0], tr["regression_labels"][2])
    assert load_dataset(f"mmsa:{path}", modalities="audio,vision").modalities == ["audio", "visual"]


def test_mmsa_errors(tmp_path):
    rng = np.random.default_rng(1)
    data = {s: mmsa_split(rng, 3, split=s) for s in ("train", "valid", "test")}
    data["valid"]["audio_lengths"][1] = 9999
    with pytest.raises(DataFormatError, match=r"split 'val' sample 'validvid1\$_\$1': audio_lengths=9999"):
        load_mmsa(write(tmp_path / "a.pkl", data))
    data = {s: mmsa_split(rng, 3, split=s) for s in ("train", "valid", "test")}
    data["test"]["audio"][0, 0, 0] = -np.inf
    with pytest.raises(DataFormatError, match="'audio': 1 non-finite"):
        load_mmsa(write(tmp_path / "b.pkl", data))
    b = load_mmsa(tmp_path / "b.pkl", nonfinite="zero")
    assert np.isfinite(b.test[0].features["audio"]).all()
    data["test"]["id"][2] = data["test"]["id"][0]
    with pytest.raises(DataFormatError, match="id 'testvid0.*' appears twice"):
        load_mmsa(write(tmp_path / "c.pkl", data), nonfinite="keep")
    del data["train"]
    with pytest.raises(DataFormatError, match="no train split"):
        load_mmsa(write(tmp_path / "d.pkl", data))
    (tmp_path / "e.pkl").write_bytes(pickle.dumps(data)[:50])
    with pytest.raises(DataFormatError, match="e.pkl: cannot unpickle"):
        load_mmsa(tmp_path / "e.pkl")


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_with_code_is_refused(tmp_path):
    path = write(tmp_path / "evil.pkl", {"train": Evil()})
    with pytest.raises(DataFormatError, match="refusing to load builtins.print"):
        load_mmsa(path)


def mult_split(rng, n, labels, split="train"):
    text = np.zeros((n, 50, 300), np.float32)
    audio = np.zeros((n, 50, 74), np.float32)
    for i in range(n):
        k = rng.integers(1, 50)
        text[i, 50 - k :] = rng.normal(size=(k, 300))  # left padded, like the SDK's get_tensors
        audio[i, 50 - k :] = rng.normal(size=(k, 74))
    vision = rng.normal(size=(n, 50, 35)).astype(np.float32)
    return {
        "text": text,
        "audio": audio,
        "vision": vision,
        "labels": labels(n),
        "id": np.array([["vid" if split == "train" else f"{split}vid", str(i)] for i in range(n)]),
    }


@pytest.mark.parametrize(
    "target,kind,dim",
    [("sentiment", "sentiment", 1), ("emotions", "emotion_intensity", 6), ("all", "multi_regression", 7)],
)
def test_mult_mosei_7_columns(tmp_path, target, kind, dim):
    rng = np.random.default_rng(2)
    labels = lambda n: rng.uniform(0, 3, (n, 1, 7)).astype(np.float32)  # noqa: E731
    data = {s: mult_split(rng, 4, labels, s) for s in ("train", "valid", "test")}
    b = load_mult(write(tmp_path / "mosei_senti_data_noalign.pkl", data), target=target)
    assert b.task.kind == kind and b.task.output_dim == dim
    s = b.train[1]
    assert s.id == "vid/1" and s.label.shape == (dim,)
    raw = data["train"]["labels"][1, 0]
    if target == "emotions":  # SDK columns happy, sad, anger, surprise, disgust, fear -> anger first
        assert s.label[0] == raw[3] and s.label[3] == raw[1]
    assert s.length("text") == np.any(data["train"]["text"][1] != 0, axis=1).sum()


def test_mult_iemocap_binary(tmp_path):
    rng = np.random.default_rng(3)
    labels = lambda n: np.eye(2, dtype=np.float32)[rng.integers(0, 2, (n, 4))]  # noqa: E731
    data = {s: mult_split(rng, 5, labels, s) for s in ("train", "valid", "test")}
    b = load_dataset(f"mult:{write(tmp_path / 'iemocap_data.pkl', data)}")
    assert b.task.kind == "multilabel_binary" and b.task.output_names == ("neutral", "happy", "sad", "angry")
    assert np.array_equal(b.val[3].label, data["valid"]["labels"][3].argmax(1))
    with pytest.raises(ValueError, match="target"):
        data2 = {s: mult_split(rng, 2, lambda n: np.zeros((n, 1, 1)), s) for s in ("train", "valid", "test")}
        load_mult(write(tmp_path / "m.pkl", data2), target="emotions")
