//! From a [`PolicySpec`] to a [`CompiledPolicy`]: names become dense ids,
//! wildcards are expanded against the declared actions, `@class` references
//! become pattern ids, inheritance is closed, and every problem is reported
//! with its path in the document.

use super::model::{
    EntrySpec, EntryTable, GuardSpec, OneOrMany, PolicySpec, PrincipalSpec, TemplateSpec,
};
use super::quotas::{compile_breaker, compile_costs, Quota, QuotaId};
use crate::approval::{Approver, Requirement, APPROVAL_KEY};
use crate::bitset::ActionSet;
use crate::cond::{Condition, Map, Value};
use crate::error::{Error, Result};
use crate::pattern::Pattern;
use crate::quota::BreakerConfig;
use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Dense id of a declared action.
pub type ActionId = u32;
/// Dense id of a role (alphabetical order of role names).
pub type RoleId = u32;
/// Dense id of an allow or deny entry.
pub type RuleId = u32;
/// Dense id of a distinct resource pattern.
pub type PatternId = u32;

/// Most actions a policy may declare.
pub const MAX_ACTIONS: usize = 65_536;
/// Default bound on the delegation depth of a template.
pub const DEFAULT_MAX_DELEGATION_DEPTH: u32 = 4;
/// Largest `max_delegation_depth` a template may declare.
pub const MAX_DELEGATION_DEPTH: u32 = 32;

/// Whether an entry grants or forbids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// An allow entry.
    Allow,
    /// A deny entry.
    Deny,
}

/// One compiled allow or deny entry.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Allow or deny.
    pub effect: Effect,
    /// Actions covered (wildcards expanded).
    pub actions: ActionSet,
    /// Resource patterns; `None` = every resource and requests without one.
    pub patterns: Option<Box<[PatternId]>>,
    /// Where the entry is written, e.g. `roles.analyst.deny[0]`.
    pub path: Box<str>,
    /// The role that declares it.
    pub role: RoleId,
    /// Its `when` condition: the entry applies only where it holds (an
    /// allow) or where it holds or cannot be evaluated (a deny).
    pub when: Option<Condition>,
    /// The Python hook consulted when the entry would decide.
    pub hook: Option<Box<str>>,
    /// Its `approval` requirement (allow entries only): while the condition
    /// holds, or cannot be evaluated, the entry grants only with an approval.
    pub approval: Option<Box<Requirement>>,
}

/// One compiled guard: its entry in [`CompiledPolicy::rules`] (path
/// `guards[i]`, actions, patterns, `when` = its `require`) and its reason.
#[derive(Debug, Clone)]
pub struct Guard {
    /// The rule holding its actions, patterns and condition.
    pub rule: RuleId,
    /// What a denial says.
    pub reason: Box<str>,
}

/// One compiled role.
#[derive(Debug, Clone)]
pub struct Role {
    /// Its name.
    pub name: Box<str>,
    /// Itself and every role it inherits, transitively, sorted.
    pub closure: Box<[RoleId]>,
    /// Entries it declares itself (allows then denies, in document order).
    pub rules: Box<[RuleId]>,
}

/// A compiled agent template.
#[derive(Debug, Clone)]
pub struct Template {
    /// Its name.
    pub name: Box<str>,
    /// Direct roles.
    pub roles: Box<[RoleId]>,
    /// Default lifetime.
    pub ttl_ns: Option<u64>,
    /// Longest lifetime a provision may ask for.
    pub max_ttl_ns: Option<u64>,
    /// Deepest chain position.
    pub max_depth: u32,
    /// Quota each agent of the template is charged against.
    pub quota: Option<QuotaId>,
    /// When to suspend an agent of the template automatically.
    pub breaker: Option<BreakerConfig>,
}

/// A compiled principal.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Direct roles.
    pub roles: Box<[RoleId]>,
    /// Attributes as declared.
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// The same attributes as conditions read them (`principal.*`).
    pub attrs: Map,
    /// Quota shared by the principal and everything acting for it.
    pub quota: Option<QuotaId>,
}

/// A validated, compiled policy. Immutable once built.
#[derive(Debug)]
pub struct CompiledPolicy {
    /// Content hash of the canonical document (16 hex digits).
    pub version: Box<str>,
    /// Declared action names by id.
    pub actions: Box<[Box<str>]>,
    action_index: FxHashMap<Box<str>, ActionId>,
    /// Distinct resource patterns by id.
    pub patterns: Box<[Pattern]>,
    /// Resource classes: name -> pattern ids.
    pub classes: BTreeMap<Box<str>, Box<[PatternId]>>,
    /// Roles by id.
    pub roles: Box<[Role]>,
    role_index: FxHashMap<Box<str>, RoleId>,
    /// Entries by id.
    pub rules: Box<[Rule]>,
    /// Templates by name.
    pub templates: FxHashMap<Box<str>, Template>,
    /// Principals declared in the document, by id.
    pub principals: BTreeMap<Box<str>, Principal>,
    /// Quotas by id.
    pub quotas: Box<[Quota]>,
    quota_index: FxHashMap<Box<str>, QuotaId>,
    /// Budget units each action costs.
    pub costs: Box<[u32]>,
    /// Every top-level context key a condition reads, sorted: the only keys
    /// of a request's context worth converting.
    pub context_keys: Box<[Box<str>]>,
    /// Context keys the audit log may show (sorted); the others are hashed.
    pub loggable_context: Box<[Box<str>]>,
    /// Policy-wide guards, in document order.
    pub guards: Box<[Guard]>,
    /// The actions some guard covers.
    pub guarded: ActionSet,
}

impl CompiledPolicy {
    /// Number of declared actions.
    #[inline]
    pub fn action_count(&self) -> usize {
        self.actions.len()
    }

    /// The id of a declared action.
    #[inline]
    pub fn action_id(&self, name: &str) -> Option<ActionId> {
        self.action_index.get(name).copied()
    }

    /// The id of a quota.
    pub fn quota_id(&self, name: &str) -> Option<QuotaId> {
        self.quota_index.get(name).copied()
    }

    /// The id of a role.
    pub fn role_id(&self, name: &str) -> Option<RoleId> {
        self.role_index.get(name).copied()
    }

    /// Compile a principal's role list (for runtime upserts), naming problems at `path`.
    pub fn compile_principal(&self, spec: &PrincipalSpec, path: &str) -> Result<Principal> {
        Ok(Principal {
            roles: self.role_refs(&spec.roles, &format!("{path}.roles"))?,
            attributes: spec.attributes.clone(),
            attrs: attrs_map(&spec.attributes),
            quota: self.quota_ref(&spec.quota, &format!("{path}.quota"))?,
        })
    }

    fn role_refs(&self, names: &[String], path: &str) -> Result<Box<[RoleId]>> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                self.role_id(n).ok_or_else(|| {
                    Error::policy(format!("{path}[{i}]"), format!("unknown role `{n}`"))
                })
            })
            .collect()
    }

    /// Compile and validate `spec`.
    pub fn compile(spec: &PolicySpec) -> Result<CompiledPolicy> {
        let version = content_version(spec);
        let (actions, action_index) = compile_actions(&spec.actions)?;
        let (patterns, classes) = compile_classes(&spec.resources)?;
        let mut c = CompiledPolicy {
            version,
            actions,
            action_index,
            patterns: Box::new([]),
            classes: BTreeMap::new(),
            roles: Box::new([]),
            role_index: FxHashMap::default(),
            rules: Box::new([]),
            templates: FxHashMap::default(),
            principals: BTreeMap::new(),
            quotas: Box::new([]),
            quota_index: FxHashMap::default(),
            costs: Box::new([]),
            context_keys: Box::new([]),
            loggable_context: Box::new([]),
            guards: Box::new([]),
            guarded: ActionSet::empty(0),
        };
        c.costs = compile_costs(&c, &spec.costs)?;
        if spec.quotas.len() > usize::from(QuotaId::MAX) {
            return Err(Error::policy("quotas", "too many quotas"));
        }
        let mut quotas = Vec::new();
        for (name, q) in &spec.quotas {
            quotas.push(c.compile_quota(name, q, &format!("quotas.{}", key(name)))?);
            c.quota_index
                .insert(name.as_str().into(), (quotas.len() - 1) as QuotaId);
        }
        c.quotas = quotas.into_boxed_slice();
        let mut builder = PatternBuilder { patterns, classes };

        c.role_index = spec
            .roles
            .keys()
            .enumerate()
            .map(|(i, n)| (n.as_str().into(), i as RoleId))
            .collect();

        let mut rules = Vec::new();
        let mut roles = Vec::with_capacity(spec.roles.len());
        for (rid, (name, role)) in spec.roles.iter().enumerate() {
            let base = format!("roles.{}", key(name));
            let mut own = Vec::new();
            for (effect, list, field) in [
                (Effect::Allow, &role.allow, "allow"),
                (Effect::Deny, &role.deny, "deny"),
            ] {
                for (i, entry) in list.iter().enumerate() {
                    let path = format!("{base}.{field}[{i}]");
                    let rule = c.compile_entry(
                        entry,
                        (effect, rid as RoleId, &path),
                        &spec.principals,
                        &mut builder,
                    )?;
                    own.push(rules.len() as RuleId);
                    rules.push(rule);
                }
            }
            roles.push(Role {
                name: name.as_str().into(),
                closure: Box::new([]),
                rules: own.into_boxed_slice(),
            });
        }
        let inherits: Vec<Vec<RoleId>> = spec
            .roles
            .iter()
            .map(|(name, role)| {
                c.role_refs(&role.inherits, &format!("roles.{}.inherits", key(name)))
                    .map(|v| v.into_vec())
            })
            .collect::<Result<_>>()?;
        let closures = close_inheritance(&roles, &inherits)?;
        for (role, closure) in roles.iter_mut().zip(closures) {
            role.closure = closure;
        }
        c.roles = roles.into_boxed_slice();
        let mut guards = Vec::new();
        c.guarded = ActionSet::empty(c.action_count());
        for (i, g) in spec.guards.iter().enumerate() {
            let path = format!("guards[{i}]");
            let rule = c.compile_guard(g, &path, &mut builder)?;
            c.guarded.union_with(&rule.actions);
            let reason = g
                .reason
                .clone()
                .unwrap_or_else(|| format!("guard `{path}` requires `{}`", g.require));
            guards.push(Guard {
                rule: rules.len() as RuleId,
                reason: reason.into(),
            });
            rules.push(rule);
        }
        c.guards = guards.into_boxed_slice();
        let mut keys: Vec<Box<str>> = rules
            .iter()
            .flat_map(|r: &Rule| r.when.iter().chain(r.approval.iter().map(|a| &a.condition)))
            .flat_map(|w| w.context_keys().iter().cloned())
            .collect();
        // The grant an approval entry waits for comes in `context.approval`.
        if rules.iter().any(|r| r.approval.is_some()) {
            keys.push(APPROVAL_KEY.into());
        }
        keys.sort();
        keys.dedup();
        c.context_keys = keys.into_boxed_slice();
        let mut loggable: Vec<Box<str>> = spec
            .audit
            .iter()
            .flat_map(|a| a.loggable_context.iter().map(|k| k.as_str().into()))
            .collect();
        loggable.sort();
        loggable.dedup();
        c.loggable_context = loggable.into_boxed_slice();
        c.rules = rules.into_boxed_slice();

        for (name, t) in &spec.templates {
            let path = format!("templates.{}", key(name));
            let tmpl = c.compile_template(name, t, &path)?;
            c.templates.insert(name.as_str().into(), tmpl);
        }
        for (id, p) in &spec.principals {
            validate_principal_id(id, &format!("principals.{}", key(id)))?;
            let principal = c.compile_principal(p, &format!("principals.{}", key(id)))?;
            c.principals.insert(id.as_str().into(), principal);
        }
        c.patterns = builder.patterns.into_boxed_slice();
        c.classes = builder.classes;
        Ok(c)
    }

    /// A guard as a deny-like rule that belongs to no role.
    fn compile_guard(
        &self,
        g: &GuardSpec,
        path: &str,
        patterns: &mut PatternBuilder,
    ) -> Result<Rule> {
        let mut actions = ActionSet::empty(self.action_count());
        match &g.actions {
            None => actions = ActionSet::full(self.action_count()),
            Some(list) if list.is_empty() => return Err(Error::policy(
                format!("{path}.actions"),
                "`actions` is empty, so the guard covers nothing; omit it to cover every action",
            )),
            Some(list) => {
                for (i, a) in list.iter().enumerate() {
                    self.expand_action(a, &format!("{path}.actions[{i}]"), &mut actions)?;
                }
            }
        }
        let on = patterns.resolve_on(g.on.as_deref(), path, "the guard covers nothing")?;
        let require = Condition::compile(&g.require, &format!("{path}.require"))?;
        Ok(Rule {
            effect: Effect::Deny,
            actions,
            patterns: on,
            path: path.into(),
            role: RoleId::MAX,
            when: Some(require),
            hook: None,
            approval: None,
        })
    }

    fn compile_entry(
        &self,
        entry: &EntrySpec,
        (effect, role, path): (Effect, RoleId, &str),
        principals: &BTreeMap<String, PrincipalSpec>,
        patterns: &mut PatternBuilder,
    ) -> Result<Rule> {
        let mut when = None;
        let mut hook = None;
        let mut approval = None;
        let (action, on) = match entry {
            EntrySpec::Action(a) => (OneOrMany::One(a.clone()), None),
            EntrySpec::Table(t) => {
                if let Some(src) = &t.when {
                    let wpath = format!("{path}.when");
                    let c = Condition::compile(src, &wpath)?;
                    // `when = "true"` is no condition at all.
                    when = (c.constant() != Some(true)).then_some(c);
                }
                if let Some(name) = &t.hook {
                    if name.is_empty() {
                        return Err(Error::policy(
                            format!("{path}.hook"),
                            "a hook name is empty",
                        ));
                    }
                    hook = Some(name.as_str().into());
                }
                approval = self.compile_approval(t, effect, path, principals)?;
                (t.action.clone(), t.on.as_ref())
            }
        };
        let mut actions = ActionSet::empty(self.action_count());
        let list = action.as_vec();
        if list.is_empty() {
            return Err(Error::policy(
                format!("{path}.action"),
                "an entry needs at least one action",
            ));
        }
        for (i, a) in list.iter().enumerate() {
            let apath = match (entry, &action) {
                (EntrySpec::Action(_), _) => path.to_string(),
                (_, OneOrMany::One(_)) => format!("{path}.action"),
                (_, OneOrMany::Many(_)) => format!("{path}.action[{i}]"),
            };
            self.expand_action(a, &apath, &mut actions)?;
        }
        let patterns =
            patterns.resolve_on(on.map(Vec::as_slice), path, "the entry matches nothing")?;
        Ok(Rule {
            effect,
            actions,
            patterns,
            path: path.into(),
            role,
            when,
            hook,
            approval,
        })
    }

    /// An entry's `approval` and `approvers`: allow entries only, both or
    /// neither; approvers name roles or the document's principals.
    fn compile_approval(
        &self,
        t: &EntryTable,
        effect: Effect,
        path: &str,
        principals: &BTreeMap<String, PrincipalSpec>,
    ) -> Result<Option<Box<Requirement>>> {
        let (src, names) = match (&t.approval, &t.approvers) {
            (None, None) => return Ok(None),
            (None, Some(_)) => {
                return Err(Error::policy(
                    format!("{path}.approvers"),
                    "`approvers` without `approval`: add `approval = \"<condition>\"` \
                     (when approval is needed) or remove `approvers`",
                ))
            }
            (Some(_), _) if effect == Effect::Deny => {
                return Err(Error::policy(
                    format!("{path}.approval"),
                    "`approval` is not supported on deny entries: only an allow can wait for approval",
                ))
            }
            (Some(_), None) => {
                return Err(Error::policy(
                    format!("{path}.approvers"),
                    "an entry with `approval` needs `approvers`: the roles or principals who may approve",
                ))
            }
            (Some(src), Some(names)) => (src, names),
        };
        if names.is_empty() {
            return Err(Error::policy(
                format!("{path}.approvers"),
                "`approvers` is empty: name at least one role or principal",
            ));
        }
        let condition = Condition::compile(src, &format!("{path}.approval"))?;
        let mut approvers: Vec<Approver> = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let ipath = format!("{path}.approvers[{i}]");
            let approver = match (self.role_id(name).is_some(), principals.contains_key(name)) {
                (true, false) => Approver::Role(name.as_str().into()),
                (false, true) => Approver::Principal(name.as_str().into()),
                (true, true) => {
                    return Err(Error::policy(
                        ipath,
                        format!("`{name}` is both a role and a principal: rename one of them"),
                    ))
                }
                (false, false) => {
                    return Err(Error::policy(
                        ipath,
                        format!(
                            "unknown role or principal `{name}` (approvers name roles or \
                             principals of this policy)"
                        ),
                    ))
                }
            };
            if !approvers.contains(&approver) {
                approvers.push(approver);
            }
        }
        // `approval = "false"` never asks for approval: no requirement at all.
        if condition.constant() == Some(false) {
            return Ok(None);
        }
        Ok(Some(Box::new(Requirement {
            condition,
            approvers: approvers.into_boxed_slice(),
        })))
    }

    /// The actions a scope (action names and patterns, as in grants)
    /// covers under this policy. Patterns that no longer match anything
    /// (after a reload) are skipped: a scope can only narrow.
    pub fn expand_scope(&self, patterns: &[Box<str>]) -> ActionSet {
        let mut set = ActionSet::empty(self.action_count());
        for p in patterns {
            let _ = self.expand_action(p, "scope", &mut set);
        }
        set
    }

    /// Check a scope given at provision time: every pattern valid and matching
    /// a declared action.
    pub fn check_scope(&self, patterns: &[&str]) -> Result<ActionSet> {
        let mut set = ActionSet::empty(self.action_count());
        for (i, p) in patterns.iter().enumerate() {
            self.expand_action(p, &format!("scope[{i}]"), &mut set)?;
        }
        Ok(set)
    }

    pub(super) fn expand_action_at(
        &self,
        pat: &str,
        path: &str,
        into: &mut ActionSet,
    ) -> Result<()> {
        self.expand_action(pat, path, into)
    }

    fn expand_action(&self, pat: &str, path: &str, into: &mut ActionSet) -> Result<()> {
        if pat == "*" {
            into.union_with(&ActionSet::full(self.action_count()));
            return Ok(());
        }
        if let Some(tool) = pat.strip_suffix(":*") {
            if !is_name(tool) {
                return Err(Error::policy(
                    path,
                    format!("`{pat}` is not a valid action pattern (`tool:verb`, `tool:*` or `*`)"),
                ));
            }
            let before = into.clone();
            for (id, name) in self.actions.iter().enumerate() {
                if name.split_once(':').is_some_and(|(t, _)| t == tool) {
                    into.insert(id as ActionId);
                }
            }
            if *into == before
                && !self
                    .actions
                    .iter()
                    .any(|n| n.starts_with(&format!("{tool}:")))
            {
                return Err(Error::policy(
                    path,
                    format!("`{pat}` matches no declared action"),
                ));
            }
            return Ok(());
        }
        match self.action_id(pat) {
            Some(id) => {
                into.insert(id);
                Ok(())
            }
            None if pat.contains('*') => Err(Error::policy(
                path,
                format!("`{pat}` is not a valid action pattern (`tool:verb`, `tool:*` or `*`)"),
            )),
            None => Err(Error::policy(
                path,
                format!("unknown action `{pat}` (declare it in `actions`)"),
            )),
        }
    }

    fn compile_template(&self, name: &str, t: &TemplateSpec, path: &str) -> Result<Template> {
        let ttl_ns = t
            .ttl
            .map(|s| seconds_to_ns(s, &format!("{path}.ttl")))
            .transpose()?;
        let max_ttl_ns = t
            .max_ttl
            .map(|s| seconds_to_ns(s, &format!("{path}.max_ttl")))
            .transpose()?;
        if let (Some(ttl), Some(max)) = (ttl_ns, max_ttl_ns) {
            if ttl > max {
                return Err(Error::policy(
                    format!("{path}.ttl"),
                    "`ttl` is longer than `max_ttl`",
                ));
            }
        }
        let max_depth = t
            .max_delegation_depth
            .unwrap_or(DEFAULT_MAX_DELEGATION_DEPTH);
        if !(1..=MAX_DELEGATION_DEPTH).contains(&max_depth) {
            return Err(Error::policy(
                format!("{path}.max_delegation_depth"),
                format!("must be between 1 and {MAX_DELEGATION_DEPTH}, found {max_depth}"),
            ));
        }
        Ok(Template {
            name: name.into(),
            roles: self.role_refs(&t.roles, &format!("{path}.roles"))?,
            ttl_ns,
            max_ttl_ns,
            max_depth,
            quota: self.quota_ref(&t.quota, &format!("{path}.quota"))?,
            breaker: t
                .breaker
                .as_ref()
                .map(|b| compile_breaker(b, &format!("{path}.breaker")))
                .transpose()?,
        })
    }
}

/// Patterns deduplicated across the document, plus the classes naming them.
struct PatternBuilder {
    patterns: Vec<Pattern>,
    classes: BTreeMap<Box<str>, Box<[PatternId]>>,
}

impl PatternBuilder {
    fn intern(&mut self, p: Pattern) -> PatternId {
        match self.patterns.iter().position(|q| *q == p) {
            Some(i) => i as PatternId,
            None => {
                self.patterns.push(p);
                (self.patterns.len() - 1) as PatternId
            }
        }
    }

    /// An entry's or guard's `on` at `path`: `None` (every resource), or
    /// the sorted, deduplicated pattern ids; an empty list is an error,
    /// since it would match nothing (`nothing` says what that means).
    fn resolve_on(
        &mut self,
        on: Option<&[String]>,
        path: &str,
        nothing: &str,
    ) -> Result<Option<Box<[PatternId]>>> {
        let Some(list) = on else { return Ok(None) };
        if list.is_empty() {
            return Err(Error::policy(
                format!("{path}.on"),
                format!("`on` is empty, so {nothing}; omit `on` to cover every resource"),
            ));
        }
        let mut ids = Vec::new();
        for (i, p) in list.iter().enumerate() {
            self.resolve(p, &format!("{path}.on[{i}]"), &mut ids)?;
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(Some(ids.into_boxed_slice()))
    }

    fn resolve(&mut self, text: &str, path: &str, into: &mut Vec<PatternId>) -> Result<()> {
        if let Some(class) = text.strip_prefix('@') {
            match self.classes.get(class) {
                Some(ids) => into.extend_from_slice(ids),
                None => {
                    return Err(Error::policy(
                        path,
                        format!("unknown resource class `@{class}`"),
                    ))
                }
            }
        } else {
            let p = Pattern::parse(text, path)?;
            into.push(self.intern(p));
        }
        Ok(())
    }
}

type Classes = BTreeMap<Box<str>, Box<[PatternId]>>;
type ActionTable = (Box<[Box<str>]>, FxHashMap<Box<str>, ActionId>);

fn compile_classes(spec: &BTreeMap<String, Vec<String>>) -> Result<(Vec<Pattern>, Classes)> {
    let mut b = PatternBuilder {
        patterns: Vec::new(),
        classes: BTreeMap::new(),
    };
    for (name, list) in spec {
        let path = format!("resources.{}", key(name));
        if !is_name(name) {
            return Err(Error::policy(
                &path,
                format!("`{name}` is not a valid class name (letters, digits, `_`, `-`, `.`)"),
            ));
        }
        if list.is_empty() {
            return Err(Error::policy(
                &path,
                "a resource class needs at least one pattern",
            ));
        }
        let mut ids = Vec::new();
        for (i, p) in list.iter().enumerate() {
            let ipath = format!("{path}[{i}]");
            if p.starts_with('@') {
                return Err(Error::policy(
                    ipath,
                    "a class lists patterns, not other classes",
                ));
            }
            let pat = Pattern::parse(p, &ipath)?;
            ids.push(b.intern(pat));
        }
        ids.sort_unstable();
        ids.dedup();
        b.classes
            .insert(name.as_str().into(), ids.into_boxed_slice());
    }
    Ok((b.patterns, b.classes))
}

fn compile_actions(list: &[String]) -> Result<ActionTable> {
    if list.len() > MAX_ACTIONS {
        return Err(Error::policy(
            "actions",
            format!(
                "at most {MAX_ACTIONS} actions may be declared, found {}",
                list.len()
            ),
        ));
    }
    let mut index = FxHashMap::default();
    for (i, a) in list.iter().enumerate() {
        let path = format!("actions[{i}]");
        match a.split_once(':') {
            Some((tool, verb)) if is_name(tool) && is_name(verb) => {}
            _ => {
                return Err(Error::policy(
                    path,
                    format!("`{a}` is not a valid action name: write `tool:verb` with letters, digits, `_`, `-` or `.`"),
                ))
            }
        }
        if index.insert(a.as_str().into(), i as ActionId).is_some() {
            return Err(Error::policy(
                path,
                format!("action `{a}` is declared twice"),
            ));
        }
    }
    Ok((list.iter().map(|a| a.as_str().into()).collect(), index))
}

/// Close each role under `inherits`; a cycle is an error naming it.
fn close_inheritance(roles: &[Role], inherits: &[Vec<RoleId>]) -> Result<Vec<Box<[RoleId]>>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let n = roles.len();
    let mut mark = vec![Mark::New; n];
    let mut closure: Vec<Vec<RoleId>> = vec![Vec::new(); n];
    // Iterative DFS; `stack` holds (role, next child index).
    for root in 0..n {
        if mark[root] != Mark::New {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = Mark::Active;
        while let Some(&mut (r, ref mut next)) = stack.last_mut() {
            let children = &inherits[r];
            if *next < children.len() {
                let child = children[*next] as usize;
                *next += 1;
                match mark[child] {
                    Mark::New => {
                        mark[child] = Mark::Active;
                        stack.push((child, 0));
                    }
                    Mark::Active => {
                        let start = stack.iter().position(|(x, _)| *x == child).unwrap_or(0);
                        let mut names: Vec<&str> = stack[start..]
                            .iter()
                            .map(|(x, _)| &*roles[*x].name)
                            .collect();
                        names.push(&roles[child].name);
                        let idx = inherits[r]
                            .iter()
                            .position(|c| *c as usize == child)
                            .unwrap_or(0);
                        return Err(Error::policy(
                            format!("roles.{}.inherits[{idx}]", key(&roles[r].name)),
                            format!("inheritance cycle `{}`", names.join(" -> ")),
                        ));
                    }
                    Mark::Done => {}
                }
            } else {
                let mut set: Vec<RoleId> = vec![r as RoleId];
                for c in children {
                    set.extend_from_slice(&closure[*c as usize]);
                }
                set.sort_unstable();
                set.dedup();
                closure[r] = set;
                mark[r] = Mark::Done;
                stack.pop();
            }
        }
    }
    Ok(closure.into_iter().map(Vec::into_boxed_slice).collect())
}

fn content_version(spec: &PolicySpec) -> Box<str> {
    // Maps are BTreeMaps and struct fields serialise in declaration order, so
    // equal documents hash equally whatever their key order on disk.
    let bytes = serde_json::to_vec(spec).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    digest
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into()
}

fn seconds_to_ns(s: f64, path: &str) -> Result<u64> {
    if !(s.is_finite() && s > 0.0 && s <= 10.0 * 365.0 * 86_400.0) {
        return Err(Error::policy(
            path,
            format!("a duration must be positive and at most 10 years, found {s}"),
        ));
    }
    Ok((s * 1e9) as u64)
}

/// Principal ids: non-empty, printable, no whitespace, bounded.
pub fn validate_principal_id(id: &str, path: &str) -> Result<()> {
    if id.is_empty() || id.len() > 256 || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::policy(
            path,
            format!("`{id}` is not a valid principal id (1-256 printable characters, no spaces)"),
        ));
    }
    Ok(())
}

/// Principal attributes as conditions read them.
fn attrs_map(a: &serde_json::Map<String, serde_json::Value>) -> Map {
    Map::new(a.iter().map(|(k, v)| (k.as_str(), Value::from_json(v))))
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A map key as it appears in a path: bare when it is a TOML bare key, quoted otherwise.
pub fn key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    {
        k.to_string()
    } else {
        format!("{k:?}")
    }
}
