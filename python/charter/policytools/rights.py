"""What a level (or a chain of levels) allows for one action, as data, and decisions from it.

A level's rights for an action are the allow entries that could grant it and the deny
entries that could take it away, each with its scope, `when` and `hook`. `decide` applies
the engine's rules to them (docs/policy.md, "Decisions") with three-valued logic: a
condition or hook whose outcome is not known makes the answer None ("it depends") unless
the rest decides anyway. Constant conditions are folded, so `when = "1 < 2"` is known.

`possible` and `certain` describe the resources where a level may allow / surely allows an
action, for the set questions of lint, who-can and diff.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from charter.policytools.conditions import constant
from charter.policytools.model import Entry, Guard
from charter.policytools.patterns import Request, Scope, find_request, in_scope

ERROR: Literal["error"] = "error"
Outcome = bool | Literal["error"] | None
"""A condition's or hook's outcome: True, False, "error", or None (not known)."""

ConditionOracle = Callable[[str], Outcome]
"""`condition source -> outcome`; None (not known) falls back to the condition's constant value."""
HookOracle = Callable[[str, str], Outcome]
"""`(gate, rule) -> outcome`: the gate is a hook's name, or `approval:<name>` (see `Entry.gate`)."""


def folded(source: str) -> Outcome:
    """The default oracle: a condition's constant value if it folds to one, else not known."""
    return constant(source)


def unknown_hook(hook: str, rule: str) -> Outcome:
    """The default hook oracle: hooks are Python code, their outcome is not known."""
    return None


def _or(a: bool | None, b: bool | None) -> bool | None:
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


def _and(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


@dataclass(frozen=True)
class LevelRights:
    """The entries of one level that bear on one action: allows first-to-last, denies likewise."""

    allows: tuple[Entry, ...]
    denies: tuple[Entry, ...]

    @classmethod
    def of(cls, entries: Sequence[Entry], action: str) -> LevelRights:
        """The level's entries covering `action` (entries in the engine's walking order)."""
        mine = [e for e in entries if action in e.actions]
        return cls(
            tuple(e for e in mine if e.effect == "allow"),
            tuple(e for e in mine if e.effect == "deny"),
        )

    def decide(
        self,
        resource: str | None,
        when: ConditionOracle = folded,
        hook: HookOracle = unknown_hook,
    ) -> bool | None:
        """Whether the level allows a request on `resource` (None: no resource)."""
        denied: bool | None = False
        for d in self.denies:
            if in_scope(d.on, resource):
                denied = _or(denied, _deny_applies(d, when, hook))
        granted: bool | None = False
        for a in self.allows:
            if a.gate is None and in_scope(a.on, resource):
                granted = _or(granted, _holds(a.when, when))
        if granted is not True:
            granted = _or(granted, self._hooked(resource, when, hook))
        return _and(None if denied is None else not denied, granted)

    def _hooked(self, resource: str | None, when: ConditionOracle, hook: HookOracle) -> bool | None:
        # The first hooked allow whose condition holds decides by its hook.
        for a in self.allows:
            if a.gate is None or not in_scope(a.on, resource):
                continue
            held = _holds(a.when, when)
            if held is False:
                continue
            if held is None:
                return None
            said = hook(a.gate, a.rule)
            return None if said is None else said is True
        return False

    def possible(self) -> tuple[tuple[Scope, ...], tuple[Scope, ...]]:
        """(scopes where some allow may grant, scopes every request of which a deny surely denies)."""
        grants = tuple(a.on for a in self.allows if _holds(a.when, folded) is not False)
        denies = tuple(d.on for d in self.denies if _certain_deny(d))
        return grants, denies

    def certain(self) -> tuple[tuple[Scope, ...], tuple[Scope, ...]]:
        """(scopes where an allow surely grants, scopes where a deny may apply)."""
        grants = tuple(a.on for a in self.allows if a.gate is None and _holds(a.when, folded) is True)
        denies = tuple(d.on for d in self.denies if _deny_applies(d, folded, unknown_hook) is not False)
        return grants, denies


def _outcome(source: str, when: ConditionOracle) -> Outcome:
    """What the oracle says of a condition; what folding says if the oracle does not know."""
    outcome = when(source)
    return constant(source) if outcome is None else outcome


def _holds(source: str | None, when: ConditionOracle) -> bool | None:
    """Whether an allow's condition lets it grant: only a true condition does."""
    if source is None:
        return True
    outcome = _outcome(source, when)
    return None if outcome is None else outcome is True


def _deny_applies(d: Entry, when: ConditionOracle, hook: HookOracle) -> bool | None:
    outcome: Outcome = True if d.when is None else _outcome(d.when, when)
    if outcome == ERROR:
        return True  # a deny that cannot be evaluated denies
    if outcome is not True:
        return None if outcome is None else False
    if d.gate is None:
        return True
    said = hook(d.gate, d.rule)
    return None if said is None else said is not False


def _certain_deny(d: Entry) -> bool:
    return _deny_applies(d, folded, unknown_hook) is True


def guards_pass(
    guards: Sequence[Guard], action: str, resource: str | None, when: ConditionOracle = folded
) -> bool | None:
    """Whether every guard covering the request has its `require` hold."""
    out: bool | None = True
    for g in guards:
        if action in g.actions and in_scope(g.on, resource):
            outcome = _outcome(g.require, when)
            out = _and(out, None if outcome is None else outcome is True)
    return out


def decide_chain(
    levels: Sequence[LevelRights],
    guards: Sequence[Guard],
    action: str,
    resource: str | None,
    when: ConditionOracle = folded,
    hook: HookOracle = unknown_hook,
) -> bool | None:
    """Whether a chain allows the request: every level must, then every guard covering it."""
    out: bool | None = True
    for level in levels:
        out = _and(out, level.decide(resource, when, hook))
        if out is False:
            return False
    return _and(out, guards_pass(guards, action, resource, when))


def possible_request(levels: Sequence[LevelRights], blocking: Sequence[Scope] = ()) -> Request | None:
    """A request every level may allow (conditions and hooks assumed favourable) outside the
    `blocking` scopes (guards that always fail), or None."""
    if not levels or any(not level.allows for level in levels):
        return None
    required: list[tuple[Scope, ...]] = []
    forbidden: list[Scope] = list(blocking)
    for level in levels:
        grants, denies = level.possible()
        required.append(grants)
        forbidden.extend(denies)
    return find_request(required, forbidden)


def granting_actions(entries: Sequence[Entry]) -> dict[str, LevelRights]:
    """`LevelRights.of(entries, a)` for every action `a` some allow entry covers (the others grant
    nothing), in one pass over the entries."""
    allows: dict[str, list[Entry]] = {}
    denies: dict[str, list[Entry]] = {}
    for e in entries:
        into = allows if e.effect == "allow" else denies
        for a in e.actions:
            into.setdefault(a, []).append(e)
    return {a: LevelRights(tuple(es), tuple(denies.get(a, ()))) for a, es in allows.items()}
