import pickle

import numpy as np
import pytest

from emofusion.data import load_dataset
from emofusion.data.collate import Collator
from emofusion.data.conversation import IEMOCAP_6_TO_4, load_conversations
from emofusion.data.format_utils import DataFormatError


def iemocap_pickle(path, n_conv=12, seed=0):
    rng = np.random.default_rng(seed)
    ids, spk, lab, text, audio, visual, sent = {}, {}, {}, {}, {}, {}, {}
    for c in range(n_conv):
        cid = f"Ses0{c % 5 + 1}_conv{c}"
        n = int(rng.integers(3, 9))
        ids[cid] = [f"{cid}_u{i}" for i in range(n)]
        spk[cid] = list(rng.choice(["M", "F"], n))
        lab[cid] = list(rng.integers(0, 6, n))
        text[cid] = [rng.normal(size=100) for _ in range(n)]
        audio[cid] = [rng.normal(size=100) for _ in range(n)]
        visual[cid] = [rng.normal(size=512) for _ in range(n)]
        sent[cid] = [f"sentence {i}" for i in range(n)]
    keys = list(ids)
    data = (ids, spk, lab, text, audio, visual, sent, keys[:9], keys[9:])
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return data


def test_iemocap_6_and_4_classes(tmp_path):
    data = iemocap_pickle(tmp_path / "IEMOCAP_features.pkl")
    b6 = load_dataset(f"conv:{tmp_path / 'IEMOCAP_features.pkl'}", val_fraction=0.25)
    assert b6.task.sequence_labels and b6.task.kind == "classification" and len(b6.task.output_names) == 6
    assert (len(b6.train), len(b6.val), len(b6.test)) == (7, 2, 3)
    assert b6.modality_dims == {"text": 100, "audio": 100, "visual": 512}
    s = b6.test[0]
    cid = list(data[0])[9]
    assert s.id == cid and s.conversation == cid
    assert s.features["visual"].shape == (len(data[0][cid]), 512)
    assert s.utterance_speakers == list(data[1][cid])
    assert s.label.tolist() == list(data[2][cid])
    b4 = load_conversations(tmp_path / "IEMOCAP_features.pkl", classes=4, modalities="text,audio")
    assert b4.task.output_names == ("angry", "happy", "sad", "neutral") and b4.modalities == ["text", "audio"]
    # excited (4) joins happy, frustrated (5) joins sad
    assert IEMOCAP_6_TO_4.tolist() == [1, 2, 3, 0, 1, 2]
    assert b4.test[0].label.tolist() == IEMOCAP_6_TO_4[np.array(data[2][cid])].tolist()
    batch = Collator(sequence_labels=True)([b4.test[i] for i in range(3)])
    assert batch.labels.shape == batch.label_mask.shape and batch.label_mask.sum() == sum(
        len(b4.test[i].label) for i in range(3)
    )


def test_meld_layout(tmp_path):
    rng = np.random.default_rng(1)
    ids = {c: list(range(4)) for c in range(6)}
    spk = {c: [np.eye(9)[i % 2] for i in range(4)] for c in ids}
    lab = {c: list(rng.integers(0, 7, 4)) for c in ids}
    text = {c: [rng.normal(size=600) for _ in range(4)] for c in ids}
    audio = {c: [rng.normal(size=300) for _ in range(4)] for c in ids}
    sent = {c: ["hi"] * 4 for c in ids}
    senti = {c: list(rng.integers(0, 3, 4)) for c in ids}
    with open(tmp_path / "MELD_features_raw.pkl", "wb") as f:
        pickle.dump((ids, spk, lab, text, audio, sent, [0, 1, 2, 3], [4, 5], senti), f)
    b = load_conversations(tmp_path / "MELD_features_raw.pkl", val_fraction=0)
    assert b.info["layout"] == "meld" and b.modalities == ["text", "audio"] and len(b.task.output_names) == 7
    assert b.train[0].utterance_speakers == ["spk0", "spk1", "spk0", "spk1"]
    with pytest.raises(DataFormatError, match="no \\['visual'\\] features"):
        load_conversations(tmp_path / "MELD_features_raw.pkl", modalities="visual")
    assert (
        load_conversations(tmp_path / "MELD_features_raw.pkl", label="sentiment").task.output_names[0]
        == "neutral"
    )


def test_conversation_errors(tmp_path):
    data = list(iemocap_pickle(tmp_path / "x.pkl"))
    cid = list(data[0])[0]
    data[2][cid] = data[2][cid][:-1]
    with open(tmp_path / "bad.pkl", "wb") as f:
        pickle.dump(tuple(data), f)
    with pytest.raises(DataFormatError, match=f"conversation '{cid}': .* utterances but .* labels"):
        load_conversations(tmp_path / "bad.pkl")
    data = list(iemocap_pickle(tmp_path / "x.pkl"))
    data[8] = data[8] + [data[7][0]]
    with open(tmp_path / "dup.pkl", "wb") as f:
        pickle.dump(tuple(data), f)
    with pytest.raises(DataFormatError, match="in both train and test"):
        load_conversations(tmp_path / "dup.pkl")
