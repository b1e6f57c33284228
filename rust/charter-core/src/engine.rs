//! The engine: one atomically swapped [`Snapshot`] for reads, the lock-free
//! slot map for agents, and a writer lock serialising every change
//! (provision, deprovision, reload, principal upserts). Checks take no lock
//! when given a handle; ids are resolved under a read lock.

use crate::approval::{Approvals, Asked, GrantKey, Mode as ApprovalMode, Pending, Stage};
use crate::audit::{AuditSink, Card, DecisionFacts, Mode as AuditMode, Staged};
use crate::charge::{LeaseHandle, LeaseTerms, Owner, QuotaState};
use crate::clock::{Clock, SystemClock};
use crate::cond::Value;
use crate::error::{Error, Result};
use crate::pattern::validate_resource;
use crate::policy::{
    validate_principal_id, ActionId, CompiledPolicy, PolicySpec, Principal, PrincipalSpec, RuleId,
};
use crate::reason::Reason;
use crate::registry::{make_handle, split_handle, state, Slots, NEVER};
use crate::request::{AgentFacts, Columns, Context, Hooks, Identity, RequestEnv};
use crate::rights::Rights;
use crate::shadow::{Shadow, ShadowReport, ShadowStats};
use crate::snapshot::{
    ChainKey, Chains, Fast, RightsCache, Snapshot, NO_CHAIN, NO_QUOTA, NO_SCOPE,
};
use arc_swap::{ArcSwap, ArcSwapOption};
use hashbrown::{DefaultHashBuilder, HashTable};
use parking_lot::{Mutex, RwLock};
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

/// In-flight slots held by `Engine::acquire`; give them back with `Engine::release`.
#[derive(Debug, Default)]
pub struct Lease {
    owners: Vec<Owner>,
}

impl Lease {
    /// Whether it still holds anything.
    pub fn is_held(&self) -> bool {
        !self.owners.is_empty()
    }
}

/// "No slot / no principal" in writer metadata.
pub(crate) const NONE: u32 = u32::MAX;
/// Freed slots are reused only once this many wait, so tombstones (which
/// keep precise denial reasons for stale handles) live long.
const REUSE_AFTER: usize = 4096;
/// Bits of `Engine::extras`.
const EXTRA_AUDIT: u8 = 1;
const EXTRA_SHADOW: u8 = 2;
/// Audited batches are recorded in blocks of this many requests.
const AUDIT_BLOCK: usize = 256;

/// Who is asking: an agent handle, or an agent or principal id.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// An agent handle from `provision`.
    Handle(u64),
    /// An agent id or a principal id.
    Id(&'a str),
}

/// One request: who asks, what, on which resource (if any), with the
/// context conditions read and the hooks the policy's hooks run through.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// Who asks.
    pub subject: Subject<'a>,
    /// What.
    pub action: Action<'a>,
    /// On which resource, if any.
    pub resource: Option<&'a str>,
    /// What `context.*` in conditions reads.
    pub context: Option<&'a dyn Context>,
    /// Runs the policy's hooks (without it, a hook that would decide is `hook_error`).
    pub hooks: Option<&'a dyn Hooks>,
}

impl<'a> Request<'a> {
    /// A request without context or hooks.
    pub fn new(subject: Subject<'a>, action: Action<'a>, resource: Option<&'a str>) -> Request<'a> {
        Request {
            subject,
            action,
            resource,
            context: None,
            hooks: None,
        }
    }

    /// With the request's context.
    pub fn with_context(mut self, context: Option<&'a dyn Context>) -> Request<'a> {
        self.context = context;
        self
    }

    /// With the hooks the policy's hooks run through.
    pub fn with_hooks(mut self, hooks: Option<&'a dyn Hooks>) -> Request<'a> {
        self.hooks = hooks;
        self
    }
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("subject", &self.subject)
            .field("action", &self.action)
            .field("resource", &self.resource)
            .finish_non_exhaustive()
    }
}

/// What is asked: an action id or name.
#[derive(Debug, Clone, Copy)]
pub enum Action<'a> {
    /// From [`Engine::action_id`].
    Id(u32),
    /// A declared action name.
    Name(&'a str),
}

/// The answer to one request. A denial is a value, never an error.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Whether the request is allowed.
    pub allowed: bool,
    /// Why.
    pub reason: Reason,
    /// The policy entry that decided, if one did.
    pub rule: Option<RuleId>,
    /// For a quota denial: when the same request would be admitted.
    pub retry_after_ns: Option<u64>,
    /// What a condition, guard or hook said, when one decided (the failing
    /// sub-expression and the values seen, a guard's reason...).
    pub detail: Option<String>,
    /// The policy the decision was made under.
    pub snapshot: Arc<Snapshot>,
    /// The sequence number of its audit record, when auditing is on; for an
    /// `approval_required` decision made with auditing off, the sequence
    /// number of its engine-local id (so that it can be approved).
    pub audit_seq: Option<u64>,
    /// The audit stream's tag (with `audit_seq`, the decision id).
    pub audit_stream: u32,
}

impl Decision {
    /// The audit stream and sequence number of its record, if recorded.
    fn decision_ref(&self) -> Option<(u32, u64)> {
        self.audit_seq.map(|seq| (self.audit_stream, seq))
    }

    fn bare(allowed: bool, reason: Reason, snapshot: Arc<Snapshot>) -> Decision {
        Decision {
            allowed,
            reason,
            rule: None,
            retry_after_ns: None,
            detail: None,
            snapshot,
            audit_seq: None,
            audit_stream: 0,
        }
    }

    /// Where the deciding entry is written (`roles.analyst.deny[0]`).
    pub fn rule_path(&self) -> Option<&str> {
        let r = self.rule?;
        self.snapshot.policy.rules.get(r as usize).map(|r| &*r.path)
    }

    /// The content version of the policy.
    pub fn policy_version(&self) -> &str {
        self.snapshot.version()
    }
}

/// A registered agent, as seen by `provision` and `agent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    /// Stable id.
    pub id: String,
    /// Handle for fast checks.
    pub handle: u64,
    /// Template name.
    pub template: String,
    /// Direct delegator (principal or agent id), if any.
    pub on_behalf_of: Option<String>,
    /// The principal at the root of the chain, if any.
    pub principal: Option<String>,
    /// Position in the chain (1 = acting directly for a principal, or for nobody).
    pub depth: u32,
    /// Unix ns.
    pub created_at_ns: u64,
    /// Unix ns, or `None` for no expiry.
    pub expires_at_ns: Option<u64>,
    /// `active`, `expired`, `revoked`, `delegator_revoked`, `principal_removed`.
    pub state: &'static str,
    /// The action patterns its credential limits it to, if any (its own, not its delegators').
    pub scope: Option<Vec<String>>,
}

/// A provisioning request; see [`Engine::provision_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Provision<'a> {
    /// Template name.
    pub template: &'a str,
    /// A principal or parent agent, or nobody.
    pub on_behalf_of: Option<Subject<'a>>,
    /// Lifetime; default the template's.
    pub ttl_ns: Option<u64>,
    /// Explicit id; default a generated one.
    pub agent_id: Option<&'a str>,
    /// Action names/patterns the agent is limited to (on top of its roles
    /// and its delegators'); `None` = no extra limit.
    pub scope: Option<&'a [&'a str]>,
    /// A quota name replacing the template's for this agent.
    pub quota: Option<&'a str>,
}

/// Counters for monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Live (not deprovisioned, not swept) agents.
    pub agents: usize,
    /// Slots ever used.
    pub slots: usize,
    /// Interned delegation chains.
    pub chains: usize,
    /// Current policy version.
    pub policy_version: String,
    /// Bytes in the registry's own structures (slots, metadata, id index).
    pub registry_bytes: usize,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    pub(crate) chain: u32,
    pub(crate) template: u32,
    pub(crate) parent: u32,
    pub(crate) principal: u32,
    pub(crate) depth: u8,
    pub(crate) created_ns: u64,
    first_child: u32,
    next: u32,
    prev: u32,
}

/// Agent ids -> slots and principal ids -> chains, for id-based checks.
#[derive(Debug, Default)]
pub(crate) struct Index {
    table: HashTable<u32>,
    pub(crate) ids: Vec<Box<str>>,
    hasher: DefaultHashBuilder,
    pub(crate) principals: FxHashMap<Box<str>, (u32, u32)>,
}

impl Index {
    pub(crate) fn find(&self, id: &str) -> Option<u32> {
        let h = self.hasher.hash_one(id);
        self.table
            .find(h, |&s| self.ids.get(s as usize).is_some_and(|x| &**x == id))
            .copied()
    }

    fn insert(&mut self, id: &str, slot: u32) {
        let i = slot as usize;
        if self.ids.len() <= i {
            self.ids.resize_with(i + 1, Default::default);
        }
        self.ids[i] = id.into();
        let (table, ids, hasher) = (&mut self.table, &self.ids, &self.hasher);
        table.insert_unique(hasher.hash_one(id), slot, |&s| {
            hasher.hash_one(ids.get(s as usize).map_or("", |x| &**x))
        });
    }

    fn remove(&mut self, slot: u32) {
        let Some(id) = self.ids.get_mut(slot as usize).map(std::mem::take) else {
            return;
        };
        if let Ok(e) = self
            .table
            .find_entry(self.hasher.hash_one(&*id), |&s| s == slot)
        {
            e.remove();
        }
    }

    fn bytes(&self) -> usize {
        self.table.capacity() * 5
            + self.ids.capacity() * 16
            + self.ids.iter().map(|s| s.len()).sum::<usize>()
    }
}

pub(crate) struct Writer {
    spec: PolicySpec,
    overlay: BTreeMap<Box<str>, Option<PrincipalSpec>>,
    pub(crate) chains: Chains,
    cache: RightsCache,
    pub(crate) metas: Vec<Meta>,
    free: VecDeque<u32>,
    next_slot: u32,
    live: usize,
    principal_roots: FxHashMap<u32, u32>,
    seq: u64,
    prefix: String,
    /// Suspended principals, with why.
    suspended_principals: BTreeMap<Box<str>, Box<str>>,
    /// Suspended agents (root of each suspension), with why.
    suspensions: FxHashMap<u32, Box<str>>,
    /// The candidate policy's rights cache (shadow evaluation).
    shadow_cache: RightsCache,
}

/// One request as the shadow re-decides it.
type ShadowRequest<'a> = (
    Subject<'a>,
    Action<'a>,
    Option<&'a str>,
    Option<&'a dyn Context>,
    Option<&'a dyn Hooks>,
);

/// What a decision found out along the way, for its audit record (and
/// for its approval, if it needs one).
#[derive(Debug, Default)]
struct Facts {
    now: u64,
    owner: Option<Owner>,
    action: Option<ActionId>,
    /// How the approval stage treats the request.
    approvals: ApprovalMode,
    /// What the approval stage leaves for after the decision.
    approval: Option<Note>,
    /// Units left of the tightest quota the request was charged to.
    quota_remaining: Option<u32>,
}

/// What the approval stage leaves for after the decision: a pending
/// approval to remember once the decision has its id, or the grant it used
/// up, to give back if the request ends up denied.
#[derive(Debug)]
enum Note {
    Pending(Box<Pending>),
    Consumed(GrantKey),
}

/// A decision's reason, rule, retry-after and detail.
type Verdict<'a> = (Reason, Option<RuleId>, Option<u64>, Option<&'a str>);

/// What a decision's audit record says.
fn decision_facts<'a>(
    (reason, rule, retry_after_ns, detail): Verdict<'a>,
    facts: &Facts,
    subject: Subject<'a>,
    action: Action<'a>,
    resource: Option<&'a str>,
) -> DecisionFacts<'a> {
    let (handle, id, agent_slot) = match subject {
        Subject::Handle(h) => (Some(h), None, None),
        Subject::Id(id) => match facts.owner {
            Some(Owner::Agent(slot)) => (None, Some(id), Some(slot)),
            _ => (None, Some(id), None),
        },
    };
    let (action_id, action_name) = match (facts.action, action) {
        (Some(a), _) => (Some(a), None),
        (None, Action::Name(n)) => (None, Some(n)),
        (None, Action::Id(_)) => (None, None),
    };
    DecisionFacts {
        ts: facts.now,
        handle,
        id,
        agent_slot,
        action: action_id,
        action_name,
        resource,
        reason: reason.code(),
        rule,
        retry_after_ns,
        quota_remaining: facts.quota_remaining,
        detail,
    }
}

/// The context values a decision's conditions read, for its audit record:
/// those of the deciding entry's `when` and, for an allowed guarded
/// action, those of the guards covering it.
fn captured_context<'c>(
    policy: &CompiledPolicy,
    ctx: &'c dyn Context,
    rule: Option<RuleId>,
    a: ActionId,
    reason: Reason,
) -> Vec<(u16, &'c Value)> {
    let mut keys: Vec<&str> = Vec::new();
    let mut add = |r: RuleId| {
        if let Some(rule) = policy.rules.get(r as usize) {
            for c in rule
                .when
                .iter()
                .chain(rule.approval.iter().map(|a| &a.condition))
            {
                keys.extend(c.context_keys().iter().map(|k| &**k));
            }
        }
    };
    if let Some(r) = rule {
        add(r);
    }
    if reason == Reason::Granted && policy.guarded.contains(a) {
        for g in policy.guards.iter() {
            if policy
                .rules
                .get(g.rule as usize)
                .is_some_and(|r| r.actions.contains(a))
            {
                add(g.rule);
            }
        }
    }
    if keys.is_empty() {
        return Vec::new();
    }
    keys.sort_unstable();
    keys.dedup();
    keys.iter()
        .filter_map(|k| {
            let index = policy
                .context_keys
                .binary_search_by(|x| (**x).cmp(k))
                .ok()?;
            let value = ctx.lookup(k, &policy.context_keys)?;
            Some((u16::try_from(index).ok()?, value))
        })
        .collect()
}

/// A decision's outcome inside the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    reason: Reason,
    rule: Option<RuleId>,
    retry_after_ns: Option<u64>,
    detail: Option<String>,
    /// Units left of the tightest quota the request was charged to.
    quota_remaining: Option<u32>,
}

impl Outcome {
    fn denied(reason: Reason) -> Outcome {
        Outcome {
            reason,
            rule: None,
            retry_after_ns: None,
            detail: None,
            quota_remaining: None,
        }
    }
}

/// The decision engine.
pub struct Engine {
    snapshot: ArcSwap<Snapshot>,
    pub(crate) slots: Slots,
    pub(crate) index: RwLock<Index>,
    pub(crate) writer: Mutex<Writer>,
    clock: Arc<dyn Clock>,
    quota: QuotaState,
    frozen: AtomicBool,
    /// Where decisions and events are recorded, when auditing is on.
    audit: ArcSwapOption<AuditSink>,
    /// A candidate policy decided next to the live one, if set.
    shadow: ArcSwapOption<Shadow>,
    /// `EXTRA_AUDIT | EXTRA_SHADOW` while either is set: one relaxed load
    /// keeps the common check off both `ArcSwap`s.
    extras: AtomicU8,
    /// Pending approvals and the grants issued for them.
    pub(crate) approvals: Approvals,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("policy_version", &self.snapshot.load().version())
            .finish()
    }
}

impl Engine {
    /// An engine for `spec` on the system clock.
    pub fn new(spec: PolicySpec) -> Result<Engine> {
        Engine::with_clock(spec, Arc::new(SystemClock))
    }

    /// An engine for `spec` reading time from `clock`.
    pub fn with_clock(spec: PolicySpec, clock: Arc<dyn Clock>) -> Result<Engine> {
        let policy = Arc::new(CompiledPolicy::compile(&spec)?);
        let mut w = Writer {
            spec,
            overlay: BTreeMap::new(),
            chains: Chains::default(),
            cache: RightsCache::default(),
            metas: Vec::new(),
            free: VecDeque::new(),
            next_slot: 0,
            live: 0,
            principal_roots: FxHashMap::default(),
            seq: 0,
            prefix: random_prefix(),
            suspended_principals: BTreeMap::new(),
            suspensions: FxHashMap::default(),
            shadow_cache: RightsCache::default(),
        };
        let mut index = Index::default();
        let snap = build_snapshot(&mut w, &mut index, policy)?;
        let engine = Engine {
            snapshot: ArcSwap::from_pointee(snap),
            slots: Slots::default(),
            index: RwLock::new(index),
            writer: Mutex::new(w),
            clock,
            quota: QuotaState::default(),
            frozen: AtomicBool::new(false),
            audit: ArcSwapOption::empty(),
            shadow: ArcSwapOption::empty(),
            extras: AtomicU8::new(0),
            approvals: Approvals::default(),
        };
        // Principals acting directly charge their own quotas from the start,
        // not only once an agent acts for them.
        {
            let w = engine.writer.lock();
            engine.link_counters(&w, &engine.snapshot.load().policy);
        }
        Ok(engine)
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The current time on the engine's clock.
    pub fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    /// The id of a declared action under the current policy.
    pub fn action_id(&self, name: &str) -> Option<ActionId> {
        self.snapshot.load().policy.action_id(name)
    }

    // ---------------------------------------------------------------- checks

    /// Decide one request without context (see [`Engine::check_request`]).
    pub fn check(
        &self,
        subject: Subject<'_>,
        action: Action<'_>,
        resource: Option<&str>,
    ) -> Decision {
        self.check_request(&Request::new(subject, action, resource))
    }

    /// Decide one request. Without `hooks`, an entry with a hook that would
    /// decide is `hook_error`. With auditing on, the decision is recorded
    /// before it is returned; in strict mode a full buffer is waited on (up
    /// to the sink's bound).
    pub fn check_request(&self, req: &Request<'_>) -> Decision {
        self.check_audited(req, true, ApprovalMode::Check)
    }

    /// [`Engine::check_request`], but never waiting for room in a full strict
    /// audit buffer: the answer is then `audit_unavailable` at once, and a
    /// caller holding a lock the audit writer needs (Python's GIL) can
    /// release it, wait ([`AuditSink::wait_for_room`]) and ask again.
    pub fn try_check_request(&self, req: &Request<'_>) -> Decision {
        self.check_audited(req, false, ApprovalMode::Check)
    }

    /// [`Engine::check_request`] for `explain`: an approval grant in the
    /// context is checked but not used up, no pending approval is
    /// remembered, and nothing is audited or shadowed.
    pub(crate) fn check_explained(&self, req: &Request<'_>) -> Decision {
        self.check_audited(req, true, ApprovalMode::Explain)
    }

    fn check_audited(&self, req: &Request<'_>, wait: bool, approvals: ApprovalMode) -> Decision {
        let Request {
            subject,
            action,
            resource,
            context,
            hooks,
        } = *req;
        let mut facts = Facts {
            approvals,
            ..Facts::default()
        };
        // An explanation is not an action taken: it is neither audited nor
        // shadowed (policy tools probe with it).
        if approvals == ApprovalMode::Explain || self.extras.load(Ordering::Relaxed) == 0 {
            let mut d = self.decide_one(subject, action, resource, context, hooks, &mut facts);
            self.settle_approval(&mut d, &mut facts);
            return d;
        }
        let audit = self.audit.load();
        let sink = audit.as_deref();
        let shadow = self.shadow.load();
        if let Some(sink) = sink {
            if sink.mode() == AuditMode::Strict
                && !sink.has_room(1)
                && !(wait && sink.wait_for_room(1))
            {
                return self.unrecorded(self.snapshot.load_full(), "the audit buffer is full");
            }
        }
        let mut d = self.decide_one(subject, action, resource, context, hooks, &mut facts);
        if let Some(sink) = sink {
            self.record(sink, &mut d, &facts, subject, action, resource, context);
        }
        self.settle_approval(&mut d, &mut facts);
        if let Some(sh) = shadow.as_deref() {
            let req = (subject, action, resource, context, hooks);
            self.compare_shadow(
                sh,
                sink,
                &d.snapshot,
                d.reason,
                d.decision_ref(),
                &facts,
                req,
            );
        }
        d
    }

    /// After a single decision: remember an `approval_required` one under
    /// its id (its audit id, or an engine-local one), or give back the grant
    /// it used up if it ended up denied (strict auditing could not record it).
    fn settle_approval(&self, d: &mut Decision, facts: &mut Facts) {
        match facts.approval.take() {
            None => {}
            Some(Note::Consumed(key)) if !d.allowed => self.approvals.restore(&key),
            // Kept: a shadow decision that follows must not see a replay.
            consumed @ Some(Note::Consumed(_)) => facts.approval = consumed,
            Some(Note::Pending(p)) if d.reason == Reason::ApprovalRequired => {
                let id = d.audit_seq.map(|seq| (d.audit_stream, seq));
                let (stream, seq) = self.approvals.register(id, *p, facts.now);
                d.audit_stream = stream;
                d.audit_seq = Some(seq);
            }
            Some(Note::Pending(_)) => {}
        }
    }

    /// Decide `req` under the candidate too and count a disagreement.
    /// Actions go to the candidate by name: its action ids may differ.
    #[allow(clippy::too_many_arguments)]
    fn compare_shadow(
        &self,
        sh: &Shadow,
        sink: Option<&AuditSink>,
        live_snap: &Snapshot,
        live: Reason,
        decision: Option<(u32, u64)>,
        facts: &Facts,
        (subject, action, resource, context, hooks): ShadowRequest<'_>,
    ) {
        if matches!(live, Reason::Frozen | Reason::AuditUnavailable) {
            sh.stats.skip();
            return;
        }
        let name = match action {
            Action::Name(n) => Some(n),
            Action::Id(i) => live_snap.policy.actions.get(i as usize).map(|s| &**s),
        };
        let candidate_action = name.map_or(Action::Id(u32::MAX), Action::Name);
        // The candidate checks an approval grant without using it up (the
        // live decision may just have), and remembers no pending approval.
        let live_grant = match &facts.approval {
            Some(Note::Consumed(key)) => Some(*key),
            _ => None,
        };
        let mut f = Facts {
            approvals: ApprovalMode::Shadow(live_grant),
            ..Facts::default()
        };
        let decided = self.decide(
            &sh.snap,
            subject,
            candidate_action,
            resource,
            context,
            hooks,
            facts.now,
            &mut f,
            false,
        );
        let Ok(out) = decided else {
            sh.stats.skip();
            return;
        };
        if !sh.stats.observe(name, live, out.reason) {
            return;
        }
        let Some(sink) = sink else { return };
        let mut fields = String::new();
        if let Some((stream, seq)) = decision {
            fields.push_str(&format!("\"decision_id\":\"{stream:08x}-{seq}\","));
        }
        fields.push_str(&format!(
            "\"action\":{},\"resource\":{},\"live\":\"{}\",\"candidate\":\"{}\",\"candidate_rule\":{},\"candidate_version\":\"{}\"",
            name.map_or_else(|| "null".to_string(), json_str),
            resource.map_or_else(|| "null".to_string(), json_str),
            live.as_str(),
            out.reason.as_str(),
            out.rule
                .and_then(|r| sh.snap.policy.rules.get(r as usize))
                .map_or_else(|| "null".to_string(), |r| json_str(&r.path)),
            sh.snap.version(),
        ));
        sink.event(
            &self.snapshot.load_full(),
            facts.now,
            "shadow_diff",
            &fields,
            None,
        );
    }

    // ---------------------------------------------------------------- shadow

    /// Decide every request under `spec` too, without enforcing it, and
    /// count where it disagrees (see [`Engine::shadow_report`]); `None`
    /// stops. Returns the candidate's policy version.
    pub fn set_shadow(&self, spec: Option<PolicySpec>) -> Result<Option<String>> {
        let Some(spec) = spec else {
            self.shadow.store(None);
            self.extras.fetch_and(!EXTRA_SHADOW, Ordering::Relaxed);
            return Ok(None);
        };
        let policy = Arc::new(CompiledPolicy::compile(&spec)?);
        let mut w = self.writer.lock();
        let stats = Arc::new(ShadowStats::new(self.clock.now_ns()));
        let sh = self.build_shadow(&mut w, policy, spec, stats)?;
        let version = sh.snap.version().to_string();
        self.shadow.store(Some(Arc::new(sh)));
        self.extras.fetch_or(EXTRA_SHADOW, Ordering::Relaxed);
        Ok(Some(version))
    }

    /// What the shadow found so far, if one is set.
    pub fn shadow_report(&self) -> Option<ShadowReport> {
        let sh = self.shadow.load_full()?;
        Some(sh.stats.report(&sh.snap.policy))
    }

    /// The candidate's snapshot over the live chains, principals (with the
    /// runtime overrides) and suspensions.
    fn build_shadow(
        &self,
        w: &mut Writer,
        policy: Arc<CompiledPolicy>,
        spec: PolicySpec,
        stats: Arc<ShadowStats>,
    ) -> Result<Shadow> {
        let principals = effective_principals(w, &policy)?;
        let mut snap = Snapshot::new(policy, principals);
        snap.suspended = w.suspended_principals.keys().cloned().collect();
        w.shadow_cache = RightsCache::default();
        for chain in 0..w.chains.len() as u32 {
            w.shadow_cache.ensure(&snap, &w.chains, chain);
        }
        Ok(Shadow {
            snap: Arc::new(snap),
            spec,
            stats,
        })
    }

    /// After the live side changed (reload, principals, suspensions):
    /// rebuild the candidate's snapshot, keeping its counts.
    fn refresh_shadow(&self, w: &mut Writer) {
        let Some(old) = self.shadow.load_full() else {
            return;
        };
        let rebuilt = CompiledPolicy::compile(&old.spec)
            .and_then(|p| self.build_shadow(w, Arc::new(p), old.spec.clone(), old.stats.clone()));
        match rebuilt {
            Ok(sh) => self.shadow.store(Some(Arc::new(sh))),
            // It compiled when set; if the live side now makes it fail
            // (a runtime principal naming a role it lacks), stop shadowing.
            Err(_) => {
                self.shadow.store(None);
                self.extras.fetch_and(!EXTRA_SHADOW, Ordering::Relaxed);
            }
        }
    }

    fn decide_one(
        &self,
        subject: Subject<'_>,
        action: Action<'_>,
        resource: Option<&str>,
        context: Option<&dyn Context>,
        hooks: Option<&dyn Hooks>,
        facts: &mut Facts,
    ) -> Decision {
        let now = self.clock.now_ns();
        facts.now = now;
        let mut snap = self.snapshot.load_full();
        if self.frozen.load(Ordering::Acquire) {
            return Decision::bare(false, Reason::Frozen, snap);
        }
        for _ in 0..2 {
            match self.decide(
                &snap, subject, action, resource, context, hooks, now, facts, true,
            ) {
                Ok(v) => {
                    return Decision {
                        allowed: v.reason == Reason::Granted,
                        reason: v.reason,
                        rule: v.rule,
                        retry_after_ns: v.retry_after_ns,
                        detail: v.detail,
                        snapshot: snap,
                        audit_seq: None,
                        audit_stream: 0,
                    }
                }
                // The agent's chain was created after `snap` was loaded: the
                // current snapshot has it.
                Err(Missing) => snap = self.snapshot.load_full(),
            }
        }
        Decision::bare(false, Reason::InternalError, snap)
    }

    /// A strict-mode denial that could not be recorded.
    fn unrecorded(&self, snap: Arc<Snapshot>, why: &str) -> Decision {
        let mut d = Decision::bare(false, Reason::AuditUnavailable, snap);
        d.detail = Some(why.to_string());
        d
    }

    /// Append `d`'s record; in strict mode, a decision that cannot be
    /// recorded becomes an `audit_unavailable` denial.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        sink: &AuditSink,
        d: &mut Decision,
        facts: &Facts,
        subject: Subject<'_>,
        action: Action<'_>,
        resource: Option<&str>,
        context: Option<&dyn Context>,
    ) {
        let values = match (context, facts.action) {
            (Some(ctx), Some(a)) => captured_context(&d.snapshot.policy, ctx, d.rule, a, d.reason),
            _ => Vec::new(),
        };
        let verdict = (d.reason, d.rule, d.retry_after_ns, d.detail.as_deref());
        let f = decision_facts(verdict, facts, subject, action, resource);
        match sink.record(&d.snapshot, &f, &values) {
            Some(seq) => {
                d.audit_seq = Some(seq);
                d.audit_stream = sink.config().stream;
            }
            None if sink.mode() == AuditMode::Strict => {
                *d = self.unrecorded(d.snapshot.clone(), "the decision could not be recorded");
            }
            None => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        snap: &Snapshot,
        subject: Subject<'_>,
        action: Action<'_>,
        resource: Option<&str>,
        context: Option<&dyn Context>,
        hooks: Option<&dyn Hooks>,
        now: u64,
        facts: &mut Facts,
        charge: bool,
    ) -> Result<Outcome, Missing> {
        let policy = &*snap.policy;
        // The action first, so a record names it whatever else is wrong.
        let a = match action {
            Action::Id(a) if (a as usize) < policy.action_count() => Some(a),
            Action::Name(n) => policy.action_id(n),
            Action::Id(_) => None,
        };
        facts.action = a;
        let resolved = match subject {
            Subject::Handle(h) => self
                .slots
                .resolve(h, now)
                .map(|l| (l.chain, Owner::Agent(split_handle(h).0 as u32))),
            Subject::Id(id) => self.resolve_id(id, now),
        };
        let (chain, owner) = match resolved {
            Ok(c) => c,
            Err(why) => return Ok(Outcome::denied(why)),
        };
        facts.owner = Some(owner);
        let rights = snap.rights(chain).ok_or(Missing)?;
        // An identity the current policy no longer supports (template gone,
        // principal removed, chain too deep) is reported before the request.
        if let Some(problem) = rights.problem {
            return Ok(Outcome::denied(problem));
        }
        let Some(a) = a else {
            return Ok(Outcome::denied(Reason::UnknownAction));
        };
        if let Some(r) = resource {
            if validate_resource(r).is_err() {
                return Ok(Outcome::denied(Reason::InvalidResource));
            }
        }
        let who = || self.identity(snap, owner);
        let env = RequestEnv::new(policy, context, resource, &who, now).with_hooks(hooks);
        let v = rights.decide(policy, a, resource, &env);
        let mut out = Outcome {
            reason: v.reason,
            rule: v.rule,
            retry_after_ns: None,
            detail: v.detail,
            quota_remaining: None,
        };
        if let Some(need) = v.approval.as_deref() {
            let asked = Asked {
                policy,
                need,
                owner,
                action: a,
                resource,
                context,
            };
            self.apply_approval(&asked, &env, now, facts, &mut out);
        }
        if charge && rights.has_quota() {
            self.quota_stage(policy, rights, owner, a, now, &mut out);
            facts.quota_remaining = out.quota_remaining;
        }
        self.keep_grant_if_granted(facts, &out);
        Ok(out)
    }

    /// Put the approval stage's answer into the outcome (cold).
    #[cold]
    fn apply_approval(
        &self,
        asked: &Asked<'_>,
        env: &RequestEnv<'_>,
        now: u64,
        facts: &mut Facts,
        out: &mut Outcome,
    ) {
        match self.approval_stage(asked, env, now, facts.approvals) {
            Stage::Required(pending) => facts.approval = pending.map(Note::Pending),
            Stage::Approved {
                rule,
                detail,
                consumed,
            } => {
                out.reason = Reason::Granted;
                out.rule = rule;
                out.detail = Some(detail);
                facts.approval = consumed.map(Note::Consumed);
            }
            Stage::Refused(reason, why) => {
                out.reason = reason;
                out.detail = (!why.is_empty()).then_some(why);
            }
        }
    }

    /// A grant used up by a request a later stage denied (a quota) is given back.
    #[inline]
    fn keep_grant_if_granted(&self, facts: &mut Facts, out: &Outcome) {
        if out.reason != Reason::Granted {
            if let Some(Note::Consumed(key)) = &facts.approval {
                self.approvals.restore(key);
                facts.approval = None;
            }
        }
    }

    /// Who `owner` is, for conditions reading `agent.*` or `principal.*`
    /// (only then: it takes the writer lock to read the agent's metadata).
    #[cold]
    pub(crate) fn identity(&self, snap: &Snapshot, owner: Owner) -> Identity {
        let w = self.writer.lock();
        let index = self.index.read();
        let id_of = |slot: u32| {
            index
                .ids
                .get(slot as usize)
                .map(|s| s.to_string())
                .unwrap_or_default()
        };
        let (agent, pid) = match owner {
            Owner::Principal(pid) => (None, pid),
            Owner::Agent(slot) => match w.metas.get(slot as usize) {
                None => (None, NONE),
                Some(m) => {
                    let delegator = if m.parent != NONE {
                        Some(id_of(m.parent))
                    } else if m.principal != NONE {
                        Some(w.chains.principals.name(m.principal).to_string())
                    } else {
                        None
                    };
                    let facts = AgentFacts {
                        id: id_of(slot),
                        template: w.chains.templates.name(m.template).to_string(),
                        depth: u32::from(m.depth),
                        delegator,
                        created_at_ns: m.created_ns,
                    };
                    (Some(facts), m.principal)
                }
            },
        };
        let principal_id = (pid != NONE).then(|| w.chains.principals.name(pid).to_string());
        let principal = principal_id
            .as_deref()
            .and_then(|p| snap.principals.get(p).cloned());
        let mut chain = Vec::new();
        if let Owner::Agent(slot) = owner {
            let mut cur = slot;
            while let Some(m) = w.metas.get(cur as usize) {
                chain.push(id_of(cur));
                if m.parent == NONE || chain.len() > 64 {
                    break;
                }
                cur = m.parent;
            }
        }
        chain.extend(principal_id.clone());
        Identity {
            agent,
            chain,
            principal_id,
            principal,
        }
    }

    /// Charge an allowed request; count a denial for the breaker (cold).
    fn quota_stage(
        &self,
        policy: &CompiledPolicy,
        rights: &Rights,
        owner: Owner,
        a: ActionId,
        now: u64,
        out: &mut Outcome,
    ) {
        if out.reason == Reason::Granted {
            match self.quota.charge(policy, rights, owner, a, now) {
                Ok(left) => {
                    out.quota_remaining = left.is_finite().then(|| left.floor() as u32);
                    return;
                }
                Err(d) => {
                    out.reason = d.reason;
                    out.rule = None;
                    out.retry_after_ns = d.retry_after_ns;
                    out.quota_remaining = Some(0);
                }
            }
        }
        let quota_denial = matches!(out.reason, Reason::RateLimited | Reason::BudgetExhausted);
        let policy_denial = matches!(
            out.reason,
            Reason::DeniedByRule | Reason::NoGrant | Reason::DelegatorDenied | Reason::OutOfScope
        );
        if quota_denial || policy_denial {
            if let Some(cause) = self.quota.record_denial(rights, owner, quota_denial, now) {
                if let (Owner::Agent(slot), Some(cfg)) = (owner, rights.breaker.as_ref()) {
                    self.trip(slot, &format!("breaker tripped: {}", cause.describe(cfg)));
                }
            }
        }
    }

    /// A breaker tripped: suspend the agent and its delegates (cold path).
    #[cold]
    fn trip(&self, slot: u32, why: &str) {
        let mut w = self.writer.lock();
        let n = self.suspend_tree(&mut w, slot, why);
        self.emit("suspend", || {
            format!(
                "{},\"why\":{},\"breaker\":true,\"suspended\":{n}",
                self.agent_field(slot),
                json_str(why)
            )
        });
    }

    /// Resolve an agent id or principal id to a chain and whose counters it charges.
    fn resolve_id(&self, id: &str, now: u64) -> Result<(u32, Owner), Reason> {
        let index = self.index.read();
        if let Some(slot) = index.find(id) {
            let handle = self
                .slots
                .current_handle(slot)
                .ok_or(Reason::UnknownAgent)?;
            drop(index);
            return self
                .slots
                .resolve(handle, now)
                .map(|l| (l.chain, Owner::Agent(slot)));
        }
        index
            .principals
            .get(id)
            .map(|&(chain, pid)| (chain, Owner::Principal(pid)))
            .ok_or(Reason::UnknownPrincipal)
    }

    /// Decide a batch of handle requests, writing `allowed[i]` (and
    /// `reasons[i]` if given). `resources[i] = None` is a request without one.
    pub fn check_batch(
        &self,
        handles: &[u64],
        actions: &[u32],
        resources: Option<&[Option<&str>]>,
        allowed: &mut [bool],
        reasons: Option<&mut [u8]>,
    ) -> Result<()> {
        self.check_batch_with(handles, actions, resources, None, None, allowed, reasons)
    }

    /// [`Engine::check_batch`] with a context per request, as columns, and
    /// `hooks` to run the policy's hooks (called only for the requests
    /// that reach an entry with one).
    #[allow(clippy::too_many_arguments)]
    pub fn check_batch_with(
        &self,
        handles: &[u64],
        actions: &[u32],
        resources: Option<&[Option<&str>]>,
        context: Option<&Columns>,
        hooks: Option<&(dyn Hooks + Sync)>,
        allowed: &mut [bool],
        mut reasons: Option<&mut [u8]>,
    ) -> Result<()> {
        let n = handles.len();
        let lengths_ok = actions.len() == n
            && context.is_none_or(|c| c.has_rows(n))
            && allowed.len() == n
            && resources.is_none_or(|r| r.len() == n)
            && reasons.as_ref().is_none_or(|r| r.len() == n);
        if !lengths_ok {
            return Err(Error::InvalidArgument(
                "handles, actions, resources and outputs must all have the same length".into(),
            ));
        }
        let (sink, shadow) = (self.audit.load_full(), self.shadow.load_full());
        if sink.is_some() || shadow.is_some() {
            let out = (allowed, reasons);
            let (sink, shadow) = (sink.as_deref(), shadow.as_deref());
            return self.check_batch_audited(
                sink, shadow, handles, actions, resources, context, hooks, out,
            );
        }
        let now = self.clock.now_ns();
        let mut snap = self.snapshot.load_full();
        if self.frozen.load(Ordering::Acquire) {
            allowed.fill(false);
            if let Some(out) = reasons.as_deref_mut() {
                out.fill(Reason::Frozen.code());
            }
            return Ok(());
        }
        // Two passes per block: first every agent's slot, then every chain's
        // bitset word. Within a pass the loads are independent, so their
        // cache misses overlap instead of forming one dependent chain per
        // request.
        let mut chains = [Ok(0u32); BATCH_BLOCK];
        let mut start = 0;
        while start < n {
            let end = (start + BATCH_BLOCK).min(n);
            // Where the general loop picks up in this block.
            let mut rest = start;
            for (slot, h) in chains.iter_mut().zip(&handles[start..end]) {
                *slot = self.slots.resolve(*h, now).map(|l| l.chain);
            }
            if resources.is_none() {
                // The common case, decided by the bitsets alone: no
                // per-request branch on the answer.
                let n_actions = snap.policy.action_count();
                for (j, chain) in chains.iter().enumerate().take(end - start) {
                    let (i, a) = (start + j, actions[start + j]);
                    let ok = match (*chain, reasons.as_deref_mut()) {
                        (Ok(c), None) if (a as usize) < n_actions => snap.fast_no_resource(c, a),
                        (Ok(c), Some(out)) if (a as usize) < n_actions => {
                            snap.fast_reason_no_resource(c, a).map(|r| {
                                out[i] = r.code();
                                r == Reason::Granted
                            })
                        }
                        // Unknown handle or action: the general loop gives the reason.
                        (Err(_), None) | (Ok(_), None) => Some(false),
                        _ => None,
                    };
                    match ok {
                        Some(ok) => allowed[i] = ok,
                        // A chain newer than `snap`, or a reason to look up:
                        // the general loop takes over from here.
                        None => break,
                    }
                    rest = i + 1;
                }
                if rest == end {
                    start = end;
                    continue;
                }
            }
            for (j, chain) in chains
                .iter()
                .enumerate()
                .take(end - start)
                .skip(rest - start)
            {
                let i = start + j;
                let resource = resources.and_then(|r| r.get(i).copied().flatten());
                let a = actions[i];
                let reason = loop {
                    let decided = match *chain {
                        Ok(c) => {
                            let owner = Owner::Agent(split_handle(handles[i]).0 as u32);
                            let row = context.map(|cols| cols.row(i));
                            let ctx = row.as_ref().map(|r| r as &dyn Context);
                            self.batch_one(
                                &snap,
                                c,
                                owner,
                                a,
                                resource,
                                (ctx, hooks.map(|h| h as &dyn Hooks)),
                                now,
                                reasons.is_some(),
                            )
                        }
                        Err(why) => Some(why),
                    };
                    match decided {
                        Some(r) => break r,
                        None => {
                            let fresh = self.snapshot.load_full();
                            if Arc::ptr_eq(&fresh, &snap) {
                                break Reason::InternalError;
                            }
                            snap = fresh;
                        }
                    }
                };
                allowed[i] = reason == Reason::Granted;
                if let Some(out) = reasons.as_deref_mut() {
                    out[i] = reason.code();
                }
            }
            start = end;
        }
        Ok(())
    }

    /// The batch with auditing on: each request decided as a single check
    /// would be, recorded in blocks (one lock per block).
    #[allow(clippy::too_many_arguments)]
    fn check_batch_audited(
        &self,
        sink: Option<&AuditSink>,
        shadow: Option<&Shadow>,
        handles: &[u64],
        actions: &[u32],
        resources: Option<&[Option<&str>]>,
        context: Option<&Columns>,
        hooks: Option<&(dyn Hooks + Sync)>,
        (allowed, mut reasons): (&mut [bool], Option<&mut [u8]>),
    ) -> Result<()> {
        let n = handles.len();
        let mut staged = Staged::default();
        let mut set = |i: usize, r: Reason, reasons: &mut Option<&mut [u8]>| {
            allowed[i] = r == Reason::Granted;
            if let Some(out) = reasons.as_deref_mut() {
                out[i] = r.code();
            }
        };
        let mut start = 0;
        while start < n {
            let end = (start + AUDIT_BLOCK).min(n);
            if sink.is_some_and(|sink| {
                sink.mode() == AuditMode::Strict
                    && !sink.has_room(end - start)
                    && !sink.wait_for_room(end - start)
            }) {
                for i in start..n {
                    set(i, Reason::AuditUnavailable, &mut reasons);
                }
                return Ok(());
            }
            // One clock reading and one snapshot per block; records join the
            // buffer in runs decided under one snapshot.
            let now = self.clock.now_ns();
            let mut snap = self.snapshot.load_full();
            let frozen = self.frozen.load(Ordering::Acquire);
            let mut first = start;
            staged.clear();
            for i in start..end {
                let row = context.map(|c| c.row(i));
                let ctx = row.as_ref().map(|r| r as &dyn Context);
                let resource = resources.and_then(|r| r.get(i).copied().flatten());
                let (subject, action) = (Subject::Handle(handles[i]), Action::Id(actions[i]));
                // A grant used here and then refused by a full strict log is
                // lost (fail closed): the agent asks for a new approval.
                let mut facts = Facts {
                    now,
                    approvals: ApprovalMode::Batch,
                    ..Facts::default()
                };
                let hooks = hooks.map(|h| h as &dyn Hooks);
                let out = loop {
                    if frozen {
                        facts.action = ((actions[i] as usize) < snap.policy.action_count())
                            .then_some(actions[i]);
                        break Outcome::denied(Reason::Frozen);
                    }
                    match self.decide(
                        &snap, subject, action, resource, ctx, hooks, now, &mut facts, true,
                    ) {
                        Ok(out) => break out,
                        Err(Missing) => {
                            // The agent's chain is newer than `snap`.
                            let fresh = self.snapshot.load_full();
                            if Arc::ptr_eq(&fresh, &snap) {
                                break Outcome::denied(Reason::InternalError);
                            }
                            self.flush_run(
                                sink,
                                &snap,
                                &mut staged,
                                first..i,
                                &mut set,
                                &mut reasons,
                            );
                            (snap, first) = (fresh, i);
                        }
                    }
                };
                if sink.is_some() {
                    let values = match (ctx, facts.action) {
                        (Some(c), Some(a)) => {
                            captured_context(&snap.policy, c, out.rule, a, out.reason)
                        }
                        _ => Vec::new(),
                    };
                    let verdict = (
                        out.reason,
                        out.rule,
                        out.retry_after_ns,
                        out.detail.as_deref(),
                    );
                    staged.decision(
                        &decision_facts(verdict, &facts, subject, action, resource),
                        &values,
                    );
                }
                set(i, out.reason, &mut reasons);
                if let Some(sh) = shadow {
                    let req = (subject, action, resource, ctx, hooks);
                    self.compare_shadow(sh, sink, &snap, out.reason, None, &facts, req);
                }
            }
            self.flush_run(sink, &snap, &mut staged, first..end, &mut set, &mut reasons);
            start = end;
        }
        Ok(())
    }

    /// Append a run of staged batch records; in strict mode, requests whose
    /// records were refused are denied (`audit_unavailable`).
    fn flush_run(
        &self,
        sink: Option<&AuditSink>,
        snap: &Arc<Snapshot>,
        staged: &mut Staged,
        run: std::ops::Range<usize>,
        set: &mut impl FnMut(usize, Reason, &mut Option<&mut [u8]>),
        reasons: &mut Option<&mut [u8]>,
    ) {
        let Some(sink) = sink else {
            staged.clear();
            return;
        };
        let kept = sink.append(snap, staged, false).is_some();
        staged.clear();
        if !kept && sink.mode() == AuditMode::Strict {
            for i in run {
                set(i, Reason::AuditUnavailable, reasons);
            }
        }
    }

    /// One batch element whose agent resolved to `chain`; `None` when `snap`
    /// predates the chain.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn batch_one(
        &self,
        snap: &Snapshot,
        chain: u32,
        owner: Owner,
        a: u32,
        resource: Option<&str>,
        (context, hooks): (Option<&dyn Context>, Option<&dyn Hooks>),
        now: u64,
        want_reason: bool,
    ) -> Option<Reason> {
        let policy = &*snap.policy;
        let malformed = if a as usize >= policy.action_count() {
            Some(Reason::UnknownAction)
        } else {
            resource.and_then(|r| validate_resource(r).err().map(|_| Reason::InvalidResource))
        };
        if let Some(why) = malformed {
            // Same precedence as `check`: the identity's own problem first.
            return Some(snap.rights(chain)?.problem.unwrap_or(why));
        }
        if snap.needs_general(chain) {
            // Conditions read the request, and quotas are charged (or
            // denials counted for the breaker), exactly as a single check.
            let rights = snap.rights(chain)?;
            if let Some(p) = rights.problem {
                return Some(p);
            }
            let who = || self.identity(snap, owner);
            let env = RequestEnv::new(policy, context, resource, &who, now)
                .with_hooks(hooks)
                .without_detail();
            let v = rights.decide(policy, a, resource, &env);
            let mut out = Outcome {
                reason: v.reason,
                rule: v.rule,
                retry_after_ns: None,
                detail: None,
                quota_remaining: None,
            };
            let mut facts = Facts {
                approvals: ApprovalMode::Batch,
                ..Facts::default()
            };
            if let Some(need) = v.approval.as_deref() {
                let asked = Asked {
                    policy,
                    need,
                    owner,
                    action: a,
                    resource,
                    context,
                };
                self.apply_approval(&asked, &env, now, &mut facts, &mut out);
            }
            if rights.has_quota() {
                self.quota_stage(policy, rights, owner, a, now, &mut out);
            }
            self.keep_grant_if_granted(&mut facts, &out);
            return Some(out.reason);
        }
        match snap.fast(chain, a, resource.is_some()) {
            Fast::Allow => Some(Reason::Granted),
            Fast::Missing => None,
            // Only the boolean is reported; any non-granted code will do.
            Fast::Deny if !want_reason => Some(Reason::NoGrant),
            Fast::Evaluate if !want_reason => {
                let allowed = snap.rights(chain)?.allows(policy, a, resource);
                Some(if allowed {
                    Reason::Granted
                } else {
                    Reason::NoGrant
                })
            }
            Fast::Deny | Fast::Evaluate => Some(snap.rights(chain)?.reason(policy, a, resource)),
        }
    }

    // ----------------------------------------------------------------- audit

    /// Record every decision and lifecycle event in `sink` from now on.
    /// Agents registered before are named in the records about them.
    pub fn attach_audit(&self, sink: Arc<AuditSink>) {
        let w = self.writer.lock();
        let cards = {
            let index = self.index.read();
            (0..w.next_slot)
                .filter_map(|slot| self.card(&w, &index, slot))
                .collect()
        };
        sink.seed(cards);
        let fields = format!("\"agents\":{}", w.live);
        sink.event(
            &self.snapshot.load_full(),
            self.clock.now_ns(),
            "audit_started",
            &fields,
            None,
        );
        self.audit.store(Some(sink));
        self.extras.fetch_or(EXTRA_AUDIT, Ordering::Relaxed);
    }

    /// Stop recording; returns the sink (to drain and close).
    pub fn detach_audit(&self) -> Option<Arc<AuditSink>> {
        let _w = self.writer.lock();
        self.extras.fetch_and(!EXTRA_AUDIT, Ordering::Relaxed);
        self.audit.swap(None)
    }

    /// The sink decisions are recorded in, if auditing is on.
    pub fn audit_sink(&self) -> Option<Arc<AuditSink>> {
        self.audit.load_full()
    }

    /// Record an event from outside the engine (key rotation, the writer's
    /// own troubles): `fields` is the inside of a JSON object. False when
    /// auditing is off.
    pub fn audit_event(&self, kind: &str, fields: &str) -> bool {
        match self.audit.load().as_deref() {
            Some(sink) => {
                sink.event(
                    &self.snapshot.load_full(),
                    self.clock.now_ns(),
                    kind,
                    fields,
                    None,
                );
                true
            }
            None => false,
        }
    }

    /// Record a lifecycle event if auditing is on (`fields` built only then).
    pub(crate) fn emit(&self, kind: &str, fields: impl FnOnce() -> String) {
        if let Some(sink) = self.audit.load().as_deref() {
            sink.event(
                &self.snapshot.load_full(),
                self.clock.now_ns(),
                kind,
                &fields(),
                None,
            );
        }
    }

    /// `"agent":"<id>"` for an event about `slot`.
    fn agent_field(&self, slot: u32) -> String {
        format!(
            "\"agent\":{}",
            json_str(&self.id_of(slot).unwrap_or_default())
        )
    }

    /// How audit records name the agent in `slot`.
    fn card(&self, w: &Writer, index: &Index, slot: u32) -> Option<Card> {
        let m = w.metas.get(slot as usize)?;
        let handle = self.slots.current_handle(slot)?;
        let id = index.ids.get(slot as usize).filter(|s| !s.is_empty())?;
        let mut chain: Vec<&str> = Vec::new();
        let mut cur = m.parent;
        while cur != NONE && chain.len() < 64 {
            chain.push(index.ids.get(cur as usize).map_or("", |s| &**s));
            cur = w.metas.get(cur as usize).map_or(NONE, |p| p.parent);
        }
        let principal = (m.principal != NONE).then(|| w.chains.principals.name(m.principal));
        chain.extend(principal);
        Some(Card::new(
            slot,
            handle,
            id,
            w.chains.templates.name(m.template),
            principal,
            &chain,
        ))
    }

    // ------------------------------------------------------------- lifecycle

    /// Register a new agent of `template`, acting for `on_behalf_of` (a
    /// principal, or a parent agent) or for nobody.
    pub fn provision(
        &self,
        template: &str,
        on_behalf_of: Option<Subject<'_>>,
        ttl_ns: Option<u64>,
        agent_id: Option<&str>,
    ) -> Result<AgentInfo> {
        self.provision_with(&Provision {
            template,
            on_behalf_of,
            ttl_ns,
            agent_id,
            scope: None,
            quota: None,
        })
    }

    /// Register a new agent as `req` describes.
    pub fn provision_with(&self, req: &Provision<'_>) -> Result<AgentInfo> {
        let Provision {
            template,
            on_behalf_of,
            ttl_ns,
            agent_id,
            scope,
            quota,
        } = *req;
        let now = self.clock.now_ns();
        let mut guard = self.writer.lock();
        let w = &mut *guard;
        let snap = self.snapshot.load_full();
        let policy = &*snap.policy;
        let tmpl = policy
            .templates
            .get(template)
            .ok_or_else(|| Error::Provision(format!("unknown template `{template}`")))?;

        // The delegator: its chain, slot, principal and expiry.
        let (parent_chain, parent_slot, principal, parent_expiry) = match on_behalf_of {
            None => (NO_CHAIN, NONE, NONE, NEVER),
            Some(s) => self.delegator(w, &snap, s, now)?,
        };
        let scope_id = match scope {
            None => NO_SCOPE,
            Some(patterns) => {
                policy.check_scope(patterns).map_err(|e| match e {
                    Error::Policy { path, message } => {
                        Error::Provision(format!("{path}: {message}"))
                    }
                    other => other,
                })?;
                w.chains.intern_scope(patterns)
            }
        };
        let quota_id = match quota {
            None => NO_QUOTA,
            Some(q) if policy.quota_id(q).is_some() => w.chains.quotas.intern(q),
            Some(q) => return Err(Error::Provision(format!("unknown quota `{q}`"))),
        };
        let tid = w.chains.templates.intern(template);
        let (chain, _) = w.chains.intern(ChainKey::Agent {
            parent: parent_chain,
            template: tid,
            scope: scope_id,
            quota: quota_id,
        });
        let depth = w.chains.depth(chain);
        let limit = w.chains.depth_limit(policy, chain);
        if depth > limit {
            return Err(Error::Provision(format!(
                "delegation depth {depth} exceeds the `max_delegation_depth` ({limit}) of a template on the chain"
            )));
        }
        let ttl = match (ttl_ns, tmpl.max_ttl_ns) {
            (Some(t), Some(max)) if t > max => {
                return Err(Error::Provision(format!(
                    "ttl {}s exceeds the `max_ttl` ({}s) of template `{template}`",
                    t as f64 / 1e9,
                    max as f64 / 1e9
                )))
            }
            (Some(0), _) => return Err(Error::InvalidArgument("ttl must be positive".into())),
            (Some(t), _) => Some(t),
            (None, _) => tmpl.ttl_ns,
        };
        let expires = ttl
            .map_or(NEVER, |t| now.saturating_add(t))
            .min(parent_expiry);

        let id = match agent_id {
            Some(id) => {
                validate_principal_id(id, "agent_id").map_err(|_| {
                    Error::InvalidArgument(format!(
                        "`{id}` is not a valid agent id (1-256 printable characters, no spaces)"
                    ))
                })?;
                let mut index = self.index.write();
                if index.principals.contains_key(id) {
                    return Err(Error::Provision(format!("id `{id}` is a principal's id")));
                }
                if let Some(old) = index.find(id) {
                    if self.slots.state_of(old) == state::ACTIVE {
                        return Err(Error::Provision(format!("id `{id}` is already in use")));
                    }
                    // A retired agent's id may be taken again; its old handle
                    // keeps answering with the retired agent's reason.
                    index.remove(old);
                }
                id.to_string()
            }
            None => {
                w.seq += 1;
                format!("agt_{}{:x}", w.prefix, w.seq)
            }
        };
        // Also when the chain is not new: an earlier provision may have
        // interned it and then been refused before computing its rights.
        w.cache.ensure(&snap, &w.chains, chain);
        if let Some(sh) = self.shadow.load().as_deref() {
            w.shadow_cache.ensure(&sh.snap, &w.chains, chain);
        }
        let slot = self.allocate_slot(w)?;
        // Counters first: a check can charge them as soon as the slot is published.
        let needs_counters = policy_has_quotas(policy);
        if principal != NONE && needs_counters {
            self.quota.ensure_principal(principal);
        }
        self.quota
            .provision(slot, parent_slot, principal, needs_counters);
        let handle = self
            .slots
            .publish(slot, chain, expires)
            .ok_or_else(|| Error::Capacity("the agent registry is full".into()))?;
        let meta = Meta {
            chain,
            template: tid,
            parent: parent_slot,
            principal,
            depth: depth.min(255) as u8,
            created_ns: now,
            first_child: NONE,
            next: NONE,
            prev: NONE,
        };
        set_meta(w, slot, meta);
        link(w, slot);
        w.live += 1;
        self.index.write().insert(&id, slot);
        if let Some(sink) = self.audit.load().as_deref() {
            if let Some(card) = self.card(w, &self.index.read(), slot) {
                let mut fields = card.fragment.to_string();
                fields.push_str(",\"handle\":");
                fields.push_str(&handle.to_string());
                fields.push_str(",\"expires_at\":");
                fields.push_str(&if expires != NEVER {
                    expires.to_string()
                } else {
                    "null".into()
                });
                if let Some(patterns) = scope {
                    fields.push_str(",\"scope\":");
                    fields.push_str(&serde_json::to_string(patterns).unwrap_or_default());
                }
                sink.event(&snap, now, "provision", &fields, Some(card));
            }
        }
        Ok(AgentInfo {
            id,
            handle,
            template: template.to_string(),
            on_behalf_of: match on_behalf_of {
                None => None,
                Some(_) if parent_slot != NONE => self.id_of(parent_slot),
                Some(_) => Some(w.chains.principals.name(principal).to_string()),
            },
            principal: (principal != NONE).then(|| w.chains.principals.name(principal).to_string()),
            depth,
            created_at_ns: now,
            expires_at_ns: (expires != NEVER).then_some(expires),
            state: "active",
            scope: scope.map(|_| {
                w.chains
                    .scope(scope_id)
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            }),
        })
    }

    fn delegator(
        &self,
        w: &Writer,
        snap: &Snapshot,
        s: Subject<'_>,
        now: u64,
    ) -> Result<(u32, u32, u32, u64)> {
        let slot = match s {
            Subject::Handle(h) => Some(split_handle(h).0 as u32),
            Subject::Id(id) => self.index.read().find(id),
        };
        if let Some(slot) = slot {
            let handle = match s {
                Subject::Handle(h) => h,
                Subject::Id(_) => self.slots.current_handle(slot).unwrap_or(0),
            };
            let live = self.slots.resolve(handle, now).map_err(|why| {
                Error::Provision(format!(
                    "the delegating agent is not active ({})",
                    why.as_str()
                ))
            })?;
            let principal = w.metas.get(slot as usize).map_or(NONE, |m| m.principal);
            return Ok((live.chain, slot, principal, live.expires_at));
        }
        let Subject::Id(pid) = s else {
            return Err(Error::Provision(
                "the delegating agent is not active (unknown_agent)".into(),
            ));
        };
        if !snap.principals.contains_key(pid) {
            return Err(Error::UnknownSubject(format!(
                "no principal or agent `{pid}`"
            )));
        }
        let pid_id = w.chains.principals.get(pid).unwrap_or(NONE);
        let chain = w
            .chains
            .get(&ChainKey::Principal(pid_id))
            .unwrap_or(NO_CHAIN);
        if chain == NO_CHAIN {
            return Err(Error::UnknownSubject(format!(
                "no principal or agent `{pid}`"
            )));
        }
        Ok((chain, NONE, pid_id, NEVER))
    }

    fn allocate_slot(&self, w: &mut Writer) -> Result<u32> {
        if w.free.len() >= REUSE_AFTER || (w.next_slot as usize) >= self.slots.capacity() {
            if let Some(slot) = w.free.pop_front() {
                self.index.write().remove(slot);
                return Ok(slot);
            }
            return Err(Error::Capacity("the agent registry is full".into()));
        }
        let slot = w.next_slot;
        w.next_slot += 1;
        Ok(slot)
    }

    fn id_of(&self, slot: u32) -> Option<String> {
        self.index
            .read()
            .ids
            .get(slot as usize)
            .map(|s| s.to_string())
    }

    fn slot_of(&self, s: Subject<'_>) -> Result<u32> {
        let slot = match s {
            Subject::Handle(h) => {
                let (slot, generation) = split_handle(h);
                let current = self.slots.current_handle(slot as u32);
                (current == Some(make_handle(slot as u32, generation))).then_some(slot as u32)
            }
            Subject::Id(id) => self.index.read().find(id),
        };
        slot.ok_or_else(|| match s {
            Subject::Handle(h) => Error::UnknownSubject(format!("no agent with handle {h}")),
            Subject::Id(id) => Error::UnknownSubject(format!("no agent `{id}`")),
        })
    }

    /// Deprovision an agent and, in cascade, every agent acting for it.
    /// Returns how many live agents were retired (0 if it already was).
    pub fn deprovision(&self, agent: Subject<'_>) -> Result<usize> {
        let slot = self.slot_of(agent)?;
        let mut w = self.writer.lock();
        let retired = self.retire_tree(&mut w, slot, state::REVOKED, state::DELEGATOR_REVOKED);
        self.emit("deprovision", || {
            format!(
                "{},\"retired\":{retired},\"cascade\":{}",
                self.agent_field(slot),
                retired.saturating_sub(1)
            )
        });
        Ok(retired)
    }

    /// Retire `root` (to `root_state`) and its descendants (to `child_state`);
    /// returns how many of them were live. Agents already past their expiry
    /// are retired as expired and not counted, so their tombstones keep the
    /// true reason.
    fn retire_tree(&self, w: &mut Writer, root: u32, root_state: u8, child_state: u8) -> usize {
        if !is_live(self.slots.state_of(root)) {
            return 0;
        }
        let now = self.clock.now_ns();
        unlink(w, root);
        let mut count = 0;
        let mut stack = vec![(root, root_state)];
        while let Some((s, to)) = stack.pop() {
            if !is_live(self.slots.state_of(s)) {
                continue;
            }
            w.suspensions.remove(&s);
            self.quota.unlink(s);
            if self.slots.expires_at(s) <= now {
                self.slots.retire(s, state::EXPIRED);
            } else {
                self.slots.retire(s, to);
                count += 1;
            }
            w.live -= 1;
            w.free.push_back(s);
            let mut c = w.metas.get(s as usize).map_or(NONE, |m| m.first_child);
            while c != NONE {
                stack.push((c, child_state));
                c = w.metas.get(c as usize).map_or(NONE, |m| m.next);
            }
            if let Some(m) = w.metas.get_mut(s as usize) {
                m.first_child = NONE;
            }
        }
        count
    }

    /// Set a live agent's expiry to `expires_at_ns` (Unix ns), e.g. when it
    /// presents a fresh credential. The new lifetime is bounded by the
    /// template's `max_ttl` and by the delegator's expiry; descendants are
    /// clamped so none outlives it.
    pub fn refresh(&self, agent: Subject<'_>, expires_at_ns: u64) -> Result<AgentInfo> {
        let slot = self.slot_of(agent)?;
        let now = self.clock.now_ns();
        {
            let w = self.writer.lock();
            let handle = self.slots.current_handle(slot).unwrap_or(0);
            self.slots.resolve(handle, now).map_err(|why| {
                Error::Provision(format!(
                    "cannot refresh an agent that is not active ({})",
                    why.as_str()
                ))
            })?;
            let m = w
                .metas
                .get(slot as usize)
                .copied()
                .ok_or_else(|| Error::UnknownSubject("no such agent".into()))?;
            let snap = self.snapshot.load_full();
            let template = w.chains.templates.name(m.template);
            if let Some(max) = snap
                .policy
                .templates
                .get(template)
                .and_then(|t| t.max_ttl_ns)
            {
                if expires_at_ns.saturating_sub(now) > max {
                    return Err(Error::Provision(format!(
                        "the new lifetime exceeds the `max_ttl` ({}s) of template `{template}`",
                        max as f64 / 1e9
                    )));
                }
            }
            let parent_expiry = if m.parent == NONE {
                NEVER
            } else {
                self.slots.expires_at(m.parent)
            };
            let expires = expires_at_ns.min(parent_expiry);
            // Clamp the whole subtree: no descendant may outlive its delegator.
            let mut stack = vec![(slot, expires)];
            while let Some((s, bound)) = stack.pop() {
                let e = if s == slot {
                    bound
                } else {
                    self.slots.expires_at(s).min(bound)
                };
                self.slots.set_expiry(s, e);
                let mut c = w.metas.get(s as usize).map_or(NONE, |m| m.first_child);
                while c != NONE {
                    stack.push((c, e));
                    c = w.metas.get(c as usize).map_or(NONE, |m| m.next);
                }
            }
        }
        self.agent(Subject::Handle(
            self.slots.current_handle(slot).unwrap_or(0),
        ))
    }

    /// Retire every agent whose lifetime is over, freeing its slot; returns how many.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now_ns();
        let mut w = self.writer.lock();
        let mut count = 0;
        for slot in 0..w.next_slot {
            if self.slots.state_of(slot) == state::ACTIVE && self.slots.expires_at(slot) <= now {
                // Descendants never outlive their delegator, so the whole
                // subtree is expired; `retire_tree` counts live agents only.
                let before = w.live;
                self.retire_tree(&mut w, slot, state::EXPIRED, state::EXPIRED);
                count += before - w.live;
                self.emit("expire", || {
                    format!("{},\"retired\":{}", self.agent_field(slot), before - w.live)
                });
            }
        }
        count
    }

    /// Describe an agent by handle or id.
    pub fn agent(&self, s: Subject<'_>) -> Result<AgentInfo> {
        let slot = self.slot_of(s)?;
        let w = self.writer.lock();
        let m = w
            .metas
            .get(slot as usize)
            .copied()
            .ok_or_else(|| Error::UnknownSubject("no such agent".into()))?;
        let handle = self.slots.current_handle(slot).unwrap_or(0);
        let expires = self.slots.expires_at(slot);
        let st = match self.slots.state_of(slot) {
            state::ACTIVE if self.clock.now_ns() >= expires => "expired",
            state::ACTIVE => "active",
            other => crate::registry::state_reason(other).as_str(),
        };
        let id = self.id_of(slot).unwrap_or_default();
        Ok(AgentInfo {
            id,
            handle,
            template: w.chains.templates.name(m.template).to_string(),
            on_behalf_of: if m.parent != NONE {
                self.id_of(m.parent)
            } else if m.principal != NONE {
                Some(w.chains.principals.name(m.principal).to_string())
            } else {
                None
            },
            principal: (m.principal != NONE)
                .then(|| w.chains.principals.name(m.principal).to_string()),
            depth: u32::from(m.depth),
            created_at_ns: m.created_ns,
            expires_at_ns: (expires != NEVER).then_some(expires),
            state: st,
            scope: match w.chains.key(m.chain) {
                Some(ChainKey::Agent { scope, .. }) if scope != NO_SCOPE => Some(
                    w.chains
                        .scope(scope)
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                ),
                _ => None,
            },
        })
    }

    // ---------------------------------------------------------------- policy

    /// Compile `spec` and swap it in atomically; agents keep their identities.
    /// Returns (old version, new version). On error the old policy stays.
    pub fn reload(&self, spec: PolicySpec) -> Result<(String, String)> {
        let policy = Arc::new(CompiledPolicy::compile(&spec)?);
        let mut w = self.writer.lock();
        let old_spec = std::mem::replace(&mut w.spec, spec);
        let mut index = self.index.write();
        match build_snapshot(&mut w, &mut index, policy) {
            Ok(snap) => {
                drop(index);
                self.link_counters(&w, &snap.policy);
                let new = snap.version().to_string();
                let old = self.snapshot.swap(Arc::new(snap));
                self.quota.new_lease_epoch();
                self.refresh_shadow(&mut w);
                self.emit("reload", || {
                    format!("\"old\":\"{}\",\"new\":\"{new}\"", old.version())
                });
                Ok((old.version().to_string(), new))
            }
            Err(e) => {
                w.spec = old_spec;
                Err(e)
            }
        }
    }

    /// Add or replace a principal at runtime (kept across reloads; overrides the document).
    pub fn upsert_principal(&self, id: &str, spec: PrincipalSpec) -> Result<()> {
        validate_principal_id(id, "id").map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let snap = self.snapshot.load_full();
        snap.policy
            .compile_principal(&spec, &format!("principals.{}", crate::policy::key(id)))?;
        if self.index.read().find(id).is_some() {
            return Err(Error::InvalidArgument(format!(
                "`{id}` is already an agent id"
            )));
        }
        let mut w = self.writer.lock();
        let previous = w.overlay.insert(id.into(), Some(spec));
        let mut index = self.index.write();
        match build_snapshot(&mut w, &mut index, snap.policy.clone()) {
            Ok(s) => {
                drop(index);
                self.link_counters(&w, &s.policy);
                self.snapshot.store(Arc::new(s));
                self.refresh_shadow(&mut w);
                self.emit("principal_upsert", || {
                    format!("\"principal\":{}", json_str(id))
                });
                Ok(())
            }
            Err(e) => {
                match previous {
                    Some(p) => w.overlay.insert(id.into(), p),
                    None => w.overlay.remove(id),
                };
                Err(e)
            }
        }
    }

    /// Remove a principal; every agent acting for it is retired. Returns how many.
    pub fn remove_principal(&self, id: &str) -> Result<usize> {
        let mut w = self.writer.lock();
        let snap = self.snapshot.load_full();
        if !snap.principals.contains_key(id) {
            return Err(Error::UnknownSubject(format!("no principal `{id}`")));
        }
        w.overlay.insert(id.into(), None);
        let mut count = 0;
        if let Some(pid) = w.chains.principals.get(id) {
            while let Some(&first) = w.principal_roots.get(&pid) {
                if first == NONE {
                    break;
                }
                let n = self.retire_tree(
                    &mut w,
                    first,
                    state::PRINCIPAL_REMOVED,
                    state::PRINCIPAL_REMOVED,
                );
                if n == 0 {
                    unlink(&mut w, first);
                }
                count += n;
            }
        }
        let mut index = self.index.write();
        let s = build_snapshot(&mut w, &mut index, snap.policy.clone())?;
        drop(index);
        self.link_counters(&w, &s.policy);
        self.snapshot.store(Arc::new(s));
        self.refresh_shadow(&mut w);
        self.emit("principal_remove", || {
            format!("\"principal\":{},\"retired\":{count}", json_str(id))
        });
        Ok(count)
    }

    // ------------------------------------------------------ kill switches

    /// Suspend an agent (and every agent acting for it), or a principal
    /// (and everything acting for it). Returns how many agents were
    /// suspended now (a principal's agents are refused through its chain).
    pub fn suspend(&self, subject: Subject<'_>, why: &str) -> Result<usize> {
        if let Subject::Id(id) = subject {
            if self.index.read().principals.contains_key(id) {
                let mut w = self.writer.lock();
                w.suspended_principals.insert(id.into(), why.into());
                self.rebuild(&mut w)?;
                self.emit("suspend", || {
                    format!("\"principal\":{},\"why\":{}", json_str(id), json_str(why))
                });
                return Ok(0);
            }
        }
        let slot = self.slot_of(subject)?;
        let mut w = self.writer.lock();
        let n = self.suspend_tree(&mut w, slot, why);
        self.emit("suspend", || {
            format!(
                "{},\"why\":{},\"suspended\":{n}",
                self.agent_field(slot),
                json_str(why)
            )
        });
        Ok(n)
    }

    fn suspend_tree(&self, w: &mut Writer, root: u32, why: &str) -> usize {
        if self.slots.state_of(root) != state::ACTIVE {
            return 0;
        }
        w.suspensions.insert(root, why.into());
        let mut count = 0;
        let mut stack = vec![root];
        while let Some(s) = stack.pop() {
            if self.slots.transition(s, state::ACTIVE, state::SUSPENDED) {
                count += 1;
            }
            let mut c = w.metas.get(s as usize).map_or(NONE, |m| m.first_child);
            while c != NONE {
                stack.push(c);
                c = w.metas.get(c as usize).map_or(NONE, |m| m.next);
            }
        }
        count
    }

    /// Undo `suspend` for an agent (its delegates suspended with it resume
    /// too, unless suspended on their own account) or a principal; resets
    /// the agent's breaker. Returns how many agents became active.
    pub fn resume(&self, subject: Subject<'_>) -> Result<usize> {
        if let Subject::Id(id) = subject {
            if self.index.read().principals.contains_key(id) {
                let mut w = self.writer.lock();
                if w.suspended_principals.remove(id).is_some() {
                    self.rebuild(&mut w)?;
                    self.emit("resume", || format!("\"principal\":{}", json_str(id)));
                }
                return Ok(0);
            }
        }
        let root = self.slot_of(subject)?;
        let mut w = self.writer.lock();
        if w.suspensions.remove(&root).is_none() {
            return Ok(0);
        }
        self.quota.reset_breaker(Owner::Agent(root));
        let mut count = 0;
        let mut stack = vec![root];
        while let Some(s) = stack.pop() {
            // A delegate suspended on its own account stays suspended, with its subtree.
            if s != root && w.suspensions.contains_key(&s) {
                continue;
            }
            if self.slots.transition(s, state::SUSPENDED, state::ACTIVE) {
                count += 1;
            }
            let mut c = w.metas.get(s as usize).map_or(NONE, |m| m.first_child);
            while c != NONE {
                stack.push(c);
                c = w.metas.get(c as usize).map_or(NONE, |m| m.next);
            }
        }
        self.emit("resume", || {
            format!("{},\"resumed\":{count}", self.agent_field(root))
        });
        Ok(count)
    }

    /// Why an agent (or principal) is suspended, if it is; an agent suspended
    /// because a delegator was names the delegator's reason.
    pub fn suspension(&self, subject: Subject<'_>) -> Option<String> {
        if let Subject::Id(id) = subject {
            if let Some(why) = self.writer.lock().suspended_principals.get(id) {
                return Some(why.to_string());
            }
        }
        let mut slot = self.slot_of(subject).ok()?;
        let w = self.writer.lock();
        loop {
            if let Some(why) = w.suspensions.get(&slot) {
                return Some(why.to_string());
            }
            slot = w
                .metas
                .get(slot as usize)
                .map(|m| m.parent)
                .filter(|p| *p != NONE)?;
        }
    }

    /// The kill switch: deny every request (`frozen`) until `unfreeze`.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::Release);
        self.emit("freeze", String::new);
    }

    /// Lift the kill switch.
    pub fn unfreeze(&self) {
        self.frozen.store(false, Ordering::Release);
        self.emit("unfreeze", String::new);
    }

    /// Whether the kill switch is on.
    pub fn is_frozen(&self) -> bool {
        self.frozen.load(Ordering::Acquire)
    }

    // -------------------------------------------------------------- quotas

    /// Remaining rate, budget, in-flight and limits at every level of a
    /// subject's chain (own first), as JSON.
    pub fn quota_status(&self, subject: Subject<'_>) -> Result<serde_json::Value> {
        let now = self.clock.now_ns();
        let snap = self.snapshot.load_full();
        let (chain, owner, names) = self.chain_of(subject)?;
        let rights = snap.rights(chain).ok_or_else(|| {
            Error::UnknownSubject("the subject's chain is not in the current policy".into())
        })?;
        Ok(self.quota.status(&snap.policy, rights, owner, &names, now))
    }

    /// Decide a request and, if allowed, hold one in-flight slot at every
    /// level whose quota caps concurrency (denied `concurrency_limit`
    /// otherwise). Give the slots back with `release`.
    pub fn acquire(
        &self,
        subject: Subject<'_>,
        action: Action<'_>,
        resource: Option<&str>,
    ) -> (Decision, Option<Lease>) {
        let mut d = self.check(subject, action, resource);
        if !d.allowed {
            return (d, None);
        }
        let Ok((chain, owner, _)) = self.chain_of(subject) else {
            d.allowed = false;
            d.reason = Reason::InternalError;
            return (d, None);
        };
        let Some(rights) = d.snapshot.rights(chain) else {
            d.allowed = false;
            d.reason = Reason::InternalError;
            return (d, None);
        };
        match self.quota.acquire(&d.snapshot.policy, rights, owner) {
            Ok(owners) => (d, Some(Lease { owners })),
            Err(denial) => {
                // The check was recorded as allowed; the log must say the
                // lease was refused after all.
                if let Some((stream, seq)) = d.decision_ref() {
                    self.emit("lease_refused", || {
                        format!(
                            "\"decision_id\":\"{stream:08x}-{seq}\",\"reason\":\"{}\"",
                            denial.reason.as_str()
                        )
                    });
                }
                d.allowed = false;
                d.reason = denial.reason;
                d.rule = None;
                (d, None)
            }
        }
    }

    /// Give back what `acquire` took (idempotent per lease).
    pub fn release(&self, lease: &mut Lease) {
        self.quota.release(&lease.owners);
        lease.owners.clear();
    }

    // ------------------------------------------------- fleet quota leases

    /// Start (or stop) charging every quota cell against a lease of the
    /// fleet's allowance too, renewed from outside through
    /// [`Engine::quota_lease_demand`] and [`Engine::quota_lease_grant`]
    /// (docs/multi-host.md). A cell whose lease is used up denies
    /// `quota_unavailable`.
    pub fn set_quota_leasing(&self, on: bool) {
        self.quota.set_leasing(on);
    }

    /// Every cell registered for lease renewal: its handle, its fleet key
    /// (`agent:ID:QUOTA:CELL` or `principal:ID:QUOTA:CELL`), its rate or
    /// budget, the units it holds (negative: owed) and whether a reload
    /// made its terms stale (give its units back and forget it).
    pub fn quota_lease_demand(&self) -> Vec<LeaseDemand> {
        let w = self.writer.lock();
        let index = self.index.read();
        self.quota
            .lease_registry()
            .into_iter()
            .filter_map(|(h, terms, units, stale)| {
                Some(LeaseDemand {
                    handle: h.pack(),
                    key: lease_key(&w, &index, h, &terms)?,
                    interval_ns: terms.params.interval_ns(),
                    burst: terms.params.burst(),
                    units,
                    stale,
                })
            })
            .collect()
    }

    /// Add `units` the fleet granted to the cell `handle` names, if it is
    /// still the cell of `key`; false otherwise (give them back to the fleet).
    pub fn quota_lease_grant(&self, handle: u64, key: &str, units: u32) -> bool {
        let w = self.writer.lock();
        let index = self.index.read();
        match self.lease_handle(&w, &index, handle, key) {
            Some(h) => self.quota.grant_lease(h, units),
            None => false,
        }
    }

    /// Empty the lease of the cell `handle` names (if it is still the cell
    /// of `key`) and return the units it held; `forget` also stops renewing it.
    pub fn quota_lease_return(&self, handle: u64, key: &str, forget: bool) -> i64 {
        let w = self.writer.lock();
        let index = self.index.read();
        match self.lease_handle(&w, &index, handle, key) {
            Some(h) => self.quota.return_lease(h, forget),
            // Its agent is gone (or the slot holds another): its units went with it.
            None => 0,
        }
    }

    fn lease_handle(
        &self,
        w: &Writer,
        index: &Index,
        handle: u64,
        key: &str,
    ) -> Option<LeaseHandle> {
        let h = LeaseHandle::unpack(handle)?;
        let terms = self.quota.lease_terms(h)?;
        (lease_key(w, index, h, &terms)?.as_str() == key).then_some(h)
    }

    /// A subject's chain, counters owner, and the ids along its chain (own first).
    fn chain_of(&self, subject: Subject<'_>) -> Result<(u32, Owner, Vec<String>)> {
        let now = self.clock.now_ns();
        if let Subject::Id(id) = subject {
            if let Some(&(chain, pid)) = self.index.read().principals.get(id) {
                return Ok((chain, Owner::Principal(pid), vec![id.to_string()]));
            }
        }
        let slot = self.slot_of(subject)?;
        let handle = self.slots.current_handle(slot).unwrap_or(0);
        let live = self.slots.resolve(handle, now).map_err(|why| {
            Error::UnknownSubject(format!("the agent is not active ({})", why.as_str()))
        })?;
        let w = self.writer.lock();
        let index = self.index.read();
        let mut names = Vec::new();
        let mut cur = slot;
        let mut principal = NONE;
        while let Some(m) = w.metas.get(cur as usize) {
            names.push(
                index
                    .ids
                    .get(cur as usize)
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
            );
            principal = m.principal;
            if m.parent == NONE {
                break;
            }
            cur = m.parent;
        }
        if principal != NONE {
            names.push(w.chains.principals.name(principal).to_string());
        }
        Ok((live.chain, Owner::Agent(slot), names))
    }

    /// Rebuild and swap the snapshot under the current policy (principal
    /// changes, suspensions).
    fn rebuild(&self, w: &mut Writer) -> Result<()> {
        let snap = self.snapshot.load_full();
        let mut index = self.index.write();
        let s = build_snapshot(w, &mut index, snap.policy.clone())?;
        drop(index);
        self.link_counters(w, &s.policy);
        self.snapshot.store(Arc::new(s));
        self.refresh_shadow(w);
        Ok(())
    }

    /// After a policy change: give every live agent and principal counters
    /// if the policy now needs them.
    fn link_counters(&self, w: &Writer, policy: &CompiledPolicy) {
        if !policy_has_quotas(policy) {
            return;
        }
        for slot in 0..w.next_slot {
            if is_live(self.slots.state_of(slot)) {
                if let Some(m) = w.metas.get(slot as usize) {
                    if m.principal != NONE {
                        self.quota.ensure_principal(m.principal);
                    }
                    self.quota.link(slot, m.parent, m.principal);
                }
            }
        }
        for (chain, pid) in self.index.read().principals.values() {
            let _ = chain;
            self.quota.ensure_principal(*pid);
        }
    }

    /// Monitoring counters.
    pub fn stats(&self) -> Stats {
        let w = self.writer.lock();
        let index_bytes = self.index.read().bytes();
        Stats {
            agents: w.live,
            slots: w.next_slot as usize,
            chains: w.chains.len(),
            policy_version: self.snapshot.load().version().to_string(),
            registry_bytes: self.slots.allocated_bytes()
                + w.metas.capacity() * std::mem::size_of::<Meta>()
                + w.free.capacity() * 4
                + index_bytes,
        }
    }
}

/// A chain the snapshot does not know yet (created after it was loaded).
struct Missing;

/// Requests per block of the batch loop (see `check_batch`).
const BATCH_BLOCK: usize = 64;

/// The principals in force under `policy`: its own, with the runtime
/// upserts and removals laid over them.
fn effective_principals(
    w: &Writer,
    policy: &CompiledPolicy,
) -> Result<BTreeMap<Box<str>, Arc<Principal>>> {
    let mut principals: BTreeMap<Box<str>, Arc<Principal>> = policy
        .principals
        .iter()
        .map(|(k, v)| (k.clone(), Arc::new(v.clone())))
        .collect();
    for (id, spec) in &w.overlay {
        match spec {
            None => {
                principals.remove(id);
            }
            Some(spec) => {
                let path = format!("principals.{} (set at runtime)", crate::policy::key(id));
                principals.insert(id.clone(), Arc::new(policy.compile_principal(spec, &path)?));
            }
        }
    }
    Ok(principals)
}

/// Rebuild the snapshot for `policy`: effective principals, then the rights
/// of every chain known so far.
fn build_snapshot(
    w: &mut Writer,
    index: &mut Index,
    policy: Arc<CompiledPolicy>,
) -> Result<Snapshot> {
    let principals = effective_principals(w, &policy)?;
    for id in principals.keys() {
        if index.find(id).is_some() {
            return Err(Error::policy(
                format!("principals.{}", crate::policy::key(id)),
                format!("`{id}` is already the id of an agent"),
            ));
        }
        let pid = w.chains.principals.intern(id);
        let (chain, _) = w.chains.intern(ChainKey::Principal(pid));
        index.principals.insert(id.clone(), (chain, pid));
    }
    let mut snap = Snapshot::new(policy, principals);
    snap.suspended = w.suspended_principals.keys().cloned().collect();
    w.cache = RightsCache::default();
    for chain in 0..w.chains.len() as u32 {
        w.cache.ensure(&snap, &w.chains, chain);
    }
    Ok(snap)
}

fn set_meta(w: &mut Writer, slot: u32, meta: Meta) {
    let i = slot as usize;
    if w.metas.len() <= i {
        w.metas.resize(
            i + 1,
            Meta {
                chain: NONE,
                template: NONE,
                parent: NONE,
                principal: NONE,
                depth: 0,
                created_ns: 0,
                first_child: NONE,
                next: NONE,
                prev: NONE,
            },
        );
    }
    w.metas[i] = meta;
}

/// Put `slot` at the head of its delegator's list of direct delegates (a
/// parent agent's children, or a principal's root agents).
fn link(w: &mut Writer, slot: u32) {
    let Some(m) = w.metas.get(slot as usize).copied() else {
        return;
    };
    let head = if m.parent != NONE {
        w.metas
            .get(m.parent as usize)
            .map_or(NONE, |p| p.first_child)
    } else if m.principal != NONE {
        w.principal_roots.get(&m.principal).copied().unwrap_or(NONE)
    } else {
        return;
    };
    if let Some(h) = w.metas.get_mut(head as usize) {
        h.prev = slot;
    }
    if let Some(me) = w.metas.get_mut(slot as usize) {
        me.next = head;
        me.prev = NONE;
    }
    if m.parent != NONE {
        if let Some(p) = w.metas.get_mut(m.parent as usize) {
            p.first_child = slot;
        }
    } else {
        w.principal_roots.insert(m.principal, slot);
    }
}

/// Remove `slot` from its delegator's list.
fn unlink(w: &mut Writer, slot: u32) {
    let Some(m) = w.metas.get(slot as usize).copied() else {
        return;
    };
    if m.prev != NONE {
        if let Some(p) = w.metas.get_mut(m.prev as usize) {
            p.next = m.next;
        }
    } else if m.parent != NONE {
        if let Some(p) = w.metas.get_mut(m.parent as usize) {
            if p.first_child == slot {
                p.first_child = m.next;
            }
        }
    } else if m.principal != NONE && w.principal_roots.get(&m.principal) == Some(&slot) {
        if m.next == NONE {
            w.principal_roots.remove(&m.principal);
        } else {
            w.principal_roots.insert(m.principal, m.next);
        }
    }
    if m.next != NONE {
        if let Some(n) = w.metas.get_mut(m.next as usize) {
            n.prev = m.prev;
        }
    }
    if let Some(me) = w.metas.get_mut(slot as usize) {
        me.next = NONE;
        me.prev = NONE;
    }
}

/// Whether the policy has anything that needs per-agent counters.
fn policy_has_quotas(policy: &CompiledPolicy) -> bool {
    !policy.quotas.is_empty() || policy.templates.values().any(|t| t.breaker.is_some())
}

/// Whether a slot state is a registered, not-yet-retired agent (active or suspended).
fn is_live(s: u8) -> bool {
    s == state::ACTIVE || s == state::SUSPENDED
}

/// A short per-engine prefix so generated agent ids differ across restarts.
fn random_prefix() -> String {
    let r = std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now());
    format!("{:06x}_", r & 0xff_ffff)
}

/// `s` as a JSON string.
fn json_str(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len() + 2);
    crate::audit::json::write_str(&mut out, s);
    String::from_utf8_lossy(&out).into_owned()
}

/// One cell registered for lease renewal ([`Engine::quota_lease_demand`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseDemand {
    /// Names the cell in [`Engine::quota_lease_grant`] and [`Engine::quota_lease_return`].
    pub handle: u64,
    /// The fleet-wide key of the cell's allowance.
    pub key: String,
    /// The rate or budget: nanoseconds per unit.
    pub interval_ns: u64,
    /// The rate or budget: units at once.
    pub burst: u32,
    /// Units the cell holds (negative: owed to the fleet).
    pub units: i64,
    /// A reload changed the policy since the cell registered.
    pub stale: bool,
}

/// The fleet-wide key of a leased cell (`None` if its owner has no id any more).
fn lease_key(w: &Writer, index: &Index, h: LeaseHandle, terms: &LeaseTerms) -> Option<String> {
    let (kind, id) = match h.owner {
        Owner::Agent(slot) => ("agent", index.ids.get(slot as usize)?.to_string()),
        Owner::Principal(pid) => ("principal", w.chains.principals.name(pid).to_string()),
    };
    if id.is_empty() {
        return None;
    }
    let cell = match h.cell {
        0 => "rate".to_string(),
        1 => "budget".to_string(),
        n => format!("limit{}", n - 2),
    };
    Some(format!("{kind}:{id}:{}:{cell}", terms.quota))
}
