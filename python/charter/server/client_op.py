"""`Op`: one client operation, a method on a blocking client and a coroutine on an asyncio one.

An `Op` holds a request builder (whose first parameter is the request id)
and a reply reader. Read from a client whose `call` is blocking it is a
method returning the reader's result; read from one whose `call` is a
coroutine function (`is_async`), a coroutine function. The method's
signature is the builder's without the request id (a `ParamSpec`), so mypy
checks every call of either kind of client against it. client_ops.py has
the tables of operations.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, Self, TypeVar, overload

import msgspec

from charter.server import protocol as p

__all__ = ["Built", "Call", "Op", "op"]

P = ParamSpec("P")
T = TypeVar("T")
A = TypeVar("A")


class Call(msgspec.Struct, frozen=True):
    """A request and the timeout its call overrides (for operations that take `timeout=`)."""

    request: p.Request
    timeout: float | None


Built = p.Request | Call


class _Blocking(Protocol):
    def call(self, request: p.Request, *, timeout: float | None = None) -> p.Reply: ...


class _Async(Protocol):
    async def call(self, request: p.Request, *, timeout: float | None = None) -> p.Reply: ...


class Op(Generic[P, T, A]):
    """One client operation (see the module docstring). `T`: what the blocking method returns;
    `A`: what the coroutine returns (the same but for `acquire`, whose lease releases differently)."""

    def __init__(
        self,
        build: Callable[Concatenate[int, P], Built],
        read: Callable[[Any, p.Request, p.Reply], T],
        read_async: Callable[[Any, p.Request, p.Reply], A],
    ) -> None:
        self.build = build
        self.read = read
        self.read_async = read_async
        self.name = build.__name__.lstrip("_")
        self.__doc__ = build.__doc__
        sig = inspect.signature(build)
        self.signature = sig.replace(
            parameters=list(sig.parameters.values())[1:], return_annotation=sig.empty
        )
        """The method's signature (the builder's without the request id), for `help` and `inspect`."""

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(self, obj: _Blocking, owner: type[Any] | None = None) -> Callable[P, T]: ...
    @overload
    def __get__(self, obj: _Async, owner: type[Any] | None = None) -> Callable[P, Coroutine[Any, Any, A]]: ...
    def __get__(self, obj: Any, owner: type[Any] | None = None) -> Any:
        if obj is None:
            return self
        build, name = self.build, self.name
        if getattr(obj, "is_async", False):
            read_async = self.read_async

            async def coroutine(*args: Any, **kwargs: Any) -> Any:
                request, timeout = _unpack(build(obj._rid(), *args, **kwargs))
                return read_async(obj, request, await obj.call(request, timeout=timeout))

            method: Callable[..., Any] = coroutine
        else:
            read = self.read

            def blocking(*args: Any, **kwargs: Any) -> Any:
                request, timeout = _unpack(build(obj._rid(), *args, **kwargs))
                return read(obj, request, obj.call(request, timeout=timeout))

            method = blocking
        method.__name__ = method.__qualname__ = name
        method.__doc__ = self.__doc__
        method.__signature__ = self.signature  # type: ignore[attr-defined]
        obj.__dict__[name] = method  # later lookups find it on the instance: no descriptor call
        return method


def op(
    build: Callable[Concatenate[int, P], Built], read: Callable[[Any, p.Request, p.Reply], T]
) -> Op[P, T, T]:
    """An operation whose result is the same for both kinds of client."""
    return Op(build, read, read)


def _unpack(built: Built) -> tuple[p.Request, float | None]:
    return (built.request, built.timeout) if isinstance(built, Call) else (built, None)
