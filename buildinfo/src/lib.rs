//! What a Shoal binary was built from. A separate crate so that a new
//! commit recompiles this and its users, never the eBPF build of the agent.

#![forbid(unsafe_code)]

/// The git commit of the checkout this was built from (`git rev-parse
/// HEAD`), "unknown" when built outside a checkout. Uncommitted changes
/// are not detected.
pub const COMMIT: &str = env!("SHOAL_BUILD_COMMIT");

/// [`COMMIT`] shortened as `git log --oneline` shows it.
pub fn short_commit() -> &'static str {
    COMMIT.get(..12).unwrap_or(COMMIT)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_commit_is_a_hash_or_unknown() {
        let c = super::COMMIT;
        assert!(
            c == "unknown" || (c.len() == 40 && c.chars().all(|x| x.is_ascii_hexdigit())),
            "{c}"
        );
        assert!(c.starts_with(super::short_commit()));
    }
}
