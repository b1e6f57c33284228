"""`acquire` / `release` over the socket: in-flight slots held by a connection, given back however it ends.

The policy caps every `bot` agent at two requests in flight. Each test
authenticates a bot of its own (a fresh token, so fresh counters) and counts
slots through the server's answers, never time.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import charter
from charter.identity import Issuer
from charter.server import AdminClient, AgentInfo, AsyncClient, Client, RemoteError, RemoteLease
from charter.server import protocol as p
from server_helpers import TIMEOUT, RawConnection, ServerProcess, short_tmpdir, write_policy

POLICY: dict[str, Any] = {
    "actions": ["tool:run", "tool:look"],
    "quotas": {"pair": {"max_in_flight": 2}},
    "roles": {"user": {"allow": ["tool:run", "tool:look"]}},
    "principals": {"user:a": {"roles": ["user"]}},
    "templates": {"bot": {"roles": ["user"], "quota": "pair"}},
}


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with short_tmpdir() as d:
        yield d


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer.generate(issuer="lease-issuer")


@pytest.fixture(scope="module")
def server(workdir: Path, issuer: Issuer) -> Iterator[ServerProcess]:
    policy = write_policy(workdir / "policy.json", POLICY)
    jwks = workdir / "jwks.json"
    jwks.write_text(json.dumps(issuer.jwks()))
    with ServerProcess(policy, workdir, "--trust-jwks", str(jwks), "--max-leases", "3") as srv:
        yield srv


def bot(client: Client, issuer: Issuer) -> AgentInfo:
    return client.authenticate(issuer.issue("bot", on_behalf_of="user:a"))


def hang_up(sock: socket.socket) -> None:
    """Close our side and wait until the server has closed its own (so it has run `connection_lost`)."""
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(TIMEOUT)
    while sock.recv(65536):
        pass
    sock.close()


def test_a_lease_holds_a_slot_until_released(server: ServerProcess, issuer: Issuer) -> None:
    token = issuer.issue("bot", on_behalf_of="user:a")
    with Client(server.socket, timeout=TIMEOUT) as client:
        agent = client.authenticate(token)
        first = client.acquire(agent, "tool:run")
        second = client.acquire(agent.id, "tool:run")
        assert isinstance(first, RemoteLease)
        assert first
        assert second
        assert first.lease != second.lease
        third = client.acquire(agent, "tool:run")
        assert not third
        assert third.decision.reason == "concurrency_limit"
        assert third.lease == 0
        assert client.check(agent, "tool:run")  # a plain check takes no slot
        first.release()
        first.release()  # twice is harmless
        with client.acquire(agent, "tool:look") as again:
            assert again
            assert not client.acquire(agent, "tool:run")
        assert not again.held
        second.release()
        held = [client.acquire(agent, "tool:run") for _ in range(2)]
        assert all(held)
        assert client._sock is not None
        hang_up(client._sock)
    with Client(server.socket, timeout=TIMEOUT) as other:  # the closed connection gave its slots back
        other.authenticate(token)
        assert other.acquire(agent, "tool:run")
        assert other.acquire(agent, "tool:run")


def test_a_closed_connection_s_leases_are_released(server: ServerProcess, issuer: Issuer) -> None:
    assert server.admin_socket is not None
    token = issuer.issue("bot", on_behalf_of="user:a")
    with RawConnection(server.socket) as conn:
        conn.send(p.Authenticate(1, token))
        (reply,) = conn.recv_until(1)
        assert isinstance(reply, p.Result)
        agent = reply.value["id"]
        conn.send(
            p.Acquire(2, agent, "tool:run"), p.Acquire(3, agent, "tool:run"), p.Acquire(4, agent, "tool:run")
        )
        replies = conn.recv_until(4)
        assert [type(r) for r in replies] == [p.LeaseReply] * 3
        assert [r.allowed for r in replies] == [True, True, False]  # type: ignore[attr-defined]
        hang_up(conn.sock)  # vanishes with two slots held
    with AdminClient(server.admin_socket, timeout=TIMEOUT) as admin:
        first, second = admin.acquire(agent, "tool:run"), admin.acquire(agent, "tool:run")
        assert first
        assert second


def test_release_names_a_lease_of_this_connection(server: ServerProcess, issuer: Issuer) -> None:
    token = issuer.issue("bot", on_behalf_of="user:a")
    with RawConnection(server.socket) as mine, RawConnection(server.socket) as theirs:
        mine.send(p.Acquire(1, None, "tool:run", None, token))
        (held,) = mine.recv_until(1)
        assert isinstance(held, p.LeaseReply)
        assert held.allowed
        theirs.send(p.Release(1, held.lease))
        (refused,) = theirs.recv_until(1)
        assert isinstance(refused, p.ErrorReply)
        assert (refused.code, refused.message) == (
            "invalid_request",
            f"no lease {held.lease} on this connection",
        )
        mine.send(p.Release(2, held.lease), p.Release(3, held.lease))
        ok, again = mine.recv_until(3)
        assert isinstance(ok, p.Result)
        assert ok.value == {"released": True}
        assert isinstance(again, p.ErrorReply)
        assert again.code == "invalid_request"


def test_leases_per_connection_are_bounded(server: ServerProcess, issuer: Issuer) -> None:
    with Client(server.socket, timeout=TIMEOUT) as client:
        one, two = bot(client, issuer), bot(client, issuer)
        held = [client.acquire(one, "tool:look"), client.acquire(one, "tool:look")]
        assert all(held)
        assert not client.acquire(one, "tool:look")  # denied: nothing held, not counted
        held.append(client.acquire(two, "tool:look"))  # --max-leases 3: the last one
        assert held[-1]
        with pytest.raises(charter.CapacityError, match="holds 3 leases"):
            client.acquire(two, "tool:look")
        held[0].release()
        assert client.acquire(two, "tool:look")


def test_acquire_names_only_authenticated_agents(server: ServerProcess, issuer: Issuer) -> None:
    assert server.admin_socket is not None
    with AdminClient(server.admin_socket, timeout=TIMEOUT) as admin:
        stranger = admin.provision("bot", on_behalf_of="user:a")
    token = issuer.issue("bot", on_behalf_of="user:a")
    with Client(server.socket, timeout=TIMEOUT) as client:
        with pytest.raises(RemoteError, match="unauthenticated"):
            client.acquire(stranger.id, "tool:run")
        with client.acquire(None, "tool:run", token=token) as by_token:
            assert by_token
        agent = client.authenticate(token)
        with client.acquire(agent, "tool:run") as a, client.acquire(agent.id, "tool:run") as b:
            assert a
            assert b
            assert client.acquire(agent, "tool:run").decision.reason == "concurrency_limit"


def test_a_lease_from_a_dead_connection_is_not_released_on_the_new_one(
    server: ServerProcess, issuer: Issuer
) -> None:
    with Client(server.socket, timeout=TIMEOUT) as client:
        agent = bot(client, issuer)
        old = client.acquire(agent, "tool:run")
        assert old
        assert old.held
        assert client._sock is not None
        hang_up(client._sock)  # the connection dies, and the server releases `old`
        client._sock = None
        fresh = [client.acquire(agent, "tool:run") for _ in range(2)]  # reconnected, re-authenticated
        assert all(fresh)
        assert not old.held
        old.release()  # a no-op: its id means nothing on this connection
        assert not client.acquire(agent, "tool:run")  # both fresh leases are still held
        for lease in fresh:
            lease.release()
        assert client.acquire(agent, "tool:run")


def test_the_async_client_acquires_and_releases(server: ServerProcess, issuer: Issuer) -> None:
    token = issuer.issue("bot", on_behalf_of="user:a")

    async def run() -> None:
        async with AsyncClient(server.socket, timeout=TIMEOUT) as client:
            agent = await client.authenticate(token)
            leases = await asyncio.gather(*(client.acquire(agent, "tool:run") for _ in range(3)))
            assert sorted(bool(lease) for lease in leases) == [False, True, True]
            for lease in leases:
                await lease.release()
            async with await client.acquire(agent, "tool:run") as lease:
                assert lease
                assert lease.held
            assert not lease.held
            assert await client.acquire(agent, "tool:run")
            assert await client.acquire(agent, "tool:run")
            assert not await client.acquire(agent, "tool:run")

    asyncio.run(run())
