"""`charter.audit.verify` catches each kind of tampering, and says where."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import charter
from charter import audit

POLICY = {
    "actions": ["doc:read", "doc:write"],
    "roles": {"reader": {"allow": ["doc:read"]}},
    "principals": {"user:ann": {"roles": ["reader"]}},
}


def make_log(directory: Path, files: int = 3) -> list[Path]:
    """A log of several files, each with several batches."""
    e = charter.Engine.from_dict(POLICY)
    e.audit_to(directory, fsync="never", max_file_bytes=4096)
    i = 0
    while len(list(directory.glob("audit-*.jsonl"))) < files:
        for _ in range(7):
            e.check("user:ann", "doc:read" if i % 3 else "doc:write", f"notes/{i}")
            i += 1
        e.flush_audit()
    for _ in range(7):
        e.check("user:ann", "doc:read", f"notes/{i}")
        i += 1
    e.close()
    assert audit.verify(directory).ok
    return sorted(directory.glob("audit-*.jsonl"))


def record_lines(path: Path) -> list[int]:
    """Indexes of record lines (not header or seal)."""
    lines = path.read_bytes().splitlines(keepends=True)
    return [i for i, line in enumerate(lines) if line.startswith(b'{"seq"')]


def edit(path: Path, change: Callable[[list[bytes]], list[bytes]]) -> None:
    path.write_bytes(b"".join(change(path.read_bytes().splitlines(keepends=True))))


def problems(directory: Path) -> list[str]:
    report = audit.verify(directory)
    assert not report.ok
    return [str(p) for p in report.problems]


@pytest.fixture
def log(tmp_path: Path) -> tuple[Path, list[Path]]:
    d = tmp_path / "a"
    return d, make_log(d)


def test_modified_record(log: tuple[Path, list[Path]]) -> None:
    d, files = log
    target = record_lines(files[1])[2]

    def flip(lines: list[bytes]) -> list[bytes]:
        line = lines[target]
        if b'"effect":"deny"' in line:  # turn a denial into an allow
            line = line.replace(b'"effect":"deny"', b'"effect":"allow"').replace(
                b'"reason":"no_grant"', b'"reason":"granted"'
            )
        else:  # or move an allow to another resource
            line = line.replace(b"notes/", b"notez/")
        assert line != lines[target]
        lines[target] = line
        return lines

    edit(files[1], flip)
    found = problems(d)
    assert any(files[1].name in p and "hash mismatch" in p for p in found), found


def test_deleted_record(log: tuple[Path, list[Path]]) -> None:
    d, files = log
    target = record_lines(files[0])[3]
    edit(files[0], lambda lines: lines[:target] + lines[target + 1 :])
    found = problems(d)
    assert any("hash mismatch" in p for p in found), found
    assert any("missing: records deleted" in p for p in found), found


def test_inserted_record(log: tuple[Path, list[Path]]) -> None:
    d, files = log
    target = record_lines(files[1])[1]
    edit(files[1], lambda lines: [*lines[: target + 1], lines[target], *lines[target + 1 :]])
    found = problems(d)
    assert any("reordered or inserted" in p for p in found), found
    assert any("hash mismatch" in p for p in found), found


def test_reordered_records(log: tuple[Path, list[Path]]) -> None:
    d, files = log
    a, b = record_lines(files[2])[:2]

    def swap(lines: list[bytes]) -> list[bytes]:
        lines[a], lines[b] = lines[b], lines[a]
        return lines

    edit(files[2], swap)
    found = problems(d)
    assert any(f"{files[2].name}:" in p and "hash mismatch" in p for p in found), found


def test_truncated_middle_file(log: tuple[Path, list[Path]]) -> None:
    d, files = log
    data = files[0].read_bytes()
    files[0].write_bytes(data[: len(data) - 150])
    found = problems(d)
    assert any(files[0].name in p and "truncated" in p for p in found), found


def test_truncated_last_file_is_caught_by_head(log: tuple[Path, list[Path]]) -> None:
    d, files = log
    data = files[-1].read_bytes()
    cut = data.rfind(b'{"kind":"seal"', 0, len(data) - 1)
    files[-1].write_bytes(data[:cut])
    report = audit.verify(d)
    assert not report.ok
    assert any("HEAD says" in str(p) for p in report.problems), report


def test_deleted_middle_file(log: tuple[Path, list[Path]]) -> None:
    d, files = log
    files[1].unlink()
    found = problems(d)
    assert any("a file is missing" in p for p in found), found
    assert any("prev hash" in p for p in found), found


def test_deleted_last_file(log: tuple[Path, list[Path]]) -> None:
    d, files = log
    files[-1].unlink()
    assert any("HEAD says" in p for p in problems(d))


def test_renamed_file(log: tuple[Path, list[Path]]) -> None:
    d, files = log
    files[2].rename(files[2].with_name(files[2].name.replace("000002", "000005")))
    found = problems(d)
    assert any("renamed" in p for p in found), found


def test_rewritten_seal(log: tuple[Path, list[Path]]) -> None:
    d, files = log

    def recount(lines: list[bytes]) -> list[bytes]:
        for i, line in enumerate(lines):
            if line.startswith(b'{"kind":"seal"'):
                seal = json.loads(line)
                seal["count"] += 1
                lines[i] = json.dumps(seal, separators=(",", ":")).encode() + b"\n"
                break
        return lines

    edit(files[0], recount)
    assert any("does not describe its records" in p for p in problems(d))


def test_forged_head(log: tuple[Path, list[Path]]) -> None:
    d, _ = log
    head = json.loads((d / "HEAD").read_text())
    head["hash"] = "0" * 64
    (d / "HEAD").write_text(json.dumps(head))
    assert any("HEAD's hash" in p for p in problems(d))


def test_crash_tail_is_a_warning_not_a_problem(log: tuple[Path, list[Path]]) -> None:
    d, files = log
    with open(files[-1], "ab") as f:
        f.write(b'{"seq":999999,"ts":1,"kind":"decision"')  # a torn write
    report = audit.verify(d)
    assert report.ok, report
    assert any("incomplete" in str(w) for w in report.warnings), report


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_byte_change_is_detected(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    d = tmp_path_factory.mktemp("a")
    files = make_log(d, files=2)
    # Draws independent of the log's exact size (timestamps and stream ids vary between runs).
    path = files[data.draw(st.integers(0, 7)) % len(files)]
    raw = bytearray(path.read_bytes())
    at = data.draw(st.integers(0, 10**9)) % len(raw)
    raw[at] ^= data.draw(st.integers(1, 255))
    path.write_bytes(bytes(raw))
    assert not audit.verify(d).ok


def test_declared_losses_cover_gaps_only_where_declared() -> None:
    from charter.audit.verify import _covered

    assert _covered(5, 9, [(5, 6), (7, 9)])
    assert _covered(5, 9, [(1, 20)])
    assert not _covered(5, 9, [(5, 6), (8, 9)])
    assert not _covered(5, 9, [(6, 9)])
    assert not _covered(5, 9, [])
