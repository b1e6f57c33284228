"""The engine and its revocation log file: attaching it, following other processes' appends, compacting.

Two ways a log's records reach the registry, with different meanings:

- *Attaching* a log (`configure_identity(revocations=...)`) replays it as a
  restart would have: the registry ends up as if the log had been read before
  any agent was admitted. Agents registered before it was attached are
  retired if the log revokes them or a delegator, or if the log revokes their
  principal and they were admitted from a credential issued up to the
  cutoff (admissions.py); agents and principals it suspends are suspended.
- *Following* it (`sync_revocations`, and every write, which reads the
  others' records first) applies what other processes appended as if the
  same call had been made here: a revoked agent is deprovisioned (in
  cascade), a revoked principal removed (`remove_principal`), a suspension
  or resumption repeated.

Either way, every cached admission is checked again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from charter.authn_state import (
    UNSET,
    IdentityState,
    core_deprovision,
    core_remove_principal,
    core_resume,
    core_suspend,
)
from charter.errors import UnknownSubjectError
from charter.revocations import Compaction, CompactionReport, RevocationLog

__all__ = ["RevocationLogMixin"]


class RevocationLogMixin(IdentityState):
    """`sync_revocations`, `compact_revocations`, and attaching a log file."""

    def _attach_revocations(self, path: str | os.PathLike[str], compaction: Compaction | None) -> None:
        """Read the log at `path` and make it this engine's (caller holds `_id_lock`)."""
        fresh = RevocationLog(path, compaction=compaction, clock=lambda: self._id_now(), track_changes=True)
        # Revocations made before stay in force, in memory (but for those already in this very file).
        old = self._id_revocations
        if old.path is not None and _same_file(old.path, fresh.path):
            fresh.absorb_records(old.held_in_memory())
        else:
            fresh.absorb(old, at=self._id_now())
        self._id_revocations = fresh
        self._retire_refused(fresh)
        # From now on every admission is checked against a log file; the index was for this moment.
        self._id_admissions = None
        self._invalidate()

    def _retire_refused(self, log: RevocationLog) -> int:
        """Replay `log` over the registry as a restart would have (module docstring); how many retired."""
        retired = 0
        if log.agents and self.stats()["agents"]:
            for agent in log.agents:
                retired += _quietly(core_deprovision, self, agent)
        index = self._id_admissions
        if index is not None:
            for principal, cutoff in log.principals.items():
                for agent in index.issued_by(principal, cutoff + self._id_leeway):
                    retired += _quietly(core_deprovision, self, agent)
                    index.forget(agent)
        for ident, why in log.suspended.items():
            _quietly(core_suspend, self, ident, why)
        return retired

    def _apply_changes(self) -> int:
        """Apply the records other processes added (`RevocationLog.take_changes`) here, as if made here.

        Caller holds `_id_lock`. Returns how many agents were retired.
        """
        changes = self._id_revocations.take_changes()
        if not changes:
            return 0
        self._invalidate()
        retired = 0
        for rec in changes:
            if rec.kind == "agent":
                retired += _quietly(core_deprovision, self, rec.id)
            elif rec.kind == "principal":
                retired += _quietly(core_remove_principal, self, rec.id)
            elif rec.kind == "suspend":
                _quietly(core_suspend, self, rec.id, rec.reason or "suspended")
            elif rec.kind == "resume":
                _quietly(core_resume, self, rec.id)
        return retired

    def sync_revocations(self) -> int:
        """Read what other processes added to the revocation log since, and apply it here.

        A revocation appended by another process (`charter token revoke`,
        another engine) then has the effect here that the same `revoke`
        would have had: its agents are retired, its principal removed; a
        suspension or resumption is repeated. Cheap when nothing changed (one
        `stat`); a server calls it periodically. Returns how many agents
        were retired. Raises `StorageError` if the log cannot be read.
        """
        with self._id_lock:
            if self._id_revocations.sync():
                self._invalidate()
            return self._apply_changes()

    def compact_revocations(
        self, *, max_lifetime: float | None = UNSET, margin: float = UNSET
    ) -> CompactionReport:
        """Compact the revocation log file now (see `charter.revocations.Compaction` for the settings
        and docs/identity.md for what is dropped); `StorageError` if there is no log file or it fails."""
        with self._id_lock:
            log = self._id_revocations
            kwargs: dict[str, Any] = {"now": self._id_now()}
            if max_lifetime is not UNSET:
                kwargs["max_lifetime"] = max_lifetime
            if margin is not UNSET:
                kwargs["margin"] = margin
            report = log.compact(**kwargs)
            self._invalidate()
            self._apply_changes()
            return report


def _same_file(a: os.PathLike[str], b: os.PathLike[str] | None) -> bool:
    try:
        return b is not None and os.path.samefile(a, b)
    except OSError:
        return False


def _quietly(call: Callable[..., object], *args: Any) -> int:
    """`call(*args)`, or 0 if the subject is not registered here."""
    try:
        result = call(*args)
    except UnknownSubjectError:
        return 0
    return result if isinstance(result, int) else 0
