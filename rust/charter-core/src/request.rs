//! One request's attributes as conditions read them: the caller's context,
//! the resource, the acting agent and its principal, and the clock. Each is
//! computed only if a condition actually reads it.

use crate::cond::{AgentView, Env, Map, Value};
use crate::pattern::split_resource;
use crate::policy::{CompiledPolicy, Principal};
use std::cell::OnceCell;
use std::sync::Arc;

/// The caller's context (`context.*`): implemented by the Python glue over a
/// dict, and by [`Map`] for Rust callers.
pub trait Context {
    /// A top-level key, or `None` if absent (or not convertible). `wanted`
    /// lists every key some condition of the policy reads, so a lazy
    /// implementation can convert them all on the first call.
    fn lookup(&self, key: &str, wanted: &[Box<str>]) -> Option<&Value>;

    /// Every key and value, for a hook's view of the context (`None` when
    /// the caller holds the context itself and hands it to hooks directly).
    fn entries(&self) -> Option<Vec<(&str, &Value)>> {
        None
    }
}

impl Context for Map {
    fn lookup(&self, key: &str, _: &[Box<str>]) -> Option<&Value> {
        self.get(key)
    }
    fn entries(&self) -> Option<Vec<(&str, &Value)>> {
        Some(self.iter().collect())
    }
}

/// The acting agent, owned (copied out of the registry once per request).
#[derive(Debug, Clone, Default)]
pub struct AgentFacts {
    /// `agent.id`.
    pub id: String,
    /// `agent.template`.
    pub template: String,
    /// `agent.depth`.
    pub depth: u32,
    /// `agent.delegator`.
    pub delegator: Option<String>,
    /// Creation time, Unix ns.
    pub created_at_ns: u64,
}

/// Who is asking, as conditions and hooks see it.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// The agent, if the subject is one.
    pub agent: Option<AgentFacts>,
    /// The delegation chain's ids, the subject first, up to the principal.
    pub chain: Vec<String>,
    /// The principal at the root of the chain.
    pub principal_id: Option<String>,
    /// That principal, as the snapshot knows it.
    pub principal: Option<Arc<Principal>>,
}

/// One call of a policy hook: what the hook may read about the request.
#[derive(Clone, Copy)]
pub struct HookCall<'a> {
    /// The hook's registered name.
    pub hook: &'a str,
    /// The entry naming it (`roles.x.allow[0]`).
    pub rule: &'a str,
    /// The action's name.
    pub action: &'a str,
    /// The resource, if any.
    pub resource: Option<&'a str>,
    /// Who asks.
    pub identity: &'a Identity,
    /// The caller's context.
    pub context: Option<&'a dyn Context>,
}

/// What a hook said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    /// It returned true.
    Allow,
    /// It returned false, with its reason if it gave one.
    Deny(Option<String>),
    /// It raised, returned something that is not a bool, or is not registered.
    Error(String),
}

/// Runs hooks: implemented by the Python glue (which calls back into the
/// interpreter). No engine lock is held during a call.
pub trait Hooks {
    /// Run `call.hook`.
    fn call(&self, call: &HookCall<'_>) -> HookOutcome;
}

/// What decisions read about a request: its attributes (for conditions)
/// and its hooks.
pub trait Request: Env {
    /// The same request as a condition env.
    fn env(&self) -> &dyn Env;
    /// Run the hook named by entry `rule` for action `action`.
    fn run_hook(&self, hook: &str, rule: &str, action: &str) -> HookOutcome;
    /// Whether the decision's detail is wanted (a batch drops it: no
    /// message is formatted for each refused request).
    fn wants_detail(&self) -> bool {
        true
    }
}

/// An [`Env`] over one request. The identity and the resource classes are
/// looked up on first use.
pub struct RequestEnv<'a> {
    hooks: Option<&'a dyn Hooks>,
    detail: bool,
    context: Option<&'a dyn Context>,
    resource: Option<&'a str>,
    policy: &'a CompiledPolicy,
    classes: OnceCell<Vec<&'a str>>,
    identity: OnceCell<Identity>,
    who: &'a dyn Fn() -> Identity,
    now_ns: u64,
}

impl<'a> RequestEnv<'a> {
    /// The env of a request for `resource` (validated) with `context`;
    /// `who` fetches the identity if a condition reads it.
    pub fn new(
        policy: &'a CompiledPolicy,
        context: Option<&'a dyn Context>,
        resource: Option<&'a str>,
        who: &'a dyn Fn() -> Identity,
        now_ns: u64,
    ) -> RequestEnv<'a> {
        RequestEnv {
            hooks: None,
            detail: true,
            context,
            resource,
            policy,
            classes: OnceCell::new(),
            identity: OnceCell::new(),
            who,
            now_ns,
        }
    }

    /// With `hooks` to run the policy's hooks.
    pub fn with_hooks(mut self, hooks: Option<&'a dyn Hooks>) -> RequestEnv<'a> {
        self.hooks = hooks;
        self
    }

    /// Without the decision's detail (batches).
    pub fn without_detail(mut self) -> RequestEnv<'a> {
        self.detail = false;
        self
    }

    /// The resource name, if any.
    pub fn resource(&self) -> Option<&'a str> {
        self.resource
    }

    /// The caller's context, if any.
    pub fn context_source(&self) -> Option<&'a dyn Context> {
        self.context
    }

    /// The identity (fetched now if not yet).
    pub fn identity(&self) -> &Identity {
        self.identity.get_or_init(|| (self.who)())
    }

    /// The names of the classes whose patterns match the resource.
    pub fn classes(&self) -> &[&'a str] {
        self.classes.get_or_init(|| {
            let Some(name) = self.resource else {
                return Vec::new();
            };
            let segs = split_resource(name);
            self.policy
                .classes
                .iter()
                .filter(|(_, ps)| {
                    ps.iter().any(|p| {
                        self.policy
                            .patterns
                            .get(*p as usize)
                            .is_some_and(|p| p.matches(&segs))
                    })
                })
                .map(|(n, _)| &**n)
                .collect()
        })
    }
}

impl Request for RequestEnv<'_> {
    fn env(&self) -> &dyn Env {
        self
    }
    fn wants_detail(&self) -> bool {
        self.detail
    }
    fn run_hook(&self, hook: &str, rule: &str, action: &str) -> HookOutcome {
        let Some(hooks) = self.hooks else {
            return HookOutcome::Error(format!("hook `{hook}` cannot run: no hooks were given"));
        };
        hooks.call(&HookCall {
            hook,
            rule,
            action,
            resource: self.resource,
            identity: self.identity(),
            context: self.context,
        })
    }
}

impl Env for RequestEnv<'_> {
    fn context(&self, key: &str) -> Option<&Value> {
        self.context?.lookup(key, &self.policy.context_keys)
    }
    fn resource_name(&self) -> Option<&str> {
        self.resource
    }
    fn resource_classes(&self) -> &[&str] {
        self.classes()
    }
    fn agent(&self) -> Option<AgentView<'_>> {
        self.identity().agent.as_ref().map(|a| AgentView {
            id: &a.id,
            template: &a.template,
            depth: a.depth,
            delegator: a.delegator.as_deref(),
            created_at_ns: a.created_at_ns,
        })
    }
    fn principal_id(&self) -> Option<&str> {
        self.identity().principal_id.as_deref()
    }
    fn principal_attribute(&self, key: &str) -> Option<&Value> {
        self.identity().principal.as_ref()?.attrs.get(key)
    }
    fn now_ns(&self) -> u64 {
        self.now_ns
    }
}

/// A batch's context as columns: per key, one value per request (`None`
/// where the value is absent or could not be converted).
#[derive(Debug, Clone, Default)]
pub struct Columns {
    keys: Box<[Box<str>]>,
    cols: Box<[Column]>,
}

/// One column of a batch's context.
#[derive(Debug, Clone)]
pub enum Column {
    /// A value per request.
    Plain(Box<[Option<Value>]>),
    /// Distinct values, and per request the index of its value: a column of
    /// a few repeated strings costs no allocation per request.
    Coded {
        /// The distinct values.
        values: Box<[Option<Value>]>,
        /// Per request, an index into `values`.
        codes: Box<[u32]>,
    },
}

impl Column {
    fn len(&self) -> usize {
        match self {
            Column::Plain(v) => v.len(),
            Column::Coded { codes, .. } => codes.len(),
        }
    }

    fn get(&self, i: usize) -> Option<&Value> {
        match self {
            Column::Plain(v) => v.get(i)?.as_ref(),
            Column::Coded { values, codes } => values.get(*codes.get(i)? as usize)?.as_ref(),
        }
    }
}

impl Columns {
    /// Columns from `(key, values)` pairs.
    pub fn new(cols: Vec<(Box<str>, Vec<Option<Value>>)>) -> Columns {
        Columns::from_columns(
            cols.into_iter()
                .map(|(k, v)| (k, Column::Plain(v.into_boxed_slice())))
                .collect(),
        )
    }

    /// Columns from `(key, column)` pairs.
    pub fn from_columns(cols: Vec<(Box<str>, Column)>) -> Columns {
        let (keys, cols): (Vec<_>, Vec<_>) = cols.into_iter().unzip();
        Columns {
            keys: keys.into_boxed_slice(),
            cols: cols.into_boxed_slice(),
        }
    }

    /// Whether every column has `n` values.
    pub fn has_rows(&self, n: usize) -> bool {
        self.cols.iter().all(|c| c.len() == n)
    }

    /// Request `i`'s context.
    pub fn row(&self, i: usize) -> Row<'_> {
        Row { cols: self, i }
    }
}

/// One request's context in a [`Columns`] batch.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    cols: &'a Columns,
    i: usize,
}

impl Context for Row<'_> {
    fn lookup(&self, key: &str, _: &[Box<str>]) -> Option<&Value> {
        let c = self.cols.keys.iter().position(|k| **k == *key)?;
        self.cols.cols.get(c)?.get(self.i)
    }
    fn entries(&self) -> Option<Vec<(&str, &Value)>> {
        Some(
            self.cols
                .keys
                .iter()
                .zip(self.cols.cols.iter())
                .filter_map(|(k, col)| Some((&**k, col.get(self.i)?)))
                .collect(),
        )
    }
}
