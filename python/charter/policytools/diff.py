"""`diff(old, new)`: what a policy change does to each role, template and principal.

For every subject and action the two policies' rights are compared as sets of requests: an
action is *gained* (no request was possibly allowed, some now is) or *lost*; otherwise it is
*widened* when some request is possibly allowed now and was not before, or allowed whatever the
context now and not before, *narrowed* in the opposite case (both can hold), and *changed* when
the same requests are possibly and surely allowed but the conditions, hooks or guards on the
way differ. Each widening or narrowing comes with an example
request. "Possibly allowed" takes conditions and hooks as able to pass, so this is exact for
the patterns and entries, and says "changed" where it would have to guess about conditions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from charter.policy import Policy
from charter.policytools.conditions import constant
from charter.policytools.model import Guard, PolicyModel
from charter.policytools.patterns import Request, Scope, find_request
from charter.policytools.rights import LevelRights, granting_actions

Region = tuple[tuple[Scope, ...], tuple[Scope, ...]]
"""Requests in one of the first scopes and in none of the second."""


@dataclass(frozen=True)
class Change:
    """What happened to one action: `kind` is gained, lost, widened, narrowed or changed;
    `example` a request that shows it (None for "changed")."""

    action: str
    kind: str
    example: Request | None = None

    def to_dict(self) -> dict[str, Any]:
        ex = None if self.example is None else {"resource": self.example.resource}
        return {"action": self.action, "change": self.kind, "example": ex}

    def __str__(self) -> str:
        mark = {"gained": "+", "lost": "-"}.get(self.kind, "~")
        if self.example is None:
            return f"{mark} {self.action}: conditions, hooks or guards changed"
        on = "without a resource" if self.example.resource is None else f"on {self.example.resource}"
        how = f"{self.kind}, " if self.kind in ("widened", "narrowed") else ""
        return f"{mark} {self.action} {how}e.g. {on}"


@dataclass(frozen=True)
class SubjectDiff:
    """The changes of one role, template or principal; `status` is added, removed or changed."""

    kind: str
    name: str
    status: str
    old_roles: tuple[str, ...] | None
    new_roles: tuple[str, ...] | None
    changes: tuple[Change, ...]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "name": self.name, "status": self.status}
        if self.kind != "role":
            out["roles"] = {"old": _list(self.old_roles), "new": _list(self.new_roles)}
        out["changes"] = [c.to_dict() for c in self.changes]
        return out

    def __str__(self) -> str:
        head = f"{self.kind} {self.name}"
        if self.status != "changed":
            head += f" ({self.status})"
        if self.kind != "role" and self.old_roles != self.new_roles:
            old = ", ".join(self.old_roles or ()) or "none"
            new = ", ".join(self.new_roles or ()) or "none"
            head += (
                f": roles {old} -> {new}"
                if self.status == "changed"
                else f": roles {new if self.new_roles is not None else old}"
            )
        return "\n".join([head, *(f"  {c}" for c in self.changes)])


def _list(roles: tuple[str, ...] | None) -> list[str] | None:
    return None if roles is None else list(roles)


@dataclass
class PolicyDiff:
    """Every difference between two policies that changes who may do what."""

    actions_added: tuple[str, ...] = ()
    actions_removed: tuple[str, ...] = ()
    subjects: list[SubjectDiff] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.actions_added or self.actions_removed or self.subjects)

    def to_dict(self) -> dict[str, Any]:
        return {
            "actions": {"added": list(self.actions_added), "removed": list(self.actions_removed)},
            "subjects": [s.to_dict() for s in self.subjects],
        }

    def __str__(self) -> str:
        if not self:
            return "no change in what any role, template or principal may do"
        lines = []
        if self.actions_added or self.actions_removed:
            marks = [f"+{a}" for a in self.actions_added] + [f"-{a}" for a in self.actions_removed]
            lines.append(f"actions declared: {' '.join(marks)}")
        lines += [str(s) for s in self.subjects]
        return "\n".join(lines)


def diff(old: Policy, new: Policy) -> PolicyDiff:
    """What changes from `old` to `new`, per role, template and principal."""
    a, b = PolicyModel(old), PolicyModel(new)
    out = PolicyDiff(
        tuple(x for x in b.actions if x not in a.actions),
        tuple(x for x in a.actions if x not in b.actions),
    )
    actions = list(dict.fromkeys([*a.actions, *b.actions]))
    sides = (_Side(a), _Side(b))
    for kind, old_map, new_map in (
        ("role", {r: (r,) for r in a.role_names}, {r: (r,) for r in b.role_names}),
        ("template", a.templates, b.templates),
        ("principal", a.principals, b.principals),
    ):
        for name in dict.fromkeys([*old_map, *new_map]):
            before, after = old_map.get(name), new_map.get(name)
            changes = tuple(
                c for x in actions for c in _compare(x, sides[0].level(before, x), sides[1].level(after, x))
            )
            status = "added" if before is None else "removed" if after is None else "changed"
            if changes or status != "changed" or (kind != "role" and before != after):
                out.subjects.append(SubjectDiff(kind, name, status, before, after, changes))
    return out


class _Side:
    """One policy's levels, with their rights per action computed once."""

    def __init__(self, model: PolicyModel) -> None:
        self.model = model
        self._rights: dict[tuple[str, ...], dict[str, LevelRights]] = {}

    def level(self, roles: Sequence[str] | None, action: str) -> tuple[LevelRights, tuple[Guard, ...]] | None:
        if roles is None or action not in self.model.actions:
            return None
        closure = self.model.closure(roles)
        if closure not in self._rights:
            self._rights[closure] = granting_actions(self.model.level_entries(closure))
        rights = self._rights[closure].get(action)
        if rights is None:
            return None
        return rights, tuple(g for g in self.model.guards if action in g.actions)


def _regions(side: tuple[LevelRights, tuple[Guard, ...]] | None) -> tuple[Region, Region]:
    """(requests possibly allowed, requests allowed whatever the context)."""
    if side is None:
        return ((), ()), ((), ())
    level, guards = side
    grants, denies = level.possible()
    blocking = tuple(g.on for g in guards if constant(g.require) is False)
    sure_grants, maybe_denies = level.certain()
    checked = tuple(g.on for g in guards if constant(g.require) is not True)
    return (grants, denies + blocking), (sure_grants, maybe_denies + checked)


def _beyond(x: Region, y: Region) -> Request | None:
    """A request in region `x` and not in region `y`."""
    (gx, dx), (gy, dy) = x, y
    return find_request([gx], [*dx, *gy]) or (find_request([gx, dy], dx) if dy else None)


def _compare(
    action: str,
    old: tuple[LevelRights, tuple[Guard, ...]] | None,
    new: tuple[LevelRights, tuple[Guard, ...]] | None,
) -> Iterable[Change]:
    if _signature(old) == _signature(new):
        return
    (p_old, c_old), (p_new, c_new) = _regions(old), _regions(new)
    was, now = find_request(*_as_query(p_old)), find_request(*_as_query(p_new))
    if was is None and now is None:
        return
    if was is None:
        yield Change(action, "gained", now)
        return
    if now is None:
        yield Change(action, "lost", was)
        return
    more = _beyond(p_new, p_old) or _beyond(c_new, c_old)
    less = _beyond(p_old, p_new) or _beyond(c_old, c_new)
    if more is not None:
        yield Change(action, "widened", more)
    if less is not None:
        yield Change(action, "narrowed", less)
    if more is None and less is None and _conditional(old) != _conditional(new):
        yield Change(action, "changed")


def _as_query(region: Region) -> tuple[list[tuple[Scope, ...]], list[Scope]]:
    return [region[0]], list(region[1])


def _conditional(side: tuple[LevelRights, tuple[Guard, ...]] | None) -> Any:
    """The entries and guards whose effect depends on a condition or a hook."""
    if side is None:
        return None
    level, guards = side

    def fixed(e: Any) -> bool:
        return e.gate is None and (e.when is None or constant(e.when) is not None)

    return (
        frozenset((e.on, e.when, e.gate) for e in level.allows if not fixed(e)),
        tuple((e.on, e.when, e.gate) for e in level.allows if e.gate is not None),
        frozenset((e.on, e.when, e.gate) for e in level.denies if not fixed(e)),
        frozenset((g.on, g.require) for g in guards if constant(g.require) is None),
    )


def _signature(side: tuple[LevelRights, tuple[Guard, ...]] | None) -> Any:
    """What decides the action, without the entries' names (renumbering entries changes nothing)."""
    if side is None:
        return None
    level, guards = side
    return (
        frozenset((e.on, e.when) for e in level.allows if e.gate is None),
        tuple((e.on, e.when, e.gate) for e in level.allows if e.gate is not None),  # the first one decides
        frozenset((e.on, e.when, e.gate) for e in level.denies),
        frozenset((g.on, g.require) for g in guards),
    )
