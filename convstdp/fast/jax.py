"""The JAX backend: SPEC §3 jit-compiled for CPU and GPU, ``Precision.HIGHEST`` unless asked otherwise.

``get_backend("jax")`` returns :class:`JaxBackend`; its operators take NumPy or JAX arrays and
return ``jax.Array``. Every operator is one compiled program with the geometry static; the
STDP update (LTP and LTD fused into one ``dK`` over the batch-stacked pairs, weights updated in
the same program) and the whole SPEC §8 step (:meth:`JaxBackend.stdp_step`) are one dispatch
each. (On CPU with stride 1 the two contractions stay separate: measured cheaper there.)

Differentiable building blocks for user JAX code: :func:`deconv2d_fn` (``jax.grad`` gives this
backend's ``dK``/``dX`` through a ``custom_vjp``; works under ``jit`` and ``vmap``),
:func:`deconv2d_dk_fn`, :func:`deconv2d_dx_fn`.

Dtypes (SPEC §4): float32 always; float64 only with ``jax_enable_x64`` on, otherwise a
``TypeError`` says how to turn it on (JAX would silently compute in float32); that includes
calls with no floating input at all, whose result dtype is float64. Bool/int spikes are cast to
the result dtype inside the program, except NumPy arrays JAX would misread (64-bit ints, which
it wraps to int32 while x64 is off, and non-native byte order), which NumPy converts first.
Inputs are never donated unless the caller opts in with ``JaxBackend(donate_kernel=True)``,
which invalidates a ``jax.Array`` kernel passed to ``stdp_update``/``stdp_step`` (its buffer is
reused for ``W'``).

Reduced precision is opt-in by name (``create_tf32_backend``, ``create_bf16_backend``): the
backend then carries ``precision`` (``"tf32"``/``"bf16"``) and ``unit_roundoff`` (the
per-product rounding unit the conformance harness scales its tolerance by).

Why the programs look the way they do (measured with JAX 0.10.2; see ``_jax_formulations``):
XLA's CPU kernel gradient of a strided transposed convolution is 5-10x slower than the
matrix products it amounts to, so on CPU big problems use a stride-phase formulation run in
batch chunks, while GPUs get the convolutions cuDNN is built for;
explicit pads never go through ``lax.conv_transpose`` (whose pad meaning depends on
``use_consistent_padding``) but through ``lax.conv_general_dilated``, where SPEC's
"pads of the stride-dilated input" meaning is the only one; precision is passed explicitly on
every product, because on NVIDIA GPUs JAX's float32 default is TF32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from convstdp import geometry, paths
from convstdp.backends import composed_step
from convstdp.fast import _jax_formulations as F
from convstdp.fast._jax_common import X64_HELP, device_names, host_safe
from convstdp.fast._jax_common import result_dtype as _result_dtype
from convstdp.geometry import PaddingLike, StdpParams, StrideLike

__all__ = [
    "JaxBackend",
    "create_backend",
    "create_tf32_backend",
    "create_bf16_backend",
    "deconv2d_fn",
    "deconv2d_dk_fn",
    "deconv2d_dx_fn",
    "PRECISION_MODES",
]

Pair = tuple[int, int]
Pads = tuple[Pair, Pair]

# name -> (numerics, declared unit roundoff of one product; None = the dtype's own)
PRECISION_MODES: dict[str, tuple[F.Numerics, float | None]] = {
    "highest": (F.Numerics(lax.Precision.HIGHEST), None),
    # JAX's DEFAULT float32 precision: TF32 tensor cores on NVIDIA Ampere and later, plain
    # float32 on CPU. 10 stored mantissa bits.
    "tf32": (F.Numerics(lax.Precision.DEFAULT), 2.0**-11),
    # Operands rounded to bfloat16 (7 stored mantissa bits), products accumulated in the result dtype.
    "bf16": (F.Numerics(lax.Precision.DEFAULT, "bfloat16"), 2.0**-8),
}

# ------------------------------------------------------------------------------ compiled programs
# Static: geometry, formulation, numerics, result dtype. Dynamic: arrays and the STDP scalars
# (changing A_plus or eta does not recompile).

_GEOM = ("stride", "pads", "size", "form", "num", "dtype")


@partial(jax.jit, static_argnames=_GEOM)
def _deconv2d_prog(x, kernel, *, stride, pads, size, form, num, dtype):
    return F.deconv2d(x, kernel.astype(dtype), out_size=size, stride=stride, pads=pads, form=form, num=num)


@partial(jax.jit, static_argnames=_GEOM)
def _dk_prog(x, d_out, *, stride, pads, size, form, num, dtype):
    return F.deconv2d_dk(x, d_out, ksize=size, stride=stride, pads=pads, form=form, num=num, dtype=dtype)


@partial(jax.jit, static_argnames=_GEOM)
def _dx_prog(kernel, d_out, *, stride, pads, size, form, num, dtype):
    return F.deconv2d_dx(kernel.astype(dtype), d_out, in_size=size, stride=stride, pads=pads, form=form, num=num)


def _stdp_update_body(
    kernel, pre_spike, pre_trace, post_spike, post_trace, scalars, *, stride, pads, size, form, num, dtype
):
    # The last two entries are the w_decay > 0 / w_bound > 0 branches, decided on the Python floats:
    # in float32 a tiny w_bound (1e-50) reads as 0 and the clip would be skipped.
    kernel = kernel.astype(dtype)
    sc = tuple(jnp.asarray(v, dtype) for v in scalars[:6])
    dw = F.stdp_dw(
        pre_spike, pre_trace, post_spike, post_trace, sc, ksize=size, stride=stride, pads=pads, form=form, num=num,
        dtype=dtype,
    )  # fmt: skip
    return F.apply_update(kernel, dw, sc, scalars[6], scalars[7]), dw


def _stdp_step_body(
    kernel, x, pre_spike, pre_trace, post_spike, post_trace, scalars, *, stride, pads, size, form, num, dtype
):
    """SPEC §8 step: y = deconv2d(x, W); (W', dW) = stdp_update(W, ...); dX = dX(W', post_spike)."""
    y = F.deconv2d(x, kernel.astype(dtype), out_size=size[1], stride=stride, pads=pads, form=form, num=num)
    w_new, dw = _stdp_update_body(
        kernel,
        pre_spike,
        pre_trace,
        post_spike,
        post_trace,
        scalars,
        stride=stride,
        pads=pads,
        size=size[0],
        form=form,
        num=num,
        dtype=dtype,
    )
    dx = F.deconv2d_dx(w_new, post_spike, in_size=size[2], stride=stride, pads=pads, form=form, num=num)
    return y, w_new, dw, dx


_stdp_update_prog = jax.jit(_stdp_update_body, static_argnames=_GEOM)
_stdp_update_prog_donating = jax.jit(_stdp_update_body, static_argnames=_GEOM, donate_argnums=(0,))
_stdp_step_prog = jax.jit(_stdp_step_body, static_argnames=_GEOM)
_stdp_step_prog_donating = jax.jit(_stdp_step_body, static_argnames=_GEOM, donate_argnums=(0,))
_PROGRAMS = {
    "deconv2d": _deconv2d_prog,
    "deconv2d_dk": _dk_prog,
    "deconv2d_dx": _dx_prog,
    "stdp_update": _stdp_update_prog,
    "stdp_step": _stdp_step_prog,
}
_DONATING = {"stdp_update": _stdp_update_prog_donating, "stdp_step": _stdp_step_prog_donating}
_STDP_NAMES = ("kernel", "pre_spike", "pre_trace", "post_spike", "post_trace")


# ------------------------------------------------------------------------------ the backend


class JaxBackend:
    """SPEC §3 on JAX. Arguments arrive normalised by :class:`convstdp.backends.Backend`.

    ``precision``: ``"highest"`` (default), ``"tf32"`` or ``"bf16"`` (see ``PRECISION_MODES``).
    ``formulation``: ``"auto"`` (per problem: ``"phase"`` for big problems on CPU, ``"conv"``
    otherwise, GPU included), ``"conv"`` or ``"phase"`` (see ``_jax_formulations``; "phase" only
    where it is feasible, "conv" elsewhere).
    ``donate_kernel``: let ``stdp_update``/``stdp_step`` reuse a ``jax.Array`` kernel's buffer
    for ``W'`` (the caller's kernel is then deleted); off by default, since SPEC §4 promises
    inputs are left intact.

    Paths (:mod:`convstdp.paths`): ``"<operator>/conv"`` and, where it can run, ``"<operator>/phase"``
    for each of the five operators; the step with ``y``'s dtype apart from the update's runs the
    operators one by one, and they note their own paths.
    """

    name = "jax"

    def __init__(self, precision: str = "highest", formulation: str = "auto", donate_kernel: bool = False) -> None:
        if precision not in PRECISION_MODES:
            raise ValueError(f"precision must be one of {sorted(PRECISION_MODES)}, got {precision!r}")
        if formulation not in ("auto", "conv", "phase"):
            raise ValueError(f"formulation must be 'auto', 'conv' or 'phase', got {formulation!r}")
        self.precision = precision
        self._num, self.unit_roundoff = PRECISION_MODES[precision]
        self.formulation = formulation
        self.donate_kernel = bool(donate_kernel)
        self.platform = jax.default_backend()
        # "phase" runs on CPU (auto) or when forced, and falls back to "conv" where it cannot trace
        forms = (
            ("conv",)
            if formulation == "conv" or (formulation == "auto" and self.platform != "cpu")
            else ("conv", "phase")
        )
        self.paths = frozenset(
            {
                f"{op}/{f}"
                for op in ("deconv2d", "deconv2d_dk", "deconv2d_dx", "stdp_update", "stdp_step")
                for f in forms
            }
        )
        import jaxlib

        self.version = f"jax {jax.__version__}, jaxlib {jaxlib.__version__} ({self.platform}, precision {precision})"

    def __repr__(self) -> str:
        return f"JaxBackend(precision={self.precision!r}, formulation={self.formulation!r}, platform={self.platform!r})"

    def devices(self) -> list[str]:
        return device_names()

    def _static(
        self, op: str, batch: int, out_size: Pair, ksize: Pair, channels: Pair, stride: Pair, pairs: int = 1
    ) -> dict[str, Any]:
        """Static program arguments of a call: the formulation, noted as the path ``"<op>/<formulation>"``
        (:mod:`convstdp.paths`), and the numerics. ``pairs``: products stacked along the batch (2 for
        the STDP update's LTP and LTD)."""
        form = _form_for(self.formulation, pairs * batch, out_size, ksize, channels, stride, self.platform)
        paths.note(f"{op}/{form}")
        return {"form": form, "num": self._num}

    def _program(self, op: str, kernel: Any) -> Callable[..., Any]:
        """The compiled program of ``op`` (the kernel-donating one where the caller allowed it)."""
        if self.donate_kernel and isinstance(kernel, jax.Array) and op in _DONATING:
            return _DONATING[op]
        return _PROGRAMS[op]

    # -- operators (normalised arguments: stride (sh, sw), padding ((lo_h, hi_h), (lo_w, hi_w)))

    def deconv2d(self, x: Any, kernel: Any, *, stride: Pair, padding: Pads) -> jax.Array:
        """x ``(N,H,W,Ci)``, kernel ``(kh,kw,Ci,Co)`` → y ``(N,Ho,Wo,Co)``."""
        dtype = _result_dtype(("x", "kernel"), (x, kernel))
        x, kernel = host_safe(x, dtype), host_safe(kernel, dtype)
        n, h, w, ci = x.shape
        kh, kw, _, co = kernel.shape
        size = _out_size((h, w), (kh, kw), stride, padding)
        st = self._static("deconv2d", n, size, (kh, kw), (ci, co), stride)
        return self._program("deconv2d", kernel)(x, kernel, stride=stride, pads=padding, size=size, dtype=dtype, **st)

    def deconv2d_dk(self, x: Any, d_out: Any, *, kernel_size: Pair, stride: Pair, padding: Pads) -> jax.Array:
        """x ``(N,H,W,Ci)``, d_out ``(N,Ho,Wo,Co)`` → dK ``(kh,kw,Ci,Co)``."""
        dtype = _result_dtype(("x", "d_out"), (x, d_out))
        x, d_out = host_safe(x, dtype), host_safe(d_out, dtype)
        chans = (x.shape[3], d_out.shape[3])
        st = self._static("deconv2d_dk", x.shape[0], tuple(d_out.shape[1:3]), kernel_size, chans, stride)
        prog = self._program("deconv2d_dk", None)
        return prog(x, d_out, stride=stride, pads=padding, size=kernel_size, dtype=dtype, **st)

    def deconv2d_dx(
        self, kernel: Any, d_out: Any, *, stride: Pair, padding: Pads, input_shape: Sequence[int]
    ) -> jax.Array:
        """kernel ``(kh,kw,Ci,Co)``, d_out ``(N,Ho,Wo,Co)`` → dX ``(N,H,W,Ci)`` (``input_shape``)."""
        dtype = _result_dtype(("kernel", "d_out"), (kernel, d_out))
        kernel, d_out = host_safe(kernel, dtype), host_safe(d_out, dtype)
        size = (int(input_shape[1]), int(input_shape[2]))
        ks = tuple(kernel.shape)
        st = self._static("deconv2d_dx", d_out.shape[0], tuple(d_out.shape[1:3]), ks[:2], ks[2:], stride)
        return self._program("deconv2d_dx", kernel)(
            kernel, d_out, stride=stride, pads=padding, size=size, dtype=dtype, **st
        )

    def stdp_update(
        self,
        kernel: Any,
        pre_spike: Any,
        pre_trace: Any,
        post_spike: Any,
        post_trace: Any,
        *,
        stride: Pair,
        padding: Pads,
        params: StdpParams,
    ) -> tuple[jax.Array, jax.Array]:
        """→ ``(W', dW)``, kernel-shaped; one compiled program (SPEC §3 ``stdp_update``)."""
        arrays = (kernel, pre_spike, pre_trace, post_spike, post_trace)
        dtype = _result_dtype(_STDP_NAMES, arrays)
        arrays = tuple(host_safe(a, dtype) for a in arrays)
        ksize, out = tuple(kernel.shape[:2]), tuple(post_spike.shape[1:3])
        st = self._static("stdp_update", pre_spike.shape[0], out, ksize, tuple(kernel.shape[2:]), stride, pairs=2)
        prog = self._program("stdp_update", kernel)
        return prog(*arrays, _scalars(params), stride=stride, pads=padding, size=ksize, dtype=dtype, **st)

    def stdp_step(
        self,
        kernel: Any,
        x: Any,
        pre_spike: Any,
        pre_trace: Any,
        post_spike: Any,
        post_trace: Any,
        *,
        stride: Pair,
        padding: Pads,
        params: StdpParams,
    ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """SPEC §8 step in one dispatch → ``(y, W', dW, dX)``.

        Each operator keeps its own SPEC §4 dtype: when ``y``'s (from ``x``, ``kernel``) differs
        from the update's (the five STDP arrays; ``dX`` follows ``W'``), the operators run apart.
        """
        stdp = (kernel, pre_spike, pre_trace, post_spike, post_trace)
        dtype = _result_dtype(_STDP_NAMES, stdp)
        if _result_dtype(("x", "kernel"), (x, kernel)) != dtype:
            return composed_step(self, kernel, x, *stdp[1:], stride=stride, padding=padding, params=params)
        arrays = tuple(host_safe(a, dtype) for a in (kernel, x, *stdp[1:]))
        ksize, out = tuple(kernel.shape[:2]), tuple(post_spike.shape[1:3])
        st = self._static("stdp_step", pre_spike.shape[0], out, ksize, tuple(kernel.shape[2:]), stride, pairs=2)
        size = (ksize, out, tuple(x.shape[1:3]))
        prog = self._program("stdp_step", kernel)
        return prog(*arrays, _scalars(params), stride=stride, pads=padding, size=size, dtype=dtype, **st)


def _scalars(params: StdpParams) -> tuple[Any, ...]:
    """The program's dynamic STDP arguments: the six scalars, then the two branches as booleans."""
    return (*params, np.bool_(params.w_decay > 0), np.bool_(params.w_bound > 0))


def _out_size(in_size: Pair, ksize: Pair, stride: Pair, pads: Pads) -> Pair:
    return tuple(geometry.output_length(in_size[i], ksize[i], stride[i], *pads[i]) for i in range(2))  # type: ignore[return-value]


def create_backend() -> JaxBackend:
    """Registry factory for ``"jax"``: float32/float64 at ``Precision.HIGHEST``."""
    return JaxBackend()


def create_tf32_backend() -> JaxBackend:
    """Opt-in ``"jax-tf32"``: JAX's default float32 precision (TF32 on NVIDIA GPUs)."""
    return JaxBackend(precision="tf32")


def create_bf16_backend() -> JaxBackend:
    """Opt-in ``"jax-bf16"``: bfloat16 operands, float32 accumulation."""
    return JaxBackend(precision="bf16")


# ------------------------------------------------------------------------------ differentiable API


def _form_for(
    formulation: str,
    batch: int,
    out_size: Pair,
    ksize: Pair,
    channels: Pair,
    stride: Pair,
    platform: str | None = None,
) -> str:
    """The formulation to trace: the requested one, except that "phase" is used only where it is
    feasible (:func:`_jax_formulations.phase_feasible`; "conv" gives the same results elsewhere)."""
    if formulation == "conv":
        return "conv"
    if formulation == "phase":
        return "phase" if F.phase_feasible(ksize, stride) else "conv"
    return F.choose_formulation(platform or jax.default_backend(), batch, out_size, ksize, channels, stride)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _deconv2d_vjp(x, kernel, stride, pads, form, num):
    size = _out_size(tuple(x.shape[1:3]), tuple(kernel.shape[:2]), stride, pads)
    return F.deconv2d(x, kernel, out_size=size, stride=stride, pads=pads, form=form, num=num)


def _deconv2d_vjp_fwd(x, kernel, stride, pads, form, num):
    return _deconv2d_vjp(x, kernel, stride, pads, form, num), (x, kernel)


def _deconv2d_vjp_bwd(stride, pads, form, num, res, g):
    x, kernel = res
    geo = dict(stride=stride, pads=pads, form=form, num=num)
    dx = F.deconv2d_dx(kernel, g.astype(kernel.dtype), in_size=tuple(x.shape[1:3]), **geo)
    dk = F.deconv2d_dk(x, g.astype(x.dtype), ksize=tuple(kernel.shape[:2]), **geo)
    return dx.astype(x.dtype), dk.astype(kernel.dtype)


_deconv2d_vjp.defvjp(_deconv2d_vjp_fwd, _deconv2d_vjp_bwd)


def _float_operands(names: tuple[str, str], *arrays: Any) -> tuple[jax.Array, ...]:
    """The operands in one float dtype: the SPEC §4 result dtype of the floating ones, else JAX's
    default float. NumPy (and list) operands are converted by NumPy, so 64-bit ints and
    non-native byte orders never reach JAX (which would wrap or reject them)."""
    arrays = tuple(a if hasattr(a, "dtype") and hasattr(a, "shape") else np.asarray(a) for a in arrays)
    dtypes = [geometry.check_dtype(n, np.dtype(a.dtype)) for n, a in zip(names, arrays, strict=True)]
    floats = [dt for dt in dtypes if dt.kind == "f"]
    dtype = geometry.result_dtype(*floats) if floats else np.dtype(jnp.result_type(float))
    if dtype == np.float64 and not jax.config.jax_enable_x64:
        wide = [n for n, dt in zip(names, dtypes, strict=True) if dt == np.float64]
        raise TypeError(f"{', '.join(wide)} {'is' if len(wide) == 1 else 'are'} float64; {X64_HELP}")
    return tuple(jnp.asarray(a.astype(dtype) if isinstance(a, np.ndarray) else a).astype(dtype) for a in arrays)


def deconv2d_fn(
    x: Any,
    kernel: Any,
    stride: StrideLike = 1,
    padding: PaddingLike = "SAME",
    *,
    precision: str = "highest",
    formulation: str = "auto",
) -> jax.Array:
    """Differentiable SPEC §3 ``deconv2d`` for JAX code: x ``(N,H,W,Ci)``, kernel ``(kh,kw,Ci,Co)``
    → ``(N,Ho,Wo,Co)``.

    ``jax.grad`` gives this backend's ``dX``/``dK`` (``custom_vjp``), so differentiating never
    asks XLA for the gradient of a transposed convolution. Works under ``jit`` and ``vmap``
    (shapes inside are the per-example rank-4 ones); stride and padding are static.
    """
    x, kernel = _float_operands(("x", "kernel"), x, kernel)
    g = geometry.check_deconv2d(x, kernel, stride, padding)
    form = _form_for(formulation, g.batch, g.out_size, g.kernel_size, (g.in_channels, g.out_channels), g.stride)
    return _deconv2d_vjp(x, kernel, g.stride, g.pads, form, PRECISION_MODES[precision][0])


def deconv2d_dk_fn(
    x: Any,
    d_out: Any,
    kernel_size: StrideLike,
    stride: StrideLike = 1,
    padding: PaddingLike = "SAME",
    *,
    precision: str = "highest",
    formulation: str = "auto",
) -> jax.Array:
    """SPEC §3 ``dK`` for JAX code (traceable): x ``(N,H,W,Ci)``, d_out ``(N,Ho,Wo,Co)`` → ``(kh,kw,Ci,Co)``."""
    x, d_out = _float_operands(("x", "d_out"), x, d_out)
    g = geometry.check_deconv2d_dk(x, d_out, kernel_size, stride, padding)
    form = _form_for(formulation, g.batch, g.out_size, g.kernel_size, (g.in_channels, g.out_channels), g.stride)
    num = PRECISION_MODES[precision][0]
    return F.deconv2d_dk(x, d_out, ksize=g.kernel_size, stride=g.stride, pads=g.pads, form=form, num=num)


def deconv2d_dx_fn(
    kernel: Any,
    d_out: Any,
    stride: StrideLike = 1,
    padding: PaddingLike = "SAME",
    *,
    input_shape: Sequence[int] | None = None,
    precision: str = "highest",
    formulation: str = "auto",
) -> jax.Array:
    """SPEC §3 ``dX`` for JAX code (traceable): kernel ``(kh,kw,Ci,Co)``, d_out ``(N,Ho,Wo,Co)`` → ``(N,H,W,Ci)``."""
    kernel, d_out = _float_operands(("kernel", "d_out"), kernel, d_out)
    g = geometry.check_deconv2d_dx(kernel, d_out, stride, padding, input_shape)
    form = _form_for(formulation, g.batch, g.out_size, g.kernel_size, (g.in_channels, g.out_channels), g.stride)
    num = PRECISION_MODES[precision][0]
    return F.deconv2d_dx(kernel, d_out, in_size=g.in_size, stride=g.stride, pads=g.pads, form=form, num=num)
