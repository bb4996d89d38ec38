"""The one progress display of the long commands (``conformance``, ``bench``), on stderr.

rich's bar on a terminal when rich is installed. Without it: with ``lines``, one plain line per
finished item (what a log file should get); otherwise a counter redrawn in place on a terminal,
and nothing at all when stderr is not one.
"""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["Progress"]


class Progress:
    """``total`` items under ``label``; ``enabled=None`` means "when stderr is a terminal"."""

    def __init__(self, total: int, label: str, enabled: bool | None = None, *, lines: bool = False) -> None:
        self.total, self.done, self.label, self.lines = total, 0, label, lines
        tty = sys.stderr.isatty()
        self.enabled = (tty or lines) if enabled is None else enabled
        self.t0 = time.perf_counter()
        self._rich: Any = None
        if self.enabled and tty:  # a log file gets plain lines instead of a redrawn bar
            try:
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
                from rich.progress import Progress as RichProgress
            except ImportError:
                pass
            else:
                self._rich = RichProgress(
                    TextColumn(f"[bold]{label}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    TextColumn("{task.description}"),
                    console=Console(stderr=True),
                    transient=not lines,
                )
                self._rich.start()
                self._task = self._rich.add_task("", total=total)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self, text: str) -> None:
        """What is happening now (shown by the rich bar only)."""
        if self._rich is not None:
            self._rich.update(self._task, description=text[:60])

    def advance(self, what: str = "", n: int = 1) -> None:
        """``n`` more items done, the last being ``what``."""
        self.done += n
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.update(self._task, advance=n, description=what[:60])
        elif self.lines:
            elapsed = time.perf_counter() - self.t0
            print(f"[{self.done}/{self.total}] {what} done ({elapsed:.0f} s)", file=sys.stderr, flush=True)
        else:
            sys.stderr.write(f"\r{self.label}: {self.done}/{self.total} {what[:60]:<60}")
            sys.stderr.flush()

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
        elif self.enabled and not self.lines and self.done:
            sys.stderr.write("\n")
