//! The immutable view a decision reads: one compiled policy, the effective
//! principals, and the rights of every delegation chain under that policy.
//!
//! A snapshot is swapped whole on reload or principal change, so a check sees
//! one policy from start to end. Chains created later (a provision under the
//! same policy) are appended to the current snapshot's table, which is
//! append-only and lock-free to read.

use crate::bitset::ActionSet;
use crate::policy::QuotaId;
use crate::policy::{CompiledPolicy, Principal, RoleId};
use crate::quota::BreakerConfig;
use crate::reason::{Reason, ALL_REASONS};
use crate::rights::{Level, Rights, FAST_GROUPS};
use crate::table::Chunked;
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// "No chain" (an agent acting for nobody).
pub const NO_CHAIN: u32 = u32::MAX;
/// "No scope": the agent is limited by its roles only.
pub const NO_SCOPE: u32 = u32::MAX;
/// "No quota override": the template's quota applies.
pub const NO_QUOTA: u32 = u32::MAX;
/// Header bit: the bitsets alone cannot decide for this chain (it has
/// quotas or a breaker to charge, or conditions, guards or hooks that read
/// the request), so batches take the general path for it.
pub const HEADER_GENERAL: u64 = 2;

/// Rights-table chunks: 2^10 chains each, 2^14 chunks.
const RIGHTS_CHUNK_BITS: u32 = 10;
const RIGHTS_MAX_CHUNKS: usize = 1 << 14;
/// Dense-table chunks: 2^12 lines (256 KiB) each, 2^14 chunks.
const BITS_CHUNK_BITS: u32 = 12;
const BITS_MAX_CHUNKS: usize = 1 << 14;

/// What the batch fast path learns from a chain's bitsets alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fast {
    /// Allowed.
    Allow,
    /// Denied, for a reason the full rights can tell.
    Deny,
    /// Depends on the resource: evaluate entry by entry.
    Evaluate,
    /// This snapshot predates the chain.
    Missing,
}

/// What a delegation chain is made of; policy-independent, so chains survive reloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainKey {
    /// A principal acting directly (interned principal id).
    Principal(u32),
    /// An agent of `template` acting for chain `parent` (or [`NO_CHAIN`]).
    Agent {
        /// The delegator's chain.
        parent: u32,
        /// Interned template name.
        template: u32,
        /// Interned scope (a set of action patterns), or [`NO_SCOPE`].
        scope: u32,
        /// Interned quota name overriding the template's, or [`NO_QUOTA`].
        quota: u32,
    },
}

/// One policy's view of the world.
#[derive(Debug)]
pub struct Snapshot {
    /// The compiled policy.
    pub policy: Arc<CompiledPolicy>,
    /// Principals: the document's, overlaid with runtime upserts and removals.
    pub principals: BTreeMap<Box<str>, Arc<Principal>>,
    /// Suspended principals: everything acting for them is denied `suspended`.
    pub suspended: std::collections::BTreeSet<Box<str>>,
    rights: Chunked<OnceLock<Arc<Rights>>>,
    /// Per chain, a block of whole cache lines: a header word (1 once
    /// written), then the `FAST_GROUPS` bitsets of `Rights::fast_groups`,
    /// `words` words each. One dense table keeps a batch decision at two
    /// cache lines (the agent's slot, the chain's block) instead of a
    /// pointer chase.
    bits: Chunked<Line>,
    /// Words per bitset.
    words: usize,
    /// Cache lines per chain block.
    lines: usize,
}

/// One cache line of the dense table; chain blocks start on a line so the
/// header and the no-resource words (the common batch case) share one.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct Line([AtomicU64; 8]);

impl Snapshot {
    /// An empty snapshot of `policy` with `principals`.
    pub fn new(
        policy: Arc<CompiledPolicy>,
        principals: BTreeMap<Box<str>, Arc<Principal>>,
    ) -> Snapshot {
        let words = policy.action_count().div_ceil(64);
        Snapshot {
            policy,
            principals,
            suspended: std::collections::BTreeSet::new(),
            rights: Chunked::new(RIGHTS_CHUNK_BITS, RIGHTS_MAX_CHUNKS),
            bits: Chunked::new(BITS_CHUNK_BITS, BITS_MAX_CHUNKS),
            words,
            lines: (1 + FAST_GROUPS * words).div_ceil(8),
        }
    }

    /// The word `j` of chain `chain`'s block in the dense table.
    #[inline(always)]
    fn word(&self, chain: u32, j: usize) -> u64 {
        self.bits
            .get(chain as usize * self.lines + j / 8)
            .map_or(0, |line| line.0[j % 8].load(Ordering::Relaxed))
    }

    /// Chain `chain`'s header: 0 if its block was not written in this
    /// snapshot, else 1, plus the code of its problem (if any) shifted by 8.
    #[inline(always)]
    fn header(&self, chain: u32) -> u64 {
        self.bits
            .get(chain as usize * self.lines)
            .map_or(0, |line| line.0[0].load(Ordering::Acquire))
    }

    /// Whether chain `chain`'s block was written in this snapshot.
    #[inline(always)]
    fn present(&self, chain: u32) -> bool {
        self.header(chain) != 0
    }

    /// The batch fast path for a request without a resource, where the
    /// bitsets alone decide: `Some(allowed)`, or `None` if this snapshot
    /// predates the chain. Branch-free on the answer, so a random mix of
    /// allows and denies costs no mispredictions; one cache line for up to
    /// 448 actions. `a` must be declared.
    #[inline(always)]
    pub fn fast_no_resource(&self, chain: u32, a: u32) -> Option<bool> {
        let word = self.word(chain, 1 + (a / 64) as usize);
        // Absent, or not decidable from the bits: the general path decides.
        (self.header(chain) & (1 | HEADER_GENERAL) == 1).then_some((word >> (a % 64)) & 1 == 1)
    }

    /// Whether chain `chain` needs the general path (see [`HEADER_GENERAL`]).
    #[inline(always)]
    pub fn needs_general(&self, chain: u32) -> bool {
        self.header(chain) & HEADER_GENERAL != 0
    }

    /// The reason code of a request without a resource, from the bitsets
    /// alone; `None` if this snapshot predates the chain. `a` must be declared.
    #[inline(always)]
    pub fn fast_reason_no_resource(&self, chain: u32, a: u32) -> Option<Reason> {
        let w = (a / 64) as usize;
        let bit =
            |group: usize| (self.word(chain, 1 + group * self.words + w) >> (a % 64)) & 1 == 1;
        let header = self.header(chain);
        if header == 0 || header & HEADER_GENERAL != 0 {
            return None;
        }
        if header >> 8 != 0 {
            // The chain's own problem (unknown template, removed principal...).
            return Some(
                ALL_REASONS
                    .get((header >> 8) as usize)
                    .copied()
                    .unwrap_or(Reason::InternalError),
            );
        }
        Some(if bit(0) {
            Reason::Granted
        } else if bit(5) {
            Reason::OutOfScope
        } else if bit(3) {
            Reason::DeniedByRule
        } else if bit(4) {
            Reason::DelegatorDenied
        } else {
            Reason::NoGrant
        })
    }

    /// The batch fast path: decide `a` for `chain` from the dense bitsets.
    /// `a` must be a declared action id.
    #[inline(always)]
    pub fn fast(&self, chain: u32, a: u32, has_resource: bool) -> Fast {
        let w = (a / 64) as usize;
        let bit =
            |group: usize| (self.word(chain, 1 + group * self.words + w) >> (a % 64)) & 1 == 1;
        if bit(usize::from(has_resource)) {
            return Fast::Allow;
        }
        // Bits are only ever set once a chain is written, so a clear bit
        // needs the header to tell "denied" from "not in this snapshot".
        if !self.present(chain) {
            return Fast::Missing;
        }
        if !has_resource || bit(2) {
            Fast::Deny
        } else {
            Fast::Evaluate
        }
    }

    /// The rights of chain `chain`, if this snapshot knows it.
    #[inline(always)]
    pub fn rights(&self, chain: u32) -> Option<&Arc<Rights>> {
        self.rights.get(chain as usize)?.get()
    }

    /// The policy's content version.
    pub fn version(&self) -> &str {
        &self.policy.version
    }

    fn set_rights(&self, chain: u32, r: Arc<Rights>) -> bool {
        let base = chain as usize * self.lines;
        let cell = |j: usize| {
            self.bits
                .get_or_alloc(base + j / 8)
                .map(|line| &line.0[j % 8])
        };
        for (g, words) in r.fast_groups().iter().enumerate() {
            for (w, value) in words.iter().enumerate() {
                if let Some(c) = cell(1 + g * self.words + w) {
                    c.store(*value, Ordering::Relaxed);
                }
            }
        }
        let Some(header) = cell(0) else { return false };
        let general = if r.has_quota() || r.has_conditions() {
            HEADER_GENERAL
        } else {
            0
        };
        header.store(
            1 | general | r.problem.map_or(0, |p| u64::from(p.code()) << 8),
            Ordering::Release,
        );
        match self.rights.get_or_alloc(chain as usize) {
            Some(cell) => cell.set(r).is_ok() || cell.get().is_some(),
            None => false,
        }
    }

    /// Bytes allocated for the rights and bitset tables (not the shared rights themselves).
    pub fn allocated_bytes(&self) -> usize {
        self.rights.allocated_bytes() + self.bits.allocated_bytes()
    }
}

/// Interned chains and the names they refer to; lives in the writer.
#[derive(Debug, Default)]
pub struct Chains {
    keys: Vec<ChainKey>,
    index: FxHashMap<ChainKey, u32>,
    /// Template names by interned id.
    pub templates: Interner,
    /// Principal ids by interned id.
    pub principals: Interner,
    /// Quota names given at provision time, by interned id.
    pub quotas: Interner,
    /// Scopes (sorted action patterns) by interned id.
    scopes: Vec<Box<[Box<str>]>>,
    scope_index: FxHashMap<Box<[Box<str>]>, u32>,
}

/// A string interner (writer side).
#[derive(Debug, Default)]
pub struct Interner {
    names: Vec<Box<str>>,
    index: FxHashMap<Box<str>, u32>,
}

impl Interner {
    /// The id of `name`, interning it.
    pub fn intern(&mut self, name: &str) -> u32 {
        if let Some(id) = self.index.get(name) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.into());
        self.index.insert(name.into(), id);
        id
    }

    /// The id of `name`, if interned.
    pub fn get(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    /// The name of `id`.
    pub fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", |s| s)
    }
}

impl Chains {
    /// The chain id of `key`, and whether it is new.
    pub fn intern(&mut self, key: ChainKey) -> (u32, bool) {
        if let Some(id) = self.index.get(&key) {
            return (*id, false);
        }
        let id = self.keys.len() as u32;
        self.keys.push(key);
        self.index.insert(key, id);
        (id, true)
    }

    /// The id of a scope (a set of action patterns), interning it.
    pub fn intern_scope(&mut self, patterns: &[&str]) -> u32 {
        let mut key: Vec<Box<str>> = patterns.iter().map(|p| Box::<str>::from(*p)).collect();
        key.sort_unstable();
        key.dedup();
        let key = key.into_boxed_slice();
        if let Some(id) = self.scope_index.get(&key) {
            return *id;
        }
        let id = self.scopes.len() as u32;
        self.scopes.push(key.clone());
        self.scope_index.insert(key, id);
        id
    }

    /// The patterns of scope `id` (empty for [`NO_SCOPE`]).
    pub fn scope(&self, id: u32) -> &[Box<str>] {
        self.scopes.get(id as usize).map_or(&[], |s| s)
    }

    /// The chain id of `key`, if interned.
    pub fn get(&self, key: &ChainKey) -> Option<u32> {
        self.index.get(key).copied()
    }

    /// The key of chain `id`.
    pub fn key(&self, id: u32) -> Option<ChainKey> {
        self.keys.get(id as usize).copied()
    }

    /// How many chains exist.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no chain exists.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The smallest `max_delegation_depth` of the templates along chain `id`
    /// (a sub-agent cannot escape an ancestor's bound by picking a laxer
    /// template). Templates missing from `policy` do not bound it.
    pub fn depth_limit(&self, policy: &CompiledPolicy, id: u32) -> u32 {
        let mut limit = u32::MAX;
        let mut cur = id;
        while let Some(ChainKey::Agent {
            parent, template, ..
        }) = self.key(cur)
        {
            if let Some(t) = policy.templates.get(self.templates.name(template)) {
                limit = limit.min(t.max_depth);
            }
            cur = parent;
        }
        limit
    }

    /// Number of agents in chain `id` (0 for a principal acting directly).
    pub fn depth(&self, id: u32) -> u32 {
        let mut depth = 0;
        let mut cur = id;
        while let Some(ChainKey::Agent { parent, .. }) = self.key(cur) {
            depth += 1;
            cur = parent;
        }
        depth
    }
}

/// Per-snapshot caches that let chains share levels and rights.
#[derive(Debug, Default)]
pub struct RightsCache {
    levels: FxHashMap<Vec<RoleId>, Arc<Level>>,
    rights: FxHashMap<Vec<usize>, Arc<Rights>>,
    problems: FxHashMap<u8, Arc<Rights>>,
}

impl RightsCache {
    fn level(&mut self, policy: &CompiledPolicy, roles: &[RoleId]) -> Arc<Level> {
        let mut key = roles.to_vec();
        key.sort_unstable();
        key.dedup();
        self.levels
            .entry(key)
            .or_insert_with_key(|k| Arc::new(Level::new(policy, k)))
            .clone()
    }

    fn denied(&mut self, policy: &CompiledPolicy, why: Reason) -> Arc<Rights> {
        self.problems
            .entry(why.code())
            .or_insert_with(|| Arc::new(Rights::denied(policy, why)))
            .clone()
    }

    fn chain(
        &mut self,
        policy: &CompiledPolicy,
        levels: Vec<Arc<Level>>,
        scope: Option<ActionSet>,
        quotas: Vec<Option<QuotaId>>,
        breaker: Option<BreakerConfig>,
    ) -> Arc<Rights> {
        // Chains with the same levels, scope, quotas and breaker share one `Rights`.
        let mut key: Vec<usize> = levels.iter().map(|l| Arc::as_ptr(l) as usize).collect();
        key.push(usize::MAX);
        key.extend(quotas.iter().map(|q| q.map_or(usize::MAX, usize::from)));
        key.push(usize::MAX);
        if let Some(b) = &breaker {
            key.push(b.window_ns() as usize);
            key.push(b.threshold(crate::quota::TripCause::QuotaDenials) as usize);
            key.push(b.threshold(crate::quota::TripCause::PolicyDenials) as usize);
        }
        if let Some(s) = &scope {
            key.push(usize::MAX);
            key.extend(s.words().iter().map(|w| *w as usize));
        }
        self.rights
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Rights::new(policy, levels, scope).with_quotas(quotas, breaker))
            })
            .clone()
    }

    /// Compute (or fetch) the rights of chain `id` in `snap`, storing them there.
    pub fn ensure(&mut self, snap: &Snapshot, chains: &Chains, id: u32) -> Arc<Rights> {
        if let Some(r) = snap.rights(id) {
            return r.clone();
        }
        let r = self.compute(snap, chains, id);
        snap.set_rights(id, r.clone());
        r
    }

    fn compute(&mut self, snap: &Snapshot, chains: &Chains, id: u32) -> Arc<Rights> {
        let policy = &*snap.policy;
        match chains.key(id) {
            None => self.denied(policy, Reason::InternalError),
            Some(ChainKey::Principal(pid)) => {
                let name = chains.principals.name(pid);
                if snap.suspended.contains(name) {
                    return self.denied(policy, Reason::Suspended);
                }
                match snap.principals.get(name) {
                    None => self.denied(policy, Reason::UnknownPrincipal),
                    Some(p) => {
                        let level = self.level(policy, &p.roles);
                        self.chain(policy, vec![level], None, vec![p.quota], None)
                    }
                }
            }
            Some(ChainKey::Agent {
                parent,
                template,
                scope,
                quota,
            }) => {
                let Some(t) = policy.templates.get(chains.templates.name(template)) else {
                    return self.denied(policy, Reason::UnknownTemplate);
                };
                if chains.depth(id) > chains.depth_limit(policy, id).min(t.max_depth) {
                    return self.denied(policy, Reason::DelegationTooDeep);
                }
                let own = self.level(policy, &t.roles);
                let own_scope =
                    (scope != NO_SCOPE).then(|| policy.expand_scope(chains.scope(scope)));
                let own_quota = if quota == NO_QUOTA {
                    t.quota
                } else {
                    match policy.quota_id(chains.quotas.name(quota)) {
                        Some(q) => Some(q),
                        // The quota it was provisioned with is gone: deny rather than run unlimited.
                        None => return self.denied(policy, Reason::InternalError),
                    }
                };
                if parent == NO_CHAIN {
                    return self.chain(policy, vec![own], own_scope, vec![own_quota], t.breaker);
                }
                let up = self.ensure(snap, chains, parent);
                if let Some(problem) = up.problem {
                    return self.denied(policy, problem);
                }
                // A scope narrows every descendant too.
                let scope = match (own_scope, &up.scope) {
                    (Some(mut s), Some(u)) => {
                        s.intersect_with(u);
                        Some(s)
                    }
                    (s, u) => s.or_else(|| u.clone()),
                };
                let mut levels = Vec::with_capacity(up.levels.len() + 1);
                levels.push(own);
                levels.extend(up.levels.iter().cloned());
                let mut quotas = Vec::with_capacity(up.quotas.len() + 1);
                quotas.push(own_quota);
                quotas.extend(up.quotas.iter().copied());
                self.chain(policy, levels, scope, quotas, t.breaker)
            }
        }
    }
}
