"""``convstdp conformance``: check backends against the reference (SPEC §7).

Exit 0 when every checked backend agrees, 1 on any disagreement, error or crash (or a self-test
bug that slips through), 2 on a usage error (unknown or unavailable backend, malformed case).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from convstdp import backends as _backends
from convstdp.cliargs import positive, unwritable
from convstdp.conformance import harness
from convstdp.conformance import report as rep
from convstdp.conformance import trajectory as traj
from convstdp.conformance.cases import GRIDS, Case, case_from_text, grid
from convstdp.conformance.operators import OPERATOR_NAMES
from convstdp.conformance.tolerance import POLICY
from convstdp.present import write_json
from convstdp.progress import Progress

__all__ = ["configure", "main"]


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``conformance`` options to ``parser``."""
    add = parser.add_argument
    add(
        "--backend",
        action="append",
        default=[],
        metavar="NAME",
        help="backend to check (repeatable): a registered name or package.module:factory; "
        "default: every available default backend except the reference itself",
    )
    add(
        "--grid",
        choices=(*GRIDS, "random", "trajectory"),
        default="quick",
        help="case grid: quick (CI: small cases plus a large tier that exercises every internal path), full "
        "(~1700), workloads (SPEC §8 at full size; gpu-large too when a GPU is present), random (Hypothesis; "
        "see --examples), trajectory (--steps steps of the synapse, W' feeding the next step, against the "
        "float64 reference trajectory; --case picks its one case)",
    )
    add("--steps", type=positive(int), metavar="T", help="steps of the trajectory (--grid trajectory; default 50)")
    add("--plot", metavar="FILE.png", help="--grid trajectory: write the error/bound drift curve")
    add("--examples", type=positive(int), default=50, metavar="N", help="random cases per backend (--grid random)")
    add("--seed", type=int, default=0, metavar="N", help="seed of the input values (and random grid)")
    add(
        "--case",
        action="append",
        default=[],
        metavar="TEXT",
        help="run only this case: its name or JSON form (repeatable); overrides --grid",
    )
    add("--operator", action="append", choices=OPERATOR_NAMES, default=[], help="check only this operator (repeatable)")
    add(
        "--precision",
        choices=("highest", *(p for p in POLICY if p not in ("float32", "float64"))),
        help="check every named backend at this precision (default: what the registry says for its name, "
        "e.g. bf16 for jax-bf16; never what the backend object declares)",
    )
    add("--json", metavar="FILE", help="write the full record as JSON")
    add("--report", metavar="FILE.md", help="write a Markdown report")
    add("--self-test", action="store_true", help="also run deliberately broken backends and show the grid catches each")
    add("--isolate", action="store_true", help="run each backend in a child process; a hard crash is recorded")
    add("--timeout", type=positive(float), metavar="S", help="with --isolate: kill a backend's child after S seconds")
    add("--list", action="store_true", help="list the cases of the grid and exit")
    add("--quiet", "-q", action="store_true", help="no progress bar")


@dataclass
class _Run:
    """What one ``convstdp conformance`` invocation has gathered so far."""

    args: argparse.Namespace
    cases: list[Case]
    grid_name: str
    backends: list[Any] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)
    runs: list[Any] = field(default_factory=list)
    repros: list[str] = field(default_factory=list)
    self_test: dict[str, Any] | None = None

    @property
    def ops(self) -> tuple[str, ...]:
        return tuple(self.args.operator) or OPERATOR_NAMES

    @property
    def bar_on(self) -> bool | None:
        return False if self.args.quiet else None


def _usage(msg: str) -> int:
    print(f"convstdp conformance: error: {msg}", file=sys.stderr)
    return 2


def main(args: argparse.Namespace) -> int:
    """Run the conformance suite as the options say; returns the exit code."""
    why = _option_problem(args)
    try:
        cases = [] if why else _cases(args)
    except ValueError as err:
        why = str(err)
    if why:
        return _usage(why)
    if args.list:
        print("\n".join(c.name for c in cases))
        return 0
    grid_name = "case" if args.case and args.grid != "trajectory" else args.grid
    # a backend whose loading failed because of a bug (not a missing library) fails a default run
    broken = {} if args.backend else {n: s for n, s in _backends.available_backends().items() if s[:5] == "error"}
    run = _Run(args, cases, grid_name, broken=broken)
    code = _load_backends(run)
    if code is not None:
        return code
    if grid_name == "trajectory":
        return _trajectory(run)
    if args.self_test:
        _self_test(run)
    code = _check_backends(run) if run.backends else None
    return code if code is not None else _finish(run)


def _option_problem(args: argparse.Namespace) -> str | None:
    """Why the options cannot work together (checked before any work), else ``None``."""
    if args.timeout is not None and not args.isolate:
        return "--timeout needs --isolate (it limits each backend's child process)"
    for path, option in ((args.json, "--json"), (args.report, "--report"), (args.plot, "--plot")):
        why = path and unwritable(path, option)
        if why:
            return why
    if args.grid != "trajectory":
        extra = [o for o, v in (("--steps", args.steps), ("--plot", args.plot)) if v is not None]
        return f"{extra[0]} needs --grid trajectory" if extra else None
    for option, given in (("--isolate", args.isolate), ("--operator", args.operator)):
        if given:
            return f"{option} does not apply to --grid trajectory (it runs the whole step in process)"
    return "--grid trajectory runs one case: give --case once" if len(args.case) > 1 else None


def _cases(args: argparse.Namespace) -> list[Case]:
    if args.grid == "trajectory":
        return [traj.usable_case(args.case[0] if args.case else traj.DEFAULT_CASE)]
    if args.case:
        return [case_from_text(t) for t in args.case]
    if args.grid == "random":
        return []
    return list(grid(args.grid, gpu=args.grid == "workloads" and _gpu_present()))


def _gpu_present() -> bool:
    """Whether JAX sees a GPU here (decides whether the workloads grid includes gpu-large)."""
    try:
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    except Exception:  # no JAX, or no usable backend: no GPU for us
        return False


def _load_backends(run: _Run) -> int | None:
    """Resolve the backends to check into ``run``; an exit code when that already decides the run."""
    args = run.args
    names = list(dict.fromkeys(args.backend)) or [n for n in _backends.default_backends() if n != "reference"]
    try:
        if args.isolate and args.grid != "random":  # load nothing here: an abort on import must not kill us
            unknown = [n for n in names if ":" not in n and n not in _backends.registered_backends()]
            if unknown:
                raise ValueError(
                    f"unknown backend {unknown[0]!r}; registered: {', '.join(_backends.registered_backends())}"
                )
            run.backends = [harness.NamedOnly(n) for n in names]
        else:
            run.backends, run.unavailable = harness.resolve_backends(names)
    except (ValueError, TypeError) as err:
        return _usage(str(err))
    except Exception as err:  # a backend whose code is broken (BackendError, a factory that blows up): a failure
        print(f"convstdp conformance: backend failed to load: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    if run.unavailable and args.backend:
        return _named_unavailable(run)
    if not run.backends and not args.self_test and not run.broken:
        print("convstdp conformance: no backend to check (name one with --backend)", file=sys.stderr)
        return 2 if args.backend else 0
    return None


def _named_unavailable(run: _Run) -> int:
    for reason in run.unavailable.values():
        print(f"convstdp conformance: error: {reason}", file=sys.stderr)
    return 2


def _self_test(run: _Run) -> None:
    """The planted bugs of :mod:`convstdp.conformance.broken` on the run's cases (default: quick)."""
    from convstdp.conformance.broken import BUGS, self_test

    run.cases = run.cases or list(grid("quick"))
    with Progress(len(run.cases) * (len(BUGS) + 1), "self-test", run.bar_on) as bar:
        rows, control = self_test(run.cases, seed=run.args.seed, progress=bar)
    # The workloads grid has square maps, one stride, few channel counts: it cannot expose every logic
    # bug (that is the quick grid's job); there it must catch the precision bugs, which are about size.
    only_precision = run.grid_name == "workloads"
    required = {b.id for b in BUGS if b.precision_bug or not only_precision}
    missed = [r.bug for r in rows if not r.caught and r.bug in required]
    run.self_test = {
        "caught": sum(r.caught for r in rows),
        "total": len(rows),
        "cases": len(run.cases),
        "control_passed": not control.failed,
        "control_failures": [r.message() for r in control.failed[:10]],
        "ok": not missed and not control.failed,
        "required": "precision bugs" if only_precision else "every bug",
        "rows": [r.to_dict() for r in rows],
    }
    run.runs.append(control)


def _check_backends(run: _Run) -> int | None:
    """Check every backend on the run's cases (random, isolated or in-process)."""
    args = run.args
    if run.grid_name == "random":
        return _check_random(run)
    with Progress(len(run.cases) * len(run.backends), "conformance", run.bar_on) as bar:
        kw = dict(seed=args.seed, operators=run.ops, progress=bar, precision=args.precision)
        if not args.isolate:
            run.runs += harness.run(run.backends, run.cases, **kw)
            return None
        names = [be.name for be in run.backends]
        isolated = harness.run_isolated(names, run.cases, timeout_s=args.timeout, **kw)
    for br in isolated:
        if br.info.get("status") == "unavailable":
            run.unavailable[br.name] = br.info.get("reason", "unavailable")
        else:
            run.runs.append(br)
    return _named_unavailable(run) if run.unavailable and args.backend else None


def _check_random(run: _Run) -> None:
    """The Hypothesis grid: random cases per backend; a failure is shrunk to a minimal case."""
    from convstdp.conformance.randomized import run_random

    args, seen = run.args, {}
    with Progress(args.examples * len(run.backends), "random", run.bar_on) as bar:
        for be in run.backends:
            br, minimal = run_random(
                be, examples=args.examples, seed=args.seed, operators=run.ops, progress=bar, precision=args.precision
            )
            run.runs.append(br)
            seen.update((r.case, None) for r in br.results)
            if minimal is not None:
                run.repros.append(f"{be.name}: failure shrunk to {minimal.name}; reproduce with:\n  {br.info['repro']}")
    run.cases = [case_from_text(name) for name in seen]


def _finish(run: _Run) -> int:
    """Print the summary, write ``--json``/``--report``, and return the exit code."""
    args = run.args
    real = [br for br in run.runs if not br.name.startswith("broken:")]
    # A grid meant to cover every path (quick/full, all operators) fails on a path it never exercised.
    covering = run.grid_name in ("quick", "full") and set(run.ops) == set(OPERATOR_NAMES)
    problems = [p for br in real for p in br.grid_problems(require_paths=covering)]
    problems += [f"backend {n!r} is broken (not a missing library): {why}" for n, why in run.broken.items()]
    doc = rep.to_json(
        real,
        run.cases,
        grid=run.grid_name,
        seed=args.seed,
        argv=sys.argv,
        unavailable=run.unavailable,
        self_test=run.self_test,
        problems=problems,
    )
    doc["repros"] = run.repros
    print(rep.render(doc, real, run.cases))
    if args.json:
        write_json(args.json, doc)
    if args.report:
        with open(args.report, "w") as fh:
            fh.write(rep.render(doc, real, run.cases, "md", max_failures=40))
    print("OK: every checked backend agrees with the reference" if doc["ok"] else "FAILED")
    return 0 if doc["ok"] else 1


def _trajectory(run: _Run) -> int:
    """``--grid trajectory``: ``--steps`` steps per backend, W' feeding the next step; exit 0 pass, 1 a failure."""
    args, (case,) = run.args, run.cases
    steps = args.steps or traj.DEFAULT_STEPS
    total = steps * len(run.backends) + (traj.self_test_steps(steps) if args.self_test else 0)
    with Progress(total, "trajectory", run.bar_on) as bar:
        runs = [
            traj.run_trajectory(
                be,
                case,
                steps,
                seed=args.seed,
                progress=bar,
                precision=harness.checked_precision(be, args.precision)[0],
            )
            for be in run.backends
        ]
        st = traj.self_test(case, steps, seed=args.seed, progress=bar) if args.self_test else None
    doc = traj.to_json(runs, case, steps=steps, seed=args.seed, argv=sys.argv, self_test_doc=st)
    doc["grid_problems"] = [f"backend {n!r} is broken (not a missing library): {w}" for n, w in run.broken.items()]
    doc["skipped"] = run.unavailable
    doc["ok"] = doc["ok"] and not doc["grid_problems"]
    print(traj.render(doc))
    if args.json:
        write_json(args.json, doc)
    if args.plot:
        traj.plot(doc, args.plot)
    if args.report:
        rel = os.path.relpath(args.plot, os.path.dirname(os.path.abspath(args.report))) if args.plot else None
        with open(args.report, "w") as fh:
            fh.write(traj.render(doc, "md", plot_file=rel))
    return 0 if doc["ok"] else 1
