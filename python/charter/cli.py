"""The `charter` command line: decisions and policy tools from a shell.

Exit codes: 0 allowed (or success), 1 denied, 2 bad usage or a policy error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from charter import _core, cli_audit, cli_bench, cli_identity, cli_policy, cli_server, demo
from charter.engine import Engine
from charter.errors import CharterError
from charter.policy import example_path

EXIT_ALLOWED, EXIT_DENIED, EXIT_ERROR = 0, 1, 2


def _engine(path: str | None) -> Engine:
    return Engine.from_file(path or example_path())


def _subject(engine: Engine, principal: str, template: str | None) -> str | int:
    """The principal itself, or a fresh agent of `template` acting for it."""
    if template is None:
        return principal
    return engine.provision(template, on_behalf_of=principal).handle


def _cmd_check(args: argparse.Namespace) -> int:
    engine = _engine(args.policy)
    subject = _subject(engine, args.principal, args.agent_template)
    decision = engine.check(subject, args.action, args.resource)
    who = f"{args.agent_template} agent for {args.principal}" if args.agent_template else args.principal
    if args.json:
        print(
            json.dumps(
                {"principal": who, "action": args.action, "resource": args.resource, **decision.to_dict()}
            )
        )
    else:
        verdict = "ALLOW" if decision else "DENY"
        on = f" on {args.resource}" if args.resource else ""
        rule = f" [{decision.rule}]" if decision.rule else ""
        print(
            f"{verdict} {who} {args.action}{on}: {decision.reason}{rule} (policy {decision.policy_version})"
        )
    return EXIT_ALLOWED if decision else EXIT_DENIED


def _cmd_validate(args: argparse.Namespace) -> int:
    engine = Engine.from_file(args.policy)
    stats = engine.stats()
    print(f"ok: {args.policy}: {len(engine.actions)} actions, policy version {stats['policy_version']}")
    return EXIT_ALLOWED


def _cmd_explain(args: argparse.Namespace) -> int:
    engine = Engine.from_file(args.policy)
    subject = _subject(engine, args.principal, args.agent_template)
    explanation = engine.explain(subject, args.action, args.resource)
    print(json.dumps(explanation.to_dict(), indent=2) if args.json else explanation)
    return EXIT_ALLOWED if explanation.allowed else EXIT_DENIED


def _request_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("principal", help="principal id (e.g. user:alice)")
    p.add_argument("action", help="action name (e.g. db:read)")
    p.add_argument("resource", nargs="?", default=None, help="resource name (e.g. customers/42)")
    p.add_argument(
        "--agent-template",
        metavar="TEMPLATE",
        help="decide for a fresh agent of TEMPLATE acting on behalf of the principal",
    )
    p.add_argument("--json", action="store_true", help="print JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="charter", description="Authorization and governance for AI agents."
    )
    parser.add_argument("--version", action="version", version=f"charter {_core.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="decide one request")
    check.add_argument("--policy", help="policy file (default: the example policy shipped with charter)")
    _request_args(check)
    check.set_defaults(run=_cmd_check)

    pol = sub.add_parser("policy", help="policy tools").add_subparsers(dest="policy_command", required=True)
    validate = pol.add_parser("validate", help="load and compile a policy; report the first error")
    validate.add_argument("policy")
    validate.set_defaults(run=_cmd_validate)
    explain = pol.add_parser("explain", help="decide one request and show the derivation")
    explain.add_argument("policy")
    _request_args(explain)
    explain.set_defaults(run=_cmd_explain)
    cli_policy.add_commands(pol)
    cli_server.add_commands(sub)
    cli_identity.add_commands(sub)
    cli_audit.add_commands(sub)
    cli_bench.add_commands(sub)
    demo.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except CharterError as err:
        print(f"charter: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    return code


if __name__ == "__main__":
    sys.exit(main())
