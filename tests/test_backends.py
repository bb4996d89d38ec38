"""Registry, selection and the validation layer every backend sits behind (SPEC §5-6)."""

from __future__ import annotations

import numpy as np
import pytest

import convstdp
from convstdp import backends, geometry
from convstdp import reference as ref


class Recorder:
    """A backend implementation that records what the wrapper hands it and answers with the reference."""

    version = "rec 1.0"

    def __init__(self):
        self.calls = []

    def devices(self):
        return ["cpu", "imaginary:0"]

    def __getattr__(self, op):
        if op not in ("deconv2d", "deconv2d_dk", "deconv2d_dx", "stdp_update"):
            raise AttributeError(op)

        def call(*args, **kwargs):
            self.calls.append((op, dict(kwargs)))
            params = kwargs.pop("params", None)
            return getattr(ref, op)(*args, **kwargs, **(params._asdict() if params else {}))

        return call


@pytest.fixture
def recorder():
    rec = Recorder()
    backends.register_backend("recorder", lambda: rec)
    yield rec
    backends._registry.pop("recorder", None)
    backends._instances.pop("recorder", None)


def test_reference_is_default_and_listed(monkeypatch):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    assert convstdp.get_backend().name == "reference"
    status = convstdp.available_backends()
    assert status["reference"] == "ok"
    assert {"reference", "numba", "jax", "ngclearn"} <= set(status)
    assert all(v == "ok" or len(v) > 10 for v in status.values())  # a reason, not a bare flag


def test_env_var_selects(monkeypatch, recorder):
    monkeypatch.setenv(backends.ENV_VAR, "recorder")
    assert convstdp.get_backend().impl is recorder


def test_wrapper_normalises_arguments(recorder):
    be = convstdp.get_backend("recorder")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 2))
    k = rng.standard_normal((3, 2, 2, 5))
    y = be.deconv2d(x, k, stride=[2, 1], padding="same")
    np.testing.assert_array_equal(y, ref.deconv2d(x, k, stride=(2, 1), padding="SAME"))
    op, kwargs = recorder.calls[-1]
    assert op == "deconv2d" and kwargs == {
        "stride": (2, 1),
        "padding": ((2, 1), (1, 0)),
    }  # k=3, s=2: ceil(3/2); k=2, s=1: ceil(1/2)

    be.deconv2d_dk(x, y, kernel_size=[3, 2], stride=[2, 1], padding="SAME")
    assert recorder.calls[-1][1]["kernel_size"] == (3, 2)
    be.deconv2d_dx(k, y, stride=(2, 1), padding="SAME")
    assert recorder.calls[-1][1]["input_shape"] == (2, 3, 4, 2)

    be.stdp_update(k, x > 0, np.abs(x), y > 0, np.abs(y), stride=(2, 1), A_plus=1, A_minus=np.float32(0.5), eta=0)
    op, kwargs = recorder.calls[-1]
    assert op == "stdp_update"
    assert isinstance(kwargs["params"], geometry.StdpParams)
    assert all(type(v) is float for v in kwargs["params"])
    assert kwargs["params"].A_minus == 0.5 and kwargs["params"].w_bound == 0.0


def test_validation_runs_before_the_backend(recorder):
    be = convstdp.get_backend("recorder")
    with pytest.raises(ValueError, match="kernel has 3 input channels"):
        be.deconv2d(np.zeros((1, 4, 4, 2)), np.zeros((3, 3, 3, 1)))
    with pytest.raises(ValueError, match="d_out has spatial size"):
        be.deconv2d_dk(np.zeros((1, 4, 4, 2)), np.zeros((1, 5, 5, 1)), kernel_size=3)
    with pytest.raises(TypeError, match="A_plus must be a real scalar"):
        be.stdp_update(
            np.zeros((3, 3, 2, 1)),
            *[np.zeros((1, 4, 4, 2))] * 2,
            *[np.zeros((1, 4, 4, 1))] * 2,
            A_plus="1",
            A_minus=1.0,
        )
    assert recorder.calls == []


def test_lists_are_accepted(recorder):
    y = convstdp.get_backend("recorder").deconv2d([[[[1.0]]]], [[[[2.0]]]])
    np.testing.assert_array_equal(y, [[[[2.0]]]])


def test_stdp_step_composes_operators(recorder):
    be = convstdp.get_backend("recorder")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 3, 2))
    k = rng.uniform(0, 1, (3, 3, 2, 3))
    s_pre, z_pre = x > 0.5, np.abs(x)
    y_shape = (2, 8, 6, 3)
    s_post, z_post = rng.random(y_shape) < 0.2, rng.random(y_shape)
    p = dict(stride=2, A_plus=0.9, A_minus=0.3, eta=0.5, w_bound=1.0)
    y, w, dw, dx = be.stdp_step(k, x, s_pre, z_pre, s_post, z_post, **p)
    np.testing.assert_array_equal(y, ref.deconv2d(x, k, stride=2))
    w_ref, dw_ref = ref.stdp_update(k, s_pre, z_pre, s_post, z_post, **p)
    np.testing.assert_array_equal(w, w_ref)
    np.testing.assert_array_equal(dw, dw_ref)
    np.testing.assert_array_equal(dx, ref.deconv2d_dx(w_ref, s_post, stride=2))
    with pytest.raises(ValueError, match="x has shape"):
        be.stdp_step(k, x[:1], s_pre, z_pre, s_post, z_post, **p)


def test_fused_step_is_preferred():
    class Fused(Recorder):
        def stdp_step(self, *args, **kwargs):
            return "fused", kwargs

    backends.register_backend("fused", Fused)
    try:
        be = convstdp.get_backend("fused")
        out = be.stdp_step(
            np.ones((2, 2, 1, 1)), *[np.ones((1, 2, 2, 1))] * 3, *[np.ones((1, 2, 2, 1))] * 2, A_plus=1, A_minus=1
        )
        assert out[0] == "fused" and out[1]["padding"] == ((1, 0), (1, 0))
    finally:
        backends._registry.pop("fused")
        backends._instances.pop("fused")


def test_module_factory_spec():
    be = convstdp.get_backend("convstdp.reference:create_backend")
    assert be.version.startswith("numpy")
    with pytest.raises(ValueError, match="has no attribute 'nope'"):
        convstdp.get_backend("convstdp.reference:nope")
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        convstdp.get_backend("nope")


def test_unavailable_backend_reports_reason():
    def missing():
        raise ImportError("No module named 'fancylib'", name="fancylib")

    def no_gpu():
        raise backends.BackendUnavailable("no CUDA device")

    def broken():
        raise RuntimeError("boom")

    backends.register_backend("missing", missing)
    backends.register_backend("nogpu", no_gpu, default=False)
    backends.register_backend("broken", broken)
    try:
        status = convstdp.available_backends()
        assert status["missing"].startswith("fancylib is not installed")
        assert status["nogpu"] == "no CUDA device"
        assert status["broken"] == "failed to load: RuntimeError: boom"
        with pytest.raises(backends.BackendUnavailable, match="'nogpu' is unavailable: no CUDA device"):
            convstdp.get_backend("nogpu")
        assert "missing" not in backends.default_backends()
    finally:
        for name in ("missing", "nogpu", "broken"):
            backends._registry.pop(name)
            backends._failures.pop(name, None)
            backends._opt_in.discard(name)


def test_opt_in_backends_are_not_default():
    backends.register_backend("ref-optin", "convstdp.reference:create_backend", default=False)
    try:
        assert convstdp.available_backends()["ref-optin"] == "ok"
        assert "ref-optin" not in backends.default_backends()
        assert "reference" in backends.default_backends()
    finally:
        backends._registry.pop("ref-optin")
        backends._instances.pop("ref-optin", None)
        backends._opt_in.discard("ref-optin")


def test_register_rejects_bad_arguments():
    with pytest.raises(ValueError, match="without ':'"):
        convstdp.register_backend("a:b", lambda: None)
    with pytest.raises(TypeError, match="factory must be callable"):
        convstdp.register_backend("x", 42)
    backends.register_backend("incomplete", lambda: object())
    try:
        with pytest.raises(TypeError, match="lacks the operator"):
            convstdp.get_backend("incomplete")
    finally:
        backends._registry.pop("incomplete")


def test_advance_and_backtransmit_on_backend():
    be = convstdp.get_backend("reference")
    rng = np.random.default_rng(4)
    x, k = rng.standard_normal((1, 3, 3, 2)), rng.standard_normal((2, 2, 2, 3))
    np.testing.assert_allclose(
        be.advance(x, k, resist_scale=2.0, bias=[1.0, 2.0, 3.0]),
        ref.advance(x, k, resist_scale=2.0, bias=np.array([1.0, 2.0, 3.0])),
    )
    d = rng.standard_normal((1, 3, 3, 3))
    np.testing.assert_array_equal(be.backtransmit(k, d), ref.deconv2d_dx(k, d))
