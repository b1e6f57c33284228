"""Agent lifecycle: lifetimes, sweep, deprovision cascades, slot reuse, principals, reload, depth, threads.

Example-based; time is a `charter.ManualClock` (no sleeps), and no assertion depends on timing.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

import numpy as np
import pytest

import charter
import reference as ref

START = 1_000_000.0

POLICY: dict[str, Any] = {
    "actions": ["db:read", "db:write", "mail:send"],
    "resources": {},
    "roles": {
        "reader": {"allow": ["db:read"]},
        "writer": {"inherits": ["reader"], "allow": ["db:write"]},
        "mailer": {"allow": ["mail:send"]},
    },
    "principals": {
        "user:alice": {"roles": ["writer", "mailer"]},
        "user:bob": {"roles": ["reader"]},
    },
    "templates": {
        "short": {"roles": ["writer"], "ttl": 600, "max_ttl": 3600},
        "long": {"roles": ["writer", "mailer"], "ttl": "2h"},
        "forever": {"roles": ["writer", "mailer"]},
        "shallow": {"roles": ["reader"], "max_delegation_depth": 2},
    },
}


def policy(**templates: Any) -> dict[str, Any]:
    """A copy of POLICY; keyword arguments replace (or, with None, remove) templates."""
    doc = copy.deepcopy(POLICY)
    for name, template in templates.items():
        if template is None:
            del doc["templates"][name]
        else:
            doc["templates"][name] = template
    return doc


@pytest.fixture
def clock() -> charter.ManualClock:
    return charter.ManualClock(START)


@pytest.fixture
def engine(clock: charter.ManualClock) -> charter.Engine:
    return charter.Engine.from_dict(POLICY, clock=clock)


def reason(engine: charter.Engine, subject: Any, action: str = "db:read", resource: str | None = None) -> str:
    d = engine.check(subject, action, resource)
    assert d.allowed == (d.reason == "granted")
    if not d.allowed and d.reason not in ("denied_by_rule", "delegator_denied"):
        assert d.rule is None
    return d.reason


# --- lifetimes -----------------------------------------------------------------------------


def test_ttl_defaults_to_the_template(engine: charter.Engine) -> None:
    short = engine.provision("short", on_behalf_of="user:alice")
    long = engine.provision("long", on_behalf_of="user:alice")
    forever = engine.provision("forever", on_behalf_of="user:alice")
    assert short.created_at == START
    assert short.expires_at == START + 600
    assert long.expires_at == START + 7200
    assert forever.expires_at is None
    assert engine.agent(short.handle).expires_at == START + 600


def test_explicit_ttl_and_max_ttl(engine: charter.Engine) -> None:
    assert engine.provision("short", on_behalf_of="user:alice", ttl=30).expires_at == START + 30
    assert engine.provision("short", on_behalf_of="user:alice", ttl=3600).expires_at == START + 3600
    assert engine.provision("forever", ttl=10).expires_at == START + 10
    assert engine.provision("long", ttl=86400).expires_at == START + 86400  # no max_ttl
    before = engine.stats()["agents"]
    with pytest.raises(charter.ProvisionError):
        engine.provision("short", on_behalf_of="user:alice", ttl=3601)
    assert engine.stats()["agents"] == before


def test_expiry_at_exactly_expires_at(engine: charter.Engine, clock: charter.ManualClock) -> None:
    agent = engine.provision("short", on_behalf_of="user:alice")
    assert agent.expires_at == START + 600
    clock.advance(599)
    assert reason(engine, agent.handle) == "granted"
    clock.set(START + 600 - 0.001)
    assert reason(engine, agent.handle) == "granted"
    assert engine.agent(agent).state == "active"
    clock.set(START + 600)
    for subject in (agent.handle, agent.id, agent):
        assert reason(engine, subject) == "expired"
    # Lifecycle state comes before the action and the resource.
    assert reason(engine, agent.handle, "no:such") == "expired"
    assert reason(engine, agent.handle, "db:read", "a//b") == "expired"
    assert engine.agent(agent).state == "expired"
    # The principal itself is not affected.
    assert reason(engine, "user:alice") == "granted"


def test_child_expiry_is_clamped_to_its_parent(engine: charter.Engine, clock: charter.ManualClock) -> None:
    parent = engine.provision("short", on_behalf_of="user:alice")  # expires START + 600
    longer = engine.provision("long", on_behalf_of=parent)  # would be START + 7200
    endless = engine.provision("forever", on_behalf_of=parent.handle)  # would never expire
    shorter = engine.provision("long", on_behalf_of=parent.id, ttl=60)  # within the parent's lifetime
    assert longer.expires_at == parent.expires_at
    assert endless.expires_at == parent.expires_at
    assert shorter.expires_at == START + 60
    grandchild = engine.provision("forever", on_behalf_of=longer)
    assert grandchild.expires_at == parent.expires_at
    # Under an agent that never expires, a child keeps its own lifetime.
    root = engine.provision("forever", on_behalf_of="user:alice")
    assert engine.provision("long", on_behalf_of=root).expires_at == START + 7200
    assert engine.provision("forever", on_behalf_of=root).expires_at is None

    clock.set(START + 60)
    assert reason(engine, shorter) == "expired"
    assert reason(engine, longer) == "granted"
    clock.set(START + 600)
    for agent in (parent, longer, endless, grandchild):
        assert reason(engine, agent) == "expired"
    assert reason(engine, root) == "granted"


def test_sweep_retires_expired_agents(engine: charter.Engine, clock: charter.ManualClock) -> None:
    short = engine.provision("short", on_behalf_of="user:alice")  # START + 600
    child = engine.provision("forever", on_behalf_of=short)  # clamped to START + 600
    long = engine.provision("long", on_behalf_of="user:bob")  # START + 7200
    forever = engine.provision("forever")
    assert engine.sweep() == 0
    assert engine.stats()["agents"] == 4

    clock.set(START + 599)
    assert engine.sweep() == 0
    clock.set(START + 600)
    assert engine.sweep() == 2
    assert engine.stats()["agents"] == 2
    assert [engine.agent(a).state for a in (short, child, long, forever)] == [
        "expired",
        "expired",
        "active",
        "active",
    ]
    assert reason(engine, short.handle) == "expired"
    assert reason(engine, child.id) == "expired"
    assert reason(engine, long) == "granted"
    assert engine.sweep() == 0

    clock.set(START + 7200)
    assert engine.sweep() == 1
    assert engine.agent(long).state == "expired"
    assert reason(engine, long.handle) == "expired"
    assert reason(engine, forever) == "granted"
    assert engine.sweep() == 0
    assert engine.stats()["agents"] == 1


# --- deprovision -----------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["handle", "id", "agent"])
def test_deprovision_cascades(engine: charter.Engine, by: str) -> None:
    root = engine.provision("forever", on_behalf_of="user:alice")
    child = engine.provision("long", on_behalf_of=root)
    grandchild = engine.provision("short", on_behalf_of=child)
    sibling = engine.provision("long", on_behalf_of=root)
    other = engine.provision("forever", on_behalf_of="user:alice")

    def ref_of(agent: charter.Agent) -> Any:
        return {"handle": agent.handle, "id": agent.id, "agent": agent}[by]

    assert engine.deprovision(ref_of(child)) == 2
    assert reason(engine, ref_of(child)) == "revoked"
    assert reason(engine, ref_of(grandchild)) == "delegator_revoked"
    assert engine.agent(child).state == "revoked"
    assert engine.agent(grandchild).state == "delegator_revoked"
    assert reason(engine, ref_of(root)) == "granted"
    assert reason(engine, ref_of(sibling)) == "granted"
    assert engine.deprovision(ref_of(child)) == 0
    assert engine.deprovision(ref_of(grandchild)) == 0

    assert engine.deprovision(ref_of(root)) == 2  # root and sibling; child's subtree was retired already
    assert reason(engine, ref_of(root)) == "revoked"
    assert reason(engine, ref_of(sibling)) == "delegator_revoked"
    assert reason(engine, ref_of(child)) == "revoked"
    assert reason(engine, ref_of(grandchild)) == "delegator_revoked"
    assert engine.deprovision(ref_of(root)) == 0
    # The principal and its other agents are untouched; retired agents deny whatever the request.
    assert reason(engine, ref_of(other)) == "granted"
    assert reason(engine, "user:alice") == "granted"
    assert reason(engine, ref_of(root), "no:such", "a//b") == "revoked"
    assert engine.stats()["agents"] == 1


def test_whole_tree_deprovision_counts_every_descendant(engine: charter.Engine) -> None:
    root = engine.provision("forever", on_behalf_of="user:bob")
    level = [root]
    for _ in range(2):
        level = [engine.provision("forever", on_behalf_of=p) for p in level for _ in range(3)]
    assert engine.stats()["agents"] == 1 + 3 + 9
    assert engine.deprovision(root.id) == 13
    assert engine.stats()["agents"] == 0
    assert all(reason(engine, a.handle) == "delegator_revoked" for a in level)


def test_provisioning_for_an_inactive_delegator_is_refused(
    engine: charter.Engine, clock: charter.ManualClock
) -> None:
    revoked = engine.provision("forever", on_behalf_of="user:alice")
    engine.deprovision(revoked)
    with pytest.raises(charter.ProvisionError):
        engine.provision("forever", on_behalf_of=revoked)
    expiring = engine.provision("short", on_behalf_of="user:alice")
    clock.advance(600)
    with pytest.raises(charter.ProvisionError):
        engine.provision("forever", on_behalf_of=expiring.handle)


def test_provision_errors(engine: charter.Engine) -> None:
    with pytest.raises(charter.ProvisionError):
        engine.provision("no-such-template", on_behalf_of="user:alice")
    with pytest.raises(charter.UnknownSubjectError):
        engine.provision("forever", on_behalf_of="user:nobody")
    assert engine.stats()["agents"] == 0


def test_stale_handle_after_slot_reuse_is_unknown_agent(engine: charter.Engine) -> None:
    victim = engine.provision("forever", on_behalf_of="user:alice")
    assert engine.deprovision(victim) == 1
    seen_handles = set()
    for _ in range(3 * 4096):
        assert reason(engine, victim.handle) == "revoked"
        assert reason(engine, victim.id) == "revoked"
        agent = engine.provision("forever", on_behalf_of="user:alice")
        assert agent.handle != victim.handle
        seen_handles.add(agent.handle)
        engine.deprovision(agent)
        if engine.check(victim.handle, "db:read").reason != "revoked":
            break
    else:
        pytest.fail("the registry never reused the victim's slot")
    assert len(seen_handles) >= 4096 - 1  # no reuse before 4096 slots are free
    # The slot now holds another agent; the stale handle reaches nothing.
    assert reason(engine, victim.handle) == "unknown_agent"
    assert reason(engine, victim.handle, "db:write") == "unknown_agent"
    assert reason(engine, victim.id) == "unknown_principal"  # an id nobody has any more
    with pytest.raises(charter.UnknownSubjectError):
        engine.agent(victim.handle)
    # Live agents in reused slots decide normally.
    fresh = [engine.provision("forever", on_behalf_of="user:bob") for _ in range(10)]
    assert all(a.handle != victim.handle for a in fresh)
    assert all(reason(engine, a.handle) == "granted" for a in fresh)
    assert all(reason(engine, a.handle, "db:write") == "delegator_denied" for a in fresh)
    assert reason(engine, victim.handle) == "unknown_agent"
    allowed, codes = engine.check_batch_reasons(
        [victim.handle, fresh[0].handle], [engine.action_id("db:read")] * 2, None
    )
    assert allowed.tolist() == [False, True]
    assert [charter.REASONS[c] for c in codes] == ["unknown_agent", "granted"]


# --- principals ------------------------------------------------------------------------------


def test_remove_principal_cascades(engine: charter.Engine) -> None:
    root = engine.provision("forever", on_behalf_of="user:alice")
    child = engine.provision("long", on_behalf_of=root)
    grandchild = engine.provision("short", on_behalf_of=child.id)
    second = engine.provision("short", on_behalf_of="user:alice")
    bobs = engine.provision("forever", on_behalf_of="user:bob")
    nobodys = engine.provision("forever")

    assert engine.remove_principal("user:alice") == 4
    for agent in (root, child, grandchild, second):
        assert reason(engine, agent.handle) == "principal_removed"
        assert reason(engine, agent.id) == "principal_removed"
        assert engine.agent(agent).state == "principal_removed"
    assert reason(engine, "user:alice") == "unknown_principal"
    assert reason(engine, "user:alice", "no:such", "a//b") == "unknown_principal"
    assert reason(engine, bobs) == "granted"
    assert reason(engine, nobodys) == "granted"
    with pytest.raises(charter.UnknownSubjectError):
        engine.provision("forever", on_behalf_of="user:alice")
    assert engine.deprovision(root) == 0
    assert engine.stats()["agents"] == 2


def test_removed_principal_stays_removed_after_reload(engine: charter.Engine) -> None:
    agent = engine.provision("forever", on_behalf_of="user:alice")
    engine.remove_principal("user:alice")
    engine.reload(policy(short={"roles": ["reader"]}))
    assert reason(engine, agent) == "principal_removed"


def test_upsert_principal_changes_existing_agents_and_survives_reload(engine: charter.Engine) -> None:
    agent = engine.provision("long", on_behalf_of="user:bob")  # template writer+mailer, bob a reader
    sub = engine.provision("forever", on_behalf_of=agent)
    assert reason(engine, agent, "db:write") == "delegator_denied"
    assert reason(engine, sub, "db:write") == "delegator_denied"
    assert reason(engine, "user:bob", "db:write") == "no_grant"

    engine.upsert_principal("user:bob", roles=["writer"], attributes={"team": "platform"})
    assert reason(engine, agent, "db:write") == "granted"
    assert reason(engine, sub, "db:write") == "granted"
    assert reason(engine, agent, "mail:send") == "delegator_denied"
    assert reason(engine, "user:bob", "db:write") == "granted"

    # A reload of a document that still says bob is a reader: the runtime principal wins.
    engine.reload(POLICY)
    assert reason(engine, agent.handle, "db:write") == "granted"
    assert reason(engine, sub.id, "db:write") == "granted"
    assert reason(engine, "user:bob", "db:write") == "granted"
    engine.reload(policy(long={"roles": ["reader", "mailer"]}))
    assert reason(engine, agent, "db:write") == "no_grant"
    assert reason(engine, sub, "db:write") == "delegator_denied"
    assert reason(engine, "user:bob", "db:write") == "granted"

    # Narrowing a principal at runtime narrows its agents at once.
    engine.upsert_principal("user:bob", roles=[])
    assert reason(engine, agent, "db:read") == "delegator_denied"
    assert reason(engine, "user:bob", "db:read") == "no_grant"


def test_upsert_of_a_new_principal(engine: charter.Engine) -> None:
    assert reason(engine, "user:carol") == "unknown_principal"
    engine.upsert_principal("user:carol", roles=["mailer"])
    assert reason(engine, "user:carol", "mail:send") == "granted"
    agent = engine.provision("long", on_behalf_of="user:carol")
    assert reason(engine, agent, "mail:send") == "granted"
    assert reason(engine, agent, "db:read") == "delegator_denied"
    engine.reload(POLICY)
    assert reason(engine, agent, "mail:send") == "granted"
    assert engine.remove_principal("user:carol") == 1
    assert reason(engine, agent, "mail:send") == "principal_removed"


# --- reload ----------------------------------------------------------------------------------


def test_reload_removing_a_template(engine: charter.Engine) -> None:
    doomed = engine.provision("short", on_behalf_of="user:alice")
    below = engine.provision("forever", on_behalf_of=doomed)
    kept = engine.provision("forever", on_behalf_of="user:alice")
    above = engine.provision("forever", on_behalf_of="user:alice")
    under_kept = engine.provision("short", on_behalf_of=above)

    old, new = engine.reload(policy(short=None))
    assert old != new == engine.policy_version
    for agent in (doomed, below, under_kept):
        assert reason(engine, agent.handle) == "unknown_template"
        assert reason(engine, agent.id) == "unknown_template"
    assert reason(engine, kept) == "granted"
    assert reason(engine, above) == "granted"
    assert engine.agent(doomed).id == doomed.id
    with pytest.raises(charter.ProvisionError):
        engine.provision("short", on_behalf_of="user:alice")
    allowed, codes = engine.check_batch_reasons(
        [doomed.handle, below.handle, kept.handle], [engine.action_id("db:read")] * 3
    )
    assert allowed.tolist() == [False, False, True]
    assert [charter.REASONS[c] for c in codes] == ["unknown_template", "unknown_template", "granted"]


def test_subject_problems_come_before_the_request_checks(engine: charter.Engine) -> None:
    """unknown_template / delegation_too_deep describe the subject: they precede unknown_action and
    invalid_resource, like the other subject and state checks (brief: subject, state, action, resource)."""
    gone = engine.provision("short", on_behalf_of="user:alice")
    deep = engine.provision("forever", on_behalf_of=engine.provision("forever", on_behalf_of="user:alice"))
    engine.reload(policy(short=None, forever={"roles": ["writer"], "max_delegation_depth": 1}))
    assert reason(engine, gone) == "unknown_template"
    assert reason(engine, deep) == "delegation_too_deep"
    assert reason(engine, gone, "no:such") == "unknown_template"
    assert reason(engine, gone, "db:read", "a//b") == "unknown_template"
    assert reason(engine, deep, "no:such") == "delegation_too_deep"
    assert reason(engine, deep, "db:read", "/a") == "delegation_too_deep"


def test_reload_lowering_max_delegation_depth(engine: charter.Engine) -> None:
    d1 = engine.provision("forever", on_behalf_of="user:alice")
    d2 = engine.provision("forever", on_behalf_of=d1)
    d3 = engine.provision("long", on_behalf_of=d2)
    d4 = engine.provision("forever", on_behalf_of=d3)
    assert [a.depth for a in (d1, d2, d3, d4)] == [1, 2, 3, 4]

    engine.reload(policy(forever={"roles": ["writer", "mailer"], "max_delegation_depth": 2}))
    assert [reason(engine, a) for a in (d1, d2, d3, d4)] == [
        "granted",
        "granted",
        "delegation_too_deep",
        "delegation_too_deep",
    ]
    with pytest.raises(charter.ProvisionError):
        engine.provision("long", on_behalf_of=d2)
    # Raising it again restores them.
    engine.reload(POLICY)
    assert [reason(engine, a) for a in (d1, d2, d3, d4)] == ["granted"] * 4


def test_provision_depth_limits(engine: charter.Engine) -> None:
    lone = engine.provision("forever")
    assert (lone.depth, lone.principal, lone.on_behalf_of) == (1, None, None)
    chain = [engine.provision("forever", on_behalf_of="user:alice")]
    for _ in range(3):  # default bound 4
        chain.append(engine.provision("forever", on_behalf_of=chain[-1]))
    assert [a.depth for a in chain] == [1, 2, 3, 4]
    assert all(a.principal == "user:alice" for a in chain)
    with pytest.raises(charter.ProvisionError):
        engine.provision("forever", on_behalf_of=chain[-1])
    # `shallow` (bound 2) fits at depth 2 but not 3 ...
    shallow = engine.provision("shallow", on_behalf_of=chain[0])
    assert shallow.depth == 2
    with pytest.raises(charter.ProvisionError):
        engine.provision("shallow", on_behalf_of=chain[1])
    # ... and bounds everything below it, whatever their own template says.
    with pytest.raises(charter.ProvisionError):
        engine.provision("forever", on_behalf_of=shallow)
    engine.reload(policy(shallow={"roles": ["reader"], "max_delegation_depth": 1}))
    with pytest.raises(charter.ProvisionError):
        engine.provision("forever", on_behalf_of=engine.provision("shallow", on_behalf_of="user:bob"))
    assert engine.provision("shallow", on_behalf_of="user:bob").depth == 1


def test_agent_id_collisions_are_refused(engine: charter.Engine) -> None:
    agent = engine.provision("forever", on_behalf_of="user:alice", agent_id="bot-1")
    assert agent.id == "bot-1"
    assert reason(engine, "bot-1", "db:write") == "granted"
    with pytest.raises(charter.ProvisionError):
        engine.provision("forever", on_behalf_of="user:bob", agent_id="bot-1")
    with pytest.raises(charter.ProvisionError):
        engine.provision("forever", on_behalf_of="user:bob", agent_id="user:alice")
    with pytest.raises(charter.ProvisionError):
        engine.provision("forever", agent_id=agent.id)
    # The failed attempts changed nothing.
    assert reason(engine, "bot-1", "db:write") == "granted"
    assert reason(engine, "user:alice", "db:write") == "granted"
    assert engine.agent("bot-1").principal == "user:alice"
    assert engine.stats()["agents"] == 1
    # A sub-agent can be named too, and delegated to by that name.
    sub = engine.provision("short", on_behalf_of="bot-1", agent_id="bot-1.a")
    assert (sub.on_behalf_of, sub.depth) == ("bot-1", 2)


def test_batches_report_every_lifecycle_state(engine: charter.Engine, clock: charter.ManualClock) -> None:
    """check_batch / check_batch_reasons (with and without resources) agree with check in every state."""
    active = engine.provision("forever", on_behalf_of="user:alice")
    expiring = engine.provision("short", on_behalf_of="user:alice")
    expiring_child = engine.provision("forever", on_behalf_of=expiring)
    revoked = engine.provision("forever", on_behalf_of="user:alice")
    revoked_child = engine.provision("long", on_behalf_of=revoked)
    bobs = engine.provision("long", on_behalf_of="user:bob")
    bobs_child = engine.provision("forever", on_behalf_of=bobs)
    doomed = engine.provision("shallow", on_behalf_of="user:alice")
    deep = engine.provision("forever", on_behalf_of=engine.provision("forever"))
    engine.deprovision(revoked)
    engine.remove_principal("user:bob")
    engine.reload(policy(shallow=None, forever={"roles": ["writer", "mailer"], "max_delegation_depth": 1}))
    clock.set(START + 600)
    expected_reasons = {
        active.handle: "granted",
        expiring.handle: "expired",
        expiring_child.handle: "expired",
        revoked.handle: "revoked",
        revoked_child.handle: "delegator_revoked",
        bobs.handle: "principal_removed",
        bobs_child.handle: "principal_removed",
        doomed.handle: "unknown_template",
        deep.handle: "delegation_too_deep",
        12345: "unknown_agent",
    }
    handles = list(expected_reasons)
    for handle, want in expected_reasons.items():
        assert reason(engine, handle) == want
    for action in ("db:read", "db:write", "mail:send"):
        action_ids = [engine.action_id(action)] * len(handles)
        singles = [engine.check(h, action) for h in handles]
        for resources in (None, [None] * len(handles), ["a/b"] * len(handles)):
            allowed, codes = engine.check_batch_reasons(handles, action_ids, resources)
            if resources and resources[0]:
                singles = [engine.check(h, action, "a/b") for h in handles]
            assert allowed.tolist() == [d.allowed for d in singles]
            assert [charter.REASONS[c] for c in codes] == [d.reason for d in singles]
            assert engine.check_batch(handles, action_ids, resources).tolist() == [d.allowed for d in singles]


# --- threads ---------------------------------------------------------------------------------


def test_check_batch_during_reloads_sees_one_policy_or_the_other(engine: charter.Engine) -> None:
    policy_a = POLICY
    policy_b = copy.deepcopy(POLICY)
    policy_b["roles"]["reader"] = {
        "allow": ["mail:send"],
        "deny": [{"action": "db:read", "on": ["secret/**"]}],
    }
    policy_b["principals"]["user:bob"] = {"roles": ["writer", "mailer"]}
    policy_b["templates"]["long"] = {"roles": ["mailer", "reader"], "ttl": "2h"}

    chains = [
        ("forever", "user:alice"),
        ("long", "user:bob"),
        ("short", "user:bob"),
        ("long", None),
        ("shallow", "user:alice"),
    ]
    agents: list[tuple[charter.Agent, list[str], str | None]] = []
    for template, principal in chains:
        agent = engine.provision(template, on_behalf_of=principal)
        agents.append((agent, [template], principal))
        sub = engine.provision("long", on_behalf_of=agent)
        agents.append((sub, ["long", template], principal))
    reqs = [(a, r) for a in POLICY["actions"] for r in (None, "secret/x", "a/b")]
    rows = [
        (agent, templates, principal, a, r) for agent, templates, principal in agents for a, r in reqs
    ] * 20
    handles = np.array([row[0].handle for row in rows], dtype=np.uint64)
    actions = np.array([engine.action_id(row[3]) for row in rows], dtype=np.uint32)
    resources = [row[4] for row in rows]

    def expected(doc: dict[str, Any]) -> tuple[list[bool], list[int]]:
        results = [ref.check_agent(doc, t, p, a, r) for _, t, p, a, r in rows]
        return [x.allowed for x in results], [charter.REASONS.index(x.reason) for x in results]

    want = {"A": expected(policy_a), "B": expected(policy_b)}
    assert want["A"][0] != want["B"][0]
    version = {"A": engine.policy_version}
    engine.reload(policy_b)
    version["B"] = engine.policy_version
    engine.reload(policy_a)

    stop = threading.Event()
    started = [threading.Event() for _ in range(4)]
    problems: list[str] = []
    seen: list[set[str]] = [set() for _ in range(4)]

    def worker(i: int) -> None:
        try:
            while True:
                if i % 2:
                    allowed = engine.check_batch(handles, actions, resources).tolist()
                    got = [name for name, (a, _) in want.items() if a == allowed]
                else:
                    allowed, codes = engine.check_batch_reasons(handles, actions, resources)
                    got = [name for name, w in want.items() if w == (allowed.tolist(), codes.tolist())]
                if not got:
                    problems.append(f"thread {i}: a batch matching neither policy")
                seen[i].update(got)
                started[i].set()
                if stop.is_set():
                    return
        except Exception as err:  # a failure must surface in the main thread
            problems.append(f"thread {i}: {err!r}")
            started[i].set()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        for event in started:
            event.wait()
        extra = []
        for i in range(200):
            name, doc = ("B", policy_b) if i % 2 == 0 else ("A", policy_a)
            assert engine.reload(doc)[1] == version[name]
            agent = engine.provision("long", on_behalf_of="user:bob")
            extra.append(agent)
            d = engine.check(agent, "db:write")
            expect = ref.check_agent(doc, ["long"], "user:bob", "db:write")
            assert (d.allowed, d.reason, d.policy_version) == (expect.allowed, expect.reason, version[name])
            if i % 3 == 0:
                assert engine.deprovision(extra.pop(0)) == 1
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert problems == []
    assert all(s for s in seen)
