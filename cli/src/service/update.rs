//! `service update`: docker's flags for the whole spec, mapped onto
//! `UpdateServiceRequest` (set fields replace, `-add`/`-rm` lists edit, the
//! rest stays as it is).

use clap::Args;
use shoal_api::{
    cluster::v1::{
        Args as CommandArgs, Entrypoint, ResourcesUpdate, RestartCondition, RestartPolicyUpdate,
        UpdateServiceRequest,
    },
    words::Word,
};

use super::{
    FileUpdates, file_refs,
    policy::{HealthFlags, PolicyFlags, nanos, placement_pref},
};
use crate::parse::{
    FlagError, Problem, check_label_key, parse_cpus, parse_label, parse_mount, parse_publish,
    parse_publish_rm, parse_size, split_words,
};

#[derive(Args, Default, Debug, Clone)]
pub struct UpdateArgs {
    /// The service's name or id.
    pub service: String,
    /// Service image tag.
    #[arg(long, value_name = "string")]
    pub image: Option<String>,
    /// Service command args (one string, split as a shell would).
    #[arg(long, value_name = "command", allow_hyphen_values = true)]
    pub args: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image ("" clears it).
    #[arg(long, value_name = "command", allow_hyphen_values = true)]
    pub entrypoint: Option<String>,
    /// Add or update an environment variable (repeatable).
    #[arg(long, value_name = "list")]
    pub env_add: Vec<String>,
    /// Remove an environment variable (repeatable).
    #[arg(long, value_name = "list")]
    pub env_rm: Vec<String>,
    /// Add or update a service label (repeatable).
    #[arg(long, value_name = "list")]
    pub label_add: Vec<String>,
    /// Remove a label by its key (repeatable).
    #[arg(long, value_name = "list")]
    pub label_rm: Vec<String>,
    /// Add or update a container label (repeatable).
    #[arg(long, value_name = "list")]
    pub container_label_add: Vec<String>,
    /// Remove a container label by its key (repeatable).
    #[arg(long, value_name = "list")]
    pub container_label_rm: Vec<String>,
    /// Add or update a placement constraint (repeatable).
    #[arg(long, value_name = "list")]
    pub constraint_add: Vec<String>,
    /// Remove a constraint (repeatable).
    #[arg(long, value_name = "list")]
    pub constraint_rm: Vec<String>,
    /// Add a placement preference, spread=node.labels.KEY (repeatable).
    #[arg(long, value_name = "pref")]
    pub placement_pref_add: Vec<String>,
    /// Remove a placement preference (repeatable).
    #[arg(long, value_name = "pref")]
    pub placement_pref_rm: Vec<String>,
    /// Number of tasks.
    #[arg(long, value_name = "uint")]
    pub replicas: Option<u64>,
    /// Add or update a mount on a service, as --mount takes it (repeatable).
    #[arg(long, value_name = "mount")]
    pub mount_add: Vec<String>,
    /// Remove a mount by its target path (repeatable).
    #[arg(long, value_name = "list")]
    pub mount_rm: Vec<String>,
    /// Add a network: NAME, or name=NAME,alias=ALIAS[,alias=…]
    /// (repeatable).
    #[arg(long, value_name = "network")]
    pub network_add: Vec<String>,
    /// Maximum number of tasks per node (0 = unlimited).
    #[arg(long, value_name = "uint")]
    pub replicas_max_per_node: Option<u64>,
    /// Window used to evaluate the restart policy (ns|us|ms|s|m|h).
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub restart_window: Option<String>,
    /// Add or update a ulimit option, NAME=SOFT[:HARD] (repeatable).
    #[arg(long, value_name = "ulimit")]
    pub ulimit_add: Vec<String>,
    /// Remove a ulimit option by name (repeatable).
    #[arg(long, value_name = "list")]
    pub ulimit_rm: Vec<String>,
    /// Add a custom host-to-IP mapping, HOST:IP (repeatable).
    #[arg(long, value_name = "list")]
    pub host_add: Vec<String>,
    /// Remove a custom host-to-IP mapping, HOST[:IP] (repeatable).
    #[arg(long, value_name = "list")]
    pub host_rm: Vec<String>,
    /// Remove a network (repeatable).
    #[arg(long, value_name = "list")]
    pub network_rm: Vec<String>,
    /// Limit CPUs.
    #[arg(long, value_name = "decimal")]
    pub limit_cpu: Option<String>,
    /// Limit Memory.
    #[arg(long, value_name = "bytes")]
    pub limit_memory: Option<String>,
    /// Limit maximum number of processes (default 0 = unlimited).
    #[arg(long, value_name = "int")]
    pub limit_pids: Option<u64>,
    /// Reserve CPUs.
    #[arg(long, value_name = "decimal")]
    pub reserve_cpu: Option<String>,
    /// Reserve Memory.
    #[arg(long, value_name = "bytes")]
    pub reserve_memory: Option<String>,
    /// Restart when condition is met ("none", "on-failure", "any").
    #[arg(long, value_name = "string")]
    pub restart_condition: Option<String>,
    /// Delay between restart attempts (ns|us|ms|s|m|h).
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub restart_delay: Option<String>,
    /// Maximum number of restarts before giving up.
    #[arg(long, value_name = "uint")]
    pub restart_max_attempts: Option<u64>,
    /// Working directory inside the container.
    #[arg(long, short, value_name = "string")]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>]).
    #[arg(long, short, value_name = "string")]
    pub user: Option<String>,
    /// Container hostname.
    #[arg(long, value_name = "string")]
    pub hostname: Option<String>,
    /// Signal to stop the container.
    #[arg(long, value_name = "string")]
    pub stop_signal: Option<String>,
    /// Time to wait before force killing a container (ns|us|ms|s|m|h).
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub stop_grace_period: Option<String>,
    /// Mount the container's root filesystem as read only
    /// (--read-only=false to undo).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "bool")]
    pub read_only: Option<bool>,
    /// Use an init inside each service container (--init=false to undo).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "bool")]
    pub init: Option<bool>,
    /// Add Linux capabilities (repeatable).
    #[arg(long, value_name = "list")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities (repeatable).
    #[arg(long, value_name = "list")]
    pub cap_drop: Vec<String>,
    /// Add or replace a published port, as --publish takes it (repeatable).
    #[arg(long, value_name = "SPEC")]
    pub publish_add: Vec<String>,
    /// Remove a published port: 8080, 8080/udp or the long form
    /// (repeatable).
    #[arg(long, value_name = "SPEC")]
    pub publish_rm: Vec<String>,
    #[command(flatten)]
    pub files: FileUpdates,
    #[command(flatten)]
    pub health: HealthFlags,
    #[command(flatten)]
    pub policy: PolicyFlags,
    /// Force update even if no changes require it.
    #[arg(long)]
    pub force: bool,
    /// Rollback to previous specification.
    #[arg(long)]
    pub rollback: bool,
    /// Exit immediately instead of waiting for the service to converge.
    #[arg(long, short)]
    pub detach: bool,
    /// Suppress progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

fn each<T>(
    values: &[String],
    f: impl Fn(&str) -> Result<T, FlagError>,
) -> Result<Vec<T>, FlagError> {
    values.iter().map(|v| f(v)).collect()
}

fn labels(
    flag: &'static str,
    values: &[String],
) -> Result<std::collections::HashMap<String, String>, FlagError> {
    values
        .iter()
        .map(|l| parse_label(l).map_err(|e| FlagError::new(flag, l, e)))
        .collect()
}

fn keys(flag: &'static str, values: &[String]) -> Result<Vec<String>, FlagError> {
    for k in values {
        check_label_key(k).map_err(|e| FlagError::new(flag, k, e))?;
    }
    Ok(values.to_vec())
}

/// `--env-add KEY` takes KEY's value from this client's environment, as
/// docker's; without one it is sent as is.
fn env_value(v: &str) -> String {
    if v.contains('=') {
        return v.to_owned();
    }
    std::env::var(v).map_or_else(|_| v.to_owned(), |val| format!("{v}={val}"))
}

/// Whole seconds, as the wire's restart delay.
pub fn restart_delay_secs(v: &str) -> Result<u64, FlagError> {
    let n = nanos("--restart-delay", v)?;
    if n % 1_000_000_000 != 0 {
        let suggest = format!("{}s", (n / 1_000_000_000).max(1));
        return Err(FlagError::new(
            "--restart-delay",
            v,
            Problem::SubSecond { suggest },
        ));
    }
    Ok(n / 1_000_000_000)
}

pub fn update_request(a: &UpdateArgs) -> Result<UpdateServiceRequest, FlagError> {
    let cpus = |flag, v: &Option<String>| {
        v.as_deref()
            .map(|v| parse_cpus(v).map_err(|e| FlagError::new(flag, v, e)))
            .transpose()
    };
    let size = |flag, v: &Option<String>| {
        v.as_deref()
            .map(|v| parse_size(v).map_err(|e| FlagError::new(flag, v, e)))
            .transpose()
    };
    let resources = ResourcesUpdate {
        limit_nano_cpus: cpus("--limit-cpu", &a.limit_cpu)?,
        limit_memory_bytes: size("--limit-memory", &a.limit_memory)?,
        limit_pids: a.limit_pids,
        reserve_nano_cpus: cpus("--reserve-cpu", &a.reserve_cpu)?,
        reserve_memory_bytes: size("--reserve-memory", &a.reserve_memory)?,
    };
    let restart = RestartPolicyUpdate {
        condition: a
            .restart_condition
            .as_deref()
            .map(|v| {
                RestartCondition::from_word(v)
                    .map(|c| c as i32)
                    .ok_or_else(|| {
                        FlagError::new("--restart-condition", v, Problem::RestartCondition)
                    })
            })
            .transpose()?,
        delay_secs: a
            .restart_delay
            .as_deref()
            .map(restart_delay_secs)
            .transpose()?,
        max_attempts: a.restart_max_attempts,
        window_ns: a
            .restart_window
            .as_deref()
            .map(|v| nanos("--restart-window", v))
            .transpose()?,
    };
    let (network_add, network_add_aliases) = super::networks("--network-add", &a.network_add)?;
    for u in &a.ulimit_rm {
        if shoal_api::container::rlimit(u).is_none() {
            return Err(FlagError::new(
                "--ulimit-rm",
                u,
                shoal_api::container::UlimitError::Name(u.clone()),
            ));
        }
    }
    let host_add = a
        .host_add
        .iter()
        .map(|h| {
            shoal_api::container::parse_extra_host(h)
                .map(|_| h.clone())
                .map_err(|e| FlagError::new("--host-add", h, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let args = a
        .args
        .as_deref()
        .map(|v| split_words(v).map_err(|e| FlagError::new("--args", v, e)))
        .transpose()?;
    let entrypoint = a
        .entrypoint
        .as_deref()
        .map(|v| split_words(v).map_err(|e| FlagError::new("--entrypoint", v, e)))
        .transpose()?;
    let mut r = UpdateServiceRequest {
        service: a.service.clone(),
        secret_add: file_refs("--secret-add", &a.files.secret_add)?,
        secret_rm: a.files.secret_rm.clone(),
        config_add: file_refs("--config-add", &a.files.config_add)?,
        config_rm: a.files.config_rm.clone(),
        image: a.image.clone(),
        args: args.map(|args| CommandArgs { args }),
        entrypoint: entrypoint.map(|args| Entrypoint { args }),
        env_add: a.env_add.iter().map(|v| env_value(v)).collect(),
        env_rm: a.env_rm.clone(),
        label_add: labels("--label-add", &a.label_add)?,
        label_rm: keys("--label-rm", &a.label_rm)?,
        container_label_add: labels("--container-label-add", &a.container_label_add)?,
        container_label_rm: keys("--container-label-rm", &a.container_label_rm)?,
        constraint_add: a.constraint_add.clone(),
        constraint_rm: a.constraint_rm.clone(),
        placement_pref_add: each(&a.placement_pref_add, |v| {
            placement_pref("--placement-pref-add", v)
        })?,
        placement_pref_rm: each(&a.placement_pref_rm, |v| {
            placement_pref("--placement-pref-rm", v)
        })?,
        replicas: a.replicas,
        mount_add: each(&a.mount_add, |v| {
            parse_mount(v).map_err(|e| FlagError::new("--mount-add", v, e))
        })?,
        mount_rm: a.mount_rm.clone(),
        network_add,
        network_add_aliases,
        max_replicas_per_node: a.replicas_max_per_node,
        ulimit_add: super::ulimits("--ulimit-add", &a.ulimit_add)?,
        ulimit_rm: a.ulimit_rm.clone(),
        host_add,
        host_rm: a.host_rm.clone(),
        network_rm: a.network_rm.clone(),
        resources: (resources != ResourcesUpdate::default()).then_some(resources),
        restart: (restart != RestartPolicyUpdate::default()).then_some(restart),
        force: a.force,
        update_config: a.policy.update_config()?,
        rollback_config: a.policy.rollback_config()?,
        healthcheck: a.health.config()?,
        rollback: a.rollback,
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        hostname: a.hostname.clone(),
        stop_signal: a.stop_signal.clone(),
        stop_grace_period_ns: a
            .stop_grace_period
            .as_deref()
            .map(|v| nanos("--stop-grace-period", v))
            .transpose()?,
        read_only: a.read_only,
        init: a.init,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        ..Default::default()
    };
    for p in &a.publish_add {
        let spec = parse_publish(p).map_err(|e| FlagError::new("--publish-add", p, e))?;
        r.publish_add.push(spec.to_api());
    }
    for p in &a.publish_rm {
        let spec = parse_publish_rm(p).map_err(|e| FlagError::new("--publish-rm", p, e))?;
        r.publish_rm.push(spec.to_api());
    }
    if r.rollback {
        // The manager refuses it too; saying so here names the flag.
        let alone = UpdateServiceRequest {
            service: r.service.clone(),
            rollback: true,
            ..Default::default()
        };
        if r != alone {
            return Err(FlagError::secret(
                "--rollback",
                Problem::RollbackWithChanges,
            ));
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use shoal_api::cluster::v1::{FailureAction, MountType};

    use super::*;

    fn parse(extra: &[&str]) -> Result<UpdateArgs, clap::Error> {
        use clap::{FromArgMatches, Parser};
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            a: UpdateArgs,
        }
        let mut argv = vec!["shoal"];
        argv.extend_from_slice(extra);
        argv.push("web");
        let m = <Cli as clap::CommandFactory>::command().try_get_matches_from(argv)?;
        Cli::from_arg_matches(&m).map(|c| c.a)
    }

    fn req(extra: &[&str]) -> anyhow::Result<UpdateServiceRequest> {
        Ok(update_request(&parse(extra)?)?)
    }

    fn chain(e: anyhow::Error) -> String {
        format!("{e:#}")
    }

    #[test]
    fn nothing_given_changes_nothing() -> anyhow::Result<()> {
        let r = req(&[])?;
        assert_eq!(
            r,
            UpdateServiceRequest {
                service: "web".into(),
                ..Default::default()
            }
        );
        Ok(())
    }

    #[test]
    fn every_flag_reaches_the_request() -> anyhow::Result<()> {
        let r = req(&[
            "--image",
            "nginx:1.27",
            "--args",
            "serve --msg 'hello world'",
            "--entrypoint",
            "/bin/sh -c",
            "--env-add",
            "A=1",
            "--env-rm",
            "B",
            "--label-add",
            "tier=web",
            "--label-rm",
            "old",
            "--container-label-add",
            "c=d",
            "--container-label-rm",
            "e",
            "--constraint-add",
            "node.role==worker",
            "--constraint-rm",
            "node.role==manager",
            "--placement-pref-add",
            "spread=node.labels.dc",
            "--placement-pref-rm",
            "spread=node.labels.rack",
            "--replicas",
            "4",
            "--mount-add",
            "type=tmpfs,target=/t",
            "--mount-rm",
            "/old",
            "--network-add",
            "front",
            "--network-rm",
            "back",
            "--limit-cpu",
            "0.5",
            "--limit-memory",
            "64M",
            "--limit-pids",
            "10",
            "--reserve-cpu",
            "0.25",
            "--reserve-memory",
            "32M",
            "--restart-condition",
            "on-failure",
            "--restart-delay",
            "10s",
            "--restart-max-attempts",
            "3",
            "--workdir",
            "/srv",
            "--user",
            "1000",
            "--hostname",
            "h",
            "--stop-signal",
            "SIGINT",
            "--stop-grace-period",
            "1m",
            "--read-only",
            "--init=false",
            "--cap-add",
            "NET_ADMIN",
            "--cap-drop",
            "MKNOD",
            "--force",
            "--health-cmd",
            "true",
            "--update-parallelism",
            "2",
            "--update-failure-action",
            "continue",
            "--rollback-delay",
            "2s",
            "--publish-add",
            "8080:80",
            "--secret-rm",
            "pw",
        ])?;
        assert_eq!(r.image.as_deref(), Some("nginx:1.27"));
        assert_eq!(
            r.args.map(|a| a.args),
            Some(vec!["serve".into(), "--msg".into(), "hello world".into()])
        );
        assert_eq!(
            r.entrypoint.map(|e| e.args),
            Some(vec!["/bin/sh".into(), "-c".into()])
        );
        assert_eq!(
            (r.env_add, r.env_rm),
            (vec!["A=1".into()], vec!["B".into()])
        );
        assert_eq!(r.label_add.get("tier").map(String::as_str), Some("web"));
        assert_eq!(r.label_rm, ["old"]);
        assert_eq!(
            r.container_label_add.get("c").map(String::as_str),
            Some("d")
        );
        assert_eq!(r.container_label_rm, ["e"]);
        assert_eq!(
            (r.constraint_add, r.constraint_rm),
            (
                vec!["node.role==worker".into()],
                vec!["node.role==manager".into()]
            )
        );
        assert_eq!(r.placement_pref_add, ["spread=node.labels.dc"]);
        assert_eq!(r.placement_pref_rm, ["spread=node.labels.rack"]);
        assert_eq!(r.replicas, Some(4));
        assert_eq!(r.mount_add[0].r#type, MountType::Tmpfs as i32);
        assert_eq!(r.mount_rm, ["/old"]);
        assert_eq!(
            (r.network_add, r.network_rm),
            (vec!["front".into()], vec!["back".into()])
        );
        assert_eq!(
            r.resources,
            Some(ResourcesUpdate {
                limit_nano_cpus: Some(500_000_000),
                limit_memory_bytes: Some(64 << 20),
                limit_pids: Some(10),
                reserve_nano_cpus: Some(250_000_000),
                reserve_memory_bytes: Some(32 << 20),
            })
        );
        assert_eq!(
            r.restart,
            Some(RestartPolicyUpdate {
                condition: Some(RestartCondition::OnFailure as i32),
                delay_secs: Some(10),
                max_attempts: Some(3),
                window_ns: None,
            })
        );
        assert_eq!(r.workdir.as_deref(), Some("/srv"));
        assert_eq!(r.user.as_deref(), Some("1000"));
        assert_eq!(r.hostname.as_deref(), Some("h"));
        assert_eq!(r.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(r.stop_grace_period_ns, Some(60_000_000_000));
        assert_eq!((r.read_only, r.init), (Some(true), Some(false)));
        assert_eq!(
            (r.cap_add, r.cap_drop),
            (vec!["NET_ADMIN".into()], vec!["MKNOD".into()])
        );
        assert!(r.force && !r.rollback);
        assert_eq!(
            r.healthcheck.map(|h| h.test),
            Some(vec!["CMD-SHELL".into(), "true".into()])
        );
        let u = r.update_config.unwrap_or_default();
        assert_eq!(
            (u.parallelism, u.failure_action),
            (Some(2), Some(FailureAction::Continue as i32))
        );
        assert_eq!(
            r.rollback_config.and_then(|c| c.delay_ns),
            Some(2_000_000_000)
        );
        assert_eq!(r.publish_add[0].published_port, 8080);
        assert_eq!(r.secret_rm, ["pw"]);
        Ok(())
    }

    #[test]
    fn clearing_forms() -> anyhow::Result<()> {
        let r = req(&["--entrypoint", "", "--args", ""])?;
        assert_eq!(r.entrypoint.map(|e| e.args), Some(vec![]));
        assert_eq!(r.args.map(|a| a.args), Some(vec![]));
        Ok(())
    }

    #[test]
    fn switches_take_an_optional_value() -> anyhow::Result<()> {
        // `--read-only web`: the switch, then the service (as docker's).
        let r = req(&["--read-only"])?;
        assert_eq!((r.read_only, r.init), (Some(true), None));
        let r = req(&["--read-only=false", "--init=true"])?;
        assert_eq!((r.read_only, r.init), (Some(false), Some(true)));
        Ok(())
    }

    #[test]
    fn rollback_alone() -> anyhow::Result<()> {
        let r = req(&["--rollback"])?;
        assert!(r.rollback);
        let e = req(&["--rollback", "--image", "x"]).err().map(chain);
        assert_eq!(
            e.unwrap_or_default(),
            "--rollback: cannot be combined with other changes; update first, then roll back"
        );
        Ok(())
    }

    #[test]
    fn bad_values_name_their_flag() -> anyhow::Result<()> {
        let bad: &[(&[&str], &str)] = &[
            (
                &["--args", "echo 'hi"],
                "--args \"echo 'hi\": unterminated single quote",
            ),
            (
                &["--restart-delay", "1.5s"],
                "--restart-delay 1.5s: must be a whole number",
            ),
            (
                &["--restart-condition", "always"],
                "--restart-condition always: expected any",
            ),
            (
                &["--stop-grace-period", "-1s"],
                "--stop-grace-period -1s: negative",
            ),
            (
                &["--limit-memory", "x"],
                "--limit-memory x: expected a size",
            ),
            (&["--label-rm", "a=b"], "--label-rm a=b: takes a key only"),
            (
                &["--mount-add", "source=v"],
                "--mount-add source=v: target is required",
            ),
            (
                &["--placement-pref-add", "node.labels.dc"],
                "--placement-pref-add node.labels.dc: expected spread=",
            ),
            (
                &["--no-healthcheck", "--health-cmd", "true"],
                "--no-healthcheck: conflicts with --health-cmd",
            ),
            (
                &["--update-max-failure-ratio", "2"],
                "--update-max-failure-ratio 2: must be a number between 0 and 1",
            ),
            (
                &["--rollback-failure-action", "rollback"],
                "--rollback-failure-action rollback: expected pause or continue",
            ),
        ];
        for (flags, want) in bad {
            let e = req(flags).err().map(chain).unwrap_or_default();
            assert!(e.starts_with(want), "{flags:?}: {e}");
        }
        Ok(())
    }

    #[test]
    fn stack_fields_on_update() -> anyhow::Result<()> {
        let r = req(&[
            "--network-add",
            "name=front,alias=web",
            "--replicas-max-per-node",
            "0",
            "--restart-window",
            "30s",
            "--ulimit-add",
            "nofile=10:20",
            "--ulimit-rm",
            "nproc",
            "--host-add",
            "db:10.0.0.5",
            "--host-rm",
            "cache",
        ])?;
        assert_eq!(r.network_add, ["front"]);
        assert_eq!(r.network_add_aliases["front"].aliases, ["web"]);
        assert_eq!(r.max_replicas_per_node, Some(0));
        assert_eq!(r.restart.and_then(|p| p.window_ns), Some(30_000_000_000));
        assert_eq!(r.ulimit_add[0].name, "nofile");
        assert_eq!((r.ulimit_add[0].soft, r.ulimit_add[0].hard), (10, 20));
        assert_eq!(r.ulimit_rm, ["nproc"]);
        assert_eq!(r.host_add, ["db:10.0.0.5"]);
        assert_eq!(r.host_rm, ["cache"]);
        assert!(
            req(&["--ulimit-rm", "files"])
                .err()
                .is_some_and(|e| format!("{e:#}").contains("invalid ulimit type"))
        );
        assert!(
            req(&["--host-add", "x:nope"])
                .err()
                .is_some_and(|e| format!("{e:#}").contains("invalid IP address in add-host"))
        );
        Ok(())
    }
}
