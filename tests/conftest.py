"""Shared fixtures for Charter's Python tests.

Fixtures:

- ``example_engine``: ``charter.Engine.example()`` on the system clock.
- ``policy_dict``: a factory ``policy_dict(**top_level_overrides) -> dict`` returning a fresh deep copy of
  ``SMALL_POLICY`` (a small, valid policy) with the given top-level keys replaced.
- ``clock``: a ``charter.ManualClock`` standing at ``CLOCK_START`` (Unix seconds).
- ``clocked_engine``: ``charter.Engine.from_dict(SMALL_POLICY, clock=clock)``.
- ``clocked_example``: ``charter.Engine.example(clock=clock)``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import charter
from redis_helpers import RedisServer
from redis_helpers import redis_server as start_redis_server

CLOCK_START = 1_700_000_000.0
"""Where the manual clock starts (2023-11-14, Unix seconds)."""

SMALL_POLICY: dict[str, Any] = {
    "actions": ["db:read", "db:write", "db:drop", "mail:read", "mail:send"],
    "resources": {
        "secret": ["secret/**"],
        "pii": ["customers/*", "users/*/profile"],
    },
    "roles": {
        "reader": {
            "allow": ["db:read", "mail:read"],
            "deny": [{"action": "db:read", "on": ["@secret"]}],
        },
        "writer": {
            "inherits": ["reader"],
            "allow": ["db:write", {"action": "mail:send", "on": ["outbox/**"]}],
        },
        "admin": {
            "inherits": ["writer"],
            "allow": ["*"],
            "deny": ["db:drop"],
        },
    },
    "principals": {
        "user:r": {"roles": ["reader"]},
        "user:w": {"roles": ["writer"]},
        "user:a": {"roles": ["admin"], "attributes": {"team": "ops"}},
    },
    "templates": {
        "reader-bot": {"roles": ["reader"], "ttl": 60, "max_ttl": 600},
        "writer-bot": {"roles": ["writer"], "ttl": "10m", "max_delegation_depth": 2},
        "admin-bot": {"roles": ["admin"]},
    },
}
"""A small valid policy: `reader` < `writer` < `admin`, three principals, three templates."""


def make_policy(**overrides: Any) -> dict[str, Any]:
    """A fresh deep copy of `SMALL_POLICY` with top-level keys replaced."""
    doc = copy.deepcopy(SMALL_POLICY)
    doc.update(copy.deepcopy(overrides))
    return doc


@pytest.fixture
def example_engine() -> charter.Engine:
    """The example policy shipped with charter, on the system clock."""
    return charter.Engine.example()


@pytest.fixture
def policy_dict() -> Callable[..., dict[str, Any]]:
    """Factory: ``policy_dict(**top_level_overrides)`` -> a fresh copy of the small policy."""
    return make_policy


@pytest.fixture
def clock() -> charter.ManualClock:
    """A manual clock at `CLOCK_START`."""
    return charter.ManualClock(CLOCK_START)


@pytest.fixture
def clocked_engine(clock: charter.ManualClock) -> charter.Engine:
    """The small policy on the manual clock."""
    return charter.Engine.from_dict(make_policy(), clock=clock)


@pytest.fixture
def clocked_example(clock: charter.ManualClock) -> charter.Engine:
    """The example policy on the manual clock."""
    return charter.Engine.example(clock=clock)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server of the test's own, on a free port (skipped without the binary outside CI)."""
    with start_redis_server() as server:
        yield server
