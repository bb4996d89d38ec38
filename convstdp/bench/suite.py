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
from convstdp.bench.verify import Check
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
    runners = [_runner(name) for name in dict.fromkeys(names)]
    return sorted(runners, key=lambda r: (r.name == "reference", r.kind == "peer"))


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
    d = {k: getattr(r, k) for k in ("name", "kind", "available", "reason", "source")}
    if r.available:
        d.update(version=r.backend.version, devices=r.backend.devices(), precision=r.backend.precision)
    return d


def _verify(runners: list[Runner], workloads: list[Workload], seed: int, say: Callable) -> dict[str, dict[str, Check]]:
    """``{runner: {workload: check}}`` for every available runner but the reference (the oracle)."""
    checks = {}
    for r in runners:
        if r.available and r.name != "reference":
            say(f"checking {r.name} against the reference")
            checks[r.name] = verify.check_runner(r.backend, workloads, seed)
    return checks


def _time(w: Workload, runners: list[Runner], checks: dict, st: Settings, on_step: Callable | None) -> list[dict]:
    """``w`` timed on every runner that agrees with the reference, as result rows with their speedups."""
    failed = {r.name: c for r in runners if (c := checks.get(r.name, {}).get(w.name)) and not c.ok}
    ms = bench_workload([r for r in runners if r.name not in failed], w, st, on_step)
    why = "disagrees with the reference: "
    ms += [Measurement(n, w.name, "error", why + c.detail, flops=w.flops) for n, c in failed.items()]
    med = {m.runner: m.median for m in ms if m.ok}
    speedups = {a: {b: tb / ta for b, tb in med.items() if b != a} for a, ta in med.items()}
    return [{**m.as_dict(), "speedup": speedups.get(m.runner, {})} for m in ms]


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
    say = on_step or (lambda _: None)
    checks = _verify(runners, workloads, settings.seed, say)
    say("probing the float32 GEMM peak")
    names = {r.name for r in runners if r.available}
    probe_kw = dict(quick=quick_probe, with_torch="torch" in names, with_jax=bool(names & {"jax", "ngclearn"}))
    load_start = env.load_average()
    peak = probe.run_probes(**probe_kw)
    results = []
    for w in workloads:
        results += _time(w, runners, checks, settings, say)
        if on_workload:
            on_workload(w)
    say("probing the float32 GEMM peak again")
    peak = probe.merge(peak, probe.run_probes(**probe_kw))  # the better of before and after the timings
    for d in results:
        d["peak_gflops"] = peak_gf = _peak_for(peak, runners, d["runner"])
        d["pct_peak"] = 100 * d["gflops"] / peak_gf if d["gflops"] and peak_gf else None
    return {
        "schema": SCHEMA,
        "environment": {**env.collect(), "load_average_start": load_start},
        "settings": asdict(settings),
        "peak": peak,
        "runners": [runner_info(r) for r in runners],
        "checks": {n: [asdict(c) for c in cs.values()] for n, cs in checks.items()},
        "workloads": [w.to_dict() for w in workloads],
        "results": results,
        "duration_s": time.perf_counter() - t_start,
    }


def _peak_for(peak: dict[str, Any], runners: list[Runner], name: str) -> float | None:
    """The GPU peak for a runner whose devices are accelerators, else the CPU peak."""
    r = next((r for r in runners if r.name == name), None)
    devs = " ".join(r.backend.devices()).lower() if r and r.available else ""
    if peak.get("gpu_peak_gflops") and any(t in devs for t in ("cuda", "gpu", "rocm")):
        return peak["gpu_peak_gflops"]
    return peak.get("cpu_peak_gflops")
