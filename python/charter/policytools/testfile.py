"""Policy test files: `[[case]]` tables in TOML, parsed and checked into `Case`s.

A case::

    [[case]]
    name = "a support bot cannot edit a login profile"     # optional
    agent = { template = "support-bot", on_behalf_of = "user:alice" }
    action = "crm:write"
    resource = "users/7/profile"                          # optional
    context = { purpose = "support" }                     # optional
    expect = "deny"                                       # "allow" or "deny"
    reason = "denied_by_rule"                             # optional
    rule = "roles.support.deny[0]"                        # optional

The subject is `principal = "user:alice"` (acting directly), `roles = ["admin"]` (a principal
holding exactly these roles, as if synced from an identity provider), or `agent`: a `template`
acting `on_behalf_of` a principal id, a nested agent table (a sub-agent), or, if omitted, the
case's principal (none: the agent acts for nobody); `scope` limits it like a credential's.
`time` (a TOML date-time, or Unix seconds) pins the clock that `time.*` conditions read.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from charter import _core
from charter.errors import PolicyError


class PolicyTestError(PolicyError):
    """A policy test file is malformed; `path` points into it (`case[2].expect`), `source` names it."""


class AgentSpec(msgspec.Struct, forbid_unknown_fields=True):
    """An agent to provision for a case: its template, its delegator and an optional scope."""

    template: str
    on_behalf_of: str | AgentSpec | None = None
    scope: list[str] | None = None


class Case(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One test case (see the module documentation)."""

    action: str
    expect: str
    name: str | None = None
    principal: str | None = None
    roles: list[str] | None = None
    agent: AgentSpec | None = None
    resource: str | None = None
    context: dict[str, Any] | None = None
    reason: str | None = None
    rule: str | None = None
    time: datetime | int | float | None = None
    source: str | None = None
    index: int = 0

    @property
    def title(self) -> str:
        if self.name:
            return self.name
        who = self.principal or (f"roles {', '.join(self.roles)}" if self.roles is not None else "")
        if self.agent is not None:
            who = f"{self.agent.template} agent" + (f" for {who}" if who else "")
        on = f" {self.resource}" if self.resource else ""
        return f"{who} {self.expect} {self.action}{on}".strip()


class _File(msgspec.Struct, forbid_unknown_fields=True):
    case: list[dict[str, Any]] = []


def load_cases(path: str | Path) -> list[Case]:
    """The cases of one test file; `PolicyTestError` for anything malformed."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise PolicyTestError(f"cannot read the test file: {err.strerror or err}", source=source) from None
    except UnicodeDecodeError as err:
        raise PolicyTestError(f"the test file is not UTF-8: {err}", source=source) from None
    return cases_from_toml(text, source=source)


def cases_from_toml(text: str, *, source: str | None = None) -> list[Case]:
    """The cases of a test file's text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise PolicyTestError(f"invalid TOML: {err}", source=source) from None
    return cases_from_dict(data, source=source)


def cases_from_dict(data: Mapping[str, Any], *, source: str | None = None) -> list[Case]:
    """The cases of a test file given as a dict (`{"case": [{...}, ...]}`)."""
    doc = _convert(dict(data), _File, "", source)
    if not doc.case:
        raise PolicyTestError("no test cases: write them as `[[case]]` tables", source=source)
    return [_case(raw, i, source) for i, raw in enumerate(doc.case)]


def _convert(value: Any, into: Any, path: str, source: str | None) -> Any:
    try:
        return msgspec.convert(value, into, strict=True)
    except msgspec.ValidationError as err:
        message, _, inner = str(err).partition(" - at `$")
        where = (path + inner.rstrip("`")).lstrip(".") or None
        raise PolicyTestError(message[:1].lower() + message[1:], path=where, source=source) from None


def _case(raw: dict[str, Any], i: int, source: str | None) -> Case:
    path = f"case[{i}]"
    for internal in ("source", "index"):
        if internal in raw:
            raise PolicyTestError(f"object contains unknown field `{internal}`", path=path, source=source)
    case: Case = _convert({**raw, "source": source, "index": i}, Case, path, source)
    if case.principal is not None and case.roles is not None:
        raise PolicyTestError("give `principal` or `roles`, not both", path=f"{path}.roles", source=source)
    given = case.principal is not None or case.roles is not None
    if not given and case.agent is None:
        raise PolicyTestError("a case needs a `principal`, `roles` or an `agent`", path=path, source=source)
    if case.agent is not None and given and _root(case.agent) is not None:
        raise PolicyTestError(
            "give the delegator once: `principal`/`roles`, or the agent's `on_behalf_of`",
            path=f"{path}.agent",
            source=source,
        )
    if case.expect not in ("allow", "deny"):
        raise PolicyTestError(
            f"expected `allow` or `deny`, got `{case.expect}`", path=f"{path}.expect", source=source
        )
    if case.reason is not None and case.reason not in _core.REASONS:
        raise PolicyTestError(f"unknown reason `{case.reason}`", path=f"{path}.reason", source=source)
    if case.expect == "allow" and case.reason not in (None, "granted"):
        raise PolicyTestError(
            "an allowed request's reason is `granted`", path=f"{path}.reason", source=source
        )
    return case


def _root(agent: AgentSpec) -> str | None:
    while isinstance(agent.on_behalf_of, AgentSpec):
        agent = agent.on_behalf_of
    return agent.on_behalf_of
