//! The endpoints: each one a call or two to the node's gRPC APIs, its
//! request and answer converted by [`crate::convert`].

use std::collections::HashMap;

use http::{Method, Response, StatusCode};
use serde_json::{Value, json};
use shoal_api::{
    cluster::v1 as pb,
    node::v1::{self as nd, SwarmState},
};

use crate::{
    Backend,
    convert::{self, STACK_NAMESPACE},
    error::ApiError,
    filters::Filters,
    json::Obj,
    logs,
    server::{API_VERSION, Body, Call, MIN_API_VERSION, empty, full, json_response},
};

type Reply = Result<Response<Body>, ApiError>;

fn ok(v: &Value) -> Reply {
    Ok(json_response(StatusCode::OK, v))
}

pub async fn route(b: &Backend, call: Call) -> Reply {
    let segs: Vec<&str> = call.segments.iter().map(String::as_str).collect();
    let m = &call.method;
    let get = m == Method::GET || m == Method::HEAD;
    let post = m == Method::POST;
    let delete = m == Method::DELETE;
    match segs.as_slice() {
        ["_ping"] if get => ping(b).await,
        ["version"] if get => version(),
        ["info"] if get => info(b).await,
        ["swarm"] if get => swarm_inspect(b).await,
        ["swarm", "init"] if post => swarm_init(b, &call).await,
        ["swarm", "join"] if post => swarm_join(b, &call).await,
        ["swarm", "leave"] if post => swarm_leave(b, &call).await,
        ["swarm", "update"] if post => swarm_update(b, &call).await,
        ["swarm", "unlockkey"] if get => unlock_key(b).await,
        ["swarm", "unlock"] if post => unlock(b, &call).await,
        ["nodes"] if get => nodes(b, &call).await,
        ["nodes", id] if get => ok(&convert::node(&inspect_node(b, id).await?)),
        ["nodes", id, "update"] if post => node_update(b, id, &call).await,
        ["nodes", id] if delete => node_remove(b, id, &call).await,
        ["services"] if get => services(b, &call).await,
        ["services", "create"] if post => service_create(b, &call).await,
        ["services", id] if get => ok(&convert::service(&inspect_service(b, id).await?, false)),
        ["services", id, "update"] if post => service_update(b, id, &call).await,
        ["services", id] if delete => service_remove(b, id).await,
        ["services", id, "logs"] if get => service_logs(b, id, &call, false).await,
        ["tasks"] if get => tasks(b, &call).await,
        ["tasks", id] if get => task_inspect(b, id).await,
        ["tasks", id, "logs"] if get => service_logs(b, id, &call, true).await,
        ["secrets"] if get => secrets(b, &call).await,
        ["secrets", "create"] if post => secret_create(b, &call).await,
        ["secrets", id] if get => ok(&convert::secret(&inspect_secret(b, id).await?)),
        ["secrets", id, "update"] if post => secret_update(b, id, &call).await,
        ["secrets", id] if delete => secret_remove(b, id).await,
        ["configs"] if get => configs(b, &call).await,
        ["configs", "create"] if post => config_create(b, &call).await,
        ["configs", id] if get => ok(&convert::config(&inspect_config(b, id).await?)),
        ["configs", id, "update"] if post => config_update(b, id, &call).await,
        ["configs", id] if delete => config_remove(b, id).await,
        ["networks"] if get => networks(b, &call).await,
        ["networks", "create"] if post => network_create(b, &call).await,
        ["networks", id] if get => network_inspect(b, id).await,
        ["networks", id] if delete => network_remove(b, id).await,
        ["distribution", name @ .., "json"] if get && !name.is_empty() => {
            distribution(b, &name.join("/")).await
        }
        ["containers", "json"] if get => containers(b, &call).await,
        _ => Err(ApiError::NoRoute),
    }
}

// ---------------------------------------------------------------- the node

async fn node_info(b: &Backend) -> Result<nd::InfoReply, ApiError> {
    Ok(b.node().info(nd::InfoRequest {}).await?.into_inner())
}

fn swarm_state(i: &nd::InfoReply) -> (SwarmState, pb::NodeRole) {
    let s = i.swarm.clone().unwrap_or_default();
    (
        SwarmState::try_from(s.state).unwrap_or(SwarmState::Inactive),
        pb::NodeRole::try_from(s.role).unwrap_or_default(),
    )
}

/// A Control call's error, with dockerd's two 503s told apart: the node is
/// a worker, or in no swarm at all.
async fn control_error(b: &Backend, s: tonic::Status) -> ApiError {
    let e = ApiError::from(s);
    if !e.is_not_manager() {
        return e;
    }
    match node_info(b).await {
        Ok(i) if swarm_state(&i).0 == SwarmState::Inactive => {
            ApiError::NotManager { inactive: true }
        }
        _ => e,
    }
}

/// Runs a Control call, mapping its error.
macro_rules! control {
    ($b:expr, $method:ident, $req:expr) => {
        match $b.control().$method($req).await {
            Ok(r) => r.into_inner(),
            Err(s) => return Err(control_error($b, s).await),
        }
    };
}

async fn ping(b: &Backend) -> Reply {
    // dockerd's Swarm header: "inactive", or the state and the role.
    let swarm = match node_info(b).await {
        Ok(i) => match swarm_state(&i) {
            (SwarmState::Active, pb::NodeRole::Manager) => "active/manager",
            (SwarmState::Active, _) => "active/worker",
            (SwarmState::Locked, _) => "locked",
            (SwarmState::Pending, _) => "pending",
            (SwarmState::Error, _) => "error",
            _ => "inactive",
        },
        Err(_) => "inactive",
    };
    let mut r = full(StatusCode::OK, "text/plain; charset=utf-8", "OK");
    let h = r.headers_mut();
    h.insert("Swarm", http::HeaderValue::from_static(swarm));
    h.insert(
        "Docker-Experimental",
        http::HeaderValue::from_static("false"),
    );
    h.insert(
        "Cache-Control",
        http::HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert("Pragma", http::HeaderValue::from_static("no-cache"));
    Ok(r)
}

fn version() -> Reply {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    ok(&json!({
        "Platform": {"Name": "Shoal"},
        "Components": [{
            "Name": "Engine",
            "Version": crate::VERSION,
            "Details": {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux", "Arch": "amd64"},
        }],
        "Version": crate::VERSION,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": "amd64",
        "KernelVersion": kernel.trim(),
    }))
}

fn local_state_word(s: SwarmState) -> &'static str {
    match s {
        SwarmState::Active => "active",
        SwarmState::Pending => "pending",
        SwarmState::Locked => "locked",
        SwarmState::Error => "error",
        _ => "inactive",
    }
}

async fn info(b: &Backend) -> Reply {
    let i = node_info(b).await?;
    let s = i.swarm.clone().unwrap_or_default();
    let (state, role) = swarm_state(&i);
    let manager = state == SwarmState::Active && role == pb::NodeRole::Manager;
    let mut swarm = json!({
        "NodeID": s.node_id,
        "NodeAddr": "",
        "LocalNodeState": local_state_word(state),
        "ControlAvailable": manager,
        "Error": s.error,
        "RemoteManagers": s.managers.iter().map(|a| json!({"NodeID": "", "Addr": a})).collect::<Vec<_>>(),
    });
    let mut running = 0;
    if manager {
        let nodes = control!(b, list_nodes, pb::ListNodesRequest {}).nodes;
        let managers = nodes
            .iter()
            .filter(|n| n.role == i32::from(pb::NodeRole::Manager))
            .count();
        if let Some(me) = nodes.iter().find(|n| n.id == s.node_id) {
            swarm["NodeAddr"] = json!(
                me.addr
                    .rsplit_once(':')
                    .map_or(me.addr.as_str(), |(h, _)| h)
            );
        }
        swarm["Nodes"] = json!(nodes.len());
        swarm["Managers"] = json!(managers);
        swarm["Cluster"] = cluster(b, &s.cluster_id).await?;
        let tasks = control!(b, list_tasks, pb::ListTasksRequest::default()).tasks;
        running = tasks
            .iter()
            .filter(|t| t.node_id == s.node_id && t.state == i32::from(pb::TaskState::Running))
            .count();
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    ok(&json!({
        "ID": s.node_id,
        "Containers": running,
        "ContainersRunning": running,
        "ContainersPaused": 0,
        "ContainersStopped": 0,
        "Images": 0,
        "Driver": "overlay2",
        "Name": i.hostname,
        "ServerVersion": crate::VERSION,
        "OperatingSystem": "Shoal",
        "OSType": "linux",
        "Architecture": "x86_64",
        "NCPU": cpus,
        "MemTotal": mem_total(),
        "DockerRootDir": i.state_dir,
        "KernelVersion": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "Swarm": swarm,
        "Runtimes": {"runc": {"path": "runc"}},
        "DefaultRuntime": "runc",
        "SecurityOptions": ["name=seccomp,profile=builtin"],
        "Warnings": null,
    }))
}

fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Swarm's settings as docker shows them. The Control API has no read of
/// the cluster's settings, so swarm's defaults stand for them, except
/// autolock, which the unlock key tells; `swarm update` applies only what
/// differs from this, so a round trip never changes anything.
async fn cluster(b: &Backend, id: &str) -> Result<Value, ApiError> {
    let ca = control!(b, ca_status, pb::CaStatusRequest {});
    let autolock = b
        .node()
        .unlock_key(nd::UnlockKeyRequest { rotate: false })
        .await
        .is_ok();
    Ok(json!({
        "ID": id,
        "Version": {"Index": 0},
        "CreatedAt": crate::json::rfc3339(0),
        "UpdatedAt": crate::json::rfc3339(0),
        "Spec": {
            "Name": "default",
            "Labels": {},
            "Orchestration": {"TaskHistoryRetentionLimit": 5},
            "Raft": {"SnapshotInterval": 10000, "KeepOldSnapshots": 0, "LogEntriesForSlowFollowers": 500, "ElectionTick": 10, "HeartbeatTick": 1},
            "Dispatcher": {"HeartbeatPeriod": 5_000_000_000u64},
            "CAConfig": {"NodeCertExpiry": 7_776_000_000_000_000u64},
            "TaskDefaults": {},
            "EncryptionConfig": {"AutoLockManagers": autolock},
        },
        "TLSInfo": {"TrustRoot": ca.root_ca_pem},
        "RootRotationInProgress": ca.rotating,
        "DefaultAddrPool": ["10.0.0.0/8"],
        "SubnetSize": 24,
        "DataPathPort": 4789,
    }))
}

// ---------------------------------------------------------------- swarm

async fn require_manager(b: &Backend) -> Result<nd::InfoReply, ApiError> {
    let i = node_info(b).await?;
    match swarm_state(&i) {
        (SwarmState::Active, pb::NodeRole::Manager) => Ok(i),
        (SwarmState::Active | SwarmState::Locked | SwarmState::Pending, _) => {
            Err(ApiError::NotManager { inactive: false })
        }
        _ => Err(ApiError::NotManager { inactive: true }),
    }
}

async fn swarm_inspect(b: &Backend) -> Reply {
    let i = require_manager(b).await?;
    let s = i.swarm.unwrap_or_default();
    let mut c = cluster(b, &s.cluster_id).await?;
    let token = |role: pb::NodeRole| pb::JoinTokenRequest {
        role: role.into(),
        rotate: false,
    };
    let worker = control!(b, join_token, token(pb::NodeRole::Worker)).token;
    let manager = control!(b, join_token, token(pb::NodeRole::Manager)).token;
    c["JoinTokens"] = json!({"Worker": worker, "Manager": manager});
    ok(&c)
}

fn node_error(s: tonic::Status) -> ApiError {
    // The node API words "already part of a swarm" as dockerd does; its
    // failed preconditions are dockerd's 503 for swarm state.
    if s.code() == tonic::Code::FailedPrecondition {
        let m = s.message();
        if m.starts_with("This node is already part of a swarm")
            || m.starts_with("This node is not part of a swarm")
        {
            return ApiError::Unavailable(m.replace("shoal swarm", "docker swarm"));
        }
    }
    ApiError::from(s)
}

async fn swarm_init(b: &Backend, call: &Call) -> Reply {
    let body = call.json()?;
    let o = Obj::root(&body, "")?;
    o.refuse(&["ForceNewCluster"])?;
    let pool = o.strs("DefaultAddrPool")?;
    let req = nd::SwarmInitRequest {
        advertise_addr: o.string("AdvertiseAddr")?,
        listen_addr: o.string("ListenAddr")?,
        data_path_addr: o.string("DataPathAddr")?,
        data_path_port: o.u64("DataPathPort")?.unwrap_or_default() as u32,
        default_addr_pool: pool,
        default_addr_pool_mask_length: o.u64("SubnetSize")?.unwrap_or_default() as u32,
        autolock: o.bool("AutoLockManagers")?.unwrap_or_default()
            || o.with("Spec", |s| {
                Ok(s.with("EncryptionConfig", |e| e.bool("AutoLockManagers"))?
                    .flatten())
            })?
            .flatten()
            .unwrap_or_default(),
        cert_expiry_secs: o
            .with("Spec", |s| {
                Ok(s.with("CAConfig", |c| c.nanos("NodeCertExpiry"))?.flatten())
            })?
            .flatten()
            .map_or(0, |n| n / 1_000_000_000),
        dispatcher_heartbeat_secs: o
            .with("Spec", |s| {
                Ok(s.with("Dispatcher", |c| c.nanos("HeartbeatPeriod"))?
                    .flatten())
            })?
            .flatten()
            .map_or(0, |n| n / 1_000_000_000),
        snapshot_interval: 0,
        network_key_rotation_secs: 0,
    };
    let reply = b
        .node()
        .swarm_init(req)
        .await
        .map_err(node_error)?
        .into_inner();
    ok(&json!(reply.node_id))
}

async fn swarm_join(b: &Backend, call: &Call) -> Reply {
    let body = call.json()?;
    let o = Obj::root(&body, "")?;
    let remotes = o.strs("RemoteAddrs")?;
    let Some(remote) = remotes.first() else {
        return Err(ApiError::bad("RemoteAddrs", "give a manager's address"));
    };
    let req = nd::SwarmJoinRequest {
        token: o.string("JoinToken")?,
        remote_addr: remote.clone(),
        advertise_addr: o.string("AdvertiseAddr")?,
        listen_addr: o.string("ListenAddr")?,
        data_path_addr: o.string("DataPathAddr")?,
    };
    b.node().swarm_join(req).await.map_err(node_error)?;
    Ok(empty(StatusCode::OK))
}

async fn swarm_leave(b: &Backend, call: &Call) -> Reply {
    let force = call.query.flag("force");
    b.node()
        .swarm_leave(nd::SwarmLeaveRequest { force })
        .await
        .map_err(node_error)?;
    Ok(empty(StatusCode::OK))
}

async fn swarm_update(b: &Backend, call: &Call) -> Reply {
    let i = require_manager(b).await?;
    let s = i.swarm.unwrap_or_default();
    let now = cluster(b, &s.cluster_id).await?;
    let body = call.json()?;
    let spec = Obj::root(&body, "")?;
    let mut req = pb::UpdateSwarmRequest::default();
    let autolock = spec
        .with("EncryptionConfig", |e| e.bool("AutoLockManagers"))?
        .flatten();
    if autolock.is_some()
        && autolock != now["Spec"]["EncryptionConfig"]["AutoLockManagers"].as_bool()
    {
        req.autolock = autolock;
    }
    let expiry = spec
        .with("CAConfig", |c| c.nanos("NodeCertExpiry"))?
        .flatten();
    if expiry.is_some() && expiry != now["Spec"]["CAConfig"]["NodeCertExpiry"].as_u64() {
        req.cert_expiry_secs = expiry.map(|n| n / 1_000_000_000);
    }
    let heartbeat = spec
        .with("Dispatcher", |c| c.nanos("HeartbeatPeriod"))?
        .flatten();
    if heartbeat.is_some() && heartbeat != now["Spec"]["Dispatcher"]["HeartbeatPeriod"].as_u64() {
        req.dispatcher_heartbeat_secs = heartbeat.map(|n| n / 1_000_000_000);
    }
    if req != pb::UpdateSwarmRequest::default() {
        control!(b, update_swarm, req);
    }
    for (flag, role) in [
        ("rotateWorkerToken", pb::NodeRole::Worker),
        ("rotateManagerToken", pb::NodeRole::Manager),
    ] {
        if call.query.flag(flag) {
            control!(
                b,
                join_token,
                pb::JoinTokenRequest {
                    role: role.into(),
                    rotate: true
                }
            );
        }
    }
    if call.query.flag("rotateManagerUnlockKey") {
        b.node()
            .unlock_key(nd::UnlockKeyRequest { rotate: true })
            .await
            .map_err(ApiError::from)?;
    }
    Ok(empty(StatusCode::OK))
}

async fn unlock_key(b: &Backend) -> Reply {
    require_manager(b).await?;
    let key = b
        .node()
        .unlock_key(nd::UnlockKeyRequest { rotate: false })
        .await
        .map_err(|s| match s.code() {
            // dockerd: no key set is a 404.
            tonic::Code::FailedPrecondition => {
                ApiError::NotFound("no unlock key is set".to_owned())
            }
            _ => ApiError::from(s),
        })?
        .into_inner()
        .key;
    ok(&json!({"UnlockKey": key}))
}

async fn unlock(b: &Backend, call: &Call) -> Reply {
    let body = call.json()?;
    let key = Obj::root(&body, "")?.string("UnlockKey")?;
    b.node()
        .swarm_unlock(nd::SwarmUnlockRequest { key })
        .await
        .map_err(node_error)?;
    Ok(empty(StatusCode::OK))
}

// ---------------------------------------------------------------- nodes

async fn inspect_node(b: &Backend, id: &str) -> Result<pb::NodeDetail, ApiError> {
    Ok(control!(
        b,
        inspect_node,
        pb::NodeRef {
            node: id.to_owned()
        }
    ))
}

async fn nodes(b: &Backend, call: &Call) -> Reply {
    let f = filters(call)?;
    f.accept(&["id", "label", "name", "node.label", "membership", "role"])?;
    let list = control!(b, list_nodes, pb::ListNodesRequest {}).nodes;
    let mut out = Vec::new();
    for n in list {
        let role = shoal_api::words::word::<pb::NodeRole>(n.role);
        let keep = f.prefix("id", &n.id)
            && f.prefix("name", &n.hostname)
            && f.exact("role", &role)
            && f.exact("membership", "accepted")
            && f.labels("node.label", &n.labels)
            // Engine labels: a Shoal node has none.
            && f.labels("label", &HashMap::new());
        if keep {
            out.push(convert::node(&inspect_node(b, &n.id).await?));
        }
    }
    ok(&json!(out))
}

fn version_param(call: &Call, what: &str) -> Result<u64, ApiError> {
    let raw = call.query.get("version").unwrap_or_default();
    raw.parse()
        .map_err(|e| ApiError::bad("version", format!("invalid {what} version '{raw}': {e}")))
}

fn out_of_sequence(have: u64, given: u64) -> ApiError {
    ApiError::Internal(format!(
        "update out of sequence: the object is at version {have}, not {given}; inspect it again \
         and retry"
    ))
}

async fn node_update(b: &Backend, id: &str, call: &Call) -> Reply {
    let given = version_param(call, "node")?;
    let current = inspect_node(b, id).await?.node.unwrap_or_default();
    if given != current.version {
        return Err(out_of_sequence(current.version, given));
    }
    let body = call.json()?;
    let req = convert::node_update(&current, &body)?;
    control!(b, update_node, req);
    Ok(empty(StatusCode::OK))
}

async fn node_remove(b: &Backend, id: &str, call: &Call) -> Reply {
    control!(
        b,
        remove_node,
        pb::RemoveNodeRequest {
            node: id.to_owned(),
            force: call.query.flag("force")
        }
    );
    Ok(empty(StatusCode::OK))
}

// ---------------------------------------------------------------- services

fn filters(call: &Call) -> Result<Filters, ApiError> {
    Filters::parse(call.query.get("filters").unwrap_or_default())
}

async fn inspect_service(b: &Backend, id: &str) -> Result<pb::ServiceSummary, ApiError> {
    Ok(control!(
        b,
        inspect_service,
        pb::ServiceRef {
            service: id.to_owned()
        }
    ))
}

fn mode_word(s: &pb::ServiceSummary) -> &'static str {
    if s.mode == i32::from(pb::ServiceMode::Global) {
        "global"
    } else {
        "replicated"
    }
}

async fn services(b: &Backend, call: &Call) -> Reply {
    let f = filters(call)?;
    f.accept(&["id", "label", "mode", "name"])?;
    let status = call.query.flag("status");
    let list = control!(b, list_services, pb::ListServicesRequest {}).services;
    let out: Vec<Value> = list
        .iter()
        .filter(|s| {
            f.prefix("id", &s.id)
                && f.prefix("name", &s.name)
                && f.exact("mode", mode_word(s))
                && f.labels("label", &s.labels)
        })
        .map(|s| convert::service(s, status))
        .collect();
    ok(&json!(out))
}

/// `X-Registry-Auth`, passed to the nodes that pull, as
/// `--with-registry-auth` does.
fn with_auth(call: &Call, r: &mut pb::CreateServiceRequest) {
    if let Some(auth) = call.header("X-Registry-Auth").filter(|a| !a.is_empty())
        && let Some(c) = r.container.as_mut()
    {
        c.registry_auth = auth.to_owned();
    }
}

async fn service_create(b: &Backend, call: &Call) -> Reply {
    let body = call.json()?;
    let mut req = convert::service_request(&body)?;
    with_auth(call, &mut req);
    let s = control!(b, create_service, req);
    let warnings = (!s.warnings.is_empty()).then_some(&s.warnings);
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"ID": s.id, "Warnings": warnings}),
    ))
}

async fn service_update(b: &Backend, id: &str, call: &Call) -> Reply {
    let version = version_param(call, "service")?;
    let mut req = pb::UpdateServiceRequest {
        service: id.to_owned(),
        version,
        ..Default::default()
    };
    match call.query.get("rollback").unwrap_or_default() {
        "" => {
            let body = call.json()?;
            let mut spec = convert::service_request(&body)?;
            with_auth(call, &mut spec);
            req.spec = Some(spec);
        }
        "previous" => req.rollback = true,
        other => {
            return Err(ApiError::bad(
                "rollback",
                format!("unrecognized rollback value {other:?}: expected \"previous\""),
            ));
        }
    }
    let s = control!(b, update_service, req);
    let warnings = (!s.warnings.is_empty()).then_some(&s.warnings);
    ok(&json!({"Warnings": warnings}))
}

async fn service_remove(b: &Backend, id: &str) -> Reply {
    control!(
        b,
        remove_service,
        pb::ServiceRef {
            service: id.to_owned()
        }
    );
    Ok(empty(StatusCode::OK))
}

async fn service_logs(b: &Backend, id: &str, call: &Call, task: bool) -> Reply {
    let q = &call.query;
    let o = logs::Options {
        stdout: q.flag("stdout"),
        stderr: q.flag("stderr"),
        timestamps: q.flag("timestamps"),
        details: q.flag("details"),
    };
    if !o.stdout && !o.stderr {
        return Err(ApiError::bad(
            "stdout",
            "Bad parameters: you must choose at least one stream",
        ));
    }
    if !q.get("since").unwrap_or_default().is_empty() {
        return Err(ApiError::Unsupported {
            field: "since".into(),
        });
    }
    let tail = match q.get("tail").unwrap_or("all") {
        "all" | "" => None,
        n => Some(n.parse::<u64>().map_err(|_| {
            ApiError::bad(
                "tail",
                format!("{n:?}: expected a number of lines or \"all\""),
            )
        })?),
    };
    // The ids each line is labelled with.
    let (service_key, service_id) = if task {
        let t = find_task(b, id).await?;
        let s = inspect_service(b, &t.service).await?;
        (t.id.clone(), s.id)
    } else {
        let s = inspect_service(b, id).await?;
        (s.id.clone(), s.id)
    };
    let all = control!(
        b,
        list_tasks,
        pb::ListTasksRequest {
            service: service_id.clone()
        }
    )
    .tasks;
    let ids = all
        .into_iter()
        .map(|t| {
            (
                t.id,
                logs::TaskIds {
                    node_id: t.node_id,
                    service_id: service_id.clone(),
                },
            )
        })
        .collect();
    let lines = control!(
        b,
        service_logs,
        pb::ServiceLogsRequest {
            service: service_key,
            follow: q.flag("follow"),
            tail
        }
    );
    Ok(logs::response(lines, ids, o))
}

// ---------------------------------------------------------------- tasks

async fn all_tasks(b: &Backend) -> Result<Vec<pb::TaskSummary>, ApiError> {
    Ok(control!(b, list_tasks, pb::ListTasksRequest::default()).tasks)
}

async fn find_task(b: &Backend, id: &str) -> Result<pb::TaskSummary, ApiError> {
    let all = all_tasks(b).await?;
    if let Some(t) = all.iter().find(|t| t.id == id) {
        return Ok(t.clone());
    }
    let matches: Vec<_> = all
        .iter()
        .filter(|t| !id.is_empty() && t.id.starts_with(id))
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ApiError::NotFound(format!("task {id} not found"))),
        _ => Err(ApiError::Invalid(format!(
            "task {id} is ambiguous ({} matches)",
            matches.len()
        ))),
    }
}

/// What a task's JSON needs besides itself: its service and network ids.
struct TaskContext {
    services: HashMap<String, pb::ServiceSummary>,
    network_ids: HashMap<String, String>,
}

async fn task_context(b: &Backend) -> Result<TaskContext, ApiError> {
    let services = control!(b, list_services, pb::ListServicesRequest {})
        .services
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let network_ids = control!(b, list_networks, pb::ListNetworksRequest {})
        .networks
        .into_iter()
        .map(|n| (n.name, n.id))
        .collect();
    Ok(TaskContext {
        services,
        network_ids,
    })
}

async fn task_inspect(b: &Backend, id: &str) -> Reply {
    let t = find_task(b, id).await?;
    let ctx = task_context(b).await?;
    ok(&convert::task(
        &t,
        ctx.services.get(&t.service),
        &ctx.network_ids,
    ))
}

async fn tasks(b: &Backend, call: &Call) -> Reply {
    let mut f = filters(call)?;
    f.accept(&["id", "name", "node", "service", "desired-state", "label"])?;
    let ctx = task_context(b).await?;
    // Services and nodes are named by name, id or id prefix, as dockerd
    // resolves them.
    let mut service_ids = Vec::new();
    for s in f.get("service").to_vec() {
        service_ids.push(inspect_service(b, &s).await?.id);
    }
    f.set("service", service_ids);
    let mut node_ids = Vec::new();
    for n in f.get("node").to_vec() {
        node_ids.push(inspect_node(b, &n).await?.node.unwrap_or_default().id);
    }
    f.set("node", node_ids);
    for d in f.get("desired-state") {
        if !matches!(d.as_str(), "running" | "shutdown" | "accepted") {
            return Err(ApiError::bad(
                "desired-state",
                format!("Invalid task desired-state filter value: {d}"),
            ));
        }
    }
    let empty_labels = HashMap::new();
    let out: Vec<Value> = all_tasks(b)
        .await?
        .iter()
        .filter_map(|t| {
            let s = ctx.services.get(&t.service);
            let sid = s.map_or("", |s| s.id.as_str());
            let desired = shoal_api::words::word::<pb::TaskState>(t.desired_state);
            let keep = f.prefix("id", &t.id)
                && f.prefix("name", &t.name)
                && f.exact("service", sid)
                && f.exact("node", &t.node_id)
                && f.exact("desired-state", &desired)
                && f.labels("label", s.map_or(&empty_labels, |s| &s.labels));
            keep.then(|| convert::task(t, s, &ctx.network_ids))
        })
        .collect();
    ok(&json!(out))
}

// ---------------------------------------------------------------- secrets and configs

async fn inspect_secret(b: &Backend, id: &str) -> Result<pb::SecretSummary, ApiError> {
    Ok(control!(
        b,
        inspect_secret,
        pb::SecretRef {
            secret: id.to_owned()
        }
    ))
}

async fn inspect_config(b: &Backend, id: &str) -> Result<pb::ConfigSummary, ApiError> {
    Ok(control!(
        b,
        inspect_config,
        pb::ConfigRef {
            config: id.to_owned()
        }
    ))
}

async fn secrets(b: &Backend, call: &Call) -> Reply {
    let f = filters(call)?;
    f.accept(&["id", "label", "name", "names"])?;
    let list = control!(b, list_secrets, pb::ListSecretsRequest {}).secrets;
    let out: Vec<Value> = list
        .iter()
        .filter(|s| {
            f.prefix("id", &s.id)
                && f.prefix("name", &s.name)
                && f.exact("names", &s.name)
                && f.labels("label", &s.labels)
        })
        .map(convert::secret)
        .collect();
    ok(&json!(out))
}

async fn configs(b: &Backend, call: &Call) -> Reply {
    let f = filters(call)?;
    f.accept(&["id", "label", "name", "names"])?;
    let list = control!(b, list_configs, pb::ListConfigsRequest {}).configs;
    let out: Vec<Value> = list
        .iter()
        .filter(|s| {
            f.prefix("id", &s.id)
                && f.prefix("name", &s.name)
                && f.exact("names", &s.name)
                && f.labels("label", &s.labels)
        })
        .map(convert::config)
        .collect();
    ok(&json!(out))
}

async fn secret_create(b: &Backend, call: &Call) -> Reply {
    let req = convert::secret_request(&call.json()?)?;
    let s = control!(b, create_secret, req);
    Ok(json_response(StatusCode::CREATED, &json!({"ID": s.id})))
}

async fn config_create(b: &Backend, call: &Call) -> Reply {
    let req = convert::config_request(&call.json()?)?;
    let c = control!(b, create_config, req);
    Ok(json_response(StatusCode::CREATED, &json!({"ID": c.id})))
}

/// Swarm lets only a secret's or config's labels change; Shoal's Control
/// API has no such update yet, so an update that changes nothing (what
/// `docker stack deploy` sends on a second deploy) succeeds and one that
/// changes labels is refused as not implemented.
fn labels_unchanged(
    kind: &str,
    version: u64,
    given: u64,
    have: &HashMap<String, String>,
    want: &HashMap<String, String>,
) -> Result<(), ApiError> {
    if given != version {
        return Err(out_of_sequence(version, given));
    }
    if have != want {
        return Err(ApiError::NotImplemented(format!(
            "changing a {kind}'s labels is not supported by Shoal yet; remove the {kind} and \
             create it again"
        )));
    }
    Ok(())
}

async fn secret_update(b: &Backend, id: &str, call: &Call) -> Reply {
    let given = version_param(call, "secret")?;
    let s = inspect_secret(b, id).await?;
    let body = call.json()?;
    let spec = Obj::root(&body, "")?;
    if spec.string("Name")? != s.name {
        return Err(ApiError::Invalid(
            "only updates to Labels are allowed".into(),
        ));
    }
    labels_unchanged("secret", s.version, given, &s.labels, &spec.map("Labels")?)?;
    Ok(empty(StatusCode::OK))
}

async fn config_update(b: &Backend, id: &str, call: &Call) -> Reply {
    let given = version_param(call, "config")?;
    let c = inspect_config(b, id).await?;
    let body = call.json()?;
    let req = convert::config_request(&body)?;
    if req.name != c.name || (!req.data.is_empty() && req.data != c.data) {
        return Err(ApiError::Invalid(
            "only updates to Labels are allowed".into(),
        ));
    }
    labels_unchanged("config", c.version, given, &c.labels, &req.labels)?;
    Ok(empty(StatusCode::OK))
}

async fn secret_remove(b: &Backend, id: &str) -> Reply {
    control!(
        b,
        remove_secret,
        pb::SecretRef {
            secret: id.to_owned()
        }
    );
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn config_remove(b: &Backend, id: &str) -> Reply {
    control!(
        b,
        remove_config,
        pb::ConfigRef {
            config: id.to_owned()
        }
    );
    Ok(empty(StatusCode::NO_CONTENT))
}

// ---------------------------------------------------------------- networks

async fn networks(b: &Backend, call: &Call) -> Reply {
    let f = filters(call)?;
    f.accept(&["dangling", "driver", "id", "label", "name", "scope", "type"])?;
    let list = control!(b, list_networks, pb::ListNetworksRequest {}).networks;
    let out: Vec<Value> = list
        .iter()
        .filter(|n| {
            let ty = if n.ingress { "builtin" } else { "custom" };
            f.contains("id", &n.id)
                && f.contains("name", &n.name)
                && f.exact("driver", "overlay")
                && f.exact("scope", "swarm")
                && f.exact("type", ty)
                && f.labels("label", &n.labels)
                && f.any("dangling", |d| {
                    (d == "true" || d == "1") == n.services.is_empty()
                })
        })
        .map(convert::network)
        .collect();
    ok(&json!(out))
}

async fn network_inspect(b: &Backend, id: &str) -> Reply {
    let n = control!(
        b,
        inspect_network,
        pb::NetworkRef {
            network: id.to_owned()
        }
    );
    ok(&convert::network(&n))
}

async fn network_create(b: &Backend, call: &Call) -> Reply {
    let req = convert::network_request(&call.json()?)?;
    let n = control!(b, create_network, req);
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"Id": n.id, "Warning": ""}),
    ))
}

async fn network_remove(b: &Backend, id: &str) -> Reply {
    control!(
        b,
        remove_network,
        pb::NetworkRef {
            network: id.to_owned()
        }
    );
    Ok(empty(StatusCode::NO_CONTENT))
}

// ---------------------------------------------------------------- images and containers

/// The digest the cluster's image catalogue holds for `name`, so the CLI
/// pins services as it does against dockerd.
async fn distribution(b: &Backend, name: &str) -> Reply {
    let wanted = shoal_api::reference::Reference::parse(name)
        .map_err(|e| ApiError::bad("name", format!("{name:?}: {e}")))?
        .with_default_tag()
        .to_string();
    let images = control!(b, list_images, pb::ListImagesRequest {}).images;
    let Some(img) = images
        .iter()
        .find(|i| i.reference == wanted || wanted.ends_with(&format!("@{}", i.digest)))
    else {
        return Err(ApiError::NotFound(format!(
            "manifest unknown: {name} is in no node's image store; load it on a node or pull it \
             from a registry"
        )));
    };
    ok(&json!({
        "Descriptor": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": img.digest,
            "size": img.size,
        },
        "Platforms": [],
    }))
}

/// This node's tasks as containers, for `docker ps` on a node. The tasks
/// come from the managers' view, so a worker (no Control API) answers 503.
async fn containers(b: &Backend, call: &Call) -> Reply {
    let f = filters(call)?;
    f.accept(&["id", "label", "name", "status"])?;
    let i = node_info(b).await?;
    let me = i.swarm.unwrap_or_default().node_id;
    let show_all = call.query.flag("all");
    let ctx = task_context(b).await?;
    let out: Vec<Value> = all_tasks(b)
        .await?
        .iter()
        .filter(|t| t.node_id == me && !me.is_empty())
        .filter(|t| show_all || t.state == i32::from(pb::TaskState::Running))
        .filter_map(|t| {
            let s = ctx.services.get(&t.service);
            let name = format!("{}.{}", t.name, t.id);
            let state = shoal_api::words::word::<pb::TaskState>(t.state);
            let state = if state == "running" {
                "running"
            } else {
                "exited"
            };
            let mut labels: HashMap<String, String> = [
                ("com.docker.swarm.service.name", t.service.clone()),
                (
                    "com.docker.swarm.service.id",
                    s.map(|s| s.id.clone()).unwrap_or_default(),
                ),
                ("com.docker.swarm.task.id", t.id.clone()),
                ("com.docker.swarm.task.name", name.clone()),
                ("com.docker.swarm.node.id", t.node_id.clone()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            if let Some(ns) = s.and_then(|s| s.labels.get(STACK_NAMESPACE)) {
                labels.insert(STACK_NAMESPACE.to_owned(), ns.clone());
            }
            let keep = f.prefix("id", &t.id)
                && f.contains("name", &name)
                && f.exact("status", state)
                && f.labels("label", &labels);
            keep.then(|| {
                json!({
                    "Id": t.id,
                    "Names": [format!("/{name}")],
                    "Image": t.image,
                    "ImageID": "",
                    "Command": "",
                    "Created": t.since_unix,
                    "Ports": [],
                    "Labels": labels,
                    "State": state,
                    "Status": if state == "running" { "Up" } else { "Exited" },
                    "HostConfig": {"NetworkMode": "default"},
                    "NetworkSettings": {"Networks": {}},
                    "Mounts": [],
                })
            })
        })
        .collect();
    ok(&json!(out))
}
