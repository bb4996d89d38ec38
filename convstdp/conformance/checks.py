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
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from convstdp import paths
from convstdp.conformance import tolerance as tol
from convstdp.conformance.cases import Case, dtype_of
from convstdp.conformance.expectation import Expectation, Expected, _f64, expect
from convstdp.conformance.operators import OPERATOR_NAMES, OPERATORS, OPS, Inputs, Operator

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


@dataclass
class OutputCheck:
    """How one output compared: mismatching elements, the worst element (by error/bound), its error
    and bound, and, as ``torch.testing.assert_close`` reports them, the greatest absolute and
    relative differences and where they are."""

    output: str
    size: int
    mismatches: int
    ratio: float
    index: tuple[int, ...] | None
    got: float | None
    expected: float | None
    error: float | None
    bound: float | None
    abs_max: float | None = None
    abs_index: tuple[int, ...] | None = None
    rel_max: float | None = None
    rel_index: tuple[int, ...] | None = None

    def describe(self) -> str:
        """``assert_close``-style lines: mismatch count and share, greatest differences and where."""
        share = 100.0 * self.mismatches / max(self.size, 1)
        lines = [f"{self.output}: mismatched elements: {self.mismatches} / {self.size} ({share:.1f}%)"]
        for kind, most, at in (("absolute", self.abs_max, self.abs_index), ("relative", self.rel_max, self.rel_index)):
            if most is not None and at is not None:
                lines.append(f"  greatest {kind} difference: {most:.6g} at {at}")
        where = f"at {self.index}" if self.index is not None else ""
        last = (
            f"  worst against its bound {where}: got {self.got:.9g}, expected {self.expected:.9g}, "
            f"error {self.error:.3g} > bound {self.bound:.3g} ({self.ratio:.3g}x)"
            if self.got is not None
            else f"  error/bound {self.ratio:.3g}"
        )
        return "\n".join([*lines, last])


# A failed result's check, by a word in its problems (the first that matches), else by its operator.
_CHECK_BY_WORD = (("in place", "inputs modified"), ("dtype", "dtype"), ("shape", "shape"), ("returned", "shape"))


@dataclass
class Result:
    """The verdict for one (case, backend, operator).

    ``status``: ``pass`` | ``fail`` (numbers or contract) | ``error`` (raised, including
    ``NotImplementedError`` inside the backend's declared subset) | ``unsupported`` (outside the
    subset the backend declares, not run) | ``crash`` (the process running it died).
    ``ratio`` is the worst error/bound over the outputs (``None`` when nothing was compared);
    ``paths`` the internal paths the backend noted while serving the call (:mod:`convstdp.paths`).
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
    paths: list[str] = field(default_factory=list)

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
        if self.status != "fail":
            return {"error": "raised", "crash": "crash"}.get(self.status, "")
        by_word = (label for word, label in _CHECK_BY_WORD if any(word in p for p in self.problems))
        return next(by_word, "adjoint" if self.operator == "adjoint" else "values")

    def message(self) -> str:
        """A diagnostic: case, backend, operator, and what went wrong where (one line per output)."""
        head = f"{self.backend} {self.operator} [{self.case}]"
        if self.status in ("error", "crash", "unsupported"):
            return f"{head}: {self.status}: {self.error}"
        parts = list(self.problems) + [o.describe() for o in self.outputs if o.mismatches]
        if not parts:
            return f"{head}: {self.status} (ratio {self.ratio:.3g})"
        return f"{head}: {self.status}: " + "\n    ".join(p.replace("\n", "\n    ") for p in parts)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 6)}

    def settle(self) -> None:
        """The worst ratio over the outputs; ``fail`` on any problem or mismatch."""
        self.ratio = max((o.ratio for o in self.outputs), default=None)
        if self.problems or any(o.mismatches for o in self.outputs):
            self.status = "fail"


def compare(name: str, got: np.ndarray, exp: Expected, policy: tol.Policy) -> OutputCheck:
    """Elementwise ``|got - expected| <= bound`` (:func:`convstdp.conformance.tolerance.bound`);
    the worst element by ratio, and the greatest absolute and relative differences."""
    g = got.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(g - exp.value)
    bnd = tol.bound(exp.scale, policy)
    r = tol.ratio(err, bnd)
    if r.size == 0:
        return OutputCheck(name, 0, 0, 0.0, None, None, None, None, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(err == 0, 0.0, err / np.abs(exp.value))
    err_n, rel_n = (np.where(np.isnan(a), np.inf, a) for a in (err, rel))
    i, ia, ir = (int(np.argmax(a)) for a in (r, err_n, rel_n))
    at = [tuple(int(v) for v in np.unravel_index(k, r.shape)) for k in (i, ia, ir)]
    worst = (float(r.flat[i]), at[0], *(float(a.flat[i]) for a in (g, exp.value, err, bnd)))
    greatest = (float(err_n.flat[ia]), at[1], float(rel_n.flat[ir]), at[2])
    return OutputCheck(name, int(r.size), int(np.count_nonzero(~(r <= 1.0))), *worst, *greatest)


def _brief_error(err: BaseException) -> str:
    tb = traceback.extract_tb(err.__traceback__)
    where = f" (at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno} in {tb[-1].name})" if tb else ""
    return f"{type(err).__name__}: {err}{where}"


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


def declared_unsupported(backend: Any, case: Case) -> str | None:
    """Why ``case`` lies outside the subset ``backend`` declares (``impl.unsupported(geometry)``),
    or ``None``: inside it, or the backend declares no subset (then it must support everything)."""
    decl = getattr(backend.impl, "unsupported", None)
    reason = decl(case.geometry()) if callable(decl) else None
    return str(reason) if reason else None


def _call(backend: Any, case: Case, inputs: Inputs, op: Operator) -> tuple[list[np.ndarray], list[str]]:
    with paths.recording() as taken, x64_scope(case):
        outs = [np.asarray(o) for o in op.call(backend, case, inputs)]
    return outs, list(dict.fromkeys(taken))


def _raised(backend: Any, err: Exception) -> str:
    if not isinstance(err, NotImplementedError):
        return _brief_error(err)
    if callable(getattr(backend.impl, "unsupported", None)):
        return f"raised NotImplementedError inside the subset it declares (impl.unsupported): {err}"
    return (
        "raised NotImplementedError and it declares no supported subset (impl.unsupported), "
        f"so it must support every case: {err}"
    )


def run_operator(
    backend: Any, case: Case, inputs: Inputs, op: Operator, exp: Expectation, precision: str = "highest"
) -> tuple[Result, list]:
    """Run one operator on one case, checked at ``precision`` (a row of the tolerance table, chosen
    by the registry or the user, never by the backend); returns its :class:`Result` and outputs."""
    copies = {a: inputs[a].copy() for a in op.args}
    res = Result(case.name, backend.name, op.name, "pass")
    t0 = time.perf_counter()
    try:
        outs, res.paths = _call(backend, case, inputs, op)
    except Exception as err:  # every failure is recorded; the run goes on
        res.status, res.error = "error", _raised(backend, err)
    res.seconds = time.perf_counter() - t0
    if res.error:
        return res, []
    modified = [a for a in op.args if not np.array_equal(inputs[a], copies[a])]
    if modified:
        res.problems.append(f"modified its input(s) in place: {', '.join(modified)}")
        for a in modified:  # restore, so the next operator sees the case's real inputs
            inputs[a][...] = copies[a]
    expected = exp.ops[op.name]
    if len(outs) != len(expected):
        res.problems.append(f"returned {len(outs)} arrays, expected {len(expected)} ({', '.join(expected)})")
        res.status = "fail"
        return res, []
    try:
        policy = tol.policy_for(next(iter(expected.values())).dtype, precision)
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
    res.settle()
    return res, outs


def adjoint_inputs(case: Case, seed: int) -> Inputs:
    """Fresh random ``x``, ``kernel``, ``d_out`` for the adjoint identities, independent of the
    values the operators were checked on (so the identities are a second route to the truth)."""
    g = case.geometry()
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(f"adjoint/{case.name}".encode())])
    shapes = {"x": g.x_shape, "kernel": g.kernel_shape, "d_out": g.y_shape}
    return {a: rng.standard_normal(s).astype(dtype_of(case, a)) for a, s in shapes.items()}


def _inner(a: np.ndarray, b: np.ndarray, other: np.ndarray, bound: np.ndarray) -> tuple[float, float, float]:
    """``<a, b>``, its slack ``Σ|other|·B`` (``B`` the bound of the backend's output among ``a``,
    ``b``) and its magnitude ``<|a|, |b|>``."""
    return float(np.vdot(a, b)), float(np.vdot(abs(other), bound)), float(np.vdot(abs(a), abs(b)))


def adjoint_check(backend: Any, case: Case, seed: int = 0, precision: str = "highest") -> Result:
    """``<deconv2d(x,K), d> = <x, dX(K,d)> = <K, dK(x,d)>`` on the backend's own outputs, for
    random ``x``, ``K``, ``d`` drawn independently of the value checks' inputs.

    Each inner product is taken in float64; a backend output within its bound ``B`` moves its
    inner product by at most ``Σ|other|·B``, so the pairwise gaps are bounded by the sum of two
    such terms (plus float64 rounding of the inner products themselves).
    """
    inputs = adjoint_inputs(case, seed)
    exp = {n: next(iter(outs.values())) for n, outs in expect(case, inputs).ops.items()}
    res = Result(case.name, backend.name, "adjoint", "pass")
    got: dict[str, np.ndarray] = {}
    for name in exp:
        try:
            (got[name],), taken = _call(backend, case, inputs, OPS[name])
        except Exception as err:
            res.status, res.error = "error", f"{name} raised {_brief_error(err)}"
            return res
        res.paths.extend(p for p in taken if p not in res.paths)
    res.problems = [
        f"{OPS[n].outputs[0]} has shape {got[n].shape}, expected {e.value.shape}"
        for n, e in exp.items()
        if got[n].shape != e.value.shape
    ]
    if res.problems:
        res.status = "fail"
        return res
    pols = {n: tol.policy_for(e.dtype, precision) for n, e in exp.items()}
    res.policy = max(pols.values(), key=lambda p: p.u).name
    bnd = {n: tol.bound(e.scale, pols[n]) for n, e in exp.items()}
    x, k, d = (_f64(inputs[a]) for a in ("x", "kernel", "d_out"))
    y, dk, dx = (_f64(got[n]) for n in ("deconv2d", "deconv2d_dk", "deconv2d_dx"))
    v0, s0, m0 = _inner(y, d, d, bnd["deconv2d"])
    u, tiny = tol.POLICY["float64"].u, tol.POLICY["float64"].tiny
    for label, (v, s, m), size in (
        ("<x,dX>", _inner(x, dx, x, bnd["deconv2d_dx"]), x.size),
        ("<K,dK>", _inner(k, dk, k, bnd["deconv2d_dk"]), k.size),
    ):
        gap = abs(v0 - v)
        bound = max(s0 + s + u * (y.size + size) * (m0 + m), tiny)
        r = gap / bound if np.isfinite(gap) else np.inf
        res.outputs.append(OutputCheck(f"<y,d> vs {label}", 1, int(not r <= 1.0), float(r), None, v, v0, gap, bound))
    res.settle()
    return res


def check_case(
    backend: Any,
    case: Case,
    inputs: Inputs,
    exp: Expectation,
    operators: Sequence[str] | None = None,
    *,
    seed: int = 0,
    precision: str = "highest",
) -> list[Result]:
    """Every requested operator of ``case`` on ``backend`` checked at ``precision``, plus the
    adjoint identities (on independent inputs); exceptions are recorded per operator, never raised.

    A case outside the subset the backend declares (:func:`declared_unsupported`) is recorded as
    ``unsupported`` for every operator and not run.
    """
    wanted = [op for op in OPERATOR_NAMES if op in set(operators or OPERATOR_NAMES)]
    reason = declared_unsupported(backend, case)
    if reason is not None:
        return [Result(case.name, backend.name, op, "unsupported", error=reason) for op in wanted]
    results = [run_operator(backend, case, inputs, OPS[op], exp, precision)[0] for op in wanted if op in OPS]
    if "adjoint" in wanted:
        try:
            results.append(adjoint_check(backend, case, seed, precision))
        except Exception as err:
            results.append(Result(case.name, backend.name, "adjoint", "error", error=_brief_error(err)))
    return results
