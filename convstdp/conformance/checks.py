"""The checks run on each (case, backend, operator).

The operators are data (:mod:`convstdp.conformance.operators`); the float64 expectation and
tolerance scales come from :mod:`convstdp.conformance.expectation`. Each output is compared
element by element against its bound; the adjoint identities are checked on the backend's own
``deconv2d``, ``deconv2d_dx`` and ``deconv2d_dk`` outputs.
"""

from __future__ import annotations

import contextlib
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convstdp.conformance import tolerance as tol
from convstdp.conformance.cases import Case
from convstdp.conformance.expectation import Expectation, Expected, _f64, expect
from convstdp.conformance.operators import OPERATOR_NAMES, OPERATORS, Inputs, Operator

__all__ = [
    "Operator",
    "OPERATORS",
    "OPERATOR_NAMES",
    "Expectation",
    "Expected",
    "Result",
    "OutputCheck",
    "expect",
    "check_case",
]


# ----------------------------------------------------------------------------- results


@dataclass
class OutputCheck:
    """How one output compared: mismatching elements, the worst element, its error and bound."""

    output: str
    size: int
    mismatches: int
    ratio: float
    index: tuple[int, ...] | None
    got: float | None
    expected: float | None
    error: float | None
    bound: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "size": self.size,
            "mismatches": self.mismatches,
            "ratio": _json_float(self.ratio),
            "index": list(self.index) if self.index is not None else None,
            "got": _json_float(self.got),
            "expected": _json_float(self.expected),
            "error": _json_float(self.error),
            "bound": _json_float(self.bound),
        }


def _json_float(v: float | None) -> float | str | None:
    if v is None:
        return None
    v = float(v)
    return v if np.isfinite(v) else str(v)


@dataclass
class Result:
    """The verdict for one (case, backend, operator).

    ``status``: ``pass`` | ``fail`` (numbers or contract) | ``error`` (raised) | ``unsupported``
    (raised ``NotImplementedError``) | ``crash`` (the process running it died).
    ``ratio`` is the worst error/bound over the outputs (``None`` when nothing was compared).
    """

    case: str
    backend: str
    operator: str
    status: str
    ratio: float | None = None
    outputs: list[OutputCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    policy: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("pass", "unsupported")

    @property
    def failed(self) -> bool:
        return self.status in ("fail", "error", "crash")

    def worst(self) -> OutputCheck | None:
        return max(self.outputs, key=lambda o: o.ratio, default=None)

    def check(self) -> str:
        """Which check this result failed: ``values``, ``adjoint``, ``dtype``, ``shape``,
        ``inputs modified``, ``raised`` or ``crash`` (``""`` when it did not fail)."""
        if not self.failed:
            return ""
        if self.status == "error":
            return "raised"
        if self.status == "crash":
            return "crash"
        for word, label in (
            ("in place", "inputs modified"),
            ("dtype", "dtype"),
            ("shape", "shape"),
            ("returned", "shape"),
        ):
            if any(word in p for p in self.problems):
                return label
        return "adjoint" if self.operator == "adjoint" else "values"

    def message(self) -> str:
        """One diagnostic line: case, backend, operator, and what went wrong where."""
        head = f"{self.backend} {self.operator} [{self.case}]"
        if self.status in ("error", "crash", "unsupported"):
            return f"{head}: {self.status}: {self.error}"
        parts = list(self.problems)
        for o in self.outputs:
            if o.mismatches:
                where = f"worst at {o.index}" if o.index is not None else "value"
                parts.append(
                    f"{o.output}: {o.mismatches}/{o.size} elements off; {where}: "
                    f"got {o.got:.9g}, expected {o.expected:.9g}, error {o.error:.3g} > bound {o.bound:.3g} "
                    f"({o.ratio:.3g}x)"
                )
        return f"{head}: {self.status}" + (": " + "; ".join(parts) if parts else f" (ratio {self.ratio:.3g})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "backend": self.backend,
            "operator": self.operator,
            "status": self.status,
            "ratio": _json_float(self.ratio),
            "outputs": [o.to_dict() for o in self.outputs],
            "problems": self.problems,
            "error": self.error,
            "seconds": round(self.seconds, 6),
            "policy": self.policy,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Result:
        def f(v: Any) -> float | None:
            return None if v is None else float(v)

        outs = [
            OutputCheck(
                o["output"],
                o["size"],
                o["mismatches"],
                float(o["ratio"]),
                tuple(o["index"]) if o["index"] is not None else None,
                f(o["got"]),
                f(o["expected"]),
                f(o["error"]),
                f(o["bound"]),
            )
            for o in d.get("outputs", [])
        ]
        return cls(
            d["case"],
            d["backend"],
            d["operator"],
            d["status"],
            f(d.get("ratio")),
            outs,
            list(d.get("problems", [])),
            d.get("error"),
            float(d.get("seconds", 0.0)),
            d.get("policy", ""),
        )


def compare(name: str, got: np.ndarray, exp: Expected, policy: tol.Policy) -> OutputCheck:
    """Elementwise ``|got - expected| <= c·u·scale + tiny``; the worst element by ratio."""
    g = got.astype(np.float64)
    err = np.abs(g - exp.value)
    bnd = tol.bound(exp.scale, policy)
    r = tol.ratio(err, bnd)
    if r.size == 0:
        return OutputCheck(name, 0, 0, 0.0, None, None, None, None, None)
    i = int(np.argmax(r))
    idx = tuple(int(v) for v in np.unravel_index(i, r.shape))
    return OutputCheck(
        name,
        int(r.size),
        int(np.count_nonzero(~(r <= 1.0))),
        float(r.flat[i]),
        idx,
        float(g.flat[i]),
        float(exp.value.flat[i]),
        float(err.flat[i]),
        float(bnd.flat[i]),
    )


def _brief_error(err: BaseException) -> str:
    tb = traceback.extract_tb(err.__traceback__)
    where = f" (at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno} in {tb[-1].name})" if tb else ""
    return f"{type(err).__name__}: {err}{where}"


def backend_policy(backend: Any, dtype: np.dtype) -> tol.Policy:
    """The tolerance row for ``backend`` producing ``dtype`` (its declared precision applied)."""
    return tol.policy_for(dtype, backend.precision, getattr(backend.impl, "unit_roundoff", None))


def x64_scope(case: Case) -> contextlib.AbstractContextManager[Any]:
    """JAX's 64-bit mode, scoped to one call, for cases with float64 inputs.

    JAX computes float64 only in its x64 mode (the JAX backend refuses float64 otherwise, rather
    than silently downcasting). float32 cases run in JAX's default mode, as users run them.
    Nothing happens unless JAX is already imported (by a backend that uses it).
    """
    jax = sys.modules.get("jax")
    if case.dtype == "f32" or jax is None or getattr(jax.config, "jax_enable_x64", True):
        return contextlib.nullcontext()
    scope = getattr(jax, "enable_x64", None)
    return scope(True) if callable(scope) else contextlib.nullcontext()


def run_operator(backend: Any, case: Case, inputs: Inputs, op: Operator, exp: Expectation) -> tuple[Result, list]:
    """Run one operator on one case; returns its :class:`Result` and the outputs (as ndarrays)."""
    copies = {a: inputs[a].copy() for a in op.args}
    t0 = time.perf_counter()
    try:
        with x64_scope(case):
            raw = op.call(backend, case, inputs)
            outs = [np.asarray(o) for o in raw]
    except NotImplementedError as err:
        return Result(
            case.name,
            backend.name,
            op.name,
            "unsupported",
            error=str(err) or "NotImplementedError",
            seconds=time.perf_counter() - t0,
        ), []
    except Exception as err:  # every failure is recorded; the run goes on
        return Result(
            case.name, backend.name, op.name, "error", error=_brief_error(err), seconds=time.perf_counter() - t0
        ), []
    seconds = time.perf_counter() - t0
    expected = exp.ops[op.name]
    res = Result(case.name, backend.name, op.name, "pass", seconds=seconds)
    modified = [a for a in op.args if not np.array_equal(inputs[a], copies[a])]
    if modified:
        res.problems.append(f"modified its input(s) in place: {', '.join(modified)}")
        for a in modified:  # restore, so the next operator sees the case's real inputs
            inputs[a][...] = copies[a]
    if len(outs) != len(expected):
        res.problems.append(f"returned {len(outs)} arrays, expected {len(expected)} ({', '.join(expected)})")
        res.status = "fail"
        return res, []
    try:
        policy = backend_policy(backend, next(iter(expected.values())).dtype)
    except ValueError as err:
        res.status, res.error = "error", str(err)
        return res, []
    res.policy = policy.name
    for (name, e), got in zip(expected.items(), outs, strict=True):
        if got.shape != e.value.shape:
            res.problems.append(f"{name} has shape {got.shape}, expected {e.value.shape}")
            continue
        if got.dtype != e.dtype:
            res.problems.append(f"{name} has dtype {got.dtype}, expected {e.dtype} (SPEC §4)")
        res.outputs.append(compare(name, got, e, policy))
    res.ratio = max((o.ratio for o in res.outputs), default=None)
    if res.problems or any(o.mismatches for o in res.outputs):
        res.status = "fail"
    return res, outs


def adjoint_check(backend: Any, case: Case, inputs: Inputs, exp: Expectation, outs: dict[str, list]) -> Result | None:
    """``<deconv2d(x,K), d> = <x, dX(K,d)> = <K, dK(x,d)>`` on the backend's own outputs.

    Each inner product is taken in float64; a backend output within its bound ``B`` moves its
    inner product by at most ``Σ|other|·B``, so the pairwise gaps are bounded by the sum of two
    such terms (plus float64 rounding of the inner products themselves).
    """
    try:
        (y,), (dk,), (dx,) = outs["deconv2d"], outs["deconv2d_dk"], outs["deconv2d_dx"]
    except (KeyError, ValueError):
        return None
    x, k, d = (_f64(inputs[a]) for a in ("x", "kernel", "d_out"))
    ey, ek, ex = exp.ops["deconv2d"]["y"], exp.ops["deconv2d_dk"]["dK"], exp.ops["deconv2d_dx"]["dX"]
    if y.shape != ey.value.shape or dk.shape != ek.value.shape or dx.shape != ex.value.shape:
        return None
    pol_y, pol_k, pol_x = (backend_policy(backend, e.dtype) for e in (ey, ek, ex))
    y64, dk64, dx64 = _f64(y), _f64(dk), _f64(dx)
    vals = {"<y,d>": float(np.vdot(y64, d)), "<x,dX>": float(np.vdot(x, dx64)), "<K,dK>": float(np.vdot(k, dk64))}
    slack = {
        "<y,d>": float(np.vdot(abs(d), tol.bound(ey.scale, pol_y))),
        "<x,dX>": float(np.vdot(abs(x), tol.bound(ex.scale, pol_x))),
        "<K,dK>": float(np.vdot(abs(k), tol.bound(ek.scale, pol_k))),
    }
    mags = {
        "<y,d>": float(np.vdot(abs(y64), abs(d))),
        "<x,dX>": float(np.vdot(abs(x), abs(dx64))),
        "<K,dK>": float(np.vdot(abs(k), abs(dk64))),
    }
    res = Result(case.name, backend.name, "adjoint", "pass", policy=max((pol_y, pol_k, pol_x), key=lambda p: p.u).name)
    for other in ("<x,dX>", "<K,dK>"):
        gap = abs(vals["<y,d>"] - vals[other])
        n = y.size + (x.size if other == "<x,dX>" else k.size)
        bnd = slack["<y,d>"] + slack[other] + tol.POLICY["float64"].u * n * (mags["<y,d>"] + mags[other])
        bnd = max(bnd, tol.POLICY["float64"].tiny)
        r = gap / bnd if np.isfinite(gap) else np.inf
        res.outputs.append(
            OutputCheck(f"<y,d> vs {other}", 1, int(not r <= 1.0), float(r), None, vals[other], vals["<y,d>"], gap, bnd)
        )
    res.ratio = max(o.ratio for o in res.outputs)
    if any(o.mismatches for o in res.outputs):
        res.status = "fail"
    return res


def check_case(
    backend: Any, case: Case, inputs: Inputs, exp: Expectation, operators: Sequence[str] | None = None
) -> list[Result]:
    """Every requested operator of ``case`` on ``backend``, plus the adjoint identities when the
    three deconvolution operators ran; exceptions are recorded per operator, never raised."""
    wanted = set(operators or OPERATOR_NAMES)
    results: list[Result] = []
    outs: dict[str, list] = {}
    for op in OPERATORS:
        if op.name not in wanted and not (
            op.name in ("deconv2d", "deconv2d_dk", "deconv2d_dx") and "adjoint" in wanted
        ):
            continue
        res, got = run_operator(backend, case, inputs, op, exp)
        if op.name in wanted:
            results.append(res)
        if got:
            outs[op.name] = got
    if "adjoint" in wanted:
        try:
            adj = adjoint_check(backend, case, inputs, exp, outs)
        except Exception as err:
            adj = Result(case.name, backend.name, "adjoint", "error", error=_brief_error(err))
        if adj is not None:
            results.append(adj)
    return results
