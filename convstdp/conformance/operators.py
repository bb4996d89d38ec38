"""The operators as data: how to call each one through :class:`convstdp.Backend`, which inputs it
reads, which outputs it returns (in order) and how many convolution passes it costs.

One table for the reference, the conformance harness and the benchmark: adding an operator is one
:class:`Operator` record here (its expectation lives in :mod:`convstdp.conformance.expectation`)
plus its implementations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from convstdp.conformance.cases import Case

__all__ = ["Operator", "OPERATORS", "OPERATOR_NAMES", "OPS", "Inputs"]

Inputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class Operator:
    """How to call one operator (the :class:`convstdp.Backend` method of its name, with the inputs
    ``order`` names as positional arguments, ``stride``, ``padding`` and ``keywords(case)``), what it
    reads and returns (output names in order), and its cost in passes: one pass is
    ``2·N·H·W·Ci·Co·kh·kw`` FLOPs (SPEC §8)."""

    name: str
    args: tuple[str, ...]
    outputs: tuple[str, ...]
    passes: int
    order: tuple[str, ...] = ()  # the positional order, when it is not ``args``'
    keywords: Callable[[Case], dict[str, Any]] = lambda case: {}

    def call(self, backend: Any, case: Case, inputs: Inputs) -> tuple[Any, ...]:
        """The outputs of one call on ``backend``, always as a tuple."""
        pos = (inputs[a] for a in self.order or self.args)
        out = getattr(backend, self.name)(*pos, stride=case.stride, padding=case.padding, **self.keywords(case))
        return tuple(out) if len(self.outputs) > 1 else (out,)

    def flops(self, case: Case) -> int:
        """FLOPs of one call on ``case``."""
        return self.passes * 2 * case.macs


_STDP_ARGS = ("kernel", "pre_spike", "pre_trace", "post_spike", "post_trace")
_STEP_ORDER = ("kernel", "x", *_STDP_ARGS[1:])


def _params(case: Case) -> dict[str, Any]:
    return dict(case.params)


OPERATORS: tuple[Operator, ...] = (
    Operator("deconv2d", ("x", "kernel"), ("y",), passes=1),
    Operator("deconv2d_dk", ("x", "d_out"), ("dK",), passes=1, keywords=lambda c: {"kernel_size": c.kernel}),
    Operator("deconv2d_dx", ("kernel", "d_out"), ("dX",), passes=1),
    Operator("stdp_update", _STDP_ARGS, ("W'", "dW"), passes=2, keywords=_params),
    Operator("stdp_step", ("x", *_STDP_ARGS), ("y", "W'", "dW", "dX"), passes=4, order=_STEP_ORDER, keywords=_params),
)
OPERATOR_NAMES = tuple(op.name for op in OPERATORS) + ("adjoint",)
OPS = {op.name: op for op in OPERATORS}
