"""Random cases driven by Hypothesis: draw cases, shrink a failure to a minimal one, print the
command that reproduces it. Hypothesis is imported lazily (``pip install hypothesis``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from convstdp.conformance.cases import DTYPES, PAD_KINDS, SPIKES, STDP_PARAMS, Case, draw_padding, make_inputs
from convstdp.conformance.checks import OPERATOR_NAMES, Result, check_case, expect
from convstdp.conformance.harness import BackendRun, backend_info

__all__ = ["case_strategy", "run_random", "repro_command"]


def case_strategy(
    max_map: int = 12, max_kernel: int = 5, max_stride: int = 3, max_channels: int = 4, max_batch: int = 3
) -> Any:
    """A Hypothesis strategy of valid :class:`Case` s; shrinks towards small, square, SAME, float64."""
    from hypothesis import assume
    from hypothesis import strategies as st

    @st.composite
    def cases(draw: Any) -> Case:
        ints = lambda lo, hi: draw(st.integers(lo, hi))
        pair = lambda hi: (ints(1, hi), ints(1, hi))
        stride, kernel, size = pair(max_stride), pair(max_kernel), pair(max_map)
        padding = draw_padding(ints, draw(st.sampled_from(PAD_KINDS)), kernel)
        assume(padding is not None)  # a "negative" draw without a negative pad
        ci, co, batch = ints(1, max_channels), ints(1, max_channels), ints(1, max_batch)
        dtype = draw(st.sampled_from(["f64", *[d for d in DTYPES if d != "f64"]]))
        stdp, spikes = draw(st.sampled_from(list(STDP_PARAMS))), draw(st.sampled_from(SPIKES))
        case = Case(stride, padding, kernel, size, ci, co, batch, dtype, stdp, spikes)
        assume(case.is_valid())
        return case

    return cases()


def repro_command(backend: str, case: Case, seed: int) -> str:
    """The command line that re-runs exactly this case on this backend."""
    return f"convstdp conformance --backend {backend} --case '{case.name}' --seed {seed}"


def run_random(
    backend: Any,
    *,
    examples: int = 50,
    seed: int = 0,
    operators: Sequence[str] | None = None,
    progress: Any = None,
    precision: str | None = None,
) -> tuple[BackendRun, Case | None]:
    """Check ``examples`` random cases on ``backend``; on a failure Hypothesis shrinks it.

    Returns the run (every distinct passing example, plus the *minimal* failing case's results)
    and the minimal failing case, or ``None``.
    """
    import hypothesis as h

    ops = tuple(operators or OPERATOR_NAMES)
    br = BackendRun(backend.name, info=backend_info(backend, precision))
    passed: dict[str, list[Result]] = {}
    last_fail: list[tuple[Case, list[Result]]] = []
    quiet = dict(database=None, deadline=None, verbosity=h.Verbosity.quiet, print_blob=False)

    @h.seed(seed)
    @h.settings(max_examples=examples, suppress_health_check=list(h.HealthCheck), **quiet)
    @h.given(case_strategy())
    def prop(case: Case) -> None:
        inputs, prec = make_inputs(case, seed), br.info["precision"]
        results = check_case(backend, case, inputs, expect(case, inputs), ops, seed=seed, precision=prec)
        if any(r.failed for r in results):
            last_fail.append((case, results))
            raise AssertionError(results[0].message())
        if case.name not in passed and progress is not None:
            progress.advance(f"{backend.name} {case.name}")
        passed[case.name] = results

    minimal: Case | None = None
    t0 = time.perf_counter()
    try:
        prop()
    except AssertionError:
        minimal, results = last_fail[-1]  # Hypothesis replays the shrunk example last
        br.results.extend(results)
    br.seconds = time.perf_counter() - t0
    br.results.extend(r for results in passed.values() for r in results)
    br.info["random_examples"] = len(passed) + (1 if minimal else 0)
    if minimal is not None:
        br.info.update(shrunk_from=len(last_fail), repro=repro_command(backend.name, minimal, seed))
    return br, minimal
