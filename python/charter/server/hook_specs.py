"""`charter serve --hooks SPEC`: where the policy hooks of a served engine come from.

A SPEC names Python code the server imports (docs/server.md):

- `module:attr`, where `attr` is a mapping of hook name -> callable (e.g.
  `HOOKS = {"fraud_check": fraud_check}`), or a function taking no
  arguments that returns such a mapping: a *factory*, called once in each
  server process (after the workers fork, so each builds its own clients,
  pools and caches);
- `name=module:attr`, where `attr` is the hook itself (a callable taking the
  `HookRequest`).

`module` is imported as `import module` would (the server's working
directory and `PYTHONPATH` are on the path). Every error says which SPEC and
what is wrong with it; `resolve` raises them before the server binds its
sockets, and checks the names of mapping-given hooks against the policy then.
A factory's hooks are checked when each process builds its engine.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from charter.errors import InvalidRequestError
from charter.hooks import Hook

__all__ = ["HookSet", "resolve"]

_SPEC = re.compile(
    r"^(?:(?P<name>[A-Za-z_][A-Za-z0-9_.:-]*)=)?(?P<module>[A-Za-z_][\w.]*):(?P<attr>[A-Za-z_]\w*)$"
)
_FORMS = "`module:attr` (a mapping or a factory of hooks) or `name=module:attr` (one hook)"


@dataclass(frozen=True)
class HookSet:
    """The hooks `--hooks` named: fixed ones, and factories to call in each server process."""

    fixed: dict[str, Hook] = field(default_factory=dict)
    factories: tuple[tuple[str, Callable[[], object]], ...] = ()
    """(spec, factory) pairs."""

    def __bool__(self) -> bool:
        return bool(self.fixed or self.factories)

    def load(self) -> dict[str, Hook]:
        """Every hook, by name: call the factories (in this process) and merge."""
        hooks = dict(self.fixed)
        for spec, factory in self.factories:
            try:
                made = factory()
            except Exception as err:
                raise InvalidRequestError(
                    f"--hooks `{spec}`: the factory raised {type(err).__name__}: {err}"
                ) from err
            for name, hook in _mapping(spec, made, "the factory returned an object").items():
                _add(hooks, spec, name, hook)
        return hooks


def resolve(specs: Sequence[str]) -> HookSet:
    """Import and check every SPEC; `InvalidRequestError` names the first that cannot be used."""
    fixed: dict[str, Hook] = {}
    factories: list[tuple[str, Callable[[], object]]] = []
    for spec in specs:
        m = _SPEC.match(spec.strip())
        if m is None:
            raise InvalidRequestError(f"--hooks `{spec}`: expected {_FORMS}")
        obj = _import(spec, m["module"], m["attr"])
        if m["name"] is not None:
            if not callable(obj):
                raise InvalidRequestError(f"--hooks `{spec}`: `{m['attr']}` is not callable")
            _add(fixed, spec, m["name"], obj)
        elif isinstance(obj, Mapping):
            for name, hook in _mapping(spec, obj, f"`{m['attr']}` is").items():
                _add(fixed, spec, name, hook)
        elif callable(obj) and _takes_no_arguments(obj):
            factories.append((spec, obj))
        elif callable(obj):
            raise InvalidRequestError(
                f"--hooks `{spec}`: `{m['attr']}` takes arguments, so it is a hook, not a factory: "
                f"name the hook it implements, `NAME={m['module']}:{m['attr']}`"
            )
        else:
            raise InvalidRequestError(
                f"--hooks `{spec}`: `{m['attr']}` is of type `{type(obj).__name__}`, "
                "not a mapping of hooks or a function returning one"
            )
    return HookSet(fixed, tuple(factories))


def _import(spec: str, module: str, attr: str) -> Any:
    try:
        mod = importlib.import_module(module)
    except Exception as err:  # ImportError, or whatever the module raised while loading
        raise InvalidRequestError(
            f"--hooks `{spec}`: cannot import `{module}`: {type(err).__name__}: {err}"
        ) from err
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise InvalidRequestError(f"--hooks `{spec}`: module `{module}` has no `{attr}`") from None


def _mapping(spec: str, obj: object, what: str) -> dict[str, Hook]:
    if not isinstance(obj, Mapping):
        raise InvalidRequestError(
            f"--hooks `{spec}`: {what} of type `{type(obj).__name__}`, not a mapping of hooks"
        )
    out: dict[str, Hook] = {}
    for name, hook in obj.items():
        if not isinstance(name, str) or not name:
            raise InvalidRequestError(f"--hooks `{spec}`: hook names are non-empty strings, got {name!r}")
        if not callable(hook):
            raise InvalidRequestError(f"--hooks `{spec}`: hook `{name}` is not callable")
        out[name] = hook
    return out


def _add(hooks: dict[str, Hook], spec: str, name: str, hook: Hook) -> None:
    if name in hooks:
        raise InvalidRequestError(f"--hooks `{spec}`: hook `{name}` is given twice")
    hooks[name] = hook


def _takes_no_arguments(fn: Callable[..., object]) -> bool:
    try:
        inspect.signature(fn).bind()
    except TypeError:
        return False
    except ValueError:  # no signature to inspect (some builtins): not a factory we can vouch for
        return False
    return True
