"""`charter policy test|lint|who-can|diff|permissions`: policy authoring tools from a shell.

Exit codes follow `charter`'s: 2 is bad input (a policy or test file that does not load).
`test`: 0 every case passed, 1 some failed. `lint`: 1 if there are findings at or above
`--fail-on` (default: warnings). `who-can`: 1 if nobody may. `diff`: 1 if anything changes
(like diff(1)). Library equivalents live in `charter.policytools`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from charter import _core
from charter.engine import Engine
from charter.errors import PolicyError
from charter.hooks import Hook
from charter.policy import Policy, from_file
from charter.policytools import diff as policy_diff
from charter.policytools import replay as policy_replay
from charter.policytools import testing, whocan
from charter.policytools.lint import RULES, PolicyLintWarning, lint

EXIT_OK, EXIT_FOUND, EXIT_ERROR = 0, 1, 2


def _print(data: Any, as_json: bool) -> None:
    print(json.dumps(data.to_dict(), indent=2) if as_json else data)


def _quiet_load(doc: Policy, source: str, hooks: Mapping[str, Hook] | None = None) -> list[PolicyLintWarning]:
    """Compile `doc` to report its errors (without starting its audit log); the lint warnings loading
    raised, for the caller to show."""
    if "audit" in doc.__struct_fields__:
        doc = msgspec.structs.replace(doc, audit=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PolicyLintWarning)
        try:
            Engine.from_dict(msgspec.to_builtins(doc), hooks=hooks, allow_missing_hooks=hooks is None)
        except PolicyError as err:
            err.source = err.source or source
            raise
    return [w.message for w in caught if isinstance(w.message, PolicyLintWarning)]


def _load_hooks(spec: str | None) -> Mapping[str, Hook] | None:
    """`module:attribute` naming a dict of hooks, imported from the current directory too."""
    if spec is None:
        return None
    module, _, attribute = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        hooks = getattr(importlib.import_module(module), attribute or "HOOKS")
    except (ImportError, AttributeError) as err:
        raise testing.PolicyTestError(f"cannot load hooks from `{spec}`: {err}") from None
    if not isinstance(hooks, Mapping):
        raise testing.PolicyTestError(f"`{spec}` is not a mapping of hook names to callables")
    return hooks


def _cmd_test(args: argparse.Namespace) -> int:
    hooks = _load_hooks(args.hooks)
    doc = from_file(args.policy)
    for w in _quiet_load(doc, args.policy, hooks):
        print(f"charter: lint: {args.policy}: {w.finding}", file=sys.stderr)
    cases = [c for path in args.tests for c in testing.load_cases(path)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PolicyLintWarning)  # shown above, once
        report = testing.run(doc, cases, hooks=hooks, coverage=args.coverage, policy=args.policy)
    print(json.dumps(report.to_dict(), indent=2) if args.json else testing.format_report(report))
    return EXIT_OK if report.ok else EXIT_FOUND


def _cmd_lint(args: argparse.Namespace) -> int:
    doc = from_file(args.policy)
    _quiet_load(doc, args.policy)
    found = lint(doc)
    failing = [f for f in found if f.severity == "warning" or args.fail_on == "info"]
    if args.json:
        print(json.dumps({"policy": args.policy, "findings": [f.to_dict() for f in found]}, indent=2))
    else:
        for f in found:
            print(f"{args.policy}: {f}")
        counts = {s: sum(f.severity == s for f in found) for s in ("warning", "info")}
        print(f"{counts['warning']} warning(s), {counts['info']} info")
    return EXIT_FOUND if failing else EXIT_OK


def _cmd_rules(args: argparse.Namespace) -> int:
    for r in RULES.values():
        print(f"{r.code}  {r.severity:7}  {r.name}: {r.summary}")
    return EXIT_OK


def _cmd_who_can(args: argparse.Namespace) -> int:
    doc = from_file(args.policy)
    _quiet_load(doc, args.policy)
    answer = whocan.who_can(doc, args.action, args.resource)
    _print(answer, args.json)
    return EXIT_OK if answer.roles or answer.principals or answer.templates else EXIT_FOUND


def _cmd_diff(args: argparse.Namespace) -> int:
    old, new = from_file(args.old), from_file(args.new)
    _quiet_load(old, args.old)
    _quiet_load(new, args.new)
    changes = policy_diff.diff(old, new)
    _print(changes, args.json)
    return EXIT_FOUND if changes else EXIT_OK


def _cmd_permissions(args: argparse.Namespace) -> int:
    doc = from_file(args.policy)
    _quiet_load(doc, args.policy)
    engine = testing.engine_for_tests(doc, _core.ManualClock(time.time()))
    subject: Any = args.principal
    if args.agent_template:
        subject = engine.provision(args.agent_template, on_behalf_of=args.principal)
    _print(engine.permissions(subject, args.resource), args.json)
    return EXIT_OK


def _cmd_replay(args: argparse.Namespace) -> int:
    report = policy_replay.replay(args.policy, args.audit_dir)
    _print(report, args.json)
    return EXIT_FOUND if report.changed else EXIT_OK


def add_commands(policy: Any) -> None:
    """Add `test`, `lint`, `rules`, `who-can`, `diff` and `permissions` to the `policy` subcommands."""
    commands: list[tuple[str, str, Callable[[argparse.Namespace], int]]] = [
        ("test", "run policy test files (TOML [[case]] tables) against a policy", _cmd_test),
        (
            "lint",
            "static analysis: entries that never apply, constant conditions, unusable templates, ...",
            _cmd_lint,
        ),
        ("lint-rules", "list the lint rules: code, severity, name", _cmd_rules),
        ("who-can", "the roles, principals and templates that may do an action", _cmd_who_can),
        ("diff", "what changes between two policies, per role, template and principal", _cmd_diff),
        (
            "permissions",
            "what a principal (or an agent of a template acting for it) may do",
            _cmd_permissions,
        ),
        (
            "replay",
            "re-decide an audit log's decisions under a policy and report what would change",
            _cmd_replay,
        ),
    ]
    parsers = {name: policy.add_parser(name, help=text, description=text) for name, text, _ in commands}
    for name, _, run in commands:
        parsers[name].set_defaults(run=run)
        if name != "lint-rules":
            parsers[name].add_argument("--json", action="store_true", help="print JSON")

    p = parsers["test"]
    p.add_argument("policy")
    p.add_argument("tests", nargs="+", metavar="TESTS", help="test files")
    p.add_argument(
        "--coverage", action="store_true", help="report the entries, conditions and guards no case exercised"
    )
    p.add_argument(
        "--hooks",
        metavar="MODULE:NAME",
        help="a dict of the policy's hooks, `module:name` (name defaults to HOOKS), imported from the current directory too",
    )

    p = parsers["lint"]
    p.add_argument("policy")
    p.add_argument(
        "--fail-on",
        choices=["warning", "info"],
        default="warning",
        help="exit 1 for findings of this severity or worse",
    )

    p = parsers["who-can"]
    p.add_argument("policy")
    p.add_argument("action")
    p.add_argument("resource", nargs="?", default=None)

    p = parsers["diff"]
    p.add_argument("old")
    p.add_argument("new")

    p = parsers["replay"]
    p.add_argument("policy", help="the candidate policy")
    p.add_argument("audit_dir", help="an audit directory (docs/audit.md)")

    p = parsers["permissions"]
    p.add_argument("policy")
    p.add_argument("principal")
    p.add_argument("resource", nargs="?", default=None)
    p.add_argument(
        "--agent-template", metavar="TEMPLATE", help="for a fresh agent of TEMPLATE acting for the principal"
    )
