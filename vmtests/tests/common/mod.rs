//! What the cross-VM tests share: polling, parsed `shoal` output, requests
//! from the client namespace.

#![allow(dead_code)] // each test binary uses its own part

use std::time::{Duration, Instant};

use shoal_vmlab::VmLab;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Polls `check` every second until it returns `Some`, or fails after
/// `within` with the last answer.
pub async fn eventually<T>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<Option<T>, BoxError>,
) -> Result<T, BoxError> {
    let started = Instant::now();
    let mut last = String::from("none");
    loop {
        match check() {
            Ok(Some(v)) => {
                println!("{what}: after {:.1?}", started.elapsed());
                return Ok(v);
            }
            Ok(None) => {}
            Err(e) => last = e.to_string(),
        }
        if started.elapsed() > within {
            return Err(format!("{what}: not within {within:?} (last: {last})").into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `shoal …` in VM `k`.
pub fn shoal(lab: &VmLab, k: usize, args: &[&str]) -> Result<String, BoxError> {
    let mut words = vec!["shoal"];
    words.extend_from_slice(args);
    Ok(lab.exec(k, &words)?)
}

/// `node stats` mesh reason `what` on VM `k`.
pub fn mesh_reason(lab: &VmLab, k: usize, what: &str) -> Result<u64, BoxError> {
    let v: serde_json::Value =
        serde_json::from_str(&shoal(lab, k, &["node", "stats", "--format", "json"])?)?;
    Ok(v["mesh_reasons"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["reason"] == what))
        .and_then(|r| r["count"].as_u64())
        .unwrap_or(0))
}

/// (hostname, status) of every node, as VM `k`'s manager sees them.
pub fn nodes(lab: &VmLab, k: usize) -> Result<Vec<(String, String)>, BoxError> {
    let v: serde_json::Value =
        serde_json::from_str(&shoal(lab, k, &["node", "ls", "--format", "json"])?)?;
    let list = v.as_array().ok_or("node ls --format json: not an array")?;
    let mut rows: Vec<(String, String)> = list
        .iter()
        .map(|n| {
            let f = |key: &str| n[key].as_str().unwrap_or_default().to_lowercase();
            (f("hostname"), f("status"))
        })
        .collect();
    rows.sort();
    Ok(rows)
}

/// Waits until VM `k` lists exactly `want` nodes, all ready.
pub async fn all_ready(
    lab: &VmLab,
    k: usize,
    want: usize,
    within: Duration,
) -> Result<(), BoxError> {
    eventually(within, &format!("{want} nodes ready"), || {
        let rows = nodes(lab, k)?;
        Ok((rows.len() == want && rows.iter().all(|(_, s)| s == "ready")).then_some(()))
    })
    .await
}

/// One task of `service ps --format json`: (name, node, desired, state, addresses).
#[derive(Debug, Clone)]
pub struct Task {
    pub name: String,
    pub node: String,
    pub desired: String,
    pub state: String,
    pub addresses: Vec<String>,
}

pub fn tasks(lab: &VmLab, k: usize, service: &str) -> Result<Vec<Task>, BoxError> {
    let v: serde_json::Value = serde_json::from_str(&shoal(
        lab,
        k,
        &["service", "ps", service, "--format", "json"],
    )?)?;
    let rows = v
        .as_array()
        .ok_or("service ps --format json: not an array")?;
    Ok(rows
        .iter()
        .map(|t| {
            let s = |key: &str| t[key].as_str().unwrap_or_default().to_lowercase();
            Task {
                name: s("name"),
                node: s("node"),
                desired: s("desired_state"),
                state: s("current_state"),
                addresses: t["addresses"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect())
}

/// Waits until `service` has `n` running tasks (wanted running).
pub async fn running(
    lab: &VmLab,
    service: &str,
    n: usize,
    within: Duration,
) -> Result<Vec<Task>, BoxError> {
    eventually(within, &format!("{n} running tasks of {service}"), || {
        let running: Vec<Task> = tasks(lab, 1, service)?
            .into_iter()
            .filter(|t| t.desired == "running" && t.state == "running")
            .collect();
        Ok((running.len() == n).then_some(running))
    })
    .await
}

/// GET `url` from the client namespace: Ok(body) or Err(why).
pub fn curl(lab: &VmLab, url: &str) -> Result<String, BoxError> {
    let out = lab.client_output("curl", &["-sS", "--max-time", "10", url])?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "curl {url}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into())
    }
}

/// lab-http's answer: `<task hostname> <peer address>`.
pub fn split_answer(body: &str) -> Result<(String, String), BoxError> {
    let (host, peer) = body
        .split_once(' ')
        .ok_or_else(|| format!("not a lab-http answer: {body:?}"))?;
    Ok((host.to_owned(), peer.to_owned()))
}

/// The process id of the task running `marker` in VM `k` (oldest match).
pub fn task_pid(lab: &VmLab, k: usize, marker: &str) -> Result<String, BoxError> {
    Ok(lab
        .exec(k, &["pgrep", "-o", "-f", marker])?
        .trim()
        .to_owned())
}
