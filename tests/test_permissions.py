"""`engine.permissions()`: what a principal or agent may do, checked against `engine.check()`.

Random policies (the generators of test_properties.py, with conditions, guards, hooks and
credential scopes), random delegation chains and random requests: for every action and a
sample of resources and contexts, the permissions' own decision equals the engine's.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import charter
import reference as ref
from charter.policy import from_dict
from charter.policytools.model import PolicyModel
from charter.policytools.permissions import Permissions
from test_properties import PRINCIPALS, contexts, policies, valid_resources

# Random policies are full of what the linter rightly warns about; not the subject here.
pytestmark = pytest.mark.filterwarnings("ignore::charter.policytools.lint.PolicyLintWarning")

SETTINGS = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
HOOKS: dict[str, Callable[[charter.HookRequest], Any]] = {
    "yes": lambda req: True,
    "no": lambda req: (False, "refused"),
    "boom": lambda req: 1 / 0,
}
HOOK_OUTCOMES = {"yes": True, "no": False, "boom": "error"}


def knows(context: Any) -> Callable[[str], Any]:
    """The outcome of every condition of a random policy for `context` (reference evaluator)."""
    return lambda src: ref.evaluate(ref.CONDITIONS[src], context)


def hook_outcome(hook: str, rule: str) -> Any:
    return HOOK_OUTCOMES[hook]


@st.composite
def with_hooks(draw: st.DrawFn, doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with a hook on some of its table entries."""
    doc = copy.deepcopy(doc)
    for role in doc["roles"].values():
        for effect in ("allow", "deny"):
            for entry in role.get(effect, []):
                if isinstance(entry, dict) and draw(st.integers(0, 2)) == 0:
                    entry["hook"] = draw(st.sampled_from(sorted(HOOKS)))
    return doc


@st.composite
def worlds(draw: st.DrawFn, conditions: bool = True, hooks: bool = False) -> tuple[dict[str, Any], list[Any]]:
    """A policy and the plan of agents to provision: (template, delegator index or principal, scope)."""
    doc = draw(policies(conditions=conditions))
    if hooks:
        doc = draw(with_hooks(doc))
    tools = sorted({a.split(":")[0] for a in doc["actions"]})
    scope = st.one_of(
        st.none(),
        st.lists(st.sampled_from([*doc["actions"], *(f"{t}:*" for t in tools)]), min_size=1, max_size=3),
    )
    plan = draw(
        st.lists(
            st.tuples(
                st.sampled_from(sorted(doc["templates"])),
                st.one_of(st.sampled_from([*PRINCIPALS, None]), st.integers(0, 5)),
                scope,
            ),
            max_size=5,
        )
    )
    return doc, plan


def provision(engine: charter.Engine, plan: list[Any]) -> list[charter.Agent]:
    agents: list[charter.Agent] = []
    for template, delegator, scope in plan:
        parent: Any = delegator
        if isinstance(delegator, int):
            if not agents:
                continue
            parent = agents[delegator % len(agents)]
        try:
            agents.append(engine.provision(template, on_behalf_of=parent, scope=scope))
        except charter.ProvisionError:
            continue  # too deep for the chain's templates
    return agents


def sample_resources(doc: dict[str, Any], drawn: Sequence[str]) -> list[str | None]:
    """Drawn names, names made from the policy's patterns (so that entries match), and none."""
    made: list[str | None] = [None, *drawn]
    patterns = [p for ps in doc["resources"].values() for p in ps]
    for role in doc["roles"].values():
        for entry in (*role.get("allow", []), *role.get("deny", [])):
            if isinstance(entry, dict):
                patterns += [p for p in entry.get("on", []) if not p.startswith("@")]
    for p in patterns[:8]:
        for fill in ("a", "d"):
            made.append("/".join(fill if s == "*" else s for s in p.split("/") if s != "**") or fill)
            made.append(
                "/".join(f"{fill}/{fill}" if s == "**" else (fill if s == "*" else s) for s in p.split("/"))
            )
    return list(dict.fromkeys(made))


def agree(
    engine: charter.Engine,
    subject: Any,
    perms: Permissions,
    actions: Sequence[str],
    resources: Sequence[str | None],
    ctxs: Sequence[Any],
    hooks: bool,
) -> None:
    hook = hook_outcome if hooks else None
    for action in actions:
        for resource in resources:
            fixed = perms.decide(action, resource)
            for ctx in ctxs:
                want = engine.check(subject, action, resource, ctx).allowed
                kw: dict[str, Any] = {"when": knows(ctx)}
                if hook is not None:
                    kw["hook"] = hook
                got = perms.decide(action, resource, **kw)
                assert got is want, (subject, action, resource, ctx, got, want)
                assert fixed is None or fixed is want, (subject, action, resource, ctx, fixed)
                if action not in perms:
                    assert not want, (subject, action, resource, ctx)
                elif perms.actions[action].always:
                    assert want, (subject, action, resource, ctx)


@SETTINGS
@given(
    world=worlds(),
    drawn=st.lists(valid_resources, max_size=4),
    ctxs=st.lists(contexts, min_size=1, max_size=3),
)
def test_permissions_agree_with_check(
    world: tuple[dict[str, Any], list[Any]], drawn: list[str], ctxs: list[Any]
) -> None:
    doc, plan = world
    engine = charter.Engine.from_dict(doc)
    agents = provision(engine, plan)
    resources = sample_resources(doc, drawn)
    for subject in [*PRINCIPALS, *agents, "nobody"]:
        perms = engine.permissions(subject)
        agree(engine, subject, perms, doc["actions"], resources, ctxs, hooks=False)
        for resource in [r for r in resources if r is not None][:4]:
            one = engine.permissions(subject, resource)
            for action in doc["actions"]:
                verdict = perms.decide(action, resource)
                assert (action in one) == (verdict is not False), (subject, action, resource)
                assert (action in one and one.actions[action].always) == (verdict is True)


@SETTINGS
@given(
    world=worlds(hooks=True),
    drawn=st.lists(valid_resources, max_size=3),
    ctxs=st.lists(contexts, min_size=1, max_size=2),
)
def test_permissions_with_hooks_agree_with_check(
    world: tuple[dict[str, Any], list[Any]], drawn: list[str], ctxs: list[Any]
) -> None:
    doc, plan = world
    engine = charter.Engine.from_dict(doc, hooks=HOOKS)
    agents = provision(engine, plan)
    for subject in [*PRINCIPALS, *agents]:
        agree(
            engine,
            subject,
            engine.permissions(subject),
            doc["actions"],
            sample_resources(doc, drawn),
            ctxs,
            True,
        )


@SETTINGS
@given(world=worlds(conditions=False), drawn=st.lists(valid_resources, max_size=4))
def test_every_listed_action_has_an_allowed_example(
    world: tuple[dict[str, Any], list[Any]], drawn: list[str]
) -> None:
    """Without conditions the listing is exact both ways: each listed action comes with a request
    the engine allows, and no sampled request of an unlisted action is allowed."""
    doc, plan = world
    engine = charter.Engine.from_dict(doc)
    agents = provision(engine, plan)
    for subject in [*PRINCIPALS, *agents]:
        perms = engine.permissions(subject)
        for action, p in perms.actions.items():
            assert p.example is not None
            assert engine.check(subject, action, p.example.resource).allowed, (subject, action, p.example)
            for g in p.grants:
                assert g.on is None or g.on, g
        for action in set(doc["actions"]) - set(perms.actions):
            for resource in sample_resources(doc, drawn):
                assert not engine.check(subject, action, resource).allowed


@SETTINGS
@given(doc=policies(conditions=True))
def test_model_levels_equal_the_engines(doc: dict[str, Any]) -> None:
    """The resolved policy model (used by lint, who-can and diff) lists, for every principal's level
    and action, the same entries as the engine's explanations: rule, effect, patterns, condition."""
    engine = charter.Engine.from_dict(doc)
    model = PolicyModel(from_dict(doc))
    for principal in PRINCIPALS:
        for action in doc["actions"]:
            level = engine.explain(principal, action).to_dict()["chain"][0]
            assert tuple(level["roles"]) == model.closure(doc["principals"][principal]["roles"])
            theirs = {
                (e["rule"], e["effect"], frozenset(e["on"] or ()), e["on"] is None, e.get("when"))
                for e in level["entries"]
            }
            ours = {
                (e.rule, e.effect, frozenset(e.on or ()), e.on is None, e.when)
                for e in model.level_entries(level["roles"])
                if action in e.actions
            }
            assert ours == theirs, (principal, action)


# --- examples -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "allowed"),
    [("no", "yes", False), ("yes", "no", True), ("boom", "yes", False), ("yes", "boom", True)],
)
def test_the_first_hooked_allow_decides(first: str, second: str, allowed: bool) -> None:
    """Of several allows with hooks, the engine consults the first (role-name order, then document
    order): a later one that would agree does not count. Roles `b` and `a` are written in reverse."""
    engine = charter.Engine.from_dict(
        {
            "actions": ["x:y"],
            "roles": {
                "b": {"allow": [{"action": "x:y", "hook": second}]},
                "a": {"allow": [{"action": "x:y", "hook": first}, {"action": "x:y", "hook": second}]},
            },
            "principals": {"p": {"roles": ["b", "a"]}},
        },
        hooks=HOOKS,
    )
    assert engine.check("p", "x:y").allowed is allowed
    perms = engine.permissions("p")
    assert perms.decide("x:y", hook=hook_outcome) is allowed
    assert perms.decide("x:y") is None  # hooks are Python code: not known without an oracle


def test_example_policy_permissions() -> None:
    engine = charter.Engine.example()
    alice = engine.permissions("user:alice")
    assert set(alice.always) == {"tickets:read", "tickets:write", "crm:read", "deploy:read"}
    crm_write = alice.actions["crm:write"]
    assert [g.on for g in crm_write.grants] == [("customers/*", "users/*/profile")]
    assert [(e.rule, e.on) for e in crm_write.excepts] == [("roles.support.deny[0]", ("users/*/profile",))]
    assert "payments:refund" not in alice
    export = alice.actions["db:export"]
    assert [g.on for g in export.grants] == [("analytics/**",)]
    assert export.guards == ()  # the @pii guard covers no resource the grant reaches
    assert alice.decide("crm:write", "customers/7") is True
    assert alice.decide("crm:write", "users/7/profile") is False


def test_agent_permissions_are_the_intersection_along_the_chain() -> None:
    engine = charter.Engine.example()
    bot = engine.provision("support-bot", on_behalf_of="user:alice")
    sub = engine.provision("research-subagent", on_behalf_of=bot)
    perms = engine.permissions(sub)
    # research-subagent holds viewer and analyst; support-bot holds support; alice both.
    assert set(perms) == {"tickets:read", "crm:read", "deploy:read"}
    assert [lv.kind for lv in perms.chain] == ["agent", "agent", "principal"]
    assert perms.subject == sub.id
    scoped = engine.provision("support-bot", on_behalf_of="user:alice", scope=["tickets:*"])
    assert set(engine.permissions(scoped)) == {"tickets:read", "tickets:write"}
    assert engine.permissions(scoped).scope == frozenset({"tickets:read", "tickets:write"})


def test_patterns_are_intersected_along_the_chain() -> None:
    engine = charter.Engine.from_toml(
        """
        actions = ["fs:read"]
        [roles.home]
        allow = [{ action = "fs:read", on = ["home/**"] }]
        [roles.docs]
        allow = [{ action = "fs:read", on = ["**/docs/*"], when = 'context.ok == true' }]
        [principals."user:u"]
        roles = ["home"]
        [templates.reader]
        roles = ["docs"]
        """
    )
    agent = engine.provision("reader", on_behalf_of="user:u")
    (grant,) = engine.permissions(agent).actions["fs:read"].grants
    assert grant.on == ("home/**/docs/*",)
    assert grant.when == ("context.ok == true",)
    assert grant.rules == ("roles.docs.allow[0]", "roles.home.allow[0]")
    assert engine.permissions(agent).decide("fs:read", "home/u/docs/a") is None  # depends on context.ok
    assert engine.check(agent, "fs:read", "home/u/docs/a", {"ok": True}).allowed


def test_subjects_that_can_do_nothing() -> None:
    engine = charter.Engine.example()
    assert engine.permissions("nobody").denied == "unknown_principal"
    agent = engine.provision("support-bot", on_behalf_of="user:alice")
    engine.suspend(agent)
    assert engine.permissions(agent).denied == "suspended"
    assert len(engine.permissions(agent)) == 0
    engine.resume(agent)
    engine.deprovision(agent)
    assert engine.permissions(agent.handle).denied == "revoked"
    assert engine.permissions("user:alice", "a//b").denied == "invalid_resource"
    with pytest.raises(charter.InvalidRequestError):
        engine.permissions(None)  # type: ignore[arg-type]


def test_permissions_charge_no_quota_and_follow_reloads() -> None:
    doc = {
        "actions": ["db:read"],
        "quotas": {"one": {"rate": "1/h", "burst": 1}},
        "roles": {"r": {"allow": ["db:read"]}},
        "principals": {"user:u": {"roles": ["r"]}},
        "templates": {"t": {"roles": ["r"], "quota": "one"}},
    }
    engine = charter.Engine.from_dict(doc)
    agent = engine.provision("t", on_behalf_of="user:u")
    for _ in range(3):
        assert engine.permissions(agent).always == ["db:read"]
    assert engine.check(agent, "db:read").allowed  # the one request the quota admits
    assert engine.check(agent, "db:read").reason == "rate_limited"
    engine.reload({**doc, "roles": {"r": {"allow": [{"action": "db:read", "on": ["x/*"]}]}}})
    assert engine.permissions(agent).always == []
    engine.upsert_principal("user:v", roles=["r"])
    assert engine.permissions("user:v").decide("db:read", "x/1") is True


def test_text_and_dict_forms() -> None:
    perms = charter.Engine.example().permissions("user:alice")
    text = str(perms)
    assert "crm:write:" in text
    assert "except on users/*/profile [roles.support.deny[0]]" in text
    data = perms.to_dict()
    assert data["subject"] == "user:alice"
    assert {a["action"] for a in data["actions"]} == set(perms)


# --- the pattern reasoning underneath -----------------------------------------------------------------

SEGMENTS = ["a", "b", "*", "**"]
patterns_ = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3).map("/".join)
scopes = st.one_of(st.none(), st.lists(patterns_, min_size=1, max_size=2).map(tuple))
NAMES = ["/".join(p) for n in range(1, 5) for p in __import__("itertools").product(["a", "b", "c"], repeat=n)]


def in_scope(scope: tuple[str, ...] | None, name: str | None) -> bool:
    """A brute-force reading of the documented semantics (reference.py's matcher)."""
    if scope is None:
        return True
    return name is not None and any(ref.segments_match(p.split("/"), name.split("/")) for p in scope)


@settings(max_examples=300, deadline=None)
@given(
    required=st.lists(st.lists(scopes, min_size=1, max_size=2), min_size=1, max_size=3),
    forbidden=st.lists(scopes, max_size=3),
)
def test_find_request_is_exact(required: list[list[Any]], forbidden: list[Any]) -> None:
    from charter.policytools.patterns import find_request

    def ok(name: str | None) -> bool:
        return all(any(in_scope(s, name) for s in g) for g in required) and not any(
            in_scope(s, name) for s in forbidden
        )

    found = find_request(required, forbidden)
    if found is None:
        assert not any(ok(n) for n in [None, *NAMES])
    else:
        assert ok(found.resource), found


@settings(max_examples=300, deadline=None)
@given(p=patterns_, q=patterns_)
def test_intersection_is_exact(p: str, q: str) -> None:
    from charter.policytools.patterns import intersect

    both = intersect(p, q)
    for name in NAMES:
        want = in_scope((p,), name) and in_scope((q,), name)
        assert any(in_scope((r,), name) for r in both) == want, (p, q, both, name)


# --- who can, and the command line -----------------------------------------------------------------


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(doc=policies(), drawn=st.lists(valid_resources, min_size=1, max_size=3))
def test_who_can_agrees_with_check(doc: dict[str, Any], drawn: list[str]) -> None:
    """Without conditions: on a given resource, who-can lists exactly the roles, principals and
    templates (and the principals a template's agents work for) whose requests the engine allows."""
    from charter.policytools.whocan import who_can

    engine = charter.Engine.from_dict(doc)
    for role in doc["roles"]:
        engine.upsert_principal(f"role:{role}", roles=[role])
    agents = {
        (t, p): engine.provision(t, on_behalf_of=p) for t in doc["templates"] for p in [None, *PRINCIPALS]
    }
    model_doc = from_dict(doc)
    for action in doc["actions"]:
        for resource in [*drawn, *sample_resources(doc, [])[1:6]]:
            answer = who_can(model_doc, action, resource)
            assert {h.name for h in answer.roles} == {
                r for r in doc["roles"] if engine.check(f"role:{r}", action, resource).allowed
            }
            assert {h.name for h in answer.principals} == {
                p for p in PRINCIPALS if engine.check(p, action, resource).allowed
            }
            listed = {h.name: set(h.for_principals) for h in answer.templates}
            assert set(listed) == {
                t for t in doc["templates"] if engine.check(agents[t, None], action, resource).allowed
            }
            for t, for_principals in listed.items():
                assert for_principals == {
                    p for p in PRINCIPALS if engine.check(agents[t, p], action, resource).allowed
                }


def test_who_can_everything_and_errors() -> None:
    from charter.policytools.whocan import who_can

    doc = from_dict(
        {
            "actions": ["fs:read", "fs:write"],
            "roles": {
                "r": {"allow": [{"action": "fs:read", "on": ["home/**"]}]},
                "w": {"allow": ["fs:write"]},
            },
            "principals": {"user:u": {"roles": ["r"]}},
            "templates": {"t": {"roles": ["r"]}, "u": {"roles": ["w"]}},
        }
    )
    answer = who_can(doc, "fs:read")
    assert [h.name for h in answer.roles] == ["r"]
    assert answer.roles[0].permission.grants[0].on == ("home/**",)
    assert [(h.name, h.for_principals) for h in answer.templates] == [("t", ("user:u",))]
    assert "for: user:u" in str(answer)
    assert who_can(doc, "fs:write").templates[0].for_principals == ()
    assert who_can(doc, "fs:read", "a//b").roles == ()
    with pytest.raises(charter.UnknownActionError):
        who_can(doc, "fs:delete")


def test_cli_who_can_and_permissions(capsys: pytest.CaptureFixture[str]) -> None:
    from charter import cli
    from charter.policy import example_path

    example = str(example_path())
    assert cli.main(["policy", "who-can", example, "payments:payout", "ledger/1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("who can payments:payout on ledger/1:\n  roles:\n    admin:")
    assert "  templates: none" in out
    assert cli.main(["policy", "who-can", example, "db:drop", "prod/x"]) == 1
    capsys.readouterr()
    assert cli.main(["policy", "who-can", example, "db:export", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in data["roles"]] == ["admin", "analyst", "engineer"]
    assert cli.main(["policy", "who-can", example, "db:nope"]) == 2
    capsys.readouterr()
    assert cli.main(["policy", "permissions", example, "user:bob", "--agent-template", "deploy-agent"]) == 0
    out = capsys.readouterr().out
    assert "(deploy-agent agent for user:bob)" in out.splitlines()[0]
    assert cli.main(["policy", "permissions", example, "user:alice", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["subject"] == "user:alice"


def test_matching_equals_the_reference() -> None:
    import itertools

    from charter.policytools.patterns import matches

    patterns = ["/".join(p) for n in range(1, 4) for p in itertools.product(SEGMENTS, repeat=n)]
    for p in patterns:
        for name in NAMES:
            assert matches(p, name) == ref.segments_match(p.split("/"), name.split("/")), (p, name)
