"""In-process measurements: single calls, batches, churn, memory; CPU from `time.process_time`.

Throughput and latency are measured in separate passes: timing each call
costs about as much as a call, so the throughput pass times only the whole
loop, and the latency pass times calls one by one (and reports the cost of
the timer itself, `timer_floor_ns`, which its figures include).
"""

from __future__ import annotations

import gc
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from charter.capacity.generator import Fleet, RequestSet

__all__ = [
    "PathResult",
    "cdf_points",
    "measure_batch",
    "measure_churn",
    "measure_single",
    "percentiles",
    "rss_bytes",
]

Progress = Callable[[int], None]

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
LATENCY_SAMPLE = 50_000
"""At most this many calls are timed one by one."""


def rss_bytes() -> int:
    """This process's resident set size (Linux `/proc/self/statm`; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def percentiles(samples_ns: npt.ArrayLike) -> dict[str, float]:
    """p50, p90, p99, p99.9 and max of latency samples, in nanoseconds."""
    arr = np.asarray(samples_ns, dtype=np.float64)
    if arr.size == 0:
        return {}
    out = {f"p{q:g}": float(v) for q, v in zip(PERCENTILES, np.percentile(arr, PERCENTILES), strict=True)}
    out["max"] = float(arr.max())
    return out


def cdf_points(samples_ns: npt.ArrayLike, points: int = 200) -> list[tuple[float, float]]:
    """(latency ns, share of requests at or below it): a downsampled CDF for the JSON and the plot."""
    arr = np.sort(np.asarray(samples_ns, dtype=np.float64))
    if arr.size == 0:
        return []
    qs = np.linspace(0.0, 1.0, min(points, arr.size))
    idx = np.minimum((qs * (arr.size - 1)).astype(int), arr.size - 1)
    return [(float(arr[i]), float((i + 1) / arr.size)) for i in idx]


@dataclass
class PathResult:
    """What one path measured. `cpu_s` is the CPU the deciding side spent (the server's, for `socket`)."""

    path: str
    decisions: int
    wall_s: float
    cpu_s: float
    allowed_share: float
    latency_ns: dict[str, float] = field(default_factory=dict)
    latency_of: str = "one decision"
    timer_floor_ns: float | None = None
    client_cpu_s: float | None = None
    notes: list[str] = field(default_factory=list)
    cdf: list[tuple[float, float]] = field(default_factory=list)

    @property
    def decisions_per_s(self) -> float:
        return self.decisions / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def cpu_s_per_million(self) -> float:
        """CPU seconds the deciding side spends per million decisions."""
        return self.cpu_s / self.decisions * 1e6 if self.decisions else 0.0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path,
            "decisions": self.decisions,
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "decisions_per_s": self.decisions_per_s,
            "cpu_s_per_million_decisions": self.cpu_s_per_million,
            "allowed_share": self.allowed_share,
            "latency_ns": self.latency_ns,
            "latency_of": self.latency_of,
            "timer_floor_ns": self.timer_floor_ns,
            "notes": self.notes,
            "latency_cdf": self.cdf,
        }
        if self.client_cpu_s is not None:
            out["client_cpu_s"] = self.client_cpu_s
            out["client_cpu_s_per_million_decisions"] = self.client_cpu_s / self.decisions * 1e6
        return out


def _timer_floor_ns(n: int = 20_000) -> float:
    """Median cost of the timing itself around a call that does nothing."""

    def nothing(*_: object) -> None:
        return None

    clock = time.perf_counter_ns
    samples = np.empty(n, dtype=np.int64)
    for i in range(n):
        t = clock()
        nothing(0, "a", None, None)
        samples[i] = clock() - t
    return float(np.median(samples))


def single_items(engine: Any, fleet: Fleet, reqs: RequestSet) -> list[tuple[int, str, str | None, Any]]:
    """The requests as `check` arguments: (handle, action name, resource, context)."""
    handles = fleet.handles.tolist()
    names = reqs.action_names
    return [
        (handles[a], names[k], r, reqs.context(i))
        for i, (a, k, r) in enumerate(
            zip(reqs.agents.tolist(), reqs.action_ids.tolist(), reqs.resources, strict=True)
        )
    ]


def measure_single(
    check: Callable[..., Any], items: Sequence[tuple[Any, ...]], progress: Progress | None = None
) -> PathResult:
    """One `check(*item)` call per item: a throughput pass over all, then a latency pass over a sample."""
    chunk = max(1, len(items) // 50)
    for item in items[: min(len(items), 2_000)]:  # warm caches and lazy structures
        check(*item)
    gc.collect()
    wall = cpu = 0.0
    for lo in range(0, len(items), chunk):
        part = items[lo : lo + chunk]
        c0, t0 = time.process_time(), time.perf_counter()
        for item in part:
            check(*item)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        if progress is not None:
            progress(lo + len(part))
    sample = items[: min(len(items), LATENCY_SAMPLE)]
    lat = np.empty(len(sample), dtype=np.int64)
    allowed = 0
    clock = time.perf_counter_ns
    for i, item in enumerate(sample):
        t = clock()
        d = check(*item)
        lat[i] = clock() - t
        allowed += bool(d)
    return PathResult(
        "single",
        len(items),
        wall,
        cpu,
        allowed / max(1, len(sample)),
        percentiles(lat),
        timer_floor_ns=_timer_floor_ns(),
        cdf=cdf_points(lat),
    )


@dataclass
class Batch:
    handles: npt.NDArray[np.uint64]
    actions: npt.NDArray[np.uint32]
    resources: list[str | None] | None
    context: dict[str, Any] | None


def make_batches(fleet: Fleet, reqs: RequestSet, size: int) -> list[Batch]:
    """The requests cut into `check_batch` inputs of `size` requests."""
    handles = fleet.handles[reqs.agents]
    out = []
    for lo in range(0, len(reqs), size):
        hi = min(lo + size, len(reqs))
        res = reqs.resources[lo:hi]
        out.append(
            Batch(
                np.ascontiguousarray(handles[lo:hi]),
                np.ascontiguousarray(reqs.action_ids[lo:hi]),
                res if any(r is not None for r in res) else None,
                reqs.context_columns(lo, hi),
            )
        )
    return out


def measure_batch(
    check_batch: Callable[..., npt.NDArray[np.bool_]],
    batches: Sequence[Batch],
    progress: Progress | None = None,
) -> PathResult:
    """One `check_batch` call per batch, each timed (latency is per batch)."""
    check_batch(batches[0].handles, batches[0].actions, batches[0].resources, batches[0].context)
    gc.collect()
    lat = np.empty(len(batches), dtype=np.int64)
    allowed = total = 0
    cpu = 0.0
    clock = time.perf_counter_ns
    for i, b in enumerate(batches):
        c0 = time.process_time()
        t = clock()
        out = check_batch(b.handles, b.actions, b.resources, b.context)
        lat[i] = clock() - t
        cpu += time.process_time() - c0
        allowed += int(np.count_nonzero(out))
        total += len(out)
        if progress is not None:
            progress(total)
    size = len(batches[0].handles)
    return PathResult(
        "batch",
        total,
        float(lat.sum()) / 1e9,
        cpu,
        allowed / max(1, total),
        percentiles(lat),
        latency_of=f"one batch of {size}",
        cdf=cdf_points(lat),
    )


@dataclass
class ChurnResult:
    """CPU and wall time per provision + deprovision pair."""

    pairs: int
    cpu_s: float
    wall_s: float

    @property
    def cpu_s_per_pair(self) -> float:
        return self.cpu_s / self.pairs if self.pairs else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "pairs": self.pairs,
            "cpu_s": self.cpu_s,
            "wall_s": self.wall_s,
            "cpu_us_per_pair": self.cpu_s_per_pair * 1e6,
            "pairs_per_s": self.pairs / self.wall_s if self.wall_s > 0 else 0.0,
        }


def measure_churn(
    provision: Callable[[], Any], deprovision: Callable[[Any], Any], pairs: int, window: int = 1_000
) -> ChurnResult:
    """Provision `pairs` agents and retire each `window` provisions later: a population turning over."""
    live: deque[Any] = deque()
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(pairs):
        live.append(provision())
        if len(live) > window:
            deprovision(live.popleft())
    for agent in live:
        deprovision(agent)
    return ChurnResult(pairs, time.process_time() - c0, time.perf_counter() - t0)


def measure_agent_memory(
    engine: Any, templates: Sequence[str], users: Sequence[str | None], ttl: float | None, n: int
) -> dict[str, float]:
    """Memory `n` more agents take in `engine` (a fresh one: nothing else allocating meanwhile).

    The (template, principal) pairs are drawn before the first reading, and
    each returned `Agent` is dropped at once, so the growth is the engine's.
    """
    pairs = [(templates[i % len(templates)], users[(i * 7919) % len(users)]) for i in range(n)]
    provision = engine.provision
    gc.collect()
    rss0, reg0 = rss_bytes(), float(engine.stats().get("registry_bytes", 0))
    for template, user in pairs:
        provision(template, on_behalf_of=user, ttl=ttl)
    gc.collect()
    rss1, reg1 = rss_bytes(), float(engine.stats().get("registry_bytes", 0))
    return {
        "agents": n,
        "rss_bytes_per_agent": max(0, rss1 - rss0) / n,
        "registry_bytes_per_agent": (reg1 - reg0) / n,
    }


_PROBE = """
import gc, json, sys, warnings
warnings.simplefilter("ignore")  # lint findings about the policy are not this probe's business
from charter.capacity.measure import rss_bytes, measure_agent_memory
from charter.capacity.hooks import hooks_named
import charter, msgspec
data = msgspec.json.decode(open(sys.argv[1], "rb").read())
args = json.loads(sys.argv[2])
gc.collect()
before = rss_bytes()
engine = charter.Engine.from_dict(data, hooks=hooks_named(data), allow_missing_hooks=True)
gc.collect()
base = rss_bytes() - before
per_agent = measure_agent_memory(engine, args["templates"], args["users"], args["ttl"], args["n"])
print(json.dumps({"engine_base_bytes": max(0, base), **per_agent}))
"""


def memory_in_fresh_interpreter(
    policy_json: Any, templates: Sequence[str], users: Sequence[str | None], ttl: float | None, n: int
) -> dict[str, float]:
    """The engine's memory with no agents, and per agent over `n` agents, measured in a fresh interpreter.

    (In this process, memory freed by earlier work would be reused and the growth understated.)
    """
    import json
    import subprocess
    import sys

    args = json.dumps({"templates": list(templates), "users": list(users), "ttl": ttl, "n": n})
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(policy_json), args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    try:
        result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"the memory probe failed: {done.stderr.strip()[-500:]}") from None
    return result
