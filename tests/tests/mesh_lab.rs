//! The routing mesh end to end: real shoald processes in a 3-node lab, a
//! service published on 8080 with tasks on n1 and n2 only, and a client on
//! the underlay that is not a node (198.18.0.250).
//!
//! - Every node answers 8080, n3 with no task too; requests spread over
//!   both tasks; each task sees the client's own address as the source.
//! - UDP published ports work the same way.
//! - A task reaches the service by its VIP.
//! - A backend that goes stops receiving new connections.

use std::{collections::BTreeSet, time::Duration};

use anyhow::{Context, ensure};
use shoal_lab::{Lab, eventually};

const HTTP: &str = env!("CARGO_BIN_EXE_lab-http");

/// Runs `command` once as the service `name` on appnet on n3, and returns
/// its logs once they name a `web.` task (within 30 s).
async fn probe_from_n3(
    lab: &Lab,
    name: &str,
    what: &str,
    command: &[&str],
) -> anyhow::Result<String> {
    let mut args = vec![
        "service",
        "create",
        "--detach",
        "--name",
        name,
        "--network",
        "appnet",
        "--constraint",
        "node.hostname==n3",
        "--restart-condition",
        "none",
        "host",
    ];
    args.extend_from_slice(command);
    lab.shoal(1, &args)?;
    Ok(eventually(Duration::from_secs(30), what, || {
        let out = lab
            .shoal(1, &["service", "logs", "--raw", name])
            .unwrap_or_default();
        Ok(out.contains("web.").then_some(out))
    })
    .await?)
}

async fn cluster(tag: &str) -> anyhow::Result<Lab> {
    let lab = Lab::builder(tag).nodes(3).client(true).start().await?;
    lab.form_swarm(1)?;
    // Services are created once every node is ready, so the scheduler
    // spreads their tasks (a node still joining would get none).
    lab.nodes_ready(3, Duration::from_secs(15)).await?;
    Ok(lab)
}

/// Service `web`: two tasks of `lab-http serve 80`, off n3 (which then has
/// none), with `extra` flags; returns once both run.
async fn web(lab: &Lab, extra: &[&str]) -> anyhow::Result<()> {
    let mut args = vec![
        "service",
        "create",
        "--detach",
        "--name",
        "web",
        "--replicas",
        "2",
        "--constraint",
        "node.hostname!=n3",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["host", HTTP, "serve", "80"]);
    lab.shoal(1, &args)?;
    running(lab, "web", 2).await
}

async fn running(lab: &Lab, service: &str, n: usize) -> anyhow::Result<()> {
    Ok(lab.running(service, n, Duration::from_secs(30)).await?)
}

#[tokio::test]
async fn published_ports_answer_on_every_node_and_keep_the_client_address() -> anyhow::Result<()> {
    let lab = cluster("mesh").await?;
    lab.shoal(1, &["network", "create", "appnet"])?;
    web(
        &lab,
        &["--network", "appnet", "-p", "8080:80", "-p", "5353:80/udp"],
    )
    .await?;
    let client = lab.client_addr().to_string();

    // Every node answers, n3 included, and both backends get requests.
    let mut backends = BTreeSet::new();
    for k in 1..=3 {
        let url = format!("http://{}:8080/", lab.node(k).addr());
        let (code, body) = eventually(Duration::from_secs(15), "published port answers", || {
            let (code, body) = lab.curl(&url)?;
            Ok((code == "200").then_some((code, body)))
        })
        .await
        .with_context(|| format!("{url} never answered"))?;
        ensure!(code == "200");
        for _ in 0..12 {
            let (code, body) = lab.curl(&url)?;
            ensure!(code == "200", "{url}: {code} {body}");
            let (task, seen) = body.split_once(' ').context("body")?;
            ensure!(
                seen == client,
                "{url}: the backend saw {seen}, not the client's {client} ({body})"
            );
            backends.insert(task.to_owned());
        }
        let _ = body;
    }
    ensure!(
        backends.len() == 2,
        "requests did not spread over both tasks: {backends:?}"
    );

    // A task reaches the service through its VIP on appnet.
    let inspect = lab.shoal(1, &["service", "inspect", "web", "--format", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&inspect)?;
    let vip = v
        .pointer("/0/vips")
        .or_else(|| v.pointer("/vips"))
        .and_then(|vips| vips.as_array())
        .and_then(|vips| {
            vips.iter().find_map(|x| {
                let net = x.get("network")?.as_str()?;
                (net == "appnet").then(|| x.get("addr")?.as_str().map(str::to_owned))?
            })
        })
        .with_context(|| format!("no appnet VIP in {inspect}"))?;
    let vip = vip.split('/').next().unwrap_or(&vip).to_owned();
    let url = format!("http://{vip}:80/");
    let logs = probe_from_n3(
        &lab,
        "probe",
        "probe reached the VIP",
        &["/usr/bin/curl", "-s", "-m", "5", &url],
    )
    .await?;
    ensure!(logs.contains("web."), "{logs}");

    // UDP through the published port.
    let out = lab
        .client_command(HTTP)
        .args(["udp", &format!("{}:5353", lab.node(3).addr())])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && text.contains(&client),
        "UDP via n3: {out:?}"
    );
    ensure!(
        text.contains(&format!("from {}:5353", lab.node(3).addr())),
        "the reply must come from the address the client sent to: {text}"
    );

    // node doctor on n3 (no task): the port is programmed, both backends
    // answer through the overlay, the peers are reachable.
    let out = lab
        .command(3, shoal_lab::shoal_path()?)
        .args(["node", "doctor"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "doctor on n3: {out:?}");
    ensure!(
        text.contains("port 8080/tcp") && text.contains("2 of 2 backends answer"),
        "{text}"
    );
    ensure!(
        text.contains(&format!("peer {} overlay", lab.node(1).addr())),
        "{text}"
    );
    // A port whose tasks do not listen on its target: doctor says so.
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "deaf",
            "--constraint",
            "node.hostname==n1",
            "-p",
            "8181:81",
            "host",
            HTTP,
            "serve",
            "80",
        ],
    )?;
    running(&lab, "deaf", 1).await?;
    let text = eventually(Duration::from_secs(10), "doctor sees the deaf port", || {
        let out = lab
            .command(3, shoal_lab::shoal_path()?)
            .args(["node", "doctor"])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        Ok((!out.status.success() && text.contains("0 of 1 backends answer")).then_some(text))
    })
    .await?;
    ensure!(text.contains("0 of 1 backends answer"), "{text}");
    lab.shoal(1, &["service", "rm", "deaf"])?;

    // Scale to one task on n1: n2's task goes, and no request fails after
    // the control plane lists it as gone.
    lab.shoal(1, &["service", "scale", "--detach", "web=1"])?;
    running(&lab, "web", 1).await?;
    let url = format!("http://{}:8080/", lab.node(3).addr());
    let mut ok = 0;
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        let (code, body) = lab.curl(&url)?;
        if code == "200" {
            ok += 1;
            seen.insert(body.split(' ').next().unwrap_or_default().to_owned());
        }
    }
    ensure!(
        ok == 20 && seen.len() == 1,
        "after scale-down: {ok}/20 ok, {seen:?}"
    );
    // Scale up again: the new task gets traffic.
    lab.shoal(1, &["service", "scale", "--detach", "web=2"])?;
    running(&lab, "web", 2).await?;
    eventually(Duration::from_secs(15), "both tasks serve again", || {
        let mut seen = BTreeSet::new();
        for _ in 0..12 {
            let (code, body) = lab.curl(&url)?;
            if code == "200" {
                seen.insert(body.split(' ').next().unwrap_or_default().to_owned());
            }
        }
        Ok((seen.len() == 2).then_some(()))
    })
    .await?;

    // service update --publish-add / --publish-rm, live.
    lab.shoal(
        1,
        &[
            "service",
            "update",
            "--detach",
            "--publish-add",
            "9191:80",
            "web",
        ],
    )?;
    let extra = format!("http://{}:9191/", lab.node(3).addr());
    eventually(Duration::from_secs(15), "the added port answers", || {
        Ok((lab.curl(&extra)?.0 == "200").then_some(()))
    })
    .await?;
    lab.shoal(
        1,
        &[
            "service",
            "update",
            "--detach",
            "--publish-rm",
            "9191",
            "web",
        ],
    )?;
    eventually(Duration::from_secs(15), "the removed port is gone", || {
        Ok((lab.curl(&extra)?.0 != "200").then_some(()))
    })
    .await?;
    ensure!(lab.curl(&url)?.0 == "200", "8080 must stay");

    // A published port is one service's: refused naming its owner.
    let out = lab
        .command(1, shoal_lab::shoal_path()?)
        .args([
            "service", "create", "--detach", "--name", "thief", "-p", "8080:80", "host", HTTP,
            "serve", "80",
        ])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("8080") && err.contains("web"),
        "{out:?}"
    );
    // dnsrr has no VIP to balance an ingress port with.
    let out = lab
        .command(1, shoal_lab::shoal_path()?)
        .args([
            "service",
            "create",
            "--detach",
            "--name",
            "rr",
            "--endpoint-mode",
            "dnsrr",
            "-p",
            "8282:80",
            "host",
            HTTP,
            "serve",
            "80",
        ])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success() && err.contains("dnsrr"), "{out:?}");

    // Host mode: only the node running the task answers, straight to it.
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "hostweb",
            "--constraint",
            "node.hostname==n2",
            "-p",
            "published=9090,target=80,mode=host",
            "host",
            HTTP,
            "serve",
            "80",
        ],
    )?;
    running(&lab, "hostweb", 1).await?;
    let on_n2 = format!("http://{}:9090/", lab.node(2).addr());
    let (code, body) = eventually(Duration::from_secs(15), "host-mode port on n2", || {
        let r = lab.curl(&on_n2)?;
        Ok((r.0 == "200").then_some(r))
    })
    .await?;
    ensure!(code == "200" && body.ends_with(&client), "{body}");
    let (code, _) = lab.curl(&format!("http://{}:9090/", lab.node(3).addr()))?;
    ensure!(code != "200", "n3 has no hostweb task but answered 9090");
    lab.down()?;
    Ok(())
}

/// Outcomes of a bounded request loop: (seconds since start, ok).
fn request_loop(lab: &Lab, url: &str, for_secs: f64) -> anyhow::Result<Vec<(f64, bool)>> {
    let start = std::time::Instant::now();
    let mut out = Vec::new();
    while start.elapsed().as_secs_f64() < for_secs {
        let ok = lab
            .client_command("curl")
            .args([
                "-s",
                "-m",
                "1",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                url,
            ])
            .output()
            .is_ok_and(|o| o.stdout == b"200");
        out.push((start.elapsed().as_secs_f64(), ok));
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(out)
}

#[tokio::test]
async fn connections_survive_a_restart_dead_backends_leave_and_names_resolve() -> anyhow::Result<()>
{
    let lab = cluster("mesh2").await?;
    lab.shoal(1, &["network", "create", "appnet"])?;
    web(
        &lab,
        &[
            "--network",
            "appnet",
            "--restart-delay",
            "0s",
            "-p",
            "8080:80",
        ],
    )
    .await?;
    let url = format!("http://{}:8080/", lab.node(3).addr());
    eventually(Duration::from_secs(15), "n3 answers", || {
        Ok((lab.curl(&url)?.0 == "200").then_some(()))
    })
    .await?;

    // A long-lived connection through n3 while n3's shoald restarts: the
    // pinned programs and maps keep serving it.
    let hold = lab
        .client_command(HTTP)
        .args(["hold", &format!("{}:8080", lab.node(3).addr()), "8"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    lab.stop(3).await?;
    lab.start(3).await?;
    let out = tokio::task::spawn_blocking(move || hold.wait_with_output()).await??;
    ensure!(
        out.status.success(),
        "the connection through n3 broke across its restart: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(lab.node(3).log())?;
    ensure!(
        log.contains("routing mesh restored from the pinned maps"),
        "n3 did not restore its maps"
    );

    // Names: `web` is its VIP on appnet, `tasks.web` both tasks.
    let rows = lab.service_ps(1, "web").map_err(|e| anyhow::anyhow!(e))?;
    let task_ips: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.running())
        .flat_map(|r| r.addresses.iter())
        // Their appnet addresses: the names task is not on ingress
        // (10.0.0.0/24, made at init).
        .filter(|a| !a.starts_with("10.0.0."))
        .filter_map(|a| a.split('/').next().map(str::to_owned))
        .collect();
    let logs = probe_from_n3(
        &lab,
        "names",
        "the names task ran",
        &[
            "/bin/sh",
            "-c",
            "getent ahostsv4 tasks.web; /usr/bin/curl -s -m 5 http://web/",
        ],
    )
    .await?;
    let resolved: BTreeSet<String> = logs
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok())
        .map(str::to_owned)
        .collect();
    ensure!(
        task_ips.iter().all(|ip| resolved.contains(ip)),
        "tasks.web gave {resolved:?}, tasks are {task_ips:?}:\n{logs}"
    );

    // Kill one backend's process under a request loop through n3: requests
    // fail at most briefly, until its node reports the task gone.
    let victim = rows
        .iter()
        .find(|r| r.running() && r.node == "n2")
        .context("a task on n2")?
        .name
        .clone();
    let pid = shoal_lab::task_pid(&victim, "serve 80").context("victim pid")?;
    let url2 = url.clone();
    let lab_ref = &lab;
    let outcomes = std::thread::scope(|s| {
        let looper = s.spawn(move || request_loop(lab_ref, &url2, 6.0));
        std::thread::sleep(Duration::from_secs(1));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(anyhow::Error::from)?;
        looper
            .join()
            .map_err(|_| anyhow::anyhow!("loop panicked"))?
    })?;
    let last_error = outcomes
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(t, _)| *t)
        .fold(None, |a: Option<f64>, t| Some(a.map_or(t, |a| a.max(t))));
    let errors = outcomes.iter().filter(|(_, ok)| !ok).count();
    eprintln!(
        "killed backend: {errors} of {} requests failed, the last {:.2} s after the loop began (kill at 1 s)",
        outcomes.len(),
        last_error.unwrap_or(0.0)
    );
    ensure!(
        last_error.is_none_or(|t| t < 1.0 + 3.0),
        "requests still failed {:?} s after the kill: {outcomes:?}",
        last_error.map(|t| t - 1.0)
    );
    let tail_ok = outcomes.iter().rev().take(10).all(|(_, ok)| *ok);
    ensure!(tail_ok, "the loop did not end healthy: {outcomes:?}");
    lab.down()?;
    Ok(())
}

/// Drain before stop: a node's task being shut down takes no new
/// connection but finishes the one it has (lab-http drains on SIGTERM),
/// and no request through the mesh fails meanwhile.
#[tokio::test]
async fn draining_a_node_finishes_its_connections_and_fails_no_request() -> anyhow::Result<()> {
    use std::io::BufRead;
    let lab = cluster("mesh3").await?;
    web(&lab, &["-p", "8080:80"]).await?;
    let url = format!("http://{}:8080/", lab.node(3).addr());
    eventually(Duration::from_secs(15), "n3 answers", || {
        Ok((lab.curl(&url)?.0 == "200").then_some(()))
    })
    .await?;

    let mut hold = lab
        .client_command(HTTP)
        .args(["hold", &format!("{}:8080", lab.node(3).addr()), "6"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut first = String::new();
    // Kept open to the end: hold prints its total when done.
    let mut stdout = std::io::BufReader::new(hold.stdout.take().context("hold's stdout")?);
    stdout.read_line(&mut first)?;
    let task = first
        .strip_prefix("first ")
        .and_then(|b| b.split_whitespace().next())
        .with_context(|| format!("hold said {first:?}"))?
        .to_owned();
    let rows = lab.service_ps(1, "web").map_err(|e| anyhow::anyhow!(e))?;
    // The other task stays on another node: draining this one leaves a
    // backend (with both tasks on one node, a drain is an outage until
    // their replacements run, in swarm as here).
    let nodes: BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.running())
        .map(|r| r.node.as_str())
        .collect();
    ensure!(nodes.len() == 2, "web's tasks are not spread: {rows:?}");
    let node = rows
        .iter()
        .find(|r| r.running() && r.name == task)
        .with_context(|| format!("{task} in {rows:?}"))?
        .node
        .clone();

    lab.shoal(1, &["node", "update", "--availability", "drain", &node])?;
    let outcomes = request_loop(&lab, &url, 4.0)?;
    let failed = outcomes.iter().filter(|(_, ok)| !ok).count();
    eprintln!(
        "drain of {node}: {failed} of {} requests failed",
        outcomes.len()
    );
    ensure!(
        failed == 0,
        "{failed} of {} requests failed while {node} drained: {outcomes:?}",
        outcomes.len()
    );
    let (out, rest) = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        let read = std::io::Read::read_to_string(&mut stdout, &mut rest);
        (hold.wait_with_output(), read.map(|_| rest))
    })
    .await?;
    let (out, rest) = (out?, rest?);
    ensure!(
        out.status.success() && rest.contains("held"),
        "the connection to the draining {task} on {node} broke: {rest} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And the drained task did go.
    eventually(
        Duration::from_secs(20),
        "the drained task shut down",
        || {
            let rows = lab.service_ps(1, "web")?;
            Ok(rows
                .iter()
                .all(|r| r.node != node || !r.running())
                .then_some(()))
        },
    )
    .await?;
    lab.down()?;
    Ok(())
}
