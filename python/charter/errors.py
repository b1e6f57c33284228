"""Charter's exceptions: one base class, each also a standard type callers already catch.

A denial is never an exception in the engine (it is a `Decision`); these are
for requests that cannot be carried out at all. The compiled module raises
these very classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from charter._core import Decision


class CharterError(Exception):
    """Base class of every Charter exception."""


class PolicyError(CharterError, ValueError):
    """A policy document is malformed; `path` points into it, `source` names the file."""

    def __init__(self, message: str, *, path: str | None = None, source: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.source = source

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.source, self.path) if p)
        return f"{where}: {self.message}" if where else self.message


class ProvisionError(CharterError, ValueError):
    """An agent could not be provisioned (unknown template, depth or ttl exceeded, inactive delegator)."""


class UnknownSubjectError(CharterError, LookupError):
    """No agent or principal by that id or handle."""


class UnknownActionError(CharterError, LookupError):
    """The action is not declared in the policy."""


class InvalidRequestError(CharterError, ValueError):
    """An argument is malformed (wrong type, mismatched lengths, bad id)."""


class CapacityError(CharterError, RuntimeError):
    """A fixed capacity of the registry is exhausted."""


class InternalError(CharterError, RuntimeError):
    """The engine failed internally; no decision was returned (treat as deny)."""


class ServerUnavailable(CharterError, ConnectionError):  # noqa: N818 (a name in the public contract)
    """The decision server cannot be reached or did not answer in time; callers should deny (fail closed)."""


class PermissionDenied(CharterError):  # noqa: N818 (a name in the public contract)
    """Raised by `Engine.require` when a request is denied; carries the `Decision`."""

    def __init__(self, decision: Decision, action: str, principal: object) -> None:
        rule = f", rule {decision.rule}" if decision.rule else ""
        super().__init__(f"{principal!s} may not {action}: {decision.reason}{rule}")
        self.decision = decision


class AuthenticationError(CharterError):
    """A credential was refused; `reason` says why (`bad_signature`, `expired`, `revoked`, ...).

    Every refusal by `Engine.authenticate`, `Issuer.exchange` and the token
    helpers raises this, whatever failed inside: a verifier fails closed.
    """

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
        self.message = message or reason


class StorageError(CharterError, OSError):
    """A key file or the revocation log cannot be used: unreadable, malformed, or readable by others."""


class AuditError(CharterError, OSError):
    """The audit log cannot be opened, written or read: locked by another writer, unwritable, malformed."""


class ApprovalError(CharterError, ValueError):
    """`Engine.approve` refused; `reason` says why.

    `unknown_decision` (no pending approval has that id: never, evicted, or not an
    `approval_required` decision of a single check), `expired` (pending for more than 15 minutes),
    `already_approved`, `unknown_approver` (not a principal of the policy), `not_an_approver`
    (holds none of the roles the entry names and is not named, or is suspended), `four_eyes`
    (the requester itself, or a principal the requesting agent acts for).
    """

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
        self.message = message or reason
