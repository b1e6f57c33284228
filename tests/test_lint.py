"""`charter.policytools.lint`: each rule fires on what it describes and only there; warnings on load.

Every rule has a positive and a negative case; property tests check the rules' promises on
random policies against the engine (an allow flagged as shadowed changes no decision when
deleted; an unusable template's agents are denied everything; a role flagged as granting
nothing grants nothing).
"""

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
from charter.policy import example_path, from_dict, from_toml
from charter.policytools import lint as lint_module
from charter.policytools.conditions import constant
from charter.policytools.lint import RULES, Finding, PolicyLintWarning, lint
from test_properties import PRINCIPALS, contexts, policies, valid_resources

BASE = """
actions = ["db:read", "db:write", "db:drop", "db:export", "fs:read"]
[principals."user:u"]
roles = ["r"]
"""


def findings(toml: str, code: str, **kw: Any) -> list[Finding]:
    """The findings of one rule for `BASE` + `toml`."""
    return [f for f in lint(from_toml(BASE + toml), **kw) if f.code == code]


def paths(toml: str, code: str, **kw: Any) -> list[str | None]:
    return [f.path for f in findings(toml, code, **kw)]


def test_rules_have_stable_codes_and_severities() -> None:
    assert sorted(RULES) == [f"CH1{i:02d}" for i in range(11)]
    assert {r.severity for r in RULES.values()} == {"warning", "info"}
    assert len({r.name for r in RULES.values()}) == len(RULES)


# --- CH101 unreachable role ---------------------------------------------------------------------


def test_ch101_unreachable_role() -> None:
    toml = """
    [roles.r]
    inherits = ["base"]
    [roles.base]
    allow = ["db:read"]
    [roles.orphan]
    allow = ["db:write"]
    """
    assert paths(toml, "CH101") == ["roles.orphan"]  # `base` is reached through `inherits`
    f = findings(toml, "CH101")[0]
    assert f.severity == "info"
    assert "orphan" in f.message


def test_ch101_not_without_any_principal_or_template() -> None:
    doc = from_dict({"actions": ["db:read"], "roles": {"r": {"allow": ["db:read"]}}})
    assert [f for f in lint(doc) if f.code == "CH101"] == []


# --- CH102 empty role ---------------------------------------------------------------------------


def test_ch102_empty_role() -> None:
    toml = """
    [roles.r]
    inherits = ["hollow"]
    [roles.hollow]
    [roles.denier]
    deny = ["db:drop"]
    [roles.full]
    inherits = ["denier"]
    allow = ["db:read"]
    """
    assert paths(toml, "CH102") == ["roles.hollow", "roles.r"]  # a deny-only role is not empty


# --- CH103 role grants nothing ------------------------------------------------------------------


def test_ch103_role_grants_nothing() -> None:
    toml = """
    [roles.r]
    allow = [{ action = "db:read", on = ["a/*"] }]
    deny = ["db:read"]
    [roles.viewer]
    allow = ["fs:read"]
    [roles.blocked]
    inherits = ["viewer"]
    deny = ["*"]
    [roles.mixin]
    deny = ["db:drop"]
    [roles.partly]
    allow = ["db:*"]
    deny = ["db:drop"]
    [roles.never]
    allow = [{ action = "db:read", when = "1 > 2" }]
    """
    assert paths(toml, "CH103") == ["roles.blocked", "roles.never", "roles.r"]
    assert all(f.severity == "warning" for f in findings(toml, "CH103"))


# --- CH104 shadowed allow -----------------------------------------------------------------------


def test_ch104_shadowed_allow() -> None:
    toml = """
    [roles.r]
    inherits = ["guarded"]
    allow = [
      { action = "db:read", on = ["prod/**"] },
      { action = "db:write", on = ["a/**"] },
      { action = "db:export", when = 'context.ok == true' },
      "db:drop",
    ]
    deny = [
      "db:read",
      { action = "db:write", on = ["a"] },
      { action = "db:write", on = ["a/*/**"] },
      { action = "db:export", when = 'context.ok == true' },
    ]
    [roles.guarded]
    deny = [{ action = "db:drop", when = "1 < 2" }]
    """
    got = {f.path: f.message for f in findings(toml, "CH104")}
    assert list(got) == [
        "roles.r.allow[0]",  # a deny without `on` covers every resource
        "roles.r.allow[1]",  # two denies that together cover `a/**`
        "roles.r.allow[2]",  # the deny's condition is the allow's: true whenever the allow grants
        "roles.r.allow[3]",  # an inherited deny whose condition is always true
    ]
    assert "`roles.r.deny[1]`, `roles.r.deny[2]`" in got["roles.r.allow[1]"]
    assert "`roles.guarded.deny[0]`" in got["roles.r.allow[3]"]


def test_ch104_not_when_something_gets_through() -> None:
    toml = """
    [roles.r]
    allow = [
      "db:read",
      { action = "db:write", on = ["a/**"] },
      { action = "db:export", when = 'context.ok == true' },
      "db:*",
      { action = "db:drop", hook = "h" },
    ]
    deny = [
      { action = "db:read", on = ["**"] },
      { action = "db:write", on = ["a/*/**"] },
      { action = "db:export", when = 'context.risky == true' },
      { action = "db:drop", hook = "h" },
    ]
    [roles.other]
    deny = ["db:read"]
    """
    # db:read without a resource; `a` itself; a different condition; db:* only partly; a hooked deny.
    assert paths(toml, "CH104") == []


# --- CH105 constant condition -------------------------------------------------------------------


def test_ch105_constant_conditions() -> None:
    toml = """
    [roles.r]
    allow = [
      { action = "db:read", when = "1 < 2" },
      { action = "db:write", when = 'false and context.x == 1' },
      { action = "db:export", when = 'time.hour < 24' },
      { action = "fs:read", when = 'has context.x or true' },
    ]
    deny = [{ action = "db:drop", when = '"a" in "cat"' }]
    [[guards]]
    require = "not true"
    """
    got = {f.path: f.message for f in findings(toml, "CH105")}
    assert list(got) == [
        "roles.r.allow[0].when",
        "roles.r.allow[1].when",
        "roles.r.deny[0].when",
        "guards[0].require",
    ]
    assert "always true: the entry grants as if it had no `when`" in got["roles.r.allow[0].when"]
    assert "always false: the entry never grants" in got["roles.r.allow[1].when"]
    assert "always false: the guard denies every request it covers" in got["guards[0].require"]


@pytest.mark.parametrize(
    ("source", "value"),
    [
        # The compiler's own folding cases (rust/charter-core/src/cond/check.rs, `constants_fold`).
        ("true", True),
        ("false", False),
        ("1 < 2", True),
        ("1 == 1.0", True),
        ('"a" in "cat"', True),
        ("not (1 in [2, 3])", True),
        ('"x/y".matches("x/*")', True),
        ('"abc".startswith("b")', False),
        ("null == null", True),
        ("[1, [2]] == [1.0, [2]]", True),
        ("false and context.x == 1", False),
        ("true or agent.depth > 1", True),
        ("(1 > 2) and context.x", False),
        ("context.x == 1", None),
        ("true and context.x == 1", None),
        ("context.x == 1 and false", None),
        ("has context.x", None),
        ("time.hour < 24", None),
        # More of the language.
        ("-1 < 0.5", True),
        ('"a\\"b".endswith("\\"b")', True),
        ("1 not in [1, 2]", False),
        ('context["a-b"].c == 1 or false', None),
        ('principal.id.startswith("user:")', None),
        ("not not false", False),
        ("[] == []", True),
    ],
)
def test_constant_folding_matches_the_compiler(source: str, value: bool | None) -> None:
    assert constant(source) is value
    # The engine agrees: a constant allow condition decides every request the same way.
    doc = {
        "actions": ["a:b"],
        "roles": {"r": {"allow": [{"action": "a:b", "when": source}]}},
        "principals": {"p": {"roles": ["r"]}},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PolicyLintWarning)
        engine = charter.Engine.from_dict(doc)
    if value is not None:
        for ctx in (None, {"x": 1}, {"x": "y"}):
            assert engine.check("p", "a:b", None, ctx).allowed is value


_values = st.sampled_from(
    ["0", "1", "-2", "2.5", '"a"', '"ab"', '"x/y"', "true", "false", "null", "[1, 2]", '["a"]', "[]"]
)
_bools = st.recursive(
    st.one_of(
        st.sampled_from(["true", "false", "context.x == 1", "has context.y", "time.hour < 24"]),
        st.builds(
            lambda a, op, b: f"{a} {op} {b}",
            _values,
            st.sampled_from(["==", "!=", "<", ">=", "in", "not in"]),
            _values,
        ),
        st.builds(
            lambda a, m, b: f"{a}.{m}({b})",
            st.sampled_from(['"abc"', '"x/y"', "context.s"]),
            st.sampled_from(["startswith", "endswith"]),
            st.sampled_from(['"a"', '"c"']),
        ),
        st.builds(lambda a: f'{a}.matches("x/*")', st.sampled_from(['"x/y"', '"y"', '"x/y/z"'])),
    ),
    lambda inner: st.one_of(
        inner.map(lambda a: f"not ({a})"),
        st.builds(lambda a, op, b: f"({a}) {op} ({b})", inner, st.sampled_from(["and", "or"]), inner),
    ),
    max_leaves=5,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=_bools)
def test_constant_folding_agrees_with_the_engine(source: str) -> None:
    """Whatever the compiler accepts: a condition folded to a constant decides every request that
    way, and one that reads no attribute at all always folds."""
    doc = {
        "actions": ["a:b"],
        "roles": {"r": {"allow": [{"action": "a:b", "when": source}]}},
        "principals": {"p": {"roles": ["r"]}},
    }
    try:
        engine = quietly(doc)
    except charter.PolicyError:
        return  # a type error the compiler refuses
    value = constant(source)
    if not any(root in source for root in ("context", "time")):
        assert value is not None, source
    if value is not None:
        for ctx in (None, {"x": 1, "y": 2, "s": "abc"}):
            assert engine.check("p", "a:b", None, ctx).allowed is value, source


# --- CH106 unusable template --------------------------------------------------------------------


def test_ch106_unusable_templates() -> None:
    toml = """
    [resources]
    secret = ["x/**"]
    [roles.r]
    allow = ["db:read", { action = "fs:read", on = ["**/b"] }]
    deny = [{ action = "db:read", on = ["@secret"] }]
    [roles.writer]
    allow = ["db:write"]
    [roles.secret-reader]
    allow = [{ action = "db:read", on = ["x/**"] }]
    [roles.a-reader]
    allow = [{ action = "fs:read", on = ["a/**"] }]
    [templates.nothing]
    roles = []
    [templates.writer]
    roles = ["writer"]
    [templates.secret]
    roles = ["secret-reader"]
    [templates.a-files]
    roles = ["a-reader"]
    """
    got = {f.path: f.message for f in findings(toml, "CH106")}
    # `a-files` is usable: `a/**` and `**/b` share `a/b`.
    assert list(got) == ["templates.nothing", "templates.writer", "templates.secret"]
    assert "grants nothing" in got["templates.nothing"]
    assert "no principal's rights overlap" in got["templates.secret"]


def test_ch106_not_without_principals() -> None:
    doc = from_dict(
        {"actions": ["db:read"], "roles": {"r": {"allow": ["db:read"]}}, "templates": {"t": {"roles": ["r"]}}}
    )
    assert [f for f in lint(doc) if f.code == "CH106"] == []


# --- CH107 unguarded wildcard ---------------------------------------------------------------------


GUARDED = """
[resources]
prod = ["prod/**"]
[[guards]]
on = ["@prod"]
actions = ["db:write"]
require = 'has context.ticket'
"""


def test_ch107_unguarded_wildcard() -> None:
    toml = (
        GUARDED
        + """
    [roles.r]
    allow = ["db:*", "fs:*"]
    deny = [{ action = "db:drop", on = ["@prod"] }]
    """
    )
    (f,) = findings(toml, "CH107")
    assert f.path == "roles.r.allow[0]"
    assert f.severity == "info"
    assert "`db:export`, `db:read`" in f.message
    assert "`db:drop`" not in f.message
    assert "`fs:read`" not in f.message  # no guard names a `fs` action on @prod


@pytest.mark.parametrize(
    "entry",
    [
        '{ action = "db:*", when = "context.ok == true" }',
        '{ action = "db:*", on = ["dev/**"] }',
        '{ action = "db:*", hook = "h" }',
        '"db:write"',
    ],
)
def test_ch107_not_for_conditions_other_resources_hooks_or_exact_actions(entry: str) -> None:
    assert findings(GUARDED + f"[roles.r]\nallow = [{entry}]\n", "CH107") == []


# --- CH108 isolated pattern -----------------------------------------------------------------------


def test_ch108_isolated_pattern() -> None:
    toml = """
    [resources]
    pii = ["customers/*"]
    [roles.r]
    allow = [{ action = "db:read", on = ["custmers/*", "customers/42", "@pii"] }]
    deny = [{ action = "db:read", on = ["logs/**"] }]
    [roles.s]
    allow = [{ action = "db:write", on = ["logs/app/*"] }]
    [[guards]]
    on = ["tmp/*"]
    require = "has context.why"
    """
    # `customers/42` overlaps the class; `logs/**` and `logs/app/*` overlap each other.
    assert paths(toml, "CH108") == ["roles.r.allow[0].on[0]", "guards[0].on[0]"]


def test_ch108_not_without_anything_to_compare_with() -> None:
    assert paths('[roles.r]\nallow = [{ action = "db:read", on = ["prod/**"] }]\n', "CH108") == []


# --- CH109 unused class ---------------------------------------------------------------------------


def test_ch109_unused_class() -> None:
    toml = """
    [resources]
    used = ["u/*"]
    tested = ["t/*"]
    unused = ["n/*"]
    [roles.r]
    allow = [{ action = "db:read", on = ["@used"] }, { action = "fs:read", when = '"tested" in resource.class' }]
    """
    assert paths(toml, "CH109") == ["resources.unused"]


def test_ch109_not_when_a_condition_could_name_any_class() -> None:
    toml = """
    [resources]
    a = ["a/*"]
    [roles.r]
    allow = [{ action = "fs:read", when = 'context.cls in resource.class' }]
    """
    assert paths(toml, "CH109") == []


# --- CH110 unused hook ----------------------------------------------------------------------------


def test_ch110_unused_hook() -> None:
    toml = '[roles.r]\nallow = [{ action = "db:read", hook = "used" }]\n'
    assert paths(toml, "CH110", hooks=["used", "spare"]) == [None]
    assert "`spare`" in findings(toml, "CH110", hooks=["used", "spare"])[0].message
    assert paths(toml, "CH110", hooks=["used"]) == []
    assert paths(toml, "CH110") == []  # hooks unknown: the rule is skipped


# --- on load --------------------------------------------------------------------------------------


def test_the_example_policy_has_no_warnings() -> None:
    found = lint(from_toml(example_path().read_text()))
    assert [f for f in found if f.severity == "warning"] == []
    assert {f.code for f in found} <= {"CH101", "CH107", "CH108"}


def test_warnings_are_raised_on_load_and_info_is_not(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        BASE + '[roles.r]\nallow = ["db:read"]\ndeny = ["db:read"]\n[roles.spare]\nallow = ["fs:read"]\n'
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine = charter.Engine.from_file(path)
    lint_warnings = [w.message for w in caught if isinstance(w.message, PolicyLintWarning)]
    assert [w.finding.code for w in lint_warnings] == ["CH103", "CH104"]  # CH101 (`spare`) is info
    assert all(w.source == str(path) and str(w).startswith(f"{path}: ") for w in lint_warnings)
    assert caught[0].filename == __file__  # attributed to the caller's line
    assert engine.check("user:u", "db:read").reason == "denied_by_rule"  # loading still succeeds


def test_unused_hooks_warn_on_load() -> None:
    doc = {"actions": ["db:read"], "roles": {"r": {"allow": [{"action": "db:read", "hook": "a"}]}}}
    with pytest.warns(PolicyLintWarning, match="hook `b` is registered but no entry names it"):
        charter.Engine.from_dict(doc, hooks={"a": lambda req: True, "b": lambda req: True})


def test_a_linter_failure_never_blocks_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(doc: Any, **kw: Any) -> list[Finding]:
        raise RuntimeError("bug")

    monkeypatch.setattr(lint_module, "lint", broken)
    with pytest.warns(PolicyLintWarning, match="CH100 warning: the policy linter failed: RuntimeError: bug"):
        engine = charter.Engine.example()
    assert engine.check("user:alice", "crm:read", "customers/1").allowed


# --- the rules' promises on random policies -----------------------------------------------------------

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


def quietly(doc: dict[str, Any], **kw: Any) -> charter.Engine:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PolicyLintWarning)
        return charter.Engine.from_dict(doc, **kw)


def decisions(
    engine: charter.Engine, subjects: list[Any], actions: list[str], resources: list[Any], ctxs: list[Any]
) -> list[bool]:
    return [
        engine.check(s, a, r, c).allowed for s in subjects for a in actions for r in resources for c in ctxs
    ]


@SETTINGS
@given(
    doc=policies(conditions=True),
    drawn=st.lists(valid_resources, max_size=5),
    ctxs=st.lists(contexts, min_size=1, max_size=2),
)
def test_deleting_a_shadowed_allow_changes_no_decision(
    doc: dict[str, Any], drawn: list[str], ctxs: list[Any]
) -> None:
    flagged = [f.path for f in lint(from_dict(doc)) if f.code == "CH104"]
    if not flagged:
        return
    resources = [None, *drawn, "a", "a/b", "b/c/a"]
    before = decisions(quietly(doc), PRINCIPALS, doc["actions"], resources, ctxs)
    for path in flagged:
        assert path is not None
        role, index = path.removeprefix("roles.").split(".allow[")
        smaller = copy.deepcopy(doc)
        smaller["roles"][role]["allow"][int(index[:-1])] = {
            "action": doc["actions"][0],
            "on": ["never/matched/zz"],
        }
        assert decisions(quietly(smaller), PRINCIPALS, doc["actions"], resources, ctxs) == before, path


@SETTINGS
@given(
    doc=policies(conditions=True),
    drawn=st.lists(valid_resources, max_size=5),
    ctxs=st.lists(contexts, min_size=1, max_size=2),
)
def test_what_is_flagged_as_granting_nothing_grants_nothing(
    doc: dict[str, Any], drawn: list[str], ctxs: list[Any]
) -> None:
    found = lint(from_dict(doc))
    engine = quietly(doc)
    resources = [None, *drawn, "a", "a/b", "c/a/b"]
    for f in found:
        assert f.path is not None or f.code == "CH110"
        if f.code == "CH103":
            role = f.path.removeprefix("roles.") if f.path else ""
            engine.upsert_principal("user:probe", roles=[role])
            assert not any(decisions(engine, ["user:probe"], doc["actions"], resources, ctxs)), f
        if f.code == "CH106":
            template = f.path.removeprefix("templates.") if f.path else ""
            delegators = [None] if "grants nothing" in f.message else PRINCIPALS
            agents = [engine.provision(template, on_behalf_of=p) for p in delegators]
            assert not any(decisions(engine, agents, doc["actions"], resources, ctxs)), f


# --- the command line ----------------------------------------------------------------------------------


def test_cli_lint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from charter import cli

    example = str(example_path())
    assert cli.main(["policy", "lint", example]) == 0  # info findings only
    out = capsys.readouterr().out
    assert f"{example}: roles.admin: CH101 info:" in out
    assert out.splitlines()[-1].startswith("0 warning(s), ")
    assert cli.main(["policy", "lint", example, "--fail-on", "info"]) == 1
    capsys.readouterr()
    bad = tmp_path / "p.toml"
    bad.write_text(BASE + '[roles.r]\nallow = [{ action = "db:read", when = "true" }]\n')
    assert cli.main(["policy", "lint", str(bad), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["findings"] == [
        {
            "code": "CH105",
            "name": "constant-condition",
            "severity": "warning",
            "path": "roles.r.allow[0].when",
            "message": "`true` is always true: the entry grants as if it had no `when`",
        }
    ]
    bad.write_text(BASE + '[roles.r]\nallow = [{ action = "db:read", when = "1 +" }]\n')
    assert cli.main(["policy", "lint", str(bad)]) == 2
    assert "roles.r.allow[0].when" in capsys.readouterr().err
    assert cli.main(["policy", "lint-rules"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(RULES)
