"""Audit faults: a full disk, write errors, a full buffer, a writer killed with SIGKILL."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np

import charter
from charter import audit
from charter.audit.reader import DecisionRecord

POLICY = {
    "actions": ["doc:read", "doc:write"],
    "roles": {"reader": {"allow": ["doc:read"]}},
    "principals": {"user:ann": {"roles": ["reader"]}},
}


class FlakyDisk:
    """os.write, failing with ENOSPC while `full` is set (partly writing first, as a real disk may)."""

    def __init__(self) -> None:
        self.full = threading.Event()
        self.failures = 0

    def __call__(self, fd: int, data: memoryview) -> int:
        if self.full.is_set():
            self.failures += 1
            if len(data) > 10:
                os.write(fd, data[:10])  # a torn write the writer must cut back
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)


def logged_ids(directory: Path) -> list[str]:
    return [r.decision_id for r in audit.read(directory) if isinstance(r, DecisionRecord)]


def wait_until(condition: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_disk_full_in_strict_mode_denies_and_loses_nothing_acknowledged(tmp_path: Path) -> None:
    e = charter.Engine.from_dict(POLICY)
    writer = e.audit_to(tmp_path / "a", buffer_records=64, block_timeout=0.01, flush_interval=0.001)
    disk = FlakyDisk()
    writer.write_fn = disk
    acknowledged = [e.check("user:ann", "doc:read").decision_id for _ in range(20)]
    e.flush_audit()
    disk.full.set()
    during = [e.check("user:ann", "doc:read") for _ in range(300)]
    wait_until(lambda: disk.failures > 0)
    refused = [d for d in during if d.reason == "audit_unavailable"]
    assert refused, "a full disk must lead to denials in strict mode"
    assert all(not d.allowed and d.decision_id is None for d in refused)
    acknowledged += [d.decision_id for d in during if d.decision_id is not None]
    batch = e.check_batch_reasons(np.array([0] * 500, dtype=np.uint64), np.zeros(500, dtype=np.uint32))[1]
    assert charter.REASONS.index("audit_unavailable") in batch.tolist()
    disk.full.clear()  # space freed: the writer catches up
    e.flush_audit()
    after = e.check("user:ann", "doc:read")
    assert after
    assert after.decision_id is not None
    acknowledged.append(after.decision_id)
    e.close()
    logged = logged_ids(tmp_path / "a")
    assert sorted(set(logged)) == sorted(logged)  # each once
    assert set(acknowledged) <= set(logged)
    events = [r.kind for r in audit.read(tmp_path / "a", kind="audit_error")]
    assert events == ["audit_error"]
    report = audit.verify(tmp_path / "a")
    assert report.ok, report


def test_write_errors_in_best_effort_mode_are_declared_gaps(tmp_path: Path) -> None:
    e = charter.Engine.from_dict(POLICY)
    writer = e.audit_to(tmp_path / "a", mode="best_effort", flush_interval=0.001)
    disk = FlakyDisk()
    writer.write_fn = disk
    e.check("user:ann", "doc:read")
    e.flush_audit()
    disk.full.set()
    lost = [e.check("user:ann", "doc:read") for _ in range(50)]
    assert all(d.allowed for d in lost)  # best effort keeps deciding
    e.flush_audit()
    disk.full.clear()
    kept = e.check("user:ann", "doc:read")
    e.close()
    dropped = list(audit.read(tmp_path / "a", kind="records_dropped"))
    assert dropped, "lost records must be declared in the log"
    logged = set(logged_ids(tmp_path / "a"))
    assert kept.decision_id in logged
    assert not {d.decision_id for d in lost} & logged
    report = audit.verify(tmp_path / "a")
    assert report.ok, report  # the gap is declared, so it is not tampering


def test_full_buffer_in_best_effort_mode_counts_drops(tmp_path: Path) -> None:
    e = charter.Engine.from_dict(POLICY)
    writer = e.audit_to(tmp_path / "a", mode="best_effort", buffer_records=16, flush_interval=0.001)
    gate = threading.Event()

    def slow(fd: int, data: memoryview) -> int:
        gate.wait(30)
        return os.write(fd, data)

    writer.write_fn = slow
    decisions = [e.check("user:ann", "doc:read") for _ in range(2_000)]
    assert all(decisions)
    gate.set()
    e.close()
    unrecorded = [d for d in decisions if d.decision_id is None]
    assert unrecorded
    declared = sum(r.fields["count"] for r in audit.read(tmp_path / "a", kind="records_dropped"))  # type: ignore[union-attr]
    status = e.audit_status()
    assert status is not None
    # Dropped records are all counted: declared in the log, or (after close) in the status.
    assert declared + status["dropped"] >= len(unrecorded)
    assert set(logged_ids(tmp_path / "a")) == {d.decision_id for d in decisions if d.decision_id}


def test_strict_buffer_full_waits_for_the_writer(tmp_path: Path) -> None:
    """A full buffer with a healthy (slow) writer: decisions wait for room rather than being denied."""
    e = charter.Engine.from_dict(POLICY)
    writer = e.audit_to(tmp_path / "a", buffer_records=8, block_timeout=10.0, flush_interval=0.001)

    def slow(fd: int, data: memoryview) -> int:
        time.sleep(0.002)
        return os.write(fd, data)

    writer.write_fn = slow
    decisions = [e.check("user:ann", "doc:read") for _ in range(200)]
    e.close()
    assert all(d.allowed for d in decisions)
    assert logged_ids(tmp_path / "a") == [d.decision_id for d in decisions]


LOAD = textwrap.dedent(
    """
    import sys, charter
    e = charter.Engine.from_dict({policy!r})
    e.audit_to(sys.argv[1], fsync="batch", flush_interval=0.002)
    i = 0
    while True:
        d = e.check("user:ann", "doc:read", f"notes/{{i}}")
        i += 1
        if i % 500 == 0:
            e.flush_audit()
            print(d.decision_id, flush=True)
    """
)


def test_sigkill_during_load_then_verify_and_resume(tmp_path: Path) -> None:
    d = tmp_path / "a"
    proc = subprocess.Popen(
        [sys.executable, "-c", LOAD.format(policy=POLICY), str(d)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    flushed = [proc.stdout.readline().strip() for _ in range(5)]
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    proc.stdout.close()
    report = audit.verify(d)
    assert report.ok, report
    logged = logged_ids(d)
    # Everything flushed before the kill is there, once, in order.
    assert set(flushed) <= set(logged)
    seqs = [int(x.split("-")[1]) for x in logged]
    assert seqs == sorted(set(seqs))
    # A new writer picks up after the last complete batch; the chain still verifies.
    e = charter.Engine.from_dict(POLICY)
    e.audit_to(d)
    resumed = e.check("user:ann", "doc:read")
    e.close()
    assert int(str(resumed.decision_id).split("-")[1]) > seqs[-1]
    after = audit.verify(d)
    assert after.ok, after
    assert not after.warnings, after
    assert resumed.decision_id in logged_ids(d)
