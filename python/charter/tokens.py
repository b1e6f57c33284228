"""The credential wire format and its verification with public keys alone.

A credential is a compact JWS (RFC 7515/7519) signed with Ed25519
(`alg=EdDSA`, RFC 8037). This module does the JOSE framing (strict
base64url, JSON, the header rules), parses and types the claims, and
verifies tokens and proofs of possession against keys looked up by `kid`.
Algorithm confusion lives in the framing, so the rule is simple: only
`EdDSA` is ever accepted, whatever the header says, and only with a key the
verifier was given. The signatures themselves are the `cryptography`
package's. `charter.identity` issues credentials; `docs/identity.md`
describes the format.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import math
import re
import secrets
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Annotated, Any, Protocol

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from charter.errors import AuthenticationError, InvalidRequestError

__all__ = [
    "ALGORITHM",
    "PROOF_TYPE",
    "TOKEN_TYPE",
    "Claims",
    "Clock",
    "Credential",
    "KeyRing",
    "Level",
    "NonceCache",
    "SystemClock",
    "decode_unverified",
    "thumbprint",
    "verify_proof",
    "verify_token",
]

ALGORITHM = "EdDSA"
"""The only JWS algorithm Charter signs with or accepts."""
TOKEN_TYPE = "JWT"
PROOF_TYPE = "charter-pop+jwt"
"""`typ` of a proof-of-possession JWS, so a proof can never pass for a token or the reverse."""
MAX_TOKEN_BYTES = 16_384
"""Longer strings are refused before any decoding."""
MAX_CHAIN = 33
"""Levels in an `act` chain: 32 agents (the engine's deepest) and their principal."""

_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
_SCOPE_ITEM = re.compile(r"\*|[A-Za-z0-9_.-]+:(?:\*|[A-Za-z0-9_.-]+)")


class Clock(Protocol):
    """What the identity layer reads the time from: `charter.ManualClock` fits, so do tests' fakes."""

    def now(self) -> float:
        """Unix seconds."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> float:
        return time.time()


# ---------------------------------------------------------------- JOSE framing


_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


def b64encode(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE).rstrip(b"=").decode("ascii")


def b64decode(segment: str) -> bytes:
    """Strict base64url: alphabet, no padding, and canonical (re-encodes to the same text).

    Canonical matters: otherwise the unused low bits of the last character
    give one signature many spellings, i.e. many distinct tokens.
    """
    if len(segment) % 4 == 1 or _SEGMENT.fullmatch(segment) is None:
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if b64encode(data) != segment:
        raise ValueError("non-canonical base64url")
    return data


def encode_json(value: Any) -> bytes:
    """Compact JSON, as signed."""
    return msgspec.json.encode(value)


def thumbprint(key: Ed25519PublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256) of an Ed25519 public key: the key's `kid` and `jkt`."""
    x = b64encode(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    canonical = '{"crv":"Ed25519","kty":"OKP","x":"' + x + '"}'
    return b64encode(hashlib.sha256(canonical.encode("ascii")).digest())


def public_jwk(key: Ed25519PublicKey, kid: str | None = None) -> dict[str, str]:
    """The public JWK (RFC 8037) of an Ed25519 key."""
    x = b64encode(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": x,
        "kid": kid or thumbprint(key),
        "alg": ALGORITHM,
        "use": "sig",
    }


def key_from_jwk(jwk: Mapping[str, Any]) -> Ed25519PublicKey:
    """An Ed25519 public key from its JWK; `ValueError` for anything else (or a private key)."""
    if not isinstance(jwk, Mapping):
        raise ValueError("a JWK is an object")
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise ValueError("not an Ed25519 key (`kty` must be `OKP`, `crv` `Ed25519`)")
    if "d" in jwk:
        raise ValueError("a private key: publish and trust public keys only")
    if jwk.get("alg", ALGORITHM) != ALGORITHM or jwk.get("use", "sig") != "sig":
        raise ValueError(f"key is not for `{ALGORITHM}` signatures")
    x = jwk.get("x")
    raw = b64decode(x) if isinstance(x, str) else b""
    if len(raw) != 32:
        raise ValueError("`x` must be a 32-byte base64url Ed25519 public key")
    return Ed25519PublicKey.from_public_bytes(raw)


def sign(key: Ed25519PrivateKey, header_b64: str, claims: Mapping[str, Any]) -> str:
    signing_input = header_b64 + "." + b64encode(encode_json(claims))
    return signing_input + "." + b64encode(key.sign(signing_input.encode("ascii")))


def _split(token: object) -> tuple[dict[str, Any], bytes, bytes, bytes]:
    """(header, payload JSON, signing input, signature) of a compact JWS; `malformed` otherwise."""
    if not isinstance(token, str):
        raise AuthenticationError("malformed", f"a token is a string, got {type(token).__name__}")
    if len(token) > MAX_TOKEN_BYTES:
        raise AuthenticationError("malformed", f"longer than {MAX_TOKEN_BYTES} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthenticationError("malformed", "not a compact JWS (three dot-separated parts)")
    try:
        header = msgspec.json.decode(b64decode(parts[0]))
        payload = b64decode(parts[1])
        signature = b64decode(parts[2])
    except (ValueError, msgspec.DecodeError) as err:
        raise AuthenticationError("malformed", f"bad encoding: {err}") from None
    if not isinstance(header, dict):
        raise AuthenticationError("malformed", "the header is not a JSON object")
    return header, payload, f"{parts[0]}.{parts[1]}".encode("ascii"), signature


def _check_header(header: Mapping[str, Any], typ: str) -> None:
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise AuthenticationError("malformed", "the header has no `alg`")
    if alg != ALGORITHM:
        # `none`, HS256 keyed with the public key, ES256...: never, whatever the key.
        raise AuthenticationError("algorithm_not_allowed", f"`{alg[:32]}` (only `{ALGORITHM}` is accepted)")
    if "crit" in header:
        raise AuthenticationError("malformed", "critical header extensions are not supported")
    found = header.get("typ", typ)
    if not isinstance(found, str) or found.lower() != typ.lower():
        raise AuthenticationError("malformed", f"`typ` must be `{typ}`")


def _verify_signature(key: Ed25519PublicKey, signature: bytes, signing_input: bytes) -> None:
    try:
        key.verify(signature, signing_input)
    except InvalidSignature:
        raise AuthenticationError("bad_signature", "the signature does not verify") from None


def decode_unverified(token: str) -> dict[str, Any]:
    """Header and claims of a token, decoded WITHOUT verification (for display only)."""
    header, payload, _, _ = _split(token)
    try:
        claims = msgspec.json.decode(payload)
    except msgspec.DecodeError as err:
        raise AuthenticationError("malformed", f"the claims are not JSON: {err}") from None
    return {"header": header, "claims": claims}


# ---------------------------------------------------------------- claims


def scope_tuple(scope: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """A scope as a tuple of action names/patterns (`*`, `tool:*`, `tool:verb`), or None."""
    if scope is None:
        return None
    if isinstance(scope, str):
        return _scope_claim(scope)
    items = list(scope)
    for item in items:
        if not isinstance(item, str) or _SCOPE_ITEM.fullmatch(item) is None:
            raise ValueError(f"`{item}` is not an action name or pattern (`tool:verb`, `tool:*`, `*`)")
    return tuple(dict.fromkeys(items))


def to_numeric(t: float) -> int | float:
    """A NumericDate for a claim: whole seconds as an int, otherwise down to the millisecond.

    Down, not to nearest: an `nbf` rounded up would be in the future for a
    verifier reading the same clock.
    """
    ms = math.floor(t * 1000)
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


@functools.lru_cache(maxsize=4096)
def _scope_claim(scope: str) -> tuple[str, ...]:
    """A `scope` claim (space-separated), parsed once per distinct string."""
    return scope_tuple(scope.split()) or ()


class Level(msgspec.Struct, frozen=True):
    """One party of a delegation chain: an agent (with `template`) or the principal at the root."""

    sub: str
    template: str | None = None
    scope: tuple[str, ...] | None = None
    expires_at: float | None = None
    issued_at: float | None = None

    @property
    def is_agent(self) -> bool:
        return self.template is not None

    def claim(self) -> dict[str, Any]:
        """This level as an `act` member (without the nested `act`)."""
        out: dict[str, Any] = {"sub": self.sub}
        if self.template is not None:
            out["tmpl"] = self.template
        if self.scope is not None:
            out["scope"] = " ".join(self.scope)
        if self.expires_at is not None:
            out["exp"] = to_numeric(self.expires_at)
        if self.issued_at is not None:
            out["iat"] = to_numeric(self.issued_at)
        return out


def act_claim(chain: Sequence[Level]) -> dict[str, Any] | None:
    """The `act` claim (RFC 8693 nesting) for a chain, nearest party first."""
    act: dict[str, Any] | None = None
    for lvl in reversed(chain):
        outer = lvl.claim()
        if act is not None:
            outer["act"] = act
        act = outer
    return act


class Credential(msgspec.Struct, frozen=True):
    """The verified claims of one token."""

    token: str
    kid: str
    issuer: str
    subject: str
    template: str
    scope: tuple[str, ...] | None
    audience: tuple[str, ...]
    issued_at: float
    not_before: float | None
    expires_at: float
    jti: str
    depth: int
    jkt: str | None
    chain: tuple[Level, ...]
    """The parties it acts for, nearest first: parent agent, ..., principal."""
    shape: tuple[tuple[str | None, tuple[str, ...] | None], ...] = ()
    """(template, scope) of the subject and each party: all a policy check of the chain reads."""

    @property
    def principal(self) -> str | None:
        """The principal at the root of the chain (None for an agent acting for nobody)."""
        return self.chain[-1].sub if self.chain and not self.chain[-1].is_agent else None

    @property
    def parent(self) -> str | None:
        """The direct delegator: a parent agent's id, the principal's, or None."""
        return self.chain[0].sub if self.chain else None

    def level(self) -> Level:
        """The subject itself as a chain level."""
        return Level(self.subject, self.template, self.scope, self.expires_at, self.issued_at)


# The claims' shapes, checked by msgspec while decoding (C speed, exact types: no bool for a number).
_Text = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
_Time = Annotated[float, msgspec.Meta(ge=0, le=1e11)]


class _Act(msgspec.Struct, frozen=True):
    sub: _Text
    tmpl: _Text | None = None
    scope: str | None = None
    exp: _Time | None = None
    iat: _Time | None = None
    act: _Act | None = None


class _Cnf(msgspec.Struct, frozen=True):
    jkt: _Text


class Claims(msgspec.Struct, frozen=True):
    """A credential's claims as signed (standard names where a standard exists)."""

    iss: _Text
    sub: _Text
    iat: _Time
    exp: _Time
    jti: _Text
    tmpl: _Text
    dep: Annotated[int, msgspec.Meta(ge=1, le=MAX_CHAIN)]
    nbf: _Time | None = None
    aud: _Text | list[_Text] | None = None
    scope: str | None = None
    cnf: _Cnf | None = None
    act: _Act | None = None


_CLAIMS = msgspec.json.Decoder(Claims)


def decode_claims(payload: bytes | Mapping[str, Any]) -> Claims:
    """Typed claims from the JSON payload (or, for tokens minted in this process, the claims dict)."""
    try:
        if isinstance(payload, bytes):
            return _CLAIMS.decode(payload)
        return msgspec.convert(payload, Claims)
    except (msgspec.DecodeError, RecursionError) as err:
        raise AuthenticationError("malformed", f"claims: {str(err)[:200]}") from None


def parse_credential(token: str, kid: str, claims: Claims) -> Credential:
    """A `Credential` from decoded claims; `malformed` if they do not hang together."""
    try:
        levels: list[Level] = []
        act = claims.act
        while act is not None:
            if len(levels) >= MAX_CHAIN:
                raise ValueError(f"an `act` chain has at most {MAX_CHAIN} levels")
            if act.tmpl is None:
                if act.act is not None or act.scope is not None:
                    raise ValueError("only the root of an `act` chain may be a principal, without a scope")
            elif act.exp is None:
                raise ValueError("an agent level of `act` needs `exp`")
            scope = None if act.scope is None else _scope_claim(act.scope)
            levels.append(Level(act.sub, act.tmpl, scope, act.exp, act.iat))
            act = act.act
        agents = 1 + sum(lvl.is_agent for lvl in levels)
        if claims.dep != agents:
            raise ValueError(f"`dep` must be the number of agents on the chain ({agents})")
        aud = claims.aud
        scope = None if claims.scope is None else _scope_claim(claims.scope)
        cred = Credential(
            token=token,
            kid=kid,
            issuer=claims.iss,
            subject=claims.sub,
            template=claims.tmpl,
            scope=scope,
            audience=() if aud is None else (aud,) if isinstance(aud, str) else tuple(aud),
            issued_at=claims.iat,
            not_before=claims.nbf,
            expires_at=claims.exp,
            jti=claims.jti,
            depth=agents,
            jkt=None if claims.cnf is None else claims.cnf.jkt,
            chain=tuple(levels),
            shape=((claims.tmpl, scope), *[(lvl.template, lvl.scope) for lvl in levels]),
        )
    except ValueError as err:
        raise AuthenticationError("malformed", str(err)) from None
    # A delegate never outlives its delegator: the exchange clamps, so a token that does was not minted by it.
    bound = cred.expires_at
    for lvl in cred.chain:
        if lvl.expires_at is not None:
            if lvl.expires_at < bound:
                raise AuthenticationError("malformed", f"outlives its delegator `{lvl.sub}`")
            bound = lvl.expires_at
    return cred


# ---------------------------------------------------------------- keys and verification


class KeyRing:
    """Public keys by `kid`, each bound to the issuer names allowed to sign with it."""

    def __init__(self) -> None:
        self._keys: dict[str, tuple[Ed25519PublicKey, frozenset[str]]] = {}
        self._by_issuer: dict[str, set[str]] = {}

    def get(self, kid: str) -> tuple[Ed25519PublicKey, frozenset[str]] | None:
        return self._keys.get(kid)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def kids(self, issuer: str | None = None) -> list[str]:
        return sorted(self._keys if issuer is None else self._by_issuer.get(issuer, ()))

    def set_issuer(self, issuer: str, keys: Mapping[str, Ed25519PublicKey]) -> None:
        """Make `keys` (by kid) exactly the keys `issuer` may sign with, replacing its previous set."""
        for kid in self._by_issuer.pop(issuer, set()):
            key, issuers = self._keys.pop(kid)
            if issuers - {issuer}:
                self._keys[kid] = (key, issuers - {issuer})
        for kid, key in keys.items():
            _, issuers = self._keys.get(kid, (key, frozenset()))
            self._keys[kid] = (key, issuers | {issuer})
        self._by_issuer[issuer] = set(keys)

    def load_jwks(self, jwks: Mapping[str, Any], issuer: str) -> list[str]:
        """Trust the Ed25519 keys of a JWKS document for `issuer`; returns their kids.

        Keys of other types are skipped (they could never verify an EdDSA
        token); a private key, or a malformed Ed25519 key, is an error.
        """
        entries = jwks.get("keys") if isinstance(jwks, Mapping) else None
        if not isinstance(entries, list):
            raise InvalidRequestError("a JWKS is an object with a `keys` list")
        keys: dict[str, Ed25519PublicKey] = {}
        for i, jwk in enumerate(entries):
            if not isinstance(jwk, Mapping) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
                continue
            try:
                key = key_from_jwk(jwk)
            except ValueError as err:
                raise InvalidRequestError(f"keys[{i}]: {err}") from None
            kid = jwk.get("kid")
            keys[kid if isinstance(kid, str) and kid else thumbprint(key)] = key
        self.set_issuer(issuer, keys)
        return sorted(keys)


def verify_token(
    token: str,
    keys: KeyRing,
    *,
    now: float | None,
    leeway: float = 0.0,
    audience: str | Collection[str] | None = None,
    check_audience: bool = True,
) -> Credential:
    """Verify a token's signature, issuer, lifetime and audience with public keys only.

    `now`: the time to check `exp`/`nbf`/`iat` against (None: do not, e.g.
    to revoke an expired token). `audience`: the verifier's own name(s); a
    token naming an audience must name one of them (RFC 7519 section 4.1.3),
    and a verifier with an audience refuses tokens without one. Raises
    `AuthenticationError`.
    """
    header, payload, signing_input, signature = _split(token)
    _check_header(header, TOKEN_TYPE)
    kid = header.get("kid")
    found = keys.get(kid) if isinstance(kid, str) else None
    if found is None or not isinstance(kid, str):
        raise AuthenticationError("unknown_key", f"no trusted key `{str(kid)[:64]}`")
    _verify_signature(found[0], signature, signing_input)
    cred = admit_claims(token, kid, decode_claims(payload), keys, now=now, leeway=leeway)
    if check_audience:
        check_audience_of(cred.audience, audience)
    return cred


def admit_claims(
    token: str, kid: str, claims: Claims, keys: KeyRing, *, now: float | None, leeway: float = 0.0
) -> Credential:
    """Everything `verify_token` checks after the signature: claim types, issuer binding, lifetime."""
    found = keys.get(kid)
    if found is None:
        raise AuthenticationError("unknown_key", f"no trusted key `{kid[:64]}`")
    cred = parse_credential(token, kid, claims)
    if cred.issuer not in found[1]:
        raise AuthenticationError("wrong_issuer", f"key `{kid}` does not sign for `{cred.issuer}`")
    if now is not None:
        check_times(cred, now, leeway)
    return cred


def check_times(cred: Credential, now: float, leeway: float) -> None:
    """`expired` / `not_yet_valid` (`nbf`, or an `iat` in the future), with `leeway` seconds of skew."""
    if now >= cred.expires_at + leeway:
        raise AuthenticationError("expired", f"expired at {cred.expires_at}")
    if cred.not_before is not None and now + leeway < cred.not_before:
        raise AuthenticationError("not_yet_valid", f"not valid before {cred.not_before}")
    if now + leeway < cred.issued_at:
        raise AuthenticationError("not_yet_valid", f"issued in the future ({cred.issued_at})")


def check_audience_of(found: Sequence[str], expected: str | Collection[str] | None) -> None:
    mine = {expected} if isinstance(expected, str) else set(expected or ())
    if not found and not mine:
        return
    if not mine.intersection(found):
        raise AuthenticationError("wrong_audience", f"audience {list(found)} is not {sorted(mine)}")


# ---------------------------------------------------------------- proof of possession


def token_hash(token: str) -> str:
    """`ath`: base64url SHA-256 of the token (as in RFC 9449), tying a proof to one token."""
    return b64encode(hashlib.sha256(token.encode("ascii", "replace")).digest())


def verify_proof(
    proof: object,
    token: str,
    *,
    jkt: str,
    audience: str | Collection[str] | None,
    now: float,
    window: float,
    leeway: float = 0.0,
) -> tuple[str, float]:
    """Check a proof of possession for `token`; returns `(nonce, iat)` for the replay cache.

    The proof must be a `charter-pop+jwt` EdDSA JWS whose embedded public key
    has thumbprint `jkt`, signed by that key over `{aud, iat, nonce, ath}`,
    with `aud` the verifier's, `ath` this token's hash and `iat` within
    `window` seconds. Raises `AuthenticationError("bad_proof")`.
    """
    try:
        header, payload, signing_input, signature = _split(proof)
        _check_header(header, PROOF_TYPE)
        key = key_from_jwk(header.get("jwk"))  # type: ignore[arg-type]
    except (AuthenticationError, ValueError, TypeError) as err:
        raise AuthenticationError("bad_proof", f"not a proof of possession: {err}") from None
    if not secrets.compare_digest(thumbprint(key), jkt):
        raise AuthenticationError("bad_proof", "signed by a key other than the one the token is bound to")
    try:
        key.verify(signature, signing_input)
    except InvalidSignature:
        raise AuthenticationError("bad_proof", "the proof's signature does not verify") from None
    try:
        claims = msgspec.json.decode(payload)
        nonce, iat, ath = claims["nonce"], claims["iat"], claims["ath"]
        if not isinstance(nonce, str) or not 8 <= len(nonce) <= 256 or isinstance(iat, bool):
            raise ValueError("bad nonce")
        iat = float(iat)
    except (msgspec.DecodeError, KeyError, TypeError, ValueError):
        raise AuthenticationError("bad_proof", "the proof needs `aud`, `iat`, `nonce` and `ath`") from None
    if not isinstance(ath, str) or not secrets.compare_digest(ath, token_hash(token)):
        raise AuthenticationError("bad_proof", "the proof was made for another token")
    if audience is None:
        raise AuthenticationError("bad_proof", "the verifier has no audience to check the proof against")
    aud = claims.get("aud")
    mine = {audience} if isinstance(audience, str) else set(audience)
    if not isinstance(aud, str) or aud not in mine:
        raise AuthenticationError("bad_proof", f"the proof is for `{str(aud)[:64]}`, not {sorted(mine)}")
    if not (now - window - leeway <= iat <= now + leeway):
        raise AuthenticationError("bad_proof", f"stale or future proof (iat {iat}, window {window}s)")
    return nonce, iat


class NonceCache:
    """Nonces seen within their proofs' lifetime: a second use is a replay.

    Expired nonces are dropped whenever the table has doubled since the last
    clean-up, so the cost stays amortised O(1). At `capacity` live nonces new
    proofs are refused (`bad_proof`) rather than forgetting one too early.
    """

    def __init__(self, capacity: int = 1_000_000) -> None:
        self._seen: dict[tuple[str, str], float] = {}
        self._capacity = capacity
        self._next_cleanup = 1024
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def remember(self, jkt: str, nonce: str, until: float, now: float) -> None:
        """Record a nonce until `until`; `replayed_proof` if it is already remembered."""
        with self._lock:
            if len(self._seen) >= min(self._next_cleanup, self._capacity):
                self._seen = {k: t for k, t in self._seen.items() if t > now}
                self._next_cleanup = max(1024, 2 * len(self._seen))
            seen = self._seen.get((jkt, nonce))
            if seen is not None and seen > now:
                raise AuthenticationError("replayed_proof", "this proof's nonce was already used")
            if len(self._seen) >= self._capacity:
                raise AuthenticationError("bad_proof", "too many proofs in flight to remember their nonces")
            self._seen[jkt, nonce] = until


def covered(item: str, patterns: Collection[str]) -> bool:
    """Whether scope item `item` lies within `patterns`, by their shape alone (no action list needed)."""
    if "*" in patterns or item in patterns:
        return True
    tool = item.split(":", 1)[0]
    return f"{tool}:*" in patterns
