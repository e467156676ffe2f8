//! Ratios between paths measured in the same run: each path against its
//! baseline (the overlay against the bare underlay and a hand-built kernel
//! VXLAN, the mesh against HAProxy). Computed from one result only, so the
//! two sides shared the machine's minutes, interleaved.

use crate::BenchResult;

/// (path, baseline, metric) pairs reported when both scenarios ran.
pub const PAIRS: [(&str, &str, &str); 18] = [
    ("overlay", "underlay", "throughput"),
    ("overlay-wireguard", "overlay", "throughput"),
    ("overlay-wireguard", "overlay", "rr rate"),
    ("overlay-ipsec", "overlay", "throughput"),
    ("overlay-ipsec", "overlay", "rr rate"),
    ("overlay", "kernel-vxlan", "throughput"),
    ("overlay", "kernel-vxlan", "throughput N streams"),
    ("overlay", "kernel-vxlan", "rr rate"),
    // CPU: below 1.0 is the better side.
    ("overlay", "kernel-vxlan", "cpu per round trip"),
    ("ingress-local", "haproxy-local", "rr rate"),
    (
        "ingress-local",
        "haproxy-local",
        "crr rate (distinct tuples)",
    ),
    ("ingress-local", "haproxy-local", "http rate"),
    ("ingress-remote", "haproxy-remote", "rr rate"),
    (
        "ingress-remote",
        "haproxy-remote",
        "crr rate (distinct tuples)",
    ),
    ("ingress-remote", "haproxy-remote", "http rate"),
    ("ingress-local", "direct", "rr rate"),
    ("ingress-local", "direct", "crr rate (distinct tuples)"),
    ("ingress-local", "direct", "http rate"),
];

/// `cargo xtask bench raft`: each commit level's p50 over one fsync's, the
/// floor under any commit.
const RAFT_BASELINE: &str = "fsync-baseline";
const RAFT_LEVEL_PREFIX: &str = "commit-";

/// `cargo xtask bench gossip`: each cluster size sealed over the same
/// frames unencrypted (`gossip-N-sealed` / `gossip-N-plain`).
const GOSSIP_SEALED: &str = "-sealed";
const GOSSIP_PLAIN: &str = "-plain";
const GOSSIP_METRICS: [&str; 3] = ["membership", "spread p50", "gone p50"];

/// One path over its baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Ratio {
    pub path: String,
    pub baseline: String,
    pub metric: String,
    /// Median over median.
    pub median: f64,
    /// The least and most the ratio could be from the two ranges: path min
    /// over baseline max, path max over baseline min.
    pub low: f64,
    pub high: f64,
}

/// The ratios of [`PAIRS`], then of each raft commit level to the fsync
/// baseline, whose two sides both have samples in `r`.
pub fn ratios(r: &BenchResult) -> Vec<Ratio> {
    let stats = |scenario: &str, metric: &str| {
        let m = r
            .scenarios
            .iter()
            .find(|s| s.name == scenario)?
            .metrics
            .iter()
            .find(|m| m.name == metric)?;
        Some((m.median?, m.min?, m.max?))
    };
    let raft = r
        .scenarios
        .iter()
        .filter(|s| s.name.starts_with(RAFT_LEVEL_PREFIX))
        .map(|s| (s.name.clone(), RAFT_BASELINE.to_owned(), "p50"));
    let gossip = r
        .scenarios
        .iter()
        .filter_map(|s| s.name.strip_suffix(GOSSIP_SEALED))
        .flat_map(|size| {
            GOSSIP_METRICS.iter().map(move |&m| {
                (
                    format!("{size}{GOSSIP_SEALED}"),
                    format!("{size}{GOSSIP_PLAIN}"),
                    m,
                )
            })
        });
    PAIRS
        .iter()
        .map(|&(p, b, m)| (p.to_owned(), b.to_owned(), m))
        .chain(raft)
        .chain(gossip)
        .filter_map(|(path, baseline, metric)| {
            let (path, baseline) = (path.as_str(), baseline.as_str());
            let (pm, plo, phi) = stats(path, metric)?;
            let (bm, blo, bhi) = stats(baseline, metric)?;
            (bm > 0.0 && blo > 0.0).then(|| Ratio {
                path: path.to_owned(),
                baseline: baseline.to_owned(),
                metric: metric.to_owned(),
                median: pm / bm,
                low: plo / bhi,
                high: phi / blo,
            })
        })
        .collect()
}

/// One line per ratio, as the terminal shows them.
pub fn lines(ratios: &[Ratio]) -> String {
    ratios
        .iter()
        .map(|q| {
            format!(
                "{}/{} {}: {:.2}x (range {:.2}-{:.2}x)\n",
                q.path, q.baseline, q.metric, q.median, q.low, q.high
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Metric, RunMeta, ScenarioResult};

    fn result(scenarios: Vec<ScenarioResult>) -> BenchResult {
        BenchResult {
            schema: crate::result::SCHEMA_VERSION,
            meta: RunMeta::test_fixture(),
            scenarios,
        }
    }

    fn scenario(name: &str, metric: &str, samples: &[f64]) -> ScenarioResult {
        ScenarioResult {
            name: name.into(),
            metrics: vec![Metric::new(metric, "u", samples.to_vec(), vec![], None)],
            latency: Vec::new(),
        }
    }

    #[test]
    fn only_pairs_measured_in_the_run_give_a_ratio() {
        let r = result(vec![
            scenario("overlay", "throughput", &[8.0, 9.0, 10.0]),
            scenario("underlay", "throughput", &[16.0, 20.0, 18.0]),
            // A baseline without samples gives no ratio.
            scenario("haproxy-local", "rr rate", &[]),
            scenario("ingress-local", "rr rate", &[1000.0]),
        ]);
        let got = ratios(&r);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            lines(&got),
            "overlay/underlay throughput: 0.50x (range 0.40-0.62x)\n"
        );
    }

    #[test]
    fn raft_commit_levels_over_the_fsync_baseline() {
        let r = result(vec![
            scenario("fsync-baseline", "p50", &[0.5]),
            scenario("commit-1-clients", "p50", &[5.0]),
            scenario("commit-64-clients", "p50", &[50.0]),
        ]);
        assert_eq!(
            lines(&ratios(&r)),
            "commit-1-clients/fsync-baseline p50: 10.00x (range 10.00-10.00x)\n\
             commit-64-clients/fsync-baseline p50: 100.00x (range 100.00-100.00x)\n"
        );
    }

    #[test]
    fn gossip_sealed_over_plain_per_cluster_size() {
        let r = result(vec![
            scenario("gossip-5-sealed", "gone p50", &[1100.0, 1000.0, 1200.0]),
            scenario("gossip-5-plain", "gone p50", &[1000.0, 900.0, 1100.0]),
            // No plain run at 20 nodes: no ratio.
            scenario("gossip-20-sealed", "gone p50", &[2000.0]),
        ]);
        assert_eq!(
            lines(&ratios(&r)),
            "gossip-5-sealed/gossip-5-plain gone p50: 1.10x (range 0.91-1.33x)\n"
        );
    }
}
