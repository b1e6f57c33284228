"""`Engine.acting_as`, `require_current`, `check_current` and `guard`: the integration for agent code."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import charter
from charter.identity import Issuer

POLICY: dict[str, Any] = {
    "actions": ["payments:read", "payments:refund", "crm:read", "crm:write"],
    "roles": {
        "clerk": {"allow": ["payments:read", "crm:read"]},
        "refunder": {
            "inherits": ["clerk"],
            "allow": [{"action": "payments:refund", "on": ["accounts/*"], "when": "context.amount <= 500"}],
        },
        "writer": {"inherits": ["clerk"], "allow": ["crm:write"]},
    },
    "principals": {
        "user:ann": {"roles": ["refunder"]},
        "user:bo": {"roles": ["writer"]},
    },
    "quotas": {"tight": {"rate": "2/h"}},
    "templates": {
        "refund-bot": {"roles": ["refunder"]},
        "crm-bot": {"roles": ["writer"]},
        "limited-bot": {"roles": ["clerk"], "quota": "tight"},
    },
}


@pytest.fixture
def engine() -> charter.Engine:
    return charter.Engine.from_dict(POLICY)


@pytest.fixture
def bots(engine: charter.Engine) -> tuple[charter.Agent, charter.Agent]:
    return (
        engine.provision("refund-bot", on_behalf_of="user:ann"),
        engine.provision("crm-bot", on_behalf_of="user:bo"),
    )


# ------------------------------------------------------------ acting_as, require_current


def test_require_current_decides_for_the_current_agent(engine: charter.Engine, bots: Any) -> None:
    refund, crm = bots
    with engine.acting_as(refund) as subject:
        assert subject == refund.handle
        assert engine.current_agent() == refund.handle
        decision = engine.require_current("payments:refund", "accounts/7", {"amount": 20})
        assert decision.allowed
        assert decision.reason == "granted"
        with pytest.raises(charter.PermissionDenied) as denied:
            engine.require_current("payments:refund", "accounts/7", {"amount": 501})
        assert denied.value.decision.reason == "condition_failed"
        assert refund.id in str(denied.value)
        with pytest.raises(charter.PermissionDenied) as denied:
            engine.require_current("crm:write")
        assert denied.value.decision.reason == "no_grant"
        assert engine.check_current("crm:write").reason == "no_grant"
    with engine.acting_as(crm):
        assert engine.require_current("crm:write").allowed


def test_without_a_current_agent_everything_is_refused(engine: charter.Engine) -> None:
    assert engine.current_agent() is None
    with pytest.raises(charter.PermissionDenied, match="no current agent") as denied:
        engine.require_current("crm:read")
    assert not denied.value.decision.allowed
    assert denied.value.decision.reason == "malformed_request"
    assert engine.check_current("crm:read").reason == "malformed_request"


def test_the_existing_require_keeps_its_signature(engine: charter.Engine, bots: Any) -> None:
    refund, _ = bots
    assert engine.require(refund, "payments:read").allowed
    assert engine.require("user:bo", "crm:write", None, None).allowed
    with pytest.raises(charter.PermissionDenied):
        engine.require(refund.handle, "crm:write")


def test_blocks_nest_and_restore_even_on_errors(engine: charter.Engine, bots: Any) -> None:
    refund, crm = bots
    with engine.acting_as(refund):
        with engine.acting_as(crm):
            assert engine.current_agent() == crm.handle
            inner: list[object] = []

            def fail_inside() -> None:
                with engine.acting_as("user:ann"):
                    inner.append(engine.current_agent())
                    raise RuntimeError("boom")

            with pytest.raises(RuntimeError):
                fail_inside()
            assert inner == ["user:ann"]
            assert engine.current_agent() == crm.handle
        assert engine.current_agent() == refund.handle
    assert engine.current_agent() is None


def test_one_manager_can_be_entered_again_and_nested_in_itself(engine: charter.Engine, bots: Any) -> None:
    refund, crm = bots
    as_refund = engine.acting_as(refund)
    with as_refund, engine.acting_as(crm), as_refund:
        assert engine.current_agent() == refund.handle
    assert engine.current_agent() is None
    with as_refund:
        assert engine.current_agent() == refund.handle


def test_the_current_agent_is_per_engine(engine: charter.Engine, bots: Any) -> None:
    other = charter.Engine.from_dict(POLICY)
    refund, _ = bots
    with engine.acting_as(refund):
        assert other.current_agent() is None
        with pytest.raises(charter.PermissionDenied, match="no current agent"):
            other.require_current("payments:read")


def test_ids_handles_and_principals_are_accepted(engine: charter.Engine, bots: Any) -> None:
    refund, _ = bots
    for subject in (refund.id, refund.handle, "user:ann"):
        with engine.acting_as(subject):
            assert engine.require_current("payments:read").allowed
    with engine.acting_as("user:nobody"):
        assert engine.check_current("payments:read").reason == "unknown_principal"


@pytest.mark.parametrize("bad", [None, 1.5, True, ["user:ann"], b"user:ann"])
def test_acting_as_refuses_what_is_not_a_subject(engine: charter.Engine, bad: Any) -> None:
    with pytest.raises(charter.InvalidRequestError):
        engine.acting_as(bad)


def test_a_token_is_authenticated_and_a_bad_one_refused(engine: charter.Engine) -> None:
    issuer = Issuer.generate(issuer="https://id.test")
    engine.trust(issuer.jwks())
    token = issuer.issue("refund-bot", on_behalf_of="user:ann", scope=["payments:read"], ttl=600)
    with engine.acting_as(token) as subject:
        agent = engine.agent(subject)
        assert agent.template == "refund-bot"
        assert agent.principal == "user:ann"
        assert engine.require_current("payments:read").allowed
        assert engine.check_current("crm:read").reason == "out_of_scope"
    forged = Issuer.generate(issuer="https://id.test").issue("refund-bot", on_behalf_of="user:ann")
    ran = False
    with pytest.raises(charter.AuthenticationError), engine.acting_as(forged):
        ran = True
    assert not ran
    engine.revoke(token)
    with pytest.raises(charter.AuthenticationError) as refused:
        engine.acting_as(token)
    assert refused.value.reason == "revoked"
    with pytest.raises(charter.InvalidRequestError):
        engine.acting_as("user:ann", proof="x")


def test_a_revoked_agent_is_refused_inside_its_block(engine: charter.Engine, bots: Any) -> None:
    refund, _ = bots
    with engine.acting_as(refund):
        engine.deprovision(refund)
        assert engine.check_current("payments:read").reason == "revoked"


# ------------------------------------------------------------ contexts: threads and tasks


def test_a_new_thread_acts_as_nobody_a_copied_context_carries_the_agent(
    engine: charter.Engine, bots: Any
) -> None:
    refund, _ = bots
    seen: list[object] = []
    with engine.acting_as(refund):
        thread = threading.Thread(target=lambda: seen.append(engine.current_agent()))
        thread.start()
        thread.join()
        ctx = contextvars.copy_context()
        with ThreadPoolExecutor(2) as pool:
            plain = pool.submit(engine.current_agent).result()
            copied = pool.submit(ctx.run, engine.current_agent).result()
            refused = pool.submit(engine.check_current, "payments:read").result()
    assert seen == [None]
    assert plain is None
    assert refused.reason == "malformed_request"
    assert copied == refund.handle


def test_threads_each_keep_their_own_agent(engine: charter.Engine) -> None:
    agents = [engine.provision("crm-bot", on_behalf_of="user:bo") for _ in range(8)]
    barrier = threading.Barrier(len(agents))
    mismatches: list[tuple[int, object]] = []

    def work(agent: charter.Agent) -> None:
        with engine.acting_as(agent):
            barrier.wait(timeout=60)  # every thread is inside its block before any checks
            for _ in range(200):
                if engine.current_agent() != agent.handle or not engine.check_current("crm:write"):
                    mismatches.append((agent.handle, engine.current_agent()))

    threads = [threading.Thread(target=work, args=(a,)) for a in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert mismatches == []


def test_asyncio_tasks_inherit_and_do_not_leak(engine: charter.Engine, bots: Any) -> None:
    refund, crm = bots

    async def inner() -> tuple[object, object]:
        before = engine.current_agent()
        with engine.acting_as(crm):
            await asyncio.sleep(0)
            during = engine.current_agent()
        return before, during

    async def main() -> None:
        with engine.acting_as(refund):
            task = asyncio.create_task(inner())
            await asyncio.sleep(0)
            assert engine.current_agent() == refund.handle  # the task's block is its own
            assert await task == (refund.handle, crm.handle)
            assert await asyncio.to_thread(engine.current_agent) == refund.handle
        assert engine.current_agent() is None
        assert await asyncio.create_task(asyncio.sleep(0, engine.current_agent())) is None

    asyncio.run(main())


def test_concurrent_tasks_interleave_without_mixing_agents(engine: charter.Engine) -> None:
    agents = [engine.provision("crm-bot", on_behalf_of="user:bo") for _ in range(20)]

    async def one(agent: charter.Agent) -> list[object]:
        seen = []
        async with engine.acting_as(agent):
            for _ in range(5):
                await asyncio.sleep(0)  # let the other tasks run in between
                seen.append(engine.current_agent())
        return seen

    async def main() -> list[list[object]]:
        return await asyncio.gather(*(one(a) for a in agents))

    for agent, seen in zip(agents, asyncio.run(main()), strict=True):
        assert seen == [agent.handle] * 5


# ------------------------------------------------------------ guard


def test_guard_builds_the_request_from_the_arguments(engine: charter.Engine, bots: Any) -> None:
    refund, crm = bots
    calls: list[tuple[str, int]] = []

    @engine.guard("payments:refund", resource="accounts/{account}", context={"amount": "{amount}"})
    def refund_money(account: str, amount: int, note: str = "") -> str:
        calls.append((account, amount))
        return f"refunded {amount}"

    assert refund_money.__name__ == "refund_money"
    with engine.acting_as(refund):
        assert refund_money("a1", 300) == "refunded 300"
        assert refund_money(amount=500, account="a2") == "refunded 500"
        with pytest.raises(charter.PermissionDenied) as denied:
            refund_money("a3", 501)
        assert denied.value.decision.reason == "condition_failed"
        with pytest.raises(charter.PermissionDenied) as denied:
            refund_money("a/b", 1)  # `accounts/*` is one segment: no grant matches
        assert denied.value.decision.reason == "no_grant"
    with engine.acting_as(crm), pytest.raises(charter.PermissionDenied) as denied:
        refund_money("a4", 1)
    assert denied.value.decision.reason == "no_grant"
    with pytest.raises(charter.PermissionDenied, match="no current agent"):
        refund_money("a5", 1)
    assert calls == [("a1", 300), ("a2", 500)]


class _Order:
    def __init__(self, amount: int) -> None:
        self.amount = amount


@pytest.mark.parametrize(
    ("context", "good", "bad"),
    [
        (["amount"], ("a", 10), ("a", 900)),
        ({"amount": "{amount}", "why": "refund of {amount}", "fixed": 7}, ("a", 10), ("a", 900)),
        ({"amount": lambda account, amount, order=None: amount}, ("a", 10), ("a", 900)),
        (lambda account, amount, order=None: {"amount": amount}, ("a", 10), ("a", 900)),
        ({"amount": "{order[amount]}"}, ("a", 0, {"amount": 10}), ("a", 0, {"amount": 900})),
        ({"amount": "{order.amount}"}, ("a", 0, _Order(10)), ("a", 0, _Order(900))),
    ],
    ids=["names", "templates", "callable-value", "callable", "index", "attribute"],
)
def test_guard_context_forms(
    engine: charter.Engine, bots: Any, context: Any, good: tuple[Any, ...], bad: tuple[Any, ...]
) -> None:
    refund, _ = bots
    seen: list[dict[str, Any]] = []

    def spy(req: Any) -> bool:
        seen.append(dict(req.context))
        return True

    engine.register_hook("spy", spy)
    refunder = {
        "inherits": ["clerk"],
        "allow": [{"action": "payments:refund", "when": "context.amount <= 500", "hook": "spy"}],
    }
    engine.reload({**POLICY, "roles": {**POLICY["roles"], "refunder": refunder}})

    @engine.guard("payments:refund", context=context)
    def pay(account: str, amount: int, order: Any = None) -> bool:
        return True

    with engine.acting_as(refund):
        assert pay(*good)
        with pytest.raises(charter.PermissionDenied) as denied:
            pay(*bad)
    assert denied.value.decision.reason == "condition_failed"
    assert seen[0]["amount"] == 10
    assert isinstance(seen[0]["amount"], int)
    if isinstance(context, dict) and "why" in context:
        assert seen[0]["why"] == "refund of 10"
        assert seen[0]["fixed"] == 7


def test_guard_on_async_functions(engine: charter.Engine, bots: Any) -> None:
    refund, _ = bots
    ran: list[int] = []

    @engine.guard(
        "payments:refund", resource=lambda account, amount: f"accounts/{account}", context=["amount"]
    )
    async def refund_money(account: str, amount: int) -> int:
        await asyncio.sleep(0)
        ran.append(amount)
        return amount

    async def main() -> None:
        with engine.acting_as(refund):
            assert await refund_money("a", 5) == 5
            with pytest.raises(charter.PermissionDenied):
                await refund_money("a", 5000)
        with pytest.raises(charter.PermissionDenied, match="no current agent"):
            await refund_money("a", 5)
        # the check runs in the task that awaits, as the agent current there
        with engine.acting_as(refund):
            pending = refund_money("a", 6)
        with pytest.raises(charter.PermissionDenied, match="no current agent"):
            await pending

    asyncio.run(main())
    assert ran == [5]


def test_guard_refuses_a_request_it_cannot_build(engine: charter.Engine, bots: Any) -> None:
    refund, _ = bots

    def broken(account: str) -> str:
        raise LookupError("no such account")

    @engine.guard("payments:read", resource=broken)
    def read(account: str) -> bool:
        return True

    @engine.guard("payments:read", resource=lambda account: 42)  # type: ignore[arg-type, return-value]
    def read_typed(account: str) -> bool:
        return True

    @engine.guard("payments:read", context={"acct": "{account.missing}"})
    def read_attr(account: str) -> bool:
        return True

    with engine.acting_as(refund):
        for fn in (read, read_typed, read_attr):
            with pytest.raises(charter.PermissionDenied, match="cannot build") as denied:
                fn("a1")
            assert denied.value.decision.reason == "malformed_request"
            assert denied.value.__cause__ is not None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"resource": "accounts/{acct}"}, "`acct` is not a parameter"),
        ({"resource": "accounts/{}"}, "name a parameter"),
        ({"resource": "accounts/{0}"}, "name a parameter"),
        ({"resource": "accounts/{account"}, "bad template"),
        ({"resource": 42}, "resource must be"),
        ({"context": ["nope"]}, "`nope` is not a parameter"),
        ({"context": {"k": "{nope}"}}, "`nope` is not a parameter"),
        ({"context": {1: "x"}}, "context keys must be strings"),
        ({"context": 42}, "context must be"),
    ],
)
def test_guard_specs_are_checked_when_decorating(
    engine: charter.Engine, kwargs: dict[str, Any], message: str
) -> None:
    def tool(account: str) -> None:
        pass

    with pytest.raises(charter.InvalidRequestError, match=message):
        engine.guard("payments:read", **kwargs)(tool)


def test_guard_reads_keyword_arguments_gathered_by_kwargs(engine: charter.Engine, bots: Any) -> None:
    refund, _ = bots

    @engine.guard("payments:refund", resource="accounts/{account}", context=["amount"])
    def tool(**params: Any) -> str:
        return str(params["account"])

    with engine.acting_as(refund):
        assert tool(account="z", amount=1) == "z"
        with pytest.raises(charter.PermissionDenied, match="cannot build"):
            tool(account="z")


def test_guard_charges_quotas_like_any_check(engine: charter.Engine) -> None:
    limited = engine.provision("limited-bot", on_behalf_of="user:ann")

    @engine.guard("payments:read")
    def read() -> bool:
        return True

    with engine.acting_as(limited):
        assert read()
        assert read()
        with pytest.raises(charter.PermissionDenied) as denied:
            read()
    assert denied.value.decision.reason == "rate_limited"


# ------------------------------------------------------------ random sequences against a stack model


@dataclass
class _Model:
    """The reference: one stack of subjects per engine; the current agent is the top."""

    stacks: dict[int, list[object]]

    def current(self, engine: int) -> object:
        stack = self.stacks[engine]
        return stack[-1] if stack else None


_SUBJECTS = ["user:ann", "user:bo", 0, 1, 2, "agent-id-0", "nobody"]
_ACTIONS = POLICY["actions"]


@st.composite
def _programs(draw: st.DrawFn, depth: int = 0) -> list[tuple[Any, ...]]:
    """A random nested program: ("enter", engine, subject, body) and ("check", engine, action)."""
    steps: list[tuple[Any, ...]] = []
    for _ in range(draw(st.integers(0, 4))):
        if depth < 4 and draw(st.booleans()):
            body = draw(_programs(depth + 1))
            steps.append(("enter", draw(st.integers(0, 1)), draw(st.sampled_from(_SUBJECTS)), body))
        else:
            steps.append(("check", draw(st.integers(0, 1)), draw(st.sampled_from(_ACTIONS))))
    return steps


@settings(max_examples=150, deadline=None)
@given(program=_programs())
def test_random_nested_programs_match_the_stack_model(program: list[tuple[Any, ...]]) -> None:
    engines = [charter.Engine.from_dict(POLICY), charter.Engine.from_dict(POLICY)]
    agents = [
        [
            e.provision("refund-bot", on_behalf_of="user:ann", agent_id="agent-id-0"),
            e.provision("crm-bot", on_behalf_of="user:bo"),
            e.provision("crm-bot"),
        ]
        for e in engines
    ]

    def subject_of(engine: int, s: object) -> object:
        return agents[engine][s].handle if isinstance(s, int) else s

    model = _Model({0: [], 1: []})

    def run(steps: list[tuple[Any, ...]]) -> Iterator[None]:
        for step in steps:
            if step[0] == "enter":
                _, e, s, body = step
                subject = subject_of(e, s)
                with engines[e].acting_as(subject):  # type: ignore[arg-type]
                    model.stacks[e].append(subject)
                    yield from run(body)
                    model.stacks[e].pop()
            else:
                _, e, action = step
                want = model.current(e)
                assert engines[e].current_agent() == want
                got = engines[e].check_current(action)
                if want is None:
                    assert got.reason == "malformed_request"
                else:
                    ref = engines[e].check(want, action)  # type: ignore[arg-type]
                    assert (got.allowed, got.reason) == (ref.allowed, ref.reason)
                if got.allowed:
                    assert engines[e].require_current(action).reason == got.reason
                else:
                    with pytest.raises(charter.PermissionDenied) as denied:
                        engines[e].require_current(action)
                    assert denied.value.decision.reason == got.reason
                yield

    for _ in run(program):
        pass
    assert engines[0].current_agent() is None
    assert engines[1].current_agent() is None
