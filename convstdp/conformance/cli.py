"""``convstdp conformance``: check backends against the reference (SPEC §7).

Exit 0 when every checked backend agrees, 1 on any disagreement, error or crash (or a self-test
bug that slips through), 2 on a usage error (unknown or unavailable backend, malformed case).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import Any

from convstdp import backends as _backends
from convstdp.cliargs import positive, unwritable
from convstdp.conformance.cases import GRIDS, Case, case_from_text, grid
from convstdp.conformance.operators import OPERATOR_NAMES
from convstdp.conformance.tolerance import POLICY
from convstdp.present import table, write_json
from convstdp.progress import Progress

__all__ = ["configure", "main"]


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``conformance`` options to ``parser``."""
    parser.add_argument(
        "--backend",
        action="append",
        default=[],
        metavar="NAME",
        help="backend to check (repeatable): a registered name or package.module:factory; "
        "default: every available default backend except the reference itself",
    )
    parser.add_argument(
        "--grid",
        choices=(*GRIDS, "random", "trajectory"),
        default="quick",
        help="case grid: quick (CI: small cases plus a large tier that exercises every internal path), "
        "full (~1700), workloads (SPEC §8 at full size; gpu-large too when a GPU is present), "
        "random (Hypothesis; see --examples), trajectory (--steps steps of the synapse, W' feeding the "
        "next step, against the float64 reference trajectory; --case picks its one case)",
    )
    parser.add_argument(
        "--steps",
        type=positive(int),
        default=None,
        metavar="T",
        help="steps of the trajectory (--grid trajectory; default 50)",
    )
    parser.add_argument("--plot", metavar="FILE.png", help="--grid trajectory: write the error/bound drift curve")
    parser.add_argument(
        "--examples", type=positive(int), default=50, metavar="N", help="random cases per backend (--grid random)"
    )
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the input values (and random grid)")
    parser.add_argument(
        "--case",
        action="append",
        default=[],
        metavar="TEXT",
        help="run only this case: its name or JSON form (repeatable); overrides --grid",
    )
    parser.add_argument(
        "--operator", action="append", choices=OPERATOR_NAMES, default=[], help="check only this operator (repeatable)"
    )
    parser.add_argument(
        "--precision",
        choices=("highest", *(p for p in POLICY if p not in ("float32", "float64"))),
        default=None,
        help="check every named backend at this precision (default: what the registry says for its name, "
        "e.g. bf16 for jax-bf16; never what the backend object declares)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the full record as JSON")
    parser.add_argument("--report", metavar="FILE.md", help="write a Markdown report")
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="also run deliberately broken backends and show the grid catches each one",
    )
    parser.add_argument(
        "--isolate",
        action="store_true",
        help="run each backend in a child process; a hard crash is recorded, the run goes on",
    )
    parser.add_argument(
        "--timeout",
        type=positive(float),
        default=None,
        metavar="S",
        help="with --isolate: kill a backend's child after S seconds",
    )
    parser.add_argument("--list", action="store_true", help="list the cases of the grid and exit")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    parser.add_argument("--worker-cases", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)


def _usage(msg: str) -> int:
    print(f"convstdp conformance: error: {msg}", file=sys.stderr)
    return 2


def _broken_backends() -> dict[str, str]:
    """Registered default backends whose loading failed because of a bug (not a missing library)."""
    return {n: s for n, s in _backends.available_backends().items() if s.startswith("error")}


def _select_backends(names: list[str]) -> list[str]:
    """The named backends (deduplicated), else every available default one but the reference."""
    if names:
        return list(dict.fromkeys(names))
    return [n for n in _backends.default_backends() if n != "reference"]


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    print(table(header, rows))


def _cases(args: argparse.Namespace) -> tuple[list[Case], str]:
    if args.case:
        return [case_from_text(t) for t in args.case], "case"
    if args.grid == "random":
        return [], "random"
    return list(grid(args.grid, gpu=_gpu_present() if args.grid == "workloads" else False)), args.grid


def _gpu_present() -> bool:
    """Whether JAX sees a GPU here (decides whether the workloads grid includes gpu-large)."""
    try:
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    except Exception:  # no JAX, or no usable backend: no GPU for us
        return False


def _load(args: argparse.Namespace, names: list[str]) -> tuple[list[Any], dict[str, str]]:
    from convstdp.conformance import harness

    if args.isolate and args.grid != "random":
        # load nothing here: a backend that aborts on import must not take the parent down
        unknown = [n for n in names if ":" not in n and n not in _backends.registered_backends()]
        if unknown:
            raise ValueError(
                f"unknown backend {unknown[0]!r}; registered: {', '.join(_backends.registered_backends())}"
            )
        return [harness.NamedOnly(n) for n in names], {}
    return harness.resolve_backends(names)


def _self_test(args: argparse.Namespace, cases: list[Case], progress_on: bool | None) -> tuple[dict[str, Any], Any]:
    from convstdp.conformance import report as rep
    from convstdp.conformance.broken import BUGS, self_test

    st_cases = cases or list(grid("quick"))
    bar = Progress(len(st_cases) * (len(BUGS) + 1), "self-test", progress_on)
    rows, control = self_test(st_cases, seed=args.seed, progress=bar)
    bar.close()
    caught = sum(r.caught for r in rows)
    # The workloads grid has square maps, one stride, few channel counts: it cannot expose every logic
    # bug (that is the quick grid's job); there it must catch the precision bugs, which are about size.
    only_precision = args.grid == "workloads" and not args.case
    precision_bugs = sorted(b.id for b in BUGS if b.precision_bug)
    missed = [r.bug for r in rows if not r.caught and (not only_precision or r.bug in precision_bugs)]
    print(f"Self-test: {len(BUGS)} broken backends on {len(st_cases)} cases (each stops at its first failure)")
    _print_table(
        ["bug", "caught", "check", "first caught by", "err/bound", "cases run"],
        [
            [
                r.bug,
                "yes" if r.caught else "NO",
                r.check,
                (f"{r.operator} [{r.case}]" if r.case else r.first[:60]) if r.caught else "-",
                rep.self_test_ratio(r.to_dict()),
                str(r.cases_run),
            ]
            for r in rows
        ],
    )
    control_ok = not control.failed
    if not control_ok:
        print("control (the reference wrapper, no bug) FAILED:")
        for r in control.failed[:10]:
            print("  " + r.message())
    print(f"caught {caught}/{len(rows)}" + ("" if control_ok else "  (control failed)"))
    if only_precision:
        print("(on the workloads grid only the precision bugs must be caught: " + ", ".join(precision_bugs) + ")")
    doc = {
        "caught": caught,
        "total": len(rows),
        "cases": len(st_cases),
        "control_passed": control_ok,
        "ok": not missed and control_ok,
        "required": "precision bugs" if only_precision else "every bug",
        "rows": [r.to_dict() for r in rows],
    }
    return doc, control


@dataclass
class _Run:
    """What one ``convstdp conformance`` invocation has gathered so far."""

    args: argparse.Namespace
    ops: tuple[str, ...]
    cases: list[Case]
    grid_name: str
    backends: list[Any] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)
    runs: list[Any] = field(default_factory=list)
    repros: list[str] = field(default_factory=list)
    self_test: dict[str, Any] | None = None

    @property
    def progress_on(self) -> bool | None:
        return False if self.args.quiet else None


def main(args: argparse.Namespace) -> int:
    """Run the conformance suite as the options say; returns the exit code."""
    ops = tuple(args.operator) or OPERATOR_NAMES
    if args.worker_cases:
        return _worker(args, ops)
    why = _option_problem(args)
    if why:
        return _usage(why)
    if args.grid == "trajectory":
        return _trajectory(args)
    try:
        cases, grid_name = _cases(args)
    except ValueError as err:
        return _usage(str(err))
    if args.list:
        print("\n".join(c.name for c in cases))
        return 0
    run = _Run(args, ops, cases, grid_name, broken={} if args.backend else _broken_backends())
    code = _load_backends(run)
    if code is not None:
        return code
    if args.self_test:
        run.self_test, control = _self_test(args, cases, run.progress_on)
        run.runs.append(control)
        run.cases = run.cases or list(grid("quick"))
    code = _check_backends(run) if run.backends else None
    return code if code is not None else _finish(run)


def _worker(args: argparse.Namespace, ops: tuple[str, ...]) -> int:
    """The child process of ``--isolate``: check the listed cases on one backend."""
    from convstdp.conformance import harness

    with open(args.worker_cases) as fh:
        names = json.load(fh)
    try:
        return harness.worker(
            args.backend[0], names, args.worker_out, seed=args.seed, operators=ops, precision=args.precision
        )
    except (_backends.BackendUnavailable, ValueError) as err:
        print(str(err), file=sys.stderr)
        return 2


def _option_problem(args: argparse.Namespace) -> str | None:
    """Why the options cannot work together (checked before any work), else ``None``."""
    if args.timeout is not None and not args.isolate:
        return "--timeout needs --isolate (it limits each backend's child process)"
    for path, option in ((args.json, "--json"), (args.report, "--report"), (args.plot, "--plot")):
        why = path and unwritable(path, option)
        if why:
            return why
    return _trajectory_problem(args)


def _trajectory_problem(args: argparse.Namespace) -> str | None:
    """The options that belong only to, or do not work with, ``--grid trajectory``."""
    if args.grid != "trajectory":
        extra = [o for o, v in (("--steps", args.steps), ("--plot", args.plot)) if v is not None]
        return f"{extra[0]} needs --grid trajectory" if extra else None
    for option, given in (("--isolate", args.isolate), ("--operator", args.operator)):
        if given:
            return f"{option} does not apply to --grid trajectory (it runs the whole step in process)"
    if len(args.case) > 1:
        return "--grid trajectory runs one case: give --case once"
    return None


def _trajectory(args: argparse.Namespace) -> int:
    """``--grid trajectory``: ``--steps`` steps per backend, W' feeding the next step
    (:mod:`convstdp.conformance.trajectory`); exit 0 pass, 1 a failure, 2 a usage error."""
    from convstdp.conformance import trajectory as traj

    try:
        case = traj.usable_case(args.case[0] if args.case else traj.DEFAULT_CASE)
    except ValueError as err:
        return _usage(str(err))
    if args.list:
        print(case.name)
        return 0
    run = _Run(args, (), [case], "trajectory", broken={} if args.backend else _broken_backends())
    code = _load_backends(run)
    if code is not None:
        return code
    steps = args.steps or traj.DEFAULT_STEPS
    total = steps * len(run.backends) + (traj.self_test_steps(steps) if args.self_test else 0)
    with Progress(total, "trajectory", run.progress_on) as bar:
        runs = [
            traj.run_trajectory(be, case, steps, seed=args.seed, precision=_precision(be, args), progress=bar)
            for be in run.backends
        ]
        st = traj.self_test(case, steps, seed=args.seed, progress=bar) if args.self_test else None
    doc = traj.to_json(runs, case, steps=steps, seed=args.seed, argv=sys.argv, self_test_doc=st)
    doc["grid_problems"] = [f"backend {n!r} is broken (not a missing library): {w}" for n, w in run.broken.items()]
    doc["ok"] = doc["ok"] and not doc["grid_problems"]
    _print_trajectory(doc, run.unavailable)
    _write_trajectory(args, doc)
    return 0 if doc["ok"] else 1


def _precision(be: Any, args: argparse.Namespace) -> str:
    from convstdp.conformance.harness import checked_precision

    return checked_precision(be, args.precision)[0]


def _print_trajectory(doc: dict[str, Any], unavailable: dict[str, str]) -> None:
    from convstdp.conformance import trajectory as traj

    print(f"\nTrajectory conformance: {doc['case']['name']}, {doc['steps']} steps, seed {doc['seed']}")
    if doc["runs"]:
        print("Worst error/bound per output over the trajectory (pass: <= 1 at every step):")
        print(traj.summary_table(doc["runs"]))
    if doc["self_test"]:
        print("\nSelf-test (planted bugs that pass a single call; the trajectory must catch them):")
        print(traj.self_test_table(doc["self_test"]))
    for p in doc["grid_problems"]:
        print(f"grid problem: {p}")
    for name, reason in unavailable.items():
        print(f"skipped {name}: {reason}")
    print("\nOK: every trajectory stays within its bound" if doc["ok"] else "\nFAILED")


def _write_trajectory(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    import os

    from convstdp.conformance import trajectory as traj

    if args.json:
        write_json(args.json, doc)
    if args.plot:
        traj.plot(doc, args.plot)
    if args.report:
        rel = os.path.relpath(args.plot, os.path.dirname(os.path.abspath(args.report))) if args.plot else None
        with open(args.report, "w") as fh:
            fh.write(traj.markdown(doc, plot_file=rel))


def _load_backends(run: _Run) -> int | None:
    """Resolve the backends to check into ``run``; an exit code when that already decides the run."""
    args = run.args
    try:
        run.backends, run.unavailable = _load(args, _select_backends(args.backend))
    except (ValueError, TypeError) as err:
        return _usage(str(err))
    except Exception as err:  # a backend whose code is broken (BackendError, a factory that blows up): a failure
        print(f"convstdp conformance: backend failed to load: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    if run.unavailable and args.backend:
        return _named_unavailable(run)
    if not run.backends and not args.self_test and not run.broken:
        print("convstdp conformance: no backend to check (name one with --backend)", file=sys.stderr)
        return 0 if not args.backend else 2
    return None


def _named_unavailable(run: _Run) -> int:
    for reason in run.unavailable.values():
        print(f"convstdp conformance: error: {reason}", file=sys.stderr)
    return 2


def _check_backends(run: _Run) -> int | None:
    """Check every backend on the run's cases (random, isolated or in-process)."""
    from convstdp.conformance import harness

    args, n = run.args, len(run.backends)
    if run.grid_name == "random":
        _check_random(run)
        return None
    with Progress(len(run.cases) * n, "conformance", run.progress_on) as bar:
        kw = dict(seed=args.seed, operators=run.ops, progress=bar, precision=args.precision)
        if not args.isolate:
            run.runs += harness.run(run.backends, run.cases, **kw)
            return None
        iso = harness.run_isolated([be.name for be in run.backends], run.cases, timeout_s=args.timeout, **kw)
    for br in iso:
        if br.info.get("status") == "unavailable":
            run.unavailable[br.name] = br.info.get("reason", "unavailable")
        else:
            run.runs.append(br)
    return _named_unavailable(run) if run.unavailable and args.backend else None


def _check_random(run: _Run) -> None:
    """The Hypothesis grid: random cases per backend; a failure is shrunk to a minimal case."""
    from convstdp.conformance.randomized import run_random

    args, seen = run.args, {}
    with Progress(args.examples * len(run.backends), "random", run.progress_on) as bar:
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
    """Summarise, write ``--json``/``--report``, and return the exit code."""
    from convstdp.conformance import report as rep

    args = run.args
    real = [br for br in run.runs if not br.name.startswith("broken:")]
    # A grid meant to cover every path (quick/full, all operators) fails on a path it never exercised.
    covering = run.grid_name in ("quick", "full") and set(run.ops) == set(OPERATOR_NAMES)
    problems = [p for br in real for p in br.grid_problems(require_paths=covering)]
    problems += [f"backend {n!r} is broken (not a missing library): {why}" for n, why in run.broken.items()]
    _print_summary(real, run.cases, run.grid_name, args.seed, run.repros, run.unavailable, problems)
    ok = not any(br.failed for br in real) and not problems and (run.self_test is None or run.self_test["ok"])
    if args.json or args.report:
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
        doc["ok"] = ok
        if args.json:
            write_json(args.json, doc)
        if args.report:
            with open(args.report, "w") as fh:
                fh.write(rep.markdown(doc, real, run.cases))
    print("\nOK: every checked backend agrees with the reference" if ok else "\nFAILED")
    return 0 if ok else 1


def _print_summary(
    real: list[Any],
    cases: list[Case],
    grid_name: str,
    seed: int,
    repros: list[str],
    unavailable: dict[str, str],
    problems: list[str],
) -> None:
    from convstdp.conformance import report as rep

    if real:
        print(f"\nConformance: {len(cases)} cases ({grid_name} grid, seed {seed})")
        _print_table(*rep.summary_table(rep.summarize(real)))
        t_header, t_body = rep.tier_table(real, cases)
        if t_body:
            print("\nWorst error/bound by size tier (cases):")
            _print_table(t_header, t_body)
        c_header, c_body = rep.coverage_table(real)
        if c_body:
            print("\nPath coverage (cases that exercised each internal path):")
            _print_table(c_header, c_body)
        for br in real:
            extra = f"; first case {br.first_case_s:.2f} s (warm-up)" if br.first_case_s else ""
            src = f"checked at {br.info.get('precision', 'highest')} ({br.info.get('precision_source', 'registry')})"
            print(f"{br.name}: {br.seconds:.2f} s{extra}; {src}")
    failures = [r for br in real for r in br.results if r.failed]
    if failures:
        print(f"\n{len(failures)} failure(s):")
        for r in failures[:20]:
            print("  " + r.message())
        if len(failures) > 20:
            print(f"  ... and {len(failures) - 20} more (--json/--report for all)")
        for line in repros:
            print(line)
        if grid_name != "random":
            print(
                f"reproduce one: convstdp conformance --backend {failures[0].backend} "
                f"--case '{failures[0].case}' --seed {seed}"
            )
    for p in problems:
        print(f"grid problem: {p}")
    for name, reason in unavailable.items():
        print(f"skipped {name}: {reason}")
