"""What machine and software a result came from: one collector for the conformance, benchmark and
trajectory records (CPU, cores, threads, BLAS, library versions, environment variables, commit)."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from importlib import metadata
from typing import Any

import convstdp


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


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


LIBRARIES = (
    "convstdp",
    "numpy",
    "scipy",
    "numba",
    "jax",
    "jaxlib",
    "ngclearn",
    "torch",
    "llvmlite",
    "ngcsimlib",
    "hypothesis",
    "matplotlib",
    "threadpoolctl",
    "pytest-benchmark",
)
ENV_VARS = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "NUMBA_THREADING_LAYER",
    "XLA_FLAGS",
    "JAX_PLATFORMS",
    "CUDA_VISIBLE_DEVICES",
    "CONVSTDP_BACKEND",
)


def versions() -> dict[str, str | None]:
    """``{distribution: installed version or None}`` of the libraries a result depends on, without importing them."""
    return library_versions(LIBRARIES)


def blas_info() -> list[dict[str, Any]] | str:
    """threadpoolctl's view of the BLAS/OpenMP pools loaded now (NumPy's BLAS at least)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    keep = ("user_api", "internal_api", "version", "num_threads", "threading_layer", "architecture", "filepath")
    return [{k: v for k, v in info.items() if k in keep} for info in threadpool_info()]


def threads() -> dict[str, Any]:
    """Thread counts of the libraries already imported (nothing is imported for this)."""
    out: dict[str, Any] = {}
    if "numba" in sys.modules:
        nb = sys.modules["numba"]
        out["numba"] = nb.get_num_threads()
        try:
            out["numba_layer"] = nb.threading_layer()
        except ValueError:
            out["numba_layer"] = "not initialised"
    if "torch" in sys.modules:
        out["torch"] = sys.modules["torch"].get_num_threads()
    return out


def git_commit() -> str | None:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        res = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if res.returncode:
            return None
        return res.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def collect() -> dict[str, Any]:
    """Everything the report's environment section shows."""
    return {
        "convstdp": convstdp.__version__,
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": cpu_count(),
        "load_average": load_average(),
        "threads": threads(),
        "blas": blas_info(),
        "env": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
        "versions": versions(),
        "git_commit": git_commit(),
        "argv": sys.argv,
    }
