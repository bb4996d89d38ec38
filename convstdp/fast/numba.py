"""The ``"numba"`` backend: SPEC §3 as parallel, race-free Numba kernels on the CPU.

``get_backend("numba")`` validates each call (the shared layer) and then calls
:class:`NumbaBackend` with explicit pads. Numba is imported only when the backend is created
(:func:`create_backend`); the kernels live in :mod:`convstdp.fast._numba_kernels`, compiled on
first use per dtype and cached on disk (``cache=True``), so later processes load them instead of
recompiling. The fused :meth:`NumbaBackend.stdp_step` builds the row lists of the spikes once for
its three passes (on the serial path, in one compiled call).

Results are ``np.ndarray`` of the SPEC §4 dtype; bool/int spikes are cast to it first. float64
results do not depend on the number of threads (see the kernels module for why).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np

from convstdp import geometry
from convstdp.backends import BackendUnavailable
from convstdp.paths import note

__all__ = ["NumbaBackend", "create_backend"]

# Problems below this many multiply-adds (N·H·W·Ci·Co·kh·kw) run the serial drivers: a parallel
# launch costs a few microseconds, more than such a problem takes on one core.
SERIAL_BELOW = 2_000_000

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_NULL = nullcontext()

Pads = tuple[tuple[int, int], tuple[int, int]]


def _dtype(*arrays: Any) -> np.dtype:
    """SPEC §4 result dtype, with a fast path for the common all-same-float case."""
    dt = arrays[0].dtype
    if dt in _FLOATS and all(a.dtype == dt for a in arrays[1:]):
        return np.dtype(dt)
    return geometry.result_dtype(*(np.dtype(a.dtype) for a in arrays))


def _c(a: Any, dt: np.dtype) -> np.ndarray:
    """``a`` as a C-contiguous ndarray of ``dt`` (no copy when it already is one)."""
    if a.__class__ is np.ndarray and a.dtype == dt and a.flags.c_contiguous:
        return a
    return np.ascontiguousarray(a, dtype=dt)


# dK partial sums: at most this many chunks (a constant, so results never depend on threads).
MAX_CHUNKS = 32


def _chunks(rows: int, acc_size: int, operand_size: int) -> int:
    """Number of dK partial sums: a function of the shapes only, never of the thread count.

    Capped so the partials (``acc_size`` elements each) stay within the operands' size.
    """
    return max(1, min(rows, MAX_CHUNKS, operand_size // max(1, acc_size)))


def _y_shape(
    x_shape: tuple[int, ...], k_shape: tuple[int, ...], stride: tuple[int, int], padding: Pads
) -> tuple[int, int, int, int]:
    """``deconv2d`` output shape ``(N, Ho, Wo, Co)`` for explicit pads."""
    (lo_h, hi_h), (lo_w, hi_w) = padding
    return (
        x_shape[0],
        geometry.output_length(x_shape[1], k_shape[0], stride[0], lo_h, hi_h),
        geometry.output_length(x_shape[2], k_shape[1], stride[1], lo_w, hi_w),
        k_shape[3],
    )


def _acc_size(kernel_shape: tuple[int, ...], sw: int) -> int:
    kh, kw, ci, co = kernel_shape
    return kh * ci * co * (kw + sw * ((kw + sw - 1) // sw))


# Outputs and scratch come from NumPy's allocator, which asks for transparent huge pages: Numba's
# own allocations fault in 4 KiB pages, and a 35 MB result (batch-large) then took about 4x as long
# to allocate and write (page faults) as from NumPy. Untouched pages cost nothing, so row lists get
# their upper bound (address space only) and the kernel touches just the prefix it needs.
_EMPTY_LIST = np.empty(0, dtype=np.int64)


def _list_buf(a: np.ndarray) -> np.ndarray:
    """Scratch for the row lists of ``a`` ``(N, R, C, D)``: ``a.size + N*R`` int64 (the most needed)."""
    return np.empty(a.size + a.shape[0] * a.shape[1], dtype=np.int64)


def _acc_buf(chunks: int, kernel_shape: tuple[int, ...], sw: int, dt: np.dtype) -> np.ndarray:
    """Scratch for the dK partial sums: ``chunks`` of :func:`_acc_size` each."""
    return np.empty(chunks * _acc_size(kernel_shape, sw), dtype=dt)


def _pair(name: str) -> tuple[str, str]:
    """``(serial, parallel)`` path names under ``name``, indexed by the ``par`` flag."""
    return f"{name}/serial", f"{name}/parallel"


_DECONV = _pair("deconv2d")
_DX = _pair("deconv2d_dx")
_DK_BY_D, _DK_BY_X = _pair("deconv2d_dk/by-d"), _pair("deconv2d_dk/by-x")
_UPDATE = _pair("stdp_update")
_STEP_X_IS_PRE, _STEP_X_DISTINCT = _pair("stdp_step/fused/x-is-pre"), _pair("stdp_step/fused/x-distinct")
_STEP_COMPOSED = "stdp_step/composed"
_ALL_PAIRS = (_DECONV, _DX, _DK_BY_D, _DK_BY_X, _UPDATE, _STEP_X_IS_PRE, _STEP_X_DISTINCT)


class NumbaBackend:
    """SPEC §3 operators compiled by Numba; NHWC/HWIO ``np.ndarray`` in and out.

    Internal paths (:mod:`convstdp.paths`; each call notes the one it takes):

    - ``<op>/serial`` and ``<op>/parallel`` for ``deconv2d``, ``deconv2d_dx`` and ``stdp_update``: the
      serial drivers below :data:`SERIAL_BELOW` multiply-adds or with one Numba thread, else the
      parallel ones;
    - ``deconv2d_dk/by-d/{serial,parallel}`` and ``deconv2d_dk/by-x/{serial,parallel}``: the pass is
      driven by the non-zeros of ``d_out`` (when its share of non-zeros is the smaller) or of ``x``;
    - ``stdp_step/fused/x-is-pre/{serial,parallel}`` (``x`` is the ``pre_spike`` object: its row lists
      are shared) and ``stdp_step/fused/x-distinct/{serial,parallel}``: the fused step, all six arrays
      of one float dtype (serial: one compiled call; parallel: the parallel kernels in turn);
    - ``stdp_step/composed``: mixed dtypes, the three operators in turn (which note their own paths).

    The parallel paths are declared only when Numba may run more than one thread
    (``NUMBA_NUM_THREADS > 1``): with one, they cannot be taken.
    """

    name = "numba"
    precision = "highest"

    def __init__(self) -> None:
        import numba

        from convstdp.fast import _numba_kernels as kern

        self._numba = numba
        self._k = kern
        self.version = f"numba {numba.__version__}"
        kinds = 2 if numba.config.NUMBA_NUM_THREADS > 1 else 1
        self.paths = frozenset([_STEP_COMPOSED, *(p[i] for p in _ALL_PAIRS for i in range(kinds))])

    def devices(self) -> list[str]:
        return [f"cpu ({self._numba.get_num_threads()} threads)"]

    def _serial(self, macs: int) -> bool:
        return macs < SERIAL_BELOW or self._numba.get_num_threads() == 1

    def _schedule(self, par: bool) -> Any:
        """Around parallel kernels: dynamic scheduling, one row (or chunk) at a time.

        Numba's default static split makes a parallel loop wait for a descheduled thread's whole
        share, which on a shared machine (2 cores, other jobs) cost several times the work. Which
        thread runs an iteration never changes a result: every iteration owns its outputs.
        """
        return self._dynamic() if par else _NULL

    @contextmanager
    def _dynamic(self) -> Iterator[None]:
        old = self._numba.set_parallel_chunksize(1)
        try:
            yield
        finally:
            self._numba.set_parallel_chunksize(old)

    # -- operators ---------------------------------------------------------------------------

    def deconv2d(self, x: Any, kernel: Any, *, stride: tuple[int, int], padding: Pads) -> np.ndarray:
        """x ``(N,H,W,Ci)``, kernel ``(kh,kw,Ci,Co)`` → y ``(N,Ho,Wo,Co)``."""
        dt = _dtype(x, kernel)
        x, kernel = _c(x, dt), _c(kernel, dt)
        par = not self._serial(x.size * kernel.size // max(1, x.shape[3]))
        y = np.empty(_y_shape(x.shape, kernel.shape, stride, padding), dtype=dt)
        note(_DECONV[par])
        with self._schedule(par):
            offs, ent = self._k.row_lists(x, _list_buf(x), par)
            self._k.deconv_rows(x, offs, ent, kernel, y, stride[0], stride[1], padding[0][0], padding[1][0], par)
        return y

    def deconv2d_dx(
        self, kernel: Any, d_out: Any, *, stride: tuple[int, int], padding: Pads, input_shape: tuple[int, ...]
    ) -> np.ndarray:
        """kernel ``(kh,kw,Ci,Co)``, d_out ``(N,Ho,Wo,Co)`` → dX ``(N,H,W,Ci)`` (``input_shape``)."""
        dt = _dtype(kernel, d_out)
        kernel, d_out = _c(kernel, dt), _c(d_out, dt)
        n, h, w, _ = input_shape
        par = not self._serial(n * h * w * kernel.size)
        dx = np.empty((n, h, w, kernel.shape[2]), dtype=dt)
        note(_DX[par])
        with self._schedule(par):
            offs, ent = self._k.row_lists(d_out, _list_buf(d_out), par)
            self._k.dx_rows(kernel, d_out, offs, ent, dx, stride[0], stride[1], padding[0][0], padding[1][0], par)
        return dx

    def deconv2d_dk(
        self, x: Any, d_out: Any, *, kernel_size: tuple[int, int], stride: tuple[int, int], padding: Pads
    ) -> np.ndarray:
        """x ``(N,H,W,Ci)``, d_out ``(N,Ho,Wo,Co)`` → dK ``(kh,kw,Ci,Co)``.

        The pass is driven by the non-zeros of whichever operand has fewer of them (by share).
        """
        dt = _dtype(x, d_out)
        x, d_out = _c(x, dt), _c(d_out, dt)
        kh, kw = kernel_size
        n, h, w, ci = x.shape
        k_shape = (kh, kw, ci, d_out.shape[3])
        by_d = bool(d_out.size) and bool(np.count_nonzero(d_out) * x.size < np.count_nonzero(x) * d_out.size)
        par = not self._serial(n * h * w * kh * kw * ci * d_out.shape[3])
        chunks = _chunks(n * h, _acc_size(k_shape, stride[1]), x.size + d_out.size)
        w0, dk = np.zeros(k_shape, dtype=dt), np.empty(k_shape, dtype=dt)
        note((_DK_BY_D if by_d else _DK_BY_X)[par])
        with self._schedule(par):
            drive = d_out if by_d else x
            offs, ent = self._k.row_lists(drive, _list_buf(drive), par)
            self._k.dk_core(
                x,
                d_out,
                offs,
                ent,
                x,
                d_out,
                offs,
                ent,
                w0,
                np.empty_like(w0),
                dk,
                _acc_buf(chunks, k_shape, stride[1], dt),
                stride[0],
                stride[1],
                padding[0][0],
                padding[1][0],
                chunks,
                0.0,
                by_d,
                not by_d,
                1.0,
                1.0,
                0.0,
                0.0,
                0.0,
                par,
            )
        return dk

    def stdp_update(
        self,
        kernel: Any,
        pre_spike: Any,
        pre_trace: Any,
        post_spike: Any,
        post_trace: Any,
        *,
        stride: tuple[int, int],
        padding: Pads,
        params: geometry.StdpParams,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(W', dW)``, both ``(kh,kw,Ci,Co)``: LTP and LTD in one pass over the rows."""
        dt = _dtype(kernel, pre_spike, pre_trace, post_spike, post_trace)
        kernel, pre_spike, pre_trace = _c(kernel, dt), _c(pre_spike, dt), _c(pre_trace, dt)
        post_spike, post_trace = _c(post_spike, dt), _c(post_trace, dt)
        n, h = pre_spike.shape[0], pre_spike.shape[1]
        par = not self._serial(pre_spike.size * kernel.size // max(1, kernel.shape[2]))
        chunks = _chunks(n * h, _acc_size(kernel.shape, stride[1]), pre_spike.size + post_spike.size)
        k = self._k
        w_new, dw = np.empty(kernel.shape, dtype=dt), np.empty(kernel.shape, dtype=dt)
        note(_UPDATE[par])
        with self._schedule(par):
            pre_offs, pre_ent = k.row_lists(pre_spike, _list_buf(pre_spike), par)
            post_offs, post_ent = k.row_lists(post_spike, _list_buf(post_spike), par)
            k.dk_core(
                pre_trace,
                post_spike,
                post_offs,
                post_ent,
                pre_spike,
                post_trace,
                pre_offs,
                pre_ent,
                kernel,
                w_new,
                dw,
                _acc_buf(chunks, kernel.shape, stride[1], dt),
                stride[0],
                stride[1],
                padding[0][0],
                padding[1][0],
                chunks,
                params.pretrace_target,
                True,
                True,
                params.A_plus,
                -params.A_minus,
                params.eta,
                params.w_decay,
                params.w_bound,
                par,
            )
        return w_new, dw

    def stdp_step(
        self,
        kernel: Any,
        x: Any,
        pre_spike: Any,
        pre_trace: Any,
        post_spike: Any,
        post_trace: Any,
        *,
        stride: tuple[int, int],
        padding: Pads,
        params: geometry.StdpParams,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """SPEC §8 step ``(y, W', dW, dX)``: ``y`` ``(N,Ho,Wo,Co)``, ``W'``, ``dW`` ``(kh,kw,Ci,Co)``, ``dX``
        ``(N,H,W,Ci)``; fused (row lists of the spikes built once) when all six arrays share a dtype."""
        dt = kernel.dtype
        same = dt in _FLOATS and all(a.dtype == dt for a in (x, pre_spike, pre_trace, post_spike, post_trace))
        if not same:  # mixed dtypes: each operator has its own SPEC §4 result dtype
            note(_STEP_COMPOSED)
            y = self.deconv2d(x, kernel, stride=stride, padding=padding)
            w_new, dw = self.stdp_update(
                kernel, pre_spike, pre_trace, post_spike, post_trace, stride=stride, padding=padding, params=params
            )
            dx = self.deconv2d_dx(w_new, post_spike, stride=stride, padding=padding, input_shape=tuple(x.shape))
            return y, w_new, dw, dx
        x_is_pre = x is pre_spike
        kernel, x, pre_spike, pre_trace = _c(kernel, dt), _c(x, dt), _c(pre_spike, dt), _c(pre_trace, dt)
        post_spike, post_trace = _c(post_spike, dt), _c(post_trace, dt)
        par = not self._serial(x.size * kernel.size // max(1, kernel.shape[2]))
        chunks = _chunks(x.shape[0] * x.shape[1], _acc_size(kernel.shape, stride[1]), x.size + post_spike.size)
        y = np.empty(_y_shape(x.shape, kernel.shape, stride, padding), dtype=dt)
        w_new, dw, dx = np.empty(kernel.shape, dtype=dt), np.empty(kernel.shape, dtype=dt), np.empty(x.shape, dtype=dt)
        note((_STEP_X_IS_PRE if x_is_pre else _STEP_X_DISTINCT)[par])
        with self._schedule(par):
            self._k.stdp_step(
                kernel,
                x,
                pre_spike,
                pre_trace,
                post_spike,
                post_trace,
                y,
                w_new,
                dw,
                dx,
                _EMPTY_LIST if x_is_pre else _list_buf(x),
                _list_buf(pre_spike),
                _list_buf(post_spike),
                _acc_buf(chunks, kernel.shape, stride[1], dt),
                x_is_pre,
                stride[0],
                stride[1],
                padding[0][0],
                padding[1][0],
                chunks,
                *params,
                par,
            )
        return y, w_new, dw, dx


def create_backend() -> NumbaBackend:
    """The ``"numba"`` backend; raises :class:`BackendUnavailable` when Numba cannot be imported."""
    try:
        import numba  # noqa: F401
    except ImportError as err:
        raise BackendUnavailable(f"numba is not installed ({err}); pip install 'convstdp[numba]'") from err
    return NumbaBackend()
