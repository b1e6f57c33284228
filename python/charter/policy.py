"""The policy document: decoded and validated with msgspec, then handed to the Rust compiler.

Shape errors (wrong types, unknown keys, bad durations) are caught here and
name their path (`roles.analyst.inherits[1]`); semantic errors (unknown
roles, cycles, bad patterns) come from the compiler with the same kind of
path. Either way the caller gets one `PolicyError`.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from charter.errors import PolicyError

MAX_POLICY_BYTES = 16 * 1024 * 1024
"""Larger documents are refused before parsing."""

MAX_DURATION_SECONDS = 10 * 365 * 86400.0
"""The longest `ttl`/`max_ttl` a template may declare."""

Duration = int | float | str
"""Seconds as a number, or a string such as `"90s"`, `"15m"`, `"12h"`, `"7d"`."""


class Entry(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The table form of an allow or deny entry."""

    action: str | list[str]
    on: list[str] | None = None
    when: str | None = None
    hook: str | None = None
    approval: str | None = None
    approvers: list[str] | None = None


class Role(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    inherits: list[str] = []
    allow: list[str | Entry] = []
    deny: list[str | Entry] = []


class Principal(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    roles: list[str] = []
    attributes: dict[str, Any] = {}
    quota: str | None = None


class Quota(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """`[quotas.<name>]`: rates are `"<count>/<s|m|h|d>"` strings (docs/quotas.md)."""

    rate: str | None = None
    burst: Annotated[int, msgspec.Meta(ge=1)] | None = None
    budget: str | None = None
    max_in_flight: Annotated[int, msgspec.Meta(ge=0)] | None = None
    limits: dict[str, str] = {}


class Breaker(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A template's `breaker`: suspend the agent when denials pile up within `window` (e.g. `"10s"`)."""

    window: str
    quota_denials: Annotated[int, msgspec.Meta(ge=0, le=65535)] | None = None
    policy_denials: Annotated[int, msgspec.Meta(ge=0, le=65535)] | None = None


class Template(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    roles: list[str] = []
    ttl: Duration | None = None
    max_ttl: Duration | None = None
    max_delegation_depth: Annotated[int, msgspec.Meta(ge=1, le=32)] | None = None
    quota: str | None = None
    breaker: Breaker | None = None
    description: str | None = None


class Guard(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A `[[guards]]` table: requests for `actions` on `on` are denied (`guard_failed`) unless
    `require` holds, whatever the roles say. `on`/`actions` absent: every resource/action."""

    require: str
    on: list[str] | None = None
    actions: list[str] | None = None
    reason: str | None = None


class Audit(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The `[audit]` table: what the log may show and, with `directory`, where and how it is written.

    The writer settings mean what the keyword arguments of `Engine.audit_to` mean.
    """

    loggable_context: list[str] = []
    directory: str | None = None
    mode: Literal["strict", "best_effort"] = "strict"
    fsync: Literal["batch", "interval", "never"] = "batch"
    flush_interval: Duration | None = None
    fsync_interval: Duration | None = None
    max_file_bytes: Annotated[int, msgspec.Meta(ge=4096)] | None = None
    max_file_age: Duration | None = None
    buffer_records: Annotated[int, msgspec.Meta(ge=1, le=1 << 28)] | None = None
    block_timeout: Duration | None = None


class Policy(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A whole policy document."""

    actions: list[str] = []
    resources: dict[str, list[str]] = {}
    roles: dict[str, Role] = {}
    principals: dict[str, Principal] = {}
    templates: dict[str, Template] = {}
    quotas: dict[str, Quota] = {}
    costs: dict[str, Annotated[int, msgspec.Meta(ge=1, le=4294967295)]] = {}
    guards: list[Guard] = []
    audit: Audit | None = None


PolicySource = Policy | Mapping[str, Any] | str | os.PathLike[str]
"""What `Engine.reload` accepts: a `Policy`, a dict, or a path to a TOML/JSON file."""

_AT_PATH = re.compile(r"^(?P<msg>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h|d)\s*$")


def parse_duration(value: Duration, path: str) -> float:
    """Seconds from a number or a `"15m"`-style string; a `PolicyError` at `path` otherwise."""
    if isinstance(value, bool):
        raise PolicyError(f"expected a duration, got `{value}`", path=path)
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION.match(value)
        if m is None:
            raise PolicyError(
                f"`{value}` is not a duration (write seconds, or e.g. `90s`, `15m`, `12h`, `7d`)", path=path
            )
        seconds = float(m["n"]) * _UNITS[m["unit"]]
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_DURATION_SECONDS):
        raise PolicyError(f"a duration must be positive and at most 10 years, got `{value}`", path=path)
    return seconds


class _Document(msgspec.Struct, forbid_unknown_fields=True):
    """The top level, with each map's values left for `_section` to convert.

    msgspec reports a dict value's location as `[...]`, not by key, so every
    keyed section is converted entry by entry to name its path exactly.
    """

    actions: list[str] = []
    resources: dict[str, Any] = {}
    roles: dict[str, Any] = {}
    principals: dict[str, Any] = {}
    templates: dict[str, Any] = {}
    quotas: dict[str, Any] = {}
    costs: dict[str, Any] = {}
    guards: list[Guard] = []
    audit: Audit | None = None


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def key(name: str) -> str:
    """A map key as it appears in a path: bare if TOML allows, quoted otherwise (as the compiler does)."""
    return name if _BARE_KEY.match(name) else msgspec.json.encode(name).decode()


def _convert(value: Any, into: Any, path: str, source: str | None) -> Any:
    try:
        return msgspec.convert(value, into, strict=True)
    except msgspec.ValidationError as err:
        text = str(err)
        m = _AT_PATH.match(text)
        message, inner = (m["msg"], m["path"]) if m else (text, "")
        message = message[:1].lower() + message[1:]
        full = (path + inner).lstrip(".") or None
        raise PolicyError(message, path=full, source=source) from None


def _section(data: dict[str, Any], into: Any, name: str, source: str | None) -> dict[str, Any]:
    return {k: _convert(v, into, f"{name}.{key(k)}", source) for k, v in data.items()}


def _normalise(policy: Policy) -> Policy:
    """Durations to seconds, so the compiler sees one representation."""
    templates = {}
    for name, t in policy.templates.items():
        base = f"templates.{key(name)}"
        templates[name] = msgspec.structs.replace(
            t,
            ttl=None if t.ttl is None else parse_duration(t.ttl, f"{base}.ttl"),
            max_ttl=None if t.max_ttl is None else parse_duration(t.max_ttl, f"{base}.max_ttl"),
        )
    if policy.audit is not None:
        a = policy.audit
        for name in ("flush_interval", "fsync_interval", "max_file_age", "block_timeout"):
            value = getattr(a, name)
            if value is not None:
                parse_duration(value, f"audit.{name}")
    return msgspec.structs.replace(policy, templates=templates)


def from_dict(data: Mapping[str, Any], *, source: str | None = None) -> Policy:
    """Validate a policy given as a dict (the TOML/JSON structure)."""
    if not isinstance(data, Mapping):
        raise PolicyError(f"a policy is a table/object, got {type(data).__name__}", source=source)
    doc: _Document = _convert(dict(data), _Document, "", source)
    policy = Policy(
        actions=doc.actions,
        resources=_section(doc.resources, list[str], "resources", source),
        roles=_section(doc.roles, Role, "roles", source),
        principals=_section(doc.principals, Principal, "principals", source),
        templates=_section(doc.templates, Template, "templates", source),
        quotas=_section(doc.quotas, Quota, "quotas", source),
        costs=_section(doc.costs, Annotated[int, msgspec.Meta(ge=1, le=4294967295)], "costs", source),
        guards=doc.guards,
        audit=doc.audit,
    )
    try:
        return _normalise(policy)
    except PolicyError as err:
        err.source = source
        raise


def from_toml(text: str, *, source: str | None = None) -> Policy:
    """Parse and validate a TOML policy."""
    if len(text) > MAX_POLICY_BYTES // 4 and len(text.encode("utf-8", "surrogatepass")) > MAX_POLICY_BYTES:
        raise PolicyError(f"the policy is larger than {MAX_POLICY_BYTES} bytes", source=source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise PolicyError(f"invalid TOML: {err}", source=source) from None
    return from_dict(data, source=source)


def from_json(raw: bytes | str, *, source: str | None = None) -> Policy:
    """Parse and validate a JSON policy."""
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(f"the policy is larger than {MAX_POLICY_BYTES} bytes", source=source)
    try:
        data = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as err:
        raise PolicyError(f"invalid JSON: {err}", source=source) from None
    return from_dict(data, source=source)


def from_file(path: str | os.PathLike[str]) -> Policy:
    """Load a `.toml` or `.json` policy file (other suffixes are read as TOML)."""
    p = Path(path)
    source = str(p)
    try:
        size = p.stat().st_size
        if size > MAX_POLICY_BYTES:
            raise PolicyError(f"the policy is larger than {MAX_POLICY_BYTES} bytes", source=source)
        raw = p.read_bytes()
    except OSError as err:
        raise PolicyError(f"cannot read the policy: {err.strerror or err}", source=source) from None
    if p.suffix.lower() == ".json":
        return from_json(raw, source=source)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PolicyError(f"the policy is not UTF-8: {err}", source=source) from None
    return from_toml(text, source=source)


def load(source: PolicySource) -> tuple[Policy, str | None]:
    """A validated policy from any accepted source, and the file it came from."""
    if isinstance(source, Policy):
        return source, None
    if isinstance(source, Mapping):
        return from_dict(source), None
    if isinstance(source, str | os.PathLike):
        return from_file(source), str(source)
    raise PolicyError(f"cannot load a policy from {type(source).__name__}")


def _encode_subclasses(obj: Any) -> Any:
    # Validation accepts subclasses of str/int/float (numpy.str_, enum members);
    # the wire format wants the plain values.
    for base in (str, bool, int, float):
        if isinstance(obj, base):
            return base(obj)
    raise PolicyError(f"cannot encode a value of type {type(obj).__name__} in a policy")


def to_core_json(policy: Policy) -> bytes:
    """The canonical JSON the Rust compiler reads (sorted keys, so the version hash is stable)."""
    return msgspec.json.encode(policy, order="sorted", enc_hook=_encode_subclasses)


def example_path() -> Path:
    """The example policy shipped with the package."""
    return Path(__file__).with_name("examples") / "default.toml"
