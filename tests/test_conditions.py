"""`when` conditions through the engine: allow/deny semantics, fail-closed errors, the reason and
detail a decision carries, what conditions read (context, resource, agent, principal, time),
`explain`, batches with context columns, and the loader on random condition strings."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import charter

NEW_YEAR_2024 = 1_704_067_200.0  # a Monday, 00:00 UTC


def engine(clock: charter.ManualClock | None = None, **extra: Any) -> charter.Engine:
    doc: dict[str, Any] = {
        "actions": ["pay:refund", "crm:read", "crm:write", "db:export"],
        "resources": {"pii": ["customers/*"], "prod": ["prod/**"]},
        "roles": {
            "support": {
                "allow": [
                    {"action": "pay:refund", "when": 'context.amount <= 500 and context.currency == "EUR"'},
                    {"action": "crm:read", "on": ["customers/*"], "when": 'context.purpose == "support"'},
                    {"action": "crm:write", "when": '"pii" in resource.class and principal.team == "care"'},
                    {"action": "db:export", "when": "time.hour >= 9 and time.hour < 17"},
                ],
                "deny": [{"action": "pay:refund", "when": "context.risk > 0.8"}],
            },
            "bots": {"allow": [{"action": "*", "when": 'agent.template == "helper" and agent.depth <= 2'}]},
        },
        "principals": {
            "user:ann": {"roles": ["support"], "attributes": {"team": "care"}},
            "user:bob": {"roles": ["support"], "attributes": {"team": "sales"}},
        },
        "templates": {"helper": {"roles": ["bots"]}, "other": {"roles": ["bots"]}},
    }
    doc.update(extra)
    return charter.Engine.from_dict(doc, clock=clock)


OK = {"amount": 100, "currency": "EUR", "risk": 0.1}


def test_allow_when_condition_holds() -> None:
    e = engine()
    d = e.check("user:ann", "pay:refund", context=OK)
    assert (d.allowed, d.reason, d.rule, d.detail) == (True, "granted", "roles.support.allow[0]", None)


def test_false_condition_is_condition_failed_with_the_entry() -> None:
    d = engine().check("user:ann", "pay:refund", context={**OK, "amount": 501})
    assert (d.allowed, d.reason, d.rule) == (False, "condition_failed", "roles.support.allow[0]")
    assert d.detail is not None
    assert "is false" in d.detail


@pytest.mark.parametrize(
    ("context", "fragment"),
    [
        ({"currency": "EUR", "risk": 0.1}, "missing attribute `context.amount`"),
        ({**OK, "amount": "100"}, "type mismatch"),
        ({**OK, "amount": 2**70}, "missing attribute `context.amount`"),  # does not convert: left out
        ({**OK, "amount": object()}, "missing attribute `context.amount`"),
        ({**OK, "amount": [1]}, "type mismatch"),
    ],
)
def test_allow_condition_error_never_passes(context: dict[str, Any], fragment: str) -> None:
    d = engine().check("user:ann", "pay:refund", context=context)
    assert (d.allowed, d.reason, d.rule) == (False, "condition_failed", "roles.support.allow[0]")
    assert d.detail is not None
    assert fragment in d.detail, d.detail


def test_deny_condition_true_denies() -> None:
    d = engine().check("user:ann", "pay:refund", context={**OK, "risk": 0.9})
    assert (d.allowed, d.reason, d.rule, d.detail) == (False, "denied_by_rule", "roles.support.deny[0]", None)


@pytest.mark.parametrize("risk", [None, "high", [0.9]])
def test_deny_condition_error_denies(risk: Any) -> None:
    d = engine().check("user:ann", "pay:refund", context={**OK, "risk": risk})
    assert (d.allowed, d.reason, d.rule) == (False, "denied_by_rule", "roles.support.deny[0]")
    assert d.detail is not None
    assert d.detail.startswith("deny condition could not be evaluated")


def test_deny_condition_missing_key_denies() -> None:
    d = engine().check("user:ann", "pay:refund", context={"amount": 1, "currency": "EUR"})
    assert (d.allowed, d.reason) == (False, "denied_by_rule")
    assert d.detail is not None
    assert "context.risk" in d.detail


def test_without_context_conditions_fail_closed() -> None:
    e = engine()
    assert e.check("user:ann", "pay:refund").reason == "denied_by_rule"
    assert e.check("user:ann", "crm:read", "customers/1").reason == "condition_failed"


def test_bool_is_not_an_int() -> None:
    e = charter.Engine.from_dict(
        {
            "actions": ["a:b"],
            "roles": {"r": {"allow": [{"action": "a:b", "when": "context.n == 1"}]}},
            "principals": {"p": {"roles": ["r"]}},
        }
    )
    assert e.check("p", "a:b", context={"n": 1}).allowed
    assert e.check("p", "a:b", context={"n": 1.0}).allowed
    assert e.check("p", "a:b", context={"n": np.int64(1)}).allowed
    d = e.check("p", "a:b", context={"n": True})
    assert (d.reason, d.detail is not None and "type mismatch" in d.detail) == ("condition_failed", True)


def test_context_must_be_a_dict() -> None:
    e = engine()
    for bad in ([("amount", 1)], "amount=1", 3):
        d = e.check("user:ann", "pay:refund", context=bad)
        assert (d.allowed, d.reason) == (False, "malformed_request")


def test_unread_keys_are_ignored() -> None:
    # Only the keys conditions read are converted: anything may sit under the others.
    d = engine().check("user:ann", "pay:refund", context={**OK, "blob": object(), 3: "x"})
    assert d.allowed


def test_resource_and_principal_attributes() -> None:
    e = engine()
    assert e.check("user:ann", "crm:write", "customers/7").allowed
    d = e.check("user:bob", "crm:write", "customers/7")
    assert (d.reason, d.rule) == ("condition_failed", "roles.support.allow[2]")
    assert e.check("user:ann", "crm:write", "orders/7").reason == "condition_failed"
    # Without a resource `resource.class` is missing: fail closed.
    assert e.check("user:ann", "crm:write").reason == "condition_failed"
    e.upsert_principal("user:bob", roles=["support"], attributes={"team": "care"})
    assert e.check("user:bob", "crm:write", "customers/7").allowed


def test_resource_scoped_entry_with_condition() -> None:
    e = engine()
    assert e.check("user:ann", "crm:read", "customers/1", {"purpose": "support"}).allowed
    # `on` does not match: the condition is never consulted.
    assert e.check("user:ann", "crm:read", "orders/1", {"purpose": "support"}).reason == "no_grant"
    assert e.check("user:ann", "crm:read", "customers/1", {"purpose": "fun"}).reason == "condition_failed"


def test_agent_attributes_and_delegation() -> None:
    e = engine()
    helper = e.provision("helper", on_behalf_of="user:ann")
    other = e.provision("other", on_behalf_of="user:ann")
    sub = e.provision("helper", on_behalf_of=helper)
    subsub = e.provision("helper", on_behalf_of=sub)
    ctx = {"purpose": "support"}
    assert e.check(helper, "crm:read", "customers/1", ctx).allowed
    assert e.check(sub, "crm:read", "customers/1", ctx).allowed
    assert e.check(other, "crm:read", "customers/1", ctx).reason == "condition_failed"
    assert e.check(subsub, "crm:read", "customers/1", ctx).reason == "condition_failed"  # depth 3
    # The delegator's own allow fails its condition: the agent is refused as delegator_denied.
    d = e.check(helper, "crm:read", "customers/1", {"purpose": "fun"})
    assert (d.reason, d.rule) == ("delegator_denied", "roles.support.allow[1]")
    # The principal itself is no agent: `agent.*` is missing for it, the bots role grants nothing.
    e.upsert_principal("user:cy", roles=["bots"])
    d = e.check("user:cy", "crm:read", "customers/1", ctx)
    assert d.reason == "condition_failed"
    assert d.detail is not None
    assert "agent.template" in d.detail


def test_agent_id_delegator_and_age() -> None:
    clock = charter.ManualClock(NEW_YEAR_2024)
    e = charter.Engine.from_dict(
        {
            "actions": ["a:b"],
            "roles": {
                "r": {
                    "allow": [{"action": "a:b", "when": 'agent.delegator == "user:p" and agent.age >= 60'}]
                },
                "all": {"allow": ["a:b"]},
            },
            "principals": {"user:p": {"roles": ["all"]}},
            "templates": {"t": {"roles": ["r"]}},
        },
        clock=clock,
    )
    a = e.provision("t", on_behalf_of="user:p", agent_id="agent-1")
    assert e.check(a, "a:b").reason == "condition_failed"
    clock.advance(60)
    assert e.check(a, "a:b").allowed
    assert e.check("agent-1", "a:b").allowed
    sub = e.provision("t", on_behalf_of=a)
    clock.advance(60)
    assert e.check(sub, "a:b").reason == "condition_failed"  # its delegator is agent-1


def test_time_reads_the_engine_clock() -> None:
    clock = charter.ManualClock(NEW_YEAR_2024 + 8 * 3600)
    e = engine(clock)
    assert e.check("user:ann", "db:export").reason == "condition_failed"
    clock.advance(3600)
    assert e.check("user:ann", "db:export").allowed
    clock.advance(8 * 3600)
    assert not e.check("user:ann", "db:export").allowed


def test_explain_shows_each_condition() -> None:
    e = engine()
    x = e.explain("user:ann", "pay:refund", context={"amount": "lots", "currency": "EUR", "risk": 0.1})
    assert x.decision["reason"] == "condition_failed"
    assert "type mismatch" in x.decision["detail"]
    level = x.data["chain"][0]
    assert level["outcome"] == "condition_failed"
    by_rule = {entry["rule"]: entry for entry in level["entries"]}
    allow = by_rule["roles.support.allow[0]"]
    assert allow["when"].startswith("context.amount <= 500")
    assert allow["condition"] == "error"
    assert allow["failure"]["kind"] == "type_mismatch"
    assert allow["failure"]["at"] == "context.amount <= 500"
    assert '"lots"' in allow["failure"]["detail"]
    assert by_rule["roles.support.deny[0]"]["condition"] == "false"
    text = str(x)
    assert "when context.amount <= 500" in text
    assert "-> error" in text
    assert "detail:" in text
    # Entries whose resource does not match are not evaluated.
    x = e.explain("user:ann", "crm:read", "orders/1", context={"purpose": "support"})
    entry = next(en for en in x.data["chain"][0]["entries"] if en["rule"] == "roles.support.allow[1]")
    assert entry["condition"] is None


def test_batch_with_context_columns() -> None:
    e = engine()
    a = e.provision("helper", on_behalf_of="user:ann")
    n = 6
    handles = np.full(n, a.handle, dtype=np.uint64)
    actions = np.full(n, e.action_id("pay:refund"), dtype=np.uint32)
    # `helper` has `*` under its condition; the principal's support role decides refunds.
    context = {
        "amount": np.array([10, 600, 10, 10, 10, 10]),
        "currency": ["EUR", "EUR", "USD", "EUR", "EUR", None],
        "risk": np.array([0.1, 0.1, 0.1, 0.95, 0.1, 0.1]),
    }
    allowed, codes = e.check_batch_reasons(handles, actions, None, context)
    assert allowed.tolist() == [True, False, False, False, True, False]
    reasons = [charter.REASONS[c] for c in codes]
    assert reasons == ["granted", *["delegator_denied"] * 3, "granted", "delegator_denied"]
    assert e.check_batch(handles, actions, None, context).tolist() == allowed.tolist()
    # Same answers as single checks.
    for i in range(n):
        row = {k: (v[i].item() if isinstance(v, np.ndarray) else v[i]) for k, v in context.items()}
        assert e.check(a, "pay:refund", context=row).allowed == allowed[i]
    # Without context every condition fails closed.
    assert not e.check_batch(handles, actions).any()


def test_batch_column_of_wrong_length_is_an_error() -> None:
    e = engine()
    a = e.provision("helper", on_behalf_of="user:ann")
    handles = np.full(3, a.handle, dtype=np.uint64)
    actions = np.full(3, e.action_id("pay:refund"), dtype=np.uint32)
    with pytest.raises(charter.InvalidRequestError):
        e.check_batch(handles, actions, None, {"amount": np.array([1, 2])})
    with pytest.raises(charter.InvalidRequestError):
        e.check_batch(handles, actions, None, [1, 2, 3])  # type: ignore[arg-type]


def test_chains_without_conditions_keep_the_fast_path() -> None:
    e = engine(
        roles={"plain": {"allow": ["crm:read"]}},
        principals={"user:c": {"roles": ["plain"]}},
        templates={"t": {"roles": ["plain"]}},
    )
    a = e.provision("t", on_behalf_of="user:c")
    handles = np.full(4, a.handle, dtype=np.uint64)
    actions = np.array([e.action_id("crm:read"), e.action_id("crm:write")] * 2, dtype=np.uint32)
    allowed, codes = e.check_batch_reasons(handles, actions)
    assert allowed.tolist() == [True, False, True, False]
    assert [charter.REASONS[c] for c in codes] == ["granted", "no_grant"] * 2


# Constant conditions on purpose (lint CH105 rightly warns).
@pytest.mark.filterwarnings("ignore::charter.policytools.lint.PolicyLintWarning")
def test_constant_conditions() -> None:
    e = charter.Engine.from_dict(
        {
            "actions": ["a:b", "a:c"],
            "roles": {
                "r": {"allow": [{"action": "a:b", "when": "true"}, {"action": "a:c", "when": "1 > 2"}]}
            },
            "principals": {"p": {"roles": ["r"]}},
        }
    )
    assert e.check("p", "a:b").allowed
    assert e.check("p", "a:c").reason == "condition_failed"


def test_reload_changes_conditions() -> None:
    e = engine()
    assert not e.check("user:ann", "pay:refund", context={**OK, "amount": 900}).allowed
    doc = {
        "actions": ["pay:refund"],
        "roles": {"s": {"allow": [{"action": "pay:refund", "when": "context.amount <= 1000"}]}},
        "principals": {"user:ann": {"roles": ["s"]}},
    }
    e.reload(doc)
    assert e.check("user:ann", "pay:refund", context={"amount": 900}).allowed


@pytest.mark.parametrize(
    ("when", "fragment"),
    [
        ("context.amount <=", "1:18"),
        ("contxt.amount < 3", "unknown name `contxt`"),
        ('context.amount < 3 and\n  agent.colour == "red"', "2:"),
        ('1 < "a"', ""),
    ],
)
def test_bad_conditions_are_policy_errors(when: str, fragment: str) -> None:
    doc = {"actions": ["a:b"], "roles": {"r": {"deny": [{"action": "a:b", "when": when}]}}}
    with pytest.raises(charter.PolicyError) as info:
        charter.Engine.from_dict(doc)
    assert info.value.path == "roles.r.deny[0].when"
    assert fragment in info.value.message


FUZZ_ALPHABET = st.sampled_from(
    [
        *list("abcxyz0123456789 .,()[]\"'<>=!-+*/_\n\t@#$%"),
        "context",
        "resource",
        "agent",
        "principal",
        "time",
        "and",
        "or",
        "not",
        "in",
        "has",
        "true",
        "false",
        "null",
        ".startswith(",
        ".matches(",
        "==",
        "<=",
        "class",
        "name",
        "hour",
    ]
)


# Random conditions include constant ones (lint CH105 rightly warns).
@pytest.mark.filterwarnings("ignore::charter.policytools.lint.PolicyLintWarning")
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(src=st.one_of(st.text(max_size=40), st.lists(FUZZ_ALPHABET, max_size=25).map("".join)))
def test_loader_fuzz_random_when(src: str) -> None:
    doc = {
        "actions": ["a:b"],
        "roles": {"r": {"allow": [{"action": "a:b", "when": src}]}},
        "principals": {"p": {"roles": ["r"]}},
    }
    try:
        e = charter.Engine.from_dict(doc)
    except charter.PolicyError as err:
        failure: charter.PolicyError | None = err
    else:
        failure = None
    if failure is not None:
        assert str(failure.path).startswith("roles.r.allow[0]")
        return
    # Loaded: deciding never raises.
    for ctx in (None, {}, {"x": 1, "a": "b"}):
        d = e.check("p", "a:b", "x/y", ctx)
        assert d.reason in ("granted", "condition_failed")
