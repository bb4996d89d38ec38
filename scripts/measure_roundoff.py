"""Measure what correct implementations' round-off does against the conformance tolerance bound.

For each size tier × operator × implementation it prints the worst ``error / bound`` (the max over
every element of every case of the tier) under three bounds: the previous policy
(``4·u·(sqrt(n)+r)·Σ|terms|``), the current one (:mod:`convstdp.conformance.tolerance`, its ``c``),
and the current scales with ``c = 1`` (which is the ``c`` a case would need: the margin). Then, per
tier × operator, the *weakest* detection over the tier's float32 cases (the min over cases of the
per-case max ratio) of three planted errors:

- ``1e-4 uniform``: every output element off by a relative ``1e-4``;
- ``bf16 arrays``: the float inputs rounded to bfloat16, everything else exact (float64);
- ``bf16 bug``: the harness's planted bug (``broken.Bfloat16Inputs``), which also rounds the STDP
  scalars that it folds into dK's operands (``A_plus·post_spike``, ``A_minus·post_trace``).

Implementations: ``seq`` (this file: every output element accumulated term by term in the result
dtype, no FMA, in (n, h, w) order for dK: the plain sequential sum, the worst order for growth of
round-off), ``numba``, ``jax``, ``torch`` (the PyTorch peer), ``reference`` (float64, rounded once).

Tiers: ``small`` (the quick grid's small cases; ``--full``: the full grid's too, for every
implementation but JAX, which compiles per shape), ``large`` (the quick grid's large tier),
``workload-sim`` (SPEC §8 at full size, the workloads grid's simulation inputs) and
``workload-random`` (the same geometries with the grids' random signed inputs). Each tier is split
by result dtype (``f32`` / ``f64``; mixed inputs give ``f64``).

    NUMBA_CACHE_DIR=/tmp/h3-numba python3 scripts/measure_roundoff.py [--tiers small,large,...]
        [--impls seq,numba,jax,torch,reference] [--full] [--seed 0] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numba import njit, prange

from convstdp import geometry
from convstdp.backends import Backend, get_backend
from convstdp.conformance import broken, cases, checks
from convstdp.conformance import tolerance as tol
from convstdp.conformance.cases import Case
from convstdp.conformance.expectation import Expectation, expect
from convstdp.conformance.operators import OPERATORS, Inputs, Operator
from convstdp.reference import ops as ref

OLD_C = 4.0
PLANTED_REL = 1e-4

# ----------------------------------------------------------------------------- sequential sums


@njit(parallel=True, cache=True)
def _seq_deconv(x, k, sh, sw, lo_h, lo_w, out):  # pragma: no cover - numba
    """``out[n,p,q,o] = Σ x[n,h,w,i]·K[a,b,i,o]``, one accumulator in out's dtype, (h, w, i) order."""
    N, H, W, Ci = x.shape
    kh, kw, _, Co = k.shape
    _, Ho, Wo, _ = out.shape
    for r in prange(N * Ho):
        n, p = r // Ho, r % Ho
        for q in range(Wo):
            for o in range(Co):
                acc = out[n, p, q, o]
                for h in range(H):
                    a = h * sh + lo_h - p
                    if a < 0 or a >= kh:
                        continue
                    for w in range(W):
                        b = w * sw + lo_w - q
                        if b < 0 or b >= kw:
                            continue
                        for i in range(Ci):
                            acc += x[n, h, w, i] * k[a, b, i, o]
                out[n, p, q, o] = acc


@njit(parallel=True, cache=True)
def _seq_dk(x, d, sh, sw, lo_h, lo_w, out):  # pragma: no cover - numba
    """``out[a,b,i,o] = Σ_{n,h,w} x[n,h,w,i]·d[n,p,q,o]``, one accumulator, (n, h, w) order."""
    N, H, W, Ci = x.shape
    _, Ho, Wo, Co = d.shape
    kh, kw, _, _ = out.shape
    for r in prange(kh * kw * Ci * Co):
        a, rest = r // (kw * Ci * Co), r % (kw * Ci * Co)
        b, rest = rest // (Ci * Co), rest % (Ci * Co)
        i, o = rest // Co, rest % Co
        acc = out[a, b, i, o]
        for n in range(N):
            for h in range(H):
                p = h * sh + lo_h - a
                if p < 0 or p >= Ho:
                    continue
                for w in range(W):
                    q = w * sw + lo_w - b
                    if q < 0 or q >= Wo:
                        continue
                    acc += x[n, h, w, i] * d[n, p, q, o]
        out[a, b, i, o] = acc


@njit(parallel=True, cache=True)
def _seq_dx(k, d, sh, sw, lo_h, lo_w, out):  # pragma: no cover - numba
    """``out[n,h,w,i] = Σ_{a,b,o} K[a,b,i,o]·d[n,p,q,o]``, one accumulator, (a, b, o) order."""
    N, H, W, Ci = out.shape
    kh, kw, _, Co = k.shape
    _, Ho, Wo, _ = d.shape
    for r in prange(N * H):
        n, h = r // H, r % H
        for w in range(W):
            for i in range(Ci):
                acc = out[n, h, w, i]
                for a in range(kh):
                    p = h * sh + lo_h - a
                    if p < 0 or p >= Ho:
                        continue
                    for b in range(kw):
                        q = w * sw + lo_w - b
                        if q < 0 or q >= Wo:
                            continue
                        for o in range(Co):
                            acc += k[a, b, i, o] * d[n, p, q, o]
                out[n, h, w, i] = acc


class SequentialSums:
    """Every operator as plain loops in the result dtype (float32 for float32 cases): each output
    element one accumulator, products rounded then added (no FMA: Numba does not contract without
    fastmath), STDP's scalings, shift, difference and update as separate float32 operations."""

    version = "sequential sums (this script)"
    precision = "highest"

    @staticmethod
    def _args(g: geometry.Geometry) -> tuple[int, int, int, int]:
        return g.stride[0], g.stride[1], g.pads[0][0], g.pads[1][0]

    def deconv2d(self, x: Any, kernel: Any, *, stride: Any, padding: Any) -> np.ndarray:
        g = geometry.check_deconv2d(x, kernel, stride, padding)
        out = np.zeros(g.y_shape, g.dtype)
        if out.size:
            _seq_deconv(np.asarray(x, g.dtype), np.asarray(kernel, g.dtype), *self._args(g), out)
        return out

    def deconv2d_dk(self, x: Any, d_out: Any, *, kernel_size: Any, stride: Any, padding: Any) -> np.ndarray:
        g = geometry.check_deconv2d_dk(x, d_out, kernel_size, stride, padding)
        out = np.zeros(g.kernel_shape, g.dtype)
        if out.size:
            _seq_dk(np.asarray(x, g.dtype), np.asarray(d_out, g.dtype), *self._args(g), out)
        return out

    def deconv2d_dx(self, kernel: Any, d_out: Any, *, stride: Any, padding: Any, input_shape: Any) -> np.ndarray:
        g = geometry.check_deconv2d_dx(kernel, d_out, stride, padding, input_shape)
        out = np.zeros(g.x_shape, g.dtype)
        if out.size:
            _seq_dx(np.asarray(kernel, g.dtype), np.asarray(d_out, g.dtype), *self._args(g), out)
        return out

    def stdp_update(
        self, kernel: Any, pre_spike: Any, pre_trace: Any, post_spike: Any, post_trace: Any, **p: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        arrays = (kernel, pre_spike, pre_trace, post_spike, post_trace)
        dt = geometry.result_dtype(*(np.asarray(a).dtype for a in arrays))
        w, prs, prt, pos, pot = (np.asarray(a, dt) for a in arrays)
        s = dt.type
        kw = dict(kernel_size=w.shape[:2], stride=p["stride"], padding=p["padding"])
        ltp = self.deconv2d_dk(prt - s(p["pretrace_target"]), s(p["A_plus"]) * pos, **kw)
        ltd = self.deconv2d_dk(prs, s(p["A_minus"]) * pot, **kw)
        dw = ltp - ltd
        w_new = w + s(p["eta"]) * dw
        if p["w_decay"] > 0:
            w_new = w_new - s(p["w_decay"]) * w
        if p["w_bound"] > 0:
            w_new = np.minimum(np.maximum(w_new, s(0.01)), s(p["w_bound"] - 0.01))
        return w_new, dw


# ----------------------------------------------------------------------------- the previous policy


def old_scales(case: Case, inputs: Inputs) -> dict[str, dict[str, np.ndarray]]:
    """The scales of the policy this one replaces: ``(sqrt(n) + r)·ref(|inputs|)``, n counted on
    all-ones inputs, r = 1 (plain sums), 3 (dW), 4 (W'); W' and the step's dX composed."""
    g = case.geometry()
    kw: dict[str, Any] = dict(stride=g.stride, padding=g.pads)
    ks = g.kernel_size
    f = {a: np.asarray(v, np.float64) for a, v in inputs.items()}
    x, k, d = f["x"], f["kernel"], f["d_out"]
    prs, prt, pos, pot = f["pre_spike"], f["pre_trace"], f["post_spike"], f["post_trace"]
    n_y = ref.deconv2d(np.ones_like(x), np.ones_like(k), **kw)
    n_k = ref.deconv2d_dk(np.ones_like(x), np.ones_like(d), kernel_size=ks, **kw)
    n_x = ref.deconv2d_dx(np.ones_like(k), np.ones_like(d), **kw)
    p = case.params
    y = (np.sqrt(n_y) + 1) * ref.deconv2d(abs(x), abs(k), **kw)
    dk = (np.sqrt(n_k) + 1) * ref.deconv2d_dk(abs(x), abs(d), kernel_size=ks, **kw)
    dx = (np.sqrt(n_x) + 1) * ref.deconv2d_dx(abs(k), abs(d), **kw)
    w_new, _ = ref.stdp_update(k, prs, prt, pos, pot, **kw, **p)
    m_dw = ref.deconv2d_dk(
        abs(prt) + abs(p["pretrace_target"]), abs(p["A_plus"]) * abs(pos), kernel_size=ks, **kw
    ) + ref.deconv2d_dk(abs(prs), abs(p["A_minus"]) * abs(pot), kernel_size=ks, **kw)
    s_dw = (np.sqrt(n_k) + 3) * m_dw
    m_w = abs(k) * (1 + abs(p["w_decay"])) + abs(p["eta"]) * m_dw + max(p["w_bound"], 0.0)
    s_w = abs(p["eta"]) * s_dw + 4 * m_w
    s_step_dx = (np.sqrt(n_x) + 1) * ref.deconv2d_dx(abs(w_new), abs(pos), **kw) + ref.deconv2d_dx(s_w, abs(pos), **kw)
    return {
        "deconv2d": {"y": y},
        "deconv2d_dk": {"dK": dk},
        "deconv2d_dx": {"dX": dx},
        "stdp_update": {"W'": s_w, "dW": s_dw},
        "stdp_step": {"y": y, "W'": s_w, "dW": s_dw, "dX": s_step_dx},
    }


# ----------------------------------------------------------------------------- measuring


@dataclass
class Worst:
    """The worst (max) ratios of one (tier, operator, implementation) and where they occurred."""

    cases: int = 0
    old: float = 0.0
    new: float = 0.0
    c1: float = 0.0
    where: str = ""
    outputs: dict[str, float] = field(default_factory=dict)  # worst c=1 ratio per output

    def add(self, case: str, out: str, old: float, new: float, c1: float) -> None:
        self.old = max(self.old, old)
        if c1 > self.c1:
            self.where = f"{case} {out}"
        self.new, self.c1 = max(self.new, new), max(self.c1, c1)
        self.outputs[out] = max(self.outputs.get(out, 0.0), c1)


@dataclass
class Weakest:
    """The weakest detection (min over cases of the per-case max ratio) of one planted error."""

    cases: int = 0
    old: float = math.inf
    new: float = math.inf
    where: str = ""

    def add(self, case: str, old: float, new: float) -> None:
        self.cases += 1
        self.old = min(self.old, old)
        if new < self.new:
            self.new, self.where = new, case


def _ratios(got: np.ndarray, value: np.ndarray, new: np.ndarray, old: np.ndarray, pol: tol.Policy) -> tuple:
    """Max ``error / bound`` under the old bound, the current one and the current scales at c = 1."""
    if got.size == 0:
        return 0.0, 0.0, 0.0
    err = np.abs(got.astype(np.float64) - value)
    r_old = tol.ratio(err, OLD_C * pol.u * old + pol.tiny)
    r_new = tol.ratio(err, tol.bound(new, pol))
    r_c1 = tol.ratio(err, pol.u * new + pol.tiny)
    return float(r_old.max()), float(r_new.max()), float(r_c1.max())


def _outputs(be: Backend, case: Case, inputs: Inputs, op: Operator) -> list[np.ndarray]:
    with checks.x64_scope(case):
        return [np.asarray(o) for o in op.call(be, case, inputs)]


def _bf16_inputs(inputs: Inputs) -> Inputs:
    return {k: broken._round_bf16(v) for k, v in inputs.items()}


class _Bf16Arrays(broken.ReferenceWrapper):
    """The reference on bfloat16-rounded float arrays; scalars and spikes exact, float64 inside."""


def workload_cases() -> list[Case]:
    """The SPEC §8 workloads (the workloads grid, sim inputs) plus the same geometries with the grids'
    random signed inputs (density 0.3, the ``all`` STDP set: a large eta, shift, decay and clip)."""
    sim = list(cases.workloads_grid())
    rnd = [replace(c, inputs="random", density=cases.DEFAULT_DENSITY, stdp="all", spikes="bool") for c in sim]
    _RANDOM_WORKLOADS.update(c.name for c in rnd)
    return sim + rnd


_RANDOM_WORKLOADS: set[str] = set()


def tier_of(case: Case) -> str:
    """``small`` | ``large`` | ``workload-sim`` | ``workload-random``, then ``/f32`` or ``/f64``."""
    dt = "f32" if case.dtype == "f32" else "f64"
    if case.name in _RANDOM_WORKLOADS:
        return f"workload-random/{dt}"
    t = getattr(case, "tier", "small")
    return f"{'workload-sim' if t == 'workload' else t}/{dt}"


def measure(
    tiers: Iterable[str], impl_names: list[str], *, full: bool, seed: int, log: Callable[[str], None]
) -> tuple[dict[tuple[str, str, str], Worst], dict[tuple[str, str, str], Weakest]]:
    """Run every implementation on every case of ``tiers``; returns the worst and weakest tables."""
    impls: dict[str, Backend] = {}
    for name in impl_names:
        if name == "seq":
            impls[name] = Backend("seq", SequentialSums())
        else:
            impls[name] = get_backend(name)
    ref_be = Backend("bf16-arrays", _Bf16Arrays())
    bug_be = broken.broken_backend("bf16-inputs")

    quick = [c for c in cases.quick_grid() if c.batch > 0]
    todo: list[tuple[Case, list[str]]] = [(c, impl_names) for c in quick]
    if full:
        seen = {c.name for c in quick}
        cheap = [n for n in impl_names if n in ("seq", "numba", "torch", "reference")]
        todo += [(c, cheap) for c in cases.full_grid() if c.name not in seen and c.batch > 0]
    todo += [(c, impl_names) for c in workload_cases()]
    wanted = set(tiers)
    todo = [(c, names) for c, names in todo if tier_of(c).split("/")[0].split("-")[0] in wanted]

    worst: dict[tuple[str, str, str], Worst] = {}
    weakest: dict[tuple[str, str, str], Weakest] = {}
    for ci, (case, names) in enumerate(todo):
        t0 = time.perf_counter()
        tier = tier_of(case)
        inputs = cases.make_inputs(case, seed)
        exp: Expectation = expect(case, inputs)
        old = old_scales(case, inputs)
        for op in OPERATORS:
            e_op = exp.ops[op.name]
            pol = tol.policy_for(next(iter(e_op.values())).dtype)
            for name in names:
                outs = _outputs(impls[name], case, inputs, op)
                w = worst.setdefault((tier, op.name, name), Worst())
                w.cases += 1
                for (out, e), got in zip(e_op.items(), outs, strict=True):
                    w.add(case.name, out, *_ratios(got, e.value, e.scale, old[op.name][out], pol))
            if case.dtype != "f32":
                continue
            planted = {
                "1e-4 uniform": [(e.value * (1 + PLANTED_REL)).astype(e.dtype) for e in e_op.values()],
                "bf16 arrays": _outputs(ref_be, case, _bf16_inputs(inputs), op),
                "bf16 bug": _outputs(bug_be, case, inputs, op),
            }
            for kind, outs in planted.items():
                diff = [np.any(got != e.value.astype(e.dtype)) for e, got in zip(e_op.values(), outs, strict=True)]
                if not any(diff):
                    continue  # nothing to detect: the planted error vanishes in float32 (e.g. all-zero outputs)
                per = [
                    _ratios(got, e.value, e.scale, old[op.name][out], pol)
                    for (out, e), got in zip(e_op.items(), outs, strict=True)
                ]
                weakest.setdefault((tier, op.name, kind), Weakest()).add(
                    case.name, max(r[0] for r in per), max(r[1] for r in per)
                )
        log(f"[{ci + 1}/{len(todo)}] {tier} {case.name}: {time.perf_counter() - t0:.1f}s")
    return worst, weakest


def _fmt(v: float) -> str:
    return "inf" if not math.isfinite(v) else f"{v:.3g}"


def report(worst: dict, weakest: dict) -> str:
    """The two tables as text."""
    c = tol.POLICY["float32"].c
    lines = [
        f"Correct implementations: worst error/bound (old = 4·u·(sqrt(n)+r)·Σ|terms|; new = c·u·scale, c = {c:g}; "
        "c=1 = the c each would need)",
        f"{'tier':<22} {'operator':<12} {'impl':<10} {'cases':>5} {'old':>8} {'new':>8} {'c=1':>8}  worst at",
    ]
    for (tier, op, impl), w in sorted(worst.items()):
        lines.append(
            f"{tier:<22} {op:<12} {impl:<10} {w.cases:>5} {_fmt(w.old):>8} {_fmt(w.new):>8} {_fmt(w.c1):>8}  {w.where}"
        )
    lines += [
        "",
        "Planted errors (float32 cases): weakest detection = min over cases of the per-case worst error/bound "
        "(> 1 = caught in every case)",
        f"{'tier':<22} {'operator':<12} {'planted':<14} {'cases':>5} {'old':>9} {'new':>9}  weakest case",
    ]
    for (tier, op, kind), w in sorted(weakest.items()):
        lines.append(f"{tier:<22} {op:<12} {kind:<14} {w.cases:>5} {_fmt(w.old):>9} {_fmt(w.new):>9}  {w.where}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiers", default="small,large,workload", help="comma list: small, large, workload")
    ap.add_argument("--impls", default="seq,numba,jax,torch,reference", help="comma list of implementations")
    ap.add_argument("--full", action="store_true", help="small tier: the full grid too (all but jax)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the tables as JSON here")
    ap.add_argument("-q", "--quiet", action="store_true")
    a = ap.parse_args(argv)

    def log(msg: str) -> None:
        if not a.quiet:
            print(msg, file=sys.stderr, flush=True)

    worst, weakest = measure(a.tiers.split(","), a.impls.split(","), full=a.full, seed=a.seed, log=log)
    print(report(worst, weakest))
    if a.json:
        doc = {
            "c": tol.POLICY["float32"].c,
            "worst": [{"tier": k[0], "operator": k[1], "impl": k[2], **vars(v)} for k, v in worst.items()],
            "weakest": [{"tier": k[0], "operator": k[1], "planted": k[2], **vars(v)} for k, v in weakest.items()],
        }
        with open(a.json, "w") as fh:
            json.dump(doc, fh, indent=1, default=lambda v: None if not math.isfinite(v) else v)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
