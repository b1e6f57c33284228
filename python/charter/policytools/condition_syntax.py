"""The condition language's syntax (docs/conditions.md), parsed into a tree for static analysis.

This reads what the policy compiler (`rust/charter-core/src/cond/parse.rs`) accepts, with the
same precedence (`or` < `and` < `not` < comparisons < `has` < method calls) and the same
attribute paths; it reports nothing itself: a source it cannot read raises
`UnsupportedConditionError`, and the callers then assume nothing about the condition.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

ROOTS = ("context", "principal", "resource", "agent", "time")
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    | (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>==|!=|<=|>=|<|>|[()\[\],.\-])
    )""",
    re.VERBOSE,
)
_END = re.compile(r"\s*\Z")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}


class UnsupportedConditionError(Exception):
    """The source is outside what this parser reads (the compiler would have refused it)."""


@dataclass(frozen=True)
class Node:
    """A syntax-tree node: `kind` is lit, list, path, has, not, and, or, cmp, in, method."""

    kind: str
    value: Any = None
    children: tuple[Node, ...] = ()
    negated: bool = False


def parse(source: str) -> Node:
    """The syntax tree of a condition the compiler accepted."""
    try:
        return _Parser(source).parse()
    except (IndexError, KeyError, ValueError) as err:
        raise UnsupportedConditionError(source) from err


class _Parser:
    def __init__(self, source: str) -> None:
        self.toks: list[tuple[str, str]] = []
        pos = 0
        while not _END.match(source, pos):
            m = _TOKEN.match(source, pos)
            if m is None or m.lastgroup is None:
                raise UnsupportedConditionError(source[pos:])
            self.toks.append((m.lastgroup, m.group(m.lastgroup)))
            pos = m.end()
        self.pos = 0

    def peek(self, k: int = 0) -> tuple[str, str]:
        return self.toks[self.pos + k] if self.pos + k < len(self.toks) else ("eof", "")

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        self.pos += 1
        return tok

    def is_word(self, w: str, k: int = 0) -> bool:
        return self.peek(k) == ("word", w)

    def expect(self, op: str) -> None:
        if self.take() != ("op", op):
            raise UnsupportedConditionError(op)

    def parse(self) -> Node:
        node = self.or_()
        if self.peek()[0] != "eof":
            raise UnsupportedConditionError("trailing tokens")
        return node

    def or_(self) -> Node:
        node = self.and_()
        while self.is_word("or"):
            self.take()
            node = Node("or", children=(node, self.and_()))
        return node

    def and_(self) -> Node:
        node = self.not_()
        while self.is_word("and"):
            self.take()
            node = Node("and", children=(node, self.not_()))
        return node

    def not_(self) -> Node:
        if self.is_word("not") and not self.is_word("in", 1):
            self.take()
            return Node("not", children=(self.not_(),))
        return self.comparison()

    def comparison(self) -> Node:
        left = self.unary()
        kind, text = self.peek()
        if kind == "op" and text in ("==", "!=", "<", "<=", ">", ">="):
            self.take()
            return Node("cmp", text, (left, self.unary()))
        if self.is_word("in") or (self.is_word("not") and self.is_word("in", 1)):
            negated = self.take() == ("word", "not")
            if negated:
                self.take()
            return Node("in", None, (left, self.unary()), negated)
        return left

    def unary(self) -> Node:
        if self.is_word("has"):
            self.take()
            kind, root = self.take()
            if kind != "word" or root not in ROOTS:
                raise UnsupportedConditionError("has")
            return Node("has", self.path(root))
        return self.postfix()

    def postfix(self) -> Node:
        node = self.primary()
        while self.peek() == ("op", ".") and self.peek(1)[0] == "word" and self.peek(2) == ("op", "("):
            self.take()
            method = self.take()[1]
            self.take()
            arg = self.or_()
            self.expect(")")
            node = Node("method", method, (node, arg))
        return node

    def primary(self) -> Node:
        kind, text = self.take()
        if kind == "num":
            return Node("lit", _number(text))
        if (kind, text) == ("op", "-") and self.peek()[0] == "num":
            return Node("lit", _number("-" + self.take()[1]))
        if kind == "str":
            return Node("lit", _string(text))
        if kind == "word":
            if text in ("true", "false", "null"):
                return Node("lit", {"true": True, "false": False, "null": None}[text])
            if text in ROOTS:
                return Node("path", self.path(text))
        if (kind, text) == ("op", "("):
            node = self.or_()
            self.expect(")")
            return node
        if (kind, text) == ("op", "["):
            items: list[Node] = []
            while self.peek() != ("op", "]"):
                items.append(self.or_())
                if self.peek() == ("op", ","):
                    self.take()
            self.take()
            return Node("list", None, tuple(items))
        raise UnsupportedConditionError(text)

    def path(self, root: str) -> str:
        if root in ("context", "principal"):
            if (
                root == "principal"
                and self.peek() == ("op", ".")
                and self.is_word("id", 1)
                and self.peek(2) != ("op", "(")
            ):
                self.take()
                self.take()
                return "principal.id"
            keys: list[str] = []
            while True:
                if self.peek() == ("op", ".") and self.peek(1)[0] == "word":
                    if keys and self.peek(2) == ("op", "("):
                        break
                    self.take()
                    keys.append(self.take()[1])
                elif self.peek() == ("op", "[") and self.peek(1)[0] == "str":
                    self.take()
                    keys.append(_string(self.take()[1]))
                    self.expect("]")
                else:
                    break
            if not keys:
                raise UnsupportedConditionError(root)
            return root + "".join(f".{k}" if _IDENT.match(k) else f"[{json.dumps(k)}]" for k in keys)
        self.expect(".")
        return f"{root}.{self.take()[1]}"


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def _string(token: str) -> str:
    body, out, i = token[1:-1], [], 0
    while i < len(body):
        if body[i] == "\\":
            out.append(_ESCAPES[body[i + 1]])
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)
