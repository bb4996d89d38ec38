"""convstdp: the convolution math behind spiking networks that learn by trace STDP.

A NumPy reference of the transposed convolution ``deconv2d``, its kernel update ``deconv2d_dk``,
its back-transmitted input ``deconv2d_dx`` and the trace-STDP weight update ``stdp_update``
(SPEC §3), fast backends behind one interface, and a conformance harness that proves they agree.
"""

from convstdp.backends import (
    Backend,
    BackendError,
    BackendUnavailable,
    available_backends,
    get_backend,
    register_backend,
)

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "available_backends",
    "get_backend",
    "register_backend",
    "__version__",
]
