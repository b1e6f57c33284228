//! The values conditions read and compare: JSON-shaped data (null, booleans,
//! numbers, strings, lists, maps), owned, immutable once built.

use std::fmt;

/// A value a condition can read from the request context or a principal's
/// attributes, or write as a literal.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// `null` (Python `None`).
    #[default]
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A 64-bit signed integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A string.
    Str(Box<str>),
    /// A list of values.
    List(Box<[Value]>),
    /// A map from string keys to values.
    Map(Map),
}

/// A map with string keys, sorted by key for binary search: small, compact,
/// no hashing on lookup.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Map {
    /// Sorted by key, keys unique.
    entries: Box<[(Box<str>, Value)]>,
}

impl Map {
    /// Build a map; when a key repeats, the last value wins.
    pub fn new<K: Into<Box<str>>>(entries: impl IntoIterator<Item = (K, Value)>) -> Map {
        let mut v: Vec<(Box<str>, Value)> =
            entries.into_iter().map(|(k, x)| (k.into(), x)).collect();
        // Stable sort keeps repeats in insertion order; keep the last of each run.
        v.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Box<str>, Value)> = Vec::with_capacity(v.len());
        for (k, x) in v {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = x,
                _ => out.push((k, x)),
            }
        }
        Map {
            entries: out.into_boxed_slice(),
        }
    }

    /// The value under `key`, if any.
    #[inline]
    pub fn get(&self, key: &str) -> Option<&Value> {
        // A request context has a handful of keys: a scan that compares
        // lengths first beats the memcmp calls of a binary search.
        if self.entries.len() <= 8 {
            return self
                .entries
                .iter()
                .find(|(k, _)| k.len() == key.len() && **k == *key)
                .map(|(_, v)| v);
        }
        self.entries
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .and_then(|i| self.entries.get(i))
            .map(|(_, v)| v)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map has no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (&**k, v))
    }
}

impl<K: Into<Box<str>>> FromIterator<(K, Value)> for Map {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Self {
        Map::new(iter)
    }
}

impl Value {
    /// Convert a JSON value (principal attributes are stored as JSON).
    /// Integers outside `i64` become floats.
    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Value::Str(s.as_str().into()),
            serde_json::Value::Array(a) => Value::List(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(o) => Value::Map(
                o.iter()
                    .map(|(k, v)| (k.as_str(), Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// The value as JSON (a float that JSON cannot hold, NaN or infinite,
    /// becomes `null`).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::Str(s) => serde_json::Value::String(s.to_string()),
            Value::List(items) => items.iter().map(Value::to_json).collect(),
            Value::Map(m) => serde_json::Value::Object(
                m.iter()
                    .map(|(k, v)| (k.to_string(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// The name of the value's type as the documentation spells it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Map(_) => "map",
        }
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.into())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s.into_boxed_str())
    }
}

impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Self {
        Value::List(v.into_boxed_slice())
    }
}

impl From<Map> for Value {
    fn from(m: Map) -> Self {
        Value::Map(m)
    }
}

/// Condition syntax (`"a"`, `[1, 2.5]`, `{"k": null}` for maps).
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write_float(f, *x),
            Value::Str(s) => write_str_literal(f, s),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, x) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str("]")
            }
            Value::Map(m) => {
                f.write_str("{")?;
                for (i, (k, x)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write_str_literal(f, k)?;
                    write!(f, ": {x}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// A float the way the condition language would read it back (`1.0`, not `1`).
pub(crate) fn write_float(f: &mut impl fmt::Write, x: f64) -> fmt::Result {
    if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e16 {
        write!(f, "{x:.1}")
    } else {
        write!(f, "{x}")
    }
}

/// A string as a condition literal: double quotes, escapes for `"`, `\`,
/// newline and tab.
pub(crate) fn write_str_literal(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_sorts_and_last_wins() {
        let m = Map::new([
            ("b", Value::Int(1)),
            ("a", Value::Int(2)),
            ("b", Value::Int(3)),
        ]);
        assert_eq!(m.len(), 2);
        assert_eq!(m.get("a"), Some(&Value::Int(2)));
        assert_eq!(m.get("b"), Some(&Value::Int(3)));
        assert_eq!(m.get("c"), None);
        assert_eq!(m.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn from_json_and_display() {
        let j = serde_json::json!({"team": "ops", "n": 3, "x": 1.5, "big": 18446744073709551615u64,
            "tags": ["a", null, true], "nested": {"k": "v\"q"}});
        let v = Value::from_json(&j);
        assert_eq!(
            v.to_string(),
            r#"{"big": 18446744073709552000, "n": 3, "nested": {"k": "v\"q"}, "tags": ["a", null, true], "team": "ops", "x": 1.5}"#
        );
        assert_eq!(Value::Float(2.0).to_string(), "2.0");
        assert_eq!(Value::from("a\nb\t\\").to_string(), r#""a\nb\t\\""#);
        assert_eq!(Value::Null.type_name(), "null");
    }
}
