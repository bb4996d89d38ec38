"""The tolerance model (convstdp.conformance.tolerance / expectation) against real arithmetic.

On one mid-size float32 case the bound must admit what correct float32 implementations do (a
plain sequential float32 sum, numba, JAX) with margin, and reject a uniform relative error of
1e-4 and bfloat16-rounded inputs; the scales are checked by hand on a tiny case.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import convstdp
from convstdp import get_backend
from convstdp.conformance import broken, cases, checks, tolerance
from convstdp.conformance.cases import parse_case
from convstdp.conformance.expectation import expect
from convstdp.conformance.operators import OPS

# dK sums N·H·W = 1024 dense terms per element; y 8..200, dX 8..200.
MID = parse_case("s2-same-k5x5-m16x16-c8to8-n4-f32-all-bool")
P32 = tolerance.policy_for(np.float32)


@pytest.fixture(scope="module")
def mid() -> tuple:
    inputs = cases.make_inputs(MID, 0)
    return inputs, expect(MID, inputs)


def _worst(got: np.ndarray, e: checks.Expected) -> float:
    return checks.compare("out", got, e, P32).ratio


def _seq_dk(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """dK accumulated term by term in float32, (n, h, w) order: the plain sequential sum."""
    g = MID.geometry()
    (sh, sw), ((lo_h, _), (lo_w, _)) = g.stride, g.pads
    (kh, kw), (ho, wo) = g.kernel_size, g.out_size
    acc = np.zeros((kh, kw, x.shape[-1], d.shape[-1]), np.float32)
    for n in range(x.shape[0]):
        for h in range(x.shape[1]):
            for w in range(x.shape[2]):
                for a in range(kh):
                    p = h * sh + lo_h - a
                    if not 0 <= p < ho:
                        continue
                    for b in range(kw):
                        q = w * sw + lo_w - b
                        if 0 <= q < wo:
                            acc[a, b] += np.multiply.outer(x[n, h, w], d[n, p, q])
    return acc


def _seq_deconv(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """deconv2d accumulated term by term in float32, (h, w, i) order."""
    g = MID.geometry()
    (sh, sw), ((lo_h, _), (lo_w, _)) = g.stride, g.pads
    (kh, kw), (ho, wo) = g.kernel_size, g.out_size
    y = np.zeros(g.y_shape, np.float32)
    for h in range(x.shape[1]):
        for w in range(x.shape[2]):
            for a in range(kh):
                p = h * sh + lo_h - a
                for b in range(kw):
                    q = w * sw + lo_w - b
                    if 0 <= p < ho and 0 <= q < wo:
                        for i in range(x.shape[3]):
                            y[:, p, q, :] += x[:, h, w, i, None] * k[a, b, i]
    return y


# ----------------------------------------------------------------------------- by hand


def test_scale_by_hand_counts_only_nonzero_terms() -> None:
    # stride 1, SAME, k=2: pads (1, 0); y[p] sums x[h]K[a] over p = h + 1 - a.
    c = parse_case("s1-same-k2x2-m2x2-c1to1-n1-f64-basic-bool")
    inputs = cases.make_inputs(c, 0)
    x = np.array([[1.0, -2.0], [3.0, 0.0]]).reshape(1, 2, 2, 1)
    k = np.array([[0.5, -1.5], [2.5, 0.25]]).reshape(2, 2, 1, 1)
    inputs.update(x=x, kernel=k)
    e = expect(c, inputs).ops["deconv2d"]["y"]
    # y[1,1]: (h,a), (w,b) in {(0,0),(1,1)}: 4 terms, one of them x[1,1]·K[1,1] = 0.
    terms = [x[0, h, w, 0] * k[a, b, 0, 0] for h, a in ((0, 0), (1, 1)) for w, b in ((0, 0), (1, 1))]
    s, r, n = sum(terms), math.sqrt(sum(t * t for t in terms)), 3
    assert e.value[0, 1, 1, 0] == pytest.approx(s)
    assert e.scale[0, 1, 1, 0] == pytest.approx(math.sqrt(n * (s * s / 3 + 2 * r * r)) + r + abs(s))
    # y[0,0] = x[0,0]·K[1,1]: one term
    t = 1.0 * 0.25
    assert e.scale[0, 0, 0, 0] == pytest.approx(math.sqrt(t * t / 3 + 2 * t * t) + 2 * t)
    assert tolerance.bound(e.scale, P32)[0, 0, 0, 0] == pytest.approx(P32.c * P32.u * e.scale[0, 0, 0, 0] + P32.tiny)


def test_an_element_whose_terms_are_all_zero_must_be_exactly_zero() -> None:
    c = parse_case("s1-same-k2x2-m3x3-c1to1-n1-f32-basic-bool")
    inputs = cases.make_inputs(c, 0)
    inputs["x"][0, 0, 0, 0] = 0.0  # y[0,0] = x[0,0]·K[1,1] only
    e = expect(c, inputs).ops["deconv2d"]["y"]
    assert e.value[0, 0, 0, 0] == 0 and e.scale[0, 0, 0, 0] == 0
    assert (e.scale.ravel()[1:] > 0).all()
    got = e.value.astype(np.float32)
    assert checks.compare("y", got, e, P32).mismatches == 0
    got[0, 0, 0, 0] = 1e-30
    o = checks.compare("y", got, e, P32)
    assert o.mismatches == 1 and o.index == (0, 0, 0, 0)


def test_stacked_scale_by_hand() -> None:
    # A = 10 over 4 terms, B = -6 over 2 terms, T = 4; R_A = 6, R_B = 5.
    a = (np.array([10.0]), np.array([6.0]), np.array([4.0]))
    b = (np.array([-6.0]), np.array([5.0]), np.array([2.0]))
    want = math.sqrt((4 * 100 + 2 * 36) / 3 + max(2 * 10, 4 * 6) * 4 + 2 * (4 * 36 + 2 * 25))
    assert tolerance.stacked_scale(a, b)[0] == pytest.approx(want)


def test_scales_do_not_overflow() -> None:
    c = parse_case("s1-same-k3x3-m4x4-c2to2-n1-f64-basic-bool")
    inputs = cases.make_inputs(c, 0)
    inputs["x"] = inputs["x"] * 1e150
    inputs["d_out"] = inputs["d_out"] * 1e150
    for outs in expect(c, inputs).ops.values():
        for e in outs.values():
            assert np.isfinite(e.scale).all()


# ----------------------------------------------------------------------------- real arithmetic


def test_sequential_float32_sums_pass_with_margin(mid: tuple) -> None:
    inputs, exp = mid
    x, k, d = inputs["x"], inputs["kernel"], inputs["d_out"]
    assert _worst(_seq_dk(x, d), exp.ops["deconv2d_dk"]["dK"]) < 0.5
    assert _worst(_seq_deconv(x, k), exp.ops["deconv2d"]["y"]) < 0.5
    # dW as one float32 sum over LTP's and LTD's terms stacked along the batch (as JAX does it)
    p = MID.params
    f = np.float32
    xs = np.concatenate([inputs["pre_trace"] - f(p["pretrace_target"]), inputs["pre_spike"].astype(f)])
    ds = np.concatenate([f(p["A_plus"]) * inputs["post_spike"], -f(p["A_minus"]) * inputs["post_trace"]])
    assert _worst(_seq_dk(xs, ds), exp.ops["stdp_update"]["dW"]) < 0.5


@pytest.mark.parametrize("name", ["numba", "jax"])
def test_fast_backends_pass_with_margin(name: str, mid: tuple) -> None:
    try:
        be = get_backend(name)
    except convstdp.BackendUnavailable as err:
        pytest.skip(str(err))
    inputs, exp = mid
    for op in ("deconv2d", "deconv2d_dk", "stdp_update"):
        outs = [np.asarray(o) for o in OPS[op].call(be, MID, inputs)]
        for (out, e), got in zip(exp.ops[op].items(), outs, strict=True):
            assert _worst(got, e) < 0.5, (op, out)


@pytest.mark.parametrize("op", ["deconv2d", "deconv2d_dk", "deconv2d_dx", "stdp_update"])
def test_a_uniform_relative_error_of_1e4_fails(op: str, mid: tuple) -> None:
    _, exp = mid
    worst = max(_worst((e.value * (1 + 1e-4)).astype(np.float32), e) for e in exp.ops[op].values())
    assert worst > 2, worst


@pytest.mark.parametrize("op", ["deconv2d", "deconv2d_dk", "deconv2d_dx", "stdp_update"])
def test_bfloat16_inputs_fail_by_10x(op: str, mid: tuple) -> None:
    inputs, exp = mid
    bf16 = {a: broken._round_bf16(v) for a, v in inputs.items()}
    outs = OPS[op].call(convstdp.Backend("bf16", broken.ReferenceWrapper()), MID, bf16)
    worst = max(_worst(np.asarray(got), e) for e, got in zip(exp.ops[op].values(), outs, strict=True))
    assert worst >= 10, worst
