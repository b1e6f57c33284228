//! The engine's two bounded tables: pending approvals by decision id, and
//! issued grants by the SHA-256 of their token.

use super::{
    decision_id, refuse, ApprovalError, Binding, DecisionKey, IssuedGrant, Pending, Refusal,
    GRANT_CAPACITY, GRANT_MEMORY_NS, PENDING_CAPACITY, PENDING_MEMORY_NS, PENDING_TTL_NS,
    TOKEN_PREFIX,
};
use crate::reason::Reason;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::hash::BuildHasher;

/// A grant as the engine keeps it (its token only as a hash).
#[derive(Debug, Clone)]
struct Grant {
    binding: Binding,
    decision: DecisionKey,
    approver: Box<str>,
    expires_ns: u64,
    /// When it was used up, if it was.
    used_at: Option<u64>,
}

/// The SHA-256 of a token: how grants are found.
pub type GrantKey = [u8; 32];

fn grant_key(token: &str) -> GrantKey {
    Sha256::digest(token.as_bytes()).into()
}

/// The engine's pending approvals and grants.
#[derive(Debug)]
pub struct Approvals {
    /// The tag of engine-local decision ids (when auditing is off).
    stream: u32,
    limits: (usize, usize),
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next_seq: u64,
    pending: HashMap<DecisionKey, Pending>,
    pending_order: VecDeque<DecisionKey>,
    grants: HashMap<GrantKey, Grant>,
    grant_order: VecDeque<GrantKey>,
}

impl Default for Approvals {
    fn default() -> Self {
        Approvals::with_limits(PENDING_CAPACITY, GRANT_CAPACITY)
    }
}

impl Approvals {
    /// Tables of at most `pending` pending approvals and `grants` grants.
    pub fn with_limits(pending: usize, grants: usize) -> Approvals {
        let tag = std::collections::hash_map::RandomState::new()
            .hash_one((std::time::SystemTime::now(), std::process::id()));
        Approvals {
            stream: (tag & 0xffff_ffff) as u32,
            limits: (pending.max(1), grants.max(1)),
            state: Mutex::new(State::default()),
        }
    }

    /// Remember `p` under `key` (the decision's audit id), or under a fresh
    /// engine-local id; returns the id.
    pub fn register(&self, key: Option<DecisionKey>, mut p: Pending, now: u64) -> DecisionKey {
        p.created_ns = now;
        p.expires_ns = now.saturating_add(PENDING_TTL_NS);
        let mut st = self.state.lock();
        let key = match key {
            Some(k) => k,
            None => loop {
                st.next_seq += 1;
                let k = (self.stream, st.next_seq);
                if !st.pending.contains_key(&k) {
                    break k;
                }
            },
        };
        // Forget what expired long ago, then make room: oldest first.
        while let Some(front) = st.pending_order.front().copied() {
            let stale = st
                .pending
                .get(&front)
                .is_none_or(|q| q.expires_ns.saturating_add(PENDING_MEMORY_NS) <= now);
            if !stale && st.pending.len() < self.limits.0 {
                break;
            }
            st.pending_order.pop_front();
            st.pending.remove(&front);
        }
        if st.pending.insert(key, p).is_none() {
            st.pending_order.push_back(key);
        }
        key
    }

    /// A copy of the pending approval `key`, if it can still be approved.
    pub fn pending(&self, key: DecisionKey, now: u64) -> Result<Pending, ApprovalError> {
        let st = self.state.lock();
        let id = decision_id(key);
        match st.pending.get(&key) {
            None => refuse(
                Refusal::UnknownDecision,
                format!("no pending approval for decision `{id}` (only `approval_required` decisions of single checks can be approved, for 15 minutes)"),
            ),
            Some(p) if p.approved => refuse(
                Refusal::AlreadyApproved,
                format!("decision `{id}` was approved already; repeat the request to ask again"),
            ),
            Some(p) if p.expires_ns <= now => refuse(
                Refusal::Expired,
                format!("the pending approval for decision `{id}` expired; repeat the request to ask again"),
            ),
            Some(p) => Ok(p.clone()),
        }
    }

    /// Every pending approval that can still be approved, oldest first.
    pub fn list(&self, now: u64) -> Vec<(DecisionKey, Pending)> {
        let st = self.state.lock();
        st.pending_order
            .iter()
            .filter_map(|k| Some((*k, st.pending.get(k)?)))
            .filter(|(_, p)| !p.approved && p.expires_ns > now)
            .map(|(k, p)| (k, p.clone()))
            .collect()
    }

    /// Mark `key` approved by `approver` and issue its grant, valid for
    /// `ttl_ns`, with a token made of `entropy`.
    pub fn issue(
        &self,
        key: DecisionKey,
        approver: &str,
        (now, ttl_ns): (u64, u64),
        entropy: [u8; 16],
    ) -> Result<IssuedGrant, ApprovalError> {
        let mut token = String::with_capacity(TOKEN_PREFIX.len() + 32);
        token.push_str(TOKEN_PREFIX);
        for b in entropy {
            let _ = write!(token, "{b:02x}");
        }
        let hash = grant_key(&token);
        let mut st = self.state.lock();
        let id = decision_id(key);
        let p = match st.pending.get_mut(&key) {
            Some(p) if !p.approved && p.expires_ns > now => p,
            // Approved or evicted by another thread since `pending` was read.
            _ => {
                return refuse(
                    Refusal::AlreadyApproved,
                    format!("decision `{id}` was approved already or is no longer pending"),
                )
            }
        };
        p.approved = true;
        let binding = p.binding.clone();
        let requester = p.requester.to_string();
        let expires_ns = now.saturating_add(ttl_ns);
        while let Some(front) = st.grant_order.front().copied() {
            let stale = st
                .grants
                .get(&front)
                .is_none_or(|g| g.expires_ns.saturating_add(GRANT_MEMORY_NS) <= now);
            if !stale && st.grants.len() < self.limits.1 {
                break;
            }
            st.grant_order.pop_front();
            st.grants.remove(&front);
        }
        let grant = Grant {
            binding: binding.clone(),
            decision: key,
            approver: approver.into(),
            expires_ns,
            used_at: None,
        };
        if st.grants.insert(hash, grant).is_none() {
            st.grant_order.push_back(hash);
        }
        Ok(IssuedGrant {
            token,
            decision_id: id,
            approver: approver.to_string(),
            expires_at_ns: expires_ns,
            requester,
            binding,
        })
    }

    /// Check `token` against the request `asked`: the grant's key and a
    /// detail naming its approver, or the denial. With [`Use::Consume`], a
    /// grant that passes is used up (give it back with
    /// [`Approvals::restore`] if the request is denied after all).
    pub fn redeem(
        &self,
        token: &str,
        asked: &Binding,
        now: u64,
        how: Use,
    ) -> Result<(GrantKey, String), (Reason, String)> {
        let unknown = || {
            (
                Reason::ApprovalInvalid,
                "`context.approval` is not a grant this engine issued".to_string(),
            )
        };
        if !token.starts_with(TOKEN_PREFIX) {
            return Err(unknown());
        }
        let hash = grant_key(token);
        let mut st = self.state.lock();
        let g = st.grants.get_mut(&hash).ok_or_else(unknown)?;
        let id = decision_id(g.decision);
        let used = match (g.used_at, how) {
            (None, _) => false,
            // The live decision the shadow follows used it: not a replay.
            (Some(_), Use::Shadow(Some(live))) => live != hash,
            (Some(_), _) => true,
        };
        if used {
            return Err((
                Reason::ApprovalReplayed,
                format!("the approval grant for decision `{id}` was used already"),
            ));
        }
        if now >= g.expires_ns {
            return Err((
                Reason::ApprovalExpired,
                format!("the approval grant for decision `{id}` has expired"),
            ));
        }
        if let Some(why) = g.binding.mismatch(asked) {
            return Err((Reason::ApprovalMismatch, why));
        }
        if how == Use::Consume {
            g.used_at = Some(now);
        }
        Ok((
            hash,
            format!("approved by `{}` (decision `{id}`)", g.approver),
        ))
    }

    /// Give back a grant [`Approvals::redeem`] used up for a request that was
    /// denied after all (a quota, strict auditing).
    pub fn restore(&self, key: &GrantKey) {
        if let Some(g) = self.state.lock().grants.get_mut(key) {
            g.used_at = None;
        }
    }

    /// (pending approvals, grants) remembered.
    pub fn len(&self) -> (usize, usize) {
        let st = self.state.lock();
        (st.pending.len(), st.grants.len())
    }

    /// Whether both tables are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }
}

/// What [`Approvals::redeem`] does with a grant that passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Use it up.
    Consume,
    /// Only check it.
    Peek,
    /// Only check it, as if the live decision it follows had not used up
    /// the grant given here (shadow evaluation of a candidate policy).
    Shadow(Option<GrantKey>),
}
