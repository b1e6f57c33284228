"""`charter keys ...` and `charter token ...`: issuer keys and agent credentials from a shell.

    charter keys init --key issuer.pem --issuer https://issuer.example
    charter keys rotate --key issuer.pem
    charter keys jwks --key issuer.pem > jwks.json
    charter token issue --key issuer.pem support-bot --for user:alice --scope tickets:* --ttl 15m
    charter token inspect TOKEN
    charter token verify TOKEN --jwks jwks.json [--policy policy.toml] [--audience A] [--revocations LOG]
    charter token revoke TOKEN --jwks jwks.json --revocations LOG     (or --agent ID, --principal ID, --jti JTI)
    charter token compact --revocations LOG [--max-lifetime 8h] [--margin 10m]

A TOKEN argument of `-` is read from standard input. Exit codes: 0 success
(for `verify`: the token is accepted), 1 the token is refused, 2 an error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from charter.engine import Engine
from charter.errors import AuthenticationError, InvalidRequestError, StorageError
from charter.identity import Issuer, decode_unverified
from charter.policy import example_path, parse_duration
from charter.revocations import RevocationLog

EXIT_OK, EXIT_REFUSED, EXIT_ERROR = 0, 1, 2


def _token(arg: str) -> str:
    return sys.stdin.readline().strip() if arg == "-" else arg.strip()


def _ttl(text: str | None) -> float | None:
    return None if text is None else parse_duration(text, "--ttl")


def _jwks(args: argparse.Namespace) -> dict[str, Any]:
    """The verification keys: a JWKS file, or the public half of an issuer key file."""
    if args.jwks:
        try:
            doc = json.loads(Path(args.jwks).read_text())
        except (OSError, ValueError) as err:
            raise StorageError(f"cannot read the JWKS `{args.jwks}`: {err}") from None
        if not isinstance(doc, dict):
            raise InvalidRequestError(f"`{args.jwks}` is not a JWKS document")
        return doc
    if args.key:
        return Issuer.from_pem(args.key).jwks()
    raise InvalidRequestError("give the verification keys: --jwks FILE or --key FILE")


def _engine(args: argparse.Namespace) -> Engine:
    engine = Engine.from_file(args.policy or example_path())
    engine.trust(_jwks(args), issuer=getattr(args, "issuer", None))
    settings: dict[str, Any] = {}
    if getattr(args, "revocations", None):
        settings["revocations"] = args.revocations
    if getattr(args, "audience", None):
        settings["audience"] = args.audience
    if settings:
        engine.configure_identity(**settings)
    return engine


def _cmd_keys_init(args: argparse.Namespace) -> int:
    if Path(args.key).exists() and not args.force:
        raise StorageError(f"`{args.key}` exists; pass --force to replace it")
    issuer = Issuer.generate(issuer=args.issuer)
    issuer.save_pem(args.key)
    print(f"created {args.key} (mode 0600): issuer {issuer.name}, key {issuer.kid}")
    return EXIT_OK


def _cmd_keys_rotate(args: argparse.Namespace) -> int:
    issuer = Issuer.from_pem(args.key)
    old = issuer.kid
    issuer.rotate()
    issuer.save_pem(args.key)
    print(f"rotated {args.key}: signing with {issuer.kid}; {old} stays published until its tokens expire")
    return EXIT_OK


def _cmd_keys_jwks(args: argparse.Namespace) -> int:
    print(json.dumps(Issuer.from_pem(args.key).jwks(), indent=2))
    return EXIT_OK


def _cmd_token_issue(args: argparse.Namespace) -> int:
    issuer = Issuer.from_pem(args.key)
    if args.policy:
        issuer.policy = Engine.from_file(args.policy)
    scope = [s for item in args.scope for s in item.split(",") if s] if args.scope else None
    token = issuer.issue(
        args.template,
        on_behalf_of=args.on_behalf_of,
        scope=scope,
        ttl=_ttl(args.ttl),
        audience=args.audience,
        agent_id=args.agent_id,
    )
    issuer.save_pem(args.key)  # remembers how long the key's tokens live, for rotation
    print(token)
    return EXIT_OK


def _cmd_token_inspect(args: argparse.Namespace) -> int:
    print(json.dumps(decode_unverified(_token(args.token)), indent=2))
    print("(not verified: use `charter token verify`)", file=sys.stderr)
    return EXIT_OK


def _cmd_token_verify(args: argparse.Namespace) -> int:
    engine = _engine(args)
    try:
        agent = engine.authenticate(_token(args.token))
    except AuthenticationError as err:
        if args.json:
            print(json.dumps({"valid": False, "reason": err.reason, "message": err.message}))
        else:
            print(f"REFUSED: {err}")
        return EXIT_REFUSED
    info = {
        "valid": True,
        "agent": agent.id,
        "template": agent.template,
        "on_behalf_of": agent.on_behalf_of,
        "principal": agent.principal,
        "depth": agent.depth,
        "scope": agent.scope,
        "expires_at": agent.expires_at,
    }
    if args.json:
        print(json.dumps(info))
    else:
        print(f"VALID: agent {agent.id} ({agent.template}) for {agent.principal}, depth {agent.depth}")
    return EXIT_OK


def _cmd_token_revoke(args: argparse.Namespace) -> int:
    engine = Engine.from_file(args.policy or example_path())
    engine.configure_identity(revocations=args.revocations)
    token = None
    if args.token is not None:
        token = _token(args.token)
        engine.trust(_jwks(args), issuer=args.issuer)
    if token is None and not (args.agent or args.principal or args.jti):
        raise InvalidRequestError("revoke what? give a TOKEN, --agent, --principal or --jti")
    engine.revoke(token, agent=args.agent, principal=args.principal, jti=args.jti, reason=args.reason)
    what = [w for w in (token and "the token and its agent", args.agent, args.principal, args.jti) if w]
    print(f"revoked {', '.join(what)}; recorded in {args.revocations}")
    return EXIT_OK


def _cmd_token_compact(args: argparse.Namespace) -> int:
    log = RevocationLog(args.revocations, compaction=None)
    kwargs: dict[str, Any] = {}
    if args.max_lifetime is not None:
        kwargs["max_lifetime"] = parse_duration(args.max_lifetime, "--max-lifetime")
    if args.margin is not None:
        kwargs["margin"] = parse_duration(args.margin, "--margin")
    report = log.compact(**kwargs)
    print(
        f"compacted {args.revocations}: {report.records_before} -> {report.records_after} records, "
        f"{report.bytes_before} -> {report.bytes_after} bytes"
    )
    return EXIT_OK


def _keys_arg(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument("--key", required=required, metavar="FILE", help="the issuer's private key file (PEM)")


def _verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--jwks", metavar="FILE", help="the issuer's public keys (a JWKS JSON file)")
    _keys_arg(p, required=False)
    p.add_argument("--issuer", help="the issuer the keys sign for (default: the JWKS's `issuer` member)")
    p.add_argument("--policy", help="policy file (default: the example policy shipped with charter)")


def add_commands(sub: Any) -> None:
    """Add `keys` and `token` to the `charter` command's subparsers."""
    keys = sub.add_parser("keys", help="issuer signing keys").add_subparsers(
        dest="keys_command", required=True
    )
    init = keys.add_parser("init", help="create an issuer key file (Ed25519, mode 0600)")
    _keys_arg(init)
    init.add_argument("--issuer", required=True, help="the issuer's name (the tokens' `iss`)")
    init.add_argument("--force", action="store_true", help="replace an existing key file")
    init.set_defaults(run=_cmd_keys_init)
    rotate = keys.add_parser("rotate", help="sign with a new key; keep the old one published")
    _keys_arg(rotate)
    rotate.set_defaults(run=_cmd_keys_rotate)
    jwks = keys.add_parser("jwks", help="print the public keys as a JWKS document")
    _keys_arg(jwks)
    jwks.set_defaults(run=_cmd_keys_jwks)

    tok = sub.add_parser("token", help="agent credentials").add_subparsers(
        dest="token_command", required=True
    )
    issue = tok.add_parser("issue", help="issue a credential for a new agent")
    _keys_arg(issue)
    issue.add_argument("template", help="the agent's template")
    issue.add_argument("--for", dest="on_behalf_of", metavar="PRINCIPAL", help="the principal it acts for")
    issue.add_argument(
        "--scope", action="append", metavar="ACTIONS", help="action names/patterns (repeat or comma-separate)"
    )
    issue.add_argument("--ttl", help="lifetime, e.g. 900 or 15m (default: the template's, or 15m)")
    issue.add_argument("--audience", help="the service the token is for (`aud`)")
    issue.add_argument("--agent-id", help="the agent's id (`sub`; default: a random one)")
    issue.add_argument("--policy", help="refuse credentials this policy would refuse")
    issue.set_defaults(run=_cmd_token_issue)
    inspect = tok.add_parser("inspect", help="decode a token without verifying it")
    inspect.add_argument("token", help="the token, or - for standard input")
    inspect.set_defaults(run=_cmd_token_inspect)
    verify = tok.add_parser("verify", help="verify a token as an engine would (exit 1 if refused)")
    verify.add_argument("token", help="the token, or - for standard input")
    _verify_args(verify)
    verify.add_argument("--audience", help="this verifier's audience")
    verify.add_argument("--revocations", metavar="LOG", help="the revocation log to honour")
    verify.add_argument("--json", action="store_true", help="print JSON")
    verify.set_defaults(run=_cmd_token_verify)
    revoke = tok.add_parser("revoke", help="record a revocation in the revocation log")
    revoke.add_argument("token", nargs="?", help="revoke this token and its agent (- for standard input)")
    _verify_args(revoke)
    revoke.add_argument("--revocations", metavar="LOG", required=True, help="the revocation log")
    revoke.add_argument("--agent", metavar="ID", help="revoke an agent and every agent acting for it")
    revoke.add_argument("--principal", metavar="ID", help="revoke every credential of a principal's agents")
    revoke.add_argument("--jti", help="revoke one credential by its `jti`")
    revoke.add_argument("--reason", help="why (kept in the log)")
    revoke.set_defaults(run=_cmd_token_revoke)
    compact = tok.add_parser(
        "compact", help="rewrite a revocation log without the records that can no longer matter"
    )
    compact.add_argument("--revocations", metavar="LOG", required=True, help="the revocation log")
    compact.add_argument(
        "--max-lifetime",
        metavar="DURATION",
        help="the longest lifetime of any credential your issuers mint (e.g. 8h); without it only "
        "expired `jti` records, duplicates and settled suspensions are dropped",
    )
    compact.add_argument(
        "--margin", metavar="DURATION", help="the largest clock skew between the processes (default 10m)"
    )
    compact.set_defaults(run=_cmd_token_compact)
