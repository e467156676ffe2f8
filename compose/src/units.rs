//! The value syntaxes docker's loader parses: Go durations (`1m30s`),
//! go-units RAM sizes (`50M`, `1g`), CPU counts as rationals (`0.5`), and
//! google/shlex word splitting for `command:`/`entrypoint:` strings.

use std::fmt;

/// A Go `time.Duration`: signed nanoseconds. Docker accepts negative
/// durations at load time (swarm refuses them later), so this keeps the sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub i64);

impl Duration {
    pub const ZERO: Duration = Duration(0);

    pub fn nanos(self) -> i64 {
        self.0
    }

    /// The duration as std's, when it is not negative.
    pub fn to_std(self) -> Option<std::time::Duration> {
        u64::try_from(self.0)
            .ok()
            .map(std::time::Duration::from_nanos)
    }

    /// Go's `time.ParseDuration`.
    pub fn parse(text: &str) -> Result<Duration, String> {
        parse_duration(text).ok_or_else(|| {
            let quoted = format!("{text:?}");
            match duration_problem(text) {
                Some(p) => format!("time: {p} in duration {quoted}"),
                None => format!("time: invalid duration {quoted}"),
            }
        })
    }
}

/// Go's `Duration.String()`: `1h2m3.5s`, `1m30s`, `500ms`, `0s`.
impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let negative = self.0 < 0;
        let mut u = self.0.unsigned_abs();
        let sign = if negative { "-" } else { "" };
        if u == 0 {
            return f.write_str("0s");
        }
        if u < 1_000_000_000 {
            let (unit, scale) = if u < 1_000 {
                ("ns", 1)
            } else if u < 1_000_000 {
                ("µs", 1_000)
            } else {
                ("ms", 1_000_000)
            };
            return write!(f, "{sign}{}{unit}", fraction(u, scale));
        }
        let mut out = String::new();
        let hours = u / 3_600_000_000_000;
        u %= 3_600_000_000_000;
        let minutes = u / 60_000_000_000;
        u %= 60_000_000_000;
        if hours > 0 {
            out.push_str(&format!("{hours}h"));
        }
        if hours > 0 || minutes > 0 {
            out.push_str(&format!("{minutes}m"));
        }
        out.push_str(&fraction(u, 1_000_000_000));
        out.push('s');
        write!(f, "{sign}{out}")
    }
}

/// `value / scale` with the fraction's trailing zeros dropped.
fn fraction(value: u64, scale: u64) -> String {
    let whole = value / scale;
    let rest = value % scale;
    if rest == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{rest:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

fn parse_duration(text: &str) -> Option<Duration> {
    let (negative, mut s) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if s == "0" {
        return Some(Duration(0));
    }
    if s.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        let int_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (int_part, after) = s.split_at(int_end);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(a) => {
                let end = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
                a.split_at(end)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let unit_end = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let scale = unit_nanos(unit)?;
        let whole: u64 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().ok()?
        };
        let mut value = whole.checked_mul(scale)?;
        if !frac_part.is_empty() {
            // Go keeps at most ~18 significant fraction digits; more only
            // rounds below a nanosecond.
            let digits = &frac_part[..frac_part.len().min(18)];
            let numerator: u128 = digits.parse().ok()?;
            let denominator = 10u128.pow(digits.len() as u32);
            value = value.checked_add((numerator * scale as u128 / denominator) as u64)?;
        }
        total = total.checked_add(value)?;
        s = after;
    }
    if negative {
        if total > 1u64 << 63 {
            return None;
        }
        Some(Duration((total as i128).wrapping_neg() as i64))
    } else {
        i64::try_from(total).ok().map(Duration)
    }
}

/// Go's two more specific messages, for what it names.
fn duration_problem(text: &str) -> Option<String> {
    let body = text.trim_start_matches(['-', '+']);
    if !body.is_empty() && body.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Some("missing unit".into());
    }
    let mut unit = String::new();
    for c in body.chars() {
        if c.is_ascii_digit() || c == '.' {
            if !unit.is_empty() {
                break;
            }
        } else {
            unit.push(c);
        }
    }
    if !unit.is_empty()
        && unit_nanos(&unit).is_none()
        && body.starts_with(|c: char| c.is_ascii_digit())
    {
        return Some(format!("unknown unit {unit:?}"));
    }
    None
}

/// go-units `RAMInBytes`: a number (decimals allowed) and an optional
/// binary suffix `b`, `k`/`kb`/`kib`, `m`…, `p`…, any case; `50M` is 50 MiB.
pub fn ram_in_bytes(text: &str) -> Result<i64, String> {
    let invalid = || format!("invalid size: '{text}'");
    let Some(sep) = text.rfind(|c: char| c.is_ascii_digit() || c == '.' || c == ' ') else {
        return Err(invalid());
    };
    let (num, suffix) = if text.as_bytes()[sep] == b' ' {
        (&text[..sep], &text[sep + 1..])
    } else {
        (&text[..=sep], &text[sep + 1..])
    };
    let size: f64 = parse_go_float(num).ok_or_else(|| format!("invalid size: '{text}'"))?;
    if size < 0.0 {
        return Err(invalid());
    }
    if suffix.is_empty() {
        return Ok(size as i64);
    }
    let bad_suffix = || format!("invalid suffix: '{}'", suffix.to_lowercase());
    if suffix.len() > 3 {
        return Err(format!("invalid suffix: '{suffix}'"));
    }
    let sfx = suffix.to_lowercase();
    let first = sfx.as_bytes()[0];
    if first == b'b' {
        return if sfx.len() > 1 {
            Err(bad_suffix())
        } else {
            Ok(size as i64)
        };
    }
    let multiplier: f64 = match first {
        b'k' => 1024.0,
        b'm' => 1024.0 * 1024.0,
        b'g' => 1024.0 * 1024.0 * 1024.0,
        b't' => 1024.0f64.powi(4),
        b'p' => 1024.0f64.powi(5),
        _ => return Err(bad_suffix()),
    };
    match sfx.len() {
        2 if &sfx[1..] != "b" => return Err(bad_suffix()),
        3 if &sfx[1..] != "ib" => return Err(bad_suffix()),
        _ => {}
    }
    Ok((size * multiplier) as i64)
}

/// Go's ParseFloat for plain decimal text (no hex, no underscores).
fn parse_go_float(s: &str) -> Option<f64> {
    if s.is_empty()
        || !s
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
    {
        return None;
    }
    s.parse().ok()
}

/// docker's `opts.ParseCPUs`: the text as an exact rational (`0.5`, `1/2`,
/// `1e-3`), times 10⁹, which must come out whole.
pub fn parse_cpus(text: &str) -> Result<i64, String> {
    let failed = || format!("failed to parse {text} as a rational number");
    let (num, den) = parse_rational(text).ok_or_else(failed)?;
    let nanos = num.checked_mul(1_000_000_000).ok_or_else(failed)?;
    if den == 0 {
        return Err(failed());
    }
    if nanos % den != 0 {
        return Err("value is too precise".into());
    }
    i64::try_from(nanos / den).map_err(|_| failed())
}

/// An exact rational from `a/b` or a decimal with an optional exponent.
fn parse_rational(text: &str) -> Option<(i128, i128)> {
    if let Some((a, b)) = text.split_once('/') {
        let a: i128 = a.parse().ok()?;
        let b: i128 = b.parse().ok()?;
        return if b < 0 { Some((-a, -b)) } else { Some((a, b)) };
    }
    let (mantissa, exp) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (negative, mantissa) = match mantissa.as_bytes().first()? {
        b'-' => (true, &mantissa[1..]),
        b'+' => (false, &mantissa[1..]),
        _ => (false, mantissa),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part
            .chars()
            .chain(frac_part.chars())
            .all(|c| c.is_ascii_digit())
        || int_part.len() + frac_part.len() > 30
        || exp.abs() > 30
    {
        return None;
    }
    let digits = format!("{int_part}{frac_part}");
    let mut num: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let mut den: i128 = 10i128.checked_pow(frac_part.len() as u32)?;
    if exp > 0 {
        num = num.checked_mul(10i128.checked_pow(exp as u32)?)?;
    } else {
        den = den.checked_mul(10i128.checked_pow(exp.unsigned_abs())?)?;
    }
    if negative {
        num = -num;
    }
    Some((num, den))
}

/// Formats nano-CPUs back as the decimal docker users write (`0.5`).
pub fn format_cpus(nanos: i64) -> String {
    let negative = nanos < 0;
    let s = fraction(nanos.unsigned_abs(), 1_000_000_000);
    if negative { format!("-{s}") } else { s }
}

/// google/shlex `Split`, which docker uses for `command:`/`entrypoint:`
/// strings: whitespace separates words, `"…"` allows `\` escapes, `'…'` is
/// literal, `\` escapes one character outside quotes, and a `#` starting a
/// word starts a comment to the end of the line.
pub fn shlex_split(text: &str) -> Result<Vec<String>, String> {
    #[derive(PartialEq)]
    enum State {
        Start,
        Word,
        Escaping,
        EscapingQuoted,
        Quoting,
        QuotingSingle,
        Comment,
    }
    let mut words = Vec::new();
    let mut word = String::new();
    let mut state = State::Start;
    let mut chars = text.chars();
    loop {
        let c = chars.next();
        match state {
            State::Start => match c {
                None => return Ok(words),
                Some(' ' | '\t' | '\r' | '\n') => {}
                Some('"') => state = State::Quoting,
                Some('\'') => state = State::QuotingSingle,
                Some('\\') => state = State::Escaping,
                Some('#') => state = State::Comment,
                Some(c) => {
                    word.push(c);
                    state = State::Word;
                }
            },
            State::Word => match c {
                None | Some(' ' | '\t' | '\r' | '\n') => {
                    words.push(std::mem::take(&mut word));
                    if c.is_none() {
                        return Ok(words);
                    }
                    state = State::Start;
                }
                Some('"') => state = State::Quoting,
                Some('\'') => state = State::QuotingSingle,
                Some('\\') => state = State::Escaping,
                Some(c) => word.push(c),
            },
            State::Escaping => match c {
                None => return Err("EOF found after escape character".into()),
                Some(c) => {
                    word.push(c);
                    state = State::Word;
                }
            },
            State::EscapingQuoted => match c {
                None => return Err("EOF found after escape character".into()),
                Some(c) => {
                    word.push(c);
                    state = State::Quoting;
                }
            },
            State::Quoting => match c {
                None => return Err("EOF found when expecting closing quote".into()),
                Some('"') => state = State::Word,
                Some('\\') => state = State::EscapingQuoted,
                Some(c) => word.push(c),
            },
            State::QuotingSingle => match c {
                None => return Err("EOF found when expecting closing quote".into()),
                Some('\'') => state = State::Word,
                Some(c) => word.push(c),
            },
            State::Comment => match c {
                None => return Ok(words),
                Some('\n') => state = State::Start,
                Some(_) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations_parse_like_go() {
        let d = |s: &str| Duration::parse(s).expect(s).0;
        assert_eq!(d("1m30s"), 90_000_000_000);
        assert_eq!(d("1.5h"), 5_400_000_000_000);
        assert_eq!(d("0"), 0);
        assert_eq!(d("-1s"), -1_000_000_000);
        assert_eq!(d("1us"), 1_000);
        assert_eq!(d("1µs"), 1_000);
        assert_eq!(d(".5s"), 500_000_000);
        assert_eq!(d("1h0m0.5s"), 3_600_500_000_000);
        assert_eq!(
            Duration::parse("1").expect_err("must fail"),
            "time: missing unit in duration \"1\""
        );
        assert_eq!(
            Duration::parse("1x").expect_err("must fail"),
            "time: unknown unit \"x\" in duration \"1x\""
        );
        assert_eq!(
            Duration::parse("").expect_err("must fail"),
            "time: invalid duration \"\""
        );
        assert!(Duration::parse("s").is_err());
        assert!(Duration::parse("1.s5").is_err());
        assert!(Duration::parse("9999999999h").is_err());
    }

    #[test]
    fn durations_print_like_go() {
        let s = |n: i64| Duration(n).to_string();
        assert_eq!(s(0), "0s");
        assert_eq!(s(90_000_000_000), "1m30s");
        assert_eq!(s(5_400_000_000_000), "1h30m0s");
        assert_eq!(s(3_600_500_000_000), "1h0m0.5s");
        assert_eq!(s(60_000_000_000), "1m0s");
        assert_eq!(s(1_500), "1.5µs");
        assert_eq!(s(100_000_000), "100ms");
        assert_eq!(s(1), "1ns");
        assert_eq!(s(-1_000_000_000), "-1s");
    }

    #[test]
    fn ram_sizes() {
        assert_eq!(ram_in_bytes("50M"), Ok(52_428_800));
        assert_eq!(ram_in_bytes("1g"), Ok(1_073_741_824));
        assert_eq!(ram_in_bytes("1GiB"), Ok(1_073_741_824));
        assert_eq!(ram_in_bytes("1.5k"), Ok(1536));
        assert_eq!(ram_in_bytes("10 mb"), Ok(10_485_760));
        assert_eq!(ram_in_bytes("1024"), Ok(1024));
        assert_eq!(ram_in_bytes("12b"), Ok(12));
        assert_eq!(ram_in_bytes("1x"), Err("invalid suffix: 'x'".into()));
        assert_eq!(ram_in_bytes("abc"), Err("invalid size: 'abc'".into()));
        assert!(ram_in_bytes("1mbb").is_err());
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("0.5"), Ok(500_000_000));
        assert_eq!(parse_cpus("2"), Ok(2_000_000_000));
        assert_eq!(parse_cpus("1/4"), Ok(250_000_000));
        assert_eq!(parse_cpus("1e-3"), Ok(1_000_000));
        assert_eq!(
            parse_cpus("0.0000000001"),
            Err("value is too precise".into())
        );
        assert!(parse_cpus("half").is_err());
        assert_eq!(format_cpus(500_000_000), "0.5");
        assert_eq!(format_cpus(2_000_000_000), "2");
        assert_eq!(format_cpus(1_000_000), "0.001");
    }

    #[test]
    fn shlex_like_google_shlex() {
        let split = |s: &str| shlex_split(s).expect(s);
        assert_eq!(
            split(r#"echo "hello world" 'a b' c\ d"#),
            ["echo", "hello world", "a b", "c d"]
        );
        assert_eq!(split("a#b #c d\ne"), ["a#b", "e"]);
        assert_eq!(split(r#""a\"b" ''"#), ["a\"b", ""]);
        assert_eq!(split("  "), Vec::<String>::new());
        assert!(shlex_split("'open").is_err());
        assert!(shlex_split("end\\").is_err());
    }

    proptest! {
        #[test]
        fn duration_display_parses_back(n in any::<i64>()) {
            prop_assume!(n != i64::MIN);
            let d = Duration(n);
            prop_assert_eq!(Duration::parse(&d.to_string()), Ok(d));
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,32}") {
            let _ = Duration::parse(&s);
            let _ = ram_in_bytes(&s);
            let _ = parse_cpus(&s);
            let _ = shlex_split(&s);
        }

        #[test]
        fn plain_words_split_on_spaces(words in proptest::collection::vec("[a-z0-9]{1,8}", 0..6)) {
            prop_assert_eq!(shlex_split(&words.join(" ")), Ok(words.clone()));
        }
    }
}
