"""The tolerance policy: one table, one formula, no global atol.

Every output element ``r`` of an operator is a sum of ``n`` products (``n`` counted per element:
the operator run on all-ones inputs). Computed in a floating format with unit roundoff ``u``,
its error is at most about ``n·u·Σ|terms|`` in the worst case, and behaves like
``sqrt(n)·u·Σ|terms|`` for the independent roundings of real data (Higham & Mary, "A new
approach to probabilistic rounding error analysis", 2019). We use the second, which is tight
enough to catch real bugs in float32 (a 0.1 % error on one element, inputs rounded to bfloat16)
and loose enough for any correct summation order::

    bound = c · u · scale + tiny
    scale = (sqrt(n) + r) · ref(|inputs|)

``ref(|inputs|)`` is the reference (float64) run on the absolute values of the inputs, i.e.
``Σ|terms|`` per element; ``r`` counts the roundings outside the sum (the output's own rounding,
and for ``stdp_update`` the trace shift, the scalings and the difference of the two ``dK``).
Composed results add the bounds they inherit: ``W' = W + eta·dW - w_decay·W`` carries
``|eta|·bound(dW)``; the fused step's ``dX = dX(W', post_spike)`` carries
``dX(bound(W'), |post_spike|)``. Clipping is 1-Lipschitz and adds nothing.

``u`` is the result dtype's unit roundoff, or the backend's declared reduced-precision mode's
(``backend.precision``, or ``impl.unit_roundoff``) when that is coarser. ``c`` is a safety
factor. Measured with ``c = 4`` (worst error/bound of a correct backend): numba 0.34 over the
full grid (1711 cases), JAX 0.27 over 99 sampled full-grid cases and 0.24 on the quick grid, the
reference's own float32 rounding 0.13; float64 ratios include the reference's own float64
rounding, which is why they are not smaller than float32's. The subtle self-test bugs land far
above 1 (a 0.1 % error on one element or bfloat16-rounded inputs: 10^2..10^4 in float32,
10^11 and more in float64).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["Policy", "POLICY", "policy_for", "bound", "ratio"]


@dataclass(frozen=True)
class Policy:
    """One row of the tolerance table: unit roundoff ``u``, safety factor ``c``, absolute floor
    ``tiny`` (so an element whose terms are all exactly zero must come out exactly zero)."""

    name: str
    u: float
    c: float
    tiny: float
    note: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_F32_TINY = float(np.finfo(np.float32).tiny)
_F64_TINY = float(np.finfo(np.float64).tiny)

# The one table of the policy: per dtype, and per declared reduced-precision mode.
POLICY: dict[str, Policy] = {
    "float64": Policy("float64", 2.0**-53, 4.0, _F64_TINY, "IEEE binary64"),
    "float32": Policy("float32", 2.0**-24, 4.0, _F32_TINY, "IEEE binary32; accumulating wider is fine"),
    "tf32": Policy("tf32", 2.0**-11, 4.0, _F32_TINY, "TensorFloat-32 products (10-bit mantissa), float32 sums"),
    "bf16": Policy("bf16", 2.0**-8, 4.0, _F32_TINY, "bfloat16 products (7-bit mantissa), float32 sums"),
    "float16": Policy("float16", 2.0**-11, 4.0, _F32_TINY, "IEEE binary16 products"),
}

# Coefficients of the roundings outside the sums (module docstring, "Composed outputs").
EXTRA_ROUNDINGS: dict[str, float] = {
    "sum_products": 1.0,  # R: each product rounds once
    "sum_values": 1.0,  # |S|: the output's own rounding
    "ltp_products": 3.0,  # R: products, fl(pre_trace - target), A_plus·post_spike
    "ltp_values": 2.0,  # |S|: the output's rounding, fl(A_plus)
    "ltd_products": 2.0,  # R: products, A_minus·post_trace
    "ltd_values": 2.0,  # |S|: the output's rounding, fl(A_minus)
    "W_terms": 3.0,  # |eta|·(|LTP|+|LTD|) and |W|·(1+w_decay): fl(eta), products, sums
}


def policy_for(dtype: Any, precision: str = "highest", unit_roundoff: float | None = None) -> Policy:
    """The policy row for a result ``dtype`` computed by a backend that declares ``precision``
    (``"highest"`` = the dtype's own) and optionally ``unit_roundoff``: the coarsest wins.

    Raises ``ValueError`` for a precision mode the table does not know and the backend does not
    quantify (``unit_roundoff``): a tolerance is never guessed.
    """
    dt = np.dtype(dtype)
    base = POLICY["float64" if dt == np.float64 else "float32"]
    rows = [base]
    prec = (precision or "highest").lower()
    if prec not in ("highest", "default", dt.name):
        if prec in POLICY:
            rows.append(POLICY[prec])
        elif unit_roundoff is None:
            raise ValueError(
                f"backend declares precision {precision!r}, which the tolerance table does not know "
                f"({', '.join(POLICY)}); declare impl.unit_roundoff to give its unit roundoff"
            )
    if unit_roundoff is not None and float(unit_roundoff) > 0:
        rows.append(
            Policy(f"declared u={float(unit_roundoff):.3g}", float(unit_roundoff), base.c, base.tiny, "declared")
        )
    worst = max(rows, key=lambda p: p.u)
    if worst is not base:
        worst = Policy(worst.name, worst.u, worst.c, base.tiny, worst.note)
    return worst


def sum_scale(
    value: np.ndarray,
    rms: np.ndarray,
    count: np.ndarray,
    extra_products: float = EXTRA_ROUNDINGS["sum_products"],
    extra_values: float = EXTRA_ROUNDINGS["sum_values"],
) -> np.ndarray:
    """``sqrt(n)·hypot(S, R) + p·R + v·|S|`` per element of a sum of ``n`` non-zero products with
    value ``S`` and root sum of squared terms ``R`` (module docstring); all arrays one shape."""
    return np.sqrt(count) * np.hypot(value, rms) + extra_products * rms + extra_values * np.abs(value)


def bound(scale: np.ndarray, policy: Policy) -> np.ndarray:
    """Per-element bound ``c·u·scale + tiny``."""
    return policy.c * policy.u * scale + policy.tiny


def ratio(err: np.ndarray, bnd: np.ndarray) -> np.ndarray:
    """``err / bound`` elementwise; non-finite errors count as infinitely far."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r = err / bnd
    return np.where(np.isfinite(err), r, np.inf)
