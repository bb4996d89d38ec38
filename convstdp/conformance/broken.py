"""Deliberately broken backends: the harness's own test.

Each wraps the NumPy reference (:mod:`convstdp.reference.ops`) and plants one bug a real fast
backend could have. :func:`self_test` runs each on a grid with early exit and reports which
checks caught it; a control (the same wrapper, no bug) must pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convstdp import geometry
from convstdp.backends import Backend
from convstdp.reference import ops as ref

__all__ = ["BUGS", "Bug", "broken_backend", "control_backend", "SelfTestRow", "self_test"]


def _round_bf16(a: np.ndarray) -> np.ndarray:
    """Round to bfloat16 precision (8 significant bits, nearest-even), kept in a's dtype."""
    a = np.asarray(a)
    if a.dtype.kind != "f":
        return a
    f = a.astype(np.float32)
    bits = f.view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32).astype(a.dtype)


class ReferenceWrapper:
    """The reference behind the implementation protocol (normalised arguments), with
    ``stdp_update`` composed from ``self.deconv2d_dk`` so a bug planted in dK reaches it."""

    version = "reference-wrapper"
    precision = "highest"

    def deconv2d(self, x: Any, kernel: Any, *, stride: Any, padding: Any) -> np.ndarray:
        return ref.deconv2d(x, kernel, stride=stride, padding=padding)

    def deconv2d_dk(self, x: Any, d_out: Any, *, kernel_size: Any, stride: Any, padding: Any) -> np.ndarray:
        return ref.deconv2d_dk(x, d_out, kernel_size=kernel_size, stride=stride, padding=padding)

    def deconv2d_dx(self, kernel: Any, d_out: Any, *, stride: Any, padding: Any, input_shape: Any) -> np.ndarray:
        return ref.deconv2d_dx(kernel, d_out, stride=stride, padding=padding, input_shape=input_shape)

    # the pieces of stdp_update, each overridable
    def _ltp(self, pre_trace: Any, post_spike: Any, p: geometry.StdpParams, kw: dict[str, Any]) -> np.ndarray:
        shifted = np.asarray(pre_trace, np.float64) - p.pretrace_target
        return self.deconv2d_dk(shifted, p.A_plus * np.asarray(post_spike, np.float64), **kw)

    def _ltd(self, pre_spike: Any, post_trace: Any, p: geometry.StdpParams, kw: dict[str, Any]) -> np.ndarray:
        return self.deconv2d_dk(np.asarray(pre_spike, np.float64), p.A_minus * np.asarray(post_trace, np.float64), **kw)

    def _combine(self, ltp: np.ndarray, ltd: np.ndarray) -> np.ndarray:
        return ltp - ltd

    def _new_weights(self, w: np.ndarray, dw: np.ndarray, p: geometry.StdpParams) -> np.ndarray:
        w_new = w + p.eta * dw
        if p.w_decay > 0:
            w_new = w_new - p.w_decay * w
        if p.w_bound > 0:
            w_new = np.minimum(np.maximum(w_new, 0.01), p.w_bound - 0.01)
        return w_new

    def stdp_update(
        self,
        kernel: Any,
        pre_spike: Any,
        pre_trace: Any,
        post_spike: Any,
        post_trace: Any,
        *,
        stride: Any,
        padding: Any,
        params: geometry.StdpParams,
    ) -> tuple[np.ndarray, np.ndarray]:
        dt = geometry.result_dtype(
            *(np.asarray(a).dtype for a in (kernel, pre_spike, pre_trace, post_spike, post_trace))
        )
        kw = dict(kernel_size=np.shape(kernel)[:2], stride=stride, padding=padding)
        dw = self._combine(self._ltp(pre_trace, post_spike, params, kw), self._ltd(pre_spike, post_trace, params, kw))
        dw = np.asarray(dw, np.float64)
        w_new = self._new_weights(np.asarray(kernel, np.float64), dw, params)
        return self._cast(w_new, dt), self._cast(dw, dt)

    def _cast(self, a: np.ndarray, dt: np.dtype) -> np.ndarray:
        return np.asarray(a).astype(dt)


# ----------------------------------------------------------------------------- the bugs


class PadOffset(ReferenceWrapper):
    def deconv2d(self, x, kernel, *, stride, padding):
        (lo_h, hi_h), w = padding
        return ref.deconv2d(x, kernel, stride=stride, padding=((lo_h + 1, hi_h - 1), w))


class KernelFlipped(ReferenceWrapper):
    def deconv2d(self, x, kernel, *, stride, padding):
        return ref.deconv2d(x, np.asarray(kernel)[::-1, ::-1], stride=stride, padding=padding)


class StrideSwapped(ReferenceWrapper):
    def deconv2d_dx(self, kernel, d_out, *, stride, padding, input_shape):
        return ref.deconv2d_dx(kernel, d_out, stride=(stride[1], stride[0]), padding=padding)


class LastBatchDropped(ReferenceWrapper):
    def deconv2d_dk(self, x, d_out, *, kernel_size, stride, padding):
        x, d = np.asarray(x), np.asarray(d_out)
        if x.shape[0] > 1:
            x, d = x[:-1], d[:-1]
        return ref.deconv2d_dk(x, d, kernel_size=kernel_size, stride=stride, padding=padding)


class LostUpdate(ReferenceWrapper):
    """A scatter race: one output pixel misses the contribution of the last kernel tap."""

    def deconv2d(self, x, kernel, *, stride, padding):
        y = ref.deconv2d(x, kernel, stride=stride, padding=padding)
        k = np.array(kernel, copy=True)
        k[-1, -1] = 0
        y_lost = ref.deconv2d(x, k, stride=stride, padding=padding)
        diff = np.abs(y.astype(np.float64) - y_lost)
        if diff.size:
            n, p, q, _ = np.unravel_index(int(np.argmax(diff)), diff.shape)
            y[n, p, q] = y_lost[n, p, q]
        return y


class LtdSignFlipped(ReferenceWrapper):
    def _combine(self, ltp, ltd):
        return ltp + ltd


class PretraceTargetIgnored(ReferenceWrapper):
    def _ltp(self, pre_trace, post_spike, p, kw):
        return super()._ltp(pre_trace, post_spike, p._replace(pretrace_target=0.0), kw)


class WeightDecayIgnored(ReferenceWrapper):
    def _new_weights(self, w, dw, p):
        return super()._new_weights(w, dw, p._replace(w_decay=0.0))


class ClipBoundsWrong(ReferenceWrapper):
    def _new_weights(self, w, dw, p):
        w_new = super()._new_weights(w, dw, p._replace(w_bound=0.0))
        return np.clip(w_new, 0.0, p.w_bound) if p.w_bound > 0 else w_new


class DxChannelsSwapped(ReferenceWrapper):
    def deconv2d_dx(self, kernel, d_out, *, stride, padding, input_shape):
        return ref.deconv2d_dx(kernel, d_out, stride=stride, padding=padding)[..., ::-1]


class Bfloat16Inputs(ReferenceWrapper):
    def deconv2d(self, x, kernel, *, stride, padding):
        return ref.deconv2d(_round_bf16(x), _round_bf16(kernel), stride=stride, padding=padding)

    def deconv2d_dk(self, x, d_out, *, kernel_size, stride, padding):
        return ref.deconv2d_dk(
            _round_bf16(x), _round_bf16(d_out), kernel_size=kernel_size, stride=stride, padding=padding
        )

    def deconv2d_dx(self, kernel, d_out, *, stride, padding, input_shape):
        return ref.deconv2d_dx(_round_bf16(kernel), _round_bf16(d_out), stride=stride, padding=padding)


class OneElementOff(ReferenceWrapper):
    """The largest-magnitude output element of deconv2d is 0.1 % off."""

    def deconv2d(self, x, kernel, *, stride, padding):
        y = ref.deconv2d(x, kernel, stride=stride, padding=padding)
        if y.size:
            i = int(np.argmax(np.abs(y)))
            y.flat[i] = y.flat[i] * np.asarray(1.001, y.dtype)
        return y


class Float64Out(ReferenceWrapper):
    def deconv2d(self, x, kernel, *, stride, padding):
        return super().deconv2d(x, kernel, stride=stride, padding=padding).astype(np.float64)

    def deconv2d_dk(self, x, d_out, *, kernel_size, stride, padding):
        return super().deconv2d_dk(x, d_out, kernel_size=kernel_size, stride=stride, padding=padding).astype(np.float64)

    def deconv2d_dx(self, kernel, d_out, *, stride, padding, input_shape):
        return (
            super()
            .deconv2d_dx(kernel, d_out, stride=stride, padding=padding, input_shape=input_shape)
            .astype(np.float64)
        )

    def _cast(self, a, dt):
        return np.asarray(a, np.float64)


class InputsModified(ReferenceWrapper):
    """``pre_trace -= pretrace_target`` in place, the classic shortcut."""

    def _ltp(self, pre_trace, post_spike, p, kw):
        if isinstance(pre_trace, np.ndarray) and pre_trace.dtype.kind == "f":
            pre_trace -= np.asarray(p.pretrace_target, pre_trace.dtype)
            return self.deconv2d_dk(pre_trace.astype(np.float64), p.A_plus * np.asarray(post_spike, np.float64), **kw)
        return super()._ltp(pre_trace, post_spike, p, kw)


class LargeBatchDropsItem(ReferenceWrapper):
    """Right for small batches; from batch 4 up the dK reduction misses the last item (a tile
    loop whose remainder is skipped once the batch fills a tile)."""

    def deconv2d_dk(self, x, d_out, *, kernel_size, stride, padding):
        x, d = np.asarray(x), np.asarray(d_out)
        if x.shape[0] >= 4:
            x, d = x[:-1], d[:-1]
        return ref.deconv2d_dk(x, d, kernel_size=kernel_size, stride=stride, padding=padding)


class WideChannelsRemainder(ReferenceWrapper):
    """Right up to 16 input channels; beyond, the channels past the last multiple of 8 (the
    remainder lanes of a vectorised loop) are left out of deconv2d."""

    def deconv2d(self, x, kernel, *, stride, padding):
        x, k = np.asarray(x), np.asarray(kernel)
        ci = x.shape[3]
        if ci > 16 and ci % 8:
            keep = ci - ci % 8
            x, k = x[..., :keep], k[:, :, :keep]
        return ref.deconv2d(x, k, stride=stride, padding=padding)


class ParallelPathOff(ReferenceWrapper):
    """Two paths, switched by problem size like a serial/parallel driver; the big one computes dX
    with one output row short (a chunk boundary off by one)."""

    paths = frozenset({"deconv2d_dx/small", "deconv2d_dx/large"})

    def deconv2d_dx(self, kernel, d_out, *, stride, padding, input_shape):
        from convstdp import paths

        n, h, w, ci = input_shape
        big = n * h * w * int(np.prod(np.shape(kernel))) >= 2_000_000
        paths.note("deconv2d_dx/large" if big else "deconv2d_dx/small")
        dx = ref.deconv2d_dx(kernel, d_out, stride=stride, padding=padding, input_shape=input_shape)
        if big and h > 1:
            dx[:, h // 2] = 0
        return dx


class NotImplementedEverywhere(ReferenceWrapper):
    """Gaming: raises NotImplementedError for everything, without declaring a supported subset."""

    def deconv2d(self, x, kernel, *, stride, padding):
        raise NotImplementedError("not supported")

    deconv2d_dk = deconv2d_dx = stdp_update = deconv2d


class DeclaresNothing(ReferenceWrapper):
    """Gaming: declares a supported subset that holds no case, so nothing is ever compared."""

    def unsupported(self, g):
        return "this backend supports no geometry"

    def deconv2d(self, x, kernel, *, stride, padding):
        return np.zeros(1)


class ZerosWithCoarseRoundoff(ReferenceWrapper):
    """Gaming: returns zeros and declares itself imprecise (bf16, unit roundoff 0.5) so that a
    tolerance taken from the object under test would admit anything."""

    precision = "bf16"
    unit_roundoff = 0.5

    def deconv2d(self, x, kernel, *, stride, padding):
        return np.zeros_like(super().deconv2d(x, kernel, stride=stride, padding=padding))

    def deconv2d_dk(self, x, d_out, *, kernel_size, stride, padding):
        return np.zeros_like(super().deconv2d_dk(x, d_out, kernel_size=kernel_size, stride=stride, padding=padding))

    def deconv2d_dx(self, kernel, d_out, *, stride, padding, input_shape):
        dx = super().deconv2d_dx(kernel, d_out, stride=stride, padding=padding, input_shape=input_shape)
        return np.zeros_like(dx)


class SaturatingKernel(ReferenceWrapper):
    """Kernel values saturate at +-1.5 in dX (a fixed-point range chosen for the test data). The
    value checks draw K in U(-0.6, 1.4), so only the adjoint identities, on their own independent
    inputs, can see it."""

    def deconv2d_dx(self, kernel, d_out, *, stride, padding, input_shape):
        k = np.clip(np.asarray(kernel), -1.5, 1.5)
        return ref.deconv2d_dx(k, d_out, stride=stride, padding=padding, input_shape=input_shape)


class UniformRelative(ReferenceWrapper):
    """Every output of every operator 1e-4 too large (relative): a precision bug, not a logic one."""

    def deconv2d(self, x, kernel, *, stride, padding):
        return _scaled(super().deconv2d(x, kernel, stride=stride, padding=padding))

    def deconv2d_dk(self, x, d_out, *, kernel_size, stride, padding):
        return _scaled(super().deconv2d_dk(x, d_out, kernel_size=kernel_size, stride=stride, padding=padding))

    def deconv2d_dx(self, kernel, d_out, *, stride, padding, input_shape):
        return _scaled(super().deconv2d_dx(kernel, d_out, stride=stride, padding=padding, input_shape=input_shape))

    def stdp_update(self, *args, **kw):
        w_new, dw = super().stdp_update(*args, **kw)
        return _scaled(w_new), _scaled(dw)


def _scaled(a: np.ndarray, rel: float = 1e-4) -> np.ndarray:
    a = np.asarray(a)
    return (a.astype(np.float64) * (1.0 + rel)).astype(a.dtype)


@dataclass(frozen=True)
class Bug:
    """A planted bug: short id, what it does, and the implementation class."""

    id: str
    description: str
    impl: type
    min_ratio: float = 0.0  # > 0: a precision bug, caught only if every tier's float32 cases exceed this
    per_operator: bool = False  # the precision bug must exceed min_ratio on every operator separately

    @property
    def precision_bug(self) -> bool:
        return self.min_ratio > 0


BUGS: tuple[Bug, ...] = (
    Bug("pad-offset", "padding offset by one (deconv2d: lo_h + 1, hi_h - 1)", PadOffset),
    Bug("kernel-flipped", "kernel flipped in both spatial axes (deconv2d)", KernelFlipped),
    Bug("stride-swapped", "stride axes swapped (deconv2d_dx)", StrideSwapped),
    Bug("batch-dropped", "last batch item dropped from the dK reduction", LastBatchDropped),
    Bug("lost-update", "a lost update in a sum: one pixel misses the last tap (deconv2d)", LostUpdate),
    Bug("ltd-sign", "LTD sign flipped in dW", LtdSignFlipped),
    Bug("pretrace-target", "pretrace_target ignored", PretraceTargetIgnored),
    Bug("w-decay", "w_decay ignored", WeightDecayIgnored),
    Bug("clip-bounds", "clip to [0, w_bound] instead of [0.01, w_bound - 0.01]", ClipBoundsWrong),
    Bug("dx-channels", "channels swapped (reversed) in deconv2d_dx", DxChannelsSwapped),
    Bug("one-element", "one output element of deconv2d off by 0.1 %", OneElementOff),
    Bug("float64-out", "float32 in, float64 out", Float64Out),
    Bug("inputs-modified", "pre_trace modified in place (pre_trace -= pretrace_target)", InputsModified),
    Bug("large-batch", "dK drops the last batch item from batch 4 up (a tile remainder)", LargeBatchDropsItem),
    Bug("wide-channels", "deconv2d drops the remainder channels past a multiple of 8, Ci > 16", WideChannelsRemainder),
    Bug("large-path", "dX wrong only on the path taken above 2M multiply-adds", ParallelPathOff),
    Bug("not-implemented", "raises NotImplementedError for everything, declares no subset", NotImplementedEverywhere),
    Bug("declares-nothing", "declares a supported subset that holds no case", DeclaresNothing),
    Bug("zeros-imprecise", "returns zeros, declares precision bf16 and unit roundoff 0.5", ZerosWithCoarseRoundoff),
    Bug("kernel-saturates", "dX saturates kernel values at +-1.5 (outside the value checks' range)", SaturatingKernel),
    Bug(
        "uniform-1e-4",
        "every output 1e-4 too large (relative): must fail on every float32 tier",
        UniformRelative,
        1.0,
        True,
    ),
    Bug("bf16-inputs", "inputs rounded to bfloat16: err/bound >= 10 on every float32 tier", Bfloat16Inputs, 10.0),
)


def __getattr__(attr: str) -> Any:
    """``convstdp.conformance.broken:<bug_id with _>`` is a backend factory, e.g.
    ``convstdp conformance --backend convstdp.conformance.broken:kernel_flipped``."""
    for b in BUGS:
        if b.id.replace("-", "_") == attr:
            return b.impl
    if attr == "control":
        return ReferenceWrapper
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def broken_backend(bug: Bug | str) -> Backend:
    """A validated :class:`convstdp.Backend` around the broken implementation."""
    if isinstance(bug, str):
        bug = next(b for b in BUGS if b.id == bug)
    return Backend(f"broken:{bug.id}", bug.impl())


def control_backend() -> Backend:
    """The same wrapper with no bug: must pass, or the self-test itself is wrong."""
    return Backend("broken:none (control)", ReferenceWrapper())


@dataclass
class SelfTestRow:
    """One self-test line: the bug, whether it was caught, and the first result that caught it.

    For a precision bug ``tiers`` holds, per size tier, the smallest error/bound it reached on the
    tier's float32 cases (per operator when the bug claims every operator): caught means every
    tier's figure exceeds the bug's ``min_ratio``."""

    bug: str
    description: str
    caught: bool
    check: str
    first: str
    operator: str
    case: str
    ratio: float | None
    cases_run: int
    tiers: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_VALUE_OPS = ("deconv2d", "deconv2d_dk", "deconv2d_dx", "stdp_update", "stdp_step")


def _sums_nothing(case: Any) -> bool:
    """Whether every output of ``case`` is an empty sum (pads crop every term): no precision bug can
    show there, so such cases are no evidence for or against one."""
    g = case.geometry()
    ones = ref.deconv2d(np.ones((1, *g.in_size, 1)), np.ones((*g.kernel_size, 1, 1)), stride=g.stride, padding=g.pads)
    return not ones.any()


def _tier_minima(bug: Bug, br: Any, cases: Sequence[Any]) -> dict[str, float]:
    """Per tier: the least error/bound over its float32 cases (per operator with ``per_operator``),
    leaving out cases with nothing to be wrong about (an empty batch, only empty sums)."""
    by_case = {c.name: c for c in cases if c.dtype == "f32" and c.batch and not _sums_nothing(c)}
    cell: dict[tuple[str, str], dict[str, float]] = {}
    for r in br.results:
        c = by_case.get(r.case)
        if c is None or r.operator not in _VALUE_OPS or r.ratio is None:
            continue
        key = (c.tier, r.operator if bug.per_operator else "")
        cell.setdefault(key, {})
        cell[key][r.case] = max(cell[key].get(r.case, 0.0), r.ratio)
    out: dict[str, float] = {}
    for (tier, _), ratios in cell.items():
        out[tier] = min(out.get(tier, np.inf), min(ratios.values()))
    return out


def self_test(cases: Sequence[Any], *, seed: int = 0, progress: Any = None) -> tuple[list[SelfTestRow], Any]:
    """Run every :data:`BUGS` backend and the control on ``cases``. Returns ``(rows, control_run)``;
    ``rows[i].caught`` tells if bug ``i`` was caught.

    A logic bug stops at its first failing case; a failure of the grid as a whole (it checked no
    case, say) catches it too. A precision bug runs every case and is caught only when it exceeds
    its ``min_ratio`` on every size tier's float32 cases.
    """
    from convstdp.conformance.harness import run

    logic = [b for b in BUGS if not b.precision_bug]
    precise = [b for b in BUGS if b.precision_bug]
    runs = run(
        [control_backend(), *map(broken_backend, logic)], cases, seed=seed, stop_on_failure=True, progress=progress
    )
    runs += run([broken_backend(b) for b in precise], cases, seed=seed, progress=progress)
    control, rest = runs[0], runs[1:]
    rows = []
    for bug, br in zip([*logic, *precise], rest, strict=True):
        bad = br.failed
        first = bad[0] if bad else None
        caught, check, msg, tiers = bool(bad), first.check() if first else "", first.message() if first else "", {}
        if bug.precision_bug:
            tiers = _tier_minima(bug, br, cases)
            caught = bool(tiers) and all(v > bug.min_ratio for v in tiers.values())
            check = "values (every tier)" if caught else "values (NOT every tier)"
        elif not bad:
            problems = br.grid_problems(require_paths=False)
            caught, check, msg = bool(problems), "grid" if problems else "", problems[0] if problems else ""
        rows.append(
            SelfTestRow(
                bug.id,
                bug.description,
                caught,
                check,
                msg,
                first.operator if first else "",
                first.case if first else "",
                first.ratio if first else None,
                len({r.case for r in br.results}),
                tiers,
            )
        )
    order = {b.id: i for i, b in enumerate(BUGS)}
    rows.sort(key=lambda r: order[r.bug])
    return rows, control


# ----------------------------------------------------------------------------- trajectory bugs
# Right on every single call (the single-call grid passes them): only a trajectory, each step's W'
# handed back as the next step's W, shows them (convstdp.conformance.trajectory). Both recognise
# "the next step" the way a stateful backend would: the kernel handed in is the very array it
# returned last.


class _Stateful(ReferenceWrapper):
    """Remembers the W' it returned last; ``self._step`` counts the calls that handed it back."""

    def __init__(self) -> None:
        self._out: Any = None
        self._step = 0

    def _chained(self, kernel: Any) -> bool:
        return self._out is not None and kernel is self._out

    def stdp_update(self, kernel, *stdp, **kw):
        self._step = self._step + 1 if self._chained(kernel) else 1
        w_new, dw = super().stdp_update(self._weights(kernel), *stdp, **kw)
        self._out = w_new
        self._stored(w_new)
        return w_new, dw

    def _weights(self, kernel: Any) -> Any:
        return kernel

    def _stored(self, w_new: np.ndarray) -> None:
        pass


class ResidentFloat16Weights(_Stateful):
    """Keeps the weights it returns resident as float16 and reads that copy when handed them back."""

    first_wrong_step = 2  # step 1 starts from the caller's weights

    def _stored(self, w_new):
        self._resident = w_new.astype(np.float16).astype(w_new.dtype)

    def _weights(self, kernel):
        return self._resident if self._chained(kernel) else kernel

    def deconv2d(self, x, kernel, *, stride, padding):
        return super().deconv2d(x, self._weights(kernel), stride=stride, padding=padding)


class PeriodicDoubleDecay(_Stateful):
    """Applies w_decay twice on every 100th step of a trajectory (a periodic maintenance pass)."""

    period = 100
    first_wrong_step = 100

    def _new_weights(self, w, dw, p):
        if self._step % self.period == 0:
            p = p._replace(w_decay=2 * p.w_decay)
        return super()._new_weights(w, dw, p)


# Not in BUGS: the single-call self-test cannot catch them (by design); the trajectory self-test must.
TRAJECTORY_BUGS: tuple[Bug, ...] = (
    Bug("weights-float16", "weights kept (resident) in float16 between steps", ResidentFloat16Weights),
    Bug("decay-twice-100", "w_decay applied twice every 100th step", PeriodicDoubleDecay),
)
__all__ += ["TRAJECTORY_BUGS", "ResidentFloat16Weights", "PeriodicDoubleDecay"]
