"""The harness loop: cases × backends × operators, every failure recorded, the run goes on.

:func:`run` computes each case's expectation once (the reference in float64) and checks every
backend against it. :func:`run_isolated` runs each backend in a child process
(``python -m convstdp conformance --worker ...``): a hard abort (XLA, a segfault) is recorded as
a ``crash`` of the case in flight, and the child is restarted after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from convstdp import backends as _backends
from convstdp import paths as _paths
from convstdp.conformance.cases import Case, make_inputs
from convstdp.conformance.checks import OPERATOR_NAMES, Result, check_case, expect
from convstdp.present import dumps
from convstdp.progress import Progress

__all__ = ["BackendRun", "run", "run_isolated", "Progress", "resolve_backends"]


@dataclass
class BackendRun:
    """One backend's share of a run: its results and timings (``first_case_s`` holds JIT warm-up)."""

    name: str
    results: list[Result] = field(default_factory=list)
    seconds: float = 0.0
    first_case_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    stopped_early: bool = False

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.failed]

    @property
    def checked(self) -> int:
        """Cases this backend was actually checked on (not unsupported, not crashed before a verdict)."""
        return len({r.case for r in self.results if r.status in ("pass", "fail", "error")})

    def path_coverage(self) -> dict[str, int]:
        """``{path: cases that exercised it}`` for every declared path (0 = never exercised) and every
        path noted though undeclared. A backend that declares none is one path per operator."""
        declared = self.info.get("paths") or []
        seen: dict[str, set[str]] = {p: set() for p in declared}
        for r in self.results:
            taken = r.paths if declared else ([r.operator] if r.status in ("pass", "fail") else [])
            for p in taken:
                seen.setdefault(p, set()).add(r.case)
        if not declared:
            for op in {r.operator for r in self.results}:
                seen.setdefault(op, set())
        return {p: len(c) for p, c in sorted(seen.items())}

    def grid_problems(self, *, require_paths: bool) -> list[str]:
        """What makes this run fail as a whole: no case checked, a declared path never exercised
        (when ``require_paths``: a grid meant to cover every path), an undeclared path noted."""
        out = []
        if self.info.get("status", "ok") == "ok" and self.checked == 0:
            out.append(f"{self.name}: checked no case (every case unsupported, or none ran): a backend must check one")
        declared = set(self.info.get("paths") or [])
        cov = self.path_coverage()
        if declared:
            undeclared = sorted(p for p in cov if p not in declared)
            if undeclared:
                out.append(f"{self.name}: noted path(s) it does not declare: {', '.join(undeclared)}")
            missed = sorted(p for p in declared if cov.get(p, 0) == 0)
            if require_paths and missed:
                out.append(f"{self.name}: the grid exercised no case on path(s) {', '.join(missed)}")
        return out


def checked_precision(be: Any, override: str | None = None) -> tuple[str, str]:
    """``(precision, source)`` a backend is checked at: the user's (``--precision``), else the
    registry's for the name it is registered under; never what the object under test declares."""
    if override:
        return override.lower(), "user (--precision)"
    return _backends.checked_precision(be.name), "registry"


def backend_info(be: Any, precision: str | None = None) -> dict[str, Any]:
    """Name, implementation, version, devices, the precision it is checked at (and from where),
    what it declares (precision, supported subset, internal paths)."""
    info: dict[str, Any] = {"status": "ok", "impl": f"{type(be.impl).__module__}.{type(be.impl).__name__}"}
    for key, fn in (("version", lambda: be.version), ("devices", be.devices)):
        try:
            info[key] = fn()
        except Exception as err:  # a broken attribute is reported, not fatal
            info[key] = f"<{type(err).__name__}: {err}>"
    info["precision"], info["precision_source"] = checked_precision(be, precision)
    declared = getattr(be.impl, "precision", None)
    if declared not in (None, "highest"):
        info["declared_precision"] = str(declared)
    info["declares_subset"] = callable(getattr(be.impl, "unsupported", None))
    info["paths"] = sorted(_paths.declared(be.impl))
    return info


def resolve_backends(names: Sequence[str]) -> tuple[list[Any], dict[str, str]]:
    """``(backends, unavailable)``: :class:`convstdp.Backend` objects, and ``{name: reason}``.

    ``ValueError`` (an unknown name) propagates: that is a usage error.
    """
    found, missing = [], {}
    for name in names:
        try:
            found.append(_backends.get_backend(name))
        except _backends.BackendUnavailable as err:
            missing[name] = str(err)
    return found, missing


@dataclass
class NamedOnly:
    """A backend known by name only (``--isolate``: it is loaded in the child, not here)."""

    name: str


# Every case has new shapes, so a JIT backend compiles new programs for each; XLA's CPU executables
# hold memory maps, and after about 1700 full-grid cases (some 8000 programs) one process ran out of
# them ("LLVM compilation error: Cannot allocate memory", then SIGSEGV). Nothing is reused across
# cases, so dropping the caches now and then costs nothing.
CLEAR_CACHES_EVERY = 200
_cases_run = 0


def _bound_compile_caches() -> None:
    global _cases_run
    _cases_run += 1
    jax = sys.modules.get("jax")
    if jax is not None and _cases_run % CLEAR_CACHES_EVERY == 0:
        jax.clear_caches()


def run(
    backends: Sequence[Any],
    cases: Iterable[Case],
    *,
    seed: int = 0,
    operators: Sequence[str] | None = None,
    stop_on_failure: bool = False,
    progress: Progress | None = None,
    on_result: Callable[[Result], None] | None = None,
    on_case_start: Callable[[Case], None] | None = None,
    precision: str | None = None,
) -> list[BackendRun]:
    """Check every backend on every case; the expectation of a case is computed once.

    ``stop_on_failure`` stops a backend at its first failing case (the self-test's early exit).
    ``on_result`` sees each result as it comes (the isolated worker streams them). ``precision``
    overrides the registry's precision for every backend (the user's ``--precision``).
    """
    runs = [BackendRun(be.name, info=backend_info(be, precision)) for be in backends]
    ops = tuple(operators or OPERATOR_NAMES)
    for case in cases:
        _bound_compile_caches()
        active = [(be, r) for be, r in zip(backends, runs, strict=True) if not r.stopped_early]
        if not active:
            break
        if on_case_start is not None:
            on_case_start(case)
        inputs = make_inputs(case, seed)
        exp = expect(case, inputs)
        for be, br in active:
            t0 = time.perf_counter()
            results = check_case(be, case, inputs, exp, ops, seed=seed, precision=br.info["precision"])
            dt = time.perf_counter() - t0
            if not br.results:
                br.first_case_s = dt
            br.seconds += dt
            br.results.extend(results)
            if on_result is not None:
                for r in results:
                    on_result(r)
            if stop_on_failure and any(r.failed for r in results):
                br.stopped_early = True
            if progress is not None:
                progress.advance(f"{be.name} {case.name}")
    return runs


# ----------------------------------------------------------------------------- isolation


def run_isolated(
    names: Sequence[str],
    cases: Sequence[Case],
    *,
    seed: int = 0,
    operators: Sequence[str] | None = None,
    progress: Progress | None = None,
    timeout_s: float | None = None,
    precision: str | None = None,
) -> list[BackendRun]:
    """Each backend in its own child process; a child that dies mid-case records a ``crash``
    for that case (every operator) and is restarted on the cases after it."""
    ops = tuple(operators or OPERATOR_NAMES)
    runs = []
    for name in names:
        br = BackendRun(name)
        remaining = list(cases)
        while remaining:
            child = _Child(name, seed, ops, precision, timeout_s)
            child.run(remaining, br, progress)
            if child.rc in (0, 1) and not child.killed:
                break
            if not child.done and child.started is None and child.rc == 2:
                br.info = {"status": "unavailable", "reason": child.last_error_line()}
                break
            culprit = child.started or remaining[0].name  # the case it had started killed it
            for op in ops:
                br.results.append(Result(culprit, name, op, "crash", error=child.why()))
            if progress is not None:
                progress.advance(f"{name} {culprit} (crash)")
            names_left = [c.name for c in remaining]
            remaining = remaining[names_left.index(culprit) + 1 if culprit in names_left else 1 :]
        runs.append(br)
    return runs


@dataclass
class _Child:
    """One worker process of :func:`run_isolated` and how it ended."""

    name: str
    seed: int
    ops: tuple[str, ...]
    precision: str | None
    timeout_s: float | None
    rc: int | None = None
    stderr: str = ""
    killed: str = ""
    started: str | None = None
    done: set[str] = field(default_factory=set)

    def _command(self, cases_file: str, out_file: str) -> list[str]:
        return [
            sys.executable,
            *("-m", "convstdp", "conformance", "--backend", self.name, "--seed", str(self.seed)),
            *("--worker-cases", cases_file, "--worker-out", out_file),
            *[a for op in self.ops for a in ("--operator", op)],
            *(("--precision", self.precision) if self.precision else ()),
        ]

    def run(self, cases: Sequence[Case], br: BackendRun, progress: Progress | None) -> None:
        """Run the worker on ``cases``, streaming its results into ``br`` until it exits or times out."""
        with tempfile.TemporaryDirectory(prefix="convstdp-conf-") as tmp:
            cases_file, out_file = os.path.join(tmp, "cases.json"), os.path.join(tmp, "results.jsonl")
            with open(cases_file, "w") as fh:
                json.dump([c.name for c in cases], fh)
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                self._command(cases_file, out_file), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            seen, finished = 0, False
            while not finished:
                try:
                    proc.wait(timeout=0.2)
                    finished = True
                except subprocess.TimeoutExpired:
                    if self.timeout_s is not None and time.perf_counter() - t0 > self.timeout_s:
                        proc.kill()
                        proc.wait()
                        self.killed, finished = f"timed out after {self.timeout_s:.0f} s", True
                seen, self.started = _drain(out_file, seen, br, self.done, self.started, progress)
            br.seconds += time.perf_counter() - t0
            self.stderr = proc.stderr.read() if proc.stderr else ""
            self.rc = proc.returncode

    def last_error_line(self) -> str:
        return self.stderr.strip().splitlines()[-1] if self.stderr.strip() else f"exit {self.rc}"

    def why(self) -> str:
        rc = self.rc or 0
        why = self.killed or f"child process exited with {rc}" + (f" (signal {-rc})" if rc < 0 else "")
        return f"{why}: " + " | ".join(self.stderr.strip().splitlines()[-3:])


def _drain(
    path: str, seen: int, br: BackendRun, done: set[str], started: str | None, progress: Progress | None
) -> tuple[int, str | None]:
    """Read the worker's new JSON lines: ``start``/``end`` markers, results and backend info."""
    try:
        with open(path) as fh:
            lines = fh.readlines()
    except FileNotFoundError:
        return seen, started
    for line in lines[seen:]:
        if not line.endswith("\n"):
            break  # a line still being written
        seen += 1
        rec = json.loads(line)
        kind = rec.get("kind")
        if kind == "info":
            br.info = rec["info"]
        elif kind == "start":
            started = rec["case"]
        elif kind == "end":
            done.add(rec["case"])
            started = None
            if not br.first_case_s:
                br.first_case_s = rec.get("seconds", 0.0)
            if progress is not None:
                progress.advance(f"{br.name} {rec['case']}")
        elif kind == "result":
            br.results.append(Result.from_dict(rec["result"]))
    return seen, started


def worker(
    backend_name: str,
    case_names: Sequence[str],
    out_path: str,
    *,
    seed: int,
    operators: Sequence[str],
    precision: str | None = None,
) -> int:
    """The child side of :func:`run_isolated`: stream one JSON line per event, flushed."""
    from convstdp.conformance.cases import case_from_text

    be = _backends.get_backend(backend_name)
    cases = [case_from_text(n) for n in case_names]
    with open(out_path, "a", buffering=1) as fh:

        def emit(rec: dict[str, Any]) -> None:
            fh.write(dumps(rec, indent=None) + "\n")
            fh.flush()

        emit({"kind": "info", "info": backend_info(be, precision)})
        for case in cases:
            emit({"kind": "start", "case": case.name})
            t0 = time.perf_counter()
            run(
                [be],
                [case],
                seed=seed,
                operators=operators,
                precision=precision,
                on_result=lambda r: emit({"kind": "result", "result": r.to_dict()}),
            )
            emit({"kind": "end", "case": case.name, "seconds": time.perf_counter() - t0})
    return 0
