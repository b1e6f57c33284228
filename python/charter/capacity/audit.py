"""The audit trail during a run: on when the scenario says so and the engine has it.

`Engine.audit_to(directory, ...)` and `Engine.close()` are being added to the
engine; until they exist a run with `audit = true` reports "audit not
available" instead of a figure.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

AUDIT_SETTINGS: dict[str, Any] = {"mode": "strict", "fsync": "batch", "flush_interval": 0.01}
"""What a run audits with: every decision recorded, fsynced in batches every 10 ms."""


def available(engine: object) -> bool:
    """Whether this engine can write an audit trail."""
    return hasattr(engine, "audit_to")


def enable(engine: object, directory: str | os.PathLike[str]) -> bool:
    """Start auditing into `directory` (created); False when the engine has no audit trail."""
    if not available(engine):
        return False
    Path(directory).mkdir(parents=True, exist_ok=True)
    engine.audit_to(str(directory), **AUDIT_SETTINGS)  # type: ignore[attr-defined]
    return True


def close(engine: object) -> None:
    """Flush and close the engine's audit trail, if it has one."""
    closer = getattr(engine, "close", None)
    if callable(closer):
        closer()


def directory_bytes(directory: str | os.PathLike[str]) -> int:
    """Bytes in every file under `directory`."""
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            with contextlib.suppress(OSError):  # rotated away while we looked
                total += os.path.getsize(os.path.join(root, name))
    return total
