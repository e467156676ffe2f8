//! A lab whose owner is SIGKILLed (so no Drop runs) is cleaned up: its
//! daemons die with it, and the next sweep deletes its namespaces and
//! directory. Needs root and a built `shoald`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use shoal_lab::{Lab, netns, sweep_stale};

/// Polls `done` until it holds or `timeout` passes.
fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Gone, or a zombie waiting for init to reap it.
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

fn lab_namespaces(lab: &str) -> anyhow::Result<Vec<String>> {
    let prefix = format!("shoal-{lab}-");
    Ok(netns::list()?
        .into_iter()
        .filter(|ns| ns.starts_with(&prefix))
        .collect())
}

#[test]
fn a_killed_owner_leaves_nothing_behind() -> anyhow::Result<()> {
    let mut fixture = Command::new(env!("CARGO_BIN_EXE_lab-fixture"))
        .arg("2")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = fixture.stdout.take().context("fixture stdout")?;
    let (lines, ready) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let line = match ready.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => line?,
        Err(e) => {
            let _already_dead = fixture.kill();
            bail!("fixture not ready: {e} (exit: {:?})", fixture.try_wait()?);
        }
    };
    let lab = line
        .strip_prefix("ready ")
        .with_context(|| format!("fixture said {line:?}"))?
        .to_owned();

    let mut expected: Vec<String> = ["ul", "n1", "n2"]
        .iter()
        .map(|s| format!("shoal-{lab}-{s}"))
        .collect();
    expected.sort();
    let mut found = lab_namespaces(&lab)?;
    found.sort();
    assert_eq!(found, expected);
    // A non-owning view of the fixture's lab, for its daemons' pids.
    let view = Lab::open(&lab)?;
    let pids: Vec<u32> = view.nodes().iter().filter_map(|n| n.pid()).collect();
    assert_eq!(pids.len(), 2, "daemons of {lab}");

    fixture.kill()?;
    fixture.wait()?;
    // PR_SET_PDEATHSIG: the daemons die with the fixture.
    wait_for(
        "the fixture's daemons to die",
        Duration::from_secs(10),
        || pids.iter().all(|&pid| process_gone(pid)),
    )?;

    // Any lab creation sweeps; a concurrent test process may get there first,
    // so check what is left rather than what this call removed.
    sweep_stale()?;
    let left = lab_namespaces(&lab)?;
    ensure!(left.is_empty(), "left behind: {left:?}");
    ensure!(!view.dir().exists(), "{} left behind", view.dir().display());
    ensure!(!Lab::exists(&lab));
    Ok(())
}
