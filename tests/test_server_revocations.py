"""Revocation through the server: the admin `revoke` operation, and following a log other processes append to.

A server started with `--revocations LOG` re-reads the log every
`--revocations-poll` seconds; the tests wait for its log line saying it read
the new records (an event), then check that the revoked agent is refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import charter
from charter import cli
from charter.identity import Issuer
from charter.policy import example_path
from charter.server import AdminClient, AsyncAdminClient, Client, RemoteError
from charter.tokens import decode_unverified
from server_helpers import TIMEOUT, ServerProcess, short_tmpdir

EXAMPLE = example_path()


@pytest.fixture
def tmp() -> Iterator[Path]:
    with short_tmpdir() as d:
        yield d


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer.generate(issuer="revoking-issuer")


def identity_args(tmp: Path, issuer: Issuer, *extra: str) -> tuple[str, ...]:
    jwks = tmp / "jwks.json"
    jwks.write_text(json.dumps(issuer.jwks()))
    return ("--trust-jwks", str(jwks), "--revocations", str(tmp / "revoked.log"), *extra)


def subject_of(token: str) -> str:
    return str(decode_unverified(token)["claims"]["sub"])


def test_the_admin_socket_revokes(tmp: Path, issuer: Issuer) -> None:
    with ServerProcess(EXAMPLE, tmp, *identity_args(tmp, issuer)) as srv:
        assert srv.admin_socket is not None
        parent = issuer.issue("support-bot", on_behalf_of="user:alice")
        child = issuer.exchange(parent, template="research-subagent")
        other = issuer.issue("support-bot", on_behalf_of="user:alice")
        with Client(srv.socket, timeout=TIMEOUT) as client, AdminClient(srv.admin_socket) as admin:
            agents = [client.authenticate(t) for t in (parent, child, other)]
            assert admin.revoke(parent, reason="leaked") == 2  # the agent and its sub-agent
            assert client.check(agents[1], "tickets:read").reason == "delegator_revoked"
            with pytest.raises(charter.AuthenticationError) as err:
                client.authenticate(child)
            assert err.value.reason == "revoked"
            assert admin.revoke(agent=agents[2]) == 1  # by the agent (its handle, on the admin socket)
            assert admin.revoke(jti="some-jti") == 0
            assert admin.revoke(principal="user:bob") == 0
            with pytest.raises(charter.InvalidRequestError, match="revoke what"):
                admin.revoke()
            stranger = Issuer.generate(issuer="stranger").issue("support-bot")
            with pytest.raises(charter.AuthenticationError):
                admin.revoke(stranger)
        records = [json.loads(line) for line in (tmp / "revoked.log").read_text().splitlines()]
        assert [r["kind"] for r in records] == ["jti", "agent", "agent", "jti", "principal"]
        assert records[0]["reason"] == "leaked"
        assert srv.terminate() == 0

    with ServerProcess(EXAMPLE, tmp, *identity_args(tmp, issuer)) as again, Client(again.socket) as client:
        for token in (parent, child, other):  # a restarted server reads the log before serving
            with pytest.raises(charter.AuthenticationError):
                client.authenticate(token)


def test_a_revocation_from_a_shell_reaches_a_running_server(
    tmp: Path, issuer: Issuer, capsys: pytest.CaptureFixture[str]
) -> None:
    args = identity_args(tmp, issuer, "--revocations-poll", "0.05")
    log = str(tmp / "revoked.log")
    with ServerProcess(EXAMPLE, tmp, *args) as srv, Client(srv.socket, timeout=TIMEOUT) as client:
        tokens = [issuer.issue("support-bot", on_behalf_of="user:alice") for _ in range(2)]
        agents = [client.authenticate(t) for t in tokens]
        assert client.check(agents[0], "tickets:read")
        mark = len(srv.log)
        jwks = str(tmp / "jwks.json")
        assert cli.main(["token", "revoke", tokens[0], "--jwks", jwks, "--revocations", log]) == 0
        srv.wait_log(r"revocation log: \d+ new record\(s\), 1 agent\(s\) retired", after=mark)
        assert client.check(agents[0], "tickets:read").reason == "revoked"
        assert client.check(agents[1], "tickets:read")

        mark = len(srv.log)
        assert cli.main(["token", "revoke", "--principal", "user:alice", "--revocations", log]) == 0
        srv.wait_log(r"revocation log: .* 1 agent\(s\) retired", after=mark)  # as `revoke` would here
        assert client.check(agents[1], "tickets:read").reason == "principal_removed"
        capsys.readouterr()
        assert srv.terminate() == 0


def test_every_worker_follows_the_log_and_applies_admin_revocations(tmp: Path, issuer: Issuer) -> None:
    args = identity_args(tmp, issuer, "--workers", "2", "--revocations-poll", "0.05")
    with ServerProcess(EXAMPLE, tmp, *args) as srv:
        assert srv.admin_socket is not None
        tokens = [issuer.issue("support-bot", on_behalf_of="user:alice") for _ in range(4)]
        clients = [Client(srv.socket, timeout=TIMEOUT) for _ in range(8)]
        try:
            agents = [[c.authenticate(t) for t in tokens] for c in clients]  # on whichever worker
            with AdminClient(srv.admin_socket, timeout=TIMEOUT) as admin:
                assert admin.revoke(tokens[0]) == 1  # applied on every worker before the reply
            for c, mine in zip(clients, agents, strict=True):
                assert c.check(mine[0], "tickets:read").reason == "revoked"
                assert c.check(mine[1], "tickets:read")

            mark = len(srv.log)
            log = str(tmp / "revoked.log")
            assert cli.main(["token", "revoke", "--agent", subject_of(tokens[1]), "--revocations", log]) == 0
            for worker in ("worker 0", "worker 1"):
                srv.wait_log(rf"charter serve {worker}\[\d+\]: INFO revocation log", after=mark)
            for c, mine in zip(clients, agents, strict=True):
                assert c.check(mine[1], "tickets:read").reason == "revoked"
                assert c.check(mine[2], "tickets:read")
        finally:
            for c in clients:
                c.close()
        assert srv.terminate() == 0


def test_an_unreadable_log_stops_every_decision_until_it_reads_again(tmp: Path, issuer: Issuer) -> None:
    args = identity_args(tmp, issuer, "--revocations-poll", "0.05")
    log = tmp / "revoked.log"
    with ServerProcess(EXAMPLE, tmp, *args) as srv, Client(srv.socket, timeout=TIMEOUT) as client:
        assert client.check("user:alice", "tickets:read")
        good = log.read_bytes()
        mark = len(srv.log)
        with log.open("ab") as f:
            f.write(b"this is not a record\n")
        srv.wait_log("cannot read the revocation log, denying every decision", after=mark)
        assert client.check("user:alice", "tickets:read").reason == "frozen"
        assert srv.admin_socket is not None
        with AdminClient(srv.admin_socket, timeout=TIMEOUT) as admin:
            mark = len(srv.log)
            admin.unfreeze()  # an operator's unfreeze does not outlast the next look at the log
            srv.wait_log("still unreadable: frozen again", after=mark)
            assert client.check("user:alice", "tickets:read").reason == "frozen"
        mark = len(srv.log)
        os.truncate(log, len(good))
        srv.wait_log("the revocation log reads again", after=mark)
        assert client.check("user:alice", "tickets:read")
        assert srv.terminate() == 0


def test_revoke_on_the_decision_socket_is_forbidden_and_async_admin_revokes(
    tmp: Path, issuer: Issuer
) -> None:
    import asyncio

    with ServerProcess(EXAMPLE, tmp, *identity_args(tmp, issuer)) as srv:
        assert srv.admin_socket is not None
        token = issuer.issue("support-bot", on_behalf_of="user:alice")
        with Client(srv.socket, timeout=TIMEOUT) as client:
            with pytest.raises(RemoteError, match="admin socket only"):
                client.call(charter.server.protocol.Revoke(1, token))
            client.authenticate(token)

        async def revoke() -> int:
            async with AsyncAdminClient(str(srv.admin_socket), timeout=TIMEOUT) as admin:
                return await admin.revoke(token)

        assert asyncio.run(revoke()) == 1
        assert srv.terminate() == 0
