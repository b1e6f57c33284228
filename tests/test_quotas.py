"""Quotas and the kill switch: rates, budgets, per-action limits, concurrency,
hierarchy, the breaker, suspension and freezing. Time comes from a
`ManualClock`: no test sleeps to wait for a rate window."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import charter

T0 = 1_700_000_000.0


def policy(**quotas: Any) -> dict[str, Any]:
    return {
        "actions": ["db:read", "db:write", "llm:complete", "pay:refund"],
        "roles": {
            "worker": {"allow": ["db:*", "llm:complete", "pay:refund"]},
            "reader": {"allow": ["db:read"]},
        },
        "quotas": {"agent": {"rate": "10/s", "burst": 3}, "user": {"budget": "100/h"}} | quotas,
        "costs": {"llm:complete": 25},
        "principals": {"user:u": {"roles": ["worker"], "quota": "user"}, "user:v": {"roles": ["worker"]}},
        "templates": {
            "bot": {"roles": ["worker"], "quota": "agent"},
            "free": {"roles": ["worker"]},
            "tripwire": {
                "roles": ["reader"],
                "quota": "agent",
                "breaker": {"quota_denials": 3, "policy_denials": 2, "window": "10s"},
            },
        },
    }


@pytest.fixture
def clock() -> charter.ManualClock:
    return charter.ManualClock(T0)


def engine_of(clock: charter.ManualClock, **quotas: Any) -> charter.Engine:
    return charter.Engine.from_dict(policy(**quotas), clock=clock)


def test_rate_admits_the_burst_then_says_when_to_retry(clock: charter.ManualClock) -> None:
    e = engine_of(clock)
    bot = e.provision("bot")
    assert [bool(e.check(bot, "db:read")) for _ in range(4)] == [True, True, True, False]
    d = e.check(bot, "db:read")
    assert d.reason == "rate_limited"
    assert d.retry_after == pytest.approx(0.1)
    clock.advance(0.099)
    assert e.check(bot, "db:read").reason == "rate_limited"
    clock.advance(0.001)
    assert e.check(bot, "db:read")
    assert not e.check(bot, "db:read")


def test_only_allowed_requests_are_charged(clock: charter.ManualClock) -> None:
    e = engine_of(clock)
    bot = e.provision("bot")
    for _ in range(10):
        assert e.check(bot, "db:read", "a//b").reason == "invalid_resource"
        assert e.check(bot, "nope:x").reason == "unknown_action"
    assert [bool(e.check(bot, "db:read")) for _ in range(3)] == [True, True, True]


def test_budget_counts_costs_and_is_shared_by_a_principals_agents(clock: charter.ManualClock) -> None:
    e = engine_of(clock)
    a = e.provision("free", on_behalf_of="user:u")
    b = e.provision("free", on_behalf_of="user:u")
    # 100 units an hour for everything acting for user:u; llm:complete costs 25
    assert [bool(e.check(x, "llm:complete")) for x in (a, b, a, b)] == [True] * 4
    d = e.check(a, "llm:complete")
    assert d.reason == "budget_exhausted"
    assert d.retry_after == pytest.approx(900, rel=1e-6)  # 25 units at 100/h
    assert e.check(b, "db:read").reason == "budget_exhausted"  # cost 1, none left
    # another user's agents are unaffected
    c = e.provision("free", on_behalf_of="user:v")
    assert e.check(c, "llm:complete")
    assert e.check("user:u", "db:read").reason == "budget_exhausted"


def test_hierarchy_is_all_or_nothing(clock: charter.ManualClock) -> None:
    e = engine_of(clock, agent={"rate": "10/s", "burst": 5}, user={"rate": "1/h", "burst": 2})
    parent = e.provision("bot", on_behalf_of="user:u")
    child = e.provision("bot", on_behalf_of=parent)
    assert e.check(child, "db:read")  # charges child, parent and user
    assert e.check(parent, "db:read")  # charges parent and user: the user's burst of 2 is used
    before = e.quota_status(child)
    d = e.check(child, "db:read")
    assert d.reason == "rate_limited"
    after = e.quota_status(child)
    # nothing was consumed at the levels that had room
    assert [lvl["rate"]["remaining"] for lvl in after] == pytest.approx(
        [lvl["rate"]["remaining"] for lvl in before]
    )
    assert [lvl["subject"] for lvl in after] == [child.id, parent.id, "user:u"]
    assert [lvl["quota"] for lvl in after] == ["agent", "agent", "user"]


def test_sub_agents_cannot_dodge_their_parents_limit(clock: charter.ManualClock) -> None:
    e = engine_of(clock)
    parent = e.provision("bot")
    admitted = 0
    for _ in range(10):
        child = e.provision("free", on_behalf_of=parent)  # no quota of its own
        admitted += sum(bool(e.check(child, "db:read")) for _ in range(5))
    assert admitted == 3  # the parent's burst, however many children


def test_per_action_limits(clock: charter.ManualClock) -> None:
    e = engine_of(clock, agent={"rate": "100/s", "limits": {"pay:*": "2/m"}})
    bot = e.provision("bot")
    assert [bool(e.check(bot, "pay:refund")) for _ in range(3)] == [True, True, False]
    d = e.check(bot, "pay:refund")
    assert d.reason == "rate_limited"
    assert d.retry_after == pytest.approx(30)
    assert e.check(bot, "db:read")  # other actions are not limited by it


def test_a_cost_above_the_budget_can_never_be_admitted(clock: charter.ManualClock) -> None:
    e = engine_of(clock, agent={"budget": "10/h"})
    bot = e.provision("bot")
    d = e.check(bot, "llm:complete")
    assert d.reason == "budget_exhausted"
    assert d.retry_after is None


def test_provision_can_override_the_templates_quota(clock: charter.ManualClock) -> None:
    e = engine_of(clock, agent={"rate": "10/s", "burst": 3}, tight={"rate": "1/m"})
    bot = e.provision("bot", quota="tight")
    assert [bool(e.check(bot, "db:read")) for _ in range(2)] == [True, False]
    with pytest.raises(charter.ProvisionError, match="unknown quota `nope`"):
        e.provision("bot", quota="nope")


def test_concurrency_cap_with_leases(clock: charter.ManualClock) -> None:
    e = engine_of(clock, agent={"max_in_flight": 2})
    bot = e.provision("bot")
    first = e.acquire(bot, "db:read")
    second = e.acquire(bot, "db:read")
    assert first
    assert second
    third = e.acquire(bot, "db:read")
    assert not third
    assert third.decision.reason == "concurrency_limit"
    assert e.quota_status(bot)[0]["in_flight"] == {"held": 2, "max": 2}
    first.release()
    first.release()  # idempotent
    with e.acquire(bot, "db:read") as lease:
        assert lease
        assert not e.acquire(bot, "db:read")
    assert e.acquire(bot, "db:read")
    # a denied request takes no slot
    assert not e.acquire(bot, "nope:x")


def test_breaker_suspends_on_quota_denials(clock: charter.ManualClock) -> None:
    e = engine_of(clock)
    bot = e.provision("tripwire", on_behalf_of="user:v")
    child = e.provision("free", on_behalf_of=bot)
    results = [e.check(bot, "db:read").reason for _ in range(7)]
    assert results[:3] == ["granted"] * 3
    assert results[3:6] == ["rate_limited"] * 3  # the third denial trips the breaker
    assert results[6] == "suspended"
    assert e.check(child, "db:read").reason == "suspended"
    assert e.agent(bot).state == "suspended"
    assert "3 quota denials within 10s" in (e.suspension(bot) or "")
    assert "3 quota denials" in (e.suspension(child) or "")
    assert e.resume(bot) == 2
    clock.advance(1)
    assert e.check(bot, "db:read")
    assert e.check(child, "db:read")


def test_breaker_suspends_on_policy_denials(clock: charter.ManualClock) -> None:
    e = engine_of(clock)
    bot = e.provision("tripwire")
    assert e.check(bot, "db:write").reason == "no_grant"
    assert e.check(bot, "db:write").reason == "no_grant"
    assert e.check(bot, "db:read").reason == "suspended"


def test_manual_suspension_and_principals(clock: charter.ManualClock) -> None:
    e = engine_of(clock)
    a = e.provision("free", on_behalf_of="user:v")
    b = e.provision("free", on_behalf_of=a)
    assert e.suspend(b, "looks odd") == 1
    assert e.suspend(a, "incident 42") == 1  # b was already suspended on its own account
    assert e.check(a, "db:read").reason == "suspended"
    assert e.resume(a) == 1  # b stays suspended: it was suspended for its own reason
    assert e.check(a, "db:read")
    assert e.check(b, "db:read").reason == "suspended"
    assert e.suspension(b) == "looks odd"
    assert e.resume(b) == 1
    assert e.check(b, "db:read")
    # a principal: everything acting for it is refused, and new agents are too
    e.suspend("user:v", "account compromised")
    assert e.check("user:v", "db:read").reason == "suspended"
    assert e.check(b, "db:read").reason == "suspended"
    assert e.suspension("user:v") == "account compromised"
    e.resume("user:v")
    assert e.check(b, "db:read")
    # suspended agents can be deprovisioned, and cannot delegate
    e.suspend(a)
    with pytest.raises(charter.ProvisionError, match="suspended"):
        e.provision("free", on_behalf_of=a)
    assert e.deprovision(a) == 2


def test_freeze_is_a_kill_switch(clock: charter.ManualClock) -> None:
    e = engine_of(clock)
    bot = e.provision("free")
    e.freeze()
    assert e.frozen
    assert e.check(bot, "db:read").reason == "frozen"
    assert e.check("user:v", "db:read").reason == "frozen"
    allowed, codes = e.check_batch_reasons([bot.handle] * 3, [e.action_id("db:read")] * 3)
    assert not allowed.any()
    assert {charter.REASONS[c] for c in codes} == {"frozen"}
    e.unfreeze()
    assert e.check(bot, "db:read")


def test_batches_charge_like_single_checks(clock: charter.ManualClock) -> None:
    e = engine_of(clock)
    bots = [e.provision("bot") for _ in range(3)]
    free = e.provision("free")
    handles = np.array([b.handle for b in bots for _ in range(5)] + [free.handle] * 5, dtype=np.uint64)
    actions = np.full(len(handles), e.action_id("db:read"), dtype=np.uint32)
    allowed, codes = e.check_batch_reasons(handles, actions)
    assert allowed.tolist() == ([True] * 3 + [False] * 2) * 3 + [True] * 5
    assert [charter.REASONS[c] for c in codes[3:5]] == ["rate_limited", "rate_limited"]
    clock.advance(1)
    assert e.check_batch(handles, actions).tolist() == ([True] * 3 + [False] * 2) * 3 + [True] * 5


def test_counters_survive_reload(clock: charter.ManualClock) -> None:
    e = engine_of(clock)
    bot = e.provision("bot")
    assert [bool(e.check(bot, "db:read")) for _ in range(3)] == [True] * 3
    e.reload(policy())
    assert not e.check(bot, "db:read")


def test_a_reload_that_adds_quotas_gives_existing_agents_counters(clock: charter.ManualClock) -> None:
    plain = policy()
    plain["quotas"] = {}
    plain["principals"]["user:u"].pop("quota")
    for t in plain["templates"].values():
        t.pop("quota", None)
        t.pop("breaker", None)
    e = charter.Engine.from_dict(plain, clock=clock)
    bot = e.provision("bot", on_behalf_of="user:u")
    assert all(bool(e.check(bot, "db:read")) for _ in range(10))
    e.reload(policy())
    assert [bool(e.check(bot, "db:read")) for _ in range(4)] == [True, True, True, False]


@pytest.mark.parametrize(
    ("quotas", "path", "message"),
    [
        ({"q": {"rate": "10/sec"}}, "quotas.q.rate", "expected a rate like"),
        ({"q": {"rate": "0/s"}}, "quotas.q.rate", "more than zero"),
        ({"q": {"budget": "x"}}, "quotas.q.budget", "expected a rate like"),
        ({"q": {"burst": 3}}, "quotas.q.burst", "`rate`, which is missing"),
        ({"q": {}}, "quotas.q", "at least one of"),
        ({"q": {"limits": {"nope:*": "1/s"}}}, 'quotas.q.limits."nope:*"', "matches no declared action"),
        (
            {
                "q": {
                    "limits": {f"db:{v}": "1/s" for v in ("read", "write")}
                    | {"llm:*": "1/s", "pay:*": "1/s", "*": "1/s"}
                }
            },
            "quotas.q.limits",
            "at most 4 limits",
        ),
    ],
)
def test_quota_errors_name_their_path(quotas: dict[str, Any], path: str, message: str) -> None:
    doc = policy(**quotas)
    doc["principals"]["user:u"].pop("quota")
    for t in doc["templates"].values():
        t.pop("quota", None)
    with pytest.raises(charter.PolicyError) as info:
        charter.Engine.from_dict(doc)
    assert info.value.path == path
    assert message in info.value.message


def test_cost_and_breaker_errors() -> None:
    doc = policy()
    doc["costs"] = {"nope:x": 3}
    with pytest.raises(charter.PolicyError) as info:
        charter.Engine.from_dict(doc)
    assert info.value.path == 'costs."nope:x"'
    doc = policy()
    doc["costs"] = {"db:read": 0}
    with pytest.raises(charter.PolicyError) as info:
        charter.Engine.from_dict(doc)
    assert info.value.path == 'costs."db:read"'
    doc = policy()
    doc["templates"]["tripwire"]["breaker"]["window"] = "soon"
    with pytest.raises(charter.PolicyError) as info:
        charter.Engine.from_dict(doc)
    assert info.value.path == "templates.tripwire.breaker.window"


def test_threads_never_over_admit(clock: charter.ManualClock) -> None:
    """Threads releasing the GIL in check_batch on one agent: exactly the burst is admitted."""
    e = engine_of(clock, agent={"rate": "1/h", "burst": 500})
    bot = e.provision("bot")
    handles = np.full(1000, bot.handle, dtype=np.uint64)
    actions = np.full(1000, e.action_id("db:read"), dtype=np.uint32)
    counts: list[int] = []
    lock = threading.Lock()

    def hammer() -> None:
        n = int(e.check_batch(handles, actions).sum())
        with lock:
            counts.append(n)

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 500


class ReferenceLimiter:
    """Virtual-scheduling GCRA, written plainly: the model the engine must match."""

    def __init__(self, count: int, period_s: float, burst: int) -> None:
        self.t = round(period_s * 1e9 / count)
        self.capacity = burst * self.t
        self.tat = 0

    def admit(self, now: int) -> bool:
        tat = max(self.tat, now)
        if tat + self.t - now <= self.capacity:
            self.tat = tat + self.t
            return True
        return False


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(1, 20),
    burst=st.integers(1, 10),
    steps=st.lists(st.tuples(st.integers(0, 300_000_000), st.integers(1, 4)), min_size=1, max_size=40),
)
def test_rate_agrees_with_a_reference_limiter(count: int, burst: int, steps: list[tuple[int, int]]) -> None:
    clock = charter.ManualClock(T0)
    e = engine_of(clock, agent={"rate": f"{count}/s", "burst": burst})
    bot = e.provision("bot")
    ref = ReferenceLimiter(count, 1.0, burst)
    now_ns = clock.now_ns
    for advance_ns, tries in steps:
        clock.set((now_ns + advance_ns) / 1e9)
        now_ns = clock.now_ns
        for _ in range(tries):
            assert bool(e.check(bot, "db:read")) == ref.admit(now_ns)


def test_threads_never_overspend_a_shared_budget(clock: charter.ManualClock) -> None:
    """Agents of one principal in several threads: together they spend exactly the principal's budget."""
    e = engine_of(clock, user={"budget": "1000/h"})
    bots = [e.provision("free", on_behalf_of="user:u") for _ in range(6)]
    action = e.action_id("llm:complete")  # costs 25: 40 requests fit in 1000 units
    counts: list[int] = []
    lock = threading.Lock()

    def spend(bot: charter.Agent) -> None:
        n = int(e.check_batch(np.full(200, bot.handle, dtype=np.uint64), np.full(200, action)).sum())
        with lock:
            counts.append(n)

    threads = [threading.Thread(target=spend, args=(b,)) for b in bots]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 40
    assert e.quota_status("user:u")[0]["budget"]["remaining"] == pytest.approx(0, abs=1e-6)


def test_threads_never_exceed_the_concurrency_cap(clock: charter.ManualClock) -> None:
    e = engine_of(clock, agent={"max_in_flight": 3})
    bot = e.provision("bot")
    held = 0
    high = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal held, high
        for _ in range(300):
            with e.acquire(bot, "db:read") as lease:
                if lease:
                    with lock:
                        held += 1
                        high = max(high, held)
                    with lock:
                        held -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 1 <= high <= 3
    assert e.quota_status(bot)[0]["in_flight"] == {"held": 0, "max": 3}


def test_a_principal_with_its_own_quota_is_charged_before_any_agent_exists() -> None:
    """A principal acting directly charges its own quota from the first request (not internal_error)."""
    e = charter.Engine.from_dict(
        {
            "actions": ["doc:read"],
            "roles": {"reader": {"allow": ["doc:read"]}},
            "quotas": {"q": {"rate": "2/m", "burst": 2}},
            "principals": {"user:ann": {"roles": ["reader"], "quota": "q"}},
        },
        clock=charter.ManualClock(0.0),
    )
    assert [e.check("user:ann", "doc:read").reason for _ in range(3)] == [
        "granted",
        "granted",
        "rate_limited",
    ]
