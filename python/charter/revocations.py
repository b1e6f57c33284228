"""The revocation log: revoked credentials, agents and principals, and suspensions; append-only, fsynced.

The invariant it keeps is that nothing already revoked is ever admitted
again: a revocation is on disk (written and fsynced) before `add` returns, a
fresh engine reads the whole log before it authenticates anything, and no
record is ever removed. One JSON object per line:

    {"kind": "agent", "id": "agt_x", "at": 1700000000.0, "reason": "leaked"}

`kind` is `jti` (one credential), `agent` (an agent and, through the
delegation chain, every agent acting for it), `principal` (every
credential issued for the principal's agents up to `at`), or `suspend` /
`resume` (an agent or principal suspended until resumed: the one kind of
record a later one undoes).
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import msgspec

from charter.errors import StorageError

__all__ = ["KINDS", "Revocation", "RevocationLog"]

KINDS = ("jti", "agent", "principal", "suspend", "resume")


class Revocation(msgspec.Struct, frozen=True, omit_defaults=True):
    """One record of the log."""

    kind: str
    id: str
    at: float
    reason: str | None = None

    def line(self) -> bytes:
        return msgspec.json.encode(self) + b"\n"


class RevocationLog:
    """What has been revoked, in memory, and (with a `path`) in an append-only file.

    Without a path the log lives in memory only (tests, throwaway engines).
    Several processes may append to one file; `sync()` reads what the others
    added since this one last looked.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.jtis: set[str] = set()
        self.agents: set[str] = set()
        self.principals: dict[str, float] = {}
        """Principal id -> the latest cutoff: its credentials issued at or before it are revoked."""
        self.suspended: dict[str, str] = {}
        """Agent or principal id -> why it is suspended (until a `resume` record)."""
        self._count = 0
        self._offset = 0
        self._lock = threading.Lock()
        if self.path is not None:
            self._open()

    def __len__(self) -> int:
        return self._count

    def _open(self) -> None:
        assert self.path is not None
        created = not self.path.exists()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as err:
            raise StorageError(f"cannot open the revocation log `{self.path}`: {err.strerror}") from None
        try:
            if created:
                _fsync_dir(self.path.parent)
            self._read(fd, repair=True)
        finally:
            os.close(fd)

    def _read(self, fd: int, *, repair: bool) -> int:
        """Apply the records from `self._offset` on; returns how many. Caller holds the lock or owns the log."""
        size = os.fstat(fd).st_size
        if size <= self._offset:
            return 0
        data = os.pread(fd, size - self._offset, self._offset)
        end = data.rfind(b"\n") + 1
        if end < len(data) and repair:
            # A torn last line: the writer died before its fsync, so its revoke() never returned.
            os.ftruncate(fd, self._offset + end)
            os.fsync(fd)
        added = 0
        for lineno, line in enumerate(data[:end].splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = msgspec.json.decode(line, type=Revocation)
                if rec.kind not in KINDS or not rec.id:
                    raise ValueError(f"unknown kind `{rec.kind}`")
            except (msgspec.DecodeError, ValueError) as err:
                # Fail closed: a log we cannot read completely might be hiding a revocation.
                raise StorageError(
                    f"revocation log `{self.path}`: unreadable record after byte {self._offset} "
                    f"(line {lineno} of the new part): {err}"
                ) from None
            self._apply(rec)
            added += 1
        self._offset += end
        return added

    def _apply(self, rec: Revocation) -> None:
        self._count += 1
        if rec.kind == "jti":
            self.jtis.add(rec.id)
        elif rec.kind == "agent":
            self.agents.add(rec.id)
        elif rec.kind == "principal":
            self.principals[rec.id] = max(rec.at, self.principals.get(rec.id, rec.at))
        elif rec.kind == "suspend":
            self.suspended[rec.id] = rec.reason or "suspended"
        else:
            self.suspended.pop(rec.id, None)

    def add(self, kind: str, ident: str, *, at: float, reason: str | None = None) -> None:
        """Record one revocation (see `add_many`)."""
        self.add_many([(kind, ident)], at=at, reason=reason)

    def add_many(
        self,
        records: Sequence[tuple[str, str]],
        *,
        at: float,
        reason: str | None = None,
        persist: bool = True,
    ) -> None:
        """Record revocations `(kind, id)`: in memory at once, then appended and fsynced (one fsync).

        `persist=False` keeps them in memory only (this process refuses them,
        a restart forgets them). Raises `StorageError` if the file cannot be
        written; the revocations still hold in this process.
        """
        recs = []
        for kind, ident in records:
            if kind not in KINDS:
                raise ValueError(f"kind must be one of {KINDS}")
            if not isinstance(ident, str) or not ident:
                raise ValueError("a revocation names a non-empty id")
            recs.append(Revocation(kind, ident, float(at), reason))
        with self._lock:
            for rec in recs:
                self._apply(rec)
            if self.path is None or not persist:
                return
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            except OSError as err:
                raise StorageError(f"cannot append to `{self.path}`: {err.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # other processes appending to the same log wait
                self._read(fd, repair=False)  # their records first, so our offset stays exact
                data = b"".join(rec.line() for rec in recs)
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(f"short write ({written} of {len(data)} bytes)")
                os.fsync(fd)
                self._offset += written
            except OSError as err:
                raise StorageError(f"cannot append to `{self.path}`: {err}") from None
            finally:
                os.close(fd)

    def sync(self) -> int:
        """Read records other processes appended since; returns how many."""
        if self.path is None:
            return 0
        with self._lock:
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except OSError as err:
                raise StorageError(f"cannot read `{self.path}`: {err.strerror}") from None
            try:
                return self._read(fd, repair=False)
            finally:
                os.close(fd)

    def principal_cutoff(self, principal: str) -> float | None:
        return self.principals.get(principal)


def _fsync_dir(directory: Path) -> None:
    """Make a new file's directory entry durable too."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
