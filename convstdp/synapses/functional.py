"""The seed synapse as pure JAX functions (SPEC §9): a pytree state, for ``jax.jit`` and ``lax.scan``.

::

    cfg = SynapseConfig.make((5, 5, 16, 1), (14, 14), A_plus=1.0, A_minus=0.5, stride=2, batch_size=1)
    state = cfg.init(weights, eta=0.01)              # SynapseState, a NamedTuple of jax.Arrays
    step = jax.jit(cfg.step)                          # step(state, StepInputs) -> state
    state, history = cfg.run(state, inputs_over_time, record=lambda s: s.dInputs)   # lax.scan

``step`` is one simulation step in the seed's order: the exogenous values are stored in their
compartments (``inputs``, ``preSpike``, ``preTrace``, ``postSpike``, ``postTrace``), then
``advance`` (``outputs = deconv2d(inputs, W) * R + b``), ``evolve`` (``weights <- W'``,
``dWeights <- dW``) and ``backtransmit`` (``dInputs = dX(W', postSpike)``). Each of the three
is also a function of its own.

The math is the JAX backend's (:mod:`convstdp.fast._jax_formulations`, the functions its
compiled programs are made of, at the same precision and formulation choice); geometry comes
from :mod:`convstdp.geometry`. :class:`SynapseConfig` is static (hashable, frozen): everything
about shapes, the STDP constants and the numerics. The learning rate is state (``eta``,
``(1, 1)`` as in ngc-learn), so changing it does not recompile.

Several devices (SPEC §10): ``SynapseConfig.make(..., mesh=mesh)`` (a :class:`jax.sharding.Mesh`,
e.g. :func:`convstdp.fast.jax_sharded.make_mesh`; the batch must divide by its size) makes
:func:`step` (so :func:`run`'s ``lax.scan`` body) one ``shard_map``: batch-shaped compartments
sharded over every mesh axis, ``weights``/``dWeights``/``biases``/``eta`` replicated, dK summed
across devices by ``lax.psum``. :meth:`SynapseConfig.shardings` gives the placements.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from convstdp import geometry
from convstdp.fast import _jax_formulations as F
from convstdp.fast.jax import PRECISION_MODES

__all__ = ["SynapseConfig", "SynapseState", "StepInputs", "advance", "evolve", "backtransmit", "reset", "step", "run"]

Pair = tuple[int, int]


class SynapseState(NamedTuple):
    """The compartments of ngc-learn's synapse, with its names and shapes (a JAX pytree)."""

    inputs: Any  # (N, H, W, Ci)
    outputs: Any  # (N, Ho, Wo, Co)
    weights: Any  # (kh, kw, Ci, Co)
    biases: Any  # (1, Co)
    eta: Any  # (1, 1)
    preSpike: Any  # (N, H, W, Ci)
    preTrace: Any  # (N, H, W, Ci)
    postSpike: Any  # (N, Ho, Wo, Co)
    postTrace: Any  # (N, Ho, Wo, Co)
    dWeights: Any  # (kh, kw, Ci, Co), before eta
    dInputs: Any  # (N, H, W, Ci)


class StepInputs(NamedTuple):
    """What a simulation feeds the synapse each step (x-shaped: inputs, preSpike, preTrace;
    y-shaped: postSpike, postTrace). Spikes may be bool or int."""

    inputs: Any
    preSpike: Any
    preTrace: Any
    postSpike: Any
    postTrace: Any


@dataclass(frozen=True)
class SynapseConfig:
    """Everything static about a synapse (hashable: a ``jit`` static argument or a closure)."""

    x_shape: tuple[int, int, int, int]
    kernel_shape: tuple[int, int, int, int]
    y_shape: tuple[int, int, int, int]
    stride: Pair
    pads: tuple[Pair, Pair]
    A_plus: float
    A_minus: float
    pretrace_target: float = 0.0
    resist_scale: float = 1.0
    w_bound: float = 0.0
    w_decay: float = 0.0
    dtype: str = "float32"
    precision: str = "highest"
    formulation: str = "auto"
    platform: str = "cpu"
    mesh: Any = None  # jax.sharding.Mesh: step/run shard the batch over it (SPEC §10)
    reduce_axes: tuple[str, ...] = ()  # inside shard_map: mesh axes dK is summed over

    @classmethod
    def make(
        cls,
        shape: Sequence[int],
        x_shape: Sequence[int],
        A_plus: float,
        A_minus: float,
        pretrace_target: float = 0.0,
        stride: geometry.StrideLike = 1,
        padding: geometry.PaddingLike = "SAME",
        resist_scale: float = 1.0,
        w_bound: float = 0.0,
        w_decay: float = 0.0,
        batch_size: int = 1,
        *,
        dtype: Any = "float32",
        precision: str = "highest",
        formulation: str = "auto",
        mesh: Any = None,
    ) -> SynapseConfig:
        """Validated config: ``shape = (kh, kw, Ci, Co)``, ``x_shape = (H, W)``, as the component takes them.

        ``mesh``: shard the batch of :func:`step`/:func:`run` over it (``batch_size`` must divide by its size)."""
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"dtype must be float32 or float64, got {dt}")
        if dt == np.float64 and not jax.config.jax_enable_x64:
            raise TypeError("dtype float64 needs jax_enable_x64 (JAX would silently compute in float32)")
        if precision not in PRECISION_MODES:
            raise ValueError(f"precision must be one of {sorted(PRECISION_MODES)}, got {precision!r}")
        if formulation not in ("auto", "conv", "phase"):
            raise ValueError(f"formulation must be 'auto', 'conv' or 'phase', got {formulation!r}")
        if padding is None:
            raise ValueError("padding must be 'SAME', 'VALID' or ((lo_h, hi_h), (lo_w, hi_w)) of ints, got None")
        kh, kw, ci, co = (int(v) for v in shape)
        h, w = (int(v) for v in x_shape)
        x = jax.ShapeDtypeStruct((int(batch_size), h, w, ci), dt)
        if mesh is not None and int(batch_size) % mesh.size:
            raise ValueError(f"batch_size {batch_size} must be a multiple of the mesh's {mesh.size} devices")
        g = geometry.check_deconv2d(x, jax.ShapeDtypeStruct((kh, kw, ci, co), dt), stride, padding)
        p = geometry.check_stdp_params(
            A_plus=A_plus, A_minus=A_minus, eta=0.0, pretrace_target=pretrace_target, w_decay=w_decay, w_bound=w_bound
        )
        return cls(
            g.x_shape,
            g.kernel_shape,
            g.y_shape,
            g.stride,
            g.pads,
            p.A_plus,
            p.A_minus,
            p.pretrace_target,
            geometry.check_scalar("resist_scale", resist_scale),
            p.w_bound,
            p.w_decay,
            dt.name,
            precision,
            formulation,
            jax.default_backend() if mesh is None else mesh.devices.flat[0].platform,
            mesh,
        )

    @classmethod
    def from_component(cls, syn: Any, **numerics: Any) -> SynapseConfig:
        """The config of a :class:`convstdp.synapses.TraceSTDPDeconvSynapse` (or the ngc-learn drop-in)."""
        return cls.make(
            syn.shape,
            syn.in_shape[1:3],
            syn.Aplus,
            syn.Aminus,
            syn.pretrace_target,
            syn.stride,
            syn.padding,
            syn.resist_scale if hasattr(syn, "resist_scale") else syn.g_conduct_factor,
            syn.w_bound,
            syn.w_decay,
            syn.in_shape[0],
            dtype=numerics.pop("dtype", getattr(syn, "dtype", "float32")),
            **numerics,
        )

    # -- helpers ---------------------------------------------------------------------------------

    @property
    def num(self) -> F.Numerics:
        return PRECISION_MODES[self.precision][0]

    def form(self, batch: int) -> str:
        """The JAX backend's formulation for a product over ``batch`` items (its ``auto`` policy)."""
        ksize, stride = self.kernel_shape[:2], self.stride
        if self.formulation == "conv":
            return "conv"
        if self.formulation == "phase":
            return "phase" if F.phase_feasible(ksize, stride) else "conv"
        return F.choose_formulation(self.platform, batch, self.y_shape[1:3], ksize, self.kernel_shape[2:], stride)

    def geometry(self, batch: int) -> dict[str, Any]:
        """The keyword arguments every formulation entry point takes after its size."""
        return {"stride": self.stride, "pads": self.pads, "form": self.form(batch), "num": self.num}

    def init(self, weights: Any, eta: Any = 0.0, biases: Any = None) -> SynapseState:
        """A fresh state: the given filters, ``eta`` as ``(1, 1)``, ``biases`` (default zeros) as ``(1, Co)``."""
        dt = self.dtype
        w = jnp.asarray(np.asarray(weights, dt) if not isinstance(weights, jax.Array) else weights, dt)
        if tuple(w.shape) != self.kernel_shape:
            raise ValueError(f"weights must have shape {self.kernel_shape}, got {tuple(w.shape)}")
        co = self.kernel_shape[3]
        b = jnp.zeros((1, co), dt) if biases is None else jnp.broadcast_to(jnp.asarray(biases, dt), (1, co))
        x0, y0 = jnp.zeros(self.x_shape, dt), jnp.zeros(self.y_shape, dt)
        return SynapseState(
            x0, y0, w, b, jnp.full((1, 1), eta, dt), x0, x0, y0, y0, jnp.zeros(self.kernel_shape, dt), x0
        )

    def init_from(self, syn: Any) -> SynapseState:
        """The state of a component (its compartments' values, as JAX arrays)."""
        vals = {n: np.asarray(getattr(syn, n).get()) for n in SynapseState._fields}
        state = self.init(vals["weights"], vals["eta"].reshape(()), vals["biases"])
        return state._replace(**{n: jnp.asarray(vals[n], self.dtype) for n in SynapseState._fields})

    def shardings(self) -> tuple[SynapseState, StepInputs]:
        """``(state, per-step inputs)`` of :class:`jax.sharding.NamedSharding` over ``mesh``: batch-shaped
        fields sharded along axis 0, the rest replicated (prepend ``None`` to a spec for a time axis)."""
        if self.mesh is None:
            raise ValueError("this config has no mesh (SynapseConfig.make(..., mesh=...))")
        from jax.sharding import NamedSharding

        specs = _state_specs(self)
        state = SynapseState(*(NamedSharding(self.mesh, p) for p in specs))
        batch = NamedSharding(self.mesh, specs.inputs)
        return state, StepInputs(*([batch] * len(StepInputs._fields)))

    # methods mirroring the module functions, for ``jax.jit(cfg.step)``
    def advance(self, state: SynapseState) -> SynapseState:
        return advance(self, state)

    def evolve(self, state: SynapseState) -> SynapseState:
        return evolve(self, state)

    def backtransmit(self, state: SynapseState) -> SynapseState:
        return backtransmit(self, state)

    def reset(self, state: SynapseState) -> SynapseState:
        return reset(self, state)

    def step(self, state: SynapseState, inputs: StepInputs) -> SynapseState:
        return step(self, state, inputs)

    def run(self, state: SynapseState, inputs: StepInputs, record: Callable | None = None) -> tuple[SynapseState, Any]:
        return run(self, state, inputs, record)


# ------------------------------------------------------------------------------------------ the ops


def _f(cfg: SynapseConfig, a: Any) -> jax.Array:
    return jnp.asarray(a).astype(cfg.dtype)


def advance(cfg: SynapseConfig, state: SynapseState) -> SynapseState:
    """``outputs = deconv2d(inputs, weights) * resist_scale + biases``."""
    n = cfg.x_shape[0]
    w = _f(cfg, state.weights)
    y = F.deconv2d(state.inputs, w, out_size=cfg.y_shape[1:3], **cfg.geometry(n))
    out = (y * jnp.asarray(cfg.resist_scale, cfg.dtype) + _f(cfg, state.biases)).astype(cfg.dtype)
    return state._replace(outputs=out)


def evolve(cfg: SynapseConfig, state: SynapseState) -> SynapseState:
    """SPEC §3 ``stdp_update`` with the ``eta`` compartment: ``weights <- W'``, ``dWeights <- dW``."""
    dt = cfg.dtype
    sc = tuple(
        jnp.asarray(v, dt) for v in (cfg.A_plus, cfg.A_minus, 0.0, cfg.pretrace_target, cfg.w_decay, cfg.w_bound)
    )
    sc = (*sc[:2], _f(cfg, state.eta).reshape(()), *sc[3:])
    dw = F.stdp_dw(
        state.preSpike, state.preTrace, state.postSpike, state.postTrace, sc, ksize=cfg.kernel_shape[:2],
        dtype=dt, **cfg.geometry(2 * cfg.x_shape[0]),
    )  # fmt: skip
    if cfg.reduce_axes:  # per shard under shard_map: the batch sum runs across devices
        dw = lax.psum(dw, cfg.reduce_axes)
    w_new = F.apply_update(_f(cfg, state.weights), dw, sc, cfg.w_decay > 0, cfg.w_bound > 0)
    return state._replace(weights=w_new, dWeights=dw)


def backtransmit(cfg: SynapseConfig, state: SynapseState) -> SynapseState:
    """``dInputs = dX(weights, postSpike)``."""
    n = cfg.x_shape[0]
    w = _f(cfg, state.weights)
    dx = F.deconv2d_dx(w, state.postSpike, in_size=cfg.x_shape[1:3], **cfg.geometry(n))
    return state._replace(dInputs=dx)


def reset(cfg: SynapseConfig, state: SynapseState) -> SynapseState:
    """Zero what ngc-learn's ``reset`` zeroes: inputs, outputs, pre/post spikes and traces."""
    x0, y0 = jnp.zeros(cfg.x_shape, cfg.dtype), jnp.zeros(cfg.y_shape, cfg.dtype)
    return state._replace(inputs=x0, outputs=y0, preSpike=x0, preTrace=x0, postSpike=y0, postTrace=y0)


def _checked_inputs(cfg: SynapseConfig, inputs: StepInputs, lead: tuple[int, ...] = ()) -> StepInputs:
    for name, value in zip(StepInputs._fields, inputs, strict=True):
        want = (*lead, *(cfg.x_shape if name in ("inputs", "preSpike", "preTrace") else cfg.y_shape))
        if tuple(value.shape) != want:
            raise ValueError(f"{name} must have shape {want}, got {tuple(value.shape)}")
        if np.dtype(value.dtype).kind not in "biuf":
            raise TypeError(f"{name} must be bool, int or float, got dtype {value.dtype}")
    return StepInputs(*(_f(cfg, v) for v in inputs))


def step(cfg: SynapseConfig, state: SynapseState, inputs: StepInputs) -> SynapseState:
    """One step in the seed's order: store the exogenous values, ``advance``, ``evolve``, ``backtransmit``.

    With ``cfg.mesh``: one ``shard_map`` over it (batch sharded, filters replicated)."""
    inputs = _checked_inputs(cfg, inputs)
    if cfg.mesh is not None:
        return _sharded_step(cfg, state, inputs)
    state = state._replace(**inputs._asdict())
    return backtransmit(cfg, evolve(cfg, advance(cfg, state)))


def _state_specs(cfg: SynapseConfig) -> SynapseState:
    """PartitionSpecs of the state: batch-shaped compartments over every mesh axis, the rest replicated."""
    from jax.sharding import PartitionSpec

    batch, rep = PartitionSpec(tuple(cfg.mesh.axis_names)), PartitionSpec()
    shared = ("weights", "biases", "eta", "dWeights")
    return SynapseState(*(rep if f in shared else batch for f in SynapseState._fields))


def _sharded_step(cfg: SynapseConfig, state: SynapseState, inputs: StepInputs) -> SynapseState:
    """:func:`step` as one ``shard_map``: per shard on ``N / P`` items, ``dW`` summed by ``lax.psum``."""
    from convstdp.fast.jax_sharded import smap

    n = cfg.x_shape[0] // cfg.mesh.size
    local = replace(
        cfg, x_shape=(n, *cfg.x_shape[1:]), y_shape=(n, *cfg.y_shape[1:]), mesh=None,
        reduce_axes=tuple(cfg.mesh.axis_names),
    )  # fmt: skip
    specs = _state_specs(cfg)
    in_specs = (specs, StepInputs(*([specs.inputs] * len(StepInputs._fields))))
    return smap(partial(step, local), cfg.mesh, in_specs, specs)(state, inputs)


def run(
    cfg: SynapseConfig, state: SynapseState, inputs: StepInputs, record: Callable[[SynapseState], Any] | None = None
) -> tuple[SynapseState, Any]:
    """``T`` steps under ``lax.scan``: ``inputs`` fields carry a leading time axis ``T``.

    Returns ``(final state, history)`` with ``history`` the stack of ``record(state)`` after each
    step (``None`` without ``record``). Wrap in ``jax.jit`` (``cfg`` static) to compile the loop once.
    """
    if not isinstance(inputs, StepInputs):
        inputs = StepInputs(*inputs)
    t = inputs.inputs.shape[0] if inputs.inputs.ndim == 5 else None
    if t is None:
        raise ValueError(f"inputs must carry a leading time axis: inputs has shape {tuple(inputs.inputs.shape)}")
    _checked_inputs(cfg, inputs, (t,))

    def body(s: SynapseState, xs: StepInputs) -> tuple[SynapseState, Any]:
        s = step(cfg, s, xs)
        return s, (None if record is None else record(s))

    return lax.scan(body, state, inputs)


@partial(jax.jit, static_argnums=(0, 3))
def run_jit(
    cfg: SynapseConfig, state: SynapseState, inputs: StepInputs, record: Callable | None = None
) -> tuple[SynapseState, Any]:
    """:func:`run`, compiled once per config, shapes and ``record`` (which must be hashable)."""
    return run(cfg, state, inputs, record)
