//! The agent registry's read side: a generational slot map of atomics that
//! checks read without a lock. A handle is `generation << 32 | slot`, so a
//! stale handle never reaches the agent that reuses its slot.
//!
//! Writers (provision, deprovision, sweep) are serialised by the engine's
//! writer lock and publish a slot seqlock-style: bump the generation, write
//! the fields, then mark it active with a release store.

use crate::reason::Reason;
use crate::table::Chunked;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// Slot states (low byte of the state word).
pub mod state {
    /// Never used, or being rewritten.
    pub const FREE: u8 = 0;
    /// Live.
    pub const ACTIVE: u8 = 1;
    /// Deprovisioned.
    pub const REVOKED: u8 = 2;
    /// Deprovisioned because a delegator was.
    pub const DELEGATOR_REVOKED: u8 = 3;
    /// Deprovisioned because its principal was removed.
    pub const PRINCIPAL_REMOVED: u8 = 4;
    /// Expired and swept.
    pub const EXPIRED: u8 = 5;
    /// Suspended (by an operator or a breaker); `resume` makes it active again.
    pub const SUSPENDED: u8 = 6;
}

/// Slots per chunk (2^16) and chunks (2^14): up to 2^30 agents.
const SLOT_CHUNK_BITS: u32 = 16;
const SLOT_MAX_CHUNKS: usize = 1 << 14;

/// Agent expiry meaning "never".
pub const NEVER: u64 = u64::MAX;

/// One agent's hot fields, padded so a slot never straddles two cache lines.
#[derive(Debug, Default)]
#[repr(align(32))]
pub struct Slot {
    /// `generation << 32 | state`.
    state: AtomicU64,
    /// Unix ns after which the agent is expired ([`NEVER`] if not).
    expires_at: AtomicU64,
    /// Delegation chain id (index into the snapshot's rights table).
    chain: AtomicU32,
}

/// Split a handle into (slot, generation).
#[inline(always)]
pub fn split_handle(handle: u64) -> (usize, u32) {
    ((handle & 0xffff_ffff) as usize, (handle >> 32) as u32)
}

/// Build a handle.
#[inline(always)]
pub fn make_handle(slot: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(slot)
}

/// The reason a non-active slot state denies with.
pub fn state_reason(s: u8) -> Reason {
    match s {
        state::REVOKED => Reason::Revoked,
        state::DELEGATOR_REVOKED => Reason::DelegatorRevoked,
        state::PRINCIPAL_REMOVED => Reason::PrincipalRemoved,
        state::EXPIRED => Reason::Expired,
        state::SUSPENDED => Reason::Suspended,
        _ => Reason::UnknownAgent,
    }
}

/// What a reader sees of a live agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Live {
    /// Chain id.
    pub chain: u32,
    /// Expiry (Unix ns) or [`NEVER`].
    pub expires_at: u64,
}

/// The slot map.
#[derive(Debug)]
pub struct Slots {
    slots: Chunked<Slot>,
}

impl Default for Slots {
    fn default() -> Self {
        Slots {
            slots: Chunked::new(SLOT_CHUNK_BITS, SLOT_MAX_CHUNKS),
        }
    }
}

impl Slots {
    /// Most slots there can be.
    pub fn capacity(&self) -> usize {
        self.slots.capacity()
    }

    /// Resolve a handle to a live agent at time `now`, or the reason it is not one.
    #[inline(always)]
    pub fn resolve(&self, handle: u64, now: u64) -> Result<Live, Reason> {
        let (idx, generation) = split_handle(handle);
        let Some(slot) = self.slots.get(idx) else {
            return Err(Reason::UnknownAgent);
        };
        loop {
            let s1 = slot.state.load(Ordering::Acquire);
            if (s1 >> 32) as u32 != generation || generation == 0 {
                return Err(Reason::UnknownAgent);
            }
            let st = (s1 & 0xff) as u8;
            if st != state::ACTIVE {
                return Err(state_reason(st));
            }
            let expires_at = slot.expires_at.load(Ordering::Relaxed);
            let chain = slot.chain.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if slot.state.load(Ordering::Relaxed) == s1 {
                if now >= expires_at {
                    return Err(Reason::Expired);
                }
                return Ok(Live { chain, expires_at });
            }
            // A writer republished the slot while we read it: read again.
        }
    }

    /// The current handle of a slot (its generation), whatever its state.
    pub fn current_handle(&self, idx: u32) -> Option<u64> {
        let s = self.slots.get(idx as usize)?.state.load(Ordering::Acquire);
        let generation = (s >> 32) as u32;
        (generation != 0).then(|| make_handle(idx, generation))
    }

    /// The state byte of a slot.
    pub fn state_of(&self, idx: u32) -> u8 {
        self.slots.get(idx as usize).map_or(state::FREE, |s| {
            (s.state.load(Ordering::Acquire) & 0xff) as u8
        })
    }

    /// Expiry of a slot.
    pub fn expires_at(&self, idx: u32) -> u64 {
        self.slots
            .get(idx as usize)
            .map_or(0, |s| s.expires_at.load(Ordering::Acquire))
    }

    /// Writer: publish a new agent in `idx` with a fresh generation; returns its handle.
    pub fn publish(&self, idx: u32, chain: u32, expires_at: u64) -> Option<u64> {
        let slot = self.slots.get_or_alloc(idx as usize)?;
        let old = slot.state.load(Ordering::Acquire);
        let mut generation = ((old >> 32) as u32).wrapping_add(1);
        if generation == 0 {
            generation = 1;
        }
        let g = u64::from(generation) << 32;
        // Seqlock write: the generation changes before the fields, and the
        // release store of ACTIVE publishes them.
        slot.state
            .swap(g | u64::from(state::FREE), Ordering::Acquire);
        fence(Ordering::Release);
        slot.expires_at.store(expires_at, Ordering::Relaxed);
        slot.chain.store(chain, Ordering::Relaxed);
        slot.state
            .store(g | u64::from(state::ACTIVE), Ordering::Release);
        Some(make_handle(idx, generation))
    }

    /// Writer: change a live slot's expiry (readers see the old or the new value).
    pub fn set_expiry(&self, idx: u32, expires_at: u64) {
        if let Some(slot) = self.slots.get(idx as usize) {
            slot.expires_at.store(expires_at, Ordering::Release);
        }
    }

    /// Writer: move a slot between `from` and `to` states (e.g. active and
    /// suspended) if it is in `from`; returns whether it moved.
    pub fn transition(&self, idx: u32, from: u8, to: u8) -> bool {
        let Some(slot) = self.slots.get(idx as usize) else {
            return false;
        };
        let old = slot.state.load(Ordering::Acquire);
        if (old & 0xff) as u8 != from {
            return false;
        }
        slot.state
            .compare_exchange(
                old,
                (old & !0xff) | u64::from(to),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Writer: move a slot to a terminal state, keeping its generation (a tombstone).
    pub fn retire(&self, idx: u32, to: u8) {
        if let Some(slot) = self.slots.get(idx as usize) {
            let old = slot.state.load(Ordering::Acquire);
            slot.state
                .store((old & !0xff) | u64::from(to), Ordering::Release);
        }
    }

    /// Bytes allocated for slots.
    pub fn allocated_bytes(&self) -> usize {
        self.slots.allocated_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_handles_never_reach_a_reused_slot() {
        let s = Slots::default();
        let h1 = s.publish(3, 7, NEVER).unwrap();
        assert_eq!(
            s.resolve(h1, 0),
            Ok(Live {
                chain: 7,
                expires_at: NEVER
            })
        );
        s.retire(3, state::REVOKED);
        assert_eq!(s.resolve(h1, 0), Err(Reason::Revoked));
        let h2 = s.publish(3, 9, 100).unwrap();
        assert_ne!(h1, h2);
        assert_eq!(s.resolve(h1, 0), Err(Reason::UnknownAgent));
        assert_eq!(s.resolve(h2, 99).map(|l| l.chain), Ok(9));
        assert_eq!(s.resolve(h2, 100), Err(Reason::Expired));
        assert_eq!(s.resolve(make_handle(3, 0), 0), Err(Reason::UnknownAgent));
        assert_eq!(
            s.resolve(make_handle(1 << 31, 1), 0),
            Err(Reason::UnknownAgent)
        );
    }

    #[test]
    fn readers_see_whole_publications_under_concurrent_reuse() {
        use std::sync::Arc;
        let s = Arc::new(Slots::default());
        // chain == expires_at in every publication; a torn read would differ.
        s.publish(0, 1, 1).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (s, stop) = (s.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let h = s.current_handle(0).unwrap();
                    if let Ok(live) = s.resolve(h, 0) {
                        assert_eq!(u64::from(live.chain), live.expires_at);
                        seen += 1;
                    }
                }
                seen
            })
        };
        for i in 2..200_000u32 {
            s.publish(0, i, u64::from(i)).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap();
    }
}
