"""One engine's link to the fleet's shared state: publishing its changes, following everyone else's.

A background thread subscribes to the events channel, then reads the whole
state and applies what differs (subscribing first, so nothing published in
between is missed), then applies events as they come. It pings Redis every
`ping_interval` seconds; when Redis cannot be reached (down, or paused and
not answering within `timeout`) the engine keeps serving from its local
state, changes made here are held in an outbox, and the thread reconnects
with backoff. On reconnecting it sends the outbox in order, re-reads the
whole state and applies the differences, so no revocation made meanwhile is
missed. A store whose generation id changed (it lost its data: restarted
without persistence) is first re-seeded with what this engine holds.

Changes are applied through `dispatch` (by default in the thread itself; a
server passes its event loop's `call_soon_threadsafe` so they run between
requests), each inside `engine.local_changes()` so they are not published
again.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import redis

from charter import errors
from charter.revocation_records import Revocation
from charter.shared.quotas import QuotaLeaser
from charter.shared.store import Event, FleetState, SharedStore, decode_event

if TYPE_CHECKING:
    from charter.engine import Engine

__all__ = ["SharedState"]

log = logging.getLogger("charter.shared")
log.addHandler(logging.NullHandler())

Dispatch = Callable[[Callable[[], None]], object]

_FAILURES: tuple[type[Exception], ...] = (redis.RedisError, OSError)


def _immediately(call: Callable[[], None]) -> None:
    call()


def redacted(url: str) -> str:
    """`url` without its password (for logs and stats)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class SharedState:
    """Follows and feeds the fleet's shared state for one engine (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        url: str,
        *,
        namespace: str = "charter",
        timeout: float = 0.5,
        ping_interval: float = 0.5,
        dispatch: Dispatch | None = None,
        quotas: bool = True,
        max_lease: int = 64,
        on_outage: str = "deny",
    ) -> None:
        self.engine = engine
        self.url = url
        self.store = SharedStore(url, namespace=namespace, timeout=timeout)
        self.quotas: QuotaLeaser | None = None
        """The leases of the fleet's quotas, when quotas are shared (docs/multi-host.md)."""
        if quotas:
            self.quotas = QuotaLeaser(
                engine, self.store.client, namespace=namespace, max_lease=max_lease, on_outage=on_outage
            )
        self.origin = secrets.token_hex(8)
        self.ping_interval = ping_interval
        self._dispatch: Dispatch = dispatch or _immediately
        self._lock = threading.Lock()
        self._outbox: collections.deque[Event] = collections.deque()
        self._connected = False
        self._generation: str | None = None
        self._stop = threading.Event()
        self._synced = threading.Event()
        """Set once the store's state has been read (the dispatcher applies it next)."""
        self._thread: threading.Thread | None = None
        self.fleet_frozen = False
        """Whether the fleet froze this engine (a fleet `unfreeze` lifts only such a freeze)."""
        self.frozen_until_synced = False
        """Whether the engine was frozen because it never reached the store (lifted at the first sync)."""
        self.counters = {"events_applied": 0, "resyncs": 0, "disconnects": 0, "published": 0}
        self.last_error: str | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self, *, wait: float = 5.0) -> bool:
        """Start following; wait up to `wait` seconds for the first sync. Whether it happened.

        An engine that has not synced cannot know what the fleet revoked, so
        it is frozen (every decision `frozen`) until the first sync succeeds.
        """
        self._thread = threading.Thread(target=self._run, name="charter-shared-state", daemon=True)
        self._thread.start()
        if self.quotas is not None:
            self.quotas.start()
        if self._synced.wait(wait):
            return True
        log.error(
            "shared state %s unreachable: denying every decision until it is reached", redacted(self.url)
        )
        self._dispatch(self._freeze_until_synced)
        return False

    def close(self) -> None:
        """Stop following (changes are no longer published) and close the connections."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self.quotas is not None:
            self.quotas.close()
        self.store.close()

    @property
    def connected(self) -> bool:
        return self._connected

    def status(self) -> dict[str, Any]:
        """What a server reports in its stats: the store, whether it is reached, counters."""
        return {
            "url": redacted(self.url),
            "connected": self._connected,
            "outbox": len(self._outbox),
            "frozen_until_synced": self.frozen_until_synced,
            "last_error": self.last_error,
            **self.counters,
            "quota_leases": None if self.quotas is None else self.quotas.status(),
        }

    # ------------------------------------------------------------ publishing

    def publish(self, event: Event) -> None:
        """Write `event` to the store and broadcast it; held in the outbox while Redis is away."""
        with self._lock:
            if not self._connected or self._outbox:
                self._outbox.append(event)
                return
            try:
                self.store.write(event)
                self.counters["published"] += 1
            except _FAILURES as err:
                self._outbox.append(event)
                self._lost(err)
                log.warning("change held locally until the shared state is reached again: %s", event.op)

    def event(self, op: str, **fields: Any) -> Event:
        return Event(op, self.origin, at=time.time(), **fields)

    # ------------------------------------------------------------ following

    def _run(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            sub = None
            try:
                sub = self.store.pubsub()
                self._sync()
                backoff = 0.05
                self._listen(sub)
            except _FAILURES as err:
                with self._lock:
                    self._lost(err)
            finally:
                if sub is not None:
                    with contextlib.suppress(*_FAILURES):
                        sub.close()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 1.0)

    def _lost(self, err: BaseException) -> None:
        """Redis went away (caller holds `_lock`)."""
        self.last_error = str(err) or type(err).__name__
        if self._connected:
            self._connected = False
            self.counters["disconnects"] += 1
            log.warning("lost the shared state %s, serving from local state: %s", redacted(self.url), err)

    def _sync(self) -> None:
        """Send the outbox, re-seed a store that lost its data, read everything and apply it."""
        generation = self.store.generation()
        with self._lock:
            while self._outbox:
                self.store.write(self._outbox[0])
                self._outbox.popleft()
                self.counters["published"] += 1
            if generation != self._generation:
                self._seed()
                self._generation = self.store.generation()
            state = self.store.read()
            self._connected = True
        self._synced.set()
        if self.counters["disconnects"] and self.last_error is not None:
            log.info("shared state %s reached again; resynchronised", redacted(self.url))
            self.last_error = None
        self.counters["resyncs"] += 1
        self._dispatch(lambda: self._apply_state(state))

    def _seed(self) -> None:
        """Put what this engine holds into a store that does not know it (first contact, or lost data)."""
        refused = self.engine.revocations
        now = time.time()
        records = [Revocation("jti", j, now) for j in refused.jtis]
        records += [Revocation("agent", a, now) for a in refused.agents]
        records += [Revocation("principal", p, cutoff) for p, cutoff in refused.principals.items()]
        self.store.seed(
            records,
            dict(refused.suspended),
            frozen=self.fleet_frozen,
            policy=(self.engine.policy_version, self.engine.policy_document()),
            origin=self.origin,
        )

    def _listen(self, sub: Any) -> None:
        next_ping = time.monotonic() + self.ping_interval
        while not self._stop.is_set():
            message = sub.get_message(timeout=self.ping_interval)
            if message is not None and message.get("type") == "message":
                event = decode_event(message["data"])
                if event is None:
                    log.warning("ignored a malformed message on %s", self.store.channel)
                elif event.op == "resync":
                    self._sync()
                elif event.origin != self.origin:
                    self._dispatch(lambda event=event: self._apply_event(event))  # type: ignore[misc]
            if time.monotonic() >= next_ping:
                self.store.ping()  # a paused Redis answers nothing: this times out
                next_ping = time.monotonic() + self.ping_interval

    # ------------------------------------------------------------ applying (on the dispatch thread)

    def _apply_event(self, event: Event) -> None:
        try:
            with self.engine.local_changes():
                self._apply(event)
            self.counters["events_applied"] += 1
        except Exception:
            log.exception("could not apply a shared-state change (%s)", event.op)

    def _apply(self, event: Event) -> None:
        engine, refused = self.engine, self.engine.revocations
        if event.op == "revoke" and event.id is not None:
            if event.kind == "agent" and event.id not in refused.agents:
                engine.revoke(agent=event.id, reason=event.reason)
            elif event.kind == "jti" and event.id not in refused.jtis:
                engine.revoke(jti=event.id, reason=event.reason)
            elif event.kind == "principal" and event.at > refused.principals.get(event.id, -1.0):
                engine.revoke(principal=event.id, reason=event.reason)
        elif event.op == "suspend" and event.id is not None:
            if refused.suspended.get(event.id) != (event.reason or "suspended"):
                _unless_unknown(engine.suspend, event.id, event.reason or "suspended")
        elif event.op == "resume" and event.id is not None:
            if event.id in refused.suspended:
                _unless_unknown(engine.resume, event.id)
        elif event.op == "freeze":
            self.fleet_frozen = True
            if not engine.frozen:
                engine.freeze()
        elif event.op == "unfreeze":
            if self.fleet_frozen and engine.frozen:
                engine.unfreeze()
            self.fleet_frozen = False
        elif event.op == "policy" and event.version is not None and event.document is not None:
            self._adopt_policy(event.version, event.document)

    def _apply_state(self, state: FleetState) -> None:
        """Make this engine hold what the store holds (after a reconnect or at the start)."""
        try:
            with self.engine.local_changes():
                for rec in state.revoked:
                    self._apply(Event("revoke", "", at=rec.at, kind=rec.kind, id=rec.id, reason=rec.reason))
                held = dict(self.engine.revocations.suspended)
                for ident, why in state.suspended.items():
                    if held.get(ident) != why:
                        _unless_unknown(self.engine.suspend, ident, why)
                for ident in held.keys() - state.suspended.keys():
                    _unless_unknown(self.engine.resume, ident)
                self._apply(Event("freeze" if state.frozen else "unfreeze", ""))
                if state.policy is not None:
                    self._adopt_policy(*state.policy)
                if self.frozen_until_synced:
                    self.frozen_until_synced = False
                    if not state.frozen and self.engine.frozen:
                        self.engine.unfreeze()
                    log.info("shared state %s reached: decisions resume", redacted(self.url))
        except Exception:
            log.exception("could not apply the shared state")

    def _adopt_policy(self, version: str, document: str) -> None:
        engine = self.engine
        if engine.policy_version == version:
            return
        try:
            engine._reload(document.encode())
        except errors.CharterError as err:
            # Serving another policy than the fleet's could allow what the fleet denies.
            log.error("cannot apply the fleet's policy %s, denying every decision: %s", version, err)
            self.fleet_frozen = True
            engine.freeze()
            return
        log.info("adopted the fleet's policy %s", version)

    def _freeze_until_synced(self) -> None:
        if self._connected:
            return
        self.frozen_until_synced = True
        with self.engine.local_changes():
            if not self.engine.frozen:
                self.engine.freeze()


def _unless_unknown(call: Callable[..., object], *args: Any) -> None:
    # Not registered here: its credentials are refused when they come (identity).
    with contextlib.suppress(errors.UnknownSubjectError):
        call(*args)
