//! Connection draining: a task out of every node's mesh still finishes the
//! connections routed to it just before. Once the last node wrote its maps,
//! a request already on its way (SYN sent, answer not yet) would be cut by
//! stopping the task at once; under load that takes a while. The task's own
//! socket table says when nothing is left in flight.

use std::time::{Duration, Instant};

/// How often the table is read again.
const POLL: Duration = Duration::from_millis(20);

/// Waits until the task with process `pid` has no TCP connection from
/// outside it (established or being set up), at most `max`. Returns how
/// many were still open then (0: drained).
pub async fn wait(pid: u32, max: Duration) -> usize {
    let started = Instant::now();
    loop {
        let open = open_connections(pid);
        if open == 0 || started.elapsed() >= max {
            return open;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Connections from outside in the task's network namespace; 0 when its
/// table cannot be read (the process is gone: nothing to drain).
fn open_connections(pid: u32) -> usize {
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(format!("/proc/{pid}/net/{f}")).ok())
        .map(|t| count_open(&t))
        .sum()
}

/// Counts the rows of a `/proc/net/tcp{,6}` table in state ESTABLISHED
/// (01) or SYN_RECV (03) whose peer is not a loopback address (a
/// healthcheck talking to the task itself is not a client).
fn count_open(table: &str) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let mut fields = line.split_whitespace();
            let (Some(_sl), Some(_local), Some(remote), Some(state)) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return false;
            };
            matches!(state, "01" | "03") && !loopback(remote)
        })
        .count()
}

/// Whether a table's `ADDR:PORT` (hex, the address in host byte order as
/// the kernel prints it) is a loopback address, IPv4 (127/8) or IPv6
/// (::1, or ::ffff:127.x.x.x).
fn loopback(addr_port: &str) -> bool {
    let Some((addr, _port)) = addr_port.split_once(':') else {
        return false;
    };
    match addr.len() {
        // 0100007F: the first octet is the last byte printed.
        8 => addr.get(6..8) == Some("7F"),
        32 => {
            addr == "00000000000000000000000001000000"
                || (addr.get(..24) == Some("0000000000000000FFFF0000")
                    && addr.get(30..32) == Some("7F"))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0A000005:0050 0A000002:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:0050 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1
   3: 0A000005:0050 0A000003:C351 03 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 20 4 30 10 -1
   4: 0A000005:0050 0A000004:C352 06 00000000:00000000 00:00000000 00000000     0        0 0 3 0000000000000000
";

    #[test]
    fn counts_established_and_half_open_connections_from_outside_only() {
        // Row 0 listens, row 2 is a loopback healthcheck, row 4 is in
        // TIME_WAIT: rows 1 and 3 are clients.
        assert_eq!(count_open(TABLE), 2);
        assert_eq!(count_open(""), 0);
        assert_eq!(count_open("header only\n"), 0);
    }

    #[test]
    fn loopback_peers_in_both_families() {
        assert!(loopback("0100007F:D431"));
        assert!(loopback("0200007F:0001"));
        assert!(!loopback("0A000002:C350"));
        assert!(loopback("00000000000000000000000001000000:0050"));
        assert!(loopback("0000000000000000FFFF00000100007F:0050"));
        assert!(!loopback("0000000000000000FFFF00000200000A:0050"));
        assert!(!loopback("garbage"));
    }

    #[test]
    fn a_process_that_is_gone_has_nothing_to_drain() {
        assert_eq!(open_connections(u32::MAX), 0);
    }

    proptest::proptest! {
        #[test]
        fn any_table_text_is_counted_without_panicking(text in ".{0,400}") {
            let n = count_open(&text);
            proptest::prop_assert!(n <= text.lines().count());
        }
    }
}
