//! Capabilities: docker's default set, `--cap-add`/`--cap-drop` on top.

use std::collections::BTreeSet;

/// Every capability Linux 6.x has, by bit number.
pub const ALL: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Docker's default set (`CapEff` 0x00000000a80425fb).
pub const DOCKER_DEFAULT: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// `NET_ADMIN`, `cap_net_admin`, `CAP_NET_ADMIN` → `CAP_NET_ADMIN`; `ALL`
/// stays `ALL`; None for a name Linux does not have.
pub fn canonical(name: &str) -> Option<&'static str> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Some("ALL");
    }
    let full = match upper.starts_with("CAP_") {
        true => upper,
        false => format!("CAP_{upper}"),
    };
    ALL.iter().copied().find(|c| *c == full)
}

/// The effective set, as docker computes it: `add` containing `ALL` gives
/// every capability but the dropped ones; `drop` containing `ALL` gives only
/// the added ones; else the default set less `drop`, plus `add`. An unknown
/// name is returned as the error.
pub fn effective(add: &[String], drop: &[String]) -> Result<BTreeSet<&'static str>, String> {
    let canon = |names: &[String]| {
        names
            .iter()
            .map(|n| canonical(n).ok_or_else(|| n.clone()))
            .collect::<Result<BTreeSet<_>, _>>()
    };
    let (add, drop) = (canon(add)?, canon(drop)?);
    let named = |set: &BTreeSet<&'static str>| -> BTreeSet<&'static str> {
        set.iter().copied().filter(|c| *c != "ALL").collect()
    };
    Ok(if add.contains("ALL") {
        ALL.iter().copied().filter(|c| !drop.contains(c)).collect()
    } else if drop.contains("ALL") {
        named(&add)
    } else {
        let mut caps: BTreeSet<_> = DOCKER_DEFAULT
            .iter()
            .copied()
            .filter(|c| !drop.contains(c))
            .collect();
        caps.extend(named(&add));
        caps
    })
}

/// The bit mask `/proc/<pid>/status` shows as `CapEff`.
pub fn mask(caps: &BTreeSet<&str>) -> u64 {
    ALL.iter()
        .enumerate()
        .filter(|(_, c)| caps.contains(*c))
        .fold(0, |m, (bit, _)| m | 1 << bit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_default_set_is_dockers() {
        let caps = effective(&[], &[]).expect("test");
        assert_eq!(mask(&caps), 0xa804_25fb);
    }

    #[test]
    fn names_with_or_without_the_prefix_add_and_drop() {
        let caps =
            effective(&names(&["net_admin", "CAP_SYS_ADMIN"]), &names(&["MKNOD"])).expect("test");
        assert!(caps.contains("CAP_NET_ADMIN") && caps.contains("CAP_SYS_ADMIN"));
        assert!(!caps.contains("CAP_MKNOD"));
        // add wins over drop, as docker applies drops first.
        let caps = effective(&names(&["KILL"]), &names(&["KILL"])).expect("test");
        assert!(caps.contains("CAP_KILL"));
    }

    #[test]
    fn all_adds_everything_or_drops_everything() {
        assert_eq!(
            effective(&names(&["ALL"]), &names(&["SYS_ADMIN"]))
                .expect("test")
                .len(),
            ALL.len() - 1
        );
        assert_eq!(
            effective(&names(&["NET_RAW"]), &names(&["all"])).expect("test"),
            BTreeSet::from(["CAP_NET_RAW"])
        );
    }

    #[test]
    fn unknown_names_are_returned() {
        assert_eq!(effective(&names(&["FLY"]), &[]), Err("FLY".to_owned()));
    }
}
