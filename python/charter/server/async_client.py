"""The asyncio clients of the decision server: `AsyncClient` and `AsyncAdminClient` (see client.py).

Calls from concurrent tasks share one connection: each is written at once
and answered when the server is done with it, possibly out of order
(pipelining); replies are matched to calls by request id.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Final, Self

import msgspec

from charter import errors
from charter.server import protocol as p
from charter.server.client import RETRY_SAFE, RemoteError, ServerTimeout, raise_for
from charter.server.client_ops import AdminOps, AsyncRemoteLease, DecisionOps

__all__ = ["AsyncAdminClient", "AsyncClient", "AsyncRemoteLease"]


class _Wire(asyncio.Protocol):
    """The async client's connection: replies are matched to waiting futures by id."""

    def __init__(self, max_frame: int) -> None:
        self.splitter = p.FrameSplitter(max_frame)
        self.pending: dict[int, asyncio.Future[p.Reply]] = {}
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.refusal: RemoteError | None = None
        self._can_write = asyncio.Event()
        self._can_write.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            bodies = self.splitter.feed(data)
            for body in bodies:
                reply = p.response_decoder.decode(body)
                fut = self.pending.pop(reply.id, None)
                if fut is not None and not fut.done():
                    fut.set_result(reply)
                elif reply.id == 0 and isinstance(reply, p.ErrorReply):
                    self.refusal = RemoteError(reply.code, reply.message, reply.detail)
                    self._fail(self.refusal)
        except (ValueError, msgspec.DecodeError) as err:
            self._fail(errors.ServerUnavailable(f"unreadable reply: {err}"))
            if self.transport is not None:
                self.transport.abort()

    def _fail(self, err: Exception) -> None:
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(err)
        self.pending.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(
            self.refusal or errors.ServerUnavailable(f"connection lost: {exc or 'closed by the server'}")
        )
        if not self.closed.done():
            self.closed.set_result(None)
        self._can_write.set()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()


class AsyncClient(DecisionOps):
    """An asyncio client: many calls may be outstanding on its one connection (pipelining).

    Calls from concurrent tasks are written as they come and answered as the
    server finishes them, possibly out of order. The operations are those of
    `Client` (client_ops.py), as coroutines.
    """

    is_async: Final = True

    def __init__(self, path: str, *, timeout: float = 5.0, max_frame: int = 64 << 20) -> None:
        self.path = path
        self.timeout = timeout
        self.max_frame = max_frame
        self.connections = 0
        """How many connections this client has opened (a lease belongs to one of them)."""
        self._wire: _Wire | None = None
        self._ids = itertools.count(1)
        self._connecting: asyncio.Lock | None = None
        self._tokens: dict[str, str | None] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        wire, self._wire = self._wire, None
        if wire is not None and wire.transport is not None:
            wire.transport.close()
            await wire.closed

    async def _connected(self) -> _Wire:
        wire = self._wire
        if wire is not None and wire.transport is not None:
            return wire
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            wire = self._wire
            if wire is not None and wire.transport is not None:
                return wire
            loop = asyncio.get_running_loop()
            try:
                _, wire = await loop.create_unix_connection(lambda: _Wire(self.max_frame), self.path)
            except OSError as err:
                raise errors.ServerUnavailable(f"cannot connect to {self.path}: {err}") from err
            self._wire = wire
            self.connections += 1
            for token, proof in list(self._tokens.items()):
                reply = await self._send(wire, p.Authenticate(next(self._ids), token, proof))
                if isinstance(reply, p.ErrorReply):
                    self._tokens.pop(token, None)
            return wire

    async def _send(self, wire: _Wire, request: p.Request) -> p.Reply:
        if wire.refusal is not None:
            raise wire.refusal
        if wire.transport is None:
            raise errors.ServerUnavailable("connection lost")
        fut: asyncio.Future[p.Reply] = asyncio.get_running_loop().create_future()
        wire.pending[request.id] = fut
        await wire._can_write.wait()
        if wire.transport is None:
            wire.pending.pop(request.id, None)
            raise errors.ServerUnavailable("connection lost")
        wire.transport.write(p.frame(request))
        try:
            return await fut
        finally:
            wire.pending.pop(request.id, None)

    async def call(self, request: p.Request, *, timeout: float | None = None) -> p.Reply:
        """Send one request and await its reply; an error frame is raised as an exception."""
        op = request.__struct_config__.tag
        limit = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                for attempt in (0, 1):
                    wire = await self._connected()
                    try:
                        reply = await self._send(wire, request)
                        break
                    except errors.ServerUnavailable:
                        if attempt or op not in RETRY_SAFE:
                            raise
        except TimeoutError as err:
            raise ServerTimeout(f"no answer from {self.path} within {limit} s") from err
        if isinstance(reply, p.ErrorReply):
            raise_for(reply)
        return reply

    def _rid(self) -> int:
        return next(self._ids)


class AsyncAdminClient(AsyncClient, AdminOps):
    """An asyncio client of the admin socket: the decision operations plus the admin ones."""
