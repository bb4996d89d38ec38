"""A drop-in for ngc-learn's ``TraceSTDPDeconvSynapse`` whose math runs on convstdp's JAX backend.

::

    from ngclearn import Context, MethodProcess
    from convstdp.synapses.ngclearn_dropin import TraceSTDPDeconvSynapse   # instead of ngc-learn's

    with Context("model") as ctx:
        syn = TraceSTDPDeconvSynapse("syn", (5, 5, 16, 1), (14, 14), A_plus=1.0, A_minus=0.5, stride=2,
                                     padding="SAME", key=jax.random.PRNGKey(0))
        step = MethodProcess("step") >> syn.advance_state >> syn.evolve >> syn.backtransmit

It subclasses ngc-learn's class (``isinstance`` holds) and keeps its constructor arguments,
compartments (names, shapes, ``key``), ``save``/``load`` (ngc-learn's ``JaxComponent`` ones,
same ``npz`` keys) and method names. Its compilable methods are written the way ngcsimlib's
transpiler expects (compartment ``get``/``set``, module-level functions), so they compile
into ngc-learn's ``MethodProcess``/``JointProcess`` and run under their ``jax.jit`` and
``scan``. Each calls the pure functions of :mod:`convstdp.synapses.functional`, i.e. the JAX
backend's formulations at ``Precision.HIGHEST``.

Same initial filters as ngc-learn for the same ``key`` (the same key split, the same
``filter_init`` call). Differences, all where ngc-learn cannot work or silently misreads:

- ``padding`` defaults to ``"SAME"`` (ngc-learn's default ``None`` fails in its constructor);
  explicit pads ``((lo_h, hi_h), (lo_w, hi_w))`` work.
- ``x_shape = (H, W)`` may be rectangular (ngc-learn's ``x_size, x_size = x_shape`` keeps the
  width only), kernels may be rectangular and ``stride`` may be ``(sh, sw)``.
- ``biases`` is ``(1, Co)`` zeros (ngc-learn's STDP synapse holds the scalar ``0.0``); an
  ngc-learn file's scalar loads and broadcasts.
- ``reset`` also works when called directly (ngc-learn's calls ``.get()`` on a tuple, which
  only its transpiler removes).
- ``resist_scale`` (ngc-learn's deprecated name) and ``g_conduct_factor`` are both accepted.

Needs ngclearn; importing this module without it raises ``ImportError``.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax import random
from ngclearn import Compartment, compilable
from ngclearn.components.jaxComponent import JaxComponent
from ngclearn.components.synapses.convolution.traceSTDPDeconvSynapse import (
    TraceSTDPDeconvSynapse as _NgclearnTraceSTDPDeconvSynapse,
)
from ngclearn.utils.distribution_generator import DistributionGenerator

from convstdp.synapses import functional as _fn

__all__ = ["TraceSTDPDeconvSynapse"]


# Module-level functions the transpiled methods call (ngcsimlib resolves them in this module's
# globals, which a process merges with other components' globals: hence the unlikely names).


def _convstdp_dropin_advance(cfg: _fn.SynapseConfig, inputs: Any, weights: Any, biases: Any) -> Any:
    state = _fn.SynapseState(inputs, None, weights, biases, *([None] * 7))
    return _fn.advance(cfg, state).outputs


def _convstdp_dropin_evolve(
    cfg: _fn.SynapseConfig, weights: Any, eta: Any, pre_spike: Any, pre_trace: Any, post_spike: Any, post_trace: Any
) -> tuple[Any, Any]:
    state = _fn.SynapseState(None, None, weights, None, eta, pre_spike, pre_trace, post_spike, post_trace, None, None)
    out = _fn.evolve(cfg, state)
    return out.weights, out.dWeights


def _convstdp_dropin_backtransmit(cfg: _fn.SynapseConfig, weights: Any, post_spike: Any) -> Any:
    state = _fn.SynapseState(None, None, weights, None, None, None, None, post_spike, None, None, None)
    return _fn.backtransmit(cfg, state).dInputs


class TraceSTDPDeconvSynapse(_NgclearnTraceSTDPDeconvSynapse):
    """ngc-learn's trace-STDP deconvolutional synapse with convstdp's JAX math (see the module notes).

    Arguments as ngc-learn's (``key=`` among ``**kwargs``), plus ``resist_scale`` (alias of
    ``g_conduct_factor``), ``precision`` (``"highest"``, ``"tf32"``, ``"bf16"``) and
    ``formulation`` (``"auto"``, ``"conv"``, ``"phase"``) of the JAX backend.
    """

    def __init__(
        self,
        name,
        shape,
        x_shape,
        A_plus,
        A_minus,
        eta=0.0,
        pretrace_target=0.0,
        filter_init=None,
        stride=1,
        padding="SAME",
        g_conduct_factor=1.0,
        w_bound=0.0,
        w_decay=0.0,
        batch_size=1,
        *,
        resist_scale=None,
        precision="highest",
        formulation="auto",
        **kwargs,
    ):
        JaxComponent.__init__(self, name, **kwargs)  # the key compartment, as ngc-learn's base does
        if resist_scale is not None:
            g_conduct_factor = resist_scale
        cfg = _fn.SynapseConfig.make(
            shape,
            x_shape,
            A_plus,
            A_minus,
            pretrace_target,
            stride,
            padding,
            g_conduct_factor,
            w_bound,
            w_decay,
            batch_size,
            precision=precision,
            formulation=formulation,
        )
        self._cfg = cfg
        self.shape = tuple(shape)
        self.x_size = cfg.x_shape[2]  # ngc-learn's attribute (its square maps: the width)
        self.g_conduct_factor = cfg.resist_scale
        self.resist_scale = cfg.resist_scale
        self.stride = cfg.stride
        self.padding = padding
        self.pad_args = None
        self.batch_size = cfg.x_shape[0]
        self.eta_init = eta
        self.w_bound, self.w_decay = cfg.w_bound, cfg.w_decay
        self.pretrace_target = cfg.pretrace_target
        self.Aplus, self.Aminus = cfg.A_plus, cfg.A_minus
        self.in_shape, self.out_shape = cfg.x_shape, cfg.y_shape
        self.delta_shape, self.x_delta_shape = (0, 0), (0, 0)  # ngc-learn's shape corrections: not needed

        # the filters exactly as ngc-learn draws them for this key
        self.filter_init = filter_init
        tmp_key, *subkeys = random.split(self.key.get(), 4)
        if self.filter_init is None:
            self.filter_init = DistributionGenerator.uniform(0.025, 0.8)
        weights = jnp.asarray(self.filter_init(self.shape, subkeys[0]), cfg.dtype)
        if tuple(weights.shape) != cfg.kernel_shape:
            raise ValueError(f"filter_init gave filters of shape {tuple(weights.shape)}, expected {cfg.kernel_shape}")
        self.bias_init = None

        x0 = jnp.zeros(self.in_shape, cfg.dtype)
        y0 = jnp.zeros(self.out_shape, cfg.dtype)
        self.inputs = Compartment(x0)
        self.outputs = Compartment(y0)
        self.weights = Compartment(weights)
        self.biases = Compartment(jnp.zeros((1, cfg.kernel_shape[3]), cfg.dtype))
        self.dWeights = Compartment(jnp.zeros(cfg.kernel_shape, cfg.dtype))
        self.dInputs = Compartment(x0)
        self.preSpike = Compartment(x0)
        self.preTrace = Compartment(x0)
        self.postSpike = Compartment(y0)
        self.postTrace = Compartment(y0)
        self.eta = Compartment(jnp.ones((1, 1), cfg.dtype) * eta)

    @compilable
    def advance_state(self):
        outputs = _convstdp_dropin_advance(self._cfg, self.inputs.get(), self.weights.get(), self.biases.get())
        self.outputs.set(outputs)

    @compilable
    def evolve(self):
        weights, dWeights = _convstdp_dropin_evolve(
            self._cfg,
            self.weights.get(),
            self.eta.get(),
            self.preSpike.get(),
            self.preTrace.get(),
            self.postSpike.get(),
            self.postTrace.get(),
        )
        self.weights.set(weights)
        self.dWeights.set(dWeights)

    @compilable
    def backtransmit(self):
        dInputs = _convstdp_dropin_backtransmit(self._cfg, self.weights.get(), self.postSpike.get())
        self.dInputs.set(dInputs)

    @compilable
    def reset(self):
        preVals = jnp.zeros(self.in_shape)
        postVals = jnp.zeros(self.out_shape)
        self.inputs.set(preVals)
        self.outputs.set(postVals)
        self.preSpike.set(preVals)
        self.postSpike.set(postVals)
        self.preTrace.set(preVals)
        self.postTrace.set(postVals)

    @classmethod
    def help(cls):
        info = _NgclearnTraceSTDPDeconvSynapse.help()
        info[cls.__name__] = info.pop(_NgclearnTraceSTDPDeconvSynapse.__name__)
        info[cls.__name__]["math"] = "convstdp JAX backend (convstdp.synapses.functional), Precision.HIGHEST"
        info["hyperparameters"].update(
            padding="'SAME' (default; ngc-learn's None fails), 'VALID' or ((lo_h, hi_h), (lo_w, hi_w))",
            x_shape="(H, W) of one input map; rectangular allowed",
            resist_scale="alias of g_conduct_factor",
            precision="'highest' (default), 'tf32' or 'bf16'",
            formulation="'auto' (default), 'conv' or 'phase'",
        )
        info["compartments"]["states"]["biases"] = "Base-rate/bias parameter values (1, Co)"
        return info
