"""Trajectory conformance (convstdp/conformance/trajectory.py): W' feeding the next step, the
propagated bound, the planted bugs only a trajectory shows, and ``--grid trajectory``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convstdp import get_backend
from convstdp.backends import Backend
from convstdp.cli import main
from convstdp.conformance import broken, harness
from convstdp.conformance import tolerance as tol
from convstdp.conformance import trajectory as tj
from convstdp.conformance.cases import make_inputs, quick_grid
from convstdp.conformance.checks import check_case
from convstdp.conformance.expectation import expect
from convstdp.reference import ops as ref

SMALL = "s2-same-k3x3-m6x6-c2to3-n2-f32-sim-bool-d0.1-sim"  # quick to run; the sim set: eta, decay, bound > 0
F16, DECAY2 = broken.TRAJECTORY_BUGS


def _max_ratios(tr: tj.Trajectory) -> np.ndarray:
    """Per step, the worst error/bound over the four outputs."""
    return np.max([tr.ratios[o] for o in tj.OUTPUTS], axis=0)


def test_default_case_exercises_decay_and_clipping() -> None:
    case = tj.usable_case(tj.DEFAULT_CASE)
    p = case.params
    assert p["eta"] > 0 and p["w_decay"] > 0 and p["w_bound"] > 0 and case.dtype == "f32"
    steps = list(tj.simulation_inputs(case, 3, seed=0))
    pre = [s["pre_spike"].astype(np.float32) for s in steps]
    # traces are the decayed sums of the spikes, x is the presynaptic spike array itself
    want = (pre[0] * np.float32(tj.TRACE_DECAY) + pre[1]) * np.float32(tj.TRACE_DECAY) + pre[2]
    np.testing.assert_array_equal(steps[2]["pre_trace"], want)
    assert steps[1]["x"] is steps[1]["pre_spike"]
    assert 0.05 < float(np.mean(pre)) < 0.15  # Bernoulli(0.1)
    w0 = tj.initial_weights(case)
    assert w0.dtype == np.float32 and ((w0 < 0.01) | (w0 > 0.99)).any()  # step 1 clips


def test_bound_is_the_single_call_bound_plus_the_carried_error() -> None:
    case = tj.usable_case(SMALL)
    inp = next(tj.simulation_inputs(case, 1))
    w = tj.initial_weights(case)
    pol = tol.policy_for(np.float32)
    step = expect(case, {**inp, "kernel": w}).ops["stdp_step"]
    both = tol.bound(step["W'"].scale, pol) + tol.bound(step["W'"].scale, tol.POLICY["float64"])
    b0 = tj._bounds(case, inp, w, np.zeros(w.shape), pol)
    np.testing.assert_allclose(b0["W'"], both, rtol=1e-12)
    e = np.full(w.shape, 1e-3)
    b1 = tj._bounds(case, inp, w, e, pol)
    np.testing.assert_allclose(b1["W'"], (1 - case.params["w_decay"]) * e + both, rtol=1e-12)
    # dX carries (L·E) through dX(., |post|); dW does not depend on W
    carried = ref.deconv2d_dx((1 - case.params["w_decay"]) * e, inp["post_spike"], stride=case.stride, padding="SAME")
    np.testing.assert_allclose(b1["dX"] - b0["dX"], carried, rtol=1e-9, atol=1e-15)
    assert carried.max() > 0 and np.array_equal(b1["dW"], b0["dW"])


def test_reference_against_reference_passes_with_falling_ratio() -> None:
    tr = tj.run_trajectory(get_backend("reference"), tj.usable_case(tj.DEFAULT_CASE), 60, seed=0)
    assert tr.ok and tr.steps_run == 60 and tr.first_failure is None
    r = _max_ratios(tr)
    assert 0 < r.max() < 0.25  # a float32 rounding of the float64 reference: far inside the bound
    assert tr.ratios["W'"][-1] < tr.ratios["W'"][0] / 3  # the bound adds up, the roundings do not
    assert max(tr.clipped) > 0  # clipping is exercised


@pytest.mark.parametrize("name", ["numba", "jax"])
def test_fast_backends_pass(name: str) -> None:
    pytest.importorskip(name)
    tr = tj.run_trajectory(get_backend(name), tj.usable_case(SMALL), 40, seed=1)
    assert tr.ok, tr.error or f"first failure at step {tr.first_failure}"
    assert _max_ratios(tr).max() < 0.5


def test_float16_weights_caught_at_step_2() -> None:
    tr = tj.run_trajectory(Backend("f16", F16.impl()), tj.usable_case(SMALL), 5)
    r = _max_ratios(tr)
    assert tr.first_failure == 2 == F16.impl.first_wrong_step and not tr.ok
    assert r[0] < 0.25 and r[1] > 10  # exact on step 1, then the float16 copy shows
    assert tr.ratios["dW"][1] <= 1 and tr.ratios["W'"][1] > 10  # dW does not read W; W' does


def test_double_decay_caught_at_step_100() -> None:
    tr = tj.run_trajectory(Backend("decay2", DECAY2.impl()), tj.usable_case(SMALL), 102)
    r = _max_ratios(tr)
    assert tr.first_failure == 100 == DECAY2.impl.first_wrong_step
    assert r[:99].max() < 0.25 and tr.ratios["W'"][99] > 3


@pytest.mark.parametrize("bug", broken.TRAJECTORY_BUGS, ids=lambda b: b.id)
def test_trajectory_bugs_pass_single_calls(bug: broken.Bug) -> None:
    cases = [tj.usable_case(SMALL), *quick_grid()[:6]]
    runs = harness.run([Backend(f"broken:{bug.id}", bug.impl())], cases, seed=0)
    assert not runs[0].failed and runs[0].checked == len(cases)
    case = tj.usable_case(SMALL)
    inputs = make_inputs(case, 0)
    assert all(r.ok for r in check_case(Backend("b", bug.impl()), case, inputs, expect(case, inputs)))


def test_dtype_change_fails_at_step_1() -> None:
    tr = tj.run_trajectory(Backend("f64out", broken.Float64Out()), tj.usable_case(SMALL), 3)
    assert not tr.ok and tr.error.startswith("step 1: y is") and "float64" in tr.error and tr.steps_run == 0


# ----------------------------------------------------------------------------- command line


def test_cli_pass_writes_json_markdown_png(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    js, md, png = tmp_path / "t.json", tmp_path / "t.md", tmp_path / "t.png"
    argv = ["conformance", "--grid", "trajectory", "--case", SMALL, "--steps", "8", "--backend", "reference", "-q"]
    assert main([*argv, "--json", str(js), "--report", str(md), "--plot", str(png)]) == 0
    doc = json.loads(js.read_text())
    assert doc["schema"] == "convstdp.conformance.trajectory" and doc["ok"] and doc["steps"] == 8
    (run,) = doc["runs"]
    assert run["backend"] == "reference" and run["steps_run"] == 8 and len(run["ratios"]["dX"]) == 8
    assert 0 < run["worst_ratio"] < 0.25
    text = md.read_text()
    assert "**Verdict: PASS**" in text and "| reference" in text and "![error/bound per step](t.png)" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "OK: every trajectory stays within its bound" in capsys.readouterr().out


def test_cli_failure_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    be = "convstdp.conformance.broken:ResidentFloat16Weights"
    assert main(["conformance", "--grid", "trajectory", "--case", SMALL, "--steps", "4", "--backend", be, "-q"]) == 1
    assert "step 2" in capsys.readouterr().out


def test_cli_self_test_catches_both_bugs(tmp_path) -> None:
    js = tmp_path / "st.json"
    argv = ["conformance", "--grid", "trajectory", "--case", SMALL, "--steps", "5", "--self-test", "-q"]
    assert main([*argv, "--backend", "reference", "--json", str(js)]) == 0
    rows = {r["bug"]: r for r in json.loads(js.read_text())["self_test"]["rows"]}
    assert rows["none (control)"]["trajectory_ok"] and rows["none (control)"]["single_call_ok"]
    for bug in (F16, DECAY2):
        r = rows[bug.id]
        assert r["ok"] and r["single_call_ok"] and not r["trajectory_ok"]
        assert r["first_failure"] == r["expected_step"] == bug.impl.first_wrong_step and r["ratio"] > 3


@pytest.mark.parametrize(
    "argv",
    [
        ["--grid", "trajectory", "--backend", "no-such-backend"],
        ["--grid", "trajectory", "--case", "not-a-case"],
        ["--grid", "trajectory", "--case", SMALL, "--case", tj.DEFAULT_CASE],
        ["--grid", "trajectory", "--isolate"],
        ["--grid", "trajectory", "--steps", "0"],
        ["--grid", "quick", "--steps", "5"],
        ["--plot", "x.png"],
    ],
)
def test_cli_usage_errors_exit_2(argv: list[str]) -> None:
    try:
        rc = main(["conformance", "-q", *argv])
    except SystemExit as e:  # argparse's own usage errors
        rc = e.code
    assert rc == 2


def test_cli_list_prints_the_case(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conformance", "--grid", "trajectory", "--list"]) == 0
    assert capsys.readouterr().out.strip() == tj.DEFAULT_CASE
