"""Synapse components (SPEC §9): the seed, ngc-learn's ``TraceSTDPDeconvSynapse``, on convstdp's math.

- :class:`TraceSTDPDeconvSynapse`: the component on any backend (NumPy or JAX arrays).
- :mod:`convstdp.synapses.functional`: the same synapse as pure JAX functions of a pytree state,
  for ``jax.jit`` and ``lax.scan`` (imported lazily: needs JAX).
- :mod:`convstdp.synapses.ngclearn_dropin`: a drop-in for ngc-learn models (needs ngclearn).
"""

from convstdp.synapses.component import COMPARTMENTS, SAVE_KEYS, Compartment, TraceSTDPDeconvSynapse

__all__ = ["TraceSTDPDeconvSynapse", "Compartment", "COMPARTMENTS", "SAVE_KEYS"]
