//! The circuit breaker: counts an agent's denials over a sliding window and
//! says, once, when they cross a threshold, so the registry can suspend the
//! agent. Lock-free: one packed `AtomicU64` per kind of denial.
//!
//! The window is two buckets of `window` length aligned to the clock's epoch
//! (`bucket = now / window`). The count over the last `window` is estimated
//! as `current + previous * (1 - elapsed_in_current / window)`, the usual
//! two-bucket sliding window: exact for steady rates, and a burst straddling
//! a bucket edge is still seen (unlike a fixed window, which forgets it).
//! The breaker trips when the estimate, including the denial being
//! recorded, reaches the threshold, and at most once per bucket: the one
//! call that trips returns `true`, every other call in that bucket `false`.
//! While denials keep coming above the threshold it trips again once in each
//! following bucket.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};

/// Which kind of denial tripped a breaker: the suspension's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TripCause {
    /// Too many requests refused by a quota.
    QuotaDenials,
    /// Too many requests refused by the policy.
    PolicyDenials,
}

impl TripCause {
    /// The policy's name for the trigger (`quota_denials`, `policy_denials`).
    pub fn as_str(self) -> &'static str {
        match self {
            TripCause::QuotaDenials => "quota_denials",
            TripCause::PolicyDenials => "policy_denials",
        }
    }

    /// A suspension message: `"100 quota denials within 10s"`.
    pub fn describe(self, config: &BreakerConfig) -> String {
        let what = match self {
            TripCause::QuotaDenials => "quota denials",
            TripCause::PolicyDenials => "policy denials",
        };
        let w = config.window_ns;
        let window = if w % 1_000_000_000 == 0 {
            format!("{}s", w / 1_000_000_000)
        } else {
            format!("{}ms", w as f64 / 1e6)
        };
        format!("{} {what} within {window}", config.threshold(self))
    }
}

/// Thresholds and window of a breaker; shared by every agent of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BreakerConfig {
    quota_denials: u32,
    policy_denials: u32,
    window_ns: u64,
}

impl BreakerConfig {
    /// Largest threshold (the counts are 16-bit in the packed state).
    pub const MAX_THRESHOLD: u32 = 65_535;
    /// Shortest window: 1 ms.
    pub const MIN_WINDOW_NS: u64 = 1_000_000;

    /// A breaker that trips at `quota_denials` quota denials or
    /// `policy_denials` policy denials within `window_ns`; a threshold of 0
    /// turns that trigger off.
    pub fn new(quota_denials: u32, policy_denials: u32, window_ns: u64) -> Result<Self> {
        let max = Self::MAX_THRESHOLD;
        if quota_denials > max || policy_denials > max {
            return Err(Error::InvalidArgument(format!(
                "a breaker threshold must be at most {max}"
            )));
        }
        if window_ns < Self::MIN_WINDOW_NS {
            return Err(Error::InvalidArgument(
                "a breaker window must be at least 1ms".into(),
            ));
        }
        Ok(BreakerConfig {
            quota_denials,
            policy_denials,
            window_ns,
        })
    }

    /// The threshold of one trigger (0 = off).
    pub fn threshold(&self, cause: TripCause) -> u32 {
        match cause {
            TripCause::QuotaDenials => self.quota_denials,
            TripCause::PolicyDenials => self.policy_denials,
        }
    }

    /// The window length in nanoseconds.
    pub fn window_ns(&self) -> u64 {
        self.window_ns
    }
}

// Packed state of one trigger: | bucket index mod 2^31 | tripped | previous | current |
//                               63..33                  32        31..16     15..0
const COUNT_MASK: u64 = 0xFFFF;
const TRIPPED: u64 = 1 << 32;
const INDEX_SHIFT: u32 = 33;
const INDEX_MASK: u64 = (1 << 31) - 1;
/// How far back (in buckets) a clock step is treated as a step, not as a gap.
const BACK_STEPS: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    index: u64,
    tripped: bool,
    previous: u64,
    current: u64,
}

impl Window {
    fn unpack(w: u64) -> Self {
        Window {
            index: w >> INDEX_SHIFT,
            tripped: w & TRIPPED != 0,
            previous: (w >> 16) & COUNT_MASK,
            current: w & COUNT_MASK,
        }
    }

    fn pack(self) -> u64 {
        (self.index & INDEX_MASK) << INDEX_SHIFT
            | if self.tripped { TRIPPED } else { 0 }
            | (self.previous & COUNT_MASK) << 16
            | (self.current & COUNT_MASK)
    }

    /// This state moved to `now`'s bucket, and the nanoseconds elapsed in it.
    fn at(self, window_ns: u64, now: u64) -> (Window, u64) {
        let index = (now / window_ns) & INDEX_MASK;
        let elapsed = now % window_ns;
        let empty = Window {
            index,
            tripped: false,
            previous: 0,
            current: 0,
        };
        if self.previous == 0 && self.current == 0 {
            // Nothing counted (a fresh breaker): the stored index means nothing.
            return (empty, elapsed);
        }
        match index.wrapping_sub(self.index) & INDEX_MASK {
            0 => (self, elapsed),
            1 => (
                Window {
                    index,
                    tripped: false,
                    previous: self.current,
                    current: 0,
                },
                elapsed,
            ),
            // The clock went back (by at most 2^20 buckets): stay in the
            // stored bucket and weigh the previous one fully (fail closed).
            d if d > INDEX_MASK - BACK_STEPS => (self, 0),
            // Two or more buckets later: everything before has expired. (An
            // idle gap within a few buckets of a multiple of 2^31 buckets,
            // 24 days of 1ms buckets or 680 years of 10s ones, would alias
            // and count the old denials once more; harmless.)
            _ => (empty, elapsed),
        }
    }

    /// The sliding estimate times the window length (exact integers).
    fn scaled_estimate(self, window_ns: u64, elapsed: u64) -> u128 {
        u128::from(self.current) * u128::from(window_ns)
            + u128::from(self.previous) * u128::from(window_ns - elapsed)
    }
}

/// One agent's breaker state: 16 bytes, no configuration (pass the
/// template's [`BreakerConfig`] to each call).
#[derive(Debug, Default)]
pub struct Breaker {
    quota: AtomicU64,
    policy: AtomicU64,
}

impl Breaker {
    /// A breaker with nothing counted.
    pub const fn new() -> Self {
        Breaker {
            quota: AtomicU64::new(0),
            policy: AtomicU64::new(0),
        }
    }

    fn word(&self, cause: TripCause) -> &AtomicU64 {
        match cause {
            TripCause::QuotaDenials => &self.quota,
            TripCause::PolicyDenials => &self.policy,
        }
    }

    /// Count one denial of kind `cause` at `now`; `true` for exactly the one
    /// call that trips the breaker in the current bucket (see the module
    /// doc). A trigger whose threshold is 0 never trips and writes nothing.
    pub fn record(&self, config: &BreakerConfig, cause: TripCause, now: u64) -> bool {
        let threshold = config.threshold(cause);
        if threshold == 0 {
            return false;
        }
        let w = config.window_ns;
        let limit = u128::from(threshold) * u128::from(w);
        let word = self.word(cause);
        let mut current = word.load(Ordering::Acquire);
        loop {
            let (mut state, elapsed) = Window::unpack(current).at(w, now);
            state.current = (state.current + 1).min(COUNT_MASK);
            let trips = !state.tripped && state.scaled_estimate(w, elapsed) >= limit;
            state.tripped |= trips;
            match word.compare_exchange_weak(
                current,
                state.pack(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return trips,
                Err(actual) => current = actual,
            }
        }
    }

    /// [`Breaker::record`] for a quota denial.
    #[inline]
    pub fn record_quota_denial(&self, config: &BreakerConfig, now: u64) -> bool {
        self.record(config, TripCause::QuotaDenials, now)
    }

    /// [`Breaker::record`] for a policy denial.
    #[inline]
    pub fn record_policy_denial(&self, config: &BreakerConfig, now: u64) -> bool {
        self.record(config, TripCause::PolicyDenials, now)
    }

    /// The sliding estimate of `cause` denials over the last window at `now`
    /// (diagnostics; what the next [`Breaker::record`] compares, minus one).
    pub fn recent(&self, config: &BreakerConfig, cause: TripCause, now: u64) -> f64 {
        let w = config.window_ns;
        let (state, elapsed) = Window::unpack(self.word(cause).load(Ordering::Acquire)).at(w, now);
        state.scaled_estimate(w, elapsed) as f64 / w as f64
    }

    /// Forget every count (an agent reinstated after a suspension).
    pub fn reset(&self) {
        self.quota.store(0, Ordering::Release);
        self.policy.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    const S: u64 = 1_000_000_000;
    const T0: u64 = 1_700_000_000 * S; // a bucket edge for 1s and 10s windows

    fn config(q: u32, p: u32, window_ns: u64) -> BreakerConfig {
        BreakerConfig::new(q, p, window_ns).unwrap()
    }

    #[test]
    fn packing_round_trips() {
        let w = Window {
            index: INDEX_MASK,
            tripped: true,
            previous: 0xFFFF,
            current: 0x1234,
        };
        assert_eq!(Window::unpack(w.pack()), w);
        assert_eq!(
            Window::unpack(0),
            Window {
                index: 0,
                tripped: false,
                previous: 0,
                current: 0
            }
        );
    }

    #[test]
    fn trips_exactly_once_at_the_threshold_within_a_bucket() {
        let c = config(3, 0, 10 * S);
        let b = Breaker::new();
        assert!(!b.record_quota_denial(&c, T0));
        assert!(!b.record_quota_denial(&c, T0 + S));
        assert!(b.record_quota_denial(&c, T0 + 2 * S), "the third trips");
        for i in 0..100 {
            assert!(
                !b.record_quota_denial(&c, T0 + 3 * S + i),
                "only once per bucket"
            );
        }
        assert_eq!(
            b.recent(&c, TripCause::QuotaDenials, T0 + 3 * S + 99),
            103.0
        );
        // Policy denials are off (threshold 0) and counted separately.
        for _ in 0..10 {
            assert!(!b.record_policy_denial(&c, T0));
        }
        assert_eq!(b.recent(&c, TripCause::PolicyDenials, T0), 0.0);
    }

    #[test]
    fn the_previous_bucket_counts_with_a_decaying_weight() {
        let c = config(0, 10, 10 * S);
        let b = Breaker::new();
        // 8 denials late in one bucket.
        for _ in 0..8 {
            assert!(!b.record_policy_denial(&c, T0 + 9 * S));
        }
        // Early in the next bucket they still weigh 0.8 * 8 = 6.4 at +2s:
        // 6.4 + 3 = 9.4 < 10, and the fourth makes 10.4.
        let t = T0 + 12 * S;
        for _ in 0..3 {
            assert!(!b.record_policy_denial(&c, t));
        }
        assert!((b.recent(&c, TripCause::PolicyDenials, t) - 9.4).abs() < 1e-9);
        assert!(b.record_policy_denial(&c, t));
        assert!(!b.record_policy_denial(&c, t));
        // The next bucket starts from 5 * 0.9 = 4.5 at +1s and may trip once again.
        let t = T0 + 21 * S;
        for _ in 0..5 {
            assert!(!b.record_policy_denial(&c, t));
        }
        assert!(b.record_policy_denial(&c, t), "4.5 + 6 >= 10");
        assert!(!b.record_policy_denial(&c, t));
    }

    #[test]
    fn a_fixed_window_edge_does_not_hide_a_burst() {
        let c = config(10, 0, 10 * S);
        let b = Breaker::new();
        for _ in 0..9 {
            assert!(!b.record_quota_denial(&c, T0 + 10 * S - 1));
        }
        // Just across the edge the nine still count almost fully.
        assert!(b.record_quota_denial(&c, T0 + 10 * S));
    }

    #[test]
    fn old_counts_expire_and_the_clock_going_back_is_safe() {
        let c = config(2, 0, S);
        let b = Breaker::new();
        assert!(!b.record_quota_denial(&c, T0));
        // Two buckets later the first denial has expired.
        assert!(!b.record_quota_denial(&c, T0 + 2 * S));
        assert_eq!(b.recent(&c, TripCause::QuotaDenials, T0 + 2 * S), 1.0);
        // A clock stepped back keeps the counts (and weighs the previous fully).
        assert!(b.record_quota_denial(&c, T0 - 5 * S));
        assert!(!b.record_quota_denial(&c, T0 - 5 * S));
        b.reset();
        assert_eq!(b.recent(&c, TripCause::QuotaDenials, T0 + 2 * S), 0.0);
        assert!(!b.record_quota_denial(&c, T0 + 2 * S));
        assert!(b.record_quota_denial(&c, T0 + 2 * S));
    }

    #[test]
    fn any_start_time_and_long_idle_gaps_behave() {
        let ms = 1_000_000;
        let c = config(2, 0, ms);
        // Bucket indexes on both halves of the 31-bit ring.
        for start in [0, ms, T0, (1 << 30) * ms + 5, (3 << 30) * ms, u64::MAX / 2] {
            let b = Breaker::new();
            assert!(!b.record_quota_denial(&c, start), "{start}");
            assert!(b.record_quota_denial(&c, start), "{start}");
            // Idle for 13 days (more than 2^30 buckets of 1ms): all expired.
            let later = start + 13 * 86_400 * S;
            assert_eq!(b.recent(&c, TripCause::QuotaDenials, later), 0.0);
            assert!(!b.record_quota_denial(&c, later), "{start}");
            assert!(b.record_quota_denial(&c, later + 1), "{start}");
        }
    }

    #[test]
    fn counts_saturate() {
        let c = config(BreakerConfig::MAX_THRESHOLD, 0, S);
        let b = Breaker::new();
        let mut trips = 0;
        for _ in 0..70_000 {
            trips += usize::from(b.record_quota_denial(&c, T0));
        }
        assert_eq!(trips, 1);
        assert_eq!(b.recent(&c, TripCause::QuotaDenials, T0), 65_535.0);
    }

    #[test]
    fn config_limits_and_messages() {
        assert!(BreakerConfig::new(65_536, 0, S).is_err());
        assert!(BreakerConfig::new(0, 65_536, S).is_err());
        assert!(BreakerConfig::new(1, 1, 999_999).is_err());
        let c = config(100, 50, 10 * S);
        assert_eq!(c.threshold(TripCause::QuotaDenials), 100);
        assert_eq!(c.threshold(TripCause::PolicyDenials), 50);
        assert_eq!(
            TripCause::QuotaDenials.describe(&c),
            "100 quota denials within 10s"
        );
        assert_eq!(
            TripCause::PolicyDenials.describe(&config(0, 5, 1_500_000)),
            "5 policy denials within 1.5ms"
        );
        assert_eq!(TripCause::PolicyDenials.as_str(), "policy_denials");
    }

    proptest! {
        /// Against a plain reference: a count per bucket in a map, the
        /// two-bucket estimate in u128, one trip per bucket.
        #[test]
        fn matches_a_reference_two_bucket_window(
            threshold in 1u32..20,
            window_ns in 1_000_000u64..20_000_000_000,
            start in 0u64..(1 << 62),
            steps in proptest::collection::vec((0u64..30_000_000_000, 0usize..4), 1..200),
        ) {
            let c = config(threshold, 0, window_ns);
            let b = Breaker::new();
            let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
            let mut tripped: BTreeSet<u64> = BTreeSet::new();
            let mut now = start;
            for (dt, records) in steps {
                now += dt;
                let bucket = now / window_ns;
                for _ in 0..records {
                    *counts.entry(bucket).or_default() += 1;
                    let current = counts.get(&bucket).copied().unwrap_or(0);
                    let previous = bucket.checked_sub(1).and_then(|p| counts.get(&p)).copied().unwrap_or(0);
                    let scaled = u128::from(current) * u128::from(window_ns)
                        + u128::from(previous) * u128::from(window_ns - now % window_ns);
                    let want = scaled >= u128::from(threshold) * u128::from(window_ns)
                        && tripped.insert(bucket);
                    prop_assert_eq!(b.record_quota_denial(&c, now), want);
                }
                let current = counts.get(&bucket).copied().unwrap_or(0);
                let previous = bucket.checked_sub(1).and_then(|p| counts.get(&p)).copied().unwrap_or(0);
                let want = (current as f64 * window_ns as f64
                    + previous as f64 * (window_ns - now % window_ns) as f64) / window_ns as f64;
                let got = b.recent(&c, TripCause::QuotaDenials, now);
                prop_assert!((got - want).abs() < 1e-6, "{} vs {}", got, want);
            }
        }
    }
}
