"""`charter serve --hooks`: serving policies with Python hooks, and refusing bad hook specs clearly.

The hook modules are written into the server's working directory, which is
on its import path (`python -m charter serve` puts the working directory
first), as an operator's own module would be.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import charter
from charter.errors import InvalidRequestError
from charter.server import AdminClient, Client
from charter.server.hook_specs import resolve
from server_helpers import TIMEOUT, ServerProcess, short_tmpdir, write_policy

POLICY: dict[str, Any] = {
    "actions": ["payments:refund", "tickets:read"],
    "roles": {
        "clerk": {"allow": ["tickets:read", {"action": "payments:refund", "hook": "fraud_check"}]},
    },
    "principals": {"user:a": {"roles": ["clerk"]}},
}

HOOKS_MODULE = """
import os

def fraud_check(request):
    amount = request.context.get("amount", 0)
    return True if amount <= 100 else (False, "over the refund limit")

def refuse_everything(request):
    return False

HOOKS = {"fraud_check": fraud_check}
NOT_HOOKS = {"fraud_check": 42}
NUMBER = 7

def make_hooks():
    # A factory: called once in each server process, which it marks with a file.
    with open(f"factory-{os.getpid()}", "w") as f:
        f.write("called")
    return {"fraud_check": fraud_check}

def factory_of_nonsense():
    return ["not", "a", "mapping"]
"""


@pytest.fixture
def tmp() -> Iterator[Path]:
    with short_tmpdir() as d:
        (d / "shophooks.py").write_text(textwrap.dedent(HOOKS_MODULE))
        sys.path.insert(0, str(d))
        try:
            yield d
        finally:
            sys.path.remove(str(d))
            sys.modules.pop("shophooks", None)


def refund(client: Client, amount: int) -> str:
    return client.check("user:a", "payments:refund", None, {"amount": amount}).reason


@pytest.mark.parametrize(
    "spec", ["shophooks:HOOKS", "fraud_check=shophooks:fraud_check", "shophooks:make_hooks"]
)
def test_a_policy_with_hooks_is_served(tmp: Path, spec: str) -> None:
    policy = write_policy(tmp / "policy.json", POLICY)
    with ServerProcess(policy, tmp, "--hooks", spec) as srv, Client(srv.socket, timeout=TIMEOUT) as client:
        assert refund(client, 50) == "granted"
        assert refund(client, 500) == "hook_denied"
        assert client.check("user:a", "tickets:read")
        explained = client.explain("user:a", "payments:refund", None, {"amount": 500})
        assert "over the refund limit" in str(explained)
        assert srv.terminate() == 0


def test_a_factory_is_called_in_every_server_process(tmp: Path) -> None:
    policy = write_policy(tmp / "policy.json", POLICY)
    args = ("--hooks", "shophooks:make_hooks", "--workers", "2")
    with ServerProcess(policy, tmp, *args) as srv:
        with Client(srv.socket, timeout=TIMEOUT) as client:
            assert refund(client, 50) == "granted"
            assert refund(client, 500) == "hook_denied"
        assert srv.admin_socket is not None
        with AdminClient(srv.admin_socket, timeout=TIMEOUT) as admin:  # the supervisor's own engine
            assert refund(admin, 500) == "hook_denied"
        marks = sorted(p.name for p in tmp.glob("factory-*"))
        assert len(marks) == 3  # two workers and the supervisor, each after the fork
        assert f"factory-{srv.proc.pid}" in marks
        assert srv.terminate() == 0


def test_a_reload_naming_an_unknown_hook_keeps_the_old_policy(tmp: Path) -> None:
    policy = write_policy(tmp / "policy.json", POLICY)
    with ServerProcess(policy, tmp, "--hooks", "shophooks:HOOKS") as srv, Client(srv.socket) as client:
        renamed = {**POLICY, "roles": {"clerk": {"allow": [{"action": "payments:refund", "hook": "other"}]}}}
        write_policy(policy, renamed)
        mark = len(srv.log)
        srv.signal(signal.SIGHUP)
        assert "unknown hook `other`" in srv.wait_log("reload of .* failed", after=mark)
        assert refund(client, 50) == "granted"
        assert srv.terminate() == 0


def test_missing_hooks_may_be_allowed(tmp: Path) -> None:
    policy = write_policy(tmp / "policy.json", POLICY)
    with ServerProcess(policy, tmp, "--allow-missing-hooks") as srv, Client(srv.socket) as client:
        assert refund(client, 50) == "hook_error"  # fails closed
        assert client.check("user:a", "tickets:read")
        assert srv.terminate() == 0


def serve(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    policy = write_policy(tmp / "policy.json", POLICY)
    cmd = [sys.executable, "-m", "charter", "serve", "--policy", str(policy), "--socket", str(tmp / "s")]
    return subprocess.run(
        [*cmd, *args], cwd=tmp, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "unknown hook `fraud_check`"),
        (("--hooks", "shophooks"), "expected `module:attr`"),
        (("--hooks", "no_such_module:HOOKS"), "cannot import `no_such_module`"),
        (("--hooks", "shophooks:MISSING"), "module `shophooks` has no `MISSING`"),
        (("--hooks", "shophooks:refuse_everything"), "name the hook it implements"),
        (("--hooks", "shophooks:NUMBER"), "is of type `int`, not a mapping"),
        (("--hooks", "shophooks:NOT_HOOKS"), "hook `fraud_check` is not callable"),
        (("--hooks", "x=shophooks:NUMBER"), "`NUMBER` is not callable"),
        (("--hooks", "shophooks:HOOKS", "--hooks", "fraud_check=shophooks:fraud_check"), "given twice"),
    ],
)
def test_bad_hook_specs_stop_the_server_before_it_binds(
    tmp: Path, args: tuple[str, ...], message: str
) -> None:
    proc = serve(tmp, *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp / "s").exists()


def test_a_factory_returning_nonsense_is_refused_when_its_process_starts(tmp: Path) -> None:
    proc = serve(tmp, "--hooks", "shophooks:factory_of_nonsense")
    assert proc.returncode == 2
    assert "the factory returned an object of type `list`, not a mapping of hooks" in proc.stderr


def test_resolve_checks_the_forms_it_accepts(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp)  # the factory marks its calls with files in the working directory
    hooks = resolve(["shophooks:HOOKS", "other=shophooks:refuse_everything"])
    assert not hooks.factories
    assert sorted(hooks.fixed) == ["fraud_check", "other"]
    assert sorted(resolve(["shophooks:make_hooks"]).load()) == ["fraud_check"]
    assert [p.name for p in tmp.glob("factory-*")] == [f"factory-{os.getpid()}"]
    assert not resolve([])
    for spec in ("", ":HOOKS", "shophooks:", "a b=shophooks:HOOKS", "shophooks:HOOKS:extra"):
        with pytest.raises(InvalidRequestError, match="expected"):
            resolve([spec])
    engine = charter.Engine.from_dict(POLICY, hooks=resolve(["shophooks:HOOKS"]).load())
    assert engine.check("user:a", "payments:refund", None, {"amount": 1})
