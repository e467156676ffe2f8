//! Shell words, as docker's `ShellWordsOpt` splits `--args` and
//! `--entrypoint`: blanks separate words, single quotes keep everything,
//! double quotes keep all but `\"`, `\\`, `\$` and `` \` ``, and a
//! backslash outside quotes keeps the next character.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    #[error("unterminated {quote} quote; close it, or escape it with a backslash")]
    Unterminated { quote: &'static str },
    #[error("ends with a lone backslash; drop it, or double it for a backslash")]
    Escape,
}

pub fn split_words(s: &str) -> Result<Vec<String>, ShellError> {
    let mut words = Vec::new();
    let mut word = String::new();
    // A word may be empty (`''`), so "in a word" is tracked apart from its text.
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\\' => {
                // `\<newline>` is a line continuation, as in sh.
                match chars.next().ok_or(ShellError::Escape)? {
                    '\n' => {}
                    next => {
                        word.push(next);
                        in_word = true;
                    }
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(ShellError::Unterminated { quote: "single" }),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(ShellError::Unterminated { quote: "double" }),
                        },
                        Some(c) => word.push(c),
                        None => return Err(ShellError::Unterminated { quote: "double" }),
                    }
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(s: &str) -> Vec<String> {
        split_words(s).unwrap_or_else(|e| vec![format!("error: {e}")])
    }

    #[test]
    fn splits_as_a_shell() {
        assert_eq!(ok("serve --port 80"), ["serve", "--port", "80"]);
        assert_eq!(ok("  a\t b\n"), ["a", "b"]);
        assert_eq!(ok(""), Vec::<String>::new());
        assert_eq!(ok("sh -c 'echo hi there'"), ["sh", "-c", "echo hi there"]);
        assert_eq!(ok(r#"echo "a \"b\" \n""#), ["echo", r#"a "b" \n"#]);
        assert_eq!(ok(r"a\ b c"), ["a b", "c"]);
        assert_eq!(ok("x '' y"), ["x", "", "y"]);
        assert_eq!(ok("a'b'\"c\"d"), ["abcd"]);
        assert_eq!(ok("a\\\nb"), ["ab"]);
    }

    #[test]
    fn errors_say_what_to_fix() {
        assert_eq!(
            split_words("echo 'hi"),
            Err(ShellError::Unterminated { quote: "single" })
        );
        assert_eq!(
            split_words("echo \"hi"),
            Err(ShellError::Unterminated { quote: "double" })
        );
        assert_eq!(split_words("echo \\"), Err(ShellError::Escape));
    }

    proptest! {
        #[test]
        fn never_panics(s in any::<String>()) {
            let _ = split_words(&s);
        }

        #[test]
        fn plain_words_split_on_blanks(words in proptest::collection::vec("[a-z0-9=/.-]{1,8}", 0..6)) {
            prop_assert_eq!(split_words(&words.join("  ")), Ok(words));
        }

        #[test]
        fn single_quoting_keeps_any_word(w in "[^']{0,20}") {
            prop_assert_eq!(split_words(&format!("'{w}'")), Ok(vec![w]));
        }
    }
}
