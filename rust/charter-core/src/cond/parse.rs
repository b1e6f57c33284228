//! Lexer and recursive-descent parser: condition source to a syntax tree
//! with byte spans. Attribute roots (`context`, `agent`, ...) are resolved
//! here; types are checked in `check`.

use super::value::{write_str_literal, Value};

/// Longest condition source, in bytes.
pub(crate) const MAX_SOURCE_BYTES: usize = 8192;
/// Deepest syntax tree (bounds every recursion over it, at load and at evaluation).
/// Keeps the stack small: 64 levels take about 64 KiB at evaluation in a
/// release build (and a few hundred KiB unoptimized).
pub(crate) const MAX_HEIGHT: u32 = 64;
/// Deepest parser recursion (parentheses, `not`, lists, method arguments).
const MAX_NESTING: u32 = 32;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// The operator as written.
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A string method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    StartsWith,
    EndsWith,
    Matches,
}

impl Method {
    fn from_name(name: &str) -> Option<Method> {
        match name {
            "startswith" => Some(Method::StartsWith),
            "endswith" => Some(Method::EndsWith),
            "matches" => Some(Method::Matches),
            _ => None,
        }
    }

    /// The method's name as written.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Method::StartsWith => "startswith",
            Method::EndsWith => "endswith",
            Method::Matches => "matches",
        }
    }
}

/// What an attribute path reads. `Context` and `Principal` carry keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Root {
    Context,
    Principal,
    PrincipalId,
    ResourceName,
    ResourceClass,
    AgentId,
    AgentTemplate,
    AgentDepth,
    AgentDelegator,
    AgentAge,
    TimeHour,
    TimeWeekday,
    TimeNow,
}

/// An attribute path, resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PathExpr {
    pub(crate) root: Root,
    /// Map keys below the root (non-empty for `Context` and `Principal`, empty otherwise).
    pub(crate) keys: Vec<Box<str>>,
    /// Canonical spelling: `context.ticket.id`, `context["x-y"]`.
    pub(crate) display: String,
}

/// A syntax tree node with its byte span in the source.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Expr {
    pub(crate) kind: ExprKind,
    pub(crate) start: u32,
    pub(crate) end: u32,
    /// Height of the tree rooted here (a leaf is 1).
    pub(crate) height: u32,
}

/// The syntax tree's node kinds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ExprKind {
    Lit(Value),
    List(Vec<Expr>),
    Path(PathExpr),
    Has(PathExpr),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    In {
        lhs: Box<Expr>,
        rhs: Box<Expr>,
        negated: bool,
    },
    Method(Method, Box<Expr>, Box<Expr>),
}

/// A syntax error at byte offset `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub(crate) at: usize,
    pub(crate) message: String,
}

type PResult<T> = Result<T, SyntaxError>;

#[cold]
fn err<T>(at: usize, message: impl Into<String>) -> PResult<T> {
    Err(SyntaxError {
        at,
        message: message.into(),
    })
}

/// 1-based line and column (in characters) of byte offset `at`.
pub(crate) fn line_col(src: &str, at: usize) -> (usize, usize) {
    let before = src.get(..at).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok<'s> {
    Num(&'s str),
    Str(String),
    Word(&'s str),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Minus,
    Cmp(CmpOp),
    Eof,
}

#[derive(Debug, Clone)]
struct Token<'s> {
    tok: Tok<'s>,
    start: usize,
    end: usize,
}

fn describe(tok: &Tok<'_>) -> String {
    match tok {
        Tok::Num(s) => format!("number `{s}`"),
        Tok::Str(s) => {
            let mut lit = String::new();
            let short: String = s.chars().take(40).collect();
            let _ = write_str_literal(&mut lit, &short);
            format!("string `{lit}`")
        }
        Tok::Word(w) => format!("`{w}`"),
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
        Tok::LBracket => "`[`".into(),
        Tok::RBracket => "`]`".into(),
        Tok::Comma => "`,`".into(),
        Tok::Dot => "`.`".into(),
        Tok::Minus => "`-`".into(),
        Tok::Cmp(op) => format!("`{}`", op.symbol()),
        Tok::Eof => "the end of the condition".into(),
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn lex(src: &str) -> PResult<Vec<Token<'_>>> {
    let b = src.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let next = b.get(i + 1).copied();
        let start = i;
        let tok = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => Tok::LParen,
            b')' => Tok::RParen,
            b'[' => Tok::LBracket,
            b']' => Tok::RBracket,
            b',' => Tok::Comma,
            b'.' => Tok::Dot,
            b'-' => Tok::Minus,
            b'=' if next == Some(b'=') => Tok::Cmp(CmpOp::Eq),
            b'=' => return err(i, "`=` is not an operator; compare with `==`"),
            b'!' if next == Some(b'=') => Tok::Cmp(CmpOp::Ne),
            b'!' => return err(i, "`!` is not an operator; negate with `not`"),
            b'<' if next == Some(b'=') => Tok::Cmp(CmpOp::Le),
            b'<' => Tok::Cmp(CmpOp::Lt),
            b'>' if next == Some(b'=') => Tok::Cmp(CmpOp::Ge),
            b'>' => Tok::Cmp(CmpOp::Gt),
            b'&' => return err(i, "`&` is not an operator; combine conditions with `and`"),
            b'|' => return err(i, "`|` is not an operator; combine conditions with `or`"),
            b'+' | b'*' | b'/' | b'%' => {
                return err(i, format!("`{}`: arithmetic is not supported", c as char))
            }
            b'\'' => return err(i, "strings are written in double quotes (`\"...\"`)"),
            b'"' => {
                let (s, end) = lex_string(src, i)?;
                toks.push(Token {
                    tok: Tok::Str(s),
                    start,
                    end,
                });
                i = end;
                continue;
            }
            b'0'..=b'9' => {
                let end = lex_number(b, i);
                if b.get(end).is_some_and(|&x| is_word_byte(x)) {
                    let mut stop = end;
                    while b.get(stop).is_some_and(|&x| is_word_byte(x)) {
                        stop += 1;
                    }
                    let text = src.get(i..stop).unwrap_or("");
                    return err(i, format!("invalid number `{text}`"));
                }
                toks.push(Token {
                    tok: Tok::Num(src.get(i..end).unwrap_or("0")),
                    start,
                    end,
                });
                i = end;
                continue;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let mut end = i;
                while b.get(end).is_some_and(|&x| is_word_byte(x)) {
                    end += 1;
                }
                toks.push(Token {
                    tok: Tok::Word(src.get(i..end).unwrap_or("")),
                    start,
                    end,
                });
                i = end;
                continue;
            }
            _ => {
                let ch = src.get(i..).and_then(|s| s.chars().next()).unwrap_or('?');
                return err(i, format!("unexpected character `{ch}`"));
            }
        };
        i += match tok {
            Tok::Cmp(CmpOp::Eq | CmpOp::Ne | CmpOp::Le | CmpOp::Ge) => 2,
            _ => 1,
        };
        toks.push(Token { tok, start, end: i });
    }
    Ok(toks)
}

/// End of the number starting at `i`: digits, optional `.digits`, optional exponent.
fn lex_number(b: &[u8], i: usize) -> usize {
    let digits = |mut j: usize| {
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        j
    };
    let mut j = digits(i);
    if b.get(j) == Some(&b'.') && b.get(j + 1).is_some_and(u8::is_ascii_digit) {
        j = digits(j + 1);
    }
    if matches!(b.get(j), Some(b'e' | b'E')) {
        let k = if matches!(b.get(j + 1), Some(b'+' | b'-')) {
            j + 2
        } else {
            j + 1
        };
        if b.get(k).is_some_and(u8::is_ascii_digit) {
            j = digits(k);
        }
    }
    j
}

/// The string literal opening at `open`; returns its value and the offset past the closing quote.
fn lex_string(src: &str, open: usize) -> PResult<(String, usize)> {
    let body = src.get(open + 1..).unwrap_or("");
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((k, c)) = chars.next() {
        match c {
            '"' => return Ok((out, open + 1 + k + 1)),
            '\\' => match chars.next() {
                Some((_, '"')) => out.push('"'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, other)) => {
                    return err(
                        open + 1 + k,
                        format!("unknown escape `\\{other}`; strings support `\\\"`, `\\\\`, `\\n` and `\\t`"),
                    )
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    err(open, "unterminated string: expected a closing `\"`")
}

const ROOTS_HINT: &str =
    "attribute paths start with `context`, `resource`, `agent`, `principal` or `time`";

struct Parser<'s> {
    toks: Vec<Token<'s>>,
    pos: usize,
    /// Offset of the end of the source (where `Eof` sits).
    len: usize,
    /// End offset of the last consumed token.
    prev_end: usize,
    nesting: u32,
}

/// Parse a condition into its syntax tree.
pub(crate) fn parse(src: &str) -> PResult<Expr> {
    if src.len() > MAX_SOURCE_BYTES {
        return err(
            0,
            format!(
                "a condition is limited to {MAX_SOURCE_BYTES} bytes, this one has {}",
                src.len()
            ),
        );
    }
    let mut p = Parser {
        toks: lex(src)?,
        pos: 0,
        len: src.len(),
        prev_end: 0,
        nesting: 0,
    };
    let e = p.or()?;
    match p.peek() {
        Tok::Eof => Ok(e),
        t => err(
            p.start(),
            format!(
                "expected an operator, `and`, `or` or the end of the condition, found {}",
                describe(t)
            ),
        ),
    }
}

impl<'s> Parser<'s> {
    fn peek(&self) -> &Tok<'s> {
        self.peek_at(0)
    }

    fn peek_at(&self, k: usize) -> &Tok<'s> {
        self.toks.get(self.pos + k).map_or(&Tok::Eof, |t| &t.tok)
    }

    fn start(&self) -> usize {
        self.start_at(0)
    }

    fn start_at(&self, k: usize) -> usize {
        self.toks.get(self.pos + k).map_or(self.len, |t| t.start)
    }

    fn bump(&mut self) -> Tok<'s> {
        match self.toks.get(self.pos) {
            Some(t) => {
                self.pos += 1;
                self.prev_end = t.end;
                t.tok.clone()
            }
            None => Tok::Eof,
        }
    }

    fn is_word(&self, k: usize, w: &str) -> bool {
        matches!(self.peek_at(k), Tok::Word(x) if *x == w)
    }

    fn expect(&mut self, want: &Tok<'_>, what: &str) -> PResult<()> {
        if self.peek() == want {
            self.bump();
            Ok(())
        } else {
            err(
                self.start(),
                format!("expected {what}, found {}", describe(self.peek())),
            )
        }
    }

    fn enter(&mut self) -> PResult<()> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return err(
                self.start(),
                format!("the condition is nested too deeply (more than {MAX_NESTING} levels)"),
            );
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting = self.nesting.saturating_sub(1);
    }

    /// A node spanning `start` to the end of the last consumed token.
    fn node(&self, kind: ExprKind, start: usize) -> PResult<Expr> {
        let child = |e: &Expr| e.height;
        let below = match &kind {
            ExprKind::Lit(_) | ExprKind::Path(_) | ExprKind::Has(_) => 0,
            ExprKind::List(items) => items.iter().map(child).max().unwrap_or(0),
            ExprKind::Not(e) => child(e),
            ExprKind::And(l, r)
            | ExprKind::Or(l, r)
            | ExprKind::Cmp(_, l, r)
            | ExprKind::In { lhs: l, rhs: r, .. }
            | ExprKind::Method(_, l, r) => child(l).max(child(r)),
        };
        let height = below + 1;
        if height > MAX_HEIGHT {
            return err(
                start,
                format!("the condition is too deeply nested (more than {MAX_HEIGHT} levels of operators)"),
            );
        }
        Ok(Expr {
            kind,
            start: start as u32,
            end: self.prev_end as u32,
            height,
        })
    }

    fn or(&mut self) -> PResult<Expr> {
        let start = self.start();
        let mut l = self.and()?;
        while self.is_word(0, "or") {
            self.bump();
            let r = self.and()?;
            l = self.node(ExprKind::Or(Box::new(l), Box::new(r)), start)?;
        }
        Ok(l)
    }

    fn and(&mut self) -> PResult<Expr> {
        let start = self.start();
        let mut l = self.not()?;
        while self.is_word(0, "and") {
            self.bump();
            let r = self.not()?;
            l = self.node(ExprKind::And(Box::new(l), Box::new(r)), start)?;
        }
        Ok(l)
    }

    fn not(&mut self) -> PResult<Expr> {
        if !self.is_word(0, "not") {
            return self.comparison();
        }
        let start = self.start();
        self.bump();
        self.enter()?;
        let e = self.not()?;
        self.leave();
        self.node(ExprKind::Not(Box::new(e)), start)
    }

    /// The comparison operator at the cursor and how many tokens it takes.
    fn comparison_op(&self) -> Option<(Option<CmpOp>, bool, usize)> {
        match self.peek() {
            Tok::Cmp(op) => Some((Some(*op), false, 1)),
            Tok::Word("in") => Some((None, false, 1)),
            Tok::Word("not") if self.is_word(1, "in") => Some((None, true, 2)),
            _ => None,
        }
    }

    fn comparison(&mut self) -> PResult<Expr> {
        let start = self.start();
        let l = self.unary()?;
        let Some((op, negated, n)) = self.comparison_op() else {
            return Ok(l);
        };
        for _ in 0..n {
            self.bump();
        }
        let r = self.unary()?;
        let kind = match op {
            Some(op) => ExprKind::Cmp(op, Box::new(l), Box::new(r)),
            None => ExprKind::In {
                lhs: Box::new(l),
                rhs: Box::new(r),
                negated,
            },
        };
        let e = self.node(kind, start)?;
        if self.comparison_op().is_some() {
            return err(
                self.start(),
                "comparisons cannot be chained; combine them with `and`",
            );
        }
        Ok(e)
    }

    fn unary(&mut self) -> PResult<Expr> {
        if !self.is_word(0, "has") {
            return self.postfix();
        }
        let start = self.start();
        self.bump();
        let at = self.start();
        let path = match self.bump() {
            Tok::Word(w) if is_root(w) => self.path(w, at)?,
            t => {
                return err(
                    at,
                    format!(
                        "expected an attribute path after `has`, found {}",
                        describe(&t)
                    ),
                )
            }
        };
        self.node(ExprKind::Has(path), start)
    }

    fn postfix(&mut self) -> PResult<Expr> {
        let start = self.start();
        let mut e = self.primary()?;
        while *self.peek() == Tok::Dot {
            let at = self.start_at(1);
            let method = match self.peek_at(1) {
                Tok::Word(w) => match Method::from_name(w) {
                    Some(m) => m,
                    None => {
                        return err(
                            at,
                            format!("unknown method `{w}`; the methods are `startswith`, `endswith` and `matches`"),
                        )
                    }
                },
                t => return err(at, format!("expected a method name after `.`, found {}", describe(t))),
            };
            if *self.peek_at(2) != Tok::LParen {
                return err(
                    self.start_at(2),
                    format!(
                        "expected `(` after `{}`, found {}",
                        method.name(),
                        describe(self.peek_at(2))
                    ),
                );
            }
            self.bump();
            self.bump();
            self.bump();
            let one_argument = format!("`{}` takes one argument", method.name());
            if *self.peek() == Tok::RParen {
                return err(self.start(), one_argument);
            }
            self.enter()?;
            let arg = self.or()?;
            self.leave();
            if *self.peek() == Tok::Comma {
                return err(self.start(), one_argument);
            }
            self.expect(&Tok::RParen, "`)`")?;
            e = self.node(ExprKind::Method(method, Box::new(e), Box::new(arg)), start)?;
        }
        Ok(e)
    }

    fn primary(&mut self) -> PResult<Expr> {
        let start = self.start();
        let tok = self.bump();
        match tok {
            Tok::Num(text) => self.number(text, start, false),
            Tok::Minus => match self.peek() {
                Tok::Num(text) => {
                    let text = *text;
                    self.bump();
                    self.number(text, start, true)
                }
                _ => err(
                    start,
                    "`-` only negates a number; arithmetic is not supported",
                ),
            },
            Tok::Str(s) => self.node(ExprKind::Lit(Value::Str(s.into())), start),
            Tok::Word("true") => self.node(ExprKind::Lit(Value::Bool(true)), start),
            Tok::Word("false") => self.node(ExprKind::Lit(Value::Bool(false)), start),
            Tok::Word("null") => self.node(ExprKind::Lit(Value::Null), start),
            Tok::Word(w) if is_root(w) => {
                let p = self.path(w, start)?;
                self.node(ExprKind::Path(p), start)
            }
            Tok::Word(w @ ("and" | "or" | "not" | "in" | "has")) => {
                err(start, format!("expected an expression, found `{w}`"))
            }
            Tok::Word(w) => err(start, unknown_name(w, *self.peek() == Tok::LParen)),
            Tok::LParen => {
                self.enter()?;
                let mut e = self.or()?;
                self.leave();
                self.expect(&Tok::RParen, "`)`")?;
                // The parentheses belong to the span (error messages quote it).
                e.start = start as u32;
                e.end = self.prev_end as u32;
                Ok(e)
            }
            Tok::LBracket => {
                self.enter()?;
                let mut items = Vec::new();
                while *self.peek() != Tok::RBracket {
                    items.push(self.or()?);
                    match self.peek() {
                        Tok::Comma => {
                            self.bump();
                        }
                        Tok::RBracket => {}
                        t => {
                            return err(
                                self.start(),
                                format!("expected `,` or `]` in the list, found {}", describe(t)),
                            )
                        }
                    }
                }
                self.bump();
                self.leave();
                self.node(ExprKind::List(items), start)
            }
            t => err(
                start,
                format!("expected an expression, found {}", describe(&t)),
            ),
        }
    }

    fn number(&self, text: &str, start: usize, negative: bool) -> PResult<Expr> {
        let signed = if negative {
            format!("-{text}")
        } else {
            text.to_string()
        };
        let v = if text.contains(['.', 'e', 'E']) {
            match signed.parse::<f64>() {
                Ok(f) if f.is_finite() => Value::Float(f),
                _ => return err(start, format!("number `{signed}` is out of range")),
            }
        } else {
            match signed.parse::<i64>() {
                Ok(i) => Value::Int(i),
                Err(_) => {
                    return err(
                        start,
                        format!("integer `{signed}` is out of range (64-bit signed); write `{signed}.0` for a float"),
                    )
                }
            }
        };
        self.node(ExprKind::Lit(v), start)
    }

    /// The rest of an attribute path whose root word `root` sits at `start`.
    fn path(&mut self, root: &'s str, start: usize) -> PResult<PathExpr> {
        let fixed: &[(&str, Root)] = match root {
            "context" => {
                let keys = self.keys(root, start)?;
                return Ok(path_expr(Root::Context, "context", keys));
            }
            "principal" => {
                if *self.peek() == Tok::Dot
                    && self.is_word(1, "id")
                    && *self.peek_at(2) != Tok::LParen
                {
                    self.bump();
                    self.bump();
                    self.no_more_keys("principal.id")?;
                    return Ok(path_expr(Root::PrincipalId, "principal.id", Vec::new()));
                }
                let keys = self.keys(root, start)?;
                return Ok(path_expr(Root::Principal, "principal", keys));
            }
            "resource" => &[("name", Root::ResourceName), ("class", Root::ResourceClass)],
            "agent" => &[
                ("id", Root::AgentId),
                ("template", Root::AgentTemplate),
                ("depth", Root::AgentDepth),
                ("delegator", Root::AgentDelegator),
                ("age", Root::AgentAge),
            ],
            _ => &[
                ("hour", Root::TimeHour),
                ("weekday", Root::TimeWeekday),
                ("now", Root::TimeNow),
            ],
        };
        let names: Vec<String> = fixed.iter().map(|(n, _)| format!("`{n}`")).collect();
        let names = names.join(", ");
        if *self.peek() != Tok::Dot {
            return err(
                self.start(),
                format!(
                    "expected `.` and an attribute of `{root}` ({names}), found {}",
                    describe(self.peek())
                ),
            );
        }
        self.bump();
        let at = self.start();
        let attr = match self.bump() {
            Tok::Word(w) => w,
            t => {
                return err(
                    at,
                    format!(
                        "expected an attribute of `{root}` ({names}), found {}",
                        describe(&t)
                    ),
                )
            }
        };
        let Some((_, r)) = fixed.iter().find(|(n, _)| *n == attr) else {
            return err(
                at,
                format!("unknown attribute `{root}.{attr}`; `{root}` has {names}"),
            );
        };
        let display = format!("{root}.{attr}");
        self.no_more_keys(&display)?;
        Ok(path_expr(*r, &display, Vec::new()))
    }

    /// Map keys after a `context` or `principal` root: `.name` or `["any text"]`, at least one.
    fn keys(&mut self, root: &str, start: usize) -> PResult<Vec<Box<str>>> {
        let mut keys: Vec<Box<str>> = Vec::new();
        loop {
            match (self.peek(), self.peek_at(1), self.peek_at(2)) {
                // `.name(` is a method call on what came before.
                (Tok::Dot, Tok::Word(_), Tok::LParen) if !keys.is_empty() => break,
                (Tok::Dot, Tok::Word(w), _) => {
                    keys.push((*w).into());
                    self.bump();
                    self.bump();
                }
                (Tok::Dot, t, _) => {
                    return err(
                        self.start_at(1),
                        format!("expected a key name after `.`, found {}", describe(t)),
                    )
                }
                (Tok::LBracket, Tok::Str(s), Tok::RBracket) => {
                    keys.push(s.as_str().into());
                    self.bump();
                    self.bump();
                    self.bump();
                }
                (Tok::LBracket, _, _) => {
                    return err(
                        self.start(),
                        "expected `[\"key\"]`: a key in brackets is a string in double quotes",
                    )
                }
                _ => break,
            }
        }
        if keys.is_empty() {
            return err(
                start,
                format!("`{root}` needs a key: `{root}.name` or `{root}[\"name\"]`"),
            );
        }
        Ok(keys)
    }

    fn no_more_keys(&self, display: &str) -> PResult<()> {
        let bad = match (self.peek(), self.peek_at(1), self.peek_at(2)) {
            (Tok::Dot, Tok::Word(_), Tok::LParen) => false,
            (Tok::Dot, _, _) | (Tok::LBracket, _, _) => true,
            _ => false,
        };
        if bad {
            return err(self.start(), format!("`{display}` has no attributes"));
        }
        Ok(())
    }
}

fn is_root(w: &str) -> bool {
    matches!(w, "context" | "resource" | "agent" | "principal" | "time")
}

fn unknown_name(w: &str, call: bool) -> String {
    if call && Method::from_name(w).is_some() {
        return format!("`{w}(...)`: methods are written after their subject, `x.{w}(...)`");
    }
    let lower = w.to_ascii_lowercase();
    let hint = match lower.as_str() {
        "true" | "false" | "null" | "and" | "or" | "not" | "in" | "has" => Some(lower.as_str()),
        "none" | "nil" => Some("null"),
        _ => None,
    };
    match hint {
        Some(h) => format!("unknown name `{w}`; did you mean `{h}`?"),
        None => format!("unknown name `{w}`; {ROOTS_HINT}"),
    }
}

fn is_identifier(k: &str) -> bool {
    let mut b = k.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(is_word_byte)
}

fn path_expr(root: Root, prefix: &str, keys: Vec<Box<str>>) -> PathExpr {
    let mut display = prefix.to_string();
    for (i, k) in keys.iter().enumerate() {
        // `principal.id` is the principal's id; an attribute named `id` is `principal["id"]`.
        let shadowed = root == Root::Principal && i == 0 && &**k == "id";
        if is_identifier(k) && !shadowed {
            display.push('.');
            display.push_str(k);
        } else {
            display.push('[');
            let _ = write_str_literal(&mut display, k);
            display.push(']');
        }
    }
    PathExpr {
        root,
        keys,
        display,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Fully parenthesized rendering, for precedence tests.
    fn show(e: &Expr) -> String {
        match &e.kind {
            ExprKind::Lit(v) => v.to_string(),
            ExprKind::List(items) => {
                format!(
                    "[{}]",
                    items.iter().map(show).collect::<Vec<_>>().join(", ")
                )
            }
            ExprKind::Path(p) => p.display.clone(),
            ExprKind::Has(p) => format!("(has {})", p.display),
            ExprKind::Not(x) => format!("(not {})", show(x)),
            ExprKind::And(l, r) => format!("({} and {})", show(l), show(r)),
            ExprKind::Or(l, r) => format!("({} or {})", show(l), show(r)),
            ExprKind::Cmp(op, l, r) => format!("({} {} {})", show(l), op.symbol(), show(r)),
            ExprKind::In { lhs, rhs, negated } => format!(
                "({} {}in {})",
                show(lhs),
                if *negated { "not " } else { "" },
                show(rhs)
            ),
            ExprKind::Method(m, l, r) => format!("{}.{}({})", show(l), m.name(), show(r)),
        }
    }

    fn p(src: &str) -> String {
        show(&parse(src).unwrap_or_else(|e| panic!("{src}: {e:?}")))
    }

    /// `line:col: message` for a source that must fail.
    fn e(src: &str) -> String {
        let err = parse(src).expect_err(src);
        let (l, c) = line_col(src, err.at);
        format!("{l}:{c}: {}", err.message)
    }

    #[test]
    fn every_construct() {
        let cases = [
            ("1", "1"),
            ("-7", "-7"),
            ("- 7", "-7"),
            ("2.5", "2.5"),
            ("1e3", "1000.0"),
            ("-1.5E-1", "-0.15"),
            ("-9223372036854775808", "-9223372036854775808"),
            (r#""a\"b\\c\nd\te""#, r#""a\"b\\c\nd\te""#),
            ("true", "true"),
            ("false", "false"),
            ("null", "null"),
            ("[]", "[]"),
            (r#"[1, "a", [true], ]"#, r#"[1, "a", [true]]"#),
            ("context.amount", "context.amount"),
            ("context.ticket.id", "context.ticket.id"),
            (r#"context["x-y"].z"#, r#"context["x-y"].z"#),
            ("context.in.not", "context.in.not"),
            ("resource.name", "resource.name"),
            ("resource.class", "resource.class"),
            ("agent.id", "agent.id"),
            ("agent.template", "agent.template"),
            ("agent.depth", "agent.depth"),
            ("agent.delegator", "agent.delegator"),
            ("agent.age", "agent.age"),
            ("principal.id", "principal.id"),
            ("principal.team", "principal.team"),
            (r#"principal["id"]"#, r#"principal["id"]"#),
            ("principal.org.unit", "principal.org.unit"),
            ("time.hour", "time.hour"),
            ("time.weekday", "time.weekday"),
            ("time.now", "time.now"),
            ("has context.a.b", "(has context.a.b)"),
            ("has agent.id", "(has agent.id)"),
            ("1 == 2", "(1 == 2)"),
            ("1 != 2", "(1 != 2)"),
            ("1 < 2", "(1 < 2)"),
            ("1 <= 2", "(1 <= 2)"),
            ("1 > 2", "(1 > 2)"),
            ("1 >= 2", "(1 >= 2)"),
            ("1 in [1]", "(1 in [1])"),
            ("1 not in [1]", "(1 not in [1])"),
            (r#"agent.id.startswith("a")"#, r#"agent.id.startswith("a")"#),
            (r#"context.p.endswith("b")"#, r#"context.p.endswith("b")"#),
            (
                r#"resource.name.matches("a/*")"#,
                r#"resource.name.matches("a/*")"#,
            ),
            (
                r#""x".startswith("x").endswith("y")"#,
                r#""x".startswith("x").endswith("y")"#,
            ),
            (
                r#"(context.a).startswith(context.b)"#,
                r#"context.a.startswith(context.b)"#,
            ),
            ("(((true)))", "true"),
            ("  true\n", "true"),
        ];
        for (src, want) in cases {
            assert_eq!(p(src), want, "{src}");
        }
    }

    #[test]
    fn precedence() {
        // Bare letters stand for context keys, to keep the table readable.
        let cases = [
            ("a or b and c", "(a or (b and c))"),
            ("a and b or c", "((a and b) or c)"),
            ("a or b or c", "((a or b) or c)"),
            ("a and b and c", "((a and b) and c)"),
            ("not a and b", "((not a) and b)"),
            ("not a == b", "(not (a == b))"),
            ("not not a", "(not (not a))"),
            ("a == b and c < d", "((a == b) and (c < d))"),
            ("a in b or c not in d", "((a in b) or (c not in d))"),
            ("not a in b", "(not (a in b))"),
            ("(a or b) and c", "((a or b) and c)"),
            ("has a and a > 1", "((has a) and (a > 1))"),
            ("not has a", "(not (has a))"),
            ("has a == false", "((has a) == false)"),
            (
                "a.startswith(\"x\") == true",
                "(a.startswith(\"x\") == true)",
            ),
            ("a.b.startswith(c) or d", "(a.b.startswith(c) or d)"),
        ];
        let ctx = |s: &str| {
            let mut out = String::new();
            let mut prev = ' ';
            for ch in s.chars() {
                if matches!(ch, 'a'..='d')
                    && !prev.is_ascii_alphanumeric()
                    && prev != '.'
                    && prev != '"'
                {
                    out.push_str("context.");
                }
                out.push(ch);
                prev = ch;
            }
            out
        };
        // `and` starts with a letter in `a..=d`: undo its rewrite.
        let ctx = |s: &str| ctx(s).replace("context.and", "and");
        for (src, want) in cases {
            assert_eq!(p(&ctx(src)), ctx(want), "{src}");
        }
    }

    #[test]
    fn spans_cover_the_source() {
        let src = "context.a == 1 and (context.b)";
        let e = parse(src).unwrap();
        assert_eq!((e.start, e.end), (0, src.len() as u32));
        let ExprKind::And(l, r) = &e.kind else {
            panic!()
        };
        assert_eq!(&src[l.start as usize..l.end as usize], "context.a == 1");
        assert_eq!(&src[r.start as usize..r.end as usize], "(context.b)");
    }

    #[test]
    fn malformed_inputs_name_line_and_column() {
        let cases = [
            ("", "1:1: expected an expression, found the end of the condition"),
            ("   ", "1:4: expected an expression, found the end of the condition"),
            ("context.a ==", "1:13: expected an expression, found the end of the condition"),
            ("context.a == 1 and", "1:19: expected an expression, found the end of the condition"),
            ("(context.a", "1:11: expected `)`, found the end of the condition"),
            ("context.a)", "1:10: expected an operator, `and`, `or` or the end of the condition, found `)`"),
            ("context.a 5", "1:11: expected an operator, `and`, `or` or the end of the condition, found number `5`"),
            ("context.a = 1", "1:11: `=` is not an operator; compare with `==`"),
            ("!context.a", "1:1: `!` is not an operator; negate with `not`"),
            ("context.a && true", "1:11: `&` is not an operator; combine conditions with `and`"),
            ("context.a || true", "1:11: `|` is not an operator; combine conditions with `or`"),
            ("time.hour + 1 > 3", "1:11: `+`: arithmetic is not supported"),
            ("time.hour - 1 > 3", "1:11: expected an operator, `and`, `or` or the end of the condition, found `-`"),
            ("-time.hour", "1:1: `-` only negates a number; arithmetic is not supported"),
            ("'a' == context.a", "1:1: strings are written in double quotes (`\"...\"`)"),
            ("context.a == \"abc", "1:14: unterminated string: expected a closing `\"`"),
            (r#"context.a == "a\qb""#, r#"1:16: unknown escape `\q`; strings support `\"`, `\\`, `\n` and `\t`"#),
            ("1 < 2 < 3", "1:7: comparisons cannot be chained; combine them with `and`"),
            ("1 == 2 in [3]", "1:8: comparisons cannot be chained; combine them with `and`"),
            ("context.a €", "1:11: unexpected character `€`"),
            ("12abc", "1:1: invalid number `12abc`"),
            ("99999999999999999999", "1:1: integer `99999999999999999999` is out of range (64-bit signed); write `99999999999999999999.0` for a float"),
            ("1e999", "1:1: number `1e999` is out of range"),
            ("[1, 2", "1:6: expected `,` or `]` in the list, found the end of the condition"),
            ("[1 2]", "1:4: expected `,` or `]` in the list, found number `2`"),
            ("context", "1:1: `context` needs a key: `context.name` or `context[\"name\"]`"),
            ("context.", "1:9: expected a key name after `.`, found the end of the condition"),
            ("context[1]", "1:8: expected `[\"key\"]`: a key in brackets is a string in double quotes"),
            ("principal == 1", "1:1: `principal` needs a key: `principal.name` or `principal[\"name\"]`"),
            ("principal.id.x", "1:13: `principal.id` has no attributes"),
            ("agent.id.x == 1", "1:9: `agent.id` has no attributes"),
            ("agent.id[\"x\"] == 1", "1:9: `agent.id` has no attributes"),
            ("agent == 1", "1:7: expected `.` and an attribute of `agent` (`id`, `template`, `depth`, `delegator`, `age`), found `==`"),
            ("agent.name", "1:7: unknown attribute `agent.name`; `agent` has `id`, `template`, `depth`, `delegator`, `age`"),
            ("resource.owner", "1:10: unknown attribute `resource.owner`; `resource` has `name`, `class`"),
            ("time.minute", "1:6: unknown attribute `time.minute`; `time` has `hour`, `weekday`, `now`"),
            ("time.5", "1:6: expected an attribute of `time` (`hour`, `weekday`, `now`), found number `5`"),
            ("request.amount > 1", "1:1: unknown name `request`; attribute paths start with `context`, `resource`, `agent`, `principal` or `time`"),
            ("amount > 1", "1:1: unknown name `amount`; attribute paths start with `context`, `resource`, `agent`, `principal` or `time`"),
            ("context.a == True", "1:14: unknown name `True`; did you mean `true`?"),
            ("context.a == None", "1:14: unknown name `None`; did you mean `null`?"),
            ("context.a AND true", "1:11: expected an operator, `and`, `or` or the end of the condition, found `AND`"),
            ("startswith(context.a, \"x\")", "1:1: `startswith(...)`: methods are written after their subject, `x.startswith(...)`"),
            ("context.a.lower()", "1:11: unknown method `lower`; the methods are `startswith`, `endswith` and `matches`"),
            ("\"a\".upper", "1:5: unknown method `upper`; the methods are `startswith`, `endswith` and `matches`"),
            ("\"a\".startswith", "1:15: expected `(` after `startswith`, found the end of the condition"),
            ("\"a\".startswith()", "1:16: `startswith` takes one argument"),
            ("\"a\".startswith(\"a\", \"b\")", "1:19: `startswith` takes one argument"),
            ("\"a\".(1)", "1:5: expected a method name after `.`, found `(`"),
            ("has 1", "1:5: expected an attribute path after `has`, found number `1`"),
            ("has", "1:4: expected an attribute path after `has`, found the end of the condition"),
            ("and", "1:1: expected an expression, found `and`"),
            ("context.a == not true", "1:14: expected an expression, found `not`"),
            ("not in [1]", "1:5: expected an expression, found `in`"),
            (")", "1:1: expected an expression, found `)`"),
            ("context.a ==\n  1 and\n  context.b >", "3:14: expected an expression, found the end of the condition"),
            ("context.a == 1 and\n\tagent.nme == \"x\"", "2:8: unknown attribute `agent.nme`; `agent` has `id`, `template`, `depth`, `delegator`, `age`"),
        ];
        for (src, want) in cases {
            assert_eq!(e(src), want, "{src:?}");
        }
    }

    #[test]
    fn nesting_and_size_limits() {
        let deep = format!("{}true{}", "(".repeat(40), ")".repeat(40));
        assert!(e(&deep).contains("nested too deeply"), "{}", e(&deep));
        let nots = format!("{}true", "not ".repeat(40));
        assert!(e(&nots).contains("nested too deeply"));
        let chain = vec!["context.a"; 66].join(" or ");
        assert!(e(&chain).contains("too deeply nested"));
        let ok = vec!["context.a"; 64].join(" or ");
        assert!(parse(&ok).is_ok());
        let ok = format!("{}true{}", "(".repeat(30), ")".repeat(30));
        assert!(parse(&ok).is_ok());
        let big = format!("context.a == \"{}\"", "x".repeat(MAX_SOURCE_BYTES));
        assert!(e(&big).starts_with("1:1: a condition is limited to 8192 bytes"));
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("abc", 0), (1, 1));
        assert_eq!(line_col("a\nbc", 3), (2, 2));
        assert_eq!(line_col("é€x", "é€".len()), (1, 3));
    }

    proptest! {
        #[test]
        fn random_strings_never_panic(s in "\\PC{0,80}") {
            let _ = parse(&s);
        }

        #[test]
        fn random_token_soup_never_panics(
            toks in proptest::collection::vec(prop_oneof![
                Just("context.a"), Just("agent.depth"), Just("("), Just(")"), Just("["), Just("]"),
                Just(","), Just("."), Just("and"), Just("or"), Just("not"), Just("in"), Just("has"),
                Just("=="), Just("<"), Just("-"), Just("1"), Just("2.5"), Just("\"s\""), Just("null"),
                Just("startswith"), Just("matches"), Just("true"), Just("\""), Just("\\"),
            ], 0..30)
        ) {
            let src = toks.join(" ");
            if let Err(e) = parse(&src) {
                prop_assert!(e.at <= src.len());
            }
        }
    }
}
