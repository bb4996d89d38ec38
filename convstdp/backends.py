"""The one backend interface (SPEC §6): protocol, registry, selection.

A backend *implementation* is any object with the four operators of :class:`BackendImpl`.
:func:`get_backend` wraps it in :class:`Backend`, which validates every call once, through
:mod:`convstdp.geometry`, and hands the implementation normalised arguments:

- ``stride`` as ``(sh, sw)``; ``padding`` as explicit pads ``((lo_h, hi_h), (lo_w, hi_w))``;
- ``kernel_size`` as ``(kh, kw)``; ``input_shape`` as the full ``(N, H, W, Ci)``;
- the STDP scalars as one :class:`~convstdp.geometry.StdpParams` (``params``), floats by name.

So an implementation writes only the math, for explicit pads. It must return the SPEC §4 result
dtype itself and never modify its inputs: the wrapper does not paper over either, because the
conformance harness is there to notice.

Factories are callables (or ``"package.module:factory"`` strings, imported lazily) that return an
implementation or raise :class:`BackendUnavailable` / ``ImportError`` with the reason. An
``ImportError`` means "unavailable" only when a library outside convstdp is missing; one for a
module of convstdp itself (or one that names no module and is raised from convstdp's code) is a
bug, raised as :class:`BackendError` (SPEC §7).
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
    "BackendError",
    "available_backends",
    "get_backend",
    "register_backend",
    "registered_backends",
    "default_backends",
    "checked_precision",
    "is_baseline",
    "ENV_VAR",
]

ENV_VAR = "CONVSTDP_BACKEND"


class BackendUnavailable(RuntimeError):
    """A backend cannot be used here; the message says why (missing library, no device...)."""


class BackendError(RuntimeError):
    """A backend failed to load because of a bug in convstdp (e.g. an ImportError from its own
    modules), not because something is missing on this machine."""


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
        params: geometry.StdpParams,
    ) -> tuple[Any, Any]: ...


def composed_step(
    impl: BackendImpl, kernel: Any, x: Any, *stdp: Any, stride: Any, padding: Any, params: geometry.StdpParams
) -> tuple[Any, Any, Any, Any]:
    """SPEC §8 step from an implementation's three operators (resolved geometry): ``(y, W', dW, dX)``,
    ``stdp = (pre_spike, pre_trace, post_spike, post_trace)``. Backends fall back to it where their
    fused step cannot serve (mixed dtypes: each operator keeps its own SPEC §4 result dtype)."""
    y = impl.deconv2d(x, kernel, stride=stride, padding=padding)
    w_new, dw = impl.stdp_update(kernel, *stdp, stride=stride, padding=padding, params=params)
    dx = impl.deconv2d_dx(w_new, stdp[2], stride=stride, padding=padding, input_shape=tuple(x.shape))
    return y, w_new, dw, dx


def _array(name: str, v: Any) -> Any:
    """Arrays (NumPy, JAX, anything with shape and dtype) pass through; lists become ndarrays.

    A ragged or otherwise unconvertible value is a ``ValueError`` naming the argument (dtypes are
    judged later, by the shared checks)."""
    if type(v) is np.ndarray or (hasattr(v, "shape") and hasattr(v, "dtype")):
        return v
    try:
        return np.asarray(v)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"{name} must be an array or a regular nested list of numbers, got {type(v).__name__}: {err}"
        ) from None


def _stdp_arrays(kernel: Any, pre_spike: Any, pre_trace: Any, post_spike: Any, post_trace: Any) -> list[Any]:
    return [
        _array("kernel", kernel),
        _array("pre_spike", pre_spike),
        _array("pre_trace", pre_trace),
        _array("post_spike", post_spike),
        _array("post_trace", post_trace),
    ]


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
        x, kernel = _array("x", x), _array("kernel", kernel)
        g = geometry.check_deconv2d(x, kernel, stride, padding)
        return self.impl.deconv2d(x, kernel, stride=g.stride, padding=g.pads)

    def deconv2d_dk(
        self, x: Any, d_out: Any, *, kernel_size: StrideLike, stride: StrideLike = 1, padding: PaddingLike = "SAME"
    ) -> Any:
        """x ``(N,H,W,Ci)``, d_out ``(N,Ho,Wo,Co)`` → dK ``(kh,kw,Ci,Co)`` (SPEC §3)."""
        x, d_out = _array("x", x), _array("d_out", d_out)
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
        kernel, d_out = _array("kernel", kernel), _array("d_out", d_out)
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
        arrays = _stdp_arrays(kernel, pre_spike, pre_trace, post_spike, post_trace)
        g = geometry.check_stdp_update(*arrays, stride, padding)
        params = geometry.check_stdp_params(
            A_plus=A_plus, A_minus=A_minus, eta=eta, pretrace_target=pretrace_target, w_decay=w_decay, w_bound=w_bound
        )
        return self.impl.stdp_update(*arrays, stride=g.stride, padding=g.pads, params=params)

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
        arrays = _stdp_arrays(kernel, pre_spike, pre_trace, post_spike, post_trace)
        x = _array("x", x)
        g = geometry.check_stdp_step(arrays[0], x, *arrays[1:], stride, padding)
        params = geometry.check_stdp_params(
            A_plus=A_plus, A_minus=A_minus, eta=eta, pretrace_target=pretrace_target, w_decay=w_decay, w_bound=w_bound
        )
        fused = getattr(self.impl, "stdp_step", None)
        if callable(fused):
            return fused(arrays[0], x, *arrays[1:], stride=g.stride, padding=g.pads, params=params)
        return composed_step(self.impl, arrays[0], x, *arrays[1:], stride=g.stride, padding=g.pads, params=params)

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
_baselines: set[str] = {"ngclearn", "reference"}  # what benchmark reports compare the others with
_precision: dict[str, str] = {}  # registered name -> the precision it is checked at (default "highest")
_instances: dict[str, Backend] = {}
_failures: dict[str, str] = {}  # name -> why it is unavailable
_errors: dict[str, str] = {}  # name -> the convstdp bug that stopped it from loading
_lock = threading.RLock()


def register_backend(
    name: str, factory: Factory | str, *, default: bool = True, precision: str = "highest", baseline: bool = False
) -> None:
    """Register ``factory`` (a callable returning an implementation, or ``"pkg.mod:factory"``) as ``name``.

    ``default=False`` marks an opt-in backend (a reduced-precision mode, say): listed and
    selectable by name, but left out of :func:`default_backends`. ``precision`` is what the
    conformance harness checks it at (a row of its tolerance table: ``"highest"``, ``"tf32"``,
    ``"bf16"``...): the registry says it, never the object under test (SPEC §4). ``baseline``
    marks a peer the benchmark compares the others with (PyTorch, upstream ngc-learn).
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
        _precision[name] = str(precision).lower()
        if baseline:
            _baselines.add(name)
        else:
            _baselines.discard(name)
        _instances.pop(name, None)
        _failures.pop(name, None)
        _errors.pop(name, None)


def is_baseline(name: str) -> bool:
    """Whether ``name`` is a baseline peer (benchmarks give "x vs baseline" columns for it)."""
    return name in _baselines


def checked_precision(name: str) -> str:
    """The precision the backend registered as ``name`` is checked at (``"highest"`` unless registered otherwise)."""
    return _precision.get(name, "highest")


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


def _ours(module: str | None) -> bool:
    return module is not None and module.partition(".")[0] == "convstdp"


def _import_bug(err: ImportError) -> bool:
    """An ImportError that is convstdp's own bug: the missing module is one of convstdp's, or no
    module is named and the error was raised in convstdp's code (or where, cannot be told)."""
    if err.name is not None:
        return _ours(err.name)
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is None or _ours(tb.tb_frame.f_globals.get("__name__"))


def _build(name: str, factory: Factory | str) -> Backend:
    try:
        fn = _load_factory(factory) if isinstance(factory, str) else factory
        impl = fn()
    except BackendUnavailable:
        raise
    except ImportError as err:
        if _import_bug(err):
            where = str(err) or f"No module named {err.name!r}"
            raise BackendError(f"ImportError: {where} (a bug in convstdp, not a missing library)") from err
        raise BackendUnavailable(f"{err.name or 'a required library'} is not installed ({err})") from err
    return Backend(name, impl)


def get_backend(name: str | None = None) -> Backend:
    """The backend called ``name``; without one, ``$CONVSTDP_BACKEND``, else ``"reference"``.

    ``name`` is a registered name or ``"package.module:factory"``. Raises
    :class:`BackendUnavailable` (with the reason), :class:`BackendError` when loading it hits a
    bug in convstdp, ``ValueError`` for an unknown name and ``TypeError`` for a non-string one.
    """
    source = ""
    if name is None:
        env = os.environ.get(ENV_VAR)
        name, source = (env, f" (from the environment variable {ENV_VAR})") if env else ("reference", "")
    elif not isinstance(name, str):
        raise TypeError(
            f"name must be a backend name (str) or 'package.module:factory', got {name!r} of type {type(name).__name__}"
        )
    with _lock:
        if name in _instances:
            return _instances[name]
        if name in _errors:
            raise BackendError(f"backend {name!r}{source} failed to load: {_errors[name]}")
        if name in _failures:
            raise BackendUnavailable(f"backend {name!r}{source} is unavailable: {_failures[name]}")
        if name in _registry:
            factory: Factory | str = _registry[name]
        elif ":" in name:
            factory = name
        else:
            raise ValueError(
                f"unknown backend {name!r}{source}; registered: {', '.join(_registry)} "
                "(or give 'package.module:factory')"
            )
        try:
            backend = _build(name, factory)
        except BackendUnavailable as err:
            _failures[name] = str(err)
            raise BackendUnavailable(f"backend {name!r}{source} is unavailable: {err}") from err
        except BackendError as err:
            _errors[name] = str(err)
            raise BackendError(f"backend {name!r}{source} failed to load: {err}") from err
        _instances[name] = backend
        return backend


def available_backends() -> dict[str, str]:
    """``{name: "ok" | reason it is unavailable | "error: ..."}`` for every registered backend.

    ``"error: "`` starts the status of a backend that failed to load because of a bug in
    convstdp (:class:`BackendError`), as opposed to something missing on this machine.
    """
    status = {}
    for name in list(_registry):
        try:
            get_backend(name)
            status[name] = "ok"
        except BackendUnavailable:
            status[name] = _failures.get(name, "unavailable")
        except BackendError:
            status[name] = f"error: {_errors.get(name, 'failed to load')}"
        except Exception as err:  # a broken factory is reported, not fatal to the listing
            status[name] = f"failed to load: {type(err).__name__}: {err}"
    return status


# Numba with its path choice pinned (conformance of each path on every case; measurements).
register_backend("numba-dense", "convstdp.fast.numba:create_dense_backend", default=False)
register_backend("numba-sparse", "convstdp.fast.numba:create_sparse_backend", default=False)
# Reduced-precision JAX modes (SPEC §4): selectable by name, never run unless asked for.
register_backend("jax-tf32", "convstdp.fast.jax:create_tf32_backend", default=False, precision="tf32")
register_backend("jax-bf16", "convstdp.fast.jax:create_bf16_backend", default=False, precision="bf16")
register_backend("jax-sharded", "convstdp.fast.jax_sharded:create_backend", default=False)
register_backend("jax-sharded-det", "convstdp.fast.jax_sharded:create_deterministic_backend", default=False)
# PyTorch: a baseline peer, run only when named (a plain torch install is a multi-GB download).
register_backend("torch", "convstdp.fast.torch:create_backend", default=False, baseline=True)
