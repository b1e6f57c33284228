"""Policy-wide `[[guards]]`: requirements on high-risk resources and actions that hold whatever the
roles say. Checked once every level of the chain allowed; a false or unevaluable `require` denies
`guard_failed` with the guard as rule and its reason as detail."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import charter

POLICY: dict[str, Any] = {
    "actions": ["db:read", "db:write", "deploy:run", "crm:read"],
    "resources": {"production": ["prod/**"], "pii": ["customers/*"]},
    "roles": {
        "eng": {"allow": ["db:*", "deploy:run"], "deny": [{"action": "db:write", "on": ["prod/secrets/**"]}]},
        "support": {"allow": ["crm:read", "db:read"]},
    },
    "principals": {
        "user:bob": {"roles": ["eng", "support"], "attributes": {"oncall": True}},
        "user:eve": {"roles": ["eng"], "attributes": {"oncall": False}},
    },
    "templates": {"deployer": {"roles": ["eng"]}, "helper": {"roles": ["support", "eng"]}},
    "guards": [
        {
            "on": ["@production"],
            "actions": ["db:write", "deploy:run"],
            "require": 'context.ticket.startswith("CHG-")',
            "reason": "production changes need a change ticket",
        },
        {"on": ["@pii"], "require": 'context.purpose == "support"', "reason": "PII needs a purpose"},
        {"actions": ["deploy:run"], "require": "principal.oncall == true"},
    ],
}
TICKET = {"ticket": "CHG-7"}


@pytest.fixture
def engine() -> charter.Engine:
    return charter.Engine.from_dict(POLICY)


def test_guard_denies_without_its_requirement(engine: charter.Engine) -> None:
    d = engine.check("user:bob", "db:write", "prod/db")
    assert (d.allowed, d.reason, d.rule) == (False, "guard_failed", "guards[0]")
    assert d.detail is not None
    assert d.detail.startswith("production changes need a change ticket")
    assert "context.ticket" in d.detail
    d = engine.check("user:bob", "db:write", "prod/db", {"ticket": "INC-1"})
    assert (d.reason, d.detail) == ("guard_failed", "production changes need a change ticket")
    assert d.to_dict()["detail"] == "production changes need a change ticket"


def test_guard_passes_with_its_requirement(engine: charter.Engine) -> None:
    d = engine.check("user:bob", "db:write", "prod/db", TICKET)
    assert (d.allowed, d.reason, d.rule) == (True, "granted", "roles.eng.allow[0]")


def test_guard_only_where_it_applies(engine: charter.Engine) -> None:
    assert engine.check("user:bob", "db:write", "staging/db").allowed  # not @production
    assert engine.check("user:bob", "db:read", "prod/db").allowed  # not a guarded action
    assert engine.check("user:bob", "db:write").allowed  # `on` never matches a request without resource


def test_role_denials_come_first(engine: charter.Engine) -> None:
    d = engine.check("user:bob", "db:write", "prod/secrets/x", TICKET)
    assert (d.reason, d.rule) == ("denied_by_rule", "roles.eng.deny[0]")
    d = engine.check("user:eve", "crm:read", "customers/1")
    assert (d.reason, d.rule) == ("no_grant", None)


def test_guard_without_on_or_actions(engine: charter.Engine) -> None:
    # guards[1]: every action on @pii; guards[2]: deploy:run on anything, with or without resource.
    assert engine.check("user:bob", "crm:read", "customers/1", {"purpose": "support"}).allowed
    d = engine.check("user:bob", "crm:read", "customers/1", {"purpose": "fun"})
    assert (d.reason, d.rule, d.detail) == ("guard_failed", "guards[1]", "PII needs a purpose")
    assert engine.check("user:bob", "deploy:run").allowed
    d = engine.check("user:eve", "deploy:run")
    assert (d.reason, d.rule) == ("guard_failed", "guards[2]")
    assert d.detail == "guard `guards[2]` requires `principal.oncall == true`"
    # The first failing guard in document order is reported.
    d = engine.check("user:eve", "deploy:run", "prod/api")
    assert d.rule == "guards[0]"
    assert engine.check("user:eve", "deploy:run", "prod/api", TICKET).rule == "guards[2]"


def test_guards_across_delegation_chains(engine: charter.Engine) -> None:
    bot = engine.provision("deployer", on_behalf_of="user:bob")
    sub = engine.provision("helper", on_behalf_of=bot)
    for subject in (bot, sub):
        d = engine.check(subject, "deploy:run", "prod/api")
        assert (d.reason, d.rule) == ("guard_failed", "guards[0]")
        assert engine.check(subject, "deploy:run", "prod/api", TICKET).allowed
    # The root principal's attributes are read through the whole chain.
    eve_bot = engine.provision("deployer", on_behalf_of="user:eve")
    assert engine.check(eve_bot, "deploy:run", "prod/api", TICKET).rule == "guards[2]"
    # An agent acting for nobody has no principal: the guard cannot be evaluated, so it denies.
    orphan = engine.provision("deployer")
    d = engine.check(orphan, "deploy:run", None, TICKET)
    assert (d.reason, d.rule) == ("guard_failed", "guards[2]")
    assert d.detail is not None
    assert "missing attribute `principal.oncall`" in d.detail
    # A delegator refusing comes before any guard.
    support_only = engine.provision("helper", on_behalf_of="user:eve")
    assert engine.check(support_only, "crm:read", "customers/1").reason == "delegator_denied"


def test_batches_apply_guards(engine: charter.Engine) -> None:
    bot = engine.provision("deployer", on_behalf_of="user:bob")
    run, read, write = (engine.action_id(a) for a in ("deploy:run", "db:read", "db:write"))
    handles = np.full(5, bot.handle, dtype=np.uint64)
    actions = np.array([run, run, read, write, write], dtype=np.uint32)
    resources = ["prod/api", "prod/api", "prod/db", "prod/db", "dev/db"]
    context = {"ticket": ["CHG-1", "nope", None, None, None]}
    allowed, codes = engine.check_batch_reasons(handles, actions, resources, context)
    assert allowed.tolist() == [True, False, True, False, True]
    assert [charter.REASONS[c] for c in codes] == [
        "granted",
        "guard_failed",
        "granted",
        "guard_failed",
        "granted",
    ]
    assert engine.check_batch(handles, actions, resources, context).tolist() == allowed.tolist()
    # Without resources: only guards[2] (no `on`) can apply.
    allowed, codes = engine.check_batch_reasons(handles, actions)
    assert allowed.tolist() == [True, True, True, True, True]


def test_explain_lists_guards(engine: charter.Engine) -> None:
    x = engine.explain("user:bob", "db:write", "prod/db", {"ticket": 7})
    assert x.decision["reason"] == "guard_failed"
    by_rule = {g["rule"]: g for g in x.data["guards"]}
    assert set(by_rule) == {"guards[0]", "guards[1]"}  # guards[1] covers every action, on @pii
    g = by_rule["guards[0]"]
    assert (g["matched"], g["condition"]) == (True, "error")
    assert g["failure"]["kind"] == "type_mismatch"
    assert (by_rule["guards[1]"]["matched"], by_rule["guards[1]"]["condition"]) == (False, None)
    assert "guards[0]" in str(x)
    no_guards = charter.Engine.from_dict({k: v for k, v in POLICY.items() if k != "guards"})
    assert "guards" not in no_guards.explain("user:bob", "db:read", "prod/db").data


@pytest.mark.parametrize(
    ("guard", "path", "fragment"),
    [
        ({"require": "context.x >"}, "guards[0].require", "1:"),
        ({"require": "true", "on": []}, "guards[0].on", "empty"),
        ({"require": "true", "actions": []}, "guards[0].actions", "empty"),
        ({"require": "true", "actions": ["db:zap"]}, "guards[0].actions[0]", "db:zap"),
        ({"require": "true", "on": ["@nope"]}, "guards[0].on[0]", "nope"),
    ],
)
def test_guard_errors(guard: dict[str, Any], path: str, fragment: str) -> None:
    with pytest.raises(charter.PolicyError) as info:
        charter.Engine.from_dict({**POLICY, "guards": [guard]})
    assert info.value.path == path
    assert fragment in info.value.message


def test_guard_unknown_field_and_missing_require() -> None:
    with pytest.raises(charter.PolicyError):
        charter.Engine.from_dict({**POLICY, "guards": [{"require": "true", "when": "true"}]})
    with pytest.raises(charter.PolicyError):
        charter.Engine.from_dict({**POLICY, "guards": [{"on": ["prod/**"]}]})


def test_toml_guards_and_reload(engine: charter.Engine) -> None:
    text = """
actions = ["db:write"]
[roles.w]
allow = ["db:write"]
[principals."user:w"]
roles = ["w"]
[[guards]]
on = ["prod/**"]
require = 'has context.ticket'
"""
    e = charter.Engine.from_toml(text)
    assert e.check("user:w", "db:write", "prod/x").reason == "guard_failed"
    assert e.check("user:w", "db:write", "prod/x", {"ticket": 1}).allowed
    e.reload_toml(text.split("[[guards]]")[0])
    assert e.check("user:w", "db:write", "prod/x").allowed


def test_example_policy_guards() -> None:
    e = charter.Engine.example()
    d = e.check("user:bob", "deploy:run", "prod/api")
    assert (d.reason, d.rule) == ("guard_failed", "guards[2]")
    assert e.check("user:bob", "deploy:run", "prod/api", {"change_ticket": "CHG-1"}).allowed
    carol = {"approved_by": "user:carol"}
    assert e.check("user:carol", "payments:payout", "ledger/2024", carol).reason == "guard_failed"
    assert e.check("user:carol", "payments:payout", "ledger/2024", {"approved_by": "user:dave"}).allowed
    e.upsert_principal("user:root", roles=["admin"])
    assert e.check("user:root", "db:export", "customers/1").reason == "guard_failed"
    assert e.check("user:root", "db:export", "customers/1", {"purpose": "legal"}).allowed
