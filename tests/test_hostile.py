"""Hostile but realistic input (SPEC §4-§6): no silently wrong answer, no hang, no abort.

Every bad argument is a ``ValueError``/``TypeError`` naming it, every unusual but valid one gets
the reference's answer, on every backend and whatever was called before (the validation memo
must never answer for different arguments). The oracle is the reference on a fresh memo, as a
new process would run it, evaluated on clean float64 copies (``hostile_census``).
"""

from __future__ import annotations

import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
from hostile_census import (
    KERNEL_SIZES,
    OP_ARRAYS,
    PADDINGS,
    SCALAR_VALUES,
    STDP,
    STRIDES,
    _array_variants,
    call,
    catalogue,
    fresh_memo,
    judge,
    names_an_argument,
    oracle,
    within,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import convstdp
from convstdp import backends, geometry
from convstdp import reference as ref

BACKENDS = ("reference", "numba", "jax")


def _backend(name: str) -> convstdp.Backend:
    try:
        return convstdp.get_backend(name)
    except convstdp.BackendUnavailable as err:
        pytest.skip(str(err))


@pytest.fixture(params=BACKENDS)
def be(request):
    return _backend(request.param)


def _np(out):
    return tuple(np.asarray(o) for o in out) if isinstance(out, tuple) else np.asarray(out)


def _fresh(op, arrays, params):
    """The reference's answer in a "new process" (empty memo), on float64 copies."""
    with fresh_memo():
        clean = {k: np.array(v, np.float64) for k, v in arrays.items()}
        return _np(call(convstdp.get_backend("reference"), op, clean, params))


def _close(got, want, rtol=2e-4):
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    for g, w in zip(got, want, strict=True):
        scale = max(1.0, float(np.max(np.abs(w), initial=0.0)))
        np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=rtol, atol=rtol * scale)


def _raises_naming(exc, *names):
    """``pytest.raises`` for ``exc`` whose message names every one of ``names`` (as words)."""
    import re

    return pytest.raises(exc, match="".join(rf"(?=[\s\S]*(?<![A-Za-z_]){re.escape(n)}(?![A-Za-z_]))" for n in names))


RNG = np.random.default_rng(7)
X = RNG.uniform(-2, 2, (2, 4, 4, 1)).astype(np.float32)
K = RNG.uniform(-1, 1, (3, 3, 1, 2)).astype(np.float32)


# ----------------------------------------------------------------------------- the memo


def test_array_padding_is_keyed_by_value_not_shape(be):
    """Two ndarray paddings of the same shape and dtype are different paddings."""
    pads = [np.array([[2, 0], [0, 2]]), np.array([[0, 2], [2, 0]])]
    d = RNG.uniform(-1, 1, (2, 7, 7, 2)).astype(np.float32)
    spike = (X > 0).astype(np.float32)
    post = (d > 0).astype(np.float32)
    for p in pads:
        tp = tuple(map(tuple, p.tolist()))
        _close(
            _np(be.deconv2d(X, K, stride=2, padding=p)),
            _fresh("deconv2d", dict(x=X, kernel=K), dict(stride=2, padding=tp)),
        )
        _close(
            _np(be.deconv2d_dk(X, d, kernel_size=3, stride=2, padding=p)),
            _fresh("deconv2d_dk", dict(x=X, d_out=d), dict(kernel_size=3, stride=2, padding=tp)),
        )
        _close(
            _np(be.deconv2d_dx(K, d, stride=2, padding=p)),
            _fresh("deconv2d_dx", dict(kernel=K, d_out=d), dict(stride=2, padding=tp)),
        )
        arrays = dict(kernel=K, pre_spike=spike, pre_trace=np.abs(X), post_spike=post, post_trace=np.abs(d))
        _close(
            _np(be.stdp_update(*arrays.values(), stride=2, padding=p, **STDP)),
            _fresh("stdp_update", arrays, dict(stride=2, padding=tp, **STDP)),
        )


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("stride", True),
        ("stride", 2.0),
        ("stride", np.float64(2.0)),
        ("stride", (2.0, 2)),
        ("stride", np.array([2.0, 2.0])),
        ("padding", ((1.0, 1), (1, 1))),
        ("padding", ((True, 1), (1, 1))),
        ("padding", np.array([[1.0, 1.0], [1.0, 1.0]])),
        ("kernel_size", 3.0),
        ("kernel_size", True),
        ("kernel_size", (3, 3.0)),
    ],
)
def test_a_valid_call_never_vouches_for_a_type_it_rejects(be, param, value):
    """``1 == True == 1.0`` as dict keys: after a valid call, the same call with a bool or float
    parameter must still be rejected, as in a fresh process."""
    good = {"stride": 1 if value is True else 2, "padding": ((1, 1), (1, 1)), "kernel_size": 3}
    with fresh_memo():
        y_shape = geometry.check_deconv2d(X, K, good["stride"], good["padding"]).y_shape
    d = np.zeros(y_shape, np.float32)
    be.deconv2d_dk(X, d, **good)
    with fresh_memo(), pytest.raises((TypeError, ValueError)) as fresh:
        be.deconv2d_dk(X, d, **{**good, param: value})
    with pytest.raises(type(fresh.value)) as warm:
        be.deconv2d_dk(X, d, **{**good, param: value})
    assert str(warm.value) == str(fresh.value)
    assert param in str(warm.value)


@pytest.mark.parametrize(
    ("value", "exc"),
    [
        ("54", TypeError),
        ((1, 5.9, 4.2, 1), TypeError),
        (5, TypeError),
        ("abcd", TypeError),
        ((1, None, 4, 1), TypeError),
        (np.array([2.0, 4.0, 4.0, 1.0]), TypeError),
        ((True, 4, 4, 1), TypeError),
        ((2, 4, 4), ValueError),
        (np.array([2, 5, 4, 1]), ValueError),  # same shape and dtype as the valid one below
    ],
)
def test_input_shape_is_exact_ints_and_checked_every_time(be, value, exc):
    d = np.zeros((2, 8, 8, 2), np.float32)
    good = np.array([2, 4, 4, 1])
    assert np.asarray(be.deconv2d_dx(K, d, stride=2, input_shape=good)).shape == (2, 4, 4, 1)
    with _raises_naming(exc, "input_shape"):
        be.deconv2d_dx(K, d, stride=2, input_shape=value)


def test_one_memo_keyed_on_normalised_values():
    """One cache in geometry, keyed on exactly what the checks read."""
    assert not any(hasattr(geometry, n) for n in ("_geometry_cached", "_memoized", "_signature"))
    with fresh_memo():
        geometry.check_deconv2d(X, K, np.int64(2), np.array([[1, 1], [1, 1]]))
        geometry.check_deconv2d(X, K, (2, 2), ((1, 1), (1, 1)))
        assert len(geometry._MEMO) == 1  # the same normalised call
        ((key, g),) = geometry._MEMO.items()
        assert g.stride == (2, 2) and g.pads == ((1, 1), (1, 1))
        flat = repr(key)
        assert "array" not in flat and "int64" not in flat


# ----------------------------------------------------------------------------- sizes: the up-front guard

HUGE = [
    ("deconv2d", dict(stride=10**6), "stride"),
    ("deconv2d", dict(stride=(1, 10**12)), "stride"),
    ("deconv2d", dict(stride=2**62), "stride"),
    ("deconv2d", dict(padding=((2**40, 2**40), (0, 0))), "padding"),
    ("deconv2d", dict(padding=((2**62, 0), (0, 0))), "padding"),
    ("deconv2d", dict(padding=((2**40, -(2**40)), (0, 0))), "padding"),
    ("deconv2d", dict(padding=((-(2**40), 2**40), (0, 0))), "padding"),
    ("deconv2d", dict(stride=10**400), "stride"),
    ("deconv2d_dk", dict(kernel_size=2**40), "kernel_size"),
    ("deconv2d_dk", dict(kernel_size=(2**30, 2**30)), "kernel_size"),
    ("deconv2d_dx", dict(padding=((-(2**40), 0), (0, 0))), "padding"),
    ("stdp_update", dict(padding=((2**40, -(2**40)), (0, 0))), "padding"),
]


@pytest.mark.parametrize(("op", "params", "culprit"), HUGE)
def test_absurd_sizes_are_rejected_at_once(be, op, params, culprit):
    """Outputs or padded extents that cannot fit in memory: a ValueError naming the parameter,
    in well under a second, before any backend allocates or traces."""
    x = np.zeros((1, 100, 100, 1), np.float32)
    k = np.zeros((3, 3, 1, 1), np.float32)
    d = np.zeros((1, 100, 100, 1), np.float32)
    arrays = {
        "deconv2d": dict(x=x, kernel=k),
        "deconv2d_dk": dict(x=x, d_out=d),
        "deconv2d_dx": dict(kernel=k, d_out=d),
        "stdp_update": dict(kernel=k, pre_spike=x, pre_trace=x, post_spike=d, post_trace=d),
    }[op]
    if op == "deconv2d_dk":
        params = {"kernel_size": 3, **params}
    if op == "stdp_update":
        params = {**params, **STDP}
    t0 = time.perf_counter()
    with within(1.0), _raises_naming(ValueError, culprit) as info:
        call(be, op, arrays, params)
    assert time.perf_counter() - t0 < 1.0
    assert "too large" in str(info.value) or "empty output" in str(info.value)


@pytest.mark.parametrize("stride", [2**62, 10**400, (1, 2**50)])
def test_a_huge_stride_on_a_one_pixel_map_is_rejected(be, stride):
    """With one input pixel the stride never moves anything, yet backends index by stride phase
    (and compute h*s in int64): the bound counts one stride period, so this is refused by name."""
    one = np.ones((1, 1, 1, 1), np.float32)
    with within(1.0), _raises_naming(ValueError, "stride"):
        be.deconv2d(one, one, stride=stride, padding=((0, 0), (0, 0)))
    k3 = np.ones((3, 3, 1, 1), np.float32)  # pads (0, 2) with k = 3: a one-pixel d_out from a one-pixel x
    with within(1.0), _raises_naming(ValueError, "stride"):
        be.deconv2d_dx(k3, one, stride=stride, padding=((0, 2), (0, 2)))
    with within(1.0), _raises_naming(ValueError, "stride"):
        be.deconv2d_dk(one, one, kernel_size=3, stride=stride, padding=((0, 2), (0, 2)))


def test_size_limit_is_documented_and_sane():
    assert 2**20 < geometry.MAX_BYTES <= 2**48
    g = geometry.check_deconv2d(np.zeros((0, 4, 4, 1)), np.zeros((3, 3, 1, 1)), 2, "SAME")
    assert g.y_shape == (0, 8, 8, 1)  # N = 0 is fine
    with pytest.raises(ValueError, match="stride"):  # ... but not as a way round the bound
        geometry.check_deconv2d(np.zeros((0, 4, 4, 1)), np.zeros((3, 3, 1, 1)), 10**9, "SAME")


@pytest.mark.parametrize("pads", [((0, 0), (3, -2)), ((-3, 4), (1, 0)), ((3, -3), (-2, 3))])
def test_crops_reaching_past_the_input_into_the_other_pad(be, pads):
    """A crop longer than the map eats into the other side's pad: valid, and all zeros or not,
    the reference's answer (JAX once cropped first and failed on a negative size)."""
    x = RNG.uniform(-1, 1, (2, 1, 1, 1)).astype(np.float32)
    k = RNG.uniform(-1, 1, (1, 2, 1, 1)).astype(np.float32)
    with fresh_memo():
        y_shape = geometry.check_deconv2d(x, k, 1, pads).y_shape
    d = RNG.uniform(-1, 1, y_shape).astype(np.float32)
    _close(_np(be.deconv2d(x, k, padding=pads)), _fresh("deconv2d", dict(x=x, kernel=k), dict(padding=pads)))
    want = _fresh("deconv2d_dk", dict(x=x, d_out=d), dict(kernel_size=(1, 2), padding=pads))
    _close(_np(be.deconv2d_dk(x, d, kernel_size=(1, 2), padding=pads)), want)
    _close(_np(be.deconv2d_dx(k, d, padding=pads)), _fresh("deconv2d_dx", dict(kernel=k, d_out=d), dict(padding=pads)))


def test_huge_but_reasonable_stride_is_computed(be):
    """A stride far above the kernel with an output that fits: the reference's answer, quickly
    (JAX once traced one program per stride phase here: a hang)."""
    x = RNG.uniform(-1, 1, (1, 5, 4, 1)).astype(np.float32)
    k = RNG.uniform(-1, 1, (2, 3, 1, 1)).astype(np.float32)
    with within(60):
        y = be.deconv2d(x, k, stride=(400, 300))
    _close(_np(y), _fresh("deconv2d", dict(x=x, kernel=k), dict(stride=(400, 300))))


def test_jax_phase_formulation_falls_back_where_it_cannot_trace():
    pytest.importorskip("jax")
    from convstdp.fast import _jax_formulations as F
    from convstdp.fast.jax import JaxBackend

    assert F.phase_feasible((5, 5), (2, 2)) and F.phase_feasible((40, 40), (1, 1))
    assert not F.phase_feasible((3, 3), (1000, 1000)) and not F.phase_feasible((32, 32), (2, 2))
    be = backends.Backend("jax-phase", JaxBackend(formulation="phase"))
    x = RNG.uniform(-1, 1, (1, 4, 4, 1)).astype(np.float32)
    k = RNG.uniform(-1, 1, (3, 3, 1, 1)).astype(np.float32)
    with within(60):
        y = be.deconv2d(x, k, stride=500)
        d = be.deconv2d_dk(x, np.asarray(y), kernel_size=3, stride=500)
    _close(_np(y), _fresh("deconv2d", dict(x=x, kernel=k), dict(stride=500)))
    _close(_np(d), _fresh("deconv2d_dk", dict(x=x, d_out=np.asarray(y)), dict(kernel_size=3, stride=500)))


# ----------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", [np.int64, np.uint64, ">i8"])
def test_64_bit_int_spikes_are_not_wrapped(be, dtype):
    """A spike value of 2**40 gives the reference's answer (JAX with x64 off once wrapped it to 0)."""
    x = np.zeros((1, 3, 3, 1), dtype)
    x[0, 1, 1, 0] = 2**40
    y = _np(be.deconv2d(x, K))
    assert y.dtype == np.float32
    _close(y, _fresh("deconv2d", dict(x=x, kernel=K), {}))
    assert float(np.max(np.abs(y))) > 2**30  # not wrapped to 0


def test_tiny_w_bound_still_clips(be):
    """``w_bound > 0`` is decided on the exact value: 1e-50 is positive (float32 reads it as 0)."""
    s = (X > 0).astype(np.float32)
    post = np.ones((2, 4, 4, 2), np.float32)
    arrays = dict(kernel=K, pre_spike=s, pre_trace=np.abs(X), post_spike=post, post_trace=post)
    for bound, decay in ((1e-50, 0.0), (0.0, 1e-50), (1e-50, 1e-50)):
        params = dict(A_plus=1.0, A_minus=0.5, eta=0.5, w_bound=bound, w_decay=decay)
        w, dw = _np(be.stdp_update(*arrays.values(), **params))
        _close((w, dw), _fresh("stdp_update", arrays, params))
    assert np.all(w == np.float32(-0.01))  # clip(W', 0.01, 1e-50 - 0.01): the upper bound wins


@pytest.mark.parametrize("dtype", [">f4", "<f4", ">f8", np.float16, ">i4", ">u2", "?"])
def test_any_byte_order_and_float16_are_accepted(be, dtype):
    """SPEC §4: any byte order of float32/float64/int/bool is accepted; float16 widens to float32."""
    x = RNG.uniform(-2, 2, (2, 4, 4, 1)).astype(dtype)
    k = K.astype(">f4")
    want = geometry.result_dtype(np.dtype(dtype), k.dtype)
    assert want.isnative and want == (
        np.float64 if np.dtype(dtype).kind == "f" and np.dtype(dtype).itemsize == 8 else np.float32
    )
    if be.name == "jax" and want == np.float64:
        import jax

        if not jax.config.jax_enable_x64:
            with _raises_naming(TypeError, "x"):
                be.deconv2d(x, k)
            return
    y = _np(be.deconv2d(x, k, stride=2))
    assert y.dtype == want
    _close(y, _fresh("deconv2d", dict(x=x, kernel=k), dict(stride=2)))


def test_float16_gives_float32_everywhere(be):
    x = X.astype(np.float16)
    assert _np(be.deconv2d(x, K.astype(np.float16))).dtype == np.float32
    assert geometry.result_dtype(np.dtype(np.float16)) == np.float32


def test_jax_all_int_inputs_name_the_arguments():
    pytest.importorskip("jax")
    import jax

    be = _backend("jax")
    if jax.config.jax_enable_x64:
        pytest.skip("x64 is on: float64 is computed")
    with pytest.raises(TypeError) as info:
        be.deconv2d(np.ones((1, 2, 2, 1), np.int64), np.ones((1, 1, 1, 1), bool))
    msg = str(info.value)
    assert "x is int64" in msg and "kernel is bool" in msg and "no input is floating point" in msg
    assert not msg.startswith(" are")


def test_jax_functional_api_converts_on_the_host_and_names_bad_dtypes():
    """``deconv2d_fn`` & co. take NumPy input too: 64-bit ints and other byte orders are converted
    by NumPy (never wrapped), and a dtype SPEC rejects is named like everywhere else."""
    pytest.importorskip("jax")
    from convstdp.fast import jax as cjax

    x = np.zeros((1, 3, 3, 1), np.int64)
    x[0, 1, 1, 0] = 2**40
    for xx in (x, x.astype(">i8"), x.astype(np.uint64)):
        y = np.asarray(cjax.deconv2d_fn(xx, K.astype(">f4")))
        assert y.dtype == np.float32
        _close(y, _fresh("deconv2d", dict(x=x, kernel=K), {}))
    assert np.asarray(cjax.deconv2d_fn(X.astype(np.float16), K.astype(np.float16))).dtype == np.float32
    with _raises_naming(TypeError, "kernel"):
        cjax.deconv2d_fn(X, K.astype(complex))
    with _raises_naming(TypeError, "d_out"):
        cjax.deconv2d_dk_fn(X, np.zeros((2, 4, 4, 2), str), 3)


def test_jax_fused_step_keeps_each_operators_dtype():
    """y follows (x, kernel), W'/dW the five STDP arrays: an int kernel with float32 traces gives a
    float64 y under SPEC §4, which JAX without x64 refuses by name instead of narrowing."""
    pytest.importorskip("jax")
    import jax

    be = _backend("jax")
    k = np.ones((3, 3, 1, 2), np.int8)
    s = X > 0
    post = np.ones((2, 4, 4, 2), np.float32)
    args = (k, s, s, np.abs(X), post > 0, post)
    if jax.config.jax_enable_x64:
        y = be.stdp_step(*args, **STDP)[0]
        assert np.asarray(y).dtype == np.float64
    else:
        with _raises_naming(TypeError, "x", "kernel"):
            be.stdp_step(*args, **STDP)


# ----------------------------------------------------------------------------- unclear errors


@pytest.mark.parametrize(
    "bad",
    [[[[[1.0]], [[1.0, 2.0]]]], [[[[1.0, "a"]]]], [[[[None]]]]],
    ids=["ragged", "mixed", "None"],
)
def test_unconvertible_lists_name_the_argument(be, bad):
    with pytest.raises((ValueError, TypeError)) as info:
        be.deconv2d(bad, K)
    assert names_an_argument(str(info.value)) and "x" in str(info.value).split()[0]


@pytest.mark.parametrize("name", [123, ["numba"], b"numba", 1.5])
def test_get_backend_name_must_be_a_string(name):
    with _raises_naming(TypeError, "name"):
        convstdp.get_backend(name)


def test_env_var_is_named_as_the_source(monkeypatch):
    monkeypatch.setenv(backends.ENV_VAR, "nonsense")
    with pytest.raises(
        ValueError, match=r"unknown backend 'nonsense' \(from the environment variable CONVSTDP_BACKEND\)"
    ):
        convstdp.get_backend()


# ----------------------------------------------------------------------------- ImportError: bug or missing


@pytest.fixture
def fake_modules(tmp_path, monkeypatch):
    """Modules on sys.path: one importing a convstdp module that does not exist, one a missing
    third-party library, one a third-party library raising a nameless ImportError."""
    (tmp_path / "hostile_broken_backend.py").write_text(
        textwrap.dedent(
            """
            import convstdp.fast._does_not_exist  # noqa: F401

            def create_backend():
                raise AssertionError("never reached")
            """
        )
    )
    (tmp_path / "hostile_missing_lib_backend.py").write_text(
        "import surely_not_installed_lib_xyz  # noqa: F401\n\ndef create_backend():\n    pass\n"
    )
    (tmp_path / "hostile_thirdparty_lib.py").write_text(
        "def check():\n    raise ImportError('hostile_thirdparty_lib needs a newer numpy')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    names = []

    def register(name, factory):
        names.append(name)
        backends.register_backend(name, factory)

    yield register
    for name in names:
        backends._registry.pop(name, None)
        backends._instances.pop(name, None)
        backends._failures.pop(name, None)
        backends._errors.pop(name, None)
    for mod in ("hostile_broken_backend", "hostile_missing_lib_backend", "hostile_thirdparty_lib"):
        sys.modules.pop(mod, None)


def test_import_error_from_convstdp_itself_is_a_bug(fake_modules):
    fake_modules("broken-import", "hostile_broken_backend:create_backend")
    with pytest.raises(backends.BackendError) as info:
        convstdp.get_backend("broken-import")
    msg = str(info.value)
    assert "'broken-import'" in msg and "convstdp.fast._does_not_exist" in msg and "a bug in convstdp" in msg
    assert not isinstance(info.value, backends.BackendUnavailable)
    status = convstdp.available_backends()["broken-import"]
    assert status.startswith("error: ImportError: No module named 'convstdp.fast._does_not_exist'"), status
    assert "(a bug in convstdp, not a missing library" in status
    assert "broken-import" not in backends.default_backends()
    with pytest.raises(backends.BackendError):  # remembered, and raised again
        convstdp.get_backend("broken-import")


def test_missing_third_party_library_is_unavailable(fake_modules):
    fake_modules("missing-lib", "hostile_missing_lib_backend:create_backend")

    def thirdparty():
        import hostile_thirdparty_lib

        hostile_thirdparty_lib.check()

    fake_modules("old-lib", thirdparty)
    status = convstdp.available_backends()
    assert status["missing-lib"].startswith("surely_not_installed_lib_xyz is not installed")
    assert status["old-lib"].startswith("a required library is not installed (hostile_thirdparty_lib needs")
    with pytest.raises(convstdp.BackendUnavailable):
        convstdp.get_backend("missing-lib")


def test_nameless_import_error_raised_in_convstdp_is_a_bug(fake_modules):
    code = "def create():\n    raise ImportError('a nameless one')\n"
    namespace = {"__name__": "convstdp.fast._fake_factory"}
    exec(compile(code, "<convstdp.fast._fake_factory>", "exec"), namespace)
    fake_modules("nameless", namespace["create"])
    with pytest.raises(backends.BackendError, match="a nameless one"):
        convstdp.get_backend("nameless")


# ----------------------------------------------------------------------------- the catalogue


def test_census_catalogue_has_no_unclear_wrong_or_crash_on_the_reference():
    """The census catalogue (tests/hostile_census.py) through the reference, in-process."""
    be = convstdp.get_backend("reference")
    cases = catalogue()
    assert len(cases) > 700
    problems = []
    for case in cases:
        want = oracle(case.op, case.arrays, case.params)
        try:
            with within(5):
                outcome = call(be, case.op, case.arrays, case.params)
        except Exception as err:
            outcome = err
        category, detail = judge("reference", outcome, want)
        if category not in ("correct", "clear error"):
            problems.append(f"{case.op} {case.label}: {category}: {detail}")
    assert not problems, "\n".join(problems[:20])


# ----------------------------------------------------------------------------- the property

_STRIDE_VALUES = [v for v, _ in STRIDES]
_PADDING_VALUES = [v for v, _ in PADDINGS]
_KERNEL_SIZE_VALUES = [v for v, _ in KERNEL_SIZES]
_SCALAR_VALUES = [v for v, _ in SCALAR_VALUES]


@st.composite
def _pads(draw):
    vals = [draw(st.integers(-3, 4)) for _ in range(4)]
    form = draw(st.sampled_from(["tuple", "list", "array", "array32"]))
    pairs = [vals[:2], vals[2:]]
    if form == "tuple":
        return tuple(map(tuple, pairs))
    if form == "list":
        return pairs
    return np.array(pairs, dtype=np.int64 if form == "array" else np.int32)


@st.composite
def _scenario(draw):
    """A valid call and a few hostile variations of it (parameters and arrays)."""
    op = draw(st.sampled_from(tuple(OP_ARRAYS)))
    n, h, w = draw(st.integers(0, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ci, co = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = draw(st.sampled_from([1, 2, 3, (1, 2), (2, 1), (3, 1)]))
    st_pair = geometry.normalize_stride(stride)
    same = geometry.resolve_pads((kh, kw), st_pair, "SAME")
    padding = draw(st.sampled_from(["SAME", "VALID", "same", same, np.array(same), [list(p) for p in same]]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    with fresh_memo():
        g = geometry.check_deconv2d(np.zeros((n, h, w, ci)), np.zeros((kh, kw, ci, co)), stride, padding)
    x = rng.uniform(-2, 2, g.x_shape).astype(np.float32)
    k = rng.uniform(-1, 1, g.kernel_shape).astype(np.float32)
    y = rng.uniform(-2, 2, g.y_shape).astype(np.float32)
    pool = dict(x=x, kernel=k, d_out=y, pre_spike=x > 0, pre_trace=np.abs(x), post_spike=y > 0.5, post_trace=np.abs(y))
    arrays = {name: pool[name] for name in OP_ARRAYS[op]}
    params = dict(stride=stride, padding=padding)
    if op == "deconv2d_dk":
        params["kernel_size"] = (kh, kw)
    if op.startswith("stdp"):
        params.update(STDP, w_bound=draw(st.sampled_from([0.0, 1e-50, 0.5, 2.0])))
    calls = [(arrays, params)]
    for _ in range(draw(st.integers(1, 3))):
        a, p = dict(arrays), dict(params)
        for _ in range(draw(st.integers(1, 2))):
            what = draw(st.sampled_from(["stride", "padding", "pads", "array", "extra", "twin", "twin", "twin"]))
            if what == "twin":  # equal under == but of another type (1 == True == 1.0): a memo trap
                name, value = draw(st.sampled_from(_twins(op, params, g)))
                p[name] = value
            elif what == "stride":
                p["stride"] = draw(st.sampled_from(_STRIDE_VALUES))
            elif what == "padding":
                p["padding"] = draw(st.sampled_from(_PADDING_VALUES))
            elif what == "pads":
                p["padding"] = draw(_pads())
            elif what == "array":
                role = draw(st.sampled_from(OP_ARRAYS[op]))
                variants = _array_variants(np.asarray(arrays[role], np.float32), role)
                a[role] = draw(st.sampled_from([v for v, _ in variants]))
            elif op == "deconv2d_dk":
                p["kernel_size"] = draw(st.sampled_from([*_KERNEL_SIZE_VALUES, (kh, kw), [kh, kw], np.array([kh, kw])]))
            elif op == "deconv2d_dx":
                good = g.x_shape
                p["input_shape"] = draw(
                    st.sampled_from(
                        [None, good, good[1:3], np.array(good), list(good), (n, h + 1, w, ci), np.array(good, float)]
                        + ["54", 5, (1, None, 4, 1), (1, 5.9, 4.2, 1), (True, h, w, ci)]
                    )
                )
            elif op.startswith("stdp"):
                p[draw(st.sampled_from(list(STDP)))] = draw(st.sampled_from(_SCALAR_VALUES))
        calls.append((a, p))
    calls.append((arrays, params))  # the valid call again: nothing before may have changed it
    order = draw(st.permutations(range(len(calls) - 1)))  # the valid call is not always first
    return op, [calls[i] for i in order] + [calls[-1]]


def _twins(op: str, params: dict, g: geometry.Geometry) -> list[tuple[str, object]]:
    """Values equal (``==``, same hash) to the valid call's parameters but of other types, or
    arrays of the same shape and dtype as them with other values."""
    (sh, sw), ((a, b), (c, d)) = g.stride, g.pads
    twins: list[tuple[str, object]] = [
        ("stride", (float(sh), sw)),
        ("stride", np.float64(sh) if sh == sw else (sh, np.float32(sw))),
        ("stride", (sh == 1, sw) if sh == 1 else (sh, float(sw))),
        ("padding", ((float(a), b), (c, d))),
        ("padding", np.array([[a, b], [c, d]], float)),
        ("padding", np.array([[b, a], [d, c]])),  # same shape and dtype, other values
        ("padding", np.array([[a + 1, b], [c, d]])),
        ("padding", ((bool(a) if a in (0, 1) else a, b), (c, float(d)))),
    ]
    if "kernel_size" in params:
        kh, kw = g.kernel_size
        twins += [("kernel_size", (float(kh), kw)), ("kernel_size", np.array([kw, kh])), ("kernel_size", kh == 1)]
    if op == "deconv2d_dx":
        wrong_h = (g.batch, g.in_size[0] + 1, *g.x_shape[2:])
        twins += [("input_shape", np.array(g.x_shape)), ("input_shape", np.array(wrong_h))]
        twins += [("input_shape", tuple(float(v) for v in g.x_shape))]
    return twins


def _safe(params: dict) -> str:
    """``params`` for a message (``repr`` of a 5000-digit int raises)."""
    return "{" + ", ".join(f"{k}: {geometry._show(v)}" for k, v in params.items()) + "}"


def _property(backend: str, data) -> None:
    be = _backend(backend)
    op, calls = data.draw(_scenario())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for arrays, params in calls:
            want = oracle(op, arrays, params)
            t0 = time.perf_counter()
            try:
                with within(120):
                    outcome = call(be, op, arrays, params)
            except Exception as err:
                outcome = err
            elapsed = time.perf_counter() - t0
            category, detail = judge(backend, outcome, want)
            event(category)  # pytest --hypothesis-show-statistics: how many calls were valid
            shown = {
                k: (type(v).__name__, getattr(v, "dtype", None), getattr(v, "shape", None)) for k, v in arrays.items()
            }
            assert category in ("correct", "clear error"), f"{op}({shown}, {_safe(params)}): {category}: {detail}"
            if isinstance(outcome, BaseException):
                assert elapsed < 1.0, f"an error took {elapsed:.2f} s: {outcome}"


_SETTINGS = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@settings(max_examples=200, **_SETTINGS)
@given(data=st.data())
def test_property_reference(data):
    _property("reference", data)


@settings(max_examples=150, **_SETTINGS)
@given(data=st.data())
def test_property_numba(data):
    _property("numba", data)


@settings(max_examples=100, **_SETTINGS)
@given(data=st.data())
def test_property_jax(data):
    pytest.importorskip("jax")
    _property("jax", data)


def test_reference_module_functions_share_the_checks():
    """The reference's own functions (not only the Backend wrapper) reject the same arguments."""
    with _raises_naming(TypeError, "stride"):
        ref.deconv2d(X, K, stride=2.0)
    with _raises_naming(TypeError, "input_shape"):
        ref.deconv2d_dx(K, np.zeros((2, 4, 4, 2)), input_shape="54")
    with _raises_naming(ValueError, "padding"):
        ref.deconv2d_dk(X, np.zeros((2, 4, 4, 2)), kernel_size=3, padding=((2**40, -(2**40)), (0, 0)))
