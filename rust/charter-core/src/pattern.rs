//! Resource patterns: globs over `/`-separated resource names, compiled once
//! at load time. `*` is exactly one segment, `**` zero or more segments, any
//! other segment is a literal. No regex, no allocation per match beyond the
//! caller's split of the resource name.

use crate::error::{Error, Result};

/// Longest resource name a request may carry, in bytes.
pub const MAX_RESOURCE_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Literal(Box<str>),
    One,
    Many,
}

/// A compiled resource pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    source: Box<str>,
    segments: Box<[Segment]>,
}

impl Pattern {
    /// Compile `source`; `path` names it in the policy for error messages.
    pub fn parse(source: &str, path: &str) -> Result<Pattern> {
        if source.is_empty() {
            return Err(Error::policy(path, "a resource pattern cannot be empty"));
        }
        let mut segments = Vec::new();
        for seg in source.split('/') {
            let s = match seg {
                "" => {
                    return Err(Error::policy(
                        path,
                        format!("resource pattern `{source}` has an empty segment (leading, trailing or double `/`)"),
                    ))
                }
                "*" => Segment::One,
                "**" => Segment::Many,
                lit if lit.contains('*') => {
                    return Err(Error::policy(
                        path,
                        format!("resource pattern `{source}`: `*` and `**` must be whole segments, found `{lit}`"),
                    ))
                }
                lit => Segment::Literal(lit.into()),
            };
            // `**/**` matches exactly what `**` matches; keep the compiled form minimal.
            if s == Segment::Many && segments.last() == Some(&Segment::Many) {
                continue;
            }
            segments.push(s);
        }
        Ok(Pattern {
            source: source.into(),
            segments: segments.into_boxed_slice(),
        })
    }

    /// The pattern as written in the policy.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the (already split, validated) resource matches.
    ///
    /// Greedy match with one backtrack point per `**`: linear in the common
    /// case, O(segments * pattern) at worst.
    pub fn matches(&self, resource: &[&str]) -> bool {
        let pat = &self.segments;
        let (mut p, mut s) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while s < resource.len() {
            match pat.get(p) {
                Some(Segment::Many) => {
                    star = Some((p, s));
                    p += 1;
                }
                Some(Segment::One) => {
                    p += 1;
                    s += 1;
                }
                Some(Segment::Literal(lit)) if resource.get(s).is_some_and(|r| **r == **lit) => {
                    p += 1;
                    s += 1;
                }
                _ => match star {
                    Some((sp, ss)) => {
                        p = sp + 1;
                        s = ss + 1;
                        star = Some((sp, ss + 1));
                    }
                    None => return false,
                },
            }
        }
        pat.get(p..)
            .is_some_and(|rest| rest.iter().all(|x| *x == Segment::Many))
    }
}

/// Why a resource name is refused before any pattern sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceProblem {
    /// The name is empty or has an empty segment.
    EmptySegment,
    /// The name is longer than [`MAX_RESOURCE_BYTES`].
    TooLong,
}

/// Check a request's resource name: non-empty segments, bounded length.
#[inline]
pub fn validate_resource(name: &str) -> Result<(), ResourceProblem> {
    if name.len() > MAX_RESOURCE_BYTES {
        return Err(ResourceProblem::TooLong);
    }
    let b = name.as_bytes();
    if b.is_empty() || b[0] == b'/' || b[b.len() - 1] == b'/' || name.contains("//") {
        return Err(ResourceProblem::EmptySegment);
    }
    Ok(())
}

/// Split a validated resource name into its segments.
pub fn split_resource(name: &str) -> Vec<&str> {
    name.split('/').collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(p: &str, r: &str) -> bool {
        Pattern::parse(p, "t").unwrap().matches(&split_resource(r))
    }

    #[test]
    fn segments_and_globstar() {
        assert!(m("prod/**", "prod"));
        assert!(m("prod/**", "prod/a"));
        assert!(m("prod/**", "prod/a/b"));
        assert!(!m("prod/**", "production"));
        assert!(m("customers/*", "customers/42"));
        assert!(!m("customers/*", "customers"));
        assert!(!m("customers/*", "customers/42/x"));
        assert!(m("users/*/profile", "users/7/profile"));
        assert!(!m("users/*/profile", "users/7/8/profile"));
        assert!(m("**/secret", "secret"));
        assert!(m("**/secret", "a/b/secret"));
        assert!(m("a/**/b/**/c", "a/x/b/y/z/c"));
        assert!(m("a/**/b/**/c", "a/b/c"));
        assert!(!m("a/**/b/**/c", "a/c/b"));
        assert!(m("**", "anything/at/all"));
        assert!(m("a/**/**/b", "a/b"));
    }

    #[test]
    fn bad_patterns_are_policy_errors() {
        for bad in ["", "/a", "a/", "a//b", "a*", "a/b*c/d", "***"] {
            let e = Pattern::parse(bad, "resources.x[0]").unwrap_err();
            assert!(
                matches!(e, Error::Policy { ref path, .. } if path == "resources.x[0]"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn resource_validation() {
        assert!(validate_resource("a/b").is_ok());
        assert_eq!(validate_resource(""), Err(ResourceProblem::EmptySegment));
        assert_eq!(validate_resource("/a"), Err(ResourceProblem::EmptySegment));
        assert_eq!(validate_resource("a/"), Err(ResourceProblem::EmptySegment));
        assert_eq!(
            validate_resource("a//b"),
            Err(ResourceProblem::EmptySegment)
        );
        assert_eq!(
            validate_resource(&"x".repeat(MAX_RESOURCE_BYTES + 1)),
            Err(ResourceProblem::TooLong)
        );
    }

    /// Obviously-correct reference: recursion over both sequences.
    fn reference(pat: &[&str], res: &[&str]) -> bool {
        match (pat.first(), res.first()) {
            (None, None) => true,
            (None, Some(_)) => false,
            (Some(&"**"), _) => {
                reference(&pat[1..], res) || (!res.is_empty() && reference(pat, &res[1..]))
            }
            (Some(_), None) => false,
            (Some(&"*"), Some(_)) => reference(&pat[1..], &res[1..]),
            (Some(p), Some(r)) => p == r && reference(&pat[1..], &res[1..]),
        }
    }

    proptest! {
        #[test]
        fn agrees_with_reference(
            pat in proptest::collection::vec(prop_oneof!["a", "b", Just("*".to_string()), Just("**".to_string())], 1..7),
            res in proptest::collection::vec(prop_oneof!["a", "b", "c"], 1..8),
        ) {
            let ps: Vec<&str> = pat.iter().map(String::as_str).collect();
            let rs: Vec<&str> = res.iter().map(String::as_str).collect();
            let p = Pattern::parse(&ps.join("/"), "t").unwrap();
            prop_assert_eq!(p.matches(&rs), reference(&ps, &rs));
        }
    }
}
