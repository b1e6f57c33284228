"""Type stubs and API documentation for the compiled module `charter._core`.

Everything here is implemented in Rust (`rust/charter-py`, over the
`charter-core` crate). Python code should use `charter.Engine`, which
subclasses `Engine` below and adds policy loading and conveniences.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, final

import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

__all__ = [
    "BUILD_PROFILE",
    "REASONS",
    "REASON_DESCRIPTIONS",
    "Agent",
    "ApprovalGrant",
    "AuditSink",
    "Decision",
    "Engine",
    "HookRequest",
    "Lease",
    "ManualClock",
    "__version__",
]

__version__: str
BUILD_PROFILE: str
"""`"release"` or `"debug"`: which profile built this module (benchmarks report it)."""
REASONS: list[str]
REASON_DESCRIPTIONS: list[str]
"""`REASON_DESCRIPTIONS[code]`: the reason as a sentence (what `Decision.why` says)."""
"""Reason codes by number: `REASONS[decision.reason_code] == decision.reason`."""

@final
class Decision:
    """The answer to one request; `bool(decision)` is `decision.allowed`.

    A denial is a `Decision`, never an exception: `reason` says why, `rule`
    names the policy entry that decided (if one did).
    """

    @property
    def allowed(self) -> bool: ...
    @property
    def reason(self) -> str:
        """Stable code: `granted`, `denied_by_rule`, `no_grant`, `delegator_denied`, `unknown_action`, ..."""
    @property
    def reason_code(self) -> int:
        """Index of `reason` in `REASONS`."""
    @property
    def rule(self) -> str | None:
        """Where the deciding entry is written, e.g. `roles.analyst.deny[0]`."""
    @property
    def policy_version(self) -> str:
        """Content hash of the policy the decision was made under."""
    @property
    def why(self) -> str:
        """The reason as a sentence."""
    @property
    def retry_after(self) -> float | None:
        """For `rate_limited`/`budget_exhausted`: seconds until the same request would be admitted."""
    @property
    def detail(self) -> str | None:
        """What a condition or guard said when one decided, e.g. `missing attribute `context.amount`: ...`,
        `condition `context.amount <= 500` is false`, or a guard's `reason`."""
    @property
    def decision_id(self) -> str | None:
        """The id of the decision's audit record (`STREAM-SEQ`), or None when auditing is off.

        An `approval_required` decision always has one (engine-local when auditing is off):
        `Engine.approve` takes it."""
    def __bool__(self) -> bool: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Agent:
    """A registered agent identity."""

    @property
    def id(self) -> str: ...
    @property
    def handle(self) -> int:
        """Opaque handle for fast checks; stale handles never reach another agent."""
    @property
    def template(self) -> str: ...
    @property
    def on_behalf_of(self) -> str | None:
        """The direct delegator: a principal id or a parent agent id."""
    @property
    def principal(self) -> str | None:
        """The principal at the root of the delegation chain."""
    @property
    def depth(self) -> int:
        """1 for an agent acting for a principal (or for nobody); parent's depth + 1 for a sub-agent."""
    @property
    def created_at(self) -> float: ...
    @property
    def expires_at(self) -> float | None:
        """Unix seconds, or None if the agent never expires."""
    @property
    def state(self) -> str:
        """`active`, `expired`, `revoked`, `delegator_revoked` or `principal_removed`."""
    @property
    def scope(self) -> list[str] | None:
        """The action names/patterns its credential limits it to (its own; delegators' narrow it too)."""
    def __int__(self) -> int: ...

@final
class Lease:
    """In-flight slots held by `Engine.acquire`: a context manager; `bool(lease)` is `lease.decision.allowed`.

    The slots are given back by `release()`, on leaving the `with` block, or
    when the lease is garbage-collected.
    """

    @property
    def decision(self) -> Decision: ...
    def __bool__(self) -> bool: ...
    def release(self) -> None: ...
    def __enter__(self) -> Lease: ...
    def __exit__(self, *_args: object) -> bool: ...

@final
class ApprovalGrant:
    """A one-time approval from `Engine.approve`, bound to one request.

    Repeat that request with `context={"approval": grant.token, ...}`: it is allowed once (the
    grant is used up), and only if the agent, action, resource, the entries asking for approval
    and the values of every context key their `when` and `approval` read are unchanged
    (`approval_mismatch` otherwise). `repr()` never shows the token.
    """

    @property
    def token(self) -> str:
        """The secret to pass as `context["approval"]` (the engine keeps only its hash)."""
    @property
    def decision_id(self) -> str:
        """The `approval_required` decision it approves."""
    @property
    def approver(self) -> str:
        """The principal who approved."""
    @property
    def expires_at(self) -> float:
        """Unix seconds from which the grant is refused (`approval_expired`)."""
    @property
    def agent(self) -> str:
        """The requesting agent's id (or the principal's, if it asked directly)."""
    @property
    def action(self) -> str: ...
    @property
    def resource(self) -> str | None: ...
    @property
    def rule(self) -> str | None:
        """The entry that asked for approval (the subject's own first, if several levels did)."""
    @property
    def rules(self) -> list[str]:
        """Every entry that asked for approval, the subject's own level first."""
    @property
    def context(self) -> dict[str, Any]:
        """The context values it is bound to (a key the request did not have is left out, and must stay absent)."""

@final
class ManualClock:
    """A clock that moves only when told to; pass it as `clock=` to drive expiry in tests."""

    def __new__(cls, start: float | None = None) -> ManualClock: ...
    def advance(self, seconds: float) -> None: ...
    def set(self, seconds: float) -> None: ...
    def now(self) -> float: ...
    @property
    def now_ns(self) -> int: ...

@final
class HookRequest:
    """What a policy hook receives: a read-only view of the request (see `charter.hooks`)."""

    @property
    def hook(self) -> str: ...
    @property
    def rule(self) -> str:
        """The entry naming the hook, e.g. `roles.finance.allow[0]`."""
    @property
    def action(self) -> str: ...
    @property
    def resource(self) -> str | None: ...
    @property
    def agent(self) -> str | None:
        """The acting agent's id; None for a principal acting directly."""
    @property
    def template(self) -> str | None: ...
    @property
    def depth(self) -> int | None: ...
    @property
    def chain(self) -> tuple[str, ...]:
        """The delegation chain's ids, the subject first, up to the principal."""
    @property
    def principal(self) -> str | None:
        """The principal at the root of the chain."""
    @property
    def principal_attributes(self) -> Mapping[str, Any]: ...
    @property
    def context(self) -> Mapping[str, Any]:
        """The request's context (read-only; empty if none was given)."""

@disjoint_base
class Engine:
    """The compiled engine. Construct through `charter.Engine.from_file` and friends."""

    def __new__(cls, policy_json: bytes, clock: ManualClock | None = None) -> Engine: ...
    def check(
        self,
        principal: int | str | Agent,
        action: str | int,
        resource: str | None = None,
        context: Any = None,
    ) -> Decision:
        """Decide one request. Malformed arguments are a denial (`malformed_request`), never an exception.

        `context` (a dict, or None) is what `context.*` in `when` conditions reads; only the keys
        conditions read are converted (bool, int, float, str, None, lists, dicts with str keys);
        a value that does not convert counts as missing. Anything but a dict is `malformed_request`.
        """
    def _check_batch(
        self,
        handles: npt.NDArray[np.uint64],
        actions: npt.NDArray[np.uint32],
        resources: Sequence[str | None] | None,
        with_reasons: bool,
        context: dict[str, Any] | None = None,
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.uint8] | None]: ...
    def action_id(self, name: str) -> int:
        """The id of a declared action; raises `charter.UnknownActionError`."""
    @property
    def actions(self) -> list[str]: ...
    @property
    def policy_version(self) -> str: ...
    def provision(
        self,
        template: str,
        *,
        on_behalf_of: int | str | Agent | None = None,
        ttl: float | None = None,
        agent_id: str | None = None,
        scope: list[str] | None = None,
        quota: str | None = None,
    ) -> Agent:
        """Register an agent of `template` acting for a principal, a parent agent, or nobody.

        `ttl` (seconds) defaults to the template's and may not exceed its
        `max_ttl`; the agent never outlives its parent agent. `scope` (action
        names or patterns) limits it further: anything outside is denied
        `out_of_scope`, for it and every agent acting for it. `quota` names a
        quota that replaces the template's for this agent. Raises
        `charter.ProvisionError` or `charter.UnknownSubjectError`.
        """
    def refresh(
        self, agent: int | str | Agent, *, ttl: float | None = None, expires_at: float | None = None
    ) -> Agent:
        """Set a live agent's expiry (`ttl` seconds from now, or `expires_at` Unix seconds).

        Bounded by the template's `max_ttl` and the delegator's expiry; agents
        acting for it are clamped so none outlives it.
        """
    def deprovision(self, agent: int | str | Agent) -> int:
        """Retire an agent and every agent acting for it; returns how many were retired."""
    def agent(self, agent: int | str | Agent) -> Agent: ...
    def sweep(self) -> int:
        """Retire every agent whose lifetime is over; returns how many."""
    def _reload(self, policy_json: bytes) -> tuple[str, str]: ...
    def _upsert_principal(self, id: str, roles: list[str], attributes_json: bytes) -> None: ...
    def remove_principal(self, id: str) -> int:
        """Remove a principal and retire every agent acting for it; returns how many."""
    def register_hook(self, name: str, f: Callable[[HookRequest], Any]) -> None:
        """Register (or replace) policy hook `name`; see `charter.hooks`."""
    def _set_hooks(self, hooks: dict[str, Any], allow_missing: bool, policy_json: bytes) -> None: ...
    def _explain_json(
        self,
        principal: int | str | Agent,
        action: str | int,
        resource: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> str: ...
    def suspend(self, subject: int | str | Agent, reason: str = "suspended by an operator") -> int:
        """Suspend an agent (and its delegates) or a principal (and everything acting for it)."""
    def resume(self, subject: int | str | Agent) -> int:
        """Undo `suspend` (and reset the agent's breaker); returns how many agents became active."""
    def suspension(self, subject: int | str | Agent) -> str | None:
        """Why a subject is suspended, or None."""
    def freeze(self) -> None:
        """The kill switch: every request is denied (`frozen`) until `unfreeze()`."""
    def unfreeze(self) -> None: ...
    @property
    def frozen(self) -> bool: ...
    def _quota_status_json(self, subject: int | str | Agent) -> str: ...
    def _quota_leasing(self, on: bool) -> None: ...
    def _quota_lease_demand(self) -> list[tuple[int, str, int, int, int, bool]]: ...
    def _quota_lease_grant(self, handle: int, key: str, units: int) -> bool: ...
    def _quota_lease_return(self, handle: int, key: str, forget: bool) -> int: ...
    def acquire(self, principal: int | str | Agent, action: str | int, resource: str | None = None) -> Lease:
        """Decide and, if allowed, hold an in-flight slot at every level whose quota caps concurrency."""
    def approve(self, decision: str | Decision, approver: str, *, ttl: float = 300.0) -> ApprovalGrant:
        """Approve an `approval_required` decision (its `decision_id`, or the `Decision`) as principal `approver`.

        The approver must hold one of the roles the entry's `approvers` names (directly or through
        `inherits`) or be named there, must not be suspended, and must be neither the requester nor
        any principal or agent it acts for (four eyes). Returns a one-time grant valid for `ttl`
        seconds (at most 3600). A decision can be approved once, within 15 minutes; the engine
        remembers at most 10,000 pending approvals and 10,000 grants, the oldest forgotten first.
        Raises `charter.errors.ApprovalError` (`reason`: `unknown_decision`, `expired`,
        `already_approved`, `unknown_approver`, `not_an_approver`, `four_eyes`) or
        `InvalidRequestError` for a malformed id or ttl. Recorded as an `approval_granted` event
        when auditing is on.
        """
    def _pending_approvals_json(self) -> str: ...
    def stats(self) -> dict[str, Any]:
        """`agents`, `slots`, `chains`, `policy_version`, `registry_bytes`."""
    def _set_shadow(self, policy_json: bytes | None = None) -> str | None: ...
    def _shadow_report(self) -> dict[str, Any] | None: ...
    def _attach_audit(self, sink: AuditSink) -> None: ...
    def _detach_audit(self) -> AuditSink | None: ...
    def _audit_event(self, kind: str, fields_json: str) -> bool: ...

@final
class AuditSink:
    """The buffer between deciding threads and the audit writer thread; see `charter.audit.writer`."""

    def __new__(
        cls,
        *,
        capacity: int,
        strict: bool,
        block_timeout: float,
        stream: int,
        first_seq: int,
        hash_key: bytes,
    ) -> AuditSink: ...
    def take(self, prev: bytes, prefix: bytes, wait: float) -> tuple[bytes, int, int, int, bytes] | None:
        """Wait up to `wait` seconds (GIL released) and take everything pending as one encoded, sealed batch:
        (data, first seq, last seq, count, chain hash); None if nothing came."""
    def request_flush(self) -> None: ...
    def set_failed(self, failed: bool) -> None: ...
    def close(self) -> None: ...
    def finish(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def pending(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    def take_dropped(self) -> int: ...
    @property
    def next_seq(self) -> int: ...
    @property
    def stream(self) -> int: ...
    @property
    def strict(self) -> bool: ...
