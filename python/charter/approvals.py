"""Approvals: requests an allow entry grants only with someone else's say-so.

An entry with `approval = "<condition>"` and `approvers = [...]` denies a
request it would grant with reason `approval_required` while the condition
holds (or cannot be evaluated). The decision carries a `decision_id`;
`engine.approve(decision_id, approver)` (implemented in the compiled engine)
checks the approver and returns a one-time `ApprovalGrant` bound to that
exact request; the agent repeats the request with
`context={"approval": grant.token, ...}` and is allowed once. See
docs/conditions.md, "Approvals".

This module adds the listing an approver's tool needs: what is waiting, for
whom, and who may approve it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from charter import _core

ApprovalGrant = _core.ApprovalGrant
"""What `Engine.approve` returns: `token`, `expires_at`, and the request it is bound to."""


class PendingApproval(msgspec.Struct, frozen=True, kw_only=True):
    """An `approval_required` decision waiting to be approved (at most 15 minutes)."""

    decision_id: str
    """Pass it to `Engine.approve`."""
    agent: str
    """The requesting agent's id (or the principal's, if it asked directly)."""
    chain: list[str]
    """The requester's delegation chain, itself first, up to its principal: none of them may approve."""
    action: str
    resource: str | None
    rule: str | None
    """The entry asking for approval (the subject's own first, if several levels do)."""
    approvers: list[dict[str, Any]]
    """Per entry asking for approval: `rule`, and the `roles` and `principals` who may approve it."""
    context: dict[str, Any]
    """The context values the approval is bound to (keys the request did not have are left out)."""
    created_at: float
    """Unix seconds."""
    expires_at: float
    """Unix seconds: after this, `approve` refuses (`expired`) and the agent must ask again."""


def _pending(raw: dict[str, Any]) -> PendingApproval:
    created_ns, expires_ns = raw.pop("created_at_ns"), raw.pop("expires_at_ns")
    return PendingApproval(**raw, created_at=created_ns / 1e9, expires_at=expires_ns / 1e9)


class ApprovalsMixin:
    """`Engine.pending_approvals`; `approve` itself is on the compiled engine."""

    def pending_approvals(self) -> list[PendingApproval]:
        """The decisions waiting for approval, oldest first (approved and expired ones are left out)."""
        core: _core.Engine = self  # type: ignore[assignment]
        raw: list[dict[str, Any]] = msgspec.json.decode(core._pending_approvals_json())
        return [_pending(p) for p in raw]
