//! Durations in Go's `time.ParseDuration` syntax (`2160h`, `1h30m`, `1.5s`,
//! `500ms`), so flags copied from docker commands keep working.

use std::time::Duration;

/// Go's `time.Duration` is an `i64` of nanoseconds; a larger value would be
/// refused by docker, so it is refused here too.
const MAX_NANOS: u128 = i64::MAX as u128;
/// Fraction digits past this cannot change a nanosecond count (the largest
/// unit, an hour, is 3.6e12 ns) and are ignored, as Go ignores them.
const FRACTION_DIGITS: usize = 20;
const UNITS: &str = "ns, us, ms, s, m, h";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration; give a number and a unit, e.g. 90m")]
    Empty,
    #[error("negative durations are not allowed")]
    Negative,
    #[error("expected a number before the unit, e.g. 90m")]
    Number,
    #[error("missing unit after a number (units: {UNITS}), e.g. 90m")]
    MissingUnit,
    #[error("unknown unit {unit:?} (units: {UNITS}){}", day_hint(unit))]
    UnknownUnit { unit: String },
    #[error("duration too long (at most 2562047h)")]
    Overflow,
}

fn day_hint(unit: &str) -> &'static str {
    // The commonest mistake: docker has no day unit either.
    if matches!(unit, "d" | "day" | "days" | "w") {
        "; give days in hours, e.g. 2160h for 90 days"
    } else {
        ""
    }
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        // Go accepts both micro signs (U+00B5 and U+03BC).
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

fn split_digits(s: &str) -> (&str, &str) {
    s.split_at(s.bytes().take_while(u8::is_ascii_digit).count())
}

/// Parses `[+]<number><unit>...`, e.g. `1h30m`; `0` needs no unit.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let mut s = input.strip_prefix('+').unwrap_or(input);
    if let Some(rest) = s.strip_prefix('-') {
        // Go accepts "-0"; any other negative value is an error for every flag.
        return if rest == "0" {
            Ok(Duration::ZERO)
        } else {
            Err(DurationError::Negative)
        };
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let (int, rest) = split_digits(s);
        let (frac, rest) = match rest.strip_prefix('.') {
            Some(after_dot) => split_digits(after_dot),
            None => ("", rest),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(DurationError::Number);
        }
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (unit, rest) = rest.split_at(unit_len);
        if unit.is_empty() {
            return Err(DurationError::MissingUnit);
        }
        let per = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
            unit: unit.to_owned(),
        })?;
        let mut whole: u128 = 0;
        for d in int.bytes() {
            whole = whole * 10 + u128::from(d - b'0');
            // Bounded here so the products below cannot overflow u128.
            if whole > MAX_NANOS {
                return Err(DurationError::Overflow);
            }
        }
        let (mut f, mut scale) = (0u128, 1u128);
        for d in frac.bytes().take(FRACTION_DIGITS) {
            f = f * 10 + u128::from(d - b'0');
            scale *= 10;
        }
        total = total
            .checked_add(whole * per + f * per / scale)
            .filter(|t| *t <= MAX_NANOS)
            .ok_or(DurationError::Overflow)?;
        s = rest;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| DurationError::Overflow)?;
    // The remainder is below 1e9, so it fits.
    let nanos = u32::try_from(total % 1_000_000_000).map_err(|_| DurationError::Overflow)?;
    Ok(Duration::new(secs, nanos))
}

/// `n` units with the fraction `frac` of `digits` digits, trailing zeros
/// dropped, as Go prints them.
fn with_fraction(n: u64, frac: u64, digits: usize) -> String {
    if frac == 0 {
        return n.to_string();
    }
    let f = format!("{frac:0digits$}");
    format!("{n}.{}", f.trim_end_matches('0'))
}

/// Go's `time.Duration.String()`: `0s`, `500ms`, `1.5µs`, `1m30s`,
/// `2h0m0s` — what docker prints in `inspect --pretty`.
pub fn go_string(nanos: u64) -> String {
    const SEC: u64 = 1_000_000_000;
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < SEC {
        let (per, unit, digits) = match nanos {
            n if n < 1_000 => (1, "ns", 0),
            n if n < 1_000_000 => (1_000, "\u{b5}s", 3),
            _ => (1_000_000, "ms", 6),
        };
        return format!("{}{unit}", with_fraction(nanos / per, nanos % per, digits));
    }
    let secs = nanos / SEC;
    let s = with_fraction(secs % 60, nanos % SEC, 9);
    match (secs / 3600, secs / 60 % 60) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

/// The shortest form `parse_duration` reads back: `1h30m`, `1s500ms`, `0s`.
#[cfg(test)]
pub fn format_duration(d: Duration) -> String {
    let mut out = String::new();
    let secs = d.as_secs();
    let sub = d.subsec_nanos();
    let parts = [
        (secs / 3600, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
        (u64::from(sub / 1_000_000), "ms"),
        (u64::from(sub / 1_000 % 1_000), "us"),
        (u64::from(sub % 1_000), "ns"),
    ];
    for (n, unit) in parts {
        if n != 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(s: &str) -> Option<Duration> {
        parse_duration(s).ok()
    }

    #[test]
    fn docker_forms() {
        let h = |n: u64| Some(Duration::from_secs(n * 3600));
        assert_eq!(ok("2160h"), h(2160));
        assert_eq!(ok("90m"), Some(Duration::from_secs(5400)));
        assert_eq!(ok("5s"), Some(Duration::from_secs(5)));
        assert_eq!(ok("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(ok("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(ok("+1h"), h(1));
        assert_eq!(ok("2160h0m0s"), h(2160));
        assert_eq!(ok("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(ok("1us"), Some(Duration::from_micros(1)));
        assert_eq!(ok("1\u{b5}s"), Some(Duration::from_micros(1)));
        assert_eq!(ok("1\u{3bc}s"), Some(Duration::from_micros(1)));
        assert_eq!(ok("7ns"), Some(Duration::from_nanos(7)));
        assert_eq!(ok(".5s"), Some(Duration::from_millis(500)));
        assert_eq!(ok("1.s"), Some(Duration::from_secs(1)));
        assert_eq!(ok("0"), Some(Duration::ZERO));
        assert_eq!(ok("-0"), Some(Duration::ZERO));
        assert_eq!(ok("2562047h"), h(2_562_047));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        use DurationError::*;
        let err = |s: &str| parse_duration(s).err();
        assert_eq!(err(""), Some(Empty));
        assert_eq!(err("-5s"), Some(Negative));
        assert_eq!(err("5"), Some(MissingUnit));
        assert_eq!(err("h"), Some(Number));
        assert_eq!(err(".s"), Some(Number));
        assert_eq!(err("1h."), Some(Number));
        assert_eq!(err("2562048h"), Some(Overflow));
        assert_eq!(err("99999999999999999999999999h"), Some(Overflow));
        let e = err("90d").map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("\"d\"") && e.contains("2160h"), "{e}");
        assert_eq!(
            err("1 h"),
            Some(UnknownUnit {
                unit: " h".to_owned()
            })
        );
    }

    #[test]
    fn go_strings_as_docker_prints() {
        assert_eq!(go_string(0), "0s");
        assert_eq!(go_string(7), "7ns");
        assert_eq!(go_string(1_500), "1.5\u{b5}s");
        assert_eq!(go_string(500_000_000), "500ms");
        assert_eq!(go_string(5_000_000_000), "5s");
        assert_eq!(go_string(1_500_000_000), "1.5s");
        assert_eq!(go_string(90_000_000_000), "1m30s");
        assert_eq!(go_string(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_string(3_661_000_000_001), "1h1m1.000000001s");
    }

    #[test]
    fn format_is_short() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_secs(2160 * 3600)), "2160h");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(format_duration(Duration::new(0, 1_001)), "1us1ns");
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,40}") {
            let _ = parse_duration(&s);
        }

        #[test]
        fn never_panics_on_near_misses(s in "[+-]?[0-9.]{0,25}(h|m|s|ms|us|ns|d|)[0-9.]{0,5}") {
            let _ = parse_duration(&s);
        }

        #[test]
        fn round_trips(nanos in 0..=i64::MAX as u64) {
            let d = Duration::from_nanos(nanos);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn go_strings_read_back(nanos in 0..=i64::MAX as u64) {
            let text = go_string(nanos);
            prop_assert_eq!(parse_duration(&text), Ok(Duration::from_nanos(nanos)), "{}", text);
        }

        #[test]
        fn negatives_are_refused(n in 1u64..1_000_000, unit in "(ns|us|ms|s|m|h)") {
            prop_assert_eq!(parse_duration(&format!("-{n}{unit}")), Err(DurationError::Negative));
        }

        #[test]
        fn whole_hours_round_trip(h in 0u64..2_562_047) {
            prop_assert_eq!(
                parse_duration(&format!("{h}h")),
                Ok(Duration::from_secs(h * 3600))
            );
        }
    }
}
