"""The machine's measured peak: float32 GEMM throughput through the libraries at hand.

A square float32 matmul ``C = A @ B`` (``2·n³`` FLOPs) is timed a few times and the best rate
kept: through NumPy's BLAS on the CPU, through PyTorch when installed, and through ``jnp.matmul``
at ``Precision.HIGHEST`` on each JAX accelerator. Probes run before and after the timings and the
better run counts. The largest CPU figure is the "peak" CPU runs are compared with (the GPU
figure for GPU runs): a practical peak for dense float32 work, not the datasheet's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _best_rate(fn: Callable[[], Any], n: int, repeats: int, min_s: float) -> tuple[float, float]:
    """Best GFLOP/s (and its time per matmul) of ``fn`` over ``repeats`` samples of ≥ ``min_s``."""
    fn()  # warm-up (and compile)
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-9)
    inner = max(1, int(min_s / one))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t0) / inner)
    return 2 * n**3 / best / 1e9, best


def numpy_gemm(n: int = 1024, repeats: int = 5, min_s: float = 0.05) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), np.float32), rng.random((n, n), np.float32)
    c = np.empty((n, n), np.float32)
    gf, t = _best_rate(lambda: np.matmul(a, b, out=c), n, repeats, min_s)
    return {"name": "numpy", "device": "cpu", "n": n, "gflops": gf, "seconds": t}


def torch_gemm(n: int = 1024, repeats: int = 5, min_s: float = 0.05) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand((n, n), generator=g), torch.rand((n, n), generator=g)
    c = torch.empty((n, n))
    gf, t = _best_rate(lambda: torch.matmul(a, b, out=c), n, repeats, min_s)
    return {"name": "torch", "device": "cpu", "n": n, "gflops": gf, "seconds": t, "threads": torch.get_num_threads()}


def jax_gemm(device: Any, n: int = 4096, repeats: int = 5, min_s: float = 0.05) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    a = jax.device_put(jnp.asarray(np.random.default_rng(0).random((n, n), np.float32)), device)
    b = jax.device_put(jnp.asarray(np.random.default_rng(1).random((n, n), np.float32)), device)
    mm = jax.jit(lambda u, v: jnp.matmul(u, v, precision=jax.lax.Precision.HIGHEST))
    gf, t = _best_rate(lambda: mm(a, b).block_until_ready(), n, repeats, min_s)
    return {
        "name": "jax",
        "device": f"{device.platform}:{device}",
        "n": n,
        "gflops": gf,
        "seconds": t,
        "precision": "HIGHEST",
    }


def run_probes(quick: bool = False, with_torch: bool = True, with_jax: bool = True) -> dict[str, Any]:
    """Every probe that can run here; ``{"probes": [...], "cpu_peak_gflops", "gpu_peak_gflops"}``."""
    n_cpu, reps, min_s = (256, 3, 0.01) if quick else (1024, 5, 0.1)
    probes: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    probes.append(numpy_gemm(n_cpu, reps, min_s))
    if with_torch:
        try:
            probes.append(torch_gemm(n_cpu, reps, min_s))
        except ImportError as err:
            skipped["torch"] = f"not installed ({err})"
    if with_jax:
        try:
            import jax

            for dev in jax.devices():
                if dev.platform != "cpu":
                    probes.append(jax_gemm(dev, 1024 if quick else 8192, reps, min_s))
        except ImportError as err:
            skipped["jax"] = f"not installed ({err})"
        except Exception as err:  # a broken accelerator is reported, not fatal
            skipped["jax"] = f"{type(err).__name__}: {err}"
    cpu = [p["gflops"] for p in probes if p["device"] == "cpu"]
    gpu = [p["gflops"] for p in probes if p["device"] != "cpu"]
    return {
        "probes": probes,
        "skipped": skipped,
        "cpu_peak_gflops": max(cpu) if cpu else None,
        "gpu_peak_gflops": max(gpu) if gpu else None,
    }


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two probe runs (before and after the timings) → the best rate of each probe, peaks recomputed.

    A busy moment during one run cannot then pull the peak down.
    """
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for p in [*a["probes"], *b["probes"]]:
        key = (p["name"], p["device"])
        if key not in best or p["gflops"] > best[key]["gflops"]:
            best[key] = p
    probes = list(best.values())
    cpu = [p["gflops"] for p in probes if p["device"] == "cpu"]
    gpu = [p["gflops"] for p in probes if p["device"] != "cpu"]
    return {
        "probes": probes,
        "skipped": {**a.get("skipped", {}), **b.get("skipped", {})},
        "cpu_peak_gflops": max(cpu) if cpu else None,
        "gpu_peak_gflops": max(gpu) if gpu else None,
        "runs": 2,
    }
