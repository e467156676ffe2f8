//! `shoal stack …`: docker's stack verbs. As in docker, a stack is a
//! client-side notion: its objects carry the label
//! `com.docker.stack.namespace=NAME`, and every verb works from that label.

mod convert;
mod deploy;

use std::collections::BTreeMap;

use clap::Subcommand;
use shoal_api::cluster::v1::{
    ConfigRef, ListConfigsRequest, ListNetworksRequest, ListSecretsRequest, ListServicesRequest,
    ListTasksRequest, NetworkRef, SecretRef, ServiceRef, ServiceSummary,
};

use crate::{client, output::Format, service};

/// The label every object of a stack carries (docker's).
pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";

#[derive(Subcommand)]
pub enum StackCmd {
    /// Deploy a new stack or update an existing stack.
    #[command(alias = "up")]
    Deploy(deploy::DeployArgs),
    /// Outputs the final config file, after doing merges and interpolations.
    Config {
        /// Path to a Compose file, or "-" to read from stdin.
        #[arg(long = "compose-file", short = 'c', required = true)]
        compose_file: Vec<String>,
    },
    /// List stacks.
    #[command(alias = "list")]
    Ls {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// List the services in the stack.
    Services {
        /// Only display IDs.
        #[arg(long, short)]
        quiet: bool,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        stack: String,
    },
    /// List the tasks in the stack.
    Ps {
        /// Do not truncate output.
        #[arg(long)]
        no_trunc: bool,
        /// Only display task IDs.
        #[arg(long, short)]
        quiet: bool,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        stack: String,
    },
    /// Remove one or more stacks.
    #[command(alias = "remove", alias = "down")]
    Rm {
        #[arg(required = true)]
        stacks: Vec<String>,
    },
}

fn in_stack(labels: &std::collections::HashMap<String, String>, stack: &str) -> bool {
    labels.get(NAMESPACE_LABEL).is_some_and(|v| v == stack)
}

/// The stack's services, by name.
async fn services(d: &mut client::Daemon, stack: &str) -> anyhow::Result<Vec<ServiceSummary>> {
    let mut all: Vec<ServiceSummary> =
        client::call(&d.host, d.control.list_services(ListServicesRequest {}))
            .await?
            .services
            .into_iter()
            .filter(|s| in_stack(&s.labels, stack))
            .collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

/// docker's words when a stack has nothing.
fn nothing_found(stack: &str) -> anyhow::Error {
    anyhow::anyhow!("nothing found in stack: {stack}")
}

pub async fn run(host: &str, cmd: StackCmd) -> anyhow::Result<()> {
    match cmd {
        StackCmd::Deploy(a) => deploy::run(host, a).await,
        StackCmd::Config { compose_file } => {
            let loaded = deploy::load(&compose_file)?;
            for w in &loaded.warnings {
                eprintln!("{w}");
            }
            print!("{}", shoal_compose::render(&loaded.config));
            Ok(())
        }
        StackCmd::Ls { format } => {
            let mut d = client::connect(host).await?;
            let all = client::call(host, d.control.list_services(ListServicesRequest {}))
                .await?
                .services;
            let mut stacks: BTreeMap<String, usize> = BTreeMap::new();
            for s in &all {
                if let Some(ns) = s.labels.get(NAMESPACE_LABEL) {
                    *stacks.entry(ns.clone()).or_default() += 1;
                }
            }
            match format {
                Format::Json => {
                    let v: Vec<_> = stacks
                        .iter()
                        .map(|(name, n)| serde_json::json!({"Name": name, "Services": n.to_string()}))
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                Format::Table => {
                    let mut t = crate::output::table(&["NAME", "SERVICES"]);
                    for (name, n) in &stacks {
                        t.add_row(vec![name.clone(), n.to_string()]);
                    }
                    println!("{t}");
                }
            }
            Ok(())
        }
        StackCmd::Services {
            quiet,
            format,
            stack,
        } => {
            let mut d = client::connect(host).await?;
            let all = services(&mut d, &stack).await?;
            if all.is_empty() {
                // docker prints this on stderr and succeeds.
                eprintln!("Nothing found in stack: {stack}");
                return Ok(());
            }
            service::print_list(&all, quiet, format)
        }
        StackCmd::Ps {
            no_trunc,
            quiet,
            format,
            stack,
        } => {
            let mut d = client::connect(host).await?;
            let svcs = services(&mut d, &stack).await?;
            if svcs.is_empty() {
                return Err(nothing_found(&stack));
            }
            let mut tasks = Vec::new();
            for s in &svcs {
                let r = d.control.list_tasks(ListTasksRequest {
                    service: s.id.clone(),
                });
                tasks.extend(client::call(host, r).await?.tasks);
            }
            service::print_tasks(tasks, quiet, no_trunc, format)
        }
        StackCmd::Rm { stacks } => {
            let mut d = client::connect(host).await?;
            let mut failed = Vec::new();
            for stack in stacks {
                if let Err(e) = remove(&mut d, &stack).await {
                    failed.push(e);
                }
            }
            client::finish(failed)
        }
    }
}

/// `stack rm`: the stack's services, then its secrets, configs and
/// networks (docker's order: networks last, once no service uses them).
/// Only objects carrying the stack's label: never an external one.
async fn remove(d: &mut client::Daemon, stack: &str) -> anyhow::Result<()> {
    let host = d.host.clone();
    let svcs = services(d, stack).await?;
    let secrets: Vec<_> = client::call(&host, d.control.list_secrets(ListSecretsRequest {}))
        .await?
        .secrets
        .into_iter()
        .filter(|s| in_stack(&s.labels, stack))
        .collect();
    let configs: Vec<_> = client::call(&host, d.control.list_configs(ListConfigsRequest {}))
        .await?
        .configs
        .into_iter()
        .filter(|s| in_stack(&s.labels, stack))
        .collect();
    let networks: Vec<_> = client::call(&host, d.control.list_networks(ListNetworksRequest {}))
        .await?
        .networks
        .into_iter()
        .filter(|s| in_stack(&s.labels, stack))
        .collect();
    if svcs.is_empty() && secrets.is_empty() && configs.is_empty() && networks.is_empty() {
        eprintln!("Nothing found in stack: {stack}");
        return Ok(());
    }
    let mut failed = Vec::new();
    for s in &svcs {
        println!("Removing service {}", s.name);
        let r = d.control.remove_service(ServiceRef {
            service: s.id.clone(),
        });
        if let Err(e) = client::call(&host, r).await {
            failed.push(e);
        }
    }
    for s in &secrets {
        println!("Removing secret {}", s.name);
        let r = d.control.remove_secret(SecretRef {
            secret: s.id.clone(),
        });
        if let Err(e) = client::call(&host, r).await {
            failed.push(e);
        }
    }
    for c in &configs {
        println!("Removing config {}", c.name);
        let r = d.control.remove_config(ConfigRef {
            config: c.id.clone(),
        });
        if let Err(e) = client::call(&host, r).await {
            failed.push(e);
        }
    }
    for n in &networks {
        println!("Removing network {}", n.name);
        // A network is removable once the services using it are gone,
        // which the managers see a moment after the removals above.
        let mut tries = 0;
        loop {
            let r = d.control.remove_network(NetworkRef {
                network: n.id.clone(),
            });
            match client::call(&host, r).await {
                Ok(_) => break,
                Err(_) if tries < 20 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
                Err(e) => {
                    failed.push(e);
                    break;
                }
            }
        }
    }
    client::finish(failed)
}
