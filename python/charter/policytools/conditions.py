"""Static facts about `when`/`require` conditions: constant folding and what they read.

The policy compiler (Rust) parses and type-checks every condition when a policy loads and
folds attribute-free sub-expressions, but keeps the result to itself. The tools need two
of its facts: whether a condition folded to a constant (docs/conditions.md: it "reads no
attribute, or short-circuits before reading any"), and which resource classes it may test.
This module folds the syntax tree (`charter.policytools.condition_syntax`) by the same rules: a node without
attribute reads is computed; `false and x` is false and `true or x` true without `x`;
`true and x` / `false or x` are `x`. Only conditions the compiler accepted are analysed;
anything this parser does not understand is reported as "not constant", never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from charter.policytools.condition_syntax import Node, UnsupportedConditionError, parse
from charter.policytools.patterns import matches, valid_resource


@dataclass(frozen=True)
class ConditionFacts:
    """What a condition is, statically: `constant` (True/False if it folds, else None), the
    string literals it compares with `resource.class`, and whether it reads that list in a way
    that could name any class."""

    constant: bool | None
    class_literals: frozenset[str]
    class_dynamic: bool


@lru_cache(maxsize=4096)
def facts(source: str) -> ConditionFacts:
    """Static facts of a condition the compiler accepted (unparseable: nothing constant, reads unknown)."""
    try:
        tree = parse(source)
    except UnsupportedConditionError:
        return ConditionFacts(None, frozenset(), True)
    folded = _fold(tree)
    constant = folded if isinstance(folded, bool) else None
    literals, dynamic = _class_uses(tree)
    return ConditionFacts(constant, frozenset(literals), dynamic)


def constant(source: str) -> bool | None:
    """True or False if the condition folds to a constant, else None."""
    return facts(source).constant


# --- folding -------------------------------------------------------------------------------


class _Dynamic:
    """The value of a sub-expression that reads an attribute."""


DYNAMIC = _Dynamic()


class _AlwaysFailsError(Exception):
    """A constant sub-expression that always fails (a load error, so never in a loaded policy)."""


def _fold(node: Node) -> Any:
    """The constant value of `node`, or DYNAMIC (also for a constant that always fails: the
    compiler refuses those, so they never reach a loaded policy)."""
    try:
        return _fold_node(node)
    except _AlwaysFailsError:
        return DYNAMIC


def _fold_node(node: Node) -> Any:
    kind = node.kind
    if kind == "lit":
        return node.value
    if kind in ("path", "has"):
        return DYNAMIC
    if kind == "list":
        items = [_fold_node(c) for c in node.children]
        return DYNAMIC if any(i is DYNAMIC for i in items) else items
    if kind in ("and", "or"):
        left = _fold_node(node.children[0])
        if left is DYNAMIC:
            return DYNAMIC
        if not isinstance(left, bool):
            raise _AlwaysFailsError
        if left != (kind == "and"):  # `false and x`, `true or x`: x is never read
            return left
        right = _fold_node(node.children[1])
        if right is not DYNAMIC and not isinstance(right, bool):
            raise _AlwaysFailsError
        return right
    values = [_fold_node(c) for c in node.children]
    if any(v is DYNAMIC for v in values):
        return DYNAMIC
    if kind == "not":
        if not isinstance(values[0], bool):
            raise _AlwaysFailsError
        return not values[0]
    if kind == "cmp":
        return _compare(node.value, values[0], values[1])
    if kind == "in":
        return _contains(values[1], values[0]) != node.negated
    return _method(node.value, values[0], values[1])


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _equal(x: Any, y: Any) -> bool:
    if _is_number(x) and _is_number(y):
        return bool(x == y)
    if x is None or y is None:
        return x is None and y is None
    if isinstance(x, bool) and isinstance(y, bool):
        return x == y
    if isinstance(x, str) and isinstance(y, str):
        return x == y
    if isinstance(x, list) and isinstance(y, list):
        if len(x) != len(y):
            return False
        each = [_equal(a, b) for a, b in zip(x, y, strict=True)]
        return all(each)
    raise _AlwaysFailsError


def _compare(op: str, x: Any, y: Any) -> bool:
    if op in ("==", "!="):
        return _equal(x, y) == (op == "==")
    if not ((_is_number(x) and _is_number(y)) or (isinstance(x, str) and isinstance(y, str))):
        raise _AlwaysFailsError
    return bool({"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op])


def _contains(haystack: Any, needle: Any) -> bool:
    if isinstance(haystack, list):
        each = [_equal(needle, e) for e in haystack]  # every element must be comparable
        return any(each)
    if isinstance(haystack, str) and isinstance(needle, str):
        return needle in haystack
    raise _AlwaysFailsError


def _method(name: str, subject: Any, arg: Any) -> bool:
    if not (isinstance(subject, str) and isinstance(arg, str)):
        raise _AlwaysFailsError
    if name == "startswith":
        return subject.startswith(arg)
    if name == "endswith":
        return subject.endswith(arg)
    if name == "matches" and valid_resource(subject):
        return matches(arg, subject)
    raise _AlwaysFailsError


# --- what a condition mentions ---------------------------------------------------------------


def _walk(node: Node) -> list[Node]:
    out = [node]
    for child in node.children:
        out.extend(_walk(child))
    return out


def _class_uses(tree: Node) -> tuple[set[str], bool]:
    """The string literals of a condition that reads `resource.class` (any of them may name a
    class), and whether it reads it in a way that could name any class (`context.c in resource.class`)."""
    nodes = _walk(tree)
    if not any(n.kind == "path" and n.value == "resource.class" for n in nodes):
        return set(), False
    literals = {n.value for n in nodes if n.kind == "lit" and isinstance(n.value, str)}
    dynamic = False
    for n in nodes:
        for i, child in enumerate(n.children):
            if child.kind != "path" or child.value != "resource.class":
                continue
            others = [o for j, o in enumerate(n.children) if j != i]
            by_literal = (n.kind == "in" and i == 1) or n.kind == "cmp"
            if not by_literal or any(_fold(o) is DYNAMIC for o in others):
                dynamic = True
    return literals, dynamic
