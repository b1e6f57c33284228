"""`--compare`: Charter, pycasbin and cedarpy on the same requests, in the same run, with ratios.

The workload is the scenario's policy reduced to what the peers are given
the same way (`generator.rbac_core`), a fleet provisioned from it, and one
request stream. Before anything is timed, every peer must give Charter's
decision on every request of a verification sample; a peer that disagrees
once is reported with the disagreement and not timed. Each peer is timed on
the single-call path (one call per level of the agent's chain) and the batch
path (`batch_enforce`, `is_authorized_batch`), within a time box.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from charter.capacity import generator as gen
from charter.capacity import peers
from charter.capacity.progress import Progress
from charter.capacity.scenario import Scenario

__all__ = ["compare"]

VERIFY = 300
"""Requests every peer must decide as Charter does before it is timed."""
MAX_AGENTS = 10_000
BATCH = 1_000


def _timed(fn: Callable[[int], int], total: int, budget_s: float) -> dict[str, float]:
    """Call `fn(i)` (which decides a chunk starting at request i and returns its size) within the time box."""
    done = 0
    c0, t0 = time.process_time(), time.perf_counter()
    while done < total and time.perf_counter() - t0 < budget_s:
        done += fn(done)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "decisions": done,
        "wall_s": wall,
        "cpu_s": cpu,
        "decisions_per_s": done / wall if wall > 0 else 0.0,
        "cpu_s_per_million_decisions": cpu / done * 1e6 if done else 0.0,
    }


def compare(
    scenario: Scenario, policy: dict[str, Any], seed: int, progress: Progress, budget_s: float
) -> dict[str, Any]:
    """The comparison's results (plain data), or why a peer could not be compared."""
    versions = peers.available()
    core = gen.rbac_core(policy)
    dropped = {
        "conditional_or_hooked_entries": sum(
            len(r.get(k, ())) - len(core["roles"][n].get(k, ()))
            for n, r in policy.get("roles", {}).items()
            for k in ("allow", "deny")
        ),
        "guards": len(policy.get("guards", ())),
        "quotas": len(policy.get("quotas", {})),
    }
    engine = gen.compile_policy(core, generated=scenario.policy.generate is not None, hooks=False)
    count = min(scenario.agents.count, MAX_AGENTS)
    with progress.step("compare: provisioning", count) as tick:
        fleet = gen.provision_fleet(engine, core, scenario.agents, seed, count=count, progress=tick)
    pool = (
        gen.resource_pool(scenario.policy.generate.resource_classes)
        if scenario.policy.generate
        else gen.pool_for_policy(core)
    )
    n = min(scenario.run.decisions, 200_000)
    reqs = gen.draw_requests(engine.actions, pool, len(fleet), n, scenario.requests, seed, False, stream=6)
    names = [reqs.action_names[k] for k in reqs.action_ids.tolist()]
    agents = reqs.agents.tolist()
    handles = fleet.handles.tolist()
    resources = reqs.resources
    chain_of = {a: fleet.chain(a) for a in set(agents)}
    chains = [chain_of[a] for a in agents]
    out: dict[str, Any] = {
        "workload": "the scenario's policy without conditions, hooks, guards and quotas (what the peers are given the same way)",
        "dropped": dropped,
        "agents": len(fleet),
        "requests": n,
        "time_box_s": budget_s,
        "versions": versions,
    }
    check = engine.check
    want = [check(handles[a], names[i], resources[i]).allowed for i, a in enumerate(agents[:VERIFY])]
    out["allowed_share"] = sum(want) / len(want) if want else 0.0

    def charter_single(i: int) -> int:
        hi = min(i + 1_000, n)
        for k in range(i, hi):
            check(handles[agents[k]], names[k], resources[k])
        return hi - i

    batch_handles = fleet.handles[reqs.agents]
    ids = reqs.action_ids

    def charter_batch(i: int) -> int:
        hi = min(i + BATCH, n)
        res = resources[i:hi]
        engine.check_batch(batch_handles[i:hi], ids[i:hi], res)
        return hi - i

    results: dict[str, Any] = {}
    with progress.step("compare: charter", 2):
        results["charter"] = {
            "single": _timed(charter_single, n, budget_s),
            "batch": _timed(charter_batch, n, budget_s),
            "rules": sum(len(r.get("allow", ())) + len(r.get("deny", ())) for r in core["roles"].values()),
        }
    makers: dict[str, Callable[[], Any]] = {
        "casbin": lambda: peers.CasbinPeer(core),
        "cedar": lambda: peers.CedarPeer(core, pool),
    }
    for name, make in makers.items():
        package = "casbin" if name == "casbin" else "cedarpy"
        if versions.get(package) is None:
            results[name] = {"error": f"not installed (pip install 'charter[compare]' installs {package})"}
            continue
        with progress.step(f"compare: {name}", 3):
            results[name] = _peer(make(), want, chains, names, resources, n, budget_s)
    out["results"] = results
    out["ratios"] = _ratios(results)
    return out


def _peer(
    peer: Any,
    want: Sequence[bool],
    chains: Sequence[Sequence[tuple[str, str]]],
    names: Sequence[str],
    resources: Sequence[str | None],
    n: int,
    budget_s: float,
) -> dict[str, Any]:
    got = [peer.decide(chains[i], names[i], resources[i]) for i in range(len(want))]
    batch = peer.decide_batch(chains[: len(want)], names[: len(want)], resources[: len(want)])
    wrong = [i for i in range(len(want)) if got[i] != want[i] or batch[i] != want[i]]
    if wrong:
        i = wrong[0]
        return {
            "error": "the translation gave other decisions than Charter: not timed",
            "mismatches": len(wrong),
            "first": {
                "chain": chains[i],
                "action": names[i],
                "resource": resources[i],
                "charter": want[i],
                "peer": got[i],
            },
        }
    decide = peer.decide

    def single(i: int) -> int:
        hi = min(i + 100, n)
        for k in range(i, hi):
            decide(chains[k], names[k], resources[k])
        return hi - i

    def batched(i: int) -> int:
        hi = min(i + BATCH, n)
        peer.decide_batch(chains[i:hi], names[i:hi], resources[i:hi])
        return hi - i

    return {
        "verified_requests": len(want),
        "rules": peer.rules,
        "single": _timed(single, n, budget_s),
        "batch": _timed(batched, n, budget_s),
    }


def _ratios(results: dict[str, Any]) -> dict[str, Any]:
    """Charter's throughput over each peer's, and each peer's CPU per decision over Charter's."""
    out: dict[str, Any] = {}
    ours = results["charter"]
    for name, res in results.items():
        if name == "charter" or "error" in res:
            continue
        out[name] = {}
        for path in ("single", "batch"):
            mine, theirs = ours[path], res[path]
            if not (mine["decisions"] and theirs["decisions"]):
                continue
            out[name][path] = {
                "throughput_ratio": mine["decisions_per_s"] / theirs["decisions_per_s"]
                if theirs["decisions_per_s"]
                else float("inf"),
                "cpu_ratio": theirs["cpu_s_per_million_decisions"] / mine["cpu_s_per_million_decisions"]
                if mine["cpu_s_per_million_decisions"]
                else None,
            }
    return out
