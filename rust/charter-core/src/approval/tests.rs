//! Unit tests of the tables, and approvals through the engine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::cond::Map;
use crate::engine::Engine;
use crate::reason::Reason;
use crate::request::Columns;
use crate::request::Context;
use crate::{Action, ManualClock, PolicySpec, Subject};
use std::sync::Arc;

const SEC: u64 = 1_000_000_000;

fn binding(resource: &str, amount: i64) -> Binding {
    Binding {
        requester: Requester::Agent(7),
        action: "pay:refund".into(),
        resource: Some(resource.into()),
        rules: vec!["roles.clerk.allow[0]".into()].into_boxed_slice(),
        context: vec![("amount".into(), Some(Value::Int(amount)))].into_boxed_slice(),
    }
}

fn pending(resource: &str, amount: i64) -> Pending {
    Pending {
        binding: binding(resource, amount),
        requester: "agt_1".into(),
        chain: vec!["agt_1".into(), "user:erin".into()].into_boxed_slice(),
        approvers: vec![(
            "roles.clerk.allow[0]".into(),
            vec![Approver::Role("treasurer".into())].into_boxed_slice(),
        )]
        .into_boxed_slice(),
        created_ns: 0,
        expires_ns: 0,
        approved: false,
    }
}

#[test]
fn decision_ids_round_trip() {
    assert_eq!(decision_id((0x0a1b_2c3d, 42)), "0a1b2c3d-42");
    assert_eq!(parse_decision_id("0a1b2c3d-42"), Some((0x0a1b_2c3d, 42)));
    for bad in [
        "",
        "0a1b2c3d",
        "0a1b2c3-42",
        "0a1b2c3d-",
        "0a1b2c3d--1",
        "zzzzzzzz-1",
        "+a1b2c3d-1",
        "0a1b2c3d-+1",
    ] {
        assert_eq!(parse_decision_id(bad), None, "{bad}");
    }
}

#[test]
fn pending_ids_are_local_unless_given() {
    let t = Approvals::default();
    let a = t.register(None, pending("r/1", 1), 0);
    let b = t.register(None, pending("r/1", 1), 0);
    assert_eq!(a.0, b.0);
    assert_eq!(b.1, a.1 + 1);
    let c = t.register(Some((5, 9)), pending("r/1", 1), 0);
    assert_eq!(c, (5, 9));
    assert!(t.pending(c, 1).is_ok());
    assert_eq!(t.list(1).len(), 3);
}

#[test]
fn the_pending_table_is_bounded_and_forgets_the_oldest() {
    let t = Approvals::with_limits(3, 3);
    let keys: Vec<_> = (0..5)
        .map(|i| t.register(None, pending("r/1", i), 0))
        .collect();
    assert_eq!(t.len().0, 3);
    for k in &keys[..2] {
        let err = t.pending(*k, 1).unwrap_err();
        assert_eq!(err.refusal, Refusal::UnknownDecision);
    }
    for k in &keys[2..] {
        assert!(t.pending(*k, 1).is_ok());
    }
    // Expired entries are refused as such for a while, then forgotten.
    let late = PENDING_TTL_NS + 1;
    let refusal = |k: DecisionKey, now: u64| t.pending(k, now).unwrap_err().refusal;
    assert_eq!(refusal(keys[4], late), Refusal::Expired);
    t.register(None, pending("r/1", 9), late);
    assert_eq!(t.len().0, 3);
    let later = PENDING_TTL_NS + PENDING_MEMORY_NS;
    t.register(None, pending("r/1", 9), later);
    assert_eq!(t.len().0, 2);
    assert_eq!(refusal(keys[4], later), Refusal::UnknownDecision);
}

#[test]
fn a_grant_is_used_once_and_only_for_its_request() {
    let t = Approvals::default();
    let key = t.register(None, pending("r/1", 500), 0);
    let g = t.issue(key, "user:carol", (10, 60 * SEC), [7; 16]).unwrap();
    assert!(g.token.starts_with("apv_") && g.token.len() == 36);
    assert_eq!(g.expires_at_ns, 10 + 60 * SEC);
    // One grant per decision.
    assert_eq!(
        t.pending(key, 11).unwrap_err().refusal,
        Refusal::AlreadyApproved
    );
    let err = t.issue(key, "user:carol", (11, SEC), [8; 16]).unwrap_err();
    assert_eq!(err.refusal, Refusal::AlreadyApproved);

    let asked = binding("r/1", 500);
    let refused = |r: Result<(GrantKey, String), (Reason, String)>| r.unwrap_err().0;
    // Unknown or malformed tokens.
    assert_eq!(
        refused(t.redeem("apv_00", &asked, 20, Use::Consume)),
        Reason::ApprovalInvalid
    );
    assert_eq!(
        refused(t.redeem("", &asked, 20, Use::Consume)),
        Reason::ApprovalInvalid
    );
    let wrong = g.token.replace("apv_", "xyz_");
    assert_eq!(
        refused(t.redeem(&wrong, &asked, 20, Use::Consume)),
        Reason::ApprovalInvalid
    );
    // Another request: a mismatch, and the grant stays usable.
    for other in [binding("r/2", 500), binding("r/1", 501)] {
        let (reason, why) = t.redeem(&g.token, &other, 20, Use::Consume).unwrap_err();
        assert_eq!(reason, Reason::ApprovalMismatch);
        assert!(
            why.contains("r/1") || why.contains("context.amount"),
            "{why}"
        );
    }
    let mut agent = binding("r/1", 500);
    agent.requester = Requester::Agent(8);
    assert_eq!(
        refused(t.redeem(&g.token, &agent, 20, Use::Consume)),
        Reason::ApprovalMismatch
    );
    let mut absent = binding("r/1", 500);
    absent.context = vec![("amount".into(), None)].into_boxed_slice();
    assert_eq!(
        refused(t.redeem(&g.token, &absent, 20, Use::Consume)),
        Reason::ApprovalMismatch
    );
    // Peeking does not use it up; using it does.
    assert!(t.redeem(&g.token, &asked, 20, Use::Peek).is_ok());
    let (hash, detail) = t.redeem(&g.token, &asked, 20, Use::Consume).unwrap();
    assert!(detail.contains("user:carol"));
    assert_eq!(
        refused(t.redeem(&g.token, &asked, 21, Use::Consume)),
        Reason::ApprovalReplayed
    );
    // The shadow of the decision that used it sees it as unused; of another, as used.
    assert!(t
        .redeem(&g.token, &asked, 20, Use::Shadow(Some(hash)))
        .is_ok());
    assert_eq!(
        refused(t.redeem(&g.token, &asked, 21, Use::Shadow(None))),
        Reason::ApprovalReplayed
    );
    // Given back (a later stage denied the request): usable again, until it expires.
    t.restore(&hash);
    assert!(t.redeem(&g.token, &asked, 22, Use::Peek).is_ok());
    let expiry = g.expires_at_ns;
    assert_eq!(
        refused(t.redeem(&g.token, &asked, expiry, Use::Consume)),
        Reason::ApprovalExpired
    );
}

#[test]
fn the_grant_table_is_bounded() {
    let t = Approvals::with_limits(10, 2);
    let tokens: Vec<String> = (0..3u8)
        .map(|i| {
            let key = t.register(None, pending("r/1", 500), 0);
            t.issue(key, "user:carol", (0, SEC), [i; 16]).unwrap().token
        })
        .collect();
    assert_eq!(t.len().1, 2);
    let asked = binding("r/1", 500);
    let r = t.redeem(&tokens[0], &asked, 1, Use::Peek).unwrap_err();
    assert_eq!(r.0, Reason::ApprovalInvalid);
    assert!(t.redeem(&tokens[2], &asked, 1, Use::Peek).is_ok());
}

const POLICY: &str = r#"{
  "actions": ["pay:refund", "pay:read"],
  "roles": {
    "clerk": {
      "allow": [
        "pay:read",
        { "action": "pay:refund", "when": "context.currency == \"EUR\"",
          "approval": "context.amount > 100", "approvers": ["treasurer", "user:dan"] }
      ]
    },
    "treasurer": { "allow": ["pay:read"] },
    "bot": { "allow": ["pay:refund", "pay:read"] }
  },
  "principals": {
    "user:erin": { "roles": ["clerk"] },
    "user:carol": { "roles": ["treasurer"] },
    "user:dan": { "roles": [] },
    "user:tess": { "roles": ["treasurer", "clerk"] },
    "user:zed": { "roles": ["clerk"] }
  },
  "templates": { "refunder": { "roles": ["bot"] } }
}"#;

fn engine() -> (Engine, Arc<ManualClock>) {
    let spec: PolicySpec = serde_json::from_str(POLICY).unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000 * SEC));
    (Engine::with_clock(spec, clock.clone()).unwrap(), clock)
}

fn ctx(amount: i64, token: Option<&str>) -> Map {
    let mut v = vec![
        ("amount", Value::Int(amount)),
        ("currency", Value::from("EUR")),
    ];
    if let Some(t) = token {
        v.push(("approval", Value::from(t)));
    }
    Map::new(v)
}

fn refund(e: &Engine, s: Subject<'_>, c: &Map) -> crate::Decision {
    let req = crate::Request::new(s, Action::Name("pay:refund"), Some("acct/1"));
    e.check_request(&req.with_context(Some(c as &dyn Context)))
}

fn id(d: &crate::Decision) -> String {
    decision_id((d.audit_stream, d.audit_seq.unwrap()))
}

#[test]
fn required_approved_allowed_once() {
    let (e, _) = engine();
    let bot = e
        .provision("refunder", Some(Subject::Id("user:erin")), None, None)
        .unwrap();
    let me = Subject::Handle(bot.handle);
    assert_eq!(refund(&e, me, &ctx(50, None)).reason, Reason::Granted);
    let d = refund(&e, me, &ctx(500, None));
    assert_eq!(d.reason, Reason::ApprovalRequired);
    assert_eq!(d.rule_path(), Some("roles.clerk.allow[1]"));
    let detail = d.detail.clone().unwrap();
    assert!(
        detail.contains("role `treasurer` or `user:dan`"),
        "{detail}"
    );
    assert!(detail.contains("context.amount > 100"), "{detail}");
    let g = e.approve(&id(&d), "user:carol", 60 * SEC, [1; 16]).unwrap();
    assert_eq!(
        (&*g.requester, &*g.binding.action),
        (bot.id.as_str(), "pay:refund")
    );
    let ok = refund(&e, me, &ctx(500, Some(&g.token)));
    assert_eq!(ok.reason, Reason::Granted);
    assert!(ok.detail.unwrap().contains("user:carol"));
    assert_eq!(
        refund(&e, me, &ctx(500, Some(&g.token))).reason,
        Reason::ApprovalReplayed
    );
    // The principal directly: its own request, its own approval.
    let d = refund(&e, Subject::Id("user:erin"), &ctx(500, None));
    assert_eq!(d.reason, Reason::ApprovalRequired);
    let g = e.approve(&id(&d), "user:dan", 60 * SEC, [2; 16]).unwrap();
    assert_eq!(
        refund(&e, Subject::Id("user:erin"), &ctx(500, Some(&g.token))).reason,
        Reason::Granted
    );
}

#[test]
fn who_may_approve() {
    let (e, clock) = engine();
    let bot = e
        .provision("refunder", Some(Subject::Id("user:erin")), None, None)
        .unwrap();
    let d = refund(&e, Subject::Handle(bot.handle), &ctx(500, None));
    let refusal = |who: &str| e.approve(&id(&d), who, SEC, [3; 16]).unwrap_err().refusal;
    assert_eq!(refusal("user:erin"), Refusal::FourEyes);
    assert_eq!(refusal("user:nobody"), Refusal::UnknownApprover);
    assert_eq!(refusal(&bot.id), Refusal::UnknownApprover);
    // A clerk is not a treasurer; a suspended treasurer approves nothing.
    let err = e.approve(&id(&d), "user:zed", SEC, [3; 16]).unwrap_err();
    assert_eq!(err.refusal, Refusal::NotAnApprover);
    assert!(
        err.message.contains("role `treasurer` or `user:dan`"),
        "{}",
        err.message
    );
    e.suspend(Subject::Id("user:carol"), "on leave").unwrap();
    assert_eq!(refusal("user:carol"), Refusal::NotAnApprover);
    e.resume(Subject::Id("user:carol")).unwrap();
    let d2 = refund(&e, Subject::Id("user:tess"), &ctx(500, None));
    assert_eq!(d2.reason, Reason::ApprovalRequired);
    let err = e.approve(&id(&d2), "user:tess", SEC, [3; 16]).unwrap_err();
    assert_eq!(err.refusal, Refusal::FourEyes);
    assert_eq!(
        e.approve(&id(&d), "user:carol", 0, [3; 16])
            .unwrap_err()
            .refusal,
        Refusal::InvalidArgument
    );
    assert_eq!(
        e.approve("nonsense", "user:carol", SEC, [3; 16])
            .unwrap_err()
            .refusal,
        Refusal::InvalidArgument
    );
    assert_eq!(
        e.approve("00000000-1", "user:carol", SEC, [3; 16])
            .unwrap_err()
            .refusal,
        Refusal::UnknownDecision
    );
    clock.advance(PENDING_TTL_NS);
    assert_eq!(refusal("user:carol"), Refusal::Expired);
}

#[test]
fn a_missing_key_asks_for_approval_and_binds_its_absence() {
    let (e, _) = engine();
    let erin = Subject::Id("user:erin");
    let no_amount = Map::new([("currency", Value::from("EUR"))]);
    let d = refund(&e, erin, &no_amount);
    assert_eq!(d.reason, Reason::ApprovalRequired);
    assert!(d.detail.clone().unwrap().contains("could not be evaluated"));
    let g = e.approve(&id(&d), "user:carol", SEC, [4; 16]).unwrap();
    assert_eq!(
        refund(&e, erin, &ctx(5, Some(&g.token))).reason,
        Reason::Granted,
        "no approval needed"
    );
    let mismatch = refund(&e, erin, &ctx(500, Some(&g.token)));
    assert_eq!(mismatch.reason, Reason::ApprovalMismatch);
    let with_token = Map::new([
        ("currency", Value::from("EUR")),
        ("approval", Value::from(g.token.as_str())),
    ]);
    assert_eq!(refund(&e, erin, &with_token).reason, Reason::Granted);
}

#[test]
fn batches_agree_and_use_grants_once() {
    let (e, _) = engine();
    let bot = e
        .provision("refunder", Some(Subject::Id("user:erin")), None, None)
        .unwrap();
    let d = refund(&e, Subject::Handle(bot.handle), &ctx(500, None));
    let g = e.approve(&id(&d), "user:carol", SEC, [5; 16]).unwrap();
    let a = e.action_id("pay:refund").unwrap();
    let tok = Some(Value::from(g.token.as_str()));
    let cols = Columns::new(vec![
        (
            "amount".into(),
            vec![
                Some(Value::Int(50)),
                Some(Value::Int(500)),
                Some(Value::Int(500)),
                Some(Value::Int(500)),
            ],
        ),
        ("currency".into(), vec![Some(Value::from("EUR")); 4]),
        ("approval".into(), vec![None, None, tok.clone(), tok]),
    ]);
    let res = vec![Some("acct/1"); 4];
    let mut allowed = vec![false; 4];
    let mut reasons = vec![0u8; 4];
    e.check_batch_with(
        &[bot.handle; 4],
        &[a; 4],
        Some(&res),
        Some(&cols),
        None,
        &mut allowed,
        Some(&mut reasons),
    )
    .unwrap();
    let got: Vec<Reason> = reasons
        .iter()
        .map(|r| crate::ALL_REASONS[*r as usize])
        .collect();
    assert_eq!(
        got,
        [
            Reason::Granted,
            Reason::ApprovalRequired,
            Reason::Granted,
            Reason::ApprovalReplayed
        ]
    );
    assert_eq!(allowed, [true, false, true, false]);
}

#[test]
fn explain_checks_a_grant_without_using_it() {
    let (e, _) = engine();
    let erin = Subject::Id("user:erin");
    let d = refund(&e, erin, &ctx(500, None));
    let g = e.approve(&id(&d), "user:carol", SEC, [6; 16]).unwrap();
    let c = ctx(500, Some(&g.token));
    let req = crate::Request::new(erin, Action::Name("pay:refund"), Some("acct/1"));
    let x = e.explain_request(&req.with_context(Some(&c as &dyn Context)));
    assert_eq!(x["decision"]["reason"], "granted");
    let entries = &x["chain"][0]["entries"];
    let entry = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e.get("approval").is_some())
        .unwrap();
    assert_eq!(entry["approval"]["needed"], true);
    assert_eq!(entry["approval"]["who"], "role `treasurer` or `user:dan`");
    assert_eq!(refund(&e, erin, &c).reason, Reason::Granted);
    assert_eq!(refund(&e, erin, &c).reason, Reason::ApprovalReplayed);
}

fn compile_error(entry: &str, principals: &str) -> String {
    let doc = format!(
        r#"{{"actions": ["a:b"], "roles": {{"r": {{"allow": [{entry}]}}, "treasurer": {{}}}}, "principals": {principals}}}"#
    );
    let spec: PolicySpec = serde_json::from_str(&doc).unwrap();
    crate::CompiledPolicy::compile(&spec)
        .unwrap_err()
        .to_string()
}

#[test]
fn approval_entries_are_checked_at_load() {
    let none = "{}";
    let e = compile_error(r#"{"action": "a:b", "approval": "true"}"#, none);
    assert!(
        e.starts_with("roles.r.allow[0].approvers: ") && e.contains("needs `approvers`"),
        "{e}"
    );
    let e = compile_error(r#"{"action": "a:b", "approvers": ["treasurer"]}"#, none);
    assert!(
        e.starts_with("roles.r.allow[0].approvers: ") && e.contains("without `approval`"),
        "{e}"
    );
    let e = compile_error(
        r#"{"action": "a:b", "approval": "true", "approvers": []}"#,
        none,
    );
    assert!(e.contains("`approvers` is empty"), "{e}");
    let e = compile_error(
        r#"{"action": "a:b", "approval": "true", "approvers": ["treasurer", "zz"]}"#,
        none,
    );
    assert!(
        e.starts_with("roles.r.allow[0].approvers[1]: unknown role or principal `zz`"),
        "{e}"
    );
    let e = compile_error(
        r#"{"action": "a:b", "approval": "true", "approvers": ["treasurer"]}"#,
        r#"{"treasurer": {}}"#,
    );
    assert!(e.contains("both a role and a principal"), "{e}");
    let e = compile_error(
        r#"{"action": "a:b", "approval": "amount > 1", "approvers": ["treasurer"]}"#,
        none,
    );
    assert!(
        e.starts_with("roles.r.allow[0].approval: 1:1: unknown name `amount`"),
        "{e}"
    );
    let doc = r#"{"actions": ["a:b"], "roles": {"r": {"deny": [{"action": "a:b", "approval": "true", "approvers": ["r"]}]}}}"#;
    let spec: PolicySpec = serde_json::from_str(doc).unwrap();
    let e = crate::CompiledPolicy::compile(&spec)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("roles.r.deny[0].approval: ") && e.contains("not supported on deny"),
        "{e}"
    );
}

#[test]
fn documents_without_approvers_keep_their_version() {
    let doc = r#"{"actions": ["a:b"], "roles": {"r": {"allow": [{"action": "a:b"}]}}}"#;
    let spec: PolicySpec = serde_json::from_str(doc).unwrap();
    let text = serde_json::to_string(&spec).unwrap();
    // The canonical form hashed into the version: as before approvals existed.
    assert!(
        text.contains(r#""approval":null"#) && !text.contains("approvers"),
        "{text}"
    );
}

#[test]
fn approval_false_is_no_approval_and_keys_are_converted() {
    let doc = r#"{"actions": ["a:b"], "roles": {"r": {"allow": [
        {"action": "a:b", "approval": "false", "approvers": ["r"]},
        {"action": "a:b", "approval": "context.x > 1", "approvers": ["r"]}]}}}"#;
    let spec: PolicySpec = serde_json::from_str(doc).unwrap();
    let p = crate::CompiledPolicy::compile(&spec).unwrap();
    assert!(p.rules[0].approval.is_none());
    assert!(p.rules[1].approval.is_some());
    let keys: Vec<&str> = p.context_keys.iter().map(|k| &**k).collect();
    assert_eq!(keys, ["approval", "x"]);
}
