"""The decision server's audit trail: every answered decision recorded, nothing lost on SIGTERM."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from charter import audit
from charter.audit.reader import DecisionRecord
from charter.server import AdminClient, Client
from server_helpers import TIMEOUT, ServerProcess, short_tmpdir, write_policy

POLICY: dict[str, Any] = {
    "actions": ["doc:read", "doc:write"],
    "roles": {"reader": {"allow": ["doc:read"]}},
    "principals": {"user:ann": {"roles": ["reader"]}},
    "templates": {"bot": {"roles": ["reader"]}},
}


@pytest.fixture
def tmp() -> Iterator[Path]:
    with short_tmpdir() as path:
        yield path


def logged(directory: Path) -> dict[str, DecisionRecord]:
    return {r.decision_id: r for r in audit.read(directory) if isinstance(r, DecisionRecord)}


def test_every_answered_decision_survives_sigterm(tmp: Path) -> None:
    policy = write_policy(tmp / "p.json", POLICY)
    answered: list[tuple[str, bool, str]] = []
    with ServerProcess(policy, tmp, "--audit-dir", str(tmp / "audit"), "--trusted-uid", "0") as srv:
        with AdminClient(str(srv.admin_socket)) as admin:
            bot = admin.provision("bot", on_behalf_of="user:ann")
        stop = threading.Event()

        def load() -> None:
            with Client(srv.socket, timeout=TIMEOUT) as client:
                i = 0
                while not stop.is_set() and i < 20_000:
                    d = client.check(bot.handle, "doc:read" if i % 3 else "doc:write")
                    assert d.decision_id is not None
                    answered.append((d.decision_id, d.allowed, d.reason))
                    i += 1

        worker = threading.Thread(target=load)
        worker.start()
        while len(answered) < 500 and worker.is_alive():
            threading.Event().wait(0.01)
        srv.signal(signal.SIGTERM)  # mid-load: drain, then flush the log
        stop.set()
        worker.join(TIMEOUT)
        assert srv.terminate() == 0
    records = logged(tmp / "audit")
    assert answered
    for decision_id, allowed, reason in answered:
        assert records[decision_id].allowed == allowed
        assert records[decision_id].reason == reason
    report = audit.verify(tmp / "audit")
    assert report.ok, report
    assert not report.warnings, report  # a clean stop leaves no torn batch


def test_each_worker_audits_to_its_own_directory(tmp: Path) -> None:
    policy = write_policy(tmp / "p.json", POLICY)
    ids = []
    with ServerProcess(policy, tmp, "--audit-dir", str(tmp / "audit"), "--workers", "2") as srv:
        for _ in range(8):
            with Client(srv.socket, timeout=TIMEOUT) as client:
                ids += [client.check("user:ann", "doc:read").decision_id for _ in range(10)]
        assert srv.terminate() == 0
    assert sorted(p.name for p in (tmp / "audit").iterdir()) == ["supervisor", "worker-0", "worker-1"]
    records = logged(tmp / "audit")
    assert set(ids) <= set(records)
    assert audit.verify(tmp / "audit").ok


def test_policy_audit_table_is_relative_to_the_policy_file(tmp: Path) -> None:
    policy = write_policy(tmp / "p.json", {**POLICY, "audit": {"directory": "log", "fsync": "never"}})
    with ServerProcess(policy, tmp) as srv, Client(srv.socket, timeout=TIMEOUT) as client:
        decision = client.check("user:ann", "doc:write")
        assert srv.terminate() == 0
    record = logged(tmp / "log")[str(decision.decision_id)]
    assert (record.principal, record.reason) == ("user:ann", "no_grant")


def test_without_auditing_replies_carry_no_id(tmp: Path) -> None:
    policy = write_policy(tmp / "p.json", POLICY)
    with ServerProcess(policy, tmp) as srv, Client(srv.socket, timeout=TIMEOUT) as client:
        assert client.check("user:ann", "doc:read").decision_id is None


def test_stats_report_the_audit_backlog(tmp: Path) -> None:
    from charter.server.metrics import openmetrics

    policy = write_policy(tmp / "p.json", POLICY)
    with ServerProcess(policy, tmp, "--audit-dir", str(tmp / "audit")) as srv:
        with Client(srv.socket, timeout=TIMEOUT) as client:
            client.check("user:ann", "doc:read")
        with AdminClient(str(srv.admin_socket)) as admin:
            stats = admin.stats()
        assert isinstance(stats["audit_backlog"], int)
        assert stats["engine"]["audit"]["failing"] is False
        text = openmetrics(stats)
        assert "charter_audit_backlog" in text
        assert "charter_audit_records_total" in text
