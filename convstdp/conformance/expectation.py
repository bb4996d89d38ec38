"""The float64 expectation of a case: the reference's outputs and the per-element tolerance scales
(:mod:`convstdp.conformance.tolerance` says how a scale becomes a bound)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from convstdp import geometry
from convstdp.conformance import tolerance as tol
from convstdp.conformance.cases import Case
from convstdp.conformance.operators import OPS, Inputs
from convstdp.reference import ops as ref

__all__ = ["Expected", "Expectation", "expect"]


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


def _f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).astype(np.float64)


@lru_cache(maxsize=256)
def _counts(case_geom: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Terms per output element of deconv2d, dK and dX: each operator on all-ones inputs."""
    xs, ks, ys, stride, pads = case_geom
    x1, k1, d1 = np.ones(xs), np.ones(ks), np.ones(ys)
    kw = dict(stride=stride, padding=pads)
    return (
        ref.deconv2d(x1, k1, **kw),
        ref.deconv2d_dk(x1, d1, kernel_size=ks[:2], **kw),
        ref.deconv2d_dx(k1, d1, **kw),
    )


def expect(case: Case, inputs: Inputs) -> Expectation:
    """The reference outputs (float64, on float64-cast inputs) and tolerance scales of ``case``."""
    g = case.geometry()
    kw = dict(stride=g.stride, padding=g.pads)
    n_y, n_k, n_x = _counts((g.x_shape, g.kernel_shape, g.y_shape, g.stride, g.pads))
    x, k, d = (_f64(inputs[a]) for a in ("x", "kernel", "d_out"))
    prs, prt, pos, pot = (_f64(inputs[a]) for a in ("pre_spike", "pre_trace", "post_spike", "post_trace"))
    dt = {name: geometry.result_dtype(*(np.dtype(inputs[a].dtype) for a in op.args)) for name, op in OPS.items()}
    ks = g.kernel_size
    p = case.params

    y = Expected(ref.deconv2d(x, k, **kw), tol.sum_scale(ref.deconv2d(abs(x), abs(k), **kw), n_y), dt["deconv2d"])
    dk = Expected(
        ref.deconv2d_dk(x, d, kernel_size=ks, **kw),
        tol.sum_scale(ref.deconv2d_dk(abs(x), abs(d), kernel_size=ks, **kw), n_k),
        dt["deconv2d_dk"],
    )
    dx = Expected(
        ref.deconv2d_dx(k, d, **kw), tol.sum_scale(ref.deconv2d_dx(abs(k), abs(d), **kw), n_x), dt["deconv2d_dx"]
    )

    # stdp_update, composed bound (tolerance module docstring).
    w_new, dw = ref.stdp_update(k, prs, prt, pos, pot, **kw, **p)
    m_ltp = ref.deconv2d_dk(abs(prt) + abs(p["pretrace_target"]), abs(p["A_plus"]) * abs(pos), kernel_size=ks, **kw)
    m_ltd = ref.deconv2d_dk(abs(prs), abs(p["A_minus"]) * abs(pot), kernel_size=ks, **kw)
    m_dw = m_ltp + m_ltd
    s_dw = tol.sum_scale(m_dw, n_k, tol.EXTRA_ROUNDINGS["dW"])
    m_w = abs(k) * (1 + abs(p["w_decay"])) + abs(p["eta"]) * m_dw + max(p["w_bound"], 0.0)
    s_w = abs(p["eta"]) * s_dw + tol.EXTRA_ROUNDINGS["W"] * m_w
    st = dt["stdp_update"]
    w_exp, dw_exp = Expected(w_new, s_w, st), Expected(dw, s_dw, st)

    # stdp_step: dX through the updated filters inherits W's bound.
    step_dx = ref.deconv2d_dx(w_new, pos, **kw)
    s_step_dx = tol.sum_scale(ref.deconv2d_dx(abs(w_new), abs(pos), **kw), n_x) + ref.deconv2d_dx(s_w, abs(pos), **kw)
    sd = dt["stdp_step"]
    step = {
        "y": Expected(y.value, y.scale, sd),
        "W'": Expected(w_new, s_w, sd),
        "dW": Expected(dw, s_dw, sd),
        "dX": Expected(step_dx, s_step_dx, sd),
    }
    return Expectation(
        case,
        {
            "deconv2d": {"y": y},
            "deconv2d_dk": {"dK": dk},
            "deconv2d_dx": {"dX": dx},
            "stdp_update": {"W'": w_exp, "dW": dw_exp},
            "stdp_step": step,
        },
    )
