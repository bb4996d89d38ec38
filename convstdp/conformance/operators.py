"""The operators as data: how to call each one through :class:`convstdp.Backend`, which inputs it
reads, which outputs it returns (in order) and how many convolution passes it costs.

One table for the reference, the conformance harness and the benchmark: adding an operator is one
:class:`Operator` record here (its expectation lives in :mod:`convstdp.conformance.expectation`)
plus its implementations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from convstdp.conformance.cases import Case

__all__ = ["Operator", "OPERATORS", "OPERATOR_NAMES", "OPS", "Inputs"]

Inputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class Operator:
    """How to call one operator, what it reads and returns (output names in order), and its cost in
    passes: one pass is ``2·N·H·W·Ci·Co·kh·kw`` FLOPs (SPEC §8)."""

    name: str
    args: tuple[str, ...]
    outputs: tuple[str, ...]
    call: Callable[[Any, Case, Inputs], Sequence[Any]]
    passes: int

    def flops(self, case: Case) -> int:
        """FLOPs of one call on ``case``."""
        return self.passes * 2 * case.macs


def _call_deconv2d(be: Any, c: Case, i: Inputs) -> tuple[Any]:
    return (be.deconv2d(i["x"], i["kernel"], stride=c.stride, padding=c.padding),)


def _call_dk(be: Any, c: Case, i: Inputs) -> tuple[Any]:
    return (be.deconv2d_dk(i["x"], i["d_out"], kernel_size=c.kernel, stride=c.stride, padding=c.padding),)


def _call_dx(be: Any, c: Case, i: Inputs) -> tuple[Any]:
    return (be.deconv2d_dx(i["kernel"], i["d_out"], stride=c.stride, padding=c.padding),)


_STDP_ARGS = ("kernel", "pre_spike", "pre_trace", "post_spike", "post_trace")


def _call_stdp(be: Any, c: Case, i: Inputs) -> tuple[Any, Any]:
    out = be.stdp_update(*(i[a] for a in _STDP_ARGS), stride=c.stride, padding=c.padding, **c.params)
    return tuple(out)


def _call_step(be: Any, c: Case, i: Inputs) -> tuple[Any, Any, Any, Any]:
    k, *rest = (i[a] for a in _STDP_ARGS)
    out = be.stdp_step(k, i["x"], *rest, stride=c.stride, padding=c.padding, **c.params)
    return tuple(out)


OPERATORS: tuple[Operator, ...] = (
    Operator("deconv2d", ("x", "kernel"), ("y",), _call_deconv2d, passes=1),
    Operator("deconv2d_dk", ("x", "d_out"), ("dK",), _call_dk, passes=1),
    Operator("deconv2d_dx", ("kernel", "d_out"), ("dX",), _call_dx, passes=1),
    Operator("stdp_update", _STDP_ARGS, ("W'", "dW"), _call_stdp, passes=2),
    Operator("stdp_step", ("x", *_STDP_ARGS), ("y", "W'", "dW", "dX"), _call_step, passes=4),
)
OPERATOR_NAMES = tuple(op.name for op in OPERATORS) + ("adjoint",)
OPS = {op.name: op for op in OPERATORS}
