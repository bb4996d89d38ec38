"""The JAX backend against the NumPy reference (SPEC §3), its dtype rules (§4), bad input (§5),
its differentiable API (custom_vjp under jit and vmap) and the traps named in issue 4."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy

from convstdp import BackendUnavailable, get_backend  # noqa: E402
from convstdp.backends import Backend  # noqa: E402
from convstdp.fast import jax as cjax  # noqa: E402
from convstdp.reference import ops  # noqa: E402

U32 = 2.0**-24


def _enable_x64():
    """x64 for one block only (``jax.enable_x64`` in new JAX, ``jax.experimental`` in older)."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64

    return enable_x64()


STDP = dict(A_plus=1.3, A_minus=0.7, eta=0.4, pretrace_target=0.15, w_decay=0.02, w_bound=0.0)

# (name, x shape (N,H,W,Ci), kernel shape (kh,kw,Ci,Co), stride, padding): each stride x padding
# pair once, on rectangular and square maps in turn, plus the awkward ones.
_STRIDES = [1, 2, 3, (1, 2), (3, 2)]
_PADDINGS = ["SAME", "VALID", ((1, 2), (0, 1)), ((-1, 2), (1, -1))]
_SHAPES = [((2, 5, 4, 3), (3, 2, 3, 4)), ((3, 4, 4, 2), (3, 3, 2, 3))]


def _label(i, s, p):
    pad = p if isinstance(p, str) else "neg" if min(min(p)) < 0 else "explicit"
    return f"s{s}-{pad}-{'rect' if i % 2 == 0 else 'square'}"


CASES = [
    (_label(i, s, p), _SHAPES[i % 2][0], _SHAPES[i % 2][1], s, p)
    for i, (s, p) in enumerate((s, p) for s in _STRIDES for p in _PADDINGS)
] + [
    ("kernel-larger-than-map", (2, 2, 3, 3), (4, 5, 3, 2), (2, 1), "VALID"),
    ("stride-larger-than-kernel", (2, 4, 3, 2), (2, 1, 2, 3), (3, 2), "SAME"),
    ("one-pixel-map", (3, 1, 1, 2), (3, 3, 2, 2), 2, "SAME"),
    ("big-pads", (1, 3, 3, 2), (2, 2, 2, 3), (2, 3), ((4, 1), (0, 5))),
]
IDS = [c[0] for c in CASES]


def _inputs(x_shape, k_shape, stride, padding, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    k = rng.standard_normal(k_shape).astype(np.float32)
    y_shape = ops.deconv2d(x, k, stride=stride, padding=padding).shape
    d = rng.standard_normal(y_shape).astype(np.float32)
    return rng, x, k, d


def _stdp_arrays(rng, x_shape, y_shape):
    pre_spike = rng.random(x_shape) < 0.3
    pre_trace = rng.random(x_shape).astype(np.float32)
    post_spike = rng.random(y_shape) < 0.3
    post_trace = rng.random(y_shape).astype(np.float32)
    return pre_spike, pre_trace, post_spike, post_trace


def assert_close(name, got, want, mag, u=U32, c=64.0):
    """|got - want| <= c*u*mag + tiny, where mag is the same op on |inputs| (STYLE 4)."""
    assert isinstance(got, jax.Array), f"{name}: expected jax.Array, got {type(got).__name__}"
    got = np.asarray(got)
    assert got.shape == want.shape, f"{name}: shape {got.shape}, expected {want.shape}"
    bound = c * u * np.asarray(mag, np.float64) + 1e-30
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    bad = err > bound
    if bad.any():
        i = np.unravel_index(np.argmax(err / bound), err.shape)
        pytest.fail(
            f"{name}: {bad.sum()}/{err.size} elements off; worst at {i}: got {got[i]!r}, want {want[i]!r}, "
            f"error {err[i]:.3g} > bound {bound[i]:.3g}"
        )


def _refs(x, k, d, stride, padding):
    kw = dict(stride=stride, padding=padding)
    ax, ak, ad = np.abs(x).astype(np.float64), np.abs(k).astype(np.float64), np.abs(d).astype(np.float64)
    ks = k.shape[:2]
    return {
        "deconv2d": (ops.deconv2d(x.astype(np.float64), k.astype(np.float64), **kw), ops.deconv2d(ax, ak, **kw)),
        "dk": (
            ops.deconv2d_dk(x.astype(np.float64), d.astype(np.float64), kernel_size=ks, **kw),
            ops.deconv2d_dk(ax, ad, kernel_size=ks, **kw),
        ),
        "dx": (ops.deconv2d_dx(k.astype(np.float64), d.astype(np.float64), **kw), ops.deconv2d_dx(ak, ad, **kw)),
    }


def _stdp_refs(k, pre_spike, pre_trace, post_spike, post_trace, stride, padding, **stdp):
    f64 = [np.asarray(a, np.float64) for a in (k, pre_spike, pre_trace, post_spike, post_trace)]
    w_new, dw = ops.stdp_update(*f64, stride=stride, padding=padding, **stdp)
    kw = dict(kernel_size=k.shape[:2], stride=stride, padding=padding)
    mag_dw = abs(stdp["A_plus"]) * ops.deconv2d_dk(np.abs(f64[2] - stdp["pretrace_target"]), f64[3], **kw) + abs(
        stdp["A_minus"]
    ) * ops.deconv2d_dk(f64[1], f64[4], **kw)
    mag_w = np.abs(f64[0]) * (1 + abs(stdp["w_decay"])) + abs(stdp["eta"]) * mag_dw
    return (w_new, mag_w), (dw, mag_dw)


@pytest.fixture(scope="module")
def be() -> Backend:
    return get_backend("jax")


@pytest.fixture(scope="module")
def both_forms() -> dict[str, Backend]:
    return {f: Backend(f"jax-{f}", cjax.JaxBackend(formulation=f)) for f in ("conv", "phase")}


# ------------------------------------------------------------------------------ agreement


@pytest.mark.parametrize("name,x_shape,k_shape,stride,padding", CASES, ids=IDS)
def test_operators_match_reference(be, name, x_shape, k_shape, stride, padding):
    rng, x, k, d = _inputs(x_shape, k_shape, stride, padding)
    kw = dict(stride=stride, padding=padding)
    refs = _refs(x, k, d, stride, padding)
    assert_close(f"{name} deconv2d", be.deconv2d(x, k, **kw), *refs["deconv2d"])
    assert_close(f"{name} dk", be.deconv2d_dk(x, d, kernel_size=k_shape[:2], **kw), *refs["dk"])
    assert_close(f"{name} dx", be.deconv2d_dx(k, d, **kw), *refs["dx"])
    arrays = _stdp_arrays(rng, x.shape, d.shape)
    (w_new, mag_w), (dw, mag_dw) = _stdp_refs(k, *arrays, stride, padding, **STDP)
    got_w, got_dw = be.stdp_update(k, *arrays, **kw, **STDP)
    assert_close(f"{name} stdp_update W'", got_w, w_new, mag_w)
    assert_close(f"{name} stdp_update dW", got_dw, dw, mag_dw)


@pytest.mark.parametrize("name,x_shape,k_shape,stride,padding", CASES, ids=IDS)
def test_both_formulations_fused_step(both_forms, name, x_shape, k_shape, stride, padding):
    """The fused stdp_step of each formulation: y, W' (bounded), dW and dX through W'."""
    rng, x, k, _ = _inputs(x_shape, k_shape, stride, padding, seed=1)
    k = np.abs(k)  # a bound that bites on some weights and not others
    y_shape = ops.deconv2d(x, k, stride=stride, padding=padding).shape
    arrays = _stdp_arrays(rng, x.shape, y_shape)
    stdp = dict(STDP, w_bound=1.0, w_decay=0.0)
    (w_new, mag_w), (dw, mag_dw) = _stdp_refs(k, *arrays, stride, padding, **stdp)
    y_ref = ops.deconv2d(x.astype(np.float64), k.astype(np.float64), stride=stride, padding=padding)
    y_mag = ops.deconv2d(np.abs(x).astype(np.float64), k.astype(np.float64), stride=stride, padding=padding)
    kw = dict(stride=stride, padding=padding)
    for form, backend in both_forms.items():
        y, got_w, got_dw, dx = backend.stdp_step(k, x, *arrays, **kw, **stdp)
        assert_close(f"{name} [{form}] y", y, y_ref, y_mag)
        assert_close(f"{name} [{form}] dW", got_dw, dw, mag_dw)
        assert_close(f"{name} [{form}] W'", got_w, w_new, mag_w)
        # dX goes through the backend's own W' (a clipped weight may sit one rounding away)
        w32 = np.asarray(got_w, np.float64)
        dx_ref = ops.deconv2d_dx(w32, np.asarray(arrays[2], np.float64), **kw)
        dx_mag = ops.deconv2d_dx(np.abs(w32), np.asarray(arrays[2], np.float64), **kw)
        assert_close(f"{name} [{form}] dX", dx, dx_ref, dx_mag)


def test_seed_worked_example(be):
    """SPEC §3: ngc-learn's own unit test of the seed."""
    x = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32).reshape(1, 2, 2, 1)
    k = np.ones((2, 2, 1, 1), np.float32)
    y = be.deconv2d(x, k, stride=1, padding="SAME")
    np.testing.assert_array_equal(np.asarray(y)[0, :, :, 0], [[0, 1], [1, 2]])
    post_spike = np.asarray(y) > 0
    _, dw = be.stdp_update(
        k,
        x,
        0.4 * x,
        post_spike,
        1.3 * post_spike.astype(np.float32),
        stride=1,
        padding="SAME",
        A_plus=1.0,
        A_minus=1.0,
        eta=0.0,
    )
    np.testing.assert_allclose(np.asarray(dw)[:, :, 0, 0], [[0, -0.9], [-0.9, -1.8]], rtol=1e-6, atol=1e-6)
    dx = be.backtransmit(k, post_spike, stride=1, padding="SAME")
    np.testing.assert_array_equal(np.asarray(dx)[0, :, :, 0], [[3, 2], [2, 1]])


def test_batch_large_geometry_both_formulations_agree(both_forms):
    """A strided problem big enough for "auto" to pick the phase formulation on CPU."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 9, 7, 5)).astype(np.float32)
    k = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    kw = dict(stride=(2, 3), padding="VALID")
    d = rng.standard_normal(ops.deconv2d(x, k, **kw).shape).astype(np.float32)
    refs = _refs(x, k, d, (2, 3), "VALID")
    for form, backend in both_forms.items():
        assert_close(f"[{form}] deconv2d", backend.deconv2d(x, k, **kw), *refs["deconv2d"])
        assert_close(f"[{form}] dk", backend.deconv2d_dk(x, d, kernel_size=(3, 4), **kw), *refs["dk"])


# ------------------------------------------------------------------------------ dtypes


def test_float64_with_x64():
    rng, x, k, d = _inputs((2, 4, 5, 3), (3, 2, 3, 2), (2, 1), ((1, 0), (-1, 2)), seed=4)
    x64, k64, d64 = (a.astype(np.float64) for a in (x, k, d))
    be64 = Backend("jax64", cjax.JaxBackend())
    x64_before = bool(jax.config.jax_enable_x64)
    with _enable_x64():
        kw = dict(stride=(2, 1), padding=((1, 0), (-1, 2)))
        y = be64.deconv2d(x64, k64, **kw)
        dk = be64.deconv2d_dk(x64, d64, kernel_size=(3, 2), **kw)
        dx = be64.deconv2d_dx(k64, d64, **kw)
        mixed = be64.deconv2d(x64, k, **kw)  # float64 x float32 -> float64
    assert y.dtype == dk.dtype == dx.dtype == mixed.dtype == jnp.float64
    refs = _refs(x64, k64, d64, (2, 1), ((1, 0), (-1, 2)))
    u64 = 2.0**-53
    assert_close("f64 deconv2d", y, *refs["deconv2d"], u=u64)
    assert_close("f64 dk", dk, *refs["dk"], u=u64)
    assert_close("f64 dx", dx, *refs["dx"], u=u64)
    assert jax.config.jax_enable_x64 == x64_before  # nothing leaked


def test_float64_without_x64_is_refused(be):
    if jax.config.jax_enable_x64:
        pytest.skip("64-bit mode is on for the whole session")
    x = np.ones((1, 3, 3, 2))
    k = np.ones((2, 2, 2, 1), np.float32)
    with pytest.raises(TypeError, match="jax_enable_x64"):
        be.deconv2d(x, k, stride=1, padding="SAME")
    with pytest.raises(TypeError, match="float64"):
        cjax.deconv2d_fn(x, k)


def test_bool_and_int_spikes_are_cast(be):
    rng, x, k, _ = _inputs((2, 3, 4, 2), (2, 2, 2, 3), 2, "SAME", seed=5)
    y_shape = ops.deconv2d(x, k, stride=2, padding="SAME").shape
    pre_spike = (rng.random(x.shape) < 0.5).astype(np.int32)
    post_spike = rng.random(y_shape) < 0.5
    args = (k, pre_spike, x, post_spike, np.abs(rng.standard_normal(y_shape)).astype(np.float32))
    w_new, dw = be.stdp_update(*args, stride=2, padding="SAME", A_plus=1.0, A_minus=0.5)
    assert w_new.dtype == dw.dtype == jnp.float32
    want_w, want_dw = ops.stdp_update(*args, stride=2, padding="SAME", A_plus=1.0, A_minus=0.5)
    np.testing.assert_allclose(np.asarray(dw), want_dw, rtol=1e-5, atol=1e-5)
    y = be.deconv2d(pre_spike.astype(bool), k, stride=2, padding="SAME")
    assert y.dtype == jnp.float32


def test_reduced_precision_modes_declare_themselves():
    rng, x, k, d = _inputs((2, 5, 5, 4), (3, 3, 4, 3), 2, "SAME", seed=6)
    refs = _refs(x, k, d, 2, "SAME")
    for factory, mode, u in ((cjax.create_tf32_backend, "tf32", 2.0**-11), (cjax.create_bf16_backend, "bf16", 2.0**-8)):
        backend = Backend(f"jax-{mode}", factory())
        assert backend.precision == mode and backend.impl.unit_roundoff == u
        # bf16 rounds each operand: |xk - x'k'| <= ~2u|x||k| per product
        kw = dict(stride=2, padding="SAME")
        assert_close(f"{mode} deconv2d", backend.deconv2d(x, k, **kw), *refs["deconv2d"], u=u, c=4)
        assert_close(f"{mode} dk", backend.deconv2d_dk(x, d, kernel_size=3, **kw), *refs["dk"], u=u, c=4)
    assert get_backend("jax").impl.precision == "highest" and get_backend("jax").impl.unit_roundoff is None
    with pytest.raises(ValueError, match="precision"):
        cjax.JaxBackend(precision="fp8")


# ------------------------------------------------------------------------------ SPEC §4/§5 contract


def test_inputs_are_not_modified_or_donated(be):
    rng, x, k, _ = _inputs((2, 4, 4, 2), (3, 3, 2, 2), 2, "SAME", seed=7)
    y_shape = ops.deconv2d(x, k, stride=2, padding="SAME").shape
    arrays = [k, x, *_stdp_arrays(rng, x.shape, y_shape)]
    copies = [a.copy() for a in arrays]
    jax_arrays = [jnp.asarray(a) for a in arrays]
    be.stdp_step(*arrays, stride=2, padding="SAME", **STDP)
    be.stdp_update(*jax_arrays[:1], *jax_arrays[2:], stride=2, padding="SAME", **STDP)
    be.stdp_step(*jax_arrays, stride=2, padding="SAME", **STDP)
    for a, c, j in zip(arrays, copies, jax_arrays, strict=True):
        np.testing.assert_array_equal(a, c)
        assert not j.is_deleted()
        np.testing.assert_array_equal(np.asarray(j), c)


def test_donate_kernel_is_opt_in_and_correct():
    rng, x, k, _ = _inputs((2, 4, 4, 2), (3, 3, 2, 2), 2, "SAME", seed=8)
    y_shape = ops.deconv2d(x, k, stride=2, padding="SAME").shape
    arrays = _stdp_arrays(rng, x.shape, y_shape)
    donating = Backend("jax-donate", cjax.JaxBackend(donate_kernel=True))
    want_w, _ = ops.stdp_update(k, *arrays, stride=2, padding="SAME", **STDP)
    with warnings.catch_warnings():  # donation may be unsupported on a platform (a warning): fine
        warnings.simplefilter("ignore")
        got_w, _ = donating.stdp_update(jnp.asarray(k), *arrays, stride=2, padding="SAME", **STDP)
    np.testing.assert_allclose(np.asarray(got_w), want_w, rtol=1e-5, atol=1e-5)


def test_empty_batch(be):
    x = np.zeros((0, 4, 3, 2), np.float32)
    k = np.random.default_rng(9).standard_normal((3, 2, 2, 3)).astype(np.float32)
    kw = dict(stride=(2, 1), padding="SAME")
    y = be.deconv2d(x, k, **kw)
    assert y.shape == (0, 8, 3, 3)
    dk = be.deconv2d_dk(x, np.zeros(y.shape, np.float32), kernel_size=(3, 2), **kw)
    assert dk.shape == k.shape and not np.asarray(dk).any()
    dx = be.deconv2d_dx(k, np.zeros(y.shape, np.float32), **kw)
    assert dx.shape == x.shape
    post = np.zeros(y.shape, np.float32)
    out = be.stdp_step(k, x, x, x, post, post, **kw, A_plus=1.0, A_minus=1.0, eta=0.5, w_decay=0.1)
    assert [a.shape for a in out] == [y.shape, k.shape, k.shape, x.shape]
    np.testing.assert_allclose(np.asarray(out[1]), 0.9 * k, rtol=1e-6)


def test_non_finite_values_do_not_crash(be):
    x = np.ones((1, 3, 3, 1), np.float32)
    x[0, 1, 1, 0] = np.nan
    k = np.ones((2, 2, 1, 1), np.float32)
    k[0, 0, 0, 0] = np.inf
    y = np.asarray(be.deconv2d(x, k, stride=2, padding="SAME"))
    assert np.isnan(y).any() and np.isfinite(y).any()


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda b: b.deconv2d(np.ones((3, 3, 2)), np.ones((2, 2, 2, 1))), ValueError, "rank 4"),
        (lambda b: b.deconv2d(np.ones((1, 3, 3, 2)), np.ones((2, 2, 3, 1))), ValueError, "input channels"),
        (lambda b: b.deconv2d(np.ones((1, 3, 3, 2)), np.ones((2, 2, 2, 1)), padding="FULL"), ValueError, "padding"),
        (lambda b: b.deconv2d(np.ones((1, 3, 3, 2)), np.ones((2, 2, 2, 1)), stride=0), ValueError, "stride"),
        (lambda b: b.deconv2d(np.ones((1, 3, 3, 2)), np.ones((2, 2, 2, 1)), stride=1.5), TypeError, "stride"),
        (lambda b: b.deconv2d(np.ones((1, 3, 3, 2), complex), np.ones((2, 2, 2, 1))), TypeError, "complex"),
        (lambda b: b.deconv2d_dk(np.ones((1, 3, 3, 2)), np.ones((1, 5, 5, 1)), kernel_size=2), ValueError, "d_out"),
        (
            lambda b: b.deconv2d(np.ones((1, 1, 1, 1)), np.ones((3, 3, 1, 1)), padding=((-2, 0), (0, 0))),
            ValueError,
            "empty output",
        ),
    ],
)
def test_shared_bad_input_errors(be, call, exc, match):
    with pytest.raises(exc, match=match):
        call(be)


# ------------------------------------------------------------------------------ differentiable API


GRAD_CASES = [((2, 5, 4, 3), (3, 2, 3, 2), (3, 2), "SAME"), ((1, 4, 3, 2), (2, 3, 2, 3), (1, 2), ((2, -1), (0, 3)))]


@pytest.mark.parametrize("x_shape,k_shape,stride,padding", GRAD_CASES)
def test_grad_is_our_dk_and_dx_under_jit(x_shape, k_shape, stride, padding):
    _, x, k, c = _inputs(x_shape, k_shape, stride, padding, seed=10)
    loss = lambda x, k: jnp.sum(cjax.deconv2d_fn(x, k, stride, padding) * c)
    gx, gk = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, k)
    refs = _refs(x, k, c, stride, padding)
    assert_close("grad x", gx, *refs["dx"])
    assert_close("grad k", gk, *refs["dk"])
    for form in ("conv", "phase"):
        y = cjax.deconv2d_fn(x, k, stride, padding, formulation=form)
        assert_close(f"deconv2d_fn [{form}]", y, *refs["deconv2d"])


def test_vmap_of_forward_and_grad():
    rng = np.random.default_rng(11)
    xs = rng.standard_normal((3, 2, 4, 3, 2)).astype(np.float32)
    ks = rng.standard_normal((3, 3, 2, 2, 4)).astype(np.float32)
    stride, padding = (2, 1), "VALID"
    ys = jax.vmap(lambda x, k: cjax.deconv2d_fn(x, k, stride, padding))(xs, ks)
    c = rng.standard_normal(ys.shape[1:]).astype(np.float32)
    grads = jax.jit(jax.vmap(jax.grad(lambda x, k: jnp.sum(cjax.deconv2d_fn(x, k, stride, padding) * c), (0, 1))))(
        xs, ks
    )
    for i in range(3):
        refs = _refs(xs[i], ks[i], c, stride, padding)
        assert_close(f"vmap y[{i}]", ys[i], *refs["deconv2d"])
        assert_close(f"vmap grad x[{i}]", grads[0][i], *refs["dx"])
        assert_close(f"vmap grad k[{i}]", grads[1][i], *refs["dk"])


def test_jax_level_dk_dx_functions():
    _, x, k, d = _inputs((2, 4, 5, 2), (3, 2, 2, 3), (2, 3), "SAME", seed=12)
    refs = _refs(x, k, d, (2, 3), "SAME")
    for form in ("conv", "phase"):
        got = cjax.deconv2d_dk_fn(x, d, (3, 2), (2, 3), "SAME", formulation=form)
        assert_close(f"dk_fn [{form}]", got, *refs["dk"])
    assert_close("dx_fn", cjax.deconv2d_dx_fn(k, d, (2, 3), "SAME", input_shape=x.shape), *refs["dx"])


def test_vjp_of_formulation_matches_in_a_subprocess():
    """jax.vjp of the raw lax formulations (no custom_vjp) on rectangular kernels with anisotropic
    strides agrees with our dK/dX. Run in a subprocess: XLA has aborted the whole process (a CHECK
    failure, not an exception) on the vjp of lax.conv_transpose in such cases."""
    script = textwrap.dedent(
        """
        import numpy as np, jax, jax.numpy as jnp
        from convstdp.fast import _jax_formulations as F
        from convstdp.geometry import check_deconv2d
        rng = np.random.default_rng(0)
        cases = [
            ((2, 5, 4, 3), (3, 2, 3, 4), (3, 2), "SAME"),
            ((2, 4, 7, 3), (2, 3, 3, 2), (1, 2), "VALID"),
            ((1, 6, 5, 2), (4, 2, 2, 3), (2, 3), ((1, -1), (2, 0))),
        ]
        for xs, ks, s, p in cases:
            x = rng.standard_normal(xs).astype(np.float32); k = rng.standard_normal(ks).astype(np.float32)
            g = check_deconv2d(x, k, s, p)
            for form in ("conv", "phase"):
                geo = dict(stride=g.stride, pads=g.pads, form=form, num=F.HIGHEST)
                f = lambda x, k: F.deconv2d(x, k, out_size=g.out_size, **geo)
                y, vjp = jax.vjp(f, x, k)
                c = rng.standard_normal(y.shape).astype(np.float32)
                gx, gk = jax.jit(lambda c: vjp(c))(c)
                dk = F.deconv2d_dk(x, c, ksize=ks[:2], **geo)
                dx = F.deconv2d_dx(k, c, in_size=g.in_size, **geo)
                scale = float(jnp.abs(dk).max()) + float(jnp.abs(dx).max())
                assert float(jnp.abs(gk - dk).max()) <= 1e-5 * scale, (xs, ks, s, p, form, "dk")
                assert float(jnp.abs(gx - dx).max()) <= 1e-5 * scale, (xs, ks, s, p, form, "dx")
        print("VJP-OK")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "VJP-OK" in proc.stdout, (
        f"subprocess exited {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-4000:]}"
    )


# ------------------------------------------------------------------------------ registry


def test_registry_and_attributes(be):
    assert be.name == "jax"
    assert "jax" in be.version and be.devices()
    assert isinstance(be.impl, cjax.JaxBackend)
    with pytest.raises(ValueError, match="formulation"):
        cjax.JaxBackend(formulation="winograd")


def test_batch_chunking_matches(monkeypatch):
    """The CPU family runs big batches in chunks (lax.map / lax.scan): same results. Called
    outside jit so the patched chunk size is what gets traced."""
    from convstdp.fast import _jax_formulations as F
    from convstdp.geometry import check_deconv2d

    monkeypatch.setattr(F, "CHUNK_BYTES", 200)  # about one image per chunk
    rng = np.random.default_rng(13)
    x = rng.standard_normal((6, 3, 4, 2)).astype(np.float32)
    k = rng.standard_normal((2, 3, 2, 3)).astype(np.float32)
    x2 = rng.standard_normal(x.shape).astype(np.float32)
    for stride, padding in (((2, 1), "SAME"), (1, ((1, 0), (-1, 2)))):
        g = check_deconv2d(x, k, stride, padding)
        assert F._chunk(6, g.out_size[0] * g.out_size[1] * 3 * 4) < 6
        d = rng.standard_normal(g.y_shape).astype(np.float32)
        d2 = rng.standard_normal(g.y_shape).astype(np.float32)
        refs = _refs(x, k, d, stride, padding)
        geo = dict(stride=g.stride, pads=g.pads, form="phase", num=F.HIGHEST)
        y = F.deconv2d(jnp.asarray(x), jnp.asarray(k), out_size=g.out_size, **geo)
        assert_close("chunked y", y, *refs["deconv2d"])
        dx = F.deconv2d_dx(jnp.asarray(k), jnp.asarray(d), in_size=g.in_size, **geo)
        assert_close("chunked dx", dx, *refs["dx"])
        pair = (jnp.asarray(x), jnp.asarray(x2)), (jnp.asarray(d), jnp.asarray(d2))
        dk = F.deconv2d_dk(*pair, ksize=g.kernel_size, **geo)
        refs2 = _refs(x2, k, d2, stride, padding)
        assert_close("chunked dk pair", dk, refs["dk"][0] + refs2["dk"][0], refs["dk"][1] + refs2["dk"][1])


def test_choose_formulation():
    from convstdp.fast._jax_formulations import choose_formulation

    assert choose_formulation("gpu", 64, (65, 65), (3, 3), (32, 32), (2, 2)) == "conv"
    assert choose_formulation("cpu", 64, (65, 65), (3, 3), (32, 32), (2, 2)) == "phase"
    assert choose_formulation("cpu", 32, (28, 28), (5, 5), (8, 16), (1, 1)) == "phase"
    assert choose_formulation("cpu", 1, (28, 28), (5, 5), (16, 1), (2, 2)) == "conv"


def test_convstdp_imports_without_jax():
    code = "import sys, convstdp; convstdp.get_backend('reference'); sys.exit('jax' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_jax_missing_is_reported(monkeypatch):
    """Without jax, the factory's ImportError becomes BackendUnavailable with the reason."""
    import convstdp.backends as backends

    monkeypatch.setitem(sys.modules, "jax", None)  # `import jax` now raises ImportError(name="jax")
    monkeypatch.delitem(sys.modules, "convstdp.fast.jax")
    monkeypatch.setattr(backends, "_instances", {})
    monkeypatch.setattr(backends, "_failures", {})
    monkeypatch.setattr(backends, "_errors", {})
    with pytest.raises(BackendUnavailable, match="jax is not installed"):
        backends.get_backend("jax")


def test_our_own_module_missing_is_a_bug_not_unavailable(monkeypatch):
    """convstdp's own module failing to import is BackendError, never "not installed" (SPEC §7)."""
    import convstdp.backends as backends

    monkeypatch.setitem(sys.modules, "convstdp.fast.jax", None)
    monkeypatch.setattr(backends, "_instances", {})
    monkeypatch.setattr(backends, "_failures", {})
    monkeypatch.setattr(backends, "_errors", {})
    with pytest.raises(backends.BackendError, match=r"convstdp\.fast\.jax.*a bug in convstdp"):
        backends.get_backend("jax")
    assert backends.available_backends()["jax"].startswith("error: ImportError")


def test_negative_pads_with_stride_compile_without_aborting() -> None:
    """XLA's CPU simplifier aborted the process (SIGABRT) on a dilated input cropped after the
    convolution; these full-grid cases crashed before negative pads became one ``lax.pad``."""
    import subprocess
    import sys

    crashed = [
        "s2-neg3.0.m2.0-k3x2-m2x3-c2to3-n1-f32-clip-bool",
        "s2-neg0.m2.m1.5-k2x5-m7x4-c4to4-n3-f32-target-bool",
        "s3x2-neg1.3.m1.0-k3x2-m2x3-c4to4-n1-f32-sim-bool",
    ]
    cmd = [sys.executable, "-m", "convstdp", "conformance", "--backend", "jax", "-q"]
    cmd += [a for c in crashed for a in ("--case", c)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
