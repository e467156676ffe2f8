//! The scenarios: which path each measures, how, and with which metrics.

use std::{fmt, net::SocketAddrV4, time::Duration};

use anyhow::{Context, bail};
use shoal_bench::{Iperf3, Rr};

use super::{
    fixture::{Fixture, Layout, Net},
    rr,
};
use crate::client;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// iperf3 task → iperf3 task on another node, to the task's address.
    Overlay,
    /// The same through the service VIP.
    Vip,
    /// Request/response through the published port, entered on the
    /// server's node.
    IngressLocal,
    /// The same entered on a node without the server.
    IngressRemote,
    /// iperf3 between host-network tasks on two nodes, to the server
    /// node's address: no Shoal in the path, the ceiling.
    Underlay,
}

const ALL: [Scenario; 5] = [
    Scenario::Overlay,
    Scenario::Vip,
    Scenario::IngressLocal,
    Scenario::IngressRemote,
    Scenario::Underlay,
];

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Overlay => "overlay",
            Self::Vip => "vip",
            Self::IngressLocal => "ingress-local",
            Self::IngressRemote => "ingress-remote",
            Self::Underlay => "underlay",
        })
    }
}

/// The positional SCENARIO words; none = all, each once.
pub fn parse_list(words: &[String]) -> anyhow::Result<Vec<Scenario>> {
    if words.is_empty() {
        return Ok(ALL.to_vec());
    }
    let mut out = Vec::new();
    for w in words {
        let Some(s) = ALL.iter().find(|s| s.to_string() == *w) else {
            bail!(
                "SCENARIO {w:?}: unknown; the scenarios are: {}",
                ALL.map(|s| s.to_string()).join(", ")
            );
        };
        if !out.contains(s) {
            out.push(*s);
        }
    }
    Ok(out)
}

const THROUGHPUT: &str = "throughput";
const RETRANSMITS: &str = "retransmits";
const RR_RATE: &str = "rr rate";
const RR_P50: &str = "rr p50";
const RR_P99: &str = "rr p99";

impl Scenario {
    pub fn metric_names(self) -> &'static [&'static str] {
        match self {
            Self::Overlay | Self::Vip | Self::Underlay => &[THROUGHPUT, RETRANSMITS],
            Self::IngressLocal | Self::IngressRemote => &[RR_RATE, RR_P50, RR_P99],
        }
    }

    pub fn unit(self, metric: &str) -> &'static str {
        match metric {
            THROUGHPUT => "Gbit/s",
            RETRANSMITS => "segments",
            RR_RATE => "round trips/s",
            _ => "us",
        }
    }

    /// Retransmits are a count of rare events: 2 in one run and 138 in the
    /// next is normal, and no reason to distrust the throughput.
    pub fn spread_threshold(self, metric: &str) -> Option<f64> {
        (metric != RETRANSMITS).then_some(shoal_bench::stats::DEFAULT_SPREAD)
    }

    /// How it was measured, for the output and the result file.
    pub fn note(self, l: &Layout) -> String {
        match self {
            Self::Overlay => format!(
                "overlay: iperf3 client task on {} -> iperf3 server task on {} at its address {}",
                l.client.hostname, l.server.hostname, l.iperf_task
            ),
            Self::Vip => format!(
                "vip: iperf3 client task on {} -> service VIP {} (server task on {})",
                l.client.hostname, l.iperf_vip, l.server.hostname
            ),
            Self::Underlay => format!(
                "underlay: iperf3 client task on {}'s host network -> iperf3 server task on \
                 {}'s host network at the node's address {} (no Shoal in the path: the ceiling)",
                l.client.hostname, l.server.hostname, l.iperf_underlay
            ),
            Self::IngressLocal | Self::IngressRemote => {
                let entry = self.entry(l);
                format!(
                    "{self}: TCP_RR (1-byte echo, one connection) run by shoal bench itself on \
                     the caller's side ({}) -> published port {}:{} (entry node {}, server task on {}){}",
                    l.caller.hostname,
                    entry.addr,
                    l.echo_published,
                    entry.hostname,
                    l.server.hostname,
                    if entry.id == l.caller.id {
                        "; the entry node is the caller's own: fewer than 3 nodes"
                    } else {
                        ""
                    }
                )
            }
        }
    }

    fn entry(self, l: &Layout) -> &super::fixture::Node {
        match self {
            Self::IngressLocal => &l.server,
            _ => &l.remote,
        }
    }

    fn iperf_args(self, l: &Layout, secs: u64) -> Vec<String> {
        let target = match self {
            Self::Vip => l.iperf_vip,
            Self::Underlay => *l.iperf_underlay.ip(),
            _ => l.iperf_task,
        };
        let mut args = vec![
            "/bin/iperf3".into(),
            "-c".into(),
            target.to_string(),
            "-t".into(),
            secs.to_string(),
            "--json".into(),
        ];
        if self == Self::Underlay {
            args.extend(["-p".into(), l.iperf_underlay.port().to_string()]);
        }
        args
    }

    /// Where the scenario's client task runs.
    fn net(self) -> Net {
        match self {
            Self::Underlay => Net::Host,
            _ => Net::Overlay,
        }
    }

    /// One unmeasured run, retried: the first packets of a new path wait on
    /// the overlay entries reaching the client's node, which is not what the
    /// bench measures.
    pub async fn warm_up(
        self,
        _d: &mut client::Daemon,
        fx: &mut Fixture,
        l: &Layout,
        commands: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        let mut last = None;
        for _ in 0..5 {
            let r = match self {
                Self::Overlay | Self::Vip | Self::Underlay => {
                    let args = self.iperf_args(l, 1);
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    fx.run_task(&l.client, self.net(), &args, super::TASK_SLACK)
                        .await
                        .and_then(|out| Ok(Iperf3::parse(&out)?))
                        .map(drop)
                }
                Self::IngressLocal | Self::IngressRemote => {
                    rr::run(self.target(l), Duration::from_secs(1))
                        .await
                        .map(drop)
                }
            };
            match r {
                Ok(()) => {
                    commands.push(format!(
                        "{self} warm-up (not counted): {}",
                        self.command(l, 1)
                    ));
                    return Ok(());
                }
                Err(e) => {
                    eprintln!("{self} warm-up: {e:#}; retrying");
                    last = Some(e);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        Err(last
            .unwrap_or_else(|| anyhow::anyhow!("no attempt"))
            .context(format!(
                "{self}: the path never worked in 5 warm-up attempts"
            )))
    }

    fn target(self, l: &Layout) -> SocketAddrV4 {
        SocketAddrV4::new(self.entry(l).addr, l.echo_published)
    }

    fn command(self, l: &Layout, secs: u64) -> String {
        match self {
            Self::Overlay | Self::Vip | Self::Underlay => format!(
                "task on {}: {}",
                l.client.hostname,
                self.iperf_args(l, secs).join(" ")
            ),
            Self::IngressLocal | Self::IngressRemote => format!(
                "shoal bench (caller {}): TCP_RR to {} for {secs} s after 1 s unmeasured",
                l.caller.hostname,
                self.target(l)
            ),
        }
    }

    /// One measurement: the metric values, in [`Self::metric_names`] order.
    pub async fn measure(
        self,
        _d: &mut client::Daemon,
        fx: &mut Fixture,
        l: &Layout,
        secs: u64,
        commands: &mut Vec<String>,
    ) -> anyhow::Result<Vec<(&'static str, f64)>> {
        let line = self.command(l, secs);
        if !commands.contains(&line) {
            commands.push(line);
        }
        match self {
            Self::Overlay | Self::Vip | Self::Underlay => {
                let args = self.iperf_args(l, secs);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let within = Duration::from_secs(secs) + super::TASK_SLACK;
                let out = fx.run_task(&l.client, self.net(), &args, within).await?;
                let r = Iperf3::parse(&out).context("the iperf3 client's output")?;
                Ok(vec![
                    (THROUGHPUT, r.bits_per_second / 1e9),
                    (RETRANSMITS, r.retransmits as f64),
                ])
            }
            Self::IngressLocal | Self::IngressRemote => {
                let r: Rr = rr::run(self.target(l), Duration::from_secs(secs)).await?;
                Ok(vec![
                    (RR_RATE, r.per_second),
                    (RR_P50, r.p50_us),
                    (RR_P99, r.p99_us),
                ])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_words() {
        let all = parse_list(&[]).ok();
        assert_eq!(all, Some(ALL.to_vec()));
        let two = parse_list(&["overlay".into(), "ingress-remote".into(), "overlay".into()]).ok();
        assert_eq!(two, Some(vec![Scenario::Overlay, Scenario::IngressRemote]));
        let e = parse_list(&["ceiling".into()]).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                "SCENARIO \"ceiling\": unknown; the scenarios are: overlay, vip, ingress-local, \
                 ingress-remote, underlay"
            )
        );
    }
}
