//! Healthchecks with docker's semantics (moby `daemon/health.go`): the
//! effective check ([`effective`]), the state machine of one task's health
//! ([`Monitor`]) and the loop that probes a running task ([`monitor`]).
//!
//! - The task's `HealthConfig` is merged with the image's `HEALTHCHECK`
//!   field by field, as docker's `merge`: an empty test, a zero duration or
//!   zero retries take the image's; what is still unset then takes docker's
//!   defaults (interval 30 s, timeout 30 s, retries 3, start period 0 s,
//!   start interval 5 s). `["NONE"]` is no check.
//! - The first probe runs one interval after the start; during the start
//!   period a task still `starting` is probed every start interval and its
//!   failures do not count. The first success makes it healthy; `retries`
//!   failures in a row (counted) make it unhealthy. The last five results
//!   are kept.

use std::{
    collections::VecDeque,
    future::Future,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use shoal_api::cluster::v1::{HealthConfig, HealthResult, HealthStatus, TaskHealth};
use shoal_runtime::{Exec, ExecEnd, ExecOutput, RuntimeError};
use tokio::{sync::mpsc, time::Instant};

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_START_PERIOD: Duration = Duration::ZERO;
pub const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_RETRIES: u64 = 3;
/// docker's `maxLogEntries`.
pub const MAX_LOG: usize = 5;
/// Swarm's error for a task whose container turned unhealthy.
pub const UNHEALTHY_ERR: &str = "unhealthy container";

/// A task's effective healthcheck.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What runs in the task: `CMD`'s arguments, or `/bin/sh -c` and
    /// `CMD-SHELL`'s command.
    pub argv: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub start_period: Duration,
    pub start_interval: Duration,
    pub retries: u64,
}

/// The check a task runs, from its service's `healthcheck` and its image's
/// `HEALTHCHECK`; `None` for no check (none given, `NONE`, or a test this
/// build cannot run, which is logged as docker does).
pub fn effective(
    task: Option<&HealthConfig>,
    image: Option<&shoal_image::Healthcheck>,
) -> Option<Check> {
    let pick = |own: Option<u64>, image: u64| match own {
        Some(v) if v != 0 => v,
        _ => image,
    };
    let none = shoal_image::Healthcheck::default();
    let image = image.unwrap_or(&none);
    let (test, interval, timeout, start_period, start_interval, retries) = match task {
        None => (
            image.test.clone(),
            image.interval_ns,
            image.timeout_ns,
            image.start_period_ns,
            image.start_interval_ns,
            u64::from(image.retries),
        ),
        Some(t) => (
            if t.test.is_empty() {
                image.test.clone()
            } else {
                t.test.clone()
            },
            pick(t.interval_ns, image.interval_ns),
            pick(t.timeout_ns, image.timeout_ns),
            pick(t.start_period_ns, image.start_period_ns),
            pick(t.start_interval_ns, image.start_interval_ns),
            pick(t.retries, u64::from(image.retries)),
        ),
    };
    let argv = match test.first().map(String::as_str) {
        None | Some("NONE") => return None,
        Some("CMD") => test[1..].to_vec(),
        Some("CMD-SHELL") => ["/bin/sh".to_owned(), "-c".to_owned()]
            .into_iter()
            .chain(test[1..].iter().cloned())
            .collect(),
        Some(other) => {
            tracing::warn!(
                kind = other,
                "unknown healthcheck type (expected CMD or CMD-SHELL): no healthcheck"
            );
            return None;
        }
    };
    if argv.first().is_none_or(String::is_empty) {
        tracing::warn!(?test, "a healthcheck with no command: no healthcheck");
        return None;
    }
    let or = |ns: u64, default: Duration| match ns {
        0 => default,
        ns => Duration::from_nanos(ns),
    };
    Some(Check {
        argv,
        interval: or(interval, DEFAULT_INTERVAL),
        timeout: or(timeout, DEFAULT_TIMEOUT),
        start_period: or(start_period, DEFAULT_START_PERIOD),
        start_interval: or(start_interval, DEFAULT_START_INTERVAL),
        retries: if retries == 0 {
            DEFAULT_RETRIES
        } else {
            retries
        },
    })
}

/// One task's health: docker's `State.Health`.
#[derive(Debug, Clone)]
pub struct Monitor {
    check: Check,
    status: HealthStatus,
    failing_streak: u64,
    log: VecDeque<HealthResult>,
}

impl Monitor {
    pub fn new(check: Check) -> Monitor {
        Monitor {
            check,
            status: HealthStatus::Starting,
            failing_streak: 0,
            log: VecDeque::new(),
        }
    }

    pub fn status(&self) -> HealthStatus {
        self.status
    }

    /// How long until the next probe, `elapsed` after the task started.
    pub fn next_delay(&self, elapsed: Duration) -> Duration {
        if elapsed < self.check.start_period && self.status == HealthStatus::Starting {
            self.check.start_interval
        } else {
            self.check.interval
        }
    }

    /// Records a probe's result, begun `started_after` the task started;
    /// true if the status changed.
    pub fn record(&mut self, result: HealthResult, started_after: Duration) -> bool {
        let before = self.status;
        let healthy = result.exit_code == 0;
        if self.log.len() == MAX_LOG {
            self.log.pop_front();
        }
        self.log.push_back(result);
        if healthy {
            self.failing_streak = 0;
            self.status = HealthStatus::Healthy;
        } else if self.status != HealthStatus::Starting || started_after >= self.check.start_period
        {
            // A task still starting may fail freely during its start period.
            self.failing_streak += 1;
            if self.failing_streak >= self.check.retries {
                self.status = HealthStatus::Unhealthy;
            }
        }
        self.status != before
    }

    /// The health as reported to the managers.
    pub fn health(&self) -> TaskHealth {
        TaskHealth {
            status: self.status.into(),
            failing_streak: self.failing_streak,
            log: self.log.iter().cloned().collect(),
        }
    }
}

/// Runs a check's command in a task.
pub trait Prober: Send + Sync + 'static {
    fn probe(
        &self,
        argv: &[String],
        timeout: Duration,
    ) -> impl Future<Output = Result<ExecOutput, RuntimeError>> + Send;
}

impl Prober for Exec {
    async fn probe(&self, argv: &[String], timeout: Duration) -> Result<ExecOutput, RuntimeError> {
        self.run(argv, timeout).await
    }
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A probe's outcome as docker records it: a timeout or a probe that could
/// not run is exit code -1 with docker's message.
pub fn result(
    outcome: Result<ExecOutput, RuntimeError>,
    start: SystemTime,
    end: SystemTime,
    timeout: Duration,
) -> HealthResult {
    let (exit_code, output) = match outcome {
        Ok(out) => {
            let mut text = String::from_utf8_lossy(&out.output).into_owned();
            if out.truncated {
                text.push_str("...");
            }
            match out.end {
                ExecEnd::Exited(code) => (code, text),
                ExecEnd::TimedOut if text.is_empty() => (
                    -1,
                    format!("Health check exceeded timeout ({})", go_duration(timeout)),
                ),
                ExecEnd::TimedOut => (
                    -1,
                    format!(
                        "Health check exceeded timeout ({}): {text}",
                        go_duration(timeout)
                    ),
                ),
            }
        }
        Err(e) => (-1, e.to_string()),
    };
    HealthResult {
        start_unix_ns: unix_ns(start),
        end_unix_ns: unix_ns(end),
        exit_code,
        output,
    }
}

/// A duration as Go prints it (`30s`, `1.5s`, `500ms`, `1m0s`), for
/// docker's messages.
pub fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    let frac = |value: u128, unit: u128, suffix: &str| {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            format!("{whole}{suffix}")
        } else {
            let digits = unit.ilog10() as usize;
            let rest = format!("{rest:0digits$}");
            format!("{whole}.{}{suffix}", rest.trim_end_matches('0'))
        }
    };
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return frac(ns, 1_000, "µs");
    }
    if ns < 1_000_000_000 {
        return frac(ns, 1_000_000, "ms");
    }
    let secs = ns / 1_000_000_000;
    let (h, m) = (secs / 3600, (secs % 3600) / 60);
    let s = frac(ns % 60_000_000_000, 1_000_000_000, "s");
    match (h, m) {
        (0, 0) => s,
        (0, m) => format!("{m}m{s}"),
        (h, m) => format!("{h}h{m}m{s}"),
    }
}

/// Probes a task from its start (`started`) until it is unhealthy or
/// `changes` is closed, sending the health at each status change.
pub async fn monitor<P: Prober>(
    check: Check,
    prober: P,
    started: Instant,
    changes: mpsc::UnboundedSender<TaskHealth>,
) {
    let mut health = Monitor::new(check.clone());
    loop {
        tokio::time::sleep(health.next_delay(started.elapsed())).await;
        let (begun, start) = (Instant::now(), SystemTime::now());
        let outcome = prober.probe(&check.argv, check.timeout).await;
        let r = result(outcome, start, SystemTime::now(), check.timeout);
        tracing::debug!(exit_code = r.exit_code, output = %r.output, "healthcheck");
        if health.record(r, begun.duration_since(started)) {
            if changes.send(health.health()).is_err() {
                return;
            }
            if health.status() == HealthStatus::Unhealthy {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn image() -> shoal_image::Healthcheck {
        shoal_image::Healthcheck {
            test: strings(&["CMD", "/healthy"]),
            interval_ns: 7_000_000_000,
            timeout_ns: 0,
            retries: 5,
            start_period_ns: 2_000_000_000,
            start_interval_ns: 0,
        }
    }

    #[test]
    fn no_check_anywhere_or_none_is_no_check() {
        assert_eq!(effective(None, None), None);
        let none = HealthConfig {
            test: strings(&["NONE"]),
            ..Default::default()
        };
        assert_eq!(effective(Some(&none), Some(&image())), None);
        let unknown = HealthConfig {
            test: strings(&["HTTP", "/"]),
            ..Default::default()
        };
        assert_eq!(effective(Some(&unknown), None), None);
        let empty = HealthConfig {
            test: strings(&["CMD"]),
            ..Default::default()
        };
        assert_eq!(effective(Some(&empty), None), None);
    }

    #[test]
    fn the_images_check_fills_what_the_task_leaves_unset_then_dockers_defaults() {
        let inherited = effective(None, Some(&image())).expect("the image's check");
        assert_eq!(
            inherited,
            Check {
                argv: strings(&["/healthy"]),
                interval: Duration::from_secs(7),
                timeout: DEFAULT_TIMEOUT,
                start_period: Duration::from_secs(2),
                start_interval: DEFAULT_START_INTERVAL,
                retries: 5,
            }
        );
        // Test [] = the image's command; zero fields = the image's values.
        let task = HealthConfig {
            test: Vec::new(),
            interval_ns: Some(0),
            timeout_ns: Some(3_000_000_000),
            retries: Some(1),
            ..Default::default()
        };
        let merged = effective(Some(&task), Some(&image())).expect("a check");
        assert_eq!(merged.argv, strings(&["/healthy"]));
        assert_eq!(merged.interval, Duration::from_secs(7));
        assert_eq!(merged.timeout, Duration::from_secs(3));
        assert_eq!(merged.retries, 1);
        assert_eq!(merged.start_period, Duration::from_secs(2));
        // The task's own command, no image check: docker's defaults.
        let shell = HealthConfig {
            test: strings(&["CMD-SHELL", "test -e /tmp/ok"]),
            ..Default::default()
        };
        let own = effective(Some(&shell), None).expect("a check");
        assert_eq!(own.argv, strings(&["/bin/sh", "-c", "test -e /tmp/ok"]));
        assert_eq!(
            (own.interval, own.timeout, own.start_period, own.retries),
            (DEFAULT_INTERVAL, DEFAULT_TIMEOUT, Duration::ZERO, 3)
        );
    }

    fn check(start_period: u64, retries: u64) -> Check {
        Check {
            argv: strings(&["true"]),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            start_period: Duration::from_secs(start_period),
            start_interval: Duration::from_secs(2),
            retries,
        }
    }

    fn code(c: i32) -> HealthResult {
        HealthResult {
            exit_code: c,
            output: format!("exit {c}"),
            ..Default::default()
        }
    }

    #[test]
    fn failures_in_the_start_period_do_not_count_and_the_first_success_is_healthy() {
        let mut m = Monitor::new(check(30, 2));
        assert_eq!(m.status(), HealthStatus::Starting);
        // Starting, in the start period: probed every start interval.
        assert_eq!(m.next_delay(Duration::ZERO), Duration::from_secs(2));
        for at in [2, 4, 6] {
            assert!(!m.record(code(1), Duration::from_secs(at)));
        }
        assert_eq!(m.health().failing_streak, 0);
        assert!(m.record(code(0), Duration::from_secs(8)));
        assert_eq!(m.status(), HealthStatus::Healthy);
        // Healthy: the interval, and failures count even in the period.
        assert_eq!(
            m.next_delay(Duration::from_secs(8)),
            Duration::from_secs(10)
        );
        assert!(!m.record(code(1), Duration::from_secs(18)));
        assert!(m.record(code(1), Duration::from_secs(28)));
        assert_eq!(m.status(), HealthStatus::Unhealthy);
        assert_eq!(m.health().failing_streak, 2);
    }

    #[test]
    fn retries_failures_in_a_row_after_the_start_period_make_it_unhealthy() {
        let mut m = Monitor::new(check(0, 3));
        assert_eq!(m.next_delay(Duration::ZERO), Duration::from_secs(10));
        assert!(!m.record(code(1), Duration::from_secs(10)));
        assert!(!m.record(code(2), Duration::from_secs(20)));
        // A success resets the streak (and makes it healthy).
        assert!(m.record(code(0), Duration::from_secs(30)));
        assert_eq!(m.health().failing_streak, 0);
        assert!(!m.record(code(1), Duration::from_secs(40)));
        assert!(!m.record(code(-1), Duration::from_secs(50)));
        assert!(m.record(code(1), Duration::from_secs(60)));
        assert_eq!(m.status(), HealthStatus::Unhealthy);
        // Only the last five results are kept, oldest first.
        let log: Vec<i32> = m.health().log.iter().map(|r| r.exit_code).collect();
        assert_eq!(log, [2, 0, 1, -1, 1]);
    }

    #[test]
    fn timeouts_and_errors_read_as_docker_writes_them() {
        let now = SystemTime::now();
        let timed_out = ExecOutput {
            end: ExecEnd::TimedOut,
            output: Vec::new(),
            truncated: false,
        };
        let r = result(Ok(timed_out), now, now, Duration::from_secs(30));
        assert_eq!(
            (r.exit_code, r.output.as_str()),
            (-1, "Health check exceeded timeout (30s)")
        );
        let long = ExecOutput {
            end: ExecEnd::Exited(1),
            output: b"abc".to_vec(),
            truncated: true,
        };
        let r = result(Ok(long), now, now, Duration::from_secs(1));
        assert_eq!((r.exit_code, r.output.as_str()), (1, "abc..."));
        let failed = RuntimeError::Exec {
            id: "t".into(),
            message: "container not running".into(),
        };
        let r = result(Err(failed), now, now, Duration::from_secs(1));
        assert_eq!(r.exit_code, -1);
        assert!(r.output.contains("container not running"));
    }

    #[test]
    fn durations_print_as_go_prints_them() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(3723), "1h2m3s"),
            (Duration::from_micros(2), "2µs"),
        ];
        for (d, want) in cases {
            assert_eq!(go_duration(d), want, "{d:?}");
        }
    }

    /// Exits with the codes it is given, the last one forever.
    struct Script(Arc<Mutex<Vec<i32>>>);

    impl Prober for Script {
        async fn probe(&self, _: &[String], _: Duration) -> Result<ExecOutput, RuntimeError> {
            let mut codes = self.0.lock().expect("lock");
            let code = if codes.len() > 1 {
                codes.remove(0)
            } else {
                codes[0]
            };
            Ok(ExecOutput {
                end: ExecEnd::Exited(code),
                output: Vec::new(),
                truncated: false,
            })
        }
    }

    #[tokio::test]
    async fn the_loop_reports_status_changes_only_and_ends_unhealthy() {
        let mut c = check(0, 2);
        c.interval = Duration::from_millis(5);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let codes = Arc::new(Mutex::new(vec![1, 0, 0, 0, 1, 0, 1, 1]));
        let probe = Script(codes.clone());
        let run = tokio::spawn(monitor(c, probe, Instant::now(), tx));
        let healthy = rx.recv().await.expect("healthy");
        assert_eq!(healthy.status, i32::from(HealthStatus::Healthy));
        assert_eq!(healthy.log.len(), 2);
        let unhealthy = rx.recv().await.expect("unhealthy");
        assert_eq!(unhealthy.status, i32::from(HealthStatus::Unhealthy));
        assert_eq!(unhealthy.failing_streak, 2);
        assert_eq!(unhealthy.log.len(), MAX_LOG);
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("the loop ends once unhealthy")
            .expect("the loop");
        assert!(rx.recv().await.is_none(), "nothing after unhealthy");
    }
}
