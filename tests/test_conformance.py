"""The conformance harness itself: cases, tolerance model, checks, self-test, random cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from convstdp import get_backend
from convstdp.backends import Backend
from convstdp.conformance import broken, cases, checks, harness, tolerance
from convstdp.conformance.cases import Case, case_from_text, parse_case

# ----------------------------------------------------------------------------- cases


def test_case_names_round_trip_and_are_unique() -> None:
    full = cases.full_grid()
    assert 1000 <= len(full) <= 3000
    assert len({c.name for c in full}) == len(full)
    for c in full[::37]:
        assert parse_case(c.name) == c
        assert case_from_text(c.to_json()) == c
    c = parse_case("s3x2-neg1.m1.0.2-k3x2-m5x7-c3to4-n2-f32-clip-bool")
    assert (c.stride, c.padding, c.kernel, c.in_size, c.ci, c.co, c.batch) == (
        (3, 2),
        ((1, -1), (0, 2)),
        (3, 2),
        (5, 7),
        3,
        4,
        2,
    )
    assert c.pad_kind == "negative" and c.params["w_bound"] == 1.0


@pytest.mark.parametrize(
    "bad",
    [
        "s0-same-k1x1-m1x1-c1to1-n1-f64-basic-bool",
        "nonsense",
        "s1-same-k3x3-m1x1-c1to1-n1-f64-nosuchset-bool",
        "s1-pad0.0.0.0-k5x5-m1x1-c1to1-n1-f64-basic-bool",
    ],
)
def test_bad_case_text_is_a_value_error(bad: str) -> None:
    with pytest.raises(ValueError):
        case_from_text(bad)


def test_quick_grid_covers_every_axis_value_and_stays_small() -> None:
    quick, full = cases.quick_grid(), cases.full_grid()
    assert 30 <= len(quick) <= 60
    cov, full_cov = cases.coverage(quick), cases.coverage(full)
    for axis, values in full_cov.items():
        assert set(values) <= set(cov[axis]), axis
    assert set(cov["stride"]) == {"1x1", "2x2", "3x3", "1x2", "3x2"}
    assert set(cov["padding"]) == {"same", "valid", "explicit", "negative"}
    assert {"f32", "f64", "mix"} <= set(cov["dtype"]) and set(cov["spikes"]) == {"bool", "float"}
    assert set(cov["stdp"]) == set(cases.STDP_PARAMS)
    # kernels larger than the map and smaller than the stride, maps from 1x1 to 32x32
    assert any(c.kernel[0] > c.in_size[0] for c in quick)
    assert any(c.kernel[0] < c.stride[0] for c in quick)
    assert {"1x1", "32x32"} <= set(cov["map"])


def test_inputs_are_seeded_non_symmetric_and_typed() -> None:
    c = parse_case("s2-neg2.0.m1.1-k3x2-m9x6-c4to2-n3-mix-clip-bool")
    a, b = cases.make_inputs(c, 0), cases.make_inputs(c, 0)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["x"], cases.make_inputs(c, 1)["x"])
    k = a["kernel"]
    assert not np.allclose(k, k[::-1, ::-1]) and not np.allclose(k, k[..., ::-1, :])
    assert a["x"].dtype == np.float32 and k.dtype == np.float64 and a["pre_spike"].dtype == bool
    assert (a["pre_trace"] >= 0).all() and (a["post_trace"] >= 0).all()
    assert 0.1 < a["post_spike"].mean() < 0.5


# ----------------------------------------------------------------------------- tolerance


def test_policy_table_and_declared_precision() -> None:
    p32 = tolerance.policy_for(np.float32)
    assert p32.u == 2.0**-24 and p32.c == 4.0 and p32.tiny == np.finfo(np.float32).tiny
    assert tolerance.policy_for(np.float64).u == 2.0**-53
    assert tolerance.policy_for(np.float32, "bf16").u == 2.0**-8
    assert tolerance.policy_for(np.float32, "tf32").u == 2.0**-11
    assert tolerance.policy_for(np.float64, "float32").u == 2.0**-24  # e.g. float32 inside
    assert tolerance.policy_for(np.float64, "float32").tiny == np.finfo(np.float64).tiny
    assert tolerance.policy_for(np.float32, "float64").u == 2.0**-24  # the coarsest wins
    with pytest.raises(ValueError, match="precision 'fp8'"):
        tolerance.policy_for(np.float32, "fp8")


def test_bound_follows_the_partial_sums_by_hand() -> None:
    # stride 1, SAME, k=2: pads (1, 0); y[p] sums x[h]K[a] over p = h + 1 - a.
    c = parse_case("s1-same-k2x2-m2x2-c1to1-n1-f64-basic-bool")
    inputs = cases.make_inputs(c, 0)
    x = np.array([[1.0, -2.0], [3.0, -4.0]]).reshape(1, 2, 2, 1)
    k = np.array([[0.5, -1.5], [2.5, 0.25]]).reshape(2, 2, 1, 1)
    inputs.update(x=x, kernel=k)
    e = checks.expect(c, inputs).ops["deconv2d"]["y"]
    # y[0,0]: only h=w=0 with a=b=1 -> 1 term; y[1,1]: h,a in {(0,0),(1,1)} per axis -> 4 terms.
    assert e.value[0, 0, 0, 0] == pytest.approx(1.0 * 0.25)
    terms = [x[0, h, w, 0] * k[a, b, 0, 0] for h, a in ((0, 0), (1, 1)) for w, b in ((0, 0), (1, 1))]
    assert e.value[0, 1, 1, 0] == pytest.approx(sum(terms))
    s, r = sum(terms), math.sqrt(sum(t * t for t in terms))
    assert e.scale[0, 0, 0, 0] == pytest.approx(math.sqrt(0.25**2 / 3 + 2 * 0.25**2) + 2 * 0.25)
    assert e.scale[0, 1, 1, 0] == pytest.approx(math.sqrt(4 * (s * s / 3 + 2 * r * r)) + r + abs(s))
    p = tolerance.policy_for(np.float32)
    assert tolerance.bound(e.scale, p)[0, 1, 1, 0] == pytest.approx(4 * 2.0**-24 * e.scale[0, 1, 1, 0] + p.tiny)


def test_compare_reports_worst_element_and_counts() -> None:
    exp = checks.Expected(np.array([1.0, 2.0, 3.0, 0.0]), np.array([1.0, 1.0, 1.0, 0.0]), np.dtype(np.float64))
    pol = tolerance.Policy("t", 0.01, 1.0, 1e-30, "")
    got = np.array([1.005, 2.02, 3.0, 0.0])  # bound 0.01: first within, second 2x over
    o = checks.compare("y", got, exp, pol)
    assert (o.mismatches, o.index, o.ratio) == (1, (1,), pytest.approx(2.0))
    assert o.error == pytest.approx(0.02) and o.bound == pytest.approx(0.01)
    o = checks.compare("y", np.array([1.0, 2.0, 3.0, 1e-20]), exp, pol)  # zero terms must give exactly zero
    assert o.mismatches == 1 and o.index == (3,)
    o = checks.compare("y", np.array([1.0, np.nan, 3.0, 0.0]), exp, pol)
    assert o.mismatches == 1 and o.ratio == math.inf


def test_correct_float32_arithmetic_passes_and_bf16_rounding_does_not() -> None:
    """The model is loose enough for float32 sums in any order, tight enough for bf16 inputs."""
    c = parse_case("s1-same-k5x5-m16x9-c3to2-n3-f32-basic-bool")
    inputs = cases.make_inputs(c, 0)
    e = checks.expect(c, inputs).ops["deconv2d"]["y"]
    pol = tolerance.policy_for(np.float32)
    g = c.geometry()
    x32, k32 = inputs["x"], inputs["kernel"]
    # float32 sequential accumulation over taps (the worst order for error growth)
    y = np.zeros(g.y_shape, np.float32)
    (lo_h, _), (lo_w, _) = g.pads
    for a in range(5):
        for b in range(5):
            for h in range(16):
                for w in range(9):
                    p, q = h + lo_h - a, w + lo_w - b
                    if 0 <= p < g.out_size[0] and 0 <= q < g.out_size[1]:
                        y[:, p, q, :] += x32[:, h, w, :] @ k32[a, b]
    ok = checks.compare("y", y, e, pol)
    assert ok.mismatches == 0 and ok.ratio < 0.5
    bad = broken.Bfloat16Inputs().deconv2d(x32, k32, stride=g.stride, padding=g.pads)
    assert checks.compare("y", bad, e, pol).ratio > 10


# ----------------------------------------------------------------------------- harness


def test_reference_passes_the_quick_grid_with_margin() -> None:
    (br,) = harness.run([get_backend("reference")], cases.quick_grid())
    statuses = {r.status for r in br.results}
    assert statuses == {"pass"}
    assert {r.operator for r in br.results} == set(checks.OPERATOR_NAMES)
    assert max(r.ratio for r in br.results) < 0.5


class _Raises:
    """An implementation whose dK raises and whose dX raises ``NotImplementedError``."""

    def __init__(self) -> None:
        self._ref = broken.ReferenceWrapper()
        self.deconv2d = self._ref.deconv2d
        self.stdp_update = self._ref.stdp_update

    def deconv2d_dk(self, *a, **k):
        raise RuntimeError("boom")

    def deconv2d_dx(self, *a, **k):
        raise NotImplementedError("no rectangular kernels upstream")


class _DeclaresSquare(broken.ReferenceWrapper):
    """Declares square kernels as its subset; raises NotImplementedError for anything else."""

    def unsupported(self, g):
        return None if g.kernel_size[0] == g.kernel_size[1] else f"square kernels only, got {g.kernel_size}"

    def deconv2d_dx(self, kernel, d_out, **kw):
        if kernel.shape[0] != kernel.shape[1] or kernel.shape[2] == 3:  # also fails inside its subset (Ci=3)
            raise NotImplementedError("not today")
        return super().deconv2d_dx(kernel, d_out, **kw)


def test_errors_are_recorded_per_operator_and_the_run_goes_on() -> None:
    be = Backend("raises", _Raises())
    qs = cases.quick_grid()[:3]
    (br,) = harness.run([be], qs)
    by = {(r.case, r.operator): r for r in br.results}
    for c in qs:
        assert by[(c.name, "deconv2d")].status == "pass"
        r = by[(c.name, "deconv2d_dk")]
        assert r.status == "error" and "RuntimeError: boom" in r.error and r.check() == "raised"
        r = by[(c.name, "deconv2d_dx")]  # no declared subset: NotImplementedError is a failure, not "unsupported"
        assert r.status == "error" and "declares no supported subset" in r.error
        assert by[(c.name, "adjoint")].status == "error"
        assert by[(c.name, "stdp_update")].status == "pass"  # its own composition, not the raising dK
        assert by[(c.name, "stdp_step")].status == "error"  # composed through the raising dX
    assert "raises deconv2d_dk [" in br.failed[0].message()


def test_unsupported_only_outside_the_declared_subset() -> None:
    square = parse_case("s2-same-k3x3-m5x5-c2to3-n2-f32-all-bool")
    rect = parse_case("s3x2-valid-k3x2-m5x7-c3to4-n2-f32-all-bool")
    square_ci3 = parse_case("s3-valid-k5x5-m12x12-c3to2-n3-f32-clip-float")
    (br,) = harness.run([Backend("square", _DeclaresSquare())], [square, rect, square_ci3])
    by = {(r.case, r.operator): r for r in br.results}
    assert all(by[(rect.name, op)].status == "unsupported" for op in checks.OPERATOR_NAMES)
    assert "square kernels only" in by[(rect.name, "deconv2d")].error
    assert all(by[(square.name, op)].status == "pass" for op in checks.OPERATOR_NAMES)
    r = by[(square_ci3.name, "deconv2d_dx")]
    assert r.status == "error" and "inside the subset it declares" in r.error
    assert br.checked == 2 and not br.grid_problems(require_paths=False)


def test_a_backend_that_checks_no_case_fails() -> None:
    class Nothing(_DeclaresSquare):
        def unsupported(self, g):
            return "supports nothing"

    (br,) = harness.run([Backend("nothing", Nothing())], cases.quick_grid()[:4])
    assert not br.failed and br.checked == 0
    assert any("checked no case" in p for p in br.grid_problems(require_paths=False))


def test_failure_message_names_case_backend_operator_worst_element() -> None:
    c = parse_case("s3x2-valid-k3x2-m5x7-c3to4-n2-f32-all-bool")
    (br,) = harness.run([broken.broken_backend("one-element")], [c], operators=["deconv2d"])
    (r,) = br.results
    assert r.status == "fail" and r.check() == "values"
    o = r.outputs[0]
    assert o.mismatches == 1 and o.size == 2 * 15 * 14 * 4 and len(o.index) == 4
    assert o.error == pytest.approx(abs(o.expected) * 1e-3, rel=1e-3)
    msg = r.message()
    assert msg.startswith(
        "broken:one-element deconv2d [s3x2-valid-k3x2-m5x7-c3to4-n2-f32-all-bool]: fail: "
        "y: mismatched elements: 1 / 1680 (0.1%)"
    )
    assert o.abs_index == o.index and o.abs_max == pytest.approx(o.error)
    assert f"greatest absolute difference: {o.abs_max:.6g} at {o.index}" in msg
    assert "greatest relative difference: 0.001" in msg
    assert f"worst against its bound at {o.index}" in msg and "> bound" in msg


def test_self_test_catches_every_broken_backend_and_control_passes() -> None:
    rows, control = broken.self_test(cases.quick_grid())
    missed = [r.bug for r in rows if not r.caught]
    assert not missed, missed
    assert len(rows) == len(broken.BUGS) >= 22 and not control.failed
    checks_by_bug = {r.bug: r.check for r in rows}
    assert checks_by_bug["float64-out"] == "dtype" and checks_by_bug["inputs-modified"] == "inputs modified"
    assert checks_by_bug["kernel-saturates"] == "adjoint"  # the adjoint's own inputs catch what values cannot
    assert checks_by_bug["declares-nothing"] == "grid" and checks_by_bug["not-implemented"] == "raised"
    first = {r.bug: r.case for r in rows}
    for bug in ("large-batch", "wide-channels", "large-path"):  # wrong only at scale: the large tier
        assert parse_case(first[bug]).tier == "large", (bug, first[bug])


@pytest.mark.parametrize("bug", ["bf16-inputs", "one-element", "lost-update", "kernel-flipped"])
def test_subtle_bugs_are_caught_in_float32_too(bug: str) -> None:
    f32 = [c for c in cases.quick_grid() if c.dtype == "f32" and c.batch > 0]
    (br,) = harness.run([broken.broken_backend(bug)], f32, operators=["deconv2d"])
    caught = {r.case for r in br.results if r.failed}
    assert len(caught) >= 0.75 * len(f32), (bug, len(caught), len(f32))


def test_broken_factories_resolve_by_spec() -> None:
    be = get_backend("convstdp.conformance.broken:kernel_flipped")
    assert isinstance(be.impl, broken.KernelFlipped)


def test_bf16_rounding_helper() -> None:
    a = np.array([1.0, 1.0 + 2**-9, 1.0 + 3 * 2**-9, 3.14159265], np.float64)
    r = broken._round_bf16(a)
    assert r.dtype == np.float64
    assert list(r[:3]) == [1.0, 1.0, 1.0 + 2**-7]  # ties to even, then up
    assert abs(r[3] - a[3]) <= 2**-8 * a[3]


# ----------------------------------------------------------------------------- random cases


def test_random_cases_pass_on_reference() -> None:
    pytest.importorskip("hypothesis")
    from convstdp.conformance.randomized import run_random

    br, minimal = run_random(get_backend("reference"), examples=15, seed=1)
    assert minimal is None and br.results and not br.failed
    assert br.info["random_examples"] >= 10


def test_random_failure_is_shrunk_with_a_repro_command() -> None:
    pytest.importorskip("hypothesis")
    from convstdp.conformance.randomized import run_random

    be = get_backend("convstdp.conformance.broken:dx_channels")
    br, minimal = run_random(be, examples=30, seed=2, operators=["deconv2d_dx"])
    assert minimal is not None
    assert minimal.ci == 2 and minimal.kernel == (1, 1) and minimal.in_size == (1, 1)  # shrunk
    assert br.info["repro"] == (
        f"convstdp conformance --backend convstdp.conformance.broken:dx_channels --case '{minimal.name}' --seed 2"
    )
    assert any(r.failed and r.case == minimal.name for r in br.results)


def test_case_objects_are_hashable_for_caching() -> None:
    c = Case((1, 1), "SAME", (1, 1), (1, 1), 1, 1, 1)
    assert hash(c) == hash(parse_case(c.name)) and c.name == "s1-same-k1x1-m1x1-c1to1-n1-f64-basic-bool"


@pytest.mark.parametrize("name", ["numba", "jax"])
def test_fast_backends_agree_on_a_few_quick_cases(name: str) -> None:
    """The real backends through the harness (the full quick grid runs in the CLI)."""
    import convstdp

    try:
        be = get_backend(name)
    except convstdp.BackendUnavailable as err:
        pytest.skip(str(err))
    picks = ["s3x2-valid-k3x2-m5x7-c3to4-n2-f32-all-bool", "s1x2-pad1.0.2.1-k2x5-m6x4-c2to3-n3-f64-target-float"]
    (br,) = harness.run([be], [parse_case(p) for p in picks])
    assert not br.failed, [r.message() for r in br.failed]
    assert max(r.ratio for r in br.results) < 1.0
