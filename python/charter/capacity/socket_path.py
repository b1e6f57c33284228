"""The socket path: the real decision server on a temporary socket, driven by K pipelined clients.

The server runs in its own process (`charter.capacity.sidecar`), so its CPU
time is read from `/proc/<pid>/stat` (with its worker processes) and kept
apart from the load generator's, which runs here on one event loop: what a
sidecar costs is the server's CPU; the clients' is reported beside it.
"""

from __future__ import annotations

import asyncio
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import uvloop

from charter.capacity.generator import Fleet, RequestSet
from charter.capacity.measure import PathResult, cdf_points, percentiles
from charter.errors import CharterError
from charter.server import protocol as p
from charter.server.client import AdminClient, Client

__all__ = ["Sidecar", "drive", "provision_remote", "request_frames", "verify_same_decisions"]

TIMEOUT = 60.0
"""Bound on every wait for the server (start, requests, stop): generous for a loaded machine."""
WARMUP_SHARE = 0.1
"""Share of each run's replies (beyond the target) not measured: connections and caches settle."""

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one process, from /proc; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except (OSError, IndexError, ValueError):
        return 0.0


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


class Sidecar:
    """A server process on sockets in a fresh short directory; a context manager that stops it."""

    def __init__(self, policy: Path, *, audit_dir: Path | None = None, workers: int = 1) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="chbench", dir="/tmp"))  # socket paths must be short
        self.socket = str(self.directory / "d.sock")
        self.admin_socket = str(self.directory / "a.sock")
        self._log = open(self.directory / "server.log", "w")  # noqa: SIM115 (closed in stop)
        cmd = [
            sys.executable, "-m", "charter.capacity.sidecar", "--policy", str(policy),
            "--socket", self.socket, "--admin-socket", self.admin_socket, "--workers", str(workers),
        ]  # fmt: skip
        if audit_dir is not None:
            cmd += ["--audit-dir", str(audit_dir)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, text=True, env=env)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], TIMEOUT)
        line = self.proc.stdout.readline() if ready else ""
        if "ready" not in line:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
            self._log.flush()
            log = (self.directory / "server.log").read_text()[-2000:]
            raise CharterError(f"the bench server did not start: {line.strip()!r}; its log: {log}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """CPU seconds the server and its worker processes have used so far."""
        total, todo = 0.0, [self.proc.pid]
        while todo:
            pid = todo.pop()
            total += _process_cpu(pid)
            todo += _children(pid)
        return total

    def stop(self) -> int | None:
        """SIGTERM, wait for the drain; the exit code. The directory is removed."""
        code: int | None = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(TIMEOUT)
        else:
            code = self.proc.returncode
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
        shutil.rmtree(self.directory, ignore_errors=True)
        return code

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def provision_remote(
    admin: AdminClient, fleet: Fleet, n: int, ttl: float | None, progress: Callable[[int], None] | None = None
) -> list[int]:
    """Provision the fleet's first `n` agents in the server, in the same order; their handles there."""
    remote: list[int] = []
    for i in range(n):
        template = fleet.template_names[int(fleet.templates[i])]
        parent, user = int(fleet.parents[i]), int(fleet.users[i])
        behalf: int | str | None = (
            remote[parent] if parent >= 0 else fleet.user_names[user] if user >= 0 else None
        )
        remote.append(admin.provision(template, on_behalf_of=behalf, ttl=ttl).handle)
        if progress is not None and (i + 1) % 100 == 0:
            progress(i + 1)
    return remote


def request_frames(reqs: RequestSet, handles: Sequence[int]) -> list[bytes]:
    """Each request as one encoded `check` frame, naming agents by their handles in the server."""
    names = reqs.action_names
    return [
        p.frame(p.Check(i + 1, handles[a], names[k], r, reqs.context(i)))
        for i, (a, k, r) in enumerate(
            zip(reqs.agents.tolist(), reqs.action_ids.tolist(), reqs.resources, strict=True)
        )
    ]


QUOTA_REASONS = frozenset({"rate_limited", "budget_exhausted", "concurrency_limit"})


def verify_same_decisions(
    client: Client,
    local_check: Callable[..., Any],
    reqs: RequestSet,
    local_handles: Sequence[int],
    remote_handles: Sequence[int],
    n: int = 200,
) -> tuple[int, int]:
    """Ask the server and the in-process engine the first `n` requests; (agreed, allowed by the server).

    Raises `CharterError` on a disagreement that quotas do not explain (the
    two engines' counters differ): the server would be measuring another workload.
    """
    names = reqs.action_names
    agreed = allowed = 0
    for i in range(min(n, len(reqs))):
        a, k, r, ctx = int(reqs.agents[i]), int(reqs.action_ids[i]), reqs.resources[i], reqs.context(i)
        got = client.check(remote_handles[a], names[k], r, ctx)
        want = local_check(local_handles[a], names[k], r, ctx)
        allowed += bool(got.allowed)
        if (got.allowed, got.reason) == (want.allowed, want.reason):
            agreed += 1
        elif not ({got.reason, want.reason} & QUOTA_REASONS):
            raise CharterError(
                f"the server decided request {i} differently: {got.reason} vs {want.reason} in-process"
            )
    return agreed, allowed


class _Run:
    def __init__(self, target: int, warmup: int, sidecar: Sidecar) -> None:
        self.target, self.warmup, self.sidecar = target, warmup, sidecar
        self.answered = 0
        self.recorded = 0
        self.recording = False
        self.stopping = False
        self.latencies: list[float] = []
        self.t0 = self.t1 = 0.0
        self.cpu0 = self.cpu1 = 0.0
        self.client0 = self.client1 = 0.0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def answered_n(self, n: int, now: float, sent: deque[float]) -> None:
        if self.stopping:
            return
        self.answered += n
        if not self.recording:
            for _ in range(n):
                sent.popleft()
            if self.answered >= self.warmup:
                self.recording = True
                self.t0, self.cpu0, self.client0 = now, self.sidecar.cpu_seconds(), time.process_time()
            return
        lat = self.latencies
        for _ in range(n):
            lat.append(now - sent.popleft())
        self.recorded += n
        if self.recorded >= self.target:
            self.stopping = True
            self.t1, self.cpu1, self.client1 = (
                time.perf_counter(),
                self.sidecar.cpu_seconds(),
                time.process_time(),
            )
            self.done.set_result(None)


class _Connection(asyncio.Protocol):
    """Keeps `depth` frames in flight; each reply is answered by the next frame at once."""

    def __init__(self, frames: list[bytes], depth: int, run: _Run, offset: int) -> None:
        self.frames, self.depth, self.run, self.i = frames, depth, run, offset
        self.rest = b""
        self.sent: deque[float] = deque()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self._send(self.depth)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.run.done.done():
            self.run.done.set_exception(CharterError(f"the server closed a connection: {exc}"))

    def _send(self, n: int) -> None:
        frames, k, now = self.frames, len(self.frames), time.perf_counter()
        self.transport.write(b"".join(frames[(self.i + j) % k] for j in range(n)))
        self.i += n
        self.sent.extend([now] * n)

    def data_received(self, data: bytes) -> None:
        n, self.rest = p.count_frames(self.rest + data if self.rest else data)
        if n:
            self.run.answered_n(n, time.perf_counter(), self.sent)
            if not self.run.stopping:
                self._send(n)


async def _drive(sidecar: Sidecar, frames: list[bytes], clients: int, depth: int, target: int) -> _Run:
    loop = asyncio.get_running_loop()
    run = _Run(target, int(target * WARMUP_SHARE), sidecar)
    conns: list[_Connection] = []
    try:
        for c in range(clients):
            offset = (c * 7919) % len(frames)
            _, conn = await loop.create_unix_connection(
                lambda o=offset: _Connection(frames, depth, run, o),  # type: ignore[misc]
                sidecar.socket,
            )
            conns.append(conn)
        await asyncio.wait_for(run.done, timeout=max(TIMEOUT, target / 1_000))
    finally:
        run.stopping = True
        for conn in conns:
            conn.transport.abort()
        await asyncio.gather(*(conn.closed for conn in conns))
    return run


def drive(sidecar: Sidecar, frames: list[bytes], clients: int, depth: int, target: int) -> PathResult:
    """Run `clients` connections with `depth` requests in flight each until `target` replies are measured."""
    loop = uvloop.new_event_loop()
    try:
        run = loop.run_until_complete(_drive(sidecar, frames, clients, depth, target))
    finally:
        loop.close()
    lat_ns = np.asarray(run.latencies, dtype=np.float64) * 1e9
    return PathResult(
        "socket",
        run.recorded,
        run.t1 - run.t0,
        run.cpu1 - run.cpu0,
        0.0,  # the replies are not decoded under load; the runner sets it from its check
        percentiles(lat_ns),
        latency_of=f"one request, {clients} client(s) x {depth} in flight",
        client_cpu_s=run.client1 - run.client0,
        cdf=cdf_points(lat_ns),
    )
