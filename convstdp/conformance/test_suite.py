"""The conformance suite as pytest tests, for anyone's backend (see ``conftest.py``):

    pytest --pyargs convstdp.conformance --backend package.module:factory

One test per (backend, case) checks every operator and the adjoint identities against the
reference with the harness's tolerance policy; one Hypothesis test per backend draws random
cases and, on a failure, reports the shrunk case and the command that reproduces it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import pytest

import convstdp
from convstdp.conformance.cases import Case, make_inputs
from convstdp.conformance.checks import Expectation, check_case, expect


@lru_cache(maxsize=8)
def _backend(name: str) -> Any:
    try:
        return convstdp.get_backend(name)
    except convstdp.BackendUnavailable as err:
        pytest.fail(f"backend {name!r} is unavailable: {err}", pytrace=False)


@lru_cache(maxsize=2)
def _expected(case: Case, seed: int) -> tuple[dict[str, Any], Expectation]:
    inputs = make_inputs(case, seed)
    return inputs, expect(case, inputs)


def test_case(conformance_backend: str, conformance_case: Case, pytestconfig: Any) -> None:
    """Every operator of one case agrees with the reference, within the tolerance policy."""
    be = _backend(conformance_backend)
    seed = pytestconfig.getoption("conformance_seed")
    inputs, exp = _expected(conformance_case, seed)
    results = check_case(
        be, conformance_case, inputs, exp, seed=seed, precision=convstdp.backends.checked_precision(be.name)
    )
    failed = [r for r in results if r.failed]
    if failed:
        lines = "\n".join(r.message() for r in failed)
        pytest.fail(
            f"{lines}\nreproduce: convstdp conformance --backend {conformance_backend} "
            f"--case '{conformance_case.name}' --seed {seed}",
            pytrace=False,
        )
    if results and all(r.status == "unsupported" for r in results):
        pytest.skip(f"unsupported by {conformance_backend}: {results[0].error}")


def test_random_cases(conformance_backend: str, pytestconfig: Any) -> None:
    """Hypothesis-drawn cases; a failure is shrunk to a minimal case with its repro command."""
    examples = pytestconfig.getoption("conformance_examples")
    if examples <= 0:
        pytest.skip("--conformance-examples 0")
    pytest.importorskip("hypothesis")
    from convstdp.conformance.randomized import run_random

    be = _backend(conformance_backend)
    br, minimal = run_random(be, examples=examples, seed=pytestconfig.getoption("conformance_seed"))
    if minimal is not None:
        msgs = "\n".join(r.message() for r in br.results if r.failed and r.case == minimal.name)
        pytest.fail(f"{msgs}\nshrunk to {minimal.name}; reproduce: {br.info['repro']}", pytrace=False)
