"""Helpers for the decision-server tests: real server processes on short temporary socket paths.

- `ServerProcess`: runs `charter serve` in a subprocess, waits for its ready line, collects its log lines so a test
  can wait for one (`wait_log`), and stops it (`terminate` sends SIGTERM).
- `RawConnection`: a blocking socket speaking frames by hand, for tests that
  need to send what no client would (garbage, partial frames, pipelines).
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from charter.server import protocol as p

TIMEOUT = 60.0
"""Generous bound on every wait: the suite must pass on a loaded 2-core machine."""


@contextlib.contextmanager
def short_tmpdir() -> Iterator[Path]:
    """A fresh directory under /tmp: Unix socket paths must stay under ~107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="chs", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class ServerProcess:
    """One server subprocess; use as a context manager (it is killed on exit if still running)."""

    def __init__(
        self,
        policy: Path | str,
        directory: Path,
        *extra: str,
        admin: bool = True,
        name: str = "d",
    ) -> None:
        self.policy = Path(policy)
        self.socket = str(directory / f"{name}.sock")
        self.admin_socket = str(directory / f"{name}.admin") if admin else None
        args = ["--policy", str(policy), "--socket", self.socket]
        if self.admin_socket:
            args += ["--admin-socket", self.admin_socket]
        args += list(extra)
        cmd = [sys.executable, "-m", "charter", "serve", *args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OPENBLAS_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=directory
        )
        self.log: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._log_cond = threading.Condition()
        self._pumps = [
            threading.Thread(target=self._pump, args=(self.proc.stderr, True), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stdout, False), daemon=True),
        ]
        for pump in self._pumps:
            pump.start()
        self.ready_line = self._wait_ready()

    def _pump(self, stream: Any, is_log: bool) -> None:
        for line in stream:
            if is_log:
                with self._log_cond:
                    self.log.append(line.rstrip("\n"))
                    self._log_cond.notify_all()
            else:
                self._lines.put(line)
        if not is_log:
            self._lines.put(None)

    def _wait_ready(self) -> str:
        try:
            line = self._lines.get(timeout=TIMEOUT)
        except queue.Empty:
            self.kill()
            raise AssertionError(f"server not ready after {TIMEOUT} s; log: {self.log}") from None
        if line is None or "ready" not in line:
            self.proc.wait(timeout=TIMEOUT)
            raise AssertionError(f"server failed to start ({self.proc.returncode}): {line!r} {self.log}")
        return line

    def wait_log(self, pattern: str, *, after: int = 0, timeout: float = TIMEOUT) -> str:
        """The first log line from index `after` on matching `pattern` (waits for it to be written)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._log_cond:
            while True:
                for line in self.log[after:]:
                    if rx.search(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no log line matching {pattern!r}: {self.log}")
                self._log_cond.wait(left)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def terminate(self, timeout: float = TIMEOUT) -> int:
        """SIGTERM, then the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self._close_pipes()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT)
        self._close_pipes()

    def _close_pipes(self) -> None:
        for pump in self._pumps:  # they end at end of stream, now that the process has exited
            pump.join(TIMEOUT)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


class RawConnection:
    """A blocking socket that speaks frames by hand."""

    def __init__(self, path: str, timeout: float = TIMEOUT) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self._buf = b""

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, *messages: Any) -> None:
        """Frames for `messages` (Structs or plain lists), in one write."""
        self.sock.sendall(b"".join(p.frame(m) for m in messages))

    def send_body(self, body: bytes) -> None:
        self.sock.sendall(p.HEADER.pack(len(body)) + body)

    def _fill(self, n: int) -> bool:
        while len(self._buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                return False
            self._buf += chunk
        return True

    def recv(self) -> p.Reply | None:
        """The next reply, or None at end of stream."""
        if not self._fill(4):
            return None
        (n,) = p.HEADER.unpack_from(self._buf)
        if not self._fill(4 + n):
            return None
        body, self._buf = self._buf[4 : 4 + n], self._buf[4 + n :]
        reply: p.Reply = p.response_decoder.decode(body)
        return reply

    def recv_until(self, rid: int) -> list[p.Reply]:
        """Replies up to and including the one with id `rid` (fails on end of stream first)."""
        got: list[p.Reply] = []
        while True:
            reply = self.recv()
            assert reply is not None, f"connection closed before reply {rid}; got {got}"
            got.append(reply)
            if reply.id == rid:
                return got

    def at_eof(self) -> bool:
        """Whether the server closes the connection (after any replies still to come)."""
        with contextlib.suppress(ConnectionResetError):
            while self.recv() is not None:
                pass
        return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_policy(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(msgspec.json.encode(data).decode())
    return path
