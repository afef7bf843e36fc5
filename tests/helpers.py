"""Helpers shared by several test files (importable because pytest puts tests/ on sys.path)."""

from emofusion.data.batch import ModalityTensor


def select(inputs, i):
    """Sample i of a batch of model inputs alone, cropped to its own lengths."""
    out = {}
    for m, (v, mask) in inputs.items():
        n = int(mask[i].sum())
        out[m] = ModalityTensor(v[i : i + 1, :n], mask[i : i + 1, :n])
    return out
