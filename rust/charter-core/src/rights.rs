//! What a subject may do, precompiled into bitsets.
//!
//! A [`Level`] is one set of roles (a principal's, or an agent template's),
//! closed under inheritance. A [`Rights`] is a delegation chain: the agent's
//! own level first, then each delegator's, up to the principal. A request is
//! allowed only if every level allows it (an agent never exceeds whoever it
//! acts for). Most requests are decided by one bit test on the chain's
//! bitsets; only actions touched by resource-scoped entries are evaluated
//! entry by entry.

use crate::bitset::ActionSet;
use crate::policy::{ActionId, CompiledPolicy, Effect, QuotaId, RoleId, RuleId};
use crate::quota::BreakerConfig;
use crate::reason::Reason;
use std::sync::Arc;

/// Word groups per chain in the snapshot's dense table (see [`Rights::fast_groups`]).
pub const FAST_GROUPS: usize = 6;

/// Sentinel for "no rule" in per-action rule tables.
const NO_RULE: RuleId = RuleId::MAX;

/// The outcome of one level for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelOutcome {
    /// An allow entry matched and no deny did.
    Allow(RuleId),
    /// A deny entry matched.
    Deny(RuleId),
    /// Nothing granted it.
    NoGrant,
}

/// The compiled rights of one set of roles.
#[derive(Debug)]
pub struct Level {
    /// The role closure, sorted.
    pub roles: Box<[RoleId]>,
    allow_any: ActionSet,
    deny_any: ActionSet,
    allow_scoped: ActionSet,
    deny_scoped: ActionSet,
    /// Per action: first unscoped allow / deny rule covering it.
    first_allow_any: Box<[RuleId]>,
    first_deny_any: Box<[RuleId]>,
    /// Resource-scoped rules of the closure, denies then allows, document order.
    scoped_rules: Box<[RuleId]>,
}

/// How one level treats one action regardless of the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Allow,
    Deny,
    NoGrant,
    Depends,
}

impl Level {
    /// Compile the closure of `roles` under `policy`.
    pub fn new(policy: &CompiledPolicy, roles: &[RoleId]) -> Level {
        let n = policy.action_count();
        let mut closure: Vec<RoleId> = roles
            .iter()
            .filter_map(|r| policy.roles.get(*r as usize))
            .flat_map(|r| r.closure.iter().copied())
            .collect();
        closure.sort_unstable();
        closure.dedup();
        let mut l = Level {
            roles: Box::new([]),
            allow_any: ActionSet::empty(n),
            deny_any: ActionSet::empty(n),
            allow_scoped: ActionSet::empty(n),
            deny_scoped: ActionSet::empty(n),
            first_allow_any: vec![NO_RULE; n].into_boxed_slice(),
            first_deny_any: vec![NO_RULE; n].into_boxed_slice(),
            scoped_rules: Box::new([]),
        };
        let mut scoped_denies = Vec::new();
        let mut scoped_allows = Vec::new();
        for role in &closure {
            let Some(role) = policy.roles.get(*role as usize) else {
                continue;
            };
            for rid in role.rules.iter() {
                let Some(rule) = policy.rules.get(*rid as usize) else {
                    continue;
                };
                match (rule.effect, rule.patterns.is_some()) {
                    (Effect::Allow, false) => {
                        l.allow_any.union_with(&rule.actions);
                        first_rule(&mut l.first_allow_any, &rule.actions, *rid);
                    }
                    (Effect::Deny, false) => {
                        l.deny_any.union_with(&rule.actions);
                        first_rule(&mut l.first_deny_any, &rule.actions, *rid);
                    }
                    (Effect::Allow, true) => {
                        l.allow_scoped.union_with(&rule.actions);
                        scoped_allows.push(*rid);
                    }
                    (Effect::Deny, true) => {
                        l.deny_scoped.union_with(&rule.actions);
                        scoped_denies.push(*rid);
                    }
                }
            }
        }
        scoped_denies.extend(scoped_allows);
        l.scoped_rules = scoped_denies.into_boxed_slice();
        l.roles = closure.into_boxed_slice();
        l
    }

    fn class(&self, a: ActionId) -> Class {
        if self.deny_any.contains(a) {
            Class::Deny
        } else if self.deny_scoped.contains(a) {
            Class::Depends
        } else if self.allow_any.contains(a) {
            Class::Allow
        } else if self.allow_scoped.contains(a) {
            Class::Depends
        } else {
            Class::NoGrant
        }
    }

    /// Decide one request at this level. `resource` is the split, validated name.
    pub fn decide(
        &self,
        policy: &CompiledPolicy,
        a: ActionId,
        resource: Option<&[&str]>,
    ) -> LevelOutcome {
        if self.deny_any.contains(a) {
            return LevelOutcome::Deny(rule_at(&self.first_deny_any, a));
        }
        let scoped_match = |effect: Effect| -> Option<RuleId> {
            let segs = resource?;
            self.scoped_rules.iter().copied().find(|rid| {
                policy.rules.get(*rid as usize).is_some_and(|r| {
                    r.effect == effect
                        && r.actions.contains(a)
                        && r.patterns.as_deref().is_some_and(|ps| {
                            ps.iter().any(|p| {
                                policy
                                    .patterns
                                    .get(*p as usize)
                                    .is_some_and(|p| p.matches(segs))
                            })
                        })
                })
            })
        };
        if self.deny_scoped.contains(a) {
            if let Some(r) = scoped_match(Effect::Deny) {
                return LevelOutcome::Deny(r);
            }
        }
        if self.allow_any.contains(a) {
            return LevelOutcome::Allow(rule_at(&self.first_allow_any, a));
        }
        if self.allow_scoped.contains(a) {
            if let Some(r) = scoped_match(Effect::Allow) {
                return LevelOutcome::Allow(r);
            }
        }
        LevelOutcome::NoGrant
    }

    /// Bytes used, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.roles.len() * 4
            + self.allow_any.heap_bytes() * 4
            + (self.first_allow_any.len() + self.first_deny_any.len() + self.scoped_rules.len()) * 4
    }
}

fn first_rule(table: &mut [RuleId], actions: &ActionSet, rid: RuleId) {
    for a in actions.iter() {
        if let Some(slot) = table.get_mut(a as usize) {
            if *slot == NO_RULE {
                *slot = rid;
            }
        }
    }
}

fn rule_at(table: &[RuleId], a: ActionId) -> RuleId {
    table.get(a as usize).copied().unwrap_or(NO_RULE)
}

/// The decided outcome of a whole chain for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Why.
    pub reason: Reason,
    /// The entry that decided, if one did.
    pub rule: Option<RuleId>,
}

impl Verdict {
    fn new(reason: Reason, rule: RuleId) -> Verdict {
        Verdict {
            reason,
            rule: (rule != NO_RULE).then_some(rule),
        }
    }
}

/// The compiled rights of a delegation chain.
#[derive(Debug)]
pub struct Rights {
    /// Levels, the subject's own first, the root principal's last.
    pub levels: Box<[Arc<Level>]>,
    /// A problem that denies every request (unknown template, removed principal...).
    pub problem: Option<Reason>,
    /// Allowed whatever the resource.
    allow: ActionSet,
    /// Allowed when the request names no resource.
    allow_no_resource: ActionSet,
    /// Decided regardless of the resource: denied by the subject's own deny entries.
    deny_rule: ActionSet,
    /// ... not granted by the subject's own roles.
    no_grant: ActionSet,
    /// ... granted by the subject's roles but not by a delegator.
    delegator_denied: ActionSet,
    /// The union of the three above.
    decided: ActionSet,
    /// Without a resource, denied by the subject's own deny entries.
    no_resource_deny_rule: ActionSet,
    /// Without a resource, refused by a delegator (the rest of the
    /// not-allowed actions are `no_grant`).
    no_resource_delegator: ActionSet,
    /// The actions the agent's credential (and its delegators') allows;
    /// `None` = not restricted.
    pub scope: Option<ActionSet>,
    /// Declared actions outside `scope`: denied `out_of_scope` before any role is read.
    out_of_scope: ActionSet,
    /// Each level's quota (aligned with `levels`), under this policy.
    pub quotas: Box<[Option<QuotaId>]>,
    /// The subject's own template's breaker.
    pub breaker: Option<BreakerConfig>,
}

impl Rights {
    /// A chain every request to which is denied for `problem`.
    pub fn denied(policy: &CompiledPolicy, problem: Reason) -> Rights {
        Rights::empty(policy.action_count(), Some(problem))
    }

    fn empty(n: usize, problem: Option<Reason>) -> Rights {
        Rights {
            levels: Box::new([]),
            problem,
            allow: ActionSet::empty(n),
            allow_no_resource: ActionSet::empty(n),
            deny_rule: ActionSet::empty(n),
            no_grant: ActionSet::empty(n),
            delegator_denied: ActionSet::empty(n),
            decided: ActionSet::empty(n),
            no_resource_deny_rule: ActionSet::empty(n),
            no_resource_delegator: ActionSet::empty(n),
            scope: None,
            out_of_scope: ActionSet::empty(n),
            quotas: Box::new([]),
            breaker: None,
        }
    }

    /// Whether an allowed request must be charged or a denial counted.
    pub fn has_quota(&self) -> bool {
        self.breaker.is_some() || self.quotas.iter().any(Option::is_some)
    }

    /// Attach quotas (one per level) and the subject's breaker.
    pub fn with_quotas(
        mut self,
        quotas: Vec<Option<QuotaId>>,
        breaker: Option<BreakerConfig>,
    ) -> Rights {
        self.quotas = quotas.into_boxed_slice();
        self.breaker = breaker;
        self
    }

    /// Precompute the chain `levels` (own first), limited to `scope` if given.
    pub fn new(
        policy: &CompiledPolicy,
        levels: Vec<Arc<Level>>,
        scope: Option<ActionSet>,
    ) -> Rights {
        if levels.is_empty() {
            return Rights::denied(policy, Reason::InternalError);
        }
        let n = policy.action_count();
        let mut r = Rights::empty(n, None);
        for a in 0..n as ActionId {
            let mut all_allow = true;
            for (i, level) in levels.iter().enumerate() {
                match (level.class(a), i) {
                    (Class::Allow, _) => continue,
                    (Class::Deny, 0) => r.deny_rule.insert(a),
                    (Class::NoGrant, 0) => r.no_grant.insert(a),
                    (Class::Deny | Class::NoGrant, _) => r.delegator_denied.insert(a),
                    (Class::Depends, _) => {}
                }
                all_allow = false;
                break;
            }
            if all_allow {
                r.allow.insert(a);
            }
            // Without a resource no scoped entry can match: a level denies
            // on an unscoped deny, allows on an unscoped allow, else has no
            // grant; the first level that does not allow gives the reason.
            let refusing = levels
                .iter()
                .position(|l| l.deny_any.contains(a) || !l.allow_any.contains(a));
            match refusing {
                None => r.allow_no_resource.insert(a),
                Some(0) if levels[0].deny_any.contains(a) => r.no_resource_deny_rule.insert(a),
                Some(0) => {}
                Some(_) => r.no_resource_delegator.insert(a),
            }
        }
        r.decided = r.deny_rule.clone();
        r.decided.union_with(&r.no_grant);
        r.decided.union_with(&r.delegator_denied);
        if let Some(scope) = &scope {
            r.out_of_scope = ActionSet::full(n);
            r.out_of_scope.subtract(scope);
            r.allow.intersect_with(scope);
            r.allow_no_resource.intersect_with(scope);
            r.decided.union_with(&r.out_of_scope);
        }
        r.scope = scope;
        r.levels = levels.into_boxed_slice();
        r
    }

    /// The boolean answer alone: the batch fast path. `resource` is `None`
    /// for a request without one; a named resource must already be validated.
    #[inline(always)]
    pub fn allows(&self, policy: &CompiledPolicy, a: ActionId, resource: Option<&str>) -> bool {
        match resource {
            None => self.allow_no_resource.contains(a),
            Some(_) if self.allow.contains(a) => true,
            Some(name) => {
                if self.problem.is_some() || self.is_decided(a) {
                    return false;
                }
                let segs = crate::pattern::split_resource(name);
                self.walk(policy, a, Some(&segs)).reason == Reason::Granted
            }
        }
    }

    #[inline(always)]
    fn is_decided(&self, a: ActionId) -> bool {
        self.deny_rule.contains(a) || self.no_grant.contains(a) || self.delegator_denied.contains(a)
    }

    /// The full verdict for one request (validated resource name or none).
    pub fn decide(&self, policy: &CompiledPolicy, a: ActionId, resource: Option<&str>) -> Verdict {
        if let Some(problem) = self.problem {
            return Verdict {
                reason: problem,
                rule: None,
            };
        }
        if self.out_of_scope.contains(a) {
            return Verdict {
                reason: Reason::OutOfScope,
                rule: None,
            };
        }
        let own = self.levels.first();
        let granted_rule = |segs: Option<&[&str]>| match own.map(|l| l.decide(policy, a, segs)) {
            Some(LevelOutcome::Allow(r)) => Verdict::new(Reason::Granted, r),
            _ => Verdict {
                reason: Reason::InternalError,
                rule: None,
            },
        };
        match resource {
            None if self.allow_no_resource.contains(a) => return granted_rule(None),
            Some(name) if self.allow.contains(a) => {
                let segs = crate::pattern::split_resource(name);
                return granted_rule(Some(&segs));
            }
            _ => {}
        }
        match resource {
            None => self.walk(policy, a, None),
            Some(name) => {
                let segs = crate::pattern::split_resource(name);
                self.walk(policy, a, Some(&segs))
            }
        }
    }

    /// Level by level, own first: the first level that does not allow decides.
    fn walk(&self, policy: &CompiledPolicy, a: ActionId, segs: Option<&[&str]>) -> Verdict {
        let mut granted = NO_RULE;
        for (i, level) in self.levels.iter().enumerate() {
            match (level.decide(policy, a, segs), i) {
                (LevelOutcome::Allow(r), 0) => granted = r,
                (LevelOutcome::Allow(_), _) => {}
                (LevelOutcome::Deny(r), 0) => return Verdict::new(Reason::DeniedByRule, r),
                (LevelOutcome::NoGrant, 0) => return Verdict::new(Reason::NoGrant, NO_RULE),
                (LevelOutcome::Deny(r), _) => return Verdict::new(Reason::DelegatorDenied, r),
                (LevelOutcome::NoGrant, _) => {
                    return Verdict::new(Reason::DelegatorDenied, NO_RULE)
                }
            }
        }
        if self.levels.is_empty() {
            return Verdict {
                reason: Reason::InternalError,
                rule: None,
            };
        }
        Verdict::new(Reason::Granted, granted)
    }

    /// The reason code alone (batch path with reasons).
    #[inline]
    pub fn reason(&self, policy: &CompiledPolicy, a: ActionId, resource: Option<&str>) -> Reason {
        if let Some(p) = self.problem {
            return p;
        }
        if self.out_of_scope.contains(a) {
            return Reason::OutOfScope;
        }
        match resource {
            None if self.allow_no_resource.contains(a) => return Reason::Granted,
            Some(_) if self.allow.contains(a) => return Reason::Granted,
            _ => {}
        }
        if self.deny_rule.contains(a) {
            return Reason::DeniedByRule;
        }
        if self.no_grant.contains(a) {
            return Reason::NoGrant;
        }
        if self.delegator_denied.contains(a) {
            return Reason::DelegatorDenied;
        }
        match resource {
            None => self.walk(policy, a, None).reason,
            Some(name) => {
                let segs = crate::pattern::split_resource(name);
                self.walk(policy, a, Some(&segs)).reason
            }
        }
    }

    /// The bitsets the batch fast path reads, as word groups in the order
    /// of [`FAST_GROUPS`]: allowed without a resource, allowed with one,
    /// decided-denied with one (any reason), without a resource
    /// denied-by-rule and delegator-denied, and out of scope.
    pub fn fast_groups(&self) -> [&[u64]; FAST_GROUPS] {
        [
            self.allow_no_resource.words(),
            self.allow.words(),
            self.decided.words(),
            self.no_resource_deny_rule.words(),
            self.no_resource_delegator.words(),
            self.out_of_scope.words(),
        ]
    }

    /// Bytes used by the chain's own bitsets (levels are shared).
    pub fn heap_bytes(&self) -> usize {
        self.allow.heap_bytes() * 8 + self.levels.len() * 8
    }
}
