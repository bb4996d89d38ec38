"""Check a runner against the reference before timing it: a fast wrong answer is no result.

Each workload is checked at full size, through the conformance harness's own checks and
tolerance policy (:func:`convstdp.conformance.checks.run_operator`): the workload becomes a
conformance case (:func:`case_of`: same geometry, float32, spikes at the workload's density,
dense traces) and the operator it times is compared element by element against the float64
reference, at the precision the registry gives the runner's name. One policy in the project; no
second verifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from convstdp.backends import Backend, checked_precision
from convstdp.bench.workloads import Workload
from convstdp.conformance.cases import Case, make_inputs
from convstdp.conformance.checks import run_operator
from convstdp.conformance.expectation import Expectation, expect
from convstdp.conformance.operators import OPS

__all__ = ["Check", "case_of", "check", "check_runner", "lookup"]

_OPERATOR = {"step": "stdp_step"}  # bench op name -> conformance operator name (others are the same)


@dataclass
class Check:
    """The verdict on one workload: ``worst`` is the largest error/bound (≤ 1 passes)."""

    workload: str
    ok: bool
    worst: float
    detail: str = ""
    case: str = ""
    paths: list[str] = field(default_factory=list)


def case_of(w: Workload) -> Case:
    """The conformance case of a workload: its geometry at full size, float32, its density, the
    inputs a simulation feeds a step (SPEC §8), the seed's STDP parameters with every branch taken."""
    return Case(
        stride=(w.stride, w.stride),
        padding=w.padding,
        kernel=(w.k, w.k),
        in_size=(w.size, w.size),
        ci=w.cin,
        co=w.cout,
        batch=w.batch,
        dtype="f32",
        stdp="sim",
        spikes="float",
        density=w.density,
        inputs="sim",
    )


@lru_cache(maxsize=2)
def _expected(case: Case, seed: int) -> tuple[dict[str, Any], Expectation]:
    inputs = make_inputs(case, seed)
    return inputs, expect(case, inputs)


def check(backend: Backend, w: Workload, seed: int = 0) -> Check:
    """Run ``w``'s operator at full size on ``backend`` and check it like the conformance harness."""
    case = case_of(w)
    inputs, exp = _expected(case, seed)
    res, _ = run_operator(backend, case, inputs, OPS[_OPERATOR.get(w.op, w.op)], exp, checked_precision(backend.name))
    detail = "" if res.status == "pass" else res.message()
    return Check(
        w.name, res.status == "pass", float("inf") if res.ratio is None else res.ratio, detail, case.name, res.paths
    )


def check_runner(backend: Backend, workloads: list[Workload], seed: int = 0) -> dict[str, Check]:
    """One check per workload (full size), keyed by workload name; a raise is a failed check."""
    out: dict[str, Check] = {}
    for w in sorted(workloads, key=lambda w: case_of(w).name):  # workloads sharing a case share its expectation
        try:
            out[w.name] = check(backend, w, seed)
        except Exception as err:  # reported as a failed check, never fatal
            out[w.name] = Check(w.name, False, float("inf"), f"{type(err).__name__}: {err}", case_of(w).name)
    return out


def lookup(checks: dict[str, Check], w: Workload) -> Check | None:
    return checks.get(w.name)
