//! Policy hooks: Python callables registered by name, called back by the
//! core when an entry naming one would decide. A hook receives a read-only
//! `HookRequest` and returns `True`/`False` or `(bool, reason)`; anything
//! else, or an exception, is `hook_error` (never a crash). No engine lock
//! is held while Python runs; batches re-attach to the interpreter only for
//! the requests that reach a hook.

use charter_core::cond::{Map, Value};
use charter_core::policy::{key, EntrySpec, PolicySpec};
use charter_core::request::{HookCall, HookOutcome, Hooks};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyList, PyString, PyTuple};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

/// The registered hooks of one engine.
#[derive(Default)]
pub struct Registry {
    hooks: RwLock<HashMap<String, Py<PyAny>>>,
    /// Whether a policy may name hooks that are not registered (a decision
    /// reaching one is then `hook_error`).
    pub allow_missing: AtomicBool,
}

impl Registry {
    /// Register (or replace) `name`.
    pub fn register(&self, name: &str, f: Py<PyAny>) {
        if let Ok(mut h) = self.hooks.write() {
            h.insert(name.to_string(), f);
        }
    }

    fn get(&self, py: Python<'_>, name: &str) -> Option<Py<PyAny>> {
        // Cloned out so that no lock is held while the hook runs.
        self.hooks.read().ok()?.get(name).map(|f| f.clone_ref(py))
    }

    fn has(&self, name: &str) -> bool {
        self.hooks.read().is_ok_and(|h| h.contains_key(name))
    }

    /// The first entry of `spec` naming a hook that is not registered, as
    /// (path, name), unless missing hooks are allowed.
    pub fn missing(&self, spec: &PolicySpec) -> Option<(String, String)> {
        if self.allow_missing.load(Ordering::Relaxed) {
            return None;
        }
        for (role, r) in &spec.roles {
            for (field, list) in [("allow", &r.allow), ("deny", &r.deny)] {
                for (i, e) in list.iter().enumerate() {
                    if let EntrySpec::Table(t) = e {
                        if let Some(h) = t.hook.as_ref().filter(|h| !self.has(h)) {
                            let path = format!("roles.{}.{field}[{i}].hook", key(role));
                            return Some((path, h.clone()));
                        }
                    }
                }
            }
        }
        None
    }

    /// Call hook `call.hook` with `context` (the caller's dict, or built
    /// from the core's context).
    fn run(
        &self,
        py: Python<'_>,
        call: &HookCall<'_>,
        context: Option<&Bound<'_, PyDict>>,
    ) -> HookOutcome {
        let Some(f) = self.get(py, call.hook) else {
            return HookOutcome::Error(format!("hook `{}` is not registered", call.hook));
        };
        let ctx = match context {
            Some(d) => d.copy().ok(),
            None => call.context.and_then(|c| c.entries()).and_then(|e| {
                let d = PyDict::new(py);
                for (k, v) in e {
                    d.set_item(k, to_py(py, v).ok()?).ok()?;
                }
                Some(d)
            }),
        };
        let request = HookRequest::new(py, call, ctx);
        let result = request.and_then(|r| f.bind(py).call1((r,)));
        interpret(py, call.hook, result)
    }
}

/// What a hook returned, as an outcome.
fn interpret(py: Python<'_>, hook: &str, result: PyResult<Bound<'_, PyAny>>) -> HookOutcome {
    let value = match result {
        Ok(v) => v,
        Err(e) => {
            let ty = e
                .get_type(py)
                .name()
                .map_or_else(|_| "Exception".to_string(), |n| n.to_string());
            return HookOutcome::Error(format!("hook `{hook}` raised {ty}: {}", e.value(py)));
        }
    };
    if let Ok(b) = value.cast::<PyBool>() {
        return if b.is_true() {
            HookOutcome::Allow
        } else {
            HookOutcome::Deny(None)
        };
    }
    if let Ok(t) = value.cast::<PyTuple>() {
        if t.len() == 2 {
            if let (Ok(first), Ok(second)) = (t.get_item(0), t.get_item(1)) {
                let reason = if second.is_none() {
                    Some(None)
                } else {
                    second
                        .cast::<PyString>()
                        .ok()
                        .and_then(|s| s.to_str().ok().map(|s| Some(s.to_string())))
                };
                if let (Ok(b), Some(reason)) = (first.cast::<PyBool>(), reason) {
                    return if b.is_true() {
                        HookOutcome::Allow
                    } else {
                        HookOutcome::Deny(reason)
                    };
                }
            }
        }
    }
    let ty = value
        .get_type()
        .name()
        .map_or_else(|_| "?".to_string(), |n| n.to_string());
    if value.hasattr("__await__").unwrap_or(false) {
        // Close it, so Python does not warn that it was never awaited.
        let _ = value.call_method0("close");
        return HookOutcome::Error(format!(
            "hook `{hook}` returned an awaitable ({ty}); the engine calls hooks synchronously"
        ));
    }
    HookOutcome::Error(format!(
        "hook `{hook}` returned {ty}, not a bool or (bool, reason)"
    ))
}

/// A condition value as a Python object.
pub fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::Float(f) => f.into_pyobject(py)?.into_any(),
        Value::Str(s) => PyString::new(py, s).into_any(),
        Value::List(items) => {
            let l = PyList::empty(py);
            for x in items.iter() {
                l.append(to_py(py, x)?)?;
            }
            l.into_any()
        }
        Value::Map(m) => map_to_py(py, m)?.into_any(),
    })
}

fn map_to_py<'py>(py: Python<'py>, m: &Map) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in m.iter() {
        d.set_item(k, to_py(py, v)?)?;
    }
    Ok(d)
}

/// Hooks for a single check: the GIL is held, the caller's context dict is at hand.
pub struct CallHooks<'a, 'py> {
    /// The interpreter.
    pub py: Python<'py>,
    /// The engine's hooks.
    pub registry: &'a Registry,
    /// The request's context.
    pub context: Option<&'a Bound<'py, PyDict>>,
}

impl Hooks for CallHooks<'_, '_> {
    fn call(&self, call: &HookCall<'_>) -> HookOutcome {
        self.registry.run(self.py, call, self.context)
    }
}

/// Hooks for a batch running without the GIL: each call re-attaches.
pub struct BatchHooks<'a> {
    /// The engine's hooks.
    pub registry: &'a Registry,
}

impl Hooks for BatchHooks<'_> {
    fn call(&self, call: &HookCall<'_>) -> HookOutcome {
        Python::attach(|py| self.registry.run(py, call, None))
    }
}

/// What a hook receives: a read-only view of the request.
#[pyclass(frozen, get_all, module = "charter._core")]
pub struct HookRequest {
    /// The hook's name.
    hook: String,
    /// The entry naming it, e.g. `roles.finance.allow[0]`.
    rule: String,
    /// The action.
    action: String,
    /// The resource, or None.
    resource: Option<String>,
    /// The acting agent's id, or None for a principal acting directly.
    agent: Option<String>,
    /// The agent's template, or None.
    template: Option<String>,
    /// The agent's depth in its delegation chain (1 = for a principal directly), or None.
    depth: Option<u32>,
    /// The chain's ids, the subject first, up to the principal.
    chain: Py<PyTuple>,
    /// The principal at the root of the chain, or None.
    principal: Option<String>,
    /// The principal's attributes (a read-only mapping).
    principal_attributes: Py<PyAny>,
    /// The request's context (a read-only mapping; empty if none was given).
    context: Py<PyAny>,
}

impl HookRequest {
    fn new<'py>(
        py: Python<'py>,
        call: &HookCall<'_>,
        context: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, HookRequest>> {
        static PROXY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let proxy = PROXY
            .get_or_try_init(py, || {
                py.import("types")?
                    .getattr("MappingProxyType")
                    .map(Bound::unbind)
            })?
            .bind(py);
        let id = call.identity;
        let attrs = match &id.principal {
            Some(p) => map_to_py(py, &p.attrs)?,
            None => PyDict::new(py),
        };
        let ctx = context.unwrap_or_else(|| PyDict::new(py));
        Bound::new(
            py,
            HookRequest {
                hook: call.hook.to_string(),
                rule: call.rule.to_string(),
                action: call.action.to_string(),
                resource: call.resource.map(str::to_string),
                agent: id.agent.as_ref().map(|a| a.id.clone()),
                template: id.agent.as_ref().map(|a| a.template.clone()),
                depth: id.agent.as_ref().map(|a| a.depth),
                chain: PyTuple::new(py, &id.chain)?.unbind(),
                principal: id.principal_id.clone(),
                principal_attributes: proxy.call1((attrs,))?.unbind(),
                context: proxy.call1((ctx,))?.unbind(),
            },
        )
    }
}

#[pymethods]
impl HookRequest {
    fn __repr__(&self) -> String {
        let opt = |s: &Option<String>| {
            s.as_ref()
                .map_or_else(|| "None".into(), |s| format!("'{s}'"))
        };
        format!(
            "HookRequest(hook='{}', rule='{}', action='{}', resource={}, agent={}, principal={})",
            self.hook,
            self.rule,
            self.action,
            opt(&self.resource),
            opt(&self.agent),
            opt(&self.principal)
        )
    }
}
