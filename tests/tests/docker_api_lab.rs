//! The Docker Engine API on every node (issue 18), driven by clients Shoal
//! did not write: the docker CLI on this machine (`/usr/local/bin/docker`,
//! 28.x) and the Python SDK, against `<state>/docker.sock` of lab nodes.
//!
//! - `docker info`, `node ls`, `service create -p` (the published port
//!   answers on every node), `service ls/ps/inspect/logs/scale/update
//!   --image/rollback/rm`, errors as dockerd's.
//! - `secret`, `config` and `network` verbs; `docker stack deploy` of a
//!   small compose file, `stack ls/services/ps/rm`.
//! - A worker's socket answers with dockerd's 503; malformed JSON, a stale
//!   version and unknown ids get dockerd's codes and messages.
//! - The Python SDK lists nodes, services and tasks and creates a service.

use std::{
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::Duration,
};

use anyhow::{Context, ensure};
use shoal_lab::{
    Formation, Lab, eventually,
    images::{busybox_lab, web_image},
};

const DOCKER: &str = "/usr/local/bin/docker";
const V1: &str = "shoal.local/web:v1";
const V2: &str = "shoal.local/web:v2";

fn socket(lab: &Lab, k: usize) -> PathBuf {
    lab.node(k).state_dir().join("docker.sock")
}

/// `docker ARGS` against node `k`'s socket, from inside its namespace, with
/// a config directory of its own (no credentials or contexts of this host).
fn docker_output(lab: &Lab, k: usize, args: &[&str], input: &[u8]) -> anyhow::Result<Output> {
    use std::io::Write;
    let config = lab.node(k).state_dir().join("docker-cli");
    std::fs::create_dir_all(&config)?;
    let mut child = lab
        .command(k, DOCKER)
        .env(
            "DOCKER_HOST",
            format!("unix://{}", socket(lab, k).display()),
        )
        .env("DOCKER_CONFIG", &config)
        .env_remove("DOCKER_API_VERSION")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running docker")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input)?;
    }
    Ok(child.wait_with_output()?)
}

/// `docker ARGS` on node `k`, which must succeed: its stdout.
fn docker(lab: &Lab, k: usize, args: &[&str]) -> anyhow::Result<String> {
    let out = docker_output(lab, k, args, b"")?;
    ensure!(
        out.status.success(),
        "docker {}: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `docker ARGS` on node `k`, which must fail: its stderr.
fn docker_refused(lab: &Lab, k: usize, args: &[&str]) -> anyhow::Result<String> {
    let out = docker_output(lab, k, args, b"")?;
    ensure!(
        !out.status.success(),
        "docker {} succeeded: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A raw request to node `k`'s socket with curl: (status, body).
fn raw(lab: &Lab, k: usize, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let sock = socket(lab, k);
    let out = lab
        .command(k, "curl")
        .args(["-s", "-m", "10", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(&sock)
        .args(["-X", method, "-H", "Content-Type: application/json"])
        .args(["--data-binary", body])
        .arg(format!("http://docker{path}"))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').context("curl printed no status")?;
    Ok((code.trim().parse()?, body.to_owned()))
}

/// The published port from the lab's client, on node `k`.
fn serves(lab: &Lab, k: usize, port: u16) -> anyhow::Result<String> {
    let (code, body) = lab.curl(&format!("http://{}:{port}/", lab.node(k).addr()))?;
    ensure!(code == "200", "node {k}:{port} answered {code} {body:?}");
    Ok(body)
}

async fn until_serving(lab: &Lab, nodes: usize, port: u16, body: &str) -> anyhow::Result<()> {
    eventually(
        Duration::from_secs(90),
        &format!("{body} on every node"),
        || {
            let answers: Vec<String> = (1..=nodes)
                .map(|k| serves(lab, k, port).unwrap_or_else(|e| e.to_string()))
                .collect();
            if answers.iter().all(|a| a == body) {
                return Ok(Some(()));
            }
            Err(format!(
                "answers {answers:?}; service ps: {:?}",
                lab.service_ps(1, "web")
            )
            .into())
        },
    )
    .await?;
    Ok(())
}

/// A 3-node swarm (n1 the manager) with the web images on n1.
async fn cluster(tag: &str) -> anyhow::Result<Lab> {
    let lab = busybox_lab(tag, Formation::fast(1, 3)).await?;
    lab.load_image(1, &web_image(V1, "v1", None)?)?;
    lab.load_image(1, &web_image(V2, "v2", None)?)?;
    Ok(lab)
}

#[tokio::test]
async fn the_docker_cli_drives_services() -> anyhow::Result<()> {
    let lab = cluster("dapi").await?;
    let sock = socket(&lab, 1);
    let mode = std::fs::metadata(&sock)?.permissions();
    ensure!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777 == 0o600,
        "{} is not root-only: {mode:?}",
        sock.display()
    );
    ensure!(
        lab.shoal(1, &["info"])?
            .contains(&format!("unix://{}", sock.display())),
        "shoal info does not show the socket"
    );

    let version = docker(
        &lab,
        1,
        &[
            "version",
            "--format",
            "{{.Server.APIVersion}} {{.Server.MinAPIVersion}} {{.Client.APIVersion}}",
        ],
    )?;
    println!("docker version: {version}");
    ensure!(version.trim().starts_with("1.51 1.24"), "{version}");
    let info = docker(&lab, 1, &["info"])?;
    for want in [
        "Swarm: active",
        "Is Manager: true",
        "Nodes: 3",
        "Managers: 1",
    ] {
        ensure!(info.contains(want), "docker info lacks {want:?}:\n{info}");
    }
    let nodes = docker(&lab, 1, &["node", "ls"])?;
    println!("{nodes}");
    ensure!(nodes.lines().count() == 4, "{nodes}");
    ensure!(
        nodes
            .lines()
            .any(|l| l.contains(" * ") && l.contains("n1") && l.contains("Leader")),
        "n1 is not marked as self and leader:\n{nodes}"
    );

    let out = docker(
        &lab,
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "web",
            "--replicas",
            "3",
            "-p",
            "8080:80",
            V1,
        ],
    )?;
    ensure!(out.trim().len() >= 12, "service create printed {out:?}");
    lab.running("web", 3, Duration::from_secs(60)).await?;
    until_serving(&lab, 3, 8080, "v1").await?;

    // `docker ps` on a node: its own tasks, as containers.
    let ps = docker(
        &lab,
        1,
        &["ps", "--format", "{{.Names}} {{.Image}} {{.State}}"],
    )?;
    ensure!(
        ps.lines().count() == 1 && ps.starts_with("web.") && ps.contains(" running"),
        "docker ps on n1: {ps:?}"
    );

    let ls = docker(&lab, 1, &["service", "ls"])?;
    println!("{ls}");
    ensure!(
        ls.lines()
            .any(|l| l.contains("web") && l.contains("3/3") && l.contains("*:8080->80/tcp")),
        "{ls}"
    );
    let ps = docker(&lab, 1, &["service", "ps", "web"])?;
    println!("{ps}");
    ensure!(
        ps.matches("Running").count() >= 3 && ps.contains("web.1"),
        "{ps}"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&docker(&lab, 1, &["service", "inspect", "web"])?)?;
    ensure!(inspect[0]["Spec"]["Name"] == "web", "{inspect}");
    ensure!(
        inspect[0]["Spec"]["Mode"]["Replicated"]["Replicas"] == 3,
        "{inspect}"
    );
    ensure!(
        inspect[0]["Endpoint"]["Ports"][0]["PublishedPort"] == 8080,
        "{inspect}"
    );
    let pretty = docker(&lab, 1, &["service", "inspect", "--pretty", "web"])?;
    ensure!(
        pretty.contains("Replicated") && pretty.contains("Replicas:\t3"),
        "{pretty}"
    );

    // Logs: the CLI's own prefix, from the details dockerd adds.
    docker(
        &lab,
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "talker",
            "busybox",
            "sh",
            "-c",
            "echo hello-from-task; echo oops >&2; sleep 1000",
        ],
    )?;
    lab.running("talker", 1, Duration::from_secs(60)).await?;
    let logs = eventually(Duration::from_secs(30), "talker's logs", || {
        let out = docker_output(&lab, 1, &["service", "logs", "talker"], b"")?;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        if stdout.contains("hello-from-task") && stderr.contains("oops") {
            return Ok(Some(stdout.into_owned()));
        }
        Err(format!("stdout {stdout:?} stderr {stderr:?}").into())
    })
    .await?;
    println!("{logs}");
    ensure!(
        logs.lines().any(|l| l.starts_with("talker.1.")
            && l.contains("@n")
            && l.ends_with("| hello-from-task")),
        "{logs}"
    );

    // Errors, as the CLI prints dockerd's.
    let e = docker_refused(&lab, 1, &["service", "rm", "nope"])?;
    ensure!(
        e.contains("Error response from daemon: service nope not found"),
        "{e}"
    );
    let e = docker_refused(
        &lab,
        1,
        &["service", "create", "--detach", "--name", "tty", "-t", V1],
    )?;
    ensure!(
        e.contains("TaskTemplate.ContainerSpec.TTY: not supported by Shoal"),
        "{e}"
    );

    // Whole-spec updates (docker's ServiceUpdate): UpdateServiceRequest.spec.
    docker(&lab, 1, &["service", "scale", "--detach", "web=2"])?;
    lab.running("web", 2, Duration::from_secs(60)).await?;

    docker(
        &lab,
        1,
        &["service", "update", "--detach", "--image", V2, "web"],
    )?;
    until_serving(&lab, 3, 8080, "v2").await?;
    docker(&lab, 1, &["service", "rollback", "--detach", "web"])?;
    until_serving(&lab, 3, 8080, "v1").await?;

    docker(&lab, 1, &["service", "rm", "web", "talker"])?;
    eventually(Duration::from_secs(30), "services gone", || {
        let ls = docker(&lab, 1, &["service", "ls", "-q"])?;
        Ok(ls.trim().is_empty().then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn secrets_configs_networks_and_stacks() -> anyhow::Result<()> {
    let lab = cluster("dstk").await?;
    let out = docker_output(
        &lab,
        1,
        &["secret", "create", "--label", "a=b", "db_pw", "-"],
        b"hunter2",
    )?;
    ensure!(out.status.success(), "{out:?}");
    let ls = docker(&lab, 1, &["secret", "ls"])?;
    ensure!(ls.contains("db_pw"), "{ls}");
    let s: serde_json::Value =
        serde_json::from_str(&docker(&lab, 1, &["secret", "inspect", "db_pw"])?)?;
    ensure!(s[0]["Spec"]["Labels"]["a"] == "b", "{s}");
    let filtered = docker(&lab, 1, &["secret", "ls", "-q", "--filter", "label=a=c"])?;
    ensure!(filtered.trim().is_empty(), "{filtered}");
    docker(&lab, 1, &["secret", "rm", "db_pw"])?;
    let e = docker_refused(&lab, 1, &["secret", "inspect", "db_pw"])?;
    ensure!(e.contains("db_pw"), "{e}");

    let out = docker_output(&lab, 1, &["config", "create", "site", "-"], b"server { }")?;
    ensure!(out.status.success(), "{out:?}");
    ensure!(docker(&lab, 1, &["config", "ls"])?.contains("site"));
    docker(&lab, 1, &["config", "rm", "site"])?;

    docker(&lab, 1, &["network", "create", "-d", "overlay", "appnet"])?;
    let nets = docker(&lab, 1, &["network", "ls"])?;
    ensure!(
        nets.lines()
            .any(|l| l.contains("appnet") && l.contains("overlay") && l.contains("swarm")),
        "{nets}"
    );
    let e = docker_refused(&lab, 1, &["network", "create", "bridged"])?;
    ensure!(e.contains("create it with -d overlay"), "{e}");
    docker(&lab, 1, &["network", "rm", "appnet"])?;

    // docker stack deploy: the CLI's own compose loader, then the API.
    let dir = tempfile::tempdir()?;
    let compose = dir.path().join("stack.yml");
    std::fs::write(
        &compose,
        format!(
            "version: \"3.8\"\n\
             services:\n  \
               web:\n    \
                 image: {V1}\n    \
                 ports: [\"8090:80\"]\n    \
                 deploy:\n      \
                   replicas: 2\n      \
                   labels: {{tier: front}}\n  \
               talk:\n    \
                 image: busybox\n    \
                 command: [\"sh\", \"-c\", \"wget -qO- http://web/ && sleep 1000\"]\n    \
                 secrets: [pw]\n\
             secrets:\n  \
               pw:\n    \
                 file: {}\n",
            dir.path().join("pw.txt").display()
        ),
    )?;
    std::fs::write(dir.path().join("pw.txt"), "s3cr3t")?;
    let compose_arg = compose.display().to_string();
    let out = docker(&lab, 1, &["stack", "deploy", "-c", &compose_arg, "app"])?;
    println!("{out}");
    ensure!(
        out.contains("Creating network app_default") && out.contains("Creating service app_web"),
        "{out}"
    );
    lab.running("app_web", 2, Duration::from_secs(60)).await?;
    lab.running("app_talk", 1, Duration::from_secs(60)).await?;
    eventually(Duration::from_secs(60), "app_web on 8090", || {
        Ok(serves(&lab, 2, 8090).ok().filter(|b| b == "v1").map(|_| ()))
    })
    .await?;
    let stacks = docker(&lab, 1, &["stack", "ls"])?;
    ensure!(
        stacks
            .lines()
            .any(|l| l.starts_with("app ") && l.contains('2')),
        "{stacks}"
    );
    let services = docker(&lab, 1, &["stack", "services", "app"])?;
    ensure!(
        services.contains("app_web") && services.contains("2/2") && services.contains("app_talk"),
        "{services}"
    );
    let ps = docker(&lab, 1, &["stack", "ps", "app"])?;
    ensure!(
        ps.contains("app_web.1") && ps.contains("app_talk.1"),
        "{ps}"
    );
    // A second deploy of the same file updates in place.
    let again = docker(&lab, 1, &["stack", "deploy", "-c", &compose_arg, "app"])?;
    ensure!(again.contains("Updating service app_web"), "{again}");
    docker(&lab, 1, &["stack", "rm", "app"])?;
    eventually(Duration::from_secs(30), "stack gone", || {
        let ls = docker(&lab, 1, &["stack", "ls"])?;
        Ok((!ls.contains("app ")).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn errors_read_as_dockerd_s() -> anyhow::Result<()> {
    let lab = cluster("derr").await?;
    // A worker: dockerd's 503.
    let e = docker_refused(&lab, 2, &["node", "ls"])?;
    ensure!(
        e.contains("This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state."),
        "{e}"
    );
    let (code, body) = raw(&lab, 2, "GET", "/v1.50/services", "")?;
    ensure!(code == 503, "{code} {body}");
    let info = docker(&lab, 2, &["info"])?;
    ensure!(
        info.contains("Swarm: active") && info.contains("Is Manager: false"),
        "{info}"
    );

    let (code, body) = raw(&lab, 1, "GET", "/_ping", "")?;
    ensure!(code == 200 && body == "OK", "{code} {body}");
    let (code, body) = raw(&lab, 1, "POST", "/v1.50/services/create", "{not json")?;
    ensure!(
        code == 400 && body.contains("invalid JSON"),
        "{code} {body}"
    );
    let (code, body) = raw(&lab, 1, "GET", "/v1.50/services/nope", "")?;
    ensure!(
        code == 404 && body.contains("service nope not found"),
        "{code} {body}"
    );
    let (code, body) = raw(&lab, 1, "GET", "/v1.99/info", "")?;
    ensure!(code == 400 && body.contains("is too new"), "{code} {body}");
    let (code, _) = raw(&lab, 1, "GET", "/v1.24/info", "")?;
    ensure!(code == 200);
    let (code, body) = raw(
        &lab,
        1,
        "GET",
        "/v1.50/tasks?filters=%7B%22colour%22%3A%5B%22red%22%5D%7D",
        "",
    )?;
    ensure!(
        code == 400 && body.contains("invalid filter 'colour'"),
        "{code} {body}"
    );

    docker(
        &lab,
        1,
        &["service", "create", "--detach", "--name", "web", V1],
    )?;
    let inspect: serde_json::Value =
        serde_json::from_str(&docker(&lab, 1, &["service", "inspect", "web"])?)?;
    let version = inspect[0]["Version"]["Index"]
        .as_u64()
        .context("no version")?;
    let spec = inspect[0]["Spec"].to_string();
    // A stale version: dockerd's 500 "update out of sequence".
    let (code, body) = raw(
        &lab,
        1,
        "POST",
        &format!("/v1.50/services/web/update?version={}", version + 100),
        &spec,
    )?;
    ensure!(
        code == 500 && body.contains("update out of sequence"),
        "{code} {body}"
    );
    let (code, body) = raw(
        &lab,
        1,
        "POST",
        "/v1.50/services/web/update?version=abc",
        &spec,
    )?;
    ensure!(
        code == 400 && body.contains("invalid service version 'abc'"),
        "{code} {body}"
    );
    let (code, body) = raw(
        &lab,
        1,
        "POST",
        "/v1.50/services/create",
        r#"{"Name":"x","TaskTemplate":{"ContainerSpec":{"Image":"busybox","OpenStdin":true}}}"#,
    )?;
    ensure!(
        code == 400 && body.contains("TaskTemplate.ContainerSpec.OpenStdin"),
        "{code} {body}"
    );
    let (code, body) = raw(
        &lab,
        1,
        "POST",
        "/v1.50/services/create",
        r#"{"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":"busybox"}}}"#,
    )?;
    ensure!(code == 409, "a second web: {code} {body}");
    Ok(())
}

/// A python3 that has the docker SDK, installing it with pip if needed.
fn python_with_sdk(dir: &Path) -> anyhow::Result<Option<(String, Option<PathBuf>)>> {
    let exe = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output();
    let Ok(exe) = exe else {
        return Ok(None);
    };
    let python = String::from_utf8_lossy(&exe.stdout).trim().to_owned();
    if python.is_empty() {
        return Ok(None);
    }
    let has = |path: Option<&Path>| {
        let mut c = std::process::Command::new(&python);
        c.args(["-c", "import docker"]);
        if let Some(p) = path {
            c.env("PYTHONPATH", p);
        }
        c.output().map(|o| o.status.success()).unwrap_or(false)
    };
    if has(None) {
        return Ok(Some((python, None)));
    }
    let target = dir.join("site");
    let pip = std::process::Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--target"])
        .arg(&target)
        .arg("docker")
        .output()?;
    if pip.status.success() && has(Some(&target)) {
        return Ok(Some((python, Some(target))));
    }
    println!(
        "pip install docker failed: {}",
        String::from_utf8_lossy(&pip.stderr)
    );
    Ok(None)
}

#[tokio::test]
async fn the_python_sdk_lists_and_creates() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let Some((python, path)) = python_with_sdk(dir.path())? else {
        println!("SKIPPED: no python3 with the docker SDK, and pip could not install it");
        return Ok(());
    };
    let lab = cluster("dpy").await?;
    let script = format!(
        r#"
import docker, json
c = docker.DockerClient(base_url="unix://{sock}", version="auto")
print("version", c.version()["ApiVersion"])
nodes = c.nodes.list()
assert len(nodes) == 3, nodes
svc = c.services.create("{V1}", name="pyweb", mode=docker.types.ServiceMode("replicated", replicas=2),
                        endpoint_spec=docker.types.EndpointSpec(ports={{8081: 80}}))
print("created", svc.id)
names = [s.name for s in c.services.list()]
assert "pyweb" in names, names
print("tasks", len(svc.tasks()))
print(json.dumps({{"nodes": len(nodes), "services": names}}))
"#,
        sock = socket(&lab, 1).display()
    );
    let mut cmd = lab.command(1, &python);
    cmd.args(["-c", &script]);
    if let Some(p) = &path {
        cmd.env("PYTHONPATH", p);
    }
    let out = cmd.output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    ensure!(
        out.status.success(),
        "python: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    lab.running("pyweb", 2, Duration::from_secs(60)).await?;
    until_serving(&lab, 3, 8081, "v1").await?;
    // Tasks, once they exist, through the SDK too.
    let tasks = format!(
        "import docker\nc = docker.DockerClient(base_url='unix://{}', version='auto')\n\
         ts = c.services.get('pyweb').tasks(filters={{'desired-state': 'running'}})\n\
         print(len(ts), sorted(t['Status']['State'] for t in ts))",
        socket(&lab, 1).display()
    );
    let mut cmd = lab.command(1, &python);
    cmd.args(["-c", &tasks]);
    if let Some(p) = &path {
        cmd.env("PYTHONPATH", p);
    }
    let out = cmd.output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        stdout.trim() == "2 ['running', 'running']",
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The compose file both CLIs deploy: most of what a stack converts (no
/// fixed published port, so both copies can run at once).
const SAME_STACK: &str = r#"version: "3.8"
services:
  web:
    image: shoal.local/web:v1
    ports: ["80"]
    networks:
      front:
        aliases: [www]
      back:
    environment:
      MODE: prod
      EMPTY: ""
    labels: {tier: web}
    healthcheck:
      test: ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1/"]
      interval: 2s
      timeout: 1s
      retries: 2
      start_period: 10s
    stop_grace_period: 20s
    secrets:
      - source: pw
        target: db_pw
        mode: 0400
    configs:
      - source: conf
        target: /etc/web.conf
    deploy:
      replicas: 2
      labels: {owner: ops}
      endpoint_mode: vip
      update_config: {parallelism: 2, delay: 1s, order: start-first, failure_action: rollback, monitor: 3s}
      rollback_config: {parallelism: 1, failure_action: pause}
      restart_policy: {condition: on-failure, delay: 3s, max_attempts: 4, window: 60s}
      resources: {limits: {cpus: "0.5", memory: 64M}, reservations: {memory: 16M}}
      placement:
        constraints: [node.role == manager]
        preferences: [{spread: node.labels.zone}]
  worker:
    image: busybox
    command: ["sleep", "100000"]
    entrypoint: ["/bin/sh", "-c", "exec \"$$@\"", "sh"]
    user: "1000"
    working_dir: /tmp
    read_only: true
    init: true
    cap_drop: [NET_RAW]
    volumes:
      - cache:/cache
      - type: tmpfs
        target: /scratch
        tmpfs: {size: 1048576}
    networks: [back]
    deploy:
      mode: global
      endpoint_mode: dnsrr
networks:
  front:
  back:
volumes:
  cache:
secrets:
  pw: {file: ./pw.txt}
configs:
  conf: {file: ./web.conf}
"#;

/// `service inspect` JSON with what differs by construction taken out:
/// ids, versions, states, addresses and allocated ports; the stack's name
/// as `NS`; digests and the `com.docker.stack.image` label the docker CLI
/// adds itself; network ids as names.
fn normalised(
    v: &serde_json::Value,
    ns: &str,
    net_names: &[(String, String)],
) -> serde_json::Value {
    use serde_json::Value;
    const DROP: &[&str] = &[
        "id",
        "ID",
        "version",
        "Version",
        "running",
        "desired",
        "vips",
        "UpdateStatus",
        "PreviousSpec",
        "published_port",
        "PublishedPort",
        "CreatedAt",
        "UpdatedAt",
        "com.docker.stack.image",
        "SecretID",
        "ConfigID",
    ];
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !DROP.contains(&k.as_str()))
                .map(|(k, v)| (renamed(k, ns, net_names), normalised(v, ns, net_names)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|v| normalised(v, ns, net_names)).collect()),
        Value::String(s) => Value::String(renamed(s, ns, net_names)),
        other => other.clone(),
    }
}

fn renamed(s: &str, ns: &str, net_names: &[(String, String)]) -> String {
    let s = net_names
        .iter()
        .find(|(id, _)| id == s)
        .map_or(s, |(_, name)| name.as_str());
    let s = s.split("@sha256:").next().unwrap_or(s);
    if s == ns {
        return "NS".into();
    }
    match s.strip_prefix(&format!("{ns}_")) {
        Some(rest) => format!("NS_{rest}"),
        None => s.to_owned(),
    }
}

#[tokio::test]
async fn docker_stack_deploy_and_shoal_stack_deploy_make_the_same_services() -> anyhow::Result<()> {
    let lab = cluster("dapi-same").await?;
    let dir = lab.dir().join("same");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("pw.txt"), "s3cr3t")?;
    std::fs::write(dir.join("web.conf"), "color=blue")?;
    let file = dir.join("stack.yml");
    std::fs::write(&file, SAME_STACK)?;
    let file = file.display().to_string();
    // docker's own compose loader and converter, through the Engine API…
    docker(&lab, 1, &["stack", "deploy", "-c", &file, "d"])?;
    // …and Shoal's, through its own API.
    lab.shoal(1, &["stack", "deploy", "-c", &file, "s"])?;

    let nets: serde_json::Value =
        serde_json::from_str(&lab.shoal(1, &["network", "ls", "--format", "json"])?)?;
    let net_names: Vec<(String, String)> = nets
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| {
            let id = n.get("id").or_else(|| n.get("ID"))?.as_str()?;
            let name = n.get("name").or_else(|| n.get("Name"))?.as_str()?;
            Some((id.to_owned(), name.to_owned()))
        })
        .collect();
    for service in ["web", "worker"] {
        let inspect = |ns: &str| -> anyhow::Result<serde_json::Value> {
            let out = lab.shoal(1, &["service", "inspect", &format!("{ns}_{service}")])?;
            let v: serde_json::Value = serde_json::from_str(&out)?;
            Ok(normalised(&v[0], ns, &net_names))
        };
        let (by_docker, by_shoal) = (inspect("d")?, inspect("s")?);
        ensure!(
            by_docker == by_shoal,
            "{service} differs:\n docker stack deploy: {}\n shoal stack deploy:  {}",
            serde_json::to_string_pretty(&by_docker)?,
            serde_json::to_string_pretty(&by_shoal)?
        );
    }
    // Both converge, with the same tasks.
    for ns in ["d", "s"] {
        lab.running(&format!("{ns}_web"), 2, Duration::from_secs(90))
            .await?;
    }
    Ok(())
}
