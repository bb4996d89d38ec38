"""Dense (GEMM) kernels of the ``"numba"`` backend: for dense operands (spike density high, real values).

The sparse kernels (:mod:`convstdp.fast._numba_kernels`) cost a few vector updates per non-zero and
win at low spike density; at density 1 they do a memory-bound AXPY per element and lose to a
matrix-multiply formulation. Here every pass is a sequence of tiles, each an im2col gather (a few
contiguous runs per row) and one BLAS GEMM (``np.dot`` on contiguous 2D arrays, single-threaded:
the tiles run in parallel, each on a thread-private scratch, so nothing big is ever materialised).

Index map per axis (SPEC §3): input ``h`` and tap ``a`` meet at output ``p = h*s + lo - a``.

**Output-stationary pass** (``deconv2d``, ``dK``, the update's LTP/LTD, all from one gather):
output rows split into stride phases: the rows ``p`` with ``(lo - p) mod s = φ`` meet exactly the
taps ``a = φ + j*s`` (``j < m``), at ``h = (p - lo + φ)/s + j``. Per phase pair ``(φh, φw)`` (a
*group*) the rows ``(n, P, Q)`` (``p = p0 + P*s``) get a column matrix ``col[r, (j, l, i)] =
x[n, hb + j, wb + l, i]`` (zero outside the map): ``mh`` runs of ``mw·Ci`` contiguous values per
row. Then ``y_rows = col @ K_g`` (``K_g[(j,l,i), o] = K[φh + j*sh, φw + l*sw, i, o]``) and
``dK_g += col^T @ d_rows``. No tap is wasted on stride holes. Output rows in a phase no tap reaches
(stride larger than the kernel) are zero.

**Input-stationary pass** (``dX``): rows are the input pixels ``(n, h, w)``, contiguous in ``dX``;
``col[r, (a, b', o)] = d[n, h*sh + lo_h - a, w*sw + lo_w - (kw-1) + b', o]`` (``kh`` runs of
``kw·Co`` values) and ``dX_rows = col @ Kx``, ``Kx[(a, b', o), i] = K[a, kw-1-b', i, o]``.

**Race-free, thread-count independent.** Tiles (rows per tile fixed by the shapes) are grouped into
``chunks`` fixed by the shapes alone; a parallel iteration is a chunk. ``deconv2d``/``dX`` tiles own
their output rows; ``dK`` tiles add into their chunk's partial sum, and the partials are reduced in
chunk order in float64 (:func:`reduce_update`). The scratch (column tiles) is per thread
(``numba.get_thread_id()``): it is rewritten before each use, so which thread runs a chunk changes
nothing. Inputs with Inf/NaN go through BLAS like any value: nothing loops on values.

**Disk cache.** As in the sparse module: every function is ``cache=True``; the ``parallel=True``
entry points (:func:`out_pass`, :func:`dx_pass`) are called from Python only, never from another
compiled function (Numba issue #8578, see :mod:`convstdp.fast._numba_kernels`).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from convstdp.fast._numba_kernels import _count_row, _evolved, _zero

_JIT = dict(cache=True, nogil=True, error_model="numpy", boundscheck=False)
_PAR = dict(_JIT, parallel=True)

# Group table columns (one row per phase pair): phases, taps per axis, first output row/col of the
# phase, rows/cols of the phase, offset of K_g in the flat kernel, depth D = mh*mw*Ci, first tile.
G_PHH, G_PHW, G_MH, G_MW, G_P0H, G_P0W, G_NPH, G_NPW, G_KOFF, G_D = range(10)


# ------------------------------------------------------------------------------------- density


@njit(**_JIT)
def count_rows(a, step):
    """``(non-zeros, elements)`` of every ``step``-th row ``(n, h)`` of ``a`` ``(N, R, C, D)``
    (C-contiguous): branch-free, vectorised (NumPy's count on a strided sample was ~30x slower)."""
    rows = a.shape[0] * a.shape[1]
    L = a.shape[2] * a.shape[3]
    a1 = a.reshape(-1)
    c = 0
    m = 0
    for r in range(0, rows, step):
        c += _count_row(a1, r, L)
        m += L
    return c, m


# ------------------------------------------------------------------------------------- gathers


@njit(inline="always", **_JIT)
def _split(r, mid, inner):
    """Row ``r`` of a ``(·, mid, inner)`` grid as ``(n, m, i)`` (divisions once, at a tile's first row)."""
    return r // (inner * mid), (r // inner) % mid, r % inner


@njit(inline="always", **_JIT)
def _next(n, m, i, mid, inner):
    """The row after ``(n, m, i)`` on a ``(·, mid, inner)`` grid, stepped like an odometer (no division)."""
    i += 1
    if i == inner:
        i = 0
        m += 1
        if m == mid:
            m = 0
            n += 1
    return n, m, i


@njit(inline="always", **_JIT)
def _add(dst, do, src, n):
    """``dst[do:do+n] += src[:n]`` (unsigned indices, as :func:`_copy`)."""
    d = np.uint64(do)
    for j in range(np.uint64(n)):
        dst[d + j] += src[j]


@njit(inline="always", **_JIT)
def _copy(dst, do, src, so, n, sub):
    """``dst[do:do+n] = src[so:so+n] - sub``. Unsigned indices let LLVM vectorise the copy (signed
    ones carry a wrap-around select that blocks it; see ``_axpy`` in the sparse module)."""
    d = np.uint64(do)
    s = np.uint64(so)
    for j in range(np.uint64(n)):
        dst[d + j] = src[s + j] - sub


@njit(inline="always", **_JIT)
def _segment(col, dst, run, lo, hi, src, so, sub, inside):
    """One kernel row of a column, ``col[dst:dst+run]``: ``src[so:] - sub`` on ``[lo, hi)``, zero
    around it (all zero unless ``inside``: the row lies on the map)."""
    if not inside or lo >= hi:
        _zero(col, dst, dst + run)
        return
    _zero(col, dst, dst + lo)
    _copy(col, dst + lo, src, so, hi - lo, sub)
    _zero(col, dst + hi, dst + run)


@njit(**_JIT)
def _gather_out(src1, sub, col, r0, r1, g, dims):
    """Column rows ``r0..r1-1`` of group ``g`` (a row of the group table) from ``src`` (flat
    ``(N, H, W, Ci)``) minus ``sub`` (on map positions only; zero elsewhere), into ``col`` (flat)."""
    H, W, Ci, sh, sw, lo_h, lo_w = dims
    phh, phw, mh, mw, p0h, p0w, nph, npw = g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]
    run = mw * Ci
    D = mh * run
    n, pp, qq = _split(r0, nph, npw)
    for r in range(r0, r1):
        if r > r0:
            n, pp, qq = _next(n, pp, qq, nph, npw)
        hb = (p0h + pp * sh - lo_h + phh) // sh  # exact: the phase makes it a multiple of sh
        wb = (p0w + qq * sw - lo_w + phw) // sw
        l0, l1 = max(0, -wb), min(mw, W - wb)
        base = (r - r0) * D
        for j in range(mh):
            h = hb + j
            so = ((n * H + h) * W + wb + l0) * Ci
            _segment(col, base + j * run, run, l0 * Ci, l1 * Ci, src1, so, sub, 0 <= h < H)


@njit(**_JIT)
def _gather_out_t(src1, sub, colt, r0, r1, g, dims):
    """:func:`_gather_out` transposed: ``colt`` is ``(D, r1 - r0)`` (flat), the layout whose
    ``colt @ d_rows`` is a plain (NN) GEMM: about twice as fast in OpenBLAS as ``col.T @ d_rows``
    for these shapes (measured 24-40 vs 8-18 GFLOP/s on one core)."""
    H, W, Ci, sh, sw, lo_h, lo_w = dims
    phh, phw, mh, mw, p0h, p0w, nph, npw = g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]
    run = mw * Ci
    T = np.uint64(r1 - r0)
    n, pp, qq = _split(r0, nph, npw)
    for r in range(r0, r1):
        if r > r0:
            n, pp, qq = _next(n, pp, qq, nph, npw)
        hb = (p0h + pp * sh - lo_h + phh) // sh
        wb = (p0w + qq * sw - lo_w + phw) // sw
        l0, l1 = max(0, -wb), min(mw, W - wb)
        rr = np.uint64(r - r0)
        for j in range(mh):
            h = hb + j
            dst = np.uint64(j * run) * T + rr
            if h < 0 or h >= H or l0 >= l1:
                for c in range(np.uint64(run)):
                    colt[dst + c * T] = 0
                continue
            for c in range(np.uint64(l0 * Ci)):
                colt[dst + c * T] = 0
            s = np.uint64(((n * H + h) * W + wb + l0) * Ci)
            o = dst + np.uint64(l0 * Ci) * T
            for c in range(np.uint64((l1 - l0) * Ci)):
                colt[o + c * T] = src1[s + c] - sub
            for c in range(np.uint64(l1 * Ci), np.uint64(run)):
                colt[dst + c * T] = 0


@njit(**_JIT)
def _rows_out(a1, tile, r0, r1, g, Ho, Wo, Co, sh, sw, to_tile):
    """Output rows ``r0..r1-1`` of group ``g``: ``a[n, p, q, :]`` into ``tile`` (``to_tile``) or back."""
    zero = np.zeros(1, dtype=tile.dtype)[0]
    p0h, p0w, nph, npw = g[4], g[5], g[6], g[7]
    n, pp, qq = _split(r0, nph, npw)
    for r in range(r0, r1):
        if r > r0:
            n, pp, qq = _next(n, pp, qq, nph, npw)
        s = ((n * Ho + p0h + pp * sh) * Wo + p0w + qq * sw) * Co
        d = (r - r0) * Co
        if to_tile:
            _copy(tile, d, a1, s, Co, zero)
        else:
            _copy(a1, s, tile, d, Co, zero)


@njit(**_JIT)
def _gather_in(d1, col, r0, r1, dims, zero):
    """dX column rows ``r0..r1-1`` (input pixels ``(n, h, w)``) from ``d`` (flat ``(N, Ho, Wo, Co)``)."""
    H, W, Ho, Wo, Co, kh, kw, sh, sw, lo_h, lo_w = dims
    run = kw * Co
    D = kh * run
    n, h, w = _split(r0, H, W)
    for r in range(r0, r1):
        if r > r0:
            n, h, w = _next(n, h, w, H, W)
        top = h * sh + lo_h
        qs = w * sw + lo_w - (kw - 1)
        m0, m1 = max(0, -qs), min(kw, Wo - qs)
        base = (r - r0) * D
        for a in range(kh):
            p = top - a
            so = ((n * Ho + p) * Wo + qs + m0) * Co
            _segment(col, base + a * run, run, m0 * Co, m1 * Co, d1, so, zero, 0 <= p < Ho)


# ------------------------------------------------------------------------------------- output pass


@njit(**_JIT)
def _out_chunk(c, arrays, flags, grp, tiles, chunks, dims):
    """Chunk ``c``: its tiles in order. ``y`` rows (``do_y``), LTP partial ``acc1[c] += col(t1 - tgt)^T
    @ d1`` (``do_1``), LTD partial ``acc2[c] += col(x2)^T @ d2`` (``do_2``; ``col(x)`` when ``x2_is_x``)."""
    x1, kflat, y1, t11, d11, x21, d21, acc1, acc2, cols, tbuf, tmp = arrays
    do_y, do_1, do_2, x2_is_x, tgt, zero = flags
    H, W, Ci, Ho, Wo, Co, sh, sw, lo_h, lo_w = dims
    gdims = (H, W, Ci, sh, sw, lo_h, lo_w)
    direct = sh == 1 and sw == 1  # one group whose rows are the rows of y / d: no copies
    nt = tiles.shape[0]
    tid = numba.get_thread_id()
    col, col2, tile, tmpk = cols[tid, 0], cols[tid, 1], tbuf[tid], tmp[tid]
    if do_1:
        _zero(acc1[c], 0, acc1.shape[1])
    if do_2:
        _zero(acc2[c], 0, acc2.shape[1])
    for ti in range((c * nt) // chunks, ((c + 1) * nt) // chunks):
        g = grp[tiles[ti, 0]]
        r0, r1 = tiles[ti, 1], tiles[ti, 2]
        T = r1 - r0
        D = g[G_D]
        koff = g[G_KOFF]
        cx = col[: T * D].reshape((T, D))
        if do_y:
            _gather_out(x1, zero, col, r0, r1, g, gdims)
            kg = kflat[koff : koff + D * Co].reshape((D, Co))
            if direct:
                np.dot(cx, kg, y1[r0 * Co : r1 * Co].reshape((T, Co)))
            else:
                out = tile[: T * Co].reshape((T, Co))
                np.dot(cx, kg, out)
                _rows_out(y1, tile, r0, r1, g, Ho, Wo, Co, sh, sw, False)
        tk = tmpk[: D * Co].reshape((D, Co))
        if do_2:
            if direct:
                dd = d21[r0 * Co : r1 * Co].reshape((T, Co))
            else:
                _rows_out(d21, tile, r0, r1, g, Ho, Wo, Co, sh, sw, True)
                dd = tile[: T * Co].reshape((T, Co))
            # always col.T @ d (so the fused step's LTD, which reuses the columns of x, gives the
            # bits of stdp_update's, which gathers them)
            if x2_is_x and do_y:
                np.dot(cx.T, dd, tk)
            else:
                _gather_out(x21, zero, col2, r0, r1, g, gdims)
                np.dot(col2[: T * D].reshape((T, D)).T, dd, tk)
            _add(acc2[c], koff, tmpk, D * Co)
        if do_1:
            if direct:
                dd = d11[r0 * Co : r1 * Co].reshape((T, Co))
            else:
                _rows_out(d11, tile, r0, r1, g, Ho, Wo, Co, sh, sw, True)
                dd = tile[: T * Co].reshape((T, Co))
            _gather_out_t(t11, tgt, col2, r0, r1, g, gdims)
            np.dot(col2[: T * D].reshape((D, T)), dd, tk)
            _add(acc1[c], koff, tmpk, D * Co)


@njit(**_PAR)
def out_pass(
    x, kflat, y, t1, d1, x2, d2, acc1, acc2, cols, tbuf, tmp, grp, tiles, chunks, sh, sw, lo_h, lo_w,
    tgt, do_y, do_1, do_2, x2_is_x, par,
):  # fmt: skip
    """The output-stationary pass (see the module docstring); ``x``, ``t1``, ``x2`` ``(N, H, W, Ci)``,
    ``y``, ``d1``, ``d2`` ``(N, Ho, Wo, Co)`` (unused ones may be any arrays of that rank and dtype),
    ``acc1``/``acc2`` ``(chunks, kh·kw·Ci·Co)``, scratch ``cols`` ``(threads, 2, T·Dmax)``, ``tbuf``
    ``(threads, T·Co)``, ``tmp`` ``(threads, Dmax·Co)``; ``tiles`` ``(nt, 3)``: group, first, end row."""
    N, H, W, Ci = x.shape
    Ho, Wo, Co = y.shape[1], y.shape[2], y.shape[3]
    tgt_a = np.zeros(2, dtype=x.dtype)  # the target (and 0) in the operands' dtype: float32 work stays float32
    tgt_a[0] = tgt
    arrays = (
        x.reshape(-1), kflat, y.reshape(-1), t1.reshape(-1), d1.reshape(-1), x2.reshape(-1), d2.reshape(-1),
        acc1, acc2, cols, tbuf, tmp,
    )  # fmt: skip
    flags = (do_y, do_1, do_2, x2_is_x, tgt_a[0], tgt_a[1])
    dims = (H, W, Ci, Ho, Wo, Co, sh, sw, lo_h, lo_w)
    if par:
        for c in prange(chunks):
            _out_chunk(c, arrays, flags, grp, tiles, chunks, dims)
    else:
        for c in range(chunks):
            _out_chunk(c, arrays, flags, grp, tiles, chunks, dims)


@njit(**_JIT)
def reduce_update(acc1, acc2, use2, s1, s2, grp, w_in, eta, w_decay, w_bound, dw, w_out, Co, sh, sw):
    """Partials summed in chunk order (float64); ``dW = s1·Σacc1 + s2·Σacc2`` scattered from the
    group blocks to ``(kh, kw, Ci, Co)`` (taps no output row meets stay 0); ``W' = W + eta·dW
    (- w_decay·W) (clipped)`` in float64, rounded once."""
    kh, kw, Ci = w_in.shape[0], w_in.shape[1], w_in.shape[2]
    n = acc1.shape[1]
    t1 = np.zeros(n)
    t2 = np.zeros(n)
    for c in range(acc1.shape[0]):
        for j in range(n):
            t1[j] += acc1[c, j]
        if use2:
            for j in range(n):
                t2[j] += acc2[c, j]
    g = np.zeros((kh, kw, Ci, Co))
    for gi in range(grp.shape[0]):
        phh, phw, mh, mw, koff = grp[gi, 0], grp[gi, 1], grp[gi, 2], grp[gi, 3], grp[gi, 8]
        for j in range(mh):
            for m in range(mw):
                for i in range(Ci):
                    base = koff + ((j * mw + m) * Ci + i) * Co
                    for o in range(Co):
                        v = s1 * t1[base + o]
                        if use2:
                            v += s2 * t2[base + o]
                        g[phh + j * sh, phw + m * sw, i, o] = v
    for a in range(kh):
        for b in range(kw):
            for i in range(Ci):
                for o in range(Co):
                    v0 = g[a, b, i, o]
                    dw[a, b, i, o] = v0
                    w_out[a, b, i, o] = _evolved(np.float64(w_in[a, b, i, o]), v0, eta, w_decay, w_bound)


# ------------------------------------------------------------------------------------- dX pass


@njit(**_JIT)
def _dx_chunk(c, d1, kx, dx1, cols, T, nrows, chunks, dims, zero):
    Ci = kx.shape[1]
    D = kx.shape[0]
    nt = (nrows + T - 1) // T
    col = cols[numba.get_thread_id(), 0]
    for ti in range((c * nt) // chunks, ((c + 1) * nt) // chunks):
        r0 = ti * T
        r1 = min(nrows, r0 + T)
        _gather_in(d1, col, r0, r1, dims, zero)
        np.dot(col[: (r1 - r0) * D].reshape((r1 - r0, D)), kx, dx1[r0 * Ci : r1 * Ci].reshape((r1 - r0, Ci)))


@njit(**_PAR)
def dx_pass(d, kx, dx, cols, T, chunks, kh, kw, sh, sw, lo_h, lo_w, par):
    """``dx`` ``(N, H, W, Ci)`` = ``deconv2d_dx`` from ``d`` ``(N, Ho, Wo, Co)`` and ``kx`` ``(kh·kw·Co,
    Ci)`` (:func:`dx_matrix`), in tiles of ``T`` input pixels; scratch ``cols`` ``(threads, ≥1, T·kh·kw·Co)``."""
    N, H, W, Ci = dx.shape
    Ho, Wo, Co = d.shape[1], d.shape[2], d.shape[3]
    dims = (H, W, Ho, Wo, Co, kh, kw, sh, sw, lo_h, lo_w)
    d1, dx1 = d.reshape(-1), dx.reshape(-1)
    nrows = N * H * W
    zero = np.zeros(1, dtype=dx.dtype)[0]
    if par:
        for c in prange(chunks):
            _dx_chunk(c, d1, kx, dx1, cols, T, nrows, chunks, dims, zero)
    else:
        for c in range(chunks):
            _dx_chunk(c, d1, kx, dx1, cols, T, nrows, chunks, dims, zero)


# ------------------------------------------------------------------------------------- plans (Python)


def dx_matrix(k: np.ndarray) -> np.ndarray:
    """``Kx[(a, b', o), i] = K[a, kw-1-b', i, o]`` ``(kh·kw·Co, Ci)``, C-contiguous."""
    kh, kw, ci, co = k.shape
    return np.ascontiguousarray(k[:, ::-1].transpose(0, 1, 3, 2)).reshape(kh * kw * co, ci)


def groups(k_shape, stride, pads, out_hw) -> np.ndarray:
    """The group table (see the ``G_*`` columns): one row per phase pair that meets a tap and an output row."""
    kh, kw, ci, co = k_shape
    (sh, sw), (lo_h, lo_w), (ho, wo) = stride, (pads[0][0], pads[1][0]), out_hw
    rows, koff = [], 0

    def axis(k, s, lo, o):
        for ph in range(min(s, k)):
            m = (k - ph + s - 1) // s
            p0 = (lo - ph) % s
            npp = (o - p0 + s - 1) // s if p0 < o else 0
            if npp > 0:
                yield ph, m, p0, npp

    for phh, mh, p0h, nph in axis(kh, sh, lo_h, ho):
        for phw, mw, p0w, npw in axis(kw, sw, lo_w, wo):
            d = mh * mw * ci
            rows.append((phh, phw, mh, mw, p0h, p0w, nph, npw, koff, d))
            koff += d * co
    return np.array(rows, dtype=np.int64).reshape(-1, 10)


def covers_all_rows(grp: np.ndarray, out_hw) -> bool:
    """Whether every output row and column belongs to a group (else the others must be zeroed)."""
    rows = set(zip(grp[:, G_P0H].tolist(), grp[:, G_NPH].tolist(), strict=True))
    cols = set(zip(grp[:, G_P0W].tolist(), grp[:, G_NPW].tolist(), strict=True))
    return sum(n for _, n in rows) == out_hw[0] and sum(n for _, n in cols) == out_hw[1]


def kernel_flat(k: np.ndarray, grp: np.ndarray, stride) -> np.ndarray:
    """``K_g`` of every group, flat, at the groups' offsets."""
    sh, sw = stride
    parts = [k[g[G_PHH] :: sh, g[G_PHW] :: sw].reshape(-1) for g in grp]
    return np.ascontiguousarray(np.concatenate(parts)) if parts else np.zeros(1, k.dtype)


# Column tiles hold about this many elements (~256 KB in float32: L2-sized), at least MIN_ROWS rows.
TILE_ELEMS = 1 << 16
MIN_ROWS = 32
MAX_CHUNKS = 32


def tile_rows(depth: int) -> int:
    """Rows per column tile: about :data:`TILE_ELEMS` / ``depth``, an odd multiple of 16, so that the
    transposed tiles' rows (``T`` apart) never sit a power of two apart (cache-set aliasing)."""
    return 16 * (2 * max(1, TILE_ELEMS // max(1, depth) // 32) + 1)


def out_tiles(grp: np.ndarray, batch: int, T: int) -> np.ndarray:
    """``(nt, 3)``: group, first row, end row of every tile of the output pass."""
    out = []
    for gi, g in enumerate(grp):
        rows = batch * int(g[G_NPH]) * int(g[G_NPW])
        out += [(gi, r, min(rows, r + T)) for r in range(0, rows, T)]
    return np.array(out, dtype=np.int64).reshape(-1, 3)


def chunks_of(ntiles: int) -> int:
    return max(1, min(ntiles, MAX_CHUNKS))
