//! A compact log-bucketed latency histogram (HDR-style): exact below 32 ns,
//! then 32 linear buckets per power of two, so any value is kept within
//! 1/32 (3.1 %) of itself in a few hundred buckets whatever the range.
//! Histograms of repeats add up bucket by bucket, so percentiles and the CDF
//! of a whole run come from all its round trips, not from medians of
//! percentiles.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// log2 of the linear buckets per power of two.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    /// Values recorded.
    pub count: u64,
    /// Exact extremes, in nanoseconds (0 when empty).
    pub min_ns: u64,
    pub max_ns: u64,
    /// `[bucket, count]` for every non-empty bucket, ascending. Bucket `b`
    /// below 32 holds exactly `b` ns; above, with `s = b / 32 − 1` and
    /// `m = b % 32 + 32`, it holds `m·2^s ..= (m+1)·2^s − 1` ns.
    #[serde(with = "pairs")]
    pub buckets: BTreeMap<u32, u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HistError {
    #[error("histogram bucket {bucket} is beyond 64-bit nanoseconds; the result file is damaged")]
    Bucket { bucket: u32 },
    #[error(
        "histogram count {count} differs from its buckets' sum {sum}; the result file is damaged"
    )]
    Count { count: u64, sum: u64 },
}

/// The bucket holding `ns`.
pub fn bucket_of(ns: u64) -> u32 {
    if ns < SUB {
        return ns as u32;
    }
    let shift = 63 - ns.leading_zeros() - SUB_BITS;
    (shift + 1) * SUB as u32 + ((ns >> shift) - SUB) as u32
}

/// The lowest and highest value of bucket `b`.
pub fn bounds(b: u32) -> Result<(u64, u64), HistError> {
    if u64::from(b) < SUB {
        return Ok((u64::from(b), u64::from(b)));
    }
    let shift = b / SUB as u32 - 1;
    let m = u64::from(b % SUB as u32) + SUB;
    if shift + SUB_BITS + 1 > 64 {
        return Err(HistError::Bucket { bucket: b });
    }
    let low = m << shift;
    Ok((low, low + ((1u64 << shift) - 1)))
}

impl Histogram {
    pub fn record(&mut self, ns: u64) {
        if self.count == 0 || ns < self.min_ns {
            self.min_ns = ns;
        }
        self.max_ns = self.max_ns.max(ns);
        self.count += 1;
        *self.buckets.entry(bucket_of(ns)).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 || other.min_ns < self.min_ns {
            self.min_ns = other.min_ns;
        }
        self.max_ns = self.max_ns.max(other.max_ns);
        self.count += other.count;
        for (b, n) in &other.buckets {
            *self.buckets.entry(*b).or_default() += n;
        }
    }

    /// Nearest-rank percentile (p in 0..=100) in nanoseconds: the middle of
    /// the bucket holding that rank, kept within the exact min and max.
    /// `None` when empty or p is out of range.
    pub fn percentile_ns(&self, p: f64) -> Option<f64> {
        if self.count == 0 || !(0.0..=100.0).contains(&p) {
            return None;
        }
        let rank = ((p / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                let (lo, hi) = bounds(*b).ok()?;
                let mid = (lo as f64 + hi as f64) / 2.0;
                return Some(mid.clamp(self.min_ns as f64, self.max_ns as f64));
            }
        }
        Some(self.max_ns as f64)
    }

    /// The CDF as (upper bound of each non-empty bucket in ns, fraction at
    /// or below it), for plots.
    pub fn cdf(&self) -> Vec<(f64, f64)> {
        let mut seen = 0;
        self.buckets
            .iter()
            .filter_map(|(b, n)| {
                seen += n;
                let (_, hi) = bounds(*b).ok()?;
                let hi = hi.min(self.max_ns);
                Some((hi as f64, seen as f64 / self.count as f64))
            })
            .collect()
    }

    /// Checks what serde cannot: every bucket is representable and the
    /// counts add up, so a damaged file is refused, not misplotted.
    pub fn validate(&self) -> Result<(), HistError> {
        for b in self.buckets.keys() {
            bounds(*b)?;
        }
        let sum = self
            .buckets
            .values()
            .try_fold(0u64, |a, n| a.checked_add(*n))
            .unwrap_or(u64::MAX);
        match sum == self.count {
            true => Ok(()),
            false => Err(HistError::Count {
                count: self.count,
                sum,
            }),
        }
    }
}

/// The buckets as a JSON array of `[bucket, count]`: compact, and JSON
/// objects cannot have number keys.
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &BTreeMap<u32, u64>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u32, u64>, D::Error> {
        Ok(Vec::<(u32, u64)>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::percentile;
    use proptest::prelude::*;

    #[test]
    fn buckets_are_contiguous_and_hold_their_values() {
        let mut next = 0;
        for b in 0..(SUB as u32 * 40) {
            let (lo, hi) = bounds(b).expect("in range");
            assert_eq!(lo, next, "bucket {b}");
            assert!(hi >= lo);
            assert_eq!(bucket_of(lo), b);
            assert_eq!(bucket_of(hi), b);
            next = hi + 1;
        }
        assert_eq!(bucket_of(u64::MAX), bounds_inverse_max());
        assert!(bounds(bucket_of(u64::MAX)).is_ok());
        assert!(bounds(bucket_of(u64::MAX) + 1).is_err());
    }

    fn bounds_inverse_max() -> u32 {
        (64 - SUB_BITS) * SUB as u32 + (SUB as u32 - 1)
    }

    #[test]
    fn percentiles_and_cdf() {
        let mut h = Histogram::default();
        assert_eq!(h.percentile_ns(50.0), None);
        for us in 1..=1000u64 {
            h.record(us * 1000);
        }
        let p50 = h.percentile_ns(50.0).expect("not empty");
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 1.0 / 32.0, "{p50}");
        assert_eq!(h.percentile_ns(100.0), Some(1_000_000.0));
        assert_eq!(h.percentile_ns(0.0), Some(1000.0));
        let cdf = h.cdf();
        assert_eq!(cdf.last().map(|c| c.1), Some(1.0));
        assert!(cdf.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert!(h.percentile_ns(100.5).is_none());
    }

    #[test]
    fn json_is_pairs_and_round_trips() {
        let mut h = Histogram::default();
        h.record(5);
        h.record(5);
        h.record(100);
        let text = serde_json::to_string(&h).expect("serializable");
        assert_eq!(
            text,
            r#"{"count":3,"min_ns":5,"max_ns":100,"buckets":[[5,2],[82,1]]}"#
        );
        let back: Histogram = serde_json::from_str(&text).expect("round trip");
        assert_eq!(back, h);
        let bad: Histogram =
            serde_json::from_str(r#"{"count":1,"min_ns":0,"max_ns":0,"buckets":[[4000000,1]]}"#)
                .expect("shape is valid");
        assert_eq!(bad.validate(), Err(HistError::Bucket { bucket: 4_000_000 }));
        assert_eq!(h.validate(), Ok(()));
        let short: Histogram =
            serde_json::from_str(r#"{"count":3,"min_ns":0,"max_ns":0,"buckets":[[4,1]]}"#)
                .expect("shape is valid");
        assert_eq!(short.validate(), Err(HistError::Count { count: 3, sum: 1 }));
    }

    proptest! {
        #[test]
        fn percentile_within_a_bucket_of_exact(
            v in proptest::collection::vec(1u64..10_000_000_000, 1..300),
            p in 0.0f64..=100.0,
        ) {
            let mut h = Histogram::default();
            v.iter().for_each(|x| h.record(*x));
            let f: Vec<f64> = v.iter().map(|x| *x as f64).collect();
            let exact = percentile(&f, p).expect("not empty");
            let got = h.percentile_ns(p).expect("not empty");
            prop_assert!((got - exact).abs() <= exact / 32.0 + 1.0, "p{p}: {got} vs {exact}");
        }

        #[test]
        fn merge_equals_recording_all(
            a in proptest::collection::vec(any::<u64>(), 0..100),
            b in proptest::collection::vec(any::<u64>(), 0..100),
        ) {
            let (mut ha, mut hb, mut all) = (Histogram::default(), Histogram::default(), Histogram::default());
            a.iter().for_each(|x| { ha.record(*x); all.record(*x) });
            b.iter().for_each(|x| { hb.record(*x); all.record(*x) });
            ha.merge(&hb);
            prop_assert_eq!(ha, all);
        }

        #[test]
        fn any_value_lands_in_a_bucket_that_holds_it(x in any::<u64>()) {
            let (lo, hi) = bounds(bucket_of(x)).expect("representable");
            prop_assert!(lo <= x && x <= hi);
        }

        #[test]
        fn parsing_any_json_never_panics(s in ".*") {
            if let Ok(h) = serde_json::from_str::<Histogram>(&s) {
                let _ = h.validate();
                let _ = h.percentile_ns(99.0);
            }
        }
    }
}
