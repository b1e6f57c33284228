"""The revocation log over time: attached late, followed across processes, compacted, crashed, shared.

- Attaching a log to an engine that already admitted agents retires (or
  suspends) them exactly as a restart would have refused their credentials.
- Following: records another process appends reach this engine's registry
  on `sync_revocations` (and on this engine's own next write).
- Compaction: the rules against a reference model (hypothesis), end to end
  against an uncompacted copy of the same log, automatic on size, and its
  crash safety (a child process dies at each step) and fault handling (a
  step fails), and appenders in other processes while it runs.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import charter
from charter import cli
from charter.errors import StorageError
from charter.identity import Issuer
from charter.revocation_compaction import compact_records
from charter.revocations import KINDS, Compaction, Revocation, RevocationLog, RevocationSet
from charter.tokens import decode_unverified

START = 1_700_000_000.0
ISS = "https://id.example"
LEEWAY = 5.0
MARGIN = 600.0


@pytest.fixture
def clock() -> charter.ManualClock:
    return charter.ManualClock(START)


@pytest.fixture
def issuer(clock: charter.ManualClock) -> Issuer:
    return Issuer.generate(issuer=ISS, clock=clock)


def make_engine(clock: charter.ManualClock, issuer: Issuer, **settings: Any) -> charter.Engine:
    engine = charter.Engine.example(clock=clock)
    engine.trust(issuer.jwks())
    engine.configure_identity(leeway=LEEWAY, **settings)
    return engine


def refusal(engine: charter.Engine, token: str) -> str | None:
    """The reason `engine` refuses `token`, or None if it admits it."""
    try:
        engine.authenticate(token)
    except charter.AuthenticationError as err:
        return err.reason
    return None


def subject_of(token: str) -> str:
    return str(decode_unverified(token)["claims"]["sub"])


def jti_of(token: str) -> str:
    return str(decode_unverified(token)["claims"]["jti"])


# ------------------------------------------------------------------ attaching a log late


def test_agents_admitted_before_the_log_is_attached_are_retired_as_a_restart_would_refuse_them(
    tmp_path: Path, clock: charter.ManualClock, issuer: Issuer
) -> None:
    log = tmp_path / "revoked.log"
    first = make_engine(clock, issuer, revocations=log)
    leaked = issuer.issue("support-bot", on_behalf_of="user:alice")
    parent = issuer.issue("support-bot", on_behalf_of="user:alice")
    child = issuer.exchange(parent, template="research-subagent")
    paused = issuer.issue("support-bot", on_behalf_of="user:alice")
    bob_old = issuer.issue("deploy-agent", on_behalf_of="user:bob")
    dave = issuer.issue("support-bot", on_behalf_of="user:dave")
    by_jti = issuer.issue("support-bot", on_behalf_of="user:alice")
    keep = issuer.issue("support-bot", on_behalf_of="user:alice")
    first.revoke(leaked)
    first.revoke(agent=subject_of(parent))
    first.suspend(subject_of(paused), "investigating")
    first.revoke(principal="user:bob")
    first.suspend("user:dave")
    first.revoke(jti=jti_of(by_jti))
    clock.advance(LEEWAY + 1)
    bob_new = issuer.issue("deploy-agent", on_behalf_of="user:bob")  # after bob's cutoff

    # A new process admits everything before it reads the log...
    late = make_engine(clock, issuer)
    admitted = {
        t: late.authenticate(t) for t in (leaked, child, paused, bob_old, bob_new, dave, by_jti, keep)
    }
    direct = late.provision("deploy-agent", on_behalf_of="user:bob")  # not from a credential
    assert all(late.check(a, "tickets:read") for a in admitted.values() if a.principal != "user:bob")
    late.configure_identity(revocations=log)

    # ...then ends up where reading it first would have left it.
    state = {t: late.agent(a.id).state for t, a in admitted.items()}
    assert state[leaked] == "revoked"
    assert state[child] == "delegator_revoked"  # its parent was registered from its chain, then revoked
    assert late.agent(subject_of(parent)).state == "revoked"
    assert state[paused] == "suspended"
    assert state[bob_old] == "revoked"  # its credential was issued before bob's cutoff
    assert state[bob_new] == "active"
    assert late.agent(direct).state == "active"  # the log says nothing about it
    assert late.check(admitted[dave], "tickets:read").reason == "suspended"  # through its principal
    assert state[by_jti] == "active"  # a jti names one credential, not the agent (as in-process revoke)
    assert state[keep] == "active"
    early = make_engine(clock, issuer, revocations=log)
    for token in admitted:
        assert (refusal(late, token) is None) == (refusal(early, token) is None), token


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[str, int, int]]:
    """Operations over a few tokens: (op, token index, seconds to advance first)."""
    ops = st.sampled_from(
        ["issue", "exchange", "revoke", "revoke_agent", "revoke_principal", "suspend", "resume"]
    )
    return draw(st.lists(st.tuples(ops, st.integers(0, 7), st.integers(0, 400)), min_size=3, max_size=14))


def play(
    history: list[tuple[str, int, int]], clock: charter.ManualClock, issuer: Issuer, engine: charter.Engine
) -> list[str]:
    """Run a history against `engine` (whose log records it); the tokens it issued."""
    tokens = [issuer.issue("support-bot", on_behalf_of="user:alice", ttl=3600)]
    for op, i, wait in history:
        clock.advance(wait)
        token = tokens[i % len(tokens)]
        who = "user:alice" if i % 2 else "user:bob"
        if op == "issue":
            template = "support-bot" if who == "user:alice" else "deploy-agent"
            tokens.append(issuer.issue(template, on_behalf_of=who, ttl=600 + 300 * i))
        elif op == "exchange":
            with contextlib.suppress(charter.AuthenticationError):  # the parent expired, or ...
                tokens.append(issuer.exchange(token, template="research-subagent", ttl=300))
        elif op == "revoke":
            engine.revoke(token)
        elif op == "revoke_agent":
            engine.revoke(agent=subject_of(token))
        elif op == "revoke_principal":
            engine.revoke(principal=who)
        elif op == "suspend":
            engine.suspend(subject_of(token))
        else:
            engine.resume(subject_of(token))
    return tokens


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories())
def test_attaching_late_equals_attaching_first(
    tmp_path_factory: pytest.TempPathFactory, history: Any
) -> None:
    clock = charter.ManualClock(START)
    issuer = Issuer.generate(issuer=ISS, clock=clock)
    log = tmp_path_factory.mktemp("log") / "revoked.log"
    tokens = play(history, clock, issuer, make_engine(clock, issuer, revocations=log))
    late = make_engine(clock, issuer)
    admitted = {}
    for t in tokens:
        if refusal(late, t) is None:
            admitted[t] = late.agent(subject_of(t))
    late.configure_identity(revocations=log)
    early = make_engine(clock, issuer, revocations=log)
    for t in tokens:
        refused_early = refusal(early, t)
        assert (refusal(late, t) is None) == (refused_early is None), (t, refused_early)
        if t in admitted and refused_early in ("revoked", "suspended"):
            # no revoke(jti=...) in these histories: a refused credential's agent is out of service
            assert not late.check(admitted[t].handle, "tickets:read"), refused_early


# ------------------------------------------------------------------ following other processes


def test_another_process_s_records_reach_the_registry_on_sync(
    tmp_path: Path, clock: charter.ManualClock, issuer: Issuer
) -> None:
    log = tmp_path / "revoked.log"
    server, shell = make_engine(clock, issuer, revocations=log), make_engine(clock, issuer, revocations=log)
    toks = [issuer.issue("support-bot", on_behalf_of="user:alice") for _ in range(3)]
    child = issuer.exchange(toks[0], template="research-subagent")
    bob = issuer.issue("deploy-agent", on_behalf_of="user:bob")
    agents = [server.authenticate(t) for t in [*toks, child, bob]]
    assert all(server.authenticate(t) for t in toks)  # cached now

    shell.revoke(toks[0])
    shell.suspend(agents[1].id, "investigating")
    shell.revoke(principal="user:bob")
    assert server.check(agents[0], "tickets:read")  # not read yet
    assert server.sync_revocations() == 3  # the agent, its sub-agent, bob's agent
    assert server.agent(agents[0].id).state == "revoked"
    assert server.agent(agents[3].id).state == "delegator_revoked"
    assert server.check(agents[1], "tickets:read").reason == "suspended"
    assert server.check(agents[4], "deploy:read").reason == "principal_removed"
    assert refusal(server, toks[0]) == "revoked"  # the cache was invalidated
    assert refusal(server, toks[1]) == "suspended"
    assert server.authenticate(toks[2])
    assert server.sync_revocations() == 0  # nothing new: one stat

    shell.resume(agents[1].id)
    shell.revoke(agent=agents[2].id)
    server.revoke(jti="unrelated")  # a write reads the others' records first, and applies them
    assert server.agent(agents[1].id).state == "active"
    assert server.agent(agents[2].id).state == "revoked"


def test_a_follower_sees_a_compaction_by_another_process(
    tmp_path: Path, clock: charter.ManualClock, issuer: Issuer
) -> None:
    log = tmp_path / "revoked.log"
    server, shell = make_engine(clock, issuer, revocations=log), make_engine(clock, issuer, revocations=log)
    short = [issuer.issue("support-bot", on_behalf_of="user:alice", ttl=60) for _ in range(4)]
    long = issuer.issue("support-bot", on_behalf_of="user:alice", ttl="8h", agent_id="agt_long")
    watched = server.authenticate(issuer.issue("support-bot", on_behalf_of="user:alice", ttl="8h"))
    for t in short:
        shell.revoke(t)
    shell.suspend(watched.id)
    shell.resume(watched.id)
    shell.suspend(watched.id, "again")
    assert server.sync_revocations() == 0
    assert server.check(watched, "tickets:read").reason == "suspended"
    shell.resume(watched.id)  # the server has not read this one...
    clock.advance(60 + 2 * MARGIN + 1)
    report = shell.compact_revocations()  # ...and the compaction drops every suspension record
    assert report.records_after == len(short)  # the agents stay (no max_lifetime given)
    server.sync_revocations()  # another inode: read from the start, and the resumption is noticed
    assert server.check(watched, "tickets:read")
    assert server.revocations.jtis == set()
    assert len(server.revocations.agents) == len(short)
    assert server.authenticate(long)


# ------------------------------------------------------------------ the compaction rules


def reference_horizon(rec: Revocation, max_lifetime: float | None, margin: float) -> float:
    """docs/identity.md, restated: when a record stops mattering."""
    if rec.kind == "jti" and rec.exp is not None:
        return rec.exp + 2 * margin
    if rec.kind in ("suspend", "resume") or max_lifetime is None:
        return math.inf
    return rec.at + max_lifetime + 3 * margin


def replay(records: list[Revocation]) -> RevocationSet:
    state = RevocationSet()
    for rec in records:
        state.apply(rec)
    return state


records_strategy = st.lists(
    st.builds(
        Revocation,
        kind=st.sampled_from(KINDS),
        id=st.sampled_from(["a", "b", "c", "d"]),
        at=st.floats(0, 10_000),
        reason=st.sampled_from([None, "x", "y"]),
        exp=st.one_of(st.none(), st.floats(0, 10_000)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(
    records=records_strategy,
    now=st.floats(0, 30_000),
    max_lifetime=st.one_of(st.none(), st.floats(0, 8_000)),
    margin=st.sampled_from([0.0, 5.0, 600.0]),
)
def test_compaction_keeps_exactly_what_still_matters(
    records: list[Revocation], now: float, max_lifetime: float | None, margin: float
) -> None:
    kept = compact_records(records, now=now, max_lifetime=max_lifetime, margin=margin)
    full, after = replay(records), replay(kept)

    def alive(kind: str) -> set[str]:
        return {r.id for r in records if r.kind == kind and reference_horizon(r, max_lifetime, margin) >= now}

    assert after.jtis == alive("jti")
    assert after.agents == alive("agent")
    assert after.principals == {p: full.principals[p] for p in alive("principal")}
    assert after.suspended == full.suspended
    # a subsequence, without duplicates, and compacting again changes nothing
    it = iter(records)
    assert all(any(r is k for r in it) for k in kept)
    revocations = [(r.kind, r.id) for r in kept if r.kind not in ("suspend", "resume")]
    assert len(revocations) == len(set(revocations))
    assert all(r.kind == "suspend" for r in kept if r.kind in ("suspend", "resume"))
    assert compact_records(kept, now=now, max_lifetime=max_lifetime, margin=margin) == kept


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories(), later=st.integers(0, 40_000))
def test_a_compacted_log_refuses_what_the_full_log_refuses(
    tmp_path_factory: pytest.TempPathFactory, history: Any, later: int
) -> None:
    """End to end: at any time after the compaction, a fresh engine on the compacted log refuses
    exactly the credentials a fresh engine on an uncompacted copy refuses."""
    clock = charter.ManualClock(START)
    issuer = Issuer.generate(issuer=ISS, clock=clock)
    d = tmp_path_factory.mktemp("log")
    log = d / "revoked.log"
    writer = make_engine(clock, issuer, revocations=log)
    tokens = play(history, clock, issuer, writer)
    clock.advance(later)
    shutil.copy(log, d / "full.log")
    # support-bot lives at most 8 h and deploy-agent tokens here 3 h; sub-agents less
    writer.compact_revocations(max_lifetime=8 * 3600)
    for _ in range(2):
        full = make_engine(clock, issuer, revocations=d / "full.log")
        compacted = make_engine(clock, issuer, revocations=log)
        for t in tokens:
            assert (refusal(full, t) is None) == (refusal(compacted, t) is None), t
        clock.advance(MARGIN)


def test_what_compaction_drops_with_and_without_a_lifetime_bound(
    tmp_path: Path, clock: charter.ManualClock, issuer: Issuer
) -> None:
    log = tmp_path / "revoked.log"
    engine = make_engine(clock, issuer, revocations=log)
    short = issuer.issue("support-bot", on_behalf_of="user:alice", ttl=60)
    engine.revoke(short)
    engine.revoke(jti="no-expiry-known")
    engine.revoke(principal="user:bob")
    engine.revoke(principal="user:bob")
    engine.suspend("user:dave")
    engine.resume("user:dave")
    engine.suspend("user:carol", "audit")
    clock.advance(60 + 2 * MARGIN - 1)
    report = engine.compact_revocations()  # nothing expired yet: a duplicate and a settled pair go
    assert (report.records_before, report.records_after) == (8, 5)
    clock.advance(2)
    report = engine.compact_revocations()
    assert (report.records_before, report.records_after) == (5, 4)  # the short-lived jti
    kinds = [json.loads(line)["kind"] for line in log.read_text().splitlines()]
    assert kinds == ["agent", "jti", "principal", "suspend"]
    clock.set(START + 3600 + 3 * MARGIN - 1)  # not yet `at + max_lifetime + 3 * margin`
    assert engine.compact_revocations(max_lifetime=3600).records_after == 4
    clock.advance(2)
    assert engine.compact_revocations(max_lifetime=3600).records_after == 1  # only the suspension
    assert json.loads(log.read_text())["id"] == "user:carol"
    assert engine.revocations.agents == set()
    assert engine.check("user:carol", "payments:read").reason == "suspended"
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    with pytest.raises(StorageError):
        make_engine(clock, issuer).compact_revocations()  # an in-memory log has no file


def test_compaction_keeps_the_file_s_mode_and_follows_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real.log"
    log = RevocationLog(real)
    log.add_many([("jti", "j", 1.0)], at=0.0)
    os.chmod(real, 0o640)
    (tmp_path / "link.log").symlink_to(real)
    via_link = RevocationLog(tmp_path / "link.log")
    assert via_link.compact(now=10_000.0).records_after == 0
    assert (tmp_path / "link.log").is_symlink()
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o640
    assert real.read_bytes() == b""


def test_automatic_compaction_keeps_the_file_bounded(
    tmp_path: Path, clock: charter.ManualClock, issuer: Issuer
) -> None:
    log = tmp_path / "revoked.log"
    settings = Compaction(above=4096, max_lifetime=60, margin=LEEWAY)
    engine = make_engine(clock, issuer, revocations=log, compaction=settings)
    recent: list[str] = []
    for i in range(300):
        token = issuer.issue("support-bot", on_behalf_of="user:alice", ttl=60)
        engine.authenticate(token)
        engine.revoke(token)
        recent = [*recent[-1:], token]
        clock.advance(30)
        assert log.stat().st_size < 4096 + 300, i  # compacted whenever it passes the bound
    restarted = make_engine(clock, issuer, revocations=log)
    for token in recent:  # revoked, and not yet expired
        assert refusal(restarted, token) == "revoked"
    engine.configure_identity(compaction=None)
    for i in range(100):
        engine.revoke(jti=f"j{i}")
    assert log.stat().st_size > 4096  # automatic compaction is off


def test_cli_compacts_a_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "revoked.log"
    log = RevocationLog(path)
    log.add_many([("jti", "dead", 1.0), ("agent", "agt_old")], at=1.0)
    log.add_many([("agent", "agt_new")], at=1e10)
    assert cli.main(["token", "compact", "--revocations", str(path)]) == 0
    assert "3 -> 2 records" in capsys.readouterr().out  # the dead jti (the clock is real)
    assert cli.main(["token", "compact", "--revocations", str(path), "--max-lifetime", "8h"]) == 0
    assert "2 -> 1 records" in capsys.readouterr().out
    assert RevocationLog(path).agents == {"agt_new"}
    assert cli.main(["token", "compact", "--revocations", str(path), "--margin", "soon"]) == 2
    assert "not a duration" in capsys.readouterr().err


# ------------------------------------------------------------------ faults and crashes


def seeded_log(path: Path) -> RevocationLog:
    """A log with records that a compaction at 100,000 with a 1 h bound drops, and some it keeps."""
    log = RevocationLog(path, compaction=None)
    for i in range(20):
        log.add_many([("jti", f"dead{i}", 1000.0), ("agent", f"agt_dead{i}")], at=1000.0)
    log.add_many([("agent", "agt_live"), ("jti", "live", 200_000.0)], at=99_000.0)
    log.add("suspend", "user:x", at=99_000.0, reason="why")
    return log


KEPT = {"agents": {"agt_live"}, "jtis": {"live"}, "suspended": {"user:x": "why"}}


def assert_intact(path: Path, *, compacted: bool | None = None) -> None:
    """The log at `path` loads and refuses everything still live; `compacted` says which version it is."""
    log = RevocationLog(path, compaction=None)
    assert KEPT["agents"] <= log.agents
    assert KEPT["jtis"] <= log.jtis
    assert log.suspended == KEPT["suspended"]
    if compacted is not None:
        assert (log.agents == KEPT["agents"]) is compacted


@pytest.mark.parametrize("step", ["write", "fsync", "replace", "fsync_dir"])
def test_a_failed_step_leaves_a_working_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    path = tmp_path / "revoked.log"
    log = seeded_log(path)
    before = path.read_bytes()
    import charter.revocation_compaction as compaction

    def fail(*_: Any, **__: Any) -> None:
        raise OSError(5, "injected I/O error")

    target = {"write": "write_all", "fsync": None, "replace": None, "fsync_dir": "fsync_dir"}[step]
    if target is not None:
        monkeypatch.setattr(compaction, target, fail)
    elif step == "fsync":
        monkeypatch.setattr(os, "fsync", fail)  # the first fsync of a compaction is the new file's
    else:
        monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(StorageError, match="injected"):
        log.compact(now=100_000.0, max_lifetime=3600)
    monkeypatch.undo()
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    if step == "fsync_dir":  # the rename happened: the new file is complete and in place
        assert leftovers == [".revoked.log.lock", "revoked.log"]
        assert_intact(path, compacted=True)
    else:  # nothing changed but a temporary file that is gone again
        assert leftovers == [".revoked.log.lock", "revoked.log"]
        assert path.read_bytes() == before
        assert_intact(path, compacted=False)
    # the log object keeps working: it notices the replacement, if any, and appends
    log.add("agent", "agt_after", at=99_500.0)
    assert "agt_after" in RevocationLog(path).agents
    assert log.compact(now=100_000.0, max_lifetime=3600).records_after == 4
    assert_intact(path)
    assert RevocationLog(path).agents == {"agt_live", "agt_after"}


STEPS = ["after_write", "after_fsync", "after_replace", "after_fsync_dir"]


def run_in_child(body: Callable[[], None]) -> int:
    """Run `body` in a forked child that leaves with `os._exit` (no cleanup runs: a crash); its exit code."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            body()
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_any_step_leaves_the_old_log_or_the_new(tmp_path: Path, step: str) -> None:
    path = tmp_path / "revoked.log"
    seeded_log(path)

    def crash_after(name: str, module: Any) -> None:
        real = getattr(module, name)

        def then_die(*args: Any, **kwargs: Any) -> Any:
            result = real(*args, **kwargs)
            os._exit(3)
            return result

        setattr(module, name, then_die)

    def compact_and_crash() -> None:
        import charter.revocation_compaction as compaction

        if step == "after_write":
            crash_after("write_all", compaction)
        elif step == "after_fsync":
            crash_after("fsync", os)  # the first fsync of a compaction is the new file's
        elif step == "after_replace":
            crash_after("replace", os)
        else:
            crash_after("fsync_dir", compaction)
        RevocationLog(path, compaction=None).compact(now=100_000.0, max_lifetime=3600)

    assert run_in_child(compact_and_crash) == 3
    assert_intact(path, compacted=step in ("after_replace", "after_fsync_dir"))
    # a leftover temporary file does not get in the way of the next compaction
    assert RevocationLog(path, compaction=None).compact(now=100_000.0, max_lifetime=3600).records_after == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [".revoked.log.lock", "revoked.log"]
    assert_intact(path, compacted=True)


def test_appenders_in_other_processes_lose_nothing_while_a_compactor_runs(tmp_path: Path) -> None:
    path = tmp_path / "revoked.log"
    RevocationLog(path)
    done = tmp_path / "appenders-done"
    per_appender, appenders = 150, 3

    def append(n: int) -> Callable[[], None]:
        def body() -> None:
            log = RevocationLog(path, compaction=None)
            for i in range(per_appender):
                # a dead jti (for the compactor to drop) and an agent it must keep
                log.add_many([("jti", f"dead-{n}-{i}", 1.0), ("agent", f"agt-{n}-{i}")], at=50.0)
                assert f"agt-{n}-{i}" in log.agents

        return body

    def compact() -> None:
        log = RevocationLog(path, compaction=None)
        rounds = 0
        while not done.exists() or rounds == 0:
            log.compact(now=10_000.0)
            rounds += 1
        assert rounds > 0

    children = []
    compactor = os.fork()
    if compactor == 0:
        code = 1
        try:
            compact()
            code = 0
        finally:
            os._exit(code)
    for n in range(appenders):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                append(n)()
                code = 0
            finally:
                os._exit(code)
        children.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    done.touch()
    codes.append(os.waitstatus_to_exitcode(os.waitpid(compactor, 0)[1]))
    assert codes == [0] * (appenders + 1)
    final = RevocationLog(path, compaction=None)
    assert final.agents == {f"agt-{n}-{i}" for n in range(appenders) for i in range(per_appender)}
    final.compact(now=10_000.0)
    assert final.jtis == set()
    assert len(path.read_text().splitlines()) == appenders * per_appender
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".revoked.log.lock",
        "appenders-done",
        "revoked.log",
    ]


def test_a_write_that_fails_is_still_refused_in_memory_across_a_rebuild(tmp_path: Path) -> None:
    path = tmp_path / "revoked.log"
    log, other = RevocationLog(path, compaction=None), RevocationLog(path, compaction=None)
    log.add_many([("agent", "agt_volatile")], at=1.0, persist=False)
    other.add_many([("jti", "dead", 1.0)], at=1.0)
    other.compact(now=10_000.0)  # replaces the file
    assert log.sync() == 0  # rebuilt from the (empty) new file, plus what it holds in memory only
    assert log.agents == {"agt_volatile"}
    assert other.agents == set()


def test_an_append_after_a_dead_writer_s_torn_line_starts_on_a_fresh_line(tmp_path: Path) -> None:
    path = tmp_path / "revoked.log"
    running = RevocationLog(path, compaction=None)  # opened before the other writer died
    running.add("agent", "agt_before", at=1.0)
    with path.open("ab") as f:
        f.write(b'{"kind": "agent", "id": "agt_torn"')  # died before finishing its line (and its fsync)
    running.add("agent", "agt_after", at=2.0)
    assert RevocationLog(path).agents == {"agt_before", "agt_after"}
    assert path.read_bytes().count(b"\n") == 2
