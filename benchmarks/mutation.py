"""Mutation testing for the files that hold equations: does a wrong line make a test fail?

For each target file, every mutant changes one AST node (operator swaps, comparison boundaries, constants,
dropped terms, swapped/dropped arguments, removed calls and statements, negated conditions, swapped
reductions such as max/min). Each mutant runs the file's focused test selection
(``pytest -x -q -p no:cacheprovider``) with a per-mutant timeout; a mutant is *killed* when the tests fail
or time out, *survives* when they pass. Survivors listed in ``benchmarks/mutation_equivalent.yaml`` (with the
reason they cannot change behaviour) count as equivalent and are left out of the kill rate.

Speed: the parent process imports torch/numpy/scipy/sklearn/pytest once and forks one child per mutant
(the child imports emofusion fresh from a private copy of ``src`` that holds the mutated file), so a mutant
costs its tests, not an interpreter start. Two workers run in parallel by default.

    python benchmarks/mutation.py                      # all targets
    python benchmarks/mutation.py --targets metrics    # a subset (substring of the file path)
    python benchmarks/mutation.py --max-per-file 150   # deterministic sample when a file has more mutants
    python benchmarks/mutation.py --list               # print the mutants without running them
"""

from __future__ import annotations

import argparse
import ast
import copy
import difflib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
EQUIVALENT_FILE = REPO / "benchmarks" / "mutation_equivalent.yaml"

# target file -> (fast tests, wider tests). Phase 1 runs every mutant against the fast selection (the
# literal-equation tests, seconds); phase 2 re-runs only phase-1 survivors against fast + wider (the file's
# older, slower tests), so a mutant counts as surviving only when no test of either selection fails.
TARGETS: dict[str, tuple[list[str], list[str]]] = {
    "emofusion/evaluation/metrics.py": (["tests/test_metrics_mutants.py"], ["tests/test_metrics.py"]),
    "emofusion/data/alignment.py": (
        ["tests/test_alignment_mutants.py", "tests/test_alignment_stacked.py"], ["tests/test_alignment.py"]
    ),
    "emofusion/models/rrnn.py": (["tests/test_equations_rrnn.py"], ["tests/test_rrnn.py"]),
    "emofusion/models/rmfn.py": (["tests/test_equations_rmfn.py"], ["tests/test_rmfn.py"]),
    "emofusion/models/mult.py": (["tests/test_equations_mult.py"], ["tests/test_mult.py"]),
    "emofusion/models/delta_attention.py": (
        ["tests/test_equations_delta_attention.py", "tests/test_dcca.py"],
        ["tests/test_delta_attention.py"],
    ),
    "emofusion/models/early_fusion.py": (["tests/test_equations_early_fusion.py"], ["tests/test_early_fusion.py"]),
    "emofusion/models/mman.py": (["tests/test_equations_mman.py", "tests/test_mman_mutants.py"], ["tests/test_mman.py"]),
}
# functions whose mutants are not run: training loops owned by other modules' protocols, plotting/repr glue
SKIP_FUNCTIONS = {
    "emofusion/models/delta_attention.py": {"train_staged"},
    "emofusion/models/mman.py": {"train_mman"},
}

BINOP_SWAPS = {
    ast.Add: [ast.Sub],
    ast.Sub: [ast.Add],
    ast.Mult: [ast.Div],
    ast.Div: [ast.Mult],
    ast.FloorDiv: [ast.Div],
    ast.Mod: [ast.FloorDiv],
    ast.Pow: [ast.Mult],
    ast.MatMult: [],
    ast.BitOr: [ast.BitAnd],
    ast.BitAnd: [ast.BitOr],
}
CMP_SWAPS = {
    ast.Lt: [ast.LtE, ast.Gt],
    ast.LtE: [ast.Lt],
    ast.Gt: [ast.GtE, ast.Lt],
    ast.GtE: [ast.Gt],
    ast.Eq: [ast.NotEq],
    ast.NotEq: [ast.Eq],
    ast.Is: [ast.IsNot],
    ast.IsNot: [ast.Is],
    ast.In: [ast.NotIn],
    ast.NotIn: [ast.In],
}
NAME_SWAPS = {
    "max": "min", "min": "max", "maximum": "minimum", "minimum": "maximum", "amax": "amin", "amin": "amax",
    "sum": "mean", "mean": "sum", "all": "any", "any": "all", "argmax": "argmin", "argmin": "argmax",
    "tanh": "sigmoid", "sigmoid": "tanh", "relu": "tanh", "softmax": "log_softmax", "log_softmax": "softmax",
    "float32": "float64", "float64": "float32", "sqrt": "abs", "exp": "abs", "log": "abs",
    "cat": "stack", "stack": "cat", "floor": "ceil", "ceil": "floor", "cumsum": "cumprod",
    "unsqueeze": "squeeze",
}


# calls whose removal or argument changes cannot change a result
QUIET_CALLS = {"warnings", "logger", "log", "print", "logging"}
# casts whose removal leaves an equal value in nearly every use (float(np.float64) etc.): too noisy to argue
TYPE_CASTS = {"float", "int", "bool", "str", "list", "tuple", "dict", "set", "np.asarray"}


# The breaks a review found undetected (issue 14), as hand-written mutants: ``--breaks`` runs exactly these.
BREAKS: list[tuple[str, str, str, str]] = [
    ("emofusion/models/rrnn.py", "RRNN: every hop queries m(0)",
     "c, alpha = self._attention(m, hop)(h, mask, memory)", "c, alpha = self._attention(m, hop)(h, mask, memories[0])"),
    ("emofusion/models/rrnn.py", "RRNN: concat attention tanh(a) + tanh(b)",
     "r = torch.tanh(key + query)", "r = torch.tanh(key) + torch.tanh(query)"),
    ("emofusion/models/rrnn.py", "RRNN: ungated GCA update changed",
     "memory = torch.tanh(self.update(mw))", "memory = torch.tanh(self.update(mw)) + memory"),
    ("emofusion/models/rmfn.py", "RMFN: HIGHLIGHT input a^[k-1] -> zeros",
     "self.highlight_cell(torch.cat([a, h_hl], dim=-1))", "self.highlight_cell(torch.cat([torch.zeros_like(a), h_hl], dim=-1))"),
    ("emofusion/models/rmfn.py", "RMFN: SUMMARIZE fed s^[K] K times",
     "summary = torch.cat(outputs, dim=-1) if", "summary = torch.cat([outputs[-1]] * len(outputs), dim=-1) if"),
    ("emofusion/models/rmfn.py", "RMFN: FUSE recurrence removed",
     "self.fuse_in(h_tilde) + self.fuse_rec(s)", "self.fuse_in(h_tilde)"),
    ("emofusion/models/rmfn.py", "RMFN: M(h_t) zeroed",
     "c_hl = self.memory_init(h)", "c_hl = torch.zeros_like(self.memory_init(h))"),
    ("emofusion/models/early_fusion.py", "paper 003: overlap weights -> plain mean",
     "weights = (end - start).clamp_min(0.0)", "weights = ((end - start) > 0).to(values.dtype)"),
    ("emofusion/models/early_fusion.py", "paper 003: ef_blstm unidirectional",
     "    bidirectional = True", "    bidirectional = False"),
    ("emofusion/models/early_fusion.py", "paper 003: BatchNorm removed from the head",
     "layers.append(SafeBatchNorm1d(fc_dim))", "pass"),
    ("emofusion/models/delta_attention.py", "delta: no 1/sqrt(d_k) on the relative-position term",
     "bias = (self.relative_logits(x) / math.sqrt(self.d_k)).unsqueeze(1)", "bias = self.relative_logits(x).unsqueeze(1)"),
    ("emofusion/models/delta_attention.py", "delta: skip connection zeroed",
     "z = self.fused_norm(self.dropout(z) + skip)", "z = self.fused_norm(self.dropout(z) + 0 * skip)"),
    ("emofusion/models/delta_attention.py", "DCCA: back to utterance pairing",
     'cca_pairing: str = "frames"', 'cca_pairing: str = "utterance"'),
    ("emofusion/models/mult.py", "MulT: no embedding scale",
     "x = self.proj[modality](values, mask) * self.embed_scale", "x = self.proj[modality](values, mask)"),
    ("emofusion/models/mult.py", "MulT: no positional embeddings",
     "x = x + self.positions(x.shape[1], self.d_model, x)", "x = x"),
    ("emofusion/models/mult.py", "MulT: residual option ignored",
     "x = (q if self.literal_residual else x) + self.res_dropout(a)", "x = x + self.res_dropout(a)"),
    ("emofusion/models/mult.py", "MulT: 3 self-attention layers (parameter count)",
     "max(cross_layers, 3) if self_layers is None", "3 if self_layers is None"),
    # the review's "acc2/f1 switched to the has-0 convention": the bare aliases are gone, so the break is the
    # non-0 accuracy computed over every sample (truths at the centre kept), i.e. the has-0 population
    ("emofusion/evaluation/metrics.py", "metrics: acc2_non0 with the has-0 convention",
     "out[\"acc2_non0\"] = float(np.mean((pred[nz] > centre) == (true[nz] > centre)))",
     "out[\"acc2_non0\"] = float(np.mean((pred >= centre) == (true >= centre)))"),
    ("emofusion/evaluation/metrics.py", "metrics: acc7 without clipping",
     "rp = round_half_up(np.clip(pred, low, high))", "rp = round_half_up(pred)"),
    ("emofusion/evaluation/metrics.py", "metrics: acc5 clipped to +-3",
     "round_half_up(np.clip(pred, -2, 2))", "round_half_up(np.clip(pred, -3, 3))"),
    ("emofusion/evaluation/metrics.py", "metrics: multilabel threshold >= 0.5",
     "true = np.asarray(true) > 0.5", "true = np.asarray(true) >= 0.5"),
    ("emofusion/evaluation/metrics.py", "metrics: NaN r's not skipped (multi-regression)",
     "finite = [r for r in rs if np.isfinite(r)]", "finite = rs"),
    ("emofusion/evaluation/metrics.py", "metrics: weighted-accuracy single-class branch inverted",
     "if true_present.all() or not true_present.any():", "if not (true_present.all() or not true_present.any()):"),
    ("emofusion/data/alignment.py", "alignment: default epsilon 1e-5 -> 1e-6",
     "    epsilon: float = 1e-5,\n    weighted", "    epsilon: float = 1e-6,\n    weighted"),
    ("emofusion/data/alignment.py", "alignment: imputation as float32",
     "np.zeros((len(iv), d), dtype=np.float64)", "np.zeros((len(iv), d), dtype=np.float32)"),
    ("emofusion/data/alignment.py", "alignment: NaN propagation in weighted_mean removed",
     "out[both | (pos & neg)] = np.nan", "pass"),
    ("emofusion/data/alignment.py", "alignment: -inf propagation in average_to_reference removed",
     "block[neg] = -np.inf", "pass"),
    ("emofusion/data/alignment.py", "alignment: touch test > -> >=",
     "hit = ((r[:, 1] - s[:, 0]) > -epsilon)", "hit = ((r[:, 1] - s[:, 0]) >= -epsilon)"),
    ("emofusion/data/alignment.py", "alignment: candidate margin 0",
     "margin = epsilon + 1e-9 * (1.0 + float(np.abs(ref).max(initial=0.0)))", "margin = 0.0"),
    ("emofusion/data/alignment.py", "alignment: unstable sort",
     'order = np.argsort(intervals[:, 0], kind="stable")', "order = np.argsort(intervals[:, 0])"),
]


@dataclass
class Mutant:
    file: str
    index: int
    line: int
    kind: str
    before: str
    after: str
    source: str = field(repr=False)
    status: str = "pending"
    seconds: float = 0.0

    context: str = ""

    @property
    def key(self) -> str:
        """Stable across line shifts: the mutated line's text, the operator and the change."""
        return f"{self.context} | {self.kind}: {self.before} -> {self.after}"

    def diff(self, original: str) -> str:
        a = original.splitlines(keepends=True)
        b = self.source.splitlines(keepends=True)
        lines = [
            ln
            for ln in difflib.unified_diff(a, b, self.file, self.file, n=0)
            if not ln.startswith(("---", "+++", "@@"))
        ]
        return "".join(lines).rstrip("\n")


def _segment(src_lines: list[str], node: ast.AST) -> str:
    """Source text of a node (single- or multi-line)."""
    ln, col, eln, ecol = node.lineno, node.col_offset, node.end_lineno, node.end_col_offset
    if ln == eln:
        return src_lines[ln - 1].encode()[col:ecol].decode()
    parts = [src_lines[ln - 1].encode()[col:].decode()]
    parts += src_lines[ln : eln - 1]
    parts.append(src_lines[eln - 1].encode()[:ecol].decode())
    return "\n".join(parts)


def _replace(src_lines: list[str], node: ast.AST, text: str) -> str:
    ln, col, eln, ecol = node.lineno, node.col_offset, node.end_lineno, node.end_col_offset
    head = src_lines[ln - 1].encode()[:col].decode()
    tail = src_lines[eln - 1].encode()[ecol:].decode()
    new = src_lines[: ln - 1] + [head + text + tail] + src_lines[eln:]
    return "\n".join(new) + "\n"


class _Collector(ast.NodeVisitor):
    """Walks the module and yields (node, replacement_text, kind) candidates."""

    def __init__(self, skip_functions: set[str]):
        self.out: list[tuple[ast.AST, str, str]] = []
        self.skip_functions = skip_functions
        self._skip_depth = 0

    # ------------------------------------------------------------------ what not to mutate
    def visit_FunctionDef(self, node):
        if node.name in self.skip_functions:
            return
        for d in node.args.defaults + node.args.kw_defaults:
            if d is not None:
                self.visit(d)
        for stmt in node.body:
            self.visit(stmt)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Import(self, node):
        return

    visit_ImportFrom = visit_Import

    def visit_Raise(self, node):  # error messages and conditions of raising are other tests' business
        return

    def visit_Assert(self, node):
        return

    def visit_JoinedStr(self, node):  # f-strings: positions inside are unreliable
        return

    def visit_AnnAssign(self, node):
        if node.value is not None:
            self.visit(node.value)

    def visit_arg(self, node):
        return

    def visit_ClassDef(self, node):
        for stmt in node.body:
            self.visit(stmt)

    def visit_With(self, node):
        for item in node.items:
            if not ast.unparse(item.context_expr).startswith(("warnings.", "np.errstate", "torch.no_grad")):
                self.visit(item.context_expr)
        for stmt in node.body:
            self.visit(stmt)

    def visit_Expr(self, node):
        if isinstance(node.value, ast.Constant):  # docstring
            return
        if isinstance(node.value, ast.Call) and ast.unparse(node.value.func).split(".")[0] in QUIET_CALLS:
            return
        if isinstance(node.value, ast.Call):
            self.out.append((node, "pass", "remove-call"))
        self.generic_visit(node)

    # ------------------------------------------------------------------ mutations
    def visit_BinOp(self, node):
        for new in BINOP_SWAPS.get(type(node.op), []):
            m = copy.deepcopy(node)
            m.op = new()
            self.out.append((node, f"({ast.unparse(m)})", "binop"))
        if isinstance(node.op, (ast.Add, ast.Sub)):
            self.out.append((node, f"({ast.unparse(node.left)})", "drop-right-term"))
            if isinstance(node.op, ast.Add):
                self.out.append((node, f"({ast.unparse(node.right)})", "drop-left-term"))
        if isinstance(node.op, (ast.Mult, ast.Div, ast.MatMult)):
            self.out.append((node, f"({ast.unparse(node.left)})", "drop-factor"))
        self.generic_visit(node)

    def visit_AugAssign(self, node):
        for new in BINOP_SWAPS.get(type(node.op), []):
            m = copy.deepcopy(node)
            m.op = new()
            self.out.append((node, ast.unparse(m), "augassign"))
        self.out.append((node, "pass", "remove-statement"))
        self.generic_visit(node)

    def visit_Compare(self, node):
        for i, op in enumerate(node.ops):
            for new in CMP_SWAPS.get(type(op), []):
                m = copy.deepcopy(node)
                m.ops[i] = new()
                self.out.append((node, f"({ast.unparse(m)})", "compare"))
        self.generic_visit(node)

    def visit_BoolOp(self, node):
        m = copy.deepcopy(node)
        m.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        self.out.append((node, f"({ast.unparse(m)})", "boolop"))
        for i, _v in enumerate(node.values):
            rest = [x for j, x in enumerate(node.values) if j != i]
            m = copy.deepcopy(node)
            m.values = rest
            text = ast.unparse(rest[0]) if len(rest) == 1 else ast.unparse(m)
            self.out.append((node, f"({text})", "drop-operand"))
        self.generic_visit(node)

    def visit_UnaryOp(self, node):
        if isinstance(node.op, (ast.Not, ast.USub, ast.Invert)):
            self.out.append((node, f"({ast.unparse(node.operand)})", "drop-unary"))
        self.generic_visit(node)

    def visit_IfExp(self, node):
        self.out.append((node, f"({ast.unparse(node.body)})", "ifexp-body"))
        self.out.append((node, f"({ast.unparse(node.orelse)})", "ifexp-else"))
        self.generic_visit(node)

    def visit_If(self, node):
        self.out.append((node.test, f"(not ({ast.unparse(node.test)}))", "negate-if"))
        self.generic_visit(node)

    def visit_Constant(self, node):
        v = node.value
        if isinstance(v, bool):
            self.out.append((node, str(not v), "constant"))
        elif isinstance(v, int):
            self.out.append((node, str(v + 1), "constant"))
            if v != 0:
                self.out.append((node, str(v - 1) if v != 1 else "0", "constant"))
        elif isinstance(v, float):
            self.out.append((node, repr(v * 2 if v != 0 else 1.0), "constant"))
            if v != 0:
                self.out.append((node, repr(v / 10), "constant"))

    def visit_Call(self, node):
        fn = ast.unparse(node.func)
        if fn.split(".")[0] in QUIET_CALLS:  # warnings/logging/printing: no behaviour to pin
            return
        pos = [a for a in node.args if not isinstance(a, ast.Starred)]
        if len(node.args) == 1 and pos and not node.keywords and fn not in TYPE_CASTS:
            self.out.append((node, f"({ast.unparse(node.args[0])})", "drop-call"))
        if len(pos) >= 2 and len(pos) == len(node.args):
            m = copy.deepcopy(node)
            m.args[0], m.args[1] = m.args[1], m.args[0]
            self.out.append((node, ast.unparse(m), "swap-args"))
        for i, kw in enumerate(node.keywords):
            if kw.arg is None:
                continue
            m = copy.deepcopy(node)
            del m.keywords[i]
            self.out.append((node, ast.unparse(m), "drop-keyword"))
        self.generic_visit(node)

    def visit_Attribute(self, node):
        if node.attr in NAME_SWAPS:
            m = copy.deepcopy(node)
            m.attr = NAME_SWAPS[node.attr]
            self.out.append((node, ast.unparse(m), "swap-name"))
        self.generic_visit(node)

    def visit_Name(self, node):
        if node.id in NAME_SWAPS and isinstance(node.ctx, ast.Load):
            self.out.append((node, NAME_SWAPS[node.id], "swap-name"))

    def visit_Return(self, node):
        if node.value is not None and not (isinstance(node.value, ast.Constant) and node.value.value is None):
            self.out.append((node, "return None", "remove-return"))
        self.generic_visit(node)

    def visit_Assign(self, node):
        # dropping the update of an existing variable (x = f(x)) keeps the old value
        names = {t.id for t in node.targets if isinstance(t, ast.Name)}
        if names and any(isinstance(n, ast.Name) and n.id in names for n in ast.walk(node.value)):
            self.out.append((node, "pass", "remove-statement"))
        self.generic_visit(node)


def generate(rel: str, limit: int = 0, seed: int = 0) -> tuple[str, list[Mutant], int]:
    path = SRC / rel
    original = path.read_text()
    lines = original.splitlines()
    tree = ast.parse(original)
    base_dump = ast.dump(tree)
    col = _Collector(SKIP_FUNCTIONS.get(rel, set()))
    col.visit(tree)
    candidates = list(enumerate(col.out))
    if limit:
        # sample before validating (parsing every candidate of a big file takes minutes on a loaded machine)
        random.Random(seed).shuffle(candidates)
    mutants, seen = [], set()
    for _pos, (node, text, kind) in candidates:
        if limit and len(mutants) >= limit:
            break
        try:
            before = _segment(lines, node)
            new_src = _replace(lines, node, text)
            new_tree = ast.parse(new_src)
        except (SyntaxError, UnicodeDecodeError, IndexError):
            continue
        dump = ast.dump(new_tree)
        if dump == base_dump or dump in seen:
            continue
        seen.add(dump)
        short = " ".join(before.split())
        mutants.append(
            Mutant(rel, _pos, node.lineno, kind, short[:160], " ".join(text.split())[:160], new_src,
                   context=lines[node.lineno - 1].strip()[:120])
        )
    mutants.sort(key=lambda m: m.index)
    return original, mutants, len(col.out)


def tests_of(rel: str, wide: bool = False) -> list[str]:
    fast, wider = TARGETS[rel]
    return [t for t in fast + (wider if wide else []) if (REPO / t).exists()]


def load_equivalent() -> dict[str, dict[str, str]]:
    """{file: {line text + key: reason}} from the YAML list of argued-equivalent survivors."""
    if not EQUIVALENT_FILE.exists():
        return {}
    import yaml

    data = yaml.safe_load(EQUIVALENT_FILE.read_text()) or {}
    out: dict[str, dict[str, str]] = {}
    for entry in data.get("equivalent", []):
        out.setdefault(entry["file"], {})[entry["mutant"]] = entry["reason"]
    return out


def _child(workdir: Path, tests: list[str], extra: list[str]) -> None:
    """Runs in the forked child: import emofusion from the worker's copy, run pytest, exit with its code."""
    os.chdir(REPO)
    sys.path.insert(0, str(workdir / "src"))
    for name in [m for m in sys.modules if m == "emofusion" or m.startswith("emofusion.")]:
        del sys.modules[name]
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    import pytest

    # plugins were not auto-loaded (PYTEST_DISABLE_PLUGIN_AUTOLOAD): no entry-point scan per mutant
    code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", *extra, *tests])
    os._exit(int(code))


def run_all(jobs: list[tuple[Mutant | None, str, list[str]]], workers: int, timeout_for, original_of,
            stop_at: float = 0.0) -> None:
    """Run (mutant, file, tests) jobs, ``workers`` at a time, each in a forked child with its own src copy."""
    tmp = Path(tempfile.mkdtemp(prefix="emofusion-mut-"))
    slots = []
    for w in range(workers):
        d = tmp / f"w{w}"
        shutil.copytree(SRC, d / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        slots.append(d)
    free = list(range(workers))
    running: dict[int, tuple[int, Mutant, str, float]] = {}
    queue = list(jobs)
    try:
        while queue or running:
            if stop_at and time.time() > stop_at:
                queue.clear()  # past the deadline: finish the running mutants, start no new one
            while queue and free:
                mutant, rel, tests = queue.pop(0)
                slot = free.pop()
                target = slots[slot] / "src" / rel
                target.write_text(mutant.source if mutant.index >= 0 else original_of[rel])
                pid = os.fork()
                if pid == 0:
                    try:
                        _child(slots[slot], tests, [])
                    finally:
                        os._exit(99)
                running[pid] = (slot, mutant, rel, time.time())
            time.sleep(0.05)
            for pid, (slot, mutant, rel, t0) in list(running.items()):
                done, status = os.waitpid(pid, os.WNOHANG)
                elapsed = time.time() - t0
                if done == 0 and elapsed > timeout_for(rel):
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    mutant.status = "timeout"
                elif done == 0:
                    continue
                else:
                    code = os.waitstatus_to_exitcode(status)
                    mutant.status = "survived" if code == 0 else ("no-tests" if code == 5 else "killed")
                mutant.seconds = elapsed
                (slots[slot] / "src" / rel).write_text(original_of[rel])
                del running[pid]
                free.append(slot)
                _progress(mutant)
    finally:
        for pid in list(running):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


_counter = {"n": 0, "total": 0}


def _progress(m: Mutant) -> None:
    _counter["n"] += 1
    if m.index < 0:
        return
    mark = {"killed": ".", "timeout": "t", "survived": "S"}.get(m.status, "?")
    print(mark, end="" if _counter["n"] % 80 else "\n", flush=True)
    if m.status == "survived" and os.environ.get("MUTATION_VERBOSE", "1") != "0":
        print(f"\n  survived so far: {m.file}:{m.line} {m.key}", flush=True)


def preimport(targets: list[str]) -> None:
    """Import every third-party module the targets and their tests use, once, in the parent (children
    inherit them through fork); emofusion itself is imported and then forgotten, so each child imports the
    mutated copy."""
    import importlib

    import pytest  # noqa: F401
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(SRC))
    sys.path.insert(0, str(REPO / "tests"))
    names = set()
    for rel in targets:
        names.add(rel[:-3].replace("/", "."))
        for t in tests_of(rel, wide=True):
            for node in ast.walk(ast.parse((REPO / t).read_text())):
                if isinstance(node, ast.Import):
                    names.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module)
    for name in sorted(names):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a test-local helper module; the child imports it
            pass
    # warm torch's first-call paths (LSTM kernels, autograd) so each child does not pay them
    lstm = torch.nn.LSTM(3, 2, batch_first=True, bidirectional=True)
    lstm(torch.randn(2, 4, 3))[0].sum().backward()
    torch.nn.MultiheadAttention(4, 2)(torch.randn(3, 1, 4), torch.randn(3, 1, 4), torch.randn(3, 1, 4))
    for name in [m for m in sys.modules if m.split(".")[0] in ("emofusion", "helpers", "conftest")
                 or m.split(".")[0].startswith("test_")]:
        del sys.modules[name]
    sys.path.remove(str(SRC))
    sys.path.remove(str(REPO / "tests"))


def _carry_killed(path: Path, per_file: dict[str, list[Mutant]], notes: dict[str, str]) -> set[int]:
    """Mark the mutants a previous run killed (matched by file and key) as killed; return their ids."""
    before = json.loads(path.read_text())
    # test failures only: a timeout may be a loaded machine, not a kill, so it runs again
    killed_before = {(r["file"], r["mutant"]) for r in before if r["status"] == "killed"}
    carried = set()
    for rel, ms in per_file.items():
        n = 0
        for m in ms:
            if (rel, m.key) in killed_before:
                m.status = "killed"
                carried.add(id(m))
                n += 1
        if n:
            notes[rel] = (notes.get(rel, "") + f"; {n} killed carried from {path.name}").lstrip("; ")
    return carried


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", nargs="*", default=None, help="substrings of target paths (default: all)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-per-file", type=int, default=0, help="sample this many mutants per file (0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout-factor", type=float, default=3.0)
    ap.add_argument("--list", action="store_true", help="print the mutants and exit")
    ap.add_argument("--json", type=Path, default=None, help="write every mutant's result here")
    ap.add_argument("--deadline", type=float, default=0,
                    help="stop starting new mutants after this many seconds (0 = none); the summary covers the "
                         "mutants that ran, and says so")
    ap.add_argument("--breaks", action="store_true", help="run only the review's hand-written breaks (BREAKS)")
    ap.add_argument("--lines", default=None, help="only mutants on these lines, e.g. 40-60 (one target)")
    ap.add_argument("--carry-killed", type=Path, default=None, metavar="JSON",
                    help="a previous run's --json: its killed mutants (same file and key) count as killed without "
                         "re-running; valid when the tests only grew since and the target file is unchanged")
    args = ap.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    sys.dont_write_bytecode = True
    targets = [t for t in TARGETS if not args.targets or any(s in t for s in args.targets)]
    original_of, per_file, sampled_note = {}, {}, {}
    for rel in targets:
        if args.breaks:
            original = (SRC / rel).read_text()
            original_of[rel] = original
            per_file[rel] = []
            for i, (_brel, label, old, new) in enumerate(b for b in BREAKS if b[0] == rel):
                if old not in original:
                    raise SystemExit(f"break {label!r}: {old!r} not found in {rel}")
                per_file[rel].append(Mutant(rel, i, original[: original.index(old)].count("\n") + 1, "break",
                                            old[:160], new[:160], original.replace(old, new, 1), context=label))
            continue
        original, mutants, n_candidates = generate(rel, 0 if args.lines else args.max_per_file, args.seed)
        if args.lines:
            lo, _, hi = args.lines.partition("-")
            mutants = [m for m in mutants if int(lo) <= m.line <= int(hi or lo)]
        original_of[rel] = original
        if args.max_per_file and n_candidates > len(mutants):
            sampled_note[rel] = f"sampled {len(mutants)} of ~{n_candidates} candidates (seed {args.seed})"
        per_file[rel] = mutants
    if args.list:
        for rel, ms in per_file.items():
            print(f"## {rel}: {len(ms)} mutants {sampled_note.get(rel, '')}")
            for m in ms:
                print(f"{rel}:{m.line} [{m.kind}] {m.before}  ->  {m.after}")
        return 0

    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    # SIGTERM -> SystemExit so that the children are killed and the worker copies removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    preimport(targets)

    t_start = time.time()
    # baseline: the unmutated code must pass its selection; its time sets the per-mutant timeout
    baseline_time: dict[str, float] = {}
    base_jobs = []
    for rel in targets:
        base = Mutant(rel, -1, 0, "baseline", "", "", original_of[rel])
        base_jobs.append((base, rel, tests_of(rel)))
    run_all(base_jobs, args.workers, lambda rel: 900.0, original_of)
    for (base, rel, _t) in base_jobs:
        if base.status != "survived":
            print(f"\nbaseline FAILED for {rel} ({base.status}): fix the tests first", file=sys.stderr)
            return 2
        baseline_time[rel] = base.seconds
    print("baseline seconds: " + ", ".join(f"{Path(r).name} {t:.1f}" for r, t in baseline_time.items()))

    carried = _carry_killed(args.carry_killed, per_file, sampled_note) if args.carry_killed else set()
    # round-robin over the files, so that a deadline leaves every file sampled alike
    jobs = []
    for k in range(max((len(v) for v in per_file.values()), default=0)):
        jobs += [(per_file[rel][k], rel, tests_of(rel)) for rel in targets
                 if k < len(per_file[rel]) and id(per_file[rel][k]) not in carried]
    print(f"{len(jobs)} mutants over {len(targets)} files, {args.workers} workers")
    stop_at = t_start + args.deadline if args.deadline else 0.0
    run_all(jobs, args.workers, lambda rel: args.timeout_factor * baseline_time[rel] + 10.0, original_of, stop_at)
    print()
    again = [(m, rel, tests_of(rel, wide=True)) for rel in targets for m in per_file[rel]
             if m.status == "survived" and tests_of(rel, wide=True) != tests_of(rel)]
    if again:
        print(f"phase 2: {len(again)} survivors against the wider selection")
        # the wider selection includes the slow older tests: a generous fixed cap instead of the fast baseline
        run_all(again, args.workers, lambda rel: 600.0, original_of)
        print()

    equivalent = load_equivalent()  # read at the end: the list may be edited while a long run goes on
    rows = []
    all_ok = True
    report = []
    for rel in targets:
        not_run = [m for m in per_file[rel] if m.status == "pending"]
        if not_run:
            sampled_note[rel] = (sampled_note.get(rel, "") + f"; {len(not_run)} not run (deadline)").lstrip("; ")
        ms = [m for m in per_file[rel] if m.status != "pending"]
        eq = equivalent.get(rel, {})
        survivors = [m for m in ms if m.status == "survived"]
        argued = [m for m in survivors if m.key in eq]
        open_ = [m for m in survivors if m.key not in eq]
        killed = sum(m.status in ("killed", "timeout") for m in ms)
        non_eq = len(ms) - len(argued)
        rate = killed / non_eq if non_eq else 1.0
        goal = 0.95 if ("metrics" in rel or "alignment" in rel) else 0.85
        ok = rate >= goal
        all_ok &= ok
        rows.append((rel, len(ms), killed, len(argued), len(open_), rate, goal, ok, sampled_note.get(rel, "")))
        for m in open_:
            print(f"SURVIVED {rel}:{m.line} [{m.kind}] {m.key}")
            print("    " + m.diff(original_of[rel]).replace("\n", "\n    "))
        for m in argued:
            report.append(f"equivalent {rel}:{m.line} {m.key} -- {eq[m.key]}")
        for m in ms:
            if m.status == "no-tests":
                print(f"NO TESTS COLLECTED {rel}:{m.line} {m.key}")
    for line in report:
        print(line)
    if args.breaks:
        print("\nreview breaks (issue 14):")
        for rel in targets:
            for m in per_file[rel]:
                print(f"  {m.status:8s} {rel}:{m.line}  {m.context}")
    print()
    print(f"{'file':42s} {'mutants':>7s} {'killed':>6s} {'equiv':>5s} {'surv':>5s} {'kill rate':>9s} goal")
    for rel, n, k, e, s, rate, goal, ok, note in rows:
        print(f"{rel:42s} {n:7d} {k:6d} {e:5d} {s:5d} {rate:9.1%} {goal:.0%} {'ok' if ok else 'BELOW'} {note}")
    print(f"total time {time.time() - t_start:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {"file": m.file, "line": m.line, "kind": m.kind, "mutant": m.key, "status": m.status,
                     "seconds": round(m.seconds, 2)}
                    for ms in per_file.values() for m in ms
                ],
                indent=1,
            )
        )
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
