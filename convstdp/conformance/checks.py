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


# ----------------------------------------------------------------------------- results


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

    @classmethod
    def from_dict(cls, o: dict[str, Any]) -> OutputCheck:
        """Inverse of the JSON record (:func:`convstdp.present.jsonable`: ``"inf"`` strings, lists)."""
        conv = lambda k, v: v if v is None or k in ("output", "size", "mismatches") else _parse(k, v)  # noqa: E731
        return cls(**{k: conv(k, v) for k, v in o.items()})

    def describe(self) -> str:
        """``assert_close``-style lines: mismatch count and share, greatest differences and where."""
        share = 100.0 * self.mismatches / max(self.size, 1)
        where = f"at {self.index}" if self.index is not None else ""
        lines = [
            f"{self.output}: mismatched elements: {self.mismatches} / {self.size} ({share:.1f}%)",
            f"  greatest absolute difference: {self.abs_max:.6g} at {self.abs_index}"
            if self.abs_max is not None and self.abs_index is not None
            else "",
            f"  greatest relative difference: {self.rel_max:.6g} at {self.rel_index}"
            if self.rel_max is not None and self.rel_index is not None
            else "",
            f"  worst against its bound {where}: got {self.got:.9g}, expected {self.expected:.9g}, "
            f"error {self.error:.3g} > bound {self.bound:.3g} ({self.ratio:.3g}x)"
            if self.got is not None
            else f"  error/bound {self.ratio:.3g}",
        ]
        return "\n".join(line for line in lines if line)


def _parse(key: str, v: Any) -> Any:
    return tuple(v) if key.endswith("index") else float(v)


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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Result:
        ratio = d.get("ratio")
        outputs = [OutputCheck.from_dict(o) for o in d.get("outputs", [])]
        return cls(**{**d, "ratio": None if ratio is None else float(ratio), "outputs": outputs})


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
    i = int(np.argmax(r))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(err == 0, 0.0, err / np.abs(exp.value))
    err_n = np.where(np.isnan(err), np.inf, err)
    rel_n = np.where(np.isnan(rel), np.inf, rel)
    ia, ir = int(np.argmax(err_n)), int(np.argmax(rel_n))

    def at(k: int) -> tuple[int, ...]:
        return tuple(int(v) for v in np.unravel_index(k, r.shape))

    return OutputCheck(
        name,
        int(r.size),
        int(np.count_nonzero(~(r <= 1.0))),
        float(r.flat[i]),
        at(i),
        float(g.flat[i]),
        float(exp.value.flat[i]),
        float(err.flat[i]),
        float(bnd.flat[i]),
        float(err_n.flat[ia]),
        at(ia),
        float(rel_n.flat[ir]),
        at(ir),
    )


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
    if not callable(decl):
        return None
    reason = decl(case.geometry())
    return str(reason) if reason else None


def _call(backend: Any, case: Case, inputs: Inputs, op: Operator) -> tuple[list[np.ndarray], list[str]]:
    with paths.recording() as taken, x64_scope(case):
        outs = [np.asarray(o) for o in op.call(backend, case, inputs)]
    return outs, list(dict.fromkeys(taken))


def run_operator(
    backend: Any, case: Case, inputs: Inputs, op: Operator, exp: Expectation, precision: str = "highest"
) -> tuple[Result, list]:
    """Run one operator on one case, checked at ``precision`` (a row of the tolerance table, chosen
    by the registry or the user, never by the backend); returns its :class:`Result` and outputs."""
    copies = {a: inputs[a].copy() for a in op.args}
    t0 = time.perf_counter()
    try:
        outs, taken = _call(backend, case, inputs, op)
    except NotImplementedError as err:
        why = (
            "inside the subset it declares (impl.unsupported)"
            if callable(getattr(backend.impl, "unsupported", None))
            else "and it declares no supported subset (impl.unsupported), so it must support every case"
        )
        return Result(
            case.name,
            backend.name,
            op.name,
            "error",
            error=f"raised NotImplementedError {why}: {err}",
            seconds=time.perf_counter() - t0,
        ), []
    except Exception as err:  # every failure is recorded; the run goes on
        return Result(
            case.name, backend.name, op.name, "error", error=_brief_error(err), seconds=time.perf_counter() - t0
        ), []
    seconds = time.perf_counter() - t0
    expected = exp.ops[op.name]
    res = Result(case.name, backend.name, op.name, "pass", seconds=seconds, paths=taken)
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
    res.ratio = max((o.ratio for o in res.outputs), default=None)
    if res.problems or any(o.mismatches for o in res.outputs):
        res.status = "fail"
    return res, outs


def adjoint_inputs(case: Case, seed: int) -> Inputs:
    """Fresh random ``x``, ``kernel``, ``d_out`` for the adjoint identities, independent of the
    values the operators were checked on (so the identities are a second route to the truth)."""
    g = case.geometry()
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(f"adjoint/{case.name}".encode())])
    return {
        "x": rng.standard_normal(g.x_shape).astype(dtype_of(case, "x")),
        "kernel": rng.standard_normal(g.kernel_shape).astype(dtype_of(case, "kernel")),
        "d_out": rng.standard_normal(g.y_shape).astype(dtype_of(case, "d_out")),
    }


def adjoint_check(backend: Any, case: Case, seed: int = 0, precision: str = "highest") -> Result:
    """``<deconv2d(x,K), d> = <x, dX(K,d)> = <K, dK(x,d)>`` on the backend's own outputs, for
    random ``x``, ``K``, ``d`` drawn independently of the value checks' inputs.

    Each inner product is taken in float64; a backend output within its bound ``B`` moves its
    inner product by at most ``Σ|other|·B``, so the pairwise gaps are bounded by the sum of two
    such terms (plus float64 rounding of the inner products themselves).
    """
    inputs = adjoint_inputs(case, seed)
    exp = expect(case, inputs)
    res = Result(case.name, backend.name, "adjoint", "pass")
    outs: dict[str, np.ndarray] = {}
    for name in ("deconv2d", "deconv2d_dk", "deconv2d_dx"):
        try:
            (out,), taken = _call(backend, case, inputs, OPS[name])
        except Exception as err:
            res.status, res.error = "error", f"{name} raised {_brief_error(err)}"
            return res
        res.paths.extend(p for p in taken if p not in res.paths)
        outs[name] = out
    y, dk, dx = outs["deconv2d"], outs["deconv2d_dk"], outs["deconv2d_dx"]
    x, k, d = (_f64(inputs[a]) for a in ("x", "kernel", "d_out"))
    ey, ek, ex = exp.ops["deconv2d"]["y"], exp.ops["deconv2d_dk"]["dK"], exp.ops["deconv2d_dx"]["dX"]
    for got, e, label in ((y, ey, "y"), (dk, ek, "dK"), (dx, ex, "dX")):
        if got.shape != e.value.shape:
            res.status = "fail"
            res.problems.append(f"{label} has shape {got.shape}, expected {e.value.shape}")
    if res.problems:
        return res
    pol_y, pol_k, pol_x = (tol.policy_for(e.dtype, precision) for e in (ey, ek, ex))
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
    res.policy = max((pol_y, pol_k, pol_x), key=lambda p: p.u).name
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
