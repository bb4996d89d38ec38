"""The tolerance policy: one table, one formula, no global atol.

Per output element, ``|got - expected| <= bound = c · u · scale + tiny``, with ``u`` the unit
roundoff of the result dtype (or of the precision mode the backend is checked at, when coarser),
``c`` the safety factor of :data:`POLICY` and ``scale`` computed from the float64 reference by
:mod:`convstdp.conformance.expectation`. An element whose terms are all exactly zero has scale 0:
its bound is ``tiny`` and it must come out exactly zero.

Derivation: one sum of products
-------------------------------
An element ``r = Σ_i t_i``, ``t_i = a_i·b_i``, is computed in some order. To first order the result
is ``r + Σ_i ε_i·t_i + Σ_k δ_k·s_k`` (``|ε|, |δ| <= u``): each product rounds once, and each
addition rounds the partial sum ``s_k`` it forms. Three facts make this small:

1. Only non-zero terms round: ``0·b`` and ``s + 0`` are exact. ``n`` is the number of non-zero
   terms, ``n = B(a != 0, b != 0)`` (the operator ``B`` on indicators), not the geometric count:
   spikes at 10 % density make it 10x smaller.
2. The roundings behave as independent, mean-zero errors (Higham & Mary, "A new approach to
   probabilistic rounding error analysis", 2019), so the error is about ``0.4·u·sqrt(Σ s_k²)``
   (round to nearest with random low-order bits), not ``u·Σ_k |s_k|``.
3. For a sequential sum of exchangeable terms with total ``S`` and ``R² = Σ t_i²``, the partial sums
   are a linear drift ``(k/n)·S`` plus a random walk of variance at most ``k·R²/n``:
   ``E Σ s_k² <= n·S²/3 + n·R²/2``. Blocked, pairwise and chunked orders (BLAS, XLA, Numba's chunk
   partials) form shorter partial sums, so the sequential order bounds them.

The drift part is fixed once ``S`` is, so its error is Gaussian and its worst case over ``M``
elements grows like ``sqrt(2 ln M)``. The random-walk part is not: ``Σ s_k²`` of a walk that
wanders far and comes back is several times its mean, and that tail is exponential, so an element
whose terms nearly cancel has heavier-tailed errors; across millions of elements its worst case
needs about four times the mean. Weighting ``R²`` by 2 (not 1/2) puts both kinds of element at the
same measured worst ratio (a plain sequential float32 sum, c = 1: 1.5 on dK with ``R² << S²``,
1.7-2.0 on deconv2d and dX with ``R² ~ S²``; with weight 1/2 it was 2.1-2.8). Hence::

    scale = sqrt(n·(S²/3 + 2·R²)) + R + |S|

``R`` for the product roundings, ``|S|`` for the output's own rounding. ``S`` is the reference
value and ``R = sqrt(B(a², b²))`` (float64, on inputs normalised by their largest magnitude so that
nothing overflows). The previous policy's ``(sqrt(n) + 1)·Σ|t_i|`` (geometric ``n``) is larger by
about ``sqrt(3)·Σ|t_i| / |S|`` where terms drift: on dK at workload sizes a sequential sum used only
4 % of it, and a 1e-4 relative error passed.

Composed outputs
----------------
- ``dW = LTP - LTD`` (two dK sums ``A = LTP``, ``B = -LTD``, ``T = A + B``): a backend may sum them
  separately and subtract, or sum both sets of terms as one (JAX stacks them along the batch and
  reduces once). In the order "all of A's terms, then all of B's", B's partial sums start from
  ``A``: ``Σ s_k² = n_A·A²/3 + n_B·(A² + A·T + T²)/3``, which exceeds the separate sums' by
  ``n_B·A·T``. :func:`stacked_scale` covers both orders and separate sums:
  ``sqrt((n_A·A² + n_B·B²)/3 + max(n_B·|A|, n_A·|B|)·|T| + 2·(n_A·R_A² + n_B·R_B²))``.
  Outside the sums: ``3·R_LTP`` (products, ``fl(pre_trace - target)``, ``A_plus·post_spike``),
  ``2·|LTP|`` (its rounding, ``fl(A_plus)``), ``2·R_LTD + 2·|LTD|`` likewise, ``|dW|`` (the
  difference), and ``|target·A_plus|·dK(1, |post_spike|)`` (``fl(target)`` shifts every LTP term
  alike). With a target, every pre_trace element is a term that can round (``n_LTP`` is dense).
  When the traces are narrower than the sum (float32 traces in a float64 result), every term
  ``pre_trace - target`` carries the same low-order bits, the target's: the roundings of that part
  are correlated, not random, and add up like a sequential sum of one constant, ``u·|target·A_plus|
  ·max|post_spike|·m²/2`` for ``m`` non-zero post terms. Found by forcing Numba's dense path onto
  the full grid: on ``s3-valid-k2x2-m32x32-c1to2-n3-mix-sim-bool`` its dW (like NumPy's own
  ``einsum`` of the same terms) stood at 1.02 of the random-rounding bound, every other case <= 0.6.
- ``W' = clip(v)``, ``v = W + eta·dW - w_decay·W``: ``|eta|·scale(dW) + 3·(|eta|·(|LTP| + |LTD|)
  + |W|·(1 + w_decay)) + |v| + |W'|`` (``fl(eta)``, the products, the sums, the output).
  Clipping is 1-Lipschitz, so the unclipped value's bound carries over (loose where W' is clipped:
  there a correct W' is exact to the clip value's rounding, but the bound cannot know ``c·u``).
- The fused step's ``dX = dX(W', post_spike)``: its own sum's scale, plus
  ``dX(scale(W'), |post_spike|)`` for the error W' carries in.

Every scale is linear in ``u``'s coefficient, so one ``c·u`` multiplies it. float64 results are
compared with the reference's own float64 result, whose rounding follows the same model; ``c``
covers both. A reduced-precision mode (tf32, bf16, float16 products; float32 sums) uses the same
scale with its coarser ``u``: loose (its product roundings need only ``u_mode·R``), but sound.

Choice of c, measured (scripts/measure_roundoff.py)
----------------------------------------------------
Worst error / (u·scale) over every element (c = 1), float32 unless noted; implementations: a plain
sequential float32 sum (``seq``: one accumulator per element, no FMA, (n, h, w) order for dK, dW
as two such sums), numba, JAX (CPU), the PyTorch peer, the reference rounded once.

=====================================  =====  =====  =====  =====  =====
tier (cases; JAX: the quick grid's)    seq    numba  jax    torch  ref
=====================================  =====  =====  =====  =====  =====
small f32, full grid (826; 15)         1.42   1.48   0.97   1.64   0.34
small f64 and mixed, full grid (896)   1.63   1.84   1.04   1.74   0.27
large tier f32 (3)                     1.66   1.70   0.96   1.65   0.30
large tier f64 and mixed (2)           1.96   1.73   1.70   1.96   0.02
workloads, random inputs (3)           2.03   2.03   1.73   1.95   0.19
workloads, SPEC §8 inputs (3)          1.57   1.59   1.27   1.50   0.30
=====================================  =====  =====  =====  =====  =====

The worst is a sequential sum's dX over 2·10^5 elements (batch-mid, random inputs): 2.03, so
``c = 4`` leaves every correct implementation at or below ~0.5 (quick grid: numba 0.43, JAX 0.43;
full grid: numba 0.46). With ``c = 4`` (weakest detection over each tier's float32 cases; the
previous policy's in parentheses):

- a uniform relative error of 1e-4, per tier small / large / workloads with random inputs /
  SPEC §8 inputs: dK 6.2 (0.45) / 12 (1.5) / 2.8 (0.18) / 28 (1.6); stdp_update 3.9 (1.05) /
  7.9 (1.5) / 1.7 (0.46) / 1.7 (0.26); dX 3.0-113 (0.96-23); deconv2d and the step 59-127 (30-49).
- inputs rounded to bfloat16: deconv2d 1070-3000 (650-1150), dK 18-392 (0.99-18), dX 13.7-1660
  (8.4-395) at every tier (none on dK with SPEC §8 inputs: both operands are spikes, which
  bfloat16 represents exactly).
- The limit: on ``stdp_update`` at workload sizes, bf16-rounded *arrays* (traces, kernel) give only
  2.0 (random inputs) and 6.1 (SPEC §8 inputs), 9.6 at worst in the small tier. That is not the
  bound's slack but float32's: dW sums ``n`` ~ 10^4 dense positive trace terms, where a sequential
  float32 sum's relative error grows like ``u·sqrt(n)`` while bf16-rounded terms give about
  ``u_bf16/sqrt(n)``, a ratio of ``2^16/n`` (~5-15 at these sizes). No bound that admits the
  sequential sum can put them 10x apart. The harness's bf16 bug, which also rounds the STDP scalars
  it folds into dK's operands, stands at 25 and 103 there (3.4 at worst in the small tier, on a
  case whose ``A_plus = 1`` is exact in bfloat16).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
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
        return asdict(self)


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
    """``sqrt(n·(S²/3 + 2·R²)) + p·R + v·|S|`` per element of a sum of ``n`` non-zero products
    with value ``S`` and root sum of squared terms ``R`` (module docstring); all arrays one shape."""
    return np.sqrt(count) * np.hypot(value / _SQRT3, _SQRT2 * rms) + extra_products * rms + extra_values * np.abs(value)


def stacked_scale(
    a: tuple[np.ndarray, np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> np.ndarray:
    """The summation part of the scale of ``T = A + B``, two sums given as ``(value, rms, count)``
    each, summed either separately and then added, or as one sum over both sets of terms in either
    order (all of A's terms, then all of B's, or the reverse): per element

    ``sqrt((n_A·A² + n_B·B²)/3 + max(n_B·|A|, n_A·|B|)·|T| + 2·(n_A·R_A² + n_B·R_B²))``

    (module docstring, "Composed outputs"). Computed in units of the element's largest magnitude,
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
