"""The engine side of credentials: which issuers it trusts, and `authenticate`.

`IdentityMixin` is mixed into `charter.Engine`. `authenticate(token)`
verifies a credential (signature, key, lifetime, audience, revocation, and
that its scope and delegation chain agree with the policy) and registers the
agent it names (authn_registry.py). A verified token is cached, so
presenting it again costs a dict lookup and two comparisons, not a
signature check. Revocation and the calls that retire agents are in
authn_lifecycle.py; what the policy allows a chain, in authn_policy.py.

Everything that can go wrong raises `charter.AuthenticationError` with a
`reason` (see `REFUSALS`); an unexpected exception inside verification is a
refusal too (`internal_error`), never an admission.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final

import msgspec

from charter import _core
from charter.authn_lifecycle import LifecycleMixin
from charter.authn_registry import RegistrationMixin
from charter.authn_state import UNSET
from charter.errors import AuthenticationError, InvalidRequestError
from charter.identity import Issuer
from charter.revocations import Compaction, RevocationLog
from charter.tokens import (
    Clock,
    Credential,
    Level,
    admit_claims,
    check_audience_of,
    check_times,
    decode_claims,
    verify_proof,
    verify_token,
)

__all__ = ["REFUSALS", "IdentityMixin"]

REFUSALS: Final = (
    "malformed",  # not a compact JWS, bad encoding, claims missing or of the wrong type
    "algorithm_not_allowed",  # `alg` other than EdDSA: none, HS256, ES256...
    "unknown_key",  # no trusted key with that `kid`
    "bad_signature",  # the signature does not verify
    "wrong_issuer",  # the key does not sign for the token's `iss`
    "expired",  # `exp` (plus leeway) is past
    "not_yet_valid",  # `nbf` or `iat` in the future (beyond leeway)
    "wrong_audience",  # `aud` does not name this verifier
    "revoked",  # the credential, its agent, a delegator or the principal was revoked
    "suspended",  # its agent, a delegator or the principal is suspended (until resumed)
    "unknown_template",  # a template on the chain is not in the policy
    "scope_escalation",  # scope beyond the template's actions or the delegator's scope
    "too_deep",  # more agents on the chain than a template's max_delegation_depth
    "ttl_exceeded",  # a lifetime longer than the template's max_ttl
    "unknown_principal",  # the principal at the root is not known to the engine
    "chain_mismatch",  # the registry holds that agent id with another template/delegator/scope
    "bad_proof",  # proof of possession missing, invalid, stale, for another token or audience
    "replayed_proof",  # a proof's nonce was already used
    "internal_error",  # verification failed unexpectedly: refused, never admitted
)
"""Every `AuthenticationError.reason` the engine raises."""

_WIDENING = frozenset({"scope_escalation", "too_deep", "ttl_exceeded"})
"""Refusals that mean someone tried to widen a delegation: logged (`charter.authn`) as well as raised."""

log = logging.getLogger("charter.authn")
log.addHandler(logging.NullHandler())


class IdentityMixin(LifecycleMixin, RegistrationMixin):
    """Credential verification for `charter.Engine`: `trust`, `authenticate`, `revoke`.

    Settings (`configure_identity`): `audience` (this verifier's name; tokens
    naming another audience are refused), `leeway` (seconds of clock skew
    tolerated on `exp`/`nbf`/`iat`, default 5), `revocations` (path of the
    revocation log, loaded at once), `proof_window` (how old a proof of
    possession may be, default 60 s), `cache_size`, `clock`, `compaction`
    (when the revocation log is compacted). The log's own calls
    (`sync_revocations`, `compact_revocations`) are in authn_log.py.
    """

    # ------------------------------------------------------------ configuration

    def configure_identity(
        self,
        *,
        audience: str | Collection[str] | None = UNSET,
        leeway: float = UNSET,
        revocations: str | os.PathLike[str] = UNSET,
        proof_window: float = UNSET,
        cache_size: int = UNSET,
        clock: Clock = UNSET,
        compaction: Compaction | None = UNSET,
    ) -> None:
        """Set how credentials are verified; arguments not given keep their value.

        `revocations` is the path of the revocation log: it is read now (a
        record that cannot be read raises `StorageError`: better not to start
        than to forget a revocation), and every `revoke` appends to it.
        Revocations made before it was configured stay in force, in memory,
        and agents registered before that the log revokes or suspends are
        retired or suspended now (authn_log.py). `compaction` says when the
        log file is compacted (`charter.revocations.Compaction`; default:
        above 1 MiB, dropping only what is dead whatever the policy; None:
        only on `compact_revocations`).
        """
        with self._id_lock:
            if audience is not UNSET:
                self._id_audience = (
                    None
                    if audience is None
                    else frozenset([audience] if isinstance(audience, str) else audience)
                )
            if leeway is not UNSET:
                if not (isinstance(leeway, int | float) and 0 <= leeway <= 600):
                    raise InvalidRequestError("leeway is between 0 and 600 seconds")
                self._id_leeway = float(leeway)
            if proof_window is not UNSET:
                if not (isinstance(proof_window, int | float) and 0 < proof_window <= 3600):
                    raise InvalidRequestError("proof_window is between 0 and 3600 seconds")
                self._id_proof_window = float(proof_window)
            if cache_size is not UNSET:
                self._id_cache_size = max(0, int(cache_size))
            if clock is not UNSET:
                self._id_clock = clock
                self._id_now = clock.now
            if revocations is not UNSET:
                self._attach_revocations(revocations, Compaction() if compaction is UNSET else compaction)
            elif compaction is not UNSET:
                self._id_revocations.set_compaction(compaction)
            self._id_cache.clear()
            self._invalidate()
            self._id_active = True

    @property
    def revocations(self) -> RevocationLog:
        """The revocation log in use (in memory unless `configure_identity(revocations=path)`)."""
        return self._id_revocations

    def trust(self, jwks: Mapping[str, Any] | Issuer, *, issuer: str | None = None) -> list[str]:
        """Accept tokens signed by these keys for `issuer`; returns the trusted kids.

        `jwks` is a JWKS document (as `Issuer.jwks()` exports: its `issuer`
        member names the issuer unless `issuer=` does) or an `Issuer` in this
        process, whose later rotations are then followed without another call
        and whose tokens are admitted without a second signature check (the
        engine watched them being signed; see `Issuer.remember_minted`).
        Calling it again for the same issuer replaces that issuer's keys: a
        key dropped from the JWKS stops verifying, cached tokens included.
        """
        with self._id_lock:
            if isinstance(jwks, Issuer):
                name = issuer or jwks.name
                self._id_issuers[name] = jwks
                jwks.remember_minted()
                kids = self._load_keys(jwks.jwks(), name)
            else:
                named = issuer or (jwks.get("issuer") if isinstance(jwks, Mapping) else None)
                if not isinstance(named, str) or not named:
                    raise InvalidRequestError(
                        "name the issuer: trust(jwks, issuer=...) or an `issuer` member"
                    )
                self._id_issuers.pop(named, None)
                kids = self._load_keys(jwks, named)
            self._invalidate()
            self._id_active = True
            return kids

    def trusted_keys(self, issuer: str | None = None) -> list[str]:
        """The kids this engine accepts (for `issuer`, or all)."""
        return self._id_keys.kids(issuer)

    # ------------------------------------------------------------ authenticate

    def authenticate(
        self, token: str, proof: str | None = None, *, audience: str | Collection[str] | None = None
    ) -> _core.Agent:
        """Verify a credential and return its agent, registered (or refreshed) in the registry.

        `proof`: the proof of possession a key-bound token (`cnf`) requires.
        `audience`: who this verifier is, overriding `configure_identity`.
        Raises `charter.AuthenticationError` (its `reason` is one of `REFUSALS`).
        """
        try:
            hit = self._id_cache.get(token)
            if (
                hit is not None
                and proof is None
                and audience is None
                and hit[2] == self._id_epoch
                and self._id_now() < hit[1]
            ):
                return hit[0]
        except Exception:
            pass
        return self._authenticate(token, proof, audience)

    def _authenticate(self, token: Any, proof: Any, audience: Any) -> _core.Agent:
        try:
            return self._admit(token, proof, audience)
        except AuthenticationError as err:
            if err.reason in _WIDENING:
                log.warning("credential refused (%s): %s", err.reason, err.message)
            raise
        except Exception as err:  # fail closed: whatever broke, nothing is admitted
            log.exception("credential verification failed; refused")
            raise AuthenticationError("internal_error", f"{type(err).__name__}: {err}") from err

    def _admit(self, token: Any, proof: Any, audience: Any) -> _core.Agent:
        now = self._id_now()
        leeway = self._id_leeway
        epoch = self._id_epoch
        hit = self._id_cache.get(token) if isinstance(token, str) else None
        if hit is not None:
            cred = hit[3]  # the signature was checked; everything else is checked again
            found = self._id_keys.get(cred.kid)
            if found is None:
                raise AuthenticationError("unknown_key", f"key `{cred.kid}` is no longer trusted")
            if cred.issuer not in found[1]:
                raise AuthenticationError(
                    "wrong_issuer", f"key `{cred.kid}` does not sign for `{cred.issuer}`"
                )
            check_times(cred, now, leeway)
        else:
            cred = self._verify(token, now)
        mine = self._id_audience if audience is None else audience
        if mine is not None or cred.audience:
            check_audience_of(cred.audience, mine)
        if cred.jkt is not None:
            if proof is None:
                raise AuthenticationError("bad_proof", "this token is bound to a key: a proof is required")
            window = self._id_proof_window
            nonce, iat = verify_proof(
                proof, cred.token, jkt=cred.jkt, audience=mine, now=now, window=window, leeway=leeway
            )
            self._id_nonces.remember(cred.jkt, nonce, iat + window + 2 * leeway, now)
        self._check_revoked(cred)
        if self._id_revocations.suspended:
            self._check_suspended(cred)
        view = self._policy_view()
        subject = cred.level()
        view.vet([subject, *cred.chain], cred.shape)
        view.check_lifetime(cred.template, cred.expires_at - cred.issued_at, leeway)
        with self._id_lock:
            agent = self._register(cred, subject, view, now)
        if self._id_cache_size:
            if len(self._id_cache) >= self._id_cache_size:
                self._prune_cache(now)
            until = cred.expires_at + leeway
            if agent.expires_at is not None:
                until = min(until, agent.expires_at)
            # The fast path serves only what it would check the same way: not a key-bound token
            # (each use needs a proof), not one admitted for an audience given to this call only.
            fast = cred.jkt is None and audience is None
            self._id_cache[cred.token] = (agent, until, epoch if fast else -1, cred)
        return agent

    def _verify(self, token: Any, now: float) -> Credential:
        leeway = self._id_leeway
        if self._id_issuers and isinstance(token, str):
            for iss in self._id_issuers.values():
                minted = iss.take_minted(token)
                if minted is not None:  # watched being signed in this process: no signature to check
                    if minted[0] not in self._id_keys:
                        self._follow_issuers()
                    claims = decode_claims(minted[1])
                    return admit_claims(token, minted[0], claims, self._id_keys, now=now, leeway=leeway)
        try:
            return verify_token(token, self._id_keys, now=now, leeway=leeway, check_audience=False)
        except AuthenticationError as err:
            if err.reason != "unknown_key" or not self._id_issuers:
                raise
        self._follow_issuers()  # an in-process issuer may have rotated since; then try once more
        return verify_token(token, self._id_keys, now=now, leeway=leeway, check_audience=False)

    def _follow_issuers(self) -> None:
        with self._id_lock:
            for name, iss in self._id_issuers.items():
                if iss.kid not in self._id_keys:  # it rotated since we last looked
                    self._load_keys(iss.jwks(), name)

    def _load_keys(self, jwks: Mapping[str, Any], issuer: str) -> list[str]:
        """Trust `jwks` for `issuer`; a change of its key set is an audit event (`key_rotation`)."""
        before = set(self._id_keys.kids(issuer))
        kids = self._id_keys.load_jwks(jwks, issuer)
        if set(kids) != before:
            event = {
                "issuer": issuer,
                "added": sorted(set(kids) - before),
                "removed": sorted(before - set(kids)),
            }
            core: _core.Engine = self
            core._audit_event(
                "key_rotation" if before else "keys_trusted", msgspec.json.encode(event).decode()
            )
        return kids

    def _check_revoked(self, cred: Credential) -> None:
        log = self._id_revocations
        if cred.jti in log.jtis:
            raise AuthenticationError("revoked", "this credential was revoked")
        if cred.subject in log.agents:
            raise AuthenticationError("revoked", f"agent `{cred.subject}` was revoked")
        for lvl in cred.chain:
            if lvl.sub in log.agents:
                raise AuthenticationError("revoked", f"delegator `{lvl.sub}` was revoked")
        principal = cred.principal
        if principal is not None and principal in log.principals:
            cutoff = log.principals[principal] + self._id_leeway
            issued = [cred.issued_at, *(lvl.issued_at for lvl in cred.chain if lvl.issued_at is not None)]
            if min(issued) <= cutoff:
                raise AuthenticationError("revoked", f"credentials of `{principal}` were revoked")

    def _check_suspended(self, cred: Credential) -> None:
        suspended = self._id_revocations.suspended
        for ident in (cred.subject, *(lvl.sub for lvl in cred.chain)):
            if ident in suspended:
                raise AuthenticationError("suspended", f"`{ident}` is suspended: {suspended[ident]}")

    def _prune_cache(self, now: float) -> None:
        epoch = self._id_epoch
        cache = {t: e for t, e in self._id_cache.items() if e[1] > now and e[2] in (epoch, -1)}
        if len(cache) >= self._id_cache_size * 3 // 4:
            keep = list(cache)[len(cache) // 2 :]  # the newer half, by insertion order
            cache = {t: cache[t] for t in keep}
        self._id_cache = cache

    # ------------------------------------------------------------ issuer support

    def vet_delegation(
        self, template: str, scope: Sequence[str] | None, chain: Sequence[Level], lifetime: float | None
    ) -> float | None:
        """Refuse (`AuthenticationError`) a credential this engine would refuse; returns the template's ttl.

        For `Issuer(policy=engine)`: checked before signing, so an issuer
        never mints a token for an unknown template, beyond the template's
        actions, deeper than allowed or longer than its `max_ttl`.
        """
        view = self._policy_view()
        subject = Level("(new agent)", template, None if scope is None else tuple(scope))
        view.vet([subject, *chain])
        if lifetime is not None:
            view.check_lifetime(template, lifetime)
        return view.templates[template].ttl
