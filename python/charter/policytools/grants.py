"""What a chain of levels allows for one action, as grants, exceptions and guards.

`action_permission(action, levels, guards)` turns the rights of each level of a chain (own
level first) into an `ActionPermission`: the `grants` (one allow entry per level, their
resource patterns intersected exactly, their conditions and hooks combined), the denies that
may carve exceptions out of them, the guards that may apply, whether every request is allowed
whatever the context (`always`) and an `example` request that may be allowed. `decide`
answers one request from the same data with the engine's rules.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from charter.policytools.conditions import constant
from charter.policytools.model import Guard
from charter.policytools.patterns import (
    Request,
    Scope,
    find_request,
    in_scope,
    intersect,
    minimal,
    valid_resource,
)
from charter.policytools.rights import (
    ConditionOracle,
    HookOracle,
    LevelRights,
    decide_chain,
    folded,
    possible_request,
    unknown_hook,
)


@dataclass(frozen=True)
class Grant:
    """One way to be allowed an action: on `on` (None: any request, with or without a resource),
    when every condition in `when` holds and every gate in `hooks` agrees (a hook's name, or
    `approval:<name>` for an entry that needs an approval). `rules` names the
    allow entries that grant it, own level first."""

    on: Scope
    when: tuple[str, ...]
    hooks: tuple[str, ...]
    rules: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "on": self.on and list(self.on),
            "when": list(self.when),
            "hooks": list(self.hooks),
            "rules": list(self.rules),
        }

    def __str__(self) -> str:
        return self.describe(with_resources=True)

    def describe(self, *, with_resources: bool) -> str:
        """The grant as text; without the resource patterns when a request's resource is given."""
        terms = [f"on {', '.join(self.on)}" if self.on is not None else "on any resource or none"]
        terms = terms if with_resources else []
        terms += [f"when {w}" for w in self.when] + [_gate_text(h) for h in self.hooks]
        return " ".join([*terms, f"[{', '.join(self.rules)}]"])


@dataclass(frozen=True)
class Restriction:
    """A deny that takes part of the grants away: on `on`, when `when` holds (or cannot be
    evaluated), if `hook` (when set) agrees."""

    rule: str
    on: Scope
    when: str | None
    hook: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "on": self.on and list(self.on), "when": self.when, "hook": self.hook}

    def __str__(self) -> str:
        terms = [f"on {', '.join(self.on)}" if self.on is not None else "everywhere"]
        terms += [f"when {self.when}"] if self.when else []
        terms += [_gate_text(self.hook)] if self.hook else []
        return f"{' '.join(terms)} [{self.rule}]"


@dataclass(frozen=True)
class ActionPermission:
    """What the subject may do with one action.

    `always`: allowed for every request considered (every resource and none, or the one
    resource asked about), whatever the context. Otherwise it is allowed where one of
    `grants` applies, except where one of `excepts` applies, and only if the `guards` that
    cover the request hold.
    """

    action: str
    always: bool
    grants: tuple[Grant, ...]
    excepts: tuple[Restriction, ...]
    guards: tuple[Guard, ...]
    levels: tuple[LevelRights, ...] = field(repr=False, compare=False)
    example: Request | None = field(default=None, compare=False)
    all_guards: tuple[Guard, ...] = field(default=(), repr=False, compare=False)

    def decide(
        self, resource: str | None, when: ConditionOracle = folded, hook: HookOracle = unknown_hook
    ) -> bool | None:
        """Whether a request on `resource` is allowed: True, False, or None when it depends on a
        condition or hook `when`/`hook` (outcome oracles, by default constants only) do not know."""
        if resource is not None and not valid_resource(resource):
            return False
        return decide_chain(self.levels, self.all_guards, self.action, resource, when, hook)

    def terms(self, *, with_resources: bool = True) -> list[str]:
        """The grants, exceptions and guards as lines of text."""
        lines = [f"allowed {g.describe(with_resources=with_resources)}" for g in self.grants]
        lines += [f"except {e}" for e in self.excepts]
        for g in self.guards:
            on = f" on {', '.join(g.on)}" if g.on is not None and with_resources else ""
            lines.append(f"guard {g.rule}{on}: require {g.require}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "always": self.always,
            "grants": [g.to_dict() for g in self.grants],
            "except": [e.to_dict() for e in self.excepts],
            "guards": [
                {"rule": g.rule, "on": g.on and list(g.on), "require": g.require} for g in self.guards
            ],
        }


def action_permission(
    action: str, levels: tuple[LevelRights, ...], guards: tuple[Guard, ...], resource: str | None = None
) -> ActionPermission:
    """What a chain of levels (own first) allows for `action`, every request or those on `resource`;
    `guards` are those covering the action."""
    if resource is not None:
        verdict = decide_chain(levels, guards, action, resource)
        example = None if verdict is False else Request(resource)
        always = verdict is True
    else:
        blocking = tuple(g.on for g in guards if constant(g.require) is False)
        example = possible_request(levels, blocking)
        always = example is not None and _always(levels, guards)
    grants = _grants(levels, resource) if example is not None else ()
    granted = tuple(g.on for g in grants)
    excepts = _excepts(levels, granted, resource)
    relevant = tuple(
        g
        for g in guards
        if constant(g.require) is not True and granted and find_request([granted, (g.on,)]) is not None
    )
    shown = tuple(g for g in relevant if resource is None or in_scope(g.on, resource))
    return ActionPermission(action, always, grants, excepts, shown, levels, example, guards)


def _always(levels: tuple[LevelRights, ...], guards: tuple[Guard, ...]) -> bool:
    """Every request allowed whatever the context: an unconditional grant of every request at every
    level, nothing that may deny, no guard that may fail."""
    for lv in levels:
        grants, denies = lv.certain()
        if None not in grants or denies:
            return False
    return all(constant(g.require) is True for g in guards)


def _grants(levels: tuple[LevelRights, ...], resource: str | None) -> tuple[Grant, ...]:
    """The cross product of the levels' grants, scopes intersected, conditions combined."""
    per_level: list[list[Grant]] = []
    for lv in levels:
        options: dict[tuple[str | None, str | None], Grant] = {}
        for a in lv.allows:
            fixed = None if a.when is None else constant(a.when)
            if fixed is False or (resource is not None and not in_scope(a.on, resource)):
                continue
            when = () if a.when is None or fixed is True else (a.when,)
            hooks = () if a.gate is None else (a.gate,)
            k = (a.when if when else None, a.gate)
            prev = options.get(k)
            if prev is None:
                options[k] = Grant(a.on, when, hooks, (a.rule,))
            else:
                union = None if prev.on is None or a.on is None else minimal((*prev.on, *a.on))
                options[k] = Grant(union, when, hooks, (*prev.rules, a.rule))
        per_level.append(list(options.values()))
    out: list[Grant] = []
    for combo in itertools.product(*per_level):
        on: Scope = None
        for g in combo:
            on = _meet(on, g.on)
            if on == ():
                break
        if on == ():
            continue
        out.append(
            Grant(
                on,
                tuple(dict.fromkeys(w for g in combo for w in g.when)),
                tuple(dict.fromkeys(h for g in combo for h in g.hooks)),
                tuple(dict.fromkeys(r for g in combo for r in g.rules)),
            )
        )
    return tuple(out)


def _meet(a: Scope, b: Scope) -> Scope:
    if a is None:
        return b
    if b is None:
        return a
    return minimal(p for x in a for y in b for p in intersect(x, y))


def _excepts(
    levels: tuple[LevelRights, ...], granted: tuple[Scope, ...], resource: str | None
) -> tuple[Restriction, ...]:
    """The denies that may take away part of what the grants give."""
    out: list[Restriction] = []
    for lv in levels:
        for d in lv.denies:
            fixed = None if d.when is None else constant(d.when)
            if fixed is False or (resource is not None and not in_scope(d.on, resource)):
                continue
            if granted and find_request([granted, (d.on,)]) is not None:
                out.append(Restriction(d.rule, d.on, None if fixed is True else d.when, d.gate))
    return tuple(dict.fromkeys(out))


def _gate_text(gate: str) -> str:
    """A gate (`hook`, `approval:<condition>`, or both) as words."""
    words = [
        f"with an approval when `{g[9:]}`" if g.startswith("approval:") else f"if hook `{g}` agrees"
        for g in gate.split(" and ")
    ]
    return " and ".join(words)
