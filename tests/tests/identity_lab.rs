//! Who may call what, played by an attacker on the underlay: an operator's
//! client certificate (`swarm ca --issue-client-cert`) drives the cluster
//! verbs over `tcp://…:2377`, but a raw gRPC call of a Raft or dispatcher
//! RPC with it is refused; a manager's certificate kept after its node was
//! demoted and removed no longer reads task logs from a worker; task logs
//! are 0600 in a 0700 directory. Needs root and built `shoald`/`shoal`.

use std::{os::unix::fs::PermissionsExt, path::Path, sync::Arc, time::Duration};

use anyhow::{Context, ensure};
use shoal_api::cluster::v1::{
    AppliedVersionsRequest, AssignmentsRequest, HeartbeatRequest, RaftPayload, ReadLogsRequest,
    dispatcher_client::DispatcherClient, raft_peer_client::RaftPeerClient,
    task_logs_client::TaskLogsClient,
};
use shoal_ca::{
    CaCert, ClientCert, NodeIdentity, NodeRole, RemovedNodes, client_config, rustls::ClientConfig,
};
use shoal_controlplane::transport;
use shoal_lab::{Formation, Lab, eventually, run_in_netns, shoal_path};
use tonic::{Code, transport::Channel};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Certificate files as `swarm ca --issue-client-cert` or a node writes them.
struct Files {
    ca: String,
    cert: String,
    key: String,
}

impl Files {
    fn read(dir: &Path) -> anyhow::Result<Files> {
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f)).with_context(|| format!("{}/{f}", dir.display()))
        };
        Ok(Files {
            ca: read("ca.pem")?,
            cert: read("cert.pem")?,
            key: read("key.pem")?,
        })
    }

    /// The TLS client an attacker holding these files builds.
    fn tls(&self) -> anyhow::Result<Arc<ClientConfig>> {
        let ca = CaCert::from_pem(&self.ca)?;
        let revoked = Arc::new(RemovedNodes::new());
        let mut tls = match NodeIdentity::from_pem(&self.cert, &self.key) {
            Ok(node) => client_config(&node, &ca, revoked)?,
            Err(_) => ClientCert::from_pem(&self.cert, &self.key)?.tls_config(&ca, revoked)?,
        };
        tls.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(tls))
    }
}

/// Runs `call` on a channel to `addr` from inside node `k`'s namespace
/// (another machine on the underlay), on a runtime of its own there.
fn from_node<T: Send>(
    lab: &Lab,
    k: usize,
    addr: &str,
    server: NodeRole,
    tls: Arc<ClientConfig>,
    call: impl AsyncFnOnce(Channel) -> T + Send,
) -> anyhow::Result<T> {
    run_in_netns(lab.node(k).netns(), || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            // Made in the runtime: its connection task is spawned on it.
            let channel = transport::channel(addr, tls, server.server_name())?;
            Ok(call(channel).await)
        })
    })?
}

fn code<T>(r: Result<T, tonic::Status>) -> Result<Code, String> {
    match r {
        Ok(_) => Ok(Code::Ok),
        Err(s) => Ok(s.code()).and_then(|c| {
            // A transport failure is no answer from the handler.
            if c == Code::Unavailable || c == Code::Unknown {
                Err(format!("{c:?}: {}", s.message()))
            } else {
                Ok(c)
            }
        }),
    }
}

/// What each Raft and dispatcher RPC answers the holder of `tls`.
fn peer_rpcs(lab: &Lab, tls: &Arc<ClientConfig>) -> anyhow::Result<Vec<(&'static str, Code)>> {
    let n1 = lab.cluster_addr(1);
    let answers = from_node(lab, 3, &n1, NodeRole::Manager, tls.clone(), async |ch| {
        let mut raft = RaftPeerClient::new(ch.clone());
        let mut disp = DispatcherClient::new(ch);
        let payload = || RaftPayload {
            json: b"{}".to_vec(),
        };
        vec![
            ("AppendEntries", code(raft.append_entries(payload()).await)),
            ("Vote", code(raft.vote(payload()).await)),
            (
                "InstallSnapshot",
                code(raft.install_snapshot(payload()).await),
            ),
            ("Forward", code(raft.forward(payload()).await)),
            (
                "Heartbeat",
                code(disp.heartbeat(HeartbeatRequest::default()).await),
            ),
            (
                "Assignments",
                code(disp.assignments(AssignmentsRequest::default()).await),
            ),
            (
                "AppliedVersions",
                code(disp.applied_versions(AppliedVersionsRequest {}).await),
            ),
        ]
    })?;
    answers
        .into_iter()
        .map(|(rpc, c)| {
            c.map(|c| (rpc, c))
                .map_err(|e| anyhow::anyhow!("{rpc}: {e}"))
        })
        .collect()
}

/// What n3's task log server answers the holder of `tls` for `task`.
fn read_logs(lab: &Lab, tls: &Arc<ClientConfig>, task: &str) -> anyhow::Result<Code> {
    let n3 = lab.cluster_addr(3);
    let task = task.to_owned();
    let r = from_node(lab, 2, &n3, NodeRole::Worker, tls.clone(), async |ch| {
        let req = ReadLogsRequest {
            task_ids: vec![task],
            follow: false,
            tail: None,
        };
        let mut stream = TaskLogsClient::new(ch).read(req).await?.into_inner();
        while stream.message().await?.is_some() {}
        Ok(())
    })?;
    code(r).map_err(|e| anyhow::anyhow!("TaskLogs.Read: {e}"))
}

fn mode(path: &Path) -> anyhow::Result<u32> {
    Ok(std::fs::metadata(path)
        .with_context(|| path.display().to_string())?
        .permissions()
        .mode()
        & 0o777)
}

#[tokio::test]
async fn client_certificates_reach_control_only_and_former_managers_lose_task_logs()
-> anyhow::Result<()> {
    let lab = Lab::builder("ident").nodes(3).start().await?;
    lab.form_swarm_of(Formation::fast(2, 3))?;
    // Two managers: every read needs n2 as well; let it settle first.
    eventually(TIMEOUT, "n1 sees 3 nodes ready", || {
        let out = lab.shoal(1, &["node", "ls"])?;
        Ok((out.matches("Ready").count() == 3).then_some(()))
    })
    .await?;

    // An operator's certificate, issued on n1 through its local socket.
    let out_dir = lab.dir().join("ops-cert");
    let out_arg = out_dir.display().to_string();
    let out = lab.shoal(
        1,
        &[
            "swarm",
            "ca",
            "--issue-client-cert",
            "--out",
            &out_arg,
            "--name",
            "ops",
        ],
    )?;
    ensure!(out.contains("\"ops\""), "{out}");
    ensure!(mode(&out_dir.join("key.pem"))? == 0o600, "key.pem not 0600");
    let ops = Files::read(&out_dir)?;

    // The cluster verbs, from n3's namespace, with SHOAL_CERT_PATH.
    let host = format!("tcp://{}", lab.node(1).addr());
    let remote = |args: &[&str]| -> anyhow::Result<std::process::Output> {
        Ok(lab
            .command(3, shoal_path()?)
            .env("SHOAL_CERT_PATH", &out_dir)
            .args(["--host", &host])
            .args(args)
            .output()?)
    };
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "talker",
            "--constraint",
            "node.hostname==n3",
            "host",
            "sh",
            "-c",
            "echo secret-in-a-log; sleep 600",
        ],
    )?;
    let out = remote(&["service", "ls"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && text.contains("talker"),
        "service ls with a client certificate: {out:?}"
    );
    // It may not mint more credentials.
    let again = out_dir.join("again").display().to_string();
    let out = remote(&["swarm", "ca", "--issue-client-cert", "--out", &again])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("Control API only"),
        "issuing with a client certificate: {out:?}"
    );

    // Raw RPCs with it: every Raft and dispatcher RPC says no.
    for (rpc, code) in peer_rpcs(&lab, &ops.tls()?)? {
        ensure!(
            code == Code::PermissionDenied,
            "{rpc} with a client certificate: {code:?}"
        );
    }
    // The same calls with n2's manager certificate get past the check (to
    // the payload's decoding), so the refusals above are the check's.
    let n2_files = lab.node(2).state_dir().join("swarm");
    let n2 = Files::read(&n2_files)?;
    let n2_tls = n2.tls()?;
    let answers = peer_rpcs(&lab, &n2_tls)?;
    ensure!(
        answers.iter().all(|(_, c)| *c != Code::PermissionDenied),
        "a manager certificate refused: {answers:?}"
    );

    // Task logs on the worker: n2's manager certificate reads them.
    let task = eventually(TIMEOUT, "talker running on n3", || {
        Ok(lab
            .service_ps(1, "talker")?
            .into_iter()
            .find(|t| t.running() && t.node == "n3")
            .map(|t| t.id))
    })
    .await?;
    let tasks_dir = lab.node(3).state_dir().join("tasks");
    let log = tasks_dir.join(format!("{task}.log"));
    ensure!(
        mode(&log)? == 0o600,
        "{} is {:o}",
        log.display(),
        mode(&log)?
    );
    ensure!(
        mode(&tasks_dir)? == 0o700,
        "tasks dir is {:o}",
        mode(&tasks_dir)?
    );
    eventually(
        TIMEOUT,
        "n2's manager certificate reads n3's task logs",
        || Ok((read_logs(&lab, &n2_tls, &task)? == Code::Ok).then_some(())),
    )
    .await?;
    ensure!(read_logs(&lab, &ops.tls()?, &task)? == Code::PermissionDenied);

    // Demoted, then removed: the certificate it kept still verifies, and is
    // refused all the same.
    lab.shoal(1, &["node", "demote", "n2"])?;
    eventually(
        TIMEOUT,
        "n3 refuses the demoted manager's old certificate",
        || Ok((read_logs(&lab, &n2_tls, &task)? == Code::PermissionDenied).then_some(())),
    )
    .await?;
    eventually(TIMEOUT, "n2 removed", || {
        Ok(lab
            .shoal(1, &["node", "rm", "--force", "n2"])
            .ok()
            .map(drop))
    })
    .await?;
    ensure!(read_logs(&lab, &n2_tls, &task)? == Code::PermissionDenied);
    // The managers that remain still read them, through `service logs`.
    let logs = lab.shoal(1, &["service", "logs", "talker"])?;
    ensure!(logs.contains("secret-in-a-log"), "service logs: {logs}");
    Ok(())
}
