"""What a run says: the summary table, the JSON record (stable schema) and the Markdown report."""

from __future__ import annotations

import datetime as _dt
import json
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from convstdp import environment
from convstdp.conformance import tolerance as tol
from convstdp.conformance.cases import Case, coverage
from convstdp.conformance.checks import OPERATOR_NAMES, Result
from convstdp.conformance.harness import BackendRun
from convstdp.present import table

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "SummaryRow",
    "summarize",
    "summary_table",
    "tier_table",
    "coverage_table",
    "to_json",
    "markdown",
]

SCHEMA = "convstdp.conformance"
SCHEMA_VERSION = 1


@dataclass
class SummaryRow:
    """Backend × operator: how many cases, how they ended, and the closest call."""

    backend: str
    operator: str
    cases: int
    passed: int
    failed: int
    unsupported: int
    worst_ratio: float | None
    worst_case: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarize(runs: Sequence[BackendRun]) -> list[SummaryRow]:
    rows = []
    for br in runs:
        by_op: dict[str, list[Result]] = defaultdict(list)
        for r in br.results:
            by_op[r.operator].append(r)
        for op in sorted(by_op, key=lambda o: OPERATOR_NAMES.index(o) if o in OPERATOR_NAMES else 99):
            rs = by_op[op]
            rated = [r for r in rs if r.ratio is not None]
            worst = max(rated, key=lambda r: r.ratio, default=None)
            rows.append(
                SummaryRow(
                    br.name,
                    op,
                    len(rs),
                    sum(r.status == "pass" for r in rs),
                    sum(r.failed for r in rs),
                    sum(r.status == "unsupported" for r in rs),
                    worst.ratio if worst else None,
                    worst.case if worst else "",
                )
            )
    return rows


def tier_table(runs: Sequence[BackendRun], cases: Sequence[Case]) -> tuple[list[str], list[list[str]]]:
    """Worst error/bound per backend × operator × size tier (``Case.tier``), with the case count."""
    tier_of = {c.name: c.tier for c in cases}
    tiers = [t for t in ("small", "large", "workload") if t in tier_of.values()]
    header = ["backend", "operator", *(f"{t} (cases)" for t in tiers)]
    body = []
    for br in runs:
        cell: dict[tuple[str, str], list[float]] = defaultdict(list)
        for r in br.results:
            if r.ratio is not None and r.case in tier_of:
                cell[(r.operator, tier_of[r.case])].append(r.ratio)
        for op in [o for o in OPERATOR_NAMES if any(k[0] == o for k in cell)]:
            body.append(
                [
                    br.name,
                    op,
                    *(
                        f"{_fmt_ratio(max(cell[(op, t)]))} ({len(cell[(op, t)])})" if cell[(op, t)] else "-"
                        for t in tiers
                    ),
                ]
            )
    return header, body


def coverage_table(runs: Sequence[BackendRun]) -> tuple[list[str], list[list[str]]]:
    """Every internal path of every backend and how many cases exercised it (0 fails a full grid)."""
    body = [
        [br.name, path, str(n), "" if n else "NOT EXERCISED"] for br in runs for path, n in br.path_coverage().items()
    ]
    return ["backend", "path", "cases", ""], body


def self_test_ratio(row: dict[str, Any]) -> str:
    """A self-test row's error/bound: the first failure's, or a precision bug's least ratio per tier."""
    if row.get("tiers"):
        return ", ".join(f"{t} >= {_fmt_ratio(float(v))}" for t, v in row["tiers"].items())
    return _fmt_ratio(None if row["ratio"] is None else float(row["ratio"]))


def _fmt_ratio(r: float | None) -> str:
    if r is None:
        return "-"
    return f"{r:.3g}" if np.isfinite(r) else "inf"


def summary_table(rows: Sequence[SummaryRow]) -> tuple[list[str], list[list[str]]]:
    header = ["backend", "operator", "cases", "passed", "failed", "unsupported", "worst err/bound", "worst case"]
    body = [
        [
            r.backend,
            r.operator,
            str(r.cases),
            str(r.passed),
            str(r.failed),
            str(r.unsupported),
            _fmt_ratio(r.worst_ratio),
            r.worst_case,
        ]
        for r in rows
    ]
    return header, body


def to_json(
    runs: Sequence[BackendRun],
    cases: Sequence[Case],
    *,
    grid: str,
    seed: int,
    argv: Sequence[str] | None = None,
    unavailable: dict[str, str] | None = None,
    self_test: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    problems: Sequence[str] = (),
) -> dict[str, Any]:
    """The run as one JSON-able dict (schema ``convstdp.conformance`` version 1).

    Top-level keys: ``schema``, ``schema_version``, ``created``, ``command``, ``grid``, ``seed``,
    ``environment``, ``tolerance``, ``backends``, ``cases``, ``summary``, ``results``,
    ``self_test``, ``grid_problems``, ``ok``.
    """
    failed = any(br.failed for br in runs) or bool(problems)
    backends: dict[str, Any] = {}
    for br in runs:
        backends[br.name] = {
            **br.info,
            "seconds": round(br.seconds, 3),
            "first_case_seconds": round(br.first_case_s, 3),
            "stopped_early": br.stopped_early,
            "cases_checked": br.checked,
            "path_coverage": br.path_coverage(),
        }
    for name, reason in (unavailable or {}).items():
        backends[name] = {"status": "unavailable", "reason": reason}
    doc = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": list(argv) if argv is not None else sys.argv,
        "grid": grid,
        "seed": seed,
        "environment": environment.collect(),
        "tolerance": {
            "model": "bound = c * u * scale + tiny per element, scale = sqrt(n (S^2/3 + 2 R^2)) + R + |S| "
            "(n non-zero terms, S the reference value, R = sqrt(sum of squared terms)); composed for STDP",
            "policy": {k: p.to_dict() for k, p in tol.POLICY.items()},
            "extra_roundings": dict(tol.EXTRA_ROUNDINGS),
        },
        "backends": backends,
        "cases": [c.to_dict() for c in cases],
        "summary": [r.to_dict() for r in summarize(runs)],
        "results": [r.to_dict() for br in runs for r in br.results],
        "self_test": self_test,
        "grid_problems": list(problems),
        "ok": not failed and (self_test is None or bool(self_test.get("ok"))),
    }
    if extra:
        doc.update(extra)
    return doc


# ----------------------------------------------------------------------------- Markdown


def _reason_kind(msg: str) -> str:
    """An unsupported-reason with its particular values blanked, so reasons group by kind."""
    msg = msg.split("\n")[0]
    msg = re.sub(r"\((?:\(?-?\d+, -?\d+\)?(?:, )?)+\)", "(...)", msg)
    return re.sub(r"(?<![\w.])-?\d+(?![\w.])", "N", msg)[:200]


def _departures(runs: Sequence[BackendRun]) -> list[str]:
    """Unsupported configurations and declared precisions, grouped per backend."""
    out = []
    for br in runs:
        uns = [r for r in br.results if r.status == "unsupported"]
        prec = br.info.get("precision", "highest")
        if prec not in ("highest", None):
            out.append(
                f"**{br.name}** is checked at precision `{prec}` (from the {br.info.get('precision_source', '')}): "
                "its results are held to that mode's tolerance, not the dtype's."
            )
        if uns:
            reasons = Counter(_reason_kind(r.error or "") for r in uns)
            cases = sorted({r.case for r in uns})
            out.append(
                f"**{br.name}** does not support {len(cases)} case(s) ({len(uns)} operator runs); reasons: "
                + "; ".join(f"{why} ({n} operator runs)" for why, n in reasons.most_common(8))
                + f". Examples: {', '.join(f'`{c}`' for c in cases[:4])}."
            )
        dtype_fails = [r for r in br.results if any("dtype" in p for p in r.problems)]
        if dtype_fails:
            out.append(
                f"**{br.name}** returns a dtype other than SPEC §4's in {len(dtype_fails)} operator run(s), e.g. "
                f"{dtype_fails[0].problems[0]} in `{dtype_fails[0].case}`."
            )
    return out


def _closest(br: BackendRun) -> str:
    rated = [r for r in br.results if r.ratio is not None]
    if not rated:
        return f"`{br.name}` -"
    worst = max(rated, key=lambda r: r.ratio)
    return f"`{br.name}` {_fmt_ratio(worst.ratio)} ({worst.operator}, `{worst.case}`)"


def markdown(doc: dict[str, Any], runs: Sequence[BackendRun], cases: Sequence[Case], *, max_failures: int = 40) -> str:
    """The Markdown report: verdict, what was checked, policy, summary, failures, departures."""
    ok = doc["ok"]
    env = doc["environment"]
    names = [br.name for br in runs]
    lines = [
        "# convstdp conformance report",
        "",
        f"**Verdict: {'PASS' if ok else 'FAIL'}** — {len(cases)} cases ({doc['grid']} grid, seed {doc['seed']}) "
        f"checked on {', '.join(f'`{n}`' for n in names) or 'no backend'} against the NumPy reference. "
        f"convstdp {env['convstdp']}, {env['platform']}, {env['cpu_model']}, {doc['created']}.",
        "",
        "Closest to the bound (worst error/bound over all operators, 1 = at the bound): "
        + (", ".join(_closest(br) for br in runs) or "-")
        + ".",
        "",
        "## What was checked",
        "",
        "- **Operators**: `deconv2d`, `deconv2d_dk`, `deconv2d_dx`, `stdp_update` (W' and dW), and the fused/composed "
        "`stdp_step` (y, W', dW, dX through the updated filters), each called through `convstdp.Backend`.",
        "- **Against the reference**: every output element, the reference run in float64 on the float64-cast inputs.",
        "- **Adjoint identities** on the backend's own outputs for random x, K, d drawn independently of the value "
        "checks' inputs: `<deconv2d(x,K), d> = <x, dX(K,d)> = <K, dK(x,d)>`, bounded by the per-element bounds "
        "weighted by the other factor.",
        "- **Contract**: output shapes; dtype = `np.result_type` of the floating inputs (bool spikes follow); "
        "inputs unchanged after the call. Exceptions are recorded per operator as failures. A case is "
        "*unsupported* only for a backend that declares its supported subset (`impl.unsupported`), only outside "
        "it, and is then not run; a backend that checks no case fails.",
        "- **Precision** a backend is checked at comes from the registry (the name it is registered under) or "
        "the user (`--precision`), never from the backend object.",
        "- **Paths**: each backend declares its internal paths (serial/parallel, formulation, driver...) and notes "
        "the one each call takes; on the quick and full grids a declared path that no case exercised fails the run.",
        "- **JAX-based backends** run float64 and mixed cases inside `jax.enable_x64(True)` (scoped to the call), "
        "float32 cases in JAX's default mode.",
        "- **Cases**: seeded, non-symmetric values (x ~ N(0.3,1), K ~ U(-0.6,1.4), d ~ N(-0.2,1)), binary spikes "
        "(bool or float, 30 % unless the name says `-d<density>`) and positive traces; `-sim` cases feed what a "
        "simulation does (SPEC §8: x is the pre_spike array, d_out spikes, dense traces). Each case name encodes "
        "all of it (`s<stride>-<padding>-k<kh>x<kw>-m<H>x<W>-c<Ci>to<Co>-n<N>-<dtype>-<stdp set>-<spikes>"
        "[-d<density>][-sim]`). Size tiers: small, large (the large tier), workload (SPEC §8 at full size).",
        "",
        "Axis values covered:",
        "",
    ]
    for axis, vals in coverage(cases).items():
        lines.append(f"- {axis}: {', '.join(vals)}")
    pol_rows = [[p.name, f"{p.u:.3g}", f"{p.c:g}", f"{p.tiny:.3g}", p.note] for p in tol.POLICY.values()]
    lines += [
        "",
        "## Tolerance policy",
        "",
        "Per element: `bound = c · u · scale + tiny`, `scale = sqrt(n·(S²/3 + 2R²)) + R + |S|`, where `n` counts "
        "the element's non-zero terms (adding an exact zero is exact), `S` is the reference value and `R` the root "
        "of the sum of its squared terms: the partial sums of a sequential float32 sum, the worst order a correct "
        "implementation uses, with room for the heavy tails of cancelling sums. dW covers LTP and LTD summed "
        "apart or stacked; W' inherits `|eta|·scale(dW)`; the step's dX inherits `dX(scale(W'), |post_spike|)`. "
        "No global atol. A result passes when every element's error/bound ≤ 1; the tables show the worst ratio. "
        "Derivation and measurements: `convstdp/conformance/tolerance.py`.",
        "",
        table(["mode", "u (unit roundoff)", "c (safety)", "tiny", "note"], pol_rows, "md"),
        "",
        "## Summary",
        "",
    ]
    header, body = summary_table(summarize(runs))
    lines.append(table(header, body, "md") if body else "_No results._")
    t_header, t_body = tier_table(runs, cases)
    if t_body:
        lines += [
            "",
            "Worst error/bound by size tier (number of cases in brackets):",
            "",
            table(t_header, t_body, "md"),
        ]
    timing = [
        [
            br.name,
            f"{br.seconds:.2f}",
            f"{br.first_case_s:.2f}",
            br.info.get("version", ""),
            f"{br.info.get('precision', '')} ({br.info.get('precision_source', '')})",
        ]
        for br in runs
    ]
    if timing:
        lines += [
            "",
            table(["backend", "seconds", "first case s (JIT warm-up)", "version", "checked at (from)"], timing, "md"),
        ]
    c_header, c_body = coverage_table(runs)
    if c_body:
        lines += ["", "## Path coverage", "", table(c_header, c_body, "md")]
    if doc.get("grid_problems"):
        lines += ["", "## Grid problems", ""] + [f"- {p}" for p in doc["grid_problems"]]
    unavailable = {k: v for k, v in doc["backends"].items() if v.get("status") == "unavailable"}
    if unavailable:
        lines += ["", "Unavailable: " + "; ".join(f"`{k}`: {v.get('reason')}" for k, v in unavailable.items())]
    failures = [r for br in runs for r in br.results if r.failed]
    lines += ["", f"## Failures ({len(failures)})", ""]
    if not failures:
        lines.append("None.")
    for r in failures[:max_failures]:
        lines.append(f"- {r.message()}")
    if len(failures) > max_failures:
        lines.append(f"- ... and {len(failures) - max_failures} more (see the JSON record).")
    if failures:
        backend = failures[0].backend
        lines += [
            "",
            "Reproduce one: `convstdp conformance --backend "
            f"{backend} --case '{failures[0].case}' --seed {doc['seed']}`",
        ]
    lines += ["", "## Departures from SPEC (unsupported configurations, declared precision, dtype)", ""]
    dep = _departures(runs)
    lines += [f"- {d}" for d in dep] if dep else ["None."]
    if doc.get("self_test"):
        st = doc["self_test"]
        lines += [
            "",
            f"## Self-test: caught {st['caught']}/{st['total']}",
            "",
            "Broken backends built from the reference; each must fail on the grid (a logic bug stops at its first "
            "failure). A precision bug must exceed its threshold on the float32 cases of every size tier; its "
            "err/bound column gives the least ratio per tier.",
            "",
            table(
                ["bug", "caught", "check", "first caught by", "err/bound", "cases run"],
                [
                    [
                        r["bug"] + ": " + r["description"],
                        "yes" if r["caught"] else "**NO**",
                        r["check"],
                        f"{r['operator']} `{r['case']}`",
                        self_test_ratio(r),
                        str(r["cases_run"]),
                    ]
                    for r in st["rows"]
                ],
                "md",
            ),
        ]
    lines += ["", "## Environment", "", "```", json.dumps(env, indent=2), "```", ""]
    return "\n".join(lines)
