"""PyTorch as a backend (``get_backend("torch")``): the baseline users compare against.

Registered opt-in and flagged as a baseline (:func:`convstdp.backends.is_baseline`): it runs only
when named, and benchmark reports compare the other runners with it. It takes and returns NHWC
NumPy arrays like every backend, converting to PyTorch's NCHW layout inside each call; the
benchmark times its step as a PyTorch user runs it, on NCHW tensors prepared once
(:meth:`TorchBackend.native`).

PyTorch: SPEC §3 pairs input ``h`` and tap ``a`` at ``p = h*s + lo - a``; ``conv_transpose2d``
pairs them at ``p = h*s - P + a``. So the kernel is flipped (``a -> k-1-a``) and laid out
``(Ci, Co, kh, kw)``; the full transposed output (``P = 0``) is then cropped by ``k-1-lo`` at the
start and ``k-1-hi`` at the end of each axis. The symmetric part of that crop is PyTorch's
``padding``; the rest (or a negative crop, i.e. zero padding) is an ``F.pad``. dK and dX are
autograd's derivative of that convolution, ``aten.convolution_backward``, called directly so
that no forward pass is recomputed for them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convstdp import geometry
from convstdp.backends import BackendUnavailable, composed_step
from convstdp.environment import cpu_count

__all__ = ["TorchBackend", "create_backend", "torch_pads"]

Pads = tuple[tuple[int, int], tuple[int, int]]


def torch_pads(k: int, lo: int, hi: int) -> tuple[int, int, int]:
    """``(P, crop_lo, crop_hi)`` for one axis: PyTorch's symmetric padding, then extra crops.

    The full transposed output is cropped by ``k-1-lo`` / ``k-1-hi``; ``P`` takes the common,
    non-negative part, the rest is returned (negative = zero padding).
    """
    c_lo, c_hi = k - 1 - lo, k - 1 - hi
    p = max(0, min(c_lo, c_hi))
    return p, c_lo - p, c_hi - p


class TorchBackend:
    """PyTorch CPU: ``conv_transpose2d`` (flipped kernel) and its autograd derivatives."""

    name = "torch"

    def __init__(self, threads: int | None = None) -> None:
        import torch

        self.torch = torch
        self.F = torch.nn.functional
        torch.set_num_threads(threads or cpu_count())
        self.version = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
        self.layout = "nchw"  # the memory format native() last chose ("nchw" or "channels_last")

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

    def _update(self, w: Any, pre_s: Any, pre_t: Any, post_s: Any, post_t: Any, stride, padding: Pads, params) -> Any:
        """The seed's ``evolve`` on PyTorch-layout tensors (NCHW maps, flipped ``(Ci, Co, kh, kw)``
        weights): ``(W', dW)`` in the weights' layout."""
        ks = tuple(w.shape[2:])
        ltp = self._dk(pre_t - params.pretrace_target, post_s * params.A_plus, ks, stride, padding)
        dw = ltp - self._dk(pre_s, post_t * params.A_minus, ks, stride, padding)
        w_new = w + params.eta * dw
        if params.w_decay > 0:
            w_new = w_new - params.w_decay * w
        if params.w_bound > 0:
            w_new = w_new.clamp(0.01, params.w_bound - 0.01)
        return w_new, dw

    def _step(self, w: Any, x: Any, pre_s: Any, pre_t: Any, post_s: Any, post_t: Any, g: Any, params: Any) -> Any:
        """SPEC §8 step on PyTorch-layout tensors → ``(y, W', dW, dX)`` in that layout."""
        p, extra = self._plan(g.kernel_size, g.pads)
        y = self.F.conv_transpose2d(x, w, stride=g.stride, padding=p)
        y = self.F.pad(y, extra) if any(extra) else y
        w_new, dw = self._update(w, pre_s, pre_t, post_s, post_t, g.stride, g.pads, params)
        return y, w_new, dw, self._dx(w_new, post_s, g.x_shape, g.stride, g.pads)

    def _native_inputs(self, inputs: dict[str, Any], names: tuple[str, ...], dt: np.dtype) -> list[Any]:
        """NHWC/HWIO arrays → PyTorch layout, once each (``x`` and ``pre_spike`` may be one array)."""
        done: dict[int, Any] = {}
        conv = lambda n: self._weight(inputs[n], dt) if n == "kernel" else self._nchw(inputs[n], dt)  # noqa: E731
        return [done.setdefault(id(inputs[n]), conv(n)) for n in names]

    def stdp_update(self, kernel, pre_spike, pre_trace, post_spike, post_trace, *, stride, padding, params):
        arrays = dict(
            kernel=kernel, pre_spike=pre_spike, pre_trace=pre_trace, post_spike=post_spike, post_trace=post_trace
        )
        dt = geometry.result_dtype(*(np.dtype(a.dtype) for a in arrays.values()))
        with self.torch.no_grad():
            w_new, dw = self._update(*self._native_inputs(arrays, tuple(arrays), dt), stride, padding, params)
            return self._unflip(w_new).numpy(), self._unflip(dw).numpy()

    def _faster_layout(self, tensors: list[Any], g: Any, params: Any) -> list[Any]:
        """The tensors in whichever memory format runs this step faster here, as a PyTorch user would
        pick: contiguous NCHW or ``channels_last`` (oneDNN's NHWC kernels; ~1.7x faster on batch-large,
        slower on some small maps). Decided by timing both (median of 3, after a warm-up); the choice
        is kept in ``self.layout``."""
        import time

        torch = self.torch
        cl = [t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t for t in tensors]
        best = {}
        with torch.no_grad():
            for name, ts in (("nchw", tensors), ("channels_last", cl)):
                self._step(*ts, g, params)
                times = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    self._step(*ts, g, params)
                    times.append(time.perf_counter() - t0)
                best[name] = sorted(times)[1]
        self.layout = min(best, key=best.get)
        return cl if self.layout == "channels_last" else tensors

    def native(self, op: str, inputs: dict[str, Any], g: Any, params: Any, *, spec_layout: bool = False) -> Any:
        """The SPEC §8 step as a PyTorch user runs it: tensors converted to NCHW (and the kernel to
        ``conv_transpose2d``'s layout) once, here; the returned call computes on them and returns
        PyTorch-layout tensors (``spec_layout``: NHWC/HWIO NumPy arrays, for checking). ``None`` for
        other operators (they are timed through the interface)."""
        if op != "stdp_step":
            return None
        names = ("kernel", "x", "pre_spike", "pre_trace", "post_spike", "post_trace")
        dt = geometry.result_dtype(*(np.dtype(inputs[n].dtype) for n in names))
        tensors = self._faster_layout(self._native_inputs(inputs, names, dt), g, params)
        torch = self.torch

        def run() -> Any:
            with torch.no_grad():
                return self._step(*tensors, g, params)

        if not spec_layout:
            return run

        def run_spec() -> tuple[np.ndarray, ...]:
            y, w_new, dw, dx = run()
            return self._nhwc(y), self._unflip(w_new).numpy(), self._unflip(dw).numpy(), self._nhwc(dx)

        return run_spec

    def stdp_step(self, kernel, x, pre_spike, pre_trace, post_spike, post_trace, *, stride, padding, params):
        """Fused SPEC §8 step; each output keeps its own SPEC §4 dtype when the inputs mix dtypes."""
        inputs = dict(
            kernel=kernel, x=x, pre_spike=pre_spike, pre_trace=pre_trace, post_spike=post_spike, post_trace=post_trace
        )
        dts = {geometry.result_dtype(np.dtype(x.dtype), np.dtype(kernel.dtype))} | {
            geometry.result_dtype(*(np.dtype(a.dtype) for n, a in inputs.items() if n != "x"))
        }
        if len(dts) > 1:
            return composed_step(
                self, kernel, x, pre_spike, pre_trace, post_spike, post_trace, stride=stride, padding=padding,
                params=params,
            )  # fmt: skip
        g = geometry.check_stdp_step(kernel, x, pre_spike, pre_trace, post_spike, post_trace, stride, padding)
        return self.native("stdp_step", inputs, g, params, spec_layout=True)()


def create_backend() -> TorchBackend:
    """The ``"torch"`` backend; :class:`BackendUnavailable` when PyTorch cannot be imported."""
    try:
        import torch  # noqa: F401
    except ImportError as err:
        raise BackendUnavailable(
            f"torch is not installed ({err}); pip install torch (CPU build: pip install torch==2.13.0 here)"
        ) from err
    return TorchBackend()
