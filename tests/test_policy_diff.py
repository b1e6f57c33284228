"""`charter policy diff` and `charter.policytools.diff`: what a policy change does, per subject."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import charter
from charter import cli
from charter.policy import example_path, from_dict, from_toml
from charter.policytools.diff import Change, PolicyDiff, diff
from charter.policytools.lint import PolicyLintWarning
from test_properties import PRINCIPALS, policies, valid_resources

EXAMPLE_TEXT = example_path().read_text()


def changed(old_text: str, new_text: str) -> PolicyDiff:
    return diff(from_toml(old_text), from_toml(new_text))


def edit(old: str, new: str) -> PolicyDiff:
    assert old in EXAMPLE_TEXT
    return changed(EXAMPLE_TEXT, EXAMPLE_TEXT.replace(old, new))


def by_subject(d: PolicyDiff) -> dict[str, list[tuple[str, str, str | None]]]:
    return {
        f"{s.kind} {s.name}": [(c.action, c.kind, c.example and c.example.resource) for c in s.changes]
        for s in d.subjects
    }


def test_no_change() -> None:
    d = changed(EXAMPLE_TEXT, EXAMPLE_TEXT)
    assert not d
    assert str(d) == "no change in what any role, template or principal may do"
    # Renumbering entries and reordering roles and tables decides nothing differently.
    shuffled = EXAMPLE_TEXT.replace(
        'allow = ["tickets:read", "crm:read", "deploy:read"]',
        'allow = ["deploy:read", "crm:read", "tickets:read"]',
    ).replace('allow = ["db:*", "deploy:*"]', 'allow = ["deploy:*", "db:*"]')
    assert not changed(EXAMPLE_TEXT, shuffled)


def test_gained_and_lost() -> None:
    d = edit(
        '[roles.treasurer]\ninherits = ["finance"]\nallow = ["payments:payout"]',
        '[roles.treasurer]\ninherits = ["finance"]\nallow = ["db:drop"]',
    )
    got = by_subject(d)
    assert got["role treasurer"] == [("db:drop", "gained", None), ("payments:payout", "lost", None)]
    assert got["principal user:carol"] == got["role treasurer"]
    assert "template refund-agent" not in got  # it holds finance, not treasurer


def test_widened_and_narrowed_with_examples() -> None:
    d = edit(
        'allow = ["db:read", { action = "db:export", on = ["analytics/**"] }]',
        'allow = [{ action = "db:read", on = ["orders/**"] }, { action = "db:export", on = ["analytics/**", "orders/**"] }]',
    )
    got = by_subject(d)["role analyst"]
    assert ("db:export", "widened", "orders") in got
    narrowed = [c for c in got if c[:2] == ("db:read", "narrowed")]
    assert narrowed
    assert narrowed[0][2] is None
    text = str(d)
    assert "role analyst\n" in text
    assert "  ~ db:export widened, e.g. on orders" in text


def test_conditions_changed() -> None:
    d = edit(
        'allow = ["payments:read", "payments:refund",',
        'allow = ["payments:read", { action = "payments:refund", when = "context.amount < 100" },',
    )
    got = by_subject(d)
    # Refunds were allowed on every request, now only when the amount is small: narrowed.
    assert got["role finance"] == [("payments:refund", "narrowed", None)]
    # admin's `*` still grants it unconditionally: only a condition of an entry changed.
    assert got["role admin"] == [("payments:refund", "changed", None)]
    assert (
        str(Change("payments:refund", "changed")) == "~ payments:refund: conditions, hooks or guards changed"
    )


def test_guards_narrow() -> None:
    d = edit(
        'actions = ["db:write", "deploy:run", "deploy:rollback"]',
        'actions = ["db:write", "db:read", "deploy:run", "deploy:rollback"]',
    )
    got = by_subject(d)
    assert ("db:read", "narrowed", "prod") in got["role engineer"]


def test_principals_templates_and_actions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new_text = (
        EXAMPLE_TEXT.replace(
            '"deploy:read", "deploy:run", "deploy:rollback",', '"deploy:read", "deploy:run",'
        )
        .replace(
            'actions = ["db:write", "deploy:run", "deploy:rollback"]', 'actions = ["db:write", "deploy:run"]'
        )
        .replace(
            '[principals."user:dave"]\nroles = ["viewer"]', '[principals."user:dave"]\nroles = ["finance"]'
        )
        .replace('[principals."svc:nightly-etl"]\nroles = ["analyst"]\n', "")
        + '\n[templates.triage-bot]\nroles = ["viewer"]\n'
    )
    d = changed(EXAMPLE_TEXT, new_text)
    assert d.actions_removed == ("deploy:rollback",)
    assert d.actions_added == ()
    subjects = {(s.kind, s.name): s for s in d.subjects}
    dave = subjects[("principal", "user:dave")]
    assert (dave.status, dave.old_roles, dave.new_roles) == ("changed", ("viewer",), ("finance",))
    assert {c.action for c in dave.changes if c.kind == "gained"} == {
        "payments:read",
        "payments:refund",
        "db:read",
    }
    assert subjects[("principal", "svc:nightly-etl")].status == "removed"
    assert subjects[("template", "triage-bot")].status == "added"
    assert ("deploy:rollback", "lost", None) in by_subject(d)["role engineer"]
    old, new = tmp_path / "old.toml", tmp_path / "new.toml"
    old.write_text(EXAMPLE_TEXT)
    new.write_text(new_text)
    code = cli.main(["policy", "diff", str(old), str(new)])
    out = capsys.readouterr().out
    assert code == 1
    assert "actions declared: -deploy:rollback" in out
    assert "principal user:dave: roles viewer -> finance" in out
    assert "principal svc:nightly-etl (removed): roles analyst" in out
    assert cli.main(["policy", "diff", str(old), str(new), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["actions"] == {"added": [], "removed": ["deploy:rollback"]}
    dave_json = next(s for s in data["subjects"] if s["name"] == "user:dave")
    assert dave_json["roles"] == {"old": ["viewer"], "new": ["finance"]}
    assert {"action": "payments:read", "change": "gained", "example": {"resource": None}} in dave_json[
        "changes"
    ]
    assert cli.main(["policy", "diff", str(old), str(old)]) == 0
    (tmp_path / "bad.toml").write_text("actions = 3")
    assert cli.main(["policy", "diff", str(old), str(tmp_path / "bad.toml")]) == 2


# --- on random policies ---------------------------------------------------------------------------


def quietly(doc: dict[str, Any]) -> charter.Engine:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PolicyLintWarning)
        return charter.Engine.from_dict(doc)


@st.composite
def pairs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A random policy and a variant: another random policy's roles, or the same with one entry changed."""
    old = draw(policies())
    if draw(st.booleans()):
        return old, draw(policies())
    new = copy.deepcopy(old)
    role = draw(st.sampled_from(sorted(new["roles"])))
    entries = new["roles"][role].setdefault(draw(st.sampled_from(["allow", "deny"])), [])
    if entries and draw(st.booleans()):
        entries.pop(draw(st.integers(0, len(entries) - 1)))
    else:
        on = draw(st.lists(st.sampled_from(["a", "a/*", "b/**", "**", "*/c"]), min_size=1, max_size=2))
        entries.append(
            {"action": draw(st.sampled_from(new["actions"])), "on": on} if draw(st.booleans()) else "*"
        )
    return old, new


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(pair=pairs(), drawn=st.lists(valid_resources, max_size=6))
def test_diff_agrees_with_the_engines(pair: tuple[dict[str, Any], dict[str, Any]], drawn: list[str]) -> None:
    """For every principal and action: a reported change comes with a request that shows it, and
    where nothing is reported, the two policies decide every sampled request the same way."""
    old, new = pair
    d = diff(from_dict(old), from_dict(new))
    a, b = quietly(old), quietly(new)
    resources: list[str | None] = [None, *drawn, "a", "a/c", "b", "b/x/c", "x/c"]
    reported = {(s.name, c.action): c for s in d.subjects if s.kind == "principal" for c in s.changes}
    for principal in PRINCIPALS:
        for action in sorted(set(old["actions"]) | set(new["actions"])):
            c = reported.get((principal, action))
            if c is None:
                for r in resources:
                    assert a.check(principal, action, r).allowed == b.check(principal, action, r).allowed, (
                        principal,
                        action,
                        r,
                    )
                continue
            assert c.kind != "changed", c  # without conditions, hooks or guards, regions say it all
            assert c.example is not None
            before = a.check(principal, action, c.example.resource).allowed
            after = b.check(principal, action, c.example.resource).allowed
            assert (before, after) == ((False, True) if c.kind in ("gained", "widened") else (True, False)), c
            if c.kind == "gained":
                assert not any(a.check(principal, action, r).allowed for r in resources)
            if c.kind == "lost":
                assert not any(b.check(principal, action, r).allowed for r in resources)
