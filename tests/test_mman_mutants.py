"""MMAN (paper 004) pinned where the complete mutant set of models/mman.py found nothing failing: the documented
defaults of every block, the per-utterance input contract, the attention module on its own (key masking, any
leading axes, per-module key/value weights registered), the staged protocol (frozen, eval-mode, no-grad
sub-networks; "self" weights), loading of saved states, late-fusion padding and the sub-network specs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from emofusion.data.batch import ModalityTensor
from emofusion.models import create_model
from emofusion.models.mman import ContextLSTM, MultiModalAttention, load_state, subnetwork_specs
from emofusion.tasks import classification_task

DIMS = {"audio": 4, "visual": 3, "text": 5}
TASK = classification_task(("ang", "hap", "sad", "neu"))
LENS = [5, 3]
SMALL_UNI = dict(hidden_dim=3, dense_dim=4, dropout=0.0)
SMALL_MMA = dict(d_model=4, hidden_dim=3, dense_dim=5, dropout=0.0)


def inputs(seed=0, lens=LENS):
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(6)[None] < torch.tensor(lens)[:, None]
    return {m: ModalityTensor(torch.randn(2, 6, d, generator=g), mask) for m, d in DIMS.items()}


def dropouts(module):
    return [m.p for m in module.modules() if isinstance(m, nn.Dropout)]


def test_context_lstm_defaults_are_one_direction_no_dense_layer_no_dropout():
    torch.manual_seed(0)
    block = ContextLSTM(5, 4, 1, 3)
    assert not block.encoder.lstm.bidirectional and block.encoder.output_dim == 4
    assert len(block.classifier) == 1 and block.classifier[0].in_features == 4  # linear classifier only
    assert dropouts(block) == [0.0]
    block.train()
    x, mask = torch.randn(2, 6, 5), torch.ones(2, 6, dtype=torch.bool)
    assert torch.equal(block(x, mask), block(x, mask))  # nothing random in training either


def test_clstm_ef_defaults_are_the_matched_settings():
    # docs/models/mman.md: every cLSTM has LSTM hidden 64, dense 64, dropout 0.2 and reads only the past
    ef = create_model("clstm_ef", DIMS, TASK)
    assert ef.clstm.classifier[0].out_features == 64 and not ef.clstm.encoder.lstm.bidirectional
    assert dropouts(ef) and all(p == 0.2 for p in dropouts(ef))


def test_clstm_lf_fusion_block_defaults():
    # cLSTM-LF's second cLSTM: one layer of 32 units, a linear classifier (no dense layer), no dropout
    net = create_model("clstm_lf", DIMS, TASK)
    f = net.fusion
    assert f.encoder.lstm.hidden_size == 32 and f.encoder.lstm.num_layers == 1 and not f.encoder.lstm.bidirectional
    assert len(f.classifier) == 1 and f.classifier[0].in_features == 32
    assert dropouts(f) == [0.0]


def test_hierarchical_models_need_two_modalities_and_run_on_two():
    two = {"audio": 4, "text": 5}
    for name in ("clstm_lf", "mman"):
        net = create_model(name, two, TASK).eval()
        x = inputs()
        out = net({m: x[m] for m in two}).prediction
        assert out.shape == (2, 6, 4)
        with pytest.raises(ValueError, match="needs at least 2 modalities"):
            create_model(name, {"audio": 4}, TASK)


def test_attention_module_defaults_to_shared_keys_and_values():
    att = MultiModalAttention(["a", "b"], 4, 3, 2)
    assert att.shared_kv and set(att.key) == {"a", "b"} and isinstance(att.key["a"], nn.Linear)


def test_own_key_value_weights_per_module_are_registered_parameters():
    # shared_kv=False: module q has its own W_mk, W_mv for every modality m; they must be parameters (trained,
    # saved in the state dict), not attributes of a plain dict
    net = create_model("clstm_mma", DIMS, TASK, shared_kv=False, d_model=4, d_k=3, d_v=2, skip="none")
    keys = set(net.state_dict())
    for q in DIMS:
        for m in DIMS:
            assert f"attention.key.{q}.{m}.weight" in keys and f"attention.value.{q}.{m}.weight" in keys
    n_att = sum(p.numel() for p in net.attention.parameters())
    assert n_att == 3 * 4 * 3 + 9 * 4 * 3 + 9 * 4 * 2


def attention_ref(att, e, present=None):
    """eq. 1-4 for one utterance: e = {m: [d_model]}; present = {m: bool} marks usable keys."""
    mods = att.modalities
    out, weights = {}, []
    for q in mods:
        kp = att.key if att.shared_kv else att.key[q]
        vp = att.value if att.shared_kv else att.value[q]
        query = att.query[q].weight @ e[q]
        s = [float((kp[m].weight @ e[m] @ query).detach()) / math.sqrt(att.d_k) for m in mods]
        use = [present is None or present[m] for m in mods]
        z = sum(math.exp(v) for v, u in zip(s, use) if u)
        a = [math.exp(v) / z if u else 0.0 for v, u in zip(s, use)]
        out[q] = sum(a[i] * (vp[m].weight @ e[m]) for i, m in enumerate(mods))
        weights.append(a)
    return out, torch.tensor(weights)


def test_attention_masks_keys_and_works_on_one_unbatched_conversation():
    torch.manual_seed(1)
    att = MultiModalAttention(list(DIMS), d_model=4, d_k=3, d_v=2, shared_kv=False)
    g = torch.Generator().manual_seed(1)
    emb = {m: torch.randn(2, 5, 4, generator=g) for m in DIMS}
    present = torch.ones(2, 5, 3, dtype=torch.bool)
    present[0, 1, 2] = present[1, 3, 0] = present[1, 3, 1] = False  # one, then two keys unusable
    out, w = att(emb, present)
    assert w.shape == (2, 5, 3, 3)
    for b, t in [(0, 1), (1, 3), (0, 0)]:
        ref, ref_w = attention_ref(att, {m: emb[m][b, t] for m in DIMS},
                                   {m: bool(present[b, t, i]) for i, m in enumerate(DIMS)})
        torch.testing.assert_close(w[b, t], ref_w.to(w.dtype), atol=1e-6, rtol=1e-5)
        for q in DIMS:
            torch.testing.assert_close(out[q][b, t], ref[q], atol=1e-6, rtol=1e-5)
    assert torch.all(w[0, 1, :, 2] == 0) and torch.allclose(w[1, 3, :, 2], torch.ones(3))
    # the attention is per utterance, so one conversation without a batch axis gives the same result
    one, w1 = att({m: emb[m][1] for m in DIMS})
    full, wf = att(emb)
    torch.testing.assert_close(w1, wf[1])
    for q in DIMS:
        torch.testing.assert_close(one[q], full[q][1])


def test_utterance_models_read_only_their_own_modalities_and_check_them():
    torch.manual_seed(2)
    uni = create_model("clstm_unimodal", DIMS, TASK, modality="audio", **SMALL_UNI).eval()
    x = inputs(2)
    # another modality at another rate (frame-level, other lengths) is not this model's input
    other = dict(x)
    other["visual"] = ModalityTensor(torch.randn(2, 9, 3), torch.arange(9)[None] < torch.tensor([9, 4])[:, None])
    torch.testing.assert_close(uni(other).prediction, uni(x).prediction)
    bad = dict(x)
    bad["audio"] = ModalityTensor(torch.randn(2, 6, 7), x["audio"].mask)
    with pytest.raises(ValueError, match="expects values"):
        uni(bad)


def test_modalities_with_other_utterance_counts_are_rejected():
    ef = create_model("clstm_ef", DIMS, TASK, hidden_dim=3, dense_dim=0)
    x = inputs(3)
    same_shape = dict(x)
    same_shape["text"] = ModalityTensor(x["text"].values, torch.arange(6)[None] < torch.tensor([5, 2])[:, None])
    with pytest.raises(ValueError, match="does not have one vector per utterance"):
        ef(same_shape)
    longer = dict(x)
    longer["text"] = ModalityTensor(torch.randn(2, 7, 5), torch.arange(7)[None] < torch.tensor([5, 3])[:, None])
    with pytest.raises(ValueError, match="does not have one vector per utterance"):
        ef(longer)


def save_subnets(tmp_path, opts):
    torch.manual_seed(5)
    paths = {"mma": create_model("clstm_mma", DIMS, TASK, **opts["mma"])}
    for m in DIMS:
        paths[m] = create_model("clstm_unimodal", DIMS, TASK, modality=m, **opts["unimodal"])
    out = {}
    for name, net in paths.items():
        out[name] = str(tmp_path / f"{name}.pt")
        torch.save(net.state_dict(), out[name])
    return out


OPTS = dict(mma=dict(SMALL_MMA, dropout=0.3), unimodal=dict(SMALL_UNI, dropout=0.3))


def test_fusion_stage_freezes_and_evaluates_the_sub_networks(tmp_path):
    paths = save_subnets(tmp_path, OPTS)
    net = create_model("mman", DIMS, TASK, stage="fusion", pretrained=paths, **OPTS)
    assert all(not p.requires_grad for p in net.subnets.parameters())
    assert all(p.requires_grad for p in net.fusion.parameters())
    net.train()
    assert net.training and net.fusion.training and not any(m.training for m in net.subnets.modules())
    x = inputs(4)
    out = net(x)
    # frozen sub-networks run without dropout and without a graph: their logits equal their eval outputs
    for name, logits in out.extras["subnet_logits"].items():
        assert logits.grad_fn is None
        torch.testing.assert_close(logits, net.subnets[name].eval()(x).prediction)
    out.prediction.sum().backward()
    assert net.fusion.weight.grad is not None
    assert all(p.grad is None for p in net.subnets.parameters())


def test_joint_stage_trains_every_part_in_training_mode(tmp_path):
    paths = save_subnets(tmp_path, OPTS)
    net = create_model("mman", DIMS, TASK, stage="joint", pretrained=paths, **OPTS).train()
    assert all(m.training for m in net.modules())
    out = net(inputs(4))
    assert all(v.grad_fn is not None for v in out.extras["subnet_logits"].values())
    out.prediction.sum().backward()
    assert all(p.grad is not None for p in net.subnets["audio"].parameters())
    net.train(False)
    assert not any(m.training for m in net.modules())


def test_fusion_stage_with_whole_model_weights_needs_no_sub_network_files(tmp_path):
    torch.manual_seed(6)
    donor = create_model("mman", DIMS, TASK, **OPTS)
    torch.save(donor.state_dict(), tmp_path / "whole.pt")
    net = create_model("mman", DIMS, TASK, stage="fusion", pretrained={"self": str(tmp_path / "whole.pt")}, **OPTS)
    assert all(not p.requires_grad for p in net.subnets.parameters())
    x = inputs(6)
    torch.testing.assert_close(net.eval()(x).prediction, donor.eval()(x).prediction)


def test_clstm_lf_zeroes_padding_and_reports_its_sub_networks():
    torch.manual_seed(7)
    net = create_model("clstm_lf", DIMS, TASK, unimodal=SMALL_UNI, hidden_dim=3).eval()
    x = inputs(7)
    out = net(x)
    for b, L in enumerate(LENS):
        assert torch.all(out.prediction[b, L:] == 0)  # exactly zero (finite) at padded utterances
    sub = out.extras["subnet_logits"]
    assert list(sub) == list(DIMS)
    for m in DIMS:
        torch.testing.assert_close(sub[m], net.subnets[m](x).prediction)


class NotATensor:
    """A pickled object that is not a tensor: weights-only loading must refuse it (no code runs on load)."""

    def __init__(self):
        self.value = 3


def test_state_files_load_weights_only_onto_the_cpu(tmp_path, monkeypatch):
    torch.manual_seed(8)
    net = create_model("clstm_unimodal", DIMS, TASK, modality="text", **SMALL_UNI)
    # a .pt state saved on a GPU machine: its storages are tagged cuda:0 (this machine has no GPU)
    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
    torch.save(net.state_dict(), tmp_path / "gpu.pt")
    ckpt = {"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
            "hyper_parameters": {"extra": NotATensor()}}  # the engine's checkpoints pickle objects
    torch.save(ckpt, tmp_path / "gpu.ckpt")
    monkeypatch.undo()
    for name in ("gpu.pt", "gpu.ckpt"):
        state = load_state(tmp_path / name)
        assert set(state) == set(net.state_dict())
        for k, v in net.state_dict().items():
            assert state[k].device.type == "cpu"
            torch.testing.assert_close(state[k], v)
    torch.save({"w": torch.zeros(2), "obj": NotATensor()}, tmp_path / "unsafe.pt")
    with pytest.raises(Exception, match="[Ww]eights only load failed|weights_only"):
        load_state(tmp_path / "unsafe.pt")
    # an environment that relaxes torch's default (weights_only=False unless a call says otherwise) does not
    # relax this loader: it says weights_only=True itself
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(Exception, match="[Ww]eights only load failed|weights_only"):
        load_state(tmp_path / "unsafe.pt")


def test_subnetwork_specs_defaults_and_options():
    specs = subnetwork_specs("mman", list(DIMS))  # no options at all
    assert specs["mma"] == ("clstm_mma", {"bidirectional": False})
    assert all(specs[m] == ("clstm_unimodal", {"bidirectional": False, "modality": m}) for m in DIMS)
    only_uni = subnetwork_specs("mman", list(DIMS), {"unimodal": {"hidden_dim": {"text": 7, "default": 5}}})
    assert only_uni["mma"] == ("clstm_mma", {"bidirectional": False})
    assert only_uni["text"][1] == {"bidirectional": False, "hidden_dim": 7, "modality": "text"}
    assert only_uni["audio"][1]["hidden_dim"] == 5
    only_mma = subnetwork_specs("clstm_lf", list(DIMS), {"mma": {"d_model": 4}, "bidirectional": True})
    assert list(only_mma) == list(DIMS) and all(s[1]["bidirectional"] for s in only_mma.values())
    assert subnetwork_specs("mman", ["audio", "text"], {"bidirectional": True})["mma"][1] == {"bidirectional": True}
