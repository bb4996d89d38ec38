"""Numba's SPEC §8 step against PyTorch and JAX across spike densities (issue 11), in one process.

Usage: ``NUMBA_CACHE_DIR=... python scripts/numba_density.py [--workloads batch-mid,...]
[--densities 0.01,0.1,0.3,1.0] [--runners numba,numba-sparse,numba-dense,numba-old,torch,jax] [--samples 7]
[--peak] [--memory] [--old DIR]``

Every runner is timed after warm-up, ``--samples`` times, on the same inputs; the median is printed
(ms). Spikes (``x`` = ``pre_spike``, ``post_spike``) are 0/1 float32 at density ``d``; traces are dense
(U(0.5, 1) where a spike is, U(0.01, 0.5) elsewhere). PyTorch runs on NCHW tensors prepared outside the
timed region, with as many threads as Numba; JAX gets device arrays prepared outside. ``numba-sparse``
forces the sparse (row-list) path, ``numba-dense`` the dense (GEMM) one: the two sides of the threshold.
``numba-old`` is the backend before issue 11 (``--old DIR``: a directory holding that version's
``numba.py`` as ``numba_orig.py``, importing its kernels as ``_numba_kernels_orig``).
``--peak``: float32 GEMM peak (``np.dot`` of 2048² matrices). ``--memory``: tracemalloc peak of one Numba
step over the size of its outputs.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

import convstdp
from convstdp import geometry
from convstdp.conformance.cases import SPEC_WORKLOADS, parse_case

PARAMS = dict(A_plus=0.9, A_minus=0.6, eta=0.01, pretrace_target=0.05, w_decay=0.001, w_bound=1.0)


def inputs(name: str, density: float, seed: int = 0) -> tuple[dict[str, np.ndarray], geometry.Geometry]:
    g = parse_case(SPEC_WORKLOADS[name]).geometry()
    rng = np.random.default_rng(seed)

    def spikes(shape):
        return (rng.random(shape) < density).astype(np.float32)

    def trace(s):
        return np.where(s > 0, rng.uniform(0.5, 1.0, s.shape), rng.uniform(0.01, 0.5, s.shape)).astype(np.float32)

    pre, post = spikes(g.x_shape), spikes(g.y_shape)
    k = (rng.random(g.kernel_shape) * 0.5 + 0.01).astype(np.float32)
    return dict(kernel=k, x=pre, pre_spike=pre, pre_trace=trace(pre), post_spike=post, post_trace=trace(post)), g


def median_ms(fn, samples: int) -> float:
    fn()
    fn()
    ts = []
    for _ in range(samples):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1e3 * float(np.median(ts))


def runner(name: str, inp: dict[str, np.ndarray], g: geometry.Geometry, threads: int):
    names = ("kernel", "x", "pre_spike", "pre_trace", "post_spike", "post_trace")
    kw = dict(stride=g.stride, padding=g.pads, **PARAMS)
    if name == "numba-old":  # the backend before the dense path: ``--old DIR`` holds its two modules
        import numba_orig  # noqa: PLC0415  (numba.py of before, importing _numba_kernels_orig)

        impl = numba_orig.NumbaBackend()
        args = [inp[n] for n in names]
        params = geometry.StdpParams(**PARAMS)
        return lambda: impl.stdp_step(*args, stride=g.stride, padding=g.pads, params=params)
    if name.startswith("numba"):
        impl = convstdp.get_backend("numba").impl
        force = {"numba": None, "numba-sparse": "sparse", "numba-dense": "dense"}[name]
        args = [inp[n] for n in names]
        params = geometry.StdpParams(**PARAMS)

        def run():
            impl.force = force
            try:
                return impl.stdp_step(*args, stride=g.stride, padding=g.pads, params=params)
            finally:
                impl.force = None

        return run
    if name == "torch":
        import torch

        from convstdp.fast.torch import TorchBackend

        t = TorchBackend(threads)
        torch.set_num_threads(threads)
        return t.native("stdp_step", inp, g, geometry.check_stdp_params(**PARAMS))
    if name == "jax":
        import jax

        be = convstdp.get_backend("jax")
        dev = {n: jax.device_put(inp[n]) for n in names}
        dev["x"] = dev["pre_spike"]

        def run():
            return jax.block_until_ready(be.stdp_step(*(dev[n] for n in names), **kw))

        return run
    raise ValueError(name)


def gemm_peak() -> float:
    a = np.random.default_rng(0).random((2048, 2048)).astype(np.float32)
    return 2 * 2048**3 / (median_ms(lambda: np.dot(a, a), 5) / 1e3) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workloads", default="batch-mid,batch-large")
    ap.add_argument("--densities", default="0.01,0.1,0.3,1.0")
    ap.add_argument("--runners", default="numba,torch,jax")
    ap.add_argument("--samples", type=int, default=7)
    ap.add_argument("--peak", action="store_true")
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--old", help="directory with numba_orig.py / _numba_kernels_orig.py (runner numba-old)")
    a = ap.parse_args()
    if a.old:
        import sys

        sys.path.insert(0, a.old)
    import numba

    threads = numba.get_num_threads()
    if a.peak:
        print(f"float32 GEMM peak (np.dot 2048^2): {gemm_peak():.1f} GFLOP/s")
    runners = a.runners.split(",")
    print(f"{'workload':15} {'density':>7} " + " ".join(f"{r:>13}" for r in runners) + "   (ms, median)")
    for wl in a.workloads.split(","):
        for d in map(float, a.densities.split(",")):
            inp, g = inputs(wl, d)
            n, h, w, ci = g.x_shape
            flops = 4 * 2 * n * h * w * ci * g.kernel_shape[3] * g.kernel_shape[0] * g.kernel_shape[1]
            row = []
            for r in runners:
                ms = median_ms(runner(r, inp, g, threads), a.samples)
                row.append(f"{ms:8.2f} {flops / ms / 1e6:4.0f}G")
            print(f"{wl:15} {d:7.2f} " + " ".join(f"{c:>13}" for c in row), flush=True)
            if a.memory:
                fn = runner("numba", inp, g, threads)
                fn()
                tracemalloc.start()
                outs = fn()
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                size = sum(o.nbytes for o in outs)
                print(
                    f"    numba step peak traced memory {peak / 1e6:.2f} MB, outputs {size / 1e6:.2f} MB, "
                    f"extra {(peak - size) / size:.2f}x outputs"
                )


if __name__ == "__main__":
    main()
