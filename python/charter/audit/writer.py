"""The audit writer: one thread per engine that drains the Rust buffer, writes, rotates and fsyncs.

The deciding threads append compact records to `charter._core.AuditSink`
(no Python objects per decision). This thread calls `sink.take`, which waits
with the GIL released and returns everything pending encoded as one batch,
sealed and chained to the previous one; so batches grow with load and one
fsync covers all of them (group commit).

Failures: in strict mode a batch that cannot be written is kept and retried
(the file is cut back to before it, so no partial batch stays), and the sink
is marked failed so that decisions, once the buffer is full, are denied at
once instead of waiting. In best-effort mode it is dropped and a
`records_dropped` event names the lost sequence range when writing resumes.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import msgspec

from charter import _core
from charter.audit import files
from charter.audit.settings import AuditSettings
from charter.errors import AuditError


class _Audited(Protocol):
    def _audit_event(self, kind: str, fields_json: str) -> bool: ...


_LIVE: weakref.WeakSet[AuditWriter] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # Interpreter exit is a clean shutdown: flush what is pending.
    for writer in list(_LIVE):
        with contextlib.suppress(AuditError):
            writer.close(timeout=5.0)


class AuditWriter:
    """Writes one engine's audit stream to `directory`. Made by `Engine.audit_to`."""

    def __init__(
        self,
        engine: _Audited,
        directory: str | os.PathLike[str],
        settings: AuditSettings,
        *,
        hash_key: bytes | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.settings = settings
        self.host = settings.host or socket.gethostname()
        """Named in every file's header (`charter.audit.read` gives it on each record)."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._lock = files.DirectoryLock(self.directory)
        except OSError as err:
            raise AuditError(
                f"cannot use {self.directory} for the audit log: {err.strerror or err}"
            ) from None
        try:
            resumed = files.resume(self.directory)
            key = files.hash_key(self.directory, hash_key)
        except BaseException:
            self._lock.release()
            raise
        self.stream = resumed.stream
        self.sink = _core.AuditSink(
            capacity=settings.buffer_records,
            strict=settings.mode == "strict",
            block_timeout=settings.block_timeout,
            stream=resumed.stream,
            first_seq=resumed.last_seq + 1,
            hash_key=key,
        )
        self._engine = weakref.ref(engine)
        self._hash = resumed.last_hash
        self._next_seq = resumed.last_seq + 1
        self._index = resumed.next_index
        self._fd = -1
        self._size = 0
        self._opened_at = 0.0
        self._synced = True
        self._last_fsync = time.monotonic()
        self._head_seq = resumed.last_seq
        # The last seq written and sealed; and the last one dealt with (written, or lost in best effort).
        self._sealed_seq = resumed.last_seq
        self._handled_seq = resumed.last_seq
        self._head_at = time.monotonic()
        self._resume_notes = resumed.notes
        self._torn_bytes = resumed.torn_bytes
        # A test seam for fault injection (disk full, I/O errors); os.write's contract.
        self.write_fn: Callable[[int, memoryview], int] = os.write
        self._stopping = threading.Event()
        self._done = threading.Event()
        self._stop_deadline = float("inf")
        self._lost: list[tuple[int, int, int, str]] = []
        self._failure: tuple[str, float, int] | None = None
        self._fatal: BaseException | None = None
        self.stats: dict[str, Any] = {
            "records": 0,
            "bytes": 0,
            "batches": 0,
            "fsyncs": 0,
            "files": 0,
            "write_errors": 0,
            "records_lost": 0,
        }
        self._thread = threading.Thread(
            target=self._run, name=f"charter-audit-{self.stream:08x}", daemon=True
        )

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        """Start the thread, after the sink was attached to the engine."""
        engine = self._engine()
        if engine is not None:
            fields: dict[str, Any] = {"stream": f"{self.stream:08x}", "first_seq": self._next_seq}
            if self._resume_notes:
                fields["recovered"] = self._resume_notes
                fields["torn_bytes"] = self._torn_bytes
            engine._audit_event("writer_started", msgspec.json.encode(fields).decode())
        _LIVE.add(self)
        self._thread.start()

    def flush(self, timeout: float = 10.0) -> None:
        """Return once everything recorded so far is written (and fsynced unless `fsync = "never"`)."""
        target = self.sink.next_seq - 1
        deadline = time.monotonic() + timeout
        while self._handled_seq < target and self._thread.is_alive():
            self.sink.request_flush()
            if time.monotonic() > deadline:
                raise AuditError(f"audit flush timed out with records up to seq {target} unwritten")
            time.sleep(0.001)
        self._raise_fatal()

    def close(self, timeout: float = 10.0) -> None:
        """Refuse new records, write everything pending, fsync, update HEAD, release the directory.

        Idempotent. Raises `AuditError` if records could not be written within `timeout`.
        """
        if not self._thread.is_alive() and self._done.is_set():
            _LIVE.discard(self)
            self._raise_fatal()
            return
        self.sink.close()
        self._stop_deadline = time.monotonic() + timeout
        self._stopping.set()
        self.sink.request_flush()
        if self._thread.is_alive():
            self._thread.join(timeout + 1.0)
        _LIVE.discard(self)
        if self._thread.is_alive():
            raise AuditError(
                f"the audit writer did not stop within {timeout}s; {self.sink.pending} records pending"
            )
        self._raise_fatal()

    @property
    def closed(self) -> bool:
        return self._done.is_set()

    def status(self) -> dict[str, Any]:
        """Counters: records, bytes, batches, fsyncs, files, write errors, lost and dropped records, pending."""
        return {
            **self.stats,
            "directory": str(self.directory),
            "stream": f"{self.stream:08x}",
            "mode": self.settings.mode,
            "fsync": self.settings.fsync,
            "pending": self.sink.pending,
            "dropped": self.sink.dropped,
            "last_seq": self._sealed_seq,
            "failing": self._failure is not None,
            "closed": self.closed,
        }

    def _raise_fatal(self) -> None:
        if self._fatal is not None:
            raise AuditError(f"the audit writer failed: {self._fatal}") from self._fatal

    # ------------------------------------------------------------------ thread

    def _run(self) -> None:
        try:
            while True:
                stopping = self._stopping.is_set()
                header = self._header_if_due()
                wait = 0.0 if stopping else self.settings.flush_interval
                batch = self.sink.take(self._hash, header, wait)
                if batch is None:
                    if stopping or self._engine() is None:
                        if self._has_news():
                            self._report_recovery()  # its events make one last batch
                            continue
                        break
                    self._idle_duties()
                    continue
                self._commit(batch, bool(header))
        except BaseException as err:  # never die silently: report it, and let strict mode deny
            self._fatal = err
            self.sink.set_failed(True)
            self.sink.close()
        finally:
            try:
                self._finish()
            finally:
                self._done.set()

    def _header_if_due(self) -> bytes:
        """A new file's header line if the next batch starts a file, else b""."""
        due = (
            self._fd < 0
            or self._size == 0
            or self._size >= self.settings.max_file_bytes
            or time.monotonic() - self._opened_at >= self.settings.max_file_age
        )
        if not due:
            return b""
        index = self._index if (self._fd < 0 or self._size == 0) else self._index + 1
        header = files.FileHeader(
            v=files.FORMAT_VERSION,
            stream=f"{self.stream:08x}",
            index=index,
            prev=self._hash.hex(),
            first_seq=self._next_seq,
            created_ns=time.time_ns(),
            host=self.host,
        )
        return msgspec.json.encode(header) + b"\n"

    def _open_next(self) -> None:
        if self._fd >= 0 and self._size == 0:
            return  # an empty file (its first batch was dropped): reuse it
        if self._fd >= 0:
            self._sync(force=True)
            os.close(self._fd)
            self._fd = -1
            self._index += 1
            self._update_head(force=True)
        path = self.directory / files.file_name(self.stream, self._index)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        files.fsync_dir(self.directory)
        self._size = 0
        self._opened_at = time.monotonic()
        self.stats["files"] += 1

    def _commit(self, batch: tuple[bytes, int, int, int, bytes], new_file: bool) -> None:
        data, first, last, count, new_hash = batch
        self._next_seq = last + 1
        retries = 0
        while True:
            try:
                if new_file:
                    self._open_next()
                self._write_all(data)
                break
            except OSError as err:
                self.stats["write_errors"] += 1
                self._cut_back()
                message = f"{type(err).__name__}: {err.strerror or err}"
                if self.settings.mode == "best_effort":
                    self._lost.append((first, last, count, message))
                    self.stats["records_lost"] += count
                    self._handled_seq = last
                    return
                if self._failure is None:
                    self._failure = (message, time.monotonic(), 0)
                    self.sink.set_failed(True)
                retries += 1
                self._failure = (message, self._failure[1], retries)
                if self._stopping.is_set() and time.monotonic() >= self._stop_deadline:
                    raise AuditError(
                        f"{count} records (seq {first}..{last}) could not be written: {message}"
                    ) from err
                time.sleep(min(0.001 * 2**retries, 0.5))
        self._size += len(data)
        self._hash = new_hash
        self._sealed_seq = self._handled_seq = last
        self._synced = False
        self.stats["records"] += count
        self.stats["bytes"] += len(data)
        self.stats["batches"] += 1
        if self.settings.fsync == "batch":
            self._sync()
        elif self.settings.fsync == "interval":
            self._sync_if_due()
        self._update_head()
        self._report_recovery()

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self.write_fn(self._fd, view)
            if n <= 0:
                raise OSError(0, "write returned no progress")
            view = view[n:]

    def _cut_back(self) -> None:
        """Remove a partly written batch, so the file ends at its last seal again."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)

    def _report_recovery(self) -> None:
        """After a write succeeds: say what went wrong before, as events in the log itself."""
        engine = self._engine()
        if engine is None:
            return
        if self._failure is not None:
            message, since, retries = self._failure
            self._failure = None
            self.sink.set_failed(False)
            event = {"error": message, "seconds": round(time.monotonic() - since, 3), "retries": retries}
            engine._audit_event("audit_error", msgspec.json.encode(event).decode())
        for first, last, count, message in self._lost:
            event = {"count": count, "first": first, "last": last, "why": f"write failed: {message}"}
            engine._audit_event("records_dropped", msgspec.json.encode(event).decode())
        self._lost.clear()
        dropped = self.sink.take_dropped()
        if dropped:
            event = {"count": dropped, "why": "the audit buffer was full"}
            engine._audit_event("records_dropped", msgspec.json.encode(event).decode())

    def _has_news(self) -> bool:
        """Losses or drops not yet reported in the log (and a writable log to report them in)."""
        return bool(self._lost) or (self._failure is None and self.sink.dropped > 0)

    def _idle_duties(self) -> None:
        if self.settings.fsync == "interval":
            self._sync_if_due()
        self._update_head()
        if self._has_news():
            # Nothing to write, but drops to report: the event itself makes the next batch.
            self._report_recovery()

    def _sync_if_due(self) -> None:
        if time.monotonic() - self._last_fsync >= self.settings.fsync_interval:
            self._sync()

    def _sync(self, *, force: bool = False) -> None:
        if self._fd >= 0 and (not self._synced or force):
            os.fdatasync(self._fd)
            self.stats["fsyncs"] += 1
            self._synced = True
            self._last_fsync = time.monotonic()

    def _update_head(self, *, force: bool = False) -> None:
        """Move HEAD to the newest seal, at most every `head_interval` (always on rotation and close)."""
        sealed = self._sealed_seq
        if sealed == self._head_seq:
            return
        if not force and time.monotonic() - self._head_at < self.settings.head_interval:
            return
        self._sync()  # HEAD never points past what is on disk
        head = files.Head(
            v=files.FORMAT_VERSION,
            stream=f"{self.stream:08x}",
            index=self._index,
            last_seq=sealed,
            hash=self._hash.hex(),
            ts=time.time_ns(),
        )
        files.write_head(self.directory, head)
        self._head_seq = sealed
        self._head_at = time.monotonic()

    def _finish(self) -> None:
        self.sink.finish()
        try:
            if self._fd >= 0:
                self._sync(force=True)
                self._update_head(force=True)
                os.close(self._fd)
                self._fd = -1
        finally:
            self._lock.release()
