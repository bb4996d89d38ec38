"""The NumPy reference against SPEC §3: worked example, a naive loop oracle, adjoint identities,
STDP parameters, dtypes, N = 0, inputs untouched, and upstream ngclearn where installed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from naive import naive_deconv2d, naive_dk, naive_dx

from convstdp import geometry
from convstdp import reference as ref

# --------------------------------------------------------------------------- worked example


def test_spec_worked_example():
    x = np.array([[0.0, 1.0], [1.0, 0.0]]).reshape(1, 2, 2, 1)
    k = np.ones((2, 2, 1, 1))
    y = ref.deconv2d(x, k, stride=1, padding="SAME")
    np.testing.assert_array_equal(y[0, :, :, 0], [[0, 1], [1, 2]])
    post_spike = y > 0
    w_new, dw = ref.stdp_update(k, x, 0.4 * x, post_spike, 1.3 * post_spike, A_plus=1.0, A_minus=1.0, eta=0.0)
    np.testing.assert_allclose(dw[:, :, 0, 0], [[0, -0.9], [-0.9, -1.8]], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(w_new, k)  # eta = 0
    np.testing.assert_array_equal(ref.backtransmit(k, post_spike)[0, :, :, 0], [[3, 2], [2, 1]])


# --------------------------------------------------------------------------- random cases

PADDINGS = st.one_of(
    st.sampled_from(["SAME", "VALID", "same"]),
    st.tuples(st.tuples(st.integers(-2, 4), st.integers(-2, 4)), st.tuples(st.integers(-2, 4), st.integers(-2, 4))),
)


@st.composite
def deconv_cases(draw, max_map=7, max_k=5, max_c=3):
    n = draw(st.integers(1, 3))
    h, w = draw(st.integers(1, max_map)), draw(st.integers(1, max_map))
    kh, kw = draw(st.integers(1, max_k)), draw(st.integers(1, max_k))
    ci, co = draw(st.integers(1, max_c)), draw(st.integers(1, max_c))
    stride = draw(st.one_of(st.integers(1, 4), st.tuples(st.integers(1, 4), st.integers(1, 4))))
    padding = draw(PADDINGS)
    sh, sw = geometry.normalize_stride(stride)
    pads = geometry.resolve_pads((kh, kw), (sh, sw), padding)
    ho = geometry.output_length(h, kh, sh, *pads[0])
    wo = geometry.output_length(w, kw, sw, *pads[1])
    if ho < 1 or wo < 1:
        padding = "SAME"
        ho, wo = h * sh, w * sw
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, ci))
    k = rng.standard_normal((kh, kw, ci, co))
    d = rng.standard_normal((n, ho, wo, co))
    return x, k, d, stride, padding


@settings(max_examples=60, deadline=None)
@given(deconv_cases())
def test_reference_matches_naive_loops(case):
    x, k, d, stride, padding = case
    kh, kw = k.shape[:2]
    np.testing.assert_allclose(
        ref.deconv2d(x, k, stride=stride, padding=padding),
        naive_deconv2d(x, k, stride, padding),
        rtol=1e-12,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        ref.deconv2d_dk(x, d, kernel_size=(kh, kw), stride=stride, padding=padding),
        naive_dk(x, d, (kh, kw), stride, padding),
        rtol=1e-12,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        ref.deconv2d_dx(k, d, stride=stride, padding=padding),
        naive_dx(k, d, stride, padding, x.shape[1:3]),
        rtol=1e-12,
        atol=1e-12,
    )


@settings(max_examples=150, deadline=None)
@given(deconv_cases(max_map=12, max_k=6, max_c=4))
def test_adjoint_identities(case):
    """<deconv2d(x, K), d> = <x, dX(K, d)> = <K, dK(x, d)> on every case."""
    x, k, d, stride, padding = case
    y = ref.deconv2d(x, k, stride=stride, padding=padding)
    dx = ref.deconv2d_dx(k, d, stride=stride, padding=padding, input_shape=x.shape)
    dk = ref.deconv2d_dk(x, d, kernel_size=k.shape[:2], stride=stride, padding=padding)
    assert y.shape == d.shape and dx.shape == x.shape and dk.shape == k.shape
    lhs = np.vdot(y, d)
    scale = np.vdot(np.abs(ref.deconv2d(np.abs(x), np.abs(k), stride=stride, padding=padding)), np.abs(d)) + 1e-300
    assert abs(lhs - np.vdot(x, dx)) <= 1e-12 * scale
    assert abs(lhs - np.vdot(k, dk)) <= 1e-12 * scale


AWKWARD = [
    # (N, H, W, Ci, Co, kh, kw, stride, padding)
    (2, 5, 3, 2, 3, 3, 2, (3, 2), "SAME"),  # rectangular map and kernel, anisotropic stride
    (1, 3, 4, 3, 2, 2, 2, (1, 2), "VALID"),
    (2, 4, 4, 2, 2, 2, 1, 3, "SAME"),  # stride larger than the kernel
    (1, 2, 3, 1, 2, 5, 6, 1, "VALID"),  # kernel larger than the map
    (2, 1, 1, 2, 3, 3, 3, 2, "SAME"),  # one-pixel map
    (3, 4, 6, 2, 1, 3, 3, (2, 3), ((2, -1), (-1, 3))),  # explicit, negative
]


@pytest.mark.parametrize("case", AWKWARD, ids=lambda c: "x".join(map(str, c[:7])) + f"-s{c[7]}-{c[8]}")
def test_awkward_cases_against_naive(case):
    n, h, w, ci, co, kh, kw, stride, padding = case
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, h, w, ci))
    k = rng.standard_normal((kh, kw, ci, co))
    y = ref.deconv2d(x, k, stride=stride, padding=padding)
    np.testing.assert_allclose(y, naive_deconv2d(x, k, stride, padding), atol=1e-12)
    d = rng.standard_normal(y.shape)
    np.testing.assert_allclose(
        ref.deconv2d_dk(x, d, kernel_size=(kh, kw), stride=stride, padding=padding),
        naive_dk(x, d, (kh, kw), stride, padding),
        atol=1e-12,
    )
    np.testing.assert_allclose(
        ref.deconv2d_dx(k, d, stride=stride, padding=padding), naive_dx(k, d, stride, padding, (h, w)), atol=1e-12
    )


def test_kernel_is_not_flipped():
    """A one-hot kernel shifts the input by -a: SPEC's ``p = h*s + lo - a`` (not PyTorch's +a)."""
    x = np.zeros((1, 5, 5, 1))
    x[0, 2, 2, 0] = 1.0
    k = np.zeros((3, 3, 1, 1))
    k[0, 2, 0, 0] = 1.0  # tap a = 0, b = 2
    y = ref.deconv2d(x, k, stride=1, padding="SAME")  # lo = 1
    assert np.argwhere(y[0, :, :, 0]).tolist() == [[2 + 1 - 0, 2 + 1 - 2]]


# --------------------------------------------------------------------------- stdp_update


def _stdp_inputs(seed=3, dtype=np.float64):
    rng = np.random.default_rng(seed)
    k = rng.uniform(0.0, 1.0, (3, 2, 2, 3)).astype(dtype)
    pre_spike = rng.random((2, 4, 5, 2)) < 0.3
    pre_trace = rng.uniform(0.0, 1.0, pre_spike.shape).astype(dtype)
    y_shape = geometry.check_deconv2d(pre_trace, k, 2, "SAME").y_shape
    post_spike = rng.random(y_shape) < 0.3
    post_trace = rng.uniform(0.0, 1.0, y_shape).astype(dtype)
    return k, pre_spike, pre_trace, post_spike, post_trace


def _dk(x, d):
    return ref.deconv2d_dk(x, d, kernel_size=(3, 2), stride=2, padding="SAME")


def test_stdp_update_each_parameter():
    k, s_pre, z_pre, s_post, z_post = _stdp_inputs()
    kw = dict(stride=2, padding="SAME")
    ltp = _dk(z_pre, s_post.astype(float))
    ltd = _dk(s_pre.astype(float), z_post)

    w, dw = ref.stdp_update(k, s_pre, z_pre, s_post, z_post, A_plus=1.0, A_minus=1.0, **kw)
    np.testing.assert_allclose(dw, ltp - ltd, atol=1e-14)
    np.testing.assert_array_equal(w, k)  # eta defaults to 0

    # A_plus and A_minus scale their own term only
    _, dw = ref.stdp_update(k, s_pre, z_pre, s_post, z_post, A_plus=0.5, A_minus=2.0, **kw)
    np.testing.assert_allclose(dw, 0.5 * ltp - 2.0 * ltd, atol=1e-14)

    # eta
    w, dw = ref.stdp_update(k, s_pre, z_pre, s_post, z_post, A_plus=1.0, A_minus=1.0, eta=0.1, **kw)
    np.testing.assert_allclose(w, k + 0.1 * (ltp - ltd), atol=1e-14)

    # pretrace_target shifts the pre trace of the LTP term: dK(z - t, s) = dK(z, s) - t * dK(1, s)
    _, dw_t = ref.stdp_update(k, s_pre, z_pre, s_post, z_post, A_plus=1.0, A_minus=1.0, pretrace_target=0.3, **kw)
    np.testing.assert_allclose(dw_t, ltp - 0.3 * _dk(np.ones_like(z_pre), s_post.astype(float)) - ltd, atol=1e-14)
    assert not np.allclose(dw_t, ltp - ltd)

    # w_decay subtracts w_decay * W (only when > 0)
    w, _ = ref.stdp_update(k, s_pre, z_pre, s_post, z_post, A_plus=1.0, A_minus=1.0, eta=0.1, w_decay=0.05, **kw)
    np.testing.assert_allclose(w, k + 0.1 * (ltp - ltd) - 0.05 * k, atol=1e-14)
    w_neg, _ = ref.stdp_update(k, s_pre, z_pre, s_post, z_post, A_plus=1.0, A_minus=1.0, eta=0.1, w_decay=-0.05, **kw)
    np.testing.assert_allclose(w_neg, k + 0.1 * (ltp - ltd), atol=1e-14)

    # w_bound clips to [0.01, w_bound - 0.01] (only when > 0)
    w, _ = ref.stdp_update(k, s_pre, z_pre, s_post, z_post, A_plus=1.0, A_minus=1.0, eta=1.0, w_bound=0.5, **kw)
    unclipped = k + (ltp - ltd)
    np.testing.assert_allclose(w, np.clip(unclipped, 0.01, 0.49), atol=1e-14)
    assert w.min() == pytest.approx(0.01) and w.max() == pytest.approx(0.49)
    assert (unclipped < 0.01).any() and (unclipped > 0.49).any()  # both bounds bite


def test_stdp_int_and_bool_spikes_agree():
    k, s_pre, z_pre, s_post, z_post = _stdp_inputs(dtype=np.float32)
    a = ref.stdp_update(k, s_pre, z_pre, s_post, z_post, stride=2, A_plus=0.7, A_minus=0.4, eta=0.2)
    b = ref.stdp_update(
        k, s_pre.astype(np.int32), z_pre, s_post.astype(np.int64), z_post, stride=2, A_plus=0.7, A_minus=0.4, eta=0.2
    )
    for u, v in zip(a, b, strict=True):
        assert u.dtype == v.dtype == np.float32
        np.testing.assert_array_equal(u, v)


# --------------------------------------------------------------------------- contract


def test_float32_in_float32_out_and_accuracy():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 6, 5, 3)).astype(np.float32)
    k = rng.standard_normal((3, 4, 3, 2)).astype(np.float32)
    y = ref.deconv2d(x, k, stride=(2, 1), padding="VALID")
    assert y.dtype == np.float32
    y64 = ref.deconv2d(x.astype(np.float64), k.astype(np.float64), stride=(2, 1), padding="VALID")
    assert y64.dtype == np.float64
    np.testing.assert_array_equal(y, y64.astype(np.float32))  # float64 accumulation, one rounding
    d = rng.standard_normal(y.shape).astype(np.float32)
    assert ref.deconv2d_dk(x, d, kernel_size=(3, 4), stride=(2, 1), padding="VALID").dtype == np.float32
    assert ref.deconv2d_dx(k, d, stride=(2, 1), padding="VALID").dtype == np.float32
    assert ref.deconv2d(x, k.astype(np.float64)).dtype == np.float64  # result_type of the floats


def test_batch_of_zero():
    x = np.zeros((0, 4, 3, 2), np.float32)
    k = np.ones((3, 3, 2, 5), np.float32)
    y = ref.deconv2d(x, k, stride=2)
    assert y.shape == (0, 8, 6, 5) and y.dtype == np.float32
    dk = ref.deconv2d_dk(x, y, kernel_size=3, stride=2)
    assert dk.shape == (3, 3, 2, 5)
    np.testing.assert_array_equal(dk, 0)
    assert ref.deconv2d_dx(k, y, stride=2).shape == (0, 4, 3, 2)
    w, dw = ref.stdp_update(k, x, x, y, y, stride=2, A_plus=1.0, A_minus=1.0, eta=1.0)
    np.testing.assert_array_equal(w, k)
    np.testing.assert_array_equal(dw, 0)


def test_inputs_never_modified():
    k, s_pre, z_pre, s_post, z_post = _stdp_inputs()
    originals = [a.copy() for a in (k, s_pre, z_pre, s_post, z_post)]
    ref.deconv2d(z_pre, k, stride=2)
    ref.deconv2d_dk(z_pre, z_post, kernel_size=(3, 2), stride=2)
    ref.deconv2d_dx(k, z_post, stride=2)
    ref.stdp_update(
        k, s_pre, z_pre, s_post, z_post, stride=2, A_plus=1.0, A_minus=1.0, eta=1.0, w_decay=0.1, w_bound=1.0
    )
    ref.advance(z_pre, k, stride=2, resist_scale=2.0, bias=np.ones(3))
    for before, after in zip(originals, (k, s_pre, z_pre, s_post, z_post), strict=True):
        np.testing.assert_array_equal(before, after)


def test_advance_and_backtransmit():
    k, _, z_pre, s_post, _ = _stdp_inputs()
    bias = np.array([0.1, -0.2, 0.3])
    y = ref.advance(z_pre, k, stride=2, resist_scale=2.5, bias=bias)
    np.testing.assert_allclose(y, ref.deconv2d(z_pre, k, stride=2) * 2.5 + bias, atol=1e-14)
    np.testing.assert_array_equal(
        ref.backtransmit(k, s_post, stride=2), ref.deconv2d_dx(k, s_post.astype(float), stride=2)
    )


def test_non_finite_inputs_propagate_without_error():
    x = np.ones((1, 3, 3, 1))
    x[0, 1, 1, 0] = np.nan
    k = np.ones((2, 2, 1, 1))
    k[0, 0, 0, 0] = np.inf
    y = ref.deconv2d(x, k)
    assert np.isnan(y).any() and y.shape == (1, 3, 3, 1)


# --------------------------------------------------------------------------- upstream


SQUARE = [
    (2, 6, 3, 4, 3, 1, "SAME"),
    (1, 5, 2, 3, 2, 2, "SAME"),
    (2, 4, 3, 2, 3, 2, "VALID"),
    (1, 6, 1, 2, 5, 1, "VALID"),
    (2, 4, 2, 2, 2, 3, "SAME"),
]


@pytest.mark.parametrize("case", SQUARE, ids=lambda c: f"n{c[0]}h{c[1]}c{c[2]}to{c[3]}k{c[4]}s{c[5]}-{c[6]}")
def test_matches_upstream_ngclearn(case):
    ngcconv = pytest.importorskip(
        "ngclearn.components.synapses.convolution.ngcconv", reason="ngclearn not installed (the 'upstream' extra)"
    )
    n, h, ci, co, k_size, s, padding = case
    rng = np.random.default_rng(5)
    x = rng.standard_normal((n, h, h, ci)).astype(np.float32)
    k = rng.standard_normal((k_size, k_size, ci, co)).astype(np.float32)
    y_up = np.asarray(ngcconv.deconv2d(x, k, stride_size=s, padding=padding))
    y = ref.deconv2d(x, k, stride=s, padding=padding)
    assert y.shape == y_up.shape
    np.testing.assert_allclose(y, y_up, rtol=1e-5, atol=1e-5)
    d = rng.standard_normal(y.shape).astype(np.float32)
    # the seed's own shape correction (TraceSTDPDeconvSynapse._init), then its evolve/backtransmit calls
    raw = ngcconv._calc_dK_deconv(np.zeros_like(x), np.zeros_like(d), stride_size=s, out_size=k_size)
    delta = (abs(raw.shape[0] - k_size), abs(raw.shape[1] - k_size))
    dk_up = np.asarray(ngcconv.calc_dK_deconv(x, d, delta, stride_size=s, out_size=k_size, padding=padding))
    np.testing.assert_allclose(
        ref.deconv2d_dk(x, d, kernel_size=k_size, stride=s, padding=padding), dk_up, rtol=1e-4, atol=1e-4
    )
    dx_up = np.asarray(ngcconv.calc_dX_deconv(k, d, (0, 0), stride_size=s, padding=padding))
    np.testing.assert_allclose(ref.deconv2d_dx(k, d, stride=s, padding=padding), dx_up, rtol=1e-4, atol=1e-4)
