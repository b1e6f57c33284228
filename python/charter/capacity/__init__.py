"""`charter bench`, the capacity-planning suite (docs/capacity.md).

- `scenario`: the TOML scenarios (`load`, `ScenarioError`); shipped ones in `scenarios/`.
- `generator`: the seeded policy generator, the agent fleet, the requests.
- `measure`, `socket_path`, `sidecar`: the in-process paths, the server on a temporary socket.
- `plan`: the capacity model; `compare`, `peers`: the same workload in pycasbin and cedarpy.
- `runner`: one scenario end to end; `report`, `plots`, `machine`, `progress`, `audit`, `hooks`.
"""

from charter.capacity.plan import Plan, PlanInputs, plan
from charter.capacity.scenario import Scenario, ScenarioError, load, shipped

__all__ = ["Plan", "PlanInputs", "Scenario", "ScenarioError", "load", "plan", "shipped"]
