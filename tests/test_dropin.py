"""The ngc-learn drop-in (convstdp.synapses.ngclearn_dropin) inside ngc-learn's own machinery:
its unit-test scenario (SPEC §3 golden values) in a Context with MethodProcesses, and a 50-step
trajectory against ngc-learn's original synapse."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("ngclearn", reason="ngclearn is not installed: the drop-in has nothing to drop into")

import jax  # noqa: E402
from jax import random  # noqa: E402
from ngclearn import Context, MethodProcess  # noqa: E402
from ngclearn.components.synapses.convolution.traceSTDPDeconvSynapse import (  # noqa: E402
    TraceSTDPDeconvSynapse as Original,
)
from ngclearn.utils.distribution_generator import DistributionGenerator as dist  # noqa: E402

from convstdp.synapses.ngclearn_dropin import TraceSTDPDeconvSynapse as DropIn  # noqa: E402

_ids = itertools.count()


def _ctx_name(tag):
    """ngc-learn contexts are global and reused by name: every model here gets a fresh one."""
    return f"convstdp_test_{tag}_{next(_ids)}"


def test_isinstance_and_help():
    assert issubclass(DropIn, Original)
    info = DropIn.help()
    assert "DropIn" not in info and DropIn.__name__ in info
    assert "SAME" in info["hyperparameters"]["padding"]


@pytest.mark.parametrize("cls", [DropIn, Original], ids=["dropin", "original"])
def test_ngclearn_unit_test_scenario(cls):
    """ngc-learn's tests/components/synapses/convolution/test_traceSTDPDeconvSynapse.py, verbatim in substance."""
    dkey = random.PRNGKey(1234)
    dkey, *subkeys = random.split(dkey, 6)
    with Context(_ctx_name("golden")):
        a = cls(
            "a", (2, 2, 1, 1), (2, 2), A_plus=1.0, A_minus=1.0, eta=0.0, filter_init=dist.constant(value=1.0),
            stride=1, padding="SAME", batch_size=1, key=subkeys[0],
        )  # fmt: skip
        evolve_process = MethodProcess("evolve_process") >> a.evolve
        backtransmit_process = MethodProcess("backtransmit_process") >> a.backtransmit
        advance_process = MethodProcess("advance_proc") >> a.advance_state
        reset_process = MethodProcess("reset_proc") >> a.reset
    x = np.ones((1, 2, 2, 1))
    x[0, 0, 0, 0] = 0.0
    x[0, 1, 1, 0] = 0.0
    reset_process.run()
    a.inputs.set(x)
    advance_process.run(t=1.0, dt=1.0)
    np.testing.assert_array_equal(np.asarray(a.outputs.get())[0, :, :, 0], [[0.0, 1.0], [1.0, 2.0]])
    y = (a.outputs.get() > 0.0) * 1.0
    np.testing.assert_array_equal(y, [[[[0.0], [1.0]], [[1.0], [1.0]]]])
    a.preSpike.set(x)
    a.postSpike.set(y)
    a.preTrace.set(x * 0.4)
    a.postTrace.set(y * 1.3)
    evolve_process.run(t=1.0, dt=1.0)
    dK = a.dWeights.get()
    backtransmit_process.run(t=1.0, dt=1.0)
    dx = a.dInputs.get()
    # ngc-learn's own test asserts exact equality against float32(-0.9) etc.
    np.testing.assert_array_equal(dK, np.array([[[[0.0]], [[-0.9]]], [[[-0.9]], [[-1.8]]]], np.float32))
    np.testing.assert_array_equal(dx, [[[[3.0], [2.0]], [[2.0], [1.0]]]])


def _build(cls, cfg, key):
    with Context(_ctx_name(cls.__name__)):
        syn = cls("syn", key=key, **cfg)
        step = MethodProcess("step") >> syn.advance_state >> syn.evolve >> syn.backtransmit
        reset = MethodProcess("reset") >> syn.reset
    return syn, step, reset


# square (ngc-learn's domain), Ci != Co, stride 2 and 1, SAME and VALID; w_bound and w_decay on
TRAJECTORIES = {
    "s2-same": dict(
        shape=(3, 3, 2, 3), x_shape=(6, 6), A_plus=1.0, A_minus=0.6, eta=0.02, pretrace_target=0.1, stride=2,
        padding="SAME", w_bound=1.0, w_decay=0.005, batch_size=2,
    ),
    "s1-valid": dict(
        shape=(2, 2, 3, 2), x_shape=(5, 5), A_plus=0.8, A_minus=1.0, eta=0.05, pretrace_target=0.0, stride=1,
        padding="VALID", w_bound=0.9, w_decay=0.01, batch_size=3,
    ),
}  # fmt: skip
FIELDS = ("outputs", "weights", "dWeights", "dInputs")
# float32 (unit roundoff 2**-24) through 50 coupled steps: a bound of 2**-14 (~6e-5) relative to
# each quantity's magnitude leaves room for different summation orders; measured errors sit far
# below it (tens of unit roundoffs).
REL_BOUND = 2.0**-14


def trajectory(name, steps=50, seed=0):
    """Run the drop-in and the original side by side on the same exogenous inputs; per step and
    field, ``(max abs diff, max abs diff / max |original|)``."""
    cfg = TRAJECTORIES[name]
    key = random.PRNGKey(seed)
    models = [_build(cls, cfg, key) for cls in (DropIn, Original)]
    np.testing.assert_array_equal(models[0][0].weights.get(), models[1][0].weights.get())  # same key, same draws
    rng = np.random.default_rng(seed)
    xs, ys = models[0][0].in_shape, models[0][0].out_shape
    for _, _, reset in models:
        reset.run()
    diffs = []
    for _ in range(steps):
        vals = dict(
            inputs=(rng.random(xs) < 0.2).astype(np.float32),
            preSpike=(rng.random(xs) < 0.2).astype(np.float32),
            preTrace=rng.random(xs).astype(np.float32),
            postSpike=(rng.random(ys) < 0.2).astype(np.float32),
            postTrace=rng.random(ys).astype(np.float32),
        )
        for syn, step, _ in models:
            for k, v in vals.items():
                getattr(syn, k).set(v)
            step.run(t=0.0, dt=1.0)
        row = {}
        for f in FIELDS:
            a = np.asarray(getattr(models[0][0], f).get(), np.float64)
            b = np.asarray(getattr(models[1][0], f).get(), np.float64)
            assert a.shape == b.shape, f"{f}: drop-in {a.shape}, original {b.shape}"
            d = float(np.abs(a - b).max())
            row[f] = (d, d / max(float(np.abs(b).max()), 1e-30))
        diffs.append(row)
    w0 = np.asarray(models[1][0].weights.get())
    return diffs, w0


@pytest.mark.parametrize("name", list(TRAJECTORIES))
def test_50_step_trajectory_against_the_original(name):
    diffs, w_final = trajectory(name)
    bad = [(t, f, d) for t, row in enumerate(diffs) for f, d in row.items() if d[1] > REL_BOUND]
    assert not bad, "steps off: " + "; ".join(f"step {t} {f}: abs {d[0]:.3g}, rel {d[1]:.3g}" for t, f, d in bad[:5])
    # the trajectory is not trivial: filters moved and the bound is active
    hi = TRAJECTORIES[name]["w_bound"] - 0.01
    assert np.ptp(w_final) > 0.1 and (np.isclose(w_final, 0.01).any() or np.isclose(w_final, hi).any())
    worst = {f: max(row[f][1] for row in diffs) for f in FIELDS}
    print(f"\n{name}: worst relative difference per field over 50 steps: {worst}")


def test_dropin_runs_under_ngclearn_scan_and_jit():
    """The drop-in's compiled step is a pure function of the state: jit it whole, scan it."""
    cfg = TRAJECTORIES["s2-same"]
    syn, step, reset = _build(DropIn, cfg, random.PRNGKey(3))
    reset.run()
    syn.inputs.set(np.ones(syn.in_shape, np.float32))
    syn.preTrace.set(np.full(syn.in_shape, 0.5, np.float32))
    syn.postSpike.set(np.ones(syn.out_shape, np.float32))
    w0 = np.asarray(syn.weights.get())
    final, _ = step.scan(jax.numpy.zeros((4, 0)))  # 4 steps, no keywords
    w4 = np.asarray(final[syn.weights.target])
    assert w4.shape == w0.shape and not np.allclose(w4, w0)


def test_dropin_accepts_what_the_original_cannot():
    with Context(_ctx_name("rect")):
        syn = DropIn("r", (3, 2, 1, 2), (4, 7), A_plus=1.0, A_minus=1.0, stride=(2, 1), key=random.PRNGKey(0))
        step = MethodProcess("step") >> syn.advance_state >> syn.evolve >> syn.backtransmit
    assert syn.in_shape == (1, 4, 7, 1) and syn.out_shape == (1, 8, 7, 2)
    assert syn.biases.get().shape == (1, 2)
    syn.inputs.set(np.ones(syn.in_shape, np.float32))
    step.run()
    from convstdp.reference import ops

    want = ops.deconv2d(np.ones(syn.in_shape), np.asarray(syn.weights.get()), stride=(2, 1))
    np.testing.assert_allclose(np.asarray(syn.outputs.get()), want, rtol=1e-6)


def test_save_load_interchange_with_the_original(tmp_path):
    """Same npz keys as ngc-learn's; each loads the other's file (the scalar 0.0 bias broadcasts)."""
    from convstdp.synapses import SAVE_KEYS

    cfg = TRAJECTORIES["s1-valid"]
    dropin, step, _ = _build(DropIn, cfg, random.PRNGKey(5))
    original, _, _ = _build(Original, cfg, random.PRNGKey(6))
    dropin.preTrace.set(np.full(dropin.in_shape, 0.5, np.float32))
    dropin.postSpike.set(np.ones(dropin.out_shape, np.float32))
    step.run()
    (tmp_path / "d").mkdir()
    (tmp_path / "o").mkdir()
    dropin.save(str(tmp_path / "d"))
    original.save(str(tmp_path / "o"))
    with np.load(tmp_path / "d" / "syn.npz") as d, np.load(tmp_path / "o" / "syn.npz") as o:
        assert sorted(d.files) == sorted(o.files) == sorted(SAVE_KEYS)
        assert d["biases"].shape == (1, 2) and o["biases"].shape == ()
        w_dropin, w_original = d["weights"], o["weights"]
    assert not np.allclose(w_dropin, w_original)
    original.load(str(tmp_path / "d"))
    np.testing.assert_array_equal(original.weights.get(), w_dropin)
    dropin.load(str(tmp_path / "o"))
    np.testing.assert_array_equal(dropin.weights.get(), w_original)
    dropin.inputs.set(np.ones(dropin.in_shape, np.float32))
    step.run()  # the scalar bias from ngc-learn's file broadcasts
    assert dropin.outputs.get().shape == dropin.out_shape
