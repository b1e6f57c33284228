"""The Python hook generated policies name (`bench_risk`), for in-process runs and the bench's server.

It stands for what a real hook does cheaply (a look at the request's
context), so a run measures what consulting Python from a decision costs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from charter.capacity.generator import HOOK_NAME
from charter.hooks import Hook, HookRequest, HookResult

RISK_LIMIT = 1_000
"""Amounts at or above this are refused by the hook."""


def bench_risk(request: HookRequest) -> HookResult:
    """Allow unless the context's `amount` is at or above `RISK_LIMIT` (no amount: allowed)."""
    amount = request.context.get("amount")
    if isinstance(amount, int) and amount >= RISK_LIMIT:
        return False, f"amount {amount} is over the risk limit"
    return True


HOOKS: dict[str, Hook] = {HOOK_NAME: bench_risk}
"""Every hook a generated policy may name."""


def hooks_named(policy: Mapping[str, Any]) -> dict[str, Hook]:
    """The bench's hooks that `policy` (a dict, the TOML's structure) names: registering others is linted."""
    named = {
        entry.get("hook")
        for role in policy.get("roles", {}).values()
        for entry in (*role.get("allow", ()), *role.get("deny", ()))
        if isinstance(entry, dict)
    }
    return {name: hook for name, hook in HOOKS.items() if name in named}
