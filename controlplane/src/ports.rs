//! Published ports (`--publish`): what a request may ask for, and the
//! allocation of the free ones. Pure functions over the committed state, as
//! [`crate::ipam`] is; `apply` checks uniqueness again, since two managers
//! may allocate from the same view.

use std::{collections::BTreeSet, fmt, ops::RangeInclusive};

use shoal_api::cluster::v1::PortConfig as ApiPort;

use crate::model::{ClusterState, EndpointMode, PortConfig, Protocol, PublishMode};

/// Where ingress ports without a published number come from (swarm's).
pub const DYNAMIC: RangeInclusive<u16> = 30000..=32767;
/// Raft, the cluster API and the dispatcher; SWIM gossip, TCP and UDP.
pub use shoal_api::ports::{CLUSTER_PORT, GOSSIP_PORT};

/// A `--publish` value that cannot be accepted: `{flag}: {problem}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag}: {problem}")]
pub struct PortError {
    /// The flag and the value as the operator would have written it, e.g.
    /// `--publish published=8080,target=80`.
    pub flag: String,
    pub problem: PortProblem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortProblem {
    #[error("protocol: unknown value {0}; use tcp or udp")]
    Protocol(i32),
    #[error("mode: unknown value {0}; use ingress or host")]
    Mode(i32),
    #[error("target port {0} is out of range; give 1-65535")]
    Target(u32),
    #[error("published port {0} is out of range; give 1-65535, or leave published out")]
    Published(u32),
    #[error(
        "a port published in host mode needs an explicit published port, e.g. \
         published=8080,target={target},mode=host"
    )]
    HostNeedsPublished { target: u16 },
    #[error(
        "port {port} is the swarm's own ({what}); choose another published port, or leave \
         published out to get a free one"
    )]
    Reserved { port: u16, what: &'static str },
    #[error("port {port}/{protocol} is given twice; publish each port once")]
    Twice { port: u16, protocol: Protocol },
    #[error(
        "port {port}/{protocol} is already published by service {service}; choose another \
         published port, or leave published out to get a free one"
    )]
    Taken {
        port: u16,
        protocol: Protocol,
        service: String,
    },
    #[error(
        "no free port left in {}-{} for {protocol}; give a published port",
        DYNAMIC.start(),
        DYNAMIC.end()
    )]
    Exhausted { protocol: Protocol },
    #[error("a port published in ingress mode needs a VIP; use mode=host or --endpoint-mode vip")]
    IngressNeedsVip,
    #[error(
        "the service uses --endpoint-mode dnsrr, and a port published in ingress mode needs a \
         VIP; use mode=host"
    )]
    IngressOnDnsrr,
    #[error("the service publishes no such port{}", Listed(.published))]
    NotPublished { published: Vec<PortConfig> },
    #[error("expected vip or dnsrr")]
    EndpointMode,
}

struct Listed<'a>(&'a [PortConfig]);

impl fmt::Display for Listed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ports = self.0.iter();
        if let Some(first) = ports.next() {
            write!(f, "; it publishes {}", Shown(first))?;
            for p in ports {
                write!(f, ", {}", Shown(p))?;
            }
        }
        Ok(())
    }
}

/// A port in `--publish`'s long form, as the operator writes it:
/// `published=8080,target=80` (`,protocol=udp`, `,mode=host` when not the
/// default; no `published=` when it is to be chosen).
pub struct Shown<'a>(pub &'a PortConfig);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.0;
        if let Some(published) = p.published_port {
            write!(f, "published={published},")?;
        }
        write!(f, "target={}", p.target_port)?;
        if p.protocol != Protocol::Tcp {
            write!(f, ",protocol={}", p.protocol)?;
        }
        if p.publish_mode != PublishMode::Ingress {
            write!(f, ",mode={}", p.publish_mode)?;
        }
        Ok(())
    }
}

/// The request's view of a port, for error messages: fields as given, even
/// the ones that do not decode.
fn shown_api(p: &ApiPort) -> String {
    use shoal_api::{cluster::v1 as pb, words::word};
    let mut out = String::new();
    if p.published_port != 0 {
        out.push_str(&format!("published={},", p.published_port));
    }
    out.push_str(&format!("target={}", p.target_port));
    if ![0, i32::from(pb::Protocol::Tcp)].contains(&p.protocol) {
        out.push_str(&format!(",protocol={}", word::<pb::Protocol>(p.protocol)));
    }
    if ![0, i32::from(pb::PublishMode::Ingress)].contains(&p.publish_mode) {
        out.push_str(&format!(
            ",mode={}",
            word::<pb::PublishMode>(p.publish_mode)
        ));
    }
    out
}

/// One port of a request, typed; `published_port` 0 becomes `None`.
/// `target_port` 0 is allowed only where `allow_no_target` (a
/// `--publish-rm` by published port).
pub fn parse(flag: &str, p: &ApiPort, allow_no_target: bool) -> Result<PortConfig, PortError> {
    let err = |problem| PortError {
        flag: format!("{flag} {}", shown_api(p)),
        problem,
    };
    let protocol = crate::wire::decode_or(String::new, p.protocol, Protocol::Tcp)
        .map_err(|_| err(PortProblem::Protocol(p.protocol)))?;
    let publish_mode = crate::wire::decode_or(String::new, p.publish_mode, PublishMode::Ingress)
        .map_err(|_| err(PortProblem::Mode(p.publish_mode)))?;
    let target_port = match u16::try_from(p.target_port) {
        Ok(0) if allow_no_target => 0,
        Ok(t) if t != 0 => t,
        _ => return Err(err(PortProblem::Target(p.target_port))),
    };
    let published_port = match u16::try_from(p.published_port) {
        Ok(0) => None,
        Ok(n) => Some(n),
        Err(_) => return Err(err(PortProblem::Published(p.published_port))),
    };
    Ok(PortConfig {
        protocol,
        target_port,
        published_port,
        publish_mode,
    })
}

/// What the swarm itself listens on, whatever the protocol: the mesh would
/// otherwise take the cluster's own traffic on every node.
fn reserved(port: u16, data_path_port: u16) -> Option<&'static str> {
    match port {
        CLUSTER_PORT => Some("Raft and the cluster API"),
        GOSSIP_PORT => Some("gossip"),
        p if p == data_path_port => Some("the VXLAN data path"),
        _ => None,
    }
}

/// Checks `added` (as requested, with the flag they came from) and gives
/// them published ports, next to `kept`: the ports service `service_id`
/// already holds and keeps. Explicit ports first, so a chosen one never
/// takes a number asked for in the same request; then the lowest free
/// number of [`DYNAMIC`] for each ingress port left open.
pub fn allocate(
    state: &ClusterState,
    service_id: &str,
    mode: EndpointMode,
    kept: &[PortConfig],
    added: &[(String, PortConfig)],
    data_path_port: u16,
) -> Result<Vec<PortConfig>, PortError> {
    let others: Vec<(&str, &PortConfig)> = state
        .services
        .values()
        .filter(|s| s.id != service_id)
        .flat_map(|s| s.endpoint.ports.iter().map(|p| (s.spec.name.as_str(), p)))
        .collect();
    let mut mine: BTreeSet<(u16, Protocol)> = kept
        .iter()
        .filter_map(|p| Some((p.published_port?, p.protocol)))
        .collect();
    let mut out: Vec<PortConfig> = Vec::with_capacity(added.len());
    for (flag, p) in added {
        let err = |problem| PortError {
            flag: format!("{flag} {}", Shown(p)),
            problem,
        };
        if p.publish_mode == PublishMode::Ingress && mode == EndpointMode::Dnsrr {
            return Err(if flag == "--publish" {
                PortError {
                    flag: "--endpoint-mode dnsrr".into(),
                    problem: PortProblem::IngressNeedsVip,
                }
            } else {
                err(PortProblem::IngressOnDnsrr)
            });
        }
        match p.published_port {
            None if p.publish_mode == PublishMode::Host => {
                return Err(err(PortProblem::HostNeedsPublished {
                    target: p.target_port,
                }));
            }
            None => {}
            Some(n) => {
                if let Some(what) = reserved(n, data_path_port) {
                    return Err(err(PortProblem::Reserved { port: n, what }));
                }
                if !mine.insert((n, p.protocol)) {
                    return Err(err(PortProblem::Twice {
                        port: n,
                        protocol: p.protocol,
                    }));
                }
                if let Some((name, _)) = others.iter().find(|(_, o)| p.clashes_with(o)) {
                    return Err(err(PortProblem::Taken {
                        port: n,
                        protocol: p.protocol,
                        service: (*name).to_owned(),
                    }));
                }
            }
        }
        out.push(p.clone());
    }
    for (p, (flag, _)) in out.iter_mut().zip(added) {
        if p.published_port.is_some() {
            continue;
        }
        let protocol = p.protocol;
        let free = DYNAMIC.clone().find(|n| {
            !mine.contains(&(*n, protocol))
                && !others
                    .iter()
                    .any(|(_, o)| o.protocol == protocol && o.published_port == Some(*n))
                && reserved(*n, data_path_port).is_none()
        });
        let Some(n) = free else {
            return Err(PortError {
                flag: format!("{flag} {}", Shown(p)),
                problem: PortProblem::Exhausted { protocol },
            });
        };
        mine.insert((n, protocol));
        p.published_port = Some(n);
    }
    Ok(out)
}

/// Whether the allocated `port` is what a `--publish-rm` value names: by
/// published port and protocol, or by target port when no published port
/// is given (docker's `--publish-rm 80`-style by target).
/// `asked` as allocated for a service that has `current` allocated (a
/// rollback to an older spec): a port still asked keeps its allocation,
/// the others are allocated afresh, index for index with `asked`.
pub fn reallocate(
    state: &ClusterState,
    service_id: &str,
    mode: EndpointMode,
    asked: &[PortConfig],
    current: &[PortConfig],
    data_path_port: u16,
) -> Result<Vec<PortConfig>, PortError> {
    let mut pool: Vec<PortConfig> = current.to_vec();
    let mut out: Vec<PortConfig> = Vec::with_capacity(asked.len());
    for p in asked {
        let reuse = pool.iter().position(|c| {
            c.target_port == p.target_port
                && c.protocol == p.protocol
                && c.publish_mode == p.publish_mode
                && (p.published_port.is_none() || p.published_port == c.published_port)
        });
        match reuse {
            Some(i) => out.push(pool.remove(i)),
            None => {
                // Ports still to be reused are held too, so none is chosen twice.
                let held: Vec<PortConfig> = out.iter().chain(&pool).cloned().collect();
                let added = [("--publish".to_owned(), p.clone())];
                out.extend(allocate(
                    state,
                    service_id,
                    mode,
                    &held,
                    &added,
                    data_path_port,
                )?);
            }
        }
    }
    Ok(out)
}

pub fn matches_removal(port: &PortConfig, rm: &PortConfig) -> bool {
    port.protocol == rm.protocol
        && match rm.published_port {
            Some(n) => port.published_port == Some(n),
            None => port.target_port == rm.target_port,
        }
}

/// Whether the service needs the ingress network (and a VIP on it).
pub fn has_ingress(ports: &[PortConfig]) -> bool {
    ports.iter().any(|p| p.publish_mode == PublishMode::Ingress)
}

/// `(port, protocol)` published in host mode.
pub fn host_ports(ports: &[PortConfig]) -> impl Iterator<Item = (u16, Protocol)> + '_ {
    ports
        .iter()
        .filter(|p| p.publish_mode == PublishMode::Host)
        .filter_map(|p| Some((p.published_port?, p.protocol)))
}

#[cfg(test)]
mod tests;
