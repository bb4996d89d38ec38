"""Shapes, padding and input validation: the one home of SPEC §2 and §5.

Every backend, the reference and the conformance harness resolve sizes and pads here, so a
disagreement about geometry cannot hide inside one of them.

Per spatial axis (input length ``n``, kernel length ``k``, stride ``s``) the transposed
convolution pads the stride-dilated input by ``(lo, hi)`` and then correlates it with the
kernel; input position ``h`` and tap ``a`` meet at output position ``p = h*s + lo - a``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache, wraps
from typing import Any

import numpy as np

Pair = tuple[int, int]
Pads = tuple[Pair, Pair]
PaddingLike = str | Sequence[Sequence[int]]
StrideLike = int | Sequence[int]

__all__ = [
    "Geometry",
    "axis_pads",
    "output_length",
    "input_length",
    "normalize_stride",
    "normalize_kernel_size",
    "resolve_pads",
    "padding_label",
    "result_dtype",
    "check_deconv2d",
    "check_deconv2d_dk",
    "check_deconv2d_dx",
    "check_stdp_update",
    "check_stdp_step",
    "check_scalar",
    "check_stdp_scalars",
]


# ----------------------------------------------------------------------------- SPEC §2, one axis


def axis_pads(k: int, s: int, padding: str) -> Pair:
    """``(lo, hi)`` for one axis under ``"SAME"`` or ``"VALID"`` (SPEC §2)."""
    if padding == "SAME":
        pad_len = k + s - 2
        lo = k - 1 if s > k - 1 else math.ceil(pad_len / 2)
    elif padding == "VALID":
        pad_len = k + s - 2 + max(k - s, 0)
        lo = k - 1
    else:  # pragma: no cover - callers normalise first
        raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
    return lo, pad_len - lo


def output_length(n: int, k: int, s: int, lo: int, hi: int) -> int:
    """Output length ``o = (n - 1)*s + lo + hi - k + 2``; may be < 1 (the caller rejects it)."""
    return (n - 1) * s + lo + hi - k + 2


def input_length(o: int, k: int, s: int, lo: int, hi: int) -> int | None:
    """Input length that yields output length ``o``, or ``None`` if no whole ``n >= 1`` does."""
    num = o - lo - hi + k - 2
    if num < 0 or num % s:
        return None
    return num // s + 1


# ----------------------------------------------------------------------------- parameters


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _positive_pair(name: str, value: Any, pair: str) -> Pair:
    """``int`` or a pair of ints → a pair, each ``>= 1``; errors name ``name`` and its form."""
    if _is_int(value):
        out = (int(value), int(value))
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2 and all(map(_is_int, value)):
        out = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be a positive int or a pair {pair} of them, got {value!r}")
    if min(out) < 1:
        raise ValueError(f"{name} must be >= 1 on each axis, got {value!r}")
    return out


def normalize_stride(stride: StrideLike) -> Pair:
    """``int`` or ``(sh, sw)`` → ``(sh, sw)``, each a positive int."""
    return _positive_pair("stride", stride, "(sh, sw)")


def normalize_kernel_size(kernel_size: StrideLike) -> Pair:
    """``int`` or ``(kh, kw)`` → ``(kh, kw)``, each a positive int."""
    return _positive_pair("kernel_size", kernel_size, "(kh, kw)")


def _normalize_padding(padding: PaddingLike) -> str | Pads:
    if isinstance(padding, str):
        mode = padding.upper()
        if mode not in ("SAME", "VALID"):
            raise ValueError(f"padding must be 'SAME', 'VALID' or ((lo_h, hi_h), (lo_w, hi_w)), got {padding!r}")
        return mode
    try:
        (lo_h, hi_h), (lo_w, hi_w) = padding  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ValueError(
            f"padding must be 'SAME', 'VALID' or ((lo_h, hi_h), (lo_w, hi_w)) of ints, got {padding!r}"
        ) from None
    pads = (lo_h, hi_h, lo_w, hi_w)
    if not all(_is_int(v) for v in pads):
        raise ValueError(f"explicit padding must hold four ints ((lo_h, hi_h), (lo_w, hi_w)), got {padding!r}")
    return ((int(lo_h), int(hi_h)), (int(lo_w), int(hi_w)))


def resolve_pads(kernel_size: Pair, stride: Pair, padding: PaddingLike) -> Pads:
    """Per-axis ``((lo_h, hi_h), (lo_w, hi_w))`` for any padding SPEC accepts."""
    mode = _normalize_padding(padding)
    if isinstance(mode, str):
        return (axis_pads(kernel_size[0], stride[0], mode), axis_pads(kernel_size[1], stride[1], mode))
    return mode


def padding_label(padding: PaddingLike) -> str:
    """Short human form of a padding argument, for messages and case names."""
    if isinstance(padding, str):
        return padding.upper()
    (lo_h, hi_h), (lo_w, hi_w) = padding
    return f"(({lo_h}, {hi_h}), ({lo_w}, {hi_w}))"


# ----------------------------------------------------------------------------- dtypes

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _dtype_of(name: str, arr: Any) -> np.dtype:
    try:
        dt = np.dtype(arr.dtype)
    except TypeError:
        raise TypeError(f"{name} has dtype {arr.dtype}, expected float32, float64, int or bool") from None
    if dt.kind == "c":
        raise TypeError(f"{name} has complex dtype {dt}; expected real float32 or float64 values")
    if dt.kind not in "biuf":
        raise TypeError(f"{name} has dtype {dt}; expected float32, float64, int or bool")
    if dt.kind == "f" and dt not in _FLOATS and dt != np.float16:
        raise TypeError(f"{name} has dtype {dt}; supported float dtypes are float32 and float64")
    return dt


def result_dtype(*dtypes: np.dtype) -> np.dtype:
    """SPEC §4: ``np.result_type`` of the floating inputs; bool/int inputs follow it.

    With no floating input the result is float64 (NumPy's default float); float16 inputs are
    promoted to float32, the narrowest supported dtype.
    """
    floats = [d for d in dtypes if d.kind == "f"]
    if not floats:
        return np.dtype(np.float64)
    return np.result_type(np.float32, *floats)


# ----------------------------------------------------------------------------- validated geometry


@dataclass(frozen=True)
class Geometry:
    """A fully resolved deconvolution: every size a backend needs, already checked.

    Shapes: ``x`` is ``(batch, *in_size, in_channels)``, ``kernel`` is
    ``(*kernel_size, in_channels, out_channels)``, ``y``/``d_out`` is
    ``(batch, *out_size, out_channels)``.
    """

    batch: int
    in_size: Pair
    kernel_size: Pair
    in_channels: int
    out_channels: int
    stride: Pair
    pads: Pads
    out_size: Pair
    dtype: np.dtype
    padding: str  # human label of the padding as given

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, *self.in_size, self.in_channels)

    @property
    def kernel_shape(self) -> tuple[int, int, int, int]:
        return (*self.kernel_size, self.in_channels, self.out_channels)

    @property
    def y_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, *self.out_size, self.out_channels)

    def describe(self) -> str:
        return f"kernel {self.kernel_size}, stride {self.stride}, padding {self.padding}" + (
            "" if self.padding.startswith("((") else f" (pads {self.pads})"
        )


def _shape4(name: str, arr: Any, layout: str) -> tuple[int, int, int, int]:
    shape = getattr(arr, "shape", None)
    if shape is None:
        raise TypeError(f"{name} must be an array with shape {layout}, got {type(arr).__name__}")
    if len(shape) != 4:
        raise ValueError(f"{name} must have rank 4 {layout}, got rank {len(shape)} with shape {tuple(shape)}")
    return tuple(int(v) for v in shape)  # type: ignore[return-value]


def _out_size(in_size: Pair, kernel_size: Pair, stride: Pair, pads: Pads) -> Pair:
    return (
        output_length(in_size[0], kernel_size[0], stride[0], *pads[0]),
        output_length(in_size[1], kernel_size[1], stride[1], *pads[1]),
    )


def _checked_out_size(
    in_size: Pair, kernel_size: Pair, stride: Pair, pads: Pads, padding: PaddingLike, what: str
) -> Pair:
    out = _out_size(in_size, kernel_size, stride, pads)
    if min(out) < 1:
        raise ValueError(
            f"empty output: {what} {in_size} with kernel {kernel_size}, stride {stride}, "
            f"padding {padding_label(padding)} gives output size {out}; every axis must be >= 1"
        )
    return out


def _hashable(v: Any) -> Any:
    if isinstance(v, list | tuple):
        return tuple(_hashable(u) for u in v)
    return v


@lru_cache(maxsize=4096)
def _geometry_cached(
    x_shape: tuple[int, ...],
    k_shape: tuple[int, ...],
    stride: Any,
    padding: Any,
    dtype: np.dtype,
    kernel_given: bool,
) -> Geometry:
    n, h, w, ci = x_shape
    kh, kw, kci, co = k_shape
    if kernel_given and kci != ci:
        raise ValueError(f"kernel has {kci} input channels (axis 2 of {k_shape}) but x has {ci} (axis 3 of {x_shape})")
    st = normalize_stride(stride)
    pads = resolve_pads((kh, kw), st, padding)
    out = _checked_out_size((h, w), (kh, kw), st, pads, padding, "x")
    return Geometry(n, (h, w), (kh, kw), ci, co, st, pads, out, dtype, padding_label(padding))


_MEMO: dict[tuple, Geometry] = {}
_MEMO_MAX = 4096


def _signature(v: Any) -> Any:
    dtype = getattr(v, "dtype", None)
    if dtype is not None and hasattr(v, "shape"):
        return (tuple(v.shape), dtype)
    return _hashable(v)


def _memoized(check: Any) -> Any:
    """Memoise a check on its arguments' shapes, dtypes and parameters: the result depends on nothing
    else, and the per-call cost of re-validating dominates small online workloads. Failures are not
    cached (they raise)."""

    @wraps(check)
    def memo(*args: Any, **kwargs: Any) -> Geometry:
        try:
            key = (check, *map(_signature, args), *((k, _signature(v)) for k, v in kwargs.items()))
            return _MEMO[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable argument: validate without the memo
            return check(*args, **kwargs)
        result = check(*args, **kwargs)
        if len(_MEMO) >= _MEMO_MAX:
            _MEMO.clear()
        _MEMO[key] = result
        return result

    return memo


@_memoized
def check_deconv2d(x: Any, kernel: Any, stride: StrideLike, padding: PaddingLike) -> Geometry:
    """Validate ``deconv2d(x (N,H,W,Ci), kernel (kh,kw,Ci,Co))`` and resolve its geometry."""
    xs = _shape4("x", x, "(N, H, W, Ci)")
    ks = _shape4("kernel", kernel, "(kh, kw, Ci, Co)")
    dt = result_dtype(_dtype_of("x", x), _dtype_of("kernel", kernel))
    return _geometry(xs, ks, stride, padding, dt)


def _geometry(
    xs: tuple[int, ...], ks: tuple[int, ...], stride: StrideLike, padding: PaddingLike, dt: np.dtype
) -> Geometry:
    try:
        return _geometry_cached(xs, ks, _hashable(stride), _hashable(padding), dt, True)
    except TypeError as err:
        if "unhashable" not in str(err):
            raise
        return _geometry_cached.__wrapped__(xs, ks, stride, padding, dt, True)


def _check_d_out(d_shape: tuple[int, ...], g: Geometry, what: str) -> None:
    if d_shape[0] != g.batch:
        raise ValueError(f"d_out has batch size {d_shape[0]} but {what} has {g.batch}")
    if d_shape[1:3] != g.out_size:
        raise ValueError(
            f"d_out has spatial size {d_shape[1:3]} but {what} {g.in_size} with {g.describe()} gives {g.out_size}"
        )


@_memoized
def check_deconv2d_dk(
    x: Any, d_out: Any, kernel_size: StrideLike, stride: StrideLike, padding: PaddingLike
) -> Geometry:
    """Validate ``deconv2d_dk(x (N,H,W,Ci), d_out (N,Ho,Wo,Co))``; result is ``(kh,kw,Ci,Co)``."""
    xs = _shape4("x", x, "(N, H, W, Ci)")
    ds = _shape4("d_out", d_out, "(N, Ho, Wo, Co)")
    ksz = normalize_kernel_size(kernel_size)
    dt = result_dtype(_dtype_of("x", x), _dtype_of("d_out", d_out))
    g = _geometry(xs, (*ksz, xs[3], ds[3]), stride, padding, dt)
    _check_d_out(ds, g, "x")
    return g


@_memoized
def check_deconv2d_dx(
    kernel: Any,
    d_out: Any,
    stride: StrideLike,
    padding: PaddingLike,
    input_shape: Sequence[int] | None = None,
) -> Geometry:
    """Validate ``deconv2d_dx(kernel (kh,kw,Ci,Co), d_out (N,Ho,Wo,Co))``; result is x's shape.

    The input size comes from ``d_out`` (SPEC §2); ``input_shape``, ``(N, H, W, Ci)`` or
    ``(H, W)``, is optional and, when given, must agree with it.
    """
    ks = _shape4("kernel", kernel, "(kh, kw, Ci, Co)")
    ds = _shape4("d_out", d_out, "(N, Ho, Wo, Co)")
    dt = result_dtype(_dtype_of("kernel", kernel), _dtype_of("d_out", d_out))
    kh, kw, ci, co = ks
    if ds[3] != co:
        raise ValueError(
            f"d_out has {ds[3]} channels (axis 3 of {ds}) but kernel has {co} output channels (axis 3 of {ks})"
        )
    st = normalize_stride(stride)
    pads = resolve_pads((kh, kw), st, padding)
    in_size = []
    for axis, name in ((0, "height"), (1, "width")):
        n = input_length(ds[1 + axis], ks[axis], st[axis], *pads[axis])
        if n is None:
            raise ValueError(
                f"d_out {name} {ds[1 + axis]} is not an output size of any input with kernel "
                f"{(kh, kw)}, stride {st}, padding {padding_label(padding)}: "
                f"(Ho - lo - hi + k - 2) / s + 1 must be a whole number >= 1 (pads {pads})"
            )
        in_size.append(n)
    size = (in_size[0], in_size[1])
    if input_shape is not None:
        shp = tuple(int(v) for v in input_shape)
        if len(shp) == 4:
            want: tuple[int, ...] = (ds[0], *size, ci)
        elif len(shp) == 2:
            want = size
        else:
            raise ValueError(f"input_shape must be (N, H, W, Ci) or (H, W), got {tuple(input_shape)}")
        if shp != want:
            raise ValueError(
                f"input_shape {shp} disagrees with d_out {ds}: kernel {(kh, kw)}, stride {st}, "
                f"padding {padding_label(padding)} map an input of {want} to it"
            )
    return Geometry(ds[0], size, (kh, kw), ci, co, st, pads, (ds[1], ds[2]), dt, padding_label(padding))


def check_scalar(name: str, value: Any) -> float:
    """A real, finite-or-not Python/NumPy scalar (or 0-d array) → ``float``."""
    if type(value) is float:
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if getattr(value, "shape", None) == () and np.dtype(getattr(value, "dtype", object)).kind in "iuf":
            return float(value)
        raise TypeError(f"{name} must be a real scalar, got {value!r} of type {type(value).__name__}")
    return float(value)


def check_stdp_scalars(**scalars: Any) -> dict[str, float]:
    """``A_plus``, ``A_minus``, ``eta``, ``pretrace_target``, ``w_decay``, ``w_bound`` → floats, by name."""
    return {name: check_scalar(name, value) for name, value in scalars.items()}


@_memoized
def check_stdp_update(
    kernel: Any,
    pre_spike: Any,
    pre_trace: Any,
    post_spike: Any,
    post_trace: Any,
    stride: StrideLike,
    padding: PaddingLike,
) -> Geometry:
    """Validate ``stdp_update``: ``pre_*`` are x-shaped ``(N,H,W,Ci)``, ``post_*`` y-shaped."""
    ks = _shape4("kernel", kernel, "(kh, kw, Ci, Co)")
    pres = _shape4("pre_spike", pre_spike, "(N, H, W, Ci)")
    pret = _shape4("pre_trace", pre_trace, "(N, H, W, Ci)")
    posts = _shape4("post_spike", post_spike, "(N, Ho, Wo, Co)")
    postt = _shape4("post_trace", post_trace, "(N, Ho, Wo, Co)")
    dt = result_dtype(
        _dtype_of("kernel", kernel),
        _dtype_of("pre_spike", pre_spike),
        _dtype_of("pre_trace", pre_trace),
        _dtype_of("post_spike", post_spike),
        _dtype_of("post_trace", post_trace),
    )
    if pret != pres:
        raise ValueError(f"pre_trace has shape {pret} but pre_spike has {pres}; both are x-shaped (N, H, W, Ci)")
    if postt != posts:
        raise ValueError(f"post_trace has shape {postt} but post_spike has {posts}; both are y-shaped (N, Ho, Wo, Co)")
    g = _geometry(pres, ks, stride, padding, dt)
    if posts[0] != g.batch:
        raise ValueError(f"post_spike has batch size {posts[0]} but pre_spike has {g.batch}")
    if posts[3] != g.out_channels:
        raise ValueError(
            f"post_spike has {posts[3]} channels but kernel has {g.out_channels} output channels (axis 3 of {ks})"
        )
    if posts[1:3] != g.out_size:
        raise ValueError(
            f"post_spike has spatial size {posts[1:3]} but pre_spike {g.in_size} with {g.describe()} gives {g.out_size}"
        )
    return g


@_memoized
def check_stdp_step(
    kernel: Any,
    x: Any,
    pre_spike: Any,
    pre_trace: Any,
    post_spike: Any,
    post_trace: Any,
    stride: StrideLike,
    padding: PaddingLike,
) -> Geometry:
    """Validate the SPEC §8 step: ``stdp_update``'s arrays plus ``x``, shaped like ``pre_spike``."""
    g = check_stdp_update(kernel, pre_spike, pre_trace, post_spike, post_trace, stride, padding)
    xs = _shape4("x", x, "(N, H, W, Ci)")
    if xs != g.x_shape:
        raise ValueError(f"x has shape {xs} but pre_spike has {g.x_shape}; both are (N, H, W, Ci)")
    _dtype_of("x", x)
    return g
