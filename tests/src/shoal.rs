//! Running the `shoal` CLI on lab nodes, as an operator would, and waiting
//! on conditions with a deadline.

use std::{
    io::Write,
    path::{Path, PathBuf},
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

    /// `curl URL` from the lab's client (not a node), 3 s at most:
    /// (status code, body), both trimmed; code `000` when nothing answered.
    pub fn curl(&self, url: &str) -> Result<(String, String), LabError> {
        let out = self
            .client_command("curl")
            .args(["-s", "-m", "3", "-w", "\n%{http_code}", url])
            .output()
            .map_err(io_err(Path::new("curl"), "run"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
        Ok((code.trim().to_owned(), body.trim().to_owned()))
    }

    /// Waits until node 1 lists `n` nodes, all ready: services created after
    /// that are spread over every node (one still joining would get none).
    pub async fn nodes_ready(&self, n: usize, within: Duration) -> Result<(), LabError> {
        eventually(within, "all nodes ready", || {
            let out = self.shoal(1, &["node", "ls", "--format", "json"])?;
            let nodes: Vec<serde_json::Value> = serde_json::from_str(&out)?;
            Ok((nodes.len() == n && nodes.iter().all(|x| x["status"] == "ready")).then_some(()))
        })
        .await
    }

    /// Waits until `n` tasks of `service` run (as `service ps` on n1 says);
    /// on timeout the error holds the last `service ps`.
    pub async fn running(&self, service: &str, n: usize, within: Duration) -> Result<(), LabError> {
        eventually(within, &format!("{n} tasks of {service} running"), || {
            let rows = self.service_ps(1, service)?;
            if rows.iter().filter(|r| r.running()).count() == n {
                return Ok(Some(()));
            }
            Err(format!("service ps: {rows:?}").into())
        })
        .await
    }

    /// `service logs --raw` of `service` (its stdout and stderr, which
    /// `service logs` prints apart as docker's does) once `pred` holds. On
    /// timeout the error holds the last logs; `service ps` and the end of
    /// every node's log are printed.
    pub async fn logs_until(
        &self,
        service: &str,
        within: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String, LabError> {
        let found = eventually(within, what, || {
            let out = self.shoal_output(1, &["service", "logs", "--raw", service], b"")?;
            let both = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if pred(&both) {
                return Ok(Some(both));
            }
            Err(format!("{service} logs: {both:?}").into())
        })
        .await;
        if found.is_err() {
            match self.shoal(1, &["service", "ps", "--no-trunc", service]) {
                Ok(ps) => eprintln!("---- lab {}: service ps {service} ----\n{ps}", self.name()),
                Err(e) => eprintln!("---- lab {}: service ps {service}: {e}", self.name()),
            }
            self.print_log_tails();
        }
        found
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

/// Who forms a swarm in [`Lab::form_swarm_with`].
#[derive(Debug, Clone, Copy)]
pub struct Formation<'a> {
    /// n1..=managers are managers (n1 inits), the others workers.
    pub managers: usize,
    /// n1..=nodes take part; later nodes are left out of the swarm.
    pub nodes: usize,
    /// Flags after `swarm init`.
    pub init: &'a [&'a str],
}

/// 1 s heartbeats: a silent node is down after ~3 s, which tests wait on.
pub const FAST_HEARTBEAT: &[&str] = &["--dispatcher-heartbeat", "1s"];

impl Formation<'static> {
    /// n1..=`nodes`, n1..=`managers` managers, 1 s heartbeats.
    pub fn fast(managers: usize, nodes: usize) -> Self {
        Formation {
            managers,
            nodes,
            init: FAST_HEARTBEAT,
        }
    }

    /// As [`Formation::fast`], with the default heartbeat.
    pub fn plain(managers: usize, nodes: usize) -> Self {
        Formation {
            managers,
            nodes,
            init: &[],
        }
    }
}

impl Lab {
    /// `host:port` of node `k`'s cluster port, as `swarm join` takes it.
    pub fn cluster_addr(&self, k: usize) -> String {
        format!(
            "{}:{}",
            self.node(k).addr(),
            shoal_common::ports::CLUSTER_PORT
        )
    }

    /// The `role` join token ("worker" or "manager") node `k` hands out.
    pub fn join_token(&self, k: usize, role: &str) -> Result<String, LabError> {
        Ok(self
            .shoal(k, &["swarm", "join-token", "-q", role])?
            .trim()
            .to_owned())
    }

    /// n1 inits with 1 s heartbeats, n2..=`managers` join as managers and
    /// every other node as a worker, in order. Returns what each join
    /// printed (n2's first).
    pub fn form_swarm(&self, managers: usize) -> Result<Vec<String>, LabError> {
        self.form_swarm_of(Formation::fast(managers, self.nodes().len()))
    }

    /// As [`Lab::form_swarm`], for any [`Formation`].
    pub fn form_swarm_of(&self, formation: Formation<'_>) -> Result<Vec<String>, LabError> {
        self.form_swarm_with(formation, |k, args| self.shoal(k, args))
    }

    /// As [`Lab::form_swarm_of`], running `shoal` on a node with
    /// `shoal(k, args)` (the benchmarks run their release build).
    pub fn form_swarm_with<E>(
        &self,
        formation: Formation<'_>,
        mut shoal: impl FnMut(usize, &[&str]) -> Result<String, E>,
    ) -> Result<Vec<String>, E> {
        let mut init = vec!["swarm", "init"];
        init.extend_from_slice(formation.init);
        shoal(1, &init)?;
        let n1 = self.cluster_addr(1);
        let mut tokens = [None, None];
        let mut joined = Vec::new();
        for k in 2..=formation.nodes {
            let (slot, role) = if k <= formation.managers {
                (0, "manager")
            } else {
                (1, "worker")
            };
            // Asked for once per role, when the first node of that role joins.
            let token = match tokens[slot].take() {
                Some(token) => token,
                None => shoal(1, &["swarm", "join-token", "-q", role])?
                    .trim()
                    .to_owned(),
            };
            joined.push(shoal(k, &["swarm", "join", "--token", &token, &n1])?);
            tokens[slot] = Some(token);
        }
        Ok(joined)
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
