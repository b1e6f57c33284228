"""What credential checks need from the policy: each template's actions, lifetimes and delegation depth.

`PolicyView` is built lazily from the compiled policy's canonical JSON (and
dropped on reload). It answers the questions `authenticate` and an issuer
with `policy=engine` ask about a delegation chain: do its templates exist,
is it too deep, does any scope claim an action its templates (or its
delegators') do not grant, does a credential outlive its template's `max_ttl`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final

import msgspec

from charter.errors import AuthenticationError
from charter.tokens import Level

__all__ = ["DEFAULT_DEPTH", "PolicyView"]

DEFAULT_DEPTH: Final = 4
"""The delegation depth a template allows when it sets no `max_delegation_depth`."""

_UNSET: Any = object()


class _Template(msgspec.Struct, frozen=True):
    actions: frozenset[str]
    ttl: float | None
    max_ttl: float | None
    max_depth: int


class PolicyView:
    """What credential checks need from the policy: each template's actions, lifetimes and depth.

    A template's actions are those some allow entry of its roles (closed
    under `inherits`) grants, on any resource or condition, minus those an
    unconditional deny (no `on`, no `when`) takes away: the most any agent of
    the template could ever do.
    """

    def __init__(self, policy_json: bytes) -> None:
        doc = msgspec.json.decode(policy_json)
        self.actions: tuple[str, ...] = tuple(doc.get("actions", ()))
        self._tools: dict[str, set[str]] = {}
        for a in self.actions:
            self._tools.setdefault(a.split(":", 1)[0], set()).add(a)
        roles: dict[str, Any] = doc.get("roles", {})
        self._vetted: dict[tuple[tuple[str | None, tuple[str, ...] | None], ...], Any] = {}
        self.templates: dict[str, _Template] = {}
        for name, t in doc.get("templates", {}).items():
            closure = _closure(roles, t.get("roles", ()))
            allowed: set[str] = set()
            denied: set[str] = set()
            for r in closure:
                for entry in roles.get(r, {}).get("allow", ()):
                    allowed |= self._entry_actions(entry)
                for entry in roles.get(r, {}).get("deny", ()):
                    # Only a deny that holds everywhere, always, takes an action off the template.
                    if isinstance(entry, str) or entry.keys() <= {"action"}:
                        denied |= self._entry_actions(entry)
            self.templates[name] = _Template(
                frozenset(allowed - denied),
                t.get("ttl"),
                t.get("max_ttl"),
                t.get("max_delegation_depth") or DEFAULT_DEPTH,
            )

    def expand(self, pattern: str) -> set[str]:
        """The declared actions a name or pattern covers."""
        if pattern == "*":
            return set(self.actions)
        tool, _, verb = pattern.partition(":")
        if verb == "*":
            return set(self._tools.get(tool, ()))
        return {pattern} if pattern in self._tools.get(tool, ()) else set()

    def _entry_actions(self, entry: Any) -> set[str]:
        names = entry if isinstance(entry, str) else entry.get("action", ())
        out: set[str] = set()
        for n in [names] if isinstance(names, str) else names:
            out |= self.expand(n)
        return out

    def provisionable(self, scope: tuple[str, ...] | None) -> list[str] | None:
        """The scope as the engine takes it: patterns that match nothing dropped (they narrow nothing)."""
        return None if scope is None else [s for s in scope if self.expand(s)]

    def vet(self, levels: Sequence[Level], shape: tuple[Any, ...] | None = None) -> None:
        """Refuse a chain (the subject first, then its delegators) the policy would not produce.

        Templates must exist; the chain may not be deeper than any of its
        templates allows; every action a level names exactly must be granted
        by its template and every delegator's; a level's scope must lie within
        its delegators' scopes. The verdict depends only on the templates and
        scopes along the chain, so it is remembered per chain `shape` (`Credential.shape`).
        """
        key = shape if shape is not None else tuple((lvl.template, lvl.scope) for lvl in levels)
        verdict = self._vetted.get(key, _UNSET)
        if verdict is None:
            return
        if verdict is not _UNSET:
            raise AuthenticationError(*verdict)
        try:
            self._vet([lvl for lvl in levels if lvl.is_agent])
        except AuthenticationError as err:
            verdict = (err.reason, err.message)
            raise
        finally:
            if len(self._vetted) >= 65_536:
                self._vetted.clear()
            self._vetted[key] = verdict if verdict is not _UNSET else None

    def _vet(self, agents: Sequence[Level]) -> None:
        templates = []
        for lvl in agents:
            t = self.templates.get(str(lvl.template))
            if t is None:
                raise AuthenticationError("unknown_template", f"no template `{lvl.template}`")
            templates.append(t)
        bound = min((t.max_depth for t in templates), default=DEFAULT_DEPTH)
        if len(agents) > bound:
            raise AuthenticationError("too_deep", f"depth {len(agents)} exceeds {bound}")
        granted = set(self.actions)
        within: set[str] | None = None
        for lvl, t in zip(reversed(agents), reversed(templates), strict=True):  # root first
            granted &= t.actions
            if lvl.scope is None:
                continue
            beyond = [s for s in lvl.scope if "*" not in s and s not in granted]
            if beyond:
                raise AuthenticationError(
                    "scope_escalation", f"{beyond} not granted to `{lvl.template}` along its chain"
                )
            expanded = set().union(*(self.expand(s) for s in lvl.scope))
            if within is not None and not expanded <= within:
                wider = sorted(expanded - within)
                raise AuthenticationError(
                    "scope_escalation", f"{wider} beyond the delegator's scope (`{lvl.template}`)"
                )
            within = expanded if within is None else within & expanded

    def check_lifetime(self, template: str, lifetime: float, leeway: float = 0.0) -> None:
        """`ttl_exceeded` if a credential of `template` lives longer than its `max_ttl` (plus leeway)."""
        t = self.templates.get(template)
        if t is not None and t.max_ttl is not None and lifetime > t.max_ttl + leeway:
            raise AuthenticationError(
                "ttl_exceeded", f"{lifetime:g}s exceeds the `max_ttl` ({t.max_ttl:g}s) of `{template}`"
            )


def _closure(roles: Mapping[str, Any], start: Collection[str]) -> set[str]:
    seen: set[str] = set()
    stack = list(start)
    while stack:
        r = stack.pop()
        if r not in seen:
            seen.add(r)
            stack.extend(roles.get(r, {}).get("inherits", ()))
    return seen
