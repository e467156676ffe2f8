//! `shoal volume …`: docker's volume verbs for this node's named volumes
//! (the `local` driver: a directory on the node, kept until removed).

use clap::Subcommand;
use serde::Serialize;
use shoal_api::node::v1::{VolumeDetail, VolumeListRequest, VolumeRef};

use crate::{
    client::{self, finish},
    output::{Format, ListFlags, table},
};

#[derive(Subcommand)]
pub enum VolumeCmd {
    /// Create a volume on this node.
    Create { name: String },
    /// List the volumes on this node.
    #[command(alias = "list")]
    Ls(ListFlags),
    /// Display detailed information on one or more volumes.
    Inspect {
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove one or more volumes (refused while a task on this node uses it).
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        volumes: Vec<String>,
    },
}

/// `docker volume inspect`'s field names.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct VolumeJson<'a> {
    name: &'a str,
    driver: &'a str,
    mountpoint: &'a str,
    created_at: &'a str,
    scope: &'static str,
    in_use: u32,
}

fn json(v: &VolumeDetail) -> VolumeJson<'_> {
    VolumeJson {
        name: &v.name,
        driver: &v.driver,
        mountpoint: &v.mountpoint,
        created_at: &v.created_at,
        scope: "local",
        in_use: v.in_use,
    }
}

pub async fn run(host: &str, cmd: VolumeCmd) -> anyhow::Result<()> {
    let mut d = client::connect(host).await?;
    match cmd {
        VolumeCmd::Create { name } => {
            let v = client::call(host, d.node.volume_create(VolumeRef { name })).await?;
            println!("{}", v.name);
            Ok(())
        }
        VolumeCmd::Ls(ListFlags { quiet, format }) => {
            let all = client::call(host, d.node.volume_list(VolumeListRequest {}))
                .await?
                .volumes;
            if quiet {
                all.iter().for_each(|v| println!("{}", v.name));
                return Ok(());
            }
            match format {
                Format::Json => {
                    let v: Vec<_> = all.iter().map(json).collect();
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                Format::Table => {
                    let mut t = table(&["DRIVER", "VOLUME NAME"]);
                    for v in &all {
                        t.add_row(vec![v.driver.clone(), v.name.clone()]);
                    }
                    println!("{t}");
                }
            }
            Ok(())
        }
        VolumeCmd::Inspect { volumes } => {
            let mut found = Vec::new();
            let mut failed = Vec::new();
            for name in volumes {
                match client::call(host, d.node.volume_inspect(VolumeRef { name })).await {
                    Ok(v) => found.push(v),
                    Err(e) => failed.push(e),
                }
            }
            let v: Vec<_> = found.iter().map(json).collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
            finish(failed)
        }
        VolumeCmd::Rm { volumes } => {
            let mut failed = Vec::new();
            for name in volumes {
                match client::call(host, d.node.volume_remove(VolumeRef { name: name.clone() }))
                    .await
                {
                    Ok(_) => println!("{name}"),
                    Err(e) => failed.push(e),
                }
            }
            finish(failed)
        }
    }
}
