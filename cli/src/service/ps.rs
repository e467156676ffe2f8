//! `service ps`: docker's task history. Each slot's current task, then its
//! earlier tasks newest first as ` \_ web.1` lines; `--filter`, `-q`,
//! `--no-trunc` and `--format json` (with health and exit code).

use std::borrow::Cow;

use serde::Serialize;
use shoal_api::{
    cluster::v1::{HealthStatus, TaskState, TaskSummary},
    reference,
    words::{Word, word},
};

use crate::{
    output::table,
    parse::{FlagError, Problem},
};

/// One `--filter KEY=VALUE`, as docker's `service ps` takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    DesiredState(TaskState),
    Id(String),
    Name(String),
    Node(String),
}

pub fn parse_filter(v: &str) -> Result<Filter, FlagError> {
    let bad = |p| FlagError::new("--filter", v, p);
    let (key, value) = v.split_once('=').ok_or_else(|| bad(Problem::FilterKey))?;
    Ok(match key {
        "desired-state" => match value {
            "running" | "shutdown" | "accepted" => Filter::DesiredState(
                TaskState::from_word(value).ok_or_else(|| bad(Problem::DesiredState))?,
            ),
            _ => return Err(bad(Problem::DesiredState)),
        },
        "id" => Filter::Id(value.to_owned()),
        "name" => Filter::Name(value.to_owned()),
        "node" => Filter::Node(value.to_owned()),
        _ => return Err(bad(Problem::FilterKey)),
    })
}

impl Filter {
    fn matches(&self, t: &TaskSummary) -> bool {
        match self {
            Self::DesiredState(s) => t.desired_state == *s as i32,
            Self::Id(p) => t.id.starts_with(p.as_str()),
            Self::Name(n) => t.name.starts_with(n.as_str()),
            Self::Node(n) => t.node == *n || t.node_id.starts_with(n.as_str()),
        }
    }
}

/// Filters of one key match any of their values; all keys must match, as
/// docker's filter arguments.
pub fn keep(filters: &[Filter], t: &TaskSummary) -> bool {
    let same = |a: &Filter, b: &Filter| std::mem::discriminant(a) == std::mem::discriminant(b);
    filters
        .iter()
        .all(|f| filters.iter().filter(|g| same(f, g)).any(|g| g.matches(t)))
}

/// Per slot (node, for global tasks), the task wanted running first, then
/// the others newest first. Slots in number order, so web.10 follows web.9.
pub fn history(mut tasks: Vec<TaskSummary>) -> Vec<TaskSummary> {
    tasks.sort_by(|a, b| {
        let key = |t: &TaskSummary| {
            (
                t.service.clone(),
                t.slot,
                // Global tasks share slot 0; their name carries the node.
                t.name.clone(),
                t.desired_state != TaskState::Running as i32,
                std::cmp::Reverse(t.since_unix),
            )
        };
        key(a).cmp(&key(b))
    });
    tasks
}

fn ago(since_unix: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    human_ago(now.saturating_sub(since_unix))
}

/// docker's `units.HumanDuration` + " ago".
pub fn human_ago(secs: u64) -> String {
    let (m, h) = (secs / 60, secs / 3600);
    let d = h / 24;
    let text = match secs {
        0 => "Less than a second".to_owned(),
        1 => "1 second".to_owned(),
        s if s < 60 => format!("{s} seconds"),
        _ if m == 1 => "About a minute".to_owned(),
        _ if m < 60 => format!("{m} minutes"),
        _ if h == 1 => "About an hour".to_owned(),
        _ if h < 48 => format!("{h} hours"),
        _ if h < 24 * 7 * 2 => format!("{d} days"),
        _ if h < 24 * 30 * 2 => format!("{} weeks", d / 7),
        _ if h < 24 * 365 * 2 => format!("{} months", d / 30),
        _ => format!("{} years", d / 365),
    };
    format!("{text} ago")
}

/// docker truncates the ERROR column to 30 characters and quotes it.
fn error_column(err: &str, trunc: bool) -> String {
    if err.is_empty() {
        return String::new();
    }
    let shown = if trunc && err.chars().count() > 30 {
        let cut: String = err.chars().take(29).collect();
        format!("{cut}…")
    } else {
        err.to_owned()
    };
    format!("\"{shown}\"")
}

/// The image as docker's ps shows it: without its digest unless
/// `--no-trunc`.
fn image_column(image: &str, trunc: bool) -> String {
    if !trunc || image.is_empty() {
        return image.to_owned();
    }
    let bare = image.split_once('@').map_or(image, |(name, _)| name);
    reference::familiar(bare)
}

fn id_column(id: &str, trunc: bool) -> &str {
    if trunc {
        id.get(..12).unwrap_or(id)
    } else {
        id
    }
}

/// The table, `history` order assumed: a task of the same slot as the line
/// above is one of its earlier tasks.
pub fn table_text(tasks: &[TaskSummary], trunc: bool) -> String {
    let mut t = table(&[
        "ID",
        "NAME",
        "IMAGE",
        "NODE",
        "DESIRED STATE",
        "CURRENT STATE",
        "ERROR",
        "PORTS",
    ]);
    let mut previous: Option<&str> = None;
    for k in tasks {
        let name = if previous == Some(k.name.as_str()) {
            format!(" \\_ {}", k.name)
        } else {
            k.name.clone()
        };
        previous = Some(&k.name);
        t.add_row(vec![
            id_column(&k.id, trunc).to_owned(),
            name,
            image_column(&k.image, trunc),
            k.node.clone(),
            crate::output::pretty(&word::<TaskState>(k.desired_state)),
            format!(
                "{} {}",
                crate::output::pretty(&word::<TaskState>(k.state)),
                ago(k.since_unix)
            ),
            error_column(&k.err, trunc),
            // Host-mode port status is not in the task summary yet.
            String::new(),
        ]);
    }
    t.to_string()
}

pub fn quiet_text(tasks: &[TaskSummary], trunc: bool) -> String {
    tasks
        .iter()
        .map(|t| format!("{}\n", id_column(&t.id, trunc)))
        .collect()
}

#[derive(Serialize)]
pub struct TaskJson<'a> {
    id: &'a str,
    name: &'a str,
    slot: u64,
    image: &'a str,
    node: &'a str,
    desired_state: Cow<'static, str>,
    current_state: Cow<'static, str>,
    since_unix: u64,
    error: &'a str,
    /// Set once the task's process ended.
    exit_code: Option<i32>,
    addresses: &'a [String],
    /// `null` for a task without a healthcheck.
    health: Option<HealthJson<'a>>,
}

/// docker's State.Health, in this listing's snake case.
#[derive(Serialize)]
struct HealthJson<'a> {
    status: Cow<'static, str>,
    failing_streak: u64,
    /// The last results, oldest first.
    log: Vec<HealthResultJson<'a>>,
}

#[derive(Serialize)]
struct HealthResultJson<'a> {
    start_unix_ns: u64,
    end_unix_ns: u64,
    exit_code: i32,
    output: &'a str,
}

pub fn task_json(t: &TaskSummary) -> TaskJson<'_> {
    TaskJson {
        id: &t.id,
        name: &t.name,
        slot: t.slot,
        image: &t.image,
        node: &t.node,
        desired_state: word::<TaskState>(t.desired_state),
        current_state: word::<TaskState>(t.state),
        since_unix: t.since_unix,
        error: &t.err,
        exit_code: t.exit_code,
        addresses: &t.addresses,
        health: t.health.as_ref().map(|h| HealthJson {
            status: match HealthStatus::try_from(h.status) {
                Ok(HealthStatus::Unspecified) => "none".into(),
                _ => word::<HealthStatus>(h.status),
            },
            failing_streak: h.failing_streak,
            log: h
                .log
                .iter()
                .map(|r| HealthResultJson {
                    start_unix_ns: r.start_unix_ns,
                    end_unix_ns: r.end_unix_ns,
                    exit_code: r.exit_code,
                    output: &r.output,
                })
                .collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use shoal_api::cluster::v1::{HealthResult, TaskHealth};

    use super::*;

    fn task(id: &str, slot: u64, desired: TaskState, since: u64) -> TaskSummary {
        TaskSummary {
            id: id.into(),
            name: format!("web.{slot}"),
            service: "web".into(),
            slot,
            desired_state: desired as i32,
            state: desired as i32,
            since_unix: since,
            node: "n1".into(),
            image: format!("nginx:1.27@sha256:{}", "a".repeat(64)),
            ..Default::default()
        }
    }

    #[test]
    fn history_puts_the_current_task_first_then_newest() {
        let sd = TaskState::Shutdown;
        let tasks = vec![
            task("old1", 1, sd, 100),
            task("cur10", 10, TaskState::Running, 50),
            task("older1", 1, sd, 10),
            task("cur1", 1, TaskState::Running, 90),
            task("cur2", 2, TaskState::Running, 95),
        ];
        let ids: Vec<_> = history(tasks).into_iter().map(|t| t.id).collect();
        assert_eq!(ids, ["cur1", "old1", "older1", "cur2", "cur10"]);
    }

    #[test]
    fn table_indents_earlier_tasks() {
        let sd = TaskState::Shutdown;
        let mut old = task("bbbbbbbbbbbbbbbb", 1, sd, 0);
        old.err = "task: non-zero exit (1): the process ended badly".into();
        let tasks = history(vec![
            old,
            task("aaaaaaaaaaaaaaaa", 1, TaskState::Running, 1),
        ]);
        let text = table_text(&tasks, true);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ID"), "{text}");
        for col in [
            "NAME",
            "IMAGE",
            "NODE",
            "DESIRED STATE",
            "CURRENT STATE",
            "ERROR",
            "PORTS",
        ] {
            assert!(lines[0].contains(col), "{col}: {text}");
        }
        assert!(lines[1].starts_with("aaaaaaaaaaaa "), "{text}");
        assert!(lines[1].contains(" web.1 "), "{text}");
        assert!(lines[1].contains("nginx:1.27 "), "{text}");
        assert!(!lines[1].contains("sha256"), "{text}");
        assert!(lines[2].contains(" \\_ web.1 "), "{text}");
        assert!(
            lines[2].contains("\"task: non-zero exit (1): the …\""),
            "{text}"
        );
        let full = table_text(&tasks, false);
        assert!(full.contains("aaaaaaaaaaaaaaaa"), "{full}");
        assert!(full.contains("sha256:"), "{full}");
        assert!(full.contains("the process ended badly"), "{full}");
        assert_eq!(quiet_text(&tasks, true), "aaaaaaaaaaaa\nbbbbbbbbbbbb\n");
    }

    #[test]
    fn filters_as_docker() {
        let f = |v: &str| parse_filter(v).map_err(|e| format!("{:#}", anyhow::Error::from(e)));
        assert_eq!(
            f("desired-state=running"),
            Ok(Filter::DesiredState(TaskState::Running))
        );
        assert_eq!(
            f("desired-state=accepted"),
            Ok(Filter::DesiredState(TaskState::Accepted))
        );
        assert_eq!(
            f("desired-state=failed"),
            Err("--filter desired-state=failed: expected desired-state=running, shutdown or accepted".into())
        );
        assert!(
            f("colour=red")
                .err()
                .unwrap_or_default()
                .contains("unknown filter")
        );
        let running = task("a", 1, TaskState::Running, 0);
        let shutdown = task("b", 1, TaskState::Shutdown, 0);
        let filters = [Filter::DesiredState(TaskState::Running)];
        assert!(keep(&filters, &running) && !keep(&filters, &shutdown));
        // Two values of one key: either; two keys: both.
        let either = [
            Filter::DesiredState(TaskState::Running),
            Filter::DesiredState(TaskState::Shutdown),
        ];
        assert!(keep(&either, &running) && keep(&either, &shutdown));
        let both = [
            Filter::DesiredState(TaskState::Running),
            Filter::Id("b".into()),
        ];
        assert!(!keep(&both, &running) && !keep(&both, &shutdown));
    }

    #[test]
    fn json_carries_health_and_exit_code() {
        let mut t = task("a", 1, TaskState::Failed, 0);
        t.exit_code = Some(137);
        t.health = Some(TaskHealth {
            status: HealthStatus::Unhealthy as i32,
            failing_streak: 3,
            log: vec![HealthResult {
                start_unix_ns: 1,
                end_unix_ns: 2,
                exit_code: 1,
                output: "connection refused\n".into(),
            }],
        });
        let v = serde_json::to_value(task_json(&t)).unwrap_or_default();
        assert_eq!(v["exit_code"], 137);
        assert_eq!(v["health"]["status"], "unhealthy");
        assert_eq!(v["health"]["failing_streak"], 3);
        assert_eq!(v["health"]["log"][0]["output"], "connection refused\n");
        assert_eq!(v["current_state"], "failed");
        let plain = serde_json::to_value(task_json(&task("b", 1, TaskState::Running, 0)))
            .unwrap_or_default();
        assert!(plain["health"].is_null() && plain["exit_code"].is_null());
    }

    #[test]
    fn ages_read_as_docker() {
        assert_eq!(human_ago(0), "Less than a second ago");
        assert_eq!(human_ago(5), "5 seconds ago");
        assert_eq!(human_ago(61), "About a minute ago");
        assert_eq!(human_ago(600), "10 minutes ago");
        assert_eq!(human_ago(3700), "About an hour ago");
        assert_eq!(human_ago(5 * 3600), "5 hours ago");
        assert_eq!(human_ago(3 * 86400), "3 days ago");
    }
}
