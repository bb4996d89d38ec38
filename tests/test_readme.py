"""The README's Python example runs as written and gives what it says."""

import re
from pathlib import Path

import numpy as np
import pytest

import convstdp

README = Path(__file__).resolve().parents[1] / "README.md"


def _run_example(section: str) -> dict:
    """Run the first Python block under the README heading ``section``; its variables."""
    if convstdp.available_backends()["numba"] != "ok":
        pytest.skip("the example uses the numba backend, which is unavailable here")
    code = re.search(rf"## {section}\n.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    scope: dict = {}
    exec(code, scope)
    return scope


def test_readme_example_runs():
    scope = _run_example("In Python")
    assert scope["y"].shape == (8, 28, 28, 4)
    assert scope["dX"].shape == (8, 14, 14, 16)
    assert scope["W_new"].dtype == np.float32
    assert 0.01 <= scope["W_new"].min() and scope["W_new"].max() <= 0.99  # w_bound = 1 clips


def test_readme_synapse_example_runs():
    syn = _run_example("Synapse components")["syn"]
    w = np.asarray(syn.weights.get())
    assert w.shape == (5, 5, 16, 1) and w.dtype == np.float32
    assert 0.01 <= w.min() and w.max() <= 0.99  # w_bound = 1 clips
    assert np.asarray(syn.outputs.get()).shape == (1, 28, 28, 1)
    assert np.asarray(syn.dInputs.get()).shape == (1, 14, 14, 16)
    assert np.abs(np.asarray(syn.dWeights.get())).max() > 0  # it learned


def test_quick_start_has_two_commands_and_ci_runs_the_test_command():
    block = re.search(r"## Quick start\n\n```bash\n(.*?)```", README.read_text(), re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert len(commands) == 2
    ci = (README.parent / ".ci" / "run").read_text()
    install, test = commands[1].split(" && ")
    assert test in ci and install.replace("pip install", "pip install --quiet") in ci
