//! The policy document as data: what the Python layer validated with msgspec
//! and hands over as JSON, and what Rust callers may build directly. No
//! semantics here; [`super::compile`] gives them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A whole policy document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Declared action names, `tool:verb`.
    #[serde(default)]
    pub actions: Vec<String>,
    /// Named resource classes: lists of patterns (`@name` refers to one).
    #[serde(default)]
    pub resources: BTreeMap<String, Vec<String>>,
    /// Roles by name.
    #[serde(default)]
    pub roles: BTreeMap<String, RoleSpec>,
    /// Humans and services by id.
    #[serde(default)]
    pub principals: BTreeMap<String, PrincipalSpec>,
    /// Agent templates by name.
    #[serde(default)]
    pub templates: BTreeMap<String, TemplateSpec>,
    /// Quotas by name (referenced by templates and principals).
    #[serde(default)]
    pub quotas: BTreeMap<String, QuotaSpec>,
    /// Budget units an action costs (default 1), by action name.
    #[serde(default)]
    pub costs: BTreeMap<String, i64>,
    /// Policy-wide guards: requirements every allowed request they cover must meet.
    #[serde(default)]
    pub guards: Vec<GuardSpec>,
    /// The `[audit]` table: what the audit log may show, and the writer's
    /// settings (read by the Python layer).
    #[serde(default)]
    pub audit: Option<AuditSpec>,
}

/// The `[audit]` table (no `deny_unknown_fields`: `writer` takes the rest).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditSpec {
    /// Context keys whose values the log may show; every other key a
    /// condition reads is logged as a keyed hash.
    #[serde(default)]
    pub loggable_context: Vec<String>,
    /// The writer's settings (directory, mode, fsync, ...), validated and
    /// used by the Python layer; the compiler ignores them.
    #[serde(flatten)]
    pub writer: BTreeMap<String, serde_json::Value>,
}

/// A `[[guards]]` table: whatever the roles say, a request for `actions` on
/// `on` is denied (`guard_failed`) unless `require` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardSpec {
    /// Resource patterns or `@class` references; absent = every request,
    /// with or without a resource.
    #[serde(default)]
    pub on: Option<Vec<String>>,
    /// Action patterns; absent = every action.
    #[serde(default)]
    pub actions: Option<Vec<String>>,
    /// The condition the request must meet.
    pub require: String,
    /// What the denial says (`Decision.detail`).
    #[serde(default)]
    pub reason: Option<String>,
}

/// A named quota.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSpec {
    /// Requests per period, `"100/s"`.
    #[serde(default)]
    pub rate: Option<String>,
    /// Requests a full `rate` admits at once (default: its count).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Cost units per period, `"10000/h"`.
    #[serde(default)]
    pub budget: Option<String>,
    /// Requests held at once through `acquire`.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// Extra rates for actions matching a pattern: `{ "payments:*" = "10/m" }`.
    #[serde(default)]
    pub limits: BTreeMap<String, String>,
}

/// When to suspend an agent automatically.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSpec {
    /// Quota denials within `window` that trip it (0 or absent: never).
    #[serde(default)]
    pub quota_denials: Option<u32>,
    /// Policy denials within `window` that trip it (0 or absent: never).
    #[serde(default)]
    pub policy_denials: Option<u32>,
    /// The window, `"10s"`.
    pub window: String,
}

/// One role.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    /// Roles whose grants and denies this role takes on.
    #[serde(default)]
    pub inherits: Vec<String>,
    /// Allow entries.
    #[serde(default)]
    pub allow: Vec<EntrySpec>,
    /// Deny entries; a matching deny beats every allow.
    #[serde(default)]
    pub deny: Vec<EntrySpec>,
}

/// An allow or deny entry: a bare action (pattern) or a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EntrySpec {
    /// `"db:read"`, `"db:*"` or `"*"`.
    Action(String),
    /// `{ action = ..., on = [...] }`.
    Table(EntryTable),
}

/// One or several action patterns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single action pattern.
    One(String),
    /// Several action patterns.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The patterns as a slice-like list.
    pub fn as_vec(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// The table form of an entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryTable {
    /// Action pattern(s) the entry covers.
    pub action: OneOrMany,
    /// Resource patterns or `@class` references; absent = every resource.
    #[serde(default)]
    pub on: Option<Vec<String>>,
    /// Condition (reserved for the conditions feature).
    #[serde(default)]
    pub when: Option<String>,
    /// Python hook name (reserved for the hooks feature).
    #[serde(default)]
    pub hook: Option<String>,
    /// Approval condition (allow entries only): while it holds, or cannot be
    /// evaluated, the entry grants only with an approval grant.
    #[serde(default)]
    pub approval: Option<String>,
    /// Role names and principal ids who may approve (required with `approval`).
    /// Left out of the serialised form when absent, so documents without
    /// approvals keep their content version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvers: Option<Vec<String>>,
}

/// A human or service principal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalSpec {
    /// Roles held directly.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Free-form attributes (read by conditions).
    #[serde(default)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// Quota name: shared by the principal and every agent acting for it.
    #[serde(default)]
    pub quota: Option<String>,
}

/// An agent template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    /// Roles agents of this template hold (before intersection with the delegator).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Default lifetime in seconds.
    #[serde(default)]
    pub ttl: Option<f64>,
    /// Longest lifetime a provision may ask for, in seconds.
    #[serde(default)]
    pub max_ttl: Option<f64>,
    /// Deepest position in a delegation chain (1 = directly on behalf of a principal).
    #[serde(default)]
    pub max_delegation_depth: Option<u32>,
    /// Quota name: every agent of the template is charged against its own copy.
    #[serde(default)]
    pub quota: Option<String>,
    /// Suspend the agent when denials pile up.
    #[serde(default)]
    pub breaker: Option<BreakerSpec>,
    /// Free-form description.
    #[serde(default)]
    pub description: Option<String>,
}
