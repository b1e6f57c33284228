"""Audit logs across hosts: each file names its host, and several directories read as one, by time."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import charter
from charter import audit, cli
from charter.audit import files
from charter.errors import InvalidRequestError


def host_log(directory: Path, host: str | None, agent_ids: list[str], clock: charter.ManualClock) -> None:
    """Decisions made by a server on `host`, one per agent id, a second apart on `clock`."""
    engine = charter.Engine.example(clock=clock)
    engine.audit_to(directory, fsync="never", host=host)
    for agent_id in agent_ids:
        engine.provision("support-bot", on_behalf_of="user:alice", agent_id=agent_id)
        engine.check(agent_id, "tickets:read")
        clock.advance(1.0)
    engine.close()


def test_every_file_and_record_names_its_host(tmp_path: Path) -> None:
    clock = charter.ManualClock(1_700_000_000)
    host_log(tmp_path / "a", "host-a", ["a1"], clock)
    host_log(tmp_path / "d", None, ["d1"], clock)
    header = (tmp_path / "a" / files.log_files(tmp_path / "a")[0][2].name).read_text().splitlines()[0]
    assert '"host":"host-a"' in header
    everything = list(audit.read(tmp_path / "a", kind=None))  # events and the decision
    assert len(everything) > 1
    assert {r.host for r in everything} == {"host-a"}
    assert {r.host for r in audit.read(tmp_path / "d")} == {socket.gethostname()}
    assert audit.verify(tmp_path / "a").ok


def test_several_directories_merge_by_time(tmp_path: Path) -> None:
    clock_a, clock_b = charter.ManualClock(1_700_000_000), charter.ManualClock(1_700_000_000.5)
    host_log(tmp_path / "a", "host-a", ["a1", "a2", "a3"], clock_a)
    host_log(tmp_path / "b", "host-b", ["b1", "b2", "b3"], clock_b)
    records = list(audit.read([tmp_path / "a", tmp_path / "b"]))
    assert [r.agent for r in records] == ["a1", "b1", "a2", "b2", "a3", "b3"]  # type: ignore[union-attr]
    assert [r.host for r in records] == ["host-a", "host-b"] * 3
    assert [r.ts for r in records] == sorted(r.ts for r in records)
    only_b = list(audit.read([tmp_path / "a", tmp_path / "b"], agent="b2"))
    assert [(r.host, r.agent) for r in only_b] == [("host-b", "b2")]  # type: ignore[union-attr]
    columns = audit.read_columns([str(tmp_path / "a"), str(tmp_path / "b")])
    assert list(columns["agent"]) == ["a1", "b1", "a2", "b2", "a3", "b3"]
    with pytest.raises(InvalidRequestError):
        list(audit.read([]))


def test_cli_query_takes_several_directories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clock_a, clock_b = charter.ManualClock(1_700_000_000), charter.ManualClock(1_700_000_000.5)
    host_log(tmp_path / "a", "host-a", ["a1", "a2"], clock_a)
    host_log(tmp_path / "b", "host-b", ["b1"], clock_b)
    assert cli.main(["audit", "query", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines] == ["host-a", "host-b", "host-a"]
    assert [line.split()[4] for line in lines] == ["a1", "b1", "a2"]


def test_cli_verify_and_why_take_several_directories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = []
    policy = {
        "actions": ["doc:read"],
        "roles": {"r": {"allow": ["doc:read"]}},
        "principals": {"user:ann": {"roles": ["r"]}},
    }
    for host in ("h1", "h2"):
        e = charter.Engine.from_dict(policy)
        e.audit_to(tmp_path / host, fsync="never")
        ids.append(e.check("user:ann", "doc:read").decision_id)
        e.close()
    assert cli.main(["audit", "verify", str(tmp_path / "h1"), str(tmp_path / "h2")]) == 0
    assert capsys.readouterr().out.count("OK") == 2
    assert (
        cli.main(["audit", "why", str(ids[1]), "--dir", str(tmp_path / "h1"), "--dir", str(tmp_path / "h2")])
        == 0
    )
    assert "ALLOWED" in capsys.readouterr().out
