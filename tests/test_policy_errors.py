"""Bad policies never crash: every problem is one `charter.PolicyError` with a clear message and a path."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import charter
from charter.policy import MAX_POLICY_BYTES

ACTIONS = ["db:read", "db:write", "mail:send"]


def doc(**kw: Any) -> dict[str, Any]:
    """A minimal policy declaring `ACTIONS` plus `kw`."""
    return {"actions": list(ACTIONS), **kw}


def role(**kw: Any) -> dict[str, Any]:
    """A policy with a single role `a` made of `kw`."""
    return doc(roles={"a": kw})


def entry(**kw: Any) -> dict[str, Any]:
    """A policy whose role `a` has one allow entry in table form."""
    return role(allow=[{"action": "db:read", **kw}])


def template(**kw: Any) -> dict[str, Any]:
    """A policy with one template `t` made of `kw`."""
    return doc(roles={"r": {}}, templates={"t": {"roles": ["r"], **kw}})


def policy_error(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> charter.PolicyError:
    """Call `fn`; it must raise exactly a `PolicyError` (anything else fails the test)."""
    with pytest.raises(charter.PolicyError) as info:
        fn(*args, **kwargs)
    err = info.value
    assert isinstance(err, ValueError)
    assert isinstance(err, charter.CharterError)
    assert isinstance(err.message, str)
    assert err.message
    return err


def check(err: charter.PolicyError, path: str | None, *fragments: str) -> None:
    """`err` has exactly `path` and its message contains every fragment."""
    assert err.path == path, f"path {err.path!r} != {path!r} ({err.message})"
    for f in fragments:
        assert f in err.message, f"{f!r} not in {err.message!r}"


# --------------------------------------------------------------- the error type


def test_policy_error_str_joins_source_path_and_message() -> None:
    err = charter.PolicyError("boom", path="roles.a.inherits[1]", source="p.toml")
    assert str(err) == "p.toml: roles.a.inherits[1]: boom"
    assert charter.PolicyError("boom").path is None
    assert str(charter.PolicyError("boom")) == "boom"
    assert str(charter.PolicyError("boom", path="actions")) == "actions: boom"


# ------------------------------------------------------------------ malformed TOML


@pytest.mark.parametrize(
    "text",
    [
        "actions = [\n",
        'actions = ["db:read"\n',
        'actions = ["db:read"]\nactions = ["db:write"]\n',
        "[roles.a\n",
        "= 3\n",
        'actions = "unterminated\n',
        "[roles.a]\n[roles.a]\n",
    ],
)
def test_malformed_toml(text: str) -> None:
    err = policy_error(charter.Engine.from_toml, text)
    assert err.message.startswith("invalid TOML"), err.message
    # The parser's own diagnosis is kept.
    assert len(err.message) > len("invalid TOML: ")
    assert err.source is None


def test_malformed_toml_file_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "broken.toml"
    p.write_text("[roles.a]\ninherits = [\n")
    err = policy_error(charter.Engine.from_file, p)
    assert err.source == str(p)
    assert err.message.startswith("invalid TOML")
    assert str(err).startswith(f"{p}: ")


# --------------------------------------------------------------------- wrong types


@pytest.mark.parametrize(
    ("document", "path", "fragment"),
    [
        (role(inherits="x"), "roles.a.inherits", "array"),
        (doc(actions=3), "actions", "array"),
        ({"actions": [1]}, "actions[0]", "str"),
        (role(allow="db:read"), "roles.a.allow", "array"),
        (role(allow=[3]), "roles.a.allow[0]", ""),
        (doc(resources={"x": "a"}), "resources.x", "array"),
        (doc(principals={"p": {"roles": "r"}}), "principals.p.roles", "array"),
        (doc(principals={"p": {"attributes": []}}), "principals.p.attributes", "object"),
        (template(max_delegation_depth="a"), "templates.t.max_delegation_depth", "int"),
        (template(max_delegation_depth=1.5), "templates.t.max_delegation_depth", "int"),
        (template(ttl=[1]), "templates.t.ttl", ""),
        (template(ttl=True), "templates.t.ttl", ""),
        (entry(on="prod/**"), "roles.a.allow[0].on", "array"),
        (role(allow=[{"action": 3}]), "roles.a.allow[0].action", ""),
        (doc(roles=[]), "roles", "object"),
        (doc(templates={"t": "x"}), "templates.t", "object"),
    ],
)
def test_wrong_types_name_their_path(document: dict[str, Any], path: str, fragment: str) -> None:
    err = policy_error(charter.Engine.from_dict, document)
    check(err, path, fragment)


def test_wrong_type_in_toml_names_its_path() -> None:
    err = policy_error(charter.Engine.from_toml, 'actions = ["db:read"]\n[roles.a]\ninherits = "x"\n')
    check(err, "roles.a.inherits", "array")


def test_wrong_type_in_file_has_source_and_path(tmp_path: Path) -> None:
    p = tmp_path / "p.toml"
    p.write_text('actions = ["db:read"]\n[templates.t]\nmax_delegation_depth = "a"\n')
    err = policy_error(charter.Engine.from_file, p)
    assert err.source == str(p)
    check(err, "templates.t.max_delegation_depth")


def test_top_level_shapes() -> None:
    for bad in ([1, 2], "actions", 3, None):
        err = policy_error(charter.Engine.from_dict, bad)  # type: ignore[arg-type]
        assert err.path is None
        assert "table" in err.message or "object" in err.message


# --------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize(
    ("document", "where"),
    [
        (doc(bogus=1), ""),
        (role(bogus=1), "roles.a"),
        (entry(bogus=1), "roles.a.allow[0]"),
        (doc(roles={"a": {"deny": [{"action": "db:read", "bogus": 1}]}}), "roles.a.deny[0]"),
        (doc(principals={"p": {"bogus": 1}}), "principals.p"),
        (template(bogus=1), "templates.t"),
    ],
)
def test_unknown_keys_at_every_level(document: dict[str, Any], where: str) -> None:
    err = policy_error(charter.Engine.from_dict, document)
    assert "unknown" in err.message.lower()
    assert "bogus" in err.message or (err.path or "").endswith("bogus")
    if where:
        assert err.path in (where, f"{where}.bogus"), err.path
    else:
        assert err.path in (None, "bogus"), err.path


def test_unknown_key_in_toml() -> None:
    err = policy_error(charter.Engine.from_toml, 'actions = ["db:read"]\n[roles.a]\nalow = ["db:read"]\n')
    assert "alow" in err.message or (err.path or "").endswith("alow")
    assert err.path in ("roles.a", "roles.a.alow"), err.path


# ---------------------------------------------------------------------- inheritance

CYCLE_PATH = re.compile(r"^roles\.(?P<role>[a-z]+)\.inherits\[(?P<i>\d+)\]$")


def assert_cycle(err: charter.PolicyError, document: dict[str, Any], members: set[str]) -> None:
    assert "cycle" in err.message
    for m in members:
        assert f"{m}" in err.message
    assert err.path is not None
    m = CYCLE_PATH.match(err.path)
    assert m, err.path
    # The path points at an `inherits` entry that is itself an edge of the cycle.
    assert m["role"] in members
    target = document["roles"][m["role"]]["inherits"][int(m["i"])]
    assert target in members


def test_inheritance_cycle() -> None:
    d = doc(roles={"a": {"inherits": ["b"]}, "b": {"inherits": ["c"]}, "c": {"inherits": ["a"]}})
    err = policy_error(charter.Engine.from_dict, d)
    assert_cycle(err, d, {"a", "b", "c"})
    assert "a -> b -> c -> a" in err.message
    check(err, "roles.c.inherits[0]")


def test_inheritance_cycle_at_a_later_index() -> None:
    d = doc(
        roles={
            "base": {},
            "x": {"inherits": ["base", "y"]},
            "y": {"inherits": ["base", "z"]},
            "z": {"inherits": ["base", "x"]},
        }
    )
    err = policy_error(charter.Engine.from_dict, d)
    assert_cycle(err, d, {"x", "y", "z"})
    assert err.path is not None
    assert err.path.endswith("[1]")
    assert "base" not in err.message


def test_two_role_cycle_through_diamond() -> None:
    d = doc(
        roles={"a": {"inherits": ["b", "c"]}, "b": {"inherits": ["d"]}, "c": {"inherits": ["d"]}, "d": {}}
    )
    charter.Engine.from_dict(d)  # a diamond is not a cycle
    d["roles"]["d"]["inherits"] = ["c"]
    err = policy_error(charter.Engine.from_dict, d)
    assert_cycle(err, d, {"c", "d"})


def test_self_inheritance() -> None:
    d = doc(roles={"a": {"inherits": ["a"]}})
    err = policy_error(charter.Engine.from_dict, d)
    check(err, "roles.a.inherits[0]", "cycle", "`a -> a`")


def test_inheritance_cycle_in_toml_file(tmp_path: Path) -> None:
    p = tmp_path / "cycle.toml"
    p.write_text('actions = ["db:read"]\n[roles.a]\ninherits = ["b"]\n[roles.b]\ninherits = ["a"]\n')
    err = policy_error(charter.Engine.from_file, p)
    assert err.source == str(p)
    check(err, "roles.b.inherits[0]", "cycle", "a -> b -> a")


@pytest.mark.parametrize(
    ("document", "path"),
    [
        (doc(roles={"a": {"inherits": ["b", "zz"]}, "b": {}}), "roles.a.inherits[1]"),
        (
            doc(roles={"r": {}}, principals={"user:alice": {"roles": ["r", "zz"]}}),
            'principals."user:alice".roles[1]',
        ),
        (doc(principals={"p": {"roles": ["zz"]}}), "principals.p.roles[0]"),
        (doc(roles={"r": {}}, templates={"t": {"roles": ["zz"]}}), "templates.t.roles[0]"),
        (doc(roles={"r": {}}, templates={"my bot": {"roles": ["r", "zz"]}}), 'templates."my bot".roles[1]'),
    ],
)
def test_unknown_roles(document: dict[str, Any], path: str) -> None:
    err = policy_error(charter.Engine.from_dict, document)
    check(err, path, "unknown role", "`zz`")


# -------------------------------------------------------------------------- actions


@pytest.mark.parametrize(
    ("document", "path"),
    [
        (role(allow=["db:nope"]), "roles.a.allow[0]"),
        (role(allow=["db:read", "nope:read"]), "roles.a.allow[1]"),
        (role(deny=[{"action": "db:nope"}]), "roles.a.deny[0].action"),
        (role(allow=[{"action": ["db:read", "db:nope"], "on": ["x"]}]), "roles.a.allow[0].action[1]"),
    ],
)
def test_undeclared_actions_in_entries(document: dict[str, Any], path: str) -> None:
    err = policy_error(charter.Engine.from_dict, document)
    check(err, path, "unknown action")
    assert "nope" in err.message


def test_entry_with_no_action() -> None:
    err = policy_error(charter.Engine.from_dict, role(allow=[{"action": []}]))
    check(err, "roles.a.allow[0].action")


@pytest.mark.parametrize(
    "name", ["db", "db:", ":read", "db:re ad", "db:read:x", "d b:read", "", "db/x:read", "é:read"]
)
def test_invalid_action_names(name: str) -> None:
    err = policy_error(charter.Engine.from_dict, {"actions": ["db:read", name]})
    check(err, "actions[1]", "not a valid action name")


def test_duplicate_actions() -> None:
    err = policy_error(charter.Engine.from_dict, {"actions": ["db:read", "db:write", "db:read"]})
    check(err, "actions[2]", "`db:read`", "twice")


@pytest.mark.parametrize("pattern", ["db:re*", "db*", "*:read", "**", ":*", "db:**", "d*:*"])
def test_bad_action_wildcards(pattern: str) -> None:
    err = policy_error(charter.Engine.from_dict, role(allow=["db:read", pattern]))
    check(err, "roles.a.allow[1]", "not a valid action pattern")


@pytest.mark.parametrize("pattern", ["tool:*", "dbx:*", "d:*"])
def test_tool_wildcard_matching_nothing(pattern: str) -> None:
    err = policy_error(charter.Engine.from_dict, role(deny=[{"action": ["db:*", pattern]}]))
    check(err, "roles.a.deny[0].action[1]", "matches no declared action", pattern)


def test_good_action_wildcards_load() -> None:
    e = charter.Engine.from_dict(role(allow=["db:*", "*", {"action": ["mail:*"], "on": ["x/**"]}]))
    assert e.actions == ACTIONS


# ------------------------------------------------------------------------- patterns

BAD_PATTERNS = ["a*", "*a", "a/b*c", "***", "/a", "a/", "a//b", "", "/", "**a/b"]


@pytest.mark.parametrize("pattern", BAD_PATTERNS)
def test_bad_patterns_in_entries(pattern: str) -> None:
    err = policy_error(charter.Engine.from_dict, entry(on=["ok/*", pattern]))
    check(err, "roles.a.allow[0].on[1]", "pattern")


@pytest.mark.parametrize("pattern", BAD_PATTERNS)
def test_bad_patterns_in_classes(pattern: str) -> None:
    err = policy_error(charter.Engine.from_dict, doc(resources={"c": ["ok/**", pattern]}))
    check(err, "resources.c[1]", "pattern")


def test_pattern_messages_explain_the_problem() -> None:
    err = policy_error(charter.Engine.from_dict, entry(on=["a*"]))
    assert "whole segments" in err.message
    err = policy_error(charter.Engine.from_dict, entry(on=["a//b"]))
    assert "empty segment" in err.message
    err = policy_error(charter.Engine.from_dict, entry(on=[""]))
    assert "empty" in err.message


def test_unknown_resource_class() -> None:
    err = policy_error(charter.Engine.from_dict, entry(on=["x/*", "@nope"]))
    check(err, "roles.a.allow[0].on[1]", "unknown resource class", "`@nope`")


def test_class_referring_to_a_class() -> None:
    err = policy_error(charter.Engine.from_dict, doc(resources={"a": ["x"], "b": ["@a"]}))
    check(err, "resources.b[0]")


def test_empty_class_and_bad_class_name() -> None:
    err = policy_error(charter.Engine.from_dict, doc(resources={"x": []}))
    check(err, "resources.x", "at least one pattern")
    err = policy_error(charter.Engine.from_dict, doc(resources={"a b": ["x"]}))
    check(err, 'resources."a b"', "not a valid class name")


def test_empty_on() -> None:
    err = policy_error(charter.Engine.from_dict, role(deny=[{"action": "db:read", "on": []}]))
    check(err, "roles.a.deny[0].on", "`on` is empty")


def test_invalid_principal_id() -> None:
    err = policy_error(charter.Engine.from_dict, doc(principals={"a b": {}}))
    check(err, 'principals."a b"', "not a valid principal id")


# ------------------------------------------------------------------------ durations


@pytest.mark.parametrize("value", ["5 parsecs", "5", "m", "15 minutes", "-5m", "1e3s", "", "5 h 3 m"])
@pytest.mark.parametrize("field", ["ttl", "max_ttl"])
def test_unparseable_durations(field: str, value: str) -> None:
    err = policy_error(charter.Engine.from_dict, template(**{field: value}))
    check(err, f"templates.t.{field}", "not a duration")


@pytest.mark.parametrize("value", [-1, -0.5, 0, 0.0, "0s", "0m", "0.0h"])
@pytest.mark.parametrize("field", ["ttl", "max_ttl"])
def test_non_positive_durations(field: str, value: Any) -> None:
    err = policy_error(charter.Engine.from_dict, template(**{field: value}))
    check(err, f"templates.t.{field}", "positive")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e300, "3651d", 11 * 365 * 86400])
@pytest.mark.parametrize("field", ["ttl", "max_ttl"])
def test_non_finite_or_huge_durations(field: str, value: Any) -> None:
    err = policy_error(charter.Engine.from_dict, template(**{field: value}))
    check(err, f"templates.t.{field}")


def test_infinite_ttl_in_toml_is_refused() -> None:
    # TOML has `inf`; an infinite lifetime must not silently become "never expires".
    text = 'actions = ["db:read"]\n[roles.r]\n[templates.t]\nroles = ["r"]\nttl = inf\n'
    err = policy_error(charter.Engine.from_toml, text)
    check(err, "templates.t.ttl")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (90, 90),
        (1.5, 1.5),
        ("90s", 90),
        ("15m", 900),
        ("12h", 43200),
        ("7d", 604800),
        ("1.5h", 5400),
        ("500ms", 0.5),
    ],
)
# The template grants nothing (lint CH106, right to warn): only its fields are under test.
@pytest.mark.filterwarnings("ignore::charter.policytools.lint.PolicyLintWarning")
def test_good_durations(clock: charter.ManualClock, value: Any, seconds: float) -> None:
    e = charter.Engine.from_dict(template(ttl=value), clock=clock)
    a = e.provision("t")
    assert a.expires_at is not None
    assert a.expires_at - a.created_at == pytest.approx(seconds, abs=1e-3)


# The template grants nothing (lint CH106, right to warn): only its fields are under test.
@pytest.mark.filterwarnings("ignore::charter.policytools.lint.PolicyLintWarning")
def test_ttl_longer_than_max_ttl() -> None:
    err = policy_error(charter.Engine.from_dict, template(ttl="2h", max_ttl="1h"))
    check(err, "templates.t.ttl", "max_ttl")
    charter.Engine.from_dict(template(ttl="1h", max_ttl="1h"))  # equal is fine


# ------------------------------------------------------------------ delegation depth


@pytest.mark.parametrize("depth", [0, 33, -1, 1000, 2**40])
def test_max_delegation_depth_out_of_range(depth: int) -> None:
    err = policy_error(charter.Engine.from_dict, template(max_delegation_depth=depth))
    check(err, "templates.t.max_delegation_depth")


@pytest.mark.parametrize("depth", [1, 4, 32])
# The template grants nothing (lint CH106, right to warn): only its fields are under test.
@pytest.mark.filterwarnings("ignore::charter.policytools.lint.PolicyLintWarning")
def test_max_delegation_depth_in_range(depth: int) -> None:
    charter.Engine.from_dict(template(max_delegation_depth=depth))


# -------------------------------------------------------------------- reserved keys


def test_approval_is_refused_on_deny_entries() -> None:
    d = role(deny=["db:write", {"action": "db:read", "approval": "true"}])
    err = policy_error(charter.Engine.from_dict, d)
    check(err, "roles.a.deny[1].approval", "not supported on deny entries")


def test_unknown_quota_references() -> None:
    err = policy_error(charter.Engine.from_dict, doc(principals={"p": {"quota": "q"}}))
    check(err, "principals.p.quota", "unknown quota `q`")
    err = policy_error(charter.Engine.from_dict, template(quota="q"))
    check(err, "templates.t.quota", "unknown quota `q`")


def test_approval_needs_approvers_in_toml() -> None:
    text = 'actions = ["db:read"]\n[roles.a]\nallow = [{ action = "db:read", approval = "true" }]\n'
    check(policy_error(charter.Engine.from_toml, text), "roles.a.allow[0].approvers", "needs `approvers`")


@pytest.mark.parametrize("effect", ["allow", "deny"])
def test_unregistered_hook_names_entry(effect: str) -> None:
    d = role(**{effect: ["db:write", {"action": "db:read", "hook": "x"}]})
    err = policy_error(charter.Engine.from_dict, d)
    check(err, f"roles.a.{effect}[1].hook", "unknown hook `x`")


@pytest.mark.parametrize("effect", ["allow", "deny"])
def test_bad_condition_names_entry_and_position(effect: str) -> None:
    d = role(**{effect: ["db:write", {"action": "db:read", "when": "x"}]})
    err = policy_error(charter.Engine.from_dict, d)
    check(err, f"roles.a.{effect}[1].when", "1:1")


# ------------------------------------------------------------------------- files


def test_file_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "latin1.toml"
    p.write_bytes('actions = ["caf\u00e9:read"]\n'.encode("latin-1"))
    err = policy_error(charter.Engine.from_file, p)
    assert err.source == str(p)
    assert err.path is None
    assert "UTF-8" in err.message


def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.toml"
    err = policy_error(charter.Engine.from_file, p)
    assert err.source == str(p)
    assert err.path is None
    assert "cannot read" in err.message


def test_directory_instead_of_file(tmp_path: Path) -> None:
    err = policy_error(charter.Engine.from_file, tmp_path)
    assert err.source == str(tmp_path)
    assert "cannot read" in err.message


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_huge_file_refused_without_parsing(tmp_path: Path, suffix: str) -> None:
    p = tmp_path / f"huge{suffix}"
    # Sparse: 16 MiB + 1 of NUL bytes, which would not parse as TOML or JSON.
    with p.open("wb") as f:
        f.truncate(MAX_POLICY_BYTES + 1)
    err = policy_error(charter.Engine.from_file, p)
    assert err.source == str(p)
    assert "larger than" in err.message
    assert "invalid" not in err.message


def test_file_at_the_size_limit_is_parsed(tmp_path: Path) -> None:
    p = tmp_path / "big.toml"
    head = b'actions = ["db:read"]\n#'
    p.write_bytes(head + b"x" * (MAX_POLICY_BYTES - len(head)))
    assert p.stat().st_size == MAX_POLICY_BYTES
    assert charter.Engine.from_file(p).actions == ["db:read"]


def test_huge_toml_text_refused() -> None:
    err = policy_error(charter.Engine.from_toml, "#" * (MAX_POLICY_BYTES + 1))
    assert "larger than" in err.message


def test_huge_toml_text_counted_in_bytes() -> None:
    # 9 Mi two-byte characters: fewer than 16 Mi characters but 18 MiB of UTF-8.
    text = 'actions = ["db:read"]\n#' + "\u00e9" * (9 * 1024 * 1024)
    assert len(text) <= MAX_POLICY_BYTES < len(text.encode())
    err = policy_error(charter.Engine.from_toml, text)
    assert "larger than" in err.message


# -------------------------------------------------------------------------- JSON


def test_json_policy_equals_toml_policy(tmp_path: Path, policy_dict: Callable[..., dict[str, Any]]) -> None:
    d = policy_dict()
    j = tmp_path / "p.json"
    j.write_text(json.dumps(d))
    from_json = charter.Engine.from_file(j)
    from_dict = charter.Engine.from_dict(d)
    assert from_json.policy_version == from_dict.policy_version
    assert from_json.check("user:w", "db:write").allowed
    upper = tmp_path / "P.JSON"
    upper.write_text(json.dumps(d))
    assert charter.Engine.from_file(upper).policy_version == from_dict.policy_version


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        ('{"actions": ["db:read"],}', None, "invalid JSON"),
        ("actions = []", None, "invalid JSON"),
        ("", None, "invalid JSON"),
        ("[1, 2]", None, "table/object"),
        ('{"actions": 3}', "actions", "array"),
        ('{"actions": ["db:read"], "bogus": 1}', None, "bogus"),
        (
            '{"actions": ["db:read"], "roles": {"a": {"allow": ["db:nope"]}}}',
            "roles.a.allow[0]",
            "unknown action",
        ),
        ('{"actions": ["db:read"], "roles": {"a": {"inherits": ["a"]}}}', "roles.a.inherits[0]", "cycle"),
        (
            '{"actions": ["db:read"], "templates": {"t": {"ttl": "5 parsecs"}}}',
            "templates.t.ttl",
            "not a duration",
        ),
    ],
)
def test_bad_json_policies(tmp_path: Path, text: str, path: str | None, fragment: str) -> None:
    p = tmp_path / "p.json"
    p.write_text(text)
    err = policy_error(charter.Engine.from_file, p)
    assert err.source == str(p)
    check(err, path, fragment)


def test_json_file_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "p.json"
    p.write_bytes(b'{"actions": ["\xff:read"]}')
    err = policy_error(charter.Engine.from_file, p)
    assert err.source == str(p)


# --------------------------------------------------------------- reload keeps policy


def test_bad_reload_keeps_the_old_policy(clocked_engine: charter.Engine, tmp_path: Path) -> None:
    e = clocked_engine
    version = e.policy_version
    agent = e.provision("reader-bot", on_behalf_of="user:w")
    before = [
        e.check("user:w", "db:write").to_dict(),
        e.check("user:r", "db:read", "secret/x").to_dict(),
        e.check(agent, "db:read").to_dict(),
        e.check(agent.id, "mail:read").to_dict(),
    ]
    broken = tmp_path / "broken.toml"
    broken.write_text('actions = ["db:read"]\n[roles.a]\ninherits = ["a"]\n')
    bad_sources: list[Any] = [
        {"actions": 3},
        {"actions": ["db:read"], "roles": {"a": {"allow": ["db:nope"]}}},
        broken,
        str(broken),
        tmp_path / "missing.toml",
    ]
    for source in bad_sources:
        err = policy_error(e.reload, source)
        if isinstance(source, Path | str):
            assert err.source == str(source)
    policy_error(e.reload_toml, "actions = [")
    policy_error(e.reload_toml, 'actions = ["db:read"]\n[templates.t]\nttl = "soon"\n')
    assert e.policy_version == version
    assert e.stats()["policy_version"] == version
    after = [
        e.check("user:w", "db:write").to_dict(),
        e.check("user:r", "db:read", "secret/x").to_dict(),
        e.check(agent, "db:read").to_dict(),
        e.check(agent.id, "mail:read").to_dict(),
    ]
    assert after == before
    assert all(d["policy_version"] == version for d in after)
    # Provisioning still works under the old policy.
    assert e.check(e.provision("writer-bot", on_behalf_of="user:w"), "db:write").allowed


def test_reload_of_an_unsupported_source_type(example_engine: charter.Engine) -> None:
    version = example_engine.policy_version
    policy_error(example_engine.reload, 42)  # type: ignore[arg-type]
    assert example_engine.policy_version == version


# ------------------------------------------------------------------- fuzzing


def _loads_or_policy_error(load: Callable[[], Any]) -> None:
    """`load()` either succeeds or raises a `PolicyError` with a message; any other exception fails."""
    error: charter.PolicyError | None = None
    try:
        load()
    except charter.PolicyError as err:
        error = err
    if error is not None:
        assert isinstance(error.message, str)
        assert error.message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_random_bytes_as_policy_file(tmp_path: Path, data: bytes) -> None:
    p = tmp_path / "fuzz.toml"
    p.write_bytes(data)
    _loads_or_policy_error(lambda: charter.Engine.from_file(p))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300) | st.text(max_size=100).map(lambda t: ('{"actions": ["' + t + '"]}').encode()))
def test_random_bytes_as_json_file(tmp_path: Path, data: bytes) -> None:
    p = tmp_path / "fuzz.json"
    p.write_bytes(data)
    _loads_or_policy_error(lambda: charter.Engine.from_file(p))


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_as_toml_text(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    _loads_or_policy_error(lambda: charter.Engine.from_toml(text))


_TOML_PIECES = [
    "actions = ",
    '["db:read", "db:write"]',
    "[roles.a]",
    "[roles.b]",
    "[templates.t]",
    '[principals."user:x"]',
    "[resources]",
    "inherits = ",
    "allow = ",
    "deny = ",
    "roles = ",
    '["a"]',
    '["b"]',
    '["db:*"]',
    '[{ action = "db:read", on = ["x/**"] }]',
    '[{ action = "db:read", on = [] }]',
    'x = ["a*"]',
    'ttl = "15m"',
    "ttl = -1",
    "max_delegation_depth = 0",
    "max_delegation_depth = 3",
    "\n",
    "=",
    '"',
    "[",
    "]",
]


# Random fragments make odd policies the linter rightly warns about (e.g. a template without roles).
@pytest.mark.filterwarnings("ignore::charter.policytools.lint.PolicyLintWarning")
@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(_TOML_PIECES), max_size=25))
def test_random_toml_fragments(pieces: list[str]) -> None:
    text = "\n".join(pieces)
    _loads_or_policy_error(lambda: charter.Engine.from_toml(text))


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)
_keys = st.sampled_from(
    [
        "actions",
        "resources",
        "roles",
        "principals",
        "templates",
        "a",
        "inherits",
        "allow",
        "deny",
        "ttl",
        "on",
    ]
)
_docs = st.recursive(
    _json_values,
    lambda inner: (
        st.dictionaries(_keys | st.text(max_size=4), inner, max_size=4)
        | st.lists(inner | st.just("db:read") | st.just("*"), max_size=3)
    ),
    max_leaves=15,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_keys, _docs, max_size=5))
def test_random_dicts(data: dict[str, Any]) -> None:
    _loads_or_policy_error(lambda: charter.Engine.from_dict(data))
