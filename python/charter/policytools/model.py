"""A policy document resolved the way the compiler resolves it: entries with their actions
expanded, `@class` references replaced by the class's patterns, roles closed under `inherits`.

The tools (lint, who-can, diff, coverage) reason over this view. It follows the documented
semantics (docs/policy.md) step by step; tests/test_permissions.py checks it against the
engine's own explanations on random policies.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from charter.policy import Entry as DocEntry
from charter.policy import Policy, key
from charter.policytools.patterns import Scope

Effect = Literal["allow", "deny"]


@dataclass(frozen=True)
class Entry:
    """One allow or deny entry, resolved. `on` is its scope (None: every request)."""

    rule: str
    role: str
    effect: Effect
    actions: frozenset[str]
    action_patterns: tuple[str, ...]
    on: Scope
    written_on: tuple[str, ...] | None
    when: str | None = None
    hook: str | None = None
    approval: str | None = None

    @property
    def gate(self) -> str | None:
        """What besides the request decides whether the entry applies: its hook and/or its
        approval (`approval:<name>`), neither of which the tools can know in advance."""
        parts = [p for p in (self.hook, self.approval and f"approval:{self.approval}") if p]
        return " and ".join(parts) or None


@dataclass(frozen=True)
class Guard:
    """A `[[guards]]` table, resolved: `actions` expanded, `on` its scope."""

    rule: str
    actions: frozenset[str]
    on: Scope
    written_on: tuple[str, ...] | None
    require: str
    reason: str | None


class PolicyModel:
    """The resolved view of a validated `charter.policy.Policy`."""

    def __init__(self, doc: Policy) -> None:
        self.doc = doc
        self.actions: tuple[str, ...] = tuple(doc.actions)
        self.classes: dict[str, tuple[str, ...]] = {n: tuple(ps) for n, ps in doc.resources.items()}
        self._tools: dict[str, list[str]] = {}
        for a in self.actions:
            self._tools.setdefault(a.split(":", 1)[0], []).append(a)
        self.role_names: tuple[str, ...] = tuple(sorted(doc.roles))
        self.entries: dict[str, tuple[Entry, ...]] = {
            name: self._role_entries(name) for name in self.role_names
        }
        self.guards: tuple[Guard, ...] = tuple(
            Guard(
                rule=f"guards[{i}]",
                actions=frozenset(self.actions) if g.actions is None else self.expand_actions(g.actions),
                on=self.scope(g.on),
                written_on=None if g.on is None else tuple(g.on),
                require=g.require,
                reason=g.reason,
            )
            for i, g in enumerate(doc.guards)
        )
        self.principals: dict[str, tuple[str, ...]] = {p: tuple(v.roles) for p, v in doc.principals.items()}
        self.templates: dict[str, tuple[str, ...]] = {t: tuple(v.roles) for t, v in doc.templates.items()}
        self._closures: dict[frozenset[str], tuple[str, ...]] = {}
        self._role_closures: dict[str, frozenset[str]] = {}

    def expand_actions(self, patterns: Iterable[str]) -> frozenset[str]:
        """Declared actions named by `*`, `tool:*` or exact names."""
        out: set[str] = set()
        for p in patterns:
            if p == "*":
                out.update(self.actions)
            elif p.endswith(":*"):
                out.update(self._tools.get(p[:-2], ()))
            elif p in self.actions:
                out.add(p)
        return frozenset(out)

    def scope(self, on: Sequence[str] | None) -> Scope:
        """An `on` list with `@class` references replaced by the class's patterns."""
        if on is None:
            return None
        out: list[str] = []
        for p in on:
            out.extend(self.classes.get(p[1:], ()) if p.startswith("@") else (p,))
        return tuple(dict.fromkeys(out))

    def _role_entries(self, name: str) -> tuple[Entry, ...]:
        role = self.doc.roles[name]
        out: list[Entry] = []
        for effect, items in (("allow", role.allow), ("deny", role.deny)):
            for i, item in enumerate(items):
                doc_entry = DocEntry(action=item) if isinstance(item, str) else item
                patterns = (
                    (doc_entry.action,) if isinstance(doc_entry.action, str) else tuple(doc_entry.action)
                )
                out.append(
                    Entry(
                        rule=f"roles.{key(name)}.{effect}[{i}]",
                        role=name,
                        effect=effect,  # type: ignore[arg-type]
                        actions=self.expand_actions(patterns),
                        action_patterns=patterns,
                        on=self.scope(doc_entry.on),
                        written_on=None if doc_entry.on is None else tuple(doc_entry.on),
                        when=doc_entry.when,
                        hook=doc_entry.hook,
                        approval=getattr(doc_entry, "approval", None),
                    )
                )
        return tuple(out)

    def closure(self, roles: Iterable[str]) -> tuple[str, ...]:
        """The roles and everything they inherit, in the engine's order (by name)."""
        wanted = frozenset(roles)
        cached = self._closures.get(wanted)
        if cached is None:
            out: set[str] = set()
            for r in wanted:
                out |= self._role_closure(r)
            cached = self._closures[wanted] = tuple(sorted(out))
        return cached

    def _role_closure(self, role: str) -> frozenset[str]:
        # Depth first without recursion (inheritance chains may be long); the compiler refused
        # cycles, so every role is finished once its parents are.
        stack = [role]
        while stack:
            r = stack[-1]
            if r in self._role_closures:
                stack.pop()
                continue
            parents = [
                p for p in (self.doc.roles[r].inherits if r in self.doc.roles else ()) if p in self.doc.roles
            ]
            todo = [p for p in parents if p not in self._role_closures]
            if todo:
                stack.extend(todo)
                continue
            self._role_closures[r] = frozenset({r}).union(*(self._role_closures[p] for p in parents))
            stack.pop()
        return self._role_closures[role]

    def level_entries(self, roles: Iterable[str]) -> tuple[Entry, ...]:
        """Every entry of the closure of `roles`: denies first, then allows, each by role then index
        (the order in which the engine walks a level's entries)."""
        closure = self.closure(roles)
        entries = [e for r in closure for e in self.entries[r]]
        return tuple([e for e in entries if e.effect == "deny"] + [e for e in entries if e.effect == "allow"])

    @cached_property
    def all_entries(self) -> tuple[Entry, ...]:
        """Every entry of every role, by role then allow/deny then index."""
        return tuple(e for r in self.role_names for e in self.entries[r])

    @cached_property
    def held_roles(self) -> frozenset[str]:
        """Roles some principal or template holds, directly or through inheritance."""
        held = [r for roles in (*self.principals.values(), *self.templates.values()) for r in roles]
        return frozenset(self.closure(held))
