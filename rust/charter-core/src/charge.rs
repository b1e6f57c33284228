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
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

impl Default for QuotaState {
    fn default() -> Self {
        QuotaState {
            agents: Chunked::new(14, 1 << 16),
            principals: Chunked::new(10, 1 << 14),
        }
    }
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
        mut visit: impl FnMut(usize, Option<&'s QuotaCells>),
    ) {
        let n = rights.levels.len();
        match owner {
            Owner::Principal(_) => visit(0, self.cells(owner)),
            Owner::Agent(slot) => {
                let mut cur = self.cells(Owner::Agent(slot));
                let principal = cur.map_or(NONE, |c| c.principal.load(Ordering::Relaxed));
                let agent_levels = if principal != NONE {
                    n.saturating_sub(1)
                } else {
                    n
                };
                for i in 0..agent_levels {
                    visit(i, cur);
                    let parent = cur.map_or(NONE, |c| c.parent.load(Ordering::Relaxed));
                    cur = (parent != NONE)
                        .then(|| self.cells(Owner::Agent(parent)))
                        .flatten();
                }
                if principal != NONE {
                    visit(agent_levels, self.cells(Owner::Principal(principal)));
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
        mut visit: impl FnMut(&'s Cell, &'s GcraParams, u32, Kind, usize) -> bool,
    ) -> Result<(), usize> {
        let mut go = true;
        let mut missing = None;
        self.walk(rights, owner, |level, cells| {
            if !go {
                return;
            }
            let Some(q) = quota_of(policy, rights, level) else {
                return;
            };
            let Some(cells) = cells else {
                missing.get_or_insert(level);
                go = false;
                return;
            };
            for (limit, cell) in q.limits.iter().zip(&cells.limits) {
                if go && limit.actions.contains(a) {
                    go = visit(cell, &limit.params, 1, Kind::Limit, level);
                }
            }
            if let (true, Some(p)) = (go, &q.rate) {
                go = visit(&cells.rate, p, 1, Kind::Rate, level);
            }
            if let (true, Some(p)) = (go, &q.budget) {
                let cost = policy.costs.get(a as usize).copied().unwrap_or(1);
                go = visit(&cells.budget, p, cost, Kind::Budget, level);
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
        // The fewest units any charged cell has left: what the audit record says remains.
        let mut remaining = f64::INFINITY;
        self.for_each_charge(policy, rights, owner, a, |cell, params, cost, _, _| {
            if let Ok(c) = cell.try_charge(params, cost, now) {
                remaining = remaining.min(params.remaining_at(c.tat_ns, now));
                charged += 1;
                true
            } else {
                refused = true;
                false
            }
        })
        .map_err(|level| denial(Reason::InternalError, None, level))?;
        if !refused {
            return Ok(remaining);
        }
        self.refuse(policy, rights, owner, a, now, charged)
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
        charged: usize,
    ) -> Result<f64, QuotaDenial> {
        let mut undone = 0usize;
        let _ = self.for_each_charge(policy, rights, owner, a, |cell, params, cost, _, _| {
            if undone < charged {
                cell.refund(params, cost);
                undone += 1;
            }
            undone < charged
        });
        let mut worst: Option<QuotaDenial> = None;
        let _ = self.for_each_charge(
            policy,
            rights,
            owner,
            a,
            |cell, params, cost, kind, level| {
                if let Err(r) = params.decide(cell.tat_ns(), cost, now) {
                    let d = refusal(kind, level, &r.kind, r.retry_after_ns);
                    let wait = |x: &QuotaDenial| x.retry_after_ns.unwrap_or(u64::MAX);
                    if worst.as_ref().is_none_or(|w| wait(&d) > wait(w)) {
                        worst = Some(d);
                    }
                }
                true
            },
        );
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
            let Some(max) = quota_of(policy, rights, level).and_then(|q| q.max_in_flight) else {
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
            let Some(q) = quota_of(policy, rights, level) else {
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

fn quota_of<'p>(
    policy: &'p CompiledPolicy,
    rights: &Rights,
    level: usize,
) -> Option<&'p crate::policy::Quota> {
    let id: QuotaId = rights.quotas.get(level).copied().flatten()?;
    policy.quotas.get(usize::from(id))
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
