//! `shoal network …`: docker's network verbs for swarm-scoped overlays.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
};

use clap::Subcommand;
use serde::Serialize;
use shoal_api::{
    cluster::v1::{
        CreateNetworkRequest, Encryption, ListNetworksRequest, NetworkRef, NetworkSummary,
    },
    words::{encryption_opt, word},
};

use crate::{
    client::{self, finish},
    output::{Format, ListFlags, table},
    parse::{FlagError, Problem, parse_label},
};

const MTU_OPT: &str = "com.docker.network.driver.mtu";

#[derive(Subcommand)]
pub enum NetworkCmd {
    /// Create an overlay network.
    Create {
        /// Driver to manage the network (only overlay in a swarm).
        #[arg(long, short, default_value = "overlay")]
        driver: String,
        /// Subnet in CIDR format; default: the next free one of the pools.
        #[arg(long)]
        subnet: Option<String>,
        /// IPv4 gateway for the subnet; default: its first address.
        #[arg(long)]
        gateway: Option<String>,
        /// Enable manual container attachment.
        #[arg(long)]
        attachable: bool,
        /// Restrict external access to the network: its tasks reach
        /// nothing outside the cluster.
        #[arg(long)]
        internal: bool,
        /// Driver options: `encrypted[=ipsec|wireguard]`, `com.docker.network.driver.mtu=N`.
        #[arg(long, short)]
        opt: Vec<String>,
        /// Network labels (key=value).
        #[arg(long)]
        label: Vec<String>,
        name: String,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls(ListFlags),
    /// Display detailed information on one or more networks.
    Inspect {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove one or more networks.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        networks: Vec<String>,
    },
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Opts {
    encryption: Encryption,
    mtu: u32,
}

/// `--opt` values as docker's overlay driver takes them.
fn parse_opts(opts: &[String]) -> Result<Opts, FlagError> {
    let mut out = Opts::default();
    for o in opts {
        let (key, value) = o.split_once('=').unwrap_or((o, ""));
        match key {
            "encrypted" => {
                out.encryption = encryption_opt(value)
                    .ok_or_else(|| FlagError::new("--opt", o, Problem::Encryption))?
            }
            MTU_OPT => {
                out.mtu = value.parse().ok().filter(|m| *m > 0).ok_or_else(|| {
                    FlagError::new(
                        "--opt",
                        o,
                        Problem::Range {
                            min: 576,
                            max: 8950,
                        },
                    )
                })?;
            }
            _ => return Err(FlagError::new("--opt", o, Problem::UnknownOpt)),
        }
    }
    Ok(out)
}

#[derive(Serialize)]
struct NetworkJson<'a> {
    id: &'a str,
    name: &'a str,
    driver: &'a str,
    scope: &'a str,
    subnet: &'a str,
    gateway: &'a str,
    vni: u32,
    attachable: bool,
    encrypted: bool,
    /// none, ipsec or wireguard.
    encryption: Cow<'static, str>,
    ingress: bool,
    /// `null`: derived per node from its underlay.
    mtu: Option<u32>,
    labels: BTreeMap<&'a str, &'a str>,
    services: &'a [String],
    internal: bool,
}

fn json(n: &NetworkSummary) -> NetworkJson<'_> {
    NetworkJson {
        id: &n.id,
        name: &n.name,
        driver: &n.driver,
        scope: &n.scope,
        subnet: &n.subnet,
        gateway: &n.gateway,
        vni: n.vni,
        attachable: n.attachable,
        encrypted: n.encryption != Encryption::None as i32,
        encryption: word::<Encryption>(n.encryption),
        ingress: n.ingress,
        mtu: (n.mtu != 0).then_some(n.mtu),
        labels: n
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        services: &n.services,
        internal: n.internal,
    }
}

/// docker shows 12 characters of a network ID.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

pub async fn run(host: &str, cmd: NetworkCmd) -> anyhow::Result<()> {
    match cmd {
        NetworkCmd::Create {
            driver,
            subnet,
            gateway,
            attachable,
            internal,
            opt,
            label,
            name,
        } => {
            let opts = parse_opts(&opt)?;
            let mut labels = HashMap::new();
            for l in &label {
                let (k, v) = parse_label(l).map_err(|e| FlagError::new("--label", l, e))?;
                labels.insert(k, v);
            }
            let mut d = client::connect(host).await?;
            let n = client::call(
                host,
                d.control.create_network(CreateNetworkRequest {
                    name,
                    driver,
                    subnet: subnet.unwrap_or_default(),
                    gateway: gateway.unwrap_or_default(),
                    attachable,
                    encryption: opts.encryption.into(),
                    mtu: opts.mtu,
                    labels,
                    internal,
                }),
            )
            .await?;
            println!("{}", n.id);
            Ok(())
        }
        NetworkCmd::Ls(ListFlags { quiet, format }) => {
            let mut d = client::connect(host).await?;
            let mut all = client::call(host, d.control.list_networks(ListNetworksRequest {}))
                .await?
                .networks;
            all.sort_by(|a, b| a.name.cmp(&b.name));
            if quiet {
                all.iter().for_each(|n| println!("{}", short(&n.id)));
                return Ok(());
            }
            match format {
                Format::Json => {
                    let v: Vec<_> = all.iter().map(json).collect();
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                Format::Table => {
                    let mut t = table(&[
                        "NETWORK ID",
                        "NAME",
                        "DRIVER",
                        "SCOPE",
                        "SUBNET",
                        "ENCRYPTION",
                        "INTERNAL",
                    ]);
                    for n in &all {
                        t.add_row(vec![
                            short(&n.id).to_owned(),
                            n.name.clone(),
                            n.driver.clone(),
                            n.scope.clone(),
                            n.subnet.clone(),
                            word::<Encryption>(n.encryption).into_owned(),
                            n.internal.to_string(),
                        ]);
                    }
                    println!("{t}");
                }
            }
            Ok(())
        }
        NetworkCmd::Inspect { networks } => {
            let d = client::connect(host).await?;
            let inspect = |mut c: client::Control, network| async move {
                c.inspect_network(NetworkRef { network }).await
            };
            let (found, failed) = client::each_named(&d, networks, inspect).await;
            let v: Vec<_> = found.iter().map(|(_, x)| json(x)).collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
            finish(failed)
        }
        NetworkCmd::Rm { networks } => {
            let d = client::connect(host).await?;
            let remove = |mut c: client::Control, network| async move {
                c.remove_network(NetworkRef { network }).await
            };
            client::remove_named(&d, networks, remove).await
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn docker_opts() {
        let o = |v: &[&str]| parse_opts(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            o(&["encrypted", "com.docker.network.driver.mtu=1400"]),
            Ok(Opts {
                encryption: Encryption::Ipsec,
                mtu: 1400
            })
        );
        assert_eq!(
            o(&["encrypted=false"]).map(|o| o.encryption),
            Ok(Encryption::None)
        );
        let e = o(&["mtu=1400"])
            .err()
            .map(|e| format!("{:#}", anyhow::Error::from(e)));
        assert!(
            e.unwrap_or_default()
                .contains("encrypted, com.docker.network.driver.mtu=N")
        );
        assert!(o(&["com.docker.network.driver.mtu=big"]).is_err());
    }

    #[test]
    fn encryption_modes() {
        let o = |v: &str| parse_opts(&[v.to_string()]).map(|o| o.encryption);
        for on in ["encrypted", "encrypted=true", "encrypted=ipsec"] {
            assert_eq!(o(on), Ok(Encryption::Ipsec), "{on}");
        }
        assert_eq!(o("encrypted=wireguard"), Ok(Encryption::Wireguard));
        assert_eq!(o("encrypted=false"), Ok(Encryption::None));
        let e = o("encrypted=ipsek")
            .err()
            .map(|e| format!("{:#}", anyhow::Error::from(e)))
            .unwrap_or_default();
        assert!(
            e.contains("encrypted=ipsek") && e.contains("encrypted=wireguard"),
            "{e}"
        );
    }

    proptest! {
        #[test]
        fn opts_parser_never_panics(v in proptest::collection::vec(any::<String>(), 0..4)) {
            let _ = parse_opts(&v);
        }
    }
}
