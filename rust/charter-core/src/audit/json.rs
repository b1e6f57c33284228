//! The few JSON writing primitives the audit encoder needs, appending to a
//! byte buffer without intermediate allocations.

use crate::cond::Value;

/// Append `s` as a JSON string (quoted, escaped).
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Append `s` as a JSON string, or `null`.
pub fn write_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => write_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// Append an unsigned integer.
pub fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Append a float; JSON has no NaN or infinities, so those are `null`.
pub fn write_f64(out: &mut Vec<u8>, x: f64) {
    if x.is_finite() {
        out.extend_from_slice(format!("{x}").as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Append a condition value as JSON.
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Value::Float(x) => write_f64(out, *x),
        Value::Str(s) => write_str(out, s),
        Value::List(items) => {
            out.push(b'[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, x);
            }
            out.push(b']');
        }
        Value::Map(m) => {
            out.push(b'{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k);
                out.push(b':');
                write_value(out, x);
            }
            out.push(b'}');
        }
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn strings_round_trip_through_serde() {
        for text in [
            "plain",
            "q\"uote",
            "back\\slash",
            "nl\ncr\rtab\t",
            "\u{1}\u{1f}\u{7f}",
            "ünï☃",
        ] {
            let json = s(|o| write_str(o, text));
            let back: String = serde_json::from_str(&json).unwrap_or_default();
            assert_eq!(back, text, "{json}");
        }
    }

    #[test]
    fn values_are_json() {
        let v = Value::from_json(&serde_json::json!({"a": [1, 2.5, null, true], "b": "x"}));
        let json = s(|o| write_value(o, &v));
        let back: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(
            back,
            serde_json::json!({"a": [1, 2.5, null, true], "b": "x"})
        );
        assert_eq!(s(|o| write_f64(o, f64::NAN)), "null");
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
    }
}
