"""The decision server's wire protocol: length-prefixed MessagePack frames (reference: docs/protocol.md).

A frame is a 4-byte big-endian unsigned length N, then N bytes holding one
MessagePack array: `[op, id, field, ...]`. `op` names the message (`"check"`,
`"decision"`, `"error"`...), `id` is the client's request id, echoed in the
response so responses may come back in any order. Trailing optional fields
may be omitted. Batches are columnar: one frame carries arrays as raw
little-endian bytes in MessagePack `bin` fields, never one map per request.

Every message is a msgspec Struct below; the request union is decoded in one
call, the tag picking the type.
"""

from __future__ import annotations

import struct
from typing import Annotated, Any, Final, Union

import msgspec

HEADER: Final = struct.Struct(">I")
"""The frame header: the body's length in bytes, big-endian uint32."""

DEFAULT_MAX_FRAME: Final = 1 << 20
"""Largest frame body the server accepts by default (1 MiB); larger frames close the connection."""

MAX_PING_DELAY: Final = 60.0
"""Longest `ping` delay a client may ask for, in seconds."""

RequestId = Annotated[int, msgspec.Meta(ge=1)]
"""Chosen by the client, 1..2**64-1 (a MessagePack uint64); 0 marks an error the server cannot tie to a request."""
Handle = Annotated[int, msgspec.Meta(ge=0)]
Subject = Handle | str | None
"""An agent handle, an agent id or a principal id (None only with a token)."""


# ------------------------------------------------------------ requests


class Request(msgspec.Struct, array_like=True, tag_field="op"):
    """Base of every request: `[op, id, ...]`."""

    id: RequestId


class Ping(Request, tag="ping"):
    """Liveness probe; answered after `delay` seconds (lets clients exercise pipelining and timeouts)."""

    delay: Annotated[float, msgspec.Meta(ge=0, le=MAX_PING_DELAY)] = 0.0


class Check(Request, tag="check"):
    """Decide one request. `token` authenticates the subject for this request only."""

    subject: Subject
    action: str
    resource: str | None = None
    context: dict[str, Any] | None = None
    token: str | None = None


class CheckBatch(Request, tag="check_batch"):
    """Decide N requests: `handles` N x uint64 LE, `actions` N x uint32 LE indices into `action_names`."""

    handles: memoryview
    actions: memoryview
    action_names: list[str]
    resources: list[str | None] | None = None


class Authenticate(Request, tag="authenticate"):
    """Verify a token (and proof of possession); the agent joins this connection's session."""

    token: str
    proof: str | None = None


class Explain(Request, tag="explain"):
    """The decision and its derivation."""

    subject: Subject
    action: str
    resource: str | None = None
    context: dict[str, Any] | None = None
    token: str | None = None


class Resolve(Request, tag="resolve"):
    """The handles of agents named by id, valid on this connection (trusted peers, or session agents)."""

    agents: list[str]


class QuotaStatus(Request, tag="quota_status"):
    """What is left of each quota along an agent's delegation chain."""

    subject: Subject
    token: str | None = None


class Acquire(Request, tag="acquire"):
    """Decide one request and, if allowed, hold an in-flight slot wherever a quota caps concurrency.

    Answered with a `lease` frame; the slots stay held until `release`, or
    until the connection closes. No `context`: the engine's `acquire` takes none.
    """

    subject: Subject
    action: str
    resource: str | None = None
    token: str | None = None


class Release(Request, tag="release"):
    """Give back the slots of a lease this connection acquired."""

    lease: Annotated[int, msgspec.Meta(ge=1)]


class Stats(Request, tag="stats"):
    """Server statistics."""


class Provision(Request, tag="provision"):
    """Admin: register an agent."""

    template: str
    on_behalf_of: Handle | str | None = None
    ttl: Annotated[float, msgspec.Meta(gt=0)] | None = None
    agent_id: str | None = None
    scope: list[str] | None = None


class Deprovision(Request, tag="deprovision"):
    """Admin: retire an agent and every agent acting for it."""

    agent: Handle | str


class Reload(Request, tag="reload"):
    """Admin: reload the policy file the server was started with."""


class Suspend(Request, tag="suspend"):
    """Admin: suspend an agent (and its delegates) or a principal (and everything acting for it)."""

    subject: Handle | str
    reason: str | None = None


class Resume(Request, tag="resume"):
    """Admin: undo `suspend`."""

    subject: Handle | str


class Freeze(Request, tag="freeze"):
    """Admin: the kill switch; every decision is a denial (`frozen`) until `unfreeze`."""


class Unfreeze(Request, tag="unfreeze"):
    """Admin: undo `freeze`."""


class RotateKeys(Request, tag="rotate_keys"):
    """Admin: re-read the trusted JWKS files (after an issuer rotated its signing key)."""


class Revoke(Request, tag="revoke"):
    """Admin: revoke, for good, a credential and its agent, an agent, a principal, or a `jti`."""

    token: str | None = None
    agent: Handle | str | None = None
    principal: str | None = None
    jti: str | None = None
    reason: str | None = None


REQUESTS: Final[tuple[type[Request], ...]] = (
    Ping,
    Check,
    CheckBatch,
    Authenticate,
    Explain,
    Resolve,
    QuotaStatus,
    Acquire,
    Release,
    Stats,
    Provision,
    Deprovision,
    Reload,
    Suspend,
    Resume,
    Freeze,
    Unfreeze,
    RotateKeys,
    Revoke,
)
"""Every request type the protocol defines (the server serves those its engine supports)."""

OPS: Final[dict[str, type[Request]]] = {t.__struct_config__.tag: t for t in REQUESTS}  # type: ignore[misc]


# ------------------------------------------------------------ responses


class Reply(msgspec.Struct, array_like=True, tag_field="op"):
    """Base of every response: `[op, id, ...]`."""

    id: int


class DecisionReply(Reply, tag="decision"):
    """The answer to `check`; `bool(reply)` is `reply.allowed`, as for an in-process `Decision`."""

    allowed: bool
    reason_code: int
    reason: str
    rule: str | None
    policy_version: str
    retry_after: float | None = None
    """For `rate_limited` / `budget_exhausted`: seconds until the same request would be admitted."""
    decision_id: str | None = None
    """The decision's audit record (`charter audit why ID`), when the server audits."""

    def __bool__(self) -> bool:
        return self.allowed

    def to_dict(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "reason": self.reason,
            "reason_code": self.reason_code,
            "rule": self.rule,
            "policy_version": self.policy_version,
            "retry_after": self.retry_after,
            "decision_id": self.decision_id,
        }


class LeaseReply(DecisionReply, tag="lease"):
    """The answer to `acquire`: the decision and, when allowed, the lease id to `release` (else 0)."""

    lease: int = 0


class BatchReply(Reply, tag="batch"):
    """The answer to `check_batch`: N bytes 0/1, N bytes of reason codes."""

    allowed: bytes
    reasons: bytes
    policy_version: str


class Result(Reply, tag="result"):
    """The answer to every other operation; `value`'s shape depends on the operation."""

    value: Any


class ErrorReply(Reply, tag="error"):
    """A request that could not be carried out (a denial is a `decision`, never an error)."""

    code: str
    message: str
    detail: Any = None


Response = DecisionReply | LeaseReply | BatchReply | Result | ErrorReply


class ErrorCode:
    """The `code` of an error frame (stable strings; docs/protocol.md lists when each is sent)."""

    MALFORMED_FRAME: Final = "malformed_frame"
    FRAME_TOO_LARGE: Final = "frame_too_large"
    UNKNOWN_OPERATION: Final = "unknown_operation"
    INVALID_REQUEST: Final = "invalid_request"
    FORBIDDEN: Final = "forbidden"
    UNAUTHENTICATED: Final = "unauthenticated"
    AUTHENTICATION_FAILED: Final = "authentication_failed"
    UNKNOWN_SUBJECT: Final = "unknown_subject"
    UNKNOWN_ACTION: Final = "unknown_action"
    PROVISION_FAILED: Final = "provision_failed"
    POLICY_ERROR: Final = "policy_error"
    CAPACITY: Final = "capacity_exhausted"
    SHUTTING_DOWN: Final = "shutting_down"
    INTERNAL: Final = "internal_error"


# ------------------------------------------------------------ coding

request_decoder: Final = msgspec.msgpack.Decoder(Union[REQUESTS])  # noqa: UP007 (a union of a tuple of types)
response_decoder: Final = msgspec.msgpack.Decoder(Response)
encoder: Final = msgspec.msgpack.Encoder()
_any_decoder: Final = msgspec.msgpack.Decoder()


def append_frame(out: bytearray, message: object) -> None:
    """Encode `message` as one frame at the end of `out` (so many replies leave in one write)."""
    start = len(out)
    out += b"\0\0\0\0"
    encoder.encode_into(message, out, -1)
    HEADER.pack_into(out, start, len(out) - start - 4)


def frame(message: object) -> bytes:
    """One encoded frame."""
    out = bytearray()
    append_frame(out, message)
    return bytes(out)


def classify(body: memoryview | bytes, err: Exception) -> ErrorReply:
    """The error frame for a body the typed decoder refused: which request, and what was wrong.

    Called only off the hot path. A body that is not MessagePack, or not an
    array starting with a string and a valid id, is `malformed_frame`; an op
    no request type has is `unknown_operation`; anything else is a known op
    with bad fields, `invalid_request` with msgspec's message (it names the
    field, e.g. `Expected str, got int - at $[3]`).
    """
    try:
        raw = _any_decoder.decode(body)
    except Exception as exc:  # msgspec.DecodeError, or UnicodeDecodeError for invalid UTF-8
        return ErrorReply(0, ErrorCode.MALFORMED_FRAME, f"not MessagePack: {exc}")
    if not isinstance(raw, list) or len(raw) < 2 or not isinstance(raw[0], str):
        return ErrorReply(0, ErrorCode.MALFORMED_FRAME, "a frame is an array [op, id, ...]")
    op, rid = raw[0], raw[1]
    if not isinstance(rid, int) or isinstance(rid, bool) or not 1 <= rid < 2**64:
        return ErrorReply(0, ErrorCode.MALFORMED_FRAME, "the request id must be an integer in 1..2**64-1")
    if op not in OPS:
        return ErrorReply(rid, ErrorCode.UNKNOWN_OPERATION, f"unknown operation `{op[:64]}`")
    return ErrorReply(rid, ErrorCode.INVALID_REQUEST, f"{op}: {err}")


def count_frames(data: bytes) -> tuple[int, bytes]:
    """How many whole frames `data` holds, and the bytes after them (for load generators and
    echo servers that only count frames; no body is decoded or copied)."""
    pos, end, n = 0, len(data), 0
    while end - pos >= 4:
        (size,) = HEADER.unpack_from(data, pos)
        if end - pos - 4 < size:
            break
        pos += 4 + size
        n += 1
    return n, data[pos:]


class FrameSplitter:
    """Incremental frame parser for clients: feed bytes, get complete bodies.

    Chunks are joined only once a whole frame is there, so a large frame
    arriving in many reads is copied once.
    """

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._chunks: list[bytes] = []
        self._have = 0
        self._need = 4

    def feed(self, data: bytes) -> list[memoryview]:
        """The bodies completed by `data`; raises `ValueError` on a frame over `max_frame`."""
        self._chunks.append(data)
        self._have += len(data)
        if self._have < self._need:
            return []
        buf = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        view, pos, end, bodies = memoryview(buf), 0, len(buf), []
        while end - pos >= 4:
            (n,) = HEADER.unpack_from(buf, pos)
            if n > self.max_frame:
                raise ValueError(f"frame of {n} bytes exceeds the limit of {self.max_frame}")
            if end - pos - 4 < n:
                self._need = 4 + n
                break
            bodies.append(view[pos + 4 : pos + 4 + n])
            pos += 4 + n
        else:
            self._need = 4
        rest = buf[pos:] if pos < end else b""
        self._chunks = [rest] if rest else []
        self._have = len(rest)
        return bodies
