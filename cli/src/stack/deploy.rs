//! `stack deploy`: load and merge the compose files, convert them whole,
//! check what must already exist, then create or update each object in
//! docker's order (networks, secrets, configs, services) and print docker's
//! lines for each.

use std::{collections::HashMap, io::Read};

use anyhow::{Context, bail};
use clap::Args;
use shoal_api::cluster::v1::{
    ListConfigsRequest, ListNetworksRequest, ListSecretsRequest, ListServicesRequest, ServiceRef,
    UpdateServiceRequest,
};

use super::{
    convert::{self, Plan},
    in_stack,
};
use crate::{client, registry_auth, service::progress};

#[derive(Args)]
pub struct DeployArgs {
    /// Path to a Compose file, or "-" to read from stdin.
    #[arg(long = "compose-file", short = 'c', required = true)]
    pub compose_file: Vec<String>,
    /// Prune services that are no longer referenced.
    #[arg(long)]
    pub prune: bool,
    /// Query the registry to resolve image digest and supported platforms
    /// ("always", "changed", "never").
    #[arg(long, default_value = "always", value_parser = ["always", "changed", "never"])]
    pub resolve_image: String,
    /// Send registry authentication details to Swarm agents.
    #[arg(long)]
    pub with_registry_auth: bool,
    /// Exit immediately instead of waiting for the stack services to
    /// converge (default true).
    #[arg(long, short, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", require_equals = true)]
    pub detach: Option<bool>,
    /// Suppress progress output.
    #[arg(long, short)]
    pub quiet: bool,
    pub stack: String,
}

/// Reads the `-c` files (`-` = stdin) and loads them as docker does: the
/// working directory is the first file's, the environment the caller's.
pub fn load(files: &[String]) -> anyhow::Result<shoal_compose::Loaded> {
    let mut sources = Vec::new();
    for f in files {
        let text = if f == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the compose file from stdin")?;
            s
        } else {
            std::fs::read_to_string(f).with_context(|| format!("reading {f}"))?
        };
        sources.push(shoal_compose::Source::new(f.clone(), text));
    }
    let cwd = std::env::current_dir().context("the current directory")?;
    let dir = shoal_compose::working_dir_for(files.first().map_or("-", String::as_str), &cwd);
    let env: HashMap<String, String> = std::env::vars().collect();
    Ok(shoal_compose::load(&sources, &dir, &env)?)
}

pub async fn run(host: &str, a: DeployArgs) -> anyhow::Result<()> {
    if a.detach.is_none() {
        // docker 28's words, first, when --detach is not given.
        eprintln!(
            "Since --detach=false was not specified, tasks will be created in the background.\n\
             In a future release, --detach=false will become the default."
        );
    }
    let namespace = a.stack.clone();
    // docker's only check of the name; the managers check the names made
    // from it.
    if namespace.trim().is_empty() {
        bail!("invalid stack name: {namespace:?}");
    }
    let loaded = load(&a.compose_file)?;
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    // The whole stack is converted (and every file it names read) before
    // the first object is made.
    let mut plan = convert::plan(&namespace, &loaded.config)?;
    for w in &plan.warnings {
        eprintln!("{w}");
    }
    if a.with_registry_auth {
        for s in &mut plan.services {
            if let Some(c) = s.request.container.as_mut() {
                c.registry_auth = registry_auth::for_image(&c.image)?;
            }
        }
    }
    let mut d = client::connect(host).await?;
    check_external(&mut d, &plan).await?;
    apply(&mut d, &plan, a.prune).await?;
    if a.detach != Some(false) {
        return Ok(());
    }
    for s in &plan.services {
        progress::follow(&mut d, &s.request.name, &s.request.name, a.quiet).await?;
    }
    Ok(())
}

/// What the file declares `external` must exist, as docker checks before
/// creating anything.
async fn check_external(d: &mut client::Daemon, plan: &Plan) -> anyhow::Result<()> {
    let host = d.host.clone();
    let networks = client::call(&host, d.control.list_networks(ListNetworksRequest {}))
        .await?
        .networks;
    for n in &plan.external_networks {
        if !networks.iter().any(|x| x.name == *n || x.id == *n) {
            bail!(
                "network {n:?} is declared as external, but could not be found. You need to \
                 create a swarm-scoped network before the stack is deployed"
            );
        }
    }
    let secrets = client::call(&host, d.control.list_secrets(ListSecretsRequest {}))
        .await?
        .secrets;
    for s in &plan.external_secrets {
        if !secrets.iter().any(|x| x.name == *s) {
            bail!("secret not found: {s}");
        }
    }
    let configs = client::call(&host, d.control.list_configs(ListConfigsRequest {}))
        .await?
        .configs;
    for c in &plan.external_configs {
        if !configs.iter().any(|x| x.name == *c) {
            bail!("config not found: {c}");
        }
    }
    Ok(())
}

async fn apply(d: &mut client::Daemon, plan: &Plan, prune: bool) -> anyhow::Result<()> {
    let host = d.host.clone();
    let ns = plan.namespace.as_str();
    let networks = client::call(&host, d.control.list_networks(ListNetworksRequest {}))
        .await?
        .networks;
    for n in &plan.networks {
        if networks.iter().any(|x| x.name == n.name) {
            continue;
        }
        println!("Creating network {}", n.name);
        client::call(&host, d.control.create_network(n.clone())).await?;
    }
    let secrets = client::call(&host, d.control.list_secrets(ListSecretsRequest {}))
        .await?
        .secrets;
    for s in &plan.secrets {
        match secrets.iter().find(|x| x.name == s.name) {
            // Stored secrets cannot be read back: a changed payload under
            // the same name is refused by the managers, as swarm refuses
            // it; an unchanged one is left alone.
            Some(x) if x.size == s.data.len() as u64 => {}
            Some(_) => bail!(
                "secret {}: its file changed, and a secret's data cannot be updated; give it \
                 a new name in the compose file (e.g. with a version suffix) and deploy again",
                s.name
            ),
            None => {
                println!("Creating secret {}", s.name);
                client::call(&host, d.control.create_secret(s.clone())).await?;
            }
        }
    }
    let configs = client::call(&host, d.control.list_configs(ListConfigsRequest {}))
        .await?
        .configs;
    for c in &plan.configs {
        match configs.iter().find(|x| x.name == c.name) {
            Some(x) if x.data == c.data && x.template_driver == c.template_driver => {}
            Some(_) => bail!(
                "config {}: its file changed, and a config's data cannot be updated; give it \
                 a new name in the compose file and deploy again",
                c.name
            ),
            None => {
                println!("Creating config {}", c.name);
                client::call(&host, d.control.create_config(c.clone())).await?;
            }
        }
    }
    let existing: Vec<_> = client::call(&host, d.control.list_services(ListServicesRequest {}))
        .await?
        .services
        .into_iter()
        .filter(|s| in_stack(&s.labels, ns))
        .collect();
    if prune {
        for s in existing
            .iter()
            .filter(|s| !plan.services.iter().any(|p| p.request.name == s.name))
        {
            println!("Removing service {}", s.name);
            let r = d.control.remove_service(ServiceRef {
                service: s.id.clone(),
            });
            client::call(&host, r).await?;
        }
    }
    for s in &plan.services {
        match existing.iter().find(|x| x.name == s.request.name) {
            Some(x) => {
                println!("Updating service {} (id: {})", x.name, x.id);
                let r = d.control.update_service(UpdateServiceRequest {
                    service: x.id.clone(),
                    version: x.version,
                    spec: Some(s.request.clone()),
                    ..Default::default()
                });
                let done = client::call(&host, r).await?;
                for w in &done.warnings {
                    eprint!("{w}");
                }
            }
            None => {
                println!("Creating service {}", s.request.name);
                let done = client::call(&host, d.control.create_service(s.request.clone())).await?;
                for w in &done.warnings {
                    eprint!("{w}");
                }
            }
        }
    }
    Ok(())
}
