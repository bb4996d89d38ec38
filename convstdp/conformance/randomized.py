"""Random cases driven by Hypothesis: draw cases, shrink a failure to a minimal one, print the
command that reproduces it. Hypothesis is imported lazily (``pip install hypothesis``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from convstdp.conformance.cases import DTYPES, SPIKES, STDP_PARAMS, Case, make_inputs
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
        stride = (draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride)))
        kernel = (draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel)))
        size = (draw(st.integers(1, max_map)), draw(st.integers(1, max_map)))
        kind = draw(st.sampled_from(["same", "valid", "explicit", "negative"]))
        padding: Any
        if kind in ("same", "valid"):
            padding = kind.upper()
        else:
            lo = -2 if kind == "negative" else 0
            vals = [draw(st.integers(lo, k)) for k in (kernel[0], kernel[0], kernel[1], kernel[1])]
            if kind == "negative":
                assume(min(vals) < 0)
            padding = ((vals[0], vals[1]), (vals[2], vals[3]))
        case = Case(
            stride=stride,
            padding=padding,
            kernel=kernel,
            in_size=size,
            ci=draw(st.integers(1, max_channels)),
            co=draw(st.integers(1, max_channels)),
            batch=draw(st.integers(1, max_batch)),
            dtype=draw(st.sampled_from(["f64", *[d for d in DTYPES if d != "f64"]])),
            stdp=draw(st.sampled_from(list(STDP_PARAMS))),
            spikes=draw(st.sampled_from(list(SPIKES))),
        )
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
    from hypothesis import HealthCheck, Verbosity, given, settings
    from hypothesis import seed as hseed

    ops = tuple(operators or OPERATOR_NAMES)
    br = BackendRun(backend.name, info=backend_info(backend, precision))
    passed: dict[str, list[Result]] = {}
    last_fail: list[tuple[Case, list[Result]]] = []

    @hseed(seed)
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        verbosity=Verbosity.quiet,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case_strategy())
    def prop(case: Case) -> None:
        inputs = make_inputs(case, seed)
        results = check_case(
            backend, case, inputs, expect(case, inputs), ops, seed=seed, precision=br.info["precision"]
        )
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
    for results in passed.values():
        br.results.extend(results)
    br.info["random_examples"] = len(passed) + (1 if minimal else 0)
    if minimal is not None:
        br.info["shrunk_from"] = len(last_fail)
        br.info["repro"] = repro_command(backend.name, minimal, seed)
    return br, minimal
