import os
from pathlib import Path

import pytest
import torch

# tests are small: one thread each keeps the suite fast and deterministic on 2 cores
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _runs_outside_the_checkout(tmp_path_factory, monkeypatch):
    """A test that trains without ``output=`` writes its run folder under a temporary root, not ./runs."""
    monkeypatch.setenv("EMOFUSION_RUNS", str(tmp_path_factory.getbasetemp() / "default_runs"))
SHARED_DATA = REPO.parent / "shared" / "data"
MFN_DIR = SHARED_DATA / "mfn_h5"

requires_shared_data = pytest.mark.skipif(
    not MFN_DIR.exists(), reason=f"real MFN features not found at {MFN_DIR} (only present beside the repository)"
)


@pytest.fixture
def tiny_synthetic_options():
    return {"n_train": 48, "n_val": 16, "n_test": 16, "min_words": 4, "max_words": 10}
