//! `--publish` as docker takes it: the short form
//! `[PUBLISHED:]TARGET[/tcp|/udp]` (`-p 8080:80`, `-p 53:53/udp`, `-p 80`
//! for a published port the swarm picks) and the long form
//! `published=8080,target=80,protocol=udp,mode=host`. `--publish-rm` takes
//! the same, where a bare number is the published port.

use std::fmt;

use shoal_api::{
    cluster::v1::{PortConfig, Protocol, PublishMode},
    words::Word,
};

/// The accepted forms, appended to every message.
const FORMS: &str = "expected [PUBLISHED:]TARGET[/tcp|/udp], e.g. 8080:80, or \
                     published=P,target=T[,protocol=tcp|udp][,mode=ingress|host]";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("is empty; {FORMS}")]
    Empty,
    #[error("{what} port {value:?} is not a number 1-65535; {FORMS}")]
    Number { what: &'static str, value: String },
    #[error("protocol {0:?} is not supported: use tcp or udp")]
    Protocol(String),
    #[error("mode {0:?} is not supported: use ingress or host")]
    Mode(String),
    #[error("unknown field {0:?}; {FORMS}")]
    Field(String),
    #[error("{0} is given twice")]
    Twice(&'static str),
    #[error("no target port; {FORMS}")]
    NoTarget,
    #[error("no port given; give the published port (8080, 8080/udp) or published=P")]
    NoPort,
    #[error("port ranges are not supported: publish each port with its own --publish")]
    Range,
    #[error("a host IP is not supported: published ports answer on every address of the nodes")]
    HostIp,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Proto {
    #[default]
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Ingress,
    Host,
}

/// One published port as given: `target` 0 only in a `--publish-rm`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortSpec {
    pub published: Option<u16>,
    pub target: u16,
    pub protocol: Proto,
    pub mode: Mode,
}

impl Proto {
    fn api(self) -> Protocol {
        match self {
            Proto::Tcp => Protocol::Tcp,
            Proto::Udp => Protocol::Udp,
        }
    }

    fn as_str(self) -> &'static str {
        self.api().word()
    }
}

impl Mode {
    fn api(self) -> PublishMode {
        match self {
            Mode::Ingress => PublishMode::Ingress,
            Mode::Host => PublishMode::Host,
        }
    }

    fn as_str(self) -> &'static str {
        self.api().word()
    }
}

/// The long form, every field written out: it parses back to the same.
impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = self.published {
            write!(f, "published={p},")?;
        }
        write!(
            f,
            "target={},protocol={},mode={}",
            self.target,
            self.protocol.as_str(),
            self.mode.as_str()
        )
    }
}

impl PortSpec {
    /// The short form, for ingress-mode ports (it cannot say host).
    #[cfg(test)]
    pub fn short(&self) -> String {
        let proto = self.protocol.as_str();
        match self.published {
            Some(p) => format!("{p}:{}/{proto}", self.target),
            None => format!("{}/{proto}", self.target),
        }
    }

    pub fn to_api(self) -> PortConfig {
        PortConfig {
            protocol: self.protocol.api().into(),
            target_port: u32::from(self.target),
            published_port: u32::from(self.published.unwrap_or_default()),
            publish_mode: self.mode.api().into(),
        }
    }
}

fn number(what: &'static str, s: &str) -> Result<u16, PortError> {
    if s.contains('-') && s.split('-').all(|p| p.parse::<u16>().is_ok()) {
        return Err(PortError::Range);
    }
    // Digits only: `+80` or ` 80` are typos, not ports.
    match s.parse::<u16>() {
        Ok(n) if n != 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(PortError::Number {
            what,
            value: s.to_owned(),
        }),
    }
}

fn protocol(s: &str) -> Result<Proto, PortError> {
    match Protocol::from_word(s) {
        Some(Protocol::Tcp) => Ok(Proto::Tcp),
        Some(Protocol::Udp) => Ok(Proto::Udp),
        _ => Err(PortError::Protocol(s.to_owned())),
    }
}

fn long(s: &str, rm: bool) -> Result<PortSpec, PortError> {
    let (mut published, mut target, mut proto, mut mode) = (None, None, None, None);
    for field in s.split(',') {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| PortError::Field(field.to_owned()))?;
        let twice = |set: bool, name| {
            if set {
                Err(PortError::Twice(name))
            } else {
                Ok(())
            }
        };
        match k {
            "published" => {
                twice(published.is_some(), "published")?;
                published = Some(number("published", v)?);
            }
            "target" => {
                twice(target.is_some(), "target")?;
                target = Some(number("target", v)?);
            }
            "protocol" => {
                twice(proto.is_some(), "protocol")?;
                proto = Some(protocol(v)?);
            }
            "mode" => {
                twice(mode.is_some(), "mode")?;
                mode = Some(match PublishMode::from_word(v) {
                    Some(PublishMode::Ingress) => Mode::Ingress,
                    Some(PublishMode::Host) => Mode::Host,
                    _ => return Err(PortError::Mode(v.to_owned())),
                });
            }
            other => return Err(PortError::Field(other.to_owned())),
        }
    }
    let target = match (target, rm) {
        (Some(t), _) => t,
        (None, true) if published.is_some() => 0,
        (None, true) => return Err(PortError::NoPort),
        (None, false) => return Err(PortError::NoTarget),
    };
    Ok(PortSpec {
        published,
        target,
        protocol: proto.unwrap_or_default(),
        mode: mode.unwrap_or_default(),
    })
}

fn short(s: &str, rm: bool) -> Result<PortSpec, PortError> {
    let (ports, proto) = match s.rsplit_once('/') {
        Some((ports, p)) => (ports, protocol(p)?),
        None => (s, Proto::Tcp),
    };
    let parts: Vec<&str> = ports.split(':').collect();
    let (published, target) = match parts.as_slice() {
        // `--publish-rm 8080`: the published port; `--publish 80`: the target.
        [one] if rm => (Some(number("published", one)?), 0),
        [one] => (None, number("target", one)?),
        ["", t] => (None, number("target", t)?),
        [p, t] => (Some(number("published", p)?), number("target", t)?),
        _ => return Err(PortError::HostIp),
    };
    Ok(PortSpec {
        published,
        target,
        protocol: proto,
        mode: Mode::Ingress,
    })
}

fn parse(s: &str, rm: bool) -> Result<PortSpec, PortError> {
    if s.is_empty() {
        return Err(PortError::Empty);
    }
    if s.contains('=') {
        long(s, rm)
    } else {
        short(s, rm)
    }
}

/// A `--publish` / `--publish-add` value.
pub fn parse_publish(s: &str) -> Result<PortSpec, PortError> {
    parse(s, false)
}

/// A `--publish-rm` value: `8080`, `8080/udp`, `8080:80` or the long form.
pub fn parse_publish_rm(s: &str) -> Result<PortSpec, PortError> {
    parse(s, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(published: Option<u16>, target: u16, protocol: Proto, mode: Mode) -> PortSpec {
        PortSpec {
            published,
            target,
            protocol,
            mode,
        }
    }

    #[test]
    fn docker_forms() {
        use Mode::*;
        use Proto::*;
        assert_eq!(
            parse_publish("8080:80"),
            Ok(spec(Some(8080), 80, Tcp, Ingress))
        );
        assert_eq!(
            parse_publish("53:53/udp"),
            Ok(spec(Some(53), 53, Udp, Ingress))
        );
        assert_eq!(parse_publish("80"), Ok(spec(None, 80, Tcp, Ingress)));
        assert_eq!(parse_publish(":80/tcp"), Ok(spec(None, 80, Tcp, Ingress)));
        assert_eq!(
            parse_publish("published=8080,target=80,protocol=udp,mode=host"),
            Ok(spec(Some(8080), 80, Udp, Host))
        );
        assert_eq!(
            parse_publish("target=80,mode=ingress"),
            Ok(spec(None, 80, Tcp, Ingress))
        );
        assert_eq!(
            parse_publish_rm("8080"),
            Ok(spec(Some(8080), 0, Tcp, Ingress))
        );
        assert_eq!(
            parse_publish_rm("8080/udp"),
            Ok(spec(Some(8080), 0, Udp, Ingress))
        );
        assert_eq!(
            parse_publish_rm("published=8080"),
            Ok(spec(Some(8080), 0, Tcp, Ingress))
        );
        assert_eq!(
            parse_publish_rm("target=80"),
            Ok(spec(None, 80, Tcp, Ingress))
        );
    }

    #[test]
    fn mistakes_name_the_fix() {
        let e = |s: &str| {
            parse_publish(s)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(e("").contains("expected [PUBLISHED:]TARGET[/tcp|/udp]"));
        assert_eq!(
            e("8080:80/sctp"),
            "protocol \"sctp\" is not supported: use tcp or udp"
        );
        assert!(e("8080:0").starts_with("target port \"0\" is not a number 1-65535"));
        assert!(e("70000:80").starts_with("published port \"70000\""));
        assert!(e("8080-8081:80-81").starts_with("port ranges are not supported"));
        assert!(e("0.0.0.0:8080:80").starts_with("a host IP is not supported"));
        assert!(e("published=8080").starts_with("no target port"));
        assert!(e("published=8080,target=80,mode=bridge").contains("use ingress or host"));
        assert!(e("published=8080,tgt=80").starts_with("unknown field \"tgt\""));
        assert_eq!(e("target=80,target=81"), "target is given twice");
        assert!(parse_publish_rm("protocol=udp").is_err());
    }

    fn arb_spec() -> impl Strategy<Value = PortSpec> {
        (
            prop::option::of(1u16..),
            1u16..,
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(published, target, udp, host)| PortSpec {
                published,
                target,
                protocol: if udp { Proto::Udp } else { Proto::Tcp },
                mode: if host { Mode::Host } else { Mode::Ingress },
            })
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _outcome = parse_publish(&s);
            let _outcome = parse_publish_rm(&s);
        }

        #[test]
        fn never_panics_on_near_misses(s in "[0-9:/=,a-z-]{0,30}") {
            let _outcome = parse_publish(&s);
            let _outcome = parse_publish_rm(&s);
        }

        #[test]
        fn long_form_round_trips(p in arb_spec()) {
            prop_assert_eq!(parse_publish(&p.to_string()), Ok(p));
        }

        #[test]
        fn short_form_round_trips(mut p in arb_spec()) {
            p.mode = Mode::Ingress;
            prop_assert_eq!(parse_publish(&p.short()), Ok(p));
            if let Some(published) = p.published {
                let rm = parse_publish_rm(&format!("{published}/{}", p.protocol.as_str()));
                prop_assert_eq!(rm, Ok(PortSpec { target: 0, ..p }));
            }
        }
    }
}
