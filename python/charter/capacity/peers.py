"""The same decision workload in pycasbin and cedarpy, for `charter bench --compare`.

What is translated is the policy's role-based core (`generator.rbac_core`):
roles with inheritance, allow and deny entries (deny overrides), action
wildcards and resource patterns. A request by an agent is allowed in
Charter only if every level of its delegation chain allows it (its
template's roles, each delegator's, its principal's); neither peer has
delegation, so each level is one authorization call there and the answers
are ANDed, stopping at the first refusal, as an application using them
would do.

- **Casbin** (`casbin` on PyPI): an RBAC model with a deny-override effect;
  `g` lines give templates, principals and roles their roles; action
  patterns through `keyMatch` (`t01:*`, `*`); resource patterns become
  anchored regular expressions through `regexMatch` (`*` one segment, `**`
  any number), `*` standing for "any request" on entries without `on`.
- **Cedar** (`cedarpy`): one `permit` or `forbid` per entry; roles,
  templates and principals are entities whose parents are their roles;
  `t01:*` is an action group; a resource is an entity whose parents are the
  patterns it matches (Cedar's way: the application supplies the entity
  graph), so `on = [...]` is `resource in [Pattern::...]`.

`tests/test_capacity.py` checks that both give Charter's decision on random
requests; `charter bench --compare` checks it again on the measured requests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "NONE_RESOURCE",
    "CasbinPeer",
    "CedarPeer",
    "available",
    "pattern_matches",
    "pattern_regex",
]

NONE_RESOURCE = "#none"
"""What stands for "no resource" in the peers' requests (matches no pattern)."""

Level = tuple[str, str]
"""A chain level: ("template", name) or ("principal", id)."""


def available() -> dict[str, str | None]:
    """Each peer's version, or None when it is not installed (`pip install 'charter[compare]'`)."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in ("casbin", "cedarpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def pattern_regex(pattern: str) -> str:
    """A Charter resource pattern as an anchored regex over `"/" + name`."""
    parts = []
    for seg in pattern.split("/"):
        if seg == "**":
            parts.append("(?:/[^/]+)*")
        elif seg == "*":
            parts.append("/[^/]+")
        else:
            parts.append("/" + re.escape(seg))
    return "^" + "".join(parts) + "$"


def pattern_matches(pattern: str, resource: str) -> bool:
    """Whether a Charter resource pattern matches a (valid) resource name."""
    return re.match(pattern_regex(pattern), "/" + resource) is not None


def _entries(role: Mapping[str, Any], kind: str) -> Iterable[tuple[list[str], list[str] | None]]:
    """(action patterns, resource patterns or None) of a role's allow or deny entries."""
    for entry in role.get(kind, ()):
        if isinstance(entry, str):
            yield [entry], None
        else:
            actions = entry["action"]
            yield ([actions] if isinstance(actions, str) else list(actions)), entry.get("on")


def _expand(policy: Mapping[str, Any], on: Sequence[str]) -> list[str]:
    """Resource patterns with `@class` references replaced by the class's patterns."""
    classes = policy.get("resources", {})
    out: list[str] = []
    for pattern in on:
        out += classes[pattern[1:]] if pattern.startswith("@") else [pattern]
    return list(dict.fromkeys(out))


def _subject(level: Level) -> str:
    kind, name = level
    return f"tpl:{name}" if kind == "template" else f"user:{name}"


# ------------------------------------------------------------ casbin

CASBIN_MODEL = """
[request_definition]
r = sub, obj, act

[policy_definition]
p = sub, obj, act, eft

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))

[matchers]
m = g(r.sub, p.sub) && keyMatch(r.act, p.act) && (p.obj == "*" || regexMatch(r.obj, p.obj))
"""


def casbin_rules(policy: Mapping[str, Any]) -> tuple[list[list[str]], list[list[str]]]:
    """(`p` lines, `g` lines) for `CASBIN_MODEL`."""
    p_lines: list[list[str]] = []
    for name, role in policy.get("roles", {}).items():
        for kind, eft in (("allow", "allow"), ("deny", "deny")):
            for actions, on in _entries(role, kind):
                objs = ["*"] if on is None else [pattern_regex(x) for x in _expand(policy, on)]
                p_lines += [[f"role:{name}", obj, act, eft] for act in actions for obj in objs]
    g_lines: list[list[str]] = []
    for name, role in policy.get("roles", {}).items():
        g_lines += [[f"role:{name}", f"role:{parent}"] for parent in role.get("inherits", ())]
    for name, t in policy.get("templates", {}).items():
        g_lines += [[_subject(("template", name)), f"role:{r}"] for r in t.get("roles", ())]
    for name, pr in policy.get("principals", {}).items():
        g_lines += [[_subject(("principal", name)), f"role:{r}"] for r in pr.get("roles", ())]
    return [list(x) for x in dict.fromkeys(tuple(x) for x in p_lines)], g_lines


class CasbinPeer:
    """The workload's policy in a pycasbin `Enforcer`."""

    name = "casbin"

    def __init__(self, policy: Mapping[str, Any]) -> None:
        import casbin  # type: ignore[import-not-found, import-untyped, unused-ignore]

        model = casbin.model.Model()
        model.load_model_from_text(CASBIN_MODEL)
        self.enforcer = casbin.Enforcer(model)
        p_lines, g_lines = casbin_rules(policy)
        if p_lines:
            self.enforcer.add_policies(p_lines)
        if g_lines:
            self.enforcer.add_grouping_policies(g_lines)
        self.rules = len(p_lines) + len(g_lines)

    def decide(self, chain: Sequence[Level], action: str, resource: str | None) -> bool:
        """Every level of the chain allows (stops at the first that does not)."""
        obj = "/" + resource if resource is not None else NONE_RESOURCE
        enforce = self.enforcer.enforce
        return all(enforce(_subject(level), obj, action) for level in chain)

    def decide_batch(
        self, chains: Sequence[Sequence[Level]], actions: Sequence[str], resources: Sequence[str | None]
    ) -> list[bool]:
        """`batch_enforce` per level depth: every request's first level, then the second of those still allowed..."""
        out = [True] * len(chains)
        depth = 0
        while True:
            todo = [i for i, c in enumerate(chains) if out[i] and depth < len(c)]
            if not todo:
                return out
            rows = [
                [
                    _subject(chains[i][depth]),
                    "/" + r if (r := resources[i]) is not None else NONE_RESOURCE,
                    actions[i],
                ]
                for i in todo
            ]
            for i, ok in zip(todo, self.enforcer.batch_enforce(rows), strict=True):
                out[i] = bool(ok)
            depth += 1


# ------------------------------------------------------------ cedar


def _euid(kind: str, ident: str) -> dict[str, str]:
    return {"type": kind, "id": ident}


def _literal(kind: str, ident: str) -> str:
    return f"{kind}::{json.dumps(ident)}"


def cedar_policies(policy: Mapping[str, Any]) -> str:
    """One `permit` per allow entry and one `forbid` per deny entry."""
    statements = []
    for name, role in policy.get("roles", {}).items():
        for kind, effect in (("allow", "permit"), ("deny", "forbid")):
            for actions, on in _entries(role, kind):
                if "*" in actions:
                    action = "action"
                else:
                    action = "action in [" + ", ".join(_literal("Action", a) for a in actions) + "]"
                head = f"{effect}(principal in {_literal('Role', name)}, {action}, resource)"
                if on is not None:
                    pats = ", ".join(_literal("Pattern", x) for x in _expand(policy, on))
                    head += f" when {{ resource in [{pats}] }}"
                statements.append(head + ";")
    return "\n".join(statements)


def cedar_entities(policy: Mapping[str, Any], resources: Iterable[str]) -> list[dict[str, Any]]:
    """Roles, templates, principals, actions (with `tool:*` groups), patterns and the resources."""

    def entity(kind: str, ident: str, parents: Iterable[tuple[str, str]] = ()) -> dict[str, Any]:
        return {"uid": _euid(kind, ident), "attrs": {}, "parents": [_euid(k, i) for k, i in parents]}

    out = []
    for name, role in policy.get("roles", {}).items():
        out.append(entity("Role", name, (("Role", p) for p in role.get("inherits", ()))))
    for kind, key in (("template", "templates"), ("principal", "principals")):
        for name, holder in policy.get(key, {}).items():
            out.append(
                entity("Subject", _subject((kind, name)), (("Role", r) for r in holder.get("roles", ())))
            )
    tools = sorted({a.split(":", 1)[0] for a in policy.get("actions", ())})
    out += [entity("Action", f"{t}:*") for t in tools]
    out += [entity("Action", a, [("Action", a.split(":", 1)[0] + ":*")]) for a in policy.get("actions", ())]
    patterns = sorted(
        {
            x
            for r in policy.get("roles", {}).values()
            for kind in ("allow", "deny")
            for _, on in _entries(r, kind)
            if on
            for x in _expand(policy, on)
        }
    )
    out += [entity("Pattern", x) for x in patterns]
    for name in dict.fromkeys(resources):
        out.append(entity("Resource", name, (("Pattern", x) for x in patterns if pattern_matches(x, name))))
    out.append(entity("Resource", NONE_RESOURCE))
    return out


class CedarPeer:
    """The workload's policy as a cedarpy `PolicySet` and `Entities`, parsed once."""

    name = "cedar"

    def __init__(self, policy: Mapping[str, Any], resources: Iterable[str]) -> None:
        import cedarpy  # type: ignore[import-not-found, import-untyped, unused-ignore]

        self._cedarpy = cedarpy
        text = cedar_policies(policy)
        self.policies = cedarpy.PolicySet.from_str(text)
        self.entities = cedarpy.Entities.from_json_str(json.dumps(cedar_entities(policy, resources)))
        self.rules = text.count(";")

    @staticmethod
    def request(level: Level, action: str, resource: str | None) -> dict[str, Any]:
        return {
            "principal": _euid("Subject", _subject(level)),
            "action": _euid("Action", action),
            "resource": _euid("Resource", resource if resource is not None else NONE_RESOURCE),
            "context": {},
        }

    def decide(self, chain: Sequence[Level], action: str, resource: str | None) -> bool:
        """Every level of the chain allows (stops at the first that does not)."""
        is_authorized, ps, ents = self._cedarpy.is_authorized, self.policies, self.entities
        return all(is_authorized(self.request(level, action, resource), ps, ents).allowed for level in chain)

    def decide_batch(
        self, chains: Sequence[Sequence[Level]], actions: Sequence[str], resources: Sequence[str | None]
    ) -> list[bool]:
        """`is_authorized_batch` per level depth, as `CasbinPeer.decide_batch`."""
        out = [True] * len(chains)
        depth = 0
        while True:
            todo = [i for i, c in enumerate(chains) if out[i] and depth < len(c)]
            if not todo:
                return out
            reqs = [self.request(chains[i][depth], actions[i], resources[i]) for i in todo]
            results = self._cedarpy.is_authorized_batch(reqs, self.policies, self.entities)
            for i, res in zip(todo, results, strict=True):
                out[i] = bool(res.allowed)
            depth += 1
