//! Node labels as docker takes them: `--label-add key=value`, `--label-add key`
//! (an empty value), `--label-rm key`.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("label key is empty; give key=value, or key for an empty value")]
    EmptyKey,
    #[error("label key {key:?} contains whitespace")]
    Whitespace { key: String },
    #[error("takes a key only; drop the \"={value}\"")]
    ValueGiven { value: String },
}

/// Splits on the first `=`: the value may itself contain `=` or spaces.
pub fn parse_label(s: &str) -> Result<(String, String), LabelError> {
    let (key, value) = s.split_once('=').unwrap_or((s, ""));
    check_key(key)?;
    Ok((key.to_owned(), value.to_owned()))
}

/// A `--label-rm` argument: a bare key.
pub fn check_label_key(s: &str) -> Result<(), LabelError> {
    if let Some((_, value)) = s.split_once('=') {
        return Err(LabelError::ValueGiven {
            value: value.to_owned(),
        });
    }
    check_key(s)
}

fn check_key(key: &str) -> Result<(), LabelError> {
    if key.is_empty() {
        return Err(LabelError::EmptyKey);
    }
    if key.contains(char::is_whitespace) {
        return Err(LabelError::Whitespace {
            key: key.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pair(k: &str, v: &str) -> Result<(String, String), LabelError> {
        Ok((k.to_owned(), v.to_owned()))
    }

    #[test]
    fn docker_forms() {
        assert_eq!(parse_label("env=prod"), pair("env", "prod"));
        assert_eq!(parse_label("foo"), pair("foo", ""));
        assert_eq!(parse_label("foo="), pair("foo", ""));
        assert_eq!(parse_label("a=b=c"), pair("a", "b=c"));
        assert_eq!(parse_label("note=two words"), pair("note", "two words"));
        assert_eq!(parse_label("=x"), Err(LabelError::EmptyKey));
        assert_eq!(parse_label(""), Err(LabelError::EmptyKey));
        assert_eq!(
            parse_label(" a=b"),
            Err(LabelError::Whitespace { key: " a".into() })
        );
        assert_eq!(check_label_key("env"), Ok(()));
        assert_eq!(
            check_label_key("env=prod"),
            Err(LabelError::ValueGiven {
                value: "prod".into()
            })
        );
        assert_eq!(check_label_key(""), Err(LabelError::EmptyKey));
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,30}") {
            let _outcome = parse_label(&s);
            let _outcome = check_label_key(&s);
        }

        #[test]
        fn key_value_round_trips(k in "[^=\\s]{1,20}", v in "\\PC{0,20}") {
            prop_assert_eq!(parse_label(&format!("{k}={v}")), Ok((k.clone(), v)));
            prop_assert_eq!(parse_label(&k), Ok((k.clone(), String::new())));
            prop_assert_eq!(check_label_key(&k), Ok(()));
        }

        #[test]
        fn whitespace_in_key_is_refused(a in "[a-z]{0,5}", ws in "[ \\t\\n]", b in "[a-z]{0,5}", v in "[a-z ]{0,5}") {
            let key = format!("{a}{ws}{b}");
            prop_assert_eq!(
                parse_label(&format!("{key}={v}")),
                Err(LabelError::Whitespace { key })
            );
        }
    }
}
