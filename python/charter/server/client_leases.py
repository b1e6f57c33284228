"""Leases held through a server: what `acquire` returns on a blocking and on an asyncio client.

A lease's slots belong to the connection it was acquired on; the server
gives them back when that connection closes. So a lease remembers which of
its client's connections it came from, and releasing it after a reconnect
sends nothing (the slots are already free, and its id means nothing on the
new connection).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Self

from charter import errors
from charter.server import protocol as p

if TYPE_CHECKING:
    from charter.server.async_client import AsyncClient
    from charter.server.client import Client

__all__ = ["AsyncRemoteLease", "RemoteLease"]


class RemoteLease:
    """What `Client.acquire` returns: the decision and the in-flight slots it holds, if allowed.

    `bool(lease)` is `lease.decision.allowed`. The slots are given back by
    `release()`, on leaving the `with` block, or when the connection closes
    (the server releases what a closed connection held, so a lease outlives
    neither a reconnect nor the client). Releasing twice is harmless.
    """

    def __init__(self, client: Client, reply: p.LeaseReply) -> None:
        self.decision: p.DecisionReply = reply
        self.lease = reply.lease
        """The server's id for the held slots (0 when nothing is held)."""
        self._client = client
        self._connection = client.connections

    def __bool__(self) -> bool:
        return self.decision.allowed

    @property
    def held(self) -> bool:
        """Whether this lease may still hold slots (not released, its connection not closed)."""
        return bool(self.lease) and self._connection == self._client.connections

    def release(self) -> None:
        """Give the slots back (nothing to do if the connection they were held on has closed)."""
        if not self.held:
            self.lease = 0
            return
        lease, self.lease = self.lease, 0
        with contextlib.suppress(errors.ServerUnavailable, errors.InvalidRequestError):
            self._client.release(lease)  # if this fails, the connection is gone, and so are its leases

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


class AsyncRemoteLease:
    """What `AsyncClient.acquire` returns: as `RemoteLease`, with `await lease.release()` and `async with`."""

    def __init__(self, client: AsyncClient, reply: p.LeaseReply) -> None:
        self.decision: p.DecisionReply = reply
        self.lease = reply.lease
        self._client = client
        self._connection = client.connections

    def __bool__(self) -> bool:
        return self.decision.allowed

    @property
    def held(self) -> bool:
        """Whether this lease may still hold slots (not released, its connection not closed)."""
        return bool(self.lease) and self._connection == self._client.connections

    async def release(self) -> None:
        """Give the slots back (nothing to do if the connection they were held on has closed)."""
        if not self.held:
            self.lease = 0
            return
        lease, self.lease = self.lease, 0
        with contextlib.suppress(errors.ServerUnavailable, errors.InvalidRequestError):
            await self._client.release(lease)  # if this fails, the connection is gone, and its leases

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.release()
