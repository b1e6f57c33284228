"""A decision record in words: what `charter audit why` prints."""

from __future__ import annotations

import datetime as dt

from charter import _core
from charter.audit.reader import DecisionRecord, EventRecord


def describe(record: DecisionRecord | EventRecord) -> str:
    """A few lines a person can read: who asked what, the verdict, why, and under which policy."""
    when = dt.datetime.fromtimestamp(record.ts / 1e9, tz=dt.UTC).isoformat(timespec="microseconds")
    if isinstance(record, EventRecord):
        fields = ", ".join(f"{k}={v}" for k, v in record.fields.items())
        return f"Event {record.stream}-{record.seq} at {when}: {record.kind}" + (
            f" ({fields})" if fields else ""
        )
    lines = [f"Decision {record.decision_id} at {when}"]
    if record.agent is not None:
        who = f"agent {record.agent} (template {record.template})"
        if record.chain:
            who += ", acting for " + " -> ".join(record.chain)
    elif record.principal is not None:
        who = f"principal {record.principal}"
    elif record.subject is not None:
        who = f"unknown subject {record.subject!r}"
    else:
        who = f"unknown agent handle {record.handle}"
    on = f" on {record.resource}" if record.resource is not None else " (no resource)"
    lines.append(f"  {who} asked {record.action}{on}")
    verdict = "ALLOWED" if record.allowed else "DENIED"
    lines.append(f"  {verdict}: {record.reason}: {_sentence(record.reason)}")
    if record.rule is not None:
        lines.append(f"  decided by {record.rule}")
    if record.detail:
        lines.append(f"  detail: {record.detail}")
    if record.retry_after is not None:
        lines.append(f"  retry after: {record.retry_after:.3f}s")
    if record.quota_remaining is not None:
        lines.append(f"  quota left after it: {record.quota_remaining}")
    if record.context:
        shown = ", ".join(f"{k}={v}" for k, v in record.context.items())
        lines.append(f"  context read: {shown}")
    lines.append(f"  policy version {record.policy}")
    return "\n".join(lines)


def _sentence(reason: str) -> str:
    try:
        return str(_core.REASON_DESCRIPTIONS[list(_core.REASONS).index(reason)])
    except ValueError:
        return "an unknown reason code (a newer Charter wrote this record)"
