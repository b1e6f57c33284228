"""Charter: authorization and governance for AI agents.

>>> import charter
>>> engine = charter.Engine.example()
>>> bool(engine.check("user:alice", "crm:read", "customers/42"))
True
"""

from charter._core import BUILD_PROFILE, REASONS, Agent, Decision, Lease, ManualClock
from charter._core import __version__ as __version__
from charter.engine import Engine
from charter.errors import (
    AuthenticationError,
    CapacityError,
    CharterError,
    InternalError,
    InvalidRequestError,
    PermissionDenied,
    PolicyError,
    ProvisionError,
    ServerUnavailable,
    UnknownActionError,
    UnknownSubjectError,
)
from charter.explain import Explanation

__all__ = [
    "BUILD_PROFILE",
    "REASONS",
    "Agent",
    "AuthenticationError",
    "CapacityError",
    "CharterError",
    "Decision",
    "Engine",
    "Explanation",
    "InternalError",
    "InvalidRequestError",
    "Lease",
    "ManualClock",
    "PermissionDenied",
    "PolicyError",
    "ProvisionError",
    "ServerUnavailable",
    "UnknownActionError",
    "UnknownSubjectError",
]
