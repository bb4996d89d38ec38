"""The device-count axis of the sharded JAX backend (SPEC §10): overhead and correctness, not speed.

For 1, 2 and 4 simulated CPU devices (one child process per count, each started with
``XLA_FLAGS=--xla_force_host_platform_device_count=P``), the SPEC §8 step on a workload of
:data:`convstdp.bench.workloads.SPEC_WORKLOADS` (default ``batch-mid``) is

- checked at full size against the reference through the conformance harness's checks and
  tolerance (:func:`convstdp.bench.verify.check`) for ``jax``, ``jax-sharded`` and ``jax-sharded-det``;
- timed for the three in the same process, after warm-up, in interleaved rounds (median per call),
  each on inputs placed as its users hold them: ``jax`` on the default device, the sharded
  backends batch-sharded over the mesh (the kernel replicated).

Simulated devices share the host's cores, so more devices cannot be faster here: the figures
measure what sharding costs (padding, collectives, per-device dispatch), and that one device
costs what the unsharded backend does.

    NUMBA_CACHE_DIR=/tmp/nb python3 scripts/sharded_devices.py [--devices 1,2,4] [--workload batch-mid]
        [--rounds 7] [--calls 3] [--out reports/cpu-2core/sharded-devices]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BACKENDS = ("jax", "jax-sharded", "jax-sharded-det")


def _placed(name: str, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """``inputs`` on device: default device for ``jax``; batch-sharded (kernel replicated) otherwise."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    from convstdp.fast.jax_sharded import make_mesh, padded_batch

    if name == "jax":
        return {k: jax.device_put(v) for k, v in inputs.items()}
    mesh = make_mesh()
    out = {}
    for k, v in inputs.items():
        even = v.ndim == 4 and padded_batch(v.shape[0], mesh.size) == v.shape[0]
        spec = PartitionSpec(mesh.axis_names) if k != "kernel" and even else PartitionSpec()
        out[k] = jax.device_put(v, NamedSharding(mesh, spec))
    return out


def _time_rounds(calls: dict[str, Any], rounds: int, per_round: int) -> dict[str, float]:
    """Median seconds per call of each callable, rounds interleaved (round-robin) after 3 warm-up calls."""
    samples: dict[str, list[float]] = {n: [] for n in calls}
    for fn in calls.values():
        for _ in range(3):
            fn()
    for _ in range(rounds):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            for _ in range(per_round):
                fn()
            samples[name].append((time.perf_counter() - t0) / per_round)
    return {n: float(np.median(s)) for n, s in samples.items()}


def worker(workload: str, rounds: int, per_round: int) -> dict[str, Any]:
    """In a child with P devices: verify and time the step on the three backends → a JSON-able record."""
    import jax

    from convstdp import get_backend
    from convstdp.bench import verify
    from convstdp.bench.timing import block
    from convstdp.bench.workloads import SPEC_WORKLOADS
    from convstdp.conformance.cases import make_inputs

    w = next(v for v in SPEC_WORKLOADS if v.name == workload)
    record: dict[str, Any] = {"devices": jax.device_count(), "workload": workload, "case": w.case.name}
    inputs = make_inputs(w.case, 0)
    calls, checks = {}, {}
    for name in BACKENDS:
        be = get_backend(name)
        c = verify.check(be, w)
        checks[name] = {"ok": c.ok, "worst_err_over_bound": c.worst, "detail": c.detail, "paths": c.paths}
        placed = _placed(name, inputs)
        calls[name] = lambda be=be, placed=placed: block(w.operator.call(be, w.case, placed))
    record["checks"] = checks
    record["seconds"] = _time_rounds(calls, rounds, per_round)
    record["version"] = get_backend("jax-sharded").version
    return record


def _run_child(devices: int, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    cmd = [sys.executable, __file__, "--worker", "--workload", args.workload]
    cmd += ["--rounds", str(args.rounds), "--calls", str(args.calls)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{devices}-device child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _markdown(records: list[dict[str, Any]], args: argparse.Namespace) -> str:
    from convstdp.present import fmt_num, table

    rows = []
    for r in records:
        s, ck = r["seconds"], r["checks"]
        base = s["jax"]
        rows.append(
            [r["devices"], f"{1e3 * base:.2f}"]
            + [f"{1e3 * s[n]:.2f} ({s[n] / base:.2f}x)" for n in BACKENDS[1:]]
            + [f"{'pass' if ck[n]['ok'] else 'FAIL'} {fmt_num(ck[n]['worst_err_over_bound'])}" for n in BACKENDS]
        )
    head = ["devices", "jax ms", "jax-sharded ms (vs jax)", "jax-sharded-det ms (vs jax)"]
    head += [f"{n} check (worst err/bound)" for n in BACKENDS]
    return "\n".join(
        [
            f"# Sharded JAX backend: device-count axis ({args.workload}, stdp_step)",
            "",
            f"Case `{records[0]['case']}`; simulated CPU devices "
            "(`XLA_FLAGS=--xla_force_host_platform_device_count=P`, one process per count) sharing this "
            "host's cores, so this measures overhead and correctness, not speed. Median per call over "
            f"{args.rounds} interleaved rounds of {args.calls} calls after warm-up; `jax` and the sharded "
            "backends timed in the same process. Checks: the conformance tolerance at full size "
            "(`convstdp.bench.verify.check`, error/bound <= 1 passes).",
            "",
            table(head, rows, "md"),
            "",
            f"Version: {records[-1]['version']}. Produced by `scripts/sharded_devices.py`.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--devices", default="1,2,4", help="comma-separated simulated device counts")
    p.add_argument("--workload", default="batch-mid", help="a SPEC §8 workload name")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=3, help="calls per round")
    p.add_argument("--out", default="reports/cpu-2core/sharded-devices", help="path stem of the .md/.json")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.workload, args.rounds, args.calls)))
        return 0
    records = [_run_child(int(d), args) for d in args.devices.split(",")]
    md = _markdown(records, args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(md)
    out.with_suffix(".json").write_text(json.dumps({"workload": args.workload, "records": records}, indent=1))
    print(md)
    failed = [r["devices"] for r in records if not all(c["ok"] for c in r["checks"].values())]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
