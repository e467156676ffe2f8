//! `shoal config …`: docker's config verbs. Configs are not secret: unlike
//! a secret's, a config's data comes back in `config inspect`.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use clap::Subcommand;
use serde::Serialize;
use shoal_api::cluster::v1::{ConfigRef, ConfigSummary, CreateConfigRequest, ListConfigsRequest};

use crate::{
    client::{self, finish},
    output::{Format, ListFlags, stored_objects},
    parse::{FlagError, parse_label},
    secret::read_content,
};

#[derive(Subcommand)]
pub enum ConfigCmd {
    /// Create a config from a file or STDIN as content.
    Create {
        /// Config labels (key=value).
        #[arg(long, short)]
        label: Vec<String>,
        /// Expand swarm's placeholders ({{.Node.ID}}, {{.Service.Name}}, …)
        /// in the data for each task: golang (the only driver).
        #[arg(long, value_name = "DRIVER")]
        template_driver: Option<String>,
        name: String,
        /// File with the config's content, or - for standard input.
        file: String,
    },
    /// List configs.
    #[command(alias = "list")]
    Ls(ListFlags),
    /// Display detailed information on one or more configs, data included.
    Inspect {
        #[arg(required = true)]
        configs: Vec<String>,
        /// Print the information in a human friendly format, the data as text.
        #[arg(long)]
        pretty: bool,
        /// JSON, as docker inspect prints by default.
        #[arg(long, short, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
    /// Remove one or more configs.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        configs: Vec<String>,
    },
}

#[derive(Serialize)]
struct ConfigJson<'a> {
    id: &'a str,
    name: &'a str,
    labels: BTreeMap<&'a str, &'a str>,
    version: u64,
    size: u64,
    created_unix: u64,
    #[serde(skip_serializing_if = "str::is_empty")]
    template_driver: &'a str,
    /// Base64, as docker's `Spec.Data`: a config may hold any bytes.
    data: String,
}

fn json(c: &ConfigSummary) -> ConfigJson<'_> {
    ConfigJson {
        id: &c.id,
        name: &c.name,
        labels: c
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        version: c.version,
        size: c.size,
        created_unix: c.created_unix,
        template_driver: &c.template_driver,
        data: base64::engine::general_purpose::STANDARD.encode(&c.data),
    }
}

/// `2026-12-02 18:42:16 +0000 UTC`.
fn utc(unix: u64) -> String {
    let (year, month, day, h, m, s) = crate::output::civil(unix);
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02} +0000 UTC")
}

/// docker's `config inspect --pretty`: the data as text (a config that is
/// not UTF-8 shows with replacement characters).
fn pretty(c: &ConfigSummary) -> String {
    let mut out = format!("ID:              {}\nName:            {}\n", c.id, c.name);
    if !c.labels.is_empty() {
        out.push_str("Labels:\n");
        let sorted: BTreeMap<_, _> = c.labels.iter().collect();
        for (k, v) in sorted {
            out.push_str(&format!(" - {k}={v}\n"));
        }
    }
    out.push_str(&format!("Created at:      {}\n", utc(c.created_unix)));
    if !c.template_driver.is_empty() {
        out.push_str(&format!("Template driver: {}\n", c.template_driver));
    }
    out.push_str("Data:\n");
    out.push_str(&String::from_utf8_lossy(&c.data));
    if !c.data.ends_with(b"\n") {
        out.push('\n');
    }
    out
}

pub async fn run(host: &str, cmd: ConfigCmd) -> anyhow::Result<()> {
    match cmd {
        ConfigCmd::Create {
            label,
            template_driver,
            name,
            file,
        } => {
            let mut labels = HashMap::new();
            for l in &label {
                let (k, v) = parse_label(l).map_err(|e| FlagError::new("--label", l, e))?;
                labels.insert(k, v);
            }
            let data = read_content("config", &file)?;
            let mut d = client::connect(host).await?;
            let c = client::call(
                host,
                d.control.create_config(CreateConfigRequest {
                    name,
                    labels,
                    data,
                    template_driver: template_driver.unwrap_or_default(),
                }),
            )
            .await?;
            println!("{}", c.id);
            Ok(())
        }
        ConfigCmd::Ls(flags) => {
            let mut d = client::connect(host).await?;
            let all = client::call(host, d.control.list_configs(ListConfigsRequest {}))
                .await?
                .configs;
            stored_objects(
                all,
                flags,
                |o| (&o.id, &o.name, o.size),
                |o| serde_json::json!(json(o)),
            )
        }
        ConfigCmd::Inspect {
            configs,
            pretty: as_text,
            format,
        } => {
            let d = client::connect(host).await?;
            let inspect = |mut c: client::Control, config| async move {
                c.inspect_config(ConfigRef { config }).await
            };
            let (found, failed) = client::each_named(&d, configs, inspect).await;
            if as_text || format == Format::Table {
                let texts: Vec<String> = found.iter().map(|(_, c)| pretty(c)).collect();
                print!("{}", texts.join("\n"));
            } else {
                let v: Vec<_> = found.iter().map(|(_, c)| json(c)).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            finish(failed)
        }
        ConfigCmd::Rm { configs } => {
            let d = client::connect(host).await?;
            let remove = |mut c: client::Control, config| async move {
                c.remove_config(ConfigRef { config }).await
            };
            client::remove_named(&d, configs, remove).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_as_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 +0000 UTC");
        assert_eq!(utc(1_796_150_536), "2026-12-01 18:42:16 +0000 UTC");
    }

    #[test]
    fn inspect_shows_the_data() {
        let c = ConfigSummary {
            id: "cid".into(),
            name: "app.conf".into(),
            labels: [("tier".to_owned(), "web".to_owned())]
                .into_iter()
                .collect(),
            version: 3,
            size: 9,
            data: b"port=8080".to_vec(),
            template_driver: "golang".into(),
            created_unix: 0,
        };
        let text = pretty(&c);
        assert_eq!(
            text,
            "ID:              cid\nName:            app.conf\nLabels:\n - tier=web\nCreated at:      \
             1970-01-01 00:00:00 +0000 UTC\nTemplate driver: golang\nData:\nport=8080\n"
        );
        let v = serde_json::to_value(json(&c)).unwrap_or_default();
        assert_eq!(v["data"], "cG9ydD04MDgw");
        assert_eq!(v["labels"]["tier"], "web");
        assert_eq!(v["template_driver"], "golang");
        assert_eq!(v["size"], 9);
    }
}
