"""State shared by a fleet of decision servers on Redis: revocations, suspensions, freeze, policy.

See docs/multi-host.md. `engine.use_shared_state(url)` (or `charter serve
--state URL`) attaches an engine; `SharedState` is the link it returns.
"""

from charter.shared.state import SharedState
from charter.shared.store import Event, FleetState, SharedStore

__all__ = ["Event", "FleetState", "SharedState", "SharedStore"]
