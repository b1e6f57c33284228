"""Property tests for credentials: random delegation trees, revocation cascades, mutations, restarts.

The invariant under everything: a descendant is never allowed what an
ancestor is not. Trees are grown with `Issuer.issue` and `Issuer.exchange`
(some exchanges and authentications are refused; that is part of the
property), then every (agent, action, resource) is checked against every
ancestor and scope on its chain.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import charter
from charter.identity import Issuer

START = 1_700_000_000.0
ISS = "https://id.example"
TEMPLATES = ["support-bot", "analytics-agent", "refund-agent", "deploy-agent", "research-subagent"]
PRINCIPALS = ["user:alice", "user:bob", "user:carol", "user:dave"]
SCOPE_ITEMS = [
    "*",
    "tickets:*",
    "tickets:read",
    "crm:read",
    "crm:write",
    "db:*",
    "db:read",
    "payments:refund",
]
RESOURCES = [None, "customers/1", "users/1/profile", "analytics/q", "prod/db", "ledger/2024", "tickets/3"]
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

node = st.tuples(
    st.integers(0, 1_000),  # which earlier node (or a principal) delegates
    st.sampled_from(TEMPLATES),
    st.one_of(st.none(), st.lists(st.sampled_from(SCOPE_ITEMS), min_size=1, max_size=3, unique=True)),
)
trees = st.tuples(st.sampled_from(PRINCIPALS), st.lists(node, min_size=1, max_size=7))


@dataclasses.dataclass
class Node:
    token: str
    parent: int | None  # index of the delegating node; None: the principal
    principal: str
    agent: charter.Agent | None = None
    refusal: str | None = None


def expand(engine: charter.Engine, scope: list[str] | None) -> set[str]:
    actions = engine.actions
    if scope is None:
        return set(actions)
    out: set[str] = set()
    for item in scope:
        if item == "*":
            out |= set(actions)
        elif item.endswith(":*"):
            out |= {a for a in actions if a.startswith(item[:-1])}
        else:
            out.add(item)
    return out


def grow(
    engine: charter.Engine, issuer: Issuer, tree: tuple[str, list[tuple[int, str, list[str] | None]]]
) -> list[Node]:
    principal, spec = tree
    nodes: list[Node] = []
    for pick, template, scope in spec:
        parent = pick % (len(nodes) + 1) - 1
        try:
            if parent < 0:
                token = issuer.issue(template, on_behalf_of=principal, scope=scope)
                nodes.append(Node(token, None, principal))
            else:
                token = issuer.exchange(nodes[parent].token, template=template, scope=scope)
                nodes.append(Node(token, parent, principal))
        except charter.AuthenticationError as err:
            refusal = err.reason
        else:
            refusal = None
        if refusal is not None:
            assert refusal in {"scope_escalation", "too_deep"}
            continue
        try:
            nodes[-1].agent = engine.authenticate(token)
        except charter.AuthenticationError as err:
            nodes[-1].refusal = err.reason
    return nodes


def ancestors(nodes: list[Node], i: int) -> list[int]:
    out = []
    p = nodes[i].parent
    while p is not None:
        out.append(p)
        p = nodes[p].parent
    return out


@pytest.fixture
def clock() -> charter.ManualClock:
    return charter.ManualClock(START)


def setup(clock: charter.ManualClock, log: Path | None = None) -> tuple[charter.Engine, Issuer]:
    issuer = Issuer.generate(issuer=ISS, clock=clock)
    engine = charter.Engine.example(clock=clock)
    engine.trust(issuer.jwks())
    if log is not None:
        engine.configure_identity(revocations=log)
    return engine, issuer


@SETTINGS
@given(tree=trees)
def test_a_descendant_is_never_allowed_what_an_ancestor_is_not(
    clock: charter.ManualClock, tree: tuple
) -> None:
    engine, issuer = setup(clock)
    nodes = grow(engine, issuer, tree)
    for i, n in enumerate(nodes):
        if n.agent is None:
            continue
        chain = ancestors(nodes, i)
        # a child is admitted only if every ancestor's own credential would be
        for a in chain:
            assert nodes[a].agent is not None, (nodes[a].refusal, n.refusal)
        assert n.agent.depth == len(chain) + 1
        assert n.agent.principal == n.principal
        scopes = [expand(engine, nodes[j].agent.scope) for j in [i, *chain]]
        for action in engine.actions:
            for resource in RESOURCES:
                if not engine.check(n.agent, action, resource):
                    continue
                assert engine.check(n.principal, action, resource), (action, resource)
                for a in chain:
                    assert engine.check(nodes[a].agent, action, resource), (action, resource, a)
                assert all(action in s for s in scopes), (action, scopes)


@SETTINGS
@given(tree=trees, victim=st.integers(0, 1_000))
def test_revoking_a_node_revokes_exactly_its_subtree(
    clock: charter.ManualClock, tree: tuple, victim: int
) -> None:
    engine, issuer = setup(clock)
    nodes = grow(engine, issuer, tree)
    admitted = [i for i, n in enumerate(nodes) if n.agent is not None]
    if not admitted:
        return
    v = admitted[victim % len(admitted)]
    engine.revoke(agent=nodes[v].agent)
    for i in admitted:
        n = nodes[i]
        if i == v or v in ancestors(nodes, i):
            with pytest.raises(charter.AuthenticationError) as info:
                engine.authenticate(n.token)
            assert info.value.reason == "revoked"
            assert not engine.check(n.agent, "tickets:read")
        else:
            assert engine.authenticate(n.token).handle == n.agent.handle


@SETTINGS
@given(tree=trees, victims=st.lists(st.integers(0, 1_000), max_size=3), principal_too=st.booleans())
def test_a_restart_refuses_exactly_what_was_refused_before(
    tmp_path_factory: pytest.TempPathFactory,
    clock: charter.ManualClock,
    tree: tuple,
    victims: list[int],
    principal_too: bool,
) -> None:
    log = tmp_path_factory.mktemp("log") / "revocations.log"
    engine, issuer = setup(clock, log)
    nodes = grow(engine, issuer, tree)
    admitted = [i for i, n in enumerate(nodes) if n.agent is not None]
    for v in victims:
        if admitted:
            engine.revoke(nodes[admitted[v % len(admitted)]].token)
    if principal_too and victims:
        engine.revoke(principal=tree[0])

    def outcomes(e: charter.Engine) -> list[str]:
        out = []
        for n in nodes:
            try:
                e.authenticate(n.token)
                out.append("ok")
            except charter.AuthenticationError as err:
                out.append(err.reason)
        return out

    before = outcomes(engine)
    restarted = charter.Engine.example(clock=clock)
    restarted.trust(issuer.jwks())
    restarted.configure_identity(revocations=log)
    assert outcomes(restarted) == before


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."


@pytest.fixture(scope="module")
def signed() -> tuple[charter.Engine, str]:
    clock = charter.ManualClock(START)
    engine, issuer = setup(clock)
    token = issuer.issue("support-bot", on_behalf_of="user:alice", scope=["tickets:read"], audience=None)
    engine.authenticate(token)
    return engine, token


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_changed_character_is_refused(signed: tuple[charter.Engine, str], data: st.DataObject) -> None:
    engine, token = signed
    pos = data.draw(st.integers(0, len(token) - 1))
    char = data.draw(st.sampled_from(ALPHABET))
    mutated = token[:pos] + char + token[pos + 1 :]
    if mutated == token:
        return
    fresh = charter.Engine.example(clock=charter.ManualClock(START))  # no cache: the full verification
    fresh._id_keys = engine._id_keys
    fresh._id_active = True
    for e in (engine, fresh):
        with pytest.raises(charter.AuthenticationError) as info:
            e.authenticate(mutated)
        assert info.value.reason in {"malformed", "bad_signature", "unknown_key", "algorithm_not_allowed"}


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(0, 400))
def test_any_truncation_is_refused(signed: tuple[charter.Engine, str], cut: int) -> None:
    engine, token = signed
    truncated = token[: len(token) - 1 - cut % len(token)]
    with pytest.raises(charter.AuthenticationError):
        engine.authenticate(truncated)
