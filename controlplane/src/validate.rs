//! Checks of what operators send the API: object names, labels, subnets and
//! secret payloads. The CLI checks flags first for a quick answer; these run
//! on the manager, before a command is proposed, because any client (or an
//! older CLI) can reach the API. A refused value never reaches the Raft log.

use std::{fmt, net::Ipv4Addr};

mod container;
mod files;
mod host;
mod policy;
pub use container::{ContainerError, ContainerProblem, MIN_MEMORY_BYTES, container};
pub use files::{FileKind, file_refs};
pub use host::{HostNetworkError, host_network};
pub use policy::{PolicyError, TestProblem, healthcheck, update_config};

pub use shoal_common::net::Ipv4Net;

/// docker's limit for secret names and service names.
pub const MAX_NAME_LEN: usize = 64;
/// A label key longer than this is a mistake, not a key.
pub const MAX_LABEL_KEY_LEN: usize = 256;
pub const MAX_LABEL_VALUE_LEN: usize = 4096;
/// swarmkit's limit for a secret's payload (500 KiB).
pub const MAX_SECRET_LEN: usize = 500 * 1024;
/// swarmkit's limit for a config's payload (1000 KiB).
pub const MAX_CONFIG_LEN: usize = 1000 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("{field}: must not be empty")]
    Empty { field: &'static str },
    #[error("{field} {value:?}: longer than {max} bytes")]
    TooLong {
        field: &'static str,
        value: String,
        max: usize,
    },
    #[error(
        "{field} {value:?}: use letters, digits, '_', '.' and '-', starting and ending with a \
         letter or digit"
    )]
    BadName { field: &'static str, value: String },
    #[error("{field} {value:?}: label keys cannot contain whitespace, '=' or control characters")]
    BadLabelKey { field: &'static str, value: String },
    #[error("{field}: the value of label {key:?} contains control characters")]
    BadLabelValue { field: &'static str, key: String },
    #[error("{field} {value:?}: {reason}")]
    BadSubnet {
        field: &'static str,
        value: String,
        reason: SubnetProblem,
    },
    #[error(
        "{field}: {len} bytes is more than the 500 KiB ({MAX_SECRET_LEN} bytes) a secret may hold, as in docker; keep large files in a config or a volume"
    )]
    SecretTooLarge { field: &'static str, len: usize },
    #[error(
        "{field}: {len} bytes is more than the 1000 KiB ({MAX_CONFIG_LEN} bytes) a config may hold, as in docker; keep large files in a volume or the image"
    )]
    ConfigTooLarge { field: &'static str, len: usize },
    #[error("{field}: {source}")]
    Template {
        field: &'static str,
        #[source]
        source: crate::template::TemplateError,
    },
    #[error("{field}: a template must be text (UTF-8)")]
    TemplateNotText { field: &'static str },
    #[error(
        "--template-driver {value:?}: unknown driver; the only one is golang (swarm's \
         placeholders)"
    )]
    TemplateDriver { value: String },
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{flag} {shown}: {problem}")]
    File {
        flag: &'static str,
        shown: String,
        problem: files::FileProblem,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubnetProblem {
    NoPrefix,
    NotIpv4,
    Prefix,
    HostBits(Ipv4Net),
}

impl fmt::Display for SubnetProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoPrefix => {
                f.write_str("missing the prefix length; give a CIDR such as 10.0.9.0/24")
            }
            Self::NotIpv4 => f.write_str("not an IPv4 network; give a CIDR such as 10.0.9.0/24"),
            Self::Prefix => {
                f.write_str("prefix length must be 8-29 (a /30 leaves too few addresses for tasks)")
            }
            Self::HostBits(n) => write!(f, "host bits are set; did you mean {n}?"),
        }
    }
}

fn nonempty(field: &'static str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::Empty { field });
    }
    if value.len() > max {
        return Err(ValidationError::TooLong {
            field,
            value: value.chars().take(32).collect::<String>() + "…",
            max,
        });
    }
    Ok(())
}

/// Names of secrets, services and networks, in docker's grammar:
/// `[a-zA-Z0-9]([a-zA-Z0-9_.-]*[a-zA-Z0-9])?`, at most 64 bytes.
pub fn name(field: &'static str, value: &str) -> Result<(), ValidationError> {
    nonempty(field, value, MAX_NAME_LEN)?;
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if !edge(value.chars().next()) || !edge(value.chars().last()) || !value.chars().all(inner) {
        return Err(ValidationError::BadName {
            field,
            value: value.to_owned(),
        });
    }
    Ok(())
}

pub fn label_key(field: &'static str, key: &str) -> Result<(), ValidationError> {
    nonempty(field, key, MAX_LABEL_KEY_LEN)?;
    if key
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '=')
    {
        return Err(ValidationError::BadLabelKey {
            field,
            value: key.to_owned(),
        });
    }
    Ok(())
}

/// Every key and value of a label set.
pub fn labels<'a>(
    field: &'static str,
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), ValidationError> {
    for (k, v) in labels {
        label_key(field, k)?;
        if v.len() > MAX_LABEL_VALUE_LEN {
            return Err(ValidationError::TooLong {
                field,
                value: format!("{k}=…"),
                max: MAX_LABEL_VALUE_LEN,
            });
        }
        if v.chars().any(char::is_control) {
            return Err(ValidationError::BadLabelValue {
                field,
                key: k.clone(),
            });
        }
    }
    Ok(())
}

/// An overlay subnet: IPv4 CIDR, /8 to /29, host bits clear.
pub fn subnet(field: &'static str, value: &str) -> Result<Ipv4Net, ValidationError> {
    let bad = |reason| ValidationError::BadSubnet {
        field,
        value: value.to_owned(),
        reason,
    };
    let (addr, prefix) = value
        .split_once('/')
        .ok_or_else(|| bad(SubnetProblem::NoPrefix))?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad(SubnetProblem::NotIpv4))?;
    // Digits only: `u8::from_str` would take "+24".
    if prefix.is_empty() || prefix.len() > 2 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(SubnetProblem::Prefix));
    }
    let prefix: u8 = prefix.parse().map_err(|_| bad(SubnetProblem::Prefix))?;
    if !(8..=29).contains(&prefix) {
        return Err(bad(SubnetProblem::Prefix));
    }
    let net = Ipv4Net::truncate(addr, prefix).map_err(|_| bad(SubnetProblem::Prefix))?;
    if net.network() != addr {
        return Err(bad(SubnetProblem::HostBits(net)));
    }
    Ok(net)
}

/// A config's payload, and with a template driver, its placeholders.
pub fn config_data(
    field: &'static str,
    data: &[u8],
    template_driver: &str,
) -> Result<(), ValidationError> {
    if data.is_empty() {
        return Err(ValidationError::Empty { field });
    }
    if data.len() > MAX_CONFIG_LEN {
        return Err(ValidationError::ConfigTooLarge {
            field,
            len: data.len(),
        });
    }
    match template_driver {
        "" => Ok(()),
        crate::model::TEMPLATE_DRIVER_GOLANG => {
            let text = std::str::from_utf8(data)
                .map_err(|_| ValidationError::TemplateNotText { field })?;
            template(field, text)
        }
        other => Err(ValidationError::TemplateDriver {
            value: other.to_owned(),
        }),
    }
}

/// A value that may hold swarm's placeholders.
pub fn template(field: &'static str, text: &str) -> Result<(), ValidationError> {
    if crate::template::is_template(text) {
        crate::template::parse(text)
            .map_err(|source| ValidationError::Template { field, source })?;
    }
    Ok(())
}

pub fn secret_data(field: &'static str, data: &[u8]) -> Result<(), ValidationError> {
    if data.is_empty() {
        return Err(ValidationError::Empty { field });
    }
    if data.len() > MAX_SECRET_LEN {
        return Err(ValidationError::SecretTooLarge {
            field,
            len: data.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn names_follow_docker() {
        for ok in ["a", "web", "db-1", "my_secret.v2", "A9"] {
            assert_eq!(name("name", ok), Ok(()), "{ok}");
        }
        for bad in ["-a", "a-", ".a", "a b", "a/b", "é", "a\n"] {
            assert!(
                matches!(name("name", bad), Err(ValidationError::BadName { .. })),
                "{bad}"
            );
        }
        assert_eq!(
            name("name", ""),
            Err(ValidationError::Empty { field: "name" })
        );
        let long = "a".repeat(65);
        assert!(matches!(
            name("name", &long),
            Err(ValidationError::TooLong { max: 64, .. })
        ));
    }

    #[test]
    fn subnets_say_what_is_wrong() {
        let msg = |v| {
            subnet("--subnet", v)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let expected =
            Ipv4Net::new(Ipv4Addr::new(10, 0, 9, 0), 24).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(subnet("--subnet", "10.0.9.0/24"), Ok(expected));
        assert!(msg("10.0.9.1/24").ends_with("did you mean 10.0.9.0/24?"));
        assert!(msg("10.0.9.0").contains("missing the prefix"));
        assert!(msg("fd00::/64").contains("not an IPv4"));
        assert!(msg("10.0.0.0/30").contains("8-29"));
        assert!(msg("10.0.0.0/+24").contains("8-29"));
        assert!(msg("10.0.0.0/24").is_empty());
    }

    #[test]
    fn labels_and_secrets() {
        let mut l = BTreeMap::new();
        l.insert("zone".to_owned(), "a b=c".to_owned());
        assert_eq!(labels("--label-add", &l), Ok(()));
        l.insert("bad key".to_owned(), String::new());
        assert!(matches!(
            labels("--label-add", &l),
            Err(ValidationError::BadLabelKey { .. })
        ));
        assert!(secret_data("data", b"x").is_ok());
        assert!(secret_data("data", b"").is_err());
        assert!(secret_data("data", &vec![0; MAX_SECRET_LEN + 1]).is_err());
        assert!(secret_data("data", &vec![0; MAX_SECRET_LEN]).is_ok());
    }

    #[test]
    fn configs_and_their_templates() {
        assert_eq!(config_data("data", b"x", ""), Ok(()));
        assert_eq!(
            config_data("data", b"", ""),
            Err(ValidationError::Empty { field: "data" })
        );
        assert!(config_data("data", &vec![b'a'; MAX_CONFIG_LEN], "").is_ok());
        let big = config_data("data", &vec![b'a'; MAX_CONFIG_LEN + 1], "")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            big.contains("1000 KiB (1024000 bytes) a config may hold"),
            "{big}"
        );
        assert_eq!(config_data("data", b"id={{.Node.ID}}", "golang"), Ok(()));
        // Without a driver, braces are only text.
        assert_eq!(config_data("data", b"{{.Nope}}", ""), Ok(()));
        let bad = config_data("data", b"{{.Nope}}", "golang")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            bad.starts_with("data: {{.Nope}} is not a known placeholder"),
            "{bad}"
        );
        assert!(matches!(
            config_data("data", &[0xff, 0xfe], "golang"),
            Err(ValidationError::TemplateNotText { .. })
        ));
        assert!(matches!(
            config_data("data", b"x", "jinja"),
            Err(ValidationError::TemplateDriver { .. })
        ));
    }

    proptest! {
        #[test]
        fn every_name_of_the_grammar_is_accepted(
            v in "[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,62}[a-zA-Z0-9])?"
        ) {
            prop_assert_eq!(name("name", &v), Ok(()));
        }

        /// Any string: accepted exactly when it matches the grammar, and
        /// never a panic.
        #[test]
        fn names_accept_exactly_the_grammar(v in any::<String>()) {
            let inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
            let expected = !v.is_empty()
                && v.len() <= MAX_NAME_LEN
                && v.chars().all(inner)
                && !v.starts_with(['_', '.', '-'])
                && !v.ends_with(['_', '.', '-']);
            prop_assert_eq!(name("name", &v).is_ok(), expected);
        }

        #[test]
        fn label_keys_never_hold_separators(k in any::<String>()) {
            if label_key("--label-add", &k).is_ok() {
                prop_assert!(!k.is_empty() && !k.contains('=') && !k.contains(char::is_whitespace));
            }
        }

        /// A network printed reads back as itself; any address with host
        /// bits is refused with the network it meant.
        #[test]
        fn subnets_round_trip(addr in any::<u32>(), prefix in 8u8..=29) {
            let net = Ipv4Addr::from(addr & Ipv4Net::mask(prefix));
            let text = format!("{net}/{prefix}");
            prop_assert_eq!(subnet("--subnet", &text), Ok(Ipv4Net::truncate(net, prefix)?));
            let given = format!("{}/{prefix}", Ipv4Addr::from(addr));
            match subnet("--subnet", &given) {
                Ok(n) => prop_assert_eq!(n.network(), Ipv4Addr::from(addr)),
                Err(ValidationError::BadSubnet { reason: SubnetProblem::HostBits(n), .. }) => {
                    prop_assert_eq!(n, Ipv4Net::truncate(net, prefix)?);
                }
                Err(e) => prop_assert!(false, "{e}"),
            }
        }

        #[test]
        fn subnet_parser_never_panics(v in any::<String>()) {
            let _ = subnet("--subnet", &v);
        }
    }
}
