"""Property tests: the engine's decisions equal the reference model's on random policies.

Random policies (role DAGs with multiple inheritance, allow/deny entries with exact, `tool:*`
and `*` actions, `on` patterns mixing literals, `*`, `**` and `@class`), random principals and
templates, random delegation chains and random requests (declared and undeclared actions,
matching, non-matching and invalid resources) are decided by `engine.check` (by handle, by
`Agent`, by agent id, by principal id), `check_batch` and `check_batch_reasons`, and compared
with `tests/reference.py`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import charter
import reference as ref

# Random policies are full of what the linter rightly warns about (shadowed allows, templates that
# grant nothing, constant conditions): the warnings are not what these tests are about.
pytestmark = pytest.mark.filterwarnings("ignore::charter.policytools.lint.PolicyLintWarning")

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TOOLS = {"db": ["read", "write", "drop"], "fs": ["read", "write"], "net": ["get"]}
ALL_ACTIONS = [f"{tool}:{verb}" for tool, verbs in TOOLS.items() for verb in verbs]
NEVER_DECLARED = ["db:zap", "mail:send"]
LITERALS = ["a", "b", "c"]
PRINCIPALS = ["user:p0", "user:p1", "svc:p2"]
TEMPLATES = ["t0", "t1", "t2"]
INVALID_RESOURCES = ["", "/a", "a/", "a//b", "/", "a/b/", "x" * 4097, "\u00e9" * 2049]
# Names at the 4096-byte limit, one of them 2048 two-byte characters: valid.
LONG_RESOURCES = ["x" * 4096, "\u00e9" * 2048, "a/" + "b" * 4094]
GARBAGE_HANDLES = [0, 1, 12345, (7 << 32) | 3, 2**64 - 1]
START = 1_000_000.0
RULE = re.compile(r"^roles\.(?P<role>[^.]+)\.(?P<effect>allow|deny)\[(?P<index>\d+)\]$")


# --- strategies ----------------------------------------------------------------------------


@st.composite
def resource_patterns(draw: st.DrawFn, classes: Sequence[str]) -> str:
    """A resource pattern: `/`-joined literals, `*` and `**`, or a class reference."""
    if classes and draw(st.integers(0, 3)) == 0:
        return "@" + draw(st.sampled_from(classes))
    segments = draw(st.lists(st.sampled_from([*LITERALS, "*", "**"]), min_size=1, max_size=3))
    return "/".join(segments)


CONTEXT_KEYS = ["amount", "team", "flag", "tags"]
comparable_literals = st.one_of(st.integers(-2, 12), st.sampled_from(["a", "b", "ab"]), st.just(2.5))
any_literals = st.one_of(comparable_literals, st.booleans(), st.none())


def condition_trees() -> st.SearchStrategy[ref.Cond]:
    """Random `when` trees over `context.*` (see `reference.render`)."""
    key = st.sampled_from(CONTEXT_KEYS)
    atoms = st.one_of(
        st.tuples(st.just("cmp"), key, st.sampled_from(["==", "!="]), any_literals),
        st.tuples(st.just("cmp"), key, st.sampled_from(["<", "<=", ">", ">="]), comparable_literals),
        st.tuples(st.just("has"), key),
        st.tuples(
            st.just("in"),
            key,
            st.one_of(
                st.lists(st.integers(0, 9), min_size=1, max_size=3).map(tuple),
                st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=2).map(tuple),
            ),
        ),
    )
    return st.recursive(
        atoms,
        lambda inner: st.one_of(
            st.tuples(st.just("not"), inner),
            st.tuples(st.sampled_from(["and", "or"]), inner, inner),
        ),
        max_leaves=4,
    )


# Context values: the usual types, wrong types, and values that do not convert (left out).
context_values = st.one_of(
    st.integers(-3, 14),
    st.floats(-5, 15, allow_nan=False),
    st.sampled_from(["a", "b", "ab", ""]),
    st.booleans(),
    st.none(),
    st.lists(st.integers(0, 9), max_size=3),
    st.just(2**70),
    st.just(object()),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 3), max_size=2),
)
contexts = st.one_of(st.none(), st.dictionaries(st.sampled_from(CONTEXT_KEYS), context_values))


@st.composite
def entries(
    draw: st.DrawFn, actions: Sequence[str], classes: Sequence[str], deny: bool, conditions: bool = False
) -> str | dict[str, Any]:
    """An allow/deny entry: a bare action pattern, or a table with one or more actions and maybe `on`
    (denies are mostly narrowed by `on`, so that grants are not drowned)."""
    tools = sorted({a.split(":")[0] for a in actions})
    action_pattern = st.one_of(
        st.sampled_from(actions),
        st.sampled_from(actions),
        st.sampled_from([f"{t}:*" for t in tools]),
        st.just("*"),
    )
    if draw(st.integers(0, 7)) >= (7 if deny else 4):
        return draw(action_pattern)
    entry: dict[str, Any] = {}
    if draw(st.booleans()):
        entry["action"] = draw(action_pattern)
    else:
        entry["action"] = draw(st.lists(action_pattern, min_size=1, max_size=3, unique=True))
    if draw(st.integers(0, 5)) >= (1 if deny else 4):
        entry["on"] = draw(st.lists(resource_patterns(classes), min_size=1, max_size=3))
    if conditions and draw(st.integers(0, 2)) >= 1:
        entry["when"] = ref.register(draw(condition_trees()))
    return entry


@st.composite
def policies(draw: st.DrawFn, all_templates: bool = True, conditions: bool = False) -> dict[str, Any]:
    """A random valid policy over the fixed principal names and (a subset of) the template names."""
    actions = draw(st.lists(st.sampled_from(ALL_ACTIONS), min_size=2, unique=True))
    class_names = [f"c{i}" for i in range(draw(st.integers(0, 2)))]
    resources = {c: draw(st.lists(resource_patterns(()), min_size=1, max_size=2)) for c in class_names}
    # Roles: a random DAG, each role inheriting only from roles earlier in a random order.
    names = draw(st.permutations([f"r{i}" for i in range(draw(st.integers(1, 5)))]))
    roles: dict[str, Any] = {}
    for i, name in enumerate(names):
        role: dict[str, Any] = {}
        inherits = draw(st.lists(st.sampled_from(names[:i]), max_size=3, unique=True)) if i else []
        allow = draw(st.lists(entries(actions, class_names, False, conditions), min_size=i % 2, max_size=3))
        deny = draw(st.lists(entries(actions, class_names, True, conditions), max_size=2)) if i % 2 else []
        for key, value in (("inherits", inherits), ("allow", allow), ("deny", deny)):
            if value or draw(st.booleans()):
                role[key] = value
        roles[name] = role
    some_roles = st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True)
    role_sets = st.one_of(some_roles, some_roles, some_roles, st.just([]))
    principals = {p: {"roles": draw(role_sets)} for p in PRINCIPALS}
    kept = TEMPLATES if all_templates else draw(st.lists(st.sampled_from(TEMPLATES), min_size=1, unique=True))
    templates: dict[str, Any] = {}
    for t in kept:
        template: dict[str, Any] = {"roles": draw(role_sets)}
        if draw(st.booleans()):
            template["max_delegation_depth"] = draw(st.sampled_from([1, 2, 3, 5, 8]))
        if draw(st.booleans()):
            template["ttl"] = draw(st.sampled_from([60, "15m", "2h", 86400]))
        templates[t] = template
    doc = {
        "actions": actions,
        "resources": resources,
        "roles": roles,
        "principals": principals,
        "templates": templates,
    }
    if conditions:
        guards = []
        for _ in range(draw(st.integers(0, 2))):
            guard: dict[str, Any] = {"require": ref.register(draw(condition_trees()))}
            if draw(st.booleans()):
                guard["on"] = draw(st.lists(resource_patterns(class_names), min_size=1, max_size=2))
            if draw(st.booleans()):
                guard["actions"] = draw(st.lists(st.sampled_from(actions), min_size=1, max_size=2))
            guards.append(guard)
        if guards:
            doc["guards"] = guards
    return doc


# Request names are plain names: `*` and `**` in them are literal segments, not wildcards.
valid_resources = st.lists(st.sampled_from([*LITERALS, "d", "*", "**"]), min_size=1, max_size=4).map("/".join)
request_resources = st.one_of(
    st.none(),
    st.none(),
    valid_resources,
    valid_resources,
    valid_resources,
    st.sampled_from(INVALID_RESOURCES),
    st.sampled_from(LONG_RESOURCES),
)


def requests(*docs: Mapping[str, Any]) -> st.SearchStrategy[list[tuple[str, str | None]]]:
    """Requests: mostly actions declared by one of the policies, sometimes any action at all."""
    declared = sorted({a for doc in docs for a in doc["actions"]})
    action = st.one_of(*[st.sampled_from(declared)] * 4, st.sampled_from(ALL_ACTIONS + NEVER_DECLARED))
    return st.lists(st.tuples(action, request_resources), min_size=1, max_size=10)


# One step of a plan: provision (template, delegator kind, which delegator, how to pass a parent
# agent), deprovision (which agent, how to pass it) or remove_principal (which principal).
steps = st.lists(
    st.tuples(
        st.sampled_from(["provision"] * 10 + ["deprovision", "remove_principal"]),
        st.sampled_from(TEMPLATES),
        st.sampled_from(["none", "principal", "principal", *["agent"] * 6]),
        st.integers(0, 1000),
        st.sampled_from(["agent", "handle", "id"]),
    ),
    min_size=1,
    max_size=12,
)
Plan = Sequence[tuple[str, str, str, int, str]]
Requests = list[tuple[str, str | None]]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[str, Any], Plan, Requests]:
    """A policy, a plan of lifecycle steps, and requests."""
    policy = draw(policies())
    return policy, draw(steps), draw(requests(policy))


@st.composite
def reload_scenarios(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any], Plan, Requests]:
    """A policy, another one to reload (some templates may be gone), a plan and requests."""
    policy, new_policy = draw(policies()), draw(policies(all_templates=False))
    return policy, new_policy, draw(steps), draw(requests(policy, new_policy))


# --- model of the provisioned agents -------------------------------------------------------


@dataclass
class Provisioned:
    """An agent as the tests know it: its engine object, its chain (templates, root principal),
    its delegating agent, and the reason it was retired for (None while active)."""

    agent: charter.Agent
    templates: list[str]
    principal: str | None
    parent: Provisioned | None
    retired: str | None = None

    def expected(
        self, policy: Mapping[str, Any], action: str, resource: str | None, context: Any = None
    ) -> ref.Result:
        # A retired agent denies every request with its retirement reason (state before request).
        if self.retired is not None:
            return ref.Result(False, self.retired)
        return ref.check_agent(policy, self.templates, self.principal, action, resource, context)

    def descends_from(self, other: Provisioned) -> bool:
        parent = self.parent
        while parent is not None and parent is not other:
            parent = parent.parent
        return parent is other

    def subject(self, form: str) -> Any:
        return {"agent": self.agent, "handle": self.agent.handle, "id": self.agent.id}[form]


@dataclass
class World:
    """What the engine should hold after a plan: every agent ever provisioned, removed principals."""

    agents: list[Provisioned]
    removed: set[str]

    def expected_principal(
        self,
        policy: Mapping[str, Any],
        principal: str,
        action: str,
        resource: str | None,
        context: Any = None,
    ) -> ref.Result:
        # A removed principal checks as unknown (removals overlay every later policy).
        if principal in self.removed:
            return ref.Result(False, "unknown_principal")
        return ref.check_principal(policy, principal, action, resource, context)


def make_engine(policy: Mapping[str, Any]) -> charter.Engine:
    return charter.Engine.from_dict(policy, clock=charter.ManualClock(START))


def run_plan(engine: charter.Engine, policy: Mapping[str, Any], plan: Plan) -> World:
    """Run the steps on a fresh engine, checking each outcome (refusals, counts, agent fields)."""
    return run_plan_on(engine, policy, World([], set()), plan)


def run_plan_on(engine: charter.Engine, policy: Mapping[str, Any], world: World, plan: Plan) -> World:
    """Run more steps on an engine whose state the model `world` describes."""
    for op, template, kind, pick, form in plan:
        if op == "deprovision" and world.agents:
            target = world.agents[pick % len(world.agents)]
            retiring = [] if target.retired else [target]
            retiring += [a for a in world.agents if a.retired is None and a.descends_from(target)]
            assert engine.deprovision(target.subject(form)) == len(retiring)
            for a in retiring:
                a.retired = "revoked" if a is target else "delegator_revoked"
        elif op == "remove_principal":
            principal = PRINCIPALS[pick % len(PRINCIPALS)]
            if principal in world.removed:
                continue  # removing twice is not specified
            retiring = [a for a in world.agents if a.retired is None and a.principal == principal]
            assert engine.remove_principal(principal) == len(retiring)
            for a in retiring:
                a.retired = "principal_removed"
            world.removed.add(principal)
        else:
            provision(engine, policy, world, template, kind, pick, form)
    for a in world.agents:
        assert engine.agent(a.agent.handle).state == (a.retired or "active")
    assert engine.stats()["agents"] == sum(a.retired is None for a in world.agents)
    return world


def provision(engine: charter.Engine, policy: Mapping[str, Any], world: World, *step: Any) -> None:
    """Provision one agent; refused exactly when the delegator is inactive or the chain too deep."""
    template, kind, pick, form = step
    parent: Provisioned | None = None
    principal: str | None = None
    on_behalf_of: Any = None
    if kind == "agent" and world.agents:
        parent = world.agents[-1 - pick % min(3, len(world.agents))]  # recent ones: deeper chains
        principal = parent.principal
        on_behalf_of = parent.subject(form)
    elif kind != "none":
        principal = PRINCIPALS[pick % len(PRINCIPALS)]
        on_behalf_of = principal
    chain = [template, *(parent.templates if parent else [])]
    if any(t not in policy["templates"] for t in chain[1:]):
        return  # delegating to an agent whose template a reload removed: not specified
    if principal in world.removed and parent is None:
        with pytest.raises(charter.UnknownSubjectError):
            engine.provision(template, on_behalf_of=on_behalf_of)
        return
    if (parent is not None and parent.retired is not None) or not ref.can_provision(policy, chain):
        with pytest.raises(charter.ProvisionError):
            engine.provision(template, on_behalf_of=on_behalf_of)
        return
    agent = engine.provision(template, on_behalf_of=on_behalf_of)
    assert agent.template == template
    assert agent.depth == len(chain)
    assert agent.principal == principal
    assert agent.state == "active"
    if parent is not None:
        assert agent.on_behalf_of == parent.agent.id
        if parent.agent.expires_at is not None:
            assert agent.expires_at is not None
            assert agent.expires_at <= parent.agent.expires_at
    else:
        assert agent.on_behalf_of == principal
    world.agents.append(Provisioned(agent, chain, principal, parent))


# --- assertions ----------------------------------------------------------------------------


def assert_rule_in_policy(
    policy: Mapping[str, Any], rule: str, effect: str, action: str, resource: str | None
) -> None:
    """The reported rule names an entry of the policy dict of the right effect that matches the request."""
    m = RULE.match(rule)
    assert m is not None, rule
    assert m["effect"] == effect, (rule, effect)
    entry = policy["roles"][m["role"]][m["effect"]][int(m["index"])]
    assert ref.entry_matches(policy, entry, action, resource), (rule, entry, action, resource)


def assert_same(
    policy: Mapping[str, Any],
    decision: charter.Decision,
    expected: ref.Result,
    action: str,
    resource: str | None,
) -> None:
    assert decision.allowed == expected.allowed, (action, resource, decision, expected)
    assert expected.accepts(decision.reason), (action, resource, decision, expected)
    assert bool(decision) is decision.allowed
    assert charter.REASONS[decision.reason_code] == decision.reason
    if not expected.rules:
        assert decision.rule is None, (action, resource, decision.rule, expected)
        return
    assert decision.rule in expected.rules, (action, resource, decision.rule, expected)
    if decision.reason in ("delegator_denied", "guard_failed"):
        return  # a delegator's deny or allow that failed its condition; a guard (`guards[i]`)
    effect = "deny" if decision.reason == "denied_by_rule" else "allow"
    assert_rule_in_policy(policy, decision.rule, effect, action, resource)


def check_everything(
    engine: charter.Engine,
    policy: Mapping[str, Any],
    world: World,
    reqs: Sequence[tuple[str, str | None]],
    context: Any = None,
) -> list[tuple[bool, str, str | None]]:
    """Every single-check form against the reference; returns the decisions for later comparison."""
    seen = []
    for action, resource in reqs:
        for principal in PRINCIPALS:
            expected = world.expected_principal(policy, principal, action, resource, context)
            d = engine.check(principal, action, resource, context)
            assert_same(policy, d, expected, action, resource)
            seen.append((d.allowed, d.reason, d.rule))
        for p in world.agents:
            expected = p.expected(policy, action, resource, context)
            for form in ("handle", "id", "agent"):
                d = engine.check(p.subject(form), action, resource, context)
                assert_same(policy, d, expected, action, resource)
                assert d.policy_version == engine.policy_version
                seen.append((d.allowed, d.reason, d.rule))
        for handle in GARBAGE_HANDLES:
            d = engine.check(handle, action, resource)
            assert (d.allowed, d.reason, d.rule) == (False, "unknown_agent", None)
        d = engine.check("nobody:here", action, resource)
        assert (d.allowed, d.reason, d.rule) == (False, "unknown_principal", None)
    return seen


def check_batches(
    engine: charter.Engine,
    policy: Mapping[str, Any],
    world: World,
    reqs: Sequence[tuple[str, str | None]],
    context: Any = None,
) -> None:
    """check_batch and check_batch_reasons over agents x declared requests (plus garbage handles),
    with the requests' resources and without any; `context` (one dict) is given to every row
    as columns."""
    rows: list[tuple[int, str, str | None, ref.Result, ref.Result]] = []
    for action, resource in reqs:
        if action not in engine.actions:
            with pytest.raises(charter.UnknownActionError):
                engine.action_id(action)
            continue
        for p in world.agents:
            with_resource = p.expected(policy, action, resource, context)
            without = p.expected(policy, action, None, context)
            rows.append((p.agent.handle, action, resource, with_resource, without))
        unknown = ref.Result(False, "unknown_agent")
        rows += [(handle, action, resource, unknown, unknown) for handle in GARBAGE_HANDLES[:2]]
    if not rows:
        return
    handles = np.array([r[0] for r in rows], dtype=np.uint64)
    actions = np.array([engine.action_id(r[1]) for r in rows], dtype=np.uint32)
    columns = None if context is None else {k: [v] * len(rows) for k, v in context.items()}
    for resources, want in (([r[2] for r in rows], [r[3] for r in rows]), (None, [r[4] for r in rows])):
        allowed = engine.check_batch(handles, actions, resources, columns)
        assert allowed.dtype == np.bool_
        assert allowed.tolist() == [w.allowed for w in want]
        allowed, codes = engine.check_batch_reasons(handles, actions, resources, columns)
        assert allowed.tolist() == [w.allowed for w in want]
        reasons = [charter.REASONS[c] for c in codes]
        assert all(w.accepts(got) for w, got in zip(want, reasons, strict=True)), list(
            zip(rows, reasons, strict=True)
        )
    # An explicit list of None is the same as no resources.
    allowed, codes = engine.check_batch_reasons(handles, actions, [None] * len(rows), columns)
    assert allowed.tolist() == [r[4].allowed for r in rows]
    assert all(r[4].accepts(charter.REASONS[c]) for r, c in zip(rows, codes, strict=True))


# --- properties ----------------------------------------------------------------------------


@SETTINGS
@given(scenario=scenarios())
def test_single_checks_match_reference(scenario: tuple[dict[str, Any], Plan, Requests]) -> None:
    policy, plan, reqs = scenario
    engine = make_engine(policy)
    world = run_plan(engine, policy, plan)
    check_everything(engine, policy, world, reqs)


@SETTINGS
@given(scenario=scenarios())
def test_batches_match_reference(scenario: tuple[dict[str, Any], Plan, Requests]) -> None:
    policy, plan, reqs = scenario
    engine = make_engine(policy)
    world = run_plan(engine, policy, plan)
    check_batches(engine, policy, world, reqs)


@SETTINGS
@given(scenario=scenarios())
def test_agent_never_exceeds_its_delegator(scenario: tuple[dict[str, Any], Plan, Requests]) -> None:
    policy, plan, reqs = scenario
    engine = make_engine(policy)
    world = run_plan(engine, policy, plan)
    for p in world.agents:
        delegator: Any = p.parent.agent.handle if p.parent else p.principal
        if delegator is None:
            continue
        for action, resource in reqs:
            if engine.check(p.agent.handle, action, resource).allowed:
                assert engine.check(delegator, action, resource).allowed, (p.templates, action, resource)


@SETTINGS
@given(scenario=scenarios())
def test_reload_of_the_same_policy_changes_nothing(scenario: tuple[dict[str, Any], Plan, Requests]) -> None:
    policy, plan, reqs = scenario
    engine = make_engine(policy)
    world = run_plan(engine, policy, plan)
    before = check_everything(engine, policy, world, reqs)
    version = engine.policy_version
    assert engine.reload(policy) == (version, version)
    assert check_everything(engine, policy, world, reqs) == before
    check_batches(engine, policy, world, reqs)


@SETTINGS
@given(scenario=reload_scenarios())
def test_reload_of_another_policy_gives_its_decisions(
    scenario: tuple[dict[str, Any], dict[str, Any], Plan, Requests],
) -> None:
    policy, new_policy, plan, reqs = scenario
    engine = make_engine(policy)
    world = run_plan(engine, policy, plan)
    old_version = engine.policy_version
    assert engine.reload(new_policy)[0] == old_version
    assert engine.reload(new_policy) == (engine.policy_version, engine.policy_version)
    check_everything(engine, new_policy, world, reqs)
    check_batches(engine, new_policy, world, reqs)
    for p in world.agents:
        agent = engine.agent(p.agent.handle)
        assert (agent.id, agent.handle, agent.template) == (p.agent.id, p.agent.handle, p.agent.template)
        assert agent.state == (p.retired or "active")
    # Provisioning under the new policy follows it too.
    run_more = [("provision", t, "agent", i, "handle") for i, t in enumerate(new_policy["templates"])]
    extra = run_plan_on(engine, new_policy, world, run_more)
    check_everything(engine, new_policy, extra, reqs[:2])


@st.composite
def condition_scenarios(draw: st.DrawFn) -> tuple[dict[str, Any], Plan, Requests, list[Any]]:
    """A policy whose entries carry random `when` conditions, a plan, requests, and contexts."""
    policy = draw(policies(conditions=True))
    return policy, draw(steps), draw(requests(policy)), draw(st.lists(contexts, min_size=1, max_size=3))


@SETTINGS
@given(scenario=condition_scenarios())
def test_conditions_match_reference(scenario: tuple[dict[str, Any], Plan, Requests, list[Any]]) -> None:
    policy, plan, reqs, ctxs = scenario
    engine = make_engine(policy)
    world = run_plan(engine, policy, plan)
    for context in ctxs:
        check_everything(engine, policy, world, reqs, context)
        check_batches(engine, policy, world, reqs, context)


@SETTINGS
@given(
    subject=st.one_of(st.floats(), st.none(), st.binary(), st.lists(st.integers(), max_size=2)),
    action=st.one_of(st.floats(), st.none(), st.binary(), st.lists(st.text(), max_size=2)),
    resource=st.one_of(st.integers(), st.floats(), st.binary(), st.lists(st.text(), max_size=2)),
)
def test_wrong_types_are_malformed_requests(subject: Any, action: Any, resource: Any) -> None:
    engine = charter.Engine.example()
    for args in (
        (subject, "crm:read", None),
        ("user:alice", action, None),
        ("user:alice", "crm:read", resource),
    ):
        d = engine.check(*args)
        assert (d.allowed, d.reason, d.rule) == (False, "malformed_request", None), args
