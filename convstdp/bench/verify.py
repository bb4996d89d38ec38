"""Check a runner against the reference before timing it: a fast wrong answer is no result.

Each distinct (op, kernel, stride, padding) among the workloads is shrunk to a small case
(:func:`convstdp.bench.workloads.shrink`) and run in float32; the reference runs on the same
values in float64. An element passes when ``|got - want| <= rtol · scale + atol`` where
``scale`` is the same computation on absolute values (the size of the terms that were summed),
so the bound follows the math instead of one global tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convstdp.backends import Backend, get_backend
from convstdp.bench.workloads import STDP_PARAMS, Workload, call, make_inputs, shrink

RTOL = {"highest": 1e-4}  # float32 against float64 terms; reduced-precision modes get REDUCED_RTOL
REDUCED_RTOL = 2e-2
ATOL = 1e-6


@dataclass
class Check:
    workload: str
    ok: bool
    worst: float  # largest |error| / bound over all outputs (≤ 1 passes)
    detail: str = ""


def _key(w: Workload) -> tuple:
    return (w.op, w.k, w.stride, w.padding)


def _scales(w: Workload, inp: dict[str, np.ndarray], want: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """Each output recomputed on absolute values, in float64: the magnitude of its terms."""
    ref = get_backend("reference")
    a = {k: np.abs(v.astype(np.float64)) for k, v in inp.items()}
    geo = dict(stride=w.stride, padding=w.padding)
    p = STDP_PARAMS

    def dw_scale() -> np.ndarray:
        ltp = ref.deconv2d_dk(
            np.abs(a["pre_trace"] - p["pretrace_target"]), p["A_plus"] * a["post_spike"], kernel_size=w.k, **geo
        )
        ltd = ref.deconv2d_dk(a["pre_spike"], p["A_minus"] * a["post_trace"], kernel_size=w.k, **geo)
        return ltp + ltd

    if w.op == "deconv2d":
        return [ref.deconv2d(a["x"], a["kernel"], **geo)]
    if w.op == "deconv2d_dk":
        return [ref.deconv2d_dk(a["x"], a["d_out"], kernel_size=w.k, **geo)]
    if w.op == "deconv2d_dx":
        return [ref.deconv2d_dx(a["kernel"], a["d_out"], **geo)]
    dws = dw_scale()
    ws = a["kernel"] * (1 + p["w_decay"]) + p["eta"] * dws
    if w.op == "stdp_update":
        return [ws, dws]
    w_new = np.abs(want[1])
    return [ref.deconv2d(a["x"], a["kernel"], **geo), ws, dws, ref.deconv2d_dx(w_new, a["post_spike"], **geo)]


def check(backend: Backend, w: Workload, seed: int = 0) -> Check:
    """Run the shrunk ``w`` on ``backend`` and on the reference; compare within the bound."""
    small = shrink(w)
    inp = make_inputs(small, seed + 17)
    try:
        got = call(backend, small, inp)
    except NotImplementedError as err:
        return Check(small.name, True, 0.0, f"not supported: {err}")
    want = call(get_backend("reference"), small, {k: v.astype(np.float64) for k, v in inp.items()})
    got_t = got if isinstance(got, tuple) else (got,)
    want_t = want if isinstance(want, tuple) else (want,)
    rtol = RTOL.get(backend.precision, REDUCED_RTOL)
    worst, detail = 0.0, ""
    for i, (g, r, s) in enumerate(zip(got_t, want_t, _scales(small, inp, want_t), strict=True)):
        g = np.asarray(g, dtype=np.float64)
        if g.shape != r.shape:
            return Check(small.name, False, float("inf"), f"output {i}: shape {g.shape}, expected {r.shape}")
        ratio = np.abs(g - r) / (rtol * s + ATOL)
        ratio = np.where(np.isnan(ratio), np.inf, ratio)
        j = int(np.argmax(ratio))
        if ratio.flat[j] > worst:
            idx = np.unravel_index(j, ratio.shape)
            worst = float(ratio.flat[j])
            detail = f"output {i} at {tuple(int(v) for v in idx)}: got {g.flat[j]:.6g}, want {r.flat[j]:.6g}"
    return Check(small.name, worst <= 1.0, worst, detail)


def check_runner(backend: Backend, workloads: list[Workload], seed: int = 0) -> dict[tuple, Check]:
    """One check per distinct (op, kernel, stride, padding) among ``workloads``."""
    out: dict[tuple, Check] = {}
    for w in workloads:
        key = _key(w)
        if key in out:
            continue
        try:
            out[key] = check(backend, w, seed)
        except Exception as err:  # reported as a failed check, never fatal
            out[key] = Check(shrink(w).name, False, float("inf"), f"{type(err).__name__}: {err}")
    return out


def lookup(checks: dict[tuple, Check], w: Workload) -> Check | None:
    return checks.get(_key(w))
