"""Which revocation records still matter: the rules a compaction of the revocation log applies.

A record can be dropped once no credential it refuses could be accepted
anyway. That needs two bounds, stated by whoever compacts:

- `margin`: the largest difference between any two clocks involved (issuers,
  verifiers, the compacting process), which also bounds every verifier's
  leeway. Default `MAX_SKEW`, 600 s: the largest leeway `configure_identity`
  accepts.
- `max_lifetime`: the longest lifetime (`exp - iat`) of any credential the
  issuers mint and the verifiers accept (their templates' `max_ttl`), or
  None when there is no such bound.

With those, each record has a *horizon*, the time after which it refuses
nothing that is still live (`horizon`):

- `jti` with `exp` (revoked through its token, so the credential's expiry is
  known): `exp + 2 * margin`. A verifier's clock is at most `margin` behind,
  and it refuses the credential as expired `leeway <= margin` after `exp`.
- `jti` without `exp`, `agent` and `principal`: `at + max_lifetime + 3 *
  margin`, or never without `max_lifetime`. Every credential such a record
  refuses names (as subject or delegator) an agent or principal level issued
  no later than the revocation, `iat <= at + margin`; no credential outlives
  a level of its own chain, so it expires by `at + margin + max_lifetime`.
  This assumes an issuer does not mint a new credential for an agent id
  after revoking it (`Issuer.issue` picks random ids; see docs/identity.md).
- `suspend` / `resume`: never by time. Only the net state is kept: one
  `suspend` record (the latest) per subject still suspended, nothing for a
  subject resumed since.

Duplicates are folded: per (kind, id) the record with the latest horizon
stays (for a principal that is also the latest cutoff). Records keep their
order, so the compacted log replays to the same state, less what expired.

`rewrite` replaces the log file with the compacted records, crash-safely:
write a new file beside it, fsync it, rename it over the log, fsync the
directory. Until the rename the old file is untouched; after it the new one
is complete on disk; the directory fsync makes the rename itself durable.
The caller holds the log's lock throughout, so no append falls in between.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import msgspec

if TYPE_CHECKING:
    from charter.revocation_records import Revocation

__all__ = ["MAX_SKEW", "Compaction", "CompactionReport", "compact_records", "horizon", "rewrite"]

MAX_SKEW: Final = 600.0
"""Default `margin`: the largest `leeway` an engine accepts, in seconds."""


class Compaction(msgspec.Struct, frozen=True):
    """When and how a revocation log is compacted (the rules are in this module's docstring).

    `above`: compact automatically once the file passes this many bytes (None: only when asked);
    after a compaction the next one waits until the file has doubled. `max_lifetime`: the longest
    lifetime of any credential your issuers mint and your verifiers accept (seconds; None: no bound,
    so only expired `jti` records, duplicates and settled suspensions are dropped). `margin`: the
    largest clock difference between the processes involved, and the largest verifier leeway.
    """

    above: int | None = 1 << 20
    max_lifetime: float | None = None
    margin: float = MAX_SKEW


class CompactionReport(msgspec.Struct, frozen=True):
    """What one compaction did."""

    records_before: int
    records_after: int
    bytes_before: int
    bytes_after: int


def horizon(rec: Revocation, *, max_lifetime: float | None, margin: float = MAX_SKEW) -> float:
    """The time after which `rec` refuses no credential that is still live (`math.inf`: never)."""
    if rec.kind == "jti" and rec.exp is not None:
        return rec.exp + 2 * margin
    if rec.kind in ("jti", "agent", "principal") and max_lifetime is not None:
        return rec.at + max_lifetime + 3 * margin
    return math.inf


def compact_records(
    records: Sequence[Revocation],
    *,
    now: float,
    max_lifetime: float | None = None,
    margin: float = MAX_SKEW,
) -> list[Revocation]:
    """The records of a log that still matter at `now`, in their original order (see the module)."""
    best: dict[tuple[str, str], tuple[float, int]] = {}  # (kind, id) -> (horizon, index of the record)
    last_suspension: dict[str, int] = {}  # subject -> index of its last suspend/resume record
    for i, rec in enumerate(records):
        if rec.kind in ("suspend", "resume"):
            last_suspension[rec.id] = i
            continue
        h = horizon(rec, max_lifetime=max_lifetime, margin=margin)
        key = (rec.kind, rec.id)
        seen = best.get(key)
        # A principal keeps its latest cutoff (its horizon grows with `at`); the others the latest
        # horizon. On a tie the later record wins.
        if (
            seen is None
            or (rec.kind == "principal" and rec.at >= records[seen[1]].at)
            or (rec.kind != "principal" and h >= seen[0])
        ):
            best[key] = (h, i)
    keep = {i for h, i in best.values() if h >= now}
    keep |= {i for i in last_suspension.values() if records[i].kind == "suspend"}
    return [rec for i, rec in enumerate(records) if i in keep]


def rewrite(target: Path, data: bytes, mode: int) -> tuple[int, os.stat_result]:
    """Replace the file `target` with `data` (module docstring); the new file's fd (read-write,
    appending) and its stat. Raises `OSError`: before the rename `target` is untouched and no
    temporary file is left; after it the new file is in place and only its rename may not be durable."""
    tmp = target.with_name(f".{target.name}.compact")
    fd = os.open(tmp, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600)
    renamed = False
    try:
        os.fchmod(fd, mode)
        write_all(fd, data)
        os.fsync(fd)
        os.replace(tmp, target)
        renamed = True
        fsync_dir(target.parent, strict=True)
        return fd, os.fstat(fd)
    except BaseException:
        os.close(fd)
        if not renamed:
            tmp.unlink(missing_ok=True)
        raise


def write_all(fd: int, data: bytes) -> None:
    """`os.write` until all of `data` is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(directory: Path, *, strict: bool = False) -> None:
    """Make a directory entry (a new file, a rename) durable; `strict` raises `OSError` on failure."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        if strict:
            raise
        return
    try:
        os.fsync(fd)
    except OSError:
        if strict:
            raise
    finally:
        os.close(fd)
