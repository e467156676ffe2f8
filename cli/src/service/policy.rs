//! The flags `service create` and `service update` share: healthcheck,
//! update and rollback policy, placement preferences. Only what is given is
//! sent: in a create the manager fills swarm's defaults, in an update the
//! rest is unchanged.

use clap::Args;
use shoal_api::{
    cluster::v1::{FailureAction, HealthConfig, UpdateConfig, UpdateOrder},
    words::Word,
};

use crate::parse::{FlagError, Problem, parse_duration};

#[derive(Args, Default, Debug, Clone)]
pub struct HealthFlags {
    /// Command to run to check health.
    #[arg(long, value_name = "string", allow_hyphen_values = true)]
    pub health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h) (default 30s).
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub health_interval: Option<String>,
    /// Maximum time to allow one check to run (ms|s|m|h) (default 30s).
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy (default 3).
    #[arg(long, value_name = "int")]
    pub health_retries: Option<u64>,
    /// Start period for the container to initialize before counting
    /// retries towards unstable (ms|s|m|h) (default 0s).
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub health_start_period: Option<String>,
    /// Time between running the check during the start period (ms|s|m|h)
    /// (default 5s).
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub health_start_interval: Option<String>,
    /// Disable any container-specified HEALTHCHECK.
    #[arg(long)]
    pub no_healthcheck: bool,
}

/// `--update-*` and `--rollback-*`, as docker names and documents them.
#[derive(Args, Default, Debug, Clone)]
pub struct PolicyFlags {
    /// Maximum number of tasks updated simultaneously (0 to update all at
    /// once) (default 1).
    #[arg(long, value_name = "uint")]
    pub update_parallelism: Option<u64>,
    /// Delay between updates (ns|us|ms|s|m|h) (default 0s).
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub update_delay: Option<String>,
    /// Action on update failure ("pause", "continue", "rollback")
    /// (default "pause").
    #[arg(long, value_name = "string")]
    pub update_failure_action: Option<String>,
    /// Duration after each task update to monitor for failure
    /// (ns|us|ms|s|m|h) (default 5s).
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub update_monitor: Option<String>,
    /// Failure rate to tolerate during an update (default 0).
    #[arg(long, value_name = "float", allow_hyphen_values = true)]
    pub update_max_failure_ratio: Option<String>,
    /// Update order ("start-first", "stop-first") (default "stop-first").
    #[arg(long, value_name = "string")]
    pub update_order: Option<String>,
    /// Maximum number of tasks rolled back simultaneously (0 to roll back
    /// all at once) (default 1).
    #[arg(long, value_name = "uint")]
    pub rollback_parallelism: Option<u64>,
    /// Delay between task rollbacks (ns|us|ms|s|m|h) (default 0s).
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub rollback_delay: Option<String>,
    /// Action on rollback failure ("pause", "continue") (default "pause").
    #[arg(long, value_name = "string")]
    pub rollback_failure_action: Option<String>,
    /// Duration after each task rollback to monitor for failure
    /// (ns|us|ms|s|m|h) (default 5s).
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub rollback_monitor: Option<String>,
    /// Failure rate to tolerate during a rollback (default 0).
    #[arg(long, value_name = "float", allow_hyphen_values = true)]
    pub rollback_max_failure_ratio: Option<String>,
    /// Rollback order ("start-first", "stop-first") (default "stop-first").
    #[arg(long, value_name = "string")]
    pub rollback_order: Option<String>,
}

/// A duration flag in nanoseconds; negative values are refused by the
/// parser, naming the flag.
pub fn nanos(flag: &'static str, v: &str) -> Result<u64, FlagError> {
    let d = parse_duration(v).map_err(|e| FlagError::new(flag, v, e))?;
    // parse_duration caps at i64::MAX nanoseconds, which fits.
    Ok(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn opt_nanos(flag: &'static str, v: &Option<String>) -> Result<Option<u64>, FlagError> {
    v.as_deref().map(|v| nanos(flag, v)).transpose()
}

/// A health duration: 0 (the default) or at least 1ms, as swarmkit checks.
fn health_nanos(flag: &'static str, v: &Option<String>) -> Result<Option<u64>, FlagError> {
    let n = opt_nanos(flag, v)?;
    if let (Some(n), Some(v)) = (n, v)
        && n != 0
        && n < 1_000_000
    {
        return Err(FlagError::new(flag, v, Problem::TooSmall { min: "1ms" }));
    }
    Ok(n)
}

impl HealthFlags {
    /// The flags as the wire carries them; `None` when none was given.
    pub fn config(&self) -> Result<Option<HealthConfig>, FlagError> {
        let given = [
            ("--health-cmd", self.health_cmd.is_some()),
            ("--health-interval", self.health_interval.is_some()),
            ("--health-timeout", self.health_timeout.is_some()),
            ("--health-retries", self.health_retries.is_some()),
            ("--health-start-period", self.health_start_period.is_some()),
            (
                "--health-start-interval",
                self.health_start_interval.is_some(),
            ),
        ];
        let first = given.iter().find(|(_, set)| *set).map(|(flag, _)| *flag);
        if self.no_healthcheck {
            if let Some(other) = first {
                return Err(FlagError::secret(
                    "--no-healthcheck",
                    Problem::Conflicts { other },
                ));
            }
            return Ok(Some(HealthConfig {
                test: vec!["NONE".into()],
                ..Default::default()
            }));
        }
        if first.is_none() {
            return Ok(None);
        }
        Ok(Some(HealthConfig {
            // An empty command keeps the image's check, with the timings given.
            test: match self.health_cmd.as_deref() {
                None | Some("") => Vec::new(),
                Some(cmd) => vec!["CMD-SHELL".into(), cmd.to_owned()],
            },
            interval_ns: health_nanos("--health-interval", &self.health_interval)?,
            timeout_ns: health_nanos("--health-timeout", &self.health_timeout)?,
            start_period_ns: health_nanos("--health-start-period", &self.health_start_period)?,
            start_interval_ns: health_nanos(
                "--health-start-interval",
                &self.health_start_interval,
            )?,
            retries: self.health_retries,
        }))
    }
}

/// The flag names of one policy, so one function reads both.
struct Names {
    delay: &'static str,
    failure_action: &'static str,
    monitor: &'static str,
    ratio: &'static str,
    order: &'static str,
}

const UPDATE: Names = Names {
    delay: "--update-delay",
    failure_action: "--update-failure-action",
    monitor: "--update-monitor",
    ratio: "--update-max-failure-ratio",
    order: "--update-order",
};

const ROLLBACK: Names = Names {
    delay: "--rollback-delay",
    failure_action: "--rollback-failure-action",
    monitor: "--rollback-monitor",
    ratio: "--rollback-max-failure-ratio",
    order: "--rollback-order",
};

/// `0..=1`, as swarmkit requires of MaxFailureRatio.
pub fn parse_ratio(flag: &'static str, v: &str) -> Result<f64, FlagError> {
    match v.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(FlagError::new(flag, v, Problem::Ratio)),
    }
}

#[allow(clippy::too_many_arguments)]
fn update_config(
    names: &Names,
    parallelism: Option<u64>,
    delay: &Option<String>,
    failure_action: &Option<String>,
    monitor: &Option<String>,
    ratio: &Option<String>,
    order: &Option<String>,
    rollback: bool,
) -> Result<Option<UpdateConfig>, FlagError> {
    let failure_action = match failure_action.as_deref() {
        None => None,
        Some(v) => {
            let allowed = if rollback {
                "pause or continue"
            } else {
                "pause, continue or rollback"
            };
            // A rollback cannot itself be rolled back, as docker's.
            match FailureAction::from_word(v) {
                Some(FailureAction::Rollback) if rollback => None,
                a => a,
            }
            .map(|a| Some(a as i32))
            .ok_or_else(|| {
                FlagError::new(names.failure_action, v, Problem::FailureAction { allowed })
            })?
        }
    };
    let order = order
        .as_deref()
        .map(|v| {
            UpdateOrder::from_word(v)
                .map(|o| o as i32)
                .ok_or_else(|| FlagError::new(names.order, v, Problem::UpdateOrder))
        })
        .transpose()?;
    let c = UpdateConfig {
        parallelism,
        delay_ns: opt_nanos(names.delay, delay)?,
        failure_action,
        monitor_ns: opt_nanos(names.monitor, monitor)?,
        max_failure_ratio: ratio
            .as_deref()
            .map(|v| parse_ratio(names.ratio, v))
            .transpose()?,
        order,
    };
    Ok((c != UpdateConfig::default()).then_some(c))
}

impl PolicyFlags {
    pub fn update_config(&self) -> Result<Option<UpdateConfig>, FlagError> {
        update_config(
            &UPDATE,
            self.update_parallelism,
            &self.update_delay,
            &self.update_failure_action,
            &self.update_monitor,
            &self.update_max_failure_ratio,
            &self.update_order,
            false,
        )
    }

    pub fn rollback_config(&self) -> Result<Option<UpdateConfig>, FlagError> {
        update_config(
            &ROLLBACK,
            self.rollback_parallelism,
            &self.rollback_delay,
            &self.rollback_failure_action,
            &self.rollback_monitor,
            &self.rollback_max_failure_ratio,
            &self.rollback_order,
            true,
        )
    }
}

/// `spread=node.labels.KEY` (docker also takes `spread=engine.labels.KEY`
/// and any descriptor; the descriptor must not be empty).
pub fn placement_pref(flag: &'static str, v: &str) -> Result<String, FlagError> {
    match v.split_once('=') {
        Some(("spread", descriptor)) if !descriptor.trim().is_empty() => Ok(v.to_owned()),
        _ => Err(FlagError::new(flag, v, Problem::PlacementPref)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(e: FlagError) -> String {
        format!("{:#}", anyhow::Error::from(e))
    }

    #[test]
    fn health_flags_map_to_docker_config() {
        assert_eq!(HealthFlags::default().config(), Ok(None));
        let h = HealthFlags {
            health_cmd: Some("curl -f http://localhost/ || exit 1".into()),
            health_interval: Some("10s".into()),
            health_timeout: Some("1.5s".into()),
            health_retries: Some(5),
            health_start_period: Some("0".into()),
            health_start_interval: Some("500ms".into()),
            no_healthcheck: false,
        };
        assert_eq!(
            h.config(),
            Ok(Some(HealthConfig {
                test: vec![
                    "CMD-SHELL".into(),
                    "curl -f http://localhost/ || exit 1".into()
                ],
                interval_ns: Some(10_000_000_000),
                timeout_ns: Some(1_500_000_000),
                start_period_ns: Some(0),
                start_interval_ns: Some(500_000_000),
                retries: Some(5),
            }))
        );
        let none = HealthFlags {
            no_healthcheck: true,
            ..Default::default()
        };
        assert_eq!(
            none.config().ok().flatten().map(|h| h.test),
            Some(vec!["NONE".to_owned()])
        );
        // Timings alone keep the image's test.
        let t = HealthFlags {
            health_retries: Some(1),
            ..Default::default()
        };
        assert_eq!(
            t.config().ok().flatten().map(|h| (h.test, h.retries)),
            Some((vec![], Some(1)))
        );
    }

    #[test]
    fn health_errors_name_the_flags() {
        let both = HealthFlags {
            health_timeout: Some("3s".into()),
            no_healthcheck: true,
            ..Default::default()
        };
        assert_eq!(
            both.config().err().map(chain).unwrap_or_default(),
            "--no-healthcheck: conflicts with --health-timeout; give one or the other"
        );
        let neg = HealthFlags {
            health_interval: Some("-5s".into()),
            ..Default::default()
        };
        assert_eq!(
            neg.config().err().map(chain).unwrap_or_default(),
            "--health-interval -5s: negative durations are not allowed"
        );
        let tiny = HealthFlags {
            health_start_interval: Some("10us".into()),
            ..Default::default()
        };
        assert_eq!(
            tiny.config().err().map(chain).unwrap_or_default(),
            "--health-start-interval 10us: must be at least 1ms"
        );
    }

    #[test]
    fn policy_flags_map_to_update_configs() {
        assert_eq!(PolicyFlags::default().update_config(), Ok(None));
        assert_eq!(PolicyFlags::default().rollback_config(), Ok(None));
        let p = PolicyFlags {
            update_parallelism: Some(2),
            update_delay: Some("1m30s".into()),
            update_failure_action: Some("rollback".into()),
            update_monitor: Some("500ms".into()),
            update_max_failure_ratio: Some("0.25".into()),
            update_order: Some("start-first".into()),
            rollback_parallelism: Some(0),
            rollback_failure_action: Some("continue".into()),
            rollback_order: Some("stop-first".into()),
            ..Default::default()
        };
        assert_eq!(
            p.update_config(),
            Ok(Some(UpdateConfig {
                parallelism: Some(2),
                delay_ns: Some(90_000_000_000),
                failure_action: Some(FailureAction::Rollback as i32),
                monitor_ns: Some(500_000_000),
                max_failure_ratio: Some(0.25),
                order: Some(UpdateOrder::StartFirst as i32),
            }))
        );
        assert_eq!(
            p.rollback_config(),
            Ok(Some(UpdateConfig {
                parallelism: Some(0),
                failure_action: Some(FailureAction::Continue as i32),
                order: Some(UpdateOrder::StopFirst as i32),
                ..Default::default()
            }))
        );
    }

    #[test]
    fn policy_errors_name_the_flag() {
        let cases: &[(PolicyFlags, &str)] = &[
            (
                PolicyFlags {
                    rollback_failure_action: Some("rollback".into()),
                    ..Default::default()
                },
                "--rollback-failure-action rollback: expected pause or continue",
            ),
            (
                PolicyFlags {
                    update_failure_action: Some("retry".into()),
                    ..Default::default()
                },
                "--update-failure-action retry: expected pause, continue or rollback",
            ),
            (
                PolicyFlags {
                    update_max_failure_ratio: Some("1.5".into()),
                    ..Default::default()
                },
                "--update-max-failure-ratio 1.5: must be a number between 0 and 1",
            ),
            (
                PolicyFlags {
                    rollback_max_failure_ratio: Some("-0.1".into()),
                    ..Default::default()
                },
                "--rollback-max-failure-ratio -0.1: must be a number between 0 and 1",
            ),
            (
                PolicyFlags {
                    update_delay: Some("-1s".into()),
                    ..Default::default()
                },
                "--update-delay -1s: negative durations are not allowed",
            ),
            (
                PolicyFlags {
                    rollback_monitor: Some("5".into()),
                    ..Default::default()
                },
                "--rollback-monitor 5: missing unit",
            ),
            (
                PolicyFlags {
                    update_order: Some("first".into()),
                    ..Default::default()
                },
                "--update-order first: expected start-first or stop-first",
            ),
        ];
        for (p, want) in cases {
            let e = p
                .update_config()
                .and_then(|_| p.rollback_config())
                .err()
                .map(chain)
                .unwrap_or_default();
            assert!(e.starts_with(want), "{want}: {e}");
        }
    }

    #[test]
    fn placement_prefs_take_spread_only() {
        assert_eq!(
            placement_pref("--placement-pref", "spread=node.labels.dc"),
            Ok("spread=node.labels.dc".into())
        );
        for bad in ["pack=node.labels.dc", "spread=", "node.labels.dc"] {
            let e = placement_pref("--placement-pref", bad).err().map(chain);
            assert!(
                e.unwrap_or_default()
                    .contains("expected spread=node.labels.KEY"),
                "{bad}"
            );
        }
    }
}
