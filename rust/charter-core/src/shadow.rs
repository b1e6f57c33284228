//! Shadow evaluation: a candidate policy decided next to the live one on
//! every decision and never enforced; where the two disagree on the
//! outcome, the disagreement is counted (by action and both reasons) and,
//! with auditing on, recorded as a `shadow_diff` event.
//!
//! The candidate sees the live engine's agents, principals' runtime
//! overrides and suspensions; it never charges quotas, so a live quota
//! denial counts as the policy's allow when the two are compared.

use crate::policy::{CompiledPolicy, PolicySpec};
use crate::reason::Reason;
use crate::snapshot::Snapshot;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The candidate, compiled against the live chains.
pub(crate) struct Shadow {
    pub(crate) snap: Arc<Snapshot>,
    pub(crate) spec: PolicySpec,
    pub(crate) stats: Arc<ShadowStats>,
}

/// Disagreements by (action name, live reason code, candidate reason code).
type Counts = BTreeMap<(Box<str>, u8, u8), u64>;

/// What the shadow has seen since it was set.
#[derive(Default)]
pub(crate) struct ShadowStats {
    pub(crate) started_ns: u64,
    decisions: AtomicU64,
    skipped: AtomicU64,
    disagreements: AtomicU64,
    counts: Mutex<Counts>,
}

/// A summary of a shadow's findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowReport {
    /// The candidate's policy version.
    pub version: String,
    /// When the shadow was set (Unix ns).
    pub started_ns: u64,
    /// Decisions the candidate also decided.
    pub decisions: u64,
    /// Decisions it could not decide (the kill switch, a record refused,
    /// a principal only the live policy knows the chain of).
    pub skipped: u64,
    /// Decisions where the outcomes differ.
    pub disagreements: u64,
    /// Per (action, live reason, candidate reason): how many.
    pub by: Vec<(String, &'static str, &'static str, u64)>,
}

/// Whether the live policy allowed the request, looking through quota
/// denials (the candidate does not charge quotas).
fn policy_allowed(r: Reason) -> bool {
    matches!(
        r,
        Reason::Granted | Reason::RateLimited | Reason::BudgetExhausted | Reason::ConcurrencyLimit
    )
}

impl ShadowStats {
    pub(crate) fn new(started_ns: u64) -> ShadowStats {
        ShadowStats {
            started_ns,
            ..ShadowStats::default()
        }
    }

    /// Count one comparison (by action name); true if the outcomes differ.
    pub(crate) fn observe(&self, action: Option<&str>, live: Reason, candidate: Reason) -> bool {
        self.decisions.fetch_add(1, Ordering::Relaxed);
        if policy_allowed(live) == (candidate == Reason::Granted) {
            return false;
        }
        self.disagreements.fetch_add(1, Ordering::Relaxed);
        let key = (
            action.unwrap_or("(unknown action)").into(),
            live.code(),
            candidate.code(),
        );
        *self.counts.lock().entry(key).or_insert(0) += 1;
        true
    }

    pub(crate) fn skip(&self) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn report(&self, policy: &CompiledPolicy) -> ShadowReport {
        let by = self
            .counts
            .lock()
            .iter()
            .map(|((a, live, cand), &n)| (a.to_string(), reason_str(*live), reason_str(*cand), n))
            .collect();
        ShadowReport {
            version: policy.version.to_string(),
            started_ns: self.started_ns,
            decisions: self.decisions.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            disagreements: self.disagreements.load(Ordering::Relaxed),
            by,
        }
    }
}

fn reason_str(code: u8) -> &'static str {
    crate::reason::ALL_REASONS
        .get(usize::from(code))
        .map_or("internal_error", |r| r.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_denials_count_as_the_policy_allowing() {
        let s = ShadowStats::new(0);
        assert!(!s.observe(Some("a"), Reason::RateLimited, Reason::Granted));
        assert!(s.observe(Some("a"), Reason::RateLimited, Reason::NoGrant));
        assert!(!s.observe(Some("b"), Reason::NoGrant, Reason::DeniedByRule));
        assert!(s.observe(None, Reason::NoGrant, Reason::Granted));
        assert_eq!(s.disagreements.load(Ordering::Relaxed), 2);
        assert_eq!(s.decisions.load(Ordering::Relaxed), 4);
    }
}
