//! Median with min–max over repeats, nearest-rank percentiles, and the
//! spread flag: what a sceptical reader needs to trust a figure.

use serde::{Deserialize, Serialize};

/// Repeats whose (max − min) / median exceeds this are flagged by default:
/// on a shared machine 25 % is noise we can still read through; more is a
/// figure not to quote.
pub const DEFAULT_SPREAD: f64 = 0.25;

/// The centre and range of one metric's repeats.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// (max − min) / median exceeded the threshold given to [`summarize`].
    pub spread_flagged: bool,
}

/// The median of `samples` (the mean of the middle two for an even count);
/// `None` for no samples. NaNs sort last and so never become the median of
/// a mostly-valid set.
pub fn median(samples: &[f64]) -> Option<f64> {
    let s = sorted(samples);
    let n = s.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(s[n / 2]),
        _ => Some((s[n / 2 - 1] + s[n / 2]) / 2.0),
    }
}

/// Nearest-rank percentile: the smallest sample with at least `p` % of the
/// samples at or below it (p in 0..=100; 0 gives the minimum). `None` for
/// no samples or a `p` outside 0..=100.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let s = sorted(samples);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    Some(s[rank.clamp(1, s.len()) - 1])
}

/// Median, min, max and the spread flag; `None` for no samples.
pub fn summarize(samples: &[f64], spread_threshold: f64) -> Option<Summary> {
    let median = median(samples)?;
    let s = sorted(samples);
    let (min, max) = (s[0], s[s.len() - 1]);
    Some(Summary {
        median,
        min,
        max,
        spread_flagged: spread_exceeds(min, max, median, spread_threshold),
    })
}

/// A zero median with any range is flagged: a metric that is sometimes 0 and
/// sometimes not is exactly what a reader must be warned about.
fn spread_exceeds(min: f64, max: f64, median: f64, threshold: f64) -> bool {
    let range = max - min;
    if median == 0.0 {
        return range != 0.0;
    }
    let ratio = range / median.abs();
    ratio.is_nan() || ratio > threshold
}

fn sorted(samples: &[f64]) -> Vec<f64> {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), Some(50.0));
        assert_eq!(percentile(&s, 99.0), Some(99.0));
        assert_eq!(percentile(&s, 99.9), Some(100.0));
        assert_eq!(percentile(&s, 0.0), Some(1.0));
        assert_eq!(percentile(&s, 100.0), Some(100.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&s, 101.0), None);
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn spread_flag() {
        let tight =
            summarize(&[100.0, 105.0, 110.0], DEFAULT_SPREAD).expect("valid by construction");
        assert_eq!((tight.median, tight.min, tight.max), (105.0, 100.0, 110.0));
        assert!(!tight.spread_flagged);
        let wide = summarize(&[50.0, 100.0, 110.0], DEFAULT_SPREAD).expect("valid by construction");
        assert!(wide.spread_flagged);
        assert!(
            summarize(&[0.0, 0.0, 5.0], DEFAULT_SPREAD)
                .expect("valid by construction")
                .spread_flagged
        );
        assert!(
            !summarize(&[0.0, 0.0], DEFAULT_SPREAD)
                .expect("valid by construction")
                .spread_flagged
        );
        assert!(summarize(&[], DEFAULT_SPREAD).is_none());
    }

    proptest! {
        #[test]
        fn summary_is_ordered(v in proptest::collection::vec(-1e12f64..1e12, 1..50)) {
            let s = summarize(&v, DEFAULT_SPREAD).expect("valid by construction");
            prop_assert!(s.min <= s.median && s.median <= s.max);
            let p99 = percentile(&v, 99.0).expect("valid by construction");
            prop_assert!(s.min <= p99 && p99 <= s.max);
            prop_assert!(v.contains(&p99));
        }
    }
}
