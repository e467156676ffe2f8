//! `shoal node …`: docker's node verbs against the cluster's Control API.

use std::collections::HashMap;

use clap::{Subcommand, ValueEnum};
use shoal_api::{
    cluster::v1::{
        ListNodesRequest, NodeAvailability, NodeRef, NodeRole, RemoveNodeRequest, UpdateNodeRequest,
    },
    node::v1::{CheckStatus, DoctorRequest, InfoRequest, StatsRequest},
};

use crate::{
    client::{self, Daemon, finish},
    output::{self, Format, ListFlags},
    parse::{FlagError, Problem, check_label_key, parse_label},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Availability {
    Active,
    Pause,
    Drain,
}

impl Availability {
    fn as_api(self) -> NodeAvailability {
        match self {
            Self::Active => NodeAvailability::Active,
            Self::Pause => NodeAvailability::Pause,
            Self::Drain => NodeAvailability::Drain,
        }
    }
}

#[derive(Subcommand)]
pub enum NodeCmd {
    /// List the nodes of the swarm (on a manager).
    #[command(alias = "list")]
    Ls(ListFlags),
    /// Display detailed information on one or more nodes (`self` is this node).
    Inspect {
        #[arg(required = true)]
        nodes: Vec<String>,
        /// Print the information in a human friendly format.
        #[arg(long)]
        pretty: bool,
        /// JSON, as docker inspect prints by default.
        #[arg(long, short, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
    /// Update a node's availability or labels.
    Update {
        node: String,
        #[arg(long, value_enum)]
        availability: Option<Availability>,
        /// Add or update a node label (key=value, or key for an empty value).
        #[arg(long = "label-add", value_name = "KEY=VALUE")]
        label_add: Vec<String>,
        /// Remove a node label if it exists.
        #[arg(long = "label-rm", value_name = "KEY")]
        label_rm: Vec<String>,
    },
    /// Promote one or more nodes to manager in the swarm.
    Promote {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Demote one or more nodes from manager in the swarm.
    Demote {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Remove one or more nodes from the swarm.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        nodes: Vec<String>,
        /// Force remove a node from the swarm.
        #[arg(long, short)]
        force: bool,
    },
    /// Packet counters of the node's data interface, per protocol and direction.
    Stats {
        #[arg(long, short, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Check this node: its routing mesh, every published port's backends,
    /// and its paths to the other nodes (7946, 4789); exits 1 if any fails.
    Doctor {
        #[arg(long, short, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// The labels of `--label-add`/`--label-rm`, checked before anything is sent.
fn label_changes(
    add: &[String],
    rm: &[String],
) -> Result<(HashMap<String, String>, Vec<String>), FlagError> {
    let mut added = HashMap::new();
    for l in add {
        let (k, v) = parse_label(l).map_err(|e| FlagError::new("--label-add", l, e))?;
        added.insert(k, v);
    }
    for k in rm {
        check_label_key(k).map_err(|e| FlagError::new("--label-rm", k, e))?;
        if added.contains_key(k) {
            return Err(FlagError::new(
                "--label-rm",
                k,
                Problem::AddedAndRemoved { key: k.clone() },
            ));
        }
    }
    Ok((added, rm.to_vec()))
}

/// docker's `self` names the node whose daemon answers.
async fn resolve(d: &mut Daemon, node: &str) -> anyhow::Result<String> {
    if node != "self" {
        return Ok(node.to_owned());
    }
    let info = client::call(&d.host, d.node.info(InfoRequest {})).await?;
    match info.swarm.map(|s| s.node_id).filter(|id| !id.is_empty()) {
        Some(id) => Ok(id),
        None => Err(client::DaemonError {
            message: "This node is not part of a swarm".into(),
        }
        .into()),
    }
}

pub async fn run(host: &str, cmd: NodeCmd) -> anyhow::Result<()> {
    // Flag values first, so a typo is reported even with the daemon down.
    let labels = match &cmd {
        NodeCmd::Update {
            label_add,
            label_rm,
            ..
        } => Some(label_changes(label_add, label_rm)?),
        _ => None,
    };
    let mut d = client::connect(host).await?;
    match cmd {
        NodeCmd::Doctor { format } => {
            let r = client::call(host, d.node.doctor(DoctorRequest {})).await?;
            let failed = r
                .checks
                .iter()
                .filter(|c| c.status == CheckStatus::Fail as i32)
                .count();
            output::doctor(&r, format)?;
            if failed > 0 {
                anyhow::bail!("{failed} check(s) failed on {}", r.hostname);
            }
            Ok(())
        }
        NodeCmd::Stats { format } => {
            let stats = client::call(host, d.node.stats(StatsRequest {})).await?;
            output::stats(&stats, format)
        }
        NodeCmd::Ls(ListFlags { quiet, format }) => {
            let mut nodes = client::call(host, d.control.list_nodes(ListNodesRequest {}))
                .await?
                .nodes;
            nodes.sort_by(|a, b| a.hostname.cmp(&b.hostname).then(a.id.cmp(&b.id)));
            output::nodes(&nodes, quiet, format)
        }
        NodeCmd::Inspect {
            nodes,
            pretty,
            format,
        } => {
            let mut found = Vec::new();
            let mut failed = Vec::new();
            for n in &nodes {
                let node = resolve(&mut d, n).await?;
                match client::call(host, d.control.inspect_node(NodeRef { node })).await {
                    Ok(detail) => found.push(detail),
                    Err(e) => failed.push(e),
                }
            }
            if pretty {
                output::node_pretty(&found);
            } else {
                output::node_json(&found, format)?;
            }
            finish(failed)
        }
        NodeCmd::Update {
            node, availability, ..
        } => {
            let (label_add, label_rm) = labels.unwrap_or_default();
            let node = resolve(&mut d, &node).await?;
            client::call(
                host,
                d.control.update_node(UpdateNodeRequest {
                    node: node.clone(),
                    availability: availability.map_or(0, |a| a.as_api().into()),
                    role: NodeRole::Unspecified.into(),
                    label_add,
                    label_rm,
                }),
            )
            .await?;
            println!("{node}");
            Ok(())
        }
        NodeCmd::Promote { nodes } => set_role(&mut d, &nodes, NodeRole::Manager).await,
        NodeCmd::Demote { nodes } => set_role(&mut d, &nodes, NodeRole::Worker).await,
        NodeCmd::Rm { nodes, force } => {
            let mut failed = Vec::new();
            for n in &nodes {
                let node = resolve(&mut d, n).await?;
                match client::call(
                    host,
                    d.control.remove_node(RemoveNodeRequest { node, force }),
                )
                .await
                {
                    Ok(_) => println!("{n}"),
                    Err(e) => failed.push(e),
                }
            }
            finish(failed)
        }
    }
}

async fn set_role(d: &mut Daemon, nodes: &[String], role: NodeRole) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for n in nodes {
        let node = resolve(d, n).await?;
        let r = client::call(
            &d.host,
            d.control.update_node(UpdateNodeRequest {
                node,
                role: role.into(),
                ..Default::default()
            }),
        )
        .await;
        match r {
            Ok(detail) => {
                let name = detail.node.map(|n| n.hostname).unwrap_or_else(|| n.clone());
                println!(
                    "Node {name} {} in the swarm.",
                    match role {
                        NodeRole::Manager => "promoted to a manager",
                        _ => "demoted",
                    }
                );
            }
            Err(e) => failed.push(e),
        }
    }
    finish(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_checked_before_sending() {
        let (add, rm) =
            label_changes(&["zone=a".into(), "ssd".into()], &["old".into()]).unwrap_or_default();
        assert_eq!(add.get("zone").map(String::as_str), Some("a"));
        assert_eq!(add.get("ssd").map(String::as_str), Some(""));
        assert_eq!(rm, ["old"]);
        let e = label_changes(&["=x".into()], &[])
            .err()
            .map(|e| format!("{:#}", anyhow::Error::from(e)));
        assert!(
            e.unwrap_or_default()
                .starts_with("--label-add =x: label key is empty")
        );
        let e = label_changes(&["a=1".into()], &["a".into()])
            .err()
            .map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("--label-rm a"));
        let e = label_changes(&[], &["a=1".into()])
            .err()
            .map(|e| format!("{:#}", anyhow::Error::from(e)));
        assert!(e.unwrap_or_default().contains("drop the \"=1\""));
    }
}
