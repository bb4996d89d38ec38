"""What the JAX backend and the ngclearn adapter share: the SPEC §4 dtype rule under JAX's x64 flag."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import jax
import numpy as np

from convstdp import geometry

X64_HELP = (
    "float64 needs JAX's 64-bit mode, which is off: JAX would silently compute in float32. "
    "Enable it before creating arrays with jax.config.update('jax_enable_x64', True) "
    "(or JAX_ENABLE_X64=1 in the environment, or inside `with jax.enable_x64(True):`), "
    "or pass float32 inputs."
)


def result_dtype(names: Sequence[str], arrays: Sequence[Any]) -> str:
    """SPEC §4 result dtype of ``arrays`` as a name; ``TypeError`` for float64 while x64 is off
    (never a silent downcast), naming the arguments that make it float64."""
    dtypes = tuple(np.dtype(a.dtype) for a in arrays)
    name = _result_dtype(dtypes, bool(jax.config.jax_enable_x64))
    if name is None:
        wide = [n for n, dt in zip(names, dtypes, strict=True) if dt.kind == "f" and dt.itemsize == 8]
        if wide:
            raise TypeError(f"{', '.join(wide)} {'is' if len(wide) == 1 else 'are'} float64; {X64_HELP}")
        given = ", ".join(f"{n} is {dt}" for n, dt in zip(names, dtypes, strict=True))
        raise TypeError(f"no input is floating point ({given}), so the result dtype is float64 (SPEC §4); {X64_HELP}")
    return name


def host_safe(a: Any, dtype: str) -> Any:
    """``a``, or for what JAX would misread, a NumPy copy in ``dtype`` (the result dtype).

    JAX silently wraps 64-bit ints to int32 while x64 is off (a spike count of 2**40 would become
    0) and rejects non-native byte order, so NumPy converts those on the host first. Other
    arrays pass unchanged (bool/int spikes are cast inside the compiled program).
    """
    if isinstance(a, np.ndarray):
        dt = a.dtype
        if not dt.isnative or (dt.kind in "iu" and dt.itemsize == 8):
            return a.astype(dtype)
    return a


@lru_cache(maxsize=256)
def _result_dtype(dtypes: tuple[np.dtype, ...], x64: bool) -> str | None:
    dt = geometry.result_dtype(*dtypes)
    return None if dt == np.float64 and not x64 else dt.name


def device_names() -> list[str]:
    return [f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices()]
