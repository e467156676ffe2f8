//! The updater: swarmkit's rolling update (`manager/orchestrator/update`)
//! as a pure step from the committed state and `now`. Everything it must
//! remember between passes (the tasks it started, when each was seen
//! RUNNING, the failures, the workers' delays) lives in the service's
//! `UpdateStatus`, so a new leader continues an update where the last one
//! stopped.
//!
//! A slot is dirty when a task holding it runs an old spec, or when two
//! tasks hold it (a start-first replacement in flight). Up to
//! `parallelism` slots are replaced at once (0 = all); a worker that
//! finished a slot (its new task RUNNING, or ended) rests `delay` before
//! taking the next. stop-first shuts the old task down as the new one is
//! created; start-first shuts it down only once the new one is RUNNING. A
//! new task that ends on its own before RUNNING, or within `monitor` of
//! it, is a failure; when failures / dirty slots is strictly greater than
//! `max_failure_ratio`, the failure action applies. The update completes
//! one `monitor` after its last slot.

use std::collections::{BTreeMap, BTreeSet};

use super::{Ctx, ended, new_task, shut_down};
use crate::{
    model::{
        Command, FailureAction, Service, Task, TaskState, UpdateOrder, UpdateProgress, UpdateState,
        UpdateStatus,
    },
    ports,
};

/// A replicated slot, or a global service's node.
pub(super) type SlotKey = (Option<u64>, Option<String>);

pub(super) fn key(t: &Task) -> SlotKey {
    match t.slot {
        Some(s) => (Some(s), None),
        None => (None, t.node_id.clone()),
    }
}

const NANOS_PER_MS: u64 = 1_000_000;

/// The update step for `s` (which it may change: status, progress, or the
/// spec on an automatic rollback). `slots` are the holding tasks of every
/// slot the service keeps; `stale` says whether a task's spec or networks
/// are not the service's. Task commands go to `out`.
pub(super) fn step(
    ctx: &mut Ctx<'_>,
    s: &mut Service,
    slots: &BTreeMap<SlotKey, Vec<&Task>>,
    stale: &dyn Fn(&Task) -> bool,
    out: &mut Vec<Command>,
) {
    let now_ms = ctx.now_ms;
    let now = now_ms / 1000;
    let dirty: Vec<(&SlotKey, &Vec<&Task>)> = slots
        .iter()
        .filter(|(_, ts)| ts.len() > 1 || ts.iter().any(|t| stale(t)))
        .collect();
    let state = s.update_status.as_ref().map(|u| u.state);
    match state {
        Some(UpdateState::Paused | UpdateState::RollbackPaused) => return,
        None | Some(UpdateState::Completed | UpdateState::RollbackCompleted) => {
            if dirty.is_empty() {
                return;
            }
            s.update_status = Some(UpdateStatus {
                state: UpdateState::Updating,
                started_unix: now,
                completed_unix: 0,
                message: "update in progress".into(),
                progress: UpdateProgress {
                    slots: dirty.len() as u64,
                    ..UpdateProgress::default()
                },
            });
        }
        Some(UpdateState::Updating | UpdateState::RollbackStarted) => {}
    }
    // Taken out while the step works, put back at its end.
    let Some(mut status) = s.update_status.take() else {
        return;
    };
    let rolling_back = status.state == UpdateState::RollbackStarted;
    let cfg = if rolling_back {
        s.spec.rollback.clone()
    } else {
        s.spec.update.clone()
    };
    let monitor_ms = cfg.monitor_nanos / NANOS_PER_MS;
    let delay_ms = cfg.delay_nanos / NANOS_PER_MS;
    let p = &mut status.progress;
    p.slots = p.slots.max(1);

    // What happened to the tasks this update started.
    let mut failed: Option<String> = None;
    let ids: Vec<String> = p.tasks.keys().cloned().collect();
    for id in ids {
        let Some(t) = ctx.state.tasks.get(&id) else {
            // Removed (history trimmed, or never created): nothing to watch.
            p.tasks.remove(&id);
            continue;
        };
        let running = p.tasks.get(&id).copied().flatten();
        if running.is_none() && t.state == TaskState::Running {
            p.tasks.insert(id.clone(), Some(now_ms));
            p.last_done_ms = p.last_done_ms.max(now_ms + delay_ms);
            if delay_ms > 0 {
                p.delays_until.push(now_ms + delay_ms);
            }
        }
        // Ended on its own (not shut down on purpose): a failure when it
        // never ran, or ran for less than the monitor window.
        if ended(t.state) && t.desired_state == TaskState::Running && !p.failures.contains(&id) {
            if running.is_none() {
                p.last_done_ms = p.last_done_ms.max(now_ms + delay_ms);
                if delay_ms > 0 {
                    p.delays_until.push(now_ms + delay_ms);
                }
                // Seen as ended without a RUNNING first: mark it so the
                // worker is not freed twice.
                p.tasks.insert(id.clone(), Some(0));
            }
            let ended_ms = t.status.since_unix.saturating_mul(1000);
            let within = running.is_none_or(|r| r == 0 || ended_ms <= r + monitor_ms);
            if within && cfg.failure_action != FailureAction::Continue {
                p.failures.insert(id.clone());
                let ratio = p.failures.len() as f64 / p.slots as f64;
                if ratio > cfg.max_failure_ratio.0 && failed.is_none() {
                    failed = Some(id.clone());
                }
            }
        }
    }
    p.delays_until.retain(|&t| t > now_ms);

    if let Some(task_id) = failed {
        s.update_status = Some(status);
        fail(ctx, s, &cfg.failure_action, rolling_back, &task_id, now);
        return;
    }

    // Slots: in flight (a new task not RUNNING yet), finishing (a new task
    // RUNNING beside old ones: start-first, or a shut-down that was lost),
    // or to do.
    // A stop-first slot in flight holds only its new task, so it is no
    // longer dirty: the tasks this update started count too.
    let mut in_flight: BTreeSet<String> = p
        .tasks
        .iter()
        .filter(|(id, running)| {
            running.is_none() && ctx.state.tasks.get(*id).is_some_and(|t| !ended(t.state))
        })
        .map(|(id, _)| id.clone())
        .collect();
    let mut todo: Vec<(&SlotKey, &Vec<&Task>)> = Vec::new();
    for (k, ts) in &dirty {
        let fresh: Vec<&&Task> = ts.iter().filter(|t| !stale(t)).collect();
        if let Some(t) = fresh.iter().find(|t| t.state < TaskState::Running) {
            in_flight.insert(t.id.clone());
        } else if !fresh.is_empty() {
            // A fresh task runs: the old ones go.
            for t in ts.iter().filter(|t| stale(t)) {
                out.push(shut_down(t, now, "replaced: the service's spec changed"));
            }
        } else {
            todo.push((k, ts));
        }
    }
    let busy = p.delays_until.len() + in_flight.len();
    let idle = in_flight.is_empty();
    let parallelism = match cfg.parallelism {
        0 => usize::MAX,
        n => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let mut free = parallelism.saturating_sub(busy);
    for (k, ts) in todo {
        if free == 0 {
            break;
        }
        let Some(networks) = ctx.attach(s) else {
            break;
        };
        free -= 1;
        if cfg.order == UpdateOrder::StopFirst {
            for t in ts {
                let why = if ctx.stale_networks(s, t) {
                    "replaced: the service's networks changed"
                } else {
                    "replaced: the service's spec changed"
                };
                out.push(shut_down(t, now, why));
            }
        }
        let id = (ctx.new_id)();
        p.tasks.insert(id.clone(), None);
        out.push(new_task(s, k.0, k.1.clone(), networks, id, now));
    }

    // Every slot done: one monitor window after the last, it is complete.
    if dirty.is_empty() && idle {
        let done_at = p.last_done_ms + monitor_ms;
        if now_ms >= done_at {
            let (state, message) = if rolling_back {
                (UpdateState::RollbackCompleted, "rollback completed")
            } else {
                (UpdateState::Completed, "update completed")
            };
            status.state = state;
            status.message = message.into();
            status.completed_unix = now;
            status.progress = UpdateProgress::default();
        }
    }
    s.update_status = Some(status);
}

/// Applies the failure action after `task_id` failed.
fn fail(
    ctx: &Ctx<'_>,
    s: &mut Service,
    action: &FailureAction,
    rolling_back: bool,
    task_id: &str,
    now: u64,
) {
    let pause = |s: &mut Service, message: String| {
        if let Some(st) = s.update_status.as_mut() {
            st.state = if rolling_back {
                UpdateState::RollbackPaused
            } else {
                UpdateState::Paused
            };
            st.message = message;
        }
    };
    match action {
        FailureAction::Continue => {}
        FailureAction::Pause => pause(
            s,
            format!("update paused due to failure or early termination of task {task_id}"),
        ),
        // Never roll back a rollback.
        FailureAction::Rollback if rolling_back => pause(
            s,
            format!("rollback paused due to failure or early termination of task {task_id}"),
        ),
        FailureAction::Rollback => {
            let Some(previous) = s.previous_spec.clone() else {
                return pause(
                    s,
                    format!(
                        "update paused due to failure or early termination of task {task_id}: \
                         no previous spec to roll back to"
                    ),
                );
            };
            let ports = ports::reallocate(
                ctx.state,
                &s.id,
                previous.endpoint.mode,
                &previous.endpoint.ports,
                &s.endpoint.ports,
                ctx.data_path_port,
            );
            match ports {
                Err(e) => pause(
                    s,
                    format!(
                        "update paused due to failure or early termination of task {task_id}: \
                         cannot roll back: {e}"
                    ),
                ),
                Ok(ports) => {
                    // swarmkit: the previous spec comes back and none is kept.
                    s.spec = previous;
                    s.previous_spec = None;
                    s.endpoint.ports = ports;
                    let started_unix = s.update_status.as_ref().map_or(now, |u| u.started_unix);
                    s.update_status = Some(UpdateStatus {
                        state: UpdateState::RollbackStarted,
                        started_unix,
                        completed_unix: 0,
                        message: format!(
                            "update rolled back due to failure or early termination of task \
                             {task_id}"
                        ),
                        progress: UpdateProgress::default(),
                    });
                }
            }
        }
    }
}

/// When the updater of some service next has something to do that no
/// commit will announce: a worker's delay ending, or a monitor window
/// closing. Unix ms.
pub fn next_wake(state: &crate::model::ClusterState, now_ms: u64) -> Option<u64> {
    let mut next: Option<u64> = None;
    let mut at = |t: u64| {
        if t > now_ms {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
    };
    for s in state.services.values() {
        let Some(u) = &s.update_status else { continue };
        let cfg = match u.state {
            UpdateState::Updating => &s.spec.update,
            UpdateState::RollbackStarted => &s.spec.rollback,
            _ => continue,
        };
        let p = &u.progress;
        let monitor_ms = cfg.monitor_nanos / NANOS_PER_MS;
        for &d in &p.delays_until {
            at(d);
        }
        at(p.last_done_ms + monitor_ms);
    }
    next
}
