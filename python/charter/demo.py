"""`charter demo`: what Charter does, in one command, on the example policy.

Everything runs on a temporary directory (or the one given): keys, the audit
trail, the decision server's sockets. The server is a child process stopped
before the demo returns; nothing is left running.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

import charter
from charter import audit, policy
from charter.identity import Issuer

Say = Callable[[str], None]

HAYWIRE_QUOTA = {"rate": "20/s", "burst": 20}
HAYWIRE_BREAKER = {"quota_denials": 10, "window": "1m"}


@dataclass
class DemoResult:
    """What the demo saw (its tests read this; the person reads the printout)."""

    directory: Path
    decision_ids: dict[str, str] = field(default_factory=dict)
    throughput: dict[str, float] = field(default_factory=dict)
    verified: bool = False
    server_ran: bool = False


def demo_policy() -> dict[str, Any]:
    """The example policy, plus a rate quota and a breaker on research sub-agents (for the haywire act)."""
    doc: dict[str, Any] = msgspec.to_builtins(policy.from_file(policy.example_path()))
    doc.setdefault("quotas", {})["research"] = HAYWIRE_QUOTA
    template = doc["templates"]["research-subagent"]
    template["quota"] = "research"
    template["breaker"] = HAYWIRE_BREAKER
    # Durations were normalised to seconds on load; the document takes them as they are.
    return doc


def run(
    directory: str | os.PathLike[str] | None = None, *, quick: bool = False, say: Say = print
) -> DemoResult:
    """Run the demo under `directory` (a fresh temporary one by default)."""
    if directory is None:
        with tempfile.TemporaryDirectory(prefix="charter-demo-") as tmp:
            return _run(Path(tmp), quick, say, keep=False)
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    return _run(path, quick, say, keep=True)


def _run(root: Path, quick: bool, say: Say, *, keep: bool) -> DemoResult:
    result = DemoResult(directory=root)
    out = _Printer(say)
    doc = demo_policy()
    engine = charter.Engine.from_dict(doc)
    audit_dir = root / "audit"
    engine.audit_to(audit_dir, fsync="batch")
    ids = result.decision_ids

    out.title("1. Identities: every agent its own key-signed credential, acting for a person")
    issuer = Issuer.generate(issuer="https://id.demo.example", policy=engine)
    engine.trust(issuer.jwks())
    out.line(f"issuer key {issuer.jwks()['keys'][0]['kid']} (Ed25519; the engine holds the public key only)")
    users = ["user:alice", "user:bob", "user:carol", "user:dave"]
    templates = {
        "user:alice": "support-bot",
        "user:bob": "analytics-agent",
        "user:carol": "refund-agent",
        "user:dave": "deploy-agent",
    }
    fleet = []
    for i in range(40 if quick else 400):
        user = users[i % len(users)]
        token = issuer.issue(templates[user], on_behalf_of=user, ttl="10m")
        fleet.append(engine.authenticate(token))
    out.line(f"{len(fleet)} agents provisioned from signed tokens for {len(users)} people")
    support = fleet[0]
    d = engine.check(support, "crm:write", "customers/42")
    out.decision(f"{support.template} for {support.principal}: crm:write customers/42", d)
    d = engine.check(support, "crm:write", "users/7/profile")
    ids["deny_rule"] = str(d.decision_id)
    out.decision(f"{support.template} for {support.principal}: crm:write users/7/profile", d)

    out.title("2. Context-aware decisions on high-risk resources")
    refunder = fleet[2]
    d = engine.check(refunder, "payments:refund", "invoices/2031", {})
    ids["guard"] = str(d.decision_id)
    out.decision("refund-agent: payments:refund invoices/2031, no approval", d)
    d = engine.check(refunder, "payments:refund", "invoices/2031", {"approved_by": "user:dave"})
    out.decision("refund-agent: the same, approved by user:dave", d)
    d = engine.check(support, "email:send", "customers/42", {"purpose": "marketing"})
    ids["purpose"] = str(d.decision_id)
    out.decision("support-bot: email:send customers/42 for marketing", d)

    out.title("3. Delegation: a sub-agent never gets more than its parent")
    parent = issuer.issue(
        "analytics-agent", on_behalf_of="user:bob", scope=["db:read", "crm:read"], ttl="10m"
    )
    child = issuer.exchange(parent, template="research-subagent", scope=["crm:read"])
    sub = engine.authenticate(child)
    out.line(f"sub-agent {sub.id} acts for {sub.on_behalf_of} (depth {sub.depth})")
    try:
        issuer.exchange(parent, template="research-subagent", scope=["db:export"])
    except charter.AuthenticationError as err:
        out.line(f"widening the scope to db:export: REFUSED ({err.reason})")
    d = engine.check(sub, "db:read", "analytics/q3")
    ids["scope"] = str(d.decision_id)
    out.decision("sub-agent: db:read analytics/q3 (outside its credential's scope)", d)

    out.title("4. A haywire agent: throttled, then suspended by its breaker")
    reasons = []
    for _ in range(60):
        d = engine.check(sub, "crm:read", "customers/1")
        reasons.append(d.reason)
        if d.reason == "rate_limited" and "throttled" not in ids:
            ids["throttled"] = str(d.decision_id)
        if d.reason == "suspended":
            ids["suspended"] = str(d.decision_id)
            break
    counts = {r: reasons.count(r) for r in dict.fromkeys(reasons)}
    out.line(f"60 requests in a burst: {counts}")
    out.line(f"suspended: {engine.suspension(sub)}")

    out.title("5. The kill switch")
    engine.freeze()
    d = engine.check(support, "tickets:read")
    ids["frozen"] = str(d.decision_id)
    out.decision("any request while frozen", d)
    engine.unfreeze()
    out.decision("after unfreeze", engine.check(support, "tickets:read"))

    out.title("6. Speed")
    handles = np.array([a.handle for a in fleet], dtype=np.uint64)
    actions = np.array(
        [engine.action_id(x) for x in ("tickets:read", "crm:read", "db:read", "deploy:read")], dtype=np.uint32
    )
    n_single = 20_000 if quick else 200_000
    pairs = [(fleet[i % len(fleet)].handle, "tickets:read") for i in range(n_single)]
    check = engine.check
    t0 = time.perf_counter()
    for h, a in pairs:
        check(h, a)
    result.throughput["single_audited"] = n_single / (time.perf_counter() - t0)
    n_batch = 100_000 if quick else 1_000_000
    rng = np.random.default_rng(7)
    bh, ba = (
        handles[rng.integers(len(handles), size=n_batch)],
        actions[rng.integers(len(actions), size=n_batch)],
    )
    t0 = time.perf_counter()
    engine.check_batch(bh, ba)
    engine.flush_audit()
    result.throughput["batch_audited"] = n_batch / (time.perf_counter() - t0)
    out.line(
        f"in-process, audited: {result.throughput['single_audited']:,.0f} single checks/s from Python, "
        f"{result.throughput['batch_audited']:,.0f} decisions/s in batches (until written to the log)"
    )
    with _server(root, quick) as served:
        result.server_ran = True
        result.throughput["server_batched"] = served
        out.line(f"over the Unix socket: {served:,.0f} decisions/s in batched frames (one client)")

    out.title("7. The audit trail: every decision, with why; tamper-evident")
    engine.close()
    for key in ("deny_rule", "guard", "scope", "throttled", "suspended", "frozen"):
        if key in ids:
            record = next(audit.read(audit_dir, decision_id=ids[key]), None)
            if record is not None:
                out.block(audit.describe(record))
    report = audit.verify(audit_dir)
    result.verified = report.ok
    first = report.first_seq
    out.line(
        f"verify: {'OK' if report.ok else 'FAILED'}, {report.records} records (seq {first}..{report.last_seq}), "
        f"chain head {str(report.head_hash)[:16]}..."
    )
    if keep:
        out.line(
            f"the log is in {audit_dir}: try `charter audit why {ids.get('guard', '')} --dir {audit_dir}`"
        )
    else:
        out.line(
            "(everything was written to a temporary directory, now removed; `charter demo --dir DIR` keeps it)"
        )
    return result


@contextmanager
def _server(root: Path, quick: bool) -> Iterator[float]:
    """Start `charter serve` on a temporary socket, measure batched decisions, stop it."""
    from charter.server import AdminClient, Client

    sockets = Path(tempfile.mkdtemp(prefix="chd", dir="/tmp"))  # socket paths must stay short
    decide, admin = sockets / "d.sock", sockets / "a.sock"
    policy_file = root / "demo-policy.json"
    policy_file.write_bytes(msgspec.json.encode(demo_policy()))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "charter",
            "serve",
            "--policy",
            str(policy_file),
            "--socket",
            str(decide),
            "--admin-socket",
            str(admin),
            "--trusted-uid",
            str(os.geteuid()),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "ready" not in line:
            raise charter.ServerUnavailable(f"the demo server did not start: {line!r}")
        with AdminClient(str(admin)) as a:
            agents = [a.provision("support-bot", on_behalf_of="user:alice") for _ in range(100)]
        handles = np.array([x.handle for x in agents], dtype=np.uint64)
        rounds, size = (5, 10_000) if quick else (20, 50_000)
        with Client(str(decide), timeout=10.0) as c:
            tickets = c.check_batch(handles[:1], np.zeros(1, dtype=np.uint32))  # warm up
            del tickets
            action = np.full(size, 0, dtype=np.uint32)
            batch = handles[np.arange(size) % len(handles)]
            t0 = time.perf_counter()
            for _ in range(rounds):
                c.check_batch(batch, action)
            rate = rounds * size / (time.perf_counter() - t0)
        yield rate
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
        for p in sockets.iterdir():
            p.unlink()
        sockets.rmdir()


class _Printer:
    def __init__(self, say: Say) -> None:
        self.say = say

    def title(self, text: str) -> None:
        self.say("")
        self.say(text)

    def line(self, text: str) -> None:
        self.say(f"   {text}")

    def block(self, text: str) -> None:
        for line in text.splitlines():
            self.say(f"   | {line}")

    def decision(self, what: str, d: charter.Decision) -> None:
        verdict = "ALLOW" if d else "DENY "
        why = f" [{d.rule}]" if d.rule else ""
        detail = f": {d.detail}" if d.detail and not d else ""
        self.say(f"   {verdict} {what}: {d.reason}{why}{detail}")


def add_commands(sub: Any) -> None:
    """`charter demo [--dir DIR] [--quick]`."""
    cmd = sub.add_parser("demo", help="see what Charter does, in under a minute, on the example policy")
    cmd.add_argument(
        "--dir", help="keep everything it writes (keys, audit log) under DIR; default: a temporary directory"
    )
    cmd.add_argument("--quick", action="store_true", help="smaller fleet and fewer timed decisions")
    cmd.set_defaults(run=lambda args: 0 if run(args.dir, quick=args.quick).verified else 1)
