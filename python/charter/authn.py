"""The engine side of credentials: which issuers it trusts, `authenticate`, `revoke`.

`IdentityMixin` is mixed into `charter.Engine`. `authenticate(token)`
verifies a credential (signature, key, lifetime, audience, revocation, and
that its scope and delegation chain agree with the policy) and registers the
agent it names, lazily registering the ancestors its `act` chain describes:
after a restart the registry is rebuilt from the tokens as they arrive. A
verified token is cached, so presenting it again costs a dict lookup and two
comparisons, not a signature check.

Everything that can go wrong raises `charter.AuthenticationError` with a
`reason` (see `REFUSALS`); an unexpected exception inside verification is a
refusal too (`internal_error`), never an admission.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import msgspec

from charter import _core
from charter.errors import (
    AuthenticationError,
    InvalidRequestError,
    ProvisionError,
    UnknownSubjectError,
)
from charter.identity import Issuer
from charter.revocations import RevocationLog
from charter.tokens import (
    Clock,
    Credential,
    KeyRing,
    Level,
    NonceCache,
    SystemClock,
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

_UNSET: Any = object()
_RETIRED_STATES = frozenset({"revoked", "delegator_revoked", "principal_removed"})
_DEFAULT_DEPTH = 4

_core_agent = _core.Engine.agent
_core_deprovision = _core.Engine.deprovision
_core_provision = _core.Engine.provision
_core_refresh = _core.Engine.refresh
_core_remove_principal = _core.Engine.remove_principal
_core_resume = _core.Engine.resume
_core_suspend = _core.Engine.suspend

if TYPE_CHECKING:
    _Base = _core.Engine
else:
    _Base = object


class _Template(msgspec.Struct, frozen=True):
    actions: frozenset[str]
    ttl: float | None
    max_ttl: float | None
    max_depth: int


class PolicyView:
    """What credential checks need from the policy: each template's actions, lifetimes and depth.

    A template's actions are those some allow entry of its roles (closed
    under `inherits`) grants, on any resource or condition, minus those an
    unconditional deny (no `on`, no `when`) takes away: the most any agent of
    the template could ever do.
    """

    def __init__(self, policy_json: bytes) -> None:
        doc = msgspec.json.decode(policy_json)
        self.actions: tuple[str, ...] = tuple(doc.get("actions", ()))
        self._tools: dict[str, set[str]] = {}
        for a in self.actions:
            self._tools.setdefault(a.split(":", 1)[0], set()).add(a)
        roles: dict[str, Any] = doc.get("roles", {})
        self._vetted: dict[tuple[tuple[str | None, tuple[str, ...] | None], ...], Any] = {}
        self.templates: dict[str, _Template] = {}
        for name, t in doc.get("templates", {}).items():
            closure = _closure(roles, t.get("roles", ()))
            allowed: set[str] = set()
            denied: set[str] = set()
            for r in closure:
                for entry in roles.get(r, {}).get("allow", ()):
                    allowed |= self._entry_actions(entry)
                for entry in roles.get(r, {}).get("deny", ()):
                    # Only a deny that holds everywhere, always, takes an action off the template.
                    if isinstance(entry, str) or entry.keys() <= {"action"}:
                        denied |= self._entry_actions(entry)
            self.templates[name] = _Template(
                frozenset(allowed - denied),
                t.get("ttl"),
                t.get("max_ttl"),
                t.get("max_delegation_depth") or _DEFAULT_DEPTH,
            )

    def expand(self, pattern: str) -> set[str]:
        """The declared actions a name or pattern covers."""
        if pattern == "*":
            return set(self.actions)
        tool, _, verb = pattern.partition(":")
        if verb == "*":
            return set(self._tools.get(tool, ()))
        return {pattern} if pattern in self._tools.get(tool, ()) else set()

    def _entry_actions(self, entry: Any) -> set[str]:
        names = entry if isinstance(entry, str) else entry.get("action", ())
        out: set[str] = set()
        for n in [names] if isinstance(names, str) else names:
            out |= self.expand(n)
        return out

    def provisionable(self, scope: tuple[str, ...] | None) -> list[str] | None:
        """The scope as the engine takes it: patterns that match nothing dropped (they narrow nothing)."""
        return None if scope is None else [s for s in scope if self.expand(s)]

    def vet(self, levels: Sequence[Level], shape: tuple[Any, ...] | None = None) -> None:
        """Refuse a chain (the subject first, then its delegators) the policy would not produce.

        Templates must exist; the chain may not be deeper than any of its
        templates allows; every action a level names exactly must be granted
        by its template and every delegator's; a level's scope must lie within
        its delegators' scopes. The verdict depends only on the templates and
        scopes along the chain, so it is remembered per chain `shape` (`Credential.shape`).
        """
        key = shape if shape is not None else tuple((lvl.template, lvl.scope) for lvl in levels)
        verdict = self._vetted.get(key, _UNSET)
        if verdict is None:
            return
        if verdict is not _UNSET:
            raise AuthenticationError(*verdict)
        try:
            self._vet([lvl for lvl in levels if lvl.is_agent])
        except AuthenticationError as err:
            verdict = (err.reason, err.message)
            raise
        finally:
            if len(self._vetted) >= 65_536:
                self._vetted.clear()
            self._vetted[key] = verdict if verdict is not _UNSET else None

    def _vet(self, agents: Sequence[Level]) -> None:
        templates = []
        for lvl in agents:
            t = self.templates.get(str(lvl.template))
            if t is None:
                raise AuthenticationError("unknown_template", f"no template `{lvl.template}`")
            templates.append(t)
        bound = min((t.max_depth for t in templates), default=_DEFAULT_DEPTH)
        if len(agents) > bound:
            raise AuthenticationError("too_deep", f"depth {len(agents)} exceeds {bound}")
        granted = set(self.actions)
        within: set[str] | None = None
        for lvl, t in zip(reversed(agents), reversed(templates), strict=True):  # root first
            granted &= t.actions
            if lvl.scope is None:
                continue
            beyond = [s for s in lvl.scope if "*" not in s and s not in granted]
            if beyond:
                raise AuthenticationError(
                    "scope_escalation", f"{beyond} not granted to `{lvl.template}` along its chain"
                )
            expanded = set().union(*(self.expand(s) for s in lvl.scope))
            if within is not None and not expanded <= within:
                wider = sorted(expanded - within)
                raise AuthenticationError(
                    "scope_escalation", f"{wider} beyond the delegator's scope (`{lvl.template}`)"
                )
            within = expanded if within is None else within & expanded

    def check_lifetime(self, template: str, lifetime: float, leeway: float = 0.0) -> None:
        """`ttl_exceeded` if a credential of `template` lives longer than its `max_ttl` (plus leeway)."""
        t = self.templates.get(template)
        if t is not None and t.max_ttl is not None and lifetime > t.max_ttl + leeway:
            raise AuthenticationError(
                "ttl_exceeded", f"{lifetime:g}s exceeds the `max_ttl` ({t.max_ttl:g}s) of `{template}`"
            )


def _closure(roles: Mapping[str, Any], start: Collection[str]) -> set[str]:
    seen: set[str] = set()
    stack = list(start)
    while stack:
        r = stack.pop()
        if r not in seen:
            seen.add(r)
            stack.extend(roles.get(r, {}).get("inherits", ()))
    return seen


class IdentityMixin(_Base):
    """Credential verification for `charter.Engine`: `trust`, `authenticate`, `revoke`.

    Settings (`configure_identity`): `audience` (this verifier's name; tokens
    naming another audience are refused), `leeway` (seconds of clock skew
    tolerated on `exp`/`nbf`/`iat`, default 5), `revocations` (path of the
    revocation log, loaded at once), `proof_window` (how old a proof of
    possession may be, default 60 s), `cache_size`, `clock`.
    """

    def __init__(
        self, policy_json: bytes, clock: _core.ManualClock | None = None, *_: Any, **__: Any
    ) -> None:
        # The compiled base takes its arguments in __new__; this only sets up the identity state.
        super().__init__()
        self._id_policy_json = policy_json
        self._id_view: PolicyView | None = None
        self._id_clock: Clock = clock if clock is not None else SystemClock()
        self._id_now = self._id_clock.now
        self._id_keys = KeyRing()
        self._id_issuers: dict[str, Issuer] = {}
        self._id_cache: dict[str, tuple[_core.Agent, float, int, Credential]] = {}
        self._id_cache_size = 65_536
        self._id_epoch = 0
        self._id_active = False
        self._id_leeway = 5.0
        self._id_audience: frozenset[str] | None = None
        self._id_proof_window = 60.0
        self._id_nonces = NonceCache()
        self._id_revocations = RevocationLog()
        self._id_lock = threading.RLock()

    # ------------------------------------------------------------ configuration

    def configure_identity(
        self,
        *,
        audience: str | Collection[str] | None = _UNSET,
        leeway: float = _UNSET,
        revocations: str | os.PathLike[str] = _UNSET,
        proof_window: float = _UNSET,
        cache_size: int = _UNSET,
        clock: Clock = _UNSET,
    ) -> None:
        """Set how credentials are verified; arguments not given keep their value.

        `revocations` is the path of the revocation log: it is read now (a
        record that cannot be read raises `StorageError`: better not to start
        than to forget a revocation), and every `revoke` appends to it.
        Revocations made before it was configured stay in force, in memory.
        """
        with self._id_lock:
            if audience is not _UNSET:
                self._id_audience = (
                    None
                    if audience is None
                    else frozenset([audience] if isinstance(audience, str) else audience)
                )
            if leeway is not _UNSET:
                if not (isinstance(leeway, int | float) and 0 <= leeway <= 600):
                    raise InvalidRequestError("leeway is between 0 and 600 seconds")
                self._id_leeway = float(leeway)
            if proof_window is not _UNSET:
                if not (isinstance(proof_window, int | float) and 0 < proof_window <= 3600):
                    raise InvalidRequestError("proof_window is between 0 and 3600 seconds")
                self._id_proof_window = float(proof_window)
            if cache_size is not _UNSET:
                self._id_cache_size = max(0, int(cache_size))
            if clock is not _UNSET:
                self._id_clock = clock
                self._id_now = clock.now
            if revocations is not _UNSET:
                fresh = RevocationLog(revocations)
                old = self._id_revocations
                fresh.jtis |= old.jtis
                fresh.agents |= old.agents
                for p, at in old.principals.items():
                    fresh.principals[p] = max(at, fresh.principals.get(p, at))
                fresh.suspended = {**old.suspended, **fresh.suspended}
                self._id_revocations = fresh
                # Principals (and agents already registered) are suspended in the engine at once;
                # credentials naming any of them are refused from the log until resumed.
                for ident, why in fresh.suspended.items():
                    with contextlib.suppress(UnknownSubjectError):
                        _core_suspend(self, ident, why)
            self._id_cache.clear()
            self._id_epoch += 1
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
                kids = self._id_keys.load_jwks(jwks.jwks(), name)
            else:
                named = issuer or (jwks.get("issuer") if isinstance(jwks, Mapping) else None)
                if not isinstance(named, str) or not named:
                    raise InvalidRequestError(
                        "name the issuer: trust(jwks, issuer=...) or an `issuer` member"
                    )
                self._id_issuers.pop(named, None)
                kids = self._id_keys.load_jwks(jwks, named)
            self._id_epoch += 1
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
                    self._id_keys.load_jwks(iss.jwks(), name)

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

    def _policy_view(self) -> PolicyView:
        view = self._id_view
        if view is None:
            view = self._id_view = PolicyView(self._id_policy_json)
        return view

    def _register(self, cred: Credential, subject: Level, view: PolicyView, now: float) -> _core.Agent:
        """Make sure every agent on the chain is registered and live, root first; returns the subject."""
        parent: str | None = None
        for lvl in reversed(cred.chain):
            if lvl.template is not None:
                self._ensure(lvl, parent, view, now)
            parent = lvl.sub
        return self._ensure(subject, parent, view, now)

    def _ensure(self, lvl: Level, parent: str | None, view: PolicyView, now: float) -> _core.Agent:
        template = view.templates[str(lvl.template)]
        # A credential is good until exp + leeway; so is its agent, within the template's max_ttl
        # (a ttl, not a deadline, so float rounding cannot push it past max_ttl).
        ttl = (lvl.expires_at if lvl.expires_at is not None else math.inf) + self._id_leeway - now
        if template.max_ttl is not None:
            ttl = min(ttl, template.max_ttl)
        if ttl <= 0:
            raise AuthenticationError("expired", f"`{lvl.sub}` has expired")
        expires = now + ttl
        scope = view.provisionable(lvl.scope)
        try:
            agent: _core.Agent | None = _core_agent(self, lvl.sub)
        except UnknownSubjectError:
            agent = None
        if agent is not None:
            if agent.state in _RETIRED_STATES:
                raise AuthenticationError("revoked", f"agent `{lvl.sub}` was retired ({agent.state})")
            if agent.state == "suspended":
                raise AuthenticationError("suspended", f"agent `{lvl.sub}` is suspended")
            same_scope = (agent.scope is None) == (scope is None) and set(agent.scope or ()) == set(
                scope or ()
            )
            if agent.template != lvl.template or agent.on_behalf_of != parent or not same_scope:
                raise AuthenticationError(
                    "chain_mismatch",
                    f"agent `{lvl.sub}` is registered with another template, delegator or scope",
                )
            if agent.state == "active":
                if agent.expires_at is not None and expires > agent.expires_at:
                    agent = _core_refresh(self, agent.handle, ttl=ttl)
                return agent
            self.sweep()  # expired: free its slot, then provision it afresh below
        try:
            return _core_provision(
                self, str(lvl.template), on_behalf_of=parent, agent_id=lvl.sub, scope=scope, ttl=ttl
            )
        except UnknownSubjectError:
            raise AuthenticationError("unknown_principal", f"no principal or agent `{parent}`") from None
        except InvalidRequestError as err:
            raise AuthenticationError("malformed", str(err)) from None
        except ProvisionError as err:
            raise AuthenticationError("chain_mismatch", str(err)) from None

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

    # ------------------------------------------------------------ revocation

    def revoke(
        self,
        token: str | None = None,
        *,
        agent: str | int | _core.Agent | None = None,
        principal: str | None = None,
        jti: str | None = None,
        reason: str | None = None,
    ) -> int:
        """Revoke, for good, a credential and its agent (`token`), an agent, a principal or a `jti`.

        Revoking an agent revokes every agent acting for it (their tokens
        name it in `act`, and the registry retires them in cascade);
        revoking a principal refuses every credential issued for its agents
        until now and removes the principal (`remove_principal`). The
        revocation holds in this process at once and is appended (fsynced)
        to the revocation log before this returns. Returns how many agents
        were retired in the registry.
        """
        now = self._id_now()
        records: list[tuple[str, str]] = []
        retire: list[tuple[str, int | str]] = []  # what to retire in the registry (by handle when known)
        if token is not None:
            cred = verify_token(token, self._id_keys, now=None, check_audience=False)
            records += [("jti", cred.jti), ("agent", cred.subject)]
            retire.append(("agent", cred.subject))
        if jti is not None:
            records.append(("jti", jti))
        if agent is not None:
            records.append(("agent", self._agent_id(agent)))
            retire.append(("agent", agent.handle if isinstance(agent, _core.Agent) else agent))
        if principal is not None:
            records.append(("principal", principal))
            retire.append(("principal", principal))
        if not records:
            raise InvalidRequestError("revoke what? give a token, agent=, principal= or jti=")
        with self._id_lock:
            self._id_active = True
            self._id_epoch += 1
            self._id_revocations.add_many(records, at=now, reason=reason)
            retired = 0
            for kind, target in retire:
                try:
                    if kind == "agent":
                        retired += _core_deprovision(self, target)
                    else:
                        retired += _core_remove_principal(self, str(target))
                except UnknownSubjectError:
                    pass  # not registered here (yet): the log refuses its tokens
            return retired

    def _agent_id(self, agent: str | int | _core.Agent) -> str:
        if isinstance(agent, _core.Agent):
            return agent.id
        if isinstance(agent, str):
            return agent
        return _core_agent(self, agent).id

    # ------------------------------------------------------------ engine calls that retire agents

    def deprovision(self, agent: int | str | _core.Agent) -> int:
        """Retire an agent and every agent acting for it; returns how many were retired.

        Once credentials are in use (`trust`, `configure_identity`), the
        agent's tokens are refused from then on by this engine; `revoke`
        also makes that survive a restart.
        """
        retired = _core_deprovision(self, agent)
        if retired and self._id_active:
            self._note_retired(agent)
        return retired

    def _note_retired(self, agent: int | str | _core.Agent) -> None:
        with self._id_lock:
            self._id_revocations.add_many(
                [("agent", self._agent_id(agent))], at=self._id_now(), reason="deprovisioned", persist=False
            )
            self._id_epoch += 1

    def remove_principal(self, id: str) -> int:
        """Remove a principal and retire every agent acting for it; returns how many.

        Credentials issued for its agents until now are refused from then on.
        """
        retired = _core_remove_principal(self, id)
        if self._id_active:
            with self._id_lock:
                self._id_revocations.add_many(
                    [("principal", id)], at=self._id_now(), reason="removed", persist=False
                )
                self._id_epoch += 1
        return retired

    def suspend(self, subject: int | str | _core.Agent, reason: str = "suspended by an operator") -> int:
        """Suspend an agent (and its delegates) or a principal (and everything acting for it).

        Recorded in the revocation log (fsynced, if it has a file) so the
        suspension survives a restart; a suspended agent's credentials are
        refused (`suspended`) until `resume`.
        """
        try:
            suspended = _core_suspend(self, subject, reason)
        except UnknownSubjectError:
            if not (self._id_active and isinstance(subject, str)):
                raise
            suspended = 0  # not registered here (yet): its credentials are refused when they come
        self._record_suspension("suspend", subject, reason)
        return suspended

    def resume(self, subject: int | str | _core.Agent) -> int:
        """Undo `suspend`; returns how many agents became active. Recorded in the revocation log."""
        try:
            resumed = _core_resume(self, subject)
        except UnknownSubjectError:
            if not (self._id_active and isinstance(subject, str)):
                raise
            resumed = 0
        self._record_suspension("resume", subject, None)
        return resumed

    def _record_suspension(self, kind: str, subject: int | str | _core.Agent, reason: str | None) -> None:
        with self._id_lock:
            self._id_revocations.add_many([(kind, self._agent_id(subject))], at=self._id_now(), reason=reason)
            self._id_epoch += 1

    def _reload(self, policy_json: bytes, *args: Any, **kwargs: Any) -> tuple[str, str]:
        versions = super()._reload(policy_json, *args, **kwargs)
        with self._id_lock:
            self._id_policy_json = policy_json
            self._id_view = None
            self._id_epoch += 1
        return versions
