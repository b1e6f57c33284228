"""The checks behind `charter.policytools.lint`, one function per rule.

Each check reads the resolved policy (`PolicyModel`) and yields `(code, path, message)` for
what it finds; `lint` gives the hits their severity. The checks are exact: resource patterns
are compared as languages (`charter.policytools.patterns`), conditions only where they fold
to constants, and every "never" is a proof, not a sample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from charter.policy import key
from charter.policytools.conditions import constant, facts
from charter.policytools.model import Entry, PolicyModel
from charter.policytools.patterns import Scope, find_request
from charter.policytools.rights import LevelRights, granting_actions, possible_request

Hit = tuple[str, str | None, str]
"""(rule code, policy path, message)."""


def _quote(names: Iterable[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


# --- roles -----------------------------------------------------------------------------------


def _unreachable_roles(model: PolicyModel) -> Iterator[Hit]:
    if not model.principals and not model.templates:
        return  # every principal comes at runtime: nothing to reach roles from
    for role in model.role_names:
        if role not in model.held_roles:
            yield (
                "CH101",
                f"roles.{key(role)}",
                f"role `{role}` is held by no principal or template, directly or through `inherits`",
            )


def _roles_granting_nothing(model: PolicyModel) -> Iterator[Hit]:
    for role in model.role_names:
        entries = model.level_entries([role])
        allows = [e for e in entries if e.effect == "allow"]
        if not entries:
            yield (
                "CH102",
                f"roles.{key(role)}",
                f"role `{role}` has no entries, and neither do the roles it inherits",
            )
        elif allows and all(_dead_in(e, entries) for e in allows):
            yield (
                "CH103",
                f"roles.{key(role)}",
                f"role `{role}` grants nothing: no allow entry of it or of the roles it inherits can take effect",
            )


def _dead_in(allow: Entry, level: tuple[Entry, ...]) -> bool:
    """Whether an allow can never grant in a level: its condition is false, or denies cover it."""
    return (allow.when is not None and constant(allow.when) is False) or bool(_shadowing(allow, level))


def _shadowing(allow: Entry, level: tuple[Entry, ...]) -> list[str]:
    """The denies of `level` that together override `allow` on every request it covers, or []."""
    if not allow.actions:
        return []
    # Actions with the same overriding denies share one question about resources.
    groups: set[tuple[Entry, ...]] = set()
    for action in sorted(allow.actions):
        denies = tuple(
            d for d in level if d.effect == "deny" and action in d.actions and _always_over(d, allow)
        )
        if not denies:
            return []
        groups.add(denies)
    used: dict[str, None] = {}
    for denies in sorted(groups, key=lambda ds: [d.rule for d in ds]):
        if find_request([(allow.on,)], [d.on for d in denies]) is not None:
            return []
        used.update(dict.fromkeys(d.rule for d in denies if _needed(allow.on, d, denies)))
    return list(used)


def _always_over(deny: Entry, allow: Entry) -> bool:
    """Whether `deny` applies wherever it matches and `allow` would grant: no hook, and a condition
    that is always true or the same as the allow's (true when it grants; an error denies)."""
    if deny.gate is not None:
        return False
    return deny.when is None or constant(deny.when) is True or deny.when == allow.when


def _needed(on: Scope, deny: Entry, denies: tuple[Entry, ...]) -> bool:
    # Name only the denies without which some request would get through.
    rest = [d.on for d in denies if d is not deny]
    return find_request([(on,)], rest) is not None


def _shadowed_allows(model: PolicyModel) -> Iterator[Hit]:
    for role in model.role_names:
        level = model.level_entries([role])
        for e in model.entries[role]:
            if e.effect != "allow" or (e.when is not None and constant(e.when) is False):
                continue
            by = _shadowing(e, level)
            if by:
                yield ("CH104", e.rule, f"never grants: every request it covers is denied by {_quote(by)}")


# --- patterns and classes ----------------------------------------------------------------------


def _written_patterns(model: PolicyModel) -> Iterator[tuple[str, str]]:
    """(path, pattern) of every literal `on` pattern of the entries and guards."""
    for e in model.all_entries:
        for j, p in enumerate(e.written_on or ()):
            if not p.startswith("@"):
                yield f"{e.rule}.on[{j}]", p
    for g in model.guards:
        for j, p in enumerate(g.written_on or ()):
            if not p.startswith("@"):
                yield f"{g.rule}.on[{j}]", p


def _isolated_patterns(model: PolicyModel) -> Iterator[Hit]:
    written = list(_written_patterns(model))
    classes = [p for ps in model.classes.values() for p in ps]
    for i, (path, p) in enumerate(written):
        others = tuple(classes + [q for j, (_, q) in enumerate(written) if j != i])
        # With nothing else to compare with, there is no vocabulary to stray from.
        if others and find_request([((p,),), (others,)]) is None:
            yield (
                "CH108",
                path,
                f"`{p}` matches no resource that a class or another pattern of the policy names "
                "(check the spelling)",
            )


def _unused_classes(model: PolicyModel) -> Iterator[Hit]:
    used = {p[1:] for e in model.all_entries for p in e.written_on or () if p.startswith("@")}
    used |= {p[1:] for g in model.guards for p in g.written_on or () if p.startswith("@")}
    sources = [e.when for e in model.all_entries if e.when] + [g.require for g in model.guards]
    for src in sources:
        f = facts(src)
        if f.class_dynamic:
            return  # a condition reads `resource.class` in a way that may name any class
        used |= f.class_literals
    for name in model.classes:
        if name not in used:
            yield (
                "CH109",
                f"resources.{key(name)}",
                f"class `{name}` is not used by any entry, guard or condition",
            )


# --- conditions --------------------------------------------------------------------------------


_CONSTANT = {
    ("allow", True): "always true: the entry grants as if it had no `when`",
    ("allow", False): "always false: the entry never grants",
    ("deny", True): "always true: the entry denies as if it had no `when`",
    ("deny", False): "always false: the entry never denies",
    ("guard", True): "always true: the guard never denies",
    ("guard", False): "always false: the guard denies every request it covers",
}


def _constant_conditions(model: PolicyModel) -> Iterator[Hit]:
    for e in model.all_entries:
        value = None if e.when is None else constant(e.when)
        if value is not None:
            yield ("CH105", f"{e.rule}.when", f"`{e.when}` is {_CONSTANT[(e.effect, value)]}")
    for g in model.guards:
        value = constant(g.require)
        if value is not None:
            yield ("CH105", f"{g.rule}.require", f"`{g.require}` is {_CONSTANT[('guard', value)]}")


# --- templates ---------------------------------------------------------------------------------


def _unusable_templates(model: PolicyModel) -> Iterator[Hit]:
    rights: dict[tuple[str, ...], dict[str, LevelRights]] = {}

    def of(roles: Iterable[str]) -> dict[str, LevelRights]:
        closure = model.closure(roles)
        if closure not in rights:
            rights[closure] = granting_actions(model.level_entries(closure))
        return rights[closure]

    principals = {model.closure(roles) for roles in model.principals.values()}
    for name, roles in model.templates.items():
        path = f"templates.{key(name)}"
        mine = of(roles)
        if not any(possible_request([lv]) for lv in mine.values()):
            yield ("CH106", path, f"template `{name}` grants nothing: every decision of its agents is a deny")
        elif principals and not any(_overlap(mine, of(closure)) for closure in principals):
            yield (
                "CH106",
                path,
                f"no principal's rights overlap template `{name}`'s: every decision of an agent acting "
                "for a principal (directly or through other agents) is a deny",
            )


def _overlap(a: dict[str, LevelRights], b: dict[str, LevelRights]) -> bool:
    return any(possible_request([a[x], b[x]]) for x in a.keys() & b.keys())


# --- wildcards over guarded classes -------------------------------------------------------------


def _risky_tools(model: PolicyModel) -> dict[str, set[str]]:
    """Per class a guard names (`@class`), the tools of the actions it guards there: the policy
    marks those (class, tool) pairs as high-risk by guarding them."""
    out: dict[str, set[str]] = {}
    for g in model.guards:
        tools = {a.split(":", 1)[0] for a in g.actions}
        for p in g.written_on or ():
            if p.startswith("@"):
                out.setdefault(p[1:], set()).update(tools)
    return out


def _unguarded_wildcards(model: PolicyModel) -> Iterator[Hit]:
    risky = _risky_tools(model)
    for e in model.all_entries:
        wild = [p for p in e.action_patterns if p == "*" or p.endswith(":*")]
        if e.effect != "allow" or not wild or e.gate is not None:
            continue
        if e.when is not None and constant(e.when) is not True:
            continue
        actions = sorted(model.expand_actions(wild) - set(e.action_patterns))
        level = model.level_entries([e.role])
        for cls, tools in sorted(risky.items()):
            region: list[tuple[Scope, ...]] = [(e.on,), (model.classes[cls],)]
            candidates = [a for a in actions if a.split(":", 1)[0] in tools]
            if not candidates or find_request(region) is None:
                continue
            exposed = [a for a in candidates if _exposed(model, region, a, e, level)]
            if exposed:
                yield (
                    "CH107",
                    e.rule,
                    f"wildcard {_quote(wild)} grants {_quote(exposed)} on `@{cls}`, where guards cover other "
                    "actions of the same tool, with no condition, hook or guard of its own",
                )


def _exposed(
    model: PolicyModel, region: list[tuple[Scope, ...]], action: str, allow: Entry, level: tuple[Entry, ...]
) -> bool:
    """Whether some request in `region` for `action` is neither guarded nor always denied."""
    covered: list[Scope] = [
        g.on for g in model.guards if action in g.actions and constant(g.require) is not True
    ]
    covered += [d.on for d in level if d.effect == "deny" and action in d.actions and _always_over(d, allow)]
    return find_request(region, covered) is not None


def unused_hooks(model: PolicyModel, hooks: Iterable[str]) -> Iterator[Hit]:
    named = {e.hook for e in model.all_entries if e.hook is not None}
    for h in hooks:
        if h not in named:
            yield ("CH110", None, f"hook `{h}` is registered but no entry names it")


CHECKS: tuple[tuple[frozenset[str], Callable[[PolicyModel], Iterator[Hit]]], ...] = (
    (frozenset({"CH101"}), _unreachable_roles),
    (frozenset({"CH102", "CH103"}), _roles_granting_nothing),
    (frozenset({"CH104"}), _shadowed_allows),
    (frozenset({"CH105"}), _constant_conditions),
    (frozenset({"CH106"}), _unusable_templates),
    (frozenset({"CH107"}), _unguarded_wildcards),
    (frozenset({"CH108"}), _isolated_patterns),
    (frozenset({"CH109"}), _unused_classes),
)
"""Every check of the document with the codes it reports, in rule-code order."""
