//! Ratios between paths measured in the same run: each path against its
//! baseline (the overlay against the bare underlay and a hand-built kernel
//! VXLAN, the mesh against HAProxy). Computed from one result only, so the
//! two sides shared the machine's minutes, interleaved.
//!
//! When the repeats ran in rounds (each round every scenario once, in a
//! shuffled order: `shoal bench` since 2026-12-06), each path's sample is
//! also divided by its baseline's of the same round, a minute or less
//! apart. A shared machine drifts by more than the paths differ (both
//! slowed by a third for minutes in one run), and a shuffle over the whole
//! run can give one side more of a slow stretch; the same-round ratios
//! cancel that drift, the median over median does not.

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
    /// The same-round ratios, when the run went in rounds and both sides
    /// have a sample in every round.
    pub paired: Option<Paired>,
}

/// The ratios of path to baseline within each round of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Paired {
    pub median: f64,
    pub low: f64,
    pub high: f64,
    /// Rounds.
    pub n: usize,
}

/// How many rounds `order` ran in, if it ran in rounds: consecutive
/// blocks of its distinct names, each holding every name once.
pub fn rounds(order: &[String]) -> Option<usize> {
    let names: std::collections::BTreeSet<&str> = order.iter().map(String::as_str).collect();
    let k = names.len();
    if k == 0 || !order.len().is_multiple_of(k) {
        return None;
    }
    order
        .chunks(k)
        .all(|c| {
            let seen: std::collections::BTreeSet<&str> = c.iter().map(String::as_str).collect();
            seen.len() == k
        })
        .then_some(order.len() / k)
}

/// The same-round ratios of two sample lists, each one per round in run
/// order; `None` unless both have a sample in each of `rounds` rounds (two
/// or more: one round's ratio is the median over median already, as in a
/// bench of one sample per scenario) and the baseline's are all positive.
fn paired(path: &[f64], baseline: &[f64], rounds: usize) -> Option<Paired> {
    if rounds < 2 || path.len() != rounds || baseline.len() != rounds {
        return None;
    }
    if baseline.iter().any(|b| *b <= 0.0 || !b.is_finite()) {
        return None;
    }
    let r: Vec<f64> = path.iter().zip(baseline).map(|(p, b)| p / b).collect();
    let s = crate::stats::summarize(&r, f64::INFINITY)?;
    Some(Paired {
        median: s.median,
        low: s.min,
        high: s.max,
        n: rounds,
    })
}

/// The ratios of [`PAIRS`], then of each raft commit level to the fsync
/// baseline, whose two sides both have samples in `r`.
pub fn ratios(r: &BenchResult) -> Vec<Ratio> {
    let metric_of = |scenario: &str, metric: &str| {
        r.scenarios
            .iter()
            .find(|s| s.name == scenario)?
            .metrics
            .iter()
            .find(|m| m.name == metric)
    };
    let stats = |scenario: &str, metric: &str| {
        let m = metric_of(scenario, metric)?;
        Some((m.median?, m.min?, m.max?))
    };
    let rounds = rounds(&r.meta.order);
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
            let paired = rounds.and_then(|n| {
                paired(
                    &metric_of(path, metric)?.samples,
                    &metric_of(baseline, metric)?.samples,
                    n,
                )
            });
            (bm > 0.0 && blo > 0.0).then(|| Ratio {
                path: path.to_owned(),
                baseline: baseline.to_owned(),
                metric: metric.to_owned(),
                median: pm / bm,
                low: plo / bhi,
                high: phi / blo,
                paired,
            })
        })
        .collect()
}

/// One line per ratio, as the terminal shows them.
pub fn lines(ratios: &[Ratio]) -> String {
    ratios
        .iter()
        .map(|q| {
            let paired = q.paired.map_or_else(String::new, |p| {
                format!(
                    "; same round {:.2}x (range {:.2}-{:.2}x, {} rounds)",
                    p.median, p.low, p.high, p.n
                )
            });
            format!(
                "{}/{} {}: {:.2}x (range {:.2}-{:.2}x){paired}\n",
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
    fn rounds_are_blocks_holding_every_scenario_once() {
        let o = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(rounds(&o(&["a", "b", "b", "a", "a", "b"])), Some(3));
        assert_eq!(rounds(&o(&["a"])), Some(1));
        // Shuffled over the whole run: "a" twice in the first block.
        assert_eq!(rounds(&o(&["a", "a", "b", "b"])), None);
        assert_eq!(rounds(&o(&["a", "b", "a"])), None);
        assert_eq!(rounds(&[]), None);
    }

    /// A machine that slows by a third for two rounds: the range over the
    /// whole run spans 0.70–1.57x, each round gives the paths' true 1.05.
    #[test]
    fn same_round_ratios_cancel_the_machines_drift() {
        let speed = [1.0, 1.0, 0.67, 0.67, 1.0];
        let base: Vec<f64> = speed.iter().map(|s| 100.0 * s).collect();
        let path: Vec<f64> = speed.iter().map(|s| 105.0 * s).collect();
        let mut r = result(vec![
            scenario("overlay", "rr rate", &path),
            scenario("kernel-vxlan", "rr rate", &base),
        ]);
        r.meta.order = ["overlay", "kernel-vxlan"]
            .iter()
            .cycle()
            .take(10)
            .map(|s| (*s).to_owned())
            .collect();
        let q = &ratios(&r)[0];
        let p = q.paired.expect("rounds");
        assert!((p.median - 1.05).abs() < 1e-9, "{p:?}");
        assert!(
            (p.low - 1.05).abs() < 1e-9 && (p.high - 1.05).abs() < 1e-9,
            "{p:?}"
        );
        assert_eq!(p.n, 5);
        assert_eq!(
            lines(std::slice::from_ref(q)),
            "overlay/kernel-vxlan rr rate: 1.05x (range 0.70-1.57x); same round 1.05x \
             (range 1.05-1.05x, 5 rounds)\n"
        );
        // A repeat that gave no sample: rounds no longer line up.
        let mut short = r.clone();
        short.scenarios[0] = scenario("overlay", "rr rate", &path[..4]);
        assert_eq!(ratios(&short)[0].paired, None);
        // One round of one sample each: nothing beyond the plain ratio.
        let mut one = result(vec![
            scenario("overlay", "rr rate", &path[..1]),
            scenario("kernel-vxlan", "rr rate", &base[..1]),
        ]);
        one.meta.order = r.meta.order[..2].to_vec();
        assert_eq!(ratios(&one)[0].paired, None);
        // Not in rounds: no same-round ratio.
        r.meta.order.swap(1, 2);
        assert_eq!(ratios(&r)[0].paired, None);
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
