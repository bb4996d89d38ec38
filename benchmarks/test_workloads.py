"""One benchmark per (workload, runner): the STDP step and each operator, as ``convstdp bench`` times them.

The first call (JIT compile) happens before timing; JAX-family runners get device arrays and
every timed call blocks on all outputs. The reference is skipped where one call would take
many seconds (``REFERENCE_MAX_FLOPS``, as in ``convstdp bench``).
"""

from __future__ import annotations

import pytest
from conftest import runners

from convstdp.bench.timing import Settings, is_device_array, native_call, to_device
from convstdp.bench.workloads import select
from convstdp.conformance.cases import make_inputs

REFERENCE_MAX_FLOPS = Settings().reference_max_flops  # a few seconds per call for the NumPy reference


def _has_gpu() -> bool:
    try:
        import jax

        return any(d.platform != "cpu" for d in jax.devices())
    except Exception:
        return False


WORKLOADS = select(gpu=_has_gpu())
PARAMS = [
    pytest.param(w, name, id=f"{w.name.replace('=', '')}-{name}", marks=[getattr(pytest.mark, w.group)])
    for w in WORKLOADS
    for name in runners()
]


@pytest.mark.parametrize("workload,runner_name", PARAMS)
def test_workload(benchmark, workload, runner_name) -> None:
    runner = runners()[runner_name]
    if not runner.available:
        pytest.skip(runner.reason)
    if runner_name == "reference" and workload.flops > REFERENCE_MAX_FLOPS:
        pytest.skip(f"reference capped: {workload.flops / 1e9:.1f} GFLOP per call")
    be = runner.backend
    inputs = {a: v for a, v in make_inputs(workload.case).items() if a in workload.operator.args}
    fn = native_call(be, workload, inputs)
    try:
        out = fn()  # first call: compile, outside the timing
    except NotImplementedError as err:
        pytest.skip(f"not supported: {err}")
    if is_device_array(out):
        fn = native_call(be, workload, to_device(inputs))
        fn()
    benchmark.group = workload.name
    benchmark.extra_info.update(workload.to_dict(), runner=runner_name, version=be.version)
    benchmark(fn)
    stats = getattr(benchmark, "stats", None)  # None under --benchmark-disable (a smoke run)
    if stats is not None:
        benchmark.extra_info["gflops"] = workload.flops / stats.stats.median / 1e9
