"""Benchmark workloads: a conformance case plus an operator, a group and the sweeps it is a point of.

The case (:class:`convstdp.conformance.cases.Case`) carries the geometry, the batch, the spike
density and the input kind; the operator (:data:`convstdp.conformance.operators.OPS`) says how to
call it and how many passes it costs. So a workload is timed on exactly the inputs the harness
checks it on (:func:`convstdp.conformance.cases.make_inputs`, ``inputs="sim"``: SPEC §8's spikes at
density d, ``x`` the presynaptic spike train, dense decayed traces), and there is one name per
concept across cases, workloads and geometry.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from convstdp.conformance.cases import GPU_ONLY_WORKLOADS, Case, parse_case
from convstdp.conformance.cases import SPEC_WORKLOADS as SPEC_CASES
from convstdp.conformance.operators import OPS, Operator

__all__ = ["Workload", "SPEC_WORKLOADS", "SWEEP_DIMS", "DENSITIES", "all_workloads", "select", "sweep_workloads"]

SWEEP_DIMS: tuple[str, ...] = ("density", "batch", "map", "channels", "kernel")
DENSITIES: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)  # SPEC §8's sweep range
DENSITY_SWEPT = ("batch-mid", "batch-large")


@dataclass(frozen=True)
class Workload:
    """One timed case: ``op`` (an operator name) on ``case``."""

    name: str
    op: str
    case: Case
    group: str = "spec"  # "spec" (SPEC §8 as is) or "sweep"
    sweeps: tuple[tuple[str, float], ...] = field(default=())  # (dimension, value) it is a point of
    gpu_only: bool = False

    @property
    def operator(self) -> Operator:
        return OPS[self.op]

    @property
    def density(self) -> float:
        return self.case.density

    @property
    def flops(self) -> int:
        """FLOPs of one call: passes · ``2·N·H·W·Ci·Co·kh·kw`` (SPEC §8)."""
        return self.operator.flops(self.case)

    @property
    def pass_flops(self) -> int:
        return 2 * self.case.macs

    def describe(self) -> str:
        c = self.case
        return (
            f"{self.op}: N={c.batch}, {c.in_size[0]}×{c.in_size[1]}, Ci={c.ci}, Co={c.co}, "
            f"k={c.kernel[0]}×{c.kernel[1]}, stride {c.stride[0]}, {c.padding}, spike density {c.density:g}, float32"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op": self.op,
            "case": self.case.name,
            "group": self.group,
            "sweeps": [list(s) for s in self.sweeps],
            "density": self.density,
            "describe": self.describe(),
            "pass_flops": self.pass_flops,
            "flops": self.flops,
        }


SPEC_WORKLOADS: tuple[Workload, ...] = tuple(
    Workload(name, "stdp_step", parse_case(case), gpu_only=name in GPU_ONLY_WORKLOADS)
    for name, case in SPEC_CASES.items()
)
_SPEC = {w.name: w for w in SPEC_WORKLOADS}

# The scaling sweeps vary one dimension of this step (SPEC §8 inputs) around its base point.
_BASE = parse_case("s2-same-k5x5-m16x16-c16to16-n16-f32-sim-float-d0.1-sim")
_SCALING: dict[str, tuple[tuple[int, ...], Callable[[int], dict[str, Any]]]] = {  # values, the case fields they set
    "batch": ((1, 4, 16, 64), lambda v: {"batch": v}),
    "map": ((8, 16, 32, 64), lambda v: {"in_size": (v, v)}),
    "channels": ((4, 8, 16, 32), lambda v: {"ci": v, "co": v}),
    "kernel": ((1, 3, 5, 7), lambda v: {"kernel": (v, v)}),
}


def _scaled(dim: str, v: int) -> Case:
    return replace(_BASE, **_SCALING[dim][1](v))


def sweep_workloads() -> list[Workload]:
    """The density sweep of ``batch-mid`` and ``batch-large`` (their SPEC point, density 0.1, is the
    SPEC workload itself) and the scaling sweeps of the step around ``step/base``."""
    out = [
        Workload(f"{spec}/density={d:g}", "stdp_step", replace(_SPEC[spec].case, density=d), "sweep", (("density", d),))
        for spec in DENSITY_SWEPT
        for d in DENSITIES
        if d != _SPEC[spec].density
    ]
    points = [(dim, v) for dim, (values, _) in _SCALING.items() for v in values]
    base_tags = tuple((dim, float(v)) for dim, v in points if _scaled(dim, v) == _BASE)  # one per dimension
    out.append(Workload("step/base", "stdp_step", _BASE, "sweep", base_tags))
    out += [
        Workload(f"step/{dim}={v}", "stdp_step", _scaled(dim, v), "sweep", ((dim, float(v)),))
        for dim, v in points
        if _scaled(dim, v) != _BASE
    ]
    return out


def operator_workloads() -> list[Workload]:
    """Each operator alone on each SPEC §8 case, named ``<operator>/<workload>`` (chosen by name only)."""
    return [
        Workload(f"{op}/{w.name}", op, w.case, "operator", gpu_only=w.gpu_only)
        for op in OPS
        if op != "stdp_step"
        for w in SPEC_WORKLOADS
    ]


def all_workloads() -> list[Workload]:
    return [*SPEC_WORKLOADS, *sweep_workloads(), *operator_workloads()]


def select(patterns: Iterable[str] | None = None, *, sweeps: bool = True, gpu: bool = False) -> list[Workload]:
    """Workloads by name or glob (``"step/*"``, ``"batch-mid/*"``, ``"deconv2d/*"``); without patterns
    SPEC §8 (``gpu-large`` only with ``gpu``) plus, with ``sweeps``, the sweeps. A pattern that
    matches nothing raises ``ValueError`` naming the known ones."""
    pats = list(patterns or [])
    if not pats:
        return [w for w in SPEC_WORKLOADS if gpu or not w.gpu_only] + (sweep_workloads() if sweeps else [])
    every = all_workloads()
    chosen: dict[str, Workload] = {}
    for pat in pats:
        hits = [w for w in every if fnmatch.fnmatchcase(w.name, pat)]
        if not hits:
            raise ValueError(
                f"no workload matches {pat!r}; known: {', '.join(_SPEC)}, sweep points such as "
                "'batch-mid/density=1', 'step/base', 'step/map=32', operators alone such as 'deconv2d/batch-mid' "
                "(globs allowed: 'step/*')"
            )
        chosen.update((w.name, w) for w in hits)
    return list(chosen.values())
