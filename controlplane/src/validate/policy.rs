//! The update and rollback policies and the healthcheck: what docker
//! refuses in them, refused here too, naming the flag and the fix.

use crate::model::{FailureAction, HealthConfig, UpdateConfig};

/// docker's floor for a healthcheck's interval, timeout and start interval.
const MIN_HEALTH_NANOS: u64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The wire carries u64 nanoseconds; a negative duration from a client
    /// arrives as a huge one.
    #[error("{flag}: a negative or out-of-range duration; give a duration such as 10s or 500ms")]
    Duration { flag: String },
    #[error(
        "{flag} {value}: must be between 0 and 1 (the fraction of updated tasks that may fail, \
         e.g. 0.2)"
    )]
    Ratio { flag: String, value: String },
    #[error(
        "--rollback-failure-action rollback: a rollback is never rolled back; use pause or \
         continue"
    )]
    RollbackOfRollback,
    #[error("{flag}: cannot be less than 1ms (0 = the image's value, else docker's default)")]
    HealthTooShort { flag: &'static str },
    #[error("--health-retries: a negative or out-of-range count; give 0 or more")]
    Retries,
    #[error("{0}")]
    Test(TestProblem),
}

/// What is wrong with a healthcheck's test (docker's `Test`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TestProblem {
    #[error("--no-healthcheck: [\"NONE\"] takes nothing after it")]
    NoneWithArgs,
    #[error("--health-cmd: [\"CMD\", …] needs the command to run after CMD")]
    CmdEmpty,
    #[error("--health-cmd: [\"CMD-SHELL\", command] takes exactly one non-empty command")]
    ShellForm,
    #[error(
        "--health-cmd: the test must start with NONE, CMD or CMD-SHELL, not {0:?} (e.g. \
         [\"CMD-SHELL\", \"curl -f http://localhost/ || exit 1\"])"
    )]
    Kind(String),
}

fn duration(flag: impl FnOnce() -> String, nanos: u64) -> Result<(), PolicyError> {
    if nanos > i64::MAX as u64 {
        return Err(PolicyError::Duration { flag: flag() });
    }
    Ok(())
}

/// Checks an update (`prefix` `--update`) or rollback (`--rollback`)
/// config.
pub fn update_config(prefix: &str, c: &UpdateConfig) -> Result<(), PolicyError> {
    duration(|| format!("{prefix}-delay"), c.delay_nanos)?;
    duration(|| format!("{prefix}-monitor"), c.monitor_nanos)?;
    let ratio = c.max_failure_ratio.0;
    if !(0.0..=1.0).contains(&ratio) {
        return Err(PolicyError::Ratio {
            flag: format!("{prefix}-max-failure-ratio"),
            value: ratio.to_string(),
        });
    }
    if prefix == "--rollback" && c.failure_action == FailureAction::Rollback {
        return Err(PolicyError::RollbackOfRollback);
    }
    Ok(())
}

/// Checks a healthcheck as docker's daemon does.
pub fn healthcheck(h: &HealthConfig) -> Result<(), PolicyError> {
    match h.test.first().map(String::as_str) {
        None => {}
        Some("NONE") if h.test.len() == 1 => {}
        Some("NONE") => return Err(PolicyError::Test(TestProblem::NoneWithArgs)),
        Some("CMD") if h.test.get(1).is_none_or(|c| c.trim().is_empty()) => {
            return Err(PolicyError::Test(TestProblem::CmdEmpty));
        }
        Some("CMD-SHELL") if h.test.len() != 2 || h.test[1].trim().is_empty() => {
            return Err(PolicyError::Test(TestProblem::ShellForm));
        }
        Some("CMD" | "CMD-SHELL") => {}
        Some(other) => return Err(PolicyError::Test(TestProblem::Kind(other.to_owned()))),
    }
    for (flag, v) in [
        ("--health-interval", h.interval_nanos),
        ("--health-timeout", h.timeout_nanos),
        ("--health-start-interval", h.start_interval_nanos),
        ("--health-start-period", h.start_period_nanos),
    ] {
        duration(|| flag.to_owned(), v)?;
        if flag != "--health-start-period" && v != 0 && v < MIN_HEALTH_NANOS {
            return Err(PolicyError::HealthTooShort { flag });
        }
    }
    if h.retries > i64::MAX as u64 {
        return Err(PolicyError::Retries);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Ratio;

    fn msg(r: Result<(), PolicyError>) -> String {
        r.err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn update_configs_refused_with_the_flag_and_the_fix() {
        assert_eq!(msg(update_config("--update", &UpdateConfig::default())), "");
        let c = |f: &dyn Fn(&mut UpdateConfig)| {
            let mut c = UpdateConfig::default();
            f(&mut c);
            c
        };
        assert_eq!(
            msg(update_config(
                "--update",
                &c(&|c| c.max_failure_ratio = Ratio(1.5))
            )),
            "--update-max-failure-ratio 1.5: must be between 0 and 1 (the fraction of updated \
             tasks that may fail, e.g. 0.2)"
        );
        assert!(
            msg(update_config(
                "--update",
                &c(&|c| c.max_failure_ratio = Ratio(f64::NAN))
            ))
            .contains("between 0 and 1")
        );
        assert!(
            msg(update_config(
                "--update",
                &c(&|c| c.max_failure_ratio = Ratio(1.0))
            ))
            .is_empty()
        );
        assert_eq!(
            msg(update_config(
                "--rollback",
                &c(&|c| c.failure_action = FailureAction::Rollback)
            )),
            "--rollback-failure-action rollback: a rollback is never rolled back; use pause or \
             continue"
        );
        assert!(
            msg(update_config(
                "--update",
                &c(&|c| c.failure_action = FailureAction::Rollback)
            ))
            .is_empty()
        );
        assert!(
            msg(update_config(
                "--update",
                &c(&|c| c.delay_nanos = (-1i64) as u64)
            ))
            .starts_with("--update-delay: a negative")
        );
        assert!(
            msg(update_config(
                "--rollback",
                &c(&|c| c.monitor_nanos = u64::MAX)
            ))
            .starts_with("--rollback-monitor: a negative")
        );
    }

    #[test]
    fn healthchecks_in_docker_forms_only() {
        let h = |test: &[&str]| HealthConfig {
            test: test.iter().map(|s| (*s).to_owned()).collect(),
            ..HealthConfig::default()
        };
        for ok in [
            &[][..],
            &["NONE"],
            &["CMD", "true"],
            &["CMD-SHELL", "exit 0"],
        ] {
            assert_eq!(msg(healthcheck(&h(ok))), "", "{ok:?}");
        }
        for (bad, want) in [
            (&["NONE", "x"][..], "takes nothing after it"),
            (&["CMD"], "needs the command"),
            (&["CMD", ""], "needs the command"),
            (&["CMD-SHELL"], "exactly one"),
            (&["CMD-SHELL", "a", "b"], "exactly one"),
            (&["curl"], "must start with NONE, CMD or CMD-SHELL"),
        ] {
            let e = msg(healthcheck(&h(bad)));
            assert!(e.contains(want), "{bad:?}: {e}");
        }
        let mut short = h(&["CMD", "true"]);
        short.interval_nanos = 999_999;
        assert_eq!(
            msg(healthcheck(&short)),
            "--health-interval: cannot be less than 1ms (0 = the image's value, else docker's default)"
        );
        short.interval_nanos = 0;
        assert_eq!(msg(healthcheck(&short)), "");
        short.start_period_nanos = u64::MAX;
        assert!(msg(healthcheck(&short)).starts_with("--health-start-period: a negative"));
    }
}
