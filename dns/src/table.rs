//! The names tasks resolve locally, per network: a task sees only the
//! services of the networks it is attached to, as in swarm.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

/// Prefix of the name that resolves to a service's task addresses.
pub const TASKS_PREFIX: &str = "tasks.";

/// network id → name → addresses. Names are stored as lookups key them:
/// lower case, without a trailing dot.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Table {
    networks: HashMap<String, HashMap<String, Vec<Ipv4Addr>>>,
}

/// The table's form of a name: DNS names are case-insensitive and the
/// trailing dot only marks them absolute.
pub fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

impl Table {
    /// Replaces every name of `network`. A name with no addresses (a
    /// service with no running task) is still answered, with no records:
    /// it is the swarm's, and asking the node's resolvers about it would
    /// leak it and only delay the same empty answer.
    pub fn set(&mut self, network: &str, names: BTreeMap<String, Vec<Ipv4Addr>>) {
        let names = names
            .into_iter()
            .map(|(name, addrs)| (normalize(&name), addrs))
            .collect();
        self.networks.insert(network.to_owned(), names);
    }

    /// Forgets `network` (removed, or no task here is attached to it).
    pub fn remove(&mut self, network: &str) {
        self.networks.remove(network);
    }

    /// The addresses of `key` (normalised) on the first of `networks` that
    /// has it: the order of a task's attachments, as swarm searches them.
    pub fn lookup(&self, networks: &[String], key: &str) -> Option<&[Ipv4Addr]> {
        networks
            .iter()
            .filter_map(|n| self.networks.get(n))
            .find_map(|names| names.get(key))
            .map(Vec::as_slice)
    }
}

/// The two names of a service on a network: `<service>` resolves to its VIP
/// (or, with no VIP as in endpoint mode dnsrr, to its task addresses), and
/// `tasks.<service>` to its task addresses.
pub fn service_names(
    service: &str,
    vip: Option<Ipv4Addr>,
    tasks: &[Ipv4Addr],
) -> [(String, Vec<Ipv4Addr>); 2] {
    let service = normalize(service);
    let direct = vip.map_or_else(|| tasks.to_vec(), |vip| vec![vip]);
    [
        (format!("{TASKS_PREFIX}{service}"), tasks.to_vec()),
        (service, direct),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 9, last)
    }

    #[test]
    fn a_task_sees_only_its_networks_first_match_first() {
        let mut table = Table::default();
        table.set("net-a", BTreeMap::from([("Web.".into(), vec![ip(2)])]));
        table.set("net-b", BTreeMap::from([("web".into(), vec![ip(3)])]));
        table.set("net-c", BTreeMap::from([("db".into(), vec![ip(4)])]));
        let ab = ["net-a".to_owned(), "net-b".to_owned()];
        let ba = ["net-b".to_owned(), "net-a".to_owned()];
        assert_eq!(table.lookup(&ab, "web"), Some(&[ip(2)][..]));
        assert_eq!(table.lookup(&ba, "web"), Some(&[ip(3)][..]));
        assert_eq!(table.lookup(&ab, "db"), None);
        table.remove("net-a");
        assert_eq!(table.lookup(&ab, "web"), Some(&[ip(3)][..]));
    }

    #[test]
    fn set_replaces_a_network_wholly() {
        let mut table = Table::default();
        let nets = ["n".to_owned()];
        table.set("n", BTreeMap::from([("old".into(), vec![ip(2)])]));
        table.set("n", BTreeMap::from([("new".into(), vec![])]));
        assert_eq!(table.lookup(&nets, "old"), None);
        assert_eq!(table.lookup(&nets, "new"), Some(&[][..]));
    }

    #[test]
    fn services_resolve_to_the_vip_or_with_dnsrr_to_their_tasks() {
        let tasks = [ip(5), ip(6)];
        assert_eq!(
            service_names("Web", Some(ip(2)), &tasks),
            [
                ("tasks.web".into(), tasks.to_vec()),
                ("web".into(), vec![ip(2)])
            ]
        );
        assert_eq!(service_names("web", None, &tasks)[1].1, tasks.to_vec());
    }
}
