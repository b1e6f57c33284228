//! Integration tests of `charter_core::Engine` through its public API:
//! decisions, delegation, lifecycle, expiry, reload, explain, and
//! concurrency (reload atomicity, provision/deprovision/check stress).

// Helpers outside `#[test]` functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use charter_core::{
    Action, Engine, Error, ManualClock, PolicySpec, PrincipalSpec, Reason, Subject,
};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

const SEC: u64 = 1_000_000_000;
const START: u64 = 1_700_000_000 * SEC;

const POLICY: &str = r#"{
  "actions": ["db:read", "db:write", "db:drop", "mail:read", "mail:send"],
  "resources": { "secret": ["secret/**"], "pii": ["customers/*", "users/*/profile"] },
  "roles": {
    "reader": {
      "allow": ["db:read", "mail:read"],
      "deny": [{ "action": "db:read", "on": ["@secret"] }]
    },
    "writer": {
      "inherits": ["reader"],
      "allow": ["db:write", { "action": "mail:send", "on": ["outbox/**"] }]
    },
    "admin": { "inherits": ["writer"], "allow": ["*"], "deny": ["db:drop"] },
    "mailer": { "allow": ["mail:send"] }
  },
  "principals": {
    "user:r": { "roles": ["reader"] },
    "user:w": { "roles": ["writer"] },
    "user:a": { "roles": ["admin"] }
  },
  "templates": {
    "reader-bot": { "roles": ["reader"], "ttl": 60, "max_ttl": 600 },
    "writer-bot": { "roles": ["writer"], "ttl": 600, "max_delegation_depth": 2 },
    "admin-bot": { "roles": ["admin"] },
    "mail-bot": { "roles": ["mailer"] }
  }
}"#;

fn spec(json: &str) -> PolicySpec {
    serde_json::from_str::<PolicySpec>(json).unwrap()
}

fn engine() -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(START));
    let e = Engine::with_clock(spec(POLICY), clock.clone()).unwrap();
    (e, clock)
}

fn id(s: &str) -> Subject<'_> {
    Subject::Id(s)
}

fn h(handle: u64) -> Subject<'static> {
    Subject::Handle(handle)
}

fn name(a: &str) -> Action<'_> {
    Action::Name(a)
}

/// (reason, rule path) of one check.
fn why(e: &Engine, s: Subject<'_>, a: &str, r: Option<&str>) -> (Reason, Option<String>) {
    let d = e.check(s, name(a), r);
    assert_eq!(d.allowed, d.reason == Reason::Granted);
    assert_eq!(d.policy_version(), e.snapshot().version());
    (d.reason, d.rule_path().map(str::to_string))
}

fn reason(e: &Engine, s: Subject<'_>, a: &str, r: Option<&str>) -> Reason {
    why(e, s, a, r).0
}

fn rule(r: &str) -> Option<String> {
    Some(r.to_string())
}

// ------------------------------------------------------------------ decisions

#[test]
fn deny_overrides_allow() {
    let (e, _) = engine();
    assert_eq!(
        why(&e, id("user:a"), "db:drop", None),
        (Reason::DeniedByRule, rule("roles.admin.deny[0]"))
    );
    assert_eq!(
        why(&e, id("user:a"), "db:drop", Some("tmp/x")),
        (Reason::DeniedByRule, rule("roles.admin.deny[0]"))
    );
    // an inherited deny beats the role's own `*`
    assert_eq!(
        why(&e, id("user:a"), "db:read", Some("secret/k")),
        (Reason::DeniedByRule, rule("roles.reader.deny[0]"))
    );
    assert_eq!(
        why(&e, id("user:r"), "db:read", Some("secret/a/b")),
        (Reason::DeniedByRule, rule("roles.reader.deny[0]"))
    );
    // `secret/**` matches `secret` itself, not `secrets`
    assert_eq!(
        reason(&e, id("user:r"), "db:read", Some("secret")),
        Reason::DeniedByRule
    );
    assert_eq!(
        why(&e, id("user:r"), "db:read", Some("secrets/x")),
        (Reason::Granted, rule("roles.reader.allow[0]"))
    );
    // a scoped deny never matches a request without a resource
    assert_eq!(
        why(&e, id("user:r"), "db:read", None),
        (Reason::Granted, rule("roles.reader.allow[0]"))
    );
    assert_eq!(
        why(&e, id("user:r"), "db:write", None),
        (Reason::NoGrant, None)
    );
    assert_eq!(
        why(&e, id("user:a"), "mail:send", Some("inbox/1")).0,
        Reason::Granted
    );
    // scoped allow: only with a matching resource
    assert_eq!(
        why(&e, id("user:w"), "mail:send", Some("outbox/1/2")),
        (Reason::Granted, rule("roles.writer.allow[1]"))
    );
    assert_eq!(
        why(&e, id("user:w"), "mail:send", Some("inbox/1")),
        (Reason::NoGrant, None)
    );
    assert_eq!(
        why(&e, id("user:w"), "mail:send", None),
        (Reason::NoGrant, None)
    );
}

#[test]
fn subject_action_and_resource_checks() {
    let (e, _) = engine();
    assert_eq!(
        reason(&e, id("nobody"), "nope:x", Some("//")),
        Reason::UnknownPrincipal
    );
    assert_eq!(
        reason(&e, h(12_345), "nope:x", Some("//")),
        Reason::UnknownAgent
    );
    assert_eq!(reason(&e, h(0), "db:read", None), Reason::UnknownAgent);
    assert_eq!(
        reason(&e, id("user:r"), "nope:x", Some("//")),
        Reason::UnknownAction
    );
    assert_eq!(
        e.check(id("user:r"), Action::Id(5), None).reason,
        Reason::UnknownAction
    );
    assert_eq!(
        e.check(id("user:r"), Action::Id(u32::MAX), None).reason,
        Reason::UnknownAction
    );
    for bad in ["", "/a", "a/", "a//b", "/"] {
        assert_eq!(
            reason(&e, id("user:r"), "db:read", Some(bad)),
            Reason::InvalidResource,
            "{bad}"
        );
    }
    let long = "x".repeat(4097);
    assert_eq!(
        reason(&e, id("user:r"), "db:read", Some(&long)),
        Reason::InvalidResource
    );
    assert_eq!(
        reason(&e, id("user:r"), "db:read", Some(&long[..4096])),
        Reason::Granted
    );
    // ids and names agree
    for (i, a) in ["db:read", "db:write", "db:drop", "mail:read", "mail:send"]
        .iter()
        .enumerate()
    {
        assert_eq!(e.action_id(a), Some(i as u32));
        for r in [None, Some("secret/x"), Some("outbox/1")] {
            let by_name = e.check(id("user:w"), name(a), r);
            let by_id = e.check(id("user:w"), Action::Id(i as u32), r);
            assert_eq!((by_name.reason, by_name.rule), (by_id.reason, by_id.rule));
        }
    }
    assert_eq!(e.action_id("nope:x"), None);
}

#[test]
fn delegation_is_an_intersection() {
    let (e, _) = engine();
    let over = e
        .provision("admin-bot", Some(id("user:r")), None, None)
        .unwrap();
    let s = h(over.handle);
    // several allow entries of the agent's own level match; any one of them may be reported
    let (r, rl) = why(&e, s, "db:read", None);
    assert_eq!(r, Reason::Granted);
    assert!(
        matches!(
            rl.as_deref(),
            Some("roles.admin.allow[0]" | "roles.reader.allow[0]")
        ),
        "{rl:?}"
    );
    // the template allows it, the principal does not
    assert_eq!(
        why(&e, s, "db:write", None),
        (Reason::DelegatorDenied, None)
    );
    // the principal's deny entry decides, but as the delegator's
    assert_eq!(
        why(&e, s, "db:read", Some("secret/x")).0,
        Reason::DeniedByRule,
        "the agent's own closure includes reader.deny"
    );
    // own level first: its deny decides
    assert_eq!(
        why(&e, s, "db:drop", None),
        (Reason::DeniedByRule, rule("roles.admin.deny[0]"))
    );

    let under = e
        .provision("reader-bot", Some(id("user:a")), None, None)
        .unwrap();
    assert_eq!(
        reason(&e, h(under.handle), "db:write", None),
        Reason::NoGrant
    );
    assert_eq!(
        reason(&e, h(under.handle), "mail:read", None),
        Reason::Granted
    );

    let mail = e
        .provision("mail-bot", Some(id("user:w")), None, None)
        .unwrap();
    let m = h(mail.handle);
    assert_eq!(
        why(&e, m, "mail:send", Some("outbox/1")),
        (Reason::Granted, rule("roles.mailer.allow[0]"))
    );
    assert_eq!(
        reason(&e, m, "mail:send", Some("inbox/1")),
        Reason::DelegatorDenied
    );
    assert_eq!(reason(&e, m, "mail:send", None), Reason::DelegatorDenied);
    assert_eq!(reason(&e, m, "mail:read", None), Reason::NoGrant);

    // a sub-agent is bounded by every level above it
    let sub = e
        .provision("admin-bot", Some(h(mail.handle)), None, None)
        .unwrap();
    assert_eq!(sub.depth, 2);
    assert_eq!(sub.principal.as_deref(), Some("user:w"));
    assert_eq!(sub.on_behalf_of.as_deref(), Some(mail.id.as_str()));
    assert_eq!(
        reason(&e, h(sub.handle), "mail:send", Some("outbox/x")),
        Reason::Granted
    );
    assert_eq!(
        reason(&e, h(sub.handle), "mail:send", Some("inbox/x")),
        Reason::DelegatorDenied
    );
    assert_eq!(
        reason(&e, h(sub.handle), "db:write", None),
        Reason::DelegatorDenied
    );
    // a deny of a delegator is reported as the delegator's
    let w_bot = e
        .provision("admin-bot", Some(id("user:w")), None, None)
        .unwrap();
    let (r, rl) = why(&e, h(w_bot.handle), "db:read", Some("secret/x"));
    assert_eq!(r, Reason::DeniedByRule);
    assert_eq!(rl, rule("roles.reader.deny[0]"));

    // by id and by handle agree
    for a in ["db:read", "db:write", "mail:send", "db:drop"] {
        for r in [None, Some("outbox/1"), Some("secret/1")] {
            assert_eq!(
                reason(&e, id(&sub.id), a, r),
                reason(&e, h(sub.handle), a, r)
            );
        }
    }

    // an agent for nobody: only its template
    let free = e.provision("writer-bot", None, None, None).unwrap();
    assert_eq!(
        (
            free.depth,
            free.principal.clone(),
            free.on_behalf_of.clone()
        ),
        (1, None, None)
    );
    assert_eq!(
        reason(&e, h(free.handle), "db:write", None),
        Reason::Granted
    );
    assert_eq!(reason(&e, h(free.handle), "db:drop", None), Reason::NoGrant);
}

#[test]
fn deprovision_cascades() {
    let (e, _) = engine();
    let a = e
        .provision("admin-bot", Some(id("user:w")), None, None)
        .unwrap();
    let b = e
        .provision("reader-bot", Some(h(a.handle)), None, None)
        .unwrap();
    let c = e
        .provision("reader-bot", Some(id(&b.id)), None, None)
        .unwrap();
    let d = e
        .provision("reader-bot", Some(h(a.handle)), None, None)
        .unwrap();
    let other = e
        .provision("writer-bot", Some(id("user:w")), None, None)
        .unwrap();
    assert_eq!(c.depth, 3);
    assert_eq!(e.stats().agents, 5);

    assert_eq!(e.deprovision(h(a.handle)).unwrap(), 4);
    assert_eq!(e.stats().agents, 1);
    assert_eq!(reason(&e, h(a.handle), "db:read", None), Reason::Revoked);
    for x in [&b, &c, &d] {
        assert_eq!(
            reason(&e, h(x.handle), "db:read", None),
            Reason::DelegatorRevoked
        );
        assert_eq!(
            reason(&e, id(&x.id), "db:read", None),
            Reason::DelegatorRevoked
        );
        assert_eq!(e.agent(h(x.handle)).unwrap().state, "delegator_revoked");
    }
    assert_eq!(e.agent(id(&a.id)).unwrap().state, "revoked");
    assert_eq!(
        reason(&e, h(other.handle), "db:write", None),
        Reason::Granted
    );
    // already retired
    assert_eq!(e.deprovision(h(a.handle)).unwrap(), 0);
    assert_eq!(e.deprovision(id(&c.id)).unwrap(), 0);
    // a retired agent cannot delegate
    assert!(matches!(
        e.provision("reader-bot", Some(h(b.handle)), None, None),
        Err(Error::Provision(_))
    ));
    assert!(matches!(
        e.deprovision(id("nobody")),
        Err(Error::UnknownSubject(_))
    ));
    assert!(matches!(
        e.deprovision(h(999_999)),
        Err(Error::UnknownSubject(_))
    ));
}

#[test]
fn depth_limits() {
    let (e, _) = engine();
    let a = e
        .provision("writer-bot", Some(id("user:w")), None, None)
        .unwrap();
    let b = e
        .provision("writer-bot", Some(h(a.handle)), None, None)
        .unwrap();
    assert_eq!(b.depth, 2);
    assert!(matches!(
        e.provision("writer-bot", Some(h(b.handle)), None, None),
        Err(Error::Provision(_))
    ));
    // a template with the default bound (4) below a stricter one is still bound by it
    assert!(matches!(
        e.provision("reader-bot", Some(h(b.handle)), None, None),
        Err(Error::Provision(_))
    ));
    let mut x = e
        .provision("admin-bot", Some(id("user:a")), None, None)
        .unwrap();
    for depth in 2..=4 {
        x = e
            .provision("admin-bot", Some(h(x.handle)), None, None)
            .unwrap();
        assert_eq!(x.depth, depth);
    }
    assert!(matches!(
        e.provision("admin-bot", Some(h(x.handle)), None, None),
        Err(Error::Provision(_))
    ));
    assert_eq!(reason(&e, h(x.handle), "db:write", None), Reason::Granted);
}

#[test]
fn refused_provision_leaves_the_chain_usable() {
    let (e, _) = engine();
    // refused after the delegator was resolved: ttl above max_ttl, id in use, bad id
    assert!(matches!(
        e.provision("reader-bot", Some(id("user:w")), Some(601 * SEC), None),
        Err(Error::Provision(_))
    ));
    assert!(e
        .provision("reader-bot", Some(id("user:w")), None, Some("user:r"))
        .is_err());
    assert!(e
        .provision("reader-bot", Some(id("user:w")), None, Some("bad id"))
        .is_err());
    let a = e
        .provision("reader-bot", Some(id("user:w")), None, None)
        .unwrap();
    assert_eq!(reason(&e, h(a.handle), "db:read", None), Reason::Granted);
    let mut allowed = [false];
    let mut reasons = [0u8];
    e.check_batch(&[a.handle], &[0], None, &mut allowed, Some(&mut reasons))
        .unwrap();
    assert_eq!((allowed, reasons), ([true], [Reason::Granted.code()]));
}

#[test]
fn provision_errors() {
    let (e, _) = engine();
    assert!(matches!(
        e.provision("nope", None, None, None),
        Err(Error::Provision(_))
    ));
    assert!(matches!(
        e.provision("reader-bot", Some(id("user:nobody")), None, None),
        Err(Error::UnknownSubject(_))
    ));
    assert!(matches!(
        e.provision("reader-bot", None, Some(0), None),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        e.provision("reader-bot", None, Some(601 * SEC), None),
        Err(Error::Provision(_))
    ));
    let a = e
        .provision("reader-bot", None, Some(600 * SEC), Some("bot-1"))
        .unwrap();
    assert_eq!(a.id, "bot-1");
    assert!(matches!(
        e.provision("reader-bot", None, None, Some("bot-1")),
        Err(Error::Provision(_))
    ));
    assert!(matches!(
        e.provision("reader-bot", None, None, Some("")),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(e.stats().agents, 1);
}

// --------------------------------------------------------------------- expiry

#[test]
fn expiry_follows_the_manual_clock() {
    let (e, clock) = engine();
    let a = e
        .provision("reader-bot", Some(id("user:w")), None, None)
        .unwrap();
    assert_eq!(a.created_at_ns, START);
    assert_eq!(a.expires_at_ns, Some(START + 60 * SEC));
    let long = e
        .provision("reader-bot", Some(id("user:w")), Some(600 * SEC), None)
        .unwrap();
    // clamped to the parent's expiry
    let child = e
        .provision("admin-bot", Some(h(a.handle)), None, None)
        .unwrap();
    assert_eq!(child.expires_at_ns, a.expires_at_ns);
    let child_short = e
        .provision("reader-bot", Some(h(a.handle)), Some(10 * SEC), None)
        .unwrap();
    assert_eq!(child_short.expires_at_ns, Some(START + 10 * SEC));
    let forever = e
        .provision("admin-bot", Some(id("user:a")), None, None)
        .unwrap();
    assert_eq!(forever.expires_at_ns, None);

    clock.advance(10 * SEC - 1);
    assert_eq!(
        reason(&e, h(child_short.handle), "db:read", None),
        Reason::Granted
    );
    clock.advance(1);
    assert_eq!(
        reason(&e, h(child_short.handle), "db:read", None),
        Reason::Expired
    );
    assert_eq!(
        reason(&e, id(&child_short.id), "db:read", None),
        Reason::Expired
    );
    assert_eq!(e.agent(h(child_short.handle)).unwrap().state, "expired");

    clock.set(START + 60 * SEC - 1);
    assert_eq!(reason(&e, h(a.handle), "db:read", None), Reason::Granted);
    assert_eq!(
        reason(&e, h(child.handle), "db:read", None),
        Reason::Granted
    );
    clock.advance(1);
    for x in [&a, &child] {
        assert_eq!(reason(&e, h(x.handle), "db:read", None), Reason::Expired);
        let mut allowed = [true];
        let mut reasons = [0u8];
        e.check_batch(&[x.handle], &[0], None, &mut allowed, Some(&mut reasons))
            .unwrap();
        assert_eq!((allowed, reasons), ([false], [Reason::Expired.code()]));
    }
    assert_eq!(reason(&e, h(long.handle), "db:read", None), Reason::Granted);
    assert_eq!(
        reason(&e, h(forever.handle), "db:read", None),
        Reason::Granted
    );
    // an expired agent cannot delegate
    assert!(matches!(
        e.provision("reader-bot", Some(h(a.handle)), None, None),
        Err(Error::Provision(_))
    ));

    // sweep retires what is over, once
    let live_before = e.stats().agents;
    let swept = e.sweep();
    assert_eq!(swept, 3);
    assert_eq!(e.stats().agents, live_before - 3);
    assert_eq!(e.sweep(), 0);
    assert_eq!(reason(&e, h(a.handle), "db:read", None), Reason::Expired);
    assert_eq!(e.agent(h(child.handle)).unwrap().state, "expired");
    assert_eq!(e.deprovision(h(a.handle)).unwrap(), 0);

    clock.advance(10_000 * SEC);
    assert_eq!(
        reason(&e, h(forever.handle), "db:read", None),
        Reason::Granted
    );
    assert_eq!(reason(&e, h(long.handle), "db:read", None), Reason::Expired);
}

// --------------------------------------------------------------------- batch

#[test]
fn batch_matches_single_checks() {
    let (e, clock) = engine();
    let live = e
        .provision("writer-bot", Some(id("user:w")), None, None)
        .unwrap();
    let over = e
        .provision("admin-bot", Some(id("user:r")), None, None)
        .unwrap();
    let revoked = e
        .provision("reader-bot", Some(id("user:w")), None, None)
        .unwrap();
    let child = e
        .provision("reader-bot", Some(h(revoked.handle)), None, None)
        .unwrap();
    let short = e
        .provision("reader-bot", Some(id("user:r")), Some(SEC), None)
        .unwrap();
    e.deprovision(h(revoked.handle)).unwrap();
    clock.advance(2 * SEC);
    let handles = [
        live.handle,
        over.handle,
        revoked.handle,
        child.handle,
        short.handle,
        77_777,
        0,
    ];
    let resources = [None, Some("secret/x"), Some("outbox/1"), Some("a//b")];
    let (mut hs, mut acts, mut res) = (Vec::new(), Vec::new(), Vec::new());
    for &hd in &handles {
        for a in 0..6u32 {
            for &r in &resources {
                hs.push(hd);
                acts.push(a);
                res.push(r);
            }
        }
    }
    let n = hs.len();
    let mut allowed = vec![false; n];
    let mut reasons = vec![0u8; n];
    e.check_batch(&hs, &acts, Some(&res), &mut allowed, Some(&mut reasons))
        .unwrap();
    let mut plain = vec![false; n];
    e.check_batch(&hs, &acts, Some(&res), &mut plain, None)
        .unwrap();
    let mut seen = HashSet::new();
    for i in 0..n {
        let d = e.check(h(hs[i]), Action::Id(acts[i]), res[i]);
        assert_eq!(allowed[i], d.allowed, "request {i}");
        assert_eq!(plain[i], d.allowed, "request {i}");
        assert_eq!(reasons[i], d.reason.code(), "request {i}");
        seen.insert(d.reason);
    }
    for r in [
        Reason::Granted,
        Reason::DeniedByRule,
        Reason::NoGrant,
        Reason::DelegatorDenied,
        Reason::UnknownAction,
        Reason::UnknownAgent,
        Reason::Expired,
        Reason::Revoked,
        Reason::DelegatorRevoked,
        Reason::InvalidResource,
    ] {
        assert!(seen.contains(&r), "{r:?} not exercised");
    }
    // without resources
    let mut a2 = vec![false; n];
    let mut r2 = vec![0u8; n];
    e.check_batch(&hs, &acts, None, &mut a2, Some(&mut r2))
        .unwrap();
    let mut p2 = vec![false; n];
    e.check_batch(&hs, &acts, None, &mut p2, None).unwrap();
    for i in 0..n {
        let d = e.check(h(hs[i]), Action::Id(acts[i]), None);
        assert_eq!(
            (a2[i], p2[i], r2[i]),
            (d.allowed, d.allowed, d.reason.code()),
            "request {i}"
        );
    }
}

#[test]
fn batch_length_mismatch_is_an_error() {
    let (e, _) = engine();
    let mut out = [false; 2];
    assert!(matches!(
        e.check_batch(&[1, 2], &[0], None, &mut out, None),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        e.check_batch(&[1, 2], &[0, 0], Some(&[None]), &mut out, None),
        Err(Error::InvalidArgument(_))
    ));
    let mut short = [0u8; 1];
    assert!(matches!(
        e.check_batch(&[1, 2], &[0, 0], None, &mut out, Some(&mut short)),
        Err(Error::InvalidArgument(_))
    ));
    let mut one = [false; 1];
    assert!(matches!(
        e.check_batch(&[1, 2], &[0, 0], None, &mut one, None),
        Err(Error::InvalidArgument(_))
    ));
    e.check_batch(&[], &[], None, &mut [], Some(&mut []))
        .unwrap();
}

// -------------------------------------------------------------------- reload

#[test]
fn reload_swaps_policy_and_keeps_agents() {
    let (e, _) = engine();
    let v1 = e.snapshot().version().to_string();
    assert_eq!(v1.len(), 16);
    let reader = e
        .provision("reader-bot", Some(id("user:w")), None, None)
        .unwrap();
    let writer = e
        .provision("writer-bot", Some(id("user:w")), None, None)
        .unwrap();
    let sub = e
        .provision("reader-bot", Some(h(writer.handle)), None, None)
        .unwrap();

    // same document: same version
    assert_eq!(e.reload(spec(POLICY)).unwrap(), (v1.clone(), v1.clone()));

    // reader gains db:write; writer-bot is removed
    let mut doc: serde_json::Value = serde_json::from_str(POLICY).unwrap();
    doc["roles"]["reader"]["allow"] = serde_json::json!(["db:read", "mail:read", "db:write"]);
    doc["templates"]
        .as_object_mut()
        .unwrap()
        .remove("writer-bot");
    let p2: PolicySpec = serde_json::from_value(doc).unwrap();
    let (old, v2) = e.reload(p2).unwrap();
    assert_eq!(old, v1);
    assert_ne!(v2, v1);
    assert_eq!(e.stats().policy_version, v2);

    assert_eq!(e.agent(h(reader.handle)).unwrap().id, reader.id);
    let d = e.check(h(reader.handle), name("db:write"), None);
    assert_eq!(
        (d.reason, d.policy_version()),
        (Reason::Granted, v2.as_str())
    );
    assert_eq!(reason(&e, id("user:r"), "db:write", None), Reason::Granted);
    assert_eq!(
        reason(&e, h(writer.handle), "db:read", None),
        Reason::UnknownTemplate
    );
    assert_eq!(
        reason(&e, id(&writer.id), "db:read", None),
        Reason::UnknownTemplate
    );
    assert_eq!(
        reason(&e, h(sub.handle), "db:read", None),
        Reason::UnknownTemplate
    );
    assert!(matches!(
        e.provision("writer-bot", None, None, None),
        Err(Error::Provision(_))
    ));

    // a bad reload changes nothing
    let mut bad: serde_json::Value = serde_json::from_str(POLICY).unwrap();
    bad["roles"]["reader"]["inherits"] = serde_json::json!(["admin"]);
    let err = e.reload(serde_json::from_value(bad).unwrap()).unwrap_err();
    assert!(
        matches!(&err, Error::Policy { path, message } if path.contains("inherits") && message.contains("cycle"))
    );
    assert_eq!(e.snapshot().version(), v2);
    assert_eq!(
        reason(&e, h(reader.handle), "db:write", None),
        Reason::Granted
    );

    // back to the first policy: the template is back, its agents with it
    let (_, back) = e.reload(spec(POLICY)).unwrap();
    assert_eq!(back, v1);
    assert_eq!(
        reason(&e, h(writer.handle), "db:write", None),
        Reason::Granted
    );
    assert_eq!(reason(&e, h(sub.handle), "db:read", None), Reason::Granted);
    assert_eq!(
        reason(&e, h(reader.handle), "db:write", None),
        Reason::NoGrant
    );
}

#[test]
fn reload_lowering_a_depth_bound() {
    let (e, _) = engine();
    let a = e
        .provision("admin-bot", Some(id("user:a")), None, None)
        .unwrap();
    let b = e
        .provision("admin-bot", Some(h(a.handle)), None, None)
        .unwrap();
    let c = e
        .provision("admin-bot", Some(h(b.handle)), None, None)
        .unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(POLICY).unwrap();
    doc["templates"]["admin-bot"]["max_delegation_depth"] = serde_json::json!(2);
    e.reload(serde_json::from_value(doc).unwrap()).unwrap();
    assert_eq!(reason(&e, h(a.handle), "db:write", None), Reason::Granted);
    assert_eq!(reason(&e, h(b.handle), "db:write", None), Reason::Granted);
    assert_eq!(
        reason(&e, h(c.handle), "db:write", None),
        Reason::DelegationTooDeep
    );
    assert!(matches!(
        e.provision("admin-bot", Some(h(b.handle)), None, None),
        Err(Error::Provision(_))
    ));
}

#[test]
fn runtime_principals() {
    let (e, _) = engine();
    let spec_of = |roles: &[&str]| PrincipalSpec {
        roles: roles.iter().map(|r| r.to_string()).collect(),
        ..PrincipalSpec::default()
    };
    e.upsert_principal("user:new", spec_of(&["writer"]))
        .unwrap();
    assert_eq!(
        reason(&e, id("user:new"), "db:write", None),
        Reason::Granted
    );
    // runtime principals override the document ...
    e.upsert_principal("user:r", spec_of(&["admin"])).unwrap();
    assert_eq!(reason(&e, id("user:r"), "db:write", None), Reason::Granted);
    // ... and survive reloads
    e.reload(spec(POLICY)).unwrap();
    assert_eq!(reason(&e, id("user:r"), "db:write", None), Reason::Granted);
    assert_eq!(
        reason(&e, id("user:new"), "db:write", None),
        Reason::Granted
    );
    assert!(matches!(
        e.upsert_principal("user:x", spec_of(&["nope"])),
        Err(Error::Policy { .. })
    ));
    assert!(matches!(
        e.upsert_principal("bad id", spec_of(&[])),
        Err(Error::InvalidArgument(_))
    ));

    let a = e
        .provision("admin-bot", Some(id("user:new")), None, None)
        .unwrap();
    let b = e
        .provision("reader-bot", Some(h(a.handle)), None, None)
        .unwrap();
    let c = e
        .provision("reader-bot", Some(id("user:new")), None, None)
        .unwrap();
    let other = e
        .provision("reader-bot", Some(id("user:w")), None, None)
        .unwrap();
    assert_eq!(e.remove_principal("user:new").unwrap(), 3);
    for x in [&a, &b, &c] {
        assert_eq!(
            reason(&e, h(x.handle), "db:read", None),
            Reason::PrincipalRemoved
        );
    }
    assert_eq!(
        reason(&e, id("user:new"), "db:read", None),
        Reason::UnknownPrincipal
    );
    assert_eq!(
        reason(&e, h(other.handle), "db:read", None),
        Reason::Granted
    );
    assert!(matches!(
        e.remove_principal("user:new"),
        Err(Error::UnknownSubject(_))
    ));
    assert!(matches!(
        e.provision("reader-bot", Some(id("user:new")), None, None),
        Err(Error::UnknownSubject(_))
    ));
    // removal survives reloads too
    e.reload(spec(POLICY)).unwrap();
    assert_eq!(
        reason(&e, id("user:new"), "db:read", None),
        Reason::UnknownPrincipal
    );
    // a document principal can be removed as well
    e.remove_principal("user:w").unwrap();
    assert_eq!(
        reason(&e, h(other.handle), "db:read", None),
        Reason::PrincipalRemoved
    );
    assert_eq!(
        reason(&e, id("user:w"), "db:read", None),
        Reason::UnknownPrincipal
    );
}

// -------------------------------------------------------------------- explain

#[test]
fn explain_describes_the_chain() {
    let (e, _) = engine();
    let bot = e
        .provision("admin-bot", Some(id("user:r")), None, None)
        .unwrap();
    let x = e.explain(h(bot.handle), name("db:write"), Some("t/1"));
    assert_eq!(x["decision"]["allowed"], false);
    assert_eq!(x["decision"]["reason"], "delegator_denied");
    assert_eq!(x["decision"]["policy_version"], e.snapshot().version());
    assert_eq!(x["action"], "db:write");
    assert_eq!(x["resource"], "t/1");
    assert_eq!(x["subject"]["kind"], "agent");
    assert_eq!(x["subject"]["id"], bot.id.as_str());
    assert_eq!(x["subject"]["template"], "admin-bot");
    let chain = x["chain"].as_array().unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[0]["kind"], "agent");
    assert_eq!(chain[0]["outcome"], "allow");
    assert_eq!(chain[1]["kind"], "principal");
    assert_eq!(chain[1]["id"], "user:r");
    assert_eq!(chain[1]["outcome"], "no_grant");
    assert_eq!(chain[1]["roles"], serde_json::json!(["reader"]));

    let x = e.explain(id("user:r"), name("db:read"), Some("secret/1"));
    assert_eq!(x["decision"]["reason"], "denied_by_rule");
    assert_eq!(x["decision"]["rule"], "roles.reader.deny[0]");
    let entries = x["chain"][0]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|en| en["matched"] == true));

    let x = e.explain(id("user:r"), name("db:read"), None);
    let entries = x["chain"][0]["entries"].as_array().unwrap();
    let deny = entries.iter().find(|en| en["effect"] == "deny").unwrap();
    assert_eq!(deny["matched"], false);
    assert_eq!(deny["on"], serde_json::json!(["secret/**"]));

    // never panics on odd subjects
    assert_eq!(
        e.explain(id("nobody"), name("db:read"), None)["decision"]["reason"],
        "unknown_principal"
    );
    assert_eq!(
        e.explain(h(4242), name("db:read"), None)["decision"]["reason"],
        "unknown_agent"
    );
    assert_eq!(
        e.explain(id("user:r"), Action::Id(99), None)["decision"]["reason"],
        "unknown_action"
    );
    assert_eq!(
        e.explain(id("user:r"), name("db:read"), Some("//"))["decision"]["reason"],
        "invalid_resource"
    );
    e.deprovision(h(bot.handle)).unwrap();
    assert_eq!(
        e.explain(h(bot.handle), name("db:read"), None)["decision"]["reason"],
        "revoked"
    );
}

// --------------------------------------------------------------- concurrency

/// Two policies with opposite verdicts: under `A` readers may `db:read` and
/// not `db:write`; under `B` the reverse.
fn flip_policy(reader_allows: &str) -> PolicySpec {
    spec(&format!(
        r#"{{
          "actions": ["db:read", "db:write"],
          "roles": {{ "reader": {{ "allow": ["{reader_allows}"] }}, "all": {{ "allow": ["*"] }} }},
          "principals": {{ "user:r": {{ "roles": ["reader"] }}, "user:all": {{ "roles": ["all"] }} }},
          "templates": {{ "bot": {{ "roles": ["reader"] }} }}
        }}"#
    ))
}

#[test]
fn reload_is_atomic_under_concurrent_checks() {
    const READERS: usize = 3;
    const RELOADS: u64 = 100;
    let clock = Arc::new(ManualClock::new(START));
    let e = Arc::new(Engine::with_clock(flip_policy("db:read"), clock).unwrap());
    let v_a = e.snapshot().version().to_string();
    let direct = e.provision("bot", None, None, None).unwrap();
    let delegated = e
        .provision("bot", Some(id("user:all")), None, None)
        .unwrap();
    e.reload(flip_policy("db:write")).unwrap();
    let v_b = e.snapshot().version().to_string();
    assert_ne!(v_a, v_b);
    e.reload(flip_policy("db:read")).unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for t in 0..READERS {
        let (e, done, checks) = (e.clone(), done.clone(), checks.clone());
        let (v_a, v_b) = (v_a.clone(), v_b.clone());
        let (hd, hi, di) = (direct.handle, delegated.handle, delegated.id.clone());
        readers.push(thread::spawn(move || {
            let mut seen = [0u64; 2];
            let subjects = [
                Subject::Id("user:r"),
                Subject::Handle(hd),
                Subject::Handle(hi),
                Subject::Id(&di),
            ];
            let mut i = 0usize;
            while !done.load(Ordering::Acquire) {
                i += 1;
                let s = subjects[(i + t) % subjects.len()];
                for (a, allowed_under_a) in [("db:read", true), ("db:write", false)] {
                    let d = e.check(s, Action::Name(a), None);
                    let expect = if d.policy_version() == v_a {
                        seen[0] += 1;
                        allowed_under_a
                    } else {
                        assert_eq!(
                            d.policy_version(),
                            v_b,
                            "a decision under an unknown policy"
                        );
                        seen[1] += 1;
                        !allowed_under_a
                    };
                    assert_eq!(
                        d.allowed,
                        expect,
                        "{a} for {s:?} under {}: {:?}",
                        d.policy_version(),
                        d.reason
                    );
                    let want = if expect {
                        Reason::Granted
                    } else {
                        Reason::NoGrant
                    };
                    assert_eq!(d.reason, want);
                }
                // a batch reads one snapshot: each pair is exactly one of the two verdicts
                let hs = [hd, hd, hi, hi];
                let acts = [0, 1, 0, 1];
                let mut out = [false; 4];
                e.check_batch(&hs, &acts, None, &mut out, None).unwrap();
                assert!(
                    out == [true, false, true, false] || out == [false, true, false, true],
                    "{out:?}"
                );
                checks.fetch_add(1, Ordering::Release);
            }
            seen
        }));
    }
    let writer = {
        let (e, checks) = (e.clone(), checks.clone());
        thread::spawn(move || {
            for i in 0..RELOADS {
                let before = checks.load(Ordering::Acquire);
                let next = if i % 2 == 0 { "db:write" } else { "db:read" };
                e.reload(flip_policy(next)).unwrap();
                // let the readers see this version before the next swap
                while checks.load(Ordering::Acquire) < before + READERS as u64 {
                    thread::yield_now();
                }
            }
        })
    };
    writer.join().unwrap();
    done.store(true, Ordering::Release);
    let mut total = [0u64; 2];
    for r in readers {
        let seen = r.join().unwrap();
        total[0] += seen[0];
        total[1] += seen[1];
    }
    assert!(total[0] > 0 && total[1] > 0, "{total:?}");
}

/// `TEMPLATES` disjoint templates, template `i` allowing only action `i`.
fn disjoint_policy() -> PolicySpec {
    let n = TEMPLATES;
    let actions: Vec<String> = (0..n).map(|i| format!("\"tool:a{i}\"")).collect();
    let roles: Vec<String> = (0..n)
        .map(|i| format!("\"r{i}\": {{ \"allow\": [\"tool:a{i}\"] }}"))
        .collect();
    let templates: Vec<String> = (0..n)
        .map(|i| format!("\"t{i}\": {{ \"roles\": [\"r{i}\"] }}"))
        .collect();
    spec(&format!(
        r#"{{
          "actions": [{}],
          "roles": {{ {}, "all": {{ "allow": ["*"] }} }},
          "principals": {{ "user:all": {{ "roles": ["all"] }} }},
          "templates": {{ {} }}
        }}"#,
        actions.join(", "),
        roles.join(", "),
        templates.join(", ")
    ))
}

const TEMPLATES: usize = 4;

/// Assert that `handle`/`agent_id`, provisioned from template `t`, is allowed
/// at most action `t`, and if `live`, exactly action `t`.
fn assert_rights(e: &Engine, handle: u64, agent_id: &str, t: usize, live: bool) {
    let acts: Vec<u32> = (0..TEMPLATES as u32).collect();
    let hs = vec![handle; TEMPLATES];
    let mut batch = vec![false; TEMPLATES];
    let mut reasons = vec![0u8; TEMPLATES];
    e.check_batch(&hs, &acts, None, &mut batch, Some(&mut reasons))
        .unwrap();
    for a in 0..TEMPLATES {
        let by_handle = e.check(Subject::Handle(handle), Action::Id(a as u32), None);
        let by_id = e.check(Subject::Id(agent_id), Action::Id(a as u32), None);
        for (how, allowed, why) in [
            ("handle", by_handle.allowed, by_handle.reason),
            ("id", by_id.allowed, by_id.reason),
            (
                "batch",
                batch[a],
                charter_core::ALL_REASONS[reasons[a] as usize],
            ),
        ] {
            if allowed {
                assert_eq!(
                    a, t,
                    "{how} check of an agent of t{t} was granted action a{a}"
                );
            } else if live {
                assert_ne!(
                    a, t,
                    "{how} check of a live agent of t{t} denied its own action: {why:?}"
                );
                assert_eq!(why, Reason::NoGrant, "{how}");
            } else {
                // retired: the precise reason, or, once its slot (or id) is reused, unknown
                assert!(
                    matches!(
                        why,
                        Reason::Revoked | Reason::UnknownAgent | Reason::UnknownPrincipal
                    ),
                    "{how} check of a retired agent: {why:?}"
                );
            }
        }
    }
}

#[test]
fn provision_deprovision_check_stress() {
    const WORKERS: usize = 4;
    const ROUNDS: usize = 1_500;
    let clock = Arc::new(ManualClock::new(START));
    let e = Arc::new(Engine::with_clock(disjoint_policy(), clock).unwrap());
    // recently provisioned agents, live or not: (handle, id, template)
    let recent: Arc<Mutex<Vec<(u64, String, usize)>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));

    // checkers: pick agents other threads provisioned and check them while they churn
    let mut checkers = Vec::new();
    for c in 0..2 {
        let (e, recent, stop) = (e.clone(), recent.clone(), stop.clone());
        checkers.push(thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(Ordering::Acquire) {
                let pick = {
                    let r = recent.lock().unwrap();
                    if r.is_empty() {
                        None
                    } else {
                        Some(r[(n * 7 + c) % r.len()].clone())
                    }
                };
                n += 1;
                if let Some((handle, agent_id, t)) = pick {
                    // liveness unknown here: only "never another agent's rights"
                    for a in 0..TEMPLATES {
                        let d = e.check(Subject::Handle(handle), Action::Id(a as u32), None);
                        assert!(!d.allowed || a == t, "handle of t{t} granted a{a}");
                        let d = e.check(Subject::Id(&agent_id), Action::Id(a as u32), None);
                        assert!(!d.allowed || a == t, "id of t{t} granted a{a}");
                    }
                } else {
                    thread::yield_now();
                }
            }
            n
        }));
    }

    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (e, recent) = (e.clone(), recent.clone());
        workers.push(thread::spawn(move || {
            let mut mine: Vec<(u64, String, usize)> = Vec::new();
            for round in 0..ROUNDS {
                let t = (w + round) % TEMPLATES;
                let template = format!("t{t}");
                let custom = format!("w{w}-r{round}");
                let use_custom = round % 3 == 0;
                let parent = (round % 2 == 0).then_some(Subject::Id("user:all"));
                let agent = e
                    .provision(
                        &template,
                        parent,
                        None,
                        use_custom.then_some(custom.as_str()),
                    )
                    .unwrap();
                assert_eq!(agent.template, template);
                assert_rights(&e, agent.handle, &agent.id, t, true);
                let info = e.agent(Subject::Handle(agent.handle)).unwrap();
                assert_eq!(
                    (info.id.as_str(), info.template.as_str()),
                    (agent.id.as_str(), template.as_str())
                );
                {
                    let mut r = recent.lock().unwrap();
                    if r.len() >= 64 {
                        r.remove(0);
                    }
                    r.push((agent.handle, agent.id.clone(), t));
                }
                mine.push((agent.handle, agent.id.clone(), t));
                // retire an older agent of ours, and re-check a retired one
                if mine.len() > 8 {
                    let (hd, aid, tt) = mine.remove(0);
                    let n = e.deprovision(Subject::Handle(hd)).unwrap();
                    assert!(n <= 1);
                    assert_rights(&e, hd, &aid, tt, false);
                }
            }
            for (hd, _, _) in &mine {
                e.deprovision(Subject::Handle(*hd)).unwrap();
            }
            mine.len()
        }));
    }
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Release);
    for c in checkers {
        c.join().unwrap();
    }
    let stats = e.stats();
    assert_eq!(stats.agents, 0);
    // more than REUSE_AFTER (4096) retirements happened, so slots were reused
    assert!(stats.slots < WORKERS * ROUNDS, "{stats:?}");
}
