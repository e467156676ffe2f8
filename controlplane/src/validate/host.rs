//! `--network host` (docker's meaning): the task shares its node's network
//! namespace. It then has no address of its own, so it can join no other
//! network and has no VIP, and the routing mesh cannot DNAT to it: its
//! ports are the node's own, published in host mode at the number the task
//! listens on.

use crate::model::{PortConfig, PublishMode, ServiceSpec};
use crate::ports::Shown;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostNetworkError {
    #[error(
        "--network host: the task shares its node's network and cannot also join network \
         {network}; drop --network {network}, or drop --network host"
    )]
    OtherNetwork { network: String },
    #[error(
        "--publish {shown}: a task on the host network has no address for the routing mesh \
         to reach; publish in host mode at the port it listens on: \
         published={target},target={target},mode=host"
    )]
    Ingress { shown: String, target: u16 },
    #[error(
        "--publish {shown}: a task on the host network listens on the node's port itself, so \
         published must equal target; give published={target},target={target},mode=host"
    )]
    Remapped { shown: String, target: u16 },
    #[error(
        "--sysctl {key}: a task on the host network shares its node's network namespace, so \
         this would change the node's; set it on the node, or drop --network host"
    )]
    Sysctl { key: String },
}

/// Checks a service on the host network; any other passes. `networks`
/// are the names as given, for the message.
pub fn host_network(spec: &ServiceSpec, networks: &[String]) -> Result<(), HostNetworkError> {
    if !spec.task.network_host {
        return Ok(());
    }
    if let Some(n) = networks.first().or(spec.networks.first()) {
        return Err(HostNetworkError::OtherNetwork { network: n.clone() });
    }
    if let Some(key) = spec.task.sysctls.keys().find(|k| k.starts_with("net.")) {
        return Err(HostNetworkError::Sysctl { key: key.clone() });
    }
    spec.endpoint.ports.iter().try_for_each(port)
}

fn port(p: &PortConfig) -> Result<(), HostNetworkError> {
    let shown = Shown(p).to_string();
    let target = p.target_port;
    match p.publish_mode {
        PublishMode::Ingress => Err(HostNetworkError::Ingress { shown, target }),
        PublishMode::Host if p.published_port != Some(target) => {
            Err(HostNetworkError::Remapped { shown, target })
        }
        PublishMode::Host => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EndpointSpec, Protocol, RestartPolicy, ServiceMode, TaskSpec};

    fn spec(host: bool, ports: Vec<PortConfig>, networks: &[&str]) -> ServiceSpec {
        let mut s = ServiceSpec {
            name: "s".into(),
            labels: Default::default(),
            mode: ServiceMode::Replicated { replicas: 1 },
            task: TaskSpec::default(),
            endpoint: EndpointSpec::default(),
            networks: Vec::new(),
            constraints: Vec::new(),
            restart: RestartPolicy::default(),
            update: Default::default(),
            rollback: Default::default(),
            placement_prefs: Vec::new(),
            network_aliases: Default::default(),
            max_replicas_per_node: 0,
        };
        s.task.network_host = host;
        s.endpoint.ports = ports;
        s.networks = networks.iter().map(|n| (*n).to_owned()).collect();
        s
    }

    fn p(published: Option<u16>, target: u16, mode: PublishMode) -> PortConfig {
        PortConfig {
            protocol: Protocol::Tcp,
            target_port: target,
            published_port: published,
            publish_mode: mode,
        }
    }

    fn message(s: &ServiceSpec, names: &[&str]) -> Option<String> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        host_network(s, &names).err().map(|e| e.to_string())
    }

    #[test]
    fn host_network_takes_host_ports_at_their_own_number() {
        let ok = spec(true, vec![p(Some(5201), 5201, PublishMode::Host)], &[]);
        assert_eq!(message(&ok, &[]), None);
        assert_eq!(message(&spec(true, vec![], &[]), &[]), None);
        // Not on the host network: none of this applies.
        let other = spec(false, vec![p(None, 80, PublishMode::Ingress)], &["n1"]);
        assert_eq!(message(&other, &["appnet"]), None);
    }

    #[test]
    fn refusals_name_the_flag_and_the_fix() {
        assert_eq!(
            message(&spec(true, vec![], &["n1"]), &["appnet"]).as_deref(),
            Some(
                "--network host: the task shares its node's network and cannot also join \
                 network appnet; drop --network appnet, or drop --network host"
            )
        );
        assert_eq!(
            message(
                &spec(true, vec![p(None, 80, PublishMode::Ingress)], &[]),
                &[]
            )
            .as_deref(),
            Some(
                "--publish target=80: a task on the host network has no address for the \
                 routing mesh to reach; publish in host mode at the port it listens on: \
                 published=80,target=80,mode=host"
            )
        );
        assert_eq!(
            message(
                &spec(true, vec![p(Some(8080), 80, PublishMode::Host)], &[]),
                &[]
            )
            .as_deref(),
            Some(
                "--publish published=8080,target=80,mode=host: a task on the host network \
                 listens on the node's port itself, so published must equal target; give \
                 published=80,target=80,mode=host"
            )
        );
        let mut sysctl = spec(true, vec![], &[]);
        (sysctl.task.sysctls).insert("net.core.somaxconn".into(), "1024".into());
        assert_eq!(
            message(&sysctl, &[]).as_deref(),
            Some(
                "--sysctl net.core.somaxconn: a task on the host network shares its node's \
                 network namespace, so this would change the node's; set it on the node, or \
                 drop --network host"
            )
        );
    }
}
