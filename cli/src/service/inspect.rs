//! `service inspect`'s update and rollback parts, in docker's JSON keys
//! (durations in nanoseconds) and `--pretty` blocks.

use serde::Serialize;
use shoal_api::{
    cluster::v1::{FailureAction, UpdateConfig, UpdateOrder, UpdateState, UpdateStatus},
    words::word,
};

use super::ps::human_ago;
use crate::parse::go_string;

/// docker's `swarm.UpdateConfig`.
#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateConfigJson {
    parallelism: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    monitor: Option<u64>,
    max_failure_ratio: f64,
    order: String,
}

pub fn update_config_json(c: &UpdateConfig) -> UpdateConfigJson {
    UpdateConfigJson {
        parallelism: c.parallelism.unwrap_or(1),
        delay: c.delay_ns.filter(|n| *n != 0),
        failure_action: c
            .failure_action
            .map(|a| word::<FailureAction>(a).into_owned()),
        monitor: c.monitor_ns.filter(|n| *n != 0),
        max_failure_ratio: c.max_failure_ratio.unwrap_or(0.0),
        order: c.order.map_or_else(
            || "stop-first".to_owned(),
            |o| word::<UpdateOrder>(o).into_owned(),
        ),
    }
}

/// docker's `swarm.UpdateStatus`: times in RFC 3339.
#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateStatusJson {
    state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed_at: Option<String>,
    message: String,
}

pub fn update_status_json(u: &UpdateStatus) -> UpdateStatusJson {
    let at = |t: u64| (t != 0).then(|| crate::output::rfc3339(t));
    UpdateStatusJson {
        state: word::<UpdateState>(u.state).into_owned(),
        started_at: at(u.started_unix),
        completed_at: at(u.completed_unix),
        message: u.message.clone(),
    }
}

fn ago(unix: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    human_ago(now.saturating_sub(unix))
}

/// docker's pretty UpdateStatus block.
pub fn update_status_text(u: &UpdateStatus) -> String {
    let mut out = format!(
        "UpdateStatus:\n State:\t\t{}\n",
        word::<UpdateState>(u.state)
    );
    if u.started_unix != 0 {
        out.push_str(&format!(" Started:\t{}\n", ago(u.started_unix)));
    }
    if u.completed_unix != 0 {
        out.push_str(&format!(" Completed:\t{}\n", ago(u.completed_unix)));
    }
    out.push_str(&format!(" Message:\t{}\n", u.message));
    out
}

/// docker's pretty UpdateConfig / RollbackConfig block.
pub fn config_text(title: &str, order_label: &str, c: &UpdateConfig) -> String {
    let j = update_config_json(c);
    let mut out = format!("{title}:\n Parallelism:\t{}\n", j.parallelism);
    if let Some(d) = j.delay {
        out.push_str(&format!(" Delay:\t\t{}\n", go_string(d)));
    }
    out.push_str(&format!(
        " On failure:\t{}\n",
        j.failure_action.as_deref().unwrap_or("pause")
    ));
    if let Some(m) = j.monitor {
        out.push_str(&format!(" Monitoring Period: {}\n", go_string(m)));
    }
    out.push_str(&format!(
        " Max failure ratio: {}\n {order_label}:{}{}\n",
        j.max_failure_ratio,
        " ".repeat(19usize.saturating_sub(order_label.len() + 1)),
        j.order
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> UpdateConfig {
        UpdateConfig {
            parallelism: Some(2),
            delay_ns: Some(10_000_000_000),
            failure_action: Some(FailureAction::Rollback as i32),
            monitor_ns: Some(5_000_000_000),
            max_failure_ratio: Some(0.2),
            order: Some(UpdateOrder::StartFirst as i32),
        }
    }

    #[test]
    fn json_in_docker_keys() {
        let v = serde_json::to_value(update_config_json(&config())).unwrap_or_default();
        assert_eq!(
            v,
            serde_json::json!({"Parallelism": 2, "Delay": 10_000_000_000u64,
                "FailureAction": "rollback", "Monitor": 5_000_000_000u64,
                "MaxFailureRatio": 0.2, "Order": "start-first"})
        );
        // Zero delay is left out, as docker's omitempty.
        let zero = UpdateConfig {
            parallelism: Some(1),
            delay_ns: Some(0),
            ..Default::default()
        };
        let v = serde_json::to_value(update_config_json(&zero)).unwrap_or_default();
        assert!(v.get("Delay").is_none());
        let s = UpdateStatus {
            state: UpdateState::RollbackCompleted as i32,
            started_unix: 86_400,
            completed_unix: 0,
            message: "rollback completed".into(),
        };
        let v = serde_json::to_value(update_status_json(&s)).unwrap_or_default();
        assert_eq!(
            v,
            serde_json::json!({"State": "rollback_completed",
                "StartedAt": "1970-01-02T00:00:00Z", "Message": "rollback completed"})
        );
    }

    #[test]
    fn pretty_blocks_as_docker() {
        assert_eq!(
            config_text("UpdateConfig", "Update order", &config()),
            "UpdateConfig:\n Parallelism:\t2\n Delay:\t\t10s\n On failure:\trollback\n \
             Monitoring Period: 5s\n Max failure ratio: 0.2\n Update order:      start-first\n"
        );
        let r = config_text(
            "RollbackConfig",
            "Rollback order",
            &UpdateConfig {
                parallelism: Some(1),
                failure_action: Some(FailureAction::Pause as i32),
                monitor_ns: Some(5_000_000_000),
                max_failure_ratio: Some(0.0),
                order: Some(UpdateOrder::StopFirst as i32),
                ..Default::default()
            },
        );
        assert!(
            r.ends_with(" Max failure ratio: 0\n Rollback order:    stop-first\n"),
            "{r}"
        );
        let s = update_status_text(&UpdateStatus {
            state: UpdateState::Paused as i32,
            started_unix: 1,
            completed_unix: 0,
            message: "update paused due to failure".into(),
        });
        assert!(
            s.starts_with("UpdateStatus:\n State:\t\tpaused\n Started:\t"),
            "{s}"
        );
        assert!(
            s.ends_with(" ago\n Message:\tupdate paused due to failure\n"),
            "{s}"
        );
        assert!(!s.contains("Completed"));
    }
}
