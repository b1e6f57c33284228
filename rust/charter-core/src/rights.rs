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
use crate::cond::{Env, Outcome};
use crate::policy::{ActionId, CompiledPolicy, Effect, QuotaId, RoleId, RuleId};
use crate::quota::BreakerConfig;
use crate::reason::Reason;
use crate::request::{HookOutcome, Request};
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
    /// No allow entry granted it, but this one matched except for its
    /// `when` condition (false, or not evaluable).
    ConditionFailed(RuleId),
    /// The hook of the deciding entry refused.
    HookDenied(RuleId),
    /// The hook of the deciding entry failed (raised, returned a non-bool,
    /// is not registered).
    HookError(RuleId),
    /// No allow entry grants it outright, but this one would, with an
    /// approval: its `when` holds and its `approval` condition holds or
    /// cannot be evaluated.
    NeedsApproval(RuleId),
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
    /// Actions covered by an entry with a `when` condition: decided entry
    /// by entry over `all_rules`.
    dynamic: ActionSet,
    /// Every rule of the closure, denies then allows, document order (only
    /// kept when `dynamic` is not empty).
    all_rules: Box<[RuleId]>,
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
            dynamic: ActionSet::empty(n),
            all_rules: Box::new([]),
        };
        let mut scoped_denies = Vec::new();
        let mut scoped_allows = Vec::new();
        let (mut all_denies, mut all_allows) = (Vec::new(), Vec::new());
        for role in &closure {
            let Some(role) = policy.roles.get(*role as usize) else {
                continue;
            };
            for rid in role.rules.iter() {
                let Some(rule) = policy.rules.get(*rid as usize) else {
                    continue;
                };
                match rule.effect {
                    Effect::Allow => all_allows.push(*rid),
                    Effect::Deny => all_denies.push(*rid),
                }
                if rule.when.is_some() || rule.hook.is_some() || rule.approval.is_some() {
                    // Never in the static sets: `dynamic` routes its actions
                    // to the entry-by-entry walk, which sees every rule.
                    l.dynamic.union_with(&rule.actions);
                    continue;
                }
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
        if !l.dynamic.is_empty() {
            all_denies.extend(all_allows);
            l.all_rules = all_denies.into_boxed_slice();
        }
        l.roles = closure.into_boxed_slice();
        l
    }

    fn class(&self, a: ActionId) -> Class {
        if self.dynamic.contains(a) {
            Class::Depends
        } else if self.deny_any.contains(a) {
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

    /// Whether some entry covering `a` has a `when` condition.
    #[inline(always)]
    pub fn is_dynamic(&self, a: ActionId) -> bool {
        self.dynamic.contains(a)
    }

    /// Decide one request at this level. `resource` is the split, validated
    /// name; `env` is read only by `when` conditions, and `detail` receives
    /// why a condition decided (a failure, or a false condition).
    pub fn decide(
        &self,
        policy: &CompiledPolicy,
        a: ActionId,
        resource: Option<&[&str]>,
        req: &dyn Request,
        detail: &mut Option<String>,
    ) -> LevelOutcome {
        if self.dynamic.contains(a) {
            return self.decide_dynamic(policy, a, resource, req, detail);
        }
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

    /// Entry by entry, denies first: a deny whose condition holds or cannot
    /// be evaluated denies (if it has a hook, the hook says whether it
    /// applies; a failing hook denies); then the first allow without a hook
    /// whose condition holds grants; else the first allow with a hook whose
    /// condition holds decides by its hook; else the first allow whose
    /// condition holds but whose `approval` condition holds too (or cannot
    /// be evaluated) needs approval (after its own hook, if any, agrees).
    /// An allow skipped only for its condition is reported.
    #[cold]
    fn decide_dynamic(
        &self,
        policy: &CompiledPolicy,
        a: ActionId,
        resource: Option<&[&str]>,
        req: &dyn Request,
        detail: &mut Option<String>,
    ) -> LevelOutcome {
        let env = req.env();
        let action = policy.actions.get(a as usize).map_or("", |s| &**s);
        let mut skipped: Option<(RuleId, String)> = None;
        let mut hooked: Option<RuleId> = None;
        // The first allow that would grant with an approval, and why it needs one.
        let mut pending: Option<(RuleId, Outcome)> = None;
        for rid in self.all_rules.iter().copied() {
            let Some(rule) = policy.rules.get(rid as usize) else {
                continue;
            };
            if !rule.actions.contains(a) || !rule_matches(policy, rule, resource) {
                continue;
            }
            let outcome = rule
                .when
                .as_ref()
                .map_or(Outcome::True, |c| c.evaluate(env));
            match (rule.effect, outcome) {
                (Effect::Deny, Outcome::True) => match &rule.hook {
                    None => return LevelOutcome::Deny(rid),
                    Some(h) => match req.run_hook(h, &rule.path, action) {
                        HookOutcome::Allow => return LevelOutcome::Deny(rid),
                        HookOutcome::Deny(_) => {}
                        HookOutcome::Error(e) => {
                            *detail = Some(e);
                            return LevelOutcome::HookError(rid);
                        }
                    },
                },
                (Effect::Deny, Outcome::Error(f)) => {
                    *detail = Some(format!("deny condition could not be evaluated: {f}"));
                    return LevelOutcome::Deny(rid);
                }
                (Effect::Deny, Outcome::False) => {}
                (Effect::Allow, Outcome::True) => {
                    let needs = rule.approval.as_ref().map(|ap| ap.condition.evaluate(env));
                    match needs {
                        // Consulted only if nothing grants without one.
                        Some(why @ (Outcome::True | Outcome::Error(_))) => {
                            if pending.is_none() {
                                pending = Some((rid, why));
                            }
                        }
                        // Consulted only if no allow without a hook grants.
                        _ if rule.hook.is_some() => {
                            hooked.get_or_insert(rid);
                        }
                        _ => return LevelOutcome::Allow(rid),
                    }
                }
                (Effect::Allow, Outcome::False) => {
                    if skipped.is_none() {
                        let why = if req.wants_detail() {
                            let src = rule.when.as_ref().map_or("", |c| c.source());
                            format!("condition `{src}` is false")
                        } else {
                            String::new()
                        };
                        skipped = Some((rid, why));
                    }
                }
                (Effect::Allow, Outcome::Error(f)) => {
                    if skipped.is_none() {
                        let why = if req.wants_detail() {
                            f.to_string()
                        } else {
                            String::new()
                        };
                        skipped = Some((rid, why));
                    }
                }
            }
        }
        // A hook's refusal decides unless a later candidate grants.
        let mut refusal: Option<(LevelOutcome, String)> = None;
        if let Some(rid) = hooked {
            match run_entry_hook(policy, rid, req, action) {
                Ok(()) => return LevelOutcome::Allow(rid),
                Err(r) => refusal = Some(r),
            }
        }
        if let Some((rid, why)) = pending {
            match run_entry_hook(policy, rid, req, action) {
                Ok(()) => {
                    if req.wants_detail() {
                        *detail = Some(approval_hint(policy, rid, &why));
                    }
                    return LevelOutcome::NeedsApproval(rid);
                }
                Err(r) => {
                    refusal.get_or_insert(r);
                }
            }
        }
        if let Some((outcome, why)) = refusal {
            *detail = Some(why);
            return outcome;
        }
        match skipped {
            Some((rid, why)) => {
                *detail = Some(why);
                LevelOutcome::ConditionFailed(rid)
            }
            None => LevelOutcome::NoGrant,
        }
    }

    /// Bytes used, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.roles.len() * 4
            + self.allow_any.heap_bytes() * 4
            + (self.first_allow_any.len() + self.first_deny_any.len() + self.scoped_rules.len()) * 4
    }
}

/// Run entry `rid`'s hook, if it has one: `Ok` when it lets the entry
/// decide, else the level's outcome and the detail.
fn run_entry_hook(
    policy: &CompiledPolicy,
    rid: RuleId,
    req: &dyn Request,
    action: &str,
) -> Result<(), (LevelOutcome, String)> {
    let Some(rule) = policy.rules.get(rid as usize) else {
        return Err((LevelOutcome::NoGrant, String::new()));
    };
    let Some(hook) = rule.hook.as_deref() else {
        return Ok(());
    };
    match req.run_hook(hook, &rule.path, action) {
        HookOutcome::Allow => Ok(()),
        HookOutcome::Deny(why) => Err((
            LevelOutcome::HookDenied(rid),
            why.unwrap_or_else(|| format!("hook `{hook}` refused")),
        )),
        HookOutcome::Error(e) => Err((LevelOutcome::HookError(rid), e)),
    }
}

/// Who may approve entry `rid` and why its approval is needed, for the
/// decision's detail.
#[cold]
fn approval_hint(policy: &CompiledPolicy, rid: RuleId, why: &Outcome) -> String {
    let Some(ap) = policy
        .rules
        .get(rid as usize)
        .and_then(|r| r.approval.as_ref())
    else {
        return String::new();
    };
    let src = ap.condition.source();
    match why {
        Outcome::Error(f) => format!(
            "approval needed from {}: condition `{src}` could not be evaluated ({f})",
            ap.who()
        ),
        _ => format!("approval needed from {}: condition `{src}` holds", ap.who()),
    }
}

/// The first guard covering the request whose `require` is false or cannot
/// be evaluated, as a `guard_failed` verdict.
#[cold]
fn guard_stage(
    policy: &CompiledPolicy,
    a: ActionId,
    segs: Option<&[&str]>,
    env: &dyn Env,
) -> Option<Verdict> {
    for g in policy.guards.iter() {
        let Some(rule) = policy.rules.get(g.rule as usize) else {
            continue;
        };
        if !rule.actions.contains(a) || !rule_matches(policy, rule, segs) {
            continue;
        }
        let outcome = rule
            .when
            .as_ref()
            .map_or(Outcome::True, |c| c.evaluate(env));
        let why = match outcome {
            Outcome::True => continue,
            Outcome::False => g.reason.to_string(),
            Outcome::Error(f) => format!("{} ({f})", g.reason),
        };
        return Some(Verdict {
            reason: Reason::GuardFailed,
            rule: Some(g.rule),
            detail: Some(why),
            approval: None,
        });
    }
    None
}

/// The env of a path that never evaluates a condition (conditions would
/// find every attribute missing: fail closed).
pub struct NoEnv;

impl Request for NoEnv {
    fn env(&self) -> &dyn Env {
        self
    }
    fn run_hook(&self, hook: &str, _: &str, _: &str) -> HookOutcome {
        HookOutcome::Error(format!("hook `{hook}` cannot run here"))
    }
}

impl Env for NoEnv {
    fn context(&self, _: &str) -> Option<&crate::cond::Value> {
        None
    }
    fn resource_name(&self) -> Option<&str> {
        None
    }
    fn resource_classes(&self) -> &[&str] {
        &[]
    }
    fn agent(&self) -> Option<crate::cond::AgentView<'_>> {
        None
    }
    fn principal_id(&self) -> Option<&str> {
        None
    }
    fn principal_attribute(&self, _: &str) -> Option<&crate::cond::Value> {
        None
    }
    fn now_ns(&self) -> u64 {
        0
    }
}

/// Whether `rule`'s resource patterns admit the request.
pub fn rule_matches(
    policy: &CompiledPolicy,
    rule: &crate::policy::Rule,
    segs: Option<&[&str]>,
) -> bool {
    match (&rule.patterns, segs) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(ps), Some(s)) => ps.iter().any(|p| {
            policy
                .patterns
                .get(*p as usize)
                .is_some_and(|p| p.matches(s))
        }),
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Why.
    pub reason: Reason,
    /// The entry that decided, if one did.
    pub rule: Option<RuleId>,
    /// What a condition (or guard) said, when one decided.
    pub detail: Option<String>,
    /// For `approval_required`: the entries waiting for approval.
    pub approval: Option<Box<ApprovalNeed>>,
}

/// What an `approval_required` verdict waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalNeed {
    /// The entries whose `approval` condition holds (or cannot be
    /// evaluated), one per level that needs one, the subject's own first.
    pub rules: Box<[RuleId]>,
    /// The subject's own entry that grants once approved.
    pub granted: Option<RuleId>,
}

impl Verdict {
    fn new(reason: Reason, rule: RuleId) -> Verdict {
        Verdict {
            reason,
            rule: (rule != NO_RULE).then_some(rule),
            detail: None,
            approval: None,
        }
    }

    fn bare(reason: Reason) -> Verdict {
        Verdict {
            reason,
            rule: None,
            detail: None,
            approval: None,
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
    /// Actions some level decides entry by entry because of a `when`
    /// condition: never in the bitsets above.
    dynamic: ActionSet,
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
            dynamic: ActionSet::empty(n),
            quotas: Box::new([]),
            breaker: None,
        }
    }

    /// Whether some action is decided by `when` conditions (the batch fast
    /// path must send this chain to the general path).
    pub fn has_conditions(&self) -> bool {
        !self.dynamic.is_empty()
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
        for level in &levels {
            r.dynamic.union_with(&level.dynamic);
        }
        for a in 0..n as ActionId {
            if r.dynamic.contains(a) {
                // Conditions read the request: no bitset can decide it.
                continue;
            }
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
        // Guards can only turn an allow into a denial: an action the roles
        // already deny whatever the request keeps its bitset answer; the
        // others are decided request by request.
        for a in policy.guarded.iter() {
            if !r.decided.contains(a) && !r.dynamic.contains(a) {
                r.allow.remove(a);
                r.allow_no_resource.remove(a);
                r.dynamic.insert(a);
            }
        }
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
                if self.problem.is_some() || self.is_decided(a) || self.dynamic.contains(a) {
                    // Conditions need the request's env: `decide` takes them.
                    return false;
                }
                let segs = crate::pattern::split_resource(name);
                self.walk(policy, a, Some(&segs), &NoEnv).reason == Reason::Granted
            }
        }
    }

    #[inline(always)]
    fn is_decided(&self, a: ActionId) -> bool {
        self.deny_rule.contains(a) || self.no_grant.contains(a) || self.delegator_denied.contains(a)
    }

    /// The full verdict for one request (validated resource name or none);
    /// `env` is read by `when` conditions only.
    pub fn decide(
        &self,
        policy: &CompiledPolicy,
        a: ActionId,
        resource: Option<&str>,
        req: &dyn Request,
    ) -> Verdict {
        if let Some(problem) = self.problem {
            return Verdict::bare(problem);
        }
        if self.out_of_scope.contains(a) {
            return Verdict::bare(Reason::OutOfScope);
        }
        let own = self.levels.first();
        let granted_rule =
            |segs: Option<&[&str]>| match own.map(|l| l.decide(policy, a, segs, req, &mut None)) {
                Some(LevelOutcome::Allow(r)) => Verdict::new(Reason::Granted, r),
                _ => Verdict::bare(Reason::InternalError),
            };
        match resource {
            None if self.allow_no_resource.contains(a) => return granted_rule(None),
            Some(name) if self.allow.contains(a) => {
                let segs = crate::pattern::split_resource(name);
                return granted_rule(Some(&segs));
            }
            _ => {}
        }
        let segs = resource.map(crate::pattern::split_resource);
        let v = self.walk(policy, a, segs.as_deref(), req);
        // A request waiting for approval meets the guards first: approval
        // cannot make up for a failed guard.
        let would_grant = matches!(v.reason, Reason::Granted | Reason::ApprovalRequired);
        if would_grant && policy.guarded.contains(a) {
            if let Some(denied) = guard_stage(policy, a, segs.as_deref(), req.env()) {
                return denied;
            }
        }
        v
    }

    /// Level by level, own first: the first level that does not allow
    /// decides; levels that would allow with an approval make the request
    /// `approval_required` if every other level allows.
    fn walk(
        &self,
        policy: &CompiledPolicy,
        a: ActionId,
        segs: Option<&[&str]>,
        req: &dyn Request,
    ) -> Verdict {
        let mut granted = NO_RULE;
        let mut approvals: Vec<RuleId> = Vec::new();
        let mut approval_detail = None;
        for (i, level) in self.levels.iter().enumerate() {
            let mut detail = None;
            let mut v = match (level.decide(policy, a, segs, req, &mut detail), i) {
                (LevelOutcome::Allow(r), 0) => {
                    granted = r;
                    continue;
                }
                (LevelOutcome::Allow(_), _) => continue,
                (LevelOutcome::NeedsApproval(r), _) => {
                    if i == 0 {
                        granted = r;
                    }
                    if approvals.is_empty() {
                        approval_detail = detail;
                    }
                    // Levels holding the same role ask through the same entry.
                    if !approvals.contains(&r) {
                        approvals.push(r);
                    }
                    continue;
                }
                (LevelOutcome::Deny(r), 0) => Verdict::new(Reason::DeniedByRule, r),
                (LevelOutcome::NoGrant, 0) => Verdict::new(Reason::NoGrant, NO_RULE),
                (LevelOutcome::ConditionFailed(r), 0) => Verdict::new(Reason::ConditionFailed, r),
                (LevelOutcome::HookDenied(r), 0) => Verdict::new(Reason::HookDenied, r),
                (LevelOutcome::HookError(r), 0) => Verdict::new(Reason::HookError, r),
                (
                    LevelOutcome::Deny(r)
                    | LevelOutcome::ConditionFailed(r)
                    | LevelOutcome::HookDenied(r)
                    | LevelOutcome::HookError(r),
                    _,
                ) => Verdict::new(Reason::DelegatorDenied, r),
                (LevelOutcome::NoGrant, _) => Verdict::new(Reason::DelegatorDenied, NO_RULE),
            };
            v.detail = detail;
            return v;
        }
        if self.levels.is_empty() {
            return Verdict::bare(Reason::InternalError);
        }
        if let Some(&first) = approvals.first() {
            return Verdict {
                reason: Reason::ApprovalRequired,
                rule: Some(first),
                detail: approval_detail,
                approval: Some(Box::new(ApprovalNeed {
                    rules: approvals.into_boxed_slice(),
                    granted: (granted != NO_RULE).then_some(granted),
                })),
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
        if self.dynamic.contains(a) {
            // Conditions need the request's env: `decide` takes them.
            return Reason::InternalError;
        }
        match resource {
            None => self.walk(policy, a, None, &NoEnv).reason,
            Some(name) => {
                let segs = crate::pattern::split_resource(name);
                self.walk(policy, a, Some(&segs), &NoEnv).reason
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
