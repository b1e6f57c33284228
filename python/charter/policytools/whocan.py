"""`who_can(doc, action, resource)`: the roles, principals and templates that may do something.

Each answer is an `ActionPermission` (see `charter.policytools.permissions`) of one level: a
role (with what it inherits), a principal's roles, or a template's roles. A template's agents
also need their delegator to allow the request, so each template lists the principals its
agents may do it for (both levels allow it, with the patterns intersected).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from charter.errors import UnknownActionError
from charter.policy import Policy
from charter.policytools.grants import ActionPermission, action_permission
from charter.policytools.model import PolicyModel
from charter.policytools.patterns import valid_resource
from charter.policytools.rights import LevelRights


@dataclass(frozen=True)
class Holder:
    """A role, principal or template that may do the action (`permission` says on what terms);
    for a template, `for_principals` lists whom its agents may do it for."""

    kind: str
    name: str
    permission: ActionPermission
    for_principals: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "name": self.name, **self.permission.to_dict()}
        out.pop("action")
        if self.kind == "template":
            out["for_principals"] = list(self.for_principals)
        return out


@dataclass(frozen=True)
class WhoCan:
    """The answer to "who can do `action` (on `resource`)": roles, principals, templates."""

    action: str
    resource: str | None
    roles: tuple[Holder, ...]
    principals: tuple[Holder, ...]
    templates: tuple[Holder, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "resource": self.resource,
            "roles": [h.to_dict() for h in self.roles],
            "principals": [h.to_dict() for h in self.principals],
            "templates": [h.to_dict() for h in self.templates],
        }

    def __str__(self) -> str:
        on = f" on {self.resource}" if self.resource else ""
        lines = [f"who can {self.action}{on}:"]
        for title, holders in (
            ("roles", self.roles),
            ("principals", self.principals),
            ("templates", self.templates),
        ):
            lines.append(f"  {title}:" + ("" if holders else " none"))
            for h in holders:
                if h.permission.always:
                    lines.append(f"    {h.name}: always")
                else:
                    lines.append(f"    {h.name}:")
                    lines += [f"      {t}" for t in h.permission.terms(with_resources=self.resource is None)]
                if h.kind == "template":
                    lines.append(f"      for: {', '.join(h.for_principals) or 'no principal of the policy'}")
        return "\n".join(lines)


def who_can(doc: Policy, action: str, resource: str | None = None) -> WhoCan:
    """Who may do `action` (on `resource`, if given) under the policy document `doc`."""
    model = PolicyModel(doc)
    if action not in model.actions:
        raise UnknownActionError(f"`{action}` is not an action of the policy")
    if resource is not None and not valid_resource(resource):
        return WhoCan(action, resource, (), (), ())
    guards = tuple(g for g in model.guards if action in g.actions)

    def level(roles: tuple[str, ...]) -> LevelRights:
        return LevelRights.of(model.level_entries(roles), action)

    def may(*levels: LevelRights) -> ActionPermission | None:
        p = action_permission(action, levels, guards, resource)
        return p if p.example is not None else None

    roles = tuple(Holder("role", r, p) for r in model.role_names if (p := may(level((r,)))) is not None)
    principals = tuple(
        Holder("principal", name, p)
        for name, rs in model.principals.items()
        if (p := may(level(rs))) is not None
    )
    templates = []
    for name, rs in model.templates.items():
        p = may(level(rs))
        if p is not None:
            who = tuple(q for q, qrs in model.principals.items() if may(level(rs), level(qrs)) is not None)
            templates.append(Holder("template", name, p, who))
    return WhoCan(action, resource, roles, principals, tuple(templates))
