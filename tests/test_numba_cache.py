"""The Numba disk cache across processes: compile in one, load in the next ones, never crash.

Fresh processes share a new ``NUMBA_CACHE_DIR``. The first (cold) runs only the four operators, so
their parallel kernels are compiled and cached there. The next two (warm) run ``stdp_step`` first,
then the operators. A compiled function that called cached ``parallel=True`` kernels, compiled in
the second process from kernels loaded out of the cache, used to be cached without the hook that
starts Numba's threading layer: the third process then died of SIGSEGV on its first ``stdp_step``
(Numba issue #8578). Every process must exit 0 and all give the same bits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("numba", reason="numba is not installed: the numba backend is unavailable")

# One child process. argv: mode ("ops": the operators only; "all": stdp_step, then the operators) and
# the output .npz. Both dtypes; a small problem (serial drivers), one over the serial threshold
# (parallel drivers: the children run two Numba threads) and the same with dense spikes (the dense
# GEMM kernels, parallel entry points too). Prints the paths taken as JSON.
CHILD = r"""
import json, sys
import numpy as np
import convstdp
import convstdp.paths

mode, out = sys.argv[1], sys.argv[2]
be = convstdp.get_backend("numba")
P = dict(A_plus=0.7, A_minus=0.45, eta=0.3, pretrace_target=0.2, w_decay=0.05, w_bound=1.2)
kw_ = dict(stride=(2, 1), padding="SAME")
cases = {}
for dt in (np.float32, np.float64):
    sizes = {
        "small": (2, 5, 6, 3, 4, 3, 2, 0.2),
        "large": (4, 28, 28, 17, 19, 3, 3, 0.2),
        "dense": (4, 28, 28, 17, 19, 3, 3, 1.0),
    }
    for size, (n, h, w, ci, co, kh, kw, density) in sizes.items():
        rng = np.random.default_rng(3)
        x = (rng.standard_normal((n, h, w, ci)) * (rng.random((n, h, w, ci)) < density)).astype(dt)
        k = rng.random((kh, kw, ci, co)).astype(dt)
        pre = ((rng.random((n, h, w, ci)) < density).astype(dt), rng.random((n, h, w, ci)).astype(dt))
        post = ((rng.random((n, 2 * h, w, co)) < density).astype(dt), rng.random((n, 2 * h, w, co)).astype(dt))
        cases[f"{np.dtype(dt).name}-{size}"] = (x, k, *pre, *post)
results, taken = {}, {tag: [] for tag in cases}
# "all": stdp_step first, small first: nothing has loaded a parallel kernel or started the threading
# layer in this process yet (the backend asks for the thread count only above the serial threshold)
if mode == "all":
    for tag, (x, k, pre_s, pre_t, post_s, post_t) in cases.items():
        with convstdp.paths.recording() as rec:
            for name, xx in (("step-x-is-pre", pre_s), ("step", x)):
                for i, r in enumerate(be.stdp_step(k, xx, pre_s, pre_t, post_s, post_t, **kw_, **P)):
                    results[f"{tag}-{name}-{i}"] = r
        taken[tag] += rec
for tag, (x, k, pre_s, pre_t, post_s, post_t) in cases.items():
    with convstdp.paths.recording() as rec:
        results[f"{tag}-deconv2d"] = be.deconv2d(x, k, **kw_)
        results[f"{tag}-dx"] = be.deconv2d_dx(k, post_s, **kw_)
        results[f"{tag}-dk-by-x"] = be.deconv2d_dk(pre_s, post_t, kernel_size=k.shape[:2], **kw_)
        results[f"{tag}-dk-by-d"] = be.deconv2d_dk(x, post_s, kernel_size=k.shape[:2], **kw_)
        for i, r in enumerate(be.stdp_update(k, pre_s, pre_t, post_s, post_t, **kw_, **P)):
            results[f"{tag}-update-{i}"] = r
    taken[tag] += rec
np.savez(out, **results)
print(json.dumps(taken))
"""


def _run(mode: str, out: Path, cache: Path) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Run :data:`CHILD` in a fresh process; its results and the paths it took."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), NUMBA_NUM_THREADS="2", PYTHONFAULTHANDLER="1")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(out)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, (
        f"{mode} process {out.stem} exited {proc.returncode} (-11: SIGSEGV)\n{proc.stderr[-3000:]}"
    )
    with np.load(out) as data:
        return dict(data), json.loads(proc.stdout.strip().splitlines()[-1])


def test_processes_sharing_a_fresh_cache_do_not_crash_and_agree(tmp_path):
    cache = tmp_path / "numba-cache"
    cold, _ = _run("ops", tmp_path / "1-cold.npz", cache)
    warm = [_run("all", tmp_path / f"{i}-warm.npz", cache) for i in (2, 3)]
    assert any(cache.rglob("*.nbi")), "nothing was cached"

    (first, taken), (second, taken_again) = warm
    assert taken == taken_again
    for tag, paths in taken.items():
        kind = "dense" if tag.endswith("dense") else "parallel" if tag.endswith("large") else "serial"
        assert len(paths) == 7 and all(p.endswith("/" + kind) for p in paths), (tag, paths)
    assert first.keys() == second.keys() and cold.keys() < first.keys()
    for key, value in first.items():
        assert value.dtype == np.dtype(key.split("-")[0]), key
        assert np.array_equal(value, second[key]), f"{key} differs between the warm processes"
        if key in cold:
            assert np.array_equal(value, cold[key]), f"{key} differs between the cold and a warm process"
    # the fused step's update is stdp_update's, bit for bit
    for key in (k for k in first if k.endswith("-update-0")):
        tag = key.removesuffix("-update-0")
        for step in ("step", "step-x-is-pre"):
            assert np.array_equal(first[f"{tag}-{step}-1"], first[key]), f"{tag} {step}: W'"
            assert np.array_equal(first[f"{tag}-{step}-2"], first[f"{tag}-update-1"]), f"{tag} {step}: dW"
