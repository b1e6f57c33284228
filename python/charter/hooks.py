"""Policy hooks: Python callables that an entry consults before it decides.

An allow or deny entry may name a hook, `{ action = "payments:refund", hook = "fraud_check" }`.
Register it when loading (`Engine.from_file(path, hooks={"fraud_check": fn})`) or later
(`engine.register_hook("fraud_check", fn)`); loading a policy naming an unregistered hook is a
`PolicyError` unless `allow_missing_hooks=True`.

A hook runs only when its entry would decide: after the bitsets and the entry's `when`, and for
an allow entry only if no allow entry without a hook grants the request. It receives a read-only
`HookRequest` (hook, rule, action, resource, agent, template, depth, chain, principal,
principal_attributes, context) and returns:

- `True`: the allow entry grants (a deny entry applies);
- `False` or `(False, "why")`: the allow entry refuses, reason `hook_denied` with the reason as
  `Decision.detail` (a deny entry does not apply);
- anything else, or an exception: `hook_error` with the exception's type in the detail (for a
  deny entry too: a failing hook never lets a request through).

Hooks run with the GIL held and no engine lock; `check_batch` re-enters the interpreter only for
the requests that reach a hook. A hook should be quick and must not raise for ordinary input.
"""

from __future__ import annotations

from collections.abc import Callable

from charter._core import HookRequest

HookResult = bool | tuple[bool, str | None]
"""`True`/`False`, or `(allowed, reason)`."""

Hook = Callable[[HookRequest], HookResult]
"""A policy hook."""

__all__ = ["Hook", "HookRequest", "HookResult"]
