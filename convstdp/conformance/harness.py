"""The harness loop: cases × backends × operators, every failure recorded, the run goes on.

:func:`run` computes each case's expectation once (the reference in float64) and checks every
backend against it. :func:`run_isolated` runs each backend in a child process
(spawned with :mod:`multiprocessing`): a hard abort (XLA, a segfault) is recorded as a ``crash``
of the case in flight, and a new child goes on after it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convstdp import backends as _backends
from convstdp import paths as _paths
from convstdp.conformance.cases import Case, case_from_text, make_inputs
from convstdp.conformance.checks import OPERATOR_NAMES, Result, check_case, expect
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
        declared, cov = set(self.info.get("paths") or []), self.path_coverage()
        undeclared = sorted(p for p in cov if declared and p not in declared)
        missed = sorted(p for p in declared if cov.get(p, 0) == 0) if require_paths else []
        if undeclared:
            out.append(f"{self.name}: noted path(s) it does not declare: {', '.join(undeclared)}")
        if missed:
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
    precision: str | None = None,
) -> list[BackendRun]:
    """Check every backend on every case; the expectation of a case is computed once.

    ``stop_on_failure`` stops a backend at its first failing case (the self-test's early exit);
    ``precision`` overrides the registry's for every backend (the user's ``--precision``).
    """
    runs = [BackendRun(be.name, info=backend_info(be, precision)) for be in backends]
    ops = tuple(operators or OPERATOR_NAMES)
    for case in cases:
        _bound_compile_caches()
        active = [(be, r) for be, r in zip(backends, runs, strict=True) if not r.stopped_early]
        if not active:
            break
        inputs = make_inputs(case, seed)
        exp = expect(case, inputs)
        for be, br in active:
            t0 = time.perf_counter()
            results = check_case(be, case, inputs, exp, ops, seed=seed, precision=br.info["precision"])
            dt = time.perf_counter() - t0
            br.first_case_s = br.first_case_s if br.results else dt
            br.seconds += dt
            br.results.extend(results)
            br.stopped_early = stop_on_failure and any(r.failed for r in results)
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
    """Each backend in its own child process: a child that dies (an abort, a segfault) or outlives
    ``timeout_s`` mid-case records a ``crash`` for that case (every operator), and a new child
    takes the cases after it."""
    ops, runs = tuple(operators or OPERATOR_NAMES), []
    for name in names:
        br, child = BackendRun(name), None
        for case in cases:
            kind, why = "ready", ""
            if child is None:
                child = _Child(name, seed, ops, precision)
                (kind, got), why = child.receive(timeout_s)
                if kind == "unavailable":  # no library: a usage error upstream
                    br.info = {"status": "unavailable", "reason": got}
                    break
                if kind == "info":
                    br.info, kind = got, "ready"
                elif not why.startswith("timed out"):  # convstdp's own code or the factory is broken
                    why = f"the backend failed to load: {why}"
            if kind == "ready":
                (kind, got), why = child.ask(case.name, timeout_s)
            if kind == "results":
                br.results += got[0]
                br.first_case_s = br.first_case_s or got[1]
            else:
                br.results += [Result(case.name, name, op, "crash", error=why + child.stderr_tail()) for op in ops]
                br.seconds += child.close()
                child = None
            if progress is not None:
                progress.advance(f"{name} {case.name}" + ("" if kind == "results" else " (crash)"))
        if child is not None:
            br.seconds += child.close()
        runs.append(br)
    return runs


class _Child:
    """One spawned worker of :func:`run_isolated` (:func:`_serve`), its pipe and its stderr file."""

    def __init__(self, name: str, seed: int, ops: tuple[str, ...], precision: str | None) -> None:
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing of ours is forked
        self.conn, theirs = ctx.Pipe()
        fd, self.log = tempfile.mkstemp(prefix="convstdp-conf-", suffix=".stderr")
        os.close(fd)
        self.proc = ctx.Process(target=_serve, args=(name, seed, ops, precision, theirs, self.log), daemon=True)
        self.t0 = time.perf_counter()
        self.proc.start()

    def ask(self, case: str, timeout_s: float | None) -> tuple[tuple[str | None, Any], str]:
        """Send ``case`` to check and wait for the answer (as :meth:`receive`)."""
        try:
            self.conn.send(case)
        except OSError:  # it died since its last answer: receive() says how
            pass
        return self.receive(timeout_s)

    def receive(self, timeout_s: float | None) -> tuple[tuple[str | None, Any], str]:
        """``((kind, payload), "")``: the child's next message; ``((None, None), why)`` if it died or
        ran past ``timeout_s`` (counted from its start) first."""
        while True:
            with contextlib.suppress(EOFError, OSError):
                if self.conn.poll(0.2):
                    return self.conn.recv(), ""
            if not self.proc.is_alive():
                rc = self.proc.exitcode or 0
                return (None, None), f"child process exited with {rc}" + (f" (signal {-rc})" if rc < 0 else "")
            if timeout_s is not None and time.perf_counter() - self.t0 > timeout_s:
                self.proc.kill()
                return (None, None), f"timed out after {timeout_s:.0f} s"

    def stderr_tail(self) -> str:
        lines = Path(self.log).read_text(errors="replace").strip().splitlines()
        return ": " + " | ".join(lines[-3:]) if lines else ""

    def close(self) -> float:
        """Stop the child (asking first), remove its files; returns the seconds it lived."""
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        Path(self.log).unlink(missing_ok=True)
        return time.perf_counter() - self.t0


def _serve(name: str, seed: int, ops: tuple[str, ...], precision: str | None, conn: Any, log: str) -> None:
    """The child side of :func:`run_isolated`: load the backend, then check each case name sent,
    replying with ``(results, seconds)``, until sent ``None``. Its stderr goes to ``log``."""
    os.dup2(os.open(log, os.O_WRONLY | os.O_APPEND), 2)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # a backend's prints must not mix into the parent's output
    try:
        be = _backends.get_backend(name)
    except (_backends.BackendUnavailable, ValueError) as err:
        conn.send(("unavailable", str(err)))
        return
    conn.send(("info", backend_info(be, precision)))
    while (case := conn.recv()) is not None:
        t0 = time.perf_counter()
        (br,) = run([be], [case_from_text(case)], seed=seed, operators=ops, precision=precision)
        conn.send(("results", (br.results, time.perf_counter() - t0)))
