"""Clients of the decision server: `Client` (blocking) here, `AsyncClient` (asyncio) in async_client.py.

Both have the operations of client_ops.py, written once for both: the
in-process engine's where that makes sense (`check`, `check_batch`,
`check_batch_reasons`, `authenticate`, `explain`, `acquire`, `stats`);
`AdminClient` and `AsyncAdminClient` add the admin operations (`provision`,
`revoke`, `reload`...). They connect lazily, reconnect when the connection
drops (re-authenticating the agents the connection had authenticated), and
raise `charter.ServerUnavailable` when the server cannot be reached or does
not answer within `timeout`: callers should treat that as a denial (fail
closed).

Error frames become Charter exceptions: `InvalidRequestError`,
`UnknownActionError`, `UnknownSubjectError`, `ProvisionError`, `PolicyError`,
`AuthenticationError`, `CapacityError`, and `RemoteError` (with `.code`) for
the rest.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from typing import Any, Final, Self

import msgspec

from charter import errors
from charter.server import protocol as p
from charter.server.client_ops import AdminOps, AgentInfo, DecisionOps, RemoteDecision, RemoteLease

__all__ = [
    "RETRY_SAFE",
    "AdminClient",
    "AgentInfo",
    "Client",
    "RemoteDecision",
    "RemoteError",
    "RemoteLease",
    "ServerTimeout",
    "raise_for",
]


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


_ERRORS: dict[str, type[errors.CharterError]] = {
    p.ErrorCode.INVALID_REQUEST: errors.InvalidRequestError,
    p.ErrorCode.UNKNOWN_ACTION: errors.UnknownActionError,
    p.ErrorCode.UNKNOWN_SUBJECT: errors.UnknownSubjectError,
    p.ErrorCode.PROVISION_FAILED: errors.ProvisionError,
    p.ErrorCode.CAPACITY: errors.CapacityError,
    p.ErrorCode.INTERNAL: errors.InternalError,
}

RETRY_SAFE: Final = frozenset(
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


# ------------------------------------------------------------ blocking


class Client(DecisionOps):
    """A blocking client of the decision socket; safe to share between threads (calls take turns).

    `timeout` bounds each call (connecting included). A call whose connection
    died before the answer is retried once on a new connection when that is
    safe: always if the request never left, otherwise only for operations
    that change nothing (never for admin changes, which may or may not have
    been applied when `ServerUnavailable` is raised).
    """

    is_async: Final = False

    def __init__(self, path: str, *, timeout: float = 5.0, max_frame: int = 64 << 20) -> None:
        self.path = path
        self.timeout = timeout
        self.max_frame = max_frame
        self.connections = 0
        """How many connections this client has opened (a lease belongs to one of them)."""
        self._sock: socket.socket | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._tokens: dict[str, str | None] = {}
        self._limit = timeout

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
        self.connections += 1
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
            raise ServerTimeout(f"no answer from {self.path} within {self._limit} s") from err
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

    def call(self, request: p.Request, *, timeout: float | None = None) -> p.Reply:
        """Send one request and return its reply; an error frame is raised as an exception.

        `timeout` overrides the client's for this call."""
        op = request.__struct_config__.tag
        with self._lock:
            self._limit = self.timeout if timeout is None else timeout
            deadline = time.monotonic() + self._limit
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


class AdminClient(Client, AdminOps):
    """A blocking client of the admin socket: the decision operations plus the admin ones."""
