"""`charter bench`: scenarios, the seeded generator, the plan's arithmetic, the peers' translations, the CLI."""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import charter
from charter import cli
from charter.capacity import audit, peers
from charter.capacity import generator as gen
from charter.capacity.measure import cdf_points, percentiles
from charter.capacity.plan import PlanInputs, plan
from charter.capacity.scenario import Agents, Generate, Requests, ScenarioError, from_toml, load, shipped
from charter.capacity.socket_path import _process_cpu
from reference import segments_match

MINIMAL = """
name = "t"
[policy.generate]
roles = 4
depth = 2
[agents]
count = 10
[requests]
per_agent_per_minute = 6
"""


# ------------------------------------------------------------ scenarios


def test_shipped_scenarios_load_and_quick_runs_are_small() -> None:
    assert set(shipped()) >= {"small-team", "fleet-10k", "ephemeral-1m", "financial"}
    for name in shipped():
        scenario = load(name)
        quick = scenario.quick()
        assert quick.agents.count <= 2_000
        assert quick.run.decisions <= 5_000
        assert quick.run.socket_agents <= 200
    assert load("ephemeral-1m").agents.count == 1_000_000
    assert load("financial").run.audit is True


def test_demand_and_churn_follow_the_fleet() -> None:
    s = from_toml(MINIMAL.replace("count = 10", 'count = 600\nlifetime = "10m"'))
    assert s.demand_per_second == pytest.approx(600 * 6 / 60)
    assert s.churn_per_second == pytest.approx(1.0)
    assert from_toml(MINIMAL).churn_per_second == 0.0
    explicit = from_toml(MINIMAL.replace("count = 10", "count = 10\nchurn_per_second = 2.5"))
    assert explicit.churn_per_second == 2.5


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        (("count = 10", 'count = "ten"'), "agents.count", "Expected `int`"),
        (("count = 10", "count = 0"), "agents.count", ">= 1"),
        (("count = 10", "count = 10\ncolour = 1"), "agents", "unknown field `colour`"),
        (("[requests]\nper_agent_per_minute = 6", ""), None, "missing required field `requests`"),
        (("[policy.generate]", '[policy]\nfile = "x.toml"\n[policy.generate]'), "policy", "either"),
        (("[policy.generate]\nroles = 4\ndepth = 2", "[policy]"), "policy", "either"),
        (("count = 10", 'count = 10\nlifetime = "1h"\nchurn_per_second = 1'), "agents", "not both"),
        (("count = 10", 'count = 10\nttl = "soon"'), "agents.ttl", "not a duration"),
        (
            ("count = 10", "count = 10\nsub_agent_share = 0.8\nfor_nobody_share = 0.5"),
            "agents",
            "more than 1",
        ),
        (("depth = 2", "depth = 6"), "policy.generate.depth", "at least 6 roles"),
        (("depth = 2", "depth = 9"), "policy.generate.depth", "<= 8"),
        (("roles = 4", "roles = 4\ndenies = 5"), "policy.generate.denies", "more denies"),
        (
            ("per_agent_per_minute = 6", "per_agent_per_minute = 6\n[run]\npaths = []"),
            "run.paths",
            "at least one",
        ),
        (
            ("per_agent_per_minute = 6", 'per_agent_per_minute = 6\n[run]\npaths = ["tcp"]'),
            "run.paths[0]",
            "Invalid enum value .tcp.",
        ),
        (
            ("per_agent_per_minute = 6", 'per_agent_per_minute = 6\n[run]\npaths = ["single", "single"]'),
            "run.paths",
            "each path once",
        ),
        (
            ("per_agent_per_minute = 6", "per_agent_per_minute = 6\n[run]\nheadroom = 1.0"),
            "run.headroom",
            "< 1.0",
        ),
        (('name = "t"', 'name = " "'), "name", "needs a name"),
        (('name = "t"', 'name = "t"\nsource = "x"'), None, "unknown field `source`"),
        (('name = "t"', 'name = "t'), None, "not valid TOML"),
    ],
)
def test_scenario_errors_name_the_key(change: tuple[str, str], path: str | None, message: str) -> None:
    text = MINIMAL.replace(*change)
    assert text != MINIMAL
    with pytest.raises(ScenarioError, match=message) as err:
        from_toml(text, source="s.toml")
    assert err.value.path == path
    assert str(err.value).startswith("s.toml")


def test_a_policy_file_is_found_beside_the_scenario(tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_text(Path(charter.policy.example_path()).read_text())
    text = MINIMAL.replace("[policy.generate]\nroles = 4\ndepth = 2", '[policy]\nfile = "p.toml"')
    (tmp_path / "s.toml").write_text(text)
    assert load(tmp_path / "s.toml").policy_path() == tmp_path / "p.toml"
    (tmp_path / "p.toml").unlink()
    with pytest.raises(ScenarioError, match="no policy file"):
        load(tmp_path / "s.toml")


def test_unknown_shipped_scenario() -> None:
    with pytest.raises(ScenarioError, match="shipped: ") as err:
        load("no-such-scenario")
    assert "small-team" in str(err.value)


# ------------------------------------------------------------ the generator


def _depth(policy: dict[str, Any]) -> int:
    roles = policy["roles"]

    def depth(r: str) -> int:
        return 1 + max((depth(p) for p in roles[r].get("inherits", ())), default=0)

    return max(depth(r) for r in roles)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), roles=st.integers(3, 30), depth=st.integers(1, 3))
def test_the_generator_is_deterministic_and_honours_its_parameters(seed: int, roles: int, depth: int) -> None:
    g = Generate(
        roles=roles, depth=depth, denies=min(roles, 3), conditions=0.5, hooks=0.2, guards=2, rate="10/s"
    )
    first, again = gen.generate_policy(g, seed), gen.generate_policy(g, seed)
    assert first == again
    assert len(first["roles"]) == roles
    assert _depth(first) == depth
    assert len(first["actions"]) == g.tools * g.verbs
    assert sum(1 for r in first["roles"].values() if r.get("deny")) == min(roles, 3)
    assert len(first["guards"]) == 2
    assert all(t["quota"] == "bench" for t in first["templates"].values())
    assert gen.reads_context(first)
    engine = gen.compile_policy(first, generated=True)
    assert engine.actions == first["actions"]


def test_different_seeds_give_different_policies() -> None:
    g = Generate()
    assert gen.generate_policy(g, 1) != gen.generate_policy(g, 2)


def test_fleet_and_requests_are_deterministic() -> None:
    g = Generate(users=5, templates=3)
    policy = gen.generate_policy(g, 5)
    spec = Agents(count=300, sub_agent_share=0.3, for_nobody_share=0.1)
    fleets = []
    for _ in range(2):
        engine = gen.compile_policy(policy, generated=True)
        fleets.append((engine, gen.provision_fleet(engine, policy, spec, 5)))
    (e1, f1), (_e2, f2) = fleets
    assert f1.handles.tolist() == f2.handles.tolist()
    assert f1.parents.tolist() == f2.parents.tolist()
    for i in range(len(f1)):
        agent = e1.agent(int(f1.handles[i]))
        chain = f1.chain(i)
        assert chain[0] == ("template", agent.template)
        assert agent.depth == sum(1 for kind, _ in chain if kind == "template")
        assert (chain[-1][1] if chain[-1][0] == "principal" else None) == agent.principal
    assert (f1.parents >= 0).any()
    assert (f1.users < 0).any()
    req = Requests(per_agent_per_minute=1, action_skew=1.2, agent_skew=0.5)
    pool = gen.resource_pool(4)
    r1 = gen.draw_requests(e1.actions, pool, len(f1), 1_000, req, 5, True)
    r2 = gen.draw_requests(e1.actions, pool, len(f1), 1_000, req, 5, True)
    assert r1.agents.tolist() == r2.agents.tolist()
    assert r1.resources == r2.resources
    assert r1.context(3) == r2.context(3)
    skewed = np.bincount(r1.action_ids, minlength=len(e1.actions))
    assert skewed.max() > 3 * 1_000 / len(e1.actions)  # Zipf: the top action far above uniform


# ------------------------------------------------------------ the plan


def test_plan_arithmetic_against_a_hand_computed_reference() -> None:
    # 10,000 agents x 6/min = 1,000 decisions/s; 2 us each = 0.002 core-s/s;
    # churn 5/s x 40 us = 0.0002; busy 0.0022; / 0.7 = 0.0031428...
    # memory: (50 MiB + 10,000 x 300 B) / 0.7; processes: 1,000 / (100,000 x 0.7) -> 1.
    p = plan(
        PlanInputs(
            agents=10_000,
            per_agent_per_minute=6,
            churn_per_second=5,
            cpu_s_per_decision=2e-6,
            cpu_s_per_churn=40e-6,
            base_bytes=50 * 2**20,
            bytes_per_agent=300,
            headroom=0.3,
            decisions_per_s_per_process=100_000,
            audit_bytes_per_decision=250,
        )
    )
    assert p.demand_per_s == pytest.approx(1_000)
    assert p.busy_cores == pytest.approx(0.0022)
    assert p.cores == pytest.approx(0.0022 / 0.7)
    assert p.whole_cores == 1
    assert p.memory_bytes == pytest.approx((50 * 2**20 + 3_000_000) / 0.7)
    assert p.memory_gib == pytest.approx((50 * 2**20 + 3_000_000) / 0.7 / 2**30)
    assert p.processes == 1
    assert p.audit_bytes_per_s == pytest.approx(250_000)
    assert "needs 1 core(s)" in p.sentence()
    assert "30% headroom" in p.sentence()


def test_plan_rounds_up_cores_and_processes() -> None:
    # 1,000,000 agents x 12/min = 200,000/s x 10 us = 2 cores busy; / 0.5 = 4 exactly (not 5).
    base = {
        "agents": 1_000_000,
        "per_agent_per_minute": 12,
        "churn_per_second": 0,
        "cpu_s_per_decision": 10e-6,
        "cpu_s_per_churn": 0,
        "base_bytes": 0,
        "bytes_per_agent": 0,
        "headroom": 0.5,
        "decisions_per_s_per_process": 70_000,
    }
    p = plan(PlanInputs(**base))  # type: ignore[arg-type]
    assert p.cores == pytest.approx(4.0)
    assert p.whole_cores == 4
    assert p.processes == math.ceil(200_000 / 35_000) == 6
    assert plan(PlanInputs(**{**base, "cpu_s_per_decision": 10.1e-6})).whole_cores == 5  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="headroom"):
        plan(PlanInputs(**{**base, "headroom": 1.0}))  # type: ignore[arg-type]


def test_latency_summaries() -> None:
    samples = np.arange(1, 1001, dtype=np.int64)
    got = percentiles(samples)
    assert got["p50"] == pytest.approx(500.5)
    assert got["max"] == 1000
    cdf = cdf_points(samples, points=50)
    assert cdf[0] == (1.0, 0.001)
    assert cdf[-1] == (1000.0, 1.0)
    assert all(a[0] <= b[0] and a[1] < b[1] for a, b in itertools.pairwise(cdf))
    assert percentiles([]) == {}


def test_audit_helpers_without_an_audit_trail(tmp_path: Path) -> None:
    assert not audit.enable(object(), tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "f").write_bytes(b"x" * 100)
    (tmp_path / "b" / "g").write_bytes(b"x" * 23)
    assert audit.directory_bytes(tmp_path) == 123


def test_server_cpu_is_read_from_proc() -> None:
    total = 0.0
    for _ in range(200_000):
        total += 1.0
    assert _process_cpu(os.getpid()) > 0.0
    assert _process_cpu(2**22 + 12345) == 0.0  # no such process


# ------------------------------------------------------------ the peers' translations


@settings(max_examples=200, deadline=None)
@given(
    pattern=st.lists(st.sampled_from(["a", "b", "*", "**"]), min_size=1, max_size=4),
    name=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=5),
)
def test_resource_pattern_regexes_match_the_reference(pattern: list[str], name: list[str]) -> None:
    assert peers.pattern_matches("/".join(pattern), "/".join(name)) == segments_match(pattern, name)


def _translation_workload(seed: int, roles: int, depth: int) -> tuple[Any, ...]:
    g = Generate(
        roles=roles,
        depth=depth,
        denies=min(roles, 4),
        scoped_share=0.3,
        wildcard_share=0.2,
        users=6,
        templates=4,
    )
    policy = gen.rbac_core(gen.generate_policy(g, seed))
    engine = gen.compile_policy(policy, generated=True)
    fleet = gen.provision_fleet(
        engine, policy, Agents(count=40, sub_agent_share=0.3, for_nobody_share=0.1), seed
    )
    pool = gen.resource_pool(g.resource_classes)
    reqs = gen.draw_requests(
        engine.actions, pool, len(fleet), 400, Requests(per_agent_per_minute=1), seed, False
    )
    cases = []
    for i in range(len(reqs)):
        a = int(reqs.agents[i])
        action = reqs.action_names[int(reqs.action_ids[i])]
        resource = reqs.resources[i]
        want = engine.check(int(fleet.handles[a]), action, resource).allowed
        cases.append((fleet.chain(a), action, resource, want))
    return policy, pool, cases


@pytest.mark.parametrize("peer", ["casbin", "cedar"])
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31), roles=st.integers(3, 16), depth=st.integers(1, 3))
def test_translations_decide_as_charter_on_random_requests(
    peer: str, seed: int, roles: int, depth: int
) -> None:
    pytest.importorskip("casbin" if peer == "casbin" else "cedarpy")
    policy, pool, cases = _translation_workload(seed, roles, depth)
    engine = peers.CasbinPeer(policy) if peer == "casbin" else peers.CedarPeer(policy, pool)
    assert any(want for *_, want in cases)
    assert not all(want for *_, want in cases)
    for chain, action, resource, want in cases:
        assert engine.decide(chain, action, resource) == want, (chain, action, resource)
    batch = engine.decide_batch([c[0] for c in cases], [c[1] for c in cases], [c[2] for c in cases])
    assert batch == [c[3] for c in cases]


def test_rbac_core_drops_whole_conditional_entries() -> None:
    policy = gen.generate_policy(Generate(conditions=0.5, hooks=0.3, guards=2, rate="5/s"), 9)
    core = gen.rbac_core(policy)
    assert not gen.reads_context(core)
    assert "quotas" not in core
    assert "guards" not in core
    for name, role in core["roles"].items():
        kept = [
            e
            for e in policy["roles"][name]["allow"]
            if not (isinstance(e, dict) and ("when" in e or "hook" in e))
        ]
        assert role["allow"] == kept
    gen.compile_policy(core, generated=True)


# ------------------------------------------------------------ the command


def test_quick_run_end_to_end_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = cli.main(["bench", "small-team", "--quick", "--quiet", "--no-plots", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["machine"]["usable_cores"] >= 1
    assert results["machine"]["build_profile"] == charter.BUILD_PROFILE
    (scenario,) = results["scenarios"]
    assert scenario["scenario"] == "small-team"
    assert scenario["quick"] is True
    assert set(scenario["paths"]) == {"single", "batch", "socket"}
    for path in scenario["paths"].values():
        assert path["decisions"] > 0
        assert path["decisions_per_s"] > 0
        assert path["latency_ns"]["p50"] <= path["latency_ns"]["p99"] <= path["latency_ns"]["max"]
        assert 0.0 <= path["allowed_share"] <= 1.0
    assert scenario["socket"]["agreed_with_in_process"] == scenario["socket"]["verified_requests"] > 0
    assert scenario["socket"]["server_exit_code"] == 0
    assert scenario["memory"]["bytes_per_agent_used"] > 0
    for name, p in scenario["plan"].items():
        assert p["whole_cores"] >= 1, name
        assert p["demand_per_s"] == pytest.approx(50 * 20 / 60)
    assert "this fleet needs" in printed
    assert (out / "report.txt").read_text().startswith("charter bench on")


def test_cli_paths_override_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    args = ["bench", "small-team", "--quick", "--quiet", "--no-plots", "--paths", "single", "--out", str(out)]
    assert cli.main(args) == 0
    assert set(json.loads((out / "results.json").read_text())["scenarios"][0]["paths"]) == {"single"}
    assert cli.main(["bench", "small-team", "--paths", "tcp", "--out", str(out)]) == 2
    assert cli.main(["bench", "nope", "--out", str(out)]) == 2
    assert cli.main(["bench", "--out", str(out)]) == 2
    assert "shipped:" in capsys.readouterr().err
    assert cli.main(["bench", "--list"]) == 0
    assert "ephemeral-1m" in capsys.readouterr().out
