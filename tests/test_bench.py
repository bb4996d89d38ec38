"""``convstdp bench``: workloads, peers, timing and the written report (never timings themselves)."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from convstdp import backends as _backends
from convstdp import cli, get_backend
from convstdp.bench import timing, verify, workloads
from convstdp.bench.timing import Measurement, Runner, Settings
from convstdp.bench.workloads import SPEC_WORKLOADS, Workload
from convstdp.conformance.cases import SPEC_WORKLOADS as SPEC_CASES
from convstdp.conformance.cases import make_inputs, parse_case
from convstdp.conformance.operators import OPS
from convstdp.present import fmt_time

# ----------------------------------------------------------------------------- workloads


def test_spec_workload_flops() -> None:
    by = {w.name: w for w in SPEC_WORKLOADS}
    assert by["online-decoder"].pass_flops == 2 * 1 * 14 * 14 * 16 * 1 * 5 * 5 == 156_800
    assert by["online-decoder"].flops == 4 * 156_800
    assert by["batch-mid"].flops == 4 * 2 * 32 * 28 * 28 * 8 * 16 * 25
    assert by["batch-large"].flops == 4 * 2 * 64 * 32 * 32 * 32 * 32 * 9
    assert by["gpu-large"].flops == 4 * 2 * 256 * 32 * 32 * 64 * 64 * 25
    ops = workloads.select(["stdp_update/batch-mid", "deconv2d_dx/batch-mid"])
    assert [w.flops for w in ops] == [2 * ops[0].pass_flops, ops[1].pass_flops]


def test_workloads_are_conformance_cases() -> None:
    by = {w.name: w for w in SPEC_WORKLOADS}
    assert by["online-decoder"].case.geometry().y_shape == (1, 28, 28, 1)  # SAME: n*s
    assert by["batch-mid"].case.geometry().y_shape == (32, 28, 28, 16)
    assert by["batch-large"].case.geometry().y_shape == (64, 65, 65, 32)  # VALID: n*s + max(k - s, 0)
    for w in SPEC_WORKLOADS:  # the very cases the workloads grid checks
        assert w.case.name == SPEC_CASES[w.name] and w.op == "stdp_step"
        assert (w.case.inputs, w.case.dtype, w.case.stdp, w.density) == ("sim", "f32", "sim", 0.1)


def test_select_default_named_and_globs() -> None:
    default = workloads.select()
    names = [w.name for w in default]
    assert names[:3] == ["online-decoder", "batch-mid", "batch-large"] and "gpu-large" not in names
    assert {w.op for w in default} == {"stdp_step"}
    dens = sorted(w.density for w in default if w.name.startswith("batch-mid"))
    assert dens == list(workloads.DENSITIES)  # the SPEC point (0.1) and the sweep around it
    assert "gpu-large" in [w.name for w in workloads.select(gpu=True)]
    assert [w.name for w in workloads.select(sweeps=False)] == names[:3]
    assert [w.name for w in workloads.select(["gpu-large"])] == ["gpu-large"]
    steps = workloads.select(["step/*"])
    assert len(steps) == 1 + 4 * 3  # the base point is shared by the 4 scaling sweeps
    base = workloads.select(["step/base"])[0]
    assert {d for d, _ in base.sweeps} == {"batch", "map", "channels", "kernel"}
    assert {w.op for w in workloads.select(["*/batch-mid"])} == set(OPS) - {"stdp_step"}
    with pytest.raises(ValueError, match="no workload matches 'nope'"):
        workloads.select(["nope"])


def test_timed_inputs_are_what_a_simulation_feeds() -> None:
    w = workloads.select(["batch-mid/density=0.3"])[0]
    a, b = make_inputs(w.case, 3), make_inputs(w.case, 3)
    g = w.case.geometry()
    for k in w.operator.args:
        assert a[k].dtype == np.float32 and np.array_equal(a[k], b[k])
    assert a["x"] is a["pre_spike"] and a["post_spike"].shape == g.y_shape
    assert set(np.unique(a["post_spike"])) <= {0.0, 1.0} and abs(a["post_spike"].mean() - 0.3) < 0.02
    assert (a["pre_trace"] > 0).mean() > 0.99 and (a["kernel"] > 0).all()  # dense traces
    assert not np.array_equal(make_inputs(w.case, 4)["x"], a["x"])


# ----------------------------------------------------------------------------- peers


def _torch_peer():
    pytest.importorskip("torch")
    return get_backend("torch")


CASES = [  # x shape, kernel shape, stride, padding: awkward on purpose
    ((2, 5, 7, 3), (3, 2, 3, 4), (2, 3), "SAME"),
    ((2, 6, 6, 3), (5, 5, 3, 2), 2, "VALID"),
    ((1, 4, 5, 2), (2, 3, 2, 3), (1, 2), ((3, -1), (4, 2))),
    ((2, 3, 3, 2), (4, 4, 2, 2), 3, ((5, 6), (0, -1))),
    ((1, 1, 1, 1), (3, 3, 1, 2), 1, "VALID"),
]


@pytest.mark.parametrize("xs,ks,stride,padding", CASES)
def test_torch_peer_agrees_with_reference(xs, ks, stride, padding) -> None:
    peer, ref = _torch_peer(), get_backend("reference")
    rng = np.random.default_rng(7)
    x, k = rng.standard_normal(xs), rng.standard_normal(ks)
    geo = dict(stride=stride, padding=padding)
    y = ref.deconv2d(x, k, **geo)
    d = rng.standard_normal(y.shape)
    np.testing.assert_allclose(peer.deconv2d(x, k, **geo), y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        peer.deconv2d_dk(x, d, kernel_size=ks[:2], **geo),
        ref.deconv2d_dk(x, d, kernel_size=ks[:2], **geo),
        rtol=1e-12,
        atol=1e-12,
    )
    np.testing.assert_allclose(peer.deconv2d_dx(k, d, **geo), ref.deconv2d_dx(k, d, **geo), rtol=1e-12, atol=1e-12)
    spikes = (d > 0.5).astype(np.float32)
    params = dict(A_plus=0.9, A_minus=0.6, eta=0.3, pretrace_target=0.1, w_decay=0.01, w_bound=1.5)
    got = peer.stdp_step(k, x, x > 0, np.abs(x), spikes, np.abs(d), **geo, **params)
    want = ref.stdp_step(k, x, x > 0, np.abs(x), spikes, np.abs(d), **geo, **params)
    for g, r in zip(got, want, strict=True):
        assert g.dtype == r.dtype == np.float64
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12)


def test_torch_peer_float32_and_autograd() -> None:
    """dK/dX from aten.convolution_backward equal torch.autograd.grad of the padded forward."""
    torch = pytest.importorskip("torch")
    peer = _torch_peer()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 4, 3)).astype(np.float32)
    k = rng.standard_normal((3, 2, 3, 2)).astype(np.float32)
    geo = dict(stride=(2, 1), padding=((2, 0), (-1, 1)))
    y = peer.deconv2d(x, k, **geo)
    assert y.dtype == np.float32
    d = rng.standard_normal(y.shape).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_()
    kt = torch.from_numpy(k).requires_grad_()
    impl = peer.impl
    w = kt.permute(2, 3, 0, 1).flip(2, 3)
    p, extra = impl._plan((3, 2), geo["padding"])
    yt = torch.nn.functional.pad(
        torch.nn.functional.conv_transpose2d(xt.permute(0, 3, 1, 2), w, stride=(2, 1), padding=p), extra
    ).permute(0, 2, 3, 1)
    np.testing.assert_allclose(yt.detach().numpy(), y, rtol=1e-6, atol=1e-6)
    gx, gk = torch.autograd.grad(yt, (xt, kt), torch.from_numpy(d))
    np.testing.assert_allclose(peer.deconv2d_dk(x, d, kernel_size=(3, 2), **geo), gk.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(peer.deconv2d_dx(k, d, **geo), gx.numpy(), rtol=1e-5, atol=1e-5)


def test_torch_pads_split() -> None:
    from convstdp.fast.torch import torch_pads

    assert torch_pads(5, 2, 3) == (1, 1, 0)  # crop 2 and 1: P = 1, one more at the start
    assert torch_pads(3, 4, 2) == (0, -2, 0)  # lo > k-1: zero padding at the start
    assert torch_pads(4, 3, 3) == (0, 0, 0)


def test_peers_are_registered_backends_flagged_as_baselines() -> None:
    from convstdp.bench import suite

    assert _backends.is_baseline("torch") and _backends.is_baseline("ngclearn")
    assert not _backends.is_baseline("numba") and "torch" not in _backends.default_backends()
    runners = {r.name: r for r in suite.resolve_runners(["numba"], peers=["torch"])}
    assert runners["numba"].kind == "backend" and runners["torch"].kind == "peer"
    with pytest.raises(ValueError, match="unknown backend"):
        suite.resolve_runners(["numba"], peers=["no-such-peer"])


# ----------------------------------------------------------------------------- timing and checks


class _Flipped:
    """A wrong backend: the reference with the kernel flipped (what a PyTorch-convention slip gives)."""

    def __init__(self) -> None:
        self.ref = get_backend("reference").impl

    def deconv2d(self, x, kernel, **kw):
        return self.ref.deconv2d(x, kernel[::-1, ::-1], **kw)

    def __getattr__(self, name):
        return getattr(self.ref, name)


def test_verify_catches_a_flipped_kernel() -> None:
    wrong = _backends.Backend("flipped", _Flipped())
    w = workloads.select(["deconv2d/online-decoder"])[0]
    c = verify.check(wrong, w)
    assert not c.ok and c.worst > 1 and "y: mismatched elements" in c.detail
    assert c.case == w.case.name and "m14x14" in c.case  # full size, not shrunk
    assert verify.check(get_backend("reference"), w).ok


def test_measurement_stats_and_gflops() -> None:
    m = Measurement("r", "w", "ok", first_call_s=1.0, samples=[4.0, 1.0, 2.0, 3.0, 5.0], flops=int(6e9))
    s = m.stats()
    assert (s["median"], s["q1"], s["q3"], s["min"], s["max"]) == (3.0, 2.0, 4.0, 1.0, 5.0)
    assert s["compile_s"] == 0.0 and m.gflops == pytest.approx(2.0)
    assert Measurement("r", "w", "skipped").stats()["median"] is None


def test_bench_workload_interleaves_and_caps() -> None:
    calls: list[str] = []

    class Counting:
        def __init__(self, tag: str) -> None:
            self.tag, self.ref = tag, get_backend("reference").impl

        def deconv2d(self, x, kernel, **kw):
            calls.append(self.tag)
            return self.ref.deconv2d(x, kernel, **kw)

        def __getattr__(self, name):
            return getattr(self.ref, name)

    runners = [Runner(t, "backend", _backends.Backend(t, Counting(t))) for t in ("a", "b")]
    runners.append(Runner("gone", "backend", reason="not installed"))
    w = Workload("small", "deconv2d", parse_case("s2-same-k3x3-m6x6-c3to2-n2-f32-sim-float-d0.4-sim"))
    st = Settings(min_sample_s=0.0, warmup_s=0.0, min_repeats=4, max_repeats=4, budget_s=0.0, memory=False)
    ms = timing.bench_workload(runners, w, st)
    assert [m.status for m in ms] == ["ok", "ok", "skipped"] and ms[2].reason == "not installed"
    assert all(len(m.samples) == 4 and m.inner == 1 and m.first_call_s > 0 for m in ms[:2])
    rounds = calls[4:]  # after first call + one warm-up call each
    assert rounds == ["a", "b", "b", "a", "a", "b", "b", "a"]  # rotating round-robin
    st.slow_s = 0.0  # everything is "slow": one sample each
    capped = timing.bench_workload(runners[:1], w, st)[0]
    assert capped.capped and len(capped.samples) == 1 and "capped" in capped.reason


def test_fmt_time() -> None:
    assert fmt_time(0.00123) == "1.23 ms"
    assert fmt_time(2.5e-6) == "2.5 µs"
    assert fmt_time(12.0) == "12 s"
    assert fmt_time(None) == fmt_time(float("nan")) == "–"


# ----------------------------------------------------------------------------- end to end


def test_bench_cli_writes_a_consistent_report(tmp_path, capsys) -> None:
    pytest.importorskip("matplotlib")
    peers = ["torch"] if _has("torch") else []
    argv = [
        "bench",
        "--quick",
        "--no-progress",
        "--backend",
        "reference",
        "--workload",
        "online-decoder",
        "--workload",
        "step/kernel=1",
        "--workload",
        "step/map=8",
        "--out",
        str(tmp_path),
    ]
    argv += [a for p in peers for a in ("--peer", p)] or ["--no-peers"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "online-decoder" in out and "GEMM peak" in out
    names = {p.name for p in tmp_path.iterdir()}
    assert {
        "report.md",
        "report.json",
        "report.html",
        "time_by_workload.png",
        "achieved_vs_peak.png",
        "sweep_step.png",
    } <= names
    if peers:
        assert "speedup.png" not in names  # no backend other than the baselines was timed
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["schema"] == "convstdp-bench/1"
    assert {"environment", "settings", "peak", "runners", "checks", "workloads", "results"} <= set(data)
    e = data["environment"]
    assert e["cpus_usable"] >= 1 and e["versions"]["numpy"] == np.__version__ and e["cpu_model"]
    assert [r["name"] for r in data["runners"]] == [*peers, "reference"]
    peak = data["peak"]["cpu_peak_gflops"]
    assert peak > 0 and data["peak"]["probes"][0]["name"] == "numpy"
    res = {(r["workload"], r["runner"]): r for r in data["results"]}
    assert len(res) == 3 * (1 + len(peers))
    wl = {w["name"]: w for w in data["workloads"]}
    assert wl["online-decoder"]["flops"] == 627_200
    for (wname, _runner), r in res.items():
        assert r["status"] == "ok", r["reason"]
        med = r["stats"]["median"]
        assert len(r["samples"]) == (1 if r["capped"] else 3)  # capped: a loaded machine, > slow_s per call
        assert med == sorted(r["samples"])[len(r["samples"]) // 2] and med > 0
        assert r["gflops"] == pytest.approx(wl[wname]["flops"] / med / 1e9)
        assert r["pct_peak"] == pytest.approx(100 * r["gflops"] / peak)
        assert r["first_call_s"] > 0 and r["inner"] >= 1
        assert r["memory"]["rss"] is None or r["memory"]["rss"] >= 0
        assert r["memory"]["traced"] is None if r["capped"] else r["memory"]["traced"] >= 0
    if peers:
        for w in wl:
            t, ref = res[(w, "torch")], res[(w, "reference")]
            assert t["speedup"]["reference"] == pytest.approx(ref["stats"]["median"] / t["stats"]["median"])
        assert all(c["ok"] for c in data["checks"]["torch"])
    md = (tmp_path / "report.md").read_text()
    assert "## Headline" in md and "### online-decoder" in md and "![" in md and "| reference |" in md
    assert "Sweep: step" in md and "conformance case `s2-same-k5x5-m14x14-c16to1-n1-f32-sim-float-d0.1-sim`" in md
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len([n for n in names if n.endswith(".png")])
    assert (tmp_path / "time_by_workload.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not any(isinstance(v, float) and math.isnan(v) for r in data["results"] for v in r["stats"].values())


def test_bench_cli_usage_errors(capsys) -> None:
    assert cli.main(["bench", "--workload", "no-such-workload", "--no-progress"]) == 2
    assert "no workload matches" in capsys.readouterr().err
    assert cli.main(["bench", "--backend", "no-such-backend", "--no-progress"]) == 2


def test_bench_reports_a_wrong_backend_and_exits_1(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(_backends, "_registry", dict(_backends._registry))  # restored afterwards
    monkeypatch.setattr(_backends, "_instances", dict(_backends._instances))
    _backends.register_backend("test-flipped", _Flipped, default=False)
    argv = [
        "bench",
        "--quick",
        "--no-progress",
        "--no-peers",
        "--no-plots",
        "--backend",
        "test-flipped",
        "--workload",
        "deconv2d/online-decoder",
        "--out",
        str(tmp_path),
    ]
    assert cli.main(argv) == 1
    data = json.loads((tmp_path / "report.json").read_text())
    (r,) = data["results"]
    assert r["status"] == "error" and r["reason"].startswith("disagrees with the reference")


def _has(mod: str) -> bool:
    try:
        __import__(mod)
    except ImportError:
        return False
    return True


def test_workload_is_frozen_and_describable() -> None:
    w = Workload("x", "deconv2d", parse_case("s2-valid-k3x3-m5x5-c3to4-n2-f32-sim-float-d0.1-sim"))
    assert "deconv2d: N=2, 5×5, Ci=3, Co=4, k=3×3, stride 2, VALID, spike density 0.1" in w.describe()
    assert w.to_dict()["flops"] == 2 * 2 * 25 * 3 * 4 * 9
    with pytest.raises(AttributeError):
        w.op = "stdp_step"  # type: ignore[misc]


@pytest.mark.parametrize("argv", [["--budget", "-1"], ["--budget", "0"], ["--budget", "inf"], ["--repeats", "0"]])
def test_bench_rejects_non_positive_budgets(argv: list[str]) -> None:

    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", *argv])
    assert exc.value.code == 2


def test_bench_checks_out_before_any_work(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    t0 = time.perf_counter()
    assert cli.main(["bench", "--out", str(blocker / "report"), "--no-progress"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert time.perf_counter() - t0 < 5  # rejected up front, not after the run (a hang guard, not a benchmark)


def test_sweep_families_hold_the_spec_point_once_and_in_order():
    from convstdp.bench.suite import sweep_families

    spec = {"name": "batch-mid", "group": "spec", "density": 0.1}
    sweeps = [{"name": f"batch-mid/density={d}", "group": "sweep", "density": d} for d in (0.01, 0.3, 1.0)]
    fams = sweep_families({"workloads": [spec, *sweeps, {"name": "step/base", "group": "sweep"}]})
    assert [w["name"] for w in fams["batch-mid"]] == ["batch-mid", *(w["name"] for w in sweeps)]
    assert fams["batch-mid"][0]["sweeps"] == [["density", 0.1]]
    assert [w["name"] for w in fams["step"]] == ["step/base"]
