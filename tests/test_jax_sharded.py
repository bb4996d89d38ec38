"""The sharded JAX backend (SPEC §10) on 4 simulated CPU devices, against the NumPy reference.

JAX fixes its device count when it starts (and may already have started in this process with
one device), so the checks run in a child process with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` and report JSON; this file asserts on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("jax")

from convstdp import backends  # noqa: E402
from convstdp.fast.jax_sharded import padded_batch  # noqa: E402

DEVICES = 4
BATCHES = (0, 1, 3, 4, 6, 9)
STDP = "dict(A_plus=1.3, A_minus=0.7, eta=0.4, pretrace_target=0.15, w_decay=0.02, w_bound=0.0)"

# Shared prologue: seeded SPEC §3 inputs for a stride-2 step (float32, bool spikes).
_PROLOGUE = f"""
import hashlib, json
import numpy as np
import jax
from convstdp import get_backend
STDP = {STDP}

def step_inputs(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 7, 5, 3)).astype(np.float32)
    k = rng.uniform(-0.6, 1.4, (3, 2, 3, 4)).astype(np.float32)
    ps, pt = rng.random(x.shape) < 0.3, rng.random(x.shape).astype(np.float32)
    ys = (n, 14, 10, 4)
    qs, qt = rng.random(ys) < 0.3, rng.random(ys).astype(np.float32)
    return k, x, ps, pt, qs, qt

def spec(a):
    # the mesh axes of a's batch axis ([]: replicated), whatever the JAX version prints
    first = tuple(a.sharding.spec)[:1] or (None,)
    return [] if first[0] is None else list(first[0] if isinstance(first[0], tuple) else first)

def digest(arrays):
    return hashlib.sha256(b"".join(np.asarray(a).tobytes() for a in arrays)).hexdigest()
"""

# The main child: conformance cases per batch size, shardings, 1-device path, functional scan, component.
_MAIN = """
from jax.sharding import NamedSharding, PartitionSpec as P
from convstdp.conformance import harness
from convstdp.conformance.cases import parse_case
from convstdp.fast.jax_sharded import JaxShardedBackend, make_mesh
from convstdp.backends import Backend
out = {"devices": jax.device_count(), "env_backend": get_backend().name}
be = get_backend("jax-sharded")
names = [f"s2-same-k3x2-m5x4-c3to4-n{n}-f32-all-bool" for n in BATCHES]
names += ["s3x2-neg2.m1.1.0-k4x3-m7x5-c3to2-n9-f32-target-float", "s1-valid-k3x3-m6x6-c2to3-n3-f32-clip-bool"]
run = harness.run([be], [parse_case(c) for c in names])[0]
out["results"] = [(r.case, r.operator, r.status, r.ratio) for r in run.results]

k, x, ps, pt, qs, qt = step_inputs(6)
y, w, dw, dx = be.stdp_step(k, x, ps, pt, qs, qt, stride=2, padding="SAME", **STDP)
shards = lambda a: [np.asarray(s.data) for s in a.addressable_shards]
out["w_shards_equal"] = [bool(all(np.array_equal(s, shards(a)[0]) for s in shards(a))) for a in (w, dw)]
out["w_shard_count"] = len(w.addressable_shards)
out["w_spec"] = spec(w)
k4 = step_inputs(4)
out["y_spec_n4"] = spec(be.stdp_step(*k4, stride=2, padding="SAME", **STDP)[0])

det = get_backend("jax-sharded-det")
a = det.stdp_step(*step_inputs(9), stride=2, padding="SAME", **STDP)
b = det.stdp_step(*step_inputs(9), stride=2, padding="SAME", **STDP)
out["det_hash"], out["det_same_in_process"] = digest(a), digest(a) == digest(b)
c = be.stdp_step(*step_inputs(9), stride=2, padding="SAME", **STDP)
out["det_vs_psum_maxdiff"] = max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in zip(a, c))

one = Backend("one", JaxShardedBackend(devices=jax.devices()[:1]))
two = Backend("two", JaxShardedBackend(make_mesh(jax.devices()[:2])))
plain = get_backend("jax")
args = step_inputs(3)
r1, rj, r2 = (b_.stdp_step(*args, stride=2, padding="SAME", **STDP) for b_ in (one, plain, two))
out["one_device_bit_equal"] = digest(r1) == digest(rj)
out["two_device_maxdiff"] = max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in zip(r2, rj))
out["one_devices"], out["two_devices"] = len(one.devices()), len(two.devices())
# a 2-D mesh, as a multi-host one looks (hosts x local devices): the batch goes over both axes
mesh22 = jax.sharding.Mesh(np.array(jax.devices()).reshape(2, 2), ("host", "local"))
grid = Backend("grid", JaxShardedBackend(mesh22))
rg = grid.stdp_step(*step_inputs(6), stride=2, padding="SAME", **STDP)
r6 = plain.stdp_step(*step_inputs(6), stride=2, padding="SAME", **STDP)
out["grid_maxdiff"] = max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in zip(rg, r6))
out["grid_y_spec"] = spec(grid.stdp_step(*step_inputs(4), stride=2, padding="SAME", **STDP)[0])
"""

_FUNCTIONAL = """
import jax.numpy as jnp
from convstdp.synapses import TraceSTDPDeconvSynapse
from convstdp.synapses import functional as fn
mesh = make_mesh()
kw = dict(shape=(3, 3, 2, 3), x_shape=(6, 6), A_plus=1.0, A_minus=0.5, pretrace_target=0.1, stride=2,
          batch_size=8, w_bound=2.0)
cs, c1 = fn.SynapseConfig.make(**kw, mesh=mesh), fn.SynapseConfig.make(**kw)
rng = np.random.default_rng(1)
T = 4
spikes = lambda shp: (rng.random((T, *shp)) < 0.3).astype(np.float32)
traces = lambda shp: rng.random((T, *shp)).astype(np.float32)
xs = fn.StepInputs(spikes(cs.x_shape), spikes(cs.x_shape), traces(cs.x_shape), spikes(cs.y_shape), traces(cs.y_shape))
w0 = rng.uniform(0.1, 1.0, cs.kernel_shape).astype(np.float32)
state_sh, in_sh = cs.shardings()
s0 = jax.device_put(cs.init(w0, eta=0.05), state_sh)
xs_sh = fn.StepInputs(*(jax.device_put(a, NamedSharding(mesh, P(None, *i.spec))) for a, i in zip(xs, in_sh)))
final, hist = fn.run_jit(cs, s0, xs_sh, None)
ref, _ = fn.run_jit(c1, c1.init(w0, eta=0.05), fn.StepInputs(*map(jnp.asarray, xs)), None)
out["fn_specs"] = {f: spec(getattr(final, f)) for f in fn.SynapseState._fields}
rel = lambda a, b: float(jnp.max(jnp.abs(a - b)) / (1e-30 + jnp.max(jnp.abs(b))))
out["fn_rel"] = {f: rel(getattr(final, f), getattr(ref, f)) for f in ("outputs", "weights", "dWeights", "dInputs")}
out["fn_moved"] = float(jnp.max(jnp.abs(final.weights - w0)))
hlo = jax.jit(fn.run, static_argnums=(0,)).lower(cs, s0, xs_sh).compile().as_text()
out["fn_all_reduce"] = "all-reduce" in hlo

syns = [TraceSTDPDeconvSynapse("s", (3, 3, 2, 3), (6, 6), 1.0, 0.5, eta=0.05, batch_size=3, stride=2,
                               backend=name, seed=7) for name in ("jax-sharded", "jax")]
for syn in syns:
    r = np.random.default_rng(5)
    syn.inputs.set(r.random((3, 6, 6, 2)).astype(np.float32))
    syn.preSpike.set(r.random((3, 6, 6, 2)) < 0.4)
    syn.preTrace.set(r.random((3, 6, 6, 2)).astype(np.float32))
    syn.postSpike.set(r.random((3, 12, 12, 3)) < 0.4)
    syn.postTrace.set(r.random((3, 12, 12, 3)).astype(np.float32))
    syn.advance_state(); syn.evolve(); syn.backtransmit()
out["component_dw_norm"] = float(jnp.abs(syns[1].dWeights.get()).sum())
out["component_maxdiff"] = {n: float(jnp.max(jnp.abs(syns[0].state[n] - syns[1].state[n])))
                            for n in ("outputs", "weights", "dWeights", "dInputs")}
out["component_w_spec"] = spec(syns[0].weights.get())
print("RESULT " + json.dumps(out))
"""

_DET_ONLY = """
det = get_backend("jax-sharded-det")
print("RESULT " + json.dumps({"det_hash": digest(det.stdp_step(*step_inputs(9), stride=2, padding="SAME", **STDP))}))
"""


def _child(body: str, timeout: float = 120) -> dict:
    """Run ``body`` after the prologue in a fresh interpreter on ``DEVICES`` simulated CPU devices."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES}", JAX_PLATFORMS="cpu")
    env["CONVSTDP_BACKEND"] = "jax-sharded"
    code = textwrap.dedent(_PROLOGUE) + f"BATCHES = {BATCHES!r}\n" + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


@pytest.fixture(scope="module")
def child() -> dict:
    return _child(_MAIN + _FUNCTIONAL)


def test_registered_opt_in() -> None:
    assert "jax-sharded" in backends.registered_backends()
    assert "jax-sharded-det" in backends.registered_backends()
    assert "jax-sharded" not in backends.default_backends()
    assert backends.checked_precision("jax-sharded") == "highest"


def test_padded_batch() -> None:
    assert [padded_batch(n, 4) for n in BATCHES] == [4, 4, 4, 4, 8, 12]
    assert padded_batch(5, 1) == 5 and padded_batch(0, 1) == 1


def test_every_batch_size_matches_reference(child: dict) -> None:
    assert child["devices"] == DEVICES
    assert child["env_backend"] == "jax-sharded"  # CONVSTDP_BACKEND selects it
    results = child["results"]
    failed = [r for r in results if r[2] != "pass"]
    assert not failed, failed
    ops = {r[1] for r in results}
    assert ops >= {"deconv2d", "deconv2d_dk", "deconv2d_dx", "stdp_update", "stdp_step"}
    for n in BATCHES:
        assert any(f"-n{n}-" in r[0] for r in results)
    ratios = [r[3] for r in results if r[3] is not None]
    assert ratios and max(ratios) <= 1.0
    # non-empty batches compare real values (a non-zero error somewhere: not trivially equal)
    assert max(ratios) > 0


def test_weights_replicated(child: dict) -> None:
    assert child["w_shard_count"] == DEVICES
    assert child["w_shards_equal"] == [True, True]  # W' and dW bit-identical on every device
    assert child["w_spec"] == []
    assert child["y_spec_n4"] == ["batch"]


def test_deterministic_mode_bit_identical(child: dict) -> None:
    assert child["det_same_in_process"]
    assert _child(_DET_ONLY)["det_hash"] == child["det_hash"]  # a second run, a second process
    assert child["det_vs_psum_maxdiff"] < 1e-4


def test_one_and_two_devices(child: dict) -> None:
    assert child["one_devices"] == 1 and child["two_devices"] == 2
    assert child["one_device_bit_equal"]  # 1 device runs the unsharded programs
    assert child["two_device_maxdiff"] < 1e-4
    assert child["grid_maxdiff"] < 1e-4
    assert child["grid_y_spec"] == ["host", "local"]


def test_functional_scan_keeps_shardings(child: dict) -> None:
    specs = child["fn_specs"]
    for f in ("weights", "dWeights", "biases", "eta"):
        assert specs[f] == [], (f, specs[f])
    for f in ("inputs", "outputs", "preSpike", "postTrace", "dInputs"):
        assert specs[f] == ["batch"], (f, specs[f])
    assert child["fn_all_reduce"]  # dK summed by a collective inside the compiled loop
    assert child["fn_moved"] > 1e-3  # the filters did learn
    assert max(child["fn_rel"].values()) < 1e-5, child["fn_rel"]


def test_component_on_sharded_backend(child: dict) -> None:
    assert child["component_dw_norm"] > 0.1
    assert max(child["component_maxdiff"].values()) < 1e-4, child["component_maxdiff"]
    assert child["component_w_spec"] == []


def test_padding_rows_are_exact_zeros() -> None:
    """The masking argument in one line of NumPy: a zero d-side row adds exact zeros to dK."""
    rng = np.random.default_rng(0)
    xs, ds = rng.standard_normal((3, 5)).astype(np.float32), rng.standard_normal((3, 7)).astype(np.float32)
    padded_x = np.vstack([xs, np.full((1, 5), -0.15, np.float32)])  # a padded x side need not be 0
    padded_d = np.vstack([ds, np.zeros((1, 7), np.float32)])
    assert np.array_equal(np.einsum("ni,no->io", padded_x, padded_d), np.einsum("ni,no->io", xs, ds))
