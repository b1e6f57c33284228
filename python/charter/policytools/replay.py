"""`charter policy replay POLICY AUDIT_DIR`: re-decide logged decisions under another policy.

The safe way to roll out a stricter policy: what would it have changed on
real traffic? The log is replayed in sequence order on a fresh engine with
the candidate policy and a manual clock set to each record's time: provision
events register the same agents (same ids, templates, delegators, scopes and
lifetimes), deprovision/expiry/suspension/freeze events are applied, and each
decision is decided again and compared.

What cannot be replayed exactly is said, not guessed:
- context values not marked loggable were logged as keyed hashes, and keys the
  deciding entry did not read were not logged at all: a replayed decision that
  turns on a missing or hashed context value is `undecidable`;
- hooks are not run (the decision would be `hook_error`): `undecidable`;
- quotas depend on timing: like shadow evaluation, a quota denial on either
  side counts as the policy's allow;
- an agent the candidate refuses to provision (unknown template, a scope or
  lifetime it no longer allows) makes its decisions `changed`, with reason
  `provision_refused`.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

import charter
from charter import policy
from charter.audit.reader import DecisionRecord, EventRecord, read
from charter.errors import CharterError

_HASHED = re.compile(r"^hmac:[0-9a-f]{16}$")
_QUOTA = frozenset({"rate_limited", "budget_exhausted", "concurrency_limit"})
_UNREPLAYABLE = frozenset({"hook_error", "hook_denied"})


@dataclass(frozen=True)
class Change:
    """One logged decision the candidate decides otherwise."""

    decision_id: str
    subject: str
    action: str | None
    resource: str | None
    logged: str
    replayed: str
    replayed_rule: str | None


@dataclass
class ReplayReport:
    """What replaying a log under a candidate policy found."""

    candidate_version: str
    decisions: int = 0
    same: int = 0
    changed: list[Change] = field(default_factory=list)
    undecidable: Counter[str] = field(default_factory=Counter)

    @property
    def by(self) -> Counter[tuple[str | None, str, str]]:
        """Changes counted by (action, logged reason, replayed reason)."""
        return Counter((c.action, c.logged, c.replayed) for c in self.changed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate_version": self.candidate_version,
            "decisions": self.decisions,
            "same": self.same,
            "changed": [c.__dict__ for c in self.changed],
            "by": [
                {"action": a, "logged": lo, "replayed": re_, "count": n}
                for (a, lo, re_), n in self.by.items()
            ],
            "undecidable": dict(self.undecidable),
        }

    def __str__(self) -> str:
        lines = [
            f"replayed {self.decisions} decisions under {self.candidate_version}: {self.same} the same, "
            f"{len(self.changed)} changed, {sum(self.undecidable.values())} undecidable"
        ]
        for (action, logged, replayed), n in self.by.most_common():
            lines.append(f"  {n:>8}  {action}: logged {logged}, now {replayed}")
        for why, n in self.undecidable.most_common():
            lines.append(f"  {n:>8}  undecidable: {why}")
        for c in self.changed[:10]:
            on = f" {c.resource}" if c.resource else ""
            lines.append(f"  e.g. {c.decision_id}: {c.subject} {c.action}{on}: {c.logged} -> {c.replayed}")
        return "\n".join(lines)


def _allowed(reason: str) -> bool:
    return reason == "granted" or reason in _QUOTA


class _Replayer:
    def __init__(self, engine: charter.Engine, clock: charter.ManualClock) -> None:
        self.engine = engine
        self.clock = clock
        self.refused: dict[str, str] = {}  # agent id -> why the candidate refused to provision it

    def at(self, ts: int) -> None:
        delta = ts / 1e9 - self.clock.now()
        if delta > 0:
            self.clock.advance(delta)

    def event(self, e: EventRecord) -> None:
        f = e.fields
        agent = f.get("agent")
        try:
            if e.kind == "provision" and isinstance(agent, str):
                self._provision(e, agent)
            elif e.kind in ("deprovision", "expire") and isinstance(agent, str) and agent not in self.refused:
                self.engine.deprovision(agent)
            elif e.kind == "suspend":
                target = agent if isinstance(agent, str) else f.get("principal")
                if isinstance(target, str) and target not in self.refused:
                    self.engine.suspend(target, str(f.get("why", "replayed suspension")))
            elif e.kind == "resume":
                target = agent if isinstance(agent, str) else f.get("principal")
                if isinstance(target, str) and target not in self.refused:
                    self.engine.resume(target)
            elif e.kind == "freeze":
                self.engine.freeze()
            elif e.kind == "unfreeze":
                self.engine.unfreeze()
            elif e.kind == "principal_remove" and isinstance(f.get("principal"), str):
                self.engine.remove_principal(str(f["principal"]))
        except CharterError:
            pass  # the candidate does not know the subject: its decisions will say so

    def _provision(self, e: EventRecord, agent: str) -> None:
        f = e.fields
        chain = f.get("chain") or []
        expires = f.get("expires_at")
        ttl = None if expires is None else max(1e-9, (int(expires) - e.ts) / 1e9)
        scope = f.get("scope")
        try:
            self.engine.provision(
                str(f.get("template")),
                on_behalf_of=chain[0] if chain else None,
                ttl=ttl,
                agent_id=agent,
                scope=list(scope) if isinstance(scope, list) else None,
            )
        except CharterError as err:
            self.refused[agent] = str(err)

    def decide(self, r: DecisionRecord) -> tuple[str, str | None, str | None]:
        """(replayed reason, rule, why undecidable or None)."""
        subject = r.agent or r.principal or r.subject
        if subject is None:
            return r.reason, None, "the request named an agent handle no log record introduces"
        if r.agent is not None and r.agent in self.refused:
            return "provision_refused", None, None
        context: dict[str, Any] = {}
        hashed = False
        for key, value in (r.context or {}).items():
            if isinstance(value, str) and _HASHED.match(value):
                hashed = True
            else:
                context[key] = value
        d = self.engine.check(subject, r.action or "", r.resource, context or None)
        if d.reason in _UNREPLAYABLE:
            return d.reason, d.rule, "a hook decided (hooks are not run in a replay)"
        if d.detail and "missing attribute `context." in d.detail:
            why = (
                "a context value the log holds only hashed"
                if hashed
                else "a context value the log does not hold"
            )
            return d.reason, d.rule, why
        return d.reason, d.rule, None


def replay(candidate: policy.PolicySource, directory: str | os.PathLike[str]) -> ReplayReport:
    """Re-decide every decision logged in `directory` under `candidate`; see the module docstring."""
    directory = Path(directory)
    doc, _ = policy.load(candidate)
    doc = msgspec.structs.replace(doc, audit=None)  # the replay itself is not audited
    first = next(iter(read(directory, kind=None)), None)
    clock = charter.ManualClock(first.ts / 1e9 if first is not None else 0.0)
    engine = charter.Engine.from_dict(msgspec.to_builtins(doc), clock=clock, allow_missing_hooks=True)
    rp = _Replayer(engine, clock)
    report = ReplayReport(candidate_version=engine.policy_version)
    for r in read(directory, kind=None):
        rp.at(r.ts)
        if isinstance(r, EventRecord):
            rp.event(r)
            continue
        report.decisions += 1
        reason, rule, undecidable = rp.decide(r)
        if _allowed(reason) == _allowed(r.reason):
            report.same += 1
        elif undecidable is not None:
            report.undecidable[undecidable] += 1
        else:
            subject = r.agent or r.principal or r.subject or ""
            report.changed.append(
                Change(r.decision_id, subject, r.action, r.resource, r.reason, reason, rule)
            )
    return report
