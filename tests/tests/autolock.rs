//! Swarm autolock across real nodes: `swarm init --autolock`, a restarted
//! manager that stays locked until `swarm unlock` gets the right key, a
//! joining manager and a rotation followed by every manager, and no key
//! left on disk. Needs root and built `shoald`/`shoal`.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use shoal_lab::{Lab, eventually};

const LOCKED: &str = "Swarm is encrypted and needs to be unlocked before it can be used. \
                      Please use \"shoal swarm unlock\" to unlock it.";

/// The `SWMKEY-1-…` word in a command's output.
fn key_in(out: &str) -> anyhow::Result<String> {
    out.split_whitespace()
        .find(|w| w.starts_with("SWMKEY-1-"))
        .map(str::to_owned)
        .with_context(|| format!("no unlock key in {out:?}"))
}

/// The key's 32 bytes (unpadded standard base64 after the prefix): the KEK
/// itself, which must not be on disk either.
fn key_bytes(key: &str) -> anyhow::Result<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let body = key.strip_prefix("SWMKEY-1-").context("no prefix")?;
    let (mut acc, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for c in body.bytes() {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c)
            .with_context(|| format!("{c:?} is not base64"))?;
        acc = (acc << 6) | u32::try_from(v)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff)?);
        }
    }
    ensure!(out.len() == 32, "{} bytes", out.len());
    Ok(out)
}

fn swarm_file(lab: &Lab, k: usize, name: &str) -> PathBuf {
    lab.node(k).state_dir().join("swarm").join(name)
}

/// `shoal swarm unlock` on node `k` with `key` piped in: Ok(stderr) when
/// refused, Err when it unlocked.
fn unlock_refused(lab: &Lab, k: usize, key: &str) -> anyhow::Result<String> {
    let out = lab.shoal_output(k, &["swarm", "unlock"], format!("{key}\n").as_bytes())?;
    ensure!(
        !out.status.success(),
        "n{k} unlocked with a key it must refuse"
    );
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Whether a TCP connection to node `k`'s 2377 opens, from inside its netns.
fn dials_2377(lab: &Lab, k: usize) -> anyhow::Result<bool> {
    let target = format!("exec 3<>/dev/tcp/{}/2377", lab.node(k).addr());
    Ok(lab
        .command(k, "bash")
        .args(["-c", &target])
        .output()?
        .status
        .success())
}

/// Restarts node `k`'s daemon and checks it comes back locked.
async fn restart_locked(lab: &Lab, k: usize) -> anyhow::Result<()> {
    lab.stop(k).await?;
    lab.start(k).await?;
    let info = lab.shoal(k, &["info"])?;
    ensure!(info.contains("Swarm: locked"), "n{k} info: {info}");
    let e = lab.shoal_refused(k, &["node", "ls"])?;
    ensure!(e.contains(LOCKED), "n{k} node ls: {e}");
    // Locked means no cluster API on 2377 either.
    ensure!(
        !dials_2377(lab, k)?,
        "a locked n{k} accepts connections on 2377"
    );
    Ok(())
}

/// Unlocks node `k` with `key` and waits until it serves `node ls`.
async fn unlock(lab: &Lab, k: usize, key: &str) -> anyhow::Result<()> {
    let t = Instant::now();
    lab.shoal_stdin(k, &["swarm", "unlock"], format!("{key}\n").as_bytes())?;
    eventually(Duration::from_secs(15), "node ls after unlock", || {
        let out = lab.shoal_output(k, &["node", "ls"], b"")?;
        Ok(out.status.success().then_some(()))
    })
    .await?;
    eprintln!("n{k} unlocked and serving after {:?}", t.elapsed());
    ensure!(dials_2377(lab, k)?, "unlocked n{k} does not serve 2377");
    Ok(())
}

#[tokio::test]
async fn an_autolocked_manager_needs_its_key_after_a_restart() -> anyhow::Result<()> {
    let lab = Lab::builder("alock").nodes(2).start().await?;
    let init = lab.shoal(
        1,
        &[
            "swarm",
            "init",
            "--autolock",
            "--dispatcher-heartbeat",
            "1s",
        ],
    )?;
    let k1 = key_in(&init)?;
    ensure!(
        init.contains("run the `shoal swarm unlock`"),
        "init output: {init}"
    );
    ensure!(lab.shoal(1, &["swarm", "unlock-key", "-q"])?.trim() == k1);
    let shown = lab.shoal(1, &["swarm", "unlock-key"])?;
    ensure!(
        shown.contains(&format!("\n    {k1}\n")) && shown.contains("password manager"),
        "{shown}"
    );
    ensure!(
        !swarm_file(&lab, 1, "store.key").exists(),
        "n1 wrote store.key"
    );
    ensure!(!swarm_file(&lab, 1, "key.pem").exists(), "n1 wrote key.pem");
    lab.shoal(1, &["node", "update", "--label-add", "k=v", "n1"])?;

    // A manager joining an autolocked cluster seals its keys under the
    // cluster's unlock key once it has the replicated state.
    let token = lab.join_token(1, "manager")?;
    lab.shoal(
        2,
        &["swarm", "join", "--token", &token, &lab.cluster_addr(1)],
    )?;
    // Best effort: the follower may have removed it already.
    let n2_store_key = std::fs::read(swarm_file(&lab, 2, "store.key")).ok();
    eventually(Duration::from_secs(10), "n2 seals its keys", || {
        Ok((!swarm_file(&lab, 2, "store.key").exists()
            && !swarm_file(&lab, 2, "key.pem").exists()
            && swarm_file(&lab, 2, "key.sealed").exists())
        .then_some(()))
    })
    .await?;

    // Restarted, n1 is locked; garbage and a wrong key leave it locked.
    restart_locked(&lab, 1).await?;
    let e = unlock_refused(&lab, 1, "hunter2")?;
    ensure!(
        e.contains("invalid key") && e.contains("SWMKEY-1-"),
        "garbage: {e}"
    );
    let wrong = format!("SWMKEY-1-{}", "A".repeat(43));
    let e = unlock_refused(&lab, 1, &wrong)?;
    ensure!(e.contains("not correct for this node"), "wrong key: {e}");
    ensure!(lab.shoal(1, &["info"])?.contains("Swarm: locked"));
    // The right key: the state from before the restart is back.
    unlock(&lab, 1, &k1).await?;
    let n1_detail = lab.shoal(1, &["node", "inspect", "n1", "--format", "json"])?;
    ensure!(n1_detail.contains("\"k\""), "label lost: {n1_detail}");
    let e = unlock_refused(&lab, 1, &k1)?;
    ensure!(e.contains("not locked"), "unlock twice: {e}");

    // Rotation on n1: n2 follows, resealing its TLS key after its store.
    let n2_sealed = std::fs::read(swarm_file(&lab, 2, "key.sealed"))?;
    let rotated = lab.shoal(1, &["swarm", "unlock-key", "--rotate"])?;
    ensure!(
        rotated.starts_with("Successfully rotated manager unlock key."),
        "{rotated}"
    );
    let k2 = key_in(&rotated)?;
    ensure!(k2 != k1);
    eventually(
        Duration::from_secs(10),
        "n2 rewraps under the new key",
        || Ok((std::fs::read(swarm_file(&lab, 2, "key.sealed"))? != n2_sealed).then_some(())),
    )
    .await?;
    ensure!(lab.shoal(2, &["swarm", "unlock-key", "-q"])?.trim() == k2);

    // Both managers now open with the new key only.
    for k in [1, 2] {
        restart_locked(&lab, k).await?;
        let e = unlock_refused(&lab, k, &k1)?;
        ensure!(e.contains("not correct for this node"), "n{k} old key: {e}");
        unlock(&lab, k, &k2).await?;
    }
    let n1_detail = lab.shoal(2, &["node", "inspect", "n1", "--format", "json"])?;
    ensure!(n1_detail.contains("\"k\""), "label lost: {n1_detail}");

    // Nothing on disk (logs included) holds a key: not the unlock keys as
    // text or bytes, not n2's former store.key, not a PEM private key.
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for key in [&k1, &k2] {
        needles.push((format!("unlock key {key:.12}…"), key.as_bytes().to_vec()));
        needles.push(("unlock key bytes".into(), key_bytes(key)?));
    }
    if let Some(bytes) = n2_store_key {
        needles.push(("n2's old store.key".into(), bytes));
    }
    needles.push(("a PEM private key".into(), b"PRIVATE KEY".to_vec()));
    for k in [1, 2] {
        let files = shoal_lab::files_under(lab.node(k).state_dir())?;
        ensure!(files.len() > 3, "n{k}: no state on disk? {files:?}");
        for file in files {
            let bytes = std::fs::read(&file)?;
            for (what, needle) in &needles {
                let found = bytes.windows(needle.len()).any(|w| w == needle.as_slice());
                ensure!(!found, "{} holds {what}", file.display());
            }
        }
        for name in ["store.key", "key.pem", "key.sealed.new"] {
            ensure!(!swarm_file(&lab, k, name).exists(), "n{k} has {name}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn without_autolock_there_is_no_key_and_nothing_to_unlock() -> anyhow::Result<()> {
    let lab = Lab::builder("nolock").nodes(1).start().await?;
    let e = lab.shoal_refused(1, &["swarm", "unlock-key"])?;
    ensure!(e.contains("not part of a swarm"), "{e}");
    let init = lab.shoal(1, &["swarm", "init"])?;
    ensure!(!init.contains("SWMKEY"), "{init}");
    let e = lab.shoal_refused(1, &["swarm", "unlock-key"])?;
    ensure!(
        e.contains("Error response from daemon: no unlock key is set")
            && e.contains("--autolock=true"),
        "{e}"
    );
    ensure!(unlock_refused(&lab, 1, "SWMKEY-1-x")?.contains("not locked"));
    // A restart needs no one: the store key is on disk.
    lab.stop(1).await?;
    lab.start(1).await?;
    ensure!(lab.shoal(1, &["info"])?.contains("Swarm: active"));
    eventually(Duration::from_secs(10), "node ls after restart", || {
        let out = lab.shoal_output(1, &["node", "ls"], b"")?;
        Ok(out.status.success().then_some(()))
    })
    .await?;
    ensure!(swarm_file(&lab, 1, "store.key").exists());
    Ok(())
}
