"""The reference as a backend (``get_backend("reference")``): the oracle behind the interface."""

from __future__ import annotations

from typing import Any

import numpy as np

from convstdp.reference import ops


class ReferenceBackend:
    """SPEC §3 in NumPy, float64 accumulation; returns ``np.ndarray`` of the SPEC §4 dtype."""

    name = "reference"
    version = f"numpy {np.__version__}"
    precision = "highest"

    def devices(self) -> list[str]:
        return ["cpu"]

    deconv2d = staticmethod(ops.deconv2d)
    deconv2d_dk = staticmethod(ops.deconv2d_dk)
    deconv2d_dx = staticmethod(ops.deconv2d_dx)

    @staticmethod
    def stdp_update(
        kernel: Any,
        pre_spike: Any,
        pre_trace: Any,
        post_spike: Any,
        post_trace: Any,
        *,
        stride: Any,
        padding: Any,
        params: Any,
    ) -> tuple[np.ndarray, np.ndarray]:
        return ops.stdp_update(
            kernel, pre_spike, pre_trace, post_spike, post_trace, stride=stride, padding=padding, **params._asdict()
        )


def create_backend() -> Any:
    return ReferenceBackend()
