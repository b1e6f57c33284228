"""The clients' operation tables: one list of operations, the same signatures on both kinds of client.

The blocking and asyncio clients are built from client_ops.py's tables, so
this checks what the tables promise: every operation on both, with the
builder's signature; admin operations only on admin clients; a per-call
`timeout` on both.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

from charter.policy import example_path
from charter.server import AdminClient, AsyncAdminClient, AsyncClient, Client, ServerTimeout
from charter.server.client_ops import AdminOps, DecisionOps, Op
from server_helpers import TIMEOUT, ServerProcess, short_tmpdir


def operations(table: type) -> list[str]:
    return [name for name, value in vars(table).items() if isinstance(value, Op)]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with short_tmpdir() as d, ServerProcess(example_path(), d) as srv:
        yield srv


def test_both_clients_have_every_operation_with_one_signature(tmp_path: Path) -> None:
    path = str(tmp_path / "nowhere.sock")  # nothing connects until a call
    blocking, awaiting = AdminClient(path), AsyncAdminClient(path)
    decision, admin = operations(DecisionOps), operations(AdminOps)
    assert {"check", "check_batch", "authenticate", "explain", "acquire", "release", "stats"} <= set(decision)
    assert {"provision", "deprovision", "suspend", "resume", "reload", "revoke", "rotate_keys"} <= set(admin)
    for name in decision + admin:
        sync_method, async_method = getattr(blocking, name), getattr(awaiting, name)
        assert inspect.signature(sync_method) == inspect.signature(async_method), name
        assert not inspect.iscoroutinefunction(sync_method), name
        assert inspect.iscoroutinefunction(async_method), name
        assert sync_method.__doc__, name
        assert getattr(blocking, name) is sync_method  # bound once, then found on the instance
    assert "subject" in inspect.signature(blocking.check).parameters
    for plain in (Client(path), AsyncClient(path)):
        assert all(hasattr(plain, name) for name in decision)
        assert not any(hasattr(plain, name) for name in admin)


def test_a_call_may_override_the_timeout(server: ServerProcess) -> None:
    with Client(server.socket, timeout=TIMEOUT) as client:
        with pytest.raises(ServerTimeout, match=r"within 0\.2 s"):
            client.ping(delay=30, timeout=0.2)
        assert client.ping()["policy_version"]

    async def run() -> None:
        async with AsyncClient(server.socket, timeout=TIMEOUT) as client:
            with pytest.raises(ServerTimeout, match=r"within 0\.2 s"):
                await client.ping(delay=30, timeout=0.2)
            assert (await client.ping())["policy_version"]

    asyncio.run(run())
