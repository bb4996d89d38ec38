"""The NumPy reference: SPEC §3 written for a reader, independent of every fast path.

``convstdp.reference.deconv2d`` and friends validate their inputs (via :mod:`convstdp.geometry`)
and return ``np.ndarray`` of the SPEC §4 result dtype. Work is accumulated in float64.
"""

from convstdp.reference.backend import ReferenceBackend, create_backend
from convstdp.reference.ops import (
    advance,
    backtransmit,
    deconv2d,
    deconv2d_dk,
    deconv2d_dx,
    stdp_update,
)

__all__ = [
    "deconv2d",
    "deconv2d_dk",
    "deconv2d_dx",
    "stdp_update",
    "backtransmit",
    "advance",
    "ReferenceBackend",
    "create_backend",
]
