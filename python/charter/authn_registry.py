"""Registering the agents a verified credential names: the subject and, lazily, its delegators.

After a restart the registry is empty; it is rebuilt from the tokens as they
arrive. A credential's `act` chain carries each delegating agent's template,
scope and expiry, so a grandchild's token registers its parent and
grandparent too (root first), each no longer-lived than its own credential
said; their own tokens then find them registered and at most refresh them.
"""

from __future__ import annotations

import math

from charter import _core
from charter.admissions import AdmissionIndex
from charter.authn_policy import PolicyView
from charter.authn_state import IdentityState, core_agent, core_provision, core_refresh
from charter.errors import (
    AuthenticationError,
    InvalidRequestError,
    ProvisionError,
    UnknownSubjectError,
)
from charter.tokens import Credential, Level

__all__ = ["RETIRED_STATES", "RegistrationMixin"]

RETIRED_STATES = frozenset({"revoked", "delegator_revoked", "principal_removed"})
"""Registry states an agent never leaves: its id is refused for good."""


class RegistrationMixin(IdentityState):
    """`_register`: make the registry agree with a verified credential (caller holds `_id_lock`)."""

    def _register(self, cred: Credential, subject: Level, view: PolicyView, now: float) -> _core.Agent:
        """Make sure every agent on the chain is registered and live, root first; returns the subject."""
        index, principal = self._id_admissions, cred.principal
        if principal is None:
            index = None
        parent: str | None = None
        for lvl in reversed(cred.chain):
            if lvl.template is not None:
                agent, outcome = self._ensure(lvl, parent, view, now)
                if index is not None and outcome != "found":
                    self._note_admission(index, cred, agent, now, fresh=outcome == "provisioned")
            parent = lvl.sub
        agent, outcome = self._ensure(subject, parent, view, now)
        if index is not None and outcome != "found":
            self._note_admission(index, cred, agent, now, fresh=outcome == "provisioned")
        return agent

    @staticmethod
    def _note_admission(
        index: AdmissionIndex, cred: Credential, agent: _core.Agent, now: float, *, fresh: bool
    ) -> None:
        # The earliest issue time on the chain: what a principal's revocation compares with its
        # cutoff (authn.py, `_check_revoked`).
        issued = min([cred.issued_at, *(lvl.issued_at for lvl in cred.chain if lvl.issued_at is not None)])
        until = math.inf if agent.expires_at is None else agent.expires_at
        index.note(agent.id, str(cred.principal), issued, until, now, fresh=fresh)

    def _ensure(
        self, lvl: Level, parent: str | None, view: PolicyView, now: float
    ) -> tuple[_core.Agent, str]:
        """The agent `lvl` names, registered and live, and whether it was `found` as it is,
        `refreshed` (a later expiry) or `provisioned`."""
        template = view.templates[str(lvl.template)]
        # A credential is good until exp + leeway; so is its agent, within the template's max_ttl
        # (a ttl, not a deadline, so float rounding cannot push it past max_ttl).
        ttl = (lvl.expires_at if lvl.expires_at is not None else math.inf) + self._id_leeway - now
        if template.max_ttl is not None:
            ttl = min(ttl, template.max_ttl)
        if ttl <= 0:
            raise AuthenticationError("expired", f"`{lvl.sub}` has expired")
        expires = now + ttl
        scope = view.provisionable(lvl.scope)
        try:
            agent: _core.Agent | None = core_agent(self, lvl.sub)
        except UnknownSubjectError:
            agent = None
        if agent is not None:
            if agent.state in RETIRED_STATES:
                raise AuthenticationError("revoked", f"agent `{lvl.sub}` was retired ({agent.state})")
            if agent.state == "suspended":
                raise AuthenticationError("suspended", f"agent `{lvl.sub}` is suspended")
            same_scope = (agent.scope is None) == (scope is None) and set(agent.scope or ()) == set(
                scope or ()
            )
            if agent.template != lvl.template or agent.on_behalf_of != parent or not same_scope:
                raise AuthenticationError(
                    "chain_mismatch",
                    f"agent `{lvl.sub}` is registered with another template, delegator or scope",
                )
            if agent.state == "active":
                if agent.expires_at is not None and expires > agent.expires_at:
                    return core_refresh(self, agent.handle, ttl=ttl), "refreshed"
                return agent, "found"
            self.sweep()  # expired: free its slot, then provision it afresh below
        try:
            provisioned = core_provision(
                self, str(lvl.template), on_behalf_of=parent, agent_id=lvl.sub, scope=scope, ttl=ttl
            )
        except UnknownSubjectError:
            raise AuthenticationError("unknown_principal", f"no principal or agent `{parent}`") from None
        except InvalidRequestError as err:
            raise AuthenticationError("malformed", str(err)) from None
        except ProvisionError as err:
            raise AuthenticationError("chain_mismatch", str(err)) from None
        return provisioned, "provisioned"
