//! The shape of a join token, `SWMTKN-1-<CA digest>-<secret>`. Only the shape:
//! the daemon decodes it and checks the digest and secret.

const PREFIX: &str = "SWMTKN-1-";
const FIX: &str = "print a current one on a manager with 'shoal swarm join-token worker'";

/// Never carries the token: a mistyped token may still hold a real secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("a join token starts with {PREFIX}; {FIX}")]
    Prefix,
    #[error(
        "a join token has 4 '-'-separated parts (SWMTKN-1-<digest>-<secret>), this one has \
         {found}; was it cut or joined when copied? {FIX}"
    )]
    PartCount { found: usize },
    #[error("part {index} of the join token is empty; {FIX}")]
    EmptyPart { index: usize },
}

/// Returns the token without surrounding whitespace (terminal copy-paste).
pub fn check_token(token: &str) -> Result<&str, TokenError> {
    let token = token.trim();
    if !token.starts_with(PREFIX) {
        return Err(TokenError::Prefix);
    }
    let parts: Vec<&str> = token.split('-').collect();
    if parts.len() != 4 {
        return Err(TokenError::PartCount { found: parts.len() });
    }
    if let Some(index) = parts.iter().position(|p| p.is_empty()) {
        return Err(TokenError::EmptyPart { index: index + 1 });
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn shapes() {
        let good =
            "SWMTKN-1-3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl-1awxwuwd3z9j1z3puu7rcgdbx";
        assert_eq!(check_token(good), Ok(good));
        assert_eq!(check_token(&format!(" {good}\n")), Ok(good));
        assert_eq!(check_token("SWMKEY-1-abc"), Err(TokenError::Prefix));
        assert_eq!(check_token(""), Err(TokenError::Prefix));
        assert_eq!(
            check_token("SWMTKN-1-abc"),
            Err(TokenError::PartCount { found: 3 })
        );
        assert_eq!(
            check_token("SWMTKN-1-abc-def-ghi"),
            Err(TokenError::PartCount { found: 5 })
        );
        assert_eq!(
            check_token("SWMTKN-1--def"),
            Err(TokenError::EmptyPart { index: 3 })
        );
    }

    #[test]
    fn errors_never_echo_the_token() {
        for bad in [
            "SWMTKN-1-qqzzq-wwxxw-extra",
            "SWMTKN-2-qqzzq-wwxxw",
            "SWMTKN-1-qqzzq-",
        ] {
            let e = check_token(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                !e.is_empty() && !e.contains("qqzzq") && !e.contains("wwxxw"),
                "{e}"
            );
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _outcome = check_token(&s);
        }

        #[test]
        fn well_shaped_tokens_pass(d in "[0-9a-z]{1,50}", s in "[0-9a-z]{1,25}") {
            let t = format!("SWMTKN-1-{d}-{s}");
            prop_assert_eq!(check_token(&t), Ok(t.as_str()));
        }
    }
}
