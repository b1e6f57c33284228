"""Progress output on standard error: a bar on a terminal, one line per step otherwise (logs, CI)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Reports steps of a run; `quiet` reports nothing."""

    WIDTH = 30

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def note(self, text: str) -> None:
        """A line of its own."""
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    @contextmanager
    def step(self, label: str, total: int) -> Iterator[Callable[[int], None]]:
        """`with progress.step("single calls", n) as tick: ... tick(done_so_far)`."""
        start = time.perf_counter()
        last = [0.0]

        def tick(done: int) -> None:
            now = time.perf_counter()
            if self.quiet or not self.tty or (now - last[0] < 0.1 and done < total):
                return
            last[0] = now
            share = min(1.0, done / total) if total else 1.0
            bar = "#" * int(share * self.WIDTH)
            self.stream.write(f"\r  {label:<28} [{bar:<{self.WIDTH}}] {share:4.0%} {done:>12,}/{total:,}")
            self.stream.flush()

        if not self.quiet and not self.tty:
            self.stream.write(f"  {label} ({total:,}) ...")
            self.stream.flush()
        yield tick
        took = time.perf_counter() - start
        if self.quiet:
            return
        if self.tty:
            tick(total)
            self.stream.write(f"  {took:.1f} s\n")
        else:
            self.stream.write(f" {took:.1f} s\n")
        self.stream.flush()
