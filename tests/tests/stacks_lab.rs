//! `shoal stack` in the lab (issue 14): a compose file deployed unchanged,
//! re-deployed as an update, and removed; bad files refused before anything
//! is made.

use std::{
    net::{SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, ensure};
use shoal_lab::{
    Formation, Lab, eventually,
    images::{busybox_lab, web_image},
};

const V1: &str = "shoal.local/web:v1";
const V2: &str = "shoal.local/web:v2";
const API: &str = "shoal.local/web:api";
const STACK: &str = "shop";
const PORT: u16 = 8080;

/// The stack of the issue: two overlays, a published port, a secret and a
/// config from files (the config `0555`, YAML 1.1 octal), a healthcheck,
/// start-first with rollback, a global service, a dnsrr one placed on the
/// manager, one on a node label, limits, and an `x-` extension with an
/// anchor and a merge key.
/// A service the prune step leaves out of the file.
const ZONED: &str = "  zoned:
    image: busybox
    command: [\"sleep\", \"100000\"]
    deploy:
      replicas: 2
      placement:
        constraints: [node.labels.zone == a]
";

fn stack_file(web_image: &str) -> String {
    format!(
        r#"version: "3.8"
x-probe-env: &probe-env
  GREETING: hello
services:
  web:
    image: {web_image}
    ports:
      - "{PORT}:80"
    networks: [front, back]
    healthcheck:
      test: ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1/"]
      interval: 1s
      retries: 2
      start_period: 30s
    deploy:
      replicas: 3
      update_config:
        parallelism: 1
        order: start-first
        failure_action: rollback
      resources:
        limits:
          cpus: "0.5"
          memory: 64M
  probe:
    image: busybox
    command:
      - sh
      - -c
      - |
        trap 'exit 0' TERM
        echo "secret=$$(cat /run/secrets/token) mode=$$(stat -c %a /etc/app.conf) conf=$$(cat /etc/app.conf) greeting=$$GREETING"
        while true; do sleep 1; done
    environment:
      <<: *probe-env
    networks: [front]
    secrets: [token]
    configs:
      - source: app
        target: /etc/app.conf
        mode: 0555
    deploy:
      mode: global
  caller:
    # The node's curl (busybox's static resolver cannot look names up): web
    # by its short name, and api (dnsrr) on the other network.
    image: host
    command:
      - /bin/sh
      - -c
      - |
        trap 'exit 0' TERM
        while true; do
          echo "web=$$(/usr/bin/curl -s -m 2 http://web/) api=$$(/usr/bin/curl -s -m 2 http://api/)"
          sleep 1
        done
    networks: [front, back]
  api:
    image: {API}
    networks: [back]
    deploy:
      endpoint_mode: dnsrr
      replicas: 2
      placement:
        constraints: [node.role == manager]
{ZONED}networks:
  front:
  back:
secrets:
  token:
    file: ./token.txt
configs:
  app:
    file: ./app.conf
"#
    )
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let p = dir.join(name);
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    Ok(p)
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// Names of the objects of `verb ls` (services, networks, secrets,
/// configs) that start with the stack's prefix.
fn stack_objects(lab: &Lab) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for verb in ["service", "network", "secret", "config"] {
        let text = lab.shoal(1, &[verb, "ls"])?;
        for line in text.lines().skip(1) {
            if let Some(name) = line
                .split_whitespace()
                .find(|w| w.starts_with(&format!("{STACK}_")))
            {
                out.push(format!("{verb} {name}"));
            }
        }
    }
    Ok(out)
}

/// Task ids per service of the stack, running ones only.
fn task_ids(lab: &Lab, service: &str) -> anyhow::Result<Vec<String>> {
    let mut ids: Vec<String> = lab
        .service_ps(1, &format!("{STACK}_{service}"))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_iter()
        .filter(|r| r.running())
        .map(|r| r.id)
        .collect();
    ids.sort();
    Ok(ids)
}

async fn converged(lab: &Lab) -> anyhow::Result<()> {
    for (service, n) in [
        ("web", 3),
        ("probe", 3),
        ("caller", 1),
        ("api", 2),
        ("zoned", 2),
    ] {
        lab.running(&format!("{STACK}_{service}"), n, Duration::from_secs(120))
            .await
            .with_context(|| {
                format!(
                    "{STACK}_{service}: {:?}",
                    lab.service_ps(1, &format!("{STACK}_{service}"))
                )
            })?;
    }
    Ok(())
}

#[tokio::test]
async fn a_stack_deploys_updates_and_goes_whole() -> anyhow::Result<()> {
    let lab = busybox_lab("stacks", Formation::fast(1, 3)).await?;
    lab.load_image(1, &web_image(V1, "v1", None)?)?;
    lab.load_image(1, &web_image(V2, "v2", None)?)?;
    lab.load_image(1, &web_image(API, "api", None)?)?;
    lab.shoal(1, &["node", "update", "--label-add", "zone=a", "n2"])?;
    let dir = lab.dir().join("stack");
    std::fs::create_dir_all(&dir)?;
    write(&dir, "token.txt", "s3cr3t")?;
    write(&dir, "app.conf", "color=blue")?;

    // Bad files first: each refused with its file, line and key, and
    // nothing made.
    let bad: &[(&str, &str, &[&str])] = &[
        (
            "unknown-top.yml",
            "version: \"3.8\"\nservices:\n  a:\n    image: busybox\nfrobnicate: 1\n",
            &["unknown-top.yml", "frobnicate"],
        ),
        (
            "wrong-type.yml",
            "version: \"3.8\"\nservices:\n  a:\n    image: busybox\n    deploy:\n      replicas: \"two\"\n",
            &["wrong-type.yml:6", "replicas"],
        ),
        (
            "undefined-net.yml",
            "version: \"3.8\"\nservices:\n  a:\n    image: busybox\n    networks: [nowhere]\n",
            &["nowhere"],
        ),
        (
            "undefined-secret.yml",
            "version: \"3.8\"\nservices:\n  a:\n    image: busybox\n    secrets: [nothere]\n",
            &["nothere"],
        ),
        (
            "required-var.yml",
            "version: \"3.8\"\nservices:\n  a:\n    image: \"busybox:${SHOAL_TEST_UNSET_X:?need X}\"\n",
            &["required-var.yml", "need X"],
        ),
        (
            "bad-yaml.yml",
            "version: \"3.8\"\nservices:\n  a:\n    image: [busybox\n",
            &["bad-yaml.yml"],
        ),
    ];
    for (name, text, wanted) in bad {
        let p = write(&dir, name, text)?;
        let err = lab.shoal_refused(1, &["stack", "deploy", "-c", path_str(&p), STACK])?;
        for w in *wanted {
            ensure!(
                err.contains(w),
                "{name}: the error should name {w:?}: {err}"
            );
        }
    }
    let missing = dir.join("missing.yml");
    let err = lab.shoal_refused(1, &["stack", "deploy", "-c", path_str(&missing), STACK])?;
    ensure!(err.contains("missing.yml"), "a missing file: {err}");
    ensure!(
        stack_objects(&lab)?.is_empty(),
        "bad files made {:?}",
        stack_objects(&lab)?
    );

    // Deploy, as docker prints it.
    let file = write(&dir, "stack.yml", &stack_file(V1))?;
    let out = lab.shoal(1, &["stack", "deploy", "-c", path_str(&file), STACK])?;
    for line in [
        "Creating network shop_front",
        "Creating network shop_back",
        "Creating network shop_default",
        "Creating secret shop_token",
        "Creating config shop_app",
        "Creating service shop_web",
        "Creating service shop_probe",
        "Creating service shop_caller",
        "Creating service shop_api",
        "Creating service shop_zoned",
    ] {
        ensure!(out.contains(line), "deploy output lacks {line:?}:\n{out}");
    }
    converged(&lab).await?;

    // The published port answers on every node.
    let every: Vec<SocketAddr> = (1..=3)
        .map(|k| SocketAddr::V4(SocketAddrV4::new(lab.node(k).addr(), PORT)))
        .collect();
    for a in &every {
        let (code, body) = lab.curl(&format!("http://{a}/"))?;
        ensure!(code == "200" && body == "v1", "through {a}: {code} {body}");
    }
    // The probe has its secret and config (and the anchored environment);
    // the caller, on both networks, reaches web by its short name and api
    // (dnsrr) on the other network.
    lab.logs_until(
        &format!("{STACK}_probe"),
        Duration::from_secs(60),
        "the probe's files",
        |l| l.contains("secret=s3cr3t mode=555 conf=color=blue greeting=hello"),
    )
    .await?;
    lab.logs_until(
        &format!("{STACK}_caller"),
        Duration::from_secs(60),
        "the caller reaching both services",
        |l| l.contains("web=v1 api=api"),
    )
    .await?;
    // Placement: api on the manager, zoned on the labelled node.
    for (service, node) in [("api", "n1"), ("zoned", "n2")] {
        let rows = lab
            .service_ps(1, &format!("{STACK}_{service}"))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        ensure!(
            rows.iter().filter(|r| r.running()).all(|r| r.node == node),
            "{service} should run on {node} only: {rows:?}"
        );
    }
    // The listing verbs.
    let ls = lab.shoal(1, &["stack", "ls"])?;
    ensure!(
        ls.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == [STACK, "5"]),
        "stack ls:\n{ls}"
    );
    let services = lab.shoal(1, &["stack", "services", STACK])?;
    for s in [
        "shop_web",
        "shop_probe",
        "shop_caller",
        "shop_api",
        "shop_zoned",
    ] {
        ensure!(
            services.contains(s),
            "stack services lacks {s}:\n{services}"
        );
    }
    ensure!(services.contains("3/3"), "stack services:\n{services}");
    let ps = lab.shoal(1, &["stack", "ps", STACK])?;
    ensure!(ps.contains("shop_web.1"), "stack ps:\n{ps}");
    let inspect = lab.shoal(1, &["service", "inspect", "shop_web"])?;
    ensure!(
        inspect.contains("com.docker.stack.namespace"),
        "inspect lacks the stack label:\n{inspect}"
    );

    // The same file again: nothing restarts.
    let before: Vec<Vec<String>> = ["web", "probe", "caller", "api", "zoned"]
        .iter()
        .map(|s| task_ids(&lab, s))
        .collect::<Result<_, _>>()?;
    let out = lab.shoal(1, &["stack", "deploy", "-c", path_str(&file), STACK])?;
    ensure!(
        out.contains("Updating service shop_web"),
        "re-deploy output:\n{out}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again: Vec<Vec<String>> = ["web", "probe", "caller", "api", "zoned"]
        .iter()
        .map(|s| task_ids(&lab, s))
        .collect::<Result<_, _>>()?;
    ensure!(
        before == again,
        "an unchanged file restarted tasks: {before:?} → {again:?}"
    );

    // One image changed: only web rolls, and no request fails meanwhile.
    // SHOAL_LAB_PCAP=FILE: the underlay's packets during the re-deploy, to
    // follow a failed request across the nodes.
    let capture = std::env::var("SHOAL_LAB_PCAP").ok().map(|file| {
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.underlay_netns(),
                "tcpdump",
                "-i",
                "br0",
            ])
            .args(["-s", "160", "-U", "-w", &file])
            .spawn()
    });
    let started = humantime_now();
    let load = lab.request_loop(every.clone(), Duration::from_millis(20));
    tokio::time::sleep(Duration::from_secs(1)).await;
    write(&dir, "stack.yml", &stack_file(V2))?;
    lab.shoal(1, &["stack", "deploy", "-c", path_str(&file), STACK])?;
    eventually(Duration::from_secs(120), "web serves v2 only", || {
        let r = load.report();
        if r.ends_with("v2", 30) {
            return Ok(Some(()));
        }
        Err(format!("answers {:?}, {} failed", r.bodies, r.failures.len()).into())
    })
    .await?;
    let report = load.finish()?;
    if let Some(Ok(mut c)) = capture {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = c.kill();
        let _ = c.wait();
    }
    println!(
        "re-deploy with a new image: {} requests answered ({:?}), {} failed",
        report.ok,
        report.bodies,
        report.failures.len()
    );
    if !report.failures.is_empty() {
        eprintln!("the request loop started at {started}");
        lab.print_diagnostics();
        print_listen_drops("httpd");
    }
    ensure!(
        report.failures.is_empty(),
        "{} requests failed during the re-deploy: {:?}",
        report.failures.len(),
        report.failures.iter().take(10).collect::<Vec<_>>()
    );
    for (i, s) in ["probe", "caller", "api", "zoned"].iter().enumerate() {
        ensure!(
            task_ids(&lab, s)? == before[i + 1],
            "{s} was restarted by a change to web only"
        );
    }

    // A file without `zoned`: kept without --prune, removed with it.
    let without = stack_file(V2).replace(ZONED, "");
    write(&dir, "stack.yml", &without)?;
    let out = lab.shoal(1, &["stack", "deploy", "-c", path_str(&file), STACK])?;
    ensure!(!out.contains("Removing service"), "no --prune: {out}");
    ensure!(lab.shoal(1, &["service", "ls"])?.contains("shop_zoned"));
    let out = lab.shoal(
        1,
        &["stack", "deploy", "--prune", "-c", path_str(&file), STACK],
    )?;
    ensure!(
        out.contains("Removing service shop_zoned"),
        "--prune output: {out}"
    );
    ensure!(!lab.shoal(1, &["service", "ls"])?.contains("shop_zoned"));

    // stack rm leaves nothing of the stack, and nothing else is touched.
    lab.shoal(
        1,
        &[
            "secret",
            "create",
            "outside",
            path_str(&dir.join("token.txt")),
        ],
    )?;
    let out = lab.shoal(1, &["stack", "rm", STACK])?;
    ensure!(
        out.contains("Removing service shop_web"),
        "rm output:\n{out}"
    );
    eventually(Duration::from_secs(30), "the stack gone", || {
        let left = stack_objects(&lab)?;
        if left.is_empty() {
            return Ok(Some(()));
        }
        Err(format!("left: {left:?}").into())
    })
    .await?;
    ensure!(
        lab.shoal(1, &["secret", "ls"])?.contains("outside"),
        "stack rm removed a secret it did not make"
    );
    Ok(())
}

/// Wall-clock time, as the daemons' logs print it, to match failures
/// (timed from the loop's start) with the logs.
fn humantime_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        d.subsec_millis()
    )
}

/// Listen-queue overflows seen by every process named `comm` (the web
/// tasks' httpd): a server too starved to accept drops SYNs, which a
/// client sees as a connect timeout whatever the mesh does.
fn print_listen_drops(comm: &str) {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let dir = p.path();
        if std::fs::read_to_string(dir.join("comm")).is_ok_and(|c| c.trim() == comm) {
            let netstat = std::fs::read_to_string(dir.join("net/netstat")).unwrap_or_default();
            let mut lines = netstat.lines();
            let (names, values) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
            let drops: Vec<String> = names
                .split_whitespace()
                .zip(values.split_whitespace())
                .filter(|(n, _)| n.starts_with("Listen"))
                .map(|(n, v)| format!("{n}={v}"))
                .collect();
            let cgroup = std::fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
            eprintln!(
                "{} {comm}: {} ({})",
                dir.display(),
                drops.join(" "),
                cgroup.lines().last().unwrap_or("")
            );
        }
    }
}
