"""A pure-Python reference model of Charter's decisions, written from the semantics in the brief.

It reads the same policy dict the engine takes (actions, resources, roles, principals,
templates) and decides a request made by a principal (`check_principal`) or by an agent
described by its chain of template names, own template first, up to an optional root
principal (`check_agent`). Agent lifecycle (revocation, expiry) is not modelled here: the
callers only ask about active agents, whose root principal is in the policy.

Every function is a direct transcription of one rule; nothing is optimised.
"""

from __future__ import annotations

import json
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


# --- conditions ----------------------------------------------------------------------------
#
# A subset of the condition language over `context.*`, as syntax trees the property tests
# generate: ("cmp", key, op, literal), ("has", key), ("in", key, literals), ("not", a),
# ("and", a, b), ("or", a, b). `render` writes the source; `CONDITIONS` maps each rendered
# source back to its tree, so the model can read the `when` strings of a policy dict.

Cond = tuple[Any, ...]
CONDITIONS: dict[str, Cond] = {}
ERROR = "error"  # the fail-closed outcome: a missing attribute or a type mismatch
MISSING = object()
I64 = 2**63


def literal(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


def render(c: Cond) -> str:
    kind = c[0]
    if kind == "cmp":
        return f"context.{c[1]} {c[2]} {literal(c[3])}"
    if kind == "has":
        return f"has context.{c[1]}"
    if kind == "in":
        return f"context.{c[1]} in [{', '.join(literal(x) for x in c[2])}]"
    if kind == "not":
        return f"not ({render(c[1])})"
    return f"({render(c[1])}) {kind} ({render(c[2])})"


def register(c: Cond) -> str:
    src = render(c)
    CONDITIONS[src] = c
    return src


def convert(v: Any) -> Any:
    # What the engine sees of a Python context value: bool before int, ints within i64, floats,
    # str, None, lists/tuples and dicts with str keys of convertible values; else MISSING.
    if v is None or isinstance(v, (bool, str, float)):
        return v
    if isinstance(v, int):
        return v if -I64 <= v < I64 else MISSING
    if isinstance(v, (list, tuple)):
        items = [convert(x) for x in v]
        return MISSING if any(x is MISSING for x in items) else items
    if isinstance(v, dict):
        if not all(isinstance(k, str) for k in v):
            return MISSING
        d = {k: convert(x) for k, x in v.items()}
        return MISSING if any(x is MISSING for x in d.values()) else d
    return MISSING


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def equal(x: Any, y: Any) -> Any:
    # Numbers compare across int/float; null equals only null; else same types only.
    if is_number(x) and is_number(y):
        return x == y
    if x is None or y is None:
        return x is None and y is None
    if (isinstance(x, bool) and isinstance(y, bool)) or (isinstance(x, str) and isinstance(y, str)):
        return x == y
    if isinstance(x, list) and isinstance(y, list):
        if len(x) != len(y):
            return False
        each = [equal(a, b) for a, b in zip(x, y, strict=True)]
        return ERROR if ERROR in each else all(each)
    return ERROR


def less(x: Any, y: Any) -> Any:
    if (is_number(x) and is_number(y)) or (isinstance(x, str) and isinstance(y, str)):
        return x < y
    return ERROR


def evaluate(c: Cond, context: Mapping[str, Any] | None) -> Any:
    """True, False or ERROR."""
    kind = c[0]
    if kind in ("cmp", "has", "in"):
        value = convert(context[c[1]]) if context is not None and c[1] in context else MISSING
        if kind == "has":
            return value is not MISSING
        if value is MISSING:
            return ERROR
        if kind == "in":
            each = [equal(value, x) for x in c[2]]
            return ERROR if ERROR in each else any(each)
        op, lit = c[2], c[3]
        if op in ("==", "!="):
            eq = equal(value, lit)
            return eq if eq == ERROR else (eq if op == "==" else not eq)
        lt, gt = less(value, lit), less(lit, value)
        if ERROR in (lt, gt):
            return ERROR
        return {"<": lt, ">": gt, "<=": not gt, ">=": not lt}[op]
    a = evaluate(c[1], context)
    if a == ERROR:
        return ERROR
    if kind == "not":
        return not a
    if kind == "and":
        return evaluate(c[2], context) if a else False
    return True if a else evaluate(c[2], context)


def condition_of(entry: str | Mapping[str, Any], context: Mapping[str, Any] | None) -> Any:
    # An entry without `when` always applies.
    if isinstance(entry, str) or "when" not in entry:
        return True
    return evaluate(CONDITIONS[entry["when"]], context)


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
    policy: Policy,
    roles: Iterable[str],
    effect: str,
    action: str,
    resource: str | None,
    context: Mapping[str, Any] | None = None,
    outcomes: Iterable[Any] = (True,),
) -> set[str]:
    # The rules (`roles.<role>.<effect>[i]`) of the level whose entry of that effect matches,
    # with a `when` outcome among `outcomes`.
    wanted = list(outcomes)
    return {
        f"roles.{role}.{effect}[{i}]"
        for role in role_closure(policy, roles)
        for i, entry in enumerate(policy["roles"][role].get(effect, []))
        if entry_matches(policy, entry, action, resource) and condition_of(entry, context) in wanted
    }


def level_outcome(
    policy: Policy,
    roles: Iterable[str],
    action: str,
    resource: str | None,
    context: Mapping[str, Any] | None = None,
) -> tuple[str, set[str]]:
    # A matching deny whose condition holds or errs -> deny; else a matching allow whose condition
    # holds -> allow; else a matching allow skipped for its condition -> condition_failed;
    # else no_grant.
    roles = list(roles)
    denies = matching_rules(policy, roles, "deny", action, resource, context, (True, ERROR))
    if denies:
        return "deny", denies
    allows = matching_rules(policy, roles, "allow", action, resource, context)
    if allows:
        return "allow", allows
    skipped = matching_rules(policy, roles, "allow", action, resource, context, (False, ERROR))
    if skipped:
        return "condition_failed", skipped
    return "no_grant", set()


def decide_chain(
    policy: Policy,
    levels: Sequence[Sequence[str]],
    action: str,
    resource: str | None,
    context: Mapping[str, Any] | None = None,
) -> Result:
    # Allowed iff every level allows; the first non-allowing level from the subject upward decides.
    outcomes = [level_outcome(policy, roles, action, resource, context) for roles in levels]
    for depth, (outcome, rules) in enumerate(outcomes):
        if outcome == "allow":
            continue
        # A delegator's level: `delegator_denied`, reporting its deny (or condition-failed allow).
        if depth >= 1:
            return Result(False, "delegator_denied", frozenset(rules))
        if outcome == "deny":
            return Result(False, "denied_by_rule", frozenset(rules))
        if outcome == "condition_failed":
            return Result(False, "condition_failed", frozenset(rules))
        return Result(False, "no_grant")
    # All allow: the first guard covering the request whose `require` is not true denies.
    for i, guard in enumerate(policy.get("guards", [])):
        actions = guard.get("actions")
        if actions is not None and not any(action_covered(policy, p, action) for p in actions):
            continue
        on = guard.get("on")
        if on is not None and (resource is None or not any(pattern_matches(policy, p, resource) for p in on)):
            continue
        if evaluate(CONDITIONS[guard["require"]], context) is not True:
            return Result(False, "guard_failed", frozenset({f"guards[{i}]"}))
    # Granted, reporting an allow entry of the subject's own level.
    return Result(True, "granted", frozenset(outcomes[0][1]))


# --- requests ----------------------------------------------------------------------------


def request_errors(policy: Policy, action: str, resource: str | None) -> Result | None:
    # After the subject: an undeclared action, then an invalid resource name.
    if action not in policy.get("actions", []):
        return Result(False, "unknown_action")
    if resource is not None and not resource_is_valid(resource):
        return Result(False, "invalid_resource")
    return None


def check_principal(
    policy: Policy,
    principal: str,
    action: str,
    resource: str | None = None,
    context: Mapping[str, Any] | None = None,
) -> Result:
    # A principal acting directly: unknown id first, then the one level of its roles.
    if principal not in policy.get("principals", {}):
        return Result(False, "unknown_principal")
    error = request_errors(policy, action, resource)
    if error is not None:
        return error
    return decide_chain(policy, [policy["principals"][principal].get("roles", [])], action, resource, context)


def check_agent(
    policy: Policy,
    templates: Sequence[str],
    principal: str | None,
    action: str,
    resource: str | None = None,
    context: Mapping[str, Any] | None = None,
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
    return decide_chain(policy, levels, action, resource, context)


def max_depth(policy: Policy, templates: Iterable[str]) -> int:
    # The smallest max_delegation_depth (default 4) of the templates on a chain.
    bounds = [policy["templates"][t].get("max_delegation_depth", DEFAULT_MAX_DEPTH) for t in templates]
    return min(bounds, default=DEFAULT_MAX_DEPTH)


def can_provision(policy: Policy, templates: Sequence[str]) -> bool:
    # Provision is refused if the new agent's depth exceeds the bound of its would-be chain.
    return len(templates) <= max_depth(policy, templates)
