"""Helpers shared by several test files (importable because pytest puts tests/ on sys.path)."""

import torch

from emofusion.data.batch import ModalityTensor


def select(inputs, i):
    """Sample i of a batch of model inputs alone, cropped to its own lengths."""
    out = {}
    for m, (v, mask) in inputs.items():
        n = int(mask[i].sum())
        out[m] = ModalityTensor(v[i : i + 1, :n], mask[i : i + 1, :n])
    return out


def random_inputs(lengths: dict, dims: dict, seed: int = 0):
    """A batch with per-sample lengths ``{modality: [len_0, len_1, ...]}`` and one padded step beyond the longest."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, lens in lengths.items():
        steps = max(lens) + 1
        mask = torch.arange(steps)[None] < torch.tensor(lens)[:, None]
        out[m] = ModalityTensor(torch.randn(len(lens), steps, dims[m], generator=g), mask)
    return out


# the smallest run config the suite/launcher tests train
TINY_RUN = {
    "model": "early_fusion_lstm",
    "dataset": "synthetic",
    "model_options": {"hidden_dim": 8, "head_dim": 8},
    "dataset_options": {"n_train": 24, "n_val": 8, "n_test": 8},
    "max_epochs": 1,
    "batch_size": 8,
}


class Times(torch.nn.Module):
    """Stands in for a dropout module: multiplies by ``c`` (what dropout does to every unit it keeps), so a
    literal reference can show where each dropout acts."""

    def __init__(self, c: float):
        super().__init__()
        self.c = c

    def forward(self, x):
        return self.c * x
