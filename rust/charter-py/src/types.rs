//! Value classes handed to Python: `Decision`, `Agent`, `ManualClock`.

use charter_core::{AgentInfo, Reason};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Arc;

/// The fields of a `Decision` that most decisions leave empty.
pub struct Extra {
    pub(crate) retry_after_ns: Option<u64>,
    pub(crate) detail: Option<String>,
}

impl Extra {
    pub(crate) fn of(retry_after_ns: Option<u64>, detail: Option<String>) -> Option<Box<Extra>> {
        (retry_after_ns.is_some() || detail.is_some()).then(|| {
            Box::new(Extra {
                retry_after_ns,
                detail,
            })
        })
    }
}

/// `Decision::rule` when no entry decided.
pub(crate) const NO_RULE: u32 = u32::MAX;

/// `'text'` or `None`, as Python would print it.
fn py_opt(s: Option<&str>) -> String {
    s.map_or_else(|| "None".to_string(), |s| format!("'{s}'"))
}

/// The answer to one request; `bool(decision)` is `decision.allowed`.
// A free list saves an allocation per `check` in tight loops.
#[pyclass(frozen, freelist = 256, module = "charter._core")]
pub struct Decision {
    pub(crate) allowed: bool,
    pub(crate) reason: Reason,
    /// The deciding entry, or `NO_RULE` (a sentinel rather than an
    /// `Option`, so the object stays within one cache line).
    pub(crate) rule: u32,
    /// The audit stream and the record's sequence number (0: not recorded).
    pub(crate) audit_stream: u32,
    pub(crate) audit_seq: u64,
    /// Rarely set (quota denials, conditions, hooks, guards): boxed so the
    /// common `Decision` object stays within one cache line.
    pub(crate) extra: Option<Box<Extra>>,
    pub(crate) snapshot: Arc<charter_core::snapshot::Snapshot>,
}

impl Decision {
    pub(crate) fn from_core(d: charter_core::Decision) -> Decision {
        Decision {
            allowed: d.allowed,
            reason: d.reason,
            rule: d.rule.unwrap_or(NO_RULE),
            audit_stream: d.audit_stream,
            audit_seq: d.audit_seq.unwrap_or(0),
            extra: Extra::of(d.retry_after_ns, d.detail),
            snapshot: d.snapshot,
        }
    }

    fn rule_path(&self) -> Option<&str> {
        let r = (self.rule != NO_RULE).then_some(self.rule)?;
        self.snapshot.policy.rules.get(r as usize).map(|r| &*r.path)
    }
}

#[pymethods]
impl Decision {
    /// Whether the request is allowed.
    #[getter]
    fn allowed(&self) -> bool {
        self.allowed
    }

    /// The stable reason code (`granted`, `denied_by_rule`, `no_grant`, ...).
    #[getter]
    fn reason(&self) -> &'static str {
        self.reason.as_str()
    }

    /// The numeric reason code (index into `charter.REASONS`).
    #[getter]
    fn reason_code(&self) -> u8 {
        self.reason.code()
    }

    /// The policy entry that decided, e.g. `roles.analyst.deny[0]`, or None.
    #[getter]
    fn rule(&self) -> Option<&str> {
        self.rule_path()
    }

    /// Content hash of the policy the decision was made under.
    #[getter]
    fn policy_version(&self) -> &str {
        self.snapshot.version()
    }

    /// For a quota denial: seconds until the same request would be admitted
    /// (None: not a quota denial, or never, e.g. a cost above the budget).
    #[getter]
    fn retry_after(&self) -> Option<f64> {
        self.extra
            .as_ref()?
            .retry_after_ns
            .map(|ns| ns as f64 / 1e9)
    }

    /// What a condition, guard or hook said when one decided (the failing
    /// sub-expression and the values seen, a guard's reason), or None.
    #[getter]
    fn detail(&self) -> Option<&str> {
        self.extra.as_ref()?.detail.as_deref()
    }

    /// The id of the decision's audit record (`stream-seq`), or None when
    /// auditing is off. `charter audit why ID` finds the record. An
    /// `approval_required` decision always has one (engine-local when
    /// auditing is off): `Engine.approve` takes it.
    #[getter]
    pub(crate) fn decision_id(&self) -> Option<String> {
        (self.audit_seq != 0).then(|| format!("{:08x}-{}", self.audit_stream, self.audit_seq))
    }

    /// A sentence explaining the reason code.
    #[getter]
    fn why(&self) -> &'static str {
        self.reason.describe()
    }

    fn __bool__(&self) -> bool {
        self.allowed
    }

    fn __repr__(&self) -> String {
        format!(
            "Decision(allowed={}, reason='{}', rule={}, policy_version='{}')",
            if self.allowed { "True" } else { "False" },
            self.reason.as_str(),
            py_opt(self.rule_path()),
            self.snapshot.version()
        )
    }

    /// The decision as a plain dict.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("allowed", self.allowed)?;
        d.set_item("reason", self.reason.as_str())?;
        d.set_item("rule", self.rule_path())?;
        d.set_item("policy_version", self.snapshot.version())?;
        d.set_item("retry_after", self.retry_after())?;
        // Only when a condition, guard or hook decided: most decisions have none.
        if let Some(detail) = self.extra.as_ref().and_then(|e| e.detail.as_ref()) {
            d.set_item("detail", detail)?;
        }
        // Only when auditing is on.
        if let Some(id) = self.decision_id() {
            d.set_item("decision_id", id)?;
        }
        Ok(d)
    }
}

/// A registered agent.
#[pyclass(frozen, module = "charter._core", get_all)]
pub struct Agent {
    /// Stable id.
    pub(crate) id: String,
    /// Handle for fast checks.
    pub(crate) handle: u64,
    /// Template name.
    pub(crate) template: String,
    /// Direct delegator (principal or agent id).
    pub(crate) on_behalf_of: Option<String>,
    /// Principal at the root of the chain.
    pub(crate) principal: Option<String>,
    /// Position in the delegation chain.
    pub(crate) depth: u32,
    /// Unix seconds.
    pub(crate) created_at: f64,
    /// Unix seconds, or None.
    pub(crate) expires_at: Option<f64>,
    /// `active`, `expired`, `revoked`, `delegator_revoked`, `principal_removed`.
    pub(crate) state: &'static str,
    /// Action patterns its credential limits it to, or None.
    pub(crate) scope: Option<Vec<String>>,
}

impl From<AgentInfo> for Agent {
    fn from(a: AgentInfo) -> Agent {
        Agent {
            id: a.id,
            handle: a.handle,
            template: a.template,
            on_behalf_of: a.on_behalf_of,
            principal: a.principal,
            depth: a.depth,
            created_at: a.created_at_ns as f64 / 1e9,
            expires_at: a.expires_at_ns.map(|t| t as f64 / 1e9),
            state: a.state,
            scope: a.scope,
        }
    }
}

#[pymethods]
impl Agent {
    fn __repr__(&self) -> String {
        format!(
            "Agent(id='{}', handle={}, template='{}', on_behalf_of={}, state='{}')",
            self.id,
            self.handle,
            self.template,
            py_opt(self.on_behalf_of.as_deref()),
            self.state
        )
    }

    fn __int__(&self) -> u64 {
        self.handle
    }
}

/// A clock that moves only when told to, for tests and simulations.
#[pyclass(frozen, module = "charter._core")]
pub struct ManualClock {
    pub(crate) inner: Arc<charter_core::ManualClock>,
}

#[pymethods]
impl ManualClock {
    /// A clock at `start` Unix seconds (default: now).
    #[new]
    #[pyo3(signature = (start=None))]
    fn new(start: Option<f64>) -> Self {
        let ns = match start {
            Some(s) if s.is_finite() && s >= 0.0 => (s * 1e9) as u64,
            _ => charter_core::clock::Clock::now_ns(&charter_core::SystemClock),
        };
        ManualClock {
            inner: Arc::new(charter_core::ManualClock::new(ns)),
        }
    }

    /// Move forward by `seconds` (negative values are ignored).
    fn advance(&self, seconds: f64) {
        if seconds.is_finite() && seconds > 0.0 {
            self.inner.advance((seconds * 1e9) as u64);
        }
    }

    /// Set the time to `seconds` since the Unix epoch.
    fn set(&self, seconds: f64) {
        if seconds.is_finite() && seconds >= 0.0 {
            self.inner.set((seconds * 1e9) as u64);
        }
    }

    /// The current time in Unix seconds.
    fn now(&self) -> f64 {
        charter_core::clock::Clock::now_ns(&*self.inner) as f64 / 1e9
    }

    /// The current time in Unix nanoseconds.
    #[getter]
    fn now_ns(&self) -> u64 {
        charter_core::clock::Clock::now_ns(&*self.inner)
    }
}

/// In-flight slots held by `Engine.acquire`; released by `release()`, on
/// leaving a `with` block, or when garbage-collected.
#[pyclass(module = "charter._core")]
pub struct Lease {
    pub(crate) engine: Arc<charter_core::Engine>,
    pub(crate) inner: std::sync::Mutex<charter_core::engine::Lease>,
    pub(crate) decision: Py<Decision>,
}

#[pymethods]
impl Lease {
    /// The decision taken when acquiring (allowed only if the slots were taken).
    #[getter]
    fn decision(&self, py: Python<'_>) -> Py<Decision> {
        self.decision.clone_ref(py)
    }

    /// Whether the request was allowed (and any capped slots are held).
    fn __bool__(&self, py: Python<'_>) -> bool {
        self.decision.bind(py).get().allowed
    }

    /// Give the slots back (idempotent).
    fn release(&self) {
        if let Ok(mut l) = self.inner.lock() {
            self.engine.release(&mut l);
        }
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.release();
        false
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Ok(mut l) = self.inner.lock() {
            self.engine.release(&mut l);
        }
    }
}

/// A one-time approval grant from `Engine.approve`: pass `token` as
/// `context["approval"]` when repeating the approved request.
#[pyclass(frozen, module = "charter._core")]
pub struct ApprovalGrant {
    token: String,
    decision_id: String,
    approver: String,
    expires_at_ns: u64,
    agent: String,
    action: String,
    resource: Option<String>,
    rules: Vec<String>,
    context: Vec<(Box<str>, Option<charter_core::cond::Value>)>,
}

impl From<charter_core::approval::IssuedGrant> for ApprovalGrant {
    fn from(g: charter_core::approval::IssuedGrant) -> ApprovalGrant {
        ApprovalGrant {
            token: g.token,
            decision_id: g.decision_id,
            approver: g.approver,
            expires_at_ns: g.expires_at_ns,
            agent: g.requester,
            action: g.binding.action.to_string(),
            resource: g.binding.resource.map(|r| r.to_string()),
            rules: g.binding.rules.iter().map(|r| r.to_string()).collect(),
            context: g.binding.context.into_vec(),
        }
    }
}

#[pymethods]
impl ApprovalGrant {
    /// The secret to pass as `context["approval"]` (the engine keeps only its hash).
    #[getter]
    fn token(&self) -> &str {
        &self.token
    }

    /// The `approval_required` decision it approves.
    #[getter]
    fn decision_id(&self) -> &str {
        &self.decision_id
    }

    /// The principal who approved.
    #[getter]
    fn approver(&self) -> &str {
        &self.approver
    }

    /// Unix seconds from which the grant is refused (`approval_expired`).
    #[getter]
    fn expires_at(&self) -> f64 {
        self.expires_at_ns as f64 / 1e9
    }

    /// The requesting agent's id (or the principal's, if it asked directly).
    #[getter]
    fn agent(&self) -> &str {
        &self.agent
    }

    /// The action it is bound to.
    #[getter]
    fn action(&self) -> &str {
        &self.action
    }

    /// The resource it is bound to, or None.
    #[getter]
    fn resource(&self) -> Option<&str> {
        self.resource.as_deref()
    }

    /// The entry that asked for approval (the subject's own first, if several levels did).
    #[getter]
    fn rule(&self) -> Option<&str> {
        self.rules.first().map(String::as_str)
    }

    /// Every entry that asked for approval, the subject's own level first.
    #[getter]
    fn rules(&self) -> Vec<String> {
        self.rules.clone()
    }

    /// The context values it is bound to: every key the entries' `when` and
    /// `approval` read (a key the request did not have is left out, and must
    /// stay absent).
    #[getter]
    fn context<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in &self.context {
            if let Some(v) = v {
                d.set_item(&**k, crate::hooks::to_py(py, v)?)?;
            }
        }
        Ok(d)
    }

    fn __repr__(&self) -> String {
        // Never the token: reprs end up in logs.
        format!(
            "ApprovalGrant(decision_id='{}', approver='{}', agent='{}', action='{}', resource={}, expires_at={})",
            self.decision_id,
            self.approver,
            self.agent,
            self.action,
            py_opt(self.resource.as_deref()),
            self.expires_at()
        )
    }
}
