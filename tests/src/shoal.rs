//! Running the `shoal` CLI on lab nodes, as an operator would, and waiting
//! on conditions with a deadline.

use std::{
    io::Write,
    path::PathBuf,
    process::{Output, Stdio},
    time::{Duration, Instant},
};

use crate::{Lab, LabError, daemon::shoald_path, record::io_err};

/// What an [`eventually`] check may fail with: anything `?` converts.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How often [`eventually`] polls.
const POLL: Duration = Duration::from_millis(200);

/// The `shoal` binary built beside `shoald`.
pub fn shoal_path() -> Result<PathBuf, LabError> {
    let path = shoald_path()?.with_file_name("shoal");
    if path.is_file() {
        Ok(path)
    } else {
        Err(LabError::DaemonBinary {
            searched: vec![path],
        })
    }
}

/// Join tokens are secrets: never echoed into an error.
fn shown(args: &[&str]) -> String {
    args.iter()
        .map(|a| {
            if a.starts_with("SWMTKN-") {
                "<token>"
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Lab {
    /// Runs `shoal ARGS` against node `k`'s daemon, with `input` on stdin.
    pub fn shoal_output(&self, k: usize, args: &[&str], input: &[u8]) -> Result<Output, LabError> {
        let bin = shoal_path()?;
        let mut child = self
            .command(k, &bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io_err(&bin, "run"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input)
                .map_err(io_err(&bin, "write stdin of"))?;
        }
        child.wait_with_output().map_err(io_err(&bin, "wait for"))
    }

    /// `shoal ARGS` on node `k`, which must succeed; returns its stdout.
    pub fn shoal(&self, k: usize, args: &[&str]) -> Result<String, LabError> {
        self.shoal_stdin(k, args, b"")
    }

    /// As [`Lab::shoal`], with `input` on its stdin.
    pub fn shoal_stdin(&self, k: usize, args: &[&str], input: &[u8]) -> Result<String, LabError> {
        let out = self.shoal_output(k, args, input)?;
        if !out.status.success() {
            return Err(LabError::ShoalFailed {
                node: k,
                args: shown(args),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `shoal ARGS` on node `k`, which must fail; returns its stderr.
    pub fn shoal_refused(&self, k: usize, args: &[&str]) -> Result<String, LabError> {
        let out = self.shoal_output(k, args, b"")?;
        if out.status.success() {
            return Err(LabError::ShoalSucceeded {
                node: k,
                args: shown(args),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// One row of `shoal service ps --format json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    pub id: String,
    /// `<service>.<slot>` or `<service>.<node id>`.
    pub name: String,
    /// Hostname of the node it is assigned to.
    pub node: String,
    pub desired: String,
    pub state: String,
    pub error: String,
    /// CIDRs on its networks.
    pub addresses: Vec<String>,
}

impl TaskRow {
    /// Wanted running and running.
    pub fn running(&self) -> bool {
        self.desired == "running" && self.state == "running"
    }

    /// The first address, without its prefix length.
    pub fn ip(&self) -> Option<std::net::Ipv4Addr> {
        self.addresses.first()?.split('/').next()?.parse().ok()
    }
}

/// One row of `node ls`: (hostname, status, manager status, role), lowercase.
pub type NodeRow = (String, String, String, String);

impl Lab {
    /// `shoal node ls --format json` on node `k`, sorted by hostname; a row
    /// missing a field is an error naming it.
    pub fn node_ls(&self, k: usize) -> Result<Vec<NodeRow>, BoxError> {
        let out = self.shoal(k, &["node", "ls", "--format", "json"])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        let list = v.as_array().ok_or("node ls --format json: not an array")?;
        let field = |n: &serde_json::Value, key: &str| -> Result<String, BoxError> {
            Ok(n[key]
                .as_str()
                .map(str::to_lowercase)
                .ok_or_else(|| format!("node ls --format json: no {key:?} in {n}"))?)
        };
        let mut rows = list
            .iter()
            .map(|n| {
                Ok((
                    field(n, "hostname")?,
                    field(n, "status")?,
                    field(n, "manager_status")?,
                    field(n, "role")?,
                ))
            })
            .collect::<Result<Vec<_>, BoxError>>()?;
        rows.sort();
        Ok(rows)
    }

    /// `shoal service ps SERVICE --format json` on node `k`, parsed.
    pub fn service_ps(&self, k: usize, service: &str) -> Result<Vec<TaskRow>, BoxError> {
        let out = self.shoal(k, &["service", "ps", service, "--format", "json"])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        let rows = v
            .as_array()
            .ok_or("service ps --format json: not an array")?;
        Ok(rows
            .iter()
            .map(|t| {
                let s = |k: &str| t[k].as_str().unwrap_or_default().to_owned();
                TaskRow {
                    id: s("id"),
                    name: s("name"),
                    node: s("node"),
                    desired: s("desired_state"),
                    state: s("current_state"),
                    error: s("error"),
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
}

/// Polls `check` until it returns `Some` or `within` passes; errors from
/// `check` count as "not yet" and the last one is reported on timeout.
pub async fn eventually<T>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<Option<T>, BoxError>,
) -> Result<T, LabError> {
    let deadline = Instant::now() + within;
    let mut last = String::from("none");
    loop {
        match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = e.to_string(),
        }
        if Instant::now() > deadline {
            return Err(LabError::Timeout {
                what: what.to_owned(),
                within,
                last,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The PID of the task process whose environment says HOSTNAME=`name`
/// and whose command line contains `marker`.
pub fn task_pid(name: &str, marker: &str) -> Option<u32> {
    let want = format!("HOSTNAME={name}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !cmdline.contains(marker) || cmdline.starts_with("shoal-init") {
            return None;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        environ
            .split(|b| *b == 0)
            .any(|kv| kv == want.as_bytes())
            .then_some(pid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_reach_errors() {
        assert_eq!(
            shown(&["swarm", "join", "--token", "SWMTKN-1-a-b", "x"]),
            "swarm join --token <token> x"
        );
    }

    #[tokio::test]
    async fn eventually_reports_the_last_error() {
        let mut n = 0;
        let e = eventually(Duration::from_millis(300), "never", || {
            n += 1;
            Err::<Option<()>, BoxError>(format!("try {n}").into())
        })
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            e.starts_with("never: not within") && e.contains("try "),
            "{e}"
        );
        let v = eventually(Duration::from_secs(1), "soon", || Ok(Some(7))).await;
        assert_eq!(v.ok(), Some(7));
    }
}
