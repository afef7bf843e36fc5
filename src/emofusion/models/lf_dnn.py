"""LF-DNN: late fusion with deep networks (Williams, Kleinegesse, Comanescu & Radu, ACL 2018 Challenge-HML,
"Recognizing Emotions in Video Using Multimodal DNN Feature Fusion"), as MMSA 2.2.1 implements it (``LF_DNN``)
and benchmarks it ("Benchmarking Multimodal Sentiment Analysis").

* acoustic / visual: the utterance's time-averaged features -> batch norm -> dropout -> 3 x (FC, ReLU)
  (TFN's ``AveragedSubNet``, with MMSA's batch norm);
* language: an LSTM over the words, its state at the last real word -> dropout -> FC (TFN's ``SequenceSubNet``);
* fusion: the embeddings concatenated -> dropout -> 2 x (FC, ReLU) -> linear output.

Not paper 000's ``late_fusion`` (per-view BiLSTMs with per-view heads whose outputs are fused): this is the
MMSA baseline of the same name, so the MMSA comparison suites have a same-design counterpart. Sizes default
to MMSA's MOSEI configuration (hidden text 128 / audio 32 / visual 128, text_out 128, post-fusion 128, all
dropouts 0.2). Two departures, both shared with emofusion's ``tfn``: the text state is taken at the last real
word (MMSA reads the LSTM's final state over zero padding), and regression outputs are bounded to the label
range (MMSA's LF_DNN output is unbounded). Any subset of modalities works; a modality listed in
``sequence_modalities`` is LSTM-encoded, the others averaged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from emofusion.data.batch import ModelInputs
from emofusion.models.base import FusionModel, ModelOutput
from emofusion.models.registry import register_model
from emofusion.models.tfn import ModalityEmbeddings
from emofusion.tasks import TaskSpec

# MMSA 2.2.1 config_regression.json, lf_dnn / mosei: hidden_dims [text, audio, video] = [128, 32, 128]
DEFAULT_HIDDEN = {"text": 128, "audio": 32, "visual": 128}


@register_model("lf_dnn")
class LateFusionDNN(FusionModel):
    """LF-DNN: per-modality subnetworks -> concatenation -> dropout -> 2 x (FC, ReLU) -> output.

    Options: ``hidden_dims`` (int or {modality: int}; default text 128, audio 32, visual 128), ``text_out``
    (128), ``post_fusion_dim`` (128), ``dropout`` (subnetworks, float or per modality, 0.2),
    ``fusion_dropout`` (on the concatenation, 0.2), ``batch_norm`` (on the averaged inputs, True as MMSA),
    ``sequence_modalities`` (default ``("text",)``). Extras: ``embeddings`` {modality: ``[B, d_m]``}.
    """

    def __init__(
        self,
        modality_dims: dict[str, int],
        task: TaskSpec,
        hidden_dims=None,
        text_out: int = 128,
        post_fusion_dim: int = 128,
        dropout=0.2,
        fusion_dropout: float = 0.2,
        batch_norm: bool = True,
        sequence_modalities=("text",),
    ):
        super().__init__(modality_dims, task)
        if hidden_dims is None or isinstance(hidden_dims, dict):
            hidden_dims = {**DEFAULT_HIDDEN, **(hidden_dims or {})}
        self.embed = ModalityEmbeddings(
            modality_dims, hidden_dims, int(text_out), dropout, sequence_modalities, bool(batch_norm), 3
        )
        concat = sum(self.embed.output_dims[m] for m in self.modalities)
        self.fusion_dropout = nn.Dropout(float(fusion_dropout))
        self.post_fusion = nn.ModuleList([nn.Linear(concat, int(post_fusion_dim)),
                                          nn.Linear(int(post_fusion_dim), int(post_fusion_dim))])
        self.out = nn.Linear(int(post_fusion_dim), self.output_dim)

    def time_averaged_inputs(self) -> tuple[str, ...]:
        return self.embed.averaged_modalities()

    def forward(self, inputs: ModelInputs) -> ModelOutput:
        inputs = self.check_inputs(inputs)
        emb = self.embed(inputs)
        x = self.fusion_dropout(torch.cat([emb[m] for m in self.modalities], dim=-1))
        for layer in self.post_fusion:
            x = F.relu(layer(x))
        return ModelOutput(self.bound_output(self.out(x)), {"embeddings": emb})
