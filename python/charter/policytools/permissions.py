"""`engine.permissions(subject)`: what a principal or an agent may do, and under what terms.

For every declared action the subject may be allowed, the answer gives the grants (each
with the resource patterns and the conditions and hooks it needs), the denies that carve
exceptions out of them, and the guards that apply. For an agent, "allowed" means allowed at
every level of its delegation chain (its template, each delegating agent's template, the
principal) and inside every credential scope along the chain, so each grant is the
intersection of one grant per level, with the patterns intersected exactly.

The chain and each level's roles come from the engine itself (`explain`), so runtime
principals and their roles are seen; the entries come from the policy the engine runs.
`ActionPermission.decide` answers one request from this data with the engine's rules,
and tests/test_permissions.py checks it equals `check()` on random policies.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from charter import _core
from charter.policy import Policy
from charter.policytools.grants import ActionPermission, action_permission
from charter.policytools.model import PolicyModel
from charter.policytools.patterns import valid_resource
from charter.policytools.rights import ConditionOracle, HookOracle, LevelRights, folded, unknown_hook

if TYPE_CHECKING:
    from charter.engine import Engine, Principal

PROBE_ACTION = "charter-permissions:probe"
"""An action name policies do not declare, asked about to learn a subject's chain."""


@dataclass(frozen=True)
class ChainLevel:
    """One level of the chain: `kind` is `agent` or `principal`; `roles` closed under `inherits`."""

    kind: str
    id: str
    template: str | None
    roles: tuple[str, ...]


@dataclass(frozen=True)
class Permissions:
    """What `engine.permissions(subject, resource)` returns.

    `actions` maps each action the subject may be allowed (for some request, or for requests
    on `resource` when one was given) to its `ActionPermission`. `denied` is set when the
    subject can do nothing at all (`revoked`, `suspended`, `unknown_agent`, ...). `scope` is
    the set of actions the credential scopes along the chain leave (None: no scope).
    """

    subject: str
    resource: str | None
    chain: tuple[ChainLevel, ...]
    actions: dict[str, ActionPermission]
    denied: str | None = None
    scope: frozenset[str] | None = None
    _rights: dict[str, ActionPermission] = field(default_factory=dict, repr=False, compare=False)

    def __contains__(self, action: object) -> bool:
        return action in self.actions

    def __iter__(self) -> Iterator[str]:
        return iter(self.actions)

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def always(self) -> list[str]:
        """The actions allowed for every request considered, whatever the context."""
        return [a for a, p in self.actions.items() if p.always]

    def decide(
        self,
        action: str,
        resource: str | None = None,
        when: ConditionOracle = folded,
        hook: HookOracle = unknown_hook,
    ) -> bool | None:
        """Whether the subject is allowed `action` on `resource` (see `ActionPermission.decide`)."""
        p = self._rights.get(action)
        return False if p is None or self.denied else p.decide(resource, when, hook)

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "resource": self.resource,
            "denied": self.denied,
            "chain": [
                {"kind": lv.kind, "id": lv.id, "template": lv.template, "roles": list(lv.roles)}
                for lv in self.chain
            ],
            "scope": None if self.scope is None else sorted(self.scope),
            "actions": [p.to_dict() for p in self.actions.values()],
        }

    def __str__(self) -> str:
        on = f" on {self.resource}" if self.resource else ""
        head = f"{self.subject}{on}"
        if self.chain and self.chain[0].kind == "agent":
            root = self.chain[-1].id if self.chain[-1].kind == "principal" else "nobody"
            head = f"{self.subject} ({self.chain[0].template} agent for {root}){on}"
        if self.denied:
            return f"{head}: nothing ({self.denied})"
        lines = [f"{head}: {len(self.actions)} action(s)"]
        for p in self.actions.values():
            if p.always:
                lines.append(f"  {p.action}: always")
                continue
            lines.append(f"  {p.action}:")
            lines += ["    " + t for t in p.terms(with_resources=self.resource is None)]
        return "\n".join(lines)


@functools.lru_cache(maxsize=8)
def model_of(policy_json: bytes) -> PolicyModel:
    """The resolved model of a compiled policy's canonical JSON."""
    return PolicyModel(msgspec.json.decode(policy_json, type=Policy))


def permissions(engine: Engine, subject: Principal, resource: str | None = None) -> Permissions:
    """What `subject` (a principal id, an agent, its handle or id) may do; see `Permissions`.

    With `resource`, only requests on that resource are considered. Quotas are not: an
    action listed here may still be refused for a spent rate or budget.
    """
    for _ in range(3):  # a reload between reading the policy and the chain: read both again
        policy_json = running_policy(engine)
        result = _permissions(engine, model_of(policy_json), subject, resource)
        if running_policy(engine) is policy_json:
            break
    return result


def running_policy(engine: Engine) -> bytes:
    """The canonical JSON of the policy `engine` runs now.

    The compiled engine has no accessor for it; the identity layer keeps it (and replaces it
    on every reload) for its credential checks, so it is read from there.
    """
    return engine._id_policy_json


def _permissions(engine: Engine, model: PolicyModel, subject: Principal, resource: str | None) -> Permissions:
    name = subject.id if isinstance(subject, _core.Agent) else str(subject)
    chain, reason = resolve_chain(engine, model, subject)
    if chain and chain[0].kind == "agent":
        name = chain[0].id
    if reason is not None:
        return Permissions(name, resource, chain, {}, denied=reason)
    if resource is not None and not valid_resource(resource):
        return Permissions(name, resource, chain, {}, denied="invalid_resource")
    scope = _scope(engine, model, chain)
    level_entries = [model.level_entries(lv.roles) for lv in chain]
    rights: dict[str, ActionPermission] = {}
    for action in model.actions:
        if scope is None or action in scope:
            levels = tuple(LevelRights.of(entries, action) for entries in level_entries)
            guards = tuple(g for g in model.guards if action in g.actions)
            rights[action] = action_permission(action, levels, guards, resource)
    allowed = {a: p for a, p in rights.items() if p.example is not None}
    return Permissions(name, resource, chain, allowed, None, scope, rights)


def resolve_chain(
    engine: Engine, model: PolicyModel, subject: Principal
) -> tuple[tuple[ChainLevel, ...], str | None]:
    """The subject's chain, own level first, and the reason it may do nothing at all (or None).

    Asks `explain` about an action the policy does not declare: the engine reports the chain
    and any identity problem (revoked, suspended, ...) before it refuses the action, and an
    undeclared action charges no quota, counts towards no breaker and runs no hook.
    """
    probe = PROBE_ACTION
    while probe in model.actions:
        probe += "-"
    data = engine.explain(subject, probe).to_dict()
    reason = data["decision"]["reason"]
    chain = tuple(
        ChainLevel(lv["kind"], lv["id"], lv.get("template"), tuple(lv.get("roles") or ()))
        for lv in data["chain"]
    )
    return chain, None if reason == "unknown_action" else reason


def _scope(engine: Engine, model: PolicyModel, chain: tuple[ChainLevel, ...]) -> frozenset[str] | None:
    """The actions every credential scope along the chain covers (None: no agent has a scope)."""
    out: frozenset[str] | None = None
    for lv in chain:
        if lv.kind != "agent":
            continue
        patterns = engine.agent(lv.id).scope
        if patterns is not None:
            mine = model.expand_actions(patterns)
            out = mine if out is None else out & mine
    return out


__all__ = ["ActionPermission", "ChainLevel", "Permissions", "permissions"]
