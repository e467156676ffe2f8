//! Several files as one, as docker CLI 28's `loader.merge` does it (mergo
//! with override and appended slices, plus docker's special cases). Rules,
//! per service merged by name:
//!
//! - Scalars: a later non-empty value wins; an empty string, `false` or 0
//!   never overrides (so a later `read_only: false` cannot undo `true`).
//! - `command`, `entrypoint`: replaced when the later one is non-empty.
//! - Plain lists are appended: `cap_add`, `cap_drop`, `dns`, `dns_search`,
//!   `extra_hosts`, `depends_on`, `env_file`, `tmpfs`, placement
//!   `constraints` and `preferences`, generic resources — and, as in
//!   docker, `healthcheck.test`.
//! - Keyed lists, when the earlier file has the list: `ports` by published
//!   port, `volumes` by target, `secrets`/`configs` by source; the later
//!   entry wins and the result is sorted by that key. Docker collapses the
//!   earlier file's entries that share a key too (two unpublished ports
//!   become one). When the earlier file has no such list the later one is
//!   taken as is.
//! - Maps merged per key, later wins: `labels`, `deploy.labels`, `sysctls`,
//!   `ulimits` (whole entry); in `environment` a later empty or valueless
//!   entry does not replace an earlier non-empty value.
//! - `networks`: per name; a later entry without options changes nothing;
//!   with options, its aliases replace the earlier ones (even by none) and
//!   its addresses override when set.
//! - `logging`: same or unset driver on either side → driver filled and
//!   options merged per key (docker drops the later options when the earlier
//!   logging had none); a different driver → replaced whole.
//! - `deploy`, `healthcheck`, `update_config`, `rollback_config`,
//!   `restart_policy`, `resources`: merged field by field by the same rules.
//!
//! Top-level networks, volumes, secrets and configs are replaced per name.

use std::collections::BTreeMap;

use crate::model::*;

pub fn merge(base: &mut Config, over: Config) {
    for (name, svc) in over.services {
        match base.services.get_mut(&name) {
            Some(existing) => merge_service(existing, svc),
            None => {
                base.services.insert(name, svc);
            }
        }
    }
    base.volumes.extend(over.volumes);
    base.networks.extend(over.networks);
    base.secrets.extend(over.secrets);
    base.configs.extend(over.configs);
}

fn opt<T>(dst: &mut Option<T>, src: Option<T>) {
    if src.is_some() {
        *dst = src;
    }
}

fn flag(dst: &mut bool, src: bool) {
    *dst |= src;
}

fn dur(dst: &mut Duration, src: Duration) {
    if src != Duration::ZERO {
        *dst = src;
    }
}

/// A pointer field merged by mergo: set when unset, else merged inside.
fn nested<T>(dst: &mut Option<T>, src: Option<T>, inner: impl FnOnce(&mut T, T)) {
    match (dst.as_mut(), src) {
        (_, None) => {}
        (None, Some(s)) => *dst = Some(s),
        (Some(d), Some(s)) => inner(d, s),
    }
}

/// mergo's pointer-to-scalar rule: a zero value never overrides.
fn opt_nonzero<T: PartialEq + Default>(dst: &mut Option<T>, src: Option<T>) {
    match (dst.as_mut(), src) {
        (_, None) => {}
        (None, Some(s)) => *dst = Some(s),
        (Some(d), Some(s)) => {
            if s != T::default() {
                *d = s;
            }
        }
    }
}

fn keyed<T: Clone, K: Ord>(dst: &mut Vec<T>, src: Vec<T>, key: impl Fn(&T) -> K) {
    if dst.is_empty() {
        // mergo skips docker's transformer for a nil slice and appends.
        dst.extend(src);
        return;
    }
    let mut by_key: BTreeMap<K, T> = BTreeMap::new();
    for item in dst.drain(..).chain(src) {
        by_key.insert(key(&item), item);
    }
    dst.extend(by_key.into_values());
}

fn merge_service(d: &mut Service, s: Service) {
    d.cap_add.extend(s.cap_add);
    d.cap_drop.extend(s.cap_drop);
    if !s.command.is_empty() {
        d.command = s.command;
    }
    keyed(&mut d.configs, s.configs, |c| c.source.clone());
    nested(&mut d.credential_spec, s.credential_spec, |d, s| {
        opt(&mut d.config, s.config);
        opt(&mut d.file, s.file);
        opt(&mut d.registry, s.registry);
    });
    d.depends_on.extend(s.depends_on);
    merge_deploy(&mut d.deploy, s.deploy);
    d.dns.extend(s.dns);
    d.dns_search.extend(s.dns_search);
    if !s.entrypoint.is_empty() {
        d.entrypoint = s.entrypoint;
    }
    for (k, v) in s.environment {
        // mergo treats these values as pointers: an earlier non-empty value
        // is only replaced by a later non-empty one.
        match d.environment.get_mut(&k) {
            Some(Some(existing)) if !existing.is_empty() => {
                if let Some(new) = v.filter(|n| !n.is_empty()) {
                    *existing = new;
                }
            }
            _ => {
                d.environment.insert(k, v);
            }
        }
    }
    d.env_file.extend(s.env_file);
    d.extra_hosts.extend(s.extra_hosts);
    opt(&mut d.hostname, s.hostname);
    nested(&mut d.healthcheck, s.healthcheck, |d, s| {
        d.test.extend(s.test);
        opt_nonzero(&mut d.timeout, s.timeout);
        opt_nonzero(&mut d.interval, s.interval);
        opt(&mut d.retries, s.retries);
        opt_nonzero(&mut d.start_period, s.start_period);
        opt_nonzero(&mut d.start_interval, s.start_interval);
        flag(&mut d.disable, s.disable);
    });
    if !s.image.is_empty() {
        d.image = s.image;
    }
    opt_nonzero(&mut d.init, s.init);
    opt(&mut d.isolation, s.isolation);
    d.labels.extend(s.labels);
    merge_logging(&mut d.logging, s.logging);
    for (name, net) in s.networks {
        match (d.networks.get_mut(&name), net) {
            (Some(Some(existing)), Some(new)) => {
                existing.aliases = new.aliases;
                opt(&mut existing.ipv4_address, new.ipv4_address);
                opt(&mut existing.ipv6_address, new.ipv6_address);
            }
            // A later entry without options leaves earlier options alone.
            (Some(Some(_)), None) => {}
            (_, net) => {
                d.networks.insert(name, net);
            }
        }
    }
    keyed(&mut d.ports, s.ports, |p| p.published.unwrap_or(0));
    flag(&mut d.read_only, s.read_only);
    opt(&mut d.restart, s.restart);
    keyed(&mut d.secrets, s.secrets, |c| c.source.clone());
    flag(&mut d.stdin_open, s.stdin_open);
    opt_nonzero(&mut d.stop_grace_period, s.stop_grace_period);
    opt(&mut d.stop_signal, s.stop_signal);
    d.sysctls.extend(s.sysctls);
    d.tmpfs.extend(s.tmpfs);
    flag(&mut d.tty, s.tty);
    d.ulimits.extend(s.ulimits);
    opt(&mut d.user, s.user);
    keyed(&mut d.volumes, s.volumes, |v| v.target.clone());
    opt(&mut d.working_dir, s.working_dir);
}

fn merge_logging(dst: &mut Option<Logging>, src: Option<Logging>) {
    let Some(src) = src else { return };
    let Some(d) = dst.as_mut() else {
        *dst = Some(src);
        return;
    };
    if d.driver == src.driver || d.driver.is_none() || src.driver.is_none() {
        if d.driver.is_none() {
            d.driver = src.driver;
        }
        // Docker merges into a copy of the earlier map: with no earlier
        // options the later ones are lost.
        if let (Some(opts), Some(new)) = (d.options.as_mut(), src.options) {
            opts.extend(new);
        }
    } else {
        *d = src;
    }
}

fn merge_update(d: &mut UpdateConfig, s: UpdateConfig) {
    opt(&mut d.parallelism, s.parallelism);
    dur(&mut d.delay, s.delay);
    opt(&mut d.failure_action, s.failure_action);
    dur(&mut d.monitor, s.monitor);
    if s.max_failure_ratio != 0.0 {
        d.max_failure_ratio = s.max_failure_ratio;
    }
    opt(&mut d.order, s.order);
}

fn merge_deploy(d: &mut Deploy, s: Deploy) {
    opt(&mut d.mode, s.mode);
    opt(&mut d.replicas, s.replicas);
    d.labels.extend(s.labels);
    nested(&mut d.update_config, s.update_config, merge_update);
    nested(&mut d.rollback_config, s.rollback_config, merge_update);
    nested(&mut d.resources.limits, s.resources.limits, |d, s| {
        opt_nonzero(&mut d.nano_cpus, s.nano_cpus);
        opt_nonzero(&mut d.memory_bytes, s.memory_bytes);
        opt_nonzero(&mut d.pids, s.pids);
    });
    nested(
        &mut d.resources.reservations,
        s.resources.reservations,
        |d, s| {
            opt_nonzero(&mut d.nano_cpus, s.nano_cpus);
            opt_nonzero(&mut d.memory_bytes, s.memory_bytes);
            d.generic_resources.extend(s.generic_resources);
        },
    );
    nested(&mut d.restart_policy, s.restart_policy, |d, s| {
        opt(&mut d.condition, s.condition);
        opt_nonzero(&mut d.delay, s.delay);
        opt(&mut d.max_attempts, s.max_attempts);
        opt_nonzero(&mut d.window, s.window);
    });
    d.placement.constraints.extend(s.placement.constraints);
    d.placement.preferences.extend(s.placement.preferences);
    opt(
        &mut d.placement.max_replicas_per_node,
        s.placement.max_replicas_per_node,
    );
    opt(&mut d.endpoint_mode, s.endpoint_mode);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(f: impl FnOnce(&mut Service)) -> Service {
        let mut s = Service {
            image: "img".into(),
            ..Service::default()
        };
        f(&mut s);
        s
    }

    fn cfg(services: Vec<(&str, Service)>) -> Config {
        Config {
            version: "3.13".into(),
            services: services
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            ..Config::default()
        }
    }

    fn merged(a: Service, b: Service) -> Service {
        let mut base = cfg(vec![("s", a)]);
        merge(&mut base, cfg(vec![("s", b)]));
        base.services.remove("s").expect("s")
    }

    fn port(published: u32, target: u32) -> Port {
        Port {
            mode: Some("ingress".into()),
            target,
            published: Some(published).filter(|&p| p != 0),
            protocol: Some("tcp".into()),
        }
    }

    #[test]
    fn scalars_lists_and_commands() {
        let m = merged(
            svc(|s| {
                s.command = vec!["a".into(), "b".into()];
                s.cap_add = vec!["NET_ADMIN".into()];
                s.read_only = true;
                s.user = Some("u1".into());
            }),
            svc(|s| {
                s.image = "img2".into();
                s.command = vec!["c".into()];
                s.cap_add = vec!["SYS_TIME".into()];
                s.read_only = false;
            }),
        );
        assert_eq!(m.image, "img2");
        assert_eq!(m.command, ["c"]);
        assert_eq!(m.cap_add, ["NET_ADMIN", "SYS_TIME"]);
        assert!(m.read_only, "false never overrides in docker's merge");
        assert_eq!(m.user.as_deref(), Some("u1"));
    }

    #[test]
    fn ports_by_published_port() {
        let m = merged(
            svc(|s| s.ports = vec![port(8080, 80), port(0, 81), port(0, 82)]),
            svc(|s| s.ports = vec![port(8080, 8000), port(443, 443)]),
        );
        // Docker's map by published port: 0 collapses to the last one.
        assert_eq!(m.ports, [port(0, 82), port(443, 443), port(8080, 8000)]);
        let fresh = merged(
            svc(|_| {}),
            svc(|s| s.ports = vec![port(0, 81), port(0, 82)]),
        );
        assert_eq!(fresh.ports, [port(0, 81), port(0, 82)]);
    }

    #[test]
    fn volumes_secrets_by_key() {
        let vol = |src: &str, target: &str| ServiceVolume {
            source: Some(src.into()),
            target: target.into(),
            ..ServiceVolume::default()
        };
        let r = |src: &str, target: Option<&str>| FileReference {
            source: src.into(),
            target: target.map(str::to_string),
            ..FileReference::default()
        };
        let m = merged(
            svc(|s| {
                s.volumes = vec![vol("a", "/z"), vol("b", "/data")];
                s.secrets = vec![r("s2", None), r("s1", None)];
            }),
            svc(|s| {
                s.volumes = vec![vol("c", "/data")];
                s.secrets = vec![r("s1", Some("/x"))];
            }),
        );
        assert_eq!(m.volumes, [vol("c", "/data"), vol("a", "/z")]);
        assert_eq!(m.secrets, [r("s1", Some("/x")), r("s2", None)]);
    }

    #[test]
    fn maps_environment_networks_logging() {
        let m = merged(
            svc(|s| {
                s.environment = [
                    ("A".into(), Some("1".into())),
                    ("B".into(), Some("2".into())),
                    ("C".into(), Some("3".into())),
                ]
                .into();
                s.labels = [("l".into(), "1".into())].into();
                s.networks = [
                    (
                        "n1".into(),
                        Some(ServiceNetwork {
                            aliases: vec!["x".into()],
                            ipv4_address: Some("10.0.0.2".into()),
                            ..ServiceNetwork::default()
                        }),
                    ),
                    (
                        "n2".into(),
                        Some(ServiceNetwork {
                            aliases: vec!["y".into()],
                            ..ServiceNetwork::default()
                        }),
                    ),
                ]
                .into();
                s.logging = Some(Logging {
                    driver: Some("json-file".into()),
                    options: Some([("a".into(), "1".into())].into()),
                });
            }),
            svc(|s| {
                s.environment = [
                    ("A".into(), Some("10".into())),
                    ("B".into(), Some(String::new())),
                    ("C".into(), None),
                ]
                .into();
                s.labels = [("l".into(), String::new()), ("m".into(), "2".into())].into();
                s.networks = [
                    (
                        "n1".into(),
                        Some(ServiceNetwork {
                            aliases: vec![],
                            ..ServiceNetwork::default()
                        }),
                    ),
                    ("n2".into(), None),
                ]
                .into();
                s.logging = Some(Logging {
                    driver: None,
                    options: Some([("b".into(), "2".into())].into()),
                });
            }),
        );
        assert_eq!(m.environment["A"].as_deref(), Some("10"));
        assert_eq!(m.environment["B"].as_deref(), Some("2"));
        // Checked with docker stack config: neither "" nor a valueless
        // entry replaces an earlier value.
        assert_eq!(m.environment["C"].as_deref(), Some("3"));
        assert_eq!(
            m.labels,
            [("l".into(), String::new()), ("m".into(), "2".into())].into()
        );
        let n1 = m.networks["n1"].as_ref().expect("n1");
        assert!(n1.aliases.is_empty());
        assert_eq!(n1.ipv4_address.as_deref(), Some("10.0.0.2"));
        assert_eq!(
            m.networks["n2"].as_ref().map(|n| n.aliases.clone()),
            Some(vec!["y".to_string()])
        );
        let logging = m.logging.expect("logging");
        assert_eq!(logging.driver.as_deref(), Some("json-file"));
        assert_eq!(logging.options.expect("options").len(), 2);
    }

    #[test]
    fn logging_with_another_driver_is_replaced_and_options_need_a_base() {
        let other = Logging {
            driver: Some("syslog".into()),
            options: None,
        };
        let m = merged(
            svc(|s| {
                s.logging = Some(Logging {
                    driver: Some("json-file".into()),
                    options: Some(BTreeMap::new()),
                })
            }),
            svc(|s| s.logging = Some(other.clone())),
        );
        assert_eq!(m.logging, Some(other));
        let m = merged(
            svc(|s| {
                s.logging = Some(Logging {
                    driver: Some("json-file".into()),
                    options: None,
                })
            }),
            svc(|s| {
                s.logging = Some(Logging {
                    driver: None,
                    options: Some([("a".into(), "1".into())].into()),
                })
            }),
        );
        assert_eq!(m.logging.expect("logging").options, None);
    }

    #[test]
    fn deploy_field_by_field() {
        let m = merged(
            svc(|s| {
                s.deploy.replicas = Some(2);
                s.deploy.mode = Some("replicated".into());
                s.deploy.placement.constraints = vec!["a".into()];
                s.deploy.update_config = Some(UpdateConfig {
                    parallelism: Some(1),
                    delay: Duration(5),
                    ..UpdateConfig::default()
                });
                s.deploy.resources.limits = Some(Limits {
                    nano_cpus: Some(5),
                    memory_bytes: Some(10),
                    pids: None,
                });
            }),
            svc(|s| {
                s.deploy.replicas = Some(0);
                s.deploy.placement.constraints = vec!["b".into()];
                s.deploy.update_config = Some(UpdateConfig {
                    order: Some(UpdateOrder::StartFirst),
                    ..UpdateConfig::default()
                });
                s.deploy.resources.limits = Some(Limits {
                    nano_cpus: None,
                    memory_bytes: Some(20),
                    pids: Some(3),
                });
            }),
        );
        assert_eq!(
            m.deploy.replicas,
            Some(0),
            "a set replicas wins even at 0 (docker's mergeUint64)"
        );
        assert_eq!(m.deploy.mode.as_deref(), Some("replicated"));
        assert_eq!(m.deploy.placement.constraints, ["a", "b"]);
        let u = m.deploy.update_config.expect("update");
        assert_eq!(
            (u.parallelism, u.delay, u.order),
            (Some(1), Duration(5), Some(UpdateOrder::StartFirst))
        );
        assert_eq!(
            m.deploy.resources.limits,
            Some(Limits {
                nano_cpus: Some(5),
                memory_bytes: Some(20),
                pids: Some(3)
            })
        );
    }

    #[test]
    fn top_level_objects_replaced_per_name() {
        let mut a = cfg(vec![]);
        a.networks.insert(
            "n".into(),
            Network {
                driver: Some("overlay".into()),
                attachable: true,
                ..Network::default()
            },
        );
        a.networks.insert("keep".into(), Network::default());
        let mut b = cfg(vec![]);
        b.networks.insert(
            "n".into(),
            Network {
                internal: true,
                ..Network::default()
            },
        );
        merge(&mut a, b);
        assert_eq!(
            a.networks["n"],
            Network {
                internal: true,
                ..Network::default()
            }
        );
        assert!(a.networks.contains_key("keep"));
    }
}
