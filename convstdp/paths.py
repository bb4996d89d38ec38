"""Which internal path served a call: declared by each implementation, recorded per call.

A fast backend has several code paths for one operator (serial or parallel drivers, a
formulation chosen by size, sparse- or dense-driven passes, batch chunks with a remainder).
Conformance is only worth something for the paths it exercised, so every implementation
declares the paths it has and notes the ones each call takes:

- ``impl.paths``: a collection of path names (``"<operator>/<path>"``, e.g.
  ``"deconv2d/parallel"``), every path the implementation can take. An implementation that
  declares none is one path per operator.
- :func:`note` (called by the implementation, cheaply, on every call): the path taken.
- :func:`recording` (used by the harness and the benchmark): the paths noted inside the block.

Recording uses a :class:`contextvars.ContextVar`, so nothing is kept when nobody records and
threads do not see each other's paths.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = ["note", "recording", "declared"]

_taken: ContextVar[list[str] | None] = ContextVar("convstdp_paths_taken", default=None)


def note(*paths: str) -> None:
    """Record that the current call took ``paths`` (a no-op unless someone is recording)."""
    sink = _taken.get()
    if sink is not None:
        sink.extend(paths)


@contextmanager
def recording() -> Iterator[list[str]]:
    """``with recording() as taken:`` collects, in order, the paths noted inside the block."""
    sink: list[str] = []
    token = _taken.set(sink)
    try:
        yield sink
    finally:
        _taken.reset(token)


def declared(impl: Any) -> frozenset[str]:
    """The paths ``impl`` declares (``impl.paths``), or the empty set when it declares none."""
    paths = getattr(impl, "paths", None)
    return frozenset(str(p) for p in paths) if paths else frozenset()
