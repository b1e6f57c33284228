"""`charter.audit.verify`: check an audit directory's hash chain and say where it breaks.

Detected: a modified, inserted, deleted or reordered record (its batch's hash
no longer matches its seal, and sequence numbers jump), a deleted or
reordered file (a header whose `prev` is not the chain's hash, an index gap),
a truncated file (a batch without its seal anywhere but at the very end), and
records removed from the end (HEAD says later records were sealed).

Not detected, by design of any hash chain: the newest records removed together
with HEAD rolled back by someone able to rewrite HEAD too; anchor HEAD's hash
elsewhere (it is printed by `charter audit verify`) to close that.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from charter.audit import files


@dataclass(frozen=True)
class Problem:
    """One place where the log is not what the writer wrote."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"


@dataclass
class VerifyReport:
    """What `verify` found. `ok` is True when no problem was found (warnings allowed)."""

    directory: str
    streams: list[str] = field(default_factory=list)
    files: int = 0
    batches: int = 0
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head_hash: str | None = None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        lines = [
            f"{'OK' if self.ok else 'TAMPERED OR DAMAGED'}: {self.directory}: {self.records} records in "
            f"{self.batches} batches, {self.files} files, seq {self.first_seq}..{self.last_seq}",
        ]
        if self.head_hash:
            lines.append(f"chain head: {self.head_hash}")
        lines += [f"problem: {p}" for p in self.problems]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


class _Line(msgspec.Struct):
    kind: str | None = None
    seq: int | None = None
    first: int | None = None
    last: int | None = None
    count: int | None = None


_decode_line = msgspec.json.Decoder(_Line).decode
_HEX64 = re.compile(r"[0-9a-f]{64}")


def verify(directory: str | Path) -> VerifyReport:
    """Check every stream in `directory` (or, if it holds none, in its subdirectories)."""
    root = Path(directory)
    report = VerifyReport(directory=str(root))
    if not root.is_dir():
        report.problems.append(Problem(str(root), None, "not a directory"))
        return report
    dirs = [root] if files.log_files(root) else sorted(p for p in root.iterdir() if p.is_dir())
    for d in dirs:
        _verify_dir(d, report)
    if not report.streams and not report.problems:
        report.warnings.append(Problem(str(root), None, "no audit log files"))
    return report


def _verify_dir(directory: Path, report: VerifyReport) -> None:
    by_stream: dict[str, list[tuple[int, Path]]] = {}
    for stream, index, path in files.log_files(directory):
        by_stream.setdefault(stream, []).append((index, path))
    try:
        head = files.read_head(directory)
    except Exception as err:
        report.problems.append(Problem(str(directory / files.HEAD_NAME), None, str(err)))
        head = None
    for stream, stream_files in by_stream.items():
        report.streams.append(stream)
        _verify_stream(stream, stream_files, head if head and head.stream == stream else None, report)


def _verify_stream(
    stream: str, stream_files: list[tuple[int, Path]], head: files.Head | None, report: VerifyReport
) -> None:
    chain = files.GENESIS
    expected_seq: int | None = None
    gaps: list[tuple[int, int, str, int]] = []
    declared: list[tuple[int, int]] = []
    seal_hashes: dict[int, str] = {}
    last_sealed: int | None = None
    for position, (index, path) in enumerate(stream_files):
        name = path.name
        if index != position:
            report.problems.append(
                Problem(name, None, f"file index {index} where {position} was expected: a file is missing")
            )
        report.files += 1
        data = path.read_bytes()
        lines = data.splitlines(keepends=True)
        unit = hashlib.sha256(chain)
        unit_records = 0
        unit_first: int | None = None
        unit_last: int | None = None
        unit_lines = 0
        for number, raw in enumerate(lines, start=1):
            if not raw.endswith(b"\n"):
                report.warnings.append(Problem(name, number, "incomplete last line"))
                unit_lines += 1
                break
            try:
                line = _decode_line(raw)
            except (msgspec.DecodeError, ValueError):
                report.problems.append(Problem(name, number, "not a valid record line (modified)"))
                unit.update(raw)
                unit_lines += 1
                continue
            if line.kind == "seal":
                sealed = _check_seal(
                    raw, unit.hexdigest(), unit_records, unit_first, unit_last, name, number, report
                )
                if sealed is not None:
                    chain = bytes.fromhex(sealed)
                    if unit_last is not None:
                        seal_hashes[unit_last] = sealed
                        last_sealed = unit_last
                report.batches += 1
                unit = hashlib.sha256(chain)
                unit_records, unit_first, unit_last, unit_lines = 0, None, None, 0
                continue
            if line.kind == "file":
                resync = _check_header(raw, chain, stream, index, name, number, number == 1, report)
                if resync is not None and unit_lines == 0:
                    # Check the rest of the file against its own header, so one break is reported once.
                    chain = resync
                    unit = hashlib.sha256(chain)
                unit.update(raw)
                unit_lines += 1
                continue
            unit.update(raw)
            unit_lines += 1
            if number == 1:
                report.problems.append(Problem(name, 1, "the file does not start with its header"))
            if line.seq is None:
                report.problems.append(Problem(name, number, "a record without a sequence number"))
                continue
            report.records += 1
            unit_records += 1
            unit_first = line.seq if unit_first is None else unit_first
            unit_last = line.seq
            if line.kind == "records_dropped" and line.first is not None and line.last is not None:
                declared.append((line.first, line.last))
            if expected_seq is not None and line.seq != expected_seq:
                gaps.append((expected_seq, line.seq, name, number))
            expected_seq = line.seq + 1
            report.first_seq = line.seq if report.first_seq is None else min(report.first_seq, line.seq)
            report.last_seq = line.seq if report.last_seq is None else max(report.last_seq, line.seq)
        if unit_lines:
            last_file = position == len(stream_files) - 1
            message = f"{unit_lines} lines after the last seal"
            if last_file:
                report.warnings.append(
                    Problem(name, None, message + " (an incomplete final batch: a crash, or a cut)")
                )
            else:
                report.problems.append(
                    Problem(name, None, message + ": the file was truncated or appended to")
                )
    for expected, got, name, number in gaps:
        if got > expected and _covered(expected, got - 1, declared):
            continue  # a range the log itself declares lost (best-effort mode)
        if got < expected:
            report.problems.append(
                Problem(name, number, f"seq {got} after seq {expected - 1}: records reordered or inserted")
            )
        else:
            report.problems.append(
                Problem(name, number, f"seq {expected}..{got - 1} missing: records deleted")
            )
    if head is not None:
        if last_sealed is None or head.last_seq > last_sealed:
            report.problems.append(
                Problem(
                    files.HEAD_NAME,
                    None,
                    f"HEAD says seq {head.last_seq} was sealed but the log's last seal is at {last_sealed}: records were removed",
                )
            )
        elif seal_hashes.get(head.last_seq) != head.hash:
            report.problems.append(
                Problem(
                    files.HEAD_NAME, None, f"HEAD's hash for seq {head.last_seq} does not match the log's"
                )
            )
    report.head_hash = chain.hex()


def _covered(first: int, last: int, ranges: list[tuple[int, int]]) -> bool:
    """Whether the union of `ranges` (losses declared one batch at a time) covers first..last."""
    reach = first - 1
    for lo, hi in sorted(ranges):
        if lo > reach + 1:
            if lo <= last:
                return False
            break
        reach = max(reach, hi)
    return reach >= last


def _check_seal(
    raw: bytes,
    computed: str,
    records: int,
    first: int | None,
    last: int | None,
    name: str,
    number: int,
    report: VerifyReport,
) -> str | None:
    try:
        seal = msgspec.json.decode(raw, type=files.Seal)
    except (msgspec.DecodeError, ValueError):
        seal = None
    if seal is None or not _HEX64.fullmatch(seal.hash):
        report.problems.append(Problem(name, number, "a malformed seal line"))
        return None
    if seal.hash != computed:
        report.problems.append(
            Problem(
                name,
                number,
                f"batch seq {seal.first}..{seal.last}: hash mismatch (records modified, inserted, deleted or reordered)",
            )
        )
    elif seal.count != records or (records and (seal.first != first or seal.last != last)):
        report.problems.append(
            Problem(
                name, number, f"batch seq {seal.first}..{seal.last}: the seal does not describe its records"
            )
        )
    return seal.hash


def _check_header(
    raw: bytes,
    chain: bytes,
    stream: str,
    index: int,
    name: str,
    number: int,
    first_line: bool,
    report: VerifyReport,
) -> bytes | None:
    """Problems with a file header; the chain hash it names if that differs from ours."""
    try:
        header = msgspec.json.decode(raw, type=files.FileHeader)
    except (msgspec.DecodeError, ValueError):
        report.problems.append(Problem(name, number, "a malformed file header"))
        return None
    if not first_line:
        report.problems.append(Problem(name, number, "a file header in the middle of a file"))
    if header.stream != stream or header.index != index:
        report.problems.append(
            Problem(name, number, f"the header names {header.stream}/{header.index}: the file was renamed")
        )
    if header.prev != chain.hex():
        report.problems.append(
            Problem(
                name,
                number,
                "the header's prev hash is not the chain's: a file before it was removed, replaced or reordered",
            )
        )
        try:
            return bytes.fromhex(header.prev)
        except ValueError:
            return None
    return None
