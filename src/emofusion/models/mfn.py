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

Fast and exact: the LSTMs do not depend on the memory, so each runs as one fused ``nn.LSTM`` over the whole
sequence; the cell states it does not return are rebuilt from its outputs (gate pre-activations for all steps
in one matmul, then ``c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t``); the DMAN, the proposal and the ĉ-part of the gates
run for all steps at once; only the memory recurrence (the u-part of the gates) is a loop. Padding: inputs are
zeroed past each length, the LSTMs are causal, the memory holds after the last real step and the final LSTM
state is read at the last real step, so padding never reaches the output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from emofusion.data.batch import ModelInputs
from emofusion.models.base import FusionModel, ModelOutput
from emofusion.models.layers import align_to_common_axis, last_valid
from emofusion.models.registry import register_model
from emofusion.models.tfn import _per_modality
from emofusion.tasks import TaskSpec

# MMSA 2.2.1 MOSEI defaults (config_regression.json, "mfn")
DEFAULT_HIDDEN = {"text": 128, "audio": 32, "visual": 128}
FALLBACK_HIDDEN = 64


class TwoLayer(nn.Module):
    """``D(x) = W2 dropout(relu(W1 x))`` (output activation applied by the caller)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, output_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


def _drop(layer: nn.Dropout, x: torch.Tensor) -> torch.Tensor:
    # inside the per-step loop every skipped op counts
    return layer(x) if layer.training and layer.p > 0 else x


@register_model("mfn")
class MemoryFusionNetwork(FusionModel):
    """MFN: system of LSTMs -> delta-memory attention over [c_{t-1}; c_t] -> multi-view gated memory.

    Options (defaults = MMSA's MOSEI config): ``hidden_dims`` (int or {modality: int}; text 128, audio 32,
    visual 128), ``mem_dim`` (128), ``attn_dim`` / ``attn_dropout`` (D_a: 128 / 0.2), ``proposal_dim`` /
    ``proposal_dropout`` (D_u: 128 / 0.5), ``gamma1_dim`` / ``gamma1_dropout`` (256 / 0.7), ``gamma2_dim`` /
    ``gamma2_dropout`` (256 / 0.0), ``out_dim`` / ``out_dropout`` (128 / 0.5), ``gates_see_memory`` (true: the
    gates read ``[ĉ; u_{t-1}]`` as the authors' code; false: ``ĉ`` only), ``reference`` (time axis; default
    ``text`` if present, else the first modality).
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
        gates = F.linear(x, lstm.weight_ih_l0, lstm.bias_ih_l0) + F.linear(
            h_prev, lstm.weight_hh_l0, lstm.bias_hh_l0
        )
        i, f, g, _ = gates.chunk(4, dim=-1)
        return h, torch.sigmoid(f), torch.sigmoid(i) * torch.tanh(g)

    def forward(self, inputs: ModelInputs) -> ModelOutput:
        inputs = self.check_inputs(inputs)
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

        hs, fs, igs = [], [], []
        for m in self.modalities:
            # zero the padding: it then stays finite, and the causal LSTM never lets it reach a real step
            h, f, ig = self._run_lstm(m, torch.where(mask.unsqueeze(-1), aligned[m], 0.0))
            hs.append(h)
            fs.append(f)
            igs.append(ig)
        f, ig = torch.cat(fs, -1), torch.cat(igs, -1)  # [B, T, sum H]
        cells = []
        c = f.new_zeros(batch, f.shape[-1])
        # unbind once: indexing [:, t] in the loop would make backward fill a full-size zero tensor per step
        for f_t, ig_t in zip(f.unbind(1), ig.unbind(1)):
            c = torch.addcmul(ig_t, f_t, c)
            cells.append(c)
        c_seq = torch.stack(cells, 1)  # padded steps hold garbage that nothing reads
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
        w_u = torch.cat([g1.fc1.weight[:, window:], g2.fc1.weight[:, window:]], 0).t()  # [mem, h1 + h2]
        mems, gam1, gam2 = [], [], []
        for pre_t, p_t, m_t in zip(pre.unbind(1), proposal.unbind(1), masks):
            r = F.relu(torch.addmm(pre_t, u, w_u))
            a1 = torch.sigmoid(g1.fc2(_drop(g1.dropout, r[:, :h1])))
            a2 = torch.sigmoid(g2.fc2(_drop(g2.dropout, r[:, h1:])))
            # hold the memory after the last real step
            u = torch.where(m_t, torch.addcmul(a1 * u, a2, p_t), u)
            mems.append(u)
            gam1.append(a1)
            gam2.append(a2)
        return torch.stack(mems, 1), torch.stack(gam1, 1), torch.stack(gam2, 1)
