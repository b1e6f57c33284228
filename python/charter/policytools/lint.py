"""Static analysis of a policy: entries that can never take effect, conditions that are constant,
templates no delegated agent can use, risky wildcards, unused declarations.

`lint(doc)` returns `Finding`s: a stable code, a severity, the policy path (the same path style
as `PolicyError`: `roles.analyst.allow[2]`) and a message. Severity `warning` means the policy
does not do what it says (dead entries, constant conditions, unusable templates); `info` is
advice to review (unused declarations, wildcards over guarded classes). Engines lint every
policy they load and surface each warning as a `PolicyLintWarning`. Every rule is exact: it
reasons over resource patterns as languages (`charter.policytools.patterns`) and over
conditions only where they fold to constants, so a finding is never a guess.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from charter.policy import Policy
from charter.policytools.lint_rules import CHECKS, unused_hooks
from charter.policytools.model import PolicyModel

Severity = Literal["warning", "info"]


@dataclass(frozen=True)
class Rule:
    """A lint rule: its stable code, name, severity and what it finds."""

    code: str
    name: str
    severity: Severity
    summary: str


RULES = {
    r.code: r
    for r in (
        Rule("CH100", "linter-failure", "warning", "the linter itself failed (a bug: please report it)"),
        Rule(
            "CH101",
            "unreachable-role",
            "info",
            "a role no principal or template holds, even through `inherits`",
        ),
        Rule("CH102", "empty-role", "info", "a role with no entries, whose inherited roles have none either"),
        Rule(
            "CH103",
            "role-grants-nothing",
            "warning",
            "a role whose allow entries (and inherited ones) never grant",
        ),
        Rule(
            "CH104",
            "shadowed-allow",
            "warning",
            "an allow entry that a deny of its own role closure always overrides",
        ),
        Rule(
            "CH105",
            "constant-condition",
            "warning",
            "a `when` or `require` that is always true or always false",
        ),
        Rule(
            "CH106",
            "unusable-template",
            "warning",
            "a template whose agents are denied every delegated request",
        ),
        Rule(
            "CH107",
            "unguarded-wildcard",
            "info",
            "a wildcard grant of actions on a class where guards cover other actions of the same tool, "
            "without condition, hook or guard",
        ),
        Rule(
            "CH108",
            "isolated-pattern",
            "info",
            "an `on` pattern that overlaps no resource class and no other pattern",
        ),
        Rule("CH109", "unused-class", "info", "a resource class no entry, guard or condition refers to"),
        Rule("CH110", "unused-hook", "warning", "a registered hook that no entry names"),
    )
}
"""Every rule, by code."""


@dataclass(frozen=True)
class Finding:
    """One lint finding; `path` is None only for findings about something outside the document."""

    code: str
    severity: Severity
    path: str | None
    message: str

    @property
    def name(self) -> str:
        return RULES[self.code].name

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "severity": self.severity,
            "path": self.path,
            "message": self.message,
        }

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{where}{self.code} {self.severity}: {self.message}"


class PolicyLintWarning(UserWarning):
    """A lint finding of severity `warning` about a policy being loaded; `.finding` holds it."""

    def __init__(self, finding: Finding, source: str | None = None) -> None:
        super().__init__(f"{source}: {finding}" if source else str(finding))
        self.finding = finding
        self.source = source


def lint(
    doc: Policy, *, hooks: Iterable[str] | None = None, severities: Iterable[Severity] = ("warning", "info")
) -> list[Finding]:
    """Every finding for a validated policy document, by rule then document order.

    `hooks`: the names of the hooks registered with the engine (for CH110); None skips the rule.
    `severities`: the severities wanted (checks that can only find others are not run).
    """
    wanted = set(severities)
    model = PolicyModel(doc)
    hits = [
        hit
        for codes, check in CHECKS
        if any(RULES[c].severity in wanted for c in codes)
        for hit in check(model)
    ]
    if hooks is not None:
        hits += unused_hooks(model, hooks)
    return [Finding(c, RULES[c].severity, path, msg) for c, path, msg in hits if RULES[c].severity in wanted]


def warn_on_load(doc: Policy, source: str | None, hooks: Iterable[str]) -> None:
    """Lint a policy an engine just loaded and warn (`PolicyLintWarning`) for each warning."""
    try:
        findings = lint(doc, hooks=hooks, severities=("warning",))
    except Exception as err:  # the linter must never stand between an operator and a valid policy
        failure = Finding("CH100", "warning", None, f"the policy linter failed: {type(err).__name__}: {err}")
        warnings.warn(PolicyLintWarning(failure, source), stacklevel=4)
        return
    for f in findings:
        warnings.warn(PolicyLintWarning(f, source), stacklevel=4)
