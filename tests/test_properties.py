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

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TOOLS = {"db": ["read", "write", "drop"], "fs": ["read", "write"], "net": ["get"]}
ALL_ACTIONS = [f"{tool}:{verb}" for tool, verbs in TOOLS.items() for verb in verbs]
NEVER_DECLARED = ["db:zap", "mail:send"]
LITERALS = ["a", "b", "c"]
PRINCIPALS = ["user:p0", "user:p1", "svc:p2"]
TEMPLATES = ["t0", "t1", "t2"]
INVALID_RESOURCES = ["", "/a", "a/", "a//b", "/", "a/b/", "x" * 4097]
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


@st.composite
def entries(draw: st.DrawFn, actions: Sequence[str], classes: Sequence[str]) -> str | dict[str, Any]:
    """An allow/deny entry: a bare action pattern, or a table with one or more actions and maybe `on`."""
    tools = sorted({a.split(":")[0] for a in actions})
    action_pattern = st.one_of(
        st.sampled_from(actions),
        st.sampled_from(actions),
        st.sampled_from([f"{t}:*" for t in tools]),
        st.just("*"),
    )
    if draw(st.booleans()):
        return draw(action_pattern)
    entry: dict[str, Any] = {}
    if draw(st.booleans()):
        entry["action"] = draw(action_pattern)
    else:
        entry["action"] = draw(st.lists(action_pattern, min_size=1, max_size=3, unique=True))
    if draw(st.integers(0, 3)) > 0:
        entry["on"] = draw(st.lists(resource_patterns(classes), min_size=1, max_size=3))
    return entry


@st.composite
def policies(draw: st.DrawFn, all_templates: bool = True) -> dict[str, Any]:
    """A random valid policy over the fixed principal names and (a subset of) the template names."""
    actions = draw(st.lists(st.sampled_from(ALL_ACTIONS), min_size=1, unique=True))
    class_names = [f"c{i}" for i in range(draw(st.integers(0, 2)))]
    resources = {c: draw(st.lists(resource_patterns(()), min_size=1, max_size=2)) for c in class_names}
    # Roles: a random DAG, each role inheriting only from roles earlier in a random order.
    names = draw(st.permutations([f"r{i}" for i in range(draw(st.integers(1, 5)))]))
    roles: dict[str, Any] = {}
    for i, name in enumerate(names):
        role: dict[str, Any] = {}
        inherits = draw(st.lists(st.sampled_from(names[:i]), max_size=3, unique=True)) if i else []
        allow = draw(st.lists(entries(actions, class_names), max_size=3))
        deny = draw(st.lists(entries(actions, class_names), max_size=2))
        for key, value in (("inherits", inherits), ("allow", allow), ("deny", deny)):
            if value or draw(st.booleans()):
                role[key] = value
        roles[name] = role
    role_sets = st.lists(st.sampled_from(names), max_size=3, unique=True)
    principals = {p: {"roles": draw(role_sets)} for p in PRINCIPALS}
    kept = TEMPLATES if all_templates else draw(st.lists(st.sampled_from(TEMPLATES), min_size=1, unique=True))
    templates: dict[str, Any] = {}
    for t in kept:
        template: dict[str, Any] = {"roles": draw(role_sets)}
        if draw(st.booleans()):
            template["max_delegation_depth"] = draw(st.integers(1, 4))
        if draw(st.booleans()):
            template["ttl"] = draw(st.sampled_from([60, "15m", "2h", 86400]))
        templates[t] = template
    return {
        "actions": actions,
        "resources": resources,
        "roles": roles,
        "principals": principals,
        "templates": templates,
    }


valid_resources = st.lists(st.sampled_from([*LITERALS, "d", "*"]), min_size=1, max_size=4).map("/".join)
request_resources = st.one_of(st.none(), valid_resources, valid_resources, st.sampled_from(INVALID_RESOURCES))
requests = st.lists(
    st.tuples(st.sampled_from(ALL_ACTIONS + NEVER_DECLARED), request_resources), min_size=1, max_size=10
)
# One provisioning step: template, delegator kind, which delegator, and how to pass a parent agent.
steps = st.lists(
    st.tuples(
        st.sampled_from(TEMPLATES),
        st.sampled_from(["none", "principal", "agent", "agent", "agent"]),
        st.integers(0, 1000),
        st.sampled_from(["agent", "handle", "id"]),
    ),
    min_size=1,
    max_size=10,
)


# --- model of the provisioned agents -------------------------------------------------------


@dataclass
class Provisioned:
    """An agent as the tests know it: its engine object and its chain (templates, root principal)."""

    agent: charter.Agent
    templates: list[str]
    principal: str | None
    parent: Provisioned | None

    def expected(self, policy: Mapping[str, Any], action: str, resource: str | None) -> ref.Result:
        return ref.check_agent(policy, self.templates, self.principal, action, resource)


def make_engine(policy: Mapping[str, Any]) -> charter.Engine:
    return charter.Engine.from_dict(policy, clock=charter.ManualClock(START))


def provision_all(
    engine: charter.Engine, policy: Mapping[str, Any], plan: Sequence[tuple[str, str, int, str]]
) -> list[Provisioned]:
    """Run the provisioning steps; a step is refused exactly when the reference says it is too deep."""
    agents: list[Provisioned] = []
    for template, kind, pick, form in plan:
        parent: Provisioned | None = None
        principal: str | None = None
        on_behalf_of: Any = None
        if kind == "agent" and agents:
            parent = agents[pick % len(agents)]
            principal = parent.principal
            on_behalf_of = {"agent": parent.agent, "handle": parent.agent.handle, "id": parent.agent.id}[form]
        elif kind != "none":
            principal = PRINCIPALS[pick % len(PRINCIPALS)]
            on_behalf_of = principal
        chain = [template, *(parent.templates if parent else [])]
        if not ref.can_provision(policy, chain):
            with pytest.raises(charter.ProvisionError):
                engine.provision(template, on_behalf_of=on_behalf_of)
            continue
        agent = engine.provision(template, on_behalf_of=on_behalf_of)
        assert agent.template == template
        assert agent.depth == len(chain)
        assert agent.principal == principal
        assert agent.state == "active"
        if parent is not None:
            assert agent.on_behalf_of == parent.agent.id
            assert parent.agent.expires_at is None or agent.expires_at is not None
            if parent.agent.expires_at is not None:
                assert agent.expires_at <= parent.agent.expires_at
        else:
            assert agent.on_behalf_of == principal
        agents.append(Provisioned(agent, chain, principal, parent))
    return agents


# --- assertions ----------------------------------------------------------------------------


def assert_rule_in_policy(policy: Mapping[str, Any], rule: str, effect: str, action: str, resource: str | None) -> None:
    """The reported rule names an entry of the policy dict of the right effect that matches the request."""
    m = RULE.match(rule)
    assert m is not None, rule
    assert m["effect"] == effect, (rule, effect)
    entry = policy["roles"][m["role"]][m["effect"]][int(m["index"])]
    assert ref.entry_matches(policy, entry, action, resource), (rule, entry, action, resource)


def assert_same(
    policy: Mapping[str, Any], decision: charter.Decision, expected: ref.Result, action: str, resource: str | None
) -> None:
    got = (decision.allowed, decision.reason)
    assert got == (expected.allowed, expected.reason), (action, resource, decision.rule, expected)
    assert bool(decision) is decision.allowed
    assert charter.REASONS[decision.reason_code] == decision.reason
    if not expected.rules:
        assert decision.rule is None, (action, resource, decision.rule, expected)
        return
    assert decision.rule in expected.rules, (action, resource, decision.rule, expected)
    effect = "allow" if decision.allowed else "deny"
    assert_rule_in_policy(policy, decision.rule, effect, action, resource)


def check_everything(
    engine: charter.Engine,
    policy: Mapping[str, Any],
    agents: Sequence[Provisioned],
    reqs: Sequence[tuple[str, str | None]],
) -> list[tuple[bool, str, str | None]]:
    """Every single-check form against the reference; returns the decisions for later comparison."""
    seen = []
    for action, resource in reqs:
        for principal in PRINCIPALS:
            expected = ref.check_principal(policy, principal, action, resource)
            d = engine.check(principal, action, resource)
            assert_same(policy, d, expected, action, resource)
            seen.append((d.allowed, d.reason, d.rule))
        for p in agents:
            expected = p.expected(policy, action, resource)
            for subject in (p.agent.handle, p.agent.id, p.agent):
                d = engine.check(subject, action, resource)
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
    agents: Sequence[Provisioned],
    reqs: Sequence[tuple[str, str | None]],
) -> None:
    """check_batch and check_batch_reasons over agents x declared requests (plus garbage handles)."""
    rows: list[tuple[int, str, str | None, ref.Result]] = []
    for action, resource in reqs:
        if action not in engine.actions:
            with pytest.raises(charter.UnknownActionError):
                engine.action_id(action)
            continue
        for p in agents:
            rows.append((p.agent.handle, action, resource, p.expected(policy, action, resource)))
        for handle in GARBAGE_HANDLES[:2]:
            rows.append((handle, action, resource, ref.Result(False, "unknown_agent")))
    if not rows:
        return
    handles = np.array([r[0] for r in rows], dtype=np.uint64)
    actions = np.array([engine.action_id(r[1]) for r in rows], dtype=np.uint32)
    resources = [r[2] for r in rows]
    want_allowed = np.array([r[3].allowed for r in rows], dtype=bool)
    want_codes = np.array([charter.REASONS.index(r[3].reason) for r in rows], dtype=np.uint8)

    allowed = engine.check_batch(handles, actions, resources)
    assert allowed.dtype == np.bool_
    assert allowed.tolist() == want_allowed.tolist()
    allowed, codes = engine.check_batch_reasons(handles, actions, resources)
    assert allowed.tolist() == want_allowed.tolist()
    assert [charter.REASONS[c] for c in codes] == [r[3].reason for r in rows]
    assert codes.tolist() == want_codes.tolist()

    # Without resources every request is resource-less.
    no_resource = [
        (
            ref.Result(False, "unknown_agent")
            if h in GARBAGE_HANDLES
            else next(p for p in agents if p.agent.handle == h).expected(policy, a, None)
        )
        for h, a, _, _ in rows
    ]
    allowed, codes = engine.check_batch_reasons(handles, actions)
    assert allowed.tolist() == [r.allowed for r in no_resource]
    assert [charter.REASONS[c] for c in codes] == [r.reason for r in no_resource]
    assert engine.check_batch(handles, actions).tolist() == [r.allowed for r in no_resource]


# --- properties ----------------------------------------------------------------------------


@SETTINGS
@given(policy=policies(), plan=steps, reqs=requests)
def test_single_checks_match_reference(policy: dict[str, Any], plan: Any, reqs: Any) -> None:
    engine = make_engine(policy)
    agents = provision_all(engine, policy, plan)
    check_everything(engine, policy, agents, reqs)


@SETTINGS
@given(policy=policies(), plan=steps, reqs=requests)
def test_batches_match_reference(policy: dict[str, Any], plan: Any, reqs: Any) -> None:
    engine = make_engine(policy)
    agents = provision_all(engine, policy, plan)
    check_batches(engine, policy, agents, reqs)


@SETTINGS
@given(policy=policies(), plan=steps, reqs=requests)
def test_agent_never_exceeds_its_delegator(policy: dict[str, Any], plan: Any, reqs: Any) -> None:
    engine = make_engine(policy)
    agents = provision_all(engine, policy, plan)
    for p in agents:
        delegator: Any = p.parent.agent.handle if p.parent else p.principal
        if delegator is None:
            continue
        for action, resource in reqs:
            if engine.check(p.agent.handle, action, resource).allowed:
                assert engine.check(delegator, action, resource).allowed, (p.templates, action, resource)


@SETTINGS
@given(policy=policies(), plan=steps, reqs=requests)
def test_reload_of_the_same_policy_changes_nothing(policy: dict[str, Any], plan: Any, reqs: Any) -> None:
    engine = make_engine(policy)
    agents = provision_all(engine, policy, plan)
    before = check_everything(engine, policy, agents, reqs)
    version = engine.policy_version
    assert engine.reload(policy) == (version, version)
    assert check_everything(engine, policy, agents, reqs) == before
    check_batches(engine, policy, agents, reqs)


@SETTINGS
@given(policy=policies(), new_policy=policies(all_templates=False), plan=steps, reqs=requests)
def test_reload_of_another_policy_gives_its_decisions(
    policy: dict[str, Any], new_policy: dict[str, Any], plan: Any, reqs: Any
) -> None:
    engine = make_engine(policy)
    agents = provision_all(engine, policy, plan)
    old_version = engine.policy_version
    assert engine.reload(new_policy)[0] == old_version
    assert engine.reload(new_policy)[1] == engine.policy_version
    check_everything(engine, new_policy, agents, reqs)
    check_batches(engine, new_policy, agents, reqs)
    for p in agents:
        agent = engine.agent(p.agent.handle)
        assert (agent.id, agent.handle, agent.template) == (p.agent.id, p.agent.handle, p.agent.template)


@SETTINGS
@given(
    subject=st.one_of(st.floats(), st.none(), st.binary(), st.lists(st.integers(), max_size=2)),
    action=st.one_of(st.floats(), st.none(), st.binary(), st.lists(st.text(), max_size=2)),
    resource=st.one_of(st.integers(), st.floats(), st.binary(), st.lists(st.text(), max_size=2)),
)
def test_wrong_types_are_malformed_requests(subject: Any, action: Any, resource: Any) -> None:
    engine = charter.Engine.example()
    for args in ((subject, "crm:read", None), ("user:alice", action, None), ("user:alice", "crm:read", resource)):
        d = engine.check(*args)
        assert (d.allowed, d.reason, d.rule) == (False, "malformed_request", None), args
