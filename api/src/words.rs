//! docker's lowercase words for the wire enums, in one place: what the CLI
//! prints and the flags it reads. Nothing but the CLI's edge and the error
//! messages should speak in words; code compares the enums.

use std::{borrow::Cow, fmt};

use crate::{cluster::v1 as c, node::v1 as n};

/// An enum with a word for every value but the unspecified one.
pub trait Word: Sized + Copy + TryFrom<i32> {
    /// The word, empty for the unspecified value.
    fn word(self) -> &'static str;
    /// The value a word names (never the unspecified one).
    fn from_word(word: &str) -> Option<Self>;
}

/// The word of a raw wire value: `unknown(7)` for one this build does not
/// know, so that nothing is printed as a value it is not.
pub fn word<T: Word>(value: i32) -> Cow<'static, str> {
    match T::try_from(value) {
        Ok(v) => Cow::Borrowed(v.word()),
        Err(_) => Cow::Owned(format!("unknown({value})")),
    }
}

macro_rules! words {
    ($($ty:ty { $($variant:ident => $word:literal),* $(,)? })*) => {$(
        impl Word for $ty {
            fn word(self) -> &'static str {
                match self {
                    Self::Unspecified => "",
                    $(Self::$variant => $word,)*
                }
            }

            fn from_word(word: &str) -> Option<Self> {
                match word {
                    $($word => Some(Self::$variant),)*
                    _ => None,
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.word())
            }
        }
    )*};
}

words! {
    c::NodeRole { Worker => "worker", Manager => "manager" }
    c::NodeAvailability { Active => "active", Pause => "pause", Drain => "drain" }
    c::NodeStatus {
        Unknown => "unknown", Down => "down", Ready => "ready", Disconnected => "disconnected",
    }
    c::Protocol { Tcp => "tcp", Udp => "udp" }
    c::PublishMode { Ingress => "ingress", Host => "host" }
    c::EndpointMode { Vip => "vip", Dnsrr => "dnsrr" }
    c::ServiceMode { Replicated => "replicated", Global => "global" }
    c::RestartCondition { Any => "any", OnFailure => "on-failure", None => "none" }
    c::MountType { Volume => "volume", Bind => "bind", Tmpfs => "tmpfs" }
    c::TaskState {
        New => "new", Pending => "pending", Assigned => "assigned", Accepted => "accepted",
        Preparing => "preparing", Starting => "starting", Running => "running",
        Complete => "complete", Shutdown => "shutdown", Failed => "failed",
        Rejected => "rejected", Orphaned => "orphaned",
    }
    c::HealthStatus { Starting => "starting", Healthy => "healthy", Unhealthy => "unhealthy" }
    c::FailureAction { Pause => "pause", Continue => "continue", Rollback => "rollback" }
    c::UpdateOrder { StopFirst => "stop-first", StartFirst => "start-first" }
    // docker's UpdateStatus.State values.
    c::UpdateState {
        Updating => "updating", Paused => "paused", Completed => "completed",
        RollbackStarted => "rollback_started", RollbackPaused => "rollback_paused",
        RollbackCompleted => "rollback_completed",
    }
    n::SwarmState {
        Inactive => "inactive", Pending => "pending", Active => "active", Locked => "locked",
        Error => "error",
    }
    n::Direction { Ingress => "ingress", Egress => "egress" }
    n::CountedProtocol {
        Tcp => "tcp", Udp => "udp", Icmp => "icmp", Ipv4Other => "ipv4-other", Ipv6 => "ipv6",
        Arp => "arp", Other => "other",
    }
    n::CheckStatus { Ok => "ok", Fail => "fail", Skip => "skip" }
}

/// A wire value that is not one of its enum's: names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{field}: unknown value {value}")]
    UnknownValue { field: String, value: i32 },
    #[error("{field}: must be given")]
    Missing { field: String },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

/// A raw enum field as its type; an unknown value is an error naming
/// `field` (built only on failure).
pub fn known<T: TryFrom<i32>>(field: impl FnOnce() -> String, value: i32) -> Result<T, WireError> {
    T::try_from(value).map_err(|_| WireError::UnknownValue {
        field: field(),
        value,
    })
}

/// As [`known`], and the unspecified value (0) is refused too: for replies,
/// where every field is set.
pub fn given<T: TryFrom<i32>>(field: impl Fn() -> String, value: i32) -> Result<T, WireError> {
    if value == 0 {
        return Err(WireError::Missing { field: field() });
    }
    known(field, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_unknown_values_are_named() {
        for s in [
            c::TaskState::New,
            c::TaskState::Running,
            c::TaskState::Orphaned,
        ] {
            assert_eq!(c::TaskState::from_word(s.word()), Some(s));
        }
        assert_eq!(c::RestartCondition::OnFailure.to_string(), "on-failure");
        assert_eq!(n::CountedProtocol::Ipv4Other.word(), "ipv4-other");
        assert_eq!(c::NodeRole::from_word(""), None);
        assert_eq!(word::<c::Protocol>(2), "udp");
        assert_eq!(word::<c::Protocol>(7), "unknown(7)");
        let e = known::<c::Protocol>(|| "ports[0].protocol".into(), 7);
        assert_eq!(
            e.map_err(|e| e.to_string()),
            Err("ports[0].protocol: unknown value 7".into())
        );
        assert!(given::<c::Protocol>(|| "p".into(), 0).is_err());
    }
}

// Its zero is a mode (`none`), not "unspecified": the field was a bool.
impl Word for c::Encryption {
    fn word(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Ipsec => "ipsec",
            Self::Wireguard => "wireguard",
        }
    }

    fn from_word(word: &str) -> Option<Self> {
        match word {
            "none" => Some(Self::None),
            "ipsec" => Some(Self::Ipsec),
            "wireguard" => Some(Self::Wireguard),
            _ => None,
        }
    }
}

/// The value of docker's `encrypted` driver option (`--opt encrypted[=V]`,
/// compose `driver_opts`, the Engine API's `Options`): bare and `true` mean
/// IPsec, as in swarm; `false` and `none` mean none; `wireguard` names
/// WireGuard. Anything else is `None`, never read as "not encrypted".
pub fn encryption_opt(value: &str) -> Option<c::Encryption> {
    match value {
        "" | "true" => Some(c::Encryption::Ipsec),
        "false" => Some(c::Encryption::None),
        word => c::Encryption::from_word(word),
    }
}

/// What callers say when [`encryption_opt`] refuses a value.
pub const ENCRYPTION_OPT_HELP: &str =
    "give encrypted (IPsec), encrypted=ipsec, encrypted=wireguard or encrypted=false";

#[cfg(test)]
mod encryption_tests {
    use super::*;

    #[test]
    fn the_encrypted_option_reads_as_swarm_and_refuses_typos() {
        for (v, want) in [
            ("", Some(c::Encryption::Ipsec)),
            ("true", Some(c::Encryption::Ipsec)),
            ("ipsec", Some(c::Encryption::Ipsec)),
            ("wireguard", Some(c::Encryption::Wireguard)),
            ("false", Some(c::Encryption::None)),
            ("none", Some(c::Encryption::None)),
            ("ipsek", None),
            ("1", None),
        ] {
            assert_eq!(encryption_opt(v), want, "{v:?}");
        }
        // The old bool's true is IPsec on the wire.
        assert_eq!(c::Encryption::try_from(1), Ok(c::Encryption::Ipsec));
    }
}
