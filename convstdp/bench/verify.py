"""Check a runner against the reference before timing it: a fast wrong answer is no result.

Each workload is checked at full size, on the very inputs it is timed on, through the conformance
harness's own checks and tolerance policy (:func:`convstdp.conformance.checks.run_operator`), at
the precision the registry gives the runner's name. When the runner is timed through a native
call (``impl.native``, e.g. PyTorch on NCHW tensors), that call's outputs are checked too. One
policy in the project; no second verifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from convstdp.backends import Backend, checked_precision
from convstdp.bench.timing import native_run
from convstdp.bench.workloads import Workload
from convstdp.conformance import tolerance as tol
from convstdp.conformance.cases import Case, make_inputs
from convstdp.conformance.checks import compare, run_operator
from convstdp.conformance.expectation import Expectation, expect

__all__ = ["Check", "check", "check_runner"]


@dataclass
class Check:
    """The verdict on one workload: ``worst`` is the largest error/bound (≤ 1 passes)."""

    workload: str
    ok: bool
    worst: float
    detail: str = ""
    case: str = ""
    paths: list[str] = field(default_factory=list)


@lru_cache(maxsize=2)
def _expected(case: Case, seed: int) -> tuple[dict[str, Any], Expectation]:
    inputs = make_inputs(case, seed)
    return inputs, expect(case, inputs)


def _check_native(backend: Backend, w: Workload, inputs: dict[str, Any], exp: Expectation, precision: str) -> str:
    """Why the native call's outputs disagree with the reference ("" when they agree or there is none)."""
    run = native_run(backend, w, inputs, spec_layout=True)
    if not run:
        return ""
    expected = exp.ops[w.op]
    policy = tol.policy_for(next(iter(expected.values())).dtype, precision)
    outs = zip(expected.items(), run(), strict=True)
    bad = [o for (name, e), got in outs if (o := compare(name, got, e, policy)) and o.mismatches]
    return f"native call: {bad[0].describe()}" if bad else ""


def check(backend: Backend, w: Workload, seed: int = 0) -> Check:
    """Run ``w``'s operator at full size on ``backend`` and check it like the conformance harness."""
    inputs, exp = _expected(w.case, seed)
    precision = checked_precision(backend.name)
    res, _ = run_operator(backend, w.case, inputs, w.operator, exp, precision)
    detail = "" if res.status == "pass" else res.message()
    detail = detail or _check_native(backend, w, inputs, exp, precision)
    worst = float("inf") if res.ratio is None else res.ratio
    return Check(w.name, not detail, worst, detail, w.case.name, res.paths)


def check_runner(backend: Backend, workloads: list[Workload], seed: int = 0) -> dict[str, Check]:
    """One check per workload (full size), keyed by workload name; a raise is a failed check."""
    out: dict[str, Check] = {}
    for w in sorted(workloads, key=lambda w: w.case.name):  # workloads sharing a case share its expectation
        try:
            out[w.name] = check(backend, w, seed)
        except Exception as err:  # reported as a failed check, never fatal
            out[w.name] = Check(w.name, False, float("inf"), f"{type(err).__name__}: {err}", w.case.name)
    return out
