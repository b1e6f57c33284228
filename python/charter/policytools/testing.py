"""Policy tests: run the cases of test files (`charter.policytools.testfile`) against a policy.

Each case is decided on a fresh agent chain by one engine for the run, built from the policy
without its quotas, breakers and audit settings (tests are about the rules, and must neither
spend budgets nor write audit logs), on a manual clock a case can pin with `time`. The
report lists every case; a failure shows the decision, its rule and detail. With coverage,
it also says which entries, conditions and guards no case exercised
(`charter.policytools.coverage`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from charter import _core
from charter.engine import Engine
from charter.errors import CharterError, PolicyError, ProvisionError, UnknownSubjectError
from charter.hooks import Hook
from charter.policy import Policy, from_file
from charter.policytools.coverage import Coverage
from charter.policytools.model import PolicyModel
from charter.policytools.testfile import (
    AgentSpec,
    Case,
    PolicyTestError,
    cases_from_dict,
    cases_from_toml,
    load_cases,
)

__all__ = [
    "Case",
    "CaseResult",
    "Coverage",
    "PolicyTestError",
    "Report",
    "cases_from_dict",
    "cases_from_toml",
    "engine_for_tests",
    "format_report",
    "load_cases",
    "run",
    "run_files",
]


@dataclass(frozen=True)
class CaseResult:
    """The outcome of one case: `passed`, what the engine decided, and `problems` if it failed
    (or `error` if the case could not be run: its agent could not be provisioned)."""

    case: Case
    passed: bool
    allowed: bool | None = None
    reason: str | None = None
    rule: str | None = None
    detail: str | None = None
    problems: tuple[str, ...] = ()
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.case.title,
            "file": self.case.source,
            "index": self.case.index,
            "passed": self.passed,
            "decision": None
            if self.allowed is None
            else {"allowed": self.allowed, "reason": self.reason, "rule": self.rule, "detail": self.detail},
            "problems": list(self.problems),
            "error": self.error,
        }


@dataclass
class Report:
    """The results of a run, in case order, and its coverage (when asked for)."""

    policy: str | None
    results: list[CaseResult] = field(default_factory=list)
    coverage: Coverage | None = None

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if not r.passed]

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "policy": self.policy,
            "passed": len(self.results) - len(self.failed),
            "failed": len(self.failed),
            "cases": [r.to_dict() for r in self.results],
        }
        if self.coverage is not None:
            out["coverage"] = self.coverage.to_dict()
        return out


def engine_for_tests(
    doc: Policy, clock: _core.ManualClock, hooks: Mapping[str, Hook] | None = None
) -> Engine:
    """An engine for running tests against `doc` on `clock`, without quotas, breakers or audit.

    Policies that name hooks load without them unless `hooks` are given (then a decision that
    reaches a missing hook is `hook_error`).
    """
    bare = msgspec.structs.replace(
        doc,
        quotas={},
        costs={},
        principals={k: msgspec.structs.replace(p, quota=None) for k, p in doc.principals.items()},
        templates={k: msgspec.structs.replace(t, quota=None, breaker=None) for k, t in doc.templates.items()},
        **({"audit": None} if "audit" in doc.__struct_fields__ else {}),
    )
    return Engine.from_dict(
        msgspec.to_builtins(bare), clock=clock, hooks=hooks, allow_missing_hooks=hooks is None
    )


def run(
    doc: Policy,
    cases: Iterable[Case],
    *,
    hooks: Mapping[str, Hook] | None = None,
    coverage: bool = False,
    policy: str | None = None,
) -> Report:
    """Run `cases` against the policy `doc`; see the module documentation."""
    start = datetime.now(UTC).timestamp()
    clock = _core.ManualClock(start)
    engine = engine_for_tests(doc, clock, hooks)
    report = Report(policy, coverage=Coverage.of(PolicyModel(doc)) if coverage else None)
    for case in cases:
        clock.set(start if case.time is None else _seconds(case.time))
        report.results.append(_run_case(engine, case, report.coverage))
    return report


def run_files(
    policy_path: str | Path,
    test_paths: Sequence[str | Path],
    *,
    hooks: Mapping[str, Hook] | None = None,
    coverage: bool = False,
) -> Report:
    """Load a policy and test files, and run every case (`PolicyError`/`PolicyTestError` on bad input)."""
    doc = from_file(policy_path)
    cases = [c for p in test_paths for c in load_cases(p)]
    return run(doc, cases, hooks=hooks, coverage=coverage, policy=str(policy_path))


def _seconds(t: datetime | float) -> float:
    if isinstance(t, datetime):
        return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()
    return float(t)


def _run_case(engine: Engine, case: Case, coverage: Coverage | None) -> CaseResult:
    made: list[_core.Agent] = []
    principal = case.principal
    if case.roles is not None:
        # A principal holding exactly these roles, as an identity provider would sync one.
        principal = f"{_TEST_PRINCIPAL}{case.index}"
        try:
            engine.upsert_principal(principal, roles=case.roles)
        except CharterError as err:
            return CaseResult(
                case, False, error=f"could not create a principal with roles {case.roles}: {err}"
            )
    try:
        subject: Any = principal if case.agent is None else _provision(engine, case.agent, principal, made)
    except (ProvisionError, UnknownSubjectError, PolicyError) as err:
        return CaseResult(case, False, error=f"could not provision the agent: {err}")
    try:
        explanation = engine.explain(subject, case.action, case.resource, case.context).to_dict()
    finally:
        if made:
            engine.deprovision(made[0])
        if case.roles is not None:
            engine.remove_principal(f"{_TEST_PRINCIPAL}{case.index}")
    d = explanation["decision"]
    if coverage is not None:
        coverage.record(explanation)
    problems = _problems(case, d)
    return CaseResult(
        case, not problems, d["allowed"], d["reason"], d.get("rule"), d.get("detail"), tuple(problems)
    )


_TEST_PRINCIPAL = "policy-test:case-"
"""The id prefix of the principals made for cases that give `roles`."""


def _provision(
    engine: Engine, spec: AgentSpec, principal: str | None, made: list[_core.Agent]
) -> _core.Agent:
    parent: Any = spec.on_behalf_of
    if isinstance(parent, AgentSpec):
        parent = _provision(engine, parent, principal, made)
    elif parent is None:
        parent = principal
    agent = engine.provision(spec.template, on_behalf_of=parent, scope=spec.scope)
    made.append(agent)
    return agent


def _problems(case: Case, d: Mapping[str, Any]) -> list[str]:
    out = []
    got = "allow" if d["allowed"] else "deny"
    if got != case.expect:
        out.append(f"expected {case.expect}, got {got}")
    if case.reason is not None and d["reason"] != case.reason:
        out.append(f"expected reason `{case.reason}`, got `{d['reason']}`")
    if case.rule is not None and d.get("rule") != case.rule:
        out.append(f"expected rule `{case.rule}`, got `{d.get('rule')}`")
    return out


# --- the readable report ---------------------------------------------------------------------


def format_report(report: Report) -> str:
    """The report as text: one line per case (with the decision under a failure), the totals and,
    if measured, the coverage and what it misses."""
    lines: list[str] = []
    source = None
    for r in report.results:
        if r.case.source != source:
            source = r.case.source
            lines.append(str(source))
        lines.append(f"  {'ok  ' if r.passed else 'FAIL'}  {r.case.title}")
        if r.error:
            lines.append(f"        {r.error}")
            continue
        for p in r.problems:
            lines.append(f"        {p}")
        if not r.passed:
            rule = f" [{r.rule}]" if r.rule else ""
            lines.append(f"        decision: {'allow' if r.allowed else 'deny'}, {r.reason}{rule}")
            if r.detail:
                lines.append(f"        detail: {r.detail}")
    failed = len(report.failed)
    lines.append(f"{len(report.results) - failed} passed, {failed} failed")
    if report.coverage is not None:
        lines += _format_coverage(report.coverage)
    return "\n".join(lines)


def _format_coverage(coverage: Coverage) -> list[str]:
    data = coverage.to_dict()
    parts = [f"{data[k]['covered']}/{data[k]['total']} {label}" for k, label in _KINDS]
    lines = ["coverage: " + ", ".join(parts)]
    titles = {
        "allow": "allow entries no case exercised",
        "deny": "deny entries no case exercised",
        "conditions": "conditions never evaluated",
        "conditions_never_true": "conditions never true",
        "conditions_never_false": "conditions never false",
        "guards": "guards never checked",
    }
    for kind, title in titles.items():
        missing = data["missing"][kind]
        if missing:
            lines.append(f"  {title}:")
            lines += [f"    {m}" for m in missing]
    return lines


_KINDS = (
    ("allow", "allow entries"),
    ("deny", "deny entries"),
    ("conditions", "conditions"),
    ("guards", "guards"),
)
