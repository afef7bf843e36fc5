"""The dependency rule (BRIEF "Architecture", issue 13 item 8), checked on the source of every module, imports
inside functions included:

    cli -> evaluation -> training -> models -> data  (tasks and registry below all of them)

- data/ imports none of models, training, evaluation, cli; models/ none of training, evaluation, cli;
- training/ imports from evaluation/ only the two leaf modules ``evaluation.metrics`` and
  ``evaluation.baselines`` (validation metrics and baselines must be the code that reports them), and those
  leaves import nothing from emofusion but ``tasks`` (and each other), so no import cycle is possible;
- the run engine (training/ except the multi-stage protocols) and evaluation/plots.py name no model: a model
  that needs a plot or a protocol declares it (``extra_plots``, ``training/protocols.py``).
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "emofusion"
LEAVES = {"emofusion.evaluation.metrics", "emofusion.evaluation.baselines"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}  # from emofusion.evaluation import x
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module", "__import__"
        ):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
    return {n for n in names if n == "emofusion" or n.startswith("emofusion.")}


def _modules(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


def _layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.mark.parametrize(("package", "forbidden"), [
    ("data", {"models", "training", "evaluation", "cli"}),
    ("models", {"training", "evaluation", "cli"}),
])
def test_lower_layers_never_import_upper_ones(package, forbidden):
    bad = [(p.relative_to(SRC), n) for p in _modules(package) for n in _imports(p) if _layer(n) in forbidden]
    assert not bad, f"{package}/ imports an upper layer: {bad}"


def test_training_imports_only_the_evaluation_leaves():
    bad = []
    for p in _modules("training"):
        for n in _imports(p):
            if _layer(n) == "cli":
                bad.append((p.name, n))
            elif _layer(n) == "evaluation" and not any(n == leaf or n.startswith(leaf + ".") for leaf in LEAVES):
                if n != "emofusion.evaluation":
                    bad.append((p.name, n))
            elif n == "emofusion.evaluation":
                bad.append((p.name, n))
    assert not bad, f"training/ imports the reporting layer: {bad}"


def test_evaluation_leaves_import_nothing_above_tasks():
    for leaf in LEAVES:
        path = SRC / (leaf.split(".", 1)[1].replace(".", "/") + ".py")
        allowed = {"emofusion.tasks"} | LEAVES | {f"{x}.{y}" for x in LEAVES for y in ("compute_metrics",)}
        extra = {n for n in _imports(path) if not any(n == a or n.startswith(a + ".") for a in allowed)}
        assert not extra, f"{leaf} must stay a leaf, imports {extra}"


def test_engine_and_plots_name_no_model():
    from emofusion.models import list_models

    names = set(list_models())
    engine = [p for p in _modules("training") if p.name != "protocols.py"] + [SRC / "evaluation" / "plots.py"]
    for path in engine:
        text = path.read_text()
        assert "__name__ ==" not in text and "__name__ in" not in text, path.name
        tree = ast.parse(text)
        # field defaults (RunConfig.model = "early_fusion_lstm") choose nothing by name; comparisons would
        defaults = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.AnnAssign) and n.value is not None}
        literals = {n.value for n in ast.walk(tree)
                    if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in defaults}
        assert not literals & names, f"{path.name} names models {literals & names}"


def test_the_scan_sees_imports_inside_functions(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from emofusion.training.run import train_run\n    import emofusion.cli\n"
                     "    importlib.import_module('emofusion.evaluation.plots')\n")
    assert _imports(probe) == {"emofusion.training.run", "emofusion.training.run.train_run", "emofusion.cli",
                               "emofusion.evaluation.plots"}
