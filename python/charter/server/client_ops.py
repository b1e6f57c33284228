"""The clients' operations, written once: how each builds its request and reads its reply.

`Client` / `AdminClient` (blocking) and `AsyncClient` / `AsyncAdminClient`
get every operation from the two tables here, `DecisionOps` and
`AdminOps`: each row is an `Op` (client_op.py), a method on a blocking
client and a coroutine function on an asyncio one, with the request
builder's signature, so mypy checks every call against it, for both kinds
of client.

Adding an operation: a request Struct in protocol.py, a builder and a reply
reader here, one `Op` line in the right table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt

from charter import errors
from charter.explain import Explanation
from charter.server import protocol as p
from charter.server.client_leases import AsyncRemoteLease, RemoteLease
from charter.server.client_op import Built, Call, Op, op

__all__ = ["AdminOps", "AgentInfo", "AsyncRemoteLease", "DecisionOps", "Op", "RemoteDecision", "RemoteLease"]

T = TypeVar("T")

RemoteDecision = p.DecisionReply
"""What `check` returns: `.allowed`, `.reason`, `.reason_code`, `.rule`, `.policy_version`, `bool()`."""


class AgentInfo(msgspec.Struct, frozen=True):
    """An agent as the server describes it (the fields of `charter.Agent`); `int(info)` is its handle."""

    id: str
    handle: int
    template: str
    on_behalf_of: str | None = None
    principal: str | None = None
    depth: int = 1
    created_at: float = 0.0
    expires_at: float | None = None
    state: str = "active"
    scope: list[str] | None = None

    def __int__(self) -> int:
        return self.handle


# ------------------------------------------------------------ reading replies


def _value(_: Any, __: p.Request, reply: p.Reply) -> Any:
    assert isinstance(reply, p.Result)
    return reply.value


def _dict(client: Any, request: p.Request, reply: p.Reply) -> dict[str, Any]:
    return dict(_value(client, request, reply))


def _nothing(_: Any, __: p.Request, ___: p.Reply) -> None:
    return None


def _decision(_: Any, __: p.Request, reply: p.Reply) -> RemoteDecision:
    assert isinstance(reply, p.DecisionReply)
    return reply


def _agent(client: Any, request: p.Request, reply: p.Reply) -> AgentInfo:
    return msgspec.convert(_value(client, request, reply), AgentInfo)


def _field(key: str, kind: Callable[[Any], T]) -> Callable[[Any, p.Request, p.Reply], T]:
    def read(client: Any, request: p.Request, reply: p.Reply) -> T:
        return kind(_value(client, request, reply)[key])

    return read


def _handles(client: Any, request: p.Request, reply: p.Reply) -> list[int | None]:
    return list(_value(client, request, reply)["handles"])


def _levels(client: Any, request: p.Request, reply: p.Reply) -> list[dict[str, Any]]:
    return list(_value(client, request, reply)["levels"])


def _kids(client: Any, request: p.Request, reply: p.Reply) -> list[str]:
    return list(_value(client, request, reply)["kids"])


def _batch_reasons(
    _: Any, __: p.Request, reply: p.Reply
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.uint8]]:
    assert isinstance(reply, p.BatchReply)
    allowed = np.frombuffer(reply.allowed, dtype=np.uint8).astype(np.bool_)
    return allowed, np.frombuffer(reply.reasons, dtype=np.uint8).copy()


def _batch(client: Any, request: p.Request, reply: p.Reply) -> npt.NDArray[np.bool_]:
    return _batch_reasons(client, request, reply)[0]


def _explanation(client: Any, request: p.Request, reply: p.Reply) -> Explanation:
    return Explanation(_value(client, request, reply)["data"])


def _authenticated(client: Any, request: p.Request, reply: p.Reply) -> AgentInfo:
    assert isinstance(request, p.Authenticate)
    client._tokens[request.token] = request.proof  # re-authenticated on every new connection
    return _agent(client, request, reply)


def _old_and_new(client: Any, request: p.Request, reply: p.Reply) -> tuple[str, str]:
    value = _value(client, request, reply)
    return value["old_version"], value["new_version"]


# ------------------------------------------------------------ leases


def _lease(client: Any, _: p.Request, reply: p.Reply) -> RemoteLease:
    assert isinstance(reply, p.LeaseReply)
    return RemoteLease(client, reply)


def _async_lease(client: Any, _: p.Request, reply: p.Reply) -> AsyncRemoteLease:
    assert isinstance(reply, p.LeaseReply)
    return AsyncRemoteLease(client, reply)


# ------------------------------------------------------------ building requests

Subject = int | str | AgentInfo | None


def _ref(subject: Any) -> Any:
    return subject.handle if hasattr(subject, "handle") else subject


def _ping(rid: int, delay: float = 0.0, *, timeout: float | None = None) -> Built:
    """`{"policy_version": ...}` after `delay` seconds on the server; `timeout` overrides the client's."""
    return Call(p.Ping(rid, delay), timeout)


def _check(
    rid: int,
    subject: Subject,
    action: str,
    resource: str | None = None,
    context: dict[str, Any] | None = None,
    *,
    token: str | None = None,
) -> Built:
    """Decide one request (`subject` may be None when `token` names the agent)."""
    return p.Check(rid, _ref(subject), action, resource, context, token)


def _check_batch(
    rid: int,
    handles: npt.ArrayLike,
    actions: Sequence[str] | npt.ArrayLike,
    resources: Sequence[str | None] | None = None,
    *,
    action_names: Sequence[str] | None = None,
) -> Built:
    """Decide many requests in one frame; `actions` are names (or indices into `action_names`).

    `check_batch` returns the allowed flags; `check_batch_reasons` also each
    decision's reason code (index into `charter.REASONS`)."""
    h = np.ascontiguousarray(handles, dtype="<u8")
    if action_names is None:
        names, index = np.unique(np.asarray(actions, dtype=object).astype(str), return_inverse=True)
        action_names = [str(n) for n in names]
    else:
        index = np.asarray(actions)
    idx = np.ascontiguousarray(index, dtype="<u4")
    if h.ndim != 1 or idx.shape != h.shape:
        raise errors.InvalidRequestError("handles and actions must be 1-D and of the same length")
    res = None if resources is None else list(resources)
    return p.CheckBatch(rid, memoryview(h.data), memoryview(idx.data), list(action_names), res)


def _authenticate(rid: int, token: str, proof: str | None = None) -> Built:
    """Prove an agent's identity; this connection may then name it (kept across reconnects)."""
    return p.Authenticate(rid, token, proof)


def _explain(
    rid: int,
    subject: Subject,
    action: str,
    resource: str | None = None,
    context: dict[str, Any] | None = None,
    *,
    token: str | None = None,
) -> Built:
    """The decision and its derivation (`charter.Explanation`)."""
    return p.Explain(rid, _ref(subject), action, resource, context, token)


def _resolve(rid: int, agents: Sequence[str]) -> Built:
    """The handles of agents by id, usable on this connection (None for an unknown id).

    For trusted peers (and agents this connection authenticated): with
    several workers, handles from anywhere else are refused.
    """
    return p.Resolve(rid, list(agents))


def _quota_status(rid: int, subject: Subject, *, token: str | None = None) -> Built:
    """What is left of each quota along the agent's chain, own level first."""
    return p.QuotaStatus(rid, _ref(subject), token)


def _acquire(
    rid: int, subject: Subject, action: str, resource: str | None = None, *, token: str | None = None
) -> Built:
    """Decide, and if allowed hold an in-flight slot wherever a quota caps concurrency: a lease
    (`with client.acquire(...) as lease: if lease: ...`). No context: the engine's acquire takes none."""
    return p.Acquire(rid, _ref(subject), action, resource, token)


def _release(rid: int, lease: int) -> Built:
    """Give back a lease's slots by id (`RemoteLease.release` calls this)."""
    return p.Release(rid, lease)


def _stats(rid: int) -> Built:
    """The server's statistics (server-wide when it runs several workers)."""
    return p.Stats(rid)


def _provision(
    rid: int,
    template: str,
    *,
    on_behalf_of: int | str | AgentInfo | None = None,
    ttl: float | None = None,
    agent_id: str | None = None,
    scope: list[str] | None = None,
) -> Built:
    """Register an agent of `template` acting for a principal, a parent agent, or nobody."""
    return p.Provision(rid, template, _ref(on_behalf_of), ttl, agent_id, scope)


def _deprovision(rid: int, agent: int | str | AgentInfo) -> Built:
    """Retire an agent and every agent acting for it; how many were retired."""
    return p.Deprovision(rid, _ref(agent))


def _reload(rid: int) -> Built:
    """Reload the server's policy file: (old version, new version); raises `PolicyError` if bad."""
    return p.Reload(rid)


def _suspend(rid: int, subject: int | str | AgentInfo, reason: str | None = None) -> Built:
    """Suspend an agent (and its delegates) or a principal (and all acting for it); how many agents."""
    return p.Suspend(rid, _ref(subject), reason)


def _resume(rid: int, subject: int | str | AgentInfo) -> Built:
    """Undo `suspend`; how many agents became active."""
    return p.Resume(rid, _ref(subject))


def _freeze(rid: int) -> Built:
    """The kill switch: every decision is denied (`frozen`) until `unfreeze`."""
    return p.Freeze(rid)


def _unfreeze(rid: int) -> Built:
    """Undo `freeze`."""
    return p.Unfreeze(rid)


def _rotate_keys(rid: int) -> Built:
    """Make the server re-read its trusted JWKS files; the key ids it now trusts."""
    return p.RotateKeys(rid)


def _revoke(
    rid: int,
    token: str | None = None,
    *,
    agent: int | str | AgentInfo | None = None,
    principal: str | None = None,
    jti: str | None = None,
    reason: str | None = None,
) -> Built:
    """Revoke, for good (in the server's revocation log), a credential and its agent, an agent and
    every agent acting for it, a principal's credentials so far, or one `jti`; how many agents the
    server retired."""
    return p.Revoke(rid, token, _ref(agent), principal, jti, reason)


# ------------------------------------------------------------ the tables


class DecisionOps:
    """The operations of the decision socket (also served on the admin socket)."""

    ping = op(_ping, _dict)
    check = op(_check, _decision)
    check_batch = op(_check_batch, _batch)
    check_batch_reasons = op(_check_batch, _batch_reasons)
    authenticate = op(_authenticate, _authenticated)
    explain = op(_explain, _explanation)
    resolve = op(_resolve, _handles)
    quota_status = op(_quota_status, _levels)
    acquire = Op(_acquire, _lease, _async_lease)
    release = op(_release, _nothing)
    stats = op(_stats, _dict)


class AdminOps:
    """The admin socket's own operations."""

    provision = op(_provision, _agent)
    deprovision = op(_deprovision, _field("retired", int))
    reload = op(_reload, _old_and_new)
    suspend = op(_suspend, _field("suspended", int))
    resume = op(_resume, _field("resumed", int))
    freeze = op(_freeze, _nothing)
    unfreeze = op(_unfreeze, _nothing)
    rotate_keys = op(_rotate_keys, _kids)
    revoke = op(_revoke, _field("retired", int))
