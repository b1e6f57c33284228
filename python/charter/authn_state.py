"""The state the engine's credential mixins share, and the compiled calls they wrap.

`charter.Engine` gets its credential features from three mixins (authn.py,
authn_registry.py, authn_lifecycle.py) over one `IdentityState`: the trusted
keys, the verified-token cache and its epoch, the revocation log, the
settings. Every `_id_*` attribute is set here, once, so each mixin can be
read (and type-checked) on its own.

Invariant: anything that could turn a cached admission into a refusal (a
revocation, a suspension, a key change, a reload) bumps `_id_epoch` under
`_id_lock`; the cached `authenticate` path trusts only entries of the
current epoch.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Final

from charter import _core
from charter.admissions import AdmissionIndex
from charter.authn_policy import PolicyView
from charter.identity import Issuer
from charter.revocations import RevocationLog
from charter.tokens import Clock, Credential, KeyRing, NonceCache, SystemClock

__all__ = [
    "UNSET",
    "IdentityState",
    "core_agent",
    "core_deprovision",
    "core_provision",
    "core_refresh",
    "core_remove_principal",
    "core_resume",
    "core_suspend",
]

UNSET: Any = object()
"""An argument that was not given (None is a meaningful value for several settings)."""


# The compiled engine's own methods, for mixins that override a name and still need the original.
core_agent: Final = _core.Engine.agent
core_deprovision: Final = _core.Engine.deprovision
core_provision: Final = _core.Engine.provision
core_refresh: Final = _core.Engine.refresh
core_remove_principal: Final = _core.Engine.remove_principal
core_resume: Final = _core.Engine.resume
core_suspend: Final = _core.Engine.suspend

if TYPE_CHECKING:
    _Base = _core.Engine
else:
    _Base = object


class IdentityState(_Base):
    """The credential state of one engine (see the module docstring)."""

    def __init__(
        self, policy_json: bytes, clock: _core.ManualClock | None = None, *_: Any, **__: Any
    ) -> None:
        # The compiled base takes its arguments in __new__; this only sets up the identity state.
        super().__init__()
        self._id_policy_json = policy_json
        self._id_view: PolicyView | None = None
        self._id_clock: Clock = clock if clock is not None else SystemClock()
        self._id_now = self._id_clock.now
        self._id_keys = KeyRing()
        self._id_issuers: dict[str, Issuer] = {}
        self._id_cache: dict[str, tuple[_core.Agent, float, int, Credential]] = {}
        """token -> (agent, valid until, epoch it was checked in or -1 for never-fast, credential)."""
        self._id_cache_size = 65_536
        self._id_epoch = 0
        self._id_active = False
        """Whether credentials are in use (`trust`, `configure_identity`, `revoke`): only then do
        `deprovision` and `remove_principal` also refuse the retired agents' credentials."""
        self._id_leeway = 5.0
        self._id_audience: frozenset[str] | None = None
        self._id_proof_window = 60.0
        self._id_nonces = NonceCache()
        self._id_revocations = RevocationLog()
        self._id_admissions: AdmissionIndex | None = AdmissionIndex()
        """Token-admitted agents and when their credentials were issued, until a log file is attached."""
        self._id_lock = threading.RLock()

    def _policy_view(self) -> PolicyView:
        view = self._id_view
        if view is None:
            view = self._id_view = PolicyView(self._id_policy_json)
        return view

    def _invalidate(self) -> None:
        """Make every cached admission be checked again (caller holds `_id_lock`)."""
        self._id_epoch += 1

    def _agent_id(self, agent: str | int | _core.Agent) -> str:
        if isinstance(agent, _core.Agent):
            return agent.id
        if isinstance(agent, str):
            return agent
        return core_agent(self, agent).id
