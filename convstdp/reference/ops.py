"""SPEC §3 transcribed: one index map, ``p = h*s + lo - a``, per spatial axis.

Each operator loops over the kernel taps ``(a, b)``. For one tap the map ``h -> p`` is
injective, so the input rows that land inside ``[0, o)`` and the output rows they land on are
two plain index vectors, and the tap's contribution is one matrix product over channels,
vectorised over the batch and the map. Terms whose ``p`` falls outside the output vanish by
never being selected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from convstdp import geometry
from convstdp.geometry import Geometry, PaddingLike, StrideLike


def _taps(n: int, k: int, s: int, lo: int, o: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """For each tap ``a`` of one axis: the inputs ``h`` and outputs ``p = h*s + lo - a`` in range."""
    h = np.arange(n)
    taps = []
    for a in range(k):
        p = h * s + lo - a
        keep = (p >= 0) & (p < o)
        taps.append((a, h[keep], p[keep]))
    return taps


def _tap_pairs(g: Geometry):
    """Yield ``(a, b, rows_in, cols_in, rows_out, cols_out)`` for every kernel tap."""
    rows = _taps(g.in_size[0], g.kernel_size[0], g.stride[0], g.pads[0][0], g.out_size[0])
    cols = _taps(g.in_size[1], g.kernel_size[1], g.stride[1], g.pads[1][0], g.out_size[1])
    for a, h, p in rows:
        for b, w, q in cols:
            if h.size and w.size:
                yield a, b, h, w, p, q


def _f64(arr: Any) -> np.ndarray:
    return np.asarray(arr).astype(np.float64, copy=False)


def deconv2d(x: Any, kernel: Any, *, stride: StrideLike = 1, padding: PaddingLike = "SAME") -> np.ndarray:
    """``y[n,p,q,o] = Σ x[n,h,w,i] · K[a,b,i,o]`` over ``p = h*sh + lo_h - a``, ``q = w*sw + lo_w - b``.

    x ``(N, H, W, Ci)``, kernel ``(kh, kw, Ci, Co)`` → y ``(N, Ho, Wo, Co)``.
    """
    g = geometry.check_deconv2d(x, kernel, stride, padding)
    x64, k64 = _f64(x), _f64(kernel)
    y = np.zeros(g.y_shape)
    for a, b, h, w, p, q in _tap_pairs(g):
        y[:, p[:, None], q[None, :], :] += x64[:, h[:, None], w[None, :], :] @ k64[a, b]
    return y.astype(g.dtype)


def deconv2d_dk(
    x: Any,
    d_out: Any,
    *,
    kernel_size: StrideLike,
    stride: StrideLike = 1,
    padding: PaddingLike = "SAME",
) -> np.ndarray:
    """``dK[a,b,i,o] = Σ_{n,h,w} x[n,h,w,i] · d[n, h*sh+lo_h-a, w*sw+lo_w-b, o]``.

    x ``(N, H, W, Ci)``, d_out ``(N, Ho, Wo, Co)`` → dK ``(kh, kw, Ci, Co)``.
    """
    g = geometry.check_deconv2d_dk(x, d_out, kernel_size, stride, padding)
    x64, d64 = _f64(x), _f64(d_out)
    dk = np.zeros(g.kernel_shape)
    for a, b, h, w, p, q in _tap_pairs(g):
        xs = x64[:, h[:, None], w[None, :], :]
        ds = d64[:, p[:, None], q[None, :], :]
        dk[a, b] = np.einsum("nhwi,nhwo->io", xs, ds)
    return dk.astype(g.dtype)


def deconv2d_dx(
    kernel: Any,
    d_out: Any,
    *,
    stride: StrideLike = 1,
    padding: PaddingLike = "SAME",
    input_shape: Sequence[int] | None = None,
) -> np.ndarray:
    """``dX[n,h,w,i] = Σ_{a,b,o} K[a,b,i,o] · d[n, h*sh+lo_h-a, w*sw+lo_w-b, o]``.

    kernel ``(kh, kw, Ci, Co)``, d_out ``(N, Ho, Wo, Co)`` → dX ``(N, H, W, Ci)``, with ``H, W``
    from SPEC §2 (``input_shape``, if given, must agree).
    """
    g = geometry.check_deconv2d_dx(kernel, d_out, stride, padding, input_shape)
    k64, d64 = _f64(kernel), _f64(d_out)
    dx = np.zeros(g.x_shape)
    for a, b, h, w, p, q in _tap_pairs(g):
        dx[:, h[:, None], w[None, :], :] += d64[:, p[:, None], q[None, :], :] @ k64[a, b].T
    return dx.astype(g.dtype)


def stdp_update(
    kernel: Any,
    pre_spike: Any,
    pre_trace: Any,
    post_spike: Any,
    post_trace: Any,
    *,
    stride: StrideLike = 1,
    padding: PaddingLike = "SAME",
    A_plus: float,
    A_minus: float,
    eta: float = 0.0,
    pretrace_target: float = 0.0,
    w_decay: float = 0.0,
    w_bound: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Trace-STDP step of the seed's ``evolve``; returns ``(W', dW)``, both kernel-shaped.

    ``dW = dK(pre_trace - pretrace_target, A_plus·post_spike) - dK(pre_spike, A_minus·post_trace)``;
    ``W' = W + eta·dW - (w_decay·W if w_decay > 0)``; if ``w_bound > 0``,
    ``W' = clip(W', 0.01, w_bound - 0.01)`` (as ``min(max(W', 0.01), w_bound - 0.01)``).
    ``pre_*`` are ``(N, H, W, Ci)``, ``post_*`` ``(N, Ho, Wo, Co)``, kernel ``(kh, kw, Ci, Co)``.
    """
    g = geometry.check_stdp_update(kernel, pre_spike, pre_trace, post_spike, post_trace, stride, padding)
    A_plus, A_minus, eta, pretrace_target, w_decay, w_bound = geometry.check_stdp_params(
        A_plus=A_plus, A_minus=A_minus, eta=eta, pretrace_target=pretrace_target, w_decay=w_decay, w_bound=w_bound
    )
    kw = dict(kernel_size=g.kernel_size, stride=g.stride, padding=g.pads)
    ltp = deconv2d_dk(_f64(pre_trace) - pretrace_target, A_plus * _f64(post_spike), **kw)
    ltd = deconv2d_dk(_f64(pre_spike), A_minus * _f64(post_trace), **kw)
    dw = ltp - ltd
    w = _f64(kernel)
    w_new = w + eta * dw
    if w_decay > 0:
        w_new = w_new - w_decay * w
    if w_bound > 0:
        w_new = np.minimum(np.maximum(w_new, 0.01), w_bound - 0.01)
    return w_new.astype(g.dtype), dw.astype(g.dtype)


def backtransmit(
    kernel: Any,
    post_spike: Any,
    *,
    stride: StrideLike = 1,
    padding: PaddingLike = "SAME",
    input_shape: Sequence[int] | None = None,
) -> np.ndarray:
    """The seed's ``backtransmit``: ``dX(W, post_spike)``, shaped like the synapse's input."""
    return deconv2d_dx(kernel, post_spike, stride=stride, padding=padding, input_shape=input_shape)


def advance(
    x: Any,
    kernel: Any,
    *,
    stride: StrideLike = 1,
    padding: PaddingLike = "SAME",
    resist_scale: float = 1.0,
    bias: Any = 0.0,
) -> np.ndarray:
    """The seed's ``advance_state``: ``deconv2d(x, W) * resist_scale + bias`` (bias broadcasts over Co)."""
    y = deconv2d(x, kernel, stride=stride, padding=padding)
    return (y * geometry.check_scalar("resist_scale", resist_scale) + np.asarray(bias)).astype(y.dtype)
