"""Capacity scenarios: the TOML a `charter bench` run is described by, decoded and checked with msgspec.

A scenario names a policy (a file, or the parameters of the seeded
generator), an agent population and its churn, the request mix and rate,
and how to run it (paths, sizes, audit, headroom). Every problem is a
`ScenarioError` naming the file and the key, before anything runs.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from charter.errors import CharterError, PolicyError
from charter.policy import parse_duration

__all__ = [
    "PATHS",
    "Agents",
    "Generate",
    "PolicySpec",
    "Requests",
    "Run",
    "Scenario",
    "ScenarioError",
    "load",
    "shipped",
]

PathName = Literal["single", "batch", "socket"]
PATHS: tuple[PathName, ...] = ("single", "batch", "socket")
"""How decisions are asked: one `check` call each, `check_batch`, or over the server's socket."""

SCENARIOS_DIR = Path(__file__).parent / "scenarios"

Share = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
Count = Annotated[int, msgspec.Meta(ge=0)]


class ScenarioError(CharterError, ValueError):
    """A scenario file is malformed; `path` is the key (`agents.count`), `source` the file."""

    def __init__(self, message: str, *, path: str | None = None, source: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.source = source

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.source, self.path) if p)
        return f"{where}: {self.message}" if where else self.message


class Generate(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The seeded policy generator's parameters (`[policy.generate]`)."""

    tools: Positive = 8
    """Actions are `tools` x `verbs` (`t03:read`, ...)."""
    verbs: Annotated[int, msgspec.Meta(ge=1, le=16)] = 6
    roles: Positive = 12
    depth: Annotated[int, msgspec.Meta(ge=1, le=8)] = 3
    """Levels of role inheritance (a role of level L inherits one or two roles of lower levels)."""
    allows_per_role: Annotated[int, msgspec.Meta(ge=1)] = 5
    """Allow entries per role, on average (each role gets between half and twice as many)."""
    wildcard_share: Share = 0.15
    """Share of allow entries that are `tool:*` patterns."""
    scoped_share: Share = 0.1
    """Share of allow entries limited to resource patterns (`on = [...]`)."""
    denies: Count = 2
    """Deny entries, on distinct random roles."""
    scoped_deny_share: Share = 0.5
    """Share of the denies limited to resource patterns."""
    resource_classes: Positive = 4
    conditions: Share = 0.0
    """Share of allow entries with a `when` over the request's context (`context.amount <= N`)."""
    hooks: Share = 0.0
    """Share of allow entries consulting the Python hook `bench_risk` (see `charter.capacity.hooks`)."""
    guards: Count = 0
    """Policy-wide guards requiring a ticket (`context.ticket`) on a resource class."""
    users: Positive = 20
    templates: Positive = 5
    rate: str | None = None
    """A per-agent quota rate (e.g. `"50/s"`) given to every template; none by default."""


class PolicySpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """`[policy]`: `file` (relative to the scenario) or `[policy.generate]`, not both."""

    file: str | None = None
    generate: Generate | None = None


class Agents(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """`[agents]`: the live population and how fast it turns over."""

    count: Positive
    templates: list[str] = []
    """Templates to provision (default: every template of the policy)."""
    users: list[str] = []
    """Principals the agents act for (default: every principal of the policy)."""
    sub_agent_share: Share = 0.0
    """Share of agents that are sub-agents of an earlier agent (a delegation chain two agents deep)."""
    for_nobody_share: Share = 0.0
    """Share of agents acting for no principal."""
    ttl: float | str | None = None
    """Lifetime given at provisioning (the agents do not expire during a run)."""
    lifetime: float | str | None = None
    """How long an agent lives on average: churn = count / lifetime provisions (and expiries) a second."""
    churn_per_second: Annotated[float, msgspec.Meta(ge=0.0)] | None = None
    """Provisions (and expiries) a second, instead of `lifetime`."""


class Requests(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """`[requests]`: what the agents ask, and how often."""

    per_agent_per_minute: Annotated[float, msgspec.Meta(gt=0.0)]
    resource_share: Share = 0.5
    """Share of requests naming a resource (from a pool matching the policy's patterns, or not)."""
    action_skew: Annotated[float, msgspec.Meta(ge=0.0, le=4.0)] = 0.0
    """Zipf exponent of action popularity (0 = uniform)."""
    agent_skew: Annotated[float, msgspec.Meta(ge=0.0, le=4.0)] = 0.0
    """Zipf exponent of agent activity (0 = every agent as busy as the others)."""


class Run(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """`[run]`: how the scenario is measured and what the plan aims for."""

    paths: list[PathName] = msgspec.field(default_factory=lambda: ["single", "batch", "socket"])
    decisions: Annotated[int, msgspec.Meta(ge=100)] = 200_000
    """Single-call decisions measured (the latency pass times a share of them one by one)."""
    batch_size: Positive = 1_000
    batches: Positive = 200
    socket_clients: Annotated[int, msgspec.Meta(ge=1, le=256)] = 4
    socket_inflight: Annotated[int, msgspec.Meta(ge=1, le=128)] = 1
    socket_decisions: Annotated[int, msgspec.Meta(ge=100)] = 50_000
    socket_agents: Positive = 10_000
    """At most this many agents are provisioned in the server (over its admin socket)."""
    churn_ops: Positive = 20_000
    """Provision + deprovision pairs measured for the churn cost."""
    audit: bool = False
    headroom: Annotated[float, msgspec.Meta(ge=0.0, lt=1.0)] = 0.3
    """Share of capacity left free at the planned load (0.3: plan for 70% utilisation)."""


class Scenario(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One capacity scenario. Build it with `load` (a file) or `from_dict`."""

    name: str
    policy: PolicySpec
    agents: Agents
    requests: Requests
    description: str = ""
    seed: int = 1
    run: Run = msgspec.field(default_factory=Run)
    source: str | None = None
    """Where it was read from (set by `load`; relative policy files are found beside it)."""

    @property
    def churn_per_second(self) -> float:
        """Provisions (and as many expiries) a second at the scenario's fleet size."""
        a = self.agents
        if a.churn_per_second is not None:
            return a.churn_per_second
        if a.lifetime is None:
            return 0.0
        return a.count / parse_duration(a.lifetime, "agents.lifetime")

    @property
    def demand_per_second(self) -> float:
        """Decisions a second the whole fleet asks for."""
        return self.agents.count * self.requests.per_agent_per_minute / 60.0

    def policy_path(self) -> Path | None:
        """The policy file, resolved against the scenario's directory."""
        if self.policy.file is None:
            return None
        path = Path(self.policy.file)
        if not path.is_absolute() and self.source is not None:
            path = Path(self.source).parent / path
        return path

    def quick(self) -> Scenario:
        """A much smaller run of the same scenario, for tests and CI (its figures are not for planning)."""
        r = self.run
        run = msgspec.structs.replace(
            r,
            decisions=min(r.decisions, 5_000),
            batches=min(r.batches, 10),
            batch_size=min(r.batch_size, 500),
            socket_decisions=min(r.socket_decisions, 2_000),
            socket_agents=min(r.socket_agents, 200),
            socket_clients=min(r.socket_clients, 2),
            churn_ops=min(r.churn_ops, 500),
        )
        agents = msgspec.structs.replace(self.agents, count=min(self.agents.count, 2_000))
        return msgspec.structs.replace(self, run=run, agents=agents)


def from_dict(data: dict[str, Any], *, source: str | None = None) -> Scenario:
    """Validate a scenario given as a dict (the TOML's structure)."""
    if "source" in data:
        raise ScenarioError("unknown field `source`", source=source)
    try:
        scenario = msgspec.convert(data, Scenario)
    except msgspec.ValidationError as err:
        message, _, path = str(err).partition(" - at `$.")
        raise ScenarioError(message, path=path.rstrip("`") or None, source=source) from None
    scenario = msgspec.structs.replace(scenario, source=source)
    _check(scenario)
    return scenario


def _check(s: Scenario) -> None:
    """What the schema alone cannot say."""

    def fail(message: str, path: str) -> ScenarioError:
        return ScenarioError(message, path=path, source=s.source)

    if not s.name.strip():
        raise fail("a scenario needs a name", "name")
    if (s.policy.file is None) == (s.policy.generate is None):
        raise fail("give either `file` or `[policy.generate]`", "policy")
    path = s.policy_path()
    if path is not None and not path.is_file():
        raise fail(f"no policy file `{path}`", "policy.file")
    a = s.agents
    if a.lifetime is not None and a.churn_per_second is not None:
        raise fail("give `lifetime` or `churn_per_second`, not both", "agents")
    for key in ("ttl", "lifetime"):
        value = getattr(a, key)
        if value is not None:
            try:
                parse_duration(value, f"agents.{key}")
            except PolicyError as err:
                raise fail(err.message, f"agents.{key}") from None
    if a.sub_agent_share + a.for_nobody_share > 1.0:
        raise fail("sub_agent_share + for_nobody_share is more than 1", "agents")
    if len(set(s.run.paths)) != len(s.run.paths) or not s.run.paths:
        raise fail("list each path once, at least one of `single`, `batch`, `socket`", "run.paths")
    g = s.policy.generate
    if g is not None:
        if g.depth > g.roles:
            raise fail(f"{g.depth} inheritance levels need at least {g.depth} roles", "policy.generate.depth")
        if g.denies > g.roles:
            raise fail("more denies than roles (one deny per role)", "policy.generate.denies")
        if g.wildcard_share + g.scoped_share > 1.0:
            raise fail("wildcard_share + scoped_share is more than 1", "policy.generate")


def from_toml(text: str, *, source: str | None = None) -> Scenario:
    """Validate a scenario given as TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(f"not valid TOML: {err}", source=source) from None
    return from_dict(data, source=source)


def load(name_or_path: str | os.PathLike[str]) -> Scenario:
    """A shipped scenario by name (`small-team`, ...) or a scenario file."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = SCENARIOS_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            names = ", ".join(shipped())
            raise ScenarioError(f"no shipped scenario `{name_or_path}` (shipped: {names})")
    try:
        text = path.read_text()
    except OSError as err:
        raise ScenarioError(f"cannot read the scenario: {err.strerror or err}", source=str(path)) from None
    return from_toml(text, source=str(path))


def shipped() -> list[str]:
    """The names of the scenarios shipped with the package."""
    return sorted(p.stem for p in SCENARIOS_DIR.glob("*.toml"))
