"""Policy tooling benchmarks (issue: policy authoring and change safety).

Shadow evaluation's cost on a single `engine.check` from Python: the same
10,000 calls with and without a candidate policy shadowing the live one
(the core workload's policy with one role's grants changed, so a share of
the decisions disagree). Target: under 2x the single check. No speed
assertions.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

import charter
import workload as wl

N_CALLS = wl.scaled(10_000)


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    policy, engine, _, handles = wl.build_workload()
    _, shadowed, _, _ = wl.build_workload()  # the same agents, so the same handles
    candidate = copy.deepcopy(policy)
    role = sorted(candidate["roles"])[0]
    candidate["roles"][role]["allow"] = candidate["roles"][role].get("allow", [])[1:]
    shadowed.shadow(candidate)
    h, a = wl.draw_requests(handles, len(engine.actions), N_CALLS)
    pairs = [(int(h[i]), engine.actions[int(a[i])]) for i in range(N_CALLS)]
    return {"plain": engine, "shadowed": shadowed, "pairs": pairs}


@pytest.mark.parametrize("impl", ["no shadow", "with shadow"])
def test_shadow_single_check(benchmark: Any, setup: dict[str, Any], impl: str) -> None:
    engine: charter.Engine = setup["plain" if impl == "no shadow" else "shadowed"]
    pairs = setup["pairs"]
    check = engine.check

    def run() -> None:
        for h, a in pairs:
            check(h, a)

    benchmark.pedantic(run, rounds=60, iterations=1, warmup_rounds=2)
    report = engine.shadow_report()
    extra = {} if report is None else {"disagreement_share": report.disagreements / max(report.decisions, 1)}
    wl.record_timing(
        benchmark,
        "policy tools: single engine.check from Python with a shadow candidate (10,000 calls/round)",
        impl,
        fn=run,
        work=len(pairs),
        unit="ns/call",
        per_op_ns=True,
        baseline=impl == "no shadow",
        pairs=20 if impl == "with shadow" else 0,
        extra=extra,
    )
