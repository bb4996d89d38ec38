"""Argument checks shared by the sub-commands: what argparse types and up-front path checks need."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from typing import Any

__all__ = ["positive", "unwritable"]


def positive(kind: type) -> Callable[[str], Any]:
    """An argparse type: a finite number of ``kind`` greater than 0 (else a usage error, exit 2)."""

    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if not (v > 0 and math.isfinite(v)):
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return v

    return parse


def unwritable(path: str, option: str, *, directory: bool = False) -> str | None:
    """Why ``path`` (a file, or with ``directory`` a folder to create or fill) cannot be written, or
    ``None``. Checked before any work, so a long run never ends in a traceback."""
    target = os.path.abspath(path)
    if directory:
        existing = target
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            return f"{option} {path!r}: {existing!r} is a file, not a folder"
        return None if os.access(existing, os.W_OK) else f"{option} {path!r} is not writable"
    folder = os.path.dirname(target)
    if os.path.isdir(target):
        return f"{option} {path!r} is a directory"
    if not os.path.isdir(folder):
        return f"{option} {path!r}: folder {folder!r} does not exist"
    if not os.access(folder, os.W_OK) or (os.path.exists(target) and not os.access(target, os.W_OK)):
        return f"{option} {path!r} is not writable"
    return None
