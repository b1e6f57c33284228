"""The revocation log's records and the state they build: what is refused, in memory.

`Revocation` is one line of the log; `RevocationSet` replays records into
the sets a credential check reads (revoked jtis and agents, principals'
cutoffs, suspensions). revocations.py keeps them in a file.
"""

from __future__ import annotations

import msgspec

__all__ = ["KINDS", "Revocation", "RevocationSet", "differences"]

KINDS = ("jti", "agent", "principal", "suspend", "resume")
"""The kinds of record: one credential, an agent (and its delegates), a principal's credentials so far,
a suspension and its end."""


class Revocation(msgspec.Struct, frozen=True, omit_defaults=True):
    """One record of the log."""

    kind: str
    id: str
    at: float
    reason: str | None = None
    exp: float | None = None
    """For a `jti`: when the revoked credential expires (compaction may drop the record after it)."""

    def line(self) -> bytes:
        return msgspec.json.encode(self) + b"\n"


class RevocationSet:
    """What is refused, in memory: revoked jtis, agents, principals' cutoffs, suspensions."""

    def __init__(self) -> None:
        self.jtis: set[str] = set()
        self.agents: set[str] = set()
        self.principals: dict[str, float] = {}
        """Principal id -> the latest cutoff: its credentials issued at or before it are revoked."""
        self.suspended: dict[str, str] = {}
        """Agent or principal id -> why it is suspended (until a `resume` record)."""
        self._count = 0

    def __len__(self) -> int:
        """How many records made this state."""
        return self._count

    def apply(self, rec: Revocation) -> bool:
        """Apply one record; whether it changed what is refused or suspended."""
        self._count += 1
        if rec.kind == "jti":
            new = rec.id not in self.jtis
            self.jtis.add(rec.id)
        elif rec.kind == "agent":
            new = rec.id not in self.agents
            self.agents.add(rec.id)
        elif rec.kind == "principal":
            old = self.principals.get(rec.id)
            new = old is None or rec.at > old
            if new:
                self.principals[rec.id] = rec.at
        elif rec.kind == "suspend":
            why = rec.reason or "suspended"
            new = self.suspended.get(rec.id) != why
            self.suspended[rec.id] = why
        else:
            new = self.suspended.pop(rec.id, None) is not None
        return new

    def principal_cutoff(self, principal: str) -> float | None:
        return self.principals.get(principal)

    def as_records(self, at: float) -> list[Revocation]:
        """Records that rebuild this state (revocations dated `at`, cutoffs kept)."""
        out = [Revocation("jti", j, at) for j in self.jtis]
        out += [Revocation("agent", a, at) for a in self.agents]
        out += [Revocation("principal", p, cutoff) for p, cutoff in self.principals.items()]
        out += [Revocation("suspend", s, at, why) for s, why in self.suspended.items()]
        return out

    def _adopt(self, other: RevocationSet) -> None:
        self.jtis, self.agents, self.principals = other.jtis, other.agents, other.principals
        self.suspended, self._count = other.suspended, other._count


def differences(old: RevocationSet, new: RevocationSet, at: float) -> list[Revocation]:
    """What `new` refuses or suspends that `old` did not, and the suspensions it lifted, as records."""
    out = [Revocation("agent", a, at) for a in new.agents - old.agents]
    out += [
        Revocation("principal", p, cutoff)
        for p, cutoff in new.principals.items()
        if cutoff > old.principals.get(p, -float("inf"))
    ]
    out += [
        Revocation("suspend", s, at, why) for s, why in new.suspended.items() if old.suspended.get(s) != why
    ]
    out += [Revocation("resume", s, at) for s in old.suspended.keys() - new.suspended.keys()]
    return out
