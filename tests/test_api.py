"""The public Python API contract: names, value types, argument handling, errors, example decisions."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import charter

REASONS = [
    "granted",
    "denied_by_rule",
    "no_grant",
    "delegator_denied",
    "unknown_action",
    "unknown_principal",
    "unknown_agent",
    "expired",
    "revoked",
    "delegator_revoked",
    "principal_removed",
    "unknown_template",
    "delegation_too_deep",
    "invalid_resource",
    "internal_error",
    "malformed_request",
    "out_of_scope",
    "rate_limited",
    "budget_exhausted",
    "concurrency_limit",
    "suspended",
    "frozen",
    "condition_failed",
    "guard_failed",
    "hook_denied",
    "hook_error",
    "audit_unavailable",
    "approval_required",
    "approval_mismatch",
    "approval_expired",
    "approval_replayed",
    "approval_invalid",
    "quota_unavailable",
]


def reason_of(d: charter.Decision) -> tuple[bool, str, str | None]:
    return d.allowed, d.reason, d.rule


# ---------------------------------------------------------------------- exports


def test_exported_names() -> None:
    expected = {
        "BUILD_PROFILE",
        "REASONS",
        "Agent",
        "AuthenticationError",
        "CapacityError",
        "CharterError",
        "Decision",
        "Engine",
        "Explanation",
        "InternalError",
        "InvalidRequestError",
        "Lease",
        "ManualClock",
        "PermissionDenied",
        "PolicyError",
        "ProvisionError",
        "ServerUnavailable",
        "UnknownActionError",
        "UnknownSubjectError",
    }
    assert set(charter.__all__) == expected
    for name in expected:
        assert hasattr(charter, name), name
    assert isinstance(charter.__version__, str)
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", charter.__version__)


def test_exception_hierarchy() -> None:
    c = charter
    assert issubclass(c.PolicyError, c.CharterError)
    assert issubclass(c.PolicyError, ValueError)
    assert issubclass(c.ProvisionError, ValueError)
    assert issubclass(c.UnknownSubjectError, LookupError)
    assert issubclass(c.UnknownActionError, LookupError)
    assert issubclass(c.InvalidRequestError, ValueError)
    assert issubclass(c.CapacityError, RuntimeError)
    assert issubclass(c.InternalError, RuntimeError)
    for cls in (
        c.ProvisionError,
        c.UnknownSubjectError,
        c.UnknownActionError,
        c.InvalidRequestError,
        c.CapacityError,
        c.InternalError,
        c.PermissionDenied,
    ):
        assert issubclass(cls, c.CharterError)


def test_reasons_table() -> None:
    assert list(charter.REASONS) == REASONS


def test_build_profile() -> None:
    assert charter.BUILD_PROFILE in ("debug", "release")


def test_engine_subclasses_the_core() -> None:
    assert issubclass(charter.Engine, charter._core.Engine)
    assert isinstance(charter.Engine.example(), charter.Engine)


# --------------------------------------------------------------------- Decision


def test_decision_fields(example_engine: charter.Engine) -> None:
    d = example_engine.check("user:alice", "crm:read", "customers/42")
    assert d.allowed is True
    assert bool(d) is True
    assert d.reason == "granted"
    assert d.reason_code == 0
    assert charter.REASONS[d.reason_code] == d.reason
    assert d.rule in ("roles.viewer.allow[1]",)
    assert d.policy_version == example_engine.policy_version
    assert isinstance(d.why, str)
    assert d.why

    d = example_engine.check("user:alice", "db:read", "customers/42")
    assert d.allowed is False
    assert bool(d) is False
    assert not d
    assert (d.reason, d.reason_code, d.rule) == ("denied_by_rule", 1, "roles.analyst.deny[0]")

    d = example_engine.check("user:dave", "db:read")
    assert (d.reason, d.reason_code, d.rule) == ("no_grant", 2, None)


def test_decision_why_differs_by_reason(example_engine: charter.Engine) -> None:
    whys = {
        example_engine.check("user:dave", "tickets:read").why,
        example_engine.check("user:dave", "db:read").why,
        example_engine.check("nobody", "db:read").why,
        example_engine.check("user:dave", "nope:x").why,
    }
    assert len(whys) == 4


def test_decision_to_dict(example_engine: charter.Engine) -> None:
    d = example_engine.check("user:alice", "db:read", "customers/42")
    assert d.to_dict() == {
        "allowed": False,
        "reason": "denied_by_rule",
        "rule": "roles.analyst.deny[0]",
        "policy_version": example_engine.policy_version,
        "retry_after": None,
    }
    d = example_engine.check("user:dave", "db:read")
    assert d.to_dict() == {
        "allowed": False,
        "reason": "no_grant",
        "rule": None,
        "policy_version": example_engine.policy_version,
        "retry_after": None,
    }


def test_decision_repr(example_engine: charter.Engine) -> None:
    d = example_engine.check("user:alice", "crm:read", "customers/42")
    r = repr(d)
    assert r.startswith("Decision(")
    assert "allowed=True" in r
    assert "granted" in r
    assert "roles.viewer.allow[1]" in r
    assert example_engine.policy_version in r
    # Python-facing text: no Rust `Option` debug output.
    assert "Some(" not in r
    r = repr(example_engine.check("user:dave", "db:read"))
    assert "allowed=False" in r
    assert "rule=None" in r


def test_decision_is_immutable(example_engine: charter.Engine) -> None:
    d = example_engine.check("user:dave", "tickets:read")
    with pytest.raises(AttributeError):
        d.allowed = False  # type: ignore[misc]


# ---------------------------------------------------------------------- require


def test_require(example_engine: charter.Engine) -> None:
    d = example_engine.require("user:alice", "crm:read", "customers/42")
    assert d.allowed
    with pytest.raises(charter.PermissionDenied) as info:
        example_engine.require("user:alice", "db:read", "customers/42")
    err = info.value
    assert isinstance(err, charter.CharterError)
    assert err.decision.allowed is False
    assert err.decision.reason == "denied_by_rule"
    assert err.decision.rule == "roles.analyst.deny[0]"
    assert "denied_by_rule" in str(err)
    assert "db:read" in str(err)
    assert "roles.analyst.deny[0]" in str(err)


def test_require_never_raises_anything_but_permission_denied(example_engine: charter.Engine) -> None:
    for args in [
        (None, "db:read"),
        ("nobody", "db:read"),
        ("user:dave", "nope:x"),
        ("user:dave", "db:read", "//"),
    ]:
        with pytest.raises(charter.PermissionDenied):
            example_engine.require(*args)


# ----------------------------------------------------------- malformed requests


@pytest.mark.parametrize(
    "args",
    [
        (None, "db:read"),
        (1.5, "db:read"),
        (["user:alice"], "db:read"),
        (("user:alice",), "db:read"),
        ({"id": "user:alice"}, "db:read"),
        (b"user:alice", "db:read"),
        (-1, "db:read"),
        (2**64, "db:read"),
        (2**70, "db:read"),
        ("user:alice", None),
        ("user:alice", 1.5),
        ("user:alice", ["db:read"]),
        ("user:alice", b"db:read"),
        ("user:alice", -1),
        ("user:alice", 2**32),
        ("user:alice", "db:read", 3),
        ("user:alice", "db:read", b"customers/1"),
        ("user:alice", "db:read", ["customers/1"]),
        ("user:alice", "db:read", 1.5),
        (object(), object(), object()),
    ],
)
def test_malformed_check_arguments_deny(example_engine: charter.Engine, args: tuple[Any, ...]) -> None:
    d = example_engine.check(*args)
    assert d.allowed is False
    assert d.reason == "malformed_request"
    assert d.reason_code == REASONS.index("malformed_request")
    assert d.rule is None
    assert d.policy_version == example_engine.policy_version


def test_context_is_accepted_and_ignored(example_engine: charter.Engine) -> None:
    base = example_engine.check("user:alice", "crm:read", "customers/42")
    for context in (None, {}, {"ip": "10.0.0.1"}):
        assert (
            example_engine.check("user:alice", "crm:read", "customers/42", context).to_dict()
            == base.to_dict()
        )
    assert example_engine.check("user:alice", "crm:read", "customers/42", context={"x": 1}).allowed


def test_action_ids_as_ints(example_engine: charter.Engine) -> None:
    e = example_engine
    assert e.actions == [
        "tickets:read",
        "tickets:write",
        "email:send",
        "crm:read",
        "crm:write",
        "db:read",
        "db:write",
        "db:export",
        "db:drop",
        "payments:read",
        "payments:refund",
        "payments:payout",
        "deploy:read",
        "deploy:run",
        "deploy:rollback",
    ]
    for i, name in enumerate(e.actions):
        assert e.action_id(name) == i
        for who, res in [
            ("user:alice", None),
            ("user:alice", "customers/1"),
            ("user:bob", "prod/x"),
            ("user:carol", "ledger/1"),
        ]:
            assert e.check(who, i, res).to_dict() == e.check(who, name, res).to_dict()


def test_out_of_range_action_id(example_engine: charter.Engine) -> None:
    n = len(example_engine.actions)
    for a in (n, n + 1, 2**32 - 1):
        d = example_engine.check("user:alice", a)
        assert (d.allowed, d.reason) == (False, "unknown_action")


def test_unknown_action_name(example_engine: charter.Engine) -> None:
    for a in ("db:nope", "", "db:*", "*", "DB:READ"):
        assert example_engine.check("user:bob", a).reason == "unknown_action"
    with pytest.raises(charter.UnknownActionError):
        example_engine.action_id("db:nope")


def test_subject_forms(example_engine: charter.Engine) -> None:
    e = example_engine
    a = e.provision("analytics-agent", on_behalf_of="user:alice")
    expected = e.check(a.handle, "db:read", "analytics/x").to_dict()
    assert expected["allowed"]
    for subject in (a, a.id, a.handle, int(a)):
        assert e.check(subject, "db:read", "analytics/x").to_dict() == expected
    assert e.check(12345, "db:read").reason == "unknown_agent"
    assert e.check(0, "db:read").reason == "unknown_agent"
    assert e.check("agt_nope", "db:read").reason == "unknown_principal"


@pytest.mark.parametrize("resource", ["", "/a", "a/", "a//b", "/", "x" * 4097])
def test_invalid_resource(example_engine: charter.Engine, resource: str) -> None:
    d = example_engine.check("user:alice", "crm:read", resource)
    assert (d.allowed, d.reason, d.rule) == (False, "invalid_resource", None)


def test_resource_length_limit(example_engine: charter.Engine) -> None:
    assert example_engine.check("user:alice", "crm:read", "x" * 4096).allowed


def test_check_order(example_engine: charter.Engine) -> None:
    # subject, then action, then resource
    assert example_engine.check("nobody", "nope:x", "//").reason == "unknown_principal"
    assert example_engine.check("user:alice", "nope:x", "//").reason == "unknown_action"
    assert example_engine.check("user:alice", "tickets:read", "//").reason == "invalid_resource"


# ------------------------------------------------------------------- check_batch


@pytest.fixture
def batch_setup(clocked_engine: charter.Engine, clock: charter.ManualClock) -> dict[str, Any]:
    e = clocked_engine
    live = e.provision("writer-bot", on_behalf_of="user:w")
    reader = e.provision("reader-bot", on_behalf_of="user:a")
    revoked = e.provision("reader-bot", on_behalf_of="user:w")
    child = e.provision("reader-bot", on_behalf_of=revoked)
    short = e.provision("reader-bot", on_behalf_of="user:r", ttl=5)
    over = e.provision("admin-bot", on_behalf_of="user:r")
    e.deprovision(revoked)
    clock.advance(10)
    return {
        "engine": e,
        "handles": [
            live.handle,
            reader.handle,
            over.handle,
            revoked.handle,
            child.handle,
            short.handle,
            999_999,
            0,
        ],
    }


RESOURCES = [None, "customers/1", "secret/x", "outbox/1", "a//b"]


def test_batch_matches_single_checks(batch_setup: dict[str, Any]) -> None:
    e: charter.Engine = batch_setup["engine"]
    hs, acts, res, expected = [], [], [], []
    for h in batch_setup["handles"]:
        for a in [*range(len(e.actions)), len(e.actions)]:
            for r in RESOURCES:
                hs.append(h)
                acts.append(a)
                res.append(r)
                expected.append(e.check(h, a, r))
    allowed, reasons = e.check_batch_reasons(hs, acts, res)
    assert allowed.dtype == np.bool_
    assert reasons.dtype == np.uint8
    assert allowed.shape == reasons.shape == (len(hs),)
    assert allowed.tolist() == [d.allowed for d in expected]
    assert [charter.REASONS[c] for c in reasons] == [d.reason for d in expected]
    assert reasons.tolist() == [d.reason_code for d in expected]
    assert e.check_batch(hs, acts, res).tolist() == allowed.tolist()
    # all reasons of interest occur
    seen = {d.reason for d in expected}
    assert {
        "granted",
        "denied_by_rule",
        "no_grant",
        "delegator_denied",
        "revoked",
        "delegator_revoked",
    } <= seen
    assert {"expired", "unknown_agent", "unknown_action", "invalid_resource"} <= seen


def test_batch_without_resources(batch_setup: dict[str, Any]) -> None:
    e: charter.Engine = batch_setup["engine"]
    hs = [h for h in batch_setup["handles"] for _ in e.actions]
    acts = [a for _ in batch_setup["handles"] for a in range(len(e.actions))]
    allowed, reasons = e.check_batch_reasons(hs, acts)
    expected = [e.check(h, a) for h, a in zip(hs, acts, strict=True)]
    assert allowed.tolist() == [d.allowed for d in expected]
    assert reasons.tolist() == [d.reason_code for d in expected]
    allowed2, reasons2 = e.check_batch_reasons(hs, acts, [None] * len(hs))
    assert allowed2.tolist() == allowed.tolist()
    assert reasons2.tolist() == reasons.tolist()


_CONVERSIONS = {
    "list": list,
    "tuple": tuple,
    "int64": lambda x: np.asarray(x, dtype=np.int64),
    "uint64": lambda x: np.asarray(x, dtype=np.uint64),
    "strided": lambda x: np.repeat(np.asarray(x, dtype=np.int64), 2)[::2],
    "fortran": lambda x: np.asfortranarray(np.asarray(x, dtype=np.uint64)),
}


@pytest.mark.parametrize("convert", list(_CONVERSIONS.values()), ids=list(_CONVERSIONS))
def test_batch_input_coercion(example_engine: charter.Engine, convert: Callable[[list[int]], Any]) -> None:
    e = example_engine
    a = e.provision("analytics-agent", on_behalf_of="svc:nightly-etl")
    acts = [e.action_id(n) for n in ("db:read", "db:write", "tickets:read", "db:export")]
    hs = convert([a.handle] * 4)
    assert e.check_batch(hs, convert(acts)).tolist() == [True, False, True, False]
    allowed, reasons = e.check_batch_reasons(hs, convert(acts), ["analytics/x"] * 4)
    assert allowed.tolist() == [True, False, True, True]
    assert reasons.dtype == np.uint8
    # small integer dtypes for action ids
    for dtype in (np.int32, np.uint8, np.int16):
        assert e.check_batch(hs, np.asarray(acts, dtype=dtype)).tolist() == [True, False, True, False]


def test_batch_empty(example_engine: charter.Engine) -> None:
    allowed = example_engine.check_batch([], [])
    assert allowed.shape == (0,)
    assert allowed.dtype == np.bool_
    allowed, reasons = example_engine.check_batch_reasons(
        np.array([], dtype=np.uint64), np.array([], dtype=np.uint32), []
    )
    assert allowed.shape == reasons.shape == (0,)
    assert reasons.dtype == np.uint8


def test_batch_length_mismatch(example_engine: charter.Engine) -> None:
    e = example_engine
    a = e.provision("analytics-agent", on_behalf_of="user:alice")
    with pytest.raises(charter.InvalidRequestError):
        e.check_batch([a.handle, a.handle], [0])
    with pytest.raises(charter.InvalidRequestError):
        e.check_batch([a.handle], [0, 1])
    with pytest.raises(charter.InvalidRequestError):
        e.check_batch_reasons([a.handle], [0], ["x", "y"])
    with pytest.raises(charter.InvalidRequestError):
        e.check_batch([a.handle, a.handle], [0, 0], ["x"])
    with pytest.raises(charter.InvalidRequestError):
        e.check_batch([], [], ["x"])


def test_batch_not_one_dimensional(example_engine: charter.Engine) -> None:
    e = example_engine
    with pytest.raises(charter.InvalidRequestError):
        e.check_batch(np.zeros((2, 2), dtype=np.uint64), np.zeros((2, 2), dtype=np.uint32))
    with pytest.raises(charter.InvalidRequestError):
        e.check_batch(np.zeros((2, 1), dtype=np.uint64), [0, 0])
    with pytest.raises(charter.InvalidRequestError):
        e.check_batch_reasons([0, 0], [[0], [0]])


def test_batch_scalar_is_not_one_dimensional(example_engine: charter.Engine) -> None:
    a = example_engine.provision("analytics-agent", on_behalf_of="user:alice")
    with pytest.raises(charter.InvalidRequestError):
        example_engine.check_batch(a.handle, 5)
    with pytest.raises(charter.InvalidRequestError):
        example_engine.check_batch(np.uint64(a.handle), np.uint32(5))


def test_batch_bad_resources(example_engine: charter.Engine) -> None:
    a = example_engine.provision("analytics-agent", on_behalf_of="user:alice")
    with pytest.raises(charter.InvalidRequestError):
        example_engine.check_batch([a.handle], [5], [3])  # type: ignore[list-item]
    with pytest.raises(charter.InvalidRequestError):
        example_engine.check_batch([a.handle], [5], [b"x"])  # type: ignore[list-item]


@pytest.mark.parametrize(
    "offset",
    [
        lambda rid: [rid + 2**32],
        lambda rid: np.array([rid + 2**32], dtype=np.int64),
        lambda rid: np.array([rid - 2**32], dtype=np.int64),
        lambda rid: np.array([rid + 2**32], dtype=np.uint64),
    ],
    ids=["list", "int64-above", "int64-below", "uint64-above"],
)
def test_batch_action_ids_do_not_wrap(example_engine: charter.Engine, offset: Callable[[int], Any]) -> None:
    """An id outside u32 must never be truncated into a declared action that is then granted."""
    e = example_engine
    a = e.provision("analytics-agent", on_behalf_of="user:alice")
    rid = e.action_id("db:read")
    assert e.check_batch([a.handle], [rid]).tolist() == [True]
    try:
        allowed, reasons = e.check_batch_reasons([a.handle], offset(rid))
    except charter.InvalidRequestError:
        return
    assert allowed.tolist() == [False]
    assert charter.REASONS[int(reasons[0])] in ("unknown_action", "malformed_request")


@pytest.mark.parametrize("handles", [[-1], np.array([-1], dtype=np.int64)], ids=["list", "int64"])
def test_batch_negative_handles_are_not_crashes(example_engine: charter.Engine, handles: Any) -> None:
    try:
        allowed, reasons = example_engine.check_batch_reasons(handles, [0])
    except charter.InvalidRequestError:
        return
    assert allowed.tolist() == [False]
    assert charter.REASONS[int(reasons[0])] in ("unknown_agent", "malformed_request")


def test_batch_string_handles_are_invalid_requests(example_engine: charter.Engine) -> None:
    with pytest.raises(charter.InvalidRequestError):
        example_engine.check_batch(["agt_x"], [0])


def test_batch_fractional_action_ids_are_not_truncated(example_engine: charter.Engine) -> None:
    """5.5 is no action id; it must not be decided as action 5 (`db:read`)."""
    a = example_engine.provision("analytics-agent", on_behalf_of="user:alice")
    assert example_engine.action_id("db:read") == 5
    try:
        allowed = example_engine.check_batch([a.handle], [5.5])
    except charter.InvalidRequestError:
        return
    assert allowed.tolist() == [False]


def test_batch_on_example_policy_with_resources(example_engine: charter.Engine) -> None:
    e = example_engine
    etl = e.provision("analytics-agent", on_behalf_of="svc:nightly-etl")
    bot = e.provision("support-bot", on_behalf_of="user:alice")
    read, export, write = e.action_id("db:read"), e.action_id("db:export"), e.action_id("crm:write")
    hs = [etl.handle, etl.handle, etl.handle, etl.handle, bot.handle, bot.handle, bot.handle]
    acts = [read, read, export, export, write, write, write]
    res = [
        "analytics/x",
        "customers/1",
        "analytics/daily/1",
        "users/1/profile",
        "customers/1",
        "users/1/profile",
        None,
    ]
    allowed, reasons = e.check_batch_reasons(hs, acts, res)
    assert allowed.tolist() == [True, False, True, False, True, False, False]
    assert [charter.REASONS[c] for c in reasons] == [
        "granted",
        "denied_by_rule",
        "granted",
        "denied_by_rule",
        "granted",
        "denied_by_rule",
        "no_grant",
    ]


# -------------------------------------------------------------- policy versions


def _reversed(obj: Any) -> Any:
    """The same document with every mapping's keys in reverse order (lists untouched)."""
    if isinstance(obj, dict):
        return {k: _reversed(obj[k]) for k in reversed(list(obj))}
    if isinstance(obj, list):
        return [_reversed(x) for x in obj]
    return obj


def test_policy_version_is_a_stable_content_hash(policy_dict: Callable[..., dict[str, Any]]) -> None:
    d = policy_dict()
    v = charter.Engine.from_dict(d).policy_version
    assert re.fullmatch(r"[0-9a-f]{16}", v)
    assert charter.Engine.from_dict(policy_dict()).policy_version == v
    assert charter.Engine.from_dict(_reversed(d)).policy_version == v
    assert list(_reversed(d)) != list(d)


def test_policy_version_same_for_toml_and_dict() -> None:
    toml_a = """
actions = ["db:read", "db:write"]
[resources]
s = ["secret/**"]
[roles.r]
allow = ["db:read"]
deny = [{ action = "db:read", on = ["@s"] }]
[roles.w]
inherits = ["r"]
allow = ["db:write"]
[principals."user:x"]
roles = ["w"]
[templates.t]
roles = ["r"]
ttl = "15m"
"""
    toml_b = """
[templates.t]
ttl = 900
roles = ["r"]
[principals."user:x"]
roles = ["w"]
[roles.w]
allow = ["db:write"]
inherits = ["r"]
[roles.r]
deny = [{ on = ["@s"], action = "db:read" }]
allow = ["db:read"]
[resources]
s = ["secret/**"]
"""
    toml_b = 'actions = ["db:read", "db:write"]\n' + toml_b
    a = charter.Engine.from_toml(toml_a).policy_version
    assert charter.Engine.from_toml(toml_b).policy_version == a


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["actions"].append("db:extra"),
        lambda d: d["actions"].reverse(),
        lambda d: d["roles"]["reader"]["allow"].append("db:write"),
        lambda d: d["roles"]["reader"].pop("deny"),
        lambda d: d["principals"].pop("user:r"),
        lambda d: d["principals"]["user:a"]["attributes"].update(team="x"),
        lambda d: d["templates"]["reader-bot"].update(ttl=61),
        lambda d: d["resources"]["secret"].append("vault/*"),
    ],
)
def test_policy_version_changes_with_the_document(
    policy_dict: Callable[..., dict[str, Any]], change: Callable[[dict[str, Any]], None]
) -> None:
    d = policy_dict()
    v = charter.Engine.from_dict(d).policy_version
    change(d)
    assert charter.Engine.from_dict(d).policy_version != v


def test_reload_reports_versions(
    clocked_engine: charter.Engine, policy_dict: Callable[..., dict[str, Any]]
) -> None:
    e = clocked_engine
    v1 = e.policy_version
    assert e.reload(policy_dict()) == (v1, v1)
    d = policy_dict()
    d["roles"]["reader"]["allow"].append("db:write")
    old, new = e.reload(d)
    assert old == v1
    assert new != v1
    assert e.policy_version == new
    assert e.stats()["policy_version"] == new
    dec = e.check("user:r", "db:write")
    assert dec.allowed
    assert dec.policy_version == new


# ------------------------------------------------------------------------ stats


def test_stats(clocked_engine: charter.Engine) -> None:
    e = clocked_engine
    s = e.stats()
    assert set(s) == {"agents", "slots", "chains", "policy_version", "registry_bytes"}
    assert s["agents"] == 0
    assert s["slots"] == 0
    assert s["policy_version"] == e.policy_version
    for k in ("agents", "slots", "chains", "registry_bytes"):
        assert isinstance(s[k], int)
        assert s[k] >= 0
    a = e.provision("reader-bot", on_behalf_of="user:w")
    b = e.provision("reader-bot", on_behalf_of=a)
    e.provision("admin-bot")
    s2 = e.stats()
    assert s2["agents"] == 3
    assert s2["slots"] == 3
    assert s2["chains"] > s["chains"]
    assert e.deprovision(a) == 2
    s3 = e.stats()
    assert s3["agents"] == 1
    assert s3["slots"] == 3
    assert e.agent(b).state == "delegator_revoked"


# ------------------------------------------------------------------- agents


def test_agent_fields(clocked_engine: charter.Engine, clock: charter.ManualClock) -> None:
    e = clocked_engine
    now = clock.now()
    a = e.provision("writer-bot", on_behalf_of="user:w")
    assert isinstance(a, charter.Agent)
    assert isinstance(a.id, str)
    assert a.id
    assert isinstance(a.handle, int)
    assert int(a) == a.handle
    assert a.template == "writer-bot"
    assert a.on_behalf_of == "user:w"
    assert a.principal == "user:w"
    assert a.depth == 1
    assert a.created_at == pytest.approx(now)
    assert a.expires_at == pytest.approx(now + 600)
    assert a.state == "active"
    r = repr(a)
    assert a.id in r
    assert "writer-bot" in r
    assert "Some(" not in r

    sub = e.provision("reader-bot", on_behalf_of=a, ttl=30, agent_id="my-sub")
    assert sub.id == "my-sub"
    assert sub.on_behalf_of == a.id
    assert sub.principal == "user:w"
    assert sub.depth == 2
    assert sub.expires_at == pytest.approx(now + 30)

    free = e.provision("admin-bot")
    assert free.on_behalf_of is None
    assert free.principal is None
    assert free.depth == 1
    assert free.expires_at is None


def test_agent_lookup(clocked_engine: charter.Engine, clock: charter.ManualClock) -> None:
    e = clocked_engine
    a = e.provision("reader-bot", on_behalf_of="user:r")
    for key in (a, a.id, a.handle):
        info = e.agent(key)
        assert (info.id, info.handle, info.template, info.on_behalf_of, info.principal, info.depth) == (
            a.id,
            a.handle,
            a.template,
            a.on_behalf_of,
            a.principal,
            a.depth,
        )
        assert info.state == "active"
    clock.advance(60)
    assert e.agent(a).state == "expired"
    b = e.provision("reader-bot", on_behalf_of="user:r")
    e.deprovision(b.id)
    assert e.agent(b.handle).state == "revoked"
    assert e.deprovision(b) == 0
    with pytest.raises(charter.UnknownSubjectError):
        e.agent("nobody")
    with pytest.raises(charter.UnknownSubjectError):
        e.agent("user:r")  # a principal, not an agent
    with pytest.raises(charter.UnknownSubjectError):
        e.agent(123456789)
    with pytest.raises(charter.InvalidRequestError):
        e.agent(None)  # type: ignore[arg-type]
    with pytest.raises(charter.InvalidRequestError):
        e.agent(1.5)  # type: ignore[arg-type]


def test_expiry_clamped_to_parent(clocked_engine: charter.Engine, clock: charter.ManualClock) -> None:
    e = clocked_engine
    parent = e.provision("reader-bot", on_behalf_of="user:a", ttl=20)
    child = e.provision("admin-bot", on_behalf_of=parent)
    assert child.expires_at == pytest.approx(parent.expires_at)
    clock.advance(20)
    assert e.check(child, "db:read").reason == "expired"


# ------------------------------------------------------------ provision errors


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"template": "nope"}, charter.ProvisionError),
        ({"template": "reader-bot", "ttl": 601}, charter.ProvisionError),
        ({"template": "reader-bot", "on_behalf_of": "user:nobody"}, charter.UnknownSubjectError),
        ({"template": "reader-bot", "on_behalf_of": 1.5}, charter.InvalidRequestError),
        ({"template": "reader-bot", "on_behalf_of": ["user:r"]}, charter.InvalidRequestError),
        ({"template": "reader-bot", "ttl": 0}, charter.InvalidRequestError),
        ({"template": "reader-bot", "ttl": -5}, charter.InvalidRequestError),
        ({"template": "reader-bot", "ttl": float("nan")}, charter.InvalidRequestError),
        ({"template": "reader-bot", "agent_id": "has space"}, charter.InvalidRequestError),
        ({"template": "reader-bot", "agent_id": ""}, charter.InvalidRequestError),
        ({"template": "reader-bot", "agent_id": "user:r"}, charter.ProvisionError),
    ],
)
def test_provision_errors(
    clocked_engine: charter.Engine, kwargs: dict[str, Any], exc: type[Exception]
) -> None:
    template = kwargs.pop("template")
    with pytest.raises(exc) as info:
        clocked_engine.provision(template, **kwargs)
    assert type(info.value) is exc
    assert str(info.value)
    assert clocked_engine.stats()["agents"] == 0


def test_provision_error_classes() -> None:
    assert issubclass(charter.ProvisionError, ValueError)
    assert issubclass(charter.UnknownSubjectError, LookupError)
    e = charter.Engine.example()
    with pytest.raises(ValueError, match="unknown template"):
        e.provision("nope")
    with pytest.raises(LookupError):
        e.provision("support-bot", on_behalf_of="user:nobody")


def test_provision_id_in_use(clocked_engine: charter.Engine) -> None:
    e = clocked_engine
    a = e.provision("reader-bot", on_behalf_of="user:r", agent_id="bot-1")
    with pytest.raises(charter.ProvisionError, match="in use"):
        e.provision("reader-bot", on_behalf_of="user:r", agent_id="bot-1")
    e.deprovision(a)


def test_provision_depth_exceeded(clocked_engine: charter.Engine) -> None:
    e = clocked_engine
    # writer-bot: max_delegation_depth = 2
    a = e.provision("writer-bot", on_behalf_of="user:w")
    b = e.provision("writer-bot", on_behalf_of=a)
    assert b.depth == 2
    with pytest.raises(charter.ProvisionError, match="depth"):
        e.provision("writer-bot", on_behalf_of=b)
    # A laxer template below does not escape the bound of an ancestor.
    with pytest.raises(charter.ProvisionError, match="depth"):
        e.provision("reader-bot", on_behalf_of=b)
    # Default bound: 4.
    x = e.provision("reader-bot", on_behalf_of="user:r")
    for _ in range(3):
        x = e.provision("reader-bot", on_behalf_of=x)
    assert x.depth == 4
    with pytest.raises(charter.ProvisionError):
        e.provision("reader-bot", on_behalf_of=x)


def test_provision_inactive_delegator(clocked_engine: charter.Engine, clock: charter.ManualClock) -> None:
    e = clocked_engine
    a = e.provision("reader-bot", on_behalf_of="user:r")
    e.deprovision(a)
    for parent in (a, a.id, a.handle):
        with pytest.raises(charter.ProvisionError, match="not active"):
            e.provision("reader-bot", on_behalf_of=parent)
    b = e.provision("reader-bot", on_behalf_of="user:r")
    clock.advance(61)
    with pytest.raises(charter.ProvisionError, match="not active"):
        e.provision("reader-bot", on_behalf_of=b)
    with pytest.raises((charter.ProvisionError, charter.UnknownSubjectError)):
        e.provision("reader-bot", on_behalf_of=987654321)


@pytest.mark.parametrize(
    "failing",
    [
        {"ttl": 10_000},
        {"agent_id": "user:r"},
        {"agent_id": "bad id"},
    ],
)
def test_refused_provision_leaves_the_chain_usable(
    clocked_engine: charter.Engine, failing: dict[str, Any]
) -> None:
    """A provision refused after its delegation chain was looked up must not break later agents of that chain."""
    e = clocked_engine
    with pytest.raises(charter.CharterError):
        e.provision("reader-bot", on_behalf_of="user:w", **failing)
    a = e.provision("reader-bot", on_behalf_of="user:w")
    d = e.check(a, "db:read")
    assert (d.allowed, d.reason) == (True, "granted")
    assert e.check(a.id, "mail:read").allowed
    allowed, reasons = e.check_batch_reasons([a.handle], [e.action_id("db:read")])
    assert allowed.tolist() == [True]
    assert reasons.tolist() == [0]


def test_refused_provision_on_example_policy(example_engine: charter.Engine) -> None:
    e = example_engine
    with pytest.raises(charter.ProvisionError):
        e.provision("analytics-agent", on_behalf_of="user:alice", ttl=99_999)
    a = e.provision("analytics-agent", on_behalf_of="user:alice")
    assert e.check(a, "db:read", "analytics/x").reason == "granted"


def test_upsert_and_remove_principal_errors(example_engine: charter.Engine) -> None:
    e = example_engine
    with pytest.raises(charter.PolicyError):
        e.upsert_principal("user:x", roles=["nope"])
    with pytest.raises(charter.InvalidRequestError):
        e.upsert_principal("bad id", roles=[])
    a = e.provision("support-bot")
    with pytest.raises(charter.InvalidRequestError):
        e.upsert_principal(a.id, roles=["viewer"])
    with pytest.raises(charter.UnknownSubjectError):
        e.remove_principal("user:nobody")
    with pytest.raises(charter.UnknownSubjectError):
        e.deprovision("agt_nope")
    with pytest.raises(charter.InvalidRequestError):
        e.deprovision(None)  # type: ignore[arg-type]


# --------------------------------------------------- the example policy's promises

EXAMPLE_DECISIONS = [
    # viewers read tickets, crm and deploys, nothing else
    ("user:dave", "tickets:read", None, True, "granted"),
    ("user:dave", "crm:read", "customers/1", True, "granted"),
    ("user:dave", "tickets:write", None, False, "no_grant"),
    ("user:dave", "db:read", "analytics/x", False, "no_grant"),
    # support may edit customer records but never a user's login profile
    ("user:alice", "crm:write", "customers/42", True, "granted"),
    ("user:alice", "crm:write", "users/7/profile", False, "denied_by_rule"),
    ("user:alice", "crm:write", None, False, "no_grant"),
    ("user:alice", "crm:write", "orders/1", False, "no_grant"),
    # analysts never read or export raw PII, whatever else they hold
    ("user:alice", "db:read", "customers/42", False, "denied_by_rule"),
    ("user:alice", "db:read", "users/7/profile", False, "denied_by_rule"),
    ("user:alice", "db:export", "customers/42", False, "denied_by_rule"),
    ("user:alice", "db:read", "analytics/x", True, "granted"),
    ("user:alice", "db:read", None, True, "granted"),
    ("user:alice", "db:export", "analytics/daily/2024", True, "granted"),
    ("user:alice", "db:export", None, False, "no_grant"),
    ("svc:nightly-etl", "db:read", "customers/1", False, "denied_by_rule"),
    ("svc:nightly-etl", "db:read", "customers/1/orders", True, "granted"),
    ("svc:nightly-etl", "db:export", "analytics", True, "granted"),
    # engineers never write or drop production data
    ("user:bob", "db:write", "prod/users", False, "denied_by_rule"),
    ("user:bob", "db:write", "prod", False, "denied_by_rule"),
    ("user:bob", "db:drop", "prod/a/b/c", False, "denied_by_rule"),
    ("user:bob", "db:write", "staging/users", True, "granted"),
    ("user:bob", "db:write", "production/x", True, "granted"),
    ("user:bob", "db:read", "prod/users", True, "granted"),
    ("user:bob", "deploy:run", None, True, "granted"),
    ("user:bob", "db:write", None, True, "granted"),
    # finance
    ("user:carol", "payments:payout", None, True, "granted"),
    ("user:carol", "db:read", "ledger/2024/q1", True, "granted"),
    ("user:carol", "db:read", "invoices/9", True, "granted"),
    ("user:carol", "db:read", "invoices/9/lines", False, "no_grant"),
    ("user:carol", "db:read", None, False, "no_grant"),
    ("user:carol", "deploy:run", None, False, "no_grant"),
]


@pytest.mark.parametrize(("who", "action", "resource", "allowed", "reason"), EXAMPLE_DECISIONS)
def test_example_policy_promises(
    example_engine: charter.Engine, who: str, action: str, resource: str | None, allowed: bool, reason: str
) -> None:
    d = example_engine.check(who, action, resource)
    assert (d.allowed, d.reason) == (allowed, reason), d
    if reason == "denied_by_rule":
        assert d.rule is not None
        assert ".deny[" in d.rule
    if allowed:
        assert d.rule is not None
        assert ".allow[" in d.rule


def test_example_deny_rules(example_engine: charter.Engine) -> None:
    e = example_engine
    assert e.check("user:alice", "crm:write", "users/7/profile").rule == "roles.support.deny[0]"
    assert e.check("user:alice", "db:read", "customers/42").rule == "roles.analyst.deny[0]"
    assert e.check("user:bob", "db:write", "prod/x").rule == "roles.engineer.deny[0]"


def test_example_admin(example_engine: charter.Engine) -> None:
    e = example_engine
    e.upsert_principal("user:root", roles=["admin"])
    assert e.check("user:root", "payments:payout").allowed
    assert e.check("user:root", "crm:write", "orders/1").allowed
    d = e.check("user:root", "db:drop", "staging/x")
    assert (d.allowed, d.reason, d.rule) == (False, "denied_by_rule", "roles.admin.deny[0]")
    d = e.check("user:root", "db:drop")
    assert (d.allowed, d.reason, d.rule) == (False, "denied_by_rule", "roles.admin.deny[0]")
    # inherited denies still apply to admins
    d = e.check("user:root", "db:write", "prod/x")
    assert (d.allowed, d.reason, d.rule) == (False, "denied_by_rule", "roles.engineer.deny[0]")
    assert e.check("user:root", "crm:write", "users/1/profile").reason == "denied_by_rule"
    assert e.check("user:root", "db:read", "customers/1").allowed  # admin is not an analyst


# --------------------------------------------------------- delegation examples


def test_support_bot_for_a_viewer(example_engine: charter.Engine) -> None:
    e = example_engine
    bot = e.provision("support-bot", on_behalf_of="user:dave")
    assert e.check(bot, "tickets:read").reason == "granted"
    assert e.check(bot, "crm:read", "customers/1").reason == "granted"
    # the template allows it, dave does not
    d = e.check(bot, "tickets:write")
    assert (d.allowed, d.reason) == (False, "delegator_denied")
    assert e.check(bot, "crm:write", "customers/1").reason == "delegator_denied"
    # the template's own deny decides first
    d = e.check(bot, "crm:write", "users/1/profile")
    assert (d.reason, d.rule) == ("denied_by_rule", "roles.support.deny[0]")
    # nobody on the chain has it
    assert e.check(bot, "db:read").reason == "no_grant"


def test_support_bot_for_alice(example_engine: charter.Engine) -> None:
    e = example_engine
    bot = e.provision("support-bot", on_behalf_of="user:alice")
    assert e.check(bot, "tickets:write").allowed
    assert e.check(bot, "crm:write", "customers/1").allowed
    # alice may read analytics, her support bot may not
    assert e.check(bot, "db:read", "analytics/x").reason == "no_grant"


def test_analytics_agent_intersection(example_engine: charter.Engine) -> None:
    e = example_engine
    for_alice = e.provision("analytics-agent", on_behalf_of="user:alice")
    assert e.check(for_alice, "db:export", "analytics/x").allowed
    assert e.check(for_alice, "db:read", "customers/1").reason == "denied_by_rule"
    for_carol = e.provision("analytics-agent", on_behalf_of="user:carol")
    assert e.check(for_carol, "db:read", "ledger/1").allowed
    assert e.check(for_carol, "db:read", "analytics/x").reason == "delegator_denied"
    assert e.check(for_carol, "db:read").reason == "delegator_denied"
    for_bob = e.provision("analytics-agent", on_behalf_of="user:bob")
    assert e.check(for_bob, "db:read", "prod/x").allowed
    assert e.check(for_bob, "db:export", "analytics/x").allowed
    assert e.check(for_bob, "db:write", "staging/x").reason == "no_grant"


def test_sub_agents(clocked_example: charter.Engine, clock: charter.ManualClock) -> None:
    e = clocked_example
    parent = e.provision("analytics-agent", on_behalf_of="user:alice")
    sub = e.provision("research-subagent", on_behalf_of=parent)
    assert (sub.depth, sub.on_behalf_of, sub.principal) == (2, parent.id, "user:alice")
    assert sub.expires_at == pytest.approx(clock.now() + 300)
    assert e.check(sub, "db:export", "analytics/x").allowed
    assert e.check(sub, "db:read", "customers/1").reason == "denied_by_rule"
    assert e.check(sub, "tickets:read").allowed
    # under a support bot, the analyst sub-agent may read but not query the db
    bot = e.provision("support-bot", on_behalf_of="user:alice")
    sub2 = e.provision("research-subagent", on_behalf_of=bot)
    assert e.check(sub2, "tickets:read").allowed
    assert e.check(sub2, "db:read", "analytics/x").reason == "delegator_denied"
    # ttl is clamped to the parent's lifetime
    short = e.provision("support-bot", on_behalf_of="user:alice", ttl=60)
    sub3 = e.provision("research-subagent", on_behalf_of=short)
    assert sub3.expires_at == pytest.approx(short.expires_at)
    with pytest.raises(charter.ProvisionError):
        e.provision("research-subagent", on_behalf_of=short, ttl=901)


def test_refund_agent_depth(example_engine: charter.Engine) -> None:
    e = example_engine
    a = e.provision("refund-agent", on_behalf_of="user:carol")
    assert e.check(a, "payments:refund").allowed
    assert e.check(a, "payments:payout").reason == "no_grant"
    b = e.provision("refund-agent", on_behalf_of=a)
    assert b.depth == 2
    with pytest.raises(charter.ProvisionError):
        e.provision("refund-agent", on_behalf_of=b)
    with pytest.raises(charter.ProvisionError):
        e.provision("research-subagent", on_behalf_of=b)


def test_agent_for_nobody(example_engine: charter.Engine) -> None:
    e = example_engine
    a = e.provision("deploy-agent")
    assert (a.depth, a.on_behalf_of, a.principal) == (1, None, None)
    assert e.check(a, "deploy:run").allowed
    assert e.check(a, "db:write", "staging/x").allowed
    assert e.check(a, "db:write", "prod/x").reason == "denied_by_rule"
    assert e.check(a, "payments:read").reason == "no_grant"
