"""Charter: authorization and governance for AI agents.

>>> import charter
>>> engine = charter.Engine.example()
>>> bool(engine.check("user:alice", "crm:read", "customers/42"))
True
"""

from charter._core import BUILD_PROFILE, REASONS, Agent, Decision, ManualClock
from charter._core import __version__ as __version__
from charter.engine import Engine
from charter.errors import (
    CapacityError,
    CharterError,
    InternalError,
    InvalidRequestError,
    PermissionDenied,
    PolicyError,
    ProvisionError,
    UnknownActionError,
    UnknownSubjectError,
)
from charter.explain import Explanation

__all__ = [
    "BUILD_PROFILE",
    "REASONS",
    "Agent",
    "CapacityError",
    "CharterError",
    "Decision",
    "Engine",
    "Explanation",
    "InternalError",
    "InvalidRequestError",
    "ManualClock",
    "PermissionDenied",
    "PolicyError",
    "ProvisionError",
    "UnknownActionError",
    "UnknownSubjectError",
]
