"""The server's operations: one dispatch table from request type to handler.

A handler takes the process's `Service`, the connection's `Session` and the
decoded request, and returns a reply, or an awaitable of one when it must
wait (a delayed ping, replication to workers, cluster-wide stats). Handlers
raise Charter exceptions freely; the connection turns them into error
frames (`service.error_reply`).

Adding an operation: a request Struct in protocol.py, a handler here, a row
in `OPERATIONS` (`requires` names the engine attribute it needs, so a build
without that feature answers `unknown_operation`), and a row in one of the
clients' tables (client_ops.py). An admin operation that
changes engine state replicates itself (`_replicated`) and gets a branch in
`service.apply_replicated`, so every worker process applies it too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from charter import errors
from charter.server import protocol as p
from charter.server.service import Service, Session, agent_id, agent_map, authenticate_agent, error_reply

HandlerResult = p.Reply | Coroutine[Any, Any, p.Reply]


def _error(rid: int, code: str, message: str, detail: Any = None) -> p.ErrorReply:
    return p.ErrorReply(rid, code, message, detail)


# ------------------------------------------------------------ decisions

_NOT_AUTHENTICATED = "this connection has not authenticated that agent (send `authenticate` or a token)"


def _subject(svc: Service, session: Session, rid: int, subject: p.Subject, token: str | None) -> Any:
    """The subject to decide for, or an error reply: the token if given, else the session rule."""
    if token is not None:
        try:
            agent = authenticate_agent(svc.engine, token, None)
        except errors.CharterError as err:
            return error_reply(rid, _as_auth_error(err))
        if subject is not None and subject != agent.handle and subject != agent.id:
            return _error(rid, p.ErrorCode.UNAUTHENTICATED, "the token is for another agent")
        return agent.handle
    if subject is None:
        return _error(rid, p.ErrorCode.INVALID_REQUEST, "a request needs a subject or a token")
    if not session.may_name(svc.engine, subject):
        return _error(rid, p.ErrorCode.UNAUTHENTICATED, _NOT_AUTHENTICATED)
    return subject


def _check(svc: Service, session: Session, req: p.Check) -> HandlerResult:
    subject: Any = req.subject
    if (
        req.token is not None
        or not session.trusted
        or subject is None
        or (session.local_handles and type(subject) is int)
    ):
        subject = _subject(svc, session, req.id, subject, req.token)
        if type(subject) is p.ErrorReply:
            return subject
    d = svc.engine.check(subject, req.action, req.resource, req.context)
    svc.by_reason[d.reason_code] += 1
    return p.DecisionReply(
        req.id, d.allowed, d.reason_code, d.reason, d.rule, d.policy_version, d.retry_after, d.decision_id
    )


def _column(raw: memoryview, dtype: str) -> npt.NDArray[Any]:
    arr = np.frombuffer(raw, dtype=dtype)
    return arr if arr.flags.aligned else arr.copy()


def _check_batch(svc: Service, session: Session, req: p.CheckBatch) -> HandlerResult:
    if len(req.handles) % 8 or len(req.actions) * 2 != len(req.handles):
        message = "check_batch: `handles` must be N x 8 bytes and `actions` N x 4 bytes"
        return _error(req.id, p.ErrorCode.INVALID_REQUEST, message)
    handles, index = _column(req.handles, "<u8"), _column(req.actions, "<u4")
    n = len(handles)
    if req.resources is not None and len(req.resources) != n:
        message = f"check_batch: {n} handles but {len(req.resources)} resources"
        return _error(req.id, p.ErrorCode.INVALID_REQUEST, message)
    if n and int(index.max()) >= len(req.action_names):
        return _error(
            req.id, p.ErrorCode.INVALID_REQUEST, "check_batch: an action index is past `action_names`"
        )
    if not session.may_name_all(handles):
        return _error(req.id, p.ErrorCode.UNAUTHENTICATED, _NOT_AUTHENTICATED)
    table = svc.action_ids(req.action_names)
    allowed, reasons = svc.engine.check_batch_reasons(handles, table[index], req.resources)
    svc.stats.decided_batch(reasons)
    return p.BatchReply(
        req.id, allowed.view(np.uint8).tobytes(), reasons.tobytes(), svc.engine.policy_version
    )


def _as_auth_error(err: errors.CharterError) -> errors.AuthenticationError:
    if isinstance(err, errors.AuthenticationError):
        return err
    return errors.AuthenticationError(getattr(err, "reason", None) or "refused", str(err))


def _authenticate(svc: Service, session: Session, req: p.Authenticate) -> HandlerResult:
    try:
        agent = authenticate_agent(svc.engine, req.token, req.proof)
    except errors.CharterError as err:
        return error_reply(req.id, _as_auth_error(err))
    session.admit(agent)
    return p.Result(req.id, agent_map(agent))


def _resolve(svc: Service, session: Session, req: p.Resolve) -> HandlerResult:
    if not session.trusted and not set(req.agents) <= session.ids:
        return _error(req.id, p.ErrorCode.UNAUTHENTICATED, _NOT_AUTHENTICATED)
    handles: list[int | None] = []
    for name in req.agents:
        try:
            handle = svc.engine.agent(name).handle
        except errors.CharterError:
            handles.append(None)
            continue
        session.give_handle(handle)
        handles.append(handle)
    return p.Result(req.id, {"handles": handles})


def _explain(svc: Service, session: Session, req: p.Explain) -> HandlerResult:
    subject = _subject(svc, session, req.id, req.subject, req.token)
    if type(subject) is p.ErrorReply:
        return subject
    explanation = svc.engine.explain(subject, req.action, req.resource, req.context)
    return p.Result(req.id, {"data": explanation.data, "text": str(explanation)})


def _quota_status(svc: Service, session: Session, req: p.QuotaStatus) -> HandlerResult:
    subject = _subject(svc, session, req.id, req.subject, req.token)
    if type(subject) is p.ErrorReply:
        return subject
    return p.Result(req.id, {"levels": svc.engine.quota_status(subject)})


def _acquire(svc: Service, session: Session, req: p.Acquire) -> HandlerResult:
    subject = _subject(svc, session, req.id, req.subject, req.token)
    if type(subject) is p.ErrorReply:
        return subject
    if len(session.leases) >= svc.max_leases:
        message = f"this connection holds {len(session.leases)} leases, the most it may: release some"
        return _error(req.id, p.ErrorCode.CAPACITY, message)
    lease = svc.engine.acquire(subject, req.action, req.resource)
    d = lease.decision
    svc.by_reason[d.reason_code] += 1
    held = session.hold(lease) if d.allowed else 0
    return p.LeaseReply(
        req.id,
        d.allowed,
        d.reason_code,
        d.reason,
        d.rule,
        d.policy_version,
        d.retry_after,
        d.decision_id,
        lease=held,
    )


def _release(svc: Service, session: Session, req: p.Release) -> HandlerResult:
    del svc
    lease = session.leases.pop(req.lease, None)
    if lease is None:
        return _error(req.id, p.ErrorCode.INVALID_REQUEST, f"no lease {req.lease} on this connection")
    lease.release()
    return p.Result(req.id, {"released": True})


def _ping(svc: Service, session: Session, req: p.Ping) -> HandlerResult:
    del session
    reply = p.Result(req.id, {"policy_version": svc.engine.policy_version})
    if not req.delay:
        return reply

    async def later() -> p.Reply:
        await asyncio.sleep(req.delay)
        return reply

    return later()


def _stats(svc: Service, session: Session, req: p.Stats) -> HandlerResult:
    del session
    cluster = svc.cluster
    if cluster is None:
        return p.Result(req.id, svc.local_stats())

    async def gathered() -> p.Reply:
        return p.Result(req.id, await cluster.stats())

    return gathered()


# ------------------------------------------------------------ admin


def _replicated(
    svc: Service, rid: int, value: dict[str, Any], op: str, args: dict[str, Any], *, count: str | None = None
) -> HandlerResult:
    """The result `value`, once every worker has applied the change (at once without workers).

    `count`: the key of `value` holding how many agents changed; the largest
    count over all processes is reported (each holds its own copy of them),
    and a subject no process knows is `unknown_subject`.
    """
    if svc.cluster is None:
        if count is not None and value[count] is None:
            raise errors.UnknownSubjectError(
                f"no agent or principal `{args.get('agent') or args.get('subject')}`"
            )
        return p.Result(rid, value)
    applied = svc.cluster.replicate(op, args)  # sent now, so workers apply changes in this order

    async def replicated() -> p.Reply:
        results = await applied
        warnings = [r["warning"] for r in results if r.get("warning")]
        if warnings:
            value["warnings"] = warnings
        if count is not None:
            counts = [c for c in (value[count], *(r.get("count") for r in results)) if c is not None]
            if not counts:
                raise errors.UnknownSubjectError(
                    f"no agent or principal `{args.get('agent') or args.get('subject')}`"
                )
            value[count] = max(counts)
        return p.Result(rid, value)

    return replicated()


def _provision(svc: Service, session: Session, req: p.Provision) -> HandlerResult:
    del session
    kwargs: dict[str, Any] = {"on_behalf_of": req.on_behalf_of, "ttl": req.ttl, "agent_id": req.agent_id}
    if req.scope is not None:
        kwargs["scope"] = req.scope
    agent = svc.engine.provision(req.template, **kwargs)
    delegator = None if req.on_behalf_of is None else agent_id(svc.engine, req.on_behalf_of)
    args = {
        "template": req.template,
        "on_behalf_of": delegator,
        "agent_id": agent.id,
        "expires_at": agent.expires_at,
        "scope": req.scope,
    }
    return _replicated(svc, req.id, agent_map(agent), "provision", args)


def _local_count(svc: Service, ref: int | str, change: Callable[[str], int]) -> tuple[str, int | None]:
    """Apply a change to a subject here; (its id, how many changed), None when unknown here.

    With workers, a subject unknown to the supervisor may still be registered
    on a worker (an agent that authenticated there), so it is passed on.
    """
    try:
        ident = agent_id(svc.engine, ref)
        return ident, change(ident)
    except errors.UnknownSubjectError:
        if svc.cluster is None or isinstance(ref, int):
            raise
        return ref, None


def _deprovision(svc: Service, session: Session, req: p.Deprovision) -> HandlerResult:
    del session
    ident, n = _local_count(svc, req.agent, svc.engine.deprovision)
    return _replicated(svc, req.id, {"retired": n}, "deprovision", {"agent": ident}, count="retired")


def _suspend(svc: Service, session: Session, req: p.Suspend) -> HandlerResult:
    del session
    reason = req.reason or "suspended by an operator"
    ident, n = _local_count(svc, req.subject, lambda s: svc.engine.suspend(s, reason))
    args = {"subject": ident, "reason": reason}
    return _replicated(svc, req.id, {"suspended": n}, "suspend", args, count="suspended")


def _resume(svc: Service, session: Session, req: p.Resume) -> HandlerResult:
    del session
    ident, n = _local_count(svc, req.subject, svc.engine.resume)
    return _replicated(svc, req.id, {"resumed": n}, "resume", {"subject": ident}, count="resumed")


def _freeze(svc: Service, session: Session, req: p.Freeze) -> HandlerResult:
    del session
    svc.engine.freeze()
    return _replicated(svc, req.id, {"frozen": True}, "freeze", {})


def _unfreeze(svc: Service, session: Session, req: p.Unfreeze) -> HandlerResult:
    del session
    svc.engine.unfreeze()
    return _replicated(svc, req.id, {"frozen": False}, "unfreeze", {})


def _reload(svc: Service, session: Session, req: p.Reload) -> HandlerResult:
    del session
    old, new, doc = svc.reload_from_file()
    value = {"old_version": old, "new_version": new}
    return _replicated(svc, req.id, value, "reload", {"policy": msgspec.to_builtins(doc)})


def _rotate_keys(svc: Service, session: Session, req: p.RotateKeys) -> HandlerResult:
    del session
    if not svc.jwks_paths:
        return _error(req.id, p.ErrorCode.INVALID_REQUEST, "the server was started without --trust-jwks")
    from charter.server.server import read_jwks

    docs = read_jwks(svc.jwks_paths)
    kids = [kid for jwks in docs for kid in svc.engine.trust(jwks)]
    return _replicated(svc, req.id, {"kids": kids}, "trust", {"jwks": docs})


def _revoke(svc: Service, session: Session, req: p.Revoke) -> HandlerResult:
    del session
    agent = None if req.agent is None else agent_id(svc.engine, req.agent)
    kwargs = {"agent": agent, "principal": req.principal, "jti": req.jti, "reason": req.reason}
    retired = svc.engine.revoke(req.token, **kwargs)
    args = {"token": req.token, **kwargs}
    return _replicated(svc, req.id, {"retired": retired}, "revoke", args, count="retired")


# ------------------------------------------------------------ the table


@dataclass(frozen=True, slots=True)
class Operation:
    """One row of the dispatch table."""

    request: type[p.Request]
    run: Callable[[Service, Session, Any], HandlerResult]
    admin_only: bool = False
    requires: str | None = None
    """An engine attribute the operation needs; without it the operation is not served."""
    name: str = field(init=False)
    """The request's kind on the wire (`check`, ...)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.request.__struct_config__.tag)


OPERATIONS: tuple[Operation, ...] = (
    Operation(p.Ping, _ping),
    Operation(p.Check, _check),
    Operation(p.CheckBatch, _check_batch),
    Operation(p.Authenticate, _authenticate, requires="authenticate"),
    Operation(p.Resolve, _resolve),
    Operation(p.Explain, _explain),
    Operation(p.QuotaStatus, _quota_status, requires="quota_status"),
    Operation(p.Acquire, _acquire, requires="acquire"),
    Operation(p.Release, _release, requires="acquire"),
    Operation(p.Stats, _stats),
    Operation(p.Provision, _provision, admin_only=True),
    Operation(p.Deprovision, _deprovision, admin_only=True),
    Operation(p.Suspend, _suspend, admin_only=True, requires="suspend"),
    Operation(p.Resume, _resume, admin_only=True, requires="resume"),
    Operation(p.Freeze, _freeze, admin_only=True, requires="freeze"),
    Operation(p.Unfreeze, _unfreeze, admin_only=True, requires="unfreeze"),
    Operation(p.Reload, _reload, admin_only=True),
    Operation(p.RotateKeys, _rotate_keys, admin_only=True, requires="trust"),
    Operation(p.Revoke, _revoke, admin_only=True, requires="revoke"),
)
"""Every operation the server can serve (those whose `requires` the engine lacks are left out)."""
