"""`engine.use_shared_state(url)`: an engine whose revocations, suspensions, freeze and policy are fleet-wide.

Once an engine uses a shared state, `revoke`, `suspend`, `resume`,
`freeze`, `unfreeze` and every policy reload are applied here first (as
without it) and then written to Redis and broadcast to every engine on the
same store, which applies them as if the same call had been made there
(docs/multi-host.md). Changes made inside `local_changes()` stay local:
that is how received changes are applied without being sent again, and how
a server freezes itself for a reason of its own.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import msgspec

from charter import _core
from charter.errors import InvalidRequestError
from charter.shared.state import Dispatch, SharedState
from charter.shared.store import Event

if TYPE_CHECKING:
    from charter.authn import IdentityMixin as _Base
    from charter.engine import Engine
else:
    _Base = object

__all__ = ["SharedStateMixin"]

SCHEMES = ("redis", "rediss", "unix")


class SharedStateMixin(_Base):
    """The engine methods that make its lifecycle changes fleet-wide (module docstring)."""

    _shared: SharedState | None = None
    _quiet = threading.local()
    """Per thread: the ids of the engines inside `local_changes()`."""

    def use_shared_state(
        self,
        url: str,
        *,
        namespace: str = "charter",
        timeout: float = 0.5,
        wait: float = 5.0,
        dispatch: Dispatch | None = None,
        quotas: bool = True,
        max_lease: int = 64,
        quota_outage: str = "deny",
    ) -> SharedState:
        """Share revocations, suspensions, freeze and the policy with every engine on Redis at `url`.

        `url` is `redis://[:password@]host:port/db`, `rediss://...` (TLS) or
        `unix:///path/to/socket?db=N`; keys live under `namespace`. Waits up
        to `wait` seconds for the first read of the fleet's state; until it
        succeeds the engine denies everything (`frozen`). `timeout` bounds
        every Redis call. `dispatch` runs each received change (default: in
        the background thread that follows Redis). With `quotas` (the
        default) every quota is fleet-wide: this engine leases slices of each
        allowance from Redis, at most `max_lease` units a cell at a time, and
        denies `quota_unavailable` when its lease is used up and Redis grants
        no more (`quota_outage="deny"`, the default), or, with
        `quota_outage="local"`, counts quotas on this engine alone while Redis
        cannot be reached (availability over the fleet-wide bound). Returns
        the link, whose `status()` says whether Redis is reached.
        """
        if self._shared is not None:
            raise InvalidRequestError("this engine already uses a shared state")
        if quota_outage not in ("deny", "local"):
            raise InvalidRequestError("quota_outage (on_outage) must be 'deny' or 'local'")
        scheme = url.split("://", 1)[0] if "://" in url else ""
        if scheme not in SCHEMES:
            raise InvalidRequestError(f"`{url}` is not a Redis URL (redis://host:port/db)")
        with self._id_lock:
            self._id_active = True  # refusals are kept by id, so agents registered later see them too
        engine: Engine = self  # type: ignore[assignment]  # the mixin is only ever part of an Engine
        self._shared = SharedState(
            engine,
            url,
            namespace=namespace,
            timeout=timeout,
            dispatch=dispatch,
            quotas=quotas,
            max_lease=max_lease,
            on_outage=quota_outage,
        )
        self._shared.start(wait=wait)
        return self._shared

    @property
    def shared_state(self) -> SharedState | None:
        """The link to the fleet's shared state, if `use_shared_state` was called."""
        return self._shared

    @contextlib.contextmanager
    def local_changes(self) -> Iterator[None]:
        """Within this block (in this thread), lifecycle changes are not sent to the shared state."""
        quiet: set[int] = self._quiet.__dict__.setdefault("engines", set())
        if id(self) in quiet:
            yield
            return
        quiet.add(id(self))
        try:
            yield
        finally:
            quiet.discard(id(self))

    def _publishing(self) -> SharedState | None:
        if self._shared is None or id(self) in self._quiet.__dict__.get("engines", ()):
            return None
        return self._shared

    def policy_document(self) -> str:
        """The current policy as the compiler's canonical JSON (what a fleet shares)."""
        return self._id_policy_json.decode()

    # ------------------------------------------------------------ the changes a fleet shares

    def revoke(
        self,
        token: str | None = None,
        *,
        agent: str | int | _core.Agent | None = None,
        principal: str | None = None,
        jti: str | None = None,
        reason: str | None = None,
    ) -> int:
        shared = self._publishing()
        if shared is None:
            return super().revoke(token, agent=agent, principal=principal, jti=jti, reason=reason)
        refused = self.revocations
        jtis, agents, principals = set(refused.jtis), set(refused.agents), dict(refused.principals)
        try:
            return super().revoke(token, agent=agent, principal=principal, jti=jti, reason=reason)
        finally:  # whatever this revoked here, even if its log file could not be written
            for ident in refused.jtis - jtis:
                shared.publish(shared.event("revoke", kind="jti", id=ident, reason=reason))
            for ident in refused.agents - agents:
                shared.publish(shared.event("revoke", kind="agent", id=ident, reason=reason))
            for ident, cutoff in refused.principals.items():
                if cutoff != principals.get(ident):
                    event = shared.event("revoke", kind="principal", id=ident, reason=reason)
                    shared.publish(_at(event, cutoff))

    def suspend(self, subject: int | str | _core.Agent, reason: str = "suspended by an operator") -> int:
        count = super().suspend(subject, reason)
        shared = self._publishing()
        if shared is not None:
            shared.publish(shared.event("suspend", id=self._agent_id(subject), reason=reason))
        return count

    def resume(self, subject: int | str | _core.Agent) -> int:
        count = super().resume(subject)
        shared = self._publishing()
        if shared is not None:
            shared.publish(shared.event("resume", id=self._agent_id(subject)))
        return count

    def freeze(self) -> None:
        super().freeze()
        shared = self._publishing()
        if shared is not None:
            shared.fleet_frozen = True
            shared.publish(shared.event("freeze"))

    def unfreeze(self) -> None:
        super().unfreeze()
        shared = self._publishing()
        if shared is not None:
            shared.fleet_frozen = False
            shared.publish(shared.event("unfreeze"))

    def _reload(self, policy_json: bytes, *args: Any, **kwargs: Any) -> tuple[str, str]:
        versions = super()._reload(policy_json, *args, **kwargs)
        shared = self._publishing()
        if shared is not None and versions[0] != versions[1]:
            shared.publish(shared.event("policy", version=versions[1], document=policy_json.decode()))
        return versions

    def close_shared_state(self) -> None:
        """Stop following the shared state (the engine keeps what it has applied)."""
        if self._shared is not None:
            self._shared.close()

    def close(self, timeout: float = 10.0) -> None:
        """Stop following the shared state, then close what the engine holds (its audit trail)."""
        self.close_shared_state()
        closer: Callable[[float], None] | None = getattr(super(), "close", None)
        if closer is not None:
            closer(timeout)


def _at(event: Event, at: float) -> Event:
    return msgspec.structs.replace(event, at=at)
