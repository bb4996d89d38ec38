"""Upstream as a backend: ngc-learn's own ``ngcconv`` functions, called the way its
``TraceSTDPDeconvSynapse`` calls them, so upstream runs through the same harness and benchmarks.

``get_backend("ngclearn")`` needs ngclearn installed (else it is unavailable, with the reason).
Results are ``jax.Array``. Where upstream departs from SPEC:

- **Supported subset.** ngc-learn takes one int stride and the strings ``"SAME"``/``"VALID"``
  and its synapse assumes square maps and kernels. The adapter receives explicit pads (the
  interface normalises them) and maps them back to ``"SAME"``/``"VALID"`` when they are exactly
  those modes' pads; anything else (anisotropic stride, rectangular map or kernel, other
  explicit or negative pads) raises ``NotImplementedError`` naming the reason. The subset is
  declared (:meth:`NgclearnBackend.unsupported`): the conformance harness reports a case as
  unsupported only outside it.
- **dK shape correction.** Upstream's ``calc_dK_deconv`` trims the input by a ``delta_shape``
  that the synapse infers once at construction (``_init``: a ``_calc_dK_deconv`` with the
  default ``"SAME"`` padding on zeros); the adapter infers it the same way (shapes only).
- **Precision.** ngc-learn passes no ``precision``, so on NVIDIA GPUs it would run float32 at
  TF32. The adapter calls it under ``jax.default_matmul_precision("highest")`` so it is compared
  at the same precision as our backends (SPEC §4); on CPU this changes nothing.
- **Dtypes.** Inputs are cast to the SPEC §4 result dtype before the call (upstream itself
  computes in whatever dtype it is given); float64 needs ``jax_enable_x64``, as for ``"jax"``.
- **The STDP step.** ``stdp_step`` is upstream's ``advance_state``, ``evolve`` and
  ``backtransmit`` jitted as one whole step, as ngc-learn's compiled processes run a model;
  ``stdp_update`` alone is one compiled call, as ngcsimlib compiles ``evolve``.

On every square SAME/VALID configuration tried (maps 1-7, kernels 1-6, strides 1-4) upstream's
results agree with the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from convstdp import geometry
from convstdp.backends import BackendUnavailable, composed_step

Pair = tuple[int, int]
Pads = tuple[Pair, Pair]

_UNSUPPORTED = "unsupported by upstream (ngclearn ngcconv)"
_STDP = ("kernel", "pre_spike", "pre_trace", "post_spike", "post_trace")


def upstream_padding(kernel_size: Pair, stride: Pair, pads: Pads, in_size: Pair) -> tuple[int, str]:
    """``(stride, "SAME" | "VALID")`` as ngclearn takes them, or ``NotImplementedError`` saying why not."""
    if stride[0] != stride[1]:
        raise NotImplementedError(f"{_UNSUPPORTED}: it takes one int stride, got per-axis stride {stride}")
    if kernel_size[0] != kernel_size[1]:
        raise NotImplementedError(f"{_UNSUPPORTED}: it assumes square kernels, got {kernel_size}")
    if in_size[0] != in_size[1]:
        raise NotImplementedError(f"{_UNSUPPORTED}: it assumes square input maps, got {in_size}")
    for mode in ("SAME", "VALID"):
        if geometry.resolve_pads(kernel_size, stride, mode) == pads:
            return stride[0], mode
    raise NotImplementedError(
        f"{_UNSUPPORTED}: it takes only 'SAME' or 'VALID' padding; pads {pads} are neither "
        f"for kernel {kernel_size} and stride {stride}"
    )


class NgclearnBackend:
    """ngc-learn's ``ngcconv`` behind the SPEC §6 interface (square maps and kernels, int stride,
    SAME/VALID only; see the module docstring)."""

    name = "ngclearn"
    precision = "highest"
    unit_roundoff = None

    def __init__(self) -> None:
        from importlib.metadata import version

        import jax
        from ngclearn.components.synapses.convolution import ngcconv

        self._jax = jax
        self._ng = ngcconv
        self.version = f"ngclearn {version('ngclearn')} (jax {jax.__version__})"
        self._update, self._step = _make_update(jax, ngcconv)

    def devices(self) -> list[str]:
        from convstdp.fast._jax_common import device_names

        return device_names()

    def unsupported(self, g: geometry.Geometry) -> str | None:
        """The declared subset: why ``g`` lies outside what upstream supports, or ``None`` inside it.

        The conformance harness reports a case as unsupported only when this says so; inside the
        subset every operator must run and agree.
        """
        try:
            upstream_padding(g.kernel_size, g.stride, g.pads, g.in_size)
        except NotImplementedError as err:
            return str(err)
        return None

    def _cast(self, names: Sequence[str], arrays: Sequence[Any]) -> list[Any]:
        from convstdp.fast._jax_common import host_safe, result_dtype

        dtype = result_dtype(names, arrays)
        jnp = self._jax.numpy
        return [jnp.asarray(host_safe(a, dtype)).astype(dtype) for a in arrays]

    def _highest(self):
        return self._jax.default_matmul_precision("highest")

    def deconv2d(self, x: Any, kernel: Any, *, stride: Pair, padding: Pads) -> Any:
        """ngcconv.deconv2d (``lax.conv_transpose`` with ``"SAME"``/``"VALID"``)."""
        s, mode = upstream_padding(tuple(kernel.shape[:2]), stride, padding, tuple(x.shape[1:3]))
        x, kernel = self._cast(("x", "kernel"), (x, kernel))
        with self._highest():
            return self._ng.deconv2d(x, kernel, stride_size=s, padding=mode)

    def deconv2d_dk(self, x: Any, d_out: Any, *, kernel_size: Pair, stride: Pair, padding: Pads) -> Any:
        """ngcconv.calc_dK_deconv with the synapse's inferred ``delta_shape``."""
        s, mode = upstream_padding(kernel_size, stride, padding, tuple(x.shape[1:3]))
        x, d_out = self._cast(("x", "d_out"), (x, d_out))
        delta = _delta_shape(self._ng, tuple(x.shape), tuple(d_out.shape), s, kernel_size[0], str(x.dtype))
        with self._highest():
            return self._ng.calc_dK_deconv(
                x, d_out, delta_shape=delta, stride_size=s, out_size=kernel_size[0], padding=mode
            )

    def deconv2d_dx(self, kernel: Any, d_out: Any, *, stride: Pair, padding: Pads, input_shape: Sequence[int]) -> Any:
        """ngcconv.calc_dX_deconv (the synapse's ``backtransmit``)."""
        s, mode = upstream_padding(tuple(kernel.shape[:2]), stride, padding, (int(input_shape[1]), int(input_shape[2])))
        kernel, d_out = self._cast(("kernel", "d_out"), (kernel, d_out))
        with self._highest():
            # upstream ignores delta_shape here; the synapse passes its x_delta_shape
            return self._ng.calc_dX_deconv(kernel, d_out, delta_shape=(0, 0), stride_size=s, padding=mode)

    def _evolve_args(self, arrays: Sequence[Any], stride: Pair, padding: Pads, params: Any) -> dict[str, Any]:
        """The static arguments of upstream's ``evolve`` for (kernel, pre_spike, ..., post_trace)."""
        kernel, pre, _, post, _ = arrays
        ksize = tuple(kernel.shape[:2])
        s, mode = upstream_padding(ksize, stride, padding, tuple(pre.shape[1:3]))
        delta = _delta_shape(self._ng, tuple(pre.shape), tuple(post.shape), s, ksize[0], str(kernel.dtype))
        return dict(stride=s, mode=mode, k=ksize[0], delta=delta, decay=params.w_decay > 0, bound=params.w_bound > 0)

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
        params: geometry.StdpParams,
    ) -> tuple[Any, Any]:
        """The synapse's ``evolve`` (``_compute_update`` plus decay and bound), one compiled call."""
        arrays = self._cast(_STDP, (kernel, pre_spike, pre_trace, post_spike, post_trace))
        with self._highest():
            return self._update(*arrays, tuple(params), **self._evolve_args(arrays, stride, padding, params))

    def stdp_step(self, kernel: Any, x: Any, *stdp: Any, stride: Pair, padding: Pads, params: Any) -> tuple[Any, ...]:
        """The whole synapse step (``advance_state``, ``evolve``, ``backtransmit``) as one compiled call,
        as ngc-learn's jitted processes run it; operators apart when ``y``'s dtype differs from the update's."""
        from convstdp.fast._jax_common import result_dtype

        arrays = [kernel, *stdp]
        if result_dtype(("x", "kernel"), (x, kernel)) != result_dtype(_STDP, arrays):
            return composed_step(self, kernel, x, *stdp, stride=stride, padding=padding, params=params)
        kernel, x, *rest = self._cast(("kernel", "x", *_STDP[1:]), (kernel, x, *stdp))
        with self._highest():
            return self._step(
                kernel, x, *rest, tuple(params), **self._evolve_args([kernel, *rest], stride, padding, params)
            )


@lru_cache(maxsize=256)
def _delta_shape(ng: Any, x_shape: tuple, d_shape: tuple, stride: int, k: int, dtype: str) -> Pair:
    """The synapse's ``_init``: how far ``_calc_dK_deconv`` (default ``"SAME"``) misses the kernel size."""
    import jax

    x = jax.ShapeDtypeStruct(x_shape, dtype)
    d = jax.ShapeDtypeStruct(d_shape, dtype)
    dk = jax.eval_shape(lambda a, b: ng._calc_dK_deconv(a, b, stride_size=stride, out_size=k), x, d)
    return abs(dk.shape[0] - k), abs(dk.shape[1] - k)


def _make_update(jax: Any, ng: Any) -> tuple[Any, Any]:
    """The synapse's ``evolve`` and its whole step (``advance_state``, ``evolve``, ``backtransmit``),
    each one ``jax.jit`` of upstream's functions, as ngc-learn's compiled processes run them."""
    jnp = jax.numpy
    static = ("stride", "mode", "k", "delta", "decay", "bound")

    def evolve(kernel, pre_spike, pre_trace, post_spike, post_trace, scalars, *, stride, mode, k, delta, decay, bound):
        a_plus, a_minus, eta, target, w_decay, w_bound = (jnp.asarray(v, kernel.dtype) for v in scalars)
        kw = dict(delta_shape=delta, stride_size=stride, out_size=k, padding=mode)
        dw_ltp = ng.calc_dK_deconv(pre_trace - target, post_spike * a_plus, **kw)
        dw_ltd = -ng.calc_dK_deconv(pre_spike, post_trace * a_minus, **kw)
        dw = dw_ltp + dw_ltd
        if decay:
            w = kernel + dw * eta - kernel * w_decay
        else:
            w = kernel + dw * eta
        if bound:
            w = jnp.clip(w, 0.01, w_bound - 0.01)
        return w, dw

    def step(kernel, x, pre_spike, pre_trace, post_spike, post_trace, scalars, *, stride, mode, **kw):
        y = ng.deconv2d(x, kernel, stride_size=stride, padding=mode)
        w, dw = evolve(kernel, pre_spike, pre_trace, post_spike, post_trace, scalars, stride=stride, mode=mode, **kw)
        dx = ng.calc_dX_deconv(w, post_spike, delta_shape=(0, 0), stride_size=stride, padding=mode)
        return y, w, dw, dx

    return jax.jit(evolve, static_argnames=static), jax.jit(step, static_argnames=static)


def create_backend() -> NgclearnBackend:
    """Registry factory for ``"ngclearn"``: unavailable, with the reason, without ngclearn."""
    try:
        return NgclearnBackend()
    except ImportError as err:
        raise BackendUnavailable(f"ngclearn is not installed ({err}); pip install ngclearn") from err
