//! Tasks as containers, end to end: real shoald processes in a lab, images
//! built here (busybox from Debian's busybox-static), tasks run by runc.
//!
//! - An image loaded on n1 only runs on every node: the others fetch its
//!   blobs from n1 over 2377. The published port answers on every node and
//!   busybox httpd logs the client's own address.
//! - An image no one has ends the task `rejected` with docker's words, until
//!   a node loads it: the next task fetches it from there.
//! - Contained: no task reads the node's keys or reaches shoald's socket,
//!   its capabilities are docker's default set, mount and unshare fail.
//! - Limits: a task over its memory limit is OOM-killed and `service ps`
//!   says so; a reservation larger than any node leaves the task pending
//!   with swarm's reason.
//! - A named volume keeps its data across a task's restarts on a node.
//! - A task keeps running, serving and logging while its node's shoald is
//!   stopped, and the restarted shoald adopts it.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use shoal_lab::{Formation, Lab, eventually, images};

async fn cluster(tag: &str, nodes: usize) -> anyhow::Result<Lab> {
    Ok(images::busybox_lab(tag, Formation::fast(1, nodes)).await?)
}

async fn running(lab: &Lab, service: &str, n: usize) -> anyhow::Result<()> {
    Ok(lab.running(service, n, Duration::from_secs(60)).await?)
}

#[tokio::test]
async fn an_image_loaded_on_one_node_runs_on_every_node() -> anyhow::Result<()> {
    let lab = cluster("img", 3).await?;
    for k in [2, 3] {
        ensure!(
            !lab.shoal(k, &["image", "ls"])?.contains("busybox"),
            "n{k} has busybox before any task needs it"
        );
    }
    let out = lab.shoal(
        1,
        &[
            "service", "create", "--detach", "--name", "web", "--mode", "global", "-p", "8080:80",
            "busybox", "httpd", "-f", "-vv", "-p", "80", "-h", "/www",
        ],
    )?;
    ensure!(!out.contains("could not be accessed"), "{out}");
    running(&lab, "web", 3).await?;
    // Pinned by digest, as swarm pins image@sha256:.
    let inspect = lab.shoal(1, &["service", "inspect", "web"])?;
    ensure!(inspect.contains("busybox:latest@sha256:"), "{inspect}");
    for k in [2, 3] {
        let ls = lab.shoal(k, &["image", "ls"])?;
        ensure!(ls.contains("busybox"), "n{k} did not fetch the image: {ls}");
    }
    let client = lab.client_addr().to_string();
    for k in 1..=3 {
        let url = format!("http://{}:8080/", lab.node(k).addr());
        let (code, body) = eventually(Duration::from_secs(15), "published port answers", || {
            let (code, body) = lab.curl(&url)?;
            Ok((code == "200").then_some((code, body)))
        })
        .await
        .with_context(|| format!("{url} never answered"))?;
        ensure!(body.contains("shoal busybox"), "{url}: {code} {body}");
    }
    // httpd -vv logs each request's peer (on stderr): the client's own
    // address.
    lab.logs_until(
        "web",
        Duration::from_secs(10),
        "client address in logs",
        |l| l.contains(&client),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn an_image_no_one_has_is_rejected_until_a_node_loads_it() -> anyhow::Result<()> {
    let lab = cluster("img-missing", 2).await?;
    let out = lab.shoal_output(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "ghost",
            "--constraint",
            "node.hostname==n2",
            "--restart-delay",
            "1s",
            "nosuch:1",
            "sleep",
            "600",
        ],
        b"",
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{stderr}");
    ensure!(
        stderr.contains("could not be accessed"),
        "no warning: {stderr}"
    );
    let row = eventually(Duration::from_secs(30), "task rejected", || {
        let rows = lab.service_ps(1, "ghost")?;
        Ok(rows.into_iter().find(|r| r.state == "rejected"))
    })
    .await?;
    ensure!(
        row.error.contains("No such image: nosuch:1"),
        "error: {:?}",
        row.error
    );
    // The image appears on n1 after the service was made, unpinned: the
    // next task on n2 fetches it from n1 under what the catalogue resolves
    // the tag to now. `image tag` answers once the catalogue has it.
    lab.shoal(1, &["image", "tag", "busybox", "nosuch:1"])?;
    running(&lab, "ghost", 1).await?;
    let ls = lab.shoal(2, &["image", "ls"])?;
    ensure!(ls.contains("nosuch"), "n2 did not fetch the image: {ls}");
    Ok(())
}

#[tokio::test]
async fn tasks_cannot_reach_the_nodes_keys_sockets_or_kernel() -> anyhow::Result<()> {
    let lab = cluster("img-jail", 1).await?;
    let state = lab.node(1).state_dir().display().to_string();
    let probe = format!(
        "cat {state}/swarm/key.pem && echo KEY-READ; \
         ls /run/shoal*/ 2>/dev/null && echo SOCKET-SEEN; \
         grep CapEff /proc/self/status; \
         mount -t tmpfs x /mnt 2>/dev/null && echo MOUNTED; \
         unshare -m true 2>/dev/null && echo UNSHARED; \
         ls /sys/fs/bpf 2>/dev/null | head -1 | grep . && echo BPF-SEEN; \
         echo PROBE-DONE"
    );
    for (name, image, shell) in [
        ("jail-host", "host", "/bin/sh"),
        ("jail-bb", "busybox", "sh"),
    ] {
        lab.shoal(
            1,
            &[
                "service",
                "create",
                "--detach",
                "--name",
                name,
                "--restart-condition",
                "none",
                image,
                shell,
                "-c",
                &probe,
            ],
        )?;
        let logs = lab
            .logs_until(name, Duration::from_secs(60), "probe done", |l| {
                l.contains("PROBE-DONE")
            })
            .await?;
        for bad in ["KEY-READ", "SOCKET-SEEN", "MOUNTED", "UNSHARED", "BPF-SEEN"] {
            ensure!(!logs.contains(bad), "{name}: {bad}\n{logs}");
        }
        ensure!(
            logs.contains("CapEff:\t00000000a80425fb"),
            "{name}: not docker's default capabilities\n{logs}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn limits_and_reservations() -> anyhow::Result<()> {
    let lab = cluster("img-limits", 2).await?;
    // busybox tail keeps its whole last line: 64 MiB without a newline.
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "hog",
            "--limit-memory",
            "32M",
            "--restart-condition",
            "none",
            "busybox",
            "sh",
            "-c",
            "head -c 67108864 /dev/zero | tail -c 67108864 >/dev/null",
        ],
    )?;
    let row = eventually(Duration::from_secs(60), "hog ended", || {
        let rows = lab.service_ps(1, "hog")?;
        Ok(rows.into_iter().find(|r| r.state == "failed"))
    })
    .await?;
    ensure!(
        row.error.contains("137") && row.error.contains("out of memory"),
        "not shown as an OOM kill: {:?}",
        row.error
    );

    lab.shoal(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "huge",
            "--reserve-memory",
            "100000G",
            "busybox",
            "sleep",
            "1000",
        ],
    )?;
    let row = eventually(Duration::from_secs(20), "huge pending", || {
        let rows = lab.service_ps(1, "huge")?;
        Ok(rows
            .into_iter()
            .find(|r| r.state == "pending" && !r.error.is_empty()))
    })
    .await?;
    ensure!(
        row.error.contains("insufficient resources on 2 nodes"),
        "{:?}",
        row.error
    );
    Ok(())
}

#[tokio::test]
async fn a_named_volume_keeps_data_across_restarts() -> anyhow::Result<()> {
    let lab = cluster("img-vol", 2).await?;
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "counter",
            "--constraint",
            "node.hostname==n2",
            "--restart-delay",
            "0s",
            "--mount",
            "type=volume,source=counts,target=/data",
            "busybox",
            "sh",
            "-c",
            "echo x >> /data/n; echo runs=$(wc -l < /data/n); sleep 1",
        ],
    )?;
    lab.logs_until("counter", Duration::from_secs(60), "third run", |l| {
        l.contains("runs=3")
    })
    .await?;
    let vols = lab.shoal(2, &["volume", "ls"])?;
    ensure!(vols.contains("counts"), "{vols}");
    let refused = lab.shoal_refused(2, &["volume", "rm", "counts"])?;
    ensure!(refused.contains("in use"), "{refused}");
    Ok(())
}

#[tokio::test]
async fn a_task_outlives_its_shoald_and_is_adopted() -> anyhow::Result<()> {
    // Docker's default heartbeat (5 s): a node is declared down, and its
    // tasks replaced, only after three missed ones, as swarm does; the
    // lab's 1 s would call a 3 s restart on a loaded machine a failure.
    let lab = images::busybox_lab("img-live", Formation::plain(1, 2)).await?;
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "tick",
            "--constraint",
            "node.hostname==n2",
            "busybox",
            "sh",
            "-c",
            "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done",
        ],
    )?;
    running(&lab, "tick", 1).await?;
    let before = lab
        .service_ps(1, "tick")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    lab.stop_daemon(2).await?;
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    lab.start(2).await?;
    // Same task, still running: adopted, not replaced.
    eventually(Duration::from_secs(30), "adopted task running", || {
        let rows = lab.service_ps(1, "tick")?;
        Ok((rows.len() == 1 && rows[0].running() && rows[0].id == before[0].id).then_some(()))
    })
    .await
    .with_context(|| format!("{:?}", lab.service_ps(1, "tick")))?;
    // The log kept growing while shoald was down: no gap of more than a
    // second between ticks.
    let logs = lab
        .logs_until("tick", Duration::from_secs(10), "ticks", |l| {
            l.lines().count() > 30
        })
        .await?;
    let ticks: Vec<u64> = logs
        .lines()
        .filter_map(|l| l.trim().strip_prefix("tick ")?.parse().ok())
        .collect();
    ensure!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "ticks missing from the log around the restart ({:?} after the stop)",
        down.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn images_pulled_from_a_registry_are_pinned_by_digest() -> anyhow::Result<()> {
    let lab = cluster("img-reg", 2).await?;
    let registry = lab.start_registry().await?;
    let reference = format!("{}/lab/web:v1", images::lab_registry());
    let first = registry.push(images::busybox_archive()?, &reference)?;
    lab.shoal(1, &["node", "update", "--label-add", "zone=a", "n1"])?;
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "pulled",
            "--mode",
            "global",
            "--constraint",
            "node.labels.zone==a",
            "-p",
            "8081:80",
            &reference,
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        ],
    )?;
    running(&lab, "pulled", 1)
        .await
        .with_context(|| registry.log_tail())?;
    let inspect = lab.shoal(1, &["service", "inspect", "pulled"])?;
    ensure!(inspect.contains(&first), "not pinned to {first}: {inspect}");
    // The tag moves to another image; a task started after that still
    // runs the pinned bits.
    let second = registry.push(&images::busybox_serving("moved")?, &reference)?;
    ensure!(second != first, "the tag did not move");
    lab.shoal(1, &["node", "update", "--label-add", "zone=a", "n2"])?;
    running(&lab, "pulled", 2).await?;
    for k in 1..=2 {
        let url = format!("http://{}:8081/", lab.node(k).addr());
        let (code, body) = eventually(Duration::from_secs(30), "pulled port answers", || {
            let (code, body) = lab.curl(&url)?;
            Ok((code == "200").then_some((code, body)))
        })
        .await?;
        ensure!(
            body.contains("shoal busybox") && !body.contains("moved"),
            "{url}: {code} {body}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn containers_reach_each_other_by_name_vip_and_overlay() -> anyhow::Result<()> {
    let lab = cluster("img-mesh", 3).await?;
    lab.load_image(1, images::lab_tools_archive()?)?;
    lab.shoal(1, &["network", "create", "appnet"])?;
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "web",
            "--replicas",
            "2",
            "--constraint",
            "node.hostname!=n3",
            "--network",
            "appnet",
            "-p",
            "8082:80",
            images::LAB_TOOLS,
            "lab-http",
            "serve",
            "80",
        ],
    )?;
    running(&lab, "web", 2).await?;
    // Through the published port from the client: both containers answer
    // and see the client's own address.
    let client = lab.client_addr().to_string();
    let url = format!("http://{}:8082/", lab.node(3).addr());
    let (_, body) = eventually(Duration::from_secs(15), "published port answers", || {
        let (code, body) = lab.curl(&url)?;
        Ok((code == "200").then_some((code, body)))
    })
    .await?;
    ensure!(body.ends_with(&client), "{body}");
    // From a busybox container on n3: the service by name (its VIP, DNS at
    // 127.0.0.11) and both tasks by `tasks.web` across the overlay.
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "probe",
            "--network",
            "appnet",
            "--constraint",
            "node.hostname==n3",
            "--restart-condition",
            "none",
            "busybox",
            "sh",
            "-c",
            "wget -qO- http://web/ && echo; nslookup tasks.web 127.0.0.11; echo PROBE-DONE",
        ],
    )?;
    let logs = lab
        .logs_until("probe", Duration::from_secs(60), "probe done", |l| {
            l.contains("PROBE-DONE")
        })
        .await?;
    ensure!(logs.contains("web."), "no answer through the VIP:\n{logs}");
    let addrs: Vec<String> = lab
        .service_ps(1, "web")
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .iter()
        .filter(|r| r.running())
        .filter_map(|r| r.addresses.get(1).cloned())
        .collect();
    for a in &addrs {
        let ip = a.split('/').next().unwrap_or_default();
        ensure!(logs.contains(ip), "tasks.web lacks {ip}:\n{logs}");
    }
    Ok(())
}

#[tokio::test]
async fn with_registry_auth_passes_the_clients_login_to_the_nodes() -> anyhow::Result<()> {
    let lab = cluster("img-auth", 2).await?;
    let registry = lab.start_auth_registry().await?;
    let reference = format!("{}/lab/private:v1", images::lab_auth_registry());
    let digest = registry.push_as(
        images::busybox_archive()?,
        &reference,
        Some(images::REGISTRY_USER),
    )?;
    // What `docker login` leaves in ~/.docker/config.json.
    let docker_config = lab.dir().join("docker-config");
    std::fs::create_dir_all(&docker_config)?;
    let (user, password) = images::REGISTRY_USER;
    let auth = {
        use std::io::Write;
        let mut enc = Vec::new();
        // base64 of user:password, as docker writes it.
        let mut b64 = std::process::Command::new("base64")
            .arg("-w0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        b64.stdin
            .take()
            .context("stdin")?
            .write_all(format!("{user}:{password}").as_bytes())?;
        enc.extend(b64.wait_with_output()?.stdout);
        String::from_utf8(enc)?
    };
    std::fs::write(
        docker_config.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#,
            images::lab_auth_registry()
        ),
    )?;
    let create = |name: &str, with_auth: bool| -> anyhow::Result<std::process::Output> {
        let mut args = vec!["service", "create", "--detach", "--name", name];
        if with_auth {
            args.push("--with-registry-auth");
        }
        args.extend([
            "--restart-condition",
            "none",
            reference.as_str(),
            "sleep",
            "1000",
        ]);
        Ok(lab
            .command(1, shoal_lab::shoal_path()?)
            .env("DOCKER_CONFIG", &docker_config)
            .args(&args)
            .output()?)
    };
    // Without the login, no node may pull it.
    let out = create("nologin", false)?;
    ensure!(out.status.success(), "{out:?}");
    let row = eventually(Duration::from_secs(60), "nologin rejected", || {
        let rows = lab.service_ps(1, "nologin")?;
        Ok(rows.into_iter().find(|r| r.state == "rejected"))
    })
    .await
    .with_context(|| registry.log_tail())?;
    ensure!(row.error.contains("No such image"), "{:?}", row.error);
    // With it: pinned at create, pulled and running.
    let out = create("login", true)?;
    ensure!(out.status.success(), "{out:?}");
    running(&lab, "login", 1)
        .await
        .with_context(|| registry.log_tail())?;
    let inspect = lab.shoal(1, &["service", "inspect", "login"])?;
    ensure!(inspect.contains(&digest), "not pinned: {inspect}");
    // The credentials are never shown.
    ensure!(
        !inspect.contains(password) && !inspect.to_lowercase().contains("registry_auth"),
        "inspect shows the credentials: {inspect}"
    );
    Ok(())
}
