//! The policy: its document model and its compiler.

mod compile;
pub mod model;
mod quotas;

pub use compile::{
    key, validate_principal_id, ActionId, CompiledPolicy, Effect, Guard, PatternId, Principal,
    Role, RoleId, Rule, RuleId, Template, DEFAULT_MAX_DELEGATION_DEPTH, MAX_ACTIONS,
    MAX_DELEGATION_DEPTH,
};
pub use model::{
    AuditSpec, BreakerSpec, EntrySpec, EntryTable, GuardSpec, OneOrMany, PolicySpec, PrincipalSpec,
    QuotaSpec, RoleSpec, TemplateSpec,
};
pub use quotas::{Limit, Quota, QuotaId, MAX_LIMITS};
