"""The seed as a component (SPEC §9): ngc-learn's ``TraceSTDPDeconvSynapse`` on any convstdp backend.

Same constructor, compartment names, shapes and method names as ngc-learn's synapse, so code
written against it reads the same; the math goes through :class:`convstdp.backends.Backend`
(validated once, by :mod:`convstdp.geometry`) and runs on whichever backend is chosen.

Decisions where ngc-learn's synapse is quirky (also listed by :meth:`TraceSTDPDeconvSynapse.help`):

- **padding.** ngc-learn's default ``padding=None`` cannot work there (``lax.conv_transpose``
  rejects it while the constructor infers shapes), so every working ngc-learn model passes it
  explicitly. The default here is ``"SAME"``; ``None`` is a ``ValueError``. Explicit pads
  ``((lo_h, hi_h), (lo_w, hi_w))`` are accepted too (SPEC §2).
- **biases.** ngc-learn's STDP synapse never gets a ``bias_init`` and holds the scalar ``0.0``;
  its base class would make ``(1, k)`` (``shape[1]``, the kernel width) where the output has
  ``Co`` channels. Here ``biases`` is ``(1, Co)``, zeros, broadcast over ``(N, Ho, Wo, Co)``;
  setting or loading a scalar, ``(Co,)`` or ``(1, Co)`` value broadcasts it to ``(1, Co)``
  (so ngc-learn's saved ``0.0`` loads).
- **maps and kernels.** ngc-learn assumes square maps (``x_size, x_size = x_shape`` silently
  takes the width) and square kernels; here ``x_shape = (H, W)`` and ``shape = (kh, kw, Ci, Co)``
  may be rectangular and ``stride`` may be ``(sh, sw)``.
- **resist_scale / g_conduct_factor.** ngc-learn 3.x renamed ``resist_scale`` to
  ``g_conduct_factor`` (the old name is deprecated there). Both are accepted; giving both with
  different values is a ``ValueError``.
- **eta.** As in ngc-learn, the ``eta`` compartment ``(1, 1)`` is the live learning rate (the
  argument is its initial value); ``evolve`` reads it, so it can be changed between steps.
- **reset.** Zeroes ``inputs``, ``outputs``, ``preSpike``, ``postSpike``, ``preTrace``,
  ``postTrace``, exactly ngc-learn's list; ``weights``, ``biases``, ``eta`` and the analytics
  ``dWeights``/``dInputs`` keep their values (ngc-learn's ``reset`` also only works compiled:
  it calls ``.get()`` on a tuple; this one works directly).
- **dtypes.** State is held in one float dtype (``dtype=``, float32 by default, ngc-learn's).
  Values set into a compartment are cast to it when NumPy's ``same_kind`` rule allows (bool,
  int, any float: what JAX does under its default 32-bit mode); complex, object or string
  values are a ``TypeError``.
- **filter_init.** ``None``: uniform on ``[0.025, 0.8)`` (ngc-learn's default distribution;
  NumPy draws from ``seed``). An array: the initial filters (copied; must have ``shape``). A
  callable ``f(shape, key)``: ngc-learn's ``DistributionGenerator`` convention; ``key`` is the
  JAX key ngc-learn would pass for ``key=PRNGKey(seed)`` (so the same draws as ngc-learn), or
  ``seed`` itself when JAX is not installed.

Bad input is rejected before any state changes: a compartment set to the wrong shape or dtype,
an unknown padding, a kernel that does not fit ``x_shape``, a malformed ``npz`` on ``load``.
"""

from __future__ import annotations

import os
import types
from collections.abc import Sequence
from typing import Any

import numpy as np

from convstdp import geometry
from convstdp.backends import ENV_VAR, Backend, BackendUnavailable, get_backend

__all__ = ["TraceSTDPDeconvSynapse", "Compartment", "COMPARTMENTS", "SAVE_KEYS", "default_backend_name"]

#: Compartment names, as ngc-learn names them.
COMPARTMENTS = (
    "inputs",
    "outputs",
    "weights",
    "biases",
    "eta",
    "preSpike",
    "preTrace",
    "postSpike",
    "postTrace",
    "dWeights",
    "dInputs",
)
#: The keys of ``<name>.npz``: ngc-learn's (every non-wired compartment, ``key`` included).
SAVE_KEYS = ("key", *COMPARTMENTS)
_RESET = ("inputs", "outputs", "preSpike", "postSpike", "preTrace", "postTrace")
_FASTEST = ("numba", "jax", "reference")


def default_backend_name() -> str:
    """``$CONVSTDP_BACKEND`` if set, else the fastest available of numba, jax, reference."""
    env = os.environ.get(ENV_VAR)
    if env:
        return env
    for name in _FASTEST:
        try:
            get_backend(name)
            return name
        except BackendUnavailable:
            continue
    return "reference"


def _resolve_backend(backend: Any) -> Backend:
    if backend is None:
        return get_backend(default_backend_name())
    if isinstance(backend, Backend):
        return backend
    if isinstance(backend, str):
        return get_backend(backend)
    raise TypeError(
        f"backend must be None, a backend name (str) or a convstdp Backend, got {backend!r} "
        f"of type {type(backend).__name__}"
    )


class Compartment:
    """One named piece of a synapse's state: ``get()`` the value, ``set(value)`` it (validated).

    ``set`` checks shape and dtype against the synapse and raises before storing anything.
    """

    __slots__ = ("_owner", "name", "_value")

    def __init__(self, owner: TraceSTDPDeconvSynapse, name: str, value: Any) -> None:
        self._owner = owner
        self.name = name
        self._value = value

    def get(self) -> Any:
        return self._value

    def set(self, value: Any) -> None:
        self._value = self._owner._checked(self.name, value)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._value.shape)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = np.asarray(self._value)
        return a if dtype is None else a.astype(dtype)

    def __repr__(self) -> str:
        return f"<Compartment {self._owner.name}:{self.name} shape={self.shape} dtype={self._value.dtype}>"


def _spec(shape: tuple[int, ...], dtype: np.dtype) -> Any:
    """A shape/dtype stand-in for :mod:`convstdp.geometry` checks (nothing allocated)."""
    return types.SimpleNamespace(shape=shape, dtype=dtype)


def _show(v: Any) -> str:
    return geometry._show(v)


class TraceSTDPDeconvSynapse:
    """Trace-STDP deconvolutional synapse (ngc-learn's, SPEC §9) on a convstdp backend.

    Args:
        name: the component's name (also the file name of :meth:`save`).
        shape: filters ``(kh, kw, Ci, Co)``.
        x_shape: one input map ``(H, W)`` (rectangular allowed), or ``(N, H, W, Ci)``, which must
            agree with ``batch_size`` and ``shape``.
        A_plus, A_minus: LTP and LTD strengths.
        eta: initial global learning rate (the ``eta`` compartment).
        pretrace_target: pre-synaptic trace target ``x_tar``.
        filter_init: ``None``, an array of ``shape``, or ``f(shape, key)`` (see the module notes).
        stride: int or ``(sh, sw)``.
        padding: ``"SAME"`` (default), ``"VALID"`` or ``((lo_h, hi_h), (lo_w, hi_w))``.
        resist_scale: output scale ``R`` (``g_conduct_factor`` is the same, ngc-learn 3.x's name).
        w_bound: if > 0, filters are clipped to ``[0.01, w_bound - 0.01]`` after each update.
        w_decay: if > 0, ``W' = W + eta dW - w_decay W``.
        batch_size: ``N`` (0 allowed: empty batches give empty results).
        backend: a backend name, a :class:`~convstdp.backends.Backend`, or ``None``:
            ``$CONVSTDP_BACKEND``, else the fastest available (numba, jax, reference).
        seed: seeds the initial filters; ``None`` draws one (kept in :attr:`seed`).
        g_conduct_factor: ngc-learn 3.x's name for ``resist_scale``.
        dtype: state dtype, float32 (default) or float64.

    State: compartments with ngc-learn's names and shapes (``inputs``, ``preSpike``,
    ``preTrace``, ``dInputs``: ``(N, H, W, Ci)``; ``outputs``, ``postSpike``, ``postTrace``:
    ``(N, Ho, Wo, Co)``; ``weights``, ``dWeights``: ``(kh, kw, Ci, Co)``; ``biases``:
    ``(1, Co)``; ``eta``: ``(1, 1)``). Values are NumPy arrays on NumPy backends and JAX
    arrays on the JAX backend.
    """

    def __init__(
        self,
        name: str,
        shape: Sequence[int],
        x_shape: Sequence[int],
        A_plus: float,
        A_minus: float,
        eta: float = 0.0,
        pretrace_target: float = 0.0,
        filter_init: Any = None,
        stride: geometry.StrideLike = 1,
        padding: geometry.PaddingLike = "SAME",
        resist_scale: float | None = None,
        w_bound: float = 0.0,
        w_decay: float = 0.0,
        batch_size: int = 1,
        backend: Any = None,
        seed: int | None = None,
        *,
        g_conduct_factor: float | None = None,
        dtype: Any = np.float32,
    ) -> None:
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
            raise ValueError(f"name must be a non-empty string usable as a file name, got {name!r}")
        self.name = name
        self.dtype = self._check_dtype(dtype)
        kernel_shape = self._check_shape(shape)
        batch = self._check_batch(batch_size)
        in_size = self._check_x_shape(x_shape, batch, kernel_shape)
        if padding is None:
            raise ValueError(
                "padding must be 'SAME', 'VALID' or ((lo_h, hi_h), (lo_w, hi_w)) of ints, got None "
                "(ngc-learn's default, which fails there too: its transposed convolution needs a padding)"
            )
        self.stride = geometry.normalize_stride(stride)
        self.padding = geometry.normalize_padding(padding)
        x_spec = _spec((batch, *in_size, kernel_shape[2]), self.dtype)
        try:
            g = geometry.check_deconv2d(x_spec, _spec(kernel_shape, self.dtype), self.stride, self.padding)
        except ValueError as err:
            raise ValueError(
                f"shape {_show(kernel_shape)} does not fit x_shape {_show(tuple(in_size))} with stride "
                f"{_show(self.stride)} and padding {geometry.padding_label(self.padding)}: {err}"
            ) from None
        self.geometry = g
        self.in_shape: tuple[int, int, int, int] = g.x_shape
        self.out_shape: tuple[int, int, int, int] = g.y_shape
        self.shape: tuple[int, int, int, int] = g.kernel_shape
        self.x_shape: tuple[int, int] = g.in_size

        if resist_scale is not None and g_conduct_factor is not None and resist_scale != g_conduct_factor:
            raise ValueError(
                f"resist_scale and g_conduct_factor name the same factor; got resist_scale={resist_scale!r} "
                f"and g_conduct_factor={g_conduct_factor!r}"
            )
        scale = resist_scale if resist_scale is not None else g_conduct_factor
        self.resist_scale = geometry.check_scalar("resist_scale", 1.0 if scale is None else scale)
        params = geometry.check_stdp_params(
            A_plus=A_plus, A_minus=A_minus, eta=eta, pretrace_target=pretrace_target, w_decay=w_decay, w_bound=w_bound
        )
        self.Aplus, self.Aminus = params.A_plus, params.A_minus
        self.pretrace_target, self.w_decay, self.w_bound = params.pretrace_target, params.w_decay, params.w_bound
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (2**63))
        elif isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise TypeError(f"seed must be None or a non-negative int, got {seed!r}")
        self.seed = int(seed)
        self.key = np.array([(self.seed >> 32) & 0xFFFFFFFF, self.seed & 0xFFFFFFFF], np.uint32)
        weights = self._initial_filters(filter_init)

        self.backend = _resolve_backend(backend)
        self._jax = self._probe_backend()
        self._compartments: dict[str, Compartment] = {}
        zeros = self._zeros
        init = {
            "inputs": zeros(self.in_shape),
            "outputs": zeros(self.out_shape),
            "weights": self._to_state(weights),
            "biases": zeros((1, self.shape[3])),
            "eta": self._to_state(np.full((1, 1), params.eta, self.dtype)),
            "preSpike": zeros(self.in_shape),
            "preTrace": zeros(self.in_shape),
            "postSpike": zeros(self.out_shape),
            "postTrace": zeros(self.out_shape),
            "dWeights": zeros(self.shape),
            "dInputs": zeros(self.in_shape),
        }
        for cname in COMPARTMENTS:
            object.__setattr__(self, cname, Compartment(self, cname, init[cname]))
            self._compartments[cname] = getattr(self, cname)

    # ----------------------------------------------------------------------- construction helpers

    @staticmethod
    def _check_dtype(dtype: Any) -> np.dtype:
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"dtype must be float32 or float64, got {dt}")
        return dt

    @staticmethod
    def _ints(name: str, value: Any, n: Sequence[int], minimum: int) -> tuple[int, ...]:
        try:
            items = tuple(value)
        except TypeError:
            raise TypeError(f"{name} must be a tuple of ints, got {_show(value)}") from None
        if len(items) not in n or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in items):
            want = " or ".join(str(k) for k in n)
            raise TypeError(f"{name} must be a tuple of {want} ints, got {_show(value)}")
        items = tuple(int(v) for v in items)
        if min(items) < minimum:
            raise ValueError(f"{name} must hold ints >= {minimum}, got {_show(items)}")
        return items

    def _check_shape(self, shape: Any) -> tuple[int, int, int, int]:
        return self._ints("shape", shape, (4,), 1)  # type: ignore[return-value]

    @staticmethod
    def _check_batch(batch_size: Any) -> int:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
            raise TypeError(f"batch_size must be an int >= 0, got {batch_size!r}")
        if batch_size < 0:
            raise ValueError(f"batch_size must be >= 0, got {batch_size}")
        return int(batch_size)

    def _check_x_shape(self, x_shape: Any, batch: int, kernel_shape: tuple[int, ...]) -> tuple[int, int]:
        items = self._ints("x_shape", x_shape, (2, 4), 0)
        if len(items) == 4:
            n, h, w, ci = items
            if n != batch:
                raise ValueError(f"x_shape {_show(items)} has batch {n} but batch_size is {batch}")
            if ci != kernel_shape[2]:
                raise ValueError(
                    f"x_shape {_show(items)} has {ci} channels but shape {_show(kernel_shape)} expects "
                    f"{kernel_shape[2]} input channels (axis 2)"
                )
            items = (h, w)
        if min(items) < 1:
            raise ValueError(f"x_shape must have H, W >= 1, got {_show(tuple(x_shape))}")
        return items  # type: ignore[return-value]

    def _initial_filters(self, filter_init: Any) -> np.ndarray:
        if filter_init is None:
            rng = np.random.default_rng(self.seed)
            return rng.uniform(0.025, 0.8, self.shape).astype(self.dtype)
        if callable(filter_init) and not hasattr(filter_init, "shape"):
            try:
                import jax

                key = jax.random.split(jax.random.PRNGKey(self.seed), 4)[1]  # ngc-learn's subkeys[0]
            except ImportError:
                key = self.seed
            value = filter_init(self.shape, key)
            what = "filter_init(shape, key)"
        else:
            value, what = filter_init, "filter_init"
        arr = self._validated("weights", value, what)
        return np.array(arr, self.dtype)

    def _probe_backend(self) -> bool:
        """Whether the backend returns JAX arrays (so state is held as JAX arrays): one 1x1 call,
        in this synapse's dtype (a float64 synapse on JAX without x64 fails here, with the reason)."""
        one = np.zeros((1, 1, 1, 1), self.dtype)
        out = self.backend.deconv2d(one, one, stride=1, padding="SAME")
        if isinstance(out, np.ndarray):
            return False
        mod = type(out).__module__.partition(".")[0]
        if mod in ("jax", "jaxlib"):
            return True
        raise TypeError(
            f"backend {self.backend.name!r} returned {type(out).__name__}; a synapse needs np.ndarray or jax.Array"
        )

    # ----------------------------------------------------------------------- state validation

    def _expected(self, name: str) -> tuple[int, ...]:
        if name in ("inputs", "preSpike", "preTrace", "dInputs"):
            return self.in_shape
        if name in ("outputs", "postSpike", "postTrace"):
            return self.out_shape
        if name in ("weights", "dWeights"):
            return self.shape
        if name == "biases":
            return (1, self.shape[3])
        if name == "eta":
            return (1, 1)
        raise KeyError(name)

    def _validated(self, name: str, value: Any, what: str | None = None) -> np.ndarray | Any:
        """``value`` checked for compartment ``name`` (shape, dtype), as a NumPy or JAX array
        of the expected shape; raises naming the compartment, the expected and the given value."""
        what = what or f"compartment {name!r}"
        if not (hasattr(value, "shape") and hasattr(value, "dtype")):
            if isinstance(value, str | bytes) or value is None:
                raise TypeError(f"{what} must be an array of numbers, got {type(value).__name__} {_show(value)}")
            try:
                value = np.asarray(value)
            except (ValueError, TypeError) as err:
                raise TypeError(f"{what} must be an array of numbers, got {type(value).__name__}: {err}") from None
        try:
            dt = np.dtype(value.dtype)
        except TypeError:
            raise TypeError(f"{what} must have a NumPy dtype, got {value.dtype!r}") from None
        if dt.kind not in "biuf" or not np.can_cast(dt, self.dtype, casting="same_kind"):
            raise TypeError(f"{what} holds {self.dtype} values; got dtype {dt} (expected bool, int or float)")
        want = self._expected(name)
        given = tuple(int(d) for d in value.shape)
        if given != want:
            if name in ("biases", "eta") and _broadcasts(given, want):
                return value
            extra = ", or a scalar / (Co,) broadcast to it" if name == "biases" else ""
            extra = ", or a scalar" if name == "eta" else extra
            raise ValueError(f"{what} must have shape {_show(want)}{extra}; got shape {_show(given)}")
        return value

    def _checked(self, name: str, value: Any) -> Any:
        value = self._validated(name, value)
        want = self._expected(name)
        if self._jax:
            import jax.numpy as jnp

            out = jnp.asarray(value.astype(self.dtype) if isinstance(value, np.ndarray) else value).astype(self.dtype)
            return out if tuple(out.shape) == want else jnp.broadcast_to(out, want)
        out = np.array(value, dtype=self.dtype)  # a copy: the caller's array stays theirs
        return out if out.shape == want else np.array(np.broadcast_to(out, want))

    def _to_state(self, value: np.ndarray) -> Any:
        if self._jax:
            import jax.numpy as jnp

            return jnp.asarray(value, self.dtype)
        return np.array(value, self.dtype)

    def _zeros(self, shape: tuple[int, ...]) -> Any:
        return self._to_state(np.zeros(shape, self.dtype))

    def _store(self, name: str, value: Any) -> None:
        """Store a backend result (already the right shape; cast only if its dtype differs)."""
        if value.dtype != self.dtype:
            value = value.astype(self.dtype)
        self._compartments[name]._value = value

    def __setattr__(self, attr: str, value: Any) -> None:
        comps = self.__dict__.get("_compartments")
        if comps and attr in comps:
            comps[attr].set(value)  # ``syn.inputs = x`` is ``syn.inputs.set(x)``
        else:
            object.__setattr__(self, attr, value)

    # ----------------------------------------------------------------------- ngc-learn's interface

    @property
    def compartments(self) -> list[tuple[str, Compartment]]:
        """``[(name, Compartment)]``, as ngc-learn components list them."""
        return list(self._compartments.items())

    @property
    def state(self) -> dict[str, Any]:
        """``{compartment name: value}`` (the live arrays, not copies)."""
        return {n: c.get() for n, c in self._compartments.items()}

    def advance_state(self) -> None:
        """``outputs = deconv2d(inputs, weights) * resist_scale + biases``."""
        c = self._compartments
        out = self.backend.advance(
            c["inputs"].get(),
            c["weights"].get(),
            stride=self.stride,
            padding=self.padding,
            resist_scale=self.resist_scale,
            bias=c["biases"].get(),
        )
        self._store("outputs", out)

    def evolve(self) -> None:
        """The STDP update (SPEC §3 ``stdp_update``): ``weights <- W'``, ``dWeights <- dW`` (before eta)."""
        c = self._compartments
        eta = float(np.asarray(c["eta"].get()).reshape(()))
        w_new, dw = self.backend.stdp_update(
            c["weights"].get(),
            c["preSpike"].get(),
            c["preTrace"].get(),
            c["postSpike"].get(),
            c["postTrace"].get(),
            stride=self.stride,
            padding=self.padding,
            A_plus=self.Aplus,
            A_minus=self.Aminus,
            eta=eta,
            pretrace_target=self.pretrace_target,
            w_decay=self.w_decay,
            w_bound=self.w_bound,
        )
        self._store("weights", w_new)
        self._store("dWeights", dw)

    def backtransmit(self) -> None:
        """``dInputs = dX(weights, postSpike)`` (through the current, i.e. updated, filters)."""
        c = self._compartments
        dx = self.backend.backtransmit(
            c["weights"].get(),
            c["postSpike"].get(),
            stride=self.stride,
            padding=self.padding,
            input_shape=self.in_shape,
        )
        self._store("dInputs", dx)

    def step(self) -> None:
        """One simulation step in the seed's order: ``advance_state``, ``evolve``, ``backtransmit``."""
        self.advance_state()
        self.evolve()
        self.backtransmit()

    def reset(self) -> None:
        """Zero ``inputs``, ``outputs``, ``preSpike``, ``postSpike``, ``preTrace``, ``postTrace`` (ngc-learn's list)."""
        for name in _RESET:
            self._store(name, self._zeros(self._expected(name)))

    def _path(self, directory: str | os.PathLike) -> str:
        return os.path.join(os.fspath(directory), self.name + ".npz")

    def save(self, directory: str | os.PathLike) -> str:
        """Write ``<directory>/<name>.npz`` with ngc-learn's keys (:data:`SAVE_KEYS`); returns the path."""
        path = self._path(directory)
        data = {"key": self.key, **{n: np.asarray(c.get()) for n, c in self._compartments.items()}}
        with open(path, "wb") as fh:
            np.savez(fh, **data)
        return path

    def load(self, directory: str | os.PathLike) -> None:
        """Read ``<directory>/<name>.npz`` (this class's or ngc-learn's). Every compartment found
        is validated first; only then is anything set (a bad file changes nothing). Keys absent
        from the file keep their values; unknown keys are ignored, as ngc-learn does."""
        with np.load(self._path(directory)) as data:
            found = {k: np.array(data[k]) for k in data.files}
        checked = {}
        for name in COMPARTMENTS:
            if name in found:
                checked[name] = self._checked(name, self._validated(name, found[name], f"{name!r} in {self.name}.npz"))
        key = found.get("key")
        if key is not None:
            key = np.asarray(key)
            if key.shape != (2,) or key.dtype.kind not in "iu":
                raise ValueError(f"'key' in {self.name}.npz must be 2 unsigned ints, got shape {key.shape} {key.dtype}")
        for name, value in checked.items():
            self._compartments[name]._value = value
        if key is not None:
            self.key = key.astype(np.uint32)

    @classmethod
    def help(cls) -> dict[str, Any]:
        """ngc-learn's component help (properties, compartments, dynamics, hyperparameters), plus
        ``"backend"`` and ``"differences from ngc-learn"``."""
        return {
            cls.__name__: {
                "synapse_type": "TraceSTDPDeconvSynapse - performs a synaptic deconvolution (@.T) of inputs to "
                "produce output signals; synaptic filters are adjusted via trace-based spike-timing-dependent "
                "plasticity (STDP); math on a convstdp backend"
            },
            "compartments": {
                "inputs": {
                    "inputs": "Takes in external input signal values (N, H, W, Ci)",
                    "preSpike": "Pre-synaptic spike compartment value/term for STDP (s_j), (N, H, W, Ci)",
                    "postSpike": "Post-synaptic spike compartment value/term for STDP (s_i), (N, Ho, Wo, Co)",
                    "preTrace": "Pre-synaptic trace value term for STDP (z_j), (N, H, W, Ci)",
                    "postTrace": "Post-synaptic trace value term for STDP (z_i), (N, Ho, Wo, Co)",
                },
                "states": {
                    "weights": "Synaptic filter parameter values (kh, kw, Ci, Co)",
                    "biases": "Base-rate/bias parameter values (1, Co)",
                    "eta": "Global learning rate (multiplier beyond A_plus and A_minus), (1, 1)",
                },
                "analytics": {
                    "dWeights": "Synaptic filter value adjustment produced at time t, before eta (kh, kw, Ci, Co)",
                    "dInputs": "Back-transmitted signal values through the updated filters (N, H, W, Ci)",
                },
                "outputs": {"outputs": "Output of synaptic/filter transformation (N, Ho, Wo, Co)"},
            },
            "dynamics": "outputs = [K @.T inputs] * R + b; "
            "dW_{ij}/dt = A_plus * (z_j - x_tar) * s_i - A_minus * s_j * z_i",
            "hyperparameters": {
                "shape": "Filter shape (kh, kw, Ci, Co); rectangular kernels allowed",
                "x_shape": "Shape (H, W) of one input map; rectangular maps allowed",
                "batch_size": "Batch size dimension N of this component (0 allowed)",
                "filter_init": "None (uniform [0.025, 0.8)), an array, or f(shape, key)",
                "resist_scale": "Output scaling factor (R); g_conduct_factor is the same (ngc-learn 3.x name)",
                "stride": "int or (sh, sw)",
                "padding": "'SAME' (default), 'VALID' or ((lo_h, hi_h), (lo_w, hi_w)); None is an error",
                "A_plus": "Strength of long-term potentiation (LTP)",
                "A_minus": "Strength of long-term depression (LTD)",
                "eta": "Global learning rate initial condition",
                "pretrace_target": "Pre-synaptic disconnecting/decay factor (x_tar)",
                "w_decay": "Synaptic filter decay term",
                "w_bound": "Soft synaptic bound applied to filters post-update (clip to [0.01, w_bound - 0.01])",
                "backend": "convstdp backend name or object; default $CONVSTDP_BACKEND, else numba, jax, reference",
                "seed": "Seeds the initial filters (None: drawn, kept in .seed)",
                "dtype": "State dtype, float32 (default) or float64",
            },
            "differences from ngc-learn": {
                "padding": "default 'SAME' (ngc-learn's default None fails there); None raises ValueError",
                "biases": "(1, Co) zeros (ngc-learn: scalar 0.0; its base class would use (1, k)); scalars load",
                "maps": "rectangular maps, kernels and per-axis strides work (ngc-learn assumes square)",
                "reset": "works uncompiled; zeroes the same six compartments as ngc-learn",
                "validation": "wrong shapes/dtypes raise ValueError/TypeError before any state changes",
            },
        }

    def __repr__(self) -> str:
        return (
            f"TraceSTDPDeconvSynapse({self.name!r}, shape={self.shape}, x_shape={self.x_shape}, "
            f"batch_size={self.in_shape[0]}, stride={self.stride}, padding={geometry.padding_label(self.padding)}, "
            f"backend={self.backend.name!r}, dtype={self.dtype})"
        )


def _broadcasts(given: tuple[int, ...], want: tuple[int, ...]) -> bool:
    if len(given) > len(want):
        return False
    return all(g in (1, w) for g, w in zip(given[::-1], want[::-1], strict=False))
