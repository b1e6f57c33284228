//! GCRA cells: one rate or budget as a theoretical arrival time (TAT) in one
//! atomic, charged with a compare-and-swap loop, refunded when a
//! hierarchical charge fails at a later level.
//!
//! The model: every unit of cost occupies `T` (the emission interval) of
//! virtual time. The TAT is when the cell would be empty again; a charge of
//! `n` moves it to `max(TAT, now) + n*T` and is admitted iff that is at most
//! `now + burst*T` (the capacity; `tau = (burst - 1)*T` is GCRA's
//! tolerance). A TAT at or before `now` means "full", so a fresh cell (TAT
//! 0) is full at any clock reading and the cell needs no epoch of its own:
//! it lives in the caller's clock's nanoseconds.

use crate::error::{Error, Result};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest capacity (`burst * T`) a quota may have: 10 years. Keeps every
/// TAT far from `u64::MAX` for Unix-nanosecond clocks.
pub const MAX_CAPACITY_NS: u64 = 10 * 365 * 86_400 * 1_000_000_000;

/// The limits of one rate or budget: emission interval and burst. Shared by
/// every cell of the quota; the cells hold only state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GcraParams {
    /// `T`: virtual time one unit of cost occupies, >= 1 ns.
    interval_ns: u64,
    /// Most units admitted at once from a full cell, >= 1.
    burst: u32,
    /// `burst * T` (= tau + T), <= [`MAX_CAPACITY_NS`].
    capacity_ns: u64,
}

impl GcraParams {
    /// Parameters from an emission interval `T` (ns per unit) and a burst.
    /// Fails if `T` is 0, `burst` is 0 or `burst * T` exceeds
    /// [`MAX_CAPACITY_NS`]. Policies go through [`crate::quota::Rate`].
    pub fn new(interval_ns: u64, burst: u32) -> Result<Self> {
        if interval_ns == 0 {
            return Err(Error::InvalidArgument(
                "the emission interval must be at least 1 ns".into(),
            ));
        }
        if burst == 0 {
            return Err(Error::InvalidArgument("burst must be at least 1".into()));
        }
        match interval_ns.checked_mul(u64::from(burst)) {
            Some(capacity_ns) if capacity_ns <= MAX_CAPACITY_NS => Ok(GcraParams {
                interval_ns,
                burst,
                capacity_ns,
            }),
            _ => Err(Error::InvalidArgument(format!(
                "a burst of {burst} at this rate takes more than 10 years to refill"
            ))),
        }
    }

    /// `T`: nanoseconds of virtual time per unit of cost.
    #[inline]
    pub fn interval_ns(&self) -> u64 {
        self.interval_ns
    }

    /// Most units a full cell admits at once.
    #[inline]
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// GCRA's tolerance `tau = (burst - 1) * T`.
    #[inline]
    pub fn tolerance_ns(&self) -> u64 {
        self.capacity_ns - self.interval_ns
    }

    /// `burst * T`: how far the TAT may run ahead of `now` after a charge.
    #[inline]
    pub fn capacity_ns(&self) -> u64 {
        self.capacity_ns
    }

    /// The pure decision: the TAT after charging `cost` to a cell whose TAT
    /// is `tat`, or why not. Never writes anything. `retry_after_ns` is exact:
    /// the same charge is admitted at `now + retry_after_ns` (if nothing else
    /// charges meanwhile) and refused one nanosecond earlier.
    #[inline]
    pub fn decide(&self, tat: u64, cost: u32, now: u64) -> Result<u64, Refused> {
        if cost > self.burst {
            return Err(Refused::cost_exceeds(cost, self.burst));
        }
        // u128: cost * T <= burst * T <= MAX_CAPACITY_NS, so nothing overflows.
        let new_tat = u128::from(tat.max(now)) + u128::from(cost) * u128::from(self.interval_ns);
        let limit = u128::from(now) + u128::from(self.capacity_ns);
        if new_tat <= limit {
            // Only past the year 2554 would the TAT not fit; refuse (fail closed).
            u64::try_from(new_tat).map_err(|_| Refused::exhausted(u64::MAX))
        } else {
            Err(Refused::exhausted(
                u64::try_from(new_tat - limit).unwrap_or(u64::MAX),
            ))
        }
    }

    /// Units a cell with TAT `tat` could admit at `now` (fractional: a
    /// partly refilled unit counts as its fraction).
    #[inline]
    pub fn remaining_at(&self, tat: u64, now: u64) -> f64 {
        let used = tat.saturating_sub(now);
        let free = self.capacity_ns.saturating_sub(used);
        free as f64 / self.interval_ns as f64
    }
}

/// Why a charge was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalKind {
    /// The cell is (too) full now; it will have room after `retry_after_ns`.
    Exhausted,
    /// The cost is larger than the burst: no wait ever admits it.
    CostExceedsCapacity {
        /// The cost asked for.
        cost: u32,
        /// The quota's burst.
        burst: u32,
    },
}

/// A refused charge. A value, not an error: the pipeline turns it into a
/// denial with a retry hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Refused {
    /// Nanoseconds until the same charge would be admitted, assuming no other
    /// charge meanwhile; `u64::MAX` when it never will be.
    pub retry_after_ns: u64,
    /// Why.
    pub kind: RefusalKind,
}

impl Refused {
    fn exhausted(retry_after_ns: u64) -> Self {
        Refused {
            retry_after_ns,
            kind: RefusalKind::Exhausted,
        }
    }

    #[cold]
    fn cost_exceeds(cost: u32, burst: u32) -> Self {
        Refused {
            retry_after_ns: u64::MAX,
            kind: RefusalKind::CostExceedsCapacity { cost, burst },
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            RefusalKind::Exhausted => write!(
                f,
                "quota exhausted, retry in {}",
                DisplayNs(self.retry_after_ns)
            ),
            RefusalKind::CostExceedsCapacity { cost, burst } => write!(
                f,
                "a cost of {cost} exceeds the quota's burst of {burst} and can never be admitted"
            ),
        }
    }
}

/// Nanoseconds for humans: `250ns`, `1.5µs`, `12.5ms`, `3s`.
struct DisplayNs(u64);

impl fmt::Display for DisplayNs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0 as f64;
        match self.0 {
            0..=999 => write!(f, "{}ns", self.0),
            1_000..=999_999 => write!(f, "{}µs", round3(ns / 1e3)),
            1_000_000..=999_999_999 => write!(f, "{}ms", round3(ns / 1e6)),
            _ => write!(f, "{}s", round3(ns / 1e9)),
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// What an admitted charge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Charged {
    /// The cell's TAT right after this charge (diagnostics).
    pub tat_ns: u64,
}

/// The state of one rate or budget for one key: the GCRA theoretical
/// arrival time, in the caller's clock's nanoseconds. 8 bytes.
#[derive(Debug, Default)]
pub struct Cell {
    tat: AtomicU64,
}

impl Cell {
    /// A full cell.
    pub const fn new() -> Self {
        Cell {
            tat: AtomicU64::new(0),
        }
    }

    /// Charge `cost` units at `now`, or refuse without changing anything.
    /// Lock-free: load, [`GcraParams::decide`], compare-and-swap, retry on
    /// a lost race with the fresh value. A cost of 0 always succeeds (and
    /// writes nothing) unless the clock went back behind a full cell.
    #[inline]
    pub fn try_charge(&self, params: &GcraParams, cost: u32, now: u64) -> Result<Charged, Refused> {
        let mut current = self.tat.load(Ordering::Acquire);
        loop {
            let next = params.decide(current, cost, now)?;
            if next == current {
                return Ok(Charged { tat_ns: next });
            }
            match self
                .tat
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(Charged { tat_ns: next }),
                Err(actual) => current = actual,
            }
        }
    }

    /// Undo a charge of `cost`: move the TAT back by `cost * T`, saturating
    /// at 0 (any TAT at or before `now` already means "full", so the floor
    /// loses nothing). Refund only what this caller charged. Exact as long as
    /// the refund lands before the charge has drained (see `docs/quotas.md`,
    /// "Refunds"); [`charge_all`] refunds within the same call.
    #[inline]
    pub fn refund(&self, params: &GcraParams, cost: u32) {
        let back = u64::from(cost).saturating_mul(params.interval_ns);
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_sub(back))
            });
    }

    /// Units that could be charged at `now` (fractional), between 0 and burst.
    #[inline]
    pub fn remaining(&self, params: &GcraParams, now: u64) -> f64 {
        params.remaining_at(self.tat.load(Ordering::Acquire), now)
    }

    /// Make the cell full again (an operator reset).
    pub fn reset(&self) {
        self.tat.store(0, Ordering::Release);
    }

    /// The raw TAT (diagnostics and snapshots).
    pub fn tat_ns(&self) -> u64 {
        self.tat.load(Ordering::Acquire)
    }
}

/// A refused hierarchical charge: which level refused and when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Refusal {
    /// Index into the `levels` slice of the level that refused.
    pub level_index: usize,
    /// Nanoseconds until that level would admit the charge; `u64::MAX` never.
    pub retry_after_ns: u64,
    /// Why that level refused.
    pub kind: RefusalKind,
}

/// Charge every level or none. `levels` are `(cell, params, cost)`; put the
/// least shared level first (per-action limit, agent, ..., principal), so a
/// refusal by a private level never touches the shared ones. Build every
/// request's list in that one order and pass each cell once.
///
/// 1. A read-only pre-check of every level: if any refuses at these TATs,
///    nothing is written and the refusal names the level with the longest
///    wait (the binding one; the lowest index on ties).
/// 2. Otherwise charge the levels in order; if level `i` refuses now (a
///    concurrent charge took the room since step 1), refund levels `0..i`
///    and report level `i`.
///
/// Guarantees under concurrency: no level ever admits beyond its limit (each
/// charge is its own CAS); a refused call's net effect on every cell is zero
/// once it returns; but between its charge and its refund another call may
/// see the reserved room as used and be refused spuriously. That window is a
/// few atomic operations long and the over-reservation at any instant is at
/// most the summed costs of the calls inside it.
pub fn charge_all(levels: &[(&Cell, &GcraParams, u32)], now: u64) -> Result<(), Refusal> {
    let mut binding: Option<Refusal> = None;
    for (i, (cell, params, cost)) in levels.iter().enumerate() {
        if let Err(r) = params.decide(cell.tat_ns(), *cost, now) {
            if binding.is_none_or(|b| r.retry_after_ns > b.retry_after_ns) {
                binding = Some(Refusal {
                    level_index: i,
                    retry_after_ns: r.retry_after_ns,
                    kind: r.kind,
                });
            }
        }
    }
    if let Some(refusal) = binding {
        return Err(refusal);
    }
    charge_in_order(levels, now)
}

/// Phase 2 of [`charge_all`]: charge in order, refunding on a refusal.
fn charge_in_order(levels: &[(&Cell, &GcraParams, u32)], now: u64) -> Result<(), Refusal> {
    for (i, (cell, params, cost)) in levels.iter().enumerate() {
        if let Err(r) = cell.try_charge(params, *cost, now) {
            for (done, p, c) in levels.iter().take(i) {
                done.refund(p, *c);
            }
            return Err(Refusal {
                level_index: i,
                retry_after_ns: r.retry_after_ns,
                kind: r.kind,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    fn params(interval_ns: u64, burst: u32) -> GcraParams {
        GcraParams::new(interval_ns, burst).unwrap()
    }

    #[test]
    fn params_reject_degenerate_values() {
        assert!(GcraParams::new(0, 1).is_err());
        assert!(GcraParams::new(1, 0).is_err());
        assert!(GcraParams::new(MAX_CAPACITY_NS, 1).is_ok());
        assert!(GcraParams::new(MAX_CAPACITY_NS, 2).is_err());
        assert!(GcraParams::new(u64::MAX, 2).is_err());
        let p = params(10 * MS, 100);
        assert_eq!(p.capacity_ns(), S);
        assert_eq!(p.tolerance_ns(), 99 * 10 * MS);
        assert_eq!((p.interval_ns(), p.burst()), (10 * MS, 100));
    }

    #[test]
    fn a_full_cell_admits_exactly_burst_then_says_when() {
        // 100/s, burst 100, at a Unix-like time.
        let p = params(10 * MS, 100);
        let clock = ManualClock::new(1_700_000_000 * S);
        let c = Cell::new();
        for _ in 0..100 {
            c.try_charge(&p, 1, clock.now_ns()).unwrap();
        }
        let r = c.try_charge(&p, 1, clock.now_ns()).unwrap_err();
        assert_eq!(r, Refused::exhausted(10 * MS));
        clock.advance(10 * MS - 1);
        assert_eq!(
            c.try_charge(&p, 1, clock.now_ns())
                .unwrap_err()
                .retry_after_ns,
            1
        );
        clock.advance(1);
        c.try_charge(&p, 1, clock.now_ns()).unwrap();
        assert!(c.try_charge(&p, 1, clock.now_ns()).is_err());
    }

    #[test]
    fn burst_one_spaces_requests_by_the_interval() {
        let p = params(100 * MS, 1);
        let clock = ManualClock::new(0);
        let c = Cell::new();
        c.try_charge(&p, 1, clock.now_ns()).unwrap();
        assert_eq!(
            c.try_charge(&p, 1, clock.now_ns())
                .unwrap_err()
                .retry_after_ns,
            100 * MS
        );
        clock.advance(40 * MS);
        assert_eq!(
            c.try_charge(&p, 1, clock.now_ns())
                .unwrap_err()
                .retry_after_ns,
            60 * MS
        );
        clock.advance(60 * MS);
        c.try_charge(&p, 1, clock.now_ns()).unwrap();
        // Idle time does not bank more than the burst.
        clock.advance(10 * S);
        c.try_charge(&p, 1, clock.now_ns()).unwrap();
        assert!(c.try_charge(&p, 1, clock.now_ns()).is_err());
    }

    #[test]
    fn sustained_rate_is_exact() {
        // 10/s with burst 5: over 10 s of one attempt per ms, 5 + 100 admitted.
        let p = params(100 * MS, 5);
        let clock = ManualClock::new(42);
        let c = Cell::new();
        let mut admitted = 0;
        for _ in 0..10_000 {
            if c.try_charge(&p, 1, clock.now_ns()).is_ok() {
                admitted += 1;
            }
            clock.advance(MS);
        }
        // Attempts at t = 0..9999 ms: 5 at once, then one per 100 ms from t = 100 to 9900.
        assert_eq!(admitted, 5 + 99);
    }

    #[test]
    fn weighted_costs_and_the_cost_ceiling() {
        // A budget of 10000/h: T = 360 ms, burst 10000.
        let p = params(360 * MS, 10_000);
        let c = Cell::new();
        let now = 5 * S;
        c.try_charge(&p, 9_975, now).unwrap();
        assert_eq!(c.remaining(&p, now), 25.0);
        let r = c.try_charge(&p, 26, now).unwrap_err();
        assert_eq!(r.kind, RefusalKind::Exhausted);
        assert_eq!(r.retry_after_ns, 360 * MS);
        c.try_charge(&p, 25, now).unwrap();
        assert_eq!(c.remaining(&p, now), 0.0);
        // Larger than the burst: refused forever, state untouched.
        let fresh = Cell::new();
        let r = fresh.try_charge(&p, 10_001, now).unwrap_err();
        assert_eq!(r.retry_after_ns, u64::MAX);
        assert_eq!(
            r.kind,
            RefusalKind::CostExceedsCapacity {
                cost: 10_001,
                burst: 10_000
            }
        );
        assert_eq!(
            r.to_string(),
            "a cost of 10001 exceeds the quota's burst of 10000 and can never be admitted"
        );
        assert_eq!(fresh.remaining(&p, now), 10_000.0);
    }

    #[test]
    fn zero_cost_is_always_admitted_and_writes_nothing() {
        let p = params(MS, 1);
        let c = Cell::new();
        c.try_charge(&p, 1, 10).unwrap();
        let before = c.tat_ns();
        c.try_charge(&p, 0, 10).unwrap();
        assert_eq!(c.tat_ns(), before);
    }

    #[test]
    fn refunds_restore_exactly_and_never_overfill() {
        let p = params(10 * MS, 3);
        let c = Cell::new();
        let now = 1_000 * S;
        c.try_charge(&p, 2, now).unwrap();
        assert_eq!(c.remaining(&p, now), 1.0);
        c.refund(&p, 1);
        assert_eq!(c.remaining(&p, now), 2.0);
        c.refund(&p, 1);
        assert_eq!(c.remaining(&p, now), 3.0);
        // Refunding more than was charged saturates at "full".
        c.refund(&p, 3);
        assert_eq!(c.remaining(&p, now), 3.0);
        assert_eq!(c.tat_ns(), now - 30 * MS);
        c.refund(&p, u32::MAX);
        assert_eq!(c.tat_ns(), 0);
        for _ in 0..3 {
            c.try_charge(&p, 1, now).unwrap();
        }
        assert!(c.try_charge(&p, 1, now).is_err());
    }

    #[test]
    fn remaining_refills_fractionally() {
        let p = params(10 * MS, 2);
        let c = Cell::new();
        c.try_charge(&p, 2, 0).unwrap();
        assert_eq!(c.remaining(&p, 0), 0.0);
        assert_eq!(c.remaining(&p, 5 * MS), 0.5);
        assert_eq!(c.remaining(&p, 15 * MS), 1.5);
        assert_eq!(c.remaining(&p, S), 2.0);
        // A clock that went back behind the TAT reports no room, not a negative.
        c.try_charge(&p, 2, S).unwrap();
        assert_eq!(c.remaining(&p, 0), 0.0);
        c.reset();
        assert_eq!(c.remaining(&p, 0), 2.0);
    }

    #[test]
    fn refusal_messages() {
        assert_eq!(
            Refused::exhausted(12_500_000).to_string(),
            "quota exhausted, retry in 12.5ms"
        );
        assert_eq!(
            Refused::exhausted(999).to_string(),
            "quota exhausted, retry in 999ns"
        );
        assert_eq!(
            Refused::exhausted(1_500).to_string(),
            "quota exhausted, retry in 1.5µs"
        );
        assert_eq!(
            Refused::exhausted(3 * S).to_string(),
            "quota exhausted, retry in 3s"
        );
    }

    #[test]
    fn charge_all_is_all_or_nothing() {
        let action = params(MS, 10);
        let agent = params(MS, 5);
        let parent = params(MS, 7);
        let (a, b, c) = (Cell::new(), Cell::new(), Cell::new());
        let now = S;
        let levels = [(&a, &action, 2), (&b, &agent, 2), (&c, &parent, 2)];
        charge_all(&levels, now).unwrap();
        charge_all(&levels, now).unwrap();
        // The agent has 1 left: refused at level 1, nothing charged anywhere.
        let r = charge_all(&levels, now).unwrap_err();
        assert_eq!(r.level_index, 1);
        assert_eq!(r.retry_after_ns, MS);
        assert_eq!(r.kind, RefusalKind::Exhausted);
        assert_eq!(a.remaining(&action, now), 6.0);
        assert_eq!(b.remaining(&agent, now), 1.0);
        assert_eq!(c.remaining(&parent, now), 3.0);
        // The binding level is the one with the longest wait.
        let r = charge_all(&[(&b, &agent, 1), (&c, &parent, 5)], now).unwrap_err();
        assert_eq!((r.level_index, r.retry_after_ns), (1, 2 * MS));
        let r = charge_all(&[(&b, &agent, 3), (&c, &parent, 5)], now).unwrap_err();
        assert_eq!(
            (r.level_index, r.retry_after_ns),
            (0, 2 * MS),
            "ties: lowest index"
        );
        let r = charge_all(&[(&b, &agent, 6), (&c, &parent, 5)], now).unwrap_err();
        assert_eq!(r.level_index, 0);
        assert!(matches!(r.kind, RefusalKind::CostExceedsCapacity { .. }));
        assert_eq!(charge_all(&[], now), Ok(()));
    }

    #[test]
    fn charge_all_refunds_earlier_levels_when_a_later_one_lost_a_race() {
        // The race: the pre-check passed, then the parent filled up before
        // the charge loop reached it. Phase 2 alone reproduces it.
        let child_p = params(MS, 3);
        let parent_p = params(MS, 1);
        let (child, grand, parent) = (Cell::new(), Cell::new(), Cell::new());
        let now = S;
        parent.try_charge(&parent_p, 1, now).unwrap();
        let levels = [
            (&child, &child_p, 2),
            (&grand, &child_p, 1),
            (&parent, &parent_p, 1),
        ];
        let r = charge_in_order(&levels, now).unwrap_err();
        assert_eq!(r.level_index, 2);
        assert_eq!(r.retry_after_ns, MS);
        assert_eq!(child.remaining(&child_p, now), 3.0);
        assert_eq!(grand.remaining(&child_p, now), 3.0);
        assert_eq!(
            child.tat_ns(),
            now,
            "the refund leaves only a full-cell residue"
        );
        assert_eq!(charge_in_order(&levels[..2], now), Ok(()));
        assert_eq!(child.remaining(&child_p, now), 1.0);
    }

    /// The reference: an exact token bucket in credit-nanoseconds, written
    /// plainly in u128. Full at the start; refills one ns of credit per ns;
    /// a unit costs `t` ns of credit; holds at most `cap`.
    struct Bucket {
        level: u128,
        cap: u128,
        t: u128,
        burst: u32,
    }

    impl Bucket {
        fn advance(&mut self, dt: u64) {
            self.level = (self.level + u128::from(dt)).min(self.cap);
        }
        fn charge(&mut self, n: u32) -> Result<(), u64> {
            if n > self.burst {
                return Err(u64::MAX);
            }
            let need = u128::from(n) * self.t;
            if self.level >= need {
                self.level -= need;
                Ok(())
            } else {
                Err(u64::try_from(need - self.level).unwrap())
            }
        }
        fn refund(&mut self, n: u32) {
            self.level = (self.level + u128::from(n) * self.t).min(self.cap);
        }
        fn remaining(&self) -> f64 {
            // Same division as the engine, so the comparison can be exact.
            u64::try_from(self.level).unwrap() as f64 / u64::try_from(self.t).unwrap() as f64
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Advance(u64),
        Charge(u32),
        Refund(u32),
    }

    fn case() -> impl Strategy<Value = (u64, u32, u64, Vec<Op>)> {
        (1u64..=2_000_000_000, 1u32..=40, 0u64..(1 << 62)).prop_flat_map(|(t, burst, start)| {
            let cap = t * u64::from(burst);
            let op = prop_oneof![
                3 => (0..=t * 2).prop_map(Op::Advance),
                1 => (0..=cap * 2).prop_map(Op::Advance),
                5 => (0..=burst + 2).prop_map(Op::Charge),
                1 => (0..=burst).prop_map(Op::Refund),
            ];
            (
                Just(t),
                Just(burst),
                Just(start),
                proptest::collection::vec(op, 1..120),
            )
        })
    }

    proptest! {
        #[test]
        fn gcra_matches_an_exact_token_bucket((t, burst, start, ops) in case()) {
            let p = params(t, burst);
            let cell = Cell::new();
            let mut reference = Bucket {
                level: u128::from(t) * u128::from(burst),
                cap: u128::from(t) * u128::from(burst),
                t: u128::from(t),
                burst,
            };
            let mut now = start;
            for op in ops {
                match op {
                    Op::Advance(dt) => {
                        now += dt;
                        reference.advance(dt);
                    }
                    Op::Charge(n) => {
                        let got = cell.try_charge(&p, n, now).map(|_| ()).map_err(|r| r.retry_after_ns);
                        prop_assert_eq!(got, reference.charge(n));
                    }
                    Op::Refund(n) => {
                        cell.refund(&p, n);
                        reference.refund(n);
                    }
                }
                prop_assert_eq!(cell.remaining(&p, now), reference.remaining());
            }
        }

        #[test]
        fn retry_after_is_exact(t in 1u64..1_000_000_000, burst in 1u32..50, tat in 0u64..(1 << 50), now in 0u64..(1 << 50), cost in 1u32..50) {
            let p = params(t, burst);
            if let Err(r) = p.decide(tat, cost, now) {
                if r.kind == RefusalKind::Exhausted {
                    prop_assert!(r.retry_after_ns > 0);
                    prop_assert!(p.decide(tat, cost, now + r.retry_after_ns).is_ok());
                    prop_assert!(p.decide(tat, cost, now + r.retry_after_ns - 1).is_err());
                } else {
                    prop_assert!(cost > burst);
                }
            }
        }
    }
}
