"""Conformance cases as data: one frozen record per case, a readable name that encodes all of it.

A case name such as ``s3x2-valid-k3x2-m5x7-c3to4-n2-f32-clip-bool`` reads: stride ``(3, 2)``,
VALID padding, kernel ``3x2``, map ``5x7``, ``Ci=3 -> Co=4``, batch 2, float32, the ``clip``
STDP parameter set, bool spikes. Explicit pads are written ``pad1.0.2.1`` (``(lo_h, hi_h, lo_w,
hi_w)``) and ``neg1.m1.0.2`` when some pad is negative (``m`` is a minus sign). Names parse back
(:func:`parse_case`), so a name plus a seed reproduces a case exactly; the values come from
``numpy.random.default_rng([seed, crc32(name)])``.

Grids: :func:`full_grid` is the (filtered) product of the geometry axes; :func:`quick_grid` a
fixed, seeded selection of it that covers every value of every axis plus hand-picked cases
that expose the bugs of the self-test.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import zlib
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from functools import lru_cache
from typing import Any

import numpy as np

from convstdp import geometry

__all__ = ["Case", "STDP_PARAMS", "STRIDES", "PAD_KINDS", "KERNELS", "MAPS", "CHANNELS", "BATCHES", "DTYPES", "SPIKES"]
__all__ += ["GRID_SEED", "parse_case", "case_from_text", "make_inputs", "full_grid", "quick_grid", "workloads_grid"]
__all__ += ["grid", "GRIDS", "LARGE_TIER", "SPEC_WORKLOADS"]

# STDP parameter sets: every parameter is exercised by at least one set; non-symmetric values.
STDP_PARAMS: dict[str, dict[str, float]] = {
    "basic": dict(A_plus=0.8, A_minus=0.3, eta=0.1, pretrace_target=0.0, w_decay=0.0, w_bound=0.0),
    "target": dict(A_plus=1.0, A_minus=0.6, eta=0.05, pretrace_target=0.35, w_decay=0.0, w_bound=0.0),
    "decay": dict(A_plus=0.7, A_minus=0.45, eta=0.2, pretrace_target=0.0, w_decay=0.03, w_bound=0.0),
    "clip": dict(A_plus=1.1, A_minus=0.5, eta=0.3, pretrace_target=0.0, w_decay=0.0, w_bound=1.0),
    "all": dict(A_plus=0.9, A_minus=1.2, eta=0.15, pretrace_target=0.2, w_decay=0.01, w_bound=1.3),
    # what a simulation runs (the benchmark's step): every branch of the seed's evolve taken
    "sim": dict(A_plus=0.9, A_minus=0.6, eta=0.01, pretrace_target=0.05, w_decay=0.001, w_bound=1.0),
}

# The axes of the full product (SPEC §2/§3 awkward cases on purpose).
STRIDES: tuple[tuple[int, int], ...] = ((1, 1), (2, 2), (3, 3), (1, 2), (3, 2))
PAD_KINDS: tuple[str, ...] = ("same", "valid", "explicit", "negative")
KERNELS: tuple[tuple[int, int], ...] = ((1, 1), (2, 2), (3, 3), (5, 5), (3, 2), (2, 5))
MAPS: tuple[tuple[int, int], ...] = ((1, 1), (2, 3), (5, 5), (7, 4), (12, 12), (16, 9), (32, 32))
CHANNELS: tuple[tuple[int, int], ...] = ((1, 2), (3, 2), (2, 3), (4, 4))
BATCHES: tuple[int, ...] = (1, 3)
DTYPES: tuple[str, ...] = ("f32", "f64", "mix")
SPIKES: tuple[str, ...] = ("bool", "float")
# How input values are drawn: "random" (signed, dense; the grids) or "sim" (what a simulation feeds
# a step, SPEC §8: x, d_out and spikes 0/1 at the case's density, traces and kernel positive, dense).
INPUTS: tuple[str, ...] = ("random", "sim")
DEFAULT_DENSITY = 0.3

GRID_SEED = 20260528  # fixes which cases the grids hold; --seed changes only the values

_DTYPE_OF = {"f32": np.float32, "f64": np.float64}
# "mix": float32 and float64 inputs together; every result is float64 (np.result_type).
_MIX = dict(x=np.float32, kernel=np.float64, d_out=np.float32, pre_trace=np.float32, post_trace=np.float64)
_MIX["spike"] = np.float32

Pads = tuple[tuple[int, int], tuple[int, int]]


@dataclass(frozen=True)
class Case:
    """One conformance case: a geometry, a dtype mix and an STDP parameter set.

    ``padding`` is ``"SAME"``, ``"VALID"`` or explicit pads ``((lo_h, hi_h), (lo_w, hi_w))``.
    Shapes: x ``(batch, *in_size, ci)``, kernel ``(*kernel, ci, co)``.
    """

    stride: tuple[int, int]
    padding: str | Pads
    kernel: tuple[int, int]
    in_size: tuple[int, int]
    ci: int
    co: int
    batch: int
    dtype: str = "f64"
    stdp: str = "basic"
    spikes: str = "bool"
    density: float = DEFAULT_DENSITY
    inputs: str = "random"
    name: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        (sh, sw), pad = self.stride, self.pad_kind
        if not isinstance(self.padding, str):
            pads = [v for pair in self.padding for v in pair]  # lo_h, hi_h, lo_w, hi_w; "m" is a minus sign
            pad = ("neg" if min(pads) < 0 else "pad") + ".".join(f"m{-v}" if v < 0 else str(v) for v in pads)
        name = (
            f"s{sh}{'' if sh == sw else f'x{sw}'}-{pad}-k{self.kernel[0]}x{self.kernel[1]}"
            f"-m{self.in_size[0]}x{self.in_size[1]}-c{self.ci}to{self.co}-n{self.batch}"
            f"-{self.dtype}-{self.stdp}-{self.spikes}"
            + ("" if self.density == DEFAULT_DENSITY else f"-d{self.density:g}")
            + ("" if self.inputs == "random" else f"-{self.inputs}")
        )
        object.__setattr__(self, "name", name)

    @property
    def pad_kind(self) -> str:
        if isinstance(self.padding, str):
            return self.padding.lower()
        return "negative" if min(v for pair in self.padding for v in pair) < 0 else "explicit"

    @property
    def tier(self) -> str:
        """Size tier for reports: ``"workload"`` (SPEC §8 at full size), ``"large"`` (the large tier,
        or any case of at least ``LARGE_MACS`` multiply-adds per pass), else ``"small"``."""
        large = self.name in LARGE_TIER or self.macs >= LARGE_MACS
        return "workload" if self.name in _WORKLOAD_NAMES else "large" if large else "small"

    @property
    def macs(self) -> int:
        """Multiply-adds of one pass, ``N·H·W·Ci·Co·kh·kw`` (SPEC §8 counts 2 FLOPs each)."""
        return self.batch * self.in_size[0] * self.in_size[1] * self.ci * self.co * self.kernel[0] * self.kernel[1]

    @property
    def params(self) -> dict[str, float]:
        """The STDP scalars of this case (``A_plus``, ``A_minus``, ``eta``, ...)."""
        return dict(STDP_PARAMS[self.stdp])

    def geometry(self) -> geometry.Geometry:
        """Resolved geometry (raises ``ValueError`` if the case is invalid, e.g. empty output)."""
        return _geometry_of(self)

    def is_valid(self) -> bool:
        try:
            return self.geometry() is not None
        except ValueError:
            return False

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON values (tuples become lists), then ``name`` and ``params``."""
        return {**json.loads(json.dumps(asdict(self))), "params": self.params}

    def to_json(self) -> str:
        """The init fields as compact JSON: what :func:`case_from_text` reads back."""
        return json.dumps({k: v for k, v in asdict(self).items() if k != "name"}, separators=(",", ":"))


@lru_cache(maxsize=8192)
def _geometry_of(case: Case) -> geometry.Geometry:
    """``case``'s geometry, checked on float32 arrays that own no memory (every stride 0)."""
    z = lambda shape: np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape=shape, strides=(0,) * len(shape))
    x, kernel = z((case.batch, *case.in_size, case.ci)), z((*case.kernel, case.ci, case.co))
    return geometry.check_deconv2d(x, kernel, case.stride, case.padding)


_INT = r"(m?-?\d+)"
_NAME_RE = re.compile(
    r"^s(?P<sh>\d+)(?:x(?P<sw>\d+))?"
    rf"-(?P<pad>same|valid|(?:pad|neg){_INT}\.{_INT}\.{_INT}\.{_INT})"
    r"-k(?P<kh>\d+)x(?P<kw>\d+)-m(?P<h>\d+)x(?P<w>\d+)-c(?P<ci>\d+)to(?P<co>\d+)-n(?P<n>\d+)"
    r"-(?P<dtype>f32|f64|mix)-(?P<stdp>[a-z]+)-(?P<spikes>bool|float)"
    r"(?:-d(?P<density>[0-9.]+))?(?:-(?P<inputs>sim))?$"
)


def parse_case(name: str) -> Case:
    """The case a name denotes (inverse of ``Case.name``); ``ValueError`` if it is malformed."""
    m = _NAME_RE.match(name.strip())
    if not m:
        raise ValueError(
            f"not a case name: {name!r}; expected e.g. 's3x2-valid-k3x2-m5x7-c3to4-n2-f32-clip-bool' "
            "(stride, padding same|valid|padLO.HI.LO.HI|neg..., kernel, map, channels, batch, "
            f"f32|f64|mix, STDP set {'|'.join(STDP_PARAMS)}, bool|float spikes, optional -dDENSITY and -sim)"
        )
    g = m.groupdict()
    if g["pad"] in ("same", "valid"):
        padding: str | Pads = g["pad"].upper()
    else:
        a, b, c, d = (-int(t[1:]) if t.startswith("m") else int(t) for t in g["pad"][3:].split("."))
        padding = ((a, b), (c, d))
    if g["stdp"] not in STDP_PARAMS:
        raise ValueError(f"unknown STDP parameter set {g['stdp']!r} in {name!r}; known: {', '.join(STDP_PARAMS)}")
    # a square stride is written once (``s2``): the width stride defaults to the height's
    nums = [int(v or g["sh"]) for v in m.group("sh", "sw", "kh", "kw", "h", "w", "ci", "co", "n")]
    sh, sw, kh, kw, h, w, ci, co, n = nums
    density, inputs = _density(g["density"] or DEFAULT_DENSITY, name), g["inputs"] or "random"
    return Case((sh, sw), padding, (kh, kw), (h, w), ci, co, n, *m.group("dtype", "stdp", "spikes"), density, inputs)


def _density(v: Any, where: str) -> float:
    try:
        d = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"density must be a number in (0, 1], got {v!r} in {where!r}") from None
    if not 0.0 < d <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {d:g} in {where!r}")
    return d


# A case's arrays must be something a test can allocate: a --case beyond this is a usage error.
MAX_CASE_ELEMENTS = 1 << 28

# The JSON form's int fields: (lower bound, nesting: 0 an int, 1 a pair, 2 a pair of pairs); bools are no ints.
_JSON_INTS = {"stride": (1, 1), "kernel": (1, 1), "in_size": (1, 1), "ci": (1, 0), "co": (1, 0), "batch": (0, 0)}
_JSON_INTS["padding"] = (-(1 << 30), 2)  # or "SAME" / "VALID"
_JSON_CHOICES = {"dtype": DTYPES, "stdp": tuple(STDP_PARAMS), "spikes": SPIKES, "inputs": INPUTS}


def _json_ints(key: str, v: Any, depth: int) -> Any:
    """``v`` as an int of field ``key`` (``depth`` 0) or pairs of them (tuples); ``ValueError`` naming ``key``."""
    if depth and not (isinstance(v, list) and len(v) == 2):
        shape = "'SAME', 'VALID' or [[lo_h, hi_h], [lo_w, hi_w]] of ints" if depth == 2 else "a list of two ints"
        raise ValueError(f"{key!r} must be {shape}, got {v!r}")
    if depth:
        return tuple(_json_ints(key, p, depth - 1) for p in v)
    if not isinstance(v, int) or isinstance(v, bool) or v < _JSON_INTS[key][0]:
        raise ValueError(f"{key!r} must be an int >= {_JSON_INTS[key][0]}, got {v!r}")
    return v


def _json_field(key: str, v: Any) -> Any:
    """Field ``key`` of a case from its JSON value ``v``, checked (a ``ValueError`` names the key)."""
    if key in _JSON_CHOICES and v not in _JSON_CHOICES[key]:
        raise ValueError(f"{key!r} must be one of {', '.join(_JSON_CHOICES[key])}, got {v!r}")
    if key == "density":
        return _density(v, key)
    if key == "padding" and isinstance(v, str) and v.upper() in ("SAME", "VALID"):
        return v.upper()
    return _json_ints(key, v, _JSON_INTS[key][1]) if key in _JSON_INTS else v


def _case_from_json(text: str) -> Case:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"malformed case JSON {text!r}: {err}") from None
    if not isinstance(d, dict):
        raise ValueError(f"case JSON must be an object, got {text!r}")
    init = {f.name: f.default for f in fields(Case) if f.init}
    unknown = set(d) - set(init) - {"name", "params"}
    if unknown:
        raise ValueError(f"case JSON {text!r} has unknown key(s) {', '.join(sorted(unknown))}")
    try:  # field by field in declaration order: the first missing or bad one is reported
        return Case(**{k: _json_field(k, d[k] if v is MISSING else d.get(k, v)) for k, v in init.items()})
    except KeyError as err:
        raise ValueError(f"case JSON {text!r} lacks the key {err.args[0]!r}") from None
    except ValueError as err:
        raise ValueError(f"case JSON {text!r}: {err}") from None


def case_from_text(text: str) -> Case:
    """A case from its name or its JSON form (``Case.to_json()``); validated without allocating,
    and refused (``ValueError``) when its arrays would hold more than ``MAX_CASE_ELEMENTS``."""
    text = text.strip()
    case = _case_from_json(text) if text.startswith("{") else parse_case(text)
    g = case.geometry()  # raises ValueError naming the problem
    biggest = max(math.prod(s) for s in (g.x_shape, g.kernel_shape, g.y_shape))
    if biggest > MAX_CASE_ELEMENTS:
        raise ValueError(f"case {case.name} needs an array of {biggest} elements; at most {MAX_CASE_ELEMENTS} allowed")
    return case


def dtype_of(case: Case, role: str) -> type:
    """The dtype of input ``role`` (``"x"``, ``"kernel"``, ``"d_out"``, ...) in ``case``."""
    return _MIX[role] if case.dtype == "mix" else _DTYPE_OF[case.dtype]


def _spikes(rng: np.random.Generator, shape: tuple[int, ...], density: float, case: Case) -> np.ndarray:
    s = rng.random(shape) < density
    if s.size and not s.any():
        s.flat[rng.integers(s.size)] = True  # never an all-silent map: it would hide bugs
    return s if case.spikes == "bool" else s.astype(dtype_of(case, "spike"))


def make_inputs(case: Case, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded, non-symmetric inputs for every operator of ``case``.

    ``inputs="random"``: ``x (N,H,W,Ci)`` ~ N(0.3, 1); ``kernel (kh,kw,Ci,Co)`` ~ U(-0.6, 1.4) (so
    the ``clip`` sets clip on both sides); ``d_out (N,Ho,Wo,Co)`` ~ N(-0.2, 1); spikes binary at
    the case's density (bool or float per the case); traces positive, U(0, 1).

    ``inputs="sim"`` (SPEC §8, what a simulation feeds a step): spikes 0/1 at the case's density, ``x``
    the very ``pre_spike`` array (as the seed passes it); ``d_out`` 0/1 at a third of the density;
    ``kernel`` ~ U(0.01, 0.51); traces dense and positive, U(0, 1).
    """
    g = case.geometry()
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(case.name.encode())])
    xs, ks, ys = g.x_shape, g.kernel_shape, g.y_shape
    dt = lambda role: dtype_of(case, role)
    # the order of the draws fixes the values: x or pre_spike, kernel, d_out, then the rest
    if case.inputs == "sim":
        x = pre = _spikes(rng, xs, case.density, case)  # the step's input is the presynaptic spike train itself
        kernel = (rng.random(ks) * 0.5 + 0.01).astype(dt("kernel"))
        # postsynaptic activity, a third as dense: a decoder's output fires less than its input
        d_out = (rng.random(ys) < case.density / 3).astype(dt("d_out"))
    else:
        x, kernel = (rng.standard_normal(xs) + 0.3).astype(dt("x")), rng.uniform(-0.6, 1.4, ks).astype(dt("kernel"))
        d_out = (rng.standard_normal(ys) - 0.2).astype(dt("d_out"))
        pre = _spikes(rng, xs, case.density, case)
    pre_tr = rng.uniform(0.0, 1.0, xs).astype(dt("pre_trace"))
    post = _spikes(rng, ys, case.density, case)
    post_tr = rng.uniform(0.0, 1.0, ys).astype(dt("post_trace"))
    return dict(x=x, kernel=kernel, d_out=d_out, pre_spike=pre, pre_trace=pre_tr, post_spike=post, post_trace=post_tr)


def draw_padding(integers: Callable[[int, int], int], kind: str, kernel: tuple[int, int]) -> str | Pads | None:
    """Padding of ``kind`` (one of :data:`PAD_KINDS`) for ``kernel``: ``"SAME"``/``"VALID"``, or asymmetric
    explicit pads drawn by ``integers(lo, hi)`` (``hi`` included) in ``[lo, k]``, ``lo`` -2 for ``negative``
    and 0 for ``explicit``. ``None`` when a ``negative`` draw has no negative (cropping) pad: the caller draws
    again (:func:`full_grid`) or rejects the example (the Hypothesis strategy)."""
    if kind in ("same", "valid"):
        return kind.upper()
    lo = -2 if kind == "negative" else 0
    vals = [integers(lo, k) for k in (kernel[0], kernel[0], kernel[1], kernel[1])]
    return ((vals[0], vals[1]), (vals[2], vals[3])) if kind == "explicit" or min(vals) < 0 else None


@lru_cache(maxsize=4)
def full_grid() -> tuple[Case, ...]:
    """Every stride × padding kind × kernel × map, in float32 and float64 (plus a share of
    mixed-dtype cases); channels, batch, STDP set and spike dtype rotate, seeded. Invalid
    geometries (empty output) are left out."""
    rng = np.random.default_rng(GRID_SEED)
    pick = lambda values: values[int(rng.integers(len(values)))]
    integers = lambda lo, hi: int(rng.integers(lo, hi + 1))
    sets, cases = list(STDP_PARAMS), []
    for stride, kind, kernel, size in itertools.product(STRIDES, PAD_KINDS, KERNELS, MAPS):
        tries = 1 if kind in ("same", "valid") else 8  # explicit pads: redraw until the output is non-empty
        for dtype in ("f32", "f64", "mix") if rng.random() < 0.1 else ("f32", "f64"):
            for _ in range(tries):
                ci, co = pick(CHANNELS)
                while (padding := draw_padding(integers, kind, kernel)) is None:
                    pass  # a "negative" draw without a negative pad: draw again
                # the remaining draws in this order: batch, STDP set, spike dtype
                case = Case(stride, padding, kernel, size, ci, co, pick(BATCHES), dtype, pick(sets), pick(SPIKES))
                if case.is_valid():
                    cases.append(case)
                    break
    return tuple(_unique([*cases, *(parse_case(n) for n in (*_CURATED, *LARGE_TIER))]))


def _unique(cases: list[Case]) -> list[Case]:
    """``cases`` without repeated names, first occurrences in order."""
    seen: dict[str, Case] = {}
    return [seen.setdefault(c.name, c) for c in cases if c.name not in seen]


# Hand-picked cases: each exposes at least one self-test bug whatever the sample draws
# (Ci >= 2 and N >= 2, asymmetric strides, every STDP set, float32 and mixed dtypes), plus
# SPEC's worked example geometry, the 1x1 map / 32x32 map extremes and an empty batch.
_CURATED = (
    "s1-same-k2x2-m2x2-c1to1-n1-f64-basic-bool",
    "s3x2-valid-k3x2-m5x7-c3to4-n2-f32-all-bool",
    "s1x2-pad1.0.2.1-k2x5-m6x4-c2to3-n3-f64-target-float",
    "s3x2-neg1.m1.0.2-k3x3-m4x5-c2to1-n2-f64-clip-bool",
    "s2-same-k5x5-m7x4-c3to2-n2-f32-decay-float",
    "s3-valid-k1x1-m1x1-c2to3-n2-f64-all-float",
    "s2-neg2.0.m1.1-k3x2-m9x6-c4to2-n3-mix-clip-bool",
    "s1-same-k3x3-m32x32-c2to2-n1-f32-target-bool",
    "s3x2-same-k2x5-m12x12-c3to2-n3-f64-decay-bool",
    "s2-same-k3x3-m4x4-c2to3-n0-f32-basic-bool",  # N = 0: correctly shaped, empty results (SPEC §5)
    # square maps and kernels, one stride, SAME/VALID: what upstream ngc-learn supports (parity)
    "s2-same-k3x3-m5x5-c2to3-n2-f32-all-bool",
    "s3-valid-k5x5-m12x12-c3to2-n3-f32-clip-float",
    # what a simulation feeds a step, small: x is the pre_spike array, d_out sparser than x
    "s2-same-k3x3-m6x6-c3to2-n2-f32-sim-float-d0.4-sim",
)

QUICK_SIZE = 40

# The large tier (in the quick and full grids): sizes above every backend's path thresholds (Numba's
# parallel drivers, JAX's CPU "phase" formulation and its batch chunks), batch >= 4, channel
# counts >= 16 that are no multiple of 4 or 8 (remainder lanes), maps >= 28, every padding kind,
# both dtypes, both input kinds. A path of a backend that no case here or in the small cases
# exercises fails the grid (``convstdp.conformance.report.path_coverage``).
LARGE_MACS = 2_000_000
LARGE_TIER: tuple[str, ...] = (
    "s2-same-k5x5-m28x28-c17to19-n4-f32-all-bool",
    "s1-valid-k3x3-m30x29-c19to18-n5-f64-clip-float",
    "s3x2-neg2.m1.1.0-k4x3-m29x31-c21to17-n6-mix-decay-bool",
    "s2-pad3.1.0.2-k3x5-m28x30-c18to22-n4-f32-sim-float-d0.1-sim",
    "s1-same-k5x5-m28x28-c17to18-n7-f32-target-bool-d0.05-sim",
)

# SPEC §8 workloads at full size (the ``workloads`` grid; ``gpu-large`` only where a GPU is).
SPEC_WORKLOADS: dict[str, str] = {
    "online-decoder": "s2-same-k5x5-m14x14-c16to1-n1-f32-sim-float-d0.1-sim",
    "batch-mid": "s1-same-k5x5-m28x28-c8to16-n32-f32-sim-float-d0.1-sim",
    "batch-large": "s2-valid-k3x3-m32x32-c32to32-n64-f32-sim-float-d0.1-sim",
    "gpu-large": "s2-same-k5x5-m32x32-c64to64-n256-f32-sim-float-d0.1-sim",
}
GPU_ONLY_WORKLOADS = frozenset({"gpu-large"})
_WORKLOAD_NAMES = frozenset(SPEC_WORKLOADS.values())


def workloads_grid(gpu: bool = False) -> tuple[Case, ...]:
    """The SPEC §8 workloads as cases, at full size (``gpu-large`` only with ``gpu``)."""
    return tuple(parse_case(c) for w, c in SPEC_WORKLOADS.items() if gpu or w not in GPU_ONLY_WORKLOADS)


@lru_cache(maxsize=4)
def quick_grid() -> tuple[Case, ...]:
    """A fixed, seeded selection of the full grid (~40 cases) that covers every value of every
    axis (stride, padding kind, kernel, map, channels, batch, dtype, STDP set, spike dtype),
    plus :data:`_CURATED`. Kept small because the JAX backend compiles once per shape."""
    full = full_grid()
    rng = np.random.default_rng(GRID_SEED + 1)
    chosen = [parse_case(n) for n in _CURATED]
    covered = {av for c in chosen for av in _axis_values(c)}
    want = {av for c in full for av in _axis_values(c)}
    order = list(rng.permutation(len(full)))
    while not want <= covered:  # greedy cover: the sampled case covering most missing values
        best = max(order, key=lambda i: len(set(_axis_values(full[i])) - covered))
        chosen.append(full[best])
        covered |= set(_axis_values(full[best]))
        order.remove(best)
    # Fill with sampled cases (in the permutation's order), avoiding the costliest maps to keep the grid fast.
    cheap = [c for c in (full[i] for i in order) if c.in_size[0] * c.in_size[1] <= 144 and c.name not in LARGE_TIER]
    chosen += cheap[: max(0, QUICK_SIZE - len(chosen))]
    return tuple(_unique([*chosen, *(parse_case(n) for n in LARGE_TIER)]))


_AXES = ("stride", "padding", "kernel", "map", "channels", "batch", "dtype", "stdp", "spikes")


def _axis_values(c: Case) -> list[tuple[str, Any]]:
    """``[(axis, value)]`` of ``c`` for every axis of :data:`_AXES`."""
    values = (c.stride, c.pad_kind, c.kernel, c.in_size, (c.ci, c.co), c.batch, c.dtype, c.stdp, c.spikes)
    return list(zip(_AXES, values, strict=True))


def coverage(cases: tuple[Case, ...] | list[Case]) -> dict[str, list[str]]:
    """``{axis: [values present]}``, for reports."""
    out: dict[str, set[str]] = {}
    for c in cases:
        for axis, v in _axis_values(c):
            out.setdefault(axis, set()).add("x".join(map(str, v)) if isinstance(v, tuple) else str(v))
    return {k: sorted(v) for k, v in out.items()}


GRIDS = ("quick", "full", "workloads")


def grid(name: str, *, gpu: bool = False) -> tuple[Case, ...]:
    """``"quick"``, ``"full"`` or ``"workloads"`` (``gpu``: include the GPU-only workload)."""
    if name not in GRIDS:
        raise ValueError(f"unknown grid {name!r}; expected one of {', '.join(GRIDS)} (or use the random grid)")
    return quick_grid() if name == "quick" else full_grid() if name == "full" else workloads_grid(gpu)
