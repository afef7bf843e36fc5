"""MMAN: multi-modal attention network with conversational context (paper 004, §2 and §3.3).

Input is one conversation per sample: every modality is ``[B, T_utt, D_m]`` with one vector per utterance
(the time axis is the utterance index) and the predictions are per-utterance logits ``[B, T_utt, C]``.

* ``clstm_unimodal``: cLSTM block (two LSTM layers) over one modality (cLSTM-Speech/-Visual/-Text).
* ``clstm_ef``: concatenated modalities -> two-layer cLSTM (baseline cLSTM-EF).
* ``clstm_mma``: per-modality dense standardisation to ``d_model`` (§2.1.1); one directional multi-modal
  attention module per query modality, query from that modality (eq. 1), keys and values from all
  modalities including itself (eq. 2-3), scaled dot-product softmax (eq. 4); module outputs concatenated
  with a skip connection; one-layer cLSTM.
* ``clstm_lf``: unimodal cLSTMs, their predictions concatenated -> another cLSTM (baseline cLSTM-LF).
* ``mman``: predictions of cLSTM-MMA and the unimodal cLSTMs -> dense + softmax (late fusion).

Context is unidirectional by default (the paper stresses that it never reads future utterances);
``bidirectional=True`` gives the bc-LSTM-style variant. Hierarchical models (``clstm_lf``, ``mman``) have
``stage="fusion"`` (sub-networks frozen, loaded from ``pretrained``; the paper's protocol) or
``stage="joint"`` (everything trains; with ``pretrained`` this is joint fine-tuning). :func:`emofusion.training.protocols.train_mman`
runs the whole protocol through the training engine.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from emofusion.data.batch import ModelInputs
from emofusion.models.base import FusionModel, ModelOutput
from emofusion.models.layers import SequenceEncoder, masked_softmax
from emofusion.models.registry import register_model
from emofusion.tasks import TaskSpec

STATE_FILE = "model_state.pt"


def utterance_mask(model: FusionModel, inputs: ModelInputs) -> tuple[dict, torch.Tensor]:
    """Checked inputs and the shared utterance mask ``[B, T]``: every modality must have one vector per
    utterance, so all modalities need the same per-conversation lengths."""
    checked = model.check_inputs(inputs)
    mask = None
    for m, (_values, m_mask) in checked.items():
        if mask is None:
            ref, mask = m, m_mask
            continue
        if m_mask.shape != mask.shape or not torch.equal(m_mask, mask):
            raise ValueError(
                f"{type(model).__name__}: modality {m!r} does not have one vector per utterance like {ref!r} "
                f"(lengths {m_mask.sum(1).tolist()} vs {mask.sum(1).tolist()}); conversation models need "
                "utterance-level features"
            )
    return checked, mask


class ContextLSTM(nn.Module):
    """The cLSTM block (Poria et al. 2017, paper 004 [13]): LSTM over the utterances of a conversation,
    a dense ReLU layer per utterance, a linear classifier. Packed, so padding never enters the recurrence;
    unidirectional, so utterance t only sees utterances <= t."""

    def __init__(
        self, input_dim, hidden_dim, num_layers, num_classes, dense_dim=0, bidirectional=False, dropout=0.0
    ):
        super().__init__()
        self.encoder = SequenceEncoder(input_dim, hidden_dim, num_layers, bidirectional, dropout)
        self.dropout = nn.Dropout(dropout)
        layers: list[nn.Module] = []
        width = self.encoder.output_dim
        if dense_dim:
            layers += [nn.Linear(width, dense_dim), nn.ReLU(), nn.Dropout(dropout)]
            width = dense_dim
        layers.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        steps, _ = self.encoder(x, mask)
        logits = self.classifier(self.dropout(steps))
        return logits * mask.unsqueeze(-1).to(logits.dtype)


def _check_classification(name: str, task: TaskSpec):
    if task.kind != "classification":
        raise ValueError(f"{name} predicts classes per utterance; got a {task.kind!r} task")


@register_model("clstm_unimodal")
class CLSTMUnimodal(FusionModel):
    """cLSTM-Speech / cLSTM-Visual / cLSTM-Text: a two-layer cLSTM over one modality (§2.2, §3.3)."""

    def __init__(
        self,
        modality_dims: dict[str, int],
        task: TaskSpec,
        modality: str | None = None,
        hidden_dim: int = 64,
        num_layers: int = 2,
        dense_dim: int = 64,
        bidirectional: bool = False,
        dropout: float = 0.2,
    ):
        _check_classification("clstm_unimodal", task)
        if modality is not None:
            if modality not in modality_dims:
                raise ValueError(f"clstm_unimodal: modality {modality!r} not among {list(modality_dims)}")
            modality_dims = {modality: modality_dims[modality]}
        if len(modality_dims) != 1:
            raise ValueError(
                f"clstm_unimodal takes exactly one modality, got {list(modality_dims)}; pass modality=NAME"
            )
        super().__init__(modality_dims, task)
        (dim,) = modality_dims.values()
        self.clstm = ContextLSTM(
            dim, hidden_dim, num_layers, self.output_dim, dense_dim, bidirectional, dropout
        )

    def forward(self, inputs: ModelInputs) -> ModelOutput:
        checked, mask = utterance_mask(self, inputs)
        (values, _) = checked[self.modalities[0]]
        return ModelOutput(self.clstm(values, mask))


@register_model("clstm_ef")
class CLSTMEarlyFusion(FusionModel):
    """cLSTM-EF: concatenated utterance features -> two-layer cLSTM (§3.3)."""

    def __init__(
        self,
        modality_dims: dict[str, int],
        task: TaskSpec,
        hidden_dim: int = 64,
        num_layers: int = 2,
        dense_dim: int = 64,
        bidirectional: bool = False,
        dropout: float = 0.2,
    ):
        _check_classification("clstm_ef", task)
        super().__init__(modality_dims, task)
        self.clstm = ContextLSTM(
            sum(modality_dims.values()),
            hidden_dim,
            num_layers,
            self.output_dim,
            dense_dim,
            bidirectional,
            dropout,
        )

    def forward(self, inputs: ModelInputs) -> ModelOutput:
        checked, mask = utterance_mask(self, inputs)
        fused = torch.cat([checked[m].values for m in self.modalities], dim=-1)
        return ModelOutput(self.clstm(fused, mask))


class MultiModalAttention(nn.Module):
    """Parallel directional multi-modal attention modules ``m -> (all modalities)`` (§2.1.2, eq. 1-4).

    Per utterance, the module for query modality ``q`` attends over one key/value per modality (itself
    included): ``z_q = softmax(q_q K^T / sqrt(d_k)) V`` with ``K, V`` stacking ``W_mk^T m̂`` and
    ``W_mv^T m̂`` over modalities ``m``. Reading of the paper: eq. 2-3 write ``W_sk, W_vk, W_tk`` without a
    module index and §2.1.2 says each module has "its own learnable weights computing the query", so the
    key/value projections are shared by the modules and only the queries are per module
    (``shared_kv=False`` gives every module its own keys and values).
    """

    def __init__(self, modalities, d_model: int, d_k: int, d_v: int, shared_kv: bool = True):
        super().__init__()
        self.modalities = list(modalities)
        self.d_k = d_k
        self.shared_kv = shared_kv
        self.query = nn.ModuleDict({m: nn.Linear(d_model, d_k, bias=False) for m in self.modalities})

        def projections(width):
            return nn.ModuleDict({m: nn.Linear(d_model, width, bias=False) for m in self.modalities})

        if shared_kv:
            self.key, self.value = projections(d_k), projections(d_v)
        else:
            self.key = nn.ModuleDict({q: projections(d_k) for q in self.modalities})
            self.value = nn.ModuleDict({q: projections(d_v) for q in self.modalities})

    def forward(self, embedded: dict[str, torch.Tensor], present: torch.Tensor | None = None):
        """``embedded[m]``: ``[B, T, d_model]``. ``present`` ``[B, T, M]`` bool marks usable keys (all True
        by default). Returns ``{q: z_q [B, T, d_v]}`` and the weights ``[B, T, M_query, M_key]``."""
        outputs, weights = {}, []
        for q in self.modalities:
            key_proj = self.key if self.shared_kv else self.key[q]
            value_proj = self.value if self.shared_kv else self.value[q]
            query = self.query[q](embedded[q])  # eq. 1: [B, T, d_k]
            keys = torch.stack(
                [key_proj[m](embedded[m]) for m in self.modalities], dim=-2
            )  # eq. 2: [B,T,M,d_k]
            values = torch.stack([value_proj[m](embedded[m]) for m in self.modalities], dim=-2)  # eq. 3
            scores = (keys @ query.unsqueeze(-1)).squeeze(-1) / math.sqrt(self.d_k)  # [B, T, M]
            if present is None:
                attn = torch.softmax(scores, dim=-1)
            else:
                attn = masked_softmax(scores, present)
            outputs[q] = (attn.unsqueeze(-1) * values).sum(-2)  # eq. 4
            weights.append(attn)
        return outputs, torch.stack(weights, dim=-2)


@register_model("clstm_mma")
class CLSTMMMA(FusionModel):
    """cLSTM-MMA (§2.1): dense standardisation -> parallel multi-modal attention -> skip -> one-layer cLSTM.

    ``skip="residual"`` (default): each module's output is added to its query modality's embedding before
    the concatenation (needs ``d_v == d_model``); ``"concat"``: embeddings concatenated next to the module
    outputs; ``"none"``. The paper only says "concatenated with a skip connection".
    """

    def __init__(
        self,
        modality_dims: dict[str, int],
        task: TaskSpec,
        d_model: int = 32,
        d_k: int | None = None,
        d_v: int | None = None,
        shared_kv: bool = True,
        skip: str = "residual",
        attention: bool = True,
        hidden_dim: int = 64,
        num_layers: int = 1,
        dense_dim: int = 64,
        bidirectional: bool = False,
        dropout: float = 0.2,
    ):
        _check_classification("clstm_mma", task)
        super().__init__(modality_dims, task)
        d_k = d_k or d_model
        d_v = d_v or d_model
        if skip not in ("residual", "concat", "none"):
            raise ValueError(f"clstm_mma: skip must be 'residual', 'concat' or 'none', got {skip!r}")
        if skip == "residual" and d_v != d_model:
            raise ValueError(
                f"clstm_mma: skip='residual' needs d_v == d_model, got d_v={d_v}, d_model={d_model}"
            )
        self.skip = skip
        # attention=False is an ablation (not in the paper): the standardised embeddings are concatenated as
        # they are, which isolates what the attention adds over the dimension standardisation
        self.use_attention = attention
        # §2.1.1: one dense layer per modality to d_model (ReLU: the paper says "dense feed forward layers")
        self.standardise = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(d, d_model), nn.ReLU()) for m, d in modality_dims.items()}
        )
        self.attention = (
            MultiModalAttention(self.modalities, d_model, d_k, d_v, shared_kv) if attention else None
        )
        if attention:
            width = len(self.modalities) * (d_v + (d_model if skip == "concat" else 0))
        else:
            width = len(self.modalities) * d_model
        self.dropout = nn.Dropout(dropout)
        self.clstm = ContextLSTM(
            width, hidden_dim, num_layers, self.output_dim, dense_dim, bidirectional, dropout
        )

    def forward(self, inputs: ModelInputs) -> ModelOutput:
        checked, mask = utterance_mask(self, inputs)
        embedded = {m: self.standardise[m](checked[m].values) for m in self.modalities}
        if self.attention is None:
            fused = self.dropout(torch.cat([embedded[m] for m in self.modalities], dim=-1))
            return ModelOutput(self.clstm(fused * mask.unsqueeze(-1).to(fused.dtype), mask))
        attended, weights = self.attention(embedded)
        parts = []
        for m in self.modalities:
            if self.skip == "residual":
                parts.append(attended[m] + embedded[m])
            elif self.skip == "concat":
                parts += [attended[m], embedded[m]]
            else:
                parts.append(attended[m])
        fused = self.dropout(torch.cat(parts, dim=-1)) * mask.unsqueeze(-1).to(
            embedded[self.modalities[0]].dtype
        )
        logits = self.clstm(fused, mask)
        weights = weights * mask[..., None, None].to(weights.dtype)
        return ModelOutput(
            logits, extras={"attention": weights, "attention_modalities": list(self.modalities)}
        )


# --------------------------------------------------------------------------------------------------------
# hierarchical models: sub-networks trained separately, then a fusion layer on their predictions


def load_state(path: str | Path) -> dict:
    """A model state dict from a ``.pt`` state-dict file, a Lightning ``.ckpt`` of the training engine, or a
    run directory (its ``model_state.pt``, else ``checkpoints/best.ckpt``, else ``checkpoints/last.ckpt``)."""
    path = Path(path)
    if path.is_dir():
        for candidate in (
            path / STATE_FILE,
            path / "checkpoints" / "best.ckpt",
            path / "checkpoints" / "last.ckpt",
        ):
            if candidate.exists():
                path = candidate
                break
    if not path.exists() or path.is_dir():
        raise FileNotFoundError(f"pretrained sub-network weights not found: {path}")
    if path.suffix == ".ckpt":
        # our own engine's checkpoint (it pickles hyper-parameters, hence weights_only=False)
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        state = {
            k[len("model.") :]: v for k, v in ckpt.get("state_dict", {}).items() if k.startswith("model.")
        }
        if not state:
            raise ValueError(f"{path}: checkpoint holds no 'model.*' weights")
        return state
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


class _Hierarchical(FusionModel):
    """Shared machinery: ``self.subnets`` (ModuleDict) whose predictions feed ``self.fusion``."""

    stage: str = "joint"

    def _setup_stage(self, stage: str, pretrained: dict | None):
        if stage not in ("fusion", "joint"):
            raise ValueError(f"{type(self).__name__}: stage must be 'fusion' or 'joint', got {stage!r}")
        self.stage = stage
        pretrained = dict(pretrained or {})
        whole = pretrained.pop("self", None)
        unknown = set(pretrained) - set(self.subnets)
        if unknown:
            raise ValueError(
                f"pretrained weights for unknown sub-networks {sorted(unknown)}; has {list(self.subnets)}"
            )
        for name, path in pretrained.items():
            state = load_state(path)
            try:
                self.subnets[name].load_state_dict(state)
            except RuntimeError as err:
                raise ValueError(f"{path}: weights do not fit sub-network {name!r}: {err}") from err
        if whole is not None:
            self.load_state_dict(load_state(whole))
        if stage == "fusion":
            missing = [n for n in self.subnets if n not in pretrained] if whole is None else []
            if missing:
                # frozen random sub-networks would be meaningless; say so instead of training silently
                raise ValueError(
                    f"{type(self).__name__}: stage='fusion' freezes the sub-networks, but no pretrained weights "
                    f"were given for {missing}; train them first (emofusion.training.protocols.train_mman)"
                )
            for p in self.subnets.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.stage == "fusion":
            self.subnets.eval()  # frozen sub-networks: no dropout, they behave as at their own test time
        return self

    def subnet_logits(self, inputs) -> dict[str, torch.Tensor]:
        out = {}
        for name, net in self.subnets.items():
            if self.stage == "fusion":
                with torch.no_grad():
                    out[name] = net(inputs).prediction
            else:
                out[name] = net(inputs).prediction
        return out


def _unimodal_options(options: dict, modality: str) -> dict:
    # per-modality hyper-parameters (the paper customises them per modality): value or {modality: value}
    return {k: (v.get(modality, v.get("default")) if isinstance(v, dict) else v) for k, v in options.items()}


@register_model("clstm_lf")
class CLSTMLateFusion(_Hierarchical):
    """cLSTM-LF (§3.3): unimodal cLSTMs; their softmax predictions concatenated -> another cLSTM block."""

    min_modalities = 2

    def __init__(
        self,
        modality_dims: dict[str, int],
        task: TaskSpec,
        unimodal: dict | None = None,
        hidden_dim: int = 32,
        num_layers: int = 1,
        dense_dim: int = 0,
        bidirectional: bool = False,
        dropout: float = 0.0,
        stage: str = "joint",
        pretrained: dict | None = None,
    ):
        _check_classification("clstm_lf", task)
        super().__init__(modality_dims, task)
        unimodal = dict(unimodal or {})
        unimodal.setdefault("bidirectional", bidirectional)
        self.subnets = nn.ModuleDict(
            {
                m: CLSTMUnimodal(modality_dims, task, modality=m, **_unimodal_options(unimodal, m))
                for m in self.modalities
            }
        )
        self.fusion = ContextLSTM(
            len(self.modalities) * self.output_dim,
            hidden_dim,
            num_layers,
            self.output_dim,
            dense_dim,
            bidirectional,
            dropout,
        )
        self._setup_stage(stage, pretrained)

    def forward(self, inputs: ModelInputs) -> ModelOutput:
        _, mask = utterance_mask(self, inputs)
        logits = self.subnet_logits(inputs)
        probs = torch.cat([torch.softmax(logits[m], -1) for m in self.modalities], dim=-1)
        probs = probs * mask.unsqueeze(-1).to(probs.dtype)
        return ModelOutput(self.fusion(probs, mask), extras={"subnet_logits": logits})


@register_model("mman")
class MMAN(_Hierarchical):
    """MMAN (§2, Fig. 1): cLSTM-MMA + unimodal cLSTMs; their predictions -> dense layer (+ softmax in the loss).

    The fused inputs are the sub-networks' softmax outputs ("the predictions of the four sub-networks",
    ``fuse_input="logits"`` uses their logits). The fusion layer is per utterance (no context of its own).
    """

    min_modalities = 2

    def __init__(
        self,
        modality_dims: dict[str, int],
        task: TaskSpec,
        mma: dict | None = None,
        unimodal: dict | None = None,
        bidirectional: bool = False,
        fuse_input: str = "probs",
        stage: str = "joint",
        pretrained: dict | None = None,
    ):
        _check_classification("mman", task)
        super().__init__(modality_dims, task)
        if fuse_input not in ("probs", "logits"):
            raise ValueError(f"mman: fuse_input must be 'probs' or 'logits', got {fuse_input!r}")
        self.fuse_input = fuse_input
        mma = dict(mma or {})
        mma.setdefault("bidirectional", bidirectional)
        unimodal = dict(unimodal or {})
        unimodal.setdefault("bidirectional", bidirectional)
        nets = {"mma": CLSTMMMA(modality_dims, task, **mma)}
        for m in self.modalities:
            nets[m] = CLSTMUnimodal(modality_dims, task, modality=m, **_unimodal_options(unimodal, m))
        self.subnets = nn.ModuleDict(nets)
        self.fusion = nn.Linear(len(nets) * self.output_dim, self.output_dim)
        self._setup_stage(stage, pretrained)

    def forward(self, inputs: ModelInputs) -> ModelOutput:
        _, mask = utterance_mask(self, inputs)
        logits = self.subnet_logits(inputs)
        parts = [
            logits[n] if self.fuse_input == "logits" else torch.softmax(logits[n], -1) for n in self.subnets
        ]
        fused = self.fusion(torch.cat(parts, dim=-1)) * mask.unsqueeze(-1).to(parts[0].dtype)
        return ModelOutput(fused, extras={"subnet_logits": logits})


def subnetwork_specs(
    model_name: str, modalities, model_options: dict | None = None
) -> dict[str, tuple[str, dict]]:
    """The separately trained sub-networks of a hierarchical model: ``{name: (registered model, options)}``."""
    opts = dict(model_options or {})
    bidirectional = opts.get("bidirectional", False)
    unimodal = {"bidirectional": bidirectional, **dict(opts.get("unimodal") or {})}
    specs = {}
    if model_name == "mman":
        specs["mma"] = ("clstm_mma", {"bidirectional": bidirectional, **dict(opts.get("mma") or {})})
    elif model_name != "clstm_lf":
        raise ValueError(f"{model_name!r} has no sub-networks; expected 'mman' or 'clstm_lf'")
    for m in modalities:
        specs[m] = ("clstm_unimodal", {**_unimodal_options(unimodal, m), "modality": m})
    return specs
