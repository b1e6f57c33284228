"""Retiring agents once credentials are in use: `revoke`, and the engine calls that also refuse tokens.

`revoke` records in the revocation log (fsynced before it returns) and
retires what it names in the registry, in cascade. `deprovision`,
`remove_principal`, `suspend` and `resume` keep their compiled behaviour and,
once credentials are in use, also make the log refuse (or, for `resume`,
accept again) the credentials of what they changed.
"""

from __future__ import annotations

from typing import Any

import msgspec

from charter import _core
from charter.authn_log import RevocationLogMixin
from charter.authn_state import (
    core_deprovision,
    core_remove_principal,
    core_resume,
    core_suspend,
)
from charter.errors import InvalidRequestError, UnknownSubjectError
from charter.tokens import verify_token

__all__ = ["LifecycleMixin"]


class LifecycleMixin(RevocationLogMixin):
    """`revoke`, and `deprovision`/`remove_principal`/`suspend`/`resume` made credential-aware."""

    def revoke(
        self,
        token: str | None = None,
        *,
        agent: str | int | _core.Agent | None = None,
        principal: str | None = None,
        jti: str | None = None,
        reason: str | None = None,
    ) -> int:
        """Revoke, for good, a credential and its agent (`token`), an agent, a principal or a `jti`.

        Revoking an agent revokes every agent acting for it (their tokens
        name it in `act`, and the registry retires them in cascade);
        revoking a principal refuses every credential issued for its agents
        until now and removes the principal (`remove_principal`). The
        revocation holds in this process at once and is appended (fsynced)
        to the revocation log before this returns. Returns how many agents
        were retired in the registry.
        """
        now = self._id_now()
        records: list[tuple[str, str] | tuple[str, str, float | None]] = []
        retire: list[tuple[str, int | str]] = []  # what to retire in the registry (by handle when known)
        if token is not None:
            cred = verify_token(token, self._id_keys, now=None, check_audience=False)
            # The jti's expiry lets a compaction drop the record once the credential is dead anyway.
            records += [("jti", cred.jti, cred.expires_at), ("agent", cred.subject)]
            retire.append(("agent", cred.subject))
        if jti is not None:
            records.append(("jti", jti))
        if agent is not None:
            records.append(("agent", self._agent_id(agent)))
            retire.append(("agent", agent.handle if isinstance(agent, _core.Agent) else agent))
        if principal is not None:
            records.append(("principal", principal))
            retire.append(("principal", principal))
        if not records:
            raise InvalidRequestError("revoke what? give a token, agent=, principal= or jti=")
        with self._id_lock:
            self._id_active = True
            self._invalidate()
            try:
                self._id_revocations.add_many(records, at=now, reason=reason)
            finally:
                retired = self._apply_changes()  # what other processes appended, read before ours
                for kind, target in retire:
                    try:
                        if kind == "agent":
                            retired += core_deprovision(self, target)
                        else:
                            retired += core_remove_principal(self, str(target))
                    except UnknownSubjectError:
                        pass  # not registered here (yet): the log refuses its tokens
                if self._id_admissions is not None:
                    for ident in records:
                        if ident[0] == "agent":
                            self._id_admissions.forget(ident[1])
                if getattr(self, "_audit_writer", None) is not None:  # only when auditing
                    event = {
                        "revoked": [{"kind": r[0], "id": r[1]} for r in records],
                        "retired": retired,
                        "why": reason,
                    }
                    core: _core.Engine = self
                    core._audit_event("revoke", msgspec.json.encode(event).decode())
            return retired

    def deprovision(self, agent: int | str | _core.Agent) -> int:
        """Retire an agent and every agent acting for it; returns how many were retired.

        Once credentials are in use (`trust`, `configure_identity`), the
        agent's tokens are refused from then on by this engine; `revoke`
        also makes that survive a restart.
        """
        retired = core_deprovision(self, agent)
        if retired and self._id_admissions is not None and not isinstance(agent, int):
            with self._id_lock:
                self._id_admissions.forget(self._agent_id(agent))
        if retired and self._id_active:
            with self._id_lock:
                self._id_revocations.add_many(
                    [("agent", self._agent_id(agent))],
                    at=self._id_now(),
                    reason="deprovisioned",
                    persist=False,
                )
                self._invalidate()
        return retired

    def remove_principal(self, id: str) -> int:
        """Remove a principal and retire every agent acting for it; returns how many.

        Credentials issued for its agents until now are refused from then on.
        """
        retired = core_remove_principal(self, id)
        if self._id_active:
            with self._id_lock:
                self._id_revocations.add_many(
                    [("principal", id)], at=self._id_now(), reason="removed", persist=False
                )
                self._invalidate()
        return retired

    def suspend(self, subject: int | str | _core.Agent, reason: str = "suspended by an operator") -> int:
        """Suspend an agent (and its delegates) or a principal (and everything acting for it).

        Recorded in the revocation log (fsynced, if it has a file) so the
        suspension survives a restart; a suspended agent's credentials are
        refused (`suspended`) until `resume`.
        """
        try:
            suspended = core_suspend(self, subject, reason)
        except UnknownSubjectError:
            if not (self._id_active and isinstance(subject, str)):
                raise
            suspended = 0  # not registered here (yet): its credentials are refused when they come
        self._record_suspension("suspend", subject, reason)
        return suspended

    def resume(self, subject: int | str | _core.Agent) -> int:
        """Undo `suspend`; returns how many agents became active. Recorded in the revocation log."""
        try:
            resumed = core_resume(self, subject)
        except UnknownSubjectError:
            if not (self._id_active and isinstance(subject, str)):
                raise
            resumed = 0
        self._record_suspension("resume", subject, None)
        return resumed

    def _record_suspension(self, kind: str, subject: int | str | _core.Agent, reason: str | None) -> None:
        with self._id_lock:
            self._invalidate()
            try:
                self._id_revocations.add_many(
                    [(kind, self._agent_id(subject))], at=self._id_now(), reason=reason
                )
            finally:
                self._apply_changes()

    def _reload(self, policy_json: bytes, *args: Any, **kwargs: Any) -> tuple[str, str]:
        versions = super()._reload(policy_json, *args, **kwargs)
        with self._id_lock:
            self._id_policy_json = policy_json
            self._id_view = None
            self._invalidate()
        return versions
