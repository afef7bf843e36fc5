"""MARN (Zadeh et al. 2018; paper 001's Table 2 baseline): LSTHMs + Multi-attention Block, literally."""

from __future__ import annotations

import torch

from emofusion.models import create_model, list_models
from test_equations_rmfn import DIMS, TASK, batch, lin, lstm

SMALL = dict(hidden_dim=3, reduce_dim=2, z_dim=2, fuse_dim=5, head_dim=4, dropout=0.0, attentions=3)
LENGTHS = {"text": [4, 2], "audio": [4, 2], "visual": [4, 2]}


def mab(block, h):
    D, K = h.shape[0], block.K
    logits = lin(block.attention, h).view(K, D)
    a = torch.exp(logits) / torch.exp(logits).sum(1, keepdim=True)  # softmax over D per attention
    att = a * h  # [K, D]
    parts = []
    for m, (lo, hi) in block.slices.items():
        c = block.reduce[m][0]
        parts.append(torch.relu(lin(c, att[:, lo:hi].reshape(-1))))
    g1, g2 = block.fuse[0], block.fuse[3]
    return torch.tanh(lin(g2, torch.relu(lin(g1, torch.cat(parts))))), a


def test_marn_equals_literal_equations():
    assert "marn" in list_models()
    torch.manual_seed(0)
    model = create_model("marn", DIMS, TASK, **SMALL).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    x = batch(LENGTHS)
    out = model(x)
    mods = list(DIMS)
    bank, Hd = model.lsthm, 3
    for b in range(2):
        h = {m: torch.zeros(Hd) for m in mods}
        c = {m: torch.zeros(Hd) for m in mods}
        z = torch.zeros(2)
        atts = []
        for t in range(LENGTHS["text"][b]):
            for i, m in enumerate(mods):
                pre = lin(bank.W[m], x[m][0][b, t]) + bank.U[i].T @ h[m] + bank.V.weight[i * 12 : (i + 1) * 12] @ z
                h[m], c[m] = lstm(pre, c[m])
            z, a = mab(model.fusion, torch.cat([h[m] for m in mods]))
            atts.append(a)
        rep = torch.cat([h[m] for m in mods] + [z])
        torch.testing.assert_close(out.prediction[b], model.head(rep[None])[0], atol=1e-5, rtol=1e-4)
        L = LENGTHS["text"][b]
        torch.testing.assert_close(out.extras["attention"][b, :L], torch.stack(atts), atol=1e-5, rtol=1e-4)
    assert out.extras["attention"].shape == (2, 4, 3, 9)
    assert "highlight" not in out.extras


def test_marn_sizes_and_training_step():
    torch.manual_seed(1)
    model = create_model("marn", DIMS, TASK, **SMALL)
    assert model.fusion.attention.out_features == 3 * 9
    assert model.fusion.reduce["audio"][0].in_features == 3 * 3 and model.fusion.fuse[0].in_features == 3 * 2
    out = model(batch(LENGTHS))
    out.prediction.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
