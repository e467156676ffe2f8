//! `shoal bench compare A.json B.json`: the change of each metric's median
//! from run A to run B. Only medians are compared; a metric flagged in
//! either run is marked, so a change within the noise is not read as one.

use crate::result::{BenchResult, SCHEMA_VERSION};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompareError {
    #[error(
        "{which}: schema {found}, this shoal reads {SCHEMA_VERSION}; compare files written by the same shoal version"
    )]
    Schema { which: &'static str, found: u32 },
}

/// One metric in one or both runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub scenario: String,
    pub metric: String,
    pub unit: String,
    pub a: Option<f64>,
    pub b: Option<f64>,
    /// (b − a) / a, when both have a median and a is not 0.
    pub change: Option<f64>,
    /// Flagged in A or B (errors, no sample, spread).
    pub flagged: bool,
}

/// Every metric of A, then those only in B, in their run order.
pub fn compare(a: &BenchResult, b: &BenchResult) -> Result<Vec<Change>, CompareError> {
    for (which, r) in [("A", a), ("B", b)] {
        if r.schema != SCHEMA_VERSION {
            return Err(CompareError::Schema {
                which,
                found: r.schema,
            });
        }
    }
    let find = |r: &BenchResult, scenario: &str, metric: &str| {
        r.scenarios
            .iter()
            .filter(|s| s.name == scenario)
            .flat_map(|s| &s.metrics)
            .find(|m| m.name == metric)
            .cloned()
    };
    let mut out = Vec::new();
    let mut push = |scenario: &str, metric: &str| {
        let (ma, mb) = (find(a, scenario, metric), find(b, scenario, metric));
        let (va, vb) = (
            ma.as_ref().and_then(|m| m.median),
            mb.as_ref().and_then(|m| m.median),
        );
        let unit = ma.as_ref().or(mb.as_ref()).map(|m| m.unit.clone());
        out.push(Change {
            scenario: scenario.to_owned(),
            metric: metric.to_owned(),
            unit: unit.unwrap_or_default(),
            a: va,
            b: vb,
            change: va
                .zip(vb)
                .filter(|(x, _)| *x != 0.0)
                .map(|(x, y)| (y - x) / x),
            flagged: [&ma, &mb]
                .iter()
                .any(|m| m.as_ref().is_none_or(|m| m.flagged)),
        });
    };
    for s in &a.scenarios {
        for m in &s.metrics {
            push(&s.name, &m.name);
        }
    }
    for s in &b.scenarios {
        for m in &s.metrics {
            if find(a, &s.name, &m.name).is_none() {
                push(&s.name, &m.name);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{Metric, RunMeta, ScenarioResult};

    fn run(metrics: &[(&str, &str, &[f64])]) -> BenchResult {
        BenchResult {
            schema: SCHEMA_VERSION,
            meta: RunMeta::test_fixture(),
            scenarios: metrics
                .iter()
                .map(|(s, m, v)| ScenarioResult {
                    name: (*s).into(),
                    metrics: vec![Metric::new(m, "u", v.to_vec(), vec![], Some(0.25))],
                    latency: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn changes_of_medians() {
        let a = run(&[
            ("overlay", "throughput", &[10.0, 10.0]),
            ("vip", "throughput", &[5.0, 5.0]),
        ]);
        let b = run(&[
            ("overlay", "throughput", &[12.0, 12.0]),
            ("ingress-local", "rr rate", &[1.0, 1.0]),
        ]);
        let c = compare(&a, &b).expect("same schema");
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].change, Some(0.2));
        assert!(!c[0].flagged);
        assert_eq!((c[1].a, c[1].b, c[1].change), (Some(5.0), None, None));
        assert!(c[1].flagged, "missing in B");
        assert_eq!((c[2].scenario.as_str(), c[2].a), ("ingress-local", None));
    }

    #[test]
    fn other_schema_is_refused() {
        let a = run(&[]);
        let mut b = run(&[]);
        b.schema = 99;
        assert_eq!(
            compare(&a, &b),
            Err(CompareError::Schema {
                which: "B",
                found: 99
            })
        );
    }
}
