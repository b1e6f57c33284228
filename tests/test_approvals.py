"""Approvals: `approval = ...` entries, `approval_required`, `Engine.approve` and one-time grants."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import charter
from charter import audit
from charter.approvals import PendingApproval
from charter.audit.reader import DecisionRecord, EventRecord
from charter.errors import ApprovalError, InvalidRequestError, PolicyError

START = 1_700_000_000.0

POLICY: dict[str, Any] = {
    "actions": ["pay:refund", "pay:read"],
    "roles": {
        "clerk": {
            "allow": [
                "pay:read",
                {
                    "action": "pay:refund",
                    "when": 'context.currency == "EUR"',
                    "approval": "context.amount > 100",
                    "approvers": ["treasurer", "user:dan"],
                },
            ]
        },
        "treasurer": {"allow": ["pay:read"]},
        "senior": {"inherits": ["treasurer"]},
        "bot": {"allow": ["pay:refund", "pay:read"]},
    },
    "principals": {
        "user:erin": {"roles": ["clerk"]},
        "user:fay": {"roles": ["clerk"]},
        "user:carol": {"roles": ["treasurer"]},
        "user:sam": {"roles": ["senior"]},
        "user:dan": {"roles": []},
        "user:tess": {"roles": ["treasurer", "clerk"]},
    },
    "templates": {"refunder": {"roles": ["bot"]}, "clerk-bot": {"roles": ["clerk"]}},
}
RULE = "roles.clerk.allow[1]"


def ctx(amount: Any = 500, **more: Any) -> dict[str, Any]:
    return {"amount": amount, "currency": "EUR", **more}


@pytest.fixture
def clock() -> charter.ManualClock:
    return charter.ManualClock(START)


@pytest.fixture
def engine(clock: charter.ManualClock) -> charter.Engine:
    return charter.Engine.from_dict(POLICY, clock=clock)


@pytest.fixture
def bot(engine: charter.Engine) -> charter.Agent:
    return engine.provision("refunder", on_behalf_of="user:erin", agent_id="bot-1")


def ask(
    engine: charter.Engine, who: Any, context: dict[str, Any], resource: str = "acct/1"
) -> charter.Decision:
    return engine.check(who, "pay:refund", resource, context)


def approval_for(engine: charter.Engine, who: Any, context: dict[str, Any], resource: str = "acct/1") -> str:
    d = ask(engine, who, context, resource)
    assert d.reason == "approval_required", d
    assert d.decision_id is not None
    return d.decision_id


# --- the flow ------------------------------------------------------------------------------------


def test_required_then_approved_then_allowed_once(engine: charter.Engine, bot: charter.Agent) -> None:
    assert ask(engine, bot, ctx(50)).reason == "granted"  # below the threshold: no approval needed
    d = ask(engine, bot, ctx(500))
    assert (d.allowed, d.reason, d.rule) == (False, "approval_required", RULE)
    assert (
        d.detail
        == "approval needed from role `treasurer` or `user:dan`: condition `context.amount > 100` holds"
    )
    assert d.decision_id is not None
    assert d.to_dict()["decision_id"] == d.decision_id
    grant = engine.approve(d.decision_id, "user:carol")
    assert isinstance(grant, charter.approvals.ApprovalGrant)
    assert (grant.decision_id, grant.approver, grant.agent) == (d.decision_id, "user:carol", "bot-1")
    assert (grant.action, grant.resource, grant.rule, grant.rules) == ("pay:refund", "acct/1", RULE, [RULE])
    assert grant.context == {"amount": 500, "currency": "EUR"}
    assert grant.expires_at == pytest.approx(START + 300)
    assert grant.token.startswith("apv_")
    assert grant.token not in repr(grant)
    ok = ask(engine, bot, ctx(500, approval=grant.token))
    assert (ok.allowed, ok.reason, ok.rule) == (True, "granted", "roles.bot.allow[0]")
    assert ok.detail == f"approved by `user:carol` (decision `{d.decision_id}`)"
    again = ask(engine, bot, ctx(500, approval=grant.token))
    assert (again.reason, again.rule) == ("approval_replayed", RULE)
    # A fresh request asks again, under a new id.
    assert approval_for(engine, bot, ctx(500)) != d.decision_id


def test_approve_takes_the_decision_itself(engine: charter.Engine) -> None:
    d = ask(engine, "user:erin", ctx(500))
    grant = engine.approve(d, "user:dan", ttl=60)
    assert grant.expires_at == pytest.approx(START + 60)
    assert grant.agent == "user:erin"
    assert ask(engine, "user:erin", ctx(500, approval=grant.token)).reason == "granted"
    with pytest.raises(InvalidRequestError):
        engine.approve(engine.check("user:erin", "pay:read"), "user:dan")  # no decision id: not approvable
    with pytest.raises(InvalidRequestError):
        engine.approve(42, "user:dan")  # type: ignore[arg-type]


def test_a_token_for_another_request_is_a_mismatch(engine: charter.Engine, bot: charter.Agent) -> None:
    grant = engine.approve(approval_for(engine, bot, ctx(500)), "user:carol")
    other_bot = engine.provision("refunder", on_behalf_of="user:erin")
    cases = [
        (bot, ctx(500), "acct/2", "resource `acct/1`"),
        (bot, ctx(501), "acct/1", "`context.amount`"),
        (bot, ctx(500, currency="EUR "), "acct/1", None),  # `when` is false: no grant to approve
        (other_bot, ctx(500), "acct/1", "another agent"),
        ("user:erin", ctx(500), "acct/1", "another agent"),
    ]
    for who, context, resource, why in cases:
        d = ask(engine, who, {**context, "approval": grant.token}, resource)
        if why is None:
            assert d.reason == "delegator_denied"  # erin's clerk entry no longer grants at all
            continue
        assert (d.reason, d.rule) == ("approval_mismatch", RULE), (who, context, resource)
        assert d.detail is not None
        assert why in d.detail
    # A mismatch does not use the grant up: the right request still goes through, once.
    assert ask(engine, bot, ctx(500, approval=grant.token)).allowed
    assert ask(engine, bot, ctx(500, approval=grant.token)).reason == "approval_replayed"


def test_extra_context_keys_do_not_matter(engine: charter.Engine, bot: charter.Agent) -> None:
    grant = engine.approve(approval_for(engine, bot, ctx(500, note="first")), "user:carol")
    assert ask(engine, bot, ctx(500, note="second", approval=grant.token)).allowed


def test_grants_expire(engine: charter.Engine, bot: charter.Agent, clock: charter.ManualClock) -> None:
    grant = engine.approve(approval_for(engine, bot, ctx(500)), "user:carol", ttl=30)
    clock.advance(29.9)
    assert ask(engine, bot, ctx(500, approval=grant.token)).reason == "granted"
    grant = engine.approve(approval_for(engine, bot, ctx(500)), "user:carol", ttl=30)
    clock.advance(30)
    d = ask(engine, bot, ctx(500, approval=grant.token))
    assert (d.reason, d.rule) == ("approval_expired", RULE)
    with pytest.raises(InvalidRequestError):
        engine.approve(approval_for(engine, bot, ctx(500)), "user:carol", ttl=3601)
    with pytest.raises(InvalidRequestError):
        engine.approve(approval_for(engine, bot, ctx(500)), "user:carol", ttl=0)


def test_pending_approvals_expire_after_15_minutes(
    engine: charter.Engine, bot: charter.Agent, clock: charter.ManualClock
) -> None:
    first = approval_for(engine, bot, ctx(500))
    clock.advance(600)
    second = approval_for(engine, bot, ctx(700))
    pending = engine.pending_approvals()
    assert [p.decision_id for p in pending] == [first, second]
    p = pending[0]
    assert isinstance(p, PendingApproval)
    assert (p.agent, p.chain, p.action, p.resource, p.rule) == (
        "bot-1",
        ["bot-1", "user:erin"],
        "pay:refund",
        "acct/1",
        RULE,
    )
    assert p.approvers == [{"rule": RULE, "roles": ["treasurer"], "principals": ["user:dan"]}]
    assert p.context == {"amount": 500, "currency": "EUR"}
    assert (p.created_at, p.expires_at) == (pytest.approx(START), pytest.approx(START + 900))
    clock.advance(300)
    with pytest.raises(ApprovalError) as err:
        engine.approve(first, "user:carol")
    assert err.value.reason == "expired"
    assert [p.decision_id for p in engine.pending_approvals()] == [second]
    engine.approve(second, "user:carol")
    assert engine.pending_approvals() == []
    with pytest.raises(ApprovalError) as err:
        engine.approve(second, "user:sam")
    assert err.value.reason == "already_approved"


def test_who_may_approve(engine: charter.Engine, bot: charter.Agent) -> None:
    decision = approval_for(engine, bot, ctx(500))

    def refused(approver: str) -> ApprovalError:
        with pytest.raises(ApprovalError) as err:
            engine.approve(decision, approver)
        return err.value

    assert refused("user:fay").reason == "not_an_approver"  # a clerk, not a treasurer
    assert "role `treasurer` or `user:dan`" in refused("user:fay").message
    assert refused("user:nobody").reason == "unknown_approver"
    assert refused("bot-1").reason == "unknown_approver"  # agents never approve
    engine.suspend("user:carol", "on leave")
    assert refused("user:carol").reason == "not_an_approver"
    engine.resume("user:carol")
    # A role held through `inherits` counts; so does being named.
    assert engine.approve(decision, "user:sam").approver == "user:sam"
    assert engine.approve(approval_for(engine, bot, ctx(600)), "user:dan").approver == "user:dan"
    with pytest.raises(InvalidRequestError):
        engine.approve("not-an-id", "user:carol")
    with pytest.raises(ApprovalError) as err:
        engine.approve("00000000-12345", "user:carol")
    assert err.value.reason == "unknown_decision"


def test_four_eyes(engine: charter.Engine, bot: charter.Agent) -> None:
    # The principal an agent acts for may not approve its request, however high its roles.
    tess_bot = engine.provision("refunder", on_behalf_of="user:tess")
    sub = engine.provision("clerk-bot", on_behalf_of=tess_bot)
    for who in (tess_bot, sub, "user:tess"):
        with pytest.raises(ApprovalError) as err:
            engine.approve(approval_for(engine, who, ctx(500)), "user:tess")
        assert err.value.reason == "four_eyes"
    with pytest.raises(ApprovalError) as err:
        engine.approve(approval_for(engine, "user:tess", ctx(500)), "user:tess")
    assert "its own request" in err.value.message
    # Someone else may.
    assert engine.approve(approval_for(engine, sub, ctx(500)), "user:carol")


def test_delegator_levels_ask_for_approval_too(engine: charter.Engine) -> None:
    # The agent's own template grants refunds outright; the clerk it acts for needs approval,
    # so the agent does as well (an agent never does more than whoever it acts for).
    bot = engine.provision("refunder", on_behalf_of="user:erin")
    d = ask(engine, bot, ctx(500))
    assert (d.reason, d.rule) == ("approval_required", RULE)
    # Two levels asking through the same entry ask once.
    clerk_bot = engine.provision("clerk-bot", on_behalf_of="user:erin")
    grant = engine.approve(approval_for(engine, clerk_bot, ctx(500)), "user:carol")
    assert grant.rules == [RULE]
    assert ask(engine, clerk_bot, ctx(500, approval=grant.token)).rule == RULE


def test_a_missing_key_asks_for_approval(engine: charter.Engine) -> None:
    d = ask(engine, "user:erin", {"currency": "EUR"})
    assert (d.reason, d.rule) == ("approval_required", RULE)
    assert d.detail is not None
    assert "could not be evaluated (missing attribute `context.amount`" in d.detail
    wrong_type = ask(engine, "user:erin", ctx("500"))
    assert wrong_type.reason == "approval_required"
    # The grant is bound to the key's absence.
    grant = engine.approve(d, "user:carol")
    assert grant.context == {"currency": "EUR"}
    assert ask(engine, "user:erin", ctx(500, approval=grant.token)).reason == "approval_mismatch"
    assert ask(engine, "user:erin", {"currency": "EUR", "approval": grant.token}).allowed


def test_odd_tokens(engine: charter.Engine, bot: charter.Agent) -> None:
    assert ask(engine, bot, ctx(500, approval=None)).reason == "approval_required"  # no token
    for junk in ("", "apv_0123", "hello", 42, ["apv_"], {"token": "x"}):
        d = ask(engine, bot, ctx(500, approval=junk))
        assert (d.reason, d.rule) == ("approval_invalid", RULE), junk
    # A token is ignored where no approval is needed, and not used up there.
    grant = engine.approve(approval_for(engine, bot, ctx(500)), "user:carol")
    assert engine.check(bot, "pay:read", None, {"approval": grant.token}).allowed
    assert ask(engine, bot, ctx(50, approval=grant.token)).allowed
    assert ask(engine, bot, ctx(500, approval=grant.token)).allowed
    # Another engine never issued it.
    other = charter.Engine.from_dict(POLICY)
    assert (
        other.check("user:erin", "pay:refund", "acct/1", ctx(500, approval=grant.token)).reason
        == "approval_invalid"
    )


def test_tokens_are_random(engine: charter.Engine) -> None:
    tokens = {
        engine.approve(approval_for(engine, "user:erin", ctx(500 + i)), "user:carol").token for i in range(50)
    }
    assert len(tokens) == 50
    assert all(len(t) == 36 and int(t[4:], 16) >= 0 for t in tokens)


def test_a_grant_refused_by_a_quota_is_kept(clock: charter.ManualClock) -> None:
    doc = {**POLICY, "quotas": {"slow": {"rate": "1/m"}}}
    doc["templates"] = {**POLICY["templates"], "refunder": {"roles": ["bot"], "quota": "slow"}}
    engine = charter.Engine.from_dict(doc, clock=clock)
    bot = engine.provision("refunder", on_behalf_of="user:erin")
    grant = engine.approve(approval_for(engine, bot, ctx(500)), "user:carol")
    assert ask(engine, bot, ctx(5)).allowed  # uses the minute's only request
    assert ask(engine, bot, ctx(500, approval=grant.token)).reason == "rate_limited"
    clock.advance(60)
    assert ask(engine, bot, ctx(500, approval=grant.token)).allowed
    assert ask(engine, bot, ctx(500, approval=grant.token)).reason == "approval_replayed"


def test_guards_come_before_approval(clock: charter.ManualClock) -> None:
    doc = {
        **POLICY,
        "guards": [{"actions": ["pay:refund"], "require": "has context.ticket", "reason": "a ticket"}],
    }
    engine = charter.Engine.from_dict(doc, clock=clock)
    assert ask(engine, "user:erin", ctx(500)).reason == "guard_failed"
    d = ask(engine, "user:erin", ctx(500, ticket="T-1"))
    grant = engine.approve(d, "user:carol")
    assert ask(engine, "user:erin", ctx(500, approval=grant.token)).reason == "guard_failed"
    assert ask(engine, "user:erin", ctx(500, ticket="T-2", approval=grant.token)).allowed


def test_an_outright_grant_wins(clock: charter.ManualClock) -> None:
    doc = {
        **POLICY,
        "roles": {**POLICY["roles"], "clerk": {"allow": [*POLICY["roles"]["clerk"]["allow"], "pay:refund"]}},
    }
    engine = charter.Engine.from_dict(doc, clock=clock)
    assert ask(engine, "user:erin", ctx(500)).rule == "roles.clerk.allow[2]"


def test_hooks_and_approvals(clock: charter.ManualClock) -> None:
    calls: list[str] = []

    def fraud(request: Any) -> bool:
        calls.append(request.rule)
        return bool(request.context.get("amount", 0) < 1000)

    entry = {
        "action": "pay:refund",
        "hook": "fraud",
        "approval": "context.amount > 100",
        "approvers": ["treasurer"],
    }
    doc = {**POLICY, "roles": {**POLICY["roles"], "clerk": {"allow": [entry]}}}
    engine = charter.Engine.from_dict(doc, clock=clock, hooks={"fraud": fraud})
    assert ask(engine, "user:erin", {"amount": 50}).allowed
    d = ask(engine, "user:erin", {"amount": 500})
    assert d.reason == "approval_required"
    # No approval is asked for what the hook refuses.
    assert ask(engine, "user:erin", {"amount": 5000}).reason == "hook_denied"
    grant = engine.approve(d, "user:carol")
    assert ask(engine, "user:erin", {"amount": 500, "approval": grant.token}).allowed
    assert calls == ["roles.clerk.allow[0]"] * 4


# --- batches -----------------------------------------------------------------------------------


def test_the_batch_path_agrees_and_takes_tokens(engine: charter.Engine, bot: charter.Agent) -> None:
    grant = engine.approve(approval_for(engine, bot, ctx(500)), "user:carol")
    other = engine.provision("clerk-bot", on_behalf_of="user:fay")
    handles = np.array(
        [bot.handle, bot.handle, other.handle, bot.handle, bot.handle, bot.handle], dtype=np.uint64
    )
    actions = np.full(6, engine.action_id("pay:refund"), dtype=np.uint32)
    resources = ["acct/1"] * 6
    context = {
        "amount": np.array([50, 500, 500, 500, 500, 900]),
        "currency": ["EUR"] * 6,
        "approval": [None, None, None, grant.token, grant.token, grant.token],
    }
    allowed, codes = engine.check_batch_reasons(handles, actions, resources, context)
    reasons = [charter.REASONS[c] for c in codes]
    assert reasons == [
        "granted",
        "approval_required",
        "approval_required",
        "granted",
        "approval_replayed",
        "approval_replayed",  # used by the request before it
    ]
    assert allowed.tolist() == [r == "granted" for r in reasons]
    # A batch remembers no pending approval: it returns no decision ids.
    assert [p.decision_id for p in engine.pending_approvals()] == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["bot", "clerk-bot", "user:erin", "user:fay", "user:carol"]),
            st.sampled_from(["pay:refund", "pay:read"]),
            st.sampled_from([None, "acct/1"]),
            st.one_of(st.none(), st.integers(-10, 300), st.just("x")),
            st.sampled_from(["EUR", "USD", None]),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_batch_reasons_equal_single_checks(
    requests: list[tuple[str, str, str | None, Any, str | None]],
) -> None:
    engine = charter.Engine.from_dict(POLICY, clock=charter.ManualClock(START))
    agents = {
        "bot": engine.provision("refunder", on_behalf_of="user:erin"),
        "clerk-bot": engine.provision("clerk-bot", on_behalf_of="user:fay"),
    }
    rows = [(agents[w], a, r, amount, cur) for w, a, r, amount, cur in requests if w in agents]
    if not rows:
        return
    contexts = [
        {k: v for k, v in (("amount", amount), ("currency", cur)) if v is not None}
        for _, _, _, amount, cur in rows
    ]
    single = [
        engine.check(agent, a, r, c).reason for (agent, a, r, _, _), c in zip(rows, contexts, strict=True)
    ]
    handles = np.array([agent.handle for agent, *_ in rows], dtype=np.uint64)
    actions = np.array([engine.action_id(a) for _, a, *_ in rows], dtype=np.uint32)
    columns = {
        "amount": [c.get("amount") for c in contexts],
        "currency": [c.get("currency") for c in contexts],
    }
    _, codes = engine.check_batch_reasons(handles, actions, [r for _, _, r, _, _ in rows], columns)
    assert [charter.REASONS[c] for c in codes] == single


# --- against a reference model -------------------------------------------------------------------


@dataclass
class Model:
    """What the approval state machine must do, written plainly (one entry, threshold 100)."""

    now: float = START
    pending: dict[str, tuple[str, dict[str, Any], float, bool]] = field(default_factory=dict)
    grants: dict[str, tuple[str, dict[str, Any], float, bool]] = field(default_factory=dict)

    CHAINS: ClassVar[dict[str, list[str]]] = {
        "bot-erin": ["bot-erin", "user:erin"],
        "bot-fay": ["bot-fay", "user:fay"],
        "user:erin": ["user:erin"],
    }
    TREASURERS: ClassVar[set[str]] = {"user:carol", "user:sam", "user:tess"}

    def ask(self, who: str, context: dict[str, Any], token: str | None) -> str:
        amount = context.get("amount")
        needs = not isinstance(amount, int) or amount > 100
        if not needs:
            return "granted"
        if token is None:
            return "approval_required"
        if token not in self.grants:
            return "approval_invalid"
        g_who, g_ctx, expires, used = self.grants[token]
        if used:
            return "approval_replayed"
        if self.now >= expires:
            return "approval_expired"
        if g_who != who or g_ctx != context:
            return "approval_mismatch"
        self.grants[token] = (g_who, g_ctx, expires, True)
        return "granted"

    def remember(self, decision: str, who: str, context: dict[str, Any]) -> None:
        # Pending approvals are forgotten 15 minutes after they expire (when the next one comes).
        self.pending = {k: p for k, p in self.pending.items() if p[2] + 1800 > self.now}
        self.pending[decision] = (who, context, self.now, False)

    def approve(self, decision: str, approver: str) -> str:
        if decision not in self.pending:
            return "unknown_decision"
        who, context, created, approved = self.pending[decision]
        if approved:
            return "already_approved"
        if self.now >= created + 900:
            return "expired"
        if approver in self.CHAINS[who]:
            return "four_eyes"
        if approver not in self.TREASURERS and approver != "user:dan":
            return "not_an_approver"
        self.pending[decision] = (who, context, created, True)
        return "ok"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.tuples(
                st.just("ask"),
                st.sampled_from(["bot-erin", "bot-fay", "user:erin"]),
                st.one_of(st.none(), st.sampled_from([50, 100, 101, 500])),
                st.one_of(st.none(), st.just("junk"), st.integers(0, 3), st.integers(0, 3)),
            ),
            st.tuples(
                st.just("approve"),
                st.integers(0, 5),
                st.sampled_from(["user:carol", "user:sam", "user:tess", "user:dan", "user:erin", "user:fay"]),
                st.sampled_from([30.0, 300.0]),
            ),
            st.tuples(st.just("wait"), st.sampled_from([1.0, 29.0, 31.0, 400.0, 901.0])),
            # Repeat an approved request with its grant, as asked or changed.
            st.tuples(st.just("redo"), st.integers(0, 3), st.sampled_from(["same", "amount", "subject"])),
        ),
        max_size=25,
    )
)
def test_the_state_machine_matches_the_model(steps: list[tuple[Any, ...]]) -> None:
    clock = charter.ManualClock(START)
    engine = charter.Engine.from_dict(POLICY, clock=clock)
    subjects: dict[str, Any] = {
        "bot-erin": engine.provision("refunder", on_behalf_of="user:erin", agent_id="bot-erin"),
        "bot-fay": engine.provision("refunder", on_behalf_of="user:fay", agent_id="bot-fay"),
        "user:erin": "user:erin",
    }
    model = Model()
    decisions: list[str] = []
    tokens: list[str] = []
    bound: dict[str, tuple[str, dict[str, Any]]] = {}
    for step in steps:
        if step[0] == "redo":
            if not tokens:
                continue
            token = tokens[-1 - step[1] % len(tokens)]
            who, context = bound[token]
            if step[2] == "amount":
                context = {**context, "amount": 101 if context.get("amount") != 101 else 102}
            elif step[2] == "subject":
                who = "bot-fay" if who != "bot-fay" else "bot-erin"
            d = engine.check(subjects[who], "pay:refund", "acct/1", {**context, "approval": token})
            assert d.reason == model.ask(who, context, token), (step, d)
            continue
        if step[0] == "wait":
            clock.advance(step[1])
            model.now += step[1]
        elif step[0] == "ask":
            _, who, amount, pick = step
            context: dict[str, Any] = {"currency": "EUR"}
            if amount is not None:
                context["amount"] = amount
            token = None
            if pick == "junk":
                token = "apv_" + "0" * 32
            elif isinstance(pick, int) and tokens:
                token = tokens[-1 - pick % len(tokens)]  # mostly the latest grants
            request = dict(context) if token is None else {**context, "approval": token}
            d = engine.check(subjects[who], "pay:refund", "acct/1", request)
            assert d.reason == model.ask(who, context, token), (step, d)
            if d.reason == "approval_required":
                assert d.decision_id is not None
                decisions.append(d.decision_id)
                model.remember(d.decision_id, who, context)
        else:
            _, pick, approver, ttl = step
            decision = decisions[-1 - pick % len(decisions)] if decisions and pick < 5 else "0a0a0a0a-999"
            expected = model.approve(decision, approver)
            if expected == "ok":
                grant = engine.approve(decision, approver, ttl=ttl)
                who, context, _, _ = model.pending[decision]
                model.grants[grant.token] = (who, context, model.now + ttl, False)
                tokens.append(grant.token)
                bound[grant.token] = (who, context)
            else:
                with pytest.raises(ApprovalError) as err:
                    engine.approve(decision, approver, ttl=ttl)
                assert err.value.reason == expected, step


# --- policy, explain, audit, shadow ------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "principals", "path", "message"),
    [
        ({"approval": "true"}, {}, "roles.r.allow[0].approvers", "needs `approvers`"),
        ({"approvers": ["treasurer"]}, {}, "roles.r.allow[0].approvers", "without `approval`"),
        ({"approval": "true", "approvers": []}, {}, "roles.r.allow[0].approvers", "is empty"),
        (
            {"approval": "true", "approvers": ["treasurer", "x"]},
            {},
            "roles.r.allow[0].approvers[1]",
            "unknown role or principal `x`",
        ),
        (
            {"approval": "true", "approvers": ["treasurer"]},
            {"treasurer": {}},
            "roles.r.allow[0].approvers[0]",
            "both a role and a principal",
        ),
        (
            {"approval": "context.amount >", "approvers": ["treasurer"]},
            {},
            "roles.r.allow[0].approval",
            "1:17: expected an expression",
        ),
        (
            {"approval": "amount > 1", "approvers": ["treasurer"]},
            {},
            "roles.r.allow[0].approval",
            "unknown name `amount`",
        ),
        ({"approval": "true", "approvers": "treasurer"}, {}, "roles.r.allow[0].approvers", "array"),
    ],
)
def test_policy_errors_name_the_entry(
    entry: dict[str, Any], principals: dict[str, Any], path: str, message: str
) -> None:
    doc = {
        "actions": ["a:b"],
        "roles": {"r": {"allow": [{"action": "a:b", **entry}]}, "treasurer": {}},
        "principals": principals,
    }
    with pytest.raises(PolicyError) as err:
        charter.Engine.from_dict(doc)
    assert err.value.path == path
    assert message in err.value.message


def test_deny_entries_cannot_wait_for_approval() -> None:
    doc = {
        "actions": ["a:b"],
        "roles": {"r": {"deny": [{"action": "a:b", "approval": "true", "approvers": ["r"]}]}},
    }
    with pytest.raises(PolicyError) as err:
        charter.Engine.from_dict(doc)
    assert (err.value.path, "not supported on deny entries" in err.value.message) == (
        "roles.r.deny[0].approval",
        True,
    )


def test_approval_false_is_no_approval() -> None:
    entry = {"action": "pay:refund", "approval": "false", "approvers": ["treasurer"]}
    doc = {**POLICY, "roles": {**POLICY["roles"], "clerk": {"allow": [entry]}}}
    assert charter.Engine.from_dict(doc).check("user:erin", "pay:refund").allowed


def test_explain_shows_the_approval_without_using_the_grant(
    engine: charter.Engine, bot: charter.Agent
) -> None:
    x = engine.explain(bot, "pay:refund", "acct/1", ctx(500))
    assert (x.decision["reason"], x.decision["rule"]) == ("approval_required", RULE)
    principal_level = x.data["chain"][1]
    assert (principal_level["outcome"], principal_level["rule"]) == ("approval_required", RULE)
    entry = next(e for e in principal_level["entries"] if e["rule"] == RULE)
    assert entry["approval"] == {
        "condition": "context.amount > 100",
        "approvers": [{"role": "treasurer"}, {"principal": "user:dan"}],
        "who": "role `treasurer` or `user:dan`",
        "outcome": "true",
        "needed": True,
    }
    assert engine.pending_approvals() == []  # explaining asks nobody
    small = engine.explain(bot, "pay:refund", "acct/1", ctx(50)).data["chain"][1]["entries"]
    assert next(e for e in small if e["rule"] == RULE)["approval"]["needed"] is False
    missing = engine.explain(bot, "pay:refund", "acct/1", {"currency": "EUR"}).data["chain"][1]["entries"]
    approval = next(e for e in missing if e["rule"] == RULE)["approval"]
    assert (approval["outcome"], approval["needed"], approval["failure"]["at"]) == (
        "error",
        True,
        "context.amount",
    )
    grant = engine.approve(approval_for(engine, bot, ctx(500)), "user:carol")
    with_grant = engine.explain(bot, "pay:refund", "acct/1", ctx(500, approval=grant.token))
    assert with_grant.decision["reason"] == "granted"
    assert ask(engine, bot, ctx(500, approval=grant.token)).allowed  # explain did not use it up
    assert "approval_required" in str(x)


def test_audit_records_the_flow(tmp_path: Path) -> None:
    engine = charter.Engine.from_dict({**POLICY, "audit": {"loggable_context": ["amount"]}})
    engine.audit_to(tmp_path / "audit", fsync="never")
    bot = engine.provision("refunder", on_behalf_of="user:erin", agent_id="bot-1")
    d = ask(engine, bot, ctx(500))
    grant = engine.approve(d.decision_id or "", "user:carol")
    ok = ask(engine, bot, ctx(500, approval=grant.token))
    replay = ask(engine, bot, ctx(500, approval=grant.token))
    engine.close()
    logged = {r.decision_id: r for r in audit.read(tmp_path / "audit") if isinstance(r, DecisionRecord)}
    required = logged[d.decision_id or ""]
    assert (required.reason, required.rule, required.detail) == ("approval_required", RULE, d.detail)
    assert required.context is not None
    assert required.context["amount"] == 500
    assert (logged[ok.decision_id or ""].reason, logged[ok.decision_id or ""].detail) == (
        "granted",
        ok.detail,
    )
    assert logged[replay.decision_id or ""].reason == "approval_replayed"
    events = [
        r for r in audit.read(tmp_path / "audit", kind="approval_granted") if isinstance(r, EventRecord)
    ]
    assert len(events) == 1
    fields = events[0].fields
    assert (fields["decision_id"], fields["approver"]) == (d.decision_id, "user:carol")
    assert fields["expires_at"] / 1e9 == pytest.approx(grant.expires_at)
    assert (fields["requester"], fields["action"], fields["resource"], fields["rule"]) == (
        "bot-1",
        "pay:refund",
        "acct/1",
        RULE,
    )
    assert all(
        grant.token not in p.read_text(errors="replace")
        for p in (tmp_path / "audit").iterdir()
        if p.is_file()
    )


def test_a_shadow_does_not_use_grants_up(engine: charter.Engine, bot: charter.Agent) -> None:
    engine.shadow(POLICY)
    grant = engine.approve(approval_for(engine, bot, ctx(500)), "user:carol")
    assert ask(engine, bot, ctx(500, approval=grant.token)).allowed
    assert ask(engine, bot, ctx(500, approval=grant.token)).reason == "approval_replayed"
    report = engine.shadow_report()
    assert report is not None
    assert report.disagreements == 0


# --- the example policy --------------------------------------------------------------------------


def test_the_example_policy_has_an_approval(clock: charter.ManualClock) -> None:
    engine = charter.Engine.example(clock=clock)
    assert engine.check("user:erin", "payments:refund", None, {"amount": 80}).allowed
    agent = engine.provision("refund-agent", on_behalf_of="user:erin")
    d = engine.check(agent, "payments:refund", None, {"amount": 250})
    assert (d.reason, d.rule) == ("approval_required", "roles.billing.allow[1]")
    with pytest.raises(ApprovalError):
        engine.approve(d, "user:erin")
    grant = engine.approve(d, "user:carol")
    assert engine.check(agent, "payments:refund", None, {"amount": 250, "approval": grant.token}).allowed
    # The refund agent acting for carol (finance) still refunds without anyone's approval.
    assert engine.check(
        engine.provision("refund-agent", on_behalf_of="user:carol"), "payments:refund"
    ).allowed
