"""Memory Fusion Network (Zadeh, Liang, Mazumder, Poria, Cambria & Morency, AAAI 2018).

* System of LSTMs: one LSTM per modality (view), ``h_t^m, c_t^m = LSTM^m(x_t^m; h_{t-1}^m, c_{t-1}^m)``.
* Delta-memory Attention Network (DMAN) over the cell states of two consecutive steps,
  ``c^[t-1,t] = [c_{t-1}; c_t]`` (all modalities concatenated):
  ``a^[t-1,t] = softmax(D_a(c^[t-1,t]))``, ``ĉ^[t-1,t] = c^[t-1,t] ⊙ a^[t-1,t]``.
* Multi-view Gated Memory: proposal ``û_t = tanh(D_u(ĉ))``, retain / update gates
  ``γ1_t = σ(D_γ1([ĉ; u_{t-1}]))``, ``γ2_t = σ(D_γ2([ĉ; u_{t-1}]))``, memory ``u_t = γ1_t ⊙ u_{t-1} + γ2_t ⊙ û_t``.
* Output from ``[h_T^1; ...; h_T^M; u_T]`` through a 2-layer network.

Every ``D`` is a 2-layer network (ReLU hidden layer with dropout). MFN needs one time axis: on unaligned input
every modality is resampled (nearest neighbour, ``resample_to_lengths``) onto the steps of a reference
modality (``text`` when present), as ``early_fusion_lstm`` does; on word-aligned input nothing changes.

Fast and exact: the LSTMs do not depend on the memory, so they run before it over the whole sequence, all
modalities stepped together (``GroupedLSTM``: input projections for all steps at once, one batched matmul a
step, hand-written backward; ``grouped_lstms=false``: one fused ``nn.LSTM`` per modality with the cell states it
does not return rebuilt from its outputs); the DMAN, the proposal and the ĉ-part of the gates run for all steps
at once; only the memory recurrence (the u-part of the gates) is a loop (``GatedMemory``, hand-written backward). Padding: inputs are
zeroed past each length, the LSTMs are causal, the memory holds after the last real step and the final LSTM
state is read at the last real step, so padding never reaches the output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from emofusion.data.batch import ModalityTensor, ModelInputs
from emofusion.models.base import FusionModel, ModelOutput
from emofusion.models.layers import align_to_common_axis, last_valid
from emofusion.models.registry import register_model
from emofusion.models.tfn import _per_modality
from emofusion.tasks import TaskSpec

# MMSA 2.2.1 MOSEI defaults (config_regression.json, "mfn")
DEFAULT_HIDDEN = {"text": 128, "audio": 32, "visual": 128}
FALLBACK_HIDDEN = 64


def _at_least_one_step(values: torch.Tensor, mask: torch.Tensor):
    """A modality with no step in the whole batch gets one masked zero step (an empty sequence either way)."""
    if values.shape[1] > 0:
        return values, mask
    return values.new_zeros(values.shape[0], 1, values.shape[2]), mask.new_zeros(mask.shape[0], 1)


class TwoLayer(nn.Module):
    """``D(x) = W2 dropout(relu(W1 x))`` (output activation applied by the caller)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, output_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


@register_model("mfn")
class MemoryFusionNetwork(FusionModel):
    """MFN: system of LSTMs -> delta-memory attention over [c_{t-1}; c_t] -> multi-view gated memory.

    Options (defaults = MMSA's MOSEI config): ``hidden_dims`` (int or {modality: int}; text 128, audio 32,
    visual 128), ``mem_dim`` (128), ``attn_dim`` / ``attn_dropout`` (D_a: 128 / 0.2), ``proposal_dim`` /
    ``proposal_dropout`` (D_u: 128 / 0.5), ``gamma1_dim`` / ``gamma1_dropout`` (256 / 0.7), ``gamma2_dim`` /
    ``gamma2_dropout`` (256 / 0.0), ``out_dim`` / ``out_dropout`` (128 / 0.5), ``gates_see_memory`` (true: the
    gates read ``[ĉ; u_{t-1}]`` as the authors' code; false: ``ĉ`` only), ``reference`` (time axis; default
    ``text`` if present, else the first modality), ``grouped_lstms`` (true: ``GroupedLSTM``; false: fused
    ``nn.LSTM`` per modality with rebuilt cell states; the same function).
    Extras: ``attention`` ``[B, T, 2 sum H]`` (rows sum to 1 at real steps), ``gamma1``, ``gamma2``, ``memory``
    ``[B, T, mem]``, ``time_mask`` ``[B, T]``, ``representation``, ``alignment``.
    """

    def __init__(
        self,
        modality_dims: dict[str, int],
        task: TaskSpec,
        hidden_dims=None,
        mem_dim: int = 128,
        attn_dim: int = 128,
        attn_dropout: float = 0.2,
        proposal_dim: int = 128,
        proposal_dropout: float = 0.5,
        gamma1_dim: int = 256,
        gamma1_dropout: float = 0.7,
        gamma2_dim: int = 256,
        gamma2_dropout: float = 0.0,
        out_dim: int = 128,
        out_dropout: float = 0.5,
        gates_see_memory: bool = True,
        reference: str | None = None,
        grouped_lstms: bool = True,
    ):
        super().__init__(modality_dims, task)
        if reference is not None and reference not in modality_dims:
            raise ValueError(f"mfn: reference modality {reference!r} not among {list(modality_dims)}")
        self.reference = reference or ("text" if "text" in modality_dims else self.modalities[0])
        hidden = _per_modality(hidden_dims, self.modalities, "hidden_dims", DEFAULT_HIDDEN, FALLBACK_HIDDEN)
        self.hidden = {m: int(hidden[m]) for m in self.modalities}
        self.lstms = nn.ModuleDict(
            {m: nn.LSTM(d, self.hidden[m], batch_first=True) for m, d in modality_dims.items()}
        )
        total = sum(self.hidden.values())
        self.mem_dim = int(mem_dim)
        self.gates_see_memory = bool(gates_see_memory)
        # true: GroupedLSTM (own recurrence, every cell state kept); false: nn.LSTM + cell states rebuilt
        self.grouped_lstms = bool(grouped_lstms)
        window = 2 * total  # [c_{t-1}; c_t]
        gate_in = window + (self.mem_dim if self.gates_see_memory else 0)
        self.attention = TwoLayer(window, int(attn_dim), window, float(attn_dropout))
        self.proposal = TwoLayer(window, int(proposal_dim), self.mem_dim, float(proposal_dropout))
        self.gamma1 = TwoLayer(gate_in, int(gamma1_dim), self.mem_dim, float(gamma1_dropout))
        self.gamma2 = TwoLayer(gate_in, int(gamma2_dim), self.mem_dim, float(gamma2_dropout))
        self.head = TwoLayer(total + self.mem_dim, int(out_dim), self.output_dim, float(out_dropout))

    # ------------------------------------------------------------------ system of LSTMs
    def _run_lstm(self, m: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-step outputs h ``[B, T, H]`` and the forget / input terms of the cell recurrence."""
        lstm = self.lstms[m]
        h, _ = lstm(x)
        # the cell states nn.LSTM keeps internal: gates from x_t and h_{t-1} for all steps at once (same weights)
        h_prev = F.pad(h[:, :-1], (0, 0, 1, 0))
        # only the input, forget and cell gates (PyTorch's order is i, f, g, o): the output gate is not needed
        n = 3 * lstm.hidden_size
        gates = torch.addmm(
            lstm.bias_ih_l0[:n] + lstm.bias_hh_l0[:n], x.flatten(0, 1), lstm.weight_ih_l0[:n].t()
        )
        gates = torch.addmm(gates, h_prev.flatten(0, 1), lstm.weight_hh_l0[:n].t()).view(*x.shape[:2], n)
        i, f, g = gates.chunk(3, dim=-1)
        return h, torch.sigmoid(f), torch.sigmoid(i) * torch.tanh(g)

    def _lstms_with_cells(self, xs):
        """Training path: fused ``nn.LSTM`` per modality, cell states rebuilt from its outputs."""
        # zeroed padding stays finite, and the causal LSTM never lets it reach a real step
        hs, fs, igs = [], [], []
        for m, x in zip(self.modalities, xs):
            h, f, ig = self._run_lstm(m, x)
            hs.append(h)
            fs.append(f)
            igs.append(ig)
        f, ig = torch.cat(fs, -1), torch.cat(igs, -1)  # [B, T, sum H]
        cells = []
        c = f.new_zeros(f.shape[0], f.shape[-1])
        # unbind once: indexing [:, t] in the loop would make backward fill a full-size zero tensor per step
        for f_t, ig_t in zip(f.unbind(1), ig.unbind(1)):
            c = torch.addcmul(ig_t, f_t, c)
            cells.append(c)
        return hs, torch.stack(cells, 1)  # padded steps hold garbage that nothing reads

    def _grouped_weights(self, xs):
        """Input projections for all steps ``[G, T, B, 4 Hmax]`` and recurrent weights ``[G, Hmax, 4 Hmax]``.

        Hidden sizes are padded to the largest (gate layout i, f, g, o, each Hmax wide); padded units get zero
        weights and bias, so their gates give c = 0.5 * 0 + 0.5 * tanh(0) = 0 and h = 0 at every step.
        Built with differentiable ops (pad, stack), so gradients reach the ``nn.LSTM`` parameters.
        """
        sizes = [self.hidden[m] for m in self.modalities]
        hmax = max(sizes)
        projs, whhs = [], []
        for m, x, h in zip(self.modalities, xs, sizes):
            lstm = self.lstms[m]
            gx = F.linear(
                x.transpose(0, 1), lstm.weight_ih_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0
            )  # [T, B, 4h]
            projs.append(F.pad(gx.unflatten(-1, (4, h)), (0, hmax - h)).flatten(-2))
            w = lstm.weight_hh_l0.t().unflatten(-1, (4, h))  # [h_in, 4, h_out]
            whhs.append(F.pad(w, (0, hmax - h, 0, 0, 0, hmax - h)).flatten(-2))
        return torch.stack(projs), torch.stack(whhs), sizes

    def _lstms_grouped(self, xs):
        """All modalities' LSTMs stepped together (one batched matmul a step), keeping every cell state."""
        proj, w_hh, sizes = self._grouped_weights(xs)
        h_all, c_all = GroupedLSTM.apply(proj, w_hh)  # [T, G, B, Hmax]
        h_all, c_all = h_all.permute(1, 2, 0, 3), c_all.permute(1, 2, 0, 3)  # [G, B, T, Hmax]
        return [h_all[k, ..., :h] for k, h in enumerate(sizes)], torch.cat(
            [c_all[k, ..., :h] for k, h in enumerate(sizes)], dim=-1
        )

    def forward(self, inputs: ModelInputs) -> ModelOutput:
        device = next(iter(inputs.values()))[0].device.type
        if torch.is_autocast_enabled(device):
            # the hand-written recurrences (GroupedLSTM, GatedMemory) have no mixed-precision path: under
            # bf16-mixed autocast the whole model runs in fp32 (it used to fail on a bf16 x fp32 matmul)
            with torch.autocast(device, enabled=False):
                return self.forward({m: ModalityTensor(t[0].float(), t[1]) for m, t in inputs.items()})
        inputs = {m: _at_least_one_step(*t) for m, t in self.check_inputs(inputs).items()}
        lengths = {m: inputs[m][1].sum(1) for m in self.modalities}
        same = all(torch.equal(lengths[m], lengths[self.reference]) for m in self.modalities) and all(
            inputs[m][0].shape[1] == inputs[self.reference][0].shape[1] for m in self.modalities
        )
        if same and all(torch.equal(inputs[m][1], inputs[self.reference][1]) for m in self.modalities):
            aligned, mask = {m: inputs[m][0] for m in self.modalities}, inputs[self.reference][1]
            alignment = "given"
        else:
            aligned, mask = align_to_common_axis(inputs, self.modalities, self.reference)
            alignment = f"resampled:{self.reference}"
        maskf = mask.unsqueeze(-1).to(aligned[self.reference].dtype)
        batch, steps = mask.shape

        zeroed = [torch.where(mask.unsqueeze(-1), aligned[m], 0.0) for m in self.modalities]
        if self.grouped_lstms:
            hs, c_seq = self._lstms_grouped(zeroed)
        else:
            hs, c_seq = self._lstms_with_cells(zeroed)
        c_prev = F.pad(c_seq[:, :-1], (0, 0, 1, 0))

        # DMAN and the memory proposal, every step at once
        cstar = torch.cat([c_prev, c_seq], dim=-1)
        attention = torch.softmax(self.attention(cstar), dim=-1)
        chat = attention * cstar
        proposal = torch.tanh(self.proposal(chat))

        memory, gamma1, gamma2 = self._memory(chat, proposal, mask)
        u_final = memory[:, -1]
        finals = [last_valid(h, mask) for h in hs]
        representation = torch.cat(finals + [u_final], dim=-1)
        prediction = self.bound_output(self.head(representation))
        time_mask = mask
        extras = {
            "attention": attention * maskf,
            "gamma1": gamma1 * maskf,
            "gamma2": gamma2 * maskf,
            "memory": memory * maskf,
            "time_mask": time_mask,
            "representation": representation,
            "alignment": alignment,
        }
        return ModelOutput(prediction, extras)

    # ------------------------------------------------------------------ multi-view gated memory
    def _memory(self, chat, proposal, mask):
        g1, g2 = self.gamma1, self.gamma2
        window = chat.shape[-1]
        batch, steps = mask.shape
        # the ĉ-part of both gates' first layer for all steps in one matmul
        w_c = torch.cat([g1.fc1.weight[:, :window], g2.fc1.weight[:, :window]], 0)
        b_c = torch.cat([g1.fc1.bias, g2.fc1.bias])
        pre = F.linear(chat, w_c, b_c)  # [B, T, h1 + h2]
        h1 = g1.fc1.out_features
        u = chat.new_zeros(batch, self.mem_dim)
        masks = mask.unsqueeze(-1).unbind(1)
        if not self.gates_see_memory:
            gamma1 = torch.sigmoid(g1.fc2(g1.dropout(F.relu(pre[..., :h1]))))
            gamma2 = torch.sigmoid(g2.fc2(g2.dropout(F.relu(pre[..., h1:]))))
            mems = []
            for g1_t, g2_t, p_t, m_t in zip(gamma1.unbind(1), gamma2.unbind(1), proposal.unbind(1), masks):
                u = torch.where(m_t, torch.addcmul(g1_t * u, g2_t, p_t), u)
                mems.append(u)
            return torch.stack(mems, 1), gamma1, gamma2
        w_u = torch.cat([g1.fc1.weight[:, window:], g2.fc1.weight[:, window:]], 0)  # [h1 + h2, mem]
        keep1 = _dropout_keep(g1.dropout, pre[..., :h1])
        keep2 = _dropout_keep(g2.dropout, pre[..., h1:])
        return GatedMemory.apply(
            pre, proposal, mask, w_u, g1.fc2.weight, g1.fc2.bias, g2.fc2.weight, g2.fc2.bias, keep1, keep2
        )


def _dropout_keep(layer: nn.Dropout, like: torch.Tensor) -> torch.Tensor | None:
    """Scaled keep-mask for every step at once (the same distribution as one dropout call per step)."""
    if not layer.training or layer.p == 0:
        return None
    return torch.empty_like(like).bernoulli_(1.0 - layer.p).div_(1.0 - layer.p)


class GatedMemory(torch.autograd.Function):
    """The multi-view gated memory recurrence with a hand-written backward through time.

    Forward, for t = 1..T (``pre_t`` = the ĉ-part of both gates' first layer, computed for all steps before):
    ``r_t = relu(pre_t + W_u u_{t-1})``, ``γ_k = σ(W2_k (r_t[k] ⊙ keep_k) + b2_k)``,
    ``u_t = γ1 ⊙ u_{t-1} + γ2 ⊙ û_t`` at real steps, ``u_t = u_{t-1}`` after the last one.
    Autograd would record ~15 small ops a step and compute every weight gradient once per step; here the
    backward loop carries only what is sequential (dL/du) and the weight gradients are one matmul each over all
    steps. Checked against autograd (``gradcheck``) and against a step-by-step MFN in the tests.
    """

    @staticmethod
    def forward(ctx, pre, proposal, mask, w_u, w21, b21, w22, b22, keep1, keep2):
        batch, steps, _ = pre.shape
        h1 = w21.shape[1]
        u = pre.new_zeros(batch, w_u.shape[1])
        w_u_t = w_u.t()
        mems, prev, rs, gam1, gam2 = [], [], [], [], []
        masks = mask.unsqueeze(-1).unbind(1)
        for t, (pre_t, p_t, m_t) in enumerate(zip(pre.unbind(1), proposal.unbind(1), masks)):
            r = torch.relu(torch.addmm(pre_t, u, w_u_t))
            r1, r2 = r[:, :h1], r[:, h1:]
            if keep1 is not None:
                r1 = r1 * keep1[:, t]
            if keep2 is not None:
                r2 = r2 * keep2[:, t]
            a1 = torch.sigmoid(torch.addmm(b21, r1, w21.t()))
            a2 = torch.sigmoid(torch.addmm(b22, r2, w22.t()))
            prev.append(u)
            u = torch.where(m_t, torch.addcmul(a1 * u, a2, p_t), u)
            mems.append(u)
            rs.append(r)
            gam1.append(a1)
            gam2.append(a2)
        memory, gamma1, gamma2 = torch.stack(mems, 1), torch.stack(gam1, 1), torch.stack(gam2, 1)
        ctx.save_for_backward(
            proposal,
            mask,
            w_u,
            w21,
            w22,
            keep1,
            keep2,
            torch.stack(prev, 1),
            torch.stack(rs, 1),
            gamma1,
            gamma2,
        )
        ctx.set_materialize_grads(False)
        return memory, gamma1, gamma2

    @staticmethod
    def backward(ctx, d_memory, d_gamma1, d_gamma2):
        proposal, mask, w_u, w21, w22, keep1, keep2, prev, r, gamma1, gamma2 = ctx.saved_tensors
        batch, steps, mem = prev.shape
        h1 = w21.shape[1]
        # everything that does not depend on the carried gradient, for all steps at once
        r1, r2 = r[..., :h1], r[..., h1:]
        gate1 = (r1 > 0).to(r.dtype) if keep1 is None else (r1 > 0).to(r.dtype) * keep1
        gate2 = (r2 > 0).to(r.dtype) if keep2 is None else (r2 > 0).to(r.dtype) * keep2
        s1 = gamma1 * (1 - gamma1)
        s2 = gamma2 * (1 - gamma2)
        maskf = mask.unsqueeze(-1).to(prev.dtype)
        du = prev.new_zeros(batch, mem)
        dz1, dz2 = torch.empty_like(gamma1), torch.empty_like(gamma2)
        dpre, dps = r.new_empty(r.shape), torch.empty_like(proposal)
        dpre1, dpre2 = dpre[..., :h1], dpre[..., h1:]
        for t in range(steps - 1, -1, -1):
            if d_memory is not None:
                du = du + d_memory[:, t]
            m_t = maskf[:, t]
            du_new = du * m_t
            da1 = du_new * prev[:, t]
            da2 = du_new * proposal[:, t]
            if d_gamma1 is not None:
                da1 = da1 + d_gamma1[:, t]
            if d_gamma2 is not None:
                da2 = da2 + d_gamma2[:, t]
            torch.mul(du_new, gamma2[:, t], out=dps[:, t])
            dz1_t = torch.mul(da1, s1[:, t], out=dz1[:, t])
            dz2_t = torch.mul(da2, s2[:, t], out=dz2[:, t])
            torch.mul(dz1_t @ w21, gate1[:, t], out=dpre1[:, t])
            torch.mul(dz2_t @ w22, gate2[:, t], out=dpre2[:, t])
            # through the hold (1 - m), the retain gate, and the gates' first layer
            du = torch.addmm(du - du_new + du_new * gamma1[:, t], dpre[:, t], w_u)
        rd1 = r1 if keep1 is None else r1 * keep1
        rd2 = r2 if keep2 is None else r2 * keep2
        flat = lambda x: x.reshape(-1, x.shape[-1])  # noqa: E731
        d_w_u = flat(dpre).t() @ flat(prev)
        d_w21, d_b21 = flat(dz1).t() @ flat(rd1), dz1.sum((0, 1))
        d_w22, d_b22 = flat(dz2).t() @ flat(rd2), dz2.sum((0, 1))
        return dpre, dps, None, d_w_u, d_w21, d_b21, d_w22, d_b22, None, None


class GroupedLSTM(torch.autograd.Function):
    """G independent LSTMs of equal (padded) size stepped together, returning every h_t and c_t.

    ``proj`` ``[G, T, B, 4H]``: input projections plus biases for all steps; ``w_hh`` ``[G, H, 4H]``: recurrent
    weights (gate order i, f, g, o). Forward: ``gates = proj_t + h_{t-1} W``, ``c_t = f c_{t-1} + i g``,
    ``h_t = o tanh(c_t)``, one batched matmul a step. Backward through time by hand: the loop carries dL/dh and
    dL/dc only; the recurrent-weight gradient is one batched matmul over all steps. Outputs ``[T, G, B, H]``.
    """

    @staticmethod
    def forward(ctx, proj, w_hh):
        groups, steps, batch, four_h = proj.shape
        hidden = four_h // 4
        # every per-step result is written into its slot of a preallocated [T, ...] buffer (no list + stack)
        h_all = proj.new_empty(steps, groups, batch, hidden)
        c_all, g_all, tc_all = torch.empty_like(h_all), torch.empty_like(h_all), torch.empty_like(h_all)
        sig_all = proj.new_empty(steps, groups, batch, four_h)
        h = proj.new_zeros(groups, batch, hidden)
        c = proj.new_zeros(groups, batch, hidden)
        for t, p_t in enumerate(proj.unbind(1)):
            gates = torch.baddbmm(p_t, h, w_hh)
            sig = torch.sigmoid(gates, out=sig_all[t])
            i, f, _, o = sig.chunk(4, dim=-1)
            g = torch.tanh(gates[..., 2 * hidden : 3 * hidden], out=g_all[t])
            c = torch.addcmul(f * c, i, g, out=c_all[t])
            tc = torch.tanh(c, out=tc_all[t])
            h = torch.mul(o, tc, out=h_all[t])
        ctx.save_for_backward(w_hh, h_all, c_all, sig_all, g_all, tc_all)
        ctx.set_materialize_grads(False)
        return h_all, c_all

    @staticmethod
    def backward(ctx, d_h_all, d_c_all):
        w_hh, h_all, c_all, sig, g_all, tc_all = ctx.saved_tensors
        steps, groups, batch, hidden = h_all.shape
        w_t = w_hh.transpose(1, 2)
        i_all, f_all, _, o_all = sig.chunk(4, dim=-1)
        # the parts of the local derivatives that do not depend on the carried gradient, all steps at once
        di_local = i_all * (1 - i_all) * g_all  # dL/d(i preact) per unit of dL/dc
        dg_local = i_all * (1 - g_all * g_all)
        c_prev = torch.cat([c_all.new_zeros(1, groups, batch, hidden), c_all[:-1]])
        df_local = f_all * (1 - f_all) * c_prev
        do_local = o_all * (1 - o_all) * tc_all
        dtanh = o_all * (1 - tc_all * tc_all)
        dh = h_all.new_zeros(groups, batch, hidden)
        dc = h_all.new_zeros(groups, batch, hidden)
        dgates = sig.new_empty(sig.shape)  # [T, G, B, 4H], filled step by step
        di_all, df_all, dg_all, do_all = dgates.chunk(4, dim=-1)
        for t in range(steps - 1, -1, -1):
            if d_h_all is not None:
                dh = dh + d_h_all[t]
            dc = torch.addcmul(dc, dh, dtanh[t])
            if d_c_all is not None:
                dc = dc + d_c_all[t]
            torch.mul(dc, di_local[t], out=di_all[t])
            torch.mul(dc, df_local[t], out=df_all[t])
            torch.mul(dc, dg_local[t], out=dg_all[t])
            torch.mul(dh, do_local[t], out=do_all[t])
            dh = torch.bmm(dgates[t], w_t)
            dc = dc * f_all[t]
        h_prev = torch.cat([h_all.new_zeros(1, groups, batch, hidden), h_all[:-1]])
        d_w = torch.bmm(
            h_prev.transpose(0, 1).flatten(1, 2).transpose(1, 2), dgates.transpose(0, 1).flatten(1, 2)
        )
        return dgates.transpose(0, 1), d_w
