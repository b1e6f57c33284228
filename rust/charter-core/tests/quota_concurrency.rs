//! Stress tests of the quota primitives under real threads: with a frozen
//! clock every admission is accounted for exactly, so any lost update or
//! over-admission shows up as a wrong count.
// Helpers outside `#[test]` functions are test code too.
#![allow(clippy::unwrap_used)]

use charter_core::quota::{charge_all, Breaker, BreakerConfig, Cell, GcraParams, InFlight};
use charter_core::{Clock, ManualClock};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Barrier;
use std::thread;

const THREADS: [usize; 2] = [4, 8];
const ROUNDS: usize = 20;
const NOW: u64 = 1_700_000_000_000_000_000;

/// Run `body(thread_index)` on `n` threads released together; collect results.
fn race<T: Send>(n: usize, body: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let barrier = Barrier::new(n);
    thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (barrier, body) = (&barrier, &body);
                s.spawn(move || {
                    barrier.wait();
                    body(i)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Named `quota` so `cargo test -p charter-core quota` selects these too.
mod quota {
    use super::*;

    #[test]
    fn one_cell_admits_exactly_burst() {
        let clock = ManualClock::new(NOW);
        let p = GcraParams::new(1_000_000, 1_000).unwrap(); // 1000/s, burst 1000
        for n in THREADS {
            for _ in 0..ROUNDS {
                let cell = Cell::new();
                let admitted: u64 = race(n, |_| {
                    let mut ok = 0u64;
                    // With the clock frozen the cell only fills: the first refusal is final.
                    while cell.try_charge(&p, 1, clock.now_ns()).is_ok() {
                        ok += 1;
                    }
                    ok
                })
                .into_iter()
                .sum();
                assert_eq!(admitted, 1_000, "{n} threads");
                assert_eq!(cell.remaining(&p, clock.now_ns()), 0.0);
            }
        }
    }

    #[test]
    fn weighted_charges_and_refunds_lose_nothing() {
        let clock = ManualClock::new(NOW);
        let p = GcraParams::new(360_000_000, 10_000).unwrap(); // 10000/h
        for n in THREADS {
            for _ in 0..ROUNDS {
                let cell = Cell::new();
                let per_thread = race(n, |i| {
                    let cost = 3 + 2 * i as u32; // 3, 5, 7, ...
                    let (mut charged, mut refunded) = (0u64, 0u64);
                    let mut k = 0u32;
                    while cell.try_charge(&p, cost, clock.now_ns()).is_ok() {
                        charged += u64::from(cost);
                        k += 1;
                        if k % 3 == 0 {
                            cell.refund(&p, cost);
                            refunded += u64::from(cost);
                        }
                    }
                    (charged - refunded, cost)
                });
                let net: u64 = per_thread.iter().map(|(net, _)| net).sum();
                let remaining = cell.remaining(&p, clock.now_ns());
                assert!(net <= 10_000, "{n} threads: over-admitted {net}");
                assert_eq!(
                    remaining,
                    (10_000 - net) as f64,
                    "{n} threads: a lost update"
                );
                // The last event of all was some thread's refusal (a refund always
                // follows a charge and is followed by another attempt), so what is
                // left is less than that thread's cost.
                let max_cost = per_thread.iter().map(|(_, c)| *c).max().unwrap();
                assert!(
                    remaining < f64::from(max_cost),
                    "{n} threads: stopped with {remaining} left"
                );
            }
        }
    }

    #[test]
    fn in_flight_never_exceeds_its_cap() {
        const CAP: u32 = 3;
        for n in THREADS {
            let cap = InFlight::new();
            let holders = AtomicU32::new(0);
            let high_water = AtomicU32::new(0);
            let acquired = AtomicU64::new(0);
            race(n, |_| {
                for _ in 0..20_000 {
                    if cap.try_acquire(CAP) {
                        let now_held = holders.fetch_add(1, Ordering::SeqCst) + 1;
                        high_water.fetch_max(now_held, Ordering::SeqCst);
                        acquired.fetch_add(1, Ordering::Relaxed);
                        for _ in 0..20 {
                            std::hint::spin_loop();
                        }
                        holders.fetch_sub(1, Ordering::SeqCst);
                        assert!(cap.release());
                    } else {
                        thread::yield_now();
                    }
                }
            });
            let hwm = high_water.load(Ordering::SeqCst);
            assert!(
                (1..=CAP).contains(&hwm),
                "{n} threads: high-water mark {hwm}"
            );
            assert!(acquired.load(Ordering::Relaxed) > 0);
            assert_eq!(cap.current(), 0, "{n} threads: a slot leaked");
            assert!(!cap.release(), "never underflows");
            assert_eq!(cap.current(), 0);
        }
    }

    /// Threads with private child cells under shared middle cells (one per
    /// pair of threads) under one root. `shared_first` charges the root first,
    /// so refusals by the small children refund the shared levels constantly.
    fn hierarchy(n: usize, shared_first: bool) {
        const CHILD: u32 = 60;
        const MID: u32 = 100;
        const ROOT: u32 = 170;
        let clock = ManualClock::new(NOW);
        let child_p = GcraParams::new(1_000, CHILD).unwrap();
        let mid_p = GcraParams::new(1_000, MID).unwrap();
        let root_p = GcraParams::new(1_000, ROOT).unwrap();
        let children: Vec<Cell> = (0..n).map(|_| Cell::new()).collect();
        let mids: Vec<Cell> = (0..n.div_ceil(2)).map(|_| Cell::new()).collect();
        let root = Cell::new();
        let levels_of = |i: usize| {
            let own = [
                (&children[i], &child_p, 1),
                (&mids[i / 2], &mid_p, 1),
                (&root, &root_p, 1),
            ];
            if shared_first {
                [own[2], own[1], own[0]]
            } else {
                own
            }
        };

        let admitted = race(n, |i| {
            let levels = levels_of(i);
            let mut ok = 0u32;
            // More attempts than any level holds: spurious refusals (a
            // neighbour's transient reservation) are retried by later attempts.
            for _ in 0..400 {
                if charge_all(&levels, clock.now_ns()).is_ok() {
                    ok += 1;
                }
            }
            ok
        });

        let now = clock.now_ns();
        let total: u32 = admitted.iter().sum();
        assert!(total <= ROOT, "{n} threads: root over-admitted {total}");
        for (i, (child, ok)) in children.iter().zip(&admitted).enumerate() {
            assert!(*ok <= CHILD);
            assert_eq!(
                child.remaining(&child_p, now),
                f64::from(CHILD - ok),
                "child {i}"
            );
        }
        for (m, mid) in mids.iter().enumerate() {
            let under: u32 = admitted.iter().skip(2 * m).take(2).sum();
            assert!(under <= MID);
            assert_eq!(
                mid.remaining(&mid_p, now),
                f64::from(MID - under),
                "mid {m}"
            );
        }
        assert_eq!(
            root.remaining(&root_p, now),
            f64::from(ROOT - total),
            "{n} threads: refunds left a residue on the root"
        );

        // Top up sequentially: what is left is exactly what the limits allow.
        let mut topped = total;
        for i in 0..n {
            while charge_all(&levels_of(i), now).is_ok() {
                topped += 1;
            }
        }
        let pairs: u32 = (0..mids.len())
            .map(|m| {
                let kids = if 2 * m + 1 < n { 2 } else { 1 };
                (kids * CHILD).min(MID)
            })
            .sum();
        assert_eq!(topped, pairs.min(ROOT), "{n} threads");
        assert_eq!(root.remaining(&root_p, now), f64::from(ROOT - topped));
    }

    #[test]
    fn hierarchical_charges_are_all_or_nothing_private_level_first() {
        for n in THREADS {
            for _ in 0..ROUNDS {
                hierarchy(n, false);
            }
        }
    }

    #[test]
    fn hierarchical_charges_are_all_or_nothing_shared_level_first() {
        for n in THREADS {
            for _ in 0..ROUNDS {
                hierarchy(n, true);
            }
        }
    }

    #[test]
    fn a_breaker_trips_once_however_many_threads_record() {
        let clock = ManualClock::new(NOW);
        let config = BreakerConfig::new(100, 50, 10_000_000_000).unwrap();
        for n in THREADS {
            for _ in 0..ROUNDS {
                let breaker = Breaker::new();
                let trips: usize = race(n, |i| {
                    (0..200)
                        .filter(|_| {
                            if i % 2 == 0 {
                                breaker.record_quota_denial(&config, clock.now_ns())
                            } else {
                                breaker.record_policy_denial(&config, clock.now_ns())
                            }
                        })
                        .count()
                })
                .into_iter()
                .sum();
                // Each kind sees 100 * n >= its threshold denials: one trip each.
                assert_eq!(trips, 2, "{n} threads");
            }
        }
    }
}
