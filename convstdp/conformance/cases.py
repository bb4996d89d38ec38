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
import re
import zlib
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from convstdp import geometry

__all__ = [
    "Case",
    "STDP_PARAMS",
    "STRIDES",
    "PAD_KINDS",
    "KERNELS",
    "MAPS",
    "CHANNELS",
    "BATCHES",
    "DTYPES",
    "SPIKES",
    "GRID_SEED",
    "parse_case",
    "case_from_text",
    "make_inputs",
    "full_grid",
    "quick_grid",
    "grid",
]

# STDP parameter sets: every parameter is exercised by at least one set; non-symmetric values.
STDP_PARAMS: dict[str, dict[str, float]] = {
    "basic": dict(A_plus=0.8, A_minus=0.3, eta=0.1, pretrace_target=0.0, w_decay=0.0, w_bound=0.0),
    "target": dict(A_plus=1.0, A_minus=0.6, eta=0.05, pretrace_target=0.35, w_decay=0.0, w_bound=0.0),
    "decay": dict(A_plus=0.7, A_minus=0.45, eta=0.2, pretrace_target=0.0, w_decay=0.03, w_bound=0.0),
    "clip": dict(A_plus=1.1, A_minus=0.5, eta=0.3, pretrace_target=0.0, w_decay=0.0, w_bound=1.0),
    "all": dict(A_plus=0.9, A_minus=1.2, eta=0.15, pretrace_target=0.2, w_decay=0.01, w_bound=1.3),
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

GRID_SEED = 20260528  # fixes which cases the grids hold; --seed changes only the values

_DTYPE_OF = {"f32": np.float32, "f64": np.float64}
# "mix": float32 and float64 inputs together; every result is float64 (np.result_type).
_MIX = {
    "x": np.float32,
    "kernel": np.float64,
    "d_out": np.float32,
    "pre_trace": np.float32,
    "post_trace": np.float64,
    "spike": np.float32,
}

Pads = tuple[tuple[int, int], tuple[int, int]]


def _num(v: int) -> str:
    return f"m{-v}" if v < 0 else str(v)


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
    name: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        sh, sw = self.stride
        st = f"s{sh}" if sh == sw else f"s{sh}x{sw}"
        if isinstance(self.padding, str):
            pad = self.padding.lower()
        else:
            (a, b), (c, d) = self.padding
            pad = ("neg" if min(a, b, c, d) < 0 else "pad") + ".".join(_num(v) for v in (a, b, c, d))
        name = (
            f"{st}-{pad}-k{self.kernel[0]}x{self.kernel[1]}-m{self.in_size[0]}x{self.in_size[1]}"
            f"-c{self.ci}to{self.co}-n{self.batch}-{self.dtype}-{self.stdp}-{self.spikes}"
        )
        object.__setattr__(self, "name", name)

    # -- derived ---------------------------------------------------------------------------

    @property
    def pad_kind(self) -> str:
        if isinstance(self.padding, str):
            return self.padding.lower()
        return "negative" if min(v for pair in self.padding for v in pair) < 0 else "explicit"

    @property
    def params(self) -> dict[str, float]:
        """The STDP scalars of this case (``A_plus``, ``A_minus``, ``eta``, ...)."""
        return dict(STDP_PARAMS[self.stdp])

    def geometry(self) -> geometry.Geometry:
        """Resolved geometry (raises ``ValueError`` if the case is invalid, e.g. empty output)."""
        return _geometry_of(self.stride, self.padding, self.kernel, self.in_size, self.ci, self.co, self.batch)

    def is_valid(self) -> bool:
        try:
            self.geometry()
        except ValueError:
            return False
        return True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["name"] = self.name
        d["padding"] = self.padding if isinstance(self.padding, str) else [list(p) for p in self.padding]
        d["stride"], d["kernel"], d["in_size"] = list(self.stride), list(self.kernel), list(self.in_size)
        d["params"] = self.params
        return d

    def to_json(self) -> str:
        d = self.to_dict()
        d.pop("name")
        d.pop("params")
        return json.dumps(d, separators=(",", ":"))


@lru_cache(maxsize=8192)
def _geometry_of(
    stride: tuple[int, int], padding: Any, kernel: tuple[int, int], in_size: tuple[int, int], ci: int, co: int, n: int
) -> geometry.Geometry:
    x = np.empty((n, *in_size, ci), np.float32)
    k = np.empty((*kernel, ci, co), np.float32)
    return geometry.check_deconv2d(x, k, stride, padding)


# ----------------------------------------------------------------------------- parsing

_INT = r"(m?-?\d+)"
_NAME_RE = re.compile(
    r"^s(?P<sh>\d+)(?:x(?P<sw>\d+))?"
    rf"-(?P<pad>same|valid|(?:pad|neg){_INT}\.{_INT}\.{_INT}\.{_INT})"
    r"-k(?P<kh>\d+)x(?P<kw>\d+)-m(?P<h>\d+)x(?P<w>\d+)-c(?P<ci>\d+)to(?P<co>\d+)-n(?P<n>\d+)"
    r"-(?P<dtype>f32|f64|mix)-(?P<stdp>[a-z]+)-(?P<spikes>bool|float)$"
)


def _int(tok: str) -> int:
    return -int(tok[1:]) if tok.startswith("m") else int(tok)


def parse_case(name: str) -> Case:
    """The case a name denotes (inverse of ``Case.name``); ``ValueError`` if it is malformed."""
    m = _NAME_RE.match(name.strip())
    if not m:
        raise ValueError(
            f"not a case name: {name!r}; expected e.g. 's3x2-valid-k3x2-m5x7-c3to4-n2-f32-clip-bool' "
            "(stride, padding same|valid|padLO.HI.LO.HI|neg..., kernel, map, channels, batch, "
            f"f32|f64|mix, STDP set {'|'.join(STDP_PARAMS)}, bool|float spikes)"
        )
    g = m.groupdict()
    pad_tok = g["pad"]
    if pad_tok in ("same", "valid"):
        padding: str | Pads = pad_tok.upper()
    else:
        a, b, c, d = (_int(t) for t in pad_tok[3:].split("."))
        padding = ((a, b), (c, d))
    if g["stdp"] not in STDP_PARAMS:
        raise ValueError(f"unknown STDP parameter set {g['stdp']!r} in {name!r}; known: {', '.join(STDP_PARAMS)}")
    sh = int(g["sh"])
    return Case(
        stride=(sh, int(g["sw"]) if g["sw"] else sh),
        padding=padding,
        kernel=(int(g["kh"]), int(g["kw"])),
        in_size=(int(g["h"]), int(g["w"])),
        ci=int(g["ci"]),
        co=int(g["co"]),
        batch=int(g["n"]),
        dtype=g["dtype"],
        stdp=g["stdp"],
        spikes=g["spikes"],
    )


def case_from_text(text: str) -> Case:
    """A case from its name or its JSON form (``Case.to_json()``); validated."""
    text = text.strip()
    if text.startswith("{"):
        try:
            d = json.loads(text)
            pad = d["padding"]
            case = Case(
                stride=tuple(d["stride"]),
                padding=pad.upper() if isinstance(pad, str) else (tuple(pad[0]), tuple(pad[1])),
                kernel=tuple(d["kernel"]),
                in_size=tuple(d["in_size"]),
                ci=int(d["ci"]),
                co=int(d["co"]),
                batch=int(d["batch"]),
                dtype=d.get("dtype", "f64"),
                stdp=d.get("stdp", "basic"),
                spikes=d.get("spikes", "bool"),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"malformed case JSON {text!r}: {err}") from None
        if case.dtype not in DTYPES or case.spikes not in SPIKES or case.stdp not in STDP_PARAMS:
            raise ValueError(f"case JSON {text!r}: dtype, spikes or stdp out of range")
    else:
        case = parse_case(text)
    case.geometry()  # raises ValueError naming the problem
    return case


# ----------------------------------------------------------------------------- values


def _dtype(case: Case, role: str) -> type:
    if case.dtype == "mix":
        return _MIX[role]
    return _DTYPE_OF[case.dtype]


def _spikes(rng: np.random.Generator, shape: tuple[int, ...], density: float, case: Case) -> np.ndarray:
    s = rng.random(shape) < density
    if s.size and not s.any():
        s.flat[rng.integers(s.size)] = True  # never an all-silent map: it would hide bugs
    return s if case.spikes == "bool" else s.astype(_dtype(case, "spike"))


def make_inputs(case: Case, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded, non-symmetric inputs for every operator of ``case``.

    ``x (N,H,W,Ci)`` ~ N(0.3, 1); ``kernel (kh,kw,Ci,Co)`` ~ U(-0.6, 1.4) (so the ``clip`` sets
    clip on both sides); ``d_out (N,Ho,Wo,Co)`` ~ N(-0.2, 1); spikes sparse binary (30 %, bool or
    float per the case); traces positive, U(0, 1) on x-shaped ``pre_trace`` and y-shaped
    ``post_trace``.
    """
    g = case.geometry()
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(case.name.encode())])
    xs, ks, ys = g.x_shape, g.kernel_shape, g.y_shape
    return {
        "x": (rng.standard_normal(xs) + 0.3).astype(_dtype(case, "x")),
        "kernel": rng.uniform(-0.6, 1.4, ks).astype(_dtype(case, "kernel")),
        "d_out": (rng.standard_normal(ys) - 0.2).astype(_dtype(case, "d_out")),
        "pre_spike": _spikes(rng, xs, 0.3, case),
        "pre_trace": rng.uniform(0.0, 1.0, xs).astype(_dtype(case, "pre_trace")),
        "post_spike": _spikes(rng, ys, 0.3, case),
        "post_trace": rng.uniform(0.0, 1.0, ys).astype(_dtype(case, "post_trace")),
    }


# ----------------------------------------------------------------------------- grids


def _pads(rng: np.random.Generator, kind: str, kernel: tuple[int, int]) -> Pads:
    """Asymmetric explicit pads; ``negative`` has at least one negative (cropping) pad."""
    lo_bound = -2 if kind == "negative" else 0
    while True:
        vals = [int(rng.integers(lo_bound, k + 1)) for k in (kernel[0], kernel[0], kernel[1], kernel[1])]
        if kind == "explicit" or min(vals) < 0:
            return ((vals[0], vals[1]), (vals[2], vals[3]))


def _padding(rng: np.random.Generator, kind: str, kernel: tuple[int, int]) -> str | Pads:
    return kind.upper() if kind in ("same", "valid") else _pads(rng, kind, kernel)


@lru_cache(maxsize=4)
def full_grid() -> tuple[Case, ...]:
    """Every stride × padding kind × kernel × map, in float32 and float64 (plus a share of
    mixed-dtype cases); channels, batch, STDP set and spike dtype rotate, seeded. Invalid
    geometries (empty output) are left out."""
    rng = np.random.default_rng(GRID_SEED)
    cases: list[Case] = []
    for stride, kind, kernel, size in itertools.product(STRIDES, PAD_KINDS, KERNELS, MAPS):
        for dtype in ("f32", "f64", "mix") if rng.random() < 0.1 else ("f32", "f64"):
            for _ in range(8):  # explicit pads: redraw until the output is non-empty
                ci, co = CHANNELS[int(rng.integers(len(CHANNELS)))]
                case = Case(
                    stride=stride,
                    padding=_padding(rng, kind, kernel),
                    kernel=kernel,
                    in_size=size,
                    ci=ci,
                    co=co,
                    batch=BATCHES[int(rng.integers(len(BATCHES)))],
                    dtype=dtype,
                    stdp=list(STDP_PARAMS)[int(rng.integers(len(STDP_PARAMS)))],
                    spikes=SPIKES[int(rng.integers(len(SPIKES)))],
                )
                if case.is_valid():
                    cases.append(case)
                    break
                if kind in ("same", "valid"):
                    break
    return tuple(_unique(cases))


def _unique(cases: list[Case]) -> list[Case]:
    seen: dict[str, Case] = {}
    for c in cases:
        seen.setdefault(c.name, c)
    return list(seen.values())


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
)

QUICK_SIZE = 40


@lru_cache(maxsize=4)
def quick_grid() -> tuple[Case, ...]:
    """A fixed, seeded selection of the full grid (~40 cases) that covers every value of every
    axis (stride, padding kind, kernel, map, channels, batch, dtype, STDP set, spike dtype),
    plus :data:`_CURATED`. Kept small because the JAX backend compiles once per shape."""
    full = full_grid()
    rng = np.random.default_rng(GRID_SEED + 1)
    chosen = [parse_case(n) for n in _CURATED]
    axes = _axis_values

    covered = {av for c in chosen for av in axes(c)}
    want = {av for c in full for av in axes(c)}
    order = list(rng.permutation(len(full)))
    while not want <= covered:  # greedy cover: the sampled case covering most missing values
        best = max(order, key=lambda i: len(set(axes(full[i])) - covered))
        chosen.append(full[best])
        covered |= set(axes(full[best]))
        order.remove(best)
    # Fill with sampled cases, avoiding the costliest maps to keep the grid fast.
    for i in order:
        if len(chosen) >= QUICK_SIZE:
            break
        c = full[i]
        if c.in_size[0] * c.in_size[1] <= 144:
            chosen.append(c)
    return tuple(_unique(chosen))


def _axis_values(c: Case) -> list[tuple[str, Any]]:
    return [
        ("stride", c.stride),
        ("padding", c.pad_kind),
        ("kernel", c.kernel),
        ("map", c.in_size),
        ("channels", (c.ci, c.co)),
        ("batch", c.batch),
        ("dtype", c.dtype),
        ("stdp", c.stdp),
        ("spikes", c.spikes),
    ]


def coverage(cases: tuple[Case, ...] | list[Case]) -> dict[str, list[str]]:
    """``{axis: [values present]}``, for reports."""
    out: dict[str, set[str]] = {}
    for c in cases:
        for axis, v in _axis_values(c):
            out.setdefault(axis, set()).add("x".join(map(str, v)) if isinstance(v, tuple) else str(v))
    return {k: sorted(v) for k, v in out.items()}


def grid(name: str) -> tuple[Case, ...]:
    """``"quick"`` or ``"full"``."""
    if name == "quick":
        return quick_grid()
    if name == "full":
        return full_grid()
    raise ValueError(f"unknown grid {name!r}; expected 'quick' or 'full' (or use the random grid)")
