//! Live restore: a task outlives its node's `shoald` (each is a runc
//! container watched by its own shim); the restarted daemon takes it back
//! (the same task, the same process, its log still growing) and can still
//! stop it. Needs root and runc.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, ensure};
use shoal_lab::{Lab, TaskRow, eventually};

const WAIT: Duration = Duration::from_secs(20);

fn live(lab: &Lab) -> anyhow::Result<Vec<TaskRow>> {
    let rows = lab
        .service_ps(1, "ticker")
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(rows
        .into_iter()
        .filter(|r| r.desired == "running")
        .collect())
}

fn log_lines(path: &PathBuf) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

#[tokio::test]
async fn a_restarted_shoald_takes_its_running_tasks_back() -> anyhow::Result<()> {
    let lab = Lab::builder("live").nodes(1).start().await?;
    lab.form_swarm(1)?;
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "ticker",
            "host",
            "sh",
            "-c",
            "while :; do echo tick; sleep 0.1; done",
        ],
    )?;
    let task = eventually(WAIT, "the ticker task running", || {
        let rows = live(&lab)?;
        Ok(rows.into_iter().find(|r| r.state == "running"))
    })
    .await?;
    let state = lab.node(1).state_dir().to_owned();
    let pid_file = state
        .join("runtime/bundles")
        .join(&task.id)
        .join("container.pid");
    let pid = std::fs::read_to_string(&pid_file)
        .with_context(|| pid_file.display().to_string())?
        .trim()
        .to_owned();
    let log = state.join("tasks").join(format!("{}.log", task.id));

    lab.restart(1).await?;
    ensure!(
        PathBuf::from(format!("/proc/{pid}")).exists(),
        "the task's process died with shoald"
    );
    let before = log_lines(&log);
    eventually(WAIT, "the log to grow after the restart", || {
        Ok((log_lines(&log) > before + 5).then_some(()))
    })
    .await?;
    // Still the one task, running, never replaced.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rows = live(&lab)?;
    ensure!(
        rows.len() == 1 && rows[0].id == task.id && rows[0].state == "running",
        "{rows:?}"
    );
    ensure!(
        std::fs::read_to_string(&pid_file)?.trim() == pid,
        "same process"
    );

    // The new daemon stops what the old one started.
    lab.shoal(1, &["service", "rm", "ticker"])?;
    eventually(WAIT, "the task's process to end", || {
        Ok((!PathBuf::from(format!("/proc/{pid}")).exists()).then_some(()))
    })
    .await?;
    ensure!(!pid_file.exists(), "its bundle is removed");
    Ok(())
}
