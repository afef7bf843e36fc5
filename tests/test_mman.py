"""MMAN (paper 004): attention modules (eq. 1-4), causal context, padding, frozen sub-networks, engine."""

from __future__ import annotations

import math

import pytest
import torch

from emofusion.data import load_dataset
from emofusion.data.collate import Collator
from emofusion.models import create_model
from emofusion.models.mman import MMAN, MultiModalAttention
from emofusion.tasks import classification_task

TASK = classification_task(("angry", "happy", "sad", "neutral"), sequence_labels=True)
DIMS = {"audio": 12, "visual": 7, "text": 10}
SMALL = {
    "clstm_unimodal": {"modality": "audio", "hidden_dim": 8, "dense_dim": 8},
    "clstm_ef": {"hidden_dim": 8, "dense_dim": 8},
    "clstm_mma": {"d_model": 8, "hidden_dim": 8, "dense_dim": 8},
    "clstm_lf": {"unimodal": {"hidden_dim": 6, "dense_dim": 0}, "hidden_dim": 6},
    "mman": {"mma": {"d_model": 8, "hidden_dim": 8}, "unimodal": {"hidden_dim": 6, "dense_dim": 0}},
}


def make_inputs(lengths, dims=DIMS, seed=0):
    g = torch.Generator().manual_seed(seed)
    steps = max(lengths)
    mask = torch.arange(steps).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    return {
        m: (torch.randn(len(lengths), steps, d, generator=g) * mask.unsqueeze(-1), mask)
        for m, d in dims.items()
    }


def build(name, **extra):
    torch.manual_seed(0)
    model = create_model(name, DIMS, TASK, **{**SMALL[name], **extra})
    return model.eval()


@pytest.mark.parametrize("name", list(SMALL))
def test_shapes_padding_and_batch_equals_single(name):
    model = build(name)
    inputs = make_inputs([5, 3])
    out = model(inputs).prediction
    assert out.shape == (2, 5, 4)
    assert torch.all(out[1, 3:] == 0)
    # padded values never matter
    noisy = {m: (v + 100.0 * (~mask).unsqueeze(-1), mask) for m, (v, mask) in inputs.items()}
    torch.testing.assert_close(model(noisy).prediction, out)
    # a batch gives what each conversation gives alone
    single = {m: (v[1:2, :3], mask[1:2, :3]) for m, (v, mask) in inputs.items()}
    torch.testing.assert_close(model(single).prediction[0], out[1, :3], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(SMALL))
def test_unidirectional_context_never_reads_the_future(name):
    model = build(name)
    inputs = make_inputs([6, 6])
    changed = {m: (v.clone(), mask) for m, (v, mask) in inputs.items()}
    for m in changed:
        changed[m][0][:, 4] += 5.0  # utterance 4 (and nothing before it) changes
    a, b = model(inputs).prediction, model(changed).prediction
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])
    # the bidirectional option does read the future (so the test above can fail)
    bi = build(name, bidirectional=True) if name != "mman" else build(name, bidirectional=True)
    a, b = bi(inputs).prediction, bi(changed).prediction
    assert not torch.allclose(a[:, :4], b[:, :4])


def test_attention_is_eq_1_to_4():
    torch.manual_seed(1)
    mods = ["audio", "visual", "text"]
    att = MultiModalAttention(mods, d_model=6, d_k=4, d_v=6)
    emb = {m: torch.randn(2, 3, 6) for m in mods}
    out, weights = att(emb)
    assert weights.shape == (2, 3, 3, 3)  # [B, T, query modality, key modality]
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 3))
    assert torch.all(weights > 0)  # every module attends over all three modalities, itself included
    for qi, q in enumerate(mods):
        query = emb[q] @ att.query[q].weight.T  # eq. 1
        keys = torch.stack([emb[m] @ att.key[m].weight.T for m in mods], -2)  # eq. 2
        values = torch.stack([emb[m] @ att.value[m].weight.T for m in mods], -2)  # eq. 3
        w = torch.softmax((keys @ query.unsqueeze(-1)).squeeze(-1) / math.sqrt(4), -1)  # eq. 4
        torch.testing.assert_close(weights[..., qi, :], w)
        torch.testing.assert_close(out[q], (w.unsqueeze(-1) * values).sum(-2))


def test_each_module_queries_from_its_own_modality_and_reads_all_three():
    torch.manual_seed(2)
    mods = ["audio", "visual", "text"]
    att = MultiModalAttention(mods, d_model=6, d_k=6, d_v=6)
    emb = {m: torch.randn(1, 2, 6) for m in mods}
    _, base = att(emb)
    # the query of module q depends only on modality q: changing the visual query weights changes only
    # the visual module's attention row
    with torch.no_grad():
        att.query["visual"].weight.add_(torch.randn(6, 6))
    _, moved = att(emb)
    assert not torch.allclose(moved[..., 1, :], base[..., 1, :])
    torch.testing.assert_close(moved[..., [0, 2], :], base[..., [0, 2], :])
    # each module's output depends on every modality (keys/values from all three)
    for q in mods:
        for m in mods:
            x = {k: v.clone().requires_grad_(True) for k, v in emb.items()}
            out, _ = att(x)
            (grad,) = torch.autograd.grad(out[q].sum(), x[m])
            assert grad.abs().sum() > 0, (q, m)


def test_mma_works_on_two_modalities_and_rejects_unaligned_inputs():
    dims = {"audio": 5, "text": 4}
    model = create_model("clstm_mma", dims, TASK, d_model=4, hidden_dim=4)
    inputs = make_inputs([3, 2], dims)
    out = model(inputs)
    assert out.prediction.shape == (2, 3, 4) and out.extras["attention"].shape == (2, 3, 2, 2)
    ablation = create_model("clstm_mma", dims, TASK, d_model=4, hidden_dim=4, attention=False)
    assert ablation(inputs).prediction.shape == (2, 3, 4) and "attention" not in ablation(inputs).extras
    assert ablation.num_parameters() < model.num_parameters()
    bad = dict(inputs)
    bad["text"] = (inputs["text"][0], torch.tensor([[True, True, False], [True, True, False]]))
    with pytest.raises(ValueError, match="one vector per utterance"):
        model(bad)


def test_mma_has_fewer_parameters_than_ef_at_matched_settings():
    dims = {"audio": 100, "visual": 64, "text": 100}  # synthetic-conv
    shared = {"hidden_dim": 64, "dense_dim": 64}
    mma = create_model("clstm_mma", dims, TASK, d_model=32, **shared)
    ef = create_model("clstm_ef", dims, TASK, **shared)
    assert mma.num_parameters() < 0.8 * ef.num_parameters()


def _train_fusion(model, inputs, labels, steps=5):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(inputs).prediction.reshape(-1, 4), labels.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_frozen_subnetworks_do_not_change_while_the_fusion_layer_trains(tmp_path):
    torch.manual_seed(3)
    paths = {}
    trained = {"mma": create_model("clstm_mma", DIMS, TASK, **SMALL["mman"]["mma"])}
    for m in DIMS:
        trained[m] = create_model("clstm_unimodal", DIMS, TASK, modality=m, **SMALL["mman"]["unimodal"])
    for name, net in trained.items():
        paths[name] = str(tmp_path / f"{name}.pt")
        torch.save(net.state_dict(), paths[name])
    model = create_model("mman", DIMS, TASK, stage="fusion", pretrained=paths, **SMALL["mman"])
    for name, net in trained.items():  # loaded
        for k, v in net.state_dict().items():
            torch.testing.assert_close(model.subnets[name].state_dict()[k], v)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inputs = make_inputs([4, 4])
    _train_fusion(model, inputs, torch.randint(0, 4, (2, 4)))
    after = model.state_dict()
    for k in before:
        if k.startswith("subnets."):
            assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["fusion.weight"], after["fusion.weight"])
    assert not model.subnets.training  # frozen sub-networks stay in eval mode (no dropout)
    # joint stage: the sub-networks do move
    joint = create_model("mman", DIMS, TASK, stage="joint", pretrained=paths, **SMALL["mman"])
    before = {k: v.clone() for k, v in joint.state_dict().items()}
    _train_fusion(joint, inputs, torch.randint(0, 4, (2, 4)))
    assert not torch.equal(
        before["subnets.mma.standardise.audio.0.weight"],
        joint.state_dict()["subnets.mma.standardise.audio.0.weight"],
    )


def test_fusion_stage_needs_pretrained_subnetworks():
    with pytest.raises(ValueError, match="no pretrained weights"):
        MMAN(DIMS, TASK, stage="fusion", **SMALL["mman"])
    with pytest.raises(ValueError, match="unknown sub-networks"):
        MMAN(DIMS, TASK, pretrained={"smell": "x.pt"}, **SMALL["mman"])
    with pytest.raises(ValueError, match="classes per utterance"):
        create_model("clstm_ef", DIMS, classification_task(("a", "b")).__class__("sentiment", ("s",)))


def test_models_run_on_synthetic_conv_batches():
    bundle = load_dataset(
        "synthetic-conv", n_train=4, n_val=1, n_test=1, audio_dim=12, visual_dim=7, text_dim=10
    )
    batch = Collator(sequence_labels=True)(list(bundle.train))
    for name in SMALL:
        out = build(name)(batch.inputs).prediction
        assert out.shape == (*batch.label_mask.shape, 4)
        flat = out[batch.label_mask]
        assert flat.shape[0] == int(batch.label_mask.sum()) and torch.isfinite(flat).all()


def test_train_mman_protocol_through_the_engine(tmp_path):
    pytest.importorskip("lightning")
    from emofusion.training import RunConfig
    from emofusion.training.protocols import train_mman

    torch.set_num_threads(1)
    config = RunConfig(
        model="mman",
        dataset="synthetic-conv",
        dataset_options={
            "n_train": 12,
            "n_val": 4,
            "n_test": 4,
            "audio_dim": 12,
            "visual_dim": 7,
            "text_dim": 10,
        },
        model_options=SMALL["mman"],
        max_epochs=2,
        batch_size=4,
        output=str(tmp_path / "mman"),
        progress=False,
        plots=False,
        threads=1,
    )
    out = train_mman(config, finetune_epochs=1)
    assert set(out["subnets"]) == {"mma", "audio", "visual", "text"}
    fused = out["fusion"].module.model
    # the fused model's sub-networks are exactly the separately trained ones (frozen during fusion training)
    for name, run in out["subnets"].items():
        for k, v in run.module.model.state_dict().items():
            torch.testing.assert_close(fused.subnets[name].state_dict()[k], v)
    assert 0.0 <= out["fusion"].metrics["test"]["accuracy"] <= 1.0
    assert out["finetune"] is not None and "accuracy" in out["finetune"].metrics["test"]


def test_paper004_suite_staged_rows_reuse_the_single_stage_runs(tmp_path):
    from emofusion.evaluation.suite import config_hash, get_suite
    from emofusion.evaluation.suites.paper004 import parameter_count, single_stage_configs, staged_config

    spec = get_suite("paper004-table2", "quick")
    rows = single_stage_configs("quick")
    assert {c.row for c in spec.cells} == set(rows)
    for row, expect in (
        ("MMAN", {"mma": "cLSTM-MMA", "audio": "cLSTM-Speech"}),
        ("cLSTM-LF", {"text": "cLSTM-Text"}),
    ):
        cfg = staged_config("quick", row, 2, tmp_path)
        assert cfg["model_options"]["stage"] == "fusion"
        for sub, source in expect.items():
            assert cfg["model_options"]["pretrained"][sub] == str(
                tmp_path / "runs" / config_hash(rows[source], 2)
            )
    assert parameter_count(rows["cLSTM-MMA"]) < parameter_count(rows["cLSTM-EF"])


def test_models_work_on_the_conv_reader_layout_with_the_4_class_mapping(tmp_path):
    """A tiny file in the IEMOCAP bc-LSTM/DialogueRNN pickle layout, read by ``conv:FILE.pkl``."""
    import pickle

    import numpy as np

    pytest.importorskip("emofusion.data.conversation")
    from emofusion.training.losses import task_loss

    rng = np.random.default_rng(0)
    ids, spk, lab, text, audio, visual, sent = {}, {}, {}, {}, {}, {}, {}
    for c in range(6):
        cid, n = f"Ses0{c}_conv", 3 + c
        ids[cid] = [f"{cid}_u{i}" for i in range(n)]
        spk[cid] = ["M" if i % 2 else "F" for i in range(n)]
        lab[cid] = [int(v) for v in rng.integers(0, 6, n)]
        text[cid] = [rng.standard_normal(10).astype(np.float32) for _ in range(n)]
        audio[cid] = [rng.standard_normal(12).astype(np.float32) for _ in range(n)]
        visual[cid] = [rng.standard_normal(7).astype(np.float32) for _ in range(n)]
        sent[cid] = ["hello there"] * n
    path = tmp_path / "IEMOCAP_features.pkl"
    data = (ids, spk, lab, text, audio, visual, sent, list(ids)[:4], list(ids)[4:])
    path.write_bytes(pickle.dumps(data))
    bundle = load_dataset(f"conv:{path}", classes=4, val_fraction=0.25)
    assert bundle.task.output_names == ("angry", "happy", "sad", "neutral") and bundle.task.sequence_labels
    # happy(0)+excited(4) -> happy, sad(1)+frustrated(5) -> sad, neutral(2), angry(3)
    expect = np.array([1, 2, 3, 0, 1, 2])[np.asarray(lab["Ses04_conv"])]
    np.testing.assert_array_equal(bundle.test[0].label, expect)
    batch = Collator(sequence_labels=True)(list(bundle.train) + list(bundle.test))
    for name in SMALL:
        model = create_model(name, bundle.modality_dims, bundle.task, **SMALL[name])
        out = model(batch.inputs).prediction
        assert out.shape == (*batch.label_mask.shape, 4)
        loss = task_loss("ce", bundle.task, out, batch.labels, batch.label_mask)
        assert torch.isfinite(loss)
