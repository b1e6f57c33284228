"""What a server process's operations share: its engine (`Service`), a connection's `Session`, errors.

Also the places where the server meets engine features beyond decisions:
`authenticate_agent` (identity), `Service.follow_revocations` (the
revocation log other processes append to) and `apply_replicated` (how a
worker process repeats an admin change its supervisor made).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from charter import errors
from charter import policy as policy_doc
from charter.server import protocol as p

if TYPE_CHECKING:
    from charter._core import Agent, Lease
    from charter.engine import Engine
    from charter.server.metrics import Stats

log = logging.getLogger("charter.server")

NO_ACTION = 0xFFFF_FFFF
"""The action id given to names the policy does not declare: the engine denies it `unknown_action`."""


class Cluster(Protocol):
    """What a process of a multi-worker server reaches through its supervisor (see workers.py)."""

    def replicate(self, op: str, args: dict[str, Any]) -> Awaitable[list[dict[str, Any]]]:
        """Send an admin change to every worker now; completes once all applied it, with their results
        (`apply_replicated`)."""

    async def stats(self) -> dict[str, Any]:
        """The server-wide stats snapshot."""


class Service:
    """One process's engine and what its operations share."""

    def __init__(
        self,
        engine: Engine,
        stats: Stats,
        *,
        policy_path: str,
        jwks_paths: tuple[str, ...] = (),
        trusted_uids: frozenset[int] = frozenset(),
        cluster: Cluster | None = None,
        workers: int = 1,
        max_leases: int = 1024,
    ) -> None:
        from charter.server.ops import OPERATIONS

        self.engine = engine
        self.stats = stats
        self.by_reason = stats.by_reason  # the hot path's counter, one attribute away
        self.policy_path = policy_path
        self.jwks_paths = jwks_paths
        self.trusted_uids = trusted_uids
        self.cluster = cluster
        self.workers = workers
        self.max_leases = max_leases
        self.revocations_unreadable = False
        """Whether the last look at the revocation log failed (the engine is then kept frozen)."""
        self.frozen_for_revocations = False
        """Whether `follow_revocations` froze the engine: only then does it unfreeze it once the log
        reads again (an admin's own `freeze` is left alone)."""
        self.ops = {
            op.request: op for op in OPERATIONS if op.requires is None or hasattr(engine, op.requires)
        }
        self._action_ids: dict[str, int] = {}
        self._action_ids_version = ""

    def action_ids(self, names: list[str]) -> npt.NDArray[np.uint32]:
        """Engine action ids for `names` (undeclared names get `NO_ACTION`), cached per policy version."""
        if self._action_ids_version != self.engine.policy_version:
            self._action_ids = {}
            self._action_ids_version = self.engine.policy_version
        cache, out = self._action_ids, np.empty(len(names), dtype=np.uint32)
        for i, name in enumerate(names):
            aid = cache.get(name)
            if aid is None:
                try:
                    aid = self.engine.action_id(name)
                except errors.UnknownActionError:
                    aid = NO_ACTION
                if len(cache) < 65_536:
                    cache[name] = aid
            out[i] = aid
        return out

    def reload_from_file(self) -> tuple[str, str, policy_doc.Policy]:
        """Reload the policy file; on error the old policy stays and the error is counted and raised."""
        try:
            doc = policy_doc.from_file(self.policy_path)
            old, new = self.engine.reload(doc)
        except (errors.CharterError, OSError) as err:
            self.stats.reloads_failed += 1
            self.stats.last_reload_error = str(err)
            raise
        self.stats.reloads_ok += 1
        self.stats.last_reload_error = None
        return old, new, doc

    def follow_revocations(self) -> None:
        """Apply what other processes appended to the revocation log; fail closed if it cannot be read.

        Called periodically by the server (`--revocations-poll`). While the
        log cannot be read, a revocation made elsewhere could be missed, so
        the engine is frozen (every decision denied, `frozen`) until a read
        succeeds again.
        """
        try:
            before = len(self.engine.revocations)
            retired = self.engine.sync_revocations()
        except (errors.CharterError, OSError) as err:
            if not self.revocations_unreadable:
                log.error("cannot read the revocation log, denying every decision until it can: %s", err)
                self.revocations_unreadable = True
            if not self.engine.frozen:
                if self.frozen_for_revocations:  # an admin unfroze it meanwhile
                    log.warning("the revocation log is still unreadable: frozen again")
                with self.engine.local_changes():  # this server's own reason: not the fleet's
                    self.engine.freeze()
                self.frozen_for_revocations = True
            return
        if self.revocations_unreadable:
            self.revocations_unreadable = False
            log.info("the revocation log reads again; decisions resume")
            if self.frozen_for_revocations:
                with self.engine.local_changes():
                    self.engine.unfreeze()
        self.frozen_for_revocations = False
        read = len(self.engine.revocations) - before
        if read or retired:
            log.info("revocation log: %d new record(s), %d agent(s) retired here", max(read, 0), retired)

    def local_stats(self) -> dict[str, Any]:
        engine_stats = dict(self.engine.stats())
        if hasattr(self.engine, "frozen"):
            engine_stats["frozen"] = bool(self.engine.frozen)
        shared = getattr(self.engine, "shared_state", None)
        if shared is not None:
            engine_stats["shared_state"] = shared.status()
        audit = self.engine.audit_status()
        if audit is not None:
            engine_stats["audit_backlog"] = audit["pending"]
            engine_stats["audit"] = {
                k: audit[k]
                for k in ("records", "bytes", "batches", "dropped", "write_errors", "failing", "last_seq")
            }
        return self.stats.snapshot(
            policy_version=self.engine.policy_version, engine=engine_stats, workers=self.workers
        )


class Session:
    """Who a connection may name: agents it authenticated, or anyone if its peer is trusted.

    The admin socket and peers whose uid is in `--trusted-uid` are trusted
    (a gateway deciding for many agents). Anyone else must `authenticate`
    an agent before naming it, by handle or id, in a decision request;
    principals acting directly may be named by anyone.

    Handles belong to one process. With several workers, a decision
    connection may name by handle only agents whose handle it was given on
    this connection (`authenticate`, `resolve`), even when trusted.
    """

    __slots__ = ("_handle_array", "handles", "ids", "leases", "local_handles", "trusted")

    def __init__(self, *, trusted: bool, local_handles: bool = False) -> None:
        self.trusted = trusted
        self.local_handles = local_handles
        self.handles: set[int] = set()
        self.ids: set[str] = set()
        self.leases: dict[int, Lease] = {}
        """In-flight slots this connection holds (`acquire`), by lease id; released when it closes."""
        self._handle_array: npt.NDArray[np.uint64] | None = None

    def hold(self, lease: Lease) -> int:
        """Keep `lease` for this connection; its id: random, so an id from a closed connection
        (a client that reconnected) names nothing on a new one, in any process."""
        lease_id = 0
        while not lease_id or lease_id in self.leases:
            lease_id = secrets.randbits(63)
        self.leases[lease_id] = lease
        return lease_id

    def release_all(self) -> None:
        """The connection closed: give back every slot it still held."""
        leases, self.leases = self.leases, {}
        for lease in leases.values():
            lease.release()

    def admit(self, agent: Agent) -> None:
        """The connection proved it acts as `agent`."""
        self.ids.add(agent.id)
        self.give_handle(agent.handle)

    def give_handle(self, handle: int) -> None:
        if handle not in self.handles:
            self.handles.add(handle)
            self._handle_array = None

    def may_name(self, engine: Engine, subject: int | str | None) -> bool:
        if type(subject) is int:
            return subject in self.handles or (self.trusted and not self.local_handles)
        if self.trusted:
            return True
        if subject is None:
            return False
        return subject in self.ids or not names_agent(engine, subject)  # type: ignore[arg-type]

    def may_name_all(self, handles: npt.NDArray[np.uint64]) -> bool:
        if (self.trusted and not self.local_handles) or len(handles) == 0:
            return True
        if self._handle_array is None:
            self._handle_array = np.fromiter(self.handles, dtype=np.uint64, count=len(self.handles))
        return bool(np.isin(handles, self._handle_array).all())


def names_agent(engine: Engine, name: str) -> bool:
    """Whether `name` is an agent's id (else a principal's, or nobody's)."""
    try:
        engine.agent(name)
    except errors.CharterError:
        return False
    return True


def authenticate_agent(engine: Engine, token: str, proof: str | None) -> Agent:
    """The agent a token (and proof of possession) proves: the identity feature's `engine.authenticate`.

    It raises `charter.AuthenticationError` (with `.reason`) for every
    refusal; the server treats any Charter exception from it as one.
    """
    authenticate: Callable[..., Agent] = engine.authenticate
    return authenticate(token, proof)


AGENT_FIELDS = (
    "id",
    "handle",
    "template",
    "on_behalf_of",
    "principal",
    "depth",
    "created_at",
    "expires_at",
    "state",
    "scope",
)


def agent_map(agent: Agent) -> dict[str, Any]:
    """An `Agent` as the protocol's agent map."""
    return {f: getattr(agent, f) for f in AGENT_FIELDS if hasattr(agent, f)}


def agent_id(engine: Engine, ref: int | str) -> str:
    """An agent's id from a handle or id (a principal id comes back unchanged): ids mean the same in
    every process, handles only in the one that gave them out."""
    if isinstance(ref, int):
        return engine.agent(ref).id
    return ref


# ------------------------------------------------------------ errors

_ERROR_CODES: tuple[tuple[type[Exception], str], ...] = (
    (errors.AuthenticationError, p.ErrorCode.AUTHENTICATION_FAILED),
    (errors.PolicyError, p.ErrorCode.POLICY_ERROR),
    (errors.ProvisionError, p.ErrorCode.PROVISION_FAILED),
    (errors.UnknownActionError, p.ErrorCode.UNKNOWN_ACTION),
    (errors.UnknownSubjectError, p.ErrorCode.UNKNOWN_SUBJECT),
    (errors.InvalidRequestError, p.ErrorCode.INVALID_REQUEST),
    (errors.CapacityError, p.ErrorCode.CAPACITY),
)


def error_reply(rid: int, err: Exception) -> p.ErrorReply:
    """The error frame for an exception a handler raised (unexpected ones are `internal_error`)."""
    for cls, code in _ERROR_CODES:
        if isinstance(err, cls):
            detail = None
            if isinstance(err, errors.PolicyError):
                detail = {"path": err.path, "source": err.source, "message": err.message}
            elif isinstance(err, errors.AuthenticationError):
                detail = {"reason": err.reason}
            return p.ErrorReply(rid, code, str(err), detail)
    return p.ErrorReply(rid, p.ErrorCode.INTERNAL, "internal error (logged by the server)")


# ------------------------------------------------------------ replication


def apply_replicated(engine: Engine, op: str, args: dict[str, Any]) -> dict[str, Any]:
    """Repeat on a worker's engine an admin change its supervisor made.

    Returns `{"count": n}` (agents affected here; None if the subject is not
    registered here) or `{"warning": ...}`. Agents are named by id: handles
    differ between processes, since each registers the agents its clients
    authenticate. A change the worker cannot repeat raises when skipping it
    would leave the worker allowing more than the supervisor (retiring,
    suspending, freezing, a reload, trusted keys): the worker must then stop.
    A provision it cannot repeat (the delegator expired meanwhile) is a
    warning: the agent is missing there, so it is denied there.
    """
    with engine.local_changes():  # the supervisor already shared it with the fleet
        return _apply_replicated(engine, op, args)


def _apply_replicated(engine: Engine, op: str, args: dict[str, Any]) -> dict[str, Any]:
    if op == "provision":
        expires_at = args["expires_at"]
        ttl = None if expires_at is None else expires_at - time.time()
        if ttl is not None and ttl <= 0:
            return {"warning": f"agent `{args['agent_id']}` expired before it reached a worker"}
        kwargs = {"on_behalf_of": args["on_behalf_of"], "agent_id": args["agent_id"], "ttl": ttl}
        if args.get("scope") is not None:
            kwargs["scope"] = args["scope"]
        try:
            engine.provision(args["template"], **kwargs)
        except errors.CharterError as err:
            return {"warning": f"agent `{args['agent_id']}` not provisioned on a worker: {err}"}
        return {"count": 1}
    try:
        if op == "deprovision":
            return {"count": engine.deprovision(args["agent"])}
        if op == "suspend":
            return {"count": engine.suspend(args["subject"], args["reason"])}
        if op == "resume":
            return {"count": engine.resume(args["subject"])}
    except errors.UnknownSubjectError:
        return {"count": None}  # never registered here: nothing to change
    if op in ("freeze", "unfreeze"):
        getattr(engine, op)()
        return {}
    if op == "revoke":
        if engine.revocations.path is not None:  # the supervisor appended it: read it from there
            return {"count": engine.sync_revocations()}
        kwargs = {k: args[k] for k in ("agent", "principal", "jti", "reason")}
        return {"count": engine.revoke(args["token"], **kwargs)}
    if op == "reload":
        engine.reload(args["policy"])
        return {}
    if op == "trust":
        for jwks in args["jwks"]:
            engine.trust(jwks)
        return {}
    raise errors.InternalError(f"unknown replicated operation `{op}`")
