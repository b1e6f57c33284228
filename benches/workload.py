"""The benchmark workload: a seeded, synthetic but realistic-sized deployment.

- 256 actions: 32 tools x 8 verbs (`tool07:read`, ...).
- 64 roles in 6 inheritance levels (level 0 has no parents; a role of level L
  inherits one role of level L-1 and, half the time, a second role of any
  lower level: multiple inheritance, chains up to 6 roles deep).
  Each role allows 3-8 entries: mostly exact action names, ~15% `tool:*`
  wildcards, ~8% resource-scoped (`on = [...]`).
- 16 unscoped deny entries, one each on 16 different roles.
- 1,000 users (`user:0000`...) with 1-3 roles each.
- 100 templates (`tpl-000`...) with 1-3 roles each, no TTL.
- 10,000 agents (`agent-00000`...): half provisioned on behalf of a user,
  half with no delegator; template drawn uniformly.

Everything is drawn from `numpy.random.default_rng(seed)`, so one seed gives
the same policy, agents and requests every run (agent handles are the same
too: slots are allocated in order on a fresh engine).

The baseline structures (what a hand-written Python/numpy authorizer would
precompute) are derived from the engine itself with `engine.check`, once.

The module also holds the little result registry the tests fill and
`conftest.py` prints as the end-of-session summary.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

import charter

SEED = 20_240_917

N_TOOLS = 32
VERBS = ("read", "list", "search", "create", "update", "delete", "export", "admin")
LEVEL_SIZES = (16, 14, 12, 10, 7, 5)  # roles per inheritance level: 64 roles, 6 deep
N_DENIES = 16
N_USERS = 1_000
N_TEMPLATES = 100
N_AGENTS = 10_000

WILDCARD_SHARE = 0.15
SCOPED_SHARE = 0.08

RESOURCE_CLASSES = {
    "shared": ["proj/*/shared/**"],
    "public": ["pub/**", "proj/*/readme"],
}
SCOPES = (["@shared"], ["@public"], ["proj/*/docs/**"], ["tmp/*", "@public"])


def action_names() -> list[str]:
    """The 256 declared actions, in declaration (= id) order."""
    return [f"tool{t:02d}:{v}" for t in range(N_TOOLS) for v in VERBS]


def resource_pool() -> list[str]:
    """64 resource names: some match the scoped entries' patterns, some match nothing."""
    out: list[str] = []
    for i in range(8):
        out += [
            f"proj/{i}/docs/d{i}",
            f"proj/{i}/docs/sub/d{i}.md",
            f"proj/{i}/shared/s{i}",
            f"proj/{i}/readme",
            f"pub/p{i}",
            f"tmp/t{i}",
            f"other/{i}/x",
            f"proj/{i}/secret/k{i}",
        ]
    return out


# ---------------------------------------------------------------- the policy


def make_policy(seed: int = SEED) -> dict[str, Any]:
    """The policy document (dict form, same structure as the TOML file)."""
    rng = np.random.default_rng(seed)
    actions = action_names()
    tools = [f"tool{t:02d}" for t in range(N_TOOLS)]

    # Roles, level by level. `level_of[name]` is the role's depth (0-based).
    names: list[str] = []
    level_of: dict[str, int] = {}
    by_level: list[list[str]] = []
    for level, size in enumerate(LEVEL_SIZES):
        row = [f"r{len(names) + i:02d}" for i in range(size)]
        by_level.append(row)
        for n in row:
            level_of[n] = level
        names += row

    roles: dict[str, dict[str, Any]] = {}
    for name in names:
        level = level_of[name]
        role: dict[str, Any] = {}
        if level > 0:
            parents = [str(rng.choice(by_level[level - 1]))]
            if rng.random() < 0.5:
                lower = [r for lv in by_level[:level] for r in lv if r not in parents]
                parents.append(str(rng.choice(lower)))
            role["inherits"] = parents
        allow: list[Any] = []
        seen: set[str] = set()
        for _ in range(int(rng.integers(3, 9))):
            u = rng.random()
            if u < WILDCARD_SHARE:
                key = f"{rng.choice(tools)}:*"
                entry: Any = key
            elif u < WILDCARD_SHARE + SCOPED_SHARE:
                act = str(rng.choice(actions))
                on = SCOPES[int(rng.integers(len(SCOPES)))]
                key = f"{act}@{on}"
                entry = {"action": act, "on": list(on)}
            else:
                key = str(rng.choice(actions))
                entry = key
            if key not in seen:
                seen.add(key)
                allow.append(entry)
        role["allow"] = allow
        roles[name] = role

    for name in rng.choice(names, size=N_DENIES, replace=False):
        roles[str(name)]["deny"] = [str(rng.choice(actions))]

    def some_roles() -> list[str]:
        k = int(rng.integers(1, 4))
        return [str(r) for r in rng.choice(names, size=k, replace=False)]

    principals = {f"user:{i:04d}": {"roles": some_roles()} for i in range(N_USERS)}
    templates = {f"tpl-{i:03d}": {"roles": some_roles()} for i in range(N_TEMPLATES)}
    return {
        "actions": actions,
        "resources": {k: list(v) for k, v in RESOURCE_CLASSES.items()},
        "roles": roles,
        "principals": principals,
        "templates": templates,
    }


def role_depth(policy: dict[str, Any]) -> int:
    """Longest inheritance chain, counted in roles (the generator aims for 6)."""
    roles = policy["roles"]
    memo: dict[str, int] = {}

    def depth(r: str) -> int:
        if r not in memo:
            memo[r] = 1 + max((depth(p) for p in roles[r].get("inherits", [])), default=0)
        return memo[r]

    return max(depth(r) for r in roles)


# ------------------------------------------------------------ the deployment


def build_workload(
    seed: int = SEED, n_agents: int = N_AGENTS
) -> tuple[dict[str, Any], charter.Engine, list[charter.Agent], npt.NDArray[np.uint64]]:
    """(policy dict, engine, agents, handles): the policy and a fresh engine with `n_agents` agents.

    Agent `i` has id `agent-{i:05d}`; agents with an even index act on behalf
    of a random user, the others for nobody.
    """
    policy = make_policy(seed)
    engine = charter.Engine.from_dict(policy)
    rng = np.random.default_rng(seed + 1)
    users = sorted(policy["principals"])
    templates = sorted(policy["templates"])
    tpl = rng.integers(len(templates), size=n_agents)
    usr = rng.integers(len(users), size=n_agents)
    agents = [
        engine.provision(
            templates[tpl[i]],
            on_behalf_of=users[usr[i]] if i % 2 == 0 else None,
            agent_id=f"agent-{i:05d}",
        )
        for i in range(n_agents)
    ]
    handles = np.fromiter((a.handle for a in agents), dtype=np.uint64, count=n_agents)
    return policy, engine, agents, handles


def draw_request_indices(
    n_agents: int, n_actions: int, n: int, seed: int = SEED
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.uint32]]:
    """(agent indices, action ids) of `n` requests drawn uniformly."""
    rng = np.random.default_rng(seed + 2)
    agent_idx = rng.integers(n_agents, size=n).astype(np.intp)
    action_ids = rng.integers(n_actions, size=n).astype(np.uint32)
    return agent_idx, action_ids


def draw_requests(
    handles: npt.NDArray[np.uint64], n_actions: int, n: int, seed: int = SEED
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint32]]:
    """(handles, action ids) of `n` requests drawn uniformly from the agents and actions."""
    agent_idx, action_ids = draw_request_indices(len(handles), n_actions, n, seed)
    return handles[agent_idx], action_ids


# ---------------------------------------------------------------- baselines


@dataclasses.dataclass
class Baseline:
    """What a hand-written authorizer would precompute, derived from the engine once."""

    allowed: npt.NDArray[np.bool_]  # allowed[agent_index, action_id]
    perms: dict[int, frozenset[str]]  # handle -> allowed action names
    perms_by_id: dict[str, frozenset[str]]  # agent id -> allowed action names
    principal_perms: dict[str, frozenset[str]]  # user id -> allowed action names (acting directly)


def compute_baseline(
    engine: charter.Engine, agents: Sequence[charter.Agent], principals: Sequence[str]
) -> Baseline:
    """Ask `engine.check` about every (agent, action) and (principal, action) pair, once."""
    actions = engine.actions
    check = engine.check
    allowed = np.zeros((len(agents), len(actions)), dtype=bool)
    for i, agent in enumerate(agents):
        h = agent.handle
        allowed[i] = [check(h, a).allowed for a in actions]
    names = np.array(actions, dtype=object)
    sets = [frozenset(names[row].tolist()) for row in allowed]
    return Baseline(
        allowed=allowed,
        perms={a.handle: s for a, s in zip(agents, sets, strict=True)},
        perms_by_id={a.id: s for a, s in zip(agents, sets, strict=True)},
        principal_perms={p: frozenset(a for a in actions if check(p, a).allowed) for p in principals},
    )


class DictRegistry:
    """Baseline agent registry in plain Python: rights computed at provision time, cached per chain."""

    def __init__(self, template_perms: dict[str, frozenset[str]], principal_perms: dict[str, frozenset[str]]):
        self.template_perms = template_perms
        self.principal_perms = principal_perms
        self.chains: dict[tuple[str, str], frozenset[str]] = {}
        self.agents: dict[int, tuple[str, str, str, frozenset[str]]] = {}
        self.seq = 0

    def provision(self, template: str, on_behalf_of: str) -> int:
        key = (template, on_behalf_of)
        perms = self.chains.get(key)
        if perms is None:
            perms = self.chains[key] = self.template_perms[template] & self.principal_perms[on_behalf_of]
        self.seq += 1
        h = self.seq
        self.agents[h] = (f"agt_{h:x}", template, on_behalf_of, perms)
        return h

    def deprovision(self, handle: int) -> int:
        return 1 if self.agents.pop(handle, None) is not None else 0


def template_perms(engine: charter.Engine, templates: Sequence[str]) -> dict[str, frozenset[str]]:
    """Allowed actions of each template's own level (an agent acting for nobody), via `check`."""
    out = {}
    for t in templates:
        agent = engine.provision(t)
        out[t] = frozenset(a for a in engine.actions if engine.check(agent.handle, a).allowed)
        engine.deprovision(agent)
    return out


def measure_memory(kind: str, n: int, seed: int = SEED) -> dict[str, Any]:
    """Provision `n` agents on behalf of users and measure the RSS growth per agent.

    `kind` is "engine" (charter) or "python" (`DictRegistry`). Agent `i` gets
    the `i mod 100,000`-th (template, user) pair of a shuffled list of all
    pairs, so every delegation chain exists after the first 100,000 agents:
    the growth from there to `n` is the marginal cost of an agent alone.
    Meant to run in a fresh interpreter (see test_bench_core.py).
    """
    policy = make_policy(seed)
    users, templates = sorted(policy["principals"]), sorted(policy["templates"])
    combos = [(t, u) for t in templates for u in users]
    order = np.random.default_rng(seed + 6).permutation(len(combos)).tolist()
    combos = [combos[i] for i in order]
    first = min(n, len(combos))
    engine = charter.Engine.from_dict(policy)
    prov = engine.provision
    reg = None
    if kind == "python":
        principal_perms = {p: frozenset(a for a in engine.actions if engine.check(p, a)) for p in users}
        reg = DictRegistry(template_perms(engine, templates), principal_perms)
    elif kind != "engine":
        raise ValueError(kind)

    def provision(lo: int, hi: int) -> None:
        m = len(combos)
        if reg is None:
            for i in range(lo, hi):
                t, u = combos[i % m]
                prov(t, on_behalf_of=u)
        else:
            rp = reg.provision
            for i in range(lo, hi):
                t, u = combos[i % m]
                rp(t, u)

    gc.collect()
    rss0, reg0 = rss_bytes(), engine.stats()["registry_bytes"]
    t0 = time.perf_counter()
    provision(0, first)
    gc.collect()
    rss1 = rss_bytes()
    t1 = time.perf_counter()
    provision(first, n)
    elapsed = time.perf_counter() - t1 + (t1 - t0)
    gc.collect()
    rss2 = rss_bytes()
    stats = engine.stats()
    agents = stats["agents"] if reg is None else len(reg.agents)
    chains = stats["chains"] if reg is None else len(reg.chains)
    return {
        "kind": kind,
        "agents": agents,
        "chains": chains,
        "first": first,
        "rss_before": rss0,
        "rss_after": rss2,
        "rss_per_agent": (rss2 - rss0) / n,
        "rss_marginal_per_agent": (rss2 - rss1) / (n - first) if n > first else float("nan"),
        "registry_bytes": stats["registry_bytes"],
        "registry_bytes_before": reg0,
        "registry_per_agent": stats["registry_bytes"] / n,
        "provision_per_s": n / elapsed,
    }


# ------------------------------------------------------- environment helpers


def quick() -> bool:
    """`CHARTER_BENCH_QUICK=1` shrinks every size by 10x (a smoke run of the suite)."""
    return os.environ.get("CHARTER_BENCH_QUICK", "") not in ("", "0")


def scaled(n: int) -> int:
    return max(1, n // 10) if quick() else n


def rss_bytes() -> int:
    """Resident set size of this process, from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


# ------------------------------------------------------------ result registry


@dataclasses.dataclass
class Row:
    """One line of the end-of-session summary."""

    group: str
    name: str
    median_s: float | None  # median round time; None for measurements
    figure: float  # the derived figure (ns/call, decisions/s, ...)
    unit: str
    ratio: float | None = None  # median time / the group's baseline median time
    paired: float | None = None  # median of per-pair time ratios (interleaved rounds)
    baseline: bool = False
    note: str = ""


RESULTS: list[Row] = []
NOTES: list[str] = []  # free-form lines printed under the summary header
_BASELINE_MEDIANS: dict[str, float] = {}
_BASELINE_FNS: dict[str, Callable[[], object]] = {}


def median_of(benchmark: Any) -> float | None:
    """The median round time of a finished pytest-benchmark run (None if benchmarks are disabled)."""
    stats = getattr(benchmark, "stats", None)
    if not stats:
        return None
    return float(stats.stats.median)


def paired_ratio(fn: Callable[[], object], base_fn: Callable[[], object], pairs: int) -> float:
    """Median over `pairs` back-to-back (fn, baseline) rounds of time(fn) / time(baseline).

    Each pair runs within a few milliseconds, so both sides see the same
    machine load; the order alternates so neither side always runs warm.
    """
    ratios = []
    for i in range(pairs):
        order = (fn, base_fn) if i % 2 == 0 else (base_fn, fn)
        times = {}
        for f in order:
            t0 = time.perf_counter()
            f()
            times[f] = time.perf_counter() - t0
        ratios.append(times[fn] / times[base_fn])
    return statistics.median(ratios)


def record_timing(
    benchmark: Any,
    group: str,
    name: str,
    *,
    fn: Callable[[], object],
    work: float,
    unit: str,
    per_op_ns: bool,
    baseline: bool = False,
    pairs: int = 0,
    note: str = "",
    extra: dict[str, Any] | None = None,
) -> Row | None:
    """Derive figures from the benchmark's median and store them in extra_info and the summary.

    `fn` is the function the benchmark timed (one round), `work` the number
    of operations per round. `per_op_ns` gives the figure as ns per
    operation, otherwise as operations per second. Ratios are against the
    baseline recorded earlier in the same group (baselines run first: they
    come first in each parametrization): the ratio of the two medians, and,
    if `pairs`, the paired ratio (see `paired_ratio`), which is much less
    sensitive to the machine's load changing between the two tests.
    """
    med = median_of(benchmark)
    if med is None:
        return None
    figure = med / work * 1e9 if per_op_ns else work / med
    ratio = paired = None
    if baseline:
        _BASELINE_MEDIANS[group] = med
        _BASELINE_FNS[group] = fn
    elif group in _BASELINE_MEDIANS:
        ratio = med / _BASELINE_MEDIANS[group]
        if pairs:
            paired = paired_ratio(fn, _BASELINE_FNS[group], pairs)
    info = benchmark.extra_info
    info["median_round_s"] = med
    info["ops_per_round"] = work
    info["ns_per_op" if per_op_ns else "ops_per_s"] = figure
    info["unit"] = unit
    if ratio is not None:
        info["time_ratio_vs_baseline"] = ratio
        info["speed_ratio_vs_baseline"] = 1 / ratio
    if paired is not None:
        info["paired_time_ratio_vs_baseline"] = paired
        info["paired_rounds"] = pairs
    if extra:
        info.update(extra)
    row = Row(group, name, med, figure, unit, ratio, paired, baseline, note)
    RESULTS.append(row)
    return row


def record_measurement(group: str, name: str, figure: float, unit: str, note: str = "") -> Row:
    row = Row(group, name, None, figure, unit, note=note)
    RESULTS.append(row)
    return row


def fmt_time(s: float) -> str:
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def fmt_figure(row: Row) -> str:
    v = row.figure
    if row.unit.endswith("/s"):
        for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if v >= scale:
                return f"{v / scale:.2f} {prefix}{row.unit}"
        return f"{v:.1f} {row.unit}"
    if v >= 100:
        return f"{v:,.0f} {row.unit}"
    return f"{v:.1f} {row.unit}"


def summary_lines(header: str) -> list[str]:
    """The summary table, one string per line."""
    if not RESULTS:
        return []
    w_name = max(len(r.name) for r in RESULTS) + 2
    lines = [header, *NOTES, ""]
    lines.append(f"  {'benchmark':<{w_name}}{'median':>11}  {'figure':>20}  {'vs base':>11}  {'vs base':>8}")
    lines.append(f"  {'':<{w_name}}{'':>11}  {'':>20}  {'(medians)':>11}  {'(paired)':>8}")
    group = None
    for r in RESULTS:
        if r.group != group:
            group = r.group
            lines.append(group)
        med = fmt_time(r.median_s) if r.median_s is not None else "-"
        ratio = "1.00 (base)" if r.baseline else (f"{r.ratio:.2f}x" if r.ratio is not None else "")
        paired = f"{r.paired:.2f}x" if r.paired is not None else ""
        line = f"  {r.name:<{w_name}}{med:>11}  {fmt_figure(r):>20}  {ratio:>11}  {paired:>8}"
        if r.note:
            line += f"  {r.note}"
        lines.append(line.rstrip())
    lines += [
        "",
        "vs base = engine time / baseline time for the same work (<1 = faster than the baseline).",
        "(medians): ratio of the two tests' median round times; (paired): median of time ratios",
        "over back-to-back engine/baseline rounds run right after the engine test (robust to load changes).",
    ]
    return lines


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)
