//! docker's env-file syntax (`pkg/kvfile`): one `KEY=VALUE` a line, taken
//! as-is (no quotes, no interpolation, trailing spaces kept); leading
//! whitespace and a UTF-8 BOM dropped; `#` lines and blank lines skipped; a
//! bare `KEY` takes the caller's value, or is left out when it has none.

use std::collections::HashMap;

/// Parses env-file text into `KEY=VALUE` entries, in file order.
pub fn parse(text: &[u8], env: &HashMap<String, String>) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    // bufio.Scanner lines: split on \n, drop one trailing \r.
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    for (i, raw) in lines.into_iter().enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let Ok(mut line) = std::str::from_utf8(raw) else {
            return Err(format!("invalid utf8 bytes at line {}: {raw:?}", i + 1));
        };
        if i == 0 {
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, has_value) = match line.split_once('=') {
            Some((k, _)) => (k, true),
            None => (line, false),
        };
        if key.is_empty() {
            return Err(format!("no variable name on line '{line}'"));
        }
        if key.contains([' ', '\t']) {
            return Err(format!("variable '{key}' contains whitespaces"));
        }
        if has_value {
            out.push(line.to_string());
        } else if let Some(v) = env.get(line) {
            out.push(format!("{key}={v}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn docker_env_file_syntax() {
        let env: HashMap<String, String> = [("FROM_ENV".to_string(), "e".to_string())].into();
        let text =
            "\u{feff}# comment\n\n  A=1\nB= spaced \nC=\"quoted\"\nFROM_ENV\nMISSING\nD=x=y\r\n";
        assert_eq!(
            parse(text.as_bytes(), &env).expect("ok"),
            ["A=1", "B= spaced ", "C=\"quoted\"", "FROM_ENV=e", "D=x=y"]
        );
        assert_eq!(
            parse(b"=1\n", &env).expect_err("must fail"),
            "no variable name on line '=1'"
        );
        assert_eq!(
            parse(b"A B=1\n", &env).expect_err("must fail"),
            "variable 'A B' contains whitespaces"
        );
        assert!(
            parse(b"A=\xff\n", &env)
                .expect_err("must fail")
                .starts_with("invalid utf8 bytes at line 1")
        );
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes, &HashMap::new());
        }

        #[test]
        fn key_value_lines_round_trip(pairs in proptest::collection::vec(("[A-Z_][A-Z0-9_]{0,6}", "[^\n\r]{0,10}"), 0..6)) {
            let text: String = pairs.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            let want: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            prop_assert_eq!(parse(text.as_bytes(), &HashMap::new()), Ok(want));
        }
    }
}
