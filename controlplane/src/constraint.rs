//! Placement constraints as swarm writes them: `node.role==worker`,
//! `node.hostname!=n1`, `node.labels.zone==a`, `node.id==…`.

use std::fmt;

use crate::model::{Node, NodeRole};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    #[error("--constraint {0:?}: expected KEY==VALUE or KEY!=VALUE, e.g. node.role==worker")]
    NoOperator(String),
    #[error(
        "--constraint {given:?}: unknown key {key:?}; use node.id, node.hostname, node.role or \
         node.labels.<label>"
    )]
    UnknownKey { given: String, key: String },
    #[error("--constraint {0:?}: the value is empty")]
    EmptyValue(String),
    #[error("--constraint {given:?}: node.role is manager or worker, not {value:?}")]
    BadRole { given: String, value: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Id,
    Hostname,
    Role,
    Label(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub key: Key,
    pub equal: bool,
    pub value: String,
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = match &self.key {
            Key::Id => "node.id".to_owned(),
            Key::Hostname => "node.hostname".to_owned(),
            Key::Role => "node.role".to_owned(),
            Key::Label(l) => format!("node.labels.{l}"),
        };
        let op = if self.equal { "==" } else { "!=" };
        write!(f, "{key}{op}{}", self.value)
    }
}

pub fn parse(given: &str) -> Result<Constraint, ConstraintError> {
    let (key, equal, value) = if let Some((k, v)) = given.split_once("==") {
        (k, true, v)
    } else if let Some((k, v)) = given.split_once("!=") {
        (k, false, v)
    } else {
        return Err(ConstraintError::NoOperator(given.to_owned()));
    };
    let (key, value) = (key.trim(), value.trim());
    if value.is_empty() {
        return Err(ConstraintError::EmptyValue(given.to_owned()));
    }
    let key = match key {
        "node.id" => Key::Id,
        "node.hostname" => Key::Hostname,
        "node.role" => {
            if !matches!(value, "manager" | "worker") {
                return Err(ConstraintError::BadRole {
                    given: given.to_owned(),
                    value: value.to_owned(),
                });
            }
            Key::Role
        }
        k => match k.strip_prefix("node.labels.") {
            Some(label) if !label.is_empty() && !label.contains(char::is_whitespace) => {
                Key::Label(label.to_owned())
            }
            _ => {
                return Err(ConstraintError::UnknownKey {
                    given: given.to_owned(),
                    key: k.to_owned(),
                });
            }
        },
    };
    Ok(Constraint {
        key,
        equal,
        value: value.to_owned(),
    })
}

impl Constraint {
    pub fn matches(&self, node: &Node) -> bool {
        let actual = match &self.key {
            Key::Id => Some(node.id.as_str()),
            Key::Hostname => Some(node.hostname.as_str()),
            Key::Role => Some(
                if node.manager.is_some() || node.role == NodeRole::Manager {
                    "manager"
                } else {
                    "worker"
                },
            ),
            Key::Label(l) => node.labels.get(l).map(String::as_str),
        };
        // As swarm: `!=` holds for a node without the label.
        (actual == Some(self.value.as_str())) == self.equal
    }
}

/// Why a `--placement-pref` is refused (docker's only strategy is spread).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreferenceError {
    #[error("--placement-pref {0:?}: expected spread=DESCRIPTOR, e.g. spread=node.labels.zone")]
    NoStrategy(String),
    #[error(
        "--placement-pref {given:?}: unsupported placement preference {strategy} (only spread is \
         supported)"
    )]
    Strategy { given: String, strategy: String },
    #[error(
        "--placement-pref {given:?}: unknown descriptor {key:?}; use node.labels.<label>, \
         node.id, node.hostname, node.role, node.platform.os or node.platform.arch"
    )]
    UnknownKey { given: String, key: String },
}

/// What a spread preference groups nodes by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpreadKey {
    Id,
    Hostname,
    Role,
    Os,
    Arch,
    Label(String),
}

/// `spread=node.labels.zone`: tasks go evenly over the values nodes have
/// (nodes without one form one group of their own, as in swarm).
pub fn preference(given: &str) -> Result<SpreadKey, PreferenceError> {
    let Some((strategy, key)) = given.split_once('=') else {
        return Err(PreferenceError::NoStrategy(given.to_owned()));
    };
    if !strategy.trim().eq_ignore_ascii_case("spread") {
        return Err(PreferenceError::Strategy {
            given: given.to_owned(),
            strategy: strategy.trim().to_owned(),
        });
    }
    Ok(match key.trim() {
        "node.id" => SpreadKey::Id,
        "node.hostname" => SpreadKey::Hostname,
        "node.role" => SpreadKey::Role,
        "node.platform.os" => SpreadKey::Os,
        "node.platform.arch" => SpreadKey::Arch,
        k => match k.strip_prefix("node.labels.") {
            Some(label) if !label.is_empty() && !label.contains(char::is_whitespace) => {
                SpreadKey::Label(label.to_owned())
            }
            _ => {
                return Err(PreferenceError::UnknownKey {
                    given: given.to_owned(),
                    key: k.to_owned(),
                });
            }
        },
    })
}

impl SpreadKey {
    /// The node's value for this key; `None` (a group of its own) when it
    /// has none.
    pub fn value<'n>(&self, node: &'n Node) -> Option<&'n str> {
        let v = match self {
            SpreadKey::Id => node.id.as_str(),
            SpreadKey::Hostname => node.hostname.as_str(),
            SpreadKey::Role => {
                if node.wants_manager() {
                    "manager"
                } else {
                    "worker"
                }
            }
            SpreadKey::Os => node.platform.os.as_str(),
            SpreadKey::Arch => node.platform.architecture.as_str(),
            SpreadKey::Label(l) => return node.labels.get(l).map(String::as_str),
        };
        (!v.is_empty()).then_some(v)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    #[test]
    fn placement_preferences_in_docker_forms() {
        assert_eq!(
            preference("spread=node.labels.zone"),
            Ok(SpreadKey::Label("zone".into()))
        );
        assert_eq!(preference("spread=node.hostname"), Ok(SpreadKey::Hostname));
        for (bad, want) in [
            ("node.labels.zone", "expected spread=DESCRIPTOR"),
            ("binpack=node.labels.zone", "only spread is supported"),
            ("spread=node.labels.", "unknown descriptor"),
            ("spread=zone", "unknown descriptor"),
        ] {
            let e = preference(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.contains(want) && e.contains("--placement-pref"),
                "{bad}: {e}"
            );
        }
    }

    use super::*;

    #[test]
    fn swarm_forms() {
        let c = parse("node.labels.zone == a").ok();
        assert_eq!(
            c,
            Some(Constraint {
                key: Key::Label("zone".into()),
                equal: true,
                value: "a".into()
            })
        );
        for (bad, want) in [
            ("node.role=worker", "expected KEY==VALUE"),
            ("node.rol==worker", "unknown key \"node.rol\""),
            ("node.role==boss", "manager or worker"),
            ("node.hostname==", "empty"),
            ("node.labels.==x", "unknown key"),
        ] {
            let e = parse(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(want) && e.contains("--constraint"), "{bad}: {e}");
        }
    }

    proptest! {
        #[test]
        fn printed_constraints_parse_back(
            key in prop_oneof![
                Just(Key::Id), Just(Key::Hostname),
                "[a-z][a-z0-9._-]{0,12}".prop_map(Key::Label),
            ],
            equal in any::<bool>(),
            value in "[a-zA-Z0-9][a-zA-Z0-9._-]{0,15}",
        ) {
            let c = Constraint { key, equal, value };
            prop_assert_eq!(parse(&c.to_string()), Ok(c));
        }

        #[test]
        fn parser_never_panics(s in any::<String>()) {
            let _ = parse(&s);
        }
    }
}
