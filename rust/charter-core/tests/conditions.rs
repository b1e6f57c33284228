//! `when` conditions through `charter_core::Engine`: fail-closed semantics,
//! reasons and details, the env (context, resource, agent, principal),
//! batches with context columns, and explain.

#![allow(clippy::unwrap_used)]

use charter_core::cond::{Map, Value};
use charter_core::request::Columns;
use charter_core::{Action, Engine, ManualClock, PolicySpec, Reason, Request, Subject};
use std::sync::Arc;

const SEC: u64 = 1_000_000_000;

const POLICY: &str = r#"{
  "actions": ["pay:refund", "crm:write", "db:read"],
  "resources": { "pii": ["customers/*"] },
  "roles": {
    "support": {
      "allow": [
        { "action": "pay:refund", "when": "context.amount <= 500" },
        { "action": "crm:write", "when": "\"pii\" in resource.class and principal.team == \"care\"" },
        "db:read"
      ],
      "deny": [{ "action": "pay:refund", "when": "context.risk > 0.8" }]
    },
    "bot": { "allow": [{ "action": "*", "when": "agent.template == \"helper\" and agent.delegator == \"user:ann\"" }] }
  },
  "principals": { "user:ann": { "roles": ["support"], "attributes": { "team": "care" } } },
  "templates": { "helper": { "roles": ["bot"] }, "plain": { "roles": ["support"] } }
}"#;

fn engine() -> Engine {
    let spec: PolicySpec = serde_json::from_str(POLICY).unwrap();
    Engine::with_clock(spec, Arc::new(ManualClock::new(1_700_000_000 * SEC))).unwrap()
}

fn ctx(amount: Value, risk: Value) -> Map {
    Map::new([("amount", amount), ("risk", risk)])
}

fn refund(e: &Engine, s: Subject<'_>, c: Option<&Map>) -> (Reason, Option<String>, Option<String>) {
    let req = Request::new(s, Action::Name("pay:refund"), None)
        .with_context(c.map(|m| m as &dyn charter_core::request::Context));
    let d = e.check_request(&req);
    (d.reason, d.rule_path().map(str::to_string), d.detail)
}

#[test]
fn allow_and_deny_conditions() {
    let e = engine();
    let ann = Subject::Id("user:ann");
    let ok = ctx(Value::Int(10), Value::Float(0.1));
    assert_eq!(refund(&e, ann, Some(&ok)).0, Reason::Granted);
    let big = ctx(Value::Int(501), Value::Float(0.1));
    let (reason, rule, detail) = refund(&e, ann, Some(&big));
    assert_eq!(reason, Reason::ConditionFailed);
    assert_eq!(rule.as_deref(), Some("roles.support.allow[0]"));
    assert!(detail.unwrap().contains("is false"));
    let risky = ctx(Value::Int(10), Value::Float(0.9));
    assert_eq!(refund(&e, ann, Some(&risky)).0, Reason::DeniedByRule);
    // A deny that cannot be evaluated denies, and says why.
    let wrong = ctx(Value::Int(10), Value::from("high"));
    let (reason, rule, detail) = refund(&e, ann, Some(&wrong));
    assert_eq!(reason, Reason::DeniedByRule);
    assert_eq!(rule.as_deref(), Some("roles.support.deny[0]"));
    assert!(detail.unwrap().contains("type mismatch"));
    // No context: the deny's attribute is missing, so it denies.
    assert_eq!(refund(&e, ann, None).0, Reason::DeniedByRule);
}

#[test]
fn resource_class_and_principal_attributes() {
    let e = engine();
    let ann = Subject::Id("user:ann");
    let w = |r| e.check(ann, Action::Name("crm:write"), r).reason;
    assert_eq!(w(Some("customers/1")), Reason::Granted);
    assert_eq!(w(Some("orders/1")), Reason::ConditionFailed);
    assert_eq!(w(None), Reason::ConditionFailed);
    // Unconditioned actions keep their bitset answers.
    assert_eq!(
        e.check(ann, Action::Name("db:read"), None).reason,
        Reason::Granted
    );
}

#[test]
fn agent_attributes_and_batches() {
    let e = engine();
    let helper = e
        .provision("helper", Some(Subject::Id("user:ann")), None, None)
        .unwrap();
    let plain = e
        .provision("plain", Some(Subject::Id("user:ann")), None, None)
        .unwrap();
    let sub = e
        .provision("helper", Some(Subject::Handle(helper.handle)), None, None)
        .unwrap();
    let read = Action::Name("db:read");
    assert_eq!(
        e.check(Subject::Handle(helper.handle), read, None).reason,
        Reason::Granted
    );
    // `agent.delegator` of the sub-agent is the helper, not the principal.
    assert_eq!(
        e.check(Subject::Handle(sub.handle), read, None).reason,
        Reason::ConditionFailed
    );

    let refund = e.action_id("pay:refund").unwrap();
    let handles = [helper.handle, helper.handle, plain.handle, plain.handle];
    let actions = [refund; 4];
    let cols = Columns::new(vec![
        (
            "amount".into(),
            vec![
                Some(Value::Int(1)),
                Some(Value::Int(900)),
                Some(Value::Int(1)),
                None,
            ],
        ),
        ("risk".into(), vec![Some(Value::Float(0.0)); 4]),
    ]);
    let mut allowed = [false; 4];
    let mut reasons = [0u8; 4];
    e.check_batch_with(
        &handles,
        &actions,
        None,
        Some(&cols),
        None,
        &mut allowed,
        Some(&mut reasons),
    )
    .unwrap();
    assert_eq!(allowed, [true, false, true, false]);
    assert_eq!(
        reasons,
        [
            Reason::Granted.code(),
            Reason::DelegatorDenied.code(),
            Reason::Granted.code(),
            Reason::ConditionFailed.code()
        ]
    );
    // Same without reasons.
    let mut allowed2 = [false; 4];
    e.check_batch_with(
        &handles,
        &actions,
        None,
        Some(&cols),
        None,
        &mut allowed2,
        None,
    )
    .unwrap();
    assert_eq!(allowed2, allowed);
    // A column of the wrong length is refused.
    let short = Columns::new(vec![("amount".into(), vec![None])]);
    assert!(e
        .check_batch_with(
            &handles,
            &actions,
            None,
            Some(&short),
            None,
            &mut allowed2,
            None
        )
        .is_err());
}

#[test]
fn explain_reports_condition_outcomes() {
    let e = engine();
    let c = ctx(Value::from("lots"), Value::Float(0.1));
    let req = Request::new(Subject::Id("user:ann"), Action::Name("pay:refund"), None)
        .with_context(Some(&c));
    let v = e.explain_request(&req);
    assert_eq!(v["decision"]["reason"], "condition_failed");
    let entries = v["chain"][0]["entries"].as_array().unwrap();
    let allow = entries
        .iter()
        .find(|x| x["rule"] == "roles.support.allow[0]")
        .unwrap();
    assert_eq!(allow["condition"], "error");
    assert_eq!(allow["failure"]["kind"], "type_mismatch");
}

#[test]
fn bad_conditions_name_the_entry() {
    let doc = POLICY.replace("context.amount <= 500", "context.amount <=");
    let spec: PolicySpec = serde_json::from_str(&doc).unwrap();
    match Engine::new(spec) {
        Err(charter_core::Error::Policy { path, message }) => {
            assert_eq!(path, "roles.support.allow[0].when");
            assert!(message.starts_with("1:"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

const HOOKED: &str = r#"{
  "actions": ["pay:refund", "db:write"],
  "resources": { "prod": ["prod/**"] },
  "roles": {
    "f": { "allow": [{ "action": "pay:refund", "hook": "fraud" }, "db:write"] }
  },
  "principals": { "user:a": { "roles": ["f"] } },
  "guards": [{ "on": ["@prod"], "actions": ["db:write"], "require": "has context.ticket", "reason": "ticket" }]
}"#;

struct Fixed(
    charter_core::request::HookOutcome,
    std::sync::atomic::AtomicUsize,
);

impl charter_core::request::Hooks for Fixed {
    fn call(
        &self,
        call: &charter_core::request::HookCall<'_>,
    ) -> charter_core::request::HookOutcome {
        assert_eq!((call.hook, call.action), ("fraud", "pay:refund"));
        assert_eq!(call.identity.chain, vec!["user:a".to_string()]);
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.0.clone()
    }
}

#[test]
fn hooks_decide_their_entry() {
    use charter_core::request::HookOutcome;
    let spec: PolicySpec = serde_json::from_str(HOOKED).unwrap();
    let e = Engine::new(spec).unwrap();
    let a = Subject::Id("user:a");
    let refund = Action::Name("pay:refund");
    // Without hooks an entry with a hook fails closed.
    assert_eq!(e.check(a, refund, None).reason, Reason::HookError);
    for (outcome, reason, detail) in [
        (HookOutcome::Allow, Reason::Granted, None),
        (
            HookOutcome::Deny(Some("no".into())),
            Reason::HookDenied,
            Some("no"),
        ),
        (
            HookOutcome::Error("boom".into()),
            Reason::HookError,
            Some("boom"),
        ),
    ] {
        let hooks = Fixed(outcome, Default::default());
        let d = e.check_request(&Request::new(a, refund, None).with_hooks(Some(&hooks)));
        assert_eq!((d.reason, d.detail.as_deref()), (reason, detail));
        assert_eq!(d.rule_path(), Some("roles.f.allow[0]"));
        assert_eq!(hooks.1.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}

#[test]
fn guards_deny_after_the_roles() {
    let spec: PolicySpec = serde_json::from_str(HOOKED).unwrap();
    let e = Engine::new(spec).unwrap();
    let a = Subject::Id("user:a");
    let write = Action::Name("db:write");
    let d = e.check(a, write, Some("prod/x"));
    assert_eq!(d.reason, Reason::GuardFailed);
    assert_eq!(d.rule_path(), Some("guards[0]"));
    assert!(d.detail.unwrap().starts_with("ticket"));
    let ctx = Map::new([("ticket", Value::Int(1))]);
    let d = e.check_request(&Request::new(a, write, Some("prod/x")).with_context(Some(&ctx)));
    assert_eq!(d.reason, Reason::Granted);
    assert_eq!(e.check(a, write, Some("dev/x")).reason, Reason::Granted);
}
