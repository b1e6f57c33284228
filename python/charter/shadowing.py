"""Shadow evaluation: try a candidate policy on live traffic without enforcing it.

`engine.shadow(candidate)` compiles the candidate against the live engine's
agents and principals and decides every request under it too (in Rust, next
to the live decision); where the outcomes differ, the disagreement is
counted by (action, live reason, candidate reason) and, with auditing on,
written to the audit log as a `shadow_diff` event. Quotas are not charged by
the candidate, so a live quota denial counts as the policy's allow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from charter import _core, policy
from charter.errors import PolicyError


@dataclass(frozen=True)
class Disagreement:
    """Requests on one action where the live policy said `live` and the candidate `candidate`."""

    action: str
    live: str
    candidate: str
    count: int


@dataclass(frozen=True)
class ShadowReport:
    """What the shadow has seen since it was set."""

    candidate_version: str
    started_at: float
    decisions: int
    skipped: int
    disagreements: int
    by: list[Disagreement] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"candidate {self.candidate_version}: {self.disagreements} of {self.decisions} decisions differ"
            + (f" ({self.skipped} not compared)" if self.skipped else "")
        ]
        for d in sorted(self.by, key=lambda d: -d.count):
            verdict = "would allow" if d.candidate == "granted" else f"would deny ({d.candidate})"
            lines.append(f"  {d.count:>8}  {d.action}: live {d.live}, candidate {verdict}")
        return "\n".join(lines)


class ShadowMixin:
    """The shadow half of `charter.Engine` (mixed into it)."""

    def shadow(self, candidate: policy.PolicySource | None) -> str | None:
        """Decide every request under `candidate` too, without enforcing it; None stops.

        Returns the candidate's policy version. Hooks the candidate names must be registered on
        this engine. Reloads and principal changes of the live engine are followed.
        """
        core: _core.Engine = self  # type: ignore[assignment]
        if candidate is None:
            return core._set_shadow(None)
        doc, origin = policy.load(candidate)
        try:
            return core._set_shadow(policy.to_core_json(doc))
        except PolicyError as err:
            err.source = err.source or origin
            raise

    def shadow_report(self) -> ShadowReport | None:
        """What the shadow found so far, or None when no shadow is set."""
        core: _core.Engine = self  # type: ignore[assignment]
        raw: dict[str, Any] | None = core._shadow_report()
        if raw is None:
            return None
        return ShadowReport(
            candidate_version=raw["candidate_version"],
            started_at=raw["started_ns"] / 1e9,
            decisions=raw["decisions"],
            skipped=raw["skipped"],
            disagreements=raw["disagreements"],
            by=[Disagreement(a, live, cand, n) for a, live, cand, n in raw["by"]],
        )
