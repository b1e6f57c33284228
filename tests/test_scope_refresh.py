"""Credential scopes (`provision(scope=...)`) and lifetime refresh (`refresh`)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import charter

POLICY = {
    "actions": ["db:read", "db:write", "db:export", "mail:send"],
    "resources": {"prod": ["prod/**"]},
    "roles": {
        "worker": {"allow": ["db:*", "mail:send"], "deny": [{"action": "db:write", "on": ["@prod"]}]},
    },
    "principals": {"user:u": {"roles": ["worker"]}},
    "templates": {
        "bot": {"roles": ["worker"], "ttl": 60, "max_ttl": 600},
        "sub": {"roles": ["worker"], "ttl": 30},
    },
}


@pytest.fixture
def clock() -> charter.ManualClock:
    return charter.ManualClock(1_700_000_000)


@pytest.fixture
def engine(clock: charter.ManualClock) -> charter.Engine:
    return charter.Engine.from_dict(POLICY, clock=clock)


def test_scope_limits_what_roles_allow(engine: charter.Engine) -> None:
    bot = engine.provision("bot", on_behalf_of="user:u", scope=["db:read"])
    assert bot.scope == ["db:read"]
    assert engine.check(bot, "db:read")
    d = engine.check(bot, "db:write", "staging/x")
    assert not d
    assert d.reason == "out_of_scope"
    assert d.rule is None
    assert engine.check(bot, "mail:send").reason == "out_of_scope"
    # without a scope the same template may do all its roles allow
    free = engine.provision("bot", on_behalf_of="user:u")
    assert free.scope is None
    assert engine.check(free, "mail:send")


def test_scope_patterns_and_sub_agents_narrow(engine: charter.Engine) -> None:
    bot = engine.provision("bot", on_behalf_of="user:u", scope=["db:*"])
    assert engine.check(bot, "db:export")
    assert not engine.check(bot, "mail:send")
    # a sub-agent's own scope cannot widen its parent's
    sub = engine.provision("sub", on_behalf_of=bot, scope=["db:read", "mail:send"])
    assert engine.check(sub, "db:read")
    assert engine.check(sub, "mail:send").reason == "out_of_scope"
    assert engine.check(sub, "db:export").reason == "out_of_scope"
    # and an unscoped sub-agent inherits the parent's scope
    sub2 = engine.provision("sub", on_behalf_of=bot)
    assert engine.check(sub2, "mail:send").reason == "out_of_scope"
    assert engine.check(sub2, "db:export")


def test_scope_does_not_override_denies(engine: charter.Engine) -> None:
    bot = engine.provision("bot", on_behalf_of="user:u", scope=["db:write"])
    d = engine.check(bot, "db:write", "prod/orders")
    assert d.reason == "denied_by_rule"
    assert engine.check(bot, "db:write", "staging/orders")


def test_bad_scopes_are_refused(engine: charter.Engine) -> None:
    with pytest.raises(charter.ProvisionError, match="unknown action `db:drop`"):
        engine.provision("bot", scope=["db:drop"])
    with pytest.raises(charter.ProvisionError, match="matches no declared action"):
        engine.provision("bot", scope=["nope:*"])
    # an empty scope is allowed and allows nothing
    empty = engine.provision("bot", scope=[])
    assert engine.check(empty, "db:read").reason == "out_of_scope"


def test_batches_report_out_of_scope(engine: charter.Engine) -> None:
    bot = engine.provision("bot", on_behalf_of="user:u", scope=["db:read"])
    ids = [engine.action_id(a) for a in ("db:read", "db:write", "mail:send")]
    allowed, codes = engine.check_batch_reasons(np.full(3, bot.handle, dtype=np.uint64), ids)
    assert allowed.tolist() == [True, False, False]
    assert [charter.REASONS[c] for c in codes] == ["granted", "out_of_scope", "out_of_scope"]
    allowed, codes = engine.check_batch_reasons([bot.handle] * 3, ids, ["a/b"] * 3)
    assert [charter.REASONS[c] for c in codes] == ["granted", "out_of_scope", "out_of_scope"]
    assert engine.check_batch([bot.handle] * 3, ids).tolist() == [True, False, False]


def test_scope_survives_reload_and_only_narrows(engine: charter.Engine) -> None:
    bot = engine.provision("bot", on_behalf_of="user:u", scope=["db:read", "mail:send"])
    shrunk = {**POLICY, "actions": ["db:read", "db:write", "db:export"]}
    shrunk["roles"] = {"worker": {"allow": ["db:*"]}}
    engine.reload(shrunk)
    assert engine.check(bot, "db:read")
    assert engine.check(bot, "db:write").reason == "out_of_scope"
    assert engine.check(bot, "mail:send").reason == "unknown_action"


def test_refresh_extends_and_is_bounded(engine: charter.Engine, clock: charter.ManualClock) -> None:
    bot = engine.provision("bot", on_behalf_of="user:u")
    assert bot.expires_at == pytest.approx(clock.now() + 60)
    clock.advance(50)
    refreshed = engine.refresh(bot, ttl=120)
    assert refreshed.expires_at == pytest.approx(clock.now() + 120)
    clock.advance(100)
    assert engine.check(bot, "db:read")
    with pytest.raises(charter.ProvisionError, match="max_ttl"):
        engine.refresh(bot, ttl=601)
    with pytest.raises(charter.InvalidRequestError):
        engine.refresh(bot)
    with pytest.raises(charter.InvalidRequestError):
        engine.refresh(bot, ttl=1, expires_at=clock.now() + 5)
    clock.advance(21)
    assert engine.check(bot, "db:read").reason == "expired"
    with pytest.raises(charter.ProvisionError, match="not active"):
        engine.refresh(bot, ttl=10)


def test_refresh_never_lets_a_child_outlive_its_parent(
    engine: charter.Engine, clock: charter.ManualClock
) -> None:
    parent = engine.provision("bot", on_behalf_of="user:u", ttl=100)
    child = engine.provision("sub", on_behalf_of=parent, ttl=30)
    # the child cannot be extended past its parent
    assert engine.refresh(child, ttl=500).expires_at == pytest.approx(parent.expires_at)
    # shortening the parent shortens the child too
    engine.refresh(parent, ttl=10)
    assert engine.agent(child).expires_at == pytest.approx(clock.now() + 10)
    clock.advance(10)
    assert engine.check(child, "db:read").reason == "expired"


@settings(max_examples=60, deadline=None)
@given(
    scopes=st.lists(
        st.none() | st.lists(st.sampled_from(["db:read", "db:write", "db:export", "mail:send", "db:*"])),
        min_size=1,
        max_size=3,
    ),
    action=st.sampled_from(["db:read", "db:write", "db:export", "mail:send"]),
)
def test_a_chain_is_allowed_only_inside_every_scope(scopes: list[list[str] | None], action: str) -> None:
    engine = charter.Engine.from_dict(POLICY)
    parent: charter.Agent | str = "user:u"
    for scope in scopes:
        parent = engine.provision("bot", on_behalf_of=parent, scope=scope)

    def covers(scope: list[str] | None) -> bool:
        return scope is None or action in scope or ("db:*" in scope and action.startswith("db:"))

    d = engine.check(parent, action)
    assert d.allowed == all(covers(s) for s in scopes)
    if not d.allowed:
        assert d.reason == "out_of_scope"
