"""A pure-Python reference model of Charter's decisions, written from the semantics in the brief.

It reads the same policy dict the engine takes (actions, resources, roles, principals,
templates) and decides a request made by a principal (`check_principal`) or by an agent
described by its chain of template names, own template first, up to an optional root
principal (`check_agent`). Agent lifecycle (revocation, expiry) is not modelled here: the
callers only ask about active agents, whose root principal is in the policy.

Every function is a direct transcription of one rule; nothing is optimised.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Policy = Mapping[str, Any]

MAX_RESOURCE_BYTES = 4096
DEFAULT_MAX_DEPTH = 4


@dataclass(frozen=True)
class Result:
    """A decision: `rules` holds every rule the engine may report (empty when it reports None);
    `also` other reasons the semantics allow where they leave the choice open."""

    allowed: bool
    reason: str
    rules: frozenset[str] = frozenset()
    also: frozenset[str] = frozenset()

    def accepts(self, reason: str) -> bool:
        return reason == self.reason or reason in self.also


# --- resources ---------------------------------------------------------------------------


def resource_is_valid(resource: str) -> bool:
    # A name that is empty, starts/ends with `/`, contains `//` or exceeds 4096 bytes is invalid.
    return (
        resource != ""
        and not resource.startswith("/")
        and not resource.endswith("/")
        and "//" not in resource
        and len(resource.encode("utf-8")) <= MAX_RESOURCE_BYTES
    )


def segments_match(pattern: Sequence[str], name: Sequence[str]) -> bool:
    # Recursion over segments: `**` = zero or more segments, `*` = exactly one, else literal.
    if not pattern:
        return not name
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return segments_match(rest, name) or (bool(name) and segments_match(pattern, name[1:]))
    if not name:
        return False
    return (head == "*" or head == name[0]) and segments_match(rest, name[1:])


def pattern_matches(policy: Policy, pattern: str, resource: str) -> bool:
    # `@name` stands for the class's list of patterns; any of them may match.
    if pattern.startswith("@"):
        return any(pattern_matches(policy, p, resource) for p in policy.get("resources", {})[pattern[1:]])
    return segments_match(pattern.split("/"), resource.split("/"))


# --- actions and entries -----------------------------------------------------------------


def action_covered(policy: Policy, pattern: str, action: str) -> bool:
    # `*` = every declared action; `tool:*` = the declared actions of that tool; else exact name.
    if action not in policy.get("actions", []):
        return False
    if pattern == "*":
        return True
    if pattern.endswith(":*"):
        return action.split(":")[0] == pattern[:-2]
    return pattern == action


def entry_matches(policy: Policy, entry: str | Mapping[str, Any], action: str, resource: str | None) -> bool:
    # A string entry is an action pattern without `on`.
    if isinstance(entry, str):
        entry = {"action": entry}
    patterns = [entry["action"]] if isinstance(entry["action"], str) else entry["action"]
    if not any(action_covered(policy, p, action) for p in patterns):
        return False
    # No `on`: matches every request, with or without resource.
    if "on" not in entry:
        return True
    # With `on`: never a request without resource; else the resource must match one pattern.
    return resource is not None and any(pattern_matches(policy, p, resource) for p in entry["on"])


# --- levels ------------------------------------------------------------------------------


def role_closure(policy: Policy, roles: Iterable[str]) -> set[str]:
    # A level is a set of roles closed under `inherits` (multiple inheritance, acyclic).
    closed: set[str] = set()
    todo = list(roles)
    while todo:
        role = todo.pop()
        if role not in closed:
            closed.add(role)
            todo.extend(policy["roles"][role].get("inherits", []))
    return closed


def matching_rules(
    policy: Policy, roles: Iterable[str], effect: str, action: str, resource: str | None
) -> set[str]:
    # The rules (`roles.<role>.<effect>[i]`) of the level whose entry of that effect matches.
    return {
        f"roles.{role}.{effect}[{i}]"
        for role in role_closure(policy, roles)
        for i, entry in enumerate(policy["roles"][role].get(effect, []))
        if entry_matches(policy, entry, action, resource)
    }


def level_outcome(
    policy: Policy, roles: Iterable[str], action: str, resource: str | None
) -> tuple[str, set[str]]:
    # Any matching deny -> deny; else any matching allow -> allow; else no_grant.
    roles = list(roles)
    denies = matching_rules(policy, roles, "deny", action, resource)
    if denies:
        return "deny", denies
    allows = matching_rules(policy, roles, "allow", action, resource)
    if allows:
        return "allow", allows
    return "no_grant", set()


def decide_chain(
    policy: Policy, levels: Sequence[Sequence[str]], action: str, resource: str | None
) -> Result:
    # Allowed iff every level allows; the first non-allowing level from the subject upward decides.
    outcomes = [level_outcome(policy, roles, action, resource) for roles in levels]
    for depth, (outcome, rules) in enumerate(outcomes):
        if outcome == "allow":
            continue
        # A delegator's level: `delegator_denied`, reporting its deny entry if it denied.
        if depth >= 1:
            return Result(False, "delegator_denied", frozenset(rules))
        if outcome == "deny":
            return Result(False, "denied_by_rule", frozenset(rules))
        return Result(False, "no_grant")
    # All allow: granted, reporting an allow entry of the subject's own level.
    return Result(True, "granted", frozenset(outcomes[0][1]))


# --- requests ----------------------------------------------------------------------------


def request_errors(policy: Policy, action: str, resource: str | None) -> Result | None:
    # After the subject: an undeclared action, then an invalid resource name.
    if action not in policy.get("actions", []):
        return Result(False, "unknown_action")
    if resource is not None and not resource_is_valid(resource):
        return Result(False, "invalid_resource")
    return None


def check_principal(policy: Policy, principal: str, action: str, resource: str | None = None) -> Result:
    # A principal acting directly: unknown id first, then the one level of its roles.
    if principal not in policy.get("principals", {}):
        return Result(False, "unknown_principal")
    error = request_errors(policy, action, resource)
    if error is not None:
        return error
    return decide_chain(policy, [policy["principals"][principal].get("roles", [])], action, resource)


def check_agent(
    policy: Policy, templates: Sequence[str], principal: str | None, action: str, resource: str | None = None
) -> Result:
    # `templates` = the agent's template, then each delegating agent's, up to the root agent.
    known = policy.get("templates", {})
    # Subject checks come before the request's: a template removed by reload makes its agents
    # and their descendants deny `unknown_template`; a depth above the bound (min over the chain's
    # remaining templates) denies `delegation_too_deep`. When both hold, the brief names no winner.
    missing = any(t not in known for t in templates)
    too_deep = len(templates) > max_depth(policy, [t for t in templates if t in known])
    if missing:
        return Result(False, "unknown_template", also=frozenset({"delegation_too_deep"} if too_deep else ()))
    if too_deep:
        return Result(False, "delegation_too_deep")
    error = request_errors(policy, action, resource)
    if error is not None:
        return error
    # Chain = own template level, delegating agents' levels, then the root principal's level.
    levels = [known[t].get("roles", []) for t in templates]
    if principal is not None:
        levels.append(policy["principals"][principal].get("roles", []))
    return decide_chain(policy, levels, action, resource)


def max_depth(policy: Policy, templates: Iterable[str]) -> int:
    # The smallest max_delegation_depth (default 4) of the templates on a chain.
    bounds = [policy["templates"][t].get("max_delegation_depth", DEFAULT_MAX_DEPTH) for t in templates]
    return min(bounds, default=DEFAULT_MAX_DEPTH)


def can_provision(policy: Policy, templates: Sequence[str]) -> bool:
    # Provision is refused if the new agent's depth exceeds the bound of its would-be chain.
    return len(templates) <= max_depth(policy, templates)
