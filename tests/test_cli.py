"""The command line: ``convstdp backends``, ``--version``, ``python -m convstdp``."""

import subprocess
import sys

import pytest

import convstdp
from convstdp.cli import main


def test_backends_table(capsys):
    assert main(["backends"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["backend", "status", "version", "devices"]
    rows = {line.split()[0]: line for line in out[2:]}
    assert {"reference", "numba", "jax", "ngclearn"} <= set(rows)
    assert "ok" in rows["reference"] and "numpy" in rows["reference"] and "cpu" in rows["reference"]


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"convstdp {convstdp.__version__}"


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2
    assert main([]) == 2


def test_python_dash_m():
    proc = subprocess.run([sys.executable, "-m", "convstdp", "backends"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "reference" in proc.stdout
