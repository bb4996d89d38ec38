"""The pytest plugin: ``pytest --pyargs convstdp.conformance --backend package.module:factory``,
run from another directory in a subprocess, and invisible to the project's own test run."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "convstdp.conformance.pytest_plugin"


def _plugin_args() -> list[str]:
    """``-p`` the plugin unless the ``pytest11`` entry point already loads it."""
    eps = importlib.metadata.entry_points(group="pytest11")
    return [] if any(ep.value == PLUGIN for ep in eps) else ["-p", PLUGIN]


def _pytest(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_pyargs_from_another_directory_runs_the_suite(tmp_path: Path) -> None:
    proc = _pytest(
        [
            "--pyargs",
            "convstdp.conformance",
            *_plugin_args(),
            "--backend",
            "convstdp.reference:create_backend",
            "--conformance-examples",
            "3",
            "-q",
            "-k",
            "m1x1 or m2x2 or random",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " passed" in proc.stdout and "failed" not in proc.stdout
    assert "error" not in proc.stdout.lower()


def test_pyargs_reports_a_broken_backend_with_a_repro(tmp_path: Path) -> None:
    proc = _pytest(
        [
            "--pyargs",
            "convstdp.conformance",
            *_plugin_args(),
            "--backend",
            "convstdp.conformance.broken:clip_bounds",
            "--conformance-examples",
            "0",
            "-q",
            "-k",
            "clip",
        ],
        tmp_path,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "stdp_update [" in proc.stdout and "reproduce: convstdp conformance --backend" in proc.stdout


def test_suite_by_path_needs_no_plugin(tmp_path: Path) -> None:
    proc = _pytest(
        [
            str(ROOT / "convstdp" / "conformance"),
            "--backend",
            "reference",
            "--conformance-examples",
            "0",
            "-q",
            "-k",
            "m1x1",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " passed" in proc.stdout


@pytest.mark.skipif(not (ROOT / "pyproject.toml").exists(), reason="needs the source tree")
def test_project_run_does_not_collect_the_package_suite() -> None:
    proc = _pytest(["--collect-only", "-q", "tests/test_conformance_plugin.py"], ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "convstdp/conformance/test_suite.py" not in proc.stdout
    proc = _pytest(["--co", "-q", "--rootdir", str(ROOT)], ROOT)  # the configured testpaths
    assert "convstdp/conformance/test_suite.py" not in proc.stdout
