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
