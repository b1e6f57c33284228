//! Records to JSON Lines, sealed by a hash chain.
//!
//! A batch is `prefix` (a new file's header line, if any), one line per
//! record, then a seal line:
//! `{"kind":"seal","first":F,"last":L,"count":N,"hash":H}` where
//! `H = SHA-256(previous hash || prefix || record lines)`, hex. The seal is
//! not itself hashed: the next batch's hash covers it through `H`.

use super::json::{self, hex, write_str, write_u64};
use super::{Card, Pending, Record, Span, Who, NO_ACTION, NO_RETRY, NO_RULE};
use crate::reason::ALL_REASONS;
use crate::snapshot::Snapshot;
use hmac::{Hmac, Mac};
use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// One encoded batch, ready to append to the log.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The bytes to write: prefix, records, seal line.
    pub data: Vec<u8>,
    /// First and last sequence numbers.
    pub first: u64,
    /// Last sequence number.
    pub last: u64,
    /// Records (not counting the prefix or the seal).
    pub count: u64,
    /// The chain's hash after this batch.
    pub hash: [u8; 32],
}

/// Per-snapshot JSON fragments, rendered once.
struct Fragments {
    snap: Arc<Snapshot>,
    /// `"action":"name"` by action id.
    actions: Vec<Box<[u8]>>,
    /// `"rule":"path"` by rule id.
    rules: Vec<Box<[u8]>>,
    /// `"policy":"version"`.
    version: Box<[u8]>,
    /// Context keys (by index into the policy's `context_keys`) and whether
    /// their values may be written.
    keys: Vec<(Box<[u8]>, bool)>,
}

impl Fragments {
    fn new(snap: &Arc<Snapshot>) -> Fragments {
        let policy = &snap.policy;
        let field = |name: &str, value: &str| {
            let mut out = Vec::with_capacity(name.len() + value.len() + 6);
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            write_str(&mut out, value);
            out.into_boxed_slice()
        };
        Fragments {
            snap: snap.clone(),
            actions: policy.actions.iter().map(|a| field("action", a)).collect(),
            rules: policy
                .rules
                .iter()
                .map(|r| field("rule", &r.path))
                .collect(),
            version: field("policy", snap.version()),
            keys: policy
                .context_keys
                .iter()
                .map(|k| {
                    let mut out = Vec::new();
                    write_str(&mut out, k);
                    (
                        out.into_boxed_slice(),
                        policy.loggable_context.binary_search(k).is_ok(),
                    )
                })
                .collect(),
        }
    }
}

/// The writer's side: who each slot is, fragments of recent snapshots.
pub(crate) struct Encoder {
    /// A previous batch's buffer, to reuse.
    spare: Vec<u8>,
    cards: FxHashMap<u32, Card>,
    fragments: Vec<Fragments>,
    hash_key: Vec<u8>,
}

const UNKNOWN_AGENT: &[u8] = b"\"agent\":null,\"principal\":null,\"chain\":[],\"template\":null";

impl Encoder {
    pub(crate) fn new(hash_key: Vec<u8>) -> Encoder {
        Encoder {
            spare: Vec::new(),
            cards: FxHashMap::default(),
            fragments: Vec::new(),
            hash_key,
        }
    }

    pub(crate) fn learn(&mut self, card: Card) {
        self.cards.insert(card.slot, card);
    }

    /// Fragments for `snap`, rendered on first sight (a few are kept: a
    /// batch rarely spans more than two policies).
    fn fragments(&mut self, snap: &Arc<Snapshot>) -> usize {
        if let Some(i) = self
            .fragments
            .iter()
            .position(|f| Arc::ptr_eq(&f.snap, snap))
        {
            return i;
        }
        if self.fragments.len() >= 4 {
            self.fragments.remove(0);
        }
        self.fragments.push(Fragments::new(snap));
        self.fragments.len() - 1
    }

    pub(crate) fn recycle(&mut self, data: Vec<u8>) {
        if data.capacity() > self.spare.capacity() {
            self.spare = data;
        }
    }

    /// Encode `p.records[range]` as one sealed batch.
    pub(crate) fn encode(
        &mut self,
        p: &Pending,
        range: std::ops::Range<usize>,
        prev: &[u8; 32],
        prefix: &[u8],
    ) -> Batch {
        let records = p.records.get(range).unwrap_or_default();
        let mut out = std::mem::take(&mut self.spare);
        out.clear();
        out.reserve(prefix.len() + records.len() * 260 + 160);
        out.extend_from_slice(prefix);
        let frag_index: Vec<usize> = p.snaps.iter().map(|s| self.fragments(s)).collect();
        for r in records {
            if r.event {
                self.event(&mut out, p, r);
            } else {
                let f = frag_index
                    .get(usize::from(r.snap))
                    .copied()
                    .unwrap_or_default();
                self.decision(&mut out, p, r, f);
            }
        }
        let mut hasher = Sha256::new();
        hasher.update(prev);
        hasher.update(&out);
        let hash: [u8; 32] = hasher.finalize().into();
        let first = records.first().map_or(0, |r| r.seq);
        let last = records.last().map_or(0, |r| r.seq);
        out.extend_from_slice(b"{\"kind\":\"seal\",\"first\":");
        write_u64(&mut out, first);
        out.extend_from_slice(b",\"last\":");
        write_u64(&mut out, last);
        out.extend_from_slice(b",\"count\":");
        write_u64(&mut out, records.len() as u64);
        out.extend_from_slice(b",\"hash\":\"");
        out.extend_from_slice(hex(&hash).as_bytes());
        out.extend_from_slice(b"\"}\n");
        Batch {
            data: out,
            first,
            last,
            count: records.len() as u64,
            hash,
        }
    }

    fn head(out: &mut Vec<u8>, r: &Record) {
        out.extend_from_slice(b"{\"seq\":");
        write_u64(out, r.seq);
        out.extend_from_slice(b",\"ts\":");
        write_u64(out, r.ts);
    }

    fn event(&mut self, out: &mut Vec<u8>, p: &Pending, r: &Record) {
        Self::head(out, r);
        if let Some(text) = r.text.get(&p.arena) {
            out.push(b',');
            out.extend_from_slice(text);
        }
        out.extend_from_slice(b"}\n");
        // A provision event introduces an agent: later records name it.
        if r.subject != 0 {
            if let Some(card) = p.cards.get(r.subject as usize - 1) {
                self.learn(card.clone());
            }
        }
    }

    fn decision(&mut self, out: &mut Vec<u8>, p: &Pending, r: &Record, f: usize) {
        Self::head(out, r);
        out.extend_from_slice(b",\"kind\":\"decision\",");
        let text = |s: Span| s.get(&p.arena).map(String::from_utf8_lossy);
        match r.who {
            Who::Handle => {
                let slot = crate::registry::split_handle(r.subject).0 as u32;
                match self.cards.get(&slot).filter(|c| c.handle == r.subject) {
                    Some(c) => out.extend_from_slice(c.fragment.as_bytes()),
                    None => {
                        out.extend_from_slice(UNKNOWN_AGENT);
                        out.extend_from_slice(b",\"handle\":");
                        write_u64(out, r.subject);
                    }
                }
            }
            Who::AgentId => match self.cards.get(&(r.subject as u32)) {
                Some(c) => out.extend_from_slice(c.fragment.as_bytes()),
                None => out.extend_from_slice(UNKNOWN_AGENT),
            },
            Who::Id => {
                let id = text(r.subject_text);
                let known_principal = id.as_deref().is_some_and(|id| {
                    self.fragments
                        .get(f)
                        .is_some_and(|fr| fr.snap.principals.contains_key(id))
                });
                if known_principal {
                    out.extend_from_slice(b"\"agent\":null,\"principal\":");
                    json::write_opt_str(out, id.as_deref());
                    out.extend_from_slice(b",\"chain\":[],\"template\":null");
                } else {
                    out.extend_from_slice(UNKNOWN_AGENT);
                    out.extend_from_slice(b",\"subject\":");
                    json::write_opt_str(out, id.as_deref());
                }
            }
        }
        let Some(fr) = self.fragments.get(f) else {
            out.extend_from_slice(b"}\n");
            return;
        };
        out.push(b',');
        match fr.actions.get(r.action as usize) {
            Some(a) if r.action != NO_ACTION => out.extend_from_slice(a),
            _ => {
                out.extend_from_slice(b"\"action\":");
                json::write_opt_str(out, text(r.action_text).as_deref());
            }
        }
        out.extend_from_slice(b",\"resource\":");
        json::write_opt_str(out, text(r.resource).as_deref());
        let reason = ALL_REASONS
            .get(usize::from(r.reason))
            .map_or("internal_error", |x| x.as_str());
        out.extend_from_slice(if r.reason == 0 {
            b",\"effect\":\"allow\",\"reason\":\""
        } else {
            b",\"effect\":\"deny\",\"reason\":\""
        });
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\",");
        match fr.rules.get(r.rule as usize) {
            Some(rule) if r.rule != NO_RULE => out.extend_from_slice(rule),
            _ => out.extend_from_slice(b"\"rule\":null"),
        }
        out.push(b',');
        out.extend_from_slice(&fr.version);
        if r.retry_ns != NO_RETRY {
            out.extend_from_slice(b",\"retry_after\":");
            json::write_f64(out, r.retry_ns as f64 / 1e9);
        }
        if r.quota_left != u32::MAX {
            out.extend_from_slice(b",\"quota_remaining\":");
            write_u64(out, u64::from(r.quota_left));
        }
        if let Some(detail) = text(r.text) {
            out.extend_from_slice(b",\"detail\":");
            write_str(out, &detail);
        }
        if let Some(ctx) = r.ctx.get(&p.arena) {
            out.extend_from_slice(b",\"context\":{");
            self.context(out, ctx, f);
            out.push(b'}');
        }
        out.extend_from_slice(b"}\n");
    }

    /// Captured context values: loggable keys as they were, the others as
    /// a keyed hash (equal values hash equal; the values cannot be read back).
    fn context(&self, out: &mut Vec<u8>, mut ctx: &[u8], f: usize) {
        let Some(fr) = self.fragments.get(f) else {
            return;
        };
        let mut first = true;
        while ctx.len() >= 6 {
            let key = u16::from_le_bytes([ctx[0], ctx[1]]);
            let len = u32::from_le_bytes([ctx[2], ctx[3], ctx[4], ctx[5]]) as usize;
            let Some(value) = ctx.get(6..6 + len) else {
                break;
            };
            ctx = &ctx[6 + len..];
            let Some((name, loggable)) = fr.keys.get(usize::from(key)) else {
                continue;
            };
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(name);
            out.push(b':');
            if *loggable {
                out.extend_from_slice(value);
            } else {
                out.extend_from_slice(b"\"hmac:");
                out.extend_from_slice(hex(&self.digest(name, value)).as_bytes());
                out.push(b'"');
            }
        }
    }

    fn digest(&self, name: &[u8], value: &[u8]) -> [u8; 8] {
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.hash_key) {
            Ok(m) => m,
            // HMAC takes keys of any length; this cannot happen.
            Err(_) => return [0; 8],
        };
        mac.update(name);
        mac.update(b"\0");
        mac.update(value);
        let full = mac.finalize().into_bytes();
        let mut short = [0u8; 8];
        short.copy_from_slice(&full[..8]);
        short
    }
}
