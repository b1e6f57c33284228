//! The audit buffer: every decision and lifecycle event appended as a
//! compact record by the thread that made it, drained in batches by one
//! writer that encodes them as JSON Lines sealed by a hash chain.
//!
//! Producers never allocate per record in the steady state: records are
//! fixed-size structs, their strings go to an arena, and both are swapped
//! out wholesale by [`AuditSink::take_encoded`]. Sequence numbers are
//! assigned under the buffer's lock, so buffer order is sequence order.
//! The writer (the Python layer's thread) calls `take_encoded` with the
//! chain's previous hash and writes what it gets; this module never does
//! I/O.

mod encode;
pub mod json;

pub use encode::Batch;
use encode::Encoder;

use crate::cond::Value;
use crate::snapshot::Snapshot;
use parking_lot::{Condvar, Mutex};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What happens when a record cannot be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Wait up to the bound for room, then deny (`audit_unavailable`):
    /// never allow without a record.
    Strict,
    /// Keep deciding; count every dropped record.
    BestEffort,
}

/// How a sink behaves.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Records the buffer holds before producers wait (strict) or drop.
    pub capacity: usize,
    /// Strict or best effort.
    pub mode: Mode,
    /// How long a strict producer waits for room before denying.
    pub block_timeout: Duration,
    /// The stream's tag (the first part of decision ids).
    pub stream: u32,
    /// The first sequence number to assign.
    pub first_seq: u64,
    /// Key of the HMAC that stands in for context values not marked loggable.
    pub hash_key: Vec<u8>,
}

/// A byte range of a buffer's arena; `len == NONE_LEN` means absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    off: u32,
    len: u32,
}

const NONE_LEN: u32 = u32::MAX;

impl Span {
    pub(crate) const NONE: Span = Span {
        off: 0,
        len: NONE_LEN,
    };

    fn is_some(self) -> bool {
        self.len != NONE_LEN
    }

    fn rebased(self, by: u32) -> Span {
        if self.is_some() {
            Span {
                off: self.off + by,
                len: self.len,
            }
        } else {
            self
        }
    }

    fn get(self, arena: &[u8]) -> Option<&[u8]> {
        if !self.is_some() {
            return None;
        }
        let start = self.off as usize;
        arena.get(start..start + self.len as usize)
    }
}

/// Who a decision was asked for, as the record keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Who {
    /// By handle (`subject` holds it).
    Handle,
    /// By an id that named an agent (`subject` holds its slot).
    AgentId,
    /// By an id that named a principal, or nothing (`subject_text` holds it).
    Id,
}

/// Sentinel values in [`Record`].
pub(crate) const NO_RULE: u32 = u32::MAX;
pub(crate) const NO_ACTION: u32 = u32::MAX;
const NO_RETRY: u64 = u64::MAX;

/// One decision or event, compact and fixed-size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record {
    ts: u64,
    seq: u64,
    /// A handle or slot (see `who`); for a provision event, its card's index.
    subject: u64,
    retry_ns: u64,
    rule: u32,
    action: u32,
    /// `u32::MAX`: no quota was charged.
    quota_left: u32,
    snap: u16,
    event: bool,
    reason: u8,
    who: Who,
    resource: Span,
    /// A decision's detail; an event's fields (a JSON object's inside).
    text: Span,
    /// The id asked for (`Who::Id`), or an undeclared action's name.
    subject_text: Span,
    action_text: Span,
    /// Captured context: repeated `[u16 key index][u32 length][JSON value]`.
    ctx: Span,
}

/// What one decision's record says, handed to [`AuditSink::record`].
#[derive(Debug, Default)]
pub struct DecisionFacts<'a> {
    /// When it was decided (Unix ns).
    pub ts: u64,
    /// The subject, as asked.
    pub handle: Option<u64>,
    /// The id asked for, if the subject was named by id.
    pub id: Option<&'a str>,
    /// The agent's slot, if the id resolved to an agent.
    pub agent_slot: Option<u32>,
    /// The action's id, or its name when it is not declared.
    pub action: Option<u32>,
    /// The undeclared action's name.
    pub action_name: Option<&'a str>,
    /// The resource asked about.
    pub resource: Option<&'a str>,
    /// Reason code.
    pub reason: u8,
    /// The deciding entry.
    pub rule: Option<u32>,
    /// For a quota denial.
    pub retry_after_ns: Option<u64>,
    /// Units left of the tightest quota charged (0 on a quota denial).
    pub quota_remaining: Option<u32>,
    /// What a condition, guard or hook said.
    pub detail: Option<&'a str>,
}

/// A provisioned agent as the encoder names it in every record about it.
#[derive(Debug, Clone)]
pub struct Card {
    /// Slot.
    pub slot: u32,
    /// Its handle (slot and generation).
    pub handle: u64,
    /// Pre-rendered `"agent":..,"principal":..,"chain":[..],"template":..`.
    pub fragment: Box<str>,
}

impl Card {
    /// A card for an agent: its id, template, principal and delegators
    /// (direct delegator first, the principal last).
    pub fn new(
        slot: u32,
        handle: u64,
        id: &str,
        template: &str,
        principal: Option<&str>,
        chain: &[&str],
    ) -> Card {
        let mut out = Vec::with_capacity(64 + id.len());
        out.extend_from_slice(b"\"agent\":");
        json::write_str(&mut out, id);
        out.extend_from_slice(b",\"principal\":");
        json::write_opt_str(&mut out, principal);
        out.extend_from_slice(b",\"chain\":[");
        for (i, c) in chain.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json::write_str(&mut out, c);
        }
        out.extend_from_slice(b"],\"template\":");
        json::write_str(&mut out, template);
        Card {
            slot,
            handle,
            fragment: String::from_utf8_lossy(&out).into(),
        }
    }
}

/// Records staged by one thread before they join the buffer in one lock.
#[derive(Default)]
pub(crate) struct Staged {
    records: Vec<Record>,
    arena: Vec<u8>,
    cards: Vec<Card>,
}

impl Staged {
    fn span(&mut self, bytes: Option<&[u8]>) -> Span {
        match bytes {
            None => Span::NONE,
            Some(b) => {
                let off = self.arena.len() as u32;
                self.arena.extend_from_slice(b);
                Span {
                    off,
                    len: b.len() as u32,
                }
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.records.clear();
        self.arena.clear();
        self.cards.clear();
    }

    /// Stage one decision; `capture` appends the context values it read.
    pub(crate) fn decision(&mut self, f: &DecisionFacts<'_>, ctx: &[(u16, &Value)]) {
        let (who, subject, subject_text) = match (f.handle, f.agent_slot, f.id) {
            (Some(h), _, _) => (Who::Handle, h, Span::NONE),
            (None, Some(slot), _) => (Who::AgentId, u64::from(slot), Span::NONE),
            (None, None, id) => (Who::Id, 0, self.span(id.map(str::as_bytes))),
        };
        let ctx = if ctx.is_empty() {
            Span::NONE
        } else {
            let off = self.arena.len() as u32;
            for (key, value) in ctx {
                self.arena.extend_from_slice(&key.to_le_bytes());
                let len_at = self.arena.len();
                self.arena.extend_from_slice(&[0; 4]);
                json::write_value(&mut self.arena, value);
                let len = (self.arena.len() - len_at - 4) as u32;
                self.arena[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
            }
            Span {
                off,
                len: self.arena.len() as u32 - off,
            }
        };
        let record = Record {
            ts: f.ts,
            seq: 0,
            subject,
            retry_ns: f.retry_after_ns.unwrap_or(NO_RETRY),
            quota_left: f.quota_remaining.unwrap_or(u32::MAX),
            rule: f.rule.unwrap_or(NO_RULE),
            action: f.action.unwrap_or(NO_ACTION),
            snap: 0,
            event: false,
            reason: f.reason,
            who,
            resource: self.span(f.resource.map(str::as_bytes)),
            text: self.span(f.detail.map(str::as_bytes)),
            subject_text,
            action_text: self.span(f.action_name.map(str::as_bytes)),
            ctx,
        };
        self.records.push(record);
    }

    fn event(&mut self, ts: u64, kind: &str, fields: &str, card: Option<Card>) {
        let mut text = Vec::with_capacity(16 + kind.len() + fields.len());
        text.extend_from_slice(b"\"kind\":");
        json::write_str(&mut text, kind);
        if !fields.is_empty() {
            text.push(b',');
            text.extend_from_slice(fields.as_bytes());
        }
        let subject = match card {
            Some(c) => {
                self.cards.push(c);
                self.cards.len() as u64
            }
            None => 0,
        };
        let record = Record {
            ts,
            seq: 0,
            subject,
            retry_ns: NO_RETRY,
            quota_left: u32::MAX,
            rule: NO_RULE,
            action: NO_ACTION,
            snap: 0,
            event: true,
            reason: 0,
            who: Who::Id,
            resource: Span::NONE,
            text: self.span(Some(&text)),
            subject_text: Span::NONE,
            action_text: Span::NONE,
            ctx: Span::NONE,
        };
        self.records.push(record);
    }
}

/// Records waiting for the writer.
#[derive(Default)]
pub(crate) struct Pending {
    records: Vec<Record>,
    arena: Vec<u8>,
    snaps: Vec<Arc<Snapshot>>,
    cards: Vec<Card>,
    next_seq: u64,
}

/// The shared buffer between deciding threads and the writer.
pub struct AuditSink {
    cfg: AuditConfig,
    pending: Mutex<Pending>,
    /// Records pending, readable without the lock.
    len: AtomicUsize,
    room: Condvar,
    data: Condvar,
    encoder: Mutex<Encoder>,
    /// Taken but not yet encoded (a take larger than one batch), and how
    /// many of its records are done. Only the writer touches it.
    backlog: Mutex<Option<(Pending, usize)>>,
    /// Records lost in best-effort mode (or denials unrecorded in strict mode).
    dropped: AtomicU64,
    /// Set by the writer while the log cannot be written.
    failed: AtomicBool,
    closed: AtomicBool,
    /// Set when the writer is gone: nothing more can be written.
    finished: AtomicBool,
    flush: AtomicBool,
    /// The last sequence number handed to the writer.
    taken: AtomicU64,
}

impl std::fmt::Debug for AuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSink")
            .field("stream", &self.cfg.stream)
            .field("pending", &self.len.load(Ordering::Relaxed))
            .finish()
    }
}

thread_local! {
    static STAGED: RefCell<Staged> = RefCell::new(Staged::default());
}

/// Strict producers may overshoot `capacity` by this many records (threads
/// racing past the room check); beyond it a record is refused.
const SLACK: usize = 1 << 16;

/// Most records encoded into one batch (about 8 MB of JSON).
pub const MAX_BATCH: usize = 1 << 15;

/// The writer is woken early once this share of the capacity is pending.
const WAKE_DIVISOR: usize = 4;

impl AuditSink {
    /// A sink as `cfg` says.
    pub fn new(cfg: AuditConfig) -> AuditSink {
        let encoder = Encoder::new(cfg.hash_key.clone());
        let pending = Pending {
            next_seq: cfg.first_seq.max(1),
            ..Pending::default()
        };
        AuditSink {
            taken: AtomicU64::new(pending.next_seq - 1),
            cfg,
            pending: Mutex::new(pending),
            len: AtomicUsize::new(0),
            room: Condvar::new(),
            data: Condvar::new(),
            encoder: Mutex::new(encoder),
            backlog: Mutex::new(None),
            dropped: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            flush: AtomicBool::new(false),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AuditConfig {
        &self.cfg
    }

    /// Whether there is room for `n` more decision records now. In strict
    /// mode a producer without room waits ([`AuditSink::wait_for_room`]) or
    /// denies; in best-effort mode it decides and its record is dropped.
    #[inline]
    pub fn has_room(&self, n: usize) -> bool {
        !self.closed.load(Ordering::Relaxed)
            && self.len.load(Ordering::Relaxed) + n <= self.cfg.capacity
    }

    /// Whether waiting could help: the sink is open and its writer healthy.
    pub fn worth_waiting(&self) -> bool {
        !self.closed.load(Ordering::Relaxed) && !self.failed.load(Ordering::Relaxed)
    }

    /// Wait (up to the configured bound) for room for `n` records; true if there is.
    pub fn wait_for_room(&self, n: usize) -> bool {
        let deadline = Instant::now() + self.cfg.block_timeout;
        let mut p = self.pending.lock();
        loop {
            if self.has_room(n) {
                return true;
            }
            if !self.worth_waiting() {
                return false;
            }
            self.flush.store(true, Ordering::Relaxed);
            self.data.notify_one();
            if self.room.wait_until(&mut p, deadline).timed_out() {
                return self.has_room(n);
            }
        }
    }

    /// Strict or best effort.
    pub fn mode(&self) -> Mode {
        self.cfg.mode
    }

    /// Record one decision; its sequence number, or `None` if it was not
    /// kept (closed, or far past capacity; counted as dropped).
    pub fn record(
        &self,
        snap: &Arc<Snapshot>,
        facts: &DecisionFacts<'_>,
        ctx: &[(u16, &Value)],
    ) -> Option<u64> {
        STAGED.with(|s| {
            let Ok(mut staged) = s.try_borrow_mut() else {
                // Re-entered from a hook deciding inside a decision: use a
                // fresh buffer rather than the one being filled.
                let mut fresh = Staged::default();
                fresh.decision(facts, ctx);
                return self.append(snap, &mut fresh, false);
            };
            staged.clear();
            staged.decision(facts, ctx);
            let seq = self.append(snap, &mut staged, false);
            staged.clear();
            seq
        })
    }

    /// Append what `staged` holds (all or nothing); the first record's
    /// sequence number. Events (`force`) are kept past capacity.
    pub(crate) fn append(
        &self,
        snap: &Arc<Snapshot>,
        staged: &mut Staged,
        force: bool,
    ) -> Option<u64> {
        let n = staged.records.len();
        if n == 0 {
            return None;
        }
        let refuse = |this: &AuditSink| {
            this.dropped.fetch_add(n as u64, Ordering::Relaxed);
            None
        };
        // Once closed, only events are kept (the writer's own reports on its
        // way out); once the writer is gone, nothing.
        if self.finished.load(Ordering::Relaxed) || (!force && self.closed.load(Ordering::Relaxed))
        {
            return refuse(self);
        }
        let limit = match self.cfg.mode {
            _ if force => usize::MAX,
            Mode::Strict => self.cfg.capacity + SLACK,
            Mode::BestEffort => self.cfg.capacity,
        };
        let mut p = self.pending.lock();
        if p.records.len() + n > limit || p.arena.len() + staged.arena.len() > u32::MAX as usize {
            drop(p);
            return refuse(self);
        }
        let snap_index = match p.snaps.iter().rposition(|s| Arc::ptr_eq(s, snap)) {
            Some(i) => i,
            None => {
                p.snaps.push(snap.clone());
                p.snaps.len() - 1
            }
        };
        let by = p.arena.len() as u32;
        let card_base = p.cards.len() as u64;
        let first = p.next_seq;
        let Pending {
            records,
            arena,
            cards,
            next_seq,
            ..
        } = &mut *p;
        arena.extend_from_slice(&staged.arena);
        cards.append(&mut staged.cards);
        for (i, r) in staged.records.iter().enumerate() {
            let mut r = *r;
            r.seq = first + i as u64;
            r.snap = snap_index.min(usize::from(u16::MAX)) as u16;
            r.resource = r.resource.rebased(by);
            r.text = r.text.rebased(by);
            r.subject_text = r.subject_text.rebased(by);
            r.action_text = r.action_text.rebased(by);
            r.ctx = r.ctx.rebased(by);
            if r.event && r.subject != 0 {
                r.subject += card_base;
            }
            records.push(r);
        }
        *next_seq = first + n as u64;
        let len = records.len();
        self.len.store(len, Ordering::Relaxed);
        drop(p);
        if len >= self.cfg.capacity / WAKE_DIVISOR && len - n < self.cfg.capacity / WAKE_DIVISOR {
            self.data.notify_one();
        }
        Some(first)
    }

    /// Record a lifecycle event: `fields` is the inside of a JSON object
    /// (`"agent":"a-1","cascade":3`), `card` names a newly provisioned agent.
    pub fn event(
        &self,
        snap: &Arc<Snapshot>,
        ts: u64,
        kind: &str,
        fields: &str,
        card: Option<Card>,
    ) {
        let mut staged = Staged::default();
        staged.event(ts, kind, fields, card);
        self.append(snap, &mut staged, true);
    }

    /// Name agents registered before auditing started.
    pub fn seed(&self, cards: Vec<Card>) {
        let mut e = self.encoder.lock();
        for c in cards {
            e.learn(c);
        }
    }

    /// Wait up to `wait` for records (less when the buffer fills or a flush
    /// is asked for), take them all and encode them, `prefix` first, as one
    /// batch chained to `prev`. `None` if there was nothing to take.
    ///
    /// A large take is encoded in batches of at most [`MAX_BATCH`] records
    /// (the rest on the next calls, without waiting), so the writer's
    /// buffers stay a few megabytes and are reused rather than faulted in.
    pub fn take_encoded(&self, prev: &[u8; 32], prefix: &[u8], wait: Duration) -> Option<Batch> {
        let mut backlog = self.backlog.lock();
        if backlog
            .as_ref()
            .is_none_or(|(p, done)| *done >= p.records.len())
        {
            *backlog = Some((self.take_pending(wait)?, 0));
        }
        let (taken, done) = backlog.as_mut()?;
        let end = (*done + MAX_BATCH).min(taken.records.len());
        let batch = self.encoder.lock().encode(taken, *done..end, prev, prefix);
        *done = end;
        Some(batch)
    }

    /// Give a batch's buffer back for the next one.
    pub fn recycle(&self, data: Vec<u8>) {
        self.encoder.lock().recycle(data);
    }

    /// Everything pending, after waiting as `take_encoded` says.
    fn take_pending(&self, wait: Duration) -> Option<Pending> {
        let mut p = self.pending.lock();
        if p.records.is_empty() && !self.closed.load(Ordering::Relaxed) {
            let deadline = Instant::now() + wait;
            while p.records.len() < (self.cfg.capacity / WAKE_DIVISOR).max(1)
                && !self.flush.load(Ordering::Relaxed)
                && !self.closed.load(Ordering::Relaxed)
            {
                if self.data.wait_until(&mut p, deadline).timed_out() {
                    break;
                }
            }
        }
        self.flush.store(false, Ordering::Relaxed);
        if p.records.is_empty() {
            return None;
        }
        let next_seq = p.next_seq;
        let taken = std::mem::replace(
            &mut *p,
            Pending {
                next_seq,
                ..Pending::default()
            },
        );
        self.len.store(0, Ordering::Relaxed);
        drop(p);
        self.room.notify_all();
        self.taken.store(next_seq - 1, Ordering::Relaxed);
        Some(taken)
    }

    /// Ask the writer to take what is pending now rather than wait.
    pub fn request_flush(&self) {
        self.flush.store(true, Ordering::Relaxed);
        let _p = self.pending.lock();
        self.data.notify_all();
    }

    /// The writer reports the log unwritable (or writable again).
    pub fn set_failed(&self, failed: bool) {
        self.failed.store(failed, Ordering::Relaxed);
        if failed {
            let _p = self.pending.lock();
            self.room.notify_all();
        }
    }

    /// Refuse new records from now on (pending ones can still be taken).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let _p = self.pending.lock();
        self.room.notify_all();
        self.data.notify_all();
    }

    /// The writer is gone: refuse everything from now on.
    pub fn finish(&self) {
        self.finished.store(true, Ordering::Relaxed);
        self.close();
    }

    /// Whether [`AuditSink::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Records pending now.
    pub fn pending(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Records dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Take the dropped count, resetting it (for a `records_dropped` event).
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }

    /// The next sequence number to be assigned.
    pub fn next_seq(&self) -> u64 {
        self.pending.lock().next_seq
    }

    /// The last sequence number handed to the writer.
    pub fn taken_through(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }
}
