//! `charter._core.Engine`: argument conversion around `charter_core::Engine`.
//! No decision logic lives here. The Python class `charter.Engine`
//! subclasses this one, so `check` is called without a Python frame.

use crate::context::DictContext;
use crate::errors::{self, IntoPy};
use crate::hooks::{BatchHooks, CallHooks, Registry};
use crate::types::{Agent, ApprovalGrant, Decision, Lease, ManualClock};
use charter_core::request::Context;
use charter_core::{Action, Reason, Request, Subject};
use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// `_check_batch`'s result: allowed flags and, if asked, reason codes.
type BatchOut<'py> = (Bound<'py, PyArray1<bool>>, Option<Bound<'py, PyArray1<u8>>>);

/// The compiled engine: policy snapshot, agent registry, decisions.
#[pyclass(subclass, frozen, module = "charter._core")]
pub struct Engine {
    inner: Arc<charter_core::Engine>,
    hooks: Arc<Registry>,
}

fn parse_spec(py: Python<'_>, policy_json: &[u8]) -> PyResult<charter_core::PolicySpec> {
    serde_json::from_slice(policy_json).map_err(|e| {
        errors::to_py(
            py,
            charter_core::Error::policy(
                "$",
                format!("the policy document does not match the schema: {e}"),
            ),
        )
    })
}

/// A subject from a Python value: an int handle (also a numpy integer), an
/// `Agent`, or a str id. `True`/`False` are not handles.
fn subject<'a>(obj: &'a Bound<'_, PyAny>) -> Option<Subject<'a>> {
    if let Ok(s) = obj.cast::<PyString>() {
        return s.to_str().ok().map(Subject::Id);
    }
    if let Ok(a) = obj.cast::<Agent>() {
        return Some(Subject::Handle(a.get().handle));
    }
    integer(obj).map(Subject::Handle)
}

fn action<'a>(obj: &'a Bound<'_, PyAny>) -> Option<Action<'a>> {
    if let Ok(s) = obj.cast::<PyString>() {
        return s.to_str().ok().map(Action::Name);
    }
    integer(obj)
        .and_then(|i| u32::try_from(i).ok())
        .map(Action::Id)
}

/// An exact non-negative integer: a Python int or anything with `__index__`
/// (numpy integers), but not a bool and not a float.
fn integer(obj: &Bound<'_, PyAny>) -> Option<u64> {
    if let Ok(i) = obj.cast_exact::<PyInt>() {
        return i.extract::<u64>().ok();
    }
    if obj.is_instance_of::<PyBool>() || obj.is_instance_of::<PyFloat>() {
        return None;
    }
    obj.extract::<u64>().ok()
}

fn required_subject<'a>(py: Python<'_>, obj: &'a Bound<'_, PyAny>) -> PyResult<Subject<'a>> {
    subject(obj).ok_or_else(|| {
        errors::to_py(
            py,
            charter_core::Error::InvalidArgument(
                "expected an agent handle (int), an Agent, or an id (str)".into(),
            ),
        )
    })
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (policy_json, clock=None))]
    fn new(
        py: Python<'_>,
        policy_json: &[u8],
        clock: Option<&Bound<'_, ManualClock>>,
    ) -> PyResult<Self> {
        let spec = parse_spec(py, policy_json)?;
        let inner = match clock {
            Some(c) => charter_core::Engine::with_clock(spec, c.get().inner.clone()),
            None => charter_core::Engine::new(spec),
        }
        .py_err(py)?;
        Ok(Engine {
            inner: Arc::new(inner),
            hooks: Arc::new(Registry::default()),
        })
    }

    /// Decide one request. Never raises for a bad request: malformed input
    /// is a denial with reason `malformed_request`.
    #[pyo3(signature = (principal, action, resource=None, context=None))]
    fn check(
        &self,
        principal: &Bound<'_, PyAny>,
        action: &Bound<'_, PyAny>,
        resource: Option<&Bound<'_, PyAny>>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> Decision {
        let context = match context {
            None => Ok(None),
            Some(c) if c.is_none() => Ok(None),
            Some(c) => c.cast::<PyDict>().map(Some).map_err(|_| ()),
        };
        let resource = match resource {
            None => Ok(None),
            Some(r) if r.is_none() => Ok(None),
            Some(r) => r
                .cast::<PyString>()
                .ok()
                .and_then(|s| s.to_str().ok())
                .map(Some)
                .ok_or(()),
        };
        let (Some(s), Some(a), Ok(r), Ok(c)) =
            (subject(principal), self::action(action), resource, context)
        else {
            return self.denial(Reason::MalformedRequest);
        };
        let dict = c;
        let ctx = dict.map(DictContext::new);
        let ctx = ctx.as_ref().map(|c| c as &dyn Context);
        let hooks = CallHooks {
            py: principal.py(),
            registry: &self.hooks,
            context: dict,
        };
        let check = || {
            catch_unwind(AssertUnwindSafe(|| {
                self.inner.try_check_request(
                    &Request::new(s, a, r)
                        .with_context(ctx)
                        .with_hooks(Some(&hooks)),
                )
            }))
        };
        match check() {
            Ok(d) if d.reason == Reason::AuditUnavailable => {
                // Strict auditing with a full buffer: wait for the writer
                // (which needs the GIL to run) with the GIL released, then
                // ask once more.
                let sink = self.inner.audit_sink();
                match sink.filter(|s| s.worth_waiting()) {
                    Some(sink) if principal.py().detach(|| sink.wait_for_room(1)) => {
                        match check() {
                            Ok(d) => Decision::from_core(d),
                            Err(_) => self.denial(Reason::InternalError),
                        }
                    }
                    _ => Decision::from_core(d),
                }
            }
            Ok(d) => Decision::from_core(d),
            Err(_) => self.denial(Reason::InternalError),
        }
    }

    /// Record decisions and events in `sink` from now on.
    fn _attach_audit(&self, sink: &Bound<'_, crate::audit::AuditSink>) {
        self.inner.attach_audit(sink.get().inner.clone());
    }

    /// Stop recording; the sink that was attached, if any.
    fn _detach_audit(&self) -> Option<crate::audit::AuditSink> {
        self.inner
            .detach_audit()
            .map(|inner| crate::audit::AuditSink { inner })
    }

    /// Record an event (`fields_json`: a JSON object); false if auditing is off.
    fn _audit_event(&self, py: Python<'_>, kind: &str, fields_json: &str) -> PyResult<bool> {
        let fields = fields_json.trim();
        let inner = fields
            .strip_prefix('{')
            .and_then(|f| f.strip_suffix('}'))
            .filter(|_| {
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(fields).is_ok()
            })
            .ok_or_else(|| {
                errors::to_py(
                    py,
                    charter_core::Error::InvalidArgument(
                        "event fields must be a JSON object".into(),
                    ),
                )
            })?;
        Ok(self.inner.audit_event(kind, inner.trim()))
    }

    /// Batch check over typed arrays; see `charter.Engine.check_batch`.
    #[pyo3(signature = (handles, actions, resources, with_reasons, context=None))]
    fn _check_batch<'py>(
        &self,
        py: Python<'py>,
        handles: PyReadonlyArray1<'py, u64>,
        actions: PyReadonlyArray1<'py, u32>,
        resources: Option<&Bound<'py, PyAny>>,
        with_reasons: bool,
        context: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<BatchOut<'py>> {
        let hs = handles.as_slice()?;
        let acts = actions.as_slice()?;
        let n = hs.len();
        // Owned columns of the keys conditions read, converted before the
        // GIL is released.
        let cols = match context {
            None => None,
            Some(d) => {
                let snap = self.inner.snapshot();
                // Hooks see the whole context; conditions only the keys they read.
                let all: Vec<Box<str>>;
                let keys = if snap.policy.rules.iter().any(|r| r.hook.is_some()) {
                    all = d
                        .keys()
                        .iter()
                        .filter_map(|k| k.extract::<String>().ok().map(Box::from))
                        .collect();
                    &all[..]
                } else {
                    &snap.policy.context_keys[..]
                };
                let cols = crate::context::columns(d, keys, n)
                    .map_err(|m| errors::to_py(py, charter_core::Error::InvalidArgument(m)))?;
                Some(cols)
            }
        };
        // Borrow each name's UTF-8 in place: `owners` holds a reference to
        // every string, so the borrowed slices stay valid (and immutable)
        // while the GIL is released, whatever other threads do to the list.
        let mut owners: Vec<Bound<'py, PyString>> = Vec::new();
        let mut present: Vec<bool> = Vec::new();
        if let Some(seq) = resources.filter(|r| !r.is_none()) {
            let items = seq.try_iter().map_err(|_| not_names(py))?;
            for item in items {
                let item = item?;
                if item.is_none() {
                    present.push(false);
                } else {
                    owners.push(item.cast_into::<PyString>().map_err(|_| not_names(py))?);
                    present.push(true);
                }
            }
        }
        let res: Option<Vec<Option<&str>>> = if resources.is_some_and(|r| !r.is_none()) {
            let mut names = owners.iter();
            let mut out = Vec::with_capacity(present.len());
            for &p in &present {
                out.push(match p.then(|| names.next()).flatten() {
                    Some(s) => Some(s.to_str()?),
                    None => None,
                });
            }
            Some(out)
        } else {
            None
        };
        let mut allowed = vec![false; n];
        let mut reasons = with_reasons.then(|| vec![0u8; n]);
        let engine = &self.inner;
        let hooks = BatchHooks {
            registry: &self.hooks,
        };
        let outcome = py.detach(|| {
            catch_unwind(AssertUnwindSafe(|| {
                engine.check_batch_with(
                    hs,
                    acts,
                    res.as_deref(),
                    cols.as_ref(),
                    Some(&hooks),
                    &mut allowed,
                    reasons.as_deref_mut(),
                )
            }))
        });
        match outcome {
            Ok(r) => r.py_err(py)?,
            Err(_) => {
                return Err(errors::internal(
                    py,
                    "check_batch failed internally; no decision was returned",
                ))
            }
        }
        Ok((
            PyArray1::from_vec(py, allowed),
            reasons.map(|r| PyArray1::from_vec(py, r)),
        ))
    }

    /// The id of a declared action (for `check_batch`).
    fn action_id(&self, py: Python<'_>, name: &str) -> PyResult<u32> {
        self.inner.action_id(name).ok_or_else(|| {
            match errors::unknown_action_error(py)
                .and_then(|c| c.call1((format!("unknown action `{name}`"),)))
            {
                Ok(obj) => PyErr::from_value(obj),
                Err(e) => e,
            }
        })
    }

    /// Declared action names, in id order.
    #[getter]
    fn actions(&self) -> Vec<String> {
        self.inner
            .snapshot()
            .policy
            .actions
            .iter()
            .map(|a| a.to_string())
            .collect()
    }

    /// Content hash of the current policy.
    #[getter]
    fn policy_version(&self) -> String {
        self.inner.snapshot().version().to_string()
    }

    /// Register an agent; see `charter.Engine.provision`.
    #[allow(clippy::too_many_arguments)] // keyword arguments of the Python API
    #[pyo3(signature = (template, *, on_behalf_of=None, ttl=None, agent_id=None, scope=None, quota=None))]
    fn provision(
        &self,
        py: Python<'_>,
        template: &str,
        on_behalf_of: Option<&Bound<'_, PyAny>>,
        ttl: Option<f64>,
        agent_id: Option<&str>,
        scope: Option<Vec<String>>,
        quota: Option<&str>,
    ) -> PyResult<Agent> {
        let delegator = on_behalf_of
            .filter(|o| !o.is_none())
            .map(|o| required_subject(py, o))
            .transpose()?;
        let ttl_ns = ttl.map(|t| seconds(py, t, "ttl")).transpose()?;
        let scope: Option<Vec<&str>> = scope
            .as_ref()
            .map(|v| v.iter().map(String::as_str).collect());
        let req = charter_core::Provision {
            template,
            on_behalf_of: delegator,
            ttl_ns,
            agent_id,
            scope: scope.as_deref(),
            quota,
        };
        self.inner.provision_with(&req).py_err(py).map(Agent::from)
    }

    /// Extend (or shorten) a live agent's lifetime; see `charter.Engine.refresh`.
    #[pyo3(signature = (agent, *, ttl=None, expires_at=None))]
    fn refresh(
        &self,
        py: Python<'_>,
        agent: &Bound<'_, PyAny>,
        ttl: Option<f64>,
        expires_at: Option<f64>,
    ) -> PyResult<Agent> {
        let s = required_subject(py, agent)?;
        let expires_ns = match (ttl, expires_at) {
            (Some(t), None) => self.inner.now_ns().saturating_add(seconds(py, t, "ttl")?),
            (None, Some(at)) => seconds(py, at, "expires_at")?,
            _ => {
                return Err(errors::to_py(
                    py,
                    charter_core::Error::InvalidArgument(
                        "give exactly one of ttl and expires_at".into(),
                    ),
                ))
            }
        };
        self.inner
            .refresh(s, expires_ns)
            .py_err(py)
            .map(Agent::from)
    }

    /// Deprovision an agent and its delegates; returns how many were retired.
    fn deprovision(&self, py: Python<'_>, agent: &Bound<'_, PyAny>) -> PyResult<usize> {
        let s = required_subject(py, agent)?;
        self.inner.deprovision(s).py_err(py)
    }

    /// Describe an agent by handle or id.
    fn agent(&self, py: Python<'_>, agent: &Bound<'_, PyAny>) -> PyResult<Agent> {
        let s = required_subject(py, agent)?;
        self.inner.agent(s).py_err(py).map(Agent::from)
    }

    /// Retire every expired agent; returns how many.
    fn sweep(&self, py: Python<'_>) -> usize {
        let engine = &self.inner;
        py.detach(|| engine.sweep())
    }

    /// Swap in a new policy (canonical JSON); returns (old version, new version).
    fn _reload(&self, py: Python<'_>, policy_json: &[u8]) -> PyResult<(String, String)> {
        let spec = parse_spec(py, policy_json)?;
        self.check_hooks(py, &spec)?;
        self.inner.reload(spec).py_err(py)
    }

    /// Decide every request under a candidate policy too (canonical JSON),
    /// without enforcing it; None stops. Returns the candidate's version.
    #[pyo3(signature = (policy_json=None))]
    fn _set_shadow(&self, py: Python<'_>, policy_json: Option<&[u8]>) -> PyResult<Option<String>> {
        let spec = policy_json.map(|j| parse_spec(py, j)).transpose()?;
        if let Some(spec) = &spec {
            self.check_hooks(py, spec)?;
        }
        self.inner.set_shadow(spec).py_err(py)
    }

    /// What the shadow found: a dict, or None when no shadow is set.
    fn _shadow_report<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(r) = self.inner.shadow_report() else {
            return Ok(None);
        };
        let d = PyDict::new(py);
        d.set_item("candidate_version", r.version)?;
        d.set_item("started_ns", r.started_ns)?;
        d.set_item("decisions", r.decisions)?;
        d.set_item("skipped", r.skipped)?;
        d.set_item("disagreements", r.disagreements)?;
        let by: Vec<(String, &str, &str, u64)> = r.by;
        d.set_item("by", by)?;
        Ok(Some(d))
    }

    /// Register `fn` as hook `name` (replacing any hook of that name).
    fn register_hook(&self, py: Python<'_>, name: &str, f: &Bound<'_, PyAny>) -> PyResult<()> {
        if !f.is_callable() {
            return Err(errors::to_py(
                py,
                charter_core::Error::InvalidArgument(format!("hook `{name}` must be callable")),
            ));
        }
        self.hooks.register(name, f.clone().unbind());
        Ok(())
    }

    /// Register `hooks`, set whether unregistered hooks are allowed, and
    /// check the current policy's hook references (PolicyError if one is missing).
    fn _set_hooks(
        &self,
        py: Python<'_>,
        hooks: &Bound<'_, PyDict>,
        allow_missing: bool,
        policy_json: &[u8],
    ) -> PyResult<()> {
        for (k, v) in hooks.iter() {
            let name: String = k.extract()?;
            self.register_hook(py, &name, &v)?;
        }
        self.hooks
            .allow_missing
            .store(allow_missing, std::sync::atomic::Ordering::Relaxed);
        let spec = parse_spec(py, policy_json)?;
        self.check_hooks(py, &spec)
    }

    /// Add or replace a principal (attributes as JSON bytes).
    fn _upsert_principal(
        &self,
        py: Python<'_>,
        id: &str,
        roles: Vec<String>,
        attributes_json: &[u8],
    ) -> PyResult<()> {
        let attributes = serde_json::from_slice(attributes_json).map_err(|e| {
            errors::to_py(
                py,
                charter_core::Error::InvalidArgument(format!(
                    "attributes must be a JSON object: {e}"
                )),
            )
        })?;
        let spec = charter_core::PrincipalSpec {
            roles,
            attributes,
            quota: None,
        };
        self.inner.upsert_principal(id, spec).py_err(py)
    }

    /// Remove a principal and retire every agent acting for it; returns how many.
    fn remove_principal(&self, py: Python<'_>, id: &str) -> PyResult<usize> {
        self.inner.remove_principal(id).py_err(py)
    }

    /// The derivation of one decision as a JSON document.
    #[pyo3(signature = (principal, action, resource=None, context=None))]
    fn _explain_json(
        &self,
        py: Python<'_>,
        principal: &Bound<'_, PyAny>,
        action: &Bound<'_, PyAny>,
        resource: Option<&str>,
        context: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<String> {
        let s = required_subject(py, principal)?;
        let a = self::action(action).ok_or_else(|| {
            errors::to_py(
                py,
                charter_core::Error::InvalidArgument(
                    "expected an action name (str) or id (int)".into(),
                ),
            )
        })?;
        let ctx = context.map(DictContext::new);
        let hooks = CallHooks {
            py,
            registry: &self.hooks,
            context,
        };
        let req = Request::new(s, a, resource)
            .with_context(ctx.as_ref().map(|c| c as &dyn Context))
            .with_hooks(Some(&hooks));
        let v = self.inner.explain_request(&req);
        serde_json::to_string(&v).map_err(|e| errors::internal(py, &e.to_string()))
    }

    /// Suspend an agent (with its delegates) or a principal (with everything acting for it).
    #[pyo3(signature = (subject, reason="suspended by an operator"))]
    fn suspend(&self, py: Python<'_>, subject: &Bound<'_, PyAny>, reason: &str) -> PyResult<usize> {
        let s = required_subject(py, subject)?;
        self.inner.suspend(s, reason).py_err(py)
    }

    /// Undo `suspend`; returns how many agents became active again.
    fn resume(&self, py: Python<'_>, subject: &Bound<'_, PyAny>) -> PyResult<usize> {
        let s = required_subject(py, subject)?;
        self.inner.resume(s).py_err(py)
    }

    /// Why a subject is suspended (None if it is not).
    fn suspension(&self, py: Python<'_>, subject: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
        let s = required_subject(py, subject)?;
        Ok(self.inner.suspension(s))
    }

    /// The kill switch: deny every request (`frozen`) until `unfreeze()`.
    fn freeze(&self) {
        self.inner.freeze();
    }

    /// Lift the kill switch.
    fn unfreeze(&self) {
        self.inner.unfreeze();
    }

    /// Whether the kill switch is on.
    #[getter]
    fn frozen(&self) -> bool {
        self.inner.is_frozen()
    }

    /// Charge every quota against a lease of the fleet's allowance too (docs/multi-host.md).
    fn _quota_leasing(&self, on: bool) {
        self.inner.set_quota_leasing(on);
    }

    /// The cells whose fleet leases want renewing:
    /// `(handle, key, interval_ns, burst, units, stale)` each.
    fn _quota_lease_demand(&self) -> Vec<(u64, String, u64, u32, i64, bool)> {
        self.inner
            .quota_lease_demand()
            .into_iter()
            .map(|d| (d.handle, d.key, d.interval_ns, d.burst, d.units, d.stale))
            .collect()
    }

    /// Add units the fleet granted to a cell; false if it is no longer `key`'s cell.
    fn _quota_lease_grant(&self, handle: u64, key: &str, units: u32) -> bool {
        self.inner.quota_lease_grant(handle, key, units)
    }

    /// Empty a cell's lease, returning the units it held (`forget`: stop renewing it).
    fn _quota_lease_return(&self, handle: u64, key: &str, forget: bool) -> i64 {
        self.inner.quota_lease_return(handle, key, forget)
    }

    /// Remaining quota at every level of a subject's chain, as JSON.
    fn _quota_status_json(&self, py: Python<'_>, subject: &Bound<'_, PyAny>) -> PyResult<String> {
        let s = required_subject(py, subject)?;
        let v = self.inner.quota_status(s).py_err(py)?;
        serde_json::to_string(&v).map_err(|e| errors::internal(py, &e.to_string()))
    }

    /// Decide a request and hold an in-flight slot at every level capping concurrency.
    #[pyo3(signature = (principal, action, resource=None))]
    fn acquire(
        &self,
        py: Python<'_>,
        principal: &Bound<'_, PyAny>,
        action: &Bound<'_, PyAny>,
        resource: Option<&str>,
    ) -> PyResult<Lease> {
        let (Some(s), Some(a)) = (subject(principal), self::action(action)) else {
            let d = Py::new(py, self.denial(Reason::MalformedRequest))?;
            return Ok(Lease {
                engine: self.inner.clone(),
                inner: std::sync::Mutex::new(charter_core::engine::Lease::default()),
                decision: d,
            });
        };
        let (d, lease) = self.inner.acquire(s, a, resource);
        Ok(Lease {
            engine: self.inner.clone(),
            inner: std::sync::Mutex::new(lease.unwrap_or_default()),
            decision: Py::new(py, Decision::from_core(d))?,
        })
    }

    /// Approve an `approval_required` decision (its id, or the `Decision`)
    /// as principal `approver`; see `charter.Engine.approve`.
    #[pyo3(signature = (decision, approver, *, ttl=300.0))]
    fn approve(
        &self,
        py: Python<'_>,
        decision: &Bound<'_, PyAny>,
        approver: &str,
        ttl: f64,
    ) -> PyResult<ApprovalGrant> {
        let id = if let Ok(d) = decision.cast::<Decision>() {
            d.get().decision_id()
        } else if let Ok(s) = decision.cast::<PyString>() {
            Some(s.to_str()?.to_string())
        } else {
            None
        };
        let Some(id) = id else {
            return Err(errors::to_py(
                py,
                charter_core::Error::InvalidArgument(
                    "expected a decision id (str) or an approval_required Decision".into(),
                ),
            ));
        };
        let ttl_ns = seconds(py, ttl, "ttl")?;
        // 128 bits from the operating system's generator.
        let random: Vec<u8> = py.import("os")?.call_method1("urandom", (16,))?.extract()?;
        let entropy: [u8; 16] = random
            .try_into()
            .map_err(|_| errors::internal(py, "os.urandom returned the wrong length"))?;
        self.inner
            .approve(&id, approver, ttl_ns, entropy)
            .map(ApprovalGrant::from)
            .map_err(|e| errors::approval(py, e))
    }

    /// The pending approvals (oldest first) as a JSON list.
    fn _pending_approvals_json(&self, py: Python<'_>) -> PyResult<String> {
        let list: Vec<serde_json::Value> = self
            .inner
            .pending_approvals()
            .iter()
            .map(|(id, p)| p.to_json(*id))
            .collect();
        serde_json::to_string(&list).map_err(|e| errors::internal(py, &e.to_string()))
    }

    /// Registry counters.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("agents", s.agents)?;
        d.set_item("slots", s.slots)?;
        d.set_item("chains", s.chains)?;
        d.set_item("policy_version", s.policy_version)?;
        d.set_item("registry_bytes", s.registry_bytes)?;
        Ok(d)
    }
}

/// Positive finite seconds as nanoseconds.
fn seconds(py: Python<'_>, t: f64, name: &str) -> PyResult<u64> {
    if t.is_finite() && t > 0.0 && t < 1e10 {
        Ok((t * 1e9) as u64)
    } else {
        Err(errors::to_py(
            py,
            charter_core::Error::InvalidArgument(format!(
                "{name} must be a positive number of seconds, got {t}"
            )),
        ))
    }
}

/// The error for a `resources` argument that is not a sequence of str/None.
#[cold]
fn not_names(py: Python<'_>) -> PyErr {
    errors::to_py(
        py,
        charter_core::Error::InvalidArgument("resources must be a sequence of str or None".into()),
    )
}

impl Engine {
    fn check_hooks(&self, py: Python<'_>, spec: &charter_core::PolicySpec) -> PyResult<()> {
        match self.hooks.missing(spec) {
            None => Ok(()),
            Some((path, name)) => Err(errors::to_py(
                py,
                charter_core::Error::policy(
                    path,
                    format!(
                        "unknown hook `{name}`: register it (`hooks=` or `engine.register_hook`) \
                         or load with `allow_missing_hooks=True`"
                    ),
                ),
            )),
        }
    }

    #[cold]
    fn denial(&self, reason: Reason) -> Decision {
        Decision {
            allowed: false,
            reason,
            rule: crate::types::NO_RULE,
            audit_stream: 0,
            audit_seq: 0,
            extra: None,
            snapshot: self.inner.snapshot(),
        }
    }
}
