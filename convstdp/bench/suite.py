"""One benchmark run: resolve runners, verify them, probe the peak, time every workload.

The result is a plain dict (the schema of ``report.json``), written out by
:mod:`convstdp.bench.report`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from convstdp import backends as _backends
from convstdp import environment as env
from convstdp.bench import probe, verify
from convstdp.bench.timing import Measurement, Runner, Settings, bench_workload
from convstdp.bench.workloads import Workload

SCHEMA = "convstdp-bench/1"


def _runner(name: str) -> Runner:
    """A registered backend (or ``package.module:factory``) as a runner; a baseline peer when the
    registry flags it so (PyTorch, upstream ngc-learn, the reference)."""
    kind = "peer" if _backends.is_baseline(name) else "backend"
    try:
        be = _backends.get_backend(name)
    except _backends.BackendUnavailable as err:
        return Runner(name, kind, reason=str(err))
    return Runner(name, kind, be, f"{type(be.impl).__module__}.{type(be.impl).__name__}")


def resolve_runners(backend_names: Sequence[str] | None = None, peers: bool | Sequence[str] = True) -> list[Runner]:
    """Runners in report order: fast backends, then the baseline peers, the reference last.

    Without ``backend_names``: every registered backend that runs by default (unavailable ones
    are kept, with their reason, so the report says why they are missing). ``peers``: ``True`` for
    every registered baseline (:func:`convstdp.backends.is_baseline`), a list of names, or
    ``False`` for none. Peers are backends: any name ``get_backend`` takes works in either list;
    an unknown one raises ``ValueError``.
    """
    if backend_names:
        names = list(dict.fromkeys(backend_names))
    else:
        status = _backends.available_backends()
        default = set(_backends.default_backends())
        names = [n for n in status if n in default or status[n] != "ok"]
    if peers is True:
        names += [n for n in _backends.registered_backends() if _backends.is_baseline(n)]
    else:
        names += list(peers or [])
    runners = {name: _runner(name) for name in dict.fromkeys(names)}
    order = lambda r: (r.name == "reference", r.kind == "peer")  # noqa: E731
    return sorted(runners.values(), key=order)


def baselines(result: dict[str, Any]) -> list[str]:
    """The baseline peers of a run's result, in report order (what "x vs ..." columns compare with)."""
    return [r["name"] for r in result["runners"] if r["kind"] == "peer"]


def sweep_families(result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Sweep workloads by family (``batch-mid``, ``batch-large``: density; ``step``: scaling)."""
    fams: dict[str, list[dict[str, Any]]] = {}
    spec = {w["name"]: w for w in result["workloads"] if w["group"] == "spec"}
    for w in result["workloads"]:
        if w["group"] == "sweep":
            fam = w["name"].split("/")[0]
            if fam in spec and fam not in fams:  # the SPEC point is a density point too (once)
                fams[fam] = [{**spec[fam], "sweeps": [["density", spec[fam]["density"]]]}]
            fams.setdefault(fam, []).append(w)
    return fams


def runner_info(r: Runner) -> dict[str, Any]:
    d: dict[str, Any] = {
        "name": r.name,
        "kind": r.kind,
        "available": r.available,
        "reason": r.reason,
        "source": r.source,
    }
    if r.available:
        d.update(version=r.backend.version, devices=r.backend.devices(), precision=r.backend.precision)
    return d


def _speedups(ms: list[Measurement]) -> dict[str, dict[str, float]]:
    """``{runner: {other: median_other / median_runner}}`` among the runners that measured."""
    med = {m.runner: m.median for m in ms if m.ok}
    return {a: {b: tb / ta for b, tb in med.items() if b != a} for a, ta in med.items()}


def run(
    workloads: list[Workload],
    runners: list[Runner],
    settings: Settings,
    *,
    quick_probe: bool = False,
    on_step: Callable[[str], None] | None = None,
    on_workload: Callable[[Workload], None] | None = None,
) -> dict[str, Any]:
    """Verify, probe and time; returns the report dict (``report.json``'s schema)."""
    t_start = time.perf_counter()
    checks: dict[str, dict[str, verify.Check]] = {}
    for r in runners:
        if r.available and r.name != "reference":
            if on_step:
                on_step(f"checking {r.name} against the reference")
            checks[r.name] = verify.check_runner(r.backend, workloads, settings.seed)
    if on_step:
        on_step("probing the float32 GEMM peak")
    names = {r.name for r in runners if r.available}
    probe_kw = dict(
        quick=quick_probe, with_torch="torch" in names, with_jax=any(n in names for n in ("jax", "ngclearn"))
    )
    load_start = env.load_average()
    peak = probe.run_probes(**probe_kw)
    results: list[dict[str, Any]] = []
    for w in workloads:
        timed = [r for r in runners if not _failed(checks, r, w)]
        ms = bench_workload(timed, w, settings, on_step)
        for r in runners:
            if _failed(checks, r, w):
                c = checks[r.name].get(w.name)
                ms.append(
                    Measurement(r.name, w.name, "error", f"disagrees with the reference: {c.detail}", flops=w.flops)
                )
        sp = _speedups(ms)
        for m in ms:
            d = m.as_dict()
            d["speedup"] = sp.get(m.runner, {})
            results.append(d)
        if on_workload:
            on_workload(w)
    if on_step:
        on_step("probing the float32 GEMM peak again")
    peak = probe.merge(peak, probe.run_probes(**probe_kw))  # the better of before and after the timings
    for d in results:
        peak_gf = _peak_for(peak, runners, d["runner"])
        d["peak_gflops"] = peak_gf
        d["pct_peak"] = 100 * d["gflops"] / peak_gf if d["gflops"] and peak_gf else None
    environment = env.collect()
    environment["load_average_start"] = load_start
    return {
        "schema": SCHEMA,
        "environment": environment,
        "settings": asdict(settings),
        "peak": peak,
        "runners": [runner_info(r) for r in runners],
        "checks": {n: [asdict(c) for c in cs.values()] for n, cs in checks.items()},
        "workloads": [w.to_dict() for w in workloads],
        "results": results,
        "duration_s": time.perf_counter() - t_start,
    }


def _failed(checks: dict[str, dict[str, verify.Check]], r: Runner, w: Workload) -> bool:
    c = checks.get(r.name, {}).get(w.name)
    return c is not None and not c.ok


def _peak_for(peak: dict[str, Any], runners: list[Runner], name: str) -> float | None:
    """The GPU peak for a runner whose devices are accelerators, else the CPU peak."""
    r = next((r for r in runners if r.name == name), None)
    devs = " ".join(r.backend.devices()).lower() if r and r.available else ""
    if peak.get("gpu_peak_gflops") and any(t in devs for t in ("cuda", "gpu", "rocm")):
        return peak["gpu_peak_gflops"]
    return peak.get("cpu_peak_gflops")
