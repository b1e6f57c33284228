"""`--workers N`: forked workers sharing one listening decision socket, a supervisor replicating admin changes.

Load sharing: the supervisor binds the decision socket, then forks N
workers that inherit the listening socket; each runs its own uvloop loop
and accepts from it, so the kernel hands each new connection to whichever
worker calls `accept` first (a busy worker is slower to ask, which steers
connections to idle ones). Clients see one path. docs/server.md has the
measurement behind this choice.

State: each worker builds its own engine after the fork. The supervisor
serves the admin socket with an engine of its own and sends every change
it makes (provision, deprovision, suspend, resume, freeze, reload, trusted
keys) to every worker over a socketpair, in order, answering the admin
client only once all workers have applied it (`service.apply_replicated`).
Agents are named by id between processes: each process also registers the
agents its clients authenticate with tokens, so handles differ between
processes. A worker that cannot apply a change that would leave it
allowing more than the supervisor exits, and the supervisor then stops the
whole server with exit code 1 (fail closed); so does any worker's death.
Quotas are counted per process (docs/server.md).

The control channel carries `["call", seq, method, args]` and
`["reply", seq, ok, value]` frames in both directions.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import uvloop

from charter import REASONS
from charter import policy as policy_doc
from charter.errors import InternalError
from charter.server import protocol as p
from charter.server.metrics import Stats, merge
from charter.server.server import (
    Listener,
    ProcessServer,
    ServerConfig,
    close_engine,
    main_logging,
    make_engine,
    new_service,
    ready_line,
)
from charter.server.service import Service, apply_replicated

log = logging.getLogger("charter.server")

EXIT_DIVERGED = 70
"""A worker's exit code when it could not apply an admin change (its engine would allow too much)."""

Handler = Callable[[Any], Any]


class Channel(asyncio.Protocol):
    """One end of a supervisor-worker socketpair: calls out, calls in, matched by sequence number."""

    def __init__(self, handlers: dict[str, Handler], on_lost: Callable[[], None]) -> None:
        self.handlers = handlers
        self.on_lost = on_lost
        self.splitter = p.FrameSplitter(1 << 30)
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.closed = asyncio.get_running_loop().create_future()
        self._seq = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()  # strong references: the loop keeps only weak ones

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(InternalError("a server process exited"))
        self.pending.clear()
        if not self.closed.done():
            self.closed.set_result(None)
        self.on_lost()

    def call(self, method: str, args: Any = None) -> asyncio.Future[Any]:
        """Send a call now (so calls keep their order); the future is its reply."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.transport is None:
            fut.set_exception(InternalError("a server process exited"))
            return fut
        seq = next(self._seq)
        self.pending[seq] = fut
        self.transport.write(p.frame(["call", seq, method, args]))
        return fut

    def data_received(self, data: bytes) -> None:
        for body in self.splitter.feed(data):
            kind, seq, *rest = msgspec.msgpack.decode(body)
            if kind == "reply":
                fut = self.pending.pop(seq, None)
                if fut is not None and not fut.done():
                    ok, value = rest
                    if ok:
                        fut.set_result(value)
                    else:
                        fut.set_exception(InternalError(value))
            else:
                task = asyncio.get_running_loop().create_task(self._answer(seq, rest[0], rest[1]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _answer(self, seq: int, method: str, args: Any) -> None:
        try:
            value = self.handlers[method](args)
            if isinstance(value, Awaitable):
                value = await value
            reply = ["reply", seq, True, value]
        except Exception as err:
            log.exception("control call `%s` failed", method)
            reply = ["reply", seq, False, f"{type(err).__name__}: {err}"]
        if self.transport is not None:
            self.transport.write(p.frame(reply))


async def _open(sock: socket.socket, handlers: dict[str, Handler], on_lost: Callable[[], None]) -> Channel:
    loop = asyncio.get_running_loop()
    _, channel = await loop.create_unix_connection(lambda: Channel(handlers, on_lost), sock=sock)
    return channel


# ------------------------------------------------------------ worker


class _WorkerLink:
    """A worker's view of the cluster: server-wide stats come from the supervisor."""

    def __init__(self) -> None:
        self.channel: Channel | None = None

    def replicate(self, op: str, args: dict[str, Any]) -> Awaitable[list[dict[str, Any]]]:
        raise InternalError("workers do not serve admin operations")

    async def stats(self) -> dict[str, Any]:
        assert self.channel is not None
        result: dict[str, Any] = await self.channel.call("stats_all")
        return result


async def _worker(
    index: int, config: ServerConfig, doc: policy_doc.Policy, listener: Listener, chan: socket.socket
) -> int:
    loop = asyncio.get_running_loop()
    engine = make_engine(config, doc, index)
    link = _WorkerLink()
    service = new_service(config, engine, Stats(REASONS, worker=index), link)
    server = ProcessServer(config, service, loop)

    def apply(args: list[Any]) -> dict[str, Any]:
        try:
            return apply_replicated(engine, args[0], args[1])
        except Exception as err:
            log.critical("worker %d could not apply `%s`, exiting: %s", index, args[0], err)
            loop.call_soon(os._exit, EXIT_DIVERGED)
            raise

    def lost() -> None:
        if not server.draining:
            log.warning("worker %d lost its supervisor; shutting down", index)
            server.shutdown()

    handlers: dict[str, Handler] = {"apply": apply, "stats": lambda _: service.local_stats()}
    link.channel = await _open(chan, handlers, lost)
    await server.listen(listener.sock, admin=False)
    server.start(reload_signal=False)
    await link.channel.call("ready", {"pid": os.getpid(), "policy_version": engine.policy_version})
    await server.wait_stopped()
    close_engine(engine)
    return 0


def _worker_process(
    index: int, config: ServerConfig, doc: policy_doc.Policy, listener: Listener, chan: socket.socket
) -> int:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the supervisor reloads, then replicates
    main_logging(f"charter serve worker {index}")
    try:
        return uvloop.run(_worker(index, config, doc, listener, chan))
    except Exception:
        log.exception("worker %d failed", index)
        return 1


# ------------------------------------------------------------ supervisor


class Supervisor:
    """The supervisor's side of the cluster: replication and server-wide stats."""

    def __init__(self, service: Service | None = None) -> None:
        self.service = service
        self.channels: list[Channel] = []
        self.failed = False
        self.server: ProcessServer | None = None
        self._reloads: set[asyncio.Future[list[dict[str, Any]]]] = set()

    def replicate(self, op: str, args: dict[str, Any]) -> Awaitable[list[dict[str, Any]]]:
        """Send the change to every worker now; the awaitable completes when all applied it."""
        calls = [ch.call("apply", [op, args]) for ch in self.channels]

        async def applied() -> list[dict[str, Any]]:
            results = await asyncio.gather(*calls, return_exceptions=True)
            problems = [r for r in results if isinstance(r, BaseException)]
            if problems:
                self.fail(f"a worker could not apply `{op}`: {problems[0]}")
                raise InternalError(f"a worker could not apply `{op}`; the server is stopping")
            return [r for r in results if isinstance(r, dict)]

        return applied()

    async def stats(self) -> dict[str, Any]:
        assert self.service is not None
        parts = await asyncio.gather(*(ch.call("stats") for ch in self.channels))
        return merge(self.service.local_stats(), list(parts))

    def fail(self, why: str) -> None:
        """Fail closed: a worker died or diverged, so the whole server stops (exit code 1)."""
        if self.server is not None and not self.server.draining:
            log.critical("%s; stopping the server", why)
            self.failed = True
            self.server.shutdown()

    def reload(self) -> None:
        """SIGHUP: reload here, then on every worker."""
        assert self.service is not None
        assert self.server is not None
        try:
            old, new, doc = self.service.reload_from_file()
        except Exception as err:
            log.error(
                "reload of %s failed, keeping policy %s: %s",
                self.service.policy_path,
                self.service.engine.policy_version,
                err,
            )
            return
        log.info("reloaded %s: policy %s -> %s", self.service.policy_path, old, new)
        task = asyncio.ensure_future(self.replicate("reload", {"policy": msgspec.to_builtins(doc)}))
        self._reloads.add(task)
        task.add_done_callback(self._reloaded)

    def _reloaded(self, task: asyncio.Future[list[dict[str, Any]]]) -> None:
        self._reloads.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a worker did not apply the reload: %s", task.exception())


async def _supervise(
    config: ServerConfig,
    doc: policy_doc.Policy,
    listeners: dict[str, Listener],
    workers: list[tuple[int, socket.socket]],
) -> int:
    loop = asyncio.get_running_loop()
    sup = Supervisor()
    ready: list[asyncio.Future[None]] = [loop.create_future() for _ in workers]

    def lost(i: int) -> Callable[[], None]:
        def on_lost() -> None:
            if not ready[i].done():
                ready[i].set_exception(InternalError(f"worker {i} exited before it was ready"))
            sup.fail(f"worker {i} (pid {workers[i][0]}) exited")

        return on_lost

    def on_ready(i: int) -> Handler:
        def handler(args: Any) -> None:
            log.info("worker %d ready (pid %s)", i, args["pid"])
            if not ready[i].done():
                ready[i].set_result(None)

        return handler

    for i, (_, sock) in enumerate(workers):
        handlers: dict[str, Handler] = {"ready": on_ready(i), "stats_all": lambda _: sup.stats()}
        sup.channels.append(await _open(sock, handlers, lost(i)))
    engine = make_engine(config, doc, "supervisor")
    service = new_service(config, engine, Stats(REASONS), sup)
    sup.service = service
    server = ProcessServer(config, service, loop)
    sup.server = server
    server.on_reload = sup.reload
    server.on_shutdown = lambda: _signal_workers(workers, signal.SIGTERM)
    try:
        await asyncio.gather(*ready)
    except InternalError as err:
        log.critical("%s", err)
        _signal_workers(workers, signal.SIGTERM)
        await asyncio.gather(*(ch.closed for ch in sup.channels))
        _reap(workers)
        return 1
    if "admin" in listeners:
        await server.listen(listeners["admin"].sock, admin=True)
    server.start()
    ready_line(config, engine.policy_version)
    await server.wait_stopped()
    await asyncio.gather(*(ch.closed for ch in sup.channels))
    codes = _reap(workers)
    close_engine(engine)
    clean = not sup.failed and all(code == 0 for code in codes)
    log.info("stopped" if clean else f"stopped after a failure (worker exit codes {codes})")
    return 0 if clean else 1


def _signal_workers(workers: list[tuple[int, socket.socket]], sig: int) -> None:
    for pid, _ in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _reap(workers: list[tuple[int, socket.socket]]) -> list[int]:
    codes = []
    for pid, _ in workers:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            codes.append(-1)
            continue
        codes.append(os.waitstatus_to_exitcode(status))
    return codes


def run_cluster(config: ServerConfig, doc: policy_doc.Policy, listeners: dict[str, Listener]) -> int:
    """Fork the workers, then supervise them; the supervisor's exit code."""
    workers: list[tuple[int, socket.socket]] = []
    for index in range(config.workers):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # the worker: keep only its listener and its end of the channel
            ours.close()
            for _, sock in workers:
                sock.close()
            if "admin" in listeners:
                listeners["admin"].sock.close()
            code = 1
            try:
                code = _worker_process(index, config, doc, listeners["decision"], theirs)
            finally:
                os._exit(code)
        theirs.close()
        workers.append((pid, ours))
    listeners["decision"].sock.close()  # the workers accept; the supervisor never does
    return uvloop.run(_supervise(config, doc, listeners, workers))
