"""`charter policy test` and `charter.policytools.testing`: test files, reports, exit codes, coverage."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reference as ref
from charter import cli
from charter.policy import example_path, from_dict, from_toml
from charter.policytools.testing import (
    CaseResult,
    PolicyTestError,
    cases_from_dict,
    cases_from_toml,
    format_report,
    load_cases,
    run,
    run_files,
)
from test_properties import PRINCIPALS, policies, valid_resources

EXAMPLE = str(example_path())
EXAMPLE_TESTS = str(example_path().with_name("default_tests.toml"))

POLICY = """
actions = ["doc:read", "doc:write", "doc:delete"]

[resources]
drafts = ["drafts/**"]

[roles.reader]
allow = ["doc:read", { action = "doc:write", on = ["@drafts"], when = 'context.author == principal.id' }]
deny = [{ action = "doc:read", on = ["secret/**"] }]

[roles.editor]
inherits = ["reader"]
allow = ["doc:write", { action = "doc:delete", when = 'time.hour < 12' }]

[[guards]]
on = ["published/**"]
actions = ["doc:write"]
require = 'has context.review'

[[guards]]
actions = ["doc:write"]
require = 'not has context.frozen'

[principals."user:r"]
roles = ["reader"]

[principals."user:e"]
roles = ["editor"]

[templates.bot]
roles = ["editor"]
max_delegation_depth = 2
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def cases(text: str) -> list[CaseResult]:
    """Run test-file text against `POLICY`."""
    return run(from_toml(POLICY), cases_from_toml(text)).results


# --- the shipped example ------------------------------------------------------------------------


def test_the_example_tests_pass_with_full_coverage() -> None:
    report = run_files(EXAMPLE, [EXAMPLE_TESTS], coverage=True)
    assert report.ok, format_report(report)
    assert len(report.results) >= 25
    assert report.coverage is not None
    missing = report.coverage.missing
    assert missing["allow"] == missing["deny"] == missing["guards"] == missing["conditions"] == []


def test_cli_runs_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = main(["policy", "test", EXAMPLE, EXAMPLE_TESTS, "--coverage"], capsys)
    assert code == 0, out + err
    assert "  ok    alice reads a customer record" in out
    assert re.search(r"^\d+ passed, 0 failed$", out, re.MULTILINE)
    coverage = re.search(r"^coverage: (\d+)/(\d+) allow entries, (\d+)/(\d+) deny entries", out, re.MULTILINE)
    assert coverage is not None
    assert coverage[1] == coverage[2]
    assert coverage[3] == coverage[4]
    code, out, _ = main(["policy", "test", EXAMPLE, EXAMPLE_TESTS, "--json"], capsys)
    data = json.loads(out)
    assert code == 0
    assert data["failed"] == 0
    assert data["passed"] == len(data["cases"])
    assert "coverage" not in data


# --- reports -------------------------------------------------------------------------------------


def test_a_failure_shows_the_decision_and_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tests = write(
        tmp_path,
        "t.toml",
        """
        [[case]]
        name = "readers write drafts"
        principal = "user:r"
        action = "doc:write"
        resource = "drafts/a"
        context = { author = "user:x" }
        expect = "allow"

        [[case]]
        principal = "user:r"
        action = "doc:read"
        resource = "secret/plan"
        expect = "deny"
        reason = "no_grant"
        rule = "roles.reader.allow[0]"
        """,
    )
    policy = write(tmp_path, "p.toml", POLICY)
    code, out, _ = main(["policy", "test", policy, tests], capsys)
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == tests
    assert "  FAIL  readers write drafts" in lines
    assert "        expected allow, got deny" in lines
    assert "        decision: deny, condition_failed [roles.reader.allow[1]]" in lines
    assert "        detail: condition `context.author == principal.id` is false" in lines
    assert "  FAIL  user:r deny doc:read secret/plan" in lines  # a title made from the case
    assert "        expected reason `no_grant`, got `denied_by_rule`" in lines
    assert "        expected rule `roles.reader.allow[0]`, got `roles.reader.deny[0]`" in lines
    assert lines[-1] == "0 passed, 2 failed"
    code, out, _ = main(["policy", "test", policy, tests, "--json"], capsys)
    first = json.loads(out)["cases"][0]
    assert first["passed"] is False
    assert first["decision"] == {
        "allowed": False,
        "reason": "condition_failed",
        "rule": "roles.reader.allow[1]",
        "detail": "condition `context.author == principal.id` is false",
    }
    assert first["problems"] == ["expected allow, got deny"]


def test_subjects_agents_chains_scopes_roles_and_time() -> None:
    results = cases(
        """
        [[case]]
        agent = { template = "bot", on_behalf_of = "user:e" }
        action = "doc:write"
        context = { review = true }
        expect = "allow"

        [[case]]
        principal = "user:r"
        agent = { template = "bot" }
        action = "doc:write"
        expect = "deny"
        reason = "delegator_denied"

        [[case]]
        agent = { template = "bot", on_behalf_of = { template = "bot", on_behalf_of = { template = "bot", on_behalf_of = "user:e" } } }
        action = "doc:read"
        expect = "allow"

        [[case]]
        agent = { template = "bot", on_behalf_of = "user:e", scope = ["doc:read"] }
        action = "doc:delete"
        expect = "deny"
        reason = "out_of_scope"

        [[case]]
        agent = { template = "bot" }
        action = "doc:read"
        expect = "allow"

        [[case]]
        roles = ["editor"]
        action = "doc:delete"
        time = 2024-05-06T09:30:00Z
        expect = "allow"

        [[case]]
        roles = ["editor"]
        action = "doc:delete"
        time = 1715000400  # 13:00 UTC
        expect = "deny"
        reason = "condition_failed"

        [[case]]
        roles = ["nonesuch"]
        action = "doc:read"
        expect = "deny"
        """
    )
    assert [r.passed for r in results] == [True, True, False, True, True, True, True, False]
    assert results[2].error is not None
    assert "could not provision the agent" in results[2].error
    assert results[7].error is not None
    assert "nonesuch" in results[7].error


def test_cases_do_not_share_quotas_and_write_no_audit_log(tmp_path: Path) -> None:
    audit_dir = tmp_path / "audit"
    policy = (
        POLICY.replace(
            '[templates.bot]\nroles = ["editor"]', '[templates.bot]\nroles = ["editor"]\nquota = "tiny"'
        )
        + f'\n[quotas.tiny]\nrate = "1/h"\nburst = 1\n[audit]\ndirectory = "{audit_dir}"\n'
    )
    once = '[[case]]\nagent = { template = "bot", on_behalf_of = "user:e" }\naction = "doc:read"\nexpect = "allow"\n'
    report = run(from_toml(policy), cases_from_toml(once * 3))
    assert report.ok, format_report(report)
    assert not audit_dir.exists()


def test_hooks_from_the_library_and_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    policy_text = POLICY.replace(
        'allow = ["doc:write", ', 'allow = [{ action = "doc:write", hook = "owner" }, '
    )
    tests = '[[case]]\nprincipal = "user:e"\naction = "doc:write"\nexpect = "allow"\n'
    results = run(from_toml(policy_text), cases_from_toml(tests)).results
    assert (results[0].passed, results[0].reason) == (False, "hook_error")  # no hook registered
    results = run(from_toml(policy_text), cases_from_toml(tests), hooks={"owner": lambda req: True}).results
    assert results[0].passed
    (tmp_path / "myhooks.py").write_text("HOOKS = {'owner': lambda req: True}\nOTHER = 3\n")
    monkeypatch.chdir(tmp_path)
    policy, t = write(tmp_path, "p.toml", policy_text), write(tmp_path, "t.toml", tests)
    assert main(["policy", "test", policy, t, "--hooks", "myhooks"], capsys)[0] == 0
    assert main(["policy", "test", policy, t, "--hooks", "myhooks:HOOKS"], capsys)[0] == 0
    code, _, err = main(["policy", "test", policy, t, "--hooks", "myhooks:OTHER"], capsys)
    assert code == 2
    assert "is not a mapping" in err
    code, _, err = main(["policy", "test", policy, t, "--hooks", "nosuchmodule"], capsys)
    assert code == 2
    assert "cannot load hooks" in err


def test_lint_warnings_are_shown_once_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = write(tmp_path, "p.toml", POLICY + '[roles.dead]\nallow = ["doc:read"]\ndeny = ["doc:read"]\n')
    tests = write(
        tmp_path, "t.toml", '[[case]]\nprincipal = "user:r"\naction = "doc:read"\nexpect = "allow"\n'
    )
    code, _out, err = main(["policy", "test", policy, tests], capsys)
    assert code == 0
    assert err.count("CH104") == 1
    assert f"charter: lint: {policy}: roles.dead.allow[0]: CH104 warning" in err


# --- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        (
            '[[case]]\nprincipal = "u"\naction = "a:b"\nexpect = "maybe"\n',
            "case[0].expect",
            "expected `allow` or `deny`, got `maybe`",
        ),
        (
            '[[case]]\nprincipal = "u"\naction = "a:b"\nexpect = "allow"\ncolour = 1\n',
            "case[0]",
            "unknown field `colour`",
        ),
        (
            '[[case]]\naction = "a:b"\nexpect = "allow"\n',
            "case[0]",
            "needs a `principal`, `roles` or an `agent`",
        ),
        (
            '[[case]]\nprincipal = "u"\nroles = []\naction = "a:b"\nexpect = "allow"\n',
            "case[0].roles",
            "not both",
        ),
        (
            '[[case]]\nprincipal = "u"\nagent = { template = "t", on_behalf_of = "v" }\naction = "a:b"\nexpect = "deny"\n',
            "case[0].agent",
            "give the delegator once",
        ),
        (
            '[[case]]\nprincipal = "u"\naction = "a:b"\nexpect = "deny"\nreason = "nope"\n',
            "case[0].reason",
            "unknown reason `nope`",
        ),
        (
            '[[case]]\nprincipal = "u"\naction = "a:b"\nexpect = "allow"\nreason = "no_grant"\n',
            "case[0].reason",
            "`granted`",
        ),
        ('[[case]]\nprincipal = 5\naction = "a:b"\nexpect = "allow"\n', "case[0].principal", "expected `str"),
        (
            '[[case]]\nprincipal = "u"\naction = "a:b"\nexpect = "allow"\nsource = "x"\n',
            "case[0]",
            "unknown field `source`",
        ),
        ("x = 1\n", None, "unknown field `x`"),
        ("", None, "no test cases"),
        ("[[case]\n", None, "invalid TOML"),
    ],
)
def test_malformed_test_files(tmp_path: Path, text: str, path: str | None, message: str) -> None:
    file = write(tmp_path, "bad.toml", text)
    with pytest.raises(PolicyTestError) as info:
        load_cases(file)
    assert info.value.path == path
    assert info.value.source == file
    assert message in info.value.message


def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(
        tmp_path, "t.toml", '[[case]]\nprincipal = "user:r"\naction = "doc:read"\nexpect = "allow"\n'
    )
    policy = write(tmp_path, "p.toml", POLICY)
    code, _, err = main(["policy", "test", policy, good, str(tmp_path / "missing.toml")], capsys)
    assert code == 2
    assert "missing.toml: cannot read the test file" in err
    broken = write(tmp_path, "broken.toml", POLICY.replace('inherits = ["reader"]', 'inherits = ["nobody"]'))
    code, _, err = main(["policy", "test", broken, good], capsys)
    assert code == 2
    assert "roles.editor.inherits[0]" in err


# --- coverage -------------------------------------------------------------------------------------


def test_coverage_counts_only_what_a_decision_examined() -> None:
    report = run(
        from_toml(POLICY),
        cases_from_toml(
            """
            # The bot's own level denies nothing and allows; user:r's level refuses: reader's
            # write-to-drafts condition is evaluated (false), editor's entries are the bot's.
            [[case]]
            agent = { template = "bot", on_behalf_of = "user:r" }
            action = "doc:write"
            resource = "drafts/x"
            context = { author = "nobody", review = true }
            expect = "deny"

            # Denied at the subject's own level: no guard is checked.
            [[case]]
            principal = "user:r"
            action = "doc:read"
            resource = "secret/x"
            expect = "deny"

            # The first guard fails: the second is not checked.
            [[case]]
            principal = "user:e"
            action = "doc:write"
            resource = "published/x"
            expect = "deny"
            """
        ),
        coverage=True,
    )
    assert report.ok, format_report(report)
    assert report.coverage is not None
    c = report.coverage
    # user:r's read of a secret matched reader's allow too (its deny won).
    assert {r for r, n in c.allows.items() if n} == {
        "roles.editor.allow[0]",
        "roles.reader.allow[0]",
        "roles.reader.allow[1]",
    }
    assert {r for r, n in c.denies.items() if n} == {"roles.reader.deny[0]"}
    assert c.guards == {"guards[0]": 1, "guards[1]": 0}
    assert c.conditions["roles.reader.allow[1].when"] == {"false"}
    assert c.conditions["guards[0].require"] == {"false"}
    missing = c.missing
    assert missing["allow"] == ["roles.editor.allow[1]"]
    assert missing["guards"] == ["guards[1]"]
    assert missing["conditions"] == ["roles.editor.allow[1].when", "guards[1].require"]
    assert missing["conditions_never_true"] == ["roles.reader.allow[1].when", "guards[0].require"]
    assert missing["conditions_never_false"] == []
    text = format_report(report)
    assert "coverage: 3/4 allow entries, 1/1 deny entries, 2/4 conditions, 1/2 guards" in text
    assert "  conditions never true:\n    roles.reader.allow[1].when\n    guards[0].require" in text


SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@pytest.mark.filterwarnings("ignore::charter.policytools.lint.PolicyLintWarning")
@SETTINGS
@given(doc=policies(), data=st.data())
def test_cases_from_the_reference_pass_and_coverage_is_exact(
    doc: dict[str, Any], data: st.DataObject
) -> None:
    """Cases whose expectations the reference model computes all pass (and all fail when flipped);
    coverage counts exactly the entries the reference says matched at the examined levels."""
    requests = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from(PRINCIPALS),
                st.sampled_from([None, *sorted(doc["templates"])]),
                st.sampled_from(doc["actions"]),
                st.one_of(st.none(), valid_resources),
            ),
            min_size=1,
            max_size=8,
        )
    )
    built, expected_allow, expected_deny = [], set(), set()
    for principal, template, action, resource in requests:
        levels = [doc["principals"][principal]["roles"]]
        if template is not None:
            levels.insert(0, doc["templates"][template]["roles"])
        want = ref.decide_chain(doc, levels, action, resource)
        case: dict[str, Any] = {
            "action": action,
            "expect": "allow" if want.allowed else "deny",
            "reason": want.reason,
        }
        case["agent" if template else "principal"] = (
            {"template": template, "on_behalf_of": principal} if template else principal
        )
        if resource is not None:
            case["resource"] = resource
        built.append(case)
        for roles in levels:
            outcome, _ = ref.level_outcome(doc, roles, action, resource)
            expected_allow |= ref.matching_rules(
                doc, roles, "allow", action, resource, None, (True, False, ref.ERROR)
            )
            expected_deny |= ref.matching_rules(
                doc, roles, "deny", action, resource, None, (True, False, ref.ERROR)
            )
            if outcome != "allow":
                break
    report = run(from_dict(doc), cases_from_dict({"case": built}), coverage=True)
    assert report.ok, format_report(report)
    assert report.coverage is not None
    assert {r for r, n in report.coverage.allows.items() if n} == expected_allow
    assert {r for r, n in report.coverage.denies.items() if n} == expected_deny
    flipped = [{**c, "expect": "deny" if c["expect"] == "allow" else "allow"} for c in built]
    for c in flipped:
        c.pop("reason")
    assert not any(r.passed for r in run(from_dict(doc), cases_from_dict({"case": flipped})).results)
