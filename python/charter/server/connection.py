"""One client connection: frames in, replies out, limits and backpressure (an asyncio Protocol).

Frames are decoded and answered straight from `data_received`; the replies
to everything one read delivered leave in one `write`. A request whose
handler must wait runs as a task and counts as in flight. Reading pauses
while the peer is not draining our writes (the transport's write buffer is
over its high-water mark), while `max_inflight` requests are pending, and
during shutdown, so a slow or greedy peer holds at most one read of input,
its in-flight requests and a write buffer's worth of replies.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

from charter.server import protocol as p
from charter.server.service import Session, error_reply

if TYPE_CHECKING:
    from charter.server.server import ProcessServer

log = logging.getLogger("charter.server")

_PEERCRED = struct.Struct("3i")
_unpack_header = p.HEADER.unpack_from
_decode = p.request_decoder.decode
_append_frame = p.append_frame


def peer_uid(transport: asyncio.BaseTransport) -> int | None:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED), if known."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    except OSError:
        return None
    return int(_PEERCRED.unpack(raw)[1])


class Connection(asyncio.Protocol):
    """Serves one connection of the decision socket (`admin=False`) or the admin socket."""

    def __init__(self, server: ProcessServer, *, admin: bool) -> None:
        self.server = server
        self.service = server.service
        self.admin = admin
        self.kind = "admin" if admin else "decision"
        self.max_frame = server.config.max_frame
        self.max_inflight = server.config.max_inflight
        self.ops = server.service.ops
        self._requests = server.service.stats.requests
        self.session = Session(trusted=admin)
        self.transport: asyncio.Transport | None = None
        self._chunks: list[bytes] = []
        self._have = 0
        self._need = 4
        self._tasks: set[asyncio.Task[p.Reply]] = set()
        self._write_paused = False
        self._reading = True
        self._draining = False
        self._active = True
        self._idle: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ lifecycle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        stats, config = self.service.stats, self.server.config
        uid = peer_uid(transport)
        if self.admin and uid not in self.server.admin_uids:
            stats.refused += 1
            log.warning("admin connection refused: peer uid %s is not in the allow-list", uid)
            self._send_error(
                p.ErrorReply(0, p.ErrorCode.FORBIDDEN, f"uid {uid} may not use the admin socket")
            )
            self.transport.close()
            return
        self.session.trusted = self.admin or uid in self.service.trusted_uids
        self.session.local_handles = not self.admin and self.service.workers > 1
        stats.accepted += 1
        stats.connections[self.kind] += 1
        self.server.connections.add(self)
        self.transport.set_write_buffer_limits(high=config.write_high_water)
        if config.idle_timeout > 0:
            self._idle = self.server.loop.call_later(config.idle_timeout, self._idle_check)
        if self.server.draining:
            self.drain()

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.server.connections:
            self.server.connections.discard(self)
            self.service.stats.connections[self.kind] -= 1
        if self._idle is not None:
            self._idle.cancel()
        for task in self._tasks:
            task.cancel()
        self.session.release_all()
        self.transport = None
        self.server.connection_closed()

    def eof_received(self) -> bool:
        # The peer will send no more; answer what is in flight, then close.
        self._draining = True
        return bool(self._tasks)

    def _idle_check(self) -> None:
        if self.transport is None:
            return
        if self._active or self._tasks:
            self._active = False
            self._idle = self.server.loop.call_later(self.server.config.idle_timeout, self._idle_check)
            return
        log.info("closing an idle %s connection", self.kind)
        self.transport.close()

    def drain(self) -> None:
        """Shutdown: read nothing more, answer what was received, then close."""
        self._draining = True
        if self.transport is None:
            return
        self._set_reading(False)
        if self._chunks:
            data = b"".join(self._chunks)
            self._chunks, self._have = [], 0
            self._consume(data)
        self._close_if_done()

    def _close_if_done(self) -> None:
        if self._draining and not self._tasks and self.transport is not None:
            self.transport.close()

    # ------------------------------------------------------------ flow control

    def pause_writing(self) -> None:
        self._write_paused = True
        self._set_reading(False)

    def resume_writing(self) -> None:
        self._write_paused = False
        self._unblock()

    def _blocked(self) -> bool:
        return self._write_paused or len(self._tasks) >= self.max_inflight

    def _set_reading(self, on: bool) -> None:
        if on == self._reading or self.transport is None:
            return
        self._reading = on
        if on:
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

    def _unblock(self) -> None:
        if self._blocked() or self.transport is None:
            return
        if self._chunks and self._have >= self._need:
            data = b"".join(self._chunks)
            self._chunks, self._have = [], 0
            self._consume(data)
        if not self._blocked() and not self._draining:
            self._set_reading(True)

    # ------------------------------------------------------------ frames

    def data_received(self, data: bytes) -> None:
        self._active = True
        if self._chunks or len(data) < self._need:
            self._chunks.append(data)
            self._have += len(data)
            if self._have < self._need:
                return
            data = b"".join(self._chunks)
            self._chunks, self._have = [], 0
        self._consume(data)

    def _consume(self, data: bytes) -> None:
        """Answer every complete frame in `data` (until blocked); keep the rest."""
        out = bytearray()
        view, pos, end, need = memoryview(data), 0, len(data), 4
        high = self.server.config.write_high_water
        while end - pos >= 4:
            (n,) = _unpack_header(data, pos)
            if n > self.max_frame:
                self._too_large(n, out)
                return
            if end - pos - 4 < n:
                need = 4 + n
                break
            self._dispatch(view[pos + 4 : pos + 4 + n], out)
            pos += 4 + n
            if len(out) > high and self.transport is not None:
                self.transport.write(out)  # may call pause_writing
                out = bytearray()
            if (self._write_paused or len(self._tasks) >= self.max_inflight) and not self._draining:
                self._set_reading(False)
                break
        self._need = need
        if pos < end:
            self._chunks, self._have = [data[pos:]], end - pos
        if out and self.transport is not None:
            self.transport.write(out)

    def _dispatch(self, body: memoryview, out: bytearray) -> None:
        svc = self.service
        try:
            req = _decode(body)
        except Exception as err:  # msgspec.DecodeError, or UnicodeDecodeError for invalid UTF-8
            reply: Any = p.classify(body, err)
            svc.stats.errors[reply.code] += 1
            p.append_frame(out, reply)
            return
        op = self.ops.get(type(req))
        if op is None:
            reply = p.ErrorReply(
                req.id, p.ErrorCode.UNKNOWN_OPERATION, "this server does not serve that operation"
            )
        elif op.admin_only and not self.admin:
            reply = p.ErrorReply(
                req.id, p.ErrorCode.FORBIDDEN, f"`{op.name}` is served on the admin socket only"
            )
        else:
            self._requests[op.name] += 1
            try:
                reply = op.run(svc, self.session, req)
            except Exception as err:
                reply = self._failed(req.id, err)
        rtype = type(reply)
        if rtype is p.DecisionReply or rtype is p.BatchReply or rtype is p.Result or rtype is p.LeaseReply:
            _append_frame(out, reply)
        elif rtype is p.ErrorReply:
            svc.stats.errors[reply.code] += 1
            _append_frame(out, reply)
        else:
            self._spawn(req.id, reply)

    def _failed(self, rid: int, err: BaseException) -> p.ErrorReply:
        reply = error_reply(rid, err) if isinstance(err, Exception) else None
        if reply is None or reply.code == p.ErrorCode.INTERNAL:
            log.error("request %s failed", rid, exc_info=err)
            reply = reply or p.ErrorReply(rid, p.ErrorCode.INTERNAL, "internal error")
        return reply

    def _spawn(self, rid: int, work: Coroutine[Any, Any, p.Reply]) -> None:
        task = self.server.loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._finished(rid, t))

    def _finished(self, rid: int, task: asyncio.Task[p.Reply]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or self.transport is None:
            return
        err = task.exception()
        reply = task.result() if err is None else self._failed(rid, err)
        if type(reply) is p.ErrorReply:
            self.service.stats.errors[reply.code] += 1
        self.transport.write(p.frame(reply))
        if self._draining:
            self._close_if_done()
        else:
            self._unblock()

    def _too_large(self, n: int, out: bytearray) -> None:
        message = f"frame of {n} bytes exceeds the limit of {self.max_frame}"
        self.service.stats.errors[p.ErrorCode.FRAME_TOO_LARGE] += 1
        p.append_frame(out, p.ErrorReply(0, p.ErrorCode.FRAME_TOO_LARGE, message))
        if self.transport is not None:
            self.transport.write(out)
            self.transport.close()

    def _send_error(self, reply: p.ErrorReply) -> None:
        self.service.stats.errors[reply.code] += 1
        if self.transport is not None:
            self.transport.write(p.frame(reply))
