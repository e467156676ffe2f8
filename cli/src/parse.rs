//! Client-side checks of flag values: a typo fails here, naming the flag and
//! the fix, before anything reaches the daemon (which checks again).

mod attach;
mod container;
mod duration;
mod file;
mod label;
mod net;
mod port;
mod shell;
mod token;

use std::fmt;

pub use attach::{AttachError, parse_network};
pub use container::{ContainerError, parse_cpus, parse_mount, parse_size, parse_sysctl};
pub use duration::{DurationError, go_string, parse_duration};
pub use file::{FileRefError, parse_file_ref};
pub use label::{LabelError, check_label_key, parse_label};
pub use net::{Ipv4Cidr, NetError, check_ip, check_ip_port, host_port, parse_pool};
pub use port::{PortError, parse_publish, parse_publish_rm};
pub use shell::{ShellError, split_words};
pub use token::{TokenError, check_token};

/// What was wrong with a flag's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error(transparent)]
    Duration(#[from] DurationError),
    #[error(transparent)]
    Label(#[from] LabelError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Port(#[from] PortError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    FileRef(#[from] FileRefError),
    #[error(transparent)]
    Shell(#[from] ShellError),
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error(transparent)]
    Ulimit(#[from] shoal_api::container::UlimitError),
    #[error(transparent)]
    Host(#[from] shoal_api::container::HostError),
    #[error("cannot be used with --mode global; drop --replicas-max-per-node")]
    MaxReplicasWithGlobal,
    #[error("expected {allowed}")]
    FailureAction { allowed: &'static str },
    #[error("expected start-first or stop-first")]
    UpdateOrder,
    #[error("must be a number between 0 and 1 (a fraction of the tasks, e.g. 0.2)")]
    Ratio,
    #[error("expected spread=node.labels.KEY (spread is the only strategy)")]
    PlacementPref,
    #[error("conflicts with {other}; give one or the other")]
    Conflicts { other: &'static str },
    #[error("cannot be combined with other changes; update first, then roll back")]
    RollbackWithChanges,
    #[error("expected desired-state=running, shutdown or accepted")]
    DesiredState,
    #[error("unknown filter; the filters are: desired-state, id, name, node")]
    FilterKey,
    #[error("expected vip or dnsrr")]
    EndpointMode,
    #[error("expected replicated or global")]
    ServiceMode,
    #[error("expected any, on-failure or none")]
    RestartCondition,
    #[error("must be {min}-{max}")]
    Range { min: u64, max: u64 },
    #[error("must be a whole number of seconds, such as {suggest}")]
    SubSecond { suggest: String },
    #[error("must be at least {min}")]
    TooSmall { min: &'static str },
    #[error("is shorter than --default-addr-pool {pool}: subnets are carved out of the pools, so give {} or more", pool.prefix_len())]
    MaskShorterThanPool { pool: Ipv4Cidr },
    #[error("cannot be used with --mode global; drop --replicas")]
    ReplicasWithGlobal,
    #[error("expected SERVICE=REPLICAS, e.g. web=3")]
    ScaleForm,
    #[error("expected a number of lines or \"all\"")]
    TailLines,
    #[error("unknown option; the overlay driver takes: encrypted, com.docker.network.driver.mtu=N")]
    UnknownOpt,
    #[error("{key} is also given to --label-add; give it to one of them")]
    AddedAndRemoved { key: String },
    #[error(
        "unknown encryption; give encrypted (IPsec), encrypted=ipsec, encrypted=wireguard or encrypted=false"
    )]
    Encryption,
}

/// `--flag value: problem` once anyhow prints the chain with `{:#}`.
/// `value` is `None` for secrets (join tokens), which never reach a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag}{}", Shown(value.as_deref()))]
pub struct FlagError {
    pub flag: &'static str,
    pub value: Option<String>,
    #[source]
    pub problem: Problem,
}

impl FlagError {
    pub fn new(flag: &'static str, value: impl fmt::Display, problem: impl Into<Problem>) -> Self {
        Self {
            flag,
            value: Some(value.to_string()),
            problem: problem.into(),
        }
    }

    /// A flag without a value to show (a switch, or a secret such as a
    /// join token, which never reaches a message).
    pub fn secret(flag: &'static str, problem: impl Into<Problem>) -> Self {
        Self {
            flag,
            value: None,
            problem: problem.into(),
        }
    }
}

/// Quotes a value only when it would otherwise be hard to see.
struct Shown<'a>(Option<&'a str>);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => Ok(()),
            Some(v) if v.is_empty() || v.contains(char::is_whitespace) => write!(f, " {v:?}"),
            Some(v) => write!(f, " {v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(e: FlagError) -> String {
        format!("{:#}", anyhow::Error::from(e))
    }

    #[test]
    fn messages_name_the_flag_then_the_problem() {
        let e = FlagError::new("--default-addr-pool", "10.0.0.0/33", NetError::PrefixLength);
        assert_eq!(
            chain(e),
            "--default-addr-pool 10.0.0.0/33: prefix length must be 0-32"
        );
        let e = FlagError::new(
            "--label-add",
            "a b=c",
            LabelError::Whitespace { key: "a b".into() },
        );
        assert_eq!(
            chain(e),
            "--label-add \"a b=c\": label key \"a b\" contains whitespace"
        );
        let e = FlagError::secret("--token", TokenError::Prefix);
        assert!(chain(e).starts_with("--token: "));
    }
}
