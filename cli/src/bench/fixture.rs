//! The bench's objects on the cluster: one overlay network, the servers,
//! and one short-lived client service per measurement, all named with the
//! run's prefix so [`Fixture::remove_all`] finds every one of them, even
//! those whose create call was cut short by Ctrl-C.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use shoal_api::cluster::v1::{
    ConfigRef, ContainerSpec, CreateConfigRequest, CreateNetworkRequest, CreateServiceRequest,
    Encryption, FileReference, ListConfigsRequest, ListNetworksRequest, ListNodesRequest,
    ListServicesRequest, ListTasksRequest, NetworkRef, NodeStatus, PortConfig, Protocol,
    PublishMode, RestartCondition, RestartPolicy, ServiceLogsRequest, ServiceRef, TaskState,
    TaskSummary,
};

use super::scenario::Scenario;
use crate::client;

/// A client task [`Fixture::start_task`] started: its service's name and
/// its node's hostname.
pub struct Started {
    name: String,
    node: String,
}

/// lab-echo's port inside the server task.
pub const ECHO_PORT: u16 = 7000;
/// lab-http's port inside its server task.
pub const HTTP_PORT: u16 = 8080;
/// The `underlay` iperf3 server's port on its node (not iperf3's 5201,
/// which a user's node may well be using itself).
pub const UNDERLAY_PORT: u16 = 5299;
/// The host-network echo and HTTP servers on the server's node: `direct`
/// and the HAProxy backends (and `underlay`'s round trips).
pub const HOST_ECHO_PORT: u16 = 7299;
pub const HOST_HTTP_PORT: u16 = 8299;
/// HAProxy's frontends, on the node it runs on.
pub const HAPROXY_ECHO_PORT: u16 = 7298;
pub const HAPROXY_HTTP_PORT: u16 = 8298;
/// Where HAProxy's configuration (a config object) is mounted.
const HAPROXY_CFG: &str = "/run/shoal-bench-haproxy.cfg";

/// Where a bench task's network is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// The bench's overlay network.
    Overlay,
    /// The bench's WireGuard-encrypted overlay network (`overlay-wireguard`).
    Wireguard,
    /// The bench's IPsec-encrypted overlay network (`overlay-ipsec`).
    Ipsec,
    /// The node's own (`--network host`).
    Host,
}

pub struct Fixture {
    host: String,
    control: client::Control,
    prefix: String,
    image: String,
    haproxy_image: String,
    clients: u32,
}

/// Where the servers landed and which nodes play which part.
pub struct Layout {
    pub nodes: usize,
    /// The node whose daemon answered: the caller's side.
    pub caller: Node,
    /// The node running the servers.
    pub server: Node,
    /// A node other than the server's for client tasks (the caller's when
    /// it can be).
    pub client: Node,
    /// A node without the server for `ingress-remote`.
    pub remote: Node,
    pub iperf_task: Ipv4Addr,
    pub iperf_vip: Ipv4Addr,
    /// The overlay echo server's task address and VIP.
    pub echo_task: Ipv4Addr,
    pub echo_vip: Ipv4Addr,
    /// The iperf3 and echo servers' task addresses on the WireGuard
    /// network (unspecified when not asked for).
    pub iperf_wg: Ipv4Addr,
    pub echo_wg: Ipv4Addr,
    pub iperf_ipsec: Ipv4Addr,
    pub echo_ipsec: Ipv4Addr,
    /// The `underlay` server: the server node's address and
    /// [`UNDERLAY_PORT`] (unspecified when not asked for).
    pub iperf_underlay: std::net::SocketAddrV4,
    pub echo_published: u16,
    /// lab-http's published port (connection rate, HTTP requests).
    pub http_published: u16,
    /// The image HAProxy ran from.
    pub haproxy_image: String,
    /// The hand-built `kernel-vxlan` path, when asked for.
    pub kvxlan: Option<super::kvxlan::Baseline>,
    /// Its overlay MTU.
    pub kvxlan_mtu: u32,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub id: String,
    pub hostname: String,
    pub addr: Ipv4Addr,
}

impl Fixture {
    pub fn new(d: &client::Daemon, prefix: &str, image: &str, haproxy_image: &str) -> Self {
        Self {
            host: d.host.clone(),
            control: d.control.clone(),
            prefix: prefix.to_owned(),
            image: image.to_owned(),
            haproxy_image: haproxy_image.to_owned(),
            clients: 0,
        }
    }

    fn net(&self) -> String {
        format!("{}net", self.prefix)
    }

    /// Picks the nodes, makes the network and the servers the scenarios
    /// need, and waits until they run.
    pub async fn setup(
        &mut self,
        d: &mut client::Daemon,
        scenarios: &[Scenario],
        haproxy_threads: usize,
    ) -> anyhow::Result<Layout> {
        let nodes = client::call(&d.host, d.control.list_nodes(ListNodesRequest {}))
            .await?
            .nodes;
        let mut ready: Vec<Node> = Vec::new();
        let mut caller = None;
        for n in &nodes {
            if n.status != NodeStatus::Ready as i32 {
                continue;
            }
            let node = Node {
                id: n.id.clone(),
                hostname: n.hostname.clone(),
                addr: node_addr(&n.addr)
                    .with_context(|| format!("node {}: its address {:?}", n.hostname, n.addr))?,
            };
            if n.self_ {
                caller = Some(node.clone());
            }
            ready.push(node);
        }
        ready.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        if ready.len() < 2 {
            bail!(
                "{} ready node(s): the bench measures between nodes and needs 2 or more; \
                 join another node (shoal swarm join-token worker)",
                ready.len()
            );
        }
        let caller = caller.unwrap_or_else(|| ready[0].clone());
        let others: Vec<&Node> = ready.iter().filter(|n| n.id != caller.id).collect();
        let server = others[0].clone();
        let remote = others.get(1).map_or(caller.clone(), |n| (*n).clone());
        let layout_nodes = ready.len();

        let net = CreateNetworkRequest {
            name: self.net(),
            driver: "overlay".into(),
            ..Default::default()
        };
        client::call(&self.host, self.control.create_network(net)).await?;

        let wants = |these: &[Scenario]| scenarios.iter().any(|s| these.contains(s));
        // The encrypted networks' servers: iperf3 and echo addresses.
        let mut encrypted = [[Ipv4Addr::UNSPECIFIED; 2]; 2];
        for (i, (scenario, on, encryption)) in [
            (
                Scenario::OverlayWireguard,
                Net::Wireguard,
                Encryption::Wireguard,
            ),
            (Scenario::OverlayIpsec, Net::Ipsec, Encryption::Ipsec),
        ]
        .into_iter()
        .enumerate()
        {
            if !wants(&[scenario]) {
                continue;
            }
            let net = CreateNetworkRequest {
                name: encrypted_net(&self.net(), on),
                driver: "overlay".into(),
                encryption: encryption.into(),
                ..Default::default()
            };
            client::call(&self.host, self.control.create_network(net))
                .await
                .with_context(|| format!("{scenario}: creating its encrypted network"))?;
            let echo_port = ECHO_PORT.to_string();
            let servers = [
                vec!["/bin/iperf3", "-s"],
                vec!["/bin/lab-echo", "serve", &echo_port],
            ];
            for (j, args) in servers.iter().enumerate() {
                let what = ["iperf", "echo"][j];
                let name = format!("{}{what}{}", self.prefix, encrypted_net("", on));
                let req = service(
                    &name,
                    &self.image,
                    args,
                    &server.id,
                    on,
                    &self.net(),
                    RestartCondition::Any,
                );
                self.create(req).await?;
                encrypted[i][j] = task_addr(&self.running(&name, on).await?)?;
            }
        }
        let [[iperf_wg, echo_wg], [iperf_ipsec, echo_ipsec]] = encrypted;
        let wants_iperf = wants(&[Scenario::Overlay, Scenario::Vip]);
        let wants_echo = wants(&[
            Scenario::IngressLocal,
            Scenario::IngressRemote,
            Scenario::Overlay,
            Scenario::Vip,
        ]);
        let wants_http = wants(&[Scenario::IngressLocal, Scenario::IngressRemote]);
        let haproxies: Vec<&Node> = [
            (Scenario::HaproxyLocal, &server),
            (Scenario::HaproxyRemote, &remote),
        ]
        .into_iter()
        .filter(|(s, _)| scenarios.contains(s))
        .map(|(_, n)| n)
        .collect();
        if wants(&[Scenario::Underlay, Scenario::Direct]) || !haproxies.is_empty() {
            for (what, args) in [
                ("echo-host", ["/bin/lab-echo", "serve"]),
                ("http-host", ["/bin/lab-http", "serve"]),
            ] {
                let port = if what == "echo-host" {
                    HOST_ECHO_PORT
                } else {
                    HOST_HTTP_PORT
                };
                let name = format!("{}{what}", self.prefix);
                let port_s = port.to_string();
                self.host_server(
                    &name,
                    &self.image,
                    &[args[0], args[1], &port_s],
                    &server,
                    &[port],
                )
                .await?;
            }
        }
        for (i, node) in haproxies.iter().enumerate() {
            if i == 0 {
                self.haproxy_config(&server, haproxy_threads).await?;
            }
            let name = format!("{}haproxy-{}", self.prefix, node.hostname);
            let bin = if self.haproxy_image == "host" {
                "/usr/sbin/haproxy"
            } else {
                "haproxy"
            };
            let mut req = service(
                &name,
                &self.haproxy_image,
                &[bin, "-db", "-f", HAPROXY_CFG],
                &node.id,
                Net::Host,
                &self.net(),
                RestartCondition::Any,
            );
            if let Some(c) = req.container.as_mut() {
                c.configs = vec![FileReference {
                    source: format!("{}haproxy", self.prefix),
                    target: HAPROXY_CFG.into(),
                    ..Default::default()
                }];
            }
            req.ports = host_ports(&[HAPROXY_ECHO_PORT, HAPROXY_HTTP_PORT]);
            self.create(req).await?;
            self.running(&name, Net::Host).await?;
        }
        let mut iperf_underlay = std::net::SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);
        if scenarios.contains(&Scenario::Underlay) {
            let name = format!("{}iperf-host", self.prefix);
            let port = UNDERLAY_PORT.to_string();
            let mut req = service(
                &name,
                &self.image,
                &["/bin/iperf3", "-s", "-p", &port],
                &server.id,
                Net::Host,
                &self.net(),
                RestartCondition::Any,
            );
            // Host mode at its own number: the scheduler then keeps a second
            // bench's server off a node whose port is taken.
            req.ports = host_ports(&[UNDERLAY_PORT]);
            self.create(req).await?;
            self.running(&name, Net::Host).await?;
            iperf_underlay = std::net::SocketAddrV4::new(server.addr, UNDERLAY_PORT);
        }
        let mut iperf_task = Ipv4Addr::UNSPECIFIED;
        let mut iperf_vip = Ipv4Addr::UNSPECIFIED;
        let mut echo_published = 0;
        let mut http_published = 0;
        let mut echo_task = Ipv4Addr::UNSPECIFIED;
        let mut echo_vip = Ipv4Addr::UNSPECIFIED;
        if wants_iperf {
            let name = format!("{}iperf", self.prefix);
            self.create(service(
                &name,
                &self.image,
                &["/bin/iperf3", "-s"],
                &server.id,
                Net::Overlay,
                &self.net(),
                RestartCondition::Any,
            ))
            .await?;
            let t = self.running(&name, Net::Overlay).await?;
            iperf_task = task_addr(&t)?;
            iperf_vip = self.vip(&name).await?.0;
        }
        if wants_echo {
            let name = format!("{}echo", self.prefix);
            let args = ["/bin/lab-echo", "serve", &ECHO_PORT.to_string()];
            let (port, task, vip) = self.published(&name, &args, &server, ECHO_PORT).await?;
            (echo_published, echo_task, echo_vip) = (port, task, vip);
        }
        if wants_http {
            let name = format!("{}http", self.prefix);
            let args = ["/bin/lab-http", "serve", &HTTP_PORT.to_string()];
            http_published = self.published(&name, &args, &server, HTTP_PORT).await?.0;
        }
        Ok(Layout {
            nodes: layout_nodes,
            client: caller.clone(),
            caller,
            server,
            remote,
            iperf_task,
            iperf_vip,
            iperf_underlay,
            echo_published,
            http_published,
            echo_task,
            echo_vip,
            iperf_wg,
            echo_wg,
            iperf_ipsec,
            echo_ipsec,
            haproxy_image: self.haproxy_image.clone(),
            kvxlan: None,
            kvxlan_mtu: 0,
        })
    }

    /// A host-network server on `node`, its ports claimed in host mode so
    /// the scheduler keeps a second bench off a node whose port is taken.
    async fn host_server(
        &self,
        name: &str,
        image: &str,
        args: &[&str],
        node: &Node,
        ports: &[u16],
    ) -> anyhow::Result<()> {
        let mut req = service(
            name,
            image,
            args,
            &node.id,
            Net::Host,
            &self.net(),
            RestartCondition::Any,
        );
        req.ports = host_ports(ports);
        self.create(req).await?;
        self.running(name, Net::Host).await.map(drop)
    }

    /// HAProxy's configuration as a config object: TCP mode, `threads`
    /// threads, both frontends to the host-network servers on `server`.
    async fn haproxy_config(&self, server: &Node, threads: usize) -> anyhow::Result<()> {
        let cfg = haproxy_cfg(server.addr, threads);
        let req = CreateConfigRequest {
            name: format!("{}haproxy", self.prefix),
            data: cfg.into_bytes(),
            labels: [("com.shoal.bench".to_owned(), "1".to_owned())].into(),
            ..Default::default()
        };
        client::call(&self.host, self.control.clone().create_config(req))
            .await
            .context("creating HAProxy's config")?;
        Ok(())
    }

    /// A server on `node` with `port` published on every node: the port
    /// the manager allocated, the task's address and the VIP, once the task
    /// runs.
    async fn published(
        &self,
        name: &str,
        args: &[&str],
        node: &Node,
        port: u16,
    ) -> anyhow::Result<(u16, Ipv4Addr, Ipv4Addr)> {
        let mut req = service(
            name,
            &self.image,
            args,
            &node.id,
            Net::Overlay,
            &self.net(),
            RestartCondition::Any,
        );
        req.ports = vec![PortConfig {
            protocol: Protocol::Tcp.into(),
            target_port: port.into(),
            published_port: 0,
            publish_mode: PublishMode::Ingress.into(),
        }];
        let s = self.create(req).await?;
        let published = s
            .ports
            .first()
            .and_then(|p| u16::try_from(p.published_port).ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| anyhow!("service {name}: the manager allocated no published port"))?;
        let t = self.running(name, Net::Overlay).await?;
        let vip = self.vip(name).await?;
        Ok((published, task_addr_in(&t, vip)?, vip.0))
    }

    /// The service's VIP on the bench network, allocated with its first
    /// task, so read once the task runs, not from the create reply.
    async fn vip(&self, name: &str) -> anyhow::Result<(Ipv4Addr, u8)> {
        let r = ServiceRef {
            service: name.to_owned(),
        };
        let net = self.net();
        client::call(&self.host, self.control.clone().inspect_service(r))
            .await?
            .vips
            .iter()
            // Not the ingress network's VIP of a published service: tasks
            // may not reach the ingress network.
            .filter(|v| v.network == net)
            .find_map(|v| {
                v.addr
                    .as_ref()
                    .map(|a| (a.ip(), u8::try_from(a.prefix_len).unwrap_or(32)))
            })
            .ok_or_else(|| anyhow!("service {name}: no VIP on {net}"))
    }

    async fn create(
        &self,
        req: CreateServiceRequest,
    ) -> anyhow::Result<shoal_api::cluster::v1::ServiceSummary> {
        let name = req.name.clone();
        client::call(&self.host, self.control.clone().create_service(req))
            .await
            .with_context(|| format!("creating service {name}"))
    }

    /// The service's one task once it runs, with an address on the
    /// overlay (on the host network it has none).
    async fn running(&self, service: &str, net: Net) -> anyhow::Result<TaskSummary> {
        let deadline = Instant::now() + super::TASK_SLACK;
        loop {
            let tasks = self.tasks(service).await?;
            if let Some(t) = tasks.iter().find(|t| {
                t.state == TaskState::Running as i32
                    && (net == Net::Host || !t.addresses.is_empty())
            }) {
                return Ok(t.clone());
            }
            if Instant::now() > deadline {
                bail!(
                    "service {service}: no running task within {} s ({}); is the image {} on \
                     the nodes (shoal image load) or pullable?",
                    super::TASK_SLACK.as_secs(),
                    describe(&tasks),
                    self.image
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn tasks(&self, service: &str) -> anyhow::Result<Vec<TaskSummary>> {
        let req = ListTasksRequest {
            service: service.to_owned(),
        };
        Ok(
            client::call(&self.host, self.control.clone().list_tasks(req))
                .await?
                .tasks,
        )
    }

    /// Runs `args` once as a task on `node` (restart condition none) and
    /// returns its stdout, read back through the service's logs; the client
    /// service is removed afterwards whatever happened.
    pub async fn run_task(
        &mut self,
        node: &Node,
        net: Net,
        args: &[&str],
        within: Duration,
    ) -> anyhow::Result<String> {
        let started = self.start_task(node, net, args).await?;
        self.collect_task(started, within).await
    }

    /// Creates a one-shot client task on `node` and returns at once, so
    /// several run side by side (a CPU sampler beside an iperf3 client);
    /// [`Fixture::collect_task`] waits for it.
    pub async fn start_task(
        &mut self,
        node: &Node,
        net: Net,
        args: &[&str],
    ) -> anyhow::Result<Started> {
        self.clients += 1;
        let name = format!("{}c{}", self.prefix, self.clients);
        let req = service(
            &name,
            &self.image,
            args,
            &node.id,
            net,
            &self.net(),
            RestartCondition::None,
        );
        self.create(req).await?;
        Ok(Started {
            name,
            node: node.hostname.clone(),
        })
    }

    /// The stdout of a task [`Fixture::start_task`] started, once it
    /// finished; its service is removed whatever happened.
    pub async fn collect_task(&mut self, t: Started, within: Duration) -> anyhow::Result<String> {
        let outcome = self.finished(&t.name, within).await;
        let logs = self.logs(&t.name).await;
        self.remove_service(&t.name).await?;
        let (stdout, stderr) = logs?;
        match outcome? {
            s if s.state == TaskState::Complete as i32 => Ok(stdout),
            s => Err(anyhow!(
                "task {} on {}: {} (exit {:?}): {}",
                s.name,
                t.node,
                state_word(s.state),
                s.exit_code,
                last_lines(&format!("{stdout}{stderr}"), 5)
            )),
        }
    }

    /// The task once it stopped (complete, failed, rejected…).
    async fn finished(&self, service: &str, within: Duration) -> anyhow::Result<TaskSummary> {
        let deadline = Instant::now() + within;
        loop {
            let tasks = self.tasks(service).await?;
            if let Some(t) = tasks.iter().find(|t| t.state >= TaskState::Complete as i32) {
                return Ok(t.clone());
            }
            if Instant::now() > deadline {
                bail!(
                    "client {service}: not finished within {} s ({})",
                    within.as_secs(),
                    describe(&tasks)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn logs(&self, service: &str) -> anyhow::Result<(String, String)> {
        let req = ServiceLogsRequest {
            service: service.to_owned(),
            follow: false,
            tail: None,
        };
        let mut stream = client::call(&self.host, self.control.clone().service_logs(req)).await?;
        let (mut out, mut err) = (String::new(), String::new());
        while let Some(l) = stream
            .message()
            .await
            .map_err(|s| client::status_error(&self.host, &s))?
        {
            let text = String::from_utf8_lossy(&l.line);
            let into = match l.stream.as_str() {
                "stdout" => &mut out,
                _ => &mut err,
            };
            into.push_str(&text);
            into.push('\n');
        }
        Ok((out, err))
    }

    async fn remove_service(&self, name: &str) -> anyhow::Result<()> {
        let r = ServiceRef {
            service: name.to_owned(),
        };
        client::call(&self.host, self.control.clone().remove_service(r))
            .await
            .with_context(|| format!("removing service {name}"))?;
        Ok(())
    }

    /// Removes every service and network named with the prefix. The
    /// network goes once the tasks on it are gone, which takes a moment.
    pub async fn remove_all(&self) -> anyhow::Result<()> {
        let services = client::call(
            &self.host,
            self.control.clone().list_services(ListServicesRequest {}),
        )
        .await?
        .services;
        for s in services.iter().filter(|s| s.name.starts_with(&self.prefix)) {
            self.remove_service(&s.name).await?;
        }
        self.remove_configs().await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let nets = client::call(
                &self.host,
                self.control.clone().list_networks(ListNetworksRequest {}),
            )
            .await?
            .networks;
            let ours: Vec<String> = nets
                .into_iter()
                .map(|n| n.name)
                .filter(|n| n.starts_with(&self.prefix))
                .collect();
            if ours.is_empty() {
                return Ok(());
            }
            let mut last = None;
            for network in ours {
                let r = NetworkRef {
                    network: network.clone(),
                };
                if let Err(e) =
                    client::call(&self.host, self.control.clone().remove_network(r)).await
                {
                    last = Some(e.context(format!("removing network {network}")));
                }
            }
            match last {
                None => {}
                Some(e) if Instant::now() > deadline => {
                    return Err(e.context(format!(
                        "still in use after 60 s; remove it with: shoal network rm {}net",
                        self.prefix
                    )));
                }
                // Still attached to tasks that are stopping.
                Some(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

impl Fixture {
    /// The bench's config objects: removable once no service mounts them
    /// (removed above, which takes a moment to reach every task).
    async fn remove_configs(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let configs = client::call(
                &self.host,
                self.control.clone().list_configs(ListConfigsRequest {}),
            )
            .await?
            .configs;
            let mut last = None;
            for c in configs.iter().filter(|c| c.name.starts_with(&self.prefix)) {
                let r = ConfigRef {
                    config: c.id.clone(),
                };
                if let Err(e) =
                    client::call(&self.host, self.control.clone().remove_config(r)).await
                {
                    last = Some(e.context(format!("removing config {}", c.name)));
                }
            }
            match last {
                None => return Ok(()),
                Some(e) if Instant::now() > deadline => return Err(e),
                Some(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

/// HAProxy in TCP mode with `threads` threads: both frontends to the
/// host-network servers at `server`.
fn haproxy_cfg(server: Ipv4Addr, threads: usize) -> String {
    format!(
        "global\n  nbthread {threads}\n  maxconn 4000\ndefaults\n  mode tcp\n  \
         timeout connect 5s\n  timeout client 60s\n  timeout server 60s\nlisten echo\n  \
         bind :{HAPROXY_ECHO_PORT}\n  server s {server}:{HOST_ECHO_PORT}\nlisten http\n  \
         bind :{HAPROXY_HTTP_PORT}\n  server s {server}:{HOST_HTTP_PORT}\n"
    )
}

/// TCP `ports` in host mode at their own numbers.
fn host_ports(ports: &[u16]) -> Vec<PortConfig> {
    ports
        .iter()
        .map(|p| PortConfig {
            protocol: Protocol::Tcp.into(),
            target_port: (*p).into(),
            published_port: (*p).into(),
            publish_mode: PublishMode::Host.into(),
        })
        .collect()
}

fn service(
    name: &str,
    image: &str,
    args: &[&str],
    node_id: &str,
    on: Net,
    net: &str,
    condition: RestartCondition,
) -> CreateServiceRequest {
    CreateServiceRequest {
        name: name.to_owned(),
        replicas: 1,
        networks: match on {
            Net::Overlay => vec![net.to_owned()],
            Net::Wireguard | Net::Ipsec => vec![encrypted_net(net, on)],
            Net::Host => Vec::new(),
        },
        constraints: vec![format!("node.id=={node_id}")],
        restart: Some(RestartPolicy {
            condition: condition.into(),
            ..Default::default()
        }),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        labels: [("com.shoal.bench".to_owned(), "1".to_owned())].into(),
        container: Some(ContainerSpec {
            image: image.to_owned(),
            network_host: on == Net::Host,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The WireGuard network beside the bench network `net`.
/// An encrypted network's name, after the bench's plain one.
fn encrypted_net(net: &str, on: Net) -> String {
    match on {
        Net::Wireguard => format!("{net}-wg"),
        Net::Ipsec => format!("{net}-ipsec"),
        Net::Overlay | Net::Host => net.to_owned(),
    }
}

/// A node's address as ListNodes gives it: `IP` or `IP:PORT`.
fn node_addr(s: &str) -> anyhow::Result<Ipv4Addr> {
    let ip = s.rsplit_once(':').map_or(s, |(ip, _)| ip);
    ip.parse().map_err(|_| anyhow!("not an IPv4 address"))
}

/// A published server task's address on the bench network: the one in its
/// VIP's subnet, not the ingress network's (which tasks may not reach).
fn task_addr_in(t: &TaskSummary, (vip, len): (Ipv4Addr, u8)) -> anyhow::Result<Ipv4Addr> {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0);
    t.addresses
        .iter()
        .filter_map(|cidr| cidr.split('/').next()?.parse::<Ipv4Addr>().ok())
        .find(|a| u32::from(*a) & mask == u32::from(vip) & mask)
        .ok_or_else(|| {
            anyhow!(
                "task {}: no address in {vip}/{len} among {:?}",
                t.name,
                t.addresses
            )
        })
}

/// The server task's address on the bench network (its only one).
fn task_addr(t: &TaskSummary) -> anyhow::Result<Ipv4Addr> {
    let cidr = t
        .addresses
        .first()
        .ok_or_else(|| anyhow!("task {}: no address", t.name))?;
    let ip = cidr.split('/').next().unwrap_or(cidr);
    ip.parse()
        .map_err(|_| anyhow!("task {}: address {cidr:?} is not IPv4/len", t.name))
}

fn state_word(state: i32) -> String {
    TaskState::try_from(state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("TASK_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| format!("state {state}"))
}

fn describe(tasks: &[TaskSummary]) -> String {
    match tasks {
        [] => "no task yet".into(),
        _ => tasks
            .iter()
            .map(|t| format!("{} {} {}{}", t.name, state_word(t.state), t.message, t.err))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haproxy_runs_as_many_threads_as_asked_in_tcp_mode() {
        let cfg = haproxy_cfg(Ipv4Addr::new(198, 18, 0, 2), 3);
        let lines: Vec<&str> = cfg.lines().map(str::trim).collect();
        for want in [
            "nbthread 3",
            "mode tcp",
            "bind :7298",
            "server s 198.18.0.2:7299",
            "bind :8298",
            "server s 198.18.0.2:8299",
        ] {
            assert!(lines.contains(&want), "{want:?} not in:\n{cfg}");
        }
    }

    #[test]
    fn a_published_tasks_bench_address_is_the_one_in_its_vips_subnet() {
        let t = TaskSummary {
            name: "echo.1".into(),
            addresses: vec!["10.0.0.3/24".into(), "10.0.2.5/24".into()],
            ..Default::default()
        };
        let vip = (Ipv4Addr::new(10, 0, 2, 2), 24);
        assert_eq!(task_addr_in(&t, vip).ok(), Some(Ipv4Addr::new(10, 0, 2, 5)));
        assert!(task_addr_in(&t, (Ipv4Addr::new(10, 0, 9, 2), 24)).is_err());
    }

    #[test]
    fn node_addresses() {
        assert_eq!(node_addr("10.1.0.2").ok(), Some(Ipv4Addr::new(10, 1, 0, 2)));
        assert_eq!(
            node_addr("10.1.0.2:2377").ok(),
            Some(Ipv4Addr::new(10, 1, 0, 2))
        );
        assert!(node_addr("n1").is_err());
    }
}
