"""The Fig. 4-style attention plot and the ``emofusion explain`` command."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from emofusion.data import load_dataset
from emofusion.evaluation.attention_plots import attention_figure, plot_attention, sample_attention
from emofusion.models import create_model


@pytest.fixture(scope="module")
def bundle():
    return load_dataset("synthetic", n_train=4, n_val=2, n_test=2, max_words=10, seed=3)


def _finite(sample):
    return dataclasses.replace(
        sample, features={m: np.nan_to_num(v, neginf=0.0) for m, v in sample.features.items()}
    )


def test_sample_attention_covers_real_steps_of_every_hop(bundle):
    torch.manual_seed(0)
    model = create_model("rrnn", bundle.modality_dims, bundle.task, encoder_dim=4, hops=2)
    sample = bundle.test[0]
    att = sample_attention(model, sample, prepare=_finite)
    for m in bundle.modality_dims:
        assert att[m].shape == (2, sample.length(m))
        np.testing.assert_allclose(att[m].sum(-1), 1.0, rtol=1e-5)


def test_plot_writes_an_image_with_words(bundle, tmp_path):
    torch.manual_seed(0)
    model = create_model("gca", bundle.modality_dims, bundle.task, encoder_dim=4, hops=2)
    sample = bundle.test[1]
    out = plot_attention(model, sample, tmp_path / "att.png", prepare=_finite)
    assert out.exists() and out.stat().st_size > 5000
    fig = attention_figure({"text": np.full((2, len(sample.words)), 1 / len(sample.words))}, sample)
    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert set(sample.words) <= texts  # words under the text track
    assert len(fig.axes) == 2  # one panel per hop


def test_models_without_attention_are_rejected(bundle):
    model = create_model("late_fusion", bundle.modality_dims, bundle.task, encoder_dim=4)
    with pytest.raises(ValueError, match="no attention"):
        sample_attention(model, bundle.test[0], prepare=_finite)


def test_explain_command(tmp_path):
    from emofusion.cli import main
    from emofusion.training import RunConfig, train_run

    torch.set_num_threads(1)
    run = train_run(
        RunConfig(
            model="rrnn",
            dataset="synthetic",
            model_options={"encoder_dim": 4, "hops": 2},
            dataset_options={"n_train": 8, "n_val": 4, "n_test": 4, "max_words": 10},
            max_epochs=1,
            batch_size=4,
            progress=False,
            plots=False,
            output=str(tmp_path / "run"),
        )
    )
    image = tmp_path / "explain.png"
    assert main(["explain", str(run.run_dir), "--sample", "test_00002", "--output", str(image)]) == 0
    assert image.exists() and image.stat().st_size > 5000
    assert main(["explain", str(run.run_dir), "--sample", "nope", "--output", str(image)]) == 2
