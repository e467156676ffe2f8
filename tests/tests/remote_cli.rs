//! `shoal --host tcp://MANAGER:2377` with certificate files: a manager's
//! certificate works from another machine; a worker's is refused; missing
//! files and node-only verbs get errors that say what to do.

use anyhow::ensure;
use shoal_lab::{Formation, Lab, shoal_path};

#[tokio::test]
async fn a_manager_certificate_drives_the_cluster_from_elsewhere() -> anyhow::Result<()> {
    let lab = Lab::builder("rcli").nodes(2).start().await?;
    lab.form_swarm_of(Formation::plain(1, 2))?;

    let host = format!("tcp://{}", lab.node(1).addr());
    let files = |k: usize| {
        let dir = lab.node(k).state_dir().join("swarm");
        [
            dir.join("ca.pem").display().to_string(),
            dir.join("cert.pem").display().to_string(),
            dir.join("key.pem").display().to_string(),
        ]
    };
    // Run from n2's namespace: another machine, as far as the network goes.
    let remote = |k: usize, args: &[&str]| -> anyhow::Result<std::process::Output> {
        let [ca, cert, key] = files(k);
        Ok(lab
            .command(2, shoal_path()?)
            .args([
                "--host",
                &host,
                "--tlscacert",
                &ca,
                "--tlscert",
                &cert,
                "--tlskey",
                &key,
            ])
            .args(args)
            .output()?)
    };

    let out = remote(1, &["node", "ls"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && text.contains("n1") && text.contains("n2"),
        "node ls over tcp:// with n1's certificate: {out:?}"
    );
    let out = remote(1, &["network", "create", "remote-net"])?;
    ensure!(out.status.success(), "{out:?}");
    ensure!(lab.shoal(1, &["network", "ls"])?.contains("remote-net"));

    // A worker's certificate is not enough.
    let out = remote(2, &["node", "ls"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("manager certificate"),
        "{out:?}"
    );
    // Node verbs are the node's own.
    let out = remote(1, &["info"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("acts on a node itself"),
        "{out:?}"
    );
    // A missing file is named with its flag.
    let out = lab
        .command(2, shoal_path()?)
        .args([
            "--host",
            &host,
            "--tlscert",
            "/nonexistent/cert.pem",
            "node",
            "ls",
        ])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("--tlscert /nonexistent/cert.pem"),
        "{out:?}"
    );
    Ok(())
}
