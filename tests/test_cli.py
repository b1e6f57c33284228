"""The `charter` command line: exit codes, output lines, JSON, policy tools."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import charter
from charter import cli
from charter.policy import example_path

EXAMPLE = str(example_path())
VERSION = charter.Engine.example().policy_version


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m charter ARGS` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "charter", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`charter.cli.main(ARGS)` in process: (exit code, stdout, stderr)."""
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def small_policy(tmp_path: Path, policy_dict: Callable[..., dict[str, Any]]) -> Path:
    p = tmp_path / "small.json"
    p.write_text(json.dumps(policy_dict()))
    return p


@pytest.fixture
def small_toml(tmp_path: Path) -> Path:
    p = tmp_path / "small.toml"
    p.write_text(
        'actions = ["db:read", "db:write"]\n'
        "[roles.reader]\n"
        'allow = ["db:read"]\n'
        'deny = [{ action = "db:read", on = ["secret/**"] }]\n'
        '[principals."user:r"]\n'
        'roles = ["reader"]\n'
        "[templates.bot]\n"
        'roles = ["reader"]\n'
    )
    return p


# ------------------------------------------------------------------- subprocess


def test_subprocess_allow(tmp_path: Path) -> None:
    r = run(["check", "user:alice", "crm:read", "customers/42"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (
        f"ALLOW user:alice crm:read on customers/42: granted [roles.viewer.allow[1]] (policy {VERSION})\n"
    )
    assert r.stderr == ""


def test_subprocess_deny_json(tmp_path: Path) -> None:
    r = run(["check", "--json", "user:alice", "db:read", "customers/42"], tmp_path)
    assert r.returncode == 1, r.stderr
    data = json.loads(r.stdout)
    assert data == {
        "principal": "user:alice",
        "action": "db:read",
        "resource": "customers/42",
        "allowed": False,
        "reason": "denied_by_rule",
        "rule": "roles.analyst.deny[0]",
        "policy_version": VERSION,
        "retry_after": None,
    }


def test_subprocess_policy_validate_error(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text('actions = ["db:read"]\n[roles.a]\ninherits = ["b"]\n[roles.b]\ninherits = ["a"]\n')
    r = run(["policy", "validate", str(p)], tmp_path)
    assert r.returncode == 2
    assert r.stdout == ""
    assert str(p) in r.stderr
    assert "roles.b.inherits[0]" in r.stderr
    assert "cycle" in r.stderr


def test_subprocess_usage_error(tmp_path: Path) -> None:
    r = run(["check"], tmp_path)
    assert r.returncode == 2
    assert "usage" in r.stderr
    r = run(["--version"], tmp_path)
    assert r.returncode == 0
    assert charter.__version__ in r.stdout


# ---------------------------------------------------------------------- check


@pytest.mark.parametrize(
    ("args", "code", "line"),
    [
        (
            ["check", "user:alice", "crm:read", "customers/42"],
            0,
            "ALLOW user:alice crm:read on customers/42: granted [roles.viewer.allow[1]]",
        ),
        (
            ["check", "user:alice", "db:read", "customers/42"],
            1,
            "DENY user:alice db:read on customers/42: denied_by_rule [roles.analyst.deny[0]]",
        ),
        (["check", "user:dave", "tickets:write"], 1, "DENY user:dave tickets:write: no_grant"),
        (
            ["check", "user:dave", "tickets:read"],
            0,
            "ALLOW user:dave tickets:read: granted [roles.viewer.allow[0]]",
        ),
        (["check", "nobody", "db:read"], 1, "DENY nobody db:read: unknown_principal"),
        (["check", "user:dave", "db:nope"], 1, "DENY user:dave db:nope: unknown_action"),
        (
            ["check", "user:dave", "tickets:read", "a//b"],
            1,
            "DENY user:dave tickets:read on a//b: invalid_resource",
        ),
    ],
)
def test_check(capsys: pytest.CaptureFixture[str], args: list[str], code: int, line: str) -> None:
    rc, out, err = main(args, capsys)
    assert rc == code
    assert out == f"{line} (policy {VERSION})\n"
    assert err == ""


def test_check_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = main(["check", "user:bob", "db:write", "staging/x", "--json"], capsys)
    assert rc == 0
    data = json.loads(out)
    assert data["allowed"] is True
    assert data["reason"] == "granted"
    assert data["principal"] == "user:bob"
    assert data["resource"] == "staging/x"
    assert data["policy_version"] == VERSION
    rc, out, _ = main(["check", "--json", "user:dave", "db:read"], capsys)
    assert rc == 1
    data = json.loads(out)
    assert data["resource"] is None
    assert data["rule"] is None
    assert data["reason"] == "no_grant"


def test_check_agent_template(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = main(
        ["check", "user:alice", "db:read", "analytics/x", "--agent-template", "analytics-agent"], capsys
    )
    assert rc == 0
    assert out.startswith("ALLOW analytics-agent agent for user:alice db:read on analytics/x: granted")
    # the template allows it, dave does not
    rc, out, _ = main(["check", "user:dave", "tickets:write", "--agent-template", "support-bot"], capsys)
    assert rc == 1
    assert out.startswith("DENY support-bot agent for user:dave tickets:write: delegator_denied")
    rc, out, _ = main(
        ["check", "--json", "--agent-template", "support-bot", "user:dave", "tickets:write"], capsys
    )
    assert rc == 1
    data = json.loads(out)
    assert data["principal"] == "support-bot agent for user:dave"
    assert data["reason"] == "delegator_denied"


def test_check_agent_template_errors(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = main(["check", "user:alice", "db:read", "--agent-template", "nope"], capsys)
    assert rc == 2
    assert out == ""
    assert err.startswith("charter: error:")
    assert "nope" in err
    rc, out, err = main(["check", "user:nobody", "db:read", "--agent-template", "support-bot"], capsys)
    assert rc == 2
    assert out == ""
    assert "user:nobody" in err


def test_check_with_policy_file(
    capsys: pytest.CaptureFixture[str], small_policy: Path, small_toml: Path
) -> None:
    version = charter.Engine.from_file(small_policy).policy_version
    rc, out, _ = main(["check", "--policy", str(small_policy), "user:w", "db:write"], capsys)
    assert rc == 0
    assert out == f"ALLOW user:w db:write: granted [roles.writer.allow[0]] (policy {version})\n"
    rc, out, _ = main(["check", "--policy", str(small_policy), "user:r", "db:read", "secret/a/b"], capsys)
    assert rc == 1
    assert (
        out
        == f"DENY user:r db:read on secret/a/b: denied_by_rule [roles.reader.deny[0]] (policy {version})\n"
    )
    rc, out, _ = main(
        ["check", "--policy", str(small_toml), "--agent-template", "bot", "user:r", "db:read", "x"], capsys
    )
    assert rc == 0
    assert out.startswith("ALLOW bot agent for user:r db:read on x: granted [roles.reader.allow[0]]")
    # the example's principals are not in this policy
    rc, out, _ = main(["check", "--policy", str(small_toml), "user:alice", "db:read"], capsys)
    assert rc == 1
    assert "unknown_principal" in out


def test_check_with_bad_policy_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('actions = ["db:read"]\n[roles.a]\nallow = ["db:nope"]\n')
    rc, out, err = main(["check", "--policy", str(bad), "user:a", "db:read"], capsys)
    assert rc == 2
    assert out == ""
    assert (
        err
        == f"charter: error: {bad}: roles.a.allow[0]: unknown action `db:nope` (declare it in `actions`)\n"
    )
    rc, out, err = main(["check", "--policy", str(tmp_path / "missing.toml"), "user:a", "db:read"], capsys)
    assert rc == 2
    assert "missing.toml" in err


# ------------------------------------------------------------------- validate


def test_validate_ok(capsys: pytest.CaptureFixture[str], small_policy: Path) -> None:
    rc, out, err = main(["policy", "validate", EXAMPLE], capsys)
    assert rc == 0
    assert err == ""
    assert out == f"ok: {EXAMPLE}: 15 actions, policy version {VERSION}\n"
    rc, out, _ = main(["policy", "validate", str(small_policy)], capsys)
    assert rc == 0
    assert out.startswith(f"ok: {small_policy}: 5 actions, policy version ")


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("actions = [", ["invalid TOML"]),
        ('actions = ["db:read", "db:read"]\n', ["actions[1]", "twice"]),
        ('actions = ["db:read"]\n[templates.t]\nttl = "5 parsecs"\n', ["templates.t.ttl", "not a duration"]),
        (
            'actions = ["db:read"]\n[roles.a]\nallow = [{ action = "db:read", when = "x" }]\n',
            ["roles.a.allow[0].when", "1:1"],
        ),
        (
            'actions = ["db:read"]\n[roles.a]\nallow = [{ action = "db:read", on = ["a*"] }]\n',
            ["roles.a.allow[0].on[0]"],
        ),
    ],
)
def test_validate_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, fragments: list[str]
) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    rc, out, err = main(["policy", "validate", str(p)], capsys)
    assert rc == 2
    assert out == ""
    assert err.startswith(f"charter: error: {p}: ")
    for f in fragments:
        assert f in err


def test_validate_missing_and_non_utf8(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, err = main(["policy", "validate", str(tmp_path / "missing.toml")], capsys)
    assert (rc, out) == (2, "")
    assert "missing.toml" in err
    p = tmp_path / "latin1.toml"
    p.write_bytes(b'actions = ["caf\xe9:read"]\n')
    rc, out, err = main(["policy", "validate", str(p)], capsys)
    assert (rc, out) == (2, "")
    assert "UTF-8" in err


# -------------------------------------------------------------------- explain


def test_explain_text(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = main(["policy", "explain", EXAMPLE, "user:alice", "crm:write", "users/1/profile"], capsys)
    assert rc == 1
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == "DENY crm:write on users/1/profile for user:alice"
    assert f"reason: denied_by_rule, rule roles.support.deny[0] (policy {VERSION})" in lines[1]
    assert any(
        "principal user:alice" in line and "-> deny by roles.support.deny[0]" in line for line in lines
    )
    assert any("roles.support.deny[0]" in line and "matched" in line for line in lines)


def test_explain_text_allow(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = main(["policy", "explain", EXAMPLE, "user:alice", "crm:write", "customers/1"], capsys)
    assert rc == 0
    assert out.startswith("ALLOW crm:write on customers/1 for user:alice\n")
    assert "granted" in out


def test_explain_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = main(["policy", "explain", EXAMPLE, "user:dave", "tickets:write", "--json"], capsys)
    assert rc == 1
    data = json.loads(out)
    assert data["decision"]["reason"] == "no_grant"
    assert data["decision"]["allowed"] is False
    assert data["subject"] == {"kind": "principal", "id": "user:dave"}
    assert data["action"] == "tickets:write"
    assert data["resource"] is None
    assert [lvl["kind"] for lvl in data["chain"]] == ["principal"]


def test_explain_agent_template_json(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "policy",
        "explain",
        EXAMPLE,
        "user:dave",
        "tickets:write",
        "--agent-template",
        "support-bot",
        "--json",
    ]
    rc, out, _ = main(args, capsys)
    assert rc == 1
    data = json.loads(out)
    assert data["decision"]["reason"] == "delegator_denied"
    assert [lvl["kind"] for lvl in data["chain"]] == ["agent", "principal"]
    assert [lvl["outcome"] for lvl in data["chain"]] == ["allow", "no_grant"]
    assert data["subject"]["template"] == "support-bot"


def test_explain_unknown_principal(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = main(["policy", "explain", EXAMPLE, "nobody", "db:read"], capsys)
    assert rc == 1
    assert err == ""
    assert "DENY" in out
    assert "unknown_principal" in out
    rc, out, _ = main(["policy", "explain", EXAMPLE, "nobody", "db:read", "--json"], capsys)
    assert rc == 1
    data = json.loads(out)
    assert data["decision"]["reason"] == "unknown_principal"
    assert data["chain"] == []


def test_explain_bad_policy(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text("actions = 3\n")
    rc, out, err = main(["policy", "explain", str(p), "user:a", "db:read"], capsys)
    assert (rc, out) == (2, "")
    assert str(p) in err
    assert "actions" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for args in ([], ["check"], ["check", "user:a"], ["policy"], ["policy", "validate"], ["bogus"]):
        with pytest.raises(SystemExit) as info:
            cli.main(args)
        assert info.value.code == 2
        _, err = capsys.readouterr()
        assert "usage" in err
