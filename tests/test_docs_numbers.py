"""Model pages state no measured result (mean ± std) that docs/results.md does not hold, and their
parameter-count page is the generated one."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_model_pages_state_only_results_page_numbers():
    results = (REPO / "docs" / "results.md").read_text()
    known = set(re.findall(r"\d+\.\d+ ± \d+\.\d+", results))
    for page in sorted((REPO / "docs" / "models").glob("*.md")):
        stray = [x for x in re.findall(r"\d+\.\d+ ± \d+\.\d+", page.read_text()) if x not in known]
        assert not stray, f"{page.name} states {stray[:5]} that docs/results.md does not"


def test_parameter_page_is_current():
    code = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "model_params.py"), "--check"],
        env={"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert code.returncode == 0, "docs/models/params.md is stale: run python benchmarks/model_params.py"
