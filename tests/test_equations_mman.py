"""Paper 004 §2 re-implemented literally per conversation and utterance: cLSTM blocks (stacked
unidirectional LSTMs over the utterances, dense ReLU, linear), dense standardisation, the directional
multi-modal attention (eq. 1-4: query of one modality, keys/values of all, scaled softmax), the skip
connection, late fusion of the sub-networks' softmax outputs (MMAN) and cLSTM-LF."""

from __future__ import annotations

import math

import pytest
import torch

from emofusion.data.batch import ModalityTensor
from emofusion.models import create_model
from emofusion.tasks import classification_task

DIMS = {"audio": 4, "visual": 3, "text": 5}
TASK = classification_task(("ang", "hap", "sad", "neu"))
LENS = [5, 3]


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(6)[None] < torch.tensor(LENS)[:, None]
    return {m: ModalityTensor(torch.randn(2, 6, d, generator=g), mask) for m, d in DIMS.items()}


def sig(z):
    return 1 / (1 + torch.exp(-z))


def lstm_layer(lstm, xs, layer, suffix=""):
    W, U = getattr(lstm, f"weight_ih_l{layer}{suffix}"), getattr(lstm, f"weight_hh_l{layer}{suffix}")
    b = getattr(lstm, f"bias_ih_l{layer}{suffix}") + getattr(lstm, f"bias_hh_l{layer}{suffix}")
    H = U.shape[1]
    h, c, out = torch.zeros(H), torch.zeros(H), []
    for x in xs:
        z = W @ x + U @ h + b
        c = sig(z[H : 2 * H]) * c + sig(z[:H]) * torch.tanh(z[2 * H : 3 * H])
        h = sig(z[3 * H :]) * torch.tanh(c)
        out.append(h)
    return out


def lin(layer, x):
    return layer.weight @ x + (layer.bias if layer.bias is not None else 0)


def clstm(block, xs):
    lstm = block.encoder.lstm
    for layer in range(lstm.num_layers):
        fwd = lstm_layer(lstm, xs, layer)
        if lstm.bidirectional:
            bwd = lstm_layer(lstm, xs[::-1], layer, "_reverse")[::-1]
            xs = [torch.cat([f, r]) for f, r in zip(fwd, bwd)]
        else:
            xs = fwd
    out = []
    for h in xs:
        for mod in block.classifier:
            if isinstance(mod, torch.nn.Linear):
                h = lin(mod, h)
            elif isinstance(mod, torch.nn.ReLU):
                h = torch.relu(h)
        out.append(h)
    return out


def mma_ref(net, x, b):
    mods = list(DIMS)
    L = LENS[b]
    att = net.attention
    fused_seq, weights = [], []
    for t in range(L):
        e = {m: torch.relu(lin(net.standardise[m][0], x[m][0][b, t])) for m in mods}
        parts, w_t = [], []
        for q in mods:
            kp = att.key if att.shared_kv else att.key[q]
            vp = att.value if att.shared_kv else att.value[q]
            query = att.query[q].weight @ e[q]  # eq. 1
            keys = [kp[m].weight @ e[m] for m in mods]  # eq. 2
            vals = [vp[m].weight @ e[m] for m in mods]  # eq. 3
            s = torch.stack([k @ query for k in keys]) / math.sqrt(att.d_k)
            a = torch.exp(s) / torch.exp(s).sum()  # eq. 4
            z = sum(a[i] * vals[i] for i in range(len(mods)))
            w_t.append(a)
            if net.skip == "residual":
                parts.append(z + e[q])
            elif net.skip == "concat":
                parts += [z, e[q]]
            else:
                parts.append(z)
        fused_seq.append(torch.cat(parts))
        weights.append(torch.stack(w_t))
    return clstm(net.clstm, fused_seq), weights


SMALL_MMA = dict(d_model=4, hidden_dim=3, dense_dim=5, dropout=0.0)


@pytest.mark.parametrize("opts", [{}, {"skip": "concat", "shared_kv": False, "d_k": 3}, {"skip": "none", "d_v": 2}],
                         ids=["residual-shared", "concat-own-kv", "none"])
def test_clstm_mma_equals_literal_equations(opts):
    torch.manual_seed(0)
    net = create_model("clstm_mma", DIMS, TASK, **SMALL_MMA, **opts).eval()
    x = inputs()
    out = net(x)
    for b in range(2):
        ref, w = mma_ref(net, x, b)
        torch.testing.assert_close(out.prediction[b, : LENS[b]], torch.stack(ref), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out.extras["attention"][b, : LENS[b]], torch.stack(w), atol=1e-5, rtol=1e-4)
        assert torch.all(out.prediction[b, LENS[b] :] == 0) and torch.all(out.extras["attention"][b, LENS[b] :] == 0)


def test_unimodal_and_early_fusion_clstm_literal():
    torch.manual_seed(1)
    x = inputs(1)
    uni = create_model("clstm_unimodal", DIMS, TASK, modality="visual", hidden_dim=3, dense_dim=4,
                       dropout=0.0).eval()
    ef = create_model("clstm_ef", DIMS, TASK, hidden_dim=3, dense_dim=0, dropout=0.0, bidirectional=True).eval()
    assert uni.clstm.encoder.lstm.num_layers == 2 and not uni.clstm.encoder.lstm.bidirectional
    pu, pe = uni(x).prediction, ef(x).prediction
    for b in range(2):
        L = LENS[b]
        ref = clstm(uni.clstm, [x["visual"][0][b, t] for t in range(L)])
        torch.testing.assert_close(pu[b, :L], torch.stack(ref), atol=1e-5, rtol=1e-4)
        cat = [torch.cat([x[m][0][b, t] for m in DIMS]) for t in range(L)]
        torch.testing.assert_close(pe[b, :L], torch.stack(clstm(ef.clstm, cat)), atol=1e-5, rtol=1e-4)
    # unidirectional context: utterance 0's prediction ignores later utterances
    y = dict(x)
    v = x["visual"][0].clone()
    v[:, 2:] += 5.0
    y["visual"] = ModalityTensor(v, x["visual"][1])
    assert torch.allclose(uni(y).prediction[:, :2], pu[:, :2]) and not torch.allclose(uni(y).prediction, pu)


@pytest.mark.parametrize("fuse_input", ["probs", "logits"])
def test_mman_late_fusion_literal(fuse_input):
    torch.manual_seed(2)
    net = create_model("mman", DIMS, TASK, mma=SMALL_MMA, unimodal=dict(hidden_dim=3, dense_dim=4, dropout=0.0),
                       fuse_input=fuse_input).eval()
    x = inputs(2)
    out = net(x)
    for b in range(2):
        L = LENS[b]
        mma, _ = mma_ref(net.subnets["mma"], x, b)
        subs = [mma] + [clstm(net.subnets[m].clstm, [x[m][0][b, t] for t in range(L)]) for m in DIMS]
        for t in range(L):
            parts = [s[t] if fuse_input == "logits" else torch.softmax(s[t], 0) for s in subs]
            torch.testing.assert_close(out.prediction[b, t], lin(net.fusion, torch.cat(parts)), atol=1e-5, rtol=1e-4)
        assert torch.all(out.prediction[b, L:] == 0)
    assert list(net.subnets) == ["mma", *DIMS] and net.fusion.in_features == 4 * 4


def test_clstm_lf_literal():
    torch.manual_seed(3)
    net = create_model("clstm_lf", DIMS, TASK, unimodal=dict(hidden_dim=3, dense_dim=4, dropout=0.0),
                       hidden_dim=3).eval()
    x = inputs(3)
    out = net(x)
    for b in range(2):
        L = LENS[b]
        subs = [clstm(net.subnets[m].clstm, [x[m][0][b, t] for t in range(L)]) for m in DIMS]
        probs = [torch.cat([torch.softmax(s[t], 0) for s in subs]) for t in range(L)]
        torch.testing.assert_close(out.prediction[b, :L], torch.stack(clstm(net.fusion, probs)), atol=1e-5,
                                   rtol=1e-4)


def test_defaults_are_the_papers():
    m = create_model("clstm_mma", DIMS, TASK)
    assert m.skip == "residual" and m.attention.shared_kv and m.clstm.encoder.lstm.num_layers == 1
    assert not m.clstm.encoder.lstm.bidirectional and m.attention.d_k == 32
    u = create_model("clstm_unimodal", DIMS, TASK, modality="text")
    assert u.clstm.encoder.lstm.num_layers == 2 and u.clstm.encoder.lstm.hidden_size == 64
    mm = create_model("mman", DIMS, TASK)
    assert mm.fuse_input == "probs" and mm.stage == "joint"
    assert not mm.subnets["mma"].clstm.encoder.lstm.bidirectional
    assert not any(mm.subnets[m].clstm.encoder.lstm.bidirectional for m in DIMS)


def test_context_lstm_dropout_acts_in_training_only():
    from emofusion.models.mman import ContextLSTM

    torch.manual_seed(4)
    block = ContextLSTM(5, 4, 1, 3, dense_dim=0, dropout=0.5).train()
    x = torch.randn(2, 6, 5)
    mask = torch.ones(2, 6, dtype=torch.bool)
    assert not torch.allclose(block(x, mask), block(x, mask))  # dropout on the LSTM outputs
    block.eval()
    assert torch.allclose(block(x, mask), block(x, mask))


def test_attention_sizes_follow_the_options():
    net = create_model("clstm_mma", DIMS, TASK, d_model=4, d_k=3, d_v=2, skip="none")
    assert net.attention.query["audio"].out_features == 3 and net.attention.d_k == 3
    assert net.attention.value["text"].out_features == 2


def test_standardisation_layers_are_registered():
    net = create_model("clstm_mma", DIMS, TASK, d_model=4)
    assert {"standardise.audio.0.weight", "standardise.text.0.bias"} <= set(net.state_dict())


def test_clstm_lf_defaults_and_stages(tmp_path):
    # no `unimodal` options: the sub-networks take their defaults (bidirectional follows the model's flag)
    net = create_model("clstm_lf", DIMS, TASK, bidirectional=True)
    assert all(net.subnets[m].clstm.encoder.lstm.bidirectional for m in DIMS) and net.stage == "joint"
    with pytest.raises(ValueError, match="stage"):
        create_model("clstm_lf", DIMS, TASK, stage="both")
    with pytest.raises(ValueError, match="no pretrained weights"):
        create_model("clstm_lf", DIMS, TASK, stage="fusion")
    # pretrained weights given for one sub-network are loaded into it
    torch.manual_seed(0)
    donor = create_model("clstm_unimodal", DIMS, TASK, modality="audio")
    torch.save(donor.state_dict(), tmp_path / "audio.pt")
    net = create_model("clstm_lf", DIMS, TASK, pretrained={"audio": str(tmp_path / "audio.pt")})
    for k, v in donor.state_dict().items():
        torch.testing.assert_close(net.subnets["audio"].state_dict()[k], v)


def test_pretrained_path_that_is_an_empty_folder_is_reported(tmp_path):
    from emofusion.models.mman import load_state

    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match="not found"):
        load_state(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_state(tmp_path / "missing.pt")


def test_load_state_finds_the_run_folders_weights(tmp_path):
    from emofusion.models.mman import STATE_FILE, load_state

    torch.manual_seed(1)
    net = create_model("clstm_unimodal", DIMS, TASK, modality="text")
    run = tmp_path / "run"
    run.mkdir()
    torch.save(net.state_dict(), run / STATE_FILE)
    state = load_state(run)
    assert set(state) == set(net.state_dict())
    for k, v in net.state_dict().items():
        torch.testing.assert_close(state[k], v)


def test_late_fusion_registers_its_subnetworks():
    net = create_model("clstm_lf", DIMS, TASK)
    keys = set(net.state_dict())
    assert all(any(k.startswith(f"subnets.{m}.") for k in keys) for m in DIMS)
    n_sub = sum(p.numel() for p in net.subnets.parameters())
    own = sum(p.numel() for p in net.fusion.parameters()) + sum(p.numel() for p in net.absent_tokens)
    assert n_sub > 0 and net.num_parameters() == n_sub + own


def test_clstm_mma_without_attention_is_the_clstm_over_the_standardised_inputs():
    torch.manual_seed(6)
    net = create_model("clstm_mma", DIMS, TASK, attention=False, d_model=4, hidden_dim=3, dense_dim=4,
                       dropout=0.0).eval()
    assert net.attention is None
    x = inputs(6)
    out = net(x)
    for b in range(2):
        L = LENS[b]
        steps = [torch.cat([net.standardise[m](x[m][0][b, t][None])[0] for m in DIMS]) for t in range(L)]
        torch.testing.assert_close(out.prediction[b, :L], torch.stack(clstm(net.clstm, steps)), atol=1e-5,
                                   rtol=1e-4)


def test_mman_passes_its_sub_network_options_through():
    net = create_model("mman", DIMS, TASK, mma={"d_model": 4, "d_k": 3, "hidden_dim": 5},
                       unimodal={"hidden_dim": 6}, bidirectional=True)
    mma = net.subnets["mma"]
    assert mma.attention.d_k == 3 and mma.attention.query["audio"].out_features == 3
    assert mma.clstm.encoder.lstm.hidden_size == 5 and mma.clstm.encoder.lstm.bidirectional
    assert all(net.subnets[m].clstm.encoder.lstm.hidden_size == 6 for m in DIMS)
    assert all(net.subnets[m].clstm.encoder.lstm.bidirectional for m in DIMS)


def test_subnetwork_specs_match_the_models_sub_networks():
    from emofusion.models.mman import subnetwork_specs

    opts = {"mma": {"d_model": 4}, "unimodal": {"hidden_dim": 6}, "bidirectional": True}
    specs = subnetwork_specs("mman", list(DIMS), opts)
    assert list(specs) == ["mma", *DIMS]
    assert specs["mma"] == ("clstm_mma", {"bidirectional": True, "d_model": 4})
    assert all(specs[m][0] == "clstm_unimodal" and specs[m][1]["modality"] == m for m in DIMS)
    lf = subnetwork_specs("clstm_lf", list(DIMS), opts)
    assert list(lf) == list(DIMS)
    with pytest.raises(ValueError, match="no sub-networks"):
        subnetwork_specs("clstm_mma", list(DIMS), opts)


def test_default_sizes_and_dropouts_are_the_documented_matched_settings():
    # the paper gives no sizes; docs/models/mman.md fixes the "matched settings" every cLSTM shares:
    # LSTM hidden 64, dense 64, dropout 0.2 (cLSTM-MMA's d_model = 32 is its own)
    from torch import nn

    mma = create_model("clstm_mma", DIMS, TASK)
    uni = create_model("clstm_unimodal", DIMS, TASK, modality="audio")
    for net in (mma, uni):
        assert net.clstm.encoder.lstm.hidden_size == 64
        assert net.clstm.classifier[0].out_features == 64  # dense layer
        drops = [m.p for m in net.modules() if isinstance(m, nn.Dropout)]
        assert drops and all(p == 0.2 for p in drops), drops
    assert mma.dropout.p == 0.2 and mma.attention.d_k == 32
    assert uni.clstm.encoder.lstm.num_layers == 2 and mma.clstm.encoder.lstm.num_layers == 1


def _silence_clstm_dropouts(net):
    """Zero the cLSTM's own dropouts, so only the fusion dropout before it acts."""
    for mod in net.clstm.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0


def test_clstm_mma_without_attention_drops_out_the_fused_embeddings_in_training():

    torch.manual_seed(7)
    net = create_model("clstm_mma", DIMS, TASK, attention=False, d_model=4, hidden_dim=3, dense_dim=4,
                       dropout=0.5)
    _silence_clstm_dropouts(net)
    x = inputs(7)
    net.eval()
    ref = net(x).prediction
    net.train()
    torch.manual_seed(0)
    a = net(x).prediction
    assert not torch.allclose(a, ref)  # dropout on the concatenated standardised embeddings
    net.dropout.p = 0.0
    torch.testing.assert_close(net(x).prediction, ref)  # ... and nothing else is random


def test_per_modality_sub_network_options_with_a_default():
    # the paper customises hyper-parameters per modality: {modality: value, "default": value}
    net = create_model("clstm_lf", DIMS, TASK, unimodal={"hidden_dim": {"audio": 6, "default": 4}, "dense_dim": 5})
    sizes = {m: net.subnets[m].clstm.encoder.lstm.hidden_size for m in DIMS}
    assert sizes == {"audio": 6, "visual": 4, "text": 4}
    assert all(net.subnets[m].clstm.classifier[0].out_features == 5 for m in DIMS)


def test_clstm_ef_default_is_the_two_layer_clstm():
    # docs/models/mman.md: cLSTM-EF = concatenated utterance features -> two-layer cLSTM (§3.3)
    ef = create_model("clstm_ef", DIMS, TASK)
    assert ef.clstm.encoder.lstm.num_layers == 2 and ef.clstm.encoder.lstm.hidden_size == 64
    assert ef.clstm.encoder.lstm.input_size == sum(DIMS.values())


@pytest.mark.parametrize("name, opts", [("clstm_unimodal", {"modality": "audio"}), ("clstm_ef", {}),
                                        ("clstm_mma", {}), ("clstm_lf", {}), ("mman", {})])
def test_models_reject_a_task_that_is_not_classification(name, opts):
    from emofusion.tasks import sentiment_task

    with pytest.raises(ValueError, match=rf"{name} predicts classes per utterance; got a 'sentiment' task"):
        create_model(name, DIMS, sentiment_task(), **opts)


def test_clstm_mma_drops_out_the_fused_attended_embeddings_in_training():

    torch.manual_seed(8)
    net = create_model("clstm_mma", DIMS, TASK, d_model=4, hidden_dim=3, dense_dim=4, dropout=0.5)
    _silence_clstm_dropouts(net)
    x = inputs(8)
    net.eval()
    ref = net(x).prediction
    assert torch.equal(net(x).prediction, ref)  # eval: deterministic
    net.train()
    torch.manual_seed(0)
    a = net(x).prediction
    assert not torch.allclose(a, ref)  # dropout on the concatenated (attended + skip) embeddings
    for b in range(2):
        assert torch.all(a[b, LENS[b]:] == 0)  # padding stays zero under dropout
    net.dropout.p = 0.0
    torch.testing.assert_close(net(x).prediction, ref)  # ... and nothing else is random


def _save_engine_ckpt(net, path):
    # the training engine's Lightning checkpoint: the model's weights under "model.", other keys beside
    state = {f"model.{k}": v for k, v in net.state_dict().items()}
    state["loss_fn.pos_weight"] = torch.ones(3)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "hyper_parameters": {"lr": 1e-3}}, path)


def test_load_state_falls_back_to_the_run_folders_best_then_last_checkpoint(tmp_path):
    from emofusion.models.mman import load_state

    torch.manual_seed(2)
    best = create_model("clstm_unimodal", DIMS, TASK, modality="text", hidden_dim=3, dense_dim=4)
    last = create_model("clstm_unimodal", DIMS, TASK, modality="text", hidden_dim=3, dense_dim=4)
    run = tmp_path / "run"
    _save_engine_ckpt(last, run / "checkpoints" / "last.ckpt")

    def same(state, net):
        assert set(state) == set(net.state_dict())
        for k, v in net.state_dict().items():
            torch.testing.assert_close(state[k], v)

    same(load_state(run), last)  # only last.ckpt: it is used
    _save_engine_ckpt(best, run / "checkpoints" / "best.ckpt")
    same(load_state(run), best)  # best.ckpt is preferred over last.ckpt
    # through the public API: a sub-network's pretrained weights from a run folder
    net = create_model("clstm_lf", DIMS, TASK, unimodal=dict(hidden_dim=3, dense_dim=4), pretrained={"text": run})
    same(net.subnets["text"].state_dict(), best)


def test_pretrained_self_loads_the_whole_model(tmp_path):
    opts = dict(mma=SMALL_MMA, unimodal=dict(hidden_dim=3, dense_dim=4, dropout=0.0))
    torch.manual_seed(3)
    donor = create_model("mman", DIMS, TASK, **opts)
    torch.save(donor.state_dict(), tmp_path / "whole.pt")
    torch.manual_seed(4)
    net = create_model("mman", DIMS, TASK, **opts, pretrained={"self": str(tmp_path / "whole.pt")})
    for k, v in donor.state_dict().items():
        torch.testing.assert_close(net.state_dict()[k], v)
    x = inputs(3)
    torch.testing.assert_close(net.eval()(x).prediction, donor.eval()(x).prediction)


def test_mman_reports_each_sub_networks_logits():
    torch.manual_seed(5)
    net = create_model("mman", DIMS, TASK, mma=SMALL_MMA, unimodal=dict(hidden_dim=3, dense_dim=4)).eval()
    x = inputs(5)
    sub = net(x).extras["subnet_logits"]
    assert list(sub) == ["mma", *DIMS]
    for name, logits in sub.items():
        assert logits.shape == (2, 6, 4)
        torch.testing.assert_close(logits, net.subnets[name](x).prediction)
    assert not torch.allclose(sub["audio"], sub["text"])


def test_clstm_mma_on_a_single_modality_is_the_clstm_over_attended_plus_embedded():
    # one modality: the attention has one key, so its weight is 1 and the module returns the value projection
    torch.manual_seed(9)
    dims = {"text": DIMS["text"]}
    net = create_model("clstm_mma", dims, TASK, **SMALL_MMA).eval()
    x = {"text": inputs(9)["text"]}
    out = net(x)
    assert out.extras["attention_modalities"] == ["text"]
    for b in range(2):
        L = LENS[b]
        torch.testing.assert_close(out.extras["attention"][b, :L], torch.ones(L, 1, 1))
        steps = []
        for t in range(L):
            e = torch.relu(lin(net.standardise["text"][0], x["text"][0][b, t]))
            steps.append(net.attention.value["text"].weight @ e + e)  # eq. 4 with one key + residual skip
        torch.testing.assert_close(out.prediction[b, :L], torch.stack(clstm(net.clstm, steps)), atol=1e-5,
                                   rtol=1e-4)
        assert torch.all(out.prediction[b, L:] == 0)
