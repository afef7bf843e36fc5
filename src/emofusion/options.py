"""Options of registered models and datasets, read from their signatures and docstrings: the closest
valid option for a typo (``model.hiden_dim``), and ``emofusion models NAME``."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import sys
from collections.abc import Callable

SKIP = {"self", "modality_dims", "task", "cls"}
_UNEXPECTED = re.compile(r"unexpected keyword argument '(\w+)'")
_UNKNOWN_LIST = re.compile(r"unknown options \[([^\]]*)\]")


def _resolve(annotation, module) -> type | None:
    if isinstance(annotation, str):
        annotation = getattr(sys.modules.get(module), annotation.split("[")[0].strip(), None)
    return annotation if inspect.isclass(annotation) else None


def _docs(obj) -> str:
    parts = []
    for klass in inspect.getmro(obj) if inspect.isclass(obj) else [obj]:
        parts.append(inspect.getdoc(klass) or "")
        init = getattr(klass, "__init__", None)
        if init is not None and klass is not object:
            parts.append(inspect.getdoc(init) or "")
    return "\n".join(parts)


def _help_for(name: str, docs: str) -> str:
    n = re.escape(name)
    m = re.search(rf"``{n}``\s*(?:\(([^)]*)\)|[:=]\s*([^;\n]+))", docs) or re.search(
        rf"(?m)^\s*{n}\s*(?:\(([^)]*)\)|:\s*([^;\n]+))", docs
    )
    if not m:
        return ""
    text = " ".join((m.group(1) or m.group(2) or "").split())
    return re.split(r"(?<=\.)\s", text)[0].strip()[:100]


def collect_options(factory: Callable) -> dict[str, tuple[object, str]]:
    """``name -> (default, help)`` over the factory's signature, its base classes' ``__init__`` (models
    pass ``**options`` up), the class a builder function returns, and dataclass configs it fills."""
    out: dict[str, tuple[object, str]] = {}
    targets: list = []
    if inspect.isclass(factory):
        targets = [k.__init__ for k in inspect.getmro(factory) if k is not object and "__init__" in vars(k)]
        docs = _docs(factory)
    else:
        targets = [factory]
        docs = _docs(factory)
        try:
            ret = _resolve(inspect.signature(factory).return_annotation, factory.__module__)
        except (TypeError, ValueError):
            ret = None
        if ret is not None and not issubclass(ret, tuple) and not dataclasses.is_dataclass(ret):
            targets += [k.__init__ for k in inspect.getmro(ret) if k is not object and "__init__" in vars(k)]
            docs += "\n" + _docs(ret)
        module = sys.modules.get(factory.__module__)
        try:
            source = inspect.getsource(factory)
        except (OSError, TypeError):
            source = ""
        for cfg_name in re.findall(r"\b(\w+Config)\(\*\*", source):  # options passed on to a dataclass
            cfg = getattr(module, cfg_name, None)
            if cfg is not None and dataclasses.is_dataclass(cfg):
                docs += "\n" + (inspect.getdoc(cfg) or "")
                for f in dataclasses.fields(cfg):
                    default = f.default if f.default is not dataclasses.MISSING else None
                    out.setdefault(f.name, (default, ""))
        for popped in re.findall(r"options\.(?:pop|get)\(\"(\w+)\"", source):
            out.setdefault(popped, (None, ""))
    for fn in targets:
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            continue
        for i, (n, p) in enumerate(sig.parameters.items()):
            if n in SKIP or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            if i == 0 and not inspect.isclass(factory) and p.default is p.empty:
                continue  # a prefix loader's argument (the path in 'mfn:PATH')
            default = None if p.default is p.empty else p.default
            out.setdefault(n, (default, ""))
    return {n: (d, _help_for(n, docs)) for n, (d, _) in out.items()}


class UnknownOptionError(ValueError, TypeError):
    """An option name the model/dataset does not take (a TypeError too: Python's own error for it)."""


def unknown_names(err: Exception) -> list[str]:
    msg = str(err)
    found = _UNEXPECTED.findall(msg)
    for group in _UNKNOWN_LIST.findall(msg):
        found += [x.strip().strip("'\"") for x in group.split(",") if x.strip()]
    return found


def option_error(kind: str, name: str, factory: Callable, err: Exception, prefix: str) -> UnknownOptionError | None:
    """A ValueError naming the unknown option(s), the closest valid one and every valid one; None when
    ``err`` is not about an unknown option."""
    bad = unknown_names(err)
    if not bad:
        return None
    valid = sorted(collect_options(factory))
    hints = []
    for b in bad:
        close = difflib.get_close_matches(b, valid, n=1, cutoff=0.6)
        hints.append(f"{prefix}{b}" + (f" (did you mean {prefix}{close[0]}?)" if close else ""))
    listed = ", ".join(valid) if valid else "none"
    return UnknownOptionError(f"{kind} {name!r}: unknown option {', '.join(hints)}; valid options: {listed}")


def format_options(factory: Callable) -> list[str]:
    lines = []
    for n, (default, help_) in sorted(collect_options(factory).items()):
        lines.append(f"  {n} = {default!r}" + (f"    {help_}" if help_ else ""))
    return lines
