"""Small helpers shared by the file-format readers (modality names, option parsing, checks)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np

log = logging.getLogger("emofusion.data")

# names used in the wild -> emofusion's modality names
MODALITY_ALIASES = {
    "text": "text",
    "language": "text",
    "words": "text",
    "audio": "audio",
    "acoustic": "audio",
    "covarep": "audio",
    "visual": "visual",
    "video": "visual",
    "vision": "visual",
    "facet": "visual",
}
CANONICAL = ("text", "audio", "visual")


class DataFormatError(ValueError):
    """A file does not follow the layout its reader expects (the message names file, sample, problem)."""


def canonical_modality(name: str) -> str:
    key = str(name).strip().lower()
    if key not in MODALITY_ALIASES:
        raise ValueError(f"unknown modality {name!r}; expected one of {', '.join(CANONICAL)}")
    return MODALITY_ALIASES[key]


def parse_modalities(modalities: str | Iterable[str] | None) -> list[str] | None:
    """``"text,audio"`` or ``["text", "audio"]`` -> canonical names (order kept, duplicates removed)."""
    if modalities is None:
        return None
    if isinstance(modalities, str):
        items = [m for m in modalities.split(",") if m.strip()]
    else:
        items = list(modalities)
    out: list[str] = []
    for m in items:
        c = canonical_modality(m)
        if c not in out:
            out.append(c)
    if not out:
        raise ValueError("modalities must name at least one modality")
    return out


def as_bool(value) -> bool:
    """Dataset options arrive as strings from the CLI (``data.fill_missing=true``)."""
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("1", "true", "yes", "on"):
            return True
        if v in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    return bool(value)


def check_finite(array: np.ndarray, where: str, allow_nonfinite: bool, hint: str | None = None) -> None:
    """``hint``: the reader's real option to accept them (each reader names its own)."""
    if allow_nonfinite or array.size == 0 or array.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(array)
    if bad.any():
        idx = np.argwhere(bad)[0]
        where_first = f"sample #{int(idx[0])}" + (f", index {tuple(int(i) for i in idx[1:])}" if len(idx) > 1 else "")
        raise DataFormatError(
            f"{where}: {int(bad.sum())} non-finite values (first in {where_first}); "
            + (hint or "pass data.allow_nonfinite=true to keep them (hygiene ignores them when fitting and "
               "zeroes them after standardising)")
        )


def limit_count(n: int, limit) -> int:
    return n if limit in (None, "", 0) else min(n, int(limit))
