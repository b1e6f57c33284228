"""The audit trail: what is recorded, in what order, how it reads back, and its settings."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import charter
from charter import audit
from charter.audit.reader import DecisionRecord, EventRecord
from charter.cli import main
from charter.errors import AuditError, InvalidRequestError

POLICY: dict[str, Any] = {
    "actions": ["doc:read", "doc:write", "pay:refund", "db:drop"],
    "resources": {"secret": ["vault/**"]},
    "roles": {
        "reader": {"allow": ["doc:read"]},
        "writer": {
            "inherits": ["reader"],
            "allow": [
                "doc:write",
                {"action": "pay:refund", "when": 'context.amount <= 500 and context.purpose != "x"'},
            ],
            "deny": [{"action": "doc:write", "on": ["@secret"]}],
        },
    },
    "principals": {"user:ann": {"roles": ["writer"]}, "user:bob": {"roles": ["reader"]}},
    "templates": {"bot": {"roles": ["writer"]}, "sub": {"roles": ["reader"]}},
    "audit": {"loggable_context": ["amount"]},
}


def records(directory: Path, **filters: Any) -> list[Any]:
    return list(audit.read(directory, **filters))


def decisions_of(directory: Path) -> list[DecisionRecord]:
    return [r for r in audit.read(directory) if isinstance(r, DecisionRecord)]


@pytest.fixture
def engine(tmp_path: Path) -> charter.Engine:
    e = charter.Engine.from_dict(POLICY)
    e.audit_to(tmp_path / "audit", fsync="never")
    return e


def test_each_decision_is_recorded_with_its_reason_and_id(engine: charter.Engine, tmp_path: Path) -> None:
    bot = engine.provision("bot", on_behalf_of="user:ann", agent_id="bot-1")
    made = [
        engine.check("user:ann", "doc:read", "notes/1"),
        engine.check(bot, "doc:write", "vault/key"),
        engine.check("user:bob", "doc:write"),
        engine.check("nobody", "doc:read"),
        engine.check(bot.handle, "no:such"),
        engine.check(bot, "pay:refund", "r/1", {"amount": 900, "purpose": "ok"}),
    ]
    engine.close()
    logged = {r.decision_id: r for r in decisions_of(tmp_path / "audit")}
    assert len(logged) == len(made)
    for d in made:
        assert d.decision_id is not None
        r = logged[d.decision_id]
        assert (r.allowed, r.reason, r.rule, r.policy) == (d.allowed, d.reason, d.rule, d.policy_version)
    by_reason = {r.reason: r for r in logged.values()}
    denied = by_reason["denied_by_rule"]
    assert (denied.agent, denied.template, denied.principal, denied.chain) == (
        "bot-1",
        "bot",
        "user:ann",
        ["user:ann"],
    )
    assert denied.resource == "vault/key"
    assert denied.rule == "roles.writer.deny[0]"
    assert by_reason["unknown_principal"].subject == "nobody"
    unknown_action = by_reason["unknown_action"]
    assert unknown_action.action == "no:such"
    assert unknown_action.agent == "bot-1"
    failed = by_reason["condition_failed"]
    assert failed.detail
    assert "amount" in failed.detail


def test_decision_id_only_with_auditing() -> None:
    e = charter.Engine.from_dict(POLICY)
    d = e.check("user:ann", "doc:read")
    assert d.decision_id is None
    assert "decision_id" not in d.to_dict()


def test_context_values_logged_only_for_loggable_keys(engine: charter.Engine, tmp_path: Path) -> None:
    ctx = {"amount": 100, "purpose": "support", "unread": "secret-value"}
    engine.check("user:ann", "pay:refund", "r/1", ctx)
    engine.check("user:ann", "pay:refund", "r/2", {**ctx, "amount": 200})
    engine.check("user:ann", "pay:refund", "r/3", {**ctx, "purpose": "legal"})
    engine.close()
    first, second, third = decisions_of(tmp_path / "audit")
    assert first.context is not None
    assert second.context is not None
    assert third.context is not None
    assert first.context["amount"] == 100
    assert second.context["amount"] == 200
    assert str(first.context["purpose"]).startswith("hmac:")
    assert first.context["purpose"] == second.context["purpose"] != third.context["purpose"]
    assert "unread" not in first.context
    raw = b"".join(p.read_bytes() for p in (tmp_path / "audit").glob("*.jsonl"))
    assert b"support" not in raw
    assert b"secret-value" not in raw


def test_lifecycle_events(tmp_path: Path) -> None:
    clock = charter.ManualClock(1_000.0)
    policy = {**POLICY, "templates": {"bot": {"roles": ["writer"], "ttl": 10}, "sub": {"roles": ["reader"]}}}
    e = charter.Engine.from_dict(policy, clock=clock)
    e.audit_to(tmp_path / "a", fsync="never")
    parent = e.provision("bot", on_behalf_of="user:ann", agent_id="p")
    e.provision("sub", on_behalf_of=parent, agent_id="c1")
    e.provision("sub", on_behalf_of=parent, agent_id="c2")
    e.suspend("p", "looks haywire")
    e.resume("p")
    e.freeze()
    e.unfreeze()
    e.deprovision(parent)
    short = e.provision("bot", on_behalf_of="user:ann", agent_id="short")
    clock.advance(11)
    e.sweep()
    old, new = e.reload({**policy, "actions": [*policy["actions"], "doc:share"]})
    e.upsert_principal("user:cy", roles=["reader"])
    e.remove_principal("user:cy")
    assert e.audit_event("key_rotation", kid="k2", previous="k1")
    e.close()
    events = [r for r in records(tmp_path / "a", kind=None) if isinstance(r, EventRecord)]
    kinds = [ev.kind for ev in events]
    for kind in (
        "provision",
        "suspend",
        "resume",
        "freeze",
        "unfreeze",
        "deprovision",
        "expire",
        "reload",
        "principal_upsert",
        "principal_remove",
        "key_rotation",
    ):
        assert kind in kinds, kind
    by_kind = {ev.kind: ev for ev in events}
    child = next(ev for ev in events if ev.kind == "provision" and ev.fields["agent"] == "c1")
    assert child.fields["chain"] == ["p", "user:ann"]
    assert child.fields["template"] == "sub"
    assert by_kind["deprovision"].fields == {"agent": "p", "retired": 3, "cascade": 2}
    assert by_kind["suspend"].fields["why"] == "looks haywire"
    assert by_kind["expire"].fields["agent"] == short.id
    assert (by_kind["reload"].fields["old"], by_kind["reload"].fields["new"]) == (old, new)
    assert by_kind["key_rotation"].fields == {"kid": "k2", "previous": "k1"}


def test_breaker_suspension_is_an_event_with_its_cause(tmp_path: Path) -> None:
    policy = {
        **POLICY,
        "quotas": {"q": {"rate": "2/s", "burst": 2}},
        "templates": {
            "bot": {"roles": ["writer"], "quota": "q", "breaker": {"quota_denials": 3, "window": "1m"}}
        },
    }
    e = charter.Engine.from_dict(policy, clock=charter.ManualClock(0.0))
    e.audit_to(tmp_path / "a", fsync="never")
    bot = e.provision("bot", on_behalf_of="user:ann")
    reasons = [e.check(bot, "doc:read").reason for _ in range(8)]
    assert "rate_limited" in reasons
    assert reasons[-1] == "suspended"
    e.close()
    suspend = next(iter(records(tmp_path / "a", kind="suspend")))
    assert isinstance(suspend, EventRecord)
    assert suspend.fields["breaker"] is True
    assert "quota" in suspend.fields["why"]
    logged = decisions_of(tmp_path / "a")
    granted = [r.quota_remaining for r in logged if r.reason == "granted"]
    assert granted == [1, 0]  # burst 2: one left after the first, none after the second
    limited = [r for r in logged if r.reason == "rate_limited"]
    assert all(r.quota_remaining == 0 for r in limited)
    assert limited
    assert all(r.retry_after is not None and r.retry_after > 0 for r in limited)


def test_batch_decisions_are_recorded_in_order(engine: charter.Engine, tmp_path: Path) -> None:
    agents = [engine.provision("bot" if i % 2 else "sub", on_behalf_of="user:ann") for i in range(10)]
    rng = np.random.default_rng(7)
    n = 5_000
    handles = np.array([agents[i].handle for i in rng.integers(0, 10, n)], dtype=np.uint64)
    actions = rng.integers(0, 5, n).astype(np.uint32)  # 4 is not an action: unknown_action
    resources = [None if i % 3 else f"vault/{i}" if i % 2 else f"notes/{i}" for i in range(n)]
    allowed, reasons = engine.check_batch_reasons(handles, actions, resources)
    engine.close()
    logged = decisions_of(tmp_path / "audit")
    assert len(logged) == n
    assert [r.seq for r in logged] == sorted(r.seq for r in logged)
    assert [r.allowed for r in logged] == allowed.tolist()
    assert [r.reason for r in logged] == [charter.REASONS[c] for c in reasons]
    names = engine.actions
    assert [r.action for r in logged] == [names[a] if a < len(names) else None for a in actions]
    assert [r.resource for r in logged] == resources


def test_restart_continues_the_chain_and_the_sequence(tmp_path: Path) -> None:
    d = tmp_path / "a"
    ids = []
    for _ in range(3):
        with charter.Engine.from_dict(POLICY) as e:
            e.audit_to(d, fsync="never")
            ids += [e.check("user:ann", "doc:read").decision_id for _ in range(5)]
    assert len(set(ids)) == 15
    seqs = [int(str(i).split("-")[1]) for i in ids]
    assert seqs == sorted(seqs)
    report = audit.verify(d)
    assert report.ok, report
    assert len(report.streams) == 1


def test_one_writer_per_directory(tmp_path: Path) -> None:
    a = charter.Engine.from_dict(POLICY)
    a.audit_to(tmp_path / "a")
    b = charter.Engine.from_dict(POLICY)
    with pytest.raises(AuditError, match="another writer"):
        b.audit_to(tmp_path / "a")
    with pytest.raises(InvalidRequestError, match="already audits"):
        a.audit_to(tmp_path / "b")
    a.close()
    b.audit_to(tmp_path / "a")
    b.close()


def test_rotation_by_size_keeps_the_chain(tmp_path: Path) -> None:
    d = tmp_path / "a"
    e = charter.Engine.from_dict(POLICY)
    e.audit_to(d, fsync="never", max_file_bytes=4096, flush_interval=0.001)
    for i in range(300):
        e.check("user:ann", "doc:read", f"notes/{i}")
        if i % 20 == 0:
            e.flush_audit()
    e.close()
    files = sorted(d.glob("audit-*.jsonl"))
    assert len(files) > 3
    report = audit.verify(d)
    assert report.ok, report
    assert [r.resource for r in decisions_of(d)] == [f"notes/{i}" for i in range(300)]


def test_closed_strict_engine_denies(tmp_path: Path) -> None:
    e = charter.Engine.from_dict(POLICY)
    with e:
        e.audit_to(tmp_path / "a")
        assert e.check("user:ann", "doc:read")
    d = e.check("user:ann", "doc:read")
    assert not d
    assert d.reason == "audit_unavailable"
    assert e.check_batch(np.array([1], dtype=np.uint64), np.array([0], dtype=np.uint32)).tolist() == [False]
    e.close()  # idempotent


def test_closed_best_effort_engine_keeps_deciding(tmp_path: Path) -> None:
    e = charter.Engine.from_dict(POLICY)
    e.audit_to(tmp_path / "a", mode="best_effort")
    e.close()
    d = e.check("user:ann", "doc:read")
    assert d
    assert d.decision_id is None
    status = e.audit_status()
    assert status is not None
    assert status["dropped"] >= 1


def test_policy_audit_table_starts_auditing(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        'actions = ["a:b"]\n[roles.r]\nallow = ["a:b"]\n[principals."u:x"]\nroles = ["r"]\n'
        '[audit]\ndirectory = "log"\nmode = "best_effort"\nfsync = "interval"\nflush_interval = "5ms"\n'
    )
    e = charter.Engine.from_file(path)
    status = e.audit_status()
    assert status is not None
    assert (status["mode"], status["fsync"]) == ("best_effort", "interval")
    decision = e.check("u:x", "a:b")
    e.close()
    assert [r.decision_id for r in decisions_of(tmp_path / "log")] == [decision.decision_id]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"mode": "loud"}, "audit.mode"),
        ({"flush_interval": "soon"}, "audit.flush_interval"),
        ({"max_file_bytes": 10}, "audit.max_file_bytes"),
    ],
)
def test_bad_audit_table_is_a_policy_error(table: dict[str, Any], message: str) -> None:
    with pytest.raises(charter.PolicyError, match=message.replace(".", r"\.")):
        charter.Engine.from_dict({**POLICY, "audit": table})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "sometimes"},
        {"fsync": "always"},
        {"flush_interval": 0},
        {"buffer_records": 0},
        {"block_timeout": -1},
        {"max_file_bytes": 1},
    ],
)
def test_bad_settings_are_refused(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError):
        charter.Engine.from_dict(POLICY).audit_to(tmp_path / "a", **kwargs)


def test_read_filters_and_columns(engine: charter.Engine, tmp_path: Path) -> None:
    bot = engine.provision("bot", on_behalf_of="user:ann", agent_id="bot-1")
    sub = engine.provision("sub", on_behalf_of=bot, agent_id="sub-1")
    engine.check(bot, "doc:read")
    engine.check(sub, "doc:write")
    engine.check("user:bob", "doc:write")
    engine.close()
    d = tmp_path / "audit"
    assert [r.agent for r in records(d, agent="bot-1")] == ["bot-1", "sub-1"]  # delegates too
    assert [r.agent for r in records(d, effect="deny")] == ["sub-1", None]
    assert [r.principal for r in records(d, reason="no_grant")] == ["user:ann", "user:bob"]
    assert records(d, action="doc:read")[0].agent == "bot-1"
    assert [r.kind for r in records(d, kind="provision")] == ["provision", "provision"]
    cols = audit.read_columns(d)
    assert cols["allowed"].tolist() == [True, False, False]
    assert [charter.REASONS[c] for c in cols["reason"]] == ["granted", "no_grant", "no_grant"]
    assert cols["agent"].tolist() == ["bot-1", "sub-1", None]
    with pytest.raises(InvalidRequestError):
        records(d, decision_id="nonsense")


def test_cli_query_why_verify(
    engine: charter.Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bot = engine.provision("bot", on_behalf_of="user:ann", agent_id="bot-1")
    denied = engine.check(bot, "doc:write", "vault/k")
    engine.check(bot, "doc:read")
    engine.close()
    d = str(tmp_path / "audit")
    assert main(["audit", "query", d, "--effect", "deny", "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["reason"] for x in lines] == ["denied_by_rule"]
    assert main(["audit", "why", str(denied.decision_id), "--dir", d]) == 0
    out = capsys.readouterr().out
    assert "DENIED" in out
    assert "roles.writer.deny[0]" in out
    assert "bot-1" in out
    assert "deny entry" in out
    assert main(["audit", "tail", d, "-n", "1"]) == 0
    assert "doc:read" in capsys.readouterr().out
    assert main(["audit", "verify", d]) == 0
    assert capsys.readouterr().out.startswith("OK")
    assert main(["audit", "why", "0000beef-99", "--dir", d]) == 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(
        st.sampled_from(["ann", "bob", "bot", "batch", "provision", "reload", "event"]),
        min_size=1,
        max_size=30,
    )
)
def test_every_decision_once_in_order(tmp_path_factory: pytest.TempPathFactory, ops: list[str]) -> None:
    """Against a reference list of what was decided: the log has each decision once, in order."""
    d = tmp_path_factory.mktemp("a")
    e = charter.Engine.from_dict(POLICY)
    e.audit_to(d, fsync="never", flush_interval=0.001)
    bot = e.provision("bot", on_behalf_of="user:ann")
    expected: list[tuple[str, str]] = []
    for op in ops:
        if op == "batch":
            _allowed, codes = e.check_batch_reasons([bot.handle] * 3, [0, 1, 3])
            expected += [("doc:read", charter.REASONS[c]) for c in codes[:1]]
            expected += [("doc:write", charter.REASONS[codes[1]]), ("db:drop", charter.REASONS[codes[2]])]
        elif op == "provision":
            bot = e.provision("bot", on_behalf_of="user:ann")
        elif op == "reload":
            e.reload(POLICY)
        elif op == "event":
            e.audit_event("note", n=len(expected))
        else:
            who: str | int = {"ann": "user:ann", "bob": "user:bob"}.get(op, bot.handle)
            expected.append(("doc:write", e.check(who, "doc:write").reason))
    e.close()
    logged = [(r.action, r.reason) for r in decisions_of(d)]
    assert logged == expected
    assert audit.verify(d).ok


def test_files_are_private(engine: charter.Engine, tmp_path: Path) -> None:
    engine.check("user:ann", "doc:read")
    engine.close()
    d = tmp_path / "audit"
    for p in d.iterdir():
        assert os.stat(p).st_mode & 0o077 == 0, p


def test_a_million_mixed_decisions_each_once_in_order(tmp_path: Path) -> None:
    """1,000,000 decisions (batches with singles between them): each logged once, in order, with its reason."""
    e = charter.Engine.from_dict(POLICY)
    e.audit_to(tmp_path / "a", fsync="never")
    agents = [e.provision("bot" if i % 2 else "sub", on_behalf_of="user:ann") for i in range(64)]
    rng = np.random.default_rng(1)
    expected_reasons: list[np.ndarray] = []
    total = 0
    while total < 1_000_000:
        n = 9_999
        handles = np.array([agents[i].handle for i in rng.integers(0, 64, n)], dtype=np.uint64)
        actions = rng.integers(0, 4, n).astype(np.uint32)
        _, reasons = e.check_batch_reasons(handles, actions)
        single = e.check("user:bob", "doc:write")
        expected_reasons += [reasons, np.array([charter.REASONS.index(single.reason)], dtype=np.uint8)]
        total += n + 1
    e.close()
    cols = audit.read_columns(tmp_path / "a")
    expected = np.concatenate(expected_reasons)
    assert len(cols["seq"]) == total == len(expected)
    assert np.array_equal(cols["reason"], expected)
    assert np.all(np.diff(cols["seq"].astype(np.int64)) > 0)
    assert len(np.unique(cols["seq"])) == total


def test_identity_events_revoke_and_key_rotation(tmp_path: Path) -> None:
    from charter.identity import Issuer

    clock = charter.ManualClock(1_700_000_000)
    issuer = Issuer.generate(issuer="https://id.test", clock=clock)
    e = charter.Engine.from_dict(POLICY, clock=clock)
    e.audit_to(tmp_path / "a", fsync="never")
    e.trust(issuer.jwks())
    token = issuer.issue("bot", on_behalf_of="user:ann", ttl=600)
    bot = e.authenticate(token)
    old_kid = issuer.kid
    issuer.rotate()
    e.trust(issuer.jwks())
    assert e.revoke(agent=bot, reason="leaked") == 1
    e.close()
    events = {r.kind: r for r in records(tmp_path / "a", kind=None) if isinstance(r, EventRecord)}
    assert events["keys_trusted"].fields["added"] == [old_kid]
    rotation = events["key_rotation"].fields
    assert issuer.kid in rotation["added"]
    revoke = events["revoke"].fields
    assert revoke["revoked"] == [{"kind": "agent", "id": bot.id}]
    assert (revoke["retired"], revoke["why"]) == (1, "leaked")


def test_explanations_and_permission_probes_are_not_recorded(engine: charter.Engine, tmp_path: Path) -> None:
    """An explanation is not an action taken: only real decisions reach the log."""
    d = engine.check("user:ann", "doc:read")
    engine.explain("user:ann", "doc:write")
    engine.permissions("user:ann")
    engine.close()
    assert [r.decision_id for r in decisions_of(tmp_path / "audit")] == [d.decision_id]
