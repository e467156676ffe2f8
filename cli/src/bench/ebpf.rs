//! Where a round trip's time goes in Shoal's eBPF: each TC program's run
//! time and runs, from the kernel's BPF statistics read around a short
//! round-trip run. Only when the nodes share the caller's kernel (the
//! namespace lab): elsewhere the programs are not this kernel's.

use std::{collections::BTreeMap, os::fd::OwnedFd};

/// Shoal's TC programs by their kernel names (ebpf/src/tc.rs, mesh.rs).
/// Named by hook: `task_out` is a task veth's egress (towards the task),
/// `vxlan_in` the fast path that does its work from the VXLAN device,
/// `tc_*` and `mesh_*` are on the data interface.
pub const PROGRAMS: [&str; 7] = [
    "shoal_vxlan_in",
    "shoal_task_out",
    "shoal_mesh_out",
    "shoal_tc_out",
    "shoal_tc_in",
    "shoal_mesh_in",
    "shoal_task_in",
];

/// Run time and runs of one program, as the kernel counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub ns: u64,
    pub runs: u64,
}

/// Every loaded program named in [`PROGRAMS`], by program id: each lab
/// node loads its own copies.
pub type Snapshot = BTreeMap<u32, (&'static str, Counters)>;

/// Turns the kernel's run-time statistics on for as long as the returned
/// fd lives. They cost two clock reads per program run, so they are on
/// only for the extra run, never for the measured ones.
pub fn stats_on() -> Result<OwnedFd, String> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .map_err(|e| format!("BPF_ENABLE_STATS (needs CAP_SYS_ADMIN): {e}"))
}

pub fn snapshot() -> Result<Snapshot, String> {
    let mut out = Snapshot::new();
    for info in aya::programs::loaded_programs() {
        let info = info.map_err(|e| format!("listing BPF programs: {e}"))?;
        let Some(name) = info
            .name_as_str()
            .and_then(|n| PROGRAMS.into_iter().find(|p| *p == n))
        else {
            continue;
        };
        let ns = u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX);
        out.insert(
            info.id(),
            (
                name,
                Counters {
                    ns,
                    runs: info.run_count(),
                },
            ),
        );
    }
    Ok(out)
}

/// What each program name added between two snapshots, over the programs
/// present in both (one loaded or unloaded in between counts from neither).
pub fn delta(before: &Snapshot, after: &Snapshot) -> BTreeMap<&'static str, Counters> {
    let mut out: BTreeMap<&'static str, Counters> =
        PROGRAMS.iter().map(|p| (*p, Counters::default())).collect();
    for (id, (name, now)) in after {
        let Some((_, then)) = before.get(id) else {
            continue;
        };
        let sum = out.entry(name).or_default();
        sum.ns += now.ns.saturating_sub(then.ns);
        sum.runs += now.runs.saturating_sub(then.runs);
    }
    out
}

/// Per round trip: nanoseconds in each program (in [`PROGRAMS`] order),
/// then the total nanoseconds and the total runs.
pub fn per_round_trip(
    delta: &BTreeMap<&'static str, Counters>,
    round_trips: f64,
) -> Result<(Vec<f64>, f64, f64), String> {
    if round_trips.is_nan() || round_trips < 1.0 {
        return Err(format!("{round_trips} round trips: nothing to divide by"));
    }
    let each: Vec<f64> = PROGRAMS
        .iter()
        .map(|p| delta.get(p).map_or(0.0, |c| c.ns as f64) / round_trips)
        .collect();
    let runs: u64 = delta.values().map(|c| c.runs).sum();
    let total = each.iter().sum();
    Ok((each, total, runs as f64 / round_trips))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(ns: u64, runs: u64) -> Counters {
        Counters { ns, runs }
    }

    #[test]
    fn only_programs_present_at_both_reads_count() {
        let before: Snapshot = [
            (1, ("shoal_tc_in", c(100, 10))),
            (2, ("shoal_tc_in", c(50, 5))),
        ]
        .into_iter()
        .collect();
        let after: Snapshot = [
            (1, ("shoal_tc_in", c(400, 40))),
            // Loaded in between: its counts started after `before`.
            (3, ("shoal_task_in", c(9000, 900))),
            (2, ("shoal_tc_in", c(150, 15))),
        ]
        .into_iter()
        .collect();
        let d = delta(&before, &after);
        assert_eq!(d["shoal_tc_in"], c(400, 40));
        assert_eq!(d["shoal_task_in"], c(0, 0));
        assert_eq!(d.len(), PROGRAMS.len());
        let (each, total, runs) = per_round_trip(&d, 10.0).unwrap_or_default();
        let tc_in = PROGRAMS.iter().position(|p| *p == "shoal_tc_in");
        assert_eq!(tc_in.map(|i| each[i]), Some(40.0));
        assert_eq!((total, runs), (40.0, 4.0));
        assert!(per_round_trip(&d, 0.0).is_err());
        assert!(per_round_trip(&d, f64::NAN).is_err());
    }
}
