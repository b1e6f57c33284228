//! Load-time checking: static types where they are known, constant folding,
//! and lowering of the syntax tree to the compact arena the evaluator walks.

use super::eval::NoEnv;
use super::parse::{line_col, CmpOp, Expr, ExprKind, Method, PathExpr, Root};
use super::value::Value;
use crate::error::{Error, Result};
use crate::pattern::Pattern;

/// Possible runtime types of an expression, as a bit set.
pub(crate) type Ty = u8;
pub(crate) const NULL: Ty = 1;
pub(crate) const BOOL: Ty = 2;
pub(crate) const INT: Ty = 4;
pub(crate) const FLOAT: Ty = 8;
pub(crate) const STR: Ty = 16;
pub(crate) const LIST: Ty = 32;
pub(crate) const MAP: Ty = 64;
const NUM: Ty = INT | FLOAT;
/// Unknown until evaluation (`context.*`, `principal.<attribute>`).
const DYN: Ty = NULL | BOOL | NUM | STR | LIST | MAP;

/// One node of the compiled arena. Children are indices into
/// [`Program::nodes`]; every child index is smaller than its parent's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Node {
    /// `consts[i]`.
    Const(u32),
    /// Read `attrs[i]`.
    Attr(u32),
    /// Whether `attrs[i]` is present.
    Has(u32),
    Not(u32),
    And(u32, u32),
    Or(u32, u32),
    Cmp(CmpOp, u32, u32),
    In {
        lhs: u32,
        rhs: u32,
        negated: bool,
    },
    /// `lhs in [e1, e2, ...]` with attribute reads among the elements (`lists[list]`).
    InList {
        lhs: u32,
        list: u32,
        negated: bool,
    },
    /// `startswith` / `endswith`.
    Text {
        method: Method,
        subject: u32,
        arg: u32,
    },
    /// `subject.matches(patterns[pattern])`.
    Matches {
        subject: u32,
        pattern: u32,
    },
}

/// An attribute path as the evaluator reads it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AttrSpec {
    pub(crate) root: Root,
    pub(crate) keys: Box<[Box<str>]>,
    pub(crate) display: Box<str>,
}

/// A compiled condition: the arena, its constant pool and side tables.
#[derive(Debug, Clone)]
pub(crate) struct Program {
    pub(crate) src: Box<str>,
    pub(crate) nodes: Vec<Node>,
    /// Byte span of each node in `src` (read only to build failures).
    pub(crate) spans: Vec<(u32, u32)>,
    pub(crate) consts: Vec<Value>,
    pub(crate) attrs: Vec<AttrSpec>,
    pub(crate) lists: Vec<Box<[u32]>>,
    pub(crate) patterns: Vec<Pattern>,
    pub(crate) root: u32,
}

/// What lowering one subtree produced.
#[derive(Debug, Clone, Copy)]
struct Lowered {
    idx: u32,
    ty: Ty,
    /// Element types when `ty` is a list whose elements are known.
    elem: Ty,
    /// Whether the subtree reads an attribute (otherwise it folds).
    reads: bool,
}

/// Lengths of the growable tables, to drop a subtree's entries.
#[derive(Debug, Clone, Copy)]
struct Mark {
    nodes: usize,
    consts: usize,
    lists: usize,
    patterns: usize,
}

/// Type-check and lower `ast`, parsed from `src`; `path` names it in errors.
pub(crate) fn lower(src: &str, ast: &Expr, path: &str) -> Result<Program> {
    let mut b = Builder {
        path,
        p: Program {
            src: src.into(),
            nodes: Vec::new(),
            spans: Vec::new(),
            consts: Vec::new(),
            attrs: Vec::new(),
            lists: Vec::new(),
            patterns: Vec::new(),
            root: 0,
        },
    };
    let top = b.lower(ast)?;
    if top.ty & BOOL == 0 {
        return Err(b.type_error(
            ast.start,
            format!(
                "a condition must be true or false, found {} `{}`",
                ty_name(top.ty),
                b.text(ast)
            ),
        ));
    }
    b.p.root = top.idx;
    let mut p = b.p;
    p.nodes.shrink_to_fit();
    p.spans.shrink_to_fit();
    p.consts.shrink_to_fit();
    p.attrs.shrink_to_fit();
    Ok(p)
}

struct Builder<'p> {
    path: &'p str,
    p: Program,
}

impl Builder<'_> {
    fn mark(&self) -> Mark {
        Mark {
            nodes: self.p.nodes.len(),
            consts: self.p.consts.len(),
            lists: self.p.lists.len(),
            patterns: self.p.patterns.len(),
        }
    }

    fn truncate(&mut self, m: Mark) {
        self.p.nodes.truncate(m.nodes);
        self.p.spans.truncate(m.nodes);
        self.p.consts.truncate(m.consts);
        self.p.lists.truncate(m.lists);
        self.p.patterns.truncate(m.patterns);
    }

    fn push(&mut self, node: Node, e: &Expr) -> u32 {
        self.p.nodes.push(node);
        self.p.spans.push((e.start, e.end));
        (self.p.nodes.len() - 1) as u32
    }

    fn push_const(&mut self, v: Value, e: &Expr) -> Lowered {
        let (ty, elem) = (ty_of(&v), elem_of(&v));
        self.p.consts.push(v);
        let c = (self.p.consts.len() - 1) as u32;
        Lowered {
            idx: self.push(Node::Const(c), e),
            ty,
            elem,
            reads: false,
        }
    }

    fn const_value(&self, l: Lowered) -> Option<&Value> {
        match self.p.nodes.get(l.idx as usize) {
            Some(Node::Const(c)) => self.p.consts.get(*c as usize),
            _ => None,
        }
    }

    fn text<'s>(&'s self, e: &Expr) -> &'s str {
        self.p
            .src
            .get(e.start as usize..e.end as usize)
            .unwrap_or("")
    }

    #[cold]
    fn error(&self, at: u32, message: impl std::fmt::Display) -> Error {
        let (line, col) = line_col(&self.p.src, at as usize);
        Error::policy(self.path, format!("{line}:{col}: {message}"))
    }

    #[cold]
    fn type_error(&self, at: u32, message: impl std::fmt::Display) -> Error {
        self.error(at, format_args!("type error: {message}"))
    }

    /// `what needs true or false` unless `l` may be a boolean.
    fn require_bool(&self, l: Lowered, e: &Expr, what: &str) -> Result<()> {
        if l.ty & BOOL != 0 {
            return Ok(());
        }
        Err(self.type_error(
            e.start,
            format!(
                "{what} needs true or false, found {} `{}`",
                ty_name(l.ty),
                self.text(e)
            ),
        ))
    }

    fn attr(&mut self, p: &PathExpr) -> u32 {
        if let Some(i) = self.p.attrs.iter().position(|a| *a.display == *p.display) {
            return i as u32;
        }
        self.p.attrs.push(AttrSpec {
            root: p.root,
            keys: p.keys.clone().into_boxed_slice(),
            display: p.display.as_str().into(),
        });
        (self.p.attrs.len() - 1) as u32
    }

    fn lower(&mut self, e: &Expr) -> Result<Lowered> {
        let mark = self.mark();
        let l = match &e.kind {
            ExprKind::Lit(v) => return Ok(self.push_const(v.clone(), e)),
            ExprKind::List(items) => return self.const_list(items, e, mark),
            ExprKind::Path(p) => {
                let a = self.attr(p);
                let (ty, elem) = root_ty(p.root);
                Lowered {
                    idx: self.push(Node::Attr(a), e),
                    ty,
                    elem,
                    reads: true,
                }
            }
            ExprKind::Has(p) => {
                let a = self.attr(p);
                Lowered {
                    idx: self.push(Node::Has(a), e),
                    ty: BOOL,
                    elem: 0,
                    reads: true,
                }
            }
            ExprKind::Not(x) => {
                let lx = self.lower(x)?;
                self.require_bool(lx, x, "`not`")?;
                self.boolean(Node::Not(lx.idx), e, lx.reads)
            }
            ExprKind::And(a, b) | ExprKind::Or(a, b) => {
                let is_and = matches!(e.kind, ExprKind::And(..));
                let word = if is_and { "`and`" } else { "`or`" };
                let la = self.lower(a)?;
                self.require_bool(la, a, word)?;
                let after_a = self.mark();
                let lb = self.lower(b)?;
                self.require_bool(lb, b, word)?;
                if let Some(Value::Bool(v)) = self.const_value(la) {
                    // `false and x` is false and `true or x` is true without reading x.
                    if *v != is_and {
                        self.truncate(after_a);
                        return Ok(la);
                    }
                    // `true and x` is `x` when x is surely a boolean.
                    if lb.ty == BOOL {
                        return Ok(lb);
                    }
                }
                let node = if is_and {
                    Node::And(la.idx, lb.idx)
                } else {
                    Node::Or(la.idx, lb.idx)
                };
                self.boolean(node, e, la.reads || lb.reads)
            }
            ExprKind::Cmp(op, a, b) => {
                let (la, lb) = (self.lower(a)?, self.lower(b)?);
                let ok = match op {
                    CmpOp::Eq | CmpOp::Ne => may_equal(la.ty, lb.ty),
                    _ => may_order(la.ty, lb.ty),
                };
                if !ok {
                    return Err(self.type_error(
                        e.start,
                        format!(
                            "cannot compare {} `{}` with {} `{}` using `{}`",
                            ty_name(la.ty),
                            self.text(a),
                            ty_name(lb.ty),
                            self.text(b),
                            op.symbol()
                        ),
                    ));
                }
                self.boolean(Node::Cmp(*op, la.idx, lb.idx), e, la.reads || lb.reads)
            }
            ExprKind::In { lhs, rhs, negated } => self.membership(lhs, rhs, *negated, e)?,
            ExprKind::Method(m, subject, arg) => self.method(*m, subject, arg, e)?,
        };
        if l.reads {
            Ok(l)
        } else {
            self.fold(l, e, mark)
        }
    }

    fn boolean(&mut self, node: Node, e: &Expr, reads: bool) -> Lowered {
        Lowered {
            idx: self.push(node, e),
            ty: BOOL,
            elem: 0,
            reads,
        }
    }

    /// Evaluate an attribute-free subtree now and replace it with its value.
    fn fold(&mut self, l: Lowered, e: &Expr, mark: Mark) -> Result<Lowered> {
        let v = self
            .p
            .eval_node(l.idx, &NoEnv)
            .map(super::eval::V::to_value);
        match v {
            Ok(v) => {
                self.truncate(mark);
                Ok(self.push_const(v, e))
            }
            Err(f) => Err(self.error(e.start, format_args!("this expression always fails: {f}"))),
        }
    }

    /// A list literal outside `in`: every element must be constant.
    fn const_list(&mut self, items: &[Expr], e: &Expr, mark: Mark) -> Result<Lowered> {
        let mut values = Vec::with_capacity(items.len());
        for item in items {
            let li = self.lower(item)?;
            match self.const_value(li) {
                Some(v) => values.push(v.clone()),
                None => {
                    return Err(self.type_error(
                        item.start,
                        "a list with attribute reads can only appear on the right of `in`",
                    ))
                }
            }
        }
        self.truncate(mark);
        Ok(self.push_const(Value::List(values.into_boxed_slice()), e))
    }

    fn membership(&mut self, lhs: &Expr, rhs: &Expr, negated: bool, e: &Expr) -> Result<Lowered> {
        let ll = self.lower(lhs)?;
        let mismatch = |b: &Self, what: String| {
            b.type_error(
                e.start,
                format!(
                    "cannot look for {} `{}` in {what}",
                    ty_name(ll.ty),
                    b.text(lhs)
                ),
            )
        };
        if let ExprKind::List(items) = &rhs.kind {
            let mark = self.mark();
            let mut elems = Vec::with_capacity(items.len());
            for item in items {
                let li = self.lower(item)?;
                if !may_equal(ll.ty, li.ty) {
                    let what = format!("a list holding {} `{}`", ty_name(li.ty), self.text(item));
                    return Err(mismatch(self, what));
                }
                elems.push(li);
            }
            if elems.iter().any(|x| x.reads) {
                self.p.lists.push(elems.iter().map(|x| x.idx).collect());
                let list = (self.p.lists.len() - 1) as u32;
                return Ok(self.boolean(
                    Node::InList {
                        lhs: ll.idx,
                        list,
                        negated,
                    },
                    e,
                    true,
                ));
            }
            self.truncate(mark);
            let lr = self.const_list(items, rhs, self.mark())?;
            return Ok(self.boolean(
                Node::In {
                    lhs: ll.idx,
                    rhs: lr.idx,
                    negated,
                },
                e,
                ll.reads,
            ));
        }
        let lr = self.lower(rhs)?;
        let list_ok = lr.ty & LIST != 0
            && match self.const_value(lr) {
                Some(Value::List(items)) => items.iter().all(|x| may_equal(ll.ty, ty_of(x))),
                _ => may_equal(ll.ty, lr.elem),
            };
        let text_ok = lr.ty & (STR | MAP) != 0 && ll.ty & STR != 0;
        if !list_ok && !text_ok {
            let what = format!("{} `{}`", ty_name(lr.ty), self.text(rhs));
            return Err(mismatch(self, what));
        }
        let node = Node::In {
            lhs: ll.idx,
            rhs: lr.idx,
            negated,
        };
        Ok(self.boolean(node, e, ll.reads || lr.reads))
    }

    fn method(&mut self, m: Method, subject: &Expr, arg: &Expr, e: &Expr) -> Result<Lowered> {
        let ls = self.lower(subject)?;
        if ls.ty & STR == 0 {
            return Err(self.type_error(
                e.start,
                format!(
                    "`{}` needs a string, found {} `{}`",
                    m.name(),
                    ty_name(ls.ty),
                    self.text(subject)
                ),
            ));
        }
        let after_subject = self.mark();
        let la = self.lower(arg)?;
        if m == Method::Matches {
            let Some(Value::Str(glob)) = self.const_value(la) else {
                return Err(self.type_error(
                    arg.start,
                    format!(
                        "`matches` needs a pattern in double quotes, found `{}`",
                        self.text(arg)
                    ),
                ));
            };
            let pattern = Pattern::parse(glob, self.path).map_err(|err| match err {
                Error::Policy { message, .. } => self.error(arg.start, message),
                other => other,
            })?;
            self.truncate(after_subject);
            self.p.patterns.push(pattern);
            let pattern = (self.p.patterns.len() - 1) as u32;
            return Ok(self.boolean(
                Node::Matches {
                    subject: ls.idx,
                    pattern,
                },
                e,
                ls.reads,
            ));
        }
        if la.ty & STR == 0 {
            return Err(self.type_error(
                arg.start,
                format!(
                    "`{}` needs a string argument, found {} `{}`",
                    m.name(),
                    ty_name(la.ty),
                    self.text(arg)
                ),
            ));
        }
        let node = Node::Text {
            method: m,
            subject: ls.idx,
            arg: la.idx,
        };
        Ok(self.boolean(node, e, ls.reads || la.reads))
    }
}

/// Static type of an attribute, and of its elements when it is a list.
fn root_ty(r: Root) -> (Ty, Ty) {
    match r {
        Root::Context | Root::Principal => (DYN, DYN),
        Root::PrincipalId | Root::ResourceName | Root::AgentId | Root::AgentTemplate => (STR, 0),
        Root::ResourceClass => (LIST, STR),
        Root::AgentDepth | Root::TimeHour | Root::TimeWeekday => (INT, 0),
        Root::AgentDelegator => (STR | NULL, 0),
        Root::AgentAge | Root::TimeNow => (FLOAT, 0),
    }
}

pub(crate) fn ty_of(v: &Value) -> Ty {
    match v {
        Value::Null => NULL,
        Value::Bool(_) => BOOL,
        Value::Int(_) => INT,
        Value::Float(_) => FLOAT,
        Value::Str(_) => STR,
        Value::List(_) => LIST,
        Value::Map(_) => MAP,
    }
}

fn elem_of(v: &Value) -> Ty {
    match v {
        Value::List(items) => items.iter().fold(0, |t, x| t | ty_of(x)),
        _ => 0,
    }
}

/// Whether `==` between these types can succeed (null compares with anything).
fn may_equal(a: Ty, b: Ty) -> bool {
    (a | b) & NULL != 0 || (a & NUM != 0 && b & NUM != 0) || a & b & (BOOL | STR | LIST | MAP) != 0
}

/// Whether `<` between these types can succeed (numbers with numbers, strings with strings).
fn may_order(a: Ty, b: Ty) -> bool {
    (a & NUM != 0 && b & NUM != 0) || a & b & STR != 0
}

/// A type set in words: `int`, `number`, `string or null`.
fn ty_name(t: Ty) -> String {
    match t {
        NUM => return "number".into(),
        DYN => return "value".into(),
        _ => {}
    }
    let names = [
        (BOOL, "bool"),
        (INT, "int"),
        (FLOAT, "float"),
        (STR, "string"),
        (LIST, "list"),
        (MAP, "map"),
        (NULL, "null"),
    ];
    let mut parts: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| t & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    match parts.pop() {
        None => "nothing".into(),
        Some(last) if parts.is_empty() => last.into(),
        Some(last) => format!("{} or {last}", parts.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cond::Condition;

    fn err(src: &str) -> String {
        match Condition::compile(src, "roles.r.allow[0].when") {
            Err(Error::Policy { path, message }) => {
                assert_eq!(path, "roles.r.allow[0].when");
                message
            }
            Err(other) => panic!("{src}: {other}"),
            Ok(_) => panic!("{src}: compiled"),
        }
    }

    fn constant(src: &str) -> Option<bool> {
        Condition::compile(src, "t")
            .unwrap_or_else(|e| panic!("{src}: {e}"))
            .constant()
    }

    #[test]
    fn static_type_errors() {
        let cases = [
            ("agent.depth == \"x\"", "1:1: type error: cannot compare int `agent.depth` with string `\"x\"` using `==`"),
            ("time.hour != true", "1:1: type error: cannot compare int `time.hour` with bool `true` using `!=`"),
            ("resource.class < [1]", "1:1: type error: cannot compare list `resource.class` with list `[1]` using `<`"),
            ("context.a < [1]", "1:1: type error: cannot compare value `context.a` with list `[1]` using `<`"),
            ("agent.id > 3", "1:1: type error: cannot compare string `agent.id` with int `3` using `>`"),
            ("agent.delegator < 1", "1:1: type error: cannot compare string or null `agent.delegator` with int `1` using `<`"),
            ("context.a < null", "1:1: type error: cannot compare value `context.a` with null `null` using `<`"),
            ("agent.depth.startswith(\"a\")", "1:1: type error: `startswith` needs a string, found int `agent.depth`"),
            ("time.now.matches(\"a/*\")", "1:1: type error: `matches` needs a string, found float `time.now`"),
            ("agent.id.endswith(1)", "1:19: type error: `endswith` needs a string argument, found int `1`"),
            ("agent.id.matches(context.p)", "1:18: type error: `matches` needs a pattern in double quotes, found `context.p`"),
            ("agent.id.matches(\"a//b\")", "1:18: resource pattern `a//b` has an empty segment (leading, trailing or double `/`)"),
            ("agent.id.matches(\"a*\")", "1:18: resource pattern `a*`: `*` and `**` must be whole segments, found `a*`"),
            ("5 in resource.class", "1:1: type error: cannot look for int `5` in list `resource.class`"),
            ("agent.depth in \"abc\"", "1:1: type error: cannot look for int `agent.depth` in string `\"abc\"`"),
            ("agent.depth in [\"a\", 1]", "1:1: type error: cannot look for int `agent.depth` in a list holding string `\"a\"`"),
            ("agent.depth in context.a or 5 in resource.class", "1:29: type error: cannot look for int `5` in list `resource.class`"),
            ("agent.depth in [context.a, \"b\"]", "1:1: type error: cannot look for int `agent.depth` in a list holding string `\"b\"`"),
            ("context.a in 5", "1:1: type error: cannot look for value `context.a` in int `5`"),
            ("agent.depth", "1:1: type error: a condition must be true or false, found int `agent.depth`"),
            ("\"yes\"", "1:1: type error: a condition must be true or false, found string `\"yes\"`"),
            ("agent.id and true", "1:1: type error: `and` needs true or false, found string `agent.id`"),
            ("true or time.now", "1:9: type error: `or` needs true or false, found float `time.now`"),
            ("not agent.template", "1:5: type error: `not` needs true or false, found string `agent.template`"),
            ("[context.a] == []", "1:2: type error: a list with attribute reads can only appear on the right of `in`"),
            ("false and agent.depth == \"x\"", "1:11: type error: cannot compare int `agent.depth` with string `\"x\"` using `==`"),
            ("1 in \"abc\"", "1:1: type error: cannot look for int `1` in string `\"abc\"`"),
            ("[1, \"a\"] == [1, 2]", "1:1: this expression always fails: type mismatch in `[1, \"a\"] == [1, 2]`: cannot compare list `[1, \"a\"]` with list `[1, 2]` using `==`"),
            ("\"a\" in [1, \"a\"]", "1:1: type error: cannot look for string `\"a\"` in a list holding int `1`"),
            ("context.a == 1 or \"x/\".matches(\"x\")", "1:19: this expression always fails: type mismatch in `\"x/\".matches(\"x\")`: `matches` needs a `/`-separated name without empty segments, found string `\"x/\"`"),
        ];
        for (src, want) in cases {
            assert_eq!(err(src), want, "{src}");
        }
    }

    #[test]
    fn dynamic_paths_pass_the_static_check() {
        for src in [
            "context.a == \"x\"",
            "context.a < 3",
            "principal.level >= 2",
            "context.a.startswith(\"x\")",
            "context.a in [1, \"a\"]",
            "context.a in context.b",
            "agent.delegator == null",
            "agent.delegator == \"user:a\"",
            "agent.depth == 1.0",
            "agent.age > 3",
            "context.flag",
            "context.flag and not context.other",
            "\"pii\" in resource.class",
            "agent.depth in [1, 2, null]",
            "agent.id in [principal.id, context.owner]",
            "\"x\" in context.map_or_list",
        ] {
            assert!(Condition::compile(src, "t").is_ok(), "{src}");
        }
    }

    #[test]
    fn constants_fold() {
        let cases = [
            ("true", Some(true)),
            ("false", Some(false)),
            ("1 < 2", Some(true)),
            ("1 == 1.0", Some(true)),
            ("\"a\" in \"cat\"", Some(true)),
            ("not (1 in [2, 3])", Some(true)),
            ("\"x/y\".matches(\"x/*\")", Some(true)),
            ("\"abc\".startswith(\"b\")", Some(false)),
            ("null == null", Some(true)),
            ("[1, [2]] == [1.0, [2]]", Some(true)),
            ("false and context.x == 1", Some(false)),
            ("true or agent.depth > 1", Some(true)),
            ("(1 > 2) and context.x", Some(false)),
            ("context.x == 1", None),
            ("true and context.x == 1", None),
            ("context.x == 1 and false", None),
            ("has context.x", None),
            ("time.hour < 24", None),
        ];
        for (src, want) in cases {
            assert_eq!(constant(src), want, "{src}");
        }
    }

    fn strs(v: &[Box<str>]) -> Vec<&str> {
        v.iter().map(|s| &**s).collect()
    }

    #[test]
    fn folding_drops_unread_paths() {
        let c = Condition::compile("false and context.a == 1 or context.b == 2", "t").unwrap();
        assert_eq!(strs(c.paths()), ["context.b"]);
        assert_eq!(strs(c.context_keys()), ["b"]);
        let c = Condition::compile("true and has context.a", "t").unwrap();
        assert_eq!(strs(c.paths()), ["context.a"]);
        assert_eq!(c.constant(), None);
    }

    #[test]
    fn arena_is_compact() {
        let c = Condition::compile("context.amount <= 500 and context.currency == \"EUR\"", "t")
            .unwrap();
        let p = c.program();
        assert_eq!(p.nodes.len(), 7);
        assert_eq!(p.consts.len(), 2);
        assert!(std::mem::size_of::<Node>() <= 16);
        // Folded subtrees leave nothing behind.
        let c = Condition::compile("context.a in [1, 2 == 2]", "t").unwrap();
        assert_eq!(
            c.program().consts,
            [Value::List(vec![Value::Int(1), Value::Bool(true)].into())]
        );
    }

    #[test]
    fn type_names() {
        assert_eq!(ty_name(INT), "int");
        assert_eq!(ty_name(NUM), "number");
        assert_eq!(ty_name(STR | NULL), "string or null");
        assert_eq!(ty_name(NULL | BOOL | STR), "bool, string or null");
        assert_eq!(ty_name(0), "nothing");
    }
}
