//! Fleet quota leases (docs/multi-host.md): with leasing on, every charge
//! also takes from the cell's lease; a cell admits at most what it was
//! granted plus one request on credit, at every level of the chain, under
//! real threads, and refused requests leave every lease as it was.
// Helpers outside `#[test]` functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use charter_core::{Action, Engine, ManualClock, PolicySpec, Reason, Subject};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

const START: u64 = 1_700_000_000 * 1_000_000_000;

const POLICY: &str = r#"{
  "actions": ["db:read"],
  "roles": { "reader": { "allow": ["db:read"] } },
  "principals": { "user:r": { "roles": ["reader"], "quota": "user" } },
  "quotas": {
    "agent": { "rate": "1000000/s", "burst": 1000000 },
    "user": { "rate": "1000000/s", "burst": 1000000 }
  },
  "templates": { "bot": { "roles": ["reader"], "quota": "agent" } }
}"#;

fn engine() -> Engine {
    let spec: PolicySpec = serde_json::from_str(POLICY).unwrap();
    let e = Engine::with_clock(spec, Arc::new(ManualClock::new(START))).unwrap();
    e.provision("bot", Some(Subject::Id("user:r")), None, Some("bot-1"))
        .unwrap();
    e
}

fn check(e: &Engine) -> Reason {
    e.check(Subject::Id("bot-1"), Action::Name("db:read"), None)
        .reason
}

fn demand(e: &Engine) -> Vec<(u64, String, i64)> {
    let mut d: Vec<_> = e
        .quota_lease_demand()
        .into_iter()
        .map(|d| (d.handle, d.key, d.units))
        .collect();
    d.sort_by(|a, b| a.1.cmp(&b.1));
    d
}

#[test]
fn a_dry_lease_admits_one_request_on_credit_then_waits_for_a_grant() {
    let e = engine();
    assert_eq!(check(&e), Reason::Granted);
    e.set_quota_leasing(true);
    assert_eq!(check(&e), Reason::Granted, "one request on credit");
    assert_eq!(check(&e), Reason::QuotaUnavailable);
    let d = demand(&e);
    let keys: Vec<&str> = d.iter().map(|x| x.1.as_str()).collect();
    assert_eq!(
        keys,
        ["agent:bot-1:agent:rate", "principal:user:r:user:rate"]
    );
    assert!(d.iter().all(|x| x.2 == -1), "{d:?}");
    // The agent level gets 3 (repaying its 1), the principal level 5.
    assert!(e.quota_lease_grant(d[0].0, &d[0].1, 4));
    assert!(e.quota_lease_grant(d[1].0, &d[1].1, 6));
    assert!(!e.quota_lease_grant(d[0].0, "agent:someone-else:agent:rate", 4));
    for _ in 0..3 {
        assert_eq!(check(&e), Reason::Granted);
    }
    // The agent level is at 0: one more on credit, then it is dry.
    assert_eq!(check(&e), Reason::Granted);
    assert_eq!(check(&e), Reason::QuotaUnavailable);
    // The refused request took nothing from the principal's lease.
    let units: Vec<i64> = demand(&e).iter().map(|x| x.2).collect();
    assert_eq!(units, [-1, 1]);
    // Returning a lease empties it; a debt is kept (and the cell stays registered).
    assert_eq!(e.quota_lease_return(d[1].0, &d[1].1, true), 1);
    assert_eq!(e.quota_lease_return(d[0].0, &d[0].1, true), 0);
    assert_eq!(demand(&e).len(), 1);
    e.set_quota_leasing(false);
    assert_eq!(check(&e), Reason::Granted, "local quotas again");
}

#[test]
fn threads_never_admit_more_than_granted_plus_one_credit() {
    for threads in [2usize, 4, 8] {
        let e = engine();
        e.set_quota_leasing(true);
        assert_eq!(check(&e), Reason::Granted);
        let d = demand(&e);
        let granted = 500u32;
        for (h, k, _) in &d {
            assert!(e.quota_lease_grant(*h, k, granted));
        }
        let admitted = AtomicU64::new(0);
        let barrier = Barrier::new(threads);
        thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    barrier.wait();
                    while check(&e) == Reason::Granted {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        // 1 on credit before the grant repaid 1 of 500: 499 left, plus one more on credit.
        assert_eq!(admitted.load(Ordering::Relaxed), 500, "{threads} threads");
        let units: Vec<i64> = demand(&e).iter().map(|x| x.2).collect();
        assert_eq!(units, [-1, -1]);
    }
}

#[test]
fn lease_handles_round_trip_and_reject_junk() {
    use charter_core::charge::{LeaseHandle, Owner};
    for owner in [Owner::Agent(0), Owner::Agent(u32::MAX), Owner::Principal(7)] {
        for cell in [0u8, 1, 5] {
            let h = LeaseHandle { owner, cell };
            assert_eq!(LeaseHandle::unpack(h.pack()), Some(h));
        }
    }
    assert_eq!(LeaseHandle::unpack(6), None, "no such cell");
    assert_eq!(LeaseHandle::unpack(2 << 40), None, "no such owner kind");
    assert_eq!(LeaseHandle::unpack(u64::MAX), None);
}
