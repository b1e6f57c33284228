"""Fleet-wide quotas: each engine leases slices of every quota cell's allowance from Redis.

The decision path stays local: the engine charges its own GCRA cells as
without a fleet, then takes the same units from the cell's lease (one
compare-and-swap); a cell whose lease is used up denies `quota_unavailable`.
This module's background thread keeps the leases filled. Every few
milliseconds it asks the engine which cells are registered (a cell
registers itself the first time its lease runs dry), estimates each cell's
rate of use, and in one pipelined round trip runs `LEASE_SCRIPT` for every
cell that needs more: a GCRA debit on Redis, under the cell's rate or
budget, that grants up to the requested units. Leases adapt to the observed
rate (about `horizon` seconds of use, at most `max_lease` units), and a
cell idle for `idle_after` seconds gives its unused units back.

A cell may admit one request on credit when its lease is empty (so the
first request of an agent does not wait for Redis); the debt is repaid from
its next grant, and until then the cell admits nothing. The bound this
gives is in docs/multi-host.md.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from charter.errors import InvalidRequestError

if TYPE_CHECKING:
    from charter.engine import Engine

__all__ = ["LEASE_SCRIPT", "QuotaLeaser"]

log = logging.getLogger("charter.shared")
log.addHandler(logging.NullHandler())

_FAILURES: tuple[type[Exception], ...] = (redis.RedisError, OSError)

LEASE_SCRIPT = """
-- KEYS[1]: the cell's key; its value is the GCRA theoretical arrival time (TAT)
-- in microseconds of Redis's clock. ARGV: interval_ns, burst, owed, want, back.
-- Gives `back` units back, debits `owed` units unconditionally (requests
-- already admitted on credit), then grants up to `want` units the cell has
-- room for. Returns the units granted.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local t = tonumber(ARGV[1]) / 1000
local cap = t * tonumber(ARGV[2])
local owed = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local back = tonumber(ARGV[5])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
tat = tat - back * t
if tat < now then tat = now end
tat = tat + owed * t
local free = math.floor((now + cap - tat) / t + 1e-6)
local granted = math.max(0, math.min(want, free))
tat = tat + granted * t
local ttl = math.floor((tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.17g', tat), 'PX', ttl)
return granted
"""
_SHA = hashlib.sha1(LEASE_SCRIPT.encode()).hexdigest()


@dataclass
class _Cell:
    """What the leaser knows of one registered cell."""

    handle: int
    key: str
    units: int = 0
    """Units the cell held after the last grant (to measure use by the next tick)."""
    size: int = 1
    """The lease this cell gets topped up to."""
    rate: float = 0.0
    """Units used per second (moving average)."""
    seen: float = field(default_factory=time.monotonic)
    used_at: float = field(default_factory=time.monotonic)


@dataclass
class _Call:
    cell: _Cell
    interval_ns: int
    burst: int
    owed: int
    want: int
    back: int


class QuotaLeaser:
    """Keeps one engine's quota leases filled from Redis (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        client: redis.Redis,
        *,
        namespace: str = "charter",
        interval: float = 0.005,
        horizon: float = 0.1,
        max_lease: int = 64,
        idle_after: float = 1.0,
        on_outage: str = "deny",
    ) -> None:
        if max_lease < 1 or interval <= 0 or horizon <= 0 or idle_after <= 0:
            raise InvalidRequestError("max_lease must be at least 1 and the intervals positive")
        if on_outage not in ("deny", "local"):
            raise InvalidRequestError("on_outage must be 'deny' or 'local'")
        self.on_outage = on_outage
        self.engine = engine
        self.client = client
        self.prefix = f"{namespace}:quota:"
        self.interval = interval
        self.horizon = horizon
        self.max_lease = max_lease
        self.idle_after = idle_after
        self._cells: dict[str, _Cell] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = False
        self._leasing = False
        self.counters = {"round_trips": 0, "commands": 0, "granted": 0, "returned": 0, "failures": 0}

    def start(self) -> None:
        """Charge every quota against the leases, and start renewing them."""
        self.engine._quota_leasing(True)
        self._leasing = True
        self._thread = threading.Thread(target=self._run, name="charter-quota-leases", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop renewing, give every unused unit back, and go back to local quotas."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.engine._quota_leasing(False)
        calls = []
        for handle, key, interval_ns, burst, _units, _stale in self.engine._quota_lease_demand():
            back = self.engine._quota_lease_return(handle, key, True)
            if back > 0:
                calls.append(_Call(_Cell(handle, key), interval_ns, burst, 0, 0, back))
        try:
            self._send(calls)
        except _FAILURES as err:  # the units are lost to the fleet until their keys expire
            log.warning("could not give quota leases back: %s", err)

    def status(self) -> dict[str, Any]:
        """Counters for the server's stats: cells leased, Redis round trips and commands, units moved."""
        return {"connected": self.connected, "cells": len(self._cells), **self.counters}

    # ------------------------------------------------------------ the renewing thread

    def _run(self) -> None:
        backoff = self.interval
        while not self._stop.is_set():
            try:
                self.tick()
                backoff = self.interval
                if self.on_outage == "local" and not self._leasing:
                    self.engine._quota_leasing(True)  # Redis is back: fleet-wide again
                    self._leasing = True
                    log.warning("quota leases renewed again: quotas are fleet-wide again")
            except _FAILURES as err:
                self.counters["failures"] += 1
                if self.connected:
                    then = (
                        "counting quotas locally until it is back"
                        if self.on_outage == "local"
                        else "denying `quota_unavailable` when used up"
                    )
                    log.warning("quota leases cannot be renewed (%s): %s", then, err)
                if self.on_outage == "local" and self._leasing:
                    # Availability over the fleet-wide bound: each server enforces the full quota
                    # on its own while Redis is unreachable (docs/multi-host.md).
                    self.engine._quota_leasing(False)
                    self._leasing = False
                self.connected = False
                backoff = min(max(backoff * 2, 0.05), 1.0)
            self._stop.wait(backoff)

    def tick(self) -> None:
        """Renew what needs renewing, give back what is idle: one pipelined round trip at most."""
        now = time.monotonic()
        calls: list[_Call] = []
        live: set[str] = set()
        for handle, key, interval_ns, burst, units, stale in self.engine._quota_lease_demand():
            live.add(key)
            cell = self._cells.get(key)
            if cell is None or cell.handle != handle:
                cell = self._cells[key] = _Cell(handle, key, units=max(units, 0))
            call = self._plan(cell, now, interval_ns, burst, units, stale)
            if call is not None:
                calls.append(call)
        for key in self._cells.keys() - live:
            del self._cells[key]
        self._send(calls)
        self.connected = True

    def _plan(
        self, cell: _Cell, now: float, interval_ns: int, burst: int, units: int, stale: bool
    ) -> _Call | None:
        used = max(cell.units - units, 0)
        dt = max(now - cell.seen, 1e-6)
        weight = 1.0 - math.exp(-dt / 0.25)
        cell.rate += (used / dt - cell.rate) * weight
        cell.seen = now
        if used:
            cell.used_at = now
        cell.units = units
        owed = max(-units, 0)
        limit = min(self.max_lease, burst)
        if stale or (now - cell.used_at > self.idle_after and units >= 0):
            back = self.engine._quota_lease_return(cell.handle, cell.key, True)
            cell.units = 0
            if back or owed:
                return _Call(cell, interval_ns, burst, owed, 0, back)
            return None
        wanted = max(1, math.ceil(cell.rate * self.horizon))
        if units <= 0:  # ran dry since the last tick: the rate seen understates the demand
            cell.size = max(cell.size * 4, wanted)
        else:
            cell.size = max(wanted, cell.size * 7 // 8)
        cell.size = max(1, min(cell.size, limit))
        if units * 2 > cell.size:
            return None
        return _Call(cell, interval_ns, burst, owed, cell.size - max(units, 0), 0)

    def _send(self, calls: list[_Call]) -> None:
        if not calls:
            return
        results = self._execute(calls)
        if any(isinstance(r, redis.exceptions.NoScriptError) for r in results):
            self.client.script_load(LEASE_SCRIPT)
            results = self._execute(calls)
        for call, result in zip(calls, results, strict=True):
            if isinstance(result, Exception):
                raise result
            granted = int(result)
            self.counters["returned"] += call.back
            total = call.owed + granted
            if total <= 0:
                continue
            self.counters["granted"] += granted
            if self.engine._quota_lease_grant(call.cell.handle, call.cell.key, total):
                call.cell.units += total
            elif granted:  # the cell went away meanwhile: the fleet gets the units back
                self._execute([_Call(call.cell, call.interval_ns, call.burst, 0, 0, granted)])

    def _execute(self, calls: list[_Call]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for c in calls:
            pipe.evalsha(_SHA, 1, self.prefix + c.cell.key, c.interval_ns, c.burst, c.owed, c.want, c.back)
        results: list[Any] = pipe.execute(raise_on_error=False)
        self.counters["round_trips"] += 1
        self.counters["commands"] += len(calls)
        return results
