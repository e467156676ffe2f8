//! The swarm's PKI across real nodes: `swarm ca --rotate` moving every node
//! to a new root while they keep talking, short-lived certificates renewed
//! before they expire, `swarm update`, an unlock key typed without echo, and
//! a removed node told so by its own `shoal info`. Needs root and built
//! `shoald`/`shoal`.

use std::{
    io::{Read, Write},
    os::fd::AsFd,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use serde_json::Value;
use shoal_lab::{Lab, eventually, shoal_path};

const HEARTBEAT: &str = "1s";
const PEM_START: &str = "-----BEGIN CERTIFICATE-----";

fn token(lab: &Lab, k: usize, role: &str) -> anyhow::Result<String> {
    Ok(lab.join_token(k, role)?)
}

fn swarm_file(lab: &Lab, k: usize, name: &str) -> PathBuf {
    lab.node(k).state_dir().join("swarm").join(name)
}

fn read(lab: &Lab, k: usize, name: &str) -> anyhow::Result<String> {
    let p = swarm_file(lab, k, name);
    std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
}

/// n1 inits with `init_flags`; then each of `joins` joins with its role.
fn form(lab: &Lab, init_flags: &[&str], joins: &[(usize, &str)]) -> anyhow::Result<()> {
    let mut args = vec!["swarm", "init", "--dispatcher-heartbeat", HEARTBEAT];
    args.extend_from_slice(init_flags);
    lab.shoal(1, &args)?;
    let n1 = lab.cluster_addr(1);
    for (k, role) in joins {
        let out = lab.shoal(
            *k,
            &["swarm", "join", "--token", &token(lab, 1, role)?, &n1],
        )?;
        ensure!(out.contains(&format!("as a {role}")), "n{k}: {out}");
    }
    Ok(())
}

/// Hostnames of the nodes `node ls` on `k` shows ready.
fn ready(lab: &Lab, k: usize) -> anyhow::Result<Vec<String>> {
    let out = lab.shoal(k, &["node", "ls", "--format", "json"])?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("node ls: {out}"))?;
    let mut names: Vec<String> = v
        .as_array()
        .context("node ls: not an array")?
        .iter()
        .filter(|n| {
            n["status"]
                .as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case("ready"))
        })
        .filter_map(|n| n["hostname"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

fn cert_blocks(pem: &str) -> usize {
    pem.matches(PEM_START).count()
}

#[tokio::test]
async fn ca_rotation_moves_every_node_to_the_new_root() -> anyhow::Result<()> {
    let lab = Lab::builder("carot").nodes(4).start().await?;
    form(&lab, &[], &[(2, "manager"), (3, "worker")])?;
    let old = lab.shoal(1, &["swarm", "ca"])?;
    ensure!(
        old.starts_with(PEM_START) && cert_blocks(&old) == 1,
        "{old}"
    );
    for k in 1..=3 {
        ensure!(read(&lab, k, "ca.pem")? == old, "n{k} trusts another root");
    }
    let old_token = token(&lab, 1, "worker")?;

    // Waits until done, with docker's progress lines, then prints the new root.
    let t = Instant::now();
    let out = lab.shoal(1, &["swarm", "ca", "--rotate"])?;
    eprintln!("rotation converged in {:?}:\n{out}", t.elapsed());
    ensure!(
        out.contains("rotated TLS certificates: 3/3 nodes")
            && out.contains("rotated CA certificates:  1/1"),
        "{out}"
    );
    let new = out
        .find(PEM_START)
        .map(|i| out[i..].to_owned())
        .context("no root CA printed")?;
    ensure!(new != old && cert_blocks(&new) == 1, "{out}");
    ensure!(lab.shoal(2, &["swarm", "ca"])? == new);

    // Every node ends trusting the new root only, with a certificate it
    // signed directly (no cross-signed root any more).
    eventually(
        Duration::from_secs(15),
        "every node on the new root",
        || {
            for k in 1..=3 {
                if read(&lab, k, "ca.pem")? != new || cert_blocks(&read(&lab, k, "cert.pem")?) != 1
                {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
    .await?;
    // They kept their sessions through it: all still ready, on both managers.
    let all = ["n1", "n2", "n3"].map(str::to_owned).to_vec();
    for k in [1, 2] {
        eventually(Duration::from_secs(10), "all nodes ready", || {
            Ok((ready(&lab, k)? == all).then_some(()))
        })
        .await?;
    }

    // Join tokens now pin the new root: the old one is refused, the new works.
    let new_token = token(&lab, 1, "worker")?;
    ensure!(
        new_token != old_token,
        "join token did not move to the new root"
    );
    let n1 = lab.cluster_addr(1);
    lab.shoal_refused(4, &["swarm", "join", "--token", &old_token, &n1])?;
    let out = lab.shoal(4, &["swarm", "join", "--token", &new_token, &n1])?;
    ensure!(out.contains("as a worker"), "{out}");
    ensure!(read(&lab, 4, "ca.pem")? == new);

    // --detach returns at once; the rotation still converges.
    let t = Instant::now();
    let out = lab.shoal(1, &["swarm", "ca", "--rotate", "--detach"])?;
    ensure!(out.is_empty(), "--detach printed {out:?}");
    eventually(
        Duration::from_secs(20),
        "the detached rotation ends",
        || {
            let ca = lab.shoal(2, &["swarm", "ca"])?;
            Ok((ca != new && read(&lab, 4, "ca.pem")? == ca).then_some(()))
        },
    )
    .await?;
    eprintln!("detached rotation converged in {:?}", t.elapsed());
    Ok(())
}

#[tokio::test]
async fn short_lived_certificates_are_renewed_before_they_expire() -> anyhow::Result<()> {
    let lab = Lab::builder("renew").nodes(2).start().await?;
    let e = lab.shoal_refused(1, &["swarm", "init", "--cert-expiry", "20s"])?;
    ensure!(e.contains("--cert-expiry 20s: must be at least 30s"), "{e}");
    let t0 = Instant::now();
    form(&lab, &["--cert-expiry", "30s"], &[(2, "worker")])?;
    let first = [read(&lab, 1, "cert.pem")?, read(&lab, 2, "cert.pem")?];

    // Renewed at three quarters of 30 s (a little earlier with jitter).
    eventually(Duration::from_secs(35), "both nodes renew", || {
        Ok(
            (read(&lab, 1, "cert.pem")? != first[0] && read(&lab, 2, "cert.pem")? != first[1])
                .then_some(()),
        )
    })
    .await?;
    let renewed = t0.elapsed();
    eprintln!("both renewed {renewed:?} after init");
    ensure!(
        renewed >= Duration::from_secs(15),
        "renewed too early: {renewed:?}"
    );

    // Past the first certificates' expiry both still talk.
    eventually(Duration::from_secs(20), "both ready after expiry", || {
        Ok((t0.elapsed() > Duration::from_secs(32)
            && ready(&lab, 1)? == ["n1", "n2"]
            && lab.shoal(2, &["info"])?.contains("Swarm: active"))
        .then_some(()))
    })
    .await?;
    let detail = lab.shoal(1, &["node", "inspect", "n2", "--format", "json"])?;
    let v: Value = serde_json::from_str(&detail)?;
    let not_after = v[0]["cert_not_after_unix"].as_u64().unwrap_or_default();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    ensure!(
        not_after > now.as_secs(),
        "n2's reported certificate: {detail}"
    );
    Ok(())
}

/// `shoal swarm unlock` on node `k` with its stdin on a pseudo-terminal:
/// returns what the terminal showed, after checking echo was off while the
/// key was typed and is back on afterwards.
fn unlock_on_a_terminal(lab: &Lab, k: usize, key: &str) -> anyhow::Result<String> {
    use nix::sys::termios::{LocalFlags, tcgetattr};
    let pty = nix::pty::openpty(None, None)?;
    let child = lab
        .command(k, shoal_path()?)
        .args(["swarm", "unlock"])
        .stdin(Stdio::from(pty.slave.try_clone()?))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let echo = || -> anyhow::Result<bool> {
        Ok(tcgetattr(pty.slave.as_fd())?
            .local_flags
            .contains(LocalFlags::ECHO))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while echo()? {
        ensure!(Instant::now() < deadline, "shoal never turned echo off");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut master = std::fs::File::from(pty.master);
    master.write_all(format!("{key}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "unlock failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(echo()?, "echo is still off after shoal exited");
    // What the terminal shows: read without blocking.
    nix::fcntl::fcntl(
        master.as_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    let mut shown = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        shown.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&shown).into_owned())
}

#[tokio::test]
async fn swarm_update_autolock_and_a_removed_node() -> anyhow::Result<()> {
    let lab = Lab::builder("swupd").nodes(2).start().await?;
    form(&lab, &[], &[(2, "worker")])?;

    let e = lab.shoal_refused(1, &["swarm", "update", "--cert-expiry", "10s"])?;
    ensure!(e.contains("--cert-expiry 10s: must be at least 30s"), "{e}");
    let out = lab.shoal(
        1,
        &[
            "swarm",
            "update",
            "--dispatcher-heartbeat",
            "2s",
            "--cert-expiry",
            "48h",
        ],
    )?;
    ensure!(out.trim() == "Swarm updated.", "{out}");

    // Autolock on: the key is printed once, and n1 seals its keys under it.
    let out = lab.shoal(1, &["swarm", "update", "--autolock=true"])?;
    let key = out
        .split_whitespace()
        .find(|w| w.starts_with("SWMKEY-1-"))
        .with_context(|| format!("no unlock key in {out:?}"))?
        .to_owned();
    ensure!(out.contains("shoal swarm unlock"), "{out}");
    ensure!(lab.shoal(1, &["swarm", "unlock-key", "-q"])?.trim() == key);
    eventually(Duration::from_secs(10), "n1 seals its keys", || {
        Ok((!swarm_file(&lab, 1, "store.key").exists()
            && swarm_file(&lab, 1, "key.sealed").exists())
        .then_some(()))
    })
    .await?;
    lab.stop(1).await?;
    lab.start(1).await?;
    ensure!(lab.shoal(1, &["info"])?.contains("Swarm: locked"));
    // Typed at a terminal, the key is not echoed.
    let shown = unlock_on_a_terminal(&lab, 1, &key)?;
    ensure!(!shown.contains("SWMKEY"), "the key was echoed: {shown:?}");
    eventually(Duration::from_secs(15), "n1 serves after unlock", || {
        Ok(lab
            .shoal_output(1, &["node", "ls"], b"")?
            .status
            .success()
            .then_some(()))
    })
    .await?;

    // Autolock off: the keys are back on disk and no unlock key remains.
    let out = lab.shoal(1, &["swarm", "update", "--autolock=false"])?;
    ensure!(out.trim() == "Swarm updated.", "{out}");
    eventually(Duration::from_secs(10), "n1 unseals its keys", || {
        Ok((swarm_file(&lab, 1, "store.key").exists()
            && !swarm_file(&lab, 1, "key.sealed").exists())
        .then_some(()))
    })
    .await?;
    let e = lab.shoal_refused(1, &["swarm", "unlock-key"])?;
    ensure!(e.contains("no unlock key is set"), "{e}");

    // A removed node learns it from the managers' refusal.
    lab.shoal(1, &["node", "rm", "--force", "n2"])?;
    let info = eventually(Duration::from_secs(15), "n2 reports its removal", || {
        let info = lab.shoal(2, &["info"])?;
        Ok(info.contains("removed from the swarm").then_some(info))
    })
    .await
    .with_context(|| shoal_lab::log_tail(lab.node(2).log(), 30))?;
    ensure!(
        info.contains("Swarm: error") && info.contains("shoal swarm leave --force"),
        "{info}"
    );
    lab.shoal(2, &["swarm", "leave", "--force"])?;
    ensure!(lab.shoal(2, &["info"])?.contains("Swarm: inactive"));
    Ok(())
}
