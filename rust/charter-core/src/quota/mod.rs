//! Quota primitives: lock-free counters an agent's requests are charged
//! against before they are allowed (rates, budgets, concurrency caps) and a
//! circuit breaker that counts denials. No policy wiring here: the registry
//! owns one set of these per agent and the decision pipeline calls them.
//!
//! - [`Cell`] + [`GcraParams`]: one rate or budget, as a GCRA ("generic cell
//!   rate algorithm") theoretical arrival time in one `AtomicU64` (8 bytes).
//!   Parameters are shared per quota, state is per agent.
//! - [`charge_all`]: all-or-nothing charging of a hierarchy of cells
//!   (per-action limit, agent, delegator, principal).
//! - [`InFlight`]: a concurrency cap in one `AtomicU32` (4 bytes).
//! - [`Breaker`] + [`BreakerConfig`]: denial counting over a two-bucket
//!   sliding window in two `AtomicU64`s (16 bytes).
//! - [`Rate`], [`parse_duration`], [`parse_cost`]: the policy's spellings.
//!
//! Every update is a load, a pure decision and a compare-and-swap retry:
//! no locks, no allocation, no clock reads (callers pass `now`, in the
//! nanoseconds of their [`crate::Clock`]). See `docs/quotas.md`.

mod breaker;
mod gcra;
mod spec;

pub use breaker::{Breaker, BreakerConfig, TripCause};
pub use gcra::{
    charge_all, Cell, Charged, GcraParams, Refusal, RefusalKind, Refused, MAX_CAPACITY_NS,
};
pub use spec::{parse_cost, parse_duration, Rate};

use std::sync::atomic::{AtomicU32, Ordering};

/// A concurrency cap: how many requests of one agent are being served at
/// once. Acquire before the work, release after it, exactly once each.
#[derive(Debug, Default)]
pub struct InFlight {
    held: AtomicU32,
}

impl InFlight {
    /// A cap with nothing held.
    pub const fn new() -> Self {
        InFlight {
            held: AtomicU32::new(0),
        }
    }

    /// Take one slot if fewer than `max` are held; `false` (and no change)
    /// otherwise. `max = 0` refuses everything.
    #[inline]
    pub fn try_acquire(&self, max: u32) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Give one slot back. Saturating: releasing with nothing held changes
    /// nothing and returns `false` (a caller bug, but never an underflow
    /// that would disable the cap).
    #[inline]
    pub fn release(&self) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    /// How many slots are held now.
    #[inline]
    pub fn current(&self) -> u32 {
        self.held.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_agent_state_is_small() {
        assert_eq!(std::mem::size_of::<Cell>(), 8);
        assert_eq!(std::mem::size_of::<InFlight>(), 4);
        assert_eq!(std::mem::size_of::<Breaker>(), 16);
    }

    #[test]
    fn in_flight_caps_and_never_underflows() {
        let f = InFlight::new();
        assert!(f.try_acquire(2));
        assert!(f.try_acquire(2));
        assert!(!f.try_acquire(2));
        assert_eq!(f.current(), 2);
        assert!(f.try_acquire(3), "a larger cap admits one more");
        assert!(f.release());
        assert!(f.release());
        assert!(f.release());
        assert!(!f.release(), "nothing held");
        assert_eq!(f.current(), 0);
        assert!(f.try_acquire(1));
        assert!(!f.try_acquire(1));
    }

    #[test]
    fn in_flight_zero_cap_refuses_everything() {
        let f = InFlight::new();
        assert!(!f.try_acquire(0));
        assert_eq!(f.current(), 0);
    }
}
