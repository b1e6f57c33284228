"""Quota benchmarks (issue: quotas and the kill switch).

1. the cost a quota charge adds to a single `engine.check` from Python
   (same policy, same agents' roles, with and without a quota);
2. `check_batch` with quota charging over 1,000,000 requests across 10,000
   agents, on one thread and on two;
3. the per-hit cost of the Python `limits` library (moving window, memory
   storage) and of `pyrate-limiter` on the same 10,000-key workload
   (`pip install limits pyrate-limiter`; skipped if absent).

Rates are set high enough that nothing is refused (1,000/s per key for the
libraries, whose moving windows grow with the count): these time the charge,
not the refusal path. No speed assertions.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

import charter
import workload as wl

N_AGENTS = wl.scaled(10_000)
N_PAIRS = wl.scaled(10_000)
N_BATCH = wl.scaled(1_000_000)
ACTIONS = [f"tool{t}:op{v}" for t in range(8) for v in range(8)]

POLICY: dict[str, Any] = {
    "actions": ACTIONS,
    "roles": {"worker": {"allow": ["*"]}},
    "quotas": {
        "agent": {"rate": "1000000000/s", "budget": "1000000000/s", "limits": {"tool1:*": "1000000000/s"}},
        "user": {"budget": "1000000000/s"},
    },
    "principals": {f"user:{u}": {"roles": ["worker"], "quota": "user"} for u in range(100)},
    "templates": {"metered": {"roles": ["worker"], "quota": "agent"}, "plain": {"roles": ["worker"]}},
}


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    engine = charter.Engine.from_dict(POLICY)
    rng = np.random.default_rng(wl.SEED + 11)
    metered = [engine.provision("metered", on_behalf_of=f"user:{i % 100}") for i in range(N_AGENTS)]
    plain = [engine.provision("plain", on_behalf_of=f"user:{i % 100}") for i in range(N_AGENTS)]
    ai = rng.integers(N_AGENTS, size=N_PAIRS).tolist()
    xi = rng.integers(len(ACTIONS), size=N_PAIRS).tolist()
    bi = rng.integers(N_AGENTS, size=N_BATCH)
    bx = rng.integers(len(ACTIONS), size=N_BATCH).astype(np.uint32)
    return {
        "engine": engine,
        "metered_pairs": [(metered[i].handle, ACTIONS[x]) for i, x in zip(ai, xi, strict=True)],
        "plain_pairs": [(plain[i].handle, ACTIONS[x]) for i, x in zip(ai, xi, strict=True)],
        "keys": [metered[i].id for i in ai],
        "batch_handles": np.array([a.handle for a in metered], dtype=np.uint64)[bi],
        "batch_actions": bx,
    }


@pytest.mark.parametrize("impl", ["without quota", "with quota"])
def test_quota_charge_in_check(benchmark: Any, setup: dict[str, Any], impl: str) -> None:
    engine: charter.Engine = setup["engine"]
    pairs = setup["plain_pairs" if impl == "without quota" else "metered_pairs"]
    check = engine.check

    def run() -> None:
        for h, a in pairs:
            check(h, a)

    assert all(check(h, a) for h, a in pairs[:100])
    benchmark.pedantic(run, rounds=100, iterations=1, warmup_rounds=1)
    wl.record_timing(
        benchmark,
        "quota: single check from Python (10,000 calls/round)",
        f"engine.check, agent {impl}",
        fn=run,
        work=len(pairs),
        unit="ns/call",
        per_op_ns=True,
        baseline=impl == "without quota",
        pairs=30,
        note="agent rate + budget + one limit, and its user's budget" if impl == "with quota" else "",
    )


def test_quota_charge_in_batch(benchmark: Any, setup: dict[str, Any]) -> None:
    engine: charter.Engine = setup["engine"]
    h, a = setup["batch_handles"], setup["batch_actions"]

    def run() -> None:
        engine.check_batch(h, a)

    assert engine.check_batch(h[:1000], a[:1000]).all()
    benchmark.pedantic(run, rounds=10, iterations=1, warmup_rounds=1)
    wl.record_timing(
        benchmark,
        "quota: check_batch with charging, 1,000,000 requests over 10,000 agents",
        "one thread",
        fn=run,
        work=len(h),
        unit="decisions/s",
        per_op_ns=False,
        baseline=True,
    )


def test_quota_charge_in_batch_two_threads(benchmark: Any, setup: dict[str, Any]) -> None:
    engine: charter.Engine = setup["engine"]
    h, a = setup["batch_handles"], setup["batch_actions"]
    half = len(h) // 2
    parts = [(h[:half], a[:half]), (h[half:], a[half:])]

    def run() -> None:
        threads = [threading.Thread(target=engine.check_batch, args=p) for p in parts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    benchmark.pedantic(run, rounds=10, iterations=1, warmup_rounds=1)
    wl.record_timing(
        benchmark,
        "quota: check_batch with charging, 1,000,000 requests over 10,000 agents",
        "two threads (GIL released), same requests",
        fn=run,
        work=len(h),
        unit="decisions/s",
        per_op_ns=False,
        pairs=6,
    )


@pytest.mark.parametrize("impl", ["charter", "limits", "pyrate-limiter"])
def test_rate_limiter_libraries(benchmark: Any, setup: dict[str, Any], impl: str) -> None:
    """Per-hit cost of each library on 10,000 keys; charter's hit is a full check with a rate quota."""
    keys: list[str] = setup["keys"]
    if impl == "charter":
        engine: charter.Engine = setup["engine"]
        pairs = setup["metered_pairs"]
        check = engine.check

        def run() -> None:
            for hnd, act in pairs:
                check(hnd, act)

    elif impl == "limits":
        limits = pytest.importorskip("limits")
        limiter = limits.strategies.MovingWindowRateLimiter(limits.storage.MemoryStorage())
        item = limits.RateLimitItemPerSecond(1_000)

        def run() -> None:
            for k in keys:
                limiter.hit(item, k)

    else:
        pyrate = pytest.importorskip("pyrate_limiter")
        rate = pyrate.Rate(1_000, pyrate.Duration.SECOND)
        limiters = {k: pyrate.Limiter(pyrate.InMemoryBucket([rate])) for k in set(keys)}

        def run() -> None:
            for k in keys:
                limiters[k].try_acquire(k, blocking=False)

    benchmark.pedantic(run, rounds=20, iterations=1, warmup_rounds=1)
    wl.record_timing(
        benchmark,
        "quota: per-hit cost on 10,000 keys (10,000 hits/round)",
        {
            "charter": "charter: engine.check with a rate quota",
            "limits": "limits: moving window, memory",
            "pyrate-limiter": "pyrate-limiter: in-memory bucket",
        }[impl],
        fn=run,
        work=len(keys),
        unit="ns/hit",
        per_op_ns=True,
        baseline=impl == "charter",
        pairs=6,
    )
