"""`Engine.explain`: the derivation of a decision, as data and as text."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

import charter
from charter import policy

LEVEL_KEYS = {"kind", "id", "template", "roles", "outcome", "rule", "entries"}
ENTRY_KEYS = {"rule", "role", "effect", "on", "matched"}


def same_decision(x: charter.Explanation, d: charter.Decision) -> None:
    assert x.decision["allowed"] == d.allowed
    assert x.decision["reason"] == d.reason
    assert x.decision["rule"] == d.rule
    assert x.decision["policy_version"] == d.policy_version
    assert x.decision["why"] == d.why
    assert x.allowed is d.allowed


def entries_by_rule(level: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["rule"]: e for e in level["entries"]}


# -------------------------------------------------------------------- structure


def test_principal_structure(example_engine: charter.Engine) -> None:
    e = example_engine
    x = e.explain("user:alice", "crm:write", "users/1/profile")
    assert isinstance(x, charter.Explanation)
    same_decision(x, e.check("user:alice", "crm:write", "users/1/profile"))
    d = x.data
    assert set(d) == {"decision", "subject", "action", "resource", "chain"}
    assert x.to_dict() is d
    assert d["decision"] is x.decision
    assert set(x.decision) == {"allowed", "reason", "rule", "policy_version", "why"}
    assert d["subject"] == {"kind": "principal", "id": "user:alice"}
    assert d["action"] == "crm:write"
    assert d["resource"] == "users/1/profile"
    assert len(d["chain"]) == 1
    level = d["chain"][0]
    assert set(level) == LEVEL_KEYS
    assert level["kind"] == "principal"
    assert level["id"] == "user:alice"
    assert level["template"] is None
    assert sorted(level["roles"]) == ["analyst", "support", "viewer"]
    assert level["outcome"] == "deny"
    assert level["rule"] == "roles.support.deny[0]"
    for entry in level["entries"]:
        assert set(entry) == ENTRY_KEYS
    by_rule = entries_by_rule(level)
    assert set(by_rule) == {"roles.support.allow[2]", "roles.support.deny[0]"}
    allow = by_rule["roles.support.allow[2]"]
    assert allow["effect"] == "allow"
    assert allow["role"] == "support"
    assert allow["on"] == ["customers/*", "users/*/profile"]  # `@pii` expanded
    assert allow["matched"] is True
    deny = by_rule["roles.support.deny[0]"]
    assert (deny["effect"], deny["role"], deny["on"], deny["matched"]) == (
        "deny",
        "support",
        ["users/*/profile"],
        True,
    )
    # The data is JSON.
    assert json.loads(json.dumps(d)) == d


def test_only_entries_covering_the_action_are_listed(example_engine: charter.Engine) -> None:
    x = example_engine.explain("user:alice", "db:read", "analytics/x")
    level = x.data["chain"][0]
    by_rule = entries_by_rule(level)
    # analyst.allow[0] is `db:read`, analyst.deny[0] covers db:read on @pii; nothing else covers db:read.
    assert set(by_rule) == {"roles.analyst.allow[0]", "roles.analyst.deny[0]"}
    assert by_rule["roles.analyst.allow[0]"]["on"] is None
    assert by_rule["roles.analyst.allow[0]"]["matched"] is True
    assert by_rule["roles.analyst.deny[0]"]["matched"] is False
    assert level["outcome"] == "allow"
    assert level["rule"] == "roles.analyst.allow[0]"
    assert x.decision["rule"] == "roles.analyst.allow[0]"


def test_wildcard_entries_are_listed(example_engine: charter.Engine) -> None:
    x = example_engine.explain("user:bob", "db:drop", "prod/x")
    level = x.data["chain"][0]
    by_rule = entries_by_rule(level)
    assert by_rule["roles.engineer.allow[0]"]["matched"] is True  # db:*
    assert by_rule["roles.engineer.deny[0]"]["matched"] is True
    assert level["outcome"] == "deny"
    assert x.decision["reason"] == "denied_by_rule"
    assert x.decision["rule"] == "roles.engineer.deny[0]"


def test_matched_flags_with_and_without_resource(example_engine: charter.Engine) -> None:
    e = example_engine
    with_res = entries_by_rule(e.explain("user:alice", "crm:write", "customers/9").data["chain"][0])
    assert with_res["roles.support.allow[2]"]["matched"] is True
    assert with_res["roles.support.deny[0]"]["matched"] is False
    no_res_x = e.explain("user:alice", "crm:write")
    no_res = entries_by_rule(no_res_x.data["chain"][0])
    # An entry with `on` never matches a request without a resource.
    assert no_res["roles.support.allow[2]"]["matched"] is False
    assert no_res["roles.support.deny[0]"]["matched"] is False
    assert no_res_x.data["chain"][0]["outcome"] == "no_grant"
    assert no_res_x.data["resource"] is None
    other = entries_by_rule(e.explain("user:alice", "crm:write", "orders/1").data["chain"][0])
    assert other["roles.support.allow[2]"]["matched"] is False
    # An entry without `on` matches with and without a resource.
    for res in (None, "anything/at/all"):
        level = e.explain("user:dave", "tickets:read", res).data["chain"][0]
        (only,) = level["entries"]
        assert only == {
            "rule": "roles.viewer.allow[0]",
            "role": "viewer",
            "effect": "allow",
            "on": None,
            "matched": True,
        }


def test_delegated_agent_chain(example_engine: charter.Engine) -> None:
    e = example_engine
    bot = e.provision("support-bot", on_behalf_of="user:dave")
    sub = e.provision("research-subagent", on_behalf_of=bot)
    x = e.explain(sub, "tickets:read")
    same_decision(x, e.check(sub, "tickets:read"))
    s = x.data["subject"]
    assert s["kind"] == "agent"
    assert (s["id"], s["handle"], s["template"]) == (sub.id, sub.handle, "research-subagent")
    assert (s["on_behalf_of"], s["principal"], s["depth"], s["state"]) == (bot.id, "user:dave", 2, "active")
    chain = x.data["chain"]
    assert [(lvl["kind"], lvl["id"], lvl["template"]) for lvl in chain] == [
        ("agent", sub.id, "research-subagent"),
        ("agent", bot.id, "support-bot"),
        ("principal", "user:dave", None),
    ]
    assert sorted(chain[0]["roles"]) == ["analyst", "viewer"]
    assert sorted(chain[1]["roles"]) == ["support", "viewer"]
    assert chain[2]["roles"] == ["viewer"]
    assert [lvl["outcome"] for lvl in chain] == ["allow", "allow", "allow"]
    for lvl in chain:
        assert set(lvl) == LEVEL_KEYS
        assert lvl["rule"] == "roles.viewer.allow[0]"
    assert x.decision["reason"] == "granted"
    # explain by id and by handle agree
    assert e.explain(sub.id, "tickets:read").data == x.data
    assert e.explain(sub.handle, "tickets:read").data == x.data


def test_levels_direct_agent_principal(example_engine: charter.Engine) -> None:
    e = example_engine
    bot = e.provision("support-bot", on_behalf_of="user:dave")
    # level 0 denies by rule
    x = e.explain(bot, "crm:write", "users/1/profile")
    assert x.decision["reason"] == "denied_by_rule"
    assert x.data["chain"][0]["outcome"] == "deny"
    assert x.data["chain"][0]["rule"] == x.decision["rule"] == "roles.support.deny[0]"
    # level 0 allows, the principal does not
    x = e.explain(bot, "crm:write", "customers/1")
    assert x.decision["reason"] == "delegator_denied"
    assert [lvl["outcome"] for lvl in x.data["chain"]] == ["allow", "no_grant"]
    assert x.data["chain"][0]["rule"] == "roles.support.allow[2]"
    assert x.data["chain"][1]["rule"] is None
    assert x.data["chain"][1]["entries"] == []
    # nobody grants it
    x = e.explain(bot, "db:read")
    assert x.decision["reason"] == "no_grant"
    assert x.decision["rule"] is None
    assert x.data["chain"][0]["outcome"] == "no_grant"


def test_delegator_deny_rule(example_engine: charter.Engine) -> None:
    e = example_engine
    # an engineer's deploy agent may not be used by an analyst to reach PII
    agent = e.provision("deploy-agent", on_behalf_of="svc:nightly-etl")
    x = e.explain(agent, "db:read", "customers/1")
    assert x.decision["reason"] == "delegator_denied"
    assert [lvl["outcome"] for lvl in x.data["chain"]] == ["allow", "deny"]
    assert x.data["chain"][1]["rule"] == "roles.analyst.deny[0]"


def test_agent_acting_for_nobody(example_engine: charter.Engine) -> None:
    e = example_engine
    a = e.provision("deploy-agent")
    x = e.explain(a, "deploy:run")
    assert x.allowed
    assert x.data["subject"]["principal"] is None
    assert x.data["subject"]["on_behalf_of"] is None
    assert [(lvl["kind"], lvl["template"]) for lvl in x.data["chain"]] == [("agent", "deploy-agent")]


def test_explain_agrees_with_check(example_engine: charter.Engine) -> None:
    e = example_engine
    subjects: list[Any] = ["user:alice", "user:bob", "user:carol", "user:dave", "svc:nightly-etl"]
    subjects.append(e.provision("support-bot", on_behalf_of="user:alice"))
    subjects.append(e.provision("analytics-agent", on_behalf_of="user:carol"))
    for who in subjects:
        for action in e.actions:
            for res in (None, "customers/1", "prod/x", "ledger/1", "analytics/x"):
                same_decision(e.explain(who, action, res), e.check(who, action, res))


# ------------------------------------------------------------------------ text


def test_text_contains_verdict_reason_rule(example_engine: charter.Engine) -> None:
    e = example_engine
    text = str(e.explain("user:alice", "db:read", "customers/1"))
    first = text.splitlines()[0]
    assert first == "DENY db:read on customers/1 for user:alice"
    assert "denied_by_rule" in text
    assert "roles.analyst.deny[0]" in text
    assert e.policy_version in text
    text = str(e.explain("user:alice", "crm:read", "customers/1"))
    assert text.startswith("ALLOW crm:read on customers/1 for user:alice")
    assert "granted" in text
    assert "roles.viewer.allow[1]" in text


def test_text_of_a_chain(example_engine: charter.Engine) -> None:
    e = example_engine
    bot = e.provision("support-bot", on_behalf_of="user:dave")
    text = str(e.explain(bot, "crm:write"))
    assert text.startswith(f"DENY crm:write for {bot.id}")
    assert "no_grant" in text
    assert "support-bot" in text
    assert "user:dave" in text
    assert "not applicable" in text  # scoped entries against a request without a resource
    text = str(e.explain(bot, "crm:write", "orders/1"))
    assert "resource did not match" in text
    assert "Explanation(" in repr(e.explain(bot, "crm:write"))


# -------------------------------------------------------- unusual subjects/actions


def test_unknown_action(example_engine: charter.Engine) -> None:
    e = example_engine
    for action in ("db:nope", len(e.actions), 10_000):
        x = e.explain("user:alice", action)
        assert x.allowed is False
        assert x.decision["reason"] == "unknown_action"
        assert x.decision["rule"] is None
        assert len(x.data["chain"]) == 1
        text = str(x)
        assert text.startswith("DENY")
        assert "unknown_action" in text
    assert e.explain("user:alice", "db:nope").data["action"] == "db:nope"


def test_action_by_id(example_engine: charter.Engine) -> None:
    e = example_engine
    i = e.action_id("crm:write")
    assert (
        e.explain("user:alice", i, "customers/1").data
        == e.explain("user:alice", "crm:write", "customers/1").data
    )


def test_unknown_principal(example_engine: charter.Engine) -> None:
    x = example_engine.explain("user:nobody", "db:read", "customers/1")
    assert x.allowed is False
    assert x.decision["reason"] == "unknown_principal"
    assert x.data["chain"] == []
    assert "unknown_principal" in str(x)
    assert str(x).startswith("DENY")


def test_unknown_handle(example_engine: charter.Engine) -> None:
    x = example_engine.explain(987_654_321, "db:read")
    assert x.decision["reason"] == "unknown_agent"
    assert x.data["chain"] == []
    assert "unknown_agent" in str(x)


def test_invalid_resource(example_engine: charter.Engine) -> None:
    x = example_engine.explain("user:alice", "crm:read", "a//b")
    assert x.decision["reason"] == "invalid_resource"
    assert "invalid_resource" in str(x)


def test_revoked_agents(clocked_example: charter.Engine, clock: charter.ManualClock) -> None:
    e = clocked_example
    bot = e.provision("support-bot", on_behalf_of="user:alice")
    sub = e.provision("research-subagent", on_behalf_of=bot)
    e.deprovision(bot)
    x = e.explain(bot, "tickets:read")
    assert x.decision["reason"] == "revoked"
    assert x.allowed is False
    assert x.data["subject"]["state"] == "revoked"
    assert "revoked" in str(x)
    x = e.explain(sub.id, "tickets:read")
    assert x.decision["reason"] == "delegator_revoked"
    assert x.data["subject"]["state"] == "delegator_revoked"
    assert "delegator_revoked" in str(x)
    short = e.provision("support-bot", on_behalf_of="user:alice", ttl=10)
    clock.advance(11)
    x = e.explain(short, "tickets:read")
    assert x.decision["reason"] == "expired"
    assert x.data["subject"]["state"] == "expired"


def test_removed_principal_and_template(clocked_example: charter.Engine) -> None:
    e = clocked_example
    bot = e.provision("support-bot", on_behalf_of="user:dave")
    e.remove_principal("user:dave")
    x = e.explain(bot, "tickets:read")
    assert x.decision["reason"] == "principal_removed"
    assert "principal_removed" in str(x)
    assert e.explain("user:dave", "tickets:read").decision["reason"] == "unknown_principal"
    agent = e.provision("refund-agent", on_behalf_of="user:carol")
    doc = policy.from_file(policy.example_path())
    templates = dict(doc.templates)
    del templates["refund-agent"]
    e.reload(msgspec.structs.replace(doc, templates=templates))
    x = e.explain(agent, "payments:refund")
    assert x.decision["reason"] == "unknown_template"
    assert x.allowed is False
    assert "unknown_template" in str(x)


@pytest.mark.parametrize("bad", [None, 1.5, ["user:alice"]])
def test_malformed_subject(example_engine: charter.Engine, bad: Any) -> None:
    # A value that is no subject at all: a usage error, or a `malformed_request` denial; nothing else.
    try:
        x = example_engine.explain(bad, "db:read")
    except charter.InvalidRequestError:
        return
    assert x.allowed is False
    assert x.decision["reason"] == "malformed_request"
