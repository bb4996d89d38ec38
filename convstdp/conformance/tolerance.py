"""The tolerance policy: one table, one formula, no global atol.

Per output element, ``|got - expected| <= bound = c · u · scale + tiny``, with ``u`` the unit
roundoff of the result dtype (or of the precision mode the backend is checked at, when coarser),
``c`` the safety factor of :data:`POLICY` and ``scale`` computed from the float64 reference by
:mod:`convstdp.conformance.expectation`: ``scale = sqrt(n·(S²/3 + 2·R²)) + R + |S|`` for a sum of
``n`` non-zero products with value ``S`` and root sum of squared terms ``R``. An element whose terms
are all exactly zero has scale 0: its bound is ``tiny`` and it must come out exactly zero.

The derivation (probabilistic rounding of the partial sums of a sequential sum, the composed STDP
outputs) and the measurements behind ``c = 4`` are in ``docs/conformance.md``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Policy", "POLICY", "EXTRA_ROUNDINGS", "policy_for", "sum_scale", "stacked_scale", "bound", "ratio"]


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
        return dataclasses.asdict(self)


_SQRT2, _SQRT3 = float(np.sqrt(2.0)), float(np.sqrt(3.0))
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

# Coefficients of the roundings outside the sums (docs/conformance.md, "Composed outputs").
EXTRA_ROUNDINGS: dict[str, float] = {
    "sum_products": 1.0,  # R: each product rounds once
    "sum_values": 1.0,  # |S|: the output's own rounding
    "ltp_products": 3.0,  # R: products, fl(pre_trace - target), A_plus·post_spike
    "ltp_values": 2.0,  # |S|: the output's rounding, fl(A_plus)
    "ltd_products": 2.0,  # R: products, A_minus·post_trace
    "ltd_values": 2.0,  # |S|: the output's rounding, fl(A_minus)
    "W_terms": 3.0,  # |eta|·(|LTP|+|LTD|) and |W|·(1+w_decay): fl(eta), products, sums
}


def policy_for(dtype: Any, precision: str = "highest") -> Policy:
    """The policy row for a result ``dtype`` checked at ``precision`` (``"highest"``: the dtype's
    own; a reduced mode of :data:`POLICY` when coarser). ``ValueError`` for a mode the table does
    not know: a tolerance is never guessed."""
    dt = np.dtype(dtype)
    base = POLICY["float64" if dt == np.float64 else "float32"]
    prec = (precision or "highest").lower()
    if prec in ("highest", "default", dt.name):
        return base
    if prec not in POLICY:
        raise ValueError(f"precision {precision!r} is not in the tolerance table ({', '.join(POLICY)})")
    mode = POLICY[prec]
    return base if mode.u <= base.u else dataclasses.replace(mode, tiny=base.tiny)


def sum_scale(
    value: np.ndarray,
    rms: np.ndarray,
    count: np.ndarray,
    extra_products: float = EXTRA_ROUNDINGS["sum_products"],
    extra_values: float = EXTRA_ROUNDINGS["sum_values"],
) -> np.ndarray:
    """``sqrt(n·(S²/3 + 2·R²)) + p·R + v·|S|`` per element of a sum of ``n`` non-zero products
    with value ``S`` and root sum of squared terms ``R`` (docs/conformance.md); all arrays one shape."""
    return np.sqrt(count) * np.hypot(value / _SQRT3, _SQRT2 * rms) + extra_products * rms + extra_values * np.abs(value)


def stacked_scale(
    a: tuple[np.ndarray, np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> np.ndarray:
    """The summation part of the scale of ``T = A + B``, two sums given as ``(value, rms, count)``
    each, summed either separately and then added, or as one sum over both sets of terms in either
    order (all of A's terms, then all of B's, or the reverse): per element

    ``sqrt((n_A·A² + n_B·B²)/3 + max(n_B·|A|, n_A·|B|)·|T| + 2·(n_A·R_A² + n_B·R_B²))``

    (docs/conformance.md, "Composed outputs"). Computed in units of the element's largest magnitude,
    so nothing overflows."""
    (va, ra, na), (vb, rb, nb) = a, b
    t = va + vb
    m = np.maximum(np.maximum(np.abs(va), np.abs(vb)), np.maximum(ra, rb))
    m = np.where(m > 0, m, 1.0)
    va, vb, ra, rb, t = va / m, vb / m, ra / m, rb / m, t / m
    s2 = (
        (na * va * va + nb * vb * vb) / 3
        + np.maximum(nb * np.abs(va), na * np.abs(vb)) * np.abs(t)
        + 2 * (na * ra * ra + nb * rb * rb)
    )
    return m * np.sqrt(s2)


def bound(scale: np.ndarray, policy: Policy) -> np.ndarray:
    """Per-element bound ``c·u·scale + tiny``."""
    return policy.c * policy.u * scale + policy.tiny


def ratio(err: np.ndarray, bnd: np.ndarray) -> np.ndarray:
    """``err / bound`` elementwise; non-finite errors count as infinitely far."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r = err / bnd
    return np.where(np.isfinite(err), r, np.inf)
