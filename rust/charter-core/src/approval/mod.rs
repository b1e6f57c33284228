//! Approvals: an allow entry with `approval = "<condition>"` grants only
//! with someone else's say-so while that condition holds (or cannot be
//! evaluated). Such a request is denied `approval_required`; the engine
//! remembers it as a *pending approval* under the decision's id;
//! [`Engine::approve`](crate::Engine::approve) checks the approver and turns it into a one-time,
//! short-lived *grant* bound to that exact request (agent, action, resource,
//! the entries, and the values of the context keys their conditions read);
//! the agent repeats the request with the grant's token in
//! `context.approval`, and the grant is used up when that request is allowed.
//!
//! Both tables are bounded ([`PENDING_CAPACITY`], [`GRANT_CAPACITY`]) and
//! forget what expired; a full table evicts its oldest entry. A token is
//! 128 random bits supplied by the caller (the Python glue reads them from
//! the operating system) and is looked up by its SHA-256, so no comparison
//! ever runs over the secret itself.
//!
//! Layout: this file holds the data (requirements, bindings, pending
//! approvals, refusals); `table` the bounded tables; `stage` what a
//! decision and `Engine::approve` do with them.

mod stage;
mod table;
#[cfg(test)]
mod tests;

pub(crate) use stage::{Asked, Mode, Stage};
pub use table::{Approvals, GrantKey, Use};

use crate::cond::{Condition, Value};

/// The context key a grant's token is passed in.
pub const APPROVAL_KEY: &str = "approval";
/// Most pending approvals remembered; beyond it the oldest is forgotten.
pub const PENDING_CAPACITY: usize = 10_000;
/// How long a pending approval can be approved, in ns (15 minutes).
pub const PENDING_TTL_NS: u64 = 15 * 60 * 1_000_000_000;
/// Most grants remembered (used ones too, so that a replay is named as one).
pub const GRANT_CAPACITY: usize = 10_000;
/// The longest lifetime a grant may be given, in ns (1 hour).
pub const MAX_GRANT_TTL_NS: u64 = 3_600 * 1_000_000_000;
/// How long a grant is remembered after it expires (a late use or a replay
/// is then still named precisely).
const GRANT_MEMORY_NS: u64 = PENDING_TTL_NS;
/// How long a pending approval is remembered after it expires (approving
/// it then says `expired`, not `unknown_decision`).
const PENDING_MEMORY_NS: u64 = PENDING_TTL_NS;
/// What every token starts with.
const TOKEN_PREFIX: &str = "apv_";

/// Someone an entry names as a possible approver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approver {
    /// Any principal holding this role (directly or through `inherits`).
    Role(Box<str>),
    /// This principal.
    Principal(Box<str>),
}

/// An entry's compiled `approval` and `approvers`.
#[derive(Debug, Clone)]
pub struct Requirement {
    /// When approval is needed (an error counts as needed: fail closed).
    pub condition: Condition,
    /// Who may approve, in document order, without repeats.
    pub approvers: Box<[Approver]>,
}

impl Requirement {
    /// Who may approve, as a decision's detail says it:
    /// ``role `treasurer` or `user:carol` ``.
    pub fn who(&self) -> String {
        describe(&self.approvers)
    }
}

fn describe(approvers: &[Approver]) -> String {
    let names: Vec<String> = approvers
        .iter()
        .map(|a| match a {
            Approver::Role(r) => format!("role `{r}`"),
            Approver::Principal(p) => format!("`{p}`"),
        })
        .collect();
    names.join(" or ")
}

/// A decision id: the audit stream's tag (or the engine's own, when
/// auditing is off) and a sequence number.
pub type DecisionKey = (u32, u64);

/// `STREAM-SEQ`, as `Decision.decision_id` spells it.
pub fn decision_id((stream, seq): DecisionKey) -> String {
    format!("{stream:08x}-{seq}")
}

/// The key of a `STREAM-SEQ` decision id.
pub fn parse_decision_id(id: &str) -> Option<DecisionKey> {
    let (stream, seq) = id.split_once('-')?;
    let digits = |s: &str, hex: bool| {
        !s.is_empty()
            && s.bytes().all(|b| {
                if hex {
                    b.is_ascii_hexdigit()
                } else {
                    b.is_ascii_digit()
                }
            })
    };
    if stream.len() != 8 || !digits(stream, true) || !digits(seq, false) {
        return None;
    }
    Some((u32::from_str_radix(stream, 16).ok()?, seq.parse().ok()?))
}

/// Who asked, precisely: a grant for one agent never serves another, even
/// one that later reuses the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester {
    /// An agent, by handle (slot and generation).
    Agent(u64),
    /// A principal acting directly, by interned id.
    Principal(u32),
}

/// The request a pending approval or a grant is for.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// Who asked.
    pub requester: Requester,
    /// The action's name.
    pub action: Box<str>,
    /// The resource, if any.
    pub resource: Option<Box<str>>,
    /// The entries waiting for approval (their paths), own level first.
    pub rules: Box<[Box<str>]>,
    /// Every top-level context key those entries' `when` and `approval`
    /// read (but `approval` itself), sorted, with its value (`None`: absent).
    pub context: Box<[(Box<str>, Option<Value>)]>,
}

impl Binding {
    /// How `asked` differs from the request this binding is for, if it does.
    fn mismatch(&self, asked: &Binding) -> Option<String> {
        if self.requester != asked.requester {
            return Some("the approval was granted to another agent or principal".into());
        }
        if self.action != asked.action {
            return Some(format!(
                "the approval was granted for action `{}`",
                self.action
            ));
        }
        if self.resource != asked.resource {
            return Some(match &self.resource {
                Some(r) => format!("the approval was granted for resource `{r}`"),
                None => "the approval was granted for a request without a resource".into(),
            });
        }
        let keys = |b: &Binding| b.context.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        if self.rules != asked.rules || keys(self) != keys(asked) {
            return Some("the approval was granted under another policy entry".into());
        }
        let differs = self
            .context
            .iter()
            .zip(asked.context.iter())
            .find(|((_, a), (_, b))| a != b);
        differs.map(|((k, _), _)| {
            format!("the approval was granted for another value of `context.{k}`")
        })
    }
}

/// An entry waiting for approval (its path) and who may approve it.
pub type EntryApprovers = (Box<str>, Box<[Approver]>);

/// An `approval_required` decision waiting for someone to approve it.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The request.
    pub binding: Binding,
    /// The requesting agent's id, or the principal's.
    pub requester: Box<str>,
    /// The requester's delegation chain: its id first, up to the principal
    /// (none of them may approve).
    pub chain: Box<[Box<str>]>,
    /// Per entry waiting for approval: its path and who may approve it. An
    /// approver must qualify for every one.
    pub approvers: Box<[EntryApprovers]>,
    /// When the decision was made, Unix ns.
    pub created_ns: u64,
    /// Until when it can be approved, Unix ns.
    pub expires_ns: u64,
    approved: bool,
}

impl Pending {
    /// As JSON, for listings.
    pub fn to_json(&self, id: DecisionKey) -> serde_json::Value {
        serde_json::json!({
            "decision_id": decision_id(id),
            "agent": &*self.requester,
            "chain": self.chain.iter().map(|s| &**s).collect::<Vec<_>>(),
            "action": &*self.binding.action,
            "resource": self.binding.resource.as_deref(),
            "rule": self.binding.rules.first().map(|r| &**r),
            "approvers": self.approvers.iter().map(|(rule, who)| serde_json::json!({
                "rule": &**rule,
                "roles": who.iter().filter_map(|a| match a {
                    Approver::Role(r) => Some(&**r), Approver::Principal(_) => None,
                }).collect::<Vec<_>>(),
                "principals": who.iter().filter_map(|a| match a {
                    Approver::Principal(p) => Some(&**p), Approver::Role(_) => None,
                }).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "context": context_json(&self.binding.context),
            "created_at_ns": self.created_ns,
            "expires_at_ns": self.expires_ns,
        })
    }
}

/// The bound context values as a JSON object (absent keys left out).
pub fn context_json(values: &[(Box<str>, Option<Value>)]) -> serde_json::Value {
    serde_json::Value::Object(
        values
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.as_ref()?.to_json())))
            .collect(),
    )
}

/// What [`Engine::approve`](crate::Engine::approve) hands back: the token (the only copy: the
/// engine keeps its hash) and the request it is bound to.
#[derive(Debug, Clone)]
pub struct IssuedGrant {
    /// Pass it as `context.approval` with the repeated request.
    pub token: String,
    /// The decision approved.
    pub decision_id: String,
    /// Who approved.
    pub approver: String,
    /// The grant is refused (`approval_expired`) from this time, Unix ns.
    pub expires_at_ns: u64,
    /// The requesting agent's id, or the principal's.
    pub requester: String,
    /// The request it is bound to.
    pub binding: Binding,
}

/// Why [`Engine::approve`](crate::Engine::approve) refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A malformed argument (decision id, ttl).
    InvalidArgument,
    /// No pending approval has that decision id (never, evicted, or not an
    /// `approval_required` decision).
    UnknownDecision,
    /// The pending approval is older than [`PENDING_TTL_NS`].
    Expired,
    /// The decision was approved already (one grant per decision).
    AlreadyApproved,
    /// The approver is not a principal of the current policy.
    UnknownApprover,
    /// The approver holds none of the roles the entry names and is not named.
    NotAnApprover,
    /// The approver is the requester, or in its delegation chain.
    FourEyes,
}

impl Refusal {
    /// The stable code (`ApprovalError.reason` in Python).
    pub const fn as_str(self) -> &'static str {
        match self {
            Refusal::InvalidArgument => "invalid_argument",
            Refusal::UnknownDecision => "unknown_decision",
            Refusal::Expired => "expired",
            Refusal::AlreadyApproved => "already_approved",
            Refusal::UnknownApprover => "unknown_approver",
            Refusal::NotAnApprover => "not_an_approver",
            Refusal::FourEyes => "four_eyes",
        }
    }
}

/// An approval that could not be given: why, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalError {
    /// Why.
    pub refusal: Refusal,
    /// Lower-case, user input in backticks.
    pub message: String,
}

impl std::fmt::Display for ApprovalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApprovalError {}

fn refuse<T>(refusal: Refusal, message: String) -> Result<T, ApprovalError> {
    Err(ApprovalError { refusal, message })
}
