"""How an audit writer behaves: the keyword arguments of `Engine.audit_to`, validated once."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal

from charter.errors import InvalidRequestError

Mode = Literal["strict", "best_effort"]
Fsync = Literal["batch", "interval", "never"]


@dataclass(frozen=True)
class AuditSettings:
    """Writer settings; see docs/audit.md for what each trades."""

    mode: Mode = "strict"
    """`strict`: a decision that cannot be recorded is denied (`audit_unavailable`);
    `best_effort`: keep deciding, count and report dropped records."""
    fsync: Fsync = "batch"
    """`batch`: fsync every batch (group commit); `interval`: every `fsync_interval`; `never`: leave it to
    the OS (files are still fsynced on rotation, on close and before HEAD moves)."""
    flush_interval: float = 0.01
    """Longest a record waits in memory before the writer takes it (seconds)."""
    fsync_interval: float = 1.0
    """With `fsync = "interval"`: seconds between fsyncs."""
    max_file_bytes: int = 64 << 20
    """Rotate to a new file past this size."""
    max_file_age: float = 3600.0
    """Rotate to a new file past this age (seconds)."""
    buffer_records: int = 1 << 18
    """Records held in memory before producers wait (strict) or records are dropped (best effort)."""
    block_timeout: float = 1.0
    """Strict mode: how long a decision waits for room in a full buffer before it is denied."""
    head_interval: float = 1.0
    """Seconds between updates of the chain head (HEAD) on disk."""
    host: str | None = None
    """The name each log file's header gives this host (default: the machine's hostname), so the logs
    of a fleet's servers can be merged and still say where each decision was made."""

    def __post_init__(self) -> None:
        if self.mode not in ("strict", "best_effort"):
            raise InvalidRequestError(f"audit mode must be 'strict' or 'best_effort', got {self.mode!r}")
        if self.fsync not in ("batch", "interval", "never"):
            raise InvalidRequestError(
                f"audit fsync must be 'batch', 'interval' or 'never', got {self.fsync!r}"
            )
        for name in ("flush_interval", "fsync_interval", "max_file_age", "head_interval"):
            _positive(name, getattr(self, name))
        _positive("block_timeout", self.block_timeout, allow_zero=True)
        if not isinstance(self.max_file_bytes, int) or self.max_file_bytes < 4096:
            raise InvalidRequestError("max_file_bytes must be an integer of at least 4096")
        if self.host is not None and (not isinstance(self.host, str) or not self.host):
            raise InvalidRequestError("audit host must be a non-empty string")
        if not isinstance(self.buffer_records, int) or not 1 <= self.buffer_records <= 1 << 28:
            raise InvalidRequestError("buffer_records must be an integer between 1 and 2**28")

    @classmethod
    def merged(cls, base: AuditSettings | None = None, **overrides: Any) -> AuditSettings:
        """`base` (or the defaults) with every override that is not None."""
        values = {f.name: getattr(base or cls(), f.name) for f in fields(cls)}
        unknown = set(overrides) - set(values)
        if unknown:
            raise InvalidRequestError(f"unknown audit settings: {', '.join(sorted(unknown))}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _positive(name: str, value: object, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):  # type: ignore[operator]
        bound = "non-negative" if allow_zero else "positive"
        raise InvalidRequestError(f"{name} must be a {bound} number of seconds, got {value!r}")
