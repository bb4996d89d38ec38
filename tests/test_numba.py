"""The ``"numba"`` backend against the NumPy reference (float64 oracle), plus its own promises:
thread-count independence (on the parallel drivers), every declared internal path reachable, bool/int
spikes, N = 0, untouched inputs, NaN/Inf, shared errors. The disk cache across processes: test_numba_cache."""

from __future__ import annotations

import itertools
from contextlib import contextmanager

import numpy as np
import pytest

numba = pytest.importorskip("numba", reason="numba is not installed: the numba backend is unavailable")

import convstdp  # noqa: E402
import convstdp.paths  # noqa: E402
from convstdp import geometry  # noqa: E402
from convstdp import reference as ref  # noqa: E402
from convstdp.fast import numba as numba_backend  # noqa: E402

BE = convstdp.get_backend("numba")

STRIDES = [1, 2, 3, (1, 2), (3, 2)]
PADDINGS = ["SAME", "VALID", ((2, 1), (0, 3)), ((-1, 2), (1, -1))]
# (name, N, H, W, Ci, Co, kh, kw): rectangular maps and kernels, kernel larger than the map,
# stride larger than the kernel (with stride 3), one-pixel maps, Ci != Co, batch 1 and several.
SHAPES = [
    ("rect", 2, 5, 7, 3, 4, 3, 2),
    ("kernel>map", 1, 2, 3, 2, 3, 4, 5),
    ("1x1-map", 3, 1, 1, 2, 1, 2, 3),
    ("1x1-kernel", 2, 4, 3, 5, 2, 1, 1),
    ("square", 1, 6, 6, 4, 4, 5, 5),
]
DTYPES = [np.float64, np.float32]
EPS = {np.dtype(np.float64): np.finfo(np.float64).eps, np.dtype(np.float32): np.finfo(np.float32).eps}

PARAMS = dict(A_plus=0.7, A_minus=0.45, eta=0.3, pretrace_target=0.2, w_decay=0.05, w_bound=1.2)


def _rand(rng, shape, dtype, density=None):
    """Non-symmetric values; with ``density``, a spike-like array of mostly zeros."""
    a = rng.standard_normal(shape) + 0.3
    if density is not None:
        a = np.where(rng.random(shape) < density, a, 0.0)
    return a.astype(dtype)


def _f64(a):
    return np.asarray(a).astype(np.float64)


def assert_close(got, want, mag, nterms, dtype, what):
    """``|got - want| <= 8·eps·nterms·mag`` elementwise, ``mag`` being the op on ``|inputs|``."""
    assert got.dtype == np.dtype(dtype), f"{what}: dtype {got.dtype}, expected {np.dtype(dtype)}"
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    if not got.size:
        return
    bound = 8 * EPS[np.dtype(dtype)] * max(nterms, 1) * mag + 1e-300
    err = np.abs(_f64(got) - want)
    bad = err > bound
    if bad.any():
        idx = np.unravel_index(np.argmax(err / bound), err.shape)
        pytest.fail(
            f"{what}: {bad.sum()} of {err.size} elements ({bad.mean():.1%}) out of bound; worst at {idx}: "
            f"got {got[idx]!r}, want {want[idx]!r}, error {err[idx]:.3g}, bound {bound[idx]:.3g}"
        )


@contextmanager
def _forced(path):
    """Inside the block the backend takes the ``path`` formulation (``"dense"``, ``"sparse"``; None: its choice)."""
    before = BE.impl.force
    BE.impl.force = path
    try:
        yield
    finally:
        BE.impl.force = before


def _only(taken, kind):
    """Every path noted is a ``kind`` one (``"dense"``) or none is (``"sparse"``)."""
    dense = [p for p in taken if p.endswith("/dense")]
    assert taken and (dense == taken if kind == "dense" else not dense), taken


def _cases():
    for (name, n, h, w, ci, co, kh, kw), stride, padding in itertools.product(SHAPES, STRIDES, PADDINGS):
        st = geometry.normalize_stride(stride)
        pads = geometry.resolve_pads((kh, kw), st, padding)
        out = (geometry.output_length(h, kh, st[0], *pads[0]), geometry.output_length(w, kw, st[1], *pads[1]))
        if min(out) >= 1:
            yield name, (n, h, w, ci, co, kh, kw), stride, padding


CASES = list(_cases())


@pytest.mark.parametrize("path", ["sparse", "dense"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("stride", STRIDES, ids=str)
@pytest.mark.parametrize("padding", PADDINGS, ids=geometry.padding_label)
def test_operators_agree_with_reference(dtype, stride, padding, path):
    cases = [c for c in CASES if c[2] == stride and c[3] == padding]
    assert cases, "every stride/padding pair keeps at least one shape"
    rng = np.random.default_rng(1234)
    with _forced(path), convstdp.paths.recording() as taken:
        _operators_agree(rng, cases, dtype, stride, padding)
    _only(taken, path)


def _operators_agree(rng, cases, dtype, stride, padding):
    for name, (n, h, w, ci, co, kh, kw), _, _ in cases:
        tag = f"{name} stride={stride} padding={geometry.padding_label(padding)} {np.dtype(dtype).name}"
        kw_ = dict(stride=stride, padding=padding)
        x = _rand(rng, (n, h, w, ci), dtype, density=0.5)
        k = _rand(rng, (kh, kw, ci, co), dtype)
        y = BE.deconv2d(x, k, **kw_)
        want = ref.deconv2d(_f64(x), _f64(k), **kw_)
        assert_close(
            y, want, ref.deconv2d(np.abs(_f64(x)), np.abs(_f64(k)), **kw_), kh * kw * ci, dtype, f"deconv2d {tag}"
        )

        d = _rand(rng, want.shape, dtype, density=0.6)
        dx = BE.deconv2d_dx(k, d, **kw_, input_shape=x.shape)
        want = ref.deconv2d_dx(_f64(k), _f64(d), **kw_, input_shape=x.shape)
        mag = ref.deconv2d_dx(np.abs(_f64(k)), np.abs(_f64(d)), **kw_, input_shape=x.shape)
        assert_close(dx, want, mag, kh * kw * co, dtype, f"deconv2d_dx {tag}")

        for dd in (d, _rand(rng, d.shape, dtype)):  # sparser d, then dense d: both drive paths
            dk = BE.deconv2d_dk(x, dd, kernel_size=(kh, kw), **kw_)
            want = ref.deconv2d_dk(_f64(x), _f64(dd), kernel_size=(kh, kw), **kw_)
            mag = ref.deconv2d_dk(np.abs(_f64(x)), np.abs(_f64(dd)), kernel_size=(kh, kw), **kw_)
            assert_close(dk, want, mag, n * h * w, dtype, f"deconv2d_dk {tag}")


def _stdp_arrays(rng, n, h, w, ci, co, kh, kw, stride, padding, dtype):
    k = np.abs(_rand(rng, (kh, kw, ci, co), dtype))
    yshape = ref.deconv2d(np.zeros((n, h, w, ci)), np.zeros((kh, kw, ci, co)), stride=stride, padding=padding).shape
    pre_s = (rng.random((n, h, w, ci)) < 0.3).astype(dtype)
    pre_t = rng.random((n, h, w, ci)).astype(dtype)
    post_s = (rng.random(yshape) < 0.3).astype(dtype)
    post_t = rng.random(yshape).astype(dtype)
    return k, pre_s, pre_t, post_s, post_t


def _stdp_mag(k, pre_s, pre_t, post_s, post_t, stride, padding, p):
    """Magnitude of every term of W' and dW (the reference on absolute values)."""
    a = [np.abs(_f64(v)) for v in (k, pre_s, pre_t, post_s, post_t)]
    ltp = ref.deconv2d_dk(
        a[2] + abs(p["pretrace_target"]),
        abs(p["A_plus"]) * a[3],
        kernel_size=k.shape[:2],
        stride=stride,
        padding=padding,
    )
    ltd = ref.deconv2d_dk(a[1], abs(p["A_minus"]) * a[4], kernel_size=k.shape[:2], stride=stride, padding=padding)
    dw = ltp + ltd
    return a[0] * (1 + abs(p["w_decay"])) + abs(p["eta"]) * dw, dw


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    "params",
    [
        PARAMS,
        dict(A_plus=1.0, A_minus=1.0),  # defaults: eta = 0, no target, no decay, no bound
        dict(A_plus=0.2, A_minus=0.9, eta=1.5, pretrace_target=-0.4, w_decay=0.0, w_bound=0.8),
        dict(A_plus=-0.3, A_minus=0.1, eta=0.01, pretrace_target=0.0, w_decay=0.2, w_bound=0.0),
    ],
    ids=["all", "defaults", "bound-no-decay", "decay-no-bound"],
)
@pytest.mark.parametrize("path", ["sparse", "dense"])
def test_stdp_update_and_step_agree_with_reference(dtype, params, path):
    rng = np.random.default_rng(99)
    with _forced(path), convstdp.paths.recording() as taken:
        _stdp_agrees(rng, dtype, params)
    _only([p for p in taken if p != "stdp_step/composed"], path)


def _stdp_agrees(rng, dtype, params):
    for name, (n, h, w, ci, co, kh, kw), stride, padding in CASES[::3]:
        tag = f"{name} stride={stride} padding={geometry.padding_label(padding)} {np.dtype(dtype).name}"
        kw_ = dict(stride=stride, padding=padding)
        k, pre_s, pre_t, post_s, post_t = _stdp_arrays(rng, n, h, w, ci, co, kh, kw, stride, padding, dtype)
        w_new, dw = BE.stdp_update(k, pre_s, pre_t, post_s, post_t, **kw_, **params)
        want_w, want_dw = ref.stdp_update(*(_f64(v) for v in (k, pre_s, pre_t, post_s, post_t)), **kw_, **params)
        mag_w, mag_dw = _stdp_mag(k, pre_s, pre_t, post_s, post_t, stride, padding, {**PARAMS, **params})
        terms = 2 * n * h * w + 2
        assert_close(dw, want_dw, mag_dw, terms, dtype, f"stdp_update dW {tag}")
        assert_close(w_new, want_w, mag_w, terms, dtype, f"stdp_update W' {tag}")

        for x in (pre_s, _rand(rng, pre_s.shape, dtype)):  # x is the pre spikes, then a separate input
            y, w2, dw2, dx = BE.stdp_step(k, x, pre_s, pre_t, post_s, post_t, **kw_, **params)
            assert np.array_equal(w2, w_new) and np.array_equal(dw2, dw), f"stdp_step update differs: {tag}"
            want = ref.deconv2d(_f64(x), _f64(k), **kw_)
            mag = ref.deconv2d(np.abs(_f64(x)), np.abs(_f64(k)), **kw_)
            assert_close(y, want, mag, kh * kw * ci, dtype, f"stdp_step y {tag}")
            want = ref.deconv2d_dx(_f64(w_new), _f64(post_s), **kw_, input_shape=x.shape)
            mag = ref.deconv2d_dx(np.abs(_f64(w_new)), np.abs(_f64(post_s)), **kw_, input_shape=x.shape)
            assert_close(dx, want, mag, kh * kw * co, dtype, f"stdp_step dX {tag}")


def test_worked_example_of_spec():
    x = np.array([[0.0, 1.0], [1.0, 0.0]]).reshape(1, 2, 2, 1)
    k = np.ones((2, 2, 1, 1))
    y = BE.deconv2d(x, k, stride=1, padding="SAME")
    np.testing.assert_array_equal(y[0, :, :, 0], [[0, 1], [1, 2]])
    post = (y > 0).astype(np.float64)
    _, dw = BE.stdp_update(k, x, 0.4 * x, post, 1.3 * post, A_plus=1.0, A_minus=1.0)
    np.testing.assert_allclose(dw[:, :, 0, 0], [[0, -0.9], [-0.9, -1.8]], rtol=1e-15, atol=1e-15)
    np.testing.assert_array_equal(BE.backtransmit(k, post)[0, :, :, 0], [[3, 2], [2, 1]])


def test_bool_and_int_spikes_are_cast_to_the_result_dtype():
    rng = np.random.default_rng(5)
    n, h, w, ci, co, kh, kw, stride, padding = 2, 5, 4, 3, 2, 3, 2, (2, 1), "SAME"
    k, pre_s, pre_t, post_s, post_t = _stdp_arrays(rng, n, h, w, ci, co, kh, kw, stride, padding, np.float32)
    spikes_b, post_i = pre_s.astype(bool), post_s.astype(np.int64)
    kw_ = dict(stride=stride, padding=padding)
    w_new, dw = BE.stdp_update(k, spikes_b, pre_t, post_i, post_t, **kw_, **PARAMS)
    want_w, want_dw = BE.stdp_update(k, pre_s, pre_t, post_s, post_t, **kw_, **PARAMS)
    assert w_new.dtype == dw.dtype == np.float32
    np.testing.assert_array_equal(dw, want_dw)
    np.testing.assert_array_equal(w_new, want_w)
    y = BE.deconv2d(spikes_b, k, **kw_)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, BE.deconv2d(pre_s, k, **kw_))
    dx = BE.deconv2d_dx(k, post_i, **kw_)
    assert dx.dtype == np.float32
    np.testing.assert_array_equal(dx, BE.deconv2d_dx(k, post_s, **kw_))
    # only bool/int inputs: float64 (SPEC §4)
    assert BE.deconv2d_dk(spikes_b, post_i, kernel_size=(kh, kw), **kw_).dtype == np.float64
    # mixed float widths promote; the fused step composes per-operator dtypes
    y, w2, dw2, dx2 = BE.stdp_step(k, pre_s.astype(np.float64), spikes_b, pre_t, post_i, post_t, **kw_, **PARAMS)
    assert (y.dtype, w2.dtype, dw2.dtype, dx2.dtype) == (np.float64, np.float32, np.float32, np.float32)
    np.testing.assert_array_equal(dw2, want_dw)


@contextmanager
def _threads(count):
    """Numba runs ``count`` threads inside the block."""
    before = numba.get_num_threads()
    numba.set_num_threads(count)
    try:
        yield
    finally:
        numba.set_num_threads(before)


MAX_THREADS = numba.config.NUMBA_NUM_THREADS
needs_threads = pytest.mark.skipif(MAX_THREADS < 2, reason="Numba has one thread here: no parallel path")


@needs_threads
@pytest.mark.parametrize("path", ["sparse", "dense"])
def test_results_do_not_depend_on_the_thread_count(path):
    """float64, a problem over the serial threshold with awkward sizes (17 and 19 channels, odd maps,
    stride (2, 1)): all threads and 1 thread agree bit for bit, on the sparse kernels (parallel and
    serial drivers) and on the dense ones (tiles and chunks fixed by the shapes)."""
    rng = np.random.default_rng(7)
    n, h, w, ci, co, kh, kw, stride, padding = 5, 29, 28, 17, 19, 3, 4, (2, 1), "SAME"
    k, pre_s, pre_t, post_s, post_t = _stdp_arrays(rng, n, h, w, ci, co, kh, kw, stride, padding, np.float64)
    x = _rand(rng, pre_s.shape, np.float64)
    kw_ = dict(stride=stride, padding=padding)

    def run():
        with _forced(path), convstdp.paths.recording() as taken:
            out = [
                BE.deconv2d(x, k, **kw_),
                BE.deconv2d_dx(k, post_t, **kw_),
                BE.deconv2d_dk(pre_s, post_t, kernel_size=(kh, kw), **kw_),  # sparse: driven by x
                BE.deconv2d_dk(x, post_s, kernel_size=(kh, kw), **kw_),  # sparse: driven by d_out
                *BE.stdp_update(k, pre_s, pre_t, post_s, post_t, **kw_, **PARAMS),
                *BE.stdp_step(k, pre_s, pre_s, pre_t, post_s, post_t, **kw_, **PARAMS),
                *BE.stdp_step(k, x, pre_s, pre_t, post_s, post_t, **kw_, **PARAMS),
            ]
        return out, taken

    with _threads(MAX_THREADS):
        many, taken_many = run()
    with _threads(1):
        one, taken_one = run()
    kind = "parallel" if path == "sparse" else "dense"
    assert len(taken_many) == 7 and all(p.endswith("/" + kind) for p in taken_many), taken_many
    assert [p.replace("/parallel", "/serial") for p in taken_many] == taken_one
    for i, (a, b) in enumerate(zip(many, one, strict=True)):
        assert np.array_equal(a, b), f"result {i} differs between {MAX_THREADS} threads and 1"
    if path == "dense":  # the fused step's update is stdp_update's, bit for bit, on the dense path too
        for j in (7, 11):
            assert np.array_equal(many[j], many[4]) and np.array_equal(many[j + 1], many[5])
        return

    # the serial and parallel drivers share bodies and chunking: same bits, whatever the size switch says
    from convstdp.fast import _numba_kernels as kern

    pads = geometry.resolve_pads((kh, kw), geometry.normalize_stride(stride), padding)
    y_shape = BE.deconv2d(pre_s, k, **kw_).shape
    params = geometry.StdpParams(**PARAMS)

    def fused(par, list_len):  # outputs and scratch start as garbage: every output element must be written
        y, w_out, dw, dx = (np.full(shape, np.nan) for shape in (y_shape, k.shape, k.shape, pre_s.shape))
        lists = (np.full(list_len, -1, dtype=np.int64), np.full(list_len, -1, dtype=np.int64))
        kern.stdp_step(
            k=k, x=pre_s, pre_s=pre_s, pre_t=pre_t, post_s=post_s, post_t=post_t, y=y, w_out=w_out, dw=dw, dx=dx,
            x_buf=lists[0], pre_buf=lists[0], post_buf=lists[1],
            acc_buf=np.full(7 * kh * ci * co * (kw + 2 * kw), np.nan), x_is_pre=True,
            sh=2, sw=1, lo_h=pads[0][0], lo_w=pads[1][0], chunks=7, params=params, par=par,
        )  # fmt: skip
        return y, w_out, dw, dx

    # list scratch: large enough (used), or too short (the kernel allocates its own)
    results = [fused(par, size) for par in (True, False) for size in (post_s.size + n * post_s.shape[1], 3)]
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert not np.isnan(a).any()
            assert np.array_equal(a, b)


def test_every_declared_path_is_reachable():
    """A small and an over-threshold problem, each through every operator (both dK drives, the fused
    step with and without ``x is pre_spike``, the composed mixed-dtype step), take every declared path;
    the over-threshold one with dense operands takes the dense paths, by the backend's own choice."""
    rng = np.random.default_rng(8)
    stride, padding = (2, 1), "SAME"
    kw_ = dict(stride=stride, padding=padding)
    taken = []
    for n, h, w, ci, co, kh, kw, density in (
        (2, 5, 6, 3, 4, 3, 2, 1.0),
        (4, 28, 28, 17, 19, 3, 3, 0.1),
        (4, 28, 28, 17, 19, 3, 3, 1.0),
    ):
        k, pre_s, pre_t, post_s, post_t = _stdp_arrays(rng, n, h, w, ci, co, kh, kw, stride, padding, np.float32)
        x = _rand(rng, pre_s.shape, np.float32, density=density)
        if density == 1.0:
            pre_s, post_s = np.ones_like(pre_s), np.ones_like(post_s)
            post_t = _rand(rng, post_t.shape, np.float32)
        else:
            pre_s, post_s = (
                (pre_s * (rng.random(pre_s.shape) < density)),
                (post_s * (rng.random(post_s.shape) < density)),
            )
        big = n * h * w * ci * co * kh * kw >= numba_backend.SERIAL_BELOW
        with _threads(MAX_THREADS), convstdp.paths.recording() as rec:
            BE.deconv2d(x, k, **kw_)
            BE.deconv2d_dx(k, post_s, **kw_)
            BE.deconv2d_dk(pre_s, post_t, kernel_size=(kh, kw), **kw_)
            BE.deconv2d_dk(x, post_s, kernel_size=(kh, kw), **kw_)
            BE.stdp_update(k, pre_s, pre_t, post_s, post_t, **kw_, **PARAMS)
            BE.stdp_step(k, pre_s, pre_s, pre_t, post_s, post_t, **kw_, **PARAMS)
            BE.stdp_step(k, x, pre_s, pre_t, post_s, post_t, **kw_, **PARAMS)
            BE.stdp_step(k, x.astype(np.float64), pre_s, pre_t, post_s, post_t, **kw_, **PARAMS)  # composed
        kind = "dense" if big and density == 1.0 else "parallel" if big and MAX_THREADS > 1 else "serial"
        assert all(p == "stdp_step/composed" or p.endswith("/" + kind) for p in rec), (kind, rec)
        taken += rec
    declared = convstdp.paths.declared(BE.impl)
    assert {p.split("/")[0] for p in declared} == {"deconv2d", "deconv2d_dx", "deconv2d_dk", "stdp_update", "stdp_step"}
    assert set(taken) <= declared, f"noted but not declared: {sorted(set(taken) - declared)}"
    assert set(taken) == declared, f"declared but never taken: {sorted(declared - set(taken))}"
    assert any(p.endswith("/parallel") for p in declared) == (MAX_THREADS > 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    "shape",
    [
        (3, 13, 11, 37, 41, 3, 4, (2, 1), "SAME"),  # wide channels, stride phases of 2 and 1 taps
        (2, 17, 15, 9, 70, 5, 5, 1, ((3, 1), (-1, 2))),  # stride 1 (direct rows), cropping pads
        (3, 13, 14, 40, 33, 2, 3, 3, "VALID"),  # stride > kernel: output phases no tap reaches
    ],
    ids=["wide-s2x1", "wide-co-s1", "s3-k2x3"],
)
def test_dense_path_is_chosen_for_dense_operands_and_agrees_with_reference(dtype, shape):
    """Dense operands over the size floor: every operator takes its dense path by the backend's own choice
    (no ``force``), with a remainder tile (rows not a multiple of the tile) in every pass, and agrees
    with the float64 reference to the bound."""
    from convstdp.fast import _numba_dense as kd

    n, h, w, ci, co, kh, kw, stride, padding = shape
    assert n * h * w * ci * co * kh * kw >= numba_backend.DENSE_MIN_MACS
    rng = np.random.default_rng(21)
    kw_ = dict(stride=stride, padding=padding)
    st = geometry.normalize_stride(stride)
    pads = geometry.resolve_pads((kh, kw), st, padding)
    x = _rand(rng, (n, h, w, ci), dtype)
    k = _rand(rng, (kh, kw, ci, co), dtype)
    y_shape = ref.deconv2d(np.zeros((n, h, w, ci)), np.zeros(k.shape), **kw_).shape
    d = _rand(rng, y_shape, dtype)
    # remainder tiles: the output pass's last tile of some group and the dX pass's last tile are partial
    grp = kd.groups(k.shape, st, pads, y_shape[1:3])
    rows = kd.tile_rows(int(grp[:, kd.G_D].max()))
    tiles = kd.out_tiles(grp, n, rows)
    assert any(t[2] - t[1] < rows for t in tiles) and (n * h * w) % kd.tile_rows(kh * kw * co)

    pre_s = (rng.random(x.shape) < 0.8).astype(dtype)
    pre_t, post_t = rng.random(x.shape).astype(dtype), rng.random(y_shape).astype(dtype)
    post_s = (rng.random(y_shape) < 0.8).astype(dtype)
    f = _f64
    a = [np.abs(f(v)) for v in (x, k, d)]
    with convstdp.paths.recording() as taken:
        y = BE.deconv2d(x, k, **kw_)
        assert_close(y, ref.deconv2d(f(x), f(k), **kw_), ref.deconv2d(a[0], a[1], **kw_), kh * kw * ci, dtype, "y")
        dx = BE.deconv2d_dx(k, d, **kw_, input_shape=x.shape)
        want = ref.deconv2d_dx(f(k), f(d), **kw_, input_shape=x.shape)
        mag = ref.deconv2d_dx(a[1], a[2], **kw_, input_shape=x.shape)
        assert_close(dx, want, mag, kh * kw * co, dtype, "dX")
        dk = BE.deconv2d_dk(x, d, kernel_size=(kh, kw), **kw_)
        want = ref.deconv2d_dk(f(x), f(d), kernel_size=(kh, kw), **kw_)
        assert_close(dk, want, ref.deconv2d_dk(a[0], a[2], kernel_size=(kh, kw), **kw_), n * h * w, dtype, "dK")
        w_new, dw = BE.stdp_update(k, pre_s, pre_t, post_s, post_t, **kw_, **PARAMS)
        want_w, want_dw = ref.stdp_update(*(f(v) for v in (k, pre_s, pre_t, post_s, post_t)), **kw_, **PARAMS)
        mag_w, mag_dw = _stdp_mag(k, pre_s, pre_t, post_s, post_t, stride, padding, PARAMS)
        assert_close(dw, want_dw, mag_dw, 2 * n * h * w + 2, dtype, "dW")
        assert_close(w_new, want_w, mag_w, 2 * n * h * w + 2, dtype, "W'")
        for xx in (pre_s, x):
            y2, w2, dw2, dx2 = BE.stdp_step(k, xx, pre_s, pre_t, post_s, post_t, **kw_, **PARAMS)
            assert np.array_equal(w2, w_new) and np.array_equal(dw2, dw)
            want = ref.deconv2d(f(xx), f(k), **kw_)
            assert_close(y2, want, ref.deconv2d(np.abs(f(xx)), a[1], **kw_), kh * kw * ci, dtype, "step y")
            want = ref.deconv2d_dx(f(w2), f(post_s), **kw_, input_shape=x.shape)
            mag = ref.deconv2d_dx(np.abs(f(w2)), np.abs(f(post_s)), **kw_, input_shape=x.shape)
            assert_close(dx2, want, mag, kh * kw * co, dtype, "step dX")
    assert (
        taken
        == [f"{op}/dense" for op in ("deconv2d", "deconv2d_dx", "deconv2d_dk", "stdp_update")] + ["stdp_step/dense"] * 2
    ), taken


def test_dense_blas_threads_are_restored():
    """The dense path runs BLAS single-threaded inside its tiles and gives the thread count back."""
    pytest.importorskip("threadpoolctl")
    from threadpoolctl import threadpool_info

    before = [(i["filepath"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"]
    x = np.ones((4, 20, 20, 8))
    with _forced("dense"), convstdp.paths.recording() as taken:
        BE.deconv2d(x, np.ones((3, 3, 8, 8)))
    assert taken == ["deconv2d/dense"]
    after = [(i["filepath"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"]
    assert {f: t for f, t in after if f in dict(before)} == dict(before)


@pytest.mark.parametrize("density", [0.0, 0.3, 1.0])
def test_row_lists_hold_the_non_zeros_of_each_row(density):
    """Row lists match ``np.nonzero`` per row, in the scratch buffer (upper bound) or a fresh array."""
    from convstdp.fast import _numba_kernels as kern

    rng = np.random.default_rng(11)
    a = (rng.random((3, 4, 5, 6)) < density) * rng.uniform(-2.0, 3.0, (3, 4, 5, 6))
    a[0, 0, 0, :2] = (-0.0, np.nan)  # -0.0 is a zero, NaN is not
    rows = a.reshape(12, 30)
    for par in (True, False):
        for buf in (np.full(a.size + 12, -7, dtype=np.int64), np.empty(0, dtype=np.int64)):
            offs, ent = kern.row_lists(a, buf, par)
            assert offs[0] == 0 and offs[-1] == len(ent)
            for r in range(12):
                got = ent[offs[r] : offs[r + 1] - 1]
                j = np.flatnonzero(rows[r] != 0)
                np.testing.assert_array_equal(got >> 32, j // 6)
                np.testing.assert_array_equal(got & 0xFFFFFFFF, j % 6)
            if buf.size:
                assert np.shares_memory(ent, buf)


def test_row_list_scratch_follows_the_sampled_density_and_falls_back_when_short():
    """Scratch is sized from a row sample; spikes only in unsampled rows make it too short, and the
    kernel then allocates the exact size: same results as the reference, and as a full-size buffer."""
    x = np.zeros((8, 64, 64, 4), np.float32)  # 131072 elements, sampled every 2nd row
    x[:, 1::2, ::3, :] = 1.0  # only odd rows spike: the sample sees none
    assert numba_backend._share(x) == 0.0
    assert numba_backend._list_buf(x).size == 2 * 8 * 64  # two slots per row: far too short
    dense = (np.random.default_rng(3).random(x.shape) < 0.1).astype(np.float32)
    assert numba_backend._list_buf(dense).size < 0.2 * dense.size  # ~1.25 x 10 %, not every element
    k = np.random.default_rng(4).uniform(0.1, 1.0, (3, 3, 4, 2)).astype(np.float32)
    with _forced("sparse"):
        y = BE.deconv2d(x, k, stride=1, padding="SAME")
    np.testing.assert_allclose(y, ref.deconv2d(x, k, stride=1, padding="SAME"), rtol=1e-5, atol=1e-5)


def test_empty_batch():
    k = np.random.default_rng(0).random((3, 2, 4, 5))
    x = np.zeros((0, 6, 5, 4))
    y = BE.deconv2d(x, k, stride=2, padding="VALID")
    assert y.shape == (0, 13, 10, 5) and y.dtype == np.float64
    dx = BE.deconv2d_dx(k, y, stride=2, padding="VALID")
    assert dx.shape == x.shape
    dk = BE.deconv2d_dk(x, y, kernel_size=(3, 2), stride=2, padding="VALID")
    np.testing.assert_array_equal(dk, np.zeros(k.shape))
    w_new, dw = BE.stdp_update(k, x, x, y, y, stride=2, padding="VALID", A_plus=1.0, A_minus=1.0, eta=0.5, w_decay=0.1)
    np.testing.assert_array_equal(dw, np.zeros(k.shape))
    np.testing.assert_allclose(w_new, 0.9 * k, rtol=1e-15)
    outs = BE.stdp_step(
        k.astype(np.float32),
        x.astype(np.float32),
        x.astype(np.float32),
        x.astype(np.float32),
        y.astype(np.float32),
        y.astype(np.float32),
        stride=2,
        padding="VALID",
        A_plus=1.0,
        A_minus=1.0,
    )
    assert [o.shape for o in outs] == [y.shape, k.shape, k.shape, x.shape]


@pytest.mark.parametrize("path", ["sparse", "dense"])
def test_inputs_are_not_modified_and_views_are_accepted(path):
    with _forced(path):
        _inputs_untouched()


def _inputs_untouched():
    rng = np.random.default_rng(3)
    k, pre_s, pre_t, post_s, post_t = _stdp_arrays(rng, 2, 5, 6, 3, 4, 3, 3, 2, "SAME", np.float64)
    arrays = (k, pre_s, pre_t, post_s, post_t)
    copies = [a.copy() for a in arrays]
    BE.stdp_update(*arrays, stride=2, A_plus=1.0, A_minus=0.5, eta=0.1, w_decay=0.1, w_bound=2.0)
    BE.stdp_step(k, pre_s, *arrays[1:], stride=2, A_plus=1.0, A_minus=0.5, eta=0.1)
    BE.deconv2d(pre_t, k, stride=2)
    BE.deconv2d_dx(k, post_t, stride=2)
    BE.deconv2d_dk(pre_t, post_t, kernel_size=3, stride=2)
    for a, c in zip(arrays, copies, strict=True):
        np.testing.assert_array_equal(a, c)
    # non-contiguous views give what their contiguous copies give
    xv = np.swapaxes(pre_t, 1, 2).copy()[:, ::-1].swapaxes(1, 2)
    np.testing.assert_array_equal(BE.deconv2d(xv, k, stride=2), BE.deconv2d(np.ascontiguousarray(xv), k, stride=2))


@pytest.mark.parametrize("path", ["sparse", "dense"])
def test_non_finite_inputs_do_not_crash(path):
    with _forced(path), convstdp.paths.recording() as taken:
        _non_finite()
    _only([p for p in taken if p != "stdp_step/composed"], path)


def _non_finite():
    rng = np.random.default_rng(4)
    k, pre_s, pre_t, post_s, post_t = _stdp_arrays(rng, 2, 5, 6, 3, 4, 3, 3, 2, "SAME", np.float32)
    k[0, 0, 0, 0], pre_t[0, 1, 1, 0], post_t[1, 2, 3, 1] = np.nan, np.inf, -np.inf
    pre_s[0, 0, 0, 0], post_s[0, 0, 0, 0] = np.nan, np.inf
    y = BE.deconv2d(pre_t, k, stride=2)
    dx = BE.deconv2d_dx(k, post_t, stride=2)
    dk = BE.deconv2d_dk(pre_t, post_t, kernel_size=3, stride=2)
    w_new, dw = BE.stdp_update(k, pre_s, pre_t, post_s, post_t, stride=2, A_plus=1.0, A_minus=0.5, eta=0.1, w_bound=2.0)
    outs = BE.stdp_step(k, pre_s, pre_s, pre_t, post_s, post_t, stride=2, A_plus=1.0, A_minus=0.5)
    assert y.shape == post_t.shape and dx.shape == pre_t.shape and dk.shape == w_new.shape == dw.shape == k.shape
    assert len(outs) == 4 and not np.isfinite(y).all()


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda: BE.deconv2d(np.zeros((2, 3, 4)), np.zeros((2, 2, 4, 1))), ValueError, "rank 4"),
        (lambda: BE.deconv2d(np.zeros((1, 3, 3, 2)), np.zeros((2, 2, 3, 1))), ValueError, "input channels"),
        (lambda: BE.deconv2d(np.zeros((1, 3, 3, 2)), np.zeros((2, 2, 2, 1)), padding="FULL"), ValueError, "padding"),
        (lambda: BE.deconv2d(np.zeros((1, 3, 3, 2)), np.zeros((2, 2, 2, 1)), stride=0), ValueError, "stride"),
        (lambda: BE.deconv2d(np.zeros((1, 3, 3, 2), complex), np.zeros((2, 2, 2, 1))), TypeError, "complex"),
        (lambda: BE.deconv2d_dx(np.zeros((2, 2, 2, 1)), np.zeros((1, 5, 5, 1)), stride=2), ValueError, "d_out"),
        (lambda: BE.deconv2d_dk(np.zeros((1, 3, 3, 2)), np.zeros((2, 3, 3, 1)), kernel_size=2), ValueError, "batch"),
        (
            lambda: BE.deconv2d(np.zeros((1, 1, 1, 1)), np.zeros((3, 3, 1, 1)), padding=((-3, 0), (0, 0))),
            ValueError,
            "empty output",
        ),
        (
            lambda: BE.stdp_update(
                np.zeros((2, 2, 1, 1)),
                np.zeros((1, 2, 2, 1)),
                np.zeros((1, 2, 2, 1)),
                np.zeros((1, 2, 2, 1)),
                np.zeros((1, 2, 2, 1)),
                A_plus="a",
                A_minus=1.0,
            ),
            TypeError,
            "A_plus",
        ),
    ],
    ids=["rank", "channels", "padding", "stride", "complex", "d_out-size", "batch", "empty", "scalar"],
)
def test_shared_validation_errors(call, exc, words):
    with pytest.raises(exc, match=words):
        call()


def test_registered_and_described():
    assert "numba" in convstdp.backends.registered_backends() and convstdp.get_backend("numba") is BE
    assert BE.version.startswith("numba ") and BE.devices()[0].startswith("cpu")


def test_missing_numba_is_reported_as_unavailable(monkeypatch):
    import sys

    from convstdp.fast import numba as numba_backend

    monkeypatch.setitem(sys.modules, "numba", None)  # import numba now raises ImportError
    with pytest.raises(convstdp.BackendUnavailable, match="numba is not installed"):
        numba_backend.create_backend()
