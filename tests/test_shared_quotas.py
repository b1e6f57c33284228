"""Quotas shared by a fleet through Redis leases (docs/multi-host.md, "Quotas across the fleet").

Three engines in this process, each with its own Redis connection and
leasing thread, stand for three decision servers: the server adds nothing
to the property (its decisions are `engine.check`), and in-process engines
let the test count every admission exactly. The lease bookkeeping itself is
also checked without Redis, against a small reference model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import charter
from charter.errors import InvalidRequestError
from redis_helpers import RedisServer, wait_until

RATE = 200
BURST = 10
MAX_LEASE = 10
SERVERS = 3

POLICY = f"""
actions = ["tickets:read"]
[roles.reader]
allow = ["tickets:read"]
[principals."user:alice"]
roles = ["reader"]
quota = "team"
[quotas.agent]
rate = "{RATE}/s"
burst = {BURST}
[quotas.team]
budget = "100000/s"
[templates.bot]
roles = ["reader"]
quota = "agent"
"""


def engine_on(url: str | None, *, quotas: bool = True, policy: str = POLICY) -> charter.Engine:
    engine = charter.Engine.from_toml(policy)
    if url is not None:
        engine.use_shared_state(url, wait=30.0, quotas=quotas, max_lease=MAX_LEASE)
    engine.provision("bot", on_behalf_of="user:alice", agent_id="bot-1")
    return engine


@pytest.fixture
def fleet(redis_server: RedisServer) -> Iterator[list[charter.Engine]]:
    engines = [engine_on(redis_server.url) for _ in range(SERVERS)]
    yield engines
    for engine in engines:
        engine.close()


def hammer(engines: list[charter.Engine], seconds: float) -> tuple[int, float, dict[str, int]]:
    """One thread per engine checking `bot-1` as fast as it can: (admitted, window, denials by reason)."""
    admitted = [0] * len(engines)
    denied: dict[str, int] = {}
    lock = threading.Lock()
    start = time.monotonic()
    stop = start + seconds

    def run(i: int) -> None:
        mine: dict[str, int] = {}
        while time.monotonic() < stop:
            d = engines[i].check("bot-1", "tickets:read")
            if d.allowed:
                admitted[i] += 1
            else:
                mine[d.reason] = mine.get(d.reason, 0) + 1
        with lock:
            for reason, n in mine.items():
                denied[reason] = denied.get(reason, 0) + n

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(engines))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(admitted), time.monotonic() - start, denied


def bound(window: float) -> float:
    """The documented bound: R*window + burst + servers * (largest lease + one request on credit)."""
    return RATE * window + BURST + SERVERS * (MAX_LEASE + 1)


def test_three_engines_admit_at_most_the_global_rate_plus_the_slack(fleet: list[charter.Engine]) -> None:
    admitted, window, denied = hammer(fleet, 2.0)
    assert admitted <= bound(window), (admitted, window, denied)
    # Leases were renewed (without renewals no engine gets past its first lease) ...
    assert admitted > BURST + SERVERS * (MAX_LEASE + 1), (admitted, denied)
    assert denied.get("quota_unavailable", 0) > 0
    # ... and grew with the rate: far fewer Redis commands than admissions.
    leases = [e.shared_state.status()["quota_leases"] for e in fleet if e.shared_state is not None]
    commands = sum(s["commands"] for s in leases)
    assert 0 < commands < admitted / 2, (commands, admitted)


def test_engines_that_do_not_share_quotas_each_admit_the_whole_rate(redis_server: RedisServer) -> None:
    """The control: the same load on engines sharing everything but quotas breaks the bound."""
    engines = [engine_on(redis_server.url, quotas=False) for _ in range(SERVERS)]
    try:
        admitted, window, _ = hammer(engines, 1.0)
        assert admitted > bound(window)
    finally:
        for engine in engines:
            engine.close()


def test_every_level_is_leased_under_its_own_key(
    fleet: list[charter.Engine], redis_server: RedisServer
) -> None:
    hammer(fleet[:1], 0.2)
    keys = {k.decode() for k in redis_server.client().keys("charter:quota:*")}
    assert keys == {"charter:quota:agent:bot-1:agent:rate", "charter:quota:principal:user:alice:team:budget"}


@pytest.mark.parametrize("outage", ["kill", "pause"])
def test_without_redis_a_used_up_lease_denies_quota_unavailable(
    redis_server: RedisServer, outage: str
) -> None:
    engine = engine_on(redis_server.url)
    try:
        wait_until(lambda: engine.check("bot-1", "tickets:read").allowed, "a first lease")
        if outage == "kill":
            redis_server.kill()
        else:
            redis_server.pause()
        # The lease left (at most MAX_LEASE units and one on credit) runs out, then every request is refused.
        reasons = [engine.check("bot-1", "tickets:read").reason for _ in range(MAX_LEASE + 2)]
        assert reasons[-1] == "quota_unavailable", reasons
        assert set(reasons) <= {"granted", "quota_unavailable"}
        if outage == "kill":
            redis_server.restart()
        else:
            redis_server.resume()
        wait_until(lambda: engine.check("bot-1", "tickets:read").allowed, "leases after Redis is back")
    finally:
        engine.close()


def test_an_idle_engine_gives_its_lease_back(fleet: list[charter.Engine]) -> None:
    hammer(fleet[:1], 0.3)
    leaser = fleet[0].shared_state.quotas if fleet[0].shared_state is not None else None
    assert leaser is not None
    wait_until(
        lambda: leaser.status()["returned"] > 0 and leaser.status()["cells"] == 0, "the idle lease to go back"
    )
    assert fleet[0]._quota_lease_demand() == []


# ---------------------------------------------------------------- the bookkeeping, without Redis

OPS = st.lists(
    st.one_of(
        st.just(("check", 0)),
        st.tuples(st.just("grant"), st.integers(1, 5)),
        st.tuples(st.just("return"), st.booleans()),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_lease_bookkeeping_matches_a_reference_model(ops: list[tuple[str, object]]) -> None:
    """One cell's lease: a check takes a unit (or, once per positive grant, one on credit from an empty
    lease), grants add, returns drain."""
    # A local quota too large to refuse anything: only the lease decides (and no clock can make this flaky).
    engine = engine_on(
        None,
        policy=POLICY.replace(f'rate = "{RATE}/s"', 'rate = "1000000/s"').replace(
            f"burst = {BURST}", "burst = 100000"
        ),
    )
    engine._quota_leasing(True)
    # A first request on credit registers both levels; the principal's is then granted plenty,
    # so the model follows the agent level alone (its debt repaid: 0 units, registered).
    assert engine.check("bot-1", "tickets:read").allowed
    for handle, key, _t, _b, _n, _s in engine._quota_lease_demand():
        assert engine._quota_lease_grant(handle, key, 1 if key.startswith("agent:") else 1_000_000)
    # The setup's credit was taken and its grant of 1 only repaid it: no credit until a real grant.
    units, registered, credit_used = 0, True, True
    agent_key = "agent:bot-1:agent:rate"
    handle = next(h for h, key, *_ in engine._quota_lease_demand() if key == agent_key)
    for op, arg in ops:
        if op == "check":
            d = engine.check("bot-1", "tickets:read")
            assert d.allowed == (units > 0 or (units == 0 and not credit_used)), (
                d.reason,
                units,
                credit_used,
            )
            if d.allowed:
                credit_used = credit_used or units == 0
                units -= 1
            else:
                assert d.reason == "quota_unavailable"
            if units <= 0:
                registered = True
        elif op == "grant":
            assert isinstance(arg, int)
            assert engine._quota_lease_grant(handle, agent_key, arg) == registered
            units += arg if registered else 0
            if registered and units > 0:
                credit_used = False
        else:
            back = engine._quota_lease_return(handle, agent_key, bool(arg))
            assert back == (max(units, 0) if registered else 0)
            units = min(units, 0)
            if arg and units == 0:
                registered = False
        demand = {key: n for _h, key, _t, _b, n, _s in engine._quota_lease_demand()}
        assert (agent_key in demand) == registered
        assert demand.get(agent_key, units) == units


def test_a_reload_leases_every_cell_under_its_new_quota(redis_server: RedisServer) -> None:
    engine = engine_on(redis_server.url)
    try:
        wait_until(lambda: engine.check("bot-1", "tickets:read").allowed, "a first lease")
        engine.reload_toml(
            POLICY.replace("[quotas.agent]", "[quotas.agent2]").replace('quota = "agent"', 'quota = "agent2"')
        )

        def renamed() -> bool:
            engine.check("bot-1", "tickets:read")
            return "agent:bot-1:agent2:rate" in {key for _h, key, *_ in engine._quota_lease_demand()}

        wait_until(renamed, "the cell to lease under its new quota")
        wait_until(
            lambda: redis_server.client().exists("charter:quota:agent:bot-1:agent2:rate") == 1, "the new key"
        )
    finally:
        engine.close()


def test_a_lease_size_below_one_is_refused() -> None:
    engine = charter.Engine.from_toml(POLICY)
    with pytest.raises(InvalidRequestError):
        engine.use_shared_state("redis://127.0.0.1:1/0", max_lease=0)


def test_with_local_outage_mode_quotas_are_counted_locally_while_redis_is_away(
    redis_server: RedisServer,
) -> None:
    engine = charter.Engine.from_toml(POLICY)
    engine.use_shared_state(redis_server.url, wait=30.0, max_lease=MAX_LEASE, quota_outage="local")
    engine.provision("bot", on_behalf_of="user:alice", agent_id="bot-1")
    try:
        wait_until(lambda: engine.check("bot-1", "tickets:read").allowed, "a first lease")
        redis_server.kill()
        shared = engine.shared_state
        assert shared is not None
        quotas = shared.quotas
        assert quotas is not None
        wait_until(lambda: not quotas.connected, "the leaser to notice Redis is gone")
        # Local counting: the local burst admits, nothing is refused for want of a lease.
        reasons = [engine.check("bot-1", "tickets:read").reason for _ in range(MAX_LEASE + 2)]
        assert "quota_unavailable" not in reasons, reasons
        assert "granted" in reasons
        redis_server.restart()
        wait_until(lambda: quotas.connected, "the leaser to reach Redis again")
    finally:
        engine.close()


def test_an_unknown_outage_mode_is_refused(redis_server: RedisServer) -> None:
    engine = charter.Engine.from_toml(POLICY)
    with pytest.raises(InvalidRequestError, match="on_outage"):
        engine.use_shared_state(redis_server.url, wait=30.0, quota_outage="ignore")
