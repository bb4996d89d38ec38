"""pytest-benchmark suite over :mod:`convstdp.bench.workloads` (the same workloads as ``convstdp bench``).

Run: ``pytest benchmarks/ --benchmark-json out.json`` (add ``-m "not sweep"`` for SPEC §8 only,
``-k "online-decoder and numba"`` to pick). Not collected by the project's ``pytest`` (testpaths=tests).
"""

from __future__ import annotations

import pytest

from convstdp.bench.suite import resolve_runners


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sweep: a scaling-sweep point (deselect with -m 'not sweep')")
    config.addinivalue_line("markers", "spec: a SPEC §8 workload")


_RUNNERS = None


def runners():
    """Every backend and peer, resolved once per session (unavailable ones carry their reason)."""
    global _RUNNERS
    if _RUNNERS is None:
        _RUNNERS = {r.name: r for r in resolve_runners()}
    return _RUNNERS
