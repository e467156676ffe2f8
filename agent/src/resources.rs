//! What this node offers tasks, as it reports it with each heartbeat
//! (docker's `Description.Resources`): the CPUs shoald may run on and the
//! memory the kernel manages.

use shoal_controlplane::model::NodeResources;

/// The node's resources now. `available_parallelism` follows the CPU
/// affinity mask (and cgroup quotas), so a node pinned to two of its CPUs
/// offers two, as docker's `NanoCPUs`.
pub fn node_resources() -> NodeResources {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get() as u64);
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_total(&text))
        .unwrap_or_default();
    NodeResources {
        nano_cpus: cpus * 1_000_000_000,
        memory_bytes,
    }
}

/// `MemTotal:  16314536 kB` in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_reads_kibibytes() {
        let text = "MemTotal:       16314536 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total(text), Some(16_314_536 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total("MemTotal: x kB\n"), None);
        let r = node_resources();
        assert!(r.nano_cpus >= 1_000_000_000 && r.memory_bytes > 0, "{r:?}");
    }
}
