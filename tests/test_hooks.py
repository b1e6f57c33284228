"""Policy hooks: registration, when a hook runs, what it sees, and every way it can answer
(allow, deny, deny with a reason, raise, garbage, async, slow), in single checks and batches."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import pytest

import charter
from charter.hooks import HookRequest

DOC: dict[str, Any] = {
    "actions": ["pay:refund", "pay:read", "db:read", "db:drop"],
    "resources": {"ledger": ["ledger/**"]},
    "roles": {
        "finance": {
            "allow": [
                {"action": "pay:refund", "hook": "fraud", "when": "context.amount > 0"},
                {"action": "db:read", "on": ["@ledger"], "hook": "fraud"},
                "pay:read",
            ],
            "deny": [{"action": "db:drop", "hook": "veto"}],
        },
        "ops": {"allow": ["db:drop"]},
        "reader": {"allow": ["pay:read", {"action": "pay:read", "hook": "fraud"}]},
    },
    "principals": {"user:a": {"roles": ["finance", "ops"], "attributes": {"team": "fin"}}},
    "templates": {"bot": {"roles": ["finance", "ops"]}, "reader": {"roles": ["reader"]}},
}


class Recorder:
    """A hook that records its calls and answers what it is told to."""

    def __init__(self, answer: Any = True) -> None:
        self.answer = answer
        self.calls: list[HookRequest] = []

    def __call__(self, req: HookRequest) -> Any:
        self.calls.append(req)
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer(req) if callable(self.answer) else self.answer


def make(fraud: Any = True, veto: Any = False) -> tuple[charter.Engine, Recorder, Recorder]:
    f, v = Recorder(fraud), Recorder(veto)
    return charter.Engine.from_dict(DOC, hooks={"fraud": f, "veto": v}), f, v


def test_hook_allows_and_denies() -> None:
    e, fraud, _ = make(lambda r: r.context["amount"] < 100)
    d = e.check("user:a", "pay:refund", context={"amount": 5})
    assert (d.allowed, d.reason, d.rule) == (True, "granted", "roles.finance.allow[0]")
    d = e.check("user:a", "pay:refund", context={"amount": 500})
    assert (d.allowed, d.reason, d.rule, d.detail) == (
        False,
        "hook_denied",
        "roles.finance.allow[0]",
        "hook `fraud` refused",
    )
    assert len(fraud.calls) == 2


def test_hook_reason() -> None:
    e, _, _ = make((False, "velocity too high"))
    d = e.check("user:a", "pay:refund", context={"amount": 5})
    assert (d.reason, d.detail) == ("hook_denied", "velocity too high")
    assert d.to_dict()["detail"] == "velocity too high"
    e, _, _ = make((True, "fine"))
    assert e.check("user:a", "pay:refund", context={"amount": 5}).allowed
    e, _, _ = make((False, None))
    assert e.check("user:a", "pay:refund", context={"amount": 5}).detail == "hook `fraud` refused"


@pytest.mark.parametrize("error", [KeyError("k"), ValueError("bad"), ZeroDivisionError()])
def test_hook_exception_is_hook_error(error: Exception) -> None:
    e, _, _ = make(error)
    d = e.check("user:a", "pay:refund", context={"amount": 5})
    assert (d.allowed, d.reason, d.rule) == (False, "hook_error", "roles.finance.allow[0]")
    assert d.detail is not None
    assert f"raised {type(error).__name__}" in d.detail


@pytest.mark.parametrize(
    "garbage", [None, 1, 0, "yes", [True], (1, "x"), (True,), (True, 3), (False, "a", "b")]
)
def test_hook_garbage_is_hook_error(garbage: Any) -> None:
    e, _, _ = make(garbage)
    d = e.check("user:a", "pay:refund", context={"amount": 5})
    assert (d.allowed, d.reason) == (False, "hook_error")
    assert d.detail is not None
    assert "not a bool" in d.detail


def test_async_hook_is_hook_error_without_warning() -> None:
    async def later(req: HookRequest) -> bool:
        return True

    e = charter.Engine.from_dict(DOC, hooks={"fraud": later, "veto": lambda r: False})
    d = e.check("user:a", "pay:refund", context={"amount": 5})
    assert (d.reason, "awaitable" in str(d.detail)) == ("hook_error", True)
    del later
    asyncio.new_event_loop().close()


def test_hook_runs_only_when_its_entry_decides() -> None:
    e, fraud, veto = make()
    # `when` false: the hook is not consulted, the condition fails.
    assert e.check("user:a", "pay:refund", context={"amount": 0}).reason == "condition_failed"
    # `on` does not match: no hook.
    assert e.check("user:a", "db:read", "other/1").reason == "no_grant"
    # An allow without a hook grants first.
    r = e.provision("reader", on_behalf_of="user:a")
    assert e.check(r, "pay:read").allowed
    assert fraud.calls == []
    assert e.check("user:a", "db:read", "ledger/2024").allowed
    assert len(fraud.calls) == 1
    assert veto.calls == []


def test_hook_on_a_deny_entry() -> None:
    e, _, veto = make(veto=False)
    assert e.check("user:a", "db:drop").allowed  # the veto hook says the deny does not apply
    veto.answer = True
    d = e.check("user:a", "db:drop")
    assert (d.reason, d.rule) == ("denied_by_rule", "roles.finance.deny[0]")
    veto.answer = RuntimeError("down")
    d = e.check("user:a", "db:drop")
    assert (d.allowed, d.reason) == (False, "hook_error")  # a failing hook never lets it through
    assert len(veto.calls) == 3


def test_hook_sees_a_read_only_view() -> None:
    e, fraud, _ = make()
    bot = e.provision("bot", on_behalf_of="user:a", agent_id="bot-1")
    sub = e.provision("bot", on_behalf_of=bot, agent_id="bot-2")
    ctx = {"amount": 5, "note": object(), "nested": {"a": [1, 2]}}
    assert e.check(sub, "pay:refund", None, ctx).allowed
    req = fraud.calls[0]
    assert (req.hook, req.rule, req.action, req.resource) == (
        "fraud",
        "roles.finance.allow[0]",
        "pay:refund",
        None,
    )
    assert (req.agent, req.template, req.depth) == ("bot-2", "bot", 2)
    assert req.chain == ("bot-2", "bot-1", "user:a")
    assert req.principal == "user:a"
    assert dict(req.principal_attributes) == {"team": "fin"}
    assert req.context["note"] is ctx["note"]  # the caller's values, unconverted
    with pytest.raises(TypeError):
        req.context["amount"] = 1  # type: ignore[index]
    with pytest.raises(AttributeError):
        req.agent = "x"  # type: ignore[misc]
    ctx["amount"] = 6  # the hook got a copy
    assert req.context["amount"] == 5
    assert "HookRequest(hook='fraud'" in repr(req)
    # Every level of the chain that reaches the hook consults it.
    assert len(fraud.calls) == 3
    assert e.check("user:a", "pay:refund", context={"amount": 1}).allowed
    assert (fraud.calls[-1].agent, fraud.calls[-1].chain) == (None, ("user:a",))


def test_delegator_hook_denial() -> None:
    def only_principals(req: HookRequest) -> Any:
        return req.agent is None or (False, "agents may not refund")

    e = charter.Engine.from_dict(DOC, hooks={"fraud": only_principals, "veto": lambda r: False})
    bot = e.provision("bot", on_behalf_of="user:a")
    d = e.check(bot, "pay:refund", context={"amount": 1})
    assert (d.reason, d.rule, d.detail) == ("hook_denied", "roles.finance.allow[0]", "agents may not refund")


def test_missing_hooks() -> None:
    with pytest.raises(charter.PolicyError) as info:
        charter.Engine.from_dict(DOC, hooks={"fraud": lambda r: True})
    assert info.value.path == "roles.finance.deny[0].hook"
    assert "veto" in info.value.message
    e = charter.Engine.from_dict(DOC, allow_missing_hooks=True)
    d = e.check("user:a", "pay:refund", context={"amount": 1})
    assert (d.reason, d.detail) == ("hook_error", "hook `fraud` is not registered")
    e.register_hook("fraud", lambda r: True)
    assert e.check("user:a", "pay:refund", context={"amount": 1}).allowed
    with pytest.raises(charter.InvalidRequestError):
        e.register_hook("fraud", 3)  # type: ignore[arg-type]


def test_reload_checks_hooks() -> None:
    e, _, _ = make()
    version = e.policy_version
    doc = {**DOC, "roles": {**DOC["roles"], "ops": {"allow": [{"action": "db:drop", "hook": "new"}]}}}
    with pytest.raises(charter.PolicyError) as info:
        e.reload(doc)
    assert info.value.path == "roles.ops.allow[0].hook"
    assert e.policy_version == version
    e.register_hook("new", lambda r: True)
    e.reload(doc)
    assert e.policy_version != version


def test_hooks_may_reenter_the_engine() -> None:
    holder: dict[str, charter.Engine] = {}

    def reentrant(req: HookRequest) -> bool:
        inner = holder["e"]
        inner.register_hook("veto", lambda r: False)
        return inner.check("user:a", "pay:read").allowed

    e = charter.Engine.from_dict(DOC, hooks={"fraud": reentrant, "veto": lambda r: True})
    holder["e"] = e
    bot = e.provision("bot", on_behalf_of="user:a")
    assert e.check(bot, "pay:refund", context={"amount": 1}).allowed
    assert e.provision("bot", on_behalf_of=bot).depth == 2


def test_slow_hook_blocks_nothing_else() -> None:
    started, release = threading.Event(), threading.Event()

    def slow(req: HookRequest) -> bool:
        started.set()
        release.wait(5)
        return True

    e = charter.Engine.from_dict(DOC, hooks={"fraud": slow, "veto": lambda r: False})
    results: list[bool] = []
    t = threading.Thread(
        target=lambda: results.append(e.check("user:a", "pay:refund", None, {"amount": 1}).allowed)
    )
    t.start()
    assert started.wait(5)
    # While the hook waits, other checks, provisions and reloads proceed (no engine lock is held).
    t0 = time.monotonic()
    assert e.check("user:a", "pay:read").allowed
    e.provision("bot", on_behalf_of="user:a")
    e.reload(DOC)
    assert time.monotonic() - t0 < 2
    release.set()
    t.join(5)
    assert results == [True]


def test_batch_calls_hooks_only_for_rows_that_reach_them() -> None:
    e, fraud, _ = make(lambda r: (r.context["amount"] < 100, "too much"))
    bot = e.provision("bot", on_behalf_of="user:a")
    refund, read = e.action_id("pay:refund"), e.action_id("pay:read")
    handles = np.full(5, bot.handle, dtype=np.uint64)
    actions = np.array([refund, read, refund, refund, read], dtype=np.uint32)
    context = {"amount": np.array([5, 5, 500, 0, 5]), "tag": ["a", "b", "c", "d", "e"]}
    allowed, codes = e.check_batch_reasons(handles, actions, None, context)
    assert allowed.tolist() == [True, True, False, False, True]
    assert [charter.REASONS[c] for c in codes] == [
        "granted",
        "granted",
        "hook_denied",
        "condition_failed",
        "granted",
    ]
    # Row 0: both levels (bot, principal) consult the hook; row 2: the bot's level refuses first.
    assert len(fraud.calls) == 3
    assert [dict(c.context) for c in fraud.calls[:2]] == [{"amount": 5, "tag": "a"}] * 2
    fraud.answer = ValueError("x")
    assert not e.check_batch(handles, actions, None, context)[0]


def test_explain_with_hooks() -> None:
    e, _, _ = make((False, "nope"))
    x = e.explain("user:a", "pay:refund", context={"amount": 1})
    assert x.decision["reason"] == "hook_denied"
    assert x.decision["detail"] == "nope"
    assert x.data["chain"][0]["outcome"] == "hook_denied"
