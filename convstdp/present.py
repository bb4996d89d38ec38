"""Presentation in one place: tables (through ``tabulate``), durations, and JSON.

Every record the package writes (conformance, benchmark, trajectory) goes through :func:`dumps`,
so they share one convention: dataclasses become objects, NumPy scalars and arrays plain values,
tuples lists, and non-finite floats the strings ``"inf"``, ``"-inf"``, ``"nan"`` (JSON has no such
numbers; ``float()`` reads the strings back).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

__all__ = ["table", "fmt_time", "fmt_num", "jsonable", "dumps", "write_json"]

_FORMATS = {"text": "simple", "md": "github", "html": "html"}


def table(header: Sequence[Any], rows: Sequence[Sequence[Any]], fmt: str = "text") -> str:
    """``rows`` under ``header`` as ``"text"`` (console), ``"md"`` (GitHub Markdown) or ``"html"``.

    Cells are shown as given (no number parsing), so pre-formatted figures keep their digits.
    """
    cells = [[str(c).replace("\n", " ") for c in row] for row in rows]
    if fmt == "md":
        cells = [[c.replace("|", "\\|") for c in row] for row in cells]
    return tabulate(cells, headers=[str(h) for h in header], tablefmt=_FORMATS[fmt], disable_numparse=True)


def fmt_time(s: float | None) -> str:
    """Seconds → 3 significant digits in s, ms or µs (``"–"`` for none or non-finite)."""
    if s is None or not math.isfinite(s):
        return "–"
    unit, scale = next(((u, k) for u, k in (("s", 1.0), ("ms", 1e-3)) if abs(s) >= k), ("µs", 1e-6))
    v = s / scale
    return f"{v:.3g} {unit}" if abs(v) < 1000 else f"{v:.0f} {unit}"


def fmt_num(v: float | None, digits: int = 3) -> str:
    """A number to ``digits`` significant digits (``"–"`` for none or non-finite)."""
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:.{digits}g}" if abs(v) < 10**digits else f"{v:.0f}"


def jsonable(o: Any) -> Any:
    """``o`` as plain JSON values under this package's one convention (see the module docstring)."""
    if isinstance(o, bool) or o is None or isinstance(o, str | int):
        return o
    if isinstance(o, float):
        return o if math.isfinite(o) else str(o)
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        to_dict = getattr(o, "to_dict", None)
        return jsonable(to_dict() if callable(to_dict) else dataclasses.asdict(o))
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, list | tuple | set | frozenset):
        return [jsonable(v) for v in (sorted(o) if isinstance(o, set | frozenset) else o)]
    if hasattr(o, "tolist"):  # NumPy scalars and arrays
        return jsonable(o.tolist())
    if isinstance(o, Path):
        return str(o)
    return str(o)


def dumps(o: Any, indent: int | None = 1) -> str:
    return json.dumps(jsonable(o), indent=indent, allow_nan=False)


def write_json(path: str | Path, o: Any) -> Path:
    p = Path(path)
    p.write_text(dumps(o) + "\n")
    return p
