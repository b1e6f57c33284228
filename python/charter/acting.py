"""Checks for agent code: who is acting (`acting_as`), inline checks and the `guard` decorator.

`ActingMixin` is mixed into `charter.Engine`. The current agent lives in a
`contextvars` variable, so it follows the code that runs on its behalf:
asyncio tasks created inside the block, `asyncio.to_thread`, and anything
run with a copied context (`contextvars.copy_context().run`). A plain new
thread starts with an empty context and therefore acts as nobody, which
denies: without a current agent every check here is refused (fail closed).

The current agent is kept per engine: `engine_a.acting_as(x)` says nothing
about who acts towards `engine_b`.

Why `require_current` and not a second form of `Engine.require`: the
existing `require(principal, action, resource=None, context=None)` is
positional, and `user:alice` is as valid an action name as `crm:read`, so
`require("crm:read", "customers/42")` could not tell "the current agent
reads customers/42" from "principal `crm:read` does action `customers/42`"
by its arguments. A separate name keeps both calls unambiguous.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import contextvars
import functools
import inspect
import string
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar

import msgspec

from charter import _core
from charter.errors import CharterError, InvalidRequestError, PermissionDenied

if TYPE_CHECKING:
    from charter.authn import IdentityMixin as _Base
else:
    _Base = object

__all__ = ["ActingAs", "ActingMixin", "ContextSpec", "ResourceSpec"]

Subject = int | str | _core.Agent
"""Who acts: an agent handle, an `Agent`, an agent id or a principal id (as `Engine.check` takes)."""

ResourceSpec = str | Callable[..., str | None] | None
"""A guard's resource: a `str.format` template over the call's arguments, or a callable given them."""

ContextSpec = Mapping[str, Any] | Sequence[str] | Callable[..., Mapping[str, Any] | None] | None
"""A guard's context: a callable given the call's arguments, parameter names, or a mapping of
key -> template, callable or constant (see `ActingMixin.guard`)."""

P = ParamSpec("P")
R = TypeVar("R")

_Entry = tuple[object, Subject, str]
_ACTING: Final[contextvars.ContextVar[tuple[_Entry, ...]]] = contextvars.ContextVar(
    "charter_acting", default=()
)
"""(engine, subject, name for messages), innermost last; an engine's current agent is its last entry."""

_NOT_A_CONTEXT: Final = 0
"""Passed as a request's context to have the engine record and refuse it as `malformed_request`."""

_FORMATTER: Final = string.Formatter()


def looks_like_token(text: str) -> bool:
    """Whether `text` is a compact JWS (`header.claims.signature` with a JSON header naming `alg`).

    Agent and principal ids are never of that shape in practice, and a string
    taken for a token is verified, never trusted: a wrong guess refuses.
    """
    parts = text.split(".")
    if len(parts) != 3 or not all(parts):
        return False
    try:
        header = msgspec.json.decode(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (binascii.Error, ValueError, msgspec.DecodeError):
        return False
    return isinstance(header, dict) and "alg" in header


class ActingAs:
    """The context manager `Engine.acting_as` returns; entering yields the subject checks will use."""

    __slots__ = ("_entry", "_tokens")

    def __init__(self, engine: object, subject: Subject, name: str) -> None:
        self._entry: _Entry = (engine, subject, name)
        self._tokens: list[contextvars.Token[tuple[_Entry, ...]]] = []

    @property
    def subject(self) -> Subject:
        """The agent (or principal) this block acts as."""
        return self._entry[1]

    def __enter__(self) -> Subject:
        self._tokens.append(_ACTING.set((*_ACTING.get(), self._entry)))
        return self._entry[1]

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        _ACTING.reset(self._tokens.pop())

    async def __aenter__(self) -> Subject:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class ActingMixin(_Base):
    """`acting_as`, `current_agent`, `check_current`, `require_current` and `guard` for `charter.Engine`."""

    def acting_as(
        self,
        agent_or_token: Subject,
        *,
        proof: str | None = None,
        audience: str | None = None,
    ) -> ActingAs:
        """Make `agent_or_token` the current agent of this engine inside a `with` block.

        An `Agent`, a handle or an id is used as given (an unknown id is
        denied `unknown_principal` by each check). A credential (a compact
        JWS) is verified now with `authenticate(token, proof, audience=...)`
        and its agent used; a refused credential raises
        `charter.AuthenticationError` before the block runs. Blocks nest: on
        leaving one, the previous agent is current again.
        """
        subject: Subject
        name = str(agent_or_token)
        if isinstance(agent_or_token, _core.Agent):
            subject, name = agent_or_token.handle, agent_or_token.id
        elif isinstance(agent_or_token, bool) or not isinstance(agent_or_token, int | str):
            raise InvalidRequestError(
                f"acting_as takes an Agent, a handle, an id or a token, not {type(agent_or_token).__name__}"
            )
        elif isinstance(agent_or_token, str) and looks_like_token(agent_or_token):
            agent = self.authenticate(agent_or_token, proof, audience=audience)
            subject, name = agent.handle, agent.id
        elif proof is not None or audience is not None:
            raise InvalidRequestError("proof= and audience= apply to a credential, not to an agent or id")
        else:
            subject = agent_or_token
            if isinstance(subject, int):
                with contextlib.suppress(CharterError):
                    name = self.agent(subject).id
        return ActingAs(self, subject, name)

    def current_agent(self) -> Subject | None:
        """Who acts towards this engine in the current context (set by `acting_as`), or None."""
        entry = self._acting()
        return None if entry is None else entry[1]

    def _acting(self) -> _Entry | None:
        for entry in reversed(_ACTING.get()):
            if entry[0] is self:
                return entry
        return None

    def check_current(
        self, action: str | int, resource: str | None = None, context: Mapping[str, Any] | None = None
    ) -> _core.Decision:
        """`check` for the current agent; without one, a `malformed_request` denial."""
        subject = self.current_agent()
        ctx = None if context is None else dict(context)
        return self.check(subject, action, resource, ctx)  # type: ignore[arg-type]  # None: refused

    def require_current(
        self, action: str | int, resource: str | None = None, context: Mapping[str, Any] | None = None
    ) -> _core.Decision:
        """`check_current`, raising `charter.PermissionDenied` (carrying the decision) unless allowed.

        Without a current agent the request is refused (fail closed) and the
        exception says so.
        """
        entry = self._acting()
        if entry is None:
            raise _no_agent(self.check(None, action), action)  # type: ignore[arg-type]
        decision = self.check(entry[1], action, resource, None if context is None else dict(context))
        if not decision:
            raise PermissionDenied(decision, str(action), entry[2])
        return decision

    def guard(
        self,
        action: str,
        *,
        resource: ResourceSpec = None,
        context: ContextSpec = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a tool function (sync or async) so each call is checked for the current agent first.

        The request is built from the call's arguments:

        - `resource`: a `str.format` template over the parameters
          (`"accounts/{account_id}"`, `"{order.account}"`), or a callable
          called with the call's arguments (`lambda account_id, **_: ...`).
        - `context`: a callable called with the call's arguments returning a
          dict; a sequence of parameter names (`["amount", "currency"]` gives
          `{"amount": amount, "currency": currency}`); or a mapping whose
          values are templates, callables (given the call's arguments) or
          constants. A template that is one field alone (`"{amount}"`) gives
          the value itself, so an int stays an int; any other template gives
          a string.

        A denial raises `charter.PermissionDenied` carrying the `Decision`
        and the function does not run; so does a call without a current
        agent, or one whose resource or context cannot be built (reason
        `malformed_request`, the cause chained). Templates naming unknown
        parameters are refused here, when decorating (`InvalidRequestError`).
        Quotas are charged as for any `check`.
        """

        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            build = _RequestBuilder(fn, action, resource, context)
            engine = self

            def authorize(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                entry = engine._acting()
                if entry is None:
                    raise _no_agent(engine.check(None, action), action)  # type: ignore[arg-type]
                subject = entry[1]
                try:
                    res, ctx = build(args, kwargs)
                except Exception as err:  # fail closed: a request we cannot build is refused
                    refusal = engine.check(subject, action, None, _NOT_A_CONTEXT)
                    denied = PermissionDenied(refusal, action, entry[2])
                    denied.args = (f"cannot build the `{action}` request for {build.name}: {err!r}",)
                    raise denied from err
                decision = engine.check(subject, action, res, ctx)
                if not decision:
                    raise PermissionDenied(decision, action, entry[2])

            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                    authorize(args, kwargs)
                    return await fn(*args, **kwargs)

                guarded: Callable[..., Any] = guarded_async
            else:

                @functools.wraps(fn)
                def guarded_sync(*args: Any, **kwargs: Any) -> Any:
                    authorize(args, kwargs)
                    return fn(*args, **kwargs)

                guarded = guarded_sync
            return guarded

        return decorate


def _no_agent(decision: _core.Decision, action: str | int) -> PermissionDenied:
    denied = PermissionDenied(decision, str(action), None)
    denied.args = (f"no current agent: `{action}` refused (run it inside `with engine.acting_as(agent):`)",)
    return denied


class _RequestBuilder:
    """Turns one call's arguments into (resource, context) as a guard's specs say."""

    def __init__(
        self, fn: Callable[..., Any], action: str, resource: ResourceSpec, context: ContextSpec
    ) -> None:
        self.name = f"`{getattr(fn, '__qualname__', fn)}`"
        self.signature = inspect.signature(fn)
        params = self.signature.parameters.values()
        self._open = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        self._names = {p.name for p in params}
        self.needs_binding = False
        where = f"guard of `{action}` on {self.name}"
        if resource is not None and not (isinstance(resource, str) or callable(resource)):
            raise InvalidRequestError(f"{where}: resource must be a template string or a callable")
        if isinstance(resource, str):
            self._check_template(resource, f"{where}: resource")
        self.resource = resource
        self.context: ContextSpec
        if context is None or callable(context):
            self.context = context
        elif isinstance(context, Mapping):
            for key, value in context.items():
                if not isinstance(key, str):
                    raise InvalidRequestError(f"{where}: context keys must be strings, got {key!r}")
                if isinstance(value, str):
                    self._check_template(value, f"{where}: context[{key!r}]")
            self.context = dict(context)
        elif isinstance(context, Sequence) and all(isinstance(k, str) for k in context):
            for name in context:
                self._check_field(name, f"{where}: context")
            self.context = tuple(context)
        else:
            raise InvalidRequestError(
                f"{where}: context must be a callable, a mapping or a sequence of parameter names"
            )

    def _check_template(self, template: str, where: str) -> None:
        try:
            fields = [f for _, f, _, _ in _FORMATTER.parse(template) if f is not None]
        except ValueError as err:
            raise InvalidRequestError(f"{where}: bad template {template!r}: {err}") from None
        for field in fields:
            self._check_field(field, f"{where} {template!r}")

    def _check_field(self, field: str, where: str) -> None:
        root = field.split(".", 1)[0].split("[", 1)[0]
        if not root or root.isdigit():
            raise InvalidRequestError(
                f"{where}: name a parameter in each field (`{{amount}}`), not `{field}`"
            )
        if root not in self._names and not self._open:
            raise InvalidRequestError(f"{where}: `{root}` is not a parameter of {self.name}")
        self.needs_binding = True

    def __call__(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[str | None, dict[str, Any] | None]:
        bound: dict[str, Any] = {}
        if self.needs_binding:
            binding = self.signature.bind(*args, **kwargs)
            binding.apply_defaults()
            bound = dict(binding.arguments)
            for p in self.signature.parameters.values():  # **kwargs' entries are reachable by name
                if p.kind is inspect.Parameter.VAR_KEYWORD:
                    bound = {**bound.pop(p.name, {}), **bound}
        spec = self.resource
        resource = (
            spec.format_map(bound)
            if isinstance(spec, str)
            else None
            if spec is None
            else spec(*args, **kwargs)
        )
        if resource is not None and not isinstance(resource, str):
            raise TypeError(f"the resource must be a string or None, got {type(resource).__name__}")
        return resource, self._context(args, kwargs, bound)

    def _context(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], bound: dict[str, Any]
    ) -> dict[str, Any] | None:
        spec = self.context
        if spec is None:
            return None
        if isinstance(spec, tuple):
            return {name: _field(name, bound) for name in spec}
        if isinstance(spec, dict):
            out: dict[str, Any] = {}
            for key, value in spec.items():
                if isinstance(value, str):
                    out[key] = _render(value, bound)
                elif callable(value):
                    out[key] = value(*args, **kwargs)
                else:
                    out[key] = value
            return out
        assert callable(spec)
        made = spec(*args, **kwargs)
        if made is not None and not isinstance(made, Mapping):
            raise TypeError(f"the context callable must return a mapping, got {type(made).__name__}")
        return None if made is None else dict(made)


def _field(name: str, bound: Mapping[str, Any]) -> Any:
    value, _ = _FORMATTER.get_field(name, (), bound)
    return value


def _render(template: str, bound: Mapping[str, Any]) -> Any:
    parsed = list(_FORMATTER.parse(template))
    if len(parsed) == 1:
        literal, field, spec, conversion = parsed[0]
        if not literal and field and not spec and not conversion:
            return _field(field, bound)  # "{amount}" alone: the value itself, type kept
    return template.format_map(bound)
