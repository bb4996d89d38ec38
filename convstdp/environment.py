"""What machine and software a result came from: shared by the conformance and benchmark records."""

from __future__ import annotations

import platform
from collections.abc import Iterable
from importlib import metadata


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions(libraries: Iterable[str]) -> dict[str, str | None]:
    """``{distribution: installed version or None}``, without importing anything."""
    out: dict[str, str | None] = {}
    for lib in libraries:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    return out
