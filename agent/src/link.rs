//! How this node reaches the managers.

use std::sync::Arc;

use shoal_api::cluster::v1::dispatcher_client::DispatcherClient;
use shoal_ca::{NodeRole, rustls::ClientConfig};
use shoal_controlplane::transport;

#[derive(Clone)]
pub struct ManagerLink {
    pub node_id: String,
    /// host:port of managers' 2377, tried in order.
    pub managers: Vec<String>,
    pub tls: Arc<ClientConfig>,
}

impl ManagerLink {
    pub fn dispatchers(
        &self,
    ) -> impl Iterator<Item = (String, DispatcherClient<tonic::transport::Channel>)> {
        self.managers.iter().filter_map(|addr| {
            let ch =
                transport::channel(addr, self.tls.clone(), NodeRole::Manager.server_name()).ok()?;
            Some((
                addr.clone(),
                // An assignment set of a node with many tasks.
                DispatcherClient::new(ch).max_decoding_message_size(shoal_api::MAX_MESSAGE_BYTES),
            ))
        })
    }
}
