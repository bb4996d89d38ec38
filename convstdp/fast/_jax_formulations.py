"""The SPEC §3 operators as ``jax.lax`` programs, for explicit, already-validated geometry.

Two families, chosen per call by :func:`choose_formulation` (the choice is static under ``jit``):

``"conv"``
    What XLA's convolution emitters and cuDNN are built for: ``deconv2d`` is a convolution of the
    stride-dilated input (``lhs_dilation``), ``dK`` the kernel gradient of the strided convolution
    that gives ``dX`` (a ``rhs_dilation`` convolution with the batch as the contracted feature),
    ``dX`` a strided convolution. On GPU these map to cuDNN forward, backward-data and
    backward-filter kernels.

``"phase"``
    For XLA's CPU runtime, whose dilated convolutions crawl (the kernel gradient of a stride-2
    transposed convolution runs 5-10x below the machine's matmul rate) and which maps every
    execution's temporaries afresh (each touched page of a large intermediate is a page fault,
    every call). Every axis is split into its ``s`` stride phases: ``deconv2d`` becomes
    ``sh*sw`` stride-1 convolutions with sub-kernels (sub-pixel convolution) and ``dK`` one
    plain matrix product per kernel shift over the stride phases of ``d_out``, with no multiply
    by an inserted zero; ``dX`` stays a strided convolution, which XLA's CPU path does well.
    All three run over batch chunks (``lax.map``/``lax.scan``) so temporaries stay small, and
    casts and STDP scales are applied per chunk. With stride 1, LTP and LTD are two
    contractions: XLA's CPU convolution over a batch of 2N costs more than two over N.

Index map (SPEC §3), per axis: input ``h`` and tap ``a`` meet at output ``p = h*s + lo - a``.
With ``pl = k - 1 - lo`` and ``a' = k - 1 - a`` that is position ``j = h*s + a'`` of ``d_out``
padded by ``pl`` in front; writing ``a' = q*s + r`` (``0 <= r < s``) gives ``j = (h + q)*s + r``,
the ``r``-th phase of row ``h + q`` of the space-to-depth array. Everything below follows from it.

No function here passes a negative pad to ``lax.conv_general_dilated``: XLA's CPU convolution
reads out of bounds with some negative pads (garbage of order 1e13 was observed with JAX 0.10),
so negative pads are applied as crops (``lax.pad``, which is well defined) before or after.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax.numpy as jnp
from jax import lax

Pair = tuple[int, int]
Pads = tuple[Pair, Pair]

_NHWC = ("NHWC", "HWIO", "NHWC")

# Below this many multiply-adds (of the stride-dilated problem), dispatch overheads dominate and
# the "conv" family (fewer, larger ops) wins on CPU too (measured: online-decoder, 313k).
PHASE_MIN_WORK = 1 << 24
# XLA's CPU runtime maps every execution's temporaries afresh, so each touched page of a large
# intermediate costs a page fault per call (measured: faults were half of a batch-large dK).
# The "phase" family therefore runs over batch chunks whose output map stays under this size,
# so temporaries are small and reused across the chunks.
CHUNK_BYTES = 4 << 20


@dataclass(frozen=True)
class Numerics:
    """How products are computed: ``lax`` precision and, for bf16 mode, the operand dtype."""

    precision: lax.Precision = lax.Precision.HIGHEST
    operand_dtype: str | None = None  # "bfloat16": operands rounded to bf16, f32/f64 accumulation

    def operands(self, *arrays: jnp.ndarray) -> tuple[jnp.ndarray, ...]:
        if self.operand_dtype is None:
            return arrays
        return tuple(a.astype(self.operand_dtype) for a in arrays)


HIGHEST = Numerics()


def _conv(
    lhs: jnp.ndarray,
    rhs: jnp.ndarray,
    pads: list[Pair] | tuple[Pair, ...],
    num: Numerics,
    *,
    strides: Pair = (1, 1),
    lhs_dilation: Pair = (1, 1),
    rhs_dilation: Pair = (1, 1),
) -> jnp.ndarray:
    """``conv_general_dilated`` with negative pads applied as crops (spatial axes are 1 and 2 of
    every layout used here).

    With a negative pad the input is dilated, padded and cropped by one ``lax.pad`` (interior
    padding = dilation - 1; a negative edge pad crops the dilated input, SPEC §2's meaning) and
    the convolution gets neither pads nor dilation. Two XLA CPU bugs make this the only safe
    route: negative pads inside ``conv_general_dilated`` return garbage, and a dilated input
    cropped after the fact aborts the compiler (``AlgebraicSimplifier``: "Window dimensions do
    not match RHS shape", e.g. stride 2, pads ((3, 0), (-2, 0)), kernel 3x2 on a 2x3 map).
    """
    out_dtype = jnp.result_type(lhs.dtype, rhs.dtype)
    if any(lo < 0 or hi < 0 for lo, hi in pads):
        cfg = [(0, 0, 0)] * lhs.ndim
        for axis, (lo, hi), d in zip((1, 2), pads, lhs_dilation, strict=True):
            cfg[axis] = (lo, hi, d - 1)
        lhs = lax.pad(lhs, jnp.zeros((), lhs.dtype), cfg)
        pads, lhs_dilation = [(0, 0), (0, 0)], (1, 1)
    a, b = num.operands(lhs, rhs)
    return lax.conv_general_dilated(
        a,
        b,
        strides,
        list(pads),
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=_NHWC,
        precision=num.precision,
        preferred_element_type=out_dtype,
    )


def _dot(a: jnp.ndarray, b: jnp.ndarray, contract: tuple[int, int], num: Numerics) -> jnp.ndarray:
    out_dtype = jnp.result_type(a.dtype, b.dtype)
    a, b = num.operands(a, b)
    return lax.dot_general(
        a, b, (((contract[0],), (contract[1],)), ((), ())), precision=num.precision, preferred_element_type=out_dtype
    )


def _pad_spatial(a: jnp.ndarray, cfg: tuple[Pair, Pair] | list[Pair]) -> jnp.ndarray:
    """Zero-pad (or, for negative values, crop) axes 1 and 2."""
    (lh, hh), (lw, hw) = cfg
    if lh == hh == lw == hw == 0:
        return a
    return lax.pad(a, jnp.zeros((), a.dtype), [(0, 0, 0), (lh, hh, 0), (lw, hw, 0), (0, 0, 0)])


class _Axis(NamedTuple):
    """One spatial axis of the phase decomposition (see the module docstring)."""

    n: int  # input length
    o: int  # output length
    k: int
    s: int
    lo: int
    pl: int  # k - 1 - lo: front pad of d_out in the "j" coordinates
    q: int  # ceil(k / s): kernel shifts
    m: int  # n + q - 1: rows of the space-to-depth array

    @classmethod
    def make(cls, n: int, o: int, k: int, s: int, lo: int) -> _Axis:
        q = -(-k // s)
        return cls(n, o, k, s, lo, k - 1 - lo, q, n + q - 1)

    @property
    def d_pads(self) -> Pair:
        """Pad/crop taking d_out (length o) to the j-grid of length m*s."""
        return (self.pl, self.m * self.s - self.o - self.pl)

    @property
    def dx_pads(self) -> Pair:
        """Pads of the strided convolution giving dX (length n) from d_out (length o)."""
        return (self.pl, (self.n - 1) * self.s + self.k - self.o - self.pl)


def _axes(in_size: Pair, out_size: Pair, ksize: Pair, stride: Pair, pads: Pads) -> tuple[_Axis, _Axis]:
    return tuple(_Axis.make(in_size[i], out_size[i], ksize[i], stride[i], pads[i][0]) for i in range(2))  # type: ignore[return-value]


# The strided "phase" programs are unrolled in Python: one convolution per stride phase
# (deconv2d) and one slice per kernel tap (dK). Beyond this many taps the trace itself would
# dominate (or, for a stride far above the kernel, never end), so such problems go to "conv".
PHASE_MAX_TAPS = 256


def phase_feasible(ksize: Pair, stride: Pair) -> bool:
    """Whether the "phase" family may trace this geometry: stride 1 (no unrolled loop), or every
    stride at most its kernel length (so every phase holds a tap) and at most ``PHASE_MAX_TAPS`` taps."""
    if stride == (1, 1):
        return True
    return stride[0] <= ksize[0] and stride[1] <= ksize[1] and ksize[0] * ksize[1] <= PHASE_MAX_TAPS


def choose_formulation(platform: str, batch: int, out_size: Pair, ksize: Pair, channels: Pair, stride: Pair) -> str:
    """``"phase"`` on CPU for problems big enough to pay for it (and feasible), else ``"conv"``."""
    if platform != "cpu" or not phase_feasible(ksize, stride):
        return "conv"
    work = batch * out_size[0] * out_size[1] * ksize[0] * ksize[1] * channels[0] * channels[1]
    return "phase" if work >= PHASE_MIN_WORK else "conv"


def _chunk(n: int, bytes_per_item: int) -> int:
    """Largest divisor of the batch ``n`` whose chunk stays under ``CHUNK_BYTES``."""
    if n * bytes_per_item <= CHUNK_BYTES:
        return n
    return max(b for b in range(1, n + 1) if n % b == 0 and (b == 1 or b * bytes_per_item <= CHUNK_BYTES))


def _map_batch(fn, arrays: tuple[jnp.ndarray, ...], b: int) -> jnp.ndarray:
    """``fn`` over batch chunks of ``b`` (``lax.map``); results concatenated along the batch."""
    n = arrays[0].shape[0]
    if b >= n:
        return fn(*arrays)
    out = lax.map(lambda t: fn(*t), tuple(a.reshape(n // b, b, *a.shape[1:]) for a in arrays))
    return out.reshape(n, *out.shape[2:])


def _sum_batch(fn, arrays: tuple[jnp.ndarray, ...], b: int, init: jnp.ndarray) -> jnp.ndarray:
    """``init + sum`` of ``fn`` over batch chunks of ``b`` (``lax.scan``; reshapes only, no copies)."""
    n = arrays[0].shape[0]
    if b >= n:
        return init + fn(*arrays)
    split = tuple(a.reshape(n // b, b, *a.shape[1:]) for a in arrays)
    acc, _ = lax.scan(lambda acc, t: (acc + fn(*t), None), init, split)
    return acc


# ------------------------------------------------------------------------------------ deconv2d


def deconv2d(
    x: jnp.ndarray, kernel: jnp.ndarray, *, out_size: Pair, stride: Pair, pads: Pads, form: str, num: Numerics
) -> jnp.ndarray:
    """x ``(N,H,W,Ci)``, kernel ``(kh,kw,Ci,Co)`` → y ``(N,Ho,Wo,Co)`` in the kernel's dtype (the result
    dtype; x, bool or int spikes say, is cast to it chunk by chunk)."""
    n, _, _, _ = x.shape
    co = kernel.shape[3]
    if 0 in x.shape or 0 in kernel.shape:
        return jnp.zeros((n, *out_size, co), kernel.dtype)
    if form == "conv":
        return _conv(x.astype(kernel.dtype), kernel, pads, num, lhs_dilation=stride)
    if stride == (1, 1):
        one = lambda xc: _conv(xc.astype(kernel.dtype), kernel, pads, num)
    else:
        one = lambda xc: _deconv2d_phase(xc.astype(kernel.dtype), kernel, stride, pads, out_size, num)
    return _map_batch(one, (x,), _chunk(n, out_size[0] * out_size[1] * co * kernel.dtype.itemsize))


def _deconv2d_phase(
    x: jnp.ndarray, kernel: jnp.ndarray, stride: Pair, pads: Pads, out_size: Pair, num: Numerics
) -> jnp.ndarray:
    """Sub-pixel form: output phase ``r`` is a stride-1 correlation of x with taps ``a ≡ lo - r (mod s)``."""
    n, h, w, _ = x.shape
    co = kernel.shape[3]
    rows_per_phase = [-(-out_size[i] // stride[i]) for i in range(2)]
    phase_rows = []
    for rh in range(stride[0]):
        phase_cols = []
        for rw in range(stride[1]):
            first, taps, conv_pads = [], [], []
            for i, r in ((0, rh), (1, rw)):
                k, s, lo = kernel.shape[i], stride[i], pads[i][0]
                a0 = (lo - r) % s
                t = len(range(a0, k, s))
                shift = (r + a0 - lo) // s  # y[m*s + r] takes x[m + shift + j] * K[a0 + j*s]
                first.append(a0)
                taps.append(t)
                conv_pads.append((-shift, rows_per_phase[i] - x.shape[1 + i] + shift + t - 1))
            if 0 in taps:
                phase_cols.append(jnp.zeros((n, *rows_per_phase, co), x.dtype))
                continue
            sub = kernel[first[0] :: stride[0], first[1] :: stride[1]]
            phase_cols.append(_conv(x, sub, conv_pads, num))
        phase_rows.append(jnp.stack(phase_cols, axis=3))  # (N, Mh, Mw, sw, Co)
    y = jnp.stack(phase_rows, axis=2)  # (N, Mh, sh, Mw, sw, Co)
    y = y.reshape(n, rows_per_phase[0] * stride[0], rows_per_phase[1] * stride[1], co)
    return y[:, : out_size[0], : out_size[1]]


# ------------------------------------------------------------------------------------- dK


def deconv2d_dk(
    x: jnp.ndarray | tuple[jnp.ndarray, ...],
    d_out: jnp.ndarray | tuple[jnp.ndarray, ...],
    *,
    ksize: Pair,
    stride: Pair,
    pads: Pads,
    form: str,
    num: Numerics,
    dtype: Any = None,
    prep: Callable[[tuple, tuple], tuple[tuple, tuple]] | None = None,
) -> jnp.ndarray:
    """x ``(N,H,W,Ci)``, d_out ``(N,Ho,Wo,Co)`` → dK ``(kh,kw,Ci,Co)``, summed over the batch.

    ``x`` and ``d_out`` may be tuples of arrays meaning their concatenation along the batch.
    ``prep(xs, ds) -> (xs, ds)`` is elementwise work (casts, scales) applied before the product,
    chunk by chunk in the "phase" family; without it the arrays are cast to ``dtype`` (default:
    their result type).
    """
    xs = x if isinstance(x, tuple) else (x,)
    ds = d_out if isinstance(d_out, tuple) else (d_out,)
    dtype = jnp.dtype(dtype or jnp.result_type(*xs, *ds))
    if prep is None:
        prep = lambda a, b: (tuple(v.astype(dtype) for v in a), tuple(v.astype(dtype) for v in b))
    ci, co = xs[0].shape[3], ds[0].shape[3]
    if sum(a.shape[0] for a in xs) == 0 or 0 in xs[0].shape[1:] or 0 in ds[0].shape[1:]:
        return jnp.zeros((*ksize, ci, co), dtype)
    ax = _axes(xs[0].shape[1:3], ds[0].shape[1:3], ksize, stride, pads)
    m = len(xs)
    one = lambda *c: _dk_one(*prep(c[:m], c[m:]), ksize, stride, ax, form, num)
    if form == "phase" and all(a.shape[0] == xs[0].shape[0] for a in (*xs, *ds)):
        per_item = math.prod(ds[0].shape[1:]) * dtype.itemsize * len(ds)
        init = jnp.zeros((*ksize, ci, co), dtype)
        return _sum_batch(one, (*xs, *ds), _chunk(xs[0].shape[0], per_item), init)
    return one(*xs, *ds)


def _dk_one(
    xs: tuple[jnp.ndarray, ...],
    ds: tuple[jnp.ndarray, ...],
    ksize: Pair,
    stride: Pair,
    ax: tuple[_Axis, _Axis],
    form: str,
    num: Numerics,
) -> jnp.ndarray:
    if form == "phase" and stride != (1, 1):
        return _dk_phase(xs, ds, ksize, stride, ax, num)
    if form == "phase" and len(xs) > 1:
        # XLA's CPU convolution contracts a batch of 2N ~35% slower than two batches of N
        # (measured, batch-mid), which more than eats what the one contraction saves.
        return sum(_dk_one((a,), (b,), ksize, stride, ax, form, num) for a, b in zip(xs, ds, strict=True))
    x = xs[0] if len(xs) == 1 else jnp.concatenate(xs, axis=0)
    d_out = ds[0] if len(ds) == 1 else jnp.concatenate(ds, axis=0)
    if stride == (1, 1):
        # dK[a, i, o] = sum_{n,p} x[n, p - lo + a, i] d[n, p, o]: x (batch contracted) correlated
        # with d_out as the "kernel"; no flip (on CPU ~20% faster than the form below).
        conv_pads = [(a.lo, a.k - 1 + a.o - a.n - a.lo) for a in ax]
        # Batch contracted as the feature axis; operands laid out NHWC/HWIO (XLA CPU's fast
        # convolution layout: ~10x faster inside lax.scan than the same dims named in place).
        g = _conv(x.transpose(3, 1, 2, 0), d_out.transpose(1, 2, 0, 3), conv_pads, num)
        return g.transpose(1, 2, 0, 3)
    # G[a', i, o] = sum_{n,h} x[n,h,i] d[n, h*s + a' - pl, o], a' = k-1-a: a convolution with
    # the batch contracted and x, dilated by the stride, as the "kernel".
    conv_pads = [(a.pl, a.k + (a.n - 1) * a.s - a.o - a.pl) for a in ax]
    g = _conv(d_out.transpose(3, 1, 2, 0), x.transpose(1, 2, 0, 3), conv_pads, num, rhs_dilation=stride)
    return g.transpose(1, 2, 3, 0)[::-1, ::-1]


def _dk_phase(
    xs: tuple[jnp.ndarray, ...],
    ds: tuple[jnp.ndarray, ...],
    ksize: Pair,
    stride: Pair,
    ax: tuple[_Axis, _Axis],
    num: Numerics,
) -> jnp.ndarray:
    """One matrix product per kernel shift ``(qh, qw)``, over the phases with a tap there.

    ``xs``/``ds`` are pairs to stack along the batch (LTP and LTD); the stacking is done on the
    product's operands, so XLA fuses it with the phase gather instead of copying whole maps.
    """
    n, h, w, ci = xs[0].shape
    co = ds[0].shape[3]
    rows = sum(x.shape[0] for x in xs) * h * w
    x2 = jnp.concatenate(xs, axis=0).reshape(rows, ci)
    padded = [_pad_spatial(d, (ax[0].d_pads, ax[1].d_pads)) for d in ds]
    blocks = []
    for qh in range(ax[0].q):
        rh = min(stride[0], ksize[0] - qh * stride[0])
        row = []
        for qw in range(ax[1].q):
            rw = min(stride[1], ksize[1] - qw * stride[1])
            dq = jnp.concatenate([_phase_slab(d, qh, qw, rh, rw, h, w, stride) for d in padded], axis=0)
            g = _dot(x2, dq.reshape(rows, rh * rw * co), (0, 0), num).reshape(ci, rh, rw, co).transpose(1, 2, 0, 3)
            row.append(jnp.pad(g, ((0, stride[0] - rh), (0, stride[1] - rw), (0, 0), (0, 0))))
        blocks.append(jnp.stack(row))  # (Qw, sh, sw, Ci, Co)
    g = jnp.stack(blocks)  # (Qh, Qw, sh, sw, Ci, Co) indexed by a' = q*s + r
    g = g.transpose(0, 2, 1, 3, 4, 5).reshape(ax[0].q * stride[0], ax[1].q * stride[1], ci, co)
    return g[: ksize[0], : ksize[1]][::-1, ::-1]


def _phase_slab(dp: jnp.ndarray, qh: int, qw: int, rh: int, rw: int, h: int, w: int, stride: Pair) -> jnp.ndarray:
    """``slab[n, u, v, ph, pw, o] = dp[n, (u+qh)*sh + ph, (v+qw)*sw + pw, o]`` for ``ph < rh, pw < rw``."""
    n, co = dp.shape[0], dp.shape[3]
    sh, sw = stride
    parts = [
        [
            lax.slice(
                dp,
                (0, qh * sh + ph, qw * sw + pw, 0),
                (n, qh * sh + ph + (h - 1) * sh + 1, qw * sw + pw + (w - 1) * sw + 1, co),
                (1, sh, sw, 1),
            )
            for pw in range(rw)
        ]
        for ph in range(rh)
    ]
    return jnp.stack([jnp.stack(p, axis=3) for p in parts], axis=3)


# ------------------------------------------------------------------------------------- dX


def deconv2d_dx(
    kernel: jnp.ndarray,
    d_out: jnp.ndarray,
    *,
    in_size: Pair,
    stride: Pair,
    pads: Pads,
    form: str,
    num: Numerics,
) -> jnp.ndarray:
    """kernel ``(kh,kw,Ci,Co)``, d_out ``(N,Ho,Wo,Co)`` → dX ``(N,H,W,Ci)`` in the kernel's dtype: a
    strided convolution of d_out with the flipped, transposed kernel (both families; "phase" runs
    it in batch chunks)."""
    n = d_out.shape[0]
    kh, kw, ci, _ = kernel.shape
    if 0 in kernel.shape or 0 in d_out.shape:
        return jnp.zeros((n, *in_size, ci), kernel.dtype)
    ax = _axes(in_size, d_out.shape[1:3], (kh, kw), stride, pads)
    flipped = jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))
    one = lambda dc: _conv(dc.astype(kernel.dtype), flipped, [a.dx_pads for a in ax], num, strides=stride)
    if form != "phase":
        return one(d_out)
    return _map_batch(one, (d_out,), _chunk(n, math.prod(d_out.shape[1:]) * kernel.dtype.itemsize))


# ------------------------------------------------------------------------------------- STDP


def stdp_dw(
    pre_spike: jnp.ndarray,
    pre_trace: jnp.ndarray,
    post_spike: jnp.ndarray,
    post_trace: jnp.ndarray,
    scalars: tuple[jnp.ndarray, ...],
    *,
    ksize: Pair,
    stride: Pair,
    pads: Pads,
    form: str,
    num: Numerics,
    dtype: Any,
) -> jnp.ndarray:
    """``dW = dK(pre_trace - target, A+ post_spike) - dK(pre_spike, A- post_trace)`` as ONE dK:
    dK is bilinear and sums over the batch, so stacking the two pairs along it gives LTP - LTD.
    The scales go on the x side (``A+ (pre_trace - target)``, ``-A- pre_spike``), which is
    smaller than the y side by the stride squared; casts and scales happen per batch chunk."""
    a_plus, a_minus, _, target, _, _ = scalars

    def prep(xs: tuple, ds: tuple) -> tuple[tuple, tuple]:
        spike, trace = (v.astype(dtype) for v in xs)
        return (a_plus * (trace - target), -a_minus * spike), tuple(v.astype(dtype) for v in ds)

    return deconv2d_dk(
        (pre_spike, pre_trace), (post_spike, post_trace), ksize=ksize, stride=stride, pads=pads, form=form, num=num,
        dtype=dtype, prep=prep,
    )  # fmt: skip


def apply_update(
    kernel: jnp.ndarray, dw: jnp.ndarray, scalars: tuple[jnp.ndarray, ...], decay: Any, bound: Any
) -> jnp.ndarray:
    """``W' = W + eta dW - (w_decay W if decay)``, then ``clip(W', 0.01, w_bound - 0.01)`` if ``bound``.

    ``decay``/``bound`` are ``w_decay > 0``/``w_bound > 0`` decided by the caller on the exact
    values (boolean scalars): the scalars here are already in the result dtype, where a tiny
    positive ``w_bound`` can read as 0.
    """
    _, _, eta, _, w_decay, w_bound = scalars
    w_new = kernel + eta * dw
    w_new = jnp.where(decay, w_new - w_decay * kernel, w_new)
    bounded = jnp.minimum(jnp.maximum(w_new, 0.01), w_bound - 0.01)
    return jnp.where(bound, bounded, w_new)
