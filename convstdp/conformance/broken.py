"""Deliberately broken backends, the harness's own test: each wraps the NumPy reference (:mod:`convstdp.reference.ops`)
and plants one bug a real fast backend could have. :func:`self_test` runs each on a grid with early exit and reports
which checks caught it; a control (the same wrapper, no bug) must pass."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convstdp import geometry, paths
from convstdp.backends import Backend
from convstdp.reference import ops as ref

__all__ = ["BUGS", "Bug", "broken_backend", "control_backend", "SelfTestRow", "self_test"]
__all__ += ["TRAJECTORY_BUGS", "ResidentFloat16Weights", "PeriodicDoubleDecay"]


def _round_bf16(a: np.ndarray) -> np.ndarray:
    """Round to bfloat16 precision (8 significant bits, nearest-even), kept in a's dtype."""
    a = np.asarray(a)
    if a.dtype.kind != "f":
        return a
    bits = a.astype(np.float32).view(np.uint32).astype(np.uint64)
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

    def stdp_update(self, kernel, pre_spike, pre_trace, post_spike, post_trace, *, stride, padding, params):
        arrays = (kernel, pre_spike, pre_trace, post_spike, post_trace)
        dt = geometry.result_dtype(*(np.asarray(a).dtype for a in arrays))
        kw = dict(kernel_size=np.shape(kernel)[:2], stride=stride, padding=padding)
        dw = self._combine(self._ltp(pre_trace, post_spike, params, kw), self._ltd(pre_spike, post_trace, params, kw))
        dw = np.asarray(dw, np.float64)
        return self._cast(self._new_weights(np.asarray(kernel, np.float64), dw, params), dt), self._cast(dw, dt)

    # the pieces of stdp_update, each overridable
    def _ltp(self, pre_trace: Any, post_spike: Any, p: geometry.StdpParams, kw: dict[str, Any]) -> np.ndarray:
        shifted = np.asarray(pre_trace, np.float64) - p.pretrace_target
        return self.deconv2d_dk(shifted, p.A_plus * np.asarray(post_spike, np.float64), **kw)

    def _ltd(self, pre_spike: Any, post_trace: Any, p: geometry.StdpParams, kw: dict[str, Any]) -> np.ndarray:
        return self.deconv2d_dk(np.asarray(pre_spike, np.float64), p.A_minus * np.asarray(post_trace, np.float64), **kw)

    def _new_weights(self, w: np.ndarray, dw: np.ndarray, p: geometry.StdpParams) -> np.ndarray:
        w_new = w + p.eta * dw
        if p.w_decay > 0:
            w_new = w_new - p.w_decay * w
        if p.w_bound > 0:
            w_new = np.minimum(np.maximum(w_new, 0.01), p.w_bound - 0.01)
        return w_new

    _combine = lambda self, ltp, ltd: ltp - ltd
    _cast = lambda self, a, dt: np.asarray(a).astype(dt)


# ----------------------------------------------------------------------------- the bugs
# Most are a lambda or two on one operator or one piece of stdp_update (s: self; kw: the operator's keywords).
_RW = ReferenceWrapper


def _bug(name: str, doc: str | None = None, **members: Any) -> type:
    """A :class:`ReferenceWrapper` subclass named ``name``, of this module, with ``members``."""
    return type(name, (_RW,), {"__doc__": doc, "__module__": __name__, **members})


def _outputs(f: Callable[[Any], Any], *ops: str) -> dict[str, Any]:
    """Members applying ``f`` to what each operator in ``ops`` returns (default: the three conv operators)."""
    wrap = lambda op: lambda s, *a, **kw: f(getattr(_RW, op)(s, *a, **kw))
    return {op: wrap(op) for op in ops or ("deconv2d", "deconv2d_dk", "deconv2d_dx")}


def _drop_last_item(from_n: int) -> Callable[..., np.ndarray]:
    """A dK whose reduction misses the last batch item once the batch holds ``from_n`` items."""
    drop = lambda x, d: (x[:-1], d[:-1]) if x.shape[0] >= from_n else (x, d)
    return lambda s, x, d_out, **kw: ref.deconv2d_dk(*drop(np.asarray(x), np.asarray(d_out)), **kw)


_scaled = lambda a, rel=1e-4: (np.asarray(a).astype(np.float64) * (1.0 + rel)).astype(np.asarray(a).dtype)
_pad_off = lambda pad: ((pad[0][0] + 1, pad[0][1] - 1), pad[1])
_clip = lambda w_new, bound: np.clip(w_new, 0.0, bound) if bound > 0 else w_new
# the dX bugs below leave input_shape out (dX's size then comes from d_out alone): a swapped stride gives a wrong shape
_dx_swapped = lambda s, k, d, *, stride, padding, input_shape: ref.deconv2d_dx(
    k, d, stride=(stride[1], stride[0]), padding=padding
)

PadOffset = _bug(
    "PadOffset", deconv2d=lambda s, x, k, *, padding, **kw: ref.deconv2d(x, k, padding=_pad_off(padding), **kw)
)
KernelFlipped = _bug("KernelFlipped", deconv2d=lambda s, x, k, **kw: ref.deconv2d(x, np.asarray(k)[::-1, ::-1], **kw))
StrideSwapped = _bug("StrideSwapped", deconv2d_dx=_dx_swapped)
LastBatchDropped = _bug("LastBatchDropped", deconv2d_dk=_drop_last_item(2))
LtdSignFlipped = _bug("LtdSignFlipped", _combine=lambda s, ltp, ltd: ltp + ltd)
PretraceTargetIgnored = _bug(
    "PretraceTargetIgnored", _ltp=lambda s, t, sp, p, kw: _RW._ltp(s, t, sp, p._replace(pretrace_target=0.0), kw)
)
WeightDecayIgnored = _bug(
    "WeightDecayIgnored", _new_weights=lambda s, w, dw, p: _RW._new_weights(s, w, dw, p._replace(w_decay=0.0))
)
ClipBoundsWrong = _bug(
    "ClipBoundsWrong",
    _new_weights=lambda s, w, dw, p: _clip(_RW._new_weights(s, w, dw, p._replace(w_bound=0.0)), p.w_bound),
)
DxChannelsSwapped = _bug(
    "DxChannelsSwapped", deconv2d_dx=lambda s, k, d, *, input_shape, **kw: ref.deconv2d_dx(k, d, **kw)[..., ::-1]
)
Bfloat16Inputs = _bug(
    "Bfloat16Inputs",
    deconv2d=lambda s, x, k, **kw: ref.deconv2d(_round_bf16(x), _round_bf16(k), **kw),
    deconv2d_dk=lambda s, x, d, **kw: ref.deconv2d_dk(_round_bf16(x), _round_bf16(d), **kw),
    deconv2d_dx=lambda s, k, d, *, input_shape, **kw: ref.deconv2d_dx(_round_bf16(k), _round_bf16(d), **kw),
)
Float64Out = _bug(
    "Float64Out", **_outputs(lambda a: a.astype(np.float64)), _cast=lambda s, a, dt: np.asarray(a, np.float64)
)
LargeBatchDropsItem = _bug(
    "LargeBatchDropsItem",
    "Right for small batches; from batch 4 up the dK reduction misses the last item (a tile loop whose remainder "
    "is skipped once the batch fills a tile).",
    deconv2d_dk=_drop_last_item(4),
)
DeclaresNothing = _bug(
    "DeclaresNothing",
    "Gaming: declares a supported subset that holds no case, so nothing is ever compared.",
    unsupported=lambda s, g: "this backend supports no geometry",
    deconv2d=lambda s, x, k, **kw: np.zeros(1),
)
ZerosWithCoarseRoundoff = _bug(
    "ZerosWithCoarseRoundoff",
    "Gaming: returns zeros and declares itself imprecise (bf16, unit roundoff 0.5) so that a tolerance taken from "
    "the object under test would admit anything.",
    precision="bf16",
    unit_roundoff=0.5,
    **_outputs(np.zeros_like),
)
SaturatingKernel = _bug(
    "SaturatingKernel",
    "Kernel values saturate at +-1.5 in dX (a fixed-point range chosen for the test data). The value checks draw K "
    "in U(-0.6, 1.4), so only the adjoint identities, on their own independent inputs, can see it.",
    deconv2d_dx=lambda s, k, d, **kw: ref.deconv2d_dx(np.clip(np.asarray(k), -1.5, 1.5), d, **kw),
)
UniformRelative = _bug(
    "UniformRelative",
    "Every output of every operator 1e-4 too large (relative): a precision bug, not a logic one.",
    **_outputs(_scaled),
    **_outputs(lambda outs: tuple(map(_scaled, outs)), "stdp_update"),
)


class LostUpdate(ReferenceWrapper):
    """A scatter race: one output pixel misses the contribution of the last kernel tap."""

    def deconv2d(self, x, kernel, *, stride, padding):
        y = ref.deconv2d(x, kernel, stride=stride, padding=padding)
        k = np.array(kernel, copy=True)
        k[-1, -1] = 0
        y_lost = ref.deconv2d(x, k, stride=stride, padding=padding)
        if y.size:
            at = np.unravel_index(int(np.argmax(np.abs(y.astype(np.float64) - y_lost))), y.shape)[:3]
            y[at] = y_lost[at]
        return y


class OneElementOff(ReferenceWrapper):
    """The largest-magnitude output element of deconv2d is 0.1 % off."""

    def deconv2d(self, x, kernel, *, stride, padding):
        y = ref.deconv2d(x, kernel, stride=stride, padding=padding)
        if y.size:
            i = int(np.argmax(np.abs(y)))
            y.flat[i] = y.flat[i] * np.asarray(1.001, y.dtype)
        return y


class InputsModified(ReferenceWrapper):
    """``pre_trace -= pretrace_target`` in place, the classic shortcut."""

    def _ltp(self, pre_trace, post_spike, p, kw):
        if isinstance(pre_trace, np.ndarray) and pre_trace.dtype.kind == "f":
            pre_trace -= np.asarray(p.pretrace_target, pre_trace.dtype)
            return self.deconv2d_dk(pre_trace.astype(np.float64), p.A_plus * np.asarray(post_spike, np.float64), **kw)
        return super()._ltp(pre_trace, post_spike, p, kw)


class WideChannelsRemainder(ReferenceWrapper):
    """Right up to 16 input channels; beyond, the channels past the last multiple of 8 (the remainder lanes of a
    vectorised loop) are left out of deconv2d."""

    def deconv2d(self, x, kernel, *, stride, padding):
        x, k = np.asarray(x), np.asarray(kernel)
        ci = x.shape[3]
        if ci > 16 and ci % 8:
            x, k = x[..., : ci - ci % 8], k[:, :, : ci - ci % 8]
        return ref.deconv2d(x, k, stride=stride, padding=padding)


class ParallelPathOff(ReferenceWrapper):
    """Two paths, switched by problem size like a serial/parallel driver; the big one computes dX with one output
    row short (a chunk boundary off by one)."""

    paths = frozenset({"deconv2d_dx/small", "deconv2d_dx/large"})

    def deconv2d_dx(self, kernel, d_out, *, stride, padding, input_shape):
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
    """``convstdp.conformance.broken:<bug_id with _>`` is a backend factory (``--backend ...broken:kernel_flipped``)."""
    for b in BUGS:
        if b.id.replace("-", "_") == attr:
            return b.impl
    if attr == "control":
        return ReferenceWrapper
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def broken_backend(bug: Bug | str) -> Backend:
    """A validated :class:`convstdp.Backend` around the broken implementation."""
    bug = next(b for b in BUGS if b.id == bug) if isinstance(bug, str) else bug
    return Backend(f"broken:{bug.id}", bug.impl())


def control_backend() -> Backend:
    """The same wrapper with no bug: must pass, or the self-test itself is wrong."""
    return Backend("broken:none (control)", ReferenceWrapper())


@dataclass
class SelfTestRow:
    """One self-test line: the bug, whether it was caught, and the first result that caught it. For a precision
    bug ``tiers`` holds, per size tier, the least error/bound it reached on the tier's float32 cases (per operator
    when the bug claims every operator): caught means every tier's figure exceeds the bug's ``min_ratio``."""

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
    """Whether every output of ``case`` is an empty sum (pads crop every term): no precision bug can show there."""
    g = case.geometry()
    ones = ref.deconv2d(np.ones((1, *g.in_size, 1)), np.ones((*g.kernel_size, 1, 1)), stride=g.stride, padding=g.pads)
    return not ones.any()


def _tier_minima(bug: Bug, br: Any, cases: Sequence[Any]) -> dict[str, float]:
    """Per tier: the least error/bound over its float32 cases (per operator with ``per_operator``), leaving out
    cases with nothing to be wrong about (an empty batch, only empty sums)."""
    by_case = {c.name: c for c in cases if c.dtype == "f32" and c.batch and not _sums_nothing(c)}
    cell: dict[tuple[str, str], dict[str, float]] = {}
    for r in br.results:
        c = by_case.get(r.case)
        if c is not None and r.operator in _VALUE_OPS and r.ratio is not None:
            ratios = cell.setdefault((c.tier, r.operator if bug.per_operator else ""), {})
            ratios[r.case] = max(ratios.get(r.case, 0.0), r.ratio)
    out: dict[str, float] = {}
    for (tier, _), ratios in cell.items():
        out[tier] = min(out.get(tier, np.inf), min(ratios.values()))
    return out


def self_test(cases: Sequence[Any], *, seed: int = 0, progress: Any = None) -> tuple[list[SelfTestRow], Any]:
    """Run every :data:`BUGS` backend and the control on ``cases``; returns ``(rows, control_run)``. A logic bug
    stops at its first failing case; a failure of the grid as a whole (it checked no case, say) catches it too. A
    precision bug runs every case and is caught only when it exceeds its ``min_ratio`` on every tier's f32 cases."""
    from convstdp.conformance.harness import run

    logic, precise = [b for b in BUGS if not b.precision_bug], [b for b in BUGS if b.precision_bug]
    runs = run(
        [control_backend(), *map(broken_backend, logic)], cases, seed=seed, stop_on_failure=True, progress=progress
    )
    runs += run([broken_backend(b) for b in precise], cases, seed=seed, progress=progress)
    rows = []
    for bug, br in zip([*logic, *precise], runs[1:], strict=True):
        row = SelfTestRow(bug.id, bug.description, False, "", "", "", "", None, len({r.case for r in br.results}))
        if br.failed:
            first = br.failed[0]
            row.caught, row.check, row.first = True, first.check(), first.message()
            row.operator, row.case, row.ratio = first.operator, first.case, first.ratio
        if bug.precision_bug:
            row.tiers = _tier_minima(bug, br, cases)
            row.caught = bool(row.tiers) and all(v > bug.min_ratio for v in row.tiers.values())
            row.check = "values (every tier)" if row.caught else "values (NOT every tier)"
        elif not br.failed and (problems := br.grid_problems(require_paths=False)):
            row.caught, row.check, row.first = True, "grid", problems[0]
        rows.append(row)
    order = {b.id: i for i, b in enumerate(BUGS)}
    return sorted(rows, key=lambda r: order[r.bug]), runs[0]


# ----------------------------------------------------------------------------- trajectory bugs
# Not in BUGS: right on every single call (so the single-call self-test cannot catch them); only a trajectory, each
# step's W' handed back as the next W (convstdp.conformance.trajectory), shows them. Both recognise "the next step"
# as a stateful backend would: the kernel handed in is the very array it returned last.


class _Stateful(ReferenceWrapper):
    """Remembers the W' it returned last; ``self._step`` counts the calls that handed it back."""

    _out: Any = None
    _step = 0
    _weights = lambda self, kernel: kernel  # the weights it reads when handed ``kernel``

    def _chained(self, kernel: Any) -> bool:
        return self._out is not None and kernel is self._out

    def stdp_update(self, kernel, *stdp, **kw):
        self._step = self._step + 1 if self._chained(kernel) else 1
        w_new, dw = super().stdp_update(self._weights(kernel), *stdp, **kw)
        self._out = w_new
        return w_new, dw


class ResidentFloat16Weights(_Stateful):
    """Keeps the weights it returns resident as float16 and reads that copy when handed them back."""

    first_wrong_step = 2  # step 1 starts from the caller's weights

    def stdp_update(self, kernel, *stdp, **kw):
        w_new, dw = super().stdp_update(kernel, *stdp, **kw)
        self._resident = w_new.astype(np.float16).astype(w_new.dtype)
        return w_new, dw

    def _weights(self, kernel):
        return self._resident if self._chained(kernel) else kernel

    def deconv2d(self, x, kernel, *, stride, padding):
        return super().deconv2d(x, self._weights(kernel), stride=stride, padding=padding)


class PeriodicDoubleDecay(_Stateful):
    """Applies w_decay twice on every 100th step of a trajectory (a periodic maintenance pass)."""

    period = 100
    first_wrong_step = 100

    def _new_weights(self, w, dw, p):
        return super()._new_weights(w, dw, p._replace(w_decay=2 * p.w_decay) if self._step % self.period == 0 else p)


TRAJECTORY_BUGS: tuple[Bug, ...] = (
    Bug("weights-float16", "weights kept (resident) in float16 between steps", ResidentFloat16Weights),
    Bug("decay-twice-100", "w_decay applied twice every 100th step", PeriodicDoubleDecay),
)
