"""Shared state on Redis (docs/multi-host.md): what it costs a decision, and how fast a change spreads.

1. `engine.check` on an engine following a Redis shared state against one
   on local state, same run, paired rounds: decisions never touch Redis, so
   the difference is the follower thread's share of the GIL;
2. Redis commands per 1,000 decisions (from Redis's own `INFO commandstats`):
   the follower's pings only;
3. convergence: three real `charter serve --state URL` processes; a
   revocation made on one server's admin socket, timed until both other
   servers deny the agent (each polled with `check` in a loop);
4. quotas leased from Redis against local quotas, same run, at a steady
   request rate (`LEASE_RATE` decisions a second to each engine, in slots of
   `LEASE_SLOT` checks, only the checks timed): per-decision cost, the share
   admitted, and Redis commands per 1,000 decisions.

Needs `redis-server` (skipped without it). No speed assertions.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import charter
import workload as wl
from charter.policy import example_path
from charter.server import AdminClient, Client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from redis_helpers import RedisServer, redis_server
from server_helpers import ServerProcess, short_tmpdir

pytestmark = pytest.mark.measurement

ROUNDS = 7
CHECKS = wl.scaled(200_000)


def _commands(server: RedisServer) -> int:
    with server.client() as client:
        stats: dict[str, Any] = client.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


def _time_checks(engine: charter.Engine, handle: int) -> float:
    check = engine.check
    start = time.perf_counter()
    for _ in range(CHECKS):
        check(handle, "tickets:read")
    return (time.perf_counter() - start) / CHECKS


def test_decision_cost_and_redis_traffic() -> None:
    with redis_server() as server:
        local, shared = charter.Engine.example(), charter.Engine.example()
        shared.use_shared_state(server.url, wait=30.0)
        try:
            agents = [e.provision("support-bot", on_behalf_of="user:alice").handle for e in (local, shared)]
            ratios, costs = [], {"local": [], "redis": []}
            before, started = _commands(server), time.perf_counter()
            for _ in range(ROUNDS):
                a = _time_checks(local, agents[0])
                b = _time_checks(shared, agents[1])
                costs["local"].append(a)
                costs["redis"].append(b)
                ratios.append(b / a)
            elapsed = time.perf_counter() - started
            commands = _commands(server) - before - 1  # less the INFO itself
        finally:
            shared.close()
            local.close()
    decisions = ROUNDS * CHECKS
    group = "shared state: engine.check"
    wl.record_measurement(group, "local state", statistics.median(costs["local"]) * 1e9, "ns/decision")
    wl.record_measurement(group, "redis state", statistics.median(costs["redis"]) * 1e9, "ns/decision")
    wl.record_measurement(group, "redis / local (paired median)", statistics.median(ratios), "x")
    wl.record_measurement(
        group,
        "redis commands per 1,000 decisions",
        commands * 1000 / (decisions / 2),
        "commands",
        note=f"{commands} commands (pings) in {elapsed:.1f} s",
    )


def test_revocation_convergence() -> None:
    samples: list[float] = []
    with redis_server() as server, short_tmpdir() as tmp, contextlib.ExitStack() as stack:
        args = ("--state", server.url, "--trusted-uid", str(os.geteuid()))
        servers = [
            stack.enter_context(ServerProcess(example_path(), tmp, *args, name=f"s{i}")) for i in range(3)
        ]
        clients = [stack.enter_context(Client(s.socket, timeout=30.0)) for s in servers]
        admins = [stack.enter_context(AdminClient(s.admin_socket or "", timeout=30.0)) for s in servers]
        for i in range(40):
            agent = f"bot-{i}"
            for admin in admins:
                admin.provision("support-bot", on_behalf_of="user:alice", agent_id=agent)
            start = time.perf_counter()
            admins[i % 3].revoke(agent=agent)
            others = [c for j, c in enumerate(clients) if j != i % 3]
            while any(c.check(agent, "tickets:read").allowed for c in others):
                pass
            samples.append(time.perf_counter() - start)
    samples.sort()
    group = "shared state: revocation convergence (3 servers)"
    wl.record_measurement(group, "median", statistics.median(samples) * 1e3, "ms")
    wl.record_measurement(group, "p95", samples[int(len(samples) * 0.95)] * 1e3, "ms")
    wl.record_measurement(group, "max", samples[-1] * 1e3, "ms", note=f"{len(samples)} revocations")


LEASE_RATE = 5_000
LEASE_SLOT = 50
LEASE_SECONDS = 2.0 if wl.quick() else 6.0

LEASED_POLICY = """
actions = ["tickets:read"]
[roles.reader]
allow = ["tickets:read"]
[principals."user:alice"]
roles = ["reader"]
[quotas.agent]
rate = "10000/s"
[templates.bot]
roles = ["reader"]
quota = "agent"
"""


def _timed_slot(engine: charter.Engine, handle: int) -> tuple[float, int]:
    check = engine.check
    admitted = 0
    start = time.perf_counter()
    for _ in range(LEASE_SLOT):
        admitted += check(handle, "tickets:read").allowed
    return time.perf_counter() - start, admitted


def test_quota_leasing_cost_and_redis_traffic() -> None:
    with redis_server() as server:
        local, leased = charter.Engine.from_toml(LEASED_POLICY), charter.Engine.from_toml(LEASED_POLICY)
        leased.use_shared_state(server.url, wait=30.0)
        try:
            agents = [e.provision("bot", on_behalf_of="user:alice").handle for e in (local, leased)]
            times: dict[str, list[float]] = {"local": [], "leased": []}
            admitted = {"local": 0, "leased": 0}
            period = LEASE_SLOT / LEASE_RATE
            slots = int(LEASE_SECONDS / period)
            before = _commands(server)
            next_slot = time.perf_counter()
            pair = [("local", local, agents[0]), ("leased", leased, agents[1])]
            for _ in range(slots):
                pair.reverse()  # each goes first every other slot (the first after a sleep runs colder)
                for name, engine, handle in pair:
                    spent, ok = _timed_slot(engine, handle)
                    times[name].append(spent / LEASE_SLOT)
                    admitted[name] += ok
                next_slot += period
                time.sleep(max(0.0, next_slot - time.perf_counter()))
            commands = _commands(server) - before - 1  # less the INFO itself
            link = leased.shared_state
            scripts = link.quotas.status()["commands"] if link is not None and link.quotas is not None else 0
        finally:
            leased.close()
            local.close()
    decisions = slots * LEASE_SLOT
    ratios = [b / a for a, b in zip(times["local"], times["leased"], strict=True)]
    group = f"shared quotas: engine.check at {LEASE_RATE}/s"
    wl.record_measurement(group, "local quotas", statistics.median(times["local"]) * 1e9, "ns/decision")
    wl.record_measurement(
        group, "redis-leased quotas", statistics.median(times["leased"]) * 1e9, "ns/decision"
    )
    wl.record_measurement(group, "leased / local (paired median)", statistics.median(ratios), "x")
    for name in ("local", "leased"):
        wl.record_measurement(group, f"{name}: admitted", 100 * admitted[name] / decisions, "%")
    wl.record_measurement(
        group,
        "lease scripts (EVALSHA) per 1,000 decisions",
        scripts * 1000 / decisions,
        "scripts",
        note="the startup ramp included (a lease starts at 1 unit)",
    )
    wl.record_measurement(
        group,
        "redis commands per 1,000 decisions",
        commands * 1000 / decisions,
        "commands",
        note=f"{commands} in INFO commandstats (a script counts itself and its TIME, GET, SET; and pings)",
    )
