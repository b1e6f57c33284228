"""Fuzzing the decision server: random bytes and random MessagePack never kill it.

One server process for the module. Between examples a well-behaved client
(on its own connection, opened before the fuzzing) asks a fixed question and
must get the right answer, and the process must still be running.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import charter
from charter.policy import example_path
from charter.server import AdminClient, Client
from charter.server import protocol as p
from server_helpers import TIMEOUT, RawConnection, ServerProcess, short_tmpdir

MAX_FRAME = 4096
SENTINEL = 2**63 + 7
"""The id of the ping that follows each example's frames on the same connection."""

FUZZ = settings(
    max_examples=int(os.environ.get("CHARTER_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[tuple[ServerProcess, Client, charter.Engine]]:
    with short_tmpdir() as d, ServerProcess(example_path(), d, "--max-frame", str(MAX_FRAME)) as srv:
        assert srv.admin_socket is not None
        with Client(srv.socket, timeout=TIMEOUT) as client:
            yield srv, client, charter.Engine.example()
        # the admin socket was fuzzed too: it is still served
        with Client(srv.admin_socket, timeout=TIMEOUT) as admin:
            assert admin.ping()
        assert srv.terminate() == 0
        assert not [line for line in srv.log if "ERROR" in line or "Traceback" in line], srv.log


def still_serving(srv: ServerProcess, client: Client, engine: charter.Engine) -> None:
    assert srv.alive()
    reply = client.check("user:alice", "db:read", "customers/42")
    want = engine.check("user:alice", "db:read", "customers/42")
    assert (reply.allowed, reply.reason, reply.rule) == (want.allowed, want.reason, want.rule)


def answered(conn: RawConnection, sent: int) -> None:
    """Read up to the sentinel ping's reply: the connection stays open, and no body got two replies
    (a body may get none yet: a delayed ping is answered later)."""
    seen = 0
    while True:
        reply = conn.recv()
        assert reply is not None, "the server closed a connection whose frames were all within limits"
        if reply.id == SENTINEL:
            break
        seen += 1
    assert seen <= sent


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.binary(max_size=40),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)
ops = st.sampled_from([*p.OPS, "nope", ""])
# Frames shaped like requests: a real op name, an id, then random fields.
shaped = st.builds(
    lambda op, rid, rest: [op, rid, *rest],
    ops,
    st.one_of(st.integers(min_value=-5, max_value=2**64 - 1), values),
    st.lists(values, max_size=7),
)


def _encode(value: Any) -> bytes:
    return msgspec.msgpack.encode(value)


@FUZZ
@given(bodies=st.lists(st.binary(max_size=200), min_size=1, max_size=6))
def test_random_bodies_in_valid_frames(
    fuzzed: tuple[ServerProcess, Client, charter.Engine], bodies: list[bytes]
) -> None:
    srv, client, engine = fuzzed
    with RawConnection(srv.socket) as conn:
        conn.send_raw(b"".join(p.HEADER.pack(len(b)) + b for b in bodies) + p.frame(p.Ping(SENTINEL)))
        answered(conn, len(bodies))
    still_serving(srv, client, engine)


@FUZZ
@given(messages=st.lists(st.one_of(shaped, values), min_size=1, max_size=6), admin=st.booleans())
def test_random_msgpack(
    fuzzed: tuple[ServerProcess, Client, charter.Engine], messages: list[Any], admin: bool
) -> None:
    srv, client, engine = fuzzed
    bodies = [_encode(m) for m in messages]
    bodies = [b for b in bodies if len(b) <= MAX_FRAME]
    path = srv.admin_socket if admin else srv.socket
    assert path is not None
    with RawConnection(path) as conn:
        conn.send_raw(b"".join(p.HEADER.pack(len(b)) + b for b in bodies) + p.frame(p.Ping(SENTINEL)))
        answered(conn, len(bodies))
    if admin:  # random admin frames may be valid: undo what would change the sentinel question
        with AdminClient(path, timeout=TIMEOUT) as restore:
            restore.unfreeze()
            restore.resume("user:alice")
    still_serving(srv, client, engine)


@FUZZ
@given(stream=st.binary(min_size=1, max_size=600), hang_up=st.booleans())
def test_random_byte_streams(
    fuzzed: tuple[ServerProcess, Client, charter.Engine], stream: bytes, hang_up: bool
) -> None:
    """Unframed garbage: the server may answer, wait for more, or hang up; it must not fall over."""
    srv, client, engine = fuzzed
    conn = RawConnection(srv.socket)
    try:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.send_raw(stream)
        if hang_up:
            conn.close()
        still_serving(srv, client, engine)
    finally:
        conn.close()
    still_serving(srv, client, engine)


def test_the_fuzzed_server_counted_its_errors(fuzzed: tuple[ServerProcess, Client, charter.Engine]) -> None:
    srv, client, engine = fuzzed
    still_serving(srv, client, engine)
    errors = client.stats()["errors"]
    assert set(errors) <= {code for name, code in vars(p.ErrorCode).items() if name.isupper()}
