//! A service's container as `service inspect` shows it: docker's
//! `Spec.TaskTemplate` (ContainerSpec and Resources, in docker's names) in
//! JSON, and docker's `--pretty` sections.

use std::collections::BTreeMap;

use serde::Serialize;
use shoal_api::{
    cluster::v1::{
        ContainerSpec, FileReference, HealthConfig, MountType, Resources, ServiceSummary,
    },
    reference,
    words::word,
};

use crate::output::{bytes_size, cpus};

pub fn empty<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// The image as `service inspect` prints it: `ref@sha256:…` once pinned.
pub fn pinned(c: &ContainerSpec) -> String {
    reference::pinned(&c.image, &c.image_digest)
}

/// `service ls`'s IMAGE column: `busybox:latest`, or `host`.
pub fn ls_image(s: &ServiceSummary) -> String {
    s.container
        .as_ref()
        .map_or_else(String::new, |c| reference::familiar(&c.image))
}

#[derive(Serialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct TaskTemplateJson<'a> {
    container_spec: ContainerJson<'a>,
    #[serde(skip_serializing_if = "empty")]
    resources: ResourcesJson,
    #[serde(skip_serializing_if = "empty")]
    placement: PlacementJson<'a>,
    /// docker's TaskTemplate.ForceUpdate, bumped by `update --force`.
    #[serde(skip_serializing_if = "empty")]
    force_update: u64,
}

#[derive(Serialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase")]
struct PlacementJson<'a> {
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    constraints: &'a [String],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    preferences: Vec<PreferenceJson<'a>>,
    /// `--replicas-max-per-node`.
    #[serde(skip_serializing_if = "empty")]
    max_replicas: u64,
}

/// docker's `{"Name": "nofile", "Soft": 1024, "Hard": 2048}`.
#[derive(Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct UlimitJson<'a> {
    name: &'a str,
    soft: i64,
    hard: i64,
}

/// `{"Spread": {"SpreadDescriptor": "node.labels.dc"}}`.
#[derive(Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct PreferenceJson<'a> {
    spread: SpreadJson<'a>,
}

#[derive(Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct SpreadJson<'a> {
    spread_descriptor: &'a str,
}

/// docker's HealthConfig: durations in nanoseconds, unset ones left out.
#[derive(Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct HealthJson<'a> {
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    test: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_period: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_interval: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retries: Option<u64>,
}

fn health_json(h: &HealthConfig) -> HealthJson<'_> {
    let nz = |v: Option<u64>| v.filter(|n| *n != 0);
    HealthJson {
        test: &h.test,
        interval: nz(h.interval_ns),
        timeout: nz(h.timeout_ns),
        start_period: nz(h.start_period_ns),
        start_interval: nz(h.start_interval_ns),
        retries: nz(h.retries),
    }
}

#[derive(Serialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase")]
struct ContainerJson<'a> {
    image: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<&'a [String]>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    args: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    env: &'a [String],
    #[serde(skip_serializing_if = "str::is_empty")]
    dir: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    user: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    hostname: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    stop_signal: &'a str,
    /// Nanoseconds, as docker's JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_grace_period: Option<u64>,
    #[serde(skip_serializing_if = "empty")]
    read_only: bool,
    #[serde(skip_serializing_if = "empty")]
    init: bool,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    capability_add: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    capability_drop: &'a [String],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    sysctls: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mounts: Vec<MountJson<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    secrets: Vec<SecretRefJson<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    configs: Vec<ConfigRefJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    healthcheck: Option<HealthJson<'a>>,
    /// docker's `IP HOST` lines (`--host`).
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    hosts: &'a [String],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ulimits: Vec<UlimitJson<'a>>,
}

/// docker's `File` of a secret or config reference: the target, owner and
/// mode (UID and GID as strings, as docker prints them).
#[derive(Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct FileJson<'a> {
    name: &'a str,
    #[serde(rename = "UID")]
    uid: String,
    #[serde(rename = "GID")]
    gid: String,
    mode: u32,
}

#[derive(Serialize, PartialEq)]
struct SecretRefJson<'a> {
    #[serde(rename = "File")]
    file: FileJson<'a>,
    #[serde(rename = "SecretID")]
    id: &'a str,
    #[serde(rename = "SecretName")]
    name: &'a str,
}

#[derive(Serialize, PartialEq)]
struct ConfigRefJson<'a> {
    #[serde(rename = "File")]
    file: FileJson<'a>,
    #[serde(rename = "ConfigID")]
    id: &'a str,
    #[serde(rename = "ConfigName")]
    name: &'a str,
}

fn file_json(r: &FileReference) -> FileJson<'_> {
    FileJson {
        name: &r.target,
        uid: r.uid.to_string(),
        gid: r.gid.to_string(),
        mode: r.mode,
    }
}

#[derive(Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct MountJson<'a> {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    source: &'a str,
    target: &'a str,
    #[serde(skip_serializing_if = "empty")]
    read_only: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume_options: Option<VolumeOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tmpfs_options: Option<TmpfsOptions>,
}

#[derive(Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct VolumeOptions {
    no_copy: bool,
}

#[derive(Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct TmpfsOptions {
    #[serde(skip_serializing_if = "empty")]
    size_bytes: u64,
    #[serde(skip_serializing_if = "empty")]
    mode: u32,
}

#[derive(Serialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase")]
struct ResourcesJson {
    #[serde(skip_serializing_if = "empty")]
    limits: LimitsJson,
    #[serde(skip_serializing_if = "empty")]
    reservations: ReservationsJson,
}

#[derive(Serialize, PartialEq, Default)]
struct LimitsJson {
    #[serde(rename = "NanoCPUs", skip_serializing_if = "empty")]
    nano_cpus: u64,
    #[serde(rename = "MemoryBytes", skip_serializing_if = "empty")]
    memory_bytes: u64,
    #[serde(rename = "Pids", skip_serializing_if = "empty")]
    pids: u64,
}

#[derive(Serialize, PartialEq, Default)]
struct ReservationsJson {
    #[serde(rename = "NanoCPUs", skip_serializing_if = "empty")]
    nano_cpus: u64,
    #[serde(rename = "MemoryBytes", skip_serializing_if = "empty")]
    memory_bytes: u64,
}

/// docker's `Spec.TaskTemplate` of a service.
pub fn task_template(s: &ServiceSummary) -> Option<TaskTemplateJson<'_>> {
    let c = s.container.as_ref()?;
    let r = s.resources.unwrap_or_default();
    Some(TaskTemplateJson {
        container_spec: ContainerJson {
            image: pinned(c),
            labels: c
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            healthcheck: c.healthcheck.as_ref().map(health_json),
            hosts: &c.hosts,
            ulimits: c
                .ulimits
                .iter()
                .map(|u| UlimitJson {
                    name: &u.name,
                    soft: u.soft,
                    hard: u.hard,
                })
                .collect(),
            command: c.entrypoint.as_ref().map(|e| e.args.as_slice()),
            args: &s.args,
            env: &s.env,
            dir: &c.workdir,
            user: &c.user,
            hostname: &c.hostname,
            stop_signal: &c.stop_signal,
            stop_grace_period: c.stop_grace_period_ns,
            read_only: c.read_only,
            init: c.init,
            capability_add: &c.cap_add,
            capability_drop: &c.cap_drop,
            sysctls: c
                .sysctls
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            mounts: c
                .mounts
                .iter()
                .map(|m| MountJson {
                    kind: word::<MountType>(m.r#type).into_owned(),
                    source: &m.source,
                    target: &m.target,
                    read_only: m.read_only,
                    volume_options: (m.r#type == MountType::Volume as i32 && m.volume_nocopy)
                        .then_some(VolumeOptions { no_copy: true }),
                    tmpfs_options: (m.r#type == MountType::Tmpfs as i32
                        && (m.tmpfs_size_bytes != 0 || m.tmpfs_mode != 0))
                        .then_some(TmpfsOptions {
                            size_bytes: m.tmpfs_size_bytes,
                            mode: m.tmpfs_mode,
                        }),
                })
                .collect(),
            secrets: c
                .secrets
                .iter()
                .map(|r| SecretRefJson {
                    file: file_json(r),
                    id: &r.id,
                    name: &r.name,
                })
                .collect(),
            configs: c
                .configs
                .iter()
                .map(|r| ConfigRefJson {
                    file: file_json(r),
                    id: &r.id,
                    name: &r.name,
                })
                .collect(),
        },
        resources: resources_json(&r),
        placement: PlacementJson {
            constraints: &s.constraints,
            preferences: s
                .placement_prefs
                .iter()
                .map(|p| PreferenceJson {
                    spread: SpreadJson {
                        spread_descriptor: p.strip_prefix("spread=").unwrap_or(p),
                    },
                })
                .collect(),
            max_replicas: s.max_replicas_per_node,
        },
        force_update: c.force_update,
    })
}

fn resources_json(r: &Resources) -> ResourcesJson {
    ResourcesJson {
        limits: LimitsJson {
            nano_cpus: r.limit_nano_cpus,
            memory_bytes: r.limit_memory_bytes,
            pids: r.limit_pids,
        },
        reservations: ReservationsJson {
            nano_cpus: r.reserve_nano_cpus,
            memory_bytes: r.reserve_memory_bytes,
        },
    }
}

/// docker's `--pretty` ContainerSpec, Mounts and Resources sections.
pub fn pretty(s: &ServiceSummary) -> String {
    let mut out = String::from("ContainerSpec:\n");
    let Some(c) = &s.container else {
        return out;
    };
    out.push_str(&format!(" Image:\t\t{}\n", pinned(c)));
    if let Some(e) = &c.entrypoint {
        out.push_str(&format!(" Command:\t{}\n", e.args.join(" ")));
    }
    if !s.args.is_empty() {
        out.push_str(&format!(" Args:\t\t{}\n", s.args.join(" ")));
    }
    if !s.env.is_empty() {
        out.push_str(&format!(" Env:\t\t{}\n", s.env.join(" ")));
    }
    for (label, v) in [
        ("Dir", &c.workdir),
        ("User", &c.user),
        ("Hostname", &c.hostname),
        ("StopSignal", &c.stop_signal),
    ] {
        if !v.is_empty() {
            out.push_str(&format!(" {label}:\t{v}\n"));
        }
    }
    if let Some(ns) = c.stop_grace_period_ns {
        let d = std::time::Duration::from_nanos(ns);
        out.push_str(&format!(" StopGracePeriod:\t{d:?}\n"));
    }
    out.push_str(&format!(" Init:\t\t{}\n", c.init));
    if c.read_only {
        out.push_str(" ReadOnly:\ttrue\n");
    }
    if !c.cap_add.is_empty() {
        out.push_str(&format!(
            " Capabilities to add:\t{}\n",
            c.cap_add.join(", ")
        ));
    }
    if !c.cap_drop.is_empty() {
        out.push_str(&format!(
            " Capabilities to drop:\t{}\n",
            c.cap_drop.join(", ")
        ));
    }
    if !c.sysctls.is_empty() {
        let sorted: BTreeMap<_, _> = c.sysctls.iter().collect();
        out.push_str(" Sysctls:\n");
        for (k, v) in sorted {
            out.push_str(&format!("  {k}={v}\n"));
        }
    }
    if !c.ulimits.is_empty() {
        // docker: each as NAME: SOFT:HARD.
        out.push_str(" Ulimits:\n");
        for u in &c.ulimits {
            out.push_str(&format!("  {}:\t{}:{}\n", u.name, u.soft, u.hard));
        }
    }
    if !c.hosts.is_empty() {
        out.push_str(" Hosts:\n");
        for h in &c.hosts {
            out.push_str(&format!("  {h}\n"));
        }
    }
    if let Some(h) = &c.healthcheck {
        out.push_str(&health_text(h));
    }
    if !c.mounts.is_empty() {
        out.push_str("Mounts:\n");
        for m in &c.mounts {
            out.push_str(&format!(
                " Target:\t{}\n  Source:\t{}\n  ReadOnly:\t{}\n  Type:\t\t{}\n",
                m.target,
                m.source,
                m.read_only,
                word::<MountType>(m.r#type)
            ));
        }
    }
    for (title, refs) in [("Secrets", &c.secrets), ("Configs", &c.configs)] {
        if !refs.is_empty() {
            out.push_str(&format!("{title}:\n"));
            for r in refs {
                out.push_str(&format!(" Target:\t{}\n  Source:\t{}\n", r.target, r.name));
            }
        }
    }
    let r = s.resources.unwrap_or_default();
    if r != Resources::default() {
        out.push_str("Resources:\n");
        if r.reserve_nano_cpus != 0 || r.reserve_memory_bytes != 0 {
            out.push_str(" Reservations:\n");
            if r.reserve_nano_cpus != 0 {
                out.push_str(&format!("  CPU:\t\t{}\n", cpus(r.reserve_nano_cpus)));
            }
            if r.reserve_memory_bytes != 0 {
                out.push_str(&format!(
                    "  Memory:\t{}\n",
                    bytes_size(r.reserve_memory_bytes)
                ));
            }
        }
        if r.limit_nano_cpus != 0 || r.limit_memory_bytes != 0 || r.limit_pids != 0 {
            out.push_str(" Limits:\n");
            if r.limit_nano_cpus != 0 {
                out.push_str(&format!("  CPU:\t\t{}\n", cpus(r.limit_nano_cpus)));
            }
            if r.limit_memory_bytes != 0 {
                out.push_str(&format!(
                    "  Memory:\t{}\n",
                    bytes_size(r.limit_memory_bytes)
                ));
            }
            if r.limit_pids != 0 {
                out.push_str(&format!("  PIDs:\t\t{}\n", r.limit_pids));
            }
        }
    }
    out
}

/// docker's pretty Healthcheck lines (unset timings shown as docker's
/// zero values).
fn health_text(h: &HealthConfig) -> String {
    let d = |v: Option<u64>| crate::parse::go_string(v.unwrap_or(0));
    let mut out = format!(
        " Healthcheck:\n  Interval = {}\n  Retries = {}\n  StartPeriod =\t{}\n  Timeout =\t{}\n",
        d(h.interval_ns),
        h.retries.unwrap_or(0),
        d(h.start_period_ns),
        d(h.timeout_ns)
    );
    if !h.test.is_empty() {
        out.push_str("  Tests:\n");
        for t in &h.test {
            out.push_str(&format!("\t Test = {t}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthcheck_labels_and_placement_as_docker() {
        let s = ServiceSummary {
            constraints: vec!["node.role==worker".into()],
            placement_prefs: vec!["spread=node.labels.dc".into()],
            container: Some(ContainerSpec {
                image: "busybox".into(),
                labels: [("tier".to_owned(), "web".to_owned())].into(),
                healthcheck: Some(HealthConfig {
                    test: vec!["CMD-SHELL".into(), "true".into()],
                    interval_ns: Some(10_000_000_000),
                    timeout_ns: Some(1_500_000_000),
                    retries: Some(3),
                    start_period_ns: Some(0),
                    start_interval_ns: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = serde_json::to_value(task_template(&s)).unwrap_or_default();
        assert_eq!(
            v["ContainerSpec"]["Healthcheck"],
            serde_json::json!({"Test": ["CMD-SHELL", "true"], "Interval": 10_000_000_000u64,
                "Timeout": 1_500_000_000u64, "Retries": 3})
        );
        assert_eq!(v["ContainerSpec"]["Labels"]["tier"], "web");
        assert_eq!(
            v["Placement"],
            serde_json::json!({"Constraints": ["node.role==worker"],
                "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.dc"}}]})
        );
        let text = pretty(&s);
        assert!(
            text.contains(
                " Healthcheck:\n  Interval = 10s\n  Retries = 3\n  StartPeriod =\t0s\n  \
                 Timeout =\t1.5s\n  Tests:\n\t Test = CMD-SHELL\n\t Test = true\n"
            ),
            "{text}"
        );
    }
}
