//! `shoal secret …`: docker's secret verbs. The payload is read from a file
//! or stdin and sent once; no command ever prints it back.

use std::{collections::HashMap, io::Read};

use anyhow::Context;
use clap::Subcommand;
use serde::Serialize;
use shoal_api::cluster::v1::{CreateSecretRequest, ListSecretsRequest, SecretRef, SecretSummary};

use crate::{
    client::{self, finish},
    output::{ListFlags, stored_objects},
    parse::{FlagError, parse_label},
};

#[derive(Subcommand)]
pub enum SecretCmd {
    /// Create a secret from a file or STDIN as content.
    Create {
        /// Secret labels (key=value).
        #[arg(long, short)]
        label: Vec<String>,
        name: String,
        /// File with the secret's content, or - for standard input.
        file: String,
    },
    /// List secrets.
    #[command(alias = "list")]
    Ls(ListFlags),
    /// Display detailed information on one or more secrets (never their content).
    Inspect {
        #[arg(required = true)]
        secrets: Vec<String>,
    },
    /// Remove one or more secrets.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        secrets: Vec<String>,
    },
}

#[derive(Serialize)]
struct SecretJson<'a> {
    id: &'a str,
    name: &'a str,
    labels: std::collections::BTreeMap<&'a str, &'a str>,
    version: u64,
    size: u64,
}

fn json(s: &SecretSummary) -> SecretJson<'_> {
    SecretJson {
        id: &s.id,
        name: &s.name,
        labels: s
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        version: s.version,
        size: s.size,
    }
}

/// The content of `file`, or of standard input for `-`; `what` names it
/// in errors ("secret", "config").
pub fn read_content(what: &str, file: &str) -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::new();
    if file == "-" {
        std::io::stdin()
            .read_to_end(&mut data)
            .with_context(|| format!("reading the {what} from standard input"))?;
    } else {
        data = std::fs::read(file).with_context(|| format!("reading the {what} from {file}"))?;
    }
    Ok(data)
}

pub async fn run(host: &str, cmd: SecretCmd) -> anyhow::Result<()> {
    match cmd {
        SecretCmd::Create { label, name, file } => {
            let mut labels = HashMap::new();
            for l in &label {
                let (k, v) = parse_label(l).map_err(|e| FlagError::new("--label", l, e))?;
                labels.insert(k, v);
            }
            let data = read_content("secret", &file)?;
            let mut d = client::connect(host).await?;
            let s = client::call(
                host,
                d.control
                    .create_secret(CreateSecretRequest { name, labels, data }),
            )
            .await?;
            println!("{}", s.id);
            Ok(())
        }
        SecretCmd::Ls(flags) => {
            let mut d = client::connect(host).await?;
            let all = client::call(host, d.control.list_secrets(ListSecretsRequest {}))
                .await?
                .secrets;
            stored_objects(
                all,
                flags,
                |o| (&o.id, &o.name, o.size),
                |o| serde_json::json!(json(o)),
            )
        }
        SecretCmd::Inspect { secrets } => {
            let d = client::connect(host).await?;
            let inspect = |mut c: client::Control, secret| async move {
                c.inspect_secret(SecretRef { secret }).await
            };
            let (found, failed) = client::each_named(&d, secrets, inspect).await;
            let v: Vec<_> = found.iter().map(|(_, x)| json(x)).collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
            finish(failed)
        }
        SecretCmd::Rm { secrets } => {
            let d = client::connect(host).await?;
            let remove = |mut c: client::Control, secret| async move {
                c.remove_secret(SecretRef { secret }).await
            };
            client::remove_named(&d, secrets, remove).await
        }
    }
}
