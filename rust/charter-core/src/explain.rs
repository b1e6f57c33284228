//! `explain`: the full derivation of one decision, as data. Slow path: it
//! takes the writer lock to walk the delegation chain's metadata.

use crate::approval::{Approver, Requirement};
use crate::charge::Owner;
use crate::cond::{Env, Outcome};
use crate::engine::{Action, Engine, Request, Subject, NONE};
use crate::pattern::{split_resource, validate_resource};
use crate::policy::{CompiledPolicy, Effect};
use crate::registry::split_handle;
use crate::request::RequestEnv;
use crate::rights::{rule_matches, Level, LevelOutcome};
use serde_json::{json, Value};

impl Engine {
    /// Decide the request and describe how: the subject and its chain, each
    /// level's roles, the entries covering the action and whether they
    /// matched, and which entry decided.
    pub fn explain(
        &self,
        subject: Subject<'_>,
        action: Action<'_>,
        resource: Option<&str>,
    ) -> Value {
        self.explain_request(&Request::new(subject, action, resource))
    }

    /// [`Engine::explain`] of a full request: with its context, each `when`
    /// condition's outcome and, on failure, the sub-expression and values;
    /// with hooks, each hook that decides is called once for the decision and
    /// once per level. An approval grant in `context.approval` is checked,
    /// not used up.
    pub fn explain_request(&self, req: &Request<'_>) -> Value {
        let Request {
            subject,
            action,
            resource,
            context,
            hooks,
        } = *req;
        let d = self.check_explained(req);
        let snap = d.snapshot.clone();
        let policy = &*snap.policy;
        let action_id = match action {
            Action::Id(a) => Some(a).filter(|a| (*a as usize) < policy.action_count()),
            Action::Name(n) => policy.action_id(n),
        };
        let action_name = match (action, action_id) {
            (_, Some(a)) => policy.actions.get(a as usize).map(|s| s.to_string()),
            (Action::Name(n), None) => Some(n.to_string()),
            (Action::Id(i), None) => Some(format!("#{i}")),
        };
        let resource_ok = resource.is_none_or(|r| validate_resource(r).is_ok());
        let segs = resource.filter(|_| resource_ok).map(split_resource);

        // The chain's subjects, own first: (kind, id, template).
        let mut subjects: Vec<(&str, String, Option<String>)> = Vec::new();
        let mut subject_info = json!(null);
        let slot = match subject {
            Subject::Handle(h) => {
                Some(split_handle(h).0 as u32).filter(|s| self.slots.current_handle(*s) == Some(h))
            }
            Subject::Id(id) => self.index.read().find(id),
        };
        if let Some(slot) = slot {
            if let Ok(info) = self.agent(match subject {
                Subject::Handle(h) => Subject::Handle(h),
                Subject::Id(id) => Subject::Id(id),
            }) {
                subject_info = json!({
                    "kind": "agent", "id": info.id, "handle": info.handle, "template": info.template,
                    "on_behalf_of": info.on_behalf_of, "principal": info.principal, "depth": info.depth,
                    "state": info.state, "expires_at_ns": info.expires_at_ns,
                });
            }
            let w = self.writer.lock();
            let index = self.index.read();
            let mut cur = slot;
            let mut principal = NONE;
            while let Some(m) = w.metas.get(cur as usize) {
                let id = index
                    .ids
                    .get(cur as usize)
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                subjects.push((
                    "agent",
                    id,
                    Some(w.chains.templates.name(m.template).to_string()),
                ));
                principal = m.principal;
                if m.parent == NONE {
                    break;
                }
                cur = m.parent;
            }
            if principal != NONE {
                subjects.push((
                    "principal",
                    w.chains.principals.name(principal).to_string(),
                    None,
                ));
            }
        } else if let Subject::Id(id) = subject {
            if snap.principals.contains_key(id) {
                subject_info = json!({"kind": "principal", "id": id});
                subjects.push(("principal", id.to_string(), None));
            }
        }

        let owner = match (slot, subject) {
            (Some(slot), _) => Some(Owner::Agent(slot)),
            (None, Subject::Id(id)) => self
                .index
                .read()
                .principals
                .get(id)
                .map(|&(_, pid)| Owner::Principal(pid)),
            (None, Subject::Handle(_)) => None,
        };
        let who = || owner.map(|o| self.identity(&snap, o)).unwrap_or_default();
        let valid_resource = resource.filter(|_| resource_ok);
        let env =
            RequestEnv::new(policy, context, valid_resource, &who, self.now_ns()).with_hooks(hooks);

        let mut chain = Vec::new();
        for (kind, id, template) in &subjects {
            let roles: Option<Vec<u32>> = match (kind, template) {
                (&"agent", Some(t)) => policy.templates.get(t.as_str()).map(|t| t.roles.to_vec()),
                _ => snap.principals.get(id.as_str()).map(|p| p.roles.to_vec()),
            };
            let mut entry = json!({"kind": kind, "id": id, "template": template});
            match (roles, action_id) {
                (None, _) => {
                    entry["outcome"] = json!(if *kind == "agent" {
                        "unknown_template"
                    } else {
                        "unknown_principal"
                    });
                }
                (Some(roles), a) => {
                    let level = Level::new(policy, &roles);
                    entry["roles"] = json!(level
                        .roles
                        .iter()
                        .filter_map(|r| policy.roles.get(*r as usize))
                        .map(|r| &*r.name)
                        .collect::<Vec<_>>());
                    if let Some(a) = a.filter(|_| resource_ok) {
                        let mut detail = None;
                        let (outcome, rule) =
                            match level.decide(policy, a, segs.as_deref(), &env, &mut detail) {
                                LevelOutcome::Allow(r) => ("allow", Some(r)),
                                LevelOutcome::Deny(r) => ("deny", Some(r)),
                                LevelOutcome::NoGrant => ("no_grant", None),
                                LevelOutcome::ConditionFailed(r) => ("condition_failed", Some(r)),
                                LevelOutcome::HookDenied(r) => ("hook_denied", Some(r)),
                                LevelOutcome::HookError(r) => ("hook_error", Some(r)),
                                LevelOutcome::NeedsApproval(r) => ("approval_required", Some(r)),
                            };
                        entry["outcome"] = json!(outcome);
                        entry["rule"] = json!(rule
                            .and_then(|r| policy.rules.get(r as usize))
                            .map(|r| &*r.path));
                        if let Some(detail) = detail {
                            entry["detail"] = json!(detail);
                        }
                        entry["entries"] = entries(policy, &level, a, segs.as_deref(), &env);
                    }
                }
            }
            chain.push(entry);
        }
        let mut decision = json!({
            "allowed": d.allowed, "reason": d.reason.as_str(), "rule": d.rule_path(),
            "policy_version": d.policy_version(), "why": d.reason.describe(),
        });
        if let Some(detail) = &d.detail {
            decision["detail"] = json!(detail);
        }
        let guards = match action_id.filter(|_| resource_ok) {
            Some(a) => guards(policy, a, segs.as_deref(), &env),
            None => Value::Array(Vec::new()),
        };
        let mut out = json!({
            "decision": decision,
            "subject": subject_info,
            "action": action_name,
            "resource": resource,
            "chain": chain,
        });
        // Only requests for a guarded action have the key.
        if guards.as_array().is_some_and(|g| !g.is_empty()) {
            out["guards"] = guards;
        }
        out
    }
}

/// Every guard covering action `a`: whether its `on` matched and, if so,
/// its `require`'s outcome.
fn guards(policy: &CompiledPolicy, a: u32, segs: Option<&[&str]>, env: &dyn Env) -> Value {
    let mut out = Vec::new();
    for g in policy.guards.iter() {
        let Some(rule) = policy.rules.get(g.rule as usize) else {
            continue;
        };
        if !rule.actions.contains(a) {
            continue;
        }
        let matched = rule_matches(policy, rule, segs);
        let mut e = json!({
            "rule": &*rule.path,
            "on": rule.patterns.as_ref().map(|ps| ps
                .iter()
                .filter_map(|p| policy.patterns.get(*p as usize))
                .map(|p| p.source())
                .collect::<Vec<_>>()),
            "require": rule.when.as_ref().map(|c| c.source()),
            "reason": &*g.reason,
            "matched": matched,
        });
        let outcome = rule
            .when
            .as_ref()
            .filter(|_| matched)
            .map(|c| c.evaluate(env));
        e["condition"] = json!(match &outcome {
            None => None,
            Some(Outcome::True) => Some("true"),
            Some(Outcome::False) => Some("false"),
            Some(Outcome::Error(_)) => Some("error"),
        });
        if let Some(Outcome::Error(f)) = outcome {
            e["failure"] = json!({
                "kind": f.kind.as_str(), "at": f.path_or_expr,
                "detail": f.detail, "message": f.to_string(),
            });
        }
        out.push(e);
    }
    Value::Array(out)
}

/// An entry's `approval`: its condition, who may approve, and (where the
/// entry would grant) whether approval is needed.
fn approval(ap: &Requirement, outcome: Option<Outcome>) -> Value {
    let approvers: Vec<Value> = ap
        .approvers
        .iter()
        .map(|a| match a {
            Approver::Role(r) => json!({"role": &**r}),
            Approver::Principal(p) => json!({"principal": &**p}),
        })
        .collect();
    let mut e = json!({
        "condition": ap.condition.source(),
        "approvers": approvers,
        "who": ap.who(),
        "outcome": match &outcome {
            None => None,
            Some(Outcome::True) => Some("true"),
            Some(Outcome::False) => Some("false"),
            Some(Outcome::Error(_)) => Some("error"),
        },
        // Needed when the condition holds or cannot be evaluated (fail closed).
        "needed": outcome.as_ref().map(|o| !matches!(o, Outcome::False)),
    });
    if let Some(Outcome::Error(f)) = outcome {
        e["failure"] = json!({
            "kind": f.kind.as_str(), "at": f.path_or_expr,
            "detail": f.detail, "message": f.to_string(),
        });
    }
    e
}

/// Every entry of `level` covering action `a`, and whether it matched.
fn entries(
    policy: &CompiledPolicy,
    level: &Level,
    a: u32,
    segs: Option<&[&str]>,
    env: &dyn Env,
) -> Value {
    let mut out = Vec::new();
    for role in level
        .roles
        .iter()
        .filter_map(|r| policy.roles.get(*r as usize))
    {
        for rule in role
            .rules
            .iter()
            .filter_map(|r| policy.rules.get(*r as usize))
        {
            if !rule.actions.contains(a) {
                continue;
            }
            let on: Option<Vec<&str>> = rule.patterns.as_ref().map(|ps| {
                ps.iter()
                    .filter_map(|p| policy.patterns.get(*p as usize))
                    .map(|p| p.source())
                    .collect()
            });
            let matched = rule_matches(policy, rule, segs);
            let mut e = json!({
                "rule": &*rule.path, "role": &*role.name,
                "effect": if rule.effect == Effect::Allow { "allow" } else { "deny" },
                "on": on, "matched": matched,
            });
            if let Some(c) = &rule.when {
                e["when"] = json!(c.source());
                // Evaluated only where the entry's action and resource match.
                let (outcome, failure) = match matched.then(|| c.evaluate(env)) {
                    None => (None, None),
                    Some(Outcome::True) => (Some("true"), None),
                    Some(Outcome::False) => (Some("false"), None),
                    Some(Outcome::Error(f)) => (Some("error"), Some(f)),
                };
                e["condition"] = json!(outcome);
                if let Some(f) = failure {
                    e["failure"] = json!({
                        "kind": f.kind.as_str(), "at": f.path_or_expr,
                        "detail": f.detail, "message": f.to_string(),
                    });
                }
            }
            if let Some(ap) = &rule.approval {
                // Evaluated only where the entry would grant (its `when` holds).
                let grants =
                    matched && rule.when.as_ref().is_none_or(|c| c.evaluate(env).is_true());
                e["approval"] = approval(ap, grants.then(|| ap.condition.evaluate(env)));
            }
            out.push(e);
        }
    }
    Value::Array(out)
}
