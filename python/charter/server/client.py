"""Clients of the decision server: `Client` (blocking) here, `AsyncClient` (asyncio) in async_client.py.

Both mirror the in-process engine where that makes sense (`check`,
`check_batch`, `check_batch_reasons`, `authenticate`, `explain`, `stats`);
`AdminClient` and `AsyncAdminClient` add the admin operations. They connect
lazily, reconnect when the connection drops (re-authenticating the agents
the connection had authenticated), and raise `charter.ServerUnavailable`
when the server cannot be reached or does not answer within `timeout`:
callers should treat that as a denial (fail closed).

Error frames become Charter exceptions: `InvalidRequestError`,
`UnknownActionError`, `UnknownSubjectError`, `ProvisionError`, `PolicyError`,
`AuthenticationError`, and `RemoteError` (with `.code`) for the rest.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any, Self

import msgspec
import numpy as np
import numpy.typing as npt

from charter import errors
from charter.explain import Explanation
from charter.server import protocol as p

RemoteDecision = p.DecisionReply
"""What `check` returns: `.allowed`, `.reason`, `.reason_code`, `.rule`, `.policy_version`, `bool()`."""


class ServerTimeout(errors.ServerUnavailable, TimeoutError):  # noqa: N818 (pairs with ServerUnavailable)
    """The server did not answer within the client's timeout."""


class _NotDelivered(errors.ServerUnavailable):
    """The connection was already dead when the request was written: it never reached the server."""


class RemoteError(errors.CharterError):
    """An error frame with no more specific exception; `code` is the protocol's error code."""

    def __init__(self, code: str, message: str, detail: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.detail = detail


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


_ERRORS: dict[str, type[errors.CharterError]] = {
    p.ErrorCode.INVALID_REQUEST: errors.InvalidRequestError,
    p.ErrorCode.UNKNOWN_ACTION: errors.UnknownActionError,
    p.ErrorCode.UNKNOWN_SUBJECT: errors.UnknownSubjectError,
    p.ErrorCode.PROVISION_FAILED: errors.ProvisionError,
    p.ErrorCode.CAPACITY: errors.CapacityError,
    p.ErrorCode.INTERNAL: errors.InternalError,
}

RETRY_SAFE = frozenset(
    {"ping", "check", "check_batch", "authenticate", "resolve", "explain", "quota_status", "stats"}
)
"""Operations a client may resend on a new connection when the old one died before answering."""


def raise_for(reply: p.ErrorReply) -> None:
    """Raise the Charter exception an error frame stands for."""
    detail = reply.detail if isinstance(reply.detail, dict) else {}
    if reply.code == p.ErrorCode.POLICY_ERROR:
        raise errors.PolicyError(
            str(detail.get("message") or reply.message), path=detail.get("path"), source=detail.get("source")
        )
    if reply.code == p.ErrorCode.AUTHENTICATION_FAILED:
        raise errors.AuthenticationError(str(detail.get("reason") or "refused"), reply.message)
    cls = _ERRORS.get(reply.code)
    if cls is not None:
        raise cls(reply.message)
    raise RemoteError(reply.code, reply.message, reply.detail)


# ------------------------------------------------------------ requests


def check_request(
    rid: int, subject: Any, action: str, resource: str | None, context: Any, token: str | None
) -> p.Check:
    if hasattr(subject, "handle"):
        subject = subject.handle
    return p.Check(rid, subject, action, resource, context, token)


def explain_request(
    rid: int, subject: Any, action: str, resource: str | None, context: Any, token: str | None
) -> p.Explain:
    if hasattr(subject, "handle"):
        subject = subject.handle
    return p.Explain(rid, subject, action, resource, context, token)


def batch_request(
    rid: int,
    handles: npt.ArrayLike,
    actions: Sequence[str] | npt.ArrayLike,
    resources: Sequence[str | None] | None,
    action_names: Sequence[str] | None,
) -> p.CheckBatch:
    """The columnar frame: `actions` are names, or indices into `action_names`."""
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


def batch_arrays(reply: p.Reply) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.uint8]]:
    assert isinstance(reply, p.BatchReply)
    allowed = np.frombuffer(reply.allowed, dtype=np.uint8).astype(np.bool_)
    return allowed, np.frombuffer(reply.reasons, dtype=np.uint8).copy()


def result_value(reply: p.Reply) -> Any:
    assert isinstance(reply, p.Result)
    return reply.value


def agent_info(reply: p.Reply) -> AgentInfo:
    return msgspec.convert(result_value(reply), AgentInfo)


def explanation(reply: p.Reply) -> Explanation:
    return Explanation(result_value(reply)["data"])


# ------------------------------------------------------------ blocking


class Client:
    """A blocking client of the decision socket; safe to share between threads (calls take turns).

    `timeout` bounds each call (connecting included). A call whose connection
    died before the answer is retried once on a new connection when that is
    safe: always if the request never left, otherwise only for operations
    that change nothing (never for admin changes, which may or may not have
    been applied when `ServerUnavailable` is raised).
    """

    def __init__(self, path: str, *, timeout: float = 5.0, max_frame: int = 64 << 20) -> None:
        self.path = path
        self.timeout = timeout
        self.max_frame = max_frame
        self._sock: socket.socket | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._tokens: dict[str, str | None] = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connect(self, deadline: float) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            sock.connect(self.path)
        except OSError as err:
            sock.close()
            raise errors.ServerUnavailable(f"cannot connect to {self.path}: {err}") from err
        self._sock = sock
        for token, proof in list(self._tokens.items()):
            reply = self._exchange(p.Authenticate(next(self._ids), token, proof), deadline)
            if isinstance(reply, p.ErrorReply):
                self._tokens.pop(token, None)
        return sock

    def _exchange(self, request: p.Request, deadline: float) -> p.Reply:
        sock = self._sock
        assert sock is not None
        undelivered = False
        try:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                sock.sendall(p.frame(request))
            except (BrokenPipeError, ConnectionResetError):
                # The server had hung up; it may have said why (an admin uid refusal): read on.
                undelivered = True
            while True:
                header = self._recv(sock, 4)
                (n,) = p.HEADER.unpack(header)
                if n > self.max_frame:
                    raise errors.ServerUnavailable(f"the server sent a frame of {n} bytes")
                reply: p.Reply = p.response_decoder.decode(self._recv(sock, n))
                if reply.id == request.id:
                    return reply
                if reply.id == 0 and isinstance(reply, p.ErrorReply):
                    return reply
        except TimeoutError as err:
            self._drop()
            raise ServerTimeout(f"no answer from {self.path} within {self.timeout} s") from err
        except msgspec.DecodeError as err:
            self._drop()
            raise errors.ServerUnavailable(f"unreadable reply from {self.path}: {err}") from err
        except OSError as err:
            self._drop()
            cls = _NotDelivered if undelivered else errors.ServerUnavailable
            raise cls(f"connection to {self.path} lost: {err}") from err

    @staticmethod
    def _recv(sock: socket.socket, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionResetError("the server closed the connection")
            buf += chunk
        return bytes(buf)

    def call(self, request: p.Request) -> p.Reply:
        """Send one request and return its reply; an error frame is raised as an exception."""
        op = request.__struct_config__.tag
        with self._lock:
            deadline = time.monotonic() + self.timeout
            for attempt in (0, 1):
                sent = False
                try:
                    if self._sock is None:
                        self._connect(deadline)
                    sent = True
                    reply = self._exchange(request, deadline)
                    break
                except ServerTimeout:
                    raise
                except _NotDelivered:
                    if attempt or time.monotonic() >= deadline:
                        raise
                except errors.ServerUnavailable:
                    if attempt or (sent and op not in RETRY_SAFE) or time.monotonic() >= deadline:
                        raise
        if isinstance(reply, p.ErrorReply):
            raise_for(reply)
        return reply

    def _rid(self) -> int:
        return next(self._ids)

    # -------------------------------------------------------- operations

    def ping(self, delay: float = 0.0) -> dict[str, Any]:
        """`{"policy_version": ...}` after `delay` seconds on the server."""
        return dict(result_value(self.call(p.Ping(self._rid(), delay))))

    def check(
        self,
        subject: int | str | AgentInfo | None,
        action: str,
        resource: str | None = None,
        context: dict[str, Any] | None = None,
        *,
        token: str | None = None,
    ) -> RemoteDecision:
        """Decide one request (`subject` may be None when `token` names the agent)."""
        reply = self.call(check_request(self._rid(), subject, action, resource, context, token))
        assert isinstance(reply, p.DecisionReply)
        return reply

    def check_batch(
        self,
        handles: npt.ArrayLike,
        actions: Sequence[str] | npt.ArrayLike,
        resources: Sequence[str | None] | None = None,
        *,
        action_names: Sequence[str] | None = None,
    ) -> npt.NDArray[np.bool_]:
        """Decide many requests in one frame; `actions` are names (or indices into `action_names`)."""
        return self.check_batch_reasons(handles, actions, resources, action_names=action_names)[0]

    def check_batch_reasons(
        self,
        handles: npt.ArrayLike,
        actions: Sequence[str] | npt.ArrayLike,
        resources: Sequence[str | None] | None = None,
        *,
        action_names: Sequence[str] | None = None,
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.uint8]]:
        """Like `check_batch`, plus each decision's reason code (index into `charter.REASONS`)."""
        req = batch_request(self._rid(), handles, actions, resources, action_names)
        return batch_arrays(self.call(req))

    def authenticate(self, token: str, proof: str | None = None) -> AgentInfo:
        """Prove an agent's identity; this connection may then name it (kept across reconnects)."""
        info = agent_info(self.call(p.Authenticate(self._rid(), token, proof)))
        self._tokens[token] = proof
        return info

    def explain(
        self,
        subject: int | str | AgentInfo | None,
        action: str,
        resource: str | None = None,
        context: dict[str, Any] | None = None,
        *,
        token: str | None = None,
    ) -> Explanation:
        return explanation(self.call(explain_request(self._rid(), subject, action, resource, context, token)))

    def resolve(self, agents: Sequence[str]) -> list[int | None]:
        """The handles of agents by id, usable on this connection (None for an unknown id).

        For trusted peers (and agents this connection authenticated): with
        several workers, handles from anywhere else are refused.
        """
        return list(result_value(self.call(p.Resolve(self._rid(), list(agents))))["handles"])

    def quota_status(
        self, subject: int | str | AgentInfo | None, *, token: str | None = None
    ) -> list[dict[str, Any]]:
        """What is left of each quota along the agent's chain, own level first."""
        ref = subject.handle if isinstance(subject, AgentInfo) else subject
        return list(result_value(self.call(p.QuotaStatus(self._rid(), ref, token)))["levels"])

    def stats(self) -> dict[str, Any]:
        """The server's statistics (server-wide when it runs several workers)."""
        return dict(result_value(self.call(p.Stats(self._rid()))))


class AdminClient(Client):
    """A blocking client of the admin socket: the decision operations plus the admin ones."""

    def provision(
        self,
        template: str,
        *,
        on_behalf_of: int | str | AgentInfo | None = None,
        ttl: float | None = None,
        agent_id: str | None = None,
        scope: list[str] | None = None,
    ) -> AgentInfo:
        if isinstance(on_behalf_of, AgentInfo):
            on_behalf_of = on_behalf_of.handle
        return agent_info(self.call(p.Provision(self._rid(), template, on_behalf_of, ttl, agent_id, scope)))

    def deprovision(self, agent: int | str | AgentInfo) -> int:
        """Retire an agent and every agent acting for it; how many were retired."""
        ref = agent.handle if isinstance(agent, AgentInfo) else agent
        return int(result_value(self.call(p.Deprovision(self._rid(), ref)))["retired"])

    def reload(self) -> tuple[str, str]:
        """Reload the server's policy file: (old version, new version); raises `PolicyError` if bad."""
        value = result_value(self.call(p.Reload(self._rid())))
        return value["old_version"], value["new_version"]

    def suspend(self, subject: int | str | AgentInfo, reason: str | None = None) -> int:
        """Suspend an agent (and its delegates) or a principal (and all acting for it); how many agents."""
        ref = subject.handle if isinstance(subject, AgentInfo) else subject
        return int(result_value(self.call(p.Suspend(self._rid(), ref, reason)))["suspended"])

    def resume(self, subject: int | str | AgentInfo) -> int:
        """Undo `suspend`; how many agents became active."""
        ref = subject.handle if isinstance(subject, AgentInfo) else subject
        return int(result_value(self.call(p.Resume(self._rid(), ref)))["resumed"])

    def freeze(self) -> None:
        """The kill switch: every decision is denied (`frozen`) until `unfreeze`."""
        self.call(p.Freeze(self._rid()))

    def unfreeze(self) -> None:
        self.call(p.Unfreeze(self._rid()))

    def rotate_keys(self) -> list[str]:
        """Make the server re-read its trusted JWKS files; the key ids it now trusts."""
        return list(result_value(self.call(p.RotateKeys(self._rid())))["kids"])
