"""Peak memory of one call, measured three ways; each result says which way it used.

- ``rss``: rise of the process's resident set during the call: the kernel's high-water mark
  (``VmHWM``) is reset through ``/proc/self/clear_refs`` before the call and read after it,
  minus the resident set before. Sees every allocator (NumPy, Numba, PyTorch, XLA on CPU) but
  only memory newly touched: buffers reused from an allocator's cache do not show. Linux only.
- ``traced``: ``tracemalloc`` peak during the call: exact for NumPy and Python allocations,
  blind to Numba's, PyTorch's and XLA's own allocators (not taken for runners capped at one
  sample: tracing would cost them another slow call).
- ``device``: ``peak_bytes_in_use`` of an accelerator (JAX on GPU), which is a high-water mark
  since the process started, not of this call alone.
"""

from __future__ import annotations

import re
import tracemalloc
from collections.abc import Callable
from typing import Any


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            m = re.search(rf"^{field}:\s+(\d+)\s+kB", fh.read(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def rss_peak_rise(fn: Callable[[], Any]) -> int | None:
    """Bytes the resident set rose to above its level before ``fn()``; ``None`` if unsupported."""
    before = _status_kb("VmRSS")
    supported = before is not None and _reset_hwm()
    fn()
    hwm = _status_kb("VmHWM") if supported else None
    return None if hwm is None else max(0, hwm - before) * 1024


def traced_peak(fn: Callable[[], Any]) -> int:
    """Peak bytes allocated through Python's allocators (NumPy included) during ``fn()``."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return max(0, peak - base)


def device_peak(out: Any) -> int | None:
    """Largest ``peak_bytes_in_use`` of the accelerators holding JAX result(s) ``out``; ``None`` on CPU."""
    leaves = out if isinstance(out, tuple | list) else [out]
    devices = {d for leaf in leaves if callable(getattr(leaf, "devices", None)) for d in leaf.devices()}
    stats = [
        d.memory_stats() or {} for d in devices if getattr(d, "platform", "cpu") != "cpu" and hasattr(d, "memory_stats")
    ]
    peaks = [int(s["peak_bytes_in_use"]) for s in stats if "peak_bytes_in_use" in s]
    return max(peaks) if peaks else None


def headline(mem: dict[str, Any] | None) -> tuple[int | None, str]:
    """The one figure a table shows, and its method: device, else the larger of rss/traced."""
    if not mem:
        return None, ""
    if mem.get("device") is not None:
        return mem["device"], "device"
    cands = [(v, k) for k in ("rss", "traced") if (v := mem.get(k)) is not None]
    return max(cands) if cands else (None, "")
