//! Tables by default, `--format json` for scripts.

use comfy_table::{Table, presets::NOTHING};
use serde::Serialize;
use shoal_api::node::v1::{InfoReply, StatsReply};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    // docker's look: no borders, columns separated by spaces.
    t.load_style(NOTHING).set_header(header.to_vec());
    t
}

#[derive(Serialize)]
struct InfoJson<'a> {
    hostname: &'a str,
    version: &'a str,
    data_interface: &'a str,
    data_ifindex: u32,
    attach_mode: &'a str,
    programs: &'a [String],
    uptime_seconds: u64,
    state_dir: &'a str,
}

pub fn info(i: &InfoReply, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&InfoJson {
                hostname: &i.hostname,
                version: &i.version,
                data_interface: &i.data_interface,
                data_ifindex: i.data_ifindex,
                attach_mode: &i.attach_mode,
                programs: &i.programs,
                uptime_seconds: i.uptime_seconds,
                state_dir: &i.state_dir,
            })?
        ),
        Format::Table => {
            println!("Hostname:        {}", i.hostname);
            println!("Version:         {}", i.version);
            println!(
                "Data interface:  {} (ifindex {})",
                i.data_interface, i.data_ifindex
            );
            println!("TC attach mode:  {}", i.attach_mode);
            println!("Programs:        {}", i.programs.join(", "));
            println!("Uptime:          {}s", i.uptime_seconds);
            println!("State dir:       {}", i.state_dir);
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct CounterJson<'a> {
    direction: &'a str,
    protocol: &'a str,
    packets: u64,
    bytes: u64,
}

#[derive(Serialize)]
struct ReasonJson<'a> {
    reason: &'a str,
    count: u64,
}

#[derive(Serialize)]
struct StatsJson<'a> {
    hostname: &'a str,
    data_interface: &'a str,
    counters: Vec<CounterJson<'a>>,
    reasons: Vec<ReasonJson<'a>>,
}

pub fn stats(s: &StatsReply, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            let j = StatsJson {
                hostname: &s.hostname,
                data_interface: &s.data_interface,
                counters: s
                    .counters
                    .iter()
                    .map(|c| CounterJson {
                        direction: &c.direction,
                        protocol: &c.protocol,
                        packets: c.packets,
                        bytes: c.bytes,
                    })
                    .collect(),
                reasons: s
                    .reasons
                    .iter()
                    .map(|r| ReasonJson {
                        reason: &r.reason,
                        count: r.count,
                    })
                    .collect(),
            };
            println!("{}", serde_json::to_string_pretty(&j)?);
        }
        Format::Table => {
            println!("NODE {}  INTERFACE {}\n", s.hostname, s.data_interface);
            print!("{}", stats_table(s));
            let mut reasons = table(&["REASON", "COUNT"]);
            for r in &s.reasons {
                reasons.add_row(vec![r.reason.clone(), r.count.to_string()]);
            }
            println!("\n\n{reasons}");
        }
    }
    Ok(())
}

/// One row per protocol, ingress and egress side by side.
fn stats_table(s: &StatsReply) -> Table {
    let mut t = table(&[
        "PROTOCOL",
        "IN PACKETS",
        "IN BYTES",
        "OUT PACKETS",
        "OUT BYTES",
    ]);
    let mut protocols: Vec<&str> = Vec::new();
    for c in &s.counters {
        if !protocols.contains(&c.protocol.as_str()) {
            protocols.push(&c.protocol);
        }
    }
    for p in protocols {
        let find = |dir: &str| {
            s.counters
                .iter()
                .find(|c| c.protocol == p && c.direction == dir)
                .map(|c| (c.packets, c.bytes))
                .unwrap_or_default()
        };
        let (ip, ib) = find("ingress");
        let (op, ob) = find("egress");
        t.add_row(vec![
            p.to_string(),
            ip.to_string(),
            ib.to_string(),
            op.to_string(),
            ob.to_string(),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::node::v1::ProtoCounter;

    #[test]
    fn stats_table_pairs_directions_per_protocol() {
        let c = |direction: &str, protocol: &str, packets| ProtoCounter {
            direction: direction.into(),
            protocol: protocol.into(),
            packets,
            bytes: packets * 100,
        };
        let s = StatsReply {
            hostname: "n1".into(),
            data_interface: "eth0".into(),
            counters: vec![
                c("ingress", "tcp", 1),
                c("ingress", "udp", 2),
                c("egress", "udp", 3),
            ],
            reasons: vec![],
        };
        let out = stats_table(&s).to_string();
        let udp = out
            .lines()
            .find(|l| l.trim_start().starts_with("udp"))
            .unwrap_or_default();
        let cols: Vec<&str> = udp.split_whitespace().collect();
        assert_eq!(cols, ["udp", "2", "200", "3", "300"]);
        let tcp = out
            .lines()
            .find(|l| l.trim_start().starts_with("tcp"))
            .unwrap_or_default();
        assert_eq!(
            tcp.split_whitespace().collect::<Vec<_>>(),
            ["tcp", "1", "100", "0", "0"]
        );
    }
}
