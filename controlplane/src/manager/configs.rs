//! `docker config` over the Control API: like secrets, stored in Raft and
//! immutable, but not secret: `config inspect` returns the data.

use shoal_api::cluster::v1::{ConfigRef, ConfigSummary, CreateConfigRequest};
use shoal_ca::generate_node_id;

use super::{Manager, ManagerError, services::now_unix};
use crate::{
    model::{Command, Config, ConfigBytes, Kind},
    validate,
};

fn summary(c: &Config) -> ConfigSummary {
    ConfigSummary {
        id: c.id.clone(),
        name: c.name.clone(),
        labels: c.labels.clone().into_iter().collect(),
        version: c.version,
        size: c.data.0.len() as u64,
        data: c.data.0.clone(),
        template_driver: c.template_driver.clone(),
        created_unix: c.created_unix,
    }
}

/// The config `r` asks for, checked; its id and time are the caller's.
fn config(r: CreateConfigRequest, id: String, now: u64) -> Result<Config, ManagerError> {
    validate::name("config name", &r.name)?;
    validate::labels("--label", &r.labels)?;
    validate::config_data("config data", &r.data, &r.template_driver)?;
    Ok(Config {
        id,
        version: 0,
        name: r.name,
        labels: r.labels.into_iter().collect(),
        data: ConfigBytes(r.data),
        template_driver: r.template_driver,
        created_unix: now,
    })
}

pub(super) async fn create(
    m: &Manager,
    r: CreateConfigRequest,
) -> Result<ConfigSummary, ManagerError> {
    let config = config(r, generate_node_id(), now_unix())?;
    let id = config.id.clone();
    let applied = m.propose(Command::CreateConfig(config)).await?;
    let state = m.after(&applied).await?;
    Ok(summary(super::lookup::<Config>(&state, &id)?))
}

pub(super) async fn list(m: &Manager) -> Result<Vec<ConfigSummary>, ManagerError> {
    super::list_all(m, |_, c| summary(c)).await
}

pub(super) async fn inspect(m: &Manager, r: &ConfigRef) -> Result<ConfigSummary, ManagerError> {
    super::inspect_one(m, &r.config, |_, c| summary(c)).await
}

pub(super) async fn remove(m: &Manager, r: &ConfigRef) -> Result<String, ManagerError> {
    super::remove_one::<Config>(m, &r.config, |state, c| {
        super::refuse_in_use(Kind::Config, &c.name, state.config_users(&c.id))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, data: &[u8], driver: &str) -> CreateConfigRequest {
        CreateConfigRequest {
            name: name.into(),
            labels: Default::default(),
            data: data.to_vec(),
            template_driver: driver.into(),
        }
    }

    #[test]
    fn configs_are_checked_before_they_are_proposed() {
        let ok = config(req("app.conf", b"x", ""), "id".into(), 7).map(|c| summary(&c));
        assert!(
            ok.as_ref()
                .is_ok_and(|s| s.size == 1 && s.created_unix == 7 && s.data == b"x")
        );
        let e = |r| {
            config(r, "id".into(), 0)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(e(req("-bad", b"x", "")).contains("config name"));
        assert_eq!(e(req("a", b"", "")), "config data: must not be empty");
        assert!(e(req("a", &vec![b'a'; 1000 * 1024 + 1], "")).contains("a config may hold"));
        assert!(e(req("a", b"{{.Node.Nope}}", "golang")).contains("not a known placeholder"));
        assert!(e(req("a", b"x", "mustache")).contains("--template-driver"));
        assert_eq!(e(req("a", b"{{.Node.ID}}", "golang")), "");
    }

    #[test]
    fn removal_in_use_names_every_service() {
        let service = |name: &str| crate::model::Service {
            id: format!("id-{name}"),
            version: 0,
            spec: crate::model::ServiceSpec {
                name: name.into(),
                labels: Default::default(),
                mode: crate::model::ServiceMode::Global,
                task: Default::default(),
                endpoint: Default::default(),
                networks: Vec::new(),
                constraints: Vec::new(),
                restart: Default::default(),
                update: Default::default(),
                rollback: Default::default(),
                placement_prefs: Vec::new(),
                network_aliases: Default::default(),
                max_replicas_per_node: 0,
            },
            previous_spec: None,
            update_status: None,
            endpoint: Default::default(),
        };
        let users = [service("web"), service("api")];
        let e = super::super::refuse_in_use(Kind::Config, "app", users.iter())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            e,
            "config 'app' is in use by the following services: web, api; remove it from them \
             first (shoal service update --config-rm app SERVICE)"
        );
        assert!(super::super::refuse_in_use(Kind::Secret, "db", [].iter()).is_ok());
    }
}
