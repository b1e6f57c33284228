"""The audit directory's layout: log files, the chain head, the writer's lock, the hash key.

    DIR/
      audit-<stream>-<index>.jsonl   the log, one file per rotation (index from 000000)
      HEAD                           the chain head: last sealed seq and hash (JSON, replaced atomically)
      hash.key                       key of the HMAC standing in for unloggable context values (0600)
      LOCK                           held (flock) by the one writer of the directory
      *.torn                         bytes after the last seal, moved aside when a writer recovers

Every log file starts with a header line `{"kind":"file", ...}` whose `prev` is
the chain's hash at that point; then batches of record lines, each closed by a
seal line. See docs/audit.md.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import msgspec

from charter.errors import AuditError

FORMAT_VERSION = 1
GENESIS = bytes(32)
FILE_RE = re.compile(r"^audit-(?P<stream>[0-9a-f]{8})-(?P<index>\d{6})\.jsonl$")
HEAD_NAME = "HEAD"
KEY_NAME = "hash.key"
LOCK_NAME = "LOCK"


class Head(msgspec.Struct, forbid_unknown_fields=True):
    """The chain head: the newest seal known to be on disk."""

    v: int
    stream: str
    index: int
    last_seq: int
    hash: str
    ts: int


class FileHeader(msgspec.Struct, forbid_unknown_fields=True, tag_field="kind", tag="file"):
    """A log file's first line."""

    v: int
    stream: str
    index: int
    prev: str
    first_seq: int
    created_ns: int
    host: str = ""
    """The host whose server wrote the file (files written before hosts were recorded have none)."""


class Seal(msgspec.Struct, forbid_unknown_fields=True, tag_field="kind", tag="seal"):
    """The line closing a batch: `hash = SHA-256(prev hash || header? || record lines)`."""

    first: int
    last: int
    count: int
    hash: str


def file_name(stream: int, index: int) -> str:
    return f"audit-{stream:08x}-{index:06d}.jsonl"


def log_files(directory: Path) -> list[tuple[str, int, Path]]:
    """(stream, index, path) of every log file, by stream then index."""
    found = []
    for p in directory.iterdir():
        m = FILE_RE.match(p.name)
        if m:
            found.append((m["stream"], int(m["index"]), p))
    return sorted(found, key=lambda f: (f[0], f[1]))


def read_head(directory: Path) -> Head | None:
    try:
        raw = (directory / HEAD_NAME).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise AuditError(f"cannot read {directory / HEAD_NAME}: {err.strerror or err}") from None
    try:
        return msgspec.json.decode(raw, type=Head)
    except (msgspec.DecodeError, ValueError) as err:
        raise AuditError(f"{directory / HEAD_NAME} is not a valid chain head: {err}") from None


def write_head(directory: Path, head: Head) -> None:
    """Replace HEAD atomically and durably (temp file, fsync, rename, fsync of the directory)."""
    tmp = directory / f".{HEAD_NAME}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, msgspec.json.encode(head) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, directory / HEAD_NAME)
    fsync_dir(directory)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def hash_key(directory: Path, given: bytes | None) -> bytes:
    """The HMAC key: `given`, else the directory's own (created once, readable by its owner only)."""
    if given is not None:
        if len(given) < 16:
            raise AuditError("hash_key must be at least 16 bytes")
        return given
    path = directory / KEY_NAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) < 16:
            raise AuditError(f"{path} is too short to be a hash key") from None
        return key
    key = secrets.token_bytes(32)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


class DirectoryLock:
    """An exclusive flock on DIR/LOCK: one writer per directory, across processes."""

    def __init__(self, directory: Path) -> None:
        self._fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise AuditError(f"another writer holds {directory / LOCK_NAME}") from None

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


@dataclass
class Resumed:
    """Where a writer picks up: the stream, the next file index, the last sealed seq and hash."""

    stream: int
    next_index: int
    last_seq: int
    last_hash: bytes
    torn_bytes: int
    notes: list[str]


def _last_seal(data: bytes) -> tuple[int, Seal | None]:
    """The end offset of the last complete seal line in `data`, and the seal."""
    end = len(data)
    while end > 0:
        start = data.rfind(b"\n", 0, end - 1) + 1
        line = data[start:end]
        if line.endswith(b"\n") and line.startswith(b'{"kind":"seal"'):
            try:
                return end, msgspec.json.decode(line, type=Seal)
            except (msgspec.DecodeError, ValueError):
                pass
        end = start
    return 0, None


def resume(directory: Path) -> Resumed:
    """Find the end of the chain; move any unsealed tail of the newest file aside (`.torn`).

    A crash leaves at most one incomplete batch at the end of the newest file;
    its bytes are kept next to the log, never silently dropped.
    """
    files = log_files(directory)
    head = read_head(directory)
    notes: list[str] = []
    if not files:
        stream = int(head.stream, 16) if head else _new_stream()
        if head and head.last_seq:
            notes.append(f"HEAD says seq {head.last_seq} was sealed but there are no log files")
        return Resumed(stream, 0, head.last_seq if head else 0, GENESIS, 0, notes)
    stream_hex = head.stream if head else files[-1][0]
    ours = [f for f in files if f[0] == stream_hex] or files
    stream_hex = ours[-1][0]
    torn = 0
    for _, index, path in reversed(ours):
        data = path.read_bytes()
        end, seal = _last_seal(data)
        if end < len(data):
            aside = path.with_name(f"{path.name}.{os.getpid()}-{len(data)}.torn")
            aside.write_bytes(data[end:])
            torn += len(data) - end
            if end == 0:
                path.unlink()
                notes.append(
                    f"{path.name} held no complete batch; its {len(data)} bytes were moved to {aside.name}"
                )
            else:
                with open(path, "r+b") as f:
                    f.truncate(end)
                    f.flush()
                    os.fsync(f.fileno())
                notes.append(
                    f"{len(data) - end} bytes after the last seal of {path.name} moved to {aside.name}"
                )
            fsync_dir(directory)
        if seal is not None:
            if head and head.stream == stream_hex and head.last_seq > seal.last:
                notes.append(f"the log ends at seq {seal.last} but HEAD says seq {head.last_seq} was sealed")
            return Resumed(int(stream_hex, 16), index + 1, seal.last, bytes.fromhex(seal.hash), torn, notes)
    # Files, but not one complete batch in any of them.
    return Resumed(int(stream_hex, 16), 0, 0, GENESIS, torn, notes)


def _new_stream() -> int:
    return secrets.randbits(32) or 1
