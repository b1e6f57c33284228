"""Condition benchmarks (issue 3: context-aware decisions).

1. a single `engine.check` from Python whose deciding grant has a two-clause
   `when` over two context keys, the context given as a dict, against the
   same check on a grant without `when` (target: under 1 us median);
2. `check_batch` over 1,000,000 requests whose grants carry that condition,
   the context given as numpy columns (target: over 5 M decisions/s on one
   core), against the same batch without conditions;
3. a single check whose grant has a Python hook returning True, against the
   same check without a hook (the overhead is reported).

No speed assertions; the correctness asserts check the answers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import charter
import workload as wl

N_AGENTS = wl.scaled(10_000)
N_PAIRS = wl.scaled(10_000)
N_BATCH = wl.scaled(1_000_000)
ACTIONS = [f"tool{t}:op{v}" for t in range(8) for v in range(8)]
WHEN = 'context.amount <= 500 and context.currency == "EUR"'

POLICY: dict[str, Any] = {
    "actions": ACTIONS,
    "roles": {
        "plain": {"allow": ["*"]},
        "guarded": {"allow": [{"action": "*", "when": WHEN}]},
        "hooked": {"allow": [{"action": "*", "hook": "ok"}]},
    },
    "principals": {f"user:{u}": {"roles": ["plain"]} for u in range(100)},
    "templates": {
        "plain": {"roles": ["plain"]},
        "guarded": {"roles": ["guarded"]},
        "hooked": {"roles": ["hooked"]},
    },
}


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    engine = charter.Engine.from_dict(POLICY, hooks={"ok": lambda req: True})
    rng = np.random.default_rng(wl.SEED + 31)
    agents = {
        t: [engine.provision(t, on_behalf_of=f"user:{i % 100}") for i in range(N_AGENTS)]
        for t in ("plain", "guarded", "hooked")
    }
    ai = rng.integers(N_AGENTS, size=N_PAIRS).tolist()
    xi = rng.integers(len(ACTIONS), size=N_PAIRS).tolist()
    contexts = [{"amount": int(a), "currency": "EUR"} for a in rng.integers(0, 500, size=N_PAIRS)]
    bi = rng.integers(N_AGENTS, size=N_BATCH)
    return {
        "engine": engine,
        "pairs": {
            t: [(agents[t][i].handle, ACTIONS[x], c) for i, x, c in zip(ai, xi, contexts, strict=True)]
            for t in agents
        },
        "batch_handles": {t: np.array([a.handle for a in agents[t]], dtype=np.uint64)[bi] for t in agents},
        "batch_actions": rng.integers(len(ACTIONS), size=N_BATCH).astype(np.uint32),
        "batch_context": {
            "amount": rng.integers(0, 1000, size=N_BATCH),
            "currency": np.array(["EUR", "USD"], dtype=object)[rng.integers(0, 2, size=N_BATCH) * 0],
        },
    }


@pytest.mark.parametrize("impl", ["without when", "with when"])
def test_condition_in_single_check(benchmark: Any, setup: dict[str, Any], impl: str) -> None:
    engine: charter.Engine = setup["engine"]
    pairs = setup["pairs"]["plain" if impl == "without when" else "guarded"]
    check = engine.check

    def run() -> None:
        for h, a, c in pairs:
            check(h, a, None, c)

    assert all(check(h, a, None, c) for h, a, c in pairs[:100])
    benchmark.pedantic(run, rounds=100, iterations=1, warmup_rounds=1)
    wl.record_timing(
        benchmark,
        "conditions: single check from Python, context dict (10,000 calls/round)",
        f"engine.check, grant {impl}",
        fn=run,
        work=len(pairs),
        unit="ns/call",
        per_op_ns=True,
        baseline=impl == "without when",
        pairs=30,
        note=f"when = '{WHEN}'" if impl == "with when" else "same context dict passed",
    )


@pytest.mark.parametrize("impl", ["without when", "with when"])
def test_condition_in_batch(benchmark: Any, setup: dict[str, Any], impl: str) -> None:
    engine: charter.Engine = setup["engine"]
    h = setup["batch_handles"]["plain" if impl == "without when" else "guarded"]
    a, ctx = setup["batch_actions"], setup["batch_context"]
    # numpy columns; the string column is converted once per call, outside the GIL-free loop.
    columns = {"amount": ctx["amount"], "currency": ctx["currency"]}

    def run() -> None:
        engine.check_batch(h, a, None, columns)

    got = engine.check_batch(h[:1000], a[:1000], None, {k: v[:1000] for k, v in columns.items()})
    want = np.ones(1000, dtype=bool) if impl == "without when" else ctx["amount"][:1000] <= 500
    assert (got == want).all()
    benchmark.pedantic(run, rounds=10, iterations=1, warmup_rounds=1)
    wl.record_timing(
        benchmark,
        "conditions: check_batch, 1,000,000 requests over 10,000 agents, context as numpy columns",
        f"grant {impl}",
        fn=run,
        work=len(h),
        unit="decisions/s",
        per_op_ns=False,
        baseline=impl == "without when",
        pairs=6,
    )


@pytest.mark.parametrize("impl", ["without hook", "with hook"])
def test_hook_in_single_check(benchmark: Any, setup: dict[str, Any], impl: str) -> None:
    engine: charter.Engine = setup["engine"]
    pairs = setup["pairs"]["plain" if impl == "without hook" else "hooked"]
    check = engine.check

    def run() -> None:
        for h, a, _ in pairs:
            check(h, a)

    assert all(check(h, a) for h, a, _ in pairs[:100])
    benchmark.pedantic(run, rounds=50, iterations=1, warmup_rounds=1)
    wl.record_timing(
        benchmark,
        "hooks: single check from Python (10,000 calls/round)",
        f"engine.check, grant {impl}",
        fn=run,
        work=len(pairs),
        unit="ns/call",
        per_op_ns=True,
        baseline=impl == "without hook",
        pairs=20,
        note="hook = lambda req: True, on the agent's own level" if impl == "with hook" else "",
    )
