"""What a run says: the JSON record (stable schema) and one rendering of it, as terminal text or as
the Markdown report (which adds the verdict, the policy, the departures and the environment)."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np

from convstdp import environment
from convstdp.conformance import tolerance as tol
from convstdp.conformance.cases import Case, coverage
from convstdp.conformance.checks import OPERATOR_NAMES
from convstdp.conformance.harness import BackendRun
from convstdp.present import table

__all__ = ["SCHEMA", "SCHEMA_VERSION", "SummaryRow", "summarize", "to_json", "render", "self_test_table"]

SCHEMA = "convstdp.conformance"
SCHEMA_VERSION = 1
DOCS = "docs/conformance.md"


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


def _fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.3g}" if np.isfinite(r) else "inf"


def _op_order(op: str) -> int:
    return OPERATOR_NAMES.index(op) if op in OPERATOR_NAMES else len(OPERATOR_NAMES)


def summarize(runs: Sequence[BackendRun]) -> list[SummaryRow]:
    rows = []
    for br in runs:
        by_op: dict[str, list] = defaultdict(list)
        for r in br.results:
            by_op[r.operator].append(r)
        for op in sorted(by_op, key=_op_order):
            rs = by_op[op]
            worst = max((r for r in rs if r.ratio is not None), key=lambda r: r.ratio, default=None)
            count = Counter(r.status for r in rs)
            failed = sum(r.failed for r in rs)
            rows.append(
                SummaryRow(
                    br.name,
                    op,
                    len(rs),
                    count["pass"],
                    failed,
                    count["unsupported"],
                    worst.ratio if worst else None,
                    worst.case if worst else "",
                )
            )
    return rows


def head(schema: str, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """What every conformance record opens with: ``schema``, ``schema_version``, ``created`` (UTC),
    ``command`` (``argv``, default ``sys.argv``) and the ``environment`` it ran in."""
    env = environment.collect()
    return {
        "schema": schema,
        "schema_version": SCHEMA_VERSION,
        "created": env["date_utc"],
        "command": list(sys.argv if argv is None else argv),
        "environment": env,
    }


def to_json(
    runs: Sequence[BackendRun],
    cases: Sequence[Case],
    *,
    grid: str,
    seed: int,
    argv: Sequence[str] | None = None,
    unavailable: dict[str, str] | None = None,
    self_test: dict[str, Any] | None = None,
    problems: Sequence[str] = (),
) -> dict[str, Any]:
    """The run as one JSON-able dict (schema ``convstdp.conformance`` version 1).

    Top-level keys: ``schema``, ``schema_version``, ``created``, ``command``, ``grid``, ``seed``,
    ``environment``, ``tolerance``, ``backends``, ``cases``, ``summary``, ``results``,
    ``self_test``, ``grid_problems``, ``ok``; the CLI adds ``repros`` (the random grid's shrunk
    failures and their commands).
    """
    backends: dict[str, Any] = {
        br.name: {
            **br.info,
            "seconds": round(br.seconds, 3),
            "first_case_seconds": round(br.first_case_s, 3),
            "stopped_early": br.stopped_early,
            "cases_checked": br.checked,
            "path_coverage": br.path_coverage(),
        }
        for br in runs
    }
    backends.update({name: {"status": "unavailable", "reason": why} for name, why in (unavailable or {}).items()})
    failed = any(br.failed for br in runs) or bool(problems)
    return {
        **head(SCHEMA, argv),
        "grid": grid,
        "seed": seed,
        "tolerance": {
            "model": "bound = c * u * scale + tiny per element, scale = sqrt(n (S^2/3 + 2 R^2)) + R + |S| "
            "(n non-zero terms, S the reference value, R = sqrt(sum of squared terms)); composed for STDP",
            "policy": {k: asdict(p) for k, p in tol.POLICY.items()},
            "extra_roundings": dict(tol.EXTRA_ROUNDINGS),
        },
        "backends": backends,
        "cases": [c.to_dict() for c in cases],
        "summary": [asdict(r) for r in summarize(runs)],
        "results": [r.to_dict() for br in runs for r in br.results],
        "self_test": self_test,
        "grid_problems": list(problems),
        "ok": not failed and (self_test is None or bool(self_test.get("ok"))),
    }


# ----------------------------------------------------------------------------- rendering


def _tier_rows(runs: Sequence[BackendRun], cases: Sequence[Case]) -> tuple[list[str], list[list[str]]]:
    """Worst error/bound per backend × operator × size tier (``Case.tier``), with the case count."""
    tier_of = {c.name: c.tier for c in cases}
    tiers = [t for t in ("small", "large", "workload") if t in tier_of.values()]
    body = []
    for br in runs:
        cell: dict[tuple[str, str], list[float]] = defaultdict(list)
        for r in br.results:
            if r.ratio is not None and r.case in tier_of:
                cell[(r.operator, tier_of[r.case])].append(r.ratio)
        for op in sorted({op for op, _ in cell}, key=_op_order):
            got = [cell[(op, t)] for t in tiers]
            body.append([br.name, op, *(f"{_fmt_ratio(max(v))} ({len(v)})" if v else "-" for v in got)])
    return ["backend", "operator", *(f"{t} (cases)" for t in tiers)], body


def self_test_ratio(row: dict[str, Any]) -> str:
    """A self-test row's error/bound: the first failure's, or a precision bug's least ratio per tier."""
    if row.get("tiers"):
        return ", ".join(f"{t} >= {_fmt_ratio(float(v))}" for t, v in row["tiers"].items())
    return _fmt_ratio(None if row["ratio"] is None else float(row["ratio"]))


def self_test_table(st: dict[str, Any], fmt: str = "text") -> str:
    header = ["bug", "caught", "check", "first caught by", "err/bound", "cases run"]
    rows = [
        [
            r["bug"] + (": " + r["description"] if fmt == "md" else ""),
            "yes" if r["caught"] else "NO",
            r["check"],
            (f"{r['operator']} [{r['case']}]" if r["case"] else r["first"][:60]) if r["caught"] else "-",
            self_test_ratio(r),
            str(r["cases_run"]),
        ]
        for r in st["rows"]
    ]
    return table(header, rows, fmt)


def _reason_kind(msg: str) -> str:
    """An unsupported-reason with its particular values blanked, so reasons group by kind."""
    msg = re.sub(r"\((?:\(?-?\d+, -?\d+\)?(?:, )?)+\)", "(...)", msg.split("\n")[0])
    return re.sub(r"(?<![\w.])-?\d+(?![\w.])", "N", msg)[:200]


def _departure_lines(runs: Sequence[BackendRun]) -> list[str]:
    """Unsupported configurations, declared precisions and wrong dtypes, per backend."""
    out = []
    for br in runs:
        prec = br.info.get("precision", "highest")
        if prec not in ("highest", None):
            out.append(
                f"**{br.name}** is checked at precision `{prec}` (from the {br.info.get('precision_source')}): "
                "its results are held to that mode's tolerance, not the dtype's."
            )
        uns = [r for r in br.results if r.status == "unsupported"]
        if uns:
            reasons = Counter(_reason_kind(r.error or "") for r in uns).most_common(8)
            cases = sorted({r.case for r in uns})
            out.append(
                f"**{br.name}** does not support {len(cases)} case(s) ({len(uns)} operator runs); reasons: "
                + "; ".join(f"{why} ({n} operator runs)" for why, n in reasons)
                + f". Examples: {', '.join(f'`{c}`' for c in cases[:4])}."
            )
        bad = [r for r in br.results if any("dtype" in p for p in r.problems)]
        if bad:
            out.append(
                f"**{br.name}** returns a dtype other than SPEC §4's in {len(bad)} operator run(s), e.g. "
                f"{bad[0].problems[0]} in `{bad[0].case}`."
            )
    return out


def _header(doc: dict[str, Any], runs: Sequence[BackendRun], cases: Sequence[Case]) -> list[str]:
    """The Markdown report's head: verdict, closest calls, what was checked, the policy table."""
    env, names = doc["environment"], ", ".join(f"`{br.name}`" for br in runs) or "no backend"
    closest = []
    for br in runs:
        worst = max((r for r in br.results if r.ratio is not None), key=lambda r: r.ratio, default=None)
        closest.append(
            f"`{br.name}` " + (f"{_fmt_ratio(worst.ratio)} ({worst.operator}, `{worst.case}`)" if worst else "-")
        )
    policy = [[p.name, f"{p.u:.3g}", f"{p.c:g}", f"{p.tiny:.3g}", p.note] for p in tol.POLICY.values()]
    return [
        "# convstdp conformance report\n",
        f"**Verdict: {'PASS' if doc['ok'] else 'FAIL'}** — {len(cases)} cases ({doc['grid']} grid, seed "
        f"{doc['seed']}) checked on {names} against the NumPy reference. convstdp {env['convstdp']}, "
        f"{env['platform']}, {env['cpu_model']}, {doc['created']}.\n",
        f"Closest to the bound (worst error/bound over all operators, 1 = at the bound): {', '.join(closest) or '-'}.",
        "\n## What was checked\n",
        "Every output element of `deconv2d`, `deconv2d_dk`, `deconv2d_dx`, `stdp_update` and `stdp_step` against "
        "the float64 reference, the adjoint identities on independent inputs, output shapes and dtypes (SPEC §4), "
        "inputs left unchanged, and every declared internal path exercised (quick and full grids). The precision "
        f"a backend is checked at comes from the registry or `--precision`, never from the backend. See `{DOCS}` "
        "for the case values, the contract and the derivation of the bounds. Axis values covered:\n",
        *(f"- {axis}: {', '.join(vals)}" for axis, vals in coverage(cases).items()),
        "\n## Tolerance policy\n",
        "Per element: `bound = c · u · scale + tiny`, `scale = sqrt(n·(S²/3 + 2R²)) + R + |S|` (`n` the element's "
        "non-zero terms, `S` the reference value, `R` the root of the sum of its squared terms); dW covers LTP and "
        "LTD summed apart or stacked, W' inherits `|eta|·scale(dW)`, the step's dX `dX(scale(W'), |post_spike|)`. "
        f"No global atol; a result passes when every element's error/bound ≤ 1. Derivation and measurements: `{DOCS}`.",
        "",
        table(["mode", "u (unit roundoff)", "c (safety)", "tiny", "note"], policy, "md"),
    ]


def _summary(doc: dict, runs: Sequence[BackendRun], cases: Sequence[Case], fmt: str) -> list[str]:
    header = ["backend", "operator", "cases", "passed", "failed", "unsupported", "worst err/bound", "worst case"]
    rows = [
        [r.backend, r.operator, r.cases, r.passed, r.failed, r.unsupported, _fmt_ratio(r.worst_ratio), r.worst_case]
        for r in summarize(runs)
    ]
    return [table(header, rows, fmt)] if rows else ["_No results._"] if fmt == "md" else []


def _tiers(doc: dict, runs: Sequence[BackendRun], cases: Sequence[Case], fmt: str) -> list[str]:
    header, rows = _tier_rows(runs, cases)
    return [table(header, rows, fmt)] if rows else []


def _timing(doc: dict, runs: Sequence[BackendRun], cases: Sequence[Case], fmt: str) -> list[str]:
    header = ["backend", "seconds", "first case s (JIT warm-up)", "version", "precision"]
    rows = [
        [
            br.name,
            f"{br.seconds:.2f}",
            f"{br.first_case_s:.2f}",
            br.info.get("version", ""),
            f"checked at {br.info.get('precision', 'highest')} ({br.info.get('precision_source', 'registry')})",
        ]
        for br in runs
    ]
    return [table(header, rows, fmt)] if rows else []


def _paths(doc: dict, runs: Sequence[BackendRun], cases: Sequence[Case], fmt: str) -> list[str]:
    rows = [[br.name, p, n, "" if n else "NOT EXERCISED"] for br in runs for p, n in br.path_coverage().items()]
    return [table(["backend", "path", "cases", ""], rows, fmt)] if rows else []


def _failures(doc: dict, runs: Sequence[BackendRun], cases: Sequence[Case], fmt: str, most: int = 20) -> list[str]:
    failures = [r for br in runs for r in br.results if r.failed]
    lines = [f"- {r.message()}" for r in failures[:most]] or (["None."] if fmt == "md" else [])
    if len(failures) > most:
        lines.append(f"- ... and {len(failures) - most} more (the JSON record has them all)")
    if failures and doc["grid"] != "random":
        bad = failures[0]
        lines.append(
            f"reproduce one: convstdp conformance --backend {bad.backend} --case '{bad.case}' --seed {doc['seed']}"
        )
    return lines + doc.get("repros", [])


def _problems(doc: dict, runs: Sequence[BackendRun], cases: Sequence[Case], fmt: str) -> list[str]:
    skipped = [(k, v["reason"]) for k, v in doc["backends"].items() if v.get("status") == "unavailable"]
    return [f"- grid problem: {p}" for p in doc["grid_problems"]] + [f"- skipped {k}: {why}" for k, why in skipped]


def _self_test(doc: dict, runs: Sequence[BackendRun], cases: Sequence[Case], fmt: str) -> list[str]:
    st = doc.get("self_test")
    if not st:
        return []
    return [
        "Broken backends built from the reference; each must fail on the grid (a logic bug stops at its first "
        "failure), the control must pass. A precision bug must exceed its threshold on the float32 cases of every "
        "size tier; err/bound gives its least ratio per tier.\n",
        self_test_table(st, fmt),
        *([] if st["control_passed"] else ["the control (the reference wrapper, no bug) FAILED:"]),
        *(f"- {m}" for m in st.get("control_failures", [])),
    ]


def _departures(doc: dict, runs: Sequence[BackendRun], cases: Sequence[Case], fmt: str) -> list[str]:
    return [f"- {d}" for d in _departure_lines(runs)] or ["None."]


def _environment(doc: dict, runs: Sequence[BackendRun], cases: Sequence[Case], fmt: str) -> list[str]:
    return ["```", json.dumps(doc["environment"], indent=2), "```"]


def render(
    doc: dict[str, Any], runs: Sequence[BackendRun], cases: Sequence[Case], fmt: str = "text", max_failures: int = 20
) -> str:
    """The run as terminal ``"text"`` or the ``"md"`` report: summary, size tiers, timing, paths,
    failures with a command that reproduces one, grid problems and skipped backends, the self-test;
    Markdown adds the head (:func:`_header`), the departures from SPEC and the environment."""
    st = doc.get("self_test") or {}
    sections = [
        (
            "Summary" + ("" if fmt == "md" else f": {len(cases)} cases ({doc['grid']} grid, seed {doc['seed']})"),
            _summary,
        ),
        ("Worst error/bound by size tier (cases)", _tiers),
        ("Timing", _timing),
        ("Path coverage (cases that exercised each internal path)", _paths),
        (f"Failures ({sum(len(br.failed) for br in runs)})", partial(_failures, most=max_failures)),
        ("Grid problems and skipped backends", _problems),
        (
            f"Self-test: caught {st.get('caught')}/{st.get('total')} on {st.get('cases')} cases ({st.get('required')})",
            _self_test,
        ),
    ]
    if fmt == "md":
        sections += [("Departures from SPEC (unsupported configurations, declared precision, dtype)", _departures)]
        sections += [("Environment", _environment)]
    out = _header(doc, runs, cases) if fmt == "md" else []
    for title, part in sections:
        body = part(doc, runs, cases, fmt)
        if body:
            out += ["", f"## {title}" if fmt == "md" else f"{title}:", "", *body]
    return "\n".join(out).strip("\n") + "\n"
