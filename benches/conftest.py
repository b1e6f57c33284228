"""Benchmark session plumbing: machine header, shared workload, summary table.

Run with `python -m pytest benches -q --benchmark-only` (see benches/README.md).
"""

from __future__ import annotations

import os

# numpy's OpenBLAS starts worker threads that spin on this 2-core machine and
# steal CPU from whatever is being measured (seen in perf as
# blas_thread_server); no benchmark here uses BLAS. Must precede numpy's import.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import gc
import platform
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import charter
import workload as wl

NON_RELEASE_OK = "CHARTER_BENCH_ALLOW_NON_RELEASE"
_T0 = time.perf_counter()


def _machine() -> str:
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return f"{cores} cores ({usable} usable), {wl.cpu_model()}"


def _build() -> str:
    return f"charter {charter.__version__}, BUILD_PROFILE={charter.BUILD_PROFILE}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "measurement: a benchmark-suite measurement without pytest-benchmark timing "
        "(still runs under --benchmark-only)",
    )


def _header() -> list[str]:
    lines = [
        f"machine: {_machine()}",
        f"build: {_build()} ({charter.__file__})",
        f"python {platform.python_version()}, numpy {np.__version__}",
    ]
    if charter.BUILD_PROFILE != "release":
        lines.append(f"WARNING: charter is a {charter.BUILD_PROFILE!r} build; figures are not representative")
    if wl.quick():
        lines.append("CHARTER_BENCH_QUICK=1: sizes reduced 10x (smoke run)")
    return lines


def pytest_report_header(config: pytest.Config) -> list[str]:
    del config
    return _header()


def pytest_sessionstart(session: pytest.Session) -> None:
    """`-q` hides the report header: print the machine and build anyway."""
    if session.config.get_verbosity() >= 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        for line in _header():
            reporter.write_line(line)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Let `measurement` tests run under --benchmark-only (pytest-benchmark skips tests without its fixture)."""
    del config
    for item in items:
        if item.get_closest_marker("measurement") is None:
            continue
        item.own_markers[:] = [
            m
            for m in item.own_markers
            if not (m.name == "skip" and "non-benchmark" in str(m.kwargs.get("reason", "")))
        ]


@pytest.fixture(scope="session", autouse=True)
def _release_build() -> None:
    """Refuse to benchmark a debug/dev build unless asked to (figures would mislead)."""
    if charter.BUILD_PROFILE != "release" and not os.environ.get(NON_RELEASE_OK):
        pytest.exit(
            f"charter.BUILD_PROFILE is {charter.BUILD_PROFILE!r}, not 'release': build with "
            f"`maturin build --release` (or set {NON_RELEASE_OK}=1 to run anyway)",
            returncode=2,
        )


@pytest.fixture(autouse=True)
def _frozen_heap() -> Iterator[None]:
    """Move the session's objects out of the cyclic GC's way while a benchmark runs.

    Otherwise a baseline that allocates containers (the dict registry) pays
    for full collections that traverse whatever the session holds (the 1M-
    element resource list, the baselines...), which depends on test order.
    """
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(scope="session")
def workload() -> dict[str, Any]:
    """The shared deployment and its baseline structures (built once per session)."""
    t = time.perf_counter()
    policy, engine, agents, handles = wl.build_workload(wl.SEED, wl.scaled(wl.N_AGENTS))
    users = sorted(policy["principals"])
    base = wl.compute_baseline(engine, agents, users)
    wl.NOTES.append(
        f"workload: {len(agents):,} agents, {len(engine.actions)} actions, "
        f"{len(policy['roles'])} roles (depth {wl.role_depth(policy)}), {len(users):,} users, "
        f"{len(policy['templates'])} templates; {base.allowed.mean():.1%} of (agent, action) "
        f"pairs allowed; setup {time.perf_counter() - t:.1f} s"
    )
    return {
        "policy": policy,
        "engine": engine,
        "agents": agents,
        "handles": handles,
        "users": users,
        "templates": sorted(policy["templates"]),
        "actions": engine.actions,
        "base": base,
    }


def _summary() -> list[str]:
    header = (
        f"charter core benchmarks (medians): {_build()}; {_machine()}; "
        f"session {time.perf_counter() - _T0:.0f} s"
    )
    return wl.summary_lines(header)


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = _summary()
    if not lines:
        return
    terminalreporter.section("charter benchmark summary", sep="=")
    for line in lines:
        terminalreporter.write_line(line)


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: Any, output_json: dict[str, Any]) -> None:
    """Put the summary (incl. the memory measurements) into `--benchmark-json` / `--benchmark-autosave` files."""
    del config, benchmarks
    output_json["charter_summary"] = [vars(r) for r in wl.RESULTS]
    output_json["charter_build"] = charter.BUILD_PROFILE
