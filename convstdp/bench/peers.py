"""Peers timed next to the backends: PyTorch CPU, and ngc-learn's own ``ngcconv`` functions.

Each peer is a backend *implementation* (the four operators on normalised arguments, see
:mod:`convstdp.backends`), so it is wrapped in :class:`convstdp.Backend` and validated, composed
into an STDP step and checked against the reference exactly like a backend. Libraries are
imported when a peer is built, never at import time.

PyTorch: SPEC §3 pairs input ``h`` and tap ``a`` at ``p = h*s + lo - a``; ``conv_transpose2d``
pairs them at ``p = h*s - P + a``. So the kernel is flipped (``a -> k-1-a``) and laid out
``(Ci, Co, kh, kw)``; the full transposed output (``P = 0``) is then cropped by ``k-1-lo`` at the
start and ``k-1-hi`` at the end of each axis. The symmetric part of that crop is PyTorch's
``padding``; the rest (or a negative crop, i.e. zero padding) is an ``F.pad``. dK and dX are
autograd's derivative of that convolution, ``aten.convolution_backward``, called directly so
that no forward pass is recomputed for them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from convstdp import geometry
from convstdp.backends import Backend, BackendUnavailable

Pads = tuple[tuple[int, int], tuple[int, int]]


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# ----------------------------------------------------------------------------- PyTorch


def torch_pads(k: int, lo: int, hi: int) -> tuple[int, int, int]:
    """``(P, crop_lo, crop_hi)`` for one axis: PyTorch's symmetric padding, then extra crops.

    The full transposed output is cropped by ``k-1-lo`` / ``k-1-hi``; ``P`` takes the common,
    non-negative part, the rest is returned (negative = zero padding).
    """
    c_lo, c_hi = k - 1 - lo, k - 1 - hi
    p = max(0, min(c_lo, c_hi))
    return p, c_lo - p, c_hi - p


class TorchPeer:
    """PyTorch CPU: ``conv_transpose2d`` (flipped kernel) and its autograd derivatives."""

    name = "torch"
    precision = "highest"

    def __init__(self, threads: int | None = None) -> None:
        import torch

        self.torch = torch
        self.F = torch.nn.functional
        torch.set_num_threads(threads or cpu_count())
        self.version = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"

    def devices(self) -> list[str]:
        return ["cpu"]

    # -- layout helpers -------------------------------------------------------------------

    def _t(self, a: Any, dt: np.dtype) -> Any:
        """NHWC or HWIO NumPy → torch tensor of ``dt`` (zero-copy when already ``dt``)."""
        return self.torch.from_numpy(np.ascontiguousarray(np.asarray(a), dtype=dt))

    def _weight(self, kernel: Any, dt: np.dtype) -> Any:
        """HWIO → PyTorch's ``(Ci, Co, kh, kw)``, flipped on both spatial axes (SPEC §3 note)."""
        return self._t(kernel, dt).permute(2, 3, 0, 1).flip(2, 3).contiguous()

    def _nchw(self, a: Any, dt: np.dtype) -> Any:
        return self._t(a, dt).permute(0, 3, 1, 2).contiguous()

    @staticmethod
    def _nhwc(t: Any) -> np.ndarray:
        return t.permute(0, 2, 3, 1).contiguous().numpy()

    def _plan(self, kernel_size: tuple[int, int], padding: Pads) -> tuple[tuple[int, int], tuple[int, ...]]:
        (ph, ch_lo, ch_hi), (pw, cw_lo, cw_hi) = (
            torch_pads(kernel_size[0], *padding[0]),
            torch_pads(kernel_size[1], *padding[1]),
        )
        # F.pad order is (w_lo, w_hi, h_lo, h_hi); a crop is a negative pad.
        return (ph, pw), (-cw_lo, -cw_hi, -ch_lo, -ch_hi)

    def _out_grad(self, d_nchw: Any, extra: tuple[int, ...]) -> Any:
        """Map a gradient in SPEC output coordinates back to PyTorch's output coordinates."""
        return self.F.pad(d_nchw, tuple(-v for v in extra)) if any(extra) else d_nchw

    def _backward(self, grad: Any, x: Any, w: Any, stride: tuple[int, int], p: tuple[int, int], mask: list[bool]):
        return self.torch.ops.aten.convolution_backward(
            grad, x, w, None, list(stride), list(p), [1, 1], True, [0, 0], 1, mask
        )

    # -- the operators --------------------------------------------------------------------

    def deconv2d(self, x: Any, kernel: Any, *, stride: tuple[int, int], padding: Pads) -> np.ndarray:
        dt = geometry.result_dtype(np.dtype(x.dtype), np.dtype(kernel.dtype))
        w = self._weight(kernel, dt)
        p, extra = self._plan(w.shape[2:], padding)
        with self.torch.no_grad():
            y = self.F.conv_transpose2d(self._nchw(x, dt), w, stride=stride, padding=p)
            if any(extra):
                y = self.F.pad(y, extra)
        return self._nhwc(y)

    def _dk(self, x_t: Any, d_t: Any, kernel_size: tuple[int, int], stride, padding: Pads) -> Any:
        p, extra = self._plan(kernel_size, padding)
        w_meta = self.torch.empty((x_t.shape[1], d_t.shape[1], *kernel_size), dtype=x_t.dtype)
        _, gw, _ = self._backward(self._out_grad(d_t, extra), x_t, w_meta, stride, p, [False, True, False])
        return gw  # (Ci, Co, kh, kw), flipped

    def _unflip(self, gw: Any) -> Any:
        return gw.flip(2, 3).permute(2, 3, 0, 1).contiguous()

    def deconv2d_dk(self, x: Any, d_out: Any, *, kernel_size: tuple[int, int], stride, padding: Pads) -> np.ndarray:
        dt = geometry.result_dtype(np.dtype(x.dtype), np.dtype(d_out.dtype))
        with self.torch.no_grad():
            gw = self._dk(self._nchw(x, dt), self._nchw(d_out, dt), tuple(kernel_size), stride, padding)
            return self._unflip(gw).numpy()

    def _dx(self, w: Any, d_t: Any, input_shape, stride, padding: Pads) -> Any:
        p, extra = self._plan(tuple(w.shape[2:]), padding)
        n, h, wd, ci = input_shape
        x_meta = self.torch.empty((n, ci, h, wd), dtype=w.dtype)
        gx, _, _ = self._backward(self._out_grad(d_t, extra), x_meta, w, stride, p, [True, False, False])
        return gx

    def deconv2d_dx(self, kernel: Any, d_out: Any, *, stride, padding: Pads, input_shape) -> np.ndarray:
        dt = geometry.result_dtype(np.dtype(kernel.dtype), np.dtype(d_out.dtype))
        with self.torch.no_grad():
            return self._nhwc(self._dx(self._weight(kernel, dt), self._nchw(d_out, dt), input_shape, stride, padding))

    def _update(
        self,
        kernel,
        pre_spike,
        pre_trace,
        post_spike,
        post_trace,
        *,
        stride,
        padding,
        A_plus,
        A_minus,
        eta,
        pretrace_target,
        w_decay,
        w_bound,
    ):
        dt = geometry.result_dtype(*(np.dtype(a.dtype) for a in (kernel, pre_spike, pre_trace, post_spike, post_trace)))
        ks = tuple(kernel.shape[:2])
        ltp = self._dk(
            self._nchw(pre_trace, dt) - pretrace_target, self._nchw(post_spike, dt) * A_plus, ks, stride, padding
        )
        ltd = self._dk(self._nchw(pre_spike, dt), self._nchw(post_trace, dt) * A_minus, ks, stride, padding)
        dw = self._unflip(ltp - ltd)
        w = self._t(kernel, dt)
        w_new = w + eta * dw
        if w_decay > 0:
            w_new = w_new - w_decay * w
        if w_bound > 0:
            w_new = w_new.clamp(0.01, w_bound - 0.01)
        return w_new, dw, dt

    def stdp_update(self, kernel, pre_spike, pre_trace, post_spike, post_trace, **params) -> tuple[np.ndarray, ...]:
        with self.torch.no_grad():
            w_new, dw, _ = self._update(kernel, pre_spike, pre_trace, post_spike, post_trace, **params)
            return w_new.numpy(), dw.numpy()

    def stdp_step(self, kernel, x, pre_spike, pre_trace, post_spike, post_trace, **params):
        """Fused SPEC §8 step: the layout conversions of shared inputs are done once."""
        stride, padding = params["stride"], params["padding"]
        with self.torch.no_grad():
            y = self.deconv2d(x, kernel, stride=stride, padding=padding)
            w_new, dw, dt = self._update(kernel, pre_spike, pre_trace, post_spike, post_trace, **params)
            w_t = w_new.permute(2, 3, 0, 1).flip(2, 3).contiguous()
            dx = self._dx(w_t, self._nchw(post_spike, dt), tuple(pre_spike.shape), stride, padding)
            return y, w_new.numpy(), dw.numpy(), self._nhwc(dx)


# ----------------------------------------------------------------------------- ngc-learn (direct)


class NgcconvPeer:
    """ngc-learn's ``ngcconv`` functions, called as ``TraceSTDPDeconvSynapse`` calls them.

    Only what the seed supports: square kernels and strides, ``"SAME"``/``"VALID"`` padding
    (explicit pads are mapped back to those strings when they match, else ``NotImplementedError``).
    Returns ``jax.Array``.
    """

    name = "ngclearn"
    precision = "highest"

    def __init__(self) -> None:
        import jax
        from ngclearn.components.synapses.convolution import ngcconv

        try:
            from importlib.metadata import version

            ver = version("ngclearn")
        except Exception:  # pragma: no cover - metadata missing
            ver = "?"
        self.jax, self.jnp, self.ngc = jax, jax.numpy, ngcconv
        self.version = f"ngclearn {ver} (ngcconv direct), jax {jax.__version__}"
        self._shapes: dict[tuple, tuple[tuple[int, int], tuple[int, int]]] = {}

    def devices(self) -> list[str]:
        return [str(d) for d in self.jax.devices()]

    def _mode(self, kernel_size, stride, padding: Pads) -> tuple[int, int, str]:
        k, s = kernel_size[0], stride[0]
        if kernel_size[1] != k or stride[1] != s:
            raise NotImplementedError("ngc-learn supports square kernels and strides only")
        for mode in ("SAME", "VALID"):
            if geometry.resolve_pads((k, k), (s, s), mode) == padding:
                return k, s, mode
        raise NotImplementedError(f"ngc-learn supports SAME/VALID padding only, not pads {padding}")

    def _deltas(self, x_shape, kernel, s: int, mode: str):
        """``delta_shape`` and ``x_delta_shape`` as ``TraceSTDPDeconvSynapse._init`` derives them."""
        key = (tuple(x_shape), tuple(kernel.shape), s, mode)
        if key not in self._shapes:
            k = kernel.shape[0]
            _x = self.jnp.zeros(x_shape, self.jnp.float32)
            _d = self.ngc.deconv2d(_x, kernel, stride_size=s, padding=mode) * 0
            _dk = self.ngc._calc_dK_deconv(_x, _d, stride_size=s, out_size=k)
            delta = (abs(_dk.shape[0] - k), abs(_dk.shape[1] - k))
            _dx = self.ngc._calc_dX_deconv(kernel, _d, stride_size=s, padding=mode)
            self._shapes[key] = (delta, (_dx.shape[1] - x_shape[1], _dx.shape[2] - x_shape[2]))
        return self._shapes[key]

    def _f(self, a: Any, dt: np.dtype) -> Any:
        return self.jnp.asarray(a, dtype=dt)

    def deconv2d(self, x, kernel, *, stride, padding):
        k, s, mode = self._mode(kernel.shape[:2], stride, padding)
        dt = geometry.result_dtype(np.dtype(x.dtype), np.dtype(kernel.dtype))
        return self.ngc.deconv2d(self._f(x, dt), self._f(kernel, dt), stride_size=s, padding=mode)

    def deconv2d_dk(self, x, d_out, *, kernel_size, stride, padding):
        k, s, mode = self._mode(kernel_size, stride, padding)
        dt = geometry.result_dtype(np.dtype(x.dtype), np.dtype(d_out.dtype))
        kernel = self.jnp.zeros((k, k, x.shape[3], d_out.shape[3]), dt)
        delta, _ = self._deltas(x.shape, kernel, s, mode)
        return self.ngc.calc_dK_deconv(
            self._f(x, dt), self._f(d_out, dt), delta_shape=delta, stride_size=s, out_size=k, padding=mode
        )

    def deconv2d_dx(self, kernel, d_out, *, stride, padding, input_shape):
        k, s, mode = self._mode(kernel.shape[:2], stride, padding)
        dt = geometry.result_dtype(np.dtype(kernel.dtype), np.dtype(d_out.dtype))
        _, xdelta = self._deltas(input_shape, self._f(kernel, dt), s, mode)
        return self.ngc.calc_dX_deconv(
            self._f(kernel, dt), self._f(d_out, dt), delta_shape=xdelta, stride_size=s, padding=mode
        )

    def stdp_update(
        self,
        kernel,
        pre_spike,
        pre_trace,
        post_spike,
        post_trace,
        *,
        stride,
        padding,
        A_plus,
        A_minus,
        eta,
        pretrace_target,
        w_decay,
        w_bound,
    ):
        k, s, mode = self._mode(kernel.shape[:2], stride, padding)
        dt = geometry.result_dtype(*(np.dtype(a.dtype) for a in (kernel, pre_spike, pre_trace, post_spike, post_trace)))
        w = self._f(kernel, dt)
        delta, _ = self._deltas(pre_spike.shape, w, s, mode)
        dk = lambda a, b: self.ngc.calc_dK_deconv(  # noqa: E731
            a, b, delta_shape=delta, stride_size=s, out_size=k, padding=mode
        )
        dw = dk(self._f(pre_trace, dt) - pretrace_target, self._f(post_spike, dt) * A_plus) - dk(
            self._f(pre_spike, dt), self._f(post_trace, dt) * A_minus
        )
        w_new = w + dw * eta - (w * w_decay if w_decay > 0 else 0)
        if w_bound > 0:
            w_new = self.jnp.clip(w_new, 0.01, w_bound - 0.01)
        return w_new, dw


# ----------------------------------------------------------------------------- registry

PEERS: dict[str, Callable[[], Any]] = {"torch": TorchPeer}
# Used under the name "ngclearn" only when the convstdp "ngclearn" backend cannot be loaded.
FALLBACKS: dict[str, Callable[[], Any]] = {"ngclearn": NgcconvPeer}


def build_peer(name: str, factory: Callable[[], Any]) -> Backend:
    """A peer wrapped as a validated :class:`Backend`; raises ``BackendUnavailable`` with the reason."""
    try:
        return Backend(name, factory())
    except ImportError as err:
        raise BackendUnavailable(f"{err.name or 'a required library'} is not installed ({err})") from err
