"""A second, deliberately naive transcription of SPEC §3: one scalar loop per formula.

Slow and obviously literal; used only on tiny cases to check the vectorised reference.
"""

from __future__ import annotations

import numpy as np

from convstdp import geometry


def naive_deconv2d(x, kernel, stride, padding):
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    (sh, sw) = geometry.normalize_stride(stride)
    kh, kw, ci, co = kernel.shape
    (lo_h, hi_h), (lo_w, hi_w) = geometry.resolve_pads((kh, kw), (sh, sw), padding)
    n_, h_, w_, _ = x.shape
    ho = geometry.output_length(h_, kh, sh, lo_h, hi_h)
    wo = geometry.output_length(w_, kw, sw, lo_w, hi_w)
    y = np.zeros((n_, ho, wo, co))
    for n in range(n_):
        for h in range(h_):
            for w in range(w_):
                for a in range(kh):
                    for b in range(kw):
                        p, q = h * sh + lo_h - a, w * sw + lo_w - b
                        if 0 <= p < ho and 0 <= q < wo:
                            for i in range(ci):
                                for o in range(co):
                                    y[n, p, q, o] += x[n, h, w, i] * kernel[a, b, i, o]
    return y


def naive_dk(x, d, kernel_size, stride, padding):
    x, d = np.asarray(x, np.float64), np.asarray(d, np.float64)
    (sh, sw) = geometry.normalize_stride(stride)
    kh, kw = geometry.normalize_kernel_size(kernel_size)
    (lo_h, _), (lo_w, _) = geometry.resolve_pads((kh, kw), (sh, sw), padding)
    n_, h_, w_, ci = x.shape
    _, ho, wo, co = d.shape
    dk = np.zeros((kh, kw, ci, co))
    for a in range(kh):
        for b in range(kw):
            for n in range(n_):
                for h in range(h_):
                    for w in range(w_):
                        p, q = h * sh + lo_h - a, w * sw + lo_w - b
                        if 0 <= p < ho and 0 <= q < wo:
                            dk[a, b] += np.outer(x[n, h, w], d[n, p, q])
    return dk


def naive_dx(kernel, d, stride, padding, in_size):
    kernel, d = np.asarray(kernel, np.float64), np.asarray(d, np.float64)
    (sh, sw) = geometry.normalize_stride(stride)
    kh, kw, ci, co = kernel.shape
    (lo_h, _), (lo_w, _) = geometry.resolve_pads((kh, kw), (sh, sw), padding)
    n_, ho, wo, _ = d.shape
    dx = np.zeros((n_, *in_size, ci))
    for n in range(n_):
        for h in range(in_size[0]):
            for w in range(in_size[1]):
                for a in range(kh):
                    for b in range(kw):
                        p, q = h * sh + lo_h - a, w * sw + lo_w - b
                        if 0 <= p < ho and 0 <= q < wo:
                            dx[n, h, w] += kernel[a, b] @ d[n, p, q]
    return dx
