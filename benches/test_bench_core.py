"""Charter core benchmarks, each next to the baseline it is reported against.

1. single `engine.check` calls from Python vs a frozenset lookup in Python;
2. `check_batch` over 1,000,000 requests vs a numpy gather;
3. provision + deprovision throughput vs a Python dict registry;
4. memory per live agent at 1,000,000 agents (a measurement, not a timing).

Figures go to `benchmark.extra_info` and to the summary printed at the end
of the session (see conftest.py). There are no speed assertions; the
correctness asserts check that engine and baseline decide the same.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import charter
import workload as wl

N_PAIRS = wl.scaled(10_000)
N_BATCH = wl.scaled(1_000_000)
N_LIFECYCLE = wl.scaled(100_000)
N_MEMORY = wl.scaled(1_000_000)

ROUNDS_SINGLE = 300
ROUNDS_BATCH = 30
ROUNDS_LIFECYCLE = 7
# back-to-back (engine, baseline) round pairs for the paired ratio
PAIRS_SINGLE = 60
PAIRS_BATCH = 15
PAIRS_LIFECYCLE = 4

Workload = dict[str, Any]


def pedantic(benchmark: Any, fn: Callable[[], object], rounds: int) -> None:
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)


# ------------------------------------------------------ 1. single checks


@pytest.fixture(scope="session")
def single(workload: Workload) -> dict[str, Any]:
    """Pre-drawn request lists (Python objects, so only the calls are timed) and their baselines."""
    engine: charter.Engine = workload["engine"]
    base: wl.Baseline = workload["base"]
    agents, actions, users = workload["agents"], workload["actions"], workload["users"]
    rng = np.random.default_rng(wl.SEED + 3)
    ai = rng.integers(len(agents), size=N_PAIRS).tolist()
    xi = rng.integers(len(actions), size=N_PAIRS).tolist()
    ui = rng.integers(len(users), size=N_PAIRS).tolist()
    pool = wl.resource_pool()
    ri = rng.integers(len(pool), size=N_PAIRS).tolist()

    by_handle = [(agents[i].handle, actions[x]) for i, x in zip(ai, xi, strict=True)]
    by_action_id = [(agents[i].handle, x) for i, x in zip(ai, xi, strict=True)]
    by_id = [(agents[i].id, actions[x]) for i, x in zip(ai, xi, strict=True)]
    by_principal = [(users[u], actions[x]) for u, x in zip(ui, xi, strict=True)]
    with_resource = [(agents[i].handle, actions[x], pool[r]) for i, x, r in zip(ai, xi, ri, strict=True)]

    # Baseline for requests with a resource: allowed action names per (handle, resource).
    check = engine.check
    perms_res = {
        (h, r): frozenset(a for a in actions if check(h, a, r).allowed)
        for h, r in {(h, r) for h, _, r in with_resource}
    }
    perms, perms_by_id, principal_perms = base.perms, base.perms_by_id, base.principal_perms
    return {
        "handle": (
            by_handle,
            lambda p, a: a in perms[p],
            [("engine.check(handle, name)", check), ("engine.check(handle, action_id)", check)],
        ),
        "agent-id": (by_id, lambda p, a: a in perms_by_id[p], [("engine.check(agent_id, name)", check)]),
        "principal": (
            by_principal,
            lambda p, a: a in principal_perms[p],
            [("engine.check(principal_id, name)", check)],
        ),
        "resource": (
            with_resource,
            lambda p, a, r: a in perms_res[p, r],
            [("engine.check(handle, name, resource)", check)],
        ),
        "action-id-pairs": by_action_id,
    }


SINGLE_CASES = [
    ("handle", "python"),
    ("handle", "floor"),
    ("handle", "engine"),
    ("handle", "engine-action-id"),
    ("agent-id", "python"),
    ("agent-id", "engine"),
    ("principal", "python"),
    ("principal", "engine"),
    ("resource", "python"),
    ("resource", "engine"),
]


def _loop(fn: Callable[..., object], reqs: list[tuple[Any, ...]]) -> Callable[[], None]:
    if len(reqs[0]) == 3:

        def run3() -> None:
            for p, a, r in reqs:
                fn(p, a, r)

        return run3

    def run2() -> None:
        for p, a in reqs:
            fn(p, a)

    return run2


@pytest.mark.parametrize(("case", "impl"), SINGLE_CASES, ids=[f"{c}-{i}" for c, i in SINGLE_CASES])
def test_check_single(benchmark: Any, single: dict[str, Any], case: str, impl: str) -> None:
    """Per-call cost of `engine.check` from a Python loop, vs `a in perms[p]` on the same requests."""
    reqs, python_fn, engine_fns = single[case]
    group = f"1. single check from Python, by {case} ({N_PAIRS:,} calls/round)"
    benchmark.group = group
    if impl == "python":
        name, fn = "python: a in perms[p]" if case != "resource" else "python: a in perms[p, r]", python_fn
    elif impl == "floor":
        name, fn = "python loop + call floor (lambda: None)", lambda p, a: None
    elif impl == "engine-action-id":
        reqs = single["action-id-pairs"]
        name, fn = engine_fns[1]
    else:
        name, fn = engine_fns[0]

    if impl != "floor":  # sanity: the engine and the baseline agree on every request
        if impl == "python":
            got = [bool(fn(*r)) for r in reqs]
            want = [engine_fns[0][1](*r).allowed for r in reqs]
        else:
            got = [fn(*r).allowed for r in reqs]
            want = [bool(python_fn(*r)) for r in single[case][0]]
        assert got == want

    run = _loop(fn, reqs)
    pedantic(benchmark, run, ROUNDS_SINGLE)
    wl.record_timing(
        benchmark,
        group,
        name,
        fn=run,
        work=len(reqs),
        unit="ns/call",
        per_op_ns=True,
        baseline=impl == "python",
        pairs=PAIRS_SINGLE,
    )


# ------------------------------------------------------ 2. check_batch


@pytest.fixture(scope="session")
def batch(workload: Workload) -> dict[str, Any]:
    handles = workload["handles"]
    agent_idx, action_ids = wl.draw_request_indices(len(handles), len(workload["actions"]), N_BATCH, wl.SEED)
    pool = wl.resource_pool()
    rng = np.random.default_rng(wl.SEED + 5)
    resources = [
        pool[i] if i < len(pool) else None for i in rng.integers(2 * len(pool), size=N_BATCH).tolist()
    ]
    return {
        "handles": np.ascontiguousarray(handles[agent_idx]),  # uint64
        "action_ids": action_ids,  # uint32, what check_batch takes without conversion
        "agent_idx": agent_idx,  # intp
        "action_idx": action_ids.astype(np.intp),  # intp: the fastest index type for the gather
        "resources": resources,
        "expected": workload["base"].allowed[agent_idx, action_ids],
    }


BATCH_CASES = ["numpy-gather", "check_batch", "check_batch_reasons", "check_batch-resources"]


@pytest.mark.parametrize("impl", BATCH_CASES)
def test_check_batch(benchmark: Any, workload: Workload, batch: dict[str, Any], impl: str) -> None:
    """Decisions/s of `check_batch` over 1M requests vs `allowed[agent_idx, action_ids]` in numpy."""
    engine: charter.Engine = workload["engine"]
    group = f"2. batch of {N_BATCH:,} requests"
    benchmark.group = group
    h, a, expected = batch["handles"], batch["action_ids"], batch["expected"]
    rounds = ROUNDS_BATCH
    note = ""
    if impl == "numpy-gather":
        matrix, ai, xi = workload["base"].allowed, batch["agent_idx"], batch["action_idx"]
        name = "numpy: allowed[agent_idx, action_ids]"

        def fn() -> object:
            return matrix[ai, xi]

        assert np.array_equal(fn(), expected)
    elif impl == "check_batch":
        name = "engine.check_batch(handles, action_ids)"

        def fn() -> object:
            return engine.check_batch(h, a)

        assert np.array_equal(fn(), expected)
    elif impl == "check_batch_reasons":
        name = "engine.check_batch_reasons(handles, action_ids)"

        def fn() -> object:
            return engine.check_batch_reasons(h, a)

        allowed, reasons = engine.check_batch_reasons(h, a)
        assert np.array_equal(allowed, expected)
        assert np.array_equal(reasons == charter.REASONS.index("granted"), expected)
    else:
        res = batch["resources"]
        name = "engine.check_batch(handles, action_ids, resources)"
        note = "(half the requests name a resource; not the same work as the baseline)"
        rounds = 5

        def fn() -> object:
            return engine.check_batch(h, a, res)

        got = fn()
        for i in range(0, N_BATCH, max(1, N_BATCH // 2000)):
            assert bool(got[i]) == engine.check(int(h[i]), int(a[i]), res[i]).allowed

    pedantic(benchmark, fn, rounds)
    wl.record_timing(
        benchmark,
        group,
        name,
        fn=fn,
        pairs=PAIRS_BATCH if rounds == ROUNDS_BATCH else 3,
        work=N_BATCH,
        unit="decisions/s",
        per_op_ns=False,
        baseline=impl == "numpy-gather",
        note=note,
    )


# ------------------------------------------------- 3. provision + deprovision


@pytest.fixture(scope="module")
def lifecycle(workload: Workload) -> dict[str, Any]:
    engine = charter.Engine.from_dict(workload["policy"])
    rng = np.random.default_rng(wl.SEED + 4)
    users, templates = workload["users"], workload["templates"]
    reqs = [
        (templates[t], users[u])
        for t, u in zip(
            rng.integers(len(templates), size=N_LIFECYCLE).tolist(),
            rng.integers(len(users), size=N_LIFECYCLE).tolist(),
            strict=True,
        )
    ]
    return {
        "engine": engine,
        "reqs": reqs,
        "template_perms": wl.template_perms(engine, templates),
        "principal_perms": workload["base"].principal_perms,
    }


@pytest.mark.parametrize("impl", ["python", "engine"])
def test_provision_deprovision(benchmark: Any, lifecycle: dict[str, Any], impl: str) -> None:
    """Provision N agents (template + on_behalf_of a user), then deprovision them all: pairs/s."""
    group = f"3. provision + deprovision of {N_LIFECYCLE:,} agents (on behalf of users)"
    benchmark.group = group
    reqs = lifecycle["reqs"]
    splits: list[tuple[float, float]] = []
    if impl == "python":
        reg = wl.DictRegistry(lifecycle["template_perms"], lifecycle["principal_perms"])
        prov, deprov = reg.provision, reg.deprovision
        name = "python dict registry"

        def provision_all() -> list[int]:
            return [prov(t, u) for t, u in reqs]

    else:
        engine: charter.Engine = lifecycle["engine"]
        prov, deprov = engine.provision, engine.deprovision
        name = "engine.provision + engine.deprovision"

        def provision_all() -> list[int]:
            return [prov(t, on_behalf_of=u).handle for t, u in reqs]

    def run() -> None:
        t0 = time.perf_counter()
        hs = provision_all()
        t1 = time.perf_counter()
        for h in hs:
            deprov(h)
        splits.append((t1 - t0, time.perf_counter() - t1))

    # One untimed round interns every delegation chain (the engine's rights,
    # the registry's cached frozensets); then freeze that long-lived state
    # out of the cyclic GC, as the paired rounds later will see it. Without
    # this the Python baseline's time depends on how many full collections
    # happen to traverse its cache (30-50% swings between runs).
    run()
    splits.clear()
    gc.collect()
    gc.freeze()
    pedantic(benchmark, run, ROUNDS_LIFECYCLE)
    if impl == "engine":
        stats = lifecycle["engine"].stats()
        assert stats["agents"] == 0
        # The last round's agents are retired; they deny with their precise reason.
        h = prov(reqs[0][0], on_behalf_of=reqs[0][1]).handle
        assert deprov(h) == 1
        assert lifecycle["engine"].check(h, "tool00:read").reason == "revoked"
    measured = splits[1:]  # the first call was the warm-up round
    prov_s = wl.median([p for p, _ in measured])
    deprov_s = wl.median([d for _, d in measured])
    row = wl.record_timing(
        benchmark,
        group,
        name,
        fn=run,
        pairs=PAIRS_LIFECYCLE,
        work=len(reqs),
        unit="pairs/s",
        per_op_ns=False,
        baseline=impl == "python",
        extra={
            "provision_ns_per_agent": prov_s / len(reqs) * 1e9,
            "deprovision_ns_per_agent": deprov_s / len(reqs) * 1e9,
        },
    )
    if row is not None:
        row.note = (
            f"provision {prov_s / len(reqs) * 1e9:,.0f} ns + deprovision {deprov_s / len(reqs) * 1e9:,.0f} ns"
        )


# ---------------------------------------------------------- 4. memory


def _measure_in_subprocess(kind: str, n: int) -> dict[str, Any]:
    """Run `workload.measure_memory` in a fresh interpreter: a clean heap, so RSS growth is the registry's."""
    code = f"import json, workload; print(json.dumps(workload.measure_memory({kind!r}, {n})))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.measurement
def test_memory_per_live_agent() -> None:
    """RSS growth per live agent at 1M agents (on behalf of users, spread over the templates)."""
    group = f"4. memory per live agent at {N_MEMORY:,} agents (fresh process, RSS from /proc/self/statm)"
    engine = _measure_in_subprocess("engine", N_MEMORY)
    python = _measure_in_subprocess("python", N_MEMORY)
    assert engine["agents"] == N_MEMORY
    assert python["agents"] == N_MEMORY
    wl.NOTES.append(
        f"memory: engine RSS {engine['rss_before'] / 2**20:,.0f} -> {engine['rss_after'] / 2**20:,.0f} MiB, "
        f"registry_bytes {engine['registry_bytes_before']:,} -> {engine['registry_bytes']:,}; "
        f"python RSS {python['rss_before'] / 2**20:,.0f} -> {python['rss_after'] / 2**20:,.0f} MiB"
    )
    wl.record_measurement(
        group,
        "engine: RSS growth / agents",
        engine["rss_per_agent"],
        "B/agent",
        f"({engine['chains']:,} chains; provisioned at {engine['provision_per_s']:,.0f} agents/s)",
    )
    if engine["first"] < N_MEMORY:
        wl.record_measurement(
            group,
            "engine: marginal RSS / agent",
            engine["rss_marginal_per_agent"],
            "B/agent",
            f"(agents {engine['first']:,} -> {N_MEMORY:,}: every chain already exists)",
        )
    wl.record_measurement(
        group, "engine: stats()['registry_bytes'] / agents", engine["registry_per_agent"], "B/agent"
    )
    wl.record_measurement(
        group,
        "python dict registry: RSS growth / agents",
        python["rss_per_agent"],
        "B/agent",
        f"({python['chains']:,} cached frozensets)",
    )
    if python["first"] < N_MEMORY:
        wl.record_measurement(
            group, "python dict registry: marginal RSS / agent", python["rss_marginal_per_agent"], "B/agent"
        )
