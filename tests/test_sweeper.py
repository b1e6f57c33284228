"""The background sweeper frees expired agents' slots; checks never wait for it."""

from __future__ import annotations

import threading

import pytest

import charter
from charter.sweeper import Sweeper

POLICY = {
    "actions": ["db:read"],
    "roles": {"r": {"allow": ["db:read"]}},
    "templates": {"t": {"roles": ["r"], "ttl": 10}},
}


def test_sweep_now_retires_expired_agents() -> None:
    clock = charter.ManualClock(1_700_000_000)
    engine = charter.Engine.from_dict(POLICY, clock=clock)
    agents = [engine.provision("t") for _ in range(5)]
    keeper = engine.provision("t", ttl=100)
    sweeper = Sweeper(engine, interval=60)
    assert sweeper.sweep_now() == 0
    clock.advance(10)
    assert engine.check(agents[0], "db:read").reason == "expired"  # no sweep needed to deny
    assert sweeper.sweep_now() == 5
    assert sweeper.swept == 5
    assert engine.stats()["agents"] == 1
    assert engine.check(keeper, "db:read")
    assert engine.agent(agents[1]).state == "expired"


def test_the_thread_sweeps_until_stopped() -> None:
    swept = threading.Event()

    class Engine:
        calls = 0

        def sweep(self) -> int:
            Engine.calls += 1
            if Engine.calls >= 3:
                swept.set()
            return 1

    with Sweeper(Engine(), interval=0.001) as sweeper:
        assert sweeper.running
        assert swept.wait(timeout=30)
    assert not sweeper.running
    assert sweeper.swept >= 3


def test_a_failing_sweep_does_not_stop_the_thread() -> None:
    recovered = threading.Event()

    class Flaky:
        calls = 0

        def sweep(self) -> int:
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RuntimeError("disk on fire")
            recovered.set()
            return 0

    with Sweeper(Flaky(), interval=0.001):
        assert recovered.wait(timeout=30)


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Sweeper(charter.Engine.from_dict(POLICY), interval=0)
