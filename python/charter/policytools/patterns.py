"""Resource-pattern reasoning: matching, intersection and set questions over request scopes.

A resource pattern (`prod/**`, `users/*/profile`) is a sequence of segments: `*` is
exactly one segment, `**` zero or more, anything else a literal. A *scope* is where an
entry applies: `None` (every request, with or without a resource) or a tuple of patterns
(requests naming a resource that one of them matches, never a request without one).

Patterns are regular languages over segments, so questions like "is there a resource
this allow covers that no deny covers?" have exact answers: `find_request` searches the
product of the patterns' automata (the alphabet is the literals the patterns name plus
one segment none of them names) and returns a witness request, or None when none exists.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

Scope = tuple[str, ...] | None
"""Where an entry applies: None = every request; patterns = requests on a resource one matches."""

MAX_RESOURCE_BYTES = 4096


@dataclass(frozen=True)
class Request:
    """A witness request: a resource name, or None for a request that names no resource."""

    resource: str | None


@lru_cache(maxsize=4096)
def segments(pattern: str) -> tuple[str, ...]:
    """The pattern's segments, with runs of `**` collapsed (they match what one `**` matches)."""
    out: list[str] = []
    for seg in pattern.split("/"):
        if seg == "**" and out and out[-1] == "**":
            continue
        out.append(seg)
    return tuple(out)


def valid_resource(name: str) -> bool:
    """Whether a request may name this resource (non-empty segments, at most 4,096 bytes)."""
    return (
        name != ""
        and not name.startswith("/")
        and not name.endswith("/")
        and "//" not in name
        and len(name.encode("utf-8", "surrogatepass")) <= MAX_RESOURCE_BYTES
    )


def matches(pattern: str, resource: str) -> bool:
    """Whether a (valid) resource name matches the pattern.

    The compiler's algorithm: greedy, with one backtrack point for the last `**` seen.
    """
    pat, name = segments(pattern), resource.split("/")
    p = s = 0
    star: tuple[int, int] | None = None
    while s < len(name):
        if p < len(pat) and pat[p] == "**":
            star = (p, s)
            p += 1
        elif p < len(pat) and pat[p] in ("*", name[s]):
            p += 1
            s += 1
        elif star is not None:
            p, s = star[0] + 1, star[1] + 1
            star = (star[0], star[1] + 1)
        else:
            return False
    return all(x == "**" for x in pat[p:])


def in_scope(scope: Scope, resource: str | None) -> bool:
    """Whether a request on `resource` (None: no resource) falls in the scope."""
    if scope is None:
        return True
    return resource is not None and any(matches(p, resource) for p in scope)


def intersect(p: str, q: str) -> tuple[str, ...]:
    """Patterns whose union matches exactly the names both `p` and `q` match (empty: none)."""
    found = _intersect(segments(p), segments(q))
    return minimal(tuple("/".join(s) for s in found if s))


@lru_cache(maxsize=4096)
def _intersect(p: tuple[str, ...], q: tuple[str, ...]) -> frozenset[tuple[str, ...]]:
    if not p or not q:
        rest = p or q
        return frozenset({()}) if all(s == "**" for s in rest) else frozenset()
    a, b = p[0], q[0]
    out: set[tuple[str, ...]] = set()
    if a == "**" and b == "**":
        # Whichever `**` stops first, the other one goes on matching the rest.
        for r in _intersect(p[1:], q) | _intersect(p, q[1:]):
            out.add(_prefix("**", r))
    elif a == "**" or b == "**":
        (many, mrest), (one, orest) = ((p, p[1:]), (b, q[1:])) if a == "**" else ((q, q[1:]), (a, p[1:]))
        out |= _intersect(mrest, (one, *orest))  # `**` matches nothing here
        out |= {(one, *r) for r in _intersect(many, orest)}  # `**` takes this segment
    else:
        seg = b if a == "*" else a
        if a == "*" or b == "*" or a == b:
            out |= {(seg, *r) for r in _intersect(p[1:], q[1:])}
    return frozenset(out)


def _prefix(seg: str, rest: tuple[str, ...]) -> tuple[str, ...]:
    return rest if rest[:1] == ("**",) else (seg, *rest)


def minimal(patterns: Iterable[str]) -> tuple[str, ...]:
    """The patterns in order, without duplicates and without those another one covers
    (of two that cover each other, the first is kept)."""
    unique = list(dict.fromkeys(patterns))
    return tuple(
        p
        for i, p in enumerate(unique)
        if not any(covers(q, p) and (j < i or not covers(p, q)) for j, q in enumerate(unique) if j != i)
    )


def covers(outer: str, inner: str) -> bool:
    """Whether every name `inner` matches, `outer` matches too."""
    return find_request([[(inner,)]], [(outer,)]) is None


def find_request(required: Sequence[Sequence[Scope]], forbidden: Sequence[Scope] = ()) -> Request | None:
    """A request that falls in at least one scope of every group of `required` and in no scope of
    `forbidden`; None if there is none. Exact: the resource, if any, is a shortest such name."""
    if all(any(s is None for s in group) for group in required) and all(s is not None for s in forbidden):
        return Request(None)
    if any(s is None for s in forbidden):
        return None
    groups = [
        tuple(p for s in group if s is not None for p in s)
        for group in required
        if not any(s is None for s in group)
    ]
    banned = tuple(p for s in forbidden if s is not None for p in s)
    name = _search(tuple(groups), banned)
    return None if name is None else Request(name)


State = tuple[frozenset[tuple[int, int]], ...]
Node = tuple[State, bool]
"""A search node: the automata's states, and whether at least one segment was read (a resource
name has one or more segments, so only such nodes may accept)."""


def _search(groups: tuple[tuple[str, ...], ...], banned: tuple[str, ...]) -> str | None:
    """Breadth-first search over the product of the subset automata of each group and of `banned`."""
    automata = [tuple(segments(p) for p in g) for g in (*groups, banned)]
    literals = sorted({s for a in automata for pat in a for s in pat if s not in ("*", "**")})
    fresh, n = "x", 0
    while fresh in literals:  # a segment no pattern names stands for all of them
        n += 1
        fresh = f"x{n}"
    alphabet = [*literals, fresh]
    start: Node = (tuple(_closure(a, {(i, 0) for i in range(len(a))}) for a in automata), False)
    parents: dict[Node, tuple[Node, str] | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for symbol in alphabet:
            nxt: Node = (tuple(_step(a, s, symbol) for a, s in zip(automata, node[0], strict=True)), True)
            states = nxt[0]
            if any(not s for s in states[:-1]) or nxt in parents:
                continue
            parents[nxt] = (node, symbol)
            accepted = all(_accepts(a, s) for a, s in zip(automata[:-1], states[:-1], strict=True))
            if accepted and not _accepts(automata[-1], states[-1]):
                return _spell(parents, nxt)
            queue.append(nxt)
    return None


def _closure(
    automaton: tuple[tuple[str, ...], ...], states: set[tuple[int, int]]
) -> frozenset[tuple[int, int]]:
    out = set(states)
    todo = list(states)
    while todo:
        i, pos = todo.pop()
        pat = automaton[i]
        if pos < len(pat) and pat[pos] == "**" and (i, pos + 1) not in out:
            out.add((i, pos + 1))
            todo.append((i, pos + 1))
    return frozenset(out)


def _step(
    automaton: tuple[tuple[str, ...], ...], states: frozenset[tuple[int, int]], symbol: str
) -> frozenset[tuple[int, int]]:
    nxt: set[tuple[int, int]] = set()
    for i, pos in states:
        pat = automaton[i]
        if pos >= len(pat):
            continue
        seg = pat[pos]
        if seg == "**":
            nxt.add((i, pos))
        elif seg in ("*", symbol):
            nxt.add((i, pos + 1))
    return _closure(automaton, nxt)


def _accepts(automaton: tuple[tuple[str, ...], ...], states: frozenset[tuple[int, int]]) -> bool:
    return any(pos == len(automaton[i]) for i, pos in states)


def _spell(parents: dict[Node, tuple[Node, str] | None], node: Node) -> str:
    symbols: list[str] = []
    link = parents[node]
    while link is not None:
        node, symbol = link
        symbols.append(symbol)
        link = parents[node]
    return "/".join(reversed(symbols))
