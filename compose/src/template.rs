//! Variable substitution as docker/cli's `cli/compose/template` does it
//! (docker CLI 28), quirks included, because a stack must mean here what it
//! means to `docker stack deploy`:
//!
//! - `$$` is a literal `$`; `$VAR` and `${VAR}` substitute; names are
//!   `[_a-zA-Z][_a-zA-Z0-9]*`.
//! - `${VAR:-default}` (unset or empty), `${VAR-default}` (unset),
//!   `${VAR:?message}` (error if unset or empty), `${VAR?message}` (error if
//!   unset). A default runs to the first `}` and is taken literally: no
//!   nesting, so `${A:-${B}}` gives `${B}` when A is unset and `<A>}` when set.
//! - The unbraced form takes the same suffixes up to the first `}` or the end
//!   of the string: `$VAR-x y` means `${VAR-x y}`.
//! - The forms are tried in the order `:-`, `-`, `:?`, `?` on the text after
//!   the name, so `${VAR:?must-set}` is a `-` default of variable `VAR:?must`.
//! - Any other `$` is an invalid template; as in docker, a later valid
//!   substitution in the same string clears that error (`a$ ${B}` is
//!   accepted and gives `a ` + B).

use std::collections::HashMap;

/// Why a template could not be substituted. Docker reports both through one
/// "invalid interpolation format" message; the loader tells them apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// A `$` that starts no valid substitution; holds the whole template.
    Invalid { template: String },
    /// `${NAME:?message}` / `${NAME?message}` with NAME unset (or empty).
    Required { name: String, message: String },
}

/// The result of substituting one string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Substituted {
    pub value: String,
    /// Variables used without a default that were not set (they became "").
    pub unset: Vec<String>,
}

/// Substitutes `template` from `env` only.
pub fn substitute(
    template: &str,
    env: &HashMap<String, String>,
) -> Result<Substituted, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut unset = Vec::new();
    let mut err: Option<TemplateError> = None;
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (replacement, used) = match match_at(after) {
            Match::Escaped => (Some("$".to_string()), 1),
            Match::Invalid => {
                err = Some(TemplateError::Invalid {
                    template: template.to_string(),
                });
                (None, 0)
            }
            Match::Named(body, used) => match apply(body, env, &mut unset) {
                Ok(v) => {
                    err = None;
                    (Some(v), used)
                }
                Err(e) => {
                    err = Some(e);
                    (None, used)
                }
            },
        };
        if let Some(r) = replacement {
            out.push_str(&r);
        }
        rest = &after[used..];
    }
    out.push_str(rest);
    match err {
        Some(e) => Err(e),
        None => Ok(Substituted { value: out, unset }),
    }
}

enum Match<'a> {
    Escaped,
    /// The substitution body (name and optional suffix) and how many bytes
    /// after the `$` the match used.
    Named(&'a str, usize),
    Invalid,
}

fn is_name_start(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_name_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

/// Length in bytes of `[_a-z][_a-z0-9]*` at the start of `s` (0 if none).
fn name_len(s: &str) -> usize {
    let mut chars = s.char_indices();
    match chars.next() {
        Some((_, c)) if is_name_start(c) => {}
        _ => return 0,
    }
    s.char_indices()
        .skip(1)
        .find(|&(_, c)| !is_name_char(c))
        .map_or(s.len(), |(i, _)| i)
}

/// Length of the optional `:?[-?][^}]*` suffix at the start of `s`.
fn suffix_len(s: &str) -> usize {
    let b = s.as_bytes();
    let start = if b.first() == Some(&b':') && matches!(b.get(1), Some(b'-' | b'?')) {
        2
    } else if matches!(b.first(), Some(b'-' | b'?')) {
        1
    } else {
        return 0;
    };
    start + s[start..].find('}').unwrap_or(s.len() - start)
}

/// Docker's pattern at one `$` (`after` is the text following it), tried in
/// its alternation order: escaped, named, braced, invalid.
fn match_at(after: &str) -> Match<'_> {
    if after.starts_with('$') {
        return Match::Escaped;
    }
    let n = name_len(after);
    if n > 0 {
        let used = n + suffix_len(&after[n..]);
        return Match::Named(&after[..used], used);
    }
    if let Some(inner) = after.strip_prefix('{') {
        let n = name_len(inner);
        if n > 0 {
            let body = n + suffix_len(&inner[n..]);
            if inner[body..].starts_with('}') {
                return Match::Named(&inner[..body], body + 2);
            }
        }
    }
    Match::Invalid
}

fn apply(
    body: &str,
    env: &HashMap<String, String>,
    unset: &mut Vec<String>,
) -> Result<String, TemplateError> {
    if let Some((name, default)) = body.split_once(":-") {
        return Ok(match env.get(name) {
            Some(v) if !v.is_empty() => v.clone(),
            _ => default.to_string(),
        });
    }
    if let Some((name, default)) = body.split_once('-') {
        return Ok(env
            .get(name)
            .cloned()
            .unwrap_or_else(|| default.to_string()));
    }
    if let Some((name, message)) = body.split_once(":?") {
        return match env.get(name) {
            Some(v) if !v.is_empty() => Ok(v.clone()),
            _ => Err(TemplateError::Required {
                name: name.into(),
                message: message.into(),
            }),
        };
    }
    if let Some((name, message)) = body.split_once('?') {
        return env
            .get(name)
            .cloned()
            .ok_or_else(|| TemplateError::Required {
                name: name.into(),
                message: message.into(),
            });
    }
    match env.get(body) {
        Some(v) => Ok(v.clone()),
        None => {
            if !unset.iter().any(|u| u == body) {
                unset.push(body.to_string());
            }
            Ok(String::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn env() -> HashMap<String, String> {
        [("A", "aval"), ("E", ""), ("lower", "low")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sub(t: &str) -> Result<String, TemplateError> {
        substitute(t, &env()).map(|s| s.value)
    }

    fn ok(t: &str) -> String {
        sub(t).unwrap_or_else(|e| panic!("{t}: {e:?}"))
    }

    // Each expectation below was checked against `docker stack config`
    // (docker CLI 28.2.2).
    #[test]
    fn forms() {
        assert_eq!(ok("$A"), "aval");
        assert_eq!(ok("${A}"), "aval");
        assert_eq!(ok("x${A}y"), "xavaly");
        assert_eq!(ok("$lower"), "low");
        assert_eq!(ok("${E:-def}"), "def");
        assert_eq!(ok("${E-def}"), "");
        assert_eq!(ok("${U-def}"), "def");
        assert_eq!(ok("${U:-}"), "");
        assert_eq!(ok("$$A"), "$A");
        assert_eq!(ok("$$"), "$");
        assert_eq!(ok("${U:-a$b}"), "a$b");
        assert_eq!(ok("$A:x"), "aval:x");
        assert_eq!(ok("$A.b"), "aval.b");
        assert_eq!(ok("no dollar"), "no dollar");
    }

    #[test]
    fn docker_quirks() {
        assert_eq!(ok("${A:-${B}}"), "aval}");
        assert_eq!(ok("${U:-${B}}"), "${B}");
        assert_eq!(ok("$A-x y"), "aval");
        assert_eq!(ok("$U-x y"), "x y");
        assert_eq!(ok("${U:?must-set}"), "set");
        assert_eq!(ok("a$ ${A}"), "a aval");
    }

    #[test]
    fn required_and_invalid() {
        assert_eq!(
            sub("${U:?mustset}"),
            Err(TemplateError::Required {
                name: "U".into(),
                message: "mustset".into()
            })
        );
        assert_eq!(
            sub("${E:?empty}"),
            Err(TemplateError::Required {
                name: "E".into(),
                message: "empty".into()
            })
        );
        assert_eq!(ok("${E?fine}"), "");
        assert_eq!(
            sub("${U?}"),
            Err(TemplateError::Required {
                name: "U".into(),
                message: String::new()
            })
        );
        for bad in ["${A} $", "${A:x}", "$1", "${}", "${A", "$ {A}", "${ A}"] {
            assert_eq!(
                sub(bad),
                Err(TemplateError::Invalid {
                    template: bad.to_string()
                }),
                "{bad}"
            );
        }
    }

    #[test]
    fn unset_variables_are_reported_once() {
        let s = substitute("$U ${U} ${V:-x} $W", &env()).expect("ok");
        assert_eq!(s.value, "  x ");
        assert_eq!(s.unset, vec!["U".to_string(), "W".to_string()]);
    }

    proptest! {
        #[test]
        fn never_panics(t in "\\PC{0,64}") {
            let _ = substitute(&t, &env());
        }

        #[test]
        fn text_without_dollar_is_unchanged(t in "[^$]{0,64}") {
            prop_assert_eq!(sub(&t), Ok(t.clone()));
        }

        #[test]
        fn escaped_dollars_round_trip(t in "[^$]{0,32}") {
            // Doubling every `$` of any text gives the text back.
            let raw = format!("{t}${t}$");
            let escaped = raw.replace('$', "$$");
            prop_assert_eq!(sub(&escaped), Ok(raw));
        }

        #[test]
        fn defaults(name in "[A-Z_][A-Z0-9_]{0,8}", default in "[^}$:]{0,16}") {
            prop_assume!(!env().contains_key(&name));
            prop_assert_eq!(sub(&format!("${{{name}:-{default}}}")), Ok(default.clone()));
            prop_assert_eq!(sub(&format!("${{{name}-{default}}}")), Ok(default.clone()));
            prop_assert_eq!(sub(&format!("${{A:-{default}}}")), Ok("aval".to_string()));
        }
    }
}
