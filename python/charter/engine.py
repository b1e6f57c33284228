"""`charter.Engine`: policy loading and the conveniences around the compiled engine.

The class subclasses `charter._core.Engine`, so `check`, `provision` and the
other hot calls go straight to Rust without a Python frame; this module only
adds what is naturally Python (file loading, numpy coercion, exceptions that
carry a decision, readable explanations).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Self

import msgspec
import numpy as np
import numpy.typing as npt

from charter import _core, policy
from charter.acting import ActingMixin
from charter.approvals import ApprovalsMixin
from charter.audit.attach import AuditMixin, start_policy_audit
from charter.authn import IdentityMixin
from charter.errors import PermissionDenied, PolicyError
from charter.explain import Explanation
from charter.hooks import Hook
from charter.policytools import lint as policy_lint
from charter.policytools import permissions as policy_permissions
from charter.shadowing import ShadowMixin
from charter.shared.mixin import SharedStateMixin

Principal = int | str | _core.Agent
"""Who asks: an agent handle, an `Agent`, an agent id or a principal id."""


def _compile(
    cls: type[Engine],
    doc: policy.Policy,
    source: str | None,
    clock: _core.ManualClock | None,
    hooks: Mapping[str, Hook] | None = None,
    allow_missing_hooks: bool = False,
) -> Engine:
    try:
        core_json = policy.to_core_json(doc)
        engine = cls(core_json, clock)
        engine._set_hooks(dict(hooks or {}), allow_missing_hooks, core_json)
    except PolicyError as err:
        err.source = err.source or source
        raise
    policy_lint.warn_on_load(doc, source, (hooks or {}).keys())
    start_policy_audit(engine, doc.audit, source)
    return engine


class Engine(
    SharedStateMixin, ActingMixin, AuditMixin, ShadowMixin, IdentityMixin, ApprovalsMixin, _core.Engine
):
    """The decision engine. Build it with `from_file`, `from_toml` or `from_dict`."""

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        clock: _core.ManualClock | None = None,
        hooks: Mapping[str, Hook] | None = None,
        allow_missing_hooks: bool = False,
    ) -> Self:
        """Load a TOML (or `.json`) policy file.

        `hooks` registers policy hooks by name (see `charter.hooks`); a policy naming a hook that
        is not registered is a `PolicyError`, unless `allow_missing_hooks` (then a decision that
        reaches it is `hook_error`).
        """
        doc = policy.from_file(path)
        return _compile(cls, doc, str(path), clock, hooks, allow_missing_hooks)  # type: ignore[return-value]

    @classmethod
    def from_toml(
        cls,
        text: str,
        *,
        clock: _core.ManualClock | None = None,
        hooks: Mapping[str, Hook] | None = None,
        allow_missing_hooks: bool = False,
    ) -> Self:
        """Load a policy from TOML text (`hooks`, `allow_missing_hooks`: see `from_file`)."""
        doc = policy.from_toml(text)
        return _compile(cls, doc, None, clock, hooks, allow_missing_hooks)  # type: ignore[return-value]

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        clock: _core.ManualClock | None = None,
        hooks: Mapping[str, Hook] | None = None,
        allow_missing_hooks: bool = False,
    ) -> Self:
        """Load a policy given as a dict (the same structure as the TOML file; hooks: see `from_file`)."""
        doc = policy.from_dict(data)
        return _compile(cls, doc, None, clock, hooks, allow_missing_hooks)  # type: ignore[return-value]

    @classmethod
    def example(cls, *, clock: _core.ManualClock | None = None) -> Self:
        """The example policy shipped with the package."""
        return cls.from_file(policy.example_path(), clock=clock)

    def reload(self, source: policy.PolicySource) -> tuple[str, str]:
        """Compile a new policy and swap it in atomically; returns (old version, new version).

        `source` is a path, a dict or a `charter.policy.Policy`. Agents keep
        their identities. On any error the current policy stays in force.
        """
        doc, origin = policy.load(source)
        try:
            return self._reload(policy.to_core_json(doc))
        except PolicyError as err:
            err.source = err.source or origin
            raise

    def reload_toml(self, text: str) -> tuple[str, str]:
        """`reload` from TOML text."""
        return self._reload(policy.to_core_json(policy.from_toml(text)))

    def upsert_principal(
        self, principal_id: str, *, roles: Sequence[str], attributes: Mapping[str, Any] | None = None
    ) -> None:
        """Add or replace a principal at runtime (e.g. synced from an identity provider).

        Runtime principals override the document's and survive reloads.
        """
        self._upsert_principal(principal_id, list(roles), msgspec.json.encode(dict(attributes or {})))

    def quota_status(self, agent: Principal) -> list[dict[str, Any]]:
        """What is left of each quota along the chain, own level first.

        Each level: `subject`, `quota` (name or None), and where the quota has
        them `rate` / `budget` (`remaining`, `burst` / `capacity`), `in_flight`
        (`held`, `max`) and `limits` (`actions`, `remaining`, `burst`).
        """
        levels: list[dict[str, Any]] = msgspec.json.decode(self._quota_status_json(agent))
        return levels

    def check_batch(
        self,
        handles: npt.ArrayLike,
        actions: npt.ArrayLike,
        resources: Sequence[str | None] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> npt.NDArray[np.bool_]:
        """Decide many requests at once with the GIL released; returns a bool array.

        `handles` are agent handles, `actions` action ids from `action_id`;
        `resources[i]` is a resource name or None. `context` maps each context
        key to a column (a numpy array or a sequence, one value per request);
        only the keys conditions read are converted.
        """
        allowed, _ = self._check_batch(*_columns(handles, actions), resources, False, _context(context))
        return allowed

    def check_batch_reasons(
        self,
        handles: npt.ArrayLike,
        actions: npt.ArrayLike,
        resources: Sequence[str | None] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.uint8]]:
        """Like `check_batch`, plus each decision's reason code (index into `charter.REASONS`)."""
        allowed, reasons = self._check_batch(*_columns(handles, actions), resources, True, _context(context))
        assert reasons is not None
        return allowed, reasons

    def explain(
        self,
        principal: Principal,
        action: str | int,
        resource: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Explanation:
        """The decision and its full derivation: the chain, each level's roles, the entries that
        matched, each `when` condition's outcome and, on failure, the sub-expression and values."""
        ctx = None if context is None else dict(context)
        return Explanation(msgspec.json.decode(self._explain_json(principal, action, resource, ctx)))

    def require(
        self,
        principal: Principal,
        action: str | int,
        resource: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> _core.Decision:
        """`check`, raising `PermissionDenied` (which carries the decision) unless allowed."""
        decision = self.check(principal, action, resource, context)
        if not decision:
            raise PermissionDenied(decision, str(action), principal)
        return decision

    def permissions(
        self, principal: Principal, resource: str | None = None
    ) -> policy_permissions.Permissions:
        """What a principal or agent may do (for requests on `resource`, if given): per action, the
        grants with their patterns and conditions, intersected along a delegation chain; see
        `charter.policytools.permissions`."""
        return policy_permissions.permissions(self, principal, resource)


def _context(context: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if context is None:
        return None
    if not isinstance(context, Mapping):
        raise _invalid("context must be a mapping of key -> column (array or sequence)")
    return dict(context)


def _columns(handles: npt.ArrayLike, actions: npt.ArrayLike) -> tuple[Any, Any]:
    return _unsigned(handles, np.uint64, "handles"), _unsigned(actions, np.uint32, "actions")


def _unsigned(values: npt.ArrayLike, dtype: type[np.unsignedinteger[Any]], name: str) -> Any:
    """A contiguous 1-D array of `dtype`, refusing what would not convert exactly.

    numpy would wrap -1 to 2**64-1 or truncate 2.5 to 2 without a word; an
    id that silently becomes another id is how a check goes wrong.
    """
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError) as err:
        raise _invalid(f"{name} must be a 1-D array of integers: {err}") from None
    # asarray first: ascontiguousarray would silently turn a scalar into shape (1,).
    if arr.ndim != 1:
        raise _invalid(f"{name} must be one-dimensional, got {arr.ndim} dimensions")
    if arr.size == 0:
        return np.zeros(0, dtype=dtype)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise _invalid(f"{name} must be integers, got {arr.dtype}")
    if arr.dtype != dtype:
        limit = np.iinfo(dtype).max
        if int(arr.min()) < 0 or int(arr.max()) > limit:
            raise _invalid(f"{name} must be between 0 and {limit}")
    return np.ascontiguousarray(arr, dtype=dtype)


def _invalid(message: str) -> Exception:
    from charter.errors import InvalidRequestError

    return InvalidRequestError(message)
