"""A background thread that returns expired agents' slots to the registry.

Expiry itself needs no sweep: an agent is denied `expired` at its first
check after `expires_at`. The sweep (`engine.sweep()`) frees the slots so a
fleet of ephemeral agents does not grow the registry without bound. Nothing
starts at import and no thread survives a fork: start one explicitly, in
the process that serves decisions.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Protocol, Self

log = logging.getLogger("charter.sweeper")


class Sweepable(Protocol):
    def sweep(self) -> int: ...


class Sweeper:
    """Calls `engine.sweep()` every `interval` seconds until stopped; a context manager."""

    def __init__(self, engine: Sweepable, interval: float = 1.0) -> None:
        if not interval > 0:
            raise ValueError("interval must be a positive number of seconds")
        self._engine = engine
        self._interval = float(interval)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.swept = 0
        """Agents retired by this sweeper so far."""

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="charter-sweeper", daemon=True)
            self._thread.start()
        return self

    def sweep_now(self) -> int:
        """One sweep, in the caller's thread."""
        n = self._engine.sweep()
        self.swept += n
        return n

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.sweep_now()
            except Exception:  # keep sweeping: a failed sweep frees nothing but loses nothing
                log.exception("sweep failed")

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
