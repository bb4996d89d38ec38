"""The machine's measured peak: float32 GEMM throughput through the libraries at hand.

A square float32 matmul ``C = A @ B`` (``2·n³`` FLOPs) is timed a few times and the best rate
kept: through NumPy's BLAS on the CPU, through PyTorch when installed, and through ``jnp.matmul``
at ``Precision.HIGHEST`` on each JAX accelerator. Probes run before and after the timings and the
better run counts. The largest CPU figure is the "peak" CPU runs are compared with (the GPU
figure for GPU runs): a practical peak for dense float32 work, not the datasheet's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from convstdp.bench.timing import per_call


def _probe(name: str, device: str, n: int, matmul: Callable[[], Any], repeats: int, min_s: float, **extra) -> dict:
    """Best GFLOP/s (and its time per matmul) of ``matmul`` over ``repeats`` samples of ≥ ``min_s``."""
    matmul()  # warm-up (and compile)
    inner = max(1, int(min_s / max(per_call(matmul, 1), 1e-9)))
    best = min(per_call(matmul, inner) for _ in range(repeats))
    return {"name": name, "device": device, "n": n, "gflops": 2 * n**3 / best / 1e9, "seconds": best, **extra}


def numpy_gemm(n: int = 1024, repeats: int = 5, min_s: float = 0.05) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), np.float32), rng.random((n, n), np.float32)
    c = np.empty((n, n), np.float32)
    return _probe("numpy", "cpu", n, lambda: np.matmul(a, b, out=c), repeats, min_s)


def torch_gemm(n: int = 1024, repeats: int = 5, min_s: float = 0.05) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand((n, n), generator=g), torch.rand((n, n), generator=g)
    c = torch.empty((n, n))
    return _probe("torch", "cpu", n, lambda: torch.matmul(a, b, out=c), repeats, min_s, threads=torch.get_num_threads())


def jax_gemm(device: Any, n: int = 4096, repeats: int = 5, min_s: float = 0.05) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    a, b = (jax.device_put(jnp.asarray(np.random.default_rng(s).random((n, n), np.float32)), device) for s in (0, 1))
    mm = jax.jit(lambda u, v: jnp.matmul(u, v, precision=jax.lax.Precision.HIGHEST))
    call = lambda: mm(a, b).block_until_ready()
    return _probe("jax", f"{device.platform}:{device}", n, call, repeats, min_s, precision="HIGHEST")


def _peaks(probes: list[dict[str, Any]], skipped: dict[str, str], **extra) -> dict[str, Any]:
    """``{"probes", "skipped", "cpu_peak_gflops", "gpu_peak_gflops"}``: the best CPU and accelerator rates."""
    cpu = [p["gflops"] for p in probes if p["device"] == "cpu"]
    gpu = [p["gflops"] for p in probes if p["device"] != "cpu"]
    peaks = {"cpu_peak_gflops": max(cpu) if cpu else None, "gpu_peak_gflops": max(gpu) if gpu else None}
    return {"probes": probes, "skipped": skipped, **peaks, **extra}


def run_probes(quick: bool = False, with_torch: bool = True, with_jax: bool = True) -> dict[str, Any]:
    """Every probe that can run here; ``{"probes": [...], "cpu_peak_gflops", "gpu_peak_gflops"}``."""
    n_cpu, reps, min_s = (256, 3, 0.01) if quick else (1024, 5, 0.1)
    probes = [numpy_gemm(n_cpu, reps, min_s)]
    skipped: dict[str, str] = {}
    if with_torch:
        try:
            probes.append(torch_gemm(n_cpu, reps, min_s))
        except ImportError as err:
            skipped["torch"] = f"not installed ({err})"
    if with_jax:
        try:
            import jax

            for dev in jax.devices():
                if dev.platform != "cpu":  # appended one by one: a later device failing keeps the earlier
                    probes.append(jax_gemm(dev, 1024 if quick else 8192, reps, min_s))
        except ImportError as err:
            skipped["jax"] = f"not installed ({err})"
        except Exception as err:  # a broken accelerator is reported, not fatal
            skipped["jax"] = f"{type(err).__name__}: {err}"
    return _peaks(probes, skipped)


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two probe runs (before and after the timings) → the best rate of each probe, peaks recomputed.

    A busy moment during one run cannot then pull the peak down.
    """
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for p in [*a["probes"], *b["probes"]]:
        key = (p["name"], p["device"])
        if key not in best or p["gflops"] > best[key]["gflops"]:
            best[key] = p
    return _peaks(list(best.values()), {**a.get("skipped", {}), **b.get("skipped", {})}, runs=2)
