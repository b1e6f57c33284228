"""`charter serve` and `charter stats`: the decision server's commands (docs/server.md).

Kept apart from cli.py; the event loop and the server itself are imported
only when `serve` runs, so `charter check` stays as quick to start as before.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from charter.server.protocol import DEFAULT_MAX_FRAME

if TYPE_CHECKING:
    from charter.server.server import ServerConfig


def _mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"`{text}` is not an octal file mode") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"`{text}` is not a file mode (000-777)")
    return mode


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86_400:
        raise argparse.ArgumentTypeError(f"`{text}` is not a number of seconds (0-86400)")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"`{text}` is not a positive integer")
    return value


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The server configuration `charter serve ARGS` describes."""
    from charter.server.server import ServerConfig

    return ServerConfig(
        policy=args.policy,
        socket=args.socket,
        admin_socket=args.admin_socket,
        workers=args.workers,
        socket_mode=args.socket_mode,
        admin_socket_mode=args.admin_socket_mode,
        socket_group=args.socket_group,
        admin_uids=tuple(args.admin_uid or ()),
        trusted_uids=tuple(args.trusted_uid or ()),
        trust_jwks=tuple(args.trust_jwks or ()),
        audience=args.audience,
        revocations=args.revocations,
        revocations_poll=args.revocations_poll,
        hooks=tuple(args.hooks or ()),
        allow_missing_hooks=args.allow_missing_hooks,
        max_leases=args.max_leases,
        max_frame=args.max_frame,
        max_inflight=args.max_inflight,
        idle_timeout=args.idle_timeout,
        drain_timeout=args.drain_timeout,
        audit_dir=args.audit_dir,
        audit_mode=args.audit_mode,
        audit_fsync=args.audit_fsync,
        state=args.state,
        quota_outage=args.quota_outage,
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    from charter.server.server import main_logging, run

    main_logging()
    config = config_from_args(args)
    try:
        return run(config)
    except OSError as err:
        print(f"charter: error: {err}", file=sys.stderr)
        return 2


def _text(stats: dict[str, Any]) -> str:
    d, c = stats["decisions"], stats["connections"]
    lines = [
        f"policy {stats['policy_version']}, {stats['workers']} worker(s), up {stats['uptime_s']:.0f} s",
        f"decisions: {d['total']} ({d['allowed']} allowed, {d['denied']} denied), {d['per_second']}/s",
    ]
    for reason, n in sorted(d["by_reason"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {reason}: {n}")
    lines.append(
        f"connections: {c.get('decision', 0)} decision, {c.get('admin', 0)} admin "
        f"({c.get('accepted', 0)} accepted, {c.get('refused', 0)} refused)"
    )
    if stats["errors"]:
        lines.append("errors: " + ", ".join(f"{k} {v}" for k, v in sorted(stats["errors"].items())))
    reloads = stats["policy_reloads"]
    lines.append(f"reloads: {reloads['ok']} ok, {reloads['failed']} failed")
    if stats.get("audit_backlog") is not None:
        lines.append(f"audit backlog: {stats['audit_backlog']}")
    return "\n".join(lines)


def _cmd_stats(args: argparse.Namespace) -> int:
    from charter.server.client import Client
    from charter.server.metrics import openmetrics

    with Client(args.socket, timeout=args.timeout) as client:
        stats = client.stats()
    if args.format == "json":
        print(json.dumps(stats, indent=2, sort_keys=True))
    elif args.format == "openmetrics":
        print(openmetrics(stats), end="")
    else:
        print(_text(stats))
    return 0


def add_commands(sub: Any) -> None:
    """Add `serve` and `stats` to the `charter` command's subparsers."""
    serve = sub.add_parser("serve", help="run the decision server on a Unix socket")
    serve.add_argument("--policy", required=True, help="policy file (reloaded on SIGHUP)")
    serve.add_argument("--socket", required=True, metavar="PATH", help="decision socket path")
    serve.add_argument(
        "--admin-socket", metavar="PATH", help="admin socket path (no admin socket if omitted)"
    )
    serve.add_argument(
        "--workers", type=_positive, default=1, metavar="N", help="worker processes (default 1)"
    )
    serve.add_argument("--socket-mode", type=_mode, default=0o660, metavar="MODE", help="default 660")
    serve.add_argument("--admin-socket-mode", type=_mode, default=0o600, metavar="MODE", help="default 600")
    serve.add_argument("--socket-group", metavar="GROUP", help="group owning the decision socket")
    serve.add_argument(
        "--admin-uid",
        type=int,
        action="append",
        metavar="UID",
        help="peer uid allowed on the admin socket (repeatable; default: the server's own uid)",
    )
    serve.add_argument(
        "--trusted-uid",
        type=int,
        action="append",
        metavar="UID",
        help="decision-socket peer uid that may name any agent without authenticating it (repeatable)",
    )
    serve.add_argument(
        "--trust-jwks",
        action="append",
        metavar="FILE",
        help="accept credentials signed by the keys in this JWKS file (repeatable; `rotate_keys` re-reads it)",
    )
    serve.add_argument("--audience", help="this server's name: credentials must be issued for it")
    serve.add_argument("--revocations", metavar="LOG", help="the identity revocation log to honour")
    serve.add_argument(
        "--revocations-poll",
        type=_seconds,
        default=1.0,
        metavar="SECONDS",
        help="how often to look for records other processes appended to the log (default 1; 0 = never)",
    )
    serve.add_argument(
        "--hooks",
        action="append",
        metavar="SPEC",
        help="policy hooks: `module:attr` (a mapping of name -> hook, or a function returning one, "
        "called in each server process) or `name=module:attr` (one hook); repeatable",
    )
    serve.add_argument(
        "--allow-missing-hooks",
        action="store_true",
        help="serve a policy naming hooks no --hooks gives (decisions reaching them: hook_error)",
    )
    serve.add_argument(
        "--max-leases", type=_positive, default=1024, metavar="N", help="held `acquire` leases per connection"
    )
    serve.add_argument(
        "--audit-dir",
        metavar="DIR",
        help="record every decision and event in DIR (with --workers N, DIR/worker-K and DIR/supervisor); "
        "default: the policy's [audit] directory, if any",
    )
    serve.add_argument(
        "--audit-mode",
        choices=["strict", "best_effort"],
        help="default: the policy's [audit] mode, else strict",
    )
    serve.add_argument(
        "--audit-fsync",
        choices=["batch", "interval", "never"],
        help="default: the policy's [audit] fsync, else batch",
    )
    serve.add_argument(
        "--state",
        default="local",
        metavar="URL",
        help="where revocations, suspensions, freeze and the policy live: `local` (default) or "
        "redis://host:port/db, shared by every server on it (docs/multi-host.md)",
    )
    serve.add_argument(
        "--quota-outage",
        choices=["deny", "local"],
        default="deny",
        help="with --state redis://: while Redis is unreachable, a used-up quota lease denies "
        "(`quota_unavailable`, default) or quotas are counted on this server alone",
    )
    serve.add_argument("--max-frame", type=_positive, default=DEFAULT_MAX_FRAME, metavar="BYTES")
    serve.add_argument("--max-inflight", type=_positive, default=128, metavar="N", help="per connection")
    serve.add_argument("--idle-timeout", type=float, default=300.0, metavar="SECONDS", help="0 = never")
    serve.add_argument("--drain-timeout", type=float, default=30.0, metavar="SECONDS")
    serve.set_defaults(run=_cmd_serve)

    stats = sub.add_parser("stats", help="a running server's statistics")
    stats.add_argument("--socket", required=True, metavar="PATH", help="decision or admin socket")
    stats.add_argument("--format", choices=["text", "json", "openmetrics"], default="text")
    stats.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS")
    stats.set_defaults(run=_cmd_stats)
