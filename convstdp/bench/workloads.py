"""Benchmark workloads (SPEC §8) and scaling sweeps: one definition for the CLI and ``benchmarks/``.

A :class:`Workload` is one operator (``"step"`` = the SPEC §8 STDP step, or one of the four
operators alone) on one geometry at one spike density, in float32. Its FLOP count is
``passes · 2·N·H·W·Ci·Co·kh·kw`` (SPEC §8): a deconvolution, a dK and a dX are one pass each,
``stdp_update`` is two (two dK), a step is four.

Inputs are generated seeded: spikes are float32 0/1 at the workload's density, traces and
kernels are positive, non-symmetric uniform values.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from convstdp import geometry

OPS: tuple[str, ...] = ("step", "deconv2d", "deconv2d_dk", "deconv2d_dx", "stdp_update")
PASSES: dict[str, int] = {"step": 4, "deconv2d": 1, "deconv2d_dk": 1, "deconv2d_dx": 1, "stdp_update": 2}

# The seed's evolve, with every branch taken (decay and bounding on).
STDP_PARAMS: dict[str, float] = dict(
    A_plus=0.9, A_minus=0.6, eta=0.01, pretrace_target=0.05, w_decay=0.001, w_bound=1.0
)

SWEEP_DIMS: tuple[str, ...] = ("batch", "map", "channels", "kernel", "density")


@dataclass(frozen=True)
class Workload:
    """One timed case. x is ``(batch, size, size, cin)``, the kernel ``(k, k, cin, cout)``."""

    name: str
    op: str
    batch: int
    size: int
    cin: int
    cout: int
    k: int
    stride: int
    padding: str
    density: float = 0.1
    dtype: str = "float32"
    group: str = "spec"  # "spec" or "sweep"
    sweeps: tuple[tuple[str, float], ...] = field(default=())  # (dimension, value) it is a point of
    gpu_only: bool = False

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.size, self.size, self.cin)

    @property
    def kernel_shape(self) -> tuple[int, int, int, int]:
        return (self.k, self.k, self.cin, self.cout)

    @property
    def geometry(self) -> geometry.Geometry:
        """Resolved sizes and pads (through :mod:`convstdp.geometry`, the one home of SPEC §2)."""
        x = np.empty((0, self.size, self.size, self.cin), self.dtype)
        k = np.empty(self.kernel_shape, self.dtype)
        g = geometry.check_deconv2d(x, k, self.stride, self.padding)
        return replace(g, batch=self.batch)

    @property
    def y_shape(self) -> tuple[int, int, int, int]:
        return self.geometry.y_shape

    @property
    def pass_flops(self) -> int:
        """FLOPs of one pass: ``2·N·H·W·Ci·Co·kh·kw`` (SPEC §8)."""
        return 2 * self.batch * self.size * self.size * self.cin * self.cout * self.k * self.k

    @property
    def flops(self) -> int:
        """FLOPs of one call of ``op``: passes · pass FLOPs."""
        return PASSES[self.op] * self.pass_flops

    def describe(self) -> str:
        return (
            f"N={self.batch} {self.size}x{self.size} Ci={self.cin} Co={self.cout} k={self.k} "
            f"s={self.stride} {self.padding} density={self.density:g}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op": self.op,
            "batch": self.batch,
            "size": self.size,
            "cin": self.cin,
            "cout": self.cout,
            "k": self.k,
            "stride": self.stride,
            "padding": self.padding,
            "density": self.density,
            "dtype": self.dtype,
            "group": self.group,
            "sweeps": [list(s) for s in self.sweeps],
            "x_shape": list(self.x_shape),
            "y_shape": list(self.y_shape),
            "pass_flops": self.pass_flops,
            "flops": self.flops,
        }


# ----------------------------------------------------------------------------- SPEC §8

SPEC_WORKLOADS: tuple[Workload, ...] = (
    Workload("online-decoder", "step", 1, 14, 16, 1, 5, 2, "SAME"),
    Workload("batch-mid", "step", 32, 28, 8, 16, 5, 1, "SAME"),
    Workload("batch-large", "step", 64, 32, 32, 32, 3, 2, "VALID"),
    Workload("gpu-large", "step", 256, 32, 64, 64, 5, 2, "SAME", gpu_only=True),
)

# ----------------------------------------------------------------------------- sweeps

# Every sweep varies one dimension around this point; the point itself is shared by all five.
SWEEP_BASE = dict(batch=16, size=16, cin=16, cout=16, k=5, stride=2, padding="SAME", density=0.1)
SWEEP_VALUES: dict[str, tuple[float, ...]] = {
    "batch": (1, 4, 16, 64),
    "map": (8, 16, 32, 64),
    "channels": (4, 8, 16, 32),
    "kernel": (1, 3, 5, 7),
    "density": (0.01, 0.1, 0.3, 1.0),
}


def _sweep_params(dim: str, value: float) -> dict[str, Any]:
    p = dict(SWEEP_BASE)
    if dim == "batch":
        p["batch"] = int(value)
    elif dim == "map":
        p["size"] = int(value)
    elif dim == "channels":
        p["cin"] = p["cout"] = int(value)
    elif dim == "kernel":
        p["k"] = int(value)
    elif dim == "density":
        p["density"] = float(value)
    else:  # pragma: no cover - SWEEP_DIMS is closed
        raise ValueError(f"unknown sweep dimension {dim!r}")
    return p


def sweep_workloads(ops: Sequence[str] = OPS) -> list[Workload]:
    """Sweep points for each op; the shared base point appears once per op, named ``op/base``."""
    out = []
    for op in ops:
        points: dict[tuple, list[tuple[str, float]]] = {}
        for dim in SWEEP_DIMS:
            for v in SWEEP_VALUES[dim]:
                key = tuple(sorted(_sweep_params(dim, v).items()))
                points.setdefault(key, []).append((dim, v))
        for key, tags in points.items():
            p = dict(key)
            if len(tags) > 1:
                name = f"{op}/base"
            else:
                dim, v = tags[0]
                name = f"{op}/{dim}={v:g}"
            out.append(
                Workload(
                    name,
                    op,
                    p["batch"],
                    p["size"],
                    p["cin"],
                    p["cout"],
                    p["k"],
                    p["stride"],
                    p["padding"],
                    p["density"],
                    group="sweep",
                    sweeps=tuple(tags),
                )
            )
    return out


def all_workloads() -> list[Workload]:
    """Every defined workload: SPEC §8 (including ``gpu-large``) and every sweep point."""
    return [*SPEC_WORKLOADS, *sweep_workloads()]


def select(patterns: Iterable[str] | None = None, *, sweeps: bool = True, gpu: bool = False) -> list[Workload]:
    """Workloads by name or glob (``"step/*"``); without patterns the default set.

    The default set is SPEC §8 (``gpu-large`` only when ``gpu``) plus, when ``sweeps``, every
    sweep point. A pattern that matches nothing raises ``ValueError`` naming the known ones.
    """
    every = all_workloads()
    pats = list(patterns or [])
    if not pats:
        chosen = [w for w in SPEC_WORKLOADS if gpu or not w.gpu_only]
        return chosen + (sweep_workloads() if sweeps else [])
    chosen, seen = [], set()
    for pat in pats:
        hits = [w for w in every if fnmatch.fnmatchcase(w.name, pat)]
        if not hits:
            raise ValueError(
                f"no workload matches {pat!r}; known: {', '.join(w.name for w in SPEC_WORKLOADS)}, "
                f"and sweep points like 'step/base', 'deconv2d/batch=4' (globs allowed: 'step/*')"
            )
        for w in hits:
            if w.name not in seen:
                seen.add(w.name)
                chosen.append(w)
    return chosen


def shrink(w: Workload) -> Workload:
    """A small version of ``w`` (same op, stride, padding, kernel) for accuracy checks."""
    return replace(
        w,
        name=w.name + "~small",
        batch=min(w.batch, 2),
        size=min(w.size, 9),
        cin=min(w.cin, 3),
        cout=min(w.cout, 4),
        k=min(w.k, 5),
    )


# ----------------------------------------------------------------------------- inputs


def make_inputs(w: Workload, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded NumPy inputs for ``w.op``: the keyword arguments :func:`call` passes on.

    ``x``/``pre_spike``/``post_spike``/``d_out`` are 0/1 at ``w.density``; ``pre_trace``,
    ``post_trace`` and ``kernel`` are positive uniform values.
    """
    rng = np.random.default_rng(seed)
    dt = np.dtype(w.dtype)
    xs, ys = w.x_shape, w.y_shape
    spikes = lambda shape: (rng.random(shape) < w.density).astype(dt)  # noqa: E731
    positive = lambda shape, hi=1.0: (rng.random(shape) * hi).astype(dt)  # noqa: E731
    kernel = positive(w.kernel_shape, 0.5) + dt.type(0.01)
    if w.op == "deconv2d":
        return {"x": spikes(xs), "kernel": kernel}
    if w.op == "deconv2d_dk":
        return {"x": positive(xs), "d_out": spikes(ys)}
    if w.op == "deconv2d_dx":
        return {"kernel": kernel, "d_out": spikes(ys)}
    inputs = {
        "kernel": kernel,
        "pre_spike": spikes(xs),
        "pre_trace": positive(xs),
        "post_spike": spikes(ys),
        "post_trace": positive(ys),
    }
    if w.op == "step":
        inputs["x"] = spikes(xs)
    return inputs


def call(backend: Any, w: Workload, inputs: dict[str, Any]) -> Any:
    """Run ``w.op`` once on ``backend`` (a :class:`convstdp.Backend`) with ``inputs``."""
    geo = dict(stride=w.stride, padding=w.padding)
    if w.op == "step":
        return backend.stdp_step(
            inputs["kernel"],
            inputs["x"],
            inputs["pre_spike"],
            inputs["pre_trace"],
            inputs["post_spike"],
            inputs["post_trace"],
            **geo,
            **STDP_PARAMS,
        )
    if w.op == "deconv2d":
        return backend.deconv2d(inputs["x"], inputs["kernel"], **geo)
    if w.op == "deconv2d_dk":
        return backend.deconv2d_dk(inputs["x"], inputs["d_out"], kernel_size=w.k, **geo)
    if w.op == "deconv2d_dx":
        return backend.deconv2d_dx(inputs["kernel"], inputs["d_out"], **geo)
    if w.op == "stdp_update":
        return backend.stdp_update(
            inputs["kernel"],
            inputs["pre_spike"],
            inputs["pre_trace"],
            inputs["post_spike"],
            inputs["post_trace"],
            **geo,
            **STDP_PARAMS,
        )
    raise ValueError(f"unknown op {w.op!r}; expected one of {', '.join(OPS)}")
