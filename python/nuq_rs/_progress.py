"""A one-line progress bar on stderr (tensors and megabytes done).

It appears only once the work has lasted a second, only on a terminal, and is
redrawn at most ten times a second, so short runs and logs stay clean.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Progress:
    """Counts finished tensors and bytes; draws ``[####....] 3/12 tensors 384/1536 MB``."""

    def __init__(
        self,
        total_items: int,
        total_bytes: int,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
        delay: float = 1.0,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and self.stream.isatty()
        self.total_items, self.total_bytes = total_items, total_bytes
        self.items = self.bytes = 0
        self._start = time.monotonic()
        self._delay = delay
        self._last_draw = -1.0
        self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def advance(self, nbytes: int) -> None:
        """One more tensor of ``nbytes`` input bytes is done."""
        self.items += 1
        self.bytes += nbytes
        now = time.monotonic()
        due = now - self._start >= self._delay and now - self._last_draw >= 0.1
        if self.enabled and (due or (self._drawn and self.items == self.total_items)):
            self._last_draw = now
            self._draw()

    def line(self, width: int = 30) -> str:
        """The bar's text (without carriage return)."""
        frac = self.bytes / self.total_bytes if self.total_bytes else 1.0
        done = round(width * min(frac, 1.0))
        mb, total_mb = self.bytes / 1e6, self.total_bytes / 1e6
        return (
            f"[{'#' * done}{'.' * (width - done)}] {self.items}/{self.total_items} tensors "
            f"{mb:,.0f}/{total_mb:,.0f} MB"
        )

    def _draw(self) -> None:
        self.stream.write("\r" + self.line())
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the bar's line so that what follows starts on a fresh one."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
