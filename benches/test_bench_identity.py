"""Identity benchmarks: signed credentials, each next to the baseline it is reported against.

5. issue + verify per token, uncached, vs the bare Ed25519 sign + verify of `cryptography`;
6. a cached `engine.authenticate` vs a Python dict lookup (target: under 2 us);
7. provision + revoke of ephemeral agents through tokens, end to end with signing
   (target: over 20,000 agents/s on one core), vs the bare sign + verify;
8. 1,000,000 live agents: memory, and the time to cascade-revoke a tree of
   100,000 descendants (a measurement in a fresh interpreter).

No speed assertions; the correctness asserts check that what is timed
admits, refuses and revokes what it should.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import charter
import workload as wl
from charter import tokens
from charter.identity import Issuer

N_TOKENS = wl.scaled(300)  # per round, uncached: each costs ~150 us of signatures
N_CACHED = wl.scaled(10_000)  # calls per round over N_DISTINCT tokens
N_DISTINCT = wl.scaled(1_000)
N_EPHEMERAL = wl.scaled(500)
N_LIVE = wl.scaled(1_000_000)
N_SUBTREE = wl.scaled(100_000)

ROUNDS_TOKENS = 15
ROUNDS_CACHED = 200
ROUNDS_EPHEMERAL = 15
PAIRS = 6

ISS = "https://id.bench"
POLICY: dict[str, Any] = {
    "actions": ["docs:read", "docs:write", "mail:send"],
    "roles": {"worker": {"allow": ["docs:*", "mail:send"]}},
    "principals": {f"user:{i:04d}": {"roles": ["worker"]} for i in range(1_000)},
    "templates": {
        "agent": {"roles": ["worker"], "ttl": "15m", "max_ttl": "1h", "max_delegation_depth": 8},
        "leaf": {"roles": ["worker"], "max_delegation_depth": 8},
    },
}


def pedantic(benchmark: Any, fn: Callable[[], object], rounds: int) -> None:
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)


def setup(*, in_process: bool = False) -> tuple[charter.Engine, Issuer]:
    engine = charter.Engine.from_dict(POLICY)
    issuer = Issuer.generate(issuer=ISS)
    engine.trust(issuer if in_process else issuer.jwks())
    return engine, issuer


def crypto_floor(n: int) -> Callable[[], None]:
    """n x (Ed25519 sign + verify) of a token-sized message: what the signatures alone cost."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    message = b"x" * 420

    def run() -> None:
        for _ in range(n):
            public.verify(key.sign(message), message)

    return run


# ------------------------------------------------ 5. issue + verify (uncached)


TOKEN_CASES = ["crypto-floor", "issue", "verify", "issue+verify", "issue+authenticate"]


@pytest.mark.parametrize("impl", TOKEN_CASES)
def test_issue_verify(benchmark: Any, impl: str) -> None:
    """Per-token cost of signing and of verifying with the JWKS alone (nothing cached)."""
    group = f"5. issue + verify, per token, uncached ({N_TOKENS} tokens/round)"
    benchmark.group = group
    engine, issuer = setup()
    keys = tokens.KeyRing()
    keys.load_jwks(issuer.jwks(), ISS)
    users = [f"user:{i:04d}" for i in range(N_TOKENS)]
    issue = issuer.issue
    now = time.time
    if impl == "crypto-floor":
        name, fn = "cryptography: Ed25519 sign + verify", crypto_floor(N_TOKENS)
    elif impl == "issue":
        name = "issuer.issue"

        def fn() -> None:
            for u in users:
                issue("agent", on_behalf_of=u, scope=["docs:read"])

    elif impl == "verify":
        name = "verify_token (signature, claims, lifetime)"
        # fresh tokens each round: made beforehand, never twice through the same round
        batches = [[issue("agent", on_behalf_of=u) for u in users] for _ in range(3)]
        it = iter(range(10**9))

        def fn() -> None:
            for t in batches[next(it) % 3]:
                tokens.verify_token(t, keys, now=now(), check_audience=False)

    elif impl == "issue+verify":
        name = "issuer.issue + verify_token"

        def fn() -> None:
            for u in users:
                tokens.verify_token(issue("agent", on_behalf_of=u), keys, now=now(), check_audience=False)

    else:
        name = "issuer.issue + engine.authenticate (registers the agent)"
        authenticate = engine.authenticate

        def fn() -> None:
            for u in users:
                authenticate(issue("agent", on_behalf_of=u))

    fn()
    if impl == "issue+authenticate":
        assert engine.stats()["agents"] == N_TOKENS
    pedantic(benchmark, fn, ROUNDS_TOKENS)
    wl.record_timing(
        benchmark,
        group,
        name,
        fn=fn,
        work=N_TOKENS,
        unit="ns/token",
        per_op_ns=True,
        baseline=impl == "crypto-floor",
        pairs=PAIRS,
    )


# ------------------------------------------------ 6. cached authenticate


@pytest.fixture(scope="module")
def cached() -> dict[str, Any]:
    engine, issuer = setup()
    distinct = [issuer.issue("agent", on_behalf_of=f"user:{i % 1_000:04d}") for i in range(N_DISTINCT)]
    agents = {t: engine.authenticate(t).handle for t in distinct}
    calls = [distinct[i % N_DISTINCT] for i in range(N_CACHED)]
    return {"engine": engine, "calls": calls, "agents": agents}


CACHED_CASES = ["dict-lookup", "authenticate", "authenticate-new-strings"]


@pytest.mark.parametrize("impl", CACHED_CASES)
def test_authenticate_cached(benchmark: Any, cached: dict[str, Any], impl: str) -> None:
    """A token presented again: a dict lookup plus an epoch and expiry comparison."""
    group = f"6. authenticate a token again (cached; {N_CACHED:,} calls/round, {N_DISTINCT:,} tokens)"
    benchmark.group = group
    engine: charter.Engine = cached["engine"]
    calls: list[str] = cached["calls"]
    pairs = PAIRS
    if impl == "dict-lookup":
        name = "python: a function doing cache.get(token)"
        table = {t: (h, 1e18) for t, h in cached["agents"].items()}
        clock = time.time

        def lookup(t: str) -> object:
            hit = table.get(t)
            return hit[0] if hit is not None and clock() < hit[1] else None

        def fn() -> None:
            for t in calls:
                lookup(t)

    elif impl == "authenticate":
        name = "engine.authenticate(token)"
        authenticate = engine.authenticate

        def fn() -> None:
            for t in calls:
                authenticate(t)

    else:
        # Tokens usually arrive as new str objects (from a header), whose hash is not cached yet:
        # each round gets fresh copies, made outside the timing.
        name = "engine.authenticate(token), a new str each call"
        authenticate = engine.authenticate
        pairs = 0

        def copies() -> tuple[tuple[list[str]], dict[str, Any]]:
            return ([t.encode().decode() for t in calls],), {}

        def run(batch: list[str]) -> None:
            for t in batch:
                authenticate(t)

        def fn() -> None:
            run(copies()[0][0])

    for t in calls[:N_DISTINCT]:
        assert engine.authenticate(t).handle == cached["agents"][t]
    if impl == "authenticate-new-strings":
        benchmark.pedantic(run, setup=copies, rounds=ROUNDS_CACHED, warmup_rounds=1)
    else:
        pedantic(benchmark, fn, ROUNDS_CACHED)
    wl.record_timing(
        benchmark,
        group,
        name,
        fn=fn,
        work=N_CACHED,
        unit="ns/call",
        per_op_ns=True,
        baseline=impl == "dict-lookup",
        pairs=pairs,
    )


# ------------------------------------------------ 7. ephemeral agents end to end


EPHEMERAL_CASES = ["crypto-floor", "jwks", "in-process"]


@pytest.mark.parametrize("impl", EPHEMERAL_CASES)
def test_ephemeral_agents(benchmark: Any, impl: str) -> None:
    """Per agent: issue a token (signing), authenticate it, one check, revoke it. Agents/s, one core."""
    group = f"7. ephemeral agents through tokens: issue + authenticate + check + revoke ({N_EPHEMERAL}/round)"
    benchmark.group = group
    users = [f"user:{i % 1_000:04d}" for i in range(N_EPHEMERAL)]
    if impl == "crypto-floor":
        name, fn = "cryptography: Ed25519 sign + verify", crypto_floor(N_EPHEMERAL)
        note = "(the signatures alone)"
    else:
        engine, issuer = setup(in_process=impl == "in-process")
        issue, authenticate, check, revoke = issuer.issue, engine.authenticate, engine.check, engine.revoke
        if impl == "jwks":
            name = "engine trusting the JWKS (verifies each signature)"
            note = "(sign + verify + registry)"
        else:
            name = "engine trusting an in-process Issuer"
            note = "(sign + registry; the engine watched the signing, no second check)"

        def fn() -> None:
            for u in users:
                agent = authenticate(issue("agent", on_behalf_of=u, ttl=60))
                check(agent, "docs:read")
                revoke(agent=agent)

        fn()
        stats = engine.stats()
        assert stats["agents"] == 0
        token = issue("agent", on_behalf_of="user:0000")
        agent = authenticate(token)
        assert revoke(agent=agent) == 1
        with pytest.raises(charter.AuthenticationError):
            authenticate(token)
    pedantic(benchmark, fn, ROUNDS_EPHEMERAL)
    row = wl.record_timing(
        benchmark,
        group,
        name,
        fn=fn,
        work=N_EPHEMERAL,
        unit="agents/s",
        per_op_ns=False,
        baseline=impl == "crypto-floor",
        pairs=PAIRS,
    )
    if row is not None:
        row.note = note


@pytest.mark.measurement
def test_revoke_latency_with_an_fsynced_log() -> None:
    """What a durable `revoke` costs: one append + fsync of the revocation log per call."""
    engine, issuer = setup()
    with tempfile.TemporaryDirectory() as d:
        engine.configure_identity(revocations=Path(d) / "revoked.log")
        agents = [engine.authenticate(issuer.issue("agent", on_behalf_of="user:0001")) for _ in range(50)]
        times = []
        for a in agents:
            t0 = time.perf_counter()
            engine.revoke(agent=a)
            times.append(time.perf_counter() - t0)
    wl.record_measurement(
        "8. revocation at scale",
        "revoke(agent) with an fsynced log: median latency",
        wl.median(times) * 1e6,
        "us",
        f"(50 revocations in {tempfile.gettempdir()}; the fsync dominates)",
    )


# ------------------------------------------------ 8. 1,000,000 live agents


def measure_live(n_live: int, n_subtree: int, n_tokens: int) -> dict[str, Any]:
    """Run in a fresh interpreter: RSS of `n_live` agents, then revoke a subtree of `n_subtree` descendants.

    The subtree hangs under one root agent (a fan-out of 100 children, each
    with an equal share of the grandchildren); the other agents act directly
    for 1,000 users. Then `n_tokens` credentials are authenticated to
    measure what each cached token adds.
    """
    engine, issuer = setup(in_process=True)
    log_dir = tempfile.mkdtemp()
    engine.configure_identity(revocations=Path(log_dir) / "revoked.log", cache_size=max(65_536, n_tokens))
    prov = engine.provision
    rss0 = wl.rss_bytes()
    t0 = time.perf_counter()
    root = prov("agent", on_behalf_of="user:0000", ttl=3600)
    fanout = min(100, n_subtree)
    children = [prov("leaf", on_behalf_of=root.handle).handle for _ in range(fanout)]
    remaining = n_subtree - fanout
    for i, child in enumerate(children):
        share = remaining // fanout + (1 if i < remaining % fanout else 0)
        for _ in range(share):
            prov("leaf", on_behalf_of=child)
    for i in range(n_live - 1 - n_subtree):
        prov("leaf", on_behalf_of=f"user:{i % 1_000:04d}")
    elapsed = time.perf_counter() - t0
    stats = engine.stats()
    rss1 = wl.rss_bytes()

    deep = engine.agent(children[-1])
    t1 = time.perf_counter()
    retired = engine.revoke(agent=root, reason="bench")
    revoke_s = time.perf_counter() - t1
    assert engine.check(deep, "docs:read").reason == "delegator_revoked"
    after = engine.stats()["agents"]

    toks = [issuer.issue("agent", on_behalf_of=f"user:{i % 1_000:04d}") for i in range(n_tokens)]
    rss2 = wl.rss_bytes()
    for t in toks:
        engine.authenticate(t)
    rss3 = wl.rss_bytes()
    return {
        "agents": stats["agents"],
        "registry_bytes": stats["registry_bytes"],
        "rss_per_agent": (rss1 - rss0) / n_live,
        "provision_per_s": n_live / elapsed,
        "retired": retired,
        "agents_after": after,
        "revoke_s": revoke_s,
        "rss_per_token": (rss3 - rss2) / n_tokens,
    }


@pytest.mark.measurement
def test_live_agents_and_cascade_revocation() -> None:
    """1M live agents: RSS per agent; revoke(agent=root) over 100,000 descendants (log fsync included)."""
    group = "8. revocation at scale"
    n_tokens = wl.scaled(20_000)
    code = (
        "import json, test_bench_identity as b; "
        f"print(json.dumps(b.measure_live({N_LIVE}, {N_SUBTREE}, {n_tokens})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )
    m = json.loads(out.stdout.strip().splitlines()[-1])
    assert m["agents"] == N_LIVE
    assert m["retired"] == N_SUBTREE + 1
    assert m["agents_after"] == N_LIVE - N_SUBTREE - 1
    wl.record_measurement(
        group,
        f"{N_LIVE:,} live agents: RSS growth / agent",
        m["rss_per_agent"],
        "B/agent",
        f"(registry_bytes {m['registry_bytes'] / N_LIVE:.0f} B/agent; provisioned at "
        f"{m['provision_per_s']:,.0f}/s)",
    )
    wl.record_measurement(
        group,
        f"revoke(agent=root): cascade over {N_SUBTREE:,} descendants",
        m["revoke_s"] * 1e3,
        "ms",
        f"({m['retired']:,} retired, log appended and fsynced)",
    )
    wl.record_measurement(
        group,
        "a verified token in the cache (+ its agent)",
        m["rss_per_token"],
        "B/token",
        f"(RSS growth over {n_tokens:,} authenticated tokens)",
    )
