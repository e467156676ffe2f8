//! The session every node, manager or worker, keeps with the managers for
//! as long as its membership lasts: heartbeats that report its
//! certificate, and certificate renewal, both before expiry and when a root
//! CA rotation asks for it (the heartbeat reply names the issuing and the
//! trusted roots). A manager's session goes through its own manager.
//!
//! A worker's session also follows the role the managers want it in (`node
//! promote`, in the heartbeat reply): it trades its certificate for a
//! manager one, then asks [`crate::swarm::Swarm`] to start its manager.
//! A manager that Raft dropped (`node demote`) has no leader to heartbeat
//! through; the other managers tell it it is a worker now, and it stops
//! its manager the same way.
//!
//! Renewal keeps the node's key: it never left the node, and on an
//! autolocked manager it is sealed under the unlock key, which a new key
//! would have to follow.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use shoal_api::cluster::v1::{
    HeartbeatRequest, NodeResources, NodeTlsStatus, RenewCertificateRequest,
    dispatcher_client::DispatcherClient,
};
use shoal_ca::{
    CaCert, Credentials, NodeIdentity, NodeKey, NodeRole, RemovedNodes, live_client_config,
    rustls::{self, AlertDescription, ClientConfig},
};
use shoal_controlplane::{
    manager::{CaRootsView, Manager},
    model::{NodeRole as ModelRole, NodeTls},
    transport,
};
use tokio::sync::mpsc;
use tonic::{Status, transport::Channel};

use crate::swarm::{CA_FILE, CERT_FILE, NodeFile, SessionProblem, SwarmError, chain, write};

/// What `shoal info` says on a node the managers refuse as removed.
pub const REMOVED_MESSAGE: &str = "this node was removed from the swarm (`shoal node rm`): the \
                                   managers refuse its certificate. Run `shoal swarm leave \
                                   --force` on it, then `shoal swarm join` with a current token";

/// How long a TLS probe waits for a manager's verdict on this node's
/// certificate.
const PROBE_WAIT: Duration = Duration::from_secs(2);

pub(crate) struct Session {
    pub(crate) file: NodeFile,
    pub(crate) dir: PathBuf,
    pub(crate) creds: Credentials,
    pub(crate) manager: Option<Arc<Manager>>,
    pub(crate) problem: SessionProblem,
    /// Asks the swarm to start or stop this node's manager.
    pub(crate) roles: mpsc::Sender<RoleChange>,
    /// The executor's view of the managers' reach (none without one).
    pub(crate) contact: Option<crate::task_files::Contact>,
    /// Whom this node serves task logs to, from each heartbeat.
    pub(crate) log_readers: crate::logs::LogReaders,
    /// Whose public key the heartbeats publish.
    pub(crate) wireguard: crate::worker::SharedWireguard,
}

/// What the session asks of [`crate::swarm::Swarm`], with the managers'
/// latest addresses (to join Raft through, or to heartbeat as a worker).
#[derive(Debug)]
pub(crate) enum RoleChange {
    Promote(Vec<String>),
    Demote(Vec<String>),
}

/// A heartbeat that a manager took.
struct Beat {
    period: Duration,
    roots: Option<CaRootsView>,
    /// The manager that answered (workers), for the renewal.
    via: Option<Channel>,
    /// The role the managers want this node in, when they say.
    role: Option<ModelRole>,
    /// The node ids of the managers the swarm wants now (empty: not said).
    manager_ids: Vec<String>,
}

/// What a worker does about the role the managers want it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RoleStep {
    /// Get a certificate for the wanted role first, for this reason.
    Renew(&'static str),
    /// Its certificate is a manager's: start the manager and join Raft.
    StartManager,
    /// Demoted: Raft dropped this manager, stop it and go on as a worker.
    StopManager,
}

/// A running manager hears its role only from the other managers, once its
/// own has no leader (see [`Session::beat`]).
fn role_step(runs_manager: bool, cert: NodeRole, wanted: Option<ModelRole>) -> Option<RoleStep> {
    match (runs_manager, cert, wanted?) {
        (true, _, ModelRole::Worker) => Some(RoleStep::StopManager),
        (true, _, ModelRole::Manager) => None,
        (false, NodeRole::Worker, ModelRole::Manager) => {
            Some(RoleStep::Renew("promoted: a manager certificate"))
        }
        (false, NodeRole::Manager, ModelRole::Manager) => Some(RoleStep::StartManager),
        // A promotion called off before the manager started: a worker does
        // not keep a certificate that opens the cluster API.
        (false, NodeRole::Manager, ModelRole::Worker) => Some(RoleStep::Renew(
            "promotion called off: a worker certificate",
        )),
        (false, NodeRole::Worker, ModelRole::Worker) => None,
    }
}

/// Why no manager took a heartbeat.
enum Missed {
    /// The managers refuse this node's certificate for good.
    Refused(String),
    Other(String),
}

impl Session {
    pub(crate) async fn run(self) {
        let tls = live_client_config(&self.creds, Arc::new(RemovedNodes::new())).map(|mut c| {
            c.alpn_protocols = vec![b"h2".to_vec()];
            Arc::new(c)
        });
        let mut managers = self.file.managers.clone();
        let mut period = Duration::from_secs(self.file.heartbeat_secs.max(1));
        loop {
            let beat = self.beat(&tls, &mut managers).await;
            if let Some(contact) = &self.contact {
                contact.set_heartbeat(beat.is_ok());
            }
            let ok = match beat {
                Ok(beat) => {
                    self.problem.set(None);
                    period = beat.period;
                    if !beat.manager_ids.is_empty() {
                        self.log_readers.set(beat.manager_ids.iter().cloned());
                    }
                    let runs_manager = self.manager.is_some();
                    let why = match role_step(runs_manager, self.cert_role(), beat.role) {
                        Some(RoleStep::Renew(why)) => Some(why),
                        _ => self.renewal_due(beat.roots.as_ref()),
                    };
                    if let Some(why) = why {
                        match self.renew(beat.via).await {
                            Ok(()) => tracing::info!(reason = why, "certificate renewed"),
                            Err(e) => {
                                tracing::warn!(reason = why, error = %e, "certificate renewal failed")
                            }
                        }
                    }
                    let change = match role_step(runs_manager, self.cert_role(), beat.role) {
                        Some(RoleStep::StartManager) => Some(RoleChange::Promote(managers.clone())),
                        Some(RoleStep::StopManager) => Some(RoleChange::Demote(managers.clone())),
                        _ => None,
                    };
                    // Full: a request is already waiting, which is as good.
                    if let Some(change) = change
                        && let Err(mpsc::error::TrySendError::Closed(c)) =
                            self.roles.try_send(change)
                    {
                        tracing::error!(?c, "nothing here can change this node's role");
                    }
                    true
                }
                Err(Missed::Refused(problem)) => {
                    tracing::error!(%problem, "the managers refuse this node");
                    self.problem.set(Some(problem));
                    false
                }
                Err(Missed::Other(why)) => {
                    tracing::warn!(%why, "no manager took this node's heartbeat; retrying");
                    false
                }
            };
            tokio::time::sleep(if ok { period } else { Duration::from_secs(1) }).await;
        }
    }

    /// One heartbeat: a manager's through its own manager, a worker's to
    /// the managers. A manager whose own has no leader tries the others:
    /// it may have been demoted, which only they can tell it.
    async fn beat(
        &self,
        tls: &Result<Arc<ClientConfig>, shoal_ca::CaError>,
        managers: &mut Vec<String>,
    ) -> Result<Beat, Missed> {
        match (&self.manager, tls) {
            (Some(m), Ok(tls)) => match self.local_beat(m).await {
                Err(Missed::Other(why)) => {
                    let mut others: Vec<String> = managers
                        .iter()
                        .filter(|a| **a != self.file.advertise)
                        .cloned()
                        .collect();
                    match self.remote_beat(tls, &mut others).await {
                        Ok(beat) => Ok(beat),
                        Err(_) => Err(Missed::Other(why)),
                    }
                }
                other => other,
            },
            (Some(m), Err(_)) => self.local_beat(m).await,
            (None, Ok(tls)) => self.remote_beat(tls, managers).await,
            (None, Err(e)) => Err(Missed::Other(format!("no TLS identity: {e}"))),
        }
    }

    fn wireguard_key(&self) -> shoal_wg::PublicKey {
        self.wireguard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .published()
    }

    fn cert_role(&self) -> NodeRole {
        self.creds.identity().role()
    }

    fn tls_status(&self) -> NodeTls {
        NodeTls {
            cert_issuer: self
                .creds
                .issuer()
                .map(|d| d.to_string())
                .unwrap_or_default(),
            cert_not_after_unix: unix_secs(self.creds.identity().not_after()),
        }
    }

    async fn local_beat(&self, m: &Manager) -> Result<Beat, Missed> {
        let resources = Some(crate::resources::node_resources());
        let platform = Some(shoal_controlplane::model::NodePlatform::this_node());
        let report = shoal_controlplane::model::NodeReport {
            tls: Some(self.tls_status()),
            resources,
            platform,
            wireguard_key: Some(self.wireguard_key().to_string()),
        };
        m.heartbeat(&self.file.node_id, report)
            .await
            .map_err(|e| Missed::Other(format!("via the local manager: {}", chain(&e))))?;
        Ok(Beat {
            period: m.heartbeat_period().await,
            roots: m.ca_roots().await.ok(),
            via: None,
            role: None,
            manager_ids: m.wanted_manager_ids().await,
        })
    }

    async fn remote_beat(
        &self,
        tls: &Arc<ClientConfig>,
        managers: &mut Vec<String>,
    ) -> Result<Beat, Missed> {
        let status = self.tls_status();
        let resources = crate::resources::node_resources();
        let mut last = Missed::Other("no manager address known".into());
        for addr in managers.clone() {
            let ch = match transport::channel(&addr, tls.clone(), NodeRole::Manager.server_name()) {
                Ok(ch) => ch,
                Err(e) => {
                    last = Missed::Other(format!("{addr}: {e}"));
                    continue;
                }
            };
            let req = HeartbeatRequest {
                node_id: self.file.node_id.clone(),
                tls: Some(NodeTlsStatus {
                    cert_issuer: status.cert_issuer.clone(),
                    cert_not_after_unix: status.cert_not_after_unix,
                }),
                resources: Some(NodeResources {
                    nano_cpus: resources.nano_cpus,
                    memory_bytes: resources.memory_bytes,
                }),
                platform: Some(shoal_api::cluster::v1::NodePlatform {
                    os: std::env::consts::OS.into(),
                    architecture: std::env::consts::ARCH.into(),
                }),
                wireguard_key: self.wireguard_key().0.to_vec(),
            };
            match DispatcherClient::new(ch.clone()).heartbeat(req).await {
                Ok(r) => {
                    let r = r.into_inner();
                    let manager_ids = r.manager_ids;
                    if !r.managers.is_empty() {
                        // Keep the one that answered first: it is reachable.
                        let mut next = vec![addr.clone()];
                        next.extend(r.managers.into_iter().filter(|m| *m != addr));
                        *managers = next;
                    }
                    return Ok(Beat {
                        period: Duration::from_millis(r.period_ms.max(1000)),
                        roots: r.ca.map(|ca| CaRootsView {
                            issuer: ca.issuer,
                            trusted: ca.trusted,
                        }),
                        via: Some(ch),
                        // Unspecified: an older manager; unknown: a newer
                        // one. Either way the role stays as it is.
                        role: shoal_controlplane::wire::decode::<ModelRole>(
                            || "heartbeat role".into(),
                            r.role,
                        )
                        .map_err(|e| tracing::warn!("{e}"))
                        .ok()
                        .flatten(),
                        manager_ids,
                    });
                }
                Err(s) => {
                    tracing::debug!(%addr, error = %chain(&s), "heartbeat failed");
                    last = match self.refusal(&s, &addr, tls).await {
                        Some(problem) => Missed::Refused(problem),
                        None => Missed::Other(format!("{addr}: {}", chain(&s))),
                    };
                }
            }
        }
        Err(last)
    }

    /// Whether a failed heartbeat means the managers refuse this node for
    /// good. The call's own error rarely carries the TLS alert, so a
    /// transport failure is followed by a bare TLS probe that does.
    async fn refusal(&self, s: &Status, addr: &str, tls: &Arc<ClientConfig>) -> Option<String> {
        let identity = self.creds.identity();
        if let Some(problem) = refused(s, &identity) {
            return Some(problem);
        }
        // A status without a source came from the manager's handler: the
        // connection itself was accepted.
        std::error::Error::source(s)?;
        let probe = transport::probe_tls(
            addr,
            tls.clone(),
            NodeRole::Manager.server_name(),
            PROBE_WAIT,
        )
        .await;
        refused(&probe.err()?, &identity)
    }

    /// Why this node needs a new certificate now, if it does.
    fn renewal_due(&self, roots: Option<&CaRootsView>) -> Option<&'static str> {
        let identity = self.creds.identity();
        // Up to a twentieth of the lifetime early, so that nodes that
        // joined together do not all renew in the same second.
        let last_quarter = identity
            .not_after()
            .duration_since(identity.renew_at())
            .unwrap_or_default();
        let jitter = last_quarter.mul_f64(rand::random::<f64>() / 5.0);
        if identity.needs_renewal(SystemTime::now() + jitter) {
            return Some("the certificate is due for renewal");
        }
        let roots = roots?;
        let issuer = self.creds.issuer().map(|d| d.to_string());
        if !roots.issuer.is_empty() && issuer.as_deref() != Some(roots.issuer.as_str()) {
            return Some("another root CA issues certificates now");
        }
        let trusted: Vec<String> = self
            .creds
            .trust_digests()
            .iter()
            .map(ToString::to_string)
            .collect();
        if !roots.trusted.is_empty() && trusted != roots.trusted {
            return Some("the swarm trusts other root CAs now");
        }
        None
    }

    /// Asks for a certificate for this node's key, installs it with the
    /// roots that come with it, and stores both.
    async fn renew(&self, via: Option<Channel>) -> Result<(), SwarmError> {
        let identity = self.creds.identity();
        let key = NodeKey::from_pem(identity.key_pem())?;
        let csr = key.csr()?.into_string();
        let (cert_pem, roots_pem) = match (&self.manager, via) {
            (Some(m), _) => m.renew_certificate(&self.file.node_id, &csr).await?,
            (None, Some(ch)) => {
                let r = DispatcherClient::new(ch)
                    .renew_certificate(RenewCertificateRequest { csr_pem: csr })
                    .await
                    .map_err(|s| SwarmError::Unreachable {
                        addr: "the manager".into(),
                        reason: s.message().to_owned(),
                    })?
                    .into_inner();
                (r.cert_pem, r.trusted_roots_pem)
            }
            (None, None) => return Ok(()),
        };
        let renewed = NodeIdentity::from_pem(&cert_pem, identity.key_pem())?;
        let trust = roots_pem
            .iter()
            .map(|p| CaCert::from_pem(p))
            .collect::<Result<Vec<_>, _>>()?;
        self.creds.update(Some(renewed), Some(trust))?;
        // Certificate first: with the old roots it still verifies through
        // its cross-signed root, so a crash between the two writes leaves a
        // directory that loads.
        write(&self.dir.join(CERT_FILE), cert_pem.as_bytes(), 0o644)?;
        write(
            &self.dir.join(CA_FILE),
            roots_pem.concat().as_bytes(),
            0o644,
        )?;
        Ok(())
    }
}

/// Whether a failed call means the managers refuse this node for good: a
/// TLS alert saying its certificate is revoked (removed node) or expired.
fn refused(error: &(dyn std::error::Error + 'static), identity: &NodeIdentity) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        match tls {
            Some(rustls::Error::AlertReceived(AlertDescription::CertificateRevoked)) => {
                return Some(REMOVED_MESSAGE.to_owned());
            }
            Some(rustls::Error::AlertReceived(AlertDescription::CertificateExpired))
                if identity.is_expired(SystemTime::now()) =>
            {
                return Some(format!(
                    "this node's certificate expired {}s ago, before it could be renewed: run \
                     `shoal swarm leave --force` on it, then `shoal swarm join` with a current \
                     token",
                    SystemTime::now()
                        .duration_since(identity.not_after())
                        .unwrap_or_default()
                        .as_secs()
                ));
            }
            _ => {}
        }
        next = e.source();
    }
    None
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_promoted_worker_renews_then_starts_its_manager_and_a_demoted_one_stops_it() {
        use ModelRole::{Manager as Wants, Worker as Stays};
        use NodeRole::{Manager, Worker};
        let cases = [
            // (runs a manager, certificate, wanted) → step
            (false, Worker, None, None),
            (false, Worker, Some(Stays), None),
            (false, Worker, Some(Wants), Some("renew")),
            (false, Manager, Some(Wants), Some("start")),
            (false, Manager, Some(Stays), Some("renew")),
            // Older managers say nothing: nothing changes.
            (false, Manager, None, None),
            // A running manager told it is a worker was demoted.
            (true, Manager, Some(Wants), None),
            (true, Manager, None, None),
            (true, Manager, Some(Stays), Some("stop")),
            (true, Worker, Some(Stays), Some("stop")),
        ];
        for (runs, cert, wanted, want) in cases {
            let got = role_step(runs, cert, wanted).map(|s| match s {
                RoleStep::Renew(_) => "renew",
                RoleStep::StartManager => "start",
                RoleStep::StopManager => "stop",
            });
            assert_eq!(got, want, "runs={runs} cert={cert:?} wanted={wanted:?}");
        }
    }
}
