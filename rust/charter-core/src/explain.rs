//! `explain`: the full derivation of one decision, as data. Slow path: it
//! takes the writer lock to walk the delegation chain's metadata.

use crate::engine::{Action, Engine, Subject, NONE};
use crate::pattern::{split_resource, validate_resource};
use crate::policy::{CompiledPolicy, Effect};
use crate::registry::split_handle;
use crate::rights::{Level, LevelOutcome};
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
        let d = self.check(subject, action, resource);
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
                        let (outcome, rule) = match level.decide(policy, a, segs.as_deref()) {
                            LevelOutcome::Allow(r) => ("allow", Some(r)),
                            LevelOutcome::Deny(r) => ("deny", Some(r)),
                            LevelOutcome::NoGrant => ("no_grant", None),
                        };
                        entry["outcome"] = json!(outcome);
                        entry["rule"] = json!(rule
                            .and_then(|r| policy.rules.get(r as usize))
                            .map(|r| &*r.path));
                        entry["entries"] = entries(policy, &level, a, segs.as_deref());
                    }
                }
            }
            chain.push(entry);
        }
        json!({
            "decision": {
                "allowed": d.allowed, "reason": d.reason.as_str(), "rule": d.rule_path(),
                "policy_version": d.policy_version(), "why": d.reason.describe(),
            },
            "subject": subject_info,
            "action": action_name,
            "resource": resource,
            "chain": chain,
        })
    }
}

/// Every entry of `level` covering action `a`, and whether it matched.
fn entries(policy: &CompiledPolicy, level: &Level, a: u32, segs: Option<&[&str]>) -> Value {
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
            let matched = match (&rule.patterns, segs) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(ps), Some(s)) => ps.iter().any(|p| {
                    policy
                        .patterns
                        .get(*p as usize)
                        .is_some_and(|p| p.matches(s))
                }),
            };
            out.push(json!({
                "rule": &*rule.path, "role": &*role.name,
                "effect": if rule.effect == Effect::Allow { "allow" } else { "deny" },
                "on": on, "matched": matched,
            }));
        }
    }
    Value::Array(out)
}
