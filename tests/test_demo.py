"""`charter demo`: it shows each act, verifies its audit trail, and leaves nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

import charter
from charter import audit, demo
from charter.cli import main


def children() -> list[int]:
    """Live (not zombie) child processes of this process."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.append(int(entry))
    return found


def test_demo_shows_each_act_and_verifies(tmp_path: Path) -> None:
    sockets_before = set(Path("/tmp").glob("chd*"))
    lines: list[str] = []
    result = demo.run(tmp_path / "demo", quick=True, say=lines.append)
    text = "\n".join(lines)
    assert result.verified
    assert result.server_ran
    for expected in (
        "denied_by_rule",
        "guard_failed",
        "scope_escalation",
        "out_of_scope",
        "rate_limited",
        "suspended",
        "frozen",
        "verify: OK",
    ):
        assert expected in text, expected
    # Each act's decision is in the log with the reason the demo printed.
    reasons = {
        "deny_rule": "denied_by_rule",
        "guard": "guard_failed",
        "scope": "out_of_scope",
        "throttled": "rate_limited",
        "suspended": "suspended",
        "frozen": "frozen",
    }
    log = tmp_path / "demo" / "audit"
    for key, reason in reasons.items():
        record = next(audit.read(log, decision_id=result.decision_ids[key]))
        assert isinstance(record, audit.DecisionRecord)
        assert record.reason == reason
    assert all(rate > 0 for rate in result.throughput.values())
    # Nothing left running, nothing written outside the given directory.
    assert children() == []
    assert set(Path("/tmp").glob("chd*")) == sockets_before


def test_demo_cli_without_a_directory_cleans_up(capsys: object) -> None:
    assert main(["demo", "--quick"]) == 0
    assert children() == []


def test_demo_policy_is_the_example_plus_a_breaker() -> None:
    doc = demo.demo_policy()
    engine = charter.Engine.from_dict(doc)
    example = charter.Engine.example()
    assert engine.actions == example.actions
    assert doc["templates"]["research-subagent"]["breaker"] == demo.HAYWIRE_BREAKER
