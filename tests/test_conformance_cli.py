"""``convstdp conformance``: exit codes, JSON schema, Markdown report, self-test, isolation."""

from __future__ import annotations

import json
import re
import textwrap

import pytest

import convstdp
from convstdp.cli import main
from convstdp.conformance import broken

CASE = "s3x2-valid-k3x2-m5x7-c3to4-n2-f32-all-bool"
CASE2 = "s1-same-k2x2-m2x2-c1to1-n1-f64-basic-bool"


def test_reference_on_one_case_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conformance", "--backend", "reference", "--case", CASE, "-q"]) == 0
    out = capsys.readouterr().out
    assert "reference  deconv2d" in out and "OK: every checked backend agrees" in out


def test_disagreement_exits_1_with_diagnostics_and_repro(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["conformance", "--backend", "convstdp.conformance.broken:kernel_flipped", "--case", CASE, "-q"])
    assert rc == 1
    out = capsys.readouterr().out
    assert f"deconv2d [{CASE}]: fail: y: mismatched elements:" in out and "worst against its bound at (" in out
    assert f"--case '{CASE}' --seed 0" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["--backend", "no-such-backend"],
        ["--case", "not-a-case"],
        ["--case", '{"stride": [1, 1]}'],
        ["--case", '{"stride":[1,1],"padding":[[1,2],[0]],"kernel":[3,3],"in_size":[4,4],"ci":1,"co":1,"batch":1}'],
        ["--case", '{"stride":[1,1],"padding":"SAME","kernel":[3,3],"in_size":[4,4],"ci":1.7,"co":1,"batch":1}'],
        ["--case", '{"stride":[1,1],"padding":"SAME","kernel":[3,3],"in_size":[99999,99999],"ci":1,"co":1,"batch":1}'],
        ["--json", "/nonexistent-dir/out.json"],
        ["--report", "/nonexistent-dir/out.md"],
        ["--timeout", "5"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conformance", "-q", "--backend", "reference", *argv]) == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["--grid", "bogus"], ["--examples", "0"], ["--isolate", "--timeout", "-5"], ["--timeout", "nan"]],
)
def test_argparse_usage_errors_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["conformance", *argv])
    assert exc.value.code == 2


def test_unavailable_named_backend_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    def factory():
        raise convstdp.BackendUnavailable("needs a GPU")

    convstdp.register_backend("conf-test-unavailable", factory, default=False)
    assert main(["conformance", "--backend", "conf-test-unavailable", "--case", CASE]) == 2
    assert "needs a GPU" in capsys.readouterr().err


class _Unsupported(broken.ReferenceWrapper):
    def unsupported(self, g):
        return "upstream lacks explicit pads" if g.stride[0] != g.stride[1] else None


def test_unsupported_is_reported_not_failed(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    convstdp.register_backend("conf-test-unsupported", _Unsupported, default=False)
    report = tmp_path / "r.md"
    rc = main(["conformance", "--backend", "conf-test-unsupported", "--case", CASE, "--report", str(report), "-q"])
    assert rc == 1  # it checked no case: a backend that checks nothing fails
    md = report.read_text()
    assert "does not support 1 case(s)" in md and "upstream lacks explicit pads" in md
    assert "checked no case" in md
    rc = main(["conformance", "--backend", "conf-test-unsupported", "--case", CASE, "--case", CASE2, "-q"])
    assert rc == 0


def test_json_and_markdown_records(tmp_path) -> None:
    js, md = tmp_path / "c.json", tmp_path / "c.md"
    rc = main(
        [
            "conformance",
            "--backend",
            "reference",
            "--backend",
            "convstdp.conformance.broken:ltd_sign",
            "--case",
            CASE,
            "--case",
            CASE2,
            "--seed",
            "7",
            "--json",
            str(js),
            "--report",
            str(md),
            "-q",
        ]
    )
    assert rc == 1
    doc = json.loads(js.read_text())
    assert doc["schema"] == "convstdp.conformance" and doc["schema_version"] == 1
    assert set(doc) >= {
        "created",
        "command",
        "grid",
        "seed",
        "environment",
        "tolerance",
        "backends",
        "cases",
        "summary",
        "results",
        "self_test",
        "grid_problems",
        "ok",
    }
    assert doc["seed"] == 7 and doc["grid"] == "case" and doc["ok"] is False
    assert {"convstdp", "python", "versions", "platform", "cpu_model", "git_commit"} <= set(doc["environment"])
    assert doc["environment"]["versions"]["numpy"]
    assert doc["tolerance"]["policy"]["float32"]["u"] == 2.0**-24
    assert doc["backends"]["reference"]["status"] == "ok" and "version" in doc["backends"]["reference"]
    assert [c["name"] for c in doc["cases"]] == [CASE, CASE2]
    res = doc["results"]
    assert len(res) == 2 * 2 * 6
    keys = {
        "case",
        "backend",
        "operator",
        "status",
        "ratio",
        "outputs",
        "problems",
        "error",
        "seconds",
        "policy",
        "paths",
    }
    assert all(set(r) == keys for r in res)
    bad = [r for r in res if r["status"] == "fail"]
    assert {r["operator"] for r in bad} == {"stdp_update", "stdp_step"}
    dw = next(o for o in bad[0]["outputs"] if o["output"] == "dW")
    assert dw["mismatches"] > 0 and dw["ratio"] > 1 and len(dw["index"]) == 4
    summary = {(s["backend"], s["operator"]): s for s in doc["summary"]}
    assert summary[("reference", "deconv2d")]["passed"] == 2
    assert summary[("convstdp.conformance.broken:ltd_sign", "stdp_update")]["failed"] == 2
    text = md.read_text()
    for heading in (
        "**Verdict: FAIL**",
        "## What was checked",
        "## Tolerance policy",
        "## Summary",
        "## Failures (4)",
        "## Departures from SPEC",
    ):
        assert heading in text
    assert "| reference | deconv2d | 2 | 2 | 0 | 0 |" in re.sub(r" +", " ", text)  # column padding aside


def test_self_test_cli_catches_all(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    js = tmp_path / "s.json"
    assert main(["conformance", "--self-test", "--backend", "reference", "-q", "--json", str(js)]) == 0
    out = capsys.readouterr().out
    n = len(broken.BUGS)
    assert f"caught {n}/{n}" in out
    st = json.loads(js.read_text())["self_test"]
    assert st["caught"] == st["total"] == n and st["control_passed"] and st["ok"]
    tiers = {r["bug"]: r["tiers"] for r in st["rows"]}
    assert set(tiers["uniform-1e-4"]) == {"small", "large"} and min(tiers["bf16-inputs"].values()) >= 10


def test_self_test_exits_1_when_a_bug_slips_through(monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    harmless = broken.Bug("harmless", "a 'bug' that changes nothing", broken.ReferenceWrapper)
    n = len(broken.BUGS)
    monkeypatch.setattr(broken, "BUGS", (*broken.BUGS, harmless))
    assert main(["conformance", "--self-test", "--backend", "reference", "-q"]) == 1
    assert f"caught {n}/{n + 1}" in capsys.readouterr().out


def test_random_grid_cli(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("hypothesis")
    assert main(["conformance", "--backend", "reference", "--grid", "random", "--examples", "5", "-q"]) == 0
    rc = main(
        [
            "conformance",
            "--backend",
            "convstdp.conformance.broken:w_decay",
            "--grid",
            "random",
            "--examples",
            "25",
            "--operator",
            "stdp_update",
            "-q",
        ]
    )
    assert rc == 1
    out = capsys.readouterr().out
    assert (
        "failure shrunk to" in out
        and "convstdp conformance --backend convstdp.conformance.broken:w_decay --case" in out
    )


def test_isolate_records_a_hard_crash_and_goes_on(tmp_path, monkeypatch) -> None:
    mod = tmp_path / "abort_backend.py"
    mod.write_text(
        textwrap.dedent(
            """
        import os
        from convstdp.conformance.broken import ReferenceWrapper

        class Impl(ReferenceWrapper):
            def deconv2d(self, x, kernel, *, stride, padding):
                if x.shape[1] == 5:  # the case with a 5-row map dies hard
                    os.abort()
                return super().deconv2d(x, kernel, stride=stride, padding=padding)

        def create():
            return Impl()
        """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))  # the spawned child gets this sys.path and imports it
    js = tmp_path / "iso.json"
    rc = main(
        [
            "conformance",
            "--backend",
            "abort_backend:create",
            "--isolate",
            "--case",
            CASE2,
            "--case",
            CASE,
            "--case",
            "s1-same-k1x1-m3x3-c1to1-n1-f64-basic-bool",
            "--json",
            str(js),
            "-q",
        ]
    )
    assert rc == 1
    res = json.loads(js.read_text())["results"]
    by_case: dict[str, set[str]] = {}
    for r in res:
        by_case.setdefault(r["case"], set()).add(r["status"])
    assert by_case[CASE2] == {"pass"} and by_case["s1-same-k1x1-m3x3-c1to1-n1-f64-basic-bool"] == {"pass"}
    assert by_case[CASE] == {"crash"}
    crash = next(r for r in res if r["status"] == "crash")
    assert "signal" in crash["error"]


class _TwoPaths(broken.ReferenceWrapper):
    """Declares two deconv2d paths; the second only above a size no quick case reaches."""

    paths = frozenset({"deconv2d/small", "deconv2d/huge"})

    def deconv2d(self, x, kernel, *, stride, padding):
        from convstdp import paths

        paths.note("deconv2d/huge" if x.size > 10**8 else "deconv2d/small")
        return super().deconv2d(x, kernel, stride=stride, padding=padding)


class _UndeclaredPath(broken.ReferenceWrapper):
    paths = frozenset({"deconv2d/one"})

    def deconv2d(self, x, kernel, *, stride, padding):
        from convstdp import paths

        paths.note("deconv2d/other")
        return super().deconv2d(x, kernel, stride=stride, padding=padding)


def test_a_declared_path_no_case_exercised_fails_the_grid(capsys: pytest.CaptureFixture[str]) -> None:
    convstdp.register_backend("conf-test-two-paths", _TwoPaths, default=False)
    assert main(["conformance", "--backend", "conf-test-two-paths", "-q"]) == 1
    out = capsys.readouterr().out
    assert "the grid exercised no case on path(s) deconv2d/huge" in out
    assert re.search(r"conf-test-two-paths +deconv2d/huge +0 +NOT EXERCISED", out)
    assert re.search(r"conf-test-two-paths +deconv2d/small +40\b", out)
    # a single case is no grid: coverage is reported, not enforced
    assert main(["conformance", "--backend", "conf-test-two-paths", "--case", CASE, "-q"]) == 0


def test_a_path_noted_but_not_declared_fails(capsys: pytest.CaptureFixture[str]) -> None:
    convstdp.register_backend("conf-test-undeclared", _UndeclaredPath, default=False)
    assert main(["conformance", "--backend", "conf-test-undeclared", "--case", CASE, "-q"]) == 1
    assert "noted path(s) it does not declare: deconv2d/other" in capsys.readouterr().out


def test_precision_comes_from_the_registry_or_the_user_never_the_backend(capsys) -> None:
    class Bf16(broken.Bfloat16Inputs):
        precision = "highest"  # what the object says does not matter either way

    convstdp.register_backend("conf-test-bf16", Bf16, default=False, precision="bf16")
    convstdp.register_backend("conf-test-bf16-unregistered", Bf16, default=False)
    assert main(["conformance", "--backend", "conf-test-bf16", "--case", CASE, "-q"]) == 0
    assert "checked at bf16 (registry)" in capsys.readouterr().out
    assert main(["conformance", "--backend", "conf-test-bf16-unregistered", "--case", CASE, "-q"]) == 1
    capsys.readouterr()
    args = ["conformance", "--backend", "conf-test-bf16-unregistered", "--case", CASE, "--precision", "bf16", "-q"]
    assert main(args) == 0
    assert "checked at bf16 (user (--precision))" in capsys.readouterr().out
    # a backend declaring itself imprecise is still held to float32
    assert main(["conformance", "--backend", "convstdp.conformance.broken:zeros_imprecise", "--case", CASE, "-q"]) == 1


def test_a_backend_broken_by_our_own_import_fails_the_run(tmp_path, monkeypatch, capsys) -> None:
    pkg = tmp_path / "convstdp_test_broken_import.py"
    pkg.write_text("import convstdp.fast._does_not_exist  # noqa\n\ndef factory():\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    convstdp.register_backend("conf-test-broken-import", "convstdp_test_broken_import:factory")
    try:
        assert main(["conformance", "--case", CASE, "-q", "--operator", "deconv2d"]) == 1
        captured = capsys.readouterr()
        assert "convstdp.fast._does_not_exist" in captured.out + captured.err
        assert main(["backends"]) == 1
        assert "error" in capsys.readouterr().out
    finally:
        convstdp.backends._registry.pop("conf-test-broken-import", None)
        convstdp.backends._failures.pop("conf-test-broken-import", None)


def test_isolate_keeps_the_child_quiet_and_records_a_failed_load(tmp_path, monkeypatch, capfd) -> None:
    (tmp_path / "noisy_backend.py").write_text(
        textwrap.dedent(
            """
        from convstdp.conformance.broken import ReferenceWrapper

        class Impl(ReferenceWrapper):
            def deconv2d(self, x, kernel, *, stride, padding):
                print("NOISE FROM THE BACKEND")
                return super().deconv2d(x, kernel, stride=stride, padding=padding)

        def create():
            return Impl()
        """
        )
    )
    (tmp_path / "aborts_on_import.py").write_text("import os\nos.abort()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["conformance", "--backend", "noisy_backend:create", "--isolate", "--case", CASE, "-q"]) == 0
    assert "NOISE" not in capfd.readouterr().out  # the child's stdout goes nowhere, the report stays clean
    js = tmp_path / "load.json"
    argv = ["conformance", "--backend", "aborts_on_import:create", "--isolate", "--case", CASE, "--case", CASE2]
    assert main([*argv, "-q", "--json", str(js)]) == 1
    res = json.loads(js.read_text())["results"]
    assert {r["case"] for r in res} == {CASE, CASE2} and {r["status"] for r in res} == {"crash"}
    assert all("the backend failed to load" in r["error"] and "signal 6" in r["error"] for r in res)
