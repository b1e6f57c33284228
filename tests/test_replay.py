"""`charter policy replay`: a log re-decided under its own policy changes nothing; under another, exactly the differences."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given

import charter
from charter.cli import main
from charter.policytools.replay import replay
from test_properties import PRINCIPALS, SETTINGS, Plan, Requests, make_engine, run_plan, scenarios

POLICY: dict[str, Any] = {
    "actions": ["doc:read", "doc:write", "pay:refund"],
    "resources": {"secret": ["vault/**"]},
    "roles": {
        "reader": {"allow": ["doc:read"]},
        "writer": {
            "inherits": ["reader"],
            "allow": ["doc:write", {"action": "pay:refund", "when": "context.amount <= 500"}],
            "deny": [{"action": "doc:write", "on": ["@secret"]}],
        },
    },
    "principals": {"user:ann": {"roles": ["writer"]}, "user:bob": {"roles": ["reader"]}},
    "templates": {"bot": {"roles": ["writer"], "ttl": 600}, "sub": {"roles": ["reader"]}},
    "audit": {"loggable_context": ["amount"]},
}
STRICTER: dict[str, Any] = {
    **POLICY,
    "roles": {
        **POLICY["roles"],
        "writer": {
            **POLICY["roles"]["writer"],
            "deny": [{"action": "doc:write", "on": ["@secret"]}, {"action": "doc:write", "on": ["notes/**"]}],
        },
    },
}


def run_traffic(directory: Path) -> list[charter.Decision]:
    e = charter.Engine.from_dict(POLICY)
    e.audit_to(directory, fsync="never")
    bot = e.provision("bot", on_behalf_of="user:ann", agent_id="bot-1")
    sub = e.provision("sub", on_behalf_of=bot, agent_id="sub-1")
    made = [
        e.check(bot, "doc:write", "notes/1"),
        e.check(bot, "doc:write", "vault/k"),
        e.check(sub, "doc:read", "notes/2"),
        e.check(sub, "doc:write", "notes/3"),
        e.check("user:ann", "doc:write", "notes/4"),
        e.check("user:bob", "doc:write"),
        e.check(bot, "pay:refund", "r/1", {"amount": 100}),
        e.check(bot, "pay:refund", "r/2", {"amount": 900}),
    ]
    e.suspend(sub, "test")
    made.append(e.check(sub, "doc:read"))
    e.resume(sub)
    e.deprovision(bot)
    made.append(e.check(bot, "doc:read"))
    e.close()
    return made


def test_replay_under_the_same_policy_changes_nothing(tmp_path: Path) -> None:
    made = run_traffic(tmp_path / "a")
    report = replay(POLICY, tmp_path / "a")
    assert report.decisions == len(made)
    assert report.same == len(made)
    assert not report.changed
    assert not report.undecidable


def test_replay_under_a_stricter_policy_lists_exactly_what_changes(tmp_path: Path) -> None:
    made = run_traffic(tmp_path / "a")
    report = replay(STRICTER, tmp_path / "a")
    changed = {c.decision_id: c for c in report.changed}
    # writes on notes/** by writers: bot-1 and user:ann (sub-1 never could write)
    expected = {made[0].decision_id, made[4].decision_id}
    assert set(changed) == expected
    assert {(c.logged, c.replayed, c.replayed_rule) for c in changed.values()} == {
        ("granted", "denied_by_rule", "roles.writer.deny[1]")
    }
    assert report.by[("doc:write", "granted", "denied_by_rule")] == 2


def test_unlogged_context_is_undecidable_not_changed(tmp_path: Path) -> None:
    e = charter.Engine.from_dict({**POLICY, "audit": {}})  # `amount` not loggable: hashed in the log
    e.audit_to(tmp_path / "a", fsync="never")
    e.check("user:ann", "pay:refund", "r/1", {"amount": 100})
    e.close()
    assert replay(POLICY, tmp_path / "a").undecidable
    assert not replay(POLICY, tmp_path / "a").changed


def test_a_template_the_candidate_drops(tmp_path: Path) -> None:
    run_traffic(tmp_path / "a")
    candidate = {**POLICY, "templates": {"sub": {"roles": ["reader"]}}}
    report = replay(candidate, tmp_path / "a")
    assert report.changed
    assert {c.replayed for c in report.changed} <= {"provision_refused", "unknown_agent", "unknown_principal"}


@pytest.mark.filterwarnings("ignore::charter.policytools.lint.PolicyLintWarning")
def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_traffic(tmp_path / "a")
    same = tmp_path / "same.json"
    same.write_text(json.dumps(POLICY))
    stricter = tmp_path / "stricter.json"
    stricter.write_text(json.dumps(STRICTER))
    assert main(["policy", "replay", str(same), str(tmp_path / "a")]) == 0
    assert "0 changed" in capsys.readouterr().out
    assert main(["policy", "replay", str(stricter), str(tmp_path / "a"), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert len(data["changed"]) == 2


@pytest.mark.filterwarnings("ignore::charter.policytools.lint.PolicyLintWarning")
@SETTINGS
@given(scenario=scenarios())
def test_random_logs_replay_unchanged_under_their_own_policy(
    tmp_path_factory: pytest.TempPathFactory, scenario: tuple[dict[str, Any], Plan, Requests]
) -> None:
    policy, plan, reqs = scenario
    directory = tmp_path_factory.mktemp("log")
    engine = make_engine(policy)
    engine.audit_to(directory, fsync="never")
    world = run_plan(engine, policy, plan)
    subjects: list[Any] = [p.agent.handle for p in world.agents] + list(PRINCIPALS)
    made = [engine.check(s, a, r) for s in subjects for a, r in reqs]
    engine.close()
    report = replay(policy, directory)
    assert report.decisions == len(made)
    assert not report.changed, report
