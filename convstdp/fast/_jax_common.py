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
    (never a silent downcast)."""
    name = _result_dtype(tuple(np.dtype(a.dtype) for a in arrays), bool(jax.config.jax_enable_x64))
    if name is None:
        wide = [n for n, a in zip(names, arrays, strict=True) if np.dtype(a.dtype) == np.float64]
        raise TypeError(f"{', '.join(wide)} {'is' if len(wide) == 1 else 'are'} float64; {X64_HELP}")
    return name


@lru_cache(maxsize=256)
def _result_dtype(dtypes: tuple[np.dtype, ...], x64: bool) -> str | None:
    dt = geometry.result_dtype(*dtypes)
    return None if dt == np.float64 and not x64 else dt.name


def device_names() -> list[str]:
    return [f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices()]
