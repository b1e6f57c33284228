"""Engines sharing revocations, suspensions, freeze and policy through a real Redis (docs/multi-host.md).

Each test starts its own redis-server (tests/redis_helpers.py) and two or
three engines in this process, each with its own connection and follower
thread, exactly as separate servers would have.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import charter
from charter.errors import InvalidRequestError
from redis_helpers import RedisServer, wait_until


@pytest.fixture
def fleet(redis_server: RedisServer) -> Iterator[list[charter.Engine]]:
    engines = [charter.Engine.example() for _ in range(3)]
    for engine in engines:
        engine.use_shared_state(redis_server.url, wait=30.0)
        engine.provision("support-bot", on_behalf_of="user:alice", agent_id="bot-1")
        engine.provision("support-bot", on_behalf_of="user:alice", agent_id="bot-2")
    yield engines
    for engine in engines:
        engine.close()


def allowed(engine: charter.Engine, agent: str = "bot-1") -> bool:
    return engine.check(agent, "tickets:read").allowed


def test_a_revocation_on_one_engine_holds_on_every_other(fleet: list[charter.Engine]) -> None:
    a, b, c = fleet
    assert all(allowed(e) for e in fleet)
    assert a.revoke(agent="bot-1", reason="leaked") == 1
    for other in (b, c):
        wait_until(lambda other=other: not allowed(other), "the revocation to reach every engine")
        assert other.check("bot-1", "tickets:read").reason == "revoked"
        assert "bot-1" in other.revocations.agents
        assert allowed(other, "bot-2")  # nothing else retired


def test_suspend_and_resume_follow_the_fleet(fleet: list[charter.Engine]) -> None:
    a, b, c = fleet
    b.suspend("bot-2", "investigating")
    wait_until(lambda: not allowed(a, "bot-2") and not allowed(c, "bot-2"), "the suspension")
    assert c.check("bot-2", "tickets:read").reason == "suspended"
    c.resume("bot-2")
    wait_until(lambda: allowed(a, "bot-2") and allowed(b, "bot-2"), "the resumption")


def test_freeze_and_unfreeze_follow_the_fleet(fleet: list[charter.Engine]) -> None:
    a, b, c = fleet
    c.freeze()
    wait_until(lambda: a.frozen and b.frozen, "the freeze")
    assert a.check("bot-1", "tickets:read").reason == "frozen"
    a.unfreeze()
    wait_until(lambda: not b.frozen and not c.frozen, "the unfreeze")


def test_a_local_freeze_stays_local(fleet: list[charter.Engine]) -> None:
    a, b, _ = fleet
    with a.local_changes():
        a.freeze()
    b.suspend("bot-2")  # a later fleet change: once it arrived, the freeze would have too
    wait_until(lambda: not allowed(a, "bot-2"), "the suspension")
    assert a.frozen
    assert not b.frozen


def test_a_policy_reload_reaches_the_fleet(fleet: list[charter.Engine]) -> None:
    a, b, c = fleet
    old = a.policy_version
    text = charter.policy.example_path().read_text()
    text = text.replace("Answers tickets", "Answers the tickets", 1)  # another document, another version
    _, new = b.reload_toml(text)
    assert new != old
    wait_until(lambda: a.policy_version == new and c.policy_version == new, "the new policy")


def test_redis_restarted_empty_is_reseeded_and_changes_made_meanwhile_arrive(
    redis_server: RedisServer, fleet: list[charter.Engine]
) -> None:
    a, b, c = fleet
    a.revoke(agent="bot-1")
    wait_until(lambda: not allowed(b) and not allowed(c), "the revocation")
    redis_server.kill()  # no persistence: the store comes back empty
    wait_until(lambda: not any(e.shared_state.connected for e in fleet), "every engine to notice")  # type: ignore[union-attr]
    assert allowed(a, "bot-2")  # serving from local state meanwhile
    b.revoke(agent="bot-2")  # held in b's outbox
    assert not allowed(b, "bot-2")
    assert allowed(a, "bot-2")
    redis_server.restart()
    wait_until(lambda: not allowed(a, "bot-2") and not allowed(c, "bot-2"), "the held revocation")
    with redis_server.client() as client:
        assert {b"agent:bot-1", b"agent:bot-2"} <= set(client.hkeys("charter:revoked"))
    assert not allowed(a)
    assert not allowed(c)


def test_a_paused_redis_is_survived_and_state_converges(
    redis_server: RedisServer, fleet: list[charter.Engine]
) -> None:
    a, b, c = fleet
    redis_server.pause()
    try:
        wait_until(lambda: not a.shared_state.connected, "the pause to be noticed")  # type: ignore[union-attr]
        a.suspend("bot-1", "during the partition")
        assert not allowed(a)
        assert allowed(b)
    finally:
        redis_server.resume()
    wait_until(lambda: not allowed(b) and not allowed(c), "the suspension made during the pause")


def test_an_engine_that_never_reached_redis_denies_until_it_does(redis_server: RedisServer) -> None:
    redis_server.kill()
    engine = charter.Engine.example()
    try:
        assert engine.use_shared_state(redis_server.url, wait=0.2).status()["connected"] is False
        engine.provision("support-bot", on_behalf_of="user:alice", agent_id="bot-1")
        assert engine.frozen
        assert engine.check("bot-1", "tickets:read").reason == "frozen"
        redis_server.restart()
        wait_until(lambda: not engine.frozen, "the first sync")
        assert allowed(engine)
    finally:
        engine.close()


def test_a_url_that_is_not_redis_is_refused() -> None:
    engine = charter.Engine.example()
    with pytest.raises(InvalidRequestError, match="not a Redis URL"):
        engine.use_shared_state("http://localhost:6379")
