"""The float64 expectation of a case: the reference's outputs and the per-element tolerance scales
(:mod:`convstdp.conformance.tolerance` derives the scales and says how a scale becomes a bound).

Every operator output is a bilinear sum ``B(a, b)`` (``deconv2d(x, K)``, ``dK(x, d)``, ``dX(K, d)``)
or a short composition of them. For each sum, :func:`sum_stats` gives per output element the three
float64 quantities the bound is built from: ``S = B(a, b)`` (the value), ``R = sqrt(B(a², b²))``
(the root of the sum of squared terms) and ``n = B(a≠0, b≠0)`` (the terms that can round).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np

from convstdp import geometry
from convstdp.conformance import tolerance as tol
from convstdp.conformance.cases import Case
from convstdp.conformance.operators import OPS, Inputs
from convstdp.reference import ops as ref

__all__ = ["Expected", "Expectation", "SumStats", "expect", "sum_stats"]

Bilinear = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Expected:
    """Reference value (float64), tolerance scale (float64, same shape) and SPEC dtype."""

    value: np.ndarray
    scale: np.ndarray
    dtype: np.dtype


@dataclass
class Expectation:
    """Everything the reference says about one case: ``{operator: {output: Expected}}``."""

    case: Case
    ops: dict[str, dict[str, Expected]]


@dataclass
class SumStats:
    """Per output element of a sum of products ``Σ a·b`` (all float64, the output's shape):
    ``value`` ``S``, ``rms`` ``R = sqrt(Σ (a·b)²)``, ``count`` ``n`` (non-zero terms)."""

    value: np.ndarray
    rms: np.ndarray
    count: np.ndarray

    def scale(self) -> np.ndarray:
        """:func:`convstdp.conformance.tolerance.sum_scale` of these statistics (the output's shape)."""
        e = tol.EXTRA_ROUNDINGS
        return tol.sum_scale(self.value, self.rms, self.count, e["sum_products"], e["sum_values"])


def _f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).astype(np.float64)


def _unit(a: np.ndarray) -> tuple[np.ndarray, float]:
    """``(a / max|a|, max|a|)`` (``max|a|`` taken as 1 for an all-zero array), so that squaring
    cannot overflow for any finite input."""
    m = float(np.max(np.abs(a))) if a.size else 0.0
    m = m if m > 0 and np.isfinite(m) else 1.0
    return a / m, m


def sum_stats(op: Bilinear, a: np.ndarray, b: np.ndarray, a_terms: np.ndarray | None = None) -> SumStats:
    """:class:`SumStats` of the bilinear ``op(a, b)`` (float64 arrays; ``op`` the reference operator
    with its geometry bound). Three reference runs: values, squares, non-zero indicators.

    ``a_terms`` (bool, ``a``'s shape) overrides which elements of ``a`` count as possibly non-zero
    (default ``a != 0``), for an ``a`` that a backend computes and may round away from zero."""
    ua, ma = _unit(a)
    ub, mb = _unit(b)
    value = op(a, b)
    rms = (ma * mb) * np.sqrt(op(ua * ua, ub * ub))
    nz_a = (a != 0) if a_terms is None else a_terms
    count = op(nz_a.astype(np.float64), (b != 0).astype(np.float64))
    return SumStats(value, rms, count)


def expect(case: Case, inputs: Inputs) -> Expectation:
    """The reference outputs (float64, on float64-cast inputs) and tolerance scales of ``case``;
    only those of ``deconv2d``, ``deconv2d_dk`` and ``deconv2d_dx`` when ``inputs`` holds only
    ``x``, ``kernel`` and ``d_out`` (the adjoint check's own inputs)."""
    g = case.geometry()
    kw: dict[str, Any] = dict(stride=g.stride, padding=g.pads)
    sums: dict[str, Bilinear] = {
        "deconv2d": partial(ref.deconv2d, **kw),
        "deconv2d_dk": partial(ref.deconv2d_dk, kernel_size=g.kernel_size, **kw),
        "deconv2d_dx": partial(ref.deconv2d_dx, **kw),
    }
    x, k, d = (_f64(inputs[a]) for a in ("x", "kernel", "d_out"))
    dt = {
        name: geometry.result_dtype(*(np.dtype(inputs[a].dtype) for a in op.args))
        for name, op in OPS.items()
        if all(a in inputs for a in op.args)
    }
    ops: dict[str, dict[str, Expected]] = {}
    for name, a, b in (("deconv2d", x, k), ("deconv2d_dk", x, d), ("deconv2d_dx", k, d)):
        st = sum_stats(sums[name], a, b)
        ops[name] = {OPS[name].outputs[0]: Expected(st.value, st.scale(), dt[name])}
    if "stdp_update" in dt:
        ops |= _stdp(inputs, case.params, sums, dt, ops["deconv2d"]["y"])
    return Expectation(case, ops)


def _dw(
    inputs: Inputs, p: dict[str, Any], dk: Bilinear, out: np.dtype
) -> tuple[SumStats, SumStats, np.ndarray, np.ndarray]:
    """``(ltp, ltd, dW, scale of dW)``: ``dW`` composed of its two sums (tolerance module docstring,
    "Composed outputs"), on a result of dtype ``out``."""
    prs, prt, pos, pot = (_f64(inputs[a]) for a in ("pre_spike", "pre_trace", "post_spike", "post_trace"))
    tgt, a_plus = p["pretrace_target"], p["A_plus"]
    # With a shift, every pre_trace element is a term that can round (fl(pre_trace - target)).
    ltp = sum_stats(dk, prt - tgt, a_plus * pos, np.ones(prt.shape, bool) if tgt != 0 else None)
    ltd = sum_stats(dk, prs, p["A_minus"] * pot)
    e = tol.EXTRA_ROUNDINGS
    dw = ltp.value - ltd.value
    s_dw = (
        tol.stacked_scale((ltp.value, ltp.rms, ltp.count), (-ltd.value, ltd.rms, ltd.count))
        + e["ltp_products"] * ltp.rms
        + e["ltp_values"] * abs(ltp.value)
        + e["ltd_products"] * ltd.rms
        + e["ltd_values"] * abs(ltd.value)
        + abs(dw)
    )
    if tgt != 0:  # fl(pretrace_target) shifts every LTP term by the same relative amount
        s_dw = s_dw + abs(tgt * a_plus) * dk(np.ones_like(prt), abs(pos))
    if tgt != 0 and np.dtype(inputs["pre_trace"].dtype).itemsize < out.itemsize:
        # Narrow traces in a wider sum: every term carries the same low-order bits (the target's), so
        # the target part's roundings add up instead of averaging out: u·|tgt·A+|·max|post|·m²/2 for
        # m terms summed in sequence (tolerance module docstring, "Composed outputs").
        m = dk(np.ones_like(prt), (pos != 0).astype(np.float64))
        s_dw = s_dw + abs(tgt * a_plus) * np.abs(pos).max(initial=0.0) * m * m / 2
    return ltp, ltd, dw, s_dw


def _stdp(inputs: Inputs, p: dict[str, Any], sums: dict[str, Bilinear], dt: dict[str, np.dtype], y: Expected) -> Any:
    """The expectations of ``stdp_update`` (composed) and ``stdp_step`` (``y`` as ``deconv2d``'s, and
    ``dX`` through the updated filters: its own sum, plus W's bound carried through dX)."""
    k, pos = _f64(inputs["kernel"]), _f64(inputs["post_spike"])
    dx = sums["deconv2d_dx"]
    ltp, ltd, dw, s_dw = _dw(inputs, p, sums["deconv2d_dk"], dt["stdp_update"])
    eta, w_decay, w_bound = p["eta"], p["w_decay"], p["w_bound"]
    v = k + eta * dw
    if w_decay > 0:
        v = v - w_decay * k
    w_new = np.minimum(np.maximum(v, 0.01), w_bound - 0.01) if w_bound > 0 else v
    # Clipping is 1-Lipschitz: the unclipped value's bound carries over.
    s_w = (
        abs(eta) * s_dw
        + tol.EXTRA_ROUNDINGS["W_terms"] * (abs(eta) * (abs(ltp.value) + abs(ltd.value)) + abs(k) * (1 + abs(w_decay)))
        + abs(v)
        + abs(w_new)
    )
    st_dx = sum_stats(dx, w_new, pos, (w_new != 0) | (s_w > 0))  # a backend's W' may be non-zero
    up, sd = dt["stdp_update"], dt["stdp_step"]
    update = {"W'": Expected(w_new, s_w, up), "dW": Expected(dw, s_dw, up)}
    step = {n: replace(e, dtype=sd) for n, e in (("y", y), *update.items())}
    return {
        "stdp_update": update,
        "stdp_step": step | {"dX": Expected(st_dx.value, st_dx.scale() + dx(s_w, abs(pos)), sd)},
    }
