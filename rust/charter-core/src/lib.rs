#![forbid(unsafe_code)]
//! Charter's core: policy compilation into bitsets, the agent registry and
//! the decision pipeline. No Python here; `charter-py` is the glue.
//!
//! Read [`engine`] first: one decision's path is `Engine::check` ->
//! `Slots::resolve` (identity) -> `Snapshot::rights` (the chain's bitsets) ->
//! `Rights::decide` (bit test, or entry-by-entry for resource-scoped actions).

pub mod approval;
pub mod audit;
pub mod bitset;
pub mod charge;
pub mod clock;
pub mod cond;
pub mod engine;
pub mod error;
pub mod explain;
pub mod pattern;
pub mod policy;
pub mod quota;
pub mod reason;
pub mod registry;
pub mod request;
pub mod rights;
pub mod shadow;
pub mod snapshot;
pub mod table;

pub use clock::{Clock, ManualClock, SystemClock};
pub use engine::{Action, AgentInfo, Decision, Engine, Provision, Request, Stats, Subject};
pub use error::{Error, Result};
pub use policy::{CompiledPolicy, PolicySpec, PrincipalSpec};
pub use reason::{Reason, ALL_REASONS};
