"""The server's counters, their `stats` snapshot, the sum over workers, and the OpenMetrics text.

Counters are plain ints and one numpy array bumped on the event loop's
thread, so counting costs a list index per decision and one `bincount` per
batch. The decision rate is the slope over the last ten one-second ticks.
"""

from __future__ import annotations

import os
import time
from collections import Counter, deque
from typing import Any

import numpy as np
import numpy.typing as npt

RATE_WINDOW = 10
"""Seconds of history behind `decisions.per_second`."""


class Stats:
    """Per-process counters. `snapshot()` is what the `stats` operation returns."""

    def __init__(self, reasons: list[str], *, worker: int | None = None) -> None:
        self.reasons = list(reasons)
        self.worker = worker
        self.started = time.monotonic()
        self.by_reason = [0] * len(reasons)
        self._batch_by_reason: npt.NDArray[np.int64] = np.zeros(len(reasons), dtype=np.int64)
        self.requests: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.connections = {"decision": 0, "admin": 0}
        self.accepted = 0
        self.refused = 0
        self.reloads_ok = 0
        self.reloads_failed = 0
        self.last_reload_error: str | None = None
        self._ticks: deque[tuple[float, int]] = deque(maxlen=RATE_WINDOW + 1)

    def decided(self, reason_code: int) -> None:
        """Count one decision."""
        self.by_reason[reason_code] += 1

    def decided_batch(self, reasons: npt.NDArray[np.uint8]) -> None:
        """Count a batch of decisions by their reason codes."""
        counts = np.bincount(reasons, minlength=len(self.reasons))
        if len(counts) > len(self._batch_by_reason):  # a code this build does not name; keep it
            self._batch_by_reason = np.resize(self._batch_by_reason, len(counts))
            self._batch_by_reason[len(self.reasons) :] = 0
        self._batch_by_reason[: len(counts)] += counts

    def total(self) -> int:
        return sum(self.by_reason) + int(self._batch_by_reason.sum())

    def tick(self) -> None:
        """Called once a second: one point of the rate window."""
        self._ticks.append((time.monotonic(), self.total()))

    def rate(self) -> float:
        if len(self._ticks) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._ticks[0], self._ticks[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def snapshot(self, *, policy_version: str, engine: dict[str, Any], workers: int) -> dict[str, Any]:
        """Everything `stats` reports for this process (see docs/server.md, Monitoring)."""
        counts = [a + int(b) for a, b in zip(self.by_reason, self._batch_by_reason, strict=False)]
        counts += [int(b) for b in self._batch_by_reason[len(self.by_reason) :]]
        names = [*self.reasons, *(f"code_{i}" for i in range(len(self.reasons), len(counts)))]
        by_reason = {name: n for name, n in zip(names, counts, strict=True) if n}
        allowed = by_reason.get("granted", 0)
        total = sum(counts)
        return {
            "pid": os.getpid(),
            "worker": self.worker,
            "workers": workers,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "policy_version": policy_version,
            "policy_reloads": {"ok": self.reloads_ok, "failed": self.reloads_failed},
            "last_reload_error": self.last_reload_error,
            "decisions": {
                "total": total,
                "allowed": allowed,
                "denied": total - allowed,
                "per_second": round(self.rate(), 1),
                "by_reason": by_reason,
            },
            "requests": dict(self.requests),
            "errors": dict(self.errors),
            "connections": {**self.connections, "accepted": self.accepted, "refused": self.refused},
            "audit_backlog": engine.get("audit_backlog"),
            "engine": engine,
        }


_ADDITIVE = ("decisions", "requests", "errors", "connections")


def _add(into: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if isinstance(value, dict):
            _add(into.setdefault(key, {}), value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            into[key] = into.get(key, 0) + value


def merge(own: dict[str, Any], workers: list[dict[str, Any]]) -> dict[str, Any]:
    """One server-wide snapshot: `own` (the supervisor's) plus the sum of the workers' counters."""
    out = dict(own)
    for section in _ADDITIVE:
        total: dict[str, Any] = {}
        for part in (own, *workers):
            _add(total, part.get(section) or {})
        out[section] = total
    out["decisions"]["per_second"] = round(out["decisions"].get("per_second", 0.0), 1)
    backlogs = [w["audit_backlog"] for w in workers if w.get("audit_backlog") is not None]
    out["audit_backlog"] = sum(backlogs) if backlogs else own.get("audit_backlog")
    out["per_worker"] = [
        {
            "worker": w["worker"],
            "pid": w["pid"],
            "decisions": w["decisions"]["total"],
            "per_second": w["decisions"]["per_second"],
            "connections": w["connections"]["decision"],
            "policy_version": w["policy_version"],
        }
        for w in workers
    ]
    return out


# ------------------------------------------------------------ OpenMetrics


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, object]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


class _Text:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_: str) -> None:
        self.lines += [f"# TYPE {name} {kind}", f"# HELP {name} {help_}"]

    def sample(self, name: str, value: float, **labels: object) -> None:
        self.lines.append(f"{name}{_labels(labels)} {value}")


def openmetrics(stats: dict[str, Any]) -> str:
    """The `stats` snapshot as an OpenMetrics text exposition (ends with `# EOF`)."""
    t = _Text()
    d = stats["decisions"]
    t.family("charter_decisions", "counter", "Decisions made, by reason (granted = allowed).")
    for reason, n in sorted(d["by_reason"].items()):
        t.sample("charter_decisions_total", n, reason=reason, allowed=str(reason == "granted").lower())
    t.family("charter_decision_rate", "gauge", f"Decisions per second over the last {RATE_WINDOW} s.")
    t.sample("charter_decision_rate", d["per_second"])
    t.family("charter_requests", "counter", "Requests received, by operation.")
    for op, n in sorted(stats["requests"].items()):
        t.sample("charter_requests_total", n, op=op)
    t.family("charter_errors", "counter", "Error frames sent, by code.")
    for code, n in sorted(stats["errors"].items()):
        t.sample("charter_errors_total", n, code=code)
    c = stats["connections"]
    t.family("charter_connections", "gauge", "Open connections, by socket.")
    for sock in ("decision", "admin"):
        t.sample("charter_connections", c.get(sock, 0), socket=sock)
    t.family("charter_connections_accepted", "counter", "Connections accepted.")
    t.sample("charter_connections_accepted_total", c.get("accepted", 0))
    t.family("charter_connections_refused", "counter", "Admin connections refused (peer uid).")
    t.sample("charter_connections_refused_total", c.get("refused", 0))
    t.family("charter_policy", "info", "The policy in force.")
    t.sample("charter_policy_info", 1, version=stats["policy_version"])
    t.family("charter_policy_reloads", "counter", "Policy reloads, by result.")
    for result, n in stats["policy_reloads"].items():
        t.sample("charter_policy_reloads_total", n, result=result)
    if stats.get("audit_backlog") is not None:
        t.family("charter_audit_backlog", "gauge", "Audit records not yet written.")
        t.sample("charter_audit_backlog", stats["audit_backlog"])
    engine = stats.get("engine") or {}
    audit = engine.get("audit")
    if isinstance(audit, dict):
        t.family("charter_audit_records", "counter", "Audit records written.")
        t.sample("charter_audit_records_total", audit.get("records", 0))
        t.family("charter_audit_dropped", "counter", "Audit records dropped (best-effort mode) or refused.")
        t.sample("charter_audit_dropped_total", audit.get("dropped", 0))
        t.family("charter_audit_failing", "gauge", "1 while the audit log cannot be written.")
        t.sample("charter_audit_failing", int(bool(audit.get("failing"))))
    if "agents" in engine:
        t.family("charter_agents", "gauge", "Live agents in the registry.")
        t.sample("charter_agents", engine["agents"])
    t.family("charter_workers", "gauge", "Worker processes serving the decision socket.")
    t.sample("charter_workers", stats["workers"])
    t.family("charter_uptime_seconds", "gauge", "Seconds since the server started.")
    t.sample("charter_uptime_seconds", stats["uptime_s"])
    return "\n".join([*t.lines, "# EOF"]) + "\n"
