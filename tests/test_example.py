"""The digits learning example (examples/digits_stdp.py), shortened: it learns, writes its files, is deterministic."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

pytest.importorskip("numba", reason="the example test runs on the numba backend")
pytest.importorskip("sklearn", reason="the example needs scikit-learn (pip install convstdp[examples])")
pytest.importorskip("matplotlib", reason="the example needs matplotlib (pip install convstdp[examples])")

EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "digits_stdp.py")
SHORT = ["--backend", "numba", "--epochs", "2", "--steps", "8", "--train", "384", "--test", "64", "--seed", "0"]


def _example():
    spec = importlib.util.spec_from_file_location("digits_stdp", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    ex = _example()
    out = tmp_path_factory.mktemp("digits")
    assert ex.main([*SHORT, "--out", str(out)]) == 0
    return ex, out


def test_writes_plots_filters_and_summary(short_run):
    _, out = short_run
    for name in ("filters.png", "curve.png"):
        with open(out / name, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(out / name) > 5000
    w = np.load(out / "filters.npy")
    assert w.shape == (6, 6, 32, 1) and w.dtype == np.float32
    assert np.isfinite(w).all()
    assert w.min() >= 0.01 - 1e-6 and w.max() <= 0.99 + 1e-6  # w_bound = 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "numba" and summary["batches"] == 2 * 384 // 32
    assert len(summary["curve_train"]) == summary["batches"]


def test_reconstruction_error_falls_and_filters_become_parts(short_run):
    _, out = short_run
    s = json.loads((out / "summary.json").read_text())
    start, end = s["eval_test"][0], s["eval_test"][-1]
    assert np.isfinite(s["eval_test"]).all()
    assert end < 0.5 * start, (start, end)  # held-out error, learning off: ~0.82 -> ~0.31
    assert end < s["mean_digit_error"], (end, s["mean_digit_error"])  # better than predicting the mean digit
    assert np.mean(s["curve_train"][-4:]) < 0.6 * np.mean(s["curve_train"][:4])
    w = np.load(out / "filters.npy")
    # the initial filters are uniform on [0.05, 0.25); learning sends many weights to the lower bound
    # (sparse, stroke-like parts) and some well above the initial range
    assert (w <= 0.011).mean() > 0.03
    assert w.max() > 0.25


def test_deterministic_for_a_seed(short_run):
    ex, out = short_run
    res = ex.train("numba", 2, 8, 0, n_train=384, n_test=64, log=lambda *_: None)
    np.testing.assert_array_equal(res["filters"], np.load(out / "filters.npy"))
    s = json.loads((out / "summary.json").read_text())
    assert res["curve_train"] == s["curve_train"] and res["eval_test"] == s["eval_test"]
