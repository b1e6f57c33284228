"""Issuing agent credentials: the `Issuer` (Ed25519 keys, rotation, JWKS, PEM files) and holder keys.

`Issuer.issue` signs a credential for a new agent; `Issuer.exchange` (token
exchange, RFC 8693) signs one for a sub-agent, never wider or longer-lived
than its parent's; `Issuer.jwks()` is all a verifier needs. A `HolderKey` is
an agent's own key: a token bound to it (`cnf`) is accepted only with a
fresh proof signed by it. The wire format and verification live in
`charter.tokens` (re-exported here); `docs/identity.md` describes both.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import re
import secrets
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, Self

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from charter.errors import AuthenticationError, InvalidRequestError, PolicyError, StorageError
from charter.policy import parse_duration
from charter.tokens import (
    ALGORITHM,
    PROOF_TYPE,
    TOKEN_TYPE,
    Clock,
    Credential,
    KeyRing,
    Level,
    NonceCache,
    SystemClock,
    act_claim,
    b64encode,
    covered,
    decode_unverified,
    encode_json,
    public_jwk,
    scope_tuple,
    sign,
    thumbprint,
    to_numeric,
    token_hash,
    verify_proof,
    verify_token,
)

__all__ = [
    "ALGORITHM",
    "Clock",
    "Credential",
    "HolderKey",
    "Issuer",
    "KeyRing",
    "Level",
    "SystemClock",
    "decode_unverified",
    "thumbprint",
    "verify_proof",
    "verify_token",
]

log = logging.getLogger("charter.identity")
log.addHandler(logging.NullHandler())  # a library: the application decides where records go

DEFAULT_TTL = 900.0
"""Lifetime of a credential when neither the call nor the policy's template gives one."""
RETENTION_MARGIN = 300.0
"""Seconds a rotated-out key stays in the JWKS after the last token it signed expires."""


class HolderKey:
    """An agent's own Ed25519 key: tokens bound to it (`cnf.jkt`) need a fresh proof signed with it."""

    def __init__(self, key: Ed25519PrivateKey, *, clock: Clock | None = None) -> None:
        self._key = key
        self._clock = clock or SystemClock()
        self.jkt = thumbprint(key.public_key())
        """RFC 7638 thumbprint of the public key: the token's `cnf.jkt`."""
        self._header = b64encode(
            encode_json({"alg": ALGORITHM, "typ": PROOF_TYPE, "jwk": public_jwk(key.public_key(), self.jkt)})
        )

    @classmethod
    def generate(cls, *, clock: Clock | None = None) -> Self:
        return cls(Ed25519PrivateKey.generate(), clock=clock)

    def public_jwk(self) -> dict[str, str]:
        return public_jwk(self._key.public_key(), self.jkt)

    def prove(self, token: str, *, audience: str, nonce: str | None = None) -> str:
        """A proof that the caller holds this key, for presenting `token` to `audience` now."""
        claims = {
            "aud": audience,
            "iat": to_numeric(self._clock.now()),
            "nonce": nonce or secrets.token_urlsafe(16),
            "ath": token_hash(token),
        }
        return sign(self._key, self._header, claims)


# ---------------------------------------------------------------- the issuer


class PolicyOracle(Protocol):
    """What an issuer may consult before signing: `charter.Engine.vet_delegation` fits."""

    def vet_delegation(
        self, template: str, scope: Sequence[str] | None, chain: Sequence[Level], lifetime: float | None
    ) -> float | None: ...


@dataclasses.dataclass(slots=True)
class _Key:
    public: Ed25519PublicKey
    kid: str
    private: Ed25519PrivateKey | None = None
    issued_until: float | None = None
    """The latest `exp` signed with this key (None: nothing yet)."""
    valid_until: float | None = None
    """For a rotated-out key: leaves the JWKS after this."""


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    """An exchange the issuer refused, kept for audit in `Issuer.refusals`."""

    at: float
    reason: str
    parent: str | None
    template: str
    scope: tuple[str, ...] | None
    message: str


class Issuer:
    """Signs agent credentials with an Ed25519 key; `jwks()` is all a verifier needs.

    Build one with `Issuer.generate(issuer="...")` or `Issuer.from_pem(path)`.
    `policy=engine` lets it refuse, at signing time, credentials the engine
    would refuse (unknown template, scope beyond the template, too deep, too long).
    """

    def __init__(
        self,
        key: Ed25519PrivateKey,
        *,
        issuer: str = "charter",
        clock: Clock | None = None,
        default_ttl: float = DEFAULT_TTL,
        max_depth: int = 32,
        policy: PolicyOracle | None = None,
    ) -> None:
        if not isinstance(issuer, str) or not issuer or "\n" in issuer:
            raise InvalidRequestError("an issuer name is a non-empty single-line string")
        self.name = issuer
        self.clock: Clock = clock or SystemClock()
        self.default_ttl = float(default_ttl)
        self.max_depth = max_depth
        self.policy = policy
        self.refusals: collections.deque[Refusal] = collections.deque(maxlen=1000)
        self._retired: list[_Key] = []
        self._minted: collections.OrderedDict[str, tuple[str, dict[str, Any]]] | None = None
        self._minted_capacity = 0
        self._nonces = NonceCache()
        self._lock = threading.Lock()
        self._install(key)

    def _install(self, key: Ed25519PrivateKey) -> None:
        """Sign with `key` from now on (its header, with its kid, encoded once)."""
        public = key.public_key()
        kid = thumbprint(public)
        self._current = _Key(public, kid, key)
        self._header = b64encode(encode_json({"alg": ALGORITHM, "kid": kid, "typ": TOKEN_TYPE}))

    @classmethod
    def generate(cls, issuer: str = "charter", **options: Any) -> Self:
        """A new issuer with a fresh Ed25519 key (`options`: clock, default_ttl, max_depth, policy)."""
        return cls(Ed25519PrivateKey.generate(), issuer=issuer, **options)

    @property
    def kid(self) -> str:
        """The id of the key new tokens are signed with."""
        return self._current.kid

    # -- keys

    def rotate(self) -> str:
        """Sign with a new key from now on; the old one stays in `jwks()` until its tokens expire.

        Returns the new kid.
        """
        with self._lock:
            old = self._current
            now = self.clock.now()
            if old.issued_until is not None and old.issued_until > now:
                until = old.issued_until + RETENTION_MARGIN
                self._retired.append(_Key(old.public, old.kid, None, old.issued_until, until))
            self._install(Ed25519PrivateKey.generate())
            return self.kid

    def _live_keys(self) -> Iterator[_Key]:
        now = self.clock.now()
        self._retired = [k for k in self._retired if k.valid_until is not None and k.valid_until > now]
        yield self._current
        yield from self._retired

    def jwks(self) -> dict[str, Any]:
        """The public keys (current and rotated-out but still needed) as a JWKS document.

        `issuer` (an extra member, allowed by RFC 7517) names the issuer, so
        `engine.trust(jwks)` knows which `iss` the keys sign for.
        """
        return {"issuer": self.name, "keys": [public_jwk(k.public, k.kid) for k in self._live_keys()]}

    def keyring(self) -> KeyRing:
        """The issuer's live public keys as a `KeyRing` (what `verify` checks against)."""
        ring = KeyRing()
        ring.set_issuer(self.name, {k.kid: k.public for k in self._live_keys()})
        return ring

    # -- files

    def save_pem(self, path: str | os.PathLike[str], *, password: bytes | None = None) -> None:
        """Write the signing key (and rotated-out public keys) to a PEM file readable by its owner only.

        The file is written beside its final name with mode 0600 and renamed
        into place, so a crash never leaves a half-written key.
        """
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
        )
        assert self._current.private is not None
        lines = [
            "# Charter issuer key: keep this file secret (mode 0600).",
            f"issuer: {self.name}",
            f"issued-until: {self._current.issued_until or 0}",
            self._current.private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
            ).decode("ascii"),
        ]
        for k in self._live_keys():
            if k is not self._current:
                lines.append(f"retired-until: {k.valid_until}")
                lines.append(
                    k.public.public_bytes(
                        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                    ).decode("ascii")
                )
        _write_private(Path(path), "\n".join(line.rstrip("\n") for line in lines) + "\n")

    @classmethod
    def from_pem(cls, path: str | os.PathLike[str], *, password: bytes | None = None, **options: Any) -> Self:
        """Load an issuer saved by `save_pem` (or any PKCS#8 Ed25519 private key PEM).

        Refuses a file that group or others may read. `options` as for
        `generate`; `issuer=` overrides the name stored in the file.
        """
        p = Path(path)
        try:
            mode = p.stat().st_mode & 0o777
            text = p.read_text("ascii")
        except (OSError, UnicodeDecodeError) as err:
            raise StorageError(f"cannot read key file `{p}`: {err}") from None
        if mode & 0o077:
            raise StorageError(
                f"key file `{p}` is accessible to group or others (mode {mode:04o}); chmod 600 it"
            )
        meta, blocks = _pem_blocks(text)
        private = [b for label, b, _ in blocks if label.endswith("PRIVATE KEY")]
        if len(private) != 1:
            raise StorageError(f"key file `{p}` must hold exactly one private key")
        try:
            key = serialization.load_pem_private_key(private[0].encode("ascii"), password)
        except (ValueError, TypeError) as err:
            raise StorageError(f"key file `{p}`: {err}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise StorageError(f"key file `{p}` does not hold an Ed25519 key")
        options.setdefault("issuer", meta.get("issuer", "charter"))
        issuer = cls(key, **options)
        try:
            issued = float(meta.get("issued-until", "0"))
            issuer._current.issued_until = issued or None
            for label, block, attrs in blocks:
                if label == "PUBLIC KEY":
                    public = serialization.load_pem_public_key(block.encode("ascii"))
                    if not isinstance(public, Ed25519PublicKey):
                        raise ValueError("a retired key is not Ed25519")
                    until = float(attrs.get("retired-until", "0"))
                    issuer._retired.append(_Key(public, thumbprint(public), None, until, until))
        except ValueError as err:
            raise StorageError(f"key file `{p}`: {err}") from None
        return issuer

    # -- signing

    def _vetted(
        self, template: str, ttl: float | str | None, chain: Sequence[Level], scope: Any
    ) -> tuple[float, tuple[str, ...] | None]:
        """The lifetime and scope to sign, after the policy (if the issuer has one) agreed."""
        try:
            seconds = None if ttl is None else parse_duration(ttl, "ttl")
            scope_t = scope_tuple(scope)
        except (PolicyError, ValueError) as err:
            raise InvalidRequestError(str(err)) from None
        if self.policy is not None:
            default = self.policy.vet_delegation(template, scope_t, chain, seconds)
            if seconds is None and default is not None:
                seconds = default
        return self.default_ttl if seconds is None else seconds, scope_t

    def _mint(
        self,
        *,
        now: float,
        exp: float,
        template: str,
        scope: tuple[str, ...] | None,
        depth: int,
        act: dict[str, Any] | None,
        audience: str | Sequence[str] | None,
        agent_id: str | None,
        holder: HolderKey | Ed25519PublicKey | str | None,
    ) -> str:
        random = b64encode(os.urandom(28))  # 224 bits: 96 for the agent id, 128 for the jti
        issued = to_numeric(now)
        claims: dict[str, Any] = {
            "iss": self.name,
            "sub": agent_id or "agt_" + random[:16],
            "iat": issued,
            "nbf": issued,
            "exp": to_numeric(exp),
            "jti": random[16:],
            "tmpl": template,
            "dep": depth,
        }
        if audience is not None:
            claims["aud"] = audience if isinstance(audience, str) else list(audience)
        if scope is not None:
            claims["scope"] = " ".join(scope)
        if act is not None:
            claims["act"] = act
        if holder is not None:
            claims["cnf"] = {"jkt": _jkt_of(holder)}
        with self._lock:
            key = self._current
            if key.issued_until is None or claims["exp"] > key.issued_until:
                key.issued_until = float(claims["exp"])
            assert key.private is not None
            token = sign(key.private, self._header, claims)
            minted = self._minted
            if minted is not None:
                minted[token] = (key.kid, claims)
                if len(minted) > self._minted_capacity:
                    minted.popitem(last=False)  # the oldest
            return token

    def remember_minted(self, capacity: int = 4096) -> None:
        """Keep the claims of the last `capacity` tokens signed, for `take_minted`.

        `engine.trust(issuer)` turns this on: an engine in the same process as
        its issuer then admits a token it watched being signed without
        verifying its signature again (every other check still runs).
        Trusting the issuer object already means trusting whatever it signs.
        """
        with self._lock:
            self._minted_capacity = max(0, capacity)
            if self._minted is None:
                self._minted = collections.OrderedDict()

    def take_minted(self, token: str) -> tuple[str, dict[str, Any]] | None:
        """`(kid, claims)` of a token this issuer signed recently, forgotten once taken; else None."""
        minted = self._minted
        return None if minted is None else minted.pop(token, None)

    def issue(
        self,
        template: str,
        *,
        on_behalf_of: str | None = None,
        scope: Sequence[str] | None = None,
        ttl: float | str | None = None,
        audience: str | Sequence[str] | None = None,
        agent_id: str | None = None,
        holder: HolderKey | Ed25519PublicKey | str | None = None,
    ) -> str:
        """A credential for a new agent of `template` acting for principal `on_behalf_of` (or nobody).

        `scope`: action names/patterns the agent is limited to (default: its
        roles'); `ttl`: seconds or `"15m"` (default: the template's if the
        issuer has a policy, else `default_ttl`); `holder`: bind the token to
        the agent's own key (proof of possession); `agent_id`: the `sub`
        (default: a fresh random id).
        """
        chain = (Level(on_behalf_of),) if on_behalf_of is not None else ()
        lifetime, scope_t = self._vetted(template, ttl, chain, scope)
        now = self.clock.now()
        act = {"sub": on_behalf_of} if on_behalf_of is not None else None
        return self._mint(
            now=now,
            exp=now + lifetime,
            template=template,
            scope=scope_t,
            depth=1,
            act=act,
            audience=audience,
            agent_id=agent_id,
            holder=holder,
        )

    def verify(self, token: str, *, proof: str | None = None) -> Credential:
        """Verify a token signed by this issuer (current or rotated-out key), ignoring its audience.

        A token bound to a holder key needs `proof` (audience: this issuer's
        name), checked for freshness and replay.
        """
        now = self.clock.now()
        cred = verify_token(token, self.keyring(), now=now, check_audience=False)
        if cred.jkt is not None:
            if proof is None:
                raise AuthenticationError("bad_proof", "this token is bound to a key: a proof is required")
            window = 60.0
            nonce, iat = verify_proof(proof, token, jkt=cred.jkt, audience=self.name, now=now, window=window)
            self._nonces.remember(cred.jkt, nonce, iat + window, now)
        return cred

    def exchange(
        self,
        parent_token: str,
        *,
        template: str,
        scope: Sequence[str] | None = None,
        ttl: float | str | None = None,
        audience: str | Sequence[str] | None = None,
        agent_id: str | None = None,
        holder: HolderKey | Ed25519PublicKey | str | None = None,
        proof: str | None = None,
    ) -> str:
        """Token exchange (RFC 8693): a credential for a sub-agent of the parent token's agent.

        The child's scope must lie within the parent's (default: the
        parent's), it never outlives the parent, and its depth is bounded;
        any widening is refused with `scope_escalation` and recorded in
        `refusals` and the `charter.identity` log.
        """
        parent = self.verify(parent_token, proof=proof)
        try:
            child_scope = parent.scope if scope is None else scope_tuple(scope)
        except ValueError as err:
            raise InvalidRequestError(str(err)) from None
        chain = (parent.level(), *parent.chain)
        try:
            if parent.depth + 1 > self.max_depth:
                raise AuthenticationError("too_deep", f"depth {parent.depth + 1} exceeds {self.max_depth}")
            if child_scope is not None and parent.scope is not None:
                wider = [s for s in child_scope if not covered(s, parent.scope)]
                if wider:
                    raise AuthenticationError(
                        "scope_escalation", f"{wider} not within the parent's scope {list(parent.scope)}"
                    )
            lifetime, child_scope = self._vetted(template, ttl, chain, child_scope)
        except AuthenticationError as err:
            self._refused(err, parent.subject, template, child_scope)
            raise
        now = self.clock.now()
        act = act_claim(chain)
        return self._mint(
            now=now,
            exp=min(now + lifetime, parent.expires_at),
            template=template,
            scope=child_scope,
            depth=parent.depth + 1,
            act=act,
            audience=audience if audience is not None else (parent.audience or None),
            agent_id=agent_id,
            holder=holder,
        )

    def _refused(self, err: AuthenticationError, parent: str, template: str, scope: Any) -> None:
        self.refusals.append(Refusal(self.clock.now(), err.reason, parent, template, scope, err.message))
        log.warning("exchange refused for %s (template %s): %s", parent, template, err)


def _jkt_of(holder: HolderKey | Ed25519PublicKey | str) -> str:
    if isinstance(holder, HolderKey):
        return holder.jkt
    if isinstance(holder, Ed25519PublicKey):
        return thumbprint(holder)
    if isinstance(holder, str) and holder:
        return holder
    raise InvalidRequestError("holder is a HolderKey, an Ed25519 public key or a JWK thumbprint")


_PEM = re.compile(r"-----BEGIN ([A-Z ]+)-----\n.*?\n-----END \1-----", re.DOTALL)


def _pem_blocks(text: str) -> tuple[dict[str, str], list[tuple[str, str, dict[str, str]]]]:
    """`key: value` lines before the first block, and each block with the lines just before it."""
    meta: dict[str, str] = {}
    blocks: list[tuple[str, str, dict[str, str]]] = []
    pos = 0
    for m in _PEM.finditer(text):
        attrs = {}
        for line in text[pos : m.start()].splitlines():
            name, sep, value = line.partition(":")
            if sep and not line.startswith("#"):
                attrs[name.strip()] = value.strip()
        if not blocks:
            meta = attrs
        blocks.append((m[1], m[0] + "\n", attrs))
        pos = m.end()
    return meta, blocks


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, text.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write key file `{path}`: {err.strerror or err}") from None
