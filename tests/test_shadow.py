"""Shadow evaluation: a candidate policy decided next to the live one, never enforced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given

import charter
from charter import audit
from test_properties import PRINCIPALS, SETTINGS, Plan, Requests, make_engine, reload_scenarios, run_plan

# Random policies include odd ones the linter rightly warns about.
pytestmark = pytest.mark.filterwarnings("ignore::charter.policytools.lint.PolicyLintWarning")

LIVE: dict[str, Any] = {
    "actions": ["doc:read", "doc:write", "doc:delete"],
    "roles": {"editor": {"allow": ["doc:read", "doc:write"]}, "admin": {"allow": ["doc:*"]}},
    "principals": {"user:ann": {"roles": ["editor"]}, "user:root": {"roles": ["admin"]}},
    "templates": {"bot": {"roles": ["editor"]}},
}
# The candidate: editors lose doc:write, admins lose doc:delete.
CANDIDATE: dict[str, Any] = {
    **LIVE,
    "roles": {"editor": {"allow": ["doc:read"]}, "admin": {"allow": ["doc:read", "doc:write"]}},
}


def test_counts_disagreements_and_never_enforces() -> None:
    engine = charter.Engine.from_dict(LIVE)
    version = engine.shadow(CANDIDATE)
    assert version == charter.Engine.from_dict(CANDIDATE).policy_version
    bot = engine.provision("bot", on_behalf_of="user:ann")
    assert engine.check(bot, "doc:write")  # the live policy still decides
    assert engine.check("user:root", "doc:delete")
    assert engine.check("user:ann", "doc:read")
    assert not engine.check("user:ann", "doc:delete")  # denied by both
    report = engine.shadow_report()
    assert report is not None
    assert (report.decisions, report.disagreements) == (4, 2)
    by = {(d.action, d.live, d.candidate): d.count for d in report.by}
    assert by == {("doc:write", "granted", "no_grant"): 1, ("doc:delete", "granted", "no_grant"): 1}
    assert "2 of 4 decisions differ" in str(report)
    assert engine.shadow(None) is None
    assert engine.shadow_report() is None


def test_batches_are_compared_too() -> None:
    engine = charter.Engine.from_dict(LIVE)
    bots = [engine.provision("bot", on_behalf_of="user:ann") for _ in range(4)]
    engine.shadow(CANDIDATE)
    handles = np.array([b.handle for b in bots] * 3, dtype=np.uint64)
    actions = np.array([0, 1, 2] * 4, dtype=np.uint32)
    allowed = engine.check_batch(handles, actions)
    assert allowed.tolist() == [a != 2 for a in actions.tolist()]  # live answers
    report = engine.shadow_report()
    assert report is not None
    assert report.decisions == 12
    assert report.disagreements == int((actions == 1).sum())  # doc:write: live allows, candidate not


def test_follows_live_changes_of_principals(tmp_path: Path) -> None:
    engine = charter.Engine.from_dict(LIVE)
    engine.shadow(CANDIDATE)
    engine.upsert_principal("user:new", roles=["admin"])
    assert engine.check("user:new", "doc:write")  # live admin; candidate admin may write too
    assert engine.check("user:new", "doc:delete")  # live admin; candidate may not
    report = engine.shadow_report()
    assert report is not None
    assert report.disagreements == 1
    engine.reload(CANDIDATE)  # now the live policy is the candidate: no more disagreements
    engine.check("user:new", "doc:delete")
    report = engine.shadow_report()
    assert report is not None
    assert (report.decisions, report.disagreements) == (3, 1)


def test_quota_denials_are_not_disagreements() -> None:
    live = {
        **LIVE,
        "quotas": {"q": {"rate": "1/m", "burst": 1}},
        "templates": {"bot": {"roles": ["editor"], "quota": "q"}},
    }
    engine = charter.Engine.from_dict(live, clock=charter.ManualClock(0.0))
    bot = engine.provision("bot", on_behalf_of="user:ann")
    engine.shadow(live)
    assert engine.check(bot, "doc:read")
    assert engine.check(bot, "doc:read").reason == "rate_limited"
    report = engine.shadow_report()
    assert report is not None
    assert (report.decisions, report.disagreements) == (2, 0)


def test_disagreements_are_audited(tmp_path: Path) -> None:
    engine = charter.Engine.from_dict(LIVE)
    engine.audit_to(tmp_path / "a", fsync="never")
    engine.shadow(CANDIDATE)
    d = engine.check("user:root", "doc:delete", "notes/1")
    engine.check("user:root", "doc:read")
    engine.close()
    diffs = list(audit.read(tmp_path / "a", kind="shadow_diff"))
    assert len(diffs) == 1
    diff = diffs[0]
    assert isinstance(diff, audit.EventRecord)
    assert diff.fields["decision_id"] == d.decision_id
    assert (diff.fields["action"], diff.fields["resource"]) == ("doc:delete", "notes/1")
    assert (diff.fields["live"], diff.fields["candidate"]) == ("granted", "no_grant")


def test_a_bad_candidate_is_refused_and_the_old_one_kept() -> None:
    engine = charter.Engine.from_dict(LIVE)
    engine.shadow(CANDIDATE)
    with pytest.raises(charter.PolicyError):
        engine.shadow({**LIVE, "roles": {"editor": {"allow": ["no:such"]}}})
    report = engine.shadow_report()
    assert report is not None
    assert report.candidate_version == charter.Engine.from_dict(CANDIDATE).policy_version


@SETTINGS
@given(scenario=reload_scenarios())
def test_diffs_are_exactly_the_requests_two_policies_decide_differently(
    scenario: tuple[dict[str, Any], dict[str, Any], Plan, Requests],
) -> None:
    """Against the reference: the same requests after reloading the live engine to the candidate."""
    policy, candidate, plan, reqs = scenario
    engine = make_engine(policy)
    world = run_plan(engine, policy, plan)
    engine.shadow(candidate)
    subjects: list[Any] = [p.agent.handle for p in world.agents] + list(PRINCIPALS)
    live = [(s, a, r, engine.check(s, a, r)) for s in subjects for a, r in reqs]
    report = engine.shadow_report()
    assert report is not None
    engine.shadow(None)
    engine.reload(candidate)
    quota = {"rate_limited", "budget_exhausted", "concurrency_limit"}
    differ = [
        (a, d.reason, c.reason)
        for s, a, r, d in live
        for c in [engine.check(s, a, r)]
        if (d.allowed or d.reason in quota) != c.allowed
    ]
    assert report.decisions + report.skipped == len(live)
    assert report.disagreements == len(differ)
    by = {(d.action, d.live, d.candidate): d.count for d in report.by}
    expected: dict[tuple[str, str, str], int] = {}
    for key in differ:
        expected[key] = expected.get(key, 0) + 1
    assert {k: v for k, v in by.items() if k[0] != "(unknown action)"} == {
        k: v for k, v in expected.items() if k[0] in candidate["actions"] or k[0] in policy["actions"]
    }
