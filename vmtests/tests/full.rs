//! The rest of the cross-VM suite, behind `SHOAL_VM_FULL=1` (minutes under
//! TCG): on three VMs with Debian's 6.1 kernel (clsact, no TCX), node
//! doctor on every VM; a connection through a VM's published port to a
//! task on another VM survives `systemctl restart shoald` on the entry VM,
//! and on the task's VM; a killed VM's tasks are rescheduled while the
//! published port keeps answering from the others (failed requests counted,
//! outage printed); a killed VM booted again, and a rebooted VM, rejoin by
//! themselves. Without the variable each test says so and passes.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{BoxError, all_ready, curl, eventually, nodes, running, shoal, split_answer};
use shoal_vmlab::{VmLab, node_addr};

const WITHIN: Duration = Duration::from_secs(600);
/// lab-http of this build, run in the client namespace for `hold`.
fn lab_http() -> Result<std::path::PathBuf, BoxError> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("lab-http"))
        .find(|p| p.is_file())
        .ok_or_else(|| "lab-http not built (cargo build --workspace --bins)".into())
}

fn enabled() -> bool {
    let on = std::env::var("SHOAL_VM_FULL").is_ok_and(|v| v == "1");
    if !on {
        println!("skipped: set SHOAL_VM_FULL=1 to run the full cross-VM suite");
    }
    on
}

/// Holds one connection through `entry`'s published `port` for `secs`
/// while `during` runs; returns lab-http's report, or the failure.
async fn hold_while(
    lab: &VmLab,
    entry: usize,
    port: u16,
    secs: u64,
    during: impl FnOnce() -> Result<(), BoxError>,
) -> Result<String, BoxError> {
    let bin = lab_http()?;
    let target = format!("{}:{port}", node_addr(entry));
    let mut cmd = Command::new(bin);
    cmd.args(["hold", &target, &secs.to_string()]);
    let child = lab.in_client(move || {
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
    })??;
    // Let the connection be established and tracked first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    during()?;
    let out = child.wait_with_output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text.trim().to_owned())
    } else {
        Err(format!("the held connection broke: {text}").into())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn full_cross_vm_suite() -> Result<(), BoxError> {
    if !enabled() {
        return Ok(());
    }
    let (lab, timings) = VmLab::builder("vmfull")
        .nodes(3)
        .managers(1)
        .start()
        .await?;
    println!(
        "3 VMs up under {} in {:.1?}",
        lab.accel().name(),
        timings.total
    );
    all_ready(&lab, 1, 3, WITHIN).await?;
    let mut failures: Vec<String> = Vec::new();

    // node doctor on every VM (an empty cluster: peers, the data path).
    for k in 1..=3 {
        let out = lab.exec_output(k, &["shoal", "node", "doctor"])?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        println!("n{k} node doctor ({}):\n{text}", out.status);
        if !out.status.success() {
            failures.push(format!("node doctor failed on n{k}"));
        }
    }

    // A service only on n3, entered through n2.
    shoal(&lab, 1, &["network", "create", "-d", "overlay", "appnet"])?;
    shoal(
        &lab,
        1,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "pinned",
            "--constraint",
            "node.hostname==n3",
            "--network",
            "appnet",
            "-p",
            "8081:80",
            "host",
            "/usr/local/bin/lab-http",
            "serve",
            "80",
        ],
    )?;
    running(&lab, "pinned", 1, WITHIN).await?;
    let url = format!("http://{}:8081/", node_addr(2));
    eventually(WITHIN, "n2:8081 answers", || Ok(curl(&lab, &url).ok())).await?;
    for k in 1..=3 {
        let out = lab.exec_output(k, &["shoal", "node", "doctor"])?;
        println!("n{k} node doctor with a published port: {}", out.status);
        if !out.status.success() {
            failures.push(format!(
                "node doctor with a service failed on n{k}: {}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
    }

    // First a task on the entry VM itself: only the clsact filters' life
    // across a restart is at stake, not the path to another VM.
    shoal(
        &lab,
        1,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "local",
            "--constraint",
            "node.hostname==n2",
            "--network",
            "appnet",
            "-p",
            "8082:80",
            "host",
            "/usr/local/bin/lab-http",
            "serve",
            "80",
        ],
    )?;
    running(&lab, "local", 1, WITHIN).await?;
    let url = format!("http://{}:8082/", node_addr(2));
    eventually(WITHIN, "n2:8082 answers", || Ok(curl(&lab, &url).ok())).await?;
    match hold_while(&lab, 2, 8082, 40, || {
        lab.exec(2, &["systemctl", "restart", "shoald"])?;
        Ok(())
    })
    .await
    {
        Ok(report) => {
            println!("restart of shoald, task on the entry VM: connection survived ({report})")
        }
        Err(e) => failures.push(format!("restart of n2's shoald (task on n2): {e}")),
    }
    shoal(&lab, 1, &["service", "rm", "local"])?;

    // Restart shoald on the entry VM (n2) under a held connection.
    let t = Instant::now();
    match hold_while(&lab, 2, 8081, 40, || {
        lab.exec(2, &["systemctl", "restart", "shoald"])?;
        Ok(())
    })
    .await
    {
        Ok(report) => println!(
            "restart of the entry VM's shoald: connection survived ({report}) in {:.1?}",
            t.elapsed()
        ),
        Err(e) => failures.push(format!("restart of n2's shoald (entry): {e}")),
    }
    // And on the task's VM (n3): the task outlives its shoald (live restore).
    match hold_while(&lab, 2, 8081, 40, || {
        lab.exec(3, &["systemctl", "restart", "shoald"])?;
        Ok(())
    })
    .await
    {
        Ok(report) => println!("restart of the task VM's shoald: connection survived ({report})"),
        Err(e) => failures.push(format!("restart of n3's shoald (task's VM): {e}")),
    }

    // Kill n3: the task moves, the published port keeps answering from n1, n2.
    shoal(&lab, 1, &["service", "rm", "pinned"])?;
    shoal(
        &lab,
        1,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--replicas",
            "2",
            "--network",
            "appnet",
            "-p",
            "8080:80",
            "host",
            "/usr/local/bin/lab-http",
            "serve",
            "80",
        ],
    )?;
    running(&lab, "web", 2, WITHIN).await?;
    let placed = common::tasks(&lab, 1, "web")?;
    println!(
        "web placed: {:?}",
        placed
            .iter()
            .map(|t| (&t.name, &t.node))
            .collect::<Vec<_>>()
    );
    // A worker that runs a task (n1 is the only manager: it must stay).
    let killed = placed
        .iter()
        .filter(|t| t.desired == "running")
        .find_map(|t| match t.node.as_str() {
            "n2" => Some(2),
            "n3" => Some(3),
            _ => None,
        })
        .ok_or("no task of web on a worker")?;
    let other = 5 - killed;
    lab.kill(killed).await?;
    let killed_at = Instant::now();
    let (mut ok, mut failed) = (0u32, 0u32);
    let (mut first_fail, mut last_fail): (Option<Duration>, Option<Duration>) = (None, None);
    let mut back = None;
    while killed_at.elapsed() < Duration::from_secs(240) {
        for k in [1, other] {
            match curl(&lab, &format!("http://{}:8080/", node_addr(k)))
                .and_then(|b| split_answer(&b))
            {
                Ok(_) => ok += 1,
                Err(_) => {
                    failed += 1;
                    first_fail.get_or_insert(killed_at.elapsed());
                    last_fail = Some(killed_at.elapsed());
                }
            }
        }
        if back.is_none() {
            let running = common::tasks(&lab, 1, "web")?
                .iter()
                .filter(|t| {
                    t.desired == "running" && t.state == "running" && t.node != format!("n{killed}")
                })
                .count();
            if running == 2 {
                back = Some(killed_at.elapsed());
            }
        }
        if back.is_some_and(|b| killed_at.elapsed() > b + Duration::from_secs(10)) {
            break;
        }
    }
    println!(
        "n{killed} killed: {ok} requests answered, {failed} failed; failures from {first_fail:?} to {last_fail:?} (outage {:?}); 2 tasks running elsewhere after {back:?}",
        last_fail.zip(first_fail).map(|(l, f)| l - f)
    );
    if back.is_none() {
        failures.push(format!("n{killed}'s task was not rescheduled within 240 s"));
    }
    println!("node ls after the kill: {:?}", nodes(&lab, 1)?);

    // The killed VM boots again and rejoins by itself (shoald is enabled).
    let t = Instant::now();
    lab.start(killed, WITHIN).await?;
    match all_ready(&lab, 1, 3, WITHIN).await {
        Ok(()) => println!("n{killed} booted and rejoined in {:.1?}", t.elapsed()),
        Err(e) => failures.push(format!("n{killed} after boot: {e}")),
    }
    // A rebooted VM rejoins by itself.
    let t = Instant::now();
    lab.reboot(other, WITHIN).await?;
    match all_ready(&lab, 1, 3, WITHIN).await {
        Ok(()) => println!("n{other} rebooted and rejoined in {:.1?}", t.elapsed()),
        Err(e) => failures.push(format!("n{other} after reboot: {e}")),
    }
    let url = format!("http://{}:8080/", node_addr(other));
    if let Err(e) = eventually(WITHIN, "the rebooted VM's port 8080 answers", || {
        Ok(curl(&lab, &url).ok())
    })
    .await
    {
        failures.push(e.to_string());
    }

    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{} checks failed:\n{}", failures.len(), failures.join("\n")).into())
    }
}
