"""The fleet's shared state in Redis: the key layout, reading all of it, and writes that broadcast.

Keys, under a namespace (`charter` unless told otherwise):

    NS:revoked      hash  "KIND:ID" -> a revocation record (JSON: kind, id, at, reason, exp)
    NS:suspended    hash  agent or principal id -> why
    NS:frozen       string, present while the fleet is frozen (JSON: at)
    NS:policy       string (JSON: version, document), the fleet's policy
    NS:generation   string, a random id set once per store: a new one means the store lost its data
    NS:events       pub/sub channel: one JSON `Event` per change

Every write changes the state and publishes its event in one MULTI/EXEC
transaction, so a server that subscribed before it read the state misses
nothing: what it read already includes every event it did not receive, and
applying an event twice changes nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis

from charter.revocation_records import Revocation

__all__ = ["Event", "FleetState", "SharedStore"]

SUSPENSION_KINDS = ("suspend", "resume")


class Event(msgspec.Struct, frozen=True, omit_defaults=True):
    """One change, as broadcast on the events channel.

    `op` is `revoke` (`kind` jti/agent/principal and `id`), `suspend` (`id`,
    `reason`), `resume` (`id`), `freeze`, `unfreeze`, `policy` (`version`,
    `document`: the policy as a JSON text) or `resync` (read the whole state
    again: a server re-seeded a store that had lost its data).
    """

    op: str
    origin: str
    at: float = 0.0
    kind: str | None = None
    id: str | None = None
    reason: str | None = None
    exp: float | None = None
    version: str | None = None
    document: str | None = None


@dataclass
class FleetState:
    """Everything the store holds, read at once."""

    revoked: list[Revocation] = field(default_factory=list)
    suspended: dict[str, str] = field(default_factory=dict)
    frozen: bool = False
    policy: tuple[str, str] | None = None
    """(version, document JSON) of the fleet's policy, if one was published."""


class SharedStore:
    """One Redis database holding a fleet's revocations, suspensions, freeze and policy.

    Every call raises `redis.RedisError` (or `OSError`) when Redis cannot be
    reached within `timeout` seconds; callers decide what that means.
    """

    def __init__(self, url: str, *, namespace: str = "charter", timeout: float = 0.5) -> None:
        self.url = url
        self.client: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False
        )
        ns = namespace
        self.revoked_key, self.suspended_key = f"{ns}:revoked", f"{ns}:suspended"
        self.frozen_key, self.policy_key = f"{ns}:frozen", f"{ns}:policy"
        self.generation_key, self.channel = f"{ns}:generation", f"{ns}:events"

    def close(self) -> None:
        self.client.close()

    def ping(self) -> None:
        self.client.ping()

    def pubsub(self) -> Any:
        """A pub/sub connection subscribed to the events channel (the caller reads it)."""
        sub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        sub.subscribe(self.channel)
        return sub

    def generation(self) -> str:
        """The store's generation id, set now if the store has none (a new or wiped store)."""
        self.client.set(self.generation_key, secrets.token_hex(8), nx=True)
        value = self.client.get(self.generation_key)
        return value.decode() if isinstance(value, bytes) else str(value)

    def read(self) -> FleetState:
        """The whole state, in one transaction (one consistent view)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hgetall(self.revoked_key)
        pipe.hgetall(self.suspended_key)
        pipe.exists(self.frozen_key)
        pipe.get(self.policy_key)
        revoked, suspended, frozen, policy = pipe.execute()
        state = FleetState(
            revoked=[msgspec.json.decode(v, type=Revocation) for v in revoked.values()],
            suspended={k.decode(): v.decode() for k, v in suspended.items()},
            frozen=bool(frozen),
        )
        if policy is not None:
            doc = msgspec.json.decode(policy)
            state.policy = (str(doc["version"]), str(doc["document"]))
        return state

    def write(self, event: Event) -> None:
        """Make `event`'s change to the state and broadcast it, atomically."""
        pipe = self.client.pipeline(transaction=True)
        if event.op == "revoke":
            assert event.kind is not None
            assert event.id is not None
            rec = Revocation(event.kind, event.id, event.at, event.reason, event.exp)
            pipe.hset(self.revoked_key, f"{event.kind}:{event.id}", msgspec.json.encode(rec))
        elif event.op == "suspend":
            assert event.id is not None
            pipe.hset(self.suspended_key, event.id, event.reason or "suspended")
        elif event.op == "resume":
            assert event.id is not None
            pipe.hdel(self.suspended_key, event.id)
        elif event.op == "freeze":
            pipe.set(self.frozen_key, msgspec.json.encode({"at": event.at}))
        elif event.op == "unfreeze":
            pipe.delete(self.frozen_key)
        elif event.op == "policy":
            doc = {"version": event.version, "document": event.document}
            pipe.set(self.policy_key, msgspec.json.encode(doc))
        pipe.publish(self.channel, msgspec.json.encode(event))
        pipe.execute()

    def seed(
        self,
        revoked: Iterable[Revocation],
        suspended: dict[str, str],
        *,
        frozen: bool,
        policy: tuple[str, str] | None,
        origin: str,
    ) -> None:
        """Add what this server holds to a store that may have lost it (nothing already there is
        replaced), then tell every server to read the state again."""
        pipe = self.client.pipeline(transaction=True)
        for rec in revoked:
            pipe.hsetnx(self.revoked_key, f"{rec.kind}:{rec.id}", msgspec.json.encode(rec))
        for ident, why in suspended.items():
            pipe.hsetnx(self.suspended_key, ident, why)
        if frozen:
            pipe.set(self.frozen_key, b'{"at":0}', nx=True)
        if policy is not None:
            doc = msgspec.json.encode({"version": policy[0], "document": policy[1]})
            pipe.set(self.policy_key, doc, nx=True)
        if any(pipe.execute()):
            self.client.publish(self.channel, msgspec.json.encode(Event("resync", origin)))


def decode_event(data: bytes) -> Event | None:
    """An event from the channel, or None for a message that is not one (logged by the caller)."""
    try:
        return msgspec.json.decode(data, type=Event)
    except msgspec.DecodeError:
        return None
