"""Which registered agents were admitted from credentials issued when: for a revocation log attached late.

A principal's revocation refuses the credentials issued for it up to a
cutoff. An engine that admitted agents before its revocation log was
attached must retire those whose credentials the log refuses, but the
registry does not know when a credential was issued, nor list a principal's
agents. This index does, for the agents `authenticate` registered: per agent,
its principal, the earliest `iat` along the credential chain it was admitted
(or refreshed) with, and until when the registry keeps it.

Entries past their expiry are pruned as the index grows (amortised: a
prune runs when the index has doubled since the last), so it holds about the
live token-admitted agents.
"""

from __future__ import annotations

from typing import Final

__all__ = ["AdmissionIndex"]

_MIN_PRUNE: Final = 4096


class AdmissionIndex:
    """Agent id -> (principal, earliest issue time on its chain, expiry in the registry)."""

    def __init__(self) -> None:
        self._agents: dict[str, tuple[str, float, float]] = {}
        self._prune_at = _MIN_PRUNE

    def __len__(self) -> int:
        return len(self._agents)

    def note(
        self, agent: str, principal: str, issued: float, until: float, now: float, *, fresh: bool
    ) -> None:
        """`agent` (acting for `principal`) was admitted from a chain issued no earlier than `issued`.

        `fresh`: it was registered just now (an earlier entry for the same id
        belonged to a retired or expired agent); otherwise it was refreshed
        and keeps its earliest issue time.
        """
        seen = self._agents.get(agent)
        if seen is not None and not fresh and seen[0] == principal:
            issued, until = min(issued, seen[1]), max(until, seen[2])
        self._agents[agent] = (principal, issued, until)
        if len(self._agents) >= self._prune_at:
            self._agents = {a: e for a, e in self._agents.items() if e[2] > now}
            self._prune_at = max(_MIN_PRUNE, 2 * len(self._agents))

    def forget(self, agent: str) -> None:
        """`agent` was retired: its entry is no longer needed."""
        self._agents.pop(agent, None)

    def issued_by(self, principal: str, cutoff: float) -> list[str]:
        """The agents acting for `principal` admitted from a chain issued at or before `cutoff`."""
        return [a for a, (p, issued, _) in self._agents.items() if p == principal and issued <= cutoff]
