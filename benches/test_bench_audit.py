"""Audit benchmarks (issue: audit trail).

1. Sustained `check_batch` throughput over the core workload (256 actions,
   10,000 agents, 1,000,000 requests a round) with auditing off, and on
   (strict, `fsync = "batch"`, the defaults): an audited round ends when its
   last record is written and fsynced (`flush_audit`), so the figure is what
   the log sustains, not what the buffer absorbs.
2. The same with two threads calling `check_batch` (GIL released).
3. A single `engine.check` from Python, audited and not (10,000 calls a round),
   and the latency distribution of single checks (p50, p99, p99.9 of 200,000
   calls timed one by one), from which the added latency is read.
4. Bytes written per decision.

The audit directory is on the same disk as everything else on this machine
(`tmp_path`); finished log files are deleted between rounds so a run does not
fill the disk. No speed assertions.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import charter
import workload as wl

N_BATCH = wl.scaled(1_000_000)
N_SINGLE = wl.scaled(10_000)
N_LATENCY = wl.scaled(200_000)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    _, plain, agents, handles = wl.build_workload()
    _, audited, _, _ = wl.build_workload()
    directory = tmp_path_factory.mktemp("audit")
    audited.audit_to(directory)
    h, a = wl.draw_requests(handles, len(plain.actions), N_BATCH)
    ids = [ag.id for ag in agents]
    pairs = [(int(h[i]), plain.actions[int(a[i])]) for i in range(N_SINGLE)]
    yield {"plain": plain, "audited": audited, "h": h, "a": a, "pairs": pairs, "ids": ids, "dir": directory}
    audited.close()
    shutil.rmtree(directory, ignore_errors=True)


def prune(directory: Path) -> None:
    """Delete every log file but the newest (the writer keeps appending to it)."""
    files = sorted(directory.glob("audit-*.jsonl"))
    for f in files[:-1]:
        f.unlink()


@pytest.mark.parametrize("impl", ["auditing off", "auditing on"])
def test_audited_batch_throughput(benchmark: Any, setup: dict[str, Any], impl: str) -> None:
    engine: charter.Engine = setup["plain" if impl == "auditing off" else "audited"]
    h, a = setup["h"], setup["a"]

    def run() -> None:
        engine.check_batch(h, a)
        if impl == "auditing on":
            engine.flush_audit(timeout=120)

    run()
    benchmark.pedantic(run, rounds=8, iterations=1, warmup_rounds=0, setup=lambda: prune(setup["dir"]))
    prune(setup["dir"])
    extra: dict[str, Any] = {}
    if impl == "auditing on":
        status = engine.audit_status()
        assert status is not None
        per = status["bytes"] / max(status["records"], 1)
        extra = {"bytes_per_record": per, "fsyncs": status["fsyncs"], "batches": status["batches"]}
        wl.record_measurement(
            "audit: log size",
            "bytes written per record (core workload decisions, seals and headers included)",
            per,
            "B/record",
            note=f"{status['records']:,} records in {status['batches']:,} batches, {status['fsyncs']:,} fsyncs",
        )
    wl.record_timing(
        benchmark,
        "audit: check_batch, 1,000,000 requests over 10,000 agents (one thread)",
        f"{impl}" + (" (strict, fsync per batch, until written)" if impl == "auditing on" else ""),
        fn=run,
        work=len(h),
        unit="decisions/s",
        per_op_ns=False,
        baseline=impl == "auditing off",
        pairs=3,
        extra=extra,
    )


def test_audited_batch_two_threads(benchmark: Any, setup: dict[str, Any]) -> None:
    engine: charter.Engine = setup["audited"]
    h, a = setup["h"], setup["a"]
    half = len(h) // 2
    parts = [(h[:half], a[:half]), (h[half:], a[half:])]

    def run() -> None:
        threads = [threading.Thread(target=engine.check_batch, args=p) for p in parts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        engine.flush_audit(timeout=120)

    benchmark.pedantic(run, rounds=6, iterations=1, warmup_rounds=1, setup=lambda: prune(setup["dir"]))
    prune(setup["dir"])
    wl.record_timing(
        benchmark,
        "audit: check_batch, two threads, until written",
        "auditing on (strict, fsync per batch)",
        fn=run,
        work=len(h),
        unit="decisions/s",
        per_op_ns=False,
    )


@pytest.mark.parametrize("impl", ["auditing off", "auditing on"])
def test_audited_single_check(benchmark: Any, setup: dict[str, Any], impl: str) -> None:
    engine: charter.Engine = setup["plain" if impl == "auditing off" else "audited"]
    pairs = setup["pairs"]
    check = engine.check

    def run() -> None:
        for hnd, act in pairs:
            check(hnd, act)

    benchmark.pedantic(run, rounds=60, iterations=1, warmup_rounds=2)
    prune(setup["dir"])
    wl.record_timing(
        benchmark,
        "audit: single engine.check from Python (10,000 calls/round)",
        impl,
        fn=run,
        work=len(pairs),
        unit="ns/call",
        per_op_ns=True,
        baseline=impl == "auditing off",
        pairs=20,
    )


def test_single_check_latency_percentiles(benchmark: Any, setup: dict[str, Any]) -> None:
    """Each call timed on its own: p50/p99/p99.9 with and without auditing, interleaved in blocks."""
    pairs = setup["pairs"]
    lat: dict[str, list[int]] = {"off": [], "on": []}
    clock = time.perf_counter_ns

    def sample(engine: charter.Engine, out: list[int]) -> None:
        check = engine.check
        for hnd, act in pairs:
            t0 = clock()
            check(hnd, act)
            out.append(clock() - t0)

    def run() -> None:
        for _ in range(max(1, N_LATENCY // len(pairs))):
            sample(setup["plain"], lat["off"])
            sample(setup["audited"], lat["on"])

    benchmark.pedantic(run, rounds=1, iterations=1)
    prune(setup["dir"])
    group = "audit: single check latency, each call timed (ns, includes ~40 ns of timer)"
    for q in (50, 99, 99.9):
        off = float(np.percentile(lat["off"], q))
        on = float(np.percentile(lat["on"], q))
        wl.record_measurement(group, f"p{q} auditing off", off, "ns")
        wl.record_measurement(group, f"p{q} auditing on", on, "ns", note=f"added {on - off:+.0f} ns")
    benchmark.extra_info.update(
        {f"p{q}_{k}_ns": float(np.percentile(v, q)) for q in (50, 99, 99.9) for k, v in lat.items()}
    )
