//! The scenarios: which path each measures, how, and with which metrics.

use std::{fmt, net::SocketAddrV4, time::Duration};

use anyhow::{Context, bail};
use shoal_bench::{Histogram, Iperf3};

use super::{
    fixture::{Fixture, Layout},
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
}

const ALL: [Scenario; 4] = [
    Scenario::Overlay,
    Scenario::Vip,
    Scenario::IngressLocal,
    Scenario::IngressRemote,
];

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Overlay => "overlay",
            Self::Vip => "vip",
            Self::IngressLocal => "ingress-local",
            Self::IngressRemote => "ingress-remote",
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
/// The same with `--streams` parallel streams (N is in the run's meta).
const THROUGHPUT_N: &str = "throughput N streams";
const RETRANSMITS_N: &str = "retransmits N streams";

/// How hard the loaders push, from the command line.
#[derive(Debug, Clone)]
pub struct Opts {
    /// iperf3 -P of the multi-stream measurement.
    pub streams: u32,
}
const RR_RATE: &str = "rr rate";
const RR_P50: &str = "rr p50";
const RR_P99: &str = "rr p99";
const RR_P999: &str = "rr p99.9";

/// One measurement's values, in [`Scenario::metric_names`] order, and the
/// latencies it recorded (merged over the repeats for the CDFs).
#[derive(Default)]
pub struct Measured {
    pub values: Vec<(&'static str, f64)>,
    pub latency: Vec<(&'static str, Histogram)>,
}

/// p50, p99 and p99.9 of `h` in microseconds, as metric values.
fn percentiles(
    h: &Histogram,
    names: [&'static str; 3],
) -> anyhow::Result<Vec<(&'static str, f64)>> {
    names
        .into_iter()
        .zip([50.0, 99.0, 99.9])
        .map(|(name, p)| {
            h.percentile_ns(p)
                .map(|ns| (name, ns / 1e3))
                .ok_or_else(|| anyhow::anyhow!("{name}: no latency recorded"))
        })
        .collect()
}

impl Scenario {
    pub fn metric_names(self) -> &'static [&'static str] {
        match self {
            Self::Overlay | Self::Vip => &[THROUGHPUT, RETRANSMITS, THROUGHPUT_N, RETRANSMITS_N],
            Self::IngressLocal | Self::IngressRemote => &[RR_RATE, RR_P50, RR_P99, RR_P999],
        }
    }

    pub fn unit(self, metric: &str) -> &'static str {
        match metric {
            THROUGHPUT | THROUGHPUT_N => "Gbit/s",
            RETRANSMITS | RETRANSMITS_N => "segments",
            RR_RATE => "round trips/s",
            _ => "us",
        }
    }

    /// Retransmits are a count of rare events: 2 in one run and 138 in the
    /// next is normal, and no reason to distrust the throughput.
    pub fn spread_threshold(self, metric: &str) -> Option<f64> {
        (![RETRANSMITS, RETRANSMITS_N].contains(&metric))
            .then_some(shoal_bench::stats::DEFAULT_SPREAD)
    }

    /// How it was measured, for the output and the result file.
    pub fn note(self, l: &Layout, o: &Opts) -> String {
        match self {
            Self::Overlay => format!(
                "overlay: iperf3 client task on {} -> iperf3 server task on {} at its address {}; \
                 1 stream, then {} streams (-P)",
                l.client.hostname, l.server.hostname, l.iperf_task, o.streams
            ),
            Self::Vip => format!(
                "vip: iperf3 client task on {} -> service VIP {} (server task on {}); 1 stream, \
                 then {} streams (-P)",
                l.client.hostname, l.iperf_vip, l.server.hostname, o.streams
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

    fn iperf_args(self, l: &Layout, secs: u64, streams: u32) -> Vec<String> {
        let target = match self {
            Self::Vip => l.iperf_vip,
            _ => l.iperf_task,
        };
        let mut args = vec![
            "/bin/iperf3".into(),
            "-c".into(),
            target.to_string(),
            "-t".into(),
            secs.to_string(),
        ];
        if streams > 1 {
            args.extend(["-P".into(), streams.to_string()]);
        }
        args.push("--json".into());
        args
    }

    /// One iperf3 client task: Gbit/s received and retransmits.
    async fn iperf(
        self,
        fx: &mut Fixture,
        l: &Layout,
        secs: u64,
        streams: u32,
    ) -> anyhow::Result<(f64, f64)> {
        let args = self.iperf_args(l, secs, streams);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let within = Duration::from_secs(secs) + super::TASK_SLACK;
        let out = fx.run_task(&l.client, &args, within).await?;
        let r = Iperf3::parse(&out)
            .with_context(|| format!("the iperf3 client's output ({streams} stream(s))"))?;
        Ok((r.bits_per_second / 1e9, r.retransmits as f64))
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
                Self::Overlay | Self::Vip => self.iperf(fx, l, 1, 1).await.map(drop),
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
                        self.command(l, 1, &Opts { streams: 1 })[0]
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

    fn command(self, l: &Layout, secs: u64, o: &Opts) -> Vec<String> {
        match self {
            Self::Overlay | Self::Vip => [1, o.streams]
                .iter()
                .map(|p| {
                    format!(
                        "task on {}: {}",
                        l.client.hostname,
                        self.iperf_args(l, secs, *p).join(" ")
                    )
                })
                .collect(),
            Self::IngressLocal | Self::IngressRemote => vec![format!(
                "shoal bench (caller {}): TCP_RR to {} for {secs} s after 1 s unmeasured",
                l.caller.hostname,
                self.target(l)
            )],
        }
    }

    /// One measurement: the metric values, in [`Self::metric_names`] order.
    pub async fn measure(
        self,
        _d: &mut client::Daemon,
        fx: &mut Fixture,
        l: &Layout,
        secs: u64,
        o: &Opts,
        commands: &mut Vec<String>,
    ) -> anyhow::Result<Measured> {
        for line in self.command(l, secs, o) {
            if !commands.contains(&line) {
                commands.push(line);
            }
        }
        match self {
            Self::Overlay | Self::Vip => {
                let (one, one_retr) = self.iperf(fx, l, secs, 1).await?;
                let (n, n_retr) = self.iperf(fx, l, secs, o.streams).await?;
                Ok(Measured {
                    values: vec![
                        (THROUGHPUT, one),
                        (RETRANSMITS, one_retr),
                        (THROUGHPUT_N, n),
                        (RETRANSMITS_N, n_retr),
                    ],
                    latency: vec![],
                })
            }
            Self::IngressLocal | Self::IngressRemote => {
                let (rate, h) = rr::run(self.target(l), Duration::from_secs(secs)).await?;
                let mut values = vec![(RR_RATE, rate)];
                values.extend(percentiles(&h, [RR_P50, RR_P99, RR_P999])?);
                Ok(Measured {
                    values,
                    latency: vec![("rr", h)],
                })
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
        let e = parse_list(&["underlay".into()])
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                "SCENARIO \"underlay\": unknown; the scenarios are: overlay, vip, ingress-local, \
                 ingress-remote"
            )
        );
    }
}
