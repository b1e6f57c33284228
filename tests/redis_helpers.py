"""A real `redis-server` for the shared-state tests: started on a free port in a temporary directory.

`RedisServer` starts it without persistence (a restart loses everything,
the harshest case for resynchronisation), and can `kill`, `restart`,
`pause` (SIGSTOP: a partition as the clients see it) and `resume` it.
Without the binary the tests are skipped, unless `CHARTER_REQUIRE_REDIS`
is set (CI sets it: there, a missing binary is a failure).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

TIMEOUT = 60.0


def redis_binary() -> str:
    """The `redis-server` path, or skip (fail in CI) when it is not installed."""
    path = shutil.which("redis-server")
    if path is None:
        if os.environ.get("CHARTER_REQUIRE_REDIS"):
            pytest.fail("redis-server is not installed (CHARTER_REQUIRE_REDIS is set)")
        pytest.skip("redis-server is not installed (apt-get install redis-server); .ci/run installs it")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process on 127.0.0.1:`port`."""

    def __init__(self, directory: Path) -> None:
        self.binary = redis_binary()
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        cmd = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.directory), "--daemonize", "no",
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_timeout=1.0)
        deadline = time.monotonic() + TIMEOUT
        try:
            while True:
                try:
                    client.ping()
                    return
                except (redis.RedisError, OSError):
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: everything it held is lost (no persistence)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def restart(self) -> None:
        self.start()

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5.0)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    directory = Path(tempfile.mkdtemp(prefix="chredis", dir="/tmp"))
    server = RedisServer(directory)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def wait_until(predicate: object, what: str, timeout: float = TIMEOUT) -> None:
    """Poll `predicate()` until true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)
