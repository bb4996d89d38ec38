"""The one backend interface (SPEC §6): protocol, registry, selection.

A backend *implementation* is any object with the four operators of :class:`BackendImpl`.
:func:`get_backend` wraps it in :class:`Backend`, which validates every call once, through
:mod:`convstdp.geometry`, and hands the implementation normalised arguments:

- ``stride`` as ``(sh, sw)``; ``padding`` as explicit pads ``((lo_h, hi_h), (lo_w, hi_w))``;
- ``kernel_size`` as ``(kh, kw)``; ``input_shape`` as the full ``(N, H, W, Ci)``;
- the STDP scalars as ``float``.

So an implementation writes only the math, for explicit pads. It must return the SPEC §4 result
dtype itself and never modify its inputs: the wrapper does not paper over either, because the
conformance harness is there to notice.

Factories are callables (or ``"package.module:factory"`` strings, imported lazily) that return an
implementation or raise :class:`BackendUnavailable` / ``ImportError`` with the reason.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from convstdp import geometry
from convstdp.geometry import PaddingLike, StrideLike

__all__ = [
    "BackendImpl",
    "Backend",
    "BackendUnavailable",
    "available_backends",
    "get_backend",
    "register_backend",
    "registered_backends",
    "default_backends",
    "ENV_VAR",
]

ENV_VAR = "CONVSTDP_BACKEND"


class BackendUnavailable(RuntimeError):
    """A backend cannot be used here; the message says why (missing library, no device...)."""


@runtime_checkable
class BackendImpl(Protocol):
    """What a backend author writes. Shapes: x ``(N,H,W,Ci)``, kernel ``(kh,kw,Ci,Co)``, y ``(N,Ho,Wo,Co)``.

    Optional attributes: ``version`` (library version string), ``devices()`` (list of device
    names), ``precision`` (``"highest"`` unless a reduced-precision mode such as ``"tf32"`` or
    ``"bf16"``; the harness then applies that mode's declared tolerance).
    """

    def deconv2d(self, x: Any, kernel: Any, *, stride: Any, padding: Any) -> Any: ...

    def deconv2d_dk(self, x: Any, d_out: Any, *, kernel_size: Any, stride: Any, padding: Any) -> Any: ...

    def deconv2d_dx(self, kernel: Any, d_out: Any, *, stride: Any, padding: Any, input_shape: Any) -> Any: ...

    def stdp_update(
        self,
        kernel: Any,
        pre_spike: Any,
        pre_trace: Any,
        post_spike: Any,
        post_trace: Any,
        *,
        stride: Any,
        padding: Any,
        A_plus: float,
        A_minus: float,
        eta: float,
        pretrace_target: float,
        w_decay: float,
        w_bound: float,
    ) -> tuple[Any, Any]: ...


def _array(v: Any) -> Any:
    """Arrays (NumPy, JAX, anything with shape and dtype) pass through; lists become ndarrays."""
    if hasattr(v, "shape") and hasattr(v, "dtype"):
        return v
    return np.asarray(v)


class Backend:
    """A validated backend: the SPEC §6 interface around one implementation."""

    def __init__(self, name: str, impl: Any) -> None:
        missing = [
            m for m in ("deconv2d", "deconv2d_dk", "deconv2d_dx", "stdp_update") if not callable(getattr(impl, m, None))
        ]
        if missing:
            raise TypeError(f"backend {name!r} ({type(impl).__name__}) lacks the operator(s) {', '.join(missing)}")
        self.name = name
        self.impl = impl

    def __repr__(self) -> str:
        return f"<convstdp backend {self.name!r} ({type(self.impl).__module__}.{type(self.impl).__name__})>"

    @property
    def version(self) -> str:
        return str(getattr(self.impl, "version", ""))

    @property
    def precision(self) -> str:
        return str(getattr(self.impl, "precision", "highest"))

    def devices(self) -> list[str]:
        fn = getattr(self.impl, "devices", None)
        return list(fn()) if callable(fn) else ["cpu"]

    # -- the four operators -------------------------------------------------------------------

    def deconv2d(self, x: Any, kernel: Any, *, stride: StrideLike = 1, padding: PaddingLike = "SAME") -> Any:
        """x ``(N,H,W,Ci)``, kernel ``(kh,kw,Ci,Co)`` → y ``(N,Ho,Wo,Co)`` (SPEC §3)."""
        x, kernel = _array(x), _array(kernel)
        g = geometry.check_deconv2d(x, kernel, stride, padding)
        return self.impl.deconv2d(x, kernel, stride=g.stride, padding=g.pads)

    def deconv2d_dk(
        self, x: Any, d_out: Any, *, kernel_size: StrideLike, stride: StrideLike = 1, padding: PaddingLike = "SAME"
    ) -> Any:
        """x ``(N,H,W,Ci)``, d_out ``(N,Ho,Wo,Co)`` → dK ``(kh,kw,Ci,Co)`` (SPEC §3)."""
        x, d_out = _array(x), _array(d_out)
        g = geometry.check_deconv2d_dk(x, d_out, kernel_size, stride, padding)
        return self.impl.deconv2d_dk(x, d_out, kernel_size=g.kernel_size, stride=g.stride, padding=g.pads)

    def deconv2d_dx(
        self,
        kernel: Any,
        d_out: Any,
        *,
        stride: StrideLike = 1,
        padding: PaddingLike = "SAME",
        input_shape: Sequence[int] | None = None,
    ) -> Any:
        """kernel ``(kh,kw,Ci,Co)``, d_out ``(N,Ho,Wo,Co)`` → dX ``(N,H,W,Ci)`` (SPEC §3)."""
        kernel, d_out = _array(kernel), _array(d_out)
        g = geometry.check_deconv2d_dx(kernel, d_out, stride, padding, input_shape)
        return self.impl.deconv2d_dx(kernel, d_out, stride=g.stride, padding=g.pads, input_shape=g.x_shape)

    def stdp_update(
        self,
        kernel: Any,
        pre_spike: Any,
        pre_trace: Any,
        post_spike: Any,
        post_trace: Any,
        *,
        stride: StrideLike = 1,
        padding: PaddingLike = "SAME",
        A_plus: float,
        A_minus: float,
        eta: float = 0.0,
        pretrace_target: float = 0.0,
        w_decay: float = 0.0,
        w_bound: float = 0.0,
    ) -> tuple[Any, Any]:
        """Trace-STDP step → ``(W', dW)``, both ``(kh,kw,Ci,Co)``; ``pre_*`` x-shaped, ``post_*`` y-shaped."""
        arrays = [_array(v) for v in (kernel, pre_spike, pre_trace, post_spike, post_trace)]
        g = geometry.check_stdp_update(*arrays, stride, padding)
        scalars = geometry.check_stdp_scalars(
            A_plus=A_plus, A_minus=A_minus, eta=eta, pretrace_target=pretrace_target, w_decay=w_decay, w_bound=w_bound
        )
        return self.impl.stdp_update(*arrays, stride=g.stride, padding=g.pads, **scalars)

    def stdp_step(
        self,
        kernel: Any,
        x: Any,
        pre_spike: Any,
        pre_trace: Any,
        post_spike: Any,
        post_trace: Any,
        *,
        stride: StrideLike = 1,
        padding: PaddingLike = "SAME",
        A_plus: float,
        A_minus: float,
        eta: float = 0.0,
        pretrace_target: float = 0.0,
        w_decay: float = 0.0,
        w_bound: float = 0.0,
    ) -> tuple[Any, Any, Any, Any]:
        """One synapse step as the seed runs it (SPEC §8): advance, evolve, backtransmit.

        Returns ``(y, W', dW, dX)``: ``y = deconv2d(x, W)``, ``(W', dW) = stdp_update(W, ...)``,
        ``dX = deconv2d_dx(W', post_spike)`` (the seed back-transmits through the updated
        filters). An implementation may provide a fused ``stdp_step`` with the normalised
        arguments; otherwise the three operators are composed.
        """
        arrays = [_array(v) for v in (kernel, pre_spike, pre_trace, post_spike, post_trace)]
        x = _array(x)
        g = geometry.check_stdp_step(arrays[0], x, *arrays[1:], stride, padding)
        params = dict(
            stride=g.stride,
            padding=g.pads,
            **geometry.check_stdp_scalars(
                A_plus=A_plus,
                A_minus=A_minus,
                eta=eta,
                pretrace_target=pretrace_target,
                w_decay=w_decay,
                w_bound=w_bound,
            ),
        )
        fused = getattr(self.impl, "stdp_step", None)
        if callable(fused):
            return fused(arrays[0], x, *arrays[1:], **params)
        y = self.impl.deconv2d(x, arrays[0], stride=g.stride, padding=g.pads)
        w_new, dw = self.impl.stdp_update(*arrays, **params)
        dx = self.impl.deconv2d_dx(w_new, arrays[3], stride=g.stride, padding=g.pads, input_shape=g.x_shape)
        return y, w_new, dw, dx

    # -- the seed's helpers, on top of the operators ------------------------------------------

    def backtransmit(
        self,
        kernel: Any,
        post_spike: Any,
        *,
        stride: StrideLike = 1,
        padding: PaddingLike = "SAME",
        input_shape: Sequence[int] | None = None,
    ) -> Any:
        """The seed's ``backtransmit``: ``dX(W, post_spike)`` → ``(N,H,W,Ci)``."""
        return self.deconv2d_dx(kernel, post_spike, stride=stride, padding=padding, input_shape=input_shape)

    def advance(
        self,
        x: Any,
        kernel: Any,
        *,
        stride: StrideLike = 1,
        padding: PaddingLike = "SAME",
        resist_scale: float = 1.0,
        bias: Any = 0.0,
    ) -> Any:
        """The seed's ``advance_state``: ``deconv2d(x, W) * resist_scale + bias`` → ``(N,Ho,Wo,Co)``."""
        y = self.deconv2d(x, kernel, stride=stride, padding=padding)
        out = y * geometry.check_scalar("resist_scale", resist_scale) + bias
        return out.astype(y.dtype)


# --------------------------------------------------------------------------------- registry

Factory = Callable[[], Any]

_BUILTIN: dict[str, str] = {
    "reference": "convstdp.reference:create_backend",
    "numba": "convstdp.fast.numba:create_backend",
    "jax": "convstdp.fast.jax:create_backend",
    "ngclearn": "convstdp.fast.ngclearn:create_backend",
}
_registry: dict[str, Factory | str] = dict(_BUILTIN)
_opt_in: set[str] = set()  # registered, but not part of "every available backend" runs
_instances: dict[str, Backend] = {}
_failures: dict[str, str] = {}
_lock = threading.RLock()


def register_backend(name: str, factory: Factory | str, *, default: bool = True) -> None:
    """Register ``factory`` (a callable returning an implementation, or ``"pkg.mod:factory"``) as ``name``.

    ``default=False`` marks an opt-in backend (a reduced-precision mode, say): listed and
    selectable by name, but left out of :func:`default_backends`.
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"backend name must be a non-empty string without ':', got {name!r}")
    if not (callable(factory) or (isinstance(factory, str) and ":" in factory)):
        raise TypeError(f"factory must be callable or a 'package.module:factory' string, got {factory!r}")
    with _lock:
        _registry[name] = factory
        if default:
            _opt_in.discard(name)
        else:
            _opt_in.add(name)
        _instances.pop(name, None)
        _failures.pop(name, None)


def default_backends() -> list[str]:
    """Available backends that run when the user names none (opt-in ones left out)."""
    return [n for n, status in available_backends().items() if status == "ok" and n not in _opt_in]


def registered_backends() -> list[str]:
    """Names of every registered backend, available or not."""
    return list(_registry)


def _load_factory(spec: str) -> Factory:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"backend spec must look like 'package.module:factory', got {spec!r}")
    module = importlib.import_module(module_name)
    try:
        factory = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r} (from backend spec {spec!r})") from None
    if not callable(factory):
        raise TypeError(f"{spec!r} is not callable")
    return factory


def _build(name: str, factory: Factory | str) -> Backend:
    try:
        fn = _load_factory(factory) if isinstance(factory, str) else factory
        impl = fn()
    except BackendUnavailable:
        raise
    except ImportError as err:
        raise BackendUnavailable(f"{err.name or 'a required library'} is not installed ({err})") from err
    return Backend(name, impl)


def get_backend(name: str | None = None) -> Backend:
    """The backend called ``name``; without one, ``$CONVSTDP_BACKEND``, else ``"reference"``.

    ``name`` is a registered name or ``"package.module:factory"``. Raises
    :class:`BackendUnavailable` (with the reason) or ``ValueError`` for an unknown name.
    """
    if name is None:
        name = os.environ.get(ENV_VAR) or "reference"
    with _lock:
        if name in _instances:
            return _instances[name]
        if name in _failures:
            raise BackendUnavailable(f"backend {name!r} is unavailable: {_failures[name]}")
        if name in _registry:
            factory: Factory | str = _registry[name]
        elif ":" in name:
            factory = name
        else:
            raise ValueError(
                f"unknown backend {name!r}; registered: {', '.join(_registry)} (or give 'package.module:factory')"
            )
        try:
            backend = _build(name, factory)
        except BackendUnavailable as err:
            _failures[name] = str(err)
            raise BackendUnavailable(f"backend {name!r} is unavailable: {err}") from err
        _instances[name] = backend
        return backend


def available_backends() -> dict[str, str]:
    """``{name: "ok" | reason it is unavailable}`` for every registered backend."""
    status = {}
    for name in list(_registry):
        try:
            get_backend(name)
            status[name] = "ok"
        except BackendUnavailable:
            status[name] = _failures.get(name, "unavailable")
        except Exception as err:  # a broken factory is reported, not fatal to the listing
            status[name] = f"failed to load: {type(err).__name__}: {err}"
    return status


# Reduced-precision JAX modes (SPEC §4): selectable by name, never run unless asked for.
register_backend("jax-tf32", "convstdp.fast.jax:create_tf32_backend", default=False)
register_backend("jax-bf16", "convstdp.fast.jax:create_bf16_backend", default=False)
