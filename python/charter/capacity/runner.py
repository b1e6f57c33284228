"""One scenario, end to end: build the workload, measure every path, plan, compare; a JSON-able dict.

The steps, in order (each reported by `Progress`):

1. the policy (generated or read) compiled; the engine's memory before agents;
2. the fleet provisioned, sampling single-call throughput as it grows
   (throughput vs agents), and the memory each agent adds;
3. single calls, batches, churn (provision + deprovision), the socket path;
4. the audit trail's size, when the scenario audits and the engine can;
5. the plan for each path; with `compare`, the same workload through the peers.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from charter import policy as policy_doc
from charter.capacity import audit
from charter.capacity import generator as gen
from charter.capacity.hooks import HOOKS
from charter.capacity.measure import (
    PathResult,
    make_batches,
    measure_batch,
    measure_churn,
    measure_single,
    memory_in_fresh_interpreter,
    single_items,
)
from charter.capacity.plan import PlanInputs, plan
from charter.capacity.progress import Progress
from charter.capacity.scenario import Scenario
from charter.engine import Engine
from charter.policy import parse_duration

__all__ = ["Options", "run_scenario"]

MEMORY_PROBE = (50_000, 200_000)
"""Agents the memory probe provisions: the fleet's size, within these bounds (fewer is page noise)."""
CHECKPOINT_REQUESTS = 20_000


@dataclass
class Options:
    """How to run: `quick` (small sizes for tests), `compare` (peers too), `seed` override."""

    quick: bool = False
    compare: bool = False
    seed: int | None = None
    compare_seconds: float = 3.0
    """Time box for each peer's measurement on each path."""


class _Counter:
    """Decisions made on the audited engine, for audit bytes per decision."""

    def __init__(self) -> None:
        self.n = 0


def _load_policy(scenario: Scenario, seed: int) -> dict[str, Any]:
    if scenario.policy.generate is not None:
        return gen.generate_policy(scenario.policy.generate, seed)
    path = scenario.policy_path()
    assert path is not None
    data: dict[str, Any] = msgspec.to_builtins(policy_doc.from_file(path))
    return data


def _policy_stats(policy: dict[str, Any], engine: Engine) -> dict[str, Any]:
    roles = policy.get("roles", {})
    entries = [e for r in roles.values() for k in ("allow", "deny") for e in r.get(k, ())]
    tables = [e for e in entries if isinstance(e, dict)]
    return {
        "version": engine.policy_version,
        "actions": len(engine.actions),
        "roles": len(roles),
        "allow_entries": sum(len(r.get("allow", ())) for r in roles.values()),
        "deny_entries": sum(len(r.get("deny", ())) for r in roles.values()),
        "scoped_entries": sum(1 for e in tables if e.get("on")),
        "conditions": sum(1 for e in tables if e.get("when")),
        "hooks": sum(1 for e in tables if e.get("hook")),
        "guards": len(policy.get("guards", ())),
        "principals": len(policy.get("principals", {})),
        "templates": len(policy.get("templates", {})),
        "quotas": len(policy.get("quotas", {})),
    }


def run_scenario(scenario: Scenario, options: Options, progress: Progress) -> dict[str, Any]:
    """Measure one scenario; the result as plain data (what `--json` writes for it)."""
    if options.quick:
        scenario = scenario.quick()
    seed = scenario.seed if options.seed is None else options.seed
    spec, run = scenario.agents, scenario.run
    progress.note(f"scenario {scenario.name}: {spec.count:,} agents, paths {', '.join(run.paths)}")
    work = Path(tempfile.mkdtemp(prefix="charter-bench-"))
    try:
        return _run(scenario, options, progress, seed, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(scenario: Scenario, options: Options, progress: Progress, seed: int, work: Path) -> dict[str, Any]:
    spec, run = scenario.agents, scenario.run
    counted = _Counter()
    policy = _load_policy(scenario, seed)
    generated = scenario.policy.generate is not None
    engine = gen.compile_policy(policy, generated=generated)
    policy_file = work / "policy.json"
    policy_file.write_bytes(msgspec.json.encode(policy))
    with_context = gen.reads_context(policy)
    pool = (
        gen.resource_pool(scenario.policy.generate.resource_classes)
        if scenario.policy.generate
        else gen.pool_for_policy(policy)
    )
    notes: list[str] = []
    if not generated and any(
        isinstance(e, dict) and e.get("hook") not in (None, *HOOKS)
        for r in policy.get("roles", {}).values()
        for e in (*r.get("allow", ()), *r.get("deny", ()))
    ):
        notes.append("the policy names hooks the bench does not have: decisions reaching them are hook_error")

    # ---- the fleet, sampling throughput as it grows
    curve: list[dict[str, float]] = []

    def sample(fleet: gen.Fleet) -> None:
        reqs = gen.draw_requests(
            engine.actions,
            pool,
            len(fleet),
            CHECKPOINT_REQUESTS,
            scenario.requests,
            seed,
            with_context,
            stream=7,
        )
        items = single_items(engine, fleet, reqs)
        check = engine.check
        c0, t0 = time.process_time(), time.perf_counter()
        for item in items:
            check(*item)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        curve.append(
            {
                "agents": len(fleet),
                "decisions_per_s": len(items) / wall,
                "cpu_s_per_million_decisions": cpu / len(items) * 1e6,
            }
        )

    marks = sorted(
        {m for m in (spec.count // 100, spec.count // 10, spec.count // 2) if m >= 100} | {spec.count}
    )
    with progress.step("provisioning agents", spec.count) as tick:
        fleet = gen.provision_fleet(
            engine, policy, spec, seed, checkpoints=marks, on_checkpoint=sample, progress=tick
        )
    memory = _memory(scenario, policy_file, fleet, progress, options.quick)
    base_bytes = memory["engine_base_bytes"]
    memory["fleet_engine_stats"] = {
        k: v for k, v in engine.stats().items() if isinstance(v, int | float | str)
    }
    per_agent = memory["bytes_per_agent_used"]
    churn = _churn(engine, policy, scenario, fleet, progress)

    # Audit from here on: the decisions measured below are what it records (not the provisioning).
    audit_dir = work / "audit"
    auditing = run.audit and audit.enable(engine, audit_dir)
    if run.audit and not auditing:
        notes.append("audit not available: this engine has no audit trail (Engine.audit_to)")

    paths: dict[str, PathResult] = {}
    if "single" in run.paths:
        reqs = gen.draw_requests(
            engine.actions, pool, len(fleet), run.decisions, scenario.requests, seed, with_context, stream=3
        )
        items = single_items(engine, fleet, reqs)
        with progress.step("single calls", len(items)) as tick:
            paths["single"] = measure_single(engine.check, items, tick)
        counted.n += len(items) + min(len(items), 2_000) + min(len(items), 50_000)
        del items
    if "batch" in run.paths:
        n = run.batches * run.batch_size
        reqs = gen.draw_requests(
            engine.actions, pool, len(fleet), n, scenario.requests, seed, with_context, stream=4
        )
        batches = make_batches(fleet, reqs, run.batch_size)
        with progress.step("batches", n) as tick:
            paths["batch"] = measure_batch(engine.check_batch, batches, tick)
        counted.n += n + len(batches[0].handles)
        del batches

    socket_info: dict[str, Any] = {}
    if "socket" in run.paths:
        result, socket_info = _socket(
            scenario, policy_file, engine, fleet, pool, with_context, seed, work, progress
        )
        counted.n += socket_info["verified_requests"]
        paths["socket"] = result

    audit_info: dict[str, Any] = {"enabled": bool(auditing), "available": audit.available(engine)}
    audit_bpd: float | None = None
    if auditing:
        audit.close(engine)
        size = audit.directory_bytes(audit_dir)
        audit_bpd = size / counted.n if counted.n else None
        audit_info |= {"bytes": size, "decisions": counted.n, "bytes_per_decision": audit_bpd}
        if socket_info.get("audit_bytes_per_decision") is not None:
            audit_info["socket_bytes_per_decision"] = socket_info["audit_bytes_per_decision"]
    elif run.audit:
        audit_info["note"] = "audit not available"

    plans = {}
    for name, res in paths.items():
        churn_cost = socket_info.get("churn_cpu_s_per_pair") if name == "socket" else None
        inputs = PlanInputs(
            agents=scenario.agents.count,
            per_agent_per_minute=scenario.requests.per_agent_per_minute,
            churn_per_second=scenario.churn_per_second,
            cpu_s_per_decision=res.cpu_s / res.decisions if res.decisions else 0.0,
            cpu_s_per_churn=churn_cost if churn_cost is not None else churn.cpu_s_per_pair,
            base_bytes=base_bytes,
            bytes_per_agent=per_agent,
            headroom=run.headroom,
            decisions_per_s_per_process=res.decisions_per_s,
            audit_bytes_per_decision=socket_info.get("audit_bytes_per_decision")
            if name == "socket"
            else audit_bpd,
        )
        plans[name] = {"inputs": vars(inputs), **plan(inputs).to_dict()}

    out: dict[str, Any] = {
        "scenario": scenario.name,
        "description": scenario.description,
        "source": scenario.source,
        "quick": options.quick,
        "seed": seed,
        "spec": msgspec.to_builtins(msgspec.structs.replace(scenario, source=None)),
        "policy": _policy_stats(policy, engine),
        "fleet": {
            "agents": len(fleet),
            "demand_per_s": scenario.demand_per_second,
            "churn_per_second": scenario.churn_per_second,
            "requests_read_context": with_context,
        },
        "memory": memory,
        "throughput_vs_agents": curve,
        "paths": {k: v.to_dict() for k, v in paths.items()},
        "churn": churn.to_dict(),
        "socket": socket_info,
        "audit": audit_info,
        "plan": plans,
        "notes": notes,
    }
    if options.compare:
        from charter.capacity.compare import compare

        out["compare"] = compare(scenario, policy, seed, progress, options.compare_seconds)
    return out


def _memory(
    scenario: Scenario, policy_file: Path, fleet: gen.Fleet, progress: Progress, quick: bool
) -> dict[str, Any]:
    """Memory with no agent and per agent, measured in a fresh interpreter (`memory_in_fresh_interpreter`)."""
    lo, hi = MEMORY_PROBE
    n = 20_000 if quick else max(lo, min(scenario.agents.count, hi))
    ttl = None if scenario.agents.ttl is None else parse_duration(scenario.agents.ttl, "agents.ttl")
    users: list[str | None] = list(fleet.user_names) or [None]
    with progress.step("memory (fresh interpreter)", n):
        m = memory_in_fresh_interpreter(policy_file, fleet.template_names, users, ttl, n)
    return {
        "engine_base_bytes": m["engine_base_bytes"],
        "probe_agents": n,
        "rss_bytes_per_agent": m["rss_bytes_per_agent"],
        "registry_bytes_per_agent": m["registry_bytes_per_agent"],
        "bytes_per_agent_used": max(m["rss_bytes_per_agent"], m["registry_bytes_per_agent"]),
        "basis": f"growth over {n:,} agents in a fresh interpreter, the larger of RSS and the registry's count",
    }


def _churn(
    engine: Engine, policy: dict[str, Any], scenario: Scenario, fleet: gen.Fleet, progress: Progress
) -> Any:
    spec = scenario.agents
    ttl = None if spec.ttl is None else parse_duration(spec.ttl, "agents.ttl")
    templates, users = fleet.template_names, fleet.user_names
    k = [0]

    def provision() -> Any:
        k[0] += 1
        behalf = users[k[0] % len(users)] if users else None
        return engine.provision(templates[k[0] % len(templates)], on_behalf_of=behalf, ttl=ttl).handle

    pairs = scenario.run.churn_ops
    with progress.step("churn (provision+retire)", pairs):
        return measure_churn(provision, engine.deprovision, pairs)


def _socket(
    scenario: Scenario,
    policy_file: Path,
    engine: Engine,
    fleet: gen.Fleet,
    pool: list[str],
    with_context: bool,
    seed: int,
    work: Path,
    progress: Progress,
) -> tuple[PathResult, dict[str, Any]]:
    from charter.capacity import socket_path as sp
    from charter.server.client import AdminClient, Client

    run = scenario.run
    audit_dir = work / "server-audit" if run.audit else None
    n_agents = min(run.socket_agents, len(fleet))
    ttl = None if scenario.agents.ttl is None else parse_duration(scenario.agents.ttl, "agents.ttl")
    info: dict[str, Any] = {
        "agents": n_agents,
        "clients": run.socket_clients,
        "inflight": run.socket_inflight,
    }
    if n_agents < len(fleet):
        info["note"] = (
            f"the server holds the first {n_agents:,} of the {len(fleet):,} agents (provisioned over its admin socket)"
        )
    with sp.Sidecar(policy_file, audit_dir=audit_dir) as server:
        with AdminClient(server.admin_socket, timeout=sp.TIMEOUT) as admin:
            with progress.step("server: provisioning", n_agents) as tick:
                remote = sp.provision_remote(admin, fleet, n_agents, ttl, tick)
            reqs = gen.draw_requests(
                engine.actions,
                pool,
                n_agents,
                min(run.socket_decisions, 20_000),
                scenario.requests,
                seed,
                with_context,
                stream=5,
            )
            with Client(server.socket, timeout=sp.TIMEOUT) as client:
                agreed, allowed = sp.verify_same_decisions(
                    client, engine.check, reqs, fleet.handles.tolist(), remote
                )
            frames = sp.request_frames(reqs, remote)
            target = run.socket_decisions
            with progress.step(f"server: {run.socket_clients} client(s) x {run.socket_inflight}", target):
                result = sp.drive(server, frames, run.socket_clients, run.socket_inflight, target)
            checked = min(200, len(reqs))
            result.allowed_share = allowed / checked if checked else 0.0
            info["verified_requests"] = checked
            info["agreed_with_in_process"] = agreed
            pairs = max(1, min(run.churn_ops // 10, 2_000))
            with progress.step("server: churn over admin", pairs):
                cpu0, t0 = server.cpu_seconds(), time.perf_counter()
                for i in range(pairs):
                    agent = admin.provision(fleet.template_names[i % len(fleet.template_names)], ttl=ttl)
                    admin.deprovision(agent.handle)
                info["churn_cpu_s_per_pair"] = (server.cpu_seconds() - cpu0) / pairs
                info["churn_pairs_per_s"] = pairs / (time.perf_counter() - t0)
            with Client(server.socket, timeout=sp.TIMEOUT) as client:
                server_decisions = int(client.stats()["decisions"]["total"])
        info["server_decisions"] = server_decisions
        code = server.stop()
        info["server_exit_code"] = code
    if audit_dir is not None and audit_dir.exists():
        size = audit.directory_bytes(audit_dir)
        info["audit_bytes"] = size
        info["audit_bytes_per_decision"] = size / server_decisions if server_decisions and size else None
    return result, info
