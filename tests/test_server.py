"""The decision server, end to end: real `charter serve` processes on temporary sockets.

Every wait is on an event (a reply, a log line, end of stream, process
exit) bounded by `TIMEOUT`; no test sleeps to synchronise or times anything.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

import charter
from charter.identity import HolderKey, Issuer
from charter.policy import example_path
from charter.server import (
    AdminClient,
    AgentInfo,
    AsyncAdminClient,
    AsyncClient,
    Client,
    RemoteError,
    ServerTimeout,
)
from charter.server import protocol as p
from charter.server.metrics import openmetrics
from charter.tokens import decode_unverified
from server_helpers import TIMEOUT, RawConnection, ServerProcess, short_tmpdir, write_policy

EXAMPLE = example_path()
REQUESTS = [
    ("user:alice", "crm:read", "customers/42"),
    ("user:alice", "db:read", "customers/42"),
    ("user:alice", "db:read", "analytics/q3"),
    ("user:alice", "crm:write", "users/7/profile"),
    ("user:bob", "db:write", "prod/orders"),
    ("user:bob", "db:write", "staging/orders"),
    ("user:bob", "deploy:run", None),
    ("user:carol", "payments:payout", None),
    ("user:dave", "tickets:read", None),
    ("user:dave", "db:drop", None),
    ("user:nobody", "crm:read", None),
    ("user:alice", "nope:nope", None),
    ("user:alice", "crm:read", "bad//name"),
]


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with short_tmpdir() as d:
        yield d


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[ServerProcess]:
    """The example policy, decision + admin socket, default limits."""
    with ServerProcess(EXAMPLE, workdir, name="main") as srv:
        yield srv


@pytest.fixture
def tmp() -> Iterator[Path]:
    with short_tmpdir() as d:
        yield d


@pytest.fixture(scope="module")
def engine() -> charter.Engine:
    return charter.Engine.example()


def expected(engine: charter.Engine, subject: Any, action: str, resource: str | None) -> tuple[Any, ...]:
    d = engine.check(subject, action, resource)
    return d.allowed, d.reason, d.rule, d.policy_version


def got(reply: p.DecisionReply) -> tuple[Any, ...]:
    return reply.allowed, reply.reason, reply.rule, reply.policy_version


# ------------------------------------------------------------ decisions


def test_checks_match_the_in_process_engine(server: ServerProcess, engine: charter.Engine) -> None:
    with Client(server.socket, timeout=TIMEOUT) as client:
        for subject, action, resource in REQUESTS:
            reply = client.check(subject, action, resource)
            assert got(reply) == expected(engine, subject, action, resource)
            assert bool(reply) is reply.allowed
            assert charter.REASONS[reply.reason_code] == reply.reason


def test_64_concurrent_clients(server: ServerProcess, engine: charter.Engine) -> None:
    want = [expected(engine, *r) for r in REQUESTS]

    async def one(k: int) -> int:
        async with AsyncClient(server.socket, timeout=TIMEOUT) as client:
            for i in range(40):
                j = (i + k) % len(REQUESTS)
                assert got(await client.check(*REQUESTS[j])) == want[j]
        return k

    async def all_of_them() -> list[int]:
        return await asyncio.gather(*(one(k) for k in range(64)))

    assert asyncio.run(all_of_them()) == list(range(64))
    with Client(server.socket, timeout=TIMEOUT) as client:
        assert client.stats()["connections"]["accepted"] >= 64


def test_pipelined_responses_come_back_out_of_order(server: ServerProcess, engine: charter.Engine) -> None:
    with RawConnection(server.socket) as conn:
        # id 1 waits a minute on the server; the checks behind it on the same connection do not.
        checks = [p.Check(2 + i, *REQUESTS[i % len(REQUESTS)]) for i in range(50)]
        conn.send(p.Ping(1, 60.0), *checks)
        replies = conn.recv_until(51)
        assert [r.id for r in replies] == list(range(2, 52))
        for req, reply in zip(checks, replies, strict=True):
            assert isinstance(reply, p.DecisionReply)
            assert got(reply) == expected(engine, req.subject, req.action, req.resource)
        conn.send(p.Ping(52))  # still answered while id 1 is pending
        (pong,) = conn.recv_until(52)
        assert isinstance(pong, p.Result)
        assert pong.value["policy_version"] == engine.policy_version


def test_async_client_pipelines_many_calls_on_one_connection(
    server: ServerProcess, engine: charter.Engine
) -> None:
    async def run() -> None:
        async with AsyncClient(server.socket, timeout=TIMEOUT) as client:
            slow = asyncio.ensure_future(client.ping(0.2))
            replies = await asyncio.gather(*(client.check(*REQUESTS[i % len(REQUESTS)]) for i in range(300)))
            for i, reply in enumerate(replies):
                assert got(reply) == expected(engine, *REQUESTS[i % len(REQUESTS)])
            assert (await slow)["policy_version"] == engine.policy_version

    asyncio.run(run())


def test_check_batch_is_columnar_and_matches(server: ServerProcess, engine: charter.Engine) -> None:
    assert server.admin_socket is not None
    with AdminClient(server.admin_socket, timeout=TIMEOUT) as admin:
        bots = [admin.provision("support-bot", on_behalf_of="user:alice") for _ in range(3)]
        bots.append(admin.provision("analytics-agent", on_behalf_of="user:alice"))
        local = charter.Engine.example()
        mirror = [local.provision(b.template, on_behalf_of="user:alice") for b in bots]
        rng = np.random.default_rng(7)
        actions = [*engine.actions, "nope:nope"]
        resources_pool = [None, "customers/42", "analytics/q3", "prod/x", "users/1/profile"]
        n = 2000
        pick, act = rng.integers(len(bots), size=n), rng.integers(len(actions), size=n)
        res = [resources_pool[i] for i in rng.integers(len(resources_pool), size=n)]
        handles = np.array([bots[i].handle for i in pick], dtype=np.uint64)
        allowed, reasons = admin.check_batch_reasons(handles, [actions[i] for i in act], res)
        for k in range(n):
            d = local.check(mirror[pick[k]].handle, actions[act[k]], res[k])
            assert (bool(allowed[k]), charter.REASONS[reasons[k]]) == (d.allowed, d.reason)
        # the same batch as indices into an action table
        again = admin.check_batch(handles, act, res, action_names=actions)
        assert (again == allowed).all()
        assert admin.check_batch(np.zeros(0, np.uint64), []).shape == (0,)
        for bot in bots:
            admin.deprovision(bot)


@pytest.mark.parametrize(
    ("message", "fragment"),
    [
        (["check_batch", 9, b"\0" * 7, b"", [], None], "N x 8 bytes"),
        (["check_batch", 9, b"\0" * 8, b"\0" * 4, ["crm:read"], ["a", "b"]], "resources"),
        (["check_batch", 9, b"\0" * 8, b"\1\0\0\0", ["crm:read"], None], "past `action_names`"),
        (["check_batch", 9, [1, 2], [0, 0], ["crm:read"], None], "Expected `bytes`"),
    ],
)
def test_bad_batches_are_invalid_requests(server: ServerProcess, message: list[Any], fragment: str) -> None:
    assert server.admin_socket is not None
    with RawConnection(server.admin_socket) as conn:
        conn.send(message)
        (reply,) = conn.recv_until(9)
        assert isinstance(reply, p.ErrorReply)
        assert reply.code == "invalid_request"
        assert fragment in reply.message


def test_explain_and_errors_map_to_exceptions(server: ServerProcess) -> None:
    with Client(server.socket, timeout=TIMEOUT) as client:
        explanation = client.explain("user:alice", "db:read", "customers/42")
        assert not explanation.allowed
        assert "denied_by_rule" in str(explanation)
        assert explanation.data["chain"][0]["kind"] == "principal"
        with pytest.raises(charter.InvalidRequestError, match="subject"):
            client.check(None, "crm:read")


# ------------------------------------------------------------ admin and security


def test_admin_operations(server: ServerProcess, engine: charter.Engine) -> None:
    assert server.admin_socket is not None
    with AdminClient(server.admin_socket, timeout=TIMEOUT) as admin:
        parent = admin.provision("support-bot", on_behalf_of="user:alice", ttl=600, agent_id="adm-parent")
        assert (parent.id, parent.template, parent.principal) == ("adm-parent", "support-bot", "user:alice")
        child = admin.provision("research-subagent", on_behalf_of=parent)
        assert child.depth == 2
        assert child.on_behalf_of == "adm-parent"
        assert admin.check(child, "crm:read").allowed  # the admin socket may name any agent
        with pytest.raises(charter.ProvisionError, match="unknown template"):
            admin.provision("no-such-template")
        with pytest.raises(charter.UnknownSubjectError):
            admin.provision("support-bot", on_behalf_of="user:nobody")
        assert admin.deprovision(parent) == 2
        assert admin.check(child, "crm:read").reason == "delegator_revoked"
        assert admin.deprovision("adm-parent") == 0
        assert admin.reload() == (engine.policy_version, engine.policy_version)


def test_suspend_resume_freeze_and_quota_status(server: ServerProcess) -> None:
    assert server.admin_socket is not None
    with AdminClient(server.admin_socket, timeout=TIMEOUT) as admin:
        bot = admin.provision("support-bot", on_behalf_of="user:alice")
        helper = admin.provision("research-subagent", on_behalf_of=bot)
        assert admin.suspend(bot, "investigating") == 2
        assert admin.check(helper, "tickets:read").reason == "suspended"
        assert admin.resume(bot.id) == 2
        assert admin.check(helper, "tickets:read").allowed
        with pytest.raises(charter.UnknownSubjectError):
            admin.suspend("agent-that-never-was")
        admin.freeze()
        try:
            assert admin.check("user:alice", "crm:read").reason == "frozen"
            assert admin.stats()["engine"]["frozen"] is True
        finally:
            admin.unfreeze()
        assert admin.check("user:alice", "crm:read").allowed
        levels = admin.quota_status(bot)
        assert levels[0]["subject"] == bot.id
        admin.deprovision(bot)


ADMIN_REQUESTS = [
    p.Provision(5, "support-bot"),
    p.Deprovision(5, 1),
    p.Suspend(5, "user:alice"),
    p.Resume(5, "user:alice"),
    p.Freeze(5),
    p.Unfreeze(5),
    p.Reload(5),
    p.RotateKeys(5),
    p.Revoke(5, agent="adm-never"),
]


def test_every_admin_operation_is_in_the_table() -> None:
    from charter.server.ops import OPERATIONS

    admin_ops = {op.request for op in OPERATIONS if op.admin_only}
    assert admin_ops == {type(r) for r in ADMIN_REQUESTS}


@pytest.mark.parametrize("request_", ADMIN_REQUESTS, ids=lambda r: r.__struct_config__.tag)
def test_admin_operations_are_refused_on_the_decision_socket(
    server: ServerProcess, request_: p.Request
) -> None:
    with RawConnection(server.socket) as conn:
        conn.send(request_, p.Ping(6))
        replies = conn.recv_until(6)
        assert isinstance(replies[0], p.ErrorReply)
        assert (replies[0].id, replies[0].code) == (5, "forbidden")
    with Client(server.socket, timeout=TIMEOUT) as client, pytest.raises(RemoteError) as info:
        client.call(request_)
    assert info.value.code == "forbidden"
    with Client(server.socket, timeout=TIMEOUT) as client:
        assert client.check("user:alice", "crm:read")  # nothing was frozen, suspended or reloaded


def test_admin_socket_refuses_a_uid_outside_the_allow_list(tmp: Path) -> None:
    other = os.geteuid() + 4242  # the allow-list names only a uid we are not
    with ServerProcess(EXAMPLE, tmp, "--admin-uid", str(other)) as srv:
        assert srv.admin_socket is not None
        with RawConnection(srv.admin_socket) as conn:
            reply = conn.recv()
            assert isinstance(reply, p.ErrorReply)
            assert (reply.id, reply.code) == (0, "forbidden")
            assert str(os.geteuid()) in reply.message
            assert conn.at_eof()
        with AdminClient(srv.admin_socket, timeout=TIMEOUT) as admin, pytest.raises(RemoteError):
            admin.provision("support-bot")
        with Client(srv.socket, timeout=TIMEOUT) as client:
            assert client.check("user:alice", "crm:read")
            assert client.stats()["connections"]["refused"] == 2
        assert srv.terminate() == 0


def test_socket_files_have_restrictive_modes(server: ServerProcess, tmp: Path) -> None:
    assert server.admin_socket is not None
    assert stat.S_IMODE(os.stat(server.socket).st_mode) == 0o660
    assert stat.S_IMODE(os.stat(server.admin_socket).st_mode) == 0o600
    with ServerProcess(EXAMPLE, tmp, "--socket-mode", "600", "--admin-socket-mode", "400") as srv:
        assert srv.admin_socket is not None
        assert stat.S_IMODE(os.stat(srv.socket).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(srv.admin_socket).st_mode) == 0o400
        assert srv.terminate() == 0
    assert not os.path.exists(srv.socket)


def test_a_second_server_refuses_a_socket_in_use(server: ServerProcess, tmp: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "charter", "serve", "--policy", str(EXAMPLE), "--socket", server.socket],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 2
    assert "another server is listening" in proc.stderr
    not_a_socket = tmp / "file"
    not_a_socket.write_text("keep me")
    proc = subprocess.run(
        [sys.executable, "-m", "charter", "serve", "--policy", str(EXAMPLE), "--socket", str(not_a_socket)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 2
    assert not_a_socket.read_text() == "keep me"


# ------------------------------------------------------------ authentication

AUDIENCE = "svc:charter-test"


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer.generate(issuer="test-issuer")


@pytest.fixture(scope="module")
def identity_server(workdir: Path, issuer: Issuer) -> Iterator[ServerProcess]:
    jwks = workdir / "jwks.json"
    jwks.write_text(json.dumps(issuer.jwks()))
    args = ("--trust-jwks", str(jwks), "--audience", AUDIENCE)
    with ServerProcess(EXAMPLE, workdir, *args, name="ident") as srv:
        yield srv


def test_naming_an_agent_requires_authentication(identity_server: ServerProcess, issuer: Issuer) -> None:
    holder = HolderKey.generate()
    mine = issuer.issue("support-bot", on_behalf_of="user:alice", audience=AUDIENCE, holder=holder)
    theirs = issuer.issue("support-bot", on_behalf_of="user:alice", audience=AUDIENCE)
    with Client(identity_server.socket, timeout=TIMEOUT) as client:
        bot = client.authenticate(mine, holder.prove(mine, audience=AUDIENCE))
        assert isinstance(bot, AgentInfo)
        assert (bot.template, bot.principal) == ("support-bot", "user:alice")
        assert client.check(bot.handle, "crm:read")
        assert client.check(bot.id, "crm:read")
        assert client.explain(bot, "crm:read").allowed
        assert client.check_batch([bot.handle] * 2, ["crm:read", "db:drop"]).tolist() == [True, False]
        assert client.check("user:alice", "crm:read")  # principals may be named by anyone

        other = client.check(None, "crm:read", token=theirs)  # a token authenticates one request...
        assert other.allowed
        with pytest.raises(RemoteError, match="another agent"):
            client.check(bot.id, "crm:read", token=theirs)
    with AdminClient(identity_server.admin_socket or "", timeout=TIMEOUT) as admin:
        their_agent = admin.call(p.Resolve(1, [issuer_subject(theirs)]))
        (their_handle,) = their_agent.value["handles"]  # type: ignore[attr-defined]
    with Client(identity_server.socket, timeout=TIMEOUT) as client:
        for subject in (their_handle, issuer_subject(theirs)):  # ... and does not join a session
            with pytest.raises(RemoteError) as info:
                client.check(subject, "crm:read")
            assert info.value.code == "unauthenticated"
        client.authenticate(mine, holder.prove(mine, audience=AUDIENCE))
        with pytest.raises(RemoteError, match="unauthenticated"):
            client.check_batch([bot.handle, their_handle], ["crm:read", "crm:read"])
        with pytest.raises(RemoteError, match="unauthenticated"):
            client.call(p.Resolve(2, [issuer_subject(theirs)]))


def issuer_subject(token: str) -> str:
    return str(decode_unverified(token)["claims"]["sub"])


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda iss, holder: ("not-a-token", None), "malformed"),
        (
            lambda iss, holder: (
                iss.issue("support-bot", on_behalf_of="user:alice", audience="svc:other"),
                None,
            ),
            "wrong_audience",
        ),
        (
            lambda iss, holder: (
                Issuer.generate(issuer="test-issuer").issue("support-bot", audience=AUDIENCE),
                None,
            ),
            "unknown_key",
        ),
        (lambda iss, holder: (iss.issue("support-bot", audience=AUDIENCE, holder=holder), None), "bad_proof"),
    ],
)
def test_refused_credentials(identity_server: ServerProcess, issuer: Issuer, make: Any, reason: str) -> None:
    token, proof = make(issuer, HolderKey.generate())
    with Client(identity_server.socket, timeout=TIMEOUT) as client:
        with pytest.raises(charter.AuthenticationError) as err:
            client.authenticate(token, proof)
        assert err.value.reason == reason
        with pytest.raises(charter.AuthenticationError):
            client.check(None, "crm:read", token=token)


def test_a_session_survives_reconnection(identity_server: ServerProcess, issuer: Issuer) -> None:
    token = issuer.issue("support-bot", on_behalf_of="user:alice", audience=AUDIENCE)
    with Client(identity_server.socket, timeout=TIMEOUT) as client:
        bot = client.authenticate(token)
        assert client.check(bot.handle, "crm:read")
        assert client._sock is not None
        client._sock.shutdown(socket.SHUT_RDWR)  # the connection dies under the client
        assert client.check(bot.handle, "crm:read")  # reconnected and re-authenticated


def test_rotate_keys_rereads_the_trusted_jwks(tmp: Path) -> None:
    issuer = Issuer.generate(issuer="rotating")
    jwks = tmp / "jwks.json"
    jwks.write_text(json.dumps(issuer.jwks()))
    with ServerProcess(EXAMPLE, tmp, "--trust-jwks", str(jwks)) as srv:
        assert srv.admin_socket is not None
        issuer.rotate()
        fresh = issuer.issue("support-bot", on_behalf_of="user:alice")
        with Client(srv.socket, timeout=TIMEOUT) as client:
            with pytest.raises(charter.AuthenticationError) as err:
                client.authenticate(fresh)
            assert err.value.reason == "unknown_key"
            jwks.write_text(json.dumps(issuer.jwks()))
            with AdminClient(srv.admin_socket, timeout=TIMEOUT) as admin:
                assert issuer.kid in admin.call(p.RotateKeys(1)).value["kids"]  # type: ignore[attr-defined]
            assert client.authenticate(fresh).template == "support-bot"
        assert srv.terminate() == 0


def test_trusted_uids_may_name_any_agent(tmp: Path) -> None:
    with ServerProcess(EXAMPLE, tmp, "--trusted-uid", str(os.geteuid())) as srv:
        assert srv.admin_socket is not None
        with AdminClient(srv.admin_socket, timeout=TIMEOUT) as admin:
            bot = admin.provision("support-bot", on_behalf_of="user:alice")
        with Client(srv.socket, timeout=TIMEOUT) as client:
            assert client.check(bot.handle, "crm:read")
            assert client.check_batch([bot.handle], ["crm:read"]).tolist() == [True]
        assert srv.terminate() == 0


# ------------------------------------------------------------ malformed input


@pytest.mark.parametrize(
    ("body", "rid", "code"),
    [
        (b"", 0, "malformed_frame"),
        (b"\xc1", 0, "malformed_frame"),
        (msgspec.msgpack.encode({"op": "check"}), 0, "malformed_frame"),
        (msgspec.msgpack.encode(["check"]), 0, "malformed_frame"),
        (msgspec.msgpack.encode([7, 1]), 0, "malformed_frame"),
        (msgspec.msgpack.encode(["check", 0, "user:alice", "crm:read"]), 0, "malformed_frame"),
        (msgspec.msgpack.encode(["check", -3, "user:alice", "crm:read"]), 0, "malformed_frame"),
        (msgspec.msgpack.encode(["teleport", 4]), 4, "unknown_operation"),
        (b"\x93\xa5check\x09\xa2\xff\xfe", 0, "malformed_frame"),  # invalid UTF-8
        (msgspec.msgpack.encode(["check", 5, "user:alice"]), 5, "invalid_request"),
        (msgspec.msgpack.encode(["check", 6, "user:alice", 42]), 6, "invalid_request"),
        (msgspec.msgpack.encode(["ping", 7, 1e9]), 7, "invalid_request"),
        (msgspec.msgpack.encode(["check", 8, "user:alice", "crm:read"]) + b"\x00", 0, "malformed_frame"),
        (b"\x91" * 100_000 + b"\xc0", 0, "malformed_frame"),  # nested past any recursion limit
        (
            b"\x95\xa5check\x09\xaauser:alice\xa8crm:read\xc0" + b"\x81\xa1a" * 100_000 + b"\xc0",
            0,
            "malformed_frame",
        ),
    ],
)
def test_malformed_frames_get_an_error_and_the_connection_lives_on(
    server: ServerProcess, body: bytes, rid: int, code: str
) -> None:
    with RawConnection(server.socket) as conn:
        conn.send_body(body)
        conn.send(p.Ping(99))
        first, *_ = replies = conn.recv_until(99)
        assert isinstance(first, p.ErrorReply)
        assert (first.id, first.code) == (rid, code)
        assert len(replies) == 2


def test_oversized_frame_closes_the_connection(server: ServerProcess) -> None:
    with RawConnection(server.socket) as conn:
        conn.send_raw(p.HEADER.pack(p.DEFAULT_MAX_FRAME + 1) + b"\0" * 16)
        reply = conn.recv()
        assert isinstance(reply, p.ErrorReply)
        assert (reply.id, reply.code) == (0, "frame_too_large")
        assert conn.at_eof()
    with Client(server.socket, timeout=TIMEOUT) as client:
        assert client.check("user:alice", "crm:read")


def test_a_frame_at_the_limit_is_read(tmp: Path) -> None:
    with ServerProcess(EXAMPLE, tmp, "--max-frame", "4096") as srv, RawConnection(srv.socket) as conn:
        body = msgspec.msgpack.encode(["check", 3, "user:alice", "crm:read", "x" * 4000])
        conn.send_body(body + b"\0" * (4096 - len(body)))  # trailing bytes: malformed, not too large
        reply = conn.recv()
        assert isinstance(reply, p.ErrorReply)
        assert reply.code == "malformed_frame"
        conn.send_body(b"\0" * 4097)
        reply = conn.recv()
        assert isinstance(reply, p.ErrorReply)
        assert reply.code == "frame_too_large"
        assert conn.at_eof()


@pytest.mark.parametrize("cut", [1, 3, 4, 10])
def test_a_client_vanishing_mid_frame(server: ServerProcess, cut: int) -> None:
    frame = p.frame(p.Check(1, "user:alice", "crm:read", "customers/42"))
    with RawConnection(server.socket) as conn:
        conn.send(p.Ping(2, 30.0))  # in flight when the client goes
        conn.send_raw(frame[:cut])
    with Client(server.socket, timeout=TIMEOUT) as client:
        assert client.check("user:alice", "crm:read")
    assert server.alive()


def test_a_slow_reader_is_throttled_not_buffered(server: ServerProcess) -> None:
    """A client that sends and never reads: the server stops reading it, so its sends block."""
    request = p.frame(p.Explain(1, "user:alice", "db:read", "customers/42"))
    with RawConnection(server.socket) as conn:
        conn.sock.setblocking(False)
        sent, blocked = 0, False
        while sent < 256 << 20:
            try:
                sent += conn.sock.send(request * 64)
            except BlockingIOError:
                blocked = True
                break
        assert blocked, f"the server kept reading {sent} bytes from a client that reads nothing"
        with Client(server.socket, timeout=TIMEOUT) as client:  # everyone else is still served
            assert client.check("user:alice", "crm:read")


def test_max_inflight_per_connection(tmp: Path) -> None:
    with ServerProcess(EXAMPLE, tmp, "--max-inflight", "2") as srv, RawConnection(srv.socket) as conn:
        conn.send(*(p.Ping(i, 0.01) for i in range(1, 21)), p.Check(21, "user:alice", "crm:read"))
        ids = set()
        while len(ids) < 21:
            reply = conn.recv()
            assert reply is not None
            assert not isinstance(reply, p.ErrorReply)
            ids.add(reply.id)
        assert ids == set(range(1, 22))


def test_idle_connections_are_closed(tmp: Path) -> None:
    with ServerProcess(EXAMPLE, tmp, "--idle-timeout", "0.2") as srv, RawConnection(srv.socket) as conn:
        conn.send(p.Ping(1))
        assert conn.recv() is not None
        assert conn.at_eof()  # returns once the server hangs up
        srv.wait_log("closing an idle decision connection")


# ------------------------------------------------------------ lifecycle


def test_sigterm_drains_in_flight_requests_and_exits_0(tmp: Path) -> None:
    with ServerProcess(EXAMPLE, tmp) as srv, RawConnection(srv.socket) as conn:
        conn.send(*(p.Ping(i, 0.3) for i in range(1, 11)), p.Ping(11))
        assert [r.id for r in conn.recv_until(11)] == [11]  # all 11 read: ten are in flight
        srv.signal(signal.SIGTERM)
        srv.wait_log("draining")
        rest = []
        while (reply := conn.recv()) is not None:
            rest.append(reply)
        assert sorted(r.id for r in rest) == list(range(1, 11))
        assert all(isinstance(r, p.Result) for r in rest)
        assert srv.proc.wait(timeout=TIMEOUT) == 0
    assert not os.path.exists(srv.socket)
    assert srv.admin_socket is not None
    assert not os.path.exists(srv.admin_socket)


def _grant(policy: dict[str, Any], role: str, action: str) -> dict[str, Any]:
    policy["roles"][role].setdefault("allow", []).append(action)
    return policy


def test_sighup_reloads_a_good_policy_and_keeps_the_old_one_on_a_bad(tmp: Path) -> None:
    base = charter.policy.from_file(EXAMPLE)
    doc = msgspec.to_builtins(base)
    path = write_policy(tmp / "policy.json", doc)
    with ServerProcess(path, tmp) as srv, Client(srv.socket, timeout=TIMEOUT) as client:
        v1 = client.ping()["policy_version"]
        assert not client.check("user:dave", "crm:write")
        write_policy(path, _grant(doc, "viewer", "crm:write"))
        mark = len(srv.log)
        srv.signal(signal.SIGHUP)
        srv.wait_log("reloaded", after=mark)
        v2 = client.ping()["policy_version"]
        assert v2 != v1
        assert client.check("user:dave", "crm:write")

        path.write_text('{"actions": ["bad"]}')
        mark = len(srv.log)
        srv.signal(signal.SIGHUP)
        line = srv.wait_log("reload of .* failed", after=mark)
        assert v2 in line
        assert client.ping()["policy_version"] == v2
        assert client.check("user:dave", "crm:write")
        stats = client.stats()
        assert stats["policy_reloads"] == {"ok": 1, "failed": 1}
        assert "bad" in stats["last_reload_error"]
        assert srv.admin_socket is not None
        with AdminClient(srv.admin_socket, timeout=TIMEOUT) as admin, pytest.raises(charter.PolicyError):
            admin.reload()
        assert srv.terminate() == 0


# ------------------------------------------------------------ workers


def test_workers_share_the_socket_and_replicate_admin_changes(tmp: Path) -> None:
    doc = msgspec.to_builtins(charter.policy.from_file(EXAMPLE))
    path = write_policy(tmp / "policy.json", doc)
    args = ("--workers", "2", "--trusted-uid", str(os.geteuid()))
    with ServerProcess(path, tmp, *args) as srv:
        assert srv.admin_socket is not None
        with AdminClient(srv.admin_socket, timeout=TIMEOUT) as admin:
            bots = [admin.provision("support-bot", on_behalf_of="user:alice") for _ in range(5)]
            sub = admin.provision("research-subagent", on_behalf_of=bots[0])
            assert admin.deprovision(bots[1]) == 1
            assert admin.suspend(bots[2]) == 1
        ids = [b.id for b in bots] + [sub.id]

        async def ask(n: int) -> list[tuple[int, list[bool]]]:
            clients = [AsyncClient(srv.socket, timeout=TIMEOUT) for _ in range(n)]
            out = []
            try:
                for c in clients:
                    handles = await c.resolve(ids)  # handles are per worker: resolved on this connection
                    batch = await c.check_batch(handles, ["crm:read"] * len(handles))
                    assert (await c.check(sub.id, "tickets:read")).allowed
                    with pytest.raises(RemoteError, match="unauthenticated"):
                        await c.check(bots[0].handle + 1_000_000, "tickets:read")  # not given out here
                    stats = await c.stats()
                    out.append((len(stats["per_worker"]), batch.tolist()))
            finally:
                for c in clients:
                    await c.close()
            return out

        results = asyncio.run(ask(16))
        assert all(r == (2, [True, False, False, True, True, True]) for r in results), results
        with Client(srv.socket, timeout=TIMEOUT) as client:
            stats = client.stats()
        assert stats["workers"] == 2
        per_worker = {w["worker"]: w for w in stats["per_worker"]}
        assert set(per_worker) == {0, 1}
        assert stats["decisions"]["total"] >= 16 * 7

        with AdminClient(srv.admin_socket, timeout=TIMEOUT) as admin:
            admin.freeze()  # acknowledged by every worker before it returns
            with Client(srv.socket, timeout=TIMEOUT) as client:
                assert client.check("user:alice", "crm:read").reason == "frozen"
            admin.unfreeze()

        write_policy(path, _grant(doc, "viewer", "crm:write"))
        mark = len(srv.log)
        srv.signal(signal.SIGHUP)
        srv.wait_log("reloaded", after=mark)
        with AdminClient(srv.admin_socket, timeout=TIMEOUT) as admin:
            new = admin.ping()["policy_version"]
            stats = admin.stats()
        assert {w["policy_version"] for w in stats["per_worker"]} == {new}
        assert srv.terminate() == 0
        srv.wait_log("worker 0.*draining")


# ------------------------------------------------------------ clients and the CLI


def test_unreachable_server_raises_server_unavailable(tmp: Path) -> None:
    with Client(str(tmp / "nobody.sock"), timeout=1.0) as client, pytest.raises(charter.ServerUnavailable):
        client.check("user:alice", "crm:read")

    async def run() -> None:
        async with AsyncClient(str(tmp / "nobody.sock"), timeout=1.0) as client:
            with pytest.raises(charter.ServerUnavailable):
                await client.check("user:alice", "crm:read")

    asyncio.run(run())
    assert issubclass(charter.ServerUnavailable, ConnectionError)


def test_timeouts_raise_server_timeout(server: ServerProcess) -> None:
    with Client(server.socket, timeout=0.2) as client:
        with pytest.raises(ServerTimeout):
            client.ping(delay=30)
        assert client.ping()["policy_version"]  # a fresh connection after the timeout

    async def run() -> None:
        async with AsyncClient(server.socket, timeout=TIMEOUT) as client:
            with pytest.raises(ServerTimeout):
                await client.ping(delay=30, timeout=0.2)
            assert (await client.ping())["policy_version"]

    asyncio.run(run())


def test_clients_reconnect_to_a_restarted_server(tmp: Path) -> None:
    with ServerProcess(EXAMPLE, tmp) as first:
        client = Client(first.socket, timeout=TIMEOUT)
        aclient = AsyncAdminClient(first.admin_socket or "", timeout=TIMEOUT)
        loop = asyncio.new_event_loop()
        try:
            assert client.check("user:alice", "crm:read")
            loop.run_until_complete(aclient.ping())
            assert first.terminate() == 0
            with pytest.raises(charter.ServerUnavailable):
                client.check("user:alice", "crm:read")
            with ServerProcess(EXAMPLE, tmp) as second:
                assert client.check("user:alice", "crm:read")
                # an admin change is never resent: a call that changes nothing reconnects first
                with pytest.raises(charter.ServerUnavailable):
                    loop.run_until_complete(aclient.provision("support-bot"))
                loop.run_until_complete(aclient.ping())
                assert loop.run_until_complete(aclient.provision("support-bot")).template == "support-bot"
                with AdminClient(second.admin_socket or "", timeout=TIMEOUT) as admin:
                    admin.ping()
                    assert second.terminate() == 0
                    with pytest.raises(charter.ServerUnavailable):
                        admin.provision("support-bot")  # nobody listens: refused at connect
                assert second.terminate() == 0
        finally:
            client.close()
            loop.run_until_complete(aclient.close())
            loop.close()


def test_charter_stats_formats(server: ServerProcess) -> None:
    def stats(fmt: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "charter", "stats", "--socket", server.socket, "--format", fmt],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=True,
        )
        return proc.stdout

    data = json.loads(stats("json"))
    assert data["policy_version"] == charter.Engine.example().policy_version
    assert {"decisions", "connections", "errors", "requests", "audit_backlog"} <= data.keys()
    text = stats("text")
    assert text.startswith(f"policy {data['policy_version']}")
    metrics = stats("openmetrics")
    assert metrics.endswith("# EOF\n")
    assert f'charter_policy_info{{version="{data["policy_version"]}"}} 1' in metrics
    assert "# TYPE charter_decisions counter" in metrics
    samples = [line for line in metrics.splitlines() if line and not line.startswith("#")]
    for line in samples:
        name, value = line.rsplit(" ", 1)
        assert name.startswith("charter_")
        float(value)
    assert openmetrics(data).splitlines()[:4] == metrics.splitlines()[:4]


def test_charter_stats_without_a_server(tmp: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "charter", "stats", "--socket", str(tmp / "none.sock")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 2
    assert "cannot connect" in proc.stderr


# ------------------------------------------------------------ pieces, in process


def test_frame_splitter_reassembles_any_split() -> None:
    frames = [p.frame(p.Ping(i, 0.0)) for i in range(1, 6)] + [p.frame(p.Check(9, "u", "a:b", "x" * 5000))]
    stream = b"".join(frames)
    for cut in (1, 3, 4, 5, 17, 4096):
        splitter = p.FrameSplitter(1 << 20)
        bodies = []
        for i in range(0, len(stream), cut):
            bodies += [bytes(b) for b in splitter.feed(stream[i : i + cut])]
        assert bodies == [f[4:] for f in frames]
    with pytest.raises(ValueError, match="exceeds"):
        p.FrameSplitter(10).feed(p.HEADER.pack(11))


def test_openmetrics_escapes_and_ends_with_eof() -> None:
    from charter.server.metrics import Stats

    stats = Stats(charter.REASONS)
    stats.decided(0)
    stats.decided_batch(np.array([1, 1, 2], dtype=np.uint8))
    snap = stats.snapshot(policy_version='v"1\\', engine={"agents": 3}, workers=1)
    text = openmetrics(snap)
    assert 'charter_policy_info{version="v\\"1\\\\"} 1' in text
    assert 'charter_decisions_total{reason="denied_by_rule",allowed="false"} 2' in text
    assert "charter_agents 3" in text
    assert text.endswith("# EOF\n")
    assert snap["decisions"] == {
        "total": 4,
        "allowed": 1,
        "denied": 3,
        "per_second": 0.0,
        "by_reason": {"granted": 1, "denied_by_rule": 2, "no_grant": 1},
    }


def test_merge_sums_the_workers() -> None:
    from charter.server.metrics import Stats, merge

    parts = []
    for worker in (0, 1):
        stats = Stats(charter.REASONS, worker=worker)
        stats.decided(0)
        stats.connections["decision"] = 2
        stats.errors["malformed_frame"] = worker
        parts.append(stats.snapshot(policy_version="v", engine={"audit_backlog": 5}, workers=2))
    own = Stats(charter.REASONS).snapshot(policy_version="v", engine={}, workers=2)
    total = merge(own, parts)
    assert total["decisions"]["total"] == 2
    assert total["connections"]["decision"] == 4
    assert total["errors"] == {"malformed_frame": 1}
    assert total["audit_backlog"] == 10
    assert [w["worker"] for w in total["per_worker"]] == [0, 1]
