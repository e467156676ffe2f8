//! Secrets and configs, end to end (issue 12): real shoald processes in a
//! lab, busybox tasks run by runc.
//!
//! - A task holds its secrets at `/run/secrets/<target>` with the mode and
//!   owner asked (it prints their sha256, never the bytes); a task of
//!   another service on the same node has no such file.
//! - After use, no file under any node's state directory, no daemon log
//!   and nothing under the lab's `/run` tree holds the secret's bytes (raw,
//!   base64 or hex), and a node that runs no such task never received it.
//! - `secret rm` of one in use is refused; `--secret-rm` replaces the
//!   tasks with ones without the file; a rotation under the same target
//!   rolls while the published port keeps answering.
//! - A worker cut off from the managers keeps reading its secret.
//! - Configs at their target with their mode; templates in env and in a
//!   templated config show each node's own id.
//! - Bad input is refused with a clear error and creates nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use shoal_lab::{Formation, Lab, eventually, images};

async fn cluster(tag: &str, nodes: usize) -> anyhow::Result<Lab> {
    Ok(images::busybox_lab(tag, Formation::fast(1, nodes)).await?)
}

async fn running(lab: &Lab, service: &str, n: usize) -> anyhow::Result<()> {
    Ok(lab.running(service, n, Duration::from_secs(60)).await?)
}

/// `service logs` of `service` (stdout and stderr) once `pred` holds.
async fn logs_until(
    lab: &Lab,
    service: &str,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    Ok(lab
        .logs_until(service, Duration::from_secs(30), what, pred)
        .await?)
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A secret no file on this machine holds by chance.
fn fresh_secret(tag: &str) -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{tag}-{nanos:x}-{}-s3cr3t", std::process::id()).into_bytes()
}

/// Every regular file under `dir` whose bytes contain one of `needles`,
/// with the needle's name. Special files (the tasks' network namespaces,
/// sockets) and unreadable files are skipped; symlinks are not followed.
fn files_containing(dir: &Path, needles: &[(&str, Vec<u8>)]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let Ok(bytes) = std::fs::read(&path) else {
                    continue;
                };
                for (name, needle) in needles {
                    if bytes.windows(needle.len()).any(|w| w == needle.as_slice()) {
                        found.push(format!("{} ({name})", path.display()));
                    }
                }
            }
        }
    }
    found
}

/// The forms a leaked secret could take on disk.
fn leak_forms(secret: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("raw", secret.to_vec()),
        (
            "base64",
            base64::engine::general_purpose::STANDARD
                .encode(secret)
                .into_bytes(),
        ),
        ("hex", hex::encode(secret).into_bytes()),
    ]
}

/// `shoal info --format json` of node `k`.
fn info(lab: &Lab, k: usize) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::from_str(
        &lab.shoal(k, &["info", "--format", "json"])?,
    )?)
}

/// The ids in `field` (`secrets_received`, `secrets_held`) of node `k`'s
/// info.
fn secret_ids(lab: &Lab, k: usize, field: &str) -> anyhow::Result<Vec<String>> {
    let v = info(lab, k)?;
    let ids = v[field]["ids"]
        .as_array()
        .with_context(|| format!("n{k} info has no {field} list: {v}"))?;
    Ok(ids
        .iter()
        .filter_map(|x| x.as_str().map(str::to_owned))
        .collect())
}

fn secret_id(lab: &Lab, name: &str) -> anyhow::Result<String> {
    let v: serde_json::Value = serde_json::from_str(&lab.shoal(1, &["secret", "inspect", name])?)?;
    let v = if v.is_array() { v[0].clone() } else { v };
    v["id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("secret inspect {name}: {v}"))
}

#[tokio::test]
async fn secrets_reach_only_their_tasks_and_never_a_disk() -> anyhow::Result<()> {
    let lab = cluster("sec", 3).await?;
    let secret = fresh_secret("db");
    lab.shoal_stdin(1, &["secret", "create", "db_pass", "-"], &secret)?;
    let id = secret_id(&lab, "db_pass")?;
    let script = "trap 'exit 0' TERM; \
        cd /run/secrets && sha256sum db_pass alias && stat -c 'mode %a %u %g %n' db_pass alias; \
        while true; do sleep 1; done";
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "app",
            "--constraint",
            "node.hostname==n2",
            "--secret",
            "db_pass",
            "--secret",
            "source=db_pass,target=alias,uid=1000,gid=1001,mode=0400",
            "busybox",
            "sh",
            "-c",
            script,
        ],
    )?;
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "other",
            "--constraint",
            "node.hostname==n2",
            "busybox",
            "sh",
            "-c",
            "trap 'exit 0' TERM; ls /run/secrets 2>&1; grep -c secrets /proc/self/mountinfo; \
             while true; do sleep 1; done",
        ],
    )?;
    running(&lab, "app", 1).await?;
    running(&lab, "other", 1).await?;
    let hash = sha256_hex(&secret);
    let logs = logs_until(&lab, "app", "the task printed its secrets", |l| {
        l.contains("mode 400")
    })
    .await?;
    ensure!(
        logs.matches(&hash).count() == 2,
        "both files hold the secret: {logs}"
    );
    ensure!(logs.contains("mode 444 0 0 db_pass"), "{logs}");
    ensure!(logs.contains("mode 400 1000 1001 alias"), "{logs}");
    let other = logs_until(&lab, "other", "the other task looked", |l| {
        l.contains("No such file")
    })
    .await?;
    ensure!(other.contains("\n0") || other.starts_with('0'), "{other}");

    // Nothing on any node holds the bytes: not the state directories (the
    // stores, bundles, runc state, task logs), not the daemons' logs.
    let forms = leak_forms(&secret);
    let leaks = files_containing(lab.dir(), &forms);
    ensure!(leaks.is_empty(), "the secret is on disk: {leaks:?}");
    // The staging tmpfs is gone from the node's mount table: the secret
    // lives in the task's own mount namespace only.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let lab_dir = lab.dir().display().to_string();
    let staged: Vec<&str> = mountinfo
        .lines()
        .filter(|l| l.contains(&lab_dir) && l.contains(" - tmpfs "))
        .collect();
    ensure!(staged.is_empty(), "staging mounts left: {staged:?}");

    // Only n2 ever received it.
    ensure!(secret_ids(&lab, 2, "secrets_received")?.contains(&id));
    ensure!(secret_ids(&lab, 2, "secrets_held")?.contains(&id));
    for k in [1, 3] {
        let got = secret_ids(&lab, k, "secrets_received")?;
        ensure!(!got.contains(&id), "n{k} received the secret: {got:?}");
    }

    // In use: refused, naming the service.
    let refused = lab.shoal_refused(1, &["secret", "rm", "db_pass"])?;
    ensure!(refused.contains("app"), "{refused}");
    // Removed from the service: the task is replaced by one without it,
    // and n2 drops it once its last task using it ended.
    lab.shoal(
        1,
        &[
            "service",
            "update",
            "--detach",
            "--secret-rm",
            "db_pass",
            "app",
        ],
    )?;
    eventually(Duration::from_secs(60), "app replaced", || {
        let ps = lab.service_ps(1, "app")?;
        let running: Vec<_> = ps.iter().filter(|t| t.state == "running").collect();
        Ok((running.len() == 1 && ps.iter().any(|t| t.desired == "shutdown")).then_some(()))
    })
    .await
    .with_context(|| format!("{:?}", lab.service_ps(1, "app")))?;
    logs_until(&lab, "app", "the new task found no file", |l| {
        l.contains("can't open 'db_pass'") || l.contains("No such file")
    })
    .await?;
    eventually(Duration::from_secs(30), "n2 dropped the secret", || {
        Ok((!secret_ids(&lab, 2, "secrets_held")?.contains(&id)).then_some(()))
    })
    .await?;
    lab.shoal(1, &["service", "rm", "app"])?;
    eventually(Duration::from_secs(30), "secret rm once unused", || {
        Ok(lab.shoal(1, &["secret", "rm", "db_pass"]).ok())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_rotation_under_the_same_target_rolls_while_serving() -> anyhow::Result<()> {
    let lab = cluster("sec-roll", 2).await?;
    let (old, new) = (fresh_secret("old"), fresh_secret("new"));
    lab.shoal_stdin(1, &["secret", "create", "api_key_v1", "-"], &old)?;
    lab.shoal_stdin(1, &["secret", "create", "api_key_v2", "-"], &new)?;
    // httpd serves the hash of the secret it holds: which version answers.
    let script = "trap 'exit 0' TERM; mkdir -p /tmp/www; \
        sha256sum /run/secrets/api_key > /tmp/www/index.html; \
        httpd -f -p 80 -h /tmp/www & wait";
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "api",
            "--replicas",
            "2",
            "-p",
            "8080:80",
            "--secret",
            "source=api_key_v1,target=api_key",
            "busybox",
            "sh",
            "-c",
            script,
        ],
    )?;
    running(&lab, "api", 2).await?;
    let url = format!("http://{}:8080/", lab.node(1).addr());
    let (old_hash, new_hash) = (sha256_hex(&old), sha256_hex(&new));
    eventually(Duration::from_secs(15), "api answers", || {
        let (code, body) = lab.curl(&url)?;
        Ok((code == "200" && body.contains(&old_hash)).then_some(()))
    })
    .await?;
    lab.shoal(
        1,
        &[
            "service",
            "update",
            "--detach",
            "--secret-rm",
            "api_key_v1",
            "--secret-add",
            "source=api_key_v2,target=api_key",
            "api",
        ],
    )?;
    // Requests all through the roll, until every answer is the new one.
    let (mut ok, mut failed, mut new_in_a_row) = (0u32, Vec::new(), 0);
    let deadline = Instant::now() + Duration::from_secs(90);
    while new_in_a_row < 20 {
        ensure!(
            Instant::now() < deadline,
            "the roll did not finish: {ok} ok, failures {failed:?}, {:?}",
            lab.service_ps(1, "api")
        );
        match lab.curl(&url) {
            Ok((code, body)) if code == "200" => {
                ok += 1;
                if body.contains(&new_hash) {
                    new_in_a_row += 1;
                } else {
                    ensure!(body.contains(&old_hash), "an unknown answer: {body}");
                    new_in_a_row = 0;
                }
            }
            Ok((code, body)) => failed.push(format!("{code} {body}")),
            Err(e) => failed.push(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("rotation: {ok} requests answered, {} failed", failed.len());
    ensure!(
        failed.is_empty(),
        "requests failed during the roll ({ok} answered): {failed:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_cut_off_worker_keeps_its_tasks_secrets() -> anyhow::Result<()> {
    let lab = cluster("sec-cut", 2).await?;
    let secret = fresh_secret("cut");
    lab.shoal_stdin(1, &["secret", "create", "token", "-"], &secret)?;
    lab.shoal(
        1,
        &[
            "service", "create", "--detach", "--name", "reader",
            "--constraint", "node.hostname==n2",
            "--secret", "token",
            "busybox", "sh", "-c",
            "trap 'exit 0' TERM; while true; do echo \"$(date +%s) $(sha256sum /run/secrets/token)\"; sleep 1; done",
        ],
    )?;
    running(&lab, "reader", 1).await?;
    let task = lab
        .service_ps(1, "reader")
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_iter()
        .find(|t| t.state == "running")
        .context("no running task")?;
    let hash = sha256_hex(&secret);
    lab.cut(2).await?;
    let cut_at = now_secs();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let healed_at = now_secs();
    lab.heal(2).await?;
    // The task's own log on n2 (what `service logs` reads once n2 is back):
    // it kept reading the secret while no manager was reachable.
    let log = lab
        .node(2)
        .state_dir()
        .join("tasks")
        .join(format!("{}.log", task.id));
    let text = std::fs::read_to_string(&log).with_context(|| log.display().to_string())?;
    let during = text
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(5, ' ');
            let (_, _, _, at, rest) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
            let at: u64 = at.parse().ok()?;
            (at > cut_at && at < healed_at && rest.starts_with(&hash)).then_some(at)
        })
        .count();
    ensure!(during >= 3, "{during} reads during the cut: {text}");
    lab.nodes_ready(2, Duration::from_secs(30)).await?;
    running(&lab, "reader", 1).await?;
    Ok(())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[tokio::test]
async fn configs_and_templates_reach_each_task() -> anyhow::Result<()> {
    let lab = cluster("cfg", 2).await?;
    lab.shoal_stdin(1, &["config", "create", "app_conf", "-"], b"listen 80\n")?;
    lab.shoal_stdin(
        1,
        &[
            "config",
            "create",
            "--template-driver",
            "golang",
            "whoami",
            "-",
        ],
        b"node={{.Node.ID}} host={{ .Node.Hostname }} task={{.Task.Name}}\n",
    )?;
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "cfg",
            "--mode",
            "global",
            "--config",
            "source=app_conf,target=/etc/app.conf,mode=0440",
            "--config",
            "source=whoami,target=/whoami",
            "-e",
            "NODE_ID={{.Node.ID}}",
            "--hostname",
            "{{.Node.Hostname}}-{{.Service.Name}}",
            "busybox",
            "sh",
            "-c",
            "trap 'exit 0' TERM; stat -c 'mode %a %n' /etc/app.conf; cat /etc/app.conf /whoami; \
             echo \"env $NODE_ID $(hostname)\"; while true; do sleep 1; done",
        ],
    )?;
    running(&lab, "cfg", 2).await?;
    let listed: serde_json::Value =
        serde_json::from_str(&lab.shoal(1, &["node", "ls", "--format", "json"])?)?;
    let nodes: Vec<(String, String)> = listed
        .as_array()
        .context("node ls: not an array")?
        .iter()
        .map(|n| {
            let s = |k: &str| n[k].as_str().unwrap_or_default().to_owned();
            (s("id"), s("hostname"))
        })
        .collect();
    ensure!(nodes.len() == 2, "{listed}");
    let logs = logs_until(&lab, "cfg", "both tasks printed", |l| {
        l.matches("env ").count() >= 2
    })
    .await?;
    ensure!(
        logs.matches("mode 440 /etc/app.conf").count() == 2,
        "{logs}"
    );
    ensure!(logs.matches("listen 80").count() == 2, "{logs}");
    for (id, hostname) in &nodes {
        ensure!(
            logs.contains(&format!("env {id} {hostname}-cfg")),
            "no env line for {hostname}: {logs}"
        );
        ensure!(
            logs.contains(&format!("node={id} host={hostname}")),
            "no templated config for {hostname}: {logs}"
        );
    }
    // Configs are not secret: --pretty shows the data.
    let pretty = lab.shoal(1, &["config", "inspect", "--pretty", "app_conf"])?;
    ensure!(pretty.contains("listen 80"), "{pretty}");
    let refused = lab.shoal_refused(1, &["config", "rm", "app_conf"])?;
    ensure!(refused.contains("cfg"), "{refused}");
    Ok(())
}

#[tokio::test]
async fn bad_input_is_refused_and_creates_nothing() -> anyhow::Result<()> {
    let lab = cluster("sec-bad", 1).await?;
    let listing = |lab: &Lab| -> anyhow::Result<String> {
        Ok(format!(
            "{}{}{}",
            lab.shoal(1, &["secret", "ls", "--format", "json"])?,
            lab.shoal(1, &["config", "ls", "--format", "json"])?,
            lab.shoal(1, &["service", "ls", "--format", "json"])?
        ))
    };
    lab.shoal_stdin(1, &["secret", "create", "ok", "-"], b"fine")?;
    let before = listing(&lab)?;
    let big_secret = vec![b'x'; 600 * 1024];
    let big_config = vec![b'y'; 1100 * 1024];
    let cases: Vec<(Vec<&str>, &[u8], &str)> = vec![
        (vec!["secret", "create", "big", "-"], &big_secret, "500 KiB"),
        (
            vec!["config", "create", "big", "-"],
            &big_config,
            "1000 KiB",
        ),
        (vec!["secret", "create", "empty", "-"], b"", "empty"),
        (vec!["config", "create", "empty", "-"], b"", "empty"),
        (vec!["secret", "create", "bad name!", "-"], b"x", "name"),
        (vec!["config", "create", "x-", "-"], b"x", "name"),
        (
            vec!["config", "create", "--template-driver", "golang", "t", "-"],
            b"{{.Node.Secret}}",
            ".Node.Secret",
        ),
        (
            vec!["config", "create", "--template-driver", "golang", "f", "-"],
            b"{{secret \"x\"}}",
            "secret",
        ),
        (
            vec![
                "service", "create", "--name", "s1", "--secret", "nosuch", "busybox", "true",
            ],
            b"",
            "nosuch",
        ),
        (
            vec![
                "service",
                "create",
                "--name",
                "s2",
                "--secret",
                "source=ok,mode=0999",
                "busybox",
                "true",
            ],
            b"",
            "mode",
        ),
        (
            vec![
                "service",
                "create",
                "--name",
                "s3",
                "-e",
                "X={{.Node.Nope}}",
                "busybox",
                "true",
            ],
            b"",
            ".Node.Nope",
        ),
        (
            vec![
                "service",
                "create",
                "--name",
                "s4",
                "--secret",
                "source=ok,colour=red",
                "busybox",
                "true",
            ],
            b"",
            "colour",
        ),
    ];
    for (args, input, expect) in cases {
        let out = lab.shoal_output(1, &args, input)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "{args:?} was accepted");
        ensure!(
            stderr.contains(expect),
            "{args:?}: the error does not name {expect:?}: {stderr}"
        );
    }
    ensure!(
        listing(&lab)? == before,
        "a refused command created something"
    );
    Ok(())
}
