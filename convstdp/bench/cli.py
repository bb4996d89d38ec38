"""``convstdp bench [--backend NAME]... [--workload NAME]... [--out DIR]`` (SPEC §7).

Loaded by :mod:`convstdp.cli`; imports nothing optional until it runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from convstdp.bench.workloads import SPEC_WORKLOADS, select
from convstdp.cliargs import positive, unwritable
from convstdp.progress import Progress


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` options to ``parser``."""
    add, names, flag = parser.add_argument, {"action": "append", "metavar": "NAME"}, {"action": "store_true"}
    add(
        "--backend",
        **names,
        help="backend to time (repeatable; any name get_backend takes, peers such as torch included); "
        "default: every available backend",
    )
    add(
        "--workload",
        **names,
        help="workload name or glob, repeatable: "
        + ", ".join(w.name for w in SPEC_WORKLOADS)
        + ", 'batch-mid/density=1', 'step/base', 'deconv2d/batch-mid', 'step/*' ... (default: SPEC §8 "
        "without gpu-large on CPU, plus the sweeps)",
    )
    sweeps_help = "include the scaling sweeps in the default workload set (default: yes)"
    add("--sweeps", action=argparse.BooleanOptionalAction, default=True, help=sweeps_help)
    add(
        "--peer",
        **names,
        help="peer to time next to the backends (repeatable; any backend name): default every registered "
        "baseline (ngclearn, torch, reference) that is installed",
    )
    add("--no-peers", **flag, help="time only the named backends")
    add("--out", metavar="DIR", help="write report.md, report.json, report.html and PNG plots here")
    add("--quick", **flag, help="few, short samples (CI, tests): finishes in seconds on small workloads")
    budget_help = "sampling seconds per runner and sweep workload (SPEC workloads get 5x)"
    add("--budget", type=positive(float), metavar="S", help=budget_help)
    add("--repeats", type=positive(int), metavar="N", help="at most N samples per runner and workload")
    add("--seed", type=int, default=0, help="seed of the generated inputs (default 0)")
    add("--no-memory", **flag, help="skip the peak-memory measurement")
    add("--no-plots", **flag, help="write no PNGs (and no images in report.html)")
    add("--no-progress", **flag, help="no progress bar")


def _settings(args: argparse.Namespace) -> Any:
    from convstdp.bench.timing import Settings

    st = Settings.quick() if args.quick else Settings()
    if args.budget is not None:
        st.budget_s, st.spec_budget_s = args.budget, 5 * args.budget
    if args.repeats is not None:
        st.max_repeats = max(1, args.repeats)
        st.min_repeats = min(st.min_repeats, st.max_repeats)
    st.seed, st.memory = args.seed, not args.no_memory
    return st


def _has_gpu() -> bool:
    """A JAX accelerator is present (only asked if jax is already imported by a backend)."""
    jax = sys.modules.get("jax")
    try:
        return bool(jax) and any(d.platform != "cpu" for d in jax.devices())
    except Exception:
        return False


def _fail(message: str, code: int = 2) -> int:
    print(f"convstdp bench: {message}", file=sys.stderr)
    return code


def main(args: argparse.Namespace) -> int:
    """Run the benchmark; print the summary; write the report when ``--out`` is given."""
    from convstdp.bench import report, suite

    why = args.out and unwritable(args.out, "--out", directory=True)
    if why:
        return _fail(f"error: {why}")
    try:
        runners = suite.resolve_runners(args.backend, False if args.no_peers else (args.peer or True))
    except ValueError as err:
        return _fail(str(err))
    if not any(r.available for r in runners):
        return _fail("no runnable backend: " + "; ".join(f"{r.name}: {r.reason}" for r in runners), 1)
    try:
        workloads = select(args.workload, sweeps=args.sweeps, gpu=_has_gpu())  # after the backends: jax imported
    except ValueError as err:
        return _fail(str(err))
    with Progress(len(workloads), "bench", False if args.no_progress else None, lines=True) as prog:
        result = suite.run(
            workloads,
            runners,
            _settings(args),
            quick_probe=args.quick,
            on_step=prog.describe,
            on_workload=lambda w: prog.advance(w.name),
        )
    print(report.summary_text(result))
    if args.out:
        paths = report.write(result, args.out, plots=not args.no_plots)
        print(f"\nwrote {', '.join(str(p) for p in paths)}")
    return 1 if any(r["status"] == "error" for r in result["results"]) else 0
