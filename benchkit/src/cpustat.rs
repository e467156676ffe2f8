//! The machine's CPU time from /proc/stat's `cpu` line, so a throughput can
//! be weighed by the CPU it burnt: a faster path that costs more CPU shows.

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CpuStatError {
    #[error("/proc/stat has no `cpu` total line; is this Linux?")]
    NoTotal,
    #[error("/proc/stat `cpu` line {line:?}: field {index} is not a number")]
    Field { line: String, index: usize },
    #[error("/proc/stat `cpu` line {line:?} has fewer than the 4 fields user nice system idle")]
    Short { line: String },
}

/// Jiffies since boot, all CPUs together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// Everything but idle and iowait.
    pub busy: u64,
    pub total: u64,
}

/// The `cpu` (all CPUs) line of a /proc/stat text. Guest time is already
/// inside user time, so it is not added again.
pub fn parse(text: &str) -> Result<CpuTimes, CpuStatError> {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some("cpu"))
        .ok_or(CpuStatError::NoTotal)?;
    let fields = line
        .split_whitespace()
        .skip(1)
        .enumerate()
        .map(|(i, f)| {
            f.parse::<u64>().map_err(|_| CpuStatError::Field {
                line: line.chars().take(120).collect(),
                index: i + 1,
            })
        })
        .collect::<Result<Vec<u64>, _>>()?;
    if fields.len() < 4 {
        return Err(CpuStatError::Short {
            line: line.to_owned(),
        });
    }
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let counted = &fields[..fields.len().min(8)];
    let total = counted.iter().fold(0u64, |a, x| a.saturating_add(*x));
    let idle = fields[3].saturating_add(fields.get(4).copied().unwrap_or(0));
    Ok(CpuTimes {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// CPUs busy on average between two readings of a machine with `cpus`
/// CPUs (0..=cpus); `None` when no time passed.
pub fn busy_cpus(before: CpuTimes, after: CpuTimes, cpus: usize) -> Option<f64> {
    let total = after.total.checked_sub(before.total).filter(|t| *t > 0)?;
    let busy = after.busy.saturating_sub(before.busy);
    Some(busy as f64 / total as f64 * cpus as f64)
}

/// A node's CPU over a window, as `lab-echo cpu SECS` prints it:
///
/// ```text
/// cpu-sample wall 6.002 cpus 2
/// before cpu  100 10 50 800 40 0 5 0 7 0
/// after cpu  130 10 60 1000 40 0 9 0 7 0
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub before: CpuTimes,
    pub after: CpuTimes,
    pub cpus: usize,
    pub wall_s: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SampleError {
    #[error("the CPU sample has no `{0}` line (is the bench image's lab-echo too old for `cpu`?)")]
    Missing(&'static str),
    #[error("the CPU sample's `cpu-sample` line {0:?} is not `cpu-sample wall SECS cpus N`")]
    Header(String),
    #[error("the CPU sample's `{which}` line: {source}")]
    Stat {
        which: &'static str,
        source: CpuStatError,
    },
    #[error("the CPU sample goes backwards (before {before:?}, after {after:?})")]
    Backwards { before: CpuTimes, after: CpuTimes },
}

impl Sample {
    pub fn parse(text: &str) -> Result<Self, SampleError> {
        let line = |prefix: &'static str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(prefix))
                .ok_or(SampleError::Missing(prefix.trim_end()))
        };
        let header = line("cpu-sample ")?;
        let (wall_s, cpus) = match header.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["wall", w, "cpus", n] => match (w.parse::<f64>(), n.parse::<usize>()) {
                (Ok(w), Ok(n)) if w.is_finite() && w > 0.0 && n > 0 => (w, n),
                _ => return Err(SampleError::Header(header.to_owned())),
            },
            _ => return Err(SampleError::Header(header.to_owned())),
        };
        let stat = |which: &'static str| {
            line(which).and_then(|l| {
                parse(l).map_err(|source| SampleError::Stat {
                    which: which.trim_end(),
                    source,
                })
            })
        };
        let (before, after) = (stat("before ")?, stat("after ")?);
        if after.total < before.total || after.busy < before.busy {
            return Err(SampleError::Backwards { before, after });
        }
        Ok(Self {
            before,
            after,
            cpus,
            wall_s,
        })
    }

    /// CPU-seconds the node was busy over the window.
    pub fn busy_seconds(&self) -> f64 {
        busy_cpus(self.before, self.after, self.cpus).unwrap_or(0.0) * self.wall_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STAT: &str = "cpu  100 10 50 800 40 0 5 0 7 0\ncpu0 50 5 25 400 20 0 2 0 3 0\nintr 123\n";

    #[test]
    fn total_line() {
        let t = parse(STAT).expect("valid");
        assert_eq!(
            t,
            CpuTimes {
                busy: 165,
                total: 1005
            }
        );
        let later = CpuTimes {
            busy: 265,
            total: 1205,
        };
        assert_eq!(busy_cpus(t, later, 2), Some(1.0));
        assert_eq!(busy_cpus(t, t, 2), None);
    }

    #[test]
    fn bad_files() {
        assert_eq!(parse("intr 1\n"), Err(CpuStatError::NoTotal));
        assert!(matches!(
            parse("cpu 1 2 x 4\n"),
            Err(CpuStatError::Field { index: 3, .. })
        ));
        assert!(matches!(
            parse("cpu 1 2\n"),
            Err(CpuStatError::Short { .. })
        ));
        // An old kernel's four fields are enough.
        assert_eq!(parse("cpu 1 2 3 4\n"), Ok(CpuTimes { busy: 6, total: 10 }));
    }

    const SAMPLE: &str = "cpu-sample wall 2.000 cpus 2\nbefore cpu  100 10 50 800 40 0 5 0 7 0\n\
                          after cpu  130 10 60 1000 40 0 10 0 7 0\n";

    #[test]
    fn node_samples() {
        let s = Sample::parse(SAMPLE).expect("valid");
        assert_eq!((s.cpus, s.wall_s), (2, 2.0));
        // 45 busy jiffies of 245: 0.367 CPUs over 2 s.
        assert!((s.busy_seconds() - 45.0 / 245.0 * 2.0 * 2.0).abs() < 1e-9);
        assert_eq!(
            Sample::parse("listening on 7000\n"),
            Err(SampleError::Missing("cpu-sample"))
        );
        assert!(matches!(
            Sample::parse("cpu-sample wall x cpus 2\nbefore cpu 1 2 3 4\nafter cpu 1 2 3 4\n"),
            Err(SampleError::Header(_))
        ));
        assert!(matches!(
            Sample::parse("cpu-sample wall 1 cpus 2\nbefore cpu 1 2 3 4\n"),
            Err(SampleError::Missing("after"))
        ));
        assert!(matches!(
            Sample::parse("cpu-sample wall 1 cpus 2\nbefore cpu 5 2 3 4\nafter cpu 1 2 3 4\n"),
            Err(SampleError::Backwards { .. })
        ));
    }

    proptest! {
        #[test]
        fn never_panics(s in ".*") {
            let _ = parse(&s);
            let _ = Sample::parse(&s);
        }

        #[test]
        fn sample_truncations_never_panic(cut in 0usize..SAMPLE.len()) {
            let _ = Sample::parse(&SAMPLE[..cut]);
        }

        #[test]
        fn busy_never_exceeds_total(v in proptest::collection::vec(any::<u64>(), 4..11)) {
            let line = format!("cpu {}", v.iter().map(u64::to_string).collect::<Vec<_>>().join(" "));
            let t = parse(&line).expect("numbers");
            prop_assert!(t.busy <= t.total);
        }

        #[test]
        fn truncations_never_panic(cut in 0usize..STAT.len()) {
            let _ = parse(&STAT[..cut]);
        }
    }
}
