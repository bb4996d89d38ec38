"""The ngclearn adapter (upstream's own ngcconv) against the reference on the square SAME/VALID
cases it supports, and its clear refusals elsewhere."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from convstdp import BackendUnavailable
from convstdp.reference import ops

STDP = dict(A_plus=1.2, A_minus=0.8, eta=0.3, pretrace_target=0.1, w_decay=0.05, w_bound=0.0)

# (H, k, stride, padding, Ci, Co): square maps and kernels, Ci != Co, kernel < = > stride.
CASES = [
    (h, k, s, p, ci, co)
    for (h, ci, co) in ((5, 3, 2), (4, 2, 4))
    for (k, s) in ((1, 1), (3, 1), (2, 2), (5, 2), (3, 3), (2, 3))
    for p in ("SAME", "VALID")
    if not (h == 4 and k in (1, 2))  # keep the grid modest (each shape compiles)
]


@pytest.fixture(scope="module")
def ng():
    pytest.importorskip("ngclearn", reason="ngclearn is not installed")
    from convstdp import get_backend

    return get_backend("ngclearn")


def _close(name, got, want, mag, c=64.0, u=2.0**-24):
    got = np.asarray(got)
    assert got.shape == want.shape, f"{name}: shape {got.shape}, expected {want.shape}"
    err = np.abs(got - want)
    bound = c * u * mag + 1e-30
    if (err > bound).any():
        i = np.unravel_index(np.argmax(err / bound), err.shape)
        pytest.fail(f"{name}: worst at {i}: got {got[i]!r}, want {want[i]!r}, error {err[i]:.3g} > {bound[i]:.3g}")


@pytest.mark.parametrize("h,k,s,p,ci,co", CASES, ids=[f"H{c[0]}-k{c[1]}-s{c[2]}-{c[3]}-{c[4]}to{c[5]}" for c in CASES])
def test_upstream_matches_reference(ng, h, k, s, p, ci, co):
    import jax

    rng = np.random.default_rng(h * 100 + k * 10 + s)
    x = rng.standard_normal((2, h, h, ci)).astype(np.float32)
    kern = rng.standard_normal((k, k, ci, co)).astype(np.float32)
    kw = dict(stride=s, padding=p)
    y_ref = ops.deconv2d(x.astype(np.float64), kern.astype(np.float64), **kw)
    d = rng.standard_normal(y_ref.shape).astype(np.float32)
    ax, ak, ad = (np.abs(a).astype(np.float64) for a in (x, kern, d))

    y = ng.deconv2d(x, kern, **kw)
    assert isinstance(y, jax.Array)
    _close("deconv2d", y, y_ref, ops.deconv2d(ax, ak, **kw))
    dk_ref = ops.deconv2d_dk(x.astype(np.float64), d.astype(np.float64), kernel_size=k, **kw)
    _close("dk", ng.deconv2d_dk(x, d, kernel_size=k, **kw), dk_ref, ops.deconv2d_dk(ax, ad, kernel_size=k, **kw))
    dx_ref = ops.deconv2d_dx(kern.astype(np.float64), d.astype(np.float64), **kw)
    _close("dx", ng.deconv2d_dx(kern, d, **kw), dx_ref, ops.deconv2d_dx(ak, ad, **kw))

    pre_spike, post_spike = rng.random(x.shape) < 0.3, rng.random(d.shape) < 0.3
    pre_trace, post_trace = rng.random(x.shape).astype(np.float32), rng.random(d.shape).astype(np.float32)
    args = (kern, pre_spike, pre_trace, post_spike, post_trace)
    w_new, dw = ng.stdp_update(*args, **kw, **STDP)
    w_ref, dw_ref = ops.stdp_update(*(np.asarray(a, np.float64) for a in args), **kw, **STDP)
    f64 = lambda a: np.asarray(a, np.float64)
    mag = 1.2 * ops.deconv2d_dk(f64(np.abs(pre_trace - 0.1)), f64(post_spike), kernel_size=k, **kw)
    mag = mag + 0.8 * ops.deconv2d_dk(f64(pre_spike), f64(post_trace), kernel_size=k, **kw)
    _close("dW", dw, dw_ref, mag)
    _close("W'", w_new, w_ref, np.abs(kern) * 1.05 + 0.3 * mag)


def test_bounded_update_and_step(ng):
    rng = np.random.default_rng(1)
    x = rng.random((1, 6, 6, 2)).astype(np.float32)
    kern = rng.random((3, 3, 2, 3)).astype(np.float32)
    y_shape = ops.deconv2d(x, kern, stride=2, padding="SAME").shape
    post_spike = rng.random(y_shape) < 0.3
    args = (kern, x, x > 0.5, x, post_spike, rng.random(y_shape).astype(np.float32))
    stdp = dict(STDP, w_bound=0.8)
    y, w_new, dw, dx = ng.stdp_step(*args, stride=2, padding="SAME", **stdp)
    w_ref, dw_ref = ops.stdp_update(args[0], *args[2:], stride=2, padding="SAME", **stdp)
    np.testing.assert_allclose(np.asarray(w_new), w_ref, rtol=1e-5, atol=1e-6)
    assert np.asarray(w_new).min() >= 0.01 - 1e-7 and np.asarray(w_new).max() <= 0.79 + 1e-7
    np.testing.assert_allclose(np.asarray(dx), ops.deconv2d_dx(w_ref, post_spike, stride=2, padding="SAME"), rtol=1e-5)


def test_explicit_pads_equal_to_a_mode_are_accepted(ng):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 4, 4, 2)).astype(np.float32)
    kern = rng.standard_normal((3, 3, 2, 2)).astype(np.float32)
    want = ops.deconv2d(x, kern, stride=2, padding="VALID")
    got = ng.deconv2d(x, kern, stride=2, padding=((2, 2), (2, 2)))  # VALID's pads for k=3, s=2
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "x_shape,k_shape,stride,padding,match",
    [
        ((1, 4, 4, 2), (3, 3, 2, 2), (1, 2), "SAME", "per-axis stride"),
        ((1, 4, 4, 2), (3, 2, 2, 2), 1, "SAME", "square kernels"),
        ((1, 4, 5, 2), (3, 3, 2, 2), 1, "VALID", "square input maps"),
        ((1, 4, 4, 2), (3, 3, 2, 2), 2, ((1, 1), (1, 1)), "'SAME' or 'VALID'"),
        ((1, 4, 4, 2), (3, 3, 2, 2), 1, ((-1, 2), (-1, 2)), "'SAME' or 'VALID'"),
    ],
)
def test_unsupported_configurations_are_refused(ng, x_shape, k_shape, stride, padding, match):
    x, kern = np.ones(x_shape, np.float32), np.ones(k_shape, np.float32)
    y_shape = ops.deconv2d(x, kern, stride=stride, padding=padding).shape
    d = np.ones(y_shape, np.float32)
    kw = dict(stride=stride, padding=padding)
    for call in (
        lambda: ng.deconv2d(x, kern, **kw),
        lambda: ng.deconv2d_dk(x, d, kernel_size=k_shape[:2], **kw),
        lambda: ng.deconv2d_dx(kern, d, **kw),
        lambda: ng.stdp_update(kern, x, x, d, d, **kw, A_plus=1.0, A_minus=1.0),
    ):
        with pytest.raises(NotImplementedError, match=match) as info:
            call()
        assert "unsupported by upstream" in str(info.value)


def test_float64_needs_x64(ng):
    import jax

    if hasattr(jax, "enable_x64"):
        _enable_x64 = lambda: jax.enable_x64(True)
    else:
        from jax.experimental import enable_x64 as _enable_x64

    x = np.ones((1, 3, 3, 1))
    kern = np.ones((2, 2, 1, 1))
    if not jax.config.jax_enable_x64:
        with pytest.raises(TypeError, match="jax_enable_x64"):
            ng.deconv2d(x, kern, stride=1, padding="SAME")
    with _enable_x64():
        y = ng.deconv2d(x, kern, stride=1, padding="SAME")
        assert y.dtype == np.float64
    np.testing.assert_allclose(np.asarray(y), ops.deconv2d(x, kern, stride=1, padding="SAME"))


def test_empty_batch(ng):
    x = np.zeros((0, 4, 4, 2), np.float32)
    kern = np.ones((3, 3, 2, 3), np.float32)
    y = ng.deconv2d(x, kern, stride=2, padding="SAME")
    assert y.shape == (0, 8, 8, 3)
    assert ng.deconv2d_dk(x, np.zeros(y.shape, np.float32), kernel_size=3, stride=2, padding="SAME").shape == kern.shape


def test_missing_ngclearn_is_reported_with_reason(monkeypatch):
    """Runs without ngclearn too: a blocked import becomes BackendUnavailable naming ngclearn."""
    pytest.importorskip("jax")
    from convstdp.fast import ngclearn as adapter

    for mod in [m for m in sys.modules if m == "ngclearn" or m.startswith("ngclearn.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "ngclearn", None)
    with pytest.raises(BackendUnavailable, match="ngclearn"):
        adapter.create_backend()


def test_64_bit_int_spikes_do_not_wrap(ng) -> None:
    x = np.zeros((1, 4, 4, 1), np.int64)
    x[0, 1, 1, 0] = 2**40  # JAX with x64 off would wrap it to 0
    k = np.ones((3, 3, 1, 1), np.float32)
    want = ops.deconv2d(x, k, stride=(1, 1), padding=((1, 1), (1, 1)))
    np.testing.assert_allclose(np.asarray(ng.deconv2d(x, k)), want, rtol=1e-6)
