"""The conformance harness: does a backend compute what the reference computes?

Cases are data (:mod:`.cases`: named, seeded, a ``quick`` and a ``full`` grid), operators are
data (:mod:`.operators`), the tolerance is one table and one formula (:mod:`.tolerance`,
:mod:`.expectation`), the loop records every failure and goes on (:mod:`.harness`), and
:mod:`.report` writes the JSON record and renders it for the terminal or as Markdown.
:mod:`.broken` holds deliberately broken backends that prove the harness catches real bugs;
:mod:`.randomized` draws random cases with Hypothesis; :mod:`.trajectory` runs the step with W'
fed back. What is checked, and why the bounds hold: ``docs/conformance.md``. Command line:
``convstdp conformance``; pytest: ``pytest --pyargs convstdp.conformance --backend package.module:factory``.

    from convstdp import get_backend
    from convstdp.conformance import quick_grid, run
    (result,) = run([get_backend("numba")], quick_grid())
    assert not result.failed
"""

from convstdp.conformance.cases import Case, case_from_text, full_grid, make_inputs, quick_grid
from convstdp.conformance.checks import OPERATOR_NAMES, Result, check_case, expect
from convstdp.conformance.harness import BackendRun, run
from convstdp.conformance.tolerance import POLICY, Policy, policy_for

__all__ = [
    "Case",
    "case_from_text",
    "full_grid",
    "quick_grid",
    "make_inputs",
    "OPERATOR_NAMES",
    "Result",
    "check_case",
    "expect",
    "BackendRun",
    "run",
    "POLICY",
    "Policy",
    "policy_for",
]
