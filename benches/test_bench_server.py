"""Decision-server benchmarks: real `charter serve` processes driven over Unix sockets.

Each figure comes with its floor, measured in the same run: an echo server
(`python benches/test_bench_server.py echo SOCKET REPLY`) on the same uvloop
event loop and framing code, which answers every frame with the bytes the
real server sent for it, deciding nothing. The ratio is decisions/s of the
server over frames/s (x decisions per frame) of the echo server, with the
same load generator.

1. single `check` frames, one in flight per client: 1, 8 and 64 clients
   (decisions/s, p50/p99 latency);
2. pipelined: 32 `check` frames in flight per client, 8 clients;
3. batched: `check_batch` frames of 1,000 decisions, 1 client x 1 in flight
   and 8 clients x 32 in flight;
4. workers: 64 clients against `--workers 1`, `--workers 2` (one shared
   listening socket) and two single-worker servers with the clients split
   between their sockets (the "one socket per worker" alternative).

The load generator runs in this process (uvloop, one Protocol per
connection, every reply answered by the next request at once). Figures are
medians over `ROUNDS` alternating (server, echo) windows of `WINDOW` seconds.
No assertion is made about speed; the server's answers to the request pool
are checked against an in-process engine first.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import uvloop

import charter
import workload as wl
from charter.policy import example_path
from charter.server import AdminClient, Client
from charter.server import protocol as p

WINDOW = 0.6 if wl.quick() else 1.0
WARMUP = 0.3 if wl.quick() else 0.5
ROUNDS = 1 if wl.quick() else 5
TIMEOUT = 60.0
N_AGENTS = 64
BATCH = 1000
HERE = Path(__file__).resolve()

pytestmark = pytest.mark.measurement


# ------------------------------------------------------------ processes


@contextmanager
def _process(cmd: list[str]) -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        assert proc.stdout is not None
        try:
            line = proc.stdout.readline()
            if "ready" not in line:
                proc.kill()
                proc.wait(TIMEOUT)
                log.seek(0)
                raise RuntimeError(f"{cmd[3:5]} did not start: {line!r}\n{log.read()}")
            yield proc
        finally:
            proc.terminate()
            proc.wait(TIMEOUT)
            proc.stdout.close()


def serve(directory: Path, name: str, *extra: str) -> Any:
    sock = str(directory / f"{name}.sock")
    cmd = [sys.executable, "-m", "charter", "serve", "--policy", str(example_path()), "--socket", sock]
    cmd += ["--admin-socket", str(directory / f"{name}.admin"), "--trusted-uid", str(os.geteuid()), *extra]
    return _process(cmd)


def echo(directory: Path, reply: bytes) -> Any:
    path = directory / "echo.reply"
    path.write_bytes(reply)
    return _process([sys.executable, str(HERE), "echo", str(directory / "echo.sock"), str(path)])


# ------------------------------------------------------------ the echo floor


class _Echo(asyncio.Protocol):
    """Answers every complete frame with `reply`, all replies to one read in one write."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.rest = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        n, self.rest = p.count_frames(self.rest + data if self.rest else data)
        if n:
            self.transport.write(self.reply * n)


async def _echo_main(path: str, reply_path: str) -> None:
    reply = Path(reply_path).read_bytes()
    loop = asyncio.get_running_loop()
    server = await loop.create_unix_server(lambda: _Echo(reply), path)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


# ------------------------------------------------------------ the load generator


class _Load(asyncio.Protocol):
    """Keeps `depth` frames in flight; every reply is answered by the next frame at once."""

    def __init__(self, frames: list[bytes], depth: int, run: _Run, offset: int) -> None:
        self.frames, self.depth, self.run = frames, depth, run
        self.i = offset
        self.rest = b""
        self.sent: deque[float] = deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.closed = asyncio.get_running_loop().create_future()
        self._send(self.depth)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def _send(self, n: int) -> None:
        frames, k, now = self.frames, len(self.frames), time.perf_counter()
        self.transport.write(b"".join(frames[(self.i + j) % k] for j in range(n)))
        self.i += n
        self.sent.extend([now] * n)

    def data_received(self, data: bytes) -> None:
        n, self.rest = p.count_frames(self.rest + data if self.rest else data)
        if not n:
            return
        now, run = time.perf_counter(), self.run
        if run.recording:
            lat = run.latencies
            for _ in range(n):
                lat.append(now - self.sent.popleft())
            run.done += n
        else:
            for _ in range(n):
                self.sent.popleft()
        if not run.stopping:
            self._send(n)


class _Run:
    def __init__(self) -> None:
        self.recording = False
        self.stopping = False
        self.done = 0
        self.latencies: list[float] = []


async def _drive(
    paths: list[str], clients: int, depth: int, frames: list[bytes]
) -> tuple[float, list[float]]:
    loop = asyncio.get_running_loop()
    run = _Run()
    conns = []
    for c in range(clients):
        offset = (c * 7919) % len(frames)
        _, conn = await loop.create_unix_connection(
            lambda o=offset: _Load(frames, depth, run, o), paths[c % len(paths)]
        )
        conns.append(conn)
    await asyncio.sleep(WARMUP)  # a time window is what is measured: sleeping is the method here
    run.recording, t0 = True, time.perf_counter()
    await asyncio.sleep(WINDOW)
    run.recording, elapsed = False, time.perf_counter() - t0
    run.stopping = True
    for conn in conns:
        conn.transport.abort()
    await asyncio.gather(*(conn.closed for conn in conns))
    return run.done / elapsed, run.latencies


def measure(paths: list[str], clients: int, depth: int, frames: list[bytes]) -> tuple[float, list[float]]:
    """Frames answered per second and the latencies (s) of those answered in the window."""
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(_drive(paths, clients, depth, frames))
    finally:
        loop.close()


# ------------------------------------------------------------ the requests


class Setup(msgspec.Struct):
    directory: Path
    handles: list[int]
    singles: list[bytes]
    batches: list[bytes]
    single_reply: bytes
    batch_reply: bytes


def _requests(handles: list[int], actions: list[str]) -> tuple[list[bytes], list[bytes], list[Any]]:
    rng = np.random.default_rng(wl.SEED + 11)
    pool = [None, "customers/42", "analytics/q3", "prod/db/orders", "users/7/profile", "ledger/2024"]
    singles, asks = [], []
    for i in range(2000):
        h, a, r = int(rng.choice(handles)), str(rng.choice(actions)), pool[int(rng.integers(len(pool)))]
        asks.append((h, a, r))
        singles.append(p.frame(p.Check(i + 1, h, a, r)))
    batches = []
    for i in range(16):
        hs = rng.choice(np.array(handles, dtype=np.uint64), size=BATCH)
        idx = rng.integers(len(actions), size=BATCH).astype("<u4")
        res = [pool[int(k)] for k in rng.integers(len(pool), size=BATCH)]
        req = p.CheckBatch(i + 1, memoryview(hs.astype("<u8")), memoryview(idx), list(actions), res)
        batches.append(p.frame(req))
    return singles, batches, asks


def _first_reply(path: str, frame: bytes) -> bytes:
    with Client(path, timeout=TIMEOUT) as client:
        client._connect(time.monotonic() + TIMEOUT)
        assert client._sock is not None
        client._sock.sendall(frame)
        header = client._recv(client._sock, 4)
        return header + client._recv(client._sock, p.HEADER.unpack(header)[0])


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    directory = Path(tempfile.mkdtemp(prefix="chb", dir="/tmp"))  # Unix socket paths must be short
    try:
        yield _setup(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _setup(directory: Path) -> Setup:
    mirror = charter.Engine.example()
    templates = ["support-bot", "analytics-agent", "refund-agent", "deploy-agent"]
    users = ["user:alice", "user:bob", "user:carol", "user:dave"]
    handles = [
        mirror.provision(templates[i % 4], on_behalf_of=users[(i // 4) % 4], ttl=None).handle
        for i in range(N_AGENTS)
    ]
    singles, batches, asks = _requests(handles, mirror.actions)
    with serve(directory, "check"):
        with AdminClient(str(directory / "check.admin"), timeout=TIMEOUT) as admin:
            remote = [
                admin.provision(templates[i % 4], on_behalf_of=users[(i // 4) % 4]).handle
                for i in range(N_AGENTS)
            ]
        assert remote == handles
        with Client(str(directory / "check.sock"), timeout=TIMEOUT) as client:
            for h, a, r in asks[:500]:  # the server decides as the engine does
                got, want = client.check(h, a, r), mirror.check(h, a, r)
                assert (got.allowed, got.reason) == (want.allowed, want.reason)
        single_reply = _first_reply(str(directory / "check.sock"), singles[0])
        batch_reply = _first_reply(str(directory / "check.sock"), batches[0])
    return Setup(directory, handles, singles, batches, single_reply, batch_reply)


@contextmanager
def provisioned(directory: Path, name: str, *extra: str) -> Iterator[str]:
    """A server with the setup's agents (same handles: same provisioning order), its decision socket."""
    templates = ["support-bot", "analytics-agent", "refund-agent", "deploy-agent"]
    users = ["user:alice", "user:bob", "user:carol", "user:dave"]
    with serve(directory, name, *extra):
        with AdminClient(str(directory / f"{name}.admin"), timeout=TIMEOUT) as admin:
            for i in range(N_AGENTS):
                admin.provision(templates[i % 4], on_behalf_of=users[(i // 4) % 4])
        yield str(directory / f"{name}.sock")


# ------------------------------------------------------------ recording


def _record(
    group: str, name: str, rates: list[float], lats: list[float], floor: list[float], per_frame: int
) -> None:
    rate = statistics.median(rates) * per_frame
    floor_rate = statistics.median(floor) * per_frame if floor else None
    lat = np.array(lats) * 1e6
    note = f"p50 {np.percentile(lat, 50):,.0f} us, p99 {np.percentile(lat, 99):,.0f} us" if len(lat) else ""
    ratio = None
    if floor_rate:
        note += f"; echo floor {floor_rate:,.0f}/s ({rate / floor_rate:.2f} of it)"
        ratio = floor_rate / rate
    wl.RESULTS.append(wl.Row(group, name, None, rate, "decisions/s", ratio=ratio, note=note))


SCENARIOS = [
    ("1. check, 1 in flight per client", "1 client", 1, 1, "single"),
    ("1. check, 1 in flight per client", "8 clients", 8, 1, "single"),
    ("1. check, 1 in flight per client", "64 clients", 64, 1, "single"),
    ("2. check, pipelined", "8 clients x 32 in flight", 8, 32, "single"),
    ("3. check_batch, 1,000 decisions a frame", "1 client x 1 in flight", 1, 1, "batch"),
    ("3. check_batch, 1,000 decisions a frame", "8 clients x 32 in flight", 8, 32, "batch"),
]


@pytest.mark.parametrize(
    ("group", "name", "clients", "depth", "kind"), SCENARIOS, ids=[s[1] + "-" + s[4] for s in SCENARIOS]
)
def test_server_throughput(setup: Setup, group: str, name: str, clients: int, depth: int, kind: str) -> None:
    frames = setup.singles if kind == "single" else setup.batches
    reply = setup.single_reply if kind == "single" else setup.batch_reply
    per_frame = 1 if kind == "single" else BATCH
    rates, floor, lats = [], [], []
    with ExitStack() as stack:
        path = stack.enter_context(provisioned(setup.directory, "bench"))
        stack.enter_context(echo(setup.directory, reply))
        echo_path = str(setup.directory / "echo.sock")
        for _ in range(ROUNDS):  # alternate, so both see the same machine load
            rate, lat = measure([path], clients, depth, frames)
            rates.append(rate)
            lats += lat
            floor.append(measure([echo_path], clients, depth, frames)[0])
        with Client(path, timeout=TIMEOUT) as client:
            stats = client.stats()
    assert stats["errors"] == {}, stats["errors"]
    assert stats["decisions"]["total"] >= sum(rates) * WINDOW * per_frame * 0.5
    _record(group, name, rates, lats, floor, per_frame)


def test_workers_share_load(setup: Setup) -> None:
    """64 clients, 1 in flight: one process, two workers on one socket, two servers with a socket each."""
    group = "4. workers: 64 clients x 1 in flight (check)"
    frames = setup.singles
    results: dict[str, tuple[list[float], list[float]]] = {}
    spread = ""
    with ExitStack() as stack:
        one = stack.enter_context(provisioned(setup.directory, "w1"))
        two = stack.enter_context(provisioned(setup.directory, "w2", "--workers", "2"))
        split = [
            stack.enter_context(provisioned(setup.directory, "sa")),
            stack.enter_context(provisioned(setup.directory, "sb")),
        ]
        stack.enter_context(echo(setup.directory, setup.single_reply))
        echo_path = str(setup.directory / "echo.sock")
        configs = {
            "--workers 1": [one],
            "--workers 2, one shared socket": [two],
            "2 servers, a socket each (client picks)": split,
        }
        floor: list[float] = []
        for _ in range(ROUNDS):
            for label, paths in configs.items():
                rate, lat = measure(paths, 64, 1, frames)
                rates, lats = results.setdefault(label, ([], []))
                rates.append(rate)
                lats += lat
            floor.append(measure([echo_path], 64, 1, frames)[0])

        async def distribution() -> list[int]:  # which worker accepted 64 fresh connections
            from charter.server import AsyncClient

            clients = [AsyncClient(two, timeout=TIMEOUT) for _ in range(64)]
            try:
                for c in clients:
                    await c.ping()
                per_worker = (await clients[0].stats())["per_worker"]
                return [w["connections"] for w in per_worker]
            finally:
                for c in clients:
                    await c.close()

        spread = "/".join(str(n) for n in asyncio.run(distribution()))
    for label, (rates, lats) in results.items():
        _record(group, label, rates, lats, floor, 1)
    wl.NOTES.append(
        f"workers: 64 fresh connections to `--workers 2` were accepted {spread} by the two workers"
    )


# ------------------------------------------------------------ echo server entry point

if __name__ == "__main__":
    if sys.argv[1:2] != ["echo"] or len(sys.argv) != 4:
        sys.exit("usage: test_bench_server.py echo SOCKET REPLY_FILE")
    uvloop.run(_echo_main(sys.argv[2], sys.argv[3]))
