"""Policy test coverage: which entries, conditions and guards the cases exercised.

Counted from each decision's explanation: an entry is exercised when a case's action and
resource matched it at a level the decision examined (levels from the subject's own up to
the one that decided), a condition when it was evaluated there (true, false or error), a
guard when it was checked (every level allowed, up to the first guard that failed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from charter.policytools.model import PolicyModel


@dataclass
class Coverage:
    """What the cases exercised; the policy's entries, conditions and guards by path."""

    allows: dict[str, int]
    denies: dict[str, int]
    guards: dict[str, int]
    conditions: dict[str, set[str]]

    @classmethod
    def of(cls, model: PolicyModel) -> Coverage:
        entries = model.all_entries
        conditions = [f"{e.rule}.when" for e in entries if e.when] + [
            f"{g.rule}.require" for g in model.guards
        ]
        return cls(
            {e.rule: 0 for e in entries if e.effect == "allow"},
            {e.rule: 0 for e in entries if e.effect == "deny"},
            {g.rule: 0 for g in model.guards},
            {c: set() for c in conditions},
        )

    def record(self, explanation: Mapping[str, Any]) -> None:
        """Count what one decision's explanation shows it examined."""
        decision = explanation["decision"]
        if decision["reason"] not in _ROLE_STAGE:
            return
        for level in explanation.get("chain") or []:
            for e in level.get("entries") or []:
                if e["matched"]:
                    (self.allows if e["effect"] == "allow" else self.denies)[e["rule"]] += 1
                    if e.get("condition"):
                        self.conditions[f"{e['rule']}.when"].add(e["condition"])
            if level.get("outcome") != "allow":
                return  # the first level that does not allow decides; the rest are not consulted
        failed = decision["rule"] if decision["reason"] == "guard_failed" else None
        for g in explanation.get("guards") or []:
            if g["matched"]:
                self.guards[g["rule"]] += 1
                if g.get("condition"):
                    self.conditions[f"{g['rule']}.require"].add(g["condition"])
            if g["rule"] == failed:
                return  # guards after the first failing one are not checked

    @property
    def missing(self) -> dict[str, list[str]]:
        """Per kind, what no case exercised; `conditions_*` list conditions seen only one way."""
        return {
            "allow": [r for r, n in self.allows.items() if not n],
            "deny": [r for r, n in self.denies.items() if not n],
            "guards": [r for r, n in self.guards.items() if not n],
            "conditions": [c for c, seen in self.conditions.items() if not seen],
            "conditions_never_true": [
                c for c, seen in self.conditions.items() if seen and "true" not in seen
            ],
            "conditions_never_false": [c for c, seen in self.conditions.items() if seen and seen == {"true"}],
        }

    def to_dict(self) -> dict[str, Any]:
        def part(counts: Mapping[str, Any]) -> dict[str, int]:
            return {"total": len(counts), "covered": sum(1 for v in counts.values() if v)}

        return {
            "allow": part(self.allows),
            "deny": part(self.denies),
            "guards": part(self.guards),
            "conditions": part(self.conditions),
            "missing": self.missing,
        }


_ROLE_STAGE = frozenset(
    {
        "granted",
        "denied_by_rule",
        "no_grant",
        "condition_failed",
        "hook_denied",
        "hook_error",
        "delegator_denied",
        "guard_failed",
        "rate_limited",
        "budget_exhausted",
        "concurrency_limit",
    }
)
