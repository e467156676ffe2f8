//! `--network`/`--network-add`: a network name, or docker's long syntax
//! `name=N,alias=A[,alias=B]` (docker/cli's `NetworkOpt`).

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    #[error("invalid field {0:?}: expected name=NETWORK[,alias=ALIAS...]")]
    Field(String),
    #[error("{0} is not supported by Shoal's overlay networks; give name= and alias= only")]
    Unsupported(String),
    #[error("invalid field key {0:?}: the keys are name and alias")]
    Key(String),
    #[error("the network name is missing; give name=NETWORK")]
    NoName,
}

/// A network to attach to, with the service's aliases on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub network: String,
    pub aliases: Vec<String>,
}

pub fn parse_network(value: &str) -> Result<Attachment, AttachError> {
    if !value.contains('=') {
        return Ok(Attachment {
            network: value.to_owned(),
            aliases: Vec::new(),
        });
    }
    let mut out = Attachment {
        network: String::new(),
        aliases: Vec::new(),
    };
    for field in value.split(',') {
        let (key, v) = field
            .split_once('=')
            .ok_or_else(|| AttachError::Field(field.to_owned()))?;
        match key.trim().to_ascii_lowercase().as_str() {
            "name" => out.network = v.to_owned(),
            "alias" => out.aliases.push(v.to_owned()),
            k @ ("driver-opt" | "ip" | "ip6" | "mac-address" | "link-local-ip" | "gw-priority") => {
                return Err(AttachError::Unsupported(k.to_owned()));
            }
            _ => return Err(AttachError::Key(key.to_owned())),
        }
    }
    if out.network.is_empty() {
        return Err(AttachError::NoName);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn short_and_long_forms() {
        assert_eq!(
            parse_network("appnet"),
            Ok(Attachment {
                network: "appnet".into(),
                aliases: vec![]
            })
        );
        assert_eq!(
            parse_network("name=appnet,alias=web,alias=www"),
            Ok(Attachment {
                network: "appnet".into(),
                aliases: vec!["web".into(), "www".into()]
            })
        );
        assert_eq!(parse_network("alias=web"), Err(AttachError::NoName));
        assert_eq!(
            parse_network("name=a,aliases=web"),
            Err(AttachError::Key("aliases".into()))
        );
        assert_eq!(
            parse_network("name=a,driver-opt=x=y"),
            Err(AttachError::Unsupported("driver-opt".into()))
        );
        assert_eq!(
            parse_network("name=a,web"),
            Err(AttachError::Field("web".into()))
        );
    }

    proptest! {
        #[test]
        fn never_panics_and_names_a_network(value in ".{0,60}") {
            if let Ok(a) = parse_network(&value) {
                prop_assert!(!a.network.is_empty() || value.is_empty());
            }
        }

        #[test]
        fn long_form_round_trips(net in "[a-z][a-z0-9_-]{0,10}", aliases in proptest::collection::vec("[a-z][a-z0-9-]{0,8}", 0..4)) {
            let mut text = format!("name={net}");
            for a in &aliases {
                text.push_str(&format!(",alias={a}"));
            }
            prop_assert_eq!(parse_network(&text), Ok(Attachment { network: net, aliases }));
        }
    }
}
