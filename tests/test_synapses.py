"""The seed as a component (SPEC §9): convstdp.synapses.TraceSTDPDeconvSynapse on the reference,
numba and jax backends, and its pure-JAX functional form."""

from __future__ import annotations

import numpy as np
import pytest

from convstdp import get_backend
from convstdp.reference import ops
from convstdp.synapses import COMPARTMENTS, SAVE_KEYS, TraceSTDPDeconvSynapse

BACKENDS = ["reference", "numba", "jax"]
# a rectangular map and kernel, per-axis stride, Ci != Co, w_bound and w_decay on
RECT = dict(
    shape=(3, 2, 2, 3),
    x_shape=(4, 5),
    A_plus=1.1,
    A_minus=0.7,
    eta=0.05,
    pretrace_target=0.1,
    stride=(2, 1),
    padding="SAME",
    w_bound=1.0,
    w_decay=0.01,
    batch_size=2,
)


def _backend(name):
    try:
        return get_backend(name)
    except Exception as err:  # unavailable here: say why
        pytest.skip(f"backend {name!r} unavailable: {err}")


def _close(what, got, want, rtol=2e-6, atol_scale=2e-6):
    """float32 agreement: |got - want| <= rtol |want| + atol_scale * max|want| (worst element reported)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    bound = rtol * np.abs(want) + atol_scale * max(np.abs(want).max(initial=0.0), 1.0)
    err = np.abs(got - want)
    if (err > bound).any():
        i = np.unravel_index(np.argmax(err - bound), err.shape)
        pytest.fail(
            f"{what}: {int((err > bound).sum())}/{err.size} elements off; worst at {i}: got {got[i]!r}, "
            f"want {want[i]!r}, error {err[i]:.3g} > bound {bound[i]:.3g}"
        )


def _inputs(syn, rng, density=0.3):
    """One step of exogenous values: spikes (0/1) at ``density``, dense traces in [0, 1)."""
    xs, ys = syn.in_shape, syn.out_shape
    return dict(
        inputs=(rng.random(xs) < density).astype(np.float32),
        preSpike=(rng.random(xs) < density).astype(np.float32),
        preTrace=rng.random(xs).astype(np.float32),
        postSpike=(rng.random(ys) < density).astype(np.float32),
        postTrace=rng.random(ys).astype(np.float32),
    )


def _feed(syn, values):
    for name, v in values.items():
        getattr(syn, name).set(v)


def _snapshot(syn):
    return {n: np.array(np.asarray(c.get())) for n, c in syn.compartments}


# ------------------------------------------------------------------------------ golden values


@pytest.mark.parametrize("backend", BACKENDS)
def test_golden_values_of_ngclearn_unit_test(backend):
    """SPEC §3 worked example, run exactly as ngc-learn's own unit test runs its synapse."""
    _backend(backend)
    syn = TraceSTDPDeconvSynapse(
        "a", (2, 2, 1, 1), (2, 2), A_plus=1.0, A_minus=1.0, eta=0.0, filter_init=np.ones((2, 2, 1, 1)), backend=backend
    )
    x = np.ones((1, 2, 2, 1))  # float64, as the unit test makes it: cast to the synapse's float32
    x[0, 0, 0, 0] = x[0, 1, 1, 0] = 0.0
    syn.reset()
    syn.inputs.set(x)
    syn.advance_state()
    out = syn.outputs.get()
    assert isinstance(out, np.ndarray) == (backend != "jax")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(out)[0, :, :, 0], [[0.0, 1.0], [1.0, 2.0]])
    y = (np.asarray(out) > 0) * 1.0
    syn.preSpike.set(x)
    syn.postSpike.set(y)
    syn.preTrace.set(x * 0.4)
    syn.postTrace.set(y * 1.3)
    syn.evolve()
    syn.backtransmit()
    np.testing.assert_allclose(np.asarray(syn.dWeights.get())[:, :, 0, 0], [[0.0, -0.9], [-0.9, -1.8]], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(syn.dInputs.get())[0, :, :, 0], [[3.0, 2.0], [2.0, 1.0]])
    np.testing.assert_array_equal(np.asarray(syn.weights.get()), np.ones((2, 2, 1, 1)))  # eta = 0


# ------------------------------------------------------------------------------ the step itself


@pytest.mark.parametrize("backend", BACKENDS)
def test_step_matches_reference_ops_and_backtransmits_through_updated_filters(backend):
    _backend(backend)
    rng = np.random.default_rng(7)
    syn = TraceSTDPDeconvSynapse("s", **RECT, backend=backend, seed=3)
    assert syn.in_shape == (2, 4, 5, 2) and syn.out_shape == (2, 8, 5, 3)
    w0 = np.array(syn.weights.get())
    vals = _inputs(syn, rng)
    _feed(syn, vals)
    syn.step()
    kw = dict(stride=(2, 1), padding="SAME")
    y = ops.advance(vals["inputs"], w0, resist_scale=1.0, bias=0.0, **kw)
    w1, dw = ops.stdp_update(
        w0, vals["preSpike"], vals["preTrace"], vals["postSpike"], vals["postTrace"], A_plus=1.1, A_minus=0.7,
        eta=0.05, pretrace_target=0.1, w_decay=0.01, w_bound=1.0, **kw,
    )  # fmt: skip
    dx_new = ops.backtransmit(w1, vals["postSpike"], **kw)
    dx_old = ops.backtransmit(w0, vals["postSpike"], **kw)
    _close("outputs", syn.outputs.get(), y)
    _close("weights", syn.weights.get(), w1)
    _close("dWeights", syn.dWeights.get(), dw)
    _close("dInputs", syn.dInputs.get(), dx_new)
    assert np.abs(dx_new - dx_old).max() > 1e-3  # the order is observable
    assert not np.allclose(w1, w0)


# every registered backend (opt-in ones too); square maps and kernels, one stride: inside ngc-learn's subset
EVERY = [
    *("reference", "numba", "numba-dense", "numba-sparse", "jax", "jax-sharded", "jax-sharded-det", "ngclearn", "torch")
]
SQUARE = dict(RECT, shape=(3, 3, 2, 3), x_shape=(5, 5), stride=2)


@pytest.mark.parametrize("backend", EVERY)
def test_five_steps_on_every_backend_agree_with_the_reference_component(backend):
    _backend(backend)
    rng = np.random.default_rng(17)
    steps = [_inputs(TraceSTDPDeconvSynapse("shape", **SQUARE, backend="reference"), rng) for _ in range(5)]
    syns = [TraceSTDPDeconvSynapse("e", **SQUARE, backend=b, seed=5) for b in ("reference", backend)]
    w0 = np.array(np.asarray(syns[0].weights.get()))
    for vals in steps:
        for syn in syns:
            _feed(syn, vals)
            syn.advance_state()
            syn.evolve()
            syn.backtransmit()
    ref, got = syns
    assert np.abs(np.asarray(ref.weights.get()) - w0).max() > 1e-3  # it learned over the five steps
    for name in ("outputs", "weights", "dWeights", "dInputs"):
        _close(name, getattr(got, name).get(), getattr(ref, name).get(), rtol=1e-5, atol_scale=1e-5)


def test_resist_scale_biases_and_eta_compartment():
    rng = np.random.default_rng(1)
    syn = TraceSTDPDeconvSynapse("r", **{**RECT, "eta": 0.0}, g_conduct_factor=2.5, backend="reference", seed=1)
    assert syn.resist_scale == 2.5
    vals = _inputs(syn, rng)
    _feed(syn, vals)
    syn.biases.set([0.5, -1.0, 2.0])  # (Co,) broadcasts to (1, Co)
    assert syn.biases.get().shape == (1, 3)
    syn.advance_state()
    y = ops.deconv2d(vals["inputs"], syn.weights.get(), stride=(2, 1)) * 2.5 + np.array([0.5, -1.0, 2.0])
    _close("outputs", syn.outputs.get(), y)
    # eta is read from its compartment at evolve time
    w0 = np.array(syn.weights.get())
    syn.eta.set(0.2)
    syn.evolve()
    _close("weights", syn.weights.get(), np.clip(w0 + 0.2 * syn.dWeights.get() - 0.01 * w0, 0.01, 0.99))
    with pytest.raises(ValueError, match="resist_scale and g_conduct_factor"):
        TraceSTDPDeconvSynapse("r2", **RECT, resist_scale=1.0, g_conduct_factor=2.0, backend="reference")


def test_rectangular_maps_and_explicit_pads():
    rng = np.random.default_rng(2)
    pads = ((1, -1), (0, 2))
    syn = TraceSTDPDeconvSynapse(
        "q", (2, 3, 1, 2), (3, 6), A_plus=1.0, A_minus=1.0, eta=0.1, stride=(1, 2), padding=pads, backend="reference"
    )
    x = rng.random((1, 3, 6, 1)).astype(np.float32)
    syn.inputs.set(x)
    syn.advance_state()
    want = ops.deconv2d(x, syn.weights.get(), stride=(1, 2), padding=pads)
    assert syn.out_shape == want.shape
    _close("outputs", syn.outputs.get(), want)


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_empty_batch(backend):
    _backend(backend)
    syn = TraceSTDPDeconvSynapse("e", **{**RECT, "batch_size": 0}, backend=backend, seed=4)
    w0 = np.array(syn.weights.get())
    syn.step()
    assert syn.outputs.get().shape == (0, 8, 5, 3) and syn.dInputs.get().shape == (0, 4, 5, 2)
    np.testing.assert_array_equal(syn.dWeights.get(), 0.0)
    _close("weights", syn.weights.get(), np.clip(w0 - 0.01 * w0, 0.01, 0.99))


# ------------------------------------------------------------------------------ reset, save, load


def test_reset_zeroes_ngclearns_six_compartments():
    rng = np.random.default_rng(5)
    syn = TraceSTDPDeconvSynapse("z", **RECT, backend="reference", seed=5)
    _feed(syn, _inputs(syn, rng))
    syn.step()
    before = _snapshot(syn)
    syn.reset()
    after = _snapshot(syn)
    for name in ("inputs", "outputs", "preSpike", "postSpike", "preTrace", "postTrace"):
        np.testing.assert_array_equal(after[name], 0.0)
    for name in ("weights", "biases", "eta", "dWeights", "dInputs"):
        np.testing.assert_array_equal(after[name], before[name])
    assert before["postTrace"].any() and before["dInputs"].any()


@pytest.mark.parametrize("backend", ["reference", "jax"])
def test_save_load_round_trip(tmp_path, backend):
    _backend(backend)
    rng = np.random.default_rng(6)
    syn = TraceSTDPDeconvSynapse("saved", **RECT, backend=backend, seed=6)
    _feed(syn, _inputs(syn, rng))
    syn.step()
    path = syn.save(tmp_path)
    with np.load(path) as data:
        assert sorted(data.files) == sorted(SAVE_KEYS)
        assert data["weights"].shape == (3, 2, 2, 3) and data["eta"].shape == (1, 1) and data["key"].dtype == np.uint32
    other = TraceSTDPDeconvSynapse("saved", **RECT, backend="reference", seed=99)
    assert not np.allclose(other.weights.get(), syn.weights.get())
    other.load(tmp_path)
    for name in COMPARTMENTS:
        np.testing.assert_array_equal(np.asarray(other.state[name]), np.asarray(syn.state[name]), err_msg=name)
    np.testing.assert_array_equal(other.key, syn.key)


def test_load_accepts_ngclearn_scalar_bias_and_rejects_bad_files_unchanged(tmp_path):
    syn = TraceSTDPDeconvSynapse("f", **RECT, backend="reference", seed=8)
    w = np.full((3, 2, 2, 3), 0.5, np.float32)
    np.savez(tmp_path / "f.npz", weights=w, biases=np.float64(0.0), key=np.array([0, 1], np.uint32), extra=1)
    syn.load(tmp_path)
    np.testing.assert_array_equal(syn.weights.get(), w)
    np.testing.assert_array_equal(syn.biases.get(), np.zeros((1, 3)))
    before = _snapshot(syn)
    np.savez(tmp_path / "f.npz", weights=np.zeros((3, 2, 2, 3)), dInputs=np.zeros((2, 4, 4, 2)))
    with pytest.raises(
        ValueError, match=r"'dInputs' in f\.npz must have shape \(2, 4, 5, 2\); got shape \(2, 4, 4, 2\)"
    ):
        syn.load(tmp_path)
    after = _snapshot(syn)
    for name in COMPARTMENTS:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)  # weights not half-loaded


# ------------------------------------------------------------------------------ bad input


def test_bad_compartment_values_raise_before_any_change():
    syn = TraceSTDPDeconvSynapse("b", **RECT, backend="reference", seed=9)
    _feed(syn, _inputs(syn, np.random.default_rng(9)))
    before = _snapshot(syn)
    with pytest.raises(
        ValueError, match=r"compartment 'postSpike' must have shape \(2, 8, 5, 3\); got shape \(2, 4, 5, 3\)"
    ):
        syn.postSpike.set(np.ones((2, 4, 5, 3)))
    with pytest.raises(ValueError, match=r"compartment 'inputs' must have shape \(2, 4, 5, 2\); got shape \(4, 5, 2\)"):
        syn.inputs = np.ones((4, 5, 2))  # attribute assignment goes through the same check
    with pytest.raises(TypeError, match=r"compartment 'preTrace' holds float32 values; got dtype complex128"):
        syn.preTrace.set(np.ones((2, 4, 5, 2), complex))
    with pytest.raises(TypeError, match=r"compartment 'weights' .* got dtype <U1"):
        syn.weights.set(np.full((3, 2, 2, 3), "a"))
    with pytest.raises(ValueError, match=r"compartment 'eta' must have shape \(1, 1\), or a scalar; got shape \(2,\)"):
        syn.eta.set([0.1, 0.2])
    with pytest.raises(TypeError, match="compartment 'biases' must be an array of numbers, got NoneType"):
        syn.biases.set(None)
    after = _snapshot(syn)
    for name in COMPARTMENTS:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    # a caller's array is copied, never aliased: changing it later does not change the state
    x = np.zeros((2, 4, 5, 2), np.float32)
    syn.inputs.set(x)
    x[:] = 1.0
    assert not syn.inputs.get().any()


@pytest.mark.parametrize(
    "change, exc, pattern",
    [
        (dict(padding="FULL"), ValueError, r"padding must be 'SAME', 'VALID' .* got 'FULL'"),
        (dict(padding=None), ValueError, r"padding must be .* got None \(ngc-learn's default"),
        (dict(stride=0), ValueError, r"stride must be >= 1 on each axis, got 0"),
        (dict(shape=(3, 2, 2)), TypeError, r"shape must be a tuple of 4 ints, got \(3, 2, 2\)"),
        (dict(x_shape=(2, 4, 5, 3)), ValueError, r"x_shape \(2, 4, 5, 3\) has 3 channels but shape \(3, 2, 2, 3\)"),
        (dict(x_shape=(1, 4, 5, 2)), ValueError, r"x_shape \(1, 4, 5, 2\) has batch 1 but batch_size is 2"),
        (dict(padding=((-3, -3), (0, 0))), ValueError, r"shape \(3, 2, 2, 3\) does not fit x_shape \(4, 5\).*empty"),
        (dict(filter_init=np.ones((2, 2, 2, 3))), ValueError, r"filter_init must have shape \(3, 2, 2, 3\)"),
        (dict(batch_size=-1), ValueError, r"batch_size must be >= 0, got -1"),
        (dict(backend=3), TypeError, r"backend must be None, a backend name"),
        (dict(A_plus="1"), TypeError, r"A_plus must be a real scalar"),
        (dict(dtype=np.float16), TypeError, r"dtype must be float32 or float64, got float16"),
    ],
)
def test_bad_constructor_arguments(change, exc, pattern):
    kw = {**RECT, "backend": "reference", **change}
    with pytest.raises(exc, match=pattern):
        TraceSTDPDeconvSynapse("bad", **kw)


def test_default_backend(monkeypatch):
    monkeypatch.setenv("CONVSTDP_BACKEND", "reference")
    assert TraceSTDPDeconvSynapse("d", **RECT).backend.name == "reference"
    monkeypatch.delenv("CONVSTDP_BACKEND")
    from convstdp.synapses.component import default_backend_name

    assert default_backend_name() in ("numba", "jax", "reference")
    assert TraceSTDPDeconvSynapse("d", **RECT, backend=get_backend("reference")).backend.name == "reference"


def test_help_documents_the_quirks():
    info = TraceSTDPDeconvSynapse.help()
    assert set(info["compartments"]) == {"inputs", "states", "analytics", "outputs"}
    assert "padding" in info["differences from ngc-learn"] and "biases" in info["differences from ngc-learn"]
    assert "g_conduct_factor" in info["hyperparameters"]["resist_scale"]


# ------------------------------------------------------------------------------ functional form


def test_functional_ops_equal_the_component_on_jax():
    pytest.importorskip("jax", reason="the functional form needs JAX")
    from convstdp.synapses import functional as fn

    _backend("jax")
    rng = np.random.default_rng(10)
    syn = TraceSTDPDeconvSynapse("j", **RECT, backend="jax", seed=10)
    cfg = fn.SynapseConfig.from_component(syn)
    _feed(syn, _inputs(syn, rng))
    state = cfg.init_from(syn)
    for op in ("advance_state", "evolve", "backtransmit"):
        getattr(syn, op)()
        state = getattr(fn, op.replace("_state", ""))(cfg, state)
        for name in COMPARTMENTS:
            _close(f"{op}: {name}", getattr(state, name), syn.state[name], rtol=1e-6, atol_scale=1e-6)
    state = fn.reset(cfg, state)
    syn.reset()
    for name in COMPARTMENTS:
        np.testing.assert_array_equal(np.asarray(getattr(state, name)), np.asarray(syn.state[name]))


def test_functional_scan_compiles_once_and_matches_the_component_loop():
    jax = pytest.importorskip("jax", reason="the functional form needs JAX")
    import jax.numpy as jnp

    from convstdp.synapses import functional as fn

    rng = np.random.default_rng(11)
    syn = TraceSTDPDeconvSynapse("loop", **RECT, backend="reference", seed=11)
    cfg = fn.SynapseConfig.from_component(syn)
    state0 = cfg.init_from(syn)
    T = 20
    steps = [_inputs(syn, rng) for _ in range(T)]
    xs = fn.StepInputs(*(jnp.stack([s[f] for s in steps]) for f in fn.StepInputs._fields))

    traces = []

    def counted(state, inputs):
        traces.append(1)  # runs only while tracing
        return cfg.step(state, inputs)

    step = jax.jit(counted)
    s = state0
    for t in range(3):
        s = step(s, fn.StepInputs(*(v[t] for v in xs)))
    assert len(traces) == 1

    loop_traces = []

    def loop(state, inputs):
        loop_traces.append(1)
        return cfg.run(state, inputs, record=lambda q: (q.outputs, q.dInputs))

    run = jax.jit(loop)
    final, (outs, dins) = run(state0, xs)
    again, _ = run(final, xs)  # new values, same shapes: no retrace
    assert len(loop_traces) == 1
    assert not np.allclose(np.asarray(again.weights), np.asarray(final.weights))

    for t in range(T):
        _feed(syn, steps[t])
        syn.step()
        _close(f"step {t}: outputs", outs[t], syn.outputs.get(), atol_scale=1e-5)
        _close(f"step {t}: dInputs", dins[t], syn.dInputs.get(), atol_scale=1e-5)
    for name in COMPARTMENTS:
        _close(f"after {T} steps: {name}", getattr(final, name), syn.state[name], atol_scale=1e-5)
    assert not np.allclose(np.asarray(final.weights), np.asarray(state0.weights))
