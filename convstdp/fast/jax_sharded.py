"""The JAX backend sharded over devices (SPEC §10): the batch split by ``shard_map``, dK reduced by XLA.

``get_backend("jax-sharded")`` returns :class:`JaxShardedBackend` over the local devices (or a
given :class:`jax.sharding.Mesh`); ``"jax-sharded-det"`` is the same with ``deterministic=True``.
Both are opt-in (never a default backend). Each operator is one jitted program whose body is a
``shard_map`` over the mesh, the batch sharded over every mesh axis, the kernel and the STDP
scalars replicated:

- ``deconv2d`` and ``dX``: per shard, no communication (outputs stay batch-sharded);
- ``dK``: the per-shard partial sum, reduced across devices (``lax.psum``);
- ``stdp_update``: the per-shard ``dW`` reduced, then ``W'`` computed on every device from the
  replicated kernel and the reduced ``dW``, so ``W'`` and ``dW`` are replicated;
- ``stdp_step`` (SPEC §8): all of the above in ONE ``shard_map`` program (``dX`` sees ``W'``).

The per-shard math is the unsharded JAX backend's (:mod:`convstdp.fast._jax_formulations`, at
its precision, ``Precision.HIGHEST`` by default, and its formulation policy applied to the
per-shard batch); this class subclasses :class:`convstdp.fast.jax.JaxBackend` for the dtype
rules, path declarations and the mixed-dtype fallback.

Any batch size: the batch is zero-padded to ``P * ceil(N / P)`` rows (at least one per device,
so ``N = 0`` and ``N < P`` work), and padded outputs are sliced off. Padding is exact: every
term of dK is a product ``x_side[n] * d_side[n]`` whose d side (``d_out``; ``post_spike`` /
``post_trace`` in the STDP update) is an exact zero on a padded row, so padded rows add exact
zeros (``t + 0 == t`` in IEEE arithmetic), and deconv2d / dX rows of padded items never reach
the caller. With one device the unsharded programs run as they are (no padding, no collective).

Numerics: ``psum`` sums the per-device partials in the collective's order, not the one-device
order, so results agree with ``jax`` within the conformance tolerance, not bitwise. With
``deterministic=True`` the partials are all-gathered and summed in device order by explicit
adds: the same program gives bit-identical results run to run (and on every device).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, PartitionSpec

from convstdp.fast import _jax_formulations as F
from convstdp.fast.jax import JaxBackend

try:  # JAX >= 0.7 exports shard_map at the top level
    from jax import shard_map as _shard_map
except ImportError:  # pragma: no cover - older JAX
    from jax.experimental.shard_map import shard_map as _shard_map

__all__ = [
    "JaxShardedBackend",
    "create_backend",
    "create_deterministic_backend",
    "make_mesh",
    "padded_batch",
    "smap",
    "AXIS",
]

Pair = tuple[int, int]
AXIS = "batch"
_REP = PartitionSpec()
_STATIC = ("stride", "pads", "size", "form", "num", "dtype", "mesh", "det")


def make_mesh(devices: Sequence[Any] | None = None) -> Mesh:
    """A one-axis mesh named ``"batch"`` over ``devices`` (default: this process's local devices)."""
    devs = list(jax.local_devices() if devices is None else devices)
    if not devs:
        raise ValueError("a mesh needs at least one device")
    return Mesh(np.array(devs, dtype=object), (AXIS,))


def smap(fn: Any, mesh: Mesh, in_specs: Any, out_specs: Any) -> Any:
    """``shard_map(fn)`` over ``mesh`` with JAX's replication (vma) typing off.

    The per-shard math is the unsharded backend's, whose batch-chunk ``lax.scan`` starts its
    carry from replicated zeros (a type error under the typing); replication of the outputs
    declared ``P()`` holds by construction: they are functions of replicated inputs and of
    ``psum``/all-gathered values only."""
    try:
        return _shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    except TypeError:  # pragma: no cover - older JAX spells it check_rep
        return _shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)


def _batch_spec(mesh: Mesh) -> PartitionSpec:
    """The batch axis over every mesh axis (the rest unsharded)."""
    return PartitionSpec(tuple(mesh.axis_names))


def _padded(a: jax.Array, rows: int) -> jax.Array:
    """``a (N, ...)`` zero-padded to ``rows`` along the batch (exact zeros; no-op when ``N == rows``)."""
    n = a.shape[0]
    return a if n == rows else jnp.pad(a, [(0, rows - n)] + [(0, 0)] * (a.ndim - 1))


def padded_batch(n: int, ndev: int) -> int:
    """Rows after padding a batch of ``n`` for ``ndev`` devices: ``ndev * max(1, ceil(n / ndev))``."""
    return ndev * max(1, -(-n // ndev))


def _reduce(part: jax.Array, mesh: Mesh, det: bool) -> jax.Array:
    """Sum of the per-device partials ``part`` (kernel-shaped) over the mesh, on every device.

    ``det``: all-gather ``(P, ...)`` and add in device order (one fixed association), else ``psum``."""
    axes = tuple(mesh.axis_names)
    if not det:
        return lax.psum(part, axes)
    parts = lax.all_gather(part, axes)
    acc = parts[0]
    for i in range(1, parts.shape[0]):
        acc = acc + parts[i]
    return acc


# ------------------------------------------------------------------------------ per-shard bodies


def _local_update(kernel, ps, pt, qs, qt, scalars, *, stride, pads, size, form, num, dtype, mesh, det):
    """Per shard: ``dW`` of the local batch, reduced over devices, then ``W'`` (replicated)."""
    kernel = kernel.astype(dtype)
    sc = tuple(jnp.asarray(v, dtype) for v in scalars[:6])
    dw = F.stdp_dw(ps, pt, qs, qt, sc, ksize=size, stride=stride, pads=pads, form=form, num=num, dtype=dtype)
    dw = _reduce(dw, mesh, det)
    return F.apply_update(kernel, dw, sc, scalars[6], scalars[7]), dw


def _local_step(kernel, x, ps, pt, qs, qt, scalars, *, stride, pads, size, form, num, dtype, mesh, det):
    """Per shard SPEC §8 step: ``y`` and ``dX`` local, ``W'``/``dW`` reduced and replicated."""
    geo = dict(stride=stride, pads=pads, form=form, num=num)
    y = F.deconv2d(x, kernel.astype(dtype), out_size=size[1], **geo)
    w_new, dw = _local_update(kernel, ps, pt, qs, qt, scalars, size=size[0], dtype=dtype, mesh=mesh, det=det, **geo)
    dx = F.deconv2d_dx(w_new, qs, in_size=size[2], **geo)
    return y, w_new, dw, dx


# ------------------------------------------------------------------------------ jitted programs
# Static: geometry, formulation, numerics, dtype, mesh, deterministic. Shapes give N and the padding.


@partial(jax.jit, static_argnames=_STATIC)
def _deconv2d_prog(x, kernel, *, stride, pads, size, form, num, dtype, mesh, det):
    n, rows, b = x.shape[0], padded_batch(x.shape[0], mesh.size), _batch_spec(mesh)

    def body(xl, k):
        return F.deconv2d(xl, k.astype(dtype), out_size=size, stride=stride, pads=pads, form=form, num=num)

    return smap(body, mesh, (b, _REP), b)(_padded(x, rows), kernel)[:n]


@partial(jax.jit, static_argnames=_STATIC)
def _dk_prog(x, d_out, *, stride, pads, size, form, num, dtype, mesh, det):
    rows, b = padded_batch(x.shape[0], mesh.size), _batch_spec(mesh)

    def body(xl, dl):
        part = F.deconv2d_dk(xl, dl, ksize=size, stride=stride, pads=pads, form=form, num=num, dtype=dtype)
        return _reduce(part, mesh, det)

    return smap(body, mesh, (b, b), _REP)(_padded(x, rows), _padded(d_out, rows))


@partial(jax.jit, static_argnames=_STATIC)
def _dx_prog(kernel, d_out, *, stride, pads, size, form, num, dtype, mesh, det):
    n, rows, b = d_out.shape[0], padded_batch(d_out.shape[0], mesh.size), _batch_spec(mesh)

    def body(k, dl):
        return F.deconv2d_dx(k.astype(dtype), dl, in_size=size, stride=stride, pads=pads, form=form, num=num)

    return smap(body, mesh, (_REP, b), b)(kernel, _padded(d_out, rows))[:n]


@partial(jax.jit, static_argnames=_STATIC)
def _update_prog(kernel, ps, pt, qs, qt, scalars, *, stride, pads, size, form, num, dtype, mesh, det):
    rows, b = padded_batch(ps.shape[0], mesh.size), _batch_spec(mesh)
    body = partial(
        _local_update, stride=stride, pads=pads, size=size, form=form, num=num, dtype=dtype, mesh=mesh, det=det
    )
    batch = tuple(_padded(a, rows) for a in (ps, pt, qs, qt))
    return smap(body, mesh, (_REP, b, b, b, b, _REP), (_REP, _REP))(kernel, *batch, scalars)


@partial(jax.jit, static_argnames=_STATIC)
def _step_prog(kernel, x, ps, pt, qs, qt, scalars, *, stride, pads, size, form, num, dtype, mesh, det):
    n, rows, b = x.shape[0], padded_batch(x.shape[0], mesh.size), _batch_spec(mesh)
    body = partial(
        _local_step, stride=stride, pads=pads, size=size, form=form, num=num, dtype=dtype, mesh=mesh, det=det
    )
    batch = tuple(_padded(a, rows) for a in (x, ps, pt, qs, qt))
    specs = ((_REP, b, b, b, b, b, _REP), (b, _REP, _REP, b))
    y, w_new, dw, dx = smap(body, mesh, *specs)(kernel, *batch, scalars)
    return y[:n], w_new, dw, dx[:n]


# ------------------------------------------------------------------------------ the backend


class JaxShardedBackend(JaxBackend):
    """SPEC §10: the JAX backend with the batch sharded over ``mesh`` (default: the local devices).

    ``mesh``: a :class:`jax.sharding.Mesh` (the batch is split over all its axes; for several
    hosts, one over ``jax.devices()``), or ``None`` for :func:`make_mesh` over ``devices``
    (default: ``jax.local_devices()``). ``deterministic``: reduce dK by an all-gather and a
    fixed-order sum instead of ``psum`` (bit-identical run to run). ``precision`` and
    ``formulation`` as for :class:`JaxBackend` (formulation chosen for the per-shard batch).
    Paths are the JAX backend's. With one device every call runs the unsharded programs.
    """

    name = "jax-sharded"

    def __init__(
        self,
        mesh: Mesh | None = None,
        *,
        devices: Sequence[Any] | None = None,
        deterministic: bool = False,
        precision: str = "highest",
        formulation: str = "auto",
    ) -> None:
        if mesh is not None and devices is not None:
            raise ValueError("give a mesh or devices, not both")
        if mesh is not None and not isinstance(mesh, Mesh):
            raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
        super().__init__(precision=precision, formulation=formulation)
        self.mesh = mesh if mesh is not None else make_mesh(devices)
        self.deterministic = bool(deterministic)
        self.ndev = int(self.mesh.size)
        self.platform = self.mesh.devices.flat[0].platform
        mode = ", deterministic" if self.deterministic else ""
        self.version += f", batch sharded over {self.ndev} device(s){mode}"

    def __repr__(self) -> str:
        return (
            f"JaxShardedBackend(devices={self.ndev}, deterministic={self.deterministic}, "
            f"precision={self.precision!r}, formulation={self.formulation!r}, platform={self.platform!r})"
        )

    def devices(self) -> list[str]:
        return [f"{d.platform}:{d.id} {d.device_kind}" for d in self.mesh.devices.flat]

    @property
    def _single(self) -> bool:
        return self.ndev == 1

    def _static(
        self, op: str, batch: int, out_size: Pair, ksize: Pair, channels: Pair, stride: Pair, pairs: int = 1
    ) -> dict[str, Any]:
        """The JAX backend's static arguments for the per-shard batch (the formulation is chosen, and
        noted as the path, for it), plus the mesh and the reduction mode."""
        if self._single:
            return super()._static(op, batch, out_size, ksize, channels, stride, pairs)
        local = padded_batch(batch, self.ndev) // self.ndev
        st = super()._static(op, local, out_size, ksize, channels, stride, pairs)
        return {**st, "mesh": self.mesh, "det": self.deterministic}

    def _program(self, op: str, kernel: Any) -> Any:
        """The ``shard_map`` program of ``op``; with one device, the JAX backend's, on that device."""
        if not self._single:
            return _PROGRAMS[op]
        prog, dev = super()._program(op, kernel), self.mesh.devices.flat[0]
        if dev == jax.devices()[0]:
            return prog

        def on_device(*args: Any, **kwargs: Any) -> Any:
            with jax.default_device(dev):
                return prog(*args, **kwargs)

        return on_device


_PROGRAMS = {
    "deconv2d": _deconv2d_prog,
    "deconv2d_dk": _dk_prog,
    "deconv2d_dx": _dx_prog,
    "stdp_update": _update_prog,
    "stdp_step": _step_prog,
}


def create_backend() -> JaxShardedBackend:
    """Registry factory for ``"jax-sharded"``: the local devices, ``psum`` reduction, ``Precision.HIGHEST``."""
    return JaxShardedBackend()


def create_deterministic_backend() -> JaxShardedBackend:
    """Registry factory for ``"jax-sharded-det"``: fixed-order reduction, bit-identical run to run."""
    return JaxShardedBackend(deterministic=True)
