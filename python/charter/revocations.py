"""The revocation log: revoked credentials, agents and principals, and suspensions; append-only, fsynced.

The invariant it keeps is that nothing already revoked is ever admitted
again while it could still be presented: a revocation is on disk (written
and fsynced) before `add` returns, and a fresh engine reads the whole log
before it authenticates anything. One JSON object per line:

    {"kind": "agent", "id": "agt_x", "at": 1700000000.0, "reason": "leaked"}
    {"kind": "jti", "id": "q0dU...", "at": 1700000000.0, "exp": 1700000900.0}

`kind` is `jti` (one credential; `exp` is its expiry when known), `agent`
(an agent and, through the delegation chain, every agent acting for it),
`principal` (every credential issued for the principal's agents up to
`at`), or `suspend` / `resume` (an agent or principal suspended until
resumed: the one kind of record a later one undoes).

Sharing: several processes may append to one file. Every writer (an
append, a compaction, the repair of a torn last line) holds an exclusive
`flock` on a lock file beside the log (`.NAME.lock`, which is never
replaced), opens the log only then, reads what the others added, then
writes and fsyncs. Readers need no lock: records are whole lines, and a
reader keeps the file it read open, so a replacement file always has
another inode. `sync()` reads what others appended since (a `stat` says
whether there is anything to read). Compaction (`compact`, and
automatically once the file passes `Compaction.above` bytes) rewrites the
file without the records that no longer matter (revocation_compaction.py),
crash-safely; a process that finds another file at the path reads it from
the start.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from charter.errors import StorageError
from charter.revocation_compaction import (
    Compaction,
    CompactionReport,
    compact_records,
    fsync_dir,
    rewrite,
)
from charter.revocation_records import KINDS, Revocation, RevocationSet, differences

__all__ = ["KINDS", "Compaction", "CompactionReport", "Revocation", "RevocationLog", "RevocationSet"]


log = logging.getLogger("charter.revocations")
log.addHandler(logging.NullHandler())

_UNSET: Any = object()


class RevocationLog(RevocationSet):
    """What has been revoked, in memory, and (with a `path`) in an append-only file.

    Without a path the log lives in memory only (tests, throwaway engines).
    With `track_changes`, records other processes added that change the
    state are kept for `take_changes` (an engine applies them to its registry).
    `clock` dates automatic compactions (default `time.time`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        compaction: Compaction | None = Compaction(),  # noqa: B008 (frozen, so shared safely)
        clock: Callable[[], float] | None = None,
        track_changes: bool = False,
    ) -> None:
        super().__init__()
        self.path = None if path is None else Path(path)
        self.compaction = compaction
        self._clock = clock or time.time
        self._volatile: list[Revocation] = []
        """Records held in memory only (`persist=False`, or a write that failed): kept across a rebuild."""
        self._changes: list[Revocation] | None = [] if track_changes else None
        self._fd = -1
        """The file read so far, kept open (so no other file can get its inode number)."""
        self._file = (0, 0)
        """Its (device, inode)."""
        self._closer: weakref.finalize[..., Any] | None = None
        self._offset = 0
        self._next_compaction = None if compaction is None else compaction.above
        self._lock = threading.Lock()
        if self.path is not None:
            real = Path(os.path.realpath(self.path))
            self._real = real
            self._lock_path = real.with_name(f".{real.name}.lock")
            self._open()

    def close(self) -> None:
        """Close the log file (the log keeps its state in memory; a closed log may not be written)."""
        with self._lock:
            if self._closer is not None:
                self._closer()

    # ------------------------------------------------------------ the file

    @contextlib.contextmanager
    def _exclusive(self, what: str) -> Iterator[None]:
        """Hold the lock file every writer of this log takes (module docstring)."""
        try:
            fd = self._open_lock_file()
        except OSError as err:
            raise StorageError(f"cannot {what} `{self.path}`: lock file: {err.strerror or err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _open_lock_file(self) -> int:
        """The lock file, opened read-only (enough to `flock`). Created with the log's mode and
        owner, so exactly the processes that may write the log may hold its lock."""
        with contextlib.suppress(FileNotFoundError):
            return os.open(self._lock_path, os.O_RDONLY)
        log_stat = os.stat(self._real)
        mode = log_stat.st_mode & 0o666
        fd = os.open(self._lock_path, os.O_RDONLY | os.O_CREAT, mode)
        with contextlib.suppress(OSError):
            if os.fstat(fd).st_uid == os.geteuid():
                os.fchmod(fd, mode)  # whatever the umask took away
                if os.geteuid() == 0:
                    os.fchown(fd, log_stat.st_uid, log_stat.st_gid)
        return fd

    def _open_current(self, what: str) -> tuple[int, os.stat_result]:
        """The file at the path now (never created here: a log that vanished is an error, not empty)."""
        assert self.path is not None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        except OSError as err:
            raise StorageError(f"cannot {what} `{self.path}`: {err.strerror}") from None
        return fd, os.fstat(fd)

    def _keep(self, fd: int, st: os.stat_result, offset: int) -> None:
        """Make `fd` the file this log reads (closing the one before)."""
        if self._closer is not None:
            self._closer()
        self._fd, self._file, self._offset = fd, (st.st_dev, st.st_ino), offset
        self._closer = weakref.finalize(self, os.close, fd)

    def _open(self) -> None:
        assert self.path is not None
        if not self.path.exists():
            try:
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            except OSError as err:
                raise StorageError(
                    f"cannot create the revocation log `{self.path}`: {err.strerror}"
                ) from None
            fsync_dir(self.path.parent)
        with self._exclusive("open the revocation log"):
            fd, st = self._open_current("open the revocation log")
            self._keep(fd, st, 0)
            self._read(repair=True, track=False)

    def _catch_up(self) -> int:
        """With the lock held: read what others wrote since (all of it if the file was replaced).

        Holding the lock, a torn last line can only be a dead writer's, so it is cut off before
        anything is appended after it."""
        fd, st = self._open_current("read")
        if (st.st_dev, st.st_ino) == self._file and st.st_size >= self._offset:
            os.close(fd)
            return self._read(repair=True, track=True)
        return self._rebuild(fd, st, repair=True)

    def _read(self, *, repair: bool, track: bool) -> int:
        """Apply the records from `self._offset` on; returns how many."""
        fd = self._fd
        size = os.fstat(fd).st_size
        if size <= self._offset:
            return 0
        data = os.pread(fd, size - self._offset, self._offset)
        end = data.rfind(b"\n") + 1
        if end < len(data) and repair:
            # A torn last line: the writer died before its fsync, so its revoke() never returned.
            os.ftruncate(fd, self._offset + end)
            os.fsync(fd)
        records = self._parse(data[:end], self._offset)
        changes = self._changes if track else None
        for rec in records:
            if self.apply(rec) and changes is not None and rec.kind != "jti":
                changes.append(rec)
        self._offset += end
        return len(records)

    def _parse(self, data: bytes, offset: int) -> list[Revocation]:
        records = []
        for lineno, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = msgspec.json.decode(line, type=Revocation)
                if rec.kind not in KINDS or not rec.id:
                    raise ValueError(f"unknown kind `{rec.kind}`")
            except (msgspec.DecodeError, ValueError) as err:
                # Fail closed: a log we cannot read completely might be hiding a revocation.
                raise StorageError(
                    f"revocation log `{self.path}`: unreadable record after byte {offset} "
                    f"(line {lineno} of the new part): {err}"
                ) from None
            records.append(rec)
        return records

    def _rebuild(self, fd: int, st: os.stat_result, *, repair: bool = False) -> int:
        """Another file is at the path (a compaction): rebuild the state from it and the memory-only
        records; `fd` becomes the file this log reads. `repair`: cut off a torn last line."""
        try:
            data = os.pread(fd, st.st_size, 0)
            end = data.rfind(b"\n") + 1
            records = self._parse(data[:end], 0)
            if end < len(data) and repair:
                os.ftruncate(fd, end)
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._keep(fd, st, end)
        self._replace_state([*records, *self._volatile])
        return len(records)

    def _replace_state(self, records: Sequence[Revocation]) -> None:
        fresh = RevocationSet()
        for rec in records:
            fresh.apply(rec)
        if self._changes is not None:
            self._changes += differences(self, fresh, self._clock())
        self._adopt(fresh)

    def sync(self) -> int:
        """Read records other processes appended since (or a compaction rewrote); returns how many.

        A `stat` first: while the file is the one we read, as long as we read
        it, this costs one system call.
        """
        if self.path is None:
            return 0
        with self._lock:
            try:
                st = os.stat(self.path)
            except OSError as err:
                raise StorageError(f"cannot read `{self.path}`: {err.strerror}") from None
            if (st.st_dev, st.st_ino) == self._file and st.st_size >= self._offset:
                return 0 if st.st_size == self._offset else self._read(repair=False, track=True)
            fd, st = self._open_current("read")  # a replacement is complete when renamed: no lock needed
            return self._rebuild(fd, st)

    def absorb(self, other: RevocationSet, *, at: float) -> None:
        """Hold everything `other` refuses or suspends, in memory only (revocations dated `at`)."""
        self.absorb_records(other.as_records(at))

    def absorb_records(self, records: Sequence[Revocation]) -> None:
        """Hold `records` in memory only."""
        with self._lock:
            self._hold(records)

    def held_in_memory(self) -> list[Revocation]:
        """The records this log holds in memory only (not in its file)."""
        with self._lock:
            return list(self._volatile)

    def set_compaction(self, compaction: Compaction | None) -> None:
        """Change when and how this log is compacted (`None`: only when `compact` is called)."""
        with self._lock:
            self.compaction = compaction
            self._next_compaction = None if compaction is None else compaction.above

    def take_changes(self) -> list[Revocation]:
        """Records read from other processes that changed the state since the last call (`track_changes`)."""
        with self._lock:
            if not self._changes:
                return []
            out, self._changes = self._changes, []
            return out

    # ------------------------------------------------------------ writing

    def add(self, kind: str, ident: str, *, at: float, reason: str | None = None) -> None:
        """Record one revocation (see `add_many`)."""
        self.add_many([(kind, ident)], at=at, reason=reason)

    def add_many(
        self,
        records: Sequence[tuple[str, str] | tuple[str, str, float | None]],
        *,
        at: float,
        reason: str | None = None,
        persist: bool = True,
    ) -> None:
        """Record revocations `(kind, id)` or `(kind, id, exp)`: in memory at once, then appended and
        fsynced (one fsync).

        `exp` (for a `jti`) is when the revoked credential expires. `persist=False`
        keeps them in memory only (this process refuses them, a restart
        forgets them). Raises `StorageError` if the file cannot be written;
        the revocations still hold in this process.
        """
        recs = []
        for kind, ident, *exp in records:
            if kind not in KINDS:
                raise ValueError(f"kind must be one of {KINDS}")
            if not isinstance(ident, str) or not ident:
                raise ValueError("a revocation names a non-empty id")
            expires = exp[0] if exp else None
            recs.append(
                Revocation(kind, ident, float(at), reason, None if expires is None else float(expires))
            )
        with self._lock:
            if self.path is None or not persist:
                self._hold(recs)
                return
            applied = written = False
            try:
                with self._exclusive("append to"):
                    self._catch_up()  # the others' records first, so our offset stays exact
                    for rec in recs:
                        self.apply(rec)
                    applied = True
                    self._append(b"".join(rec.line() for rec in recs))
                    written = True
                    if self._next_compaction is not None and self._offset > self._next_compaction:
                        self._auto_compact()
            except OSError as err:
                raise StorageError(f"cannot append to `{self.path}`: {err}") from None
            finally:
                if not written:  # still refused here, and kept apart from what a rebuild reads
                    self._hold(recs, applied=applied)

    def _hold(self, recs: Sequence[Revocation], *, applied: bool = False) -> None:
        if not applied:
            for rec in recs:
                self.apply(rec)
        if self.path is not None:  # only a file can be rebuilt from, so only then must these be kept apart
            self._volatile += recs

    def _append(self, data: bytes) -> None:
        written = os.write(self._fd, data)
        if written != len(data):
            # Leave no partial line behind for the next writer to append to.
            os.ftruncate(self._fd, self._offset)
            raise OSError(f"short write ({written} of {len(data)} bytes)")
        os.fsync(self._fd)
        self._offset += written

    def _auto_compact(self) -> None:
        try:
            self._compact_locked(self._clock(), _UNSET, _UNSET)
        except (OSError, StorageError) as err:  # the revocation itself is on disk: report, do not fail it
            log.warning("automatic compaction of %s failed: %s", self.path, err)

    # ------------------------------------------------------------ compaction

    def compact(
        self,
        *,
        now: float | None = None,
        max_lifetime: float | None = _UNSET,
        margin: float = _UNSET,
    ) -> CompactionReport:
        """Rewrite the file without the records that no longer matter at `now` (default: the clock).

        `max_lifetime` and `margin` default to this log's `Compaction`
        settings (revocation_compaction.py says what they mean). Crash-safe
        and safe against concurrent writers (module docstring). Raises
        `StorageError` if the new file cannot be written; the log is then
        unchanged. The in-memory state is rebuilt from the compacted file
        (and the records held in memory only), so it shrinks too.
        """
        if self.path is None:
            raise StorageError("this revocation log has no file to compact")
        with self._lock, self._exclusive("compact"):
            try:
                self._catch_up()
                return self._compact_locked(self._clock() if now is None else now, max_lifetime, margin)
            except OSError as err:
                raise StorageError(f"cannot compact `{self.path}`: {err}") from None

    def _compact_locked(self, now: float, max_lifetime: Any, margin: Any) -> CompactionReport:
        """Compact the file (caller holds the lock file and has caught up)."""
        settings = self.compaction or Compaction(above=None)
        lifetime = settings.max_lifetime if max_lifetime is _UNSET else max_lifetime
        skew = settings.margin if margin is _UNSET else float(margin)
        if lifetime is not None and not lifetime >= 0:
            raise StorageError("compaction: max_lifetime must be at least 0 seconds")
        if not skew >= 0:
            raise StorageError("compaction: margin must be at least 0 seconds")
        size = self._offset
        records = self._parse(os.pread(self._fd, size, 0), 0)
        kept = compact_records(records, now=now, max_lifetime=lifetime, margin=skew)
        data = b"".join(rec.line() for rec in kept)
        fd, st = rewrite(self._real, data, os.fstat(self._fd).st_mode & 0o777)
        self._keep(fd, st, len(data))
        self._volatile = compact_records(self._volatile, now=now, max_lifetime=lifetime, margin=skew)
        self._replace_state([*kept, *self._volatile])
        if settings.above is not None:
            self._next_compaction = max(settings.above, 2 * len(data))
        report = CompactionReport(len(records), len(kept), size, len(data))
        log.info(
            "compacted %s: %d -> %d records, %d -> %d bytes",
            self.path,
            report.records_before,
            report.records_after,
            report.bytes_before,
            report.bytes_after,
        )
        return report
