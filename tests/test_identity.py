"""Signed agent identities: issuing, verifying, refusing, revoking, rotating, persisting, proving possession.

Every refusal is checked for its exact `AuthenticationError.reason`. Time is
a `charter.ManualClock` shared by issuer and engine (or deliberately not, to
model clock skew); nothing sleeps.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import charter
from charter import authn, cli, tokens
from charter.errors import StorageError
from charter.identity import HolderKey, Issuer
from charter.revocations import RevocationLog

START = 1_700_000_000.0
ISS = "https://id.example"
LEEWAY = 5.0


# ------------------------------------------------------------------ helpers


@pytest.fixture
def clock() -> charter.ManualClock:
    return charter.ManualClock(START)


@pytest.fixture
def issuer(clock: charter.ManualClock) -> Issuer:
    return Issuer.generate(issuer=ISS, clock=clock)


def make_engine(clock: charter.ManualClock, issuer: Issuer, **settings: Any) -> charter.Engine:
    engine = charter.Engine.example(clock=clock)
    engine.trust(issuer.jwks())
    engine.configure_identity(leeway=LEEWAY, **settings)
    return engine


@pytest.fixture
def engine(clock: charter.ManualClock, issuer: Issuer) -> charter.Engine:
    return make_engine(clock, issuer)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segments(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    h, p, s = token.split(".")
    return json.loads(base64.urlsafe_b64decode(h + "==")), json.loads(base64.urlsafe_b64decode(p + "==")), s


def sign_as(issuer: Issuer, claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    """A token with arbitrary claims, validly signed by `issuer`'s current key (a rogue or buggy issuer)."""
    head = header or {"alg": "EdDSA", "kid": issuer.kid, "typ": "JWT"}
    signing_input = f"{b64(msgspec.json.encode(head))}.{b64(msgspec.json.encode(claims))}"
    key = issuer._current.private
    assert key is not None
    return f"{signing_input}.{b64(key.sign(signing_input.encode()))}"


def refused(reason: str, fn: Callable[[], object]) -> charter.AuthenticationError:
    with pytest.raises(charter.AuthenticationError) as info:
        fn()
    assert info.value.reason == reason, info.value
    return info.value


# ------------------------------------------------------------------ issue and authenticate


def test_issue_then_authenticate_registers_the_agent(
    engine: charter.Engine, issuer: Issuer, clock: charter.ManualClock
) -> None:
    token = issuer.issue("support-bot", on_behalf_of="user:alice", scope=["tickets:*", "email:send"], ttl=600)
    agent = engine.authenticate(token)
    _, claims, _ = segments(token)
    assert agent.id == claims["sub"]
    assert agent.template == "support-bot"
    assert agent.on_behalf_of == agent.principal == "user:alice"
    assert agent.depth == 1
    assert sorted(agent.scope or []) == ["email:send", "tickets:*"]
    assert agent.expires_at == START + 600 + LEEWAY  # a token is good until exp + leeway; so is its agent
    assert engine.check(agent, "tickets:write")
    assert engine.check(agent, "crm:read").reason == "out_of_scope"  # support allows it, the scope does not
    assert engine.check(agent.id, "tickets:read")


def test_the_token_format(issuer: Issuer) -> None:
    token = issuer.issue("support-bot", on_behalf_of="user:alice", scope=["tickets:read"], audience="svc:crm")
    header, claims, sig = segments(token)
    assert header == {"alg": "EdDSA", "kid": issuer.kid, "typ": "JWT"}
    assert len(base64.urlsafe_b64decode(sig + "==")) == 64
    assert claims["iss"] == ISS
    assert claims["sub"].startswith("agt_")
    assert claims["aud"] == "svc:crm"
    assert claims["iat"] == claims["nbf"] == START
    assert claims["exp"] == START + 900  # the issuer's default without a policy
    assert claims["scope"] == "tickets:read"
    assert claims["tmpl"] == "support-bot"
    assert claims["dep"] == 1
    assert claims["act"] == {"sub": "user:alice"}
    assert len(claims["jti"]) >= 16
    # kid is the RFC 7638 thumbprint of the key
    assert issuer.kid == issuer.jwks()["keys"][0]["kid"] == tokens.thumbprint(issuer._current.public)


def test_a_token_without_principal_acts_for_nobody(engine: charter.Engine, issuer: Issuer) -> None:
    agent = engine.authenticate(issuer.issue("deploy-agent", agent_id="agt_solo"))
    assert agent.id == "agt_solo"
    assert agent.on_behalf_of is None
    assert agent.principal is None
    assert "act" not in segments(issuer.issue("deploy-agent"))[1]


def test_repeat_authentication_is_a_cache_hit(
    engine: charter.Engine, issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = authn.verify_token

    def counting(*args: Any, **kwargs: Any) -> tokens.Credential:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(authn, "verify_token", counting)
    token = issuer.issue("support-bot", on_behalf_of="user:alice")
    first = engine.authenticate(token)
    second = engine.authenticate("".join(token))  # an equal string, not the same object
    assert len(calls) == 1
    assert first.handle == second.handle
    # an invalidation (any revocation) re-checks everything but the signature
    engine.revoke(jti="some-other-token")
    assert engine.authenticate(token).handle == first.handle
    assert len(calls) == 1


def test_presenting_a_newer_token_refreshes_the_agent(
    engine: charter.Engine, issuer: Issuer, clock: charter.ManualClock
) -> None:
    old = engine.authenticate(
        issuer.issue("support-bot", on_behalf_of="user:alice", agent_id="agt_r", ttl=60)
    )
    clock.advance(50)
    new = engine.authenticate(
        issuer.issue("support-bot", on_behalf_of="user:alice", agent_id="agt_r", ttl=600)
    )
    assert new.handle == old.handle
    assert new.expires_at == START + 50 + 600 + LEEWAY
    clock.advance(100)  # the first token is over, the agent lives on with the second's lifetime
    assert engine.check(new, "tickets:read")


def test_an_expired_agent_is_denied_at_its_first_check_and_comes_back_with_a_fresh_token(
    engine: charter.Engine, issuer: Issuer, clock: charter.ManualClock
) -> None:
    token = issuer.issue("support-bot", on_behalf_of="user:alice", agent_id="agt_e", ttl=60)
    agent = engine.authenticate(token)
    clock.advance(60 + LEEWAY)
    assert engine.check(agent, "tickets:read").reason == "expired"  # no sweep needed
    refused("expired", lambda: engine.authenticate(token))
    again = engine.authenticate(issuer.issue("support-bot", on_behalf_of="user:alice", agent_id="agt_e"))
    assert engine.check(again, "tickets:read")


# ------------------------------------------------------------------ refusals: the token itself


def test_forged_claims_are_refused(engine: charter.Engine, issuer: Issuer) -> None:
    token = issuer.issue("support-bot", on_behalf_of="user:alice", scope=["tickets:read"])
    h, _, s = token.split(".")
    _, claims, _ = segments(token)
    claims["scope"] = "*"
    forged = f"{h}.{b64(msgspec.json.encode(claims))}.{s}"
    refused("bad_signature", lambda: engine.authenticate(forged))


@pytest.mark.parametrize(
    "cut",
    [
        lambda t: t[:-1],
        lambda t: t[:-2],
        lambda t: t[:-20],
        lambda t: t.rsplit(".", 1)[0],
        lambda t: t.rsplit(".", 1)[0] + ".",
        lambda t: t.split(".", 1)[0],
        lambda t: t[: len(t) // 2],
        lambda t: "",
    ],
)
def test_truncated_tokens_are_refused(
    engine: charter.Engine, issuer: Issuer, cut: Callable[[str], str]
) -> None:
    truncated = cut(issuer.issue("support-bot", on_behalf_of="user:alice"))
    err = refused_any(lambda: engine.authenticate(truncated))
    assert err.reason in {"malformed", "bad_signature"}


def refused_any(fn: Callable[[], object]) -> charter.AuthenticationError:
    with pytest.raises(charter.AuthenticationError) as info:
        fn()
    return info.value


def test_a_missing_signature_is_bad(engine: charter.Engine, issuer: Issuer) -> None:
    token = issuer.issue("support-bot", on_behalf_of="user:alice")
    refused("bad_signature", lambda: engine.authenticate(token.rsplit(".", 1)[0] + "."))


def test_resigned_with_another_key_is_refused(
    engine: charter.Engine, issuer: Issuer, clock: charter.ManualClock
) -> None:
    token = issuer.issue("support-bot", on_behalf_of="user:alice")
    h, p, _ = token.split(".")
    other = Ed25519PrivateKey.generate()
    resigned = f"{h}.{p}.{b64(other.sign(f'{h}.{p}'.encode()))}"
    refused("bad_signature", lambda: engine.authenticate(resigned))  # claims the trusted kid
    # the same claims from an issuer the engine does not trust: unknown key
    mallory = Issuer.generate(issuer=ISS, clock=clock)
    _, claims, _ = segments(token)
    refused("unknown_key", lambda: engine.authenticate(sign_as(mallory, claims)))


def test_non_canonical_base64_is_refused(engine: charter.Engine, issuer: Issuer) -> None:
    token = issuer.issue("support-bot", on_behalf_of="user:alice")
    # the last character of a 64-byte signature carries 4 unused bits: another spelling, same bytes
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    twin = token[:-1] + alphabet[last ^ 1]
    assert base64.urlsafe_b64decode(twin.split(".")[2] + "==") == base64.urlsafe_b64decode(
        token.split(".")[2] + "=="
    )
    refused("malformed", lambda: engine.authenticate(twin))
    assert engine.authenticate(token)


def test_alg_none_is_refused(engine: charter.Engine, issuer: Issuer) -> None:
    _, claims, _ = segments(issuer.issue("support-bot", on_behalf_of="user:alice"))
    claims["scope"] = "*"
    for alg in ("none", "None", "NONE", ""):
        head = b64(json.dumps({"alg": alg, "kid": issuer.kid, "typ": "JWT"}).encode())
        unsigned = f"{head}.{b64(json.dumps(claims).encode())}."
        refused("algorithm_not_allowed", lambda t=unsigned: engine.authenticate(t))


def test_hs256_keyed_with_the_public_key_is_refused(engine: charter.Engine, issuer: Issuer) -> None:
    """The classic confusion: an HMAC 'signed' with the verifier's public key material."""
    _, claims, _ = segments(issuer.issue("support-bot", on_behalf_of="user:alice"))
    jwk = issuer.jwks()["keys"][0]
    for secret in (jwk["x"].encode(), base64.urlsafe_b64decode(jwk["x"] + "="), json.dumps(jwk).encode()):
        for alg in ("HS256", "HS512"):
            head = b64(json.dumps({"alg": alg, "kid": issuer.kid, "typ": "JWT"}).encode())
            signing_input = f"{head}.{b64(json.dumps(claims).encode())}"
            digest = hashlib.sha256 if alg == "HS256" else hashlib.sha512
            mac = hmac.new(secret, signing_input.encode(), digest).digest()
            forged = f"{signing_input}.{b64(mac)}"
            refused("algorithm_not_allowed", lambda t=forged: engine.authenticate(t))
    for alg in ("ES256", "RS256", "PS256", "EdDSA "):
        head = b64(json.dumps({"alg": alg, "kid": issuer.kid}).encode())
        refused("algorithm_not_allowed", lambda h=head: engine.authenticate(f"{h}.{b64(b'{}')}.AAAA"))


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"kid": "k"}, "malformed"),  # no alg
        ({"alg": "EdDSA"}, "unknown_key"),  # no kid
        ({"alg": "EdDSA", "kid": "nope"}, "unknown_key"),
        ({"alg": "EdDSA", "kid": 7}, "unknown_key"),
        ({"alg": "EdDSA", "kid": "K", "crit": ["exp"]}, "malformed"),
        ({"alg": "EdDSA", "kid": "K", "typ": "charter-pop+jwt"}, "malformed"),  # a proof is not a token
    ],
)
def test_header_rules(engine: charter.Engine, issuer: Issuer, header: dict[str, Any], reason: str) -> None:
    if header.get("kid") == "K":
        header["kid"] = issuer.kid
    _, claims, _ = segments(issuer.issue("support-bot", on_behalf_of="user:alice"))
    refused(reason, lambda: engine.authenticate(sign_as(issuer, claims, header)))


@pytest.mark.parametrize(
    "garbage",
    ["", "a.b", "a.b.c.d", "!!!.???.***", "e30.e30.e30", "x" * 20_000, "....", "é.é.é"],
)
def test_garbage_is_malformed(engine: charter.Engine, garbage: str) -> None:
    refused("malformed", lambda: engine.authenticate(garbage))


@pytest.mark.parametrize("value", [None, 42, b"a.b.c", ["a", "b"], {"a": 1}])
def test_non_strings_are_malformed(engine: charter.Engine, value: Any) -> None:
    refused("malformed", lambda: engine.authenticate(value))


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda c: c.pop("exp"), "malformed"),
        (lambda c: c.pop("sub"), "malformed"),
        (lambda c: c.pop("jti"), "malformed"),
        (lambda c: c.pop("tmpl"), "malformed"),
        (lambda c: c.update(exp="tomorrow"), "malformed"),
        (lambda c: c.update(exp=True), "malformed"),
        (lambda c: c.update(dep=2), "malformed"),  # the chain holds one agent
        (lambda c: c.update(aud=[1]), "malformed"),
        (lambda c: c.update(scope=["db:read"]), "malformed"),  # a space-separated string, per RFC 8693
        (lambda c: c.update(scope="db:re*"), "malformed"),
        (lambda c: c.update(cnf={"x5t": "y"}), "malformed"),
        (lambda c: c.update(act={"sub": "user:alice", "act": {"sub": "user:bob"}}), "malformed"),
        (lambda c: c.update(act="user:alice"), "malformed"),
        (lambda c: c.update(tmpl="no-such-template"), "unknown_template"),
        (lambda c: c.update(act={"sub": "user:nobody"}), "unknown_principal"),
        (lambda c: c.update(iss="https://other.example"), "wrong_issuer"),
    ],
)
def test_claims_that_do_not_fit_are_refused(
    engine: charter.Engine, issuer: Issuer, mutate: Callable[[dict[str, Any]], object], reason: str
) -> None:
    _, claims, _ = segments(issuer.issue("support-bot", on_behalf_of="user:alice"))
    mutate(claims)
    refused(reason, lambda: engine.authenticate(sign_as(issuer, claims)))


def test_expired_and_leeway(engine: charter.Engine, issuer: Issuer, clock: charter.ManualClock) -> None:
    token = issuer.issue("support-bot", on_behalf_of="user:alice", ttl=60)
    clock.advance(60 + LEEWAY - 0.001)
    assert engine.authenticate(token)
    clock.advance(0.001)
    refused("expired", lambda: engine.authenticate(token))  # the cached path refuses it too
    fresh = make_engine(clock, issuer)
    refused("expired", lambda: fresh.authenticate(token))


def test_not_yet_valid(engine: charter.Engine, clock: charter.ManualClock) -> None:
    ahead = charter.ManualClock(START + 60)  # an issuer whose clock runs a minute fast
    fast = Issuer.generate(issuer="https://fast.example", clock=ahead)
    engine.trust(fast.jwks())
    token = fast.issue("support-bot", on_behalf_of="user:alice", ttl=600)
    refused("not_yet_valid", lambda: engine.authenticate(token))
    clock.advance(60 - LEEWAY)  # within the leeway now
    assert engine.authenticate(token)
    _, claims, _ = segments(fast.issue("support-bot", on_behalf_of="user:alice"))
    claims["nbf"] = START + 3600
    refused("not_yet_valid", lambda: engine.authenticate(sign_as(fast, claims)))


def test_audience(clock: charter.ManualClock, issuer: Issuer) -> None:
    crm = make_engine(clock, issuer, audience="svc:crm")
    for_crm = issuer.issue("support-bot", on_behalf_of="user:alice", audience="svc:crm")
    for_billing = issuer.issue("support-bot", on_behalf_of="user:alice", audience=["svc:billing", "svc:x"])
    anyone = issuer.issue("support-bot", on_behalf_of="user:alice")
    assert crm.authenticate(for_crm)
    refused("wrong_audience", lambda: crm.authenticate(for_billing))
    refused("wrong_audience", lambda: crm.authenticate(anyone))  # a verifier with an audience wants it named
    assert crm.authenticate(for_billing, audience="svc:billing")  # per call
    plain = make_engine(clock, issuer)
    assert plain.authenticate(anyone)
    refused("wrong_audience", lambda: plain.authenticate(for_crm))  # RFC 7519: aud names someone else


def test_wrong_issuer(engine: charter.Engine, clock: charter.ManualClock) -> None:
    other = Issuer.generate(issuer="https://other.example", clock=clock)
    engine.trust(other.jwks())
    _, claims, _ = segments(other.issue("support-bot", on_behalf_of="user:alice"))
    claims["iss"] = ISS  # a trusted key, signing for an issuer it does not belong to
    refused("wrong_issuer", lambda: engine.authenticate(sign_as(other, claims)))


def test_an_agent_id_cannot_be_taken_over(engine: charter.Engine, issuer: Issuer) -> None:
    engine.authenticate(issuer.issue("support-bot", on_behalf_of="user:alice", agent_id="agt_x"))
    refused(
        "chain_mismatch",
        lambda: engine.authenticate(issuer.issue("deploy-agent", on_behalf_of="user:bob", agent_id="agt_x")),
    )
    refused(
        "chain_mismatch",
        lambda: engine.authenticate(issuer.issue("support-bot", on_behalf_of="user:bob", agent_id="agt_x")),
    )
    refused(
        "chain_mismatch",
        lambda: engine.authenticate(issuer.issue("support-bot", agent_id="user:alice")),  # a principal's id
    )


def test_lifetime_beyond_the_templates_max_ttl(engine: charter.Engine, issuer: Issuer) -> None:
    refused(
        "ttl_exceeded",
        lambda: engine.authenticate(issuer.issue("support-bot", on_behalf_of="user:alice", ttl="9h")),
    )
    assert engine.authenticate(issuer.issue("support-bot", on_behalf_of="user:alice", ttl="8h"))


def test_any_exception_inside_verification_is_a_refusal(
    engine: charter.Engine, issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(engine, "_register", broken)
    err = refused(
        "internal_error", lambda: engine.authenticate(issuer.issue("support-bot", on_behalf_of="user:alice"))
    )
    assert "disk on fire" in str(err)


# ------------------------------------------------------------------ scope and delegation


def test_scope_beyond_the_template_is_an_escalation(engine: charter.Engine, issuer: Issuer) -> None:
    token = issuer.issue("support-bot", on_behalf_of="user:alice", scope=["tickets:read", "payments:refund"])
    refused("scope_escalation", lambda: engine.authenticate(token))
    # patterns narrow; a pattern that matches nothing narrows to nothing
    ok = engine.authenticate(
        issuer.issue("support-bot", on_behalf_of="user:alice", scope=["tickets:*", "zzz:*"])
    )
    assert ok.scope == ["tickets:*"]


def test_exchange_mints_a_narrower_shorter_child(
    engine: charter.Engine, issuer: Issuer, clock: charter.ManualClock
) -> None:
    parent_token = issuer.issue(
        "support-bot", on_behalf_of="user:alice", scope=["tickets:*", "crm:read"], ttl=600
    )
    child_token = issuer.exchange(
        parent_token, template="research-subagent", scope=["tickets:read"], ttl="15m"
    )
    _, claims, _ = segments(child_token)
    parent_claims = segments(parent_token)[1]
    assert claims["exp"] == parent_claims["exp"]  # clamped: it cannot outlive its parent
    assert claims["dep"] == 2
    assert claims["act"] == {
        "sub": parent_claims["sub"],
        "tmpl": "support-bot",
        "scope": "tickets:* crm:read",
        "exp": parent_claims["exp"],
        "iat": START,
        "act": {"sub": "user:alice"},
    }
    child = engine.authenticate(child_token)
    assert child.on_behalf_of == parent_claims["sub"]
    assert child.principal == "user:alice"
    assert child.depth == 2
    assert engine.check(child, "tickets:read")
    assert engine.check(child, "crm:read").reason == "out_of_scope"
    # the parent was registered on the way, from the child's `act` chain
    assert engine.agent(parent_claims["sub"]).template == "support-bot"
    # without a scope the child inherits its parent's
    inherited = issuer.exchange(parent_token, template="research-subagent")
    assert segments(inherited)[1]["scope"] == "tickets:* crm:read"


def test_exchange_refuses_widening_and_records_it(issuer: Issuer) -> None:
    parent = issuer.issue("support-bot", on_behalf_of="user:alice", scope=["tickets:*"])
    for scope in (["db:read"], ["*"], ["tickets:read", "email:send"], ["crm:*"]):
        refused(
            "scope_escalation", lambda s=scope: issuer.exchange(parent, template="research-subagent", scope=s)
        )
    assert [r.reason for r in issuer.refusals] == ["scope_escalation"] * 4
    assert issuer.refusals[0].template == "research-subagent"
    assert issuer.exchange(parent, template="research-subagent", scope=["tickets:read"])


def test_exchange_needs_a_valid_parent(issuer: Issuer, clock: charter.ManualClock) -> None:
    parent = issuer.issue("support-bot", on_behalf_of="user:alice", ttl=60)
    refused("bad_signature", lambda: issuer.exchange(parent[:-3] + "AAA", template="research-subagent"))
    other = Issuer.generate(issuer="https://other.example", clock=clock)
    refused("unknown_key", lambda: issuer.exchange(other.issue("support-bot"), template="research-subagent"))
    clock.advance(61)
    refused("expired", lambda: issuer.exchange(parent, template="research-subagent"))


def test_a_child_wider_than_its_parent_is_refused_by_the_engine(
    engine: charter.Engine, issuer: Issuer
) -> None:
    """A buggy or rogue exchange (signed by a trusted key) cannot widen either: the engine checks the chain."""
    parent = issuer.issue("support-bot", on_behalf_of="user:alice", scope=["tickets:read"])
    _, claims, _ = segments(issuer.exchange(parent, template="research-subagent"))
    claims["scope"] = "tickets:read crm:read"
    refused("scope_escalation", lambda: engine.authenticate(sign_as(issuer, claims)))
    claims["scope"] = "*"  # a pattern is no way around it
    refused("scope_escalation", lambda: engine.authenticate(sign_as(issuer, claims)))
    claims["scope"] = "db:read"  # research-subagent may, support-bot (its delegator) may not
    refused("scope_escalation", lambda: engine.authenticate(sign_as(issuer, claims)))
    claims["scope"] = "tickets:read"
    claims["exp"] = claims["act"]["exp"] + 1  # outliving the parent
    refused("malformed", lambda: engine.authenticate(sign_as(issuer, claims)))


def test_too_deep(engine: charter.Engine, issuer: Issuer) -> None:
    """refund-agent allows 2 levels; an issuer without a policy mints a third, the engine refuses it."""
    t1 = issuer.issue("refund-agent", on_behalf_of="user:carol")
    t2 = issuer.exchange(t1, template="refund-agent")
    t3 = issuer.exchange(t2, template="refund-agent")
    assert engine.authenticate(t2).depth == 2
    refused("too_deep", lambda: engine.authenticate(t3))
    # a laxer template further down does not escape the bound either
    t3b = issuer.exchange(t2, template="research-subagent")
    refused("too_deep", lambda: engine.authenticate(t3b))
    # the issuer's own bound
    shallow = Issuer.generate(issuer=ISS, clock=issuer.clock, max_depth=1)
    refused("too_deep", lambda: shallow.exchange(shallow.issue("support-bot"), template="support-bot"))


def test_an_issuer_with_a_policy_refuses_before_signing(
    engine: charter.Engine, clock: charter.ManualClock
) -> None:
    strict = Issuer.generate(issuer=ISS, clock=clock, policy=engine)
    refused("unknown_template", lambda: strict.issue("nope", on_behalf_of="user:alice"))
    refused("scope_escalation", lambda: strict.issue("support-bot", scope=["payments:refund"]))
    refused("ttl_exceeded", lambda: strict.issue("support-bot", ttl="9h"))
    t1 = strict.issue("refund-agent", on_behalf_of="user:carol")
    assert segments(t1)[1]["exp"] == START + 600  # the template's ttl is the default
    t2 = strict.exchange(t1, template="refund-agent")
    refused("too_deep", lambda: strict.exchange(t2, template="refund-agent"))
    assert [r.reason for r in strict.refusals] == ["too_deep"]


# ------------------------------------------------------------------ agent to agent


def test_a_called_agent_verifies_its_caller_with_the_jwks_alone(
    issuer: Issuer, clock: charter.ManualClock
) -> None:
    published = json.dumps(issuer.jwks())  # all the called service ever gets from the issuer
    assert '"d"' not in published
    service = charter.Engine.example(clock=clock)
    service.trust(json.loads(published))
    service.configure_identity(audience="svc:crm")
    caller = service.authenticate(
        issuer.issue("support-bot", on_behalf_of="user:alice", scope=["crm:*"], audience="svc:crm")
    )
    assert service.check(caller, "crm:write", "customers/42")
    assert service.check(caller, "crm:write", "users/7/profile").reason == "denied_by_rule"
    assert service.check(caller, "tickets:read").reason == "out_of_scope"


# ------------------------------------------------------------------ revocation


def test_revoking_a_token_revokes_it_and_its_agent(engine: charter.Engine, issuer: Issuer) -> None:
    token = issuer.issue("support-bot", on_behalf_of="user:alice")
    agent = engine.authenticate(token)
    assert engine.revoke(token, reason="leaked") == 1
    refused("revoked", lambda: engine.authenticate(token))
    assert engine.check(agent, "tickets:read").reason == "revoked"
    again = issuer.issue("support-bot", on_behalf_of="user:alice", agent_id=agent.id)
    refused("revoked", lambda: engine.authenticate(again))  # a new credential for a revoked agent


def test_revoking_a_jti_revokes_that_credential_only(engine: charter.Engine, issuer: Issuer) -> None:
    one = issuer.issue("support-bot", on_behalf_of="user:alice", agent_id="agt_j")
    two = issuer.issue("support-bot", on_behalf_of="user:alice", agent_id="agt_j")
    engine.authenticate(one)
    engine.revoke(jti=segments(one)[1]["jti"])
    refused("revoked", lambda: engine.authenticate(one))
    assert engine.authenticate(two).id == "agt_j"


def test_revoking_a_parent_revokes_every_descendant(engine: charter.Engine, issuer: Issuer) -> None:
    root = issuer.issue("support-bot", on_behalf_of="user:alice")
    child = issuer.exchange(root, template="research-subagent")
    grandchild = issuer.exchange(child, template="research-subagent")
    sibling = issuer.issue("support-bot", on_behalf_of="user:alice")
    agents = [engine.authenticate(t) for t in (root, child, grandchild, sibling)]
    assert engine.revoke(agent=agents[1]) == 2
    refused("revoked", lambda: engine.authenticate(child))
    refused("revoked", lambda: engine.authenticate(grandchild))
    refused("revoked", lambda: engine.authenticate(issuer.exchange(child, template="research-subagent")))
    assert engine.check(agents[2], "tickets:read").reason == "delegator_revoked"
    assert engine.authenticate(root)
    assert engine.authenticate(sibling)


def test_revoking_a_principal_revokes_all_its_agents(
    engine: charter.Engine, issuer: Issuer, clock: charter.ManualClock
) -> None:
    alice = [issuer.issue("support-bot", on_behalf_of="user:alice") for _ in range(3)]
    sub = issuer.exchange(alice[0], template="research-subagent")
    bob = issuer.issue("deploy-agent", on_behalf_of="user:bob")
    agents = [engine.authenticate(t) for t in alice]
    engine.authenticate(sub)
    engine.authenticate(bob)
    assert engine.revoke(principal="user:alice") == 4
    for t in [*alice, sub]:
        refused("revoked", lambda t=t: engine.authenticate(t))
    assert engine.check(agents[0], "tickets:read").reason == "principal_removed"
    # a child minted later from a parent credential issued before the revocation stays revoked
    refused("revoked", lambda: engine.authenticate(issuer.exchange(alice[1], template="research-subagent")))
    assert engine.authenticate(bob)
    # alice is back (re-provisioned by her identity provider), with new credentials
    clock.advance(LEEWAY + 1)
    engine.upsert_principal("user:alice", roles=["support"])
    assert engine.authenticate(issuer.issue("support-bot", on_behalf_of="user:alice"))


def test_deprovisioned_agents_stay_out(engine: charter.Engine, issuer: Issuer) -> None:
    token = issuer.issue("support-bot", on_behalf_of="user:alice")
    child = issuer.exchange(token, template="research-subagent")
    agent = engine.authenticate(token)
    engine.authenticate(child)
    assert engine.deprovision(agent.handle) == 2
    refused("revoked", lambda: engine.authenticate(token))
    refused("revoked", lambda: engine.authenticate(child))


def test_removing_a_principal_refuses_its_credentials(engine: charter.Engine, issuer: Issuer) -> None:
    token = issuer.issue("support-bot", on_behalf_of="user:alice")
    engine.authenticate(token)
    assert engine.remove_principal("user:alice") == 1
    refused("revoked", lambda: engine.authenticate(token))


def test_revoke_needs_something_and_a_verifiable_token(
    engine: charter.Engine, clock: charter.ManualClock
) -> None:
    with pytest.raises(charter.InvalidRequestError):
        engine.revoke()
    stranger = Issuer.generate(issuer="https://stranger.example", clock=clock)
    refused("unknown_key", lambda: engine.revoke(stranger.issue("support-bot", agent_id="agt_victim")))
    assert "agt_victim" not in engine.revocations.agents


def test_an_expired_token_can_still_be_revoked(
    engine: charter.Engine, issuer: Issuer, clock: charter.ManualClock
) -> None:
    token = issuer.issue("support-bot", on_behalf_of="user:alice", agent_id="agt_old", ttl=60)
    clock.advance(3600)
    engine.revoke(token)
    assert "agt_old" in engine.revocations.agents


# ------------------------------------------------------------------ persistence


def test_revocations_survive_a_restart(tmp_path: Path, clock: charter.ManualClock, issuer: Issuer) -> None:
    log = tmp_path / "revoked.log"
    first = make_engine(clock, issuer, revocations=log)
    parent = issuer.issue("support-bot", on_behalf_of="user:alice")
    child = issuer.exchange(parent, template="research-subagent")
    by_jti = issuer.issue("support-bot", on_behalf_of="user:alice")
    bob = issuer.issue("deploy-agent", on_behalf_of="user:bob")
    keep = issuer.issue("support-bot", on_behalf_of="user:dave")
    for t in (parent, child, by_jti, bob, keep):
        first.authenticate(t)
    first.revoke(parent)
    first.revoke(jti=segments(by_jti)[1]["jti"])
    first.revoke(principal="user:bob")
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    assert len(log.read_text().splitlines()) == 4

    restarted = make_engine(clock, issuer, revocations=log)  # a new process: empty registry, same log
    assert len(restarted.revocations) == 4
    for t in (parent, child, by_jti, bob):
        refused("revoked", lambda t=t: restarted.authenticate(t))
    refused("revoked", lambda: restarted.authenticate(issuer.exchange(child, template="research-subagent")))
    assert restarted.authenticate(keep)


def test_a_restart_rebuilds_the_registry_lazily_from_the_act_chain(
    clock: charter.ManualClock, issuer: Issuer
) -> None:
    root = issuer.issue("support-bot", on_behalf_of="user:alice", scope=["tickets:*"], ttl=3600)
    clock.advance(10)
    child = issuer.exchange(root, template="research-subagent", ttl=600)
    clock.advance(10)
    grandchild = issuer.exchange(child, template="research-subagent", ttl=60)
    restarted = make_engine(clock, issuer)
    g = restarted.authenticate(grandchild)  # first token it ever sees
    c = restarted.agent(str(g.on_behalf_of))
    r = restarted.agent(str(c.on_behalf_of))
    assert (g.depth, c.depth, r.depth) == (3, 2, 1)
    assert r.on_behalf_of == "user:alice"
    assert r.scope == ["tickets:*"]
    assert c.scope == ["tickets:*"]
    # each ancestor lives no longer than its own credential said
    assert r.expires_at == START + 3600 + LEEWAY
    assert c.expires_at == START + 10 + 600 + LEEWAY
    assert g.expires_at == START + 20 + 60 + LEEWAY
    assert restarted.check(g, "tickets:read")
    assert restarted.check(g, "db:read").reason == "out_of_scope"
    # the ancestors' own tokens then find them registered
    assert restarted.authenticate(root).handle == r.handle
    assert restarted.authenticate(child).handle == c.handle


def test_a_torn_last_record_is_dropped_and_a_corrupt_one_refuses_to_load(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log = RevocationLog(path)
    log.add("agent", "agt_a", at=START)
    log.add("jti", "j1", at=START, reason="why")
    with path.open("ab") as f:
        f.write(b'{"kind": "agent", "id": "agt_b"')  # the writer died before finishing (and before fsync)
    reloaded = RevocationLog(path)
    assert reloaded.agents == {"agt_a"}
    assert reloaded.jtis == {"j1"}
    assert path.read_bytes().endswith(b"\n")  # repaired: the next append starts on a fresh line
    reloaded.add("agent", "agt_c", at=START)
    assert RevocationLog(path).agents == {"agt_a", "agt_c"}
    path.write_bytes(path.read_bytes() + b"garbage\n" + b'{"kind":"agent","id":"agt_d","at":1}\n')
    with pytest.raises(StorageError, match="unreadable record"):
        RevocationLog(path)


def test_two_processes_share_one_log(tmp_path: Path) -> None:
    path = tmp_path / "log"
    a, b = RevocationLog(path), RevocationLog(path)
    a.add("agent", "agt_1", at=START)
    assert "agt_1" not in b.agents
    assert b.sync() == 1
    assert "agt_1" in b.agents
    b.add("principal", "user:x", at=START)
    assert a.sync() == 1
    assert a.principals == {"user:x": START}
    assert RevocationLog(path).agents == {"agt_1"}


# ------------------------------------------------------------------ proof of possession


@pytest.fixture
def holder(clock: charter.ManualClock) -> HolderKey:
    return HolderKey.generate(clock=clock)


def test_a_bound_token_needs_a_fresh_proof(
    clock: charter.ManualClock, issuer: Issuer, holder: HolderKey
) -> None:
    engine = make_engine(clock, issuer, audience="svc:crm", proof_window=30)
    token = issuer.issue("support-bot", on_behalf_of="user:alice", holder=holder, audience="svc:crm")
    assert segments(token)[1]["cnf"] == {"jkt": holder.jkt}
    refused("bad_proof", lambda: engine.authenticate(token))  # the token alone is not enough
    agent = engine.authenticate(token, holder.prove(token, audience="svc:crm"))
    again = engine.authenticate(token, holder.prove(token, audience="svc:crm"))  # a new nonce each time
    assert agent.handle == again.handle
    refused("bad_proof", lambda: engine.authenticate(token))  # not even from the cache


def test_a_replayed_proof_is_refused(clock: charter.ManualClock, issuer: Issuer, holder: HolderKey) -> None:
    engine = make_engine(clock, issuer, audience="svc:crm", proof_window=30)
    token = issuer.issue("support-bot", on_behalf_of="user:alice", holder=holder, audience="svc:crm")
    proof = holder.prove(token, audience="svc:crm")
    assert engine.authenticate(token, proof)
    refused("replayed_proof", lambda: engine.authenticate(token, proof))
    clock.advance(10)
    refused("replayed_proof", lambda: engine.authenticate(token, proof))
    clock.advance(30)  # the proof is stale now: refused for that, whatever the nonce cache holds
    refused("bad_proof", lambda: engine.authenticate(token, proof))


def test_proofs_that_do_not_prove(clock: charter.ManualClock, issuer: Issuer, holder: HolderKey) -> None:
    engine = make_engine(clock, issuer, audience="svc:crm")
    token = issuer.issue("support-bot", on_behalf_of="user:alice", holder=holder, audience="svc:crm")
    other_token = issuer.issue("support-bot", on_behalf_of="user:alice", holder=holder, audience="svc:crm")
    thief = HolderKey.generate(clock=clock)
    cases = {
        "another key": thief.prove(token, audience="svc:crm"),
        "another token": holder.prove(other_token, audience="svc:crm"),
        "another audience": holder.prove(token, audience="svc:billing"),
        "not a proof": token,
        "garbage": "x.y.z",
        "future": HolderKey(holder._key, clock=charter.ManualClock(START + 600)).prove(
            token, audience="svc:crm"
        ),
    }
    for name, proof in cases.items():
        err = refused_any(lambda p=proof: engine.authenticate(token, p))
        assert err.reason == "bad_proof", name
    assert engine.authenticate(token, holder.prove(token, audience="svc:crm"))


def test_a_proof_needs_an_audience_to_check(
    clock: charter.ManualClock, issuer: Issuer, holder: HolderKey
) -> None:
    engine = make_engine(clock, issuer)  # no audience configured, and the token names none
    token = issuer.issue("support-bot", on_behalf_of="user:alice", holder=holder)
    refused("bad_proof", lambda: engine.authenticate(token, holder.prove(token, audience="svc:crm")))
    named = issuer.issue("support-bot", on_behalf_of="user:alice", holder=holder, audience="svc:crm")
    proof = holder.prove(named, audience="svc:crm")
    refused("wrong_audience", lambda: engine.authenticate(named, proof))
    assert engine.authenticate(named, holder.prove(named, audience="svc:crm"), audience="svc:crm")


def test_exchanging_a_bound_token_needs_a_proof_to_the_issuer(issuer: Issuer, holder: HolderKey) -> None:
    parent = issuer.issue("support-bot", on_behalf_of="user:alice", holder=holder)
    refused("bad_proof", lambda: issuer.exchange(parent, template="research-subagent"))
    proof = holder.prove(parent, audience=ISS)
    assert issuer.exchange(parent, template="research-subagent", proof=proof)
    refused("replayed_proof", lambda: issuer.exchange(parent, template="research-subagent", proof=proof))


# ------------------------------------------------------------------ keys


def test_rotation_keeps_old_tokens_valid_until_they_expire(
    engine: charter.Engine, issuer: Issuer, clock: charter.ManualClock
) -> None:
    old_kid = issuer.kid
    old = issuer.issue("support-bot", on_behalf_of="user:alice", ttl=600)
    new_kid = issuer.rotate()
    assert new_kid != old_kid == segments(old)[0]["kid"]
    new = issuer.issue("support-bot", on_behalf_of="user:alice", ttl=600)
    assert segments(new)[0]["kid"] == new_kid
    assert [k["kid"] for k in issuer.jwks()["keys"]] == [new_kid, old_kid]
    engine.trust(issuer.jwks())
    assert engine.authenticate(old)
    assert engine.authenticate(new)
    clock.advance(600 + 300)  # the old key's last token is over, and the retention margin too
    assert [k["kid"] for k in issuer.jwks()["keys"]] == [new_kid]
    engine.trust(issuer.jwks())
    assert engine.trusted_keys(ISS) == [new_kid]
    late = sign_as_key(issuer, old)
    refused("unknown_key", lambda: engine.authenticate(late))


def sign_as_key(issuer: Issuer, token: str) -> str:
    """The token's claims with fresh times, keeping its (old) kid: as if signed late with a dropped key."""
    header, claims, _ = segments(token)
    now = issuer.clock.now()
    claims.update(iat=now, nbf=now, exp=now + 60)
    return sign_as(issuer, claims, header)


def test_an_in_process_issuer_is_followed_through_rotations(
    clock: charter.ManualClock, issuer: Issuer
) -> None:
    engine = charter.Engine.example(clock=clock)
    engine.trust(issuer)
    issuer.rotate()
    assert engine.authenticate(issuer.issue("support-bot", on_behalf_of="user:alice"))


def test_dropping_a_key_invalidates_cached_tokens(engine: charter.Engine, issuer: Issuer) -> None:
    token = issuer.issue("support-bot", on_behalf_of="user:alice")
    engine.authenticate(token)
    engine.trust({"keys": []}, issuer=ISS)
    refused("unknown_key", lambda: engine.authenticate(token))


def test_jwks_export_and_import(issuer: Issuer, engine: charter.Engine) -> None:
    jwks = issuer.jwks()
    assert jwks["issuer"] == ISS
    (key,) = jwks["keys"]
    assert key == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": key["x"],
        "kid": issuer.kid,
        "alg": "EdDSA",
        "use": "sig",
    }
    assert len(base64.urlsafe_b64decode(key["x"] + "=")) == 32
    other = charter.Engine.example(clock=issuer.clock)
    assert other.trust(json.loads(json.dumps(jwks))) == [issuer.kid]
    # a standard JWKS (no `issuer` member) needs the issuer named; foreign key types are skipped
    plain = {"keys": [{"kty": "RSA", "n": "x", "e": "AQAB", "kid": "rsa"}, dict(key.items())]}
    with pytest.raises(charter.InvalidRequestError, match="name the issuer"):
        other.trust(plain)
    assert other.trust(plain, issuer=ISS) == [issuer.kid]
    with pytest.raises(charter.InvalidRequestError, match="private key"):
        other.trust({"keys": [{**key, "d": key["x"]}]}, issuer=ISS)
    with pytest.raises(charter.InvalidRequestError, match="32-byte"):
        other.trust({"keys": [{**key, "x": "AAAA"}]}, issuer=ISS)
    with pytest.raises(charter.InvalidRequestError):
        other.trust({"nokeys": []}, issuer=ISS)


def test_pem_round_trip_and_file_mode(tmp_path: Path, issuer: Issuer, clock: charter.ManualClock) -> None:
    path = tmp_path / "issuer.pem"
    token = issuer.issue("support-bot", on_behalf_of="user:alice", ttl=600)
    old_kid = issuer.kid
    issuer.rotate()
    old_umask = os.umask(0o022)
    try:
        issuer.save_pem(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert text.count("BEGIN PRIVATE KEY") == 1
    assert text.count("BEGIN PUBLIC KEY") == 1
    loaded = Issuer.from_pem(path, clock=clock)
    assert loaded.name == ISS
    assert loaded.kid == issuer.kid
    assert loaded.jwks() == issuer.jwks()  # the rotated-out key came along
    engine = charter.Engine.example(clock=clock)
    engine.trust(loaded.jwks())
    assert engine.authenticate(token).template == "support-bot"
    assert engine.authenticate(loaded.issue("support-bot", on_behalf_of="user:alice"))
    assert old_kid in engine.trusted_keys()
    # group- or world-readable key files are refused
    path.chmod(0o640)
    with pytest.raises(StorageError, match="chmod 600"):
        Issuer.from_pem(path)
    path.chmod(0o600)
    # encrypted at rest
    secret = tmp_path / "secret.pem"
    issuer.save_pem(secret, password=b"hunter2")
    assert "ENCRYPTED PRIVATE KEY" in secret.read_text()
    assert Issuer.from_pem(secret, password=b"hunter2").kid == issuer.kid
    with pytest.raises(StorageError):
        Issuer.from_pem(secret, password=b"wrong")


def test_a_plain_openssl_style_pem_loads(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = Ed25519PrivateKey.generate()
    path = tmp_path / "k.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)
    loaded = Issuer.from_pem(path, issuer="svc:minter")
    assert loaded.name == "svc:minter"
    assert loaded.kid == tokens.thumbprint(key.public_key())
    (tmp_path / "missing.pem").touch(mode=0o600)
    with pytest.raises(StorageError, match="exactly one private key"):
        Issuer.from_pem(tmp_path / "missing.pem")
    with pytest.raises(StorageError, match="cannot read"):
        Issuer.from_pem(tmp_path / "nope.pem")


def test_configuration_is_validated(engine: charter.Engine) -> None:
    with pytest.raises(charter.InvalidRequestError):
        engine.configure_identity(leeway=-1)
    with pytest.raises(charter.InvalidRequestError):
        engine.configure_identity(proof_window=0)


def test_refusal_reasons_are_listed() -> None:
    assert len(set(authn.REFUSALS)) == len(authn.REFUSALS)
    for reason in ("bad_signature", "expired", "not_yet_valid", "revoked", "unknown_key", "malformed"):
        assert reason in authn.REFUSALS
    for reason in ("scope_escalation", "wrong_audience", "too_deep", "bad_proof", "replayed_proof"):
        assert reason in authn.REFUSALS
    assert issubclass(charter.AuthenticationError, charter.CharterError)


def test_reload_re_checks_cached_tokens(engine: charter.Engine, issuer: Issuer) -> None:
    token = issuer.issue("research-subagent", on_behalf_of="user:alice")
    engine.authenticate(token)
    doc = msgspec.json.decode(
        charter.policy.to_core_json(charter.policy.from_file(charter.policy.example_path()))
    )
    del doc["templates"]["research-subagent"]
    engine.reload(doc)
    refused("unknown_template", lambda: engine.authenticate(token))


# ------------------------------------------------------------------ CLI


def run(
    args: list[str], capsys: pytest.CaptureFixture[str], stdin: str | None = None
) -> tuple[int, str, str]:
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_keys_and_tokens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = str(tmp_path / "issuer.pem")
    code, out, _ = run(["keys", "init", "--key", key, "--issuer", ISS], capsys)
    assert code == 0
    assert "mode 0600" in out
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    code, _, err = run(["keys", "init", "--key", key, "--issuer", ISS], capsys)
    assert code == 2
    assert "--force" in err
    code, out, _ = run(["keys", "jwks", "--key", key], capsys)
    jwks = json.loads(out)
    assert jwks["issuer"] == ISS
    assert len(jwks["keys"]) == 1
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(out)

    code, out, _ = run(
        ["token", "issue", "--key", key, "support-bot", "--for", "user:alice", "--scope", "tickets:*,email:send",
         "--ttl", "10m", "--agent-id", "agt_cli"],
        capsys,
    )  # fmt: skip
    assert code == 0
    token = out.strip()
    code, out, err = run(["token", "inspect", token], capsys)
    shown = json.loads(out)
    assert shown["claims"]["sub"] == "agt_cli"
    assert shown["claims"]["scope"] == "tickets:* email:send"
    assert "not verified" in err

    code, out, _ = run(["token", "verify", token, "--jwks", str(jwks_file), "--json"], capsys)
    assert code == 0
    assert json.loads(out)["agent"] == "agt_cli"
    code, out, _ = run(["token", "verify", token, "--key", key], capsys)
    assert code == 0
    assert out.startswith("VALID")

    # rotation: the old token still verifies against the new JWKS
    code, out, _ = run(["keys", "rotate", "--key", key], capsys)
    assert code == 0
    assert "rotated" in out
    code, out, _ = run(["keys", "jwks", "--key", key], capsys)
    assert len(json.loads(out)["keys"]) == 2
    jwks_file.write_text(out)
    assert run(["token", "verify", token, "--jwks", str(jwks_file)], capsys)[0] == 0

    log = str(tmp_path / "revoked.log")
    code, out, _ = run(["token", "revoke", token, "--jwks", str(jwks_file), "--revocations", log], capsys)
    assert code == 0
    assert "revoked" in out
    code, out, _ = run(
        ["token", "verify", token, "--jwks", str(jwks_file), "--revocations", log, "--json"], capsys
    )
    assert code == 1
    assert json.loads(out)["reason"] == "revoked"
    code, out, _ = run(["token", "revoke", "--principal", "user:bob", "--revocations", log], capsys)
    assert code == 0
    assert RevocationLog(log).principals.keys() == {"user:bob"}

    code, out, _ = run(["token", "verify", "garbage", "--jwks", str(jwks_file)], capsys)
    assert code == 1
    assert "malformed" in out
    code, _, err = run(["token", "verify", token], capsys)  # no keys given
    assert code == 2
    assert "--jwks" in err
    code, _, err = run(["token", "revoke", "--revocations", log], capsys)
    assert code == 2


def test_cli_issue_with_a_policy_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = str(tmp_path / "issuer.pem")
    run(["keys", "init", "--key", key, "--issuer", ISS], capsys)
    policy = str(charter.policy.example_path())
    code, _, err = run(
        ["token", "issue", "--key", key, "support-bot", "--scope", "payments:refund", "--policy", policy],
        capsys,
    )
    assert code == 2
    assert "scope_escalation" in err
    code, out, _ = run(
        ["token", "issue", "--key", key, "refund-agent", "--for", "user:carol", "--policy", policy], capsys
    )
    assert code == 0
    claims = segments(out.strip())[1]
    assert claims["exp"] - claims["iat"] == 600  # the template's ttl


# ------------------------------------------------------------------ an issuer in the same process


def test_an_engine_trusting_the_issuer_object_skips_the_second_signature_check(
    clock: charter.ManualClock, issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = charter.Engine.example(clock=clock)
    engine.trust(issuer)
    calls = []
    real = authn.verify_token
    monkeypatch.setattr(authn, "verify_token", lambda *a, **k: calls.append(1) or real(*a, **k))
    token = issuer.issue("support-bot", on_behalf_of="user:alice", ttl=60)
    assert engine.authenticate(token).template == "support-bot"
    assert calls == []  # it watched the token being signed
    # everything else is still checked
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    refused("bad_signature", lambda: engine.authenticate(tampered))  # not minted: verified, and fails
    assert calls == [1]
    engine.revoke(token)
    refused("revoked", lambda: engine.authenticate(token))
    late = issuer.issue("support-bot", on_behalf_of="user:alice", ttl=60)
    clock.advance(3600)
    refused("expired", lambda: engine.authenticate(late))
    wide = issuer.issue("support-bot", on_behalf_of="user:alice", scope=["payments:refund"])
    refused("scope_escalation", lambda: engine.authenticate(wide))


def test_the_minted_memory_is_bounded(issuer: Issuer) -> None:
    issuer.remember_minted(capacity=3)
    toks = [issuer.issue("support-bot") for _ in range(5)]
    assert [issuer.take_minted(t) is not None for t in toks] == [False, False, True, True, True]
    assert issuer.take_minted(toks[-1]) is None  # taken once
    assert Issuer.generate().take_minted(toks[-1]) is None  # off unless asked for


# ------------------------------------------------------------------ odds and ends


def test_concurrent_first_presentations_register_one_agent(engine: charter.Engine, issuer: Issuer) -> None:
    import threading

    token = issuer.issue("support-bot", on_behalf_of="user:alice")
    child = issuer.exchange(token, template="research-subagent")
    results: list[int] = []
    errors: list[BaseException] = []

    def present() -> None:
        try:
            results.append(engine.authenticate(child).handle)
            results.append(engine.authenticate(token).handle)
        except BaseException as err:  # pragma: no cover (the assertion below reports it)
            errors.append(err)

    threads = [threading.Thread(target=present) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(results)) == 2  # one child, one parent, whoever came first


def test_a_small_cache_stays_correct(clock: charter.ManualClock, issuer: Issuer) -> None:
    engine = make_engine(clock, issuer, cache_size=4)
    toks = [issuer.issue("support-bot", on_behalf_of="user:alice", ttl=60) for _ in range(20)]
    handles = [engine.authenticate(t).handle for t in toks]
    assert len(engine._id_cache) <= 4
    assert [engine.authenticate(t).handle for t in toks] == handles
    clock.advance(60 + LEEWAY)
    for t in toks:
        refused("expired", lambda t=t: engine.authenticate(t))
    off = make_engine(clock, issuer, cache_size=0)
    fresh = issuer.issue("support-bot", on_behalf_of="user:alice")
    assert off.authenticate(fresh).handle == off.authenticate(fresh).handle
    assert off._id_cache == {}


def test_in_memory_revocations_carry_over_to_a_log(
    tmp_path: Path, engine: charter.Engine, issuer: Issuer
) -> None:
    token = issuer.issue("support-bot", on_behalf_of="user:alice")
    engine.revoke(token)
    engine.configure_identity(revocations=tmp_path / "log")
    refused("revoked", lambda: engine.authenticate(token))
    assert engine.revocations.path == tmp_path / "log"


def test_deprovision_by_id_handle_or_agent(engine: charter.Engine, issuer: Issuer) -> None:
    toks = [issuer.issue("support-bot", on_behalf_of="user:alice") for _ in range(3)]
    agents = [engine.authenticate(t) for t in toks]
    engine.deprovision(agents[0])
    engine.deprovision(agents[1].id)
    engine.deprovision(agents[2].handle)
    for t in toks:
        refused("revoked", lambda t=t: engine.authenticate(t))
    assert engine.deprovision(agents[0]) == 0  # already retired: nothing more to record


def test_an_engine_that_never_trusted_anyone_refuses_everything(
    clock: charter.ManualClock, issuer: Issuer
) -> None:
    engine = charter.Engine.example(clock=clock)
    refused("unknown_key", lambda: engine.authenticate(issuer.issue("support-bot")))
    agent = engine.provision("support-bot", on_behalf_of="user:alice")
    assert engine.deprovision(agent) == 1  # the plain engine API is untouched
    assert engine.revocations.agents == set()


def test_issuer_verify_and_decode_unverified(issuer: Issuer, clock: charter.ManualClock) -> None:
    token = issuer.issue("support-bot", on_behalf_of="user:alice", scope=["tickets:read"], audience="svc:x")
    cred = issuer.verify(token)
    assert (cred.subject, cred.template, cred.scope, cred.principal, cred.parent) == (
        segments(token)[1]["sub"],
        "support-bot",
        ("tickets:read",),
        "user:alice",
        "user:alice",
    )
    shown = tokens.decode_unverified(token)
    assert shown["header"]["kid"] == issuer.kid
    assert shown["claims"]["aud"] == "svc:x"
    refused("malformed", lambda: tokens.decode_unverified("nope"))


# ------------------------------------------------------------------ suspensions


def test_suspensions_refuse_credentials_and_survive_a_restart(
    tmp_path: Path, clock: charter.ManualClock, issuer: Issuer
) -> None:
    log = tmp_path / "revoked.log"
    engine = make_engine(clock, issuer, revocations=log)
    bot = issuer.issue("support-bot", on_behalf_of="user:alice")
    helper = issuer.exchange(bot, template="research-subagent")
    bob = issuer.issue("deploy-agent", on_behalf_of="user:bob")
    agent = engine.authenticate(bot)
    engine.authenticate(helper)
    engine.authenticate(bob)
    assert engine.suspend(agent, "investigating") == 2
    engine.suspend("user:bob")
    for t in (bot, helper, bob):
        refused("suspended", lambda t=t: engine.authenticate(t))
    assert engine.check(agent, "tickets:read").reason == "suspended"

    restarted = make_engine(clock, issuer, revocations=log)
    for t in (bot, helper, bob):
        refused("suspended", lambda t=t: restarted.authenticate(t))
    assert restarted.check("user:bob", "deploy:read").reason == "suspended"
    assert restarted.resume(agent.id) == 0  # not registered in this process yet: recorded all the same
    assert restarted.authenticate(helper).depth == 2
    restarted.resume("user:bob")
    assert restarted.authenticate(bob)
    again = make_engine(clock, issuer, revocations=log)
    assert again.authenticate(bot)
    assert again.suspension("user:bob") is None
    assert [json.loads(line)["kind"] for line in log.read_text().splitlines()] == [
        "suspend",
        "suspend",
        "resume",
        "resume",
    ]


def test_suspending_an_unknown_id_without_credentials_in_use_is_an_error(clock: charter.ManualClock) -> None:
    engine = charter.Engine.example(clock=clock)
    with pytest.raises(charter.UnknownSubjectError):
        engine.suspend("agt_nobody")


@pytest.mark.parametrize("start", [START + 0.123, START + 0.7, 1_234_567_890.987654])
def test_a_token_of_exactly_max_ttl_is_admitted_at_any_fraction_of_a_second(start: float) -> None:
    clock = charter.ManualClock(start)
    issuer = Issuer.generate(issuer=ISS, clock=clock)
    engine = make_engine(clock, issuer)
    token = issuer.issue("support-bot", on_behalf_of="user:alice", ttl="8h", agent_id="agt_max")
    agent = engine.authenticate(token)
    assert agent.expires_at is not None
    assert agent.expires_at <= start + 8 * 3600 + 1e-6  # max_ttl wins over exp + leeway
    clock.advance(0.5)
    renewed = issuer.issue("support-bot", on_behalf_of="user:alice", ttl="8h", agent_id="agt_max")
    assert engine.authenticate(renewed).handle == agent.handle


def test_a_token_admitted_for_a_per_call_audience_is_not_served_to_others(
    clock: charter.ManualClock, issuer: Issuer
) -> None:
    engine = make_engine(clock, issuer, audience="svc:crm")
    token = issuer.issue("support-bot", on_behalf_of="user:alice", audience="svc:billing")
    assert engine.authenticate(token, audience="svc:billing")
    refused("wrong_audience", lambda: engine.authenticate(token))  # the engine's own audience
    assert engine.authenticate(token, audience="svc:billing")


def test_a_templates_actions_as_scope_checks_see_them() -> None:
    engine = charter.Engine.from_dict(
        {
            "actions": ["a:x", "a:y", "b:z", "c:w"],
            "roles": {
                "base": {"allow": ["a:*"], "deny": ["a:y"]},
                "more": {
                    "inherits": ["base"],
                    "allow": [{"action": "b:z", "on": ["p/**"]}],
                    "deny": [{"action": "a:x", "on": ["q/**"]}],  # scoped: a:x stays possible elsewhere
                },
            },
            "templates": {"t": {"roles": ["more"]}, "u": {"roles": ["base"], "max_delegation_depth": 1}},
        }
    )
    view = engine._policy_view()
    assert view.templates["t"].actions == {"a:x", "b:z"}
    assert view.templates["u"].actions == {"a:x"}
    assert view.templates["u"].max_depth == 1
    assert view.templates["t"].max_depth == 4
    assert view.expand("a:*") == {"a:x", "a:y"}
    assert view.expand("*") == {"a:x", "a:y", "b:z", "c:w"}
    assert view.expand("zz:top") == set()


def test_attempts_to_widen_are_recorded(
    engine: charter.Engine, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    token = issuer.issue("support-bot", on_behalf_of="user:alice", scope=["payments:refund"])
    with caplog.at_level("WARNING", logger="charter.authn"):
        refused("scope_escalation", lambda: engine.authenticate(token))
    assert any("scope_escalation" in r.getMessage() for r in caplog.records)
    parent = issuer.issue("support-bot", on_behalf_of="user:alice", scope=["tickets:read"])
    with caplog.at_level("WARNING", logger="charter.identity"):
        refused("scope_escalation", lambda: issuer.exchange(parent, template="support-bot", scope=["*"]))
    assert any("exchange refused" in r.getMessage() for r in caplog.records)
