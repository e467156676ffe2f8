//! The result file: what was measured, how, where, and every sample, so a
//! reader can recompute any figure and a later run can be compared with it.

use serde::{Deserialize, Serialize};

use crate::{
    hist::Histogram,
    stats::{Summary, summarize},
};

/// Bumped when a field changes meaning; `compare` refuses mixed versions.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    pub schema: u32,
    pub meta: RunMeta,
    pub scenarios: Vec<ScenarioResult>,
}

/// Where and how the run was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// The commit the `shoal` (or xtask) binary was built from, or
    /// `git rev-parse HEAD` when run from a checkout; `None` if neither.
    pub shoal_commit: Option<String>,
    /// The commit of the `shoald` the bench talked to (`shoal info`); `None`
    /// in files written before it existed or for benches of no daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_commit: Option<String>,
    /// The `shoal` binary's version.
    pub shoal_version: String,
    /// `uname -r` of the machine running `shoal bench`.
    pub kernel: String,
    /// `model name` of /proc/cpuinfo, and how many CPUs it lists.
    pub cpu_model: String,
    pub cpus: usize,
    pub nodes: usize,
    pub repeat: u32,
    pub duration_secs: u64,
    /// Unix seconds at the start.
    pub started_unix: u64,
    /// Threshold of (max − min) / median above which a metric is flagged.
    pub spread_threshold: f64,
    /// The order the repeats ran in (scenario names): shuffled over the
    /// whole run before 2026-12-06, in rounds of every scenario once since.
    pub order: Vec<String>,
    /// Every command line run, as given to the task or the caller's loader.
    pub commands: Vec<String>,
    /// How each scenario was measured, in words (where the client ran).
    pub notes: Vec<String>,
    /// Parallel streams of the "N streams" throughput metrics (iperf3 -P);
    /// 0 in files written before it existed.
    #[serde(default)]
    pub streams: u32,
    /// Threads of the caller-side loaders (connection rate, HTTP): the
    /// caller's CPUs.
    #[serde(default)]
    pub loaders: usize,
    /// Concurrent connections of those loaders (as wrk -c).
    #[serde(default)]
    pub connections: usize,
    /// What "cpu per Gbit/s" covers: `whole machine (shared kernel)`, or
    /// `missing: <why>`.
    #[serde(default)]
    pub cpu_scope: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioResult {
    pub name: String,
    pub metrics: Vec<Metric>,
    /// Latency distributions of all repeats merged (`rr`, `crr`, …), for
    /// the CDF plots and percentiles over the whole run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency: Vec<Latency>,
}

/// One kind of exchange's latencies over every repeat of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// `rr`, `crr`, `http`: the metric prefix it belongs to.
    pub name: String,
    pub histogram: Histogram,
}

/// One metric of one scenario over the repeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub unit: String,
    /// One per successful repeat, in run order.
    pub samples: Vec<f64>,
    /// `None` when no repeat succeeded.
    pub median: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Why repeats failed, one per failure.
    pub errors: Vec<String>,
    /// Errors, no sample, or a spread over the threshold.
    pub flagged: bool,
}

impl Metric {
    /// The metric from its samples and errors; `spread_threshold` `None`
    /// for counts of rare events (retransmits), whose relative spread means
    /// nothing.
    pub fn new(
        name: &str,
        unit: &str,
        samples: Vec<f64>,
        errors: Vec<String>,
        spread_threshold: Option<f64>,
    ) -> Self {
        let s: Option<Summary> = summarize(&samples, spread_threshold.unwrap_or(f64::INFINITY))
            .map(|s| Summary {
                spread_flagged: s.spread_flagged && spread_threshold.is_some(),
                ..s
            });
        Self {
            name: name.to_owned(),
            unit: unit.to_owned(),
            median: s.map(|s| s.median),
            min: s.map(|s| s.min),
            max: s.map(|s| s.max),
            flagged: s.is_none_or(|s| s.spread_flagged) || !errors.is_empty(),
            samples,
            errors,
        }
    }
}

impl BenchResult {
    /// Any metric flagged: what `--strict` fails on.
    pub fn flagged(&self) -> Vec<String> {
        self.scenarios
            .iter()
            .flat_map(|s| {
                s.metrics
                    .iter()
                    .filter(|m| m.flagged)
                    .map(move |m| format!("{} {}", s.name, m.name))
            })
            .collect()
    }
}

#[cfg(test)]
impl RunMeta {
    /// A run's details for the crate's tests: 3 nodes, 2 repeats of 2 s.
    pub(crate) fn test_fixture() -> RunMeta {
        RunMeta {
            shoal_commit: None,
            daemon_commit: None,
            shoal_version: "0.1.0".into(),
            kernel: "k".into(),
            cpu_model: "c".into(),
            cpus: 1,
            nodes: 3,
            repeat: 2,
            duration_secs: 2,
            started_unix: 0,
            spread_threshold: 0.25,
            order: vec![],
            commands: vec![],
            notes: vec![],
            streams: 2,
            loaders: 2,
            connections: 50,
            cpu_scope: "whole machine (shared kernel)".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> RunMeta {
        RunMeta {
            shoal_commit: Some("abc".into()),
            daemon_commit: Some("def".into()),
            shoal_version: "0.1.0".into(),
            kernel: "6.1.0".into(),
            cpu_model: "x".into(),
            cpus: 2,
            nodes: 3,
            repeat: 2,
            duration_secs: 2,
            started_unix: 1,
            spread_threshold: 0.25,
            order: vec!["overlay".into()],
            commands: vec!["iperf3 -c 10.0.0.2".into()],
            notes: vec![],
            streams: 2,
            loaders: 2,
            connections: 50,
            cpu_scope: "whole machine (shared kernel)".into(),
        }
    }

    #[test]
    fn metric_flags_errors_empty_and_spread() {
        let ok = Metric::new("rr", "1/s", vec![10.0, 11.0], vec![], Some(0.25));
        assert!(!ok.flagged);
        assert_eq!(ok.median, Some(10.5));
        let failed = Metric::new("rr", "1/s", vec![10.0], vec!["refused".into()], Some(0.25));
        assert!(failed.flagged);
        let none = Metric::new("rr", "1/s", vec![], vec![], Some(0.25));
        assert!(none.flagged && none.median.is_none());
        let wide = Metric::new("rr", "1/s", vec![1.0, 10.0], vec![], Some(0.25));
        assert!(wide.flagged);
        let counts = Metric::new("retransmits", "segments", vec![0.0, 138.0], vec![], None);
        assert!(!counts.flagged);
    }

    #[test]
    fn json_round_trip_and_flag_list() {
        let r = BenchResult {
            schema: SCHEMA_VERSION,
            meta: meta(),
            scenarios: vec![ScenarioResult {
                name: "overlay".into(),
                metrics: vec![Metric::new(
                    "throughput",
                    "Gbit/s",
                    vec![],
                    vec![],
                    Some(0.25),
                )],
                latency: vec![],
            }],
        };
        let text = serde_json::to_string(&r).expect("valid by construction");
        let back: BenchResult = serde_json::from_str(&text).expect("valid by construction");
        assert_eq!(back, r);
        assert_eq!(r.flagged(), vec!["overlay throughput".to_string()]);
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid by construction");
        for field in ["shoal_commit", "kernel", "cpu_model", "nodes", "commands"] {
            assert!(v["meta"].get(field).is_some(), "{field}");
        }
    }
}
