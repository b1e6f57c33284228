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
    /// Approval condition (reserved for the approvals feature).
    #[serde(default)]
    pub approval: Option<String>,
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
    /// Quota name (reserved for the quotas feature).
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
    /// Quota name (reserved for the quotas feature).
    #[serde(default)]
    pub quota: Option<String>,
    /// Free-form description.
    #[serde(default)]
    pub description: Option<String>,
}
