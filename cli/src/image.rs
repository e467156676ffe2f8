//! `shoal image …`: docker's image verbs against this node's image store.
//! An image loaded here is registered with the cluster, and other nodes
//! fetch its blobs from this one when a task needs it.

use std::io::Read;

use anyhow::Context;
use clap::Subcommand;
use serde::Serialize;
use shoal_api::node::v1::{
    ImageDetail, ImageListRequest, ImageLoadChunk, ImageRef, ImageRemoveRequest, ImageTagRequest,
};

use crate::{
    client::{self, finish},
    output::{Format, ListFlags, table},
};

/// Chunk size of a streamed archive: well under gRPC's 4 MiB message limit.
const CHUNK: usize = 1 << 20;

#[derive(Subcommand)]
pub enum ImageCmd {
    /// Load images from a `docker save` archive or an OCI image-layout tar.
    Load {
        /// Read from this file instead of standard input.
        #[arg(long, short)]
        input: Option<std::path::PathBuf>,
        /// Print only the loaded references.
        #[arg(long, short)]
        quiet: bool,
    },
    /// List the images on this node.
    #[command(alias = "list")]
    Ls(ListFlags),
    /// Display detailed information on one or more images.
    Inspect {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove one or more images from this node (refused while a task uses it).
    #[command(alias = "remove", alias = "rmi")]
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE.
    Tag { source: String, target: String },
}

pub async fn run(host: &str, cmd: ImageCmd) -> anyhow::Result<()> {
    match cmd {
        ImageCmd::Load { input, quiet } => {
            let reader: Box<dyn Read + Send> = match &input {
                Some(path) => Box::new(
                    std::fs::File::open(path)
                        .with_context(|| format!("opening {}", path.display()))?,
                ),
                None => Box::new(std::io::stdin()),
            };
            let mut d = client::connect(host).await?;
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            // stdin and files block: read on a thread, send as it goes.
            let reading = tokio::task::spawn_blocking(move || read_chunks(reader, tx));
            let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
            let reply = client::call(host, d.node.image_load(stream)).await;
            reading.await.context("reading the archive")??;
            for image in reply?.loaded {
                let names = if image.references.is_empty() {
                    vec![format!("ID: {}", image.id)]
                } else {
                    image.references.iter().map(|r| familiar(r)).collect()
                };
                for name in names {
                    if quiet {
                        println!("{name}");
                    } else {
                        println!("Loaded image: {name}");
                    }
                }
            }
            Ok(())
        }
        ImageCmd::Ls(ListFlags { quiet, format }) => {
            let mut d = client::connect(host).await?;
            let images = client::call(host, d.node.image_list(ImageListRequest {}))
                .await?
                .images;
            list(&images, quiet, format)
        }
        ImageCmd::Inspect { images } => {
            let mut d = client::connect(host).await?;
            let mut found = Vec::new();
            let mut failed = Vec::new();
            for image in images {
                match client::call(host, d.node.image_inspect(ImageRef { image })).await {
                    Ok(detail) => found.push(inspect_json(&detail)?),
                    Err(e) => failed.push(e),
                }
            }
            println!("{}", serde_json::to_string_pretty(&found)?);
            finish(failed)
        }
        ImageCmd::Rm { images } => {
            let mut d = client::connect(host).await?;
            let mut failed = Vec::new();
            for image in images {
                match client::call(host, d.node.image_remove(ImageRemoveRequest { image })).await {
                    Ok(r) => {
                        r.untagged
                            .iter()
                            .for_each(|u| println!("Untagged: {}", familiar(u)));
                        r.deleted.iter().for_each(|d| println!("Deleted: {d}"));
                    }
                    Err(e) => failed.push(e),
                }
            }
            finish(failed)
        }
        ImageCmd::Tag { source, target } => {
            let mut d = client::connect(host).await?;
            client::call(host, d.node.image_tag(ImageTagRequest { source, target })).await?;
            Ok(())
        }
    }
}

fn read_chunks(
    mut reader: Box<dyn Read + Send>,
    tx: tokio::sync::mpsc::Sender<ImageLoadChunk>,
) -> anyhow::Result<()> {
    loop {
        let mut data = vec![0; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            match reader.read(&mut data[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("reading the archive"),
            }
        }
        if filled == 0 {
            return Ok(());
        }
        data.truncate(filled);
        // The daemon refused and hung up: its error is the one to show.
        if tx.blocking_send(ImageLoadChunk { data }).is_err() {
            return Ok(());
        }
    }
}

/// Docker's short form of a full reference: `docker.io/library/busybox:1`
/// → `busybox:1`, `docker.io/me/app:1` → `me/app:1`.
pub fn familiar(reference: &str) -> String {
    let rest = reference.strip_prefix("docker.io/").unwrap_or(reference);
    if rest.len() == reference.len() {
        return reference.to_owned();
    }
    rest.strip_prefix("library/").unwrap_or(rest).to_owned()
}

/// Splits a reference into docker's REPOSITORY and TAG columns.
fn repo_tag(reference: &str) -> (String, String) {
    let short = familiar(reference);
    if let Some((repo, digest)) = short.split_once('@') {
        return (repo.to_owned(), format!("@{digest}"));
    }
    // A ':' after the last '/' separates the tag (a registry port comes before it).
    let slash = short.rfind('/').map_or(0, |i| i + 1);
    match short[slash..].rfind(':') {
        Some(i) => (
            short[..slash + i].to_owned(),
            short[slash + i + 1..].to_owned(),
        ),
        None => (short, "<none>".to_owned()),
    }
}

/// docker's short IMAGE ID: 12 hex digits of the config digest.
fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

/// Sizes as docker prints them (decimal units).
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes}B");
    }
    let mut v = bytes as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if v < 10.0 {
        format!("{v:.2}{}", UNITS[unit])
    } else if v < 100.0 {
        format!("{v:.1}{}", UNITS[unit])
    } else {
        format!("{v:.0}{}", UNITS[unit])
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListJson<'a> {
    repository: String,
    tag: String,
    #[serde(rename = "ID")]
    id: &'a str,
    digest: &'a str,
    created_at: &'a str,
    size: u64,
}

fn list(images: &[ImageDetail], quiet: bool, format: Format) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for image in images {
        if image.references.is_empty() {
            rows.push(("<none>".to_owned(), "<none>".to_owned(), image));
        }
        for r in &image.references {
            let (repo, tag) = repo_tag(r);
            rows.push((repo, tag, image));
        }
    }
    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    if quiet {
        let mut seen = std::collections::BTreeSet::new();
        for (_, _, image) in &rows {
            if seen.insert(&image.id) {
                println!("{}", short_id(&image.id));
            }
        }
        return Ok(());
    }
    match format {
        Format::Json => {
            let v: Vec<_> = rows
                .iter()
                .map(|(repo, tag, i)| ListJson {
                    repository: repo.clone(),
                    tag: tag.clone(),
                    id: &i.id,
                    digest: &i.manifest_digest,
                    created_at: &i.created,
                    size: i.size,
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Table => {
            let mut t = table(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]);
            for (repo, tag, i) in &rows {
                t.add_row(vec![
                    repo.clone(),
                    tag.clone(),
                    short_id(&i.id).to_owned(),
                    if i.created.is_empty() {
                        "N/A".to_owned()
                    } else {
                        i.created.clone()
                    },
                    human_size(i.size),
                ]);
            }
            println!("{t}");
        }
    }
    Ok(())
}

/// `docker image inspect`'s shape for what Shoal knows of an image.
fn inspect_json(i: &ImageDetail) -> anyhow::Result<serde_json::Value> {
    let config: serde_json::Value = if i.config_json.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&i.config_json).context("the image's config is not JSON")?
    };
    let repo_digests: Vec<String> = i
        .references
        .iter()
        .map(|r| format!("{}@{}", repo_tag(r).0, i.manifest_digest))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok(serde_json::json!({
        "Id": i.id,
        "RepoTags": i.references.iter().map(|r| familiar(r)).collect::<Vec<_>>(),
        "RepoDigests": repo_digests,
        "Created": i.created,
        "Os": i.os,
        "Architecture": i.architecture,
        "Size": i.size,
        "Config": config.get("config").cloned().unwrap_or(serde_json::Value::Null),
        "RootFS": config.get("rootfs").cloned().unwrap_or(serde_json::Value::Null),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn familiar_names_as_docker_prints_them() {
        for (full, short) in [
            ("docker.io/library/busybox:latest", "busybox:latest"),
            ("docker.io/me/app:1", "me/app:1"),
            ("reg.local:5000/a/b:2", "reg.local:5000/a/b:2"),
            (
                "shoal.local/lab-tools:latest",
                "shoal.local/lab-tools:latest",
            ),
        ] {
            assert_eq!(familiar(full), short, "{full}");
        }
    }

    #[test]
    fn repository_and_tag_columns() {
        for (full, repo, tag) in [
            ("docker.io/library/busybox:latest", "busybox", "latest"),
            ("reg.local:5000/a/b:2", "reg.local:5000/a/b", "2"),
            ("reg.local:5000/a/b", "reg.local:5000/a/b", "<none>"),
            (
                "docker.io/library/redis@sha256:abcd",
                "redis",
                "@sha256:abcd",
            ),
        ] {
            assert_eq!(repo_tag(full), (repo.to_owned(), tag.to_owned()), "{full}");
        }
    }

    #[test]
    fn sizes_in_docker_units() {
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_234), "1.23kB");
        assert_eq!(human_size(4_400_000), "4.40MB");
        assert_eq!(human_size(52_000_000), "52.0MB");
        assert_eq!(human_size(523_000_000), "523MB");
    }
}
