"""`charter audit tail|query|why|verify`: reading and checking the audit trail from a shell."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator

import msgspec

from charter import audit
from charter.audit.reader import EventRecord, Record

EXIT_OK, EXIT_PROBLEM, EXIT_ERROR = 0, 1, 2


def _when(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts / 1e9, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _row(r: Record) -> str:
    if isinstance(r, EventRecord):
        fields = " ".join(f"{k}={json.dumps(v)}" for k, v in r.fields.items())
        return f"{_when(r.ts)}{_host(r)} {r.stream}-{r.seq:<8} EVENT {r.kind} {fields}"
    who = r.agent or r.principal or r.subject or f"handle:{r.handle}"
    on = f" {r.resource}" if r.resource is not None else ""
    rule = f" [{r.rule}]" if r.rule else ""
    verdict = "ALLOW" if r.allowed else "DENY "
    return f"{_when(r.ts)}{_host(r)} {r.decision_id:<17} {verdict} {who} {r.action}{on}: {r.reason}{rule}"


def _host(r: Record) -> str:
    return f" {r.host}" if r.host else ""


def _print(records: Iterable[Record], as_json: bool) -> int:
    n = 0
    for r in records:
        n += 1
        if as_json:
            data = msgspec.to_builtins(r)
            if isinstance(r, EventRecord):
                data = {
                    "seq": r.seq,
                    "ts": r.ts,
                    "kind": r.kind,
                    "stream": r.stream,
                    "host": r.host,
                    **r.fields,
                }
            print(json.dumps(data))
        else:
            print(_row(r))
    return n


def _time(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {value!r} (Unix seconds or ISO 8601)") from None
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()


def _filters(args: argparse.Namespace) -> dict[str, object]:
    kind: str | None = args.kind
    return {
        "kind": None if kind == "all" else kind,
        "agent": args.agent,
        "principal": args.principal,
        "action": args.action,
        "effect": args.effect,
        "reason": args.reason,
        "since": args.since,
        "until": args.until,
        "decision_id": args.decision_id,
    }


def _directories(args: argparse.Namespace) -> str | list[str]:
    """One directory as before; several merged by time (`charter.audit.read`)."""
    dirs: list[str] = args.directory
    return dirs[0] if len(dirs) == 1 else dirs


def _cmd_query(args: argparse.Namespace) -> int:
    records: Iterator[Record] = audit.read(_directories(args), **_filters(args))  # type: ignore[arg-type]
    if args.limit is not None:
        records = (r for i, r in enumerate(records) if i < args.limit)
    _print(records, args.json)
    return EXIT_OK


def _cmd_tail(args: argparse.Namespace) -> int:
    last: list[Record] = []
    for r in audit.read(_directories(args), **_filters(args)):  # type: ignore[arg-type]
        last.append(r)
        if len(last) > args.n:
            last.pop(0)
    _print(last, args.json)
    if not args.follow:
        return EXIT_OK
    # One directory: its sequence numbers order it; several: their times do.
    by_seq = isinstance(_directories(args), str)

    def position(r: Record) -> int:
        return r.seq if by_seq else r.ts

    seen = position(last[-1]) if last else 0
    try:
        while True:
            time.sleep(args.interval)
            records = audit.read(_directories(args), **_filters(args))  # type: ignore[arg-type]
            fresh = [r for r in records if position(r) > seen]
            if fresh:
                _print(fresh, args.json)
                seen = position(fresh[-1])
                sys.stdout.flush()
    except KeyboardInterrupt:
        return EXIT_OK


def _cmd_why(args: argparse.Namespace) -> int:
    env = os.environ.get("CHARTER_AUDIT_DIR")
    directory: list[str] | None = args.directory or ([env] if env else None)
    if not directory:
        print("charter: error: give the audit directory (--dir) or set CHARTER_AUDIT_DIR", file=sys.stderr)
        return EXIT_ERROR
    found = list(audit.read(directory, kind=None, decision_id=args.decision_id))
    if not found:
        print(f"charter: error: no record {args.decision_id} in {', '.join(directory)}", file=sys.stderr)
        return EXIT_PROBLEM
    record = found[0]
    if args.json:
        _print([record], True)
    else:
        print(audit.describe(record))
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    ok = True
    for directory in args.directory:  # each host's directory is its own chain(s)
        report = audit.verify(directory)
        ok = ok and report.ok
        if args.json:
            print(
                json.dumps(
                    {
                        "directory": directory,
                        "ok": report.ok,
                        "records": report.records,
                        "batches": report.batches,
                        "files": report.files,
                        "first_seq": report.first_seq,
                        "last_seq": report.last_seq,
                        "head_hash": report.head_hash,
                        "problems": [str(p) for p in report.problems],
                        "warnings": [str(w) for w in report.warnings],
                    }
                )
            )
        else:
            print(report)
    return EXIT_OK if ok else EXIT_PROBLEM


def _filter_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "directory",
        nargs="+",
        help="the audit directory; several (a fleet's servers') are merged by time, each record naming its host",
    )
    p.add_argument("--agent", help="the agent, or any delegator in its chain")
    p.add_argument("--principal", help="the root principal")
    p.add_argument("--action")
    p.add_argument("--effect", choices=["allow", "deny"])
    p.add_argument("--reason", help="reason code, e.g. denied_by_rule")
    p.add_argument("--since", type=_time, help="Unix seconds or ISO 8601 (UTC unless given)")
    p.add_argument("--until", type=_time, help="Unix seconds or ISO 8601 (UTC unless given)")
    p.add_argument("--decision-id", help="one decision, e.g. 0a1b2c3d-42")
    p.add_argument(
        "--kind", default="decision", help="record kind: decision (default), an event kind, or all"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser("audit", help="read and verify the audit trail")
    aud = cmd.add_subparsers(dest="audit_command", required=True)
    query = aud.add_parser("query", help="records matching filters, oldest first")
    _filter_args(query)
    query.add_argument("--limit", type=int, help="at most this many")
    query.set_defaults(run=_cmd_query)
    tail = aud.add_parser("tail", help="the newest records (and, with --follow, new ones as they come)")
    _filter_args(tail)
    tail.add_argument("-n", type=int, default=20, help="how many (default 20)")
    tail.add_argument("--follow", "-f", action="store_true")
    tail.add_argument("--interval", type=float, default=0.5, help="seconds between polls with --follow")
    tail.set_defaults(run=_cmd_tail)
    why = aud.add_parser("why", help="a decision's full reason in words")
    why.add_argument("decision_id", help="from Decision.decision_id, e.g. 0a1b2c3d-42")
    why.add_argument(
        "--dir",
        dest="directory",
        action="append",
        help="an audit directory (repeat for several hosts; default: $CHARTER_AUDIT_DIR)",
    )
    why.add_argument("--json", action="store_true")
    why.set_defaults(run=_cmd_why)
    verify = aud.add_parser("verify", help="check the hash chain; exit 1 on any problem")
    verify.add_argument("directory", nargs="+", help="audit directories (each verified on its own)")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(run=_cmd_verify)
