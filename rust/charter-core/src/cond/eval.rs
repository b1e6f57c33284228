//! Evaluation: a walk over the compiled arena that borrows every value it
//! reads (from the condition's constants or the [`Env`]), so the common case
//! allocates nothing. Fail closed: a missing attribute or a type mismatch
//! anywhere makes the whole condition an error; only `false and _` and
//! `true or _` skip their right side.

use std::cmp::Ordering;
use std::fmt::{self, Write as _};

use super::check::{AttrSpec, Node, Program};
use super::parse::{CmpOp, Method, Root};
use super::value::{write_float, write_str_literal, Map, Value};
use super::{AgentView, Env, Failure, FailureKind, Outcome};
use crate::pattern::Pattern;

/// How deep `==` descends into nested lists and maps before giving up (a mismatch).
const MAX_VALUE_DEPTH: u32 = 32;
/// How many characters of a value a failure quotes.
const QUOTE_CHARS: usize = 48;
/// Resource names with more segments than this are split on the heap.
const STACK_SEGMENTS: usize = 32;

const NS_PER_S: u64 = 1_000_000_000;

/// A value during evaluation, borrowed from the condition or the environment.
#[derive(Debug, Clone, Copy)]
pub(crate) enum V<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    List(Items<'a>),
    Map(&'a Map),
}

/// A borrowed list: values, or the resource's class names.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Items<'a> {
    Values(&'a [Value]),
    Names(&'a [&'a str]),
}

impl<'a> Items<'a> {
    fn len(self) -> usize {
        match self {
            Items::Values(v) => v.len(),
            Items::Names(n) => n.len(),
        }
    }

    fn get(self, i: usize) -> Option<V<'a>> {
        match self {
            Items::Values(v) => v.get(i).map(V::of),
            Items::Names(n) => n.get(i).map(|s| V::Str(s)),
        }
    }
}

impl<'a> V<'a> {
    #[cfg_attr(not(debug_assertions), inline(always))]
    fn of(v: &'a Value) -> V<'a> {
        match v {
            Value::Null => V::Null,
            Value::Bool(b) => V::Bool(*b),
            Value::Int(i) => V::Int(*i),
            Value::Float(f) => V::Float(*f),
            Value::Str(s) => V::Str(s),
            Value::List(items) => V::List(Items::Values(items)),
            Value::Map(m) => V::Map(m),
        }
    }

    /// An owned copy (constant folding).
    pub(crate) fn to_value(self) -> Value {
        match self {
            V::Null => Value::Null,
            V::Bool(b) => Value::Bool(b),
            V::Int(i) => Value::Int(i),
            V::Float(f) => Value::Float(f),
            V::Str(s) => Value::Str(s.into()),
            V::List(Items::Values(v)) => Value::List(v.into()),
            V::List(Items::Names(n)) => {
                Value::List(n.iter().map(|s| Value::Str((*s).into())).collect())
            }
            V::Map(m) => Value::Map(m.clone()),
        }
    }

    fn type_name(self) -> &'static str {
        match self {
            V::Null => "null",
            V::Bool(_) => "bool",
            V::Int(_) => "int",
            V::Float(_) => "float",
            V::Str(_) => "string",
            V::List(_) => "list",
            V::Map(_) => "map",
        }
    }
}

impl fmt::Display for V<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            V::Null => f.write_str("null"),
            V::Bool(b) => write!(f, "{b}"),
            V::Int(i) => write!(f, "{i}"),
            V::Float(x) => write_float(f, x),
            V::Str(s) => write_str_literal(f, s),
            V::List(items) => {
                f.write_str("[")?;
                for i in 0..items.len() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    if let Some(x) = items.get(i) {
                        write!(f, "{x}")?;
                    }
                }
                f.write_str("]")
            }
            V::Map(m) => write!(f, "{}", Value::Map(m.clone())),
        }
    }
}

/// A `fmt::Write` that stops (with an error) once it holds `QUOTE_CHARS` characters.
struct Capped(String, usize);

impl fmt::Write for Capped {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if self.1 == QUOTE_CHARS {
                return Err(fmt::Error);
            }
            self.0.push(c);
            self.1 += 1;
        }
        Ok(())
    }
}

/// A value's type and its text, truncated, for failures: ``string `"abc"` ``.
#[cold]
fn quote(v: V<'_>) -> String {
    let mut out = Capped(String::new(), 0);
    let complete = match v {
        // A map is cloned to be printed: print large ones by their size only.
        V::Map(m) if m.len() > 8 => write!(out, "{{... {} keys}}", m.len()).is_ok(),
        _ => write!(out, "{v}").is_ok(),
    };
    let ellipsis = if complete { "" } else { "..." };
    format!("{} `{}{ellipsis}`", v.type_name(), out.0)
}

/// An environment with nothing in it: constant folding reads no attribute.
pub(crate) struct NoEnv;

impl Env for NoEnv {
    fn context(&self, _: &str) -> Option<&Value> {
        None
    }
    fn resource_name(&self) -> Option<&str> {
        None
    }
    fn resource_classes(&self) -> &[&str] {
        &[]
    }
    fn agent(&self) -> Option<AgentView<'_>> {
        None
    }
    fn principal_id(&self) -> Option<&str> {
        None
    }
    fn principal_attribute(&self, _: &str) -> Option<&Value> {
        None
    }
    fn now_ns(&self) -> u64 {
        0
    }
}

type Eval<'a> = Result<V<'a>, Box<Failure>>;
type Test = Result<bool, Box<Failure>>;

// Only leaves (`Const`, `Attr`) produce non-boolean values; every other node
// is a test. Tests return `Result<bool, _>`, which fits in registers: the
// walk passes no value through memory on the hot path.
impl Program {
    /// Evaluate the whole condition.
    pub(crate) fn run(&self, env: &dyn Env) -> Outcome {
        match self.truth(self.root, env, "a condition") {
            Ok(true) => Outcome::True,
            Ok(false) => Outcome::False,
            Err(f) => Outcome::Error(*f),
        }
    }

    /// The value of node `i` (constant folding reads it).
    pub(crate) fn eval_node<'a>(&'a self, i: u32, env: &'a dyn Env) -> Eval<'a> {
        self.value(i, env)
    }

    /// The value of node `i`: leaves inline, tests as booleans.
    #[cfg_attr(not(debug_assertions), inline(always))]
    fn value<'a>(&'a self, i: u32, env: &'a dyn Env) -> Eval<'a> {
        match self.nodes.get(i as usize) {
            Some(Node::Const(c)) => self.consts.get(*c as usize).map(V::of).ok_or_else(corrupt),
            Some(Node::Attr(a)) => {
                let spec = self.attrs.get(*a as usize).ok_or_else(corrupt)?;
                lookup(spec, env).ok_or_else(|| missing(spec, env))
            }
            _ => self.test(i, env).map(V::Bool),
        }
    }

    /// Node `i` as an operand of `what` (`and`, `or`, `not`, the condition):
    /// it must be a boolean.
    #[inline]
    fn truth(&self, i: u32, env: &dyn Env, what: &str) -> Test {
        match self.nodes.get(i as usize) {
            Some(Node::Const(_) | Node::Attr(_)) => match self.value(i, env)? {
                V::Bool(b) => Ok(b),
                v => Err(self.not_bool(i, v, what)),
            },
            _ => self.test(i, env),
        }
    }

    /// Evaluate test node `i`. Recursion depth is bounded by the tree height limit.
    fn test(&self, i: u32, env: &dyn Env) -> Test {
        let Some(&node) = self.nodes.get(i as usize) else {
            return Err(corrupt());
        };
        match node {
            Node::Const(_) | Node::Attr(_) => self.truth(i, env, "a test"),
            Node::Has(a) => {
                let spec = self.attrs.get(a as usize).ok_or_else(corrupt)?;
                Ok(lookup(spec, env).is_some())
            }
            Node::Not(x) => Ok(!self.truth(x, env, "`not`")?),
            Node::And(l, r) => Ok(self.truth(l, env, "`and`")? && self.truth(r, env, "`and`")?),
            Node::Or(l, r) => Ok(self.truth(l, env, "`or`")? || self.truth(r, env, "`or`")?),
            Node::Cmp(op, l, r) => {
                let a = self.value(l, env)?;
                let b = self.value(r, env)?;
                let res = match op {
                    CmpOp::Eq => equal(a, b, 0),
                    CmpOp::Ne => equal(a, b, 0).map(|x| !x),
                    CmpOp::Lt => order(a, b).map(Ordering::is_lt),
                    CmpOp::Le => order(a, b).map(Ordering::is_le),
                    CmpOp::Gt => order(a, b).map(Ordering::is_gt),
                    CmpOp::Ge => order(a, b).map(Ordering::is_ge),
                };
                res.ok_or_else(|| self.mismatch(i, cannot_compare(a, b, op.symbol())))
            }
            Node::In { lhs, rhs, negated } => {
                let a = self.value(lhs, env)?;
                let b = self.value(rhs, env)?;
                match contains(a, b) {
                    Some(x) => Ok(x != negated),
                    None => Err(self.mismatch(i, cannot_look_for(a, b))),
                }
            }
            Node::InList { lhs, list, negated } => {
                let a = self.value(lhs, env)?;
                let items = self.lists.get(list as usize).ok_or_else(corrupt)?;
                let mut found = false;
                for &item in items {
                    let b = self.value(item, env)?;
                    match equal(a, b, 0) {
                        Some(x) => found |= x,
                        None => return Err(self.mismatch(i, cannot_compare(a, b, "in"))),
                    }
                }
                Ok(found != negated)
            }
            Node::Text {
                method,
                subject,
                arg,
            } => match (self.value(subject, env)?, self.value(arg, env)?) {
                (V::Str(s), V::Str(t)) => Ok(match method {
                    Method::EndsWith => s.ends_with(t),
                    _ => s.starts_with(t),
                }),
                (s, t) => Err(self.mismatch(i, not_strings(method, s, t))),
            },
            Node::Matches { subject, pattern } => {
                let s = self.value(subject, env)?;
                let p = self.patterns.get(pattern as usize).ok_or_else(corrupt)?;
                match s {
                    V::Str(s) if is_segmented(s) => Ok(glob(p, s)),
                    _ => Err(self.mismatch(i, not_a_name(s))),
                }
            }
        }
    }

    /// The source text of node `i`.
    fn text(&self, i: u32) -> &str {
        self.spans
            .get(i as usize)
            .and_then(|&(s, e)| self.src.get(s as usize..e as usize))
            .unwrap_or("")
    }

    #[cold]
    fn mismatch(&self, i: u32, detail: String) -> Box<Failure> {
        Box::new(Failure {
            kind: FailureKind::TypeMismatch,
            path_or_expr: self.text(i).to_string(),
            detail,
        })
    }

    #[cold]
    fn not_bool(&self, i: u32, v: V<'_>, what: &str) -> Box<Failure> {
        self.mismatch(i, format!("{what} needs true or false, found {}", quote(v)))
    }
}

#[cold]
fn corrupt() -> Box<Failure> {
    Box::new(Failure {
        kind: FailureKind::TypeMismatch,
        path_or_expr: String::new(),
        detail: "internal error: malformed condition".into(),
    })
}

#[cold]
fn cannot_compare(a: V<'_>, b: V<'_>, op: &str) -> String {
    if op == "in" {
        return format!(
            "cannot compare {} with the list element {}",
            quote(a),
            quote(b)
        );
    }
    format!("cannot compare {} with {} using `{op}`", quote(a), quote(b))
}

#[cold]
fn not_strings(method: Method, s: V<'_>, t: V<'_>) -> String {
    format!(
        "`{}` needs strings, found {} and {}",
        method.name(),
        quote(s),
        quote(t)
    )
}

#[cold]
fn not_a_name(s: V<'_>) -> String {
    format!(
        "`matches` needs a `/`-separated name without empty segments, found {}",
        quote(s)
    )
}

#[cold]
fn cannot_look_for(a: V<'_>, b: V<'_>) -> String {
    match b {
        V::List(_) => format!(
            "cannot compare {} with the elements of {}",
            quote(a),
            quote(b)
        ),
        V::Str(_) | V::Map(_) => format!(
            "cannot look for {} in {}: only a string can be",
            quote(a),
            quote(b)
        ),
        _ => format!(
            "`in` needs a list, a string or a map on its right, found {}",
            quote(b)
        ),
    }
}

/// Read an attribute; `None` when it is absent. Inlined: returning the
/// value through memory costs a store-forwarding stall on the hot path.
#[cfg_attr(not(debug_assertions), inline(always))]
fn lookup<'a>(spec: &'a AttrSpec, env: &'a dyn Env) -> Option<V<'a>> {
    // The usual read, without the jump table below.
    if spec.root == Root::Context {
        let (first, rest) = spec.keys.split_first()?;
        return descend(env.context(first)?, rest);
    }
    let now = || env.now_ns();
    Some(match spec.root {
        Root::Context => {
            let (first, rest) = spec.keys.split_first()?;
            return descend(env.context(first)?, rest);
        }
        Root::Principal => {
            let (first, rest) = spec.keys.split_first()?;
            return descend(env.principal_attribute(first)?, rest);
        }
        Root::PrincipalId => V::Str(env.principal_id()?),
        Root::ResourceName => V::Str(env.resource_name()?),
        Root::ResourceClass => {
            env.resource_name()?;
            V::List(Items::Names(env.resource_classes()))
        }
        Root::AgentId => V::Str(env.agent()?.id),
        Root::AgentTemplate => V::Str(env.agent()?.template),
        Root::AgentDepth => V::Int(i64::from(env.agent()?.depth)),
        Root::AgentDelegator => env.agent()?.delegator.map_or(V::Null, V::Str),
        Root::AgentAge => {
            let ns = now().saturating_sub(env.agent()?.created_at_ns);
            V::Float(seconds(ns))
        }
        Root::TimeHour => V::Int(((now() / NS_PER_S / 3600) % 24) as i64),
        // 1970-01-01 was a Thursday: weekday 3 with Monday = 0.
        Root::TimeWeekday => V::Int(((now() / NS_PER_S / 86_400 + 3) % 7) as i64),
        Root::TimeNow => V::Float(seconds(now())),
    })
}

fn seconds(ns: u64) -> f64 {
    (ns / NS_PER_S) as f64 + (ns % NS_PER_S) as f64 / NS_PER_S as f64
}

#[cfg_attr(not(debug_assertions), inline(always))]
fn descend<'a>(mut v: &'a Value, keys: &[Box<str>]) -> Option<V<'a>> {
    for k in keys {
        match v {
            Value::Map(m) => v = m.get(k)?,
            _ => return None,
        }
    }
    Some(V::of(v))
}

/// Which part of `spec` is absent, in words.
#[cold]
fn missing(spec: &AttrSpec, env: &dyn Env) -> Box<Failure> {
    let no_principal = env.principal_id().is_none();
    let detail = match spec.root {
        Root::Context => missing_key(spec, "context", "the context has no key", |k| {
            env.context(k)
        }),
        Root::Principal if no_principal => "the request has no principal".to_string(),
        Root::Principal => missing_key(spec, "principal", "the principal has no attribute", |k| {
            env.principal_attribute(k)
        }),
        Root::PrincipalId => "the request has no principal".to_string(),
        Root::ResourceName | Root::ResourceClass => "the request names no resource".to_string(),
        _ => "the subject is not an agent".to_string(),
    };
    Box::new(Failure {
        kind: FailureKind::Missing,
        path_or_expr: spec.display.to_string(),
        detail,
    })
}

fn missing_key<'e>(
    spec: &AttrSpec,
    root: &str,
    top: &str,
    get: impl Fn(&str) -> Option<&'e Value>,
) -> String {
    let Some((first, rest)) = spec.keys.split_first() else {
        return String::new();
    };
    let Some(mut v) = get(first) else {
        return format!("{top} `{first}`");
    };
    let mut prefix = format!("{root}.{first}");
    for k in rest {
        match v {
            Value::Map(m) => match m.get(k) {
                Some(x) => v = x,
                None => return format!("`{prefix}` has no key `{k}`"),
            },
            other => return format!("`{prefix}` is {}, not a map", quote(V::of(other))),
        }
        prefix.push('.');
        prefix.push_str(k);
    }
    String::new()
}

/// `a == b`, or `None` when the types cannot be compared. Null equals only
/// null and compares with anything; numbers compare by value across int and
/// float; lists and maps compare element by element.
pub(crate) fn equal(a: V<'_>, b: V<'_>, depth: u32) -> Option<bool> {
    match (a, b) {
        (V::Null, V::Null) => Some(true),
        (V::Null, _) | (_, V::Null) => Some(false),
        (V::Bool(x), V::Bool(y)) => Some(x == y),
        (V::Str(x), V::Str(y)) => Some(x == y),
        (V::List(x), V::List(y)) => {
            if depth >= MAX_VALUE_DEPTH {
                return None;
            }
            if x.len() != y.len() {
                return Some(false);
            }
            let mut all = true;
            for i in 0..x.len() {
                all &= equal(x.get(i)?, y.get(i)?, depth + 1)?;
            }
            Some(all)
        }
        (V::Map(x), V::Map(y)) => {
            if depth >= MAX_VALUE_DEPTH {
                return None;
            }
            if x.len() != y.len() || x.iter().zip(y.iter()).any(|((j, _), (k, _))| j != k) {
                return Some(false);
            }
            let mut all = true;
            for ((_, p), (_, q)) in x.iter().zip(y.iter()) {
                all &= equal(V::of(p), V::of(q), depth + 1)?;
            }
            Some(all)
        }
        _ => numbers(a, b).map(Ordering::is_eq),
    }
}

/// Ordering of numbers and of strings; `None` for anything else (and NaN).
pub(crate) fn order(a: V<'_>, b: V<'_>) -> Option<Ordering> {
    match (a, b) {
        (V::Str(x), V::Str(y)) => Some(x.cmp(y)),
        _ => numbers(a, b),
    }
}

fn numbers(a: V<'_>, b: V<'_>) -> Option<Ordering> {
    match (a, b) {
        (V::Int(x), V::Int(y)) => Some(x.cmp(&y)),
        (V::Float(x), V::Float(y)) => x.partial_cmp(&y),
        (V::Int(x), V::Float(y)) => int_float(x, y),
        (V::Float(x), V::Int(y)) => int_float(y, x).map(Ordering::reverse),
        _ => None,
    }
}

/// Exact comparison of an int with a float (no rounding of large ints).
fn int_float(i: i64, f: f64) -> Option<Ordering> {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if f.is_nan() {
        return None;
    }
    if f >= TWO_63 {
        return Some(Ordering::Less);
    }
    if f < -TWO_63 {
        return Some(Ordering::Greater);
    }
    let t = f.trunc();
    // In range and integral: exact.
    Some(i.cmp(&(t as i64)).then(if f > t {
        Ordering::Less
    } else if f < t {
        Ordering::Greater
    } else {
        Ordering::Equal
    }))
}

/// `a in b`: list membership, substring, or map key; `None` on a type mismatch.
/// Every list element must be comparable with `a`, found or not.
fn contains(a: V<'_>, b: V<'_>) -> Option<bool> {
    match (a, b) {
        (_, V::List(items)) => {
            let mut found = false;
            for i in 0..items.len() {
                found |= equal(a, items.get(i)?, 0)?;
            }
            Some(found)
        }
        (V::Str(needle), V::Str(hay)) => Some(hay.contains(needle)),
        (V::Str(key), V::Map(m)) => Some(m.get(key).is_some()),
        _ => None,
    }
}

/// Non-empty, no empty segment: what a resource name must be.
fn is_segmented(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('/') && !s.ends_with('/') && !s.contains("//")
}

/// Match `s` against a resource glob, splitting it on the stack.
fn glob(p: &Pattern, s: &str) -> bool {
    let mut buf: [&str; STACK_SEGMENTS] = [""; STACK_SEGMENTS];
    let mut n = 0;
    for seg in s.split('/') {
        match buf.get_mut(n) {
            Some(slot) => *slot = seg,
            None => return p.matches(&s.split('/').collect::<Vec<_>>()),
        }
        n += 1;
    }
    p.matches(buf.get(..n).unwrap_or(&[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_float_is_exact() {
        use Ordering::*;
        assert_eq!(int_float(1, 1.0), Some(Equal));
        assert_eq!(int_float(1, 1.5), Some(Less));
        assert_eq!(int_float(2, 1.5), Some(Greater));
        assert_eq!(int_float(-1, -1.5), Some(Greater));
        assert_eq!(int_float(-2, -1.5), Some(Less));
        assert_eq!(int_float(0, -0.0), Some(Equal));
        assert_eq!(int_float(i64::MAX, 9_223_372_036_854_775_808.0), Some(Less));
        assert_eq!(
            int_float(i64::MIN, -9_223_372_036_854_775_808.0),
            Some(Equal)
        );
        // 2^53 + 1 is not a float; a rounding comparison would call them equal.
        assert_eq!(
            int_float(9_007_199_254_740_993, 9_007_199_254_740_992.0),
            Some(Greater)
        );
        assert_eq!(int_float(5, f64::INFINITY), Some(Less));
        assert_eq!(int_float(5, f64::NEG_INFINITY), Some(Greater));
        assert_eq!(int_float(5, f64::NAN), None);
    }

    #[test]
    fn glob_splits_long_names_on_the_heap() {
        let p = Pattern::parse("a/**/z", "t").unwrap();
        let long = format!("a/{}z", "x/".repeat(100));
        assert!(glob(&p, &long));
        assert!(glob(&p, "a/z"));
        assert!(!glob(&p, "a/y"));
    }

    #[test]
    fn quotes_are_truncated() {
        let long = "x".repeat(100);
        let q = quote(V::Str(&long));
        assert_eq!(q, format!("string `\"{}...`", "x".repeat(QUOTE_CHARS - 1)));
        assert_eq!(quote(V::Int(5)), "int `5`");
        assert_eq!(quote(V::Float(0.5)), "float `0.5`");
        let names = ["a", "b"];
        assert_eq!(
            quote(V::List(Items::Names(&names))),
            "list `[\"a\", \"b\"]`"
        );
        let big = Map::new((0..20).map(|i| (format!("k{i}"), Value::Int(i))));
        assert_eq!(quote(V::Map(&big)), "map `{... 20 keys}`");
    }

    #[test]
    fn deep_values_are_a_mismatch_not_a_crash() {
        let mut v = Value::Int(1);
        for _ in 0..100 {
            v = Value::List(vec![v].into());
        }
        assert_eq!(equal(V::of(&v), V::of(&v), 0), None);
    }
}
