"""Numba kernels of the ``"numba"`` backend (imported only by :mod:`convstdp.fast.numba`).

Index map per axis (SPEC §3): input position ``h`` and tap ``a`` meet at ``p = h*s + lo - a``.

**Sparse-driven, contiguous updates.** Every operator is driven by the non-zeros of one operand
(spikes, mostly zeros): a compressed list per image row is built first (:func:`row_lists`), then
each non-zero adds a scaled, *contiguous* block of a re-laid-out kernel (or of the dense operand)
into a contiguous block of the result. Along the width axis the taps of one kernel row that meet
one non-zero land on consecutive pixels: for ``deconv2d`` and LTD directly (``q = w*sw + lo - b``,
kernel stored with ``b`` reversed), for ``dX`` and LTP after a stride phase split (taps
``b = r + m*sw`` of one phase ``r`` hit consecutive ``w``; kernel stored as ``[.., r, m, ..]``).
So a non-zero costs a few vectorised AXPYs (about ``kh/sh``, or ``kh`` for LTD) of length
``kw·Co`` (``deconv2d``, LTD) or about ``kw/sw·Ci`` (``dX``, LTP), instead of a dense pass.

Skipping zeros changes nothing for finite inputs: a skipped term is ``0 * finite = 0`` and every
sum starts from ``+0.0``. With Inf/NaN in the dense operand the skipped ``0 * inf`` terms differ
from the reference (SPEC allows it); nothing loops on values, so nothing can hang.

**Race-free parallelism.** Each parallel iteration owns what it writes:

- ``deconv2d``: each output row ``(n, p)`` belongs to one iteration (a block of consecutive rows);
- ``dX``: each input row ``(n, h)`` belongs to one iteration (a block of consecutive rows);
- ``dK``: rows are cut into chunks fixed by the shapes alone (never by the thread count); each
  chunk owns a partial sum, and the partials are added in chunk order.

So results are bit-identical for any number of threads, and the serial path (``par=False``,
same bodies, same chunks) gives the same bits as the parallel one.

**Entry points and the disk cache.** Every kernel is cached (``cache=True``). The ``parallel=True``
ones are entry points called from Python only, never from another compiled function: :func:`row_lists`,
:func:`deconv_rows`, :func:`dx_rows`, :func:`dk_core`. When a cached function calls cached parallel
ones and is compiled in a process that loaded them from the cache, Numba caches it without the hook
that starts its threading layer (the hook lives on the callee's compile result, not on the library
the caller links): a later process loading it before anything started that layer calls one of the
layer's functions Numba never registered, at address 0: SIGSEGV (Numba issue #8578). So the drivers
(``_row_lists``, ``_deconv_rows``, ``_dx_rows``, ``_dk_core``) are ``inline="always"``, inlined as
Numba IR: as ``prange`` loops into the parallel entry points, as plain loops into the serial fused
step (:func:`_step_serial`), one source for both.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from convstdp.geometry import StdpParams

_JIT = dict(cache=True, nogil=True, error_model="numpy", boundscheck=False)
_PAR = dict(_JIT, parallel=True)
_LIST_BLOCKS = 16  # parallel tasks of a row-list build
_ROW_BLOCKS = 128  # at most this many parallel tasks (blocks of rows) for deconv and dX


# ------------------------------------------------------------------------------------- helpers


@njit(inline="always", **_JIT)
def _axpy(dst, do, src, so, alpha, n):
    """``dst[do:do+n] += alpha * src[so:so+n]`` on flat arrays.

    Indices are unsigned, which lets LLVM vectorise the long runs (signed indices carry a
    wrap-around select that blocks it); short runs take a plain ``while`` loop, measured faster than
    ``range`` there. Both paths matter, e.g. 5-long runs (Co = 1) and 96-long ones (3 taps x 32
    channels). Inlined (``inline="always"``): a call per run cost ~20 % of the small step.
    """
    d = np.uint64(do)
    s = np.uint64(so)
    if n < 16:
        j = np.uint64(0)
        while j < np.uint64(n):
            dst[d + j] += alpha * src[s + j]
            j += np.uint64(1)
    else:
        for j in range(np.uint64(n)):
            dst[d + j] += alpha * src[s + j]


@njit(inline="always", **_JIT)
def _axpy_shift(dst, do, src, so, alpha, c, n):
    """``dst[do:do+n] += alpha * (src[so:so+n] - c)``, as :func:`_axpy`."""
    d = np.uint64(do)
    s = np.uint64(so)
    if n < 16:
        j = np.uint64(0)
        while j < np.uint64(n):
            dst[d + j] += alpha * (src[s + j] - c)
            j += np.uint64(1)
    else:
        for j in range(np.uint64(n)):
            dst[d + j] += alpha * (src[s + j] - c)


@njit(inline="always", **_JIT)
def _zero(a, lo, hi):
    """``a[lo:hi] = 0`` (nothing when ``hi <= lo``). A plain loop: in a ``parallel=True`` function an
    array expression or ``np.zeros`` would become a parallel loop of its own, launched even on the
    serial path; unsigned indices let LLVM vectorise it (see :func:`_axpy`)."""
    d = np.uint64(lo)
    for j in range(np.uint64(max(hi - lo, 0))):
        a[d + j] = 0


@njit(inline="always", **_JIT)
def _evolved(w0, g, eta, w_decay, w_bound):
    """The seed's ``evolve`` for one weight, in float64: ``w0 + eta·g (- w_decay·w0)``, clipped to
    ``[0.01, w_bound - 0.01]`` when ``w_bound > 0``."""
    v = w0 + eta * g
    if w_decay > 0:
        v = v - w_decay * w0
    if w_bound > 0:
        if v < 0.01:
            v = 0.01
        if v > w_bound - 0.01:
            v = w_bound - 0.01
    return v


@njit(inline="always", **_JIT)
def _first_tap(t, s):
    """Smallest tap ``a >= 0`` with ``t + a`` a non-negative multiple of ``s``."""
    a = (-t) % s
    if t + a < 0:
        a += ((-(t + a) + s - 1) // s) * s
    return a


# ------------------------------------------------------------------------------------- row lists


@njit(inline="always", **_JIT)
def _count_row(a1, r, L):
    c = 0
    base = np.uint64(r * L)
    for j in range(np.uint64(L)):
        c += np.int64(a1[base + j] != 0)  # branch-free: vectorises (a branch mispredicts on spikes)
    return c


@njit(inline="always", **_JIT)
def _fill_row(a1, r, code, ent, off):
    c = off
    L = code.size
    base = np.uint64(r * L)
    for j in range(np.uint64(L)):
        ent[c] = code[j]  # branch-free: always written, kept when non-zero (slack slot)
        c += np.int64(a1[base + j] != 0)


@njit(inline="always", **_JIT)
def _row_lists(a, buf, par):
    """Non-zeros of ``a`` ``(N, R, C, D)`` per row ``(n, r)``: row ``k`` holds ``(c << 32) | d`` of
    its non-zeros at ``ent[offs[k] : offs[k+1] - 1]`` (one slack slot per row).

    ``ent`` is a prefix of ``buf`` (int64, any contents) when ``buf`` is long enough (``a.size + N*R``
    always is), else a new array. Only the prefix is touched, so a large ``buf`` from NumPy's allocator
    costs address space, not page faults (Numba's own allocations are page-faulted in 4 KiB pages).
    """
    rows = a.shape[0] * a.shape[1]
    L = a.shape[2] * a.shape[3]
    a1 = a.reshape(-1)
    offs = np.empty(rows + 1, dtype=np.int64)
    # parallel loops over blocks of rows: rows cost the same, and one row is too small a task
    blocks = min(rows, _LIST_BLOCKS)
    if par:
        for b in prange(blocks):
            for r in range((b * rows) // blocks, ((b + 1) * rows) // blocks):
                offs[r + 1] = _count_row(a1, r, L)
    else:
        for r in range(rows):
            offs[r + 1] = _count_row(a1, r, L)
    offs[0] = 0
    for r in range(rows):
        offs[r + 1] += offs[r] + 1
    ent = buf[: offs[rows]] if buf.size >= offs[rows] else np.empty(offs[rows], dtype=np.int64)
    code = np.empty(L, dtype=np.int64)  # entry of each position in a row (one flat loop per row)
    for c in range(a.shape[2]):
        for d in range(a.shape[3]):
            code[c * a.shape[3] + d] = (c << 32) | d
    if par:
        for b in prange(blocks):
            for r in range((b * rows) // blocks, ((b + 1) * rows) // blocks):
                _fill_row(a1, r, code, ent, offs[r])
    else:
        for r in range(rows):
            _fill_row(a1, r, code, ent, offs[r])
    return offs, ent


@njit(**_PAR)
def row_lists(a, buf, par):
    """Entry point of :func:`_row_lists`: ``(offs, ent)``, the non-zeros of ``a`` ``(N, R, C, D)`` per row."""
    return _row_lists(a, buf, par)


# ------------------------------------------------------------------------------------- kernel layouts


@njit(**_JIT)
def _kernel_rev(k):
    """``K[a, b, i, o]`` → flat ``[a, i, kw-1-b, o]``: taps of one row in output order."""
    kh, kw, Ci, Co = k.shape
    out = np.empty(kh * Ci * kw * Co, dtype=k.dtype)
    for a in range(kh):
        for i in range(Ci):
            for bb in range(kw):
                for o in range(Co):
                    out[((a * Ci + i) * kw + bb) * Co + o] = k[a, kw - 1 - bb, i, o]
    return out


@njit(**_JIT)
def _kernel_phase(k, sw):
    """``K[a, b, i, o]`` → flat ``[a, o, r, m, i]`` with ``b = r + m*sw`` (unused slots zero)."""
    kh, kw, Ci, Co = k.shape
    M = (kw + sw - 1) // sw
    out = np.zeros(kh * Co * sw * M * Ci, dtype=k.dtype)
    for a in range(kh):
        for o in range(Co):
            for b in range(kw):
                base = (((a * Co + o) * sw + b % sw) * M + b // sw) * Ci
                for i in range(Ci):
                    out[base + i] = k[a, b, i, o]
    return out


# ------------------------------------------------------------------------------------- deconv2d


@njit(**_JIT)
def _deconv_row(x1, offs, ent, kr, y1, n, p, H, W, Ci, kh, kw, Co, Ho, Wo, sh, sw, lo_h, lo_w):
    """Output row ``(n, p)``: every non-zero ``x[n, h, w, i]`` of the rows ``h`` that reach it."""
    t = p - lo_h
    a_end = min(kh, (H - 1) * sh - t + 1)
    a = _first_tap(t, sh)
    yrow = (n * Ho + p) * Wo
    _zero(y1, yrow * Co, (yrow + Wo) * Co)
    r = n * H + (t + a) // sh
    while a < a_end:
        xrow = r * W * Ci
        for e in range(offs[r], offs[r + 1] - 1):
            w = ent[e] >> 32
            i = ent[e] & 0xFFFFFFFF
            q0 = w * sw + lo_w - kw + 1  # output column of the last tap (b = kw - 1)
            b0, b1 = max(0, -q0), min(kw, Wo - q0)
            if b0 < b1:
                _axpy(
                    y1, (yrow + q0 + b0) * Co, kr, ((a * Ci + i) * kw + b0) * Co, x1[xrow + w * Ci + i], (b1 - b0) * Co
                )
        a += sh
        r += 1


@njit(inline="always", **_JIT)
def _deconv_rows(x, offs, ent, k, y, sh, sw, lo_h, lo_w, par):
    """``y = deconv2d(x, k)`` into ``y`` ``(N, Ho, Wo, Co)`` (any contents: each row is zeroed by its
    owner) given the row lists of ``x``."""
    N, H, W, Ci = x.shape
    kh, kw, Co = k.shape[0], k.shape[1], k.shape[3]
    Ho, Wo = y.shape[1], y.shape[2]
    kr = _kernel_rev(k)
    x1, y1 = x.reshape(-1), y.reshape(-1)
    if par:
        blocks = min(N * Ho, _ROW_BLOCKS)
        for blk in prange(blocks):
            for r in range((blk * N * Ho) // blocks, ((blk + 1) * N * Ho) // blocks):
                _deconv_row(x1, offs, ent, kr, y1, r // Ho, r % Ho, H, W, Ci, kh, kw, Co, Ho, Wo, sh, sw, lo_h, lo_w)
    else:
        for r in range(N * Ho):
            _deconv_row(x1, offs, ent, kr, y1, r // Ho, r % Ho, H, W, Ci, kh, kw, Co, Ho, Wo, sh, sw, lo_h, lo_w)
    return y


@njit(**_PAR)
def deconv_rows(x, offs, ent, k, y, sh, sw, lo_h, lo_w, par):
    """Entry point of :func:`_deconv_rows`: ``y`` ``(N, Ho, Wo, Co)`` = ``deconv2d(x, k)``."""
    return _deconv_rows(x, offs, ent, k, y, sh, sw, lo_h, lo_w, par)


# ------------------------------------------------------------------------------------- dX


@njit(**_JIT)
def _phase_cols(Wo, W, kw, sw, lo_w):
    """Per output column ``q``: the first input column ``w0`` its taps reach, the offset
    ``r*M + m0`` of its first tap ``b0 = r + m0*sw`` in the phase layout, and how many taps
    (consecutive ``w``) follow; computed once so the hot loops divide by nothing."""
    M = (kw + sw - 1) // sw
    tab = np.empty((3, Wo), dtype=np.int64)
    for q in range(Wo):
        t = q - lo_w
        b0 = _first_tap(t, sw)
        m0 = b0 // sw
        rr = b0 - m0 * sw
        tab[0, q] = (t + b0) // sw
        tab[1, q] = rr * M + m0
        tab[2, q] = min((kw - 1 - rr) // sw - m0 + 1, W - (t + b0) // sw)
    return tab


@njit(**_JIT)
def _dx_row(d1, offs, ent, kp, dx1, cols, n, h, H, W, Ci, kh, Co, Ho, Wo, sh, lo_h, SM):
    """Input row ``(n, h)``: every non-zero ``d[n, p, q, o]`` of the rows ``p`` it reaches."""
    top = h * sh + lo_h
    xrow = (n * H + h) * W
    _zero(dx1, xrow * Ci, (xrow + W) * Ci)
    for a in range(max(0, top - Ho + 1), min(kh - 1, top) + 1):
        r = n * Ho + top - a
        drow = r * Wo * Co
        for e in range(offs[r], offs[r + 1] - 1):
            q = ent[e] >> 32
            o = ent[e] & 0xFFFFFFFF
            cnt = cols[2, q]
            if cnt > 0:
                _axpy(
                    dx1,
                    (xrow + cols[0, q]) * Ci,
                    kp,
                    ((a * Co + o) * SM + cols[1, q]) * Ci,
                    d1[drow + q * Co + o],
                    cnt * Ci,
                )


@njit(inline="always", **_JIT)
def _dx_rows(k, d, offs, ent, dx, sh, sw, lo_h, lo_w, par):
    """``dX = deconv2d_dx(k, d)`` into ``dx`` ``(N, H, W, Ci)`` (any contents: each row is zeroed by
    its owner) given the row lists of ``d``."""
    N, Ho, Wo, Co = d.shape
    kh, kw, Ci = k.shape[0], k.shape[1], k.shape[2]
    H, W = dx.shape[1], dx.shape[2]
    M = (kw + sw - 1) // sw
    kp = _kernel_phase(k, sw)
    d1, dx1 = d.reshape(-1), dx.reshape(-1)
    cols = _phase_cols(Wo, W, kw, sw, lo_w)
    if par:
        blocks = min(N * H, _ROW_BLOCKS)
        for blk in prange(blocks):
            for r in range((blk * N * H) // blocks, ((blk + 1) * N * H) // blocks):
                _dx_row(d1, offs, ent, kp, dx1, cols, r // H, r % H, H, W, Ci, kh, Co, Ho, Wo, sh, lo_h, sw * M)
    else:
        for r in range(N * H):
            _dx_row(d1, offs, ent, kp, dx1, cols, r // H, r % H, H, W, Ci, kh, Co, Ho, Wo, sh, lo_h, sw * M)
    return dx


@njit(**_PAR)
def dx_rows(k, d, offs, ent, dx, sh, sw, lo_h, lo_w, par):
    """Entry point of :func:`_dx_rows`: ``dx`` ``(N, H, W, Ci)`` = ``deconv2d_dx(k, d)``."""
    return _dx_rows(k, d, offs, ent, dx, sh, sw, lo_h, lo_w, par)


# ------------------------------------------------------------------------------------- dK, two terms
#
# dW = s1 * dK(x1 - tgt, d1) + s2 * dK(x2, d2) in one pass over the rows. Term 1 (LTP) is driven
# by the non-zeros of d1 (post spikes) and accumulated as [a, o, r, m, i] (phase layout); term 2
# (LTD) by the non-zeros of x2 (pre spikes), accumulated as [a, i, kw-1-b, o]. Work item (n, h)
# takes the LTD of input row h and the LTP of output rows [h*Ho//H, (h+1)*Ho//H).


@njit(**_JIT)
def _dk_item(
    x1,
    d1,
    d1_offs,
    d1_ent,
    x2,
    d2,
    x2_offs,
    x2_ent,
    tgt,
    use1,
    use2,
    acc1,
    acc2,
    cols,
    item,
    H,
    W,
    Ci,
    kh,
    kw,
    Co,
    Ho,
    Wo,
    sh,
    sw,
    lo_h,
    lo_w,
    SM,
):
    n = item // H
    h = item - n * H
    if use2:  # LTD: non-zero x2[n, h, w, i] times rows of d2
        top = h * sh + lo_h
        a0, a1 = max(0, top - Ho + 1), min(kh - 1, top)
        xrow = item * W * Ci
        for e in range(x2_offs[item], x2_offs[item + 1] - 1):
            w = x2_ent[e] >> 32
            i = x2_ent[e] & 0xFFFFFFFF
            v = x2[xrow + w * Ci + i]
            q0 = w * sw + lo_w - kw + 1
            b0, b1 = max(0, -q0), min(kw, Wo - q0)
            if b0 < b1:
                for a in range(a0, a1 + 1):
                    _axpy(
                        acc2,
                        ((a * Ci + i) * kw + b0) * Co,
                        d2,
                        ((n * Ho + top - a) * Wo + q0 + b0) * Co,
                        v,
                        (b1 - b0) * Co,
                    )
    if use1:  # LTP: non-zero d1[n, p, q, o] times (x1 - tgt) of the rows it meets
        for p in range((h * Ho) // H, ((h + 1) * Ho) // H):
            r = n * Ho + p
            drow = r * Wo * Co
            t_h = p - lo_h
            a_end = min(kh, (H - 1) * sh - t_h + 1)
            a_first = _first_tap(t_h, sh)
            h_first = n * H + (t_h + a_first) // sh
            for e in range(d1_offs[r], d1_offs[r + 1] - 1):
                q = d1_ent[e] >> 32
                o = d1_ent[e] & 0xFFFFFFFF
                cnt = cols[2, q]
                if cnt <= 0:
                    continue
                dv = d1[drow + q * Co + o]
                a = a_first
                hh = h_first
                while a < a_end:
                    _axpy_shift(
                        acc1, ((a * Co + o) * SM + cols[1, q]) * Ci, x1, (hh * W + cols[0, q]) * Ci, dv, tgt, cnt * Ci
                    )
                    a += sh
                    hh += 1


@njit(**_JIT)
def _dk_chunk(a1, a2, first, last, ctx, dims):
    """One dK partial sum: zero this chunk's accumulators, then add items ``first..last-1``."""
    x11, d11, d1_offs, d1_ent, x21, d21, x2_offs, x2_ent, tgt_c, use1, use2, cols = ctx
    H, W, Ci, kh, kw, Co, Ho, Wo, sh, sw, lo_h, lo_w, SM = dims
    _zero(a1, 0, a1.size)
    _zero(a2, 0, a2.size)
    for item in range(first, last):
        _dk_item(
            x11, d11, d1_offs, d1_ent, x21, d21, x2_offs, x2_ent, tgt_c, use1, use2, a1, a2, cols, item,
            H, W, Ci, kh, kw, Co, Ho, Wo, sh, sw, lo_h, lo_w, SM,
        )  # fmt: skip


@njit(**_JIT)
def _reduce_update(acc1, acc2, use1, use2, s1, s2, w_in, eta, w_decay, w_bound, dw, w_out, sw, M):
    """Partials added in chunk order (in float64, streaming through each chunk); then ``dW`` and
    ``W' = W + eta·dW (- w_decay·W) (clipped)`` in float64, rounded once to the result dtype."""
    kh, kw, Ci, Co = w_in.shape
    t1 = np.zeros(acc1.shape[1])
    t2 = np.zeros(acc2.shape[1])
    for c in range(acc1.shape[0]):
        for j in range(acc1.shape[1]):
            t1[j] += acc1[c, j]
        for j in range(acc2.shape[1]):
            t2[j] += acc2[c, j]
    for a in range(kh):
        for b in range(kw):
            for i in range(Ci):
                for o in range(Co):
                    g = 0.0
                    if use1:
                        g += s1 * t1[(((a * Co + o) * sw + b % sw) * M + b // sw) * Ci + i]
                    if use2:
                        g += s2 * t2[((a * Ci + i) * kw + kw - 1 - b) * Co + o]
                    dw[a, b, i, o] = g
                    w_out[a, b, i, o] = _evolved(np.float64(w_in[a, b, i, o]), g, eta, w_decay, w_bound)


@njit(inline="always", **_JIT)
def _dk_core(
    x1,
    d1,
    d1_offs,
    d1_ent,
    x2,
    d2,
    x2_offs,
    x2_ent,
    w_in,
    w_out,
    dw,
    buf,
    sh,
    sw,
    lo_h,
    lo_w,
    chunks,
    tgt,
    use1,
    use2,
    s1,
    s2,
    eta,
    w_decay,
    w_bound,
    par,
):
    """Into ``w_out``, ``dw`` (shape of ``w_in``): ``dW = s1·dK(x1 - tgt, d1) + s2·dK(x2, d2)``,
    ``W' = W + eta·dW`` (decay, clip). The per-chunk partials live in ``buf`` (dtype of ``x1``, any
    contents, at least ``chunks·(kh·Ci·Co·(kw + sw·M))`` long; each chunk zeroes its own)."""
    kh, kw, Ci, Co = w_in.shape
    N, H, W = x1.shape[0], x1.shape[1], x1.shape[2]
    Ho, Wo = d1.shape[1], d1.shape[2]
    M = (kw + sw - 1) // sw
    n1, n2 = kh * Co * sw * M * Ci if use1 else 0, kh * Ci * kw * Co if use2 else 0
    acc1 = buf[: chunks * n1].reshape((chunks, n1))
    acc2 = buf[chunks * n1 : chunks * (n1 + n2)].reshape((chunks, n2))
    tgt_a = np.empty(1, dtype=x1.dtype)
    tgt_a[0] = tgt
    tgt_c = tgt_a[0]
    x11, d11, x21, d21 = x1.reshape(-1), d1.reshape(-1), x2.reshape(-1), d2.reshape(-1)
    cols = _phase_cols(Wo, W, kw, sw, lo_w)
    ctx = (x11, d11, d1_offs, d1_ent, x21, d21, x2_offs, x2_ent, tgt_c, use1, use2, cols)
    dims = (H, W, Ci, kh, kw, Co, Ho, Wo, sh, sw, lo_h, lo_w, sw * M)
    if par:
        for c in prange(chunks):
            _dk_chunk(acc1[c], acc2[c], (c * N * H) // chunks, ((c + 1) * N * H) // chunks, ctx, dims)
    else:
        for c in range(chunks):
            _dk_chunk(acc1[c], acc2[c], (c * N * H) // chunks, ((c + 1) * N * H) // chunks, ctx, dims)
    _reduce_update(acc1, acc2, use1, use2, s1, s2, w_in, eta, w_decay, w_bound, dw, w_out, sw, M)


@njit(**_PAR)
def dk_core(
    x1, d1, d1_offs, d1_ent, x2, d2, x2_offs, x2_ent, w_in, w_out, dw, buf,
    sh, sw, lo_h, lo_w, chunks, tgt, use1, use2, s1, s2, eta, w_decay, w_bound, par,
):  # fmt: skip
    """Entry point of :func:`_dk_core`: ``w_out``, ``dw`` ``(kh, kw, Ci, Co)``, same arguments."""
    _dk_core(
        x1, d1, d1_offs, d1_ent, x2, d2, x2_offs, x2_ent, w_in, w_out, dw, buf,
        sh, sw, lo_h, lo_w, chunks, tgt, use1, use2, s1, s2, eta, w_decay, w_bound, par,
    )  # fmt: skip


# ------------------------------------------------------------------------------------- fused step


@njit(**_JIT)
def _step_serial(
    k, x, pre_s, pre_t, post_s, post_t, y, w_out, dw, dx, x_buf, pre_buf, post_buf, acc_buf, x_is_pre,
    sh, sw, lo_h, lo_w, chunks, A_plus, A_minus, eta, tgt, w_decay, w_bound,
):  # fmt: skip
    """:func:`stdp_step` with the serial drivers, in one compiled call (no parallel code in it)."""
    pre_offs, pre_ent = _row_lists(pre_s, pre_buf, False)
    post_offs, post_ent = _row_lists(post_s, post_buf, False)
    if x_is_pre:
        x_offs, x_ent = pre_offs, pre_ent
    else:
        x_offs, x_ent = _row_lists(x, x_buf, False)
    _deconv_rows(x, x_offs, x_ent, k, y, sh, sw, lo_h, lo_w, False)
    on = chunks > 0  # a run-time True: a literal would compile _dk_chunk and _reduce_update once more
    _dk_core(
        pre_t, post_s, post_offs, post_ent, pre_s, post_t, pre_offs, pre_ent, k, w_out, dw, acc_buf,
        sh, sw, lo_h, lo_w, chunks, tgt, on, on, A_plus, -A_minus, eta, w_decay, w_bound, False,
    )  # fmt: skip
    _dx_rows(w_out, post_s, post_offs, post_ent, dx, sh, sw, lo_h, lo_w, False)


def stdp_step(
    *,
    k: np.ndarray,
    x: np.ndarray,
    pre_s: np.ndarray,
    pre_t: np.ndarray,
    post_s: np.ndarray,
    post_t: np.ndarray,
    y: np.ndarray,
    w_out: np.ndarray,
    dw: np.ndarray,
    dx: np.ndarray,
    x_buf: np.ndarray,
    pre_buf: np.ndarray,
    post_buf: np.ndarray,
    acc_buf: np.ndarray,
    x_is_pre: bool,
    sh: int,
    sw: int,
    lo_h: int,
    lo_w: int,
    chunks: int,
    params: StdpParams,
    par: bool,
) -> None:
    """SPEC §8 into ``y`` ``(N,Ho,Wo,Co)``, ``w_out``, ``dw`` ``(kh,kw,Ci,Co)``, ``dx`` ``(N,H,W,Ci)``:
    ``y = deconv2d(x, K)``, ``(W', dW) = stdp_update(K, ...)``, ``dX = dX(W', post_s)``, the row lists
    of the spikes built once; scratch as in :func:`row_lists` (``x_buf`` unused when ``x_is_pre``) and
    :func:`dk_core`; ``params`` the STDP scalars.

    Serial: one compiled call (:func:`_step_serial`), since call overhead counts on small problems.
    Parallel: the entry points in turn, from Python (see the module docstring for why).
    """
    p = params
    if not par:
        _step_serial(
            k, x, pre_s, pre_t, post_s, post_t, y, w_out, dw, dx, x_buf, pre_buf, post_buf, acc_buf, x_is_pre,
            sh, sw, lo_h, lo_w, chunks, p.A_plus, p.A_minus, p.eta, p.pretrace_target, p.w_decay, p.w_bound,
        )  # fmt: skip
        return
    pre_offs, pre_ent = row_lists(pre_s, pre_buf, True)
    post_offs, post_ent = row_lists(post_s, post_buf, True)
    x_offs, x_ent = (pre_offs, pre_ent) if x_is_pre else row_lists(x, x_buf, True)
    deconv_rows(x=x, offs=x_offs, ent=x_ent, k=k, y=y, sh=sh, sw=sw, lo_h=lo_h, lo_w=lo_w, par=True)
    dk_core(
        x1=pre_t, d1=post_s, d1_offs=post_offs, d1_ent=post_ent, x2=pre_s, d2=post_t, x2_offs=pre_offs,
        x2_ent=pre_ent, w_in=k, w_out=w_out, dw=dw, buf=acc_buf, sh=sh, sw=sw, lo_h=lo_h, lo_w=lo_w,
        chunks=chunks, tgt=p.pretrace_target, use1=True, use2=True, s1=p.A_plus, s2=-p.A_minus, eta=p.eta,
        w_decay=p.w_decay, w_bound=p.w_bound, par=True,
    )  # fmt: skip
    dx_rows(k=w_out, d=post_s, offs=post_offs, ent=post_ent, dx=dx, sh=sh, sw=sw, lo_h=lo_h, lo_w=lo_w, par=True)
