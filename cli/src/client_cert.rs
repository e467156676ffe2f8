//! `shoal swarm ca --issue-client-cert --out DIR`: an operator's client
//! certificate for `--host tcp://MANAGER:2377`. The key is made here and
//! never leaves this machine; the manager signs its CSR (as a node's).

use std::{
    fs::{DirBuilder, OpenOptions},
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::Path,
};

use anyhow::{Context, bail};
use shoal_api::cluster::v1::IssueClientCertRequest;
use shoal_ca::NodeKey;

use crate::client;

/// Issues a client certificate named `name` (empty: the manager picks one)
/// into `out` as docker lays out a cert path: ca.pem, cert.pem, key.pem.
pub async fn issue(host: &str, out: &Path, name: &str) -> anyhow::Result<()> {
    let files = ["ca.pem", "cert.pem", "key.pem"].map(|f| out.join(f));
    // Before asking anything: an existing key is someone's credential.
    if let Some(existing) = files.iter().find(|f| f.exists()) {
        bail!(
            "--out {}: {} exists already; give an empty or new directory",
            out.display(),
            existing.display()
        );
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(out)
        .with_context(|| format!("--out {}: cannot create it", out.display()))?;
    let key = NodeKey::generate().context("generating the client key")?;
    let csr = key.csr().context("making the certificate request")?;
    let mut d = client::connect(host).await?;
    let req = IssueClientCertRequest {
        csr_pem: csr.into_string(),
        name: name.to_owned(),
    };
    let r = client::call(host, d.control.issue_client_cert(req)).await?;
    let [ca, cert, key_file] = &files;
    write_new(key_file, key.to_pem().as_bytes(), 0o600)?;
    write_new(cert, r.cert_pem.as_bytes(), 0o644)?;
    write_new(ca, r.ca_pem.as_bytes(), 0o644)?;
    println!(
        "Client certificate {name:?} written to {dir} (ca.pem, cert.pem, key.pem; the key is \
         0600).\nIt reaches the cluster verbs of any manager:\n\n    \
         SHOAL_CERT_PATH={dir} shoal --host tcp://MANAGER:2377 service ls\n",
        name = r.name,
        dir = out.display()
    );
    Ok(())
}

/// Writes a file that must not exist yet, created with `mode`.
fn write_new(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(data))
        .with_context(|| format!("writing {}", path.display()))
}
