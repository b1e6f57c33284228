//! Conditions: the `when` expressions of policy entries
//! (`context.amount <= 500 and context.currency == "EUR"`), compiled once at
//! load time and evaluated per request without allocating.
//!
//! The language and its runtime semantics are documented for operators in
//! `docs/conditions.md`. In short: [`Condition::compile`] parses, resolves
//! attribute roots, checks types where they are known and folds constants;
//! [`Condition::evaluate`] reads attributes from an [`Env`] and yields an
//! [`Outcome`]. An [`Outcome::Error`] (a missing attribute, a type mismatch)
//! is never a pass: the caller treats it as "not granted" for an allow entry
//! and as "denied" for a deny entry.
//!
//! Layout: `parse` (source to syntax tree), `check` (types, folding,
//! lowering to the arena), `eval` (the walk), `value` (the data).

mod check;
mod eval;
mod parse;
mod value;

use std::fmt;

use crate::error::{Error, Result};

pub use value::{Map, Value};

/// A compiled condition: a compact arena of nodes with its constants
/// interned, plus the attribute paths it reads.
#[derive(Debug, Clone)]
pub struct Condition {
    program: check::Program,
    constant: Option<bool>,
    context_keys: Box<[Box<str>]>,
    paths: Box<[Box<str>]>,
}

impl Condition {
    /// Compile `src` written at `path` in the policy (e.g.
    /// `roles.finance.allow[0].when`). Syntax errors, unknown attributes and
    /// static type errors are [`Error::Policy`] at `path`, with a message that
    /// starts with `line:column`.
    pub fn compile(src: &str, path: &str) -> Result<Condition> {
        let ast = parse::parse(src).map_err(|e| {
            let (line, col) = parse::line_col(src, e.at);
            Error::policy(path, format!("{line}:{col}: {}", e.message))
        })?;
        let program = check::lower(src, &ast, path)?;
        let constant = match (
            program.nodes.get(program.root as usize),
            program.consts.as_slice(),
        ) {
            (Some(check::Node::Const(c)), consts) => match consts.get(*c as usize) {
                Some(Value::Bool(b)) => Some(*b),
                _ => None,
            },
            _ => None,
        };
        // Only live nodes read attributes: folding truncates what it drops.
        let mut paths: Vec<&check::AttrSpec> = program
            .nodes
            .iter()
            .filter_map(|n| match n {
                check::Node::Attr(a) | check::Node::Has(a) => program.attrs.get(*a as usize),
                _ => None,
            })
            .collect();
        paths.sort_by(|a, b| a.display.cmp(&b.display));
        paths.dedup_by(|a, b| a.display == b.display);
        let mut context_keys: Vec<Box<str>> = paths
            .iter()
            .filter(|a| a.root == parse::Root::Context)
            .filter_map(|a| a.keys.first().cloned())
            .collect();
        context_keys.sort();
        context_keys.dedup();
        let paths = paths.iter().map(|a| a.display.clone()).collect();
        Ok(Condition {
            program,
            constant,
            context_keys: context_keys.into_boxed_slice(),
            paths,
        })
    }

    /// Evaluate against one request's attributes. Allocates only to build an
    /// [`Outcome::Error`].
    #[inline]
    pub fn evaluate(&self, env: &dyn Env) -> Outcome {
        match self.constant {
            Some(true) => Outcome::True,
            Some(false) => Outcome::False,
            None => self.program.run(env),
        }
    }

    /// The condition as written in the policy.
    pub fn source(&self) -> &str {
        &self.program.src
    }

    /// `Some(b)` if the expression folded to a constant (it reads no
    /// attribute, or short-circuits before reading any): the condition is
    /// always `b`.
    pub fn constant(&self) -> Option<bool> {
        self.constant
    }

    /// Top-level context keys read (`context.ticket.id` -> `ticket`), sorted,
    /// deduplicated: the only keys of a request's context worth converting.
    pub fn context_keys(&self) -> &[Box<str>] {
        &self.context_keys
    }

    /// Every attribute path read, sorted, deduplicated (`agent.depth`,
    /// `context.amount`, `context["x-y"]`), for explain and audit.
    pub fn paths(&self) -> &[Box<str>] {
        &self.paths
    }

    /// Whether the condition reads `path` (as spelled by [`Condition::paths`]),
    /// e.g. `resource.class`, to skip computing attributes nobody reads.
    pub fn reads(&self, path: &str) -> bool {
        self.paths.binary_search_by(|p| (**p).cmp(path)).is_ok()
    }

    #[cfg(test)]
    pub(crate) fn program(&self) -> &check::Program {
        &self.program
    }
}

/// Two conditions are equal when their sources are (compilation is deterministic).
impl PartialEq for Condition {
    fn eq(&self, other: &Self) -> bool {
        self.source() == other.source()
    }
}

/// The attributes of one request, as a condition reads them. Implementations
/// should be cheap views over data the caller already holds.
pub trait Env {
    /// A top-level context key; nested keys are read from [`Value::Map`]s.
    fn context(&self, key: &str) -> Option<&Value>;
    /// The resource name, if the request names one.
    fn resource_name(&self) -> Option<&str>;
    /// The names of the resource classes the resource matches (read only
    /// when the request names a resource and the condition reads `resource.class`).
    fn resource_classes(&self) -> &[&str];
    /// The acting agent, if the subject is an agent.
    fn agent(&self) -> Option<AgentView<'_>>;
    /// The principal at the root of the chain, if any.
    fn principal_id(&self) -> Option<&str>;
    /// A top-level attribute of that principal.
    fn principal_attribute(&self, key: &str) -> Option<&Value>;
    /// Now, in Unix nanoseconds (UTC); `time.*` and `agent.age` derive from it.
    fn now_ns(&self) -> u64;
}

/// What a condition can read about the acting agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentView<'a> {
    /// `agent.id`.
    pub id: &'a str,
    /// `agent.template`.
    pub template: &'a str,
    /// `agent.depth`: position in the delegation chain (1 = directly for a principal).
    pub depth: u32,
    /// `agent.delegator`: the direct delegator's id (principal or agent), or `None`.
    pub delegator: Option<&'a str>,
    /// Creation time in Unix ns; `agent.age` is `now - created`, in seconds, never negative.
    pub created_at_ns: u64,
}

/// A plain [`Env`] over borrowed data, for callers that have everything at
/// hand (and for tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts<'a> {
    /// The request's context (only the keys in [`Condition::context_keys`] matter).
    pub context: Option<&'a Map>,
    /// The resource name.
    pub resource_name: Option<&'a str>,
    /// The classes the resource matches.
    pub resource_classes: &'a [&'a str],
    /// The acting agent.
    pub agent: Option<AgentView<'a>>,
    /// The root principal's id.
    pub principal_id: Option<&'a str>,
    /// The root principal's attributes.
    pub principal_attributes: Option<&'a Map>,
    /// Now, Unix ns.
    pub now_ns: u64,
}

impl Env for Facts<'_> {
    fn context(&self, key: &str) -> Option<&Value> {
        self.context?.get(key)
    }
    fn resource_name(&self) -> Option<&str> {
        self.resource_name
    }
    fn resource_classes(&self) -> &[&str] {
        self.resource_classes
    }
    fn agent(&self) -> Option<AgentView<'_>> {
        self.agent
    }
    fn principal_id(&self) -> Option<&str> {
        self.principal_id
    }
    fn principal_attribute(&self, key: &str) -> Option<&Value> {
        self.principal_attributes?.get(key)
    }
    fn now_ns(&self) -> u64 {
        self.now_ns
    }
}

/// The result of evaluating a condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// The condition could not be decided; never a pass. An allow entry with
    /// this outcome grants nothing; a deny entry with it denies.
    Error(Failure),
}

impl Outcome {
    /// Whether the condition holds.
    pub fn is_true(&self) -> bool {
        matches!(self, Outcome::True)
    }
}

/// Why a condition could not be decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Missing attribute or type mismatch.
    pub kind: FailureKind,
    /// The missing attribute path (`context.amount`), or the source text of
    /// the sub-expression that failed (`context.amount <= 500`).
    pub path_or_expr: String,
    /// What went wrong, quoting the values seen (truncated).
    pub detail: String,
}

/// The kinds of [`Failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// An attribute the condition reads is absent.
    Missing,
    /// A value has a type the operation cannot use.
    TypeMismatch,
}

impl FailureKind {
    /// `missing` or `type_mismatch`, for audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Missing => "missing",
            FailureKind::TypeMismatch => "type_mismatch",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            FailureKind::Missing => write!(
                f,
                "missing attribute `{}`: {}",
                self.path_or_expr, self.detail
            ),
            FailureKind::TypeMismatch => {
                write!(
                    f,
                    "type mismatch in `{}`: {}",
                    self.path_or_expr, self.detail
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NS: u64 = 1_000_000_000;
    /// 2024-01-01T00:00:00Z, a Monday.
    const NEW_YEAR_2024: u64 = 1_704_067_200 * NS;

    fn map(entries: Vec<(&str, Value)>) -> Map {
        Map::new(entries)
    }

    fn list(items: Vec<Value>) -> Value {
        Value::List(items.into_boxed_slice())
    }

    fn s(x: &str) -> Value {
        Value::from(x)
    }

    struct World {
        context: Map,
        principal: Map,
        classes: Vec<&'static str>,
    }

    fn world() -> World {
        World {
            context: map(vec![
                ("amount", Value::Int(250)),
                ("currency", s("EUR")),
                ("ratio", Value::Float(0.5)),
                ("name", s("report-2024")),
                ("path", s("prod/db/orders")),
                ("tags", list(vec![s("a"), s("b")])),
                ("mixed", list(vec![Value::Int(1), s("a")])),
                ("nothing", Value::Null),
                ("flag", Value::Bool(true)),
                ("empty", s("")),
                ("nan", Value::Float(f64::NAN)),
                ("x-y", Value::Int(5)),
                (
                    "ticket",
                    Value::Map(map(vec![
                        ("id", s("T-1")),
                        ("prio", Value::Int(2)),
                        ("meta", Value::Map(map(vec![("x", Value::Int(1))]))),
                    ])),
                ),
            ]),
            principal: map(vec![
                ("team", s("finance")),
                ("level", Value::Int(3)),
                ("org", Value::Map(map(vec![("unit", s("emea"))]))),
            ]),
            classes: vec!["pii", "customer"],
        }
    }

    fn facts(w: &World) -> Facts<'_> {
        Facts {
            context: Some(&w.context),
            resource_name: Some("customers/42"),
            resource_classes: &w.classes,
            agent: Some(AgentView {
                id: "agent:1",
                template: "support-bot",
                depth: 2,
                delegator: Some("user:alice"),
                created_at_ns: NEW_YEAR_2024 - 90 * NS,
            }),
            principal_id: Some("user:alice"),
            principal_attributes: Some(&w.principal),
            now_ns: NEW_YEAR_2024,
        }
    }

    /// `true`, `false`, `missing <path>` or `mismatch <expr>`.
    fn run(src: &str, env: &dyn Env) -> String {
        let c = Condition::compile(src, "t").unwrap_or_else(|e| panic!("{src}: {e}"));
        match c.evaluate(env) {
            Outcome::True => "true".into(),
            Outcome::False => "false".into(),
            Outcome::Error(f) => match f.kind {
                FailureKind::Missing => format!("missing {}", f.path_or_expr),
                FailureKind::TypeMismatch => format!("mismatch {}", f.path_or_expr),
            },
        }
    }

    fn table(env: &dyn Env, cases: &[(&str, &str)]) {
        for (src, want) in cases {
            assert_eq!(run(src, env), *want, "{src}");
        }
    }

    #[test]
    fn operators() {
        let w = world();
        table(
            &facts(&w),
            &[
                ("context.amount <= 500", "true"),
                ("context.amount < 250", "false"),
                ("context.amount > 249", "true"),
                ("context.amount >= 251", "false"),
                ("context.amount == 250", "true"),
                ("context.amount != 250", "false"),
                (
                    "context.amount <= 500 and context.currency == \"EUR\"",
                    "true",
                ),
                ("context.currency > \"ABC\"", "true"),
                ("context.currency < \"EU\"", "false"),
                ("context.currency != \"USD\"", "true"),
                ("context.flag == true", "true"),
                ("context.flag", "true"),
                ("not context.flag", "false"),
                ("context.flag and context.amount > 1", "true"),
                ("context.amount < 1 or context.flag", "true"),
                ("not (context.amount < 1 or context.amount > 300)", "true"),
                ("context[\"x-y\"] == 5", "true"),
            ],
        );
    }

    #[test]
    fn numbers_mix_ints_and_floats() {
        let w = world();
        table(
            &facts(&w),
            &[
                ("context.amount == 250.0", "true"),
                ("context.amount < 250.5", "true"),
                ("context.amount > 249.99", "true"),
                ("context.ratio < 1", "true"),
                ("context.ratio == 0.5", "true"),
                ("context.ratio >= 0", "true"),
                ("-1 < context.ratio", "true"),
                ("agent.depth <= 2.5", "true"),
                ("agent.depth == 2.0", "true"),
                ("context.amount in [100, 250.0]", "true"),
                (
                    "context.amount == \"250\"",
                    "mismatch context.amount == \"250\"",
                ),
                ("context.amount < \"x\"", "mismatch context.amount < \"x\""),
                (
                    "context.nan == context.nan",
                    "mismatch context.nan == context.nan",
                ),
                ("context.nan < 1", "mismatch context.nan < 1"),
                ("context.nan != 0", "mismatch context.nan != 0"),
            ],
        );
    }

    #[test]
    fn null_and_missing() {
        let w = world();
        table(
            &facts(&w),
            &[
                ("context.nothing == null", "true"),
                ("context.nothing != null", "false"),
                ("null == context.nothing", "true"),
                ("context.amount == null", "false"),
                ("context.amount != null", "true"),
                ("context.nothing == 1", "false"),
                ("context.nothing == \"x\"", "false"),
                ("context.nothing < 1", "mismatch context.nothing < 1"),
                ("context.nothing", "mismatch context.nothing"),
                ("context.missing == null", "missing context.missing"),
                ("context.missing != null", "missing context.missing"),
                ("agent.delegator == null", "false"),
                ("agent.delegator == \"user:alice\"", "true"),
                ("has context.amount", "true"),
                ("has context.nothing", "true"),
                ("has context.missing", "false"),
                ("not has context.missing", "true"),
                ("has context.ticket.id", "true"),
                ("has context.ticket.nope", "false"),
                ("has context.amount.x", "false"),
                ("has principal.team", "true"),
                ("has principal.nope", "false"),
                ("has agent.id", "true"),
                ("has agent.delegator", "true"),
                ("has resource.name", "true"),
                ("has resource.class", "true"),
                ("has time.hour", "true"),
                ("has context.missing and context.missing > 1", "false"),
                ("not has context.missing or context.missing > 1", "true"),
            ],
        );
    }

    #[test]
    fn nested_context_maps() {
        let w = world();
        table(
            &facts(&w),
            &[
                ("context.ticket.id == \"T-1\"", "true"),
                ("context.ticket.prio >= 2", "true"),
                ("context.ticket.meta.x == 1", "true"),
                ("context.ticket[\"meta\"].x == 1", "true"),
                ("context.ticket.nope == 1", "missing context.ticket.nope"),
                (
                    "context.ticket.meta.x.y == 1",
                    "missing context.ticket.meta.x.y",
                ),
                ("context.amount.x == 1", "missing context.amount.x"),
                ("\"id\" in context.ticket", "true"),
                ("\"nope\" in context.ticket", "false"),
                ("context.ticket == context.ticket", "true"),
                ("context.ticket.meta == context.ticket", "false"),
                ("context.ticket == 1", "mismatch context.ticket == 1"),
                (
                    "context.ticket < context.ticket",
                    "mismatch context.ticket < context.ticket",
                ),
            ],
        );
    }

    #[test]
    fn membership() {
        let w = world();
        table(
            &facts(&w),
            &[
                ("\"a\" in context.tags", "true"),
                ("\"c\" in context.tags", "false"),
                ("\"c\" not in context.tags", "true"),
                ("\"a\" not in context.tags", "false"),
                ("null in context.tags", "false"),
                ("1 in context.mixed", "mismatch 1 in context.mixed"),
                ("\"a\" in context.mixed", "mismatch \"a\" in context.mixed"),
                ("null in context.mixed", "false"),
                ("\"EU\" in context.currency", "true"),
                ("\"\" in context.currency", "true"),
                ("\"eu\" in context.currency", "false"),
                ("1 in context.currency", "mismatch 1 in context.currency"),
                (
                    "\"a\" in context.amount",
                    "mismatch \"a\" in context.amount",
                ),
                (
                    "\"a\" in context.nothing",
                    "mismatch \"a\" in context.nothing",
                ),
                (
                    "context.amount in context.currency",
                    "mismatch context.amount in context.currency",
                ),
                ("context.currency in [\"EUR\", \"USD\"]", "true"),
                ("context.currency in []", "false"),
                (
                    "context.currency in [1, \"EUR\"]",
                    "mismatch context.currency in [1, \"EUR\"]",
                ),
                // Found before the odd element out: still a mismatch (no order dependence).
                (
                    "context.currency in [\"EUR\", 1]",
                    "mismatch context.currency in [\"EUR\", 1]",
                ),
                (
                    "context.amount in [250, \"x\"]",
                    "mismatch context.amount in [250, \"x\"]",
                ),
                ("context.currency in [principal.team, \"EUR\"]", "true"),
                ("context.currency not in [principal.team, \"EUR\"]", "false"),
                (
                    "context.currency in [context.missing, \"EUR\"]",
                    "missing context.missing",
                ),
                (
                    "context.currency in [\"EUR\", context.missing]",
                    "missing context.missing",
                ),
                (
                    "context.currency in [\"EUR\", context.amount]",
                    "mismatch context.currency in [\"EUR\", context.amount]",
                ),
                (
                    "context.nothing in [context.amount, context.nothing]",
                    "true",
                ),
                ("\"pii\" in resource.class", "true"),
                ("\"secret\" in resource.class", "false"),
                ("\"pii\" not in resource.class", "false"),
                ("resource.class == [\"pii\", \"customer\"]", "true"),
                ("context.tags == [\"a\", \"b\"]", "true"),
                ("context.tags == [\"a\"]", "false"),
                ("context.tags != [\"b\", \"a\"]", "true"),
                ("context.tags == [1, 2]", "mismatch context.tags == [1, 2]"),
                ("context.tags in [[\"a\", \"b\"], []]", "true"),
            ],
        );
    }

    #[test]
    fn string_methods_and_globs() {
        let w = world();
        table(
            &facts(&w),
            &[
                ("context.name.startswith(\"report\")", "true"),
                ("context.name.startswith(\"2024\")", "false"),
                ("context.name.endswith(\"2024\")", "true"),
                ("context.name.endswith(\"\")", "true"),
                ("agent.id.startswith(\"agent:\")", "true"),
                ("context.name.startswith(context.currency)", "false"),
                (
                    "context.amount.startswith(\"2\")",
                    "mismatch context.amount.startswith(\"2\")",
                ),
                (
                    "context.name.endswith(context.amount)",
                    "mismatch context.name.endswith(context.amount)",
                ),
                (
                    "context.nothing.endswith(\"x\")",
                    "mismatch context.nothing.endswith(\"x\")",
                ),
                ("resource.name.matches(\"customers/*\")", "true"),
                ("resource.name.matches(\"customers\")", "false"),
                ("resource.name.matches(\"**\")", "true"),
                ("context.path.matches(\"prod/**\")", "true"),
                ("context.path.matches(\"prod/*\")", "false"),
                ("context.path.matches(\"prod/*/orders\")", "true"),
                ("context.path.matches(\"**/orders\")", "true"),
                ("context.path.matches(\"prod/**/db/orders\")", "true"),
                ("context.name.matches(\"report-2024\")", "true"),
                (
                    "context.empty.matches(\"**\")",
                    "mismatch context.empty.matches(\"**\")",
                ),
                (
                    "context.amount.matches(\"*\")",
                    "mismatch context.amount.matches(\"*\")",
                ),
                ("(context.path).matches(\"prod/**\") == true", "true"),
            ],
        );
    }

    #[test]
    fn errors_propagate_and_only_the_left_side_short_circuits() {
        let w = world();
        table(
            &facts(&w),
            &[
                ("context.amount < 1 and context.missing == 1", "false"),
                ("context.amount > 1 or context.missing == 1", "true"),
                (
                    "context.amount > 1 and context.missing == 1",
                    "missing context.missing",
                ),
                (
                    "context.amount < 1 or context.missing == 1",
                    "missing context.missing",
                ),
                ("context.missing == 1 and false", "missing context.missing"),
                ("context.missing == 1 or true", "missing context.missing"),
                (
                    "context.missing == 1 and context.amount < 1",
                    "missing context.missing",
                ),
                ("not (context.missing == 1)", "missing context.missing"),
                ("context.amount < 1 and context.amount", "false"),
                (
                    "context.amount > 1 and context.amount",
                    "mismatch context.amount",
                ),
                ("context.amount and true", "mismatch context.amount"),
                ("not context.amount", "mismatch context.amount"),
                ("context.amount", "mismatch context.amount"),
                (
                    "context.amount > \"a\" or true",
                    "mismatch context.amount > \"a\"",
                ),
                (
                    "(context.missing == 1) == (1 == 1)",
                    "missing context.missing",
                ),
                (
                    "context.flag == (context.amount > \"a\")",
                    "mismatch (context.amount > \"a\")",
                ),
            ],
        );
    }

    #[test]
    fn agent_principal_and_resource() {
        let w = world();
        table(
            &facts(&w),
            &[
                ("agent.id == \"agent:1\"", "true"),
                ("agent.template == \"support-bot\"", "true"),
                ("agent.depth == 2", "true"),
                ("agent.depth in [1, 2]", "true"),
                ("agent.delegator == principal.id", "true"),
                ("agent.age >= 90", "true"),
                ("agent.age < 90.5", "true"),
                ("principal.id == \"user:alice\"", "true"),
                ("principal.team == \"finance\"", "true"),
                ("principal.level > 2", "true"),
                ("principal.org.unit == \"emea\"", "true"),
                ("principal[\"team\"] == \"finance\"", "true"),
                ("principal.nope == 1", "missing principal.nope"),
                ("principal[\"id\"] == 1", "missing principal[\"id\"]"),
                ("resource.name == \"customers/42\"", "true"),
            ],
        );
        let bare = Facts {
            now_ns: NEW_YEAR_2024,
            ..Facts::default()
        };
        table(
            &bare,
            &[
                ("agent.id == \"x\"", "missing agent.id"),
                ("agent.depth > 1", "missing agent.depth"),
                ("agent.delegator == null", "missing agent.delegator"),
                ("agent.age > 1", "missing agent.age"),
                ("resource.name == \"x\"", "missing resource.name"),
                ("\"pii\" in resource.class", "missing resource.class"),
                ("principal.id == \"x\"", "missing principal.id"),
                ("principal.team == \"x\"", "missing principal.team"),
                ("context.amount > 1", "missing context.amount"),
                ("has agent.id", "false"),
                ("has resource.class", "false"),
                ("has principal.team", "false"),
                ("has context.amount", "false"),
                ("time.hour == 0", "true"),
            ],
        );
        // A top-level agent has no delegator: present, null.
        let orphan = Facts {
            agent: Some(AgentView {
                id: "a",
                template: "t",
                depth: 1,
                delegator: None,
                created_at_ns: NEW_YEAR_2024 + NS,
            }),
            now_ns: NEW_YEAR_2024,
            ..Facts::default()
        };
        table(
            &orphan,
            &[
                ("agent.delegator == null", "true"),
                ("has agent.delegator", "true"),
                ("agent.age == 0", "true"),
            ],
        );
    }

    #[test]
    fn time_attributes() {
        // (Unix seconds, hour, weekday with Monday = 0).
        let cases = [
            (1_704_067_200u64, 0, 0), // 2024-01-01T00:00:00Z, Monday
            (1_710_510_300, 13, 4),   // 2024-03-15T13:45:00Z, Friday
            (1_717_977_599, 23, 6),   // 2024-06-09T23:59:59Z, Sunday
            (1_704_063_600, 23, 6),   // 2023-12-31T23:00:00Z, Sunday
            (0, 0, 3),                // 1970-01-01T00:00:00Z, Thursday
        ];
        for (secs, hour, weekday) in cases {
            let env = Facts {
                now_ns: secs * NS + NS / 2,
                ..Facts::default()
            };
            let src = format!(
                "time.hour == {hour} and time.weekday == {weekday} and time.now > {secs} and time.now < {}",
                secs + 1
            );
            assert_eq!(run(&src, &env), "true", "{src}");
        }
        // The last nanosecond of 2023 is still Sunday, 23h.
        let env = Facts {
            now_ns: NEW_YEAR_2024 - 1,
            ..Facts::default()
        };
        assert_eq!(run("time.hour == 23 and time.weekday == 6", &env), "true");
        let env = Facts {
            now_ns: NEW_YEAR_2024,
            ..Facts::default()
        };
        table(
            &env,
            &[
                ("time.now == 1704067200", "true"),
                ("time.hour >= 9 and time.hour < 17", "false"),
                ("time.weekday < 5", "true"),
                ("time.weekday in [5, 6]", "false"),
            ],
        );
    }

    #[test]
    fn failures_say_what_and_where() {
        let w = world();
        let env = facts(&w);
        let fail = |src: &str| match Condition::compile(src, "t").unwrap().evaluate(&env) {
            Outcome::Error(f) => f,
            other => panic!("{src}: {other:?}"),
        };
        let f = fail("context.amount <= \"x\"");
        assert_eq!(f.kind, FailureKind::TypeMismatch);
        assert_eq!(f.path_or_expr, "context.amount <= \"x\"");
        assert_eq!(
            f.detail,
            "cannot compare int `250` with string `\"x\"` using `<=`"
        );
        assert_eq!(
            f.to_string(),
            "type mismatch in `context.amount <= \"x\"`: cannot compare int `250` with string `\"x\"` using `<=`"
        );
        let f = fail("context.nope > 1");
        assert_eq!(f.kind, FailureKind::Missing);
        assert_eq!(f.path_or_expr, "context.nope");
        assert_eq!(f.detail, "the context has no key `nope`");
        assert_eq!(
            f.to_string(),
            "missing attribute `context.nope`: the context has no key `nope`"
        );
        assert_eq!(
            fail("context.ticket.nope == 1").detail,
            "`context.ticket` has no key `nope`"
        );
        assert_eq!(
            fail("context.ticket.id.x == 1").detail,
            "`context.ticket.id` is string `\"T-1\"`, not a map"
        );
        assert_eq!(
            fail("principal.nope == 1").detail,
            "the principal has no attribute `nope`"
        );
        assert_eq!(
            fail("context.flag and context.name").detail,
            "`and` needs true or false, found string `\"report-2024\"`"
        );
        assert_eq!(
            fail("context.name").detail,
            "a condition needs true or false, found string `\"report-2024\"`"
        );
        assert_eq!(
            fail("1 in context.mixed").detail,
            "cannot compare int `1` with the elements of list `[1, \"a\"]`"
        );
        assert_eq!(
            fail("1 in context.name").detail,
            "cannot look for int `1` in string `\"report-2024\"`: only a string can be"
        );
        assert_eq!(
            fail("\"x\" in context.amount").detail,
            "`in` needs a list, a string or a map on its right, found int `250`"
        );
        assert_eq!(
            fail("context.amount in [principal.level, \"a\"]").detail,
            "cannot compare int `250` with the list element string `\"a\"`"
        );
        assert_eq!(
            fail("context.amount.endswith(\"0\")").detail,
            "`endswith` needs strings, found int `250` and string `\"0\"`"
        );
        let long = Map::new([("s", Value::from("y".repeat(500)))]);
        let env = Facts {
            context: Some(&long),
            ..Facts::default()
        };
        match Condition::compile("context.s > 1", "t")
            .unwrap()
            .evaluate(&env)
        {
            Outcome::Error(f) => assert!(f.detail.len() < 120, "{}", f.detail),
            other => panic!("{other:?}"),
        }
        assert_eq!(FailureKind::Missing.as_str(), "missing");
        assert_eq!(FailureKind::TypeMismatch.as_str(), "type_mismatch");
    }

    #[test]
    fn accessors() {
        let c = Condition::compile(
            "context.ticket.id == \"x\" and context.amount > 1 and has context.ticket and agent.depth < 3 and \"pii\" in resource.class and context[\"x-y\"] == 1",
            "t",
        )
        .unwrap();
        let strs = |v: &[Box<str>]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(strs(c.context_keys()), ["amount", "ticket", "x-y"]);
        assert_eq!(
            strs(c.paths()),
            [
                "agent.depth",
                "context.amount",
                "context.ticket",
                "context.ticket.id",
                "context[\"x-y\"]",
                "resource.class"
            ]
        );
        assert!(c.reads("resource.class"));
        assert!(!c.reads("resource.name"));
        assert_eq!(c.constant(), None);
        assert!(c.source().starts_with("context.ticket.id"));
        assert_eq!(c, Condition::compile(c.source(), "other").unwrap());
        let k = Condition::compile("1 < 2", "t").unwrap();
        assert_eq!(k.constant(), Some(true));
        assert!(k.paths().is_empty());
        assert_eq!(k.evaluate(&Facts::default()), Outcome::True);
        assert!(Outcome::True.is_true() && !Outcome::False.is_true());
        fn shareable<T: Send + Sync>() {}
        shareable::<Condition>();
    }

    /// The nesting limits keep the deepest conditions within a small stack,
    /// even unoptimized (a macOS secondary thread has 512 KiB).
    #[test]
    fn the_deepest_conditions_fit_a_small_stack() {
        let run = || {
            let ctx = Map::new([("a", Value::Int(0))]);
            let env = Facts {
                context: Some(&ctx),
                ..Facts::default()
            };
            // Height 64: 62 `or`s over comparisons of height 2.
            let chain = vec!["context.a == 1"; 63].join(" or ");
            let c = Condition::compile(&chain, "t").unwrap();
            assert_eq!(c.evaluate(&env), Outcome::False);
            let parens = format!(
                "{}context.a == 0{}",
                "(context.a == 1 or ".repeat(31),
                ")".repeat(31)
            );
            let c = Condition::compile(&parens, "t").unwrap();
            assert_eq!(c.evaluate(&env), Outcome::True);
            let nots = format!("{}context.a == 0", "not ".repeat(32));
            assert_eq!(
                Condition::compile(&nots, "t").unwrap().evaluate(&env),
                Outcome::True
            );
            let lists = format!("{}1{} == 1", "[".repeat(31), "]".repeat(31));
            assert!(Condition::compile(&lists, "t").is_err());
            let too_deep = vec!["context.a == 1"; 64].join(" or ");
            assert!(Condition::compile(&too_deep, "t").is_err());
        };
        std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(run)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn evaluation_is_fast() {
        // Reports, does not assert: timing depends on the machine and profile.
        let c = Condition::compile("context.amount <= 500 and context.currency == \"EUR\"", "t")
            .unwrap();
        let ctx = Map::new([
            ("amount", Value::Int(250)),
            ("currency", Value::from("EUR")),
        ]);
        let env = Facts {
            context: Some(&ctx),
            ..Facts::default()
        };
        let n = 200_000u32;
        let start = std::time::Instant::now();
        let mut hits = 0u32;
        for _ in 0..n {
            hits += u32::from(
                std::hint::black_box(&c)
                    .evaluate(std::hint::black_box(&env))
                    .is_true(),
            );
        }
        let per = start.elapsed().as_nanos() as f64 / f64::from(n);
        assert_eq!(hits, n);
        eprintln!("condition evaluation: {per:.1} ns");
    }

    // ---- property tests against a reference interpreter ----

    /// A generated expression; rendered fully parenthesized.
    #[derive(Debug, Clone)]
    enum G {
        Lit(Value),
        Path(&'static str),
        Has(&'static str),
        Not(Box<G>),
        And(Box<G>, Box<G>),
        Or(Box<G>, Box<G>),
        Cmp(&'static str, Box<G>, Box<G>),
        In(bool, Box<G>, Box<G>),
        InList(bool, Box<G>, Vec<G>),
        Text(&'static str, Box<G>, Box<G>),
        Matches(Box<G>, &'static str),
    }

    /// Paths by the type they usually hold (the world below is skewed the same way).
    const NUM_PATHS: &[&str] = &[
        "context.a",
        "context.m.a",
        "principal.a",
        "agent.depth",
        "agent.age",
        "time.hour",
        "time.weekday",
        "time.now",
    ];
    const STR_PATHS: &[&str] = &[
        "context.b",
        "context.m.b",
        "principal.b",
        "principal.id",
        "agent.id",
        "agent.delegator",
        "resource.name",
    ];
    /// Dynamically typed paths first.
    const ANY_PATHS: &[&str] = &[
        "context.c",
        "context.c.a",
        "context.m",
        "context.a.a",
        "resource.class",
    ];
    const GLOBS: &[&str] = &["a", "*", "**", "a/*", "**/b", "a/**/b", "x/*/b"];
    const STRS: &[&str] = &["", "a", "ab", "b", "a/b", "x/a/b", "a//b"];

    fn render(g: &G) -> String {
        match g {
            G::Lit(v) => v.to_string(),
            G::Path(p) => (*p).to_string(),
            G::Has(p) => format!("(has {p})"),
            G::Not(x) => format!("(not {})", render(x)),
            G::And(a, b) => format!("({} and {})", render(a), render(b)),
            G::Or(a, b) => format!("({} or {})", render(a), render(b)),
            G::Cmp(op, a, b) => format!("({} {op} {})", render(a), render(b)),
            G::In(neg, a, b) => format!(
                "({} {}in {})",
                render(a),
                if *neg { "not " } else { "" },
                render(b)
            ),
            G::InList(neg, a, items) => format!(
                "({} {}in [{}])",
                render(a),
                if *neg { "not " } else { "" },
                items.iter().map(render).collect::<Vec<_>>().join(", ")
            ),
            G::Text(m, a, b) => format!("({}).{m}({})", render(a), render(b)),
            G::Matches(a, p) => format!("({}).matches(\"{p}\")", render(a)),
        }
    }

    fn number() -> impl Strategy<Value = Value> {
        prop_oneof![
            (-3i64..4).prop_map(Value::Int),
            prop::sample::select(vec![-1.5, 0.0, 0.5, 2.0, 3.0]).prop_map(Value::Float),
        ]
    }

    fn text() -> impl Strategy<Value = Value> {
        prop::sample::select(STRS).prop_map(Value::from)
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            number(),
            text(),
        ]
    }

    /// Anything an environment can hold: scalars (and NaN), lists, maps.
    fn data() -> BoxedStrategy<Value> {
        let leaf = prop_oneof![8 => scalar(), 1 => Just(Value::Float(f64::NAN))];
        leaf.prop_recursive(2, 12, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(|v| Value::List(v.into())),
                prop::collection::vec((prop::sample::select(vec!["a", "b"]), inner), 0..3)
                    .prop_map(|kv| Value::Map(Map::new(kv))),
            ]
        })
        .boxed()
    }

    fn literal() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => scalar(),
            1 => prop::collection::vec(scalar(), 0..3).prop_map(|v| Value::List(v.into())),
        ]
    }

    /// Operands of one comparison: mostly two numbers or two strings (so the
    /// static check passes and values compare), sometimes anything.
    fn operand(kind: u8) -> BoxedStrategy<G> {
        match kind {
            0 => prop_oneof![
                3 => prop::sample::select(NUM_PATHS).prop_map(G::Path),
                2 => number().prop_map(G::Lit),
            ]
            .boxed(),
            1 => prop_oneof![
                3 => prop::sample::select(STR_PATHS).prop_map(G::Path),
                2 => text().prop_map(G::Lit),
            ]
            .boxed(),
            _ => prop_oneof![
                6 => prop::sample::select(&ANY_PATHS[..4]).prop_map(G::Path),
                2 => literal().prop_map(G::Lit),
                1 => Just(G::Path("resource.class")),
                1 => prop::sample::select(NUM_PATHS).prop_map(G::Path),
                1 => prop::sample::select(STR_PATHS).prop_map(G::Path),
            ]
            .boxed(),
        }
    }

    fn pair() -> impl Strategy<Value = (G, G)> {
        prop::sample::select(vec![0u8, 0, 0, 1, 1, 1, 2])
            .prop_flat_map(|k| (operand(k), operand(k)))
    }

    /// A test: a comparison, membership, method, `has`, or a bare operand.
    fn atom() -> BoxedStrategy<G> {
        let b = Box::new;
        let all_paths: Vec<&str> = [NUM_PATHS, STR_PATHS, ANY_PATHS].concat();
        prop_oneof![
            1 => any::<bool>().prop_map(|x| G::Lit(Value::Bool(x))),
            1 => prop::sample::select(ANY_PATHS).prop_map(G::Path),
            2 => prop::sample::select(all_paths).prop_map(G::Has),
            6 => (prop::sample::select(vec!["==", "!=", "<", "<=", ">", ">="]), pair())
                .prop_map(move |(op, (x, y))| G::Cmp(op, b(x), b(y))),
            1 => (any::<bool>(), pair()).prop_map(move |(n, (x, y))| G::In(n, b(x), b(y))),
            2 => (any::<bool>(), operand(2), operand(2)).prop_map(move |(n, x, y)| G::In(n, b(x), b(y))),
            2 => (any::<bool>(), prop::sample::select(vec![0u8, 1]))
                .prop_flat_map(|(n, k)| {
                    let same = if k == 0 { number().boxed() } else { text().boxed() };
                    let items = prop::collection::vec(prop_oneof![6 => same, 1 => scalar()], 0..4);
                    (Just(n), operand(k), items)
                })
                .prop_map(move |(n, x, ys)| G::In(n, b(x), b(G::Lit(Value::List(ys.into()))))),
            2 => (any::<bool>(), prop::sample::select(vec![0u8, 1, 2]))
                .prop_flat_map(|(n, k)| (Just(n), operand(k), prop::collection::vec(operand(k), 0..3)))
                .prop_map(move |(n, x, ys)| G::InList(n, b(x), ys)),
            2 => (prop::sample::select(vec!["startswith", "endswith"]), operand(1), operand(1))
                .prop_map(move |(m, x, y)| G::Text(m, b(x), b(y))),
            1 => (operand(2), operand(2)).prop_map(move |(x, y)| G::Text("startswith", b(x), b(y))),
            2 => (operand(1), prop::sample::select(GLOBS)).prop_map(move |(x, p)| G::Matches(b(x), p)),
        ]
        .boxed()
    }

    fn expr() -> impl Strategy<Value = G> {
        atom().prop_recursive(4, 24, 2, |inner| {
            let b = Box::new;
            prop_oneof![
                inner.clone().prop_map(move |x| G::Not(b(x))),
                (inner.clone(), inner.clone()).prop_map(move |(x, y)| G::And(b(x), b(y))),
                (inner.clone(), inner.clone()).prop_map(move |(x, y)| G::Or(b(x), b(y))),
                (prop::sample::select(vec!["==", "!="]), inner.clone(), inner)
                    .prop_map(move |(op, x, y)| G::Cmp(op, b(x), b(y))),
            ]
        })
    }

    /// A random environment, owned.
    #[derive(Debug)]
    struct Gen {
        context: Map,
        principal: Option<(String, Map)>,
        agent: Option<(String, u32, Option<String>, u64)>,
        resource: Option<(String, Vec<&'static str>)>,
        now_ns: u64,
    }

    /// Usually present, usually of the expected type.
    fn slot(usual: BoxedStrategy<Value>) -> impl Strategy<Value = Option<Value>> {
        prop::option::weighted(0.9, prop_oneof![6 => usual, 1 => data()])
    }

    fn world_strategy() -> impl Strategy<Value = Gen> {
        let half = NS / 2;
        let num = || slot(prop_oneof![9 => number(), 1 => Just(Value::Float(f64::NAN))].boxed());
        let txt = || slot(text().boxed());
        let record = || {
            (num(), txt()).prop_map(|(a, b)| {
                Map::new(
                    [("a", a), ("b", b)]
                        .into_iter()
                        .filter_map(|(k, v)| Some((k, v?))),
                )
            })
        };
        let inner = record().prop_map(Value::Map).boxed();
        (
            (num(), txt(), slot(data()), slot(inner)),
            prop::option::weighted(0.85, (prop::sample::select(vec!["u", "ab"]), record())),
            prop::option::weighted(
                0.85,
                (
                    prop::sample::select(vec!["a", "ab"]),
                    0u32..4,
                    prop::option::of(prop::sample::select(vec!["u", "a"])),
                    0u64..(1 << 33),
                ),
            ),
            prop::option::weighted(
                0.85,
                (
                    prop::sample::select(vec!["a", "a/b", "x/a/b"]),
                    prop::sample::subsequence(vec!["a", "b"], 0..=2),
                ),
            ),
            0u64..(1 << 33),
        )
            .prop_map(move |((a, b, c, m), p, ag, r, now)| Gen {
                context: Map::new(
                    [("a", a), ("b", b), ("c", c), ("m", m)]
                        .into_iter()
                        .filter_map(|(k, v)| Some((k, v?))),
                ),
                principal: p.map(|(id, attrs)| (id.to_string(), attrs)),
                agent: ag.map(|(id, depth, del, created)| {
                    (
                        id.to_string(),
                        depth,
                        del.map(str::to_string),
                        created * half,
                    )
                }),
                resource: r.map(|(n, c)| (n.to_string(), c)),
                now_ns: now * half,
            })
    }

    impl Gen {
        fn facts(&self) -> Facts<'_> {
            Facts {
                context: Some(&self.context),
                resource_name: self.resource.as_ref().map(|r| r.0.as_str()),
                resource_classes: self.resource.as_ref().map_or(&[], |r| r.1.as_slice()),
                agent: self.agent.as_ref().map(|a| AgentView {
                    id: &a.0,
                    template: "t",
                    depth: a.1,
                    delegator: a.2.as_deref(),
                    created_at_ns: a.3,
                }),
                principal_id: self.principal.as_ref().map(|p| p.0.as_str()),
                principal_attributes: self.principal.as_ref().map(|p| &p.1),
                now_ns: self.now_ns,
            }
        }

        /// The reference reading of a path: `None` when absent.
        fn read(&self, path: &str) -> Option<Value> {
            let parts: Vec<&str> = path.split('.').collect();
            let nested = |mut v: &Value, rest: &[&str]| {
                for k in rest {
                    v = match v {
                        Value::Map(m) => m.get(k)?,
                        _ => return None,
                    };
                }
                Some(v.clone())
            };
            let secs = self.now_ns as f64 / 1e9;
            match parts.as_slice() {
                ["context", first, rest @ ..] => nested(self.context.get(first)?, rest),
                ["principal", "id"] => Some(Value::from(self.principal.as_ref()?.0.as_str())),
                ["principal", first, rest @ ..] => {
                    nested(self.principal.as_ref()?.1.get(first)?, rest)
                }
                ["agent", attr] => {
                    let a = self.agent.as_ref()?;
                    Some(match *attr {
                        "id" => Value::from(a.0.as_str()),
                        "depth" => Value::Int(i64::from(a.1)),
                        "delegator" => a.2.as_deref().map_or(Value::Null, Value::from),
                        _ => Value::Float(self.now_ns.saturating_sub(a.3) as f64 / 1e9),
                    })
                }
                ["resource", "name"] => Some(Value::from(self.resource.as_ref()?.0.as_str())),
                ["resource", "class"] => Some(Value::List(
                    self.resource
                        .as_ref()?
                        .1
                        .iter()
                        .map(|c| Value::from(*c))
                        .collect(),
                )),
                ["time", "hour"] => Some(Value::Int(((secs / 3600.0).floor() as i64) % 24)),
                ["time", "weekday"] => Some(Value::Int(((secs / 86400.0).floor() as i64 + 3) % 7)),
                ["time", "now"] => Some(Value::Float(secs)),
                _ => panic!("unknown path {path}"),
            }
        }
    }

    /// Reference semantics: `Err(())` is the fail-closed error.
    fn r_eval(g: &G, w: &Gen) -> Result<Value, ()> {
        let boolean = |g: &G| match r_eval(g, w)? {
            Value::Bool(b) => Ok(b),
            _ => Err(()),
        };
        Ok(match g {
            G::Lit(v) => v.clone(),
            G::Path(p) => w.read(p).ok_or(())?,
            G::Has(p) => Value::Bool(w.read(p).is_some()),
            G::Not(x) => Value::Bool(!boolean(x)?),
            G::And(a, b) => Value::Bool(if boolean(a)? { boolean(b)? } else { false }),
            G::Or(a, b) => Value::Bool(if boolean(a)? { true } else { boolean(b)? }),
            G::Cmp(op, a, b) => {
                let (x, y) = (r_eval(a, w)?, r_eval(b, w)?);
                Value::Bool(match *op {
                    "==" => r_eq(&x, &y)?,
                    "!=" => !r_eq(&x, &y)?,
                    "<" => r_lt(&x, &y)?,
                    ">" => r_lt(&y, &x)?,
                    "<=" => r_lt(&x, &y)? || r_eq(&x, &y)?,
                    _ => r_lt(&y, &x)? || r_eq(&x, &y)?,
                })
            }
            G::In(neg, a, b) => {
                let (x, y) = (r_eval(a, w)?, r_eval(b, w)?);
                Value::Bool(r_in(&x, &y)? != *neg)
            }
            G::InList(neg, a, items) => {
                let x = r_eval(a, w)?;
                let ys = items
                    .iter()
                    .map(|i| r_eval(i, w))
                    .collect::<Result<Vec<_>, ()>>()?;
                Value::Bool(r_in(&x, &Value::List(ys.into()))? != *neg)
            }
            G::Text(m, a, b) => match (r_eval(a, w)?, r_eval(b, w)?) {
                (Value::Str(s), Value::Str(t)) => Value::Bool(if *m == "startswith" {
                    s.starts_with(&*t)
                } else {
                    s.ends_with(&*t)
                }),
                _ => return Err(()),
            },
            G::Matches(a, p) => match r_eval(a, w)? {
                Value::Str(s) if !s.split('/').any(str::is_empty) => {
                    let pat: Vec<&str> = p.split('/').collect();
                    let name: Vec<&str> = s.split('/').collect();
                    Value::Bool(r_glob(&pat, &name))
                }
                _ => return Err(()),
            },
        })
    }

    fn r_num(v: &Value) -> Option<f64> {
        match v {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    fn r_eq(x: &Value, y: &Value) -> Result<bool, ()> {
        if let (Some(a), Some(b)) = (r_num(x), r_num(y)) {
            return if a.is_nan() || b.is_nan() {
                Err(())
            } else {
                Ok(a == b)
            };
        }
        match (x, y) {
            (Value::Null, _) | (_, Value::Null) => Ok(*x == Value::Null && *y == Value::Null),
            (Value::Bool(a), Value::Bool(b)) => Ok(a == b),
            (Value::Str(a), Value::Str(b)) => Ok(a == b),
            (Value::List(a), Value::List(b)) if a.len() != b.len() => Ok(false),
            (Value::List(a), Value::List(b)) => {
                let pairs = a
                    .iter()
                    .zip(b.iter())
                    .map(|(p, q)| r_eq(p, q))
                    .collect::<Result<Vec<_>, ()>>()?;
                Ok(pairs.iter().all(|t| *t))
            }
            (Value::Map(a), Value::Map(b)) => {
                if a.iter().map(|e| e.0).ne(b.iter().map(|e| e.0)) {
                    return Ok(false);
                }
                let pairs = a
                    .iter()
                    .zip(b.iter())
                    .map(|(p, q)| r_eq(p.1, q.1))
                    .collect::<Result<Vec<_>, ()>>()?;
                Ok(pairs.iter().all(|t| *t))
            }
            _ => Err(()),
        }
    }

    fn r_lt(x: &Value, y: &Value) -> Result<bool, ()> {
        match (x, y, r_num(x), r_num(y)) {
            (_, _, Some(a), Some(b)) if !a.is_nan() && !b.is_nan() => Ok(a < b),
            (Value::Str(a), Value::Str(b), _, _) => Ok(a < b),
            _ => Err(()),
        }
    }

    fn r_in(x: &Value, y: &Value) -> Result<bool, ()> {
        match (x, y) {
            (_, Value::List(items)) => {
                let each = items
                    .iter()
                    .map(|i| r_eq(x, i))
                    .collect::<Result<Vec<_>, ()>>()?;
                Ok(each.contains(&true))
            }
            (Value::Str(a), Value::Str(b)) => Ok(b.contains(&**a)),
            (Value::Str(a), Value::Map(m)) => Ok(m.get(a).is_some()),
            _ => Err(()),
        }
    }

    fn r_glob(pat: &[&str], name: &[&str]) -> bool {
        match (pat.split_first(), name.split_first()) {
            (None, None) => true,
            (None, Some(_)) => false,
            (Some((&"**", rest)), _) => {
                r_glob(rest, name) || (!name.is_empty() && r_glob(pat, &name[1..]))
            }
            (Some(_), None) => false,
            (Some((&"*", rest)), Some((_, more))) => r_glob(rest, more),
            (Some((p, rest)), Some((n, more))) => p == n && r_glob(rest, more),
        }
    }

    fn r_outcome(g: &G, w: &Gen) -> &'static str {
        match r_eval(g, w) {
            Ok(Value::Bool(true)) => "true",
            Ok(Value::Bool(false)) => "false",
            _ => "error",
        }
    }

    /// The property below is only as good as its inputs: most generated
    /// expressions must compile, and every outcome must occur.
    #[test]
    fn generated_expressions_cover_every_outcome() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let (mut rejected, mut constant) = (0, 0);
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..2000 {
            let g = expr().new_tree(&mut runner).unwrap().current();
            let w = world_strategy().new_tree(&mut runner).unwrap().current();
            match Condition::compile(&render(&g), "t") {
                Err(_) => rejected += 1,
                Ok(c) => {
                    constant += usize::from(c.constant().is_some());
                    *seen.entry(r_outcome(&g, &w)).or_insert(0) += 1;
                }
            }
        }
        eprintln!("rejected {rejected}, constant {constant}, outcomes {seen:?}");
        assert!(rejected < 700, "{rejected}");
        for outcome in ["true", "false", "error"] {
            assert!(seen.get(outcome).copied().unwrap_or(0) > 100, "{seen:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn agrees_with_reference(g in expr(), w in world_strategy()) {
            let src = render(&g);
            let c = match Condition::compile(&src, "t") {
                Ok(c) => c,
                Err(Error::Policy { message, .. }) => {
                    // Only static rejections: the renderer writes well-formed syntax.
                    prop_assert!(
                        message.contains("type error") || message.contains("always fails"),
                        "{src}: {message}"
                    );
                    return Ok(());
                }
                Err(e) => return Err(TestCaseError::fail(format!("{src}: {e}"))),
            };
            let got = match c.evaluate(&w.facts()) {
                Outcome::True => "true",
                Outcome::False => "false",
                Outcome::Error(_) => "error",
            };
            prop_assert_eq!(got, r_outcome(&g, &w), "{} over {:?}", src, w);
            if let Some(b) = c.constant() {
                prop_assert_eq!(if b { "true" } else { "false" }, got, "{}", src);
            }
        }
    }
}
