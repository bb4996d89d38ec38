"""Timing: first call (compile) apart from steady state, adaptive inner loops, interleaved rounds.

For one workload every runner is prepared in turn (first call, warm-up, calibration of the inner
loop so that one sample lasts at least ``min_sample_s``), then sampled round-robin, rotating the
order each round, so all runners see the same machine load. A runner leaves the rotation once it
has ``min_repeats`` samples and has spent its time ``budget_s``, or at ``max_repeats``.

Runners whose outputs are ``jax.Array`` get their inputs as device arrays (converted once,
outside the timed region) and every timed call blocks on all outputs.
"""

from __future__ import annotations

import gc
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from convstdp import geometry
from convstdp.bench import memory
from convstdp.bench.workloads import Workload
from convstdp.conformance.cases import make_inputs


@dataclass
class Settings:
    """How long to measure. ``quick()`` is for CI/tests; the defaults suit a 2-core laptop."""

    min_sample_s: float = 0.005  # one sample (inner loop) lasts at least this
    warmup_s: float = 0.05  # steady-state calls before calibration, after the first call
    min_repeats: int = 5
    max_repeats: int = 25
    budget_s: float = 0.2  # sampling time per runner and workload (sweeps)
    spec_budget_s: float = 1.5  # the same for SPEC §8 workloads
    slow_s: float = 30.0  # a runner slower than this per call is sampled once (capped): a hang guard
    reference_max_flops: float = 1e9  # above this the NumPy reference (the oracle, not a contender) is not timed
    memory: bool = True
    seed: int = 0

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            min_sample_s=0.0005,
            warmup_s=0.0,
            min_repeats=3,
            max_repeats=3,
            budget_s=0.0,
            spec_budget_s=0.0,
            slow_s=0.25,
        )


@dataclass
class Runner:
    """A backend or peer, by name, as timed: ``backend`` is a :class:`convstdp.Backend`."""

    name: str
    kind: str  # "backend" | "peer"
    backend: Any = None
    source: str = ""  # where it comes from (module), for the report
    reason: str = ""  # why it is unavailable (backend is None)

    @property
    def available(self) -> bool:
        return self.backend is not None


_STATS = ("median", "q1", "q3", "iqr", "min", "max", "mean", "compile_s")


@dataclass
class Measurement:
    """Times in seconds per call. ``samples`` are per-call means of ``inner`` calls each."""

    runner: str
    workload: str
    status: str  # "ok" | "skipped" | "error"
    reason: str = ""
    first_call_s: float | None = None
    warmup_calls: int = 0
    warmup_s: float = 0.0
    inner: int = 0
    samples: list[float] = field(default_factory=list)
    capped: bool = False
    device_inputs: bool = False
    memory: dict[str, Any] | None = None
    flops: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "ok" and bool(self.samples)

    def stats(self) -> dict[str, float | None]:
        """median, q1, q3, iqr, min, max, mean over samples (s/call); compile = first - median."""
        if not self.samples:
            return dict.fromkeys(_STATS)
        s = np.asarray(self.samples)
        q1, med, q3 = (float(v) for v in np.percentile(s, [25, 50, 75]))
        comp = None if self.first_call_s is None else max(0.0, self.first_call_s - med)
        return dict(
            zip(_STATS, (med, q1, q3, q3 - q1, float(s.min()), float(s.max()), float(s.mean()), comp), strict=True)
        )

    @property
    def median(self) -> float | None:
        return self.stats()["median"]

    @property
    def gflops(self) -> float | None:
        med = self.median
        return self.flops / med / 1e9 if med else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stats": self.stats(), "gflops": self.gflops}


# ----------------------------------------------------------------------------- jax helpers


def is_device_array(obj: Any) -> bool:
    """True for a ``jax.Array`` (or a tuple holding one)."""
    if isinstance(obj, tuple | list):
        return any(is_device_array(o) for o in obj)
    return type(obj).__module__.startswith(("jax", "jaxlib"))


def block(out: Any) -> Any:
    """Wait for asynchronous (JAX) results; NumPy results pass through."""
    if is_device_array(out):
        import jax

        jax.block_until_ready(out)
    return out


def to_device(inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Device copies of ``inputs``; an array passed under two names (``x`` is ``pre_spike``) stays one."""
    import jax

    moved: dict[int, Any] = {}
    out = {k: moved.setdefault(id(v), jax.device_put(v)) for k, v in inputs.items()}
    jax.block_until_ready(list(out.values()))
    return out


# ----------------------------------------------------------------------------- one workload


@dataclass
class _Prepared:
    m: Measurement
    fn: Callable[[], Any]
    spent: float = 0.0  # seconds spent sampling


def _error(runner: Runner, w: Workload, err: BaseException) -> Measurement:
    if isinstance(err, NotImplementedError):
        return Measurement(runner.name, w.name, "skipped", f"not supported: {err}", flops=w.flops)
    tb = traceback.extract_tb(err.__traceback__)
    where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
    return Measurement(runner.name, w.name, "error", f"{type(err).__name__}: {err}{where}", flops=w.flops)


def native_call(be: Any, w: Workload, inputs: dict[str, Any]) -> Callable[[], Any]:
    """A call of ``w`` on ``be`` as its users make it, blocking on the result.

    A backend whose library has a native layout (PyTorch's NCHW) offers ``impl.native(op, inputs,
    geometry, params)``: it converts the inputs once, here, outside the timed region, and returns
    the call on the converted data (see :mod:`convstdp.fast.torch`). Otherwise the call goes through
    the :class:`convstdp.Backend` interface, validation included: that is what a user calls.
    """
    run = native_run(be, w, inputs)
    if run is not None:
        return lambda: block(run())
    call, case = w.operator.call, w.case
    return lambda: block(call(be, case, inputs))


def native_run(be: Any, w: Workload, inputs: dict[str, Any], **kw: Any) -> Callable[[], Any] | None:
    """``be.impl.native``'s call of ``w`` on ``inputs`` (converted once, here), or ``None`` if it has none."""
    native = getattr(be.impl, "native", None)
    if not callable(native):
        return None
    return native(w.op, inputs, w.case.geometry(), geometry.check_stdp_params(**w.case.params), **kw)


def per_call(fn: Callable[[], Any], n: int) -> float:
    """Seconds per call of ``n`` calls of ``fn`` in a row."""
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def _first_call(be: Any, w: Workload, inputs: dict[str, np.ndarray], m: Measurement) -> tuple[Callable[[], Any], Any]:
    """The call to time and the first call's outputs; the first call is timed whole (a JIT compile included).

    When the outputs are ``jax.Array`` the call is rebuilt on device copies of the inputs.
    """
    t0 = time.perf_counter()
    fn = native_call(be, w, inputs)
    out = fn()
    m.first_call_s = time.perf_counter() - t0
    if is_device_array(out):
        fn = native_call(be, w, to_device(inputs))
        m.device_inputs = True
        fn()  # untimed: whatever device-resident inputs change (a retrace) happens here
    return fn, out


def _prepare(runner: Runner, w: Workload, inputs: dict[str, np.ndarray], st: Settings) -> _Prepared | Measurement:
    """First call, warm-up (the first steady call's memory measured), inner loop sized to ``st.min_sample_s``."""
    m = Measurement(runner.name, w.name, "ok", flops=w.flops)
    try:
        fn, out = _first_call(runner.backend, w, inputs, m)
        times: list[float] = []
        steady = lambda: times.append(per_call(fn, 1))
        rss = memory.rss_peak_rise(steady) if st.memory else steady()
        m.warmup_calls, m.warmup_s = 1, times[0]
        if times[0] > st.slow_s:  # e.g. the reference on a big map: one sample is all it gets
            m.capped, m.inner, m.samples = True, 1, times[:1]
            m.reason = f"capped: one call takes {times[0]:.2f} s > {st.slow_s:g} s, sampled once"
        else:
            while m.warmup_s < st.warmup_s:
                steady()
                m.warmup_calls += 1
                m.warmup_s += times[-1]
            m.inner = max(1, min(100_000, math.ceil(st.min_sample_s / max(min(times), 1e-9))))
        if st.memory:
            m.memory = {
                "rss": rss,
                "traced": None if m.capped else memory.traced_peak(fn),
                "device": memory.device_peak(out) if m.device_inputs else None,
            }
    except Exception as err:  # reported in the table, never fatal to the run
        return _error(runner, w, err)
    return m if m.capped else _Prepared(m, fn)


def _round_robin(prepared: list[_Prepared], budget: float, st: Settings, on_round: Callable[[int], None]) -> None:
    """Sample round-robin, rotating the order each round, until each runner has its samples (GC paused)."""
    active, rnd, n = list(prepared), 0, lambda p: len(p.m.samples)
    gc_was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        while active:
            on_round(rnd + 1)
            k = rnd % len(active)
            for p in active[k:] + active[:k]:
                t0 = time.perf_counter()
                p.m.samples.append(per_call(p.fn, p.m.inner))
                p.spent += time.perf_counter() - t0
            rnd += 1
            active = [p for p in active if n(p) < st.min_repeats or (p.spent < budget and n(p) < st.max_repeats)]
    finally:
        if gc_was:
            gc.enable()


def _skipped(r: Runner, w: Workload, st: Settings) -> Measurement | None:
    """Unavailable runners, and the reference (the oracle, not a contender) above its FLOP cap, are not timed."""
    why = f"capped: {w.flops / 1e9:.3g} GFLOP per call, above the reference's {st.reference_max_flops / 1e9:g}"
    if not r.available or (r.name == "reference" and w.flops > st.reference_max_flops):
        return Measurement(r.name, w.name, "skipped", why if r.available else r.reason, flops=w.flops)
    return None


def bench_workload(
    runners: list[Runner], w: Workload, st: Settings, on_step: Callable[[str], None] | None = None
) -> list[Measurement]:
    """Measure ``w`` on every runner, interleaved. Unavailable runners are reported as skipped."""
    say = on_step or (lambda _: None)
    inputs = {a: v for a, v in make_inputs(w.case, st.seed).items() if a in w.operator.args}
    ms: list[Measurement | _Prepared] = []
    for r in runners:
        say(f"{w.name}: {r.name} (first call)")
        ms.append(_skipped(r, w, st) or _prepare(r, w, inputs, st))
    budget = st.spec_budget_s if w.group == "spec" else st.budget_s
    _round_robin([p for p in ms if isinstance(p, _Prepared)], budget, st, lambda rnd: say(f"{w.name}: round {rnd}"))
    return [p.m if isinstance(p, _Prepared) else p for p in ms]
