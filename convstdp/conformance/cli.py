"""``convstdp conformance``: check backends against the reference (SPEC §7).

Exit 0 when every checked backend agrees, 1 on any disagreement, error or crash (or a self-test
bug that slips through), 2 on a usage error (unknown or unavailable backend, malformed case).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from convstdp import backends as _backends
from convstdp.cliargs import positive, unwritable
from convstdp.conformance.cases import GRIDS, Case, case_from_text, grid
from convstdp.conformance.operators import OPERATOR_NAMES
from convstdp.conformance.tolerance import POLICY
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
        choices=(*GRIDS, "random"),
        default="quick",
        help="case grid: quick (CI: small cases plus a large tier that exercises every internal path), "
        "full (~1700), workloads (SPEC §8 at full size; gpu-large too when a GPU is present), "
        "random (Hypothesis; see --examples)",
    )
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
    from convstdp.cli import format_table

    print(format_table(header, rows))


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


def main(args: argparse.Namespace) -> int:
    """Run the conformance suite as the options say; returns the exit code."""
    from convstdp.conformance import harness
    from convstdp.conformance import report as rep

    ops = tuple(args.operator) or OPERATOR_NAMES
    if args.worker_cases:
        with open(args.worker_cases) as fh:
            names = json.load(fh)
        try:
            return harness.worker(
                args.backend[0], names, args.worker_out, seed=args.seed, operators=ops, precision=args.precision
            )
        except (_backends.BackendUnavailable, ValueError) as err:
            print(str(err), file=sys.stderr)
            return 2
    if args.timeout is not None and not args.isolate:
        return _usage("--timeout needs --isolate (it limits each backend's child process)")
    for path, option in ((args.json, "--json"), (args.report, "--report")):
        why = path and unwritable(path, option)
        if why:
            return _usage(why)
    try:
        cases, grid_name = _cases(args)
    except ValueError as err:
        return _usage(str(err))
    if args.list:
        for c in cases:
            print(c.name)
        return 0

    broken = {} if args.backend else _broken_backends()
    names = _select_backends(args.backend)
    try:
        backends, unavailable = _load(args, names)
    except (ValueError, TypeError) as err:
        return _usage(str(err))
    except Exception as err:  # a backend whose code is broken (BackendError, a factory that blows up): a failure
        print(f"convstdp conformance: backend failed to load: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    if unavailable and args.backend:
        for reason in unavailable.values():
            print(f"convstdp conformance: error: {reason}", file=sys.stderr)
        return 2
    if not backends and not args.self_test and not broken:
        print("convstdp conformance: no backend to check (name one with --backend)", file=sys.stderr)
        return 0 if not args.backend else 2

    runs: list[harness.BackendRun] = []
    self_test_doc: dict[str, Any] | None = None
    progress_on = None if not args.quiet else False

    if args.self_test:
        self_test_doc, control = _self_test(args, cases, progress_on)
        runs.append(control)
        if not cases:
            cases = list(grid("quick"))

    repros: list[str] = []
    if backends:
        if grid_name == "random":
            from convstdp.conformance.randomized import run_random

            random_cases: dict[str, Case] = {}
            bar = Progress(args.examples * len(backends), "random", progress_on)
            for be in backends:
                br, minimal = run_random(
                    be, examples=args.examples, seed=args.seed, operators=ops, progress=bar, precision=args.precision
                )
                runs.append(br)
                for r in br.results:
                    random_cases.setdefault(r.case, case_from_text(r.case))
                if minimal is not None:
                    repros.append(f"{be.name}: failure shrunk to {minimal.name}; reproduce with:\n  {br.info['repro']}")
            bar.close()
            cases = list(random_cases.values())
        elif args.isolate:
            bar = Progress(len(cases) * len(backends), "conformance", progress_on)
            iso = harness.run_isolated(
                [be.name for be in backends],
                cases,
                seed=args.seed,
                operators=ops,
                progress=bar,
                timeout_s=args.timeout,
                precision=args.precision,
            )
            bar.close()
            for br in iso:
                if br.info.get("status") == "unavailable":
                    unavailable[br.name] = br.info.get("reason", "unavailable")
                else:
                    runs.append(br)
            if unavailable and args.backend:
                for reason in unavailable.values():
                    print(f"convstdp conformance: error: {reason}", file=sys.stderr)
                return 2
        else:
            bar = Progress(len(cases) * len(backends), "conformance", progress_on)
            runs += harness.run(backends, cases, seed=args.seed, operators=ops, progress=bar, precision=args.precision)
            bar.close()

    real = [br for br in runs if not br.name.startswith("broken:")]
    # A grid meant to cover every path (quick/full, all operators) fails on a path it never exercised.
    covering = grid_name in ("quick", "full") and set(ops) == set(OPERATOR_NAMES)
    problems = [p for br in real for p in br.grid_problems(require_paths=covering)]
    problems += [f"backend {n!r} is broken (not a missing library): {why}" for n, why in broken.items()]
    _print_summary(real, cases, grid_name, args.seed, repros, unavailable, problems)

    ok = not any(br.failed for br in real) and not problems and (self_test_doc is None or self_test_doc["ok"])
    if args.json or args.report:
        doc = rep.to_json(
            real,
            cases,
            grid=grid_name,
            seed=args.seed,
            argv=sys.argv,
            unavailable=unavailable,
            self_test=self_test_doc,
            problems=problems,
        )
        doc["ok"] = ok
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(doc, fh, indent=1)
        if args.report:
            with open(args.report, "w") as fh:
                fh.write(rep.markdown(doc, real, cases))
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
