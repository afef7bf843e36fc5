"""Paper 002 staged training (Table 1): three engine runs chained through saved outputs (tiny, 1 epoch)."""

from __future__ import annotations

import numpy as np
import torch

from emofusion.data import load_dataset
from emofusion.models.delta_attention import TABLE1
from emofusion.training.protocols import train_staged

SMALL = dict(d_ch=8, num_heads=2, d_o=12, d_r=4, dcca_hidden=8, d_t=8, window=3, dropout=0.0)


def test_staged_training_chains_saved_outputs(tmp_path):
    torch.set_num_threads(1)
    assert TABLE1["dcca"] == {"max_epochs": 100, "lr": 2e-4, "batch_size": 4, "weight_decay": 1e-6}
    quick = {"max_epochs": 1, "lr": 1e-3, "batch_size": 16}
    stages = {k: dict(quick) for k in TABLE1}
    data = {"n_train": 24, "n_val": 8, "n_test": 8, "max_words": 8}
    result = train_staged(
        "synthetic", data, ["text", "visual"], SMALL, stages=stages, output=tmp_path, threads=1
    )
    assert set(result["stages"]) == {"selfattn_text", "selfattn_visual", "dcca", "crossattn"}
    assert "acc6" in result["metrics"]["test"] and np.isfinite(result["metrics"]["test"]["mae"])
    # stage 2 trained on stage 1's saved Y_M (d_o wide), stage 3 on the saved [Yhat_M; Y_M]
    saved1 = load_dataset(f"paper002-saved:{result['outputs']['stage1']}")
    saved2 = load_dataset(f"paper002-saved:{result['outputs']['stage2']}")
    assert saved1.modality_dims == {"text": 12, "visual": 12}
    assert saved2.modality_dims == {"text": 16, "visual": 16}
    s1, s2 = saved1.test[0], saved2.test[0]
    assert s1.id == s2.id
    np.testing.assert_allclose(s2.features["visual"][:, 4:], s1.features["visual"], atol=1e-6)
    assert (tmp_path / "staged_metrics.json").exists()
