//! The policy's spellings of quotas: rates and budgets (`"100/s"`,
//! `"10000/h"`), durations (`"10s"`) and costs, turned into the primitives'
//! parameters. Every error is a [`Error::Policy`] at the caller's path.

use super::breaker::BreakerConfig;
use super::gcra::{GcraParams, MAX_CAPACITY_NS};
use crate::error::{Error, Result};
use std::fmt;

const NS_PER_S: u64 = 1_000_000_000;

/// A count per period, as written in a policy: `"100/s"`, `"5000/m"`,
/// `"10/h"`, `"10000/d"`, `"2.5/s"`. Rates and budgets share it: a budget is
/// a rate charged with weighted costs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    count: f64,
    period_ns: u64,
    unit: char,
}

impl Rate {
    /// Most units a rate may count per period (so a default burst fits `u32`).
    pub const MAX_COUNT: f64 = 4_294_967_295.0;

    /// Parse `<count>/<unit>`: a positive decimal count (digits, optionally
    /// `.` and more digits; no sign, exponent or spaces) and one of `s`, `m`,
    /// `h`, `d`.
    pub fn parse(s: &str, path: &str) -> Result<Rate> {
        let bad = || {
            Error::policy(
                path,
                format!(
                    "expected a rate like `100/s` (a positive count, `/`, then `s`, `m`, `h` or `d`), found `{s}`"
                ),
            )
        };
        let (count, unit) = s.split_once('/').ok_or_else(bad)?;
        let (period_ns, unit) = match unit {
            "s" => (NS_PER_S, 's'),
            "m" => (60 * NS_PER_S, 'm'),
            "h" => (3_600 * NS_PER_S, 'h'),
            "d" => (86_400 * NS_PER_S, 'd'),
            _ => return Err(bad()),
        };
        let count = parse_decimal(count).ok_or_else(bad)?;
        if count <= 0.0 {
            return Err(Error::policy(
                path,
                format!("a rate must count more than zero, found `{s}`"),
            ));
        }
        if count > Self::MAX_COUNT {
            return Err(Error::policy(
                path,
                format!("a rate may count at most 4294967295 per period, found `{s}`"),
            ));
        }
        Ok(Rate {
            count,
            period_ns,
            unit,
        })
    }

    /// Units per period.
    pub fn count(&self) -> f64 {
        self.count
    }

    /// The period in nanoseconds.
    pub fn period_ns(&self) -> u64 {
        self.period_ns
    }

    /// The emission interval `T = period / count`, rounded to the nearest
    /// nanosecond (at least 1; the rounding error is under 0.5 ns per unit).
    pub fn interval_ns(&self) -> u64 {
        // Bounded by `params`' checks before any use that matters; the cast
        // saturates anyway.
        (self.period_ns as f64 / self.count).round().max(1.0) as u64
    }

    /// The burst when the policy gives none: the whole count, at least 1
    /// (`"100/s"` allows 100 at once, `"2.5/s"` 2, `"0.5/s"` 1).
    pub fn default_burst(&self) -> u32 {
        // count <= MAX_COUNT, so the floor fits.
        self.count.floor().max(1.0) as u32
    }

    /// GCRA parameters for this rate with `burst` (or [`Rate::default_burst`]).
    pub fn params(&self, burst: Option<u32>, path: &str) -> Result<GcraParams> {
        let exact = self.period_ns as f64 / self.count;
        if exact.round() < 1.0 {
            return Err(Error::policy(
                path,
                format!("`{self}` is too fast: at most one unit per nanosecond"),
            ));
        }
        if exact > MAX_CAPACITY_NS as f64 {
            return Err(Error::policy(
                path,
                format!("`{self}` is too slow: one unit must refill within 10 years"),
            ));
        }
        let burst = burst.unwrap_or_else(|| self.default_burst());
        GcraParams::new(self.interval_ns(), burst).map_err(|e| Error::policy(path, e.to_string()))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.unit)
    }
}

/// Parse a duration: a positive decimal and one of `ms`, `s`, `m`, `h`, `d`
/// (`"10s"`, `"500ms"`, `"1.5m"`), at most 10 years, to nanoseconds.
pub fn parse_duration(s: &str, path: &str) -> Result<u64> {
    let bad = || {
        Error::policy(
            path,
            format!(
                "expected a duration like `10s` (a positive number, then `ms`, `s`, `m`, `h` or `d`), found `{s}`"
            ),
        )
    };
    let split = s.find(|c: char| c.is_ascii_alphabetic()).ok_or_else(bad)?;
    let (number, unit) = s.split_at(split);
    let unit_ns = match unit {
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3_600e9,
        "d" => 86_400e9,
        _ => return Err(bad()),
    };
    let ns = (parse_decimal(number).ok_or_else(bad)? * unit_ns).round();
    if !(1.0..=MAX_CAPACITY_NS as f64).contains(&ns) {
        return Err(Error::policy(
            path,
            format!("a duration must be positive and at most 10 years, found `{s}`"),
        ));
    }
    Ok(ns as u64)
}

/// Check a cost from the policy's `costs` table: a whole number of units,
/// at least 1.
pub fn parse_cost(cost: i64, path: &str) -> Result<u32> {
    match u32::try_from(cost) {
        Ok(c) if c >= 1 => Ok(c),
        _ => Err(Error::policy(
            path,
            format!("a cost must be a whole number from 1 to 4294967295, found `{cost}`"),
        )),
    }
}

impl BreakerConfig {
    /// A breaker from the policy's table: `quota_denials` and
    /// `policy_denials` thresholds (0 or absent: that trigger is off) and a
    /// `window` duration such as `"10s"`.
    pub fn parse(
        quota_denials: Option<u32>,
        policy_denials: Option<u32>,
        window: &str,
        path: &str,
    ) -> Result<BreakerConfig> {
        let window_ns = parse_duration(window, &format!("{path}.window"))?;
        BreakerConfig::new(
            quota_denials.unwrap_or(0),
            policy_denials.unwrap_or(0),
            window_ns,
        )
        .map_err(|e| Error::policy(path, e.to_string()))
    }
}

/// Digits, optionally `.` and at least one more digit; nothing else.
fn parse_decimal(s: &str) -> Option<f64> {
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (s, None),
    };
    let digits = |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || frac.is_some_and(|f| !digits(f)) {
        return None;
    }
    s.parse::<f64>().ok().filter(|x| x.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = NS_PER_S;

    fn params(s: &str, burst: Option<u32>) -> GcraParams {
        Rate::parse(s, "quotas.q.rate")
            .unwrap()
            .params(burst, "quotas.q")
            .unwrap()
    }

    #[test]
    fn good_rates() {
        let table: &[(&str, Option<u32>, u64, u32)] = &[
            ("100/s", None, S / 100, 100),
            ("100/s", Some(20), S / 100, 20),
            ("5000/m", None, 12_000_000, 5_000),
            ("10/h", None, 360 * S, 10),
            ("10000/h", None, 360_000_000, 10_000),
            ("10000/d", None, 8_640_000_000, 10_000),
            ("2.5/s", None, 400_000_000, 2),
            ("0.5/s", None, 2 * S, 1),
            ("3/s", None, 333_333_333, 3),
            ("1/d", Some(1), 86_400 * S, 1),
            ("1000000000/s", None, 1, 1_000_000_000),
            ("007/s", None, S / 7 + 1, 7),
        ];
        for &(s, burst, interval, want_burst) in table {
            let p = params(s, burst);
            assert_eq!((p.interval_ns(), p.burst()), (interval, want_burst), "{s}");
            assert_eq!(
                p.tolerance_ns(),
                interval * u64::from(want_burst - 1),
                "{s}"
            );
        }
        let r = Rate::parse("2.5/s", "x").unwrap();
        assert_eq!((r.count(), r.period_ns()), (2.5, S));
        assert_eq!(r.to_string(), "2.5/s");
    }

    #[test]
    fn bad_rates() {
        for s in [
            "", "100", "/s", "100/", "100/x", "100/sec", "100/S", "100 /s", " 100/s", "100/s ",
            "-1/s", "+1/s", "1e3/s", "inf/s", "NaN/s", ".5/s", "5./s", "1.2.3/s", "1/2/s",
            "0x10/s", "１/s",
        ] {
            let e = Rate::parse(s, "quotas.q.rate").unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("quotas.q.rate: expected a rate like `100/s` (a positive count, `/`, then `s`, `m`, `h` or `d`), found `{s}`"),
            );
        }
        let e = Rate::parse("0/s", "p").unwrap_err();
        assert_eq!(
            e.to_string(),
            "p: a rate must count more than zero, found `0/s`"
        );
        assert!(Rate::parse("0.0/m", "p").is_err());
        assert!(Rate::parse("4294967296/d", "p").is_err());
        assert!(Rate::parse("4294967295/d", "p").is_ok());
    }

    #[test]
    fn rates_that_parse_but_cannot_be_limits() {
        let too_fast = Rate::parse("3000000000/s", "p").unwrap();
        assert_eq!(
            too_fast.params(None, "quotas.q").unwrap_err().to_string(),
            "quotas.q: `3000000000/s` is too fast: at most one unit per nanosecond"
        );
        let too_slow = Rate::parse("0.0000001/d", "p").unwrap();
        assert!(too_slow
            .params(Some(1), "q")
            .unwrap_err()
            .to_string()
            .contains("too slow"));
        let r = Rate::parse("1/d", "p").unwrap();
        assert_eq!(
            r.params(Some(0), "quotas.q").unwrap_err().to_string(),
            "quotas.q: burst must be at least 1"
        );
        assert_eq!(
            r.params(Some(5_000), "quotas.q").unwrap_err().to_string(),
            "quotas.q: a burst of 5000 at this rate takes more than 10 years to refill"
        );
        assert!(r.params(Some(3_650), "quotas.q").is_ok());
    }

    #[test]
    fn durations() {
        for (s, ns) in [
            ("10s", 10 * S),
            ("500ms", S / 2),
            ("1.5m", 90 * S),
            ("2h", 7_200 * S),
            ("1d", 86_400 * S),
            ("0.000001ms", 1),
        ] {
            assert_eq!(parse_duration(s, "p").unwrap(), ns, "{s}");
        }
        for s in [
            "", "10", "s", "10 s", "10sec", "10S", "-1s", "1e3s", "10us", ".5s",
        ] {
            assert!(
                parse_duration(s, "t.breaker.window")
                    .unwrap_err()
                    .to_string()
                    .starts_with("t.breaker.window: expected a duration like `10s`"),
                "{s}"
            );
        }
        assert_eq!(
            parse_duration("0s", "p").unwrap_err().to_string(),
            "p: a duration must be positive and at most 10 years, found `0s`"
        );
        assert!(parse_duration("3651d", "p").is_err());
    }

    #[test]
    fn costs() {
        assert_eq!(parse_cost(25, "costs.\"llm:complete\"").unwrap(), 25);
        assert_eq!(parse_cost(1, "p").unwrap(), 1);
        assert_eq!(
            parse_cost(0, "costs.x").unwrap_err().to_string(),
            "costs.x: a cost must be a whole number from 1 to 4294967295, found `0`"
        );
        assert!(parse_cost(-3, "p").is_err());
        assert!(parse_cost(1 << 40, "p").is_err());
    }

    #[test]
    fn breaker_configs() {
        let b = BreakerConfig::parse(Some(100), Some(50), "10s", "templates.t.breaker").unwrap();
        assert_eq!(b.window_ns(), 10 * S);
        let e = BreakerConfig::parse(Some(1), None, "soon", "templates.t.breaker").unwrap_err();
        assert!(e.to_string().starts_with("templates.t.breaker.window: "));
        let e = BreakerConfig::parse(Some(70_000), None, "1s", "templates.t.breaker").unwrap_err();
        assert!(e.to_string().starts_with("templates.t.breaker: "), "{e}");
    }
}
