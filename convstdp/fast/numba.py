"""The ``"numba"`` backend: SPEC §3 as parallel, race-free Numba kernels on the CPU.

``get_backend("numba")`` validates each call (the shared layer) and then calls
:class:`NumbaBackend` with explicit pads. Numba is imported only when the backend is created
(:func:`create_backend`). Two formulations, chosen per call from the share of non-zeros of the
operands that would drive the sparse one (:data:`DENSE_ABOVE`, :data:`DENSE_MIN_MACS`):

- sparse (:mod:`convstdp.fast._numba_kernels`): driven by the non-zeros of a spike operand (row
  lists); the fused :meth:`NumbaBackend.stdp_step` builds the row lists of the spikes once for its
  three passes (on the serial path, in one compiled call);
- dense (:mod:`convstdp.fast._numba_dense`): im2col tiles and BLAS GEMMs, for dense spikes and
  real-valued operands; the fused step computes ``y``, LTP and LTD in one pass over the tiles.

Kernels are compiled on first use per dtype and cached on disk (``cache=True``), so later processes
load them instead of recompiling; they are called by keyword. Results are ``np.ndarray`` of the
SPEC §4 dtype; bool/int spikes are cast to it first. Results do not depend on the number of threads
(see the kernel modules for why).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np

from convstdp import geometry
from convstdp.backends import BackendUnavailable, composed_step
from convstdp.paths import note

__all__ = ["NumbaBackend", "create_backend"]

# Problems below this many multiply-adds (N·H·W·Ci·Co·kh·kw) run the serial drivers: a parallel
# launch costs a few microseconds, more than such a problem takes on one core.
SERIAL_BELOW = 2_000_000

# Sparse or dense (GEMM, :mod:`convstdp.fast._numba_dense`) per call, from the share of non-zeros of
# the operands that drive the sparse kernels (a vectorised count, sampled: see _share) and the size.
# The sparse kernels cost about linearly in that share; the dense ones do not depend on it. Measured
# (scripts/numba_density.py --runners numba-sparse,numba-dense, float32, this 2-core machine, median
# of 5): DENSE_MEASUREMENT below. Below DENSE_MIN_MACS multiply-adds the dense path's fixed costs
# (plans, scratch, BLAS thread switch: ~50 us) are not worth it and the sparse kernels stay.
DENSE_ABOVE = 0.25
DENSE_MIN_MACS = 2_000_000
DENSE_MEASUREMENT = """
SPEC §8 step, float32, one Numba thread (with two, other jobs on this shared 2-core host made the
parallel timings too noisy to place a crossover), ms, median of 5; spikes at density d, x = pre_spike:
                d:   0.05    0.10    0.20    0.30    0.50    1.00
batch-mid  sparse    10.4    15.2    27.1    38.4    58.8   ~116
           dense     24.5    33.8    35.8    33.8    30.1    ~31
batch-large sparse  123.5   154.5   213.6   406.8   662.3       -
           dense    231.7   194.9   227.0   234.9   357.5   ~240
Crossover ~0.2-0.3 on both: dense from 0.25.
"""

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


def _offsets(stride: tuple[int, int], padding: Pads) -> dict[str, int]:
    """The kernels' geometry keywords: strides ``sh``, ``sw`` and the leading pads ``lo_h``, ``lo_w``
    (the trailing pads only fix the output size, which the arrays already have)."""
    return {"sh": stride[0], "sw": stride[1], "lo_h": padding[0][0], "lo_w": padding[1][0]}


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
    """Scratch for the row lists of ``a`` ``(N, R, C, D)``: one int64 per non-zero plus one per row.

    Large arrays get 1.25x their sampled non-zero count (:func:`_share`), so a step's extra memory
    follows the spike density; when the sample falls short the kernel allocates the exact size."""
    rows = a.shape[0] * a.shape[1]
    n = a.size if a.size <= LIST_FULL_BELOW else min(a.size, int(1.25 * _share(a) * a.size) + rows)
    return np.empty(n + rows, dtype=np.int64)


def _acc_buf(chunks: int, kernel_shape: tuple[int, ...], sw: int, dt: np.dtype) -> np.ndarray:
    """Scratch for the dK partial sums: ``chunks`` of :func:`_acc_size` each."""
    return np.empty(chunks * _acc_size(kernel_shape, sw), dtype=dt)


def _pair(name: str) -> tuple[str, str]:
    """``(serial, parallel)`` path names under ``name``, indexed by the ``par`` flag."""
    return f"{name}/serial", f"{name}/parallel"


_DECONV = _pair("deconv2d")
_DX = _pair("deconv2d_dx")
_DK = _pair("deconv2d_dk/sparse")
_UPDATE = _pair("stdp_update")
_STEP_FUSED = _pair("stdp_step/fused")
_STEP_COMPOSED = "stdp_step/composed"
_ALL_PAIRS = (_DECONV, _DX, _DK, _UPDATE, _STEP_FUSED)
_DENSE = tuple(f"{op}/dense" for op in ("deconv2d", "deconv2d_dx", "deconv2d_dk", "stdp_update", "stdp_step"))
_DECONV_DENSE, _DX_DENSE, _DK_DENSE, _UPDATE_DENSE, _STEP_DENSE = _DENSE


# Counting every non-zero of an operand cost up to ~10 % of a sparse step (batch-large at density 0.1:
# 7-10 ms of np.count_nonzero for its 8.6 M-element post arrays): above SHARE_SAMPLE elements the share
# is counted on every k-th row (n, h) only (k <= 16, at least SHARE_SAMPLE elements), by a vectorised
# Numba count. Only the choice of path depends on it, never a result (spikes filling a few rows only
# could tip it the wrong way: speed, not values).
SHARE_SAMPLE = 1 << 16
# Row-list scratch below this many elements is sized for every element (no sampling pass).
LIST_FULL_BELOW = SHARE_SAMPLE


def _share(a: np.ndarray) -> float:
    """Share of non-zeros of the C-contiguous ``a`` ``(N, R, C, D)`` (0 for an empty array), on a
    sample of its rows when it is large (:data:`SHARE_SAMPLE`)."""
    if not a.size:
        return 0.0
    from convstdp.fast._numba_dense import count_rows

    c, m = count_rows(a, max(1, min(16, a.size // SHARE_SAMPLE, a.shape[0] * a.shape[1])))
    return c / m


class _BlasThreads:
    """Around the dense kernels: BLAS (the one Numba's ``np.dot`` calls) single-threaded, since the
    tiles run in parallel on Numba's threads; restored afterwards. A no-op without threadpoolctl."""

    def __init__(self) -> None:
        self._libs: list[Any] | None = None

    def _controllers(self) -> list[Any]:
        if self._libs is None:
            try:
                import scipy.linalg.cython_blas  # noqa: F401  (load the BLAS Numba uses)
                from threadpoolctl import ThreadpoolController
            except ImportError:
                self._libs = []
            else:
                libs = ThreadpoolController().lib_controllers
                self._libs = [c for c in libs if c.user_api == "blas"]
        return self._libs

    @contextmanager
    def single(self) -> Iterator[None]:
        changed = []
        for c in self._controllers():
            n = c.get_num_threads()
            if n is not None and n > 1:
                c.set_num_threads(1)
                changed.append((c, n))
        try:
            yield
        finally:
            for c, n in changed:
                c.set_num_threads(n)


class NumbaBackend:
    """SPEC §3 operators compiled by Numba; NHWC/HWIO ``np.ndarray`` in and out.

    Internal paths (:mod:`convstdp.paths`; each call notes the one it takes):

    - ``<op>/dense`` for every operator: the GEMM formulation (:mod:`convstdp.fast._numba_dense`),
      taken when the operands that drive the sparse kernels have at least :data:`DENSE_ABOVE` non-zeros
      (share) and the problem :data:`DENSE_MIN_MACS` multiply-adds; one code for any thread count
      (tiles in a ``prange``, BLAS single-threaded inside);
    - ``<op>/serial`` and ``<op>/parallel`` for ``deconv2d``, ``deconv2d_dx`` and ``stdp_update``: the
      sparse (row-list) kernels, serial drivers below :data:`SERIAL_BELOW` multiply-adds or with one
      Numba thread, else the parallel ones;
    - ``deconv2d_dk/sparse/{serial,parallel}``: driven by the non-zeros of ``d_out`` (when its share of
      non-zeros is the smaller) or of ``x`` (the two terms of one kernel, :func:`dk_core`);
    - ``stdp_step/fused/{serial,parallel}``: the sparse fused step, all six arrays of one float dtype
      (serial: one compiled call; parallel: the parallel kernels in turn); the row lists of ``x`` are
      those of ``pre_spike`` when ``x`` is that object (a flag of the same kernel). ``stdp_step/dense``:
      ``y``, LTP and LTD in one dense pass, then dX;
    - ``stdp_step/composed``: mixed dtypes, the three operators in turn (which note their own paths).

    The parallel paths are declared only when Numba may run more than one thread
    (``NUMBA_NUM_THREADS > 1``): with one, they cannot be taken.
    """

    name = "numba"
    precision = "highest"

    def __init__(self, force: str | None = None) -> None:
        import numba

        from convstdp.fast import _numba_dense as dense
        from convstdp.fast import _numba_kernels as kern

        self._numba = numba
        self._k = kern
        self._kd = dense
        self._blas = _BlasThreads()
        self.force = force  # "dense" / "sparse": override the choice (numba-dense / numba-sparse, tests)
        self.version = f"numba {numba.__version__}"
        kinds = 2 if numba.config.NUMBA_NUM_THREADS > 1 else 1
        sparse = tuple(p[i] for p in _ALL_PAIRS for i in range(kinds))
        if force == "dense":  # empty operands still take the (trivial) serial kernels
            sparse = tuple(p[0] for p in (_DECONV, _DK, _DX, _UPDATE))
        self.paths = frozenset([_STEP_COMPOSED, *(() if force == "sparse" else _DENSE), *sparse])

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

    # -- dense (GEMM) plumbing ---------------------------------------------------------------

    def _dense(self, share: Any, macs: int, size: int) -> bool:
        """Dense path when the problem has :data:`DENSE_MIN_MACS` multiply-adds and the driving operands'
        share of non-zeros (``share()``, counted only then) is at least :data:`DENSE_ABOVE`
        (``force``: ``"dense"``/``"sparse"``)."""
        if not size:
            return False
        if self.force is not None:
            return self.force == "dense"
        return macs >= DENSE_MIN_MACS and share() >= DENSE_ABOVE

    def _scratch(self, rows: int, depth: int, cols: int, dt: np.dtype) -> np.ndarray:
        """Per-thread column tiles ``(threads, cols, rows·depth)`` (NumPy's allocator: see above)."""
        return np.empty((max(1, self._numba.get_num_threads()), cols, rows * depth), dtype=dt)

    def _out_pass(
        self,
        *,
        x: np.ndarray,
        kernel_shape: tuple[int, ...],
        y: np.ndarray,
        stride: tuple[int, int],
        padding: Pads,
        par: bool,
        kernel: np.ndarray | None = None,
        t1: np.ndarray | None = None,
        d1: np.ndarray | None = None,
        tgt: float = 0.0,
        x2: np.ndarray | None = None,
        d2: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The dense output-stationary pass: ``y = deconv2d(x, kernel)`` when ``kernel`` is given (into
        ``y``), the LTP partials ``dK(t1 - tgt, d1)`` when ``t1`` is, the LTD partials ``dK(x2, d2)`` when
        ``x2`` is (sharing ``x``'s columns when it is ``x``). Returns ``(acc1, acc2, groups)``."""
        kd = self._kd
        dt = x.dtype
        n = x.shape[0]
        grp = kd.groups(kernel_shape, stride, padding, y.shape[1:3])
        dmax = int(grp[:, kd.G_D].max()) if grp.size else 1
        rows = kd.tile_rows(dmax)
        tiles = kd.out_tiles(grp, n, rows)
        chunks = kd.chunks_of(len(tiles))
        ktot = int(np.prod(kernel_shape))
        none = np.empty((1, 0), dtype=dt)
        acc1 = np.empty((chunks, ktot), dtype=dt) if t1 is not None else none
        acc2 = np.empty((chunks, ktot), dtype=dt) if x2 is not None else none
        if kernel is not None and not kd.covers_all_rows(grp, y.shape[1:3]):
            y[...] = 0  # rows of a stride phase no tap reaches
        with self._blas.single():
            kd.out_pass(
                x=x,
                kflat=kd.kernel_flat(kernel, grp, stride) if kernel is not None else np.empty(1, dtype=dt),
                y=y,
                t1=x if t1 is None else t1,
                d1=y if d1 is None else d1,
                x2=x if x2 is None else x2,
                d2=y if d2 is None else d2,
                acc1=acc1,
                acc2=acc2,
                cols=self._scratch(rows, dmax, 2, dt),
                tbuf=np.empty((max(1, self._numba.get_num_threads()), rows * kernel_shape[3]), dtype=dt),
                tmp=np.empty((max(1, self._numba.get_num_threads()), dmax * kernel_shape[3]), dtype=dt),
                grp=grp,
                tiles=tiles,
                chunks=chunks,
                **_offsets(stride, padding),
                tgt=tgt,
                do_y=kernel is not None,
                do_1=t1 is not None,
                do_2=x2 is not None,
                x2_is_x=x2 is x,
                par=par,
            )
        return acc1, acc2, grp

    def _dx_dense(self, kernel: np.ndarray, d: np.ndarray, dx: np.ndarray, stride, padding: Pads, par: bool) -> None:
        kh, kw, _, co = kernel.shape
        depth = kh * kw * co
        rows = self._kd.tile_rows(depth)
        n, h, w, _ = dx.shape
        with self._blas.single():
            self._kd.dx_pass(
                d=d,
                kx=self._kd.dx_matrix(kernel),
                dx=dx,
                cols=self._scratch(rows, depth, 1, dx.dtype),
                T=rows,
                chunks=self._kd.chunks_of(-(-n * h * w // rows)),
                kh=kh,
                kw=kw,
                **_offsets(stride, padding),
                par=par,
            )

    def _reduce(
        self, acc1, acc2, grp, w_in, stride, *, s1=1.0, s2=0.0, eta=0.0, w_decay=0.0, w_bound=0.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(W', dW)`` from the dense partials (:func:`convstdp.fast._numba_dense.reduce_update`)."""
        w_new, dw = np.empty_like(w_in), np.empty_like(w_in)
        self._kd.reduce_update(
            acc1=acc1,
            acc2=acc2,
            use2=acc2.shape[1] > 0,
            s1=s1,
            s2=s2,
            grp=grp,
            w_in=w_in,
            eta=eta,
            w_decay=w_decay,
            w_bound=w_bound,
            dw=dw,
            w_out=w_new,
            Co=w_in.shape[3],
            sh=stride[0],
            sw=stride[1],
        )
        return w_new, dw

    # -- operators ---------------------------------------------------------------------------

    def deconv2d(self, x: Any, kernel: Any, *, stride: tuple[int, int], padding: Pads) -> np.ndarray:
        """x ``(N,H,W,Ci)``, kernel ``(kh,kw,Ci,Co)`` → y ``(N,Ho,Wo,Co)``."""
        dt = _dtype(x, kernel)
        x, kernel = _c(x, dt), _c(kernel, dt)
        macs = x.size * kernel.size // max(1, x.shape[3])
        par = not self._serial(macs)
        y = np.empty(_y_shape(x.shape, kernel.shape, stride, padding), dtype=dt)
        if self._dense(lambda: _share(x), macs, x.size):
            note(_DECONV_DENSE)
            with self._schedule(par):
                self._out_pass(
                    x=x, kernel_shape=kernel.shape, y=y, stride=stride, padding=padding, par=par, kernel=kernel
                )
            return y
        note(_DECONV[par])
        with self._schedule(par):
            offs, ent = self._k.row_lists(x, _list_buf(x), par)
            self._k.deconv_rows(
                x=x, offs=offs, ent=ent, k=kernel, y=y, **_offsets(stride, padding), par=par,
            )  # fmt: skip
        return y

    def deconv2d_dx(
        self, kernel: Any, d_out: Any, *, stride: tuple[int, int], padding: Pads, input_shape: tuple[int, ...]
    ) -> np.ndarray:
        """kernel ``(kh,kw,Ci,Co)``, d_out ``(N,Ho,Wo,Co)`` → dX ``(N,H,W,Ci)`` (``input_shape``)."""
        dt = _dtype(kernel, d_out)
        kernel, d_out = _c(kernel, dt), _c(d_out, dt)
        n, h, w, _ = input_shape
        macs = n * h * w * kernel.size
        par = not self._serial(macs)
        dx = np.empty((n, h, w, kernel.shape[2]), dtype=dt)
        if self._dense(lambda: _share(d_out), macs, d_out.size):
            note(_DX_DENSE)
            with self._schedule(par):
                self._dx_dense(kernel, d_out, dx, stride, padding, par)
            return dx
        note(_DX[par])
        with self._schedule(par):
            offs, ent = self._k.row_lists(d_out, _list_buf(d_out), par)
            self._k.dx_rows(
                k=kernel, d=d_out, offs=offs, ent=ent, dx=dx, **_offsets(stride, padding), par=par,
            )  # fmt: skip
        return dx

    def _dk_sparse(
        self,
        *,
        x1: np.ndarray,
        d1: np.ndarray,
        x2: np.ndarray,
        d2: np.ndarray,
        w_in: np.ndarray,
        stride: tuple[int, int],
        padding: Pads,
        par: bool,
        use1: bool,
        use2: bool,
        s1: float = 1.0,
        s2: float = 1.0,
        params: geometry.StdpParams | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The sparse two-term dK (:func:`convstdp.fast._numba_kernels.dk_core`): LTP driven by the
        non-zeros of ``d1``, LTD by those of ``x2``; ``(W', dW)``."""
        k = self._k
        dt = w_in.dtype
        chunks = _chunks(x1.shape[0] * x1.shape[1], _acc_size(w_in.shape, stride[1]), x1.size + d1.size)
        w_new, dw = np.empty_like(w_in), np.empty_like(w_in)
        d1_offs, d1_ent = k.row_lists(d1, _list_buf(d1), par) if use1 else (_EMPTY_LIST, _EMPTY_LIST)
        x2_offs, x2_ent = k.row_lists(x2, _list_buf(x2), par) if use2 else (_EMPTY_LIST, _EMPTY_LIST)
        p = params or geometry.StdpParams(1.0, 1.0, 0.0, 0.0, 0.0, 0.0)
        k.dk_core(
            x1=x1, d1=d1, d1_offs=d1_offs, d1_ent=d1_ent, x2=x2, d2=d2, x2_offs=x2_offs, x2_ent=x2_ent,
            w_in=w_in, w_out=w_new, dw=dw, buf=_acc_buf(chunks, w_in.shape, stride[1], dt),
            **_offsets(stride, padding), chunks=chunks,
            tgt=p.pretrace_target, use1=use1, use2=use2, s1=s1, s2=s2, eta=p.eta, w_decay=p.w_decay,
            w_bound=p.w_bound, par=par,
        )  # fmt: skip
        return w_new, dw

    def deconv2d_dk(
        self, x: Any, d_out: Any, *, kernel_size: tuple[int, int], stride: tuple[int, int], padding: Pads
    ) -> np.ndarray:
        """x ``(N,H,W,Ci)``, d_out ``(N,Ho,Wo,Co)`` → dK ``(kh,kw,Ci,Co)``.

        Dense when both operands are dense enough; else driven by the non-zeros of whichever operand
        has fewer of them (by share).
        """
        dt = _dtype(x, d_out)
        x, d_out = _c(x, dt), _c(d_out, dt)
        kh, kw = kernel_size
        n, h, w, ci = x.shape
        k_shape = (kh, kw, ci, d_out.shape[3])
        macs = n * h * w * kh * kw * ci * d_out.shape[3]
        par = not self._serial(macs)
        share_x, share_d = _share(x), _share(d_out)
        w0 = np.zeros(k_shape, dtype=dt)
        if self._dense(lambda: min(share_x, share_d), macs, x.size):
            note(_DK_DENSE)
            with self._schedule(par):
                acc1, acc2, grp = self._out_pass(
                    x=x, kernel_shape=k_shape, y=d_out, stride=stride, padding=padding, par=par, t1=x, d1=d_out
                )
                return self._reduce(acc1, acc2, grp, w0, stride)[1]
        by_d = bool(d_out.size) and share_d < share_x
        note(_DK[par])
        with self._schedule(par):
            return self._dk_sparse(
                x1=x, d1=d_out, x2=x, d2=d_out, w_in=w0, stride=stride, padding=padding, par=par,
                use1=by_d, use2=not by_d,
            )[1]  # fmt: skip

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
        """``(W', dW)``, both ``(kh,kw,Ci,Co)``: LTP and LTD in one pass (sparse: over the rows of the
        spikes' non-zeros; dense: over column tiles, pre-spike columns gathered once)."""
        dt = _dtype(kernel, pre_spike, pre_trace, post_spike, post_trace)
        kernel, pre_spike, pre_trace = _c(kernel, dt), _c(pre_spike, dt), _c(pre_trace, dt)
        post_spike, post_trace = _c(post_spike, dt), _c(post_trace, dt)
        macs = pre_spike.size * kernel.size // max(1, kernel.shape[2])
        par = not self._serial(macs)
        if self._dense(lambda: (_share(pre_spike) + _share(post_spike)) / 2, macs, pre_spike.size):
            note(_UPDATE_DENSE)
            with self._schedule(par):
                return self._update_dense(
                    kernel, pre_spike, pre_trace, post_spike, post_trace, stride, padding, params, par
                )
        note(_UPDATE[par])
        with self._schedule(par):
            return self._dk_sparse(
                x1=pre_trace, d1=post_spike, x2=pre_spike, d2=post_trace, w_in=kernel, stride=stride,
                padding=padding, par=par, use1=True, use2=True, s1=params.A_plus, s2=-params.A_minus, params=params,
            )  # fmt: skip

    def _update_dense(
        self, kernel, pre_spike, pre_trace, post_spike, post_trace, stride, padding, params, par, x=None, y=None
    ):
        """Dense ``(W', dW)`` (and ``y = deconv2d(x, kernel)`` into ``y`` when ``x`` is given, same pass)."""
        acc1, acc2, grp = self._out_pass(
            x=pre_spike if x is None else x,
            kernel_shape=kernel.shape,
            y=post_spike if y is None else y,
            stride=stride,
            padding=padding,
            par=par,
            kernel=None if x is None else kernel,
            t1=pre_trace,
            d1=post_spike,
            tgt=params.pretrace_target,
            x2=pre_spike,
            d2=post_trace,
        )
        return self._reduce(
            acc1, acc2, grp, kernel, stride, s1=params.A_plus, s2=-params.A_minus, eta=params.eta,
            w_decay=params.w_decay, w_bound=params.w_bound,
        )  # fmt: skip

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
        ``(N,H,W,Ci)``; fused when all six arrays share a dtype (sparse: row lists of the spikes built
        once; dense: ``y``, LTP and LTD in one pass over column tiles, then dX)."""
        dt = kernel.dtype
        same = dt in _FLOATS and all(a.dtype == dt for a in (x, pre_spike, pre_trace, post_spike, post_trace))
        if not same:  # mixed dtypes: each operator has its own SPEC §4 result dtype
            note(_STEP_COMPOSED)
            return composed_step(
                self, kernel, x, pre_spike, pre_trace, post_spike, post_trace, stride=stride, padding=padding,
                params=params,
            )  # fmt: skip
        x_is_pre = x is pre_spike
        kernel, x, pre_spike, pre_trace = _c(kernel, dt), _c(x, dt), _c(pre_spike, dt), _c(pre_trace, dt)
        post_spike, post_trace = _c(post_spike, dt), _c(post_trace, dt)
        if x_is_pre:
            x = pre_spike
        macs = x.size * kernel.size // max(1, kernel.shape[2])
        par = not self._serial(macs)
        y = np.empty(_y_shape(x.shape, kernel.shape, stride, padding), dtype=dt)
        dx = np.empty(x.shape, dtype=dt)

        # each pass weighs about the same at full density: deconv (x), LTD (pre), LTP and dX (post)
        def share() -> float:
            share_pre = _share(pre_spike)
            return ((share_pre if x_is_pre else _share(x)) + share_pre + 2 * _share(post_spike)) / 4

        if self._dense(share, macs, x.size):
            note(_STEP_DENSE)
            with self._schedule(par):
                w_new, dw = self._update_dense(
                    kernel, pre_spike, pre_trace, post_spike, post_trace, stride, padding, params, par, x=x, y=y
                )
                self._dx_dense(w_new, post_spike, dx, stride, padding, par)
            return y, w_new, dw, dx
        chunks = _chunks(x.shape[0] * x.shape[1], _acc_size(kernel.shape, stride[1]), x.size + post_spike.size)
        w_new, dw = np.empty(kernel.shape, dtype=dt), np.empty(kernel.shape, dtype=dt)
        note(_STEP_FUSED[par])
        with self._schedule(par):
            self._k.stdp_step(
                k=kernel, x=x, pre_s=pre_spike, pre_t=pre_trace, post_s=post_spike, post_t=post_trace,
                y=y, w_out=w_new, dw=dw, dx=dx,
                x_buf=_EMPTY_LIST if x_is_pre else _list_buf(x), pre_buf=_list_buf(pre_spike),
                post_buf=_list_buf(post_spike), acc_buf=_acc_buf(chunks, kernel.shape, stride[1], dt),
                x_is_pre=x_is_pre, **_offsets(stride, padding),
                chunks=chunks, params=params, par=par,
            )  # fmt: skip
        return y, w_new, dw, dx


def create_backend() -> NumbaBackend:
    """The ``"numba"`` backend; raises :class:`BackendUnavailable` when Numba cannot be imported."""
    try:
        import numba  # noqa: F401
    except ImportError as err:
        raise BackendUnavailable(f"numba is not installed ({err}); pip install 'convstdp[numba]'") from err
    return NumbaBackend()


def create_dense_backend() -> NumbaBackend:
    """``"numba-dense"``: every non-empty call on the dense (GEMM) path, whatever the density."""
    create_backend()
    return NumbaBackend(force="dense")


def create_sparse_backend() -> NumbaBackend:
    """``"numba-sparse"``: every call on the sparse-driven kernels, whatever the density."""
    create_backend()
    return NumbaBackend(force="sparse")
