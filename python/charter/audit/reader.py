"""Reading the audit log: records as msgspec structs, filtered, or as numpy columns for analysis."""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from charter import _core
from charter.audit import files
from charter.errors import InvalidRequestError

Time = int | float | dt.datetime
"""A point in time: a datetime, Unix seconds (float) or Unix nanoseconds (int above 10**15)."""


class DecisionRecord(msgspec.Struct, kw_only=True):
    """One decision as the log keeps it (see docs/audit.md for each field)."""

    seq: int
    ts: int
    kind: str
    agent: str | None
    principal: str | None
    chain: list[str]
    template: str | None
    action: str | None
    resource: str | None
    effect: str
    reason: str
    rule: str | None
    policy: str
    detail: str | None = None
    retry_after: float | None = None
    quota_remaining: int | None = None
    context: dict[str, Any] | None = None
    handle: int | None = None
    subject: str | None = None
    stream: str = ""
    host: str = ""
    """The host that wrote it (from its file's header; "" for files written before hosts were named)."""

    @property
    def decision_id(self) -> str:
        return f"{self.stream}-{self.seq}"

    @property
    def allowed(self) -> bool:
        return self.effect == "allow"


class EventRecord(msgspec.Struct, kw_only=True):
    """A lifecycle event (provision, deprovision, suspend, reload, ...) with its own fields."""

    seq: int
    ts: int
    kind: str
    fields: dict[str, Any]
    stream: str = ""
    host: str = ""


Record = DecisionRecord | EventRecord

_EVENT_BASE = {"seq", "ts", "kind"}


def parse_decision_id(decision_id: str) -> tuple[str, int]:
    """`"0a1b2c3d-42"` -> ("0a1b2c3d", 42)."""
    stream, sep, seq = decision_id.partition("-")
    if not sep or len(stream) != 8 or not seq.isdigit():
        raise InvalidRequestError(
            f"not a decision id: {decision_id!r} (expected STREAM-SEQ, e.g. 0a1b2c3d-42)"
        )
    try:
        int(stream, 16)
    except ValueError:
        raise InvalidRequestError(f"not a decision id: {decision_id!r}") from None
    return stream, int(seq)


def to_ns(t: Time) -> int:
    if isinstance(t, dt.datetime):
        if t.tzinfo is None:
            raise InvalidRequestError(
                "give an aware datetime (with a timezone), e.g. datetime.now(timezone.utc)"
            )
        return int(t.timestamp() * 1e9)
    if isinstance(t, bool) or not isinstance(t, int | float):
        raise InvalidRequestError(f"not a time: {t!r}")
    return int(t) if isinstance(t, int) and t > 10**15 else int(t * 1e9)


Directories = str | Path | Sequence[str | Path]
"""One audit directory, or several (a fleet's servers' logs, merged by time)."""


def read(
    directory: Directories,
    *,
    kind: str | None = "decision",
    agent: str | None = None,
    principal: str | None = None,
    action: str | None = None,
    effect: str | None = None,
    reason: str | None = None,
    since: Time | None = None,
    until: Time | None = None,
    decision_id: str | None = None,
) -> Iterator[Record]:
    """Records in sequence order, filtered (every filter given must match).

    `directory` may be several directories (each server's of a fleet, each
    record naming its `host`): their records are merged by time (`ts`),
    each directory's still in its own order. `kind` is `"decision"` (default), an event kind (`"provision"`, ...), or None for everything.
    `agent` matches the agent or any delegator in its chain; `principal` the root principal.
    """
    if effect not in (None, "allow", "deny"):
        raise InvalidRequestError("effect must be 'allow' or 'deny'")
    lo = to_ns(since) if since is not None else None
    hi = to_ns(until) if until is not None else None
    want_stream, want_seq = parse_decision_id(decision_id) if decision_id else (None, None)
    filters = (kind, agent, principal, action, effect, reason, lo, hi, want_stream, want_seq)
    if isinstance(directory, str | Path):
        for leaf in _dirs(Path(directory)):
            yield from _read_leaf(leaf, *filters)
        return
    if not directory:
        raise InvalidRequestError("give at least one audit directory")
    leaves = [leaf for root in directory for leaf in _dirs(Path(root))]
    yield from heapq.merge(*(_read_leaf(leaf, *filters) for leaf in leaves), key=lambda r: r.ts)


def _read_leaf(
    d: Path,
    kind: str | None,
    agent: str | None,
    principal: str | None,
    action: str | None,
    effect: str | None,
    reason: str | None,
    lo: int | None,
    hi: int | None,
    want_stream: str | None,
    want_seq: int | None,
) -> Iterator[Record]:
    """The matching records of one directory of log files, in its order."""
    for stream, _, path in _files_for(d, want_stream, want_seq):
        host = ""
        for raw in _lines(path):
            try:
                head = _decode_head(raw)
            except (msgspec.DecodeError, ValueError):
                continue  # a damaged line: `verify` reports it
            if head.kind == "file":
                host = head.host
                continue
            if head.kind == "seal" or head.seq is None:
                continue
            if want_seq is not None and head.seq != want_seq:
                continue
            if kind is not None and head.kind != kind:
                continue
            if (lo is not None and head.ts < lo) or (hi is not None and head.ts >= hi):
                continue
            record = _record(raw, stream, host)
            if record is not None and _matches(record, agent, principal, action, effect, reason):
                yield record
            if want_seq is not None:
                return


def read_columns(directory: Directories, **filters: Any) -> dict[str, npt.NDArray[Any]]:
    """Decision records as columns: `seq`, `ts` (int64 ns), `allowed` (bool), `reason` (uint8 code,
    index into `charter.REASONS`), and object arrays `agent`, `principal`, `action`, `resource`, `rule`."""
    filters.setdefault("kind", "decision")
    rows = [r for r in read(directory, **filters) if isinstance(r, DecisionRecord)]
    codes = {name: i for i, name in enumerate(_core.REASONS)}
    return {
        "seq": np.fromiter((r.seq for r in rows), dtype=np.uint64, count=len(rows)),
        "ts": np.fromiter((r.ts for r in rows), dtype=np.int64, count=len(rows)),
        "allowed": np.fromiter((r.effect == "allow" for r in rows), dtype=np.bool_, count=len(rows)),
        "reason": np.fromiter((codes.get(r.reason, 14) for r in rows), dtype=np.uint8, count=len(rows)),
        **{
            name: np.array([getattr(r, name) for r in rows], dtype=object)
            for name in ("agent", "principal", "action", "resource", "rule")
        },
    }


class _Head(msgspec.Struct):
    kind: str | None = None
    seq: int | None = None
    ts: int = 0
    host: str = ""


_decode_head = msgspec.json.Decoder(_Head).decode
_decode_decision = msgspec.json.Decoder(DecisionRecord).decode


def _record(raw: bytes, stream: str, host: str) -> Record | None:
    try:
        if raw.startswith(b'{"seq":') and b'"kind":"decision"' in raw[:64]:
            rec = _decode_decision(raw)
            rec.stream, rec.host = stream, host
            return rec
        data = msgspec.json.decode(raw)
    except (msgspec.DecodeError, ValueError):
        return None  # a damaged line: `verify` reports it
    if not isinstance(data, dict):
        return None
    return EventRecord(
        seq=data.get("seq", 0),
        ts=data.get("ts", 0),
        kind=str(data.get("kind")),
        fields={k: v for k, v in data.items() if k not in _EVENT_BASE},
        stream=stream,
        host=host,
    )


def _matches(
    r: Record,
    agent: str | None,
    principal: str | None,
    action: str | None,
    effect: str | None,
    reason: str | None,
) -> bool:
    if isinstance(r, EventRecord):
        return (agent is None or r.fields.get("agent") == agent) and (
            principal is None or r.fields.get("principal") == principal
        )
    return (
        (agent is None or r.agent == agent or agent in r.chain)
        and (principal is None or r.principal == principal)
        and (action is None or r.action == action)
        and (effect is None or r.effect == effect)
        and (reason is None or r.reason == reason)
    )


def _dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        raise InvalidRequestError(f"{root} is not a directory")
    if files.log_files(root):
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and files.log_files(p))


def _files_for(directory: Path, stream: str | None, seq: int | None) -> list[tuple[str, int, Path]]:
    found = [f for f in files.log_files(directory) if stream is None or f[0] == stream]
    if seq is None or len(found) < 2:
        return found
    # Each file's header says the seq it starts at: only the last file starting at or before `seq`.
    starts = [(_first_seq(p), f) for f in found for p in [f[2]]]
    before = [f for first, f in starts if first is not None and first <= seq]
    return before[-1:] or found


def _first_seq(path: Path) -> int | None:
    with open(path, "rb") as fh:
        line = fh.readline()
    try:
        return msgspec.json.decode(line, type=files.FileHeader).first_seq
    except (msgspec.DecodeError, ValueError):
        return None


def _lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.endswith(b"\n"):
                yield raw
