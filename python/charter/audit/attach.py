"""`Engine.audit_to`, `Engine.close` and `with engine:`: turning the audit trail on and off."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import msgspec

from charter import _core, policy
from charter.audit.settings import AuditSettings, Fsync, Mode
from charter.audit.writer import AuditWriter
from charter.errors import InvalidRequestError


class AuditMixin:
    """The audit half of `charter.Engine` (mixed into it; not used on its own)."""

    _audit_writer: AuditWriter | None = None

    def audit_to(
        self,
        directory: str | os.PathLike[str],
        *,
        mode: Mode = "strict",
        fsync: Fsync = "batch",
        flush_interval: float = 0.01,
        max_file_bytes: int = 64 << 20,
        max_file_age: float = 3600.0,
        fsync_interval: float = 1.0,
        buffer_records: int = 1 << 18,
        block_timeout: float = 1.0,
        hash_key: bytes | None = None,
        host: str | None = None,
    ) -> AuditWriter:
        """Record every decision and lifecycle event in `directory` from now on; returns the writer.

        `mode="strict"` (default): a decision that cannot be recorded (buffer full past
        `block_timeout`, log unwritable) is denied with `audit_unavailable`.
        `mode="best_effort"`: keep deciding; dropped records are counted and reported in the log.
        `fsync`: `"batch"` (every batch, one fsync for all pending: group commit), `"interval"`
        (every `fsync_interval` seconds) or `"never"` (left to the OS). Files rotate past
        `max_file_bytes` or `max_file_age` seconds. A crash loses at most the records of the last
        `flush_interval` (plus the batch being written). `host` names this host in every file's
        header (default: the hostname). See docs/audit.md.
        """
        settings = AuditSettings(
            mode=mode,
            fsync=fsync,
            flush_interval=flush_interval,
            max_file_bytes=max_file_bytes,
            max_file_age=max_file_age,
            fsync_interval=fsync_interval,
            buffer_records=buffer_records,
            block_timeout=block_timeout,
            host=host,
        )
        return self._start_audit(directory, settings, hash_key)

    def _start_audit(
        self, directory: str | os.PathLike[str], settings: AuditSettings, hash_key: bytes | None = None
    ) -> AuditWriter:
        if self._audit_writer is not None and not self._audit_writer.closed:
            raise InvalidRequestError(
                f"this engine already audits to {self._audit_writer.directory}; close() it first"
            )
        core: _core.Engine = self  # type: ignore[assignment]
        writer = AuditWriter(core, Path(directory), settings, hash_key=hash_key)
        core._attach_audit(writer.sink)
        writer.start()
        self._audit_writer = writer
        return writer

    @property
    def audit_writer(self) -> AuditWriter | None:
        """The writer of the audit trail, or None when auditing is off."""
        return self._audit_writer

    def audit_status(self) -> dict[str, Any] | None:
        """The writer's counters (records, bytes, batches, fsyncs, dropped, pending, ...), or None."""
        return None if self._audit_writer is None else self._audit_writer.status()

    def audit_event(self, kind: str, **fields: Any) -> bool:
        """Record an event of your own (e.g. `key_rotation`) in the audit trail; False if auditing is off."""
        if not kind or kind in ("decision", "file", "seal"):
            raise InvalidRequestError(f"{kind!r} cannot be an event kind")
        core: _core.Engine = self  # type: ignore[assignment]
        return core._audit_event(kind, msgspec.json.encode(fields).decode())

    def flush_audit(self, timeout: float = 10.0) -> None:
        """Return once every decision made so far is written to the audit log."""
        if self._audit_writer is not None:
            self._audit_writer.flush(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Flush and close the audit trail (if any). Idempotent.

        After `close`, a strict engine denies every decision (`audit_unavailable`): it can no
        longer record them. Raises `charter.errors.AuditError` if records could not be written.
        """
        writer = self._audit_writer
        if writer is not None:
            writer.close(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        self.close()
        return False


def start_policy_audit(engine: AuditMixin, table: policy.Audit | None, source: str | None) -> None:
    """Start auditing as a policy's `[audit]` table says, if it names a `directory`.

    A relative directory is taken relative to the policy file's directory.
    """
    if table is None or table.directory is None:
        return
    directory = Path(table.directory)
    if not directory.is_absolute() and source is not None:
        directory = Path(source).parent / directory
    durations = {
        name: None
        if getattr(table, name) is None
        else policy.parse_duration(getattr(table, name), f"audit.{name}")
        for name in ("flush_interval", "fsync_interval", "max_file_age", "block_timeout")
    }
    settings = AuditSettings.merged(
        None,
        mode=table.mode,
        fsync=table.fsync,
        max_file_bytes=table.max_file_bytes,
        buffer_records=table.buffer_records,
        **durations,
    )
    engine._start_audit(directory, settings)
