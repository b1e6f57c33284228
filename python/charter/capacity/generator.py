"""The seeded workload: a generated policy, the agent fleet provisioned from it, and the requests.

Everything is drawn from `numpy.random.default_rng(seed)`: one seed gives
the same policy document, the same agents (handles too: slots are allocated
in order on a fresh engine) and the same requests every run.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from charter import _core
from charter.capacity.scenario import Agents, Generate, Requests
from charter.engine import Engine
from charter.policy import parse_duration

__all__ = [
    "VERBS",
    "Fleet",
    "RequestSet",
    "compile_policy",
    "draw_requests",
    "generate_policy",
    "pool_for_policy",
    "provision_fleet",
    "rbac_core",
    "reads_context",
    "resource_pool",
]

VERBS = (
    "read", "list", "search", "create", "update", "delete", "export", "admin",
    "approve", "send", "run", "stop", "grant", "revoke", "pay", "refund",
)  # fmt: skip

TICKET_RULE = 'has context.ticket and context.ticket.startswith("T-")'
HOOK_NAME = "bench_risk"


def _rng(seed: int, stream: int) -> np.random.Generator:
    """Independent streams per purpose, so changing one part of a scenario leaves the others' draws alone."""
    return np.random.default_rng([seed, stream])


def resource_pool(n_classes: int) -> list[str]:
    """Resource names: some in each class (`c3/17`, `shared/c3/5/x`), some in none (`c3/17/deep`, `misc/2`)."""
    pool: list[str] = []
    for k in range(n_classes):
        for i in range(4):
            pool += [f"c{k}/{i}", f"shared/c{k}/{i}/x", f"c{k}/{i}/deep"]
    pool += [f"misc/{i}" for i in range(max(4, n_classes))]
    return pool


def _classes(n_classes: int) -> dict[str, list[str]]:
    return {f"c{k}": [f"c{k}/*", f"shared/c{k}/**"] for k in range(n_classes)}


def _level_sizes(roles: int, depth: int) -> list[int]:
    """Roles per inheritance level, most at the bottom, every level at least one."""
    weights = np.arange(depth, 0, -1, dtype=float)
    sizes = np.maximum(1, np.floor(weights / weights.sum() * roles)).astype(int)
    sizes[0] += roles - int(sizes.sum())
    return [int(s) for s in sizes]


def generate_policy(g: Generate, seed: int) -> dict[str, Any]:
    """The policy document (dict form, the TOML's structure) the generator's parameters describe."""
    rng = _rng(seed, 1)
    tools = [f"t{i:02d}" for i in range(g.tools)]
    actions = [f"{t}:{v}" for t in tools for v in VERBS[: g.verbs]]
    classes = _classes(g.resource_classes)
    class_refs = [f"@{c}" for c in classes]
    patterns = [p for ps in classes.values() for p in ps]

    def pick(seq: Sequence[str]) -> str:
        return seq[int(rng.integers(len(seq)))]

    def scope() -> list[str]:
        return [pick(class_refs)] if rng.random() < 0.7 else [pick(patterns)]

    levels: list[list[str]] = []
    names: list[str] = []
    for size in _level_sizes(g.roles, g.depth):
        levels.append([f"r{len(names) + i:03d}" for i in range(size)])
        names += levels[-1]

    roles: dict[str, dict[str, Any]] = {}
    for depth, level in enumerate(levels):
        for name in level:
            role: dict[str, Any] = {}
            if depth > 0:
                parents = [pick(levels[depth - 1])]
                lower = [r for lv in levels[:depth] for r in lv if r not in parents]
                if lower and rng.random() < 0.5:
                    parents.append(pick(lower))
                role["inherits"] = parents
            n = int(rng.integers(max(1, g.allows_per_role // 2), 2 * g.allows_per_role + 1))
            allow: list[Any] = []
            for _ in range(n):
                u = rng.random()
                entry: dict[str, Any]
                if u < g.wildcard_share:
                    entry = {"action": f"{pick(tools)}:*"}
                elif u < g.wildcard_share + g.scoped_share:
                    entry = {"action": pick(actions), "on": scope()}
                else:
                    entry = {"action": pick(actions)}
                if rng.random() < g.conditions:
                    entry["when"] = f"context.amount <= {int(rng.integers(1, 11)) * 100}"
                if rng.random() < g.hooks:
                    entry["hook"] = HOOK_NAME
                allow.append(entry["action"] if len(entry) == 1 else entry)
            role["allow"] = allow
            roles[name] = role

    for name in rng.choice(np.array(names), size=g.denies, replace=False):
        entry = {"action": pick(actions)}
        if rng.random() < g.scoped_deny_share:
            entry["on"] = scope()
        roles[str(name)]["deny"] = [entry["action"] if len(entry) == 1 else entry]

    def some_roles() -> list[str]:
        k = int(rng.integers(1, min(3, len(names)) + 1))
        return [str(r) for r in rng.choice(np.array(names), size=k, replace=False)]

    doc: dict[str, Any] = {
        "actions": actions,
        "resources": classes,
        "roles": roles,
        "principals": {f"user:{i:04d}": {"roles": some_roles()} for i in range(g.users)},
        "templates": {f"tpl-{i:02d}": {"roles": some_roles()} for i in range(g.templates)},
    }
    if g.rate is not None:
        doc["quotas"] = {"bench": {"rate": g.rate}}
        for t in doc["templates"].values():
            t["quota"] = "bench"
    if g.guards:
        doc["guards"] = [
            {
                "on": [class_refs[i % len(class_refs)]],
                "actions": [f"{tools[i % len(tools)]}:*"],
                "require": TICKET_RULE,
                "reason": "changes here need a ticket (context.ticket = T-...)",
            }
            for i in range(g.guards)
        ]
    return doc


def compile_policy(policy: dict[str, Any], *, generated: bool, hooks: bool = True) -> Engine:
    """An engine for the workload's policy, with the bench's hooks it names.

    A generated policy is random by design (an allow a deny always beats,
    a role nobody holds), so the policy linter's warnings about it are
    silenced; a policy file is linted as usual, and hooks it names that the
    bench does not have make decisions reaching them `hook_error`.
    """
    from charter.capacity.hooks import hooks_named

    named = hooks_named(policy) if hooks else {}
    if not generated:
        return Engine.from_dict(policy, hooks=named, allow_missing_hooks=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Engine.from_dict(policy, hooks=named)


def reads_context(policy: dict[str, Any]) -> bool:
    """Whether any entry or guard of the policy can read the request's context (conditions, hooks)."""
    if policy.get("guards"):
        return True
    for role in policy.get("roles", {}).values():
        for entry in (*role.get("allow", ()), *role.get("deny", ())):
            if isinstance(entry, dict) and ("when" in entry or "hook" in entry):
                return True
    return False


def rbac_core(policy: dict[str, Any]) -> dict[str, Any]:
    """The policy without what peers cannot be given the same way: conditions, hooks, guards, quotas.

    An entry with a `when` or a `hook` is dropped whole (dropping only its
    condition would widen an allow).
    """

    def plain(entries: list[Any]) -> list[Any]:
        return [e for e in entries if not (isinstance(e, dict) and ("when" in e or "hook" in e))]

    roles = {
        name: {**role, "allow": plain(role.get("allow", [])), "deny": plain(role.get("deny", []))}
        for name, role in policy.get("roles", {}).items()
    }
    templates = {
        name: {k: v for k, v in t.items() if k not in ("quota", "breaker")}
        for name, t in policy.get("templates", {}).items()
    }
    principals = {
        name: {k: v for k, v in p.items() if k != "quota"} for name, p in policy.get("principals", {}).items()
    }
    out = {k: v for k, v in policy.items() if k not in ("guards", "quotas", "costs")}
    return {**out, "roles": roles, "templates": templates, "principals": principals}


# ------------------------------------------------------------ the fleet


@dataclass
class Fleet:
    """The provisioned agents, by index: handle, template, delegator agent (-1) and principal (-1)."""

    template_names: list[str]
    user_names: list[str]
    handles: npt.NDArray[np.uint64] = field(default_factory=lambda: np.zeros(0, np.uint64))
    templates: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))
    parents: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    users: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.handles)

    def chain(self, i: int) -> list[tuple[str, str]]:
        """Agent `i`'s levels as (kind, name): its template, each delegator's, then its principal."""
        levels: list[tuple[str, str]] = []
        while i >= 0:
            levels.append(("template", self.template_names[int(self.templates[i])]))
            user = int(self.users[i])
            i = int(self.parents[i])
            if i < 0 and user >= 0:
                levels.append(("principal", self.user_names[user]))
        return levels


def provision_fleet(
    engine: _core.Engine,
    policy: dict[str, Any],
    spec: Agents,
    seed: int,
    count: int | None = None,
    checkpoints: Sequence[int] = (),
    on_checkpoint: Callable[[Fleet], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Fleet:
    """Provision `count` (default `spec.count`) agents as the scenario describes.

    `on_checkpoint(fleet_so_far)` runs when the fleet reaches each count in
    `checkpoints` (e.g. to sample throughput as the registry grows).
    """
    n = spec.count if count is None else count
    rng = _rng(seed, 2)
    template_names = list(spec.templates or policy.get("templates", {}))
    user_names = list(spec.users or policy.get("principals", {}))
    if not template_names:
        raise ValueError("the policy has no templates to provision agents from")
    ttl = None if spec.ttl is None else parse_duration(spec.ttl, "agents.ttl")
    kinds = rng.random(n)
    tpl = rng.integers(len(template_names), size=n).astype(np.int32)
    users = rng.integers(len(user_names), size=n) if user_names else np.full(n, -1)
    picks = rng.random(n)
    parents = np.full(n, -1, dtype=np.int64)
    owners = np.full(n, -1, dtype=np.int64)
    handles = np.zeros(n, dtype=np.uint64)
    roots: list[int] = []  # agents that may delegate: those acting for a principal or for nobody
    fleet = Fleet(template_names, user_names)
    marks = sorted(set(checkpoints))
    provision = engine.provision
    step = max(1, n // 200)
    for i in range(n):
        template = template_names[tpl[i]]
        if roots and kinds[i] < spec.sub_agent_share:
            parent = roots[int(picks[i] * len(roots))]
            parents[i] = parent
            agent = provision(template, on_behalf_of=int(handles[parent]), ttl=ttl)
        elif not user_names or kinds[i] < spec.sub_agent_share + spec.for_nobody_share:
            agent = provision(template, ttl=ttl)
            roots.append(i)
        else:
            owners[i] = users[i]
            agent = provision(template, on_behalf_of=user_names[users[i]], ttl=ttl)
            roots.append(i)
        handles[i] = agent.handle
        if marks and i + 1 == marks[0]:
            marks.pop(0)
            if on_checkpoint is not None:
                on_checkpoint(_view(fleet, handles, tpl, parents, owners, i + 1))
        if progress is not None and (i + 1) % step == 0:
            progress(i + 1)
    return _view(fleet, handles, tpl, parents, owners, n)


def _view(
    fleet: Fleet,
    handles: npt.NDArray[np.uint64],
    tpl: npt.NDArray[np.int32],
    parents: npt.NDArray[np.int64],
    owners: npt.NDArray[np.int64],
    n: int,
) -> Fleet:
    return Fleet(fleet.template_names, fleet.user_names, handles[:n], tpl[:n], parents[:n], owners[:n])


# ------------------------------------------------------------ requests


@dataclass
class RequestSet:
    """`n` requests by column: agent index, action name and id, resource (or None), context (or None)."""

    agents: npt.NDArray[np.int64]
    action_ids: npt.NDArray[np.uint32]
    action_names: list[str]
    resources: list[str | None]
    amounts: npt.NDArray[np.int64] | None
    tickets: list[str] | None

    def __len__(self) -> int:
        return len(self.agents)

    def context(self, k: int) -> dict[str, Any] | None:
        if self.amounts is None or self.tickets is None:
            return None
        return {"amount": int(self.amounts[k]), "ticket": self.tickets[k]}

    def context_columns(self, lo: int, hi: int) -> dict[str, Any] | None:
        """The context of requests lo..hi as `check_batch` columns."""
        if self.amounts is None or self.tickets is None:
            return None
        return {"amount": self.amounts[lo:hi], "ticket": self.tickets[lo:hi]}


def _zipf_choice(rng: np.random.Generator, n: int, size: int, skew: float) -> npt.NDArray[np.int64]:
    if skew <= 0:
        return rng.integers(n, size=size)
    weights = 1.0 / np.arange(1, n + 1) ** skew
    ranks = rng.choice(n, size=size, p=weights / weights.sum())
    return rng.permutation(n)[ranks]  # popularity is not tied to the index


def draw_requests(
    actions: Sequence[str],
    pool: Sequence[str],
    fleet_size: int,
    n: int,
    spec: Requests,
    seed: int,
    with_context: bool,
    stream: int = 3,
) -> RequestSet:
    """`n` requests over agents `0..fleet_size-1` (the agent and action mixes of `spec`)."""
    rng = _rng(seed, stream)
    agents = _zipf_choice(rng, fleet_size, n, spec.agent_skew)
    idx = _zipf_choice(rng, len(actions), n, spec.action_skew)
    has_resource = rng.random(n) < spec.resource_share
    picks = rng.integers(len(pool), size=n)
    resources = [pool[int(k)] if r else None for k, r in zip(picks, has_resource, strict=True)]
    amounts = tickets = None
    if with_context:
        amounts = rng.integers(0, 1_200, size=n).astype(np.int64)
        good = rng.random(n) < 0.9
        tickets = [("T-" if ok else "X-") + str(i % 1000) for i, ok in enumerate(good)]
    return RequestSet(
        agents.astype(np.int64),
        idx.astype(np.uint32),
        list(actions),
        resources,
        amounts,
        tickets,
    )


def zipf_share_of_top(n: int, skew: float, top: int) -> float:
    """The share of requests the `top` busiest of `n` items get (for reporting the skew)."""
    if skew <= 0:
        return min(top, n) / n
    weights = 1.0 / np.arange(1, n + 1) ** skew
    return float(weights[: min(top, n)].sum() / weights.sum())


def pool_for_policy(policy: dict[str, Any], limit: int = 64) -> list[str]:
    """Resource names for a policy file: each pattern it uses made concrete, and a variant matching none."""
    patterns: list[str] = [p for ps in policy.get("resources", {}).values() for p in ps]
    for role in policy.get("roles", {}).values():
        for entry in (*role.get("allow", ()), *role.get("deny", ())):
            if isinstance(entry, dict):
                patterns += [p for p in entry.get("on") or () if not p.startswith("@")]
    for guard in policy.get("guards", ()):
        patterns += [p for p in guard.get("on") or () if not p.startswith("@")]
    pool: list[str] = []
    for i, pattern in enumerate(dict.fromkeys(patterns)):
        concrete = "/".join("a/b" if s == "**" else f"x{i}" if s == "*" else s for s in pattern.split("/"))
        pool += [concrete, f"zz/{concrete}"]
    return list(dict.fromkeys(pool))[:limit] or ["misc/0"]
