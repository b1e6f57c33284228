"""The capacity plan: from measured costs to the cores and memory a fleet needs.

The model (linear in load, stated so it can be checked):

- demand `D = N * r / 60` decisions a second, for `N` agents each asking
  `r` decisions a minute; churn `C` provisions (and as many expiries) a second.
- busy cores `B = D * c + C * k`: `c` the CPU seconds one decision costs on
  the path (measured: CPU time / decisions; for the socket path the server's
  CPU), `k` the CPU seconds one provision + deprovision pair costs.
- cores `= B / (1 - h)` at headroom `h` (h = 0.3 plans for 70% utilisation),
  rounded up to whole cores.
- memory `= (M0 + N * m) / (1 - h)`: `M0` the engine with its policy and no
  agents, `m` the memory one live agent adds (both measured as RSS growth).
- processes `= D / (X * (1 - h))`, rounded up: `X` the decisions a second
  one process delivered on the path (a process decides on one thread at a
  time, so a fleet needing more than one core needs that many processes:
  application workers in-process, `--workers` for the server).
- audit `= D * a` bytes a second, `a` the audit bytes one decision wrote.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Plan", "PlanInputs", "plan"]

GIB = float(1 << 30)


@dataclass(frozen=True)
class PlanInputs:
    """What the plan is computed from (the scenario's fleet and the measured costs)."""

    agents: int
    per_agent_per_minute: float
    churn_per_second: float
    cpu_s_per_decision: float
    cpu_s_per_churn: float
    base_bytes: float
    bytes_per_agent: float
    headroom: float
    decisions_per_s_per_process: float | None = None
    audit_bytes_per_decision: float | None = None


@dataclass(frozen=True)
class Plan:
    """The plan's figures (see the module docstring for the model)."""

    demand_per_s: float
    busy_cores: float
    cores: float
    whole_cores: int
    memory_bytes: float
    processes: int | None
    audit_bytes_per_s: float | None
    headroom: float

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GIB

    def sentence(self) -> str:
        """`this fleet needs 2 cores and 0.25 GiB at 30% headroom (...)`."""
        procs = f", {self.processes} process(es)" if self.processes is not None else ""
        text = (
            f"this fleet needs {self.whole_cores} core(s) and {self.memory_gib:.2f} GiB "
            f"at {self.headroom:.0%} headroom ({self.cores:.3g} cores for {self.demand_per_s:,.0f} "
            f"decisions/s{procs})"
        )
        if self.audit_bytes_per_s is not None:
            text += f"; audit {self.audit_bytes_per_s / 1e6:.2f} MB/s ({self.audit_bytes_per_s * 86400 / GIB:.1f} GiB/day)"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "memory_gib": self.memory_gib, "sentence": self.sentence()}


def plan(i: PlanInputs) -> Plan:
    """Apply the model to one path's measurements."""
    if not 0.0 <= i.headroom < 1.0:
        raise ValueError("headroom is a share in [0, 1)")
    utilisation = 1.0 - i.headroom
    demand = i.agents * i.per_agent_per_minute / 60.0
    busy = demand * i.cpu_s_per_decision + i.churn_per_second * i.cpu_s_per_churn
    cores = busy / utilisation
    processes = None
    if i.decisions_per_s_per_process:
        processes = max(1, math.ceil(demand / (i.decisions_per_s_per_process * utilisation) - 1e-9))
    audit = None if i.audit_bytes_per_decision is None else demand * i.audit_bytes_per_decision
    return Plan(
        demand_per_s=demand,
        busy_cores=busy,
        cores=cores,
        whole_cores=max(1, math.ceil(cores - 1e-9)),
        memory_bytes=(i.base_bytes + i.agents * i.bytes_per_agent) / utilisation,
        processes=processes,
        audit_bytes_per_s=audit,
        headroom=i.headroom,
    )
