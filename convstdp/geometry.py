"""Shapes, padding and input validation: the one home of SPEC §2 and §5.

Every backend, the reference and the conformance harness resolve sizes and pads here, so a
disagreement about geometry cannot hide inside one of them.

Per spatial axis (input length ``n``, kernel length ``k``, stride ``s``) the transposed
convolution pads the stride-dilated input by ``(lo, hi)`` and then correlates it with the
kernel; input position ``h`` and tap ``a`` meet at output position ``p = h*s + lo - a``.

Validation is memoised in ONE dictionary. Parameters are normalised first (to exact Python
ints and the upper-case mode names; anything else is rejected), arrays are reduced to their
``(shape, dtype)``, and the key is made of those normalised values only: exactly what a check
reads, so a later call can never reuse an answer given for different arguments.

Sizes are bounded up front (:data:`MAX_BYTES`): a result, or the stride-dilated padded input
map a backend may build, that could not fit in this machine's memory is a ``ValueError``
naming the parameter that makes it so, before any backend allocates or traces anything.
"""

from __future__ import annotations

import numbers
import operator
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

Pair = tuple[int, int]
Pads = tuple[Pair, Pair]
PaddingLike = str | Sequence[Sequence[int]]
StrideLike = int | Sequence[int]

__all__ = [
    "Geometry",
    "MAX_BYTES",
    "axis_pads",
    "output_length",
    "input_length",
    "normalize_stride",
    "normalize_kernel_size",
    "normalize_padding",
    "normalize_input_shape",
    "resolve_pads",
    "padding_label",
    "result_dtype",
    "check_deconv2d",
    "check_deconv2d_dk",
    "check_deconv2d_dx",
    "check_stdp_update",
    "check_stdp_step",
    "check_dtype",
    "check_scalar",
    "check_stdp_params",
    "StdpParams",
]


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not POSIX, or not reported
        return None


#: Largest array (in bytes) a geometry may ask a backend to create: this machine's physical
#: memory, and never more than 2**48 bytes (256 TiB), so every size also fits an int64 many times.
MAX_BYTES: int = min(2**48, _physical_memory() or 2**48)


# ----------------------------------------------------------------------------- SPEC §2, one axis


def axis_pads(k: int, s: int, padding: str) -> Pair:
    """``(lo, hi)`` for one axis under ``"SAME"`` or ``"VALID"`` (SPEC §2)."""
    if padding == "SAME":
        pad_len = k + s - 2
        lo = k - 1 if s > k - 1 else -(-pad_len // 2)  # ceil(pad_len / 2), exact for any int
    elif padding == "VALID":
        pad_len = k + s - 2 + max(k - s, 0)
        lo = k - 1
    else:  # pragma: no cover - callers normalise first
        raise ValueError(f"padding must be 'SAME' or 'VALID', got {_show(padding)}")
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
# Each normaliser returns exact Python ints (or a mode name) and rejects everything else: bools,
# floats (even 2.0), strings, None. NumPy integers and integer arrays of the right length are
# accepted and converted, so the normalised value alone says what a check will read.


def _is_int(v: Any) -> bool:
    """A Python or NumPy integer, not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _int_seq(value: Any) -> tuple[Any, ...] | None:
    """A list, tuple or 1-D array as a tuple of its items; ``None`` for anything else (str included)."""
    if isinstance(value, list | tuple):
        return tuple(value)
    if isinstance(value, np.ndarray) and value.ndim == 1:
        return tuple(value)
    return None


def _positive_pair(name: str, value: Any, pair: str) -> Pair:
    """``int`` or a pair of ints → a pair of Python ints, each ``>= 1``; errors name ``name``."""
    if type(value) is int:
        out = (value, value)
    elif type(value) is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int:
        out = value
    else:
        items = _int_seq(value)
        if _is_int(value):
            out = (int(value), int(value))
        elif items is not None and len(items) == 2 and all(map(_is_int, items)):
            out = (int(items[0]), int(items[1]))
        else:
            raise TypeError(f"{name} must be a positive int or a pair {pair} of them, got {_show(value)}")
    if out[0] < 1 or out[1] < 1:
        raise ValueError(f"{name} must be >= 1 on each axis, got {_show(value)}")
    return out


def normalize_stride(stride: StrideLike) -> Pair:
    """``int`` or ``(sh, sw)`` → ``(sh, sw)``, each a positive Python int."""
    return _positive_pair("stride", stride, "(sh, sw)")


def normalize_kernel_size(kernel_size: StrideLike) -> Pair:
    """``int`` or ``(kh, kw)`` → ``(kh, kw)``, each a positive Python int."""
    return _positive_pair("kernel_size", kernel_size, "(kh, kw)")


_MODES = {"SAME": "SAME", "VALID": "VALID", "same": "SAME", "valid": "VALID"}
_PADDING_FORMS = "'SAME', 'VALID' or ((lo_h, hi_h), (lo_w, hi_w)) of ints"


def normalize_padding(padding: PaddingLike) -> str | Pads:
    """``"SAME"``/``"VALID"`` (any case) → the upper-case name; explicit pads → a tuple of Python ints."""
    if isinstance(padding, str):
        mode = _MODES.get(padding) or padding.upper()
        if mode not in ("SAME", "VALID"):
            raise ValueError(f"padding must be {_PADDING_FORMS}, got {_show(padding)}")
        return mode
    if type(padding) is tuple and len(padding) == 2:  # the normalised form itself, cheaply
        a, b = padding
        if type(a) is tuple and type(b) is tuple and len(a) == 2 and len(b) == 2:
            if type(a[0]) is int and type(a[1]) is int and type(b[0]) is int and type(b[1]) is int:
                return padding  # type: ignore[return-value]
    if isinstance(padding, np.ndarray):
        rows = tuple(padding) if padding.ndim == 2 else None
    else:
        rows = _int_seq(padding)
    pairs = [_int_seq(r) for r in rows] if rows is not None and len(rows) == 2 else None
    if pairs is None or any(p is None or len(p) != 2 for p in pairs):
        raise ValueError(f"padding must be {_PADDING_FORMS}, got {_show(padding)}")
    (lo_h, hi_h), (lo_w, hi_w) = pairs  # type: ignore[misc]
    if not all(_is_int(v) for v in (lo_h, hi_h, lo_w, hi_w)):
        raise ValueError(f"explicit padding must hold four ints ((lo_h, hi_h), (lo_w, hi_w)), got {_show(padding)}")
    return ((int(lo_h), int(hi_h)), (int(lo_w), int(hi_w)))


def normalize_input_shape(input_shape: Sequence[int] | None) -> tuple[int, ...] | None:
    """``None``, ``(N, H, W, Ci)`` or ``(H, W)`` of ints → a tuple of Python ints (or ``None``)."""
    if input_shape is None:
        return None
    items = _int_seq(input_shape)
    if items is None or not all(map(_is_int, items)):
        raise TypeError(f"input_shape must be None, (N, H, W, Ci) or (H, W) of ints, got {_show(input_shape)}")
    if len(items) not in (2, 4):
        raise ValueError(f"input_shape must be (N, H, W, Ci) or (H, W), got {len(items)} values: {_show(items)}")
    return tuple(int(v) for v in items)


def resolve_pads(kernel_size: Pair, stride: Pair, padding: PaddingLike) -> Pads:
    """Per-axis ``((lo_h, hi_h), (lo_w, hi_w))`` for any padding SPEC accepts."""
    return _resolve(kernel_size, stride, normalize_padding(padding))


def _resolve(kernel_size: Pair, stride: Pair, mode: str | Pads) -> Pads:
    if isinstance(mode, str):
        return (axis_pads(kernel_size[0], stride[0], mode), axis_pads(kernel_size[1], stride[1], mode))
    return mode


def padding_label(padding: PaddingLike) -> str:
    """Short human form of a padding argument, for messages and case names."""
    try:
        mode = normalize_padding(padding)
    except ValueError:
        return repr(padding)
    if isinstance(mode, str):
        return mode
    return _show(mode)


# ----------------------------------------------------------------------------- dtypes

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def check_dtype(name: str, dt: np.dtype) -> np.dtype:
    """``dt`` in native byte order, if SPEC §4 accepts it for ``name``; ``TypeError`` otherwise."""
    if dt.kind == "c":
        raise TypeError(f"{name} has complex dtype {dt}; expected real float32 or float64 values")
    if dt.kind not in "biuf":
        raise TypeError(f"{name} has dtype {dt}; expected float32, float64, int or bool")
    if not dt.isnative:
        dt = dt.newbyteorder("=")
    if dt.kind == "f" and dt not in _FLOATS and dt != np.float16:
        raise TypeError(f"{name} has dtype {dt}; supported float dtypes are float32 and float64 (float16 widens)")
    return dt


def result_dtype(*dtypes: np.dtype) -> np.dtype:
    """SPEC §4: ``np.result_type`` of the floating inputs, at least float32; bool/int inputs follow it.

    With no floating input the result is float64 (NumPy's default float); float16 inputs are
    promoted to float32, the narrowest supported dtype. Any byte order in, native byte order out.
    """
    floats = [d if d.isnative else d.newbyteorder("=") for d in dtypes if d.kind == "f"]
    if not floats:
        return np.dtype(np.float64)
    return np.result_type(np.float32, *floats)


def _show(value: Any) -> str:
    """``repr`` for messages, with absurdly large ints abbreviated (Python refuses to print some)."""
    if isinstance(value, tuple):
        inner = ", ".join(map(_show, value))
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if _is_int(value) and abs(int(value)) >= 10**18:
        return f"~{'-' if value < 0 else ''}2**{abs(int(value)).bit_length() - 1}"
    try:
        return repr(value)
    except ValueError:  # e.g. an object holding a huge int
        return f"<{type(value).__name__}>"


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
        return f"kernel {_show(self.kernel_size)}, stride {_show(self.stride)}, padding {self.padding}" + (
            "" if self.padding.startswith("((") else f" (pads {_show(self.pads)})"
        )


Sig = tuple[tuple[int, ...], np.dtype]


def _sig(arr: Any) -> Sig | None:
    """``(shape, dtype)`` exactly as the checks read them; ``None`` when ``arr`` has no int shape
    and NumPy dtype (the check then says what is wrong)."""
    if type(arr) is np.ndarray:
        return arr.shape, arr.dtype
    try:
        return tuple(map(operator.index, arr.shape)), np.dtype(arr.dtype)
    except (AttributeError, TypeError, ValueError):
        return None


def _shape4(name: str, arr: Any, sig: Sig | None, layout: str) -> tuple[int, int, int, int]:
    if sig is None:
        shape, dtype = getattr(arr, "shape", None), getattr(arr, "dtype", None)
        if shape is None or dtype is None:
            raise TypeError(f"{name} must be an array with shape {layout}, got {type(arr).__name__}")
        raise TypeError(
            f"{name} must be an array with an int shape {layout} and a NumPy dtype, got "
            f"{type(arr).__name__} with shape {_show(shape)} and dtype {_show(dtype)}"
        )
    shape = sig[0]
    if len(shape) != 4:
        raise ValueError(f"{name} must have rank 4 {layout}, got rank {len(shape)} with shape {shape}")
    return shape  # type: ignore[return-value]


def _approx_bytes(n: int) -> str:
    return f"{n:.3g} bytes" if n < 10**30 else f"~2**{n.bit_length() - 1} bytes"


def _culprit(g: Geometry, x_name: str, mode: bool, kernel_name: str) -> tuple[str, Any]:
    """The parameter (or input array) contributing most to the spatial extent of ``g``."""
    terms: dict[str, int] = {"stride": 0, "padding": 0, kernel_name: 0, x_name: 0}
    for i in range(2):
        n, k, s = g.in_size[i], g.kernel_size[i], g.stride[i]
        lo, hi = g.pads[i]
        # SAME/VALID pads are made of k and s: charge them to the kernel and the stride.
        terms["stride"] = max(terms["stride"], max(n, 1) * s)
        terms["padding"] = max(terms["padding"], 0 if mode else abs(lo) + abs(hi))
        terms[kernel_name] = max(terms[kernel_name], 2 * k if mode else k)
        terms[x_name] = max(terms[x_name], n)
    name = max(terms, key=terms.__getitem__)
    x_value = g.y_shape if x_name == "d_out" else g.x_shape
    value = {"stride": g.stride, "padding": g.padding, kernel_name: g.kernel_size, x_name: x_value}[name]
    return name, value


def _check_sizes(
    g: Geometry,
    outputs: Sequence[tuple[str, tuple[int, ...], str | None]],
    x_name: str,
    mode: bool,
    kernel_name: str,
    extent_blame: str | None = None,
) -> None:
    """SPEC §5 up-front bound: every array the operator creates, and the stride-dilated padded input
    map (one channel) a backend may build, must fit :data:`MAX_BYTES`. A zero-sized axis counts
    as 1 (such a shape is as absurd with one item as with none)."""
    # Per axis: the stride-dilated input, one more stride period (backends index by phase, so a
    # stride counts even on a one-pixel map), the pads either way and the kernel. Bounding it also
    # keeps every index a backend computes (h*s + lo - a, ...) far inside int64.
    ext = tuple(
        max(g.in_size[i], 1) * g.stride[i] + abs(g.pads[i][0]) + abs(g.pads[i][1]) + g.kernel_size[i] for i in range(2)
    )
    checks = [*outputs, ("the stride-dilated, padded input map (one channel)", (g.batch, *ext), extent_blame)]
    for what, shape, blame in checks:
        size = g.dtype.itemsize
        for d in shape:
            size *= max(d, 1)
        if size > MAX_BYTES:
            if blame:
                name, value = blame, {"padding": g.padding, "stride": g.stride}.get(blame, g.kernel_size)
            else:
                name, value = _culprit(g, x_name, mode, kernel_name)
            given = value if isinstance(value, str) else _show(value)
            raise ValueError(
                f"{name} {given} is too large: {what} would have shape {_show(tuple(shape))}, "
                f"{_approx_bytes(size)} of {g.dtype.name}, more than the {_approx_bytes(MAX_BYTES)} limit "
                f"(this machine's memory, at most 2**48 bytes); with input size {_show(g.in_size)}, "
                f"kernel {_show(g.kernel_size)}, stride {_show(g.stride)}, padding {g.padding}"
            )


def _forward_geometry(
    x_name: str,
    xs: tuple[int, ...],
    ks: tuple[int, ...],
    stride: Pair,
    mode: str | Pads,
    dt: np.dtype,
    kernel_name: str = "kernel",
    outputs: Sequence[tuple[str, tuple[int, ...], str | None]] = (),
) -> Geometry:
    """Geometry of ``x (N,H,W,Ci)`` through a ``(kh,kw,Ci,Co)`` kernel: pads, output size, bounds."""
    n, h, w, ci = xs
    kh, kw, kci, co = ks
    if kci != ci:
        raise ValueError(f"kernel has {kci} input channels (axis 2 of {ks}) but {x_name} has {ci} (axis 3 of {xs})")
    pads = _resolve((kh, kw), stride, mode)
    label = padding_label(mode)
    out = (output_length(h, kh, stride[0], *pads[0]), output_length(w, kw, stride[1], *pads[1]))
    if min(out) < 1:
        raise ValueError(
            f"empty output: {x_name} {(h, w)} with kernel {_show((kh, kw))}, stride {_show(stride)}, "
            f"padding {label} gives output size {_show(out)}; every axis must be >= 1"
        )
    g = Geometry(n, (h, w), (kh, kw), ci, co, stride, pads, out, dt, label)
    _check_sizes(g, [*outputs, ("the output y", g.y_shape, None)], x_name, isinstance(mode, str), kernel_name)
    return g


# ONE memo for every check: key = (operation, normalised parameters, (shape, dtype) per array).
_MEMO: dict[tuple, Geometry] = {}
_MEMO_MAX = 4096


def _remember(key: tuple, g: Geometry) -> Geometry:
    if len(_MEMO) >= _MEMO_MAX:
        _MEMO.clear()
    _MEMO[key] = g
    return g


def check_deconv2d(x: Any, kernel: Any, stride: StrideLike, padding: PaddingLike) -> Geometry:
    """Validate ``deconv2d(x (N,H,W,Ci), kernel (kh,kw,Ci,Co))`` and resolve its geometry."""
    st, mode = normalize_stride(stride), normalize_padding(padding)
    key = ("deconv2d", _sig(x), _sig(kernel), st, mode)
    g = _MEMO.get(key)
    if g is None:
        xs = _shape4("x", x, key[1], "(N, H, W, Ci)")
        ks = _shape4("kernel", kernel, key[2], "(kh, kw, Ci, Co)")
        dt = result_dtype(check_dtype("x", key[1][1]), check_dtype("kernel", key[2][1]))
        g = _remember(key, _forward_geometry("x", xs, ks, st, mode, dt))
    return g


def _check_d_out(d_shape: tuple[int, ...], g: Geometry, what: str) -> None:
    if d_shape[0] != g.batch:
        raise ValueError(f"d_out has batch size {d_shape[0]} but {what} has {g.batch}")
    if d_shape[1:3] != g.out_size:
        raise ValueError(
            f"d_out has spatial size {d_shape[1:3]} but {what} {g.in_size} with {g.describe()} gives {g.out_size}"
        )


def check_deconv2d_dk(
    x: Any, d_out: Any, kernel_size: StrideLike, stride: StrideLike, padding: PaddingLike
) -> Geometry:
    """Validate ``deconv2d_dk(x (N,H,W,Ci), d_out (N,Ho,Wo,Co))``; result is ``(kh,kw,Ci,Co)``."""
    ksz, st, mode = normalize_kernel_size(kernel_size), normalize_stride(stride), normalize_padding(padding)
    key = ("deconv2d_dk", _sig(x), _sig(d_out), ksz, st, mode)
    g = _MEMO.get(key)
    if g is None:
        xs = _shape4("x", x, key[1], "(N, H, W, Ci)")
        ds = _shape4("d_out", d_out, key[2], "(N, Ho, Wo, Co)")
        dt = result_dtype(check_dtype("x", key[1][1]), check_dtype("d_out", key[2][1]))
        ks = (*ksz, xs[3], ds[3])
        g = _forward_geometry("x", xs, ks, st, mode, dt, "kernel_size", [("the kernel gradient dK", ks, "kernel_size")])
        _check_d_out(ds, g, "x")
        _remember(key, g)
    return g


def check_deconv2d_dx(
    kernel: Any,
    d_out: Any,
    stride: StrideLike,
    padding: PaddingLike,
    input_shape: Sequence[int] | None = None,
) -> Geometry:
    """Validate ``deconv2d_dx(kernel (kh,kw,Ci,Co), d_out (N,Ho,Wo,Co))``; result is x's shape.

    The input size comes from ``d_out`` (SPEC §2); ``input_shape``, ``(N, H, W, Ci)`` or
    ``(H, W)`` of ints, is optional and, when given, must agree with it.
    """
    st, mode, shp = normalize_stride(stride), normalize_padding(padding), normalize_input_shape(input_shape)
    key = ("deconv2d_dx", _sig(kernel), _sig(d_out), st, mode, shp)
    g = _MEMO.get(key)
    if g is None:
        g = _remember(key, _dx_geometry(kernel, d_out, key[1], key[2], st, mode, shp))
    return g


def _dx_geometry(
    kernel: Any, d_out: Any, ksig: Sig | None, dsig: Sig | None, st: Pair, mode: str | Pads, shp: tuple[int, ...] | None
) -> Geometry:
    ks = _shape4("kernel", kernel, ksig, "(kh, kw, Ci, Co)")
    ds = _shape4("d_out", d_out, dsig, "(N, Ho, Wo, Co)")
    dt = result_dtype(check_dtype("kernel", ksig[1]), check_dtype("d_out", dsig[1]))  # type: ignore[index]
    kh, kw, ci, co = ks
    if ds[3] != co:
        raise ValueError(
            f"d_out has {ds[3]} channels (axis 3 of {ds}) but kernel has {co} output channels (axis 3 of {ks})"
        )
    pads = _resolve((kh, kw), st, mode)
    label = padding_label(mode)
    in_size = []
    for axis, name in ((0, "height"), (1, "width")):
        n = input_length(ds[1 + axis], ks[axis], st[axis], *pads[axis])
        if n is None:
            raise ValueError(
                f"d_out {name} {ds[1 + axis]} is not an output size of any input with kernel "
                f"{(kh, kw)}, stride {_show(st)}, padding {label}: "
                f"(Ho - lo - hi + k - 2) / s + 1 must be a whole number >= 1 (pads {_show(pads)})"
            )
        in_size.append(n)
    size = (in_size[0], in_size[1])
    g = Geometry(ds[0], size, (kh, kw), ci, co, st, pads, (ds[1], ds[2]), dt, label)
    # The input size is derived here (d_out exists): only explicit pads can make it absurd, and
    # they, not the stride, are then what makes the extent absurd too.
    pads_big = not isinstance(mode, str) and max(abs(lo) + abs(hi) for lo, hi in pads) >= max(st)
    blame = "padding" if pads_big else None
    _check_sizes(g, [("the input gradient dX", g.x_shape, blame)], "d_out", isinstance(mode, str), "kernel", blame)
    if shp is not None:
        want = g.x_shape if len(shp) == 4 else size
        if shp != want:
            raise ValueError(
                f"input_shape {_show(shp)} disagrees with d_out {ds}: kernel {(kh, kw)}, stride {_show(st)}, "
                f"padding {label} map an input of {want} to it"
            )
    return g


def check_scalar(name: str, value: Any) -> float:
    """A real, finite-or-not Python/NumPy scalar (or 0-d array) → ``float``."""
    if type(value) is float:
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if getattr(value, "shape", None) == () and np.dtype(getattr(value, "dtype", object)).kind in "iuf":
            return float(value)
        raise TypeError(f"{name} must be a real scalar, got {_show(value)} of type {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} is too large for a float: {_show(value)}") from None


class StdpParams(NamedTuple):
    """The trace-STDP scalars of SPEC §3, as floats: the one value implementations receive.

    A ``NamedTuple`` is a JAX pytree and a Numba tuple alike, so it passes unchanged from the
    wrapper to any kernel. ``stdp_update`` ends with
    ``W' = clip(W + eta·dW - w_decay·W, 0.01, w_bound - 0.01)`` (decay, clip only when > 0).
    """

    A_plus: float
    A_minus: float
    eta: float = 0.0
    pretrace_target: float = 0.0
    w_decay: float = 0.0
    w_bound: float = 0.0


def check_stdp_params(**scalars: Any) -> StdpParams:
    """``A_plus``, ``A_minus``, ``eta``, ``pretrace_target``, ``w_decay``, ``w_bound`` → :class:`StdpParams`."""
    return StdpParams(**{name: check_scalar(name, value) for name, value in scalars.items()})


_STDP_NAMES = ("kernel", "pre_spike", "pre_trace", "post_spike", "post_trace")


def _stdp_geometry(arrays: Sequence[Any], sigs: Sequence[Sig | None], st: Pair, mode: str | Pads) -> Geometry:
    layouts = ("(kh, kw, Ci, Co)", "(N, H, W, Ci)", "(N, H, W, Ci)", "(N, Ho, Wo, Co)", "(N, Ho, Wo, Co)")
    ks, pres, pret, posts, postt = (
        _shape4(n, a, s, lay) for n, a, s, lay in zip(_STDP_NAMES, arrays, sigs, layouts, strict=True)
    )
    dt = result_dtype(*(check_dtype(n, s[1]) for n, s in zip(_STDP_NAMES, sigs, strict=True)))  # type: ignore[index]
    if pret != pres:
        raise ValueError(f"pre_trace has shape {pret} but pre_spike has {pres}; both are x-shaped (N, H, W, Ci)")
    if postt != posts:
        raise ValueError(f"post_trace has shape {postt} but post_spike has {posts}; both are y-shaped (N, Ho, Wo, Co)")
    g = _forward_geometry("pre_spike", pres, ks, st, mode, dt)
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
    st, mode = normalize_stride(stride), normalize_padding(padding)
    arrays = (kernel, pre_spike, pre_trace, post_spike, post_trace)
    sigs = tuple(map(_sig, arrays))
    key = ("stdp_update", sigs, st, mode)
    g = _MEMO.get(key)
    if g is None:
        g = _remember(key, _stdp_geometry(arrays, sigs, st, mode))
    return g


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
    xsig = _sig(x)
    key = ("stdp_step x", xsig, g)
    if key not in _MEMO:
        xs = _shape4("x", x, xsig, "(N, H, W, Ci)")
        if xs != g.x_shape:
            raise ValueError(f"x has shape {xs} but pre_spike has {g.x_shape}; both are (N, H, W, Ci)")
        check_dtype("x", xsig[1])  # type: ignore[index]
        _remember(key, g)
    return g
