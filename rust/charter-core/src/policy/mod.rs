//! The policy: its document model and its compiler.

mod compile;
pub mod model;

pub use compile::{
    key, validate_principal_id, ActionId, CompiledPolicy, Effect, PatternId, Principal, Role,
    RoleId, Rule, RuleId, Template, DEFAULT_MAX_DELEGATION_DEPTH, MAX_ACTIONS,
    MAX_DELEGATION_DEPTH,
};
pub use model::{
    EntrySpec, EntryTable, OneOrMany, PolicySpec, PrincipalSpec, RoleSpec, TemplateSpec,
};
