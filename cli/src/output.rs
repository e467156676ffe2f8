//! Tables by default, `--format json` for scripts.

use comfy_table::{Table, presets::NOTHING};
use serde::Serialize;
use std::{borrow::Cow, collections::BTreeMap};

use shoal_api::{
    cluster::v1::{NodeAvailability, NodeDetail, NodeRole, NodeStatus, NodeSummary},
    node::v1::{
        CheckStatus, CountedProtocol, Direction, InfoReply, ReasonCounter, StatsReply, SwarmInfo,
        SwarmState,
    },
    words::{Word, word},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// The flags every listing verb takes (`ls`, `ps`).
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct ListFlags {
    /// Only display IDs.
    #[arg(long, short)]
    pub quiet: bool,
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// UTC date and time of a Unix time: (year, month, day, hour, minute,
/// second), by Howard Hinnant's civil-from-days algorithm.
pub fn civil(unix: u64) -> (i64, i64, i64, u64, u64, u64) {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, secs / 3600, secs / 60 % 60, secs % 60)
}

/// `2026-12-02T18:42:16Z`, as docker's JSON times.
pub fn rfc3339(unix: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(unix);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    // docker's look: no borders, columns separated by spaces.
    t.load_style(NOTHING).set_header(header.to_vec());
    for c in t.column_iter_mut() {
        c.set_padding((0, 3));
    }
    t
}

#[derive(Serialize)]
struct InfoJson<'a> {
    hostname: &'a str,
    version: &'a str,
    /// The git commit shoald was built from.
    commit: &'a str,
    data_interface: &'a str,
    data_ifindex: u32,
    attach_mode: &'a str,
    programs: &'a [String],
    uptime_seconds: u64,
    state_dir: &'a str,
    /// The Docker Engine API (`DOCKER_HOST=unix://…`).
    docker_socket: String,
    /// `null` from a daemon without swarm support.
    swarm: Option<SwarmJson<'a>>,
    /// Secrets this node was ever sent, and those its live tasks hold.
    secrets_received: IdsJson<'a>,
    secrets_held: IdsJson<'a>,
}

#[derive(Serialize)]
struct IdsJson<'a> {
    count: usize,
    ids: &'a [String],
}

impl<'a> IdsJson<'a> {
    fn of(ids: &'a [String]) -> IdsJson<'a> {
        IdsJson {
            count: ids.len(),
            ids,
        }
    }
}

#[derive(Serialize)]
struct SwarmJson<'a> {
    state: Cow<'static, str>,
    node_id: &'a str,
    cluster_id: &'a str,
    role: Cow<'static, str>,
    is_manager: bool,
    managers: &'a [String],
    error: &'a str,
}

/// docker capitalises API words for people: `ready` → `Ready`.
/// `secret ls` and `config ls`: sorted by name; ids only with `-q`; a
/// table of id, name and size, or each object as `json` makes it.
pub fn stored_objects<T>(
    mut all: Vec<T>,
    flags: ListFlags,
    row: impl Fn(&T) -> (&str, &str, u64),
    json: impl Fn(&T) -> serde_json::Value,
) -> anyhow::Result<()> {
    all.sort_by(|a, b| row(a).1.cmp(row(b).1));
    if flags.quiet {
        all.iter().for_each(|o| println!("{}", row(o).0));
        return Ok(());
    }
    match flags.format {
        Format::Json => {
            let v: Vec<_> = all.iter().map(json).collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Table => {
            let mut t = table(&["ID", "NAME", "SIZE"]);
            for o in &all {
                let (id, name, size) = row(o);
                t.add_row(vec![id.to_owned(), name.to_owned(), format!("{size}B")]);
            }
            println!("{t}");
        }
    }
    Ok(())
}

pub fn pretty(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Where shoald serves the Docker Engine API: its state directory's
/// `docker.sock`.
fn docker_socket(i: &InfoReply) -> String {
    std::path::Path::new(&i.state_dir)
        .join(shoal_dockerapi::SOCKET_NAME)
        .display()
        .to_string()
}

fn info_json(i: &InfoReply) -> serde_json::Result<String> {
    serde_json::to_string_pretty(&InfoJson {
        hostname: &i.hostname,
        version: &i.version,
        commit: &i.commit,
        data_interface: &i.data_interface,
        data_ifindex: i.data_ifindex,
        attach_mode: &i.attach_mode,
        programs: &i.programs,
        uptime_seconds: i.uptime_seconds,
        state_dir: &i.state_dir,
        docker_socket: docker_socket(i),
        swarm: i.swarm.as_ref().map(|s| SwarmJson {
            state: word::<SwarmState>(s.state),
            node_id: &s.node_id,
            cluster_id: &s.cluster_id,
            role: word::<NodeRole>(s.role),
            is_manager: s.role == NodeRole::Manager as i32,
            managers: &s.managers,
            error: &s.error,
        }),
        secrets_received: IdsJson::of(&i.secrets_received),
        secrets_held: IdsJson::of(&i.secrets_held),
    })
}

fn info_text(i: &InfoReply) -> String {
    let mut out = format!(
        "Hostname:        {}\n\
         Version:         {} (commit {})\n\
         Data interface:  {} (ifindex {})\n\
         TC attach mode:  {}\n\
         Programs:        {}\n\
         Uptime:          {}s\n\
         State dir:       {}\n\
         Docker API:      unix://{}\n",
        i.hostname,
        i.version,
        i.commit,
        i.data_interface,
        i.data_ifindex,
        i.attach_mode,
        i.programs.join(", "),
        i.uptime_seconds,
        i.state_dir,
        docker_socket(i),
    );
    if let Some(s) = &i.swarm {
        out.push_str(&swarm_text(s));
    }
    out
}

/// docker info's `Swarm:` block, one level less indented (no Server section).
fn swarm_text(s: &SwarmInfo) -> String {
    let state = match SwarmState::try_from(s.state) {
        Ok(SwarmState::Unspecified) => SwarmState::Inactive.word().into(),
        _ => word::<SwarmState>(s.state),
    };
    let mut lines = vec![format!("Swarm: {state}")];
    // As docker: nothing more to say about a node outside a swarm, or locked.
    if !matches!(
        SwarmState::try_from(s.state),
        Ok(SwarmState::Unspecified | SwarmState::Inactive | SwarmState::Locked)
    ) {
        let is_manager = s.role == NodeRole::Manager as i32;
        lines.push(format!(" NodeID: {}", s.node_id));
        if !s.error.is_empty() {
            lines.push(format!(" Error: {}", s.error));
        }
        lines.push(format!(" Is Manager: {is_manager}"));
        if !s.cluster_id.is_empty() {
            lines.push(format!(" ClusterID: {}", s.cluster_id));
        }
        if is_manager {
            lines.push(format!(" Managers: {}", s.managers.len()));
        }
        if !s.managers.is_empty() {
            let mut managers = s.managers.clone();
            managers.sort();
            lines.push(" Manager Addresses:".to_owned());
            lines.extend(managers.iter().map(|m| format!("  {m}")));
        }
    }
    lines.join("\n") + "\n"
}

pub fn info(i: &InfoReply, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", info_json(i)?),
        Format::Table => print!("{}", info_text(i)),
    }
    Ok(())
}

#[derive(Serialize)]
struct CounterJson {
    direction: Cow<'static, str>,
    protocol: Cow<'static, str>,
    packets: u64,
    bytes: u64,
}

#[derive(Serialize)]
struct ReasonJson<'a> {
    reason: &'a str,
    count: u64,
}

fn reason_json(rows: &[ReasonCounter]) -> Vec<ReasonJson<'_>> {
    rows.iter()
        .map(|r| ReasonJson {
            reason: &r.reason,
            count: r.count,
        })
        .collect()
}

/// A two-column table of counters by reason, headed `title`.
fn reason_table(title: &str, rows: &[ReasonCounter]) -> Table {
    let mut t = table(&[title, "COUNT"]);
    for r in rows {
        t.add_row(vec![r.reason.clone(), r.count.to_string()]);
    }
    t
}

#[derive(Serialize)]
struct StatsJson<'a> {
    hostname: &'a str,
    data_interface: &'a str,
    counters: Vec<CounterJson>,
    reasons: Vec<ReasonJson<'a>>,
    mesh: Vec<MeshJson<'a>>,
    mesh_reasons: Vec<ReasonJson<'a>>,
    gossip: Vec<ReasonJson<'a>>,
    ipsec: Vec<ReasonJson<'a>>,
    wireguard: Vec<ReasonJson<'a>>,
}

#[derive(Serialize)]
struct MeshJson<'a> {
    service_id: &'a str,
    service: &'a str,
    scope: &'a str,
    backends: u32,
    packets: u64,
    bytes: u64,
    reply_packets: u64,
    reply_bytes: u64,
    new_flows: u64,
    remote: u64,
    drops: u64,
}

#[derive(Serialize)]
struct DoctorJson<'a> {
    check: &'a str,
    status: Cow<'static, str>,
    detail: &'a str,
    hint: &'a str,
}

/// `node doctor`: one row per check, failed ones followed by what to do.
pub fn doctor(r: &shoal_api::node::v1::DoctorReply, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            let rows: Vec<DoctorJson<'_>> = r
                .checks
                .iter()
                .map(|c| DoctorJson {
                    check: &c.check,
                    status: word::<CheckStatus>(c.status),
                    detail: &c.detail,
                    hint: &c.hint,
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        Format::Table => {
            let mut t = table(&["CHECK", "STATUS", "DETAIL"]);
            for c in &r.checks {
                t.add_row(vec![
                    c.check.clone(),
                    word::<CheckStatus>(c.status).to_uppercase(),
                    c.detail.clone(),
                ]);
            }
            println!("NODE {}\n{t}", r.hostname);
            for c in r
                .checks
                .iter()
                .filter(|c| c.status == CheckStatus::Fail as i32)
            {
                println!("\n{}: {}", c.check, c.hint);
            }
        }
    }
    Ok(())
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
                        direction: word::<Direction>(c.direction),
                        protocol: word::<CountedProtocol>(c.protocol),
                        packets: c.packets,
                        bytes: c.bytes,
                    })
                    .collect(),
                reasons: reason_json(&s.reasons),
                mesh: s
                    .mesh
                    .iter()
                    .map(|m| MeshJson {
                        service_id: &m.service_id,
                        service: &m.service,
                        scope: &m.scope,
                        backends: m.backends,
                        packets: m.packets,
                        bytes: m.bytes,
                        reply_packets: m.reply_packets,
                        reply_bytes: m.reply_bytes,
                        new_flows: m.new_flows,
                        remote: m.remote,
                        drops: m.drops,
                    })
                    .collect(),
                mesh_reasons: reason_json(&s.mesh_reasons),
                gossip: reason_json(&s.gossip),
                ipsec: reason_json(&s.ipsec),
                wireguard: reason_json(&s.wireguard),
            };
            println!("{}", serde_json::to_string_pretty(&j)?);
        }
        Format::Table => {
            println!("NODE {}  INTERFACE {}\n", s.hostname, s.data_interface);
            print!("{}", stats_table(s));
            let reasons = reason_table("REASON", &s.reasons);
            println!("\n\n{reasons}");
            let mut mesh = table(&[
                "SERVICE",
                "SCOPE",
                "BACKENDS",
                "PACKETS",
                "BYTES",
                "REPLIES",
                "NEW FLOWS",
                "REMOTE",
                "DROPS",
            ]);
            for m in &s.mesh {
                mesh.add_row(vec![
                    m.service.clone(),
                    m.scope.clone(),
                    m.backends.to_string(),
                    m.packets.to_string(),
                    m.bytes.to_string(),
                    m.reply_packets.to_string(),
                    m.new_flows.to_string(),
                    m.remote.to_string(),
                    m.drops.to_string(),
                ]);
            }
            println!("\nROUTING MESH\n{mesh}");
            let mesh_reasons = reason_table("MESH REASON", &s.mesh_reasons);
            println!("\n{mesh_reasons}");
            let gossip = reason_table("GOSSIP", &s.gossip);
            println!("\n{gossip}");
            if !s.ipsec.is_empty() {
                println!("\n{}", reason_table("IPSEC", &s.ipsec));
            }
            if !s.wireguard.is_empty() {
                println!("\n{}", reason_table("WIREGUARD", &s.wireguard));
            }
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
    let mut protocols: Vec<i32> = Vec::new();
    for c in &s.counters {
        if !protocols.contains(&c.protocol) {
            protocols.push(c.protocol);
        }
    }
    for p in protocols {
        let find = |dir: Direction| {
            s.counters
                .iter()
                .find(|c| c.protocol == p && c.direction == dir as i32)
                .map(|c| (c.packets, c.bytes))
                .unwrap_or_default()
        };
        let (ip, ib) = find(Direction::Ingress);
        let (op, ob) = find(Direction::Egress);
        t.add_row(vec![
            word::<CountedProtocol>(p).into_owned(),
            ip.to_string(),
            ib.to_string(),
            op.to_string(),
            ob.to_string(),
        ]);
    }
    t
}

/// A node as scripts read it: the API's words, lower case, labels sorted.
#[derive(Serialize)]
struct NodeJson<'a> {
    id: &'a str,
    hostname: &'a str,
    role: Cow<'static, str>,
    status: Cow<'static, str>,
    availability: Cow<'static, str>,
    /// "Leader", "Reachable", "Unreachable"; empty for a worker.
    manager_status: &'a str,
    addr: &'a str,
    labels: BTreeMap<&'a str, &'a str>,
    version: u64,
    #[serde(rename = "self")]
    is_self: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    raft_addr: Option<&'a str>,
    /// `node inspect` only: when the node's certificate expires (unix
    /// seconds; 0 until its first heartbeat reported it).
    #[serde(skip_serializing_if = "Option::is_none")]
    cert_not_after_unix: Option<u64>,
    /// `node inspect` only, once the node reported them (docker's
    /// `Description.Resources`).
    #[serde(rename = "Description", skip_serializing_if = "Option::is_none")]
    description: Option<DescriptionJson>,
    /// `node inspect` only, once reported: its WireGuard public key.
    #[serde(skip_serializing_if = "Option::is_none")]
    wireguard_key: Option<&'a str>,
}

#[derive(Serialize)]
struct DescriptionJson {
    #[serde(rename = "Platform", skip_serializing_if = "Option::is_none")]
    platform: Option<PlatformJson>,
    #[serde(rename = "Resources", skip_serializing_if = "Option::is_none")]
    resources: Option<ResourcesJson>,
}

#[derive(Serialize)]
struct PlatformJson {
    #[serde(rename = "Architecture")]
    architecture: String,
    #[serde(rename = "OS")]
    os: String,
}

#[derive(Serialize)]
struct ResourcesJson {
    #[serde(rename = "NanoCPUs")]
    nano_cpus: u64,
    #[serde(rename = "MemoryBytes")]
    memory_bytes: u64,
}

/// docker's `units.BytesSize`: binary units, four significant digits
/// (`23.41GiB`, `32MiB`).
pub fn bytes_size(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    let digits = if v >= 1000.0 {
        0
    } else if v >= 100.0 {
        1
    } else if v >= 10.0 {
        2
    } else {
        3
    };
    let text = format!("{v:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text}{}", UNITS[i])
}

/// A number of CPUs from billionths, as docker prints them (`0.5`, `2`).
pub fn cpus(nano: u64) -> String {
    let whole = nano / 1_000_000_000;
    let frac = nano % 1_000_000_000;
    if frac == 0 {
        whole.to_string()
    } else {
        let f = format!("{frac:09}");
        format!("{whole}.{}", f.trim_end_matches('0'))
    }
}

fn node_value<'a>(n: &'a NodeSummary, raft_addr: Option<&'a str>) -> NodeJson<'a> {
    NodeJson {
        id: &n.id,
        hostname: &n.hostname,
        role: word::<NodeRole>(n.role),
        status: word::<NodeStatus>(n.status),
        availability: word::<NodeAvailability>(n.availability),
        manager_status: &n.manager_status,
        addr: &n.addr,
        labels: n
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        version: n.version,
        is_self: n.self_,
        raft_addr,
        cert_not_after_unix: None,
        description: None,
        wireguard_key: None,
    }
}

/// docker's `node ls` table: this node's ID marked with `*`.
fn nodes_table(nodes: &[NodeSummary]) -> Table {
    let mut t = table(&["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS"]);
    for n in nodes {
        let id = if n.self_ {
            format!("{} *", n.id)
        } else {
            n.id.clone()
        };
        t.add_row(vec![
            id,
            n.hostname.clone(),
            pretty(&word::<NodeStatus>(n.status)),
            pretty(&word::<NodeAvailability>(n.availability)),
            n.manager_status.clone(),
        ]);
    }
    t
}

pub fn nodes(nodes: &[NodeSummary], quiet: bool, format: Format) -> anyhow::Result<()> {
    if quiet {
        for n in nodes {
            println!("{}", n.id);
        }
        return Ok(());
    }
    match format {
        Format::Json => {
            let all: Vec<NodeJson<'_>> = nodes.iter().map(|n| node_value(n, None)).collect();
            println!("{}", serde_json::to_string_pretty(&all)?);
        }
        Format::Table => println!("{}", nodes_table(nodes)),
    }
    Ok(())
}

fn detail_value(d: &NodeDetail) -> Option<NodeJson<'_>> {
    d.node.as_ref().map(|n| NodeJson {
        cert_not_after_unix: Some(d.cert_not_after_unix),
        description: (d.resources.is_some() || d.platform.is_some()).then(|| DescriptionJson {
            platform: d.platform.as_ref().map(|p| PlatformJson {
                architecture: p.architecture.clone(),
                os: p.os.clone(),
            }),
            resources: d.resources.map(|r| ResourcesJson {
                nano_cpus: r.nano_cpus,
                memory_bytes: r.memory_bytes,
            }),
        }),
        wireguard_key: (!d.wireguard_key.is_empty()).then_some(d.wireguard_key.as_str()),
        ..node_value(n, Some(&d.raft_addr))
    })
}

/// `node inspect`: a JSON array, as docker inspect prints.
pub fn node_json(details: &[NodeDetail], format: Format) -> anyhow::Result<()> {
    if format == Format::Table {
        node_pretty(details);
        return Ok(());
    }
    let all: Vec<NodeJson<'_>> = details.iter().filter_map(detail_value).collect();
    println!("{}", serde_json::to_string_pretty(&all)?);
    Ok(())
}

fn node_text(d: &NodeDetail) -> String {
    let Some(n) = &d.node else {
        return String::new();
    };
    let mut out = format!(
        "ID:                     {}\n\
         Hostname:               {}\n\
         Status:\n \
         State:                  {}\n \
         Availability:           {}\n \
         Address:                {}\n",
        n.id,
        n.hostname,
        pretty(&word::<NodeStatus>(n.status)),
        pretty(&word::<NodeAvailability>(n.availability)),
        n.addr,
    );
    if !n.labels.is_empty() {
        let labels: BTreeMap<_, _> = n.labels.iter().collect();
        out.push_str("Labels:\n");
        for (k, v) in labels {
            out.push_str(&format!(" - {k}={v}\n"));
        }
    }
    if n.role == NodeRole::Manager as i32 {
        let reach = match n.manager_status.as_str() {
            "Leader" | "Reachable" => "Reachable",
            _ => "Unreachable",
        };
        out.push_str(&format!(
            "Manager Status:\n \
             Address:                {}\n \
             Raft Status:            {reach}\n \
             Leader:                 {}\n",
            d.raft_addr,
            if n.manager_status == "Leader" {
                "Yes"
            } else {
                "No"
            },
        ));
    }
    if !d.wireguard_key.is_empty() {
        out.push_str(&format!("WireGuard Public Key:    {}\n", d.wireguard_key));
    }
    if let Some(p) = &d.platform {
        out.push_str(&format!(
            "Platform:\n \
             Operating System:       {}\n \
             Architecture:           {}\n",
            p.os, p.architecture
        ));
    }
    if let Some(r) = &d.resources {
        out.push_str(&format!(
            "Resources:\n \
             CPUs:                   {}\n \
             Memory:                 {}\n",
            cpus(r.nano_cpus),
            bytes_size(r.memory_bytes)
        ));
    }
    out
}

pub fn node_pretty(details: &[NodeDetail]) {
    let texts: Vec<String> = details.iter().map(node_text).collect();
    print!("{}", texts.join("\n"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::node::v1::ProtoCounter;

    fn info_reply(swarm: Option<SwarmInfo>) -> InfoReply {
        InfoReply {
            hostname: "n1".into(),
            version: "0.1.0".into(),
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            data_interface: "eth0".into(),
            data_ifindex: 2,
            attach_mode: "tcx".into(),
            programs: vec!["shoal_tc_in".into()],
            uptime_seconds: 5,
            state_dir: "/var/lib/shoal".into(),
            swarm,
            secrets_received: vec!["s1".into(), "s2".into()],
            secrets_held: vec!["s2".into()],
        }
    }

    fn summary(hostname: &str, manager_status: &str, is_self: bool) -> NodeSummary {
        NodeSummary {
            id: format!("id-{hostname}"),
            hostname: hostname.into(),
            status: NodeStatus::Ready.into(),
            availability: NodeAvailability::Active.into(),
            manager_status: manager_status.into(),
            role: if manager_status.is_empty() {
                NodeRole::Worker
            } else {
                NodeRole::Manager
            }
            .into(),
            addr: "198.18.0.1".into(),
            labels: [("zone".to_owned(), "a".to_owned())].into(),
            version: 3,
            last_heartbeat_unix: 0,
            self_: is_self,
        }
    }

    #[test]
    fn sizes_and_cpus_read_like_docker() {
        assert_eq!(bytes_size(32 << 20), "32MiB");
        assert_eq!(bytes_size(0), "0B");
        assert_eq!(bytes_size(1536), "1.5KiB");
        assert_eq!(bytes_size(25_125_842_944), "23.4GiB");
        assert_eq!(cpus(2_000_000_000), "2");
        assert_eq!(cpus(500_000_000), "0.5");
        assert_eq!(cpus(1_250_000_000), "1.25");
        let d = NodeDetail {
            node: Some(summary("n1", "", false)),
            resources: Some(shoal_api::cluster::v1::NodeResources {
                nano_cpus: 2_000_000_000,
                memory_bytes: 25_125_842_944,
            }),
            platform: Some(shoal_api::cluster::v1::NodePlatform {
                os: "linux".into(),
                architecture: "x86_64".into(),
            }),
            ..Default::default()
        };
        let text = node_text(&d);
        assert!(
            text.contains(
                "Platform:\n Operating System:       linux\n Architecture:           x86_64\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "Resources:\n CPUs:                   2\n Memory:                 23.4GiB\n"
            ),
            "{text}"
        );
        let json = serde_json::to_value(detail_value(&d)).unwrap_or_default();
        assert_eq!(
            json["Description"]["Resources"]["NanoCPUs"],
            2_000_000_000u64
        );
        assert_eq!(
            json["Description"]["Resources"]["MemoryBytes"],
            25_125_842_944u64
        );
        assert_eq!(json["Description"]["Platform"]["OS"], "linux");
        assert_eq!(json["Description"]["Platform"]["Architecture"], "x86_64");
        // Before the node reported them: nothing, rather than zeros.
        let bare = NodeDetail {
            resources: None,
            platform: None,
            ..d
        };
        assert!(!node_text(&bare).contains("Resources"));
        let json = serde_json::to_value(detail_value(&bare)).unwrap_or_default();
        assert!(json.get("Description").is_none());
        assert!(json.get("wireguard_key").is_none());
        // Once reported, the node's WireGuard key is shown, as `wg show` would.
        let keyed = NodeDetail {
            wireguard_key: "a2V5".into(),
            ..bare
        };
        assert!(node_text(&keyed).contains("WireGuard Public Key:    a2V5\n"));
        let json = serde_json::to_value(detail_value(&keyed)).unwrap_or_default();
        assert_eq!(json["wireguard_key"], "a2V5");
    }

    #[test]
    fn node_ls_reads_like_docker() {
        let out =
            nodes_table(&[summary("n1", "Leader", true), summary("n4", "", false)]).to_string();
        let rows: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows[0],
            [
                "ID",
                "HOSTNAME",
                "STATUS",
                "AVAILABILITY",
                "MANAGER",
                "STATUS"
            ]
        );
        assert_eq!(rows[1], ["id-n1", "*", "n1", "Ready", "Active", "Leader"]);
        assert_eq!(rows[2], ["id-n4", "n4", "Ready", "Active"]);
    }

    #[test]
    fn node_json_keeps_the_fields_scripts_need() -> anyhow::Result<()> {
        let n = summary("n2", "Reachable", false);
        let v = serde_json::to_value(node_value(&n, Some("198.18.0.2:2377")))?;
        assert_eq!(v["hostname"], "n2");
        assert_eq!(v["manager_status"], "Reachable");
        assert_eq!(v["self"], false);
        assert_eq!(v["labels"]["zone"], "a");
        assert_eq!(v["raft_addr"], "198.18.0.2:2377");
        let text = node_text(&NodeDetail {
            node: Some(n),
            cert_not_after_unix: 0,
            raft_addr: "198.18.0.2:2377".into(),
            resources: None,
            platform: None,
            wireguard_key: String::new(),
        });
        assert!(text.contains(" - zone=a\n"), "{text}");
        assert!(text.contains("Leader:                 No"), "{text}");
        Ok(())
    }

    #[test]
    fn capitalises_like_docker() {
        assert_eq!(pretty("ready"), "Ready");
        assert_eq!(pretty("Leader"), "Leader");
        assert_eq!(pretty(""), "");
    }

    #[test]
    fn info_shows_the_swarm_as_docker_does() {
        let manager = SwarmInfo {
            state: SwarmState::Active.into(),
            node_id: "abc".into(),
            cluster_id: "xyz".into(),
            role: NodeRole::Manager.into(),
            managers: vec!["198.18.0.2:2377".into(), "198.18.0.1:2377".into()],
            error: String::new(),
        };
        let text = info_text(&info_reply(Some(manager.clone())));
        assert!(
            text.ends_with(
                "State dir:       /var/lib/shoal\n\
                 Docker API:      unix:///var/lib/shoal/docker.sock\n\
                 Swarm: active\n \
                 NodeID: abc\n \
                 Is Manager: true\n \
                 ClusterID: xyz\n \
                 Managers: 2\n \
                 Manager Addresses:\n  \
                 198.18.0.1:2377\n  \
                 198.18.0.2:2377\n"
            ),
            "{text}"
        );
        let worker = SwarmInfo {
            role: NodeRole::Worker.into(),
            error: "manager unreachable".into(),
            ..manager
        };
        let text = swarm_text(&worker);
        assert!(text.contains(" Error: manager unreachable\n Is Manager: false\n"));
        assert!(!text.contains("Managers:"), "{text}");
        assert_eq!(swarm_text(&SwarmInfo::default()), "Swarm: inactive\n");
        assert!(!info_text(&info_reply(None)).contains("Swarm"));
    }

    #[test]
    fn info_json_keeps_every_field() -> anyhow::Result<()> {
        let swarm = SwarmInfo {
            state: SwarmState::Active.into(),
            node_id: "abc".into(),
            cluster_id: "xyz".into(),
            role: NodeRole::Manager.into(),
            managers: vec!["198.18.0.1:2377".into()],
            error: String::new(),
        };
        let v: serde_json::Value = serde_json::from_str(&info_json(&info_reply(Some(swarm)))?)?;
        assert_eq!(v["hostname"], "n1");
        assert_eq!(v["uptime_seconds"], 5);
        assert_eq!(v["docker_socket"], "/var/lib/shoal/docker.sock");
        assert_eq!(v["swarm"]["state"], "active");
        assert_eq!(v["swarm"]["is_manager"], true);
        assert_eq!(v["swarm"]["managers"][0], "198.18.0.1:2377");
        assert_eq!(v["secrets_received"]["count"], 2);
        assert_eq!(v["secrets_received"]["ids"][1], "s2");
        assert_eq!(v["secrets_held"]["count"], 1);
        assert_eq!(v["secrets_held"]["ids"][0], "s2");
        let v: serde_json::Value = serde_json::from_str(&info_json(&info_reply(None))?)?;
        assert!(v["swarm"].is_null());
        Ok(())
    }

    #[test]
    fn stats_table_pairs_directions_per_protocol() {
        let c = |direction: &str, protocol: &str, packets| ProtoCounter {
            direction: Direction::from_word(direction).map_or(0, Into::into),
            protocol: CountedProtocol::from_word(protocol).map_or(0, Into::into),
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
            ..StatsReply::default()
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
