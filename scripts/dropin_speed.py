"""Speed of a jitted T-step synapse loop: convstdp's ngc-learn drop-in vs ngc-learn's original.

Each implementation runs as ngc-learn runs a model: a Context holding the synapse and one
``MethodProcess`` (``advance_state >> evolve >> backtransmit``); the process's pure compiled
function is the body of a ``lax.scan`` over ``T`` steps, the whole loop one ``jax.jit``. Every
step stores the exogenous values (spikes at the workload's density, dense traces; SPEC §8) in the
synapse's compartments first. The inputs come from a pool of ``--pool`` distinct steps
(indexed ``t % pool``), so memory stays small at any ``T``. For reference the same loop is
also timed on :mod:`convstdp.synapses.functional` directly (``convstdp-functional``).

Compile time (``lower`` + ``compile``) is measured apart from the run time; runs are timed after
one warm-up, ``--samples`` times, each to ``block_until_ready``.

    python scripts/dropin_speed.py --out dropin.json [--markdown dropin.md] [--steps 100] [--samples 5]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from convstdp import environment
from convstdp.conformance.cases import SPEC_WORKLOADS, STDP_PARAMS, make_inputs, parse_case
from convstdp.present import fmt_num, fmt_time, table, write_json

# The SPEC §8 workloads that fit ngc-learn's component (square maps and kernels, one stride) on a CPU.
WORKLOADS = {w: parse_case(SPEC_WORKLOADS[w]) for w in ("online-decoder", "batch-mid")}
FIELDS = ("inputs", "preSpike", "preTrace", "postSpike", "postTrace")
STDP = STDP_PARAMS["sim"]  # what a simulation runs: every branch of the seed's evolve taken
_ids = itertools.count()


def _pool(wl, size, seed):
    """``size`` steps of the workload's SPEC §8 inputs (conformance's own, one seed per step), stacked
    along a leading axis, in the order of ``FIELDS`` (``inputs`` is the pre-spike array, as in the seed)."""
    steps = [make_inputs(wl, seed + t) for t in range(size)]
    return tuple(np.stack([s[k] for s in steps]) for k in ("x", "pre_spike", "pre_trace", "post_spike", "post_trace"))


def _ngclearn_loop(cls, wl, steps, key):
    """(jittable loop(state, pool) -> state, initial state, weights key) for an ngc-learn component."""
    import jax
    from jax import lax
    from ngclearn import Context, MethodProcess
    from ngcsimlib.global_state import stateManager

    with Context(f"dropin_speed_{cls.__module__.partition('.')[0]}_{next(_ids)}") as ctx:
        syn = cls(
            "syn", (*wl.kernel, wl.ci, wl.co), wl.in_size, stride=wl.stride[0], padding=wl.padding,
            batch_size=wl.batch, key=key, **STDP,
        )  # fmt: skip
        step = MethodProcess("step") >> syn.advance_state >> syn.evolve >> syn.backtransmit
    fn = step.run.compiled.source_fn  # the pure step ngc-learn jits: (state dict, loop args) -> (state, None)
    prefix = ctx.path + ":"
    state = {k: v for k, v in stateManager.state.items() if k.startswith(prefix)}
    targets = [getattr(syn, f).target for f in FIELDS]

    def loop(state, pool):
        def body(st, t):
            st = dict(st)
            for tgt, arr in zip(targets, pool, strict=True):
                st[tgt] = lax.dynamic_index_in_dim(arr, t % pool[0].shape[0], keepdims=False)
            st, _ = fn(st, [])
            return st, None

        out, _ = lax.scan(body, state, jax.numpy.arange(steps))
        return out

    return loop, state, syn.weights.target


def _functional_loop(wl, steps, key):
    import jax
    from jax import lax

    from convstdp.synapses import functional as fn
    from convstdp.synapses.ngclearn_dropin import TraceSTDPDeconvSynapse as DropIn

    # the same initial filters as the ngc-learn components (built by the drop-in for this key)
    _, state0, wkey = _ngclearn_loop(DropIn, wl, steps, key)
    cfg = fn.SynapseConfig.make(
        (*wl.kernel, wl.ci, wl.co), wl.in_size, STDP["A_plus"], STDP["A_minus"], STDP["pretrace_target"],
        wl.stride, wl.padding, 1.0, STDP["w_bound"], STDP["w_decay"], wl.batch,
    )  # fmt: skip
    state = cfg.init(state0[wkey], STDP["eta"])

    def loop(state, pool):
        def body(st, t):
            xs = fn.StepInputs(*(lax.dynamic_index_in_dim(a, t % a.shape[0], keepdims=False) for a in pool))
            return cfg.step(st, xs), None

        out, _ = lax.scan(body, state, jax.numpy.arange(steps))
        return out

    return loop, state, "weights"


def measure(impl, wl_name, steps, samples, pool_size, seed=0):
    import jax

    wl = WORKLOADS[wl_name]
    key = jax.random.PRNGKey(seed)
    if impl == "convstdp-functional":
        loop, state, wkey = _functional_loop(wl, steps, key)
    else:
        if impl == "ngclearn-original":
            from ngclearn.components.synapses.convolution.traceSTDPDeconvSynapse import TraceSTDPDeconvSynapse as cls
        else:
            from convstdp.synapses.ngclearn_dropin import TraceSTDPDeconvSynapse as cls
        loop, state, wkey = _ngclearn_loop(cls, wl, steps, key)
    pool = tuple(jax.numpy.asarray(a) for a in _pool(wl, pool_size, seed))
    t0 = time.perf_counter()
    compiled = jax.jit(loop).lower(state, pool).compile()
    compile_s = time.perf_counter() - t0
    out = compiled(state, pool)  # warm-up
    jax.block_until_ready(out)
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        out = compiled(state, pool)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
    weights = np.asarray(out.weights if impl == "convstdp-functional" else out[wkey])
    return dict(
        impl=impl,
        workload=wl_name,
        steps=steps,
        compile_s=compile_s,
        samples_s=times,
        median_s=statistics.median(times),
        min_s=min(times),
        per_step_us=statistics.median(times) / steps * 1e6,
    ), weights


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--markdown", help="also write a Markdown table here")
    ap.add_argument("--steps", type=int, default=100, help="T, steps per jitted loop (default 100)")
    ap.add_argument("--samples", type=int, default=5, help="timed runs after one warm-up (default 5, at least 5)")
    ap.add_argument("--pool", type=int, default=10, help="distinct input steps, cycled (default 10)")
    ap.add_argument("--workload", action="append", choices=sorted(WORKLOADS), help="default: all")
    ap.add_argument(
        "--impl",
        action="append",
        choices=["convstdp-dropin", "ngclearn-original", "convstdp-functional"],
        help="default: all three",
    )
    args = ap.parse_args(argv)
    if args.samples < 5:
        ap.error("--samples must be at least 5")
    try:
        import jax  # noqa: F401
        import ngclearn  # noqa: F401
    except ImportError as err:
        print(f"dropin_speed needs jax and ngclearn: {err}", file=sys.stderr)
        return 2

    impls = args.impl or ["convstdp-dropin", "ngclearn-original", "convstdp-functional"]
    rows, results = [], []
    for wl in args.workload or list(WORKLOADS):
        weights = {}
        by_impl = {}
        for impl in impls:
            res, weights[impl] = measure(impl, wl, args.steps, args.samples, args.pool)
            by_impl[impl] = res
            results.append(res)
        base = by_impl.get("ngclearn-original")
        ref_w = weights.get("ngclearn-original")
        for impl, res in by_impl.items():
            if ref_w is not None:
                res["final_weights_max_rel_diff_vs_original"] = float(
                    np.abs(weights[impl].astype(np.float64) - ref_w).max() / max(np.abs(ref_w).max(), 1e-30)
                )
            if base is not None:
                res["speedup_vs_original"] = base["median_s"] / res["median_s"]
            rows.append(
                [
                    wl, impl, f"{res['compile_s']:.2f}", fmt_time(res["median_s"]), fmt_time(res["min_s"]),
                    fmt_time(res["median_s"] / args.steps), f"{fmt_num(res.get('speedup_vs_original'))}×",
                    f"{res.get('final_weights_max_rel_diff_vs_original', float('nan')):.1e}",
                ]
            )  # fmt: skip
    headers = ["workload", "implementation", "compile s", f"median / {args.steps} steps", "min", "per step",
               "vs original", "final W rel. diff vs original"]  # fmt: skip
    print(table(headers, rows))
    payload = dict(
        steps=args.steps, samples=args.samples, pool=args.pool, stdp=STDP,
        workloads={w: c.name for w, c in WORKLOADS.items()}, environment=environment.collect(), results=results,
    )  # fmt: skip
    write_json(args.out, payload)
    if args.markdown:
        intro = (
            f"Jitted {args.steps}-step loops (one `jax.jit` around `lax.scan`), median of {args.samples} runs after "
            f"a warm-up, compile time apart; spikes at the workload's density, dense traces (SPEC §8), "
            f"STDP set `sim`. Commit {payload['environment'].get('git_commit')}.\n\n"
        )
        Path(args.markdown).write_text(
            "# ngc-learn drop-in vs original component\n\n" + intro + table(headers, rows, "md") + "\n"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
