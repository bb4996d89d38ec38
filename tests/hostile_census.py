"""Hostile-input census: a catalogue of bad and unusual arguments run through every backend.

Each case is one operator call through ``convstdp.get_backend(name)``. Its outcome is judged
against the oracle: the reference, validated on a fresh memo (as in a new process) and, when
the call is valid, evaluated on clean float64 copies of the arrays. Per backend it prints

    tried / correct / clear error / unclear / wrong / crash

- *correct*: a valid call whose result has the SPEC §4 dtype, the right shape and the
  reference's values (float32 tolerance);
- *clear error*: ``ValueError``/``TypeError`` naming an argument, where the oracle raises the
  same (or, for the JAX backend, float64 refused while x64 is off);
- *unclear*: any other exception, or an error that names no argument;
- *wrong*: a result for an invalid call, or a result that differs from the reference;
- *crash*: the process died or the call ran past its time limit.

Run ``python tests/hostile_census.py [--backend NAME]... [--exclude REGEX] [--verbose]``;
``--overhead`` times the validating wrapper instead. Each backend runs in a child process,
restarted after a crash, so an abort is counted, not fatal. The test suite
(``tests/test_hostile.py``) imports the shared pieces from here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ARG_NAMES = (
    "x",
    "kernel",
    "d_out",
    "stride",
    "padding",
    "kernel_size",
    "input_shape",
    "pre_spike",
    "pre_trace",
    "post_spike",
    "post_trace",
    "A_plus",
    "A_minus",
    "eta",
    "pretrace_target",
    "w_decay",
    "w_bound",
)
_NAMED = re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(ARG_NAMES) + r")(?![A-Za-z0-9_])")

OP_ARRAYS: dict[str, tuple[str, ...]] = {
    "deconv2d": ("x", "kernel"),
    "deconv2d_dk": ("x", "d_out"),
    "deconv2d_dx": ("kernel", "d_out"),
    "stdp_update": ("kernel", "pre_spike", "pre_trace", "post_spike", "post_trace"),
    "stdp_step": ("kernel", "x", "pre_spike", "pre_trace", "post_spike", "post_trace"),
}
OPS = tuple(OP_ARRAYS)
STDP = dict(A_plus=0.9, A_minus=0.4, eta=0.3, pretrace_target=0.1, w_decay=0.05, w_bound=1.5)
CATEGORIES = ("correct", "clear error", "unclear", "wrong", "crash")


def names_an_argument(message: str) -> bool:
    """Whether ``message`` names one of the operators' arguments (as a whole word)."""
    return bool(_NAMED.search(message))


def call(be: Any, op: str, arrays: dict[str, Any], params: dict[str, Any]) -> Any:
    """``be.<op>(*arrays, **params)`` with the arrays in the operator's order."""
    return getattr(be, op)(*(arrays[n] for n in OP_ARRAYS[op]), **params)


@contextlib.contextmanager
def fresh_memo() -> Iterator[None]:
    """Run the block with an empty validation memo, as a new process would, then restore the old one."""
    from convstdp import geometry

    assert isinstance(geometry._MEMO, dict), "geometry's memo moved: update fresh_memo()"
    saved = geometry._MEMO
    geometry._MEMO = {}
    try:
        yield
    finally:
        geometry._MEMO = saved


@contextlib.contextmanager
def within(seconds: float) -> Iterator[None]:
    """Raise ``TimeoutError`` in the block once ``seconds`` have passed (main thread, POSIX; elsewhere
    the block just runs)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(*_: Any) -> None:
        raise TimeoutError(f"the call did not return within {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@dataclass
class Oracle:
    """What a call should give: ``error`` (the exception a fresh process raises) or ``values``."""

    error: BaseException | None = None
    values: tuple[np.ndarray, ...] = ()
    dtypes: tuple[np.dtype, ...] = ()  # each result's SPEC §4 dtype


def _clean(a: Any) -> Any:
    return np.array(np.asarray(a), dtype=np.float64) if not isinstance(a, str) else a


def oracle(op: str, arrays: dict[str, Any], params: dict[str, Any]) -> Oracle:
    """The reference's verdict on a fresh memo; for a valid call, its values on float64 copies."""
    import convstdp

    ref = convstdp.get_backend("reference")
    with fresh_memo():
        try:
            out = call(ref, op, arrays, params)
        except Exception as err:  # the verdict: any exception means "not a valid call"
            return Oracle(error=err)
        dtypes = tuple(o.dtype for o in _as_tuple(out))
        clean = {n: _clean(a) for n, a in arrays.items()}
        values = _as_tuple(call(ref, op, clean, params))
    return Oracle(values=values, dtypes=dtypes)


def _as_tuple(out: Any) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(o) for o in out) if isinstance(out, tuple) else (np.asarray(out),)


def mismatch(out: Any, want: Oracle) -> str | None:
    """Why ``out`` is not the oracle's answer (``None`` if it is)."""
    got = _as_tuple(out)
    if len(got) != len(want.values):
        return f"{len(got)} results, expected {len(want.values)}"
    for i, (g, w, dt) in enumerate(zip(got, want.values, want.dtypes, strict=True)):
        if g.dtype != dt:
            return f"result {i} has dtype {g.dtype}, expected {dt}"
        if g.shape != w.shape:
            return f"result {i} has shape {g.shape}, expected {w.shape}"
        tol = 2e-4 if dt == np.float32 else 1e-9
        scale = max(1.0, float(np.max(np.abs(w), initial=0.0)))
        err = float(np.max(np.abs(g.astype(np.float64) - w), initial=0.0))
        if not err <= tol * scale:
            return f"result {i} differs from the reference by {err:.3g} (scale {scale:.3g})"
    return None


def _x64_refusal(backend: str, err: BaseException) -> bool:
    """The JAX backends' documented refusal of float64 while x64 is off (SPEC §4: no silent downcast)."""
    return backend.startswith("jax") and isinstance(err, TypeError) and "64-bit mode" in str(err)


def judge(backend: str, outcome: Any, want: Oracle) -> tuple[str, str]:
    """``(category, detail)`` of one call's ``outcome`` (a result or the exception it raised)."""
    if isinstance(outcome, TimeoutError):
        return "crash", str(outcome)
    if isinstance(outcome, BaseException):
        text = f"{type(outcome).__name__}: {outcome}"
        clear = isinstance(outcome, ValueError | TypeError) and names_an_argument(str(outcome))
        if want.error is not None:
            if clear and type(outcome) is type(want.error):
                return "clear error", text
            return "unclear", f"{text} (a fresh reference raises {type(want.error).__name__}: {want.error})"
        if clear and _x64_refusal(backend, outcome):
            return "clear error", text
        return "unclear", f"{text} (valid: the reference returns a result)"
    if want.error is not None:
        return "wrong", f"returned a result where a fresh reference raises {type(want.error).__name__}: {want.error}"
    why = mismatch(outcome, want)
    return ("wrong", why) if why else ("correct", "")


# ------------------------------------------------------------------------------------- catalogue
# Hostile parameter values: (value, label). Valid ones must give the reference's answer, invalid
# ones a clear error, whatever was called before.

STRIDES: list[tuple[Any, str]] = [
    (1, "1"),
    (2, "2"),
    ((1, 2), "(1, 2)"),
    ([2, 1], "[2, 1]"),
    (np.int64(2), "np.int64(2)"),
    (np.int32(1), "np.int32(1)"),
    (np.array([2, 1]), "array([2, 1])"),
    ((np.int64(2), 1), "(np.int64(2), 1)"),
    (np.uint8(3), "np.uint8(3)"),
    (True, "True"),
    (False, "False"),
    (2.0, "2.0"),
    (1.5, "1.5"),
    (np.float64(2.0), "np.float64(2.0)"),
    ("2", "'2'"),
    (None, "None"),
    ((1,), "(1,)"),
    ((1, 2, 3), "(1, 2, 3)"),
    (0, "0"),
    (-1, "-1"),
    ((1, 0), "(1, 0)"),
    (np.array([2.0, 2.0]), "array([2., 2.])"),
    (np.bool_(True), "np.bool_(True)"),
    ((True, 1), "(True, 1)"),
    ((2.0, 1), "(2.0, 1)"),
    (np.array(2), "array(2)"),
    ([[1, 1]], "[[1, 1]]"),
    (10**6, "10**6"),
    (10**12, "10**12"),
    (2**62, "2**62"),
    (10**400, "10**400"),
    (10**5000, "10**5000 (past Python's int-to-str limit)"),
    ((1, 2**40), "(1, 2**40)"),
]

PADDINGS: list[tuple[Any, str]] = [
    ("SAME", "'SAME'"),
    ("same", "'same'"),
    ("VALID", "'VALID'"),
    ("Valid", "'Valid'"),
    (((1, 0), (0, 1)), "((1, 0), (0, 1))"),
    ([[1, 0], [0, 1]], "[[1, 0], [0, 1]]"),
    (np.array([[2, 0], [0, 2]]), "array([[2, 0], [0, 2]])"),
    (np.array([[0, 2], [2, 0]]), "array([[0, 2], [2, 0]])"),
    (((-1, 2), (2, -1)), "((-1, 2), (2, -1))"),
    (((0, 0), (0, 0)), "((0, 0), (0, 0))"),
    (((np.int64(1), 1), (0, np.int8(0))), "numpy-int pads"),
    (((3, 3), (3, 3)), "((3, 3), (3, 3))"),
    (((-3, -3), (0, 0)), "((-3, -3), (0, 0))"),
    ("FULL", "'FULL'"),
    ("", "''"),
    ("SAMEE", "'SAMEE'"),
    (3, "3"),
    (None, "None"),
    (((1,), (2,)), "((1,), (2,))"),
    (((1.0, 0), (0, 0)), "((1.0, 0), (0, 0))"),
    (((True, 0), (0, 0)), "((True, 0), (0, 0))"),
    (((1, 0), (0, False)), "((1, 0), (0, False))"),
    (np.array([[1.0, 0.0], [0.0, 1.0]]), "float array pads"),
    (np.array([[True, False], [False, True]]), "bool array pads"),
    (((2**40, 0), (0, 0)), "((2**40, 0), (0, 0))"),
    (((2**40, 2**40), (2**40, 2**40)), "all 2**40"),
    (((2**62, 2**62), (0, 0)), "((2**62, 2**62), (0, 0))"),
    (((-(2**40), 2**40), (0, 0)), "((-2**40, 2**40), (0, 0))"),
    (((2**40, -(2**40)), (0, 0)), "((2**40, -2**40), (0, 0))"),
    (((10**30, 0), (0, 0)), "((10**30, 0), (0, 0))"),
    (((10**5000, -(10**5000)), (0, 0)), "((10**5000, -10**5000), (0, 0))"),
    (np.zeros((2, 2, 2), int), "3-D array pads"),
    (b"SAME", "b'SAME'"),
    ((1, 1), "(1, 1)"),
    (((1, 1), (1, 1), (1, 1)), "three pairs"),
    (((None, 0), (0, 0)), "((None, 0), (0, 0))"),
    ({"lo": 1}, "a dict"),
]

KERNEL_SIZES: list[tuple[Any, str]] = [
    (3, "3"),
    ((3, 2), "(3, 2)"),
    ([2, 3], "[2, 3]"),
    (np.array([3, 3]), "array([3, 3])"),
    (np.int64(2), "np.int64(2)"),
    (1, "1"),
    (5, "5"),
    (3.0, "3.0"),
    (True, "True"),
    ("3", "'3'"),
    (None, "None"),
    (0, "0"),
    ((3,), "(3,)"),
    ((3, 3, 3), "(3, 3, 3)"),
    (2**40, "2**40"),
    ((2**40, 1), "(2**40, 1)"),
    (10**5000, "10**5000"),
    (np.array([3.0, 3.0]), "array([3., 3.])"),
    ((3, -1), "(3, -1)"),
]

SCALAR_VALUES: list[tuple[Any, str]] = [
    (np.float32(0.3), "np.float32(0.3)"),
    (np.array(0.5), "array(0.5)"),
    (np.int64(2), "np.int64(2)"),
    (0, "0"),
    (1e-50, "1e-50"),
    (-1e-50, "-1e-50"),
    ("1", "'1'"),
    (None, "None"),
    (True, "True"),
    ([1.0], "[1.0]"),
    (1j, "1j"),
    (np.array([1.0]), "array([1.0])"),
    (np.complex64(1), "np.complex64(1)"),
    (10**400, "10**400"),
    (-(10**5000), "-10**5000"),
]


def _array_variants(arr: np.ndarray, role: str) -> list[tuple[Any, str]]:
    """Unusual and bad stand-ins for ``arr`` (float32 values in [-2, 2], role ``role``)."""
    big = (arr != 0).astype(np.int64)
    if big.size:
        big.flat[0] = 2**40
    ragged: Any = [[[[1.0]], [[1.0, 2.0]]]]
    out: list[tuple[Any, str]] = [
        (arr.astype(np.float32), "float32"),
        (arr.astype(np.float64), "float64"),
        (arr.astype(np.float16), "float16"),
        (arr.astype(">f4"), "big-endian float32"),
        (arr.astype(">f8"), "big-endian float64"),
        (big, "int64 holding 2**40"),
        (big.astype(np.uint64), "uint64 holding 2**40"),
        (big.astype(">i8"), "big-endian int64"),
        ((arr > 0).astype(np.int8), "int8"),
        ((arr > 0).astype(np.uint32), "uint32"),
        (arr > 0, "bool"),
        (np.asfortranarray(arr.astype(np.float32)), "Fortran order"),
        (arr.astype(np.float32)[::-1, :, ::-1], "reversed view"),
        (np.broadcast_to(arr.astype(np.float32)[:1], arr.shape), "broadcast view"),
        (arr.astype(np.float32).tolist(), "nested list"),
        (arr.astype(np.complex64), "complex64"),
        (arr.astype(object), "object"),
        (arr.astype(str), "str"),
        (arr.astype(np.float32).sum(axis=0), "rank 3"),
        (arr.astype(np.float32)[None], "rank 5"),
        (ragged, "ragged list"),
        (1.0, "a float"),
        (None, "None"),
        ("abc", "a string"),
        (np.zeros((*arr.shape[:-1], arr.shape[-1] + 1), np.float32), "one channel too many"),
        (arr.astype(np.longdouble), "longdouble"),
        (np.datetime64("2020-01-01") + arr.astype(np.int64), "datetime64"),
    ]
    if role in ("kernel", "x", "pre_spike", "pre_trace"):
        out.append((np.zeros((arr.shape[0] + 1, *arr.shape[1:]), np.float32), "one more row"))
    return out


def _base(op: str, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A valid float32 call of ``op``: N=2, 3x4 map, 2->3 channels, 3x2 kernel, stride (2, 1), SAME."""
    x = rng.uniform(-2, 2, (2, 3, 4, 2)).astype(np.float32)
    k = rng.uniform(-1, 1, (3, 2, 2, 3)).astype(np.float32)
    y = rng.uniform(-2, 2, (2, 6, 4, 3)).astype(np.float32)
    params: dict[str, Any] = dict(stride=(2, 1), padding="SAME")
    arrays = {
        "deconv2d": dict(x=x, kernel=k),
        "deconv2d_dk": dict(x=x, d_out=y),
        "deconv2d_dx": dict(kernel=k, d_out=y),
        "stdp_update": dict(kernel=k, pre_spike=x > 0, pre_trace=np.abs(x), post_spike=y > 1, post_trace=np.abs(y)),
        "stdp_step": dict(
            kernel=k, x=x > 0, pre_spike=x > 0, pre_trace=np.abs(x), post_spike=y > 1, post_trace=np.abs(y)
        ),
    }[op]
    if op == "deconv2d_dk":
        params["kernel_size"] = (3, 2)
    if op.startswith("stdp"):
        params.update(STDP)
    return arrays, params


@dataclass
class Case:
    op: str
    label: str
    arrays: dict[str, Any]
    params: dict[str, Any]
    warm: bool = field(default=True)  # run the valid base call first (so a stale memo would show)


def catalogue(seed: int = 0, exclude: str | None = None) -> list[Case]:
    """Every hostile parameter value and array stand-in, on every operator it applies to (less the
    cases whose ``"op label"`` matches the regular expression ``exclude``)."""
    rng = np.random.default_rng(seed)
    cases: list[Case] = []
    for op in OPS:
        arrays, params = _base(op, rng)
        cases.append(Case(op, "base call", arrays, params, warm=False))
        for value, label in STRIDES:
            cases.append(Case(op, f"stride={label}", arrays, {**params, "stride": value}))
        for value, label in PADDINGS:
            cases.append(Case(op, f"padding={label}", arrays, {**params, "padding": value}))
        if op == "deconv2d_dk":
            for value, label in KERNEL_SIZES:
                cases.append(Case(op, f"kernel_size={label}", arrays, {**params, "kernel_size": value}))
        if op == "deconv2d_dx":
            n, ho, wo, _ = arrays["d_out"].shape
            good = (n, 3, 4, 2)
            shapes = [
                (None, "None"),
                (good, "(N, H, W, Ci)"),
                ((3, 4), "(H, W)"),
                (np.array(good), "array (N, H, W, Ci)"),
                (list(good), "list"),
                ((n, 4, 4, 2), "wrong H"),
                (np.array((n, 4, 4, 2)), "array, wrong H"),
                ("54", "'54'"),
                (5, "5"),
                ("abcd", "'abcd'"),
                ((1, None, 4, 1), "(1, None, 4, 1)"),
                ((n, 3.0, 4, 2), "a float"),
                ((1, 5.9, 4.2, 1), "(1, 5.9, 4.2, 1)"),
                (np.array(good, float), "float array"),
                ((True, 3, 4, 2), "a bool"),
                ((3, 4, 2), "three values"),
                ((n, 2**40, 4, 2), "2**40"),
            ]
            for value, label in shapes:
                cases.append(Case(op, f"input_shape={label}", arrays, {**params, "input_shape": value}))
        if op.startswith("stdp"):
            for name in STDP:
                for value, label in SCALAR_VALUES:
                    cases.append(Case(op, f"{name}={label}", arrays, {**params, name: value}))
        for role in OP_ARRAYS[op]:
            for value, label in _array_variants(np.asarray(arrays[role], np.float32), role):
                cases.append(Case(op, f"{role}: {label}", {**arrays, role: value}, params))
    if exclude:
        cases = [c for c in cases if not re.search(exclude, f"{c.op} {c.label}")]
    return cases


# ------------------------------------------------------------------------------------- runner


def _run_child(backend: str, start: int, exclude: str | None) -> None:
    """Child process: judge cases from ``start`` on, one JSON line each (flushed, so a crash loses none)."""
    import warnings

    import convstdp

    warnings.simplefilter("ignore")
    be = convstdp.get_backend(backend)
    cases = catalogue(exclude=exclude)
    for i in range(start, len(cases)):
        case = cases[i]
        print(json.dumps({"i": i, "started": True}), flush=True)
        want = oracle(case.op, case.arrays, case.params)
        if case.warm:  # a valid call first: a memo keyed too loosely would answer the next one
            base_arrays, base_params = _base(case.op, np.random.default_rng(1))
            call(be, case.op, base_arrays, base_params)
        try:
            with within(120):
                outcome: Any = call(be, case.op, case.arrays, case.params)
        except Exception as err:  # judged below: every exception is an outcome here
            outcome = err
        category, detail = judge(backend, outcome, want)
        print(json.dumps({"i": i, "category": category, "detail": detail[:300]}), flush=True)


def census(backend: str, exclude: str | None = None) -> tuple[int, dict[str, int], list[str]]:
    """Run the catalogue through ``backend`` in child processes; ``(tried, counts, problems)``."""
    labels = [f"{c.op} {c.label}" for c in catalogue(exclude=exclude)]
    total = len(labels)
    counts = dict.fromkeys(CATEGORIES, 0)
    problems: list[str] = []
    start = 0
    while start < total:
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                backend,
                "--start",
                str(start),
                *(["--exclude", exclude] if exclude else []),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        done = start
        for line in proc.stdout.splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "category" in rec:
                counts[rec["category"]] += 1
                if rec["category"] != "correct" and rec["category"] != "clear error":
                    problems.append(f"{labels[rec['i']]}: {rec['category']}: {rec['detail']}")
                done = rec["i"] + 1
        if done < total:  # the child died during case `done`
            counts["crash"] += 1
            problems.append(f"{labels[done]}: crash: exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
            done += 1
        start = done
    return total, counts, problems


def overhead() -> None:
    """Print the validating wrapper's cost per call: a ``Backend`` around an implementation that
    does nothing, on tiny float32 inputs (best of 25 rounds of 5000 calls)."""
    import timeit

    from convstdp.backends import Backend

    class Null:
        def deconv2d(self, *a: Any, **k: Any) -> None:
            return None

        deconv2d_dk = deconv2d_dx = deconv2d

        def stdp_update(self, *a: Any, **k: Any) -> tuple[None, None]:
            return None, None

    be = Backend("null", Null())
    x, k = np.zeros((1, 4, 4, 2), np.float32), np.zeros((3, 3, 2, 2), np.float32)
    y = np.zeros((1, 8, 8, 2), np.float32)
    cases: dict[str, Any] = {
        "deconv2d": lambda: be.deconv2d(x, k, stride=2, padding="SAME"),
        "deconv2d (explicit pads)": lambda: be.deconv2d(x, k, stride=(2, 2), padding=((1, 1), (2, 0))),
        "deconv2d_dk": lambda: be.deconv2d_dk(x, y, kernel_size=3, stride=2),
        "deconv2d_dx": lambda: be.deconv2d_dx(k, y, stride=2),
        "stdp_update": lambda: be.stdp_update(k, x, x, y, y, stride=2, A_plus=1.0, A_minus=0.5, eta=0.1),
        "stdp_step": lambda: be.stdp_step(k, x, x, x, y, y, stride=2, A_plus=1.0, A_minus=0.5, eta=0.1),
    }
    for name, fn in cases.items():
        fn()
        t = min(timeit.repeat(fn, number=5000, repeat=25)) / 5000
        print(f"{name:26s} {t * 1e6:6.2f} us per call")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", help="backend to census (default: reference, numba, jax)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--verbose", action="store_true", help="list every case that is not correct or clear")
    parser.add_argument("--exclude", help="skip the cases whose 'op label' matches this regular expression")
    parser.add_argument("--overhead", action="store_true", help="time the validating wrapper instead")
    args = parser.parse_args(argv)
    if args.child:
        _run_child(args.child, args.start, args.exclude)
        return 0
    if args.overhead:
        overhead()
        return 0
    import convstdp

    names = args.backend or ["reference", "numba", "jax"]
    status = convstdp.available_backends()
    print(f"{'backend':<12} {'tried':>6} " + " ".join(f"{c:>12}" for c in CATEGORIES))
    bad = 0
    for name in names:
        if status.get(name, "ok") != "ok":
            print(f"{name:<12} skipped: {status[name]}")
            continue
        t0 = time.time()
        tried, counts, problems = census(name, args.exclude)
        bad += len(problems)
        row = " ".join(f"{counts[c]:>12}" for c in CATEGORIES)
        print(f"{name:<12} {tried:>6} {row}   ({time.time() - t0:.0f} s)", flush=True)
        for p in problems if args.verbose else problems[:10]:
            print(f"    {p}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
