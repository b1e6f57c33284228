//! `charter._core`: PyO3 glue over `charter-core`. Conversion, error mapping
//! and GIL handling only; every decision is made in the core.

mod audit;
mod context;
mod engine;
mod errors;
mod hooks;
mod types;

use pyo3::prelude::*;

/// The compiled module.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<engine::Engine>()?;
    m.add_class::<audit::AuditSink>()?;
    m.add_class::<types::Decision>()?;
    m.add_class::<types::Agent>()?;
    m.add_class::<types::ManualClock>()?;
    m.add_class::<types::Lease>()?;
    m.add_class::<types::ApprovalGrant>()?;
    m.add_class::<hooks::HookRequest>()?;
    let reasons: Vec<&str> = charter_core::ALL_REASONS
        .iter()
        .map(|r| r.as_str())
        .collect();
    m.add("REASONS", reasons)?;
    let descriptions: Vec<&str> = charter_core::ALL_REASONS
        .iter()
        .map(|r| r.describe())
        .collect();
    m.add("REASON_DESCRIPTIONS", descriptions)?;
    m.add(
        "BUILD_PROFILE",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    )?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
