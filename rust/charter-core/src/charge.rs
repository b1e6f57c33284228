//! The quota stage of a decision: an allowed request is charged against the
//! agent's quota, each delegator's and the principal's, all or nothing
//! (`quota::charge_all`). Per-agent counters live here, beside the registry,
//! indexed by slot; principals' counters are indexed by interned principal
//! id. Both survive reloads: a reload changes parameters, never counts.

use crate::policy::{ActionId, CompiledPolicy, QuotaId, MAX_LIMITS};
use crate::quota::{Breaker, Cell, GcraParams, InFlight, RefusalKind, TripCause};
use crate::reason::Reason;
use crate::rights::Rights;
use crate::table::Chunked;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};

/// "No slot / no principal".
const NONE: u32 = u32::MAX;

/// One agent's (or principal's) counters: 8 bytes a cell.
#[derive(Debug, Default)]
pub struct QuotaCells {
    rate: Cell,
    budget: Cell,
    limits: [Cell; MAX_LIMITS],
    in_flight: InFlight,
    breaker: Breaker,
    /// The delegating agent's slot, or `NONE`.
    parent: AtomicU32,
    /// The chain's principal (interned id), or `NONE`.
    principal: AtomicU32,
    /// Whether `parent`/`principal` are set for the slot's current agent.
    linked: AtomicBool,
    /// The fleet leases of `rate`, `budget` and `limits` (in that order),
    /// consulted only while the quotas are leased from a shared state.
    leases: [LeaseCell; LEASED_CELLS],
}

/// Cells a level can lease: rate, budget, then each limit.
const LEASED_CELLS: usize = 2 + MAX_LIMITS;

/// One cell's lease of a fleet-wide quota: units this server may still
/// admit. It may go below zero by one request (served on credit, repaid
/// from the next grant); while it is below zero the cell admits nothing.
#[derive(Debug, Default)]
struct LeaseCell {
    units: AtomicI64,
    /// Whether the one request on credit was taken since the last positive
    /// grant: repaying a debt alone must not open another credit, or a
    /// server would admit one request per renewal whatever Redis allows.
    credit_used: AtomicBool,
    /// The lease epoch in which the cell was registered for renewal, plus one (0: not registered).
    registered: AtomicU64,
}

impl LeaseCell {
    /// Take `cost` units (lock-free); false while the cell is in debt, or
    /// empty with its credit already used.
    #[inline]
    fn take(&self, cost: u32) -> bool {
        let cost = i64::from(cost);
        let mut v = self.units.load(Ordering::Acquire);
        loop {
            if v < 0 {
                return false;
            }
            if v == 0 {
                // Empty: one request on credit per positive grant.
                if self.credit_used.swap(true, Ordering::AcqRel) {
                    return false;
                }
                match self
                    .units
                    .compare_exchange(0, -cost, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => return true,
                    Err(now) => {
                        self.credit_used.store(false, Ordering::Release);
                        v = now;
                        continue;
                    }
                }
            }
            match self
                .units
                .compare_exchange_weak(v, v - cost, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
    }

    fn give(&self, cost: u32) {
        let before = self.units.fetch_add(i64::from(cost), Ordering::AcqRel);
        if before + i64::from(cost) > 0 {
            // Units beyond the debt: a real grant, so credit is open again.
            self.credit_used.store(false, Ordering::Release);
        }
    }

    /// Empty the lease if it holds units; returns how many it held.
    fn drain(&self) -> i64 {
        let mut v = self.units.load(Ordering::Acquire);
        loop {
            if v <= 0 {
                return 0;
            }
            match self
                .units
                .compare_exchange_weak(v, 0, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return v,
                Err(now) => v = now,
            }
        }
    }
}

/// A cell that wants its lease renewed: whose, which cell, under which quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseHandle {
    /// Whose counters.
    pub owner: Owner,
    /// 0 rate, 1 budget, 2.. the limits.
    pub cell: u8,
}

impl LeaseHandle {
    /// The handle as one integer (for the Python glue).
    pub fn pack(self) -> u64 {
        let (principal, index) = match self.owner {
            Owner::Agent(s) => (0u64, s),
            Owner::Principal(p) => (1u64, p),
        };
        (principal << 40) | (u64::from(index) << 8) | u64::from(self.cell)
    }

    /// The inverse of `pack` (`None` for an integer `pack` never returns).
    pub fn unpack(n: u64) -> Option<LeaseHandle> {
        let cell = u8::try_from(n & 0xff).ok()?;
        let index = u32::try_from((n >> 8) & 0xffff_ffff).ok()?;
        let owner = match n >> 40 {
            0 => Owner::Agent(index),
            1 => Owner::Principal(index),
            _ => return None,
        };
        (usize::from(cell) < LEASED_CELLS).then_some(LeaseHandle { owner, cell })
    }
}

/// What a registered cell is leased under.
#[derive(Debug, Clone)]
pub struct LeaseTerms {
    /// The quota's name.
    pub quota: Box<str>,
    /// The cell's rate or budget.
    pub params: GcraParams,
    /// The lease epoch it was registered in (a reload starts a new one).
    pub epoch: u64,
}

impl QuotaCells {
    fn reset(&self, parent: u32, principal: u32) {
        self.rate.reset();
        self.budget.reset();
        for c in &self.limits {
            c.reset();
        }
        while self.in_flight.release() {}
        self.breaker.reset();
        self.parent.store(parent, Ordering::Relaxed);
        self.principal.store(principal, Ordering::Relaxed);
        for l in &self.leases {
            l.units.store(0, Ordering::Release);
            l.registered.store(0, Ordering::Release);
            l.credit_used.store(false, Ordering::Release);
        }
        self.linked.store(true, Ordering::Release);
    }
}

/// Which counters a quota refusal came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Kind {
    #[default]
    Rate,
    Budget,
    Limit,
}

/// A quota refusal: the reason code, when to retry, and at which level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaDenial {
    /// `rate_limited`, `budget_exhausted` or `concurrency_limit`.
    pub reason: Reason,
    /// When the same request would be admitted (`None`: never, e.g. a cost above the budget).
    pub retry_after_ns: Option<u64>,
    /// The chain level that refused (0 = the agent itself).
    pub level: usize,
}

/// Whose counters: an agent's slot, or a principal acting directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    /// An agent, by slot.
    Agent(u32),
    /// A principal, by interned id.
    Principal(u32),
}

/// Every quota counter of the engine.
#[derive(Debug)]
pub struct QuotaState {
    agents: Chunked<QuotaCells>,
    principals: Chunked<QuotaCells>,
    /// Whether every charge also takes from the cell's fleet lease.
    leasing: AtomicBool,
    /// Bumped by every reload: cells registered before it re-register
    /// under their new quota.
    lease_epoch: AtomicU64,
    /// The cells whose leases a background thread renews.
    lease_registry: Mutex<HashMap<LeaseHandle, LeaseTerms>>,
}

impl Default for QuotaState {
    fn default() -> Self {
        QuotaState {
            agents: Chunked::new(14, 1 << 16),
            principals: Chunked::new(10, 1 << 14),
            leasing: AtomicBool::new(false),
            lease_epoch: AtomicU64::new(0),
            lease_registry: Mutex::new(HashMap::new()),
        }
    }
}

/// Where a charge lands: the level's owner, the cell, the level's quota.
#[derive(Debug, Clone, Copy)]
struct At {
    owner: Owner,
    cell: u8,
    quota: QuotaId,
}

impl QuotaState {
    /// Writer: set up a freshly provisioned agent's counters (only allocates
    /// when `needed`; an existing chunk is always reset so a reused slot
    /// never inherits counts).
    pub fn provision(&self, slot: u32, parent: u32, principal: u32, needed: bool) {
        let cells = if needed {
            self.agents.get_or_alloc(slot as usize)
        } else {
            self.agents.get(slot as usize)
        };
        if let Some(c) = cells {
            c.reset(parent, principal);
        }
    }

    /// Writer: make sure a principal has counters (before any charge reads them).
    pub fn ensure_principal(&self, pid: u32) {
        if let Some(c) = self.principals.get_or_alloc(pid as usize) {
            if !c.linked.load(Ordering::Acquire) {
                c.reset(NONE, NONE);
            }
        }
    }

    /// Writer: counters for an agent provisioned before any quota existed.
    pub fn link(&self, slot: u32, parent: u32, principal: u32) {
        if let Some(c) = self.agents.get_or_alloc(slot as usize) {
            if !c.linked.load(Ordering::Acquire) {
                c.reset(parent, principal);
            }
        }
    }

    /// Writer: forget an agent's link (its slot was retired).
    pub fn unlink(&self, slot: u32) {
        if let Some(c) = self.agents.get(slot as usize) {
            c.linked.store(false, Ordering::Release);
        }
    }

    fn cells(&self, owner: Owner) -> Option<&QuotaCells> {
        match owner {
            Owner::Agent(s) => self.agents.get(s as usize),
            Owner::Principal(p) => self.principals.get(p as usize),
        }
        .filter(|c| c.linked.load(Ordering::Acquire))
    }

    /// The counters of each level of `owner`'s chain, own first, aligned
    /// with `rights.levels`. `None` where a level has no counters (which
    /// fails closed wherever that level has a quota).
    fn walk<'s>(
        &'s self,
        rights: &Rights,
        owner: Owner,
        mut visit: impl FnMut(usize, Owner, Option<&'s QuotaCells>),
    ) {
        let n = rights.levels.len();
        match owner {
            Owner::Principal(_) => visit(0, owner, self.cells(owner)),
            Owner::Agent(slot) => {
                let mut cur_slot = slot;
                let mut cur = self.cells(Owner::Agent(slot));
                let principal = cur.map_or(NONE, |c| c.principal.load(Ordering::Relaxed));
                let agent_levels = if principal != NONE {
                    n.saturating_sub(1)
                } else {
                    n
                };
                for i in 0..agent_levels {
                    visit(i, Owner::Agent(cur_slot), cur);
                    let parent = cur.map_or(NONE, |c| c.parent.load(Ordering::Relaxed));
                    cur_slot = parent;
                    cur = (parent != NONE)
                        .then(|| self.cells(Owner::Agent(parent)))
                        .flatten();
                }
                if principal != NONE {
                    let p = Owner::Principal(principal);
                    visit(agent_levels, p, self.cells(p));
                }
            }
        }
    }

    /// Visit every cell request `a` is charged at, in charging order (per
    /// level, own first: matching limits, rate, budget); stop when `visit`
    /// returns false. `Err(level)` if a level with a quota has no counters.
    fn for_each_charge<'s>(
        &'s self,
        policy: &'s CompiledPolicy,
        rights: &Rights,
        owner: Owner,
        a: ActionId,
        mut visit: impl FnMut(Charged<'s>, Kind, usize) -> bool,
    ) -> Result<(), usize> {
        let mut go = true;
        let mut missing = None;
        self.walk(rights, owner, |level, who, cells| {
            if !go {
                return;
            }
            let Some((quota, q)) = quota_of(policy, rights, level) else {
                return;
            };
            let Some(cells) = cells else {
                missing.get_or_insert(level);
                go = false;
                return;
            };
            let at = |cell: usize| At {
                owner: who,
                cell: cell as u8,
                quota,
            };
            let leased = |i: usize| &cells.leases[i];
            for (i, (limit, cell)) in q.limits.iter().zip(&cells.limits).enumerate() {
                if go && limit.actions.contains(a) {
                    let c = Charged {
                        cell,
                        lease: leased(2 + i),
                        params: &limit.params,
                        cost: 1,
                        at: at(2 + i),
                    };
                    go = visit(c, Kind::Limit, level);
                }
            }
            if let (true, Some(p)) = (go, &q.rate) {
                let c = Charged {
                    cell: &cells.rate,
                    lease: leased(0),
                    params: p,
                    cost: 1,
                    at: at(0),
                };
                go = visit(c, Kind::Rate, level);
            }
            if let (true, Some(p)) = (go, &q.budget) {
                let cost = policy.costs.get(a as usize).copied().unwrap_or(1);
                let c = Charged {
                    cell: &cells.budget,
                    lease: leased(1),
                    params: p,
                    cost,
                    at: at(1),
                };
                go = visit(c, Kind::Budget, level);
            }
        });
        missing.map_or(Ok(()), Err)
    }

    /// Charge an allowed request for action `a`, all or nothing. Optimistic:
    /// every cell is charged in order; if one refuses, those already
    /// charged are refunded and a read-only pass reports the longest wait
    /// of any refusing cell (so `retry_after` is not too early). No level
    /// ever admits beyond its limit and a refused request leaves no net
    /// charge; a concurrent request may see a transient reservation and be
    /// refused spuriously (bounded by the requests in flight; docs/quotas.md).
    pub fn charge(
        &self,
        policy: &CompiledPolicy,
        rights: &Rights,
        owner: Owner,
        a: ActionId,
        now: u64,
    ) -> Result<f64, QuotaDenial> {
        let mut charged = 0usize;
        let mut refused = false;
        let mut unleased = None;
        let leasing = self.leasing.load(Ordering::Relaxed);
        // The fewest units any charged cell has left: what the audit record says remains.
        let mut remaining = f64::INFINITY;
        self.for_each_charge(policy, rights, owner, a, |c, _, level| {
            let Ok(t) = c.cell.try_charge(c.params, c.cost, now) else {
                refused = true;
                return false;
            };
            if leasing && !self.take_lease(policy, &c) {
                c.cell.refund(c.params, c.cost);
                unleased = Some(level);
                refused = true;
                return false;
            }
            remaining = remaining.min(c.params.remaining_at(t.tat_ns, now));
            charged += 1;
            true
        })
        .map_err(|level| denial(Reason::InternalError, None, level))?;
        if !refused {
            return Ok(remaining);
        }
        let done = Undo {
            charged,
            leasing,
            unleased,
        };
        self.refuse(policy, rights, owner, a, now, done)
    }

    /// Take a charge's units from its cell's fleet lease; register the cell
    /// for renewal (cold, once per cell and epoch) when the lease runs dry.
    #[inline]
    fn take_lease(&self, policy: &CompiledPolicy, c: &Charged<'_>) -> bool {
        let ok = c.lease.take(c.cost);
        if !ok || c.lease.units.load(Ordering::Relaxed) <= 0 {
            self.register_lease(policy, c);
        }
        ok
    }

    #[cold]
    fn register_lease(&self, policy: &CompiledPolicy, c: &Charged<'_>) {
        let epoch = self.lease_epoch.load(Ordering::Acquire);
        if c.lease.registered.load(Ordering::Acquire) == epoch + 1 {
            return;
        }
        let Some(q) = policy.quotas.get(usize::from(c.at.quota)) else {
            return;
        };
        let mut reg = self.lease_registry.lock();
        c.lease.registered.store(epoch + 1, Ordering::Release);
        let handle = LeaseHandle {
            owner: c.at.owner,
            cell: c.at.cell,
        };
        reg.insert(
            handle,
            LeaseTerms {
                quota: q.name.clone(),
                params: *c.params,
                epoch,
            },
        );
    }

    /// Start or stop taking every charge from the fleet leases too.
    pub fn set_leasing(&self, on: bool) {
        self.leasing.store(on, Ordering::Relaxed);
    }

    /// A reload: every registered cell re-registers under its new quota.
    pub fn new_lease_epoch(&self) {
        self.lease_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The cells registered for renewal, with their terms, units left and
    /// whether they were registered before the last reload (`stale`).
    pub fn lease_registry(&self) -> Vec<(LeaseHandle, LeaseTerms, i64, bool)> {
        let epoch = self.lease_epoch.load(Ordering::Acquire);
        let reg = self.lease_registry.lock();
        reg.iter()
            .map(|(h, t)| {
                let units = self
                    .lease_cell(*h)
                    .map_or(0, |l| l.units.load(Ordering::Acquire));
                (*h, t.clone(), units, t.epoch != epoch)
            })
            .collect()
    }

    /// The terms a registered cell is leased under.
    pub fn lease_terms(&self, h: LeaseHandle) -> Option<LeaseTerms> {
        self.lease_registry.lock().get(&h).cloned()
    }

    fn lease_cell(&self, h: LeaseHandle) -> Option<&LeaseCell> {
        self.cells(h.owner)?.leases.get(usize::from(h.cell))
    }

    /// Add `units` granted by the fleet to a registered cell; false if the
    /// cell is no longer registered (the caller gives the units back).
    pub fn grant_lease(&self, h: LeaseHandle, units: u32) -> bool {
        let reg = self.lease_registry.lock();
        match (reg.contains_key(&h), self.lease_cell(h)) {
            (true, Some(l)) => {
                l.give(units);
                true
            }
            _ => false,
        }
    }

    /// Empty a cell's lease (returns the units it held); with `forget`, also
    /// stop renewing it unless it is in debt (it registers again when it runs dry).
    pub fn return_lease(&self, h: LeaseHandle, forget: bool) -> i64 {
        let mut reg = self.lease_registry.lock();
        let Some(l) = self.lease_cell(h) else {
            reg.remove(&h);
            return 0;
        };
        let units = l.drain();
        if forget && l.units.load(Ordering::Acquire) == 0 {
            reg.remove(&h);
            l.registered.store(0, Ordering::Release);
        }
        units
    }

    /// The cold half of `charge`: undo the first `charged` charges, then find
    /// the refusal with the longest wait (never = longest; ties keep the first).
    #[cold]
    fn refuse(
        &self,
        policy: &CompiledPolicy,
        rights: &Rights,
        owner: Owner,
        a: ActionId,
        now: u64,
        done: Undo,
    ) -> Result<f64, QuotaDenial> {
        let Undo {
            charged,
            leasing,
            unleased,
        } = done;
        let mut undone = 0usize;
        let _ = self.for_each_charge(policy, rights, owner, a, |c, _, _| {
            if undone < charged {
                c.cell.refund(c.params, c.cost);
                if leasing {
                    c.lease.give(c.cost);
                }
                undone += 1;
            }
            undone < charged
        });
        if let Some(level) = unleased {
            return Err(denial(Reason::QuotaUnavailable, None, level));
        }
        let mut worst: Option<QuotaDenial> = None;
        let _ = self.for_each_charge(policy, rights, owner, a, |c, kind, level| {
            if let Err(r) = c.params.decide(c.cell.tat_ns(), c.cost, now) {
                let d = refusal(kind, level, &r.kind, r.retry_after_ns);
                let wait = |x: &QuotaDenial| x.retry_after_ns.unwrap_or(u64::MAX);
                if worst.as_ref().is_none_or(|w| wait(&d) > wait(w)) {
                    worst = Some(d);
                }
            }
            true
        });
        // Every cell has room again (a concurrent request released it): report
        // a minimal wait rather than admit without charging.
        Err(worst.unwrap_or(denial(Reason::RateLimited, Some(1), 0)))
    }

    /// Take one in-flight slot at every level whose quota caps it; all or
    /// nothing. Returns the owners to release later.
    pub fn acquire(
        &self,
        policy: &CompiledPolicy,
        rights: &Rights,
        owner: Owner,
    ) -> Result<Vec<Owner>, QuotaDenial> {
        let mut held: Vec<(Owner, &QuotaCells)> = Vec::new();
        let mut refused = None;
        let mut owners = Vec::new();
        // Reconstruct each level's owner alongside its cells.
        self.walk_owners(rights, owner, &mut owners);
        for (level, o) in owners.iter().enumerate() {
            let Some(max) = quota_of(policy, rights, level).and_then(|(_, q)| q.max_in_flight)
            else {
                continue;
            };
            let Some(cells) = self.cells(*o) else {
                refused.get_or_insert(denial(Reason::InternalError, None, level));
                break;
            };
            if cells.in_flight.try_acquire(max) {
                held.push((*o, cells));
            } else {
                refused = Some(denial(Reason::ConcurrencyLimit, None, level));
                break;
            }
        }
        if let Some(d) = refused {
            for (_, c) in &held {
                c.in_flight.release();
            }
            return Err(d);
        }
        Ok(held.into_iter().map(|(o, _)| o).collect())
    }

    /// Give back what `acquire` took.
    pub fn release(&self, owners: &[Owner]) {
        for o in owners {
            if let Some(c) = self.cells(*o) {
                c.in_flight.release();
            }
        }
    }

    fn walk_owners(&self, rights: &Rights, owner: Owner, out: &mut Vec<Owner>) {
        match owner {
            Owner::Principal(_) => out.push(owner),
            Owner::Agent(slot) => {
                let n = rights.levels.len();
                let mut cur = slot;
                let principal = self
                    .cells(owner)
                    .map_or(NONE, |c| c.principal.load(Ordering::Relaxed));
                let agent_levels = if principal != NONE {
                    n.saturating_sub(1)
                } else {
                    n
                };
                for _ in 0..agent_levels {
                    out.push(Owner::Agent(cur));
                    cur = self
                        .cells(Owner::Agent(cur))
                        .map_or(NONE, |c| c.parent.load(Ordering::Relaxed));
                    if cur == NONE {
                        break;
                    }
                }
                if principal != NONE {
                    out.push(Owner::Principal(principal));
                }
            }
        }
    }

    /// Record a denial for the breaker of `owner`'s own template; `Some(cause)` if it tripped.
    pub fn record_denial(
        &self,
        rights: &Rights,
        owner: Owner,
        quota: bool,
        now: u64,
    ) -> Option<TripCause> {
        let cfg = rights.breaker.as_ref()?;
        let cells = self.cells(owner)?;
        let cause = if quota {
            TripCause::QuotaDenials
        } else {
            TripCause::PolicyDenials
        };
        cells.breaker.record(cfg, cause, now).then_some(cause)
    }

    /// Clear the breaker of `owner` (on resume).
    pub fn reset_breaker(&self, owner: Owner) {
        if let Some(c) = self.cells(owner) {
            c.breaker.reset();
        }
    }

    /// What is left at every level, for `quota_status`.
    pub fn status(
        &self,
        policy: &CompiledPolicy,
        rights: &Rights,
        owner: Owner,
        names: &[String],
        now: u64,
    ) -> Value {
        let mut owners = Vec::new();
        self.walk_owners(rights, owner, &mut owners);
        let mut levels = Vec::new();
        for (level, o) in owners.iter().enumerate() {
            let name = names.get(level).cloned().unwrap_or_default();
            let Some((_, q)) = quota_of(policy, rights, level) else {
                levels.push(json!({"level": level, "subject": name, "quota": null}));
                continue;
            };
            let cells = self.cells(*o);
            let rem = |c: Option<&Cell>, p: &GcraParams| c.map_or(0.0, |c| c.remaining(p, now));
            levels.push(json!({
                "level": level,
                "subject": name,
                "quota": &*q.name,
                "rate": q.rate.as_ref().map(|p| json!({"remaining": rem(cells.map(|c| &c.rate), p), "burst": p.burst()})),
                "budget": q.budget.as_ref().map(|p| json!({"remaining": rem(cells.map(|c| &c.budget), p), "capacity": p.burst()})),
                "in_flight": q.max_in_flight.map(|m| json!({"held": cells.map_or(0, |c| c.in_flight.current()), "max": m})),
                "limits": q.limits.iter().enumerate().map(|(i, l)| json!({
                    "actions": &*l.pattern,
                    "remaining": rem(cells.and_then(|c| c.limits.get(i)), &l.params),
                    "burst": l.params.burst(),
                })).collect::<Vec<_>>(),
            }));
        }
        Value::Array(levels)
    }
}

/// What a refused charge must undo: its first `charged` charges (and their
/// leases, if `leasing`); `unleased`: the level whose lease was used up.
#[derive(Debug, Clone, Copy)]
struct Undo {
    charged: usize,
    leasing: bool,
    unleased: Option<usize>,
}

/// One cell a request is charged at.
struct Charged<'s> {
    cell: &'s Cell,
    lease: &'s LeaseCell,
    params: &'s GcraParams,
    cost: u32,
    at: At,
}

fn quota_of<'p>(
    policy: &'p CompiledPolicy,
    rights: &Rights,
    level: usize,
) -> Option<(QuotaId, &'p crate::policy::Quota)> {
    let id: QuotaId = rights.quotas.get(level).copied().flatten()?;
    policy.quotas.get(usize::from(id)).map(|q| (id, q))
}

fn refusal(kind: Kind, level: usize, why: &RefusalKind, retry_after_ns: u64) -> QuotaDenial {
    let reason = match kind {
        Kind::Budget => Reason::BudgetExhausted,
        Kind::Rate | Kind::Limit => Reason::RateLimited,
    };
    let retry = match why {
        RefusalKind::Exhausted => Some(retry_after_ns),
        RefusalKind::CostExceedsCapacity { .. } => None,
    };
    denial(reason, retry, level)
}

fn denial(reason: Reason, retry_after_ns: Option<u64>, level: usize) -> QuotaDenial {
    QuotaDenial {
        reason,
        retry_after_ns,
        level,
    }
}
