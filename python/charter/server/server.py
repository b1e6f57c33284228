"""`charter serve`: the decision server's process, its sockets, signals and shutdown (docs/server.md).

One process serves the decision socket and the admin socket on a uvloop
event loop. With `workers > 1` the listening decision socket is bound once
and inherited by forked workers, each with its own event loop and engine,
while the supervisor keeps the admin socket and replicates admin changes to
them (workers.py).

Signals: SIGTERM (or SIGINT) stops accepting, answers every request already
received, closes the engine (which flushes its audit log when it has one)
and exits 0; SIGHUP reloads the policy file, keeping the old policy when the
new one does not load.

Every process with a revocation log re-reads it every `revocations_poll`
seconds (`Service.follow_revocations`), so a revocation another process
appends (`charter token revoke` from a shell) takes effect here within that
bound. Policy hooks come from `--hooks` specs (hook_specs.py), loaded in
each process after any fork.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import logging
import os
import signal
import socket
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import uvloop

from charter import REASONS
from charter import policy as policy_doc
from charter.audit.settings import AuditSettings
from charter.engine import Engine
from charter.errors import InvalidRequestError
from charter.server import protocol as p
from charter.server.connection import Connection
from charter.server.hook_specs import resolve as resolve_hooks
from charter.server.metrics import Stats
from charter.server.service import Cluster, Service

log = logging.getLogger("charter.server")

EngineFactory = Callable[[policy_doc.Policy], Engine]


def default_engine(doc: policy_doc.Policy) -> Engine:
    """The engine for a validated policy document."""
    return Engine.from_dict(msgspec.to_builtins(doc))


@dataclass
class ServerConfig:
    """Everything `charter serve` is told (see `charter serve --help`)."""

    policy: str
    socket: str
    admin_socket: str | None = None
    workers: int = 1
    socket_mode: int = 0o660
    admin_socket_mode: int = 0o600
    socket_group: str | None = None
    admin_uids: tuple[int, ...] = ()
    """Peer uids allowed on the admin socket; empty means the server's own effective uid."""
    trusted_uids: tuple[int, ...] = ()
    """Peer uids on the decision socket that may name any agent without authenticating it."""
    trust_jwks: tuple[str, ...] = ()
    """JWKS files of the credential issuers whose tokens `authenticate` accepts."""
    audience: str | None = None
    """This verifier's name: tokens (and proofs of possession) must be for it."""
    revocations: str | None = None
    """The identity revocation log to honour."""
    revocations_poll: float = 1.0
    """Seconds between two looks at the revocation log for other processes' records (0: never)."""
    hooks: tuple[str, ...] = ()
    """`--hooks` specs: where the policy's hooks come from (hook_specs.py)."""
    allow_missing_hooks: bool = False
    """Serve a policy naming hooks no spec provides (a decision reaching one is `hook_error`)."""
    max_leases: int = 1024
    """In-flight leases (`acquire`) one connection may hold at once."""
    audit_dir: str | None = None
    """Where to record decisions and events (default: the policy's `[audit] directory`)."""
    audit_mode: str | None = None
    audit_fsync: str | None = None
    max_frame: int = p.DEFAULT_MAX_FRAME
    max_inflight: int = 128
    idle_timeout: float = 300.0
    drain_timeout: float = 30.0
    write_high_water: int = 256 * 1024
    backlog: int = 1024
    quota_outage: str = "deny"
    """With a shared state: what a used-up quota lease does while Redis is unreachable
    (`deny`: `quota_unavailable`; `local`: count quotas on this server alone)."""
    state: str = "local"
    """Where revocations, suspensions, freeze and the policy live: `local`, or a Redis URL shared by a
    fleet of servers (docs/multi-host.md)."""
    state_wait: float = 5.0
    """Seconds to wait at start for the first read of the shared state (denying everything after that
    until it succeeds)."""
    engine_factory: EngineFactory = field(default=default_engine, repr=False)


# ------------------------------------------------------------ sockets


def _remove_stale(path: str) -> None:
    """Remove a socket file nobody listens on; refuse to touch anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        return
    except FileNotFoundError:
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"another server is listening on {path}")


@dataclass
class Listener:
    """A bound, listening Unix socket and the identity of the file it created."""

    path: str
    sock: socket.socket
    inode: int

    def unlink(self) -> None:
        """Remove the socket file, unless another server has since replaced it."""
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)


def bind_unix(path: str, mode: int, *, group: str | None = None, backlog: int = 1024) -> Listener:
    """A listening Unix socket whose file never exists with more than `mode` permissions."""
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(path)
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old)
    listener = Listener(path, sock, os.stat(path).st_ino)
    try:
        if group is not None:
            try:
                gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
            except KeyError:
                raise OSError(errno.EINVAL, f"no group `{group}`") from None
            os.chown(path, -1, gid)
        os.chmod(path, mode)
        sock.listen(backlog)
    except BaseException:
        listener.unlink()
        sock.close()
        raise
    sock.setblocking(False)
    return listener


# ------------------------------------------------------------ one process


class ProcessServer:
    """The listeners, connections and signal handling of one server process."""

    def __init__(self, config: ServerConfig, service: Service, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.service = service
        self.loop = loop
        self.admin_uids = frozenset(config.admin_uids or (os.geteuid(),))
        self.connections: set[Connection] = set()
        self.draining = False
        self._stop = asyncio.Event()
        self._servers: list[asyncio.AbstractServer] = []
        self._idle = asyncio.Event()
        self._ticker: asyncio.TimerHandle | None = None
        self._follower: asyncio.TimerHandle | None = None
        self.on_reload: Callable[[], None] | None = None
        self.on_shutdown: Callable[[], None] | None = None

    async def listen(self, sock: socket.socket, *, admin: bool) -> None:
        server = await self.loop.create_unix_server(lambda: Connection(self, admin=admin), sock=sock)
        self._servers.append(server)

    def start(self, *, reload_signal: bool = True) -> None:
        """Install signal handlers and the stats ticker."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.shutdown)
        if reload_signal:
            self.loop.add_signal_handler(signal.SIGHUP, self.reload)
        self._tick()
        if self.config.revocations and self.config.revocations_poll > 0:
            self._follow()

    def _tick(self) -> None:
        self.service.stats.tick()
        self._ticker = self.loop.call_later(1.0, self._tick)

    def _follow(self) -> None:
        self.service.follow_revocations()
        self._follower = self.loop.call_later(self.config.revocations_poll, self._follow)

    def reload(self) -> None:
        """SIGHUP: reload the policy file; a bad file is logged and the old policy stays."""
        if self.on_reload is not None:
            self.on_reload()
            return
        try:
            old, new, _ = self.service.reload_from_file()
        except Exception as err:
            log.error(
                "reload of %s failed, keeping policy %s: %s",
                self.config.policy,
                self.service.engine.policy_version,
                err,
            )
            return
        log.info("reloaded %s: policy %s -> %s", self.config.policy, old, new)

    def shutdown(self) -> None:
        """SIGTERM: stop accepting and drain every connection (`wait_stopped` returns when done)."""
        if self.draining:
            return
        self.draining = True
        self._stop.set()
        if self.on_shutdown is not None:
            self.on_shutdown()
        log.info("draining %d connections", len(self.connections))
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.drain()
        self.connection_closed()

    def connection_closed(self) -> None:
        if self.draining and not self.connections:
            self._idle.set()

    async def wait_stopped(self) -> None:
        """Return once shutdown has closed every connection (aborting the rest after `drain_timeout`)."""
        await self._stop.wait()
        try:
            await asyncio.wait_for(self._idle.wait(), self.config.drain_timeout)
        except TimeoutError:
            log.warning("drain timeout: aborting %d connections", len(self.connections))
            for conn in list(self.connections):
                if conn.transport is not None:
                    conn.transport.abort()
        for timer in (self._ticker, self._follower):
            if timer is not None:
                timer.cancel()


def make_engine(config: ServerConfig, doc: policy_doc.Policy, worker: int | str | None = None) -> Engine:
    """This process's engine, built after any fork, with the per-process features configured.

    Features that take files or threads are wired here: hook factories are
    called (each process gets its own), and the audit writer is started in
    this process (worker K of several audits to DIR/worker-K and their
    supervisor to DIR/supervisor: one writer per directory).
    """
    audit_dir = audit_directory(config, doc, worker)
    doc = without_audit_directory(doc)  # auditing starts below, in the right directory
    hooks = resolve_hooks(config.hooks).load() if config.hooks else {}
    if config.engine_factory is default_engine and (hooks or config.allow_missing_hooks):
        engine = Engine.from_dict(
            msgspec.to_builtins(doc), hooks=hooks, allow_missing_hooks=config.allow_missing_hooks
        )
    else:  # a custom factory had to accept the policy's hooks already; ours are registered now
        engine = config.engine_factory(doc)
        for name, hook in hooks.items():
            engine.register_hook(name, hook)
    if config.audience is not None or config.revocations is not None:
        settings: dict[str, object] = {}
        if config.audience is not None:
            settings["audience"] = config.audience
        if config.revocations is not None:
            settings["revocations"] = config.revocations
        engine.configure_identity(**settings)  # type: ignore[arg-type]
    for jwks in read_jwks(config.trust_jwks):
        engine.trust(jwks)
    if audit_dir is not None:
        engine._start_audit(audit_dir, audit_settings(config, doc))
    if config.state != "local":
        engine.use_shared_state(
            config.state,
            wait=config.state_wait,
            dispatch=_loop_dispatch(),
            quota_outage=config.quota_outage,
        )
    return engine


def _loop_dispatch() -> Callable[[Callable[[], None]], object] | None:
    """Apply shared-state changes on this process's event loop, between requests (if it has one)."""
    try:
        return asyncio.get_running_loop().call_soon_threadsafe
    except RuntimeError:
        return None


def check_state(config: ServerConfig) -> None:
    """Refuse a `--state` that is neither `local` nor a Redis URL, before serving."""
    if config.state != "local" and config.state.split("://", 1)[0] not in ("redis", "rediss", "unix"):
        raise InvalidRequestError(f"--state: `{config.state}` is neither `local` nor a redis:// URL")


def audit_directory(config: ServerConfig, doc: policy_doc.Policy, worker: int | str | None) -> Path | None:
    """`--audit-dir`, else the policy's `[audit] directory` (relative to the policy file); per worker."""
    if config.audit_dir is not None:
        base = Path(config.audit_dir)
    elif doc.audit is not None and doc.audit.directory is not None:
        base = Path(doc.audit.directory)
        if not base.is_absolute():
            base = Path(config.policy).parent / base
    else:
        return None
    if worker is None:
        return base
    return base / (f"worker-{worker}" if isinstance(worker, int) else worker)


def without_audit_directory(doc: policy_doc.Policy) -> policy_doc.Policy:
    if doc.audit is None or doc.audit.directory is None:
        return doc
    return msgspec.structs.replace(doc, audit=msgspec.structs.replace(doc.audit, directory=None))


def audit_settings(config: ServerConfig, doc: policy_doc.Policy) -> AuditSettings:
    """The policy's `[audit]` settings with the command line's overrides."""
    table = doc.audit
    durations = {}
    if table is not None:
        for name in ("flush_interval", "fsync_interval", "max_file_age", "block_timeout"):
            value = getattr(table, name)
            if value is not None:
                durations[name] = policy_doc.parse_duration(value, f"audit.{name}")
    return AuditSettings.merged(
        None,
        mode=config.audit_mode or (table.mode if table else None),
        fsync=config.audit_fsync or (table.fsync if table else None),
        max_file_bytes=table.max_file_bytes if table else None,
        buffer_records=table.buffer_records if table else None,
        **durations,
    )


def check_hooks(config: ServerConfig, doc: policy_doc.Policy) -> None:
    """Refuse bad `--hooks` specs, and a policy naming a hook they do not give, before serving.

    Factories are not called here (they build per-process state, and this
    runs before the workers fork): a policy naming a hook that only a
    factory gives is checked as each process builds its engine.
    """
    hookset = resolve_hooks(config.hooks)
    if config.engine_factory is not default_engine or config.allow_missing_hooks or hookset.factories:
        return
    bare = msgspec.to_builtins(without_audit_directory(doc))  # a throwaway engine: no audit writer
    Engine.from_dict(bare, hooks=hookset.fixed)  # PolicyError names a missing hook


def read_jwks(paths: tuple[str, ...]) -> list[dict[str, object]]:
    """The JWKS documents in `paths`; `InvalidRequestError` names a file that cannot be used."""
    docs = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                doc = msgspec.json.decode(f.read())
        except (OSError, msgspec.DecodeError) as err:
            raise InvalidRequestError(f"cannot read the JWKS file {path}: {err}") from err
        if not isinstance(doc, dict):
            raise InvalidRequestError(f"{path} is not a JWKS document")
        docs.append(doc)
    return docs


def new_service(
    config: ServerConfig, engine: Engine, stats: Stats, cluster: Cluster | None = None
) -> Service:
    return Service(
        engine,
        stats,
        policy_path=config.policy,
        jwks_paths=config.trust_jwks,
        trusted_uids=frozenset(config.trusted_uids),
        cluster=cluster,
        workers=config.workers,
        max_leases=config.max_leases,
    )


def close_engine(engine: Engine) -> None:
    """Flush and close what the engine holds open (its audit log, once auditing exists)."""
    close: Callable[[], object] | None = getattr(engine, "close", None)
    if close is not None:
        close()


def ready_line(config: ServerConfig, version: str) -> None:
    """The one line on stdout that says the server accepts connections (supervisors and tests wait for it)."""
    admin = f", admin {config.admin_socket}" if config.admin_socket else ""
    print(
        f"charter serve: ready, pid {os.getpid()}, policy {version}, socket {config.socket}{admin}, "
        f"workers {config.workers}",
        flush=True,
    )


async def _serve_single(config: ServerConfig, doc: policy_doc.Policy, listeners: dict[str, Listener]) -> int:
    loop = asyncio.get_running_loop()
    engine = make_engine(config, doc)
    service = new_service(config, engine, Stats(REASONS))
    server = ProcessServer(config, service, loop)
    await server.listen(listeners["decision"].sock, admin=False)
    if "admin" in listeners:
        await server.listen(listeners["admin"].sock, admin=True)
    server.start()
    ready_line(config, engine.policy_version)
    await server.wait_stopped()
    close_engine(engine)
    log.info("stopped")
    return 0


def bind_all(config: ServerConfig) -> dict[str, Listener]:
    """The decision socket and, if configured, the admin socket."""
    decision = bind_unix(config.socket, config.socket_mode, group=config.socket_group, backlog=config.backlog)
    listeners = {"decision": decision}
    if config.admin_socket:
        try:
            listeners["admin"] = bind_unix(
                config.admin_socket, config.admin_socket_mode, backlog=config.backlog
            )
        except BaseException:
            decision.unlink()
            decision.sock.close()
            raise
    return listeners


def run(config: ServerConfig) -> int:
    """Run the server until SIGTERM; the process exit code (0 after a clean drain)."""
    doc = policy_doc.from_file(config.policy)  # bad files fail here, before any socket exists
    read_jwks(config.trust_jwks)
    check_hooks(config, doc)
    check_state(config)
    listeners = bind_all(config)
    try:
        if config.workers > 1:
            from charter.server.workers import run_cluster

            return run_cluster(config, doc, listeners)
        return uvloop.run(_serve_single(config, doc, listeners))
    finally:
        for listener in listeners.values():
            listener.unlink()
            listener.sock.close()


def main_logging(prefix: str = "charter serve") -> None:
    """Log lines to stderr as `charter serve[pid]: LEVEL message`."""
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format=f"{prefix}[%(process)d]: %(levelname)s %(message)s",
        force=True,
    )


__all__ = ["Cluster", "Listener", "ServerConfig", "bind_unix", "run"]
